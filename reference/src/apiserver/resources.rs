//! The verbs on resources: get, list, create, update, patch, delete, and the subresources
//! (status, scale, binding, eviction, log).
//!
//! Every write follows one path: build the object the client asked for, check it
//! ([`crate::api::validate`]), fill defaults, set server-owned metadata, then write it to the
//! store with a precondition (absent for create, the revision it was read at for update).
//! A failed check returns before the store is touched, so a bad request changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, StatusCode, header, request::Parts};
use k8s_openapi::api::authentication::v1::TokenRequest;
use rand::Rng;
use serde_json::{Value, json};

use super::allocation::{self, Held};
use super::apply::{self, Writer};
use super::form::Form;
use super::paging::{self, Listed};
use super::patch::{self, PatchKind};
use super::routes::Target;
use super::status::{ApiError, from_store};
use super::{
    Body, Shared, agents, json_bytes_response, json_response, protobuf, proxy, table, watch,
};
use crate::api::meta::{self, ensure_object, metadata_mut};
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::validate::{self, FieldValidation};
use crate::api::{self, Resource, defaults};
use crate::store::{Op, Precondition, Record, StoreError};

/// Query parameters, decoded.
pub(super) type Query = HashMap<String, String>;

fn parse_query(parts: &Parts) -> Query {
    parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// Routes one resource request to its verb.
pub(super) async fn dispatch(
    shared: &Shared,
    parts: Parts,
    target: Target,
    body: Bytes,
) -> Result<http::Response<Body>, ApiError> {
    let query = parse_query(&parts);
    let r = target.resource;
    let ns = target.namespace.as_deref();
    let sub = target.subresource.as_deref();
    if (r.namespaced && target.name.is_some() && ns.is_none())
        || sub.is_some_and(|sub| !r.has_subresource(sub))
    {
        return Err(ApiError::NoRoute);
    }
    // Whatever this member serves next — a read, or the current object a change is based
    // on — includes every write acknowledged before the request arrived, by any member.
    shared
        .store
        .linearizable()
        .await
        .map_err(|e| from_store(e, r, target.name.as_deref().unwrap_or("")))?;
    if let (Some("proxy"), Some(name), Some(namespace), Some(path)) = (
        sub,
        target.name.as_deref(),
        ns,
        target.proxy_path.as_deref(),
    ) {
        return match r.plural {
            "pods" => proxy::pod(shared, namespace, name, path, &parts, body).await,
            "services" => proxy::service(shared, namespace, name, path, &parts, body).await,
            _ => Err(ApiError::NoRoute),
        };
    }
    let form = Form::of(&parts.headers);
    // Every object this request returns goes back in the form asked for; only a read
    // (a GET, a list, a watch) is turned into a Table.
    let (table_form, object_form) = match form {
        Form::Table => (Form::Table, Form::Whole),
        other => (other, other),
    };
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &object_form.object(r, v)));
    let created = |v: Value| {
        let v = object_form.object(r, v);
        Ok(json_response(StatusCode::CREATED, &v))
    };
    match (&parts.method, target.name.as_deref(), sub) {
        (&Method::GET, None, None) => {
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                watch::serve(shared, r, ns, &query, form)
            } else if form == Form::Table {
                let mut items = Vec::new();
                let listed = list(shared, r, ns, &query, |_, obj| {
                    items.push(obj);
                    Ok(())
                })?;
                ok(table::table(r, &items, listed.metadata()))
            } else {
                list_response(shared, r, ns, &query, form)
            }
        }
        (&Method::GET, Some(name), None) => Ok(json_response(
            StatusCode::OK,
            &table_form.object(r, get(shared, r, ns, name)?.0),
        )),
        (&Method::POST, None, None) => {
            let writer = Writer::of(&parts, &query, r, None, false)?;
            let obj = decode_body(&parts, &body)?;
            created(create(shared, r, ns, obj, &query, &writer).await?)
        }
        (&Method::GET, Some(name), Some("status")) => ok(get(shared, r, ns, name)?.0),
        (&Method::GET, Some(name), Some("scale")) => ok(scale_of(&get(shared, r, ns, name)?.0)),
        (&Method::GET, Some(name), Some("log")) => {
            agents::pod_log(shared, r, ns, name, &query).await
        }
        (&Method::PUT | &Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let change = Change::of(&parts, &body)?;
            let writer = Writer::of(&parts, &query, r, sub, change.applies())?;
            match update(shared, r, ns, name, sub, &query, &change, &writer).await {
                // An apply to an object that is not there creates it.
                Err(ApiError::NotFound { .. }) if change.applies() && sub.is_none() => {
                    let mut obj = change.proposed(&Value::Null, &writer)?;
                    match meta::name(&obj) {
                        Some(named) if named != name => return Err(misnamed(named, name)),
                        Some(_) => {}
                        None => drop(metadata_mut(&mut obj).insert("name".into(), json!(name))),
                    }
                    created(create(shared, r, ns, obj, &query, &writer).await?)
                }
                updated => ok(updated?),
            }
        }
        (&Method::PUT | &Method::PATCH, Some(name), Some("scale")) => {
            let change = Change::of(&parts, &body)?;
            if change.applies() {
                return Err(ApiError::UnsupportedMediaType(ACCEPTED_PATCHES.into()));
            }
            let writer = Writer::of(&parts, &query, r, sub, false)?;
            ok(rescale(shared, r, ns, name, &query, change, &writer).await?)
        }
        (&Method::DELETE, None, None) => {
            let options = delete_options(&parts, &body, &query)?;
            let deleted = delete_collection(shared, r, ns, &query, &options).await?;
            list_of(r, object_form, deleted)
        }
        (&Method::DELETE, Some(name), None) => {
            let options = delete_options(&parts, &body, &query)?;
            ok(delete(shared, r, ns, name, &options).await?)
        }
        (&Method::POST, Some(name), Some("binding")) => {
            bind(shared, r, ns, name, &decode_body(&parts, &body)?).await?;
            Ok(json_response(StatusCode::CREATED, &success()))
        }
        (&Method::POST, Some(name), Some("token")) => {
            let request = token_request(shared, r, ns, name, decode_body(&parts, &body)?)?;
            Ok(json_response(StatusCode::CREATED, &request))
        }
        (&Method::POST, Some(name), Some("eviction")) => {
            let eviction = decode_body(&parts, &body)?;
            let options = eviction.get("deleteOptions").cloned().unwrap_or(json!({}));
            delete(shared, r, ns, name, &options).await?;
            Ok(json_response(StatusCode::CREATED, &success()))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// `POST …/serviceaccounts/{name}/token`: a TokenRequest, answered with a token for the
/// account ([`super::access`]) and never stored.
fn token_request(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    mut request: Value,
) -> Result<Value, ApiError> {
    // The status is the server's to fill (kubectl's protobuf body carries an empty one).
    meta::ensure_object(&mut request).remove("status");
    static REQUESTS: Resource = Resource::of::<TokenRequest>("tokenrequest");
    let (kind, requests) = ("TokenRequest", &REQUESTS);
    let mut request = (requests.typed)(&request)
        .map_err(|e| ApiError::Invalid(validate::ValidationError::Decode(e), requests))?;
    let (account, _) = get(shared, r, ns, name)?;
    let seconds = request["spec"]["expirationSeconds"].as_i64();
    let seconds = seconds.unwrap_or(3600);
    if !(600..=1 << 32).contains(&seconds) {
        let why = format!("Invalid value: {seconds}: must be 10 minutes (600) or more");
        let field = "spec.expirationSeconds";
        return Err(ApiError::invalid_field(requests, kind, name, field, why));
    }
    let mut audiences: Vec<String> = meta::each(&request, "/spec/audiences")
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    if audiences.is_empty() {
        audiences.push("https://kubernetes.default.svc".into());
    }
    let (token, expires) = super::access::issue(shared, &account, &audiences, seconds);
    let expires = jiff::Timestamp::from_second(expires).unwrap_or_default();
    request["metadata"] =
        json!({"name": name, "namespace": ns, "creationTimestamp": meta::now_rfc3339()});
    request["spec"]["audiences"] = json!(audiences);
    request["spec"]["expirationSeconds"] = json!(seconds);
    request["status"] = json!({"token": token,
        "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()});
    Ok(request)
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// Decodes a request body as JSON, or as kubectl's protobuf envelope.
pub(super) fn decode_body(parts: &Parts, body: &Bytes) -> Result<Value, ApiError> {
    let ct = content_type(parts).unwrap_or("application/json");
    let media = ct.split(';').next().unwrap_or("").trim();
    let value = match media {
        "application/json" | "" | "*/*" => serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::BadRequest(format!("failed to decode the JSON body: {e}")))?,
        protobuf::CONTENT_TYPE => protobuf::decode(body).map_err(|e| {
            ApiError::BadRequest(format!("failed to decode the protobuf body: {e}"))
        })?,
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "application/json, {} (got {other})",
                protobuf::CONTENT_TYPE
            )));
        }
    };
    Some(value)
        .filter(Value::is_object)
        .ok_or_else(|| ApiError::BadRequest("the body must be a JSON object".into()))
}

