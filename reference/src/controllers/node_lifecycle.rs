//! The node lifecycle controller: what happens when a machine stops answering.
//!
//! The seed: pod phase Unknown means "the master cannot talk to the node the pod runs on",
//! and "3 pods crash because their machine failed — they are scheduled on other machines".
//!
//! Every node agent renews its heartbeat: its Lease (`kube-node-lease/<node>`, `renewTime`)
//! every period, and the `lastHeartbeatTime` of its `Ready` condition whenever it posts its
//! status ([`crate::agent::heartbeat`]). Either changing counts. Every monitor period this
//! controller looks at each node:
//!
//! 1. heartbeat unchanged for the grace period → `Ready=Unknown` (reason `NodeStatusUnknown`)
//!    and the taints `node.kubernetes.io/unreachable` (NoSchedule and NoExecute), so the
//!    scheduler places nothing new there;
//! 2. the pods on such a node are reported `Unknown` (reason `NodeLost`), not Ready;
//! 3. once a pod's toleration of the unreachable taint runs out (its own `tolerationSeconds`,
//!    else the default), the pod is deleted — its ReplicaSet replaces it on a healthy node.
//!    A deleted pod on a lost node stays *terminating* until the node's agent comes back
//!    and finishes it, exactly as in Kubernetes; it no longer counts as a replica;
//! 4. when the agent posts `Ready=True` again, the taints come off;
//! 5. pods bound to a node that no longer exists at all are removed (Kubernetes' pod
//!    garbage collector does this): nobody is left to finish them. That takes a list of
//!    every bound pod, so it runs on the pass that sees a node gone, and otherwise every
//!    [`ORPHAN_SWEEP`] for pods bound to a name that never was a node: on every pass, a
//!    thousand nodes with ten thousand pods made this list most of the control plane's work.
//!
//! Leases of nodes that no longer exist are removed on the same passes (Kubernetes' garbage
//! collector does it there, through the Lease's owner reference).
//!
//! "Unchanged for the grace period" is measured on this controller's own clock, from when
//! it saw the heartbeat change last ([`Heartbeats`]), as Kubernetes' node lifecycle
//! controller measures it: the time *in* the heartbeat comes from the node's clock, and
//! comparing it with this one would lose a healthy node whose clock is behind, and never
//! lose a dead one whose clock is ahead. A controller that starts (or takes over on
//! another member) gives every node a whole grace period from its first look.
//!
//! The decisions are pure functions of (node, how long its heartbeat has been unchanged,
//! pods, now); the loop around them is a plain interval, as Kubernetes' own monitor is
//! (this is time-driven, not event-driven).
//!
//! **What it reads.** Nodes and Leases come from watch caches ([`kube::runtime::reflector`]),
//! as from the informers of Kubernetes' controller: listing a thousand of each twice a
//! second was a tenth of a loaded control plane's work. A cache can only be late, and a
//! late cache shows an old heartbeat, so it can make a healthy node look lost but never a
//! lost node look healthy. A pass that finds a node newly lost in the caches therefore
//! looks again with fresh lists before it marks anything, and the orphan sweep (which must
//! see a Lease before its Node) always lists.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::agent::heartbeat::NODE_LEASE_NAMESPACE;

/// The taint a lost node carries.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// How the controller is timed.
#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// A node whose heartbeat is older than this is unreachable (Kubernetes: 40 s).
    pub grace_period: Duration,
    /// How long pods tolerate an unreachable node unless they say otherwise (Kubernetes:
    /// 300 s).
    pub default_toleration: Duration,
    /// How often nodes are looked at.
    pub monitor_period: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            grace_period: Duration::from_secs(4),
            default_toleration: Duration::from_secs(2),
            monitor_period: Duration::from_millis(500),
        }
    }
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// What to do about one node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeVerdict {
    /// Heartbeat fresh and nothing to undo.
    Healthy,
    /// Heartbeat fresh again: remove the unreachable taints.
    Recovered,
    /// Heartbeat stale and the node not yet marked: mark it.
    Lost,
    /// Already marked; its taint was added at this time.
    StillLost(Timestamp),
}

