//! Nodes whose clocks are wrong, for real: each node agent runs with Debian's libfaketime
//! preloaded, one an hour behind the control plane's clock and one an hour ahead, so
//! every heartbeat they post carries their own wrong time. The node lifecycle controller
//! must judge them by when *it* saw their heartbeats change: the node behind stays
//! Ready for as long as it posts, and the node ahead turns Unknown soon after it stops,
//! though the time in its last heartbeat is still an hour away.
//!
//! Needs the Docker engine (the agents drive it) and libfaketime (`apt-get install
//! faketime`; `ci/install-deps` does it); without them it fails, saying which is missing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use shipshape::client::Credentials;

mod eventually;
mod up;
use eventually::eventually;

/// How long a node's heartbeat may stay unchanged before it is unreachable, here.
const GRACE_SECONDS: u64 = 3;

/// Where Debian's faketime package puts the library.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn libfaketime() -> PathBuf {
    let path =
        std::env::var_os("LIBFAKETIME").map_or_else(|| PathBuf::from(LIBFAKETIME), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: this test runs node agents with a wrong clock through libfaketime; \
         install Debian's faketime package (ci/install-deps does), or point LIBFAKETIME at \
         the library",
        path.display()
    );
    path
}

/// Starts `shipshape up` on `dir` with no nodes and a short grace; the process and its URL.
async fn start_control_plane(dir: &Path) -> (tokio::process::Child, String) {
    let grace = GRACE_SECONDS.to_string();
    let args = ["--nodes", "0", "--node-grace-seconds", &grace];
    up::start_up(dir, &args, Duration::from_secs(60)).await
}

/// Starts node agent `name` with its clock `offset` off (`-1h`, `+1h`, as libfaketime
/// reads it).
fn start_node(dir: &Path, url: &str, name: &str, offset: &str) -> tokio::process::Child {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .expect(file)
            .trim()
            .to_owned()
    };
    tokio::process::Command::new(env!("CARGO_BIN_EXE_shipshape"))
        .args(["node", "--server", url, "--name", name])
        .args(["--token", &read("token"), "--cluster", &read("cluster-id")])
        .arg("--ca-file")
        .arg(dir.join("ca.crt"))
        .arg("--data-dir")
        .arg(dir.join(name))
        .env("LD_PRELOAD", libfaketime())
        .env("FAKETIME", offset)
        // Only the wall clock is wrong; time still passes at its rate.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join(format!("{name}.log"))).expect("the node's log"),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("shipshape node starts")
}

/// Node `name`'s Ready status and the heartbeat time it posted last.
async fn ready(nodes: &Api<Node>, name: &str) -> Option<(String, String)> {
    let node = nodes.get_opt(name).await.ok()??;
    let condition = node
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    let heartbeat = condition.last_heartbeat_time?.0.to_string();
    Some((condition.status, heartbeat))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_judged_by_the_control_planes_clock_not_their_own() {
    libfaketime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_up, url) = start_control_plane(dir.path()).await;
    let read = |file: &str| std::fs::read_to_string(dir.path().join(file)).expect(file);
    let client = Credentials {
        server: url.clone(),
        token: read("token").trim().to_owned(),
        ca_pem: read("ca.crt"),
    }
    .client()
    .expect("a client");
    let nodes: Api<Node> = Api::all(client);

    let _behind = start_node(dir.path(), &url, "behind", "-1h");
    let mut ahead = start_node(dir.path(), &url, "ahead", "+1h");
    for name in ["behind", "ahead"] {
        eventually(
            Duration::from_secs(60),
            &format!("node {name} Ready"),
            || async {
                let (status, _) = ready(&nodes, name).await?;
                (status == "True").then_some(())
            },
        )
        .await;
    }
    // The clocks are really off: the heartbeats carry the nodes' times.
    let now = jiff::Timestamp::now();
    for (name, sign) in [("behind", -1), ("ahead", 1)] {
        let (_, heartbeat) = ready(&nodes, name).await.expect("a heartbeat");
        let posted: jiff::Timestamp = heartbeat.parse().expect("a timestamp");
        let off = posted.duration_since(now).as_secs() * sign;
        assert!(
            off > 3000,
            "node {name}'s heartbeat {heartbeat} is not an hour off this clock ({now})"
        );
    }

    // The node behind keeps posting: it stays Ready for well past the grace period.
    for _ in 0..(GRACE_SECONDS * 4) {
        let (status, heartbeat) = ready(&nodes, "behind").await.expect("the node");
        assert_eq!(
            status, "True",
            "node behind, posting heartbeats an hour in the past, was taken for lost \
             (last heartbeat {heartbeat})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The node ahead dies: it is taken for lost once its heartbeat has not changed for
    // the grace period, not an hour later.
    ahead.start_kill().expect("SIGKILL the node ahead");
    ahead.wait().await.expect("reaped");
    eventually(
        Duration::from_secs(GRACE_SECONDS * 5),
        "the dead node ahead turning Unknown",
        || async {
            let (status, _) = ready(&nodes, "ahead").await?;
            (status == "Unknown").then_some(())
        },
    )
    .await;
    let (status, _) = ready(&nodes, "behind").await.expect("the node");
    assert_eq!(status, "True", "the node behind was taken for lost");
}
