//! # Where a control-plane member runs: a process of this host, or a machine of its own
//!
//! `up --control-plane 3` runs each member apart from the others, so that one can fail
//! alone. How far apart is [`Machines`]:
//!
//! - [`Machines::Processes`] (the default): each member is a child process of `up`, on
//!   this host's loopback address. Killing one is a power cut of its machine; but all of
//!   them share one network stack, so no link between two of them can fail.
//! - [`Machines::Containers`]: each member runs in a container of its own on the shared
//!   `shipshape` Docker network (the pods' network: one long-lived network that every
//!   cluster on the engine shares, so clusters leave no networks behind), with an address
//!   of its own. Now a link can fail: a fault can drop the traffic between one member and
//!   the others in the member's own network namespace while it keeps running and keeps
//!   answering its clients — a partition, not a crash.
//!
//! A member's container is named, and its host named, `shipshape-<cluster>-member-<id>`;
//! its peers reach it by that name, which Docker's resolver on the network answers with
//! whatever address it has now (a container started again may get another). It runs
//! [`images::MACHINE_IMAGE`], the loader and libraries `shipshape` links and nothing
//! else, with this very binary mounted read-only at [`images::MACHINE_BINARY`] and the
//! member's data directory at `/data`, as the owner of that directory (so the files it
//! writes stay the user's). Its API port is published on the loopback port the front door
//! forwards to, which stays the same across restarts; its peer port is on the network only.
//! Variables named `SHIPSHAPE_*`, and `RUST_LOG`, `NO_COLOR` and (in a build with fail
//! points) `FAILPOINTS`, are passed in.
//!
//! Either way a member ends with the `up` that started it, however `up` ends: it reads
//! its stdin (`--stop-with-stdin`) and `up` holds the other end — a pipe for a process; for
//! a container, `up`'s attachment to it (Docker closes a container's stdin when the one
//! client attached to it goes, `StdinOnce`). A container is removed when it exits
//! (`AutoRemove`), after its output was copied into `member.log`, so none is left behind.
//! Either way the member's `pid` file holds its process's pid as this host sees it, and
//! SIGKILL to that pid is a power cut of its machine.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use crate::agent::runtime::{self, LABEL_CLUSTER, POD_NETWORK, docker_status};
use crate::images;

/// How the members of a control plane of several run; see the module's essay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Machines {
    /// Child processes of `up`, on this host's address.
    #[default]
    Processes,
    /// Containers on the shared `shipshape` network, each with an address of its own.
    Containers,
}

/// The variables besides `SHIPSHAPE_*` a member's container gets from `up`'s environment,
/// for its logs; so do those that switch fail points on, in a build with them
/// ([`crate::failpoints::variables`]): a member must break the same promise as a process
/// would.
const PASSED_IN: [&str; 2] = ["RUST_LOG", "NO_COLOR"];

/// Label on a member's container: the member's id.
pub const LABEL_MEMBER: &str = "shipshape.member";

/// The API port inside a member's container.
pub const CONTAINER_API_PORT: u16 = 6443;

/// The peer port inside a member's container.
pub const CONTAINER_PEER_PORT: u16 = 2380;

/// Where a member's data directory is mounted in its container.
const CONTAINER_DATA: &str = "/data";

/// How long creating a container may wait for the removal of the one it replaces.
const REPLACE_TIMEOUT: Duration = Duration::from_secs(10);

/// The name (and host name) of member `id` of cluster `cluster` in a container.
pub fn container_name(cluster: &str, id: u64) -> String {
    format!("shipshape-{cluster}-member-{id}")
}

/// How one machine — a control-plane member, a node agent — is started, again and again.
pub struct MachinePlan {
    /// What it is, for the log: `control-plane member 2`, `node agent node-1`.
    pub role: String,
    /// Where its output is appended; this process's stderr if `None`.
    pub log: Option<PathBuf>,
    /// Where its pid (as this host sees it) is written, if anywhere.
    pub pid_file: Option<PathBuf>,
    /// Its `shipshape` arguments.
    pub args: Vec<std::ffi::OsString>,
    /// For a machine that is a container: how to make it.
    pub container: Option<ContainerPlan>,
}

