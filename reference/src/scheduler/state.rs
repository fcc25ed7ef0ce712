//! The scheduler's memory, without I/O: what the watches have shown of nodes and pods, the
//! pods it has bound but not yet seen bound ("assumed"), and the queue of pods to place.
//!
//! The loop in [`super::run`] feeds it watch events ([`State::observe_node`],
//! [`State::observe_pod`]) and timer ticks ([`State::retry_parked`]), asks it for the next
//! [`Decision`], carries the decision out against the apiserver, and tells it how that went
//! ([`State::bound`], [`State::bind_failed`], [`State::reported`]). Nothing here waits or
//! talks to the network, so the unit tests below drive it with made-up events.
//!
//! **Why "assumed".** After a successful bind the watch takes a moment to show the pod with
//! its `spec.nodeName`. Until it does, the pod would count on no node, and the next pod
//! could be given the room it just took. So a bound pod is *assumed* on its node — counted
//! there — until the watch shows it bound (or deleted).
//!
//! **The snapshot.** Every decision reads a [`NodeInfo`] per node: the node with the pods
//! counted on it (bound, or assumed) and what they add up to. It is kept up to date event
//! by event — a heartbeat replaces the node in its `NodeInfo`, a pod bound, assumed, changed
//! or gone recounts the one or two nodes it was and is on — rather than built again from
//! every node and pod. Built again whenever anything changed, as it once was, it cost each
//! decision as much as the cluster is big: with a thousand nodes heartbeating every second
//! something always had changed, and ten thousand pods made scheduling quadratic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::Event;

use super::algorithm;
use super::binding;
use super::info::{NodeInfo, PodInfo, is_terminated};
use super::queue::{PodKey, Queue};

/// What to do about the next pod in the queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Bind the pod to the node.
    Bind {
        /// The pod.
        key: PodKey,
        /// The pod as last seen.
        pod: Arc<Pod>,
        /// The chosen node.
        node: String,
    },
    /// The pod fits nowhere (it has been parked).
    Unschedulable {
        /// The pod.
        key: PodKey,
        /// The pod as last seen.
        pod: Arc<Pod>,
        /// Why, as the `PodScheduled` condition will say.
        message: String,
        /// Whether the message is new and must be written to the pod's status and to an
        /// event (it is not when the pod was already reported with the same message).
        report: bool,
    },
}

impl Decision {
    /// The pod the decision is about.
    pub fn key(&self) -> &PodKey {
        match self {
            Decision::Bind { key, .. } | Decision::Unschedulable { key, .. } => key,
        }
    }
}

/// What the scheduler knows and what it has left to do.
#[derive(Debug, Default)]
pub struct State {
    /// The `spec.schedulerName` this scheduler answers to.
    scheduler_name: String,
    /// Nodes by name.
    nodes: BTreeMap<String, Arc<Node>>,
    /// Every pod, bound or not.
    pods: HashMap<PodKey, Arc<Pod>>,
    /// Pods bound by us that the watch still shows unbound, with their node.
    assumed: HashMap<PodKey, (String, Arc<Pod>)>,
    /// Nodes collected during a relist (between the watcher's `Init` and `InitDone`).
    node_relist: Option<BTreeMap<String, Arc<Node>>>,
    /// Pods collected during a relist.
    pod_relist: Option<HashMap<PodKey, Arc<Pod>>>,
    /// Whether the first node list has arrived.
    nodes_synced: bool,
    /// Whether the first pod list has arrived.
    pods_synced: bool,
    /// Pods waiting to be placed.
    queue: Queue,
    /// The last message written for each unschedulable pod (the watch may not show it yet).
    reported: HashMap<PodKey, String>,
    /// Every node with the pods counted on it (see the module's essay).
    infos: BTreeMap<String, NodeInfo>,
    /// The pods counted on each node (bound or assumed), by node name: what a node's
    /// [`NodeInfo`] is recounted from.
    on_node: HashMap<String, HashSet<PodKey>>,
    /// The node each counted pod is counted on.
    placed: HashMap<PodKey, String>,
}

/// The pod's key.
pub fn key_of(pod: &Pod) -> PodKey {
    PodKey {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
    }
}

