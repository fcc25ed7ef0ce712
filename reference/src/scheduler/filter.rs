//! The predicates: filter plugins that each answer "can this pod run on this node?".
//!
//! Each filter is a pure function of the pod ([`PodInfo`]) and one node with the pods
//! already on it ([`NodeInfo`]). It returns `Ok(())` when the node passes, or the reasons it
//! does not, worded exactly as the upstream scheduler words them, because those strings end
//! up in the pod's `PodScheduled` condition and in `kubectl describe pod` — people search
//! for them.
//!
//! [`FILTERS`] runs in upstream's order (cheap checks on the node first, resources last)
//! and [`run`] stops at the first plugin that rejects the node, as upstream's framework
//! does: a node is counted under the reasons of its *first* failing plugin only. One
//! plugin may give several reasons (`Insufficient cpu` and `Insufficient memory`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};

use super::info::{NodeInfo, PodInfo};
use crate::failpoints;

/// A filter plugin: `Ok(())` if the pod may run on the node, else the reasons it may not.
pub type Filter = fn(&PodInfo, &NodeInfo) -> Result<(), Vec<String>>;

/// The filter plugins, by upstream name, in the order they run.
pub const FILTERS: &[(&str, Filter)] = &[
    ("NodeReady", node_ready),
    ("NodeUnschedulable", node_unschedulable),
    ("TaintToleration", taint_toleration),
    ("NodeAffinity", node_affinity),
    ("NodePorts", node_ports),
    ("NodeResourcesFit", resources_fit),
];

/// The reason for a node whose `Ready` condition is not `True` (upstream's
/// `CheckNodeCondition` predicate; today's upstream reaches the same end through the
/// `node.kubernetes.io/not-ready` taint).
pub const NOT_READY: &str = "node(s) were not ready";
/// The reason for a cordoned node (`spec.unschedulable: true`).
pub const UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// The reason for a node whose labels do not match the pod's `nodeSelector` or required
/// node affinity.
pub const AFFINITY_MISMATCH: &str = "node(s) didn't match Pod's node affinity/selector";
/// The reason for a node where a host port the pod wants is taken.
pub const PORTS_TAKEN: &str = "node(s) didn't have free ports for the requested pod ports";
/// The reason for a node already running as many pods as it allows.
pub const TOO_MANY_PODS: &str = "Too many pods";
/// The reason for a node without enough CPU left.
pub const INSUFFICIENT_CPU: &str = "Insufficient cpu";
/// The reason for a node without enough memory left.
pub const INSUFFICIENT_MEMORY: &str = "Insufficient memory";

