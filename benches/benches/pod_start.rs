//! Pod start: shipshape against a raw Docker create + start of the same image, measured in
//! the same run.
//!
//! - **shipshape**: an in-process local cluster (control plane with its store, scheduler and
//!   controllers, and one node agent on the local Docker engine). One iteration creates a
//!   one-replica Deployment of `shipshape/probe:v1` through the API and stops the clock
//!   when a watch on its pods (by label) shows the pod's `Ready` condition `True`. The path
//!   in between: Deployment controller → ReplicaSet → ReplicaSet controller → Pod →
//!   scheduler binding → the agent's pod watch → pause container + app container → the
//!   agent's readiness probe (`httpGet /ready :8080`, `periodSeconds: 1`) → status patch.
//! - **docker**: `docker create` + `docker start` of the same image on the default bridge
//!   network (one container, default command), then `GET http://<container IP>:8080/ready`
//!   from the host every 2 ms; the clock stops at the first 200.
//!
//! Fairness: both wait for the same thing, the probe's `/ready` answering 200. The raw run
//! polls every 2 ms; shipshape's agent probes at the pod's `periodSeconds` (1 s, the
//! smallest Kubernetes allows) and re-syncs a pod on every change to it or every 500 ms
//! (its sync period): a first probe that comes a little too early costs up to a second,
//! so the agent's probe cadence and sync period bound shipshape's figure from below.
//! shipshape also starts two containers per pod (the pause sandbox, then the app), the
//! anchor one.
//!
//! Between iterations (not timed) the Deployment is deleted and the benchmark waits until
//! its pod is gone (the agent has stopped and removed its containers); the anchor's
//! container is force-removed. Every timed iteration, criterion's warm-up included, is
//! recorded; after the groups the benchmark prints the median and p90 of each and the
//! ratio shipshape/docker computed from them, plus where shipshape's time goes: the median
//! of each stage (pod created, bound, pause and app containers created and started,
//! running reported, Ready), from the pod watch and Docker's own container timestamps, read
//! after the clock stopped. One untimed start of each runs before criterion does.
//!
//! Cleanup: the cluster removes its containers when stopped (panics included); the
//! anchor's containers carry `shipshape.bench=pod-start` and the benchmark's pid. At start,
//! leftovers of killed runs (those labelled containers, and clusters in
//! `$TMPDIR/shipshape-bench-pod-start-*` whose process is gone) are removed.
//!
//! Each iteration takes about a second or more, so criterion is told to take 10 samples of
//! one iteration; it warns that it cannot fit them in its target time, which is expected.
//!
//! Run: `cargo bench -p shipshape-benches --bench pod_start` (about two minutes).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use bollard::Docker;
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use criterion::SamplingMode;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use shipshape::agent::runtime::{LABEL_CONTAINER, LABEL_POD_UID, PAUSE};
use shipshape::controllers::node_lifecycle::NodeLifecycleConfig;
use shipshape_benches::{
    BenchCluster, DockerAnchor, NAMESPACE, PROBE_PORT, PROBE_READY_PATH, connect_docker,
    delete_deployment, measuring, median, ms, percentile, pod_ready, probe_deployment, ratio,
    remove_bench_containers, sorted_ms,
};

/// The image both sides start.
const IMAGE: &str = "shipshape/probe:v1";
/// The value of `shipshape.bench` on everything this benchmark creates.
const BENCH: &str = "pod-start";
/// The prefix of the clusters' data directories in `$TMPDIR`.
const DIR_PREFIX: &str = "shipshape-bench-pod-start-";
/// How long one start (either side) may take before the run fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a deleted Deployment's pod may take to go.
const GONE_TIMEOUT: Duration = Duration::from_secs(60);
/// The ratio shipshape/docker the design aims for, at the median.
const GOAL: f64 = 1.1;