fn has_unreachable_taint(node: &Node) -> Option<Timestamp> {
    let taints = node.spec.as_ref()?.taints.as_ref()?;
    taints
        .iter()
        .find(|t| t.key == UNREACHABLE && t.effect == "NoExecute")
        .map(|t| t.time_added.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0))
}

/// The heartbeat a node posted last (`lastHeartbeatTime`, as the node wrote it).
fn heartbeat(node: &Node) -> Option<Timestamp> {
    Some(ready_condition(node)?.last_heartbeat_time.as_ref()?.0)
}

/// A node's heartbeat as last seen: its `lastHeartbeatTime` and its Lease's `renewTime`.
type Beat = (Option<Timestamp>, Option<Timestamp>);

/// When this controller saw each node's heartbeat change last, on its own clock.
#[derive(Debug, Default)]
pub struct Heartbeats {
    seen: HashMap<String, (Beat, Instant)>,
}

impl Heartbeats {
    /// Records what node `name` posts at `now` (`renewed`: its Lease's `renewTime`, if it
    /// has one); returns how long, on this controller's clock, its heartbeat has been what
    /// it is (zero for a node seen for the first time).
    pub fn unchanged_for(
        &mut self,
        name: &str,
        node: &Node,
        renewed: Option<Timestamp>,
        now: Instant,
    ) -> Duration {
        let posted = (heartbeat(node), renewed);
        match self.seen.get(name) {
            Some((last, since)) if *last == posted => now.duration_since(*since),
            _ => {
                self.seen.insert(name.to_owned(), (posted, now));
                Duration::ZERO
            }
        }
    }

    /// Forgets the nodes not in `names` (deleted ones).
    pub fn keep_only(&mut self, names: &[String]) {
        self.seen.retain(|name, _| names.contains(name));
    }
}

/// Judges a node by its heartbeat, which has not changed for `unchanged_for`.
pub fn assess(node: &Node, unchanged_for: Duration, grace: Duration) -> NodeVerdict {
    let status = ready_condition(node).map(|c| c.status.as_str());
    // A node that never reported is left alone: it may be registering right now.
    let stale = heartbeat(node).is_some() && unchanged_for > grace;
    let tainted = has_unreachable_taint(node);
    match (stale, tainted) {
        (true, Some(since)) if status == Some("Unknown") => NodeVerdict::StillLost(since),
        (true, _) => NodeVerdict::Lost,
        (false, Some(_)) if status == Some("True") => NodeVerdict::Recovered,
        (false, _) => NodeVerdict::Healthy,
    }
}

/// How long a pod tolerates an unreachable node: its own toleration wins.
pub fn toleration(pod: &Value, default: Duration) -> Option<Duration> {
    let tolerations = pod.pointer("/spec/tolerations").and_then(Value::as_array);
    for t in tolerations.into_iter().flatten() {
        let key = t.get("key").and_then(Value::as_str).unwrap_or("");
        let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        let matches_key = key == UNREACHABLE || (key.is_empty() && op == "Exists");
        if matches_key && (effect.is_empty() || effect == "NoExecute") {
            // Without tolerationSeconds the pod tolerates the node forever.
            let seconds = t["tolerationSeconds"].as_i64();
            return seconds.map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
        }
    }
    Some(default)
}

/// Runs the controller until `shutdown` becomes true.
pub async fn run(client: Client, config: NodeLifecycleConfig, mut shutdown: watch::Receiver<bool>) {
    let api = Apis {
        nodes: Api::all(client.clone()),
        leases: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
        pods: Api::all(client),
    };
    let (nodes, nodes_feed) = cache(api.nodes.clone());
    let (leases, leases_feed) = cache(api.leases.clone());
    let caches = Caches { nodes, leases };
    let mut tick = tokio::time::interval(config.monitor_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeats = Heartbeats::default();
    let mut orphans = OrphanSweep::default();
    let monitoring = async {
        loop {
            tick.tick().await;
            let pass = monitor(&api, &caches, &config, &mut heartbeats, &mut orphans);
            if let Err(e) = pass.await {
                tracing::warn!(error = %e, "node lifecycle pass failed; retrying");
            }
        }
    };
    tokio::select! {
        _ = crate::agent::stopped(&mut shutdown) => {}
        _ = futures::future::join(nodes_feed, leases_feed) => {}
        _ = monitoring => {}
    }
}

/// The APIs the controller reads and writes.
struct Apis {
    nodes: Api<Node>,
    leases: Api<Lease>,
    pods: Api<Pod>,
}

/// A watch cache of `api`'s objects, and the future that keeps it filled.
fn cache<K>(api: Api<K>) -> (Store<K>, impl Future<Output = ()>)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let feed = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(|_| std::future::ready(()));
    (reader, feed)
}

