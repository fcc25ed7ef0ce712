//! # Peers: store replicas in different processes, talking over HTTPS
//!
//! Each member of a control plane listens on a *peer address* next to its API address, and
//! only its fellow members may talk to it there: the connection is TLS in both directions,
//! and each side must show a certificate of the cluster CA ([`crate::apiserver::tls::
//! peer_tls`]). Every request also names the cluster and the sending member; a member of
//! another cluster is refused with a message that says so, on both sides.
//!
//! Two requests, both `POST`, HTTP/1.1 with keep-alive:
//!
//! - `/raft/messages`: Raft messages, in raft-rs's own protobuf encoding, each preceded by
//!   its length (`u32`, big-endian). One task per peer sends them in order, as many as are
//!   queued in one request, and streams a large body (a snapshot) in chunks of
//!   [`CHUNK`] bytes. A message that does not decode is logged and dropped; Raft resends.
//!   A peer that cannot be reached is reported to raft-rs (`report_unreachable`), and so is
//!   the fate of every snapshot (`report_snapshot`), as raft-rs asks.
//! - `/raft/propose`: a write forwarded by a member that does not lead
//!   ([`super::Store::write`]); the body is the write's ops in the log's encoding, the
//!   answer its outcome ([`encode_outcome`]).
//! - `/raft/remove-member`: a member's removal forwarded the same way
//!   ([`super::Store::remove_member`]); the body is the member's id.
//! - `/raft/add-member`: a member's addition ([`super::Store::add_member`]); the body is
//!   the member's id and then its peer address.
//!
//! Who the other members are changes while a member runs: a configuration change that adds
//! a member names its peer address, and every member adds it to its [`Roster`] as the
//! change applies; one that removes a member takes it out, and from then on what it sends
//! is refused.
//!
//! The queue to a peer is bounded; when it is full, messages are dropped rather than
//! slowing the raft driver down.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, TryFutureExt};
use http::header::HOST;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::codec::{Reader, decode_ops, encode_ops, push_bytes};
use super::state::Record;
use super::transport::{Inbox, Transport};
use super::{Op, Store, StoreError, WriteResult};

/// Header naming the cluster a request belongs to.
const CLUSTER_HEADER: &str = "shipshape-cluster";

/// Header naming the member that sent a request.
const FROM_HEADER: &str = "shipshape-member";

/// Size of the pieces a large body is streamed in.
pub const CHUNK: usize = 64 * 1024;

/// How many messages wait for one peer before new ones are dropped.
const QUEUE: usize = 4096;

/// How many queued messages go in one request.
const BATCH: usize = 256;

/// How long connecting (TCP and TLS) to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a request to a peer may take before it counts as lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause before trying a peer that could not be reached again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The largest body a peer accepts (a snapshot of the whole store fits many times).
const MAX_BODY: usize = 1 << 30;

type PeerBody = BoxBody<Bytes, Infallible>;

/// Where the other members reach one: a host — an IP address, or a name looked up each
/// time a connection is made, so that a member whose machine comes back with another
/// address (a container started again) is found again — and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    /// An IP address, or a host name.
    pub host: String,
    /// The peer port.
    pub port: u16,
}

impl PeerAddress {
    /// The host as an IP address, if it is one.
    fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Where this member listens for its peers: its own address if the host is an IP
    /// address; every address of the machine if it is a name (which the machine answers
    /// to on whatever address it has).
    pub fn listen(&self) -> SocketAddr {
        SocketAddr::new(self.ip().unwrap_or(Ipv4Addr::UNSPECIFIED.into()), self.port)
    }

    /// The name a peer's certificate must carry for this address.
    fn server_name(&self) -> Result<rustls::pki_types::ServerName<'static>, String> {
        match self.ip() {
            Some(ip) => Ok(rustls::pki_types::ServerName::IpAddress(ip.into())),
            None => rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|_| format!("{:?} is not a host name", self.host)),
        }
    }
}

impl From<SocketAddr> for PeerAddress {
    fn from(address: SocketAddr) -> Self {
        PeerAddress {
            host: address.ip().to_string(),
            port: address.port(),
        }
    }
}

impl std::fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl std::str::FromStr for PeerAddress {
    type Err = String;

