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
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use futures::StreamExt;

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

/// Connects to the local Docker engine and checks that it answers.
pub async fn connect() -> Result<Docker, RuntimeError> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
    docker
        .ping()
        .await
        .map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
    Ok(docker)
}

/// The Docker network every cluster's pods are on (see the module's essay).
pub const POD_NETWORK: &str = "shipshape";

/// Label on the pod network, saying what it is for.
pub const LABEL_NETWORK: &str = "shipshape.network";

/// Creates the pod network if it does not exist yet.
pub async fn ensure_network(docker: &Docker) -> Result<(), RuntimeError> {
    let name = POD_NETWORK;
    if same_named_networks(docker, name).await?.is_empty() {
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(
                LABEL_NETWORK.to_owned(),
                "pods".to_owned(),
            )])),
            ..Default::default()
        };
        docker
            .create_network(request)
            .await
            .map_err(docker_err(format!("create network {name}")))?;
    }
    // Docker (before API 1.44) lets two agents starting at once both create the network;
    // every agent then keeps the same one — the oldest, by id on a tie — and removes the
    // others, which nothing has joined yet.
    let mut networks = same_named_networks(docker, name).await?;
    networks.sort();
    for (_, id) in networks.iter().skip(1) {
        let _ = docker.remove_network(id).await;
    }
    Ok(())
}

/// The (created, id) of every network named exactly `name`.
async fn same_named_networks(
    docker: &Docker,
    name: &str,
) -> Result<Vec<(String, String)>, RuntimeError> {
    let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
    let networks = docker
        .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(docker_err("list networks"))?;
    Ok(networks
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(name))
        .filter_map(|n| Some((n.created.map(|c| c.to_string()).unwrap_or_default(), n.id?)))
        .collect())
}

/// The gateway address of the pod network: the host as pods see it.
pub async fn network_gateway(docker: &Docker) -> Option<std::net::IpAddr> {
    let network = docker
        .inspect_network(
            POD_NETWORK,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .ok()?;
    network
        .ipam?
        .config?
        .into_iter()
        .find_map(|c| c.gateway?.parse().ok())
}

/// Removes every container a cluster left behind (a killed run, or a clean stop). Found by
/// label, so nothing else is touched; the pod network stays, for every cluster to share.
pub async fn reap(docker: &Docker, cluster: &str) -> Result<usize, RuntimeError> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_CLUSTER}={cluster}")],
    )]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(docker_err("list containers"))?;
    let mut removed = 0;
    for c in containers {
        if let Some(id) = c.id {
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            if docker.remove_container(&id, Some(options)).await.is_ok() {
                removed += 1;
            }
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
    /// Limit on processes per container, so a fork bomb in one pod cannot take the host.
    pids_limit: i64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cluster", &self.cluster)
            .field("node", &self.node)
            .finish()
    }
}

