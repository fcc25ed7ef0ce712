//! # Three members on three machines, set up by hand
//!
//! What the README tells someone with three hosts: give each the same `ca.crt`, `ca.key`,
//! `token` and `cluster-id`, and start `shipshape control-plane --member N --peer
//! 1=HOST:PORT …` on each. Here the hosts are containers on the `shipshape` network, each
//! with an address and a host name of its own, started with testcontainers from the
//! machine image (`shipshape/machine`, with this build's `shipshape` mounted in), each
//! waited for until it announces its apiserver and its `/readyz` answers, each one's
//! output captured in `<target>/tmp/members-on-machines/member-N.log` (as it runs, and
//! whole at the end). No `up` and no
//! front door: a client talks to each member at the port its container publishes.
//!
//! Checked: a write through one member is read at once through each of the others; with
//! the leader killed (SIGKILL), the other two keep accepting writes; started again on its
//! data — at whatever address the network gives it now — the killed member serves the
//! writes made while it was down. Then a machine is lost for good, disk and all: as the
//! README tells an operator, `shipshape control-plane remove` takes its member out,
//! `shipshape control-plane add` makes room for a new machine under a new id, and the new
//! member, started with `--join` on an empty disk, takes everything from the leader's
//! snapshot and counts in the majority: with another of the first members killed, the
//! control plane still takes writes.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use serde_json::json;
use shipshape::agent::runtime::{self, LABEL_CLUSTER, POD_NETWORK};
use shipshape::client::Credentials;
use shipshape::machines::{self, CONTAINER_API_PORT, CONTAINER_PEER_PORT, LABEL_MEMBER};
use testcontainers::core::logs::LogFrame;
use testcontainers::core::{AccessMode, IntoContainerPort as _, Mount, WaitFor};
use testcontainers::runners::AsyncRunner as _;
use testcontainers::{ContainerAsync, GenericImage, ImageExt as _};

mod eventually;
use eventually::eventually;

const MEMBERS: u64 = 3;

/// How long a member may take to announce its apiserver, and the members to elect a leader.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The shared files of a cluster, and where each member's copy of them lives.
struct Cluster {
    root: tempfile::TempDir,
    id: String,
    token: String,
    ca_pem: String,
}

impl Cluster {
    /// Member `id`'s data directory, holding the cluster's shared files.
    fn dir(&self, id: u64) -> PathBuf {
        shipshape::control_plane::prepare_member(self.root.path(), id)
            .expect("the member's data directory")
    }
}

fn prepare() -> Cluster {
    let root = tempfile::tempdir().expect("a temporary directory");
    let ids: Vec<u64> = (1..=MEMBERS).collect();
    shipshape::control_plane::prepare_members(root.path(), &ids)
        .expect("the members' data directories");
    let read = |file: &str| {
        std::fs::read_to_string(root.path().join(file))
            .expect("a shared file")
            .trim()
            .to_owned()
    };
    Cluster {
        id: read("cluster-id"),
        token: read("token"),
        ca_pem: std::fs::read_to_string(root.path().join("ca.crt")).expect("the CA"),
        root,
    }
}

