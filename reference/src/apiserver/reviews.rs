//! "Who am I, and what may I do?": `authentication.k8s.io/v1` SelfSubjectReview (`kubectl
//! auth whoami`), and `authorization.k8s.io/v1` SelfSubjectAccessReview (`kubectl auth
//! can-i VERB RESOURCE`) and SelfSubjectRulesReview (`kubectl auth can-i --list`).
//!
//! A review is created and answered, never stored. The answers come from the same
//! authentication and authorizer every request goes through ([`super::access`]): the
//! caller's user and groups, whether RBAC allows the asked verb on the asked resource or
//! path, and the rules that apply to the caller in a namespace.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SelfSubjectRulesReview};
use serde_json::{Value, json};

use super::Shared;
use super::access::{self, Attributes, Identity};
use super::status::ApiError;
use crate::api::Resource;
use crate::api::validate::ValidationError;

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
pub fn answer(
    shared: &Shared,
    who: &Identity,
    group: &str,
    plural: &str,
    review: &Value,
) -> Result<Value, ApiError> {
    let r = REVIEWS
        .iter()
        .find(|r| r.group == group && r.plural == plural)
        .ok_or(ApiError::NoRoute)?;
    let decode = |e| ApiError::Invalid(ValidationError::Decode(e), r);
    let mut review = (r.typed)(review).map_err(decode)?;
    let status = match r.kind {
        "SelfSubjectReview" => json!({"userInfo": {"username": who.user, "groups": who.groups}}),
        "SelfSubjectAccessReview" => {
            let spec = &review["spec"];
            let asked = [&spec["resourceAttributes"], &spec["nonResourceAttributes"]];
            if asked.iter().filter(|a| a.is_object()).count() != 1 {
                let message = "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified";
                let field = "spec.resourceAttributes";
                return Err(ApiError::invalid_field(
                    r,
                    r.kind,
                    "",
                    field,
                    message.into(),
                ));
            }
            let text = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_owned();
            let attrs = match asked {
                [res, _] if res.is_object() => Attributes {
                    verb: text(res, "verb"),
                    group: text(res, "group"),
                    resource: text(res, "resource"),
                    subresource: text(res, "subresource"),
                    namespace: Some(text(res, "namespace")).filter(|ns| !ns.is_empty()),
                    name: Some(text(res, "name")).filter(|n| !n.is_empty()),
                    path: None,
                },
                [_, path] => Attributes {
                    verb: text(path, "verb"),
                    path: Some(text(path, "path")),
                    ..Default::default()
                },
            };
            match access::authorize(shared, who, &attrs) {
                Ok(()) => json!({"allowed": true, "reason": "allowed by RBAC"}),
                // As Kubernetes' RBAC, which gives no reason for a refusal.
                Err(_) => json!({"allowed": false}),
            }
        }
        _ => {
            let namespace = review["spec"]["namespace"]
                .as_str()
                .filter(|ns| !ns.is_empty());
            let rules = access::rules(shared, who, namespace);
            let (paths, resources): (Vec<_>, Vec<_>) = rules
                .into_iter()
                .partition(|r| r.non_resource_urls.is_some());
            let resources: Vec<Value> = resources
                .into_iter()
                .map(|r| {
                    json!({
                "verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources,
                "resourceNames": r.resource_names})
                })
                .collect();
            let paths: Vec<Value> = (paths.into_iter())
                .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
                .collect();
            json!({"resourceRules": resources, "nonResourceRules": paths, "incomplete": false})
        }
    };
    review["apiVersion"] = json!(format!("{group}/v1"));
    review["kind"] = json!(r.kind);
    review["status"] = status;
    Ok(review)
}
