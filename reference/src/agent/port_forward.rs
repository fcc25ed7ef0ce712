//! `kubectl port-forward`: connections from the client's machine to a port of a pod.
//!
//! The apiserver relays `pods/{name}/portforward` to the agent of the pod's node, at the
//! kubelet's path `/portForward/{namespace}/{pod}`. The agent dials the pod's address on
//! the pod network (every container of a pod shares it) and copies bytes both ways.
//! Clients speak one of three protocols, all served here:
//!
//! - **SPDY inside a WebSocket** (`SPDY/3.1+portforward.k8s.io`): what kubectl 1.31 and
//!   later ask for first. The WebSocket's binary messages carry SPDY's bytes, cut anywhere.
//! - **SPDY** itself (`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version:
//!   portforward.k8s.io`): older kubectl, and newer kubectl when the first is refused.
//!   For each connection the client accepts locally it opens two SPDY streams, both with
//!   headers `port` and `requestID`: an `error` stream, then a `data` stream. The agent
//!   dials the port once it has both, copies the data stream to and from the pod, and when
//!   the pod closes the connection ends both streams (FIN). A dial that fails is told, in
//!   words, on the error stream, which kubectl prints.
//! - **Channels** (`v4.channel.k8s.io`, client libraries such as kube-rs): the ports are
//!   fixed by the query (`ports=8080,9090`), and port *i* has channel 2*i* for data and
//!   2*i*+1 for errors. Each message starts with its channel's byte; each channel first
//!   says its port, as two little-endian bytes.
//!
//! Neither protocol has flow control of its own here: a slow pod slows its TCP reads, and
//! that slows the client.

use std::collections::HashMap;
use std::net::IpAddr;

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt, future};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::logs::{Body, reply};
use super::runtime::Runtime;
use super::spdy::{self, Frame};
use super::streams::{framed, upgrade_to_websocket};

const PORT_FORWARD: &str = "portforward.k8s.io";
const TUNNELLED: &str = "SPDY/3.1+portforward.k8s.io";
const CHANNELS: &str = "v4.channel.k8s.io";
const STREAM_PROTOCOL: header::HeaderName =
    header::HeaderName::from_static("x-stream-protocol-version");
/// How many bytes one read from the pod sends on at most.
const CHUNK: usize = 32 * 1024;

/// The protocol a request asked for.
enum Speaks {
    Tunnelled,
    Spdy,
    Channels(Vec<u16>),
}

/// Serves `/portForward/{namespace}/{pod}`.
pub async fn serve(req: Request<Incoming>, runtime: &Runtime, pod: &str) -> Response<Body> {
    let Some(ip) = runtime.pod_ip(pod).await else {
        let why = format!("pod {pod} is not running on this node");
        return reply(StatusCode::NOT_FOUND, why);
    };
    let speaks = match speaks(&req) {
        Ok(speaks) => speaks,
        Err(why) => return reply(StatusCode::BAD_REQUEST, why),
    };
    let answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY);
    let protocol = match speaks {
        Speaks::Tunnelled => TUNNELLED,
        _ => CHANNELS,
    };
    let answer = match (&speaks, key.map(|k| derive_accept_key(k.as_bytes()))) {
        (Speaks::Spdy, _) => answer
            .header(header::UPGRADE, "SPDY/3.1")
            .header(STREAM_PROTOCOL, PORT_FORWARD),
        (_, Some(accept)) => answer
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .header(header::SEC_WEBSOCKET_PROTOCOL, protocol),
        (_, None) => return reply(StatusCode::BAD_REQUEST, "a WebSocket upgrade needs its key"),
    };
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let io = TokioIo::new(upgraded);
        if let Speaks::Spdy = speaks {
            let (read, write) = tokio::io::split(io);
            let incoming = Box::pin(futures::stream::unfold(read, |mut read| async move {
                let mut chunk = vec![0; CHUNK];
                let n = read.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                chunk.truncate(n);
                Some((Bytes::from(chunk), read))
            }));
            let outgoing = futures::sink::unfold(write, |mut write, bytes: Bytes| async move {
                write.write_all(&bytes).await.map(|()| write)
            });
            return spdy_session(incoming, Box::pin(outgoing), ip).await;
        }
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (sink, source) = ws.split();
        let incoming = source
            .take_while(|m| future::ready(matches!(m, Ok(m) if !m.is_close())))
            .filter_map(|m| {
                future::ready(m.ok().filter(Message::is_binary).map(Message::into_data))
            });
        let outgoing =
            sink.with(|bytes: Bytes| future::ready(Ok::<_, WsError>(Message::Binary(bytes))));
        match speaks {
            Speaks::Channels(ports) => channel_session(incoming, outgoing, ip, ports).await,
            _ => spdy_session(incoming, outgoing, ip).await,
        }
    });
    answer
        .header(header::CONNECTION, "Upgrade")
        .body(Body::default())
        .unwrap_or_else(|_| reply(StatusCode::INTERNAL_SERVER_ERROR, "bad upgrade answer"))
}

