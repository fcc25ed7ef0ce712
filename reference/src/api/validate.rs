//! Is this a well-formed object of its kind?
//!
//! Two checks, in Kubernetes' order:
//!
//! 1. **Decoding.** The JSON is decoded into the `k8s-openapi` type for its kind. A wrong
//!    type (`"replicas": "three"`) is a decoding error (400). Encoding the typed value again
//!    and comparing shows which fields the type does not know: with `fieldValidation=Strict`
//!    (what kubectl sends) they are an error (400), otherwise they are dropped with a warning.
//!    The re-encoded value is what gets stored, so nothing unknown reaches the store.
//! 2. **Validation.** Names must be DNS names, required fields present, selectors must match
//!    their templates, ports in range. Every problem becomes a cause of one 422 Invalid.

use serde_json::Value;

use super::selector::LabelSelector;
use super::{Resource, meta};

/// One problem with one field, as a `StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, ...
    pub reason: &'static str,
    /// The field's path (`spec.template.spec.containers[0].image`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Why an object was refused.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// The body is not a valid encoding of the kind (wrong types, unknown fields in strict mode).
    #[error("{0}")]
    Decode(String),
    /// The object decoded but breaks the kind's rules.
    #[error("{kind} {name:?} is invalid: {}", .causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect::<Vec<_>>().join(", "))]
    Invalid {
        /// The kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// Every problem found.
        causes: Vec<Cause>,
    },
}

/// How to treat fields the kind does not know (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and warn.
    Warn,
    /// Refuse the request.
    Strict,
}

/// Decodes `body` as the kind of `resource`; returns the normalized object and warnings.
pub fn decode(
    resource: &Resource,
    body: Value,
    fields: FieldValidation,
) -> Result<(Value, Vec<String>), ValidationError> {
    let typed = (resource.typed)(&body).map_err(|e| {
        ValidationError::Decode(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            resource.kind, resource.version, resource.kind
        ))
    })?;
    let mut messages = Vec::new();
    unknown_fields(&body, &typed, "", &mut messages);
    if messages.is_empty() || fields == FieldValidation::Ignore {
        return Ok((typed, Vec::new()));
    }
    match fields {
        FieldValidation::Strict => Err(ValidationError::Decode(format!(
            "strict decoding error: {}",
            messages.join(", ")
        ))),
        _ => Ok((typed, messages)),
    }
}

/// Says `unknown field "{path}"` of each path present (and not null) in `input` but absent
/// from `typed`.
fn unknown_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match t.get(k) {
                    Some(tv) => unknown_fields(v, tv, &p, out),
                    None if v.is_null() => {}
                    None => out.push(format!("unknown field \"{p}\"")),
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t).enumerate() {
                unknown_fields(iv, tv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

// The causes, in Kubernetes' words: clients match on the reason and the field, and people
// read the message, so all three are exactly what a real API server would say.

fn cause(reason: &'static str, field: impl Into<String>, message: impl Into<String>) -> Cause {
    Cause {
        reason,
        field: field.into(),
        message: message.into(),
    }
}

fn required(field: impl Into<String>) -> Cause {
    cause("FieldValueRequired", field, "Required value")
}

fn invalid(field: impl Into<String>, value: impl std::fmt::Display, why: &str) -> Cause {
    let message = format!("Invalid value: \"{value}\": {why}");
    cause("FieldValueInvalid", field, message)
}

/// `supported` is the list as the message shows it, quotes included.
fn not_supported(field: &str, value: &str, supported: &str) -> Cause {
    let message = format!("Unsupported value: \"{value}\": supported values: {supported}");
    cause("FieldValueNotSupported", field, message)
}

/// A port number is 1 to 65535; a missing one reads as 0, so is out of range.
fn check_port(field: String, port: i64, causes: &mut Vec<Cause>) {
    if !(1..=65535).contains(&port) {
        let why = "must be between 1 and 65535, inclusive";
        causes.push(invalid(field, port, why));
    }
}

/// The integers `names` in `spec` must be at least `least` where they are set: 0 for
/// counts and limits, 1 for durations.
fn check_at_least(obj: &Value, least: i64, names: &[&str], causes: &mut Vec<Cause>) {
    let why = match least {
        0 => "must be greater than or equal to 0".to_owned(),
        _ => format!("must be greater than {}", least - 1),
    };
    for name in names {
        let field = format!("spec.{name}");
        if let Some(n) = meta::path(obj, &field)
            .and_then(Value::as_i64)
            .filter(|n| *n < least)
        {
            causes.push(invalid(field, n, &why));
        }
    }
}

/// Nothing found is a pass; anything found is one 422 that lists it all.
fn verdict(kind: &'static str, name: String, causes: Vec<Cause>) -> Result<(), ValidationError> {
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ValidationError::Invalid { kind, name, causes })
    }
}

