use std::collections::BTreeMap;

use super::*;

use k8s_pb::api::apps::v1 as appsv1;
use k8s_pb::api::core::v1 as corev1;
use k8s_pb::api::policy::v1 as policyv1;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as metav1;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;

use k8s_pb::apimachinery::pkg::runtime::TypeMeta;
use serde_json::json;

// -- helpers -------------------------------------------------------------

/// Wraps `object` in a real envelope, the way client-go does.
fn envelope(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    envelope_raw(api_version, kind, object.encode_to_vec())
}

fn envelope_raw(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s(api_version),
            kind: s(kind),
        }),
        raw: Some(raw),
        content_encoding: s(""),
        content_type: s(""),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn s(value: &str) -> Option<String> {
    Some(value.to_owned())
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity { string: s(v) }))
        .collect()
}

fn int(value: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(value),
        str_val: s(""),
    })
}

fn string(value: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: s(value),
    })
}

fn at_seconds(seconds: i64) -> Option<metav1::Time> {
    Some(metav1::Time {
        seconds: Some(seconds),
        nanos: Some(0),
    })
}

/// ObjectMeta as Go's protobuf encoder writes it: every non-pointer field
/// present with its zero value, the zero creationTimestamp as an empty
/// message.
fn go_meta(name: &str, labels: &[(&str, &str)]) -> metav1::ObjectMeta {
    metav1::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(""),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(metav1::Time::default()),
        labels: map(labels),
        ..Default::default()
    }
}

fn decoded(body: &[u8]) -> Value {
    match decode(body) {
        Ok(value) => value,
        Err(err) => panic!("decode failed: {err}"),
    }
}

fn decode_error(body: &[u8]) -> ProtobufError {
    match decode(body) {
        Ok(value) => panic!("expected an error, decoded {value}"),
        Err(err) => err,
    }
}

// -- bodies captured from kubectl 1.32 ----------------------------------

// Captured with a throwaway HTTP listener from
//   kubectl create deployment web --image=shipshape/probe:v1 --replicas=3
//   kubectl create namespace x
//   kubectl create service nodeport web --tcp=80:8080 --node-port=30080
//   kubectl create service clusterip api --tcp=443:https
const KUBECTL_CREATE_DEPLOYMENT: &[u8] = b"\
    k8s\x00\x0a\x15\x0a\x07apps/v1\x12\x0aDeployment\x12\xb9\x01\x0a\x1f\x0a\x03web\
    \x12\x00\x1a\x00\x22\x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03web\x12\x87\
    \x01\x08\x03\x12\x0c\x0a\x0a\x0a\x03app\x12\x03web\x1am\x0a\x1c\x0a\x00\x12\x00\
    \x1a\x00\x22\x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03web\x12M\x12/\x0a\
    \x05probe\x12\x12shipshape/probe:v1*\x00B\x00j\x00r\x00\x80\x01\x00\x88\x01\x00\
    \x90\x01\x00\xa2\x01\x00\x1a\x002\x00B\x00J\x00R\x00X\x00`\x00h\x00\x82\x01\x00\
    \x8a\x01\x00\x9a\x01\x00\xc2\x01\x00\x22\x02\x0a\x00(\x008\x00\x1a\x0c\x08\x00\
    \x10\x00\x18\x00\x20\x00(\x008\x00\x1a\x00\x22\x00";

const KUBECTL_CREATE_NAMESPACE: &[u8] = b"\
    k8s\x00\x0a\x0f\x0a\x02v1\x12\x09Namespace\x12\x19\x0a\x11\x0a\x01x\x12\x00\x1a\
    \x00\x22\x00*\x002\x008\x00B\x00\x12\x00\x1a\x02\x0a\x00\x1a\x00\x22\x00";

const KUBECTL_CREATE_SERVICE_NODEPORT: &[u8] = b"\
    k8s\x00\x0a\x0d\x0a\x02v1\x12\x07Service\x12j\x0a\x1f\x0a\x03web\x12\x00\x1a\x00\
    \x22\x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03web\x12C\x0a\x1d\x0a\x0780-8\
    080\x12\x03TCP\x18P\x22\x07\x08\x00\x10\x90?\x1a\x00(\x80\xeb\x01\x12\x0a\x0a\
    \x03app\x12\x03web\x1a\x00\x22\x08NodePort:\x00B\x00R\x00Z\x00`\x00h\x00\x1a\x02\
    \x0a\x00\x1a\x00\x22\x00";

const KUBECTL_CREATE_SERVICE_CLUSTERIP: &[u8] = b"\
    k8s\x00\x0a\x0d\x0a\x02v1\x12\x07Service\x12p\x0a\x1f\x0a\x03api\x12\x00\x1a\x00\
    \x22\x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03api\x12I\x0a\x22\x0a\x09443-\
    https\x12\x03TCP\x18\xbb\x03\x22\x0b\x08\x01\x10\x00\x1a\x05https(\x00\x12\x0a\
    \x0a\x03app\x12\x03api\x1a\x00\x22\x09ClusterIP:\x00B\x00R\x00Z\x00`\x00h\x00\
    \x1a\x02\x0a\x00\x1a\x00\x22\x00";

/// What `kubectl create deployment web --image=shipshape/probe:v1
/// --replicas=3 --dry-run=client -o json` prints, minus the
/// `creationTimestamp: null`s and `status: {}`.
fn web_deployment_json() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "probe", "image": "shipshape/probe:v1", "resources": {}}
                    ]
                }
            },
            "strategy": {}
        },
        "status": {}
    })
}