impl Runtime {
    /// A runtime for `node` of `cluster`.
    pub fn new(docker: Docker, cluster: &str, node: &str) -> Self {
        Runtime {
            docker,
            cluster: cluster.to_owned(),
            node: node.to_owned(),
            pids_limit: 1024,
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
        HashMap::from([
            (LABEL_CLUSTER.to_owned(), self.cluster.clone()),
            (LABEL_NODE.to_owned(), self.node.clone()),
            (LABEL_POD.to_owned(), pod.to_owned()),
            (LABEL_POD_UID.to_owned(), pod_uid.to_owned()),
            (LABEL_CONTAINER.to_owned(), container.to_owned()),
            (
                "io.kubernetes.pod.namespace".to_owned(),
                namespace.to_owned(),
            ),
            ("io.kubernetes.pod.name".to_owned(), name.to_owned()),
            ("io.kubernetes.pod.uid".to_owned(), pod_uid.to_owned()),
            (
                "io.kubernetes.container.name".to_owned(),
                kubernetes_name.to_owned(),
            ),
        ])
    }

    /// Whether an image is present locally (nothing is ever pulled).
    pub async fn image_present(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    /// The container `container` of pod `pod_uid`, if it exists and is ours.
    pub async fn find(&self, pod_uid: &str, container: &str) -> Option<ContainerInfo> {
        let name = self.container_name(pod_uid, container);
        let c = self
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .ok()?;
        let labels = c.config.as_ref().and_then(|c| c.labels.as_ref());
        let ours = labels.is_some_and(|l| {
            l.get(LABEL_CLUSTER) == Some(&self.cluster) && l.get(LABEL_NODE) == Some(&self.node)
        });
        if !ours {
            return None;
        }
        let state = c.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        let not_zero_time = |t: Option<String>| t.filter(|t| !t.starts_with("0001-"));
        let ip = c
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|nets| nets.get(POD_NETWORK).cloned())
            .and_then(|e| e.ip_address)
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
                pids_limit: Some(self.pids_limit),
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
        let options = || {
            Some(CreateContainerOptions {
                name: Some(name.to_owned()),
                ..Default::default()
            })
        };
        let created = match self.docker.create_container(options(), body.clone()).await {
            // A leftover with this name (an earlier attempt) goes, and the create is tried
            // again: asking only then saves a call to the engine on every ordinary start.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                let _ = self
                    .docker
                    .remove_container(
                        name,
                        Some(RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    )
                    .await;
                self.docker.create_container(options(), body).await
            }
            other => other,
        }
        .map_err(docker_err(format!("create container {name}")))?;
        self.docker
            .start_container(
                &created.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(docker_err(format!("start container {name}")))?;
        Ok(created.id)
    }

    /// Starts an exited container again (a restart in place keeps its logs).
    pub async fn restart(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(docker_err(format!("restart container {id}")))
    }

    /// SIGTERM, then SIGKILL once `grace` has passed.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
            signal: None,
        };
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped; 404: already gone.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(docker_err(format!("stop container {id}"))(e)),
        }
    }

    /// Removes a container (and its anonymous volumes), running or not.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(docker_err(format!("remove container {id}"))(e)),
        }
    }

    /// This node's containers, every one or the running ones.
    async fn ours(
        &self,
        all: bool,
    ) -> Result<Vec<bollard::models::ContainerSummary>, RuntimeError> {
        let mut filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_CLUSTER}={}", self.cluster),
                format!("{LABEL_NODE}={}", self.node),
            ],
        )]);
        if !all {
            filters.insert("status".to_owned(), vec!["running".to_owned()]);
        }
        self.docker
            .list_containers(Some(ListContainersOptions {
                all,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(docker_err("list containers"))
    }

    /// The running containers of this node's pods (not their sandboxes), as (pod
    /// `namespace/name`, container name, id).
    pub async fn running(&self) -> Result<Vec<(String, String, String)>, RuntimeError> {
        Ok(self
            .ours(false)
            .await?
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels?;
                let container = labels.get(LABEL_CONTAINER)?.clone();
                (container != PAUSE).then_some((labels.get(LABEL_POD)?.clone(), container, c.id?))
            })
            .collect())
    }

    /// Every container of this node, as (pod uid, container name, id).
    pub async fn list(&self) -> Result<Vec<(String, String, String)>, RuntimeError> {
        let containers = self.ours(true).await?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels?;
                Some((
                    labels.get(LABEL_POD_UID)?.clone(),
                    labels.get(LABEL_CONTAINER)?.clone(),
                    c.id?,
                ))
            })
            .collect())
    }

    /// The id of container `container` of the pod `namespace/name`, if this node runs it.
    pub async fn find_by_pod(&self, pod: &str, container: &str) -> Option<String> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_CLUSTER}={}", self.cluster),
                format!("{LABEL_NODE}={}", self.node),
                format!("{LABEL_POD}={pod}"),
                format!("{LABEL_CONTAINER}={container}"),
            ],
        )]);
        let found = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .ok()?;
        found.into_iter().find_map(|c| c.id)
    }

    /// The address of pod `namespace/name` on the pod network, if its sandbox runs here.
    pub async fn pod_ip(&self, pod: &str) -> Option<std::net::IpAddr> {
        let id = self.find_by_pod(pod, PAUSE).await?;
        let sandbox = self.docker.inspect_container(&id, None).await.ok()?;
        let networks = sandbox.network_settings?.networks?;
        networks
            .get(POD_NETWORK)?
            .ip_address
            .as_deref()?
            .parse()
            .ok()
    }

    /// The container's output (stdout and stderr), the last `tail` lines if given.
    pub async fn logs(&self, id: &str, tail: Option<u64>) -> Result<Vec<u8>, RuntimeError> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: tail.map_or_else(|| "all".to_owned(), |t| t.to_string()),
            ..Default::default()
        };
        let mut stream = self.docker.logs(id, Some(options));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(docker_err(format!("read logs of {id}")))?;
            out.extend_from_slice(&chunk.into_bytes());
        }
        Ok(out)
    }

    /// The container's output from `tail` lines back (all when `None`), then whatever it
    /// writes next, until it stops or the stream is dropped. An error ends the stream.
    pub fn follow_logs(
        &self,
        id: &str,
        tail: Option<u64>,
    ) -> impl futures::Stream<Item = bytes::Bytes> + Send + 'static {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            follow: true,
            tail: tail.map_or_else(|| "all".to_owned(), |t| t.to_string()),
            ..Default::default()
        };
        self.docker
            .logs(id, Some(options))
            .take_while(|chunk| futures::future::ready(chunk.is_ok()))
            .filter_map(|chunk| futures::future::ready(chunk.ok().map(|c| c.into_bytes())))
    }

    /// Runs `cmd` in the container; its exit code (for exec probes).
    pub async fn exec(&self, id: &str, cmd: Vec<String>) -> Result<i64, RuntimeError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let exec = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(docker_err(format!("create exec in {id}")))?;
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(docker_err(format!("start exec in {id}")))?
        {
            while output.next().await.is_some() {}
        }
        let inspected = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(docker_err(format!("inspect exec in {id}")))?;
        Ok(inspected.exit_code.unwrap_or(-1))
    }
}
