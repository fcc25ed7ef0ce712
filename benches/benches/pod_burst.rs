//! Pod burst: sixty pods asked for at once on three nodes until all are Ready, against sixty
//! raw Docker starts of the same image issued at once, measured in the same run.
//!
//! - **shipshape**: an in-process local cluster (control plane, three node agents
//!   `node-1`..`node-3`, the service proxy, all at shipshape's defaults) on the local Docker
//!   engine. One trial creates a Deployment of [`PODS`] replicas of `shipshape/probe:v1`
//!   (readinessProbe `httpGet /ready :8080`, `periodSeconds: 1`) and stops the clock when
//!   the pod watch has seen the last of them Ready. The scheduler spreads them over the
//!   three nodes; every agent starts its pods side by side (a task per pod), each a pause
//!   sandbox and the app container.
//! - **docker** (the anchor): [`PODS`] tasks at once, each a `docker create` + `start` of
//!   the same image on the default bridge, then `GET /ready` every 2 ms until it answers 200
//!   (as `pod_start`'s anchor does); the clock stops when the last one answered.
//! - **docker pods**: the same, but each task starts what the reference's agent starts for
//!   a pod, by hand: a pause sandbox on the pods' network, then the app container in the
//!   sandbox's network namespace. This is the pod model's own cost on this engine; the
//!   ratio shipshape / docker pods is what shipshape adds on top of it.
//!
//! Same concurrency: all ask for all sixty at once, and the same Docker engine serialises
//! what it must. shipshape starts two containers per pod, the anchor one, and its probe runs
//! at the pod's period (a first probe before the server listens costs up to a second more).
//!
//! One trial of each side takes tens of seconds (the removal of sixty pods included), so
//! they run outside criterion's sampler: [`TRIALS`] of each, rotating which side goes
//! first, untimed clean-up in between (the Deployment deleted and its pods gone; the anchor's
//! containers force-removed). Printed: every trial, the medians, the ratio shipshape/docker
//! (goal ≤ [`GOAL`]), the ratio shipshape / docker pods, and for the shipshape trial nearest its median, when the pods were
//! created, bound, running and Ready (how many by each second): where the time went.
//! Under `cargo test --benches` one trial each runs, as a smoke test.
//!
//! Cleanup: the cluster removes its containers when stopped, panics included; the anchor's
//! containers carry `shipshape.bench=pod-burst` and the benchmark's pid and are removed at
//! the end and at the start of the next run.
//!
//! Run: `cargo bench -p shipshape-benches --bench pod_burst` (about two and a half minutes).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use shipshape::agent::runtime::POD_NETWORK;
use shipshape::controllers::node_lifecycle::NodeLifecycleConfig;
use shipshape::images::PAUSE_IMAGE;
use shipshape_benches::{
    BENCH_LABEL, BenchCluster, DockerAnchor, NAMESPACE, POD_BOUND, POD_READY, POD_RUNNING,
    PROBE_PORT, PROBE_READY_PATH, Seen, Tracker, app_of, connect_docker, measuring, median, ms,
    pod_progress_marks, probe_deployment, ratio, remove_bench_containers, secs, sorted_secs,
    start_until_ready,
};

/// The image both sides start.
const IMAGE: &str = "shipshape/probe:v1";
/// The value of `shipshape.bench` (and the Deployments' `app` prefix).
const BENCH: &str = "pod-burst";
/// The prefix of the cluster's data directory in `$TMPDIR`.
const DIR_PREFIX: &str = "shipshape-bench-pod-burst-";
/// Nodes in the cluster.
const NODES: u32 = 3;
/// Pods in one burst.
const PODS: i32 = 60;
/// Trials of each side when measuring.
const TRIALS: usize = 3;
/// The goal: shipshape's burst no slower than this times Docker's.
const GOAL: f64 = 1.1;
/// How long one burst (either side) may take.
const BURST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the pods of a deleted Deployment may take to go.
const GONE_TIMEOUT: Duration = Duration::from_secs(300);

/// One shipshape burst: its time, and each pod's path from the create call.
struct Burst {
    took: Duration,
    /// Per pod: created, bound, running, Ready (offsets from the create call).
    paths: Vec<[Option<Duration>; 4]>,
}

/// The cluster's side.
struct Shipshape {
    client: kube::Client,
    pods: Tracker<Pod>,
    next: usize,
}

