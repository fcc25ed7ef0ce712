//! Black-box tests of the apiserver over HTTPS: authentication, every kind of bad input the
//! rules of the house name (each gets its code, a `Status` body, and changes nothing), and
//! the verbs a controller relies on.

mod common;

use common::{Client, names};
use serde_json::{Value, json};
use shipshape::control_plane::{ControlPlane, ControlPlaneConfig};

async fn start() -> (ControlPlane, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(ControlPlaneConfig::new(
        dir.path(),
        "127.0.0.1:0".parse().expect("addr"),
    ))
    .await
    .expect("control plane starts");
    (cp, dir)
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "probe", "image": "shipshape/probe:v1"}]}
            }
        }
    })
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn assert_status(reply: &common::Reply, code: u16, reason: &str) {
    assert_eq!(reply.code, code, "body: {}", reply.body);
    assert_eq!(reply.body["kind"], "Status", "body: {}", reply.body);
    assert_eq!(reply.body["code"], code);
    assert_eq!(reply.body["reason"], reason, "body: {}", reply.body);
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_except_health_and_version() {
    let (cp, dir) = start().await;
    let anonymous = Client::new(dir.path(), cp.addr(), None);
    let wrong = Client::new(dir.path(), cp.addr(), Some("not-the-token"));
    for client in [&anonymous, &wrong] {
        assert_status(&client.get("/api/v1/namespaces").await, 401, "Unauthorized");
        assert_status(
            &client.post(DEPLOYMENTS, &deployment("web")).await,
            401,
            "Unauthorized",
        );
    }
    for open in ["/healthz", "/readyz", "/livez", "/version"] {
        assert_eq!(anonymous.get(open).await.code, 200, "{open}");
    }
    let admin = Client::new(dir.path(), cp.addr(), Some(cp.token()));
    assert!(names(&admin.get(DEPLOYMENTS).await.body).is_empty());
    cp.stop().await;
}

#[tokio::test]
async fn bad_input_gets_its_code_and_changes_nothing() {
    let (cp, dir) = start().await;
    let c = Client::new(dir.path(), cp.addr(), Some(cp.token()));
    assert_eq!(c.post(DEPLOYMENTS, &deployment("keep")).await.code, 201);
    let before = c.get(DEPLOYMENTS).await.body;

    // Malformed JSON.
    let r = c
        .request(
            "POST",
            DEPLOYMENTS,
            "application/json",
            b"{\"kind\": ".to_vec(),
        )
        .await;
    assert_status(&r, 400, "BadRequest");
    // Over 3 MiB.
    let mut big = deployment("big");
    big["metadata"]["annotations"] = json!({"x": "y".repeat(3 * 1024 * 1024 + 1)});
    assert_status(
        &c.post(DEPLOYMENTS, &big).await,
        413,
        "RequestEntityTooLarge",
    );
    // Invalid name, and a missing required field, with field causes.
    let r = c.post(DEPLOYMENTS, &deployment("Not_A_Name")).await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(r.body["details"]["causes"][0]["field"], "metadata.name");
    let mut no_image = deployment("no-image");
    no_image["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .expect("container")
        .remove("image");
    let r = c.post(DEPLOYMENTS, &no_image).await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(
        r.body["details"]["causes"][0]["field"],
        "spec.template.spec.containers[0].image"
    );
    // Unknown resource.
    assert_status(
        &c.get("/apis/apps/v1/namespaces/default/widgets").await,
        404,
        "NotFound",
    );
    assert_status(
        &c.post("/api/v1/namespaces/default/widgets", &json!({}))
            .await,
        404,
        "NotFound",
    );
    // Kind or namespace not matching the URL.
    let mut wrong_kind = deployment("wrong-kind");
    wrong_kind["kind"] = json!("ReplicaSet");
    assert_status(&c.post(DEPLOYMENTS, &wrong_kind).await, 400, "BadRequest");
    let mut wrong_ns = deployment("wrong-ns");
    wrong_ns["metadata"]["namespace"] = json!("kube-system");
    assert_status(&c.post(DEPLOYMENTS, &wrong_ns).await, 400, "BadRequest");
    // Unknown fields under strict validation (what kubectl sends).
    let mut unknown = deployment("unknown");
    unknown["spec"]["replicaz"] = json!(1);
    let r = c
        .request(
            "POST",
            &format!("{DEPLOYMENTS}?fieldValidation=Strict"),
            "application/json",
            unknown.to_string().into_bytes(),
        )
        .await;
    assert_status(&r, 400, "BadRequest");
    // Wrong types.
    let mut typed = deployment("typed");
    typed["spec"]["replicas"] = json!("three");
    assert_status(&c.post(DEPLOYMENTS, &typed).await, 400, "BadRequest");
    // A body that is not an object, a bad selector, a bad patch.
    let r = c
        .request("POST", DEPLOYMENTS, "application/json", b"[1,2]".to_vec())
        .await;
    assert_status(&r, 400, "BadRequest");
    assert_status(
        &c.get(&format!("{DEPLOYMENTS}?labelSelector=a%20in%20b"))
            .await,
        400,
        "BadRequest",
    );
    let r = c
        .request(
            "PATCH",
            &format!("{DEPLOYMENTS}/keep"),
            "application/merge-patch+json",
            b"nope".to_vec(),
        )
        .await;
    assert_status(&r, 400, "BadRequest");
    let r = c
        .request(
            "PATCH",
            &format!("{DEPLOYMENTS}/keep"),
            "application/merge-patch+json",
            br#"{"spec":{"replicas":-1}}"#.to_vec(),
        )
        .await;
    assert_status(&r, 422, "Invalid");
    // Creating the same name twice.
    assert_status(
        &c.post(DEPLOYMENTS, &deployment("keep")).await,
        409,
        "AlreadyExists",
    );
    // A namespace that does not exist.
    assert_status(
        &c.post(
            "/apis/apps/v1/namespaces/nowhere/deployments",
            &deployment("lost"),
        )
        .await,
        404,
        "NotFound",
    );

    let after = c.get(DEPLOYMENTS).await.body;
    assert_eq!(before, after, "a refused request changed something");
    cp.stop().await;
}

#[tokio::test]
async fn a_stale_update_is_a_conflict() {
    let (cp, dir) = start().await;
    let c = Client::new(dir.path(), cp.addr(), Some(cp.token()));
    let created = c.post(DEPLOYMENTS, &deployment("web")).await.body;
    let mut first = created.clone();
    first["spec"]["replicas"] = json!(5);
    let r = c
        .request(
            "PUT",
            &format!("{DEPLOYMENTS}/web"),
            "application/json",
            first.to_string().into_bytes(),
        )
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["metadata"]["generation"], 2);
    // `created` still carries the old resourceVersion.
    let mut stale = created;
    stale["spec"]["replicas"] = json!(7);
    let r = c
        .request(
            "PUT",
            &format!("{DEPLOYMENTS}/web"),
            "application/json",
            stale.to_string().into_bytes(),
        )
        .await;
    assert_status(&r, 409, "Conflict");
    assert_eq!(
        c.get(&format!("{DEPLOYMENTS}/web")).await.body["spec"]["replicas"],
        5
    );
    cp.stop().await;
}

#[tokio::test]
async fn generate_name_selectors_subresources_and_delete() {
    let (cp, dir) = start().await;
    let c = Client::new(dir.path(), cp.addr(), Some(cp.token()));
    let pods = "/api/v1/namespaces/default/pods";
    for (i, app) in ["a", "a", "b"].iter().enumerate() {
        let pod = json!({"metadata": {"generateName": "p-", "labels": {"app": app, "i": i.to_string()}},
                         "spec": {"containers": [{"name": "c", "image": "shipshape/probe:v1"}]}});
        let r = c.post(pods, &pod).await;
        assert_eq!(r.code, 201, "{}", r.body);
        assert!(
            r.body["metadata"]["name"]
                .as_str()
                .expect("name")
                .starts_with("p-")
        );
        assert_eq!(r.body["status"]["phase"], "Pending");
    }
    assert_eq!(
        names(&c.get(&format!("{pods}?labelSelector=app%3Da")).await.body).len(),
        2
    );
    assert_eq!(
        names(
            &c.get(&format!("{pods}?labelSelector=app%21%3Da"))
                .await
                .body
        )
        .len(),
        1
    );
    let pod = names(&c.get(&format!("{pods}?labelSelector=app%3Db")).await.body)[0].clone();

    // Bind it to a node, then only the spec.nodeName field selector finds it there.
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod}, "target": {"kind": "Node", "name": "node-1"}});
    assert_eq!(
        c.post(&format!("{pods}/{pod}/binding"), &binding)
            .await
            .code,
        201
    );
    assert_status(
        &c.post(&format!("{pods}/{pod}/binding"), &binding).await,
        409,
        "Conflict",
    );
    let on_node = c
        .get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1")
        .await
        .body;
    assert_eq!(names(&on_node), vec![pod.clone()]);

    // Status is written only through /status.
    let mut with_status = c.get(&format!("{pods}/{pod}")).await.body;
    with_status["status"]["phase"] = json!("Running");
    let body = with_status.to_string().into_bytes();
    let r = c
        .request(
            "PUT",
            &format!("{pods}/{pod}"),
            "application/json",
            body.clone(),
        )
        .await;
    assert_eq!(r.body["status"]["phase"], "Pending");
    let r = c
        .request(
            "PUT",
            &format!("{pods}/{pod}/status"),
            "application/json",
            body,
        )
        .await;
    assert_eq!(r.body["status"]["phase"], "Running", "{}", r.body);

    // A bound pod is only marked terminating (its node agent finishes); grace 0 removes it.
    let r = c
        .request(
            "DELETE",
            &format!("{pods}/{pod}"),
            "application/json",
            Vec::new(),
        )
        .await;
    assert_eq!(r.code, 200);
    assert!(
        r.body["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        r.body
    );
    let r = c
        .request(
            "DELETE",
            &format!("{pods}/{pod}?gracePeriodSeconds=0"),
            "application/json",
            Vec::new(),
        )
        .await;
    assert_eq!(r.code, 200);
    assert_status(&c.get(&format!("{pods}/{pod}")).await, 404, "NotFound");

    // Scale subresource.
    c.post(DEPLOYMENTS, &deployment("web")).await;
    let r = c
        .request(
            "PATCH",
            &format!("{DEPLOYMENTS}/web/scale"),
            "application/merge-patch+json",
            br#"{"spec":{"replicas":4}}"#.to_vec(),
        )
        .await;
    assert_eq!(r.body["kind"], "Scale", "{}", r.body);
    assert_eq!(r.body["spec"]["replicas"], 4);
    assert_eq!(
        c.get(&format!("{DEPLOYMENTS}/web")).await.body["spec"]["replicas"],
        4
    );
    cp.stop().await;
}

