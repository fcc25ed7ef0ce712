//! Small accessors for the `metadata` of an object held as JSON.

use serde_json::{Map, Value};

/// The object's `metadata`, created if missing (or replaced if not an object).
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    ensure_object(ensure_object(obj).entry("metadata").or_insert(Value::Null))
}

/// Turns `v` into an object if it is not one, and returns its map.
pub fn ensure_object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// A string field of `metadata`, if present.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The object's name.
pub fn name(obj: &Value) -> Option<&str> {
    meta_str(obj, "name").filter(|n| !n.is_empty())
}

/// The object's labels as pairs.
pub fn labels<'a>(obj: &'a Value) -> Vec<(&'a str, &'a str)> {
    let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
    let pair = |(k, v): (&'a String, &'a Value)| Some((k.as_str(), v.as_str()?));
    labels.into_iter().flatten().filter_map(pair).collect()
}

/// Follows a dotted path (`spec.nodeName`) into the object.
pub fn path<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(obj, |v, part| v.get(part))
}

/// The items of the array at `pointer` in `obj` (none when there is no array there).
pub fn each<'a>(obj: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A Node's `InternalIP` address, as it reports it.
pub fn internal_ip(node: &Value) -> Option<&str> {
    node.pointer("/status/addresses")?
        .as_array()?
        .iter()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))?
        .get("address")?
        .as_str()
}

/// Now, as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    format!("{}", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
}
