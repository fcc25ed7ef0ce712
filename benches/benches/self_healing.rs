//! Self-healing: how soon shipshape has a Deployment whole again after losing a node or a
//! pod, next to the floor its own timers set, to the goal, and (node loss) to Kubernetes at
//! its defaults, all computed in the same run.
//!
//! Setup: an in-process control plane (store, apiserver, scheduler, controllers; the node
//! lifecycle controller at shipshape's defaults: node grace 4 s, default unreachable
//! toleration 2 s, a look every 500 ms) and three node agents, `node-1`..`node-3`, run as
//! tasks of this process with their defaults (heartbeat 1 s) on the local Docker engine,
//! each with its own stop signal. A Deployment of 9 replicas of `shipshape/probe:v1`
//! (readinessProbe `httpGet /ready :8080`, `periodSeconds: 1`, default termination grace)
//! spreads 3 per node. A watcher on its pods (by label) and one on the nodes record when
//! each pod appeared, was bound, turned Ready, Unknown or terminating, and went, and when
//! each node turned unreachable; every figure and stage below is read from those records
//! (event arrival times in this process).
//!
//! 1. **Node loss** (`self_healing/node_loss`, 3 trials): with all 9 Ready, 3 per node, the
//!    agent of the node holding the most replicas (ties rotate) stops as a machine dies: its
//!    heartbeat stops and its containers go, nothing more is reported. The clock runs from
//!    that stop until the Deployment again has 9 Ready pods none of which is on the lost
//!    node (its pods left terminating there don't count). In between: the node lifecycle
//!    controller marks the node unreachable once its last heartbeat is older than the grace
//!    (its pods go `Unknown`), evicts the pods once the unreachable taint is older than the
//!    toleration, the ReplicaSet controller creates replacements, the scheduler binds them
//!    to the two nodes left, and their agents start and probe them. Printed: each trial
//!    with its stages; the median and max, next to
//!    - the goal: 8 s ([`NODE_LOSS_GOAL`]); the run's grace + toleration is 6 s at defaults;
//!    - the floor: grace + toleration + the replacements' own start (first replacement
//!      created → all 9 Ready) of the same trial, and measured/floor;
//!    - Kubernetes at its defaults: node-monitor-grace-period 40 s + default unreachable
//!      toleration 300 s (5 min 40 s before it evicts) + this run's replacement start.
//!
//!    Heartbeats and taints carry whole-second timestamps and the last heartbeat came up to
//!    1 s (the heartbeat interval) before the stop, so a trial can come in up to ~2 s under
//!    the floor, or over it by the 500 ms monitor period; the stages show which.
//!    Between trials (untimed): a fresh agent under the lost node's name (it finishes the
//!    pods left terminating there), the node's taints off, 9 Ready, then a rebalance to 3
//!    per node (the fuller nodes' extra pods deleted; their replacements land on the
//!    emptiest node), so every trial loses 3 pods. About 16 s a trial, recovery included;
//!    criterion's least of 10 samples (and a warm-up) would take three minutes, so these
//!    trials run outside its sampler.
//! 2. **Pod deletion** (`self_healing/pod_deletion`, criterion, 10 samples of one
//!    deletion): one Ready pod (on the node holding the most) is deleted with the default
//!    grace; its container gets SIGTERM and the probe exits at once. The clock runs from the
//!    delete call until the Deployment again has 9 Ready pods (the replacement is a new
//!    pod). Every timed deletion (criterion's warm-up included) is recorded; printed: the
//!    median and p90 next to the 2 s goal, and the replacement's own start (created →
//!    Ready) in the same deletions, with the ratio of the two. Untimed: the deleted pod goes
//!    before the next deletion.
//!
//! Cleanup: whatever happens, panics included, the agents stop (removing their containers)
//! and the cluster stops; then every container and the network labelled with the cluster's
//! id go. At start, clusters of killed runs (`$TMPDIR/shipshape-bench-self-healing-*` whose
//! process is gone) are reaped.
//!
//! Run: `cargo bench -p shipshape-benches --bench self_healing` (about 75 s after the build). A
//! criterion filter (read here as a plain substring) selects `pod_deletion` or `node_loss`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use criterion::SamplingMode;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use shipshape::agent::AgentConfig;
use shipshape::controllers::node_lifecycle::{NodeLifecycleConfig, UNREACHABLE};
use shipshape_benches::{
    BenchCluster, NAMESPACE, NODE_TIMEOUT, NodeAgents, Seen, Tracker, after, connect_docker,
    measuring, median, ms, node_ready_status, percentile, pod_ready, probe_deployment, ratio, secs,
    selected, sorted_ms, stage_medians,
};