/// A controller that follows only names, labels and owners (the garbage collector) reads
/// metadata alone, as kube-rs asks for it with `Api<PartialObjectMeta<K>>`.
#[tokio::test]
async fn objects_can_be_listed_got_and_watched_as_metadata_alone() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;
    use kube::api::{
        Api, ListParams, PartialObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
    };

    let (cp, _dir) = start().await;
    let client = cp.credentials().client().expect("client");
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let metadata: Api<PartialObjectMeta<Pod>> = Api::default_namespaced(client.clone());
    for (name, app) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        let pod = json!({"metadata": {"name": name, "labels": {"app": app}},
                         "spec": {"containers": [{"name": "c", "image": "shipshape/probe:v1"}]}});
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(pod).expect("a Pod"),
        )
        .await
        .expect("created");
    }
    let is_partial = |o: &PartialObjectMeta<Pod>| {
        o.types
            .as_ref()
            .map(|t| (t.api_version.as_str(), t.kind.as_str()))
            == Some(("meta.k8s.io/v1", "PartialObjectMetadata"))
    };

    let list = metadata
        .list(&ListParams::default().labels("app=a"))
        .await
        .expect("list");
    let mut listed: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
    listed.sort();
    assert_eq!(listed, ["a1", "a2"]);
    assert!(list.items.iter().all(is_partial), "{:?}", list.items);
    assert!(list.items.iter().all(|p| p.labels()["app"] == "a"));
    let none = metadata
        .list(&ListParams::default().labels("app=none"))
        .await
        .expect("an empty list");
    assert!(none.items.is_empty());
    assert!(none.metadata.resource_version.is_some());

    let one = metadata.get("b1").await.expect("get");
    assert!(is_partial(&one), "{one:?}");
    assert_eq!(one.labels()["app"], "b");

    // What goes over the wire is the metadata, not the object.
    let request = http::Request::get("/api/v1/namespaces/default/pods?labelSelector=app%3Db")
        .header(
            "Accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        .body(Vec::new())
        .expect("request");
    let raw: Value =
        serde_json::from_str(&client.request_text(request).await.expect("raw list")).expect("JSON");
    assert_eq!(raw["kind"], "PartialObjectMetadataList", "{raw}");
    assert_eq!(raw["items"][0]["metadata"]["name"], "b1", "{raw}");
    assert!(raw["items"][0].get("spec").is_none(), "{raw}");

    let revision = list.metadata.resource_version.expect("a revision");
    let mut changes = metadata
        .watch(&WatchParams::default().labels("app=a"), &revision)
        .await
        .expect("watch")
        .boxed();
    pods.patch(
        "a1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"seen": "yes"}}})),
    )
    .await
    .expect("patched");
    let change = tokio::time::timeout(std::time::Duration::from_secs(10), changes.try_next())
        .await
        .expect("a change within 10 s")
        .expect("a watch event")
        .expect("the watch goes on");
    let WatchEvent::Modified(changed) = change else {
        panic!("expected the label change, got {change:?}");
    };
    assert!(is_partial(&changed), "{changed:?}");
    assert_eq!(changed.name_any(), "a1");
    assert_eq!(changed.labels()["seen"], "yes");
    cp.stop().await;
}

