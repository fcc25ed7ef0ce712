//! Tables: what `kubectl get` prints.
//!
//! kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and prints whatever
//! columns the server sends, so the server decides that `get pods` shows READY, STATUS and
//! RESTARTS. Each row carries the object's metadata (a `PartialObjectMetadata`), which
//! kubectl needs for namespaces, labels and `--show-labels`. Columns with priority 1 appear
//! only with `-o wide`.
//!
//! One spec line per kind names its columns after NAME and where each cell comes from, so
//! most kinds need no code of their own. Columns are separated by `, `, those after ` | `
//! appear only with `-o wide`, and each reads `Name[#][=source]`, `#` marking an integer
//! column. The source is one of:
//!
//! - a JSON pointer, `Holder=/spec/holderIdentity`: an integer column shows the number there
//!   (0 if none), any other the string there or, when that is missing or empty, what follows
//!   ` or ` (`Type=/type or Opaque`), else an empty string;
//! - the name of a cell computed in `computed`, `Status=node-status`, some of which read the
//!   pointer in parentheses, `Selector=selector(/spec/selector)`;
//! - nothing, as in `Age`: the computed cell named like the column, in lowercase.

use serde_json::{Value, json};

use crate::api::Resource;
use crate::api::meta;

/// A column: name, type, priority (0 always shown, 1 only with `-o wide`).
type Column = (&'static str, &'static str, u8);

/// Where a pod template's containers are, unless a cell says otherwise.
const TEMPLATE_CONTAINERS: &str = "/spec/template/spec/containers";

/// Each kind's columns after NAME and their cells, as kubectl shows them (see above).
fn spec(kind: &str) -> &'static str {
    match kind {
        "Pod" => {
            "Ready=pod-ready, Status=pod-status, Restarts, Age \
             | IP=/status/podIP or <none>, Node=/spec/nodeName or <none>"
        }
        "Deployment" => {
            "Ready=ready-replicas, Up-to-date#=/status/updatedReplicas, \
             Available#=/status/availableReplicas, Age | Containers, Images, Selector"
        }
        "StatefulSet" => "Ready=ready-replicas, Age | Containers, Images",
        "ControllerRevision" => "Controller=controller, Revision#=/revision, Age",
        "ReplicaSet" => {
            "Desired#=/spec/replicas, Current#=/status/replicas, Ready#=/status/readyReplicas, \
             Age | Containers, Images, Selector"
        }
        "Service" => {
            "Type=/spec/type or ClusterIP, Cluster-IP=/spec/clusterIP or <none>, \
             External-IP=none, Port(s)=service-ports, Age | Selector=selector(/spec/selector)"
        }
        "Node" => {
            "Status=node-status, Roles=none, Age, Version=/status/nodeInfo/kubeletVersion \
             | Internal-IP"
        }
        "Namespace" => "Status=/status/phase or Active, Age",
        "Endpoints" => "Endpoints, Age",
        "Lease" => "Holder=/spec/holderIdentity, Age",
        "ConfigMap" => "Data#=config-data, Age",
        "Secret" => "Type=/type or Opaque, Data#=keys(/data), Age",
        "ServiceAccount" => "Secrets#=items(/secrets), Age",
        "DaemonSet" => {
            "Desired#=/status/desiredNumberScheduled, Current#=/status/currentNumberScheduled, \
             Ready#=/status/numberReady, Up-to-date#=/status/updatedNumberScheduled, \
             Available#=/status/numberAvailable, \
             Node Selector=selector(/spec/template/spec/nodeSelector), \
             Age | Containers, Images, Selector"
        }
        "Job" => "Status=job-status, Completions, Duration, Age | Containers, Images, Selector",
        "CronJob" => {
            "Schedule, Timezone, Suspend, Active#=items(/status/active), \
             Last Schedule=last-schedule, Age \
             | Containers=containers(/spec/jobTemplate/spec/template/spec/containers), \
             Images=images(/spec/jobTemplate/spec/template/spec/containers)"
        }
        "HorizontalPodAutoscaler" => {
            "Reference=hpa-reference, Targets=hpa-targets, MinPods#=/spec/minReplicas, \
             MaxPods#=/spec/maxReplicas, Replicas#=/status/currentReplicas, Age"
        }
        "EndpointSlice" => {
            "AddressType=/addressType, Ports=slice-ports, Endpoints=slice-addresses, Age"
        }
        _ => "Age",
    }
}