/// The image the Deployment runs.
const IMAGE: &str = "shipshape/probe:v1";
/// The value of `shipshape.bench` (and the `app` label) on the Deployment.
const BENCH: &str = "self-healing";
/// The prefix of the cluster's data directory in `$TMPDIR`.
const DIR_PREFIX: &str = "shipshape-bench-self-healing-";
/// The Deployment's name.
const DEPLOYMENT: &str = "self-healing";
/// Its replicas.
const REPLICAS: usize = 9;
/// The nodes, each run by an agent of this process.
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
/// Node-loss trials in a measuring run (one in test mode).
const NODE_LOSS_TRIALS: usize = 3;
/// Kubernetes' defaults: kube-controller-manager's `--node-monitor-grace-period`, and the
/// `tolerationSeconds` the DefaultTolerationSeconds admission plugin gives every pod for
/// `node.kubernetes.io/unreachable`.
const K8S_NODE_MONITOR_GRACE: Duration = Duration::from_secs(40);
const K8S_UNREACHABLE_TOLERATION: Duration = Duration::from_secs(300);
/// The node-loss goal (the issue's): replacements Ready within this of the machine's death.
const NODE_LOSS_GOAL: Duration = Duration::from_secs(8);
/// The pod-deletion goal (the issue's).
const DELETION_GOAL: Duration = Duration::from_secs(2);
/// How long the Deployment may take to settle at 9 Ready pods (first start included).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a loss may take to heal before the run fails.
const HEAL_TIMEOUT: Duration = Duration::from_secs(90);

/// The id of each measurement, as criterion (and `--list`) names it.
const POD_DELETION: &str = "self_healing/pod_deletion";
const NODE_LOSS: &str = "self_healing/node_loss";

// What the trackers mark on each version of an object.
/// The pod is bound (`spec.nodeName`).
const BOUND: &str = "bound";
/// The pod's `Ready` is `True`; the node's `Ready` is `True`.
const READY: &str = "ready";
/// The pod has a deletion timestamp.
const TERMINATING: &str = "terminating";
/// The pod's phase is `Unknown` (its node is unreachable).
const UNKNOWN: &str = "unknown";
/// The node's `Ready` is `Unknown` (the node lifecycle controller lost it).
const UNREACHABLE_MARK: &str = "unreachable";
/// The node carries the unreachable taint.
const TAINTED: &str = "tainted";

fn pod_marks(pod: &Pod) -> Vec<&'static str> {
    let mut marks = Vec::new();
    if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
        marks.push(BOUND);
    }
    if pod_ready(pod) {
        marks.push(READY);
    }
    if pod.metadata.deletion_timestamp.is_some() {
        marks.push(TERMINATING);
    }
    if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Unknown") {
        marks.push(UNKNOWN);
    }
    marks
}

fn node_marks(node: &Node) -> Vec<&'static str> {
    let mut marks = Vec::new();
    match node_ready_status(node) {
        Some("True") => marks.push(READY),
        Some("Unknown") => marks.push(UNREACHABLE_MARK),
        _ => {}
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref());
    if taints.is_some_and(|ts| ts.iter().any(|t| t.key == UNREACHABLE)) {
        marks.push(TAINTED);
    }
    marks
}

fn name_of<K: kube::Resource>(seen: &Seen<K>) -> &str {
    seen.object.meta().name.as_deref().unwrap_or_default()
}

