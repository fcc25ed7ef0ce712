//! The `swarm` driver: certifies Docker Swarm, on the local Docker engine.
//!
//! It speaks the Docker Engine API (bollard), never the `docker` command. If the engine is
//! not in a swarm, the driver makes it the single manager of a new one on loopback
//! (`docker swarm init --advertise-addr 127.0.0.1`), marked with the run that did it, and
//! leaves that swarm when it is done; a swarm it did not make it leaves as it found it.
//!
//! # The kit's words in Swarm's
//!
//! | kit | Swarm |
//! |---|---|
//! | namespace | an attachable overlay network of that name; every service of the scenario is on it |
//! | deployment of N replicas | a replicated service `<namespace>-<name>`, reachable on the network by the alias `<name>` |
//! | replica | a task (`<service>.<slot>.<task id>`, which the probe reports as its name) |
//! | readiness check | the container's health check (`/probe check PATH PORT`, run in the container): a task that is not healthy is not in the network's DNS |
//! | rolling update (maxSurge, maxUnavailable) | `UpdateConfig`: start-first with parallelism maxSurge, else stop-first with parallelism maxUnavailable; failure action *pause* |
//! | Recreate | `UpdateConfig`: stop-first, parallelism 0 (all at once); each slot waits only for its own old task (see [`Driver::differences`]) |
//! | minReadySeconds | `UpdateConfig.Monitor` |
//! | rollout status | `UpdateStatus` (`paused` is a stalled rollout) and the tasks running the current spec |
//! | roll back | an update with `rollback=previous` |
//! | pod | a service of one replica, its restart policy the pod's |
//! | daemon | a `global` service: one task on every node its placement constraints (node labels) allow |
//! | job (completions, parallelism, retries) | a `replicated-job` service: `TotalCompletions`, `MaxConcurrent`, restart `on-failure` with `MaxAttempts` (`none` for no retry); complete once enough tasks are, failed once none is left to run and a slot used up its tries |
//! | node label, cordon, drain | node spec labels, availability `pause`, availability `drain` |
//! | kill a container | `POST /containers/{id}/kill` on the task's container |
//!
//! # Reaching services
//!
//! This machine's kernel has no IPVS, so Swarm's ingress routing mesh and its service
//! virtual IPs do not answer (a published port gets no answer; checked by hand). Services
//! therefore use `endpoint_mode: dnsrr` — the network's DNS answers a service's name with
//! the addresses of its healthy tasks, rotated — and the kit sends its requests from a
//! *relay* in the namespace: a container of the probe image on the overlay network, its
//! port published on 127.0.0.1, which dials the service's name afresh for each request
//! (`/relay`, see the probe). The report says so.
//!
//! # What Swarm does not have
//!
//! Swarm is a different orchestrator, and where it really behaves differently the features
//! say so by failing, or by not applying; [`Driver::differences`] explains each failure,
//! and the failing step carries the evidence. No taints (`@taint-node`), one node on one
//! engine (`@multi-node`), no machines to add (`@add-node`), no deleting one task through
//! the API (`@delete-replica`), no Kubernetes API (`@kubernetes-api`), no restarting its
//! manager (`@restart-control-plane`).
//!
//! # Leftovers
//!
//! Every service, network and container the driver makes carries the run label; at start
//! it removes those of runs whose process is gone ([`crate::reaper`]), and at the end
//! everything of its own run.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, NetworkCreateRequest, PortBinding,
    ServiceSpec as SwarmServiceSpec,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, LeaveSwarmOptions, ListContainersOptions,
    ListNetworksOptions, ListNodesOptions, ListServicesOptions, ListTasksOptions,
    RemoveContainerOptions, UpdateNodeOptions, UpdateServiceOptions,
};
use futures::FutureExt as _;
use serde_json::{Value, json};

use crate::driver::{
    Admission, Amount, Capability, CheckAction, DaemonSpec, DeploymentSpec, Driver, DriverFuture,
    Fault, HealthCheck, HttpRequest, HttpResponse, JobOutcome, JobPod, JobSpec, JobState,
    MULTI_NODE, NodeStatus, Phase, Placement, PodSpec, Replica, Resources, RestartPolicy, Revision,
    RevisionEntry, Rollout, RolloutStatus, ServiceSpec, Strategy, Support,
};
use crate::kubeapi::RUN_LABEL;
use crate::{plain_http, reaper};

/// Label naming the namespace (scenario) a service, network or container belongs to.
const NAMESPACE_LABEL: &str = "shipshape.conformance/namespace";

/// Label naming what a service is to the kit: `deployment` or `pod`.
const KIND_LABEL: &str = "shipshape.conformance/kind";

/// Label naming the deployment or pod a service is, in the kit's words.
const NAME_LABEL: &str = "shipshape.conformance/name";

/// Label on a swarm the kit initialised, naming the run that did.
const INITIALISED_LABEL: &str = "shipshape.conformance/initialised-by";

/// Prefix of the node labels that remember which run set a label or cordoned the node, so
/// that a later run can take back what a killed one did.
const NODE_MARK: &str = "shipshape.conformance/set-by.";

/// The port the probe listens on.
const PROBE_PORT: u16 = 8080;

/// How long the engine may take to answer at start.
const CHECK_TIMEOUT: Duration = Duration::from_secs(8);

/// How long a relay may take to answer once started.
const RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the containers of a deleted namespace's services may take to go.
const CLEAN_UP_TIMEOUT: Duration = Duration::from_secs(45);

/// Pause between two looks while waiting.
const POLL: Duration = Duration::from_millis(250);

/// Health checks wait this long for an answer (Kubernetes' default `timeoutSeconds`).
const CHECK_ANSWER: Duration = Duration::from_secs(1);

/// What the driver knows of one namespace.
#[derive(Clone, Debug)]
struct Namespace {
    /// The overlay network's id.
    network: String,
    /// The relay container's id.
    relay: String,
    /// The relay's port on 127.0.0.1.
    relay_port: u16,
    /// Each service of the kit, by name: the deployment behind it and the port of its
    /// replicas.
    services: BTreeMap<String, (String, u16)>,
}

/// What the kit asks Swarm to run: a deployment's replicas, or a pod.
struct Workload<'a> {
    /// The deployment's or the pod's name.
    name: &'a str,
    /// `deployment` or `pod`.
    kind: &'a str,
    /// The image.
    image: &'a str,
    /// The environment, `NAME=value`.
    env: Vec<String>,
    /// How many replicas.
    replicas: u32,
    /// The labels of the deployment or pod.
    labels: &'a BTreeMap<String, String>,
    /// Where it may run.
    placement: &'a Placement,
    /// What each replica asks of its node.
    requests: &'a Resources,
    /// Its health checks (liveness, readiness): Swarm has one health state for both.
    checks: Vec<&'a HealthCheck>,
    /// When its container is started again.
    restart: RestartPolicy,
    /// How it rolls out.
    rollout: &'a Rollout,
    /// How long a replica may take to stop before it is killed.
    grace_seconds: Option<u32>,
}

/// Docker Swarm on the local engine.
pub struct SwarmDriver {
    /// The engine.
    docker: Docker,
    /// Where it is.
    host: String,
    /// This run's id, on everything the driver makes.
    run_id: String,
    /// Whether the swarm is the kit's (made by this run or a killed one), to leave at the end.
    leave_at_end: bool,
    /// The engine's version.
    engine_version: String,
    /// The namespaces of this run.
    namespaces: tokio::sync::Mutex<BTreeMap<String, Namespace>>,
    /// How many nodes the swarm has.
    nodes: usize,
    /// The health check of each service that has one, by service name, as created. The
    /// engine (API 1.41) writes a container spec's check as `Healthcheck`, and bollard's
    /// model reads it as `HealthCheck` only, so a spec read back has lost it; an update
    /// puts it back, or it would take the check away and replace every task.
    health_checks: tokio::sync::Mutex<BTreeMap<String, Value>>,
}

impl fmt::Debug for SwarmDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwarmDriver")
            .field("host", &self.host)
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

/// Turns a bollard error into one that says what was being done.
fn docker_error(what: impl fmt::Display) -> impl FnOnce(bollard::errors::Error) -> anyhow::Error {
    move |error| {
        anyhow!(
            "the Docker engine failed to {what}: {}",
            engine_message(&error)
        )
    }
}

/// The engine's own message in a bollard error, where it has one.
fn engine_message(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{status_code} {message}"),
        other => other.to_string(),
    }
}

/// Whether a bollard error is the engine's 404.
fn not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// A JSON view of a bollard model, in the Engine API's own field names.
fn json_of<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A string at a JSON pointer.
fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// Filters for a list call: `label=k=v` for each pair.
fn label_filters(labels: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect(),
    )])
}

