//! Service proxy: the same HTTP load sent straight to a pod and through shipshape's service
//! proxy, in the same run.
//!
//! Setup: an in-process local cluster (control plane, one node agent and the service proxy
//! on the local Docker engine) runs a one-replica Deployment of `shipshape/probe:v1`
//! (readinessProbe `httpGet /ready :8080`, `periodSeconds: 1`) and a `type: NodePort`
//! Service selecting it (port 80 → targetPort 8080). The benchmark waits until the pod is
//! Ready, the Service's Endpoints list it, and `GET /healthz` through the node port answers
//! 200, and checks that what answers on the node port is this run's pod (`GET /` names the
//! pod's hostname), not another process holding the same port.
//!
//! - **direct**: `http://<pod IP>:8080/healthz`, from the host over the pod network's bridge.
//! - **proxy**: `http://127.0.0.1:<nodePort>/healthz`; the proxy accepts each TCP
//!   connection and opens one upstream connection to the (only) ready endpoint, so a
//!   keep-alive client connection stays on one backend connection, then copies bytes both
//!   ways.
//!
//! Load: [`CLIENTS`] concurrent clients, each with its own keep-alive HTTP/1.1 connection
//! (hyper's connection API, `TCP_NODELAY`), sending `GET /healthz` back to back; each
//! request's latency (send until the whole body is read) is kept. Connections are opened
//! and each sends one request before the clock starts, so neither the TCP handshake, the
//! proxy's upstream connect, nor the probe's accept loop (it polls every 5 ms when idle) is
//! timed. The load runs on its own tokio runtime, apart from the cluster's (where the
//! proxy runs), as a client process would.
//!
//! Fairness: both paths end at the same server. The probe is a thread-per-connection
//! server on the standard library (blocking reads, one response per `write`), so both paths
//! share its cost, its threads, and the bridge between the host and the pod; the proxy
//! path adds a loopback hop and the proxy's copying. On a small machine everything (load,
//! proxy, probe, the kernel's bridge) competes for the same cores, so the proxy's CPU is
//! paid out of the throughput: that is the cost a userspace proxy has on a busy node.
//!
//! Measured twice:
//! 1. criterion groups `service_proxy/direct` and `service_proxy/proxy` (`iter_custom`; one
//!    iteration is one request, shared by the clients, so criterion's time per iteration
//!    is the inverse of the throughput and its `thrpt` is requests per second). Criterion
//!    runs all of one group, then all of the other.
//! 2. The headline: [`ROUNDS`] rounds alternating the two paths (direct first in even
//!    rounds, proxy first in odd ones), each path loaded for [`ROUND_TIME`] per round, so
//!    background noise and drift hit both alike; then each path once more with a single
//!    client for [`SINGLE_TIME`] (unloaded latency: the hop itself, without queueing).
//!    Printed: throughput of each (all requests / all time), the ratio proxy/direct (goal
//!    ≥ [`THROUGHPUT_GOAL`]; Kubernetes' old userspace proxy kept about 36%), the median
//!    latency of each and the difference (goal ≤ [`ADDED_LATENCY_GOAL_US`] µs), p90/p99,
//!    every round's ratio, the single-client figures, and criterion's runs as a cross-check.
//!    Then where the CPU goes, per request of each path's loaded rounds (from `/proc`): the
//!    load's threads, the rest of this process (the proxy), and the rest of the machine (the
//!    pod's server, the kernel's network stack), with how busy the machine was. When every
//!    core is busy, the throughput ratio is about the inverse ratio of these totals: this
//!    is what the proxy costs, measured rather than guessed.
//!    With 8 clients on few cores, the loaded latency is mostly queueing, so the added
//!    median follows the throughput ratio; the single-client line shows the hop alone.
//!
//! Cleanup: the cluster removes its containers when stopped, which happens whatever
//! happens (panics included). At start, clusters of killed runs
//! (`$TMPDIR/shipshape-bench-service-proxy-*` whose process is gone) are reaped.
//!
//! Run: `cargo bench -p shipshape-benches --bench service_proxy` (under a minute).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use shipshape::controllers::node_lifecycle::NodeLifecycleConfig;
use shipshape_benches::{
    BenchCluster, NAMESPACE, PROBE_PORT, connect_docker, measuring, median, percentile, pod_ready,
    probe_deployment, selected,
};
use tokio::net::TcpStream;

