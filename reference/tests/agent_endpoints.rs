//! What the API server gets from node agents, through kube-rs, against `shipshape up` with
//! a node agent on Docker.
//!
//! - Exec and attach: a process in a pod's container runs, reads what the client sends
//!   until the client closes its stdin, answers on stdout and stderr, and its exit code
//!   comes back; a container that is not there, or a request that is not a WebSocket, is
//!   refused with a clear error.
//! - Port-forward: a connection reaches a port of the pod, and a port nothing listens on
//!   comes back as an error that names it.
//! - Usage (`metrics.k8s.io`): a pod that spends CPU shows it, and its node with it.

mod up;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn client(dir: &std::path::Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(dir.join("kubeconfig"))
        .expect("the cluster's kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("a usable kubeconfig");
    kube::Client::try_from(config).expect("a client")
}

/// Creates a probe pod named `name` and waits until it runs.
async fn running_probe(pods: &Api<Pod>, name: &str, spec: serde_json::Value) {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("the pod is created");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pod = pods.get(name).await.expect("the pod");
        let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
        if phase == "Running" {
            return;
        }
        assert!(Instant::now() < deadline, "pod {name} is still {phase}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn read_all(reader: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut text = String::new();
    if let Some(mut reader) = reader {
        reader.read_to_string(&mut text).await.expect("reads");
    }
    text
}

#[tokio::test]
async fn exec_and_attach_reach_a_process_in_a_container() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (up, _) = up::start_up(dir.path(), &["--nodes", "1"], Duration::from_secs(90)).await;
    let up = Up(up);
    let client = client(dir.path()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    running_probe(
        &pods,
        "talker",
        serde_json::json!({"containers": [{"name": "probe", "image": "shipshape/probe:v1"}]}),
    )
    .await;

    // stdin in, stdout and stderr out; closing stdin is the process's end of input.
    let mut cat = pods
        .exec(
            "talker",
            ["/probe", "cat"],
            &AttachParams::default().stdin(true).stderr(true),
        )
        .await
        .expect("exec starts");
    let mut stdin = cat.stdin().expect("stdin");
    let (stdout, stderr, status) = (cat.stdout(), cat.stderr(), cat.take_status());
    stdin.write_all(b"hello\nworld\n").await.expect("writes");
    stdin.shutdown().await.expect("closes stdin");
    drop(stdin);
    let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
    assert_eq!(out, "hello\nworld\n");
    assert_eq!(err.trim(), "probe cat: copied 12 bytes");
    let status = status.expect("a status").await.expect("the process ended");
    assert_eq!(status.status.as_deref(), Some("Success"), "{status:?}");

    // An exit code comes back, as kubectl reads it.
    let mut failing = pods
        .exec(
            "talker",
            ["/probe", "run", "0", "3"],
            &AttachParams::default(),
        )
        .await
        .expect("exec starts");
    let status = failing
        .take_status()
        .expect("a status")
        .await
        .expect("ended");
    assert_eq!(
        status.reason.as_deref(),
        Some("NonZeroExitCode"),
        "{status:?}"
    );
    let causes = status.details.and_then(|d| d.causes).unwrap_or_default();
    assert_eq!(causes.first().and_then(|c| c.message.as_deref()), Some("3"));

    // A terminal: one stream, the process sees a tty.
    let mut terminal = pods
        .exec(
            "talker",
            ["/probe", "run", "0"],
            &AttachParams::interactive_tty(),
        )
        .await
        .expect("exec with a terminal starts");
    drop(terminal.stdin());
    let out = read_all(terminal.stdout()).await;
    assert!(out.contains("worked 0 s"), "{out:?}");

    // Refused before anything runs: a container the pod does not have, a command that is
    // not there, a request that is not a WebSocket.
    let no_such = pods
        .exec(
            "talker",
            ["/probe", "run", "0"],
            &AttachParams::default().container("sidecar"),
        )
        .await;
    let message = format!("{:?}", no_such.err().expect("refused"));
    assert!(message.contains("not valid for pod talker"), "{message}");
    let mut missing = pods
        .exec("talker", ["/no/such/program"], &AttachParams::default())
        .await;
    match missing.as_mut() {
        // Docker refuses at start; the agent reports it as the process's end.
        Ok(process) => {
            let status = process
                .take_status()
                .expect("a status")
                .await
                .expect("ended");
            assert_eq!(status.status.as_deref(), Some("Failure"), "{status:?}");
        }
        Err(e) => assert!(format!("{e:?}").contains("no such file"), "{e:?}"),
    }
    let plain = reqwest_like_get(
        &client,
        "/api/v1/namespaces/default/pods/talker/exec?command=/probe&stdout=true",
    )
    .await;
    assert_eq!(plain.0, 400, "{}", plain.1);
    assert!(plain.1.contains("WebSocket"), "{}", plain.1);

    // attach: the container's own process, with stdin because the pod asked for one.
    running_probe(
        &pods,
        "reader",
        serde_json::json!({"containers": [{
            "name": "probe", "image": "shipshape/probe:v1",
            "command": ["/probe", "cat", "0"], "stdin": true, "stdinOnce": true,
        }]}),
    )
    .await;
    let mut attached = pods
        .attach("reader", &AttachParams::default().stdin(true).stderr(false))
        .await
        .expect("attach starts");
    let mut stdin = attached.stdin().expect("stdin");
    let mut stdout = attached.stdout().expect("stdout");
    stdin.write_all(b"through attach\n").await.expect("writes");
    let mut line = vec![0u8; "through attach\n".len()];
    tokio::time::timeout(Duration::from_secs(10), stdout.read_exact(&mut line))
        .await
        .expect("the echo comes back in time")
        .expect("reads");
    assert_eq!(line, b"through attach\n");

    // port-forward: a connection to the pod's port; a port nothing listens on says why.
    let mut forwarder = pods
        .portforward("talker", &[8080, 9])
        .await
        .expect("port-forward starts");
    let mut web = forwarder.take_stream(8080).expect("port 8080's stream");
    web.write_all(b"GET / HTTP/1.1\r\nHost: talker\r\nConnection: close\r\n\r\n")
        .await
        .expect("writes");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), web.read_to_string(&mut answer))
        .await
        .expect("the answer comes in time")
        .expect("reads");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("talker"),
        "{answer}"
    );
    let refused = forwarder.take_error(9).expect("port 9's errors");
    let why = tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("the error comes in time");
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("error forwarding port 9")),
        "{why:?}"
    );
    forwarder.abort();
    interrupt(up).await;
}

