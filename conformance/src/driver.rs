//! The `Driver` trait: the one thing a new orchestrator implements to be certified.
//!
//! A driver translates the kit's plain requests — deploy a workload with N replicas,
//! scale it, change its image, roll it back, expose it as a service, tell me where its
//! replicas run — into whatever the system under test speaks: the Kubernetes API for the
//! reference and for real clusters, the Docker API for Swarm. The features never see
//! those words; they see the types below.
//!
//! Every method that talks to the system returns a boxed future (`DriverFuture`) so the
//! trait stays dyn-compatible: a run picks its driver at runtime (`SHIPSHAPE_DRIVER`) and
//! holds it as `Arc<dyn Driver>`.
//!
//! A method returns once the system has *accepted* the request, not once the cluster has
//! converged: convergence is what the features observe, through `list_replicas`,
//! `read_replica` and `reach_service`, within the times they state. (One exception:
//! `add_node` returns once the node is ready, as a machine is only "added" once it can take
//! work; so does restarting a node.) A driver that cannot do something yet returns an error
//! saying so; it never reports success for work it did not do.
//!
//! Faults ([`Fault`]) are injected through the driver too ([`Driver::inject`]), and they
//! are real: the driver kills a container on its machine, kills or stops a node's agent
//! process, wipes a lost machine's containers — it does not ask the orchestrator to pretend.
//! Which kinds it can inject it says in [`Driver::supports`]; a scenario injecting another
//! kind is not applicable.
//!
//! Beyond the basics every system has, a driver says which [`Capability`]s it has
//! ([`Driver::has`]); the methods of a capability it lacks keep their default, an error
//! naming the capability, and the scenarios tagged with it are not applicable. Pods are
//! described in the same plain terms as the rest ([`PodSpec`]: containers, image,
//! environment, restart policy, a shared volume, health checks, requests, placement), so a
//! Kubernetes-speaking driver builds a Pod from them and another system does what it can.
//!
//! Errors are `anyhow::Error`: the kit is an edge of the project — every error ends up as
//! the message of a failed step, and no caller branches on its kind — so each message
//! must say what failed and for which object.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use anyhow::{Context as _, anyhow, bail};
use futures::FutureExt as _;
use futures::future::BoxFuture;

/// The future every driver operation returns: boxed so `dyn Driver` works.
pub type DriverFuture<'a, T> = BoxFuture<'a, anyhow::Result<T>>;

/// One request of a traffic generator inside the system: when it ended, counted from the
/// generator's start, and the answer's body or why it failed.
pub type InsideOutcome = (std::time::Duration, Result<String, String>);

/// A traffic generator running inside the system ([`Driver::generate_traffic_inside`]);
/// it keeps its outcomes until the kit collects them.
pub trait InsideTraffic: Send + Sync {
    /// The outcomes since the last call, in order.
    fn collect(&mut self) -> DriverFuture<'_, Vec<InsideOutcome>>;

    /// Stops the generator once its request in flight is done, and returns its last
    /// outcomes.
    fn stop(&mut self) -> DriverFuture<'_, Vec<InsideOutcome>>;
}

/// What a deployment is made of, in the seed's words: a name, an image, how many
/// replicas, the labels that identify its replicas, and where they may run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentSpec {
    /// Name of the deployment, unique within its namespace.
    pub name: String,
    /// Container image every replica runs (one container per replica).
    pub image: String,
    /// Desired number of replicas.
    pub replicas: u32,
    /// Labels carried by the deployment and its replicas; they also select the replicas.
    pub labels: BTreeMap<String, String>,
    /// Which nodes its replicas may be placed on.
    pub placement: Placement,
    /// What each replica asks of the node it is placed on.
    pub requests: Resources,
    /// The port each replica listens on, if any.
    pub port: Option<u16>,
    /// A failing readiness check takes a replica out of service (out of the rotation of
    /// the services in front of it); without one, a running replica is ready.
    pub readiness: Option<HealthCheck>,
    /// How it rolls out a new template, and how much history it keeps.
    pub rollout: Rollout,
    /// Environment variables of each replica's container (how the probe is told to start
    /// slowly, stop slowly, or make requests cost).
    pub env: BTreeMap<String, String>,
    /// How long a replica is given to stop after it is asked to, before it is killed
    /// (`None`: the system's default).
    pub termination_grace_seconds: Option<u32>,
}

/// How a deployment replaces its replicas when its template changes, and what it keeps;
/// `None` everywhere means the system's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// How old replicas make way for new ones.
    pub strategy: Option<Strategy>,
    /// How long a new replica must be ready before it counts as available.
    pub min_ready_seconds: Option<u32>,
    /// How long a rollout may go without progress before the system says it stalled.
    pub progress_deadline_seconds: Option<u32>,
    /// How many old revisions are kept to roll back to.
    pub revision_history_limit: Option<u32>,
}

/// How old replicas make way for new ones in a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// A few at a time ("gray" update), never more than `max_surge` above the desired
    /// count nor `max_unavailable` below it (`None`: the system's default).
    RollingUpdate {
        /// How many replicas may run above the desired count.
        max_surge: Option<Amount>,
        /// How many may be unavailable below it.
        max_unavailable: Option<Amount>,
    },
    /// All old replicas are gone before any new one starts.
    Recreate,
}

/// A number of replicas, absolute or as a share of the desired count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    /// So many replicas.
    Count(u32),
    /// So many percent of the desired count.
    Percent(u32),
}

impl FromStr for Amount {
    type Err = anyhow::Error;

    /// `2` or `25%`.
    fn from_str(text: &str) -> anyhow::Result<Self> {
        match text.strip_suffix('%') {
            Some(percent) => percent
                .trim()
                .parse()
                .map(Amount::Percent)
                .with_context(|| format!("{text:?} is not a percentage")),
            None => text
                .trim()
                .parse()
                .map(Amount::Count)
                .with_context(|| format!("{text:?} is not a whole number")),
        }
    }
}

