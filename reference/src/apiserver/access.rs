//! Who is asking, and may they? Authentication by bearer token, authorization by RBAC.
//!
//! # Who
//!
//! A request carries one of two kinds of bearer token:
//!
//! - the cluster's **admin token** (its kubeconfig's): user `admin` in group
//!   `system:masters`, as the `admin.conf` of a kubeadm cluster;
//! - a **ServiceAccount token**, issued by `POST …/serviceaccounts/{name}/token` (a
//!   TokenRequest: `kubectl create token NAME`). It is a JSON Web Token signed with HMAC-SHA256
//!   under a key derived from the admin token, so every control-plane member can check it and
//!   nobody without the admin token can make one. It names the account's namespace, name and
//!   uid and expires (an hour unless asked otherwise); deleting the account (or making a new
//!   one of the same name) ends it. Its user is `system:serviceaccount:NS:NAME`, in groups
//!   `system:serviceaccounts`, `system:serviceaccounts:NS` and `system:authenticated`.
//!
//! Anything else is a 401. An admin may act as someone else with the `Impersonate-User` and
//! `Impersonate-Group` headers (`kubectl --as`), which is how `kubectl auth can-i --as`
//! asks about another user.
//!
//! # May they
//!
//! Group `system:masters` may do everything. Anyone else may do what the rules of the roles
//! bound to them allow: the ClusterRoles of ClusterRoleBindings anywhere, and the Roles and
//! ClusterRoles of RoleBindings in the request's namespace, matched on verb, API group,
//! resource (`pods`, `pods/log`, `*/scale`, `*`), name and, for paths that are not
//! resources, URL (`/api`, `/apis/*`). A request no rule allows is a 403 that names the
//! user, verb and resource. The cluster starts with Kubernetes' default roles
//! (`bootstrap-policy.json`): `cluster-admin`, `admin`, `edit`, `view`, and
//! `system:discovery` and `system:basic-user` bound to every authenticated user, so an
//! account can read discovery and ask what it may do.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ring::hmac;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::status::ApiError;
use super::{Shared, resources};
use crate::api;

/// The default roles and their bindings, as Kubernetes starts with them.
pub const BOOTSTRAP_POLICY: &str = include_str!("bootstrap-policy.json");

/// Who a request is from.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The user name.
    pub user: String,
    /// The groups.
    pub groups: Vec<String>,
}

impl Identity {
    fn admin() -> Identity {
        Identity::new("admin", ["system:masters"])
    }

    /// A user with `groups`, and the groups every account has.
    fn new<'a>(user: &str, groups: impl IntoIterator<Item = &'a str>) -> Identity {
        let mut groups: Vec<String> = groups.into_iter().map(str::to_owned).collect();
        if let Some(ns) = user.strip_prefix("system:serviceaccount:") {
            let ns = ns.split(':').next().unwrap_or("");
            groups.extend([
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
            ]);
        }
        groups.push("system:authenticated".into());
        Identity {
            user: user.to_owned(),
            groups,
        }
    }

    fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// The caller of a request with `headers`: `Ok(None)` when its token is nobody's (a 401).
pub fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Option<Identity>, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(token) = header("authorization").and_then(|v| v.strip_prefix("Bearer ")) else {
        return Ok(None);
    };
    let (token, key) = (token.trim().as_bytes(), signing_key(shared));
    // Compared by their MACs, in constant time: the admin token is the cluster's secret.
    let admin = hmac::sign(&key, shared.token.as_bytes());
    let who = match hmac::verify(&key, token, admin.as_ref()) {
        Ok(()) => Identity::admin(),
        Err(_) => match verify(&key, shared, token) {
            Some(who) => who,
            None => return Ok(None),
        },
    };
    let Some(user) = header("impersonate-user") else {
        return Ok(Some(who));
    };
    if !who.is_master() {
        return Err(ApiError::Forbidden(format!(
            "users \"{user}\" is forbidden: User \"{}\" cannot impersonate resource \"users\" \
             in API group \"\" at the cluster scope",
            who.user
        )));
    }
    let groups = headers.get_all("impersonate-group").iter();
    Ok(Some(Identity::new(
        user,
        groups.filter_map(|g| g.to_str().ok()),
    )))
}

fn signing_key(shared: &Shared) -> hmac::Key {
    let secret = format!("shipshape service account tokens:{}", shared.token);
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

/// A token for ServiceAccount `sa` (a stored object) for `audiences`, valid `seconds` from
/// now; and when it expires (Unix seconds).
pub fn issue(shared: &Shared, sa: &Value, audiences: &[String], seconds: i64) -> (String, i64) {
    let now = jiff::Timestamp::now().as_second();
    let (ns, name) = (meta(sa, "namespace"), meta(sa, "name"));
    let claims = json!({
        "iss": "https://kubernetes.default.svc", "aud": audiences,
        "sub": format!("system:serviceaccount:{ns}:{name}"), "iat": now, "nbf": now,
        "exp": now + seconds,
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": meta(sa, "uid")}},
    });
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = hmac::sign(&signing_key(shared), signed.as_bytes());
    let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
    (token, now + seconds)
}

fn meta<'a>(obj: &'a Value, field: &str) -> &'a str {
    api::meta::meta_str(obj, field).unwrap_or("")
}