fn content_type(parts: &Parts) -> Option<&str> {
    parts.headers.get(header::CONTENT_TYPE)?.to_str().ok()
}

/// The patch formats a PATCH of the scale subresource may use.
const ACCEPTED_PATCHES: &str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json";

fn patch_kind(parts: &Parts) -> Result<PatchKind, ApiError> {
    PatchKind::from_content_type(content_type(parts).unwrap_or(""))
        .ok_or_else(|| ApiError::UnsupportedMediaType(format!("{ACCEPTED_PATCHES}, {APPLY_PATCH}")))
}

/// The content type of a server-side apply.
const APPLY_PATCH: &str = "application/apply-patch+yaml";

fn field_validation(query: &Query) -> Result<FieldValidation, ApiError> {
    match query.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some(other) => Err(ApiError::BadRequest(format!(
            "fieldValidation must be Ignore, Warn or Strict, not {other:?}"
        ))),
    }
}

fn dry_run(query: &Query) -> bool {
    query.get("dryRun").is_some_and(|d| d == "All")
}

/// Parses a stored record into the object clients see (with its resourceVersion).
pub(super) fn from_record(record: &Record) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&record.value)
        .map_err(|e| ApiError::Internal(format!("stored object is not JSON: {e}")))?;
    set_resource_version(&mut obj, record.mod_revision);
    Ok(obj)
}

