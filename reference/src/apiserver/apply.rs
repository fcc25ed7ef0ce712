//! Server-side apply, and the record of who set which field that makes it possible.
//!
//! # Field managers
//!
//! Every write names a *field manager*: `?fieldManager=` if the client gives one (kubectl
//! does: `kubectl-create`, `kubectl-edit`, `kubectl-client-side-apply`, ...), else the
//! client's User-Agent up to its first `/`. After each write the object's
//! `metadata.managedFields` says which fields each manager owns, as Kubernetes writes it:
//! one entry per manager, operation (`Apply` or `Update`) and subresource, whose `fieldsV1`
//! is a tree of steps — `f:<name>` for a member of an object, `k:{"name":"web"}` for the
//! item of a list that is merged by key (the same keys as the strategic merge patch,
//! [`super::patch`]), `.` for such an item itself. Any other list, and any scalar, is one
//! field, owned whole.
//!
//! - An **update** (create, PUT, any other PATCH) gives its manager the fields whose values
//!   it changed, taking them from whoever owned them: an update never conflicts.
//! - An **apply** (`PATCH` with `application/apply-patch+yaml`) sends the manager's whole
//!   intent — the *applied configuration*, a partial object. Its fields are merged into the
//!   live object, and the manager owns exactly them afterwards. A field it applied before and
//!   leaves out now is removed from the object, unless another manager owns it too. A field
//!   another manager owns with a different value is a **conflict**: the request fails with a
//!   409 listing each field and its owner, and changes nothing, unless it says `?force=true`,
//!   which takes the fields over. Two managers that set the same value share the field.
//! - An apply to an object that does not exist creates it.
//!
//! A request that sets `managedFields` to something other than what is stored (kubectl does,
//! to hand client-side apply's fields over to server-side apply) replaces the record.
//! Fields the server keeps (name, uid, resourceVersion, ...) are nobody's; through the main
//! resource of a kind with a status subresource the status is nobody's, and through
//! `/status` nothing else is.
//!
//! An applied configuration is read as JSON, which is YAML too: kubectl and client libraries
//! send JSON. YAML that is not JSON is refused with a clear message.

use std::collections::BTreeSet;

use http::{header, request::Parts};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use serde_json::{Map, Value, json};

use super::patch;
use super::resources::Query;
use super::status::ApiError;
use crate::api::meta::{self, metadata_mut};
use crate::api::validate::Cause;

/// One field, as the steps that lead to it (`["f:spec", "f:replicas"]`).
type Field = Vec<String>;

/// A set of fields: the leaves of a `fieldsV1` tree.
type Fields = BTreeSet<Field>;

/// Metadata the server keeps, which no manager owns.
const SERVER_KEPT: [&str; 9] = [
    "f:name",
    "f:namespace",
    "f:uid",
    "f:resourceVersion",
    "f:generation",
    "f:creationTimestamp",
    "f:deletionTimestamp",
    "f:deletionGracePeriodSeconds",
    "f:managedFields",
];

/// Who writes, as a `managedFields` entry names them.
pub(super) struct Writer {
    manager: String,
    /// An apply (operation `Apply`) rather than any other write (`Update`).
    pub(super) apply: bool,
    /// Take conflicting fields from their owners instead of failing (`?force=true`).
    force: bool,
    subresource: Option<String>,
    api_version: String,
    /// The kind has a status subresource, so its main resource does not write the status.
    status_apart: bool,
}

