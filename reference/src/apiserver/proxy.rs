//! The `proxy` subresources: the API server forwards an HTTP request to a pod, or to a
//! ready endpoint of a service, and answers with what came back.
//!
//! `…/pods/{name}[:{port}]/proxy/{path}` reaches port `port` of the pod (a number, or the
//! name of one of its container ports; without one, the first container port, else 80);
//! `…/services/{name}[:{port}]/proxy/{path}` reaches one of the service's ready endpoints
//! on the target port of the service port named or numbered `port` (the only port when
//! none is given), the endpoints taken in turn. The method, the query and the body go
//! through unchanged; the answer's status, content type and body come back. This is how a
//! client that cannot reach the pod network — `kubectl get --raw`, or the conformance
//! kit's `kubernetes` driver on a cluster whose node ports it cannot reach — still talks
//! to what runs there.
//!
//! Kubernetes' API server dials pods through the node (or directly, on most networks);
//! the reference's dials the pod's address directly, which its host always reaches.
//! Nothing is proxied to a pod without an address or a service without a ready endpoint:
//! that is a 503, as a dial that fails is, saying why.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::request::Parts;
use http_body_util::{BodyExt as _, Full};
use serde_json::Value;

use super::status::ApiError;
use super::{Body, Shared, resources};
use crate::api::{self, meta};

/// How long the proxied exchange may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer passed back.
const MAX_ANSWER: usize = 16 << 20;

/// Turns among a service's endpoints, across requests.
static NEXT_ENDPOINT: AtomicUsize = AtomicUsize::new(0);

/// Splits `name[:port]`.
fn name_and_port(target: &str) -> (&str, Option<&str>) {
    target
        .split_once(':')
        .map_or((target, None), |(name, port)| (name, Some(port)))
}

/// Forwards a request to a pod.
pub(super) async fn pod(
    shared: &Shared,
    namespace: &str,
    target: &str,
    path: &str,
    parts: &Parts,
    body: Bytes,
) -> Result<http::Response<Body>, ApiError> {
    let (name, port) = name_and_port(target);
    let pods = api::find("", "v1", "pods").ok_or(ApiError::NoRoute)?;
    let (pod, _) = resources::get(shared, pods, Some(namespace), name)?;
    let ip = pod["status"]["podIP"].as_str().filter(|ip| !ip.is_empty());
    let ip =
        ip.ok_or_else(|| ApiError::Unavailable(format!("pod {name} has no IP address yet")))?;
    let ports: Vec<(&str, u64)> = meta::each(&pod, "/spec/containers")
        .flat_map(|container| meta::each(container, "/ports"))
        .filter_map(|port| {
            let name = port["name"].as_str().unwrap_or_default();
            Some((name, port["containerPort"].as_u64()?))
        })
        .collect();
    let port = match port {
        Some(port) => match port.parse::<u16>() {
            Ok(number) => u64::from(number),
            Err(_) => ports
                .iter()
                .find(|(named, _)| *named == port)
                .map(|(_, number)| *number)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("pod {name} has no port named {port:?}"))
                })?,
        },
        None => ports.first().map_or(80, |(_, number)| *number),
    };
    forward(&format!("{ip}:{port}"), path, parts, body).await
}

/// Forwards a request to a ready endpoint of a service.
pub(super) async fn service(
    shared: &Shared,
    namespace: &str,
    target: &str,
    path: &str,
    parts: &Parts,
    body: Bytes,
) -> Result<http::Response<Body>, ApiError> {
    let (name, port) = name_and_port(target);
    let services = api::find("", "v1", "services").ok_or(ApiError::NoRoute)?;
    let (service, _) = resources::get(shared, services, Some(namespace), name)?;
    let ports: Vec<&Value> = meta::each(&service, "/spec/ports").collect();
    let chosen = match port {
        Some(port) => ports.iter().find(|candidate| {
            candidate["name"].as_str() == Some(port)
                || candidate["port"].as_u64().map(|p| p.to_string()).as_deref() == Some(port)
        }),
        None if ports.len() == 1 => ports.first(),
        None => {
            return Err(ApiError::BadRequest(format!(
                "service {name} has {} ports: name one as {name}:PORT",
                ports.len()
            )));
        }
    }
    .ok_or_else(|| ApiError::BadRequest(format!("service {name} has no port {port:?}")))?;
    let port_name = chosen["name"].as_str().unwrap_or_default();
    let endpoints = api::find("", "v1", "endpoints").ok_or(ApiError::NoRoute)?;
    let none = || ApiError::Unavailable(format!("no endpoints available for service \"{name}\""));
    let (object, _) =
        resources::get(shared, endpoints, Some(namespace), name).map_err(|_| none())?;
    let mut ready: Vec<String> = Vec::new();
    for subset in meta::each(&object, "/subsets") {
        let port = meta::each(subset, "/ports")
            .find(|candidate| candidate["name"].as_str().unwrap_or_default() == port_name)
            .and_then(|candidate| candidate["port"].as_u64());
        let Some(port) = port else {
            continue;
        };
        let ips = meta::each(subset, "/addresses").filter_map(|address| address["ip"].as_str());
        ready.extend(ips.map(|ip| format!("{ip}:{port}")));
    }
    if ready.is_empty() {
        return Err(none());
    }
    let at = &ready[NEXT_ENDPOINT.fetch_add(1, Ordering::Relaxed) % ready.len()];
    forward(at, path, parts, body).await
}

/// Sends the request to `authority` and passes the answer back.
async fn forward(
    authority: &str,
    path: &str,
    parts: &Parts,
    body: Bytes,
) -> Result<http::Response<Body>, ApiError> {
    let unreachable =
        |why: String| ApiError::Unavailable(format!("error trying to reach {authority}: {why}"));
    let query = parts.uri.query().map_or(String::new(), |q| format!("?{q}"));
    let url = format!("http://{authority}{path}{query}");
    let uri: http::Uri = url
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{url} is not a URL the proxy can reach")))?;
    let mut request = http::Request::builder()
        .method(parts.method.clone())
        .uri(uri);
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
    let exchange = async {
        let response = client.request(request).await;
        let response = response.map_err(|error| unreachable(error.to_string()))?;
        let (head, body) = response.into_parts();
        let limited = http_body_util::Limited::new(body, MAX_ANSWER);
        let bytes = limited.collect().await;
        let bytes = bytes.map_err(|e| unreachable(e.to_string()))?.to_bytes();
        Ok::<_, ApiError>((head, bytes))
    };
    let answered = tokio::time::timeout(TIMEOUT, exchange).await;
    let (head, bytes) =
        answered.map_err(|_| unreachable(format!("no answer within {TIMEOUT:?}")))??;
    let mut answer = http::Response::builder().status(head.status);
    if let Some(content_type) = head.headers.get(header::CONTENT_TYPE) {
        answer = answer.header(header::CONTENT_TYPE, content_type);
    }
    answer
        .body(Full::new(bytes).boxed())
        .map_err(|error| ApiError::Internal(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_a_port_or_not() {
        assert_eq!(name_and_port("web:8080"), ("web", Some("8080")));
        assert_eq!(name_and_port("web:http"), ("web", Some("http")));
        assert_eq!(name_and_port("web"), ("web", None));
    }
}
