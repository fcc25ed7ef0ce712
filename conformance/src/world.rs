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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;

use crate::applicability::Capabilities;
use crate::driver::{Admission, Driver, Fault, NodeStatus, Phase, Replica, Taint};

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
    /// Measured times of the run.
    report: Arc<Report>,
}

impl Harness {
    /// Prepares a run against `driver`, with a run id made of the time and process id.
    pub fn new(driver: Arc<dyn Driver>) -> Self {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        Self {
            capabilities: Arc::new(Capabilities::of(driver.as_ref())),
            driver,
            run_id: format!("{seconds}-{}", std::process::id()),
            scenarios: AtomicUsize::new(0),
            report: Arc::new(Report::default()),
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

    /// The times measured so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Before-scenario hook: gives the World the driver, its namespace's name, and where
    /// to record what it measures.
    pub fn prepare(&self, scenario: ScenarioId, world: &mut ConformanceWorld) {
        let number = self.scenarios.fetch_add(1, Ordering::Relaxed) + 1;
        world.scope = Some(Scope {
            driver: Arc::clone(&self.driver),
            run_id: self.run_id.clone(),
            namespace: format!("conformance-{}-{number}", self.run_id),
            created: false,
            report: Arc::clone(&self.report),
            scenario,
            started: Instant::now(),
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
    /// Which scenario it is.
    scenario: ScenarioId,
    /// When the scenario started.
    started: Instant,
}

/// Which scenario of which feature, and where it is written (to find it in reports).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScenarioId {
    /// Name of the feature.
    pub feature: String,
    /// Name of the scenario.
    pub scenario: String,
    /// Line of the scenario in its feature file.
    pub line: usize,
    /// Column of the scenario in its feature file.
    pub column: usize,
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
    /// A deployment's replicas as they were just before a fault.
    pub(crate) before_fault: Vec<Replica>,
    /// The last fault this scenario injected, and when.
    pub(crate) last_fault: Option<(String, Instant)>,
    /// Traffic running in the background to a service, stopped by a step or with the
    /// scenario.
    pub(crate) traffic: Option<crate::traffic::Traffic>,
    /// The answers to the last batch of requests sent to a service.
    pub(crate) answers: Option<crate::traffic::Counts>,
    /// The availability monitor running in the background on a deployment's pods, stopped
    /// with the scenario.
    pub(crate) monitor: Option<crate::traffic::Availability>,
    /// How many times this scenario changed a pod template without changing its image,
    /// so that each change makes a template of its own.
    pub(crate) template_changes: u32,
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
        let since_fault = self
            .last_fault
            .as_ref()
            .map(|(fault, at)| (fault.clone(), at.elapsed()));
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

    /// Notes that a fault is being injected now, for the times measured after it.
    pub(crate) fn fault_injected(&mut self, fault: &Fault) {
        self.last_fault = Some((fault.to_string(), Instant::now()));
    }

    /// Notes the phase a replica was seen in, for checks over the whole scenario.
    pub(crate) fn saw(&mut self, replica: &Replica) {
        self.seen_phases
            .entry(replica.name.clone())
            .or_default()
            .insert(replica.phase);
    }
}

/// One convergence time measured by a "within N seconds" step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measurement {
    /// The scenario that measured it.
    pub scenario: ScenarioId,
    /// What was waited for.
    pub what: String,
    /// How long it took, from the start of the step.
    pub took: Duration,
    /// The bound the feature set.
    pub bound: Duration,
    /// The scenario's last fault before it, if any, and how long after that fault the wait
    /// ended.
    pub since_fault: Option<(String, Duration)>,
}

/// How long one scenario took, its clean-up included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioTime {
    /// The scenario.
    pub scenario: ScenarioId,
    /// Its wall time.
    pub took: Duration,
}

/// The times measured during a run: scenario wall times and convergence times.
#[derive(Debug, Default)]
pub struct Report {
    /// Convergence times, in the order measured.
    measurements: Mutex<Vec<Measurement>>,
    /// Scenario wall times, in the order run.
    scenarios: Mutex<Vec<ScenarioTime>>,
}

impl Report {
    /// Adds a convergence time.
    pub fn measured(&self, measurement: Measurement) {
        self.measurements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(measurement);
    }

    /// Adds a scenario's wall time.
    pub fn scenario_finished(&self, time: ScenarioTime) {
        self.scenarios
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(time);
    }

    /// The convergence times measured so far.
    pub fn measurements(&self) -> Vec<Measurement> {
        self.measurements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The scenario wall times so far.
    pub fn scenarios(&self) -> Vec<ScenarioTime> {
        self.scenarios
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A plain-text summary: wall time per feature and per scenario, then every
    /// convergence time against its bound.
    pub fn summary(&self) -> String {
        let scenarios = self.scenarios();
        let mut per_feature: Vec<(String, Duration, usize)> = Vec::new();
        for time in &scenarios {
            match per_feature
                .iter_mut()
                .find(|(feature, _, _)| *feature == time.scenario.feature)
            {
                Some((_, total, count)) => {
                    *total += time.took;
                    *count += 1;
                }
                None => per_feature.push((time.scenario.feature.clone(), time.took, 1)),
            }
        }
        let mut text = String::from("wall time per feature:\n");
        for (feature, total, count) in &per_feature {
            text.push_str(&format!(
                "  {:>7.1} s  {feature} ({count} scenarios)\n",
                total.as_secs_f64()
            ));
            for time in scenarios
                .iter()
                .filter(|time| time.scenario.feature == *feature)
            {
                text.push_str(&format!(
                    "  {:>7.1} s    {}\n",
                    time.took.as_secs_f64(),
                    time.scenario.scenario
                ));
            }
        }
        let measurements = self.measurements();
        if !measurements.is_empty() {
            text.push_str("measured convergence times:\n");
            for m in &measurements {
                let after = m
                    .since_fault
                    .as_ref()
                    .map(|(fault, since)| format!(" ({:.1} s after: {fault})", since.as_secs_f64()))
                    .unwrap_or_default();
                text.push_str(&format!(
                    "  {:>7.1} s of {:>3} s  {} — {}: {}{after}\n",
                    m.took.as_secs_f64(),
                    m.bound.as_secs(),
                    m.scenario.feature,
                    m.scenario.scenario,
                    m.what
                ));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_groups_scenarios_by_feature() {
        let report = Report::default();
        let id = |feature: &str, scenario: &str| ScenarioId {
            feature: feature.to_owned(),
            scenario: scenario.to_owned(),
            ..ScenarioId::default()
        };
        for (feature, scenario, secs) in [("f", "a", 2), ("g", "b", 3), ("f", "c", 4)] {
            report.scenario_finished(ScenarioTime {
                scenario: id(feature, scenario),
                took: Duration::from_secs(secs),
            });
        }
        report.measured(Measurement {
            scenario: id("f", "a"),
            what: "pod x running".to_owned(),
            took: Duration::from_millis(1500),
            bound: Duration::from_secs(30),
            since_fault: None,
        });
        report.measured(Measurement {
            scenario: id("g", "b"),
            what: "10 replicas running".to_owned(),
            took: Duration::from_millis(9000),
            bound: Duration::from_secs(30),
            since_fault: Some(("lose node node-2".to_owned(), Duration::from_millis(9100))),
        });
        let summary = report.summary();
        assert!(summary.contains("    6.0 s  f (2 scenarios)"), "{summary}");
        assert!(summary.contains("    3.0 s  g (1 scenarios)"), "{summary}");
        assert!(
            summary.contains("    1.5 s of  30 s  f — a: pod x running\n"),
            "{summary}"
        );
        assert!(
            summary.contains(
                "    9.0 s of  30 s  g — b: 10 replicas running (9.1 s after: lose node node-2)"
            ),
            "{summary}"
        );
    }
}