impl Writer {
    /// The writer of a request on `r` (its subresource `sub`), from its query and headers.
    pub(super) fn of(
        parts: &Parts,
        query: &Query,
        r: &crate::api::Resource,
        sub: Option<&str>,
        apply: bool,
    ) -> Result<Writer, ApiError> {
        let bad = |m: String| Err(ApiError::BadRequest(m));
        let manager = match query.get("fieldManager").filter(|m| !m.is_empty()) {
            Some(m) if m.chars().count() > 128 || m.chars().any(char::is_control) => {
                return bad("fieldManager must be at most 128 printable characters".into());
            }
            Some(m) => m.clone(),
            None if apply => return bad("fieldManager is required for apply requests".into()),
            None => {
                let agent = parts.headers.get(header::USER_AGENT);
                let agent = agent.and_then(|a| a.to_str().ok()).unwrap_or("");
                let prefix = agent.split('/').next().unwrap_or("").trim();
                match prefix.chars().take(128).collect::<String>() {
                    m if m.is_empty() => "unknown".to_owned(),
                    m => m,
                }
            }
        };
        let force = match query.get("force").map(String::as_str) {
            None | Some("false") => false,
            Some("true") if apply => true,
            Some("true") => return bad("force may only be set on an apply patch".into()),
            Some(other) => return bad(format!("force must be true or false, not {other:?}")),
        };
        Ok(Writer {
            manager,
            apply,
            force,
            subresource: sub.map(str::to_owned),
            api_version: r.api_version(),
            status_apart: r.has_subresource("status"),
        })
    }

    /// Whether this writer may own `field` (see the module's last paragraph).
    fn may_own(&self, field: &Field) -> bool {
        let first = field.first().map(String::as_str);
        if self.subresource.as_deref() == Some("status") {
            return first == Some("f:status");
        }
        match (first, field.get(1).map(String::as_str)) {
            (Some("f:apiVersion" | "f:kind"), _) => false,
            (Some("f:metadata"), Some(step)) => !SERVER_KEPT.contains(&step),
            (Some("f:status"), _) => !self.status_apart,
            _ => true,
        }
    }

    fn is(&self, entry: &Entry) -> bool {
        let get = |k: &str| entry.raw.get(k).and_then(Value::as_str);
        get("manager") == Some(self.manager.as_str())
            && get("operation") == Some(if self.apply { "Apply" } else { "Update" })
            && get("subresource") == self.subresource.as_deref()
    }

    /// The fields of `obj` this writer may own.
    fn fields_of(&self, obj: &Value) -> Fields {
        let mut all = Fields::new();
        leaves_of_object(obj, "", &mut Vec::new(), &mut all);
        all.retain(|f| self.may_own(f));
        all
    }
}

/// Collects the fields `value` (the value of member `name`) sets, below `at`.
fn leaves_of_object(value: &Value, name: &str, at: &mut Field, out: &mut Fields) {
    let keyed = |items: &[Value]| {
        patch::merge_key(name, items).filter(|k| items.iter().all(|i| i.get(*k).is_some()))
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (member, v) in map {
                at.push(format!("f:{member}"));
                leaves_of_object(v, member, at, out);
                at.pop();
            }
        }
        Value::Array(items) if keyed(items).is_some() => {
            let key = keyed(items).unwrap_or_default();
            for item in items {
                at.push(format!("k:{}", json!({key: item[key]})));
                at.push(".".into());
                out.insert(at.clone());
                at.pop();
                leaves_of_object(item, "", at, out);
                at.pop();
            }
        }
        _ => {
            out.insert(at.clone());
        }
    }
}

/// The leaves of a `fieldsV1` tree.
fn leaves_of_tree(tree: &Value, at: &mut Field, out: &mut Fields) {
    let Some(map) = tree.as_object() else { return };
    if map.is_empty() && !at.is_empty() {
        out.insert(at.clone());
    }
    for (step, below) in map {
        at.push(step.clone());
        leaves_of_tree(below, at, out);
        at.pop();
    }
}

/// The `fieldsV1` tree of a set of fields.
fn tree_of(fields: &Fields) -> Value {
    let mut tree = Map::new();
    for field in fields {
        let mut at = &mut tree;
        for step in field {
            let next = at.entry(step.clone()).or_insert_with(|| json!({}));
            at = meta::ensure_object(next);
        }
    }
    Value::Object(tree)
}

