//! What the API server asks of node agents: a container's output (`pods/{name}/log`), a
//! process to talk to (`pods/{name}/exec`, `pods/{name}/attach`), and connections to the
//! pod's ports (`pods/{name}/portforward`).
//!
//! The API server checks the request against the pod — that it is bound to a node, that
//! the container is one of its own — then turns to the agent of the pod's node, at the
//! address and port the Node reports (`InternalIP`, `daemonEndpoints.kubeletEndpoint`),
//! with the cluster's bearer token.
//!
//! Logs come back as a body, whole or followed. Exec, attach and port-forward are a
//! connection upgrade: the client's request (to a WebSocket, or for port-forward to SPDY)
//! is passed on to the agent, and once the agent has switched protocols the bytes flow both
//! ways untouched until either side closes. The agent speaks the protocols itself
//! (`crate::agent`'s `streams` and `port_forward`); the API server
//! only relays, as Kubernetes' does to the kubelet. The agent judges the request (a client
//! that asks for SPDY, as kubectl does when a WebSocket is refused, is told what is
//! spoken), and what it refuses comes back as a 400 in its words.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::resources::{Query, get};
use super::routes::Target;
use super::status::ApiError;
use super::{Body, Shared};
use crate::api::{self, Resource, meta};

/// How long reaching an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The headers of a WebSocket or SPDY upgrade, passed on to the agent and back.
const UPGRADE_HEADERS: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_ACCEPT,
    header::HeaderName::from_static("x-stream-protocol-version"),
];

/// Whether `target` is a stream the agent serves: exec, attach or port-forward of a named
/// pod.
pub(super) fn is_stream(target: &Target) -> bool {
    target.resource.plural == "pods"
        && target.resource.group.is_empty()
        && target.name.is_some()
        && target.namespace.is_some()
        && matches!(
            target.subresource.as_deref(),
            Some("exec" | "attach" | "portforward")
        )
}

/// A pod the agent is asked about: its node's agent, and the container meant.
struct OnNode {
    /// `http://{ip}:{port}` of the node's agent.
    agent: String,
    container: String,
}

