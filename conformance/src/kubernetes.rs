//! The `kubernetes` driver: certifies any cluster the kit can reach through a kubeconfig.
//!
//! It talks to the cluster only through the Kubernetes API (kube-rs, plain JSON) and
//! never links the system under test; each request of the kit becomes what `kubectl`
//! would send ([`kubeapi`]). It assumes nothing only the reference satisfies: no
//! `default` namespace or `kubernetes` Service, no server-side tables, no protobuf.
//!
//! # Configuration
//!
//! | what | flag | environment | default |
//! |---|---|---|---|
//! | the cluster | `--kubeconfig` | `SHIPSHAPE_KUBECONFIG`, then `KUBECONFIG` | `~/.kube/config` |
//! | its context | `--context` | `SHIPSHAPE_CONTEXT` | the kubeconfig's current context |
//! | the probe images | `--image-prefix P` | `SHIPSHAPE_PROBE_IMAGE_V1`, `…_V2`, `…_BROKEN` | `shipshape/probe:<version>` |
//! | where node ports answer | | `SHIPSHAPE_NODE_ADDRESS` | a ready node's `InternalIP` |
//! | how services are reached | | `SHIPSHAPE_SERVICE_PATH` = `node-port`, `api-proxy` or `in-cluster` | the first that works |
//! | how one replica is reached | | `SHIPSHAPE_REPLICA_PATH` = `direct` or `api-proxy` | the first that works |
//! | the engine the pods run on | | `SHIPSHAPE_DOCKER_HOST`, then `DOCKER_HOST` | `/var/run/docker.sock` |
//! | how node containers are named | | `SHIPSHAPE_NODE_CONTAINERS`, `{node}` for a node's name | the node's name |
//!
//! The kit's images are never pulled under their local names (`shipshape/…`, pull policy
//! `Never`); a copy under another name (a registry's, with `--image-prefix`) is pulled if
//! missing ([`kubeapi::pull_policy`]). `shipshape-conformance images --save DIR` writes
//! them for loading into nodes or pushing to a registry.
//!
//! # What it finds out before the run
//!
//! [`KubernetesDriver::connect`] fails within seconds, in one line, when the kubeconfig is
//! missing or wrong, the API server does not answer, refuses the credentials (an expired
//! token), or lacks the API the kit needs (core/v1 namespaces, pods, services, nodes;
//! apps/v1 deployments and replicasets). Then it looks at the cluster as the features
//! will use it, with one probe pod (and a NodePort service in front of it) in a namespace
//! of its own, deleted afterwards:
//!
//! - whether the nodes have the probe image (if not, it says how to get it there);
//! - how a **service** answers from here: on a node port at a node's address (the
//!   preferred path: it is how clients outside a cluster reach it), else through the API
//!   server's `services/{name}:{port}/proxy`, else from *inside* the cluster — the report
//!   says which. Inside, the kit runs its traffic generator as a pod of the probe image in
//!   a namespace of its own for the run ([`InsideGenerator`]): it sends the requests from
//!   where the cluster's own clients are, at a service's cluster IP as pods do (else on
//!   its node port at a node's address, as pods may too), and the kit collects every
//!   request's outcome and time from it through the API server's `pods/proxy`. The
//!   requests then travel the cluster's own service path, so the invariants on failed
//!   requests keep their meaning where neither a node port nor the API server's proxy
//!   would answer (or where one does not want the API server to pick the endpoints);
//! - how one **replica** answers: at its pod address directly, else through
//!   `pods/{name}:{port}/proxy`; if neither, `@reach-replica` is not applicable;
//! - whether the probe pod's container is on the Docker engine the kit can reach, found
//!   by the labels Kubernetes' Docker runtime puts on it (`io.kubernetes.pod.namespace`,
//!   `io.kubernetes.pod.name`, `io.kubernetes.container.name`): only then can the kit kill
//!   a replica's container as the machine's kernel would (`@kill-container`);
//! - how many nodes are ready and take replicas (`@multi-node` needs three).
//!
//! # The machines behind the API
//!
//! Faults past the API — losing, partitioning or restarting a node, restarting the control
//! plane — and adding nodes need the machines themselves. A [`Machines`] implementation
//! says which of those it can do and does them: the reference driver's processes
//! ([`crate::reference`]) can do all of them; for a cluster the kit did not start
//! ([`ApiOnly`]) they are *not applicable*, with the reason in the report — unless its
//! nodes are containers on the engine, as kind and k3d make them: then the kit loses,
//! restarts and cuts off those containers ([`NodeContainers`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures::FutureExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::docker::Engine;
use crate::driver::{
    Admission, AutoscaleSpec, AutoscalerStatus, Capability, ContainerSpec, DaemonSpec,
    DeploymentSpec, Driver, DriverFuture, Fault, HttpRequest, HttpResponse, JobSpec, JobState,
    MULTI_NODE, NodeSpec, NodeStatus, PodSpec, Replica, Revision, RevisionEntry, RolloutStatus,
    ScheduledJobSpec, ScheduledRun, ServiceSpec, StatefulSpec, Support, Taint,
};
use crate::node_containers::NodeContainers;
use crate::{kubeapi, plain_http};

/// How long connecting to the API server and each of the checks before the run may take:
/// bad input is reported within seconds, not after a client's default timeouts.
const CHECK_TIMEOUT: Duration = Duration::from_secs(8);

/// How long the probe pod of the checks may take to be running and ready.
const PROBE_POD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a node port may take to answer once the probe pod is ready (the service's
/// endpoints and the node's proxy catch up).
const SERVICE_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one look at a replica's address may take before the kit tries the API proxy.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause between two looks while waiting.
const POLL: Duration = Duration::from_millis(250);

/// The port the probe listens on.
const PROBE_PORT: u16 = 8080;

/// The label with which Kubernetes' Docker runtime names a container's pod namespace.
const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// The label with which Kubernetes' Docker runtime names a container's pod.
const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";

/// The label with which Kubernetes' Docker runtime names a container within its pod
/// (`POD` for the sandbox).
const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// Where the kit finds the cluster and its images, and how it reaches what runs there.
#[derive(Clone, Debug, Default)]
pub struct KubernetesOptions {
    /// The kubeconfig file; see [`KubernetesOptions::kubeconfig_path`].
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; its current one when `None`.
    pub context: Option<String>,
    /// Put in front of every probe image's local name (`REGISTRY/` for a registry copy).
    pub image_prefix: Option<String>,
    /// The reference of each probe image version, where set one by one.
    pub images: Vec<(String, String)>,
    /// Where node ports answer; a ready node's InternalIP when `None`.
    pub node_address: Option<String>,
    /// How services are reached; the first that works when `None`.
    pub service_path: Option<ServicePathKind>,
    /// Whether replicas are reached through the API server even where their address
    /// answers (`SHIPSHAPE_REPLICA_PATH=api-proxy`).
    pub api_proxy_for_replicas: bool,
    /// How the nodes' containers are named on the engine, `{node}` standing for a node's
    /// name (`SHIPSHAPE_NODE_CONTAINERS`; the node's name itself when `None`).
    pub node_containers: Option<String>,
    /// The Docker engine the pods run on, if not the local one.
    pub docker_host: Option<String>,
}

/// Which way to reach a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServicePathKind {
    /// A node port, at a node's address.
    NodePort,
    /// The API server's `services/proxy` subresource.
    ApiProxy,
    /// The kit's traffic generator, in a pod inside the cluster.
    InCluster,
}

