//! Shared helpers for the benchmarks: the anchors they measure shipshape against, and the
//! loads they drive.
//!
//! - [`Etcd`] starts a private etcd (the Debian `etcd-server` package) on loopback and kills
//!   it when dropped, panics included.
//! - [`EtcdClient`] writes to it through etcd's v3 JSON gateway over HTTP/1.1 with a
//!   keep-alive connection pool.
//! - [`ShipshapeStore`] opens a single-voter shipshape store in a temporary directory.
//! - [`Target`] and [`run_writes`] drive the same write load against either.
//! - [`connect_docker`], [`DockerAnchor`] and [`BenchDir`] serve the benchmarks that run
//!   containers: the raw Docker anchor, and cleanup of what a killed run left behind
//!   (containers labelled [`BENCH_LABEL`], clusters in `BenchDir`s of dead processes).
//! - [`NodeAgents`] runs node agents in this process, each stoppable on its own (a machine
//!   dying) and restartable under the same name (the machine coming back).
//! - [`Tracker`] follows objects through a kube-rs watcher and records when each was first
//!   seen, when each of its marks (bound, Ready, terminating...) last turned true, and when
//!   it went, so a benchmark can wait on a condition and read its stages afterwards.
//! - [`BenchCluster`] is the in-process cluster a Docker-backed benchmark runs against:
//!   leftovers of killed runs reaped, images built, nodes Ready, and everything stopped and
//!   removed afterwards whatever happens ([`BenchCluster::run`]).
//! - [`probe_deployment`] is the Deployment of the probe those benchmarks create, and
//!   [`delete_deployment`] removes one and waits for its pods to go.
//! - [`percentile`], [`median`], [`measuring`], [`selected`], [`ms`], [`secs`], [`ratio`],
//!   [`after`], [`sorted_ms`], [`sorted_secs`] and [`stage_medians`] help every benchmark
//!   pick what to run and report its figures.
//! - [`hollow`] runs node agents without containers, by the thousand, for the scale
//!   benchmark.

pub mod hollow;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StartContainerOptions,
};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use shipshape::agent::{self, AgentConfig, AgentError};
use shipshape::client::Credentials;
use shipshape::control_plane::{ControlPlane, ControlPlaneConfig};
use shipshape::controllers::node_lifecycle::NodeLifecycleConfig;
use shipshape::local_cluster::LocalCluster;
use shipshape::store::transport::NoPeers;
use shipshape::store::{Op, Precondition, Store, StoreConfig};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long etcd may take to answer its health check after being started.
const ETCD_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The script that installs the project's system dependencies (etcd among them).
fn install_deps_script() -> PathBuf {
    let benches = Path::new(env!("CARGO_MANIFEST_DIR"));
    benches.parent().unwrap_or(benches).join("ci/install-deps")
}

/// Finds the etcd binary: `etcd` on `PATH`, else `/usr/bin/etcd`.
fn find_etcd() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let debian = PathBuf::from("/usr/bin/etcd");
        debian.is_file().then_some(debian)
    })
}

/// Finds etcd (`$SHIPSHAPE_ETCD`, else `etcd` on `PATH`, else `/usr/bin/etcd`), and when it
/// is missing tries `ci/install-deps` once (which needs root).
///
/// Fails with a message saying what to do; a benchmark never silently skips its anchor.
pub fn etcd_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SHIPSHAPE_ETCD") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("SHIPSHAPE_ETCD={} is not a file", path.display());
        }
        return Ok(path);
    }
    if let Some(path) = find_etcd() {
        return Ok(path);
    }
    let script = install_deps_script();
    eprintln!(
        "etcd not found; trying {} to install the Debian package etcd-server",
        script.display()
    );
    let status = Command::new("bash").arg(&script).status();
    if let Some(path) = find_etcd() {
        return Ok(path);
    }
    let why = match status {
        Ok(status) if status.success() => {
            format!("{} ran, yet no etcd binary was found", script.display())
        }
        Ok(status) => format!("{} exited with {status}", script.display()),
        Err(e) => format!("cannot run {}: {e}", script.display()),
    };
    bail!(
        "etcd is required as the anchor of this benchmark but is not installed, and \
         installing it failed ({why}). Install the Debian package etcd-server \
         (as root: `ci/install-deps`, or `apt-get install etcd-server`), or point \
         SHIPSHAPE_ETCD at an etcd binary."
    )
}

/// A free TCP port on loopback (free when asked; etcd binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The last `max` bytes of a file, for error messages.
fn tail(path: &Path, max: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// A private, single-member etcd on loopback with its data in a temporary directory.
///
/// It runs with etcd's default durability (every write fsynced in its WAL before it is
/// acknowledged), like shipshape's store. Dropping it kills the process, so a panicking
/// benchmark does not leave etcd behind.
pub struct Etcd {
    child: Child,
    client_url: String,
    log: PathBuf,
    // Removed after the process is gone (fields drop after `Drop::drop` ran).
    _dir: TempDir,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("pid", &self.child.id())
            .field("client_url", &self.client_url)
            .finish()
    }
}

impl Etcd {
    /// Starts etcd on free loopback ports and waits until it reports itself healthy.
    pub async fn start() -> anyhow::Result<Etcd> {
        let binary = etcd_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("shipshape-bench-etcd-")
            .tempdir()
            .context("creating etcd's data directory")?;
        let client_url = format!("http://127.0.0.1:{}", free_port()?);
        let peer_url = format!("http://127.0.0.1:{}", free_port()?);
        let log = dir.path().join("etcd.log");
        let log_file = File::create(&log).context("creating etcd's log file")?;
        let child = Command::new(&binary)
            .arg("--name=default")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut etcd = Etcd {
            child,
            client_url,
            log,
            _dir: dir,
        };
        etcd.wait_healthy().await?;
        Ok(etcd)
    }

    /// The URL clients reach etcd at (`http://127.0.0.1:PORT`).
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// A client for this etcd.
    pub fn client(&self) -> EtcdClient {
        EtcdClient::new(&self.client_url)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let client = self.client();
        let deadline = Instant::now() + ETCD_STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "etcd exited during startup ({status}); its log ends with:\n{}",
                    tail(&self.log, 2000)
                );
            }
            if client.healthy().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd did not become healthy within {ETCD_STARTUP_TIMEOUT:?}; its log \
                     ends with:\n{}",
                    tail(&self.log, 2000)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private etcd cluster of several members on loopback, each a process with its own