/// The watch caches of Nodes and of their Leases.
struct Caches {
    nodes: Store<Node>,
    leases: Store<Lease>,
}

/// What one pass judges: every Node, and the `renewTime` of every node Lease.
struct Seen {
    nodes: Vec<Arc<Node>>,
    renewed: HashMap<String, Timestamp>,
    /// Read from the watch caches (else listed just now).
    cached: bool,
}

impl Seen {
    /// From the caches, once both have been filled.
    fn cached(caches: &Caches) -> Option<Seen> {
        caches.nodes.wait_until_ready().now_or_never()?.ok()?;
        caches.leases.wait_until_ready().now_or_never()?.ok()?;
        let leases = caches.leases.state();
        Some(Seen {
            nodes: caches.nodes.state(),
            renewed: leases.iter().filter_map(|l| lease_renewal(l)).collect(),
            cached: true,
        })
    }

    /// Listed now: Leases first, then Nodes.
    async fn listed(api: &Apis) -> Result<Seen, kube::Error> {
        let leases = api.leases.list(&ListParams::default()).await?.items;
        let nodes = api.nodes.list(&ListParams::default()).await?.items;
        Ok(Seen {
            nodes: nodes.into_iter().map(Arc::new).collect(),
            renewed: leases.iter().filter_map(lease_renewal).collect(),
            cached: false,
        })
    }

    fn names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect()
    }
}

/// A node Lease's name and `renewTime`.
fn lease_renewal(lease: &Lease) -> Option<(String, Timestamp)> {
    let renewed = lease.spec.as_ref()?.renew_time.as_ref()?.0;
    Some((lease.metadata.name.clone()?, renewed))
}

async fn monitor(
    api: &Apis,
    caches: &Caches,
    config: &NodeLifecycleConfig,
    heartbeats: &mut Heartbeats,
    orphans: &mut OrphanSweep,
) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    let mut seen = match Seen::cached(caches) {
        Some(seen) => seen,
        None => Seen::listed(api).await?,
    };
    let names = seen.names();
    heartbeats.keep_only(&names);
    if orphans.due(&names, Instant::now()) {
        sweep_orphans(api, orphans).await?;
    }
    let mut verdicts = judge(&seen, heartbeats, config);
    if seen.cached && verdicts.iter().any(|(_, _, v)| *v == NodeVerdict::Lost) {
        // The caches may only be late: look again before losing a node.
        seen = Seen::listed(api).await?;
        verdicts = judge(&seen, heartbeats, config);
    }
    for (name, node, verdict) in verdicts {
        act(api, &name, &node, verdict, config, now).await?;
    }
    Ok(())
}

/// Each node's name, the node, and what to do about it.
fn judge(
    seen: &Seen,
    heartbeats: &mut Heartbeats,
    config: &NodeLifecycleConfig,
) -> Vec<(String, Arc<Node>, NodeVerdict)> {
    seen.nodes
        .iter()
        .map(|node| {
            let name = node.name_any();
            let renewed = seen.renewed.get(&name).copied();
            let unchanged_for = heartbeats.unchanged_for(&name, node, renewed, Instant::now());
            let verdict = assess(node, unchanged_for, config.grace_period);
            (name, node.clone(), verdict)
        })
        .collect()
}