/// Where one step leads in `at`: a member's name, or a list item's index.
fn slot<'s>(at: &Value, step: &'s str) -> Option<Result<&'s str, usize>> {
    if let Some(name) = step.strip_prefix("f:") {
        return at.get(name).map(|_| Ok(name));
    }
    let key: Map<String, Value> = serde_json::from_str(step.strip_prefix("k:")?).ok()?;
    let matches = |item: &Value| key.iter().all(|(k, v)| item.get(k) == Some(v));
    at.as_array()?.iter().position(matches).map(Err)
}

/// The value `field` names in `obj`, if it is there (`.` names the item it ends in).
fn lookup<'a>(obj: &'a Value, field: &[String]) -> Option<&'a Value> {
    field.iter().try_fold(obj, |at, step| match step.as_str() {
        "." => Some(at),
        step => match slot(at, step)? {
            Ok(name) => at.get(name),
            Err(index) => at.get(index),
        },
    })
}

/// Removes what `field` names from `obj`, if it is there.
fn remove(obj: &mut Value, field: &[String]) {
    let field = field.strip_suffix(&[".".to_owned()]).unwrap_or(field);
    let Some((last, parents)) = field.split_last() else {
        return;
    };
    let mut at = obj;
    for step in parents {
        at = match slot(at, step) {
            Some(Ok(name)) => &mut at[name],
            Some(Err(index)) => &mut at[index],
            None => return,
        };
    }
    match (slot(at, last), at) {
        (Some(Ok(name)), Value::Object(map)) => drop(map.remove(name)),
        (Some(Err(index)), Value::Array(items)) => drop(items.remove(index)),
        _ => {}
    }
}

/// One `managedFields` entry: as stored, and its fields.
struct Entry {
    raw: Map<String, Value>,
    fields: Fields,
}

fn entries_of(managed: Option<&Value>) -> Vec<Entry> {
    let entries = managed.and_then(Value::as_array).into_iter().flatten();
    let entries = entries.filter_map(Value::as_object).map(|raw| {
        let mut fields = Fields::new();
        if let Some(tree) = raw.get("fieldsV1") {
            leaves_of_tree(tree, &mut Vec::new(), &mut fields);
        }
        Entry {
            raw: raw.clone(),
            fields,
        }
    });
    entries.collect()
}

/// Gives `writer` the `fields`: for an apply, all it owns, shared with any other manager
/// that set the same values; for an update, added to what it owned and taken from others.
fn own(entries: &mut Vec<Entry>, writer: &Writer, fields: Fields) {
    let whole = writer.apply;
    for entry in entries.iter_mut().filter(|e| !whole && !writer.is(e)) {
        entry.fields.retain(|f| !fields.contains(f));
    }
    let time = json!(meta::now_rfc3339());
    if let Some(entry) = entries.iter_mut().find(|e| writer.is(e)) {
        if whole {
            entry.fields = fields;
        } else {
            entry.fields.extend(fields);
        }
        entry.raw.insert("time".into(), time);
        return;
    }
    let operation = if writer.apply { "Apply" } else { "Update" };
    let mut raw = json!({"manager": writer.manager, "operation": operation,
        "apiVersion": writer.api_version, "time": time, "fieldsType": "FieldsV1"});
    if let Some(sub) = &writer.subresource {
        raw["subresource"] = json!(sub);
    }
    if let Value::Object(raw) = raw {
        entries.push(Entry { raw, fields });
    }
}

