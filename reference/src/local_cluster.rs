//! # A whole cluster on this machine: what `shipshape up` runs
//!
//! [`LocalCluster`]: the control plane (with its scheduler and controllers), N node agents
//! and the service proxy, all as tasks of this process, on the local Docker engine.
//! Starting builds the images (offline) and removes whatever a killed earlier run on the
//! same data directory left behind; stopping removes every container it made. The pod
//! network stays: every cluster on the engine shares it (see [`runtime`]'s essay). Pods
//! reach this host at that network's gateway: a forwarder there passes their connections
//! to the apiserver, whose certificate names it and which publishes it as the
//! `kubernetes` Service's endpoint (`--advertise`), the address in-cluster clients use.
//!
//! [`LocalMembersCluster`], for `up --control-plane 3`: each control-plane member is a
//! `shipshape control-plane --member` child process of its own (so that one can be killed
//! alone), or runs in a container of its own (`--machines containers`, so that the links
//! between members can fail too; see [`machines`]), behind a [front door](crate::front_door) on the `--listen` address that
//! clients, node agents and the proxy use; the node agents and the proxy are tasks of this
//! process as before. `up` keeps its members running as a service manager would: a
//! member that dies is started again on its data after [`MEMBER_RESTART_DELAY`] (unless
//! it was taken down on purpose, [`LocalMembersCluster::kill_member`]). A member that
//! died with its data (its directory's store gone, as with a dead disk) is not started
//! again under its id, which would make it forget its votes; a new member takes its
//! place ([`replace_member`]). A data directory used before keeps its members' ids and
//! peer addresses.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::agent::{self, AgentConfig, runtime};
use crate::client::Credentials;
use crate::control_plane::{self, ControlPlane, ControlPlaneConfig};
use crate::controllers::node_lifecycle::NodeLifecycleConfig;
use crate::front_door::{self, Backend, Backends};
use crate::images;
use crate::machines::{self, Machine, Machines, MemberPlan};
use crate::proxy::meter::Meter;

/// A running local cluster.
pub struct LocalCluster {
    control_plane: ControlPlane,
    docker: Option<bollard::Docker>,
    stop: watch::Sender<bool>,
    agents: JoinSet<()>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("control_plane", &self.control_plane)
            .finish_non_exhaustive()
    }
}

impl LocalCluster {
    /// Starts the control plane and `nodes` node agents (`node-1`...), the node lifecycle
    /// controller timed by `node_lifecycle`. With 0 nodes, Docker is not needed.
    pub async fn start_with(
        config: ControlPlaneConfig,
        nodes: u32,
        node_lifecycle: NodeLifecycleConfig,
    ) -> anyhow::Result<LocalCluster> {
        let data_dir = config.data_dir.clone();
        // Docker first: without it there is no cluster to speak of, so say so at once.
        let docker = docker_for(nodes).await?;
        let (mut config, mut inside) = (config, None);
        if let Some(docker) = &docker {
            let listener = gateway_listener(docker, config.listen).await?;
            config.advertise = config.advertise.or(listener.local_addr().ok());
            inside = Some(listener);
        }
        let mut control_plane = ControlPlane::start(config).await?;
        control_plane.start_components(node_lifecycle)?;
        let (stop, stopped) = watch::channel(false);
        let mut agents = JoinSet::new();
        if let Some(listener) = inside {
            let apiserver = Arc::from([Backend::new(control_plane.addr())]);
            agents.spawn(front_door::serve(listener, apiserver, stopped.clone()));
        }
        if let Some(docker) = &docker {
            let creds = control_plane.credentials();
            let cluster = control_plane.cluster_id().to_owned();
            remove_leftovers(docker, &cluster).await?;
            start_nodes(
                docker,
                &creds,
                &cluster,
                &data_dir,
                nodes,
                &stopped,
                &mut agents,
            )
            .await?;
        }
        Ok(LocalCluster {
            control_plane,
            docker,
            stop,
            agents,
        })
    }

