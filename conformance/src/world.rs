//! The cucumber World: what one scenario knows while it runs, and the hooks around it.
//!
//! One [`Harness`] lives for the whole run: it holds the driver, the run id and the
//! [`Report`] of measured times. Before each scenario it hands the fresh World the driver
//! and the name of the scenario's own namespace; the namespace is created on first use (so
//! a scenario found not applicable creates nothing). After the scenario, whatever its
//! outcome, the harness undoes what the scenario did to the cluster itself: it brings back
//! the nodes the scenario made fail (heals a partition, restarts a lost node), deletes the
//! namespace, removes the nodes the scenario added, takes back the labels, taints and
//! cordons it put on existing nodes, and waits until the nodes it made fail are ready again
//! and as they were before — so every scenario starts from the same cluster.
//!
//! Scenarios may run side by side, each in its namespace. One that must run alone
//! ([`crate::applicability::runs_alone`]: it fails machines, changes nodes, needs them to
//! itself) takes the cluster for itself: the harness holds a read-write lock, taken shared
//! by a scenario that runs side by side and exclusively by one that runs alone, from before
//! its first step until its clean-up is done. The lock is fair, so a scenario waiting to
//! run alone is not overtaken by scenarios arriving after it. A scenario's time starts once
//! it has its turn.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::applicability::Capabilities;
use crate::driver::{Admission, Driver, Fault, NodeStatus, Phase, Replica, Taint};
use crate::node_watch::NodeWatch;
use crate::profile::Profile;
use crate::report::timeline::{AvailabilityPoint, Mark};
use crate::report::{FalseAlarm, Measurement, Report, ScenarioId, ScenarioTime, Timeline};

/// How long the clean-up waits for a node the scenario made fail to be back as it was.
const NODE_RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between two looks at a recovering node.
const NODE_RECOVERY_POLL: Duration = Duration::from_millis(250);

/// State shared by every scenario of a run.
#[derive(Debug)]
pub struct Harness {
    /// The system under test.
    driver: Arc<dyn Driver>,
    /// What the driver can do, for deciding which scenarios apply.
    capabilities: Arc<Capabilities>,
    /// Identifies this run; every namespace it creates is labelled with it.
    run_id: String,
    /// Scenarios started so far, numbering the namespaces.
    scenarios: AtomicUsize,
    /// What the run found so far.
    report: Arc<Report>,
    /// The timing profile the steps' named bounds come from.
    profile: Arc<Profile>,
    /// Every node's readiness, looked at through the whole run (false alarms).
    node_watch: NodeWatch,
    /// Turns on the cluster: shared by scenarios side by side, exclusive for one that
    /// runs alone.
    cluster: Arc<RwLock<()>>,
}

impl Harness {
    /// Prepares the run `run_id` against `driver` with a timing profile, and starts looking
    /// at the nodes' readiness (on the current tokio runtime).
    pub fn new(driver: Arc<dyn Driver>, profile: Profile, run_id: String) -> Self {
        Self {
            node_watch: NodeWatch::start(Arc::clone(&driver)),
            capabilities: Arc::new(Capabilities::of(driver.as_ref())),
            driver,
            run_id,
            scenarios: AtomicUsize::new(0),
            report: Arc::new(Report::default()),
            profile: Arc::new(profile),
            cluster: Arc::new(RwLock::new(())),
        }
    }

    /// The driver under test.
    pub fn driver(&self) -> &dyn Driver {
        self.driver.as_ref()
    }

    /// What the driver can do.
    pub fn capabilities(&self) -> Arc<Capabilities> {
        Arc::clone(&self.capabilities)
    }

    /// This run's id (the value of the namespaces' run label).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// What the run found so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// How many times every node's readiness was looked at so far.
    pub fn node_looks(&self) -> u64 {
        self.node_watch.looks()
    }