/// Sets the resourceVersion clients see: the store revision the object was written at.
fn set_resource_version(obj: &mut Value, revision: impl ToString) {
    metadata_mut(obj).insert("resourceVersion".into(), json!(revision.to_string()));
}

/// Whether a stored object's labels match, read without reading the rest of it. An object
/// whose labels cannot be read this way is left to the full check.
fn labels_match(selector: &LabelSelector, record: &Record) -> bool {
    #[derive(serde::Deserialize)]
    struct Labelled {
        metadata: Option<Labels>,
    }
    #[derive(serde::Deserialize)]
    struct Labels {
        labels: Option<BTreeMap<String, String>>,
    }
    let Ok(object) = serde_json::from_slice::<Labelled>(&record.value) else {
        return true;
    };
    let labels = object.metadata.and_then(|m| m.labels).unwrap_or_default();
    selector.matches_labels(|key| labels.get(key).map(String::as_str))
}

/// The bytes to store: the object without its resourceVersion (the store owns that).
fn to_stored(obj: &Value) -> Vec<u8> {
    let mut obj = obj.clone();
    metadata_mut(&mut obj).remove("resourceVersion");
    serde_json::to_vec(&obj).unwrap_or_default()
}

/// The op that stores `obj` as `name`, if the stored copy is as `precondition` says.
fn put_object(
    r: &Resource,
    ns: Option<&str>,
    name: &str,
    obj: &Value,
    precondition: Precondition,
) -> Op {
    Op::put(r.key(ns, name), to_stored(obj), precondition)
}

pub(super) fn get(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
) -> Result<(Value, u64), ApiError> {
    let record = shared.store.get(&r.key(ns, name));
    let record = record.map_err(|e| from_store(e, r, name))?;
    let record = record.ok_or_else(|| ApiError::not_found(r, name))?;
    Ok((from_record(&record)?, record.mod_revision))
}

/// The selectors of a list or watch.
pub(super) fn selectors(query: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok((labels, fields))
}

/// Hands each stored object of `r` that the query's selectors keep to `each`, in key order,
/// with the revision the list is read at; the page and revision the query asks for
/// ([`paging`]). Returns what the list says about itself.
fn list(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    query: &Query,
    mut each: impl FnMut(u64, Value) -> Result<(), ApiError>,
) -> Result<Listed, ApiError> {
    let (labels, fields) = selectors(query)?;
    let prefix = r.prefix(ns);
    let window = paging::window(query, &prefix)?;
    let (records, revision) = match window.exact {
        Some(at) => shared
            .store
            .list_at(&prefix, window.after.as_deref(), at)
            .map(|records| (records, at)),
        None => shared.store.list(&prefix),
    }
    .map_err(|e| match e {
        StoreError::Compacted { .. } if window.after.is_some() => ApiError::Gone(
            "The provided continue parameter is too old to display a consistent list result. \
             You can start a new list without the continue parameter."
                .into(),
        ),
        e => from_store(e, r, ""),
    })?;
    if let Some(wanted) = window.not_older_than.filter(|w| *w > revision) {
        let ahead = StoreError::FutureRevision {
            requested: wanted,
            current: revision,
        };
        return Err(from_store(ahead, r, ""));
    }
    let mut kept = 0;
    for (index, (_, record)) in records.iter().enumerate() {
        if window.limit == Some(kept) {
            let unfiltered = labels.is_empty() && fields.is_empty();
            let last = &records[index - 1].0;
            let remaining = unfiltered.then_some(records.len() - index);
            return Ok(Listed::cut(revision, last, remaining));
        }
        // A label selector is checked on the labels alone first: most lists with one (a
        // controller's for its own pods) keep few of many objects, and reading every
        // object whole only to drop it was most of such a list's cost.
        if !labels.is_empty() && !labels_match(&labels, record) {
            continue;
        }
        let obj = from_record(record)?;
        if labels.matches_object(&obj) && fields.matches_object(&obj) {
            each(revision, obj)?;
            kept += 1;
        }
    }
    Ok(Listed {
        revision,
        ..Listed::default()
    })
}

