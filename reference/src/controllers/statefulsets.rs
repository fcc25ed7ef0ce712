//! # StatefulSets: pods with names and an order
//!
//! A database or a queue with a leader is not a heap of interchangeable replicas: each
//! member has an identity the others know it by, and members must come up one after the
//! other. A StatefulSet of `replicas` pods names them `<set>-0`, `<set>-1`, … — the
//! *ordinal* is the identity — and this controller keeps exactly those pods:
//!
//! * **Ordered start** (`podManagementPolicy: OrderedReady`, the default): the pod of
//!   ordinal *i* is created only once every lower one runs and is ready, and nothing more
//!   happens while one of them is not. `Parallel` creates and deletes without waiting.
//! * **Same name, new pod**: a pod that is deleted or fails is replaced by a pod of the same
//!   name (once the old one is gone: names are unique), with the same `hostname`, and the
//!   `subdomain` of the set's `serviceName`, so a headless Service names it in DNS.
//! * **Ordered stop**: scaling down removes the highest ordinal first, one at a time, each
//!   once the one before is gone.
//! * **Rolling update**: pods are replaced from the highest ordinal down, one at a time, each
//!   once all the others run ready; pods below `partition` keep the current revision, and
//!   one of them that is lost comes back as it was. `OnDelete` replaces a pod only when
//!   someone deletes it.
//!
//! **Revisions.** As in Kubernetes, each template the set has had is kept as a
//! ControllerRevision named `<set>-<hash>`, its `data` the patch that restores it (what
//! `kubectl rollout history sts` shows). Pods carry their revision's name as
//! `controller-revision-hash`; `status.currentRevision` is the revision the set runs, and
//! becomes `updateRevision` when every pod runs that one, ready. Revisions beyond
//! `revisionHistoryLimit` go, oldest first.
//!
//! Not built: `volumeClaimTemplates` (there are no PersistentVolumes to claim: a pod keeps
//! its name, not its disk), `minReadySeconds`, `maxUnavailable` above one, `ordinals.start`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::daemonsets::REVISION_LABEL;
use super::{
    ControllerError, Recorder, Selector, controller_ref, controller_uid, delete_if_present,
    describe, identity, is_terminated, owned_pods, pod_phase, pod_ready, terminating, write_status,
};

/// A template the set has had, under its revision's name.
#[derive(Debug, Clone)]
pub(super) struct Revision {
    pub name: String,
    pub template: PodTemplateSpec,
}

/// What one pass does.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Pods to create.
    pub create: Vec<Pod>,
    /// Pods to delete, by name.
    pub delete: Vec<String>,
    /// The status to report.
    pub status: StatefulSetStatus,
}

/// The revision the set's template is now: `<set>-<hash>`.
pub(super) fn update_revision(set: &StatefulSet) -> Revision {
    let template = set.spec.as_ref().map(|s| s.template.clone());
    let template = template.unwrap_or_default();
    let hash = super::deployment::template_hash(&template, None);
    Revision {
        name: format!("{}-{hash}", set.name_any()),
        template,
    }
}

/// The ordinal of a pod of `set`, from its name (`web-2` → 2); `None` for any other name.
fn ordinal(set: &str, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    let digits = name.strip_prefix(set)?.strip_prefix('-')?;
    let n: i32 = digits.parse().ok()?;
    (n >= 0 && n.to_string() == digits).then_some(n)
}

/// The pod of ordinal `n`, from `revision`'s template.
pub(super) fn pod_for(set: &StatefulSet, revision: &Revision, n: i32) -> Pod {
    let name = format!("{}-{n}", set.name_any());
    let meta = revision.template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), revision.name.clone());
    labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
    labels.insert("apps.kubernetes.io/pod-index".into(), n.to_string());
    let mut spec = revision.template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    let service = set.spec.as_ref().and_then(|s| s.service_name.clone());
    spec.subdomain = service.filter(|s| !s.is_empty());
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: controller_ref(set).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Whether a pod counts as up: not going, running, ready.
fn healthy(pod: &Pod) -> bool {
    !terminating(&pod.metadata) && pod_phase(pod) == "Running" && pod_ready(pod)
}

