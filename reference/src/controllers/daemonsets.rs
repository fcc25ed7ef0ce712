//! # DaemonSets: one pod on every node that may run it
//!
//! Some work belongs to machines, not to a count of replicas: a log shipper, a metrics
//! agent, a network plugin must run once on every node. A DaemonSet says what; this
//! controller keeps exactly one of its pods on every node that *may* run it — whose labels
//! its `nodeSelector` and required node affinity accept, and whose `NoSchedule` and
//! `NoExecute` taints it tolerates (the scheduler's own filters, [`crate::scheduler::filter`],
//! decide) — and none on any other. A node that joins gets one; a node that goes, or stops
//! qualifying, loses it.
//!
//! As in Kubernetes, the controller does not pick the node by writing `spec.nodeName`: each
//! pod it creates carries a required node affinity to its node's name (`matchFields
//! metadata.name`), and the scheduler binds it. Its pods also tolerate what a node's
//! troubles put on it (`not-ready` and `unreachable` for `NoExecute`, `unschedulable` and
//! the pressure taints for `NoSchedule`): a daemon stays on its node through them.
//!
//! **Updates.** Every pod carries its template's hash as `controller-revision-hash`. With
//! the `RollingUpdate` strategy, pods of an older template are deleted while no more than
//! `maxUnavailable` of the DaemonSet's pods are unavailable (not ready), and each node that
//! lost its pod gets one of the new template; `OnDelete` replaces a pod only when someone
//! deletes it. A pod that failed is deleted, and its node gets a new one.
//!
//! **Status** is what `kubectl get ds` and `kubectl rollout status ds/...` read: how many
//! nodes should run it, do, run it ready, run the current template, and how many run it
//! though they should not.
//!
//! Not built: `maxSurge` (a new pod beside the old one on a node), `minReadySeconds`,
//! ControllerRevision objects (so `kubectl rollout history ds` shows nothing and `rollout
//! undo ds` cannot work).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus, DaemonSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::{
    ControllerError, Recorder, Selector, delete_if_present, identity, owned_pods,
    pod_from_template, pod_phase, pod_ready, terminating, write_status,
};
use crate::scheduler::filter;
use crate::scheduler::info::{NodeInfo, PodInfo};

/// The label carrying the hash of the template a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// What a daemon's pods tolerate so that they stay on their node through its troubles.
const TOLERATED: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];

/// What one pass does.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Plan {
    /// Nodes to create a pod for.
    pub create: Vec<String>,
    /// Pods to delete, by name.
    pub delete: Vec<String>,
    /// The status to report.
    pub status: DaemonSetStatus,
}

/// The hash of a DaemonSet's template: pods made from the same template share it.
pub(super) fn template_hash(ds: &DaemonSet) -> String {
    let template = ds.spec.as_ref().map(|s| &s.template);
    let text = serde_json::to_string(&template).unwrap_or_default();
    let hash = text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{hash:08x}")
}

/// The pod the DaemonSet runs on `node`, before the scheduler binds it there.
pub(super) fn pod_for(ds: &DaemonSet, node: &str) -> Pod {
    let template = ds.spec.as_ref().map(|s| s.template.clone());
    let mut template = template.unwrap_or_default();
    let meta = template.metadata.get_or_insert_default();
    let labels = meta.labels.get_or_insert_default();
    labels.insert(REVISION_LABEL.to_owned(), template_hash(ds));
    let spec = template.spec.get_or_insert_default();
    let on_node = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_owned()]),
        }]),
        match_expressions: None,
    };
    let affinity = spec.affinity.get_or_insert_default();
    let node_affinity = affinity.node_affinity.get_or_insert_default();
    // The node's name replaces whatever terms the template had: eligibility was already
    // judged against them.
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![on_node],
    });
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in TOLERATED {
        if !tolerations.iter().any(|t| t.key.as_deref() == Some(key)) {
            tolerations.push(Toleration {
                key: Some((*key).to_owned()),
                operator: Some("Exists".into()),
                effect: Some((*effect).to_owned()),
                ..Toleration::default()
            });
        }
    }
    pod_from_template(ds, template)
}