impl KubernetesOptions {
    /// The options the environment sets (see the module's table).
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let images = ["v1", "v2", "broken"]
            .into_iter()
            .filter_map(|version| {
                var(&format!("SHIPSHAPE_PROBE_IMAGE_{}", version.to_uppercase()))
                    .map(|image| (version.to_owned(), image))
            })
            .collect();
        let service_path = match var("SHIPSHAPE_SERVICE_PATH").as_deref() {
            None => None,
            Some("node-port") => Some(ServicePathKind::NodePort),
            Some("api-proxy") => Some(ServicePathKind::ApiProxy),
            Some("in-cluster") => Some(ServicePathKind::InCluster),
            Some(other) => {
                bail!(
                    "SHIPSHAPE_SERVICE_PATH={other:?}: expected node-port, api-proxy or in-cluster"
                )
            }
        };
        let api_proxy_for_replicas = match var("SHIPSHAPE_REPLICA_PATH").as_deref() {
            None | Some("direct") => false,
            Some("api-proxy") => true,
            Some(other) => {
                bail!("SHIPSHAPE_REPLICA_PATH={other:?}: expected direct or api-proxy")
            }
        };
        Ok(Self {
            api_proxy_for_replicas,
            node_containers: var("SHIPSHAPE_NODE_CONTAINERS"),
            kubeconfig: var("SHIPSHAPE_KUBECONFIG").map(PathBuf::from),
            context: var("SHIPSHAPE_CONTEXT"),
            image_prefix: None,
            images,
            node_address: var("SHIPSHAPE_NODE_ADDRESS"),
            service_path,
            docker_host: var("SHIPSHAPE_DOCKER_HOST"),
        })
    }

    /// The kubeconfig to read: the one given, else `KUBECONFIG` (its first file), else
    /// `~/.kube/config`.
    pub fn kubeconfig_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.kubeconfig {
            return Ok(path.clone());
        }
        if let Some(first) = std::env::var_os("KUBECONFIG")
            .as_ref()
            .and_then(|paths| std::env::split_paths(paths).find(|p| !p.as_os_str().is_empty()))
        {
            return Ok(first);
        }
        let home = std::env::var_os("HOME").ok_or_else(|| {
            anyhow!("no kubeconfig given, KUBECONFIG unset and no HOME to find ~/.kube/config in")
        })?;
        Ok(PathBuf::from(home).join(".kube").join("config"))
    }

    /// The reference of the probe image of a version, as the nodes know it.
    pub fn probe_image(&self, version: &str) -> String {
        if let Some((_, image)) = self.images.iter().find(|(v, _)| v == version) {
            return image.clone();
        }
        format!(
            "{}shipshape/probe:{version}",
            self.image_prefix.as_deref().unwrap_or_default()
        )
    }
}

/// A client that a control-plane restart may replace, shared by the driver and whoever
/// restarts the control plane.
#[derive(Clone)]
pub struct ClientCell(Arc<RwLock<kube::Client>>);

impl fmt::Debug for ClientCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCell").finish_non_exhaustive()
    }
}

impl ClientCell {
    /// A cell holding `client`.
    pub fn new(client: kube::Client) -> Self {
        Self(Arc::new(RwLock::new(client)))
    }

    /// The current client.
    pub fn get(&self) -> kube::Client {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the client (after the control plane restarted).
    pub fn set(&self, client: kube::Client) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = client;
    }
}

/// What a driver can do to the machines behind the Kubernetes API: faults that go past
/// the API, and adding nodes.
pub trait Machines: Send + Sync + fmt::Debug {
    /// One sentence on what the machines are, for the report.
    fn describe(&self) -> String;

    /// Whether this kind of fault can be injected (faults through the API — deleting a
    /// replica — and killing a pod's container are the driver's own business).
    fn supports(&self, fault: &Fault) -> Support;

    /// Injects a fault [`Machines::supports`] said yes to.
    fn inject<'a>(&'a self, fault: &'a Fault) -> DriverFuture<'a, ()>;

    /// Whether nodes can be added and removed: not, by default, to a cluster the kit did
    /// not start.
    fn can_add_nodes(&self) -> Support {
        Support::No("the kit cannot add machines to a cluster it did not start".to_owned())
    }

    /// Adds a node; returns once it is ready.
    fn add_node<'a>(&'a self, spec: &'a NodeSpec) -> DriverFuture<'a, ()> {
        async move {
            bail!(
                "cannot add node {}: the kit did not start this cluster",
                spec.name
            )
        }
        .boxed()
    }

    /// Removes a node [`Machines::add_node`] added.
    fn remove_node<'a>(&'a self, name: &'a str) -> DriverFuture<'a, ()> {
        async move { bail!("cannot remove node {name}: the kit did not start this cluster") }
            .boxed()
    }

    /// Stops what was started for the run.
    fn shut_down(&self) -> DriverFuture<'_, ()>;

    /// A client for the API of the member of the control plane cut off by
    /// [`Fault::PartitionControlPlaneLeader`], and of it alone; `None` when none is.
    fn cut_off_member_client(&self) -> DriverFuture<'_, Option<kube::Client>> {
        async { Ok(None) }.boxed()
    }

    /// A client for the API of the member of the control plane that took the place of the
    /// one [`Fault::LoseControlPlaneMemberAndData`] lost, and of it alone; `None` while
    /// none has.
    fn new_member_client(&self) -> DriverFuture<'_, Option<kube::Client>> {
        async { Ok(None) }.boxed()
    }
}

/// The machines of a cluster the kit did not start: it reaches them through the API only.
#[derive(Debug)]
pub struct ApiOnly {
    /// Why faults past the API are not applicable, for the report.
    reason: String,
}

impl ApiOnly {
    /// Machines reached through the API only, for `reason`.
    pub fn new(reason: String) -> Self {
        Self { reason }
    }
}

impl Machines for ApiOnly {
    fn describe(&self) -> String {
        "the kit reaches its machines through the API only".to_owned()
    }

    fn supports(&self, _fault: &Fault) -> Support {
        Support::No(self.reason.clone())
    }

    fn inject<'a>(&'a self, fault: &'a Fault) -> DriverFuture<'a, ()> {
        async move { bail!("cannot {fault}: {}", self.reason) }.boxed()
    }

    fn shut_down(&self) -> DriverFuture<'_, ()> {
        async { Ok(()) }.boxed()
    }
}

/// How the kit reaches a service.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ServicePath {
    /// On its node port, at this address.
    NodePort(String),
    /// Through the API server's `services/proxy`.
    ApiProxy,
    /// From the kit's traffic generator inside the cluster.
    InCluster(InsideGenerator),
}

/// The kit's traffic generator inside the cluster: a pod of the probe image, in a
/// namespace of its own for the run, that sends requests to services and keeps every
/// outcome (see the probe's `/relay` and `/traffic`); the kit reaches it through the API
/// server's `pods/proxy`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct InsideGenerator {
    /// Its namespace.
    namespace: String,
    /// Where it reaches a service.
    target: InsideTarget,
}

/// Where the generator inside the cluster reaches a service.
#[derive(Clone, Debug, PartialEq, Eq)]
enum InsideTarget {
    /// At its cluster IP and port, as the cluster's pods do.
    ClusterIp,
    /// On its node port, at this node address.
    NodePort(String),
}

/// The generator's pod.
const GENERATOR_POD: &str = "traffic";