/// A DNS-1123 label: at most 63 lower-case alphanumerics or '-', alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const CONFIG_KEY_MSG: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";

/// Checks the kind's rules on a decoded object (with its name already settled).
pub fn validate(resource: &Resource, obj: &Value) -> Result<(), ValidationError> {
    let mut causes = Vec::new();
    let name = meta::name(obj).unwrap_or_default().to_owned();
    if name.is_empty() {
        causes.push(required("metadata.name"));
    } else {
        let (ok, msg) = match resource.kind {
            "Namespace" => (is_dns_label(&name), LABEL_MSG),
            "Service" => (
                is_dns_label(&name) && name.starts_with(|c: char| c.is_ascii_lowercase()),
                DNS1035_MSG,
            ),
            // Roles and their bindings may have names like `system:discovery`.
            "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => (
                !matches!(name.as_str(), "." | "..") && !name.contains(['/', '%']),
                "may not be '.' or '..' and may not contain '/' or '%'",
            ),
            _ => (is_dns_subdomain(&name), SUBDOMAIN_MSG),
        };
        if !ok {
            causes.push(invalid("metadata.name", &name, msg));
        }
    }
    for (key, value) in meta::labels(obj) {
        let label = format!("{key}={value}");
        if LabelSelector::parse(&label).is_err() {
            causes.push(invalid("metadata.labels", label, "invalid label"));
        }
    }
    match resource.kind {
        "Pod" => validate_pod_spec(obj, "spec", &mut causes),
        "Deployment" | "ReplicaSet" => validate_workload(obj, &mut causes),
        "DaemonSet" | "StatefulSet" => {
            validate_workload(obj, &mut causes);
            let policy = obj
                .pointer("/spec/template/spec/restartPolicy")
                .and_then(Value::as_str);
            if let Some(other) = policy.filter(|p| *p != "Always") {
                let field = "spec.template.spec.restartPolicy";
                causes.push(not_supported(field, other, "\"Always\""));
            }
        }
        "Service" => validate_service(obj, &mut causes),
        "ConfigMap" | "Secret" => validate_data(obj, &mut causes),
        "Job" => validate_job(obj, &mut causes),
        "CronJob" => validate_cron_job(obj, &mut causes),
        "HorizontalPodAutoscaler" => validate_autoscaler(obj, &mut causes),
        _ => {}
    }
    verdict(resource.kind, name, causes)
}

/// The pod spec at the dotted `path` in `obj`.
fn validate_pod_spec(obj: &Value, path: &str, causes: &mut Vec<Cause>) {
    let containers = meta::path(obj, &format!("{path}.containers")).and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        causes.push(required(format!("{path}.containers")));
        return;
    };
    let mut names = std::collections::HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let at = format!("{path}.containers[{i}]");
        match c.get("name").and_then(Value::as_str) {
            None | Some("") => causes.push(required(format!("{at}.name"))),
            Some(n) if !is_dns_label(n) => causes.push(invalid(format!("{at}.name"), n, LABEL_MSG)),
            Some(n) if !names.insert(n) => {
                let message = format!("Duplicate value: \"{n}\"");
                causes.push(cause("FieldValueDuplicate", format!("{at}.name"), message));
            }
            Some(_) => {}
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            causes.push(required(format!("{at}.image")));
        }
        for (j, p) in meta::each(c, "/ports").enumerate() {
            let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
            check_port(format!("{at}.ports[{j}].containerPort"), port, causes);
        }
    }
}

