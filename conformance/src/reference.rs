//! The `reference` driver: certifies shipshape's own reference orchestrator.
//!
//! For each run it starts one fresh cluster on the local Docker engine, as real child
//! processes on a data directory of its own: the control plane (`shipshape up --nodes 0`),
//! three node agents (`shipshape node`, named `node-1`, `node-2`, `node-3`), each its own
//! process as each would be its own machine, and the service proxy. Then it certifies that
//! cluster exactly as it would any other: the driver is the [`kubernetes`](crate::kubernetes)
//! driver, talking to it only through the Kubernetes API, and this module is its
//! [`Machines`] — the processes, which the faults that go past the API kill, stop and
//! start. Every scenario of the run shares that cluster; each has its own namespace.
//! Nothing of the orchestrator is linked in besides its command line
//! (`shipshape::cli::run`), which runs in the children.
//!
//! # How children are started
//!
//! The test binary re-executes itself (`std::env::current_exe()`) with [`CHILD_ENV`] set
//! and a `shipshape` command line (`argv[0]` is `shipshape`). Its `main` calls
//! [`run_reference_child_if_requested`] first, which sees the variable and runs the
//! command line instead of the harness. So the orchestrator under test is the very code
//! the test binary was built with, in processes of their own that can be SIGKILLed.
//!
//! - The control plane: `shipshape up --nodes 0 --data-dir DIR --listen 127.0.0.1:0`.
//!   Before starting it the driver checks that a Docker engine answers (`GET /_ping` on
//!   `DOCKER_HOST`, or `/var/run/docker.sock`), and refuses to start, saying so, if none
//!   does. The child announces itself on stdout (`apiserver: URL`, then
//!   `kubeconfig: PATH`); the driver reads those lines, builds a client from the
//!   kubeconfig and polls `/readyz`. A restart listens on the port the first start got, so
//!   the node agents find it again. With several members ([`MEMBERS_ENV`]) it is `up
//!   --control-plane N --machines containers`: each member runs in a container of its own
//!   on the `shipshape` network, labelled with the cluster and its member id, behind the
//!   front door `up` keeps on the listen address. Then the nodes are machines of their own
//!   too (`shipshape node --machines containers`): each agent runs in a container on that
//!   network, with an address of its own, and drives the engine through its socket.
//! - A node, of the cluster's three or added by a scenario ([`Machines::add_node`]):
//!   `shipshape node --server URL --token T --ca-file DIR/ca.crt --cluster ID --name NAME
//!   --data-dir DIR/nodes/NAME`, with the size, labels and taints asked for; the driver
//!   waits until the Node is Ready with a heartbeat from this very agent. The first node
//!   builds the images on a machine that lacks them (about 20 seconds), so the nodes start
//!   one after the other.
//! - The service proxy, once the nodes are ready: `shipshape proxy --server URL --token T
//!   --ca-file DIR/ca.crt`, its own process as kube-proxy is; it listens on the node port
//!   of every NodePort service on the host's loopback address, which is where the driver
//!   sends its requests to services (`up --nodes 0` runs no proxy).
//!
//! Everything a child writes (stdout and stderr) is appended to a log file in the report
//! directory (`reference-cluster.log`, `reference-node-NAME.log`), whose tail goes into
//! the error when a child fails to start. With several members, each member's own log
//! (kept by `up` in the member's data directory) is copied there too when the cluster
//! stops (`reference-member-N.log`).
//!
//! # Faults
//!
//! Every [`Fault`] is supported, and each is real. The driver itself kills a replica's
//! container (found on the engine by the labels every Kubernetes runtime on Docker puts on
//! it, which the reference's agents put on theirs too) and deletes a replica through the
//! API; the machines do the rest:
//!
//! - *lose a node*: its agent gets SIGKILL (its container first, where it has one), then
//!   every container labelled with its node name is force-removed — the machine is gone,
//!   with all it ran;
//! - *partition a node*: with several members, where every machine is a container, the
//!   links between the node's container and the control plane (this host, where the
//!   front door is, and each member's container) are cut in the node's network namespace
//!   ([`links`]): its agent keeps running and keeps its replicas running, but reaches no
//!   apiserver and no apiserver reaches it. *Heal* restores the links. With one member,
//!   where the nodes are processes of this host and share its network stack, the agent
//!   gets SIGSTOP instead (a frozen machine: no heartbeat, no change seen) and *heal*
//!   sends SIGCONT;
//! - *restart a node*: its agent (if alive) gets SIGTERM, then the same command starts it
//!   again under the same name and data directory;
//! - *restart the control plane*: `up` gets SIGKILL and is started again on the same data
//!   directory and port; the driver returns once every live agent has sent it a heartbeat;
//!   with several members, every member gets SIGKILL first, all at once;
//! - *lose the control-plane member that leads* (`/readyz` names it): it gets SIGKILL, and
//!   `up` starts it again a second later, as a machine that reboots;
//! - *lose a member that does not lead, with its data*: its data directory is deleted,
//!   then it gets SIGKILL — a machine that dies with its disk. `up` finds its store gone
//!   and puts a member with a new id in its place; the driver finds that one as the
//!   member directory that was not there before;
//! - *cut the member that leads off from the others*: its container's traffic to and from
//!   theirs is dropped in its own network namespace ([`links`]), both ways; clients and
//!   the front door still reach it. *Restoring the links* deletes those rules.
//!
//! Signals are sent with `kill(1)`: the workspace forbids `unsafe`, and so the system call.
//!
//! # Lifetime
//!
//! Children are stopped with SIGTERM, on which a node agent removes its containers: an
//! added node when its scenario ends ([`Machines::remove_node`], then its Node object is
//! deleted), everything at the end of the run ([`Machines::shut_down`]: agents first — a
//! partitioned one gets SIGCONT before — then the control plane; then the driver checks
//! that no container of the cluster is left). Should the harness itself be killed, each child
//! notices that its stdin (a pipe the driver holds open) reached end-of-file and sends
//! itself SIGTERM, so no cluster outlives its run and no container is left behind — except
//! for an agent partitioned at that moment, which stays stopped until someone sends it
//! SIGCONT (the containers of every cluster carry `shipshape.cluster` for a reaper).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures::FutureExt as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::docker::Engine;
use crate::driver::{DriverFuture, Fault, NodeSpec, Support};
use crate::kubernetes::{
    ClientCell, KubernetesDriver, KubernetesOptions, Machines, ServicePathKind,
};
use crate::{kubeapi, links};

/// The node port range the reference's control plane allocates from, when set
/// (`--service-node-port-range`, e.g. `30000-30999`): clusters that run side by side on
/// one machine — the kit's mutants do — each get their own, so that their service proxies,
/// which all listen on the host's loopback address, never want the same port.
pub const NODE_PORT_RANGE_ENV: &str = "SHIPSHAPE_NODE_PORT_RANGE";

/// Environment variable that turns the test binary into a `shipshape` child process.
pub const CHILD_ENV: &str = "SHIPSHAPE_CONFORMANCE_REFERENCE_CHILD";

/// How many node agents the cluster runs besides the ones scenarios add.
pub const NODES: usize = 3;

/// Environment variable: how many members the reference's control plane has (`3` runs
/// `shipshape up --control-plane 3`); 1 when unset.
pub const MEMBERS_ENV: &str = "SHIPSHAPE_CONTROL_PLANE_MEMBERS";

/// How many control-plane members [`MEMBERS_ENV`] asks for: 1, 3, 5 or 7.
pub fn members_from_env() -> anyhow::Result<u64> {
    match std::env::var(MEMBERS_ENV) {
        Err(_) => Ok(1),
        Ok(text) if text.trim().is_empty() => Ok(1),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(n @ (1 | 3 | 5 | 7)) => Ok(n),
            _ => bail!("{MEMBERS_ENV}={text:?}: the control plane has 1, 3, 5 or 7 members"),
        },
    }
}

/// The label with which every container of the reference names its cluster.
const LABEL_CLUSTER: &str = "shipshape.cluster";

/// The label with which every container of the reference names its node.
const LABEL_NODE: &str = "shipshape.node";