/// Starts member `id` of `cluster` in a container of its own, as a host of its own would
/// run it, and waits until it announces its apiserver; its fellow members are `peers`
/// (itself included), and it joins them if `join`.
async fn start_member(
    cluster: &Cluster,
    id: u64,
    peers: &[u64],
    join: bool,
) -> ContainerAsync<GenericImage> {
    let name = machines::container_name(&cluster.id, id);
    let dir = &cluster.dir(id);
    let owner = std::fs::metadata(dir).expect("the member's data directory");
    let mut args: Vec<String> = [
        "control-plane",
        "--data-dir",
        "/data",
        "--listen",
        &format!("0.0.0.0:{CONTAINER_API_PORT}"),
        "--member",
        &id.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    for peer in peers {
        args.push("--peer".to_owned());
        args.push(peer_address(cluster, *peer));
    }
    if join {
        args.push("--join".to_owned());
    }
    let log_path = log_path(id);
    let log = std::sync::Mutex::new(std::fs::File::create(&log_path).expect("a member's log"));
    let capture = move |frame: &LogFrame| {
        use std::io::Write as _;
        let bytes = match frame {
            LogFrame::StdOut(bytes) | LogFrame::StdErr(bytes) => bytes,
        };
        if let Ok(mut log) = log.lock() {
            let _ = log.write_all(bytes);
        }
    };
    let (image, tag) = shipshape::images::MACHINE_IMAGE
        .split_once(':')
        .expect("the machine image has a tag");
    GenericImage::new(image, tag)
        .with_exposed_port(CONTAINER_API_PORT.tcp())
        .with_wait_for(WaitFor::message_on_stdout("apiserver: "))
        .with_cmd(args)
        .with_container_name(&name)
        .with_hostname(&name)
        .with_network(POD_NETWORK)
        .with_label(LABEL_CLUSTER, &cluster.id)
        .with_label(LABEL_MEMBER, id.to_string())
        .with_user(format!("{}:{}", owner.uid(), owner.gid()))
        .with_mount(
            Mount::bind_mount(
                env!("CARGO_BIN_EXE_shipshape"),
                shipshape::images::MACHINE_BINARY,
            )
            .with_access_mode(AccessMode::ReadOnly),
        )
        .with_mount(Mount::bind_mount(dir.display().to_string(), "/data"))
        .with_log_consumer(capture)
        .with_startup_timeout(START_TIMEOUT)
        .start()
        .await
        .unwrap_or_else(|e| panic!("member {id} did not start: {e}; see {}", log_path.display()))
}

/// `ID=HOST:PORT`: where the other members reach member `id`.
fn peer_address(cluster: &Cluster, id: u64) -> String {
    format!(
        "{id}={}:{CONTAINER_PEER_PORT}",
        machines::container_name(&cluster.id, id)
    )
}

/// The address member `container` publishes its API at on this host.
async fn api_address(container: &ContainerAsync<GenericImage>) -> std::net::SocketAddr {
    let port = container
        .get_host_port_ipv4(CONTAINER_API_PORT.tcp())
        .await
        .expect("the member publishes its API");
    ([127, 0, 0, 1], port).into()
}

/// A client of member `container` alone, at the port it publishes on this host.
async fn client_of(cluster: &Cluster, container: &ContainerAsync<GenericImage>) -> kube::Client {
    Credentials {
        server: format!("https://{}", api_address(container).await),
        token: cluster.token.clone(),
        ca_pem: cluster.ca_pem.clone(),
    }
    .client()
    .expect("a client")
}

/// Runs `shipshape control-plane ACTION ARGS` against member `container`, as an operator
/// would with a kubeconfig for it; panics with its output if it fails.
async fn control_plane(
    cluster: &Cluster,
    container: &ContainerAsync<GenericImage>,
    action: &str,
    args: &[&str],
) {
    let kubeconfig = cluster.root.path().join("operator.kubeconfig");
    let address = api_address(container).await;
    std::fs::write(
        &kubeconfig,
        shipshape::control_plane::kubeconfig_json(address, &cluster.token, &cluster.ca_pem),
    )
    .expect("the operator's kubeconfig");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shipshape"))
        .args(["control-plane", action, "--kubeconfig"])
        .arg(&kubeconfig)
        .args(args)
        .output()
        .await
        .expect("shipshape runs");
    assert!(
        output.status.success(),
        "shipshape control-plane {action} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Kills member `container` (SIGKILL), as a machine that loses power.
async fn kill(docker: &bollard::Docker, container: &ContainerAsync<GenericImage>) {
    docker
        .kill_container(
            container.id(),
            Some(bollard::query_parameters::KillContainerOptions {
                signal: "KILL".to_owned(),
            }),
        )
        .await
        .expect("a member's container is killed");
}

/// The member `/readyz` names the leader, once it answers 200.
async fn leader_seen_by(client: &kube::Client) -> Option<u64> {
    let request = http::Request::get("/readyz").body(Vec::new()).ok()?;
    let response = client.send(request.map(Into::into)).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response
        .headers()
        .get(shipshape::apiserver::LEADER_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn namespace(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).expect("a namespace")
}

async fn create(client: &kube::Client, name: &str) -> Option<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces
        .create(&PostParams::default(), &namespace(name))
        .await
    {
        Ok(_) => Some(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Some(()),
        Err(_) => None,
    }
}

async fn exists(client: &kube::Client, name: &str) -> bool {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    matches!(namespaces.get_opt(name).await, Ok(Some(_)))
}

#[tokio::test(flavor = "multi_thread")]
async fn members_on_machines_of_their_own_keep_serving_when_the_leader_is_killed() {
    let docker = runtime::connect().await.unwrap_or_else(|e| {
        panic!("this test runs control-plane members in containers and needs a Docker engine: {e}")
    });
    runtime::ensure_network(&docker)
        .await
        .expect("the shipshape network");
    shipshape::images::ensure_machine(&docker, Path::new(env!("CARGO_BIN_EXE_shipshape")))
        .await
        .expect("the machine image");
    let cluster = prepare();

    // Each "host" starts its member; they find each other by name and elect a leader.
    let first: Vec<u64> = (1..=MEMBERS).collect();
    let started = futures::future::join_all(
        (1..=MEMBERS).map(|id| start_member(&cluster, id, &first, false)),
    )
    .await;
    let mut members: BTreeMap<u64, ContainerAsync<GenericImage>> =
        (1..=MEMBERS).zip(started).collect();
    let mut clients = BTreeMap::new();
    for (id, container) in &members {
        clients.insert(*id, client_of(&cluster, container).await);
    }
    let leader = eventually(START_TIMEOUT, "every member names a leader", || async {
        let mut seen = Vec::new();
        for client in clients.values() {
            seen.push(leader_seen_by(client).await?);
        }
        seen.windows(2).all(|w| w[0] == w[1]).then(|| seen[0])
    })
    .await;

    // A write through one member is read at once through the others.
    eventually(Duration::from_secs(10), "a write through member 1", || {
        create(&clients[&1], "written-through-1")
    })
    .await;
    for id in [2, 3] {
        assert!(
            exists(&clients[&id], "written-through-1").await,
            "member {id} does not read what member 1 acknowledged"
        );
    }

    // The leader loses power; the other two elect another and keep taking writes.
    kill(&docker, &members[&leader]).await;
    let survivors: Vec<u64> = (1..=MEMBERS).filter(|id| *id != leader).collect();
    eventually(
        Duration::from_secs(15),
        "a write through a surviving member after the leader was killed",
        || create(&clients[&survivors[0]], "written-without-the-leader"),
    )
    .await;
    assert!(
        exists(&clients[&survivors[1]], "written-without-the-leader").await,
        "member {} does not read what member {} acknowledged",
        survivors[1],
        survivors[0]
    );

    // Started again on its data, the killed member catches up and serves what it missed.
    let restarted = members.get_mut(&leader).expect("the killed member");
    restarted
        .start()
        .await
        .expect("the killed member starts again");
    let client = client_of(&cluster, restarted).await;
    eventually(
        START_TIMEOUT,
        "the restarted member serves the write it missed",
        || async {
            exists(&client, "written-without-the-leader")
                .await
                .then_some(())
        },
    )
    .await;

    // A machine is lost for good: its member is killed and its disk wiped. The operator
    // removes it, and adds a new machine under a new id, which joins on an empty disk.
    let lost = survivors[0];
    kill(&docker, &members[&lost]).await;
    std::fs::remove_dir_all(cluster.dir(lost).join("store")).expect("the lost disk is wiped");
    let asked = &members[&survivors[1]];
    control_plane(&cluster, asked, "remove", &["--member", &lost.to_string()]).await;
    let new = MEMBERS + 1;
    let address = peer_address(&cluster, new);
    let address = address.split_once('=').expect("ID=ADDRESS").1;
    control_plane(
        &cluster,
        asked,
        "add",
        &["--member", &new.to_string(), "--peer-address", address],
    )
    .await;
    let now: Vec<u64> = [leader, survivors[1], new].into();
    let joined = start_member(&cluster, new, &now, true).await;
    let client = client_of(&cluster, &joined).await;
    for name in ["written-through-1", "written-without-the-leader"] {
        eventually(
            START_TIMEOUT,
            "the new member serves what was written before it joined",
            || async { exists(&client, name).await.then_some(()) },
        )
        .await;
    }
    members.insert(new, joined);
    // It counts in the majority: without one more of the first members, the new one and
    // the last of them still take writes.
    kill(&docker, &members[&leader]).await;
    eventually(
        Duration::from_secs(15),
        "a write through the new member, with two of the first three gone",
        || create(&client, "written-with-the-new-member"),
    )
    .await;
    assert!(
        exists(&clients[&survivors[1]], "written-with-the-new-member").await,
        "member {} does not read what the new member acknowledged",
        survivors[1]
    );

    for (id, container) in members {
        // Both runs of each member, the live capture having followed the first only.
        let mut output = container.stdout_to_vec().await.unwrap_or_default();
        output.extend(container.stderr_to_vec().await.unwrap_or_default());
        let _ = std::fs::write(log_path(id), output);
        container
            .rm()
            .await
            .expect("a member's container is removed");
    }
}

/// Where member `id`'s output is kept.
fn log_path(id: u64) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("members-on-machines");
    std::fs::create_dir_all(&dir).expect("the log directory");
    dir.join(format!("member-{id}.log"))
}
