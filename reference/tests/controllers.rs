//! The controllers against a real, in-process control plane: a ReplicaSet keeps its pods, a
//! Deployment rolls a new template out as a new revision, and deleting an owner collects
//! its dependents. No scheduler or node agent runs: the test plays their part, marking
//! pods Running and Ready through `pods/{name}/status`, binding one to a node.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use shipshape::control_plane::{ControlPlane, ControlPlaneConfig};
use shipshape::controllers::ControllerError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A control plane with the controllers running against it.
struct Cluster {
    cp: ControlPlane,
    _dir: tempfile::TempDir,
    client: Client,
    stop: watch::Sender<bool>,
    controllers: JoinHandle<Result<(), ControllerError>>,
}

impl Cluster {
    async fn start() -> Cluster {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let cp = ControlPlane::start(ControlPlaneConfig::new(
            dir.path(),
            "127.0.0.1:0".parse().expect("addr"),
        ))
        .await
        .expect("control plane starts");
        let client = cp.credentials().client().expect("client");
        let (stop, stopped) = watch::channel(false);
        let controllers = tokio::spawn(shipshape::controllers::run(client.clone(), stopped));
        Cluster {
            cp,
            _dir: dir,
            client,
            stop,
            controllers,
        }
    }

    /// Stops the controllers (they must stop promptly and cleanly), then the control plane.
    async fn stop(self) {
        self.stop.send(true).expect("controllers listening");
        let result = tokio::time::timeout(Duration::from_secs(10), self.controllers)
            .await
            .expect("controllers stop within 10 s")
            .expect("controllers did not panic");
        assert!(result.is_ok(), "controllers ended with {result:?}");
        self.cp.stop().await;
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn replicasets(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// The pods whose controller has this uid, not terminating.
    async fn active_pods_of(&self, owner_uid: &str) -> Vec<Pod> {
        self.pods()
            .list(&ListParams::default())
            .await
            .expect("list pods")
            .items
            .into_iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.owner_references()
                        .iter()
                        .any(|r| r.uid == owner_uid && r.controller == Some(true))
            })
            .collect()
    }

    /// Plays the node agent: the pod is Running and Ready.
    async fn mark_ready(&self, pod: &str) {
        let now = jiff::Timestamp::now().to_string();
        let status = json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        }});
        self.pods()
            .patch_status(pod, &PatchParams::default(), &Patch::Merge(status))
            .await
            .expect("pod status written");
    }

    async fn mark_all_ready(&self, pods: &[Pod]) {
        for pod in pods {
            self.mark_ready(&pod.name_any()).await;
        }
    }

    /// Reasons of the Events recorded about an object.
    async fn event_reasons(&self, name: &str) -> Vec<String> {
        Api::<Event>::namespaced(self.client.clone(), "default")
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .filter_map(|e| e.reason)
            .collect()
    }
}

/// Whether the pod's Ready condition is `True`.
fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Polls `check` every 100 ms until it returns `Some`, for up to 10 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after 10 s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod_template(app: &str, image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "probe", "image": image}]}
    })
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

