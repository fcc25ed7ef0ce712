//! Tables: what `kubectl get` prints.
//!
//! kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and prints whatever
//! columns the server sends, so the server decides that `get pods` shows READY, STATUS and
//! RESTARTS. Each row carries the object's metadata (a `PartialObjectMetadata`), which
//! kubectl needs for namespaces, labels and `--show-labels`. Columns with priority 1 appear
//! only with `-o wide`.

use serde_json::{Value, json};

use crate::api::Resource;
use crate::api::meta;

/// A column: name, type, priority (0 always shown, 1 only with `-o wide`).
type Column = (&'static str, &'static str, u8);

/// Each kind's columns after NAME, as kubectl shows them: `#` marks an integer column, and
/// the columns after `|` appear only with `-o wide`.
fn columns(kind: &str) -> Vec<Column> {
    let spec = match kind {
        "Pod" => "Ready, Status, Restarts, Age | IP, Node",
        "Deployment" => "Ready, Up-to-date#, Available#, Age | Containers, Images, Selector",
        "ReplicaSet" => "Desired#, Current#, Ready#, Age | Containers, Images, Selector",
        "Service" => "Type, Cluster-IP, External-IP, Port(s), Age | Selector",
        "Node" => "Status, Roles, Age, Version | Internal-IP",
        "Namespace" => "Status, Age",
        "Endpoints" => "Endpoints, Age",
        "Lease" => "Holder, Age",
        "ConfigMap" => "Data#, Age",
        "Secret" => "Type, Data#, Age",
        "ServiceAccount" => "Secrets#, Age",
        "DaemonSet" => {
            "Desired#, Current#, Ready#, Up-to-date#, Available#, Node Selector, Age | Containers, Images, Selector"
        }
        "Job" => "Status, Completions, Duration, Age | Containers, Images, Selector",
        "CronJob" => {
            "Schedule, Timezone, Suspend, Active#, Last Schedule, Age | Containers, Images"
        }
        "EndpointSlice" => "AddressType, Ports, Endpoints, Age",
        _ => "Age",
    };
    let (always, wide) = spec.split_once(" | ").unwrap_or((spec, ""));
    let named = |names: &'static str, priority: u8| {
        names
            .split(", ")
            .filter(|n| !n.is_empty())
            .map(move |name| match name.strip_suffix('#') {
                Some(name) => (name, "integer", priority),
                None => (name, "string", priority),
            })
    };
    std::iter::once(("Name", "string", 0))
        .chain(named(always, 0))
        .chain(named(wide, 1))
        .collect()
}

/// Kubernetes' short human durations: `45s`, `3m20s`, `5h10m`, `3d4h`, `400d`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60).replace("m0s", "m"),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60).replace("h0m", "h"),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24).replace("d0h", "d"),
        _ if d < 365 * 2 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