/// data directory, so that one can be killed with SIGKILL and started again.
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    initial_cluster: String,
    binary: PathBuf,
    // Removed after the processes are gone.
    _dir: TempDir,
}

struct EtcdMember {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("initial_cluster", &self.initial_cluster)
            .finish()
    }
}

impl EtcdCluster {
    /// Starts `count` members and waits until each reports itself healthy.
    pub async fn start(count: usize) -> anyhow::Result<EtcdCluster> {
        let binary = etcd_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("shipshape-bench-etcd-cluster-")
            .tempdir()
            .context("creating the etcd cluster's directory")?;
        let mut members = Vec::new();
        for i in 1..=count {
            members.push(EtcdMember {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()?),
                peer_url: format!("http://127.0.0.1:{}", free_port()?),
                data_dir: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            binary,
            _dir: dir,
        };
        for i in 0..count {
            cluster.spawn(i, "new")?;
        }
        for i in 0..count {
            cluster.wait_healthy(i).await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, index: usize, state: &str) -> anyhow::Result<()> {
        let member = &mut self.members[index];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&member.log)
            .context("opening an etcd member's log")?;
        let child = Command::new(&self.binary)
            .arg(format!("--name={}", member.name))
            .arg(format!("--data-dir={}", member.data_dir.display()))
            .arg(format!("--listen-client-urls={}", member.client_url))
            .arg(format!("--advertise-client-urls={}", member.client_url))
            .arg(format!("--listen-peer-urls={}", member.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", member.peer_url))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--initial-cluster-token=shipshape-bench")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        member.child = Some(child);
        Ok(())
    }

    async fn wait_healthy(&mut self, index: usize) -> anyhow::Result<()> {
        let client = EtcdClient::new(&self.members[index].client_url);
        let deadline = Instant::now() + ETCD_STARTUP_TIMEOUT;
        loop {
            let member = &mut self.members[index];
            if let Some(child) = member.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "etcd member {} exited ({status}); its log ends with:\n{}",
                    member.name,
                    tail(&member.log, 2000)
                );
            }
            if client.healthy().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd member {} did not become healthy within {ETCD_STARTUP_TIMEOUT:?}; \
                     its log ends with:\n{}",
                    member.name,
                    tail(&member.log, 2000)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every member's client URL, in member order.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The index of the member that leads, as the members report it
    /// (`/v3/maintenance/status`: the member whose id is the leader's).
    pub async fn leader(&self) -> anyhow::Result<usize> {
        for (index, member) in self.members.iter().enumerate() {
            if member.child.is_none() {
                continue;
            }
            let Ok(status) = EtcdClient::new(&member.client_url).status().await else {
                continue;
            };
            let own = status["header"]["member_id"].as_str().unwrap_or_default();
            if !own.is_empty() && status["leader"].as_str() == Some(own) {
                return Ok(index);
            }
        }
        bail!("no etcd member says it leads")
    }

    /// Kills member `index` with SIGKILL.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.members[index].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts member `index` again on its data and waits until it is healthy.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.spawn(index, "existing")?;
        self.wait_healthy(index).await
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A client of etcd's v3 JSON gateway (`POST /v3/kv/put`), over pooled keep-alive
/// HTTP/1.1 connections. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct EtcdClient {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("base", &self.base)
            .finish()
    }
}

impl EtcdClient {
    /// A client for the etcd at `base` (`http://host:port`).
    pub fn new(base: &str) -> EtcdClient {
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build_http();
        EtcdClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// Whether `GET /health` answers `{"health":"true"}`.
    pub async fn healthy(&self) -> bool {
        let Ok(request) = Request::get(format!("{}/health", self.base)).body(Full::default())
        else {
            return false;
        };
        let Ok(response) = self.http.request(request).await else {
            return false;
        };
        let ok = response.status() == StatusCode::OK;
        let Ok(body) = response.into_body().collect().await else {
            return false;
        };
        ok && serde_json::from_slice::<serde_json::Value>(&body.to_bytes())
            .is_ok_and(|v| v["health"] == "true")
    }

    /// The server version from `GET /version` (`"3.4.23"`), if it answers.
    pub async fn version(&self) -> Option<String> {
        let request = Request::get(format!("{}/version", self.base))
            .body(Full::default())
            .ok()?;
        let response = self.http.request(request).await.ok()?;
        let body = response.into_body().collect().await.ok()?.to_bytes();
        let reply: serde_json::Value = serde_json::from_slice(&body).ok()?;
        reply["etcdserver"].as_str().map(str::to_owned)
    }

    /// The answer of `POST /v3/maintenance/status` (member id, leader id, ...).
    pub async fn status(&self) -> anyhow::Result<serde_json::Value> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/v3/maintenance/status", self.base))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))?;
        let response = self.http.request(request).await?;
        let body = response.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice(&body)?)
    }

    /// Puts `value` at `key`; returns once etcd acknowledged the write.
    pub async fn put(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            base64(key.as_bytes()),
            base64(value)
        );
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/v3/kv/put", self.base))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = self
            .http
            .request(request)
            .await
            .context("etcd put: request failed")?;
        let status = response.status();
        // Read the whole body so the connection goes back to the pool.
        let body = response
            .into_body()
            .collect()
            .await
            .context("etcd put: reading the response")?
            .to_bytes();
        let reply: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("etcd put: answer is not JSON ({status})"))?;
        if status != StatusCode::OK || reply.get("header").is_none() {
            return Err(anyhow!(
                "etcd put failed ({status}): {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(())
    }
}

/// Standard base64 with padding, as etcd's JSON gateway wants bytes fields.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A single-voter shipshape store in a temporary directory.
pub struct ShipshapeStore {
    /// The store handle.
    pub store: Store,
    _dir: TempDir,
}

impl std::fmt::Debug for ShipshapeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipshapeStore").finish_non_exhaustive()
    }
}

impl ShipshapeStore {
    /// Opens a fresh single-voter store (one Raft voter, sled, fsync per acknowledged batch).
    pub async fn open() -> anyhow::Result<ShipshapeStore> {
        let dir = tempfile::Builder::new()
            .prefix("shipshape-bench-store-")
            .tempdir()
            .context("creating the store's data directory")?;
        let store = Store::open(StoreConfig::single(dir.path()), Arc::new(NoPeers))
            .await
            .context("opening the shipshape store")?;
        Ok(ShipshapeStore { store, _dir: dir })
    }

    /// Stops the store's driver and flushes it; the directory goes when `self` drops.
    pub async fn shutdown(self) {
        self.store.shutdown().await;
    }
}