#[tokio::test]
async fn a_replicaset_keeps_its_pods_replaces_lost_ones_and_scales_down() {
    let c = Cluster::start().await;
    let rs: ReplicaSet = from_json(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": pod_template("web", "shipshape/probe:v1"),
        }
    }));
    let rs = c
        .replicasets()
        .create(&PostParams::default(), &rs)
        .await
        .expect("created");
    let uid = rs.uid().expect("uid");

    // Three pods, each controlled by the ReplicaSet, named after it.
    let pods = eventually("3 pods", || async {
        let pods = c.active_pods_of(&uid).await;
        (pods.len() == 3).then_some(pods)
    })
    .await;
    for pod in &pods {
        assert!(pod.name_any().starts_with("web-"), "{}", pod.name_any());
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("ReplicaSet", "web")
        );
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert_eq!(pod.labels().get("app").map(String::as_str), Some("web"));
    }

    // Ready pods show in the status.
    c.mark_all_ready(&pods).await;
    eventually("3 ready and available in the status", || async {
        let s = c.replicasets().get("web").await.ok()?.status?;
        (s.replicas == 3
            && s.ready_replicas == Some(3)
            && s.available_replicas == Some(3)
            && s.fully_labeled_replicas == Some(3)
            && s.observed_generation == Some(1))
        .then_some(())
    })
    .await;

    // A pod removed at once is replaced.
    let lost = pods[0].name_any();
    c.pods()
        .delete(&lost, &DeleteParams::default().grace_period(0))
        .await
        .expect("deleted");
    let replaced = eventually("the lost pod replaced", || async {
        let pods = c.active_pods_of(&uid).await;
        (pods.len() == 3 && pods.iter().all(|p| p.name_any() != lost)).then_some(pods)
    })
    .await;

    // A bound pod deleted with a grace period only terminates (its node agent would finish
    // it), yet it no longer counts: a replacement comes at once.
    let bound = replaced[1].name_any();
    // The node must exist: pods bound to a node that does not are removed at once.
    let node: k8s_openapi::api::core::v1::Node =
        serde_json::from_value(json!({"metadata": {"name": "node-1"}})).expect("node");
    Api::<k8s_openapi::api::core::v1::Node>::all(c.client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("node created");
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": bound},
                         "target": {"kind": "Node", "name": "node-1"}});
    c.client
        .request::<Value>(
            http::Request::post(format!("/api/v1/namespaces/default/pods/{bound}/binding"))
                .header("content-type", "application/json")
                .body(binding.to_string().into_bytes())
                .expect("request"),
        )
        .await
        .expect("bound");
    c.pods()
        .delete(&bound, &DeleteParams::default())
        .await
        .expect("deleted");
    let terminating = c.pods().get(&bound).await.expect("still there");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    let pods = eventually("the terminating pod replaced", || async {
        let pods = c.active_pods_of(&uid).await;
        (pods.len() == 3 && pods.iter().all(|p| p.name_any() != bound)).then_some(pods)
    })
    .await;
    c.pods()
        .delete(&bound, &DeleteParams::default().grace_period(0))
        .await
        .expect("removed");
    c.mark_all_ready(&pods).await;

    // Scaling down to 1 deletes 2.
    c.replicasets()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scaled");
    eventually("1 pod left, reported in the status", || async {
        let pods = c.active_pods_of(&uid).await;
        let s = c.replicasets().get("web").await.ok()?.status?;
        (pods.len() == 1
            && s.replicas == 1
            && s.ready_replicas == Some(1)
            && s.observed_generation == Some(2))
        .then_some(())
    })
    .await;

    let reasons = c.event_reasons("web").await;
    assert!(
        reasons.iter().filter(|r| *r == "SuccessfulCreate").count() >= 5,
        "{reasons:?}"
    );
    assert!(
        reasons.iter().filter(|r| *r == "SuccessfulDelete").count() >= 2,
        "{reasons:?}"
    );
    c.stop().await;
}

/// The ReplicaSets a Deployment controls.
async fn sets_of(c: &Cluster, deployment_uid: &str) -> Vec<ReplicaSet> {
    c.replicasets()
        .list(&ListParams::default())
        .await
        .expect("list replicasets")
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|r| r.uid == deployment_uid && r.controller == Some(true))
        })
        .collect()
}