impl InsideGenerator {
    /// `host:port/path` where the generator reaches `path` of `service`.
    async fn target(
        &self,
        client: &kube::Client,
        namespace: &str,
        service: &str,
        path: &str,
    ) -> anyhow::Result<String> {
        Ok(match &self.target {
            InsideTarget::ClusterIp => {
                let (ip, port) = kubeapi::cluster_ip(client, namespace, service).await?;
                format!("{ip}:{port}{path}")
            }
            InsideTarget::NodePort(address) => {
                let port = kubeapi::node_port(client, namespace, service).await?;
                format!("{address}:{port}{path}")
            }
        })
    }

    /// Sends one `GET` of `target` (`host:port/path`) from the generator.
    async fn get(&self, client: &kube::Client, target: &str) -> anyhow::Result<HttpResponse> {
        let relay = HttpRequest::get(&format!(
            "/relay?target={}",
            plain_http::query_value(target)
        ));
        let answer = pod_proxy(client, &self.namespace, GENERATOR_POD, PROBE_PORT, &relay).await?;
        if answer.status == 502 && answer.body.contains("\"error\"") {
            bail!(
                "the kit's traffic generator inside the cluster got no answer from {target}: {}",
                answer.body
            );
        }
        Ok(answer)
    }

    /// Where it reaches services, in words, for the report.
    fn describe(&self) -> String {
        let target = match &self.target {
            InsideTarget::ClusterIp => "at their cluster IP".to_owned(),
            InsideTarget::NodePort(address) => format!(
                "on their node port at {address} (the cluster IP did not answer from the pod)"
            ),
        };
        format!(
            "services from the kit's traffic generator inside the cluster (pod {}/{GENERATOR_POD}), {target}",
            self.namespace
        )
    }
}

/// A traffic run of the generator inside the cluster.
struct PodTraffic {
    /// The client, as the driver's (a control-plane restart replaces it).
    client: ClientCell,
    /// The generator's namespace.
    namespace: String,
    /// The run's number in the generator.
    number: u64,
    /// How many outcomes the kit has collected.
    collected: usize,
}

impl PodTraffic {
    /// Sends `method /traffic/{number}?since=…` and parses the outcomes it answers.
    async fn outcomes(
        &mut self,
        method: &str,
    ) -> anyhow::Result<Vec<crate::driver::InsideOutcome>> {
        let request = HttpRequest {
            method: method.to_owned(),
            path: format!("/traffic/{}?since={}", self.number, self.collected),
            body: String::new(),
        };
        let answer = pod_proxy(
            &self.client.get(),
            &self.namespace,
            GENERATOR_POD,
            PROBE_PORT,
            &request,
        )
        .await
        .and_then(HttpResponse::succeeded)?;
        let outcomes = parse_outcomes(&answer.body)?;
        self.collected += outcomes.len();
        Ok(outcomes)
    }
}

impl crate::driver::InsideTraffic for PodTraffic {
    fn collect(&mut self) -> DriverFuture<'_, Vec<crate::driver::InsideOutcome>> {
        self.outcomes("GET").boxed()
    }

    fn stop(&mut self) -> DriverFuture<'_, Vec<crate::driver::InsideOutcome>> {
        self.outcomes("DELETE").boxed()
    }
}

/// The generator's outcomes, a line each: microseconds since it started, then `ok` and
/// the answer's body or `failed` and why, separated by tabs.
fn parse_outcomes(text: &str) -> anyhow::Result<Vec<crate::driver::InsideOutcome>> {
    text.lines()
        .map(|line| {
            let mut fields = line.splitn(3, '\t');
            let at = fields.next().and_then(|at| at.parse::<u64>().ok());
            match (at, fields.next(), fields.next()) {
                (Some(at), Some("ok"), Some(body)) => {
                    Ok((Duration::from_micros(at), Ok(body.to_owned())))
                }
                (Some(at), Some("failed"), Some(why)) => {
                    Ok((Duration::from_micros(at), Err(why.to_owned())))
                }
                _ => Err(anyhow!(
                    "the traffic generator inside the cluster sent an outcome the kit does not understand: {line:?}"
                )),
            }
        })
        .collect()
}

/// How the kit reaches one replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplicaPath {
    /// At its pod address.
    Direct,
    /// Through the API server's `pods/proxy`.
    ApiProxy,
}

/// A Kubernetes cluster under test.
pub struct KubernetesDriver {
    /// `kubernetes`, or `reference` for the reference driver.
    name: &'static str,
    /// The client, replaced by a control-plane restart.
    client: ClientCell,
    /// Images and paths.
    options: KubernetesOptions,
    /// What can be done past the API.
    machines: Box<dyn Machines>,
    /// Where the API server is, and from which kubeconfig.
    server: String,
    /// How services are reached.
    service_path: ServicePath,
    /// How replicas are reached, or why they cannot be.
    replica_path: Result<ReplicaPath, String>,
    /// The engine the pods' containers are on, or why the kit cannot reach them.
    pod_engine: Result<Engine, String>,
    /// Whether there are enough nodes for `@multi-node`.
    multi_node: Support,
    /// The nodes, as seen before the run.
    nodes: Vec<String>,
}

impl fmt::Debug for KubernetesDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesDriver")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("service_path", &self.service_path)
            .field("replica_path", &self.replica_path)
            .finish_non_exhaustive()
    }
}

