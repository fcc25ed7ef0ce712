//! # The API: which kinds exist, and what a valid object of each kind is
//!
//! The seed's objects — pods, deployments, services, nodes — are Kubernetes API objects.
//! This module knows them as data: [`RESOURCES`] lists every resource the apiserver serves
//! (group, version, plural, kind, namespaced or not, subresources), and for each kind
//! [`validate`] checks an incoming object the way Kubernetes does (typed decoding through
//! `k8s-openapi`, unknown fields, names, required fields) and [`defaults`] fills in the
//! fields Kubernetes fills in. [`selector`] parses label and field selectors.
//!
//! Objects travel as `serde_json::Value` so the apiserver can store exactly what clients
//! see; the typed `k8s-openapi` structs are the reference for what is well-formed.

pub mod defaults;
pub mod meta;
pub mod quantity;
pub mod selector;
pub mod validate;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::schemars::{self, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Decodes a body as its kind's typed `k8s-openapi` value and encodes that again: what is
/// well-formed, and which fields the kind knows ([`validate::decode`]).
pub type Typed = fn(&Value) -> Result<Value, String>;

/// A kind's OpenAPI schema: a reference to it, its definition (and those of the types it
/// holds) added to the generator.
pub type Schema = fn(&mut SchemaGenerator) -> schemars::Schema;

/// One resource the apiserver serves.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    /// API group; `""` for core.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural lower-case name used in URLs (`deployments`).
    pub plural: &'static str,
    /// Singular name (`deployment`).
    pub singular: &'static str,
    /// Kind of one object (`Deployment`).
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names (`deploy`).
    pub short_names: &'static [&'static str],
    /// Subresources served under an object (`status`, `scale`, ...).
    pub subresources: &'static [&'static str],
    /// Whether objects have a spec whose changes bump `metadata.generation`.
    pub has_spec: bool,
    /// The kind's typed round trip.
    pub typed: Typed,
    /// The kind's schema.
    pub schema: Schema,
}

/// Whether a `k8s-openapi` scope is a namespace's.
pub trait Scope {
    /// True for namespaced kinds.
    const NAMESPACED: bool;
}

impl Scope for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl Scope for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// A subresource's kind (a TokenRequest) is exchanged at its parent's address.
impl Scope for k8s_openapi::SubResourceScope {
    const NAMESPACED: bool = true;
}

fn typed<K: DeserializeOwned + Serialize>(body: &Value) -> Result<Value, String> {
    let typed: K = serde_json::from_value(body.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

impl Resource {
    /// The `k8s-openapi` kind `K`, served plainly: its group, version, kind, plural and
    /// scope come from the type, so a kind with no behaviour of its own is one line of
    /// [`RESOURCES`].
    pub(crate) const fn of<K>(singular: &'static str) -> Resource
    where
        K: k8s_openapi::Resource + DeserializeOwned + Serialize + schemars::JsonSchema,
        K::Scope: Scope,
    {
        Resource {
            group: K::GROUP,
            version: K::VERSION,
            plural: K::URL_PATH_SEGMENT,
            singular,
            kind: K::KIND,
            namespaced: <K::Scope as Scope>::NAMESPACED,
            short_names: &[],
            subresources: &[],
            has_spec: false,
            typed: typed::<K>,
            schema: SchemaGenerator::subschema_for::<K>,
        }
    }

    /// With kubectl short names.
    const fn short(self, short_names: &'static [&'static str]) -> Resource {
        Resource {
            short_names,
            ..self
        }
    }

    /// With subresources.
    const fn sub(self, subresources: &'static [&'static str]) -> Resource {
        Resource {
            subresources,
            ..self
        }
    }

    /// With a spec whose changes are a new generation.
    const fn spec(self) -> Resource {
        Resource {
            has_spec: true,
            ..self
        }
    }

    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The `...List` kind of a collection.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/{}", self.plural, ns, name),
            _ => format!("/registry/{}/{}", self.plural, name),
        }
    }

    /// The store prefix of a collection: one namespace, or all of them.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/", self.plural, ns),
            _ => format!("/registry/{}/", self.plural),
        }
    }

    /// Whether `sub` is a subresource of this resource.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
}

