//! The fields Kubernetes fills in when a client leaves them out, so that what `kubectl get
//! -o yaml` shows (and what controllers read) matches a real cluster.

use base64::prelude::{BASE64_STANDARD, Engine as _};
use serde_json::{Map, Value, json};

use super::meta::ensure_object;

/// Sets `map[key] = value` unless the key is already present (and not null).
fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_owned(), value);
    }
}

fn child<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    ensure_object(map.entry(key).or_insert_with(|| json!({})))
}

/// Fills in the defaults of an object of `kind`.
pub fn apply(kind: &str, obj: &mut Value) {
    let root = ensure_object(obj);
    match kind {
        "Pod" => pod_spec(child(root, "spec")),
        "Deployment" => {
            let spec = child(root, "spec");
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = child(spec, "strategy");
            default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let ru = child(strategy, "rollingUpdate");
                default(ru, "maxSurge", json!("25%"));
                default(ru, "maxUnavailable", json!("25%"));
            }
            pod_spec(child(child(spec, "template"), "spec"));
        }
        "Job" => job(root),
        "CronJob" => {
            let spec = child(root, "spec");
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            let job = child(child(spec, "jobTemplate"), "spec");
            pod_spec(child(child(job, "template"), "spec"));
        }
        "DaemonSet" => {
            let spec = child(root, "spec");
            default(spec, "revisionHistoryLimit", json!(10));
            let strategy = child(spec, "updateStrategy");
            default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let ru = child(strategy, "rollingUpdate");
                default(ru, "maxUnavailable", json!(1));
                default(ru, "maxSurge", json!(0));
            }
            pod_spec(child(child(spec, "template"), "spec"));
        }
        "StatefulSet" => {
            let spec = child(root, "spec");
            default(spec, "replicas", json!(1));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            default(spec, "revisionHistoryLimit", json!(10));
            let strategy = child(spec, "updateStrategy");
            default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                default(child(strategy, "rollingUpdate"), "partition", json!(0));
            }
            let retention = child(spec, "persistentVolumeClaimRetentionPolicy");
            default(retention, "whenDeleted", json!("Retain"));
            default(retention, "whenScaled", json!("Retain"));
            pod_spec(child(child(spec, "template"), "spec"));
        }
        "ReplicaSet" => {
            let spec = child(root, "spec");
            default(spec, "replicas", json!(1));
            pod_spec(child(child(spec, "template"), "spec"));
        }
        "Service" => {
            let spec = child(root, "spec");
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            let kind = spec.get("type").and_then(Value::as_str).map(str::to_owned);
            let kind = kind.unwrap_or_default();
            if kind != "ExternalName" {
                default(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            if kind == "NodePort" || kind == "LoadBalancer" {
                default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for port in ports {
                    let port = ensure_object(port);
                    default(port, "protocol", json!("TCP"));
                    if let Some(p) = port.get("port").cloned() {
                        default(port, "targetPort", p);
                    }
                }
            }
        }
        "Secret" => {
            // `stringData` is a write-only convenience: its values become `data`, encoded,
            // and win over `data`'s for the same key.
            if let Some(Value::Object(plain)) = root.remove("stringData") {
                let data = child(root, "data");
                for (key, value) in plain {
                    let text = value.as_str().unwrap_or_default();
                    data.insert(key, json!(BASE64_STANDARD.encode(text)));
                }
            }
            default(root, "type", json!("Opaque"));
        }
        "HorizontalPodAutoscaler" => {
            let spec = child(root, "spec");
            default(spec, "minReplicas", json!(1));
            let cpu =
                json!({"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}});
            default(
                spec,
                "metrics",
                json!([{"type": "Resource", "resource": cpu}]),
            );
            // Only a behavior given is filled in; without one, the controller's defaults hold.
            if let Some(Value::Object(behavior)) = spec.get_mut("behavior") {
                let up = json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                    {"type": "Percent", "value": 100, "periodSeconds": 15}]);
                let down = json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]);
                for (direction, window, policies) in [("scaleUp", 0, up), ("scaleDown", 300, down)]
                {
                    let rules = child(behavior, direction);
                    default(rules, "stabilizationWindowSeconds", json!(window));
                    default(rules, "selectPolicy", json!("Max"));
                    default(rules, "policies", policies);
                }
            }
        }
        "Namespace" => {
            let spec = child(root, "spec");
            default(spec, "finalizers", json!(["kubernetes"]));
            default(child(root, "status"), "phase", json!("Active"));
        }
        _ => {}
    }
}

