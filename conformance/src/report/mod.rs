//! The certification report: what a run found, for a person to read and a program to check.
//!
//! A run writes three files into its report directory (`target/conformance/<driver>/`):
//!
//! - `report.html` — one self-contained page (no script, no external file) that opens
//!   offline: the system under test, the kit's version, the date, the timing profile and
//!   the driver's capabilities in its header; then one verdict per feature — *certified*
//!   when every scenario that applies passed — and, per scenario, passed / failed / not
//!   applicable with the reason, the measured convergence times against their bounds, and
//!   for scenarios under load or faults a timeline ([`timeline`]) of the available
//!   replicas and the request outcomes, with the faults marked ([`html`]);
//! - `summary.json` — the same facts as data ([`RunReport`]);
//! - `junit.xml` — for CI systems, with the measured times as properties ([`crate::junit`]).
//!
//! # Where the facts come from
//!
//! Three sources fill one shared [`Report`] while the run goes:
//!
//! 1. the [`Recorder`], a cucumber writer teed next to the console and JUnit writers, sees
//!    every event: when each scenario started and finished, each step's outcome, and the
//!    error of a failed step;
//! 2. the steps record the convergence times they measure ([`Report::measured`]);
//! 3. the harness's after-scenario hook hands over what the scenario's traffic generator,
//!    availability monitor and faults saw, as a [`Timeline`] ([`Report::timeline`]), and
//!    how long the scenario took with its clean-up ([`Report::scenario_finished`]).
//!
//! At the end [`Report::finish`] puts them together with what the harness knows of the
//! system (its description, capabilities, profile) into a [`RunReport`].
//!
//! A scenario is *not applicable* when the harness replaced its steps with one
//! `not applicable: <reason>` step ([`crate::applicability`]); a failed scenario whose name
//! the driver lists among the system's known differences ([`Driver::differences`]) carries
//! that explanation next to the failure, which is the evidence.
//!
//! [`Driver::differences`]: crate::driver::Driver::differences

pub mod html;
pub mod timeline;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cucumber::event::{self, Cucumber, Feature as FeatureEvent, Rule as RuleEvent};
use cucumber::gherkin;
use cucumber::parser;
use cucumber::writer;
use serde::Serialize;

pub use timeline::Timeline;

use crate::applicability::NOT_APPLICABLE_PREFIX;

/// Which scenario of which feature, and where it is written (to find it in reports).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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

impl ScenarioId {
    /// The id of a scenario of a feature, as cucumber hands them over.
    pub fn of(feature: &gherkin::Feature, scenario: &gherkin::Scenario) -> Self {
        Self {
            feature: feature.name.clone(),
            scenario: scenario.name.clone(),
            line: scenario.position.line,
            column: scenario.position.col,
        }
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
    /// The bound the feature set (with the profile's timings, where the step names them).
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

/// What became of one step, as the recorder saw it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepRecord {
    /// The keyword and the sentence: `When the deployment "web" is scaled to 4 replicas`.
    pub text: String,
    /// `passed`, `failed` or `skipped`.
    pub outcome: StepOutcome,
    /// Seconds from the scenario's start to the step's start.
    pub at: f64,
    /// Seconds from the step's start to its end.
    pub seconds: f64,
    /// Why it failed.
    pub error: Option<String>,
}

/// The outcome of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepOutcome {
    /// It did what it says.
    Passed,
    /// It did not; the scenario stops there.
    Failed,
    /// It did not run: no step matched its sentence, or an earlier step failed.
    Skipped,
}

/// The verdict on one scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Every step passed.
    Passed,
    /// A step failed (or a step was skipped for another reason than "not applicable").
    Failed {
        /// The step that failed.
        step: String,
        /// Why.
        error: String,
    },
    /// The system lacks a capability the scenario needs.
    NotApplicable {
        /// Which, and why.
        reason: String,
    },
}

/// Everything the report says about one scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScenarioReport {
    /// Which scenario.
    pub id: ScenarioId,
    /// Its tags, its feature's included, without the `@`.
    pub tags: Vec<String>,
    /// Passed, failed or not applicable.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Its steps as they ran.
    pub steps: Vec<StepRecord>,
    /// Its wall time in seconds, clean-up included.
    pub seconds: f64,
    /// The convergence times it measured.
    pub measurements: Vec<MeasurementReport>,
    /// What its traffic, monitor and faults saw, when it had any.
    pub timeline: Option<Timeline>,
    /// The driver's explanation, when the scenario failed on a known difference of the
    /// system under test.
    pub explanation: Option<String>,
    /// Pictures its steps drew (a history that is not linearizable).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<Figure>,
}

