//! # The node agent: the seed's kubelet
//!
//! "Each worker node is managed by the master; the kubelet runs the pods the master places
//! on it." One agent per node: it registers its Node (capacity, labels, address), renews a
//! heartbeat (a Lease every second, the status when it changes), watches the pods bound to
//! it, and runs each as Docker containers, reporting their status back. It is an API client
//! like any other: it never touches the store, and it never touches a container without its
//! cluster's and node's labels.
//!
//! Files: [`heartbeat`] keeps the node known to be alive; [`runtime`] is everything asked
//! of Docker; [`pod_worker`] is one pod's life (sandbox, containers, restarts, probes,
//! termination); [`probes`] runs liveness and readiness checks; [`status`] computes a pod's
//! status from what is seen; [`logs`] serves container output to the apiserver for
//! `kubectl logs`, [`streams`] joins `kubectl exec` and `attach` to a process, and
//! [`port_forward`] (with SPDY's framing in [`spdy`]) carries `kubectl port-forward`'s
//! connections to a pod's ports. (The scale benchmark's hollow nodes, which do all of this
//! through the API without Docker, live with the benchmarks and reuse [`register`], the
//! [`heartbeat`] and [`status`].)
//!
//! ```text
//! apiserver ──watch pods (spec.nodeName=me)──▶ agent ──one task per pod──▶ pod_worker ──▶ Docker
//!     ▲                                                                      │
//!     └───────────────── status patches, node heartbeats ────────────────────┘
//! ```

mod configuration;
pub mod heartbeat;
pub mod logs;
mod pod_worker;
mod port_forward;
pub mod probes;
pub mod runtime;
mod spdy;
mod stats;
pub mod status;
mod streams;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::api::meta;
use runtime::Runtime;

/// How one node agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name.
    pub node_name: String,
    /// The cluster id: labels every container, names the Docker network.
    pub cluster: String,
    /// The node's address (InternalIP, and where its log server listens).
    pub address: IpAddr,
    /// Allocatable CPU, as a Kubernetes quantity (`4`, `500m`).
    pub cpu: String,
    /// Allocatable memory, as a Kubernetes quantity (`8Gi`).
    pub memory: String,
    /// How many pods it takes.
    pub max_pods: u32,
    /// Node labels besides the standard ones.
    pub labels: BTreeMap<String, String>,
    /// Taints, as `key=value:Effect` (or `key:Effect`).
    pub taints: Vec<String>,
    /// How often the heartbeat is renewed.
    pub heartbeat: Duration,
    /// How often each pod is re-synced without a change.
    pub sync_period: Duration,
    /// First restart back-off after the first crash.
    pub backoff_initial: Duration,
    /// The back-off doubles up to this.
    pub backoff_max: Duration,
    /// Where emptyDir volumes live (`<data_dir>/pods/<uid>/volumes/<name>`).
    pub data_dir: PathBuf,
    /// The token the apiserver presents to fetch logs.
    pub token: String,
    /// Remove this node's containers when the agent stops (true for `shipshape up`).
    pub cleanup_on_exit: bool,
    /// How to open fresh connections when a heartbeat fails, if the agent knows.
    pub reconnect: Option<Reconnect>,
    /// The counts of the service proxy of this process, if one runs beside the agent: the
    /// agent reports them at `GET /stats/proxy`.
    pub proxy_meter: Option<crate::proxy::meter::Meter>,
}

/// What the heartbeat needs to start over with fresh connections after one fails, as a
/// kubelet closes all its connections then: behind a front door (a load balancer) the
/// failing one may be pinned to an apiserver that cannot write — a control-plane member
/// cut off from the others — while the others would take the heartbeat.
/// (Its `Debug` shows the server only: the credentials' own keeps the token out.)
#[derive(Clone, Debug)]
pub struct Reconnect(pub crate::client::Credentials);

impl AgentConfig {
    /// A node with the host's size and shipshape's default timings.
    pub fn new(node_name: &str, cluster: &str, data_dir: PathBuf, token: &str) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        AgentConfig {
            node_name: node_name.to_owned(),
            cluster: cluster.to_owned(),
            address: IpAddr::from([127, 0, 0, 1]),
            cpu: cpus.to_string(),
            memory: host_memory().unwrap_or_else(|| "8Gi".into()),
            max_pods: 110,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            heartbeat: Duration::from_secs(1),
            sync_period: Duration::from_millis(500),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            data_dir,
            token: token.to_owned(),
            cleanup_on_exit: true,
            reconnect: None,
            proxy_meter: None,
        }
    }
}