#[test]
fn kubectl_create_deployment_body() {
    assert_eq!(decoded(KUBECTL_CREATE_DEPLOYMENT), web_deployment_json());
}

/// What `kubectl create secret generic s --from-literal=password=hunter2` and
/// `kubectl create configmap c --from-literal=mode=fast` build: Go writes bytes in
/// base64 and leaves out the empty maps.
#[test]
fn secrets_and_config_maps_keep_their_data() {
    let bytes = |pairs: &[(&str, &[u8])]| -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    };
    let secret = corev1::Secret {
        metadata: Some(go_meta("s", &[])),
        immutable: None,
        data: bytes(&[("password", b"hunter2"), ("raw", &[0, 255])]),
        string_data: map(&[("user", "admin")]),
        r#type: s("Opaque"),
    };
    assert_eq!(
        decoded(&envelope("v1", "Secret", &secret)),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
               "data": {"password": "aHVudGVyMg==", "raw": "AP8="},
               "stringData": {"user": "admin"}, "type": "Opaque"})
    );
    let config = corev1::ConfigMap {
        metadata: Some(go_meta("c", &[])),
        immutable: Some(true),
        data: map(&[("mode", "fast")]),
        binary_data: BTreeMap::new(),
    };
    assert_eq!(
        decoded(&envelope("v1", "ConfigMap", &config)),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
               "immutable": true, "data": {"mode": "fast"}})
    );
}

#[test]
fn kubectl_create_namespace_body() {
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "x"},
        "spec": {},
        "status": {}
    });
    assert_eq!(decoded(KUBECTL_CREATE_NAMESPACE), expected);
}

#[test]
fn kubectl_create_service_nodeport_body() {
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "ports": [{
                "name": "80-8080",
                "protocol": "TCP",
                "port": 80,
                "targetPort": 8080,
                "nodePort": 30080
            }],
            "selector": {"app": "web"},
            "type": "NodePort"
        },
        "status": {"loadBalancer": {}}
    });
    assert_eq!(decoded(KUBECTL_CREATE_SERVICE_NODEPORT), expected);
}

#[test]
fn kubectl_create_service_clusterip_body_with_named_target_port() {
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api", "labels": {"app": "api"}},
        "spec": {
            "ports": [{
                "name": "443-https",
                "protocol": "TCP",
                "port": 443,
                "targetPort": "https"
            }],
            "selector": {"app": "api"},
            "type": "ClusterIP"
        },
        "status": {"loadBalancer": {}}
    });
    assert_eq!(decoded(KUBECTL_CREATE_SERVICE_CLUSTERIP), expected);
}

// -- messages built here -------------------------------------------------

#[test]
fn deployment_as_kubectl_create_builds_it() {
    let container = corev1::Container {
        name: s("probe"),
        image: s("shipshape/probe:v1"),
        working_dir: s(""),
        resources: Some(corev1::ResourceRequirements::default()),
        termination_message_path: s(""),
        termination_message_policy: s(""),
        image_pull_policy: s(""),
        stdin: Some(false),
        stdin_once: Some(false),
        tty: Some(false),
        ..Default::default()
    };
    let pod_spec = corev1::PodSpec {
        containers: vec![container],
        restart_policy: s(""),
        dns_policy: s(""),
        service_account_name: s(""),
        node_name: s(""),
        host_network: Some(false),
        host_pid: Some(false),
        host_ipc: Some(false),
        hostname: s(""),
        scheduler_name: s(""),
        ..Default::default()
    };
    let deployment = appsv1::Deployment {
        metadata: Some(go_meta("web", &[("app", "web")])),
        spec: Some(appsv1::DeploymentSpec {
            replicas: Some(3),
            selector: Some(metav1::LabelSelector {
                match_labels: map(&[("app", "web")]),
                match_expressions: vec![],
            }),
            template: Some(corev1::PodTemplateSpec {
                metadata: Some(go_meta("", &[("app", "web")])),
                spec: Some(pod_spec),
            }),
            strategy: Some(appsv1::DeploymentStrategy {
                r#type: s(""),
                rolling_update: None,
            }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(appsv1::DeploymentStatus::default()),
    };
    let body = envelope("apps/v1", "Deployment", &deployment);
    assert_eq!(decoded(&body), web_deployment_json());
}

#[test]
fn deployment_with_strategy_and_expressions() {
    let deployment = appsv1::Deployment {
        metadata: Some(metav1::ObjectMeta {
            name: s("web"),
            namespace: s("prod"),
            ..Default::default()
        }),
        spec: Some(appsv1::DeploymentSpec {
            replicas: Some(0),
            selector: Some(metav1::LabelSelector {
                match_labels: BTreeMap::new(),
                match_expressions: vec![metav1::LabelSelectorRequirement {
                    key: s("tier"),
                    operator: s("In"),
                    values: strings(&["web", "edge"]),
                }],
            }),
            template: None,
            strategy: Some(appsv1::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(appsv1::RollingUpdateDeployment {
                    max_unavailable: int(0),
                    max_surge: string("25%"),
                }),
            }),
            min_ready_seconds: Some(5),
            revision_history_limit: Some(0),
            paused: Some(true),
            progress_deadline_seconds: Some(600),
        }),
        status: None,
    };
    let expected = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {
            "replicas": 0,
            "selector": {
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["web", "edge"]}
                ]
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}
            },
            "minReadySeconds": 5,
            "revisionHistoryLimit": 0,
            "paused": true,
            "progressDeadlineSeconds": 600
        }
    });
    assert_eq!(
        decoded(&envelope("apps/v1", "Deployment", &deployment)),
        expected
    );
}