fn validate_workload(obj: &Value, causes: &mut Vec<Cause>) {
    check_at_least(obj, 0, &["replicas"], causes);
    let match_labels = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object);
    let has_expressions = meta::each(obj, "/spec/selector/matchExpressions")
        .next()
        .is_some();
    if match_labels.is_none_or(|m| m.is_empty()) && !has_expressions {
        causes.push(required("spec.selector"));
    } else if let Some(ml) = match_labels {
        let template = obj.pointer("/spec/template").unwrap_or(&Value::Null);
        let sel = LabelSelector::from_labels(
            ml.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v))),
        );
        if !sel.matches_object(template) {
            causes.push(invalid(
                "spec.template.metadata.labels",
                serde_json::to_string(&template.pointer("/metadata/labels")).unwrap_or_default(),
                "`selector` does not match template `labels`",
            ));
        }
    }
    validate_pod_spec(obj, "spec.template.spec", causes);
}

fn validate_service(obj: &Value, causes: &mut Vec<Cause>) {
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
        let supported = "\"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"";
        causes.push(not_supported("spec.type", ty, supported));
    }
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let Some(ports) = obj.pointer("/spec/ports").and_then(Value::as_array) else {
        if !headless && ty != "ExternalName" {
            causes.push(required("spec.ports"));
        }
        return;
    };
    for (i, p) in ports.iter().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        check_port(format!("spec.ports[{i}].port"), port, causes);
        // Whether it is in the node port range is the allocator's to say: the range is the
        // control plane's setting.
        if let Some(np) = p["nodePort"].as_i64().filter(|np| *np != 0) {
            check_port(format!("spec.ports[{i}].nodePort"), np, causes);
        }
        if ports.len() > 1 && p["name"].as_str().is_none_or(str::is_empty) {
            causes.push(required(format!("spec.ports[{i}].name")));
        }
    }
}

/// Parses a CronJob's schedule as Kubernetes reads it: five fields (no seconds), or a
/// nickname (`@hourly`, `@daily`...).
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds};
    let parser = CronParser::builder().seconds(Seconds::Disallowed).build();
    parser.parse(schedule).map_err(|e| e.to_string())
}

/// A CronJob: a schedule that parses, read in UTC, a known concurrency policy, and limits
/// that are not negative. Its Job template is checked as a Job when a Job is made of it.
fn validate_cron_job(obj: &Value, causes: &mut Vec<Cause>) {
    let text = |name: &str| obj.get("spec").and_then(|s| s.get(name)?.as_str());
    let schedule = text("schedule").unwrap_or_default();
    if let Err(why) = parse_schedule(schedule) {
        causes.push(invalid("spec.schedule", schedule, &why));
    }
    if let Some(zone) = text("timeZone").filter(|z| !["UTC", "Etc/UTC"].contains(z)) {
        let why = "shipshape reads schedules in UTC only";
        causes.push(invalid("spec.timeZone", zone, why));
    }
    let policy = text("concurrencyPolicy");
    if let Some(policy) = policy.filter(|p| !["Allow", "Forbid", "Replace"].contains(p)) {
        let why = "supported values: \"Allow\", \"Forbid\", \"Replace\"";
        causes.push(invalid("spec.concurrencyPolicy", policy, why));
    }
    let limits = [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ];
    check_at_least(obj, 0, &limits, causes);
    check_job_pods(obj, "spec.jobTemplate.spec.template.spec", causes);
}