/// When each stage of one shipshape start happened, from the create call: as first seen
/// on the pod watch, or as Docker recorded it for the pod's containers.
#[derive(Debug, Clone, Copy, Default)]
struct Stages {
    /// The ReplicaSet controller's pod exists (watch).
    created: Option<Duration>,
    /// The scheduler bound it, `spec.nodeName` (watch).
    bound: Option<Duration>,
    /// The agent created the pause container (Docker's `Created`).
    sandbox_created: Option<Duration>,
    /// The pause container started (Docker's `State.StartedAt`).
    sandbox_started: Option<Duration>,
    /// The agent created the app container.
    app_created: Option<Duration>,
    /// The app container started.
    app_started: Option<Duration>,
    /// The agent's status shows the container running (watch).
    running: Option<Duration>,
    /// `Ready` is `True` (watch): the timed figure.
    ready: Duration,
}

impl Stages {
    /// Each stage in order, with its name.
    fn marks(&self) -> [(&'static str, Option<Duration>); 8] {
        [
            ("pod created", self.created),
            ("bound", self.bound),
            ("pause created", self.sandbox_created),
            ("pause started", self.sandbox_started),
            ("app created", self.app_created),
            ("app started", self.app_started),
            ("running reported", self.running),
            ("Ready", Some(self.ready)),
        ]
    }
}

/// Every timed iteration, per side.
#[derive(Default)]
struct Tally {
    shipshape: Vec<Stages>,
    docker: Vec<Duration>,
}
static TALLY: Mutex<Tally> = Mutex::new(Tally {
    shipshape: Vec::new(),
    docker: Vec::new(),
});

fn tally() -> std::sync::MutexGuard<'static, Tally> {
    TALLY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// shipshape's side: an API client of the in-process cluster.
struct Shipshape {
    client: kube::Client,
    deployments: Api<Deployment>,
    pods: Api<Pod>,
    /// To read when the agent's containers were created and started (never to change them).
    docker: Docker,
    next: AtomicU64,
}

/// Offset of Docker timestamp `at` (RFC 3339) from `since`, if it parses and is later.
fn offset(at: Option<SystemTime>, since: SystemTime) -> Option<Duration> {
    at?.duration_since(since).ok()
}

/// An RFC 3339 time, as Docker reports when a container started.
fn parsed(at: Option<&str>) -> Option<SystemTime> {
    let at: jiff::Timestamp = at?.parse().ok()?;
    Some(SystemTime::from(at))
}

fn is_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
}

/// The probe Deployment of one replica, deleted between iterations: SIGTERM, then at
/// most a second.
fn deployment(name: &str) -> anyhow::Result<Deployment> {
    let mut body = probe_deployment(name, BENCH, 1, IMAGE)?;
    if let Some(pod) = body.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pod.termination_grace_period_seconds = Some(1);
    }
    Ok(body)
}

impl Shipshape {
    fn new(client: kube::Client, docker: Docker) -> Shipshape {
        Shipshape {
            deployments: Api::namespaced(client.clone(), NAMESPACE),
            pods: Api::namespaced(client.clone(), NAMESPACE),
            client,
            docker,
            next: AtomicU64::new(0),
        }
    }

