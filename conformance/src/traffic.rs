//! The traffic generator: continuous requests to a service while the system changes.
//!
//! Invariants are checked *during* transitions, not only at the end: a scenario starts
//! traffic to a service, changes the system (scales down, deletes a replica, rolls out),
//! and then asks how many requests failed, and when. The generator is a background task
//! that sends `GET /` through [`Driver::reach_service`] one request after the other — a
//! fresh connection each, as the driver sends them — with a short pause in between, and
//! counts the answers, the failures (with the time each happened and why), and which
//! replica answered (the probe names itself in its answer: `{"pod": ...}`).
//!
//! It also counts which version answered (the probe says `{"version": ...}`) and keeps the
//! order in which versions answered, as runs of consecutive answers ([`VersionRun`]): a
//! rollout that switches versions shows as one run of the old version then one of the
//! new; a system that serves both at once shows as runs alternating.
//!
//! Next to it, the availability monitor ([`Availability`]) samples a deployment's
//! replicas through the driver a few times a second, and keeps every sample, the lowest
//! number of available replicas it saw, and the most templates it saw running at once:
//! what a rollout promises (`replicas − maxUnavailable` available throughout; with
//! `Recreate`, never two templates running) is checked on what happened during the
//! rollout, not on where it ended.
//!
//! Where the kit's host does not reach a system's services, the driver runs the generator
//! *inside* the system instead ([`Driver::generate_traffic_inside`]): it sends the same
//! requests, one after the other with the same pause, from where the system's own clients
//! are, and the kit collects every request's outcome and time from it a few times a
//! second. The counts and the timeline are the same either way.
//!
//! Both keep what they saw over time — every request's outcome, every sample — for the
//! scenario's timeline in the report ([`crate::report::Timeline`]).
//!
//! Both are bounded: they stop by themselves after [`MAX_RUN`], and when they are dropped
//! (at the latest with the scenario's world: their task is a [`Background`]), so a failed
//! scenario never leaves them running.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::task::JoinHandle;

use crate::driver::{Driver, InsideTraffic, Phase, Replica};

/// Pause between two requests of the generator.
pub const PAUSE: Duration = Duration::from_millis(20);

/// The longest a generator runs before it stops by itself.
pub const MAX_RUN: Duration = Duration::from_secs(180);

/// One failed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// When it failed, counted from the start of the traffic.
    pub at: Duration,
    /// Why, as the driver said.
    pub error: String,
}

/// What the traffic has seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests answered with success.
    pub successes: u64,
    /// Requests that failed, in order.
    pub failures: Vec<Failure>,
    /// Successful answers, by the replica that gave them (`?` when the answer named none).
    pub by_replica: BTreeMap<String, u64>,
    /// Successful answers, by the version that gave them (`?` when the answer named none).
    pub by_version: BTreeMap<String, u64>,
    /// The versions that answered, in order: runs of consecutive answers of one version.
    pub versions: Vec<VersionRun>,
    /// How long the traffic ran.
    pub ran: Duration,
}

/// Consecutive successful answers from one version (failures in between do not end it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRun {
    /// The version that answered.
    pub version: String,
    /// How many answers in a row it gave.
    pub answers: u64,
    /// When it gave the first, counted from the start of the traffic.
    pub from: Duration,
    /// When it gave the last.
    pub to: Duration,
}

impl Counts {
    /// All requests sent (answered or failed).
    pub fn total(&self) -> u64 {
        self.successes + self.failures.len() as u64
    }

    /// Counts one answer body, noting the replica and version it names, as answered at
    /// [`Counts::ran`] (a batch that sets `ran` only at its end keeps the order of versions,
    /// not their times).
    pub fn answered(&mut self, body: &str) {
        self.answered_at(body, self.ran);
    }

    /// Counts one answer body given `at` this time of the traffic.
    pub fn answered_at(&mut self, body: &str, at: Duration) {
        self.successes += 1;
        *self.by_replica.entry(replica_of(body)).or_default() += 1;
        let version = version_of(body);
        *self.by_version.entry(version.clone()).or_default() += 1;
        match self.versions.last_mut() {
            Some(run) if run.version == version => {
                run.answers += 1;
                run.to = at;
            }
            _ => self.versions.push(VersionRun {
                version,
                answers: 1,
                from: at,
                to: at,
            }),
        }
    }