    /// The control plane.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// Stops the agents (which remove their containers), then the control plane.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        while self.agents.join_next().await.is_some() {}
        if let Some(docker) = &self.docker {
            runtime::reap(docker, self.control_plane.cluster_id()).await?;
        }
        self.control_plane.stop().await;
        Ok(())
    }
}

/// The Docker engine, with the images built, when there are nodes to run pods; `None`
/// without nodes (Docker is then not needed).
async fn docker_for(nodes: u32) -> anyhow::Result<Option<bollard::Docker>> {
    if nodes == 0 {
        return Ok(None);
    }
    let docker = runtime::connect().await?;
    images::ensure(&docker).await?;
    Ok(Some(docker))
}

/// Removes the containers an earlier run of cluster `cluster` left behind (a run that was
/// killed before it could).
async fn remove_leftovers(docker: &bollard::Docker, cluster: &str) -> anyhow::Result<()> {
    let reaped = runtime::reap(docker, cluster).await?;
    if reaped > 0 {
        tracing::info!(reaped, "removed containers a previous run left behind");
    }
    Ok(())
}

/// A listener on the pod network's gateway, where pods (and machines in containers) reach
/// this host: on `beside`'s port, unless `beside` listens on every address already.
async fn gateway_listener(
    docker: &bollard::Docker,
    beside: SocketAddr,
) -> anyhow::Result<TcpListener> {
    runtime::ensure_network(docker).await?;
    let gateway = runtime::network_gateway(docker).await;
    let gateway = gateway.context("the shipshape network has no gateway address")?;
    let port = if beside.ip().is_unspecified() {
        0
    } else {
        beside.port()
    };
    let inside = SocketAddr::new(gateway, port);
    let listener = TcpListener::bind(inside).await;
    listener.with_context(|| format!("failed to listen on {inside}"))
}

/// Starts the service proxy as a task in `agents`: node ports on loopback and on the pod
/// network's gateway, which it returns (this host's address on the cluster network),
/// counting in `meter`.
async fn start_proxy(
    docker: &bollard::Docker,
    creds: &Credentials,
    meter: Meter,
    stopped: &watch::Receiver<bool>,
    agents: &mut JoinSet<()>,
) -> anyhow::Result<Option<IpAddr>> {
    runtime::ensure_network(docker).await?;
    let gateway = runtime::network_gateway(docker).await;
    let client = creds
        .client_as("kube-proxy")
        .context("failed to build the proxy's client")?;
    agents.spawn(crate::proxy::run(
        client,
        gateway.into_iter().collect(),
        meter,
        stopped.clone(),
    ));
    Ok(gateway)
}

/// Starts the service proxy and `nodes` node agents (`node-1`...) as tasks in `agents`.
///
/// The nodes are processes of this host, so each one's address (its InternalIP) is this
/// host's address on the cluster network — where its pods, the kit and the API server all
/// reach it, and where the proxy serves node ports, as on a Kubernetes node. Without one,
/// loopback. The agents report the proxy's counts (one proxy for all: the apiserver counts
/// it once).
async fn start_nodes(
    docker: &bollard::Docker,
    creds: &Credentials,
    cluster: &str,
    data_dir: &Path,
    nodes: u32,
    stopped: &watch::Receiver<bool>,
    agents: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let meter = Meter::default();
    let address = start_proxy(docker, creds, meter.clone(), stopped, agents).await?;
    for i in 1..=nodes {
        let name = format!("node-{i}");
        let dir = data_dir.join("nodes").join(&name);
        let mut config = AgentConfig::new(&name, cluster, dir, &creds.token);
        config.address = address.unwrap_or(config.address);
        config.reconnect = Some(agent::Reconnect(creds.clone()));
        config.proxy_meter = Some(meter.clone());
        let client = creds
            .client_as("kubelet")
            .context("failed to build a node agent's client")?;
        let docker = docker.clone();
        let stopped = stopped.clone();
        agents.spawn(async move {
            if let Err(e) = agent::run(client, docker, config, stopped).await {
                tracing::error!(node = %name, error = %e, "node agent failed");
            }
        });
    }
    Ok(())
}