/// A machine's container, beyond its command line.
#[derive(Clone)]
pub struct ContainerPlan {
    /// The engine.
    pub docker: Docker,
    /// The container's name, and its host name.
    pub name: String,
    /// Its labels (the cluster's among them, so that a reaper finds it).
    pub labels: HashMap<String, String>,
    /// `HOST:INSIDE[:ro]` mounts besides the binary.
    pub binds: Vec<String>,
    /// A port inside published on an address of this host.
    pub published: Option<(u16, std::net::SocketAddr)>,
    /// Whom it runs as, `UID:GID`.
    pub user: String,
    /// Further groups it runs with (the Docker socket's, for a node agent).
    pub groups: Vec<String>,
    /// Variables besides those passed in from this process ([`PASSED_IN`]).
    pub env: Vec<String>,
}

/// A running machine.
pub enum Machine {
    /// A child process.
    Process(tokio::process::Child),
    /// A container; `stdin` is this process's attachment, held for as long as it runs.
    Container {
        /// The engine.
        docker: Docker,
        /// The container's name.
        name: String,
        /// The container's stdin: dropping it ends the machine.
        stdin: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    },
}

/// How one control-plane member is started, again and again.
pub struct MemberPlan {
    /// Its Raft id.
    pub id: u64,
    /// Its data directory on this host.
    pub dir: PathBuf,
    /// Where the front door reaches its API, on this host.
    pub api: std::net::SocketAddr,
    /// How it runs.
    pub machine: MachinePlan,
}

impl MemberPlan {
    /// A member whose data directory (and log, and pid file) is `dir` on this host; in a
    /// container `name` on `docker` if given, its API published on `api` and its data
    /// directory mounted at `/data`, as the owner of that directory.
    pub fn new(
        id: u64,
        dir: &Path,
        api: std::net::SocketAddr,
        args: Vec<std::ffi::OsString>,
        container: Option<(Docker, String)>,
    ) -> anyhow::Result<MemberPlan> {
        let container = match container {
            None => None,
            Some((docker, name)) => {
                let cluster = std::fs::read_to_string(dir.join("cluster-id"))
                    .context("the member's data directory has no cluster-id")?;
                Some(ContainerPlan {
                    docker,
                    name,
                    labels: HashMap::from([
                        (LABEL_CLUSTER.to_owned(), cluster.trim().to_owned()),
                        (LABEL_MEMBER.to_owned(), id.to_string()),
                    ]),
                    binds: vec![format!("{}:{CONTAINER_DATA}", dir.display())],
                    published: Some((CONTAINER_API_PORT, api)),
                    user: owner_of(dir)?,
                    groups: Vec::new(),
                    env: Vec::new(),
                })
            }
        };
        Ok(MemberPlan {
            id,
            dir: dir.to_owned(),
            api,
            machine: MachinePlan {
                role: format!("control-plane member {id}"),
                log: Some(dir.join("member.log")),
                pid_file: Some(dir.join("pid")),
                args,
                container,
            },
        })
    }

    /// Whether its data is gone: its data directory holds no store (as after its disk
    /// died and was replaced by an empty one).
    pub fn data_lost(&self) -> bool {
        !self.dir.join(crate::store::STORE_DIR).exists()
    }
}

/// `UID:GID` of the owner of `path`.
fn owner_of(path: &Path) -> anyhow::Result<String> {
    let owner =
        std::fs::metadata(path).with_context(|| format!("failed to read {}", path.display()))?;
    Ok(format!("{}:{}", owner.uid(), owner.gid()))
}