fn uid_of<K: kube::Resource>(seen: &Seen<K>) -> &str {
    seen.object.meta().uid.as_deref().unwrap_or_default()
}

fn node_of(pod: &Seen<Pod>) -> Option<&str> {
    pod.object.spec.as_ref()?.node_name.as_deref()
}

/// A replica that counts: still there, Ready, not terminating.
fn serving(pod: &Seen<Pod>) -> bool {
    pod.live() && pod.is(READY) && !pod.is(TERMINATING)
}

/// The latest instant any of `pods` turned Ready: when the last of them became Ready.
fn last_ready(pods: &[&&Seen<Pod>]) -> Option<Instant> {
    pods.iter().filter_map(|p| p.since(READY)).max()
}

/// `5 s`, `40 s`, `5 min`, `5 min 42.2 s`: whole seconds without decimals.
fn span(d: Duration) -> String {
    let (minutes, rest) = (
        d.as_secs() / 60,
        d - Duration::from_secs(d.as_secs() / 60 * 60),
    );
    let seconds = if rest.subsec_millis() == 0 {
        format!("{} s", rest.as_secs())
    } else if minutes > 0 {
        format!("{:.1} s", rest.as_secs_f64())
    } else {
        secs(rest)
    };
    match (minutes, rest.is_zero()) {
        (0, _) => seconds,
        (m, true) => format!("{m} min"),
        (m, false) => format!("{m} min {seconds}"),
    }
}

/// The live pods, one line: `node-1: a, b (terminating); node-2: ...`, for error messages.
fn describe(pods: &[Seen<Pod>]) -> String {
    let mut by_node: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| p.live()) {
        let state = if pod.is(TERMINATING) {
            "terminating"
        } else if pod.is(READY) {
            "Ready"
        } else if pod.is(UNKNOWN) {
            "Unknown"
        } else {
            "not Ready"
        };
        by_node
            .entry(node_of(pod).unwrap_or("unbound"))
            .or_default()
            .push(format!("{} {state}", name_of(pod)));
    }
    let nodes: Vec<String> = by_node
        .iter()
        .map(|(node, pods)| format!("{node}: {}", pods.join(", ")))
        .collect();
    format!("the Deployment's pods now: {}", nodes.join("; "))
}

/// How many serving pods each node has, every node listed.
fn spread(pods: &[Seen<Pod>]) -> BTreeMap<&'static str, Vec<&Seen<Pod>>> {
    let mut by_node: BTreeMap<&'static str, Vec<&Seen<Pod>>> =
        NODES.iter().map(|n| (*n, Vec::new())).collect();
    for pod in pods.iter().filter(|p| serving(p)) {
        if let Some(list) = node_of(pod).and_then(|n| by_node.get_mut(n)) {
            list.push(pod);
        }
    }
    by_node
}

fn spread_line(pods: &[Seen<Pod>]) -> String {
    let counts: Vec<String> = spread(pods)
        .iter()
        .map(|(node, pods)| format!("{node} {}", pods.len()))
        .collect();
    counts.join(", ")
}

/// The node holding the most serving pods, with them; among equals the `turn`-th.
fn fullest(pods: &[Seen<Pod>], turn: usize) -> (&'static str, Vec<&Seen<Pod>>) {
    let by_node = spread(pods);
    let most = by_node.values().map(Vec::len).max().unwrap_or(0);
    let tied: Vec<_> = by_node
        .into_iter()
        .filter(|(_, pods)| pods.len() == most)
        .collect();
    let (node, on_node) = tied.into_iter().cycle().nth(turn).unwrap_or_default();
    (node, on_node)
}

/// The Deployment: default termination grace (30 s); the probe exits on SIGTERM at once.
fn deployment() -> anyhow::Result<Deployment> {
    probe_deployment(DEPLOYMENT, BENCH, REPLICAS as i32, IMAGE)
}

