//! The `reference` driver: certifies shipshape's own reference orchestrator.
//!
//! For each run it starts one fresh cluster on the local Docker engine, as real child
//! processes on a data directory of its own: the control plane (`shipshape up --nodes 0`)
//! and three node agents (`shipshape node`, named `node-1`, `node-2`, `node-3`), each its
//! own process, as each would be its own machine. It then talks to the cluster only
//! through the Kubernetes API, as it would to any cluster. Every scenario of the run shares
//! that cluster; each has its own namespace. Nothing of the orchestrator is linked in
//! besides its command line (`shipshape::cli::run`), which runs in the children.
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
//!   the node agents find it again.
//! - A node, of the cluster's three or added by a scenario ([`Driver::add_node`]):
//!   `shipshape node --server URL --token T --ca-file DIR/ca.crt --cluster ID --name NAME
//!   --data-dir DIR/nodes/NAME`, with the size, labels and taints asked for; the driver
//!   waits until the Node is Ready with a heartbeat from this very agent. The first node
//!   builds the images on a machine that lacks them (about 20 seconds), so the nodes start
//!   one after the other.
//! - The service proxy, once the nodes are ready: `shipshape proxy --server URL --token T
//!   --ca-file DIR/ca.crt`, its own process as kube-proxy is; it listens on the node port
//!   of every NodePort service on the host's loopback address, which is where
//!   [`Driver::reach_service`] sends its requests (`up --nodes 0` runs no proxy).
//!
//! Everything a child writes (stdout and stderr) is appended to a log file in the report
//! directory (`reference-cluster.log`, `reference-node-NAME.log`), whose tail goes into
//! the error when a child fails to start.
//!
//! # Faults
//!
//! Every [`Fault`] is supported, and each is real:
//!
//! - *kill a container*: the replica's app containers (found on the Docker engine by the
//!   labels `shipshape.cluster` and `shipshape.pod`, sandbox excepted) get SIGKILL, as
//!   `docker kill` sends;
//! - *delete a replica*: a plain delete through the API;
//! - *lose a node*: its agent gets SIGKILL, then every container labelled with its node
//!   name is force-removed — the machine is gone, with all it ran;
//! - *partition a node*: its agent gets SIGSTOP; its containers keep running, but it
//!   sends no heartbeat and sees no change. *Heal* sends SIGCONT;
//! - *restart a node*: its agent (if alive) gets SIGTERM, then the same command starts it
//!   again under the same name and data directory;
//! - *restart the control plane*: `up` gets SIGKILL and is started again on the same data
//!   directory and port; the driver returns once every live agent has sent it a heartbeat.
//!
//! Signals are sent with `kill(1)`: the workspace forbids `unsafe`, and so the system call.
//!
//! # Lifetime
//!
//! Children are stopped with SIGTERM, on which a node agent removes its containers: an
//! added node when its scenario ends ([`Driver::remove_node`], then its Node object is
//! deleted), everything at the end of the run ([`Driver::shut_down`]: agents first — a
//! partitioned one gets SIGCONT before — then the control plane; then the driver checks
//! that no container of the cluster is left, and removes the cluster's pod network, which
//! the agents share and none removes). Should the harness itself be killed, each child
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
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures::FutureExt as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::docker::Engine;
use crate::driver::{
    Admission, Capability, DeploymentSpec, Driver, DriverFuture, Fault, HttpRequest, HttpResponse,
    NodeSpec, NodeStatus, PodSpec, Replica, Revision, ServiceSpec, Taint,
};
use crate::{kubeapi, plain_http};

/// Environment variable that turns the test binary into a `shipshape` child process.
pub const CHILD_ENV: &str = "SHIPSHAPE_CONFORMANCE_REFERENCE_CHILD";

/// How many node agents the cluster runs besides the ones scenarios add.
pub const NODES: usize = 3;

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

/// The reference orchestrator, run as child processes for the length of a test run.
pub struct ReferenceDriver {
    /// The running control plane; locked for the whole of a restart.
    cluster: tokio::sync::Mutex<Cluster>,
    /// Client for the current control plane, replaced after every restart.
    client: RwLock<kube::Client>,
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
    /// Stopped with SIGSTOP: partitioned.
    Frozen(Child),
    /// Killed with its machine: nothing runs until it is restarted.
    Lost,
}