impl SwarmDriver {
    /// Connects to the engine (`DOCKER_HOST`, else the local socket), puts it in a swarm
    /// if it is not in one, clears what killed runs left, and makes sure the probe images
    /// are there.
    pub async fn start(run_id: &str) -> anyhow::Result<Self> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let docker = Docker::connect_with_defaults()
            .map_err(|error| anyhow!("cannot connect to the Docker engine at {host}: {error}"))?;
        tokio::time::timeout(CHECK_TIMEOUT, docker.ping())
            .await
            .map_err(|_| {
                anyhow!("the Docker engine at {host} did not answer within {CHECK_TIMEOUT:?}")
            })?
            .map_err(|error| {
                anyhow!(
                    "no Docker engine answers at {host}: {}",
                    engine_message(&error)
                )
            })?;
        let info = json_of(
            &docker
                .info()
                .await
                .map_err(docker_error("describe itself"))?,
        );
        let engine_version = text(&info, "/ServerVersion").unwrap_or("?").to_owned();
        let state = text(&info, "/Swarm/LocalNodeState").unwrap_or_default();
        let leave_at_end = match state {
            "inactive" | "" => {
                let spec = json!({ "Labels": { INITIALISED_LABEL: run_id } });
                let request = bollard::models::SwarmInitRequest {
                    listen_addr: Some("127.0.0.1:2377".to_owned()),
                    advertise_addr: Some("127.0.0.1".to_owned()),
                    spec: serde_json::from_value(spec).ok(),
                    ..Default::default()
                };
                tokio::time::timeout(CHECK_TIMEOUT, docker.init_swarm(request))
                    .await
                    .map_err(|_| anyhow!("the Docker engine at {host} did not start a swarm within {CHECK_TIMEOUT:?}"))?
                    .map_err(|error| {
                        anyhow!(
                            "the Docker engine at {host} cannot run in swarm mode: {}",
                            engine_message(&error)
                        )
                    })?;
                true
            }
            "active" => {
                if info.pointer("/Swarm/ControlAvailable") != Some(&Value::Bool(true)) {
                    bail!(
                        "the Docker engine at {host} is a worker of a swarm; the kit needs a manager"
                    );
                }
                // A swarm a killed run of the kit made is the kit's to leave.
                let swarm = json_of(
                    &docker
                        .inspect_swarm()
                        .await
                        .map_err(docker_error("describe its swarm"))?,
                );
                swarm
                    .pointer(&format!(
                        "/Spec/Labels/{}",
                        INITIALISED_LABEL.replace('/', "~1")
                    ))
                    .is_some()
            }
            other => bail!(
                "the Docker engine at {host} is in swarm state {other:?} ({}); the kit needs an active manager or no swarm at all",
                text(&info, "/Swarm/Error").unwrap_or_default()
            ),
        };
        let nodes = docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(docker_error("list the swarm's nodes"))?
            .len();
        let driver = Self {
            docker,
            host,
            run_id: run_id.to_owned(),
            leave_at_end,
            engine_version,
            namespaces: tokio::sync::Mutex::new(BTreeMap::new()),
            health_checks: tokio::sync::Mutex::new(BTreeMap::new()),
            nodes,
        };
        driver.reap(reaper::is_dead).await?;
        shipshape::images::ensure(&driver.docker)
            .await
            .context("failed to build the probe images on the engine")?;
        Ok(driver)
    }

    /// Removes every service, container and network whose run label `gone` says yes to,
    /// and takes back the node labels and cordons such runs left.
    async fn reap(&self, gone: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let filters = HashMap::from([("label".to_owned(), vec![RUN_LABEL.to_owned()])]);
        let services = self
            .docker
            .list_services(Some(ListServicesOptions {
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await
            .map_err(docker_error("list services"))?;
        for service in services.iter().map(json_of) {
            let run = text(
                &service,
                &format!("/Spec/Labels/{}", RUN_LABEL.replace('/', "~1")),
            );
            if run.is_some_and(&gone)
                && let Some(id) = text(&service, "/ID")
                && let Err(error) = self.docker.delete_service(id).await
                && !not_found(&error)
            {
                return Err(docker_error(format!("remove service {id}"))(error));
            }
        }
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await
            .map_err(docker_error("list containers"))?;
        for container in containers.iter().map(json_of) {
            let run = container
                .pointer("/Labels")
                .and_then(|labels| labels.get(RUN_LABEL))
                .and_then(Value::as_str);
            if run.is_some_and(&gone)
                && let Some(id) = text(&container, "/Id")
            {
                self.remove_container(id).await?;
            }
        }
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(docker_error("list networks"))?;
        for network in networks.iter().map(json_of) {
            let run = network
                .pointer("/Labels")
                .and_then(|labels| labels.get(RUN_LABEL))
                .and_then(Value::as_str);
            if run.is_some_and(&gone)
                && let Some(id) = text(&network, "/Id")
            {
                self.remove_network(id).await?;
            }
        }
        for node in self.nodes_json().await? {
            let Some(labels) = node.pointer("/Spec/Labels").and_then(Value::as_object) else {
                continue;
            };
            for (mark, run) in labels {
                let Some(key) = mark.strip_prefix(NODE_MARK) else {
                    continue;
                };
                if run.as_str().is_some_and(&gone) {
                    let id = text(&node, "/ID").unwrap_or_default().to_owned();
                    self.take_back(&id, key).await?;
                }
            }
        }
        Ok(())
    }

    /// Takes back what a run did to a node under `key`: a label it set, or its cordon.
    async fn take_back(&self, node: &str, key: &str) -> anyhow::Result<()> {
        self.update_node(node, |spec| {
            let labels = spec["Labels"].as_object_mut();
            if let Some(labels) = labels {
                labels.remove(&format!("{NODE_MARK}{key}"));
                if key == "availability" {
                    spec["Availability"] = json!("active");
                } else {
                    labels.remove(key);
                }
            }
            Ok(())
        })
        .await
    }

    /// The swarm's nodes, as the engine describes them.
    async fn nodes_json(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(docker_error("list the swarm's nodes"))?
            .iter()
            .map(json_of)
            .collect())
    }

    /// Changes a node's spec (by id or hostname) with `change`, at its current version.
    async fn update_node(
        &self,
        node: &str,
        change: impl Fn(&mut Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let nodes = self.nodes_json().await?;
        let found = nodes
            .iter()
            .find(|n| {
                text(n, "/ID") == Some(node) || text(n, "/Description/Hostname") == Some(node)
            })
            .ok_or_else(|| anyhow!("node {node} is not a node of the swarm"))?;
        let id = text(found, "/ID").unwrap_or_default().to_owned();
        let version = found
            .pointer("/Version/Index")
            .and_then(Value::as_i64)
            .ok_or_else(|| anyhow!("node {node} has no version"))?;
        let mut spec = found.get("Spec").cloned().unwrap_or_else(|| json!({}));
        if spec.get("Labels").is_none_or(Value::is_null) {
            spec["Labels"] = json!({});
        }
        change(&mut spec)?;
        let spec = serde_json::from_value(spec).context("the node spec does not parse")?;
        self.docker
            .update_node(&id, spec, UpdateNodeOptions { version })
            .await
            .map_err(docker_error(format!("update node {node}")))
    }

    /// Removes a container, running or not; one already gone is no error.
    async fn remove_container(&self, id: &str) -> anyhow::Result<()> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(error) if not_found(&error) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => Ok(()),
            Err(error) => Err(docker_error(format!("remove container {id}"))(error)),
        }
    }

    /// Removes a network, waiting (up to [`CLEAN_UP_TIMEOUT`]) while tasks still use it.
    async fn remove_network(&self, id: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + CLEAN_UP_TIMEOUT;
        loop {
            match self.docker.remove_network(id).await {
                Ok(()) => return Ok(()),
                Err(error) if not_found(&error) => return Ok(()),
                Err(error) if Instant::now() < deadline => {
                    tracing::debug!(network = id, error = %error, "network still in use");
                    tokio::time::sleep(POLL).await;
                }
                Err(error) => return Err(docker_error(format!("remove network {id}"))(error)),
            }
        }
    }

    /// The namespace's state, which must exist.
    async fn namespace(&self, namespace: &str) -> anyhow::Result<Namespace> {
        self.namespaces
            .lock()
            .await
            .get(namespace)
            .cloned()
            .ok_or_else(|| anyhow!("namespace {namespace} was not created by this run"))
    }

    /// The service name of a deployment or pod of a namespace.
    fn service_name(namespace: &str, name: &str) -> String {
        format!("{namespace}-{name}")
    }

    /// Inspects a service; `None` if it does not exist.
    async fn service(&self, name: &str) -> anyhow::Result<Option<Value>> {
        match self.docker.inspect_service(name, None).await {
            Ok(service) => Ok(Some(json_of(&service))),
            Err(error) if not_found(&error) => Ok(None),
            Err(error) => Err(docker_error(format!("inspect service {name}"))(error)),
        }
    }

    /// Changes a service's spec with `change` and sends it at the version read, once; a
    /// conflicting write elsewhere (the engine says "update out of sequence") is retried.
    async fn update_service(
        &self,
        name: &str,
        rollback: bool,
        change: impl Fn(&mut Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        for _ in 0..5 {
            let service = self
                .service(name)
                .await?
                .ok_or_else(|| anyhow!("service {name} does not exist"))?;
            let version = service
                .pointer("/Version/Index")
                .and_then(Value::as_i64)
                .and_then(|version| i32::try_from(version).ok())
                .ok_or_else(|| anyhow!("service {name} has no version the API takes"))?;
            let mut spec = service.get("Spec").cloned().unwrap_or_else(|| json!({}));
            if let Some(check) = self.health_checks.lock().await.get(name) {
                spec["TaskTemplate"]["ContainerSpec"]["HealthCheck"] = check.clone();
            }
            change(&mut spec)?;
            let spec = as_written(spec)?;
            let options = UpdateServiceOptions {
                version,
                rollback: rollback.then(|| "previous".to_owned()),
                ..Default::default()
            };
            match self.docker.update_service(name, spec, options, None).await {
                Ok(_) => return Ok(()),
                Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                    if message.contains("out of sequence") =>
                {
                    tokio::time::sleep(POLL).await;
                }
                Err(error) => return Err(docker_error(format!("update service {name}"))(error)),
            }
        }
        bail!("service {name} kept changing under the update")
    }

    /// The tasks of a service, newest first.
    async fn tasks(&self, service: &str) -> anyhow::Result<Vec<Value>> {
        let filters = HashMap::from([("service".to_owned(), vec![service.to_owned()])]);
        let tasks = self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(docker_error(format!("list the tasks of service {service}")))?;
        let mut tasks: Vec<Value> = tasks.iter().map(json_of).collect();
        tasks.sort_by(|a, b| text(b, "/CreatedAt").cmp(&text(a, "/CreatedAt")));
        Ok(tasks)
    }

    /// Hostnames of the swarm's nodes, by node id.
    async fn hostnames(&self) -> anyhow::Result<BTreeMap<String, String>> {
        Ok(self
            .nodes_json()
            .await?
            .iter()
            .filter_map(|node| {
                Some((
                    text(node, "/ID")?.to_owned(),
                    text(node, "/Description/Hostname")?.to_owned(),
                ))
            })
            .collect())
    }

    /// One task as a replica: named as the probe names itself (`service.slot.id`); its
    /// address on the namespace's network and its readiness (its health, where the
    /// service checks it) are its container's, which is on this engine.
    async fn replica_of(
        &self,
        service: &str,
        namespace: &str,
        task: &Value,
        hostnames: &BTreeMap<String, String>,
    ) -> Replica {
        let id = text(task, "/ID").unwrap_or_default().to_owned();
        let slot = task.pointer("/Slot").and_then(Value::as_i64).unwrap_or(0);
        let state = text(task, "/Status/State").unwrap_or("new");
        let desired = text(task, "/DesiredState").unwrap_or("running");
        let phase = task_phase(task);
        let container = self.task_container(task).await;
        // Whether the service checks its containers' health shows on the container: the
        // task's spec as bollard reads it has lost the check (see `health_checks`).
        let checked = container.as_ref().is_some_and(|container| {
            container
                .pointer("/State/Health")
                .is_some_and(|h| !h.is_null())
        });
        let (ready, ready_since) = if state != "running" {
            (false, None)
        } else if !checked {
            (true, task_time(task))
        } else {
            container.as_ref().map_or((false, None), health)
        };
        let reason = text(task, "/Status/Err")
            .filter(|_| phase != Phase::Running)
            .map(str::to_owned);
        let message = text(task, "/Status/Message").map(str::to_owned);
        let ip = container
            .as_ref()
            .and_then(|container| {
                container
                    .pointer("/NetworkSettings/Networks")?
                    .get(namespace)?
                    .get("IPAddress")?
                    .as_str()
            })
            .filter(|ip| !ip.is_empty())
            .map(str::to_owned);
        let image = text(task, "/Spec/ContainerSpec/Image")
            .map(|image| image.split('@').next().unwrap_or(image).to_owned());
        let env = task
            .pointer("/Spec/ContainerSpec/Env")
            .map(Value::to_string)
            .unwrap_or_default();
        Replica {
            name: format!("{service}.{slot}.{id}"),
            id,
            phase,
            node: text(task, "/NodeID").and_then(|node| hostnames.get(node).cloned()),
            ready,
            restarts: 0,
            ip,
            reason,
            message,
            terminating: desired == "shutdown" && phase == Phase::Running,
            template: Some(template_id(image.as_deref().unwrap_or_default(), &env)),
            image,
            ready_since,
        }
    }

    /// The container of a task, inspected, if it has one on this engine.
    async fn task_container(&self, task: &Value) -> Option<Value> {
        let id = text(task, "/Status/ContainerStatus/ContainerID")?;
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .ok()
            .map(|inspected| json_of(&inspected))
    }

    /// The live tasks of a service — wanted running, or running on their way out —
    /// as replicas.
    async fn live_replicas(&self, namespace: &str, service: &str) -> anyhow::Result<Vec<Replica>> {
        let hostnames = self.hostnames().await?;
        let mut replicas = Vec::new();
        for task in self.tasks(service).await? {
            let desired = text(&task, "/DesiredState").unwrap_or_default();
            let state_now = text(&task, "/Status/State").unwrap_or_default();
            let live = desired == "running"
                || desired == "ready"
                || (desired == "shutdown" && matches!(state_now, "running" | "starting"));
            if live {
                replicas.push(self.replica_of(service, namespace, &task, &hostnames).await);
            }
        }
        Ok(replicas)
    }

    /// Runs a request through the namespace's relay: `target` is `host:port/path`.
    async fn relay(
        &self,
        namespace: &str,
        target: &str,
        request: &HttpRequest,
    ) -> anyhow::Result<HttpResponse> {
        let state = self.namespace(namespace).await?;
        let encoded = plain_http::query_value(target);
        let through = HttpRequest {
            method: request.method.clone(),
            path: format!("/relay?method={}&target={encoded}", request.method),
            body: request.body.clone(),
        };
        let answer = plain_http::send(&format!("127.0.0.1:{}", state.relay_port), &through).await?;
        if answer.status == 502 && answer.body.contains("\"error\"") {
            bail!(
                "the relay in namespace {namespace} got no answer from {target}: {}",
                answer.body
            );
        }
        Ok(answer)
    }

    /// Creates a service for a workload of a namespace.
    async fn create_service(&self, namespace: &str, workload: &Workload<'_>) -> anyhow::Result<()> {
        self.create_service_as(namespace, workload, |_| {}).await
    }

    /// Creates a service for a workload of a namespace, its spec changed by `adjust` first.
    async fn create_service_as(
        &self,
        namespace: &str,
        workload: &Workload<'_>,
        adjust: impl FnOnce(&mut Value),
    ) -> anyhow::Result<()> {
        let state = self.namespace(namespace).await?;
        let mut spec = service_spec(workload, &self.run_id, namespace, &state.network)?;
        adjust(&mut spec);
        if let Some(check) = spec.pointer("/TaskTemplate/ContainerSpec/HealthCheck") {
            self.health_checks
                .lock()
                .await
                .insert(Self::service_name(namespace, workload.name), check.clone());
        }
        self.docker
            .create_service(as_written(spec)?, None)
            .await
            .map_err(docker_error(format!(
                "create service {}",
                Self::service_name(namespace, workload.name)
            )))?;
        Ok(())
    }

    /// The pod service of a namespace called `name`, if there is one.
    async fn pod_service(&self, namespace: &str, name: &str) -> anyhow::Result<Option<Value>> {
        let service = self.service(&Self::service_name(namespace, name)).await?;
        Ok(service.filter(|service| {
            text(
                service,
                &format!("/Spec/Labels/{}", KIND_LABEL.replace('/', "~1")),
            ) == Some("pod")
        }))
    }

    /// Finds a replica by name: a pod, or a task of a deployment (`service.slot.id`).
    async fn find_replica(&self, namespace: &str, name: &str) -> anyhow::Result<Option<Replica>> {
        if let Some(service) = self.pod_service(namespace, name).await? {
            return self.pod_replica(namespace, name, &service).await.map(Some);
        }
        let Some((service, _)) = name.split_once('.') else {
            return Ok(None);
        };
        if !service.starts_with(namespace) {
            return Ok(None);
        }
        let replicas = match self.live_replicas(namespace, service).await {
            Ok(replicas) => replicas,
            Err(_) => return Ok(None),
        };
        Ok(replicas.into_iter().find(|replica| replica.name == name))
    }

    /// A pod: its service's current task (the one wanted running, else the newest), with
    /// the tasks before it counted as restarts and the service's id as the pod's.
    async fn pod_replica(
        &self,
        namespace: &str,
        name: &str,
        service: &Value,
    ) -> anyhow::Result<Replica> {
        let service_name = Self::service_name(namespace, name);
        let tasks = self.tasks(&service_name).await?;
        let hostnames = self.hostnames().await?;
        let current = tasks
            .iter()
            .find(|task| matches!(text(task, "/DesiredState"), Some("running" | "ready")))
            .or_else(|| tasks.first());
        let Some(current) = current else {
            return Ok(Replica {
                name: name.to_owned(),
                id: text(service, "/ID").unwrap_or_default().to_owned(),
                phase: Phase::Pending,
                node: None,
                ready: false,
                restarts: 0,
                ip: None,
                reason: None,
                message: Some("no task yet".to_owned()),
                terminating: false,
                image: None,
                template: None,
                ready_since: None,
            });
        };
        let mut replica = self
            .replica_of(&service_name, namespace, current, &hostnames)
            .await;
        replica.name = name.to_owned();
        replica.id = text(service, "/ID").unwrap_or_default().to_owned();
        // Tasks that ran and ended before the current one: each is a restart of the pod.
        replica.restarts = u32::try_from(
            tasks
                .iter()
                .filter(|task| text(task, "/ID") != text(current, "/ID"))
                .filter(|task| {
                    task.pointer("/Status/ContainerStatus/ContainerID")
                        .is_some()
                })
                .count(),
        )
        .unwrap_or(u32::MAX);
        Ok(replica)
    }
}

/// Whether an inspected container is healthy, and since when (the first passing check the
/// engine still remembers).
fn health(container: &Value) -> (bool, Option<SystemTime>) {
    let healthy = text(container, "/State/Health/Status") == Some("healthy");
    let since = container
        .pointer("/State/Health/Log")
        .and_then(Value::as_array)
        .and_then(|log| {
            log.iter()
                .find(|entry| entry.get("ExitCode").and_then(Value::as_i64) == Some(0))
        })
        .and_then(|entry| text(entry, "/End"))
        .and_then(parse_time);
    (healthy, since.filter(|_| healthy))
}

/// The service spec (in the Engine API's own JSON) for a workload of a namespace, run by
/// the run `run_id` on the namespace's network.
fn service_spec(
    workload: &Workload<'_>,
    run_id: &str,
    namespace: &str,
    network: &str,
) -> anyhow::Result<Value> {
    let mut labels: serde_json::Map<String, Value> = workload
        .labels
        .iter()
        .map(|(key, value)| (key.clone(), json!(value)))
        .collect();
    for (key, value) in [
        (RUN_LABEL, run_id),
        (NAMESPACE_LABEL, namespace),
        (KIND_LABEL, workload.kind),
        (NAME_LABEL, workload.name),
    ] {
        labels.insert(key.to_owned(), json!(value));
    }
    let constraints: Vec<String> = workload
        .placement
        .node_selector
        .iter()
        .map(|(key, value)| format!("node.labels.{key}=={value}"))
        .collect();
    let mut reservations = serde_json::Map::new();
    if let Some(millicpu) = workload.requests.millicpu {
        reservations.insert("NanoCPUs".to_owned(), json!(millicpu * 1_000_000));
    }
    if let Some(bytes) = workload.requests.memory_bytes {
        reservations.insert("MemoryBytes".to_owned(), json!(bytes));
    }
    let condition = match workload.restart {
        RestartPolicy::Always => "any",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "none",
    };
    let mut container = json!({
        "Image": workload.image,
        "Env": workload.env,
        "Labels": { RUN_LABEL: run_id, NAMESPACE_LABEL: namespace },
    });
    if !workload.checks.is_empty() {
        container["HealthCheck"] = healthcheck(&workload.checks)?;
    }
    if let Some(seconds) = workload.grace_seconds {
        container["StopGracePeriod"] = json!(i64::from(seconds) * 1_000_000_000);
    }
    let mut spec = json!({
        "Name": SwarmDriver::service_name(namespace, workload.name),
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": { "Reservations": reservations },
            "RestartPolicy": { "Condition": condition },
            "Placement": { "Constraints": constraints },
            "Networks": [{ "Target": network, "Aliases": [workload.name] }],
        },
        "Mode": { "Replicated": { "Replicas": workload.replicas } },
        "EndpointSpec": { "Mode": "dnsrr" },
    });
    if let Some(update) = update_config(workload.rollout, workload.replicas)? {
        spec["UpdateConfig"] = update.clone();
        spec["RollbackConfig"] = update;
    }
    Ok(spec)
}

