//! The Endpoints controller: which pods a Service sends traffic to, kept current.
//!
//! The seed's service is "a stable endpoint that sends traffic to the pods its labels
//! select, even while pods change". For every Service with a selector this controller
//! writes an Endpoints object of the same name: the selected pods that are Ready under
//! `addresses`, the others under `notReadyAddresses`, each with the Service's ports
//! resolved to the pod's (a named `targetPort` is looked up in the pod's container ports).
//! A pod that is terminating is left out at once, before its containers get SIGTERM: the
//! proxy stops sending it new connections while it finishes the ones it has.
//!
//! Next to the Endpoints it keeps the same addresses as EndpointSlices
//! (`discovery.k8s.io/v1`), which newer clients read instead: one slice per group of ports,
//! named `<service>-<n>` and labelled `kubernetes.io/service-name`, each endpoint with its
//! `ready`, `serving` and `terminating` conditions; a Service with no endpoints keeps one
//! empty slice, as in Kubernetes.
//!
//! It is woken by changes to Services and to pods (a pod maps to the Services whose selector
//! matches it), and a sweep removes Endpoints and EndpointSlices whose Service is gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{ControllerError, delete_if_present};
use crate::api::selector::LabelSelector;

/// One subset being built: ready addresses, not-ready addresses, ports.
type Subset = (Vec<Value>, Vec<Value>, Vec<Value>);

/// The Endpoints `subsets` for a Service (as JSON) and the pods of its namespace.
pub fn subsets(service: &Value, pods: &[Value]) -> Vec<Value> {
    let selector = service.pointer("/spec/selector").and_then(Value::as_object);
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    let selector = LabelSelector::from_labels(
        selector
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v))),
    );
    let service_ports = service.pointer("/spec/ports").and_then(Value::as_array);
    // Pods that resolve to the same ports share a subset, as in Kubernetes.
    let mut by_ports: BTreeMap<String, Subset> = BTreeMap::new();
    for pod in pods {
        let selected =
            selector.matches_object(pod) || crate::failpoints::on!("endpoints::ignore-selectors");
        if !selected || pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let phase = pod.pointer("/status/phase").and_then(Value::as_str);
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
        if ip.is_empty() {
            continue;
        }
        let ports: Vec<Value> = service_ports
            .into_iter()
            .flatten()
            .filter_map(|sp| {
                let port = resolve(sp.get("targetPort").or_else(|| sp.get("port")), pod)?;
                let mut p = json!({"port": port, "protocol": sp.get("protocol").cloned().unwrap_or(json!("TCP"))});
                if let Some(name) = sp.get("name").filter(|n| n.as_str().is_some_and(|n| !n.is_empty())) {
                    p["name"] = name.clone();
                }
                Some(p)
            })
            .collect();
        if ports.is_empty() {
            continue;
        }
        let address = json!({
            "ip": ip,
            "nodeName": pod.pointer("/spec/nodeName"),
            "targetRef": {
                "kind": "Pod",
                "namespace": pod.pointer("/metadata/namespace"),
                "name": pod.pointer("/metadata/name"),
                "uid": pod.pointer("/metadata/uid"),
            },
        });
        let is_ready = |c: &Value| c["type"] == "Ready" && c["status"] == "True";
        let conditions = pod["status"]["conditions"].as_array();
        let ready = conditions.is_some_and(|cs| cs.iter().any(is_ready));
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let entry = by_ports.entry(key).or_insert((vec![], vec![], ports));
        if ready || crate::failpoints::on!("endpoints::not-ready-as-ready") {
            entry.0.push(address);
        } else {
            entry.1.push(address);
        }
    }
    let by_ip = |a: &Value, b: &Value| a["ip"].as_str().cmp(&b["ip"].as_str());
    by_ports
        .into_values()
        .map(|(mut ready, mut not_ready, ports)| {
            ready.sort_by(by_ip);
            not_ready.sort_by(by_ip);
            let mut subset = json!({"ports": ports});
            if !ready.is_empty() {
                subset["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = json!(not_ready);
            }
            subset
        })
        .collect()
}

/// The label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice, and this controller's value for it.
const MANAGED_BY: (&str, &str) = (
    "endpointslice.kubernetes.io/managed-by",
    "endpointslice-controller.k8s.io",
);

/// The EndpointSlices that say what a Service's Endpoints `subsets` say: one per subset
/// (a group of pods with the same ports), or one empty slice when there is none.
pub fn slices(service: &str, subsets: &[Value]) -> Vec<Value> {
    let slice = |n: usize, endpoints: Value, ports: Value| {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{service}-{n}"),
                "labels": {SERVICE_NAME: service, MANAGED_BY.0: MANAGED_BY.1},
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        })
    };
    if subsets.is_empty() {
        return vec![slice(0, json!([]), Value::Null)];
    }
    // The endpoints of a subset's `field` (`addresses` or `notReadyAddresses`).
    let endpoints = |subset: &Value, field: &str, ready: bool| {
        let addresses = subset[field].as_array().into_iter().flatten();
        let endpoint = |address: &Value| {
            json!({
                "addresses": [address.get("ip")],
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "nodeName": address.get("nodeName"),
                "targetRef": address.get("targetRef"),
            })
        };
        addresses.map(endpoint).collect::<Vec<_>>()
    };
    subsets
        .iter()
        .enumerate()
        .map(|(n, subset)| {
            let mut all = endpoints(subset, "addresses", true);
            all.extend(endpoints(subset, "notReadyAddresses", false));
            slice(n, Value::Array(all), subset["ports"].clone())
        })
        .collect()
}