/// Something the write benchmarks write to.
#[derive(Clone, Debug)]
pub enum Target {
    /// shipshape's store, called in-process.
    Shipshape(Store),
    /// etcd, through its HTTP/JSON gateway.
    Etcd(Box<EtcdClient>),
}

impl Target {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Shipshape(_) => "shipshape",
            Target::Etcd(_) => "etcd",
        }
    }

    /// One durable, unconditional put; returns once acknowledged.
    pub async fn put(&self, key: String, value: &[u8]) -> anyhow::Result<()> {
        match self {
            Target::Shipshape(store) => {
                store
                    .write(vec![Op::put(key, value.to_vec(), Precondition::None)])
                    .await?;
                Ok(())
            }
            Target::Etcd(client) => client.put(&key, value).await,
        }
    }
}

/// How many distinct keys the write loads cycle through (both targets alike).
const KEYSPACE: u64 = 10_000;

/// Numbers the writes of every load, so keys spread over the keyspace.
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

/// A value of `len` bytes (printable, not all one byte).
pub fn value_of_len(len: usize) -> Arc<[u8]> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Runs `clients` concurrent clients (tokio tasks), each doing `writes_per_client`
/// sequential writes of `value`, and returns the wall time until the last one is
/// acknowledged. Any failed write fails the load.
pub async fn run_writes(
    target: &Target,
    clients: usize,
    writes_per_client: u64,
    value: &Arc<[u8]>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let target = target.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for _ in 0..writes_per_client {
                    let n = NEXT_KEY.fetch_add(1, Ordering::Relaxed) % KEYSPACE;
                    target
                        .put(format!("/registry/bench/key-{n}"), &value)
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .context("a benchmark client panicked")?
            .with_context(|| format!("a write to {} failed", target.name()))?;
    }
    Ok(start.elapsed())
}

/// Benchmarks that need control-plane processes start this program again, as `shipshape
/// control-plane ...`: called first in their `main`, this runs such a process as
/// `shipshape` would, and exits with its outcome; otherwise it returns at once.
pub fn run_as_shipshape_if_asked() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "control-plane") {
        std::process::exit(match shipshape::cli::run(args) {
            code if code == std::process::ExitCode::SUCCESS => 0,
            _ => 1,
        });
    }
}

/// Whether criterion runs as a benchmark (`cargo bench`), not as a smoke test
/// (`cargo test --benches`, `-- --test`), following criterion's own reading of its flags.
pub fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}

/// The `p`-th percentile (0.0..=1.0) of `samples` by nearest rank: the smallest sample
/// with at least `p` of all samples at or below it (`0.5` is the median, the lower one of
/// the middle two for an even count). `None` for no samples.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (p.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of `samples`: the middle one, or the mean of the middle two for an even
/// count. `None` for no samples.
pub fn median(samples: &[Duration]) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// Whether criterion's filter selects benchmark `id`: the free arguments (not options nor
/// their values) are read as plain substrings; no free argument selects everything. A
/// benchmark that starts a cluster asks this first, so a filter that selects none of its
/// measurements starts nothing.
pub fn selected(id: &str) -> bool {
    const VALUED: &[&str] = &[
        "--save-baseline",
        "-s",
        "--baseline",
        "-b",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--plotting-backend",
        "--output-format",
        "--color",
        "-c",
        "--format",
        "--logfile",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filters = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if VALUED.contains(&arg.as_str()) {
            rest.next();
        } else if !arg.starts_with('-') {
            filters.push(arg.as_str());
        }
    }
    filters.is_empty() || filters.iter().any(|f| id.contains(f))
}

/// `1234 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// `1.23 s`.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `a / b` (a zero `b` counts as the smallest positive time).
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// Time from `start` to `at`, for an instant at or after `start` (`None` otherwise).
pub fn after(at: Option<Instant>, start: Instant) -> Option<Duration> {
    at.filter(|t| *t >= start).map(|t| t - start)
}

/// `123 456 789`: every sample in whole milliseconds, sorted.
pub fn sorted_ms(samples: &[Duration]) -> String {
    let mut millis: Vec<u128> = samples.iter().map(Duration::as_millis).collect();
    millis.sort_unstable();
    let millis: Vec<String> = millis.iter().map(u128::to_string).collect();
    millis.join(" ")
}

/// `1.23 s 4.56 s`: every sample as [`secs`] shows it, sorted.
pub fn sorted_secs(samples: &[Duration]) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let shown: Vec<String> = sorted.iter().map(|d| secs(*d)).collect();
    shown.join(" ")
}

/// The median of each stage of several trials, as `label +time, ...`: each trial gives its
/// stages in the same order, `None` where it did not see one (left out of that median).
pub fn stage_medians<'a>(
    samples: impl Iterator<Item = Vec<(&'a str, Option<Duration>)>>,
    show: fn(Duration) -> String,
) -> String {
    let mut stages: Vec<(&str, Vec<Duration>)> = Vec::new();
    for marks in samples {
        for (i, (label, mark)) in marks.into_iter().enumerate() {
            if stages.len() <= i {
                stages.push((label, Vec::new()));
            }
            stages[i].1.extend(mark);
        }
    }
    let shown: Vec<String> = stages
        .iter()
        .filter_map(|(label, d)| Some(format!("{label} +{}", show(median(d)?))))
        .collect();
    shown.join(", ")
}

/// The namespace the benchmarks' objects go to.
pub const NAMESPACE: &str = "default";
/// The probe's HTTP port (`shipshape/probe:*`).
pub const PROBE_PORT: u16 = 8080;
/// The probe's readiness path: it answers 200 once the probe serves.
pub const PROBE_READY_PATH: &str = "/ready";
/// How long node agents may take to register their nodes as Ready.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(60);

/// A Deployment `name` in [`NAMESPACE`] of `replicas` pods of the probe `image`, the kind
/// every Docker-backed benchmark runs. It and its pods are labelled `app=<name>` (the
/// selector) and `shipshape.bench=<bench>`. The container is `imagePullPolicy: Never`
/// (images are local) with a readinessProbe `httpGet /ready :8080`, `periodSeconds: 1`:
/// what a raw Docker start waits for, probed as often as Kubernetes allows. The agent's
/// probe cadence (this 1 s period) and its 500 ms sync period bound a pod's start from
/// below: a first probe that comes before the server listens costs up to a period more.
/// Everything else is left to the apiserver's defaults: the termination grace (30 s; the
/// probe exits on SIGTERM at once) and the strategy (RollingUpdate, maxSurge and
/// maxUnavailable 25%).
pub fn probe_deployment(
    name: &str,
    bench: &str,
    replicas: i32,
    image: &str,
) -> anyhow::Result<Deployment> {
    let labels = json!({"app": name, BENCH_LABEL: bench});
    let body = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": "probe",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "ports": [{"containerPort": PROBE_PORT}],
                        "readinessProbe": {
                            "httpGet": {"path": PROBE_READY_PATH, "port": PROBE_PORT},
                            "periodSeconds": 1,
                        },
                    }],
                },
            },
        },
    });
    serde_json::from_value(body).with_context(|| format!("building Deployment {name}"))
}