impl Shipshape {
    async fn burst(&mut self) -> anyhow::Result<Burst> {
        self.next += 1;
        let name = format!("{BENCH}-{}", self.next);
        let body = probe_deployment(&name, BENCH, PODS, IMAGE)?;
        let start = Instant::now();
        let (took, _) =
            start_until_ready(&self.client, &self.pods, &body, BURST_TIMEOUT, GONE_TIMEOUT).await?;
        let after = |at: Option<Instant>| at.map(|t| t.saturating_duration_since(start));
        let paths: Vec<[Option<Duration>; 4]> = self
            .pods
            .snapshot()
            .iter()
            .filter(|p: &&Seen<Pod>| app_of(p) == Some(name.as_str()))
            .map(|p| {
                [
                    after(Some(p.first_seen)),
                    after(p.since(POD_BOUND)),
                    after(p.since(POD_RUNNING)),
                    after(p.since(POD_READY)),
                ]
            })
            .collect();
        // Every pod the Deployment ever had: a ReplicaSet that made more than its replicas
        // (say, for a set already being deleted) shows here.
        anyhow::ensure!(
            paths.len() == PODS.unsigned_abs() as usize,
            "Deployment {name} of {PODS} replicas had {} pods from its creation to its deletion",
            paths.len()
        );
        Ok(Burst { took, paths })
    }
}

/// One Docker burst: [`PODS`] starts at once (of a container, or with `pods` of a sandbox
/// and a container) until each answers; then all removed.
async fn docker_burst(anchor: &DockerAnchor, pods: bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let started = join_all((0..PODS).map(|_| async {
        if pods {
            let (took, ids) = anchor
                .start_pod_and_keep(
                    PAUSE_IMAGE,
                    POD_NETWORK,
                    IMAGE,
                    PROBE_PORT,
                    PROBE_READY_PATH,
                    BURST_TIMEOUT,
                )
                .await?;
            anyhow::Ok((took, ids.to_vec()))
        } else {
            let (took, id) = anchor
                .start_and_keep(IMAGE, PROBE_PORT, PROBE_READY_PATH, BURST_TIMEOUT)
                .await?;
            Ok((took, vec![id]))
        }
    }))
    .await;
    let took = start.elapsed();
    let mut failure = None;
    let mut ids = Vec::new();
    for outcome in started {
        match outcome {
            Ok((_, started)) => ids.extend(started),
            Err(error) => failure = Some(error),
        }
    }
    for removed in join_all(ids.iter().map(|id| anchor.remove(id))).await {
        removed?;
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(took),
    }
}

/// How many of the pods had reached each step by each second of the burst: where the time
/// went.
fn print_paths(burst: &Burst) {
    let last = burst
        .paths
        .iter()
        .flatten()
        .flatten()
        .max()
        .copied()
        .unwrap_or_default();
    println!(
        "pod burst of {} (shipshape's trial nearest its median), pods that had reached each \
         step by each second:",
        secs(burst.took)
    );
    println!("  second  created  bound  running  Ready");
    let seconds = last.as_secs() + 1;
    for second in 1..=seconds {
        let by = Duration::from_secs(second);
        let count = |step: usize| {
            burst
                .paths
                .iter()
                .filter(|p| p[step].is_some_and(|at| at <= by))
                .count()
        };
        println!(
            "  {second:>6}  {:>7}  {:>5}  {:>7}  {:>5}",
            count(0),
            count(1),
            count(2),
            count(3)
        );
    }
    let running_to_ready: Vec<Duration> = burst
        .paths
        .iter()
        .filter_map(|p| Some(p[3]?.saturating_sub(p[2]?)))
        .collect();
    let bound_to_running: Vec<Duration> = burst
        .paths
        .iter()
        .filter_map(|p| Some(p[2]?.saturating_sub(p[1]?)))
        .collect();
    println!(
        "  per pod, median: bound -> all containers running {}, running -> Ready {}",
        median(&bound_to_running).map_or_else(String::new, ms),
        median(&running_to_ready).map_or_else(String::new, ms),
    );
}

