//! The scheduler against a real control plane, in process: nodes are created through the
//! API (no node agents), the scheduler runs as a task, and every check is a bounded poll
//! of what the API shows.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use shipshape::control_plane::{ControlPlane, ControlPlaneConfig};
use shipshape::scheduler::{self, SchedulerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A control plane and a scheduler running against it.
struct Cluster {
    cp: ControlPlane,
    _dir: tempfile::TempDir,
    client: kube::Client,
    stop: watch::Sender<bool>,
    scheduler: JoinHandle<Result<(), scheduler::SchedulerError>>,
}

/// Starts a control plane and a scheduler whose periodic retry is too slow to matter
/// within a test: whatever gets scheduled late does so because a watch event woke it.
async fn start() -> Cluster {
    // `RUST_LOG=shipshape::scheduler=debug cargo test --test scheduler -- --nocapture`
    // shows what the scheduler decided and why.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
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
    let config = SchedulerConfig {
        retry_interval: Duration::from_secs(600),
        ..SchedulerConfig::default()
    };
    let scheduler = tokio::spawn(scheduler::run(client.clone(), config, stopped));
    Cluster {
        cp,
        _dir: dir,
        client,
        stop,
        scheduler,
    }
}

impl Cluster {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a Ready node offering `cpu`, 8Gi and 110 pods, with `extra` merged in.
    async fn node(&self, name: &str, cpu: &str, extra: Value) {
        let mut node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        });
        merge(&mut node, extra);
        let node: Node = serde_json::from_value(node).expect("node");
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("node created");
    }

    /// Creates a pod with one container requesting `cpu`, with `extra` merged in.
    async fn pod(&self, name: &str, cpu: &str, extra: Value) {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"containers": [{
                "name": "app", "image": "shipshape/probe:v1",
                "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
            }]},
        });
        merge(&mut pod, extra);
        let pod: Pod = serde_json::from_value(pod).expect("pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("pod created");
    }

    /// Waits for the pod to be bound and returns its node.
    async fn bound(&self, name: &str) -> String {
        let pods = self.pods();
        eventually(&format!("pod {name} to be bound"), async || {
            let pod = pods.get(name).await.ok()?;
            pod.spec?.node_name.filter(|n| !n.is_empty())
        })
        .await
    }

    /// Waits for the pod's PodScheduled=False/Unschedulable condition; returns its message.
    async fn unschedulable(&self, name: &str) -> String {
        let pods = self.pods();
        eventually(
            &format!("pod {name} to be reported unschedulable"),
            async || {
                let pod = pods.get(name).await.ok()?;
                let condition = pod
                    .status?
                    .conditions?
                    .into_iter()
                    .find(|c| c.type_ == "PodScheduled")?;
                (condition.status == "False"
                    && condition.reason.as_deref() == Some("Unschedulable"))
                .then_some(condition.message)
                .flatten()
            },
        )
        .await
    }

    async fn stop(self) {
        self.stop.send(true).expect("scheduler listening");
        let result = tokio::time::timeout(Duration::from_secs(10), self.scheduler)
            .await
            .expect("the scheduler stops when told")
            .expect("the scheduler task did not panic");
        assert!(result.is_ok(), "scheduler ended with {result:?}");
        self.cp.stop().await;
    }
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

/// Polls `check` every 50 ms until it gives a value, for at most 10 seconds.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn owned_by(uid: &str) -> Value {
    json!({"metadata": {"ownerReferences": [{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
        "uid": uid, "controller": true,
    }]}})
}