/// Reads a kubeconfig and builds a client for it (with short timeouts), saying clearly
/// what is wrong when it cannot.
pub async fn client_from_kubeconfig(
    options: &KubernetesOptions,
) -> anyhow::Result<(kube::Client, String)> {
    let path = options.kubeconfig_path()?;
    if !path.exists() {
        bail!("the kubeconfig {} does not exist", path.display());
    }
    let file = Kubeconfig::read_from(&path)
        .with_context(|| format!("the kubeconfig {} cannot be read", path.display()))?;
    let selection = KubeConfigOptions {
        context: options.context.clone(),
        ..KubeConfigOptions::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(file, &selection)
        .await
        .with_context(|| format!("the kubeconfig {} is not usable", path.display()))?;
    config.connect_timeout = Some(CHECK_TIMEOUT);
    config.read_timeout = Some(Duration::from_secs(30));
    let server = format!("{} (kubeconfig {})", config.cluster_url, path.display());
    let client = kubeapi::client(config)
        .with_context(|| format!("the kubeconfig {} is not usable", path.display()))?;
    Ok((client, server))
}

impl KubernetesDriver {
    /// Connects to the cluster the options name (any cluster: its machines are reached
    /// through the API only), checks it, and finds out how to reach what runs on it.
    pub async fn start(options: KubernetesOptions, run_id: &str) -> anyhow::Result<Self> {
        let (client, server) = client_from_kubeconfig(&options).await?;
        Self::connect(
            "kubernetes",
            ClientCell::new(client),
            server,
            options,
            None,
            run_id,
        )
        .await
    }

    /// Checks the cluster behind `client` and finds out how to reach what runs on it (see
    /// the module's essay); `machines` does what goes past the API (for a cluster the kit
    /// did not start, `None`: its machines are reached through the API only, and the
    /// driver finds out and says why).
    pub async fn connect(
        name: &'static str,
        client: ClientCell,
        server: String,
        options: KubernetesOptions,
        machines: Option<Box<dyn Machines>>,
        run_id: &str,
    ) -> anyhow::Result<Self> {
        let api = client.get();
        check_api(&api, &server).await?;
        reap_dead_runs(&api).await?;
        let nodes = tokio::time::timeout(
            CHECK_TIMEOUT,
            Api::<Node>::all(api.clone()).list(&ListParams::default()),
        )
        .await
        .map_err(|_| {
            anyhow!("the API server at {server} did not list the nodes within {CHECK_TIMEOUT:?}")
        })?
        .with_context(|| format!("the API server at {server} did not list the nodes"))?;
        let statuses: Vec<NodeStatus> = kubeapi::list_nodes(&api).await?;
        let usable = statuses
            .iter()
            .filter(|node| {
                node.ready
                    && node.schedulable
                    && !node
                        .taints
                        .iter()
                        .any(|taint| taint.effect != crate::driver::TaintEffect::PreferNoSchedule)
            })
            .count();
        let multi_node = if usable >= MULTI_NODE {
            Support::Yes
        } else {
            Support::No(format!(
                "the cluster has {usable} ready node(s) that take replicas; these scenarios need {MULTI_NODE}"
            ))
        };
        // Where node ports may answer: the one given, else every node's InternalIP.
        let mut node_addresses: Vec<String> = match &options.node_address {
            Some(address) => vec![address.clone()],
            None => nodes.items.iter().filter_map(internal_ip).collect(),
        };
        node_addresses.dedup();
        let engine = match &options.docker_host {
            Some(host) => Engine::at(host),
            None => Engine::from_env(),
        };
        let looked = look(&api, &options, run_id, &node_addresses, &engine).await?;
        let machines = match machines {
            Some(machines) => machines,
            None => {
                let names: Vec<&str> = statuses.iter().map(|node| node.name.as_str()).collect();
                machines_found(&engine, &names, &options).await
            }
        };
        Ok(Self {
            name,
            client,
            options,
            machines,
            server,
            service_path: looked.service_path,
            replica_path: looked.replica_path,
            pod_engine: looked.pod_engine.map(|()| engine),
            multi_node,
            nodes: statuses.into_iter().map(|node| node.name).collect(),
        })
    }

    /// The current client.
    fn client(&self) -> kube::Client {
        self.client.get()
    }
}

/// Checks that the API server answers, accepts the credentials, and serves what the kit
/// needs; one clear error otherwise.
async fn check_api(client: &kube::Client, server: &str) -> anyhow::Result<()> {
    let version = tokio::time::timeout(CHECK_TIMEOUT, client.apiserver_version())
        .await
        .map_err(|_| {
            anyhow!("the Kubernetes API server at {server} did not answer within {CHECK_TIMEOUT:?}")
        })?;
    if let Err(error) = version {
        return Err(match &error {
            kube::Error::Api(status) if status.code == 401 => anyhow!(
                "the Kubernetes API server at {server} refused the credentials (401 Unauthorized): the token or certificate may have expired"
            ),
            kube::Error::Api(status) if status.code == 403 => anyhow!(
                "the Kubernetes API server at {server} forbids these credentials to read /version (403 Forbidden)"
            ),
            _ => anyhow!(error).context(format!(
                "cannot reach the Kubernetes API server at {server}"
            )),
        });
    }
    let needs: [(&str, &[&str]); 2] = [
        ("v1", &["namespaces", "pods", "services", "nodes"]),
        ("apps/v1", &["deployments", "replicasets"]),
    ];
    for (group_version, resources) in needs {
        let listed = if group_version == "v1" {
            tokio::time::timeout(CHECK_TIMEOUT, client.list_core_api_resources("v1")).await
        } else {
            tokio::time::timeout(
                CHECK_TIMEOUT,
                client.list_api_group_resources(group_version),
            )
            .await
        };
        let served: Vec<String> = match listed {
            Ok(Ok(list)) => list
                .resources
                .into_iter()
                .map(|resource| resource.name)
                .collect(),
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => Vec::new(),
            Ok(Err(error)) => {
                return Err(anyhow!(error).context(format!(
                    "the API server at {server} did not say which {group_version} resources it serves"
                )));
            }
            Err(_) => bail!(
                "the API server at {server} did not list its {group_version} resources within {CHECK_TIMEOUT:?}"
            ),
        };
        let missing: Vec<&str> = resources
            .iter()
            .copied()
            .filter(|resource| !served.iter().any(|served| served == resource))
            .collect();
        if !missing.is_empty() {
            bail!(
                "the cluster at {server} does not serve what the kit needs: {group_version} {}",
                missing.join(", ")
            );
        }
    }
    Ok(())
}

/// The machines behind a cluster the kit did not start: its nodes' containers
/// ([`NodeContainers`]) when every node is a container on the engine; else the API only,
/// with the reason.
async fn machines_found(
    engine: &Engine,
    nodes: &[&str],
    options: &KubernetesOptions,
) -> Box<dyn Machines> {
    let found = match node_containers(engine, nodes, options).await {
        Ok(found) => found,
        Err(reason) => return Box::new(ApiOnly::new(reason)),
    };
    match NodeContainers::new(engine.clone(), found).await {
        Ok(machines) => Box::new(machines),
        Err(error) => Box::new(ApiOnly::new(format!(
            "the nodes are containers on the Docker engine at {}, but not usable as machines: {error:#}",
            engine.host()
        ))),
    }
}

/// Each node's container on the engine (named as the node, or as the
/// `SHIPSHAPE_NODE_CONTAINERS` pattern says with `{node}` for a node's name), as kind and
/// k3d make them; or why the kit reaches the machines through the API only.
async fn node_containers(
    engine: &Engine,
    nodes: &[&str],
    options: &KubernetesOptions,
) -> Result<BTreeMap<String, String>, String> {
    let pattern = options
        .node_containers
        .clone()
        .unwrap_or_else(|| "{node}".to_owned());
    let containers = engine.container_names().await.map_err(|error| {
        format!(
            "the kit did not start this cluster and reaches it through its API only (no Docker engine to look for its nodes on: {error:#})"
        )
    })?;
    let found: BTreeMap<String, String> = nodes
        .iter()
        .map(|node| ((*node).to_owned(), pattern.replace("{node}", node)))
        .filter(|(_, name)| containers.contains(name))
        .collect();
    if nodes.is_empty() || found.len() != nodes.len() {
        return Err(format!(
            "the kit did not start this cluster, and not every node of it is a container on the Docker engine at {} (looked for containers named {pattern:?} for each node); it reaches the machines through the API only",
            engine.host()
        ));
    }
    Ok(found)
}

/// Deletes the namespaces of the kit's runs that were killed (their run's process is
/// gone): deleting a namespace deletes everything in it.
async fn reap_dead_runs(client: &kube::Client) -> anyhow::Result<()> {
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .list(&ListParams::default().labels(kubeapi::RUN_LABEL))
        .await
        .context("failed to list the namespaces of earlier runs")?;
    for namespace in namespaces.items {
        let run = namespace
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(kubeapi::RUN_LABEL))
            .cloned()
            .unwrap_or_default();
        let being_deleted = namespace.metadata.deletion_timestamp.is_some();
        if let Some(name) = namespace.metadata.name
            && !being_deleted
            && crate::reaper::is_dead(&run)
        {
            kubeapi::delete_namespace(client, &name).await?;
            println!("conformance: deleted namespace {name}, left by a killed run ({run})");
        }
    }
    Ok(())
}