    /// The report, shared (for the writer that records events into it).
    pub fn report_handle(&self) -> Arc<Report> {
        Arc::clone(&self.report)
    }

    /// Before-scenario hook: waits for the scenario's turn on the cluster (for the whole
    /// cluster when it runs `alone`), then gives the World the driver, its namespace's
    /// name, and where to record what it measures.
    pub async fn prepare(&self, scenario: ScenarioId, alone: bool, world: &mut ConformanceWorld) {
        let turn = if alone {
            Turn::Alone(Arc::clone(&self.cluster).write_owned().await)
        } else {
            Turn::SideBySide(Arc::clone(&self.cluster).read_owned().await)
        };
        let number = self.scenarios.fetch_add(1, Ordering::Relaxed) + 1;
        world.scope = Some(Scope {
            driver: Arc::clone(&self.driver),
            run_id: self.run_id.clone(),
            namespace: format!("conformance-{}-{number}", self.run_id),
            created: false,
            report: Arc::clone(&self.report),
            profile: Arc::clone(&self.profile),
            scenario,
            started: Instant::now(),
            _turn: turn,
        });
    }

    /// After-scenario hook: brings back the nodes the scenario made fail (heals
    /// partitions, restarts lost nodes), deletes the scenario's namespace if it was
    /// created, removes the nodes it added, undoes its changes to existing nodes (last
    /// change first), and waits until the nodes it made fail are ready and as they were
    /// before; then records how long the scenario took. A failure is reported but does not
    /// fail the scenario: the next scenario's preconditions ("a cluster of 3 ready nodes")
    /// catch a cluster left different, and the run label lets a reaper finish the job.
    pub async fn clean_up(&self, world: Option<&mut ConformanceWorld>) {
        let Some(world) = world else {
            return;
        };
        let Some(scope) = world.scope.take() else {
            return;
        };
        if let Some(timeline) = world.timeline(scope.started).await {
            self.report.timeline(scope.scenario.clone(), timeline);
        }
        let figures = std::mem::take(&mut world.figures);
        if !figures.is_empty() {
            self.report.figures(scope.scenario.clone(), figures);
        }
        let driver = scope.driver.as_ref();
        let failed_nodes = std::mem::take(&mut world.failed_nodes);
        let partitioned = failed_nodes
            .iter()
            .any(|failed| !failed.back && failed.fault == NodeFault::Partitioned);
        if partitioned && let Err(error) = driver.inject(&Fault::Heal).await {
            eprintln!("warning: failed to heal the partitions: {error:#}");
        }
        for failed in &failed_nodes {
            if failed.back || failed.fault != NodeFault::Lost {
                continue;
            }
            let restart = Fault::RestartNode {
                node: failed.before.name.clone(),
            };
            if let Err(error) = driver.inject(&restart).await {
                eprintln!("warning: failed to {restart}: {error:#}");
            }
        }
        if scope.created
            && let Err(error) = driver.delete_namespace(&scope.namespace).await
        {
            eprintln!(
                "warning: failed to delete namespace {} (labelled {}={}): {error:#}",
                scope.namespace,
                crate::kubeapi::RUN_LABEL,
                scope.run_id
            );
        }
        let mut excused: BTreeSet<String> = world.added_nodes.iter().cloned().collect();
        excused.extend(failed_nodes.iter().map(|f| f.before.name.clone()));
        for node in world.added_nodes.drain(..).rev() {
            if let Err(error) = driver.remove_node(&node).await {
                eprintln!("warning: failed to remove the added node {node}: {error:#}");
            }
        }
        for change in world.node_changes.drain(..).rev() {
            let undone = match &change {
                NodeChange::Label {
                    node,
                    key,
                    previous,
                } => driver.label_node(node, key, previous.as_deref()).await,
                NodeChange::Taint { node, taint } => driver.taint_node(node, taint, false).await,
                NodeChange::Cordon { node } => driver.cordon_node(node, false).await,
            };
            if let Err(error) = undone {
                eprintln!("warning: failed to undo {change}: {error:#}");
            }
        }
        for failed in &failed_nodes {
            if let Err(error) = recovered(driver, &failed.before).await {
                eprintln!(
                    "warning: node {} is not back as it was: {error:#}",
                    failed.before.name
                );
            }
        }
        // Nodes marked not ready while the scenario ran (its clean-up included) that it did
        // not make fail or add itself.
        let (expected, unexpected): (Vec<_>, Vec<_>) = self
            .node_watch
            .turned_not_ready_since(scope.started)
            .into_iter()
            .partition(|turned| excused.contains(&turned.node));
        let false_alarms: Vec<FalseAlarm> = unexpected
            .into_iter()
            .map(|turned| FalseAlarm {
                scenario: scope.scenario.clone(),
                node: turned.node,
                seconds: turned
                    .at
                    .saturating_duration_since(scope.started)
                    .as_secs_f64(),
            })
            .collect();
        for alarm in &false_alarms {
            eprintln!(
                "warning: healthy node {} was marked not ready {:.1} s into {} — {}",
                alarm.node, alarm.seconds, alarm.scenario.feature, alarm.scenario.scenario
            );
        }
        self.report
            .nodes_turned_not_ready(expected.len(), false_alarms);
        self.report.scenario_finished(ScenarioTime {
            scenario: scope.scenario,
            took: scope.started.elapsed(),
        });
    }
}

