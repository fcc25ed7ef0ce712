//! Rollout: how long a 10-replica Deployment takes to roll from `shipshape/probe:v1` to
//! `shipshape/probe:v2` at the default strategy, next to the least it could take, which is
//! its number of waves times one wave of pods started side by side, measured in the same
//! run.
//!
//! Setup: an in-process local cluster (control plane with its store, scheduler and
//! controllers; three node agents, `node-1`..`node-3`, and the service proxy, all at
//! shipshape's defaults) on the local Docker engine. Every Deployment is the probe with a
//! readinessProbe `httpGet /ready :8080`, `periodSeconds: 1`, and no `strategy`: the
//! apiserver fills in Kubernetes' default, RollingUpdate with maxSurge and maxUnavailable
//! 25%. Watches on the benchmark's Deployments and pods record when each version arrived;
//! every figure is read from those records (event arrival times in this process).
//!
//! - **pod start** (`rollout/pod_start`, the anchor): a one-replica Deployment of v1 is
//!   created; the clock stops when its pod's `Ready` turns `True`. The path in between is
//!   the one every pod of a rollout takes: ReplicaSet → Pod → scheduler binding → the
//!   agent's pause and app containers → the readiness probe → status.
//! - **wave start** (`rollout/wave_start`, the anchor of the bound): a Deployment of as many
//!   replicas of v2 as one wave of the rollout may start (below) is created; the clock stops
//!   when the last of its pods is Ready. Same path, with a wave's pods side by side.
//! - **rollout** (`rollout/v1_to_v2`): (untimed) a Deployment of 10 replicas of v1 is
//!   created and rolled out; then its container image is patched to v2 (a strategic merge
//!   patch, as `kubectl set image` sends) and the clock runs until the rollout is complete
//!   by `kubectl rollout status`'s rule: `status.observedGeneration` ≥ `metadata.generation`
//!   (the controller has seen the patch), `updatedReplicas` ≥ `spec.replicas`, no old
//!   replica left (`status.replicas` ≤ `updatedReplicas`), and `availableReplicas` ≥
//!   `updatedReplicas` — at the end of a rollout, all four counts equal 10. A Progressing
//!   condition with reason `ProgressDeadlineExceeded` fails the run, as it fails kubectl.
//!
//! **The lower bound.** A RollingUpdate keeps at most `replicas + maxSurge` pods and at
//! least `replicas − maxUnavailable` available ones. At the start all `replicas` old pods
//! are available, so the controller may add `maxSurge` new pods and take `maxUnavailable`
//! old ones down: at most `maxSurge + maxUnavailable` new pods come up in the first wave.
//! Until some of them are available nothing more may go down, and once they are, each old
//! pod taken down makes room for one new one: every later wave is again at most
//! `maxSurge + maxUnavailable` new pods, and no wave ends before its pods have started.
//! So a rollout takes at least `waves = ceil(replicas / (maxSurge + maxUnavailable))` pod
//! starts back to back. At the defaults for 10 replicas, maxSurge = 25% rounded up = 3
//! and maxUnavailable = 25% rounded down = 2, so 2 waves; the benchmark reads the strategy
//! the apiserver stored and computes all of this from it. The bound is `waves × wave
//! start`; the ratio rollout / bound is what the rest costs: the hand-offs between waves
//! (the new ReplicaSet seen available, the old one scaled down, the new one scaled up) and
//! the old pods' stopping, which competes with the new ones' start for the same Docker
//! engine. The benchmark also prints the bound as if a wave's pods started as fast as one
//! pod alone (`waves × pod start`): on two cores they do not — Docker starts containers
//! one after another, five pods side by side take about three times as long as one (by hand,
//! `docker run` of five pause + app pairs at once: about 1.2 s; one pair: about 0.35 s).
//! Every start is quantised by the 1 s probe period (a pod turns Ready at its first probe,
//! or a period later), so samples fall in clusters and a median can sit in either; every
//! sample is printed. For the rollout nearest the median, each new pod's path (created,
//! bound, all containers running, Ready) is printed too: that is where its time went.
//!
//! A controller that switched all replicas over at once (one wave, breaking
//! maxUnavailable) could come in *under* the bound, so the benchmark also prints, from the
//! pod watch, the most pods not terminating and the fewest available (Ready, not
//! terminating) at any moment of each rollout, next to `replicas + maxSurge` and `replicas
//! − maxUnavailable`, and how long they were beyond those. The controller keeps the bounds
//! on the ReplicaSets' replica counts, as Kubernetes does, and the pods follow each
//! ReplicaSet's own controller a moment later: the new one may create its pods a few
//! milliseconds before the old one marks its own terminating. A pod or two beyond for
//! milliseconds is that race; a switch-over is the whole count beyond for seconds.
//!
//! Both measurements run under criterion (10 samples of one iteration each, plus its
//! warm-up; it warns that it cannot fit them in its target time, which is expected), and
//! every timed iteration is recorded; after the groups the benchmark prints the medians,
//! the waves, the bound and the ratio, the median of the rollout's stages (first new pod
//! created, first new pod Ready, last old pod terminating, last new pod Ready, complete),
//! and every sample. Between iterations (untimed) the Deployment is deleted and the
//! benchmark waits until its pods are gone. One untimed start each of a v1 and a v2 pod
//! runs first. Under `cargo test --benches` each measurement runs once, as a smoke test.
//!
//! Cleanup: whatever happens, panics included, the cluster stops and every container and
//! the network labelled with its id go. At start, clusters of killed runs
//! (`$TMPDIR/shipshape-bench-rollout-*` whose process is gone) are reaped.
//!
//! Run: `cargo bench -p shipshape-benches --bench rollout` (about 95 s after the build:
//! each rollout sample also creates, rolls out and deletes its 10 pods of v1). A criterion
//! filter (read here as a plain substring) selects `pod_start` or `v1_to_v2`; the ratio
//! needs both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use criterion::SamplingMode;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use shipshape::controllers::node_lifecycle::NodeLifecycleConfig;
use shipshape_benches::{
    BENCH_LABEL, BenchCluster, NAMESPACE, POD_BOUND, POD_READY, POD_RUNNING, POD_TERMINATING, Seen,
    Tracker, after, app_of, connect_docker, delete_deployment, measuring, median, ms, percentile,
    pod_lifecycle_marks, probe_deployment, ratio, secs, selected, sorted_ms, stage_medians,
    start_until_ready,
};

