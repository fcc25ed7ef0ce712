//! # The control plane: the seed's "master", assembled
//!
//! The seed's master runs the apiserver, the store, the scheduler and the controllers. Here
//! [`ControlPlane::start`] opens the store in the data directory, makes sure the namespaces
//! every cluster has exist, and serves the API. (The scheduler and controllers arrive as API
//! clients in later steps; they will be started from here.)
//!
//! It also owns the cluster's one credential: an admin bearer token kept in
//! `<data-dir>/token`, and a kubeconfig for it in `<data-dir>/kubeconfig`, both mode 0600.
//! Restarting on the same data directory keeps every object and the same token.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::apiserver::{self, Shared, tls};
use crate::client::Credentials;
use crate::store::{Op, Precondition, Store, StoreConfig, StoreError, transport::NoPeers};

/// How a control plane is set up.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// Where the store, the token and the kubeconfig live.
    pub data_dir: PathBuf,
    /// Where the apiserver listens (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The range Services' node ports come from (upstream's `--service-node-port-range`).
    pub node_ports: RangeInclusive<u16>,
}

impl ControlPlaneConfig {
    /// A control plane keeping its data in `data_dir` and listening on `listen`, with
    /// upstream's node port range.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        ControlPlaneConfig {
            data_dir: data_dir.into(),
            listen,
            node_ports: apiserver::NODE_PORTS,
        }
    }
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The data directory or a file in it could not be used.
    #[error("failed to use {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store could not open (another process may hold the data directory).
    #[error("failed to open the store in {path}: {source}")]
    Store {
        /// The data directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// The cluster CA or the serving certificate could not be prepared.
    #[error(transparent)]
    Tls(tls::TlsError),
    /// The store never elected a leader.
    #[error("the store elected no leader within {0:?}")]
    NoLeader(Duration),
    /// The apiserver could not listen.
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running control plane.
pub struct ControlPlane {
    addr: SocketAddr,
    cluster_id: String,
    ca_pem: String,
    kubeconfig: PathBuf,
    token: String,
    store: Store,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    /// The scheduler and the controllers, once started.
    components: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("addr", &self.addr)
            .finish()
    }
}

/// The namespaces every cluster has.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

impl ControlPlane {
    /// Opens the store, bootstraps it, and starts serving the API.
    pub async fn start(config: ControlPlaneConfig) -> Result<ControlPlane, ControlPlaneError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| ControlPlaneError::Io {
            path: dir.clone(),
            source,
        })?;
        let token = load_or_create_token(&dir.join("token"))?;
        let cluster_id = load_or_create_cluster_id(&dir.join("cluster-id"))?;
        let store = Store::open(StoreConfig::single(dir), Arc::new(NoPeers))
            .await
            .map_err(|source| ControlPlaneError::Store {
                path: dir.clone(),
                source,
            })?;
        wait_for_leader(&store, Duration::from_secs(10)).await?;
        bootstrap(&store)
            .await
            .map_err(|source| ControlPlaneError::Store {
                path: dir.clone(),
                source,
            })?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ControlPlaneError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ControlPlaneError::Listen {
                addr: config.listen,
                source,
            })?;
        let tls = tls::load_or_create(dir, addr.ip()).map_err(ControlPlaneError::Tls)?;
        let kubeconfig = dir.join("kubeconfig");
        write_private(&kubeconfig, &kubeconfig_json(addr, &token, &tls.ca_pem))?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            store: store.clone(),
            token: token.clone(),
            node_ports: config.node_ports.clone(),
        });
        let server = tokio::spawn(apiserver::serve(
            listener,
            tls.server_config,
            shared,
            stopped.clone(),
        ));
        tracing::info!(%addr, data_dir = %dir.display(), "control plane serving");
        Ok(ControlPlane {
            addr,
            cluster_id,
            ca_pem: tls.ca_pem.clone(),
            kubeconfig,
            token,
            store,
            stop,
            server,
            components: Vec::new(),
        })
    }

    /// The apiserver's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The apiserver's URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The admin kubeconfig written for this control plane.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// What an API client of this control plane needs.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            server: self.url(),
            token: self.token.clone(),
            ca_pem: self.ca_pem.clone(),
        }
    }

    /// The cluster's id: it labels every container and names the pod network.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The admin bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Starts the scheduler and the controllers, in this process, as API clients of this
    /// control plane (the apiserver alone, without them, is what the API tests exercise).
    pub fn start_components(&mut self) -> Result<(), crate::client::ClientError> {
        self.start_components_with(
            crate::controllers::node_lifecycle::NodeLifecycleConfig::default(),
        )
    }

    /// [`ControlPlane::start_components`], with the node lifecycle timing given.
    pub fn start_components_with(
        &mut self,
        node_lifecycle: crate::controllers::node_lifecycle::NodeLifecycleConfig,
    ) -> Result<(), crate::client::ClientError> {
        let client = self.credentials().client()?;
        let (scheduler_client, stopped) = (client.clone(), self.stop.subscribe());
        self.components.push(tokio::spawn(async move {
            let config = crate::scheduler::SchedulerConfig::default();
            if let Err(e) = crate::scheduler::run(scheduler_client, config, stopped).await {
                tracing::error!(error = %e, "the scheduler stopped");
            }
        }));
        let stopped = self.stop.subscribe();
        self.components.push(tokio::spawn(async move {
            if let Err(e) = crate::controllers::run_with(client, node_lifecycle, stopped).await {
                tracing::error!(error = %e, "the controllers stopped");
            }
        }));
        Ok(())
    }

    /// Stops serving and closes the store cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for component in self.components {
            // They stop on the signal; a stuck one is not worth hanging the shutdown for.
            if tokio::time::timeout(Duration::from_secs(5), component)
                .await
                .is_err()
            {
                tracing::warn!("a control-plane component did not stop in time");
            }
        }
        let _ = self.server.await;
        self.store.shutdown().await;
    }
}