/// Merges the applied configuration `config` (the raw body) of `writer` into `current`
/// (`Null` if there is no object yet). The result carries its new `managedFields`, for
/// [`record`] to keep; a conflict is a 409 and changes nothing.
pub(super) fn merge(current: &Value, config: &[u8], writer: &Writer) -> Result<Value, ApiError> {
    let config: Value = serde_json::from_slice(config).map_err(|e| {
        ApiError::BadRequest(format!(
            "the applied configuration must be a JSON object (JSON is YAML; YAML that is not \
             JSON is not accepted here): {e}"
        ))
    })?;
    let Value::Object(config_map) = &config else {
        return Err(ApiError::BadRequest(
            "the applied configuration must be an object".into(),
        ));
    };
    if meta::path(&config, "metadata.managedFields").is_some() {
        return Err(ApiError::BadRequest(
            "metadata.managedFields must not be set in an applied configuration".into(),
        ));
    }
    let ours = writer.fields_of(&config);
    let mut entries = entries_of(meta::path(current, "metadata.managedFields"));
    let mut conflicts = Vec::new();
    for entry in entries.iter_mut().filter(|e| !writer.is(e)) {
        let clashes = |f: &&Field| {
            f.last().is_some_and(|s| s != ".") && lookup(current, f) != lookup(&config, f)
        };
        let taken: Fields = entry
            .fields
            .intersection(&ours)
            .filter(clashes)
            .cloned()
            .collect();
        if writer.force {
            entry.fields.retain(|f| !taken.contains(f));
        } else {
            conflicts.extend(taken.iter().map(|f| conflict(&entry.raw, f)));
        }
    }
    if !conflicts.is_empty() {
        return Err(ApiError::ApplyConflict(conflicts));
    }
    let mut merged = current.clone();
    patch::strategic_merge_map(&mut merged, config_map);
    let before = entries.iter().find(|e| writer.is(e));
    let dropped: Vec<Field> = before
        .map(|e| e.fields.difference(&ours).cloned().collect())
        .unwrap_or_default();
    for field in dropped {
        let parent = field.strip_suffix(&[".".to_owned()]).unwrap_or(&field);
        let shared = entries
            .iter()
            .filter(|e| !writer.is(e))
            .any(|e| e.fields.iter().any(|f| f.starts_with(parent)));
        if !shared {
            remove(&mut merged, &field);
        }
    }
    let unchanged = before.is_some_and(|e| e.fields == ours) && {
        let plain = |v: &Value| {
            let mut v = v.clone();
            metadata_mut(&mut v).remove("managedFields");
            v
        };
        plain(&merged) == plain(current)
    };
    if !unchanged {
        own(&mut entries, writer, ours);
    }
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// A conflict on `field`, owned by the manager of `entry`, as Kubernetes reports it.
fn conflict(entry: &Map<String, Value>, field: &Field) -> Cause {
    let get = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
    let mut path = String::new();
    for step in field {
        if let Some(name) = step.strip_prefix("f:") {
            path.push('.');
            path.push_str(name);
        } else if let Some(key) = step.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let pairs: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            path.push_str(&format!("[{}]", pairs.join(",")));
        }
    }
    Cause {
        reason: "FieldManagerConflict",
        field: path,
        message: format!(
            "conflict with {:?} using {}",
            get("manager"),
            get("apiVersion")
        ),
    }
}

fn write_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    let managed: Vec<Value> = entries
        .into_iter()
        .map(|mut e| {
            e.raw.insert("fieldsType".into(), json!("FieldsV1"));
            e.raw.insert("fieldsV1".into(), tree_of(&e.fields));
            Value::Object(e.raw)
        })
        .collect();
    let meta = metadata_mut(obj);
    if managed.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(managed));
    }
}