/// ConfigMaps and Secrets are stored as Kubernetes stores them: a Secret's `stringData`
/// becomes `data`, its type defaults to Opaque, keys must be file names, and `immutable`
/// means it.
#[tokio::test]
async fn config_maps_and_secrets_hold_data_as_kubernetes_does() {
    let (cp, dir) = start().await;
    let c = Client::new(dir.path(), cp.addr(), Some(cp.token()));
    let secrets = "/api/v1/namespaces/default/secrets";
    let maps = "/api/v1/namespaces/default/configmaps";

    let r = c
        .post(
            secrets,
            &json!({"metadata": {"name": "login"},
                    "data": {"user": "b2xk"}, "stringData": {"user": "admin", "pin": "1234"}}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let stored = c.get(&format!("{secrets}/login")).await.body;
    assert_eq!(
        stored["data"],
        json!({"user": "YWRtaW4=", "pin": "MTIzNA=="}),
        "{stored}"
    );
    assert!(stored.get("stringData").is_none(), "{stored}");
    assert_eq!(stored["type"], "Opaque");

    let r = c
        .post(
            secrets,
            &json!({"metadata": {"name": "bad"}, "data": {"k": "not base64!"}}),
        )
        .await;
    assert_status(&r, 400, "BadRequest");
    let r = c
        .post(
            maps,
            &json!({"metadata": {"name": "bad"}, "data": {"a b": "c"}}),
        )
        .await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(
        r.body["details"]["causes"][0]["field"], "data[a b]",
        "{}",
        r.body
    );
    let r = c
        .post(
            maps,
            &json!({"metadata": {"name": "bad"}, "data": {"k": "v"}, "binaryData": {"k": "dg=="}}),
        )
        .await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(
        c.get(&format!("{maps}/bad")).await.code,
        404,
        "nothing half-written"
    );

    let r = c
        .post(
            maps,
            &json!({"metadata": {"name": "frozen"}, "immutable": true, "data": {"mode": "fast"}}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let mut changed = r.body.clone();
    changed["data"]["mode"] = json!("slow");
    let r = c
        .request(
            "PUT",
            &format!("{maps}/frozen"),
            "application/json",
            changed.to_string().into_bytes(),
        )
        .await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(
        c.get(&format!("{maps}/frozen")).await.body["data"]["mode"],
        "fast"
    );

    // deletecollection removes what the selector keeps, and only that.
    for (name, app) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        let r = c
            .post(
                maps,
                &json!({"metadata": {"name": name, "labels": {"app": app}}}),
            )
            .await;
        assert_eq!(r.code, 201, "{}", r.body);
    }
    let r = c
        .request(
            "DELETE",
            &format!("{maps}?labelSelector=app%3Da"),
            "application/json",
            Vec::new(),
        )
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["kind"], "ConfigMapList", "{}", r.body);
    assert_eq!(names(&r.body), ["a1", "a2"]);
    assert_eq!(
        names(&c.get(&format!("{maps}?labelSelector=app")).await.body),
        ["b1"]
    );
    cp.stop().await;
}

#[tokio::test]
async fn objects_survive_a_restart_on_the_same_data_dir() {
    let (cp, dir) = start().await;
    let token = cp.token().to_owned();
    let c = Client::new(dir.path(), cp.addr(), Some(&token));
    let created = c.post(DEPLOYMENTS, &deployment("web")).await.body;
    cp.stop().await;
    let cp = ControlPlane::start(ControlPlaneConfig::new(
        dir.path(),
        "127.0.0.1:0".parse().expect("addr"),
    ))
    .await
    .expect("restarts");
    assert_eq!(cp.token(), token, "the token survives a restart");
    let c = Client::new(dir.path(), cp.addr(), Some(&token));
    assert_eq!(c.get(&format!("{DEPLOYMENTS}/web")).await.body, created);
    cp.stop().await;
}

#[tokio::test]
async fn node_ports_are_allocated_once_and_released_on_delete() {
    let (cp, dir) = start().await;
    let c = Client::new(dir.path(), cp.addr(), Some(cp.token()));
    let services = "/api/v1/namespaces/default/services";
    let service = |name: &str, node_port: Option<u16>| {
        let mut port = json!({"port": 80, "targetPort": 8080});
        if let Some(np) = node_port {
            port["nodePort"] = json!(np);
        }
        json!({"metadata": {"name": name},
               "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [port]}})
    };
    let r = c.post(services, &service("auto", None)).await;
    assert_eq!(r.code, 201, "{}", r.body);
    let auto = r.body["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("a node port");
    assert!((30000..=32767).contains(&auto));
    assert!(
        r.body["spec"]["clusterIP"]
            .as_str()
            .expect("an IP")
            .starts_with("10.96.")
    );

    assert_eq!(
        c.post(services, &service("fixed", Some(30080))).await.code,
        201
    );
    let r = c.post(services, &service("clash", Some(30080))).await;
    assert_status(&r, 422, "Invalid");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already allocated")
    );
    assert!(c.get(&format!("{services}/clash")).await.code == 404);

    let r = c
        .request(
            "DELETE",
            &format!("{services}/fixed"),
            "application/json",
            Vec::new(),
        )
        .await;
    assert_eq!(r.code, 200);
    assert_eq!(
        c.post(services, &service("clash", Some(30080))).await.code,
        201
    );
    cp.stop().await;
}

/// Serves HTTP on loopback in the background, answering every request with JSON saying
/// what it saw (method, path with query, body); returns its port.
fn echo_server() -> u16 {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut parts = line.split_whitespace();
            let seen = json!({
                "method": parts.next(),
                "path": parts.next(),
                "body": String::from_utf8_lossy(&body),
            })
            .to_string();
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{seen}",
                seen.len()
            );
        }
    });
    port
}