/// The pure rule: given a StatefulSet, the pods it controls and its current and update
/// revisions, what to do now.
pub(super) fn reconcile(
    set: &StatefulSet,
    pods: &[&Pod],
    current: &Revision,
    update: &Revision,
) -> Plan {
    let spec = set.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1).max(0);
    let ordered = spec.and_then(|s| s.pod_management_policy.as_deref()) != Some("Parallel")
        && !crate::failpoints::on!("statefulsets::start-all-at-once");
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    let rolling = strategy.and_then(|s| s.type_.as_deref()) != Some("OnDelete");
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref()?.partition)
        .filter(|_| rolling && !crate::failpoints::on!("statefulsets::ignore-partition"))
        .unwrap_or(0);
    let set_name = set.name_any();
    let by_ordinal: BTreeMap<i32, &Pod> = pods
        .iter()
        .filter_map(|p| Some((ordinal(&set_name, p)?, *p)))
        .collect();
    let name_of = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let mut plan = Plan::default();
    // In order, each ordinal that should exist; when ordered, stop at the first not up.
    let mut blocked = false;
    for n in 0..replicas {
        let up = match by_ordinal.get(&n) {
            None => {
                // (`partition` is 0 unless the update is rolling.)
                let revision = if n < partition { current } else { update };
                plan.create.push(pod_for(set, revision, n));
                false
            }
            Some(p) if terminating(&p.metadata) => false,
            Some(p) if is_terminated(p) => {
                plan.delete.push(name_of(p));
                false
            }
            Some(p) => healthy(p),
        };
        if !up && ordered {
            blocked = true;
            break;
        }
    }
    // Ordinals past the count go, the highest first; when ordered, one at a time.
    for (_, p) in by_ordinal.range(replicas..).rev() {
        if blocked {
            break;
        }
        if !terminating(&p.metadata) {
            plan.delete.push(name_of(p));
        }
        blocked = ordered;
    }
    // Then a pod of an older revision, the highest ordinal first, once all are up.
    let all_up = (0..replicas).all(|n| by_ordinal.get(&n).is_some_and(|p| healthy(p)));
    let revision = |p: &Pod| p.labels().get(REVISION_LABEL).cloned().unwrap_or_default();
    if rolling && !blocked && all_up && plan.delete.is_empty() {
        let old = (partition..replicas)
            .rev()
            .filter_map(|n| by_ordinal.get(&n))
            .find(|p| revision(p) != update.name);
        plan.delete.extend(old.map(|p| name_of(p)));
    }
    let live: Vec<&Pod> = by_ordinal
        .values()
        .copied()
        .filter(|p| !terminating(&p.metadata))
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(live.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let ready = count(&|p| healthy(p));
    let updated = count(&|p| revision(p) == update.name);
    let done = updated == replicas && ready == replicas && count(&|_| true) == replicas;
    let current = if done { update } else { current };
    plan.status = StatefulSetStatus {
        replicas: count(&|_| true),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        current_replicas: Some(count(&|p| revision(p) == current.name)),
        updated_replicas: Some(updated),
        current_revision: Some(current.name.clone()),
        update_revision: Some(update.name.clone()),
        observed_generation: set.metadata.generation,
        collision_count: Some(0),
        conditions: None,
    };
    plan
}

/// A ControllerRevision's template: its `data` is the patch that restores it.
fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.as_ref()?.0.pointer("/spec/template")?.clone();
    template.as_object_mut()?.remove("$patch");
    serde_json::from_value(template).ok()
}

