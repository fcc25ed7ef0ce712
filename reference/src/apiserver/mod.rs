//! # The apiserver: the only door into the cluster
//!
//! The seed: "the apiserver is the entry point for every request; all components talk to
//! it, and only it reads and writes etcd." Here every component — kubectl, the scheduler,
//! controllers, node agents, the conformance kit — is an HTTP client of this module, and
//! only this module holds the [`Store`].
//!
//! It speaks a subset of the Kubernetes REST API, wire-compatible (see DESIGN.md):
//!
//! ```text
//! request ─▶ body limit ─▶ who (token) ─▶ may they (RBAC) ─┬─ discovery, /version, /openapi
//!                                                          ├─ reviews (whoami, can-i), answered
//!                                                          ├─ exec, attach, port-forward: to the agent
//!                                                          ├─ get / list / watch
//!                                                          └─ create / update / patch / delete
//!                                                                │ decode (JSON, or kubectl's protobuf)
//!                                                                │ apply, validate, default, set metadata
//!                                                                ▼
//!                                                  store write with a precondition
//! ```
//!
//! What it never does: schedule, reconcile, or touch Docker. It stores what clients
//! send, checked, and tells watchers what changed.
//!
//! Files: [`routes`] parses URLs; [`resources`] is the verbs; [`watch`] streams changes;
//! [`patch`] applies PATCH bodies; [`discovery`] answers what is served; [`status`] turns
//! failures into `Status` objects; [`protobuf`] decodes kubectl's protobuf bodies;
//! [`reviews`] answers `kubectl auth`; [`agents`] relays logs and streams to node agents;
//! [`access`] says who a request is from and whether RBAC lets them; [`apply`] is
//! server-side apply and the field managers every write records.

mod access;
pub use access::BOOTSTRAP_POLICY;
mod agents;
mod allocation;
mod apply;
pub use allocation::NODE_PORTS;
mod discovery;
mod form;
mod metrics;
mod paging;
pub mod patch;
mod protobuf;
mod proxy;
mod resources;
mod reviews;
mod routes;
pub mod status;
mod table;
pub mod tls;
mod watch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;

use crate::store::peers::PeerAddress;
use crate::store::{Store, StoreError};
use routes::Route;
use status::ApiError;

/// Largest request body accepted (Kubernetes' limit is 3 MiB too).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The response body type: whole documents and watch streams alike.
pub type Body = BoxBody<Bytes, Infallible>;

/// What every request handler shares.
pub struct Shared {
    /// The store; nobody else has it.
    pub store: Store,
    /// The bearer token that grants access.
    pub token: String,
    /// The range node ports are allocated from.
    pub node_ports: std::ops::RangeInclusive<u16>,
    /// The newest changes, decoded once for every watch ([`watch`]).
    pub(crate) decoded_events: Arc<watch::DecodedEvents>,
}

/// Header of `/readyz` answers naming the member (store replica) that answered.
pub const MEMBER_HEADER: &str = "shipshape-member";

/// Header of `/readyz` answers naming the member that leads the store, if one does.
pub const LEADER_HEADER: &str = "shipshape-store-leader";

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the API over TLS on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    shutdown: signal::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut connections = tokio::task::JoinSet::new();
    let mut stopping = shutdown.clone();
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "failed to accept a connection");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let mut stop = shutdown.clone();
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req, peer).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
                    }
                });
                // A finished connection's task stays in the set, memory and all, until it
                // is taken out: a server that lives for months accepts millions.
                while connections.try_join_next().is_some() {}
            }
        }
    }
    connections.abort_all();
}

/// A JSON response.
pub(crate) fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    json_bytes_response(code, serde_json::to_vec(body).unwrap_or_default())
}

