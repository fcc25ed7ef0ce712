//! The container runtime: everything the node agent asks of Docker, in one place.
//!
//! Every container created here carries the labels `shipshape.cluster`, `shipshape.node`
//! and `shipshape.pod` (plus the pod's uid and the container's name), and every lookup
//! filters on them: the agent never touches a container that is not its own. It also
//! carries the labels Kubernetes' Docker runtime (cri-dockerd) puts on a pod's containers
//! — `io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`, `io.kubernetes.pod.uid`,
//! `io.kubernetes.container.name` (`POD` for the sandbox) — so that tools which find a
//! pod's containers on a node's engine by them, such as the conformance kit's Kubernetes
//! driver, find the reference's too.
//!
//! A pod is a *pause* container that owns the network namespace, on the pod network, and
//! the app containers, which join it (`network_mode: container:<pause>`).
//!
//! # One pod network for every cluster
//!
//! Every cluster on an engine puts its pods on the same Docker bridge network,
//! [`POD_NETWORK`], created once and never removed. A network per cluster, removed with the
//! cluster, looked tidier but did not survive contact with Docker: now and then the engine
//! keeps a stale endpoint on a network after its last container is gone and refuses to
//! remove it, so a machine that starts clusters every day collected dead networks until
//! Docker ran out of address pools. One long-lived network cannot pile up. Pods of
//! different clusters can reach each other on it, as pods of one Kubernetes cluster can;
//! what tells clusters apart is the `shipshape.cluster` label on every container.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerSummary, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptions, ListNetworksOptionsBuilder, LogsOptions,
    RemoveContainerOptionsBuilder, StopContainerOptions,
};
use futures::{StreamExt, TryStreamExt};

/// Label: the cluster a container belongs to.
pub const LABEL_CLUSTER: &str = "shipshape.cluster";
/// Label: the node whose agent runs it.
pub const LABEL_NODE: &str = "shipshape.node";
/// Label: the pod, as `namespace/name`.
pub const LABEL_POD: &str = "shipshape.pod";
/// Label: the pod's uid.
pub const LABEL_POD_UID: &str = "shipshape.pod-uid";
/// Label: the container's name in the pod spec (`pause` for the sandbox).
pub const LABEL_CONTAINER: &str = "shipshape.container";

/// The name of the sandbox container in [`LABEL_CONTAINER`].
pub const PAUSE: &str = "pause";

/// Limit on processes per app container, so a fork bomb in one pod cannot take the host.
const PIDS_LIMIT: i64 = 1024;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No Docker engine answers.
    #[error(
        "no Docker engine is reachable ({0}); shipshape runs pods as Docker containers: start dockerd or set DOCKER_HOST"
    )]
    Unreachable(String),
    /// Docker refused an operation.
    #[error("docker failed to {action}: {source}")]
    Docker {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: bollard::errors::Error,
    },
}

fn docker_err(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> RuntimeError {
    let action = action.into();
    move |source| RuntimeError::Docker { action, source }
}

/// The HTTP status Docker answered with, if the error is an answer of Docker's.
pub fn docker_status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// `result`, but also `Ok` when Docker answered one of the statuses in `done`: what was
/// asked for is already so.
fn unless_done(
    result: Result<(), bollard::errors::Error>,
    done: &[u16],
    action: String,
) -> Result<(), RuntimeError> {
    match result {
        Err(e) if docker_status(&e).is_some_and(|status| done.contains(&status)) => Ok(()),
        other => other.map_err(docker_err(action)),
    }
}

/// Connects to the local Docker engine and checks that it answers.
pub async fn connect() -> Result<Docker, RuntimeError> {
    let unreachable = |e: bollard::errors::Error| RuntimeError::Unreachable(e.to_string());
    let docker = Docker::connect_with_local_defaults().map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

/// The Docker network every cluster's pods are on (see the module's essay).
pub const POD_NETWORK: &str = "shipshape";

/// Label on the pod network, saying what it is for.
pub const LABEL_NETWORK: &str = "shipshape.network";

/// Creates the pod network if it does not exist yet.
pub async fn ensure_network(docker: &Docker) -> Result<(), RuntimeError> {
    if same_named_networks(docker).await?.is_empty() {
        let request = NetworkCreateRequest {
            name: POD_NETWORK.to_owned(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(LABEL_NETWORK.into(), "pods".into())])),
            ..Default::default()
        };
        let created = docker.create_network(request).await;
        created.map_err(docker_err(format!("create network {POD_NETWORK}")))?;
    }
    // Docker (before API 1.44) lets two agents starting at once both create the network;
    // every agent then keeps the same one — the oldest, by id on a tie — and removes the
    // others, which nothing has joined yet.
    let mut networks = same_named_networks(docker).await?;
    networks.sort();
    for (_, id) in networks.iter().skip(1) {
        let _ = docker.remove_network(id).await;
    }
    Ok(())
}

