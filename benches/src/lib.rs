//! Shared helpers for the benchmarks: the anchors they measure shipshape against, and the
//! loads they drive.
//!
//! - [`Etcd`] starts a private etcd (the Debian `etcd-server` package) on loopback and kills
//!   it when dropped, panics included.
//! - [`EtcdClient`] writes to it through etcd's v3 JSON gateway over HTTP/1.1 with a
//!   keep-alive connection pool.
//! - [`ShipshapeStore`] opens a single-voter shipshape store in a temporary directory.
//! - [`Target`] and [`run_writes`] drive the same write load against either.

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use shipshape::store::transport::NoPeers;
use shipshape::store::{Op, Precondition, Store, StoreConfig};
use tempfile::TempDir;

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
    Etcd(EtcdClient),
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

#[cfg(test)]
mod tests {
    use super::base64;

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
