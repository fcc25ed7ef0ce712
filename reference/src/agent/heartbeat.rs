//! # The node's heartbeat: a Lease renewed every period, the status posted when it changes
//!
//! A node tells the control plane it is alive in two ways, as a kubelet does:
//!
//! - every heartbeat period it renews its **Lease**, `kube-node-lease/<node>` (created on
//!   the first beat, owned by the Node). A Lease is a few hundred bytes and only the node
//!   lifecycle controller follows it, so a thousand nodes beating every second cost the
//!   control plane a thousand small writes a second, nothing more;
//! - its **status** (capacity, addresses, the `Ready` condition) is posted only when it
//!   differs from what the Node says — the lifecycle controller marked it `Unknown` while
//!   the node was cut off, say — or when [`STATUS_REPORT_PERIOD`] has passed since the last
//!   post. Before Leases every beat rewrote the whole Node, and every watcher of Nodes (the
//!   scheduler, the controllers, kubectl) was sent it: at a thousand nodes that was most of
//!   the control plane's work. Kubernetes made the same change (KEP-589, node leases) and
//!   reports the status every 5 minutes; shipshape's nodes report every minute, since its
//!   nodes are few and a fresh `lastHeartbeatTime` helps someone reading `kubectl describe`.
//!
//! Either one counts: the lifecycle controller takes a node for alive while its Lease's
//! `renewTime` or its `lastHeartbeatTime` keeps changing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{AgentConfig, Reconnect, node_status, post_status, stopped};
use crate::api::meta;

/// The namespace of the nodes' Leases, as in Kubernetes.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// How often a node posts its whole status even when nothing in it changed.
pub const STATUS_REPORT_PERIOD: Duration = Duration::from_secs(60);

/// How long one heartbeat may take before it counts as failed.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

/// How many heartbeat periods a node's Lease claims (`leaseDurationSeconds`): the default
/// grace of the node lifecycle controller, which judges by its own grace period anyway.
const LEASE_PERIODS: u32 = 4;

/// Beats until `shutdown` turns true. A failed beat is logged and, if the agent knows how,
/// the next one goes over fresh connections.
pub async fn run(
    mut nodes: Api<Node>,
    config: Arc<AgentConfig>,
    log_port: u16,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut leases: Api<Lease> = Api::namespaced(nodes.clone().into_client(), NODE_LEASE_NAMESPACE);
    let mut last_report: Option<Instant> = None;
    let mut tick = tokio::time::interval(config.heartbeat);
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        let beat = beat(&nodes, &leases, &config, log_port, &mut last_report);
        let error = match tokio::time::timeout(HEARTBEAT_TIMEOUT, beat).await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {HEARTBEAT_TIMEOUT:?}"),
        };
        tracing::warn!(node = %config.node_name, %error, "heartbeat failed");
        if let Some(Reconnect(credentials)) = &config.reconnect
            && let Ok(client) = credentials.client_as("kubelet")
        {
            nodes = Api::all(client.clone());
            leases = Api::namespaced(client, NODE_LEASE_NAMESPACE);
        }
    }
}

/// One beat: the Lease renewed, then the status posted if it changed or is due.
async fn beat(
    nodes: &Api<Node>,
    leases: &Api<Lease>,
    config: &AgentConfig,
    log_port: u16,
    last_report: &mut Option<Instant>,
) -> Result<(), kube::Error> {
    let node = nodes.get_status(&config.node_name).await?;
    renew_lease(leases, config, &node).await?;
    let previous = node.status.and_then(|s| serde_json::to_value(s).ok());
    let status = node_status(config, log_port, &meta::now_rfc3339(), previous.as_ref());
    let due = last_report.is_none_or(|at| at.elapsed() >= STATUS_REPORT_PERIOD);
    if due || !same_status(previous.as_ref(), &status) {
        post_status(nodes, &config.node_name, status).await?;
        *last_report = Some(Instant::now());
    }
    Ok(())
}

/// Renews the node's Lease, creating it (owned by the Node) if it is not there.
async fn renew_lease(
    leases: &Api<Lease>,
    config: &AgentConfig,
    node: &Node,
) -> Result<(), kube::Error> {
    let name = &config.node_name;
    let spec = LeaseSpec {
        holder_identity: Some(name.clone()),
        lease_duration_seconds: Some(
            i32::try_from((config.heartbeat * LEASE_PERIODS).as_secs().max(1)).unwrap_or(40),
        ),
        renew_time: Some(MicroTime(Timestamp::now())),
        ..Default::default()
    };
    let patch = Patch::Merge(json!({ "spec": spec }));
    match leases.patch(name, &PatchParams::default(), &patch).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(NODE_LEASE_NAMESPACE.to_owned()),
                    owner_references: node.metadata.uid.clone().map(|uid| {
                        vec![OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: name.clone(),
                            uid,
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            match leases.create(&PostParams::default(), &lease).await {
                // Someone (an earlier run of this agent) made it in between: renewed next beat.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                other => other.map(|_| ()),
            }
        }
        other => other.map(|_| ()),
    }
}

/// Whether two node statuses say the same, timestamps aside. Both go through the API's
/// type first, so a field the apiserver fills in or leaves out does not count as a change.
fn same_status(posted: Option<&Value>, computed: &Value) -> bool {
    let normal = |v: &Value| -> Option<Value> {
        let status: NodeStatus = serde_json::from_value(v.clone()).ok()?;
        let mut v = serde_json::to_value(status).ok()?;
        for condition in v
            .get_mut("conditions")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(c) = condition.as_object_mut() {
                c.remove("lastHeartbeatTime");
                c.remove("lastTransitionTime");
            }
        }
        Some(v)
    };
    matches!((posted.and_then(normal), normal(computed)), (Some(a), Some(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AgentConfig {
        AgentConfig::new("n1", "c", std::env::temp_dir(), "")
    }

    #[test]
    fn a_status_differs_only_in_what_it_says_not_when() {
        let config = config();
        let earlier = node_status(&config, 10250, "2026-01-01T00:00:00Z", None);
        // What the apiserver hands back: the same status, through the API's type.
        let stored: NodeStatus = serde_json::from_value(earlier.clone()).expect("a status");
        let stored = serde_json::to_value(stored).expect("serializes");
        let now = node_status(&config, 10250, "2026-01-01T00:01:00Z", Some(&stored));
        assert!(same_status(Some(&stored), &now));

        // The lifecycle controller marked the node Unknown: the agent says Ready again.
        let mut unknown = stored.clone();
        unknown["conditions"][0]["status"] = json!("Unknown");
        assert!(!same_status(Some(&unknown), &now));
        // A node that grew, or has no status at all, posts too.
        let mut smaller = stored.clone();
        smaller["capacity"]["pods"] = json!("10");
        assert!(!same_status(Some(&smaller), &now));
        assert!(!same_status(None, &now));
    }
}