/// How long the members of a new control plane may take to serve through the front door.
const MEMBERS_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a member may take to stop after SIGTERM.
const MEMBER_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long after a member died on its own it is started again.
pub const MEMBER_RESTART_DELAY: Duration = Duration::from_secs(1);

/// One member: how it runs, what runs, and whether it must stay down.
struct MemberSlot {
    plan: MemberPlan,
    machine: Machine,
    /// Taken down on purpose: not restarted until asked.
    held_down: bool,
    /// The id of the member that replaces this one, whose data is gone, once chosen
    /// ([`replace_member`]).
    replacement: Option<u64>,
}

type Slots = Arc<tokio::sync::Mutex<Vec<MemberSlot>>>;

/// What planning a member needs: for the first members, and for one that replaces a
/// member whose data is gone.
struct MemberPlanner {
    /// `up`'s data directory; each member's is `members/ID` in it.
    root: PathBuf,
    cluster_id: String,
    /// The engine, when members are containers.
    engine: Option<bollard::Docker>,
    /// Where pods and machines reach the front door (the network's gateway), with nodes or
    /// machines.
    advertise: Option<SocketAddr>,
    node_lifecycle: NodeLifecycleConfig,
    node_ports: String,
    /// Every member's peer address by id, those replaced included.
    peers: BTreeMap<u64, String>,
}

/// File in `up`'s `members/` directory: the largest member id ever given, so that a
/// replacement never takes the id of a member removed earlier (the control plane
/// refuses it), even after the removed member's directory is gone.
const LAST_ID_FILE: &str = "last-id";

/// File in a member's data directory (members as processes): its peer port on loopback,
/// the same for every run of `up`, as the other members keep it once it was added.
const PEER_ADDRESS_FILE: &str = "peer-address";

impl MemberPlanner {
    /// Where member `id`, whose data directory is `dir`, takes its peers' connections: its
    /// container's name on the network, or a loopback port kept in `dir`.
    fn peer_address(&self, id: u64, dir: &Path) -> anyhow::Result<String> {
        if self.engine.is_some() {
            return Ok(format!(
                "{}:{}",
                machines::container_name(&self.cluster_id, id),
                machines::CONTAINER_PEER_PORT
            ));
        }
        let file = dir.join(PEER_ADDRESS_FILE);
        if let Ok(kept) = std::fs::read_to_string(&file)
            && kept.trim().parse::<SocketAddr>().is_ok()
        {
            return Ok(kept.trim().to_owned());
        }
        let address = free_port()?.to_string();
        std::fs::write(&file, &address)
            .with_context(|| format!("failed to write {}", file.display()))?;
        Ok(address)
    }

    /// An id no member ever had.
    fn next_id(&self) -> anyhow::Result<u64> {
        let file = self.root.join("members").join(LAST_ID_FILE);
        let kept: u64 = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        let id = kept.max(self.peers.keys().copied().max().unwrap_or(0)) + 1;
        std::fs::write(&file, id.to_string())
            .with_context(|| format!("failed to write {}", file.display()))?;
        Ok(id)
    }