    /// Fails if a request failed, saying how many and when and why the first few did;
    /// `whose` says whose requests they were ("to service web").
    pub fn none_failed(&self, whose: &str) -> anyhow::Result<()> {
        let first = self.failures.iter().take(5);
        let first = first.map(|f| format!("at {:.1} s: {}", f.at.as_secs_f64(), f.error));
        anyhow::ensure!(
            self.failures.is_empty(),
            "{} of {} requests {whose} failed; the first: {}",
            self.failures.len(),
            self.total(),
            first.collect::<Vec<_>>().join("; ")
        );
        Ok(())
    }

    /// The order in which versions answered, `v1 (120) → v2 (80)`.
    pub fn version_sequence(&self) -> String {
        self.versions
            .iter()
            .map(|run| {
                format!(
                    "{} ({} from {:.1} s to {:.1} s)",
                    run.version,
                    run.answers,
                    run.from.as_secs_f64(),
                    run.to.as_secs_f64()
                )
            })
            .collect::<Vec<_>>()
            .join(" → ")
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests in {:.1} s: {} answered, {} failed",
            self.total(),
            self.ran.as_secs_f64(),
            self.successes,
            self.failures.len()
        )?;
        if !self.by_replica.is_empty() {
            let spread: Vec<String> = self
                .by_replica
                .iter()
                .map(|(replica, count)| format!("{replica}: {count}"))
                .collect();
            write!(f, " ({})", spread.join(", "))?;
        }
        if !self.by_version.is_empty() {
            let versions: Vec<String> = self
                .by_version
                .iter()
                .map(|(version, count)| format!("{version}: {count}"))
                .collect();
            write!(f, "; versions {}", versions.join(", "))?;
        }
        Ok(())
    }
}

/// The replica an answer of the probe names (`{"pod": ...}`), or `?`.
pub fn replica_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|answer| Some(answer.get("pod")?.as_str()?.to_owned()))
        .unwrap_or_else(|| "?".to_owned())
}

/// The version an answer of the probe names (`{"version": ...}`), or `?`.
pub fn version_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|answer| Some(answer.get("version")?.as_str()?.to_owned()))
        .unwrap_or_else(|| "?".to_owned())
}

/// The outcome of one request: the version that answered, or why it failed.
pub type Outcome = Result<String, String>;

/// Every request's outcome, with when it ended (from the start of the traffic), shared
/// between the generator's task and its owner.
type Log = Arc<Mutex<Vec<(Duration, Outcome)>>>;

/// Traffic running in the background to one service.
pub struct Traffic {
    /// The service it is sent to.
    service: String,
    /// What it has seen so far, shared with the task.
    counts: Arc<Mutex<Counts>>,
    /// Every request's outcome, with when it ended (from the start of the traffic).
    log: Log,
    /// Set to stop the task after its current request.
    stop: Arc<AtomicBool>,
    /// When it started: [`Failure::at`] counts from here.
    started: Instant,
    /// The task.
    task: Background,
}

impl Traffic {
    /// Starts sending requests to `service` of `namespace`; needs a Tokio runtime.
    pub fn start(driver: Arc<dyn Driver>, namespace: String, service: String) -> Self {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let task = Background::spawn(run(
            driver,
            namespace,
            service.clone(),
            started,
            (Arc::clone(&counts), Arc::clone(&log)),
            Arc::clone(&stop),
        ));
        Self {
            service,
            counts,
            log,
            stop,
            started,
            task,
        }
    }

    /// When the traffic started: the instant each [`Failure::at`] counts from.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The service the traffic goes to.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// What it has seen so far.
    pub fn counts(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every request's outcome so far, with when it ended (from the start of the traffic).
    pub fn log(&self) -> Vec<(Duration, Outcome)> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the traffic once the request in flight is done, and returns what it saw.
    /// Stopping it again returns the same.
    pub async fn stop(&mut self) -> Counts {
        self.stop.store(true, Ordering::SeqCst);
        self.task.join().await;
        self.counts()
    }
}

/// A task of the kit running in the background; aborted when dropped, at the latest with
/// the scenario's world, so that a failed scenario never leaves it running.
pub struct Background(Option<JoinHandle<()>>);

impl Background {
    /// Starts `task`; needs a Tokio runtime.
    pub fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(Some(tokio::spawn(task)))
    }