/// One timed pod deletion, offsets from the delete call.
#[derive(Debug, Clone, Copy)]
struct Deletion {
    /// The Deployment has 9 Ready pods again: the timed figure.
    healed: Duration,
    /// The watch shows the deleted pod terminating.
    noticed: Option<Duration>,
    /// The replacement exists.
    created: Option<Duration>,
    /// The replacement is bound.
    bound: Option<Duration>,
    /// The replacement's own start: created → Ready.
    start: Option<Duration>,
}

/// One node-loss trial, offsets from the agent's stop.
#[derive(Debug, Clone)]
struct NodeLoss {
    node: String,
    lost_pods: usize,
    /// 9 Ready pods off the lost node: the timed figure.
    healed: Duration,
    /// The node's `Ready` turned `Unknown`.
    unreachable: Option<Duration>,
    /// The first of its pods turned `Unknown`.
    unknown: Option<Duration>,
    /// The first of its pods was evicted (got a deletion timestamp).
    evicted: Option<Duration>,
    /// The first replacement exists.
    created: Option<Duration>,
    /// The last replacement is bound.
    bound: Option<Duration>,
    /// The replacements' own start: first replacement created → all 9 Ready.
    start: Option<Duration>,
}

impl NodeLoss {
    fn marks(&self) -> [(&'static str, Option<Duration>); 6] {
        [
            ("node unreachable", self.unreachable),
            ("its pods Unknown", self.unknown),
            ("evicted", self.evicted),
            ("replacements created", self.created),
            ("bound", self.bound),
            ("all 9 Ready", Some(self.healed)),
        ]
    }

    /// grace + toleration + the replacements' start.
    fn floor(&self, lifecycle: &NodeLifecycleConfig) -> Duration {
        lifecycle.grace_period + lifecycle.default_toleration + self.start.unwrap_or_default()
    }
}

/// Every timed pod deletion, criterion's warm-up included.
static DELETIONS: Mutex<Vec<Deletion>> = Mutex::new(Vec::new());

fn deletions() -> std::sync::MutexGuard<'static, Vec<Deletion>> {
    DELETIONS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The run's view of the cluster: the API, and what the watches saw.
struct Bench {
    pods_api: Api<Pod>,
    pods: Tracker<Pod>,
    nodes: Tracker<Node>,
    /// Turns taken among equally full nodes.
    turn: AtomicUsize,
}

impl Bench {
    fn new(client: &kube::Client) -> Bench {
        let pods_api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let selector = watcher::Config::default().labels(&format!("app={DEPLOYMENT}"));
        Bench {
            pods: Tracker::start(pods_api.clone(), selector, pod_marks),
            nodes: Tracker::start(
                Api::all(client.clone()),
                watcher::Config::default(),
                node_marks,
            ),
            pods_api,
            turn: AtomicUsize::new(0),
        }
    }

    /// Adds the pods' state to an error.
    fn explain<T>(&self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        result.map_err(|e| anyhow!("{e:#}; {}", describe(&self.pods.snapshot())))
    }

    /// Waits until the Deployment has exactly its 9 pods, all Ready, none terminating.
    async fn settled(&self, what: &str) -> anyhow::Result<()> {
        let waited = self
            .pods
            .wait_for(SETTLE_TIMEOUT, what, |pods| {
                let live: Vec<_> = pods.iter().filter(|p| p.live()).collect();
                (live.len() == REPLICAS && live.iter().all(|p| serving(p))).then_some(())
            })
            .await;
        self.explain(waited)
    }