#[test]
fn replica_set() {
    let replica_set = appsv1::ReplicaSet {
        metadata: Some(metav1::ObjectMeta {
            name: s("web-5d4f"),
            owner_references: vec![metav1::OwnerReference {
                api_version: s("apps/v1"),
                kind: s("Deployment"),
                name: s("web"),
                uid: s("d-1"),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }],
            ..Default::default()
        }),
        spec: Some(appsv1::ReplicaSetSpec {
            replicas: Some(2),
            min_ready_seconds: Some(0),
            selector: Some(metav1::LabelSelector {
                match_labels: map(&[("app", "web"), ("pod-template-hash", "5d4f")]),
                match_expressions: vec![],
            }),
            template: Some(corev1::PodTemplateSpec {
                metadata: None,
                spec: Some(corev1::PodSpec {
                    containers: vec![corev1::Container {
                        name: s("probe"),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
        }),
        status: None,
    };
    let expected = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "web-5d4f",
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "web",
                "uid": "d-1",
                "controller": true,
                "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d4f"}},
            "template": {"spec": {"containers": [{"name": "probe"}]}}
        }
    });
    assert_eq!(
        decoded(&envelope("apps/v1", "ReplicaSet", &replica_set)),
        expected
    );
}

#[test]
fn object_meta_fields() {
    let namespace = corev1::Namespace {
        metadata: Some(metav1::ObjectMeta {
            name: s("x"),
            generate_name: s("x-"),
            uid: s("0b5e"),
            resource_version: s("42"),
            generation: Some(3),
            creation_timestamp: at_seconds(1_700_000_000),
            deletion_timestamp: at_seconds(1_700_000_030),
            deletion_grace_period_seconds: Some(0),
            labels: map(&[("team", "a")]),
            annotations: map(&[("note", "hi")]),
            finalizers: strings(&["shipshape.io/cleanup"]),
            ..Default::default()
        }),
        spec: Some(corev1::NamespaceSpec {
            finalizers: strings(&["kubernetes"]),
        }),
        status: Some(corev1::NamespaceStatus::default()),
    };
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "x",
            "generateName": "x-",
            "uid": "0b5e",
            "resourceVersion": "42",
            "generation": 3,
            "creationTimestamp": "2023-11-14T22:13:20Z",
            "deletionTimestamp": "2023-11-14T22:13:50Z",
            "deletionGracePeriodSeconds": 0,
            "labels": {"team": "a"},
            "annotations": {"note": "hi"},
            "finalizers": ["shipshape.io/cleanup"]
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {}
    });
    assert_eq!(decoded(&envelope("v1", "Namespace", &namespace)), expected);
}

#[test]
fn service_ports_and_target_ports() {
    let port =
        |name: &str, port: i32, target: Option<IntOrString>, node_port: i32| corev1::ServicePort {
            name: s(name),
            protocol: s("TCP"),
            app_protocol: None,
            port: Some(port),
            target_port: target,
            node_port: Some(node_port),
        };
    let service = corev1::Service {
        metadata: Some(metav1::ObjectMeta {
            name: s("web"),
            namespace: s("default"),
            ..Default::default()
        }),
        spec: Some(corev1::ServiceSpec {
            ports: vec![
                port("http", 80, int(8080), 30080),
                port("https", 443, string("https"), 0),
                // Go's encoder writes an unset targetPort as int 0.
                port("metrics", 9090, int(0), 0),
            ],
            selector: map(&[("app", "web")]),
            cluster_ip: s("10.96.0.10"),
            cluster_ips: strings(&["10.96.0.10"]),
            r#type: s("NodePort"),
            session_affinity: s("None"),
            external_traffic_policy: s("Cluster"),
            health_check_node_port: Some(0),
            publish_not_ready_addresses: Some(false),
            ip_families: strings(&["IPv4"]),
            ip_family_policy: s("SingleStack"),
            ..Default::default()
        }),
        status: None,
    };
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080},
                {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "https"},
                {"name": "metrics", "protocol": "TCP", "port": 9090}
            ],
            "selector": {"app": "web"},
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "type": "NodePort",
            "sessionAffinity": "None",
            "externalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack"
        }
    });
    assert_eq!(decoded(&envelope("v1", "Service", &service)), expected);
}

#[test]
fn eviction_with_delete_options() {
    let eviction = policyv1::Eviction {
        metadata: Some(go_meta("p1", &[])),
        delete_options: Some(metav1::DeleteOptions {
            grace_period_seconds: Some(30),
            ..Default::default()
        }),
    };
    let expected = json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "p1"},
        "deleteOptions": {"gracePeriodSeconds": 30}
    });
    assert_eq!(
        decoded(&envelope("policy/v1", "Eviction", &eviction)),
        expected
    );

    // `kubectl drain` without --grace-period sends empty delete options.
    let eviction = policyv1::Eviction {
        metadata: Some(metav1::ObjectMeta {
            name: s("p1"),
            namespace: s("default"),
            ..Default::default()
        }),
        delete_options: Some(metav1::DeleteOptions::default()),
    };
    let expected = json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "p1", "namespace": "default"},
        "deleteOptions": {}
    });
    assert_eq!(
        decoded(&envelope("policy/v1", "Eviction", &eviction)),
        expected
    );
}