/// Every resource served, core group first.
pub const RESOURCES: &[Resource] = &[
    Resource::of::<Namespace>("namespace")
        .short(&["ns"])
        .sub(&["status"])
        .spec(),
    Resource::of::<Node>("node")
        .short(&["no"])
        .sub(&["status"])
        .spec(),
    Resource::of::<Pod>("pod")
        .short(&["po"])
        .sub(&[
            "status",
            "binding",
            "log",
            "eviction",
            "proxy",
            "exec",
            "attach",
            "portforward",
        ])
        .spec(),
    Resource::of::<Service>("service")
        .short(&["svc"])
        .sub(&["status", "proxy"])
        .spec(),
    Resource::of::<Endpoints>("endpoints").short(&["ep"]),
    Resource::of::<EndpointSlice>("endpointslice"),
    Resource::of::<Event>("event").short(&["ev"]),
    // Configuration handed to pods: plain data, checked and stored, nothing more.
    Resource::of::<ConfigMap>("configmap").short(&["cm"]),
    Resource::of::<Secret>("secret"),
    // Who a pod acts as; every namespace gets a `default` one
    // ([`crate::controllers`]' service accounts controller).
    Resource::of::<ServiceAccount>("serviceaccount")
        .short(&["sa"])
        .sub(&["token"]),
    Resource::of::<Deployment>("deployment")
        .short(&["deploy"])
        .sub(&["status", "scale"])
        .spec(),
    Resource::of::<DaemonSet>("daemonset")
        .short(&["ds"])
        .sub(&["status"])
        .spec(),
    // Pods with names and an order ([`crate::controllers`]' StatefulSet controller), and
    // the templates such sets and DaemonSets have had.
    Resource::of::<StatefulSet>("statefulset")
        .short(&["sts"])
        .sub(&["status", "scale"])
        .spec(),
    Resource::of::<ControllerRevision>("controllerrevision"),
    Resource::of::<ReplicaSet>("replicaset")
        .short(&["rs"])
        .sub(&["status", "scale"])
        .spec(),
    // Who holds a lock, for how long: the members of a control plane elect the one that
    // runs the scheduler and the controllers with one (`kube-system/shipshape-controllers`),
    // as Kubernetes' components do; node agents renew one each as their heartbeat.
    Resource::of::<Lease>("lease"),
    // Pods that run to completion ([`crate::controllers`]' job controller).
    Resource::of::<Job>("job").sub(&["status"]).spec(),
    Resource::of::<CronJob>("cronjob")
        .short(&["cj"])
        .sub(&["status"])
        .spec(),
    // As many replicas as the load needs ([`crate::controllers`]' autoscaler).
    Resource::of::<HorizontalPodAutoscaler>("horizontalpodautoscaler")
        .short(&["hpa"])
        .sub(&["status"])
        .spec(),
    // Who may do what ([`crate::apiserver`]'s access module reads them on each request).
    Resource::of::<Role>("role"),
    Resource::of::<ClusterRole>("clusterrole"),
    Resource::of::<RoleBinding>("rolebinding"),
    Resource::of::<ClusterRoleBinding>("clusterrolebinding"),
];

/// The groups other than core, with their one version each.
pub const GROUPS: &[(&str, &str)] = &[
    ("apps", "v1"),
    ("autoscaling", "v2"),
    ("batch", "v1"),
    ("coordination.k8s.io", "v1"),
    ("discovery.k8s.io", "v1"),
    ("rbac.authorization.k8s.io", "v1"),
];

/// Finds a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by its kind.
pub fn by_kind(kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.kind == kind)
}