/// Where a deployment's rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutStatus {
    /// Every replica runs the current template and is available; no old one is left.
    Complete,
    /// Not yet, and why.
    InProgress(String),
    /// The system gave up on it (a progress deadline passed, an update paused on
    /// failures), and says why.
    Stalled(String),
}

/// One revision of a deployment's history: a template it had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionEntry {
    /// Its number (1 is the first).
    pub number: u64,
    /// The image its template runs.
    pub image: String,
    /// Why it was made, if anyone said.
    pub change_cause: Option<String>,
}

/// Which nodes a replica may be placed on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Labels a node must carry (all of them, with these values).
    pub node_selector: BTreeMap<String, String>,
    /// Taints the replica tolerates: a node carrying one of these does not keep it off.
    pub tolerations: Vec<Taint>,
}

/// An amount of CPU and memory, asked for by a container or offered by a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Thousandths of a CPU; `None` asks for nothing (or, for a node, the system's default).
    pub millicpu: Option<u64>,
    /// Bytes of memory; `None` asks for nothing (or, for a node, the system's default).
    pub memory_bytes: Option<u64>,
}

/// What a taint does to pods that do not tolerate it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaintEffect {
    /// New pods are not placed on the node.
    NoSchedule,
    /// New pods are placed on the node only if nowhere else will do.
    PreferNoSchedule,
    /// New pods are not placed on the node, and running ones are evicted.
    NoExecute,
}

/// A taint: a mark on a node that keeps off every pod not tolerating it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    /// The taint's key.
    pub key: String,
    /// Its value (may be empty).
    pub value: String,
    /// What it does.
    pub effect: TaintEffect,
}

impl TaintEffect {
    /// The effect's name, as written in `key=value:Effect`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

impl FromStr for TaintEffect {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        match text {
            "NoSchedule" => Ok(TaintEffect::NoSchedule),
            "PreferNoSchedule" => Ok(TaintEffect::PreferNoSchedule),
            "NoExecute" => Ok(TaintEffect::NoExecute),
            other => bail!(
                "unknown taint effect {other:?}; expected NoSchedule, PreferNoSchedule or NoExecute"
            ),
        }
    }
}

impl FromStr for Taint {
    type Err = anyhow::Error;

    /// Parses `key=value:Effect` or `key:Effect`.
    fn from_str(text: &str) -> anyhow::Result<Self> {
        let (pair, effect) = text
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("taint {text:?} is not of the form key=value:Effect"))?;
        let effect = effect
            .parse()
            .with_context(|| format!("taint {text:?} does not parse"))?;
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key.is_empty() {
            bail!("taint {text:?} has no key");
        }
        Ok(Taint {
            key: key.to_owned(),
            value: value.to_owned(),
            effect,
        })
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect.as_str())
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect.as_str())
        }
    }
}

/// A node to add to the cluster: its size, its labels and its taints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSpec {
    /// Name of the node, unique in the cluster.
    pub name: String,
    /// What it offers to pods (`None`: the system's default, typically the host's).
    pub allocatable: Resources,
    /// How many pods it takes (`None`: the system's default).
    pub max_pods: Option<u32>,
    /// Labels it carries.
    pub labels: BTreeMap<String, String>,
    /// Taints it carries.
    pub taints: Vec<Taint>,
}

/// A node of the cluster as the system reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// Name of the node.
    pub name: String,
    /// Whether it reports itself ready to run pods.
    pub ready: bool,
    /// Whether new pods may be placed on it (not cordoned).
    pub schedulable: bool,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its taints.
    pub taints: Vec<Taint>,
    /// What it offers to pods.
    pub allocatable: Resources,
}

/// When the containers of a pod are started again after they exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Always, whatever the exit code (a long-running service).
    #[default]
    Always,
    /// Only after a failure (a non-zero exit code): a job retried until it succeeds.
    OnFailure,
    /// Never: the pod runs to completion once.
    Never,
}

impl FromStr for RestartPolicy {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        match text {
            "Always" => Ok(RestartPolicy::Always),
            "OnFailure" => Ok(RestartPolicy::OnFailure),
            "Never" => Ok(RestartPolicy::Never),
            other => {
                bail!("unknown restart policy {other:?}; expected Always, OnFailure or Never")
            }
        }
    }
}

/// How a health check looks at a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckAction {
    /// An HTTP GET of `path` on `port` of the pod passes with a 2xx or 3xx answer.
    HttpGet {
        /// Port of the pod.
        port: u16,
        /// Path, with its query if any.
        path: String,
    },
    /// A TCP connection to `port` of the pod opens.
    TcpConnect {
        /// Port of the pod.
        port: u16,
    },
    /// The command, run inside the container, exits 0.
    Exec {
        /// The command and its arguments.
        command: Vec<String>,
    },
}

/// A periodic health check of a container (a liveness or readiness probe).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// What is checked.
    pub action: CheckAction,
    /// Seconds between two checks.
    pub period_seconds: u32,
    /// Failures in a row before the container counts as failing.
    pub failure_threshold: u32,
}

/// One container of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Name of the container, unique within its pod.
    pub name: String,
    /// The image it runs.
    pub image: String,
    /// Replaces the image's command when not empty.
    pub command: Vec<String>,
    /// Replaces the image's arguments when not empty.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// The port it listens on, if any.
    pub port: Option<u16>,
    /// What it asks of its node.
    pub requests: Resources,
    /// A failing liveness check gets the container restarted.
    pub liveness: Option<HealthCheck>,
    /// A failing readiness check takes the pod out of service.
    pub readiness: Option<HealthCheck>,
    /// Whether it asks for full privileges on its node.
    pub privileged: bool,
}