/// A Job's defaults, and the selector Kubernetes generates for it: its pods carry the
/// Job's uid (`batch.kubernetes.io/controller-uid`) and name, and are selected by the uid.
fn job(root: &mut Map<String, Value>) {
    let meta = |field: &str| {
        root.get("metadata")?
            .get(field)?
            .as_str()
            .map(str::to_owned)
    };
    let (uid, name) = (meta("uid"), meta("name").unwrap_or_default());
    let spec = child(root, "spec");
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        default(spec, "completions", json!(1));
    }
    default(spec, "parallelism", json!(1));
    default(spec, "backoffLimit", json!(6));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    if let Some(uid) = uid.filter(|_| spec.get("manualSelector") != Some(&json!(true))) {
        let selector = json!({"matchLabels": {JOB_UID_LABEL: uid}});
        default(spec, "selector", selector);
        let labels = child(child(child(spec, "template"), "metadata"), "labels");
        for (key, value) in [
            (JOB_UID_LABEL, &uid),
            (JOB_NAME_LABEL, &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            default(labels, key, json!(value));
        }
    }
    pod_spec(child(child(spec, "template"), "spec"));
}

/// The label carrying the uid of the Job a pod belongs to.
pub const JOB_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The label carrying the name of the Job a pod belongs to.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// A probe's timing as the agent applies it when left out, and an HTTP probe's scheme.
fn probe_defaults(probe: &mut Map<String, Value>) {
    for (key, value) in [
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ] {
        default(probe, key, json!(value));
    }
    if let Some(get) = probe.get_mut("httpGet").and_then(Value::as_object_mut) {
        default(get, "path", json!("/"));
        default(get, "scheme", json!("HTTP"));
    }
}

fn pod_spec(spec: &mut Map<String, Value>) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers {
                let c = ensure_object(c);
                let latest = c.get("image").and_then(Value::as_str).is_some_and(|i| {
                    i.ends_with(":latest") || !i.rsplit('/').next().unwrap_or(i).contains(':')
                });
                let pull = if latest { "Always" } else { "IfNotPresent" };
                default(c, "imagePullPolicy", json!(pull));
                default(c, "terminationMessagePath", json!("/dev/termination-log"));
                default(c, "terminationMessagePolicy", json!("File"));
                default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        default(ensure_object(p), "protocol", json!("TCP"));
                    }
                }
                for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
                    if let Some(probe) = c.get_mut(kind).and_then(Value::as_object_mut) {
                        probe_defaults(probe);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cron_job_s_pods_and_a_service_s_traffic_get_kubernetes_defaults() {
        let mut cron_job = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec":
            {"template": {"spec": {"restartPolicy": "Never", "containers": [{"image": "a:v1"}]}}}}}});
        apply("CronJob", &mut cron_job);
        let pods = &cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pods["restartPolicy"], "Never", "a given value stays");
        assert_eq!(pods["terminationGracePeriodSeconds"], 30);
        assert_eq!(pods["containers"][0]["imagePullPolicy"], "IfNotPresent");
        let mut service = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        apply("Service", &mut service);
        assert_eq!(service["spec"]["internalTrafficPolicy"], "Cluster");
        assert_eq!(service["spec"]["externalTrafficPolicy"], "Cluster");
        let mut external = json!({"spec": {"type": "ExternalName", "externalName": "a.example"}});
        apply("Service", &mut external);
        assert!(external["spec"].get("internalTrafficPolicy").is_none());
        assert!(external["spec"].get("externalTrafficPolicy").is_none());
    }

    #[test]
    fn probes_get_kubernetes_timing_and_an_http_probe_its_path_and_scheme() {
        let mut pod = json!({"spec": {"containers": [{"name": "web", "image": "web:v1",
            "readinessProbe": {"httpGet": {"port": 80}, "periodSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": 80}}}]}});
        apply("Pod", &mut pod);
        let ready = &pod["spec"]["containers"][0]["readinessProbe"];
        assert_eq!(ready["periodSeconds"], 2, "a given value stays");
        assert_eq!(ready["timeoutSeconds"], 1);
        assert_eq!(ready["failureThreshold"], 3);
        assert_eq!(
            ready["httpGet"],
            json!({"port": 80, "path": "/", "scheme": "HTTP"})
        );
        let live = &pod["spec"]["containers"][0]["livenessProbe"];
        assert_eq!(
            (&live["successThreshold"], &live["periodSeconds"]),
            (&json!(1), &json!(10))
        );
        assert_eq!(live["tcpSocket"], json!({"port": 80}));
    }
}
