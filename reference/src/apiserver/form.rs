//! # The form a client reads objects in
//!
//! A client says in its `Accept` header how it wants objects back. Most want them whole.
//! kubectl asks for Tables (`as=Table;g=meta.k8s.io;v=v1`, see [`super::table`]): rows and
//! columns it prints as they come. A controller that follows only names, labels, owners and
//! deletion — the garbage collector — asks for metadata alone
//! (`as=PartialObjectMetadata`, or `as=PartialObjectMetadataList` for a list) and reads and
//! keeps a fraction of the bytes: a pod's metadata is a few hundred bytes of its several
//! kilobytes. The first media type in the header decides, as in Kubernetes.

use http::{HeaderMap, header};
use serde_json::{Value, json};

use super::table;
use crate::api::Resource;

/// How objects are written back to one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    /// As stored.
    Whole,
    /// As a Table of rows for kubectl.
    Table,
    /// As `PartialObjectMetadata`: kind, apiVersion and metadata only.
    Metadata,
}

impl Form {
    /// The form the request's `Accept` header asks for.
    pub(super) fn of(headers: &HeaderMap) -> Form {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let first = accept.split(',').next().unwrap_or_default();
        let wants = |what: &str| {
            first
                .split(';')
                .skip(1)
                .any(|parameter| parameter.trim() == format!("as={what}"))
        };
        if wants("Table") {
            Form::Table
        } else if wants("PartialObjectMetadata") || wants("PartialObjectMetadataList") {
            Form::Metadata
        } else {
            Form::Whole
        }
    }

    /// One object in this form.
    pub(super) fn object(self, r: &Resource, obj: Value) -> Value {
        match self {
            Form::Whole => obj,
            Form::Table => {
                let rv = obj.pointer("/metadata/resourceVersion");
                let metadata = rv.map_or_else(|| json!({}), |rv| json!({"resourceVersion": rv}));
                table::table(r, std::slice::from_ref(&obj), metadata)
            }
            // A Status (what a delete may answer) is not an object with metadata to cut.
            Form::Metadata if obj.get("kind").and_then(Value::as_str) == Some("Status") => obj,
            Form::Metadata => partial(&obj),
        }
    }

    /// The kind and apiVersion of a list of objects in this form (Tables are built whole
    /// by [`table::table`]).
    pub(super) fn list_type(self, r: &Resource) -> (String, String) {
        match self {
            Form::Metadata => ("PartialObjectMetadataList".into(), META_V1.into()),
            Form::Whole | Form::Table => (r.list_kind(), r.api_version()),
        }
    }
}

const META_V1: &str = "meta.k8s.io/v1";

/// An object's metadata as a `PartialObjectMetadata`.
pub(super) fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": META_V1,
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(accept: &str) -> Form {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, accept.parse().expect("a header value"));
        Form::of(&headers)
    }

    #[test]
    fn the_first_media_type_decides() {
        assert_eq!(accepting("application/json"), Form::Whole);
        assert_eq!(
            accepting("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
            Form::Table
        );
        assert_eq!(
            accepting("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
            Form::Metadata
        );
        assert_eq!(
            accepting(
                "application/json, application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
            ),
            Form::Whole
        );
        assert_eq!(accepting("application/json;as=Tablet"), Form::Whole);
        assert_eq!(Form::of(&HeaderMap::new()), Form::Whole);
    }

    #[test]
    fn metadata_alone_keeps_only_the_metadata() {
        let pod = json!({"kind": "Pod", "apiVersion": "v1",
                         "metadata": {"name": "web", "labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "probe"}]}});
        assert_eq!(
            partial(&pod),
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": {"name": "web", "labels": {"app": "web"}}})
        );
    }
}