impl MachinePlan {
    /// Starts the machine: its output appended to its log, its pid in its pid file.
    pub async fn start(&self, exe: &Path) -> anyhow::Result<Machine> {
        let log = match &self.log {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("failed to open {}", path.display()))?,
            None => std::fs::File::from(
                std::io::stderr()
                    .as_fd()
                    .try_clone_to_owned()
                    .context("failed to share stderr")?,
            ),
        };
        let (pid, machine) = match &self.container {
            None => {
                // Its stdin is a pipe this process holds (`--stop-with-stdin`): the machine
                // ends when this process does, even if it is SIGKILLed.
                let child = tokio::process::Command::new(exe)
                    .args(&self.args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(log))
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("failed to start {}", self.role))?;
                (child.id(), Machine::Process(child))
            }
            Some(container) => self.start_container(container, exe, log).await?,
        };
        if let (Some(pid), Some(path)) = (pid, &self.pid_file) {
            std::fs::write(path, pid.to_string())
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
        tracing::info!(machine = %self.role, ?pid, "started");
        Ok(machine)
    }

    async fn start_container(
        &self,
        plan: &ContainerPlan,
        exe: &Path,
        log: std::fs::File,
    ) -> anyhow::Result<(Option<u32>, Machine)> {
        let (docker, name) = (&plan.docker, plan.name.as_str());
        let mut env: Vec<String> = std::env::vars()
            .filter(|(key, _)| {
                key.starts_with("SHIPSHAPE_")
                    || PASSED_IN.contains(&key.as_str())
                    || crate::failpoints::variables().contains(&key.as_str())
            })
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        env.extend(plan.env.iter().cloned());
        let mut binds = vec![format!("{}:{}:ro", exe.display(), images::MACHINE_BINARY)];
        binds.extend(plan.binds.iter().cloned());
        let published = plan.published.map(|(inside, outside)| {
            let binding = PortBinding {
                host_ip: Some(outside.ip().to_string()),
                host_port: Some(outside.port().to_string()),
            };
            (format!("{inside}/tcp"), binding)
        });
        let cmd = self.args.iter().map(|a| a.to_string_lossy().into_owned());
        let body = ContainerCreateBody {
            image: Some(images::MACHINE_IMAGE.to_owned()),
            cmd: Some(cmd.collect()),
            env: Some(env),
            hostname: Some(name.to_owned()),
            user: Some(plan.user.clone()),
            labels: Some(plan.labels.clone()),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            exposed_ports: published.as_ref().map(|(port, _)| vec![port.clone()]),
            host_config: Some(HostConfig {
                binds: Some(binds),
                port_bindings: published
                    .map(|(port, binding)| HashMap::from([(port, Some(vec![binding]))])),
                group_add: (!plan.groups.is_empty()).then(|| plan.groups.clone()),
                network_mode: Some(POD_NETWORK.to_owned()),
                auto_remove: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        create_replacing(docker, name, body).await?;
        let attach = AttachContainerOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            stream: true,
            ..Default::default()
        };
        let attached = docker.attach_container(name, Some(attach)).await;
        let attached = attached.with_context(|| format!("failed to attach to container {name}"))?;
        let started = docker.start_container(name, None).await;
        started.with_context(|| format!("failed to start container {name}"))?;
        let inspected = docker.inspect_container(name, None).await;
        let inspected = inspected.with_context(|| format!("failed to inspect container {name}"))?;
        let pid = inspected.state.and_then(|s| s.pid).filter(|pid| *pid > 0);
        let pid = pid.with_context(|| format!("container {name} has no process"))?;
        let mut output = attached.output;
        let mut log = tokio::fs::File::from_std(log);
        tokio::spawn(async move {
            while let Some(Ok(chunk)) = output.next().await {
                if log.write_all(&chunk.into_bytes()).await.is_err() {
                    break;
                }
                let _ = log.flush().await;
            }
        });
        let machine = Machine::Container {
            docker: docker.clone(),
            name: name.to_owned(),
            stdin: attached.input,
        };
        Ok((Some(pid as u32), machine))
    }
}

/// Label on a node agent's container: the node's name. (Not `shipshape.node`, which marks
/// the containers of a node's pods: the agent would take its own for one of them.)
pub const LABEL_NODE_MACHINE: &str = "shipshape.node-machine";

/// How long a node agent's container may take to stop after SIGTERM (its agent removes
/// its pods' containers first).
pub const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a node agent in a container finds the Docker engine: the host's socket, mounted.
const CONTAINER_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The name (and host name) of node `node`'s container in cluster `cluster`.
pub fn node_container_name(cluster: &str, node: &str) -> String {
    format!("shipshape-{cluster}-{node}")
}

/// A node agent that runs in a container of its own (`shipshape node --machines
/// containers`), with an address of its own on the `shipshape` network. It drives the
/// host's engine through its socket, mounted into the container — which gives it the
/// run of that engine, as a kubelet has of its node's; so this is for a cluster on one's
/// own machine, not for strangers' workloads. Its data directory and the CA are mounted at
/// the paths they have on the host, so the paths of the pods' volumes, which the engine
/// resolves on the host, are the same inside and out.
pub struct NodeMachine {
    /// The cluster id.
    pub cluster: String,
    /// The node's name.
    pub name: String,
    /// The apiserver's URL as this host reaches it; a loopback address in it becomes the
    /// network's gateway, this host as the container sees it.
    pub server: String,
    /// The cluster CA certificate.
    pub ca_file: PathBuf,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// The rest of its `shipshape node` arguments (token, size, labels, taints).
    pub args: Vec<std::ffi::OsString>,
}

impl NodeMachine {
    /// How to start it on `docker`, its output going to `log` (stderr if `None`).
    pub async fn plan(&self, docker: &Docker, log: Option<PathBuf>) -> anyhow::Result<MachinePlan> {
        if self.name.starts_with("member-") {
            anyhow::bail!(
                "node {} would take the container name of a control-plane member; \
                 give it a name that does not start with `member-`",
                self.name
            );
        }
        runtime::ensure_network(docker).await?;
        let gateway = runtime::network_gateway(docker).await;
        let gateway = gateway.context("the shipshape network has no gateway address")?;
        let server = seen_from_network(&self.server, gateway)?;
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("failed to create {}", self.data_dir.display()))?;
        let data_dir = std::fs::canonicalize(&self.data_dir)?;
        let ca_file = std::fs::canonicalize(&self.ca_file)
            .with_context(|| format!("failed to find {}", self.ca_file.display()))?;
        let socket = docker_socket()?;
        let socket_group = std::fs::metadata(&socket)
            .with_context(|| format!("failed to read {}", socket.display()))?
            .gid();
        let mut args: Vec<std::ffi::OsString> = vec![
            "node".into(),
            "--stop-with-stdin".into(),
            // Its address is its own: node ports answer there, as on a Kubernetes node.
            "--serve-node-ports".into(),
            "--server".into(),
            server.into(),
            "--ca-file".into(),
            ca_file.clone().into(),
            "--cluster".into(),
            self.cluster.clone().into(),
            "--name".into(),
            self.name.clone().into(),
            "--data-dir".into(),
            data_dir.clone().into(),
        ];
        args.extend(self.args.iter().cloned());
        Ok(MachinePlan {
            role: format!("node agent {}", self.name),
            log,
            pid_file: None,
            args,
            container: Some(ContainerPlan {
                docker: docker.clone(),
                name: node_container_name(&self.cluster, &self.name),
                labels: HashMap::from([
                    (LABEL_CLUSTER.to_owned(), self.cluster.clone()),
                    (LABEL_NODE_MACHINE.to_owned(), self.name.clone()),
                ]),
                binds: vec![
                    format!("{0}:{0}", data_dir.display()),
                    format!("{0}:{0}:ro", ca_file.display()),
                    format!("{}:{CONTAINER_DOCKER_SOCKET}", socket.display()),
                ],
                published: None,
                user: owner_of(&data_dir)?,
                groups: vec![socket_group.to_string()],
                env: vec![format!("DOCKER_HOST=unix://{CONTAINER_DOCKER_SOCKET}")],
            }),
        })
    }
}