/// Carries out one node's verdict.
async fn act(
    api: &Apis,
    name: &str,
    node: &Node,
    verdict: NodeVerdict,
    config: &NodeLifecycleConfig,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let (nodes, pods) = (&api.nodes, &api.pods);
    match verdict {
        NodeVerdict::Healthy => {}
        NodeVerdict::Lost => {
            tracing::warn!(node = %name, "node stopped posting status; marking it unreachable");
            mark_lost(nodes, node, name, now).await?;
            if !crate::failpoints::on!("node-lifecycle::never-report-unknown") {
                report_pods_unknown(pods, name).await?;
            }
        }
        NodeVerdict::StillLost(since) => {
            if !crate::failpoints::on!("node-lifecycle::never-report-unknown") {
                report_pods_unknown(pods, name).await?;
            }
            if !crate::failpoints::on!("node-lifecycle::never-evict") {
                evict(pods, name, since, now, config.default_toleration).await?;
            }
        }
        NodeVerdict::Recovered => {
            tracing::info!(node = %name, "node is posting status again; removing its taints");
            set_taints(nodes, name, other_taints(node)).await?;
        }
    }
    Ok(())
}

/// Removes the pods and Leases of nodes that are gone, from fresh lists. Leases are listed
/// before Nodes: an agent makes its Lease after its Node, so a Lease whose Node is missing
/// from the list after it belongs to a node that is gone. (Two caches promise no such
/// order.)
async fn sweep_orphans(api: &Apis, orphans: &mut OrphanSweep) -> Result<(), kube::Error> {
    let seen = Seen::listed(api).await?;
    let names = seen.names();
    remove_orphans(&api.pods, &names).await?;
    remove_orphan_leases(&api.leases, seen.renewed.keys(), &names).await?;
    orphans.done(names, Instant::now());
    Ok(())
}

async fn mark_lost(
    nodes: &Api<Node>,
    node: &Node,
    name: &str,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.clone());
    let mut conditions = conditions.unwrap_or_default();
    for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
        c.status = "Unknown".into();
        c.reason = Some("NodeStatusUnknown".into());
        c.message = Some("Kubelet stopped posting node status.".into());
        c.last_transition_time = Some(Time(now));
    }
    let patch = Patch::Merge(json!({"status": {"conditions": conditions}}));
    nodes
        .patch_status(name, &PatchParams::default(), &patch)
        .await?;
    let mut taints = other_taints(node);
    for effect in ["NoSchedule", "NoExecute"] {
        taints.push(Taint {
            key: UNREACHABLE.into(),
            effect: effect.into(),
            time_added: Some(Time(now)),
            value: None,
        });
    }
    set_taints(nodes, name, taints).await
}

/// The node's taints other than the unreachable ones.
fn other_taints(node: &Node) -> Vec<Taint> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone());
    let mut taints = taints.unwrap_or_default();
    taints.retain(|t| t.key != UNREACHABLE);
    taints
}

async fn set_taints(nodes: &Api<Node>, name: &str, taints: Vec<Taint>) -> Result<(), kube::Error> {
    let patch = Patch::Merge(json!({"spec": {"taints": taints}}));
    nodes.patch(name, &PatchParams::default(), &patch).await?;
    Ok(())
}

/// How often pods bound to nodes that do not exist are looked for when no node went.
/// Kubernetes' pod garbage collector looks every 20 s.
pub const ORPHAN_SWEEP: Duration = Duration::from_secs(10);

/// When the pods of vanished nodes were last looked for, and which nodes there were then.
#[derive(Debug, Default)]
pub struct OrphanSweep {
    nodes: Vec<String>,
    last: Option<Instant>,
}

impl OrphanSweep {
    /// Whether to look now: never looked, a node gone since, or [`ORPHAN_SWEEP`] passed.
    pub fn due(&self, nodes: &[String], now: Instant) -> bool {
        let Some(last) = self.last else {
            return true;
        };
        let current: HashSet<&str> = nodes.iter().map(String::as_str).collect();
        self.nodes.iter().any(|n| !current.contains(n.as_str())) || now >= last + ORPHAN_SWEEP
    }

    /// Records a completed look.
    pub fn done(&mut self, nodes: Vec<String>, now: Instant) {
        self.nodes = nodes;
        self.last = Some(now);
    }
}