/// A pod run on its own (not by a deployment): one or more containers that share one IP
/// address and, if asked, one volume.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSpec {
    /// Name of the pod, unique within its namespace.
    pub name: String,
    /// Labels it carries.
    pub labels: BTreeMap<String, String>,
    /// Its containers, at least one.
    pub containers: Vec<ContainerSpec>,
    /// When its containers are started again after they exit.
    pub restart_policy: RestartPolicy,
    /// If set, an empty volume the pod's containers share, mounted at this path in each.
    pub shared_volume: Option<String>,
    /// Which nodes it may be placed on.
    pub placement: Placement,
    /// How long it is given to stop after it is asked to, before it is killed (`None`:
    /// the system's default).
    pub termination_grace_seconds: Option<u32>,
}

/// A daemon: one pod on every node that may run it ([`Capability::Daemons`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonSpec {
    /// Name of the daemon, unique within its namespace.
    pub name: String,
    /// The image its pods run (one container per pod).
    pub image: String,
    /// The labels a node must carry to run it (none: every node may).
    pub node_selector: BTreeMap<String, String>,
}

/// A stateful set: pods with stable names, `<name>-0`, `<name>-1`, …, started one at a time
/// in that order and stopped in the reverse one ([`Capability::StatefulSets`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatefulSpec {
    /// Name of the set, unique within its namespace; its pods are named after it.
    pub name: String,
    /// How many pods it runs.
    pub replicas: u32,
    /// The container of each pod, its readiness check included.
    pub container: ContainerSpec,
}

/// An autoscaler of a deployment: between `min` and `max` replicas, as many as keep each
/// one's CPU use near `cpu_percent` of what it asks for ([`Capability::Autoscaling`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoscaleSpec {
    /// The deployment it scales.
    pub deployment: String,
    /// The fewest replicas it keeps.
    pub min: u32,
    /// The most replicas it ever runs.
    pub max: u32,
    /// The share of its CPU request each replica should use.
    pub cpu_percent: u32,
    /// How long the load must have stayed low before replicas are removed.
    pub scale_down_after: std::time::Duration,
}

/// What an autoscaler reports: what it last measured, the replicas it wants, and whether
/// it can measure what it scales on, and why not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoscalerStatus {
    /// The replicas it wants now.
    pub desired: u32,
    /// The replicas there were when it last measured.
    pub current: u32,
    /// The average CPU use of those replicas when it last measured, in percent of what
    /// they ask for; `None` while it has measured none.
    pub cpu_percent: Option<u32>,
    /// `None` while it has not said; `Some(Ok(()))` when it measures, `Some(Err(why))`
    /// when it cannot.
    pub measuring: Option<Result<(), String>>,
}

/// A job: pods that each do a piece of work and end, run until enough of them have ended
/// well ([`Capability::Jobs`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobSpec {
    /// Name of the job, unique within its namespace.
    pub name: String,
    /// The image each pod runs (one container per pod).
    pub image: String,
    /// How many pods must end well for the job to be complete.
    pub completions: u32,
    /// How many of its pods may run at once.
    pub parallelism: u32,
    /// How many times a failed pod is tried again before the job fails.
    pub retries: u32,
    /// Environment of each pod's container (how the probe is told to work and end).
    pub env: BTreeMap<String, String>,
}

/// A job as the system reports it: how it ended, if it has, and the pods it ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobState {
    /// `None` while it runs.
    pub outcome: Option<JobOutcome>,
    /// Every pod it ran that the system still knows, finished ones included.
    pub pods: Vec<JobPod>,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Enough of its pods ended well.
    Complete,
    /// It gave up, for the system's reason.
    Failed(String),
}

/// One pod a job ran: its phase, and when its container ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobPod {
    /// The pod's (task's) name.
    pub name: String,
    /// Its phase.
    pub phase: Phase,
    /// When its container started, once it has.
    pub started: Option<SystemTime>,
    /// When its container ended, once it has.
    pub finished: Option<SystemTime>,
}

/// A scheduled job: a job started each time a schedule comes due
/// ([`Capability::ScheduledJobs`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScheduledJobSpec {
    /// Name of the scheduled job, unique within its namespace.
    pub name: String,
    /// The schedule, in cron's five fields, read in UTC (`* * * * *`: every minute).
    pub schedule: String,
    /// The job started each time: its name is the system's to choose.
    pub job: JobSpec,
}

/// One job a scheduled job started: when the system created it, and how it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledRun {
    /// The job's name.
    pub name: String,
    /// When the system created the job, by its own clock.
    pub created: SystemTime,
    /// The job and the pods it ran.
    pub job: JobState,
}

/// Whether the system took a pod on when it was submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Accepted: the pod exists and its life is to be observed.
    Accepted,
    /// Refused outright when submitted, with the system's reason.
    Refused(String),
}

/// One HTTP request sent to a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, `PUT`, ...
    pub method: String,
    /// Path, with its query if any.
    pub path: String,
    /// The request body (empty for none).
    pub body: String,
}

impl HttpRequest {
    /// A GET of `path`, without a body.
    pub fn get(path: &str) -> Self {
        Self {
            method: "GET".to_owned(),
            path: path.to_owned(),
            body: String::new(),
        }
    }
}

/// The answer to an [`HttpRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

impl HttpResponse {
    /// The answer, if its status is 2xx; otherwise an error quoting status and body.
    pub fn succeeded(self) -> anyhow::Result<Self> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            bail!("answered {}: {:?}", self.status, self.body)
        }
    }
}

/// Whether a driver can do something and, if not, why (the report quotes the reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// It can.
    Yes,
    /// It cannot, for this reason (what the system lacks, or what the driver could not find).
    No(String),
}

impl Support {
    /// Whether it can.
    pub fn is_yes(&self) -> bool {
        matches!(self, Support::Yes)
    }

    /// Why not, if it cannot.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Support::Yes => None,
            Support::No(reason) => Some(reason),
        }
    }
}