/// The mark [`pod_progress_marks`] gives a pod whose `Ready` condition is `True` (a pod
/// tracker's marks must include it, for [`start_until_ready`]).
pub const POD_READY: &str = "ready";
/// The mark [`pod_progress_marks`] gives a pod bound to a node.
pub const POD_BOUND: &str = "bound";
/// The mark [`pod_progress_marks`] gives a pod all of whose containers are running.
pub const POD_RUNNING: &str = "running";

/// A pod's steps on its way to Ready, as marks for a [`Tracker`]: [`POD_BOUND`],
/// [`POD_RUNNING`], [`POD_READY`].
pub fn pod_progress_marks(pod: &Pod) -> Vec<&'static str> {
    let mut marks = Vec::new();
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
    {
        marks.push(POD_BOUND);
    }
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    if statuses.is_some_and(|cs| {
        !cs.is_empty()
            && cs
                .iter()
                .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
    }) {
        marks.push(POD_RUNNING);
    }
    if pod_ready(pod) {
        marks.push(POD_READY);
    }
    marks
}

/// The mark [`pod_lifecycle_marks`] gives a pod being deleted.
pub const POD_TERMINATING: &str = "terminating";

/// A pod's steps on its way to Ready, and its deletion: [`pod_progress_marks`] and
/// [`POD_TERMINATING`].
pub fn pod_lifecycle_marks(pod: &Pod) -> Vec<&'static str> {
    let mut marks = pod_progress_marks(pod);
    if pod.metadata.deletion_timestamp.is_some() {
        marks.push(POD_TERMINATING);
    }
    marks
}

/// The `app` label of a pod a [`Tracker`] saw (the Deployment it belongs to, for the
/// benchmarks' Deployments of [`probe_deployment`]).
pub fn app_of(pod: &Seen<Pod>) -> Option<&str> {
    pod.object
        .metadata
        .labels
        .as_ref()?
        .get("app")
        .map(String::as_str)
}

/// Creates `deployment` (one of [`probe_deployment`]) in [`NAMESPACE`] and waits until
/// `pods` (a tracker of the benchmark's pods whose marks include [`POD_READY`]) has seen
/// all its replicas Ready; then (untimed) deletes it and waits for its pods to go. Returns
/// the time from the create call to the last pod's Ready, and the Deployment as stored.
pub async fn start_until_ready(
    client: &kube::Client,
    pods: &Tracker<Pod>,
    deployment: &Deployment,
    timeout: Duration,
    gone_timeout: Duration,
) -> anyhow::Result<(Duration, Deployment)> {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let wanted = usize::try_from(replicas).unwrap_or(0);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let start = Instant::now();
    let stored = deployments
        .create(&PostParams::default(), deployment)
        .await
        .with_context(|| format!("creating Deployment {name}"))?;
    let ready = pods
        .wait_for(
            timeout,
            &format!("the {replicas} pods of {name} Ready"),
            |pods| {
                let ready: Vec<Instant> = pods
                    .iter()
                    .filter(|p| app_of(p) == Some(name.as_str()) && p.is(POD_READY))
                    .filter_map(|p| p.since(POD_READY))
                    .collect();
                (ready.len() >= wanted)
                    .then(|| ready.into_iter().max())
                    .flatten()
            },
        )
        .await;
    let removed = delete_deployment(client, &name, gone_timeout).await;
    let ready = ready?;
    removed?;
    Ok((ready.saturating_duration_since(start), stored))
}