/// A response whose body is JSON already encoded.
pub(crate) fn json_bytes_response(code: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn text_response(code: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(text.into()).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code(), &e.status())
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = routes::parse(&path);
    let response = match route {
        Route::Health => {
            let leader = shared.store.leader();
            let mut response = match (shared.store.failure(), leader) {
                (Some(why), _) => text_response(StatusCode::SERVICE_UNAVAILABLE, why),
                (None, Some(_)) => text_response(StatusCode::OK, "ok"),
                (None, None) => {
                    text_response(StatusCode::SERVICE_UNAVAILABLE, "store has no leader")
                }
            };
            // Which member answered and which one it follows, for tools and benchmarks
            // that need to find the leader of a control plane of several members.
            let headers = response.headers_mut();
            headers.insert(MEMBER_HEADER, shared.store.id().into());
            if let Some(leader) = leader {
                headers.insert(LEADER_HEADER, leader.into());
            }
            response
        }
        Route::Version => json_response(StatusCode::OK, &discovery::version()),
        route => match access::authenticate(&shared, req.headers()) {
            Ok(Some(who)) => match route_authorized(&shared, route, req, &who).await {
                Ok(resp) => resp,
                Err(e) => error_response(&e),
            },
            Ok(None) => error_response(&ApiError::Unauthorized),
            Err(e) => error_response(&e),
        },
    };
    tracing::debug!(%peer, %method, %path, status = response.status().as_u16(), "request");
    response
}

/// What a request on `route` does, as RBAC names it.
fn attributes(route: &Route, req: &Request<Incoming>) -> access::Attributes {
    let method = req.method();
    let owned = |s: &str| s.to_owned();
    let (group, rest, verb) = match route {
        Route::Target(t) => {
            let query = req.uri().query().unwrap_or("").as_bytes();
            let watch = form_urlencoded::parse(query).any(|(k, v)| k == "watch" && v != "false");
            let verb = match (method, &t.name, t.subresource.as_deref()) {
                (_, _, Some("exec" | "attach" | "portforward")) => "create",
                (&Method::GET, None, _) if watch => "watch",
                (&Method::GET, None, _) => "list",
                (&Method::GET, Some(_), _) => "get",
                (&Method::POST, ..) => "create",
                (&Method::PUT, ..) => "update",
                (&Method::PATCH, ..) => "patch",
                (&Method::DELETE, None, _) => "deletecollection",
                _ => "delete",
            };
            return access::Attributes {
                verb: verb.into(),
                group: t.resource.group.into(),
                resource: t.resource.plural.into(),
                subresource: t.subresource.clone().unwrap_or_default(),
                namespace: t.namespace.clone(),
                name: t.name.clone(),
                path: None,
            };
        }
        Route::Review(group, plural) => (group.as_str(), vec![plural.clone()], "create"),
        Route::Metrics(group, rest) => (*group, rest.clone(), ""),
        _ => {
            return access::Attributes {
                verb: method.as_str().to_lowercase(),
                path: Some(req.uri().path().to_owned()),
                ..Default::default()
            };
        }
    };
    let (namespace, rest) = match rest.as_slice() {
        [ns_word, ns, rest @ ..] if ns_word == "namespaces" => (Some(ns.clone()), rest.to_vec()),
        _ => (None, rest),
    };
    let verb = match verb {
        "" if rest.len() > 1 => "get",
        "" => "list",
        verb => verb,
    };
    access::Attributes {
        verb: owned(verb),
        group: owned(group),
        resource: rest.first().cloned().unwrap_or_default(),
        namespace,
        name: rest.get(1).cloned(),
        ..Default::default()
    }
}

