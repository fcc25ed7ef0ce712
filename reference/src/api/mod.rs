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

/// One resource the apiserver serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Resource {
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

const fn core(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    subresources: &'static [&'static str],
    has_spec: bool,
) -> Resource {
    Resource {
        group: "",
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        subresources,
        has_spec,
    }
}

/// Every resource served, core group first.
pub const RESOURCES: &[Resource] = &[
    core(
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        &["status"],
        true,
    ),
    core("nodes", "node", "Node", false, &["no"], &["status"], true),
    core(
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        &["status", "binding", "log", "eviction", "proxy"],
        true,
    ),
    core(
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        &["status", "proxy"],
        true,
    ),
    core(
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        &[],
        false,
    ),
    core("events", "event", "Event", true, &["ev"], &[], false),
    Resource {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        subresources: &["status", "scale"],
        has_spec: true,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        subresources: &["status", "scale"],
        has_spec: true,
    },
    // Who holds a lock, for how long: the members of a control plane elect the one that
    // runs the scheduler and the controllers with one (`kube-system/shipshape-controllers`),
    // as Kubernetes' components do.
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        has_spec: false,
    },
];

/// The groups other than core, with their one version each.
pub const GROUPS: &[(&str, &str)] = &[("apps", "v1"), ("coordination.k8s.io", "v1")];

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