/// The host's memory from /proc/meminfo, as a quantity.
fn host_memory() -> Option<String> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total = info.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kb: u64 = total.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(format!("{kb}Ki"))
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Docker failed.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// The apiserver refused or failed.
    #[error("failed to {action} node {node}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The node.
        node: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A taint flag does not parse.
    #[error("invalid taint {0:?}: expected key=value:Effect or key:Effect")]
    Taint(String),
    /// The log server could not listen.
    #[error("failed to listen for log requests: {0}")]
    Listen(std::io::Error),
}

fn parse_taint(t: &str) -> Result<Value, AgentError> {
    let effects = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
    let (kv, effect) = t
        .rsplit_once(':')
        .filter(|(_, effect)| effects.contains(effect))
        .ok_or_else(|| AgentError::Taint(t.into()))?;
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    if key.is_empty() {
        return Err(AgentError::Taint(t.into()));
    }
    let mut taint = json!({"key": key, "effect": effect});
    if !value.is_empty() {
        taint["value"] = json!(value);
    }
    Ok(taint)
}

fn node_status(config: &AgentConfig, log_port: u16, now: &str, previous: Option<&Value>) -> Value {
    let since = status::since(previous, "Ready", "True", now);
    let resources =
        json!({"cpu": config.cpu, "memory": config.memory, "pods": config.max_pods.to_string()});
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "shipshape node agent is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": since,
        }],
        "addresses": [
            {"type": "InternalIP", "address": config.address.to_string()},
            {"type": "Hostname", "address": config.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": log_port}},
        "nodeInfo": {
            "kubeletVersion": format!("v1.33.0-shipshape.{}", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "", "containerRuntimeVersion": "docker",
            "operatingSystem": std::env::consts::OS, "architecture": std::env::consts::ARCH,
            "osImage": "", "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": "",
        },
    })
}

/// Creates the Node, or updates the one a previous run of this agent left.
pub async fn register(
    nodes: &Api<Node>,
    config: &AgentConfig,
    log_port: u16,
) -> Result<(), AgentError> {
    let api_err = |action| {
        let node = config.node_name.clone();
        move |source| AgentError::Api {
            action,
            node,
            source,
        }
    };
    let mut labels = config.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), config.node_name.clone());
    labels.insert("kubernetes.io/os".into(), std::env::consts::OS.into());
    labels.insert("kubernetes.io/arch".into(), "amd64".into());
    let taints: Result<Vec<_>, _> = config.taints.iter().map(|t| parse_taint(t)).collect();
    let taints = taints?;
    let now = meta::now_rfc3339();
    let status = node_status(config, log_port, &now, None);
    let mut spec = json!({});
    if !taints.is_empty() {
        spec["taints"] = json!(taints);
    }
    let body = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": config.node_name, "labels": labels},
        "spec": spec,
        "status": status,
    });
    let node: Node =
        serde_json::from_value(body).map_err(|e| api_err("build")(kube::Error::SerdeError(e)))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Re-registering: keep what others set (cordon), refresh labels and status.
            let name = &config.node_name;
            let patch = Patch::Merge(json!({"metadata": {"labels": labels}}));
            let params = PatchParams::default();
            let patched = nodes.patch(name, &params, &patch).await;
            patched.map_err(api_err("update"))?;
            let posted = post_status(nodes, name, status).await;
            posted.map_err(api_err("update the status of"))?;
        }
        Err(e) => return Err(api_err("register")(e)),
    }
    tracing::info!(node = %config.node_name, cpu = %config.cpu, memory = %config.memory, "node registered");
    Ok(())
}

/// Merges `status` into node `name`'s status.
async fn post_status(nodes: &Api<Node>, name: &str, status: Value) -> Result<(), kube::Error> {
    let patch = Patch::Merge(json!({ "status": status }));
    let params = PatchParams::default();
    nodes.patch_status(name, &params, &patch).await.map(drop)
}

/// How long a stopping agent waits for its pod workers to finish what they are doing.
const WORKER_STOP: Duration = Duration::from_secs(10);