fn run(
    rt: &tokio::runtime::Runtime,
    cluster: &mut BenchCluster,
    anchor: &DockerAnchor,
) -> anyhow::Result<()> {
    let client = cluster.client()?;
    let pods = Tracker::start(
        Api::namespaced(client.clone(), NAMESPACE),
        watcher::Config::default().labels(&format!("{BENCH_LABEL}={BENCH}")),
        pod_progress_marks,
    );
    let mut ship = Shipshape {
        client,
        pods,
        next: 0,
    };
    let trials = if measuring() { TRIALS } else { 1 };
    if !measuring() {
        println!("pod burst: test mode, one trial of each (a smoke test, not a measurement)");
    }
    let mut bursts: Vec<Burst> = Vec::new();
    let mut docker: Vec<Duration> = Vec::new();
    let mut docker_pods: Vec<Duration> = Vec::new();
    for trial in 0..trials {
        // Each side goes first in turn, so drift and a warm engine favour none.
        for side in (0..3).map(|s| (s + trial) % 3) {
            let number = trial + 1;
            match side {
                0 => {
                    let burst = rt
                        .block_on(ship.burst())
                        .with_context(|| format!("shipshape burst {number}"))?;
                    println!(
                        "pod burst {number}/{trials}: shipshape {}",
                        secs(burst.took)
                    );
                    bursts.push(burst);
                }
                1 => {
                    let took = rt
                        .block_on(docker_burst(anchor, false))
                        .with_context(|| format!("docker burst {number}"))?;
                    println!("pod burst {number}/{trials}: docker {}", secs(took));
                    docker.push(took);
                }
                _ => {
                    let took = rt
                        .block_on(docker_burst(anchor, true))
                        .with_context(|| format!("docker pods burst {number}"))?;
                    println!("pod burst {number}/{trials}: docker pods {}", secs(took));
                    docker_pods.push(took);
                }
            }
        }
    }
    let took: Vec<Duration> = bursts.iter().map(|b| b.took).collect();
    let (Some(ours), Some(theirs), Some(pods)) =
        (median(&took), median(&docker), median(&docker_pods))
    else {
        return Ok(());
    };
    println!();
    println!(
        "== pod burst: {PODS} pods of one Deployment on {NODES} nodes until all are Ready / \
         {PODS} raw docker create+start at once until each /ready answers 200 =="
    );
    println!(
        "pod burst: shipshape median {} (trials: {}), docker median {} (trials: {}); \
         shipshape/docker = {:.2} (goal <= {GOAL})",
        secs(ours),
        sorted_secs(&took),
        secs(theirs),
        sorted_secs(&docker),
        ratio(ours, theirs),
    );
    println!(
        "pod burst: docker pods (a pause sandbox on the pods' network + the app in its network \
         namespace, by hand) median {} (trials: {}); docker pods/docker = {:.2}: the pod \
         model's own cost; shipshape/docker pods = {:.2}: what shipshape adds",
        secs(pods),
        sorted_secs(&docker_pods),
        ratio(pods, theirs),
        ratio(ours, pods),
    );
    println!(
        "pod burst: per pod, shipshape {}, docker pods {}, docker {} (the median burst over \
         {PODS})",
        ms(ours / PODS.unsigned_abs()),
        ms(pods / PODS.unsigned_abs()),
        ms(theirs / PODS.unsigned_abs()),
    );
    if let Some(typical) = bursts.iter().min_by_key(|b| b.took.abs_diff(ours)) {
        print_paths(typical);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        println!("pod_burst/shipshape_vs_docker: benchmark");
        return Ok(());
    }
    if !shipshape_benches::selected("pod_burst/shipshape_vs_docker") {
        return Ok(());
    }
    let whole = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let docker = rt.block_on(connect_docker())?;
    let anchors_left = rt.block_on(remove_bench_containers(&docker, BENCH))?;
    let cluster = rt.block_on(BenchCluster::start(
        &docker,
        DIR_PREFIX,
        NODES,
        NodeLifecycleConfig::default(),
    ))?;
    let left = anchors_left + cluster.reaped();
    if left > 0 {
        println!("pod burst: removed {left} containers an earlier, killed run left behind");
    }
    println!(
        "pod burst: shipshape = in-process cluster ({NODES} node agents), nodes Ready in {}; \
         docker = the same engine, default bridge; image {IMAGE}, {} cores",
        ms(cluster.started_in()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let anchor = DockerAnchor::new(docker.clone(), BENCH);
    let outcome = cluster.run(&rt, |cluster| run(&rt, cluster, &anchor));
    let cleaned = rt.block_on(remove_bench_containers(&docker, BENCH));
    outcome?;
    cleaned?;
    println!("pod burst: the whole run took {}", secs(whole.elapsed()));
    Ok(())
}
