//! The real `kubectl` against `shipshape up`: every command the foundation promises, through
//! the kubeconfig `up` writes. Skipped, saying so, only where kubectl is not installed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `shipshape up` process and the kubeconfig it wrote.
struct Cluster {
    child: Child,
    kubeconfig: PathBuf,
}

impl Cluster {
    /// A control plane alone.
    fn up(data_dir: &Path) -> Cluster {
        Cluster::up_with_nodes(data_dir, 0)
    }

    /// A control plane with `nodes` node agents running pods on Docker, and the proxy.
    fn up_with_nodes(data_dir: &Path, nodes: u32) -> Cluster {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shipshape"))
            .args(["up", "--nodes", &nodes.to_string()])
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("shipshape up starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut kubeconfig = None;
        for line in lines.by_ref() {
            let line = line.expect("stdout line");
            if let Some(path) = line.strip_prefix("kubeconfig: ") {
                kubeconfig = Some(PathBuf::from(path));
                break;
            }
        }
        // Keep reading: a closed pipe would fail the cluster's later writes to stdout.
        std::thread::spawn(move || lines.for_each(drop));
        let kubeconfig = kubeconfig.expect("`up` prints the kubeconfig path");
        Cluster { child, kubeconfig }
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.kubectl(args);
        assert!(ok, "kubectl {} failed:\n{text}", args.join(" "));
        text
    }

    /// kubectl with `input` on its stdin; it must succeed. Its stdout and stderr.
    fn with_stdin(&self, args: &[&str], input: &str) -> String {
        use std::io::Write as _;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("writes");
        drop(stdin);
        let out = child.wait_with_output().expect("kubectl ends");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{text}",
            args.join(" ")
        );
        text
    }

    /// Ctrl-C: a clean stop, in which the node agents remove their containers.
    fn interrupt(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill_hard();
    }

    fn kill_hard(&mut self) {
        // SIGKILL: no chance to flush anything that was not already durable.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Cluster {
    /// Interrupted, `up` removes its containers; a test that fails leaves none behind.
    fn drop(&mut self) {
        self.interrupt();
    }
}

fn kubectl_present() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/web.yaml")
}