/// A picture a step drew for the report, with its caption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Figure {
    /// What it shows.
    pub caption: String,
    /// The picture, an `<svg>` element.
    pub svg: String,
}

/// One convergence time, in the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeasurementReport {
    /// What was waited for.
    pub what: String,
    /// Seconds it took.
    pub seconds: f64,
    /// Seconds it was allowed.
    pub bound_seconds: f64,
    /// The fault before it, if any.
    pub after_fault: Option<String>,
    /// Seconds from that fault to the end of the wait.
    pub seconds_after_fault: Option<f64>,
}

/// The verdict on one feature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureVerdict {
    /// Every scenario that applies passed (and at least one applies).
    Certified,
    /// These scenarios failed.
    NotCertified {
        /// Names of the failed scenarios.
        failed: Vec<String>,
    },
    /// No scenario of the feature applies to this system.
    NotApplicable,
}

/// One feature, with its verdict and its scenarios.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeatureReport {
    /// The feature's name.
    pub name: String,
    /// Its verdict.
    pub verdict: FeatureVerdict,
    /// Scenarios passed.
    pub passed: usize,
    /// Scenarios failed.
    pub failed: usize,
    /// Scenarios not applicable.
    pub not_applicable: usize,
    /// Its scenarios, in the order they ran.
    pub scenarios: Vec<ScenarioReport>,
}

/// Whether the system has one capability, and why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CapabilityReport {
    /// The capability tag, without `@`.
    pub tag: String,
    /// Whether the system has it.
    pub has: bool,
    /// Why not.
    pub reason: Option<String>,
}

/// The system under test, as the header shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SystemReport {
    /// The driver's name: `reference`, `kubernetes`, `swarm`.
    pub driver: String,
    /// The system's name and version as it reports them.
    pub version: String,
    /// What exactly is under test, in a sentence (address, data, nodes).
    pub description: String,
    /// How the kit reaches services and replicas of this system.
    pub reach: String,
}

/// A whole run, as `summary.json` holds it and `report.html` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// The system under test.
    pub system: SystemReport,
    /// The kit's version.
    pub kit_version: String,
    /// When the run started (RFC 3339, UTC).
    pub started: String,
    /// The run's wall time in seconds.
    pub seconds: f64,
    /// The timing profile the bounds came from.
    pub profile: crate::profile::Profile,
    /// Which scenarios were selected, if not all (a tag expression).
    pub tags: Option<String>,
    /// The capabilities the driver has and lacks.
    pub capabilities: Vec<CapabilityReport>,
    /// One entry per feature, in the order they ran.
    pub features: Vec<FeatureReport>,
    /// Scenarios passed in all.
    pub passed: usize,
    /// Scenarios failed in all.
    pub failed: usize,
    /// Scenarios not applicable in all.
    pub not_applicable: usize,
    /// Where the report's files are.
    pub files: BTreeMap<String, String>,
    /// For the reference, the kit's mutation score: how many of its behavioural mutants
    /// the features caught, in the last run of `shipshape-conformance mutants`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation_score: Option<crate::mutants::Score>,
    /// Healthy nodes the system marked not ready during the run.
    pub false_alarms: Vec<FalseAlarm>,
    /// How many times every node's readiness was looked at (every
    /// [`crate::node_watch::LOOK_EVERY`]) to find them.
    pub node_looks: u64,
    /// How many times the looks saw a node that a scenario made fail turn not ready: the
    /// looks do see nodes go (when scenarios lose or cut off nodes, this is not zero).
    pub failed_nodes_seen: usize,
}

impl RunReport {
    /// One line on healthy nodes marked not ready: how many, and where.
    pub fn false_alarm_line(&self) -> String {
        let every = crate::node_watch::LOOK_EVERY.as_millis();
        let mut line = format!(
            "healthy nodes marked not ready: {} (every node's readiness looked at {} times, \
             every {every} ms; nodes the scenarios made fail were seen turn not ready {} times)",
            self.false_alarms.len(),
            self.node_looks,
            self.failed_nodes_seen
        );
        for alarm in &self.false_alarms {
            line.push_str(&format!(
                "; {} at {:.1} s into {} — {}",
                alarm.node, alarm.seconds, alarm.scenario.feature, alarm.scenario.scenario
            ));
        }
        line
    }

    /// Whether every scenario that applies passed.
    pub fn certified(&self) -> bool {
        self.failed == 0
    }

