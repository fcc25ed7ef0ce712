//! # Three members on three machines, set up by hand
//!
//! What the README tells someone with three hosts: give each the same `ca.crt`, `ca.key`,
//! `token` and `cluster-id`, and start `shipshape control-plane --member N --peer
//! 1=HOST:PORT …` on each. Here the hosts are containers on the `shipshape` network, each
//! with an address and a host name of its own, started from the machine image
//! (`shipshape/machine`, with this build's `shipshape` mounted in) as `up` starts its
//! members' containers ([`machines::MemberPlan`]), but with the command line the README
//! gives; each one's output goes to `<target>/tmp/members-on-machines/member-N.log`. No
//! `up` and no front door: a client talks to each member at the port its container
//! publishes.
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
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use serde_json::json;
use shipshape::agent::runtime;
use shipshape::client::Credentials;
use shipshape::machines::{self, CONTAINER_API_PORT, CONTAINER_PEER_PORT, Machine, MemberPlan};

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

/// Member `id` of `cluster` as a host of its own would run it: in a container on the
/// `shipshape` network, with its API published on a free port of this host; its fellow members
/// are `peers` (itself included), and it joins them if `join`. Its output goes to
/// [`log_path`], every run of it appended.
fn member(
    docker: &bollard::Docker,
    cluster: &Cluster,
    id: u64,
    peers: &[u64],
    join: bool,
) -> MemberPlan {
    let mut args: Vec<std::ffi::OsString> = [
        "control-plane",
        // It ends when this test lets go of it, even if the test panics.
        "--stop-with-stdin",
        "--data-dir",
        "/data",
        "--listen",
        &format!("0.0.0.0:{CONTAINER_API_PORT}"),
        "--member",
        &id.to_string(),
    ]
    .map(Into::into)
    .to_vec();
    for peer in peers {
        args.push("--peer".into());
        args.push(peer_address(cluster, *peer).into());
    }
    if join {
        args.push("--join".into());
    }
    let name = machines::container_name(&cluster.id, id);
    let (dir, api) = (cluster.dir(id), free_address());
    let mut plan = MemberPlan::new(id, &dir, api, args, Some((docker.clone(), name)))
        .expect("a member's plan");
    plan.machine.log = Some(log_path(id));
    plan
}

/// Starts `member`'s machine.
async fn start(member: &MemberPlan) -> Machine {
    let id = member.id;
    member
        .machine
        .start(Path::new(env!("CARGO_BIN_EXE_shipshape")))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "member {id} did not start: {e:#}; see {}",
                log_path(id).display()
            )
        })
}

/// A loopback address of this host with a free port, for a member to publish its API on.
fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// `ID=HOST:PORT`: where the other members reach member `id`.
fn peer_address(cluster: &Cluster, id: u64) -> String {
    format!(
        "{id}={}:{CONTAINER_PEER_PORT}",
        machines::container_name(&cluster.id, id)
    )
}

/// A client of `member` alone, at the port it publishes on this host.
fn client_of(cluster: &Cluster, member: &MemberPlan) -> kube::Client {
    Credentials {
        server: format!("https://{}", member.api),
        token: cluster.token.clone(),
        ca_pem: cluster.ca_pem.clone(),
    }
    .client()
    .expect("a client")
}

/// Runs `shipshape control-plane ACTION ARGS` against `member`, as an operator would with
/// a kubeconfig for it; panics with its output if it fails.
async fn control_plane(cluster: &Cluster, member: &MemberPlan, action: &str, args: &[&str]) {
    let kubeconfig = cluster.root.path().join("operator.kubeconfig");
    std::fs::write(
        &kubeconfig,
        shipshape::control_plane::kubeconfig_json(member.api, &cluster.token, &cluster.ca_pem),
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

/// Kills member `id` (SIGKILL), as a machine that loses power; its container goes with it.
async fn kill(running: &mut BTreeMap<u64, Machine>, id: u64) {
    let machine = running.get_mut(&id).expect("a running member");
    machine.kill().await.expect("a member is killed");
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
    for id in 1..=MEMBERS + 1 {
        let _ = std::fs::remove_file(log_path(id));
    }

    // Each "host" starts its member; they find each other by name and elect a leader.
    let first: Vec<u64> = (1..=MEMBERS).collect();
    let mut members: BTreeMap<u64, MemberPlan> = (1..=MEMBERS)
        .map(|id| (id, member(&docker, &cluster, id, &first, false)))
        .collect();
    let mut running: BTreeMap<u64, Machine> = BTreeMap::new();
    for (id, plan) in &members {
        running.insert(*id, start(plan).await);
    }
    let clients: BTreeMap<u64, kube::Client> = (members.iter())
        .map(|(id, plan)| (*id, client_of(&cluster, plan)))
        .collect();
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
    kill(&mut running, leader).await;
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

    // Started again on its data (in a new container: the killed one is gone, and the
    // network may give it another address), the killed member catches up and serves what
    // it missed.
    running.insert(leader, start(&members[&leader]).await);
    eventually(
        START_TIMEOUT,
        "the restarted member serves the write it missed",
        || async {
            exists(&clients[&leader], "written-without-the-leader")
                .await
                .then_some(())
        },
    )
    .await;

    // A machine is lost for good: its member is killed and its disk wiped. The operator
    // removes it, and adds a new machine under a new id, which joins on an empty disk.
    let lost = survivors[0];
    kill(&mut running, lost).await;
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
    members.insert(new, member(&docker, &cluster, new, &now, true));
    running.insert(new, start(&members[&new]).await);
    let client = client_of(&cluster, &members[&new]);
    for name in ["written-through-1", "written-without-the-leader"] {
        eventually(
            START_TIMEOUT,
            "the new member serves what was written before it joined",
            || async { exists(&client, name).await.then_some(()) },
        )
        .await;
    }
    // It counts in the majority: without one more of the first members, the new one and
    // the last of them still take writes.
    kill(&mut running, leader).await;
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

    for machine in running.values_mut() {
        machine
            .stop(Duration::from_secs(10))
            .await
            .expect("a member stops");
    }
}

/// Where member `id`'s output is kept.
fn log_path(id: u64) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("members-on-machines");
    std::fs::create_dir_all(&dir).expect("the log directory");
    dir.join(format!("member-{id}.log"))
}