/// Something beyond the basics a driver may be able to do. Each has a capability tag; a
/// scenario carrying the tag of a capability the driver lacks is *not applicable*.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// `@multi-node`: the cluster has at least three nodes that are ready and take
    /// replicas, so replicas can be spread, moved and replaced on other machines.
    MultiNode,
    /// `@add-node`: add a node of a given size, labels and taints, and remove it again
    /// ([`Driver::add_node`], [`Driver::remove_node`]).
    AddNode,
    /// `@label-node`: set and remove labels of an existing node ([`Driver::label_node`]).
    LabelNode,
    /// `@taint-node`: add and remove taints of an existing node ([`Driver::taint_node`]).
    TaintNode,
    /// `@pods`: run a pod described by a [`PodSpec`] and read it back
    /// ([`Driver::run_pod`], [`Driver::read_replica`]).
    Pods,
    /// `@reach-replica`: send HTTP requests to one replica's port
    /// ([`Driver::request_replica`]).
    ReachReplica,
    /// `@drain-node`: cordon a node (no new replicas are placed on it), uncordon it, and
    /// drain it (cordon it and move every replica off it) ([`Driver::cordon_node`],
    /// [`Driver::drain_node`]).
    DrainNode,
    /// `@daemons`: run a daemon, one pod on every node that may run it, change its image,
    /// and list its pods ([`Driver::run_daemon`], [`Driver::set_daemon_image`],
    /// [`Driver::list_daemon_pods`]).
    Daemons,
    /// `@jobs`: run a job of pods to completion, and read it back ([`Driver::run_job`],
    /// [`Driver::read_job`]).
    Jobs,
    /// `@scheduled-jobs`: start a job each time a schedule comes due, and list the jobs
    /// started ([`Driver::run_scheduled_job`], [`Driver::list_scheduled_runs`]).
    ScheduledJobs,
    /// `@stateful-sets`: run a set of pods with stable names and an order, scale it,
    /// change its image from an ordinal up, and list its pods ([`Driver::run_stateful_set`],
    /// [`Driver::scale_stateful_set`], [`Driver::set_stateful_image`],
    /// [`Driver::list_stateful_pods`]).
    StatefulSets,
    /// `@autoscaling`: keep a deployment's replicas between a minimum and a maximum, as
    /// many as its CPU use asks for, and say why it cannot ([`Driver::autoscale`],
    /// [`Driver::read_autoscaler`]).
    Autoscaling,
}

impl Capability {
    /// Every capability, in the order the banner lists them.
    pub const ALL: [Capability; 12] = [
        Capability::MultiNode,
        Capability::AddNode,
        Capability::LabelNode,
        Capability::TaintNode,
        Capability::Pods,
        Capability::ReachReplica,
        Capability::DrainNode,
        Capability::Jobs,
        Capability::ScheduledJobs,
        Capability::Daemons,
        Capability::StatefulSets,
        Capability::Autoscaling,
    ];

    /// The capability tag scenarios use to say they need it.
    pub fn tag(self) -> &'static str {
        match self {
            Capability::MultiNode => "multi-node",
            Capability::AddNode => "add-node",
            Capability::LabelNode => "label-node",
            Capability::TaintNode => "taint-node",
            Capability::Pods => "pods",
            Capability::ReachReplica => "reach-replica",
            Capability::DrainNode => "drain-node",
            Capability::Jobs => "jobs",
            Capability::ScheduledJobs => "scheduled-jobs",
            Capability::Daemons => "daemons",
            Capability::StatefulSets => "stateful-sets",
            Capability::Autoscaling => "autoscaling",
        }
    }
}

/// How many ready nodes taking replicas [`Capability::MultiNode`] needs.
pub const MULTI_NODE: usize = 3;

/// A service: a stable endpoint that balances traffic over a deployment's ready replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Name of the service, unique within its namespace.
    pub name: String,
    /// The deployment whose replicas receive the traffic.
    pub deployment: String,
    /// Port the service listens on.
    pub port: u16,
    /// Port of the replicas the traffic is sent to.
    pub target_port: u16,
}

/// Which revision a rollback returns to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revision {
    /// The revision before the current one ("one-click rollback").
    Previous,
    /// A numbered revision from the deployment's history (1 is the first).
    Number(u64),
}

/// The lifecycle phase of a replica, with the seed's meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Accepted, but not all of its containers are running yet (scheduling, pulling).
    Pending,
    /// Bound to a node, and at least one container is running.
    Running,
    /// Every container terminated successfully and will not be restarted.
    Succeeded,
    /// Every container terminated, and at least one failed.
    Failed,
    /// The state cannot be obtained, typically because the node cannot be reached.
    Unknown,
}

/// One replica of a deployment as the system reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Name of the replica (a pod, a task, ...).
    pub name: String,
    /// The system's identity of the replica (a uid): a replica replaced by a new one of
    /// the same name has a new id.
    pub id: String,
    /// Its lifecycle phase.
    pub phase: Phase,
    /// The node it was placed on, if it has been placed.
    pub node: Option<String>,
    /// Whether it is ready to receive service traffic.
    pub ready: bool,
    /// How many times its containers were restarted, all together.
    pub restarts: u32,
    /// Its IP address, once it has one.
    pub ip: Option<String>,
    /// Why it is not (or no longer) running as it should, in the system's words: not
    /// placed on any node, refused by its node, a container waiting or failed.
    pub reason: Option<String>,
    /// The details that go with `reason`.
    pub message: Option<String>,
    /// Whether it is being deleted: the system was asked to remove it and has not finished
    /// (its node has not stopped it yet). It no longer counts as one of the deployment's
    /// replicas.
    pub terminating: bool,
    /// The image of its (first) container.
    pub image: Option<String>,
    /// Which template of its deployment it runs, as the system tells them apart (an
    /// opaque name: replicas of one template share it).
    pub template: Option<String>,
    /// Since when it has been ready, if it is.
    pub ready_since: Option<SystemTime>,
}