/// A list as JSON, written object by object.
///
/// A decoded object takes several times the memory of its JSON, and a list of ten thousand
/// pods decoded whole was the largest thing on the apiserver's heap when the scale bench
/// peaked (heaptrack). So each object is decoded, checked against the selectors, written
/// out and dropped before the next; the list in memory is the stored bytes and the bytes
/// going out.
fn list_response(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    query: &Query,
    form: Form,
) -> Result<http::Response<Body>, ApiError> {
    let (kind, api_version) = form.list_type(r);
    // The metadata goes last, once the list knows whether it was cut short: the order of
    // a JSON object's members means nothing to its readers.
    let mut body = serde_json::to_vec(&json!({"kind": kind, "apiVersion": api_version}))
        .map_err(|e| ApiError::Internal(format!("cannot encode a list: {e}")))?;
    body.pop();
    body.extend_from_slice(b",\"items\":[");
    let mut first = true;
    let listed = list(shared, r, ns, query, |_, obj| {
        if !std::mem::take(&mut first) {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &form.object(r, obj))
            .map_err(|e| ApiError::Internal(format!("cannot encode an object: {e}")))
    })?;
    body.extend_from_slice(b"],\"metadata\":");
    serde_json::to_writer(&mut body, &listed.metadata())
        .map_err(|e| ApiError::Internal(format!("cannot encode a list: {e}")))?;
    body.push(b'}');
    Ok(json_bytes_response(StatusCode::OK, body))
}

/// A list of objects already in memory (what a `deletecollection` removed), in `form`.
fn list_of(
    r: &'static Resource,
    form: Form,
    items: Vec<Value>,
) -> Result<http::Response<Body>, ApiError> {
    let (kind, api_version) = form.list_type(r);
    let items: Vec<Value> = items.into_iter().map(|obj| form.object(r, obj)).collect();
    let list = json!({"kind": kind, "apiVersion": api_version, "metadata": {}, "items": items});
    Ok(json_response(StatusCode::OK, &list))
}

/// Checks that a body's apiVersion and kind (if given) are this resource's; fills them in.
fn check_type(r: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    let map = ensure_object(obj);
    let api_version = r.api_version();
    for (field, what, want) in [
        ("apiVersion", "API version", api_version.as_str()),
        ("kind", "kind", r.kind),
    ] {
        if let Some(got) = map.get(field).and_then(Value::as_str)
            && !got.is_empty()
            && got != want
        {
            return Err(ApiError::BadRequest(format!(
                "the {what} in the data ({got}) does not match the expected {what} ({want})"
            )));
        }
        map.insert(field.into(), json!(want));
    }
    Ok(())
}

/// Checks the body's namespace against the URL's; fills it in.
fn check_namespace(r: &Resource, ns: Option<&str>, obj: &mut Value) -> Result<(), ApiError> {
    let meta = metadata_mut(obj);
    let given = meta
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (r.namespaced, ns, given) {
        (true, Some(url), Some(body)) if url != body => return Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        )),
        (true, Some(url), _) => meta.insert("namespace".into(), json!(url)),
        (true, None, _) => {
            return Err(ApiError::BadRequest(
                "a namespaced object must be created in a namespace".into(),
            ));
        }
        (false, _, _) => meta.remove("namespace"),
    };
    Ok(())
}

