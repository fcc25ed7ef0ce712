//! Discovery: how clients learn what this server serves.
//!
//! kubectl starts every command by asking `/api` and `/apis` which groups and versions
//! exist, then `/api/v1` and `/apis/apps/v1` which resources, verbs and short names each
//! has (that is how `kubectl get deploy` finds deployments). `apply` and `create -f` also
//! read `/openapi/v3`: when the PATCH operations listed there accept `fieldValidation`,
//! kubectl leaves validation to the server and sends `fieldValidation=Strict`.
//! Everything here is computed from [`crate::api::RESOURCES`].

use serde_json::{Value, json};

use super::metrics;
use crate::api::{GROUPS, RESOURCES, Resource};

/// The Kubernetes version this server speaks for.
pub const KUBE_VERSION: (&str, &str) = ("1", "33");

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": KUBE_VERSION.0,
        "minor": KUBE_VERSION.1,
        "gitVersion": format!("v{}.{}.0-shipshape.{}", KUBE_VERSION.0, KUBE_VERSION.1, env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// `GET /api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

fn group_json(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `GET /apis`.
pub fn groups() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": GROUPS.iter().chain([&metrics::GROUP_VERSION]).map(|(g, v)| group_json(g, v)).collect::<Vec<_>>(),
    })
}

/// `GET /apis/{group}`, if the group exists.
pub fn group(name: &str) -> Option<Value> {
    let mut served = GROUPS.iter().chain([&metrics::GROUP_VERSION]);
    served.find(|(g, _)| *g == name).map(|(g, v)| {
        let mut doc = group_json(g, v);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The kind, group and version a subresource is exchanged as, and its verbs.
fn subresource_shape(
    r: &Resource,
    sub: &str,
) -> (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
) {
    match sub {
        "scale" => ("Scale", "autoscaling", "v1", &["get", "patch", "update"]),
        "binding" => ("Binding", "", "v1", &["create"]),
        "eviction" => ("Eviction", "policy", "v1", &["create"]),
        "log" => ("Pod", "", "v1", &["get"]),
        "exec" => ("PodExecOptions", "", "v1", &["create", "get"]),
        "attach" => ("PodAttachOptions", "", "v1", &["create", "get"]),
        "proxy" => (
            "Status",
            "",
            "v1",
            &["create", "delete", "get", "patch", "update"],
        ),
        _ => (r.kind, "", "", &["get", "patch", "update"]),
    }
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`, if that group version exists.
pub fn resources(group: &str, version: &str) -> Option<Value> {
    if (group, version) == metrics::GROUP_VERSION {
        return Some(metrics::resources());
    }
    let served: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in &served {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ALL_VERBS,
            "shortNames": r.short_names,
        });
        if ["pods", "services", "deployments", "replicasets"].contains(&r.plural) {
            entry["categories"] = json!(["all"]);
        }
        list.push(entry);
        for sub in r.subresources {
            let (kind, g, v, verbs) = subresource_shape(r, sub);
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if !v.is_empty() {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            list.push(entry);
        }
    }
    let group_version = served[0].api_version();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": list,
    }))
}

/// The URL path of a group version's OpenAPI v3 document (`api/v1`, `apis/apps/v1`).
fn openapi_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: where each group version's document is.
pub fn openapi_index() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs = vec![("", "v1")];
    gvs.extend(GROUPS.iter().copied());
    for (g, v) in gvs {
        let p = openapi_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", env!("CARGO_PKG_VERSION"))}),
        );
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/{api/v1 | apis/g/v}`: an OpenAPI 3 document listing, for every kind,
/// its operations and the query parameters they take. It carries no schemas: kubectl uses
/// it to learn that the server validates fields itself.
pub fn openapi_group(path: &str) -> Option<Value> {
    let served: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| openapi_path(r.group, r.version) == path)
        .collect();
    if served.is_empty() {
        return None;
    }
    let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": true});
    let mut paths = serde_json::Map::new();
    for r in served {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let base = if r.namespaced {
            format!("/{path}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("/{path}/{}", r.plural)
        };
        let op = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", r.kind),
                "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        paths.insert(base.clone(), json!({"post": op("post"), "get": op("list")}));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "shipshape", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