/// The image rolled from, and the one rolled to.
const V1: &str = "shipshape/probe:v1";
const V2: &str = "shipshape/probe:v2";
/// The value of `shipshape.bench` on everything this benchmark creates.
const BENCH: &str = "rollout";
/// The prefix of the cluster's data directory in `$TMPDIR`.
const DIR_PREFIX: &str = "shipshape-bench-rollout-";
/// The cluster's node agents.
const NODES: u32 = 3;
/// The rolled-out Deployment's replicas.
const REPLICAS: i32 = 10;
/// How long one pod start may take before the run fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a Deployment of 10 may take to roll out (first creation or update).
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a deleted Deployment's pods may take to go.
const GONE_TIMEOUT: Duration = Duration::from_secs(90);

/// The id of each measurement, as criterion (and `--list`) names it.
const POD_START: &str = "rollout/pod_start";
const WAVE_START: &str = "rollout/wave_start";
const ROLLOUT: &str = "rollout/v1_to_v2";

// What the trackers mark on each version of an object.
/// The pod's `Ready` is `True`.
const READY: &str = POD_READY;
const BOUND: &str = POD_BOUND;
const RUNNING: &str = POD_RUNNING;
/// The pod has a deletion timestamp.
const TERMINATING: &str = POD_TERMINATING;
/// The Deployment is rolled out by `kubectl rollout status`'s rule.
const COMPLETE: &str = "complete";
/// The Deployment's Progressing condition says `ProgressDeadlineExceeded`.
const TIMED_OUT: &str = "timed-out";

fn deployment_marks(d: &Deployment) -> Vec<&'static str> {
    let mut marks = Vec::new();
    if rolled_out(d) {
        marks.push(COMPLETE);
    }
    let progressing = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"));
    if progressing.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        marks.push(TIMED_OUT);
    }
    marks
}

/// Whether `kubectl rollout status` would say "successfully rolled out" (its
/// `DeploymentStatusViewer`, the deadline check apart).
fn rolled_out(d: &Deployment) -> bool {
    let Some(status) = d.status.as_ref() else {
        return false;
    };
    let generation = d.metadata.generation.unwrap_or(0);
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    generation <= status.observed_generation.unwrap_or(0)
        && updated >= wanted
        && status.replicas.unwrap_or(0) <= updated
        && status.available_replicas.unwrap_or(0) >= updated
}

