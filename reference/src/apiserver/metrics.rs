//! `metrics.k8s.io/v1beta1`: what nodes and pods use now — `kubectl top`, and what an
//! autoscaler reads.
//!
//! Kubernetes serves this group from metrics-server, which scrapes every kubelet. The
//! reference needs none: a request asks the agents of the nodes concerned, at once, for
//! their pods' usage (`GET /stats/summary`, which asks Docker), and answers with what
//! came back. A node whose agent does not answer is left out, as metrics-server leaves
//! out a node it could not scrape. A node's usage is the sum of its pods': the machines
//! of a local cluster share one host, whose own usage would say nothing about any one.
//!
//! Paths: `nodes[/{name}]`, `pods[/{name}]` and `namespaces/{ns}/pods[/{name}]`, with
//! `labelSelector`. CPU is in nanocores (`1200000n`), memory in KiB (`1800Ki`).
//!
//! `custom.metrics.k8s.io/v1beta2` serves, the same way, what the service proxies count
//! of each pod's load ([`crate::proxy::meter`]) — what an autoscaler's `Pods` metric
//! reads, and in Kubernetes an adapter over a mesh's proxies would serve:
//! `namespaces/{ns}/pods/{name or *}/{metric}`, `metric` being
//! `connections_per_second` (over the proxies' last 10 s) or `connections_in_flight`.
//! Every node's agent is asked, since any node's proxy may forward to any pod; a proxy
//! that several agents report (one process's) counts once, and a pod no proxy forwarded
//! to has 0.

use std::collections::HashMap;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::resources::{Query, from_record, selectors};
use super::status::{ApiError, from_store};
use super::{Body, Shared, agents, json_response};
use crate::api::{self, meta};

/// The group and version served.
pub const GROUP_VERSION: (&str, &str) = ("metrics.k8s.io", "v1beta1");

/// The group and version of the custom metrics.
pub const CUSTOM_GROUP_VERSION: (&str, &str) = ("custom.metrics.k8s.io", "v1beta2");

/// The custom metrics of pods, with the field of an agent's `/stats/proxy` each sums.
const CUSTOM_METRICS: [(&str, &str); 2] = [
    ("connections_per_second", "perSecond"),
    ("connections_in_flight", "inFlight"),
];

/// `GET /apis/metrics.k8s.io/v1beta1`.
pub fn resources() -> Value {
    let resource = |name: &str, kind: &str, namespaced: bool| {
        json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
               "verbs": ["get", "list"]})
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{}/{}", GROUP_VERSION.0, GROUP_VERSION.1),
        "resources": [resource("nodes", "NodeMetrics", false), resource("pods", "PodMetrics", true)],
    })
}

/// `GET /apis/custom.metrics.k8s.io/v1beta2`.
pub fn custom_resources() -> Value {
    let resources: Vec<Value> = CUSTOM_METRICS
        .iter()
        .map(|(metric, _)| {
            json!({"name": format!("pods/{metric}"), "singularName": "", "namespaced": true,
                   "kind": "MetricValueList", "verbs": ["get"]})
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{}/{}", CUSTOM_GROUP_VERSION.0, CUSTOM_GROUP_VERSION.1),
        "resources": resources,
    })
}

