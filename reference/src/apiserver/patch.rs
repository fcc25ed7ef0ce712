//! PATCH bodies: JSON patch, JSON merge patch and strategic merge patch.
//!
//! JSON patch (RFC 6902) and merge patch (RFC 7386) come from the `json-patch` crate. The
//! strategic merge patch is Kubernetes' own: like a merge patch, except that some lists
//! are merged item by item, matched on a *merge key* (containers by `name`, container ports
//! by `containerPort`, ...), and the patch can carry directives:
//!
//! - `$patch: delete` on a list item removes the matching item; on a map removes the map;
//!   `$patch: replace` on a map replaces it whole;
//! - `$setElementOrder/<list>: [{key: value}, ...]` gives the final order of a merged list
//!   (kubectl `set image` and `apply` send it);
//! - `$retainKeys: [...]` keeps only the listed keys of a map;
//! - `$deleteFromPrimitiveList/<list>: [...]` removes values from a list of strings.
//!
//! The merge keys are those of the fields kubectl's apply, set and rollout touch; any other
//! list is replaced, as a merge patch would.

use serde_json::{Map, Value};

/// Which patch format a request carries, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
}

impl PatchKind {
    /// The patch kind for a content type, if supported.
    pub fn from_content_type(ct: &str) -> Option<PatchKind> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            _ => None,
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch body is not JSON of the right shape.
    #[error("failed to decode the patch: {0}")]
    Decode(String),
    /// A JSON patch operation failed (missing path, failed test).
    #[error("failed to apply the JSON patch: {0}")]
    Apply(String),
}

/// Applies `patch` (raw body) of `kind` to `original`.
pub fn apply(kind: PatchKind, original: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let mut doc = original.clone();
    match kind {
        PatchKind::Json => {
            let p: json_patch::Patch =
                serde_json::from_slice(patch).map_err(|e| PatchError::Decode(e.to_string()))?;
            json_patch::patch(&mut doc, &p).map_err(|e| PatchError::Apply(e.to_string()))?;
        }
        PatchKind::Merge => {
            let p: Value =
                serde_json::from_slice(patch).map_err(|e| PatchError::Decode(e.to_string()))?;
            if !p.is_object() {
                return Err(PatchError::Decode(
                    "a merge patch must be a JSON object".into(),
                ));
            }
            json_patch::merge(&mut doc, &p);
        }
        PatchKind::Strategic => {
            let p: Value =
                serde_json::from_slice(patch).map_err(|e| PatchError::Decode(e.to_string()))?;
            let Value::Object(p) = p else {
                return Err(PatchError::Decode(
                    "a strategic merge patch must be a JSON object".into(),
                ));
            };
            strategic_merge_map(&mut doc, &p);
        }
    }
    Ok(doc)
}

/// The merge key of a list field, if Kubernetes merges it item by item.
pub(super) fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => "name",
        "volumeMounts" | "volumeDevices" => "mountPath",
        "ownerReferences" => "uid",
        "conditions" | "addresses" => "type",
        "taints" => "key",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        // Container ports merge on containerPort; a Service's on port.
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Merges a patch map into `target` (made an object if it is not one).
pub(super) fn strategic_merge_map(target: &mut Value, patch: &Map<String, Value>) {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            *target = Value::Object(replaced);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        map.retain(|k, _| keep.contains(&k.as_str()) || patch.contains_key(k));
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/")
                && let (Some(Value::Array(list)), Value::Array(remove)) =
                    (map.get_mut(field), value)
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        match value {
            Value::Null => {
                map.remove(key);
            }
            Value::Object(p) => {
                let slot = map.entry(key.clone()).or_insert(Value::Null);
                strategic_merge_map(slot, p);
                if slot.is_null() {
                    map.remove(key);
                }
            }
            Value::Array(items) => {
                let merged = match (merge_key(key, items), map.remove(key)) {
                    (Some(mk), Some(Value::Array(orig))) => merge_list(orig, items, mk),
                    (Some(mk), _) => merge_list(Vec::new(), items, mk),
                    (None, _) => items.clone(),
                };
                map.insert(key.clone(), Value::Array(merged));
            }
            other => {
                map.insert(key.clone(), other.clone());
            }
        }
    }
    // Order after merging, as `$setElementOrder/<list>` says.
    for (key, order) in patch {
        let Some(field) = key.strip_prefix("$setElementOrder/") else {
            continue;
        };
        let (Some(Value::Array(order)), Some(Value::Array(list))) =
            (Some(order), map.get_mut(field))
        else {
            continue;
        };
        reorder(list, order, field);
    }
}