/// The protocol `req` asks for, or why none that is served here.
fn speaks<B>(req: &Request<B>) -> Result<Speaks, String> {
    let offers = |name: &header::HeaderName, word: &str| {
        let values = req.headers().get_all(name).iter();
        let mut words = values
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        words.any(|w| w.trim().eq_ignore_ascii_case(word))
    };
    let websocket = upgrade_to_websocket(req);
    if websocket && offers(&header::SEC_WEBSOCKET_PROTOCOL, TUNNELLED) {
        Ok(Speaks::Tunnelled)
    } else if websocket && offers(&header::SEC_WEBSOCKET_PROTOCOL, CHANNELS) {
        ports(req.uri().query()).map(Speaks::Channels)
    } else if offers(&header::UPGRADE, "SPDY/3.1") && offers(&STREAM_PROTOCOL, PORT_FORWARD) {
        Ok(Speaks::Spdy)
    } else {
        Err(format!(
            "port-forward is served as a WebSocket upgrade ({TUNNELLED} or {CHANNELS}) or an upgrade to SPDY/3.1 speaking {PORT_FORWARD}"
        ))
    }
}

/// The ports of a channels request: `ports` (as clients send it) or `port` (as the
/// kubelet is sent it), comma-separated or repeated.
fn ports(query: Option<&str>) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "ports" || key == "port" {
            for port in value.split(',') {
                match port.trim().parse::<u16>() {
                    Ok(port) if port > 0 => ports.push(port),
                    _ => return Err(format!("invalid port {port:?}: a port is 1 to 65535")),
                }
            }
        }
    }
    if ports.is_empty() {
        return Err("at least one port is required, as ports=N".into());
    }
    // Each port takes two of the 256 channels a WebSocket frame can name.
    if ports.len() > 128 {
        let asked = ports.len();
        return Err(format!("{asked} ports asked for: at most 128 at once"));
    }
    Ok(ports)
}

/// One forwarded connection, as SPDY opens it: its two streams, once each is known.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
}

/// Serves SPDY frames from `incoming` until the client goes, answering on `outgoing`.
async fn spdy_session<I, O>(mut incoming: I, outgoing: O, ip: IpAddr)
where
    I: Stream<Item = Bytes> + Unpin,
    O: Sink<Bytes> + Unpin + Send + 'static,
{
    let (to_client, writes) = mpsc::channel::<Bytes>(64);
    let writer = tokio::spawn(drain(writes, outgoing));
    let (mut reader, mut writer_state) = (spdy::Reader::default(), spdy::Writer::default());
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // The data streams being forwarded: where their bytes go, and the task to stop.
    let mut forwarding: HashMap<u32, (Option<mpsc::Sender<Bytes>>, AbortHandle)> = HashMap::new();
    'session: while let Some(chunk) = incoming.next().await {
        reader.push(&chunk);
        loop {
            let frame = match reader.next() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(why) => {
                    tracing::debug!("port-forward session ends: {why}");
                    break 'session;
                }
            };
            let answer = match frame {
                Frame::Open { id, headers } => {
                    let header = |name: &str| {
                        let found = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
                        found.map(|(_, v)| v.as_str()).unwrap_or_default()
                    };
                    let port = header("port").parse::<u16>().ok().filter(|p| *p > 0);
                    let (Some(port), kind @ ("error" | "data")) = (port, header("streamType"))
                    else {
                        let _ = to_client.send(spdy::reset(id, spdy::REFUSED_STREAM)).await;
                        continue;
                    };
                    let _ = to_client.send(writer_state.accept(id)).await;
                    let request = header("requestID").to_owned();
                    let pair = pairs.entry(request.clone()).or_default();
                    match kind {
                        "error" => pair.error = Some(id),
                        _ => pair.data = Some(id),
                    }
                    let (Some(error), Some(data)) = (pair.error, pair.data) else {
                        continue;
                    };
                    pairs.remove(&request);
                    forwarding.retain(|_, (_, task)| !task.is_finished());
                    let (from_client, bytes) = mpsc::channel(16);
                    let to_client = to_client.clone();
                    let task = tokio::spawn(async move {
                        let ended =
                            pipe(ip, port, bytes, &to_client, |b| spdy::data(data, false, b));
                        if let Err(e) = ended.await {
                            let why = format!("error forwarding port {port} to pod: {e}");
                            let _ = to_client
                                .send(spdy::data(error, false, why.as_bytes()))
                                .await;
                        }
                        for id in [data, error] {
                            let _ = to_client.send(spdy::data(id, true, b"")).await;
                        }
                    });
                    forwarding.insert(data, (Some(from_client), task.abort_handle()));
                    continue;
                }
                Frame::Data { id, fin, bytes } => {
                    if let Some((from_client, _)) = forwarding.get_mut(&id) {
                        if let Some(sender) = from_client.as_ref().filter(|_| !bytes.is_empty()) {
                            let _ = sender.send(bytes).await;
                        }
                        if fin {
                            // The sender dropped, what the pod reads ends: its EOF.
                            *from_client = None;
                        }
                    }
                    continue;
                }
                Frame::Reset { id } => {
                    if let Some((_, task)) = forwarding.remove(&id) {
                        task.abort();
                    }
                    continue;
                }
                Frame::Ping(id) => spdy::pong(id),
                Frame::GoAway => break 'session,
                Frame::Ignored => continue,
            };
            let _ = to_client.send(answer).await;
        }
    }
    for (_, task) in forwarding.into_values() {
        task.abort();
    }
    drop(to_client);
    let _ = writer.await;
}