    /// Deletes pod `name` with the default grace.
    async fn delete_pod(&self, name: &str) -> anyhow::Result<()> {
        self.pods_api
            .delete(name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting pod {name}"))?;
        Ok(())
    }

    /// One timed deletion: delete a Ready pod, wait for 9 Ready again; then (untimed) wait
    /// for the deleted pod to go.
    async fn delete_once(&self) -> anyhow::Result<Deletion> {
        self.settled("9 Ready pods before a deletion").await?;
        let snapshot = self.pods.snapshot();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let (_, on_node) = fullest(&snapshot, turn);
        let victim = on_node
            .first()
            .ok_or_else(|| anyhow!("no Ready pod to delete"))?;
        let (name, uid) = (name_of(victim).to_owned(), uid_of(victim).to_owned());

        let start = Instant::now();
        self.delete_pod(&name).await?;
        let healed = self
            .pods
            .wait_for(
                HEAL_TIMEOUT,
                "9 Ready pods again after a deletion",
                |pods| {
                    // The deletion must have been seen, or the old 9 would pass.
                    let noticed = pods.iter().any(|p| uid_of(p) == uid && !serving(p));
                    let up: Vec<_> = pods.iter().filter(|p| serving(p)).collect();
                    if noticed && up.len() >= REPLICAS {
                        last_ready(&up)
                    } else {
                        None
                    }
                },
            )
            .await;
        let healed = self.explain(healed)?;

        let pods = self.pods.snapshot();
        let victim = pods.iter().find(|p| uid_of(p) == uid);
        let replacement = pods
            .iter()
            .filter(|p| serving(p) && p.first_seen >= start)
            .max_by_key(|p| p.first_seen);
        let deletion = Deletion {
            healed: healed.saturating_duration_since(start),
            noticed: victim.and_then(|v| after(v.since(TERMINATING).or(v.gone), start)),
            created: replacement.and_then(|r| after(Some(r.first_seen), start)),
            bound: replacement.and_then(|r| after(r.since(BOUND), start)),
            start: replacement.and_then(|r| after(r.since(READY), r.first_seen)),
        };
        let gone = self
            .pods
            .wait_for(SETTLE_TIMEOUT, "the deleted pod to go", |pods| {
                let there = pods.iter().any(|p| uid_of(p) == uid && p.live());
                (!there).then_some(())
            })
            .await;
        self.explain(gone)?;
        Ok(deletion)
    }

    /// One node-loss trial: (untimed) rebalance; stop the agent of the fullest node, wait
    /// for 9 Ready pods off it; then (untimed) bring the node back.
    async fn lose_node(&self, agents: &mut NodeAgents, trial: usize) -> anyhow::Result<NodeLoss> {
        // Untimed: 3 pods per node, so that every trial loses 3.
        self.rebalance().await?;
        let snapshot = self.pods.snapshot();
        let (node, on_node) = fullest(&snapshot, trial);
        let lost: BTreeSet<String> = on_node.iter().map(|p| uid_of(p).to_owned()).collect();

        let start = Instant::now();
        agents.kill(node)?;
        let healed = self
            .pods
            .wait_for(HEAL_TIMEOUT, "9 Ready pods off the lost node", |pods| {
                let up: Vec<_> = pods
                    .iter()
                    .filter(|p| serving(p) && node_of(p) != Some(node))
                    .collect();
                if up.len() >= REPLICAS {
                    last_ready(&up)
                } else {
                    None
                }
            })
            .await;
        let healed = self.explain(healed)?;

        let pods = self.pods.snapshot();
        let first_after = |mark: &str| {
            pods.iter()
                .filter(|p| lost.contains(uid_of(p)))
                .filter_map(|p| p.since(mark))
                .filter(|t| *t >= start)
                .min()
        };
        let replacements: Vec<_> = pods
            .iter()
            .filter(|p| serving(p) && node_of(p) != Some(node) && p.first_seen >= start)
            .collect();
        let first_created = replacements.iter().map(|p| p.first_seen).min();
        let unreachable = self
            .nodes
            .snapshot()
            .iter()
            .find(|n| name_of(n) == node)
            .and_then(|n| n.since(UNREACHABLE_MARK));
        let loss = NodeLoss {
            node: node.to_owned(),
            lost_pods: lost.len(),
            healed: healed.saturating_duration_since(start),
            unreachable: after(unreachable, start),
            unknown: after(first_after(UNKNOWN), start),
            evicted: after(first_after(TERMINATING), start),
            created: after(first_created, start),
            bound: after(
                replacements.iter().filter_map(|p| p.since(BOUND)).max(),
                start,
            ),
            start: first_created.map(|t| healed.saturating_duration_since(t)),
        };

        // Untimed: the machine comes back, and the pods spread out again.
        agents.settle().await?;
        agents.start(node)?;
        agents.wait_ready(node, NODE_TIMEOUT).await?;
        let untainted = self
            .nodes
            .wait_for(
                NODE_TIMEOUT,
                "the returned node's taints to come off",
                |nodes| {
                    nodes
                        .iter()
                        .any(|n| name_of(n) == node && n.live() && n.is(READY) && !n.is(TAINTED))
                        .then_some(())
                },
            )
            .await;
        untainted.with_context(|| format!("bringing node {node} back"))?;
        self.settled("9 Ready pods after the node came back")
            .await?;
        Ok(loss)
    }

    /// Brings the Deployment back to 3 pods per node by deleting the fuller nodes' extra
    /// pods (their replacements go to the emptiest node); a few rounds at most.
    async fn rebalance(&self) -> anyhow::Result<()> {
        let per_node = REPLICAS / NODES.len();
        for _ in 0..3 {
            self.settled("9 Ready pods before rebalancing").await?;
            let snapshot = self.pods.snapshot();
            let extra: Vec<String> = spread(&snapshot)
                .values()
                .flat_map(|pods| pods.iter().skip(per_node))
                .map(|p| uid_of(p).to_owned())
                .collect();
            if extra.is_empty() {
                return Ok(());
            }
            for pod in snapshot
                .iter()
                .filter(|p| extra.iter().any(|u| u == uid_of(p)))
            {
                self.delete_pod(name_of(pod)).await?;
            }
            let seen = self
                .pods
                .wait_for(SETTLE_TIMEOUT, "the rebalancing deletions", |pods| {
                    let pending = pods
                        .iter()
                        .any(|p| extra.iter().any(|u| u == uid_of(p)) && serving(p));
                    (!pending).then_some(())
                })
                .await;
            self.explain(seen)?;
        }
        // Best effort: the next trial prints how many pods its node held.
        self.settled("9 Ready pods after rebalancing").await
    }
}

fn bench_deletions(rt: &tokio::runtime::Runtime, bench: &Arc<Bench>) {
    let mut criterion = shipshape_benches::container_criterion();
    let mut group = criterion.benchmark_group("self_healing");
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("pod_deletion", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let bench = bench.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let deletion = bench
                        .delete_once()
                        .await
                        .unwrap_or_else(|e| panic!("{e:#}"));
                    total += deletion.healed;
                    deletions().push(deletion);
                }
                total
            }
        });
    });
    group.finish();
    criterion.final_summary();
}

