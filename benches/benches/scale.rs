//! Scale: the control plane with a thousand nodes and ten thousand pods, on simulated
//! machines.
//!
//! The nodes are *hollow* ([`shipshape_benches::hollow`]): they register, heartbeat at the
//! agent's period and report every pod bound to them Running and Ready at once, all
//! through the API and without Docker, as kubemark's hollow kubelets do. The control plane
//! is a process of its own (this program started again as `shipshape control-plane`, at
//! its defaults), so its memory is its own; the hollow nodes and the load run in this
//! process. Everything is measured in one run, in this order:
//!
//! 1. **the store's durable write rate** (the anchor of the scheduling figure): 32 clients
//!    writing 256-byte values to a single-voter shipshape store of their own, each write
//!    acknowledged once fsynced — the ceiling of anything that writes once per pod;
//! 2. **control-plane memory at idle**: its resident set (`VmRSS`) with 3 hollow nodes, once
//!    they have been Ready for a few seconds (goal ≤ 64 MiB; k3s' server: 768–1,596 MB);
//! 3. **scheduling throughput** (`scale/schedule`): with 1,000 hollow nodes Ready, each
//!    iteration creates 1,000 pods through the API — 5 Deployments of 100 replicas and 500
//!    bare pods from 16 concurrent clients — and the clock runs from the first create until
//!    every one of them is bound and reported Running (a pod watch records both). Pods stay:
//!    criterion's warm-up and 10 samples leave 11,000 pods on the nodes. Goal ≥ 5,000 pods/s;
//!    printed next to the store's write rate, since every pod costs at least three durable
//!    writes (its create, its binding, its status); kube-scheduler's own scheduler_perf does
//!    about 1,150 pods/s on 5,000 nodes, Nomad's C1M reached 3,750 placements/s;
//! 4. **control-plane memory loaded**: its resident set with 1,000 nodes and those pods
//!    (goal ≤ 512 MiB), next to what it was with the nodes and no pods;
//! 5. **watch fan-out** (`scale/watch_fanout`): 1,000 concurrent pod watches on one
//!    namespace; each iteration creates one pod there (for no scheduler, so it stays as
//!    created) and waits until every watch has delivered it. Every delivery's delay, from
//!    just before the create call to its arrival, is kept (goal p99 ≤ 100 ms).
//!
//! Pictures: `<target>/criterion/scale/scheduling-throughput.svg` (pods bound and Running
//! per second over the whole scheduling run) and `watch-fanout-latency.svg` (the
//! distribution of the delivery delays), next to criterion's own report.
//!
//! `SHIPSHAPE_SCALE_NODES` and `SHIPSHAPE_SCALE_WATCHERS` make the run smaller (or larger)
//! for a quick look; the goals are for the defaults. `SHIPSHAPE_SCALE_PROFILER` names a
//! program to run the control plane under (`heaptrack`, say, with `--no-default-features`
//! so that the control plane allocates through the system's malloc, which heaptrack sees
//! into), for where its memory goes; its resident set is then the profiler's.
//!
//! Run: `cargo bench -p shipshape-benches --bench scale` (a few minutes).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use criterion::SamplingMode;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use plotters::prelude::*;
use serde_json::json;
use shipshape::agent::AgentConfig;
use shipshape::client::Credentials;
use shipshape_benches::hollow;
use shipshape_benches::{
    BenchDir, ShipshapeStore, Target, measuring, median, ms, node_ready_status, percentile,
    run_writes, selected, value_of_len,
};
use tokio::sync::{Notify, watch};

/// Hollow nodes in the loaded phases.
const NODES: usize = 1000;
/// Pods each scheduling iteration creates: half in Deployments, half bare.
const BATCH: usize = 1000;
/// Deployments per iteration (the other half of the batch is bare pods).
const DEPLOYMENTS: usize = 5;
/// Concurrent clients creating the bare pods.
const CREATORS: usize = 16;
/// Concurrent pod watches in the fan-out measurement.
const WATCHERS: usize = 1000;
/// The namespace of the scheduled pods, and the one the watches follow.
const SCALE_NS: &str = "scale";
const FANOUT_NS: &str = "fanout";
/// How long one phase may take before the run fails.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
/// The goals, from the issue that asked for this benchmark.
const GOAL_PODS_PER_SEC: f64 = 5000.0;
const GOAL_IDLE_MIB: f64 = 64.0;
const GOAL_LOADED_MIB: f64 = 512.0;
const GOAL_WATCH_P99: Duration = Duration::from_millis(100);