fn revision(rs: &ReplicaSet) -> Option<&str> {
    rs.annotations()
        .get("deployment.kubernetes.io/revision")
        .map(String::as_str)
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, String)> {
    let c = d
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test]
async fn a_deployment_rolls_out_revisions_and_its_deletion_collects_everything() {
    let c = Cluster::start().await;
    let d: Deployment = from_json(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shop"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "shop"}},
            "template": pod_template("shop", "shipshape/probe:v1"),
        }
    }));
    let d = c
        .deployments()
        .create(&PostParams::default(), &d)
        .await
        .expect("created");
    let uid = d.uid().expect("uid");

    // Revision 1: one ReplicaSet named <deployment>-<hash>, three pods carrying the hash.
    let (first, pods) = eventually("revision 1 with 3 pods", || async {
        let sets = sets_of(&c, &uid).await;
        let [rs] = sets.as_slice() else { return None };
        let pods = c.active_pods_of(&rs.uid()?).await;
        (pods.len() == 3).then(|| (rs.clone(), pods))
    })
    .await;
    let hash = first
        .labels()
        .get("pod-template-hash")
        .cloned()
        .expect("hash label");
    assert_eq!(first.name_any(), format!("shop-{hash}"));
    assert_eq!(revision(&first), Some("1"));
    assert!(
        pods.iter()
            .all(|p| p.labels().get("pod-template-hash") == Some(&hash))
    );

    // Ready pods make it Available and complete.
    c.mark_all_ready(&pods).await;
    let done = eventually("revision 1 available and complete", || async {
        let d = c.deployments().get("shop").await.ok()?;
        let s = d.status.as_ref()?;
        (s.available_replicas == Some(3)
            && s.ready_replicas == Some(3)
            && s.updated_replicas == Some(3)
            && s.unavailable_replicas == Some(0)
            && condition(&d, "Progressing")
                == Some(("True".into(), "NewReplicaSetAvailable".into())))
        .then_some(d)
    })
    .await;
    assert_eq!(
        condition(&done, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    assert_eq!(
        done.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );

    // A new image is revision 2, rolled out step by step: at 3 replicas the defaults
    // (maxSurge 25% → 1, maxUnavailable 25% → 0) let one new pod in at a time and take an
    // old one out only once a new one is ready. Playing the node agent, each new pod is
    // made ready as it appears; 3 pods stay ready throughout.
    c.deployments()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": pod_template("shop", "shipshape/probe:v2")}}),
            ),
        )
        .await
        .expect("image changed");
    let most_at_once = std::cell::Cell::new(0);
    let second = eventually("revision 2 with 3 pods, revision 1 empty", || async {
        let sets = sets_of(&c, &uid).await;
        let second = sets.iter().find(|rs| revision(rs) == Some("2"))?;
        let old = sets.iter().find(|rs| rs.name_any() == first.name_any())?;
        let new_pods = c.active_pods_of(&second.uid()?).await;
        let old_pods = c.active_pods_of(&first.uid()?).await;
        let ready = |pods: &[Pod]| pods.iter().filter(|p| is_ready(p)).count();
        assert!(
            ready(&new_pods) + ready(&old_pods) >= 3,
            "fewer than 3 ready pods mid-rollout: {} new, {} old",
            ready(&new_pods),
            ready(&old_pods)
        );
        most_at_once.set(most_at_once.get().max(new_pods.len() + old_pods.len()));
        c.mark_all_ready(&new_pods).await;
        (sets.len() == 2
            && second.spec.as_ref()?.replicas == Some(3)
            && old.spec.as_ref()?.replicas == Some(0)
            && new_pods.len() == 3
            && old_pods.is_empty())
        .then(|| second.clone())
    })
    .await;
    let most_at_once = most_at_once.get();
    assert!(
        most_at_once <= 4,
        "more than 3 + maxSurge 1 pods: {most_at_once}"
    );
    assert_ne!(second.name_any(), first.name_any());
    assert!(second.name_any().starts_with("shop-"));
    eventually("the deployment reports revision 2", || async {
        let d = c.deployments().get("shop").await.ok()?;
        (d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str)
            == Some("2"))
        .then_some(())
    })
    .await;
    let reasons = c.event_reasons("shop").await;
    assert!(
        reasons.iter().filter(|r| *r == "ScalingReplicaSet").count() >= 3,
        "{reasons:?}"
    );

    // Deleting the Deployment takes its ReplicaSets, then their pods, with it — and no
    // pod is created meanwhile for a set that is going (its controller's cache can be a
    // moment behind the deletion).
    let pods_created = |c: &Cluster| {
        let sets = [first.name_any(), second.name_any()];
        let c = c.client.clone();
        async move {
            Api::<Event>::namespaced(c, "default")
                .list(&ListParams::default())
                .await
                .expect("list events")
                .items
                .iter()
                .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
                .filter(|e| {
                    sets.iter()
                        .any(|s| e.involved_object.name.as_ref() == Some(s))
                })
                .count()
        }
    };
    let created_before = pods_created(&c).await;
    let second_uid = second.uid().expect("uid");
    c.deployments()
        .delete("shop", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually("no ReplicaSets and no pods left", || async {
        let sets = c.replicasets().list(&ListParams::default()).await.ok()?;
        let pods = c.pods().list(&ListParams::default()).await.ok()?;
        (sets.items.is_empty() && pods.items.is_empty()).then_some(())
    })
    .await;
    assert!(c.active_pods_of(&second_uid).await.is_empty());
    assert_eq!(
        pods_created(&c).await,
        created_before,
        "pods were created for a ReplicaSet deleted with its Deployment"
    );
    c.stop().await;
}