/// A node's InternalIP, if it reports one.
fn internal_ip(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|address| address.type_ == "InternalIP")
        .map(|address| address.address.clone())
}

/// What the look at the cluster with a probe pod found.
struct Looked {
    /// How services answer.
    service_path: ServicePath,
    /// How a replica answers, or why it does not.
    replica_path: Result<ReplicaPath, String>,
    /// Whether the pod's container is on the engine, or why not.
    pod_engine: Result<(), String>,
}

/// How many times the kit's start-up looks at the cluster when what it just made is not
/// found.
const LOOK_ATTEMPTS: u32 = 3;

/// Whether `error` is the API's 404.
fn not_found(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| matches!(cause.downcast_ref::<kube::Error>(), Some(kube::Error::Api(status)) if status.code == 404))
}

/// Runs one probe pod behind a NodePort service in a namespace of its own and finds out
/// how they answer (see the module's essay); the namespace is deleted afterwards.
async fn look(
    client: &kube::Client,
    options: &KubernetesOptions,
    run_id: &str,
    node_addresses: &[String],
    engine: &Engine,
) -> anyhow::Result<Looked> {
    // A system that reads without a majority (a mutant does) may not know yet of an
    // object just made: that is for the scenarios to catch, not for the start-up to trip
    // on, so a look that met a 404 is made again, in a namespace of its own.
    let mut attempt = 1;
    loop {
        let namespace = format!("conformance-{run_id}-look{attempt}");
        kubeapi::create_namespace(client, &namespace, run_id).await?;
        let looked = look_in(client, options, run_id, &namespace, node_addresses, engine).await;
        if let Err(error) = kubeapi::delete_namespace(client, &namespace).await {
            eprintln!("conformance: warning: {error:#}");
        }
        match looked {
            Err(error) if attempt < LOOK_ATTEMPTS && not_found(&error) => {
                eprintln!(
                    "conformance: looking again, as an object just made was not found: {error:#}"
                );
                attempt += 1;
            }
            looked => return looked,
        }
    }
}

/// [`look`], in its namespace.
async fn look_in(
    client: &kube::Client,
    options: &KubernetesOptions,
    run_id: &str,
    namespace: &str,
    node_addresses: &[String],
    engine: &Engine,
) -> anyhow::Result<Looked> {
    let (pod, replica) = run_probe_pod(client, options, namespace, "look").await?;
    // A service in front of it, to learn how services answer.
    let service = ServiceSpec {
        name: "look".to_owned(),
        deployment: String::new(),
        port: 80,
        target_port: PROBE_PORT,
    };
    kubeapi::expose_selector(client, namespace, &service, &pod.labels).await?;
    let service_path = service_path(client, options, run_id, namespace, node_addresses).await?;
    let rest = look_at_replicas(client, options, namespace, &replica, engine).await;
    match (rest, service_path) {
        (Ok((replica_path, pod_engine)), service_path) => Ok(Looked {
            service_path,
            replica_path,
            pod_engine,
        }),
        (Err(error), ServicePath::InCluster(generator)) => {
            delete_generator(client, &generator).await;
            Err(error)
        }
        (Err(error), _) => Err(error),
    }
}

/// Runs a pod `name` of the probe image (labelled `app={name}`) and waits until it is
/// ready.
async fn run_probe_pod(
    client: &kube::Client,
    options: &KubernetesOptions,
    namespace: &str,
    name: &str,
) -> anyhow::Result<(PodSpec, Replica)> {
    let image = options.probe_image("v1");
    let pod = PodSpec {
        name: name.to_owned(),
        labels: [("app".to_owned(), name.to_owned())].into(),
        containers: vec![ContainerSpec {
            name: "probe".to_owned(),
            image: image.clone(),
            port: Some(PROBE_PORT),
            ..ContainerSpec::default()
        }],
        ..PodSpec::default()
    };
    if let Admission::Refused(why) = kubeapi::run_pod(client, namespace, &pod).await? {
        bail!("the cluster refused the kit's probe pod: {why}");
    }
    let replica = wait_for_probe(client, namespace, name, &image).await?;
    Ok((pod, replica))
}

/// How one replica (the look's probe pod) answers, and whether its container is on the
/// engine (see the module's essay).
async fn look_at_replicas(
    client: &kube::Client,
    options: &KubernetesOptions,
    namespace: &str,
    replica: &Replica,
    engine: &Engine,
) -> anyhow::Result<(Result<ReplicaPath, String>, Result<(), String>)> {
    // One replica directly, else through the API server (or as configured).
    let direct = match &replica.ip {
        _ if options.api_proxy_for_replicas => Err("SHIPSHAPE_REPLICA_PATH=api-proxy".to_owned()),
        Some(ip) => tokio::time::timeout(
            DIRECT_TIMEOUT,
            plain_http::send(&format!("{ip}:{PROBE_PORT}"), &HttpRequest::get("/")),
        )
        .await
        .map_err(|_| format!("no answer from {ip}:{PROBE_PORT} within {DIRECT_TIMEOUT:?}"))
        .and_then(|answer| answer.map_err(|error| format!("{error:#}")))
        .and_then(|answer| answer.succeeded().map_err(|error| format!("{error:#}"))),
        None => Err("the probe pod reports no address".to_owned()),
    };
    let replica_path = match direct {
        Ok(_) => Ok(ReplicaPath::Direct),
        Err(direct_error) => {
            match pod_proxy(
                client,
                namespace,
                "look",
                PROBE_PORT,
                &HttpRequest::get("/"),
            )
            .await
            .and_then(HttpResponse::succeeded)
            {
                Ok(_) => Ok(ReplicaPath::ApiProxy),
                Err(proxy_error) => Err(format!(
                    "a replica answers neither at its address ({direct_error}) nor through the API server's pods/proxy ({proxy_error:#})"
                )),
            }
        }
    };
    // Is the pod's container on an engine the kit can reach?
    let found = match engine.ping(DIRECT_TIMEOUT).await {
        Ok(()) => engine
            .containers(&[(POD_NAMESPACE_LABEL, namespace), (POD_NAME_LABEL, "look")])
            .await
            .map_err(|error| format!("{error:#}")),
        Err(error) => Err(format!("{error:#}")),
    };
    let pod_engine = match found {
        Err(error) => Err(error),
        Ok(found) => {
            if found.iter().any(|container| {
                container
                    .labels
                    .get(CONTAINER_NAME_LABEL)
                    .is_some_and(|name| name != "POD")
            }) {
                Ok(())
            } else {
                Err(format!(
                    "the containers of the cluster's pods are not on the Docker engine at {} (none carries the labels {POD_NAMESPACE_LABEL} and {POD_NAME_LABEL} of the kit's probe pod); for nodes that are containers themselves (kind, k3d), killing a container inside a node is not built yet",
                    engine.host()
                ))
            }
        }
    };
    Ok((replica_path, pod_engine))
}