#[tokio::test]
async fn the_proxy_subresources_reach_a_pod_and_a_service_s_endpoints() {
    let (cp, dir) = start().await;
    let c = Client::new(dir.path(), cp.addr(), Some(cp.token()));
    let port = echo_server();
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "echo", "labels": {"app": "echo"}},
        "spec": {"containers": [{
            "name": "echo", "image": "shipshape/probe:v1",
            "ports": [{"name": "http", "containerPort": port}]
        }]}
    });
    assert_eq!(c.post(pods, &pod).await.code, 201);
    // No address yet: nothing to reach.
    assert_status(
        &c.get(&format!("{pods}/echo/proxy/")).await,
        503,
        "ServiceUnavailable",
    );
    // The pod's "node" reports it running on loopback, where the echo server listens.
    let mut running = c.get(&format!("{pods}/echo")).await.body;
    running["status"] = json!({"phase": "Running", "podIP": "127.0.0.1"});
    let put = c
        .request(
            "PUT",
            &format!("{pods}/echo/status"),
            "application/json",
            running.to_string().into_bytes(),
        )
        .await;
    assert_eq!(put.code, 200, "{}", put.body);
    for target in ["echo", &format!("echo:{port}"), "echo:http"] {
        let r = c.get(&format!("{pods}/{target}/proxy/hello?x=1")).await;
        assert_eq!(r.code, 200, "{target}: {}", r.body);
        assert_eq!(r.body["path"], "/hello?x=1", "{target}");
    }
    let posted = c
        .request(
            "POST",
            &format!("{pods}/echo/proxy/fail/readiness"),
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(posted.body["method"], "POST");
    assert_eq!(posted.body["path"], "/fail/readiness");
    assert_eq!(posted.body["body"], "{}");
    assert_status(
        &c.get(&format!("{pods}/echo:nope/proxy/")).await,
        400,
        "BadRequest",
    );
    assert_status(
        &c.get(&format!("{pods}/ghost/proxy/")).await,
        404,
        "NotFound",
    );

    // A service: its port 80 goes to the echo server's port on its endpoints.
    let services = "/api/v1/namespaces/default/services";
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "echo"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": port}]}
    });
    assert_eq!(c.post(services, &service).await.code, 201);
    assert_status(
        &c.get(&format!("{services}/echo:80/proxy/")).await,
        503,
        "ServiceUnavailable",
    );
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "echo"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": port}]}]
    });
    assert_eq!(
        c.post("/api/v1/namespaces/default/endpoints", &endpoints)
            .await
            .code,
        201
    );
    for target in ["echo", "echo:80"] {
        let r = c.get(&format!("{services}/{target}/proxy/")).await;
        assert_eq!(r.code, 200, "{target}: {}", r.body);
        assert_eq!(r.body["path"], "/", "{target}");
    }
    assert_status(
        &c.get(&format!("{services}/echo:81/proxy/")).await,
        400,
        "BadRequest",
    );
    cp.stop().await;
}

#[tokio::test]
async fn adding_a_member_checks_its_input_and_a_lone_control_plane_refuses_it() {
    let (cp, dir) = start().await;
    let c = Client::new(dir.path(), cp.addr(), Some(cp.token()));
    let members = "/shipshape/v1/members";
    let garbage = c
        .request("POST", members, "application/json", b"{not json".to_vec())
        .await;
    assert_status(&garbage, 400, "BadRequest");
    for bad in [
        json!({"id": 0, "peerAddress": "127.0.0.1:2380"}),
        json!({"id": 2, "peerAddress": "no port"}),
        json!({"id": 2}),
        json!({"id": 2, "peerAddress": "127.0.0.1:2380", "extra": true}),
    ] {
        assert_status(&c.post(members, &bad).await, 400, "BadRequest");
    }
    // A control plane started alone has no peer listener: a second voter it could never
    // reach would leave it without a majority, so it refuses, and stays writable.
    let alone = c
        .post(members, &json!({"id": 2, "peerAddress": "127.0.0.1:2380"}))
        .await;
    assert_status(&alone, 400, "BadRequest");
    assert!(
        alone.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("no peer listener")),
        "{}",
        alone.body
    );
    assert_status(
        &c.request("GET", members, "application/json", Vec::new())
            .await,
        405,
        "MethodNotAllowed",
    );
    assert_eq!(c.post(DEPLOYMENTS, &deployment("web")).await.code, 201);
    cp.stop().await;
}