/// Waits until a node that was made to fail is ready, schedulable and carries the taints it
/// had before (a system may taint a node it lost touch with until it hears from it again).
async fn recovered(driver: &dyn Driver, before: &NodeStatus) -> anyhow::Result<()> {
    let deadline = Instant::now() + NODE_RECOVERY_TIMEOUT;
    loop {
        let nodes = driver.list_nodes().await?;
        let now = nodes.iter().find(|node| node.name == before.name);
        let back = now.is_some_and(|now| {
            now.ready && now.schedulable == before.schedulable && now.taints == before.taints
        });
        if back {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "after {} s it is {:?}; before it failed it was {before:?}",
                NODE_RECOVERY_TIMEOUT.as_secs(),
                now
            );
        }
        tokio::time::sleep(NODE_RECOVERY_POLL).await;
    }
}

/// Where a scenario runs: the driver and the scenario's own namespace.
struct Scope {
    /// The system under test.
    driver: Arc<dyn Driver>,
    /// The run id the namespace is labelled with.
    run_id: String,
    /// The scenario's namespace.
    namespace: String,
    /// Whether the namespace has been created yet.
    created: bool,
    /// Where measured times go.
    report: Arc<Report>,
    /// The run's timing profile.
    profile: Arc<Profile>,
    /// Which scenario it is.
    scenario: ScenarioId,
    /// When the scenario started.
    started: Instant,
    /// Its turn on the cluster, given back when the scope is dropped: at the end of the
    /// clean-up.
    _turn: Turn,
}

/// A scenario's turn on the cluster.
enum Turn {
    /// Beside other scenarios.
    SideBySide(#[expect(dead_code, reason = "held for its drop")] OwnedRwLockReadGuard<()>),
    /// With the cluster to itself.
    Alone(#[expect(dead_code, reason = "held for its drop")] OwnedRwLockWriteGuard<()>),
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("driver", &self.driver.name())
            .field("namespace", &self.namespace)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// A change a scenario made to a node of the cluster, undone after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NodeChange {
    /// A label was set on a node.
    Label {
        /// The node.
        node: String,
        /// The label's key.
        key: String,
        /// Its value before (`None`: it had no such label).
        previous: Option<String>,
    },
    /// A taint was added to a node.
    Taint {
        /// The node.
        node: String,
        /// The taint.
        taint: Taint,
    },
    /// A node was cordoned (or drained, which cordons it).
    Cordon {
        /// The node.
        node: String,
    },
}

/// How a scenario made a node fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeFault {
    /// Lost with its machine ([`Fault::LoseNode`]); comes back by a restart.
    Lost,
    /// Cut off from the control plane ([`Fault::PartitionNode`]); comes back by healing.
    Partitioned,
}

/// A node a scenario made fail, brought back after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FailedNode {
    /// The node as it was before it failed.
    pub(crate) before: NodeStatus,
    /// How it failed.
    pub(crate) fault: NodeFault,
    /// Whether the scenario itself brought it back.
    pub(crate) back: bool,
}