fn random_suffix(len: usize) -> String {
    // Kubernetes' alphabet: no vowels (no words) and no easily confused characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

/// Decodes, validates and defaults an object bound for the store.
fn admit(r: &'static Resource, obj: Value, query: &Query) -> Result<Value, ApiError> {
    let (mut obj, warnings) =
        validate::decode(r, obj, field_validation(query)?).map_err(|e| ApiError::Invalid(e, r))?;
    for w in warnings {
        tracing::debug!(kind = r.kind, warning = %w, "dropped a field");
    }
    validate::validate(r, &obj).map_err(|e| ApiError::Invalid(e, r))?;
    defaults::apply(r.kind, &mut obj);
    Ok(obj)
}

async fn create(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    mut obj: Value,
    query: &Query,
    writer: &Writer,
) -> Result<Value, ApiError> {
    check_type(r, &mut obj)?;
    check_namespace(r, ns, &mut obj)?;
    if let Some(ns) = ns.filter(|_| r.namespaced) {
        let namespaces = api::find("", "v1", "namespaces").ok_or(ApiError::NoRoute)?;
        get(shared, namespaces, None, ns)?;
    }
    if meta::name(&obj).is_none()
        && let Some(prefix) = meta::meta_str(&obj, "generateName")
    {
        let name = format!("{prefix}{}", random_suffix(5));
        metadata_mut(&mut obj).insert("name".into(), json!(name));
    }
    // The uid comes before defaulting: a Job's generated selector is made of it.
    metadata_mut(&mut obj).insert("uid".into(), json!(new_uid()));
    let mut obj = admit(r, obj, query)?;
    if let ("Pod", Some(ns)) = (r.kind, ns) {
        super::access::admit_pod(shared, ns, &mut obj, random_suffix(5));
    }
    let name = meta::name(&obj).unwrap_or_default().to_owned();
    let meta = metadata_mut(&mut obj);
    meta.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    let sent = meta.remove("managedFields");
    if r.has_spec {
        meta.insert("generation".into(), json!(1));
    }
    prepare_status_on_create(r, &mut obj);
    apply::record(&Value::Null, &mut obj, sent, writer)?;
    let claims = allocate(shared, r, &r.key(ns, &name), &name, &mut obj, None)?;
    if dry_run(query) {
        return Ok(obj);
    }
    let mut ops = vec![put_object(r, ns, &name, &obj, Precondition::Absent)];
    ops.extend(claims);
    write(shared, r, &name, ops, obj).await
}

/// Makes `ops` one store write, and returns `obj` with the resourceVersion it was written at.
/// Losing a race for a Service's allocations is a conflict ([`from_allocating_store`]).
async fn write(
    shared: &Shared,
    r: &'static Resource,
    name: &str,
    ops: Vec<Op>,
    mut obj: Value,
) -> Result<Value, ApiError> {
    let written = shared.store.write(ops).await;
    let written = written.map_err(|e| from_allocating_store(e, r, name))?;
    set_resource_version(&mut obj, written.revision);
    Ok(obj)
}

/// For a Service: fills in its cluster IP and node ports; the ops that claim and release
/// them go into the same store write as the Service itself.
fn allocate(
    shared: &Shared,
    r: &'static Resource,
    key: &str,
    name: &str,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<Vec<Op>, ApiError> {
    if r.kind != "Service" {
        return Ok(Vec::new());
    }
    let held = Held::load(&shared.store).map_err(|e| from_store(e, r, name))?;
    allocation::plan(obj, old, &held, key, name, &shared.node_ports)
        .map_err(|e| ApiError::Invalid(e, r))
}

/// Like [`from_store`], except that losing a race for a node port or cluster IP is a
/// conflict the client may retry, not "already exists".
fn from_allocating_store(e: StoreError, r: &'static Resource, name: &str) -> ApiError {
    match e {
        StoreError::AlreadyExists { key } if key.starts_with("/registry/allocations/") => conflict(
            r,
            name,
            format!("{key} was taken by another service at the same moment; please retry"),
        ),
        e => from_store(e, r, name),
    }
}

/// A 409: `name` is not in the state the request needs, for the reason `message` gives.
fn conflict(r: &'static Resource, name: &str, message: String) -> ApiError {
    ApiError::Conflict {
        resource: r,
        name: name.to_owned(),
        message,
    }
}

/// What the server owns of a new object's status.
fn prepare_status_on_create(r: &Resource, obj: &mut Value) {
    let status = match r.kind {
        "Pod" => json!({"phase": "Pending", "qosClass": "BestEffort"}),
        "Deployment" | "ReplicaSet" => json!({}),
        "Service" => json!({"loadBalancer": {}}),
        _ => return,
    };
    ensure_object(obj).insert("status".into(), status);
}

/// How an update describes the new object.
pub(super) enum Change<'a> {
    /// PUT: the whole object.
    Replace(Value),
    /// PATCH: a patch to apply to the current object.
    Patch(PatchKind, &'a Bytes),
    /// PATCH: a server-side apply's configuration ([`apply`]).
    Apply(&'a Bytes),
}

impl<'a> Change<'a> {
    /// The change a PUT (the whole object) or a PATCH (its patch) describes.
    fn of(parts: &Parts, body: &'a Bytes) -> Result<Self, ApiError> {
        let media = content_type(parts).and_then(|ct| ct.split(';').next());
        Ok(match parts.method {
            Method::PATCH if media.map(str::trim) == Some(APPLY_PATCH) => Change::Apply(body),
            Method::PATCH => Change::Patch(patch_kind(parts)?, body),
            _ => Change::Replace(decode_body(parts, body)?),
        })
    }

    fn applies(&self) -> bool {
        matches!(self, Change::Apply(_))
    }

    /// The object the client proposes: the one it sent, or `base` with its patch or
    /// configuration applied.
    fn proposed(&self, base: &Value, writer: &Writer) -> Result<Value, ApiError> {
        match self {
            Change::Replace(obj) => Ok(obj.clone()),
            Change::Patch(kind, body) => {
                patch::apply(*kind, base, body).map_err(|e| ApiError::BadRequest(e.to_string()))
            }
            Change::Apply(body) => apply::merge(base, body, writer),
        }
    }
}

/// How many times, at most, a write is tried when another writer got in between its read
/// and its write.
const PATCH_RETRIES: usize = 5;

/// Runs `attempt` (a read of the current object and a write based on it) until it succeeds,
/// fails in a way `retry` does not accept, or has been tried [`PATCH_RETRIES`] times.
async fn retried<T, Fut>(
    retry: impl Fn(&ApiError) -> bool,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, ApiError>
where
    Fut: Future<Output = Result<T, ApiError>>,
{
    for _ in 1..PATCH_RETRIES {
        match attempt().await {
            Err(e) if retry(&e) => continue,
            done => return done,
        }
    }
    attempt().await
}

fn is_conflict(e: &ApiError) -> bool {
    matches!(e, ApiError::Conflict { .. })
}

/// The resourceVersion the client put in an object it sent, if any: the revision the object
/// must still be at for the write to happen.
fn client_revision(obj: &Value) -> Option<&str> {
    meta::meta_str(obj, "resourceVersion").filter(|rv| !rv.is_empty())
}

#[allow(clippy::too_many_arguments)]
async fn update(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    query: &Query,
    change: &Change<'_>,
    writer: &Writer,
) -> Result<Value, ApiError> {
    // Only a PATCH is tried again on a conflict, and only one that names no resourceVersion
    // of its own: a patch that names one is a precondition, not a retry loop. Which it is
    // shows once it is applied, so each attempt says. (An atomic, not a Cell: the request's
    // future must be free to move between threads.)
    let retry = &AtomicBool::new(false);
    retried(
        |e| is_conflict(e) && retry.load(Ordering::Relaxed),
        || async move {
            let (current, revision) = get(shared, r, ns, name)?;
            let proposed = change.proposed(&current, writer)?;
            let named = match change {
                Change::Replace(_) => client_revision(&proposed)
                    .filter(|_| !crate::failpoints::on!("apiserver::ignore-resource-versions")),
                Change::Patch(..) | Change::Apply(_) => {
                    meta::meta_str(&proposed, "resourceVersion")
                        .filter(|rv| *rv != revision.to_string())
                }
            };
            let retriable = !matches!(change, Change::Replace(_)) && named.is_none();
            retry.store(retriable, Ordering::Relaxed);
            let expected = named.map(parse_rv).transpose()?.unwrap_or(revision);
            let next = merge_update(r, ns, name, sub, &current, proposed, query, writer)?;
            write_update(shared, r, ns, name, &current, next, expected, query).await
        },
    )
    .await
}

pub(super) fn parse_rv(rv: &str) -> Result<u64, ApiError> {
    rv.parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))
}

fn misnamed(named: &str, name: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "the name of the object ({named}) does not match the name on the URL ({name})"
    ))
}