#[test]
fn kubectl_drives_the_control_plane() {
    if !kubectl_present() {
        eprintln!("SKIPPED kubectl_drives_the_control_plane: kubectl is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::up(dir.path());

    let namespaces = cluster.ok(&["get", "namespaces"]);
    assert!(namespaces.contains("default"), "{namespaces}");

    // The Service every cluster has, naming the apiserver kubectl talks to.
    let server = cluster.ok(&[
        "config",
        "view",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let port = server.rsplit(':').next().unwrap_or_default().to_owned();
    let endpoints = || {
        cluster
            .kubectl(&[
                "get",
                "endpoints",
                "kubernetes",
                "-o",
                "jsonpath={.subsets[0].ports[0].port}",
            ])
            .1
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while endpoints() != port && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        endpoints(),
        port,
        "the endpoints of service kubernetes, for {server}"
    );
    let service = cluster.ok(&["get", "service", "kubernetes"]);
    assert!(
        service.lines().any(|l| l.starts_with("kubernetes")
            && l.contains("10.96.0.1")
            && l.contains("443/TCP")),
        "{service}"
    );

    // Discovery in one document per /api and /apis: no request per group version.
    let cache = dir.path().join("discovery-cache");
    let cache = format!("--cache-dir={}", cache.display());
    let resources = cluster.ok(&["api-resources", "-v=6", &cache]);
    assert!(
        resources.contains("/apis?timeout") && !resources.contains("/apis/apps/v1?"),
        "{resources}"
    );
    let cronjobs = resources.lines().find(|l| l.starts_with("cronjobs "));
    let columns: Vec<&str> = cronjobs.unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        columns,
        ["cronjobs", "cj", "batch/v1", "true", "CronJob"],
        "{resources}"
    );

    // The schemas as one Swagger 2.0 document, for the tools that still read /openapi/v2.
    let v2: serde_json::Value =
        serde_json::from_str(&cluster.ok(&["get", "--raw", "/openapi/v2"])).expect("JSON");
    assert_eq!(v2["swagger"], "2.0");
    let replicas =
        &v2["definitions"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"];
    assert_eq!(replicas["type"], "integer", "{replicas}");

    // explain: the kinds' schemas, descriptions and all, from /openapi/v3.
    let explained = cluster.ok(&["explain", "deployment.spec.replicas"]);
    assert!(
        explained.contains("FIELD: replicas <integer>")
            && explained.contains("Number of desired pods"),
        "{explained}"
    );
    let explained = cluster.ok(&[
        "explain",
        "cronjobs.spec.jobTemplate.spec.template.spec.containers",
    ]);
    assert!(
        explained.contains("FIELD: containers <[]Container>"),
        "{explained}"
    );

    // Who am I, and what may I do: the cluster's administrator, everything.
    let whoami = cluster.ok(&["auth", "whoami"]);
    assert!(
        whoami.contains("admin") && whoami.contains("system:masters"),
        "{whoami}"
    );
    assert_eq!(
        cluster
            .ok(&["auth", "can-i", "delete", "deployments"])
            .trim(),
        "yes"
    );
    let rules = cluster.ok(&["auth", "can-i", "--list"]);
    assert!(rules.lines().any(|l| l.starts_with("*.*")), "{rules}");

    // A ServiceAccount's token is authorized by the roles bound to it.
    cluster.ok(&["create", "serviceaccount", "reader"]);
    let token = cluster.ok(&["create", "token", "reader"]);
    let token = format!("--token={}", token.trim());
    let reader = ["--as=system:serviceaccount:default:reader"];
    let can_list = |cluster: &Cluster| {
        let (_, answer) = cluster.kubectl(&["auth", "can-i", "list", "pods", reader[0]]);
        answer.trim().to_owned()
    };
    assert_eq!(can_list(&cluster), "no");
    let (listed, text) = cluster.kubectl(&[&token, "get", "pods"]);
    assert!(!listed, "{text}");
    assert!(
        text.contains(
            "User \"system:serviceaccount:default:reader\" cannot list resource \"pods\""
        ),
        "{text}"
    );
    cluster.ok(&[
        "create",
        "rolebinding",
        "reader-views",
        "--clusterrole=view",
        "--serviceaccount=default:reader",
    ]);
    assert_eq!(can_list(&cluster), "yes");
    cluster.ok(&[&token, "get", "pods"]);
    let whoami = cluster.ok(&[&token, "auth", "whoami"]);
    assert!(
        whoami.contains("system:serviceaccount:default:reader"),
        "{whoami}"
    );
    let (deleted, text) = cluster.kubectl(&[&token, "create", "configmap", "mine"]);
    assert!(!deleted && text.contains("forbidden"), "{text}");
    let roles = cluster.ok(&["get", "clusterroles,rolebindings", "-o", "name"]);
    for role in [
        "clusterrole.rbac.authorization.k8s.io/view",
        "rolebinding.rbac.authorization.k8s.io/reader-views",
    ] {
        assert!(roles.contains(role), "{roles}");
    }

    // A typed create: kubectl sends protobuf for this one.
    let created = cluster.ok(&[
        "create",
        "deployment",
        "web",
        "--image=shipshape/probe:v1",
        "--replicas=3",
    ]);
    assert!(created.contains("deployment.apps/web created"), "{created}");
    let yaml = cluster.ok(&["get", "deployments", "-o", "yaml"]);
    assert!(yaml.contains("replicas: 3"), "{yaml}");
    assert!(yaml.contains("image: shipshape/probe:v1"), "{yaml}");
    let deleted = cluster.ok(&["delete", "deployment", "web"]);
    assert!(deleted.contains("deleted"), "{deleted}");
    let (found, text) = cluster.kubectl(&["get", "deployment", "web"]);
    assert!(!found && text.contains("NotFound"), "{text}");

    // apply, twice: the second changes nothing.
    let m = manifest();
    let m = m.to_str().expect("utf-8 path");
    let first = cluster.ok(&["apply", "-f", m]);
    assert!(first.contains("deployment.apps/web created"), "{first}");
    assert!(first.contains("service/web created"), "{first}");
    let second = cluster.ok(&["apply", "-f", m]);
    assert!(second.contains("deployment.apps/web unchanged"), "{second}");
    assert!(second.contains("service/web unchanged"), "{second}");

    // scale and set image go through the scale subresource and a strategic merge patch.
    cluster.ok(&["scale", "deployment", "web", "--replicas=5"]);
    cluster.ok(&["set", "image", "deployment/web", "probe=shipshape/probe:v2"]);
    let spec = cluster.ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(spec.trim(), "5 shipshape/probe:v2");

    // Server-side apply: the manifest's replicas and image now belong to the managers of
    // scale and set image, so applying it conflicts, names them, and changes nothing;
    // --force-conflicts takes them over.
    let (applied, text) = cluster.kubectl(&["apply", "--server-side", "-f", m]);
    assert!(!applied, "{text}");
    assert!(text.contains("Apply failed with 2 conflicts"), "{text}");
    assert!(
        text.contains(".spec.replicas") && text.contains(".image"),
        "{text}"
    );
    let forced = cluster.ok(&["apply", "--server-side", "--force-conflicts", "-f", m]);
    assert!(
        forced.contains("deployment.apps/web serverside-applied"),
        "{forced}"
    );
    let spec = cluster.ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(spec.trim(), "3 shipshape/probe:v1");
    let managers = cluster.ok(&[
        "get",
        "deployment",
        "web",
        "--show-managed-fields",
        "-o",
        "jsonpath={range .metadata.managedFields[*]}{.manager}/{.operation} {end}",
    ]);
    assert!(managers.contains("kubectl/Apply"), "{managers}");
    // The components write under their own names, as Kubernetes' do.
    assert!(
        managers.contains("kube-controller-manager/Update"),
        "{managers}"
    );

    // get --watch streams: a pod created after the watch began shows up in it.
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["get", "pods", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("watch starts");
    std::thread::sleep(Duration::from_millis(500));
    cluster.ok(&["run", "watched", "--image=shipshape/probe:v1"]);
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
            if seen.iter().any(|l| l == "pod/watched") {
                break;
            }
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen.iter().any(|l| l == "pod/watched"),
        "watch printed {seen:?}"
    );
}

#[test]
fn kubectl_keeps_configuration_secrets_and_service_accounts() {
    if !kubectl_present() {
        eprintln!(
            "SKIPPED kubectl_keeps_configuration_secrets_and_service_accounts: kubectl is not installed"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::up_with_nodes(dir.path(), 1);

    // A new namespace gets its default service account from a controller.
    cluster.ok(&["create", "namespace", "team"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let accounts = loop {
        let accounts = cluster.ok(&["get", "serviceaccounts", "-n", "team", "-o", "name"]);
        if accounts.contains("serviceaccount/default") || Instant::now() > deadline {
            break accounts;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(accounts.contains("serviceaccount/default"), "{accounts}");
    let created = cluster.ok(&["create", "serviceaccount", "robot", "-n", "team"]);
    assert!(
        created.contains("serviceaccount/robot created"),
        "{created}"
    );

    // kubectl sends these typed creates as protobuf.
    let created = cluster.ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=fast",
        "--from-literal=level=3",
    ]);
    assert!(created.contains("configmap/settings created"), "{created}");
    let table = cluster.ok(&["get", "configmaps", "settings"]);
    assert!(table.contains("DATA"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("settings") && l.split_whitespace().nth(1) == Some("2")),
        "{table}"
    );
    let mode = cluster.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.mode}"]);
    assert_eq!(mode.trim(), "fast");
    // Lists in pages (kubectl asks for 500 at a time; here, one): the same objects.
    // (Without the AGE column, which may tick between the two.)
    let columns = "-o=custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name";
    let whole = cluster.ok(&["get", "serviceaccounts", "-A", columns, "--chunk-size=0"]);
    let paged = cluster.ok(&["get", "serviceaccounts", "-A", columns, "--chunk-size=1"]);
    assert_eq!(paged, whole);
    assert!(whole.lines().count() > 3, "{whole}");
    let page: serde_json::Value =
        serde_json::from_str(&cluster.ok(&["get", "--raw", "/api/v1/serviceaccounts?limit=1"]))
            .expect("a list");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert!(page["metadata"]["continue"].is_string(), "{page}");

    // The README's pod, before the Secret it mounts exists: its container waits, and says
    // why.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/configured.yaml");
    cluster.ok(&["apply", "-f", example.to_str().expect("utf-8 path")]);
    let waiting = |cluster: &Cluster| {
        cluster.ok(&[
            "get",
            "pod",
            "configured",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason} {.status.containerStatuses[0].state.waiting.message}",
        ])
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !waiting(&cluster).contains("CreateContainerConfigError") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        waiting(&cluster).trim(),
        "CreateContainerConfigError secret \"login\" not found"
    );

    let created = cluster.ok(&[
        "create",
        "secret",
        "generic",
        "login",
        "--from-literal=user=admin",
    ]);
    assert!(created.contains("secret/login created"), "{created}");
    let user = cluster.ok(&[
        "get",
        "secret",
        "login",
        "-o",
        "jsonpath={.type} {.data.user}",
    ]);
    assert_eq!(user.trim(), "Opaque YWRtaW4=", "base64 of admin");
    let table = cluster.ok(&["get", "secrets"]);
    assert!(
        table.contains("TYPE") && table.contains("Opaque"),
        "{table}"
    );

    // Now it starts, with a variable from the ConfigMap and the Secret's keys as files.
    let ready = cluster.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/configured",
        "--timeout=60s",
    ]);
    assert!(ready.contains("condition met"), "{ready}");
    // Its node agent wrote its status under the kubelet's name.
    let managers = cluster.ok(&[
        "get",
        "pod",
        "configured",
        "--show-managed-fields",
        "-o",
        "jsonpath={range .metadata.managedFields[*]}{.manager}/{.operation}/{.subresource} {end}",
    ]);
    assert!(managers.contains("kubelet/Update/status"), "{managers}");
    // Its heartbeat: a Lease the node renews.
    let leases = cluster.ok(&["get", "leases", "-n", "kube-node-lease"]);
    assert!(
        leases.contains("HOLDER") && leases.contains("node-1"),
        "{leases}"
    );
    let proxy = "/api/v1/namespaces/default/pods/configured:8080/proxy";
    let answer = cluster.ok(&["get", "--raw", &format!("{proxy}/")]);
    assert!(answer.contains("\"version\":\"fast\""), "{answer}");
    let user = cluster.ok(&[
        "get",
        "--raw",
        &format!("{proxy}/file?path=/etc/login/user"),
    ]);
    assert_eq!(user, "admin");
    // Its account's credentials, where client libraries look for them: the token says
    // who the pod is.
    let account_file = |name: &str| {
        let path = format!("/var/run/secrets/kubernetes.io/serviceaccount/{name}");
        cluster.ok(&["get", "--raw", &format!("{proxy}/file?path={path}")])
    };
    assert_eq!(account_file("namespace"), "default");
    assert!(account_file("ca.crt").starts_with("-----BEGIN CERTIFICATE-----"));
    let token = format!("--token={}", account_file("token"));
    let whoami = cluster.ok(&[&token, "auth", "whoami"]);
    assert!(
        whoami.contains("system:serviceaccount:default:default"),
        "{whoami}"
    );
    // And where they find the apiserver: the `kubernetes` Service's endpoint, in its
    // environment. The pod reaches it (a plain-HTTP request gets an answer that is not
    // HTTP: TLS's), and its certificate is valid there.
    let environ = cluster.ok(&[
        "get",
        "--raw",
        &format!("{proxy}/file?path=/proc/self/environ"),
    ]);
    let var = |name: &str| {
        let prefix = format!("{name}=");
        let found = environ.split('\0').find_map(|v| v.strip_prefix(&prefix));
        found.unwrap_or_else(|| panic!("{name} is not set: {environ:?}"))
    };
    let apiserver = format!(
        "{}:{}",
        var("KUBERNETES_SERVICE_HOST"),
        var("KUBERNETES_SERVICE_PORT")
    );
    let endpoint = cluster.ok(&[
        "get",
        "endpoints",
        "kubernetes",
        "-o",
        "jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
    ]);
    assert_eq!(apiserver, endpoint);
    let traffic = format!("{proxy}/traffic?target={apiserver}/&for_s=2&pause_ms=100");
    let started = cluster.ok(&["create", "--raw", &traffic, "-f", "/dev/null"]);
    let number = started.trim().trim_start_matches("{\"traffic\":");
    let outcomes = format!("{proxy}/traffic/{}", number.trim_end_matches('}'));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = cluster.ok(&["get", "--raw", &outcomes]);
    while seen.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        seen = cluster.ok(&["get", "--raw", &outcomes]);
    }
    assert!(seen.contains("failed\ta malformed answer"), "{seen}");
    let server = format!("--server=https://{apiserver}");
    let whoami = cluster.ok(&[&server, &token, "auth", "whoami"]);
    assert!(
        whoami.contains("system:serviceaccount:default:default"),
        "{whoami}"
    );

    // A job, sent as protobuf too: its pod works a second on the node and ends well.
    let created = cluster.ok(&[
        "create",
        "job",
        "once",
        "--image=shipshape/probe:v1",
        "--",
        "/probe",
        "run",
        "1",
    ]);
    assert!(created.contains("job.batch/once created"), "{created}");
    let done = cluster.ok(&[
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=60s",
    ]);
    assert!(done.contains("condition met"), "{done}");
    let table = cluster.ok(&["get", "jobs"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("once") && l.contains("Complete") && l.contains("1/1")),
        "{table}"
    );
    let logs = cluster.ok(&["logs", "job/once"]);
    assert!(logs.contains("worked 1 s"), "{logs}");

    // A cron job (protobuf as well): its schedule shown, a job made from it at once.
    let created = cluster.ok(&[
        "create",
        "cronjob",
        "nightly",
        "--image=shipshape/probe:v1",
        "--schedule=0 3 * * *",
        "--",
        "/probe",
        "run",
        "1",
    ]);
    assert!(
        created.contains("cronjob.batch/nightly created"),
        "{created}"
    );
    let table = cluster.ok(&["get", "cronjobs"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("nightly") && l.contains("0 3 * * *")),
        "{table}"
    );
    cluster.ok(&["create", "job", "tonight", "--from=cronjob/nightly"]);
    cluster.ok(&[
        "wait",
        "--for=condition=complete",
        "job/tonight",
        "--timeout=60s",
    ]);
    let (refused, text) = cluster.kubectl(&[
        "create",
        "cronjob",
        "never",
        "--image=shipshape/probe:v1",
        "--schedule=61 * * * *",
    ]);
    assert!(!refused && text.contains("spec.schedule"), "{text}");

    // A daemon set: one pod on the node, then a new image rolled out to it.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/daemon.yaml");
    cluster.ok(&["apply", "-f", example.to_str().expect("utf-8 path")]);
    let rolled = cluster.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(rolled.contains("successfully rolled out"), "{rolled}");
    cluster.ok(&["set", "image", "ds/agent", "probe=shipshape/probe:v2"]);
    let rolled = cluster.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(rolled.contains("successfully rolled out"), "{rolled}");
    let table = cluster.ok(&["get", "ds", "agent"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("agent") && l.split_whitespace().nth(1) == Some("1")),
        "{table}"
    );
    // The old pod may take a moment to go once its successor is ready.
    let images = |cluster: &Cluster| {
        cluster.ok(&[
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ])
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while images(&cluster).trim() != "shipshape/probe:v2" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(images(&cluster).trim(), "shipshape/probe:v2");

    // A stateful set: pods named by ordinal, a new image rolled out, each template kept as
    // a revision, and a scale down from the last pod.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/stateful.yaml");
    cluster.ok(&["apply", "-f", example.to_str().expect("utf-8 path")]);
    let rolled = cluster.ok(&["rollout", "status", "sts/db", "--timeout=90s"]);
    assert!(
        rolled.contains("partitioned roll out complete: 2 new pods"),
        "{rolled}"
    );
    let pods = |cluster: &Cluster| cluster.ok(&["get", "pods", "-l", "app=db", "-o", "name"]);
    assert_eq!(pods(&cluster), "pod/db-0\npod/db-1\n");
    let host = cluster.ok(&[
        "get",
        "pod",
        "db-1",
        "-o",
        "jsonpath={.spec.hostname}.{.spec.subdomain}",
    ]);
    assert_eq!(host, "db-1.db");
    let table = cluster.ok(&["get", "all"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("statefulset.apps/db") && l.contains("2/2")),
        "{table}"
    );
    cluster.ok(&["set", "image", "sts/db", "probe=shipshape/probe:v2"]);
    let rolled = cluster.ok(&["rollout", "status", "sts/db", "--timeout=90s"]);
    assert!(
        rolled.contains("partitioned roll out complete: 2 new pods"),
        "{rolled}"
    );
    let history = cluster.ok(&["rollout", "history", "sts/db"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(revisions.ends_with(&["1", "2"]), "{history}");
    // Undone, back to revision 1's template, which becomes revision 3.
    let undone = cluster.ok(&["rollout", "undo", "sts/db"]);
    assert!(undone.contains("rolled back"), "{undone}");
    cluster.ok(&["rollout", "status", "sts/db", "--timeout=90s"]);
    let image = cluster.ok(&[
        "get",
        "sts",
        "db",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "shipshape/probe:v1");
    let history = cluster.ok(&["rollout", "history", "sts/db"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(revisions.ends_with(&["2", "3"]), "{history}");
    let revisions = cluster.ok(&["get", "controllerrevisions"]);
    assert!(revisions.contains("statefulset.apps/db"), "{revisions}");
    cluster.ok(&["scale", "sts/db", "--replicas=1"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pods(&cluster) != "pod/db-0\n" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(pods(&cluster), "pod/db-0\n");
    cluster.interrupt();
}

#[test]
fn an_acknowledged_create_survives_kill_9() {
    if !kubectl_present() {
        eprintln!("SKIPPED an_acknowledged_create_survives_kill_9: kubectl is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::up(dir.path());
    cluster.ok(&[
        "create",
        "deployment",
        "durable",
        "--image=shipshape/probe:v1",
    ]);
    let uid = cluster.ok(&[
        "get",
        "deployment",
        "durable",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    cluster.kill_hard();
    drop(cluster);
    let cluster = Cluster::up(dir.path());
    let after = cluster.ok(&[
        "get",
        "deployment",
        "durable",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert_eq!(after, uid);
}

/// `GET /` through a node port on loopback: the probe's answer, or why there is none.
fn get_through(port: u16) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

/// Runs `kubectl port-forward {target} :{port}` and sends `GET /` twice through the local
/// port it picks: the second answer (each has a connection of its own). `websockets`:
/// whether kubectl may tunnel SPDY in a WebSocket, or must speak SPDY itself.
fn forwarded_answer(cluster: &Cluster, target: &str, port: &str, websockets: bool) -> String {
    let mut forward = Command::new("kubectl")
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["port-forward", target, &format!(":{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward starts");
    let mut line = String::new();
    let stdout = forward.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout);
    let _ = lines.read_line(&mut line);
    // "Forwarding from 127.0.0.1:41234 -> 8080"
    let local = line
        .split_whitespace()
        .nth(2)
        .and_then(|address| address.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok());
    let answers: Vec<Result<String, String>> = match local {
        Some(local) => (0..2).map(|_| get_through(local)).collect(),
        None => vec![Err(format!("no local port in {line:?}"))],
    };
    let _ = forward.kill();
    let output = forward
        .wait_with_output()
        .expect("kubectl port-forward ends");
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    match answers.last() {
        Some(Ok(answer)) if answer.starts_with("HTTP/1.1 200") => answer.clone(),
        other => panic!("port-forward {target}: {other:?}; kubectl said {said:?}"),
    }
}

/// What 30 requests through the service's node port were answered with: the distinct
/// values of one field of the probe's JSON answer (`version`, `pod`).
fn answers_through(port: u16, field: &str) -> Vec<String> {
    let mut values: Vec<String> = (0..30)
        .filter_map(|_| get_through(port).ok())
        .filter_map(|answer| {
            let body = answer.split("\r\n\r\n").nth(1)?.to_owned();
            let json: serde_json::Value = serde_json::from_str(&body).ok()?;
            Some(json.get(field)?.as_str()?.to_owned())
        })
        .collect();
    values.sort();
    values.dedup();
    values
}

fn versions_through(port: u16) -> Vec<String> {
    answers_through(port, "version")
}

/// The versions answering once a rollout to `version` is done. The old pods are on their
/// way out by then, and leave the service's endpoints a moment later (as on Kubernetes):
/// they may answer for up to 10 s, but no longer.
fn versions_after_rollout(port: u16, version: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let versions = versions_through(port);
        if versions == [version] || Instant::now() > deadline {
            return versions;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kubectl_rolls_out_and_back() {
    if !kubectl_present() {
        eprintln!("SKIPPED kubectl_rolls_out_and_back: kubectl is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::up_with_nodes(dir.path(), 2);
    let m = manifest();
    cluster.ok(&["apply", "-f", m.to_str().expect("utf-8 path")]);
    let status = cluster.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let port: u16 = cluster
        .ok(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .trim()
        .parse()
        .expect("a node port");
    assert_eq!(versions_through(port), ["v1"]);
    // The service's ready pods, as EndpointSlices too.
    let slices = cluster.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "jsonpath={.items[*].metadata.name} {.items[*].endpoints[*].conditions.ready}",
    ]);
    assert!(slices.starts_with("web-0 true"), "{slices}");

    // set image → revision 2, rolled out step by step, v2 answering.
    cluster.ok(&["set", "image", "deployment/web", "probe=shipshape/probe:v2"]);
    let status = cluster.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    assert_eq!(versions_after_rollout(port, "v2"), ["v2"]);
    let history = cluster.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let first = cluster.ok(&["rollout", "history", "deployment/web", "--revision=1"]);
    assert!(first.contains("shipshape/probe:v1"), "{first}");

    // undo --to-revision=1: v1 again, renumbered as revision 3, as Kubernetes does.
    let undo = cluster.ok(&["rollout", "undo", "deployment/web", "--to-revision=1"]);
    assert!(undo.contains("rolled back"), "{undo}");
    cluster.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert_eq!(versions_after_rollout(port, "v1"), ["v1"]);
    let history = cluster.ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.contains('3') && !history.contains("\n1 "),
        "{history}"
    );

    // pause: a new image is recorded but not rolled out, until resume.
    cluster.ok(&["rollout", "pause", "deployment/web"]);
    cluster.ok(&["set", "image", "deployment/web", "probe=shipshape/probe:v2"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(versions_through(port), ["v1"], "paused: nothing rolls");
    let (undone, text) = cluster.kubectl(&["rollout", "undo", "deployment/web"]);
    assert!(!undone && text.contains("paused"), "{text}");
    cluster.ok(&["rollout", "resume", "deployment/web"]);
    cluster.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert_eq!(versions_after_rollout(port, "v2"), ["v2"]);

    // restart: new pods of the same template answer; none of the old ones does.
    let before = answers_through(port, "pod");
    cluster.ok(&["rollout", "restart", "deployment/web"]);
    cluster.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let after = answers_through(port, "pod");
    assert!(!after.is_empty());
    for pod in &after {
        assert!(
            !before.contains(pod),
            "{pod} answered before and after a restart"
        );
    }

    // autoscale: between 1 and 4 replicas, at 50% of the CPU requested. Its containers
    // request none, so it cannot scale on CPU, and it says so.
    let autoscaled = cluster.ok(&[
        "autoscale",
        "deployment",
        "web",
        "--min=1",
        "--max=4",
        "--cpu-percent=50",
    ]);
    assert!(
        autoscaled.contains("horizontalpodautoscaler.autoscaling/web autoscaled"),
        "{autoscaled}"
    );
    let table = cluster.ok(&["get", "hpa", "web"]);
    assert!(
        table.contains("REFERENCE") && table.contains("Deployment/web"),
        "{table}"
    );
    assert!(table.contains("cpu: <unknown>/50%"), "{table}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut described = cluster.ok(&["describe", "hpa", "web"]);
    while !described.contains("missing request for cpu") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        described = cluster.ok(&["describe", "hpa", "web"]);
    }
    assert!(
        described.contains("ScalingActive") && described.contains("FailedGetResourceMetric"),
        "{described}"
    );
    cluster.ok(&["delete", "hpa", "web"]);
    // On what the service proxy counts: the README's example, which reads it from
    // custom.metrics.k8s.io.
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/autoscale-on-connections.yaml");
    cluster.ok(&["apply", "-f", example.to_str().expect("a UTF-8 path")]);
    let raw = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/*/connections_in_flight";
    let metrics = cluster.ok(&["get", "--raw", raw]);
    assert!(metrics.contains("\"connections_in_flight\""), "{metrics}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut table = cluster.ok(&["get", "hpa", "web-connections"]);
    while table.contains("<unknown>/5") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        table = cluster.ok(&["get", "hpa", "web-connections"]);
    }
    // (What the test sent to `web` before is counted too: some thousandths a second.)
    let seen = table
        .split_once("connections_per_second: ")
        .map(|(_, rest)| rest);
    assert!(
        seen.is_some_and(|s| s.starts_with(|c: char| c.is_ascii_digit()) && s.contains("m/5")),
        "{table}"
    );
    cluster.ok(&["delete", "hpa", "web-connections"]);

    // logs -f: what the container wrote, then what it writes next, until it stops.
    cluster.ok(&["run", "logger", "--image=shipshape/probe:v1"]);
    cluster.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/logger",
        "--timeout=60s",
    ]);
    // exec: a process in the container, its output and its exit code; stdin with -i,
    // its end the end of the process's input. attach (`run -i`): the container's own.
    let (ok, text) = cluster.kubectl(&["exec", "logger", "--", "/probe", "run", "0", "3"]);
    assert!(
        !ok && text.contains("command terminated with exit code 3"),
        "{text}"
    );
    let cat = cluster.with_stdin(&["exec", "-i", "logger", "--", "/probe", "cat"], "typed\n");
    assert!(
        cat.contains("typed") && cat.contains("copied 6 bytes"),
        "{cat}"
    );
    let attached = cluster.with_stdin(
        &[
            "run",
            "reader",
            "--image=shipshape/probe:v1",
            "-i",
            "--rm",
            "--restart=Never",
            "--command",
            "--",
            "/probe",
            "cat",
        ],
        "through attach\n",
    );
    assert!(attached.contains("through attach"), "{attached}");
    // port-forward: local connections reach the pod's port, and a service's pods; over
    // SPDY in a WebSocket (kubectl's first choice), and over SPDY itself (its fallback).
    assert!(
        forwarded_answer(&cluster, "pod/logger", "8080", true).contains("logger"),
        "through port-forward to pod/logger"
    );
    assert!(
        forwarded_answer(&cluster, "svc/web", "80", false).contains("\"version\":\"v2\""),
        "through port-forward to svc/web"
    );
    // top: what the pod and the nodes use, from metrics.k8s.io.
    let top = cluster.ok(&["top", "pod", "logger", "--containers"]);
    assert!(
        top.lines()
            .any(|l| l.starts_with("logger   logger") && l.trim_end().ends_with("Mi")),
        "{top}"
    );
    let top = cluster.ok(&["top", "nodes"]);
    assert!(top.contains("CPU(%)") && top.contains("node-1"), "{top}");

    let mut follow = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["logs", "-f", "logger"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f starts");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the start-up line");
    assert!(first.contains("listening"), "{first}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        matches!(follow.try_wait(), Ok(None)),
        "logs -f ended while the container runs"
    );
    cluster.ok(&["delete", "pod", "logger", "--wait=false"]);
    let mut later = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        later.push(line);
    }
    assert!(
        later.iter().any(|l| l.contains("SIGTERM received")),
        "followed after the start-up line: {later:?}"
    );
    // Its output is closed; the process itself ends a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ended = follow.try_wait().expect("kubectl logs -f");
    while ended.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        ended = follow.try_wait().expect("kubectl logs -f");
    }
    if ended.is_none() {
        let _ = follow.kill();
        let _ = follow.wait();
    }
    assert!(
        ended.is_some_and(|status| status.success()),
        "kubectl logs -f did not end with its container: {ended:?}"
    );

    cluster.interrupt();
}