/// The label with which every container of the reference names its pod (`namespace/name`).
const LABEL_POD: &str = "shipshape.pod";

/// The label with which every container of the reference names itself within its pod.
const LABEL_CONTAINER: &str = "shipshape.container";

/// The [`LABEL_CONTAINER`] of a pod's sandbox, which holds its network namespace.
const SANDBOX: &str = "pause";

/// How long the control plane may take to announce its kubeconfig after it is started.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the control plane may take to answer `/readyz` once it has announced itself.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the first node may take to be Ready: on a machine without the images, it
/// builds them first (about 20 seconds).
const FIRST_NODE_READY_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a node may take to be Ready, or to be heard from again after a control-plane
/// restart.
const NODES_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a child may take to stop cleanly (its containers removed) after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the Docker engine may take to answer `/_ping`.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between two polls of the API while waiting for readiness.
const POLL: Duration = Duration::from_millis(100);

/// The signal number of SIGKILL, which is what `Child::start_kill` sends on Unix.
const SIGKILL: i32 = 9;

/// How many lines of a child's log go into a start-up error.
const LOG_TAIL_LINES: usize = 40;

/// If this process was started as a `shipshape` child by [`ReferenceDriver`], runs the
/// `shipshape` command line and returns its exit code; otherwise returns `None`.
///
/// Call it first thing in `main`, before any runtime or argument parsing: the child's
/// arguments are `shipshape`'s, not the harness's, and `shipshape` builds its own runtime.
pub fn run_reference_child_if_requested() -> Option<ExitCode> {
    std::env::var_os(CHILD_ENV)?;
    // The parent holds our stdin open for as long as it lives; end-of-file means it is
    // gone (even if it was SIGKILLed). Nobody tests us any more: stop as on Ctrl-C, which
    // removes our containers, and leave for good if that takes too long.
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin();
        let mut buffer = [0_u8; 64];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if signal(std::process::id(), "TERM").is_ok() {
            std::thread::sleep(STOP_TIMEOUT);
        }
        std::process::exit(1);
    });
    Some(shipshape::cli::run(std::env::args_os().collect()))
}

/// How long a lost node's engine is given to finish what its killed agent asked for,
/// before (and again after) its containers are removed.
const LOSS_SETTLE: Duration = Duration::from_millis(500);

/// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`) to one process, by its id, with `kill(1)`: the
/// workspace forbids `unsafe`, and so the direct system call.
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("failed to run kill -s {name} {pid}"))?;
    if !status.success() {
        bail!("kill -s {name} {pid} failed ({status})");
    }
    Ok(())
}

/// Stops a child with SIGTERM and waits for it to finish cleaning up; SIGKILLs it if it
/// takes longer than [`STOP_TIMEOUT`]. Returns how it ended.
async fn stop_child(child: &mut Child, what: &str) -> anyhow::Result<ExitStatus> {
    if let Some(status) = child
        .try_wait()
        .with_context(|| format!("failed to check on {what}"))?
    {
        return Ok(status);
    }
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("{what} has no process id"))?;
    signal(pid, "TERM").with_context(|| format!("failed to stop {what}"))?;
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(status) => status.with_context(|| format!("failed to reap {what}")),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            bail!("{what} did not stop within {STOP_TIMEOUT:?} of SIGTERM and was killed")
        }
    }
}

/// The reference orchestrator, run as child processes for the length of a test run: the
/// machines behind the [`KubernetesDriver`] that certifies it.
pub struct ReferenceCluster {
    /// The running control plane; locked for the whole of a restart.
    cluster: tokio::sync::Mutex<Cluster>,
    /// Client for the current control plane, replaced after every restart (shared with the
    /// driver).
    client: ClientCell,
    /// The node agents, the cluster's own and those added by scenarios, by node name.
    nodes: tokio::sync::Mutex<BTreeMap<String, NodeAgent>>,
    /// The API server's URL, the same across restarts.
    apiserver: String,
    /// The bearer token node agents join with.
    token: String,
    /// The cluster's id, which labels every container and network of the cluster.
    cluster_id: String,
    /// The Docker engine the nodes run their containers on.
    docker: Engine,
    /// Where the control plane's stdout and stderr are appended; node logs go next to it.
    log_path: PathBuf,
    /// The cluster's data directory, kept across restarts, removed on drop.
    data_dir: tempfile::TempDir,
    /// The service proxy's process, once started.
    proxy: tokio::sync::Mutex<Option<Child>>,
    /// How many members the control plane has.
    members: u64,
    /// The member cut off from the others last, and the cut while it lasts (until the
    /// links are restored).
    cut: tokio::sync::Mutex<Option<(u64, Option<links::Cut>)>>,
    /// The members there were when one was lost with its data last: the member not among
    /// them is the one that took its place.
    before_loss: tokio::sync::Mutex<Option<Vec<u64>>>,
}

/// One node agent: how to start it, and how it is doing.
struct NodeAgent {
    /// Its name, size, labels and taints, to start it (again).
    spec: NodeSpec,
    /// Whether a scenario added it ([`Driver::add_node`]); only those can be removed.
    added: bool,
    /// Its process.
    state: AgentState,
}

/// What became of a node agent's process.
enum AgentState {
    /// Running.
    Running(Child),
    /// Stopped with SIGSTOP: partitioned, where nodes are processes of this host.
    Frozen(Child),
    /// Its container's links to the control plane cut: partitioned, where nodes are
    /// containers.
    CutOff(Child, links::Cut),
    /// Killed with its machine: nothing runs until it is restarted.
    Lost,
}

impl AgentState {
    /// The process, unless it is lost.
    fn child(&mut self) -> Option<&mut Child> {
        match self {
            AgentState::Running(child)
            | AgentState::Frozen(child)
            | AgentState::CutOff(child, _) => Some(child),
            AgentState::Lost => None,
        }
    }
}

/// One incarnation of the `shipshape up` child process.
struct Cluster {
    /// The child process (its stdin pipe is held open inside).
    child: Child,
    /// The API server URL it announced.
    apiserver: String,
    /// The kubeconfig it announced.
    kubeconfig: PathBuf,
    /// A client built from that kubeconfig, checked ready.
    client: kube::Client,
    /// 1 for the first start of the run, counting up with every restart.
    generation: u32,
}

/// Starts a fresh reference cluster and the driver that certifies it: the Kubernetes driver,
/// with the cluster's processes as its machines. Node ports answer on 127.0.0.1, where the
/// cluster's service proxy listens (and on the cluster network's gateway, which the nodes
/// `up` starts report as their InternalIP).
pub async fn start(
    log_path: PathBuf,
    run_id: &str,
    members: u64,
) -> anyhow::Result<KubernetesDriver> {
    let cluster = ReferenceCluster::start(log_path, members).await?;
    let client = cluster.client.clone();
    let server = format!(
        "{} (kubeconfig {})",
        cluster.apiserver,
        cluster.data_dir.path().join("kubeconfig").display()
    );
    let options = KubernetesOptions {
        node_address: Some("127.0.0.1".to_owned()),
        service_path: Some(ServicePathKind::NodePort),
        ..KubernetesOptions::default()
    };
    let cluster = Box::new(cluster);
    // On failure the cluster is dropped, which stops its children (they remove their
    // containers on SIGTERM).
    KubernetesDriver::connect("reference", client, server, options, Some(cluster), run_id).await
}

