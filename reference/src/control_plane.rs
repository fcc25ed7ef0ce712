//! # The control plane: the seed's "master", assembled
//!
//! The seed's master runs the apiserver, the store, the scheduler and the controllers. Here
//! [`ControlPlane::start`] opens the store in the data directory, makes sure the namespaces
//! every cluster has exist, and serves the API; [`ControlPlane::start_components`] starts
//! the scheduler and the controllers as API clients, and publishes the apiserver as the
//! `kubernetes` Service of `default`, as every Kubernetes cluster does.
//!
//! The seed asks for several masters, for availability. A control plane started with
//! [`Members`] is one member of several: its store is one Raft voter among them, reached on
//! a peer address of its own ([`crate::store::peers`]); it serves the whole API like any
//! other member; and it runs the scheduler and the controllers only while it holds the
//! controllers' Lease ([`crate::election`]). All members share the cluster's CA, token and
//! id: [`prepare_members`] puts them in each member's data directory.
//!
//! It also owns the cluster's one credential: an admin bearer token kept in
//! `<data-dir>/token`, and a kubeconfig for it in `<data-dir>/kubeconfig`, both mode 0600.
//! Restarting on the same data directory keeps every object and the same token.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
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
use crate::store::peers::{self, PeerAddress, PeerConfig, PeerTransport};
use crate::store::transport::{NoPeers, Transport};
use crate::store::{Op, Precondition, Store, StoreConfig, StoreError};

/// How a control plane is set up.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// Where the store, the token and the kubeconfig live.
    pub data_dir: PathBuf,
    /// Where the apiserver listens (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The range Services' node ports come from (upstream's `--service-node-port-range`).
    pub node_ports: RangeInclusive<u16>,
    /// This control plane's place among several members; `None` for a control plane
    /// that is alone.
    pub members: Option<Members>,
    /// Names and addresses its serving certificate is valid for besides loopback, the
    /// listen address and `$HOSTNAME` (`--tls-san`).
    pub tls_names: Vec<String>,
    /// Where pods reach the apiserver (`--advertise`, in its certificate too), published as
    /// the `kubernetes` Service's endpoint; `None`: the listen address.
    pub advertise: Option<SocketAddr>,
    /// How many revisions back a watch can start (the store's history window); older
    /// ones get 410 Gone.
    pub history_window: u64,
}

/// One member's place among the members of a control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// This member's id (a Raft id, from 1).
    pub id: u64,
    /// Every member's peer address, this one's included, by id.
    pub peers: BTreeMap<u64, PeerAddress>,
    /// Whether this member joins running members that added it
    /// ([`Store::add_member`]), rather than starting a new control plane with them: it
    /// starts with no voters and takes everything from the leader's snapshot. Only
    /// matters while the member has no data.
    pub joining: bool,
}

