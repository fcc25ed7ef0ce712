//! The agent's log endpoint: how `kubectl logs` reaches a container's output.
//!
//! kubectl asks the apiserver (`pods/{name}/log`); the apiserver finds the pod's node and
//! asks that node's agent here: `GET /containerLogs/{namespace}/{pod}/{container}`
//! (`?tailLines=N`, `?follow=true` to keep streaming what the container writes next), with
//! the cluster's bearer token. The agent reads the output from Docker. (Kubernetes' kubelet
//! serves the same path.) The same server takes `exec` and `attach`, which upgrade to a
//! stream ([`super::streams`]), and `port-forward` ([`super::port_forward`]), and tells
//! what the pods use ([`super::stats`]) and what the service proxy beside the agent, if
//! any, counts of their load (`GET /stats/proxy`, [`crate::proxy::meter`]).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::runtime::Runtime;
use crate::proxy::meter::Meter;

/// A bound log server, not yet serving.
pub struct LogServer {
    listener: TcpListener,
    runtime: Runtime,
    token: String,
    meter: Option<Meter>,
}

impl LogServer {
    /// Binds a free port on `address`.
    pub async fn bind(
        address: IpAddr,
        runtime: Runtime,
        token: String,
        meter: Option<Meter>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::new(address, 0)).await?;
        Ok(LogServer {
            listener,
            runtime,
            token,
            meter,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Serves until `shutdown` turns true.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let (stream, _) = tokio::select! {
                _ = super::stopped(&mut shutdown) => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let (runtime, token) = (self.runtime.clone(), self.token.clone());
            let meter = self.meter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let (runtime, token, meter) = (runtime.clone(), token.clone(), meter.clone());
                    async move {
                        Ok::<_, Infallible>(handle(req, &runtime, &token, meter.as_ref()).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    }
}

/// A reply's body: whole, or streamed while a container writes.
pub(super) type Body = UnsyncBoxBody<Bytes, Infallible>;

pub(super) fn reply(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = code;
    resp
}

async fn handle(
    req: Request<Incoming>,
    runtime: &Runtime,
    token: &str,
    meter: Option<&Meter>,
) -> Response<Body> {
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token);
    if !authorized {
        return reply(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let [verb @ ("exec" | "attach"), namespace, pod, container] = parts.as_slice() {
        let pod = format!("{namespace}/{pod}");
        return super::streams::serve(req, runtime, verb, &pod, container).await;
    }
    if let ["portForward", namespace, pod] = parts.as_slice() {
        let pod = format!("{namespace}/{pod}");
        return super::port_forward::serve(req, runtime, &pod).await;
    }
    if parts == ["stats", "summary"] {
        let summary = super::stats::summary(runtime).await;
        return reply(StatusCode::OK, summary.to_string());
    }
    if parts == ["stats", "proxy"] {
        return match meter {
            Some(meter) => reply(StatusCode::OK, meter.report(Instant::now()).to_string()),
            None => reply(
                StatusCode::NOT_FOUND,
                "no service proxy runs beside this agent",
            ),
        };
    }
    let ["containerLogs", namespace, pod, container] = parts.as_slice() else {
        return reply(StatusCode::NOT_FOUND, "not found");
    };
    let param = |name: &str| {
        req.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        })
    };
    let tail = param("tailLines").and_then(|v| v.parse::<u64>().ok());
    let follow = param("follow").is_some_and(|v| v == "true" || v == "1");
    let key = format!("{namespace}/{pod}");
    let Some(id) = runtime.find_by_pod(&key, container).await else {
        let why = format!("container {container:?} of pod {key} is not on this node");
        return reply(StatusCode::NOT_FOUND, why);
    };
    if follow {
        let frames = runtime
            .follow_logs(&id, tail)
            .map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
        return Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    }
    match runtime.logs(&id, tail).await {
        Ok(bytes) => reply(StatusCode::OK, bytes),
        Err(e) => reply(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}