/// What a client leaves out reads back as Kubernetes sets it, so that `kubectl describe`
/// and client libraries see the same values as on Kubernetes: a Deployment's strategy and
/// limits, its pods' policies, a probe's timing and scheme, a Service's type and ports.
#[tokio::test]
async fn objects_read_back_with_the_defaults_kubernetes_sets() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use kube::api::{Api, PostParams};
    let (cp, _dir) = start().await;
    let client = cp.credentials().client().expect("client");
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let mut web: Deployment = serde_json::from_value(deployment("web")).expect("a Deployment");
    let container = json!({"name": "web", "image": "shipshape/probe:v1",
        "ports": [{"containerPort": 8080}], "readinessProbe": {"httpGet": {"port": 8080}}});
    let spec = web.spec.as_mut().expect("a spec");
    spec.replicas = None;
    let template = spec.template.spec.as_mut();
    template.expect("a pod template").containers =
        vec![serde_json::from_value(container).expect("a container")];
    let web = deployments
        .create(&PostParams::default(), &web)
        .await
        .expect("created");
    let spec = web.spec.expect("a spec");
    assert_eq!(
        (
            spec.replicas,
            spec.revision_history_limit,
            spec.progress_deadline_seconds
        ),
        (Some(1), Some(10), Some(600))
    );
    let strategy = spec.strategy.expect("a strategy");
    let rolling = strategy.rolling_update.expect("rollingUpdate");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let quarter = Some(IntOrString::String("25%".into()));
    assert_eq!(
        (rolling.max_surge, rolling.max_unavailable),
        (quarter.clone(), quarter)
    );
    let pod = spec.template.spec.expect("a pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    assert_eq!(pod.scheduler_name.as_deref(), Some("default-scheduler"));
    let c = &pod.containers[0];
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(
        c.termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    assert_eq!(
        c.ports.as_ref().expect("ports")[0].protocol.as_deref(),
        Some("TCP")
    );
    let probe = c.readiness_probe.as_ref().expect("a probe");
    let timing = (
        probe.timeout_seconds,
        probe.period_seconds,
        probe.success_threshold,
        probe.failure_threshold,
    );
    assert_eq!(timing, (Some(1), Some(10), Some(1), Some(3)));
    let get = probe.http_get.as_ref().expect("httpGet");
    assert_eq!(
        (get.path.as_deref(), get.scheme.as_deref()),
        (Some("/"), Some("HTTP"))
    );

    let services: Api<Service> = Api::default_namespaced(client);
    let service = json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    let service = serde_json::from_value(service).expect("a Service");
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .expect("created");
    let spec = service.spec.expect("a spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(port.target_port, Some(IntOrString::Int(80)));
    cp.stop().await;
}

/// A watch from a revision the history no longer holds ends with one 410 `Expired` error
/// (a client such as kube-rs' watcher then lists again); one that asks for the current
/// objects first gets them and then a bookmark that marks their end; and a watch that
/// allows bookmarks is told now and then where it is, so that it can resume from there
/// without replaying anything.
#[tokio::test]
async fn watches_from_lost_history_are_gone_and_bookmarks_say_where_a_watch_is() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams, WatchEvent, WatchParams};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ControlPlaneConfig::new(dir.path(), "127.0.0.1:0".parse().expect("addr"));
    config.history_window = 20;
    let cp = ControlPlane::start(config)
        .await
        .expect("control plane starts");
    let maps: Api<ConfigMap> = Api::default_namespaced(cp.credentials().client().expect("client"));
    let create = async |name: &str| {
        let map = serde_json::from_value(json!({"metadata": {"name": name}})).expect("a map");
        let created = maps.create(&PostParams::default(), &map).await;
        created
            .expect("created")
            .metadata
            .resource_version
            .expect("a revision")
    };
    let first = create("m0").await;
    for i in 1..60 {
        create(&format!("m{i}")).await;
    }
    let next = async |events: &mut (
                               dyn futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>>
                                   + Unpin
                           )| {
        let within = std::time::Duration::from_secs(15);
        let next = tokio::time::timeout(within, events.try_next()).await;
        next.expect("an event within 15 s")
            .expect("no error")
            .expect("the watch goes on")
    };

    let mut old = maps
        .watch(&WatchParams::default(), &first)
        .await
        .expect("watch")
        .boxed();
    match next(&mut old).await {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Expired, got {other:?}"),
    }

    let streaming = WatchParams::streaming_lists();
    let mut events = maps.watch(&streaming, "0").await.expect("watch").boxed();
    let mut added = 0;
    let end = loop {
        match next(&mut events).await {
            WatchEvent::Added(_) => added += 1,
            WatchEvent::Bookmark(end) => break end,
            other => panic!("expected the maps, then a bookmark, got {other:?}"),
        }
    };
    assert_eq!(added, 60);
    let annotations = &end.metadata.annotations;
    assert_eq!(
        annotations
            .get("k8s.io/initial-events-end")
            .map(String::as_str),
        Some("true")
    );
    // Nothing changes: within the next 10 s or so comes a bookmark, and a watch resumed
    // from it sees what comes next and nothing before.
    let WatchEvent::Bookmark(now) = next(&mut events).await else {
        panic!("expected a bookmark");
    };
    let resumed = maps
        .watch(&WatchParams::default(), &now.metadata.resource_version)
        .await;
    let mut resumed = resumed.expect("watch").boxed();
    create("after").await;
    match next(&mut resumed).await {
        WatchEvent::Added(map) => assert_eq!(map.metadata.name.as_deref(), Some("after")),
        other => panic!("expected the new map, got {other:?}"),
    }
    cp.stop().await;
}