/// Runs the StatefulSet controller until shutdown: reconciles a set whenever it or one of
/// its pods changes.
pub(super) async fn run(client: Client, shutdown: watch::Receiver<bool>) {
    let controller = super::owning::<StatefulSet, Pod>(&client, Some(REVISION_LABEL));
    let recorder = Recorder::shared(client, "statefulset-controller");
    super::drive("statefulset", controller, recorder, pass, shutdown).await;
}

/// The set's revisions, current and update: records the update revision if it is new, and
/// deletes those past the history limit.
async fn revisions(
    ctx: &Recorder,
    set: &StatefulSet,
    namespace: &str,
    uid: &str,
) -> Result<(Revision, Revision), ControllerError> {
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), namespace);
    let what = |doing: &str| format!("{doing} the revisions of {}", describe(set));
    let listed = api.list(&ListParams::default()).await;
    let mut owned = listed.map_err(ControllerError::api(what("list")))?.items;
    owned.retain(|r| controller_uid(&r.metadata) == Some(uid));
    owned.sort_by_key(|r| r.revision);
    let update = update_revision(set);
    let next = owned.last().map_or(1, |r| r.revision + 1);
    let known = owned.iter().find(|r| r.name_any() == update.name);
    // A template the set had before (a rollback) becomes the newest revision again.
    if let Some(old) = known.filter(|r| r.revision + 1 < next) {
        let patch = Patch::Merge(json!({"revision": next}));
        api.patch(&old.name_any(), &PatchParams::default(), &patch)
            .await
            .map_err(ControllerError::api(what("renumber")))?;
    } else if known.is_none() {
        let meta = update.template.metadata.as_ref();
        let labels = meta.and_then(|m| m.labels.clone());
        let mut template = json!(update.template);
        template["$patch"] = json!("replace");
        let revision = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(update.name.clone()),
                labels,
                owner_references: controller_ref(set).map(|r| vec![r]),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(json!({"spec": {"template": template}}))),
            revision: next,
        };
        let created = api.create(&PostParams::default(), &revision).await;
        owned.push(created.map_err(ControllerError::api(what("record")))?);
    }
    let status = set.status.as_ref();
    let current_name = status.and_then(|s| s.current_revision.as_deref());
    let is_current = |r: &&ControllerRevision| Some(r.name_any().as_str()) == current_name;
    let recorded = owned.iter().find(is_current);
    let current = match recorded.and_then(|r| Some((r.name_any(), template_of(r)?))) {
        Some((name, template)) => Revision { name, template },
        None => update.clone(),
    };
    let limit = set.spec.as_ref().and_then(|s| s.revision_history_limit);
    let keep = usize::try_from(limit.unwrap_or(10)).unwrap_or(0);
    let old: Vec<String> = owned
        .iter()
        .map(ResourceExt::name_any)
        .filter(|n| *n != current.name && *n != update.name)
        .collect();
    for name in old.iter().take(old.len().saturating_sub(keep)) {
        delete_if_present(&api, name, &DeleteParams::default(), || what("prune")).await?;
    }
    Ok((current, update))
}