/// The node the pod is bound to, if any.
fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl State {
    /// An empty memory for the scheduler called `scheduler_name`.
    pub fn new(scheduler_name: &str) -> State {
        State {
            scheduler_name: scheduler_name.to_owned(),
            ..State::default()
        }
    }

    /// Whether both watches have delivered their first full list. Until then nothing is
    /// scheduled: a node whose pods have not been listed yet looks emptier than it is.
    pub fn synced(&self) -> bool {
        self.nodes_synced && self.pods_synced
    }

    /// How many pods wait: (to try, parked).
    pub fn pending(&self) -> (usize, usize) {
        self.queue.counts()
    }

    /// Whether the pod is this scheduler's to place: unbound, naming this scheduler (an
    /// empty name means the default one), not being deleted, not finished, not held by a
    /// scheduling gate.
    pub fn is_ours_pending(&self, pod: &Pod) -> bool {
        let Some(spec) = pod.spec.as_ref() else {
            return false;
        };
        let name = spec.scheduler_name.as_deref().unwrap_or_default();
        let ours = name == self.scheduler_name
            || (name.is_empty() && self.scheduler_name == super::DEFAULT_SCHEDULER_NAME);
        ours && node_of(pod).is_none()
            && pod.metadata.deletion_timestamp.is_none()
            && !is_terminated(pod)
            && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
    }

    /// Takes in a node watch event. Any change to the nodes may make room, so parked pods
    /// are tried again (except on a deletion, which makes none).
    pub fn observe_node(&mut self, event: Event<Node>) {
        let name = |n: &Node| n.metadata.name.clone().unwrap_or_default();
        match event {
            Event::Init => self.node_relist = Some(BTreeMap::new()),
            Event::InitApply(node) => {
                if let Some(buffer) = self.node_relist.as_mut() {
                    buffer.insert(name(&node), Arc::new(node));
                }
            }
            Event::InitDone => {
                self.nodes = self.node_relist.take().unwrap_or_default();
                self.nodes_synced = true;
                self.count_all();
                self.queue.retry_parked();
            }
            Event::Apply(node) => {
                let name = name(&node);
                let node = Arc::new(node);
                self.nodes.insert(name.clone(), node.clone());
                match self.infos.get_mut(&name) {
                    Some(info) => info.replace_node(node),
                    None => self.recount(&name),
                }
                self.queue.retry_parked();
            }
            Event::Delete(node) => {
                let name = name(&node);
                self.nodes.remove(&name);
                self.infos.remove(&name);
            }
        }
    }

    /// Takes in a pod watch event.
    pub fn observe_pod(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.pod_relist = Some(HashMap::new()),
            Event::InitApply(pod) => {
                if let Some(buffer) = self.pod_relist.as_mut() {
                    buffer.insert(key_of(&pod), Arc::new(pod));
                }
            }
            Event::InitDone => {
                let fresh = self.pod_relist.take().unwrap_or_default();
                let old = std::mem::replace(&mut self.pods, fresh);
                for (key, pod) in &old {
                    if !self.pods.contains_key(key) {
                        self.pod_gone(key, pod);
                    }
                }
                let mut current: Vec<(PodKey, Arc<Pod>)> = self
                    .pods
                    .iter()
                    .map(|(k, p)| (k.clone(), p.clone()))
                    .collect();
                // Oldest first, so a relist queues pods roughly in the order they came.
                current.sort_by(|(ka, a), (kb, b)| {
                    a.metadata
                        .creation_timestamp
                        .cmp(&b.metadata.creation_timestamp)
                        .then_with(|| ka.cmp(kb))
                });
                for (key, pod) in current {
                    self.pod_changed(&key, &pod, old.get(&key).map(|p| &**p));
                }
                self.pods_synced = true;
                self.count_all();
            }
            Event::Apply(pod) => {
                let key = key_of(&pod);
                let pod = Arc::new(pod);
                let old = self.pods.insert(key.clone(), pod.clone());
                self.pod_changed(&key, &pod, old.as_deref());
                self.place(&key);
            }
            Event::Delete(pod) => {
                let key = key_of(&pod);
                let pod = self.pods.remove(&key).unwrap_or_else(|| Arc::new(pod));
                self.pod_gone(&key, &pod);
                self.place(&key);
            }
        }
    }

    fn pod_changed(&mut self, key: &PodKey, pod: &Pod, old: Option<&Pod>) {
        if node_of(pod).is_some() {
            // Bound: no longer ours to place; the watch has caught up with any assumption.
            self.assumed.remove(key);
            self.forget(key);
            if is_terminated(pod) && !old.is_some_and(is_terminated) {
                // It finished and freed its share of the node.
                self.queue.retry_parked();
            }
        } else if self.assumed.contains_key(key) {
            // An event from before our binding: the pod stays assumed.
        } else if !self.is_ours_pending(pod) {
            self.forget(key);
        } else if !self.queue.is_parked(key) || old.is_some_and(|o| o.spec != pod.spec) {
            // New, or parked but its spec changed (a smaller request, another selector).
            self.queue.add(key.clone());
        }
    }

    fn pod_gone(&mut self, key: &PodKey, pod: &Pod) {
        let was_assumed = self.assumed.remove(key).is_some();
        self.forget(key);
        if was_assumed || (node_of(pod).is_some() && !is_terminated(pod)) {
            // It held room on a node that is free now.
            self.queue.retry_parked();
        }
    }

    fn forget(&mut self, key: &PodKey) {
        self.queue.forget(key);
        self.reported.remove(key);
    }

    /// Tries every parked pod again (the retry interval passed).
    pub fn retry_parked(&mut self) {
        self.queue.retry_parked();
    }

    /// Where a pod counts, and as which version: assumed on the node we bound it to, else
    /// bound as the watch shows it, else nowhere.
    fn placement(&self, key: &PodKey) -> Option<(&str, &Arc<Pod>)> {
        if let Some((node, pod)) = self.assumed.get(key) {
            return Some((node.as_str(), pod));
        }
        let pod = self.pods.get(key)?;
        Some((node_of(pod)?, pod))
    }

    /// Counts the pod where it is now, and recounts the node it was counted on before.
    fn place(&mut self, key: &PodKey) {
        let now = self.placement(key).map(|(node, _)| node.to_owned());
        let before = match &now {
            Some(node) => self.placed.insert(key.clone(), node.clone()),
            None => self.placed.remove(key),
        };
        if let Some(node) = &before {
            if let Some(keys) = self.on_node.get_mut(node) {
                keys.remove(key);
            }
            if now.as_ref() != Some(node) {
                self.recount(node);
            }
        }
        if let Some(node) = now {
            self.on_node
                .entry(node.clone())
                .or_default()
                .insert(key.clone());
            self.recount(&node);
        }
    }

    /// Builds one node's [`NodeInfo`] again from the pods counted on it.
    fn recount(&mut self, name: &str) {
        let Some(node) = self.nodes.get(name) else {
            self.infos.remove(name);
            return;
        };
        let mut info = NodeInfo::new(node.clone());
        for key in self.on_node.get(name).into_iter().flatten() {
            if let Some((_, pod)) = self.placement(key) {
                info.add_pod(pod.clone());
            }
        }
        self.infos.insert(name.to_owned(), info);
    }

    /// Counts every pod and every node again (after a relist).
    fn count_all(&mut self) {
        let keys: HashSet<PodKey> = self
            .pods
            .keys()
            .chain(self.assumed.keys())
            .cloned()
            .collect();
        self.placed.clear();
        self.on_node.clear();
        for key in keys {
            if let Some((node, _)) = self.placement(&key) {
                let node = node.to_owned();
                self.on_node
                    .entry(node.clone())
                    .or_default()
                    .insert(key.clone());
                self.placed.insert(key, node);
            }
        }
        self.infos = self.snapshot();
    }

    /// Every node with the pods bound or assumed on it, counted from scratch: what the
    /// snapshot kept up to date must always equal.
    fn snapshot(&self) -> BTreeMap<String, NodeInfo> {
        let mut infos: BTreeMap<String, NodeInfo> = self
            .nodes
            .iter()
            .map(|(name, node)| (name.clone(), NodeInfo::new(node.clone())))
            .collect();
        let bound = self
            .pods
            .values()
            .filter_map(|p| node_of(p).map(|n| (n, p)));
        let assumed = self.assumed.values().map(|(n, p)| (n.as_str(), p));
        for (node, pod) in bound.chain(assumed) {
            if let Some(info) = infos.get_mut(node) {
                info.add_pod(pod.clone());
            }
        }
        infos
    }

    /// Decides about the next pod in the queue: where to bind it, or why it fits nowhere
    /// (and then it is parked). `None` when the queue is empty (the round is over) or the
    /// watches have not synced yet.
    pub fn decide(&mut self) -> Option<Decision> {
        if !self.synced() {
            return None;
        }
        while let Some(key) = self.queue.pop() {
            let Some(pod) = self.pods.get(&key).cloned() else {
                continue;
            };
            if !self.is_ours_pending(&pod) || self.assumed.contains_key(&key) {
                continue;
            }
            let outcome = PodInfo::new(pod.clone())
                .map_err(|e| e.to_string())
                .and_then(|info| {
                    algorithm::schedule(&info, self.infos.values())
                        .map(|node| node.name().to_owned())
                        .map_err(|e| e.to_string())
                });
            return Some(match outcome {
                Ok(node) => Decision::Bind { key, pod, node },
                Err(message) => {
                    self.queue.park(key.clone());
                    let report = self.reported.get(&key) != Some(&message)
                        && !binding::already_reported(&pod, &message);
                    Decision::Unschedulable {
                        key,
                        pod,
                        message,
                        report,
                    }
                }
            });
        }
        None
    }

    /// The pod was bound to the node: count it there until the watch shows it.
    pub fn bound(&mut self, key: PodKey, pod: Arc<Pod>, node: String) {
        self.reported.remove(&key);
        self.assumed.insert(key.clone(), (node, pod));
        self.place(&key);
    }

    /// Binding failed for a reason worth retrying: park the pod until the next retry.
    pub fn bind_failed(&mut self, key: PodKey) {
        self.queue.park(key);
    }

    /// The unschedulable message was written to the pod.
    pub fn reported(&mut self, key: PodKey, message: String) {
        self.reported.insert(key, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::filter::tests::{node, pod};
    use serde_json::json;

    fn synced(nodes: Vec<Node>) -> State {
        let mut s = State::new("default-scheduler");
        s.observe_node(Event::Init);
        for n in nodes {
            s.observe_node(Event::InitApply(n));
        }
        s.observe_node(Event::InitDone);
        s.observe_pod(Event::Init);
        s.observe_pod(Event::InitDone);
        s
    }

    fn bind_all(s: &mut State) -> Vec<(String, String)> {
        let mut placed = Vec::new();
        while let Some(d) = s.decide() {
            if let Decision::Bind { key, pod, node } = d {
                placed.push((key.name.clone(), node.clone()));
                s.bound(key, pod, node);
            }
        }
        placed
    }

    fn bound_to(mut p: Pod, node: &str) -> Pod {
        p.spec.get_or_insert_default().node_name = Some(node.into());
        p
    }

    /// What a snapshot says, node by node: the pods counted there and what they add up to.
    fn summary(infos: &BTreeMap<String, NodeInfo>) -> Vec<(String, Vec<String>, i64, i64)> {
        infos
            .iter()
            .map(|(name, info)| {
                let mut pods: Vec<String> = info
                    .pods
                    .iter()
                    .map(|p| p.metadata.name.clone().unwrap_or_default())
                    .collect();
                pods.sort();
                let cpu = info.allocatable.milli_cpu - info.requested.milli_cpu;
                (name.clone(), pods, cpu, info.requested.pods)
            })
            .collect()
    }

    #[test]
    fn the_snapshot_kept_up_to_date_equals_one_counted_from_scratch() {
        let mut s = synced(vec![node("a", json!({})), node("b", json!({}))]);
        let same = |s: &State, step: &str| {
            assert_eq!(summary(&s.infos), summary(&s.snapshot()), "after {step}");
        };
        for i in 0..6 {
            s.observe_pod(Event::Apply(pod(&format!("p{i}"), "100m", json!({}))));
        }
        let placed = bind_all(&mut s);
        assert_eq!(placed.len(), 6);
        same(&s, "assuming six pods");
        // The watch shows some bindings, not others.
        for (name, node) in &placed[..3] {
            s.observe_pod(Event::Apply(bound_to(pod(name, "100m", json!({})), node)));
        }
        same(&s, "the watch catching up");
        // A heartbeat, a pod finishing, a pod deleted, a node added and one removed.
        s.observe_node(Event::Apply(node(
            "a",
            json!({"status": {"allocatable": {"cpu": "3"}}}),
        )));
        same(&s, "a node growing");
        let (name, node_name) = &placed[0];
        s.observe_pod(Event::Apply(bound_to(
            pod(name, "100m", json!({"status": {"phase": "Succeeded"}})),
            node_name,
        )));
        same(&s, "a pod finishing");
        s.observe_pod(Event::Delete(pod(&placed[1].0, "100m", json!({}))));
        same(&s, "a pod deleted");
        s.observe_node(Event::Apply(node("c", json!({}))));
        s.observe_pod(Event::Apply(bound_to(pod("on-c", "1", json!({})), "c")));
        same(&s, "a node added with a pod");
        s.observe_node(Event::Delete(node("b", json!({}))));
        same(&s, "a node removed");
        s.observe_node(Event::Apply(node("b", json!({}))));
        same(&s, "the node back");
        s.observe_pod(Event::Init);
        s.observe_pod(Event::InitApply(bound_to(pod("on-c", "1", json!({})), "c")));
        s.observe_pod(Event::InitDone);
        same(&s, "a relist");
        assert_eq!(s.infos["c"].pods.len(), 1);
    }

    #[test]
    fn nothing_is_scheduled_before_both_lists_arrive() {
        let mut s = State::new("default-scheduler");
        s.observe_node(Event::Init);
        s.observe_node(Event::InitApply(node("a", json!({}))));
        s.observe_node(Event::InitDone);
        s.observe_pod(Event::Apply(pod("p", "100m", json!({}))));
        assert_eq!(s.decide(), None);
        s.observe_pod(Event::Init);
        s.observe_pod(Event::InitApply(pod("p", "100m", json!({}))));
        s.observe_pod(Event::InitDone);
        assert!(matches!(s.decide(), Some(Decision::Bind { node, .. }) if node == "a"));
    }

    #[test]
    fn two_pods_in_quick_succession_do_not_both_take_the_last_room() {
        // Node a has 2 CPUs; each pod wants 1500m. The first is bound; the watch has not
        // shown it yet when the second is decided.
        let mut s = synced(vec![node("a", json!({}))]);
        s.observe_pod(Event::Apply(pod("first", "1500m", json!({}))));
        assert_eq!(bind_all(&mut s), [("first".to_owned(), "a".to_owned())]);
        s.observe_pod(Event::Apply(pod("second", "1500m", json!({}))));
        match s.decide() {
            Some(Decision::Unschedulable {
                message, report, ..
            }) => {
                assert_eq!(message, "0/1 nodes are available: 1 Insufficient cpu.");
                assert!(report);
            }
            other => panic!("expected unschedulable, got {other:?}"),
        }
        // A stale event for the first pod (from before the binding) changes nothing.
        s.observe_pod(Event::Apply(pod("first", "1500m", json!({}))));
        assert_eq!(s.decide(), None);
        // The watch shows the binding: the assumption is replaced by the real thing.
        s.observe_pod(Event::Apply(bound_to(
            pod("first", "1500m", json!({})),
            "a",
        )));
        assert!(s.assumed.is_empty());
        s.retry_parked();
        assert!(matches!(
            s.decide(),
            Some(Decision::Unschedulable { report: true, .. })
        ));
    }

    #[test]
    fn one_round_spreads_replicas_using_its_own_bindings() {
        let mut s = synced(vec![
            node("a", json!({})),
            node("b", json!({})),
            node("c", json!({})),
        ]);
        for i in 0..6 {
            s.observe_pod(Event::Apply(pod(
                &format!("web-{i}"),
                "100m",
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs", "controller": true}]}}),
            )));
        }
        let nodes: Vec<String> = bind_all(&mut s).into_iter().map(|(_, n)| n).collect();
        assert_eq!(nodes, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn parked_pods_come_back_when_a_node_arrives_or_a_pod_leaves() {
        let mut s = synced(vec![node("a", json!({}))]);
        s.observe_pod(Event::Apply(bound_to(pod("hog", "2", json!({})), "a")));
        s.observe_pod(Event::Apply(pod("p", "1", json!({}))));
        assert!(matches!(s.decide(), Some(Decision::Unschedulable { .. })));
        assert_eq!(s.decide(), None);
        assert_eq!(s.pending(), (0, 1));
        // Our own status update of the parked pod does not wake it.
        s.observe_pod(Event::Apply(pod(
            "p",
            "1",
            json!({"status": {"phase": "Pending"}}),
        )));
        assert_eq!(s.decide(), None);
        // The hog finishes: room again.
        s.observe_pod(Event::Apply(bound_to(
            pod("hog", "2", json!({"status": {"phase": "Succeeded"}})),
            "a",
        )));
        assert!(matches!(s.decide(), Some(Decision::Bind { node, .. }) if node == "a"));

        let mut s = synced(vec![node("a", json!({}))]);
        s.observe_pod(Event::Apply(pod("big", "3", json!({}))));
        assert!(matches!(s.decide(), Some(Decision::Unschedulable { .. })));
        s.observe_node(Event::Apply(node(
            "b",
            json!({"status": {"allocatable": {"cpu": "4"}}}),
        )));
        assert!(matches!(s.decide(), Some(Decision::Bind { node, .. }) if node == "b"));

        let mut s = synced(vec![node("a", json!({}))]);
        s.observe_pod(Event::Apply(bound_to(pod("hog", "2", json!({})), "a")));
        s.observe_pod(Event::Apply(pod("p", "1", json!({}))));
        assert!(matches!(s.decide(), Some(Decision::Unschedulable { .. })));
        s.observe_pod(Event::Delete(bound_to(pod("hog", "2", json!({})), "a")));
        assert!(matches!(s.decide(), Some(Decision::Bind { .. })));
    }

    #[test]
    fn a_repeated_failure_is_reported_once() {
        let mut s = synced(vec![node("a", json!({}))]);
        s.observe_pod(Event::Apply(pod("big", "3", json!({}))));
        let Some(Decision::Unschedulable {
            key,
            message,
            report: true,
            ..
        }) = s.decide()
        else {
            panic!("expected a report");
        };
        s.reported(key, message);
        s.retry_parked();
        assert!(matches!(
            s.decide(),
            Some(Decision::Unschedulable { report: false, .. })
        ));
        // The message changes with the cluster: reported again.
        s.observe_node(Event::Apply(node(
            "b",
            json!({"spec": {"unschedulable": true}}),
        )));
        let Some(Decision::Unschedulable {
            message,
            report: true,
            ..
        }) = s.decide()
        else {
            panic!("expected a new report");
        };
        assert_eq!(
            message,
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) were unschedulable."
        );
    }

    #[test]
    fn only_our_unbound_live_pods_are_scheduled() {
        let mut s = synced(vec![node("a", json!({}))]);
        s.observe_pod(Event::Apply(pod(
            "other",
            "1m",
            json!({"spec": {"schedulerName": "someone-else"}}),
        )));
        s.observe_pod(Event::Apply(pod(
            "gated",
            "1m",
            json!({"spec": {"schedulingGates": [{"name": "wait"}]}}),
        )));
        s.observe_pod(Event::Apply(pod(
            "dying",
            "1m",
            json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
        )));
        s.observe_pod(Event::Apply(bound_to(pod("placed", "1m", json!({})), "a")));
        s.observe_pod(Event::Apply(pod(
            "done",
            "1m",
            json!({"status": {"phase": "Failed"}}),
        )));
        s.observe_pod(Event::Apply(pod(
            "explicit",
            "1m",
            json!({"spec": {"schedulerName": "default-scheduler"}}),
        )));
        s.observe_pod(Event::Apply(pod("implicit", "1m", json!({}))));
        let placed: Vec<String> = bind_all(&mut s).into_iter().map(|(p, _)| p).collect();
        assert_eq!(placed, ["explicit", "implicit"]);
    }

    #[test]
    fn a_malformed_request_makes_the_pod_unschedulable_with_a_clear_message() {
        let mut s = synced(vec![node("a", json!({}))]);
        s.observe_pod(Event::Apply(pod("bad", "a lot", json!({}))));
        let Some(Decision::Unschedulable { message, .. }) = s.decide() else {
            panic!("expected unschedulable");
        };
        assert_eq!(
            message,
            "failed to read spec.containers[0].resources.requests.cpu: \
             invalid quantity \"a lot\": it does not start with a number"
        );
    }

    #[test]
    fn a_relist_drops_vanished_pods_and_their_assumptions() {
        let mut s = synced(vec![node("a", json!({}))]);
        s.observe_pod(Event::Apply(pod("first", "1500m", json!({}))));
        assert_eq!(bind_all(&mut s).len(), 1);
        s.observe_pod(Event::Apply(pod("second", "1500m", json!({}))));
        assert!(matches!(s.decide(), Some(Decision::Unschedulable { .. })));
        // The watch restarts; "first" was deleted in the gap.
        s.observe_pod(Event::Init);
        s.observe_pod(Event::InitApply(pod("second", "1500m", json!({}))));
        s.observe_pod(Event::InitDone);
        assert!(s.assumed.is_empty());
        assert!(matches!(s.decide(), Some(Decision::Bind { key, .. }) if key.name == "second"));
    }
}