/// Merges patch items into `orig` by merge key `mk`.
fn merge_list(mut orig: Vec<Value>, items: &[Value], mk: &str) -> Vec<Value> {
    for item in items {
        let Some(patch) = item.as_object() else {
            orig.push(item.clone());
            continue;
        };
        if patch.get("$patch").and_then(Value::as_str) == Some("replace") && patch.len() == 1 {
            // `[{"$patch": "replace"}, ...]`: the list is replaced by the other items.
            return items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect();
        }
        let key = patch.get(mk);
        let pos = key.and_then(|k| orig.iter().position(|o| o.get(mk) == Some(k)));
        match (patch.get("$patch").and_then(Value::as_str), pos) {
            (Some("delete"), Some(p)) => {
                orig.remove(p);
            }
            (Some("delete"), None) => {}
            (_, Some(p)) => strategic_merge_map(&mut orig[p], patch),
            (_, None) => {
                let mut fresh = Value::Null;
                strategic_merge_map(&mut fresh, patch);
                orig.push(fresh);
            }
        }
    }
    orig
}

/// Sorts `list` so the items named in `order` come first, in that order.
fn reorder(list: &mut [Value], order: &[Value], field: &str) {
    let mk = merge_key(field, order);
    let rank = |item: &Value| -> usize {
        order
            .iter()
            .position(|o| match (mk, o) {
                (Some(mk), Value::Object(_)) => o.get(mk).is_some() && o.get(mk) == item.get(mk),
                (_, prim) => prim == item,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(original: Value, patch: Value) -> Value {
        apply(
            PatchKind::Strategic,
            &original,
            patch.to_string().as_bytes(),
        )
        .expect("applies")
    }

    #[test]
    fn set_image_patch_changes_one_container() {
        // What `kubectl set image deployment/web probe=shipshape/probe:v2` sends.
        let d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "probe", "image": "shipshape/probe:v1", "ports": [{"containerPort": 8080}]},
            {"name": "side", "image": "side:v1"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "probe"}, {"name": "side"}],
            "containers": [{"image": "shipshape/probe:v2", "name": "probe"}]
        }}}});
        let out = smp(d, patch);
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "shipshape/probe:v2");
        assert_eq!(containers[0]["ports"][0]["containerPort"], 8080);
        assert_eq!(containers[1]["image"], "side:v1");
    }

    #[test]
    fn null_deletes_and_directives_work() {
        let d = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
                       "spec": {"containers": [{"name": "x"}, {"name": "y"}], "unschedulable": true}});
        let out = smp(
            d,
            json!({"metadata": {"labels": {"a": null}},
                   "spec": {"containers": [{"name": "x", "$patch": "delete"}], "unschedulable": null}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(out["spec"]["containers"], json!([{"name": "y"}]));
        assert!(out["spec"].get("unschedulable").is_none());
    }

    #[test]
    fn lists_without_merge_key_are_replaced() {
        let d = json!({"spec": {"args": ["a", "b"]}});
        assert_eq!(
            smp(d, json!({"spec": {"args": ["c"]}}))["spec"]["args"],
            json!(["c"])
        );
    }

    #[test]
    fn merge_and_json_patches() {
        let d = json!({"spec": {"replicas": 3}});
        let out = apply(PatchKind::Merge, &d, br#"{"spec":{"replicas":5}}"#).expect("merge");
        assert_eq!(out["spec"]["replicas"], 5);
        let out = apply(
            PatchKind::Json,
            &d,
            br#"[{"op":"replace","path":"/spec/replicas","value":1}]"#,
        )
        .expect("json patch");
        assert_eq!(out["spec"]["replicas"], 1);
        assert!(apply(PatchKind::Json, &d, br#"[{"op":"remove","path":"/nope"}]"#).is_err());
        assert!(apply(PatchKind::Merge, &d, b"not json").is_err());
    }
}