/// Builds the object to store from the current one and what the client proposed.
#[allow(clippy::too_many_arguments)]
fn merge_update(
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    current: &Value,
    mut proposed: Value,
    query: &Query,
    writer: &Writer,
) -> Result<Value, ApiError> {
    check_type(r, &mut proposed)?;
    check_namespace(r, ns, &mut proposed)?;
    match meta::meta_str(&proposed, "name") {
        Some(n) if n == name => {}
        None | Some("") => {
            metadata_mut(&mut proposed).insert("name".into(), json!(name));
        }
        Some(n) => return Err(misnamed(n, name)),
    }
    let mut next = if sub == Some("status") {
        // A status update changes the status and nothing else.
        let mut next = current.clone();
        let status = proposed.get("status").cloned().unwrap_or(json!({}));
        ensure_object(&mut next).insert("status".into(), status);
        next
    } else {
        let mut next = proposed;
        if r.has_subresource("status") {
            // Writers of the main resource cannot change status: it has its own endpoint.
            let map = ensure_object(&mut next);
            match current.get("status") {
                Some(s) => map.insert("status".into(), s.clone()),
                None => map.remove("status"),
            };
        }
        next
    };
    // Server-owned metadata stays as it was.
    let cur_meta = current.get("metadata").cloned().unwrap_or_default();
    let meta = metadata_mut(&mut next);
    for key in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cur_meta.get(key) {
            Some(v) => meta.insert(key.into(), v.clone()),
            None => meta.remove(key),
        };
    }
    let sent = meta.remove("managedFields");
    let mut next = admit(r, next, query)?;
    validate::validate_update(r, current, &next).map_err(|e| ApiError::Invalid(e, r))?;
    if r.has_spec && next.get("spec") != current.get("spec") {
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(0);
        metadata_mut(&mut next).insert("generation".into(), json!(generation + 1));
    }
    apply::record(current, &mut next, sent, writer)?;
    Ok(next)
}

#[allow(clippy::too_many_arguments)]
async fn write_update(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    current: &Value,
    mut next: Value,
    expected: u64,
    query: &Query,
) -> Result<Value, ApiError> {
    let claims = allocate(shared, r, &r.key(ns, name), name, &mut next, Some(current))?;
    // Compare without resourceVersion: an unchanged object is not written again.
    let current_rv = meta::meta_str(current, "resourceVersion").map(str::to_owned);
    metadata_mut(&mut next).remove("resourceVersion");
    let mut current_plain = current.clone();
    metadata_mut(&mut current_plain).remove("resourceVersion");
    if current_rv.as_deref() != Some(expected.to_string().as_str()) {
        let stale = StoreError::Conflict {
            key: String::new(),
            expected,
            actual: 0,
        };
        return Err(from_store(stale, r, name));
    }
    if next == current_plain || dry_run(query) {
        if let Some(rv) = current_rv {
            set_resource_version(&mut next, rv);
        }
        return Ok(next);
    }
    let mut ops = vec![put_object(
        r,
        ns,
        name,
        &next,
        Precondition::Revision(expected),
    )];
    ops.extend(claims);
    write(shared, r, name, ops, next).await
}