/// A count from the environment, else the default.
fn count_from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// Everything measured, for the report.
#[derive(Default)]
struct Tally {
    store_writes_per_sec: Option<f64>,
    idle_rss: Option<u64>,
    /// With every node, before any pod.
    nodes_rss: Option<(u64, usize)>,
    loaded_rss: Option<(u64, usize, usize)>,
    /// Each timed scheduling iteration: pods and wall time.
    batches: Vec<(usize, Duration)>,
    /// When each pod turned Running, from the first create of the run.
    running_at: Vec<Duration>,
    deliveries: Vec<Duration>,
}
static TALLY: Mutex<Option<Tally>> = Mutex::new(None);

fn tally<T>(f: impl FnOnce(&mut Tally) -> T) -> T {
    let mut guard = TALLY.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(Tally::default))
}

/// The control plane, a child process that stops when its stdin closes (this process
/// ending, however it ends, closes it).
struct ControlPlaneProcess {
    child: Child,
    _stdin: ChildStdin,
    credentials: Credentials,
    _dir: BenchDir,
}

/// The prefix of the control plane's data directories in `$TMPDIR`.
const DIR_PREFIX: &str = "shipshape-bench-scale-";

impl ControlPlaneProcess {
    fn start() -> anyhow::Result<ControlPlaneProcess> {
        // What killed runs left (their control planes ended with them: stdin closed).
        for dead in BenchDir::dead(DIR_PREFIX) {
            let _ = std::fs::remove_dir_all(dead);
        }
        let dir = BenchDir::new(DIR_PREFIX)?;
        let exe = std::env::current_exe().context("finding this benchmark's binary")?;
        // A profiler to run the control plane under, to see where its time or memory goes
        // (`SHIPSHAPE_SCALE_PROFILER=heaptrack`, for one).
        let mut command = match std::env::var_os("SHIPSHAPE_SCALE_PROFILER") {
            Some(profiler) => {
                let mut command = Command::new(profiler);
                command.arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut child = command
            .arg("control-plane")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--stop-with-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the control plane")?;
        let stdin = child.stdin.take().context("the control plane's stdin")?;
        let stdout = child.stdout.take().context("the control plane's stdout")?;
        let mut server = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading the control plane's output")?;
            if let Some(url) = line.strip_prefix("apiserver: ") {
                server = Some(url.trim().to_owned());
                break;
            }
        }
        let server = server.ok_or_else(|| anyhow!("the control plane ended before serving"))?;
        let read = |name: &str| {
            std::fs::read_to_string(dir.path().join(name))
                .with_context(|| format!("reading the control plane's {name}"))
        };
        let credentials = Credentials {
            server,
            token: read("token")?.trim().to_owned(),
            ca_pem: read("ca.crt")?,
        };
        Ok(ControlPlaneProcess {
            child,
            _stdin: stdin,
            credentials,
            _dir: dir,
        })
    }

    /// Its resident set, in bytes.
    fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading the control plane's /proc status")?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in the control plane's /proc status")?;
        Ok(kib * 1024)
    }
}

impl Drop for ControlPlaneProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Hollow nodes `first..first+count`, running until `stop` turns true.
fn start_hollow_nodes(
    client: &kube::Client,
    first: usize,
    count: usize,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let configs = (first..first + count)
        .map(|i| {
            let mut config =
                AgentConfig::new(&format!("hollow-{i:04}"), "scale", std::env::temp_dir(), "");
            config.cpu = "8".into();
            config.memory = "32Gi".into();
            config
        })
        .collect();
    let (client, stop) = (client.clone(), stop.clone());
    tokio::spawn(async move { Ok(hollow::run(client, configs, stop).await?) })
}

