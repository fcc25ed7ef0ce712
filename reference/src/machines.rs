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
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, InspectContainerOptions, KillContainerOptions,
    RemoveContainerOptions,
};
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use crate::agent::runtime::{self, LABEL_CLUSTER, POD_NETWORK};
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

/// How one member is started, again and again.
pub struct MemberPlan {
    /// Its Raft id.
    pub id: u64,
    /// Its data directory on this host.
    pub dir: PathBuf,
    /// Where the front door reaches its API, on this host.
    pub api: std::net::SocketAddr,
    /// Its `shipshape` arguments.
    pub args: Vec<std::ffi::OsString>,
    /// For a member in a container: the engine and the container's name.
    pub container: Option<(Docker, String)>,
}

/// A running member.
pub enum Machine {
    /// A child process.
    Process(tokio::process::Child),
    /// A container; `stdin` is `up`'s attachment, held for as long as it runs.
    Container {
        /// The engine.
        docker: Docker,
        /// The container's name.
        name: String,
        /// The container's stdin: dropping it ends the member.
        stdin: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    },
}

impl MemberPlan {
    /// Starts the member: its output appended to `member.log`, its pid in `pid`.
    pub async fn start(&self, exe: &Path) -> anyhow::Result<Machine> {
        let log_path = self.dir.join("member.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("failed to open {}", log_path.display()))?;
        let (machine, pid) = match &self.container {
            None => {
                // Its stdin is a pipe this process holds (`--stop-with-stdin`): the member
                // ends when this process does, even if it is SIGKILLed.
                let child = tokio::process::Command::new(exe)
                    .args(&self.args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(log))
                    .kill_on_drop(true)
                    .spawn()
                    .context("failed to start a control-plane member")?;
                let pid = child.id();
                (Machine::Process(child), pid)
            }
            Some((docker, name)) => {
                let (machine, pid) = self.start_container(docker, name, exe, log).await?;
                (machine, Some(pid))
            }
        };
        if let Some(pid) = pid {
            let path = self.dir.join("pid");
            std::fs::write(&path, pid.to_string())
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
        tracing::info!(member = self.id, api = %self.api, log = %log_path.display(), "control-plane member started");
        Ok(machine)
    }

    async fn start_container(
        &self,
        docker: &Docker,
        name: &str,
        exe: &Path,
        log: std::fs::File,
    ) -> anyhow::Result<(Machine, u32)> {
        let owner = std::fs::metadata(&self.dir)
            .with_context(|| format!("failed to read {}", self.dir.display()))?;
        let cluster = std::fs::read_to_string(self.dir.join("cluster-id"))
            .context("the member's data directory has no cluster-id")?;
        let api_port = format!("{CONTAINER_API_PORT}/tcp");
        let env: Vec<String> = std::env::vars()
            .filter(|(key, _)| {
                key.starts_with("SHIPSHAPE_")
                    || PASSED_IN.contains(&key.as_str())
                    || crate::failpoints::variables().contains(&key.as_str())
            })
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let body = ContainerCreateBody {
            image: Some(images::MACHINE_IMAGE.to_owned()),
            cmd: Some(
                self.args
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
            ),
            env: Some(env),
            hostname: Some(name.to_owned()),
            user: Some(format!("{}:{}", owner.uid(), owner.gid())),
            labels: Some(HashMap::from([
                (LABEL_CLUSTER.to_owned(), cluster.trim().to_owned()),
                (LABEL_MEMBER.to_owned(), self.id.to_string()),
            ])),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            exposed_ports: Some(vec![api_port.clone()]),
            host_config: Some(HostConfig {
                binds: Some(vec![
                    format!("{}:{}:ro", exe.display(), images::MACHINE_BINARY),
                    format!("{}:{CONTAINER_DATA}", self.dir.display()),
                ]),
                port_bindings: Some(HashMap::from([(
                    api_port,
                    Some(vec![PortBinding {
                        host_ip: Some(self.api.ip().to_string()),
                        host_port: Some(self.api.port().to_string()),
                    }]),
                )])),
                network_mode: Some(POD_NETWORK.to_owned()),
                auto_remove: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        create_replacing(docker, name, body).await?;
        let attached = docker
            .attach_container(
                name,
                Some(AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    ..Default::default()
                }),
            )
            .await
            .with_context(|| format!("failed to attach to container {name}"))?;
        docker
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .with_context(|| format!("failed to start container {name}"))?;
        let pid = docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .with_context(|| format!("failed to inspect container {name}"))?
            .state
            .and_then(|s| s.pid)
            .filter(|pid| *pid > 0)
            .with_context(|| format!("container {name} has no process"))?;
        let mut output = attached.output;
        let mut log = tokio::fs::File::from_std(log);
        tokio::spawn(async move {
            while let Some(Ok(chunk)) = output.next().await {
                if log.write_all(&chunk.into_bytes()).await.is_err() {
                    break;
                }
            }
        });
        let machine = Machine::Container {
            docker: docker.clone(),
            name: name.to_owned(),
            stdin: attached.input,
        };
        Ok((machine, pid as u32))
    }
}

/// Creates container `name`, removing one of that name first — a leftover of a run that
/// was killed, or this member's previous container, whose removal may still be going on.
async fn create_replacing(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + REPLACE_TIMEOUT;
    loop {
        let _ = docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        let options = CreateContainerOptions {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        match docker.create_container(Some(options), body.clone()).await {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) if tokio::time::Instant::now() < deadline => {
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
                match docker
                    .inspect_container(name, None::<InspectContainerOptions>)
                    .await
                {
                    Ok(container) => {
                        let state = container.state.unwrap_or_default();
                        Ok((state.running != Some(true))
                            .then(|| format!("exit code {}", state.exit_code.unwrap_or(-1))))
                    }
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => Ok(Some("its container is gone".to_owned())),
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
                        .arg(format!("-{signal}"))
                        .arg(pid.to_string())
                        .status();
                }
                Ok(())
            }
            Machine::Container { docker, name, .. } => {
                let options = KillContainerOptions {
                    signal: signal.to_owned(),
                };
                match docker.kill_container(name, Some(options)).await {
                    Ok(()) => Ok(()),
                    // Not running (409) or gone (404): as good as killed.
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404 | 409,
                        ..
                    }) => Ok(()),
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
        if let Machine::Container { stdin, .. } = self {
            let _ = stdin.shutdown().await;
        }
        Ok(())
    }
}

/// Prepares the engine for members in containers: the shared network and the machine
/// image for `exe`.
pub async fn prepare_engine(docker: &Docker, exe: &Path) -> anyhow::Result<()> {
    runtime::ensure_network(docker).await?;
    images::ensure_machine(docker, exe).await?;
    Ok(())
}