/// Deletes the Leases of nodes that do not exist.
async fn remove_orphan_leases(
    leases: &Api<Lease>,
    leased: impl Iterator<Item = &String>,
    nodes: &[String],
) -> Result<(), kube::Error> {
    for name in leased.filter(|name| !nodes.contains(name)) {
        match leases.delete(name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(node = %name, "removed the Lease of a node that is gone"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Force-deletes pods bound to nodes that do not exist.
async fn remove_orphans(pods: &Api<Pod>, nodes: &[String]) -> Result<(), kube::Error> {
    let bound = ListParams::default().fields("spec.nodeName!=");
    for pod in pods.list(&bound).await?.items {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let Some(node) = node.filter(|n| !n.is_empty() && !nodes.contains(n)) else {
            continue;
        };
        tracing::info!(pod = %pod.name_any(), node = %node, "removing a pod whose node is gone");
        delete_pod(pods, &pod, Some(0)).await?;
    }
    Ok(())
}

/// The API of `pod`'s namespace, and the pod's name; `None` for a pod without either.
fn pod_api<'a>(pods: &Api<Pod>, pod: &'a Pod) -> Option<(Api<Pod>, &'a str)> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let name = pod.metadata.name.as_deref()?;
    Some((Api::namespaced(pods.clone().into_client(), namespace), name))
}

/// Deletes `pod` (if it is still the same pod), with `grace` or its own grace period.
async fn delete_pod(pods: &Api<Pod>, pod: &Pod, grace: Option<u32>) -> Result<(), kube::Error> {
    let Some((api, name)) = pod_api(pods, pod) else {
        return Ok(());
    };
    let params = DeleteParams {
        grace_period_seconds: grace,
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        // Gone already, or replaced by a pod of the same name: nothing to do.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        result => result.map(drop),
    }
}

fn on_node(name: &str) -> ListParams {
    ListParams::default().fields(&format!("spec.nodeName={name}"))
}

/// Reports the pods of a lost node as Unknown (the seed's phase), once each.
async fn report_pods_unknown(pods: &Api<Pod>, node: &str) -> Result<(), kube::Error> {
    for pod in pods.list(&on_node(node)).await?.items {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Unknown" | "Succeeded" | "Failed")) {
            continue;
        }
        let Some((api, name)) = pod_api(pods, &pod) else {
            continue;
        };
        let mut conditions = pod.status.as_ref().and_then(|s| s.conditions.clone());
        for c in conditions.iter_mut().flatten() {
            if matches!(c.type_.as_str(), "Ready" | "ContainersReady") {
                c.status = "False".into();
                c.reason = Some("NodeLost".into());
            }
        }
        let status = json!({"status": {
            "phase": "Unknown",
            "reason": "NodeLost",
            "message": format!("Node {node} which was running pod {name} is unresponsive"),
            "conditions": conditions.unwrap_or_default(),
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
    }
    Ok(())
}

/// Deletes the pods of a lost node whose toleration ran out.
async fn evict(
    pods: &Api<Pod>,
    node: &str,
    since: Timestamp,
    now: Timestamp,
    default: Duration,
) -> Result<(), kube::Error> {
    let lost_for = now.duration_since(since).unsigned_abs();
    for pod in pods.list(&on_node(node)).await?.items {
        let value = serde_json::to_value(&pod).unwrap_or_default();
        let tolerated = toleration(&value, default).is_none_or(|limit| lost_for < limit);
        if pod.metadata.deletion_timestamp.is_some() || tolerated {
            continue;
        }
        tracing::info!(pod = %pod.name_any(), node, "evicting a pod from an unreachable node");
        delete_pod(pods, &pod, None).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_looked_for_when_a_node_went_or_the_sweep_period_passed() {
        let names = |ns: &[&str]| ns.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let t = Instant::now();
        let mut sweep = OrphanSweep::default();
        assert!(sweep.due(&names(&["a", "b"]), t), "never looked");
        sweep.done(names(&["a", "b"]), t);
        assert!(!sweep.due(&names(&["a", "b"]), t + Duration::from_secs(1)));
        assert!(
            !sweep.due(&names(&["a", "b", "c"]), t + Duration::from_secs(1)),
            "a node added leaves no pod behind"
        );
        assert!(
            sweep.due(&names(&["a"]), t + Duration::from_secs(1)),
            "b went"
        );
        assert!(sweep.due(&names(&["a", "b"]), t + ORPHAN_SWEEP));
    }

    fn node(heartbeat: &str, status: &str, taint_added: Option<&str>) -> Node {
        let mut n = json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": status, "lastHeartbeatTime": heartbeat}
        ]}});
        if let Some(t) = taint_added {
            n["spec"] =
                json!({"taints": [{"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": t}]});
        }
        serde_json::from_value(n).expect("a Node")
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_stale_heartbeat_loses_the_node_and_a_fresh_one_recovers_it() {
        let grace = Duration::from_secs(5);
        let (fresh, stale) = (Duration::from_secs(2), Duration::from_secs(9));
        let beat = "2026-01-01T00:00:08Z";
        assert_eq!(
            assess(&node(beat, "True", None), fresh, grace),
            NodeVerdict::Healthy
        );
        assert_eq!(
            assess(&node(beat, "True", None), stale, grace),
            NodeVerdict::Lost
        );
        assert_eq!(
            assess(
                &node(beat, "Unknown", Some("2026-01-01T00:00:07Z")),
                stale,
                grace
            ),
            NodeVerdict::StillLost(at("2026-01-01T00:00:07Z"))
        );
        assert_eq!(
            assess(
                &node(beat, "True", Some("2026-01-01T00:00:07Z")),
                fresh,
                grace
            ),
            NodeVerdict::Recovered
        );
        // Never reported: leave it be.
        assert_eq!(assess(&Node::default(), stale, grace), NodeVerdict::Healthy);
    }

    #[test]
    fn a_heartbeat_is_timed_on_this_clock_whatever_the_node_s_clock_says() {
        let mut heartbeats = Heartbeats::default();
        let start = Instant::now();
        let after = |seconds: u64| start + Duration::from_secs(seconds);
        // An hour behind this clock, and renewed: never stale.
        let behind = [
            "2026-01-01T00:00:01Z",
            "2026-01-01T00:00:02Z",
            "2026-01-01T00:00:03Z",
        ];
        for (second, beat) in (0..).zip(behind) {
            let unchanged =
                heartbeats.unchanged_for("behind", &node(beat, "True", None), None, after(second));
            assert_eq!(unchanged, Duration::ZERO);
        }
        // An hour ahead, and no longer renewed: stale once it has not changed for as long
        // on this clock, though its time is still in this clock's future.
        let ahead = node("2026-01-01T02:00:00Z", "True", None);
        assert_eq!(
            heartbeats.unchanged_for("ahead", &ahead, None, after(3)),
            Duration::ZERO
        );
        assert_eq!(
            heartbeats.unchanged_for("ahead", &ahead, None, after(9)),
            Duration::from_secs(6)
        );
        // A node deleted and made again starts afresh.
        heartbeats.keep_only(&["behind".to_owned()]);
        assert_eq!(
            heartbeats.unchanged_for("ahead", &ahead, None, after(10)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_renewed_lease_is_a_heartbeat_and_so_is_a_posted_status() {
        let mut heartbeats = Heartbeats::default();
        let start = Instant::now();
        let after = |seconds: u64| start + Duration::from_secs(seconds);
        // The status was posted once; the Lease is renewed every second: never stale.
        let posted = node("2026-01-01T00:00:00Z", "True", None);
        for second in 0..10 {
            let renewed = at(&format!("2026-01-01T00:00:{second:02}.000000Z"));
            let unchanged = heartbeats.unchanged_for("n", &posted, Some(renewed), after(second));
            assert_eq!(unchanged, Duration::ZERO, "second {second}");
        }
        // The Lease stops; the node is stale once neither has changed for the grace.
        let last = Some(at("2026-01-01T00:00:09.000000Z"));
        assert_eq!(
            heartbeats.unchanged_for("n", &posted, last, after(14)),
            Duration::from_secs(5)
        );
        // A status posted without the Lease moving counts as well.
        let reposted = node("2026-01-01T00:00:15Z", "True", None);
        assert_eq!(
            heartbeats.unchanged_for("n", &reposted, last, after(15)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_pods_own_toleration_wins() {
        let d = Duration::from_secs(5);
        assert_eq!(toleration(&json!({}), d), Some(d));
        let own = json!({"spec": {"tolerations": [
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}
        ]}});
        assert_eq!(toleration(&own, d), Some(Duration::from_secs(30)));
        let forever = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert_eq!(toleration(&forever, d), None);
    }
}