/// Waits until `count` nodes are Ready.
async fn wait_ready_nodes(client: &kube::Client, count: usize) -> anyhow::Result<Duration> {
    let nodes: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let listed = nodes.list(&ListParams::default()).await?;
        let ready = listed
            .items
            .iter()
            .filter(|n| node_ready_status(n) == Some("True"))
            .count();
        if ready >= count {
            return Ok(start.elapsed());
        }
        if start.elapsed() > PHASE_TIMEOUT {
            bail!("only {ready} of {count} nodes Ready after {PHASE_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Follows every pod of [`SCALE_NS`], recording which are Running, per batch.
struct PodBook {
    /// Whether each pod (by uid) has been seen Running.
    pods: Mutex<HashMap<String, bool>>,
    running_per_batch: Mutex<BTreeMap<usize, usize>>,
    changed: Notify,
    run_start: Instant,
}

impl PodBook {
    fn start(client: &kube::Client) -> Arc<PodBook> {
        let book = Arc::new(PodBook {
            pods: Mutex::new(HashMap::new()),
            running_per_batch: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            run_start: Instant::now(),
        });
        let api: Api<Pod> = Api::namespaced(client.clone(), SCALE_NS);
        let follower = book.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(pod)) = events.next().await {
                follower.saw(&pod);
            }
        });
        book
    }

    fn saw(&self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let batch = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("batch"))
            .and_then(|b| b.parse().ok())
            .unwrap_or(usize::MAX);
        let bound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
        let running =
            bound && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = pods.entry(uid).or_insert(false);
        if running && !*seen {
            *seen = true;
            *self
                .running_per_batch
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(batch)
                .or_default() += 1;
            let at = self.run_start.elapsed();
            tally(|t| t.running_at.push(at));
            self.changed.notify_waiters();
        }
    }

    fn running(&self, batch: usize) -> usize {
        self.running_per_batch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&batch)
            .copied()
            .unwrap_or(0)
    }

    async fn wait_running(&self, batch: usize, count: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        loop {
            let changed = self.changed.notified();
            if self.running(batch) >= count {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline.into(), changed)
                .await
                .is_err()
            {
                bail!(
                    "only {} of {count} pods of batch {batch} Running after {PHASE_TIMEOUT:?}",
                    self.running(batch)
                );
            }
        }
    }
}

/// A pod of the scheduling load: small requests, so the nodes' room is not the limit.
fn pod_template(batch: usize, app: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app, "batch": batch.to_string()}},
        "spec": {"containers": [{
            "name": "app", "image": "shipshape/probe:v1", "imagePullPolicy": "Never",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        }]},
    })
}

/// One scheduling iteration: creates a batch and waits until all of it is Running.
async fn schedule_batch(
    client: &kube::Client,
    book: &PodBook,
    batch: usize,
) -> anyhow::Result<Duration> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), SCALE_NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), SCALE_NS);
    let in_deployments = BATCH / 2 / DEPLOYMENTS * DEPLOYMENTS;
    let bare = BATCH - in_deployments;
    let start = Instant::now();
    let deployment_creates = (0..DEPLOYMENTS).map(|d| {
        let app = format!("b{batch}-d{d}");
        let body = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": app},
            "spec": {
                "replicas": in_deployments / DEPLOYMENTS,
                "selector": {"matchLabels": {"app": app}},
                "template": pod_template(batch, &app),
            },
        });
        let deployments = deployments.clone();
        async move {
            let body: Deployment = serde_json::from_value(body)?;
            deployments.create(&PostParams::default(), &body).await?;
            anyhow::Ok(())
        }
    });
    let bare_creates = (0..CREATORS).map(|c| {
        let pods = pods.clone();
        async move {
            for i in (c..bare).step_by(CREATORS) {
                let mut body = pod_template(batch, &format!("b{batch}-bare"));
                body["apiVersion"] = json!("v1");
                body["kind"] = json!("Pod");
                body["metadata"]["name"] = json!(format!("b{batch}-p{i}"));
                let body: Pod = serde_json::from_value(body)?;
                pods.create(&PostParams::default(), &body).await?;
            }
            anyhow::Ok(())
        }
    });
    let (made, created) = futures::join!(
        futures::future::try_join_all(deployment_creates),
        futures::future::try_join_all(bare_creates)
    );
    made.context("creating the batch's Deployments")?;
    created.context("creating the batch's bare pods")?;
    book.wait_running(batch, BATCH).await?;
    Ok(start.elapsed())
}