impl fmt::Display for NodeChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeChange::Label { node, key, .. } => write!(f, "the label {key} of node {node}"),
            NodeChange::Taint { node, taint } => write!(f, "the taint {taint} of node {node}"),
            NodeChange::Cordon { node } => write!(f, "the cordon of node {node}"),
        }
    }
}

/// What one scenario knows while it runs.
#[derive(Debug, Default, cucumber::World)]
pub struct ConformanceWorld {
    /// Driver and namespace, given by the harness before the first step.
    scope: Option<Scope>,
    /// A deployment as "I" read it, to be written back later.
    pub(crate) read: Option<Deployment>,
    /// The outcome of "my" last write through the Kubernetes API.
    pub(crate) last_write: Option<Result<Deployment, kube::Error>>,
    /// Deployments as noted before a fault, by name.
    pub(crate) noted_deployments: BTreeMap<String, Deployment>,
    /// Services as noted before a fault, by name.
    pub(crate) noted_services: BTreeMap<String, Service>,
    /// Nodes this scenario added, removed after it.
    pub(crate) added_nodes: Vec<String>,
    /// Changes this scenario made to existing nodes, undone after it.
    pub(crate) node_changes: Vec<NodeChange>,
    /// Nodes the scenario refers to by role ("labelled", "tainted", "new"), by role.
    pub(crate) roles: BTreeMap<String, String>,
    /// The most pods of each job seen running at once, by job name.
    pub(crate) job_peaks: BTreeMap<String, Vec<String>>,
    /// The node labels each daemon of the scenario asks for, by daemon name.
    pub(crate) daemon_selectors: BTreeMap<String, BTreeMap<String, String>>,
    /// The pods of each stateful set as last noted, by set name.
    pub(crate) stateful_noted: BTreeMap<String, Vec<Replica>>,
    /// The image the scenario last changed a stateful set to, and from which ordinal up.
    pub(crate) stateful_update: Option<(String, u32)>,
    /// How the system answered each pod this scenario submitted, by pod name.
    pub(crate) admissions: BTreeMap<String, Admission>,
    /// The ports of each pod's containers, by pod name, then container name.
    pub(crate) ports: BTreeMap<String, BTreeMap<String, u16>>,
    /// The CPU each pod asked for, in thousandths, by pod name.
    pub(crate) requested_millicpu: BTreeMap<String, u64>,
    /// Every phase each replica was seen in by this scenario, by replica name.
    pub(crate) seen_phases: BTreeMap<String, BTreeSet<Phase>>,
    /// Replicas as noted once they were running, by name, to compare with later.
    pub(crate) noted_replicas: BTreeMap<String, Replica>,
    /// Nodes this scenario made fail, brought back after it.
    pub(crate) failed_nodes: Vec<FailedNode>,
    /// The replica a fault was aimed at (its container killed, or itself deleted), as it
    /// was just before.
    pub(crate) victim: Option<Replica>,
    /// The deployment of the replica a fault was aimed at.
    pub(crate) victim_deployment: Option<String>,
    /// A request sent to one replica in the background, with the replica it went to.
    pub(crate) request_in_flight: Option<(
        Replica,
        tokio::task::JoinHandle<anyhow::Result<crate::driver::HttpResponse>>,
    )>,
    /// A deployment's replicas as they were just before a fault.
    pub(crate) before_fault: Vec<Replica>,
    /// The faults this scenario injected, and when, in order.
    pub(crate) faults: Vec<(String, Instant)>,
    /// Traffic running in the background to a service, stopped by a step or with the
    /// scenario.
    pub(crate) traffic: Option<crate::traffic::Traffic>,
    /// The scenario's autoscaler, as it was asked for: its bounds, its target, and how
    /// long the load must stay low before it gives replicas back.
    pub(crate) autoscaler: Option<crate::driver::AutoscaleSpec>,
    /// A load of costly requests running in the background to a service, stopped by
    /// itself or with the scenario.
    pub(crate) load: Option<crate::load::Load>,
    /// The answers to the last batch of requests sent to a service.
    pub(crate) answers: Option<crate::traffic::Counts>,
    /// The availability monitor running in the background on a deployment's replicas,
    /// stopped with the scenario.
    pub(crate) monitor: Option<crate::traffic::Availability>,
    /// The deployment each service of the scenario is in front of, by service name.
    pub(crate) fronted: BTreeMap<String, String>,
    /// How many times this scenario changed a pod template without changing its image,
    /// so that each change makes a template of its own.
    pub(crate) template_changes: u32,
    /// Clients reading and writing through the API in the background, whose history is
    /// checked for linearizability; stopped by a step or with the scenario.
    pub(crate) workload: Option<crate::linearizability::workload::Workload>,
    /// The objects this scenario tried to create through the member of the control plane
    /// cut off from the others, none of which it may acknowledge.
    pub(crate) sent_to_cut_off: Vec<String>,
    /// Pictures the scenario's steps drew for the report (a failing history).
    pub(crate) figures: Vec<crate::report::Figure>,
}