/// The image behind the Service.
const IMAGE: &str = "shipshape/probe:v1";
/// What the load asks for.
const PATH: &str = "/healthz";
/// The Deployment's and the Service's name, and the pods' `app` label.
const NAME: &str = "service-proxy";
/// The value of `shipshape.bench` on what this benchmark creates.
const BENCH: &str = "service-proxy";
/// The prefix of the cluster's data directory in `$TMPDIR`.
const DIR_PREFIX: &str = "shipshape-bench-service-proxy-";
/// How long the pod, its endpoint and the proxy's listener may take to be there.
const SETUP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one request may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Concurrent clients, each with its own keep-alive connection.
const CLIENTS: usize = 8;
/// Alternating rounds for the headline figures.
const ROUNDS: usize = 8;
/// How long each path is loaded per round.
const ROUND_TIME: Duration = Duration::from_secs(1);
/// How long each path runs with one client per round.
const SINGLE_TIME: Duration = Duration::from_millis(250);
/// The least throughput proxy/direct the design aims for.
const THROUGHPUT_GOAL: f64 = 0.9;
/// The most median latency (µs) the proxy may add.
const ADDED_LATENCY_GOAL_US: f64 = 50.0;

/// The two paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct = 0,
    Proxy = 1,
}

impl Path {
    fn id(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Proxy => "proxy",
        }
    }
}

/// Where each path sends its requests.
#[derive(Debug, Clone, Copy)]
struct Targets {
    direct: SocketAddr,
    proxy: SocketAddr,
}

impl Targets {
    fn of(&self, path: Path) -> SocketAddr {
        match path {
            Path::Direct => self.direct,
            Path::Proxy => self.proxy,
        }
    }
}

/// When a load stops.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// After this many requests in all (criterion's iterations).
    Requests(u64),
    /// When this much time has passed (each client finishes its request in flight).
    Elapsed(Duration),
}

/// What one or more loads did.
#[derive(Debug, Default, Clone)]
struct Run {
    requests: u64,
    /// From the clock's start until the last client's last answer.
    wall: Duration,
    /// Every request's latency.
    latencies: Vec<Duration>,
}

impl Run {
    fn add(&mut self, other: Run) {
        self.requests += other.requests;
        self.wall += other.wall;
        self.latencies.extend(other.latencies);
    }

    fn per_second(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// CPU time spent so far, in clock ticks (`/proc`): by the whole machine (every core's busy
/// time, the kernel's network work included), by this process's load threads (named
/// `load`), and by the rest of this process (the cluster: the service proxy, and the
/// control plane and node agent, idle during the load).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    machine: u64,
    load: u64,
    cluster: u64,
    /// Of `cluster`, the time in the kernel (system calls, and the TCP work they do).
    cluster_kernel: u64,
}

impl Cpu {
    fn now() -> anyhow::Result<Cpu> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let busy: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .context("no cpu line in /proc/stat")?
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: all but idle and iowait.
        let machine = busy
            .iter()
            .enumerate()
            .filter(|(i, _)| ![3, 4].contains(i) && *i < 8)
            .map(|(_, v)| v)
            .sum();
        let (mut load, mut cluster, mut cluster_kernel) = (0, 0, 0);
        for task in
            std::fs::read_dir("/proc/self/task").context("listing this process's threads")?
        {
            let dir = task?.path();
            // A thread that ended between the listing and the read is simply not counted.
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(dir.join("comm")),
                std::fs::read_to_string(dir.join("stat")),
            ) else {
                continue;
            };
            // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
            let fields: Vec<u64> = stat
                .rsplit_once(')')
                .map(|(_, rest)| {
                    rest.split_whitespace()
                        .map(|f| f.parse().unwrap_or(0))
                        .collect()
                })
                .unwrap_or_default();
            let user = fields.get(11).copied().unwrap_or(0);
            let kernel = fields.get(12).copied().unwrap_or(0);
            if comm.trim() == "load" {
                load += user + kernel;
            } else {
                cluster += user + kernel;
                cluster_kernel += kernel;
            }
        }
        Ok(Cpu {
            machine,
            load,
            cluster,
            cluster_kernel,
        })
    }

    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            machine: self.machine.saturating_sub(earlier.machine),
            load: self.load.saturating_sub(earlier.load),
            cluster: self.cluster.saturating_sub(earlier.cluster),
            cluster_kernel: self.cluster_kernel.saturating_sub(earlier.cluster_kernel),
        }
    }

    fn add(&mut self, other: Cpu) {
        self.machine += other.machine;
        self.load += other.load;
        self.cluster += other.cluster;
        self.cluster_kernel += other.cluster_kernel;
    }
}

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Criterion's runs, per path (warm-up included): requests and time only.
static CRITERION: Mutex<[(u64, Duration); 2]> = Mutex::new([(0, Duration::ZERO); 2]);

