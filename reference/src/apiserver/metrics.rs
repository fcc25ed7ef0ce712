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

use std::collections::HashMap;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::resources::{Query, from_record, selectors};
use super::status::{ApiError, from_store};
use super::{Body, Shared, agents, json_response};
use crate::api::{self, meta};

/// The group and version served.
pub const GROUP_VERSION: (&str, &str) = ("metrics.k8s.io", "v1beta1");

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

/// Asks the agents of `nodes`, at once, what their pods use.
async fn usage_on(shared: &Shared, mut nodes: Vec<String>) -> Result<Usage, ApiError> {
    nodes.sort();
    nodes.dedup();
    let r = api::find("", "v1", "nodes").ok_or(ApiError::NoRoute)?;
    let mut urls = Vec::new();
    for node in &nodes {
        if let Ok((obj, _)) = super::resources::get(shared, r, None, node) {
            urls.push((
                node.clone(),
                format!("{}/stats/summary", agents::agent_url(&obj)),
            ));
        }
    }
    let answers =
        futures::future::join_all(urls.iter().map(|(_, url)| agents::ask(shared, url))).await;
    let mut usage = Usage::default();
    for ((node, _), answer) in urls.into_iter().zip(answers) {
        let Some(summary) = answer
            .ok()
            .and_then(|body| serde_json::from_slice::<Value>(&body).ok())
        else {
            continue;
        };
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