impl ConformanceWorld {
    /// The driver under test.
    pub(crate) fn driver(&self) -> anyhow::Result<Arc<dyn Driver>> {
        self.scope
            .as_ref()
            .map(|scope| Arc::clone(&scope.driver))
            .ok_or_else(|| anyhow!("the harness did not attach a driver to this scenario"))
    }

    /// The scenario's namespace, created on first use.
    pub(crate) async fn namespace(&mut self) -> anyhow::Result<String> {
        let scope = self
            .scope
            .as_mut()
            .ok_or_else(|| anyhow!("the harness did not attach a driver to this scenario"))?;
        if !scope.created {
            scope
                .driver
                .create_namespace(&scope.namespace, &scope.run_id)
                .await
                .with_context(|| {
                    format!(
                        "failed to create the scenario's namespace {}",
                        scope.namespace
                    )
                })?;
            scope.created = true;
        }
        Ok(scope.namespace.clone())
    }

    /// The name of the scenario's namespace, without creating it (to name other things
    /// after the scenario).
    pub(crate) fn namespace_name(&self) -> anyhow::Result<String> {
        self.scope
            .as_ref()
            .map(|scope| scope.namespace.clone())
            .ok_or_else(|| anyhow!("the harness did not attach a driver to this scenario"))
    }

    /// A Kubernetes API client, for scenarios tagged `@kubernetes-api`. Asked anew each
    /// time: after a control-plane restart the driver hands out a new one.
    pub(crate) fn kube(&self) -> anyhow::Result<kube::Client> {
        let driver = self.driver()?;
        driver.kube_client().ok_or_else(|| {
            anyhow!(
                "driver {} offers no Kubernetes API client; this scenario should carry @kubernetes-api",
                driver.name()
            )
        })
    }