/// The account a ServiceAccount token speaks for, if it is one of ours, unexpired, and its
/// account still exists.
fn verify(key: &hmac::Key, shared: &Shared, token: &[u8]) -> Option<Identity> {
    let (signed, signature) = std::str::from_utf8(token).ok()?.rsplit_once('.')?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    hmac::verify(key, signed.as_bytes(), &signature).ok()?;
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(signed.split_once('.')?.1).ok()?).ok()?;
    if claims["exp"].as_i64()? <= jiff::Timestamp::now().as_second() {
        return None;
    }
    let account = &claims["kubernetes.io"];
    let (ns, name) = (
        account["namespace"].as_str()?,
        account["serviceaccount"]["name"].as_str()?,
    );
    let accounts = api::find("", "v1", "serviceaccounts")?;
    let (stored, _) = resources::get(shared, accounts, Some(ns), name).ok()?;
    (meta(&stored, "uid") == account["serviceaccount"]["uid"].as_str()?)
        .then(|| Identity::new(&format!("system:serviceaccount:{ns}:{name}"), []))
}

/// Where a pod's containers find their account's credentials.
pub const ACCOUNT_FILES: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Kubernetes' ServiceAccount admission, for a new pod in `ns`: it acts as `default` unless
/// it names an account; and unless it or its account says `automountServiceAccountToken:
/// false`, a projected volume `kube-api-access-*` (a token of the account, the cluster CA
/// from ConfigMap `kube-root-ca.crt`, the namespace) is mounted read-only at
/// [`ACCOUNT_FILES`] in every container that mounts nothing there. An account that does
/// not exist yet is not an error here: the node agent waits until it can have its token.
pub fn admit_pod(shared: &Shared, ns: &str, pod: &mut Value, suffix: String) {
    let spec = api::meta::ensure_object(&mut pod["spec"]);
    let name = spec.get("serviceAccountName").and_then(Value::as_str);
    let name = name
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_owned();
    let accounts = api::find("", "v1", "serviceaccounts");
    let account = accounts.and_then(|r| resources::get(shared, r, Some(ns), &name).ok());
    let mount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool);
    let mount = mount.or_else(|| account?.0["automountServiceAccountToken"].as_bool());
    spec.insert("serviceAccountName".into(), json!(name));
    if mount == Some(false) {
        return;
    }
    let volume = format!("kube-api-access-{suffix}");
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let mounts = api::meta::ensure_object(c)
                .entry("volumeMounts")
                .or_insert(json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            if !mounts.iter().any(|m| m["mountPath"] == ACCOUNT_FILES) {
                mounts.push(json!({"name": volume, "mountPath": ACCOUNT_FILES, "readOnly": true}));
                mounted = true;
            }
        }
    }
    let namespace = json!({"path": "namespace",
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}});
    let projected = json!({"name": volume, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [namespace]}}]}});
    if let (true, Some(volumes)) = (
        mounted,
        spec.entry("volumes").or_insert(json!([])).as_array_mut(),
    ) {
        volumes.push(projected);
    }
}

/// What a request does, as RBAC rules name it.
#[derive(Debug, Default)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`;
    /// for a path that is not a resource, the method in lower case.
    pub verb: String,
    /// For a resource: its group, plural, subresource, namespace and name.
    pub group: String,
    /// The resource's plural.
    pub resource: String,
    /// The subresource, if any.
    pub subresource: String,
    /// The namespace, for a namespaced request.
    pub namespace: Option<String>,
    /// The object's name, if one is named.
    pub name: Option<String>,
    /// For a path that is not a resource: the path.
    pub path: Option<String>,
}