impl ReferenceCluster {
    /// Starts a fresh reference cluster (control plane and [`NODES`] node agents) on a new
    /// temporary data directory, waits until it is ready, and appends its output to
    /// `log_path`. Fails, saying so, when no Docker engine is reachable.
    pub async fn start(log_path: PathBuf, members: u64) -> anyhow::Result<Self> {
        let docker = Engine::from_env();
        docker.ping(DOCKER_TIMEOUT).await.context(
            "the reference runs every pod as a Docker container, so it cannot be certified \
             without a Docker engine: start dockerd, or point DOCKER_HOST at a running engine",
        )?;
        reap_dead_clusters(&docker).await;
        let data_dir = owned_data_dir(DATA_DIR_PREFIX)?;
        // A new run starts a new log, and leaves no node logs of an earlier run about.
        File::create(&log_path)
            .with_context(|| format!("failed to create the cluster log {}", log_path.display()))?;
        if let Some(Ok(entries)) = log_path.parent().map(std::fs::read_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if (name.starts_with("reference-node-") || name.starts_with("reference-member-"))
                    && name.ends_with(".log")
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let mut cluster =
            Cluster::start(data_dir.path(), &log_path, 1, "127.0.0.1:0", 0, members).await?;
        let dir = data_dir.path();
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .map(|text| text.trim().to_owned())
                .with_context(|| {
                    format!("failed to read the cluster's {file} in {}", dir.display())
                })
        };
        let (token, cluster_id) = match (read("token"), read("cluster-id")) {
            (Ok(token), Ok(cluster_id)) => (token, cluster_id),
            (Err(error), _) | (_, Err(error)) => {
                let _ = stop_child(&mut cluster.child, "the reference control plane").await;
                return Err(error);
            }
        };
        let driver = Self {
            client: ClientCell::new(cluster.client.clone()),
            apiserver: cluster.apiserver.clone(),
            cluster: tokio::sync::Mutex::new(cluster),
            nodes: tokio::sync::Mutex::new(BTreeMap::new()),
            token,
            cluster_id,
            docker,
            log_path,
            data_dir,
            proxy: tokio::sync::Mutex::new(None),
            members,
            cut: tokio::sync::Mutex::new(None),
            before_loss: tokio::sync::Mutex::new(None),
        };
        for number in 1..=NODES {
            let spec = NodeSpec {
                name: format!("node-{number}"),
                ..NodeSpec::default()
            };
            let timeout = if number == 1 {
                FIRST_NODE_READY_TIMEOUT
            } else {
                NODES_READY_TIMEOUT
            };
            if let Err(error) = driver.start_node(&spec, false, timeout).await {
                if let Err(stop) = driver.stop_all().await {
                    eprintln!("conformance: {stop:#}");
                }
                return Err(error.context("the reference cluster did not start"));
            }
        }
        if let Err(error) = driver.start_proxy().await {
            if let Err(stop) = driver.stop_all().await {
                eprintln!("conformance: {stop:#}");
            }
            return Err(error.context("the reference cluster's service proxy did not start"));
        }
        Ok(driver)
    }

    /// The client for the control plane currently running.
    fn client(&self) -> kube::Client {
        self.client.get()
    }

    /// The log of a node agent.
    fn node_log(&self, name: &str) -> PathBuf {
        self.log_path
            .with_file_name(format!("reference-node-{name}.log"))
    }

    /// SIGKILLs the control plane, starts it again on the same data directory and port,
    /// switches to a client for the new process, and waits until every live node agent has
    /// sent it a heartbeat.
    async fn restart_control_plane(&self) -> anyhow::Result<()> {
        let killed_at = now_seconds();
        {
            let mut cluster = self.cluster.lock().await;
            if let Some(status) = cluster
                .child
                .try_wait()
                .context("failed to check on the reference control plane")?
            {
                bail!(
                    "the reference control plane had already exited ({status}) before it was \
                     killed; see {}",
                    self.log_path.display()
                );
            }
            // Every member at once, as a power cut of all their machines...
            for pid in self.member_pids() {
                signal(pid, "KILL")?;
            }
            // ...and `up` with them. `start_kill` is SIGKILL on Unix: no shutdown hook runs,
            // nothing gets flushed.
            cluster
                .child
                .start_kill()
                .context("failed to SIGKILL the reference control plane")?;
            let status = cluster
                .child
                .wait()
                .await
                .context("failed to reap the killed reference control plane")?;
            if status.signal() != Some(SIGKILL) {
                bail!(
                    "the reference control plane ended with {status} instead of being killed \
                     by SIGKILL"
                );
            }
            tracing::info!(apiserver = %cluster.apiserver, "reference control plane killed");
            let listen = self
                .apiserver
                .strip_prefix("https://")
                .ok_or_else(|| anyhow!("the API server URL {} is not https://", self.apiserver))?;
            let generation = cluster.generation + 1;
            let restarted = Cluster::start(
                self.data_dir.path(),
                &self.log_path,
                generation,
                listen,
                0,
                self.members,
            )
            .await?;
            self.client.set(restarted.client.clone());
            *cluster = restarted;
        }
        let live: Vec<String> = self
            .nodes
            .lock()
            .await
            .iter()
            .filter(|(_, agent)| matches!(agent.state, AgentState::Running(_)))
            .map(|(name, _)| name.clone())
            .collect();
        let client = self.client();
        for name in live {
            wait_for(NODES_READY_TIMEOUT, || {
                heard_from_since(&client, &name, killed_at)
            })
            .await
            .with_context(|| {
                format!("node {name} did not get back in touch with the restarted control plane")
            })?;
        }
        Ok(())
    }