    /// How member `id` runs: its data in `dir`, its API where the front door reaches it
    /// (`api`), `peers` the members it starts with (itself among them); `joining` a
    /// control plane that added it, rather than being one of its first members.
    fn plan(
        &self,
        id: u64,
        dir: &Path,
        api: SocketAddr,
        peers: &BTreeMap<u64, String>,
        joining: bool,
    ) -> anyhow::Result<MemberPlan> {
        let (data, listen) = match self.engine {
            None => (dir.as_os_str().to_owned(), api.to_string()),
            Some(_) => (
                "/data".into(),
                format!("0.0.0.0:{}", machines::CONTAINER_API_PORT),
            ),
        };
        let seconds = |period: Duration| period.as_secs().to_string().into();
        let mut args: Vec<std::ffi::OsString> = vec![
            "control-plane".into(),
            "--stop-with-stdin".into(),
            "--data-dir".into(),
            data,
            "--listen".into(),
            listen.into(),
            "--member".into(),
            id.to_string().into(),
            "--node-grace-seconds".into(),
            seconds(self.node_lifecycle.grace_period),
            "--eviction-seconds".into(),
            seconds(self.node_lifecycle.default_toleration),
            "--service-node-port-range".into(),
            self.node_ports.clone().into(),
        ];
        for (peer, address) in peers {
            args.push("--peer".into());
            args.push(format!("{peer}={address}").into());
        }
        if joining {
            args.push("--join".into());
        }
        if let Some(advertise) = self.advertise {
            args.push("--advertise".into());
            args.push(advertise.to_string().into());
        }
        let name = machines::container_name(&self.cluster_id, id);
        let container = self.engine.clone().map(|docker| (docker, name));
        MemberPlan::new(id, dir, api, args, container)
    }
}

/// Restarts members that died on their own, until `stopped` turns true; replaces those
/// whose data is gone ([`replace_member`]), asking the control plane through `client`.
async fn supervise(
    slots: Slots,
    mut planner: MemberPlanner,
    exe: PathBuf,
    client: kube::Client,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(MEMBER_RESTART_DELAY) => {}
        }
        let mut slots = slots.lock().await;
        let members: Vec<u64> = slots.iter().map(|slot| slot.plan.id).collect();
        for slot in slots.iter_mut() {
            if slot.held_down || *stopped.borrow() {
                continue;
            }
            let Ok(Some(how)) = slot.machine.exited().await else {
                continue;
            };
            let id = slot.plan.id;
            if slot.plan.data_lost()
                && !crate::failpoints::on!("up::restart-members-that-lost-their-data")
            {
                tracing::warn!(member = id, %how, "control-plane member died and its data is gone; replacing it with a new member");
                if let Err(e) = replace_member(slot, &members, &mut planner, &exe, &client).await {
                    tracing::error!(member = id, error = %format!("{e:#}"), "failed to replace a member; trying again");
                }
                continue;
            }
            tracing::warn!(member = id, %how, "control-plane member died; starting it again");
            match slot.plan.machine.start(&exe).await {
                Ok(machine) => slot.machine = machine,
                Err(e) => {
                    tracing::error!(member = id, error = %e, "failed to restart a member")
                }
            }
        }
    }
}

/// Replaces the member of `slot`, whose data is gone, by a new member in its place (the
/// same API port behind the front door), as an operator replaces an etcd member whose
/// disk died. Starting it again under its old id would be unsafe: it has forgotten what
/// it voted for and what it acknowledged. So the old id leaves the Raft configuration,
/// a new one (never used before) joins it, and the new member starts with an empty store
/// and catches up from a snapshot. Each step may be repeated: one that fails is tried
/// again on the next round, and one that took effect before answers 400 (not a member,
/// already a member).
async fn replace_member(
    slot: &mut MemberSlot,
    members: &[u64],
    planner: &mut MemberPlanner,
    exe: &Path,
    client: &kube::Client,
) -> anyhow::Result<()> {
    let old = slot.plan.id;
    let new = match slot.replacement {
        Some(id) => id,
        None => *slot.replacement.insert(planner.next_id()?),
    };
    let remove = http::Request::delete(format!("/shipshape/v1/members/{old}")).body(Vec::new())?;
    match client.request_text(remove).await {
        Ok(_) => tracing::info!(member = old, "removed the member whose data is gone"),
        Err(kube::Error::Api(status)) if status.code == 400 => {}
        Err(e) => return Err(e).with_context(|| format!("failed to remove member {old}")),
    }
    let dir = control_plane::prepare_member(&planner.root, new)?;
    let address = planner.peer_address(new, &dir)?;
    let body = serde_json::json!({ "id": new, "peerAddress": address });
    let add = http::Request::post("/shipshape/v1/members")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body)?)?;
    match client.request_text(add).await {
        Ok(_) => tracing::info!(member = new, %address, "added a member"),
        Err(kube::Error::Api(status))
            if status.code == 400 && status.message.contains("already a member") => {}
        Err(e) => return Err(e).with_context(|| format!("failed to add member {new}")),
    }
    planner.peers.insert(new, address);
    let peers: BTreeMap<u64, String> = planner
        .peers
        .iter()
        .filter(|(id, _)| **id == new || (**id != old && members.contains(id)))
        .map(|(id, address)| (*id, address.clone()))
        .collect();
    let plan = planner.plan(new, &dir, slot.plan.api, &peers, true)?;
    slot.machine = plan.machine.start(exe).await?;
    slot.plan = plan;
    slot.replacement = None;
    tracing::info!(
        member = new,
        replaced = old,
        "a new member took the place of one whose data is gone"
    );
    Ok(())
}