/// Finds the pod's node and agent, and which container `query` means; `one_container`:
/// whether the request is for one container (logs, exec) or the whole pod (port-forward,
/// to the address all its containers share).
fn locate(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    query: &Query,
    one_container: bool,
) -> Result<OnNode, ApiError> {
    let (pod, _) = get(shared, r, ns, name)?;
    let node = meta::path(&pod, "spec.nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("pod {name} does not have a host assigned")))?;
    let names: Vec<&str> = meta::each(&pod, "/spec/containers")
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let container = match (query.get("container"), names.as_slice()) {
        // Port-forward reaches the pod's address, which all its containers share.
        (_, [first, ..]) if !one_container => (*first).to_owned(),
        (Some(c), _) if names.contains(&c.as_str()) => c.clone(),
        (Some(c), _) => {
            return Err(ApiError::BadRequest(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        (None, [only]) => (*only).to_owned(),
        (None, _) => {
            return Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    let nodes = api::find("", "v1", "nodes").ok_or(ApiError::NoRoute)?;
    let (node_obj, _) = get(shared, nodes, None, node)?;
    let agent = agent_url(&node_obj);
    Ok(OnNode { agent, container })
}

/// `http://{ip}:{port}` of a Node's agent, as the Node reports it.
pub(super) fn agent_url(node: &Value) -> String {
    let ip = meta::internal_ip(node).unwrap_or("127.0.0.1");
    let port = &node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"];
    let port = port.as_u64().unwrap_or(0);
    match ip.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("http://[{v6}]:{port}"),
        Err(_) => format!("http://{ip}:{port}"),
    }
}

/// `GET {url}` of an agent, with the cluster's token: the answer's head, its body to come.
async fn send(shared: &Shared, url: &str) -> Result<http::Response<Incoming>, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("bad address {url}"))?;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let request = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {}", shared.token))
        .body(http_body_util::Empty::new())
        .map_err(|e| e.to_string())?;
    let answered = tokio::time::timeout(CONNECT_TIMEOUT, client.request(request)).await;
    let answered = answered.map_err(|_| "timed out".to_owned())?;
    answered.map_err(|e| e.to_string())
}

/// The whole body of an agent's answer.
async fn whole(response: http::Response<Incoming>) -> Result<Bytes, String> {
    let body = tokio::time::timeout(CONNECT_TIMEOUT, response.into_body().collect()).await;
    let body = body.map_err(|_| "timed out".to_owned())?;
    Ok(body.map_err(|e| e.to_string())?.to_bytes())
}

/// `GET {url}` of an agent: the body of a 2xx answer.
pub(super) async fn ask(shared: &Shared, url: &str) -> Result<Bytes, String> {
    let response = send(shared, url).await?;
    let status = response.status();
    let body = whole(response).await?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}

fn unavailable(node_of: &str, why: impl std::fmt::Display) -> ApiError {
    let message = format!("the agent of pod {node_of}'s node did not answer: {why}");
    ApiError::Unavailable(message)
}

/// `pods/{name}/log`: the container's output, fetched from the node agent running it.
pub(super) async fn pod_log(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    query: &Query,
) -> Result<http::Response<Body>, ApiError> {
    let OnNode { agent, container } = locate(shared, r, ns, name, query, true)?;
    let ns = ns.unwrap_or("default");
    let follow = query.get("follow").is_some_and(|v| v == "true" || v == "1");
    let tail = query.get("tailLines").and_then(|t| t.parse::<u64>().ok());
    let params = [
        tail.map(|t| format!("tailLines={t}")),
        follow.then(|| "follow=true".into()),
    ];
    let params: Vec<String> = params.into_iter().flatten().collect();
    let mut url = format!("{agent}/containerLogs/{ns}/{name}/{container}");
    if !params.is_empty() {
        url = format!("{url}?{}", params.join("&"));
    }
    let response = send(shared, &url).await.map_err(|e| unavailable(name, e))?;
    let status = response.status();
    let body = if follow && status.is_success() {
        // Streamed as the agent sends it, until the container stops or the client goes
        // (dropping this body closes the agent's stream, and Docker's).
        use futures::StreamExt as _;
        let frames = http_body_util::BodyStream::new(response.into_body())
            .take_while(|frame| std::future::ready(frame.is_ok()))
            .filter_map(|frame| std::future::ready(frame.ok()))
            .map(Ok::<_, std::convert::Infallible>);
        BodyExt::boxed(http_body_util::StreamBody::new(frames))
    } else {
        let bytes = whole(response).await.map_err(|e| unavailable(name, e))?;
        if status == StatusCode::NOT_FOUND {
            return Err(ApiError::BadRequest(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start"
            )));
        }
        if !status.is_success() {
            return Err(unavailable(name, String::from_utf8_lossy(&bytes)));
        }
        http_body_util::Full::new(bytes).boxed()
    };
    http::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// `pods/{name}/exec` and `pods/{name}/attach`: relays the client's upgrade to the agent.
pub(super) async fn stream(
    shared: &Shared,
    req: Request<Incoming>,
    target: &Target,
) -> Result<http::Response<Body>, ApiError> {
    let (Some(name), Some(verb)) = (target.name.as_deref(), target.subresource.as_deref()) else {
        return Err(ApiError::NoRoute);
    };
    let raw_query = req.uri().query().unwrap_or_default();
    let query: Query = form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    let ns = target.namespace.as_deref();
    let one_container = verb != "portforward";
    let OnNode { agent, container } =
        locate(shared, target.resource, ns, name, &query, one_container)?;
    let ns = ns.unwrap_or("default");
    let query = req.uri().query().map_or(String::new(), |q| format!("?{q}"));
    let url = match verb {
        "portforward" => format!("{agent}/portForward/{ns}/{name}{query}"),
        _ => format!("{agent}/{verb}/{ns}/{name}/{container}{query}"),
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|_| unavailable(name, format!("bad address {url}")))?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(80);
    let mut ask =
        Request::get(&uri).header(header::AUTHORIZATION, format!("Bearer {}", shared.token));
    for name in &UPGRADE_HEADERS {
        for value in req.headers().get_all(name) {
            ask = ask.header(name, value);
        }
    }
    let ask = ask
        .header(header::HOST, format!("{host}:{port}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::BadRequest(format!("the request cannot be passed on: {e}")))?;
    let connected = async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        let handshake = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await;
        let (mut sender, connection) = handshake.map_err(std::io::Error::other)?;
        tokio::spawn(connection.with_upgrades());
        let answer = sender.send_request(ask).await;
        answer.map_err(std::io::Error::other)
    };
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, connected).await;
    let answer = answer.map_err(|_| unavailable(name, "timed out"))?;
    let answer = answer.map_err(|e| unavailable(name, e))?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = answer.status();
        let why = answer
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(if status.is_client_error() {
            ApiError::BadRequest(format!("unable to {verb}: {why}"))
        } else {
            unavailable(name, why)
        });
    }
    let mut switched = http::Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for name in &UPGRADE_HEADERS {
        for value in answer.headers().get_all(name) {
            switched = switched.header(name, value);
        }
    }
    tokio::spawn(async move {
        let (client, agent) = tokio::join!(hyper::upgrade::on(req), hyper::upgrade::on(answer));
        if let (Ok(client), Ok(agent)) = (client, agent) {
            let (mut client, mut agent) = (TokioIo::new(client), TokioIo::new(agent));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
        }
    });
    switched
        .body(http_body_util::Empty::new().boxed())
        .map_err(|e| ApiError::Internal(e.to_string()))
}