    /// Waits until the task has ended; at once if it was waited for already. (A request
    /// of the task is bounded by the HTTP client's timeout; a panic is counted out.)
    pub async fn join(&mut self) {
        if let Some(task) = self.0.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for Traffic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traffic")
            .field("service", &self.service)
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

/// How often the outcomes of a generator inside the system are collected.
const COLLECT_PAUSE: Duration = Duration::from_millis(250);

/// The generator: inside the system when its driver runs one there, else from here.
async fn run(
    driver: Arc<dyn Driver>,
    namespace: String,
    service: String,
    started: Instant,
    (counts, log): (Arc<Mutex<Counts>>, Log),
    stop: Arc<AtomicBool>,
) {
    let record = |at: Duration, answer: Result<String, String>| {
        let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = match answer {
            Ok(body) => {
                counts.answered_at(&body, at);
                Ok(version_of(&body))
            }
            Err(error) => {
                counts.failures.push(Failure {
                    at,
                    error: error.clone(),
                });
                Err(error)
            }
        };
        counts.ran = counts.ran.max(at);
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((at, outcome));
    };
    let asked = started.elapsed();
    match driver.generate_traffic_inside(&namespace, &service).await {
        Ok(None) => {
            while !stop.load(Ordering::SeqCst) && started.elapsed() < MAX_RUN {
                let answer = driver.reach_service(&namespace, &service, "/").await;
                record(
                    started.elapsed(),
                    answer.map_err(|error| format!("{error:#}")),
                );
                tokio::time::sleep(PAUSE).await;
            }
        }
        Ok(Some(inside)) => {
            // The generator started between the asking and the answer: its times count
            // from the middle of the two.
            let offset = (asked + started.elapsed()) / 2;
            collect_from_inside(inside, started, &stop, |at, answer| {
                record(offset + at, answer)
            })
            .await;
        }
        Err(error) => record(
            started.elapsed(),
            Err(format!(
                "the traffic generator inside the system did not start: {error:#}"
            )),
        ),
    }
}

/// Collects the outcomes of a generator inside the system until `stop` (or [`MAX_RUN`]),
/// then stops it and collects its last ones.
async fn collect_from_inside(
    mut inside: Box<dyn InsideTraffic>,
    started: Instant,
    stop: &AtomicBool,
    mut record: impl FnMut(Duration, Result<String, String>),
) {
    while !stop.load(Ordering::SeqCst) && started.elapsed() < MAX_RUN {
        tokio::time::sleep(COLLECT_PAUSE).await;
        match inside.collect().await {
            Ok(outcomes) => outcomes
                .into_iter()
                .for_each(|(at, answer)| record(at, answer)),
            // The generator keeps what it has not handed over: the next call gets it.
            Err(error) => eprintln!("conformance: collecting the traffic's outcomes: {error:#}"),
        }
    }
    match inside.stop().await {
        Ok(outcomes) => outcomes
            .into_iter()
            .for_each(|(at, answer)| record(at, answer)),
        Err(error) => eprintln!("conformance: stopping the traffic inside the system: {error:#}"),
    }
}

/// Pause between two samples of the availability monitor.
pub const SAMPLE_PAUSE: Duration = Duration::from_millis(150);

/// One look of the availability monitor at a deployment's replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When it was taken, counted from the start of the monitor.
    pub at: Duration,
    /// Replicas available: ready (for `minReadySeconds`, if set) and not being deleted.
    pub available: usize,
    /// Distinct templates among the replicas running, terminating ones included: they
    /// still run until their node has stopped them.
    pub templates_running: usize,
    /// The replicas, in a few words each.
    pub replicas: String,
}

/// What the availability monitor has seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Samples taken.
    pub samples: u64,
    /// The sample with the fewest available replicas (the first such).
    pub lowest: Option<Sample>,
    /// The sample with the most templates running at once (the first such).
    pub most_templates: Option<Sample>,
    /// Looks that failed (the system did not answer the list).
    pub errors: u64,
    /// Why the last failed look failed.
    pub last_error: Option<String>,
    /// How long the monitor ran.
    pub ran: Duration,
}