/// A running local cluster whose control plane is several members.
pub struct LocalMembersCluster {
    kubeconfig: PathBuf,
    credentials: Credentials,
    exe: PathBuf,
    members: Slots,
    docker: Option<bollard::Docker>,
    cluster_id: String,
    stop: watch::Sender<bool>,
    agents: JoinSet<()>,
    /// The node agents, when they are machines of their own (`--machines containers`).
    node_machines: Vec<Machine>,
}

impl std::fmt::Debug for LocalMembersCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMembersCluster")
            .field("url", &self.credentials.server)
            .finish_non_exhaustive()
    }
}

/// Member `id`'s slot among `members`.
fn find_member(members: &mut [MemberSlot], id: u64) -> anyhow::Result<&mut MemberSlot> {
    members
        .iter_mut()
        .find(|slot| slot.plan.id == id)
        .with_context(|| format!("there is no member {id}"))
}

/// A free port on loopback for a member to listen on. It is found by binding and let go
/// before the member binds it, so it must not be one the kernel hands out meanwhile as
/// the source port of an outgoing connection — other clusters' members, clients and
/// front doors make many: it is drawn at random from 10000–29999, below the kernel's
/// ephemeral range (`ip_local_port_range`, from 32768 by default), which outgoing
/// connections use, and below the node ports (from 30000), which the proxy listens on.
fn free_port() -> anyhow::Result<SocketAddr> {
    use rand::Rng as _;
    let ephemeral_start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let below = ephemeral_start.clamp(10_001, 30_000);
    let mut rng = rand::thread_rng();
    for _ in 0..100 {
        let port = rng.gen_range(10_000..below);
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return Ok(listener.local_addr()?);
        }
    }
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("failed to find a free port")?;
    Ok(listener.local_addr()?)
}

