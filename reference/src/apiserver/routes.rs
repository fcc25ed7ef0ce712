//! URL paths to routes.
//!
//! Resource paths have the Kubernetes shape:
//! `/api/v1[/namespaces/{ns}]/{plural}[/{name}[/{subresource}]]` for the core group and
//! `/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/{subresource}]]` otherwise.
//! `/api/v1/namespaces/{name}` is the namespace object itself. A `proxy` subresource takes
//! the rest of the path with it: `…/pods/{name}/proxy/{path}`.

use crate::api::{self, Resource};

/// Which object(s) a resource request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub resource: &'static Resource,
    /// The namespace from the URL, for namespaced resources (None: all namespaces).
    pub namespace: Option<String>,
    /// The object's name, if one object is addressed.
    pub name: Option<String>,
    /// The subresource (`status`, `scale`, ...).
    pub subresource: Option<String>,
    /// For the `proxy` subresource: the path to pass on (`/` at least).
    pub proxy_path: Option<String>,
}

/// What a path asks for.
#[derive(Debug, Clone)]
pub enum Route {
    /// `/healthz`, `/readyz`, `/livez` (and their sub-checks).
    Health,
    /// `/version`.
    Version,
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`.
    ResourceList(String, String),
    /// `/openapi/v2`.
    OpenApiV2,
    /// `/openapi/v3`.
    OpenApiIndex,
    /// `/openapi/v3/{api/v1 | apis/g/v}`.
    OpenApiDoc(String),
    /// A resource path.
    Target(Target),
    /// `/apis/metrics.k8s.io/v1beta1/{rest}` or `/apis/custom.metrics.k8s.io/v1beta2/{rest}`
    /// (the group): usage, not stored objects.
    Metrics(&'static str, Vec<String>),
    /// `/apis/{authentication|authorization}.k8s.io/v1/{plural}`: a review, answered.
    Review(String, String),
    /// `/shipshape/v1/members`: the control plane's members, where `shipshape
    /// control-plane add` adds one (not a Kubernetes API).
    Members,
    /// `/shipshape/v1/members/{id}`: a control-plane member (not a Kubernetes API; what
    /// `shipshape control-plane remove` calls).
    Member(String),
    /// Anything else.
    NotFound,
}

/// Parses a request path.
pub fn parse(path: &str) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["healthz" | "readyz" | "livez", ..] => Route::Health,
        ["version"] => Route::Version,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group((*g).to_owned()),
        ["api", "v1"] => Route::ResourceList(String::new(), "v1".into()),
        ["apis", g, v] => Route::ResourceList((*g).to_owned(), (*v).to_owned()),
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiIndex,
        ["openapi", "v3", rest @ ..] => Route::OpenApiDoc(rest.join("/")),
        ["api", "v1", rest @ ..] => target("", "v1", rest, path.ends_with('/')),
        ["apis", "metrics.k8s.io", "v1beta1", rest @ ..] => Route::Metrics(
            "metrics.k8s.io",
            rest.iter().map(|s| (*s).to_owned()).collect(),
        ),
        ["apis", "custom.metrics.k8s.io", "v1beta2", rest @ ..] => Route::Metrics(
            "custom.metrics.k8s.io",
            rest.iter().map(|s| (*s).to_owned()).collect(),
        ),
        [
            "apis",
            g @ ("authentication.k8s.io" | "authorization.k8s.io"),
            "v1",
            plural,
        ] => Route::Review((*g).to_owned(), (*plural).to_owned()),
        ["apis", g, v, rest @ ..] => target(g, v, rest, path.ends_with('/')),
        ["shipshape", "v1", "members"] => Route::Members,
        ["shipshape", "v1", "members", id] => Route::Member((*id).to_owned()),
        _ => Route::NotFound,
    }
}

fn target(group: &str, version: &str, rest: &[&str], trailing_slash: bool) -> Route {
    let owned = |s: &&str| Some((*s).to_owned());
    // `{name}/proxy/{path...}`: the path after `proxy` is passed on, trailing slash kept.
    let proxied = |tail: &[&str]| -> Option<String> {
        match tail {
            [_, "proxy", path @ ..] => {
                let mut passed = format!("/{}", path.join("/"));
                if trailing_slash && !path.is_empty() {
                    passed.push('/');
                }
                Some(passed)
            }
            _ => None,
        }
    };
    // `namespaces/{ns}/{plural}/...` when {plural} is a namespaced resource of this group.
    if let ["namespaces", ns, plural, tail @ ..] = rest
        && let Some(r) = api::find(group, version, plural).filter(|r| r.namespaced)
    {
        let proxy_path = proxied(tail);
        if (tail.len() > 2 && proxy_path.is_none()) || ns.is_empty() {
            return Route::NotFound;
        }
        return Route::Target(Target {
            resource: r,
            namespace: owned(ns),
            name: tail.first().and_then(owned),
            subresource: tail.get(1).and_then(owned),
            proxy_path,
        });
    }
    let Some((plural, tail)) = rest.split_first() else {
        return Route::NotFound;
    };
    let Some(r) = api::find(group, version, plural) else {
        return Route::NotFound;
    };
    let proxy_path = proxied(tail);
    if (tail.len() > 2 && proxy_path.is_none()) || tail.first().is_some_and(|n| n.is_empty()) {
        return Route::NotFound;
    }
    Route::Target(Target {
        resource: r,
        namespace: None,
        name: tail.first().and_then(owned),
        subresource: tail.get(1).and_then(owned),
        proxy_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str) -> Target {
        match parse(path) {
            Route::Target(t) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn proxy_paths_keep_what_follows() {
        let pod = t("/api/v1/namespaces/default/pods/web:8080/proxy/fail/readiness");
        assert_eq!(pod.name.as_deref(), Some("web:8080"));
        assert_eq!(pod.subresource.as_deref(), Some("proxy"));
        assert_eq!(pod.proxy_path.as_deref(), Some("/fail/readiness"));
        assert_eq!(
            t("/api/v1/namespaces/default/services/web/proxy/")
                .proxy_path
                .as_deref(),
            Some("/")
        );
        assert_eq!(
            t("/api/v1/namespaces/default/services/web/proxy/a/")
                .proxy_path
                .as_deref(),
            Some("/a/")
        );
        assert!(
            t("/apis/apps/v1/namespaces/default/deployments/web/scale")
                .proxy_path
                .is_none()
        );
        assert!(matches!(
            parse("/apis/apps/v1/namespaces/default/deployments/web/scale/more"),
            Route::NotFound
        ));
    }

    #[test]
    fn resource_paths() {
        let d = t("/apis/apps/v1/namespaces/default/deployments/web/scale");
        assert_eq!(d.resource.plural, "deployments");
        assert_eq!(d.namespace.as_deref(), Some("default"));
        assert_eq!(d.name.as_deref(), Some("web"));
        assert_eq!(d.subresource.as_deref(), Some("scale"));
        let all = t("/api/v1/pods");
        assert!(all.namespace.is_none() && all.name.is_none());
        let ns = t("/api/v1/namespaces/default");
        assert_eq!(ns.resource.plural, "namespaces");
        assert_eq!(ns.name.as_deref(), Some("default"));
        let ns_status = t("/api/v1/namespaces/default/status");
        assert_eq!(ns_status.subresource.as_deref(), Some("status"));
        assert!(matches!(parse("/api/v1/widgets"), Route::NotFound));
        assert!(matches!(
            parse("/apis/apps/v1/namespaces/x/deployments/a/b/c"),
            Route::NotFound
        ));
        assert!(matches!(parse("/readyz"), Route::Health));
    }
}