/// Serves a path under `/apis/custom.metrics.k8s.io/v1beta2/`.
pub(super) async fn serve_custom(
    shared: &Shared,
    method: &Method,
    rest: &[String],
    query: &Query,
) -> Result<http::Response<Body>, ApiError> {
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let ["namespaces", ns, "pods", name, metric] = rest.as_slice() else {
        return Err(ApiError::NoRoute);
    };
    // Every pod: `*`, which kubectl sends escaped.
    let name = if *name == "%2A" { &"*" } else { name };
    let Some((_, field)) = CUSTOM_METRICS.iter().find(|(m, _)| m == metric) else {
        return Err(ApiError::BadRequest(format!(
            "no metric {metric:?} for pods: the metrics are {}",
            CUSTOM_METRICS.map(|(m, _)| m).join(", ")
        )));
    };
    let r = api::find("", "v1", "pods").ok_or(ApiError::NoRoute)?;
    let chosen = chosen(
        shared,
        r,
        Some(ns),
        Some(*name).filter(|n| *n != "*"),
        query,
    )?;
    if *name != "*" && chosen.is_empty() {
        return Err(ApiError::not_found(r, name));
    }
    // Every proxy once, whichever agents reported it; by pod address, the sum.
    let mut proxies = HashMap::new();
    for (_, report) in ask_agents(shared, None, "stats/proxy").await? {
        if let Some(id) = report["proxy"].as_str() {
            proxies.insert(id.to_owned(), report);
        }
    }
    let mut by_ip: HashMap<&str, f64> = HashMap::new();
    for backend in proxies.values().flat_map(|r| meta::each(r, "/backends")) {
        if let (Some(ip), Some(value)) = (backend["ip"].as_str(), backend[field].as_f64()) {
            *by_ip.entry(ip).or_default() += value;
        }
    }
    let now = meta::now_rfc3339();
    let items: Vec<Value> = chosen
        .iter()
        .filter(|_| !proxies.is_empty())
        .filter_map(|pod| {
            let ip = pod["status"]["podIP"].as_str()?;
            let value = by_ip.get(ip).copied().unwrap_or(0.0);
            Some(json!({
                "describedObject": {"kind": "Pod", "namespace": ns, "name": meta::name(pod),
                                    "apiVersion": "/v1"},
                "metric": {"name": metric},
                "timestamp": now,
                "windowSeconds": crate::proxy::meter::WINDOW.as_secs(),
                "value": format!("{}m", (value * 1000.0).round() as u64),
            }))
        })
        .collect();
    let api_version = format!("{}/{}", CUSTOM_GROUP_VERSION.0, CUSTOM_GROUP_VERSION.1);
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "MetricValueList", "apiVersion": api_version, "metadata": {},
                "items": items}),
    ))
}

/// Serves a path under `/apis/metrics.k8s.io/v1beta1/`.
pub(super) async fn serve(
    shared: &Shared,
    method: &Method,
    rest: &[String],
    query: &Query,
) -> Result<http::Response<Body>, ApiError> {
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let (ns, plural, name) = match rest.as_slice() {
        [plural @ ("nodes" | "pods")] => (None, *plural, None),
        [plural @ ("nodes" | "pods"), name] => (None, *plural, Some(*name)),
        ["namespaces", ns, "pods"] => (Some(*ns), "pods", None),
        ["namespaces", ns, "pods", name] => (Some(*ns), "pods", Some(*name)),
        _ => return Err(ApiError::NoRoute),
    };
    let r = api::find("", "v1", plural).ok_or(ApiError::NoRoute)?;
    let chosen = chosen(shared, r, ns, name, query)?;
    let node_of = |obj: &Value| match plural {
        "nodes" => meta::name(obj).map(str::to_owned),
        _ => obj["spec"]["nodeName"].as_str().map(str::to_owned),
    };
    let used = usage_on(shared, chosen.iter().filter_map(node_of).collect()).await?;
    let now = meta::now_rfc3339();
    let mut items = Vec::new();
    for obj in &chosen {
        let mut metadata = json!({"name": meta::name(obj), "creationTimestamp": now});
        if let Some(labels) = obj.pointer("/metadata/labels") {
            metadata["labels"] = labels.clone();
        }
        let mut item = if plural == "nodes" {
            let Some(pods) = node_of(obj).and_then(|n| used.by_node.get(&n)) else {
                continue;
            };
            let total = pods
                .iter()
                .flatten()
                .fold((0, 0), |(c, m), (_, (cpu, mem))| (c + cpu, m + mem));
            json!({"usage": quantities(total)})
        } else {
            let key = pod_key(&obj["metadata"]);
            let Some(containers) = used.by_pod.get(&key) else {
                continue;
            };
            metadata["namespace"] = json!(key.0);
            let containers: Vec<Value> = containers
                .iter()
                .map(|(name, used)| json!({"name": name, "usage": quantities(*used)}))
                .collect();
            json!({"containers": containers})
        };
        item["metadata"] = metadata;
        item["timestamp"] = json!(now);
        item["window"] = json!("1s");
        items.push(item);
    }
    let kind = format!("{}Metrics", r.kind);
    let api_version = format!("{}/{}", GROUP_VERSION.0, GROUP_VERSION.1);
    if let Some(name) = name {
        let mut item = items.pop().ok_or_else(|| ApiError::not_found(r, name))?;
        item["kind"] = json!(kind);
        item["apiVersion"] = json!(api_version);
        return Ok(json_response(StatusCode::OK, &item));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{kind}List"), "apiVersion": api_version, "metadata": {},
                "items": items}),
    ))
}