async fn wait_for_leader(store: &Store, limit: Duration) -> Result<(), ControlPlaneError> {
    let deadline = tokio::time::Instant::now() + limit;
    while !store.is_leader() {
        if tokio::time::Instant::now() > deadline {
            return Err(ControlPlaneError::NoLeader(limit));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Creates the system namespaces that do not exist yet.
async fn bootstrap(store: &Store) -> Result<(), StoreError> {
    for ns in SYSTEM_NAMESPACES {
        let key = format!("/registry/namespaces/{ns}");
        if store.get(&key)?.is_some() {
            continue;
        }
        let b: [u8; 16] = rand::random();
        let uid: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let obj = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {
                "name": ns,
                "uid": format!("{}-{}-{}-{}-{}", &uid[0..8], &uid[8..12], &uid[12..16], &uid[16..20], &uid[20..32]),
                "creationTimestamp": crate::api::meta::now_rfc3339(),
                "labels": {"kubernetes.io/metadata.name": ns},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        let value = serde_json::to_vec(&obj).unwrap_or_default();
        match store
            .write(vec![Op::put(key, value, Precondition::Absent)])
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A short random id, kept in the data directory so a restarted cluster keeps it (and the
/// next `up` finds containers a killed run left behind).
fn load_or_create_cluster_id(path: &Path) -> Result<String, ControlPlaneError> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let id = existing.trim();
        if !id.is_empty() && id.len() <= 16 && id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(id.to_owned());
        }
    }
    let bytes: [u8; 4] = rand::random();
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(path, &id)?;
    Ok(id)
}

fn load_or_create_token(path: &Path) -> Result<String, ControlPlaneError> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let t = existing.trim();
        if t.len() >= 32 && t.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(t.to_owned());
        }
    }
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(path, &token)?;
    Ok(token)
}

/// Writes a file only its owner can read (mode 0600), replacing any old one atomically.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), ControlPlaneError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| ControlPlaneError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// A kubeconfig (JSON is valid YAML) for the admin token, trusting the cluster CA.
fn kubeconfig_json(addr: SocketAddr, token: &str, ca_pem: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    // A wildcard listen address is reached through loopback.
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "shipshape", "cluster": {"server": format!("https://{addr}"), "certificate-authority-data": ca}}],
        "users": [{"name": "shipshape-admin", "user": {"token": token}}],
        "contexts": [{"name": "shipshape", "context": {"cluster": "shipshape", "user": "shipshape-admin", "namespace": "default"}}],
        "current-context": "shipshape",
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}