    /// The ids of the control plane's members now, from their data directories (none for
    /// a control plane of one, which is `up` itself). A member lost with its data has none
    /// left; the member that replaces it has one.
    fn member_ids(&self) -> Vec<u64> {
        if self.members < 2 {
            return Vec::new();
        }
        shipshape::control_plane::existing_members(self.data_dir.path()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "failed to list the control plane's members");
            Vec::new()
        })
    }

    /// The pids of the control plane's members (none for a control plane of one, which is
    /// `up` itself), from the pid files `up` writes.
    fn member_pids(&self) -> Vec<u32> {
        self.member_ids()
            .into_iter()
            .filter_map(|id| self.member_pid(id).ok())
            .collect()
    }

    /// Member `id`'s pid, from the pid file `up` writes.
    fn member_pid(&self, id: u64) -> anyhow::Result<u32> {
        let path = self
            .data_dir
            .path()
            .join("members")
            .join(id.to_string())
            .join("pid");
        std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?
            .trim()
            .parse()
            .with_context(|| format!("{} holds no pid", path.display()))
    }

    /// Kills the member that leads the control plane's store with SIGKILL; `up` starts it
    /// again a second later, as a machine that reboots.
    async fn lose_control_plane_leader(&self) -> anyhow::Result<()> {
        let leader = self.leader().await?;
        let pid = self.member_pid(leader)?;
        signal(pid, "KILL")?;
        tracing::info!(
            member = leader,
            pid,
            "killed the control-plane member that leads"
        );
        Ok(())
    }

    /// Deletes the data directory of a member that does not lead, then kills it with
    /// SIGKILL: a machine that dies with its disk. In that order, so that `up` never finds
    /// the member dead with its data still there and starts it again; it finds the data
    /// gone and puts a new member in its place. The lost member's log is kept in the
    /// report first.
    async fn lose_control_plane_member_and_data(&self) -> anyhow::Result<()> {
        let leader = self.leader().await?;
        let before = self.member_ids();
        let lost = before
            .iter()
            .copied()
            .find(|id| *id != leader)
            .ok_or_else(|| anyhow!("the control plane has no member but its leader"))?;
        let dir = self.data_dir.path().join("members").join(lost.to_string());
        let pid = self.member_pid(lost)?;
        self.keep_member_log(lost);
        // The running member may still add a file while the directory goes.
        let mut removed = std::fs::remove_dir_all(&dir);
        for _ in 0..10 {
            if removed.is_ok() || !dir.exists() {
                break;
            }
            removed = std::fs::remove_dir_all(&dir);
        }
        removed.with_context(|| format!("failed to delete {}", dir.display()))?;
        signal(pid, "KILL")?;
        tracing::info!(
            member = lost,
            pid,
            "killed a control-plane member that does not lead, its data deleted"
        );
        *self.before_loss.lock().await = Some(before);
        Ok(())
    }

    /// The member's container, as a machine: its process, its address on the cluster's
    /// network, the host port of its API.
    async fn member_machine(&self, member: u64) -> anyhow::Result<crate::docker::Machine> {
        let id = member.to_string();
        let what = format!("control-plane member {member}");
        let (_, machine) = self
            .running_machine(shipshape::machines::LABEL_MEMBER, &id, &what)
            .await?;
        Ok(machine)
    }

    /// The running container of this cluster labelled `label=value` (`what` it is, for the
    /// error), and the machine it is.
    async fn running_machine(
        &self,
        label: &str,
        value: &str,
        what: &str,
    ) -> anyhow::Result<(String, crate::docker::Machine)> {
        let labels = [
            (
                shipshape::agent::runtime::LABEL_CLUSTER,
                self.cluster_id.as_str(),
            ),
            (label, value),
        ];
        let container = self
            .docker
            .containers(&labels)
            .await?
            .into_iter()
            .find(|c| c.running)
            .ok_or_else(|| anyhow!("no container of {what} is running"))?;
        let machine = self.docker.machine(&container.id).await?;
        Ok((container.id, machine))
    }

    /// Cuts the member that leads off from the other members: packets between its
    /// container and theirs are dropped in its network namespace, both ways; the front
    /// door and the clients still reach it.
    async fn partition_control_plane_leader(&self) -> anyhow::Result<()> {
        let mut cut = self.cut.lock().await;
        if let Some((member, Some(_))) = &*cut {
            bail!("member {member} is cut off already; restore the links first");
        }
        let leader = self.leader().await?;
        let network = shipshape::agent::runtime::POD_NETWORK;
        let machine = self.member_machine(leader).await?;
        let mut peers = Vec::new();
        for member in self.member_ids().into_iter().filter(|m| *m != leader) {
            let other = self.member_machine(member).await?;
            let address = other.addresses.get(network).copied().ok_or_else(|| {
                anyhow!("control-plane member {member} has no address on network {network}")
            })?;
            peers.push(address);
        }
        let done = links::cut(machine.pid, peers).await?;
        tracing::info!(member = leader, peers = ?done.peers, "cut the control-plane member that leads off from the others");
        *cut = Some((leader, Some(done)));
        Ok(())
    }

    /// Restores the links [`Self::partition_control_plane_leader`] cut.
    async fn heal_control_plane(&self) -> anyhow::Result<()> {
        let mut cut = self.cut.lock().await;
        if let Some((member, lasting)) = cut.as_mut()
            && let Some(done) = lasting.take()
        {
            links::heal(&done).await?;
            tracing::info!(
                member,
                "restored the links of the control-plane member cut off"
            );
        }
        Ok(())
    }

    /// A client for the API of the member cut off last (even once its links are back), and
    /// of it alone: the kubeconfig's, sent to the host port its container publishes.
    async fn cut_off_member_client(&self) -> anyhow::Result<Option<kube::Client>> {
        let Some(member) = self.cut.lock().await.as_ref().map(|(member, _)| *member) else {
            return Ok(None);
        };
        Ok(Some(self.member_client(member).await?))
    }

    /// A client for the API of the member that took the place of the one lost with its
    /// data last, once it runs.
    async fn new_member_client(&self) -> anyhow::Result<Option<kube::Client>> {
        let Some(before) = self.before_loss.lock().await.clone() else {
            return Ok(None);
        };
        let new = self
            .member_ids()
            .into_iter()
            .find(|id| !before.contains(id));
        match new {
            Some(member) if self.member_machine(member).await.is_ok() => {
                Ok(Some(self.member_client(member).await?))
            }
            _ => Ok(None),
        }
    }

    /// A client for the API of `member` alone: the kubeconfig's, sent to the host port
    /// its container publishes.
    async fn member_client(&self, member: u64) -> anyhow::Result<kube::Client> {
        let machine = self.member_machine(member).await?;
        let api = format!("{}/tcp", shipshape::machines::CONTAINER_API_PORT);
        let port = machine
            .published
            .get(&api)
            .ok_or_else(|| anyhow!("control-plane member {member} publishes no API port"))?;
        let path = self.cluster.lock().await.kubeconfig.clone();
        let mut file = Kubeconfig::read_from(&path)
            .with_context(|| format!("failed to read the kubeconfig {}", path.display()))?;
        for named in &mut file.clusters {
            if let Some(cluster) = named.cluster.as_mut() {
                cluster.server = Some(format!("https://127.0.0.1:{port}"));
            }
        }
        let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("the kubeconfig {} is not usable", path.display()))?;
        kubeapi::client(config)
    }

    /// The member that leads the control plane's store, as `/readyz` names it.
    async fn leader(&self) -> anyhow::Result<u64> {
        let client = self.client.get();
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .context("failed to build the /readyz request")?;
        let response = client
            .send(request.map(Into::into))
            .await
            .context("failed to ask the control plane which member leads")?;
        let leader: u64 = response
            .headers()
            .get(shipshape::apiserver::LEADER_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("the control plane names no leader"))?;
        Ok(leader)
    }

    /// Starts `shipshape node` for `spec` and waits until its Node is Ready, with a
    /// heartbeat sent after the start. A node of that name must not be running already.
    async fn start_node(
        &self,
        spec: &NodeSpec,
        added: bool,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let mut nodes = self.nodes.lock().await;
        if let Some(agent) = nodes.get(&spec.name)
            && !matches!(agent.state, AgentState::Lost)
        {
            bail!("node {} is already running", spec.name);
        }
        let dir = self.data_dir.path();
        let mut args: Vec<OsString> = vec![
            "node".into(),
            "--server".into(),
            self.apiserver.clone().into(),
            "--token".into(),
            self.token.clone().into(),
            "--ca-file".into(),
            dir.join("ca.crt").into(),
            "--cluster".into(),
            self.cluster_id.clone().into(),
            "--name".into(),
            spec.name.clone().into(),
            "--data-dir".into(),
            dir.join("nodes").join(&spec.name).into(),
        ];
        if let Some(millicpu) = spec.allocatable.millicpu {
            args.extend(["--cpu".into(), format!("{millicpu}m").into()]);
        }
        if let Some(bytes) = spec.allocatable.memory_bytes {
            args.extend(["--memory".into(), bytes.to_string().into()]);
        }
        if let Some(max_pods) = spec.max_pods {
            args.extend(["--max-pods".into(), max_pods.to_string().into()]);
        }
        for (key, value) in &spec.labels {
            args.extend(["--label".into(), format!("{key}={value}").into()]);
        }
        for taint in &spec.taints {
            args.extend(["--taint".into(), taint.to_string().into()]);
        }
        if self.machines_are_containers() {
            args.extend(["--machines".into(), "containers".into()]);
        }
        let log_path = self.node_log(&spec.name);
        let started_at = now_seconds();
        let (mut child, _log, log_start) = spawn(&args, &log_path, false)?;
        note_child(dir, &child);
        let client = self.client();
        let ready = wait_until(timeout, &mut child, || {
            heard_from_since(&client, &spec.name, started_at)
        })
        .await;
        if let Err(error) = ready {
            let _ = stop_child(&mut child, &format!("node agent {}", spec.name)).await;
            if added {
                let _ = kubeapi::delete_node(&client, &spec.name).await;
            }
            // A restarted node that fails to start is as good as lost.
            if let Some(agent) = nodes.get_mut(&spec.name) {
                agent.state = AgentState::Lost;
            }
            bail!(
                "node {} did not become Ready: {error:#}; its output:\n{}",
                spec.name,
                log_tail(&log_path, log_start)
            );
        }
        tracing::info!(node = %spec.name, "node ready");
        nodes.insert(
            spec.name.clone(),
            NodeAgent {
                spec: spec.clone(),
                added,
                state: AgentState::Running(child),
            },
        );
        Ok(())
    }

    /// Stops an added node's agent (which removes its containers) and deletes its Node.
    async fn remove_added_node(&self, name: &str) -> anyhow::Result<()> {
        let mut nodes = self.nodes.lock().await;
        if !nodes.get(name).is_some_and(|agent| agent.added) {
            bail!("node {name} was not added by this driver; only added nodes can be removed");
        }
        let stopped = match nodes.remove(name) {
            Some(mut agent) => self.stop_agent(name, &mut agent.state).await,
            None => Ok(()),
        };
        // The Node goes whatever happened to the agent: later scenarios must not see it.
        kubeapi::delete_node(&self.client(), name).await?;
        stopped
    }

    /// Whether the machines — members and nodes — are containers of their own, with
    /// addresses of their own (with several members), or processes of this host.
    fn machines_are_containers(&self) -> bool {
        self.members > 1
    }

    /// The container of node `name`, as a machine (where nodes are containers).
    async fn node_machine(&self, name: &str) -> anyhow::Result<(String, crate::docker::Machine)> {
        self.running_machine(
            shipshape::machines::LABEL_NODE_MACHINE,
            name,
            &format!("node {name}"),
        )
        .await
    }

    /// Stops one agent cleanly (SIGCONT or its links back first if it is partitioned,
    /// then SIGTERM) and checks it ended well; a lost agent has nothing left to stop.
    async fn stop_agent(&self, name: &str, state: &mut AgentState) -> anyhow::Result<()> {
        if let AgentState::CutOff(..) = state
            && let AgentState::CutOff(child, cut) = std::mem::replace(state, AgentState::Lost)
        {
            let healed = links::heal(&cut).await;
            *state = AgentState::Running(child);
            healed.with_context(|| format!("failed to restore the links of node {name}"))?;
        }
        let frozen = matches!(state, AgentState::Frozen(_));
        let Some(child) = state.child() else {
            return Ok(());
        };
        if frozen && let Some(pid) = child.id() {
            signal(pid, "CONT").with_context(|| format!("failed to resume node agent {name}"))?;
        }
        let status = stop_child(child, &format!("node agent {name}")).await?;
        *state = AgentState::Lost;
        if !status.success() {
            bail!(
                "node agent {name} ended with {status} when stopped; see {}",
                self.node_log(name).display()
            );
        }
        Ok(())
    }

    /// Loses a node: SIGKILLs its agent, then force-removes every container of the node.
    async fn lose_node(&self, name: &str) -> anyhow::Result<()> {
        let mut nodes = self.nodes.lock().await;
        let agent = nodes
            .get_mut(name)
            .ok_or_else(|| anyhow!("node {name} is not one of the driver's node agents"))?;
        if agent.state.child().is_none() {
            bail!("node {name} is already lost");
        }
        if self.machines_are_containers() {
            // The machine's power: its container, with the agent in it, goes first.
            let (container, _) = self.node_machine(name).await?;
            self.docker
                .kill(&container)
                .await
                .with_context(|| format!("failed to kill the container of node {name}"))?;
        }
        let Some(child) = agent.state.child() else {
            bail!("node {name} is already lost");
        };
        // SIGKILL ends a stopped (partitioned) process as well.
        child
            .start_kill()
            .with_context(|| format!("failed to SIGKILL node agent {name}"))?;
        child
            .wait()
            .await
            .with_context(|| format!("failed to reap the killed node agent {name}"))?;
        agent.state = AgentState::Lost;
        // A create or start the agent asked for just before it died still completes in the
        // engine; removing a container while the engine attaches it to the network can
        // leave a stale endpoint behind. So: let those finish, remove what is there
        // (sandboxes last), and look once more for one that landed meanwhile.
        let mut removed = 0;
        for _ in 0..2 {
            tokio::time::sleep(LOSS_SETTLE).await;
            let mut containers = self
                .docker
                .containers(&[(LABEL_CLUSTER, &self.cluster_id), (LABEL_NODE, name)])
                .await?;
            containers.sort_by_key(|c| {
                c.labels.get(LABEL_CONTAINER).map(String::as_str) == Some(SANDBOX)
            });
            for container in &containers {
                self.docker.remove(&container.id).await.with_context(|| {
                    format!("failed to remove a container of the lost node {name}")
                })?;
            }
            removed += containers.len();
        }
        tracing::info!(node = %name, containers = removed, "node lost");
        Ok(())
    }

    /// Partitions a node. Where nodes are containers, the links between its container
    /// and the control plane (this host, where the front door is, and every member's
    /// container) are cut; its agent and its replicas keep running. Where they are
    /// processes of this host, which cannot lose a link, its agent gets SIGSTOP instead.
    async fn partition_node(&self, name: &str) -> anyhow::Result<()> {
        let mut nodes = self.nodes.lock().await;
        let agent = nodes
            .get_mut(name)
            .ok_or_else(|| anyhow!("node {name} is not one of the driver's node agents"))?;
        let child = match std::mem::replace(&mut agent.state, AgentState::Lost) {
            AgentState::Running(child) => child,
            other => {
                agent.state = other;
                bail!("node {name} is not running, so it cannot be partitioned");
            }
        };
        if self.machines_are_containers() {
            let cut = self.cut_node_off(name).await;
            return match cut {
                Ok(cut) => {
                    tracing::info!(node = %name, peers = ?cut.peers, "cut the node off from the control plane");
                    agent.state = AgentState::CutOff(child, cut);
                    Ok(())
                }
                Err(error) => {
                    agent.state = AgentState::Running(child);
                    Err(error.context(format!("failed to partition node {name}")))
                }
            };
        }
        let stopped = child
            .id()
            .ok_or_else(|| anyhow!("node agent {name} has no process id"))
            .and_then(|pid| signal(pid, "STOP"));
        agent.state = match stopped {
            Ok(()) => AgentState::Frozen(child),
            Err(_) => AgentState::Running(child),
        };
        stopped.with_context(|| format!("failed to partition node {name}"))
    }

    /// Cuts node `name`'s container off from the control plane: this host, as the
    /// cluster's network's gateway, and every member's container.
    async fn cut_node_off(&self, name: &str) -> anyhow::Result<links::Cut> {
        let network = shipshape::agent::runtime::POD_NETWORK;
        let (_, machine) = self.node_machine(name).await?;
        let gateway = machine
            .gateways
            .get(network)
            .copied()
            .ok_or_else(|| anyhow!("node {name} has no gateway on network {network}"))?;
        let mut peers = vec![gateway];
        for member in self.member_ids() {
            let other = self.member_machine(member).await?;
            peers.extend(other.addresses.get(network).copied());
        }
        links::cut(machine.pid, peers).await
    }

    /// Heals every partition: restores every cut link, SIGCONTs every stopped agent.
    async fn heal(&self) -> anyhow::Result<()> {
        let mut nodes = self.nodes.lock().await;
        for (name, agent) in nodes.iter_mut() {
            let child = match std::mem::replace(&mut agent.state, AgentState::Lost) {
                AgentState::Frozen(child) => child,
                AgentState::CutOff(child, cut) => {
                    let healed = links::heal(&cut).await;
                    agent.state = match &healed {
                        Ok(()) => AgentState::Running(child),
                        Err(_) => AgentState::CutOff(child, cut),
                    };
                    healed
                        .with_context(|| format!("failed to heal the partition of node {name}"))?;
                    continue;
                }
                other => {
                    agent.state = other;
                    continue;
                }
            };
            let resumed = child
                .id()
                .ok_or_else(|| anyhow!("node agent {name} has no process id"))
                .and_then(|pid| signal(pid, "CONT"));
            agent.state = match resumed {
                Ok(()) => AgentState::Running(child),
                Err(_) => AgentState::Frozen(child),
            };
            resumed.with_context(|| format!("failed to heal the partition of node {name}"))?;
        }
        Ok(())
    }

    /// Restarts a node: stops its agent if it runs, starts it again under the same name.
    async fn restart_node(&self, name: &str) -> anyhow::Result<()> {
        let (spec, added) = {
            let mut nodes = self.nodes.lock().await;
            let agent = nodes
                .get_mut(name)
                .ok_or_else(|| anyhow!("node {name} is not one of the driver's node agents"))?;
            self.stop_agent(name, &mut agent.state).await?;
            (agent.spec.clone(), agent.added)
        };
        self.start_node(&spec, added, NODES_READY_TIMEOUT).await
    }

    /// Starts the service proxy as a child of its own, logging next to the cluster.
    async fn start_proxy(&self) -> anyhow::Result<()> {
        let args: Vec<OsString> = vec![
            "proxy".into(),
            "--server".into(),
            self.apiserver.clone().into(),
            "--token".into(),
            self.token.clone().into(),
            "--ca-file".into(),
            self.data_dir.path().join("ca.crt").into(),
        ];
        let log_path = self.log_path.with_file_name("reference-proxy.log");
        let (child, _log, _start) = spawn(&args, &log_path, false)?;
        note_child(self.data_dir.path(), &child);
        *self.proxy.lock().await = Some(child);
        Ok(())
    }

    /// Stops the proxy, every node agent, then the control plane, cleanly; then checks
    /// that no container of the cluster is left.
    async fn stop_all(&self) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        if let Err(error) = self.heal_control_plane().await {
            failures.push(format!("{error:#}"));
        }
        if let Some(mut proxy) = self.proxy.lock().await.take() {
            match stop_child(&mut proxy, "the service proxy").await {
                Ok(status) if status.success() => {}
                Ok(status) => failures.push(format!(
                    "the service proxy ended with {status} when stopped; see reference-proxy.log"
                )),
                Err(error) => failures.push(format!("{error:#}")),
            }
        }
        let agents = std::mem::take(&mut *self.nodes.lock().await);
        let client = self.client();
        for (name, mut agent) in agents {
            if let Err(error) = self.stop_agent(&name, &mut agent.state).await {
                failures.push(format!("{error:#}"));
            }
            if agent.added
                && let Err(error) = kubeapi::delete_node(&client, &name).await
            {
                failures.push(format!("{error:#}"));
            }
        }
        let mut cluster = self.cluster.lock().await;
        match stop_child(&mut cluster.child, "the reference control plane").await {
            Ok(status) if status.success() => {}
            Ok(status) => failures.push(format!(
                "the reference control plane ended with {status} when stopped; see {}",
                self.log_path.display()
            )),
            Err(error) => failures.push(format!("{error:#}")),
        }
        self.keep_member_logs();
        if let Err(error) = self.reap().await {
            failures.push(format!("{error:#}"));
        }
        if !failures.is_empty() {
            bail!("{}", failures.join("; "));
        }
        Ok(())
    }

    /// Copies each member's log from its data directory, which goes with the cluster, to
    /// the report directory.
    fn keep_member_logs(&self) {
        for id in self.member_ids() {
            self.keep_member_log(id);
        }
    }

    /// Copies member `id`'s log from its data directory to the report directory
    /// (`reference-member-ID.log`).
    fn keep_member_log(&self, id: u64) {
        let from = self
            .data_dir
            .path()
            .join("members")
            .join(id.to_string())
            .join("member.log");
        let to = self
            .log_path
            .with_file_name(format!("reference-member-{id}.log"));
        if from.exists()
            && let Err(e) = std::fs::copy(&from, &to)
        {
            tracing::warn!(error = %e, "failed to keep member {id}'s log in the report");
        }
    }

    /// Removes what the stopped cluster left on the Docker engine — which is an error, as
    /// the agents should have removed their containers. (The pod network is shared by
    /// every cluster on the engine and stays.)
    async fn reap(&self) -> anyhow::Result<()> {
        let cluster = [(LABEL_CLUSTER, self.cluster_id.as_str())];
        let left = self.docker.containers(&cluster).await?;
        for container in &left {
            self.docker.remove(&container.id).await?;
        }
        if !left.is_empty() {
            let names: Vec<String> = left
                .iter()
                .map(|container| {
                    let label = |key: &str| container.labels.get(key).cloned().unwrap_or_default();
                    format!(
                        "{} of pod {} on {}",
                        label(LABEL_CONTAINER),
                        label(LABEL_POD),
                        label(LABEL_NODE)
                    )
                })
                .collect();
            bail!(
                "the stopped cluster left {} containers behind (now removed): {}",
                left.len(),
                names.join(", ")
            );
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch, now.
fn now_seconds() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// Whether the Node is Ready with a heartbeat from a later second than `since` (seconds
/// since the epoch): heartbeats carry whole seconds, so one of the same second may be
/// older.
async fn heard_from_since(client: &kube::Client, name: &str, since: i64) -> anyhow::Result<bool> {
    let ready = kubeapi::node_ready(client, name).await?;
    let heartbeat = kubeapi::node_heartbeat(client, name).await?;
    Ok(ready && heartbeat.is_some_and(|heartbeat| heartbeat > since))
}

/// Polls `ready` until it answers true, failing at `timeout` with the last answer.
async fn wait_for<F, Fut>(timeout: Duration, mut ready: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match ready().await {
            Ok(true) => return Ok(()),
            Ok(false) => "not yet".to_owned(),
            Err(error) => format!("{error:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("not within {timeout:?}; last answer: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Drop for ReferenceCluster {
    fn drop(&mut self) {
        // Normally `shut_down` has stopped everything. If not (the run failed half way),
        // ask every child to stop cleanly: they remove their containers on SIGTERM. A
        // partitioned agent is resumed first, or it could not.
        for agent in self.nodes.get_mut().values_mut() {
            let frozen = matches!(agent.state, AgentState::Frozen(_));
            if let Some(pid) = agent.state.child().and_then(|child| child.id()) {
                if frozen {
                    let _ = signal(pid, "CONT");
                }
                let _ = signal(pid, "TERM");
            }
        }
        if let Some(pid) = self.proxy.get_mut().as_ref().and_then(Child::id) {
            let _ = signal(pid, "TERM");
        }
        self.keep_member_logs();
        if let Some(pid) = self.cluster.get_mut().child.id() {
            let _ = signal(pid, "TERM");
        }
    }
}

impl std::fmt::Debug for ReferenceCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceCluster")
            .field("apiserver", &self.apiserver)
            .field("data_dir", &self.data_dir.path())
            .field("log_path", &self.log_path)
            .finish_non_exhaustive()
    }
}

/// Re-executes the test binary as `shipshape ARGS`, appending its stderr — and its stdout,
/// unless `capture_stdout` — to the log. Returns the child, the log, and where this
/// start's output begins in it.
fn spawn(
    args: &[OsString],
    log_path: &Path,
    capture_stdout: bool,
) -> anyhow::Result<(Child, File, u64)> {
    let exe = std::env::current_exe().context("failed to locate the test binary to re-execute")?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("failed to open the log {}", log_path.display()))?;
    // The command line goes into the log, but not the bearer token that follows `--token`.
    let shown: Vec<String> = args
        .iter()
        .enumerate()
        .map(|(i, arg)| {
            let after_token = i > 0 && args[i - 1] == "--token";
            if after_token {
                "<redacted>".to_owned()
            } else {
                arg.to_string_lossy().into_owned()
            }
        })
        .collect();
    writeln!(log, "=== shipshape {}", shown.join(" "))
        .with_context(|| format!("failed to write the log {}", log_path.display()))?;
    let log_start = log.stream_position().unwrap_or(0);
    let stderr = log
        .try_clone()
        .context("failed to share the log with the child")?;
    let stdout = if capture_stdout {
        Stdio::piped()
    } else {
        Stdio::from(
            log.try_clone()
                .context("failed to share the log with the child")?,
        )
    };
    let what = args.first().map_or_else(String::new, |command| {
        command.to_string_lossy().into_owned()
    });
    let child = Command::new(&exe)
        .arg0("shipshape")
        .args(args)
        .env(CHILD_ENV, "1")
        // Its log is a file: no colour codes in it.
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::from(stderr))
        // Stopped on purpose (SIGTERM, so it cleans up), never by a drop.
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("failed to start {} as shipshape {what}", exe.display()))?;
    Ok((child, log, log_start))
}