impl LocalMembersCluster {
    /// Starts `count` control-plane members as child processes of this program (which
    /// must be `shipshape`), or in containers running it ([`Machines`]), a front door on
    /// `config.listen`, and `nodes` node agents.
    pub async fn start(
        config: ControlPlaneConfig,
        count: u64,
        nodes: u32,
        node_lifecycle: NodeLifecycleConfig,
        machines: Machines,
    ) -> anyhow::Result<LocalMembersCluster> {
        let data_dir = config.data_dir.clone();
        let docker = docker_for(nodes).await?;
        let exe = std::env::current_exe().context("failed to locate the shipshape binary")?;
        // A data directory used before keeps its members, which may not be 1..=count any
        // more once one was replaced.
        let mut ids = control_plane::existing_members(&data_dir)?;
        if ids.is_empty() {
            ids = (1..=count).collect();
        } else if ids.len() as u64 != count {
            anyhow::bail!(
                "{} holds a control plane of {} members (ids {ids:?}), not {count}: start it \
                 with --control-plane {}, or use another --data-dir",
                data_dir.display(),
                ids.len(),
                ids.len()
            );
        }
        let dirs = control_plane::prepare_members(&data_dir, &ids)?;
        let cluster_id = std::fs::read_to_string(data_dir.join("cluster-id"))?
            .trim()
            .to_owned();
        let engine = match (machines, &docker) {
            (Machines::Processes, _) => None,
            (Machines::Containers, Some(docker)) => Some(docker.clone()),
            (Machines::Containers, None) => Some(runtime::connect().await?),
        };
        if let Some(engine) = &engine {
            images::ensure_machine(engine, &exe).await?;
        }
        let listener = TcpListener::bind(config.listen).await;
        let listener =
            listener.with_context(|| format!("failed to listen on {}", config.listen))?;
        // Pods, and machines in containers, reach the front door at the network's gateway.
        let inside = match docker.as_ref().or(engine.as_ref()) {
            Some(docker) => Some(gateway_listener(docker, listener.local_addr()?).await?),
            None => None,
        };
        let mut planner = MemberPlanner {
            root: data_dir.clone(),
            cluster_id: cluster_id.clone(),
            engine: engine.clone(),
            advertise: inside.as_ref().and_then(|l| l.local_addr().ok()),
            node_lifecycle,
            node_ports: format!("{}-{}", config.node_ports.start(), config.node_ports.end()),
            peers: BTreeMap::new(),
        };
        for (id, dir) in ids.iter().zip(&dirs) {
            let address = planner.peer_address(*id, dir)?;
            planner.peers.insert(*id, address);
        }
        let mut plans = Vec::new();
        for (id, dir) in ids.iter().zip(&dirs) {
            plans.push(planner.plan(*id, dir, free_port()?, &planner.peers, false)?);
        }
        // What a killed run of this `up` left: its nodes' containers and their pods'. (Not
        // with `--nodes 0`: the nodes are someone else's then, and keep running. Members'
        // containers are replaced by name as they start.)
        if let Some(docker) = &docker {
            remove_leftovers(docker, &cluster_id).await?;
        }
        let backends: Backends = plans.iter().map(|plan| Backend::new(plan.api)).collect();
        let mut members = Vec::new();
        for plan in plans {
            members.push(MemberSlot {
                machine: plan.machine.start(&exe).await?,
                plan,
                held_down: false,
                replacement: None,
            });
        }
        let members: Slots = Arc::new(tokio::sync::Mutex::new(members));
        let mut front = listener.local_addr()?;
        if front.ip().is_unspecified() {
            front.set_ip([127, 0, 0, 1].into());
        }
        let (stop, stopped) = watch::channel(false);
        let mut agents = JoinSet::new();
        let serve = |listener| front_door::serve(listener, backends.clone(), stopped.clone());
        if let Some(inside) = inside {
            agents.spawn(serve(inside));
        }
        agents.spawn(serve(listener));
        let credentials = Credentials {
            server: format!("https://{front}"),
            token: std::fs::read_to_string(data_dir.join("token"))?
                .trim()
                .to_owned(),
            ca_pem: std::fs::read_to_string(data_dir.join("ca.crt"))?,
        };
        agents.spawn(front_door::check_readiness(
            backends,
            credentials.clone(),
            stopped.clone(),
        ));
        agents.spawn(supervise(
            members.clone(),
            planner,
            exe.clone(),
            credentials.client()?,
            stopped.clone(),
        ));
        let kubeconfig = data_dir.join("kubeconfig");
        let contents =
            control_plane::kubeconfig_json(front, &credentials.token, &credentials.ca_pem);
        control_plane::write_private(&kubeconfig, &contents)?;
        let mut cluster = LocalMembersCluster {
            kubeconfig,
            credentials,
            exe,
            members,
            docker,
            cluster_id,
            stop,
            agents,
            node_machines: Vec::new(),
        };
        if let Err(e) = cluster.wait_until_serving().await {
            let _ = cluster.stop_members().await;
            return Err(e);
        }
        match (cluster.docker.clone(), machines) {
            (None, _) => {}
            (Some(docker), Machines::Processes) => {
                start_nodes(
                    &docker,
                    &cluster.credentials,
                    &cluster.cluster_id,
                    &data_dir,
                    nodes,
                    &stopped,
                    &mut cluster.agents,
                )
                .await?;
            }
            (Some(docker), Machines::Containers) => {
                // Its counts are reported by no agent (those run in the machines).
                let (creds, meter) = (&cluster.credentials, Meter::default());
                start_proxy(&docker, creds, meter, &stopped, &mut cluster.agents).await?;
                let nodes_dir = data_dir.join("nodes");
                for i in 1..=nodes {
                    let name = format!("node-{i}");
                    let plan = machines::NodeMachine {
                        cluster: cluster.cluster_id.clone(),
                        name: name.clone(),
                        server: cluster.credentials.server.clone(),
                        ca_file: data_dir.join("ca.crt"),
                        data_dir: nodes_dir.join(&name),
                        args: vec!["--token".into(), cluster.credentials.token.clone().into()],
                    }
                    .plan(&docker, Some(nodes_dir.join(format!("{name}.log"))))
                    .await?;
                    match plan.start(&cluster.exe).await {
                        Ok(machine) => cluster.node_machines.push(machine),
                        Err(e) => {
                            let _ = cluster.stop_members().await;
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(cluster)
    }

    /// Waits until the system namespaces can be read through the front door.
    async fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let client = self.credentials.client()?;
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
        let deadline = tokio::time::Instant::now() + MEMBERS_READY_TIMEOUT;
        loop {
            for member in self.members.lock().await.iter_mut() {
                if let Some(status) = member.machine.exited().await? {
                    anyhow::bail!(
                        "control-plane member {} exited ({status}); see its member.log",
                        member.plan.id
                    );
                }
            }
            if let Ok(Some(_)) = namespaces.get_opt("kube-system").await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "the control-plane members did not serve within {MEMBERS_READY_TIMEOUT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The front door's URL.
    pub fn url(&self) -> &str {
        &self.credentials.server
    }

    /// The admin kubeconfig, pointing at the front door.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// What a client of this cluster needs (the front door's URL).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Each member's own API address, by member id.
    pub async fn member_apis(&self) -> BTreeMap<u64, SocketAddr> {
        let members = self.members.lock().await;
        members
            .iter()
            .map(|member| (member.plan.id, member.plan.api))
            .collect()
    }

    /// Kills member `id` with SIGKILL, as a machine that loses power.
    /// It stays down until [`Self::restart_member`].
    pub async fn kill_member(&mut self, id: u64) -> anyhow::Result<()> {
        let mut members = self.members.lock().await;
        let member = find_member(&mut members, id)?;
        member.held_down = true;
        member.machine.kill().await
    }

    /// Starts member `id` again on its data directory (after [`Self::kill_member`]).
    pub async fn restart_member(&mut self, id: u64) -> anyhow::Result<()> {
        let mut members = self.members.lock().await;
        let member = find_member(&mut members, id)?;
        if member.machine.exited().await?.is_none() {
            anyhow::bail!("member {id} is still running");
        }
        member.machine = member.plan.machine.start(&self.exe).await?;
        member.held_down = false;
        Ok(())
    }

    /// Stops the members with SIGTERM (SIGKILL if one takes too long).
    async fn stop_members(&mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let mut members = self.members.lock().await;
        let stopping = members
            .iter_mut()
            .map(|slot| slot.machine.stop(MEMBER_STOP_TIMEOUT));
        let stopped = futures::future::join_all(stopping).await;
        // All stopped, then the first failure if any.
        stopped.into_iter().collect()
    }

    /// Stops the agents (which remove their containers), then the members, then removes
    /// whatever container of the cluster is left (members' containers carry its label too,
    /// so they are stopped with SIGTERM before that).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        while self.agents.join_next().await.is_some() {}
        let stopping = self
            .node_machines
            .iter_mut()
            .map(|node| node.stop(machines::NODE_STOP_TIMEOUT));
        for stopped in futures::future::join_all(stopping).await {
            if let Err(e) = stopped {
                tracing::warn!(error = %e, "a node agent's container did not stop cleanly");
            }
        }
        self.stop_members().await?;
        if let Some(docker) = &self.docker {
            runtime::reap(docker, &self.cluster_id).await?;
        }
        Ok(())
    }
}
