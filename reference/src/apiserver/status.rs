//! Errors as the Kubernetes API reports them: a `Status` object with a reason and a code.
//!
//! Every way a request can fail ends as an [`ApiError`]; [`ApiError::into_response`] turns
//! it into the JSON `Status` clients (kubectl, kube-rs) parse. Client mistakes are 4xx with
//! a reason that says which; only a failing disk or store is a 5xx.

use http::StatusCode;
use serde_json::{Value, json};

use crate::api::Resource;
use crate::api::validate::{Cause, ValidationError};
use crate::store::StoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad JSON, bad selector, mismatched kind or namespace.
    #[error("{0}")]
    BadRequest(String),
    /// No valid bearer token.
    #[error("Unauthorized")]
    Unauthorized,
    /// The request is understood but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// The object does not exist.
    #[error("{} \"{name}\" not found", qualified(.resource))]
    NotFound {
        /// The resource.
        resource: &'static Resource,
        /// The object's name.
        name: String,
    },
    /// No such path or resource.
    #[error("the server could not find the requested resource")]
    NoRoute,
    /// The object already exists.
    #[error("{} \"{name}\" already exists", qualified(.resource))]
    AlreadyExists {
        /// The resource.
        resource: &'static Resource,
        /// The object's name.
        name: String,
    },
    /// A precondition (resourceVersion) failed.
    #[error("Operation cannot be fulfilled on {} \"{name}\": {message}", qualified(.resource))]
    Conflict {
        /// The resource.
        resource: &'static Resource,
        /// The object's name.
        name: String,
        /// What conflicted.
        message: String,
    },
    /// A server-side apply would change fields other managers own
    /// ([`super::apply`]): each cause names one and its owner.
    #[error("Apply failed with {} conflict{}: {}", .0.len(), if .0.len() == 1 { "" } else { "s" },
        .0.iter().map(|c| format!("{}: {}", c.message, c.field)).collect::<Vec<_>>().join("; "))]
    ApplyConflict(Vec<Cause>),
    /// The object breaks its kind's rules.
    #[error("{0}")]
    Invalid(ValidationError, &'static Resource),
    /// The verb is not supported on this path.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// The body's content type is not supported here.
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(String),
    /// The body is larger than the server accepts.
    #[error("the request body is larger than the {0} bytes allowed")]
    TooLarge(usize),
    /// The requested revision is no longer retained.
    #[error("{0}")]
    Gone(String),
    /// The control plane cannot serve this now (no leader, stopping).
    #[error("{0}")]
    Unavailable(String),
    /// A write was handed to the store but its fate is not known: leadership changed
    /// before it committed. It may still take effect; the client must read before it
    /// repeats it. Kubernetes answers an etcd timeout the same way.
    #[error("{0}")]
    Timeout(String),
    /// The server failed; not the client's doing.
    #[error("{0}")]
    Internal(String),
}

/// `deployments.apps`, or `pods` for the core group.
fn qualified(r: &Resource) -> String {
    if r.group.is_empty() {
        r.plural.to_owned()
    } else {
        format!("{}.{}", r.plural, r.group)
    }
}

impl ApiError {
    /// A 404: `name` of `resource` does not exist.
    pub fn not_found(resource: &'static Resource, name: &str) -> ApiError {
        let name = name.to_owned();
        ApiError::NotFound { resource, name }
    }

    /// A 422: field `field` of `name`, a `kind` served as `r`, is invalid as `message` says.
    pub fn invalid_field(
        r: &'static Resource,
        kind: &'static str,
        name: &str,
        field: &str,
        message: String,
    ) -> ApiError {
        let (name, field) = (name.to_owned(), field.to_owned());
        let causes = vec![Cause {
            reason: "FieldValueInvalid",
            field,
            message,
        }];
        ApiError::Invalid(ValidationError::Invalid { kind, name, causes }, r)
    }

    /// The HTTP code.
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict(_) => StatusCode::CONFLICT,
            ApiError::Invalid(ValidationError::Decode(_), _) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(..) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict(_) => "Conflict",
            ApiError::Invalid(ValidationError::Decode(_), _) => "BadRequest",
            ApiError::Invalid(..) => "Invalid",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::TooLarge(_) => "RequestEntityTooLarge",
            ApiError::Gone(_) => "Expired",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::Timeout(_) => "Timeout",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let details = match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. } => Some(json!({
                "name": name, "group": resource.group, "kind": resource.plural,
            })),
            ApiError::ApplyConflict(causes) => Some(json!({
                "causes": causes.iter().map(cause_json).collect::<Vec<_>>(),
            })),
            ApiError::Invalid(ValidationError::Invalid { name, causes, .. }, resource) => {
                Some(json!({
                    "name": name, "group": resource.group, "kind": resource.kind,
                    "causes": causes.iter().map(cause_json).collect::<Vec<_>>(),
                }))
            }
            _ => None,
        };
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }
}

fn cause_json(c: &Cause) -> Value {
    json!({"reason": c.reason, "message": c.message, "field": c.field})
}

/// Maps a store failure on `name` of `resource` to the API's words for it.
pub fn from_store(e: StoreError, resource: &'static Resource, name: &str) -> ApiError {
    let name = name.to_owned();
    match e {
        StoreError::AlreadyExists { .. } => ApiError::AlreadyExists { resource, name },
        StoreError::NotFound { .. } => ApiError::NotFound { resource, name },
        StoreError::Conflict { .. } => ApiError::Conflict {
            resource,
            name,
            message: "the object has been modified; please apply your changes to the latest version and try again".into(),
        },
        StoreError::FutureRevision { requested, current } => ApiError::Timeout(format!(
            "Too large resource version: {requested}, current: {current}"
        )),
        StoreError::Compacted { requested, oldest } => ApiError::Gone(format!(
            "too old resource version: {requested} ({oldest})"
        )),
        StoreError::Dropped | StoreError::Interrupted(_) => ApiError::Timeout(format!(
            "Timeout: request did not complete; the write may still take effect: {e}"
        )),
        StoreError::NotLeader { .. } | StoreError::Stopped | StoreError::Unavailable(_) => {
            ApiError::Unavailable(format!("the store cannot take this request now: {e}"))
        }
        StoreError::DiskFailed(why) => ApiError::Unavailable(why),
        other => ApiError::Internal(format!("storage failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write whose fate is unknown must not read as "not done": a client that takes a
    /// 503 for a refusal and repeats a create sees "already exists" for its own write.
    #[test]
    fn a_dropped_write_is_a_timeout_and_a_refused_one_is_unavailable() {
        let pods = &crate::api::RESOURCES[0];
        let dropped = from_store(StoreError::Dropped, pods, "web-1");
        assert_eq!(dropped.code(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(dropped.status()["reason"], "Timeout");
        assert!(
            dropped.to_string().contains("may still take effect"),
            "{dropped}"
        );
        let refused = from_store(StoreError::NotLeader { leader: None }, pods, "web-1");
        assert_eq!(refused.code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.status()["reason"], "ServiceUnavailable");
    }
}