/// Polls `ready` until it answers true, failing early if `child` exits, and at `timeout`.
async fn wait_until<F, Fut>(
    timeout: Duration,
    child: &mut Child,
    mut ready: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match ready().await {
            Ok(true) => return Ok(()),
            Ok(false) => "not yet".to_owned(),
            Err(error) => format!("{error:#}"),
        };
        if let Some(status) = child.try_wait().context("failed to check on the child")? {
            bail!("the process exited ({status}) before it was ready");
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("not ready within {timeout:?}; last answer: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Cluster {
    /// Starts `shipshape up --nodes 0` listening on `listen`, reads its announcement,
    /// connects, and waits for `/readyz`.
    async fn start(
        data_dir: &Path,
        log_path: &Path,
        generation: u32,
        listen: &str,
        nodes: u32,
        members: u64,
    ) -> anyhow::Result<Self> {
        let mut args: Vec<OsString> = vec![
            "up".into(),
            "--nodes".into(),
            nodes.to_string().into(),
            "--control-plane".into(),
            members.to_string().into(),
            "--data-dir".into(),
            data_dir.as_os_str().to_owned(),
            "--listen".into(),
            listen.into(),
        ];
        if members > 1 {
            // Each member a machine of its own, so that the links between them can fail.
            args.extend(["--machines".into(), "containers".into()]);
        }
        if let Some(range) = std::env::var_os(NODE_PORT_RANGE_ENV).filter(|r| !r.is_empty()) {
            args.extend(["--service-node-port-range".into(), range]);
        }
        let (mut child, mut log, log_start) = spawn(&args, log_path, true)?;
        note_child(data_dir, &child);
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("the reference control plane's stdout was not captured"))?;
        let mut lines = BufReader::new(stdout).lines();

        let announced =
            tokio::time::timeout(ANNOUNCE_TIMEOUT, read_announcement(&mut lines, &mut log)).await;
        let (apiserver, kubeconfig) = match announced {
            Ok(Ok(Some(announcement))) => announcement,
            Ok(Ok(None)) => {
                let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await
                {
                    Ok(Ok(status)) => status.to_string(),
                    _ => "closed its stdout".to_owned(),
                };
                bail!(
                    "the reference control plane exited ({status}) before printing its kubeconfig; its output:\n{}",
                    log_tail(log_path, log_start)
                );
            }
            Ok(Err(error)) => {
                let _ = child.start_kill();
                return Err(error.context("failed to read the reference control plane's stdout"));
            }
            Err(_) => {
                let _ = stop_child(&mut child, "the reference control plane").await;
                bail!(
                    "the reference control plane did not print its kubeconfig within {ANNOUNCE_TIMEOUT:?}; its output:\n{}",
                    log_tail(log_path, log_start)
                );
            }
        };
        // Keep draining stdout, so the child never blocks on a full pipe.
        tokio::spawn(copy_lines(lines, log));

        let started = async {
            let client = connect(&kubeconfig).await?;
            wait_until(READY_TIMEOUT, &mut child, || async {
                let request = http::Request::get("/readyz")
                    .body(Vec::new())
                    .context("failed to build the /readyz request")?;
                client
                    .request_text(request)
                    .await
                    .map(|_| true)
                    .with_context(|| format!("GET {apiserver}/readyz failed"))
            })
            .await
            .context("the control plane did not answer /readyz")?;
            anyhow::Ok(client)
        };
        let client = match started.await {
            Ok(client) => client,
            Err(error) => {
                let _ = stop_child(&mut child, "the reference control plane").await;
                bail!(
                    "the reference control plane at {apiserver} did not start: {error:#}; its output:\n{}",
                    log_tail(log_path, log_start)
                );
            }
        };
        tracing::info!(%apiserver, kubeconfig = %kubeconfig.display(), generation, "reference control plane ready");
        Ok(Self {
            child,
            apiserver,
            kubeconfig,
            client,
            generation,
        })
    }
}

/// `shipshape up` as a user runs it — the control plane, three node agents and the service
/// proxy in one process, on a data directory of its own — started on its own for the
/// `kubernetes` driver to certify through nothing but its kubeconfig, as any cluster.
pub struct StandaloneUp {
    /// The running `up`.
    cluster: Cluster,
    /// Its data directory, removed on drop.
    data_dir: tempfile::TempDir,
}

impl StandaloneUp {
    /// Starts `shipshape up` (its output appended to `log_path`) and waits until its API
    /// server is ready.
    pub async fn start(log_path: &Path) -> anyhow::Result<Self> {
        Self::start_with_members(log_path, 1).await
    }

    /// [`StandaloneUp::start`] with a control plane of `members`: with several, `up
    /// --control-plane N --machines containers`, where every member and every node is a
    /// container of its own on the `shipshape` network.
    pub async fn start_with_members(log_path: &Path, members: u64) -> anyhow::Result<Self> {
        let docker = Engine::from_env();
        docker.ping(DOCKER_TIMEOUT).await.context(
            "shipshape up runs every pod as a Docker container: start dockerd, or point \
             DOCKER_HOST at a running engine",
        )?;
        reap_dead_clusters(&docker).await;
        let data_dir = owned_data_dir(DATA_DIR_PREFIX)?;
        File::create(log_path)
            .with_context(|| format!("failed to create the log {}", log_path.display()))?;
        let cluster = Cluster::start(
            data_dir.path(),
            log_path,
            1,
            "127.0.0.1:0",
            u32::try_from(NODES).unwrap_or(3),
            members,
        )
        .await?;
        // As a user would before using it: every node ready (node containers take a few
        // seconds more than agents in `up`'s own process).
        let client = cluster.client.clone();
        wait_for(NODES_READY_TIMEOUT, || async {
            let nodes = kubeapi::list_nodes(&client).await?;
            Ok(nodes.iter().filter(|node| node.ready).count() >= NODES)
        })
        .await
        .context("the nodes of `shipshape up` did not become ready")?;
        Ok(Self { cluster, data_dir })
    }

    /// The names its node containers have (with several members), `{node}` standing for a
    /// node's name: what `SHIPSHAPE_NODE_CONTAINERS` says for such a cluster.
    pub fn node_containers(&self) -> anyhow::Result<String> {
        let path = self.data_dir.path().join("cluster-id");
        let cluster = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        Ok(shipshape::machines::node_container_name(
            cluster.trim(),
            "{node}",
        ))
    }

    /// The kubeconfig it wrote.
    pub fn kubeconfig(&self) -> &Path {
        &self.cluster.kubeconfig
    }

    /// Where its data is.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Stops it as Ctrl-C does (it removes every container it made), and checks it ended
    /// well.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let status = stop_child(&mut self.cluster.child, "shipshape up").await?;
        if !status.success() {
            bail!("shipshape up ended with {status} when stopped");
        }
        Ok(())
    }
}