/// The daemon's pod as the scheduler's filters judge it: with the daemon tolerations and
/// the template's own affinity, before it is tied to a node. The same for every node, so
/// built once per pass. `None` when its requests do not parse: then no node may run it.
fn judged_pod(ds: &DaemonSet) -> Option<PodInfo> {
    let mut pod = pod_for(ds, "");
    if let Some(spec) = pod.spec.as_mut() {
        let template_spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        spec.affinity = template_spec.and_then(|s| s.affinity.clone());
    }
    PodInfo::new(Arc::new(pod)).ok()
}

/// Whether the daemon's `judged` pod may run on `node`: the scheduler's node-affinity and
/// taint filters decide.
fn eligible(judged: Option<&PodInfo>, node: &Node) -> bool {
    let Some(info) = judged else {
        return false;
    };
    let node = NodeInfo::new(Arc::new(node.clone()));
    let selected = filter::node_affinity(info, &node).is_ok()
        || crate::failpoints::on!("daemonsets::ignore-node-selectors");
    selected && filter::taint_toleration(info, &node).is_ok()
}

/// The node a daemon pod is for: where it is bound, else its affinity's node name.
fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.clone() {
        return Some(node);
    }
    let affinity = spec.affinity.as_ref()?.node_affinity.as_ref()?;
    let required = affinity
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    required
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// How many pods may be unavailable during an update: `maxUnavailable` of the nodes that
/// should run the daemon (a percentage rounds up), at least one.
fn max_unavailable(strategy: Option<&DaemonSetUpdateStrategy>, desired: usize) -> usize {
    let amount = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone());
    let n = match amount {
        Some(IntOrString::Int(n)) => usize::try_from(n).unwrap_or(0),
        Some(IntOrString::String(p)) => {
            let percent: usize = p.trim_end_matches('%').parse().unwrap_or(0);
            (desired * percent).div_ceil(100)
        }
        None => 1,
    };
    n.max(1)
}