/// Deletes Deployment `name` in [`NAMESPACE`] (its ReplicaSets and pods go by cascade, in
/// the background) and waits until no pod labelled `app=<name>` is left: their agents have
/// stopped and removed their containers.
pub async fn delete_deployment(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    deployments
        .delete(name, &DeleteParams::background())
        .await
        .with_context(|| format!("deleting Deployment {name}"))?;
    let selector = format!("app={name}");
    let deadline = Instant::now() + timeout;
    loop {
        let left = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .context("listing pods")?;
        if left.items.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} pod(s) of deleted Deployment {name} still there after {timeout:?}",
                left.items.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until each of `nodes` is registered with `Ready=True`.
pub async fn wait_nodes_ready(
    client: &kube::Client,
    nodes: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    for name in nodes {
        loop {
            let node = api
                .get_opt(name)
                .await
                .with_context(|| format!("reading node {name}"))?;
            if node.as_ref().and_then(node_ready_status) == Some("True") {
                break;
            }
            if Instant::now() > deadline {
                bail!("node {name} did not register as Ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// An in-process shipshape cluster for one benchmark run, with its data in a [`BenchDir`]:
/// the control plane (store, apiserver, scheduler, controllers), `nodes` node agents and
/// the service proxy of a [`LocalCluster`], plus [`NodeAgents`] the benchmark may start and
/// stop itself (none unless it does).
///
/// [`BenchCluster::start`] reaps what killed runs of the same benchmark left and builds the
/// images (offline); [`BenchCluster::run`] runs the benchmark's body, then stops every
/// agent, the cluster, and removes every container labelled with the cluster's id, whatever happened, panics included.
pub struct BenchCluster {
    cluster: LocalCluster,
    agents: NodeAgents,
    docker: Docker,
    /// Removed last, once nothing runs from it.
    dir: BenchDir,
    /// How many containers of killed runs went.
    reaped: usize,
    /// From the start call until every node was Ready.
    started_in: Duration,
}

impl std::fmt::Debug for BenchCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchCluster")
            .field("dir", &self.dir)
            .field("agents", &self.agents)
            .finish_non_exhaustive()
    }
}

impl BenchCluster {
    /// Reaps the clusters of killed runs in `$TMPDIR/<prefix>*`, builds the images, starts a
    /// cluster with `nodes` node agents (`node-1`...) and the node lifecycle timing given,
    /// and waits until those nodes are Ready. Call it inside the tokio runtime.
    pub async fn start(
        docker: &Docker,
        prefix: &str,
        nodes: u32,
        lifecycle: NodeLifecycleConfig,
    ) -> anyhow::Result<BenchCluster> {
        let reaped = BenchDir::reap_dead(docker, prefix).await?;
        shipshape::images::ensure(docker)
            .await
            .context("building the images")?;
        let dir = BenchDir::new(prefix)?;
        let config = ControlPlaneConfig::new(dir.path(), "127.0.0.1:0".parse()?);
        let begun = Instant::now();
        let cluster = LocalCluster::start_with(config, nodes, lifecycle)
            .await
            .context("starting the local shipshape cluster")?;
        let names: Vec<String> = (1..=nodes).map(|i| format!("node-{i}")).collect();
        let ready = async {
            let agents =
                NodeAgents::new(cluster.control_plane(), docker.clone(), dir.path()).await?;
            let client = cluster
                .control_plane()
                .credentials()
                .client()
                .context("building the API client")?;
            wait_nodes_ready(&client, &names, NODE_TIMEOUT).await?;
            anyhow::Ok(agents)
        };
        match ready.await {
            Ok(agents) => Ok(BenchCluster {
                cluster,
                agents,
                docker: docker.clone(),
                dir,
                reaped,
                started_in: begun.elapsed(),
            }),
            Err(e) => {
                let id = cluster.control_plane().cluster_id().to_owned();
                let _ = cluster.stop().await;
                let _ = shipshape::agent::runtime::reap(docker, &id).await;
                Err(e)
            }
        }
    }

    /// Runs `body` inside `rt`'s context (kube's clients and the watches spawn tasks), then
    /// stops everything ([`BenchCluster::run`]'s cleanup) whatever happened; a panic of
    /// `body` is raised again once that is done. An error of `body` is reported before one
    /// of the cleanup.
    pub fn run<T>(
        mut self,
        rt: &tokio::runtime::Runtime,
        body: impl FnOnce(&mut BenchCluster) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let outcome = {
            let _runtime = rt.enter();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut self)))
        };
        let stopped = rt.block_on(self.stop());
        match outcome {
            Ok(result) => {
                let value = result?;
                stopped?;
                Ok(value)
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Stops the benchmark's own agents (they remove their containers), then the cluster,
    /// then removes whatever of the cluster is left in Docker (containers a pod worker was
    /// still starting), then the data directory.
    async fn stop(self) -> anyhow::Result<()> {
        let BenchCluster {
            cluster,
            mut agents,
            docker,
            dir,
            ..
        } = self;
        let id = cluster.control_plane().cluster_id().to_owned();
        let agents_stopped = agents.stop_all().await;
        drop(agents);
        let stopped = cluster.stop().await;
        let reaped = shipshape::agent::runtime::reap(&docker, &id).await;
        drop(dir);
        agents_stopped.context("stopping the node agents")?;
        stopped.context("stopping the local shipshape cluster")?;
        reaped.context("removing the cluster's containers")?;
        Ok(())
    }

    /// The control plane.
    pub fn control_plane(&self) -> &ControlPlane {
        self.cluster.control_plane()
    }

    /// A fresh API client of the cluster (admin credentials). Call it inside the runtime.
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        self.control_plane()
            .credentials()
            .client()
            .context("building the API client")
    }

    /// The node agents the benchmark runs itself, apart from the cluster's `nodes`.
    pub fn agents(&mut self) -> &mut NodeAgents {
        &mut self.agents
    }

    /// How many containers of killed earlier runs [`BenchCluster::start`] removed.
    pub fn reaped(&self) -> usize {
        self.reaped
    }

    /// How long the start took, from the call until every node was Ready.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }
}

/// The label every container a benchmark creates by itself carries; its value names the
/// benchmark (`pod-start`). Leftovers of killed runs are found by it.
pub const BENCH_LABEL: &str = "shipshape.bench";
/// The label holding the pid of the benchmark process that created a container, so a run
/// removes only the leftovers of processes that are gone, never a concurrent run's.
pub const BENCH_PID_LABEL: &str = "shipshape.bench.pid";

/// Whether process `pid` exists (on this host's pid namespace, through `/proc`).
fn pid_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Connects to the local Docker engine (`DOCKER_HOST`, else the local socket) and checks
/// that it answers; fails with a message saying what to do.
pub async fn connect_docker() -> anyhow::Result<Docker> {
    let advice = "this benchmark runs real containers and needs a reachable Docker engine: \
                  start dockerd (and make its socket readable by this user) or set DOCKER_HOST";
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| anyhow!("no Docker engine is reachable ({e}); {advice}"))?;
    docker
        .ping()
        .await
        .map_err(|e| anyhow!("no Docker engine is reachable ({e}); {advice}"))?;
    Ok(docker)
}

/// Removes the containers labelled `shipshape.bench=<bench>` that this process made or
/// that a process no longer running made; returns how many went.
pub async fn remove_bench_containers(docker: &Docker, bench: &str) -> anyhow::Result<usize> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{BENCH_LABEL}={bench}")])]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .context("listing the benchmark's containers")?;
    let mut removed = 0;
    for container in containers {
        let owner = container
            .labels
            .as_ref()
            .and_then(|labels| labels.get(BENCH_PID_LABEL))
            .and_then(|pid| pid.parse::<u32>().ok());
        let orphaned = owner.is_none_or(|pid| pid == std::process::id() || !pid_alive(pid));
        if let (true, Some(id)) = (orphaned, container.id) {
            force_remove(docker, &id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes a container, running or not, with its anonymous volumes; a container already
/// gone is not an error.
async fn force_remove(docker: &Docker, id: &str) -> anyhow::Result<()> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(anyhow!("removing container {id}: {e}")),
    }
}

/// The file in a [`BenchDir`] naming the process that owns it.
const PID_FILE: &str = "bench.pid";

/// A temporary data directory for an in-process shipshape cluster, named
/// `<prefix><random>` in the system's temporary directory and holding the pid of the
/// benchmark that owns it. Removed on drop; [`BenchDir::reap_dead`] clears those of killed
/// runs, containers included.
pub struct BenchDir {
    dir: TempDir,
}

impl std::fmt::Debug for BenchDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchDir")
            .field("path", &self.dir.path())
            .finish()
    }
}

impl BenchDir {
    /// Creates a fresh directory `<tmp>/<prefix>XXXX` owned by this process.
    pub fn new(prefix: &str) -> anyhow::Result<BenchDir> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .context("creating the cluster's data directory")?;
        std::fs::write(dir.path().join(PID_FILE), std::process::id().to_string())
            .context("writing the data directory's pid file")?;
        Ok(BenchDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Every `<tmp>/<prefix>*` directory whose owner is no longer running.
    pub fn dead(prefix: &str) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
            .map(|entry| entry.path())
            .filter(|path| path.is_dir())
            .filter(|path| {
                let owner = std::fs::read_to_string(path.join(PID_FILE))
                    .ok()
                    .and_then(|pid| pid.trim().parse::<u32>().ok());
                !owner.is_some_and(pid_alive)
            })
            .collect()
    }

    /// For each `<tmp>/<prefix>*` directory whose owner is no longer running: removes the
    /// containers of the cluster it holds (by its `cluster-id`), then the
    /// directory. Returns how many containers went.
    pub async fn reap_dead(docker: &Docker, prefix: &str) -> anyhow::Result<usize> {
        let mut removed = 0;
        for path in BenchDir::dead(prefix) {
            if let Ok(cluster) = std::fs::read_to_string(path.join("cluster-id")) {
                let cluster = cluster.trim();
                if !cluster.is_empty() {
                    removed += shipshape::agent::runtime::reap(docker, cluster)
                        .await
                        .with_context(|| format!("removing the containers of cluster {cluster}"))?;
                }
            }
            let _ = std::fs::remove_dir_all(&path);
        }
        Ok(removed)
    }
}

/// The anchor of the pod-start benchmark: a raw Docker create + start of an image on the
/// default bridge network, timed until the container answers HTTP 200 from the host.
#[derive(Clone)]
pub struct DockerAnchor {
    docker: Docker,
    http: Client<HttpConnector, Full<Bytes>>,
    bench: String,
}

impl std::fmt::Debug for DockerAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerAnchor")
            .field("bench", &self.bench)
            .finish_non_exhaustive()
    }
}