    /// The scenarios that failed without the driver explaining the failure as a known
    /// difference of the system: faults of the system under test, or of the kit.
    pub fn unexplained_failures(&self) -> Vec<String> {
        self.features
            .iter()
            .flat_map(|feature| &feature.scenarios)
            .filter(|scenario| {
                matches!(scenario.verdict, Verdict::Failed { .. }) && scenario.explanation.is_none()
            })
            .map(|scenario| format!("{} — {}", scenario.id.feature, scenario.id.scenario))
            .collect()
    }
}

/// What the recorder has seen of one scenario so far.
#[derive(Clone, Debug, Default)]
struct ScenarioRecord {
    /// Its tags, its feature's and rule's included.
    tags: Vec<String>,
    /// Its steps so far.
    steps: Vec<StepRecord>,
    /// When the step in progress started.
    step_started: Option<Instant>,
    /// When the scenario started.
    started: Option<Instant>,
    /// Its wall time, once finished (without the clean-up).
    took: Option<Duration>,
}

/// The facts of a run as they come in, shared by the writer, the steps and the hooks.
#[derive(Debug, Default)]
pub struct Report {
    /// Everything, behind one lock: each piece is small and written rarely.
    inner: Mutex<Inner>,
}

/// [`Report`]'s state.
#[derive(Debug, Default)]
struct Inner {
    /// Convergence times, in the order measured.
    measurements: Vec<Measurement>,
    /// Scenario wall times with clean-up, in the order finished.
    scenarios: Vec<ScenarioTime>,
    /// What the recorder saw, by scenario.
    records: BTreeMap<ScenarioId, ScenarioRecord>,
    /// The scenarios in the order they started.
    order: Vec<ScenarioId>,
    /// Timelines handed over by the after-scenario hook.
    timelines: BTreeMap<ScenarioId, Timeline>,
    /// Pictures handed over by the after-scenario hook.
    figures: BTreeMap<ScenarioId, Vec<Figure>>,
    /// Healthy nodes marked not ready, in the order found.
    false_alarms: Vec<FalseAlarm>,
    /// How many times a node a scenario made fail was seen turn not ready.
    failed_nodes_seen: usize,
}

/// A node the system marked not ready although no scenario made it fail
/// ([`crate::node_watch`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FalseAlarm {
    /// The scenario it happened in (its clean-up included).
    pub scenario: ScenarioId,
    /// The node.
    pub node: String,
    /// When, in seconds from the scenario's start.
    pub seconds: f64,
}

impl Report {
    /// Locks the state (a poisoned lock still holds good data: nothing panics mid-update).
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds what a scenario saw of nodes turning not ready: `expected` times a node it made
    /// fail, and the false alarms.
    pub fn nodes_turned_not_ready(&self, expected: usize, alarms: Vec<FalseAlarm>) {
        let mut inner = self.lock();
        inner.failed_nodes_seen += expected;
        inner.false_alarms.extend(alarms);
    }

    /// Adds a convergence time.
    pub fn measured(&self, measurement: Measurement) {
        self.lock().measurements.push(measurement);
    }

    /// Adds a scenario's wall time, its clean-up included.
    pub fn scenario_finished(&self, time: ScenarioTime) {
        self.lock().scenarios.push(time);
    }

    /// Keeps what a scenario's traffic, monitor and faults saw.
    pub fn timeline(&self, scenario: ScenarioId, timeline: Timeline) {
        self.lock().timelines.insert(scenario, timeline);
    }

    /// Keeps the pictures a scenario's steps drew.
    pub fn figures(&self, scenario: ScenarioId, figures: Vec<Figure>) {
        self.lock()
            .figures
            .entry(scenario)
            .or_default()
            .extend(figures);
    }

    /// The convergence times measured so far.
    pub fn measurements(&self) -> Vec<Measurement> {
        self.lock().measurements.clone()
    }

    /// The scenario wall times so far.
    pub fn scenarios(&self) -> Vec<ScenarioTime> {
        self.lock().scenarios.clone()
    }

    /// The verdict on a scenario that has finished, and how long it ran.
    pub fn verdict(&self, id: &ScenarioId) -> Option<(Verdict, Duration)> {
        let inner = self.lock();
        let record = inner.records.get(id)?;
        Some((verdict_of(&record.steps), record.took?))
    }

