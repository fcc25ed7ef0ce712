//! What the plugins read: a [`PodInfo`] for the pod being placed, and a [`NodeInfo`] for
//! each node — the node itself with the pods already on it and what they add up to.
//!
//! Both are computed ahead (a `PodInfo` per scheduling attempt, a `NodeInfo` per node, kept
//! up to date as pods come and go) so that the filters and scores, which run for every
//! pod × node, only compare numbers.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::SchedulerError;
use super::resources::Resources;

/// The pod being scheduled, with what the plugins need from it worked out.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The pod as last seen on the watch.
    pub pod: Arc<Pod>,
    /// Its effective requests (CPU, memory, and one pod).
    pub requests: Resources,
    /// Its requests as scoring counts them (missing requests take upstream's defaults).
    pub scoring_requests: Resources,
    /// The host ports its containers ask for.
    pub host_ports: Vec<HostPort>,
}

impl PodInfo {
    /// Reads the pod; fails if one of its quantities does not parse.
    pub fn new(pod: Arc<Pod>) -> Result<PodInfo, SchedulerError> {
        Ok(PodInfo {
            requests: Resources::of_pod(&pod)?,
            scoring_requests: Resources::of_pod_for_scoring(&pod)?,
            host_ports: host_ports(&pod),
            pod,
        })
    }
}

/// A node and the (non-terminated) pods assigned to it, as the scheduler counts them.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node as last seen on the watch.
    pub node: Arc<Node>,
    /// The pods bound (or assumed bound) to it that have not terminated.
    pub pods: Vec<Arc<Pod>>,
    /// The sum of those pods' requests; `pods` is their count.
    pub requested: Resources,
    /// The sum of those pods' requests as scoring counts them.
    pub scoring_requested: Resources,
    /// What the node offers (allocatable, else capacity).
    pub allocatable: Resources,
    /// The host ports those pods hold.
    pub used_ports: Vec<HostPort>,
}

impl NodeInfo {
    /// A node with no pods yet.
    pub fn new(node: Arc<Node>) -> NodeInfo {
        NodeInfo {
            allocatable: Resources::allocatable(&node),
            node,
            pods: Vec::new(),
            requested: Resources::default(),
            scoring_requested: Resources::default(),
            used_ports: Vec::new(),
        }
    }

    /// The node as the watch shows it now (a heartbeat, a new taint), with the same pods.
    pub fn replace_node(&mut self, node: Arc<Node>) {
        self.allocatable = Resources::allocatable(&node);
        self.node = node;
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }

    /// Counts `pod` as running here. A terminated pod (Succeeded or Failed) holds nothing
    /// and is left out.
    pub fn add_pod(&mut self, pod: Arc<Pod>) {
        if is_terminated(&pod) {
            return;
        }
        self.requested.add(&Resources::of_pod_or_zero(&pod, false));
        self.scoring_requested
            .add(&Resources::of_pod_or_zero(&pod, true));
        self.used_ports.extend(host_ports(&pod));
        self.pods.push(pod);
    }
}

/// A host port a container asks for: a protocol, a host IP (empty or `0.0.0.0` meaning
/// every address) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The host address, empty for all.
    pub host_ip: String,
    /// The port on the host.
    pub port: i32,
}

impl HostPort {
    /// Whether two pods asking for these could not both have them: same protocol and
    /// port, and the same address or either one on every address (upstream's
    /// `HostPortInfo.CheckConflict`).
    pub fn conflicts(&self, other: &HostPort) -> bool {
        let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0";
        self.port == other.port
            && self.protocol == other.protocol
            && (self.host_ip == other.host_ip
                || wildcard(&self.host_ip)
                || wildcard(&other.host_ip))
    }
}

/// The host ports the pod's containers (and init containers) ask for.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|&h| h > 0)?;
            Some(HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                host_ip: p.host_ip.clone().unwrap_or_default(),
                port,
            })
        })
        .collect()
}

/// Whether the pod has finished for good (phase Succeeded or Failed) and holds nothing.
pub fn is_terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The uid of an object's controller (the ownerReference with `controller: true`), if any.
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn host_ports_conflict_on_same_protocol_port_and_overlapping_address() {
        let p = |protocol: &str, host_ip: &str, port| HostPort {
            protocol: protocol.into(),
            host_ip: host_ip.into(),
            port,
        };
        assert!(p("TCP", "", 80).conflicts(&p("TCP", "", 80)));
        assert!(p("TCP", "0.0.0.0", 80).conflicts(&p("TCP", "10.0.0.1", 80)));
        assert!(p("TCP", "10.0.0.1", 80).conflicts(&p("TCP", "10.0.0.1", 80)));
        assert!(!p("TCP", "10.0.0.1", 80).conflicts(&p("TCP", "10.0.0.2", 80)));
        assert!(!p("TCP", "", 80).conflicts(&p("UDP", "", 80)));
        assert!(!p("TCP", "", 80).conflicts(&p("TCP", "", 81)));
    }

    #[test]
    fn terminated_pods_hold_nothing_on_a_node() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).expect("node");
        let pod = |phase: &str| -> Arc<Pod> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": "p"},
                    "spec": {"containers": [{
                        "name": "c",
                        "resources": {"requests": {"cpu": "1"}},
                        "ports": [{"containerPort": 80, "hostPort": 8080}],
                    }]},
                    "status": {"phase": phase},
                }))
                .expect("pod"),
            )
        };
        let mut info = NodeInfo::new(Arc::new(node));
        info.add_pod(pod("Running"));
        info.add_pod(pod("Succeeded"));
        info.add_pod(pod("Failed"));
        assert_eq!(info.pods.len(), 1);
        assert_eq!(info.requested.milli_cpu, 1000);
        assert_eq!(info.requested.pods, 1);
        assert_eq!(info.used_ports.len(), 1);
    }
}