/// How often the anchor asks a starting container whether it is ready.
const ANCHOR_POLL: Duration = Duration::from_millis(2);
/// How long one readiness request may take.
const ANCHOR_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

impl DockerAnchor {
    /// An anchor whose containers carry `shipshape.bench=<bench>` and this process's pid.
    pub fn new(docker: Docker, bench: &str) -> DockerAnchor {
        // No pooled connection outlives its container: each poll dials afresh.
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
        DockerAnchor {
            docker,
            http,
            bench: bench.to_owned(),
        }
    }

    /// Creates and starts a container of `image` (default command, default bridge), polls
    /// `http://<its bridge IP>:<port><path>` every 2 ms until it answers 200, and returns
    /// the time from the create call to that answer. The container is force-removed
    /// afterwards (not timed), and on every failure.
    pub async fn start_until_ready(
        &self,
        image: &str,
        port: u16,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let (elapsed, id) = self.start_and_keep(image, port, path, timeout).await?;
        force_remove(&self.docker, &id).await?;
        Ok(elapsed)
    }

    /// As [`DockerAnchor::start_until_ready`], but the container is left running; returns
    /// the time and the container's id (for [`DockerAnchor::remove`]). On failure it is
    /// removed.
    pub async fn start_and_keep(
        &self,
        image: &str,
        port: u16,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<(Duration, String)> {
        let start = Instant::now();
        let id = self.create(image, None).await?;
        let outcome = async {
            self.start(&id).await?;
            let ip = self.address(&id).await?;
            self.wait_ready(&ip, port, path, start, timeout).await
        }
        .await;
        let elapsed = start.elapsed();
        if let Err(error) = outcome {
            let _ = force_remove(&self.docker, &id).await;
            return Err(error);
        }
        Ok((elapsed, id))
    }

    /// A pod as the reference's agent makes one, on raw Docker: a sandbox of `sandbox_image`
    /// on `network`, then a container of `image` in the sandbox's network namespace; timed,
    /// as [`DockerAnchor::start_and_keep`], until the app answers 200. Both are left running;
    /// returns the time and both ids (the app's first). On failure both are removed.
    pub async fn start_pod_and_keep(
        &self,
        sandbox_image: &str,
        network: &str,
        image: &str,
        port: u16,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<(Duration, [String; 2])> {
        let start = Instant::now();
        let sandbox = self.create(sandbox_image, Some(network.to_owned())).await?;
        let mut ids = vec![sandbox.clone()];
        let outcome = async {
            self.start(&sandbox).await?;
            let app = self
                .create(image, Some(format!("container:{sandbox}")))
                .await?;
            ids.push(app.clone());
            self.start(&app).await?;
            let ip = self.address(&sandbox).await?;
            self.wait_ready(&ip, port, path, start, timeout).await?;
            anyhow::Ok(app)
        }
        .await;
        let elapsed = start.elapsed();
        match outcome {
            Ok(app) => Ok((elapsed, [app, sandbox])),
            Err(error) => {
                for id in ids.iter().rev() {
                    let _ = force_remove(&self.docker, id).await;
                }
                Err(error)
            }
        }
    }

    /// Force-removes a container [`DockerAnchor::start_and_keep`] left running.
    pub async fn remove(&self, id: &str) -> anyhow::Result<()> {
        force_remove(&self.docker, id).await
    }

    /// Creates a container of `image` (default command) labelled as this anchor's, on
    /// `network_mode` (the default bridge if none).
    async fn create(&self, image: &str, network_mode: Option<String>) -> anyhow::Result<String> {
        let labels = HashMap::from([
            (BENCH_LABEL.to_owned(), self.bench.clone()),
            (BENCH_PID_LABEL.to_owned(), std::process::id().to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            labels: Some(labels),
            host_config: network_mode.map(|mode| HostConfig {
                network_mode: Some(mode),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .with_context(|| format!("creating a container of {image}"))?;
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> anyhow::Result<()> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .with_context(|| format!("starting container {id}"))
    }

    /// The container's IP address (on its only network).
    async fn address(&self, id: &str) -> anyhow::Result<String> {
        let inspected = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .with_context(|| format!("inspecting container {id}"))?;
        let networks = inspected
            .network_settings
            .and_then(|settings| settings.networks)
            .unwrap_or_default();
        networks
            .get("bridge")
            .or_else(|| networks.values().next())
            .and_then(|endpoint| endpoint.ip_address.clone())
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| anyhow!("container {id} has no IP address"))
    }

    /// Asks `http://<ip>:<port><path>` every 2 ms until it answers 200.
    async fn wait_ready(
        &self,
        ip: &str,
        port: u16,
        path: &str,
        start: Instant,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let url = format!("http://{ip}:{port}{path}");
        let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        loop {
            let request = Request::get(uri.clone()).body(Full::default())?;
            let answer = tokio::time::timeout(ANCHOR_REQUEST_TIMEOUT, self.http.request(request));
            if let Ok(Ok(response)) = answer.await
                && response.status() == StatusCode::OK
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("{url} did not answer 200 within {timeout:?}");
            }
            tokio::time::sleep(ANCHOR_POLL).await;
        }
    }
}

/// Whether a pod's `Ready` condition is `True`.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The status of a node's `Ready` condition (`True`, `False`, `Unknown`), if it has one.
pub fn node_ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// One agent run by [`NodeAgents`].
struct RunningAgent {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), AgentError>>,
}

/// Node agents run as tasks of this process on the local Docker engine, each with its own
/// stop signal, so a benchmark can stop one the way a machine dies and later start a fresh
/// agent under the same name (the machine coming back).
///
/// Every agent has shipshape's default settings ([`AgentConfig::new`]: heartbeat 1 s,
/// containers removed when it stops) and keeps its files in `<data_dir>/nodes/<name>`.
/// Dropping this signals every agent to stop; [`NodeAgents::stop_all`] also waits for them
/// to have removed their containers.
pub struct NodeAgents {
    credentials: Credentials,
    docker: Docker,
    cluster: String,
    token: String,
    data_dir: PathBuf,
    running: BTreeMap<String, RunningAgent>,
    /// Agents told to stop whose cleanup has not been awaited yet.
    stopping: Vec<(String, RunningAgent)>,
}

impl std::fmt::Debug for NodeAgents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgents")
            .field("cluster", &self.cluster)
            .field("running", &self.running.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl NodeAgents {
    /// Agents for `control_plane`'s cluster, none running yet; `data_dir` is the cluster's.
    /// Creates the pod network first if it is missing, as `LocalCluster` does: agents
    /// starting together would each create it (Docker allows duplicate names), and their
    /// pods would then fail on an ambiguous network name.
    pub async fn new(
        control_plane: &ControlPlane,
        docker: Docker,
        data_dir: &Path,
    ) -> anyhow::Result<NodeAgents> {
        shipshape::agent::runtime::ensure_network(&docker)
            .await
            .context("creating the pod network")?;
        Ok(NodeAgents {
            credentials: control_plane.credentials(),
            docker,
            cluster: control_plane.cluster_id().to_owned(),
            token: control_plane.token().to_owned(),
            data_dir: data_dir.to_owned(),
            running: BTreeMap::new(),
            stopping: Vec::new(),
        })
    }

    /// Starts a fresh agent for node `name` (registering the Node, or taking over the one a
    /// previous agent of that name left). Call it inside the tokio runtime.
    pub fn start(&mut self, name: &str) -> anyhow::Result<()> {
        if self.running.contains_key(name) {
            bail!("the agent of node {name} is already running");
        }
        let client = self
            .credentials
            .client()
            .with_context(|| format!("building the API client of node {name}"))?;
        let dir = self.data_dir.join("nodes").join(name);
        let config = AgentConfig::new(name, &self.cluster, dir, &self.token);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(agent::run(client, self.docker.clone(), config, stopped));
        self.running
            .insert(name.to_owned(), RunningAgent { stop, task });
        Ok(())
    }

    /// The names of the nodes whose agents run, in order.
    pub fn running(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// Stops node `name`'s agent as if its machine died, as far as the cluster can tell: its
    /// heartbeat stops, nothing more is reported, and its containers go (the agent removes
    /// them on its way out). Returns at once; [`NodeAgents::settle`] waits for the removal.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let agent = self
            .running
            .remove(name)
            .ok_or_else(|| anyhow!("the agent of node {name} is not running"))?;
        let _ = agent.stop.send(true);
        self.stopping.push((name.to_owned(), agent));
        Ok(())
    }

    /// Waits until every stopped agent has finished (its containers removed); fails if one
    /// of them had failed.
    pub async fn settle(&mut self) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        for (name, agent) in self.stopping.drain(..) {
            match agent.task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("node agent {name} failed: {e}")),
                Err(e) => failures.push(format!("node agent {name} panicked: {e}")),
            }
        }
        if !failures.is_empty() {
            bail!("{}", failures.join("; "));
        }
        Ok(())
    }

    /// Stops every agent and waits until each has removed its containers.
    pub async fn stop_all(&mut self) -> anyhow::Result<()> {
        for name in self.running() {
            self.kill(&name)?;
        }
        self.settle().await
    }

    /// Waits until node `name` is registered with `Ready=True`, failing at once (with the
    /// agent's error) if its agent ended.
    pub async fn wait_ready(&mut self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let client = self
            .credentials
            .client()
            .context("building an API client")?;
        let nodes: Api<Node> = Api::all(client);
        let deadline = Instant::now() + timeout;
        loop {
            let finished = self
                .running
                .get(name)
                .ok_or_else(|| anyhow!("the agent of node {name} is not running"))?
                .task
                .is_finished();
            if finished {
                let agent = self.running.remove(name).map(|a| a.task);
                let outcome = match agent {
                    Some(task) => match task.await {
                        Ok(Ok(())) => "it stopped".to_owned(),
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => format!("it panicked: {e}"),
                    },
                    None => "it is gone".to_owned(),
                };
                bail!("the agent of node {name} ended before its node was Ready: {outcome}");
            }
            let node = nodes
                .get_opt(name)
                .await
                .with_context(|| format!("reading node {name}"))?;
            if node.as_ref().and_then(node_ready_status) == Some("True") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {name} did not register as Ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NodeAgents {
    fn drop(&mut self) {
        // The agents remove their containers as long as the runtime keeps running.
        for agent in self.running.values() {
            let _ = agent.stop.send(true);
        }
    }
}

/// What a [`Tracker`] has seen of one object: its latest version, when it first appeared,
/// when it went, and when each of its marks last turned true.
#[derive(Debug, Clone)]
pub struct Seen<K> {
    /// The latest version seen (the last one, for an object that went).
    pub object: K,
    /// When the watch first showed it.
    pub first_seen: Instant,
    /// When the watch showed it deleted.
    pub gone: Option<Instant>,
    /// When each mark last turned from false (or absent) to true.
    rose: BTreeMap<&'static str, Instant>,
    /// The marks true in the latest version.
    current: BTreeSet<&'static str>,
}

impl<K> Seen<K> {
    /// Whether `mark` holds for the latest version.
    pub fn is(&self, mark: &str) -> bool {
        self.current.contains(mark)
    }

    /// When `mark` last turned true (whether or not it still holds).
    pub fn since(&self, mark: &str) -> Option<Instant> {
        self.rose.get(mark).copied()
    }

    /// Whether it still exists.
    pub fn live(&self) -> bool {
        self.gone.is_none()
    }
}

/// What a [`Tracker`] holds.
struct Tracked<K> {
    /// By uid.
    objects: BTreeMap<String, Seen<K>>,
    /// Whether the watcher's first list is in.
    synced: bool,
    /// The last error of the watch, if any (it retries on its own).
    last_error: Option<String>,
}

/// Follows the objects an API watch selects (a kube-rs watcher, which relists and retries on
/// its own), in a background task, recording for each the instant the watch showed it, the
/// instant each of its *marks* turned true, and the instant it went.
///
/// Marks are named by a function of the object (`["bound", "ready"]`), evaluated on every
/// version seen. Times are those of the watch events' arrival in this process, so a stage
/// read afterwards is as precise as the watch is prompt (a few milliseconds here), and
/// independent of when a waiter woke up. The task stops when the tracker is dropped.
pub struct Tracker<K> {
    state: Arc<Mutex<Tracked<K>>>,
    changes: watch::Receiver<()>,
    task: JoinHandle<()>,
}

impl<K> std::fmt::Debug for Tracker<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker").finish_non_exhaustive()
    }
}

impl<K> Drop for Tracker<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K> Tracker<K>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    /// Starts following what `config` selects through `api`; `marks` names the marks that
    /// hold for a version of an object. Call it inside the tokio runtime.
    pub fn start(
        api: Api<K>,
        config: watcher::Config,
        marks: fn(&K) -> Vec<&'static str>,
    ) -> Tracker<K> {
        let state = Arc::new(Mutex::new(Tracked {
            objects: BTreeMap::new(),
            synced: false,
            last_error: None,
        }));
        let (notify, changes) = watch::channel(());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, config).default_backoff().boxed();
            let mut relisted: Option<BTreeSet<String>> = None;
            while let Some(event) = events.next().await {
                let now = Instant::now();
                let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
                match event {
                    Ok(watcher::Event::Init) => relisted = Some(BTreeSet::new()),
                    Ok(watcher::Event::InitApply(object)) => {
                        if let Some(seen) = relisted.as_mut() {
                            seen.insert(uid_of(&object));
                        }
                        record(&mut state.objects, object, marks, now, false);
                    }
                    Ok(watcher::Event::InitDone) => {
                        // Whatever went while the watch was not looking.
                        if let Some(seen) = relisted.take() {
                            for (uid, object) in state.objects.iter_mut() {
                                if object.gone.is_none() && !seen.contains(uid) {
                                    object.gone = Some(now);
                                }
                            }
                        }
                        state.synced = true;
                    }
                    Ok(watcher::Event::Apply(object)) => {
                        record(&mut state.objects, object, marks, now, false);
                    }
                    Ok(watcher::Event::Delete(object)) => {
                        record(&mut state.objects, object, marks, now, true);
                    }
                    Err(e) => state.last_error = Some(e.to_string()),
                }
                drop(state);
                notify.send_replace(());
            }
        });
        Tracker {
            state,
            changes,
            task,
        }
    }

    /// A copy of everything seen so far, gone objects included.
    pub fn snapshot(&self) -> Vec<Seen<K>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.objects.values().cloned().collect()
    }

    /// Waits until `check`, given everything seen so far (gone objects included), returns
    /// `Some`; checks after every event, once the watch's first list is in. Fails after
    /// `timeout`, naming `what` and the watch's last error.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&[&Seen<K>]) -> Option<T>,
    ) -> anyhow::Result<T> {
        let mut changes = self.changes.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            let last_error = {
                let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.synced {
                    let all: Vec<&Seen<K>> = state.objects.values().collect();
                    if let Some(found) = check(&all) {
                        return Ok(found);
                    }
                }
                state.last_error.clone()
            };
            let why = last_error
                .map(|e| format!(" (the watch's last error: {e})"))
                .unwrap_or_default();
            if self.task.is_finished() {
                bail!("the watch ended while waiting for {what}{why}");
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the watch ended while waiting for {what}{why}"),
                Err(_) => bail!("{what} did not happen within {timeout:?}{why}"),
            }
        }
    }
}