fn report_deletions() {
    let tally = deletions();
    println!();
    println!(
        "== self healing, pod deletion: a Ready pod deleted (default grace; the probe exits on \
         SIGTERM) until the Deployment has 9 Ready pods again =="
    );
    let healed: Vec<Duration> = tally.iter().map(|d| d.healed).collect();
    let (Some(p50), Some(p90)) = (median(&healed), percentile(&healed, 0.9)) else {
        println!("pod deletion: not measured in this run (filtered out)");
        return;
    };
    let verdict = if p50 <= DELETION_GOAL {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "pod deletion: median {}, p90 {}, over {} deletions (goal: median <= {}: {verdict})",
        ms(p50),
        ms(p90),
        healed.len(),
        ms(DELETION_GOAL),
    );
    let starts: Vec<Duration> = tally.iter().filter_map(|d| d.start).collect();
    if let Some(start) = median(&starts) {
        println!(
            "pod deletion: the replacement's own start (created -> Ready) median {}; \
             deletion-to-Ready / replacement start = {:.2} (the rest is seeing the deletion \
             and creating the replacement)",
            ms(start),
            ratio(p50, start),
        );
    }
    let marks = tally.iter().map(|d| {
        vec![
            ("deletion seen", d.noticed),
            ("replacement created", d.created),
            ("bound", d.bound),
            ("9 Ready", Some(d.healed)),
        ]
    });
    println!(
        "pod deletion stages (median, from the delete call): {}",
        stage_medians(marks, ms)
    );
    if let Some(slowest) = tally.iter().max_by_key(|d| d.healed) {
        let stages = [
            ("deletion seen", slowest.noticed),
            ("replacement created", slowest.created),
            ("bound", slowest.bound),
            ("9 Ready", Some(slowest.healed)),
        ];
        let shown: Vec<String> = stages
            .iter()
            .filter_map(|(label, mark)| Some(format!("{label} +{}", ms((*mark)?))))
            .collect();
        println!("pod deletion, the slowest: {}", shown.join(", "));
    }
    println!(
        "pod deletion, every timed deletion (ms, sorted): {}",
        sorted_ms(&healed)
    );
}