/// What the rollout may do at once, as the apiserver stored the strategy and as Kubernetes
/// resolves it against `spec.replicas`.
#[derive(Debug, Clone)]
struct Strategy {
    /// `spec.replicas`.
    replicas: i32,
    /// maxSurge as stored (`25%`) and resolved (a percentage rounded up).
    surge: (String, i32),
    /// maxUnavailable as stored and resolved (a percentage rounded down).
    unavailable: (String, i32),
}

impl Strategy {
    fn of(d: &Deployment) -> anyhow::Result<Strategy> {
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        Strategy::for_replicas(d, replicas)
    }

    /// `d`'s strategy as it resolves for `replicas` (percentages are of the replica count).
    fn for_replicas(d: &Deployment, replicas: i32) -> anyhow::Result<Strategy> {
        let spec = d.spec.as_ref().ok_or_else(|| anyhow!("no spec"))?;
        let strategy = spec.strategy.as_ref();
        let kind = strategy.and_then(|s| s.type_.as_deref());
        if kind.is_some_and(|k| k != "RollingUpdate") {
            bail!("the Deployment's strategy is {kind:?}, not RollingUpdate");
        }
        // Kubernetes' defaults, should the apiserver not have stored them.
        let default = IntOrString::String("25%".to_owned());
        let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
        let surge = rolling
            .and_then(|r| r.max_surge.as_ref())
            .unwrap_or(&default);
        let unavailable = rolling
            .and_then(|r| r.max_unavailable.as_ref())
            .unwrap_or(&default);
        let max_surge = scaled(surge, replicas, true)?;
        let mut max_unavailable = scaled(unavailable, replicas, false)?;
        // As Kubernetes does: both zero would make no progress, so one may be unavailable.
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        Ok(Strategy {
            replicas,
            surge: (show(surge), max_surge),
            unavailable: (show(unavailable), max_unavailable.min(replicas)),
        })
    }

    /// The most pods (not terminating) the strategy allows: replicas + maxSurge.
    fn most(&self) -> usize {
        usize::try_from(self.replicas + self.surge.1).unwrap_or(0)
    }

    /// The fewest available pods the strategy allows: replicas − maxUnavailable.
    fn fewest(&self) -> usize {
        usize::try_from(self.replicas - self.unavailable.1).unwrap_or(0)
    }

    /// At most maxSurge + maxUnavailable new pods per wave, each wave at least one pod
    /// start: `ceil(replicas / (maxSurge + maxUnavailable))`.
    fn waves(&self) -> u32 {
        self.replicas
            .max(0)
            .unsigned_abs()
            .div_ceil(self.per_wave().unsigned_abs())
    }

    /// The most new pods a wave may start: maxSurge + maxUnavailable.
    fn per_wave(&self) -> i32 {
        (self.surge.1 + self.unavailable.1).max(1)
    }
}

/// An absolute number, or a percentage of `total` rounded up or down
/// (`intstr.GetScaledValueFromIntOrPercent`).
fn scaled(value: &IntOrString, total: i32, round_up: bool) -> anyhow::Result<i32> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| anyhow!("{s:?} is neither a number nor a percentage"))?;
            let scaled = percent * i64::from(total);
            let n = if round_up {
                scaled.div_euclid(100) + i64::from(scaled.rem_euclid(100) != 0)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(n).with_context(|| format!("{s} of {total}"))
        }
    }
}