    /// Handles one cucumber event.
    fn record(&self, event: &Cucumber<crate::world::ConformanceWorld>) {
        let Cucumber::Feature(feature, event) = event else {
            return;
        };
        let (rule, scenario, event) = match event {
            FeatureEvent::Scenario(scenario, event) => (None, scenario, &event.event),
            FeatureEvent::Rule(rule, RuleEvent::Scenario(scenario, event)) => {
                (Some(rule), scenario, &event.event)
            }
            _ => return,
        };
        let id = ScenarioId::of(feature, scenario);
        let mut inner = self.lock();
        match event {
            event::Scenario::Started => {
                let tags = feature
                    .tags
                    .iter()
                    .chain(rule.iter().flat_map(|rule| &rule.tags))
                    .chain(&scenario.tags)
                    .cloned()
                    .collect();
                inner.order.push(id.clone());
                inner.records.insert(
                    id,
                    ScenarioRecord {
                        tags,
                        started: Some(Instant::now()),
                        ..ScenarioRecord::default()
                    },
                );
            }
            event::Scenario::Step(step, event) | event::Scenario::Background(step, event) => {
                let record = inner.records.entry(id).or_default();
                let text = format!("{}{}", step.keyword, step.value);
                let at = match (record.started, record.step_started) {
                    (Some(scenario), Some(step)) => {
                        step.saturating_duration_since(scenario).as_secs_f64()
                    }
                    _ => 0.0,
                };
                let seconds = record
                    .step_started
                    .map_or(0.0, |started| started.elapsed().as_secs_f64());
                let (outcome, error) = match event {
                    event::Step::Started => {
                        record.step_started = Some(Instant::now());
                        return;
                    }
                    event::Step::Passed(..) => (StepOutcome::Passed, None),
                    event::Step::Skipped => (StepOutcome::Skipped, None),
                    event::Step::Failed(_, _, _, error) => {
                        (StepOutcome::Failed, Some(step_error(error)))
                    }
                };
                record.step_started = None;
                record.steps.push(StepRecord {
                    text,
                    outcome,
                    at,
                    seconds: if outcome == StepOutcome::Skipped {
                        0.0
                    } else {
                        seconds
                    },
                    error,
                });
            }
            event::Scenario::Hook(kind, event::Hook::Failed(_, info)) => {
                let record = inner.records.entry(id).or_default();
                record.steps.push(StepRecord {
                    text: format!("{kind} hook"),
                    outcome: StepOutcome::Failed,
                    at: 0.0,
                    seconds: 0.0,
                    error: Some(panic_text(info)),
                });
            }
            // The before hook waits for the scenario's turn on the cluster; its time
            // starts once it has it.
            event::Scenario::Hook(event::HookType::Before, event::Hook::Passed) => {
                let record = inner.records.entry(id).or_default();
                record.started = Some(Instant::now());
            }
            event::Scenario::Finished => {
                let record = inner.records.entry(id).or_default();
                record.took = record.started.map(|started| started.elapsed());
            }
            event::Scenario::Hook(..) | event::Scenario::Log(_) => {}
        }
    }