impl Members {
    /// Checks that this member is one of the members; the one-line reason if not.
    pub fn check(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("member ids start at 1".into());
        }
        if !self.peers.contains_key(&self.id) {
            return Err(format!(
                "member {} is not among the members given ({})",
                self.id,
                self.peers
                    .keys()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(())
    }

    /// The name this run of this member holds the controllers' Lease under: its id and a
    /// random suffix, so that a member that restarts does not take for its own a Lease its
    /// previous run held (and that may have lapsed).
    pub fn identity(&self) -> String {
        format!("member-{}_{}", self.id, random_hex::<3>())
    }
}

impl ControlPlaneConfig {
    /// A control plane keeping its data in `data_dir` and listening on `listen`, with
    /// upstream's node port range.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        ControlPlaneConfig {
            data_dir: data_dir.into(),
            listen,
            node_ports: apiserver::NODE_PORTS,
            members: None,
            tls_names: Vec::new(),
            advertise: None,
            history_window: StoreConfig::single(PathBuf::new()).history_window,
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
    /// The members given do not make sense.
    #[error("invalid members: {0}")]
    Members(String),
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
    advertise: SocketAddr,
    cluster_id: String,
    ca_pem: String,
    kubeconfig: PathBuf,
    token: String,
    store: Store,
    members: Option<Members>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    /// The scheduler and the controllers (or the election that runs them), once started.
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
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let token = load_or_create_token(&dir.join("token"))?;
        let cluster_id = load_or_create_cluster_id(&dir.join("cluster-id"))?;
        let (stop, stopped) = watch::channel(false);
        let store_config = StoreConfig {
            history_window: config.history_window,
            ..StoreConfig::single(dir)
        };
        let store = match &config.members {
            None => {
                let store = open_store(store_config, Arc::new(NoPeers), dir).await?;
                wait_for_leader(&store, Duration::from_secs(10)).await?;
                bootstrap(&store).await.map_err(store_error(dir))?;
                store
            }
            Some(members) => {
                let store =
                    start_member(store_config, members, &cluster_id, stopped.clone()).await?;
                // The others may not be up yet: bootstrap once there is a quorum.
                let bootstrapping = store.clone();
                tokio::spawn(async move {
                    while let Err(e) = bootstrap(&bootstrapping).await {
                        tracing::debug!(error = %e, "waiting for a quorum to bootstrap");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                });
                store
            }
        };
        let listener = TcpListener::bind(config.listen).await;
        let listener = listener.map_err(listen_error(config.listen))?;
        let addr = listener.local_addr().map_err(listen_error(config.listen))?;
        let mut names = config.tls_names.clone();
        names.extend(config.advertise.map(|a| a.ip().to_string()));
        let tls = tls::load_or_create(dir, addr.ip(), &names).map_err(ControlPlaneError::Tls)?;
        let kubeconfig = dir.join("kubeconfig");
        write_private(&kubeconfig, &kubeconfig_json(addr, &token, &tls.ca_pem))?;
        let shared = Arc::new(Shared {
            store: store.clone(),
            token: token.clone(),
            node_ports: config.node_ports.clone(),
            decoded_events: Default::default(),
        });
        let server = tokio::spawn(apiserver::serve(
            listener,
            tls.server_config,
            shared,
            stopped,
        ));
        tracing::info!(%addr, data_dir = %dir.display(), "control plane serving");
        Ok(ControlPlane {
            addr,
            advertise: config.advertise.unwrap_or(reachable(addr)),
            cluster_id,
            ca_pem: tls.ca_pem.clone(),
            kubeconfig,
            token,
            store,
            members: config.members,
            stop,
            server,
            components: Vec::new(),
        })
    }

    /// The apiserver's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The apiserver's URL (through loopback if it listens on every address: the
    /// scheduler, the controllers and the kubeconfig use it, and the wildcard address is in
    /// no certificate).
    pub fn url(&self) -> String {
        format!("https://{}", reachable(self.addr))
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
    /// control plane (the apiserver alone, without them, is what the API tests exercise),
    /// the node lifecycle controller timed by `node_lifecycle`.
    pub fn start_components(
        &mut self,
        node_lifecycle: crate::controllers::node_lifecycle::NodeLifecycleConfig,
    ) -> Result<(), crate::client::ClientError> {
        let client = self.credentials().client_as("kube-controller-manager")?;
        let scheduling = self.credentials().client_as("kube-scheduler")?;
        let components = {
            let (client, addr, ca) = (client.clone(), self.advertise, self.credentials().ca_pem);
            move |stopped: watch::Receiver<bool>| {
                let clients = (client.clone(), scheduling.clone());
                run_components(clients, addr, (node_lifecycle.clone(), ca.clone()), stopped)
            }
        };
        let stopped = self.stop.subscribe();
        self.components.push(match &self.members {
            None => tokio::spawn(components(stopped)),
            Some(members) => tokio::spawn(crate::election::run(
                client,
                members.identity(),
                components,
                stopped,
            )),
        });
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

/// Runs the scheduler and the controllers until `stopped` turns true, publishes this
/// member's apiserver as the `kubernetes` Service, and writes the default roles.
async fn run_components(
    (client, scheduling): (kube::Client, kube::Client),
    addr: SocketAddr,
    (node_lifecycle, ca): (
        crate::controllers::node_lifecycle::NodeLifecycleConfig,
        String,
    ),
    stopped: watch::Receiver<bool>,
) {
    let publisher = {
        let mut stopped = stopped.clone();
        let client = client.clone();
        async move {
            let publish = async || {
                publish_bootstrap_policy(&client).await?;
                publish_kubernetes_service(&client, addr).await
            };
            while let Err(e) = publish().await {
                tracing::debug!(error = %e, "the kubernetes Service is not written yet");
                let _ = tokio::time::timeout(Duration::from_secs(1), stopped.changed()).await;
                if *stopped.borrow() {
                    return;
                }
            }
        }
    };
    let scheduler = {
        let stopped = stopped.clone();
        async move {
            let config = crate::scheduler::SchedulerConfig::default();
            if let Err(e) = crate::scheduler::run(scheduling, config, stopped).await {
                tracing::error!(error = %e, "the scheduler stopped");
            }
        }
    };
    let controllers = async move {
        if let Err(e) =
            crate::controllers::run_with(client, node_lifecycle, Some(ca), stopped).await
        {
            tracing::error!(error = %e, "the controllers stopped");
        }
    };
    tokio::join!(scheduler, controllers, publisher);
}

/// Writes the default ClusterRoles and ClusterRoleBindings
/// ([`crate::apiserver::BOOTSTRAP_POLICY`]) that are missing, as Kubernetes' apiserver does
/// when it starts; those present are left as they are.
async fn publish_bootstrap_policy(
    client: &kube::Client,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{Api, PostParams};
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Policy {
        cluster_roles: Vec<ClusterRole>,
        cluster_role_bindings: Vec<ClusterRoleBinding>,
    }
    let policy: Policy = serde_json::from_str(crate::apiserver::BOOTSTRAP_POLICY)?;
    let post = PostParams::default();
    let roles = Api::<ClusterRole>::all(client.clone());
    for role in &policy.cluster_roles {
        absent_or(roles.create(&post, role).await)?;
    }
    let bindings = Api::<ClusterRoleBinding>::all(client.clone());
    for binding in &policy.cluster_role_bindings {
        absent_or(bindings.create(&post, binding).await)?;
    }
    Ok(())
}

/// A create's outcome, where "already exists" is as good as created.
fn absent_or<T>(created: kube::Result<T>) -> kube::Result<()> {
    match created {
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => other.map(drop),
    }
}

/// Writes the Service every Kubernetes cluster has, `default/kubernetes` (cluster IP
/// 10.96.0.1, port 443 named `https`), and its Endpoints: the apiserver at `addr`. The
/// member that runs the controllers writes it when it starts them, so the Endpoints always
/// name a member that is alive (Kubernetes lists every apiserver; here, the leader's).
async fn publish_kubernetes_service(
    client: &kube::Client,
    addr: SocketAddr,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use k8s_openapi::api::core::v1::{Endpoints, Service};
    use kube::api::{Api, PostParams};
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let meta = json!({"name": "kubernetes", "namespace": "default", "labels": labels});
    let service = json!({"metadata": meta, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1",
        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": addr.port()}]}});
    let services = Api::<Service>::namespaced(client.clone(), "default");
    absent_or(
        services
            .create(&PostParams::default(), &serde_json::from_value(service)?)
            .await,
    )?;
    let subsets = json!([{"addresses": [{"ip": addr.ip().to_string()}],
        "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}]}]);
    let mut endpoints: Endpoints =
        serde_json::from_value(json!({"metadata": meta, "subsets": subsets}))?;
    let api = Api::<Endpoints>::namespaced(client.clone(), "default");
    match api.get_opt("kubernetes").await? {
        Some(old) if old.subsets == endpoints.subsets => {}
        Some(old) => {
            endpoints.metadata.resource_version = old.metadata.resource_version;
            api.replace("kubernetes", &PostParams::default(), &endpoints)
                .await?;
        }
        None => drop(api.create(&PostParams::default(), &endpoints).await?),
    }
    let subsets = subsets.as_array().map_or(&[][..], Vec::as_slice);
    crate::controllers::endpoints::write_slices(client, "default", "kubernetes", subsets).await?;
    Ok(())
}

async fn open_store(
    config: StoreConfig,
    transport: Arc<dyn Transport>,
    dir: &Path,
) -> Result<Store, ControlPlaneError> {
    Store::open(config, transport)
        .await
        .map_err(store_error(dir))
}

/// The error for the store in `dir` failing with `source`.
fn store_error(dir: &Path) -> impl FnOnce(StoreError) -> ControlPlaneError + '_ {
    |source| ControlPlaneError::Store {
        path: dir.to_owned(),
        source,
    }
}

/// The error for using `path` failing with `source`.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ControlPlaneError + '_ {
    |source| ControlPlaneError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The error for listening on `addr` failing with `source`.
fn listen_error(addr: SocketAddr) -> impl FnOnce(std::io::Error) -> ControlPlaneError {
    move |source| ControlPlaneError::Listen { addr, source }
}

/// Opens this member's store replica and serves its peer listener.
async fn start_member(
    store_config: StoreConfig,
    members: &Members,
    cluster_id: &str,
    stopped: watch::Receiver<bool>,
) -> Result<Store, ControlPlaneError> {
    members.check().map_err(ControlPlaneError::Members)?;
    let dir = &store_config.data_dir.clone();
    let own = &members.peers[&members.id];
    let peer_addr = own.listen();
    let material = tls::peer_tls(dir, &own.host, members.id).map_err(ControlPlaneError::Tls)?;
    let config = PeerConfig {
        id: members.id,
        cluster_id: cluster_id.to_owned(),
        peers: members
            .peers
            .iter()
            .filter(|(id, _)| **id != members.id)
            .map(|(id, addr)| (*id, addr.clone()))
            .collect(),
        server_tls: material.server,
        client_tls: material.client,
    };
    let listener = TcpListener::bind(peer_addr).await;
    let listener = listener.map_err(listen_error(peer_addr))?;
    let store_config = StoreConfig {
        id: members.id,
        voters: if members.joining {
            Vec::new()
        } else {
            members.peers.keys().copied().collect()
        },
        ..store_config
    };
    let transport = PeerTransport::new(config.clone());
    let store = open_store(store_config, transport, dir).await?;
    tokio::spawn(peers::serve(
        listener,
        store.clone(),
        Arc::new(config),
        stopped,
    ));
    tracing::info!(member = members.id, %peer_addr, "store replica serving its peers");
    Ok(store)
}

/// Prepares the data directories of the members `ids` under `root` (`members/1`, ...):
/// each gets the cluster's CA, token and id, made once in `root`. Returns the directories.
pub fn prepare_members(root: &Path, ids: &[u64]) -> Result<Vec<PathBuf>, ControlPlaneError> {
    std::fs::create_dir_all(root).map_err(io_error(root))?;
    load_or_create_token(&root.join("token"))?;
    load_or_create_cluster_id(&root.join("cluster-id"))?;
    tls::load_or_create(root, [127, 0, 0, 1].into(), &[]).map_err(ControlPlaneError::Tls)?;
    ids.iter().map(|id| prepare_member(root, *id)).collect()
}

/// Prepares the data directory of member `id` under `root`, whose CA, token and id
/// [`prepare_members`] made.
pub fn prepare_member(root: &Path, id: u64) -> Result<PathBuf, ControlPlaneError> {
    let dir = root.join("members").join(id.to_string());
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    for file in ["token", "cluster-id", "ca.crt", "ca.key"] {
        let (from, to) = (root.join(file), dir.join(file));
        let contents = std::fs::read_to_string(&from).map_err(io_error(&from))?;
        if std::fs::read_to_string(&to).ok().as_deref() != Some(contents.as_str()) {
            write_private(&to, &contents)?;
        }
    }
    Ok(dir)
}

/// The ids of the members whose data directories are under `root` (`members/ID`), in
/// order; none for a new root.
pub fn existing_members(root: &Path) -> Result<Vec<u64>, ControlPlaneError> {
    let dir = root.join("members");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ControlPlaneError::Io { path: dir, source }),
    };
    let mut ids: Vec<u64> = entries
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|id| *id > 0)
        .collect();
    ids.sort_unstable();
    Ok(ids)
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
        let uid = random_hex::<16>();
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
    load_or_create(path, |id| !id.is_empty() && id.len() <= 16, random_hex::<4>)
}

fn load_or_create_token(path: &Path) -> Result<String, ControlPlaneError> {
    load_or_create(path, |token| token.len() >= 32, random_hex::<32>)
}

/// The alphanumeric value kept in `path` if it is `long_enough`, else a `new` one, written
/// there.
fn load_or_create(
    path: &Path,
    long_enough: impl Fn(&str) -> bool,
    new: impl Fn() -> String,
) -> Result<String, ControlPlaneError> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim();
        if long_enough(existing) && existing.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(existing.to_owned());
        }
    }
    let value = new();
    write_private(path, &value)?;
    Ok(value)
}

/// `N` random bytes, in hex.
fn random_hex<const N: usize>() -> String
where
    rand::distributions::Standard: rand::distributions::Distribution<[u8; N]>,
{
    let bytes: [u8; N] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a file only its owner can read (mode 0600), replacing any old one atomically.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), ControlPlaneError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| io_error(path)(source);
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

/// Where a client on this machine reaches an apiserver listening on `addr`: a wildcard
/// listen address is reached through loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// A kubeconfig (JSON is valid YAML) for the admin token, trusting the cluster CA.
pub fn kubeconfig_json(addr: SocketAddr, token: &str, ca_pem: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let addr = reachable(addr);
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