fn show(value: &IntOrString) -> String {
    match value {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// One timed rollout, offsets from the patch call.
#[derive(Debug, Clone)]
struct Rollout {
    /// Complete by kubectl's rule: the timed figure.
    took: Duration,
    /// The first v2 pod exists.
    first_created: Option<Duration>,
    /// The first v2 pod is Ready.
    first_ready: Option<Duration>,
    /// The last v1 pod is terminating (or gone).
    old_terminating: Option<Duration>,
    /// The last v2 pod is Ready.
    last_ready: Option<Duration>,
    /// The most pods not terminating at any moment of the rollout.
    peak: usize,
    /// The fewest available pods (Ready, not terminating) at any moment of the rollout.
    least: usize,
    /// How long there were more pods than [`Strategy::most`].
    over: Duration,
    /// How long there were fewer available than [`Strategy::fewest`].
    under: Duration,
    /// Each new pod's path, in the order they were created.
    new_pods: Vec<PodPath>,
}

/// When one new pod of a rollout reached each step, from the patch.
#[derive(Debug, Clone, Copy)]
struct PodPath {
    created: Option<Duration>,
    bound: Option<Duration>,
    running: Option<Duration>,
    ready: Option<Duration>,
}

impl PodPath {
    fn of(pod: &Seen<Pod>, start: Instant) -> PodPath {
        PodPath {
            created: after(Some(pod.first_seen), start),
            bound: after(pod.since(BOUND), start),
            running: after(pod.since(RUNNING), start),
            ready: after(pod.since(READY), start),
        }
    }
}

impl Rollout {
    fn marks(&self) -> [(&'static str, Option<Duration>); 5] {
        [
            ("first new pod created", self.first_created),
            ("first new pod Ready", self.first_ready),
            ("last old pod terminating", self.old_terminating),
            ("last new pod Ready", self.last_ready),
            ("rolled out", Some(self.took)),
        ]
    }
}

/// Every timed iteration, criterion's warm-up included, and the strategy rolled out with.
struct Tally {
    /// Every timed pod start.
    starts: Vec<Duration>,
    /// Every timed wave start (a wave's worth of pods created side by side).
    wave_starts: Vec<Duration>,
    /// Every timed rollout.
    rollouts: Vec<Rollout>,
    /// The strategy of the last rollout (the same for all).
    strategy: Option<Strategy>,
}
static TALLY: Mutex<Tally> = Mutex::new(Tally {
    starts: Vec::new(),
    wave_starts: Vec::new(),
    rollouts: Vec::new(),
    strategy: None,
});

fn tally() -> MutexGuard<'static, Tally> {
    TALLY.lock().unwrap_or_else(PoisonError::into_inner)
}

fn image_of(pod: &Seen<Pod>) -> Option<&str> {
    pod.object
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .as_deref()
}

/// When a pod stopped counting: it turned terminating, or went.
fn end_of(pod: &Seen<Pod>) -> Option<Instant> {
    pod.since(TERMINATING).or(pod.gone)
}

/// The run's view of the cluster: the API, and what the watches saw.
struct Bench {
    /// The cluster's API.
    client: kube::Client,
    /// Deployments in [`NAMESPACE`], to create, patch and delete.
    deployments: Api<Deployment>,
    /// Every pod this benchmark made, as the watch saw them.
    pods: Tracker<Pod>,
    /// Every Deployment this benchmark made, as the watch saw them.
    tracked: Tracker<Deployment>,
    /// Numbers the Deployments, so no two iterations share a name.
    next: AtomicU64,
}

impl Bench {
    fn new(client: kube::Client) -> Bench {
        let ours = || watcher::Config::default().labels(&format!("{BENCH_LABEL}={BENCH}"));
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
        Bench {
            pods: Tracker::start(
                Api::namespaced(client.clone(), NAMESPACE),
                ours(),
                pod_lifecycle_marks,
            ),
            tracked: Tracker::start(deployments.clone(), ours(), deployment_marks),
            deployments,
            client,
            next: AtomicU64::new(0),
        }
    }

    fn name(&self, what: &str) -> String {
        format!("{what}-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// One start of `replicas` pods side by side: create a Deployment of `replicas` of
    /// `image`, wait until all its pods are Ready; then (untimed) delete it and wait for the
    /// pods to go. Returns the time and the Deployment as stored.
    async fn start_once(
        &self,
        image: &str,
        replicas: i32,
    ) -> anyhow::Result<(Duration, Deployment)> {
        let name = self.name("pod-start");
        let body = probe_deployment(&name, BENCH, replicas, image)?;
        start_until_ready(&self.client, &self.pods, &body, START_TIMEOUT, GONE_TIMEOUT).await
    }

    /// Waits until Deployment `name`, at `generation` or later, is rolled out; returns when
    /// the watch showed that (or now, if the watch skipped the moment it turned so).
    async fn rolled_out(
        &self,
        name: &str,
        generation: i64,
        since: Instant,
    ) -> anyhow::Result<Instant> {
        let what = format!("Deployment {name} (generation {generation}) rolled out");
        self.tracked
            .wait_for(ROLLOUT_TIMEOUT, &what, |deployments| {
                let d = deployments.iter().find(|d| {
                    d.live()
                        && d.object.metadata.name.as_deref() == Some(name)
                        && d.object.metadata.generation.unwrap_or(0) >= generation
                })?;
                if d.is(TIMED_OUT) {
                    return Some(Err(anyhow!(
                        "Deployment {name} exceeded its progress deadline"
                    )));
                }
                let at = d.since(COMPLETE).filter(|t| *t >= since);
                d.is(COMPLETE).then(|| Ok(at.unwrap_or_else(Instant::now)))
            })
            .await?
    }

    /// One rollout: (untimed) create a Deployment of 10 replicas of v1 and wait until it is
    /// rolled out; patch its image to v2 and wait until that is rolled out; then (untimed)
    /// delete it and wait for its pods to go.
    async fn rollout_once(&self) -> anyhow::Result<(Rollout, Strategy)> {
        let name = self.name("rollout");
        let body = probe_deployment(&name, BENCH, REPLICAS, V1)?;
        let created = Instant::now();
        let outcome = async {
            let stored = self
                .deployments
                .create(&PostParams::default(), &body)
                .await
                .with_context(|| format!("creating Deployment {name}"))?;
            let strategy = Strategy::of(&stored).with_context(|| format!("Deployment {name}"))?;
            let generation = stored.metadata.generation.unwrap_or(0);
            self.rolled_out(&name, generation, created).await?;

            let patch = json!({"spec": {"template": {"spec": {"containers": [
                {"name": "probe", "image": V2},
            ]}}}});
            let start = Instant::now();
            let patched = self
                .deployments
                .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                .with_context(|| format!("patching the image of Deployment {name} to {V2}"))?;
            let generation = patched.metadata.generation.unwrap_or(0);
            let done = self.rolled_out(&name, generation, start).await?;
            anyhow::Ok((self.stages(&name, &strategy, start, done), strategy))
        }
        .await;
        let removed = delete_deployment(&self.client, &name, GONE_TIMEOUT).await;
        let outcome = outcome?;
        removed?;
        Ok(outcome)
    }

    /// What the pod watch saw of Deployment `name`'s rollout, from `start` to `done`.
    fn stages(&self, name: &str, strategy: &Strategy, start: Instant, done: Instant) -> Rollout {
        let pods = self.pods.snapshot();
        let ours: Vec<&Seen<Pod>> = pods.iter().filter(|p| app_of(p) == Some(name)).collect();
        let (new, old): (Vec<&Seen<Pod>>, Vec<&Seen<Pod>>) =
            ours.iter().copied().partition(|p| image_of(p) == Some(V2));
        // The counts change only when a pod appears, turns Ready, or stops counting.
        let mut moments: Vec<Instant> = ours
            .iter()
            .flat_map(|p| [Some(p.first_seen), p.since(READY), end_of(p)])
            .flatten()
            .filter(|t| (start..done).contains(t))
            .chain([start, done])
            .collect();
        moments.sort_unstable();
        moments.dedup();
        let counting = |p: &Seen<Pod>, t: Instant| end_of(p).is_none_or(|end| end > t);
        let count = |t: Instant, available: bool| {
            ours.iter()
                .filter(|p| p.first_seen <= t && counting(p, t))
                .filter(|p| !available || p.since(READY).is_some_and(|r| r <= t))
                .count()
        };
        let mut rollout = Rollout {
            took: done.saturating_duration_since(start),
            first_created: after(new.iter().map(|p| p.first_seen).min(), start),
            first_ready: after(new.iter().filter_map(|p| p.since(READY)).min(), start),
            old_terminating: after(old.iter().filter_map(|p| end_of(p)).max(), start),
            last_ready: after(new.iter().filter_map(|p| p.since(READY)).max(), start),
            peak: 0,
            least: usize::MAX,
            over: Duration::ZERO,
            under: Duration::ZERO,
            new_pods: Vec::new(),
        };
        rollout.new_pods = new.iter().map(|p| PodPath::of(p, start)).collect();
        rollout.new_pods.sort_by_key(|p| p.created);
        // Each count holds from its moment to the next.
        for pair in moments.windows(2) {
            let (pods, available, held) = (
                count(pair[0], false),
                count(pair[0], true),
                pair[1] - pair[0],
            );
            rollout.peak = rollout.peak.max(pods);
            rollout.least = rollout.least.min(available);
            if pods > strategy.most() {
                rollout.over += held;
            }
            if available < strategy.fewest() {
                rollout.under += held;
            }
        }
        rollout
    }
}

/// `per_wave` is how many new pods one wave of the rollout may start.
fn measure(rt: &tokio::runtime::Runtime, bench: &Arc<Bench>, per_wave: i32) {
    let mut criterion = shipshape_benches::container_criterion();
    let mut group = criterion.benchmark_group("rollout");
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("pod_start", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let bench = bench.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (took, _) = bench
                        .start_once(V1, 1)
                        .await
                        .unwrap_or_else(|e| panic!("{e:#}"));
                    total += took;
                    tally().starts.push(took);
                }
                total
            }
        });
    });
    group.bench_function("wave_start", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let bench = bench.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (took, _) = bench
                        .start_once(V2, per_wave)
                        .await
                        .unwrap_or_else(|e| panic!("{e:#}"));
                    total += took;
                    tally().wave_starts.push(took);
                }
                total
            }
        });
    });
    group.bench_function("v1_to_v2", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let bench = bench.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (rollout, strategy) = bench
                        .rollout_once()
                        .await
                        .unwrap_or_else(|e| panic!("{e:#}"));
                    total += rollout.took;
                    let mut tally = tally();
                    tally.rollouts.push(rollout);
                    tally.strategy = Some(strategy);
                }
                total
            }
        });
    });
    group.finish();
    criterion.final_summary();
}