/// A HorizontalPodAutoscaler: a target named, replicas from 1 with the minimum no more
/// than the maximum, metrics of a known type with a positive utilization, and behavior
/// within Kubernetes' bounds.
fn validate_autoscaler(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    for field in ["kind", "name"] {
        if spec["scaleTargetRef"][field]
            .as_str()
            .is_none_or(str::is_empty)
        {
            causes.push(required(format!("spec.scaleTargetRef.{field}")));
        }
    }
    check_at_least(obj, 1, &["minReplicas", "maxReplicas"], causes);
    let (min, max) = (
        spec["minReplicas"].as_i64().unwrap_or(1),
        spec["maxReplicas"].as_i64(),
    );
    if let Some(max) = max.filter(|max| *max < min) {
        causes.push(invalid(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    for (i, metric) in spec["metrics"].as_array().into_iter().flatten().enumerate() {
        let kind = metric["type"].as_str().unwrap_or_default();
        let known = [
            "Resource",
            "Pods",
            "Object",
            "External",
            "ContainerResource",
        ];
        if !known.contains(&kind) {
            let supported =
                "\"ContainerResource\", \"External\", \"Object\", \"Pods\", \"Resource\"";
            causes.push(not_supported(
                &format!("spec.metrics[{i}].type"),
                kind,
                supported,
            ));
        }
        let utilization = &metric["resource"]["target"]["averageUtilization"];
        if utilization.as_i64().is_some_and(|u| u <= 0) {
            let field = format!("spec.metrics[{i}].resource.target.averageUtilization");
            causes.push(invalid(field, utilization, "must be greater than 0"));
        }
        if kind == "Pods" {
            let pods = &metric["pods"];
            if pods["metric"]["name"].as_str().is_none_or(str::is_empty) {
                causes.push(required(format!("spec.metrics[{i}].pods.metric.name")));
            }
            let value = &pods["target"]["averageValue"];
            let amount = value.as_str().map(super::quantity::parse_cpu);
            if !amount.is_some_and(|a| a.is_ok_and(|a| a > 0)) {
                let field = format!("spec.metrics[{i}].pods.target.averageValue");
                causes.push(invalid(field, value, "must be a positive quantity"));
            }
        }
    }
    for direction in ["scaleUp", "scaleDown"] {
        let rules = &spec["behavior"][direction];
        let window = &rules["stabilizationWindowSeconds"];
        if window.as_i64().is_some_and(|w| !(0..=3600).contains(&w)) {
            let field = format!("spec.behavior.{direction}.stabilizationWindowSeconds");
            causes.push(invalid(field, window, "must be between 0 and 3600"));
        }
        for (i, policy) in rules["policies"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let field = format!("spec.behavior.{direction}.policies[{i}]");
            if policy["value"].as_i64().is_some_and(|v| v <= 0) {
                causes.push(invalid(
                    format!("{field}.value"),
                    &policy["value"],
                    "must be greater than zero",
                ));
            }
            if policy["periodSeconds"]
                .as_i64()
                .is_some_and(|p| !(1..=1800).contains(&p))
            {
                let why = "must be greater than zero and less than or equal to 1800";
                causes.push(invalid(
                    format!("{field}.periodSeconds"),
                    &policy["periodSeconds"],
                    why,
                ));
            }
        }
    }
}

/// A Job: its pods must end (restart policy `OnFailure` or `Never`), its counts be
/// non-negative, and its selector be the one the server generates unless `manualSelector`.
fn validate_job(obj: &Value, causes: &mut Vec<Cause>) {
    let field = |name: &str| obj.get("spec").and_then(|s| s.get(name));
    let counts = [
        "parallelism",
        "completions",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ];
    check_at_least(obj, 0, &counts, causes);
    check_at_least(obj, 1, &["activeDeadlineSeconds"], causes);
    // Without `manualSelector`, the selector is the one made of the Job's own uid
    // ([`super::defaults`]): a new Job's uid is fresh, so a client cannot have written it.
    let generated = meta::meta_str(obj, "uid")
        .map(|uid| serde_json::json!({"matchLabels": {crate::api::defaults::JOB_UID_LABEL: uid}}));
    if let Some(selector) = field("selector")
        && field("manualSelector") != Some(&Value::Bool(true))
        && Some(selector) != generated.as_ref()
    {
        let why = "`selector` will be auto-generated";
        causes.push(invalid("spec.selector", selector, why));
    }
    let mode = field("completionMode").and_then(Value::as_str);
    if let Some(mode) = mode.filter(|m| *m != "NonIndexed") {
        let supported = "\"NonIndexed\" (shipshape does not run Indexed jobs)";
        causes.push(not_supported("spec.completionMode", mode, supported));
    }
    check_job_pods(obj, "spec.template.spec", causes);
}

/// The pod spec of a Job, or of the Jobs a CronJob starts, at the dotted `path` in `obj`:
/// its pods must end.
fn check_job_pods(obj: &Value, path: &str, causes: &mut Vec<Cause>) {
    let policy = format!("{path}.restartPolicy");
    match meta::path(obj, &policy).and_then(Value::as_str) {
        Some("OnFailure" | "Never") => {}
        None => causes.push(cause(
            "FieldValueRequired",
            policy,
            "Required value: valid values: \"OnFailure\", \"Never\"",
        )),
        Some(other) => causes.push(not_supported(&policy, other, "\"OnFailure\", \"Never\"")),
    }
    validate_pod_spec(obj, path, causes);
}

/// The keys of a ConfigMap's or Secret's data: each a file name a volume can hold, no key
/// twice, and at most 1 MiB in all (a value must fit in one store write).
fn validate_data(obj: &Value, causes: &mut Vec<Cause>) {
    const MAX_SIZE: usize = 1024 * 1024;
    let mut seen = std::collections::BTreeSet::new();
    let mut size = 0;
    for field in ["data", "binaryData", "stringData"] {
        let Some(entries) = obj.get(field).and_then(Value::as_object) else {
            continue;
        };
        for (key, value) in entries {
            let path = format!("{field}[{key}]");
            let well_formed = !key.is_empty()
                && key.len() <= 253
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                && key != "."
                && !key.starts_with("..");
            if !well_formed {
                causes.push(invalid(&path, key, CONFIG_KEY_MSG));
            }
            // A Secret's stringData is folded into its data: the same key twice is one.
            if field != "stringData" && !seen.insert(key.as_str()) {
                causes.push(invalid(path, key, "duplicate of key present in data"));
            }
            size += key.len() + value.as_str().map_or(0, str::len);
        }
    }
    if size > MAX_SIZE {
        let message = format!("Too long: must have at most {MAX_SIZE} bytes");
        causes.push(cause("FieldValueTooLong", "data", message));
    }
}

/// The rules an update must keep on top of [`validate`]'s: what `immutable: true` freezes.
pub fn validate_update(
    resource: &Resource,
    old: &Value,
    new: &Value,
) -> Result<(), ValidationError> {
    let mut causes = Vec::new();
    if matches!(resource.kind, "ConfigMap" | "Secret")
        && old.get("immutable") == Some(&Value::Bool(true))
    {
        // `immutable` itself among them: once true, it stays true.
        for field in ["data", "binaryData", "type", "immutable"] {
            if old.get(field) != new.get(field) {
                let message = "Forbidden: field is immutable when `immutable` is set";
                causes.push(cause("FieldValueForbidden", field, message));
            }
        }
    }
    let immutable: &[&str] = match resource.kind {
        "Job" => &["selector", "template", "completions", "completionMode"],
        "DaemonSet" | "Deployment" | "ReplicaSet" => &["selector"],
        "StatefulSet" => &["selector", "serviceName", "podManagementPolicy"],
        _ => &[],
    };
    for field in immutable.iter().map(|f| format!("spec.{f}")) {
        if meta::path(old, &field) != meta::path(new, &field) {
            let message = "Invalid value: field is immutable";
            causes.push(cause("FieldValueInvalid", field, message));
        }
    }
    let name = meta::name(new).unwrap_or_default().to_owned();
    verdict(resource.kind, name, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_five_fields_or_a_nickname() {
        assert!(parse_schedule("*/5 * * * *").is_ok());
        assert!(parse_schedule("@hourly").is_ok());
        assert!(parse_schedule("0 */5 * * * *").is_err(), "no seconds");
        assert!(parse_schedule("every five minutes").is_err());
        assert!(parse_schedule("61 * * * *").is_err());
    }
    use crate::api::find;
    use serde_json::json;

    fn deployments() -> &'static Resource {
        find("apps", "v1", "deployments").expect("served")
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "probe", "image": "shipshape/probe:v1"}]}
                }
            }
        })
    }

    #[test]
    fn a_cron_job_must_start_jobs_whose_pods_end() {
        let cron_jobs = find("batch", "v1", "cronjobs").expect("served");
        let cron_job = |pod_spec: Value| {
            json!({"metadata": {"name": "tick"}, "spec": {"schedule": "* * * * *",
                "jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}})
        };
        let container = json!([{"name": "work", "image": "shipshape/probe:v1"}]);
        let ok = cron_job(json!({"restartPolicy": "OnFailure", "containers": container}));
        validate(cron_jobs, &ok).expect("valid");
        let field = "spec.jobTemplate.spec.template.spec.restartPolicy";
        for (pod_spec, reason) in [
            (json!({"containers": container}), "FieldValueRequired"),
            (
                json!({"restartPolicy": "Always", "containers": container}),
                "FieldValueNotSupported",
            ),
        ] {
            let Err(ValidationError::Invalid { causes, .. }) =
                validate(cron_jobs, &cron_job(pod_spec))
            else {
                panic!("a cron job whose pods never end was accepted");
            };
            assert_eq!(
                (causes[0].reason, causes[0].field.as_str()),
                (reason, field)
            );
        }
    }

    #[test]
    fn a_good_deployment_passes_unchanged() {
        let (obj, warnings) =
            decode(deployments(), deployment(), FieldValidation::Strict).expect("decodes");
        assert!(warnings.is_empty());
        assert_eq!(obj, deployment());
        validate(deployments(), &obj).expect("valid");
    }

    #[test]
    fn unknown_fields_fail_strict_and_are_dropped_otherwise() {
        let mut d = deployment();
        d["spec"]["replicaz"] = json!(3);
        let err = decode(deployments(), d.clone(), FieldValidation::Strict).expect_err("strict");
        assert!(
            err.to_string().contains("unknown field \"spec.replicaz\""),
            "{err}"
        );
        let (obj, warnings) = decode(deployments(), d, FieldValidation::Warn).expect("warn");
        assert_eq!(warnings.len(), 1);
        assert!(obj["spec"].get("replicaz").is_none());
    }

    #[test]
    fn wrong_types_are_decode_errors() {
        let mut d = deployment();
        d["spec"]["replicas"] = json!("three");
        assert!(matches!(
            decode(deployments(), d, FieldValidation::Warn),
            Err(ValidationError::Decode(_))
        ));
    }

    #[test]
    fn invalid_names_and_missing_fields_are_causes() {
        let mut d = deployment();
        d["metadata"]["name"] = json!("Web_1");
        d["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .expect("object")
            .remove("image");
        d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        let Err(ValidationError::Invalid { causes, .. }) = validate(deployments(), &d) else {
            panic!("expected invalid");
        };
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.template.metadata.labels",
                "spec.template.spec.containers[0].image"
            ]
        );
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_subdomain("web.v1-2"));
        assert!(!is_dns_subdomain("Web"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