#[tokio::test]
async fn the_garbage_collector_deletes_only_what_is_certainly_orphaned() {
    let c = Cluster::start().await;
    let pod = |name: &str, owner: Option<Value>| -> Pod {
        let mut p = json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "probe", "image": "shipshape/probe:v1"}]}
        });
        if let Some(owner) = owner {
            p["metadata"]["ownerReferences"] = json!([owner]);
        }
        from_json(p)
    };
    let rs_owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gone",
                          "uid": "00000000-0000-0000-0000-000000000000"});
    // A kind this apiserver does not serve: the collector cannot tell if it exists.
    let job_owner = json!({"apiVersion": "v1", "kind": "ReplicationController", "name": "nightly",
                           "uid": "11111111-1111-1111-1111-111111111111"});
    // A ReplicaSet of the owner's name exists, but it is not the owner: another uid.
    let namesake: ReplicaSet = from_json(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "gone"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "namesake"}},
            "template": pod_template("namesake", "shipshape/probe:v1"),
        }
    }));
    c.replicasets()
        .create(&PostParams::default(), &namesake)
        .await
        .expect("created");

    for p in [
        pod("orphan", Some(rs_owner)),
        pod("unknown-owner", Some(job_owner)),
        pod("no-owner", None),
    ] {
        c.pods()
            .create(&PostParams::default(), &p)
            .await
            .expect("created");
    }
    eventually("the orphan collected", || async {
        c.pods()
            .get_opt("orphan")
            .await
            .ok()
            .and_then(|p| p.is_none().then_some(()))
    })
    .await;
    // Give the collector time to (wrongly) act on the others.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for kept in ["unknown-owner", "no-owner"] {
        assert!(
            c.pods().get_opt(kept).await.expect("get").is_some(),
            "{kept} must be kept"
        );
    }
    assert!(
        c.replicasets()
            .get_opt("gone")
            .await
            .expect("get")
            .is_some()
    );
    c.stop().await;
}