/// The uid of an object (its name when it has none).
fn uid_of<K: kube::Resource>(object: &K) -> String {
    let meta = object.meta();
    meta.uid
        .clone()
        .or_else(|| meta.name.clone())
        .unwrap_or_default()
}

/// Records a version of `object` seen at `now` (its last, if `deleted`).
fn record<K: kube::Resource + Clone>(
    objects: &mut BTreeMap<String, Seen<K>>,
    object: K,
    marks: fn(&K) -> Vec<&'static str>,
    now: Instant,
    deleted: bool,
) {
    let current: BTreeSet<&'static str> = marks(&object).into_iter().collect();
    let seen = objects.entry(uid_of(&object)).or_insert_with(|| Seen {
        object: object.clone(),
        first_seen: now,
        gone: None,
        rose: BTreeMap::new(),
        current: BTreeSet::new(),
    });
    for mark in &current {
        if !seen.current.contains(mark) {
            seen.rose.insert(mark, now);
        }
    }
    seen.current = current;
    seen.object = object;
    if deleted {
        seen.gone.get_or_insert(now);
    }
}

/// Criterion as the benchmarks that start containers use it: each iteration takes a
/// second or more, so the fewest samples criterion allows (10), a short warm-up and a
/// short target time (criterion warns it cannot fit them; that is expected), then the
/// command line's options.
pub fn container_criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args()
}

#[cfg(test)]
mod tests {
    use super::{base64, median, percentile};
    use std::time::Duration;

    #[test]
    fn percentiles_by_nearest_rank() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&ms(&[7]), 0.9), Some(Duration::from_millis(7)));
        let ten = ms(&[10, 1, 9, 2, 8, 3, 7, 4, 6, 5]);
        assert_eq!(percentile(&ten, 0.5), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&ten, 0.9), Some(Duration::from_millis(9)));
        assert_eq!(percentile(&ten, 1.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&ten, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&ten), Some(Duration::from_micros(5500)));
        assert_eq!(median(&ms(&[3, 1, 2])), Some(Duration::from_millis(2)));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }
}
