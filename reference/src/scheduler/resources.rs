//! How much a pod asks for, and how much a node has: Kubernetes quantities (`100m`, `0.5`,
//! `128Mi`, `1G`, `1e3`) read into whole numbers the filters can add and compare.
//!
//! Every quantity becomes an integer in a fixed unit — CPU in millicores, memory in bytes,
//! pods as a count — rounded *up*, as Kubernetes' `MilliValue()` and `Value()` do, so
//! `0.1m` of CPU is 1 millicore, never 0.
//!
//! A pod's effective request is what the upstream scheduler computes (`computePodResourceRequest`):
//! the sum over its containers; a container that states a limit but no request requests
//! its limit (what the apiserver's defaulting does upstream); init containers run one at a
//! time before the others, so the pod needs the largest of them if that is more than the
//! sum; sidecars (init containers with `restartPolicy: Always`) keep running and add to
//! everything after them; `spec.overhead` comes on top.
//!
//! **Malformed quantities never panic.** For the pod being scheduled, a quantity that does
//! not parse is an error ([`SchedulerError::Quantity`]) naming the field and the text, and
//! the scheduler reports the pod unschedulable with that message: guessing a size for it
//! could overcommit a node. For what is already decided — pods bound to a node, a node's
//! capacity — a malformed quantity counts as zero (see [`Resources::of_pod_or_zero`] and
//! [`Resources::allocatable`]): the pod is there whether we like its spec or not, and a node
//! that states nonsense gets no room.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::SchedulerError;
pub use crate::api::quantity::{QuantityError, parse_cpu, parse_memory};

/// CPU, memory and a pod count: what a pod requests or what a node offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores (`1` = 1000, `100m` = 100).
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Number of pods (1 for a pod's request; the node's `pods` allocatable for a node).
    pub pods: i64,
}

impl Resources {
    /// Adds `other` to `self`, saturating rather than overflowing.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.pods = self.pods.saturating_add(other.pods);
    }

    /// The larger of `self` and `other`, resource by resource.
    fn max(&self, other: &Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(other.milli_cpu),
            memory: self.memory.max(other.memory),
            pods: self.pods.max(other.pods),
        }
    }

    /// The pod's effective requests, with the pod counting as one pod; an error names the
    /// first quantity that does not parse.
    pub fn of_pod(pod: &Pod) -> Result<Resources, SchedulerError> {
        pod_requests(pod, false)
    }

    /// The pod's effective requests as scoring sees them: a container that requests no CPU
    /// counts as 100m and one that requests no memory as 200Mi, as upstream's
    /// `GetNonzeroRequests` does, so that pods without requests still spread by load.
    pub fn of_pod_for_scoring(pod: &Pod) -> Result<Resources, SchedulerError> {
        pod_requests(pod, true)
    }

    /// [`Resources::of_pod`] for a pod already bound: a malformed quantity counts as zero.
    pub fn of_pod_or_zero(pod: &Pod, for_scoring: bool) -> Resources {
        pod_requests(pod, for_scoring).unwrap_or(Resources {
            pods: 1,
            ..Resources::default()
        })
    }

    /// What a node offers: `status.allocatable`, or `status.capacity` for a resource the
    /// node does not list as allocatable. Missing or malformed quantities count as zero.
    pub fn allocatable(node: &Node) -> Resources {
        let status = node.status.as_ref();
        let lookup = |key: &str| -> Option<&Quantity> {
            status
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get(key))
                .or_else(|| {
                    status
                        .and_then(|s| s.capacity.as_ref())
                        .and_then(|c| c.get(key))
                })
        };
        let read = |key: &str, parse: fn(&str) -> Result<i64, QuantityError>| {
            lookup(key).and_then(|q| parse(&q.0).ok()).unwrap_or(0)
        };
        Resources {
            milli_cpu: read("cpu", parse_cpu),
            memory: read("memory", parse_memory),
            pods: read("pods", parse_memory),
        }
    }
}

/// The CPU a scoring pass assumes for a container that requests none (upstream's
/// `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory a scoring pass assumes for a container that requests none (upstream's
/// `DefaultMemoryRequest`, 200Mi).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