#[tokio::test]
async fn an_orphaning_delete_leaves_the_dependents_running_on_their_own() {
    let c = Cluster::start().await;
    let d: Deployment = from_json(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "keep"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "keep"}},
            "template": pod_template("keep", "shipshape/probe:v1"),
        }
    }));
    let d = c
        .deployments()
        .create(&PostParams::default(), &d)
        .await
        .expect("created");
    let uid = d.uid().expect("uid");
    let rs = eventually("a ReplicaSet with 2 pods", || async {
        let sets = sets_of(&c, &uid).await;
        let [rs] = sets.as_slice() else { return None };
        (c.active_pods_of(&rs.uid()?).await.len() == 2).then(|| rs.clone())
    })
    .await;
    let rs_uid = rs.uid().expect("uid");

    // A propagation policy that does not exist is the client's mistake, and changes nothing.
    let bad = http::Request::delete("/apis/apps/v1/namespaces/default/deployments/keep")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"propagationPolicy": "Sideways"})).expect("json"))
        .expect("request");
    let refused = c.client.request_text(bad).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 400),
        "{refused:?}"
    );
    assert!(c.deployments().get("keep").await.is_ok(), "still there");

    // `kubectl delete --cascade=orphan`: the Deployment goes, its ReplicaSet and pods stay,
    // no longer owned.
    c.deployments()
        .delete("keep", &DeleteParams::orphan())
        .await
        .expect("deleted");
    let orphan = c.replicasets().get(&rs.name_any()).await.expect("kept");
    assert!(orphan.owner_references().is_empty(), "{orphan:?}");
    assert!(c.deployments().get("keep").await.is_err());
    // Long enough for the collector to have acted, had it judged them garbage.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = c
        .replicasets()
        .get(&rs.name_any())
        .await
        .expect("still kept");
    assert_eq!(kept.uid().as_deref(), Some(rs_uid.as_str()));
    assert_eq!(c.active_pods_of(&rs_uid).await.len(), 2);
    c.stop().await;
}

#[tokio::test]
async fn every_namespace_gets_a_default_service_account_back_whatever_happens_to_it() {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    let c = Cluster::start().await;
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "team"}})),
        )
        .await
        .expect("namespace created");
    let accounts: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "team");
    let first = eventually("the default account of team", || async {
        accounts.get_opt("default").await.ok().flatten()
    })
    .await;
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .expect("deleted");
    let again = eventually("the default account of team, made again", || async {
        accounts
            .get_opt("default")
            .await
            .ok()
            .flatten()
            .filter(|a| a.uid() != first.uid())
    })
    .await;
    assert_eq!(again.name_any(), "default");
    c.stop().await;
}