/// Makes the Service's EndpointSlices say what `subsets` say: creates, replaces and removes
/// slices of its label as needed.
pub(crate) async fn write_slices(
    client: &Client,
    namespace: &str,
    service: &str,
    subsets: &[Value],
) -> Result<(), ControllerError> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let what = |verb: &str| format!("{verb} the endpoint slices of {namespace}/{service}");
    let labelled = ListParams::default().labels(&format!("{SERVICE_NAME}={service}"));
    let existing = api.list(&labelled).await;
    let existing = existing.map_err(ControllerError::api(what("list")))?;
    let desired = slices(service, subsets);
    for mut wanted in desired.iter().cloned() {
        let name = wanted["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let current = existing.items.iter().find(|s| s.name_any() == name);
        if let Some(current) = current {
            let same = json!({"endpoints": current.endpoints, "ports": current.ports})
                == json!({"endpoints": wanted["endpoints"], "ports": wanted["ports"]});
            if same {
                continue;
            }
            wanted["metadata"]["resourceVersion"] = json!(current.resource_version());
        }
        let slice: EndpointSlice =
            serde_json::from_value(wanted).map_err(|e| ControllerError::Malformed {
                object: format!("EndpointSlice {namespace}/{name}"),
                reason: e.to_string(),
            })?;
        let written = match current {
            Some(_) => api.replace(&name, &PostParams::default(), &slice).await,
            None => api.create(&PostParams::default(), &slice).await,
        };
        written.map_err(ControllerError::api(what("write")))?;
    }
    let is_desired = |name: &str| desired.iter().any(|d| d["metadata"]["name"] == name);
    for extra in existing.items.iter().filter(|s| !is_desired(&s.name_any())) {
        let params = DeleteParams::default();
        delete_if_present(&api, &extra.name_any(), &params, || what("remove")).await?;
    }
    Ok(())
}

/// A target port (a number, or the name of one of the pod's container ports) as a number.
fn resolve(target: Option<&Value>, pod: &Value) -> Option<i64> {
    match target? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok().or_else(|| {
            let containers = pod.pointer("/spec/containers")?.as_array()?;
            let port = containers
                .iter()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| p["name"].as_str() == Some(s))?;
            port["containerPort"].as_i64()
        }),
        _ => None,
    }
}

/// The selector of a Service that has one; an empty selector selects nothing here.
fn selector_of(service: &Service) -> Option<LabelSelector> {
    let labels = service.spec.as_ref()?.selector.as_ref()?;
    let pairs = labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    (!labels.is_empty()).then(|| LabelSelector::from_labels(pairs))
}

/// Runs the controller until `shutdown` becomes true.
pub(super) async fn run(client: Client, shutdown: watch::Receiver<bool>) {
    let services = Api::<Service>::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let services = controller.store();
    let pods = Api::<Pod>::all(client.clone());
    let controller = controller.watches(pods, watcher::Config::default(), move |pod: Pod| {
        let pod_value = serde_json::to_value(&pod).unwrap_or_default();
        let namespace = pod.namespace();
        services
            .state()
            .into_iter()
            .filter(|s| s.namespace() == namespace)
            .filter(|s| selector_of(s).is_some_and(|sel| sel.matches_object(&pod_value)))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect::<Vec<_>>()
    });
    let context = Arc::new(client.clone());
    tokio::join!(
        super::drive("endpoints", controller, context, apply, shutdown.clone()),
        sweep(client, shutdown),
    );
}