type Sender = http1::SendRequest<Empty<Bytes>>;

/// One `GET /healthz` on `sender`'s connection; fails unless it answers 200.
async fn get(sender: &mut Sender, host: &HeaderValue) -> anyhow::Result<()> {
    sender.ready().await.context("the connection closed")?;
    let request = Request::get(PATH)
        .header(HOST, host.clone())
        .body(Empty::new())?;
    let response = sender
        .send_request(request)
        .await
        .context("request failed")?;
    let status = response.status();
    // Read the whole body so the connection is ready for the next request.
    response
        .into_body()
        .collect()
        .await
        .context("reading the answer")?;
    if status != StatusCode::OK {
        bail!("GET {PATH} answered {status}");
    }
    Ok(())
}

/// Opens a keep-alive HTTP/1.1 connection to `target` and sends one untimed request on it.
async fn connect(target: SocketAddr, host: &HeaderValue) -> anyhow::Result<Sender> {
    let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| anyhow!("connecting to {target} timed out"))?
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {target}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    tokio::time::timeout(REQUEST_TIMEOUT, get(&mut sender, host))
        .await
        .map_err(|_| anyhow!("the first request to {target} timed out"))?
        .with_context(|| format!("the first request to {target}"))?;
    Ok(sender)
}

/// Runs `clients` clients against `target` until `until`; any failed request fails it.
async fn load(target: SocketAddr, clients: usize, until: Until) -> anyhow::Result<Run> {
    let host = HeaderValue::from_str(&target.to_string())?;
    let mut senders = Vec::with_capacity(clients);
    for _ in 0..clients {
        senders.push(connect(target, &host).await?);
    }
    let tickets = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let (host, tickets) = (host.clone(), tickets.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let more = match until {
                        Until::Requests(n) => tickets.fetch_add(1, Ordering::Relaxed) < n,
                        Until::Elapsed(d) => start.elapsed() < d,
                    };
                    if !more {
                        break;
                    }
                    let sent = Instant::now();
                    tokio::time::timeout(REQUEST_TIMEOUT, get(&mut sender, &host))
                        .await
                        .map_err(|_| anyhow!("a request timed out after {REQUEST_TIMEOUT:?}"))??;
                    latencies.push(sent.elapsed());
                }
                anyhow::Ok((latencies, Instant::now()))
            })
        })
        .collect();
    let mut run = Run::default();
    let mut last = start;
    for task in tasks {
        let (latencies, done) = task
            .await
            .context("a load client panicked")?
            .with_context(|| format!("load on {target}"))?;
        last = last.max(done);
        run.latencies.extend(latencies);
    }
    run.requests = run.latencies.len() as u64;
    run.wall = last - start;
    Ok(run)
}

fn service() -> anyhow::Result<Service> {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"shipshape.bench": BENCH}},
        "spec": {
            "type": "NodePort",
            "selector": {"app": NAME},
            "ports": [{"port": 80, "targetPort": PROBE_PORT, "protocol": "TCP"}],
        },
    }))
    .context("building the Service")
}