    /// Puts the run together: every scenario that started, grouped by feature in the
    /// order they ran, with its verdict, measurements, timeline and explanation.
    pub fn finish(&self, header: Header) -> RunReport {
        let inner = self.lock();
        let mut features: Vec<FeatureReport> = Vec::new();
        for id in &inner.order {
            let Some(record) = inner.records.get(id) else {
                continue;
            };
            let verdict = verdict_of(&record.steps);
            let explanation = match verdict {
                Verdict::Failed { .. } => header.differences.get(&id.scenario).cloned(),
                _ => None,
            };
            let seconds = inner
                .scenarios
                .iter()
                .find(|time| time.scenario == *id)
                .map(|time| time.took)
                .or(record.took)
                .unwrap_or_default()
                .as_secs_f64();
            let measurements = inner
                .measurements
                .iter()
                .filter(|measurement| measurement.scenario == *id)
                .map(|m| MeasurementReport {
                    what: m.what.clone(),
                    seconds: m.took.as_secs_f64(),
                    bound_seconds: m.bound.as_secs_f64(),
                    after_fault: m.since_fault.as_ref().map(|(fault, _)| fault.clone()),
                    seconds_after_fault: m.since_fault.as_ref().map(|(_, at)| at.as_secs_f64()),
                })
                .collect();
            let timeline = inner
                .timelines
                .get(id)
                .cloned()
                .map(|timeline| with_actions(timeline, &record.steps));
            let scenario = ScenarioReport {
                id: id.clone(),
                tags: record.tags.clone(),
                verdict,
                steps: record.steps.clone(),
                seconds,
                measurements,
                timeline,
                explanation,
                figures: inner.figures.get(id).cloned().unwrap_or_default(),
            };
            match features.iter_mut().find(|f| f.name == id.feature) {
                Some(feature) => feature.scenarios.push(scenario),
                None => features.push(FeatureReport {
                    name: id.feature.clone(),
                    verdict: FeatureVerdict::NotApplicable,
                    passed: 0,
                    failed: 0,
                    not_applicable: 0,
                    scenarios: vec![scenario],
                }),
            }
        }
        for feature in &mut features {
            let count = |wanted: fn(&Verdict) -> bool| {
                feature
                    .scenarios
                    .iter()
                    .filter(|scenario| wanted(&scenario.verdict))
                    .count()
            };
            feature.passed = count(|v| matches!(v, Verdict::Passed));
            feature.failed = count(|v| matches!(v, Verdict::Failed { .. }));
            feature.not_applicable = count(|v| matches!(v, Verdict::NotApplicable { .. }));
            feature.verdict = if feature.failed > 0 {
                FeatureVerdict::NotCertified {
                    failed: feature
                        .scenarios
                        .iter()
                        .filter(|s| matches!(s.verdict, Verdict::Failed { .. }))
                        .map(|s| s.id.scenario.clone())
                        .collect(),
                }
            } else if feature.passed > 0 {
                FeatureVerdict::Certified
            } else {
                FeatureVerdict::NotApplicable
            };
        }
        let total = |pick: fn(&FeatureReport) -> usize| features.iter().map(pick).sum();
        RunReport {
            passed: total(|f| f.passed),
            failed: total(|f| f.failed),
            not_applicable: total(|f| f.not_applicable),
            system: header.system,
            kit_version: env!("CARGO_PKG_VERSION").to_owned(),
            started: header.started,
            seconds: header.took.as_secs_f64(),
            profile: header.profile,
            tags: header.tags,
            capabilities: header.capabilities,
            features,
            files: header.files,
            mutation_score: header.mutation_score,
            false_alarms: inner.false_alarms.clone(),
            failed_nodes_seen: inner.failed_nodes_seen,
            node_looks: header.node_looks,
        }
    }