fn pod_requests(pod: &Pod, for_scoring: bool) -> Result<Resources, SchedulerError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Resources {
            pods: 1,
            ..Resources::default()
        });
    };
    let mut total = Resources::default();
    for (i, c) in spec.containers.iter().enumerate() {
        let r = container_requests(c, &format!("spec.containers[{i}]"), for_scoring)?;
        total.add(&r);
    }
    // Init containers run one after another before the app containers; sidecars among
    // them keep running, so they weigh on every later init container and on the app.
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let r = container_requests(c, &format!("spec.initContainers[{i}]"), for_scoring)?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            init_peak = init_peak.max(&sidecars);
        } else {
            let mut running = sidecars;
            running.add(&r);
            init_peak = init_peak.max(&running);
        }
    }
    total.add(&sidecars);
    let mut total = total.max(&init_peak);
    for (name, q) in spec.overhead.iter().flatten() {
        let field = format!("spec.overhead.{name}");
        match name.as_str() {
            "cpu" => total.milli_cpu = total.milli_cpu.saturating_add(read(&field, q, parse_cpu)?),
            "memory" => total.memory = total.memory.saturating_add(read(&field, q, parse_memory)?),
            _ => {}
        }
    }
    total.pods = 1;
    Ok(total)
}

/// One container's requests: `requests`, else `limits`, else nothing (or the scoring default).
fn container_requests(
    c: &Container,
    path: &str,
    for_scoring: bool,
) -> Result<Resources, SchedulerError> {
    let empty = BTreeMap::new();
    let res = c.resources.as_ref();
    let requests = res.and_then(|r| r.requests.as_ref()).unwrap_or(&empty);
    let limits = res.and_then(|r| r.limits.as_ref()).unwrap_or(&empty);
    let one = |name: &str, parse: fn(&str) -> Result<i64, QuantityError>| {
        if let Some(q) = requests.get(name) {
            read(&format!("{path}.resources.requests.{name}"), q, parse).map(Some)
        } else if let Some(q) = limits.get(name) {
            read(&format!("{path}.resources.limits.{name}"), q, parse).map(Some)
        } else {
            Ok(None)
        }
    };
    let default = |for_scoring_default| if for_scoring { for_scoring_default } else { 0 };
    Ok(Resources {
        milli_cpu: one("cpu", parse_cpu)?.unwrap_or(default(DEFAULT_MILLI_CPU_REQUEST)),
        memory: one("memory", parse_memory)?.unwrap_or(default(DEFAULT_MEMORY_REQUEST)),
        pods: 0,
    })
}