/// The (created, id) of every network named exactly [`POD_NETWORK`].
async fn same_named_networks(docker: &Docker) -> Result<Vec<(String, String)>, RuntimeError> {
    let filters = HashMap::from([("name", vec![POD_NETWORK])]);
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    let networks = docker.list_networks(Some(options)).await;
    let networks = networks.map_err(docker_err("list networks"))?;
    Ok(networks
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(POD_NETWORK))
        .filter_map(|n| Some((n.created.map(|c| c.to_string()).unwrap_or_default(), n.id?)))
        .collect())
}

/// The gateway address of the pod network: the host as pods see it.
pub async fn network_gateway(docker: &Docker) -> Option<std::net::IpAddr> {
    let network = docker.inspect_network(POD_NETWORK, None).await.ok()?;
    let configs = network.ipam?.config?;
    configs.into_iter().find_map(|c| c.gateway?.parse().ok())
}

/// The containers carrying every one of `labels` (`key=value`): all of them, or only the
/// running ones.
async fn labelled(
    docker: &Docker,
    labels: Vec<String>,
    all: bool,
) -> Result<Vec<ContainerSummary>, RuntimeError> {
    let mut filters = HashMap::from([("label".to_owned(), labels)]);
    if !all {
        filters.insert("status".to_owned(), vec!["running".to_owned()]);
    }
    let options = ListContainersOptions {
        all,
        filters: Some(filters),
        ..Default::default()
    };
    let listed = docker.list_containers(Some(options)).await;
    listed.map_err(docker_err("list containers"))
}

/// Removes a container and its anonymous volumes, running or not.
async fn force_remove(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    docker.remove_container(id, Some(options)).await
}