    /// `HOST:PORT`: an IPv4 address, `[IPv6]`, or a host name, then a port.
    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(address) = text.parse::<SocketAddr>() {
            return Ok(address.into());
        }
        let wrong =
            || format!("{text:?} is not HOST:PORT (an IP address or a host name, and a port)");
        let (host, port) = text.rsplit_once(':').ok_or_else(wrong)?;
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(wrong)?;
        let is_name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !is_name {
            return Err(wrong());
        }
        Ok(PeerAddress {
            host: host.to_owned(),
            port,
        })
    }
}

/// The peer address of every other member, by Raft id: those a member starts with, and
/// then those its configuration changes add and remove. Clones share one roster.
#[derive(Clone, Default)]
pub struct Roster(Arc<RwLock<BTreeMap<u64, PeerAddress>>>);

impl Roster {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, PeerAddress>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, PeerAddress>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Where member `id` is reached, if it is a member.
    pub fn get(&self, id: u64) -> Option<PeerAddress> {
        self.read().get(&id).cloned()
    }

    /// Whether `id` is one of the other members.
    pub fn contains(&self, id: u64) -> bool {
        self.read().contains_key(&id)
    }

    /// The other members' ids.
    pub fn ids(&self) -> Vec<u64> {
        self.read().keys().copied().collect()
    }

    /// Adds member `id`; `false` if it was already there (its address is kept).
    fn insert(&self, id: u64, address: PeerAddress) -> bool {
        let mut peers = self.write();
        !peers.contains_key(&id) && peers.insert(id, address).is_none()
    }

    /// Takes member `id` out; `false` if it was not there.
    fn remove(&self, id: u64) -> bool {
        self.write().remove(&id).is_some()
    }
}

impl FromIterator<(u64, PeerAddress)> for Roster {
    fn from_iter<I: IntoIterator<Item = (u64, PeerAddress)>>(peers: I) -> Self {
        Roster(Arc::new(RwLock::new(peers.into_iter().collect())))
    }
}

impl std::fmt::Debug for Roster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.read().iter()).finish()
    }
}

/// Who the members are and how they prove it.
#[derive(Clone)]
pub struct PeerConfig {
    /// This member's Raft id.
    pub id: u64,
    /// The cluster's id; requests naming another are refused.
    pub cluster_id: String,
    /// The other members, by Raft id (shared with every clone of this config).
    pub peers: Roster,
    /// TLS for the peer listener (client certificates required).
    pub server_tls: Arc<rustls::ServerConfig>,
    /// TLS for connections to other members (with this member's certificate).
    pub client_tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("id", &self.id)
            .field("cluster_id", &self.cluster_id)
            .field("peers", &self.peers)
            .finish()
    }
}

/// The network transport between members; see the module docs.
pub struct PeerTransport {
    config: Arc<PeerConfig>,
    links: Mutex<Links>,
    /// Idle connections for forwarded writes, by peer.
    idle: Pool,
}

/// The queue of messages to each peer, and what its sender task needs.
#[derive(Default)]
struct Links {
    queues: HashMap<u64, mpsc::Sender<Message>>,
    /// Queues' other ends, until [`Transport::attach`] starts a sender task per peer.
    unstarted: HashMap<u64, mpsc::Receiver<Message>>,
    /// Where what peers send back goes, once the driver runs.
    inbox: Option<Inbox>,
}

impl std::fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTransport")
            .field("config", &self.config)
            .finish()
    }
}

impl PeerTransport {
    /// A transport to the members `config` lists; nothing is sent before the store
    /// attaches to it.
    pub fn new(config: PeerConfig) -> Arc<PeerTransport> {
        let transport = PeerTransport {
            config: Arc::new(config),
            links: Mutex::new(Links::default()),
            idle: Pool::default(),
        };
        for id in transport.config.peers.ids() {
            transport.open_link(id);
        }
        Arc::new(transport)
    }