impl std::fmt::Debug for StandaloneUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandaloneUp")
            .field("apiserver", &self.cluster.apiserver)
            .field("data_dir", &self.data_dir.path())
            .finish_non_exhaustive()
    }
}

impl Drop for StandaloneUp {
    fn drop(&mut self) {
        // Normally stopped already; if not (a failed run), ask it to stop cleanly.
        if let Ok(None) = self.cluster.child.try_wait()
            && let Some(pid) = self.cluster.child.id()
        {
            let _ = signal(pid, "TERM");
        }
    }
}

/// How the data directories of the clusters the kit starts are named, in the system's
/// temporary directory.
const DATA_DIR_PREFIX: &str = "shipshape-conformance-";

/// The file in a data directory naming the process (the harness) that owns it.
const OWNER_FILE: &str = "owner.pid";

/// The file in a data directory listing the children started on it, a process id a line.
const CHILDREN_FILE: &str = "children.pids";

/// A fresh temporary data directory, owned by this process (its pid in [`OWNER_FILE`]),
/// removed on drop.
fn owned_data_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("failed to create a data directory for the cluster")?;
    std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
        .context("failed to write the data directory's owner")?;
    Ok(dir)
}

/// Notes a child started on a data directory, for [`reap_dead_clusters`].
fn note_child(data_dir: &Path, child: &Child) {
    if let Some(pid) = child.id() {
        let noted = OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join(CHILDREN_FILE))
            .and_then(|mut file| writeln!(file, "{pid}"));
        if let Err(error) = noted {
            tracing::warn!(%error, "failed to note a child process");
        }
    }
}