/// A one-shot `GET path` on a fresh connection: the status and body.
async fn fetch(target: SocketAddr, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let attempt = async {
        let stream = TcpStream::connect(target).await?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::get(path)
            .header(HOST, target.to_string())
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .map_err(|_| anyhow!("no answer within 1 s"))?
}

/// The `hostname` the probe at `target` reports (`GET /`).
async fn hostname(target: SocketAddr) -> anyhow::Result<String> {
    let (status, body) = fetch(target, "/").await?;
    let reply: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("GET / answered {status}"))?;
    reply["hostname"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("GET / answered {status} without a hostname"))
}

/// Creates the Deployment and the Service and waits until both paths answer; returns them.
async fn setup(client: &kube::Client) -> anyhow::Result<Targets> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), NAMESPACE);
    deployments
        .create(
            &PostParams::default(),
            &probe_deployment(NAME, BENCH, 1, IMAGE)?,
        )
        .await
        .context("creating the Deployment")?;
    let created = services
        .create(&PostParams::default(), &service()?)
        .await
        .context("creating the Service")?;
    let node_port = created
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.first())
        .and_then(|p| p.node_port)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| anyhow!("the NodePort Service got no node port"))?;
    let proxy = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), node_port);

    // Ready pod with an IP → listed in the Endpoints → the node port answers 200.
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut seen = "nothing yet".to_owned();
    let direct = loop {
        if Instant::now() > deadline {
            bail!("the Service was not reachable within {SETUP_TIMEOUT:?}; last seen: {seen}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let listed = pods
            .list(&ListParams::default().labels(&format!("app={NAME}")))
            .await
            .context("listing pods")?;
        let ip = listed
            .items
            .iter()
            .filter(|p| pod_ready(p))
            .find_map(|p| p.status.as_ref()?.pod_ip.clone());
        let Some(ip) = ip else {
            seen = format!("{} pod(s), none Ready with an IP", listed.items.len());
            continue;
        };
        let ip: IpAddr = ip.parse().with_context(|| format!("pod IP {ip}"))?;
        let listed_in_endpoints = endpoints
            .get_opt(NAME)
            .await
            .context("reading the Endpoints")?
            .and_then(|e| e.subsets)
            .into_iter()
            .flatten()
            .flat_map(|s| s.addresses.into_iter().flatten())
            .any(|a| a.ip.parse::<IpAddr>().is_ok_and(|a| a == ip));
        if !listed_in_endpoints {
            seen = format!("pod {ip} Ready, not yet in the Endpoints");
            continue;
        }
        match fetch(proxy, PATH).await {
            Ok((StatusCode::OK, _)) => break SocketAddr::new(ip, PROBE_PORT),
            Ok((status, _)) => seen = format!("{proxy}{PATH} answered {status}"),
            Err(e) => seen = format!("{proxy}{PATH}: {e:#}"),
        }
    };
    // The node port is the proxy's, forwarding to this run's pod, not some other listener.
    let direct_host = hostname(direct)
        .await
        .with_context(|| format!("GET / on the pod at {direct}"))?;
    let proxy_host = hostname(proxy)
        .await
        .with_context(|| format!("GET / through the node port {proxy}"))?;
    if direct_host != proxy_host {
        bail!(
            "{proxy} answers as {proxy_host:?}, not as this run's pod {direct_host:?}: another \
             process holds node port {node_port} on loopback; run again (node ports are random)"
        );
    }
    Ok(Targets { direct, proxy })
}

/// The headline: alternating rounds of both paths, loaded, then with a single client.
struct Rounds {
    loaded: [Run; 2],
    single: [Run; 2],
    ratios: Vec<f64>,
    /// The CPU each path's loaded runs cost.
    cpu: [Cpu; 2],
}

async fn rounds(
    targets: Targets,
    rounds: usize,
    loaded: Duration,
    single: Duration,
) -> anyhow::Result<Rounds> {
    let mut out = Rounds {
        loaded: Default::default(),
        single: Default::default(),
        ratios: Vec::new(),
        cpu: Default::default(),
    };
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Path::Direct, Path::Proxy]
        } else {
            [Path::Proxy, Path::Direct]
        };
        let mut rates = [0.0; 2];
        for path in order {
            let before = Cpu::now()?;
            let run = load(targets.of(path), CLIENTS, Until::Elapsed(loaded)).await?;
            out.cpu[path as usize].add(Cpu::now()?.since(before));
            rates[path as usize] = run.per_second();
            out.loaded[path as usize].add(run);
        }
        out.ratios.push(
            rates[Path::Proxy as usize] / rates[Path::Direct as usize].max(f64::MIN_POSITIVE),
        );
        for path in order {
            let run = load(targets.of(path), 1, Until::Elapsed(single)).await?;
            out.single[path as usize].add(run);
        }
    }
    Ok(out)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn report(r: &Rounds) -> anyhow::Result<()> {
    let [direct, proxy] = &r.loaded;
    let (Some(d50), Some(p50)) = (median(&direct.latencies), median(&proxy.latencies)) else {
        bail!("no request completed");
    };
    let (d_rate, p_rate) = (direct.per_second(), proxy.per_second());
    let ratio = p_rate / d_rate.max(f64::MIN_POSITIVE);
    let added = (p50.as_secs_f64() - d50.as_secs_f64()) * 1e6;
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!();
    println!(
        "== service proxy: GET {PATH} from {CLIENTS} keep-alive clients, straight to the pod / \
         through the proxy's node port =="
    );
    if !measuring() {
        println!("(test mode: short runs; these figures are a smoke test, not a measurement)");
    }
    println!(
        "service proxy: direct {d_rate:.0} req/s, through the proxy {p_rate:.0} req/s, ratio \
         {ratio:.2} (goal >= {THROUGHPUT_GOAL}: {}); median latency direct {}, proxy {}, \
         added {added:.0} µs (goal <= {ADDED_LATENCY_GOAL_US:.0} µs: {})",
        verdict(ratio >= THROUGHPUT_GOAL),
        us(d50),
        us(p50),
        verdict(added <= ADDED_LATENCY_GOAL_US),
    );
    let tail = |run: &Run| {
        let p = |q| percentile(&run.latencies, q).map(us).unwrap_or_default();
        format!("p90 {}, p99 {}", p(0.9), p(0.99))
    };
    println!(
        "service proxy, latency under load: direct {}; proxy {} [{} direct and {} proxy \
         requests in {} alternating rounds of {} ms per path]",
        tail(direct),
        tail(proxy),
        direct.requests,
        proxy.requests,
        r.ratios.len(),
        ROUND_TIME.as_millis(),
    );
    let mut ratios = r.ratios.clone();
    ratios.sort_by(f64::total_cmp);
    let ratios: Vec<String> = ratios.iter().map(|x| format!("{x:.2}")).collect();
    println!(
        "service proxy, each round's ratio proxy/direct (sorted): {}",
        ratios.join(" ")
    );
    // Where the CPU goes, per request: on a machine whose cores are all busy, the
    // throughput of each path is about the inverse of this.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let per_request = |ticks: u64, run: &Run| {
        ticks as f64 / TICKS_PER_SECOND * 1e6 / (run.requests.max(1) as f64)
    };
    for (path, run) in [(Path::Direct, direct), (Path::Proxy, proxy)] {
        let cpu = r.cpu[path as usize];
        let busy = cpu.machine as f64
            / TICKS_PER_SECOND
            / (run.wall.as_secs_f64() * cores).max(f64::MIN_POSITIVE);
        println!(
            "service proxy, CPU per request, {}: {:.1} µs in all = load {:.1} + cluster (the \
             proxy) {:.1}, of which {:.1} in the kernel, + the rest {:.1} (the pod's server, the kernel's network stack); the \
             machine was {:.0}% busy",
            path.id(),
            per_request(cpu.machine, run),
            per_request(cpu.load, run),
            per_request(cpu.cluster, run),
            per_request(cpu.cluster_kernel, run),
            per_request(cpu.machine.saturating_sub(cpu.load + cpu.cluster), run),
            busy * 100.0,
        );
    }
    let [sd, sp] = &r.single;
    if let (Some(s50d), Some(s50p)) = (median(&sd.latencies), median(&sp.latencies)) {
        println!(
            "service proxy, one client (no queueing): median latency direct {}, proxy {}, \
             added {:.0} µs; direct {:.0} req/s, proxy {:.0} req/s [{} ms per path per round]",
            us(s50d),
            us(s50p),
            (s50p.as_secs_f64() - s50d.as_secs_f64()) * 1e6,
            sd.per_second(),
            sp.per_second(),
            SINGLE_TIME.as_millis(),
        );
    }
    let criterion = *CRITERION.lock().unwrap_or_else(PoisonError::into_inner);
    let rate = |(n, wall): (u64, Duration)| n as f64 / wall.as_secs_f64().max(f64::MIN_POSITIVE);
    let [cd, cp] = criterion;
    if cd.0 > 0 && cp.0 > 0 {
        println!(
            "service proxy, criterion's runs (all direct, then all proxy; warm-up included): \
             direct {:.0} req/s, proxy {:.0} req/s, ratio {:.2}",
            rate(cd),
            rate(cp),
            rate(cp) / rate(cd).max(f64::MIN_POSITIVE),
        );
    }
    Ok(())
}