#[tokio::test]
async fn a_service_s_endpoints_are_also_published_as_endpoint_slices() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let c = Cluster::start().await;
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    services
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})),
        )
        .await
        .expect("service created");
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let slice_of = |want: fn(&EndpointSlice) -> bool| {
        let slices = slices.clone();
        async move { slices.get_opt("web-0").await.ok().flatten().filter(&want) }
    };
    let empty = eventually("an empty slice for web", || {
        slice_of(|s| s.endpoints.is_empty())
    })
    .await;
    assert_eq!(empty.labels()["kubernetes.io/service-name"], "web");

    let pod: Pod = from_json(
        json!({"metadata": {"name": "web-a", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "probe", "image": "shipshape/probe:v1"}]}}),
    );
    c.pods()
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    let status = json!({"status": {"phase": "Running", "podIP": "10.1.0.7",
        "conditions": [{"type": "Ready", "status": "True"}]}});
    c.pods()
        .patch_status("web-a", &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("pod status written");
    let ready = eventually("web-a ready in the slice", || {
        slice_of(|s| {
            s.endpoints.iter().any(|e| {
                e.addresses == ["10.1.0.7"]
                    && e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
            })
        })
    })
    .await;
    let ports = ready.ports.unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, Some(8080));

    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("service deleted");
    eventually("the slice gone with its service", || async {
        matches!(slices.get_opt("web-0").await, Ok(None)).then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn a_job_runs_pods_to_completion_and_fails_past_its_backoff_limit() {
    use k8s_openapi::api::batch::v1::Job;
    let c = Cluster::start().await;
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), "default");
    let template = json!({"spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "work", "image": "shipshape/probe:v1"}]
    }});
    // A job that does not say how its pods restart is refused, and nothing is written.
    let refused = jobs
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "bad"}, "spec": {"template": pod_template("x", "img")}})),
        )
        .await
        .expect_err("a job whose pods restart Always is invalid");
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 422 && s.message.contains("restartPolicy")),
        "{refused}"
    );
    assert!(jobs.get_opt("bad").await.expect("get").is_none());

    let job = jobs
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "batch"},
                "spec": {"completions": 3, "parallelism": 2, "template": template}})),
        )
        .await
        .expect("job created");
    let uid = job.uid().expect("uid");
    let spec = job.spec.clone().expect("spec");
    assert_eq!(spec.backoff_limit, Some(6), "defaulted");
    let selected = spec
        .selector
        .and_then(|s| s.match_labels)
        .unwrap_or_default();
    assert_eq!(
        selected.get("batch.kubernetes.io/controller-uid"),
        Some(&uid)
    );

    // Two at a time; each one that succeeds makes room for the next, up to three.
    let mut done = 0;
    while done < 3 {
        let running = eventually("the job's pods", || async {
            let pods = c.active_pods_of(&uid).await;
            let active: Vec<Pod> = pods
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Succeeded"))
                .collect();
            assert!(
                active.len() <= 2,
                "parallelism 2, yet {} pods run",
                active.len()
            );
            (active.len() == 2.min(3 - done)).then_some(active)
        })
        .await;
        let pod = &running[0];
        assert_eq!(
            pod.labels().get("job-name").map(String::as_str),
            Some("batch")
        );
        c.pods()
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
            )
            .await
            .expect("pod succeeded");
        done += 1;
    }
    let complete = eventually("the job to complete", || async {
        let job = jobs.get("batch").await.ok()?;
        let status = job.status.clone()?;
        let complete = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Complete" && c.status == "True");
        complete.then_some(status)
    })
    .await;
    assert_eq!(complete.succeeded, Some(3));
    assert!(complete.completion_time.is_some());
    // A merge patch keeps what it leaves out: the last pod's count must be cleared.
    assert_eq!(complete.active, None, "a finished job has no active pods");
    assert!(
        c.event_reasons("batch")
            .await
            .contains(&"Completed".to_owned())
    );

    // A job allowed no retry fails with its first failed pod.
    let strict = jobs
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "strict"},
                "spec": {"backoffLimit": 0, "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "work", "image": "shipshape/probe:v1"}]}}}})),
        )
        .await
        .expect("job created");
    let strict_uid = strict.uid().expect("uid");
    let pod = eventually("the strict job's pod", || async {
        c.active_pods_of(&strict_uid).await.into_iter().next()
    })
    .await;
    c.pods()
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .expect("pod failed");
    let failed = eventually("the strict job to fail", || async {
        let status = jobs.get("strict").await.ok()?.status?;
        let reason = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Failed" && c.status == "True")?
            .reason
            .clone();
        Some((status.failed, status.active, reason))
    })
    .await;
    let reason = Some("BackoffLimitExceeded".to_owned());
    assert_eq!(failed, (Some(1), None, reason));

    // Deleting a job takes its pods along.
    jobs.delete("batch", &DeleteParams::background())
        .await
        .expect("job deleted");
    eventually("the deleted job's pods to go", || async {
        c.active_pods_of(&uid).await.is_empty().then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn a_daemon_set_runs_one_pod_on_every_node_that_may_run_it() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::Node;
    let c = Cluster::start().await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    for (name, labels) in [
        ("edge-1", json!({"disk": "ssd"})),
        ("edge-2", json!({"disk": "ssd"})),
        ("core", json!({})),
    ] {
        nodes
            .create(
                &PostParams::default(),
                &from_json(json!({"metadata": {"name": name, "labels": labels}})),
            )
            .await
            .expect("node created");
    }
    let daemons: Api<DaemonSet> = Api::namespaced(c.client.clone(), "default");
    let mut template = pod_template("agent", "shipshape/probe:v1");
    template["spec"]["nodeSelector"] = json!({"disk": "ssd"});
    let ds = daemons
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "agent"},
                "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template}})),
        )
        .await
        .expect("daemon set created");
    let uid = ds.uid().expect("uid");
    // The scheduler does not run here: each pod names its node in a required affinity.
    let target = |pod: &Pod| -> Option<String> {
        let spec = pod.spec.as_ref()?;
        let terms = &spec
            .affinity
            .as_ref()?
            .node_affinity
            .as_ref()?
            .required_during_scheduling_ignored_during_execution
            .as_ref()?
            .node_selector_terms;
        terms[0].match_fields.as_ref()?[0]
            .values
            .as_ref()?
            .first()
            .cloned()
    };
    let placed = eventually("a pod for each ssd node", || async {
        let mut on: Vec<String> = c
            .active_pods_of(&uid)
            .await
            .iter()
            .filter_map(target)
            .collect();
        on.sort();
        (on == ["edge-1", "edge-2"]).then_some(on)
    })
    .await;
    assert_eq!(placed.len(), 2);
    let status = eventually("the daemon set's status", || async {
        let status = daemons.get("agent").await.ok()?.status?;
        (status.desired_number_scheduled == 2 && status.current_number_scheduled == 2)
            .then_some(status)
    })
    .await;
    assert_eq!(status.number_misscheduled, 0);

    // A node that no longer matches loses its pod.
    nodes
        .patch(
            "edge-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"disk": null}}})),
        )
        .await
        .expect("label removed");
    eventually("the pod of edge-2 to go", || async {
        let on: Vec<String> = c
            .active_pods_of(&uid)
            .await
            .iter()
            .filter_map(target)
            .collect();
        (on == ["edge-1"]).then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn a_cron_job_starts_a_job_when_its_schedule_comes_due() {
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    let c = Cluster::start().await;
    let cron_jobs: Api<CronJob> = Api::namespaced(c.client.clone(), "default");
    let cron_job = |name: &str, schedule: &str| -> CronJob {
        from_json(json!({"metadata": {"name": name}, "spec": {
            "schedule": schedule, "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "work", "image": "shipshape/probe:v1"}]}}}}}}))
    };
    // A schedule cron cannot read is refused, and nothing is written.
    let refused = cron_jobs
        .create(&PostParams::default(), &cron_job("bad", "every minute"))
        .await
        .expect_err("not a schedule");
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 422 && s.message.contains("spec.schedule")),
        "{refused}"
    );
    assert!(cron_jobs.get_opt("bad").await.expect("get").is_none());

    let created = cron_jobs
        .create(&PostParams::default(), &cron_job("tick", "* * * * *"))
        .await
        .expect("created");
    let spec = created.spec.clone().expect("spec");
    assert_eq!(spec.successful_jobs_history_limit, Some(3), "defaulted");
    let uid = created.uid().expect("uid");
    // Within the next minute (and a margin), one Job, named for the minute it was due.
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), "default");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(75);
    let job = loop {
        let owned: Vec<Job> = jobs
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .filter(|j| j.owner_references().iter().any(|o| o.uid == uid))
            .collect();
        if let Some(job) = owned.into_iter().next() {
            break job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Job within a minute"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let name = job.name_any();
    assert!(name.starts_with("tick-"), "{name}");
    assert!(
        job.annotations()
            .contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp")
    );
    let status = eventually("the cron job's status", || async {
        let status = cron_jobs.get("tick").await.expect("get").status?;
        (status.active.as_ref().map(Vec::len) == Some(1)).then_some(status)
    })
    .await;
    assert!(status.last_schedule_time.is_some());
    // Deleting the CronJob takes its Jobs with it.
    cron_jobs
        .delete("tick", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually("the job collected", || async {
        jobs.get_opt(&name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    c.stop().await;
}