/// A fault the kit can inject. Faults are real: processes are killed, not asked to stop.
///
/// Each kind has a capability tag ([`Fault::tag`]); a scenario that injects a fault
/// carries its tag, and is *not applicable* to a driver that does not support it
/// ([`Driver::supports`]). [`Fault::Heal`] goes with [`Fault::PartitionNode`]: a driver
/// that can partition a node can heal it, and both share the tag `@partition-node`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Kill the control plane abruptly (SIGKILL), start it again on the same data, and
    /// reconnect. Every acknowledged write must survive. (`@restart-control-plane`)
    RestartControlPlane,
    /// Kill the container of one replica, abruptly (as the machine's kernel would on
    /// running out of memory); the replica itself stays, and its node must start the
    /// container again. (`@kill-container`)
    KillContainer {
        /// Namespace of the replica.
        namespace: String,
        /// Name of the replica.
        replica: String,
    },
    /// Delete one replica through the control plane, as an operator would.
    /// (`@delete-replica`)
    DeleteReplica {
        /// Namespace of the replica.
        namespace: String,
        /// Name of the replica.
        replica: String,
    },
    /// Lose a node, as when its machine dies: its agent is gone at once, and so are all
    /// its containers. The node stays lost until it is restarted
    /// ([`Fault::RestartNode`]). (`@lose-node`)
    LoseNode {
        /// Name of the node.
        node: String,
    },
    /// Cut a node's agent off from the control plane; its containers keep running, so the
    /// replicas on it are still there, but nobody can tell. (`@partition-node`)
    PartitionNode {
        /// Name of the node.
        node: String,
    },
    /// Undo every partition injected so far: the agents talk to the control plane again.
    /// (`@partition-node`)
    Heal,
    /// Restart a node: its agent (if it still runs) is stopped as an operator stops it,
    /// then started again under the same name; returns once the node is ready again. Also
    /// how a lost node comes back. (`@restart-node`)
    RestartNode {
        /// Name of the node.
        node: String,
    },
    /// Kill the member of a control plane of several members that leads, abruptly
    /// (SIGKILL), as when its machine dies. The others must elect a new leader and keep
    /// serving; the member may come back on its own later, as a machine that reboots.
    /// (`@lose-control-plane-member`)
    LoseControlPlaneLeader,
    /// Kill a member of a control plane of several members that does not lead, abruptly,
    /// and lose its data with it, as when its machine dies with its disk. It cannot come
    /// back as it was: the system must replace it with a member that catches up from the
    /// others, and keep serving meanwhile. (`@lose-control-plane-member`)
    LoseControlPlaneMemberAndData,
    /// Cut the member of a control plane of several members that leads off from the other
    /// members, both ways, as when the links to its machine fail: it keeps running and
    /// keeps answering the clients that reach it, but it can reach no majority. The others
    /// must elect a new leader and keep serving; it must acknowledge nothing meanwhile.
    /// (`@partition-control-plane`)
    PartitionControlPlaneLeader,
    /// Restore every link between members of the control plane cut so far.
    /// (`@partition-control-plane`)
    HealControlPlane,
}

impl Fault {
    /// One fault of each kind (with empty targets), to ask a driver which kinds it
    /// supports before any target is known.
    pub fn kinds() -> [Fault; 11] {
        let (namespace, replica, node) = (String::new(), String::new(), String::new());
        [
            Fault::RestartControlPlane,
            Fault::KillContainer {
                namespace: namespace.clone(),
                replica: replica.clone(),
            },
            Fault::DeleteReplica { namespace, replica },
            Fault::LoseNode { node: node.clone() },
            Fault::PartitionNode { node: node.clone() },
            Fault::Heal,
            Fault::RestartNode { node },
            Fault::LoseControlPlaneLeader,
            Fault::LoseControlPlaneMemberAndData,
            Fault::PartitionControlPlaneLeader,
            Fault::HealControlPlane,
        ]
    }

    /// The capability tag of scenarios that inject this kind of fault.
    pub fn tag(&self) -> &'static str {
        match self {
            Fault::RestartControlPlane => "restart-control-plane",
            Fault::KillContainer { .. } => "kill-container",
            Fault::DeleteReplica { .. } => "delete-replica",
            Fault::LoseNode { .. } => "lose-node",
            Fault::PartitionNode { .. } | Fault::Heal => "partition-node",
            Fault::RestartNode { .. } => "restart-node",
            Fault::LoseControlPlaneLeader | Fault::LoseControlPlaneMemberAndData => {
                "lose-control-plane-member"
            }
            Fault::PartitionControlPlaneLeader | Fault::HealControlPlane => {
                "partition-control-plane"
            }
        }
    }
}

impl FromStr for Phase {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        match text {
            "Pending" => Ok(Phase::Pending),
            "Running" => Ok(Phase::Running),
            "Succeeded" => Ok(Phase::Succeeded),
            "Failed" => Ok(Phase::Failed),
            "Unknown" => Ok(Phase::Unknown),
            other => bail!(
                "unknown phase {other:?}; the phases are Pending, Running, Succeeded, Failed and Unknown"
            ),
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::RestartControlPlane => write!(f, "restart the control plane abruptly"),
            Fault::KillContainer { namespace, replica } => {
                write!(f, "kill the container of replica {namespace}/{replica}")
            }
            Fault::DeleteReplica { namespace, replica } => {
                write!(f, "delete replica {namespace}/{replica}")
            }
            Fault::LoseNode { node } => write!(f, "lose node {node}"),
            Fault::PartitionNode { node } => write!(f, "partition node {node}"),
            Fault::Heal => write!(f, "heal every partition"),
            Fault::RestartNode { node } => write!(f, "restart node {node}"),
            Fault::LoseControlPlaneLeader => {
                write!(f, "kill the control-plane member that leads")
            }
            Fault::LoseControlPlaneMemberAndData => write!(
                f,
                "kill a control-plane member that does not lead, and lose its data"
            ),
            Fault::PartitionControlPlaneLeader => write!(
                f,
                "cut the control-plane member that leads off from the other members"
            ),
            Fault::HealControlPlane => {
                write!(f, "restore the links between the control-plane members")
            }
        }
    }
}