/// The benchmarks' names, for `--list` (which must not start a cluster).
fn list() {
    for path in [Path::Direct, Path::Proxy] {
        println!("service_proxy/{}: benchmark", path.id());
    }
}

fn bench(load_rt: &tokio::runtime::Runtime, targets: Targets) {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = criterion.benchmark_group("service_proxy");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));
    for path in [Path::Direct, Path::Proxy] {
        group.bench_function(path.id(), |b| {
            b.to_async(load_rt).iter_custom(|iters| async move {
                let run = load(targets.of(path), CLIENTS, Until::Requests(iters))
                    .await
                    .unwrap_or_else(|e| panic!("{e:#}"));
                let mut tally = CRITERION.lock().unwrap_or_else(PoisonError::into_inner);
                tally[path as usize].0 += run.requests;
                tally[path as usize].1 += run.wall;
                run.wall
            });
        });
    }
    group.finish();
    criterion.final_summary();
}

/// Everything between the cluster's start and its stop.
fn run(rt: &tokio::runtime::Runtime, cluster: &BenchCluster) -> anyhow::Result<()> {
    let client = cluster.client()?;
    let ready = Instant::now();
    let targets = rt.block_on(setup(&client))?;
    println!(
        "service proxy: pod Ready and reachable through the proxy in {} ms; direct \
         http://{}{PATH}, proxy http://{}{PATH}",
        ready.elapsed().as_millis(),
        targets.direct,
        targets.proxy,
    );
    // The load's own runtime: the proxy keeps the cluster's.
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()?;
    bench(&load_rt, targets);
    let (n, loaded, single) = if measuring() {
        (ROUNDS, ROUND_TIME, SINGLE_TIME)
    } else {
        (1, Duration::from_millis(100), Duration::from_millis(50))
    };
    let rounds = load_rt.block_on(rounds(targets, n, loaded, single))?;
    report(&rounds)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        list();
        return Ok(());
    }
    if !selected("service_proxy/direct") && !selected("service_proxy/proxy") {
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
        1,
        NodeLifecycleConfig::default(),
    ))?;
    if cluster.reaped() > 0 {
        println!(
            "service proxy: removed {} containers an earlier, killed run left behind",
            cluster.reaped()
        );
    }
    println!(
        "service proxy: shipshape = in-process cluster (control plane, 1 node agent, service \
         proxy), node Ready in {} ms; image {IMAGE}; {} cores",
        cluster.started_in().as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    // The cluster stops (removing its containers) whatever happens, panics included.
    cluster.run(&rt, |cluster| run(&rt, cluster))?;
    println!(
        "service proxy: whole run {:.0} s",
        whole.elapsed().as_secs_f64()
    );
    Ok(())
}