/// Waits until the probe pod runs and is ready; fails early, saying how to get the image
/// there, when its node cannot find the image.
async fn wait_for_probe(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    image: &str,
) -> anyhow::Result<Replica> {
    let deadline = tokio::time::Instant::now() + PROBE_POD_TIMEOUT;
    loop {
        let replica = kubeapi::read_replica(client, namespace, name).await?;
        if let Some(replica) = &replica {
            if replica.ready && replica.ip.is_some() {
                return Ok(replica.clone());
            }
            let reason = replica.reason.as_deref().unwrap_or_default();
            if [
                "ErrImageNeverPull",
                "ErrImagePull",
                "ImagePullBackOff",
                "InvalidImageName",
            ]
            .contains(&reason)
            {
                bail!(
                    "the cluster's nodes cannot get the kit's probe image {image} ({reason}: {}); write it with `shipshape-conformance images --save DIR` and load it into the nodes, or push it to a registry and pass --image-prefix",
                    replica.message.as_deref().unwrap_or_default()
                );
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the kit's probe pod (image {image}) did not become ready within {PROBE_POD_TIMEOUT:?}; last seen: {replica:?}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Finds the path on which the probe's service answers, in the order of preference (or
/// the one configured).
async fn service_path(
    client: &kube::Client,
    options: &KubernetesOptions,
    run_id: &str,
    namespace: &str,
    node_addresses: &[String],
) -> anyhow::Result<ServicePath> {
    let node_port = async {
        let address = node_addresses
            .first()
            .ok_or_else(|| anyhow!("no node reports an InternalIP; set SHIPSHAPE_NODE_ADDRESS"))?;
        let port = kubeapi::node_port(client, namespace, "look").await?;
        let (authority, root) = (format!("{address}:{port}"), HttpRequest::get("/"));
        answers_within(format!("node port {port} at {address}"), || {
            plain_http::send(&authority, &root)
        })
        .await?;
        anyhow::Ok(ServicePath::NodePort(address.to_owned()))
    };
    let api_proxy = async {
        // Until the service's endpoints are known, the proxy answers 503.
        let root = HttpRequest::get("/");
        answers_within("the API server's services/proxy".to_owned(), || {
            service_proxy(client, namespace, "look", 80, &root)
        })
        .await?;
        anyhow::Ok(ServicePath::ApiProxy)
    };
    let in_cluster = async {
        start_generator(client, options, run_id, namespace, node_addresses)
            .await
            .map(ServicePath::InCluster)
    };
    match options.service_path {
        Some(ServicePathKind::NodePort) => node_port.await,
        Some(ServicePathKind::ApiProxy) => api_proxy.await,
        Some(ServicePathKind::InCluster) => in_cluster.await,
        None => {
            let node_port_error = match node_port.await {
                Ok(path) => return Ok(path),
                Err(error) => error,
            };
            let proxy_error = match api_proxy.await {
                Ok(path) => return Ok(path),
                Err(error) => error,
            };
            in_cluster.await.map_err(|inside_error| {
                anyhow!(
                    "a service of the cluster answers neither on a node port ({node_port_error:#}), nor through the API server's services/proxy ({proxy_error:#}), nor to the kit's traffic generator inside the cluster ({inside_error:#}); set SHIPSHAPE_NODE_ADDRESS to an address where node ports answer"
                )
            })
        }
    }
}

/// Starts the kit's traffic generator inside the cluster, in a namespace of its own for
/// the run (`{namespace}-traffic`), and finds where it reaches the look's service: at its
/// cluster IP, else on its node port at one of `node_addresses`. Nothing stays behind
/// when it fails.
async fn start_generator(
    client: &kube::Client,
    options: &KubernetesOptions,
    run_id: &str,
    namespace: &str,
    node_addresses: &[String],
) -> anyhow::Result<InsideGenerator> {
    let own = format!("{namespace}-traffic");
    kubeapi::create_namespace(client, &own, run_id).await?;
    let found = async {
        run_probe_pod(client, options, &own, GENERATOR_POD).await?;
        let candidates: Vec<InsideGenerator> = std::iter::once(InsideTarget::ClusterIp)
            .chain(node_addresses.iter().cloned().map(InsideTarget::NodePort))
            .map(|target| InsideGenerator {
                namespace: own.clone(),
                target,
            })
            .collect();
        let deadline = tokio::time::Instant::now() + SERVICE_TIMEOUT;
        loop {
            let mut failures = Vec::new();
            for generator in &candidates {
                let answer = async {
                    let target = generator.target(client, namespace, "look", "/").await?;
                    generator.get(client, &target).await?.succeeded()
                };
                match answer.await {
                    // The probe names itself; whatever else answers is not the service.
                    Ok(answer) if crate::traffic::replica_of(&answer.body) != "?" => {
                        return anyhow::Ok(generator.clone());
                    }
                    Ok(answer) => failures.push(format!(
                        "{:?}: an answer that is not the probe's: {}",
                        generator.target, answer.body
                    )),
                    Err(error) => failures.push(format!("{:?}: {error:#}", generator.target)),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the kit's traffic generator in pod {own}/{GENERATOR_POD} did not reach the service within {SERVICE_TIMEOUT:?} ({})",
                    failures.join("; ")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    };
    let found = found.await;
    if found.is_err()
        && let Err(error) = kubeapi::delete_namespace(client, &own).await
    {
        eprintln!("conformance: warning: {error:#}");
    }
    found
}

/// Deletes the generator's namespace, and with it the generator.
async fn delete_generator(client: &kube::Client, generator: &InsideGenerator) {
    if let Err(error) = kubeapi::delete_namespace(client, &generator.namespace).await {
        eprintln!("conformance: warning: {error:#}");
    }
}

/// Sends `request()` until it succeeds, for up to [`SERVICE_TIMEOUT`]; the last failure
/// if it never does, saying `what` did not answer.
async fn answers_within<F, Fut>(what: String, mut request: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<HttpResponse>>,
{
    let deadline = tokio::time::Instant::now() + SERVICE_TIMEOUT;
    loop {
        match request().await.and_then(HttpResponse::succeeded) {
            Ok(_) => return Ok(()),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(
                    error.context(format!("{what} did not answer within {SERVICE_TIMEOUT:?}"))
                );
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Sends a request to a port of a pod through the API server (`pods/{name}:{port}/proxy`).
async fn pod_proxy(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
    request: &HttpRequest,
) -> anyhow::Result<HttpResponse> {
    let path = format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{}",
        request.path
    );
    through_api(client, &path, request).await
}

/// Sends a request to a port of a service through the API server
/// (`services/{name}:{port}/proxy`).
async fn service_proxy(
    client: &kube::Client,
    namespace: &str,
    service: &str,
    port: u16,
    request: &HttpRequest,
) -> anyhow::Result<HttpResponse> {
    let path = format!(
        "/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy{}",
        request.path
    );
    through_api(client, &path, request).await
}

/// Sends a request to the API server and returns its answer, whatever the status.
async fn through_api(
    client: &kube::Client,
    path: &str,
    request: &HttpRequest,
) -> anyhow::Result<HttpResponse> {
    let method = http::Method::from_bytes(request.method.as_bytes())
        .with_context(|| format!("{:?} is not an HTTP method", request.method))?;
    let outgoing = http::Request::builder()
        .method(method)
        .uri(path)
        .body(request.body.clone().into_bytes())
        .with_context(|| format!("failed to build a request for {path}"))?;
    let exchange = async {
        let response = client
            .send(outgoing.map(kube::client::Body::from))
            .await
            .with_context(|| format!("{} {path} through the API server failed", request.method))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .with_context(|| format!("failed to read the answer to {path}"))?;
        anyhow::Ok(HttpResponse {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(plain_http::TIMEOUT, exchange)
        .await
        .map_err(|_| {
            anyhow!(
                "{} {path} through the API server got no answer within {:?}",
                request.method,
                plain_http::TIMEOUT
            )
        })?
}

impl Driver for KubernetesDriver {
    fn name(&self) -> &str {
        self.name
    }

    fn describe(&self) -> String {
        format!(
            "the Kubernetes API at {}; nodes {}; {}",
            self.server,
            self.nodes.join(", "),
            self.machines.describe()
        )
    }

    fn version(&self) -> DriverFuture<'_, String> {
        let client = self.client();
        async move { kubeapi::version(&client).await }.boxed()
    }

    fn reach(&self) -> String {
        let services = match &self.service_path {
            ServicePath::NodePort(address) => format!(
                "services on their node port at {address}{}",
                if self.options.node_address.is_some() {
                    " (SHIPSHAPE_NODE_ADDRESS)"
                } else {
                    " (a node's InternalIP)"
                }
            ),
            ServicePath::ApiProxy if self.options.service_path.is_some() => {
                "services through the API server's services/proxy (SHIPSHAPE_SERVICE_PATH=api-proxy)"
                    .to_owned()
            }
            ServicePath::ApiProxy => {
                "services through the API server's services/proxy (node ports did not answer from here)".to_owned()
            }
            ServicePath::InCluster(generator) if self.options.service_path.is_some() => {
                format!("{} (SHIPSHAPE_SERVICE_PATH=in-cluster)", generator.describe())
            }
            ServicePath::InCluster(generator) => format!(
                "{} (neither node ports nor the API server's services/proxy answered from here)",
                generator.describe()
            ),
        };
        let replicas = match &self.replica_path {
            Ok(ReplicaPath::Direct) => "replicas directly at their pod address".to_owned(),
            Ok(ReplicaPath::ApiProxy) if self.options.api_proxy_for_replicas => {
                "replicas through the API server's pods/proxy (SHIPSHAPE_REPLICA_PATH=api-proxy)"
                    .to_owned()
            }
            Ok(ReplicaPath::ApiProxy) => {
                "replicas through the API server's pods/proxy (their addresses did not answer from here)"
                    .to_owned()
            }
            Err(why) => format!("replicas not at all ({why})"),
        };
        format!("{services}; {replicas}")
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

    fn delete_deployment<'a>(&'a self, namespace: &'a str, name: &'a str) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::delete_deployment(&client, namespace, name).await }.boxed()
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

    fn rollout_status<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, RolloutStatus> {
        let client = self.client();
        async move { kubeapi::rollout_status(&client, namespace, name).await }.boxed()
    }

    fn history<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Vec<RevisionEntry>> {
        let client = self.client();
        async move { kubeapi::history(&client, namespace, name).await }.boxed()
    }

    fn set_env<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        variable: &'a str,
        value: &'a str,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::set_env(&client, namespace, name, variable, value).await }.boxed()
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

    /// On the service's node port at the node address found before the run, through the
    /// API server's `services/proxy`, or from the generator inside the cluster; each
    /// request on a connection of its own, so requests are spread over the replicas anew.
    fn reach_service<'a>(
        &'a self,
        namespace: &'a str,
        service: &'a str,
        path: &'a str,
    ) -> DriverFuture<'a, String> {
        let client = self.client();
        async move {
            let request = HttpRequest::get(path);
            let answer = match &self.service_path {
                ServicePath::NodePort(address) => {
                    let port = kubeapi::node_port(&client, namespace, service).await?;
                    plain_http::send(&format!("{address}:{port}"), &request).await
                }
                ServicePath::ApiProxy => {
                    let port = kubeapi::service_port(&client, namespace, service).await?;
                    service_proxy(&client, namespace, service, port, &request).await
                }
                ServicePath::InCluster(generator) => {
                    let target = generator.target(&client, namespace, service, path).await?;
                    generator.get(&client, &target).await
                }
            }
            .and_then(HttpResponse::succeeded)
            .with_context(|| format!("service {namespace}/{service} did not answer GET {path}"))?;
            Ok(answer.body)
        }
        .boxed()
    }

    /// Where services are reached from inside the cluster, the generator in its pod sends
    /// the requests and keeps their outcomes; elsewhere the kit sends them.
    fn generate_traffic_inside<'a>(
        &'a self,
        namespace: &'a str,
        service: &'a str,
    ) -> DriverFuture<'a, Option<Box<dyn crate::driver::InsideTraffic>>> {
        async move {
            let ServicePath::InCluster(generator) = &self.service_path else {
                return Ok(None);
            };
            let client = self.client();
            let target = generator.target(&client, namespace, service, "/").await?;
            let start = HttpRequest {
                method: "POST".to_owned(),
                path: format!(
                    "/traffic?target={}&pause_ms={}&for_s={}",
                    plain_http::query_value(&target),
                    crate::traffic::PAUSE.as_millis(),
                    crate::traffic::MAX_RUN.as_secs()
                ),
                body: String::new(),
            };
            let answer = pod_proxy(
                &client,
                &generator.namespace,
                GENERATOR_POD,
                PROBE_PORT,
                &start,
            )
            .await
            .and_then(HttpResponse::succeeded)
            .with_context(|| {
                format!("the kit's traffic generator did not start sending to {target}")
            })?;
            let number = serde_json::from_str::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|started| started.get("traffic")?.as_u64())
                .ok_or_else(|| {
                    anyhow!(
                        "the kit's traffic generator answered {:?}, not the number of its run",
                        answer.body
                    )
                })?;
            let traffic: Box<dyn crate::driver::InsideTraffic> = Box::new(PodTraffic {
                client: self.client.clone(),
                namespace: generator.namespace.clone(),
                number,
                collected: 0,
            });
            Ok(Some(traffic))
        }
        .boxed()
    }

    fn supports(&self, fault: &Fault) -> Support {
        match fault {
            Fault::DeleteReplica { .. } => Support::Yes,
            Fault::KillContainer { .. } => match &self.pod_engine {
                Ok(_) => Support::Yes,
                Err(why) => Support::No(why.clone()),
            },
            other => self.machines.supports(other),
        }
    }

    fn inject<'a>(&'a self, fault: &'a Fault) -> DriverFuture<'a, ()> {
        async move {
            match fault {
                Fault::DeleteReplica { namespace, replica } => {
                    kubeapi::delete_replica(&self.client(), namespace, replica).await
                }
                Fault::KillContainer { namespace, replica } => {
                    self.kill_container(namespace, replica).await
                }
                other => self.machines.inject(other).await,
            }
            .with_context(|| format!("the {} driver failed to {fault}", self.name))
        }
        .boxed()
    }

    fn has(&self, capability: Capability) -> Support {
        match capability {
            Capability::MultiNode => self.multi_node.clone(),
            Capability::AddNode => self.machines.can_add_nodes(),
            Capability::LabelNode
            | Capability::TaintNode
            | Capability::Pods
            | Capability::DrainNode
            | Capability::Jobs
            | Capability::ScheduledJobs
            | Capability::Daemons
            | Capability::StatefulSets
            | Capability::Autoscaling => Support::Yes,
            Capability::ReachReplica => match &self.replica_path {
                Ok(_) => Support::Yes,
                Err(why) => Support::No(why.clone()),
            },
        }
    }

    fn probe_image(&self, version: &str) -> String {
        self.options.probe_image(version)
    }

    fn list_nodes(&self) -> DriverFuture<'_, Vec<NodeStatus>> {
        let client = self.client();
        async move { kubeapi::list_nodes(&client).await }.boxed()
    }

    fn add_node<'a>(&'a self, spec: &'a NodeSpec) -> DriverFuture<'a, ()> {
        self.machines.add_node(spec)
    }

    fn remove_node<'a>(&'a self, name: &'a str) -> DriverFuture<'a, ()> {
        self.machines.remove_node(name)
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

    fn run_daemon<'a>(
        &'a self,
        namespace: &'a str,
        daemon: &'a DaemonSpec,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::run_daemon(&client, namespace, daemon).await }.boxed()
    }

    fn set_daemon_image<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        image: &'a str,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::set_daemon_image(&client, namespace, name, image).await }.boxed()
    }

    fn list_daemon_pods<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Vec<Replica>> {
        let client = self.client();
        async move { kubeapi::list_daemon_pods(&client, namespace, name).await }.boxed()
    }

    fn autoscale<'a>(
        &'a self,
        namespace: &'a str,
        spec: &'a AutoscaleSpec,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::autoscale(&client, namespace, spec).await }.boxed()
    }

    fn read_autoscaler<'a>(
        &'a self,
        namespace: &'a str,
        deployment: &'a str,
    ) -> DriverFuture<'a, AutoscalerStatus> {
        let client = self.client();
        async move { kubeapi::read_autoscaler(&client, namespace, deployment).await }.boxed()
    }

    fn run_stateful_set<'a>(
        &'a self,
        namespace: &'a str,
        set: &'a StatefulSpec,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::run_stateful_set(&client, namespace, set).await }.boxed()
    }

    fn scale_stateful_set<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        replicas: u32,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::scale_stateful_set(&client, namespace, name, replicas).await }.boxed()
    }

    fn set_stateful_image<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        image: &'a str,
        from: u32,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::set_stateful_image(&client, namespace, name, image, from).await }
            .boxed()
    }

    fn list_stateful_pods<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Vec<Replica>> {
        let client = self.client();
        async move { kubeapi::list_stateful_pods(&client, namespace, name).await }.boxed()
    }

    fn run_job<'a>(&'a self, namespace: &'a str, job: &'a JobSpec) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::run_job(&client, namespace, job).await }.boxed()
    }

    fn read_job<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Option<JobState>> {
        let client = self.client();
        async move { kubeapi::read_job(&client, namespace, name).await }.boxed()
    }

    fn run_scheduled_job<'a>(
        &'a self,
        namespace: &'a str,
        spec: &'a ScheduledJobSpec,
    ) -> DriverFuture<'a, ()> {
        let client = self.client();
        async move { kubeapi::run_scheduled_job(&client, namespace, spec).await }.boxed()
    }

    fn list_scheduled_runs<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Vec<ScheduledRun>> {
        let client = self.client();
        async move { kubeapi::list_scheduled_runs(&client, namespace, name).await }.boxed()
    }

    fn request_replica<'a>(
        &'a self,
        namespace: &'a str,
        replica: &'a str,
        port: u16,
        request: &'a HttpRequest,
    ) -> DriverFuture<'a, HttpResponse> {
        let client = self.client();
        async move {
            match &self.replica_path {
                Ok(ReplicaPath::Direct) => {
                    let pod = kubeapi::read_replica(&client, namespace, replica)
                        .await?
                        .ok_or_else(|| anyhow!("replica {namespace}/{replica} does not exist"))?;
                    let ip = pod.ip.ok_or_else(|| {
                        anyhow!("replica {namespace}/{replica} has no IP address yet")
                    })?;
                    plain_http::send(&format!("{ip}:{port}"), request).await
                }
                Ok(ReplicaPath::ApiProxy) => {
                    pod_proxy(&client, namespace, replica, port, request).await
                }
                Err(why) => bail!("cannot reach replica {namespace}/{replica}: {why}"),
            }
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
        async move {
            if let ServicePath::InCluster(generator) = &self.service_path {
                delete_generator(&self.client(), generator).await;
            }
            self.machines.shut_down().await
        }
        .boxed()
    }

    fn kube_client(&self) -> Option<kube::Client> {
        Some(self.client())
    }

    fn cut_off_member_client(&self) -> DriverFuture<'_, Option<kube::Client>> {
        self.machines.cut_off_member_client()
    }

    fn new_member_client(&self) -> DriverFuture<'_, Option<kube::Client>> {
        self.machines.new_member_client()
    }
}