/// Runs the agent until `shutdown` turns true.
pub async fn run(
    client: kube::Client,
    docker: bollard::Docker,
    config: AgentConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let config = Arc::new(config);
    let runtime = Runtime::new(docker.clone(), &config.cluster, &config.node_name);
    runtime::ensure_network(&docker).await?;
    let log_server = logs::LogServer::bind(
        config.address,
        runtime.clone(),
        config.token.clone(),
        config.proxy_meter.clone(),
    );
    let log_server = log_server.await.map_err(AgentError::Listen)?;
    let log_port = log_server.port();
    let nodes: Api<Node> = Api::all(client.clone());
    register(&nodes, &config, log_port).await?;

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(log_server.serve(shutdown.clone()));
    let beats = heartbeat::run(nodes.clone(), config.clone(), log_port, shutdown.clone());
    tasks.spawn(beats);

    let pods: Api<Pod> = Api::all(client.clone());
    let watch_config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", config.node_name));
    let mut events = watcher(pods, watch_config).boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut worker_tasks = tokio::task::JoinSet::new();
    let mut seen_in_relist: Option<Vec<String>> = None;
    let mut sweep = tokio::time::interval(Duration::from_secs(2));

    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            _ = sweep.tick() => {
                workers.retain(|_, tx| !tx.is_closed());
                while worker_tasks.try_join_next().is_some() {}
                sweep_orphans(&runtime, &workers).await;
            }
            event = events.next() => {
                let Some(event) = event else { break };
                match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                        if let Some(seen) = seen_in_relist.as_mut() {
                            seen.push(pod.metadata.uid.clone().unwrap_or_default());
                        }
                        dispatch(&mut workers, &mut worker_tasks, &runtime, &client, &config, pod);
                    }
                    Ok(watcher::Event::Delete(pod)) => {
                        // The worker removes the pod's containers and then ends; it stays
                        // listed until it has, so the orphan sweep does not remove the same
                        // containers at the same time (two removals of one container can
                        // leave a stale endpoint on the network in Docker).
                        let uid = pod.metadata.uid.unwrap_or_default();
                        if let Some(tx) = workers.get(&uid) {
                            let _ = tx.send(None);
                        }
                    }
                    Ok(watcher::Event::Init) => seen_in_relist = Some(Vec::new()),
                    Ok(watcher::Event::InitDone) => {
                        // Pods that vanished while we were not watching.
                        if let Some(seen) = seen_in_relist.take() {
                            for (_, tx) in workers.iter().filter(|(uid, _)| !seen.contains(uid)) {
                                let _ = tx.send(None);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    }
    // Stop every pod worker and wait until each has stopped, so none creates a container
    // after the sweep below has listed them. A worker ends at its next step once its
    // channel closes; one still busy after the wait (a long grace period) is cancelled.
    drop(workers);
    let finished = async { while worker_tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(WORKER_STOP, finished).await.is_err() {
        worker_tasks.shutdown().await;
    }
    tasks.abort_all();
    if config.cleanup_on_exit {
        let removed = runtime::reap_node(&runtime).await;
        tracing::info!(node = %config.node_name, removed, "node agent stopped; containers removed");
    }
    Ok(())
}

/// Resolves once `shutdown` is true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn dispatch(
    workers: &mut HashMap<String, watch::Sender<Option<Pod>>>,
    worker_tasks: &mut tokio::task::JoinSet<()>,
    runtime: &Runtime,
    client: &kube::Client,
    config: &Arc<AgentConfig>,
    pod: Pod,
) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if let Some(tx) = workers.get(&uid)
        && !tx.is_closed()
    {
        let _ = tx.send(Some(pod));
        return;
    }
    let (tx, rx) = watch::channel(Some(pod));
    let worker = pod_worker::run(runtime.clone(), client.clone(), config.clone(), rx);
    worker_tasks.spawn(worker);
    workers.insert(uid, tx);
}

/// Removes containers of this node whose pod no longer runs here.
async fn sweep_orphans(runtime: &Runtime, workers: &HashMap<String, watch::Sender<Option<Pod>>>) {
    let Ok(mut containers) = runtime.list().await else {
        return;
    };
    // Sandboxes last: app containers live in their network namespaces.
    containers.sort_by_key(|(_, name, _)| name == runtime::PAUSE);
    for (uid, name, id) in containers {
        if !workers.contains_key(&uid) {
            tracing::info!(pod_uid = %uid, container = %name, "removing a container whose pod is not on this node");
            let _ = runtime.remove(&id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse() {
        assert_eq!(
            parse_taint("gpu=true:NoSchedule").expect("parses"),
            json!({"key": "gpu", "value": "true", "effect": "NoSchedule"})
        );
        assert_eq!(
            parse_taint("dedicated:NoExecute").expect("parses"),
            json!({"key": "dedicated", "effect": "NoExecute"})
        );
        assert!(parse_taint("nokey").is_err());
        assert!(parse_taint("a=b:Sometimes").is_err());
    }
}