/// The Docker engine's socket on this host: `DOCKER_HOST` if it names one, else the usual
/// path. An engine reached over TCP cannot be mounted into a container.
fn docker_socket() -> anyhow::Result<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => match host.strip_prefix("unix://") {
            Some(path) => Ok(PathBuf::from(path)),
            None => anyhow::bail!(
                "a node agent in a container reaches the engine through its socket, \
                 mounted; DOCKER_HOST={host} is not a unix socket"
            ),
        },
        _ => Ok(PathBuf::from("/var/run/docker.sock")),
    }
}

/// `server` as a container on the network sees it: a loopback host becomes `gateway`.
fn seen_from_network(server: &str, gateway: IpAddr) -> anyhow::Result<String> {
    let uri: http::Uri = server
        .parse()
        .with_context(|| format!("`{server}` is not a URL"))?;
    let host = uri
        .host()
        .with_context(|| format!("`{server}` names no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare == "localhost" || bare.parse().is_ok_and(|ip: IpAddr| ip.is_loopback());
    if !loopback {
        return Ok(server.to_owned());
    }
    let gateway = match gateway {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    // A bare `/` only if the server's URL ends with one.
    let path = uri
        .path_and_query()
        .filter(|path| path.as_str() != "/" || server.ends_with('/'))
        .map_or("", |path| path.as_str());
    let scheme = uri.scheme_str().unwrap_or("https");
    Ok(format!("{scheme}://{gateway}{port}{path}"))
}

/// Creates container `name`, removing one of that name first — a leftover of a run that
/// was killed, or this member's previous container, whose removal may still be going on.
async fn create_replacing(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
) -> anyhow::Result<()> {
    let remove = RemoveContainerOptionsBuilder::new().force(true).build();
    let deadline = tokio::time::Instant::now() + REPLACE_TIMEOUT;
    loop {
        let _ = docker.remove_container(name, Some(remove.clone())).await;
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        match docker.create_container(Some(options), body.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if docker_status(&e) == Some(409) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("failed to create container {name}")),
        }
    }
}

impl Machine {
    /// How the member ended, if it has.
    pub async fn exited(&mut self) -> anyhow::Result<Option<String>> {
        match self {
            Machine::Process(child) => Ok(child.try_wait()?.map(|status| status.to_string())),
            Machine::Container { docker, name, .. } => {
                match docker.inspect_container(name, None).await {
                    Ok(container) => {
                        let state = container.state.unwrap_or_default();
                        Ok((state.running != Some(true))
                            .then(|| format!("exit code {}", state.exit_code.unwrap_or(-1))))
                    }
                    Err(e) if docker_status(&e) == Some(404) => {
                        Ok(Some("its container is gone".into()))
                    }
                    Err(e) => Err(e).with_context(|| format!("failed to inspect {name}")),
                }
            }
        }
    }

    /// Sends `signal` (`KILL`, `TERM`) to the member.
    async fn signal(&mut self, signal: &str) -> anyhow::Result<()> {
        match self {
            Machine::Process(child) => {
                if let Some(pid) = child.id() {
                    let _ = std::process::Command::new("kill")
                        .args([format!("-{signal}"), pid.to_string()])
                        .status();
                }
                Ok(())
            }
            Machine::Container { docker, name, .. } => {
                let options = KillContainerOptionsBuilder::new().signal(signal).build();
                match docker.kill_container(name, Some(options)).await {
                    Ok(()) => Ok(()),
                    // Not running (409) or gone (404): as good as killed.
                    Err(e) if matches!(docker_status(&e), Some(404 | 409)) => Ok(()),
                    Err(e) => Err(e).with_context(|| format!("failed to signal {name}")),
                }
            }
        }
    }

    /// Waits until the member has ended, up to `limit`; whether it did.
    async fn ended_within(&mut self, limit: Duration) -> anyhow::Result<bool> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.exited().await?.is_some() {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the member with SIGKILL, as a machine that loses power, and waits until it
    /// has ended.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.signal("KILL").await?;
        if let Machine::Process(child) = self {
            child.wait().await?;
        } else if !self.ended_within(REPLACE_TIMEOUT).await? {
            anyhow::bail!("the member did not end after SIGKILL");
        }
        Ok(())
    }

    /// Stops the member with SIGTERM, and SIGKILL if it takes longer than `grace`.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<()> {
        self.signal("TERM").await?;
        if !self.ended_within(grace).await? {
            self.kill().await?;
        }
        if let Machine::Container {
            docker,
            name,
            stdin,
        } = self
        {
            let _ = stdin.shutdown().await;
            // Removed when it exits (`AutoRemove`), a moment later: wait for that too, so
            // that whoever looks for what a stopped cluster left finds nothing.
            let deadline = tokio::time::Instant::now() + REPLACE_TIMEOUT;
            while tokio::time::Instant::now() < deadline {
                match docker.inspect_container(name, None).await {
                    Err(e) if docker_status(&e) == Some(404) => break,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_server_is_the_gateway_from_the_network() {
        let gateway: std::net::IpAddr = [172, 20, 0, 1].into();
        for (server, seen) in [
            ("https://127.0.0.1:6443", "https://172.20.0.1:6443"),
            ("https://localhost:6443", "https://172.20.0.1:6443"),
            ("https://[::1]:6443", "https://172.20.0.1:6443"),
            ("https://10.0.0.5:6443", "https://10.0.0.5:6443"),
            ("https://api.example:443", "https://api.example:443"),
        ] {
            assert_eq!(seen_from_network(server, gateway).expect("a URL"), seen);
        }
        assert!(seen_from_network("not a url at all", gateway).is_err());
    }
}