/// Serves a channels session: every port dialled at once, until each is done or the
/// client goes.
async fn channel_session<I, O>(mut incoming: I, outgoing: O, ip: IpAddr, ports: Vec<u16>)
where
    I: Stream<Item = Bytes> + Unpin,
    O: Sink<Bytes> + Unpin + Send + 'static,
{
    let (to_client, writes) = mpsc::channel::<Bytes>(64);
    let writer = tokio::spawn(drain(writes, outgoing));
    let mut senders = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, port) in ports.into_iter().enumerate() {
        let (data, error) = (channel(2 * i), channel(2 * i + 1));
        for c in [data, error] {
            let _ = to_client.send(framed(c, &port.to_le_bytes())).await;
        }
        let (from_client, bytes) = mpsc::channel(16);
        senders.push(from_client);
        let to_client = to_client.clone();
        tasks.spawn(async move {
            if let Err(e) = pipe(ip, port, bytes, &to_client, |b| framed(data, b)).await {
                let why = format!("error forwarding port {port} to pod: {e}");
                let _ = to_client.send(framed(error, why.as_bytes())).await;
            }
        });
    }
    loop {
        tokio::select! {
            message = incoming.next() => match message.as_deref().and_then(<[u8]>::split_first) {
                Some((c, bytes)) => {
                    let port = usize::from(*c / 2);
                    if c % 2 == 0 && !bytes.is_empty() && port < senders.len() {
                        let _ = senders[port].send(Bytes::copy_from_slice(bytes)).await;
                    }
                }
                None if message.is_some() => {}
                None => break,
            },
            done = tasks.join_next() => if done.is_none() { break },
        }
    }
    tasks.abort_all();
    drop(to_client);
    let _ = writer.await;
}

/// The byte naming channel `n`; ports past the 128th share no channel and are not served.
fn channel(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// Sends what the session writes to the client, in order, until the session ends.
async fn drain<O: Sink<Bytes> + Unpin>(mut writes: mpsc::Receiver<Bytes>, mut outgoing: O) {
    while let Some(bytes) = writes.recv().await {
        if outgoing.send(bytes).await.is_err() {
            return;
        }
    }
    let _ = outgoing.close().await;
}

/// Dials the pod's `port` and copies: what the client sends (`from_client`, its end the
/// pod's EOF) to the pod, and what the pod sends to the client, wrapped by `wrap`, until
/// the pod closes the connection. An error is the dial's.
async fn pipe(
    ip: IpAddr,
    port: u16,
    mut from_client: mpsc::Receiver<Bytes>,
    to_client: &mpsc::Sender<Bytes>,
    wrap: impl Fn(&[u8]) -> Bytes,
) -> std::io::Result<()> {
    let pod = tokio::net::TcpStream::connect((ip, port)).await?;
    let (mut from_pod, mut to_pod) = pod.into_split();
    let upstream = async {
        while let Some(bytes) = from_client.recv().await {
            if to_pod.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
        future::pending::<()>().await;
    };
    let downstream = async {
        let mut chunk = vec![0; CHUNK];
        while let Ok(n @ 1..) = from_pod.read(&mut chunk).await {
            if to_client.send(wrap(&chunk[..n])).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_ports_or_port_and_must_be_real() {
        assert_eq!(ports(Some("ports=8080,9090")), Ok(vec![8080, 9090]));
        assert_eq!(ports(Some("port=80&port=443")), Ok(vec![80, 443]));
        assert!(ports(Some("ports=0")).is_err());
        assert!(ports(Some("ports=http")).is_err());
        assert!(ports(None).is_err());
        let many: Vec<String> = (1..=129).map(|p| p.to_string()).collect();
        assert!(ports(Some(&format!("ports={}", many.join(",")))).is_err());
        assert!(ports(Some(&format!("ports={}", many[..128].join(",")))).is_ok());
    }
}