fn read(
    field: &str,
    q: &Quantity,
    parse: fn(&str) -> Result<i64, QuantityError>,
) -> Result<i64, SchedulerError> {
    parse(&q.0).map_err(|source| SchedulerError::Quantity {
        field: field.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_quantities_read_as_millicores() {
        for (q, want) in [
            ("100m", 100),
            ("1", 1000),
            ("0.5", 500),
            ("2.5", 2500),
            (".5", 500),
            ("1.", 1000),
            ("+2", 2000),
            ("0", 0),
            ("-0", 0),
            ("1e-3", 1),
            ("0.1m", 1),
            ("1500u", 2),
            ("1k", 1_000_000),
            ("250000000n", 250),
        ] {
            assert_eq!(parse_cpu(q), Ok(want), "{q}");
        }
    }

    #[test]
    fn memory_quantities_read_as_bytes() {
        for (q, want) in [
            ("128Mi", 128 * 1024 * 1024),
            ("1Gi", 1024 * 1024 * 1024),
            ("1G", 1_000_000_000),
            ("500M", 500_000_000),
            ("1000", 1000),
            ("1e3", 1000),
            ("1E3", 1000),
            ("1k", 1000),
            ("1Ki", 1024),
            ("1.5Gi", 1_610_612_736),
            ("1E", 1_000_000_000_000_000_000),
            ("2Ei", 2_305_843_009_213_693_952),
            ("100m", 1),
            ("12e+2", 1200),
        ] {
            assert_eq!(parse_memory(q), Ok(want), "{q}");
        }
    }

    #[test]
    fn malformed_quantities_are_errors_not_panics() {
        for q in [
            "",
            "abc",
            "1x",
            "1.2.3",
            "Mi",
            "-1",
            "-100m",
            "1 Gi",
            " 1",
            "1e",
            "1e1.5",
            "1eX",
            "1e999",
            "1e99",
            "8Ei",
            "1..",
            "+",
            "99999999999999999999999999999999999999999",
        ] {
            let err = parse_memory(q).and_then(|_| parse_cpu(q));
            assert!(err.is_err(), "{q:?} should not parse");
        }
        let err = parse_cpu("1x").expect_err("an error");
        assert_eq!(err.quantity, "1x");
        assert_eq!(
            err.to_string(),
            "invalid quantity \"1x\": its suffix is not one Kubernetes knows"
        );
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("valid")
    }

    fn container(requests: serde_json::Value, limits: serde_json::Value) -> serde_json::Value {
        json!({"name": "c", "resources": {"requests": requests, "limits": limits}})
    }

    #[test]
    fn a_pods_requests_sum_its_containers() {
        let p = pod(json!({"containers": [
            container(json!({"cpu": "100m", "memory": "64Mi"}), json!({})),
            container(json!({"cpu": "250m"}), json!({"memory": "1Gi"})),
        ]}));
        assert_eq!(
            Resources::of_pod(&p).expect("valid"),
            Resources {
                milli_cpu: 350,
                memory: (64 << 20) + (1 << 30),
                pods: 1
            }
        );
    }

    #[test]
    fn a_container_with_limits_only_requests_its_limits() {
        let p =
            pod(json!({"containers": [container(json!({}), json!({"cpu": "2", "memory": "1G"}))]}));
        let r = Resources::of_pod(&p).expect("valid");
        assert_eq!((r.milli_cpu, r.memory), (2000, 1_000_000_000));
    }

    #[test]
    fn init_containers_count_when_larger_than_the_sum() {
        let p = pod(json!({
            "containers": [container(json!({"cpu": "100m", "memory": "100"}), json!({}))],
            "initContainers": [
                container(json!({"cpu": "1"}), json!({})),
                container(json!({"cpu": "200m", "memory": "50"}), json!({})),
            ],
        }));
        let r = Resources::of_pod(&p).expect("valid");
        assert_eq!((r.milli_cpu, r.memory), (1000, 100));
    }

    #[test]
    fn sidecars_add_to_everything_after_them_and_overhead_on_top() {
        let mut sidecar = container(json!({"cpu": "300m"}), json!({}));
        sidecar["restartPolicy"] = json!("Always");
        let p = pod(json!({
            "containers": [container(json!({"cpu": "100m"}), json!({}))],
            "initContainers": [sidecar, container(json!({"cpu": "500m"}), json!({}))],
            "overhead": {"cpu": "10m", "memory": "1Ki"},
        }));
        let r = Resources::of_pod(&p).expect("valid");
        // max(100 + 300, 300 + 500) + 10.
        assert_eq!((r.milli_cpu, r.memory), (810, 1024));
    }

    #[test]
    fn scoring_counts_missing_requests_as_the_upstream_defaults() {
        let p = pod(json!({"containers": [
            container(json!({}), json!({})),
            container(json!({"cpu": "0"}), json!({})),
        ]}));
        assert_eq!(Resources::of_pod(&p).expect("valid").milli_cpu, 0);
        let s = Resources::of_pod_for_scoring(&p).expect("valid");
        assert_eq!(s.milli_cpu, DEFAULT_MILLI_CPU_REQUEST);
        assert_eq!(s.memory, 2 * DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn a_malformed_request_names_its_field() {
        let p = pod(json!({"containers": [
            container(json!({"cpu": "1"}), json!({})),
            container(json!({"cpu": "lots"}), json!({})),
        ]}));
        let err = Resources::of_pod(&p).expect_err("an error");
        assert_eq!(
            err.to_string(),
            "failed to read spec.containers[1].resources.requests.cpu: \
             invalid quantity \"lots\": it does not start with a number"
        );
        assert_eq!(
            Resources::of_pod_or_zero(&p, false),
            Resources {
                pods: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_node_offers_allocatable_else_capacity() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {
                "allocatable": {"cpu": "1500m"},
                "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            }
        }))
        .expect("valid");
        assert_eq!(
            Resources::allocatable(&node),
            Resources {
                milli_cpu: 1500,
                memory: 4 << 30,
                pods: 110
            }
        );
        let bad: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {"capacity": {"cpu": "many"}}
        }))
        .expect("valid");
        assert_eq!(Resources::allocatable(&bad), Resources::default());
    }
}