    /// Makes the queue to member `id`, and starts its sender if the driver runs.
    fn open_link(&self, id: u64) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut links = lock(&self.links);
        links.queues.insert(id, tx);
        if let Some(inbox) = links.inbox.clone() {
            tokio::spawn(send_to_peer(self.config.clone(), id, rx, inbox));
        } else {
            links.unstarted.insert(id, rx);
        }
    }

    /// Sends a change (a write at `/raft/propose`, a member's removal or addition at
    /// `/raft/remove-member` or `/raft/add-member`) to the leader; its outcome.
    fn forward_to(
        &self,
        leader: u64,
        path: &'static str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<WriteResult, StoreError>> + Send + 'static {
        let (config, idle) = (self.config.clone(), self.idle.clone());
        async move {
            let address = config.peers.get(leader).ok_or_else(|| {
                StoreError::Unavailable(format!("member {leader} is not a known peer"))
            })?;
            let reused = {
                let mut idle = lock(&idle);
                let pool = idle.entry(leader).or_default();
                pool.retain(|c| !c.is_closed());
                pool.pop()
            };
            let connection = reuse_or_connect(&config, &address, reused).await;
            let mut connection = connection.map_err(StoreError::Unavailable)?;
            // From here on the leader may have received the change: a failure leaves its
            // fate unknown.
            let body = Full::new(body.into()).boxed();
            let response = post(&config, &mut connection, path, body).await;
            let response = response.map_err(|_| StoreError::Dropped)?;
            let status = response.status();
            let body = response.into_body().collect().await;
            let body = body.map_err(|_| StoreError::Dropped)?.to_bytes();
            if status != StatusCode::OK {
                let why = String::from_utf8_lossy(&body);
                tracing::warn!(leader, %status, %why, "the leader refused a forwarded write");
                return Err(StoreError::Unavailable(format!(
                    "member {leader} refused the forwarded write ({status}): {why}"
                )));
            }
            lock(&idle).entry(leader).or_default().push(connection);
            decode_outcome(&body)?
        }
    }
}

/// Locks `mutex`, even if a thread panicked holding it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Transport for PeerTransport {
    fn send(&self, message: Message) {
        let links = lock(&self.links);
        let Some(queue) = links.queues.get(&message.to) else {
            tracing::warn!(
                to = message.to,
                "dropping a raft message to an unknown member"
            );
            return;
        };
        if queue.try_send(message).is_err() {
            tracing::debug!("dropping a raft message: the queue to its peer is full");
        }
    }

    fn attach(&self, inbox: Inbox) {
        let mut links = lock(&self.links);
        links.inbox = Some(inbox.clone());
        for (id, rx) in std::mem::take(&mut links.unstarted) {
            tokio::spawn(send_to_peer(self.config.clone(), id, rx, inbox.clone()));
        }
    }

    fn reaches_peers(&self) -> bool {
        true
    }

    fn member_added(&self, id: u64, address: &str) {
        if id == self.config.id {
            return;
        }
        let Ok(address) = address.parse::<PeerAddress>().inspect_err(|why| {
            tracing::warn!(
                member = id,
                why,
                "a member was added with an unusable address"
            );
        }) else {
            return;
        };
        if self.config.peers.insert(id, address.clone()) {
            tracing::info!(member = id, %address, "a member joined: sending to it");
            self.open_link(id);
        }
    }

    fn member_removed(&self, id: u64) {
        if self.config.peers.remove(id) {
            tracing::info!(member = id, "a member left: no longer talking to it");
        }
        let mut links = lock(&self.links);
        // Dropping its queue ends its sender task.
        links.queues.remove(&id);
        links.unstarted.remove(&id);
        drop(links);
        lock(&self.idle).remove(&id);
    }

    fn forward(
        &self,
        leader: u64,
        ops: Vec<Op>,
    ) -> BoxFuture<'static, Result<WriteResult, StoreError>> {
        self.forward_to(leader, "/raft/propose", encode_ops(&ops))
            .boxed()
    }

    fn forward_removal(&self, leader: u64, id: u64) -> BoxFuture<'static, Result<(), StoreError>> {
        let body = id.to_be_bytes().to_vec();
        self.forward_to(leader, "/raft/remove-member", body)
            .map_ok(|_| ())
            .boxed()
    }

    fn forward_addition(
        &self,
        leader: u64,
        id: u64,
        address: String,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let body = [&id.to_be_bytes(), address.as_bytes()].concat();
        self.forward_to(leader, "/raft/add-member", body)
            .map_ok(|_| ())
            .boxed()
    }
}

/// Idle connections for forwarded writes, by peer.
type Pool = Arc<Mutex<HashMap<u64, Vec<SendRequest<PeerBody>>>>>;