/// The `autoscaling/v1` Scale of a Deployment or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let m = obj.get("metadata").cloned().unwrap_or_default();
    let labels = obj.pointer("/spec/selector/matchLabels");
    let labels = labels.and_then(Value::as_object).into_iter().flatten();
    let pairs = labels.filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)));
    let selector = pairs.collect::<Vec<_>>().join(",");
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"), "namespace": m.get("namespace"), "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"), "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

async fn rescale(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    query: &Query,
    change: Change<'_>,
    writer: &Writer,
) -> Result<Value, ApiError> {
    // A Scale PUT that names a resourceVersion is a precondition, not a retry loop.
    let pinned = matches!(&change, Change::Replace(obj) if client_revision(obj).is_some());
    let change = &change;
    retried(
        |e| is_conflict(e) && !pinned,
        || async move {
            let (current, revision) = get(shared, r, ns, name)?;
            let proposed = change.proposed(&scale_of(&current), writer)?;
            let replicas = match proposed.pointer("/spec/replicas").and_then(Value::as_i64) {
                Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => n,
                other => {
                    let other = other.map_or("null".to_string(), |n| n.to_string());
                    let why = format!("Invalid value: {other}: must be greater than or equal to 0");
                    let field = "spec.replicas";
                    return Err(ApiError::invalid_field(r, "Scale", name, field, why));
                }
            };
            let named = client_revision(&proposed);
            let expected = named.map(parse_rv).transpose()?.unwrap_or(revision);
            let mut next = current.clone();
            set_in_spec(&mut next, "replicas", json!(replicas));
            let next = merge_update(r, ns, name, None, &current, next, query, writer)?;
            let stored = write_update(shared, r, ns, name, &current, next, expected, query).await?;
            Ok(scale_of(&stored))
        },
    )
    .await
}

/// Sets `spec.<field>` of `obj`, starting a spec if it has none.
fn set_in_spec(obj: &mut Value, field: &str, value: Value) {
    let spec = ensure_object(obj).entry("spec").or_insert(json!({}));
    ensure_object(spec).insert(field.into(), value);
}

/// DeleteOptions from the body (if any) and the query.
fn delete_options(parts: &Parts, body: &Bytes, query: &Query) -> Result<Value, ApiError> {
    let mut options = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        decode_body(parts, body)?
    };
    if let Some(g) = query.get("gracePeriodSeconds") {
        let g: i64 = g
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("invalid gracePeriodSeconds {g:?}")))?;
        options["gracePeriodSeconds"] = json!(g);
    }
    if let Some(p) = query.get("propagationPolicy") {
        options["propagationPolicy"] = json!(p);
    }
    match options.get("propagationPolicy") {
        None | Some(Value::Null) => {}
        Some(Value::String(p)) if ["Orphan", "Background", "Foreground"].contains(&p.as_str()) => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "propagationPolicy {other} is not one of Orphan, Background, Foreground"
            )));
        }
    }
    Ok(options)
}

/// For a delete with `propagationPolicy: Orphan`: every object of the owner's namespace
/// that names it in `ownerReferences` loses that reference, in the same write as the
/// delete, so the garbage collector leaves it alone (a ReplicaSet keeps its pods running).
/// Each is written at the revision it was read at: a concurrent change makes the whole
/// delete retry, never lose that change.
fn orphan_dependents(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    owner: &Value,
) -> Result<Vec<Op>, ApiError> {
    let Some(uid) = meta::meta_str(owner, "uid") else {
        return Ok(Vec::new());
    };
    let mut ops = Vec::new();
    for res in api::RESOURCES.iter().filter(|res| res.namespaced) {
        let listed = shared.store.list(&res.prefix(ns));
        let (items, _) = listed.map_err(|e| from_store(e, r, name))?;
        for (key, record) in items {
            let mut dependent = from_record(&record)?;
            let refs = dependent.pointer_mut("/metadata/ownerReferences");
            let Some(refs) = refs.and_then(Value::as_array_mut) else {
                continue;
            };
            let before = refs.len();
            refs.retain(|owner_ref| owner_ref.get("uid").and_then(Value::as_str) != Some(uid));
            if refs.len() == before {
                continue;
            }
            if refs.is_empty() {
                metadata_mut(&mut dependent).remove("ownerReferences");
            }
            let as_read = Precondition::Revision(record.mod_revision);
            ops.push(Op::put(key, to_stored(&dependent), as_read));
        }
    }
    Ok(ops)
}