/// The columns after NAME in `kind`'s spec, each with the source of its cells.
fn spec_columns(kind: &str) -> impl Iterator<Item = (Column, &'static str)> {
    let spec = spec(kind);
    let (always, wide) = spec.split_once(" | ").unwrap_or((spec, ""));
    let parse = |columns: &'static str, priority: u8| {
        columns
            .split(", ")
            .filter(|c| !c.is_empty())
            .map(move |column| {
                let (name, source) = column.split_once('=').unwrap_or((column, ""));
                match name.strip_suffix('#') {
                    Some(name) => ((name, "integer", priority), source),
                    None => ((name, "string", priority), source),
                }
            })
    };
    parse(always, 0).chain(parse(wide, 1))
}

fn columns(kind: &str) -> Vec<Column> {
    let rest = spec_columns(kind).map(|(column, _)| column);
    std::iter::once(("Name", "string", 0)).chain(rest).collect()
}

fn cells(kind: &str, obj: &Value) -> Vec<Value> {
    let name = json!(meta::name(obj).unwrap_or_default());
    let rest = spec_columns(kind).map(|(column, source)| cell(obj, column, source));
    std::iter::once(name).chain(rest).collect()
}

/// The cell that `source` (see the module docs) gives in `column`.
fn cell(obj: &Value, (column, ty, _): Column, source: &str) -> Value {
    match source {
        "" => computed(obj, &column.to_lowercase(), None),
        _ if source.starts_with('/') => {
            let (pointer, missing) = source.split_once(" or ").unwrap_or((source, ""));
            match ty {
                "integer" => json!(int(obj, pointer)),
                _ => json!(text(obj, pointer, missing)),
            }
        }
        _ => match source.strip_suffix(')').and_then(|s| s.split_once('(')) {
            Some((name, pointer)) => computed(obj, name, Some(pointer)),
            None => computed(obj, source, None),
        },
    }
}