/// A system under test, as the kit sees it.
///
/// Namespaces isolate scenarios from each other: every object a scenario creates lives in
/// the namespace the harness created for it (a Kubernetes namespace, a Swarm stack
/// prefix, ...), and the namespace carries the run id so a reaper can find leftovers of a
/// killed run.
pub trait Driver: fmt::Debug + Send + Sync {
    /// Short name used in reports: `reference`, `kubernetes`, `swarm`.
    fn name(&self) -> &str;

    /// One line saying what exactly is under test (address, version, data location).
    fn describe(&self) -> String;

    /// Creates an empty namespace labelled with the run id.
    fn create_namespace<'a>(&'a self, namespace: &'a str, run_id: &'a str) -> DriverFuture<'a, ()>;

    /// Deletes a namespace and everything in it; a missing namespace is not an error.
    fn delete_namespace<'a>(&'a self, namespace: &'a str) -> DriverFuture<'a, ()>;

    /// Creates a deployment.
    fn deploy<'a>(&'a self, namespace: &'a str, spec: &'a DeploymentSpec) -> DriverFuture<'a, ()>;

    /// Reads a deployment back as the system reports it; `None` if it does not exist.
    fn read_deployment<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Option<DeploymentSpec>>;

    /// Deletes a deployment, and with it everything it made (its replicas): what a user
    /// means by deleting it (Kubernetes' default background propagation).
    fn delete_deployment<'a>(&'a self, namespace: &'a str, name: &'a str) -> DriverFuture<'a, ()>;

    /// Sets the desired number of replicas of a deployment.
    fn scale<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        replicas: u32,
    ) -> DriverFuture<'a, ()>;

    /// Starts a rolling update of a deployment to a new image.
    fn update_image<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        image: &'a str,
    ) -> DriverFuture<'a, ()>;

    /// Where the rollout of a deployment's current template stands.
    fn rollout_status<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, RolloutStatus>;

    /// The revisions of a deployment the system keeps, oldest first.
    fn history<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Vec<RevisionEntry>>;

    /// Changes a deployment's template without changing its image, by setting an
    /// environment variable of its container (as `kubectl set env` does); a change of
    /// template starts a rollout.
    fn set_env<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        variable: &'a str,
        value: &'a str,
    ) -> DriverFuture<'a, ()>;

    /// Rolls a deployment back to an earlier revision.
    fn roll_back<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        to: Revision,
    ) -> DriverFuture<'a, ()>;

    /// Creates a service in front of a deployment's replicas.
    fn expose<'a>(&'a self, namespace: &'a str, service: &'a ServiceSpec) -> DriverFuture<'a, ()>;

    /// Lists the replicas of a deployment, with their phase, node and readiness.
    fn list_replicas<'a>(
        &'a self,
        namespace: &'a str,
        deployment: &'a str,
    ) -> DriverFuture<'a, Vec<Replica>>;

    /// Sends one HTTP GET for `path` through a service, from outside the cluster, and
    /// returns the response body.
    fn reach_service<'a>(
        &'a self,
        namespace: &'a str,
        service: &'a str,
        path: &'a str,
    ) -> DriverFuture<'a, String>;

    /// Starts a traffic generator *inside* the system, sending `GET /` to a service one
    /// request after the other from where the system's own clients are, for a driver
    /// whose services the kit's host does not reach; `None` (the default) when the kit
    /// sends the requests itself, through [`Driver::reach_service`].
    fn generate_traffic_inside<'a>(
        &'a self,
        _namespace: &'a str,
        _service: &'a str,
    ) -> DriverFuture<'a, Option<Box<dyn InsideTraffic>>> {
        async { Ok(None) }.boxed()
    }

    /// Whether this driver can inject the fault, and why not. Decide by the kind of fault
    /// only: the harness asks before a run, when targets are not known yet.
    fn supports(&self, fault: &Fault) -> Support;

    /// Injects a fault and returns once the system has been put back in a state the
    /// scenario can talk to (for a control-plane restart: serving again, reconnected).
    fn inject<'a>(&'a self, fault: &'a Fault) -> DriverFuture<'a, ()>;

    /// Whether this driver has a capability (see [`Capability`]), and why not; without it,
    /// the methods that need it fail and the scenarios that need it are not applicable.
    /// The harness asks once, before the run.
    fn has(&self, capability: Capability) -> Support {
        Support::No(format!(
            "the {} driver does not implement @{}",
            self.name(),
            capability.tag()
        ))
    }

    /// The system's name and version, as it reports them (`shipshape v0.1.0`,
    /// `Kubernetes v1.32.0`, `Docker Engine 27.0 in swarm mode`).
    fn version(&self) -> DriverFuture<'_, String>;

    /// How the kit reaches this system's services and replicas, in a sentence for the
    /// report: the invariants on failed requests mean what the path they travel means.
    fn reach(&self) -> String;

    /// The scenarios this system is known to fail because it really behaves differently
    /// from what the feature says, each with the explanation and where the evidence is:
    /// `(scenario name, why)`. The report shows the explanation next to the failure; a
    /// failure of a scenario not listed here is a fault of the system or of the kit.
    fn differences(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }

    /// The reference of the kit's `probe` workload image of a version (`v1`, `v2`,
    /// `broken`) as this system's nodes know it. The kit's images are built locally as
    /// `shipshape/probe:<version>` and never pulled from a registry.
    fn probe_image(&self, version: &str) -> String {
        format!("shipshape/probe:{version}")
    }

    /// Lists the nodes of the cluster, with their readiness, labels, taints and size.
    fn list_nodes(&self) -> DriverFuture<'_, Vec<NodeStatus>>;

    /// Adds a node to the cluster and returns once it is ready to run pods
    /// ([`Capability::AddNode`]).
    fn add_node<'a>(&'a self, spec: &'a NodeSpec) -> DriverFuture<'a, ()> {
        unsupported(self, Capability::AddNode, format!("add node {}", spec.name))
    }

    /// Removes a node added by [`Driver::add_node`]: its agent and its containers are
    /// gone, and so is the node from the cluster's list ([`Capability::AddNode`]).
    fn remove_node<'a>(&'a self, name: &'a str) -> DriverFuture<'a, ()> {
        unsupported(self, Capability::AddNode, format!("remove node {name}"))
    }

    /// Sets a label of a node (`Some(value)`), or removes it (`None`)
    /// ([`Capability::LabelNode`]).
    fn label_node<'a>(
        &'a self,
        node: &'a str,
        key: &'a str,
        value: Option<&'a str>,
    ) -> DriverFuture<'a, ()> {
        let _ = value;
        unsupported(
            self,
            Capability::LabelNode,
            format!("label node {node} with {key}"),
        )
    }

    /// Adds a taint to a node (`present`), or removes it ([`Capability::TaintNode`]).
    fn taint_node<'a>(
        &'a self,
        node: &'a str,
        taint: &'a Taint,
        present: bool,
    ) -> DriverFuture<'a, ()> {
        let _ = present;
        unsupported(
            self,
            Capability::TaintNode,
            format!("taint node {node} with {taint}"),
        )
    }

    /// Submits a pod; returns whether the system took it on ([`Capability::Pods`]).
    fn run_pod<'a>(&'a self, namespace: &'a str, pod: &'a PodSpec) -> DriverFuture<'a, Admission> {
        unsupported(
            self,
            Capability::Pods,
            format!("run pod {namespace}/{}", pod.name),
        )
    }

    /// Reads one replica (a pod run by [`Driver::run_pod`] or one of a deployment's) by
    /// name; `None` if it does not exist ([`Capability::Pods`]).
    fn read_replica<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Option<Replica>> {
        unsupported(
            self,
            Capability::Pods,
            format!("read replica {namespace}/{name}"),
        )
    }

    /// Sends one HTTP request to a port of one replica, from outside the cluster, and
    /// returns the answer, whatever its status ([`Capability::ReachReplica`]).
    fn request_replica<'a>(
        &'a self,
        namespace: &'a str,
        replica: &'a str,
        port: u16,
        request: &'a HttpRequest,
    ) -> DriverFuture<'a, HttpResponse> {
        unsupported(
            self,
            Capability::ReachReplica,
            format!(
                "send {} {} to port {port} of replica {namespace}/{replica}",
                request.method, request.path
            ),
        )
    }

    /// Cordons a node (`cordoned`: no new replica is placed on it; those on it stay), or
    /// uncordons it ([`Capability::DrainNode`]).
    fn cordon_node<'a>(&'a self, node: &'a str, cordoned: bool) -> DriverFuture<'a, ()> {
        let what = if cordoned { "cordon" } else { "uncordon" };
        unsupported(self, Capability::DrainNode, format!("{what} node {node}"))
    }

    /// Drains a node, as an operator does before maintenance: cordons it, then asks the
    /// system to move every replica off it (replicas of a deployment are started
    /// elsewhere). Returns once every replica's move has been accepted, not once it is
    /// done ([`Capability::DrainNode`]).
    fn drain_node<'a>(&'a self, node: &'a str) -> DriverFuture<'a, ()> {
        unsupported(self, Capability::DrainNode, format!("drain node {node}"))
    }

    /// Submits a job; returns once the system has accepted it ([`Capability::Jobs`]).
    fn run_job<'a>(&'a self, namespace: &'a str, job: &'a JobSpec) -> DriverFuture<'a, ()> {
        unsupported(
            self,
            Capability::Jobs,
            format!("run job {namespace}/{}", job.name),
        )
    }

    /// Reads a job and the pods it ran; `None` if it does not exist ([`Capability::Jobs`]).
    fn read_job<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Option<JobState>> {
        unsupported(
            self,
            Capability::Jobs,
            format!("read job {namespace}/{name}"),
        )
    }

    /// Submits a scheduled job; returns once the system has accepted it
    /// ([`Capability::ScheduledJobs`]).
    fn run_scheduled_job<'a>(
        &'a self,
        namespace: &'a str,
        spec: &'a ScheduledJobSpec,
    ) -> DriverFuture<'a, ()> {
        unsupported(
            self,
            Capability::ScheduledJobs,
            format!("run scheduled job {namespace}/{}", spec.name),
        )
    }

    /// The jobs a scheduled job has started that the system still keeps, oldest first
    /// ([`Capability::ScheduledJobs`]).
    fn list_scheduled_runs<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Vec<ScheduledRun>> {
        unsupported(
            self,
            Capability::ScheduledJobs,
            format!("list the jobs of scheduled job {namespace}/{name}"),
        )
    }

    /// Submits a daemon; returns once the system has accepted it ([`Capability::Daemons`]).
    fn run_daemon<'a>(
        &'a self,
        namespace: &'a str,
        daemon: &'a DaemonSpec,
    ) -> DriverFuture<'a, ()> {
        unsupported(
            self,
            Capability::Daemons,
            format!("run daemon {namespace}/{}", daemon.name),
        )
    }

    /// Changes the image of a daemon's pods, to be rolled out node by node
    /// ([`Capability::Daemons`]).
    fn set_daemon_image<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        image: &'a str,
    ) -> DriverFuture<'a, ()> {
        unsupported(
            self,
            Capability::Daemons,
            format!("set the image of daemon {namespace}/{name} to {image}"),
        )
    }

    /// Lists the pods of a daemon, with the node each runs on ([`Capability::Daemons`]).
    fn list_daemon_pods<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Vec<Replica>> {
        unsupported(
            self,
            Capability::Daemons,
            format!("list the pods of daemon {namespace}/{name}"),
        )
    }

    /// Submits a stateful set; returns once the system has accepted it
    /// ([`Capability::StatefulSets`]).
    fn run_stateful_set<'a>(
        &'a self,
        namespace: &'a str,
        set: &'a StatefulSpec,
    ) -> DriverFuture<'a, ()> {
        let what = format!("run stateful set {namespace}/{}", set.name);
        unsupported(self, Capability::StatefulSets, what)
    }

    /// Changes how many pods a stateful set runs ([`Capability::StatefulSets`]).
    fn scale_stateful_set<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        replicas: u32,
    ) -> DriverFuture<'a, ()> {
        let what = format!("scale stateful set {namespace}/{name} to {replicas}");
        unsupported(self, Capability::StatefulSets, what)
    }

    /// Changes the image of a stateful set's pods from ordinal `from` up, the lower ones
    /// keeping theirs ([`Capability::StatefulSets`]).
    fn set_stateful_image<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        image: &'a str,
        from: u32,
    ) -> DriverFuture<'a, ()> {
        let what =
            format!("set the image of stateful set {namespace}/{name} to {image} from {from} up");
        unsupported(self, Capability::StatefulSets, what)
    }

    /// Lists the pods of a stateful set ([`Capability::StatefulSets`]).
    fn list_stateful_pods<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> DriverFuture<'a, Vec<Replica>> {
        let what = format!("list the pods of stateful set {namespace}/{name}");
        unsupported(self, Capability::StatefulSets, what)
    }

    /// Makes a deployment's replicas follow its CPU use ([`Capability::Autoscaling`]).
    fn autoscale<'a>(
        &'a self,
        namespace: &'a str,
        spec: &'a AutoscaleSpec,
    ) -> DriverFuture<'a, ()> {
        let what = format!("autoscale deployment {namespace}/{}", spec.deployment);
        unsupported(self, Capability::Autoscaling, what)
    }

    /// What the autoscaler of a deployment reports ([`Capability::Autoscaling`]).
    fn read_autoscaler<'a>(
        &'a self,
        namespace: &'a str,
        deployment: &'a str,
    ) -> DriverFuture<'a, AutoscalerStatus> {
        let what = format!("read the autoscaler of deployment {namespace}/{deployment}");
        unsupported(self, Capability::Autoscaling, what)
    }

    /// Stops what the driver started for the run (processes, clusters), cleanly: called
    /// once, after the last scenario. Nothing by default.
    fn shut_down(&self) -> DriverFuture<'_, ()> {
        async { Ok(()) }.boxed()
    }

    /// A client for the Kubernetes API, for systems that speak it. Scenarios that check
    /// Kubernetes API semantics (resourceVersion concurrency, uids) need it; without it
    /// they are *not applicable*, not failed.
    fn kube_client(&self) -> Option<kube::Client> {
        None
    }

    /// A Kubernetes API client that talks to the member of the control plane
    /// [`Fault::PartitionControlPlaneLeader`] cut off, and to it alone; `None` when no
    /// member is cut off now.
    fn cut_off_member_client(&self) -> DriverFuture<'_, Option<kube::Client>> {
        async { Ok(None) }.boxed()
    }

    /// A Kubernetes API client that talks to the member of the control plane that took
    /// the place of the one [`Fault::LoseControlPlaneMemberAndData`] lost, and to it alone;
    /// `None` while no member has taken its place.
    fn new_member_client(&self) -> DriverFuture<'_, Option<kube::Client>> {
        async { Ok(None) }.boxed()
    }
}