impl AgentState {
    /// The process, unless it is lost.
    fn child(&mut self) -> Option<&mut Child> {
        match self {
            AgentState::Running(child) | AgentState::Frozen(child) => Some(child),
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

impl ReferenceDriver {
    /// Starts a fresh reference cluster (control plane and [`NODES`] node agents) on a new
    /// temporary data directory, waits until it is ready, and appends its output to
    /// `log_path`. Fails, saying so, when no Docker engine is reachable.
    pub async fn start(log_path: PathBuf) -> anyhow::Result<Self> {
        let docker = Engine::from_env();
        docker.ping(DOCKER_TIMEOUT).await.context(
            "the reference runs every pod as a Docker container, so it cannot be certified \
             without a Docker engine: start dockerd, or point DOCKER_HOST at a running engine",
        )?;
        let data_dir = tempfile::Builder::new()
            .prefix("shipshape-conformance-")
            .tempdir()
            .context("failed to create a data directory for the reference cluster")?;
        // A new run starts a new log, and leaves no node logs of an earlier run about.
        File::create(&log_path)
            .with_context(|| format!("failed to create the cluster log {}", log_path.display()))?;
        if let Some(Ok(entries)) = log_path.parent().map(std::fs::read_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("reference-node-") && name.ends_with(".log") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let mut cluster = Cluster::start(data_dir.path(), &log_path, 1, "127.0.0.1:0").await?;
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
            client: RwLock::new(cluster.client.clone()),
            apiserver: cluster.apiserver.clone(),
            cluster: tokio::sync::Mutex::new(cluster),
            nodes: tokio::sync::Mutex::new(BTreeMap::new()),
            token,
            cluster_id,
            docker,
            log_path,
            data_dir,
            proxy: tokio::sync::Mutex::new(None),
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
        self.client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
            // `start_kill` is SIGKILL on Unix: no shutdown hook runs, nothing gets flushed.
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
            let restarted =
                Cluster::start(self.data_dir.path(), &self.log_path, generation, listen).await?;
            *self.client.write().unwrap_or_else(PoisonError::into_inner) = restarted.client.clone();
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
        let log_path = self.node_log(&spec.name);
        let started_at = now_seconds();
        let (mut child, _log, log_start) = spawn(&args, &log_path, false)?;
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

    /// Stops one agent cleanly (SIGCONT first if it is partitioned, then SIGTERM) and
    /// checks it ended well; a lost agent has nothing left to stop.
    async fn stop_agent(&self, name: &str, state: &mut AgentState) -> anyhow::Result<()> {
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

    /// Kills the app containers of one replica, the way `docker kill` does.
    async fn kill_container(&self, namespace: &str, replica: &str) -> anyhow::Result<()> {
        let pod = format!("{namespace}/{replica}");
        let containers = self
            .docker
            .containers(&[(LABEL_CLUSTER, &self.cluster_id), (LABEL_POD, &pod)])
            .await?;
        let running: Vec<_> = containers
            .iter()
            .filter(|container| {
                container.running
                    && container.labels.get(LABEL_CONTAINER).map(String::as_str) != Some(SANDBOX)
            })
            .collect();
        if running.is_empty() {
            bail!(
                "replica {pod} has no running container to kill ({} containers of it found)",
                containers.len()
            );
        }
        for container in running {
            self.docker
                .kill(&container.id)
                .await
                .with_context(|| format!("failed to kill a container of replica {pod}"))?;
        }
        Ok(())
    }

    /// Loses a node: SIGKILLs its agent, then force-removes every container of the node.
    async fn lose_node(&self, name: &str) -> anyhow::Result<()> {
        let mut nodes = self.nodes.lock().await;
        let agent = nodes
            .get_mut(name)
            .ok_or_else(|| anyhow!("node {name} is not one of the driver's node agents"))?;
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

    /// Partitions a node: SIGSTOPs its agent, whose containers keep running.
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

    /// Heals every partition: SIGCONTs every stopped agent.
    async fn heal(&self) -> anyhow::Result<()> {
        let mut nodes = self.nodes.lock().await;
        for (name, agent) in nodes.iter_mut() {
            let child = match std::mem::replace(&mut agent.state, AgentState::Lost) {
                AgentState::Frozen(child) => child,
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

    /// Stops every node agent, then the control plane, cleanly; then checks that no
    /// container of the cluster is left, and removes the cluster's network.
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
        *self.proxy.lock().await = Some(child);
        Ok(())
    }

    async fn stop_all(&self) -> anyhow::Result<()> {
        let mut failures = Vec::new();
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
        if let Err(error) = self.reap().await {
            failures.push(format!("{error:#}"));
        }
        if !failures.is_empty() {
            bail!("{}", failures.join("; "));
        }
        Ok(())
    }

    /// Removes what the stopped cluster left on the Docker engine: its network (which the
    /// agents share and none removes), and any container — which is an error, as the
    /// agents should have removed theirs.
    async fn reap(&self) -> anyhow::Result<()> {
        let cluster = [(LABEL_CLUSTER, self.cluster_id.as_str())];
        let left = self.docker.containers(&cluster).await?;
        for container in &left {
            self.docker.remove(&container.id).await?;
        }
        for network in self.docker.networks(&cluster).await? {
            match self.docker.remove_network(&network).await {
                Ok(()) => {}
                // With every container gone, an endpoint the engine still counts is its
                // own stale record (a known Docker fault), not something the cluster left.
                Err(error) if left.is_empty() => {
                    eprintln!(
                        "conformance: warning: {error:#}; no container of the cluster is left"
                    );
                }
                Err(error) => return Err(error),
            }
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

impl Drop for ReferenceDriver {
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
        if let Some(pid) = self.cluster.get_mut().child.id() {
            let _ = signal(pid, "TERM");
        }
    }
}

impl std::fmt::Debug for ReferenceDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceDriver")
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
    ) -> anyhow::Result<Self> {
        let args: Vec<OsString> = vec![
            "up".into(),
            "--nodes".into(),
            "0".into(),
            "--data-dir".into(),
            data_dir.as_os_str().to_owned(),
            "--listen".into(),
            listen.into(),
        ];
        let (mut child, mut log, log_start) = spawn(&args, log_path, true)?;
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
    kube::Client::try_from(config).with_context(|| {
        format!(
            "failed to build a client from the kubeconfig {}",
            kubeconfig.display()
        )
    })
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

impl Driver for ReferenceDriver {
    fn name(&self) -> &str {
        "reference"
    }

    fn describe(&self) -> String {
        let kubeconfig = match self.cluster.try_lock() {
            Ok(cluster) => format!("kubeconfig {}", cluster.kubeconfig.display()),
            Err(_) => "restarting".to_owned(),
        };
        format!(
            "shipshape reference cluster on the Docker engine at {}: the control plane \
             (`shipshape up --nodes 0`) at {}, {kubeconfig}, and {NODES} node agents \
             (`shipshape node`, node-1 to node-{NODES}), each a child process; data in {}, \
             logs in {}",
            self.docker.host(),
            self.apiserver,
            self.data_dir.path().display(),
            self.log_path.display()
        )
    }

    fn create_namespace<'a>(&'a self, namespace: &'a str, run_id: &'a str) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::create_namespace(&client, namespace, run_id).await }.boxed()
    }

    fn delete_namespace<'a>(&'a self, namespace: &'a str) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::delete_namespace(&client, namespace).await }.boxed()
    }

    fn deploy<'a>(&'a self, namespace: &'a str, spec: &'a DeploymentSpec) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::deploy(&client, namespace, spec).await }.boxed()
    }

    fn read_deployment<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Option<DeploymentSpec>> {
        let client = self.client();
        async move { kubeapi::read_deployment(&client, namespace, name).await }.boxed()
    }

    fn scale<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        replicas: u32,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::scale(&client, namespace, name, replicas).await }.boxed()
    }

    fn update_image<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        image: &'a str,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::update_image(&client, namespace, name, image).await }.boxed()
    }

    fn roll_back<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        to: Revision,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::roll_back(&client, namespace, name, to).await }.boxed()
    }

    fn expose<'a>(&'a self, namespace: &'a str, service: &'a ServiceSpec) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::expose(&client, namespace, service).await }.boxed()
    }

    fn list_replicas<'a>(
        &'a self,
        namespace: &'a str,
        deployment: &'a str,
    ) -> DriverFuture<'a, Vec<Replica>> {
        let client = self.client();
        async move { kubeapi::list_replicas(&client, namespace, deployment).await }.boxed()
    }

    /// Services are of type NodePort ([`kubeapi::expose`]); the service proxy of the
    /// cluster listens on the node port on the host's loopback address. Each request goes
    /// on a connection of its own, so requests are spread over the replicas.
    fn reach_service<'a>(
        &'a self,
        namespace: &'a str,
        service: &'a str,
        path: &'a str,
    ) -> DriverFuture<'a, String> {
        let client = self.client();
        async move {
            let port = kubeapi::node_port(&client, namespace, service).await?;
            let get = HttpRequest {
                method: "GET".to_owned(),
                path: path.to_owned(),
                body: String::new(),
            };
            let answer = plain_http::send(&format!("127.0.0.1:{port}"), &get)
                .await
                .with_context(|| format!("failed to reach service {namespace}/{service}"))?;
            if !(200..300).contains(&answer.status) {
                bail!(
                    "service {namespace}/{service} answered GET {path} with {}: {:?}",
                    answer.status,
                    answer.body
                );
            }
            Ok(answer.body)
        }
        .boxed()
    }

    fn supports(&self, fault: &Fault) -> bool {
        match fault {
            Fault::RestartControlPlane
            | Fault::KillContainer { .. }
            | Fault::DeleteReplica { .. }
            | Fault::LoseNode { .. }
            | Fault::PartitionNode { .. }
            | Fault::Heal
            | Fault::RestartNode { .. } => true,
        }
    }

    fn inject<'a>(&'a self, fault: &'a Fault) -> DriverFuture<'a, ()> {
        async move {
            match fault {
                Fault::RestartControlPlane => self.restart_control_plane().await,
                Fault::KillContainer { namespace, replica } => {
                    self.kill_container(namespace, replica).await
                }
                Fault::DeleteReplica { namespace, replica } => {
                    kubeapi::delete_replica(&self.client(), namespace, replica).await
                }
                Fault::LoseNode { node } => self.lose_node(node).await,
                Fault::PartitionNode { node } => self.partition_node(node).await,
                Fault::Heal => self.heal().await,
                Fault::RestartNode { node } => self.restart_node(node).await,
            }
            .with_context(|| format!("the reference driver failed to {fault}"))
        }
        .boxed()
    }

    fn has(&self, capability: Capability) -> bool {
        match capability {
            Capability::AddNode
            | Capability::LabelNode
            | Capability::TaintNode
            | Capability::Pods
            | Capability::ReachReplica
            | Capability::DrainNode => true,
        }
    }

    fn list_nodes(&self) -> DriverFuture<'_, Vec<NodeStatus>> {
        let client = self.client();
        async move { kubeapi::list_nodes(&client).await }.boxed()
    }

    fn add_node<'a>(&'a self, spec: &'a NodeSpec) -> DriverFuture<'a, ()> {
        self.start_node(spec, true, NODES_READY_TIMEOUT).boxed()
    }

    fn remove_node<'a>(&'a self, name: &'a str) -> DriverFuture<'a, ()> {
        self.remove_added_node(name).boxed()
    }

    fn label_node<'a>(
        &'a self,
        node: &'a str,
        key: &'a str,
        value: Option<&'a str>,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::label_node(&client, node, key, value).await }.boxed()
    }

    fn taint_node<'a>(
        &'a self,
        node: &'a str,
        taint: &'a Taint,
        present: bool,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::taint_node(&client, node, taint, present).await }.boxed()
    }

    fn run_pod<'a>(&'a self, namespace: &'a str, pod: &'a PodSpec) -> DriverFuture<'a, Admission> {
        let client = self.client();
        async move { kubeapi::run_pod(&client, namespace, pod).await }.boxed()
    }

    fn read_replica<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Option<Replica>> {
        let client = self.client();
        async move { kubeapi::read_replica(&client, namespace, name).await }.boxed()
    }

    /// The pod's IP is on the cluster's Docker bridge network, which the host reaches.
    fn request_replica<'a>(
        &'a self,
        namespace: &'a str,
        replica: &'a str,
        port: u16,
        request: &'a HttpRequest,
    ) -> DriverFuture<'a, HttpResponse> {
        let client = self.client();
        async move {
            let pod = kubeapi::read_replica(&client, namespace, replica)
                .await?
                .ok_or_else(|| anyhow!("replica {namespace}/{replica} does not exist"))?;
            let ip = pod
                .ip
                .ok_or_else(|| anyhow!("replica {namespace}/{replica} has no IP address yet"))?;
            plain_http::send(&format!("{ip}:{port}"), request).await
        }
        .boxed()
    }

    fn cordon_node<'a>(&'a self, node: &'a str, cordoned: bool) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::cordon_node(&client, node, cordoned).await }.boxed()
    }

    fn drain_node<'a>(&'a self, node: &'a str) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::drain_node(&client, node).await }.boxed()
    }

    fn shut_down(&self) -> DriverFuture<'_, ()> {
        self.stop_all().boxed()
    }

    fn kube_client(&self) -> Option<kube::Client> {
        Some(self.client())
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