#[test]
fn delete_options_under_any_group_version() {
    let options = metav1::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(metav1::Preconditions {
            uid: s("u1"),
            resource_version: None,
        }),
        orphan_dependents: None,
        propagation_policy: s("Foreground"),
        dry_run: strings(&["All"]),
        ignore_store_read_error_with_cluster_breaking_potential: None,
    };
    for api_version in ["v1", "meta.k8s.io/v1", "apps/v1"] {
        let expected = json!({
            "apiVersion": api_version,
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": "u1"},
            "propagationPolicy": "Foreground",
            "dryRun": ["All"]
        });
        let body = envelope(api_version, "DeleteOptions", &options);
        assert_eq!(decoded(&body), expected);
    }
}

#[test]
fn pod_with_the_realistic_fields() {
    let http_probe = corev1::Probe {
        handler: Some(corev1::ProbeHandler {
            http_get: Some(corev1::HttpGetAction {
                path: s("/healthz"),
                port: int(8080),
                host: s(""),
                scheme: s("HTTP"),
                http_headers: vec![corev1::HttpHeader {
                    name: s("X-Probe"),
                    value: s("1"),
                }],
            }),
            ..Default::default()
        }),
        initial_delay_seconds: Some(0),
        timeout_seconds: Some(1),
        period_seconds: Some(10),
        success_threshold: Some(1),
        failure_threshold: Some(3),
        termination_grace_period_seconds: None,
    };
    let tcp_probe = corev1::Probe {
        handler: Some(corev1::ProbeHandler {
            tcp_socket: Some(corev1::TcpSocketAction {
                port: string("http"),
                host: None,
            }),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Default::default()
    };
    let exec_probe = corev1::Probe {
        handler: Some(corev1::ProbeHandler {
            exec: Some(corev1::ExecAction {
                command: strings(&["cat", "/tmp/ready"]),
            }),
            ..Default::default()
        }),
        failure_threshold: Some(30),
        termination_grace_period_seconds: Some(10),
        ..Default::default()
    };
    let env = vec![
        corev1::EnvVar {
            name: s("MODE"),
            value: s("fast"),
            value_from: None,
        },
        corev1::EnvVar {
            name: s("EMPTY"),
            value: s(""),
            value_from: None,
        },
        corev1::EnvVar {
            name: s("NODE"),
            value: s(""),
            value_from: Some(corev1::EnvVarSource {
                field_ref: Some(corev1::ObjectFieldSelector {
                    api_version: s("v1"),
                    field_path: s("spec.nodeName"),
                }),
                ..Default::default()
            }),
        },
        corev1::EnvVar {
            name: s("MEM"),
            value: None,
            value_from: Some(corev1::EnvVarSource {
                resource_field_ref: Some(corev1::ResourceFieldSelector {
                    container_name: s("app"),
                    resource: s("limits.memory"),
                    divisor: Some(Quantity { string: s("1Mi") }),
                }),
                ..Default::default()
            }),
        },
        corev1::EnvVar {
            name: s("LEVEL"),
            value: None,
            value_from: Some(corev1::EnvVarSource {
                config_map_key_ref: Some(corev1::ConfigMapKeySelector {
                    local_object_reference: Some(corev1::LocalObjectReference {
                        name: s("settings"),
                    }),
                    key: s("level"),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        },
        corev1::EnvVar {
            name: s("TOKEN"),
            value: None,
            value_from: Some(corev1::EnvVarSource {
                secret_key_ref: Some(corev1::SecretKeySelector {
                    local_object_reference: Some(corev1::LocalObjectReference { name: s("creds") }),
                    key: s("token"),
                    optional: None,
                }),
                ..Default::default()
            }),
        },
    ];
    let app = corev1::Container {
        name: s("app"),
        image: s("shipshape/probe:v1"),
        command: strings(&["/probe"]),
        args: strings(&["--listen=:8080"]),
        working_dir: s("/srv"),
        ports: vec![corev1::ContainerPort {
            name: s("http"),
            host_port: Some(0),
            container_port: Some(8080),
            protocol: s("TCP"),
            host_ip: s(""),
        }],
        env,
        resources: Some(corev1::ResourceRequirements {
            limits: quantities(&[("cpu", "500m"), ("memory", "128Mi")]),
            requests: quantities(&[("cpu", "100m")]),
            claims: vec![],
        }),
        volume_mounts: vec![
            corev1::VolumeMount {
                name: s("data"),
                read_only: Some(false),
                mount_path: s("/data"),
                sub_path: s(""),
                ..Default::default()
            },
            corev1::VolumeMount {
                name: s("config"),
                read_only: Some(true),
                mount_path: s("/etc/probe"),
                ..Default::default()
            },
        ],
        liveness_probe: Some(http_probe),
        readiness_probe: Some(tcp_probe),
        startup_probe: Some(exec_probe),
        lifecycle: Some(corev1::Lifecycle {
            post_start: None,
            pre_stop: Some(corev1::LifecycleHandler {
                exec: Some(corev1::ExecAction {
                    command: strings(&["sleep", "5"]),
                }),
                ..Default::default()
            }),
            stop_signal: None,
        }),
        termination_message_path: s("/dev/termination-log"),
        termination_message_policy: s("File"),
        image_pull_policy: s("IfNotPresent"),
        security_context: Some(corev1::SecurityContext {
            capabilities: Some(corev1::Capabilities {
                add: strings(&["NET_ADMIN"]),
                drop: strings(&["ALL"]),
            }),
            privileged: Some(false),
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            ..Default::default()
        }),
        stdin: Some(false),
        tty: Some(true),
        ..Default::default()
    };
    let init = corev1::Container {
        name: s("init"),
        image: s("busybox"),
        command: strings(&["true"]),
        liveness_probe: Some(corev1::Probe {
            handler: Some(corev1::ProbeHandler {
                grpc: Some(corev1::GrpcAction {
                    port: Some(9000),
                    service: s(""),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let volumes = vec![
        corev1::Volume {
            name: s("data"),
            volume_source: Some(corev1::VolumeSource {
                empty_dir: Some(corev1::EmptyDirVolumeSource {
                    medium: s(""),
                    size_limit: Some(Quantity { string: s("1Gi") }),
                }),
                ..Default::default()
            }),
        },
        corev1::Volume {
            name: s("host"),
            volume_source: Some(corev1::VolumeSource {
                host_path: Some(corev1::HostPathVolumeSource {
                    path: s("/var/log"),
                    r#type: s(""),
                }),
                ..Default::default()
            }),
        },
        corev1::Volume {
            name: s("config"),
            volume_source: Some(corev1::VolumeSource {
                config_map: Some(corev1::ConfigMapVolumeSource {
                    local_object_reference: Some(corev1::LocalObjectReference {
                        name: s("probe-config"),
                    }),
                    items: vec![corev1::KeyToPath {
                        key: s("probe.yaml"),
                        path: s("probe.yaml"),
                        mode: Some(0o644),
                    }],
                    default_mode: Some(420),
                    optional: None,
                }),
                ..Default::default()
            }),
        },
        corev1::Volume {
            name: s("creds"),
            volume_source: Some(corev1::VolumeSource {
                secret: Some(corev1::SecretVolumeSource {
                    secret_name: s("creds"),
                    items: vec![],
                    default_mode: Some(256),
                    optional: Some(true),
                }),
                ..Default::default()
            }),
        },
    ];
    let pod = corev1::Pod {
        metadata: Some(metav1::ObjectMeta {
            name: s("probe"),
            namespace: s("default"),
            labels: map(&[("app", "probe")]),
            ..Default::default()
        }),
        spec: Some(corev1::PodSpec {
            volumes,
            init_containers: vec![init],
            containers: vec![app],
            restart_policy: s("Always"),
            termination_grace_period_seconds: Some(30),
            active_deadline_seconds: Some(3600),
            dns_policy: s("ClusterFirst"),
            node_selector: map(&[("disk", "ssd")]),
            service_account_name: s("probe"),
            node_name: s("node-1"),
            host_network: Some(true),
            host_pid: Some(false),
            security_context: Some(corev1::PodSecurityContext {
                run_as_user: Some(1000),
                run_as_group: Some(1000),
                run_as_non_root: Some(true),
                supplemental_groups: vec![2000],
                fs_group: Some(2000),
                ..Default::default()
            }),
            image_pull_secrets: vec![corev1::LocalObjectReference { name: s("regcred") }],
            hostname: s("probe-0"),
            subdomain: s("probes"),
            scheduler_name: s("default-scheduler"),
            tolerations: vec![
                corev1::Toleration {
                    key: s("node.kubernetes.io/unreachable"),
                    operator: s("Exists"),
                    value: s(""),
                    effect: s("NoExecute"),
                    toleration_seconds: Some(300),
                },
                corev1::Toleration {
                    key: s("dedicated"),
                    operator: s("Equal"),
                    value: s("probes"),
                    effect: s("NoSchedule"),
                    toleration_seconds: None,
                },
            ],
            priority: Some(0),
            enable_service_links: Some(true),
            ..Default::default()
        }),
        status: Some(corev1::PodStatus {
            phase: s("Running"),
            ..Default::default()
        }),
    };
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": "default", "labels": {"app": "probe"}},
        "spec": {
            "volumes": [
                {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "host", "hostPath": {"path": "/var/log"}},
                {
                    "name": "config",
                    "configMap": {
                        "name": "probe-config",
                        "items": [{"key": "probe.yaml", "path": "probe.yaml", "mode": 420}],
                        "defaultMode": 420
                    }
                },
                {
                    "name": "creds",
                    "secret": {"secretName": "creds", "defaultMode": 256, "optional": true}
                }
            ],
            "initContainers": [{
                "name": "init",
                "image": "busybox",
                "command": ["true"],
                "livenessProbe": {"grpc": {"port": 9000}}
            }],
            "containers": [{
                "name": "app",
                "image": "shipshape/probe:v1",
                "command": ["/probe"],
                "args": ["--listen=:8080"],
                "workingDir": "/srv",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [
                    {"name": "MODE", "value": "fast"},
                    {"name": "EMPTY"},
                    {
                        "name": "NODE",
                        "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}
                    },
                    {
                        "name": "MEM",
                        "valueFrom": {"resourceFieldRef": {
                            "containerName": "app",
                            "resource": "limits.memory",
                            "divisor": "1Mi"
                        }}
                    },
                    {
                        "name": "LEVEL",
                        "valueFrom": {"configMapKeyRef": {
                            "name": "settings",
                            "key": "level"
                        }}
                    },
                    {
                        "name": "TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}
                    }
                ],
                "resources": {
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "100m"}
                },
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "config", "readOnly": true, "mountPath": "/etc/probe"}
                ],
                "livenessProbe": {
                    "httpGet": {
                        "path": "/healthz",
                        "port": 8080,
                        "scheme": "HTTP",
                        "httpHeaders": [{"name": "X-Probe", "value": "1"}]
                    },
                    "timeoutSeconds": 1,
                    "periodSeconds": 10,
                    "successThreshold": 1,
                    "failureThreshold": 3
                },
                "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
                "startupProbe": {
                    "exec": {"command": ["cat", "/tmp/ready"]},
                    "failureThreshold": 30,
                    "terminationGracePeriodSeconds": 10
                },
                "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
                "securityContext": {
                    "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                    "runAsUser": 0,
                    "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false
                },
                "tty": true
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "activeDeadlineSeconds": 3600,
            "dnsPolicy": "ClusterFirst",
            "nodeSelector": {"disk": "ssd"},
            "serviceAccountName": "probe",
            "nodeName": "node-1",
            "hostNetwork": true,
            "securityContext": {
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "runAsNonRoot": true,
                "supplementalGroups": [2000],
                "fsGroup": 2000
            },
            "imagePullSecrets": [{"name": "regcred"}],
            "hostname": "probe-0",
            "subdomain": "probes",
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300
                },
                {"key": "dedicated", "operator": "Equal", "value": "probes", "effect": "NoSchedule"}
            ],
            "enableServiceLinks": true
        },
        "status": {"phase": "Running"}
    });
    assert_eq!(decoded(&envelope("v1", "Pod", &pod)), expected);
}

#[test]
fn node_spec_and_labels() {
    let node = corev1::Node {
        metadata: Some(metav1::ObjectMeta {
            name: s("node-1"),
            labels: map(&[("kubernetes.io/hostname", "node-1")]),
            ..Default::default()
        }),
        spec: Some(corev1::NodeSpec {
            pod_cidr: s("10.244.1.0/24"),
            pod_cid_rs: strings(&["10.244.1.0/24"]),
            provider_id: s("shipshape://node-1"),
            unschedulable: Some(true),
            taints: vec![
                corev1::Taint {
                    key: s("node.kubernetes.io/unschedulable"),
                    value: s(""),
                    effect: s("NoSchedule"),
                    time_added: at_seconds(0),
                },
                corev1::Taint {
                    key: s("dedicated"),
                    value: s("probes"),
                    effect: s("NoExecute"),
                    time_added: None,
                },
            ],
            config_source: None,
            external_id: s(""),
        }),
        status: None,
    };
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
        "spec": {
            "podCIDR": "10.244.1.0/24",
            "podCIDRs": ["10.244.1.0/24"],
            "providerID": "shipshape://node-1",
            "unschedulable": true,
            "taints": [
                {
                    "key": "node.kubernetes.io/unschedulable",
                    "effect": "NoSchedule",
                    "timeAdded": "1970-01-01T00:00:00Z"
                },
                {"key": "dedicated", "value": "probes", "effect": "NoExecute"}
            ]
        }
    });
    assert_eq!(decoded(&envelope("v1", "Node", &node)), expected);
}

#[test]
fn endpoints_subsets() {
    let endpoints = corev1::Endpoints {
        metadata: Some(metav1::ObjectMeta {
            name: s("web"),
            namespace: s("default"),
            ..Default::default()
        }),
        subsets: vec![corev1::EndpointSubset {
            addresses: vec![corev1::EndpointAddress {
                ip: s("10.244.1.5"),
                hostname: s(""),
                node_name: s("node-1"),
                target_ref: Some(corev1::ObjectReference {
                    kind: s("Pod"),
                    namespace: s("default"),
                    name: s("web-1"),
                    uid: s("p-1"),
                    ..Default::default()
                }),
            }],
            not_ready_addresses: vec![corev1::EndpointAddress {
                ip: s("10.244.2.7"),
                ..Default::default()
            }],
            ports: vec![corev1::EndpointPort {
                name: s("http"),
                port: Some(8080),
                protocol: s("TCP"),
                app_protocol: None,
            }],
        }],
    };
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "web", "namespace": "default"},
        "subsets": [{
            "addresses": [{
                "ip": "10.244.1.5",
                "nodeName": "node-1",
                "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1", "uid": "p-1"}
            }],
            "notReadyAddresses": [{"ip": "10.244.2.7"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }]
    });
    assert_eq!(decoded(&envelope("v1", "Endpoints", &endpoints)), expected);
}

#[test]
fn event_basics_and_micro_time() {
    let event = corev1::Event {
        metadata: Some(metav1::ObjectMeta {
            name: s("web.17a"),
            namespace: s("default"),
            ..Default::default()
        }),
        involved_object: Some(corev1::ObjectReference {
            kind: s("Deployment"),
            namespace: s("default"),
            name: s("web"),
            api_version: s("apps/v1"),
            ..Default::default()
        }),
        reason: s("ScalingReplicaSet"),
        message: s("Scaled up replica set web-5d4f to 3"),
        source: Some(corev1::EventSource {
            component: s("deployment-controller"),
            host: s(""),
        }),
        first_timestamp: at_seconds(1_700_000_000),
        last_timestamp: at_seconds(1_700_000_060),
        count: Some(2),
        r#type: s("Normal"),
        event_time: Some(metav1::MicroTime {
            seconds: Some(1_700_000_000),
            nanos: Some(123_456_789),
        }),
        series: None,
        action: s(""),
        related: None,
        reporting_component: s("shipshape"),
        reporting_instance: None,
    };
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "web.17a", "namespace": "default"},
        "involvedObject": {
            "kind": "Deployment",
            "namespace": "default",
            "name": "web",
            "apiVersion": "apps/v1"
        },
        "reason": "ScalingReplicaSet",
        "message": "Scaled up replica set web-5d4f to 3",
        "source": {"component": "deployment-controller"},
        "firstTimestamp": "2023-11-14T22:13:20Z",
        "lastTimestamp": "2023-11-14T22:14:20Z",
        "count": 2,
        "type": "Normal",
        "eventTime": "2023-11-14T22:13:20.123456Z",
        "reportingComponent": "shipshape"
    });
    assert_eq!(decoded(&envelope("v1", "Event", &event)), expected);
}

/// A `metav1.Time` (or, with `micro`, a `MicroTime`) as the decoder renders it.
fn time_value(
    seconds: Option<i64>,
    nanos: Option<i32>,
    micro: bool,
) -> Result<Option<Value>, String> {
    let (bytes, name) = if micro {
        (
            metav1::MicroTime { seconds, nanos }.encode_to_vec(),
            "meta.v1.MicroTime",
        )
    } else {
        (
            metav1::Time { seconds, nanos }.encode_to_vec(),
            "meta.v1.Time",
        )
    };
    match render(&SCHEMA, name, &bytes, 0) {
        Ok(Value::Null) => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(invalid) => Err(invalid.problem),
    }
}

#[test]
fn timestamps() {
    let cases = [
        (0, "1970-01-01T00:00:00Z"),
        (-1, "1969-12-31T23:59:59Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_709_210_096, "2024-02-29T12:34:56Z"),
        (4_107_542_400, "2100-03-01T00:00:00Z"),
        (MIN_SECONDS, "0000-01-01T00:00:00Z"),
        (MAX_SECONDS, "9999-12-31T23:59:59Z"),
    ];
    for (seconds, expected) in cases {
        assert_eq!(
            time_value(Some(seconds), Some(7), false),
            Ok(Some(json!(expected)))
        );
    }
    for seconds in [MIN_SECONDS - 1, MAX_SECONDS + 1, i64::MIN] {
        assert!(time_value(Some(seconds), None, false).is_err());
    }

    let micro = |seconds, nanos| time_value(Some(seconds), Some(nanos), true).ok().flatten();
    assert_eq!(micro(0, 1_000), Some(json!("1970-01-01T00:00:00.000001Z")));
    assert_eq!(micro(0, -1_000), Some(json!("1969-12-31T23:59:59.999999Z")));
    assert_eq!(micro(0, 999), Some(json!("1970-01-01T00:00:00.000000Z")));
    assert_eq!(micro(GO_ZERO_TIME, 0), None);
    assert!(time_value(Some(i64::MAX), Some(i32::MAX), true).is_err());

    assert_eq!(time_value(None, None, false), Ok(None));
    assert_eq!(time_value(Some(GO_ZERO_TIME), None, false), Ok(None));
}

// -- errors ---------------------------------------------------------------

#[test]
fn rejects_a_body_without_magic() {
    assert!(matches!(decode_error(b""), ProtobufError::MissingMagic));
    assert!(matches!(decode_error(b"k8s"), ProtobufError::MissingMagic));
    assert!(matches!(
        decode_error(br#"{"kind":"Namespace"}"#),
        ProtobufError::MissingMagic
    ));
    let json_like = &KUBECTL_CREATE_NAMESPACE[1..];
    assert!(matches!(
        decode_error(json_like),
        ProtobufError::MissingMagic
    ));
}

#[test]
fn rejects_garbage_after_magic() {
    let err = decode_error(b"k8s\0\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff");
    assert!(matches!(err, ProtobufError::Envelope(_)), "{err}");
    assert!(
        err.to_string()
            .starts_with("failed to decode the runtime.Unknown envelope")
    );

    // An envelope whose typeMeta claims 100 bytes but has 2.
    let err = decode_error(b"k8s\0\x0a\x64\x0a\x02");
    assert!(matches!(err, ProtobufError::Envelope(_)), "{err}");
}

#[test]
fn rejects_an_envelope_without_type_meta() {
    assert!(matches!(
        decode_error(b"k8s\0"),
        ProtobufError::MissingTypeMeta
    ));
    let body = envelope("", "Deployment", &appsv1::Deployment::default());
    assert!(matches!(
        decode_error(&body),
        ProtobufError::MissingTypeMeta
    ));
    let body = envelope("apps/v1", "", &appsv1::Deployment::default());
    assert!(matches!(
        decode_error(&body),
        ProtobufError::MissingTypeMeta
    ));
}

/// Every kind of Kubernetes' built-in API decodes, whatever the server serves;
/// a kind Kubernetes does not have is refused by name.
#[test]
fn decodes_every_built_in_kind_and_refuses_others() {
    let volume = corev1::PersistentVolume {
        metadata: Some(go_meta("disk", &[])),
        ..Default::default()
    };
    assert_eq!(
        decoded(&envelope("v1", "PersistentVolume", &volume)),
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "disk"}})
    );
    let body = envelope("v1", "Gadget", &corev1::PersistentVolume::default());
    let err = decode_error(&body);
    assert!(
        matches!(&err, ProtobufError::UnsupportedKind { api_version, kind }
            if api_version == "v1" && kind == "Gadget"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "unsupported kind \"Gadget\" (apiVersion \"v1\") in a protobuf body; \
         send it as application/json"
    );
    // A kind under a group that does not have it is not guessed at.
    let body = envelope("batch/v1", "Deployment", &appsv1::Deployment::default());
    assert!(matches!(
        decode_error(&body),
        ProtobufError::UnsupportedKind { .. }
    ));
}

/// The schema file reads line by line: every field line parses, and every
/// message a field names exists.
#[test]
fn the_schema_is_whole() {
    let text = include_str!("schema.txt");
    for line in text.lines().filter(|l| l.starts_with(' ')) {
        let Some((_, field)) = Field::parse(line) else {
            panic!("unreadable schema line {line:?}");
        };
        if let Type::Message(name) = field.ty {
            assert!(
                SCHEMA.messages.contains_key(name),
                "{line:?} names no message"
            );
        }
    }
    assert!(SCHEMA.messages.len() > 1_000, "{}", SCHEMA.messages.len());
    for (message, field) in ZERO_IS_A_VALUE {
        let named = SCHEMA.messages.iter().any(|(name, fields)| {
            name.ends_with(&format!(".{message}")) && fields.values().any(|f| f.name == Some(field))
        });
        assert!(named, "{message}.{field} is in no message");
    }
}

#[test]
fn rejects_content_encodings() {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s("v1"),
            kind: s("Namespace"),
        }),
        raw: Some(vec![]),
        content_encoding: s("gzip"),
        content_type: None,
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    assert!(matches!(
        decode_error(&body),
        ProtobufError::UnsupportedContentEncoding { encoding } if encoding == "gzip"
    ));
}