async fn ensure_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let body: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match namespaces.create(&PostParams::default(), &body).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// `count` watches on the pods of [`FANOUT_NS`]; each reports the name of every pod it sees
/// added, with when it arrived.
async fn open_watchers(
    client: &kube::Client,
    count: usize,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), FANOUT_NS);
    let revision = pods
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let opened = futures::stream::iter(0..count)
        .map(|_| {
            let (pods, revision, tx) = (pods.clone(), revision.clone(), tx.clone());
            async move {
                let params = WatchParams::default().timeout(290);
                let mut events = pods.watch(&params, &revision).await?.boxed();
                tokio::spawn(async move {
                    while let Ok(Some(event)) = events.try_next().await {
                        if let WatchEvent::Added(pod) = event {
                            let name = pod.metadata.name.unwrap_or_default();
                            let _ = tx.send((name, Instant::now()));
                        }
                    }
                });
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await;
    opened.context("opening the watches")?;
    Ok(rx)
}

/// One fan-out iteration: creates a pod and waits until every watch delivered it; returns
/// the slowest delivery.
async fn fan_out_once(
    client: &kube::Client,
    deliveries: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    watchers: usize,
    n: usize,
) -> anyhow::Result<Duration> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), FANOUT_NS);
    let name = format!("fanout-{n}");
    let body: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"schedulerName": "nobody", "containers": [{"name": "app", "image": "shipshape/probe:v1"}]},
    }))?;
    let sent = Instant::now();
    pods.create(&PostParams::default(), &body).await?;
    let mut delays = Vec::with_capacity(watchers);
    while delays.len() < watchers {
        let next = tokio::time::timeout(PHASE_TIMEOUT, deliveries.recv()).await;
        let Ok(Some((seen, at))) = next else {
            bail!(
                "only {} of {watchers} watches delivered pod {name}",
                delays.len()
            );
        };
        if seen == name {
            delays.push(at.saturating_duration_since(sent));
        }
    }
    let slowest = delays.iter().max().copied().unwrap_or_default();
    tally(|t| t.deliveries.extend(delays));
    Ok(slowest)
}

/// Where criterion writes its report: `$CRITERION_HOME`, else `<target>/criterion`.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Path::new(&target).join("criterion");
    }
    // This binary is <target>/<profile>/deps/scale-<hash>.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// Draws pods Running per second over the scheduling run.
fn plot_throughput(path: &Path, running_at: &[Duration]) -> anyhow::Result<()> {
    let end = running_at.iter().max().map_or(1.0, Duration::as_secs_f64);
    let buckets = (end * 4.0).ceil().max(1.0) as usize;
    let mut per_bucket = vec![0u32; buckets + 1];
    for at in running_at {
        per_bucket[(at.as_secs_f64() * 4.0) as usize] += 1;
    }
    let points: Vec<(f64, f64)> = per_bucket
        .iter()
        .enumerate()
        .map(|(i, n)| (i as f64 / 4.0, f64::from(*n) * 4.0))
        .collect();
    let top = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Pods bound and Running per second ({} pods, 1/4 s buckets)",
                running_at.len()
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end.max(0.25), 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first create")
        .y_desc("pods/s")
        .draw()?;
    chart.draw_series(LineSeries::new(points, &BLUE))?;
    root.present()?;
    Ok(())
}

