//! `shipshape up --control-plane 3`, as a user runs it: three member processes behind one
//! address. Killing a member with SIGKILL — the one running the controllers — leaves the
//! cluster serving: writes go on through the same address, another member takes the
//! controllers' Lease and acts on new deployments, no replica is made twice, and `up`
//! starts the killed member again.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use shipshape::client::Credentials;

mod eventually;
mod up;
use eventually::eventually;

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "shipshape/probe:v1"}]},
            },
        },
    }))
    .expect("a valid deployment")
}

async fn pods_of(pods: &Api<Pod>, app: &str) -> usize {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map_or(0, |list| list.items.len())
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("shipshape-controllers")
        .await
        .ok()
        .flatten()
        .and_then(|lease| lease.spec?.holder_identity)
}

/// The member id in a Lease holder's identity (`member-2_a1b2c3`).
fn member_id(holder: &str) -> &str {
    let id = holder.trim_start_matches("member-");
    id.split('_').next().unwrap_or(id)
}

fn member_pid(dir: &Path, member: &str) -> u32 {
    let id = member_id(member);
    std::fs::read_to_string(dir.join("members").join(id).join("pid"))
        .expect("the member's pid file")
        .trim()
        .parse()
        .expect("a pid")
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Starts `shipshape up --control-plane 3` on `dir` with no nodes; the process and its URL.
async fn start_up(dir: &Path) -> (tokio::process::Child, String) {
    let args = ["--control-plane", "3", "--nodes", "0"];
    up::start_up(dir, &args, Duration::from_secs(90)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_end_when_up_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut up, _) = start_up(dir.path()).await;
    let members: Vec<u32> = (1..=3)
        .map(|i| member_pid(dir.path(), &format!("member-{i}")))
        .collect();
    assert!(members.iter().all(|pid| alive(*pid)));
    up.start_kill().expect("SIGKILL up");
    up.wait().await.expect("up reaped");
    // Nobody stops them cleanly: they notice their stdin close and stop themselves.
    eventually(
        Duration::from_secs(30),
        "the members ending with up",
        || async { members.iter().all(|pid| !alive(*pid)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_keep_serving_when_the_one_running_the_controllers_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (up, url) = start_up(dir.path()).await;
    let read = |file: &str| std::fs::read_to_string(dir.path().join(file)).expect(file);
    let client = Credentials {
        server: url,
        token: read("token").trim().to_owned(),
        ca_pem: read("ca.crt"),
    }
    .client()
    .expect("a client");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");

    // One member runs the controllers: the first deployment gets its replicas.
    deployments
        .create(&PostParams::default(), &deployment("before", 2))
        .await
        .expect("create through the front door");
    eventually(
        Duration::from_secs(60),
        "2 replicas of the first deployment",
        || async { (pods_of(&pods, "before").await == 2).then_some(()) },
    )
    .await;
    let first = eventually(Duration::from_secs(30), "a holder of the Lease", || {
        holder(&leases)
    })
    .await;

    // SIGKILL the member that runs them.
    let pid = member_pid(dir.path(), &first);
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill runs")
            .success()
    );

    // The same address keeps taking writes...
    eventually(
        Duration::from_secs(30),
        "a write after the kill",
        || async {
            deployments
                .create(&PostParams::default(), &deployment("after", 2))
                .await
                .ok()
        },
    )
    .await;
    // ...another member takes the Lease over, and its controllers act on the new write.
    let next = eventually(
        Duration::from_secs(60),
        "another holder of the Lease",
        || async { holder(&leases).await.filter(|h| *h != first) },
    )
    .await;
    assert_ne!(next, first);
    eventually(
        Duration::from_secs(60),
        "2 replicas of the second deployment",
        || async { (pods_of(&pods, "after").await == 2).then_some(()) },
    )
    .await;
    // `up` started the killed member again, as a service manager would.
    eventually(
        Duration::from_secs(30),
        "the killed member running again",
        || async {
            let id = member_id(&first);
            let again: u32 =
                std::fs::read_to_string(dir.path().join("members").join(id).join("pid"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
            (again != pid && alive(again)).then_some(())
        },
    )
    .await;
    // Nobody made a replica twice across the takeover.
    assert_eq!(pods_of(&pods, "before").await, 2);
    let namespaces: Api<Namespace> = Api::all(client);
    assert!(
        namespaces
            .get_opt("kube-system")
            .await
            .expect("read")
            .is_some()
    );

    // A clean stop takes the remaining members with it.
    let others: Vec<u32> = (1..=3)
        .map(|i| member_pid(dir.path(), &format!("member-{i}")))
        .filter(|p| *p != pid)
        .collect();
    stop_up(up).await;
    for pid in others {
        assert!(!alive(pid), "member process {pid} outlived up");
    }
}

/// Stops `up` with SIGTERM and waits for it.
async fn stop_up(mut up: tokio::process::Child) {
    let pid = up.id().expect("pid").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait())
        .await
        .expect("up stops within 30 s")
        .expect("up exits");
    assert!(status.success(), "up exited with {status}");
}

/// A client of the cluster in `dir` at `server` (the front door, or one member).
fn client_of(dir: &Path, server: String) -> kube::Client {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).expect(file);
    Credentials {
        server,
        token: read("token").trim().to_owned(),
        ca_pem: read("ca.crt"),
    }
    .client()
    .expect("a client")
}

/// Member `id`'s own API address, from the line its log starts with.
fn member_api(dir: &Path, id: u64) -> Option<String> {
    let log = std::fs::read_to_string(dir.join("members").join(id.to_string()).join("member.log"))
        .ok()?;
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("control plane serving"))?;
    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
    Some(format!("https://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_dies_with_its_data_is_replaced_and_the_cluster_starts_again_with_its_replacement()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let (up, url) = start_up(dir.path()).await;
    let namespaces: Api<Namespace> = Api::all(client_of(dir.path(), url));
    let namespace = |name: &str| -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("a namespace")
    };
    namespaces
        .create(&PostParams::default(), &namespace("before"))
        .await
        .expect("create through the front door");

    // Member 2's disk dies with its machine: its data goes first, then its process.
    let lost = dir.path().join("members").join("2");
    let pid = member_pid(dir.path(), "member-2");
    std::fs::remove_dir_all(&lost).expect("delete member 2's data");
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");

    // `up` does not start it again on nothing: member 4, a new id, takes its place and
    // has, asked on its own, what was written before it existed.
    eventually(
        Duration::from_secs(60),
        "a new member 4 serving what was written before",
        || async {
            let own = Api::<Namespace>::all(client_of(dir.path(), member_api(dir.path(), 4)?));
            own.get_opt("before").await.ok()??;
            Some(())
        },
    )
    .await;
    assert!(
        !lost.exists(),
        "member 2 was started again on an empty directory"
    );
    namespaces
        .create(&PostParams::default(), &namespace("after"))
        .await
        .expect("a write after the replacement");
    stop_up(up).await;

    // The same data directory starts again with the members it has now, 1, 3 and 4.
    let (up, url) = start_up(dir.path()).await;
    let namespaces: Api<Namespace> = Api::all(client_of(dir.path(), url));
    for name in ["before", "after"] {
        assert!(
            namespaces.get_opt(name).await.expect("read").is_some(),
            "{name} is lost"
        );
    }
    namespaces
        .create(&PostParams::default(), &namespace("again"))
        .await
        .expect("a write after starting again");
    assert!(!lost.exists(), "member 2 came back on starting again");
    stop_up(up).await;

    // Asked for another size, it says what the directory holds instead of guessing.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_shipshape"))
        .args(["up", "--control-plane", "5", "--nodes", "0"])
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("shipshape up runs");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("control plane of 3 members (ids [1, 3, 4])"),
        "{said}"
    );
}