/// Clears what runs that were killed left: for every cluster data directory whose owner
/// is gone, kills its children that still run — a child stops by itself when its owner
/// dies, except one frozen (a partitioned node agent) — removes the containers of its
/// cluster, and removes the directory. Best effort: what cannot be cleared is logged.
async fn reap_dead_clusters(docker: &Engine) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let ours = entry
            .file_name()
            .to_string_lossy()
            .starts_with(DATA_DIR_PREFIX);
        let owner = std::fs::read_to_string(dir.join(OWNER_FILE)).ok();
        let Some(owner) = owner.filter(|_| ours).map(|owner| owner.trim().to_owned()) else {
            continue;
        };
        let alive = owner.parse::<u32>().is_ok_and(|pid| {
            pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
        });
        if alive {
            continue;
        }
        let children = std::fs::read_to_string(dir.join(CHILDREN_FILE)).unwrap_or_default();
        for pid in children
            .lines()
            .filter_map(|line| line.trim().parse::<u32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            // Still ours (not a reused process id): argv[0] of every child is `shipshape`.
            if cmdline.starts_with(b"shipshape\0") {
                let _ = signal(pid, "CONT");
                let _ = signal(pid, "KILL");
            }
        }
        if let Ok(cluster) = std::fs::read_to_string(dir.join("cluster-id")) {
            let cluster = cluster.trim();
            match docker.containers(&[(LABEL_CLUSTER, cluster)]).await {
                Ok(containers) => {
                    for container in containers {
                        if let Err(error) = docker.remove(&container.id).await {
                            tracing::warn!(%error, cluster, "failed to remove a leftover container");
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, cluster, "failed to list leftover containers"),
            }
        }
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(%error, dir = %dir.display(), "failed to remove a dead run's data");
        }
        println!(
            "conformance: cleared what a killed run (process {owner}) left in {}",
            dir.display()
        );
    }
}