/// Draws the distribution of watch delivery delays (cumulative).
fn plot_latency(path: &Path, deliveries: &[Duration]) -> anyhow::Result<()> {
    let mut millis: Vec<f64> = deliveries
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    millis.sort_by(f64::total_cmp);
    let n = millis.len().max(1) as f64;
    let points: Vec<(f64, f64)> = millis
        .iter()
        .enumerate()
        .map(|(i, m)| (*m, (i + 1) as f64 / n * 100.0))
        .collect();
    let right = millis.last().copied().unwrap_or(1.0).max(1.0) * 1.05;
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Watch delivery delay, {} deliveries (cumulative)",
                millis.len()
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..right, 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("ms from the create call to the watch event")
        .y_desc("% of deliveries at or under")
        .draw()?;
    chart.draw_series(LineSeries::new(points, &BLUE))?;
    let goal = GOAL_WATCH_P99.as_secs_f64() * 1000.0;
    if goal <= right {
        chart.draw_series(LineSeries::new([(goal, 0.0), (goal, 100.0)], &RED))?;
    }
    root.present()?;
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn report(nodes: usize, watchers: usize) {
    let tally = tally(std::mem::take);
    println!();
    println!("== scale: {nodes} hollow nodes, the control plane in a process of its own ==");
    if !measuring() {
        println!("(test mode: each measurement ran once; a smoke test, not a measurement)");
    }
    if let Some(rate) = tally.store_writes_per_sec {
        println!(
            "store durable writes (32 clients, 256-byte values, fsync per acknowledged batch): {rate:.0} writes/s"
        );
    }
    if let Some(rss) = tally.idle_rss {
        println!(
            "control-plane RSS at idle with 3 nodes: {:.1} MiB (goal <= {GOAL_IDLE_MIB:.0} MiB: {})",
            mib(rss),
            verdict(mib(rss) <= GOAL_IDLE_MIB)
        );
    }
    if let Some((rss, nodes)) = tally.nodes_rss {
        println!(
            "control-plane RSS with {nodes} nodes and no pods: {:.1} MiB",
            mib(rss)
        );
    }
    let rates: Vec<f64> = tally
        .batches
        .iter()
        .map(|(pods, d)| *pods as f64 / d.as_secs_f64().max(f64::MIN_POSITIVE))
        .collect();
    let times: Vec<Duration> = tally.batches.iter().map(|(_, d)| *d).collect();
    if let Some(mid) = median(&times) {
        let rate = BATCH as f64 / mid.as_secs_f64().max(f64::MIN_POSITIVE);
        let rendered: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "scheduling throughput: median {rate:.0} pods/s ({BATCH} pods created, bound and Running in {}; goal >= {GOAL_PODS_PER_SEC:.0}: {}) [every batch: {}]",
            ms(mid),
            verdict(rate >= GOAL_PODS_PER_SEC),
            rendered.join(" ")
        );
        if let Some(store) = tally.store_writes_per_sec {
            println!(
                "scheduling throughput / store durable write rate: {:.3} (each pod is at least 3 writes: create, binding, status)",
                rate / store
            );
        }
    }
    if let Some((rss, nodes, pods)) = tally.loaded_rss {
        println!(
            "control-plane RSS with {nodes} nodes and {pods} pods: {:.1} MiB (goal <= {GOAL_LOADED_MIB:.0} MiB: {})",
            mib(rss),
            verdict(mib(rss) <= GOAL_LOADED_MIB)
        );
    }
    if let (Some(p50), Some(p99)) = (
        percentile(&tally.deliveries, 0.5),
        percentile(&tally.deliveries, 0.99),
    ) {
        println!(
            "watch fan-out to {watchers} watches: p50 {}, p99 {}, max {} over {} deliveries (goal p99 <= {}: {})",
            ms(p50),
            ms(p99),
            ms(tally.deliveries.iter().max().copied().unwrap_or_default()),
            tally.deliveries.len(),
            ms(GOAL_WATCH_P99),
            verdict(p99 <= GOAL_WATCH_P99)
        );
    }
    let dir = criterion_dir().join("scale");
    let _ = std::fs::create_dir_all(&dir);
    for (name, drawn) in [
        (
            "scheduling-throughput.svg",
            (!tally.running_at.is_empty()).then(|| {
                plot_throughput(&dir.join("scheduling-throughput.svg"), &tally.running_at)
            }),
        ),
        (
            "watch-fanout-latency.svg",
            (!tally.deliveries.is_empty())
                .then(|| plot_latency(&dir.join("watch-fanout-latency.svg"), &tally.deliveries)),
        ),
    ] {
        match drawn {
            Some(Ok(())) => println!("picture: {}", dir.join(name).display()),
            Some(Err(e)) => println!("picture {name} not drawn: {e:#}"),
            None => {}
        }
    }
}