    /// Fills in when the pod's pause and app containers were created and started, from
    /// Docker's own records (same host clock as `since`, the wall time of the create call).
    async fn container_stages(&self, pod_uid: &str, since: SystemTime, stages: &mut Stages) {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_POD_UID}={pod_uid}")],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let Ok(containers) = self.docker.list_containers(Some(options)).await else {
            return;
        };
        for container in containers {
            let Some(id) = container.id else { continue };
            let role = container
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_CONTAINER))
                .cloned()
                .unwrap_or_default();
            let inspect = self
                .docker
                .inspect_container(&id, None::<InspectContainerOptions>);
            let Ok(c) = inspect.await else { continue };
            // Docker's creation time is a `time` value (bollard's `time` feature), its start
            // time a string.
            let created = offset(c.created.map(SystemTime::from), since);
            let started = offset(parsed(c.state.and_then(|s| s.started_at).as_deref()), since);
            if role == PAUSE {
                (stages.sandbox_created, stages.sandbox_started) = (created, started);
            } else {
                (stages.app_created, stages.app_started) = (created, started);
            }
        }
    }

    /// One timed start: create a Deployment, wait for its pod to be Ready; then (untimed)
    /// delete it and wait for the pod to go.
    async fn start_once(&self) -> anyhow::Result<Stages> {
        let name = format!("pod-start-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let selector = format!("app={name}");
        // The watch is open before the clock starts, from a revision before the create.
        let listed = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .context("listing pods")?;
        let revision = listed.metadata.resource_version.unwrap_or_default();
        let mut events = self
            .pods
            .watch(&WatchParams::default().labels(&selector), &revision)
            .await
            .context("watching pods")?
            .boxed();
        let body = deployment(&name)?;

        let wall_start = SystemTime::now();
        let start = Instant::now();
        self.deployments
            .create(&PostParams::default(), &body)
            .await
            .with_context(|| format!("creating Deployment {name}"))?;
        let mut stages = Stages::default();
        let mut uid = String::new();
        let waited = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(event) = events.try_next().await.context("pod watch failed")? {
                let pod = match event {
                    WatchEvent::Added(pod) | WatchEvent::Modified(pod) => pod,
                    WatchEvent::Deleted(_) | WatchEvent::Bookmark(_) => continue,
                    WatchEvent::Error(status) => bail!("pod watch failed: {}", status.message),
                };
                let now = start.elapsed();
                stages.created.get_or_insert(now);
                if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                    stages.bound.get_or_insert(now);
                }
                if is_running(&pod) {
                    stages.running.get_or_insert(now);
                }
                if pod_ready(&pod) {
                    stages.ready = now;
                    uid = pod.metadata.uid.unwrap_or_default();
                    return Ok(());
                }
            }
            Err(anyhow!("the pod watch ended"))
        })
        .await;
        drop(events);
        let outcome = match waited {
            Ok(result) => result,
            Err(_) => Err(anyhow!(
                "the pod of Deployment {name} was not Ready within {START_TIMEOUT:?} \
                 (seen: {stages:?})"
            )),
        };
        if outcome.is_ok() {
            self.container_stages(&uid, wall_start, &mut stages).await;
        }
        let removed = delete_deployment(&self.client, &name, GONE_TIMEOUT).await;
        outcome?;
        removed?;
        Ok(stages)
    }
}

async fn docker_once(anchor: &DockerAnchor) -> anyhow::Result<Duration> {
    anchor
        .start_until_ready(IMAGE, PROBE_PORT, PROBE_READY_PATH, START_TIMEOUT)
        .await
}

fn report() {
    let tally = tally();
    println!();
    println!(
        "== pod start: shipshape Deployment until its pod is Ready / raw docker create+start until /ready answers 200 =="
    );
    if !measuring() {
        println!(
            "(test mode: each side ran once; these figures are a smoke test, not a measurement)"
        );
    }
    let ours: Vec<Duration> = tally.shipshape.iter().map(|s| s.ready).collect();
    let theirs = &tally.docker;
    let figures = (
        median(&ours),
        median(theirs),
        percentile(&ours, 0.9),
        percentile(theirs, 0.9),
    );
    let (Some(o50), Some(t50), Some(o90), Some(t90)) = figures else {
        println!("pod start: not measured in this run (filtered out)");
        return;
    };
    let ratio50 = ratio(o50, t50);
    let verdict = if ratio50 <= GOAL { "met" } else { "NOT met" };
    println!(
        "pod start: shipshape median {}, docker median {}, ratio {ratio50:.2} (goal <= {GOAL:.1}: {verdict})",
        ms(o50),
        ms(t50),
    );
    let ratio90 = ratio(o90, t90);
    println!(
        "pod start p90: shipshape {}, docker {}, ratio {ratio90:.2} [{} shipshape starts, {} docker starts]",
        ms(o90),
        ms(t90),
        ours.len(),
        theirs.len(),
    );
    println!(
        "pod start, every timed start (ms, sorted): shipshape {}",
        sorted_ms(&ours)
    );
    println!(
        "pod start, every timed start (ms, sorted): docker {}",
        sorted_ms(theirs)
    );
    // Where shipshape's time goes: the median of each stage's share.
    let mut shares: BTreeMap<usize, (&str, Vec<Duration>)> = BTreeMap::new();
    for s in &tally.shipshape {
        let mut previous = Duration::ZERO;
        for (i, (label, mark)) in s.marks().into_iter().enumerate() {
            if let Some(mark) = mark {
                let share = mark.saturating_sub(previous);
                shares.entry(i).or_insert((label, Vec::new())).1.push(share);
                previous = mark;
            }
        }
    }
    let stages: Vec<String> = shares
        .values()
        .filter_map(|(label, d)| Some(format!("{label} +{}", ms(median(d)?))))
        .collect();
    println!(
        "pod start, shipshape stages (median time of each step after the one before; from \
         the pod watch and Docker's container timestamps): {}",
        stages.join(", ")
    );
}