/// A task's state as a pod's phase.
fn task_phase(task: &Value) -> Phase {
    let desired = text(task, "/DesiredState").unwrap_or("running");
    match text(task, "/Status/State").unwrap_or("new") {
        "new" | "allocated" | "pending" | "assigned" | "accepted" | "preparing" | "ready" => {
            Phase::Pending
        }
        "starting" | "running" => Phase::Running,
        "complete" => Phase::Succeeded,
        // The node refused it; the swarm schedules it anew: still to be placed.
        "rejected" if desired != "shutdown" => Phase::Pending,
        "failed" | "rejected" => Phase::Failed,
        _ => Phase::Unknown,
    }
}

/// How a Swarm job has ended, from its tasks: complete once `completions` tasks have, failed
/// once none is left to run and a slot has failed more often than it may be tried again.
fn job_outcome(tasks: &[Value], completions: usize, retries: usize) -> Option<JobOutcome> {
    let phases: Vec<Phase> = tasks.iter().map(task_phase).collect();
    if phases.iter().filter(|p| **p == Phase::Succeeded).count() >= completions {
        return Some(JobOutcome::Complete);
    }
    if phases
        .iter()
        .any(|p| matches!(p, Phase::Pending | Phase::Running))
    {
        return None;
    }
    let mut failures: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for (task, phase) in tasks.iter().zip(&phases) {
        if *phase == Phase::Failed {
            let slot = task.pointer("/Slot").and_then(Value::as_i64).unwrap_or(0);
            let why = text(task, "/Status/Err").unwrap_or("failed");
            failures.entry(slot).or_default().push(why);
        }
    }
    failures
        .into_iter()
        .find(|(_, errors)| errors.len() > retries)
        .map(|(slot, errors)| {
            JobOutcome::Failed(format!(
                "every one of the {} tries of slot {slot} failed (last: {})",
                errors.len(),
                errors.first().copied().unwrap_or_default()
            ))
        })
}

