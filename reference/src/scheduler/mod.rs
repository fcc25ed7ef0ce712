//! # The scheduler: predicates, then priorities
//!
//! The seed puts it in one line: the scheduler decides which node runs each new pod,
//! first by *predicates* — which nodes can run it at all — then by *priorities* — which of
//! those is best. Kubernetes has since renamed them filter and score plugins; the idea is
//! the same, and so is this module's shape:
//!
//! ```text
//!   watch nodes ─┐                          ┌─ filter.rs: Ready? cordoned? taints tolerated?
//!                ├─> state.rs ─> queue.rs ─>│   nodeSelector/affinity? host ports free?
//!   watch pods ──┘   (cache,     (pending   │   requests fit?           → feasible nodes
//!                     assumed)    pods)     └─ score.rs: least allocated + owner spread
//!                                                                       → best node
//!      binding.rs: POST pods/{name}/binding ──or── PodScheduled=False + FailedScheduling
//! ```
//!
//! **What it owns.** One decision per pod: the value of `spec.nodeName`, written once
//! through the `binding` subresource. When a pod fits nowhere, it also owns telling why: the
//! pod's `PodScheduled` condition (`False`, reason `Unschedulable`, a message such as
//! `0/3 nodes are available: 3 Insufficient cpu.`) and a `FailedScheduling` event, worded as
//! upstream words them so `kubectl describe pod` reads the same as on any cluster.
//!
//! **What it never touches.** The store (it is an API client like any other, see
//! [`crate::client`]); pods that are already bound (it never moves or evicts a pod — no
//! preemption, no descheduling); pods that name another scheduler in `spec.schedulerName`;
//! nodes (cordoning, tainting and node health belong to kubectl and the node lifecycle
//! controller); running anything (that is the node agent's job once `spec.nodeName` is
//! set).
//!
//! **The flow.** [`run`] watches all nodes and all pods with kube-rs watchers and feeds
//! every event to an I/O-free [`state::State`]: the cache of nodes and pods, and the queue
//! of pods that are unbound, name this scheduler (or none), and are not being deleted. Once
//! both watches have listed everything, it takes pods from the queue one at a time; for each
//! it reads its snapshot of every node with the pods on it (kept up to date event by event),
//! runs every filter on every node ([`filter`]), scores the feasible nodes ([`score`]) and binds the
//! pod to the best one ([`binding`]). A pod just bound is *assumed* on its node until the
//! watch shows the binding, so the next decision does not give its room away twice. A pod
//! that fits nowhere is *parked* and reported; parked pods are tried again when a node is
//! added or changes, when a pod leaves a node (deleted or finished), and every
//! [`SchedulerConfig::retry_interval`] as a backstop.
//!
//! Reading order: [`resources`] (quantities and requests), [`info`] (what plugins see),
//! [`filter`], [`score`], [`algorithm`] (one decision), [`queue`], [`state`], [`binding`],
//! then [`run`] below.

pub mod algorithm;
pub mod binding;
pub mod filter;
pub mod info;
pub mod queue;
pub mod resources;
pub mod score;
pub mod state;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tracing::Instrument;

use crate::agent::stopped;

use self::binding::{Bound, Recorder};
use self::queue::PodKey;
use self::resources::QuantityError;
use self::state::{Decision, State};

/// The scheduler name pods get by default (`spec.schedulerName`).
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// How the scheduler is set up.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The `spec.schedulerName` this scheduler answers to; pods with an empty name belong
    /// to the default scheduler.
    pub scheduler_name: String,
    /// How often parked (unschedulable) pods are tried again even if no watch event
    /// suggested the cluster changed.
    pub retry_interval: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_owned(),
            retry_interval: Duration::from_secs(2),
        }
    }
}