/// The benchmarks' names, for `--list` (which must not start a cluster).
fn list() {
    for side in ["shipshape", "docker"] {
        println!("pod_start/{side}: benchmark");
    }
}

fn bench(rt: &tokio::runtime::Runtime, ship: &Arc<Shipshape>, anchor: &DockerAnchor) {
    let mut criterion = shipshape_benches::container_criterion();
    let mut group = criterion.benchmark_group("pod_start");
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("shipshape", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let ship = ship.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let stages = ship.start_once().await.unwrap_or_else(|e| panic!("{e:#}"));
                    total += stages.ready;
                    tally().shipshape.push(stages);
                }
                total
            }
        });
    });
    group.bench_function("docker", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let anchor = anchor.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let elapsed = docker_once(&anchor)
                        .await
                        .unwrap_or_else(|e| panic!("{e:#}"));
                    total += elapsed;
                    tally().docker.push(elapsed);
                }
                total
            }
        });
    });
    group.finish();
    criterion.final_summary();
}

/// Everything between the cluster's start and its stop.
fn run(
    rt: &tokio::runtime::Runtime,
    cluster: &BenchCluster,
    docker: &Docker,
) -> anyhow::Result<()> {
    let ship = Arc::new(Shipshape::new(cluster.client()?, docker.clone()));
    let anchor = DockerAnchor::new(docker.clone(), BENCH);
    // One untimed start of each: the first of anything pays for cold caches, and a broken
    // setup fails here with its own message rather than inside criterion.
    let first_ship = rt
        .block_on(ship.start_once())
        .context("first shipshape start")?;
    let first_docker = rt
        .block_on(docker_once(&anchor))
        .context("first docker start")?;
    println!(
        "pod start: untimed first starts: shipshape {}, docker {}",
        ms(first_ship.ready),
        ms(first_docker)
    );
    bench(rt, &ship, &anchor);
    report();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        list();
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let docker = rt.block_on(connect_docker())?;
    let anchors_left = rt.block_on(remove_bench_containers(&docker, BENCH))?;
    let cluster = rt.block_on(BenchCluster::start(
        &docker,
        DIR_PREFIX,
        1,
        NodeLifecycleConfig::default(),
    ))?;
    let left = anchors_left + cluster.reaped();
    if left > 0 {
        println!("pod start: removed {left} containers an earlier, killed run left behind");
    }
    let docker_version = rt
        .block_on(docker.version())
        .ok()
        .and_then(|v| v.version)
        .unwrap_or_else(|| "unknown".to_owned());
    println!(
        "pod start: shipshape = in-process cluster (control plane + 1 node agent), node Ready \
         in {}; docker = engine {docker_version}, default bridge; image {IMAGE}",
        ms(cluster.started_in())
    );

    // The cluster stops whatever happens, panics included; the anchor removes its own
    // container after every start, failed or not, and here whatever is left.
    let outcome = cluster.run(&rt, |cluster| run(&rt, cluster, &docker));
    let cleaned = rt.block_on(remove_bench_containers(&docker, BENCH));
    outcome?;
    cleaned?;
    Ok(())
}