/// Posts `body` to `path` on a peer over `connection`, naming this cluster and member.
async fn post(
    config: &PeerConfig,
    connection: &mut SendRequest<PeerBody>,
    path: &'static str,
    body: PeerBody,
) -> Result<Response<Incoming>, String> {
    let mut request = Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = http::Uri::from_static(path);
    let headers = request.headers_mut();
    if let Ok(cluster) = HeaderValue::from_str(&config.cluster_id) {
        headers.insert(CLUSTER_HEADER, cluster);
    }
    headers.insert(FROM_HEADER, HeaderValue::from(config.id));
    headers.insert(HOST, HeaderValue::from_static("shipshape-peer"));
    let sent = tokio::time::timeout(REQUEST_TIMEOUT, connection.send_request(request)).await;
    let sent = sent.map_err(|_| "the member did not answer in time".to_owned())?;
    sent.map_err(|e| format!("the request failed: {e}"))
}

/// `reused` if it is still good for a request, else a new connection.
async fn reuse_or_connect(
    config: &PeerConfig,
    address: &PeerAddress,
    reused: Option<SendRequest<PeerBody>>,
) -> Result<SendRequest<PeerBody>, String> {
    if let Some(mut connection) = reused
        && connection.ready().await.is_ok()
    {
        return Ok(connection);
    }
    connect(config, address).await
}

/// Opens a TLS connection to a peer and starts HTTP/1.1 on it.
async fn connect(
    config: &PeerConfig,
    address: &PeerAddress,
) -> Result<SendRequest<PeerBody>, String> {
    let attempt = async {
        let name = address.server_name()?;
        let tcp = TcpStream::connect((address.host.as_str(), address.port)).await;
        let tcp = tcp.map_err(|e| format!("cannot connect to member at {address}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(config.client_tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                tracing::warn!(%address, error = %e, "TLS with a peer failed: is it a member of this cluster, with its CA?");
                format!("TLS with the member at {address} failed: {e}")
            })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP with the member at {address} failed: {e}"))?;
        // The connection runs on its own; its end (with the peer's) is of no interest.
        tokio::spawn(connection);
        Ok(sender)
    };
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, attempt).await;
    connected.map_err(|_| format!("connecting to the member at {address} timed out"))?
}

/// Sends the messages queued for one peer, in order, batching what is queued, until the
/// peer leaves the members.
async fn send_to_peer(
    config: Arc<PeerConfig>,
    id: u64,
    mut queue: mpsc::Receiver<Message>,
    inbox: Inbox,
) {
    let mut connection = None;
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let Some(address) = config.peers.get(id) else {
            break;
        };
        let is_snapshot = |m: &&Message| m.get_msg_type() == MessageType::MsgSnapshot;
        let snapshots = batch.iter().filter(is_snapshot).count();
        let delivered = send_batch(&config, &address, &mut connection, &batch).await;
        if let Err(why) = &delivered {
            tracing::debug!(peer = id, %address, %why, "could not send raft messages");
            inbox.unreachable(id);
        }
        for _ in 0..snapshots {
            inbox.snapshot_sent(id, delivered.is_ok());
        }
        if delivered.is_err() {
            // Whatever queued meanwhile is stale; Raft will send what still matters.
            while queue.try_recv().is_ok() {}
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        batch.clear();
    }
}

async fn send_batch(
    config: &PeerConfig,
    address: &PeerAddress,
    connection: &mut Option<SendRequest<PeerBody>>,
    batch: &[Message],
) -> Result<(), String> {
    let mut body = Vec::new();
    for message in batch {
        let bytes = message
            .write_to_bytes()
            .map_err(|e| format!("cannot encode a raft message: {e}"))?;
        push_bytes(&mut body, &bytes);
    }
    let body = Bytes::from(body);
    let len = body.len();
    let body: PeerBody = if len > CHUNK {
        // A snapshot, typically: stream it rather than hand hyper one huge buffer.
        let chunks = (0..len)
            .step_by(CHUNK)
            .map(move |at| Ok(Frame::data(body.slice(at..len.min(at + CHUNK)))));
        StreamBody::new(futures::stream::iter(chunks)).boxed()
    } else {
        Full::new(body).boxed()
    };
    let mut sender = reuse_or_connect(config, address, connection.take()).await?;
    let response = post(config, &mut sender, "/raft/messages", body).await?;
    let status = response.status();
    let answer = response.into_body().collect().await;
    let answer = answer.map(|b| b.to_bytes()).unwrap_or_default();
    if status != StatusCode::NO_CONTENT {
        let why = String::from_utf8_lossy(&answer).into_owned();
        tracing::warn!(%address, %status, %why, "a member refused our raft messages");
        return Err(format!("refused ({status}): {why}"));
    }
    *connection = Some(sender);
    Ok(())
}