/// What can go wrong while scheduling. Only [`SchedulerError::WatchEnded`] stops [`run`];
/// the others concern one pod, are logged, and the pod is tried again later.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A quantity in the pod's spec does not parse; the pod is reported unschedulable with
    /// this message.
    #[error("failed to read {field}: {source}")]
    Quantity {
        /// Where in the pod, e.g. `spec.containers[0].resources.requests.cpu`.
        field: String,
        /// What is wrong with it.
        #[source]
        source: QuantityError,
    },
    /// The binding was refused or did not arrive.
    #[error("failed to bind pod {pod} to node {node}: {source}")]
    Bind {
        /// `namespace/name`.
        pod: String,
        /// The node.
        node: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The pod's `PodScheduled` condition could not be written.
    #[error("failed to update the PodScheduled condition of pod {pod}: {source}")]
    Status {
        /// `namespace/name`.
        pod: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// An event could not be created.
    #[error("failed to record the {reason} event of pod {pod}: {source}")]
    Event {
        /// `namespace/name`.
        pod: String,
        /// The event's reason (`Scheduled`, `FailedScheduling`).
        reason: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A watch stream ended, which kube-rs watchers never do on their own.
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

/// What the two watches deliver.
enum Update {
    /// A node watch event (boxed: events are large and of unequal size).
    Node(Box<watcher::Event<Node>>),
    /// A pod watch event.
    Pod(Box<watcher::Event<Pod>>),
}

/// Runs the scheduler until `shutdown` turns true (or its sender is dropped, since then
/// nobody could ever stop it).
///
/// Watch errors (the apiserver away, a 410 Gone) are logged and the watchers retry with
/// back-off; a pod whose binding fails is retried after the retry interval.
pub async fn run(
    client: kube::Client,
    config: SchedulerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SchedulerError> {
    let nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|e| e.map(|e| Update::Node(Box::new(e))));
    let pods = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|e| e.map(|e| Update::Pod(Box::new(e))));
    let mut updates = pin!(futures::stream::select(nodes, pods));
    let mut state = State::new(&config.scheduler_name);
    let mut retry = tokio::time::interval(config.retry_interval);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(name = %config.scheduler_name, "scheduler started");
    let writer = Writer {
        recorder: Recorder::start(client.clone()),
        client,
        config,
    };

    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => break,
            update = updates.next() => observe(&mut state, update)?,
            _ = retry.tick() => state.retry_parked(),
        }
        // Take in whatever else has already arrived, so that one round sees it all.
        while let Some(update) = updates.next().now_or_never() {
            observe(&mut state, update)?;
        }
        let mut stop = shutdown.clone();
        tokio::select! {
            () = stopped(&mut stop) => break,
            () = writer.round(&mut state) => {}
        }
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

fn observe(
    state: &mut State,
    update: Option<Result<Update, watcher::Error>>,
) -> Result<(), SchedulerError> {
    match update {
        Some(Ok(Update::Node(event))) => state.observe_node(*event),
        Some(Ok(Update::Pod(event))) => state.observe_pod(*event),
        Some(Err(error)) => tracing::warn!(%error, "watch failed; retrying"),
        None => return Err(SchedulerError::WatchEnded("node or pod")),
    }
    Ok(())
}

/// What carrying out a decision needs: the API client, the configuration and the event
/// recorder.
struct Writer {
    /// The apiserver client.
    client: kube::Client,
    /// The scheduler's configuration (its name signs the events).
    config: SchedulerConfig,
    /// Where events go.
    recorder: Recorder,
}

impl Writer {
    /// Decides about every queued pod and carries the decisions out.
    async fn round(&self, state: &mut State) {
        while let Some(decision) = state.decide() {
            let key = decision.key();
            let span = tracing::info_span!("schedule", namespace = %key.namespace, pod = %key.name);
            match decision {
                Decision::Bind { key, pod, node } => {
                    self.bind(state, key, pod, node).instrument(span).await;
                }
                Decision::Unschedulable {
                    key,
                    pod,
                    message,
                    report: true,
                } => {
                    self.report(state, key, pod, message).instrument(span).await;
                }
                Decision::Unschedulable { message, .. } => {
                    span.in_scope(|| tracing::debug!(%message, "still unschedulable"));
                }
            }
        }
    }

    /// Binds the pod; once bound, it is assumed on the node and announced.
    async fn bind(&self, state: &mut State, key: PodKey, pod: Arc<Pod>, node: String) {
        match binding::bind(&self.client, &key, &node).await {
            Ok(Bound::Done) => {
                tracing::info!(%node, "bound");
                self.recorder.record(binding::pod_event(
                    &pod,
                    &self.config.scheduler_name,
                    "Normal",
                    "Scheduled",
                    format!("Successfully assigned {key} to {node}"),
                ));
                let was_unschedulable = binding::needs_scheduled_condition(&pod);
                state.bound(key.clone(), pod, node);
                if was_unschedulable
                    && let Err(error) = binding::set_scheduled(&self.client, &key).await
                {
                    tracing::warn!(%error, "bound, but the condition was not updated");
                }
            }
            Ok(Bound::AlreadyBound) => tracing::debug!("already bound elsewhere"),
            Ok(Bound::Gone) => tracing::debug!("deleted before it could be bound"),
            Err(error) => {
                tracing::warn!(%error, "binding failed; will retry");
                state.bind_failed(key);
            }
        }
    }

    /// Tells why the pod fits nowhere: a FailedScheduling event and its PodScheduled
    /// condition.
    async fn report(&self, state: &mut State, key: PodKey, pod: Arc<Pod>, message: String) {
        tracing::info!(%message, "unschedulable");
        self.recorder.record(binding::pod_event(
            &pod,
            &self.config.scheduler_name,
            "Warning",
            "FailedScheduling",
            message.clone(),
        ));
        match binding::set_unschedulable(&self.client, &pod, &key, &message).await {
            Ok(()) => state.reported(key, message),
            Err(error) => tracing::warn!(%error, "not reported; will try again"),
        }
    }
}