/// The objects of `r` in `ns` (all namespaces if `None`) named `name` (any if `None`)
/// that the query's `labelSelector` picks.
fn chosen(
    shared: &Shared,
    r: &'static api::Resource,
    ns: Option<&str>,
    name: Option<&str>,
    query: &Query,
) -> Result<Vec<Value>, ApiError> {
    let (labels, _) = selectors(query)?;
    let (records, _) = shared
        .store
        .list(&r.prefix(ns))
        .map_err(|e| from_store(e, r, ""))?;
    let mut chosen = Vec::new();
    for (_, record) in &records {
        let obj = from_record(record)?;
        if name.is_none_or(|n| meta::name(&obj) == Some(n)) && labels.matches_object(&obj) {
            chosen.push(obj);
        }
    }
    Ok(chosen)
}

/// (nanocores, bytes) as Kubernetes quantities.
fn quantities((cpu, memory): (u64, u64)) -> Value {
    json!({"cpu": format!("{cpu}n"), "memory": format!("{}Ki", memory / 1024)})
}

/// The `namespace` and `name` in `of` (an object's metadata, or a pod of a summary).
fn pod_key(of: &Value) -> (String, String) {
    let text = |field: &str| of[field].as_str().unwrap_or_default().to_owned();
    (text("namespace"), text("name"))
}

/// A container's usage: its name, and (nanocores, bytes).
type ContainerUsage = (String, (u64, u64));

/// What the agents of some nodes said.
#[derive(Default)]
struct Usage {
    /// By pod (namespace, name): its containers.
    by_pod: HashMap<(String, String), Vec<ContainerUsage>>,
    /// By node: its pods' containers.
    by_node: HashMap<String, Vec<Vec<ContainerUsage>>>,
}

/// Asks the agents of `nodes` (of every node, if `None`), at once, for `path`: the
/// answers, by node, of those that gave one.
async fn ask_agents(
    shared: &Shared,
    nodes: Option<Vec<String>>,
    path: &str,
) -> Result<Vec<(String, Value)>, ApiError> {
    let r = api::find("", "v1", "nodes").ok_or(ApiError::NoRoute)?;
    let (records, _) = shared
        .store
        .list(&r.prefix(None))
        .map_err(|e| from_store(e, r, ""))?;
    let mut urls = Vec::new();
    for (_, record) in &records {
        let node = from_record(record)?;
        let name = meta::name(&node).unwrap_or_default().to_owned();
        if nodes.as_ref().is_none_or(|nodes| nodes.contains(&name)) {
            urls.push((name, format!("{}/{path}", agents::agent_url(&node))));
        }
    }
    let answers =
        futures::future::join_all(urls.iter().map(|(_, url)| agents::ask(shared, url))).await;
    let answered = urls
        .into_iter()
        .zip(answers)
        .filter_map(|((node, _), answer)| {
            let body = answer.ok()?;
            Some((node, serde_json::from_slice::<Value>(&body).ok()?))
        });
    Ok(answered.collect())
}

/// Asks the agents of `nodes`, at once, what their pods use.
async fn usage_on(shared: &Shared, nodes: Vec<String>) -> Result<Usage, ApiError> {
    let mut usage = Usage::default();
    for (node, summary) in ask_agents(shared, Some(nodes), "stats/summary").await? {
        let on_node = usage.by_node.entry(node).or_default();
        for pod in meta::each(&summary, "/pods") {
            let containers: Vec<ContainerUsage> = meta::each(pod, "/containers")
                .filter_map(|c| {
                    let used = (c["cpuNanoCores"].as_u64()?, c["memoryBytes"].as_u64()?);
                    Some((c["name"].as_str()?.to_owned(), used))
                })
                .collect();
            on_node.push(containers.clone());
            usage.by_pod.insert(pod_key(pod), containers);
        }
    }
    Ok(usage)
}