/// The pure rule: given a DaemonSet, the nodes and the pods it controls, what to do now.
pub(super) fn reconcile(ds: &DaemonSet, nodes: &[Node], pods: &[&Pod]) -> Plan {
    let hash = template_hash(ds);
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    let on_delete = strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete");
    let mut plan = Plan::default();
    let name_of = |p: &&Pod| p.metadata.name.clone();
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in pods.iter().copied().filter(|p| !terminating(&p.metadata)) {
        if pod_phase(pod) == "Failed" {
            plan.delete.extend(pod.metadata.name.clone());
            continue;
        }
        by_node
            .entry(node_of(pod).unwrap_or_default())
            .or_default()
            .push(pod);
    }
    let current = |p: &Pod| p.labels().get(REVISION_LABEL) == Some(&hash);
    let (mut desired, mut scheduled, mut misscheduled) = (0, 0, 0);
    let (mut ready_count, mut updated, mut unavailable) = (0, 0, 0);
    let mut old: Vec<&Pod> = Vec::new();
    let judged = judged_pod(ds);
    for node in nodes {
        let name = node.name_any();
        let mut here = by_node.remove(&name).unwrap_or_default();
        if !eligible(judged.as_ref(), node) {
            if !here.is_empty() {
                misscheduled += 1;
            }
            plan.delete.extend(here.iter().filter_map(name_of));
            continue;
        }
        desired += 1;
        if here.is_empty() {
            plan.create.push(name);
            unavailable += 1;
            continue;
        }
        scheduled += 1;
        // One per node: the current template's first, then the oldest.
        here.sort_by_key(|p| (!current(p), p.metadata.creation_timestamp.clone()));
        plan.delete.extend(here.iter().skip(1).filter_map(name_of));
        let kept = here[0];
        if pod_ready(kept) {
            ready_count += 1;
        } else {
            unavailable += 1;
        }
        if current(kept) {
            updated += 1;
        } else {
            old.push(kept);
        }
    }
    // Pods for nodes that are gone.
    let gone = by_node.values().flatten();
    plan.delete.extend(gone.filter_map(name_of));
    if !on_delete && !crate::failpoints::on!("daemonsets::never-update") {
        // Old pods that are not ready go first: replacing them costs no availability.
        old.sort_by_key(|p| pod_ready(p));
        let budget = max_unavailable(strategy, desired).saturating_sub(unavailable);
        let not_ready = old.iter().filter(|p| !pod_ready(p)).count();
        let replaced = old.iter().take(not_ready.saturating_add(budget));
        plan.delete.extend(replaced.filter_map(name_of));
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    plan.status = DaemonSetStatus {
        desired_number_scheduled: count(desired),
        current_number_scheduled: count(scheduled),
        number_misscheduled: count(misscheduled),
        number_ready: count(ready_count),
        number_available: Some(count(ready_count)),
        number_unavailable: Some(count(desired - ready_count)).filter(|n| *n > 0),
        updated_number_scheduled: Some(count(updated)),
        observed_generation: ds.metadata.generation,
        ..DaemonSetStatus::default()
    };
    plan
}

/// Runs the DaemonSet controller until shutdown: reconciles a DaemonSet whenever it, one of
/// its pods, or any node changes.
pub(super) async fn run(client: Client, shutdown: watch::Receiver<bool>) {
    let controller = super::owning::<DaemonSet, Pod>(&client, Some(REVISION_LABEL));
    let daemonsets = controller.store();
    let controller = controller.watches(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        move |_node| {
            daemonsets
                .state()
                .iter()
                .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    let recorder = Recorder::shared(client, "daemonset-controller");
    super::drive("daemonset", controller, recorder, pass, shutdown).await;
}

/// One pass over one DaemonSet: list the nodes and its pods, plan, act, report.
async fn pass(ds: Arc<DaemonSet>, ctx: Arc<Recorder>) -> Result<Action, ControllerError> {
    let Some((namespace, uid, name)) = identity(ds.as_ref())? else {
        return Ok(Action::await_change());
    };
    let selector = Selector::new(ds.spec.as_ref().map(|s| &s.selector));
    let unknown = || ControllerError::malformed(&*ds, "its selector uses an unknown operator");
    let selector = selector.ok_or_else(unknown)?;
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let nodes = nodes.list(&ListParams::default()).await;
    let nodes = nodes.map_err(ControllerError::api("list the nodes"))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let owned = owned_pods(&pods, ds.as_ref(), &uid, REVISION_LABEL, Some(&selector));
    let owned = owned.await?;
    let plan = reconcile(&ds, &nodes.items, &owned.iter().collect::<Vec<_>>());

    for node in &plan.create {
        let action = format!("create the pod of DaemonSet {namespace}/{name} for node {node}");
        let pod = pod_for(&ds, node);
        let created = pods.create(&PostParams::default(), &pod).await;
        let created = created.map_err(ControllerError::api(action))?;
        let message = format!("Created pod: {}", created.name_any());
        ctx.normal(ds.as_ref(), "SuccessfulCreate", message).await;
    }
    for pod in &plan.delete {
        let what = || format!("delete pod {pod} of DaemonSet {namespace}/{name}");
        if delete_if_present(&pods, pod, &DeleteParams::default(), what).await? {
            let message = format!("Deleted pod: {pod}");
            ctx.normal(ds.as_ref(), "SuccessfulDelete", message).await;
        }
    }
    let sets = Api::<DaemonSet>::namespaced(ctx.client.clone(), &namespace);
    let action = || format!("write the status of DaemonSet {namespace}/{name}");
    write_status(sets, &name, ds.status.as_ref(), &plan.status, action).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use serde_json::json;

    fn daemon_set(extra: Value) -> DaemonSet {
        let mut ds = json!({
            "metadata": {"name": "agent", "namespace": "default", "uid": "d-1", "generation": 1},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "probe", "image": "shipshape/probe:v1"}]}
                }
            }
        });
        json_patch::merge(&mut ds, &extra);
        serde_json::from_value(ds).expect("a DaemonSet")
    }

    fn node(name: &str, extra: Value) -> Node {
        let mut node = json!({"metadata": {"name": name, "labels": {}}});
        json_patch::merge(&mut node, &extra);
        serde_json::from_value(node).expect("a Node")
    }

    fn running(ds: &DaemonSet, name: &str, node: &str, is_ready: bool) -> Pod {
        let mut pod = pod_for(ds, node);
        pod.metadata.name = Some(name.into());
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(node.into());
        }
        let mut status = json!({"phase": "Running"});
        if is_ready {
            status["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        }
        pod.status = serde_json::from_value(status).ok();
        pod
    }

    #[test]
    fn every_node_that_may_run_it_gets_one_pod_and_no_other_does() {
        let ds =
            daemon_set(json!({"spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}}}));
        let nodes = [
            node("a", json!({"metadata": {"labels": {"disk": "ssd"}}})),
            node("b", json!({})),
            node(
                "c",
                json!({"metadata": {"labels": {"disk": "ssd"}},
                             "spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}}),
            ),
            node(
                "d",
                json!({"metadata": {"labels": {"disk": "ssd"}},
                             "spec": {"unschedulable": true}}),
            ),
        ];
        let stray = running(&ds, "agent-b", "b", true);
        let plan = reconcile(&ds, &nodes, &[&stray]);
        assert_eq!(
            plan.create,
            vec!["a".to_owned(), "d".to_owned()],
            "a cordoned node too"
        );
        assert_eq!(plan.delete, vec!["agent-b".to_owned()]);
        assert_eq!(plan.status.desired_number_scheduled, 2);
        assert_eq!(plan.status.number_misscheduled, 1);

        let pod = pod_for(&ds, "a");
        let terms = pod
            .spec
            .and_then(|s| s.affinity)
            .and_then(|a| a.node_affinity)
            .and_then(|a| a.required_during_scheduling_ignored_during_execution)
            .map(|r| r.node_selector_terms)
            .unwrap_or_default();
        assert_eq!(
            serde_json::to_value(&terms).ok(),
            Some(
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}])
            )
        );
    }

    #[test]
    fn one_pod_per_node_and_failed_or_orphaned_pods_go() {
        let ds = daemon_set(json!({}));
        let nodes = [node("a", json!({}))];
        let (first, second) = (
            running(&ds, "agent-1", "a", true),
            running(&ds, "agent-2", "a", true),
        );
        let mut failed = running(&ds, "agent-3", "a", false);
        failed.status = serde_json::from_value(json!({"phase": "Failed"})).ok();
        let gone = running(&ds, "agent-4", "z", true);
        let plan = reconcile(&ds, &nodes, &[&first, &second, &failed, &gone]);
        assert!(plan.create.is_empty());
        let mut deleted = plan.delete.clone();
        deleted.sort();
        assert_eq!(deleted, vec!["agent-2", "agent-3", "agent-4"]);
        assert_eq!(plan.status.number_ready, 1);
        assert_eq!(plan.status.updated_number_scheduled, Some(1));
    }

    #[test]
    fn a_new_template_rolls_out_no_more_than_max_unavailable_at_a_time() {
        let old = daemon_set(json!({}));
        let nodes = [
            node("a", json!({})),
            node("b", json!({})),
            node("c", json!({})),
        ];
        let pods: Vec<Pod> = ["a", "b", "c"]
            .iter()
            .map(|n| running(&old, &format!("agent-{n}"), n, true))
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let new = daemon_set(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "probe", "image": "shipshape/probe:v2"}]}}}}));
        assert_ne!(template_hash(&old), template_hash(&new));
        let plan = reconcile(&new, &nodes, &refs);
        assert_eq!(plan.delete.len(), 1, "maxUnavailable defaults to one");
        assert_eq!(plan.status.updated_number_scheduled, Some(0));

        // While one node has no pod, no other old pod goes.
        let plan = reconcile(&new, &nodes, &refs[1..]);
        assert_eq!(plan.create, vec!["a".to_owned()]);
        assert!(plan.delete.is_empty());

        let on_delete = daemon_set(json!({"spec": {
            "updateStrategy": {"type": "OnDelete"},
            "template": {"spec": {"containers": [{"name": "probe", "image": "shipshape/probe:v2"}]}}
        }}));
        assert!(reconcile(&on_delete, &nodes, &refs).delete.is_empty());
    }
}