/// One pass over one StatefulSet: its revisions and pods, plan, act, report.
async fn pass(set: Arc<StatefulSet>, ctx: Arc<Recorder>) -> Result<Action, ControllerError> {
    let Some((namespace, uid, name)) = identity(set.as_ref())? else {
        return Ok(Action::await_change());
    };
    let selector = Selector::new(set.spec.as_ref().map(|s| &s.selector));
    let unknown = || ControllerError::malformed(&*set, "its selector uses an unknown operator");
    let selector = selector.ok_or_else(unknown)?;
    let (current, update) = revisions(&ctx, &set, &namespace, &uid).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let owned = owned_pods(&pods, set.as_ref(), &uid, REVISION_LABEL, Some(&selector));
    let owned = owned.await?;
    let plan = reconcile(&set, &owned.iter().collect::<Vec<_>>(), &current, &update);
    for pod in &plan.create {
        let pod_name = pod.name_any();
        match pods.create(&PostParams::default(), pod).await {
            Ok(_) => {
                let message = format!("create Pod {pod_name} in StatefulSet {name} successful");
                ctx.normal(set.as_ref(), "SuccessfulCreate", message).await;
            }
            // The pod of that name is still going: the next pass, when it is gone, creates it.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                let action = format!("create pod {pod_name} of StatefulSet {namespace}/{name}");
                return Err(ControllerError::api(action)(e));
            }
        }
    }
    for pod in &plan.delete {
        let what = || format!("delete pod {pod} of StatefulSet {namespace}/{name}");
        if delete_if_present(&pods, pod, &DeleteParams::default(), what).await? {
            let message = format!("delete Pod {pod} in StatefulSet {name} successful");
            ctx.normal(set.as_ref(), "SuccessfulDelete", message).await;
        }
    }
    let sets = Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace);
    let action = || format!("write the status of StatefulSet {namespace}/{name}");
    write_status(sets, &name, set.status.as_ref(), &plan.status, action).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn stateful_set(extra: Value) -> StatefulSet {
        let mut set = json!({
            "metadata": {"name": "db", "namespace": "default", "uid": "s-1", "generation": 1},
            "spec": {
                "replicas": 3,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "probe", "image": "shipshape/probe:v1"}]}
                }
            }
        });
        json_patch::merge(&mut set, &extra);
        serde_json::from_value(set).expect("a StatefulSet")
    }

    fn with_image(image: &str) -> StatefulSet {
        stateful_set(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "probe", "image": image}]}}}}))
    }

    /// The pod of ordinal `n` from `revision`, running and ready or not.
    fn pod(set: &StatefulSet, revision: &Revision, n: i32, up: bool) -> Pod {
        let mut pod = pod_for(set, revision, n);
        let mut status = json!({"phase": "Running"});
        if up {
            status["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        }
        pod.status = serde_json::from_value(status).ok();
        pod
    }

    fn names(pods: &[Pod]) -> Vec<String> {
        pods.iter().map(ResourceExt::name_any).collect()
    }

    #[test]
    fn pods_start_one_at_a_time_in_order_under_stable_names() {
        let set = stateful_set(json!({}));
        let v1 = update_revision(&set);
        let plan = reconcile(&set, &[], &v1, &v1);
        assert_eq!(names(&plan.create), ["db-0"]);
        let db0 = &plan.create[0];
        let spec = db0.spec.as_ref().expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("db-0"));
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
        assert_eq!(db0.labels().get(REVISION_LABEL), Some(&v1.name));

        // db-0 runs but is not ready: nothing more happens.
        let starting = pod(&set, &v1, 0, false);
        assert!(reconcile(&set, &[&starting], &v1, &v1).create.is_empty());
        let ready = pod(&set, &v1, 0, true);
        let plan = reconcile(&set, &[&ready], &v1, &v1);
        assert_eq!(names(&plan.create), ["db-1"]);
        assert_eq!(plan.status.ready_replicas, Some(1));

        let parallel = stateful_set(json!({"spec": {"podManagementPolicy": "Parallel"}}));
        let plan = reconcile(&parallel, &[], &v1, &v1);
        assert_eq!(names(&plan.create), ["db-0", "db-1", "db-2"]);
    }

    #[test]
    fn scaling_down_removes_the_highest_ordinal_first_one_at_a_time() {
        let set = stateful_set(json!({"spec": {"replicas": 1}}));
        let v1 = update_revision(&set);
        let pods: Vec<Pod> = (0..3).map(|n| pod(&set, &v1, n, true)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let plan = reconcile(&set, &refs, &v1, &v1);
        assert_eq!(plan.delete, ["db-2"]);
        let mut going = pods[2].clone();
        going.metadata.deletion_timestamp =
            serde_json::from_value(json!("2026-12-07T00:00:00Z")).ok();
        let plan = reconcile(&set, &[&pods[0], &pods[1], &going], &v1, &v1);
        assert!(plan.delete.is_empty(), "db-1 waits until db-2 is gone");
        let plan = reconcile(&set, &[&pods[0], &pods[1]], &v1, &v1);
        assert_eq!(plan.delete, ["db-1"]);
        assert_eq!(plan.status.replicas, 2);
    }

    #[test]
    fn a_lost_or_failed_pod_comes_back_under_its_name() {
        let set = stateful_set(json!({}));
        let v1 = update_revision(&set);
        let (db0, db2) = (pod(&set, &v1, 0, true), pod(&set, &v1, 2, true));
        let plan = reconcile(&set, &[&db0, &db2], &v1, &v1);
        assert_eq!(names(&plan.create), ["db-1"]);
        let mut failed = pod(&set, &v1, 1, false);
        failed.status = serde_json::from_value(json!({"phase": "Failed"})).ok();
        let plan = reconcile(&set, &[&db0, &failed, &db2], &v1, &v1);
        assert_eq!(plan.delete, ["db-1"]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn an_update_goes_from_the_highest_ordinal_down_and_stops_at_the_partition() {
        let old = stateful_set(json!({}));
        let v1 = update_revision(&old);
        let new = with_image("shipshape/probe:v2");
        let v2 = update_revision(&new);
        assert_ne!(v1.name, v2.name);
        let pods: Vec<Pod> = (0..3).map(|n| pod(&old, &v1, n, true)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let plan = reconcile(&new, &refs, &v1, &v2);
        assert_eq!(plan.delete, ["db-2"], "one at a time, the highest first");
        assert_eq!(
            plan.status.current_revision.as_deref(),
            Some(v1.name.as_str())
        );

        // Partition 1: db-1 and db-2 are updated, db-0 stays; a lost db-0 comes back as v1.
        let mut partitioned = new.clone();
        if let Some(spec) = partitioned.spec.as_mut() {
            spec.update_strategy = serde_json::from_value(
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}),
            )
            .ok();
        }
        let done = [pod(&new, &v2, 1, true), pod(&new, &v2, 2, true)];
        let plan = reconcile(&partitioned, &[&pods[0], &done[0], &done[1]], &v1, &v2);
        assert!(plan.delete.is_empty() && plan.create.is_empty());
        let plan = reconcile(&partitioned, &[&done[0], &done[1]], &v1, &v2);
        let image = |p: &Pod| p.spec.as_ref()?.containers[0].image.clone();
        assert_eq!(
            image(&plan.create[0]).as_deref(),
            Some("shipshape/probe:v1")
        );

        // Every pod at the new revision, ready: it becomes the current one.
        let all: Vec<Pod> = (0..3).map(|n| pod(&new, &v2, n, true)).collect();
        let refs: Vec<&Pod> = all.iter().collect();
        let plan = reconcile(&new, &refs, &v1, &v2);
        assert_eq!(
            plan.status.current_revision.as_deref(),
            Some(v2.name.as_str())
        );
        assert_eq!(plan.status.current_replicas, Some(3));
    }

    #[test]
    fn a_revision_keeps_the_template_it_restores() {
        let set = stateful_set(json!({}));
        let v1 = update_revision(&set);
        let mut template = json!(v1.template);
        template["$patch"] = json!("replace");
        let revision = ControllerRevision {
            data: Some(RawExtension(json!({"spec": {"template": template}}))),
            ..ControllerRevision::default()
        };
        assert_eq!(template_of(&revision), Some(v1.template));
        let other = |n: &str| Pod {
            metadata: ObjectMeta {
                name: Some(n.into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        assert_eq!(ordinal("db", &other("db-12")), Some(12));
        for name in ["db-01", "db--1", "db-x", "dbx-1", "web-1"] {
            assert_eq!(ordinal("db", &other(name)), None, "{name}");
        }
    }
}