/// A service spec as bollard's type — refused if that type would drop anything of it
/// (a field it names differently, say), so that the engine gets the spec as written.
fn as_written(spec: Value) -> anyhow::Result<SwarmServiceSpec> {
    let parsed: SwarmServiceSpec =
        serde_json::from_value(spec.clone()).context("the service spec does not parse")?;
    let back = json_of(&parsed);
    if !contains(&back, &spec) {
        bail!("the service spec would not reach the engine as written: sent {spec}, kept {back}");
    }
    Ok(parsed)
}

/// Whether `outer` holds everything of `inner` (objects key by key, the rest as equal).
fn contains(outer: &Value, inner: &Value) -> bool {
    match (outer, inner) {
        (Value::Object(outer), Value::Object(inner)) => inner.iter().all(|(key, value)| {
            value.is_null() || outer.get(key).is_some_and(|found| contains(found, value))
        }),
        (Value::Array(outer), Value::Array(inner)) => {
            outer.len() == inner.len() && outer.iter().zip(inner).all(|(o, i)| contains(o, i))
        }
        (Value::Number(outer), Value::Number(inner)) => outer.as_f64() == inner.as_f64(),
        (outer, inner) => outer == inner,
    }
}

/// A time the engine wrote (RFC 3339).
fn parse_time(time: &str) -> Option<SystemTime> {
    let at: k8s_openapi::jiff::Timestamp = time.parse().ok()?;
    let millis = u64::try_from(at.as_millisecond()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(millis))
}

/// When a task reached its state.
fn task_time(task: &Value) -> Option<SystemTime> {
    text(task, "/Status/Timestamp").and_then(parse_time)
}

/// A short name for a task's template: tasks of one spec share it.
fn template_id(image: &str, env: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in image.bytes().chain(env.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", hash >> 32)
}

/// The container health check for the kit's checks of a container, run by the probe
/// inside the container. Swarm has one health state where Kubernetes has two checks: an
/// unhealthy task is both taken out of the network's DNS and replaced, so a liveness and a
/// readiness check become one command that passes only when both pass.
fn healthcheck(checks: &[&HealthCheck]) -> anyhow::Result<Value> {
    let mut test = vec!["CMD".to_owned()];
    let mut targets = Vec::new();
    for check in checks {
        match &check.action {
            CheckAction::HttpGet { port, path } => {
                targets.push(format!("{port}/{}", path.trim_start_matches('/')));
            }
            CheckAction::Exec { command } if checks.len() == 1 => {
                test.extend(command.iter().cloned())
            }
            CheckAction::Exec { .. } => bail!(
                "a command check cannot be combined with another: Swarm runs one health check per container"
            ),
            CheckAction::TcpConnect { port } => bail!(
                "a TCP check of port {port} has no Swarm equivalent: a health check is a command run in the container"
            ),
        }
    }
    if !targets.is_empty() {
        test.extend(["/probe".to_owned(), "check".to_owned()]);
        test.extend(targets);
    }
    let period = checks
        .iter()
        .map(|check| check.period_seconds)
        .min()
        .unwrap_or(1)
        .max(1);
    let retries = checks
        .iter()
        .map(|check| check.failure_threshold)
        .min()
        .unwrap_or(1)
        .max(1);
    let nanos = |duration: Duration| i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
    Ok(json!({
        "Test": test,
        "Interval": nanos(Duration::from_secs(u64::from(period))),
        "Timeout": nanos(CHECK_ANSWER),
        "Retries": retries,
    }))
}

/// The update (and rollback) configuration for the kit's rollout settings; `None` keeps
/// Swarm's defaults.
fn update_config(rollout: &Rollout, replicas: u32) -> anyhow::Result<Option<Value>> {
    if let Some(limit) = rollout.revision_history_limit {
        bail!(
            "Swarm keeps only a service's current and previous spec: a history of {limit} revisions cannot be asked for"
        );
    }
    let resolve = |amount: Option<Amount>, round_up: bool| -> u32 {
        match amount {
            None => 0,
            Some(Amount::Count(count)) => count,
            Some(Amount::Percent(percent)) => {
                let scaled = u64::from(replicas) * u64::from(percent);
                let whole = if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                };
                u32::try_from(whole).unwrap_or(u32::MAX)
            }
        }
    };
    let mut config = match rollout.strategy {
        None if rollout.min_ready_seconds.is_none() => return Ok(None),
        None => json!({}),
        Some(Strategy::Recreate) => json!({ "Parallelism": 0, "Order": "stop-first" }),
        Some(Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        }) => {
            // Kubernetes' defaults: 25 % each.
            let surge = resolve(max_surge.or(Some(Amount::Percent(25))), true);
            let unavailable = resolve(max_unavailable.or(Some(Amount::Percent(25))), false);
            match (surge, unavailable) {
                (0, 0) => bail!("maxSurge and maxUnavailable cannot both be 0"),
                (0, unavailable) => json!({ "Parallelism": unavailable, "Order": "stop-first" }),
                (surge, _) => json!({ "Parallelism": surge, "Order": "start-first" }),
            }
        }
    };
    config["FailureAction"] = json!("pause");
    if let Some(seconds) = rollout.min_ready_seconds {
        config["Monitor"] = json!(i64::from(seconds) * 1_000_000_000);
    }
    Ok(Some(config))
}