impl KubernetesDriver {
    /// Kills the app containers of one replica on the engine the pods run on, the way
    /// `docker kill` does; they are found by the labels Kubernetes' Docker runtime puts on
    /// them, the sandbox (`POD`) excepted.
    async fn kill_container(&self, namespace: &str, replica: &str) -> anyhow::Result<()> {
        let engine = self
            .pod_engine
            .as_ref()
            .map_err(|why| anyhow!("cannot reach the containers of the pods: {why}"))?;
        let containers = engine
            .containers(&[(POD_NAMESPACE_LABEL, namespace), (POD_NAME_LABEL, replica)])
            .await?;
        let running: Vec<_> = containers
            .iter()
            .filter(|container| {
                container.running
                    && container
                        .labels
                        .get(CONTAINER_NAME_LABEL)
                        .is_some_and(|name| name != "POD")
            })
            .collect();
        if running.is_empty() {
            bail!(
                "replica {namespace}/{replica} has no running container to kill ({} containers of it found)",
                containers.len()
            );
        }
        for container in running {
            engine.kill(&container.id).await.with_context(|| {
                format!("failed to kill a container of replica {namespace}/{replica}")
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generators_outcomes_are_read_line_by_line_and_a_stranger_line_is_refused() {
        let outcomes = parse_outcomes(
            "1500\tok\t{\"pod\":\"web-1\"}\n20250\tfailed\tconnect 10.96.0.5:80: refused\n",
        )
        .expect("two outcomes");
        assert_eq!(
            outcomes,
            vec![
                (
                    Duration::from_micros(1500),
                    Ok("{\"pod\":\"web-1\"}".to_owned())
                ),
                (
                    Duration::from_micros(20250),
                    Err("connect 10.96.0.5:80: refused".to_owned())
                ),
            ]
        );
        assert!(parse_outcomes("").expect("none").is_empty());
        let error = parse_outcomes("12\tok\tfine\n<html>proxy error</html>\n")
            .expect_err("a line that is no outcome");
        assert!(format!("{error:#}").contains("<html>"), "{error:#}");
        assert!(parse_outcomes("soon\tok\tfine").is_err());
        assert!(parse_outcomes("12\tmaybe\tfine").is_err());
    }

    #[test]
    fn probe_images_follow_the_prefix_and_the_overrides() {
        let mut options = KubernetesOptions::default();
        assert_eq!(options.probe_image("v1"), "shipshape/probe:v1");
        options.image_prefix = Some("registry.example:5000/".to_owned());
        assert_eq!(
            options.probe_image("v2"),
            "registry.example:5000/shipshape/probe:v2"
        );
        options.images = vec![("broken".to_owned(), "mirror/probe:broken-1".to_owned())];
        assert_eq!(options.probe_image("broken"), "mirror/probe:broken-1");
        assert_eq!(
            options.probe_image("v1"),
            "registry.example:5000/shipshape/probe:v1"
        );
    }

    #[test]
    fn the_kubeconfig_given_comes_first() {
        let options = KubernetesOptions {
            kubeconfig: Some(PathBuf::from("/tmp/given")),
            ..KubernetesOptions::default()
        };
        assert_eq!(
            options.kubeconfig_path().expect("path"),
            PathBuf::from("/tmp/given")
        );
    }
}