/// A plain GET through the client's own HTTP stack: (status, body).
async fn reqwest_like_get(client: &kube::Client, path: &str) -> (u16, String) {
    let request = http::Request::get(path)
        .body(Vec::new())
        .expect("a request");
    match client.request_text(request).await {
        Ok(text) => (200, text),
        Err(kube::Error::Api(status)) => (status.code, status.message),
        Err(e) => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn pods_and_nodes_report_what_they_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (up, _) = up::start_up(dir.path(), &["--nodes", "1"], Duration::from_secs(90)).await;
    let up = Up(up);
    let client = client(dir.path()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let probe = |name: &str| {
        serde_json::json!({"containers": [{"name": "probe", "image": "shipshape/probe:v1",
            "env": [{"name": "POD_NAME", "value": name}]}]})
    };
    running_probe(&pods, "busy", probe("busy")).await;
    running_probe(&pods, "idle", probe("idle")).await;
    // Work for the busy one: requests that each cost 300 ms of CPU, one after another.
    let worker = client.clone();
    let work = tokio::spawn(async move {
        loop {
            let request =
                http::Request::get("/api/v1/namespaces/default/pods/busy:8080/proxy/?cpu_ms=300")
                    .body(Vec::new())
                    .expect("request");
            let _ = worker.request_text(request).await;
        }
    });
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let request = http::Request::get(path).body(Vec::new()).expect("request");
            client
                .request::<serde_json::Value>(request)
                .await
                .expect("metrics")
        }
    };
    let cpu = |quantity: &serde_json::Value| -> u64 {
        quantity["cpu"]
            .as_str()
            .and_then(|q| q.strip_suffix('n'))
            .and_then(|n| n.parse().ok())
            .expect("CPU in nanocores")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (busy_cpu, idle_cpu, node) = loop {
        let list = get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods").await;
        let of = |name: &str| {
            list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|i| i["metadata"]["name"] == name)
                .map(|i| cpu(&i["containers"][0]["usage"]))
        };
        let nodes = get("/apis/metrics.k8s.io/v1beta1/nodes/node-1").await;
        if let (Some(busy), Some(idle)) = (of("busy"), of("idle"))
            && busy > 100_000_000
        {
            break (busy, idle, nodes);
        }
        assert!(
            Instant::now() < deadline,
            "no CPU seen for the busy pod: {list}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    work.abort();
    assert!(
        busy_cpu > 5 * idle_cpu,
        "busy {busy_cpu}n, idle {idle_cpu}n"
    );
    assert_eq!(node["kind"], "NodeMetrics");
    assert!(cpu(&node["usage"]) >= busy_cpu / 2, "{node}");
    let memory = node["usage"]["memory"].as_str().expect("memory");
    assert!(memory.ends_with("Ki") && memory != "0Ki", "{node}");
    // A pod that is not there is a 404.
    let request = http::Request::get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/none")
        .body(Vec::new())
        .expect("request");
    match client.request::<serde_json::Value>(request).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404),
        other => panic!("{other:?}"),
    }
    // The node's heartbeat is its Lease in kube-node-lease, renewed as the kubelet renews
    // its own.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renewed = async || {
        let lease = leases.get("node-1").await.expect("the node's Lease");
        let spec = lease.spec.expect("a spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("node-1"));
        spec.renew_time.expect("a renewal")
    };
    let first = renewed().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while renewed().await == first {
        assert!(
            Instant::now() < deadline,
            "the Lease was not renewed in 15 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    interrupt(up).await;
}

/// Stops `up` as Ctrl-C does and waits for it: its agents remove their containers, which
/// would otherwise run on after the test.
/// `shipshape up`, interrupted if it still runs when dropped: a test that fails still has
/// it remove its containers.
struct Up(tokio::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        let Some(pid) = self
            .0
            .id()
            .filter(|_| matches!(self.0.try_wait(), Ok(None)))
        else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn interrupt(mut up: Up) {
    let pid = up.0.id().expect("up runs").to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    let stopped = tokio::time::timeout(Duration::from_secs(30), up.0.wait()).await;
    assert!(
        matches!(stopped, Ok(Ok(status)) if status.success()),
        "up did not stop cleanly: {stopped:?}"
    );
}

/// A HorizontalPodAutoscaler, through kube-rs: under load the replicas of its Deployment
/// grow, never past the maximum, and the status says what it measured; a Deployment whose
/// containers request no CPU cannot be scaled on CPU, and the status says why.
#[tokio::test]
async fn an_autoscaler_adds_replicas_under_load_and_says_why_it_cannot() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let dir = tempfile::tempdir().expect("tempdir");
    let (up, _) = up::start_up(dir.path(), &["--nodes", "1"], Duration::from_secs(90)).await;
    let up = Up(up);
    let client = client(dir.path()).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    for (name, requests) in [
        ("busy", serde_json::json!({"cpu": "100m"})),
        ("unasked", serde_json::json!({})),
    ] {
        let deployment = serde_json::json!({"metadata": {"name": name}, "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                "name": "probe", "image": "shipshape/probe:v1",
                "resources": {"requests": requests}}]}}}});
        let deployment = serde_json::from_value(deployment).expect("a Deployment");
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .expect("created");
        let autoscaler = serde_json::json!({"metadata": {"name": name}, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1, "maxReplicas": 3, "metrics": [{"type": "Resource", "resource":
                {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}});
        let autoscaler = serde_json::from_value(autoscaler).expect("an autoscaler");
        autoscalers
            .create(&PostParams::default(), &autoscaler)
            .await
            .expect("created");
    }
    // Load: requests to the busy Deployment's pods, each costing 200 ms of CPU, two at a
    // time — about two CPUs' worth against 100m requested.
    let mut workers = Vec::new();
    for _ in 0..2 {
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
            loop {
                let listed = pods
                    .list(&kube::api::ListParams::default().labels("app=busy"))
                    .await;
                for pod in listed.map(|l| l.items).unwrap_or_default() {
                    let name = pod.metadata.name.unwrap_or_default();
                    let path =
                        format!("/api/v1/namespaces/default/pods/{name}:8080/proxy/?cpu_ms=200");
                    let request = http::Request::get(path).body(Vec::new()).expect("request");
                    let _ = client.request_text(request).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    let condition = |hpa: &HorizontalPodAutoscaler, kind: &str| {
        let conditions = hpa
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let found = conditions.into_iter().find(|c| c.type_ == kind);
        found.map(|c| {
            (
                c.status,
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default(),
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let busy = loop {
        let busy = autoscalers.get("busy").await.expect("the autoscaler");
        let replicas = deployments
            .get("busy")
            .await
            .expect("the Deployment")
            .spec
            .and_then(|s| s.replicas);
        assert!(replicas.unwrap_or(0) <= 3, "past the maximum: {replicas:?}");
        if replicas == Some(3) {
            break busy;
        }
        assert!(
            Instant::now() < deadline,
            "no scale-up in 90 s: {:?}",
            busy.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    workers.iter().for_each(tokio::task::JoinHandle::abort);
    let status = busy.status.clone().expect("a status");
    let cpu = status
        .current_metrics
        .iter()
        .flatten()
        .find_map(|m| m.resource.clone())
        .expect("cpu");
    assert!(cpu.current.average_utilization.unwrap_or(0) > 50, "{cpu:?}");
    assert!(status.last_scale_time.is_some());
    assert_eq!(
        condition(&busy, "ScalingActive").map(|c| c.0),
        Some("True".into())
    );
    // The other one cannot tell, and says why.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let unasked = autoscalers.get("unasked").await.expect("the autoscaler");
        // (Until its pod exists, there is nothing to measure, which it says first.)
        let said = condition(&unasked, "ScalingActive");
        if let Some((status, reason, _)) = said.filter(|c| c.2.contains("missing request for cpu"))
        {
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "FailedGetResourceMetric")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ScalingActive condition: {:?}",
            unasked.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    interrupt(up).await;
}

/// What the service proxy counts (`custom.metrics.k8s.io`): connections to a NodePort
/// Service show as each pod's `connections_per_second`, and an autoscaler with a `Pods`
/// metric on it adds replicas, never past the maximum; a metric that does not exist is a
/// client's mistake.
#[tokio::test]
async fn an_autoscaler_scales_on_the_connections_the_service_proxy_counts() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::core::v1::Service;
    let dir = tempfile::tempdir().expect("tempdir");
    let (up, _) = up::start_up(dir.path(), &["--nodes", "1"], Duration::from_secs(90)).await;
    let up = Up(up);
    let client = client(dir.path()).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let made = PostParams::default();
    let deployment = serde_json::json!({"metadata": {"name": "counted"}, "spec": {
        "selector": {"matchLabels": {"app": "counted"}},
        "template": {"metadata": {"labels": {"app": "counted"}}, "spec": {"containers": [{
            "name": "probe", "image": "shipshape/probe:v1"}]}}}});
    let deployment = serde_json::from_value(deployment).expect("a Deployment");
    deployments
        .create(&made, &deployment)
        .await
        .expect("created");
    let service = serde_json::json!({"metadata": {"name": "counted"}, "spec": {
        "type": "NodePort", "selector": {"app": "counted"},
        "ports": [{"port": 80, "targetPort": 8080}]}});
    let service = serde_json::from_value(service).expect("a Service");
    let service = services.create(&made, &service).await.expect("created");
    let node_port = service.spec.and_then(|s| s.ports?.first()?.node_port);
    let node_port = u16::try_from(node_port.expect("a node port")).expect("a port");
    let autoscaler = serde_json::json!({"metadata": {"name": "counted"}, "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "counted"},
        "minReplicas": 1, "maxReplicas": 3, "metrics": [{"type": "Pods", "pods": {
            "metric": {"name": "connections_per_second"},
            "target": {"type": "AverageValue", "averageValue": "2"}}}]}});
    let autoscaler = serde_json::from_value(autoscaler).expect("an autoscaler");
    autoscalers
        .create(&made, &autoscaler)
        .await
        .expect("created");
    // Load: about 20 connections a second through the node port, one request each —
    // ten times the target for one pod, so it wants the most, 3.
    let load = tokio::spawn(async move {
        loop {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", node_port)).await {
                let request = b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n";
                let _ = stream.write_all(request).await;
                let _ = stream.read_to_end(&mut Vec::new()).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    // (The scale changes before the status of the same pass is written: both are
    // waited for.)
    let seen = loop {
        let counted = autoscalers.get("counted").await.expect("the autoscaler");
        let replicas = deployments.get("counted").await.expect("the Deployment");
        let replicas = replicas.spec.and_then(|s| s.replicas).unwrap_or(0);
        assert!(replicas <= 3, "past the maximum: {replicas}");
        let status = counted.status.clone().unwrap_or_default();
        let metrics = status.current_metrics.into_iter().flatten();
        let seen = metrics.filter_map(|m| m.pods).next();
        if let Some(seen) = seen.filter(|_| replicas == 3 && status.current_replicas == Some(3)) {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "no scale-up in 90 s: {:?}",
            counted.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(seen.metric.name, "connections_per_second");
    let per_second = seen.current.average_value.expect("an average").0;
    assert!(per_second.ends_with('m'), "{per_second}");
    // The metric itself: every pod of the Service has one, some above 0.
    let (code, body) = reqwest_like_get(
        &client,
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/*/connections_per_second?labelSelector=app%3Dcounted",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    let items = list["items"].as_array().expect("items");
    assert!(!items.is_empty(), "{list}");
    let counted = |item: &serde_json::Value| item["value"].as_str().is_some_and(|v| v != "0m");
    assert!(items.iter().any(counted), "{list}");
    load.abort();
    let (code, body) = reqwest_like_get(
        &client,
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/*/requests_dropped",
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("connections_per_second"), "{body}");
    interrupt(up).await;
}