fn trial_line(i: usize, n: usize, t: &NodeLoss, lifecycle: &NodeLifecycleConfig) -> String {
    let stages: Vec<String> = t
        .marks()
        .iter()
        .filter_map(|(label, mark)| Some(format!("{label} +{}", secs((*mark)?))))
        .collect();
    let floor = t.floor(lifecycle);
    format!(
        "node loss {}/{n}: {} stopped with {} pods -> {}; floor {} (grace + toleration + \
         replacements' start {}), measured/floor {:.2}",
        i + 1,
        t.node,
        t.lost_pods,
        stages.join(", "),
        secs(floor),
        t.start.map_or_else(|| "?".to_owned(), secs),
        ratio(t.healed, floor),
    )
}

fn report_node_loss(trials: &[NodeLoss], lifecycle: &NodeLifecycleConfig) {
    println!();
    println!(
        "== self healing, node loss: a node's agent stopped as a machine dies until the \
         Deployment has 9 Ready pods off that node =="
    );
    let healed: Vec<Duration> = trials.iter().map(|t| t.healed).collect();
    let (Some(p50), Some(max)) = (median(&healed), healed.iter().max().copied()) else {
        println!("node loss: not measured in this run (filtered out)");
        return;
    };
    for (i, t) in trials.iter().enumerate() {
        println!("{}", trial_line(i, trials.len(), t, lifecycle));
    }
    let (grace, toleration) = (lifecycle.grace_period, lifecycle.default_toleration);
    let verdict = if p50 <= NODE_LOSS_GOAL {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "node loss: median {}, max {}, over {} trials (goal: median <= {}: {verdict}; node grace \
         {} + default toleration {} = {} of it)",
        secs(p50),
        secs(max),
        trials.len(),
        span(NODE_LOSS_GOAL),
        span(grace),
        span(toleration),
        span(grace + toleration),
    );
    let floors: Vec<Duration> = trials.iter().map(|t| t.floor(lifecycle)).collect();
    let over_floor: Vec<f64> = trials
        .iter()
        .map(|t| ratio(t.healed, t.floor(lifecycle)))
        .collect();
    let mut sorted_ratios = over_floor.clone();
    sorted_ratios.sort_by(f64::total_cmp);
    let start: Vec<Duration> = trials.iter().filter_map(|t| t.start).collect();
    let start = median(&start).unwrap_or_default();
    if let Some(floor) = median(&floors) {
        println!(
            "node loss floor: median {} (grace {} + toleration {} + the replacements' own start, \
             median {}); measured/floor median {:.2}, per trial {}",
            secs(floor),
            span(grace),
            span(toleration),
            secs(start),
            sorted_ratios[(sorted_ratios.len() - 1) / 2],
            over_floor
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    let kubernetes = K8S_NODE_MONITOR_GRACE + K8S_UNREACHABLE_TOLERATION + start;
    println!(
        "node loss vs Kubernetes' defaults: node-monitor-grace-period {} + default unreachable \
         toleration {} = {} before it evicts, + this run's replacement start {} = {}; \
         shipshape's median is {:.3} of that ({:.0}x sooner)",
        span(K8S_NODE_MONITOR_GRACE),
        span(K8S_UNREACHABLE_TOLERATION),
        span(K8S_NODE_MONITOR_GRACE + K8S_UNREACHABLE_TOLERATION),
        secs(start),
        span(kubernetes),
        ratio(p50, kubernetes),
        ratio(kubernetes, p50),
    );
    let marks = trials.iter().map(|t| t.marks().to_vec());
    println!(
        "node loss stages (median, from the agent's stop): {}",
        stage_medians(marks, secs)
    );
}

/// The benchmarks' names, for `--list` (which must not start a cluster).
fn list() {
    for id in [POD_DELETION, NODE_LOSS] {
        println!("{id}: benchmark");
    }
}

/// Everything between the cluster's start and its stop.
fn run(
    rt: &tokio::runtime::Runtime,
    cluster: &mut BenchCluster,
    lifecycle: &NodeLifecycleConfig,
) -> anyhow::Result<()> {
    let client = cluster.client()?;
    let agents = cluster.agents();
    let begun = Instant::now();
    for node in NODES {
        agents.start(node)?;
    }
    for node in NODES {
        rt.block_on(agents.wait_ready(node, NODE_TIMEOUT))?;
    }
    let nodes_ready = begun.elapsed();
    let bench = Arc::new(Bench::new(&client));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let begun = Instant::now();
    rt.block_on(deployments.create(&PostParams::default(), &deployment()?))
        .context("creating the Deployment")?;
    rt.block_on(bench.settled("the Deployment's first 9 Ready pods"))?;
    println!(
        "self healing: {} node agents Ready in {}; {REPLICAS} replicas of {IMAGE} Ready in {} \
         ({})",
        NODES.len(),
        ms(nodes_ready),
        ms(begun.elapsed()),
        spread_line(&bench.pods.snapshot()),
    );

    if selected(POD_DELETION) {
        bench_deletions(rt, &bench);
        report_deletions();
    }
    if selected(NODE_LOSS) {
        let count = if measuring() { NODE_LOSS_TRIALS } else { 1 };
        if !measuring() {
            println!("(test mode: one node loss, a smoke test, not a measurement)");
        }
        let mut trials = Vec::new();
        for trial in 0..count {
            let t = rt
                .block_on(bench.lose_node(agents, trial))
                .with_context(|| format!("node-loss trial {}", trial + 1))?;
            println!(
                "node loss {}/{count}: {} lost, 9 Ready elsewhere after {} (stages below)",
                trial + 1,
                t.node,
                secs(t.healed)
            );
            trials.push(t);
        }
        report_node_loss(&trials, lifecycle);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        list();
        return Ok(());
    }
    if !selected(POD_DELETION) && !selected(NODE_LOSS) {
        return Ok(());
    }
    let whole = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let docker = rt.block_on(connect_docker())?;
    let lifecycle = NodeLifecycleConfig::default();
    // No node yet: the benchmark runs its own agents, each stoppable as a machine dies.
    let cluster = rt.block_on(BenchCluster::start(
        &docker,
        DIR_PREFIX,
        0,
        lifecycle.clone(),
    ))?;
    if cluster.reaped() > 0 {
        println!(
            "self healing: removed {} containers an earlier, killed run left behind",
            cluster.reaped()
        );
    }
    let heartbeat = AgentConfig::new("", "", PathBuf::new(), "").heartbeat;
    let docker_version = rt
        .block_on(docker.version())
        .ok()
        .and_then(|v| v.version)
        .unwrap_or_else(|| "unknown".to_owned());
    println!(
        "self healing: shipshape = in-process control plane (node grace {}, default toleration \
         {}, monitor every {}; started in {}) + {} in-process node agents (heartbeat {}) on \
         Docker engine {docker_version}",
        span(lifecycle.grace_period),
        span(lifecycle.default_toleration),
        ms(lifecycle.monitor_period),
        ms(cluster.started_in()),
        NODES.len(),
        span(heartbeat),
    );

    // The agents and the cluster stop and their containers go whatever happens, panics
    // included.
    cluster.run(&rt, |cluster| run(&rt, cluster, &lifecycle))?;
    println!("self healing: the whole run took {}", secs(whole.elapsed()));
    Ok(())
}