#[tokio::test]
async fn lists_come_in_pages_that_all_show_the_collection_as_the_first_did() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, ListParams, PostParams, VersionMatch};
    let (cp, dir) = start().await;
    let client = cp.credentials().client().expect("client");
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    let map = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("a config map")
    };
    for name in ["a", "b", "c", "d", "e"] {
        maps.create(&PostParams::default(), &map(name))
            .await
            .expect("created");
    }
    let names = |list: &kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        list.items
            .iter()
            .filter_map(|m| m.metadata.name.clone())
            .collect()
    };
    let first = maps
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    assert_eq!(names(&first), ["a", "b"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let revision = first.metadata.resource_version.clone().expect("a revision");
    // Changes after the first page do not show in the next ones.
    maps.delete("d", &DeleteParams::default())
        .await
        .expect("deleted");
    maps.create(&PostParams::default(), &map("f"))
        .await
        .expect("created");
    let mut token = first.metadata.continue_.clone();
    let mut rest = Vec::new();
    while let Some(next) = token.filter(|t| !t.is_empty()) {
        let page = maps
            .list(&ListParams::default().limit(2).continue_token(&next))
            .await
            .expect("next page");
        assert_eq!(
            page.metadata.resource_version.as_deref(),
            Some(revision.as_str())
        );
        rest.extend(names(&page));
        token = page.metadata.continue_.clone();
    }
    assert_eq!(rest, ["c", "d", "e"]);
    // The collection now, and exactly as it was.
    let now = maps.list(&ListParams::default()).await.expect("list");
    assert_eq!(names(&now), ["a", "b", "c", "e", "f"]);
    let then = maps
        .list(
            &ListParams::default()
                .at(&revision)
                .matching(VersionMatch::Exact),
        )
        .await
        .expect("list at a revision");
    assert_eq!(names(&then), ["a", "b", "c", "d", "e"]);
    // A token that is not one, or a revision not reached yet, is refused.
    let bad = maps
        .list(&ListParams::default().continue_token("garbage"))
        .await
        .expect_err("not a token");
    assert!(
        matches!(bad, kube::Error::Api(ref s) if s.code == 400),
        "{bad:?}"
    );
    // (Through plain HTTP: kube-rs quietly retries a 504.)
    let raw = Client::new(dir.path(), cp.addr(), Some(cp.token()));
    let ahead = raw
        .get("/api/v1/namespaces/default/configmaps?resourceVersion=999999&resourceVersionMatch=NotOlderThan")
        .await;
    assert_status(&ahead, 504, "Timeout");
    cp.stop().await;
}

#[tokio::test]
async fn discovery_comes_aggregated_to_clients_that_ask_for_it() {
    let (cp, dir) = start().await;
    let client = cp.credentials().client().expect("client");
    let discovery = kube::Discovery::new(client.clone())
        .run_aggregated()
        .await
        .expect("aggregated discovery");
    let batch = discovery.get("batch").expect("the batch group");
    let kinds: Vec<String> = batch
        .recommended_resources()
        .into_iter()
        .map(|(resource, _)| resource.kind)
        .collect();
    assert!(kinds.contains(&"CronJob".to_owned()), "{kinds:?}");
    let core = client
        .list_core_api_versions_aggregated()
        .await
        .expect("/api, aggregated");
    let pods = core.items[0].versions[0]
        .resources
        .iter()
        .find(|r| r.resource.as_deref() == Some("pods"))
        .expect("pods");
    let subresources: Vec<_> = pods
        .subresources
        .iter()
        .filter_map(|s| s.subresource.clone())
        .collect();
    assert!(
        subresources.contains(&"exec".to_owned()),
        "{subresources:?}"
    );
    // The schemas, as client libraries' and kubectl's validation read them: an index of
    // group versions, and each one's document with its kinds' schemas.
    let get = async |path: &str| -> Value {
        let request = http::Request::get(path).body(Vec::new()).expect("request");
        let text = client.request_text(request).await.expect("an answer");
        serde_json::from_str(&text).expect("JSON")
    };
    let index = get("/openapi/v3").await;
    let apps = index["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str();
    let apps = get(apps.expect("apps/v1 in the index")).await;
    let deployment = &apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
    let kind = &deployment["x-kubernetes-group-version-kind"][0]["kind"];
    assert_eq!(kind, "Deployment", "{deployment}");
    assert!(deployment["properties"]["spec"].is_object(), "{deployment}");
    let swagger = get("/openapi/v2").await;
    assert!(swagger["definitions"]["io.k8s.api.core.v1.Pod"].is_object());
    // A client that does not ask for it gets the list of groups it always did.
    let plain = Client::new(dir.path(), cp.addr(), Some(cp.token()));
    assert_eq!(plain.get("/apis").await.body["kind"], "APIGroupList");
}

#[tokio::test]
async fn reviews_say_who_the_caller_is_and_that_it_may_do_everything() {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SelfSubjectRulesReview};
    use kube::api::{Api, PostParams};
    let (cp, dir) = start().await;
    let client = cp.credentials().client().expect("client");
    let post = PostParams::default();
    let whoami: Api<SelfSubjectReview> = Api::all(client.clone());
    let me = whoami
        .create(&post, &SelfSubjectReview::default())
        .await
        .expect("a review of who I am");
    let user = me.status.and_then(|s| s.user_info).expect("who I am");
    assert_eq!(user.username.as_deref(), Some("admin"));
    assert!(
        user.groups
            .unwrap_or_default()
            .contains(&"system:masters".to_owned())
    );

    let can_i: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let asked: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {
        "resourceAttributes": {"verb": "delete", "group": "apps", "resource": "deployments",
                               "namespace": "default"},
    }}))
    .expect("a review");
    let answer = can_i.create(&post, &asked).await.expect("an access review");
    assert_eq!(answer.status.map(|s| s.allowed), Some(true));
    // Asking about nothing is invalid, and says which field.
    match can_i
        .create(&post, &SelfSubjectAccessReview::default())
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("spec.resourceAttributes"),
                "{status:?}"
            );
        }
        other => panic!("an empty access review was answered: {other:?}"),
    }
    let rules: Api<SelfSubjectRulesReview> = Api::all(client);
    let asked: SelfSubjectRulesReview =
        serde_json::from_value(json!({"spec": {"namespace": "default"}})).expect("a review");
    let answer = rules.create(&post, &asked).await.expect("a rules review");
    let status = answer.status.expect("the rules");
    assert_eq!(status.resource_rules[0].verbs, ["*"]);
    assert!(!status.incomplete);

    // A review is only ever created; without the token there is nothing to review.
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let admin = Client::new(dir.path(), cp.addr(), Some(cp.token()));
    assert_status(&admin.get(path).await, 405, "MethodNotAllowed");
    let anonymous = Client::new(dir.path(), cp.addr(), None);
    assert_status(&anonymous.post(path, &json!({})).await, 401, "Unauthorized");
    cp.stop().await;
}