fn report() {
    let tally = tally();
    println!();
    println!(
        "== rollout: a {REPLICAS}-replica Deployment patched from {V1} to {V2} until kubectl \
         would call it rolled out / waves x the start of one wave =="
    );
    if !measuring() {
        println!("(test mode: each ran once; these figures are a smoke test, not a measurement)");
    }
    let took: Vec<Duration> = tally.rollouts.iter().map(|r| r.took).collect();
    let rollout = median(&took);
    let start = median(&tally.starts);
    if let Some(start) = start {
        println!(
            "pod start: median {}, p90 {} over {} starts (a 1-replica Deployment created until \
             its pod is Ready): {}",
            ms(start),
            percentile(&tally.starts, 0.9).map_or_else(String::new, ms),
            tally.starts.len(),
            sorted_ms(&tally.starts),
        );
    }
    let (Some(rollout), Some(strategy)) = (rollout, tally.strategy.as_ref()) else {
        println!("rollout: not measured in this run (filtered out)");
        return;
    };
    println!(
        "rollout: median {}, p90 {} over {} rollouts: {}",
        secs(rollout),
        percentile(&took, 0.9).map_or_else(String::new, secs),
        took.len(),
        sorted_ms(&took),
    );
    let (surge, unavailable) = (strategy.surge.1, strategy.unavailable.1);
    let waves = strategy.waves();
    println!(
        "rollout waves: maxSurge {} of {} = {surge} (rounded up), maxUnavailable {} = \
         {unavailable} (rounded down), so at most {} new pods a wave: ceil({} / {}) = {waves} \
         waves",
        strategy.surge.0,
        strategy.replicas,
        strategy.unavailable.0,
        surge + unavailable,
        strategy.replicas,
        surge + unavailable,
    );
    if let Some(start) = start {
        let bound = start * waves;
        println!(
            "rollout against one pod alone: {waves} waves x pod start {} = {}; rollout median \
             {} / that = {:.2} (the bound as if a wave's pods started as fast as one)",
            ms(start),
            secs(bound),
            secs(rollout),
            ratio(rollout, bound),
        );
    }
    match median(&tally.wave_starts) {
        Some(wave) => {
            let bound = wave * waves;
            println!(
                "wave start: median {}, p90 {} over {} starts ({} pods of one Deployment \
                 created side by side until all are Ready): {}",
                ms(wave),
                percentile(&tally.wave_starts, 0.9).map_or_else(String::new, ms),
                tally.wave_starts.len(),
                surge + unavailable,
                sorted_ms(&tally.wave_starts),
            );
            println!(
                "rollout lower bound: {waves} waves x wave start {} = {}; rollout median {} / \
                 lower bound = {:.2} (goal <= 1.5)",
                ms(wave),
                secs(bound),
                secs(rollout),
                ratio(rollout, bound),
            );
        }
        None => println!("rollout lower bound: wave start not measured in this run (filtered out)"),
    }
    println!(
        "rollout stages (median, from the patch): {}",
        stage_medians(tally.rollouts.iter().map(|r| r.marks().to_vec()), ms)
    );
    print_pod_paths(&tally.rollouts, rollout);
    let peak = tally.rollouts.iter().map(|r| r.peak).max().unwrap_or(0);
    let least = tally.rollouts.iter().map(|r| r.least).min().unwrap_or(0);
    let over: Duration = tally.rollouts.iter().map(|r| r.over).sum();
    let under: Duration = tally.rollouts.iter().map(|r| r.under).sum();
    let each: Vec<String> = tally
        .rollouts
        .iter()
        .map(|r| format!("{}/{}", r.peak, r.least))
        .collect();
    println!(
        "rollout, pods as the watch saw them during the rollouts: at most {peak} not terminating \
         (replicas + maxSurge = {}; more for {} in all), at least {least} available \
         (replicas - maxUnavailable = {}; fewer for {} in all); most/fewest per rollout: {}",
        strategy.most(),
        ms(over),
        strategy.fewest(),
        ms(under),
        each.join(" "),
    );
}