/// The cells that take more than reading one value, by name; `pointer` is the one given in
/// parentheses, if any.
fn computed(obj: &Value, name: &str, pointer: Option<&str>) -> Value {
    const STATUSES: &str = "/status/containerStatuses";
    let or = |default| pointer.unwrap_or(default);
    match name {
        "age" => json!(ago(obj, "/metadata/creationTimestamp", "<unknown>")),
        "none" => json!("<none>"),
        "containers" => json!(joined(obj, or(TEMPLATE_CONTAINERS), "name")),
        "images" => json!(joined(obj, or(TEMPLATE_CONTAINERS), "image")),
        "selector" => json!(selector(obj, or("/spec/selector/matchLabels"))),
        "items" => json!(meta::each(obj, or("")).count()),
        "keys" => json!(keys(obj, or(""))),
        "pod-ready" => {
            let ready = meta::each(obj, STATUSES)
                .filter(|c| c["ready"] == true)
                .count();
            let total = meta::each(obj, "/spec/containers").count();
            json!(format!("{ready}/{total}"))
        }
        "pod-status" => json!(pod_status(obj)),
        "restarts" => {
            let restarts = meta::each(obj, STATUSES).filter_map(|c| c["restartCount"].as_i64());
            json!(restarts.sum::<i64>().to_string())
        }
        "ready-replicas" => {
            let ready = int(obj, "/status/readyReplicas");
            let desired = int(obj, "/spec/replicas");
            json!(format!("{ready}/{desired}"))
        }
        "service-ports" => {
            let ports = meta::each(obj, "/spec/ports").map(|p| {
                let (port, protocol) = (int(p, "/port"), text(p, "/protocol", "TCP"));
                match p["nodePort"].as_i64() {
                    Some(node_port) => format!("{port}:{node_port}/{protocol}"),
                    None => format!("{port}/{protocol}"),
                }
            });
            json!(listed(ports, "<none>"))
        }
        "node-status" => {
            let ready = meta::each(obj, "/status/conditions").find(|c| c["type"] == "Ready");
            let status = match ready.and_then(|c| c["status"].as_str()) {
                Some("True") => "Ready",
                Some(_) => "NotReady",
                None => "Unknown",
            };
            match flag(obj, "/spec/unschedulable") {
                true => json!(format!("{status},SchedulingDisabled")),
                false => json!(status),
            }
        }
        "controller" => {
            let owner =
                meta::each(obj, "/metadata/ownerReferences").find(|o| o["controller"] == true);
            json!(owner.map_or("<none>".into(), |o| {
                let group = text(o, "/apiVersion", "")
                    .rsplit_once('/')
                    .map(|(g, _)| format!(".{g}"));
                let kind = text(o, "/kind", "").to_lowercase();
                format!(
                    "{kind}{}/{}",
                    group.unwrap_or_default(),
                    text(o, "/name", "")
                )
            }))
        }
        "internal-ip" => json!(meta::internal_ip(obj).unwrap_or("<none>")),
        "endpoints" => {
            let mut endpoints = Vec::new();
            for subset in meta::each(obj, "/subsets") {
                let ports: Vec<i64> = meta::each(subset, "/ports")
                    .map(|p| int(p, "/port"))
                    .collect();
                for address in meta::each(subset, "/addresses") {
                    let ip = address["ip"].as_str().unwrap_or_default();
                    endpoints.extend(ports.iter().map(|port| format!("{ip}:{port}")));
                }
            }
            json!(listed(endpoints, "<none>"))
        }
        "config-data" => json!(keys(obj, "/data") + keys(obj, "/binaryData")),
        "hpa-reference" => {
            let (kind, name) = (
                text(obj, "/spec/scaleTargetRef/kind", ""),
                text(obj, "/spec/scaleTargetRef/name", ""),
            );
            json!(format!("{kind}/{name}"))
        }
        "hpa-targets" => {
            // `cpu: 12%/50%`: what each metric is now, of its target.
            let amount = |of: &Value| match of["averageUtilization"].as_i64() {
                Some(percent) => format!("{percent}%"),
                None => text(of, "/averageValue", "<unknown>"),
            };
            // A resource's metric names it; a Pods metric names its metric.
            let source = |m: &Value| match m["type"].as_str() {
                Some("Pods") => m["pods"].clone(),
                _ => m["resource"].clone(),
            };
            fn name_of(source: &Value) -> Option<&str> {
                source["name"]
                    .as_str()
                    .or(source["metric"]["name"].as_str())
            }
            let targets = meta::each(obj, "/spec/metrics").map(|metric| {
                let spec = source(metric);
                let name = name_of(&spec).unwrap_or("<unknown>");
                let now = meta::each(obj, "/status/currentMetrics")
                    .map(source)
                    .find(|m| name_of(m) == Some(name));
                let now = now.map_or("<unknown>".into(), |m| amount(&m["current"]));
                format!("{name}: {now}/{}", amount(&spec["target"]))
            });
            json!(listed(targets, "<none>"))
        }
        "job-status" => {
            let holds = |kind: &str| {
                meta::each(obj, "/status/conditions")
                    .any(|c| c["type"] == kind && c["status"] == "True")
            };
            let kinds = ["Complete", "Failed", "Suspended"];
            json!(kinds.into_iter().find(|k| holds(k)).unwrap_or("Running"))
        }
        "completions" => {
            let succeeded = int(obj, "/status/succeeded");
            let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
                Some(n) => format!("{succeeded}/{n}"),
                None => format!("{succeeded}/1 of {}", int(obj, "/spec/parallelism")),
            };
            json!(completions)
        }
        "duration" => {
            let Some(start) = instant(obj, "/status/startTime") else {
                return json!("");
            };
            let end = instant(obj, "/status/completionTime").unwrap_or_else(jiff::Timestamp::now);
            json!(human_duration(end.as_second() - start.as_second()))
        }
        "schedule" => json!(obj.pointer("/spec/schedule")),
        "timezone" => json!(obj["spec"]["timeZone"].as_str().unwrap_or("<none>")),
        "suspend" => json!(flag(obj, "/spec/suspend")),
        "last-schedule" => json!(ago(obj, "/status/lastScheduleTime", "<none>")),
        "slice-ports" => {
            let ports = meta::each(obj, "/ports").map(|p| int(p, "/port").to_string());
            json!(listed(ports, "<unset>"))
        }
        "slice-addresses" => {
            let first = |e: &Value| e.pointer("/addresses/0")?.as_str().map(str::to_owned);
            let addresses = meta::each(obj, "/endpoints").filter_map(first);
            json!(listed(addresses, "<unset>"))
        }
        other => unreachable!("no computed cell is named {other}"),
    }
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

