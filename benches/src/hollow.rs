//! Hollow nodes: node agents without containers, for measuring the control plane at scale.
//!
//! A thousand machines are not to be had on a laptop, but the control plane cannot tell a
//! machine from a program that talks to the API as a machine does. Kubernetes measures
//! itself so (kubemark's hollow kubelets, kwok's fake nodes), and so does shipshape: a
//! hollow node does everything the real agent does *through the API* and nothing on
//! Docker.
//!
//! - It **registers** its Node, as the agent does ([`shipshape::agent::register`]), with the size it is
//!   given, and renews its **heartbeat** at the agent's period ([`shipshape::agent::heartbeat`]: its
//!   Lease every period, its status when it changes): the node lifecycle controller sees a
//!   healthy machine, and one that stops beating is lost.
//! - It reports every pod bound to it **Running and Ready** at once, with a pod IP of its
//!   own making, through the same status computation as the agent ([`shipshape::agent::status`]): the
//!   scheduler, the ReplicaSet and Deployment controllers and the endpoints see what they
//!   would see from a real node whose containers start instantly.
//! - It **finishes a graceful deletion** (the pod's final delete, grace 0) as the agent
//!   does once containers have stopped.
//!
//! Every hollow node of one [`run`] shares one API client and one pod watch: a thousand
//! of them cost one process a few tasks each, which is the point. Their heartbeats are
//! spread over the period rather than sent together, as real machines' are.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::{Semaphore, watch};

use shipshape::agent::status::{self, ContainerState, ContainerView, PodView};
use shipshape::agent::{AgentConfig, AgentError, heartbeat, register, stopped};
use shipshape::api::meta;

/// How many registrations and status writes the hollow nodes of one [`run`] have in flight
/// at once: enough to keep the apiserver busy, few enough not to queue thousands of
/// requests in this process.
const IN_FLIGHT: usize = 64;

/// One hollow node: its agent configuration and where its pods' addresses come from.
struct Hollow {
    config: Arc<AgentConfig>,
    /// The node's index among the hollow nodes of the run, for its pods' addresses.
    index: usize,
    /// How many pods it has given an address.
    addresses_given: AtomicU64,
}

/// Runs one hollow node per configuration until `shutdown` turns true. Fails if one of
/// them cannot register; after that, a failed write is logged and tried again on the next
/// event, as the agent does.
pub async fn run(
    client: kube::Client,
    configs: Vec<AgentConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let hollows: HashMap<String, Hollow> = configs
        .into_iter()
        .enumerate()
        .map(|(index, config)| {
            let hollow = Hollow {
                config: Arc::new(config),
                index,
                addresses_given: AtomicU64::new(0),
            };
            (hollow.config.node_name.clone(), hollow)
        })
        .collect();
    let configs: Vec<Arc<AgentConfig>> = hollows.values().map(|h| h.config.clone()).collect();
    futures::stream::iter(configs)
        .map(|config| {
            let nodes = nodes.clone();
            async move { register(&nodes, &config, 0).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;

    let mut tasks = tokio::task::JoinSet::new();
    let count = u32::try_from(hollows.len()).unwrap_or(u32::MAX).max(1);
    for (i, hollow) in hollows.values().enumerate() {
        let config = hollow.config.clone();
        let offset = config.heartbeat * u32::try_from(i).unwrap_or(0) / count;
        let (nodes, shutdown) = (nodes.clone(), shutdown.clone());
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            heartbeat::run(nodes, config, 0, shutdown).await;
        });
    }

    let hollows = Arc::new(hollows);
    let writes = Arc::new(Semaphore::new(IN_FLIGHT));
    let pods: Api<Pod> = Api::all(client.clone());
    let mut events = watcher(pods, watcher::Config::default()).boxed();
    // Pods reported Running, by uid: their own status write comes back on the watch.
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        let event = tokio::select! {
            _ = stopped(&mut shutdown) => break,
            event = events.next() => event,
        };
        let Some(event) = event else { break };
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            Ok(watcher::Event::Delete(pod)) => {
                reported.remove(pod.metadata.uid.as_deref().unwrap_or_default());
                continue;
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "hollow nodes: pod watch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        if node.is_none_or(|n| !hollows.contains_key(n)) {
            continue;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if !deleting && !reported.insert(uid) {
            continue;
        }
        let (client, hollows, writes) = (client.clone(), hollows.clone(), writes.clone());
        tasks.spawn(async move {
            let Ok(_permit) = writes.acquire().await else {
                return;
            };
            let outcome = if deleting {
                finish_deletion(client, &pod).await
            } else {
                report_running(client, &hollows, &pod).await
            };
            if let Err(e) = outcome {
                tracing::debug!(error = %e, "hollow nodes: a pod write failed");
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    tasks.abort_all();
    Ok(())
}

/// The address a hollow node gives its `n`th pod: `10.<node>.<pod>`, unique per node
/// until a node has had 250 pods, which is more than it holds at once.
fn pod_ip(node_index: usize, n: u64) -> String {
    let [_, _, hi, lo] = u32::try_from(node_index).unwrap_or(0).to_be_bytes();
    format!("10.{hi}.{lo}.{}", n % 250 + 2)
}

/// Reports `pod` Running and Ready on its hollow node.
async fn report_running(
    client: kube::Client,
    hollows: &HashMap<String, Hollow>,
    pod: &Pod,
) -> Result<(), kube::Error> {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    let Some(hollow) = node.and_then(|n| hollows.get(n)) else {
        return Ok(());
    };
    let value = serde_json::to_value(pod).unwrap_or_default();
    let spec = value.get("spec").cloned().unwrap_or_default();
    let now = meta::now_rfc3339();
    let in_spec = pod.spec.iter().flat_map(|s| &s.containers);
    let containers = in_spec
        .map(|c| ContainerView {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: None,
            container_id: None,
            state: ContainerState::Running {
                started_at: now.clone(),
            },
            last_state: None,
            ready: true,
            restart_count: 0,
            will_restart: true,
        })
        .collect();
    let sequence = hollow.addresses_given.fetch_add(1, Ordering::Relaxed);
    let view = PodView {
        containers,
        refused: None,
        pod_ip: Some(pod_ip(hollow.index, sequence)),
        host_ip: hollow.config.address.to_string(),
        start_time: now.clone(),
        qos_class: status::qos_class(&spec).to_owned(),
    };
    let previous = value.get("status").cloned().unwrap_or(json!({}));
    let next = status::pod_status(&view, &previous, &now);
    let pods: Api<Pod> = Api::namespaced(client, pod.metadata.namespace.as_deref().unwrap_or(""));
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let patch = Patch::Merge(json!({ "status": next }));
    pods.patch_status(name, &PatchParams::default(), &patch)
        .await
        .map(drop)
}

/// Removes a pod being deleted for good, as the agent does once its containers are gone:
/// a hollow node has none to stop.
async fn finish_deletion(client: kube::Client, pod: &Pod) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client, pod.metadata.namespace.as_deref().unwrap_or(""));
    let params = DeleteParams::default()
        .grace_period(0)
        .preconditions(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        });
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match pods.delete(name, &params).await {
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses_are_distinct_per_node_and_in_range() {
        assert_eq!(pod_ip(0, 0), "10.0.0.2");
        assert_eq!(pod_ip(300, 249), "10.1.44.251");
        assert_ne!(pod_ip(1, 7), pod_ip(2, 7));
    }
}