/// Server-side apply through kube-rs, as a controller or `kubectl apply --server-side`
/// uses it: an apply creates, records its manager, conflicts with another manager's
/// different value (409, the field named), shares an equal one, takes fields when forced,
/// and removes what it stops applying.
#[tokio::test]
async fn server_side_apply_tracks_managers_reports_conflicts_and_forces() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, Patch, PatchParams};

    let (cp, dir) = start().await;
    let client = cp.credentials().client().expect("client");
    let deployments: Api<Deployment> = Api::default_namespaced(client);
    let apply = |manager: &str| PatchParams::apply(manager);
    let mut config = deployment("web");
    config["metadata"]["labels"] = json!({"tier": "front"});

    let created = deployments
        .patch("web", &apply("ci"), &Patch::Apply(&config))
        .await
        .expect("an apply creates");
    let managers = |d: &Deployment| -> Vec<(String, String)> {
        let entries = d.metadata.managed_fields.clone().unwrap_or_default();
        let entries = entries.into_iter();
        entries
            .map(|e| {
                (
                    e.manager.unwrap_or_default(),
                    e.operation.unwrap_or_default(),
                )
            })
            .collect()
    };
    assert_eq!(managers(&created), [("ci".to_owned(), "Apply".to_owned())]);
    let fields = serde_json::to_value(&created.metadata.managed_fields).expect("json");
    assert_eq!(
        fields[0]["fieldsV1"]["f:spec"]["f:replicas"],
        json!({}),
        "{fields}"
    );

    // Another manager changes the replicas; ci applying 3 now conflicts, and nothing changes.
    let scaled = deployments
        .patch(
            "web",
            &PatchParams {
                field_manager: Some("autoscaler".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("a merge patch");
    config["spec"]["replicas"] = json!(3);
    let err = deployments
        .patch("web", &apply("ci"), &Patch::Apply(&config))
        .await
        .expect_err("a conflict");
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 409, "{status:?}");
    assert!(
        status.message.contains("conflict with \"autoscaler\"")
            && status.message.contains(".spec.replicas"),
        "{}",
        status.message
    );
    let unchanged = deployments.get("web").await.expect("get");
    assert_eq!(
        unchanged.metadata.resource_version,
        scaled.metadata.resource_version
    );

    // The raw Status names the field in its causes.
    let c = Client::new(dir.path(), cp.addr(), Some(cp.token()));
    let raw = c
        .request(
            "PATCH",
            &format!("{DEPLOYMENTS}/web?fieldManager=ci"),
            "application/apply-patch+yaml",
            config.to_string().into_bytes(),
        )
        .await;
    assert_status(&raw, 409, "Conflict");
    assert_eq!(
        raw.body["details"]["causes"][0]["field"], ".spec.replicas",
        "{}",
        raw.body
    );

    // Forced, ci takes the field over; then dropping the label removes it.
    let forced = deployments
        .patch("web", &apply("ci").force(), &Patch::Apply(&config))
        .await
        .expect("a forced apply");
    assert_eq!(forced.spec.as_ref().and_then(|s| s.replicas), Some(3));
    config["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("labels");
    let trimmed = deployments
        .patch("web", &apply("ci"), &Patch::Apply(&config))
        .await
        .expect("an apply");
    assert!(
        trimmed.metadata.labels.unwrap_or_default().is_empty(),
        "the label was ci's alone"
    );

    // Bad input: no manager, YAML that is not JSON, force on a merge patch.
    for (query, ct, body) in [
        ("", "application/apply-patch+yaml", config.to_string()),
        (
            "?fieldManager=ci",
            "application/apply-patch+yaml",
            "spec:\n  replicas: 1\n".into(),
        ),
        (
            "?fieldManager=ci&force=true",
            "application/merge-patch+json",
            "{}".into(),
        ),
    ] {
        let reply = c
            .request(
                "PATCH",
                &format!("{DEPLOYMENTS}/web{query}"),
                ct,
                body.into_bytes(),
            )
            .await;
        assert_status(&reply, 400, "BadRequest");
    }
    let after = deployments.get("web").await.expect("get");
    assert_eq!(
        after.metadata.resource_version,
        trimmed.metadata.resource_version
    );
    cp.stop().await;
}

/// ServiceAccount tokens and RBAC through kube-rs: a TokenRequest gives an account a token;
/// the account may read discovery and ask what it may do, and nothing else until a binding
/// gives it a role; a 403 names the user, verb and resource; deleting the account ends the
/// token; the admin may impersonate, an account may not.
#[tokio::test]
async fn service_account_tokens_are_authorized_by_the_roles_bound_to_them() {
    use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest};
    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
    use kube::api::{Api, DeleteParams, ListParams, PostParams};

    let (mut cp, dir) = start().await;
    let admin = cp.credentials().client().expect("client");
    // The default roles are written when the controllers start.
    cp.start_components(Default::default()).expect("components");
    let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bindings
        .get_opt("system:basic-user")
        .await
        .expect("get")
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "no default bindings");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let post = PostParams::default();
    let accounts: Api<ServiceAccount> = Api::default_namespaced(admin.clone());
    let reader =
        serde_json::from_value(json!({"metadata": {"name": "reader"}})).expect("an account");
    accounts.create(&post, &reader).await.expect("created");
    let asked: TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).expect("a request");
    let issued = accounts
        .create_token_request("reader", &post, &asked)
        .await
        .expect("a token");
    let token = issued.status.expect("status").token;

    let mut credentials = cp.credentials();
    credentials.token = token.clone();
    let as_reader = credentials.client().expect("client");
    let whoami: SelfSubjectReview = Api::all(as_reader.clone())
        .create(&post, &serde_json::from_value(json!({})).expect("review"))
        .await
        .expect("whoami");
    let user = whoami.status.and_then(|s| s.user_info).expect("user info");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:reader")
    );
    assert!(
        user.groups
            .unwrap_or_default()
            .contains(&"system:serviceaccounts:default".to_owned())
    );
    assert!(
        as_reader.apiserver_version().await.is_ok(),
        "discovery is open to every account"
    );

    let pods: Api<Pod> = Api::default_namespaced(as_reader.clone());
    let refused = pods
        .list(&ListParams::default())
        .await
        .expect_err("no role yet");
    let kube::Error::Api(status) = refused else {
        panic!("{refused}")
    };
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "pods is forbidden: User \"system:serviceaccount:default:reader\" cannot list \
         resource \"pods\" in API group \"\" in the namespace \"default\""
    );

    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "reader-views"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "default"}],
    }))
    .expect("a binding");
    Api::<RoleBinding>::default_namespaced(admin.clone())
        .create(&post, &binding)
        .await
        .expect("bound");
    assert!(
        pods.list(&ListParams::default()).await.is_ok(),
        "view may list pods"
    );
    let elsewhere: Api<Pod> = Api::namespaced(as_reader.clone(), "kube-system");
    assert!(
        elsewhere.list(&ListParams::default()).await.is_err(),
        "only in default"
    );
    let secrets: Api<Secret> = Api::default_namespaced(as_reader.clone());
    assert!(
        secrets.list(&ListParams::default()).await.is_err(),
        "view may not read secrets"
    );
    let pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "shipshape/probe:v1"}]}}))
    .expect("a pod");
    assert!(
        pods.create(&post, &pod).await.is_err(),
        "view may not create"
    );

    // can-i, from the same authorizer.
    let can_i = |verb: &str| {
        let review = json!({"spec": {"resourceAttributes":
            {"verb": verb, "resource": "pods", "namespace": "default"}}});
        let review: SelfSubjectAccessReview = serde_json::from_value(review).expect("review");
        let reviews: Api<SelfSubjectAccessReview> = Api::all(as_reader.clone());
        async move {
            reviews
                .create(&PostParams::default(), &review)
                .await
                .expect("answered")
        }
    };
    assert!(can_i("list").await.status.expect("status").allowed);
    assert!(!can_i("delete").await.status.expect("status").allowed);

    // Impersonation: the admin may, the account may not.
    let c = Client::new(dir.path(), cp.addr(), Some(&token));
    let reply = c.get("/api/v1/namespaces/default/pods").await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    let admin_raw = Client::new(dir.path(), cp.addr(), Some(cp.token()));
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let reply = admin_raw
        .request_with(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            &[("Impersonate-User", "system:serviceaccount:default:reader")],
            review.to_string().into_bytes(),
        )
        .await;
    assert_eq!(
        reply.body["status"]["userInfo"]["username"],
        "system:serviceaccount:default:reader"
    );
    let reply = c
        .request_with(
            "GET",
            "/api/v1/namespaces",
            &[("Impersonate-User", "admin")],
            Vec::new(),
        )
        .await;
    assert_status(&reply, 403, "Forbidden");

    // Bad input: a token too short-lived, for nobody, or tampered with.
    let short = json!({"spec": {"expirationSeconds": 60}});
    let path = "/api/v1/namespaces/default/serviceaccounts";
    assert_status(
        &admin_raw
            .post(&format!("{path}/reader/token"), &short)
            .await,
        422,
        "Invalid",
    );
    let nobody = admin_raw
        .post(&format!("{path}/nobody/token"), &json!({"spec": {}}))
        .await;
    assert_status(&nobody, 404, "NotFound");
    let mut tampered = token.clone();
    tampered.insert(tampered.len() / 2, 'x');
    let forged = Client::new(dir.path(), cp.addr(), Some(&tampered));
    assert_status(
        &forged.get("/api/v1/namespaces/default/pods").await,
        401,
        "Unauthorized",
    );

    // Deleting the account ends its tokens.
    accounts
        .delete("reader", &DeleteParams::default())
        .await
        .expect("deleted");
    assert_status(
        &c.get("/api/v1/namespaces/default/pods").await,
        401,
        "Unauthorized",
    );
    cp.stop().await;
}

