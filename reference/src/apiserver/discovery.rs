//! Discovery: how clients learn what this server serves.
//!
//! kubectl starts every command by asking `/api` and `/apis` which groups and versions
//! exist, then `/api/v1` and `/apis/apps/v1` which resources, verbs and short names each
//! has (that is how `kubectl get deploy` finds deployments). `apply` and `create -f` also
//! read `/openapi/v3`: when the PATCH operations listed there accept `fieldValidation`,
//! kubectl leaves validation to the server and sends `fieldValidation=Strict`.
//! Everything here is computed from [`crate::api::RESOURCES`].
//!
//! Clients of Kubernetes 1.30 and later ask `/api` and `/apis` for *aggregated* discovery
//! first ([`AGGREGATED`]): every group version with its resources and their subresources in
//! one document, so that kubectl needs two requests where it would need one per group
//! version. It is built from the same per-version lists.

use serde_json::{Value, json};

use super::{metrics, reviews};
use crate::api::{GROUPS, RESOURCES, Resource, meta};
use k8s_openapi::schemars::generate::SchemaSettings;

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

/// The media type of aggregated discovery (`apidiscovery.k8s.io/v2`).
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header takes aggregated discovery in JSON, anywhere in its list.
pub fn takes_aggregated(accept: &str) -> bool {
    accept.split(',').any(|offered| {
        let params: Vec<&str> = offered.split(';').map(str::trim).collect();
        params.first() == Some(&"application/json")
            && ["g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"]
                .iter()
                .all(|wanted| params.contains(wanted))
    })
}

/// `GET /api` (`core`) or `GET /apis` as aggregated discovery.
pub fn aggregated(core: bool) -> Value {
    let served: Vec<(&str, &str)> = match core {
        true => vec![("", "v1")],
        false => all_groups().copied().collect(),
    };
    let items: Vec<Value> = served
        .into_iter()
        .filter_map(|(group, version)| {
            let resources = aggregated_resources(group, version, &resources(group, version)?);
            let versions =
                json!([{"version": version, "resources": resources, "freshness": "Current"}]);
            Some(json!({"metadata": {"name": group}, "versions": versions}))
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
           "metadata": {}, "items": items})
}

/// A group version's resource list ([`resources`]) in aggregated form: each subresource
/// (`deployments/scale`) under its resource.
fn aggregated_resources(group: &str, version: &str, list: &Value) -> Vec<Value> {
    let mut aggregated: Vec<Value> = Vec::new();
    for entry in meta::each(list, "/resources") {
        let kind = json!({
            "group": entry.get("group").and_then(Value::as_str).unwrap_or(group),
            "version": entry.get("version").and_then(Value::as_str).unwrap_or(version),
            "kind": entry["kind"],
        });
        let name = entry["name"].as_str().unwrap_or_default();
        let Some((parent, sub)) = name.split_once('/') else {
            let scope = if entry["namespaced"] == true {
                "Namespaced"
            } else {
                "Cluster"
            };
            aggregated.push(json!({
                "resource": name, "responseKind": kind, "scope": scope,
                "singularResource": entry["singularName"], "verbs": entry["verbs"],
                "shortNames": entry.get("shortNames").unwrap_or(&json!([])),
                "categories": entry.get("categories").unwrap_or(&json!([])),
                "subresources": [],
            }));
            continue;
        };
        let subresource =
            json!({"subresource": sub, "responseKind": kind, "verbs": entry["verbs"]});
        if let Some(list) = aggregated
            .iter_mut()
            .find(|r| r["resource"] == parent)
            .and_then(|r| r["subresources"].as_array_mut())
        {
            list.push(subresource);
        }
    }
    aggregated
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

/// Every group version under `/apis`: the stored kinds', usage, and the reviews.
fn all_groups() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    let answered = [&metrics::GROUP_VERSION, &metrics::CUSTOM_GROUP_VERSION].into_iter();
    GROUPS.iter().chain(answered).chain(&reviews::GROUPS)
}

/// `GET /apis`.
pub fn groups() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": all_groups().map(|(g, v)| group_json(g, v)).collect::<Vec<_>>(),
    })
}