/// Runs every filter in order; the first one that rejects the node gives the reasons.
pub fn run(pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<String>> {
    FILTERS
        .iter()
        .filter(|(name, _)| !skipped(name))
        .try_for_each(|(_, filter)| filter(pod, node))
}

/// Whether a fail point switches a filter off (never, in normal builds).
fn skipped(filter: &str) -> bool {
    match filter {
        "NodeUnschedulable" => failpoints::on!("scheduler::ignore-cordons"),
        "TaintToleration" => failpoints::on!("scheduler::ignore-taints"),
        "NodeAffinity" => failpoints::on!("scheduler::ignore-node-selectors"),
        "NodeResourcesFit" => failpoints::on!("scheduler::ignore-resources"),
        _ => false,
    }
}

fn reject(reason: &str) -> Result<(), Vec<String>> {
    Err(vec![reason.to_owned()])
}

/// The node's `Ready` condition must be `True`.
pub fn node_ready(_pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<String>> {
    let conditions = node
        .node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref());
    let ready = conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready { Ok(()) } else { reject(NOT_READY) }
}

/// A cordoned node takes no new pods, unless the pod tolerates the
/// `node.kubernetes.io/unschedulable:NoSchedule` taint (as DaemonSet pods do).
pub fn node_unschedulable(pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<String>> {
    let cordoned = node.node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    let cordon = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Taint::default()
    };
    if cordoned && !tolerations(pod).iter().any(|t| tolerates(t, &cordon)) {
        reject(UNSCHEDULABLE)
    } else {
        Ok(())
    }
}

/// Every `NoSchedule` or `NoExecute` taint on the node must be tolerated by the pod;
/// `PreferNoSchedule` only weighs on scoring upstream and is ignored here. The reason
/// names the first taint not tolerated.
pub fn taint_toleration(pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<String>> {
    let tolerations = tolerations(pod);
    let taints = node.node.spec.as_ref().and_then(|s| s.taints.as_ref());
    match taints.into_iter().flatten().find(|taint| {
        matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerations.iter().any(|t| tolerates(t, taint))
    }) {
        Some(taint) => Err(vec![format!(
            "node(s) had untolerated taint {{{}: {}}}",
            taint.key,
            taint.value.as_deref().unwrap_or_default()
        )]),
        None => Ok(()),
    }
}

fn tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// Kubernetes' toleration matching (`Toleration.ToleratesTaint`): the effect must match
/// unless the toleration leaves it empty; the key must match unless it is empty (an empty
/// key with `Exists` tolerates every taint); `Exists` ignores the value, `Equal` (the
/// default operator) requires it.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// The node's labels must carry every `nodeSelector` pair, and match one of the terms of
/// the pod's required node affinity if it has one.
pub fn node_affinity(pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<String>> {
    let Some(spec) = pod.pod.spec.as_ref() else {
        return Ok(());
    };
    let empty = BTreeMap::new();
    let labels = node.node.metadata.labels.as_ref().unwrap_or(&empty);
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_ok = required.is_none_or(|r| {
        r.node_selector_terms
            .iter()
            .any(|term| term_matches(term, labels, node.name()))
    });
    if selector_ok && affinity_ok {
        Ok(())
    } else {
        reject(AFFINITY_MISMATCH)
    }
}

/// A node selector term: all its expressions (on labels) and fields (only `metadata.name`
/// exists) must match; a term with neither matches nothing.
fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => match (value.and_then(number), values) {
            (Some(v), [bound]) => {
                number(bound).is_some_and(|b| if op == "Gt" { v > b } else { v < b })
            }
            _ => false,
        },
        _ => false,
    }
}

/// Every host port the pod asks for must be free on the node.
pub fn node_ports(pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<String>> {
    let taken = pod
        .host_ports
        .iter()
        .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
    if taken { reject(PORTS_TAKEN) } else { Ok(()) }
}

/// The pod's requests must fit in what the node offers minus what its pods already
/// request, for the pod count, CPU and memory; every resource that does not fit is a
/// reason. A pod requesting none of a resource fits whatever is left of it (upstream).
pub fn resources_fit(pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<String>> {
    let (want, used, offered) = (&pod.requests, &node.requested, &node.allocatable);
    let mut reasons = Vec::new();
    if used.pods.saturating_add(1) > offered.pods {
        reasons.push(TOO_MANY_PODS.to_owned());
    }
    if want.milli_cpu > 0 && want.milli_cpu > offered.milli_cpu.saturating_sub(used.milli_cpu) {
        reasons.push(INSUFFICIENT_CPU.to_owned());
    }
    if want.memory > 0 && want.memory > offered.memory.saturating_sub(used.memory) {
        reasons.push(INSUFFICIENT_MEMORY.to_owned());
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{Value, json};
    use std::sync::Arc;

    /// A Ready node with 2 CPUs, 4Gi and room for 110 pods, then `patch` merged in.
    pub fn node(name: &str, patch: Value) -> Node {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        });
        merge(&mut n, patch);
        serde_json::from_value(n).expect("node")
    }

    /// A pod with one container requesting `cpu`, then `patch` merged in.
    pub fn pod(name: &str, cpu: &str, patch: Value) -> Pod {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
        });
        merge(&mut p, patch);
        serde_json::from_value(p).expect("pod")
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

    /// The pod as the plugins see it.
    pub fn info(p: Pod) -> PodInfo {
        PodInfo::new(Arc::new(p)).expect("pod info")
    }

    /// The node with `pods` on it.
    pub fn on(n: Node, pods: Vec<Pod>) -> NodeInfo {
        let mut info = NodeInfo::new(Arc::new(n));
        for p in pods {
            info.add_pod(Arc::new(p));
        }
        info
    }

    fn reasons(r: Result<(), Vec<String>>) -> Vec<String> {
        r.err().unwrap_or_default()
    }

    #[test]
    fn a_node_must_be_ready() {
        let p = info(pod("p", "100m", json!({})));
        assert_eq!(node_ready(&p, &on(node("n", json!({})), vec![])), Ok(()));
        let not_ready = node(
            "n",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        assert_eq!(reasons(node_ready(&p, &on(not_ready, vec![]))), [NOT_READY]);
        let unknown = node(
            "n",
            json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        );
        assert_eq!(reasons(node_ready(&p, &on(unknown, vec![]))), [NOT_READY]);
        let silent = node("n", json!({"status": {"conditions": []}}));
        assert_eq!(reasons(node_ready(&p, &on(silent, vec![]))), [NOT_READY]);
    }

    #[test]
    fn a_cordoned_node_takes_only_pods_that_tolerate_the_cordon() {
        let cordoned = on(node("n", json!({"spec": {"unschedulable": true}})), vec![]);
        let p = info(pod("p", "100m", json!({})));
        assert_eq!(reasons(node_unschedulable(&p, &cordoned)), [UNSCHEDULABLE]);
        let tolerant = info(pod(
            "p",
            "100m",
            json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
        ));
        assert_eq!(node_unschedulable(&tolerant, &cordoned), Ok(()));
        assert_eq!(
            node_unschedulable(&p, &on(node("n", json!({})), vec![])),
            Ok(())
        );
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()).filter(|v: &String| !v.is_empty()),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> Toleration {
        let some = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        Toleration {
            key: some(key),
            operator: some(operator),
            value: some(value),
            effect: some(effect),
            toleration_seconds: None,
        }
    }

    #[test]
    fn toleration_matching_follows_kubernetes() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(
            &toleration("dedicated", "Equal", "gpu", "NoSchedule"),
            &t
        ));
        assert!(
            tolerates(&toleration("dedicated", "", "gpu", "NoSchedule"), &t),
            "Equal is the default"
        );
        assert!(
            tolerates(&toleration("dedicated", "Equal", "gpu", ""), &t),
            "empty effect matches all"
        );
        assert!(tolerates(
            &toleration("dedicated", "Exists", "", "NoSchedule"),
            &t
        ));
        assert!(
            tolerates(&toleration("", "Exists", "", ""), &t),
            "empty key + Exists tolerates all"
        );
        assert!(!tolerates(
            &toleration("dedicated", "Equal", "cpu", "NoSchedule"),
            &t
        ));
        assert!(!tolerates(&toleration("other", "Exists", "", ""), &t));
        assert!(!tolerates(
            &toleration("dedicated", "Exists", "", "NoExecute"),
            &t
        ));
        assert!(!tolerates(
            &toleration("dedicated", "Sometimes", "gpu", ""),
            &t
        ));
        // A taint without a value is tolerated by Equal with no value.
        let bare = taint("bare", "", "NoExecute");
        assert!(tolerates(&toleration("bare", "Equal", "", ""), &bare));
    }

    #[test]
    fn untolerated_noschedule_and_noexecute_taints_exclude_the_node() {
        let p = info(pod("p", "100m", json!({})));
        for effect in ["NoSchedule", "NoExecute"] {
            let n = on(
                node(
                    "n",
                    json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": effect}]}}),
                ),
                vec![],
            );
            assert_eq!(
                reasons(taint_toleration(&p, &n)),
                ["node(s) had untolerated taint {dedicated: gpu}"]
            );
        }
        let soft = on(
            node(
                "n",
                json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "PreferNoSchedule"}]}}),
            ),
            vec![],
        );
        assert_eq!(taint_toleration(&p, &soft), Ok(()));
        let valueless = on(
            node(
                "n",
                json!({"spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]}}),
            ),
            vec![],
        );
        assert_eq!(
            reasons(taint_toleration(&p, &valueless)),
            ["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]
        );
        let tolerant = info(pod(
            "p",
            "100m",
            json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]}}),
        ));
        assert_eq!(taint_toleration(&tolerant, &valueless), Ok(()));
    }

    #[test]
    fn the_node_selector_must_match_the_node_labels() {
        let n = on(
            node(
                "n",
                json!({"metadata": {"labels": {"disk": "ssd", "zone": "a"}}}),
            ),
            vec![],
        );
        let wants = |sel: Value| info(pod("p", "100m", json!({"spec": {"nodeSelector": sel}})));
        assert_eq!(node_affinity(&wants(json!({"disk": "ssd"})), &n), Ok(()));
        assert_eq!(
            node_affinity(&wants(json!({"disk": "ssd", "zone": "a"})), &n),
            Ok(())
        );
        assert_eq!(
            reasons(node_affinity(&wants(json!({"disk": "hdd"})), &n)),
            [AFFINITY_MISMATCH]
        );
        assert_eq!(
            reasons(node_affinity(&wants(json!({"gpu": "yes"})), &n)),
            [AFFINITY_MISMATCH]
        );
        assert_eq!(
            node_affinity(&info(pod("p", "100m", json!({}))), &n),
            Ok(())
        );
    }

    #[test]
    fn required_node_affinity_terms_are_ored_and_their_expressions_anded() {
        let n = on(
            node(
                "n",
                json!({"metadata": {"labels": {"disk": "ssd", "cores": "8"}}}),
            ),
            vec![],
        );
        let wants = |terms: Value| {
            info(pod(
                "p",
                "100m",
                json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}}),
            ))
        };
        let expr = |key: &str, op: &str, values: &[&str]| json!({"key": key, "operator": op, "values": values});
        let fits = |terms: Value| node_affinity(&wants(terms), &n).is_ok();
        assert!(fits(
            json!([{"matchExpressions": [expr("disk", "In", &["ssd", "nvme"])]}])
        ));
        assert!(!fits(
            json!([{"matchExpressions": [expr("disk", "NotIn", &["ssd"])]}])
        ));
        assert!(fits(
            json!([{"matchExpressions": [expr("gpu", "NotIn", &["yes"])]}])
        ));
        assert!(fits(
            json!([{"matchExpressions": [expr("disk", "Exists", &[])]}])
        ));
        assert!(fits(
            json!([{"matchExpressions": [expr("gpu", "DoesNotExist", &[])]}])
        ));
        assert!(fits(
            json!([{"matchExpressions": [expr("cores", "Gt", &["4"])]}])
        ));
        assert!(!fits(
            json!([{"matchExpressions": [expr("cores", "Lt", &["4"])]}])
        ));
        assert!(!fits(
            json!([{"matchExpressions": [expr("disk", "In", &["ssd"]), expr("gpu", "Exists", &[])]}])
        ));
        assert!(fits(json!([
            {"matchExpressions": [expr("gpu", "Exists", &[])]},
            {"matchExpressions": [expr("disk", "In", &["ssd"])]},
        ])));
        assert!(fits(
            json!([{"matchFields": [expr("metadata.name", "In", &["n"])]}])
        ));
        assert!(!fits(
            json!([{"matchFields": [expr("metadata.name", "In", &["m"])]}])
        ));
        assert!(!fits(json!([{}])), "an empty term matches nothing");
        assert!(!fits(json!([])), "no terms match nothing");
    }

    #[test]
    fn a_host_port_already_used_on_the_node_excludes_it() {
        let with_port = |name: &str, port: i32| {
            pod(
                name,
                "100m",
                json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": port}]}]}}),
            )
        };
        let n = on(node("n", json!({})), vec![with_port("old", 8080)]);
        assert_eq!(
            reasons(node_ports(&info(with_port("new", 8080)), &n)),
            [PORTS_TAKEN]
        );
        assert_eq!(node_ports(&info(with_port("new", 8081)), &n), Ok(()));
        assert_eq!(node_ports(&info(pod("new", "1", json!({}))), &n), Ok(()));
    }

    #[test]
    fn requests_must_fit_in_what_is_left() {
        // 2 CPUs, 4Gi; 1500m and 1Gi already taken.
        let busy = pod(
            "busy",
            "1500m",
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}}}]}}),
        );
        let n = on(node("n", json!({})), vec![busy]);
        assert_eq!(
            resources_fit(&info(pod("p", "500m", json!({}))), &n),
            Ok(())
        );
        assert_eq!(
            reasons(resources_fit(&info(pod("p", "501m", json!({}))), &n)),
            [INSUFFICIENT_CPU]
        );
        let big = pod(
            "p",
            "1",
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "4Gi"}}}]}}),
        );
        assert_eq!(
            reasons(resources_fit(&info(big), &n)),
            [INSUFFICIENT_CPU, INSUFFICIENT_MEMORY]
        );
        // A pod requesting nothing fits even a node with nothing left.
        let full = on(
            node("n", json!({"status": {"allocatable": {"cpu": "0"}}})),
            vec![],
        );
        assert_eq!(
            resources_fit(&info(pod("p", "0", json!({}))), &full),
            Ok(())
        );
    }

    #[test]
    fn a_node_holds_at_most_its_pod_count() {
        let small = node("n", json!({"status": {"allocatable": {"pods": "2"}}}));
        let two = on(
            small.clone(),
            vec![pod("a", "0", json!({})), pod("b", "0", json!({}))],
        );
        assert_eq!(
            reasons(resources_fit(&info(pod("p", "0", json!({}))), &two)),
            [TOO_MANY_PODS]
        );
        let finished = pod("b", "0", json!({"status": {"phase": "Succeeded"}}));
        let one = on(small, vec![pod("a", "0", json!({})), finished]);
        assert_eq!(resources_fit(&info(pod("p", "0", json!({}))), &one), Ok(()));
    }

    #[test]
    fn capacity_stands_in_for_missing_allocatable() {
        let n = on(
            node(
                "n",
                json!({"status": {"allocatable": null, "capacity": {"cpu": "1", "memory": "1Gi", "pods": "10"}}}),
            ),
            vec![],
        );
        assert_eq!(resources_fit(&info(pod("p", "1", json!({}))), &n), Ok(()));
        assert_eq!(
            reasons(resources_fit(&info(pod("p", "1001m", json!({}))), &n)),
            [INSUFFICIENT_CPU]
        );
    }

    #[test]
    fn the_first_failing_plugin_gives_the_reasons() {
        let n = on(
            node(
                "n",
                json!({"spec": {"unschedulable": true, "taints": [{"key": "k", "effect": "NoSchedule"}]}}),
            ),
            vec![],
        );
        assert_eq!(
            reasons(run(&info(pod("p", "100", json!({}))), &n)),
            [UNSCHEDULABLE]
        );
        let fine = on(node("m", json!({})), vec![]);
        assert_eq!(run(&info(pod("p", "1", json!({}))), &fine), Ok(()));
    }
}
