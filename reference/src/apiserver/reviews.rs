//! "Who am I, and what may I do?": `authentication.k8s.io/v1` SelfSubjectReview (`kubectl
//! auth whoami`), and `authorization.k8s.io/v1` SelfSubjectAccessReview (`kubectl auth
//! can-i VERB RESOURCE`) and SelfSubjectRulesReview (`kubectl auth can-i --list`).
//!
//! A review is created and answered, never stored. The answer is the truth about this
//! cluster: it knows one identity, the bearer token of its kubeconfig, and that identity
//! is the cluster's administrator — user `admin` in group `system:masters`, as the
//! `admin.conf` of a kubeadm cluster — who may do everything. Anyone else is refused
//! before any review (401). When ServiceAccount tokens and RBAC come, the same reviews
//! will answer from the authorizer.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SelfSubjectRulesReview};
use serde_json::{Value, json};

use super::status::ApiError;
use crate::api::Resource;
use crate::api::validate::{Cause, ValidationError};

/// The groups served, each at `v1`.
pub const GROUPS: [(&str, &str); 2] = [
    ("authentication.k8s.io", "v1"),
    ("authorization.k8s.io", "v1"),
];

static REVIEWS: [Resource; 3] = [
    Resource::of::<SelfSubjectReview>("selfsubjectreview"),
    Resource::of::<SelfSubjectAccessReview>("selfsubjectaccessreview"),
    Resource::of::<SelfSubjectRulesReview>("selfsubjectrulesreview"),
];

/// `GET /apis/{group}/v1` of a review group.
pub fn resources(group: &str) -> Value {
    let resources: Vec<Value> = REVIEWS
        .iter()
        .filter(|r| r.group == group)
        .map(|r| {
            json!({"name": r.plural, "singularName": r.singular, "namespaced": false,
                   "kind": r.kind, "verbs": ["create"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/v1"),
           "resources": resources})
}

/// Answers `POST /apis/{group}/v1/{plural}` of `review`: the review, with its status.
pub fn answer(group: &str, plural: &str, review: &Value) -> Result<Value, ApiError> {
    let r = REVIEWS
        .iter()
        .find(|r| r.group == group && r.plural == plural)
        .ok_or(ApiError::NoRoute)?;
    let decode = |e| ApiError::Invalid(ValidationError::Decode(e), r);
    let mut review = (r.typed)(review).map_err(decode)?;
    let status = match r.kind {
        "SelfSubjectReview" => json!({"userInfo": {
            "username": "admin",
            "groups": ["system:masters", "system:authenticated"],
        }}),
        "SelfSubjectAccessReview" => {
            let spec = &review["spec"];
            let asked = [&spec["resourceAttributes"], &spec["nonResourceAttributes"]];
            if asked.iter().filter(|a| a.is_object()).count() != 1 {
                let message = "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified";
                let cause = Cause {
                    reason: "FieldValueInvalid",
                    field: "spec.resourceAttributes".into(),
                    message: message.into(),
                };
                let (kind, name) = (r.kind, String::new());
                let causes = vec![cause];
                return Err(ApiError::Invalid(
                    ValidationError::Invalid { kind, name, causes },
                    r,
                ));
            }
            json!({"allowed": true, "reason": "the cluster's administrator (system:masters) may do everything"})
        }
        _ => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }),
    };
    review["apiVersion"] = json!(format!("{group}/v1"));
    review["kind"] = json!(r.kind);
    review["status"] = status;
    Ok(review)
}