    /// Records a measured convergence time (and prints it, under the step that waited),
    /// with the time since the scenario's last fault, if it injected one.
    pub(crate) fn record(&self, what: &str, took: Duration, bound: Duration) {
        let since_fault = self.last_fault().map(|(fault, at)| (fault, at.elapsed()));
        let after = since_fault
            .as_ref()
            .map(|(fault, since)| format!("; {:.1} s after: {fault}", since.as_secs_f64()))
            .unwrap_or_default();
        println!(
            "      measured: {what} after {:.1} s (bound {} s{after})",
            took.as_secs_f64(),
            bound.as_secs()
        );
        if let Some(scope) = &self.scope {
            scope.report.measured(Measurement {
                scenario: scope.scenario.clone(),
                what: what.to_owned(),
                took,
                bound,
                since_fault,
            });
        }
    }

    /// Notes that a fault is being injected now, for the times measured after it and for
    /// the scenario's timeline.
    pub(crate) fn fault_injected(&mut self, fault: &Fault) {
        self.faults.push((fault.to_string(), Instant::now()));
    }

    /// The last fault this scenario injected, and when.
    pub(crate) fn last_fault(&self) -> Option<(String, Instant)> {
        self.faults.last().cloned()
    }

    /// Starts the availability monitor on `deployment`, unless one is running already: what
    /// a scenario does to a deployment under faults or load shows on its timeline. A
    /// replica counts as available once ready for the deployment's `minReadySeconds`.
    pub(crate) async fn watch(&mut self, deployment: &str) -> anyhow::Result<()> {
        if self.monitor.is_some() {
            return Ok(());
        }
        let namespace = self.namespace().await?;
        let driver = self.driver()?;
        let spec = driver
            .read_deployment(&namespace, deployment)
            .await?
            .ok_or_else(|| anyhow!("deployment {namespace}/{deployment} does not exist"))?;
        let min_ready = Duration::from_secs(u64::from(spec.rollout.min_ready_seconds.unwrap_or(0)));
        self.monitor = Some(crate::traffic::Availability::start(
            driver, &namespace, deployment, min_ready,
        ));
        Ok(())
    }

    /// The run's timing profile.
    pub(crate) fn profile(&self) -> anyhow::Result<Arc<Profile>> {
        self.scope
            .as_ref()
            .map(|scope| Arc::clone(&scope.profile))
            .ok_or_else(|| anyhow!("the harness did not attach a driver to this scenario"))
    }

    /// What the scenario's traffic, availability monitor and faults saw, on one time axis
    /// from the scenario's start (`started`); `None` if it had none of them. Stops the
    /// traffic and the monitor.
    pub(crate) async fn timeline(&mut self, started: Instant) -> Option<Timeline> {
        if self.traffic.is_none() && self.monitor.is_none() && self.faults.is_empty() {
            return None;
        }
        let offset = |at: Instant| at.saturating_duration_since(started).as_secs_f64();
        let mut timeline = match &mut self.traffic {
            Some(traffic) => {
                traffic.stop().await;
                let from = offset(traffic.started());
                let mut timeline = Timeline::new(
                    started.elapsed().as_secs_f64(),
                    traffic
                        .log()
                        .into_iter()
                        .map(|(at, outcome)| (from + at.as_secs_f64(), outcome)),
                );
                timeline.service = Some(traffic.service().to_owned());
                timeline
            }
            None => Timeline::new(started.elapsed().as_secs_f64(), []),
        };
        if let Some(monitor) = self.monitor.take() {
            let from = offset(monitor.started());
            timeline.deployment = Some(monitor.deployment().to_owned());
            timeline.availability = monitor
                .samples()
                .iter()
                .map(|sample| AvailabilityPoint {
                    at: from + sample.at.as_secs_f64(),
                    available: sample.available,
                    versions: sample.templates_running,
                })
                .collect();
        }
        for (what, at) in &self.faults {
            timeline.mark(Mark {
                at: offset(*at),
                what: what.clone(),
                fault: true,
            });
        }
        Some(timeline)
    }

    /// Notes the phase a replica was seen in, for checks over the whole scenario.
    pub(crate) fn saw(&mut self, replica: &Replica) {
        self.seen_phases
            .entry(replica.name.clone())
            .or_default()
            .insert(replica.phase);
    }
}