/// Reads stdout until the `kubeconfig:` line (copying every line to the log), and returns
/// the announced API server URL and kubeconfig path; `None` if stdout closes first.
async fn read_announcement(
    lines: &mut Lines<BufReader<ChildStdout>>,
    log: &mut File,
) -> anyhow::Result<Option<(String, PathBuf)>> {
    let mut apiserver = String::new();
    while let Some(line) = lines.next_line().await? {
        let _ = writeln!(log, "{line}");
        if let Some(url) = line.strip_prefix("apiserver:") {
            apiserver = url.trim().to_owned();
        } else if let Some(path) = line.strip_prefix("kubeconfig:") {
            return Ok(Some((apiserver, PathBuf::from(path.trim()))));
        }
    }
    Ok(None)
}

/// Copies the rest of the child's stdout into the log until the child closes it.
async fn copy_lines(mut lines: Lines<BufReader<ChildStdout>>, mut log: File) {
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = writeln!(log, "{line}");
    }
}

/// Builds a client from the kubeconfig the control plane wrote.
async fn connect(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let file = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("failed to read the kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("failed to load the kubeconfig {}", kubeconfig.display()))?;
    kubeapi::client(config)
        .with_context(|| format!("the kubeconfig {} is not usable", kubeconfig.display()))
}

/// The last lines a child wrote to the log since `start`.
fn log_tail(log_path: &Path, start: u64) -> String {
    let mut text = String::new();
    let read = File::open(log_path).and_then(|mut file| {
        file.seek(SeekFrom::Start(start))?;
        file.read_to_string(&mut text)
    });
    if let Err(error) = read {
        return format!("(could not read {}: {error})", log_path.display());
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    format!("{tail}\n(full log: {})", log_path.display())
}

impl Machines for ReferenceCluster {
    fn describe(&self) -> String {
        let kubeconfig = match self.cluster.try_lock() {
            Ok(cluster) => format!("kubeconfig {}", cluster.kubeconfig.display()),
            Err(_) => "restarting".to_owned(),
        };
        let control_plane = if self.members > 1 {
            format!(
                "{} members (`shipshape up --control-plane {} --machines containers --nodes \
                 0`, each member in a container of its own on the `shipshape` network) \
                 behind one address",
                self.members, self.members
            )
        } else {
            "(`shipshape up --nodes 0`)".to_owned()
        };
        let nodes = if self.machines_are_containers() {
            "each in a container of its own on that network (`--machines containers`), with \
             an address of its own; a partition cuts its container's links to the control \
             plane"
        } else {
            "each a child process of this host; a partition freezes it (SIGSTOP), as this \
             host's processes share one network stack"
        };
        format!(
            "a shipshape reference cluster the kit started on the Docker engine at {}: the \
             control plane {control_plane} at {}, {kubeconfig}, and {NODES} node agents \
             (`shipshape node`, node-1 to node-{NODES}), {nodes}; data in {}, logs in {}",
            self.docker.host(),
            self.apiserver,
            self.data_dir.path().display(),
            self.log_path.display()
        )
    }

    fn supports(&self, fault: &Fault) -> Support {
        match fault {
            Fault::LoseControlPlaneLeader
            | Fault::LoseControlPlaneMemberAndData
            | Fault::PartitionControlPlaneLeader
            | Fault::HealControlPlane
                if self.members < 2 =>
            {
                Support::No(format!(
                    "the reference's control plane runs one member here; set {MEMBERS_ENV}=3 \
                     to certify it with three"
                ))
            }
            Fault::PartitionControlPlaneLeader | Fault::HealControlPlane => {
                match links::unavailable() {
                    None => Support::Yes,
                    Some(why) => Support::No(why),
                }
            }
            Fault::PartitionNode { .. } | Fault::Heal if self.machines_are_containers() => {
                match links::unavailable() {
                    None => Support::Yes,
                    Some(why) => Support::No(why),
                }
            }
            Fault::RestartControlPlane
            | Fault::LoseControlPlaneLeader
            | Fault::LoseControlPlaneMemberAndData
            | Fault::KillContainer { .. }
            | Fault::DeleteReplica { .. }
            | Fault::LoseNode { .. }
            | Fault::PartitionNode { .. }
            | Fault::Heal
            | Fault::RestartNode { .. } => Support::Yes,
        }
    }

    fn inject<'a>(&'a self, fault: &'a Fault) -> DriverFuture<'a, ()> {
        async move {
            match fault {
                Fault::RestartControlPlane => self.restart_control_plane().await,
                Fault::LoseNode { node } => self.lose_node(node).await,
                Fault::PartitionNode { node } => self.partition_node(node).await,
                Fault::Heal => self.heal().await,
                Fault::RestartNode { node } => self.restart_node(node).await,
                Fault::LoseControlPlaneLeader => self.lose_control_plane_leader().await,
                Fault::LoseControlPlaneMemberAndData => {
                    self.lose_control_plane_member_and_data().await
                }
                Fault::PartitionControlPlaneLeader => self.partition_control_plane_leader().await,
                Fault::HealControlPlane => self.heal_control_plane().await,
                Fault::KillContainer { .. } | Fault::DeleteReplica { .. } => {
                    bail!("{fault} is the driver's to inject, not the machines'")
                }
            }
        }
        .boxed()
    }

    fn can_add_nodes(&self) -> Support {
        Support::Yes
    }

    fn add_node<'a>(&'a self, spec: &'a NodeSpec) -> DriverFuture<'a, ()> {
        self.start_node(spec, true, NODES_READY_TIMEOUT).boxed()
    }

    fn remove_node<'a>(&'a self, name: &'a str) -> DriverFuture<'a, ()> {
        self.remove_added_node(name).boxed()
    }

    fn shut_down(&self) -> DriverFuture<'_, ()> {
        self.stop_all().boxed()
    }

    fn cut_off_member_client(&self) -> DriverFuture<'_, Option<kube::Client>> {
        ReferenceCluster::cut_off_member_client(self).boxed()
    }

    fn new_member_client(&self) -> DriverFuture<'_, Option<kube::Client>> {
        ReferenceCluster::new_member_client(self).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_starts_at_offset_and_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let earlier = "from an earlier start\n";
        let lines: String = (0..100).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&log, format!("{earlier}{lines}")).expect("write");
        let tail = log_tail(&log, earlier.len() as u64);
        assert!(!tail.contains("earlier"));
        assert!(tail.starts_with("line 60\n"));
        assert!(tail.contains("line 99"));
    }
}