impl Attributes {
    fn allowed_by(&self, rule: &PolicyRule) -> bool {
        let has = |list: &Option<Vec<String>>, value: &str| {
            list.iter().flatten().any(|v| v == "*" || v == value)
        };
        if !rule.verbs.iter().any(|v| v == "*" || *v == self.verb) {
            return false;
        }
        if let Some(path) = &self.path {
            let urls = rule.non_resource_urls.iter().flatten();
            return urls.into_iter().any(|url| match url.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => url == path,
            });
        }
        let resource = match self.subresource.as_str() {
            "" => self.resource.clone(),
            sub => format!("{}/{sub}", self.resource),
        };
        let names = rule.resource_names.as_deref().unwrap_or_default();
        has(&rule.api_groups, &self.group)
            && (has(&rule.resources, &resource)
                || (!self.subresource.is_empty()
                    && has(&rule.resources, &format!("*/{}", self.subresource))))
            && (names.is_empty() || self.name.as_ref().is_some_and(|n| names.contains(n)))
    }

    /// The 403 for `who` doing this.
    fn forbidden(&self, who: &Identity) -> ApiError {
        let user = &who.user;
        if let Some(path) = &self.path {
            return ApiError::Forbidden(format!(
                "forbidden: User \"{user}\" cannot {} path \"{path}\"",
                self.verb
            ));
        }
        let resource = match self.subresource.as_str() {
            "" => self.resource.clone(),
            sub => format!("{}/{sub}", self.resource),
        };
        let scope = match &self.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".into(),
        };
        let object = match &self.name {
            Some(name) => format!("{resource} \"{name}\""),
            None => resource.clone(),
        };
        ApiError::Forbidden(format!(
            "{object} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API \
             group \"{}\" {scope}",
            self.verb, self.group
        ))
    }
}

/// Whether `who` may do what `attrs` say: `Ok`, or a 403.
pub fn authorize(shared: &Shared, who: &Identity, attrs: &Attributes) -> Result<(), ApiError> {
    if who.is_master()
        || rules(shared, who, attrs.namespace.as_deref())
            .iter()
            .any(|r| attrs.allowed_by(r))
    {
        Ok(())
    } else {
        Err(attrs.forbidden(who))
    }
}

/// The rules that apply to `who` in `namespace`: those of every role bound to them there
/// or cluster-wide. (For `system:masters`, a rule that allows everything.)
pub fn rules(shared: &Shared, who: &Identity, namespace: Option<&str>) -> Vec<PolicyRule> {
    if who.is_master() {
        let all = Some(vec!["*".to_owned()]);
        return vec![
            PolicyRule {
                verbs: vec!["*".into()],
                api_groups: all.clone(),
                resources: all.clone(),
                ..Default::default()
            },
            PolicyRule {
                verbs: vec!["*".into()],
                non_resource_urls: all,
                ..Default::default()
            },
        ];
    }
    let mut bindings: Vec<Binding> = stored(shared, "clusterrolebindings", None);
    if let Some(ns) = namespace {
        bindings.extend(stored::<Binding>(shared, "rolebindings", Some((ns, ""))));
    }
    let mut rules = Vec::new();
    for binding in bindings {
        let ns = binding.metadata.namespace.as_deref();
        if !binding.subjects.iter().any(|s| names(s, who, ns)) {
            continue;
        }
        let (kind, role) = (binding.role_ref.kind.as_str(), &binding.role_ref.name);
        let role = match kind {
            "Role" => stored::<Rules>(shared, "roles", ns.map(|ns| (ns, role.as_str()))),
            _ => stored::<Rules>(shared, "clusterroles", Some(("", role.as_str()))),
        };
        rules.extend(role.into_iter().flat_map(|r| r.rules));
    }
    rules
}

/// A RoleBinding or a ClusterRoleBinding: the fields authorization reads.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Binding {
    metadata: ObjectMeta,
    #[serde(default)]
    subjects: Vec<Subject>,
    role_ref: RoleRef,
}

/// A Role or a ClusterRole: its rules.
#[derive(serde::Deserialize)]
struct Rules {
    #[serde(default)]
    rules: Vec<PolicyRule>,
}

/// Whether `subject` of a binding in namespace `ns` (None: a ClusterRoleBinding) names `who`.
fn names(subject: &Subject, who: &Identity, ns: Option<&str>) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == who.user,
        "Group" => who.groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = subject.namespace.as_deref().or(ns).unwrap_or("");
            who.user == format!("system:serviceaccount:{ns}:{}", subject.name)
        }
        _ => false,
    }
}

/// The stored `plural`s of the RBAC group, read as `K`: those in `namespace` (`None`: all of
/// them, for a cluster-scoped kind), or the one `(namespace, name)` names (namespace `""`
/// for a cluster-scoped kind).
fn stored<K: DeserializeOwned>(shared: &Shared, plural: &str, at: Option<(&str, &str)>) -> Vec<K> {
    let Some(r) = api::find("rbac.authorization.k8s.io", "v1", plural) else {
        return Vec::new();
    };
    let ns = at.map(|(ns, _)| ns).filter(|ns| !ns.is_empty());
    let records = match at.filter(|(_, name)| !name.is_empty()) {
        Some((_, name)) => shared
            .store
            .get(&r.key(ns, name))
            .map(|one| one.into_iter().collect()),
        None => shared
            .store
            .list(&r.prefix(ns))
            .map(|(all, _)| all.into_iter().map(|(_, r)| r).collect()),
    };
    let records: Vec<crate::store::Record> = records.unwrap_or_default();
    let objects = records
        .iter()
        .map(|record| serde_json::from_slice(&record.value));
    objects.filter_map(Result::ok).collect()
}