/// `deletecollection`: deletes every object the query's selectors keep, one by one, each as
/// a DELETE of its own would; returns what was deleted. An object another client deleted
/// meanwhile is skipped.
async fn delete_collection(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    query: &Query,
    options: &Value,
) -> Result<Vec<Value>, ApiError> {
    let mut names = Vec::new();
    // Every object the selectors keep, not a page of them.
    let mut whole = query.clone();
    whole.remove("limit");
    whole.remove("continue");
    list(shared, r, ns, &whole, |_, obj| {
        let namespace = meta::meta_str(&obj, "namespace").map(str::to_owned);
        names.push((namespace, meta::name(&obj).unwrap_or_default().to_owned()));
        Ok(())
    })?;
    let mut deleted = Vec::with_capacity(names.len());
    for (namespace, name) in names {
        match delete(shared, r, namespace.as_deref().or(ns), &name, options).await {
            Ok(gone) => deleted.push(gone),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

async fn delete(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    options: &Value,
) -> Result<Value, ApiError> {
    // Another writer between our read and our write is not the client's conflict unless the
    // client named a resourceVersion: read again and retry, as Kubernetes does. A namespace's
    // contents change under it all the time; one of them going away between our list and
    // our write is no reason to fail either.
    let client_pinned = options.pointer("/preconditions/resourceVersion").is_some();
    let retry = |e: &ApiError| match e {
        ApiError::Conflict { .. } => !client_pinned,
        ApiError::NotFound { .. } => r.kind == "Namespace",
        _ => false,
    };
    retried(retry, || async move {
        let (current, revision) = get(shared, r, ns, name)?;
        if let Some(pre) = options.get("preconditions") {
            if let Some(uid) = pre.get("uid").and_then(Value::as_str)
                && meta::meta_str(&current, "uid") != Some(uid)
            {
                let message = format!("Precondition failed: UID in precondition: {uid}");
                return Err(conflict(r, name, message));
            }
            if let Some(rv) = pre.get("resourceVersion").and_then(Value::as_str)
                && parse_rv(rv)? != revision
            {
                let message = format!("Precondition failed: ResourceVersion in precondition: {rv}");
                return Err(conflict(r, name, message));
            }
        }
        if r.kind == "Namespace" && ["default", "kube-system", "kube-public"].contains(&name) {
            return Err(ApiError::Forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        let grace = options.get("gracePeriodSeconds").and_then(Value::as_i64);
        let finalizers = meta::each(&current, "/metadata/finalizers").count() > 0;
        let node = current["spec"]["nodeName"].as_str().unwrap_or("");
        let bound_pod = r.kind == "Pod" && !node.is_empty();
        let pod_default = current["spec"]["terminationGracePeriodSeconds"].as_i64();
        let pod_grace = grace.or(pod_default).unwrap_or(30);
        // A pod on a node is stopped by its node agent, which removes it when its containers are
        // gone; an object with finalizers waits for them. Both are only marked as terminating.
        if finalizers || (bound_pod && pod_grace > 0) {
            if current.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(current);
            }
            let mut next = current.clone();
            let meta = metadata_mut(&mut next);
            meta.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
            let marked_grace = if bound_pod { pod_grace } else { 0 };
            meta.insert("deletionGracePeriodSeconds".into(), json!(marked_grace));
            let mark = put_object(r, ns, name, &next, Precondition::Revision(revision));
            return write(shared, r, name, vec![mark], next).await;
        }
        let key = r.key(ns, name);
        let mut ops = vec![Op::delete(key.clone(), Precondition::Revision(revision))];
        if r.namespaced && options["propagationPolicy"] == "Orphan" {
            ops.extend(orphan_dependents(shared, r, ns, name, &current)?);
        }
        // A Service gives back its cluster IP and node ports in the same write.
        let held = Held::load(&shared.store).map_err(|e| from_store(e, r, name))?;
        if r.kind == "Service" {
            ops.extend(allocation::release(&held, &key));
        }
        if r.kind == "Namespace" {
            // The namespace goes with everything in it.
            for res in api::RESOURCES.iter().filter(|res| res.namespaced) {
                let listed = shared.store.list(&res.prefix(Some(name)));
                let (items, _) = listed.map_err(|e| from_store(e, r, name))?;
                for (key, _) in items {
                    if res.kind == "Service" {
                        ops.extend(allocation::release(&held, &key));
                    }
                    // Whatever its revision: the namespace goes with everything in it.
                    ops.push(Op::delete(key, Precondition::Exists));
                }
            }
        }
        write(shared, r, name, ops, current).await
    })
    .await
}

async fn bind(
    shared: &Shared,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    binding: &Value,
) -> Result<(), ApiError> {
    let node = binding["target"]["name"].as_str().filter(|n| !n.is_empty());
    let missing = || ApiError::BadRequest("a binding needs target.name (the node)".into());
    let node = node.ok_or_else(missing)?;
    // A status write slipped in between: the pod is still unbound, try again.
    let modified = |e: &ApiError| matches!(e, ApiError::Conflict { message, .. } if message.contains("has been modified"));
    retried(modified, || async move {
        let (mut pod, revision) = get(shared, r, ns, name)?;
        let existing = pod["spec"]["nodeName"].as_str().unwrap_or("");
        if !existing.is_empty() {
            let message = format!("pod {name} is already assigned to node \"{existing}\"");
            return Err(conflict(r, name, message));
        }
        set_in_spec(&mut pod, "nodeName", json!(node));
        let bound = put_object(r, ns, name, &pod, Precondition::Revision(revision));
        write(shared, r, name, vec![bound], pod).await.map(drop)
    })
    .await
}