/// Records in `next` — which `writer` made of `current` (`Null` before a create) — who owns
/// which field. `sent` is the `managedFields` the request's object carried: for an apply,
/// those [`merge`] worked out; for another write, a replacement if it differs from what is
/// stored.
pub(super) fn record(
    current: &Value,
    next: &mut Value,
    sent: Option<Value>,
    writer: &Writer,
) -> Result<(), ApiError> {
    let stored = meta::path(current, "metadata.managedFields");
    let mut entries = match sent {
        Some(sent) if writer.apply => entries_of(Some(&sent)),
        Some(sent) if Some(&sent) != stored => {
            let typed: Vec<ManagedFieldsEntry> = serde_json::from_value(sent).map_err(|e| {
                ApiError::BadRequest(format!("metadata.managedFields is not valid: {e}"))
            })?;
            let sent = serde_json::to_value(typed).unwrap_or_default();
            entries_of(Some(&sent))
        }
        _ => {
            let mut entries = entries_of(stored);
            let changed: Fields = (writer.fields_of(next).into_iter())
                .filter(|f| match f.split_last() {
                    Some((last, parent)) if last == "." => lookup(current, parent).is_none(),
                    _ => lookup(current, f) != lookup(next, f),
                })
                .collect();
            if !changed.is_empty() {
                own(&mut entries, writer, changed);
            }
            entries
        }
    };
    for entry in &mut entries {
        entry.fields.retain(|f| lookup(next, f).is_some());
    }
    write_entries(next, entries);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str, apply: bool, force: bool) -> Writer {
        let deployments = crate::api::find("apps", "v1", "deployments").expect("served");
        let (parts, ()) = http::Request::new(()).into_parts();
        let mut query = Query::new();
        query.insert("fieldManager".into(), manager.into());
        if force {
            query.insert("force".into(), "true".into());
        }
        Writer::of(&parts, &query, deployments, None, apply).expect("a valid writer")
    }

    fn web(replicas: i64, containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}}})
    }

    fn apply(current: &Value, config: &Value, writer: &Writer) -> Result<Value, ApiError> {
        let mut merged = merge(current, config.to_string().as_bytes(), writer)?;
        let sent = metadata_mut(&mut merged).remove("managedFields");
        record(current, &mut merged, sent, writer)?;
        Ok(merged)
    }

    fn update(current: &Value, mut next: Value, writer: &Writer) -> Value {
        let sent = metadata_mut(&mut next).remove("managedFields");
        record(current, &mut next, sent, writer).expect("records");
        next
    }

    fn owners(obj: &Value, field: &[&str]) -> Vec<String> {
        let field: Field = field.iter().map(|s| s.to_string()).collect();
        entries_of(meta::path(obj, "metadata.managedFields"))
            .iter()
            .filter(|e| e.fields.contains(&field))
            .map(|e| e.raw["manager"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    const REPLICAS: [&str; 2] = ["f:spec", "f:replicas"];

    #[test]
    fn a_create_owns_what_it_set_and_an_update_takes_what_it_changed() {
        let created = update(
            &Value::Null,
            web(1, json!([{"name": "app", "image": "v1"}])),
            &writer("kubectl-create", false, false),
        );
        assert_eq!(owners(&created, &REPLICAS), ["kubectl-create"]);
        let item = [
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            r#"k:{"name":"app"}"#,
            ".",
        ];
        assert_eq!(owners(&created, &item), ["kubectl-create"]);
        assert!(
            owners(&created, &["f:metadata", "f:name"]).is_empty(),
            "the server keeps names"
        );
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(4);
        let scaled = update(&created, scaled, &writer("kubectl-scale", false, false));
        assert_eq!(owners(&scaled, &REPLICAS), ["kubectl-scale"]);
        assert_eq!(
            owners(&scaled, &["f:metadata", "f:labels", "f:app"]),
            ["kubectl-create"]
        );
        // A write that changes nothing records nothing new.
        assert_eq!(
            update(&scaled, scaled.clone(), &writer("other", false, false)),
            scaled
        );
    }

    #[test]
    fn an_apply_conflicts_on_a_field_another_manager_set_to_another_value_unless_forced() {
        let kubectl = writer("kubectl", true, false);
        let applied = apply(
            &Value::Null,
            &web(2, json!([{"name": "app", "image": "v1"}])),
            &kubectl,
        )
        .expect("creates");
        let mut scaled = applied.clone();
        scaled["spec"]["replicas"] = json!(5);
        let scaled = update(&applied, scaled, &writer("kubectl-scale", false, false));

        let again = web(3, json!([{"name": "app", "image": "v1"}]));
        let Err(ApiError::ApplyConflict(causes)) = apply(&scaled, &again, &kubectl) else {
            panic!("a conflict expected");
        };
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, ".spec.replicas");
        assert!(
            causes[0].message.contains("kubectl-scale"),
            "{}",
            causes[0].message
        );
        let refused = ApiError::ApplyConflict(causes);
        assert_eq!(refused.code(), http::StatusCode::CONFLICT);
        assert_eq!(
            refused.status()["details"]["causes"][0]["reason"],
            "FieldManagerConflict"
        );

        // The same value is no conflict: the field is shared.
        let shared = apply(
            &scaled,
            &web(5, json!([{"name": "app", "image": "v1"}])),
            &kubectl,
        )
        .expect("shares");
        let mut both = owners(&shared, &REPLICAS);
        both.sort();
        assert_eq!(both, ["kubectl", "kubectl-scale"]);

        let forced = apply(&scaled, &again, &writer("kubectl", true, true)).expect("forced");
        assert_eq!(forced["spec"]["replicas"], 3);
        assert_eq!(owners(&forced, &REPLICAS), ["kubectl"]);
    }

    #[test]
    fn a_field_left_out_of_the_next_apply_is_removed_unless_someone_else_owns_it() {
        let kubectl = writer("kubectl", true, false);
        let two = json!([{"name": "app", "image": "v1"}, {"name": "side", "image": "s1"}]);
        let applied = apply(&Value::Null, &web(2, two), &kubectl).expect("creates");
        // Someone else adds a third container and a label.
        let mut edited = applied.clone();
        edited["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("list")
            .push(json!({"name": "debug", "image": "d1"}));
        edited["metadata"]["labels"]["team"] = json!("a");
        let edited = update(&applied, edited, &writer("kubectl-edit", false, false));

        let mut config = web(2, json!([{"name": "app", "image": "v2"}]));
        config["metadata"]
            .as_object_mut()
            .expect("meta")
            .remove("labels");
        let next = apply(&edited, &config, &kubectl).expect("applies");
        let names: Vec<&str> = meta::each(&next, "/spec/template/spec/containers")
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["app", "debug"],
            "side was ours alone; debug is kubectl-edit's"
        );
        assert_eq!(
            next["spec"]["template"]["spec"]["containers"][0]["image"],
            "v2"
        );
        assert_eq!(
            next["metadata"]["labels"],
            json!({"team": "a"}),
            "app was ours alone"
        );
    }

    #[test]
    fn bad_requests_are_refused_clearly() {
        let (parts, ()) = http::Request::new(()).into_parts();
        let deployments = crate::api::find("apps", "v1", "deployments").expect("served");
        assert!(
            Writer::of(&parts, &Query::new(), deployments, None, true).is_err(),
            "apply needs a manager"
        );
        let mut query = Query::new();
        query.insert("force".into(), "true".into());
        assert!(
            Writer::of(&parts, &query, deployments, None, false).is_err(),
            "force is for applies"
        );
        let kubectl = writer("kubectl", true, false);
        for body in [
            "apiVersion: apps/v1",
            "[1]",
            r#"{"metadata": {"managedFields": []}}"#,
        ] {
            let refused = merge(&Value::Null, body.as_bytes(), &kubectl).expect_err(body);
            assert_eq!(refused.code(), http::StatusCode::BAD_REQUEST, "{body}");
        }
        let mut bogus = web(1, json!([]));
        bogus["metadata"]["managedFields"] = json!([{"manager": 5}]);
        let sent = metadata_mut(&mut bogus).remove("managedFields");
        assert!(record(&Value::Null, &mut bogus, sent, &writer("x", false, false)).is_err());
    }
}