async fn route_authorized(
    shared: &Shared,
    route: Route,
    req: Request<Incoming>,
    who: &access::Identity,
) -> Result<Response<Body>, ApiError> {
    access::authorize(shared, who, &attributes(&route, &req))?;
    let ok = |v: Option<Value>| {
        v.map(|v| json_response(StatusCode::OK, &v))
            .ok_or(ApiError::NoRoute)
    };
    let get_only = |m: &Method| match *m {
        Method::GET => Ok(()),
        _ => Err(ApiError::MethodNotAllowed),
    };
    match route {
        Route::CoreVersions | Route::Groups => {
            get_only(req.method())?;
            let core = matches!(route, Route::CoreVersions);
            let accept = req.headers().get(header::ACCEPT);
            if discovery::takes_aggregated(accept.and_then(|a| a.to_str().ok()).unwrap_or("")) {
                let mut response = json_response(StatusCode::OK, &discovery::aggregated(core));
                let aggregated = header::HeaderValue::from_static(discovery::AGGREGATED);
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, aggregated);
                return Ok(response);
            }
            ok(Some(match core {
                true => discovery::core_versions(),
                false => discovery::groups(),
            }))
        }
        Route::Group(g) => {
            get_only(req.method())?;
            ok(discovery::group(&g))
        }
        Route::ResourceList(g, v) => {
            get_only(req.method())?;
            ok(discovery::resources(&g, &v))
        }
        Route::OpenApiIndex | Route::OpenApiV2 => {
            get_only(req.method())?;
            ok(Some(match route {
                Route::OpenApiV2 => discovery::openapi_v2(),
                _ => discovery::openapi_index(),
            }))
        }
        Route::OpenApiDoc(p) => {
            get_only(req.method())?;
            ok(discovery::openapi_group(&p))
        }
        Route::Metrics(group, rest) => {
            let query = req
                .uri()
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            if group == metrics::CUSTOM_GROUP_VERSION.0 {
                metrics::serve_custom(shared, req.method(), &rest, &query).await
            } else {
                metrics::serve(shared, req.method(), &rest, &query).await
            }
        }
        Route::Review(group, plural) => {
            if req.method() != Method::POST {
                return Err(ApiError::MethodNotAllowed);
            }
            let (parts, body) = req.into_parts();
            let review = resources::decode_body(&parts, &read_body(body).await?)?;
            let answer = reviews::answer(shared, who, &group, &plural, &review)?;
            Ok(json_response(StatusCode::CREATED, &answer))
        }
        Route::Target(target) if agents::is_stream(&target) => {
            agents::stream(shared, req, &target).await
        }
        Route::Target(target) => {
            let (parts, body) = req.into_parts();
            let body = read_body(body).await?;
            resources::dispatch(shared, parts, target, body).await
        }
        Route::Member(id) => remove_member(shared, req.method(), &id).await,
        Route::Members => add_member(shared, req).await,
        Route::Health | Route::Version | Route::NotFound => Err(ApiError::NoRoute),
    }
}

/// `DELETE /shipshape/v1/members/{id}`: takes a member out of the control plane, through a
/// Raft configuration change.
async fn remove_member(
    shared: &Shared,
    method: &Method,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    if method != Method::DELETE {
        return Err(ApiError::MethodNotAllowed);
    }
    let id: u64 =
        id.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
            ApiError::BadRequest(format!("{id:?} is not a member id (1, 2, ...)"))
        })?;
    match shared.store.remove_member(id).await {
        Ok(()) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Success",
                "message": format!("member {id} was removed from the control plane"),
            }),
        )),
        Err(e @ StoreError::NotAMember { .. }) => Err(ApiError::BadRequest(e.to_string())),
        Err(e @ StoreError::LastVoter { .. }) => Err(ApiError::Forbidden(e.to_string())),
        Err(e) => Err(ApiError::Unavailable(format!(
            "the member could not be removed: {e}"
        ))),
    }
}

/// `POST /shipshape/v1/members`, body `{"id": 4, "peerAddress": "HOST:PORT"}`: makes a
/// new member a voter, through a Raft configuration change; the member then starts with
/// `--join` and catches up from a snapshot.
async fn add_member(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct NewMember {
        id: u64,
        peer_address: String,
    }
    if req.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let body = read_body(req.into_body()).await?;
    let member: NewMember = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "a new member is {{\"id\": N, \"peerAddress\": \"HOST:PORT\"}}: {e}"
        ))
    })?;
    if member.id == 0 {
        return Err(ApiError::BadRequest("member ids start at 1".into()));
    }
    let address: PeerAddress = member
        .peer_address
        .parse()
        .map_err(|why: String| ApiError::BadRequest(format!("peerAddress: {why}")))?;
    let id = member.id;
    match shared.store.add_member(id, address.clone()).await {
        Ok(()) => Ok(json_response(
            StatusCode::CREATED,
            &serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Success",
                "message": format!("member {id} (peer address {address}) was added to the control plane"),
            }),
        )),
        Err(
            e @ (StoreError::AlreadyAMember { .. }
            | StoreError::RemovedMember { .. }
            | StoreError::NoPeers),
        ) => Err(ApiError::BadRequest(e.to_string())),
        Err(e) => Err(ApiError::Unavailable(format!(
            "the member could not be added: {e}"
        ))),
    }
}

/// Reads the whole request body, refusing anything over [`MAX_BODY`].
async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge(MAX_BODY)),
        Err(e) => Err(ApiError::BadRequest(format!(
            "failed to read the request body: {e}"
        ))),
    }
}