/// Sets `NAME=value` in a container spec's environment, replacing an earlier value.
fn set_env_var(spec: &mut Value, variable: &str, value: &str) {
    let env = &mut spec["TaskTemplate"]["ContainerSpec"]["Env"];
    let mut vars: Vec<String> = env
        .as_array()
        .map(|vars| {
            vars.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    vars.retain(|var| !var.starts_with(&format!("{variable}=")));
    vars.push(format!("{variable}={value}"));
    *env = json!(vars);
}

impl Driver for SwarmDriver {
    fn name(&self) -> &str {
        "swarm"
    }

    fn describe(&self) -> String {
        format!(
            "Docker Swarm on the engine at {}: {} node(s); {}",
            self.host,
            self.nodes,
            if self.leave_at_end {
                "the kit put the engine in swarm mode for the run (127.0.0.1) and leaves the swarm after it"
            } else {
                "a swarm the engine was in already, left as it was found"
            }
        )
    }

    fn version(&self) -> DriverFuture<'_, String> {
        async move {
            Ok(format!(
                "Docker Engine {} in swarm mode",
                self.engine_version
            ))
        }
        .boxed()
    }

    fn reach(&self) -> String {
        "services by DNS round robin (endpoint mode dnsrr) on the scenario's overlay network, \
         from a relay container of the probe image on that network whose port is published \
         on 127.0.0.1 — this kernel has no IPVS, so the ingress routing mesh and service \
         virtual IPs do not answer; replicas at their overlay address through the same relay"
            .to_owned()
    }

    /// Where Swarm really behaves differently from what a feature says; each failure's
    /// step error is the evidence, seen in the run.
    fn differences(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "The containers of a pod share one address and one volume",
                "Swarm has no pods: a task runs exactly one container, and containers of different tasks share neither an address nor a volume, so the pod cannot even be described to it.",
            ),
            (
                "A container that fails its liveness check is restarted in place",
                "Swarm does not restart an unhealthy container in place: it shuts the task down and starts a new task, with a new container at a new address (the error shows the address before and after).",
            ),
            (
                "A pod that fails its readiness check is not ready, but keeps running",
                "Swarm has one health state where Kubernetes has liveness and readiness: a task that fails its check is taken out of the network's DNS and then replaced, so a replica cannot stay running while out of service.",
            ),
            (
                "A node refuses a privileged pod and waits for a missing image, while other pods keep running",
                "A Swarm service has no way to ask for a privileged container, so there is nothing for a node to refuse.",
            ),
            (
                "A rolling update under load loses no request, and undo brings every replica back to v1",
                "Swarm keeps no numbered history of a service, only its current spec and the one before (PreviousSpec), so there is no revision list to show; the update itself and the rollback to the previous spec are not where it fails.",
            ),
            (
                "Undo to a named revision",
                "Swarm keeps no numbered history of a service and rolls back to the previous spec only: there is no revision 1 to go back to.",
            ),
            (
                "Only revisionHistoryLimit old revisions are kept",
                "Swarm keeps exactly one previous spec of a service; a history limit cannot be asked for.",
            ),
            (
                "Scaling in the middle of a rollout scales the old and the new version in proportion",
                "Swarm pauses an update at the first failed task and scales a service by adding or removing tasks; it does not keep the old and the new version at sizes proportional to each other.",
            ),
            (
                "A replica whose container is killed is restarted in place",
                "Swarm replaces a task whose container died with a new task (a new id and container) in the same slot after its restart delay; the killed replica itself never runs again.",
            ),
            (
                "Recreate never serves two versions at once",
                "Swarm's nearest to Recreate is an update that stops first, every slot at once, but each slot waits only for its own old task to stop (swarmkit's updater delays a new task's start on the old task of the same slot): a slot whose old task stopped first starts the new version while another slot's old task is still stopping. It depends on timing, so this scenario passes in most runs; under load the monitor sees both versions running.",
            ),
            (
                "An update to a broken image stalls with the old replicas serving, reports it, and undo recovers",
                "Swarm pauses an update when a new task fails, but tasks the updater had already replaced before the failure showed stay on the broken image: fewer replicas serve than asked for (it depends on timing, so this scenario passes in some runs).",
            ),
        ]
    }

    fn create_namespace<'a>(&'a self, namespace: &'a str, run_id: &'a str) -> DriverFuture<'a, ()> {
        async move {
            let labels = HashMap::from([
                (RUN_LABEL.to_owned(), run_id.to_owned()),
                (NAMESPACE_LABEL.to_owned(), namespace.to_owned()),
            ]);
            let network = self
                .docker
                .create_network(NetworkCreateRequest {
                    name: namespace.to_owned(),
                    driver: Some("overlay".to_owned()),
                    attachable: Some(true),
                    labels: Some(labels.clone()),
                    ..Default::default()
                })
                .await
                .map_err(docker_error(format!(
                    "create the overlay network {namespace}"
                )))?
                .id;
            let ports = HashMap::from([(
                format!("{PROBE_PORT}/tcp"),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    host_port: Some(String::new()),
                }]),
            )]);
            let body = ContainerCreateBody {
                image: Some(crate::images::local_probe("v1")),
                env: Some(vec!["POD_NAME=relay".to_owned()]),
                labels: Some(labels),
                host_config: Some(HostConfig {
                    network_mode: Some(namespace.to_owned()),
                    port_bindings: Some(ports),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let relay_name = format!("{namespace}-relay");
            let relay = self
                .docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(relay_name.clone()),
                        ..Default::default()
                    }),
                    body,
                )
                .await
                .map_err(docker_error(format!("create the relay {relay_name}")))?
                .id;
            let mut state = Namespace {
                network: network.clone(),
                relay: relay.clone(),
                relay_port: 0,
                services: BTreeMap::new(),
            };
            // Known from now on, so that a failure below is cleaned up with the namespace.
            self.namespaces
                .lock()
                .await
                .insert(namespace.to_owned(), state.clone());
            self.docker
                .start_container(&relay, None)
                .await
                .map_err(docker_error(format!("start the relay {relay_name}")))?;
            let inspected = json_of(
                &self
                    .docker
                    .inspect_container(&relay, None::<InspectContainerOptions>)
                    .await
                    .map_err(docker_error(format!("inspect the relay {relay_name}")))?,
            );
            let port = inspected
                .pointer(&format!("/NetworkSettings/Ports/{PROBE_PORT}~1tcp"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find_map(|binding| text(binding, "/HostPort").and_then(|port| port.parse().ok()))
                .ok_or_else(|| anyhow!("the relay {relay_name} has no published port"))?;
            state.relay_port = port;
            self.namespaces
                .lock()
                .await
                .insert(namespace.to_owned(), state);
            let deadline = Instant::now() + RELAY_TIMEOUT;
            loop {
                let answer =
                    plain_http::send(&format!("127.0.0.1:{port}"), &HttpRequest::get("/")).await;
                match answer {
                    Ok(answer) if answer.body.contains("\"relay\"") => return Ok(()),
                    _ if Instant::now() < deadline => tokio::time::sleep(POLL).await,
                    other => bail!(
                        "the relay {relay_name} does not answer on 127.0.0.1:{port}: {other:?}"
                    ),
                }
            }
        }
        .boxed()
    }

    fn delete_namespace<'a>(&'a self, namespace: &'a str) -> DriverFuture<'a, ()> {
        async move {
            let state = self.namespaces.lock().await.remove(namespace);
            self.reap_namespace(namespace).await?;
            if let Some(state) = state {
                self.remove_container(&state.relay).await?;
                self.remove_network(&state.network).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn deploy<'a>(&'a self, namespace: &'a str, spec: &'a DeploymentSpec) -> DriverFuture<'a, ()> {
        async move {
            let workload = Workload {
                name: &spec.name,
                kind: "deployment",
                image: &spec.image,
                env: std::iter::once("POD_NAME={{.Task.Name}}".to_owned())
                    .chain(spec.env.iter().map(|(key, value)| format!("{key}={value}")))
                    .collect(),
                replicas: spec.replicas,
                labels: &spec.labels,
                placement: &spec.placement,
                requests: &spec.requests,
                checks: spec.readiness.iter().collect(),
                restart: RestartPolicy::Always,
                rollout: &spec.rollout,
                grace_seconds: spec.termination_grace_seconds,
            };
            self.create_service(namespace, &workload).await
        }
        .boxed()
    }

    fn read_deployment<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Option<DeploymentSpec>> {
        async move {
            let Some(service) = self.service(&Self::service_name(namespace, name)).await? else {
                return Ok(None);
            };
            let spec = service.get("Spec").cloned().unwrap_or_default();
            let labels = spec
                .get("Labels")
                .and_then(Value::as_object)
                .map(|labels| {
                    labels
                        .iter()
                        .filter(|(key, _)| !key.starts_with("shipshape.conformance/"))
                        .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            let replicas = spec
                .pointer("/Mode/Replicated/Replicas")
                .and_then(Value::as_u64)
                .and_then(|replicas| u32::try_from(replicas).ok())
                .unwrap_or(1);
            let min_ready = spec
                .pointer("/UpdateConfig/Monitor")
                .and_then(Value::as_u64)
                .map(|nanos| u32::try_from(nanos / 1_000_000_000).unwrap_or(u32::MAX));
            Ok(Some(DeploymentSpec {
                name: name.to_owned(),
                image: text(&spec, "/TaskTemplate/ContainerSpec/Image")
                    .map(|image| image.split('@').next().unwrap_or(image).to_owned())
                    .unwrap_or_default(),
                replicas,
                labels,
                rollout: Rollout {
                    min_ready_seconds: min_ready,
                    ..Rollout::default()
                },
                ..DeploymentSpec::default()
            }))
        }
        .boxed()
    }

    fn delete_deployment<'a>(&'a self, namespace: &'a str, name: &'a str) -> DriverFuture<'a, ()> {
        async move {
            match self
                .docker
                .delete_service(&Self::service_name(namespace, name))
                .await
            {
                Ok(()) => Ok(()),
                Err(error) if not_found(&error) => Ok(()),
                Err(error) => Err(docker_error(format!(
                    "remove deployment {namespace}/{name}"
                ))(error)),
            }
        }
        .boxed()
    }

    fn scale<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        replicas: u32,
    ) -> DriverFuture<'a, ()> {
        async move {
            self.update_service(&Self::service_name(namespace, name), false, |spec| {
                spec["Mode"]["Replicated"]["Replicas"] = json!(replicas);
                Ok(())
            })
            .await
        }
        .boxed()
    }

    fn update_image<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        image: &'a str,
    ) -> DriverFuture<'a, ()> {
        async move {
            self.update_service(&Self::service_name(namespace, name), false, |spec| {
                spec["TaskTemplate"]["ContainerSpec"]["Image"] = json!(image);
                Ok(())
            })
            .await
        }
        .boxed()
    }

    fn rollout_status<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, RolloutStatus> {
        async move {
            let service_name = Self::service_name(namespace, name);
            let service = self
                .service(&service_name)
                .await?
                .ok_or_else(|| anyhow!("deployment {namespace}/{name} does not exist"))?;
            let update = text(&service, "/UpdateStatus/State").unwrap_or_default();
            let message = text(&service, "/UpdateStatus/Message").unwrap_or_default();
            match update {
                "paused" | "rollback_paused" => {
                    return Ok(RolloutStatus::Stalled(format!("the update is {update}: {message}")));
                }
                "updating" | "rollback_started" => {
                    return Ok(RolloutStatus::InProgress(format!("the update is {update}: {message}")));
                }
                _ => {}
            }
            let spec = service.get("Spec").cloned().unwrap_or_default();
            let wanted = spec
                .pointer("/Mode/Replicated/Replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            let current = template_id(
                text(&spec, "/TaskTemplate/ContainerSpec/Image")
                    .map(|image| image.split('@').next().unwrap_or(image))
                    .unwrap_or_default(),
                &spec
                    .pointer("/TaskTemplate/ContainerSpec/Env")
                    .map(Value::to_string)
                    .unwrap_or_default(),
            );
            let replicas = self.live_replicas(namespace, &service_name).await?;
            let updated = replicas
                .iter()
                .filter(|replica| replica.template.as_deref() == Some(current.as_str()) && !replica.terminating)
                .count() as u64;
            let ready = replicas
                .iter()
                .filter(|replica| {
                    replica.template.as_deref() == Some(current.as_str()) && replica.ready && !replica.terminating
                })
                .count() as u64;
            let old = replicas.len() as u64 - updated;
            Ok(if updated == wanted && ready == wanted && old == 0 {
                RolloutStatus::Complete
            } else {
                RolloutStatus::InProgress(format!(
                    "{updated} of {wanted} tasks run the current spec, {ready} of them ready; {old} others still run"
                ))
            })
        }
        .boxed()
    }

    fn history<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Vec<RevisionEntry>> {
        async move {
            bail!(
                "Swarm keeps no numbered history of service {}: only its current spec and the one before",
                Self::service_name(namespace, name)
            )
        }
        .boxed()
    }

    fn set_env<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        variable: &'a str,
        value: &'a str,
    ) -> DriverFuture<'a, ()> {
        async move {
            self.update_service(&Self::service_name(namespace, name), false, |spec| {
                set_env_var(spec, variable, value);
                Ok(())
            })
            .await
        }
        .boxed()
    }

    fn roll_back<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        to: Revision,
    ) -> DriverFuture<'a, ()> {
        async move {
            if let Revision::Number(number) = to {
                bail!(
                    "Swarm rolls a service back to its previous spec only, not to revision {number}"
                );
            }
            self.update_service(&Self::service_name(namespace, name), true, |_| Ok(()))
                .await
        }
        .boxed()
    }

    /// Swarm needs nothing to expose a service on its network: its tasks answer on the
    /// network by the deployment's alias, round robin by DNS. The driver notes which
    /// deployment and port the service stands for.
    fn expose<'a>(&'a self, namespace: &'a str, service: &'a ServiceSpec) -> DriverFuture<'a, ()> {
        async move {
            if self
                .service(&Self::service_name(namespace, &service.deployment))
                .await?
                .is_none()
            {
                bail!(
                    "deployment {namespace}/{} does not exist",
                    service.deployment
                );
            }
            let mut namespaces = self.namespaces.lock().await;
            let state = namespaces
                .get_mut(namespace)
                .ok_or_else(|| anyhow!("namespace {namespace} was not created by this run"))?;
            state.services.insert(
                service.name.clone(),
                (service.deployment.clone(), service.target_port),
            );
            Ok(())
        }
        .boxed()
    }

    fn list_replicas<'a>(
        &'a self,
        namespace: &'a str,
        deployment: &'a str,
    ) -> DriverFuture<'a, Vec<Replica>> {
        async move {
            let service = Self::service_name(namespace, deployment);
            if self.service(&service).await?.is_none() {
                bail!("deployment {namespace}/{deployment} does not exist");
            }
            self.live_replicas(namespace, &service).await
        }
        .boxed()
    }

    fn reach_service<'a>(
        &'a self,
        namespace: &'a str,
        service: &'a str,
        path: &'a str,
    ) -> DriverFuture<'a, String> {
        async move {
            let state = self.namespace(namespace).await?;
            let (deployment, port) = state
                .services
                .get(service)
                .cloned()
                .ok_or_else(|| anyhow!("service {namespace}/{service} does not exist"))?;
            let answer = self
                .relay(
                    namespace,
                    &format!("{deployment}:{port}{path}"),
                    &HttpRequest::get(path),
                )
                .await
                .and_then(HttpResponse::succeeded)
                .with_context(|| {
                    format!("service {namespace}/{service} did not answer GET {path}")
                })?;
            Ok(answer.body)
        }
        .boxed()
    }

    fn supports(&self, fault: &Fault) -> Support {
        match fault {
            Fault::KillContainer { .. } => Support::Yes,
            Fault::DeleteReplica { .. } => Support::No(
                "Swarm's API has no way to delete one task of a service; removing its container is a killed container, not a deleted replica"
                    .to_owned(),
            ),
            Fault::RestartControlPlane
            | Fault::LoseControlPlaneLeader
            | Fault::LoseControlPlaneMemberAndData
            | Fault::PartitionControlPlaneLeader
            | Fault::HealControlPlane => Support::No(
                "the swarm's manager is the Docker engine the kit itself runs on".to_owned(),
            ),
            Fault::LoseNode { .. } | Fault::PartitionNode { .. } | Fault::Heal | Fault::RestartNode { .. } => {
                Support::No(format!(
                    "the swarm's only node is the engine the kit runs on ({} node)",
                    self.nodes
                ))
            }
        }
    }

    fn inject<'a>(&'a self, fault: &'a Fault) -> DriverFuture<'a, ()> {
        async move {
            let Fault::KillContainer { namespace, replica } = fault else {
                bail!("the swarm driver cannot {fault}");
            };
            let found = self
                .find_replica(namespace, replica)
                .await?
                .ok_or_else(|| anyhow!("replica {namespace}/{replica} does not exist"))?;
            let service = replica.split('.').next().unwrap_or_default();
            let task = self
                .tasks(service)
                .await?
                .into_iter()
                .find(|task| text(task, "/ID") == Some(found.id.as_str()))
                .ok_or_else(|| anyhow!("replica {namespace}/{replica} has no task"))?;
            let container = text(&task, "/Status/ContainerStatus/ContainerID")
                .ok_or_else(|| anyhow!("replica {namespace}/{replica} has no container"))?;
            self.docker
                .kill_container(
                    container,
                    None::<bollard::query_parameters::KillContainerOptions>,
                )
                .await
                .map_err(docker_error(format!(
                    "kill the container of replica {namespace}/{replica}"
                )))
        }
        .boxed()
    }

    fn has(&self, capability: Capability) -> Support {
        match capability {
            Capability::MultiNode => {
                if self.nodes >= MULTI_NODE {
                    Support::Yes
                } else {
                    Support::No(format!(
                        "the swarm has {} node(s) (one engine); these scenarios need {MULTI_NODE}",
                        self.nodes
                    ))
                }
            }
            Capability::AddNode => Support::No(
                "the kit cannot add machines to a swarm: a node is another Docker engine"
                    .to_owned(),
            ),
            Capability::TaintNode => Support::No("Swarm has no taints".to_owned()),
            Capability::ScheduledJobs => Support::No(
                "Swarm has no scheduled jobs: nothing starts a job at set times".to_owned(),
            ),
            Capability::StatefulSets => Support::No(
                "Swarm has no stateful sets: a replicated service's tasks keep slot numbers, \
                 but Swarm starts and updates them with no order among them"
                    .to_owned(),
            ),
            Capability::Autoscaling => Support::No(
                "Swarm has no autoscaler: a service runs the replicas it is told to, whatever \
                 its tasks use"
                    .to_owned(),
            ),
            Capability::LabelNode
            | Capability::Pods
            | Capability::ReachReplica
            | Capability::DrainNode
            | Capability::Jobs
            | Capability::Daemons => Support::Yes,
        }
    }

    fn list_nodes(&self) -> DriverFuture<'_, Vec<NodeStatus>> {
        async move {
            Ok(self
                .nodes_json()
                .await?
                .iter()
                .map(|node| NodeStatus {
                    name: text(node, "/Description/Hostname")
                        .unwrap_or_default()
                        .to_owned(),
                    ready: text(node, "/Status/State") == Some("ready"),
                    schedulable: text(node, "/Spec/Availability") == Some("active"),
                    labels: node
                        .pointer("/Spec/Labels")
                        .and_then(Value::as_object)
                        .map(|labels| {
                            labels
                                .iter()
                                .filter(|(key, _)| !key.starts_with(NODE_MARK))
                                .filter_map(|(key, value)| {
                                    Some((key.clone(), value.as_str()?.to_owned()))
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    taints: Vec::new(),
                    allocatable: Resources {
                        millicpu: node
                            .pointer("/Description/Resources/NanoCPUs")
                            .and_then(Value::as_u64)
                            .map(|nanos| nanos / 1_000_000),
                        memory_bytes: node
                            .pointer("/Description/Resources/MemoryBytes")
                            .and_then(Value::as_u64),
                    },
                })
                .collect())
        }
        .boxed()
    }

    fn label_node<'a>(
        &'a self,
        node: &'a str,
        key: &'a str,
        value: Option<&'a str>,
    ) -> DriverFuture<'a, ()> {
        async move {
            let run = self.run_id.clone();
            self.update_node(node, |spec| {
                let labels = spec["Labels"]
                    .as_object_mut()
                    .ok_or_else(|| anyhow!("node {node} has no labels"))?;
                match value {
                    Some(value) => {
                        labels.insert(key.to_owned(), json!(value));
                        labels.insert(format!("{NODE_MARK}{key}"), json!(run));
                    }
                    None => {
                        labels.remove(key);
                        labels.remove(&format!("{NODE_MARK}{key}"));
                    }
                }
                Ok(())
            })
            .await
        }
        .boxed()
    }

    fn cordon_node<'a>(&'a self, node: &'a str, cordoned: bool) -> DriverFuture<'a, ()> {
        self.set_availability(node, if cordoned { "pause" } else { "active" })
            .boxed()
    }

    fn drain_node<'a>(&'a self, node: &'a str) -> DriverFuture<'a, ()> {
        self.set_availability(node, "drain").boxed()
    }

    fn run_pod<'a>(&'a self, namespace: &'a str, pod: &'a PodSpec) -> DriverFuture<'a, Admission> {
        async move {
            let [container] = pod.containers.as_slice() else {
                bail!(
                    "Swarm has no pods of several containers sharing an address and a volume: a task runs one container (pod {} has {})",
                    pod.name,
                    pod.containers.len()
                );
            };
            if container.privileged {
                bail!("a Swarm service cannot ask for a privileged container (pod {})", pod.name);
            }
            let mut env: Vec<String> = container
                .env
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            env.push(format!("POD_NAME={}", pod.name));
            if !container.command.is_empty() || !container.args.is_empty() {
                bail!("the swarm driver does not set a command or arguments (pod {})", pod.name);
            }
            let rollout = Rollout::default();
            let workload = Workload {
                name: &pod.name,
                kind: "pod",
                image: &container.image,
                env,
                replicas: 1,
                labels: &pod.labels,
                placement: &pod.placement,
                requests: &container.requests,
                checks: container
                    .liveness
                    .iter()
                    .chain(container.readiness.iter())
                    .collect(),
                restart: pod.restart_policy,
                rollout: &rollout,
                grace_seconds: pod.termination_grace_seconds,
            };
            self.create_service(namespace, &workload).await?;
            Ok(Admission::Accepted)
        }
        .boxed()
    }

    fn read_replica<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Option<Replica>> {
        self.find_replica(namespace, name).boxed()
    }

    fn request_replica<'a>(
        &'a self,
        namespace: &'a str,
        replica: &'a str,
        port: u16,
        request: &'a HttpRequest,
    ) -> DriverFuture<'a, HttpResponse> {
        async move {
            let found = self
                .find_replica(namespace, replica)
                .await?
                .ok_or_else(|| anyhow!("replica {namespace}/{replica} does not exist"))?;
            let ip = found
                .ip
                .ok_or_else(|| anyhow!("replica {namespace}/{replica} has no address yet"))?;
            self.relay(namespace, &format!("{ip}:{port}{}", request.path), request)
                .await
        }
        .boxed()
    }

    fn run_daemon<'a>(
        &'a self,
        namespace: &'a str,
        daemon: &'a DaemonSpec,
    ) -> DriverFuture<'a, ()> {
        async move {
            let no_labels = BTreeMap::new();
            let placement = Placement {
                node_selector: daemon.node_selector.clone(),
                ..Placement::default()
            };
            let workload = Workload {
                name: &daemon.name,
                kind: "daemon",
                image: &daemon.image,
                env: Vec::new(),
                replicas: 0,
                labels: &no_labels,
                placement: &placement,
                requests: &Resources::default(),
                checks: Vec::new(),
                restart: RestartPolicy::Always,
                rollout: &Rollout::default(),
                grace_seconds: None,
            };
            self.create_service_as(namespace, &workload, |spec| {
                spec["Mode"] = json!({"Global": {}});
            })
            .await
        }
        .boxed()
    }

    fn set_daemon_image<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        image: &'a str,
    ) -> DriverFuture<'a, ()> {
        self.update_image(namespace, name, image)
    }

    fn list_daemon_pods<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Vec<Replica>> {
        async move {
            self.live_replicas(namespace, &Self::service_name(namespace, name))
                .await
        }
        .boxed()
    }

    fn run_job<'a>(&'a self, namespace: &'a str, job: &'a JobSpec) -> DriverFuture<'a, ()> {
        async move {
            let no_labels = BTreeMap::new();
            let workload = Workload {
                name: &job.name,
                kind: "job",
                image: &job.image,
                env: job.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                replicas: job.completions,
                labels: &no_labels,
                placement: &Placement::default(),
                requests: &Resources::default(),
                checks: Vec::new(),
                restart: RestartPolicy::OnFailure,
                rollout: &Rollout::default(),
                grace_seconds: None,
            };
            self.create_service_as(namespace, &workload, |spec| {
                spec["Mode"] = json!({"ReplicatedJob": {
                    "MaxConcurrent": job.parallelism,
                    "TotalCompletions": job.completions,
                }});
                // Swarm reads 0 attempts as "no limit": a job tried no more runs once.
                spec["TaskTemplate"]["RestartPolicy"] = if job.retries == 0 {
                    json!({"Condition": "none"})
                } else {
                    json!({"Condition": "on-failure", "MaxAttempts": job.retries})
                };
            })
            .await
        }
        .boxed()
    }

    fn read_job<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Option<JobState>> {
        async move {
            let service_name = Self::service_name(namespace, name);
            let Some(service) = self.service(&service_name).await? else {
                return Ok(None);
            };
            let number = |pointer: &str| {
                service
                    .pointer(pointer)
                    .and_then(Value::as_u64)
                    .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
            };
            let completions = number("/Spec/Mode/ReplicatedJob/TotalCompletions");
            let retries = number("/Spec/TaskTemplate/RestartPolicy/MaxAttempts");
            let tasks = self.tasks(&service_name).await?;
            let mut pods = Vec::new();
            for task in &tasks {
                let container = self.task_container(task).await;
                let time = |pointer: &str| {
                    container
                        .as_ref()
                        .and_then(|c| text(c, pointer))
                        .filter(|t| !t.starts_with("0001-"))
                        .and_then(parse_time)
                };
                let slot = task.pointer("/Slot").and_then(Value::as_i64).unwrap_or(0);
                pods.push(JobPod {
                    name: format!(
                        "{service_name}.{slot}.{}",
                        text(task, "/ID").unwrap_or_default()
                    ),
                    phase: task_phase(task),
                    started: time("/State/StartedAt"),
                    finished: time("/State/FinishedAt"),
                });
            }
            Ok(Some(JobState {
                outcome: job_outcome(&tasks, completions, retries),
                pods,
            }))
        }
        .boxed()
    }

    fn shut_down(&self) -> DriverFuture<'_, ()> {
        async move {
            let run = self.run_id.clone();
            self.namespaces.lock().await.clear();
            self.reap(|other| other == run).await?;
            if self.leave_at_end {
                self.docker
                    .leave_swarm(Some(LeaveSwarmOptions { force: true }))
                    .await
                    .map_err(docker_error("leave the swarm the kit made"))?;
                // Leaving keeps the bridge the swarm made for its containers' way out.
                if let Err(error) = self.docker.remove_network("docker_gwbridge").await
                    && !not_found(&error)
                {
                    tracing::debug!(error = %error, "docker_gwbridge stays");
                }
            }
            Ok(())
        }
        .boxed()
    }
}

