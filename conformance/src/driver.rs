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
//! converged: convergence is what the features observe, through `list_replicas` and
//! `reach_service`, within the times they state. A driver that cannot do something yet
//! returns an error saying so; it never reports success for work it did not do.
//!
//! Errors are `anyhow::Error`: the kit is an edge of the project — every error ends up as
//! the message of a failed step, and no caller branches on its kind — so each message
//! must say what failed and for which object.

use std::collections::BTreeMap;
use std::fmt;

use futures::future::BoxFuture;

/// The future every driver operation returns: boxed so `dyn Driver` works.
pub type DriverFuture<'a, T> = BoxFuture<'a, anyhow::Result<T>>;

/// What a deployment is made of, in the seed's words: a name, an image, how many
/// replicas, and the labels that identify its replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentSpec {
    /// Name of the deployment, unique within its namespace.
    pub name: String,
    /// Container image every replica runs (one container per replica).
    pub image: String,
    /// Desired number of replicas.
    pub replicas: u32,
    /// Labels carried by the deployment and its replicas; they also select the replicas.
    pub labels: BTreeMap<String, String>,
}

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Its lifecycle phase.
    pub phase: Phase,
    /// The node it was placed on, if it has been placed.
    pub node: Option<String>,
    /// Whether it is ready to receive service traffic.
    pub ready: bool,
}

/// A fault the kit can inject. Faults are real: processes are killed, not asked to stop.
///
/// Only `RestartControlPlane` has scenarios today; the others are declared so drivers can
/// say early which ones they will support.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Kill the control plane abruptly (SIGKILL), start it again on the same data, and
    /// reconnect. Every acknowledged write must survive.
    RestartControlPlane,
    /// Kill the container of one replica; the replica itself stays.
    KillContainer {
        /// Namespace of the replica.
        namespace: String,
        /// Name of the replica.
        replica: String,
    },
    /// Delete one replica through the control plane.
    DeleteReplica {
        /// Namespace of the replica.
        namespace: String,
        /// Name of the replica.
        replica: String,
    },
    /// Lose a node: its agent and all its containers are gone.
    LoseNode {
        /// Name of the node.
        node: String,
    },
    /// Cut a node's agent off from the control plane; its containers keep running.
    PartitionNode {
        /// Name of the node.
        node: String,
    },
    /// Undo every partition injected so far.
    Heal,
    /// Restart a node's agent (its containers are left as they are).
    RestartNode {
        /// Name of the node.
        node: String,
    },
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

    /// Whether this driver can inject the fault. Decide by the kind of fault only: the
    /// harness also asks before a run, when targets are not known yet.
    fn supports(&self, fault: &Fault) -> bool;

    /// Injects a fault and returns once the system has been put back in a state the
    /// scenario can talk to (for a control-plane restart: serving again, reconnected).
    fn inject<'a>(&'a self, fault: &'a Fault) -> DriverFuture<'a, ()>;

    /// A client for the Kubernetes API, for systems that speak it. Scenarios that check
    /// Kubernetes API semantics (resourceVersion concurrency, uids) need it; without it
    /// they are *not applicable*, not failed.
    fn kube_client(&self) -> Option<kube::Client> {
        None
    }
}