async fn apply(service: Arc<Service>, client: Arc<Client>) -> Result<Action, ControllerError> {
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let what = |words: &str| format!("{words} {namespace}/{name}");
    if selector_of(&service).is_none() {
        // Without a selector the Endpoints are the user's to write.
        return Ok(Action::await_change());
    }
    let pods = Api::<Pod>::namespaced(client.as_ref().clone(), &namespace);
    let listed = pods.list(&ListParams::default()).await;
    let listed = listed.map_err(ControllerError::api(what("list the pods of service")))?;
    let pods: Vec<Value> = listed.items.iter().flat_map(serde_json::to_value).collect();
    let service_value = serde_json::to_value(service.as_ref()).unwrap_or_default();
    let subsets = subsets(&service_value, &pods);
    let api: Api<Endpoints> = Api::namespaced(client.as_ref().clone(), &namespace);
    let existing = api.get_opt(&name).await;
    let existing = existing.map_err(ControllerError::api(what("read the endpoints of service")))?;
    let unchanged = existing.as_ref().is_some_and(|current| {
        let current = serde_json::to_value(&current.subsets).unwrap_or_default();
        current == json!(subsets) || (current.is_null() && subsets.is_empty())
    });
    if !unchanged {
        let desired = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": namespace, "labels": service.labels()},
            "subsets": subsets,
        });
        let mut endpoints: Endpoints =
            serde_json::from_value(desired).map_err(|e| ControllerError::Malformed {
                object: what("Endpoints"),
                reason: e.to_string(),
            })?;
        let post = PostParams::default();
        let (written, verb) = match &existing {
            None => (api.create(&post, &endpoints).await, "create"),
            Some(current) => {
                endpoints.metadata.resource_version = current.resource_version();
                (api.replace(&name, &post, &endpoints).await, "update")
            }
        };
        let action = what(&format!("{verb} the endpoints of"));
        written.map_err(ControllerError::api(action))?;
    }
    write_slices(&client, &namespace, &name, &subsets).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Removes Endpoints and EndpointSlices whose Service is gone.
async fn sweep(client: Client, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = crate::agent::stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        let all = ListParams::default();
        let (Ok(endpoints), Ok(services)) = (
            Api::<Endpoints>::all(client.clone()).list(&all).await,
            Api::<Service>::all(client.clone()).list(&all).await,
        ) else {
            continue;
        };
        let served = |ns: &str, name: &str| {
            services
                .items
                .iter()
                .any(|s| s.namespace().as_deref() == Some(ns) && s.name_any() == name)
        };
        for ep in endpoints.items {
            let (ns, name) = (ep.namespace().unwrap_or_default(), ep.name_any());
            if !served(&ns, &name) {
                let _ = Api::<Endpoints>::namespaced(client.clone(), &ns)
                    .delete(&name, &DeleteParams::default())
                    .await;
            }
        }
        let ours = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
        let Ok(slices) = Api::<EndpointSlice>::all(client.clone()).list(&ours).await else {
            continue;
        };
        for slice in slices.items {
            let ns = slice.namespace().unwrap_or_default();
            let service = slice.labels().get(SERVICE_NAME).map_or("", String::as_str);
            if !served(&ns, service) {
                let _ = Api::<EndpointSlice>::namespaced(client.clone(), &ns)
                    .delete(&slice.name_any(), &DeleteParams::default())
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, labels: Value) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": labels},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        })
    }

    #[test]
    fn ready_pods_are_addresses_and_the_rest_are_not() {
        let service = json!({"spec": {"selector": {"app": "web"},
                                      "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}});
        let mut terminating = pod("gone", "10.0.0.9", true, json!({"app": "web"}));
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let pods = vec![
            pod("b", "10.0.0.2", true, json!({"app": "web"})),
            pod("a", "10.0.0.1", true, json!({"app": "web"})),
            pod("c", "10.0.0.3", false, json!({"app": "web"})),
            pod("other", "10.0.0.4", true, json!({"app": "db"})),
            terminating,
        ];
        let subsets = subsets(&service, &pods);
        assert_eq!(subsets.len(), 1);
        let ips = |k: &str| -> Vec<&str> {
            subsets[0][k]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["ip"].as_str()).collect())
                .unwrap_or_default()
        };
        assert_eq!(ips("addresses"), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(ips("notReadyAddresses"), ["10.0.0.3"]);
        assert_eq!(
            subsets[0]["ports"],
            json!([{"port": 8080, "protocol": "TCP"}])
        );
    }

    #[test]
    fn no_selector_no_subsets() {
        let service = json!({"spec": {"ports": [{"port": 80}]}});
        assert!(subsets(&service, &[pod("a", "10.0.0.1", true, json!({}))]).is_empty());
    }

    #[test]
    fn slices_say_what_the_subsets_say() {
        let service = json!({"spec": {"selector": {"app": "web"},
                                      "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
        let pods = [
            pod("a", "10.0.0.1", true, json!({"app": "web"})),
            pod("b", "10.0.0.2", false, json!({"app": "web"})),
        ];
        let made = slices("web", &subsets(&service, &pods));
        assert_eq!(made.len(), 1);
        let slice = &made[0];
        assert_eq!(slice["metadata"]["name"], "web-0");
        assert_eq!(slice["metadata"]["labels"][SERVICE_NAME], "web");
        assert_eq!(
            slice["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        let endpoints: Vec<(Value, Value)> = slice["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .map(|e| (e["addresses"][0].clone(), e["conditions"]["ready"].clone()))
            .collect();
        assert_eq!(
            endpoints,
            [
                (json!("10.0.0.1"), json!(true)),
                (json!("10.0.0.2"), json!(false))
            ]
        );
        // A typed EndpointSlice can be made of it.
        serde_json::from_value::<EndpointSlice>(slice.clone()).expect("an EndpointSlice");
        // No endpoints: one empty slice.
        let empty = slices("web", &[]);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0]["endpoints"], json!([]));
    }
}