impl SwarmDriver {
    /// Sets a node's availability (`active`, `pause`, `drain`), marking it with the run.
    async fn set_availability(&self, node: &str, availability: &str) -> anyhow::Result<()> {
        let run = self.run_id.clone();
        self.update_node(node, |spec| {
            spec["Availability"] = json!(availability);
            if let Some(labels) = spec["Labels"].as_object_mut() {
                let mark = format!("{NODE_MARK}availability");
                if availability == "active" {
                    labels.remove(&mark);
                } else {
                    labels.insert(mark, json!(run));
                }
            }
            Ok(())
        })
        .await
    }

    /// Removes the services of a namespace and waits until their containers are gone (the
    /// network cannot go before them).
    async fn reap_namespace(&self, namespace: &str) -> anyhow::Result<()> {
        let filters = label_filters(&[(NAMESPACE_LABEL, namespace)]);
        let services = self
            .docker
            .list_services(Some(ListServicesOptions {
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await
            .map_err(docker_error("list services"))?;
        for service in services.iter().map(json_of) {
            if let Some(id) = text(&service, "/ID")
                && let Err(error) = self.docker.delete_service(id).await
                && !not_found(&error)
            {
                return Err(docker_error(format!("remove service {id}"))(error));
            }
        }
        let deadline = Instant::now() + CLEAN_UP_TIMEOUT;
        loop {
            let left: Vec<Value> = self
                .docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters.clone()),
                    ..Default::default()
                }))
                .await
                .map_err(docker_error("list containers"))?
                .iter()
                .map(json_of)
                .filter(|container| {
                    text(container, "/Names/0").is_none_or(|name| !name.ends_with("-relay"))
                })
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            // Swarm stops and removes the running ones itself; the containers of tasks
            // that had already ended (a job's, say) it keeps as history for a while, and
            // they are removed at once. Any left at the deadline are removed by force.
            let late = Instant::now() >= deadline;
            for container in &left {
                if let Some(id) = text(container, "/Id")
                    && (late || text(container, "/State") != Some("running"))
                {
                    self.remove_container(id).await?;
                }
            }
            if late {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_settings_become_update_configs() {
        let rolling = |surge, unavailable| Rollout {
            strategy: Some(Strategy::RollingUpdate {
                max_surge: Some(surge),
                max_unavailable: Some(unavailable),
            }),
            ..Rollout::default()
        };
        let config = update_config(&rolling(Amount::Count(1), Amount::Count(1)), 3)
            .expect("config")
            .expect("some");
        assert_eq!(config["Order"], "start-first");
        assert_eq!(config["Parallelism"], 1);
        assert_eq!(config["FailureAction"], "pause");
        let config = update_config(&rolling(Amount::Count(0), Amount::Percent(50)), 4)
            .expect("config")
            .expect("some");
        assert_eq!(config["Order"], "stop-first");
        assert_eq!(config["Parallelism"], 2);
        assert!(update_config(&rolling(Amount::Count(0), Amount::Count(0)), 3).is_err());
        let recreate = Rollout {
            strategy: Some(Strategy::Recreate),
            min_ready_seconds: Some(2),
            ..Rollout::default()
        };
        let config = update_config(&recreate, 3).expect("config").expect("some");
        assert_eq!(config["Parallelism"], 0);
        assert_eq!(config["Monitor"], 2_000_000_000_i64);
        assert_eq!(update_config(&Rollout::default(), 3).expect("config"), None);
        let history = Rollout {
            revision_history_limit: Some(2),
            ..Rollout::default()
        };
        assert!(update_config(&history, 3).is_err());
    }

    #[test]
    fn checks_run_the_probe_in_the_container() {
        let check = HealthCheck {
            action: CheckAction::HttpGet {
                port: 8080,
                path: "/ready".to_owned(),
            },
            period_seconds: 1,
            failure_threshold: 3,
        };
        let live = HealthCheck {
            action: CheckAction::HttpGet {
                port: 8080,
                path: "/healthz".to_owned(),
            },
            period_seconds: 2,
            failure_threshold: 1,
        };
        let config = healthcheck(&[&check]).expect("check");
        assert_eq!(
            config["Test"],
            json!(["CMD", "/probe", "check", "8080/ready"])
        );
        assert_eq!(config["Retries"], 3);
        assert_eq!(config["Interval"], 1_000_000_000_i64);
        let both = healthcheck(&[&live, &check]).expect("checks");
        assert_eq!(
            both["Test"],
            json!(["CMD", "/probe", "check", "8080/healthz", "8080/ready"])
        );
        assert_eq!(both["Retries"], 1);
        let tcp = HealthCheck {
            action: CheckAction::TcpConnect { port: 8080 },
            ..check
        };
        assert!(healthcheck(&[&tcp]).is_err());
    }

    #[test]
    fn a_service_spec_reaches_the_engine_as_written() {
        let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        let placement = Placement {
            node_selector: BTreeMap::from([("disk".to_owned(), "ssd".to_owned())]),
            ..Placement::default()
        };
        let requests = Resources {
            millicpu: Some(250),
            memory_bytes: Some(1 << 20),
        };
        let check = HealthCheck {
            action: CheckAction::HttpGet {
                port: 8080,
                path: "/ready".to_owned(),
            },
            period_seconds: 1,
            failure_threshold: 3,
        };
        let rollout = Rollout {
            strategy: Some(Strategy::RollingUpdate {
                max_surge: Some(Amount::Count(1)),
                max_unavailable: Some(Amount::Count(0)),
            }),
            min_ready_seconds: Some(2),
            ..Rollout::default()
        };
        let workload = Workload {
            name: "web",
            kind: "deployment",
            image: "shipshape/probe:v1",
            env: vec!["POD_NAME={{.Task.Name}}".to_owned()],
            replicas: 3,
            labels: &labels,
            placement: &placement,
            requests: &requests,
            checks: vec![&check],
            restart: RestartPolicy::Always,
            rollout: &rollout,
            grace_seconds: Some(3),
        };
        let spec = service_spec(&workload, "1-2", "ns", "net-id").expect("spec");
        let parsed = as_written(spec.clone()).expect("every field reaches the engine");
        let back = json_of(&parsed);
        assert_eq!(
            back["TaskTemplate"]["ContainerSpec"]["HealthCheck"]["Retries"],
            3
        );
        assert_eq!(back["UpdateConfig"]["Order"], "start-first");
        assert_eq!(back["EndpointSpec"]["Mode"], "dnsrr");
        // A field bollard names otherwise would be lost: refused, not sent half.
        let mut wrong = spec;
        wrong["TaskTemplate"]["ContainerSpec"]["Healthcheck"] = json!({ "Retries": 3 });
        assert!(as_written(wrong).is_err());
    }

    #[test]
    fn environment_changes_replace_the_variable() {
        let mut spec =
            json!({ "TaskTemplate": { "ContainerSpec": { "Env": ["POD_NAME=x", "ROUND=1"] } } });
        set_env_var(&mut spec, "ROUND", "2");
        assert_eq!(
            spec["TaskTemplate"]["ContainerSpec"]["Env"],
            json!(["POD_NAME=x", "ROUND=2"])
        );
        assert_ne!(template_id("a", "[1]"), template_id("a", "[2]"));
    }
}