/// Kubernetes' ServiceAccount admission: a pod acts as `default` unless it names an
/// account, and gets its account's credentials as a projected volume, mounted in every
/// container, unless the pod or its account opts out; every namespace has the cluster CA
/// as ConfigMap `kube-root-ca.crt`.
#[tokio::test]
async fn pods_get_their_service_account_credentials_unless_they_opt_out() {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
    use kube::api::{Api, PostParams};

    let (mut cp, _dir) = start().await;
    let admin = cp.credentials().client().expect("client");
    cp.start_components(Default::default()).expect("components");
    let post = PostParams::default();
    let pods: Api<Pod> = Api::default_namespaced(admin.clone());
    let create = |spec: serde_json::Value| {
        let pods = pods.clone();
        async move {
            let pod =
                serde_json::from_value(json!({"metadata": {"generateName": "p-"}, "spec": spec}))
                    .expect("a pod");
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("created")
        }
    };
    let files = "/var/run/secrets/kubernetes.io/serviceaccount";
    let containers = json!([{"name": "a", "image": "shipshape/probe:v1"},
                            {"name": "b", "image": "shipshape/probe:v1",
                             "volumeMounts": [{"name": "own", "mountPath": files}]}]);
    let pod = create(json!({"containers": containers,
        "volumes": [{"name": "own", "emptyDir": {}}]}))
    .await;
    let spec = pod.spec.expect("a spec");
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let volumes = spec.volumes.expect("volumes");
    let access = volumes
        .iter()
        .find(|v| v.name.starts_with("kube-api-access-"))
        .expect("a kube-api-access volume");
    let sources = access.projected.as_ref().and_then(|p| p.sources.clone());
    let sources = serde_json::to_value(sources).expect("json");
    assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(sources[2]["downwardAPI"]["items"][0]["path"], "namespace");
    let mounts = |i: usize| serde_json::to_value(&spec.containers[i].volume_mounts).expect("json");
    assert_eq!(
        mounts(0),
        json!([{"name": access.name, "mountPath": files, "readOnly": true}])
    );
    // A container that mounts something of its own there keeps it.
    assert_eq!(mounts(1), json!([{"name": "own", "mountPath": files}]));

    // Opting out: the pod itself, or its account.
    let one = json!([{"name": "a", "image": "shipshape/probe:v1"}]);
    let pod = create(json!({"containers": one, "automountServiceAccountToken": false})).await;
    assert_eq!(pod.spec.as_ref().and_then(|s| s.volumes.clone()), None);
    let accounts: Api<ServiceAccount> = Api::default_namespaced(admin.clone());
    let quiet = json!({"metadata": {"name": "quiet"}, "automountServiceAccountToken": false});
    accounts
        .create(&post, &serde_json::from_value(quiet).expect("an account"))
        .await
        .expect("created");
    let pod = create(json!({"containers": one, "serviceAccountName": "quiet"})).await;
    let spec = pod.spec.expect("a spec");
    assert_eq!(
        (spec.service_account_name.as_deref(), spec.volumes),
        (Some("quiet"), None)
    );

    // The CA the volume takes `ca.crt` from, in every namespace.
    let maps: Api<ConfigMap> = Api::default_namespaced(admin.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let ca = loop {
        if let Some(map) = maps.get_opt("kube-root-ca.crt").await.expect("get") {
            break map;
        }
        assert!(std::time::Instant::now() < deadline, "no kube-root-ca.crt");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let pem = ca.data.and_then(|d| d.get("ca.crt").cloned());
    assert_eq!(pem, Some(cp.credentials().ca_pem));
}