/// Removes every container a cluster left behind (a killed run, or a clean stop). Found by
/// label, so nothing else is touched; the pod network stays, for every cluster to share.
pub async fn reap(docker: &Docker, cluster: &str) -> Result<usize, RuntimeError> {
    let mut removed = 0;
    for c in labelled(docker, vec![format!("{LABEL_CLUSTER}={cluster}")], true).await? {
        if let Some(id) = c.id
            && force_remove(docker, &id).await.is_ok()
        {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes every container of one node (a clean stop of its agent); how many went.
///
/// Lists again after each sweep, for a few rounds: a create the agent asked for just before
/// it stopped may still complete on the engine's side, and a removal Docker already has in
/// progress answers 409 until it is done.
pub async fn reap_node(runtime: &Runtime) -> usize {
    const ROUNDS: usize = 10;
    let mut removed = 0;
    for round in 0..ROUNDS {
        let Ok(mut containers) = runtime.list().await else {
            break;
        };
        if containers.is_empty() {
            break;
        }
        // Sandboxes last: app containers live in their network namespaces.
        containers.sort_by_key(|(_, name, _)| name == PAUSE);
        for (_, _, id) in containers {
            if runtime.remove(&id).await.is_ok() {
                removed += 1;
            }
        }
        if round + 1 < ROUNDS {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    removed
}

/// What the agent needs to know about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Docker's id.
    pub id: String,
    /// Running now.
    pub running: bool,
    /// Exit code, once it has exited.
    pub exit_code: Option<i64>,
    /// Killed for exceeding its memory limit.
    pub oom_killed: bool,
    /// When it last started (RFC 3339), if it has.
    pub started_at: Option<String>,
    /// When it last finished (RFC 3339), if it has.
    pub finished_at: Option<String>,
    /// Its IP on the cluster network (the sandbox's).
    pub ip: Option<String>,
    /// The image's id.
    pub image_id: Option<String>,
}

/// What to run as one container of a pod.
#[derive(Debug, Clone, Default)]
pub struct ContainerRun {
    /// The container's name in the pod spec.
    pub name: String,
    /// The image.
    pub image: String,
    /// Overrides the image's entrypoint.
    pub command: Option<Vec<String>>,
    /// Overrides the image's arguments.
    pub args: Option<Vec<String>>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// `host:container[:ro]` bind mounts.
    pub binds: Vec<String>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Whether the process has a stdin to attach to (`stdin`), closed when the first
    /// attached client lets go (`stdinOnce`), and a terminal (`tty`).
    pub stdin: bool,
    /// See `stdin`.
    pub stdin_once: bool,
    /// See `stdin`.
    pub tty: bool,
}

/// The Docker side of one node: its cluster and node identity, and its Docker client.
#[derive(Clone)]
pub struct Runtime {
    docker: Docker,
    cluster: String,
    node: String,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cluster", &self.cluster)
            .field("node", &self.node)
            .finish()
    }
}

/// Both of a container's output streams, from `tail` lines back (all when `None`).
fn log_options(tail: Option<u64>, follow: bool) -> LogsOptions {
    LogsOptions {
        stdout: true,
        stderr: true,
        follow,
        tail: tail.map_or_else(|| "all".to_owned(), |t| t.to_string()),
        ..Default::default()
    }
}

impl Runtime {
    /// A runtime for `node` of `cluster`.
    pub fn new(docker: Docker, cluster: &str, node: &str) -> Self {
        Runtime {
            docker,
            cluster: cluster.to_owned(),
            node: node.to_owned(),
        }
    }

    /// The Docker client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn container_name(&self, pod_uid: &str, container: &str) -> String {
        let short: String = pod_uid.chars().filter(|c| *c != '-').take(12).collect();
        format!("ss-{}-{}-{}", self.cluster, short, container)
    }

    fn labels(&self, pod: &str, pod_uid: &str, container: &str) -> HashMap<String, String> {
        let (namespace, name) = pod.split_once('/').unwrap_or(("", pod));
        let kubernetes_name = if container == PAUSE { "POD" } else { container };
        [
            (LABEL_CLUSTER, self.cluster.as_str()),
            (LABEL_NODE, &self.node),
            (LABEL_POD, pod),
            (LABEL_POD_UID, pod_uid),
            (LABEL_CONTAINER, container),
            ("io.kubernetes.pod.namespace", namespace),
            ("io.kubernetes.pod.name", name),
            ("io.kubernetes.pod.uid", pod_uid),
            ("io.kubernetes.container.name", kubernetes_name),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The label filters that pick this node's containers.
    fn our_labels(&self) -> Vec<String> {
        vec![
            format!("{LABEL_CLUSTER}={}", self.cluster),
            format!("{LABEL_NODE}={}", self.node),
        ]
    }

    /// Whether an image is present locally (nothing is ever pulled).
    pub async fn image_present(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    /// The container `container` of pod `pod_uid`, if it exists and is ours.
    pub async fn find(&self, pod_uid: &str, container: &str) -> Option<ContainerInfo> {
        let name = self.container_name(pod_uid, container);
        let c = self.docker.inspect_container(&name, None).await.ok()?;
        let labels = c.config.as_ref()?.labels.as_ref()?;
        if labels.get(LABEL_CLUSTER) != Some(&self.cluster)
            || labels.get(LABEL_NODE) != Some(&self.node)
        {
            return None;
        }
        let state = c.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        let not_zero_time = |t: Option<String>| t.filter(|t| !t.starts_with("0001-"));
        let ip = c
            .network_settings
            .and_then(|n| n.networks?.remove(POD_NETWORK)?.ip_address)
            .filter(|ip| !ip.is_empty());
        Some(ContainerInfo {
            id: c.id.unwrap_or_default(),
            running,
            exit_code: if running { None } else { state.exit_code },
            oom_killed: state.oom_killed.unwrap_or(false),
            started_at: not_zero_time(state.started_at),
            finished_at: not_zero_time(state.finished_at),
            ip,
            image_id: c.image,
        })
    }

    /// Creates and starts the pod's sandbox on the cluster network; returns its info.
    pub async fn run_pause(
        &self,
        pod: &str,
        pod_uid: &str,
        hostname: &str,
    ) -> Result<ContainerInfo, RuntimeError> {
        let name = self.container_name(pod_uid, PAUSE);
        let body = ContainerCreateBody {
            image: Some(crate::images::PAUSE_IMAGE.to_owned()),
            hostname: Some(hostname.chars().take(63).collect()),
            labels: Some(self.labels(pod, pod_uid, PAUSE)),
            host_config: Some(HostConfig {
                network_mode: Some(POD_NETWORK.to_owned()),
                pids_limit: Some(16),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.create_and_start(&name, body).await?;
        self.find(pod_uid, PAUSE)
            .await
            .ok_or_else(|| RuntimeError::Docker {
                action: format!("inspect sandbox {name}"),
                source: bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    message: "the sandbox vanished after starting".into(),
                },
            })
    }

    /// Creates and starts an app container inside the sandbox `pause_id`.
    pub async fn run_container(
        &self,
        pod: &str,
        pod_uid: &str,
        pause_id: &str,
        run: &ContainerRun,
    ) -> Result<String, RuntimeError> {
        let name = self.container_name(pod_uid, &run.name);
        let body = ContainerCreateBody {
            image: Some(run.image.clone()),
            entrypoint: run.command.clone(),
            cmd: run.args.clone(),
            env: Some(run.env.clone()),
            working_dir: run.working_dir.clone(),
            open_stdin: Some(run.stdin),
            attach_stdin: Some(run.stdin),
            stdin_once: Some(run.stdin_once),
            tty: Some(run.tty),
            labels: Some(self.labels(pod, pod_uid, &run.name)),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{pause_id}")),
                binds: Some(run.binds.clone()),
                memory: run.memory,
                nano_cpus: run.nano_cpus,
                pids_limit: Some(PIDS_LIMIT),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.create_and_start(&name, body).await
    }

    async fn create_and_start(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, RuntimeError> {
        let options = || Some(CreateContainerOptionsBuilder::new().name(name).build());
        let created = match self.docker.create_container(options(), body.clone()).await {
            // A leftover with this name (an earlier attempt) goes, and the create is tried
            // again: asking only then saves a call to the engine on every ordinary start.
            Err(e) if docker_status(&e) == Some(409) => {
                let force = RemoveContainerOptionsBuilder::new().force(true).build();
                let _ = self.docker.remove_container(name, Some(force)).await;
                self.docker.create_container(options(), body).await
            }
            other => other,
        }
        .map_err(docker_err(format!("create container {name}")))?;
        let started = self.docker.start_container(&created.id, None).await;
        started.map_err(docker_err(format!("start container {name}")))?;
        Ok(created.id)
    }

    /// Starts an exited container again (a restart in place keeps its logs).
    pub async fn restart(&self, id: &str) -> Result<(), RuntimeError> {
        let started = self.docker.start_container(id, None).await;
        started.map_err(docker_err(format!("restart container {id}")))
    }

    /// SIGTERM, then SIGKILL once `grace` has passed.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
            signal: None,
        };
        let stopped = self.docker.stop_container(id, Some(options)).await;
        // 304: already stopped; 404: already gone.
        unless_done(stopped, &[304, 404], format!("stop container {id}"))
    }

    /// Removes a container (and its anonymous volumes), running or not.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let removed = force_remove(&self.docker, id).await;
        unless_done(removed, &[404], format!("remove container {id}"))
    }

    /// This node's containers, every one or the running ones, as (the value of label
    /// `key`, container name, id).
    async fn ours(
        &self,
        all: bool,
        key: &str,
    ) -> Result<Vec<(String, String, String)>, RuntimeError> {
        let containers = labelled(&self.docker, self.our_labels(), all).await?;
        let ours = containers.into_iter().filter_map(|c| {
            let mut labels = c.labels?;
            let value = labels.remove(key)?;
            Some((value, labels.remove(LABEL_CONTAINER)?, c.id?))
        });
        Ok(ours.collect())
    }

    /// The running containers of this node's pods (not their sandboxes), as (pod
    /// `namespace/name`, container name, id).
    pub async fn running(&self) -> Result<Vec<(String, String, String)>, RuntimeError> {
        let mut running = self.ours(false, LABEL_POD).await?;
        running.retain(|(_, container, _)| container != PAUSE);
        Ok(running)
    }

    /// Every container of this node, as (pod uid, container name, id).
    pub async fn list(&self) -> Result<Vec<(String, String, String)>, RuntimeError> {
        self.ours(true, LABEL_POD_UID).await
    }

    /// The id of container `container` of the pod `namespace/name`, if this node runs it.
    pub async fn find_by_pod(&self, pod: &str, container: &str) -> Option<String> {
        let mut labels = self.our_labels();
        labels.push(format!("{LABEL_POD}={pod}"));
        labels.push(format!("{LABEL_CONTAINER}={container}"));
        let found = labelled(&self.docker, labels, true).await.ok()?;
        found.into_iter().find_map(|c| c.id)
    }

    /// The address of pod `namespace/name` on the pod network, if its sandbox runs here.
    pub async fn pod_ip(&self, pod: &str) -> Option<std::net::IpAddr> {
        let id = self.find_by_pod(pod, PAUSE).await?;
        let sandbox = self.docker.inspect_container(&id, None).await.ok()?;
        let mut networks = sandbox.network_settings?.networks?;
        networks.remove(POD_NETWORK)?.ip_address?.parse().ok()
    }

    /// The container's output (stdout and stderr), the last `tail` lines if given.
    pub async fn logs(&self, id: &str, tail: Option<u64>) -> Result<Vec<u8>, RuntimeError> {
        self.docker
            .logs(id, Some(log_options(tail, false)))
            .map_ok(|chunk| chunk.into_bytes().to_vec())
            .try_concat()
            .await
            .map_err(docker_err(format!("read logs of {id}")))
    }

    /// The container's output from `tail` lines back (all when `None`), then whatever it
    /// writes next, until it stops or the stream is dropped. An error ends the stream.
    pub fn follow_logs(
        &self,
        id: &str,
        tail: Option<u64>,
    ) -> impl futures::Stream<Item = bytes::Bytes> + Send + 'static {
        self.docker
            .logs(id, Some(log_options(tail, true)))
            .take_while(|chunk| futures::future::ready(chunk.is_ok()))
            .filter_map(|chunk| futures::future::ready(chunk.ok().map(|c| c.into_bytes())))
    }

    /// Runs `cmd` in the container; its exit code (for exec probes).
    pub async fn exec(&self, id: &str, cmd: Vec<String>) -> Result<i64, RuntimeError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let options = CreateExecOptions {
            cmd: Some(cmd),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self.docker.create_exec(id, options).await;
        let exec = exec.map_err(docker_err(format!("create exec in {id}")))?;
        let started = self.docker.start_exec(&exec.id, None).await;
        let started = started.map_err(docker_err(format!("start exec in {id}")))?;
        if let StartExecResults::Attached { mut output, .. } = started {
            while output.next().await.is_some() {}
        }
        let inspected = self.docker.inspect_exec(&exec.id).await;
        let inspected = inspected.map_err(docker_err(format!("inspect exec in {id}")))?;
        Ok(inspected.exit_code.unwrap_or(-1))
    }
}