impl Seen {
    /// Takes one sample into account.
    fn record(&mut self, sample: Sample) {
        self.samples += 1;
        if self
            .lowest
            .as_ref()
            .is_none_or(|lowest| sample.available < lowest.available)
        {
            self.lowest = Some(sample.clone());
        }
        if self
            .most_templates
            .as_ref()
            .is_none_or(|most| sample.templates_running > most.templates_running)
        {
            self.most_templates = Some(sample);
        }
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} samples in {:.1} s",
            self.samples,
            self.ran.as_secs_f64()
        )?;
        if let Some(lowest) = &self.lowest {
            write!(
                f,
                "; fewest available: {} at {:.1} s",
                lowest.available,
                lowest.at.as_secs_f64()
            )?;
        }
        if let Some(most) = &self.most_templates {
            write!(
                f,
                "; most templates running at once: {} at {:.1} s",
                most.templates_running,
                most.at.as_secs_f64()
            )?;
        }
        if self.errors > 0 {
            write!(
                f,
                "; {} failed looks, the last: {}",
                self.errors,
                self.last_error.as_deref().unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

/// What the monitor keeps: the summary and every sample.
#[derive(Debug, Default)]
struct Watched {
    /// The summary.
    seen: Seen,
    /// Every sample, in order.
    samples: Vec<Sample>,
}

/// The availability monitor: samples the replicas of one deployment in the background.
pub struct Availability {
    /// The deployment it watches.
    deployment: String,
    /// What it has seen so far, shared with the task.
    watched: Arc<Mutex<Watched>>,
    /// When it started: samples count from here.
    started: Instant,
    /// The task, held only to be aborted with the monitor.
    _task: Background,
}

impl Availability {
    /// Starts sampling the replicas of `deployment` through the driver; a replica counts
    /// as available once it has been ready for `min_ready`. Needs a Tokio runtime.
    pub fn start(
        driver: Arc<dyn Driver>,
        namespace: &str,
        deployment: &str,
        min_ready: Duration,
    ) -> Self {
        let watched = Arc::new(Mutex::new(Watched::default()));
        let started = Instant::now();
        let task = Background::spawn(monitor(
            driver,
            namespace.to_owned(),
            deployment.to_owned(),
            min_ready,
            started,
            Arc::clone(&watched),
        ));
        Self {
            deployment: deployment.to_owned(),
            watched,
            started,
            _task: task,
        }
    }

    /// The deployment it watches.
    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// When it started: every [`Sample::at`] counts from here.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// What it has seen so far.
    pub fn seen(&self) -> Seen {
        self.lock().seen.clone()
    }

    /// Every sample so far, in order.
    pub fn samples(&self) -> Vec<Sample> {
        self.lock().samples.clone()
    }

    /// Locks what it has seen.
    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Availability")
            .field("deployment", &self.deployment)
            .field("seen", &self.seen())
            .finish_non_exhaustive()
    }
}

/// The monitor's loop.
async fn monitor(
    driver: Arc<dyn Driver>,
    namespace: String,
    deployment: String,
    min_ready: Duration,
    started: Instant,
    watched: Arc<Mutex<Watched>>,
) {
    while started.elapsed() < MAX_RUN {
        let listed = driver.list_replicas(&namespace, &deployment).await;
        let at = started.elapsed();
        {
            let mut watched = watched.lock().unwrap_or_else(PoisonError::into_inner);
            match listed {
                Ok(replicas) => {
                    let sample = sample_of(&replicas, min_ready, at, SystemTime::now());
                    watched.seen.record(sample.clone());
                    watched.samples.push(sample);
                }
                Err(error) => {
                    watched.seen.errors += 1;
                    watched.seen.last_error = Some(format!("{error:#}"));
                }
            }
            watched.seen.ran = at;
        }
        tokio::time::sleep(SAMPLE_PAUSE).await;
    }
}

/// One sample of a deployment's replicas, as Kubernetes counts availability
/// (`IsPodAvailable`): ready, and for `min_ready` when that is set (judged at `now`);
/// replicas being deleted do not count.
fn sample_of(replicas: &[Replica], min_ready: Duration, at: Duration, now: SystemTime) -> Sample {
    let mut available = 0;
    let mut templates = BTreeSet::new();
    let mut described = Vec::new();
    for replica in replicas {
        let template = replica.template.as_deref().unwrap_or("?");
        let ready_long_enough = replica.ready
            && (min_ready.is_zero()
                || replica.ready_since.is_some_and(|since| {
                    now.duration_since(since)
                        .is_ok_and(|ready_for| ready_for >= min_ready)
                }));
        let is_available = ready_long_enough && !replica.terminating;
        if is_available {
            available += 1;
        }
        if replica.phase == Phase::Running {
            templates.insert(template.to_owned());
        }
        let mut text = format!("{} [{template}] {}", replica.name, replica.phase);
        if replica.ready {
            text.push_str(if is_available {
                ", available"
            } else {
                ", ready"
            });
        }
        if replica.terminating {
            text.push_str(", terminating");
        }
        described.push(text);
    }
    Sample {
        at,
        available,
        templates_running: templates.len(),
        replicas: described.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_the_replica_they_name() {
        let mut counts = Counts::default();
        counts.answered(r#"{"pod":"web-1","version":"v1"}"#);
        counts.answered(r#"{"pod":"web-1"}"#);
        counts.answered("not json");
        counts.failures.push(Failure {
            at: Duration::from_millis(1500),
            error: "refused".to_owned(),
        });
        assert_eq!(counts.total(), 4);
        assert_eq!(counts.by_replica.get("web-1"), Some(&2));
        assert_eq!(counts.by_replica.get("?"), Some(&1));
        assert_eq!(counts.by_version.get("v1"), Some(&1));
        assert!(counts.to_string().contains("4 requests"), "{counts}");
    }

    #[test]
    fn versions_are_kept_in_the_order_they_answered() {
        let mut counts = Counts::default();
        let answer = |version: &str| format!(r#"{{"pod":"web-1","version":"{version}"}}"#);
        for (version, at) in [("v1", 1), ("v1", 2), ("v2", 3), ("v1", 4), ("v1", 5)] {
            counts.answered_at(&answer(version), Duration::from_secs(at));
        }
        let runs: Vec<(&str, u64)> = counts
            .versions
            .iter()
            .map(|run| (run.version.as_str(), run.answers))
            .collect();
        assert_eq!(runs, [("v1", 2), ("v2", 1), ("v1", 2)]);
        assert_eq!(counts.versions[2].from, Duration::from_secs(4));
        assert_eq!(counts.versions[2].to, Duration::from_secs(5));
        assert_eq!(counts.by_version.get("v1"), Some(&4));
    }

    #[test]
    fn a_sample_counts_ready_replicas_that_are_staying_and_the_templates_running() {
        let now = SystemTime::now();
        let replica = |name: &str, template: &str, ready: bool, terminating: bool| Replica {
            name: name.to_owned(),
            id: name.to_owned(),
            phase: Phase::Running,
            node: None,
            ready,
            restarts: 0,
            ip: None,
            reason: None,
            message: None,
            terminating,
            image: None,
            template: Some(template.to_owned()),
            ready_since: ready.then(|| now - Duration::from_secs(10)),
        };
        let replicas = [
            replica("a", "old", true, false),
            replica("b", "old", true, true),
            replica("c", "new", false, false),
            replica("d", "new", true, false),
        ];
        let sample = sample_of(&replicas, Duration::ZERO, Duration::from_secs(1), now);
        assert_eq!(sample.available, 2, "{}", sample.replicas);
        assert_eq!(sample.templates_running, 2);
        // Ready for 10 s: available for a minReadySeconds of 5, not of 30.
        let sample = sample_of(
            &replicas,
            Duration::from_secs(5),
            Duration::from_secs(1),
            now,
        );
        assert_eq!(sample.available, 2, "{}", sample.replicas);
        let sample = sample_of(
            &replicas,
            Duration::from_secs(30),
            Duration::from_secs(1),
            now,
        );
        assert_eq!(sample.available, 0, "{}", sample.replicas);
        let mut seen = Seen::default();
        seen.record(sample_of(
            &replicas[..1],
            Duration::ZERO,
            Duration::from_secs(1),
            now,
        ));
        seen.record(sample_of(
            &replicas,
            Duration::ZERO,
            Duration::from_secs(2),
            now,
        ));
        assert_eq!(seen.lowest.as_ref().map(|s| s.available), Some(1));
        assert_eq!(
            seen.most_templates.as_ref().map(|s| s.at.as_secs()),
            Some(2)
        );
    }
}