    /// A plain-text summary: the time of each scenario, added up per feature (scenarios
    /// that ran side by side overlap, so the sums can exceed the run's wall time), then
    /// every convergence time against its bound.
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
        let mut text = String::from(
            "scenario time per feature (scenarios side by side overlap: the sums are not the run's wall time):\n",
        );
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

/// What the harness knows of the run besides what the report gathered.
#[derive(Clone, Debug, Default)]
pub struct Header {
    /// The system under test.
    pub system: SystemReport,
    /// When the run started (RFC 3339).
    pub started: String,
    /// The run's wall time.
    pub took: Duration,
    /// The timing profile.
    pub profile: crate::profile::Profile,
    /// The tag expression that selected the scenarios, if any.
    pub tags: Option<String>,
    /// The driver's capabilities.
    pub capabilities: Vec<CapabilityReport>,
    /// The system's known differences from the features, by scenario name.
    pub differences: BTreeMap<String, String>,
    /// The report's files, by kind.
    pub files: BTreeMap<String, String>,
    /// The kit's mutation score, for the reference ([`crate::mutants::last_score`]).
    pub mutation_score: Option<crate::mutants::Score>,
    /// How many times the harness looked at every node's readiness.
    pub node_looks: u64,
}

/// A timeline with the scenario's actions marked: each `When` step at its start, unless a
/// fault it injected is marked already.
fn with_actions(mut timeline: Timeline, steps: &[StepRecord]) -> Timeline {
    for step in steps.iter().filter(|step| step.text.starts_with("When ")) {
        let during = |at: f64| at >= step.at - 0.05 && at <= step.at + step.seconds + 0.05;
        let has_fault = timeline
            .marks
            .iter()
            .any(|mark| mark.fault && during(mark.at));
        if !has_fault {
            timeline.mark(timeline::Mark {
                at: step.at,
                what: step.text.clone(),
                fault: false,
            });
        }
    }
    timeline
}

/// A scenario's verdict from its steps: not applicable when its only step says so;
/// failed at its first failed (or otherwise skipped) step; passed when every step passed.
fn verdict_of(steps: &[StepRecord]) -> Verdict {
    if let [only] = steps
        && only.outcome == StepOutcome::Skipped
        && let Some(reason) = only
            .text
            .split_once(NOT_APPLICABLE_PREFIX)
            .map(|(_, reason)| reason)
    {
        return Verdict::NotApplicable {
            reason: reason.trim().to_owned(),
        };
    }
    if let Some(failed) = steps
        .iter()
        .find(|step| step.outcome == StepOutcome::Failed)
    {
        return Verdict::Failed {
            step: failed.text.clone(),
            error: failed.error.clone().unwrap_or_default(),
        };
    }
    if let Some(skipped) = steps
        .iter()
        .find(|step| step.outcome == StepOutcome::Skipped)
    {
        return Verdict::Failed {
            step: skipped.text.clone(),
            error: "no step definition matches this sentence".to_owned(),
        };
    }
    if steps.is_empty() {
        return Verdict::Failed {
            step: String::new(),
            error: "the scenario ran no step".to_owned(),
        };
    }
    Verdict::Passed
}

/// The message of a failed step: what the step returned, without cucumber's wrapping.
fn step_error(error: &event::StepError) -> String {
    match error {
        event::StepError::Panic(info) => panic_text(info),
        other => other.to_string(),
    }
}

/// The text of a panic payload.
fn panic_text(info: &event::Info) -> String {
    info.downcast_ref::<String>()
        .cloned()
        .or_else(|| info.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_else(|| "(the step panicked without a message)".to_owned())
}

/// What is told of each scenario as it finishes: its id, its verdict, how long it ran.
type OnFinished = Box<dyn Fn(&ScenarioId, &Verdict, Duration) + Send + Sync>;

/// A cucumber writer that feeds every event into a [`Report`]; tee it next to the others.
pub struct Recorder {
    /// Where the facts go.
    report: Arc<Report>,
    /// Called with each scenario's id and verdict as it finishes (the progress line).
    on_finished: OnFinished,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder filling `report`, calling `on_finished` after each scenario.
    pub fn new(
        report: Arc<Report>,
        on_finished: impl Fn(&ScenarioId, &Verdict, Duration) + Send + Sync + 'static,
    ) -> Self {
        Self {
            report,
            on_finished: Box::new(on_finished),
        }
    }
}

impl writer::Writer<crate::world::ConformanceWorld> for Recorder {
    type Cli = cucumber::cli::Empty;

    async fn handle_event(
        &mut self,
        event: parser::Result<event::Event<Cucumber<crate::world::ConformanceWorld>>>,
        _cli: &Self::Cli,
    ) {
        let Ok(event) = event else {
            return;
        };
        self.report.record(&event.value);
        let finished = match &event.value {
            Cucumber::Feature(feature, FeatureEvent::Scenario(scenario, ev))
            | Cucumber::Feature(
                feature,
                FeatureEvent::Rule(_, RuleEvent::Scenario(scenario, ev)),
            ) if matches!(ev.event, event::Scenario::Finished) => {
                Some(ScenarioId::of(feature, scenario))
            }
            _ => None,
        };
        if let Some(id) = finished
            && let Some((verdict, took)) = self.report.verdict(&id)
        {
            (self.on_finished)(&id, &verdict, took);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(text: &str, outcome: StepOutcome) -> StepRecord {
        StepRecord {
            text: text.to_owned(),
            outcome,
            at: 0.0,
            seconds: 0.0,
            error: (outcome == StepOutcome::Failed).then(|| "it broke".to_owned()),
        }
    }

    #[test]
    fn verdicts_follow_the_steps() {
        assert_eq!(
            verdict_of(&[step("Given a", StepOutcome::Passed)]),
            Verdict::Passed
        );
        assert_eq!(
            verdict_of(&[
                step("Given a", StepOutcome::Passed),
                step("When b", StepOutcome::Failed),
                step("Then c", StepOutcome::Skipped),
            ]),
            Verdict::Failed {
                step: "When b".to_owned(),
                error: "it broke".to_owned()
            }
        );
        assert_eq!(
            verdict_of(&[step(
                "Given not applicable: driver swarm lacks @pods",
                StepOutcome::Skipped
            )]),
            Verdict::NotApplicable {
                reason: "driver swarm lacks @pods".to_owned()
            }
        );
        // A step nobody defined is a failure, not "not applicable".
        assert!(matches!(
            verdict_of(&[
                step("Given a", StepOutcome::Passed),
                step("When a typo", StepOutcome::Skipped)
            ]),
            Verdict::Failed { .. }
        ));
        assert!(matches!(verdict_of(&[]), Verdict::Failed { .. }));
    }

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