fn list() {
    for id in ["scale/schedule", "scale/watch_fanout"] {
        println!("{id}: benchmark");
    }
}

fn main() -> anyhow::Result<()> {
    // The control plane is this program, started again.
    shipshape_benches::run_as_shipshape_if_asked();
    if std::env::args().any(|a| a == "--list") {
        list();
        return Ok(());
    }
    let schedule = selected("scale/schedule");
    let fanout = selected("scale/watch_fanout");
    if !schedule && !fanout {
        return Ok(());
    }
    let nodes = count_from_env("SHIPSHAPE_SCALE_NODES", NODES);
    let watchers = count_from_env("SHIPSHAPE_SCALE_WATCHERS", WATCHERS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    // 1. The store's own write rate, on a quiet machine.
    let store_rate = rt.block_on(async {
        let store = ShipshapeStore::open().await?;
        let target = Target::Shipshape(store.store.clone());
        let value = value_of_len(256);
        let (clients, each) = (32, 100);
        let took = run_writes(&target, clients, each, &value).await?;
        store.shutdown().await;
        anyhow::Ok((clients as u64 * each) as f64 / took.as_secs_f64())
    })?;
    tally(|t| t.store_writes_per_sec = Some(store_rate));

    let control_plane = ControlPlaneProcess::start()?;
    // Clients and tasks are made on the runtime, outside `block_on` too.
    let _entered = rt.enter();
    let client = control_plane.credentials.client()?;
    let (stop, stopped) = watch::channel(false);

    // 2. Idle, with 3 nodes.
    let _few = start_hollow_nodes(&client, 0, 3, &stopped);
    rt.block_on(wait_ready_nodes(&client, 3))?;
    std::thread::sleep(Duration::from_secs(5));
    tally(|t| t.idle_rss = control_plane.rss().ok());

    // 3. The other nodes, then the scheduling load.
    let _rest = start_hollow_nodes(&client, 3, nodes - 3, &stopped);
    let registered = rt.block_on(wait_ready_nodes(&client, nodes))?;
    println!(
        "scale: {nodes} hollow nodes Ready in {} (store: {store_rate:.0} durable writes/s)",
        ms(registered)
    );
    std::thread::sleep(Duration::from_secs(3));
    tally(|t| t.nodes_rss = control_plane.rss().ok().map(|r| (r, nodes)));
    rt.block_on(ensure_namespace(&client, SCALE_NS))?;
    rt.block_on(ensure_namespace(&client, FANOUT_NS))?;
    let mut criterion = criterion::Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1))
        .configure_from_args();
    let mut group = criterion.benchmark_group("scale");
    group.sampling_mode(SamplingMode::Flat);
    let mut batch = 0;
    if schedule {
        let book = PodBook::start(&client);
        group.bench_function("schedule", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (client, book) = (client.clone(), book.clone());
                let first = batch;
                batch += usize::try_from(iters).unwrap_or(1);
                async move {
                    let mut total = Duration::ZERO;
                    for n in first..first + usize::try_from(iters).unwrap_or(1) {
                        let took = schedule_batch(&client, &book, n)
                            .await
                            .unwrap_or_else(|e| panic!("{e:#}"));
                        tally(|t| t.batches.push((BATCH, took)));
                        total += took;
                    }
                    total
                }
            });
        });
        // 4. Memory, loaded.
        std::thread::sleep(Duration::from_secs(3));
        let pods = book
            .pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        tally(|t| t.loaded_rss = control_plane.rss().ok().map(|r| (r, nodes, pods)));
    }
    if fanout {
        // 5. Watch fan-out.
        let mut deliveries = rt.block_on(open_watchers(&client, watchers))?;
        let mut n = 0;
        group.bench_function("watch_fanout", |b| {
            b.iter_custom(|iters| {
                let mut slowest = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let took = rt
                        .block_on(fan_out_once(&client, &mut deliveries, watchers, n))
                        .unwrap_or_else(|e| panic!("{e:#}"));
                    slowest += took;
                }
                slowest
            });
        });
    }
    group.finish();
    criterion.final_summary();
    let _ = stop.send(true);
    report(nodes, watchers);
    drop(control_plane);
    Ok(())
}