#[test]
fn rejects_a_truncated_object() {
    let raw = appsv1::Deployment {
        metadata: Some(go_meta("web", &[("app", "web")])),
        ..Default::default()
    }
    .encode_to_vec();
    let body = envelope_raw("apps/v1", "Deployment", raw[..raw.len() - 3].to_vec());
    let err = decode_error(&body);
    assert!(
        matches!(&err, ProtobufError::Object { kind, .. } if kind == "apps/v1 Deployment"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("failed to decode apps/v1 Deployment from protobuf")
    );
}

#[test]
fn rejects_invalid_utf8_in_strings() {
    let mut raw = corev1::Namespace {
        metadata: Some(metav1::ObjectMeta {
            name: s("xx"),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let last = raw.len() - 1;
    raw[last] = 0xff;
    let body = envelope_raw("v1", "Namespace", raw);
    assert!(matches!(decode_error(&body), ProtobufError::Object { .. }));
}

#[test]
fn reports_where_an_unrenderable_value_sits() {
    let mut deployment = appsv1::Deployment::default();
    let container = corev1::Container {
        name: s("probe"),
        liveness_probe: Some(corev1::Probe {
            handler: Some(corev1::ProbeHandler {
                http_get: Some(corev1::HttpGetAction {
                    port: Some(IntOrString {
                        r#type: Some(7),
                        int_val: None,
                        str_val: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    deployment.spec = Some(appsv1::DeploymentSpec {
        template: Some(corev1::PodTemplateSpec {
            metadata: None,
            spec: Some(corev1::PodSpec {
                containers: vec![corev1::Container::default(), container],
                ..Default::default()
            }),
        }),
        ..Default::default()
    });
    let err = decode_error(&envelope("apps/v1", "Deployment", &deployment));
    assert_eq!(
        err.to_string(),
        "failed to decode apps/v1 Deployment from protobuf: \
         spec.template.spec.containers[1].livenessProbe.httpGet.port: \
         unsupported IntOrString type 7 (expected 0 for an int or 1 for a string)"
    );
}

#[test]
fn rejects_timestamps_outside_rfc3339_years() {
    let namespace = corev1::Namespace {
        metadata: Some(metav1::ObjectMeta {
            name: s("x"),
            creation_timestamp: at_seconds(i64::MAX),
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = decode_error(&envelope("v1", "Namespace", &namespace));
    assert!(
        matches!(&err, ProtobufError::Object { path, .. } if path == "metadata.creationTimestamp"),
        "{err}"
    );
}

/// Every prefix of a real body, and every single-byte corruption of it,
/// decodes or errors; none panics.
#[test]
fn never_panics_on_mangled_bodies() {
    let bodies = [
        KUBECTL_CREATE_DEPLOYMENT,
        KUBECTL_CREATE_NAMESPACE,
        KUBECTL_CREATE_SERVICE_NODEPORT,
        KUBECTL_CREATE_SERVICE_CLUSTERIP,
    ];
    for body in bodies {
        for end in 0..body.len() {
            let _ = decode(&body[..end]);
        }
        for i in 0..body.len() {
            for byte in [0x00, 0x01, 0x7f, 0x80, 0xff, body[i] ^ 0x08] {
                let mut mangled = body.to_vec();
                mangled[i] = byte;
                let _ = decode(&mangled);
            }
        }
    }
}

/// Pseudo-random bytes after the magic, including inside a valid envelope.
#[test]
fn never_panics_on_random_bytes() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let kinds = [
        ("apps/v1", "Deployment"),
        ("apps/v1", "ReplicaSet"),
        ("v1", "Pod"),
        ("v1", "Service"),
        ("v1", "Namespace"),
        ("v1", "Node"),
        ("v1", "Endpoints"),
        ("v1", "Event"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "ServiceAccount"),
        ("policy/v1", "Eviction"),
        ("v1", "DeleteOptions"),
    ];
    for round in 0..4_000 {
        let len = (next() % 200) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut body = MAGIC.to_vec();
        body.extend(&bytes);
        let _ = decode(&body);
        let (api_version, kind) = kinds[round % kinds.len()];
        let _ = decode(&envelope_raw(api_version, kind, bytes));
    }
}