fn age(obj: &Value) -> String {
    let created =
        meta::meta_str(obj, "creationTimestamp").and_then(|t| t.parse::<jiff::Timestamp>().ok());
    match created {
        Some(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn text(obj: &Value, pointer: &str, missing: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(missing)
        .to_owned()
}

fn joined(items: Option<&Value>, field: &str) -> String {
    items
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get(field).and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn selector(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

/// What STATUS shows for a pod: a waiting or terminated reason beats the phase.
fn pod_status(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    for s in statuses.into_iter().flatten() {
        for state in ["waiting", "terminated"] {
            if let Some(reason) = s
                .pointer(&format!("/state/{state}/reason"))
                .and_then(Value::as_str)
            {
                return reason.to_owned();
            }
        }
    }
    text(
        pod,
        "/status/reason",
        &text(pod, "/status/phase", "Pending"),
    )
}

fn cells(kind: &str, obj: &Value) -> Vec<Value> {
    let name = json!(meta::name(obj).unwrap_or_default());
    let mut row = vec![name];
    let rest: Vec<Value> = match kind {
        "Pod" => {
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses.map_or(0, |s| {
                s.iter()
                    .filter(|c| c.get("ready") == Some(&json!(true)))
                    .count()
            });
            let restarts: i64 = statuses.map_or(0, |s| {
                s.iter()
                    .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                    .sum()
            });
            vec![
                json!(format!("{ready}/{total}")),
                json!(pod_status(obj)),
                json!(restarts.to_string()),
                json!(age(obj)),
                json!(text(obj, "/status/podIP", "<none>")),
                json!(text(obj, "/spec/nodeName", "<none>")),
            ]
        }
        "Deployment" => vec![
            json!(format!(
                "{}/{}",
                int(obj, "/status/readyReplicas"),
                int(obj, "/spec/replicas")
            )),
            json!(int(obj, "/status/updatedReplicas")),
            json!(int(obj, "/status/availableReplicas")),
            json!(age(obj)),
            json!(joined(
                obj.pointer("/spec/template/spec/containers"),
                "name"
            )),
            json!(joined(
                obj.pointer("/spec/template/spec/containers"),
                "image"
            )),
            json!(selector(obj, "/spec/selector/matchLabels")),
        ],
        "ReplicaSet" => vec![
            json!(int(obj, "/spec/replicas")),
            json!(int(obj, "/status/replicas")),
            json!(int(obj, "/status/readyReplicas")),
            json!(age(obj)),
            json!(joined(
                obj.pointer("/spec/template/spec/containers"),
                "name"
            )),
            json!(joined(
                obj.pointer("/spec/template/spec/containers"),
                "image"
            )),
            json!(selector(obj, "/spec/selector/matchLabels")),
        ],
        "Service" => {
            let ports = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let port = int(p, "/port");
                            let proto = text(p, "/protocol", "TCP");
                            match p.get("nodePort").and_then(Value::as_i64) {
                                Some(np) => format!("{port}:{np}/{proto}"),
                                None => format!("{port}/{proto}"),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".into());
            vec![
                json!(text(obj, "/spec/type", "ClusterIP")),
                json!(text(obj, "/spec/clusterIP", "<none>")),
                json!("<none>"),
                json!(ports),
                json!(age(obj)),
                json!(selector(obj, "/spec/selector")),
            ]
        }
        "Node" => {
            let conditions = obj.pointer("/status/conditions").and_then(Value::as_array);
            let ready = conditions
                .into_iter()
                .flatten()
                .find(|c| c.get("type") == Some(&json!("Ready")))
                .and_then(|c| c.get("status").and_then(Value::as_str));
            let mut status = match ready {
                Some("True") => "Ready".to_owned(),
                Some(_) => "NotReady".to_owned(),
                None => "Unknown".to_owned(),
            };
            if obj.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let internal = meta::internal_ip(obj).unwrap_or("<none>").to_owned();
            vec![
                json!(status),
                json!("<none>"),
                json!(age(obj)),
                json!(text(obj, "/status/nodeInfo/kubeletVersion", "")),
                json!(internal),
            ]
        }
        "Namespace" => vec![json!(text(obj, "/status/phase", "Active")), json!(age(obj))],
        "DaemonSet" => {
            let containers = obj.pointer("/spec/template/spec/containers");
            let node_selector = selector(obj, "/spec/template/spec/nodeSelector");
            vec![
                json!(int(obj, "/status/desiredNumberScheduled")),
                json!(int(obj, "/status/currentNumberScheduled")),
                json!(int(obj, "/status/numberReady")),
                json!(int(obj, "/status/updatedNumberScheduled")),
                json!(int(obj, "/status/numberAvailable")),
                json!(node_selector),
                json!(age(obj)),
                json!(joined(containers, "name")),
                json!(joined(containers, "image")),
                json!(selector(obj, "/spec/selector/matchLabels")),
            ]
        }
        "CronJob" => {
            let containers = obj.pointer("/spec/jobTemplate/spec/template/spec/containers");
            let last = obj
                .pointer("/status/lastScheduleTime")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map_or("<none>".into(), |t| {
                    human_duration(jiff::Timestamp::now().as_second() - t.as_second())
                });
            let active = obj.pointer("/status/active").and_then(Value::as_array);
            vec![
                json!(obj.pointer("/spec/schedule")),
                json!(
                    obj.pointer("/spec/timeZone")
                        .and_then(Value::as_str)
                        .unwrap_or("<none>")
                ),
                json!(obj.pointer("/spec/suspend") == Some(&json!(true))),
                json!(active.map_or(0, Vec::len)),
                json!(last),
                json!(age(obj)),
                json!(joined(containers, "name")),
                json!(joined(containers, "image")),
            ]
        }
        "Job" => {
            let holds = |kind: &str| {
                obj.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == kind && c["status"] == "True")
            };
            let status = ["Complete", "Failed", "Suspended"]
                .into_iter()
                .find(|kind| holds(kind))
                .unwrap_or("Running");
            let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
                Some(n) => format!("{}/{n}", int(obj, "/status/succeeded")),
                None => format!(
                    "{}/1 of {}",
                    int(obj, "/status/succeeded"),
                    int(obj, "/spec/parallelism")
                ),
            };
            let instant = |pointer: &str| {
                obj.pointer(pointer)
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            };
            let duration = match instant("/status/startTime") {
                Some(start) => {
                    let end =
                        instant("/status/completionTime").unwrap_or_else(jiff::Timestamp::now);
                    human_duration(end.as_second() - start.as_second())
                }
                None => String::new(),
            };
            let containers = obj.pointer("/spec/template/spec/containers");
            vec![
                json!(status),
                json!(completions),
                json!(duration),
                json!(age(obj)),
                json!(joined(containers, "name")),
                json!(joined(containers, "image")),
                json!(selector(obj, "/spec/selector/matchLabels")),
            ]
        }
        "Lease" => vec![
            json!(text(obj, "/spec/holderIdentity", "")),
            json!(age(obj)),
        ],
        "ConfigMap" => vec![
            json!(entries(obj, "data") + entries(obj, "binaryData")),
            json!(age(obj)),
        ],
        "Secret" => vec![
            json!(text(obj, "/type", "Opaque")),
            json!(entries(obj, "data")),
            json!(age(obj)),
        ],
        "EndpointSlice" => {
            let listed = |field: &str| {
                obj.get(field)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            let ports: Vec<String> = listed("ports")
                .iter()
                .map(|p| int(p, "/port").to_string())
                .collect();
            let addresses: Vec<String> = listed("endpoints")
                .iter()
                .filter_map(|e| {
                    e.pointer("/addresses/0")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect();
            let or_none = |v: Vec<String>| {
                if v.is_empty() {
                    "<unset>".to_owned()
                } else {
                    v.join(",")
                }
            };
            vec![
                json!(text(obj, "/addressType", "")),
                json!(or_none(ports)),
                json!(or_none(addresses)),
                json!(age(obj)),
            ]
        }
        "ServiceAccount" => vec![
            json!(
                obj.get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            json!(age(obj)),
        ],
        "Endpoints" => {
            let mut eps = Vec::new();
            for subset in obj
                .pointer("/subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let ports: Vec<i64> = subset
                    .get("ports")
                    .and_then(Value::as_array)
                    .map(|ps| ps.iter().map(|p| int(p, "/port")).collect())
                    .unwrap_or_default();
                for a in subset
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let ip = a.get("ip").and_then(Value::as_str).unwrap_or_default();
                    for p in &ports {
                        eps.push(format!("{ip}:{p}"));
                    }
                }
            }
            vec![
                json!(if eps.is_empty() {
                    "<none>".to_owned()
                } else {
                    eps.join(",")
                }),
                json!(age(obj)),
            ]
        }
        _ => vec![json!(age(obj))],
    };
    row.extend(rest);
    row
}

/// How many keys an object's map field holds.
fn entries(obj: &Value, field: &str) -> usize {
    obj.get(field)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

/// One row: cells and the object's metadata.
fn row(r: &Resource, obj: &Value) -> Value {
    json!({
        "cells": cells(r.kind, obj),
        "object": super::form::partial(obj),
    })
}

/// A Table of `objects`, at `resource_version`.
pub fn table(r: &Resource, objects: &[Value], metadata: Value) -> Value {
    let defs: Vec<Value> = columns(r.kind)
        .into_iter()
        .map(|(name, ty, priority)| {
            json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" },
                   "description": "", "priority": priority})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": defs,
        "rows": objects.iter().map(|o| row(r, o)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_come_from_their_spec() {
        let ds = columns("DaemonSet");
        assert_eq!(ds.len(), 11);
        assert_eq!(ds[0], ("Name", "string", 0));
        assert_eq!(ds[1], ("Desired", "integer", 0));
        assert!(ds.contains(&("Node Selector", "string", 0)));
        assert_eq!(ds[10], ("Selector", "string", 1));
        assert_eq!(
            columns("Widget"),
            [("Name", "string", 0), ("Age", "string", 0)]
        );
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60 * 5), "3h5m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600 * 4), "3d4h");
        assert_eq!(human_duration(400 * 86400), "400d");
    }

    #[test]
    fn a_pod_row_shows_ready_status_and_restarts() {
        let pod = json!({
            "metadata": {"name": "web-1"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "node-1"},
            "status": {"phase": "Running", "podIP": "10.0.0.2", "containerStatuses": [
                {"ready": true, "restartCount": 2, "state": {"running": {}}},
                {"ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        let cells = cells("Pod", &pod);
        assert_eq!(cells[0], "web-1");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "3");
        assert_eq!(cells[6], "node-1");
    }
}