#[tokio::test]
async fn replicas_spread_and_a_pod_too_big_for_every_node_waits_for_one_that_fits() {
    let c = start().await;
    for n in ["node-a", "node-b", "node-c"] {
        c.node(n, "2", json!({})).await;
    }
    for i in 0..6 {
        c.pod(&format!("web-{i}"), "100m", owned_by("rs-web-1"))
            .await;
    }
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..6 {
        *per_node
            .entry(c.bound(&format!("web-{i}")).await)
            .or_default() += 1;
    }
    assert_eq!(
        per_node.into_iter().collect::<Vec<_>>(),
        [
            ("node-a".to_owned(), 2),
            ("node-b".to_owned(), 2),
            ("node-c".to_owned(), 2)
        ]
    );

    c.pod("huge", "4", json!({})).await;
    let message = c.unschedulable("huge").await;
    assert!(message.contains("0/3 nodes are available"), "{message}");
    assert!(message.contains("Insufficient cpu"), "{message}");
    assert_eq!(message, "0/3 nodes are available: 3 Insufficient cpu.");
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    eventually("a FailedScheduling event for huge", async || {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some("huge")
                    && e.reason.as_deref() == Some("FailedScheduling")
                    && e.type_.as_deref() == Some("Warning")
            })
            .map(|_| ())
    })
    .await;
    assert!(
        c.pods()
            .get("huge")
            .await
            .expect("huge")
            .spec
            .and_then(|s| s.node_name)
            .is_none()
    );

    // A node with room arrives: the pod is placed there, well before any periodic retry.
    c.node("node-d", "8", json!({})).await;
    assert_eq!(c.bound("huge").await, "node-d");
    let scheduled = eventually("huge's PodScheduled condition to turn True", async || {
        let pod = c.pods().get("huge").await.ok()?;
        let condition = pod
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")?;
        (condition.status == "True").then_some(condition)
    })
    .await;
    assert_eq!(scheduled.reason, None);
    let message = eventually("a Scheduled event for huge", async || {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some("huge")
                    && e.reason.as_deref() == Some("Scheduled")
            })
            .and_then(|e| e.message)
    })
    .await;
    assert_eq!(message, "Successfully assigned default/huge to node-d");
    c.stop().await;
}

#[tokio::test]
async fn node_selectors_and_taints_are_honoured() {
    let c = start().await;
    c.node("ssd", "2", json!({"metadata": {"labels": {"disk": "ssd"}}}))
        .await;
    c.node(
        "gpu",
        "2",
        json!({
            "metadata": {"labels": {"accelerator": "gpu"}},
            "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]},
        }),
    )
    .await;
    c.node("plain", "2", json!({})).await;

    c.pod(
        "wants-ssd",
        "100m",
        json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
    )
    .await;
    assert_eq!(c.bound("wants-ssd").await, "ssd");

    // Pods that tolerate nothing never land on the tainted node, however empty it is.
    for i in 0..4 {
        c.pod(&format!("any-{i}"), "100m", json!({})).await;
    }
    for i in 0..4 {
        assert_ne!(c.bound(&format!("any-{i}")).await, "gpu");
    }

    // Selecting the tainted node without tolerating its taint: nowhere to go.
    c.pod(
        "wants-gpu",
        "100m",
        json!({"spec": {"nodeSelector": {"accelerator": "gpu"}}}),
    )
    .await;
    assert_eq!(
        c.unschedulable("wants-gpu").await,
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
         2 node(s) didn't match Pod's node affinity/selector."
    );

    // Tolerating it: placed there.
    c.pod(
        "tolerates-gpu",
        "100m",
        json!({"spec": {
            "nodeSelector": {"accelerator": "gpu"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        }}),
    )
    .await;
    assert_eq!(c.bound("tolerates-gpu").await, "gpu");
    c.stop().await;
}

#[tokio::test]
async fn pods_created_in_a_burst_never_overcommit_a_node() {
    // One node with room for exactly three of these pods.
    let c = start().await;
    c.node("only", "1500m", json!({})).await;
    // Created concurrently, so that they reach the scheduler together, before the watch
    // shows any of its bindings.
    let names: Vec<String> = (0..8).map(|i| format!("burst-{i}")).collect();
    futures::future::join_all(names.iter().map(|n| c.pod(n, "500m", json!({})))).await;
    let pods = c.pods();
    let (bound, reported) = eventually("every burst pod to be bound or reported", async || {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let bound = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        let reported = list
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.reason.as_deref() == Some("Unschedulable"))
                    })
            })
            .count();
        (bound + reported == 8).then_some((bound, reported))
    })
    .await;
    assert_eq!((bound, reported), (3, 5));
    c.stop().await;
}