/// How long ago the time at `pointer` was, or `missing`.
fn ago(obj: &Value, pointer: &str, missing: &str) -> String {
    let now = jiff::Timestamp::now().as_second();
    instant(obj, pointer).map_or(missing.into(), |t| human_duration(now - t.as_second()))
}

fn instant(obj: &Value, pointer: &str) -> Option<jiff::Timestamp> {
    obj.pointer(pointer)?.as_str()?.parse().ok()
}

fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn flag(obj: &Value, pointer: &str) -> bool {
    obj.pointer(pointer) == Some(&Value::Bool(true))
}

fn text(obj: &Value, pointer: &str, missing: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(missing)
        .to_owned()
}

/// How many keys the map at `pointer` holds.
fn keys(obj: &Value, pointer: &str) -> usize {
    let map = obj.pointer(pointer).and_then(Value::as_object);
    map.map_or(0, serde_json::Map::len)
}

/// `items` joined by commas, or `missing` when there are none.
fn listed(items: impl IntoIterator<Item = String>, missing: &str) -> String {
    let items: Vec<String> = items.into_iter().collect();
    match items.is_empty() {
        true => missing.to_owned(),
        false => items.join(","),
    }
}

/// The `field` of each item in the array at `pointer`, joined by commas.
fn joined(obj: &Value, pointer: &str, field: &str) -> String {
    listed(
        meta::each(obj, pointer).filter_map(|c| c[field].as_str().map(str::to_owned)),
        "",
    )
}

/// The map at `pointer` as `key=value` pairs, or `<none>`.
fn selector(obj: &Value, pointer: &str) -> String {
    let labels = obj.pointer(pointer).and_then(Value::as_object);
    let pair = |(k, v): (&String, &Value)| format!("{k}={}", v.as_str().unwrap_or_default());
    listed(labels.into_iter().flatten().map(pair), "<none>")
}