/// The path of every new pod of the rollout that took the median time: where a rollout
/// spends its time beyond the bound (Docker starting a wave's containers side by side,
/// readiness probes, the hand-off from one wave to the next).
fn print_pod_paths(rollouts: &[Rollout], median: Duration) {
    let Some(typical) = rollouts.iter().min_by_key(|r| r.took.abs_diff(median)) else {
        return;
    };
    let at =
        |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), |d| format!("{:>5}", d.as_millis()));
    println!(
        "rollout of {} (the one nearest the median), each new pod in ms from the patch:",
        ms(typical.took)
    );
    println!("  pod  created  bound  running  Ready   (running->Ready)");
    for (i, p) in typical.new_pods.iter().enumerate() {
        let probe = match (p.running, p.ready) {
            (Some(run), Some(ready)) => format!("{:>5}", ready.saturating_sub(run).as_millis()),
            _ => "-".to_owned(),
        };
        println!(
            "  {:>3}    {}  {}    {}  {}   {probe}",
            i + 1,
            at(p.created),
            at(p.bound),
            at(p.running),
            at(p.ready)
        );
    }
}

/// The benchmarks' names, for `--list` (which must not start a cluster).
fn list() {
    for id in [POD_START, WAVE_START, ROLLOUT] {
        println!("{id}: benchmark");
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        list();
        return Ok(());
    }
    if ![POD_START, WAVE_START, ROLLOUT].into_iter().any(selected) {
        return Ok(());
    }
    let whole = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let docker = rt.block_on(connect_docker())?;
    let cluster = rt.block_on(BenchCluster::start(
        &docker,
        DIR_PREFIX,
        NODES,
        NodeLifecycleConfig::default(),
    ))?;
    if cluster.reaped() > 0 {
        println!(
            "rollout: removed {} containers an earlier, killed run left behind",
            cluster.reaped()
        );
    }
    let docker_version = rt
        .block_on(docker.version())
        .ok()
        .and_then(|v| v.version)
        .unwrap_or_else(|| "unknown".to_owned());
    println!(
        "rollout: shipshape = in-process cluster (control plane, {NODES} node agents, service \
         proxy), nodes Ready in {}, on Docker engine {docker_version}, {} cores",
        ms(cluster.started_in()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    cluster.run(&rt, |cluster| {
        let bench = Arc::new(Bench::new(cluster.client()?));
        // One untimed start of each image: the first of anything pays for cold caches, and
        // a broken setup fails here with its own message rather than inside criterion.
        let (first_v1, stored) = rt
            .block_on(bench.start_once(V1, 1))
            .context("first v1 pod start")?;
        let (first_v2, _) = rt
            .block_on(bench.start_once(V2, 1))
            .context("first v2 pod start")?;
        println!(
            "rollout: untimed first pod starts: v1 {}, v2 {}",
            ms(first_v1),
            ms(first_v2)
        );
        // The strategy the apiserver stores for a Deployment created without one, resolved
        // for the rollout's replica count.
        let per_wave = Strategy::for_replicas(&stored, REPLICAS)
            .context("the default strategy")?
            .per_wave();
        measure(&rt, &bench, per_wave);
        report();
        Ok(())
    })?;
    println!("rollout: the whole run took {}", secs(whole.elapsed()));
    Ok(())
}