/// `GET /apis/{group}`, if the group exists.
pub fn group(name: &str) -> Option<Value> {
    all_groups().find(|(g, _)| *g == name).map(|(g, v)| {
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
        "token" => ("TokenRequest", "authentication.k8s.io", "v1", &["create"]),
        "eviction" => ("Eviction", "policy", "v1", &["create"]),
        "log" => ("Pod", "", "v1", &["get"]),
        "exec" => ("PodExecOptions", "", "v1", &["create", "get"]),
        "attach" => ("PodAttachOptions", "", "v1", &["create", "get"]),
        "portforward" => ("PodPortForwardOptions", "", "v1", &["create", "get"]),
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
    if (group, version) == metrics::CUSTOM_GROUP_VERSION {
        return Some(metrics::custom_resources());
    }
    if reviews::GROUPS.contains(&(group, version)) {
        return Some(reviews::resources(group));
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
        // What `kubectl get all` lists, as in Kubernetes.
        let all = "pods services deployments replicasets statefulsets daemonsets jobs cronjobs horizontalpodautoscalers";
        if all.split(' ').any(|p| p == r.plural) {
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

/// Every group version whose kinds are stored, core first.
fn group_versions() -> impl Iterator<Item = (&'static str, &'static str)> {
    std::iter::once(("", "v1")).chain(GROUPS.iter().copied())
}

/// `GET /openapi/v3`: where each group version's document is.
pub fn openapi_index() -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in group_versions() {
        let p = openapi_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", env!("CARGO_PKG_VERSION"))}),
        );
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/{api/v1 | apis/g/v}`: an OpenAPI 3 document listing, for every kind,
/// its operations and the query parameters they take (kubectl learns from them that the
/// server validates fields itself), and its schema, with the schemas of every type it
/// holds (`kubectl explain` reads them). The schemas come from the k8s-openapi types the
/// API decodes with, descriptions and all.
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
    let mut schemas = SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    for r in served {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let reference = (r.schema)(&mut schemas);
        let name = reference
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next());
        kinds.push((name.unwrap_or_default().to_owned(), gvk.clone()));
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
    let mut definitions = schemas.take_definitions(true);
    for (name, gvk) in kinds {
        if let Some(definition) = definitions.get_mut(&name).and_then(Value::as_object_mut) {
            definition.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "shipshape", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": definitions},
    }))
}

/// `GET /openapi/v2`: the same paths and schemas as the OpenAPI 3 documents, every group
/// version in one Swagger 2.0 document, for the tools that still read it (kubectl reads v3).
/// It is served as JSON only, never as protobuf.
pub fn openapi_v2() -> Value {
    let (mut paths, mut definitions) = (serde_json::Map::new(), serde_json::Map::new());
    for (g, v) in group_versions() {
        let Some(Value::Object(mut doc)) = openapi_group(&openapi_path(g, v)) else {
            continue;
        };
        paths.extend(
            doc.remove("paths")
                .and_then(|p| p.as_object().cloned())
                .unwrap_or_default(),
        );
        let schemas = doc.remove("components").map(|mut c| c["schemas"].take());
        definitions.extend(
            schemas
                .and_then(|s| s.as_object().cloned())
                .unwrap_or_default(),
        );
    }
    // Swagger 2 names a query parameter's type on the parameter itself, and keeps the
    // schemas under `definitions`.
    let v2 = json!({"swagger": "2.0", "paths": paths, "definitions": definitions,
        "info": {"title": "shipshape", "version": env!("CARGO_PKG_VERSION")}});
    let text = v2
        .to_string()
        .replace("#/components/schemas/", "#/definitions/");
    let text = text.replace(
        r#""schema":{"type":"string"},"uniqueItems""#,
        r#""type":"string","uniqueItems""#,
    );
    serde_json::from_str(&text).unwrap_or(v2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_document_holds_every_group_s_paths_and_schemas_in_swagger_2_form() {
        let v2 = openapi_v2();
        assert_eq!(v2["swagger"], "2.0");
        let definitions = v2["definitions"].as_object().expect("definitions");
        for kind in [
            "io.k8s.api.core.v1.Pod",
            "io.k8s.api.apps.v1.Deployment",
            "io.k8s.api.rbac.v1.Role",
        ] {
            assert!(definitions.contains_key(kind), "{kind}");
        }
        assert!(
            v2["paths"]
                .get("/apis/batch/v1/namespaces/{namespace}/jobs")
                .is_some()
        );
        let text = v2.to_string();
        assert!(
            !text.contains("#/components/"),
            "every reference points into definitions"
        );
        let refs = text.matches("\"$ref\":\"#/definitions/").count();
        assert!(refs > 100, "{refs} references");
        let parameter =
            &v2["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"]["parameters"][0];
        assert_eq!(parameter["type"], "string", "{parameter}");
    }

    #[test]
    fn each_group_document_holds_its_kinds_schemas_and_the_types_they_hold() {
        let apps = openapi_group("apis/apps/v1").expect("apps/v1 is served");
        let schemas = &apps["components"]["schemas"];
        let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        let replicas = &schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"];
        assert_eq!(replicas["type"], "integer");
        assert!(schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"].is_object());
        let text = apps.to_string();
        assert!(
            text.contains("#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        );
        assert!(
            !text.contains("#/$defs"),
            "every reference resolves within the document"
        );
        assert!(
            openapi_group("api/v1").expect("v1")["components"]["schemas"]["io.k8s.api.core.v1.Pod"]
                .is_object()
        );
    }

    #[test]
    fn aggregated_discovery_is_served_to_whoever_lists_it_in_json() {
        // What client-go and kube-rs send, best first.
        let clients = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(takes_aggregated(clients));
        assert!(!takes_aggregated("application/json"));
        assert!(!takes_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
        assert!(!takes_aggregated(
            "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        ));
    }

    #[test]
    fn aggregated_discovery_puts_each_subresource_under_its_resource() {
        let apis = aggregated(false);
        let group = |name: &str| {
            apis["items"]
                .as_array()
                .and_then(|items| items.iter().find(|g| g["metadata"]["name"] == name))
                .cloned()
                .unwrap_or_else(|| panic!("group {name} in {apis}"))
        };
        let apps = &group("apps")["versions"][0];
        assert_eq!(apps["version"], "v1");
        let deployments = meta::each(apps, "/resources")
            .find(|r| r["resource"] == "deployments")
            .expect("deployments");
        assert_eq!(deployments["scope"], "Namespaced");
        assert_eq!(deployments["responseKind"]["kind"], "Deployment");
        assert_eq!(deployments["shortNames"], json!(["deploy"]));
        let scale = meta::each(deployments, "/subresources")
            .find(|s| s["subresource"] == "scale")
            .expect("deployments/scale");
        assert_eq!(
            scale["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        assert!(group("metrics.k8s.io")["versions"][0]["resources"].is_array());
        let custom = resources("custom.metrics.k8s.io", "v1beta2").expect("custom metrics");
        assert_eq!(
            custom["resources"][0]["name"],
            "pods/connections_per_second"
        );
        let core = aggregated(true);
        let nodes = meta::each(&core["items"][0]["versions"][0], "/resources")
            .find(|r| r["resource"] == "nodes")
            .expect("nodes");
        assert_eq!(nodes["scope"], "Cluster");
    }
}