/// Serves the peer listener until `stopped` turns true.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    config: Arc<PeerConfig>,
    mut stopped: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config.server_tls.clone());
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, remote) = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "failed to accept a peer connection");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, store, config) = (acceptor.clone(), store.clone(), config.clone());
        connections.spawn(async move {
            let stream = match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(stream)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::warn!(%remote, error = %e, "refused a peer connection: TLS failed (not a member of this cluster, or another CA)");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |request| {
                let (store, config) = (store.clone(), config.clone());
                async move { Ok::<_, Infallible>(handle(&store, &config, request, remote).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Finished connections leave the set (each holds its task's memory until then).
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn handle(
    store: &Store,
    config: &PeerConfig,
    request: Request<Incoming>,
    remote: SocketAddr,
) -> Response<Full<Bytes>> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (cluster, from) = (header(CLUSTER_HEADER), header(FROM_HEADER));
    if cluster != config.cluster_id {
        tracing::warn!(%remote, %cluster, ours = %config.cluster_id, "refused a member of another cluster");
        let (id, ours) = (config.id, &config.cluster_id);
        let why = format!("member {id} belongs to cluster {ours:?}, not {cluster:?}");
        return answer(StatusCode::FORBIDDEN, why);
    }
    let Some(from) = from
        .parse::<u64>()
        .ok()
        .filter(|id| config.peers.contains(*id))
    else {
        tracing::warn!(%remote, %from, "refused a request from an unknown member");
        let why = format!("member {from:?} is not a member this one knows");
        return answer(StatusCode::FORBIDDEN, why);
    };
    if request.method() != Method::POST {
        return answer(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    let path = request.uri().path().to_owned();
    let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
    let body = match limited.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return answer(StatusCode::BAD_REQUEST, format!("unreadable body: {e}")),
    };
    match path.as_str() {
        "/raft/messages" => {
            receive_messages(store, from, &body);
            answer(StatusCode::NO_CONTENT, Bytes::new())
        }
        "/raft/propose" => match decode_ops(&body) {
            Ok(ops) => answer(StatusCode::OK, encode_outcome(&store.write_here(ops).await)),
            Err(e) => answer(StatusCode::BAD_REQUEST, format!("undecodable write: {e}")),
        },
        "/raft/remove-member" => match <[u8; 8]>::try_from(&body[..]) {
            Ok(id) => member_answer(store.remove_member_here(u64::from_be_bytes(id)).await),
            Err(_) => answer(StatusCode::BAD_REQUEST, "a member id is 8 bytes"),
        },
        "/raft/add-member" => match addition(&body) {
            Ok((id, address)) => member_answer(store.add_member_here(id, address).await),
            Err(why) => answer(StatusCode::BAD_REQUEST, why),
        },
        _ => answer(StatusCode::NOT_FOUND, "no such peer endpoint"),
    }
}

/// The member id and the peer address in the body of an `/raft/add-member` request.
fn addition(body: &[u8]) -> Result<(u64, PeerAddress), String> {
    let (id, address) = body
        .split_first_chunk::<8>()
        .ok_or("a member id is 8 bytes")?;
    let address = std::str::from_utf8(address).map_err(|_| "a peer address is UTF-8")?;
    Ok((u64::from_be_bytes(*id), address.parse()?))
}

/// The answer to a forwarded change of the members: its outcome, encoded as a write's.
fn member_answer(outcome: Result<(), StoreError>) -> Response<Full<Bytes>> {
    let outcome = outcome.map(|()| WriteResult {
        revision: 0,
        previous: Vec::new(),
    });
    answer(StatusCode::OK, encode_outcome(&outcome))
}

/// Hands every well-formed message of a batch to the store; logs and drops the rest.
fn receive_messages(store: &Store, from: u64, body: &[u8]) {
    let mut reader = Reader::new(body);
    while !reader.is_empty() {
        let bytes = match reader.bytes() {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(from, error = %e, "dropped the rest of a malformed batch of raft messages");
                return;
            }
        };
        match Message::parse_from_bytes(bytes) {
            Ok(message) if message.from == from && message.to == store.id() => {
                store.receive(message)
            }
            Ok(message) => tracing::warn!(
                from,
                claimed_from = message.from,
                to = message.to,
                "dropped a raft message not from its sender or not for this member"
            ),
            Err(e) => {
                tracing::warn!(from, error = %e, "dropped a raft message that does not decode")
            }
        }
    }
}

/// Encodes a write's outcome for the member that forwarded it.
pub(super) fn encode_outcome(outcome: &Result<WriteResult, StoreError>) -> Vec<u8> {
    // A tag, then the outcome's text if it has one, then its numbers.
    let (tag, text, numbers) = match outcome {
        Ok(result) => (0, None, vec![result.revision, result.previous.len() as u64]),
        Err(StoreError::AlreadyExists { key }) => (1, Some(key.clone()), vec![]),
        Err(StoreError::NotFound { key }) => (2, Some(key.clone()), vec![]),
        Err(StoreError::Conflict {
            key,
            expected,
            actual,
        }) => (3, Some(key.clone()), vec![*expected, *actual]),
        Err(StoreError::NotLeader { leader }) => (4, None, vec![leader.unwrap_or(0)]),
        Err(StoreError::Unavailable(why)) => (5, Some(why.clone()), vec![]),
        Err(StoreError::LastVoter { id }) => (7, None, vec![*id]),
        Err(StoreError::NotAMember { id, members }) => (
            8,
            None,
            [&[*id, members.len() as u64][..], members].concat(),
        ),
        Err(StoreError::AlreadyAMember { id }) => (9, None, vec![*id]),
        Err(StoreError::RemovedMember { id }) => (10, None, vec![*id]),
        // Anything else happened after the leader took the write in: its fate is unknown.
        Err(other) => (6, Some(other.to_string()), vec![]),
    };
    let mut out = vec![tag];
    if let Some(text) = text {
        push_bytes(&mut out, text.as_bytes());
    }
    out.extend(numbers.iter().flat_map(|n| n.to_be_bytes()));
    for previous in outcome.iter().flat_map(|result| &result.previous) {
        match previous {
            Some(record) => {
                out.push(1);
                push_bytes(&mut out, &record.encode());
            }
            None => out.push(0),
        }
    }
    out
}

/// Decodes what [`encode_outcome`] wrote; the outer error is for a malformed answer.
pub(super) fn decode_outcome(bytes: &[u8]) -> Result<Result<WriteResult, StoreError>, StoreError> {
    let mut r = Reader::new(bytes);
    Ok(match r.u8()? {
        0 => Ok(WriteResult {
            revision: r.u64()?,
            previous: (0..r.u64()?)
                .map(|_| match r.u8()? {
                    0 => Ok(None),
                    _ => Record::decode(r.bytes()?).map(Some),
                })
                .collect::<Result<_, StoreError>>()?,
        }),
        1 => Err(StoreError::AlreadyExists { key: r.string()? }),
        2 => Err(StoreError::NotFound { key: r.string()? }),
        3 => Err(StoreError::Conflict {
            key: r.string()?,
            expected: r.u64()?,
            actual: r.u64()?,
        }),
        4 => Err(StoreError::NotLeader {
            leader: Some(r.u64()?).filter(|id| *id != 0),
        }),
        5 => Err(StoreError::Unavailable(r.string()?)),
        6 => {
            tracing::warn!(why = %r.string()?, "a forwarded write failed on the leader");
            Err(StoreError::Dropped)
        }
        7 => Err(StoreError::LastVoter { id: r.u64()? }),
        8 => Err(StoreError::NotAMember {
            id: r.u64()?,
            members: (0..r.u64()?).map(|_| r.u64()).collect::<Result<_, _>>()?,
        }),
        9 => Err(StoreError::AlreadyAMember { id: r.u64()? }),
        10 => Err(StoreError::RemovedMember { id: r.u64()? }),
        tag => {
            let why = format!("unknown outcome tag {tag} from the leader");
            return Err(StoreError::Corrupt(why));
        }
    })
}