/// What STATUS shows for a pod: a waiting or terminated reason beats the phase.
fn pod_status(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let reason = meta::each(pod, "/status/containerStatuses").find_map(|s| {
        ["waiting", "terminated"]
            .into_iter()
            .find_map(|state| s["state"][state]["reason"].as_str())
    });
    let phase = text(pod, "/status/phase", "Pending");
    reason.map_or_else(|| text(pod, "/status/reason", &phase), str::to_owned)
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
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": cells(r.kind, o), "object": super::form::partial(o)}))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": defs,
        "rows": rows,
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

    /// One sample of every kind, and an empty object, as `kubectl get -o wide` would show them.
    #[test]
    fn every_kind_keeps_its_columns_and_cells() {
        let containers =
            json!([{"name": "web", "image": "nginx"}, {"name": "side", "image": "busybox"}]);
        let template = json!({"spec": {"containers": containers, "nodeSelector": {"os": "linux"}}});
        let samples = json!([
            ["Pod", {"metadata": {"name": "p"}, "spec": {"containers": [{}], "nodeName": ""},
                "status": {"phase": "Running", "podIP": "", "containerStatuses": [
                    {"ready": true, "state": {"terminated": {"reason": "Completed"}}}]}}],
            ["Pod", {"metadata": {"name": "q", "deletionTimestamp": "x"}, "status": {"reason": "Evicted"}}],
            ["Pod", {"status": {"phase": "Failed", "reason": ""}}],
            ["Deployment", {"spec": {"replicas": 3, "template": template,
                "selector": {"matchLabels": {"app": "web", "tier": "fe"}}},
                "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}],
            ["ReplicaSet", {"spec": {"replicas": 2, "template": template},
                "status": {"replicas": 2, "readyReplicas": 1}}],
            ["Service", {"spec": {"type": "NodePort", "clusterIP": "10.96.0.5", "selector": {"app": "web"},
                "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}}],
            ["Node", {"spec": {"unschedulable": true}, "status": {
                "conditions": [{"type": "Ready", "status": "False"}],
                "nodeInfo": {"kubeletVersion": "v1.30.0"},
                "addresses": [{"type": "InternalIP", "address": "10.0.0.9"}]}}],
            ["Node", {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}],
            ["Namespace", {"status": {"phase": "Terminating"}}],
            ["Endpoints", {"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                "ports": [{"port": 80}, {"port": 443}]}]}],
            ["Lease", {"spec": {"holderIdentity": "node-1"}}],
            ["ConfigMap", {"data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}}],
            ["Secret", {"type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}],
            ["ServiceAccount", {"secrets": [{"name": "t"}]}],
            ["DaemonSet", {"spec": {"template": template, "selector": {"matchLabels": {"app": "d"}}},
                "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                    "updatedNumberScheduled": 1, "numberAvailable": 2}}],
            ["Job", {"spec": {"completions": 3, "template": template},
                "status": {"succeeded": 2, "conditions": [{"type": "Complete", "status": "True"}],
                    "startTime": "2024-01-01T00:00:00Z", "completionTime": "2024-01-01T00:05:30Z"}}],
            ["Job", {"spec": {"parallelism": 2}, "status": {"conditions": [
                {"type": "Failed", "status": "False"}, {"type": "Suspended", "status": "True"}]}}],
            ["CronJob", {"spec": {"schedule": "*/5 * * * *", "timeZone": "", "suspend": true,
                "jobTemplate": {"spec": {"template": template}}}, "status": {"active": [{}, {}]}}],
            ["EndpointSlice", {"addressType": "IPv4", "ports": [{"port": 80}, {}],
                "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": []}]}],
            ["Widget", {"metadata": {"name": "w"}}],
        ]);
        let shown = |kind: &str, obj: &Value| {
            let names: Vec<String> = columns(kind)
                .iter()
                .map(|(name, ty, priority)| format!("{name}:{ty}:{priority}"))
                .collect();
            json!([
                kind,
                names.join(", "),
                cells(kind, obj),
                cells(kind, &json!({}))
            ])
        };
        let actual: Vec<String> = samples
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| shown(s[0].as_str().unwrap_or_default(), &s[1]).to_string())
            .collect();
        let expected = r#"
["Pod","Name:string:0, Ready:string:0, Status:string:0, Restarts:string:0, Age:string:0, IP:string:1, Node:string:1",["p","1/1","Completed","0","<unknown>","<none>","<none>"],["","0/0","Pending","0","<unknown>","<none>","<none>"]]
["Pod","Name:string:0, Ready:string:0, Status:string:0, Restarts:string:0, Age:string:0, IP:string:1, Node:string:1",["q","0/0","Terminating","0","<unknown>","<none>","<none>"],["","0/0","Pending","0","<unknown>","<none>","<none>"]]
["Pod","Name:string:0, Ready:string:0, Status:string:0, Restarts:string:0, Age:string:0, IP:string:1, Node:string:1",["","0/0","Failed","0","<unknown>","<none>","<none>"],["","0/0","Pending","0","<unknown>","<none>","<none>"]]
["Deployment","Name:string:0, Ready:string:0, Up-to-date:integer:0, Available:integer:0, Age:string:0, Containers:string:1, Images:string:1, Selector:string:1",["","2/3",3,2,"<unknown>","web,side","nginx,busybox","app=web,tier=fe"],["","0/0",0,0,"<unknown>","","","<none>"]]
["ReplicaSet","Name:string:0, Desired:integer:0, Current:integer:0, Ready:integer:0, Age:string:0, Containers:string:1, Images:string:1, Selector:string:1",["",2,2,1,"<unknown>","web,side","nginx,busybox","<none>"],["",0,0,0,"<unknown>","","","<none>"]]
["Service","Name:string:0, Type:string:0, Cluster-IP:string:0, External-IP:string:0, Port(s):string:0, Age:string:0, Selector:string:1",["","NodePort","10.96.0.5","<none>","80:30080/TCP,53/UDP","<unknown>","app=web"],["","ClusterIP","<none>","<none>","<none>","<unknown>","<none>"]]
["Node","Name:string:0, Status:string:0, Roles:string:0, Age:string:0, Version:string:0, Internal-IP:string:1",["","NotReady,SchedulingDisabled","<none>","<unknown>","v1.30.0","10.0.0.9"],["","Unknown","<none>","<unknown>","","<none>"]]
["Node","Name:string:0, Status:string:0, Roles:string:0, Age:string:0, Version:string:0, Internal-IP:string:1",["","Ready","<none>","<unknown>","","<none>"],["","Unknown","<none>","<unknown>","","<none>"]]
["Namespace","Name:string:0, Status:string:0, Age:string:0",["","Terminating","<unknown>"],["","Active","<unknown>"]]
["Endpoints","Name:string:0, Endpoints:string:0, Age:string:0",["","10.0.0.1:80,10.0.0.1:443,10.0.0.2:80,10.0.0.2:443","<unknown>"],["","<none>","<unknown>"]]
["Lease","Name:string:0, Holder:string:0, Age:string:0",["","node-1","<unknown>"],["","","<unknown>"]]
["ConfigMap","Name:string:0, Data:integer:0, Age:string:0",["",3,"<unknown>"],["",0,"<unknown>"]]
["Secret","Name:string:0, Type:string:0, Data:integer:0, Age:string:0",["","kubernetes.io/tls",2,"<unknown>"],["","Opaque",0,"<unknown>"]]
["ServiceAccount","Name:string:0, Secrets:integer:0, Age:string:0",["",1,"<unknown>"],["",0,"<unknown>"]]
["DaemonSet","Name:string:0, Desired:integer:0, Current:integer:0, Ready:integer:0, Up-to-date:integer:0, Available:integer:0, Node Selector:string:0, Age:string:0, Containers:string:1, Images:string:1, Selector:string:1",["",3,3,2,1,2,"os=linux","<unknown>","web,side","nginx,busybox","app=d"],["",0,0,0,0,0,"<none>","<unknown>","","","<none>"]]
["Job","Name:string:0, Status:string:0, Completions:string:0, Duration:string:0, Age:string:0, Containers:string:1, Images:string:1, Selector:string:1",["","Complete","2/3","5m30s","<unknown>","web,side","nginx,busybox","<none>"],["","Running","0/1 of 0","","<unknown>","","","<none>"]]
["Job","Name:string:0, Status:string:0, Completions:string:0, Duration:string:0, Age:string:0, Containers:string:1, Images:string:1, Selector:string:1",["","Suspended","0/1 of 2","","<unknown>","","","<none>"],["","Running","0/1 of 0","","<unknown>","","","<none>"]]
["CronJob","Name:string:0, Schedule:string:0, Timezone:string:0, Suspend:string:0, Active:integer:0, Last Schedule:string:0, Age:string:0, Containers:string:1, Images:string:1",["","*/5 * * * *","",true,2,"<none>","<unknown>","web,side","nginx,busybox"],["",null,"<none>",false,0,"<none>","<unknown>","",""]]
["EndpointSlice","Name:string:0, AddressType:string:0, Ports:string:0, Endpoints:string:0, Age:string:0",["","IPv4","80,0","10.0.0.1","<unknown>"],["","","<unset>","<unset>","<unknown>"]]
["Widget","Name:string:0, Age:string:0",["w","<unknown>"],["","<unknown>"]]
"#;
        assert_eq!(actual, expected.trim().lines().collect::<Vec<_>>());

        let long_ago = json!({"metadata": {"creationTimestamp": "2000-01-01T00:00:00Z"},
            "status": {"lastScheduleTime": "2000-01-01T00:00:00Z"}});
        let cron = cells("CronJob", &long_ago);
        assert!(cron[5].as_str().is_some_and(|age| age.ends_with('y')));
        assert_eq!(cron[5], cron[6]);
    }
}