/// The answer of a driver to a request that needs a capability it lacks.
fn unsupported<'a, T: 'a, D: Driver + ?Sized>(
    driver: &D,
    capability: Capability,
    what: String,
) -> DriverFuture<'a, T> {
    let name = driver.name().to_owned();
    async move {
        bail!(
            "driver {name} cannot {what}: it lacks the capability @{}",
            capability.tag()
        )
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse_and_print_back() {
        let taint: Taint = "dedicated=batch:NoSchedule".parse().expect("parses");
        assert_eq!(taint.key, "dedicated");
        assert_eq!(taint.value, "batch");
        assert_eq!(taint.effect, TaintEffect::NoSchedule);
        assert_eq!(taint.to_string(), "dedicated=batch:NoSchedule");
        let bare: Taint = "gpu:NoExecute".parse().expect("parses");
        assert_eq!(bare.value, "");
        assert_eq!(bare.to_string(), "gpu:NoExecute");
        assert!("gpu".parse::<Taint>().is_err());
        assert!("gpu=1:Sometimes".parse::<Taint>().is_err());
        assert!("=1:NoSchedule".parse::<Taint>().is_err());
    }

    #[test]
    fn every_kind_of_fault_has_its_tag_and_healing_goes_with_partitioning() {
        let kinds = Fault::kinds();
        let tags: std::collections::BTreeSet<&str> = kinds.iter().map(Fault::tag).collect();
        assert_eq!(tags.len(), kinds.len() - 3, "{tags:?}");
        assert_eq!(
            Fault::Heal.tag(),
            Fault::PartitionNode {
                node: "n".to_owned()
            }
            .tag()
        );
        assert_eq!(
            Fault::HealControlPlane.tag(),
            Fault::PartitionControlPlaneLeader.tag()
        );
        assert_eq!(
            Fault::LoseControlPlaneMemberAndData.tag(),
            Fault::LoseControlPlaneLeader.tag()
        );
        assert_eq!(
            Fault::LoseNode {
                node: "node-2".to_owned()
            }
            .to_string(),
            "lose node node-2"
        );
    }

    #[test]
    fn amounts_parse_as_counts_or_percentages() {
        assert_eq!("2".parse::<Amount>().ok(), Some(Amount::Count(2)));
        assert_eq!("25%".parse::<Amount>().ok(), Some(Amount::Percent(25)));
        assert!("a lot".parse::<Amount>().is_err());
        assert!("-1".parse::<Amount>().is_err());
        assert!("x%".parse::<Amount>().is_err());
    }

    #[test]
    fn phases_and_policies_parse_from_their_names() {
        assert_eq!("Succeeded".parse::<Phase>().ok(), Some(Phase::Succeeded));
        assert!("Done".parse::<Phase>().is_err());
        assert_eq!(
            "OnFailure".parse::<RestartPolicy>().ok(),
            Some(RestartPolicy::OnFailure)
        );
        assert!("Sometimes".parse::<RestartPolicy>().is_err());
    }
}
