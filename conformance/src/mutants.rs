//! The kit proves its own power: behavioural mutants of the reference that the features
//! must catch.
//!
//! A conformance kit is worth what it catches. A *mutant* is the reference with one of its
//! decisions turned wrong on purpose — a fail point switched on (`reference/src/
//! failpoints.rs`) — so that it breaks one promise a feature makes: a scheduler that
//! forgets taints, an agent that never restarts a container, a store that forgets on
//! restart. The catalogue, `conformance/mutants.toml`, lists them: the fail points, the
//! promise each breaks (quoted from the feature), the scenarios expected to catch it.
//!
//! `shipshape-conformance mutants` (built with `--features failpoints`, so that one build
//! serves every mutant) certifies the reference once per mutant, with the mutant's
//! `FAILPOINTS` in the environment of the cluster it starts, on the scenarios the catalogue
//! names — and, when those miss it, on the whole suite. A mutant is *caught* when a scenario
//! fails; the report says which scenario, at which step, and why, so that a catch is seen
//! to be the promise failing and not an accident. The run writes
//! `<target>/conformance/mutants/report.html` and `summary.json`, and fails if any mutant
//! escapes. The reference's certification report shows the score.
//!
//! A scenario that catches no mutant is one to question: it may check nothing a broken
//! orchestrator would get wrong. `mutants --sweep` answers that at the price of a longer
//! run: every mutant also runs on the scenarios the catalogue names for none, and the
//! report lists the scenarios that caught nothing they were run against. The scenarios of
//! one run share a cluster, so a mutant that leaves it broken (a store that forgets its
//! nodes) fails the scenarios after the one that broke it too: a sweep can credit a
//! scenario with a catch it only inherited, never the other way round. The list errs on
//! the side of too few; read the errors of the catches before crediting one.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::report::timeline::escape;

/// How long one certification of a mutant may take before it is stopped.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// How many scenarios run side by side in a mutant's cluster: one, so that what catches a
/// mutant is the mutant, never a neighbour's load.
const MUTANT_CONCURRENCY: usize = 1;

/// How many scenarios run side by side in the control's cluster. Load there can only make
/// the control fail, loudly, never credit a catch; and while the control runs, it holds a
/// slot that mutants wait for, so it runs every scenario the mutants name at twice the pace.
const CONTROL_CONCURRENCY: usize = 2;

/// One mutant of the catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mutant {
    /// Its name (usually the fail point's).
    pub name: String,
    /// The `FAILPOINTS` that make it.
    pub failpoints: String,
    /// The feature whose promise it breaks.
    pub feature: String,
    /// The promise, in the feature's words.
    pub promise: String,
    /// The scenarios expected to catch it.
    pub scenarios: Vec<String>,
    /// How many members the reference's control plane needs for the mutant to show (1
    /// unless the catalogue says otherwise).
    #[serde(default = "one_member")]
    pub members: u64,
}

fn one_member() -> u64 {
    1
}

/// The catalogue file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalogue {
    /// The mutants, in order.
    mutant: Vec<Mutant>,
}

/// The catalogue shipped with the kit.
pub fn catalogue_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mutants.toml")
}

/// Reads and checks a catalogue: names unique, every mutant with fail points and
/// scenarios, every fail point named one the reference has.
pub fn load(path: &Path) -> anyhow::Result<Vec<Mutant>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the catalogue {}", path.display()))?;
    let catalogue: Catalogue = toml::from_str(&text)
        .with_context(|| format!("the catalogue {} is not valid", path.display()))?;
    let known = reference_fail_points()?;
    let mut names = BTreeSet::new();
    for mutant in &catalogue.mutant {
        if !names.insert(mutant.name.clone()) {
            bail!("the catalogue names mutant {:?} twice", mutant.name);
        }
        if mutant.scenarios.is_empty() {
            bail!("mutant {} names no scenario to catch it", mutant.name);
        }
        for point in fail_points_of(&mutant.failpoints) {
            if !known.contains(point) {
                bail!(
                    "mutant {} switches on {point:?}, which is no fail point of the reference",
                    mutant.name
                );
            }
        }
    }
    Ok(catalogue.mutant)
}

/// The names of the fail points a `FAILPOINTS` value switches (`a=return;b=return`).
fn fail_points_of(config: &str) -> impl Iterator<Item = &str> {
    config
        .split(';')
        .filter_map(|point| point.split_once('=').map(|(name, _)| name.trim()))
        .filter(|name| !name.is_empty())
}

/// Every fail point of the reference, read from its source: each
/// `failpoints::on!("name")`.
pub fn reference_fail_points() -> anyhow::Result<BTreeSet<String>> {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../reference/src");
    let mut points = BTreeSet::new();
    let mut dirs = vec![source];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("failed to read {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path)?;
                let mut rest = text.as_str();
                while let Some(at) = rest.find("failpoints::on!(\"") {
                    rest = &rest[at + "failpoints::on!(\"".len()..];
                    if let Some(end) = rest.find('"') {
                        points.insert(rest[..end].to_owned());
                    }
                }
            }
        }
    }
    Ok(points)
}

/// How one mutant fared.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// A scenario failed.
    Caught {
        /// Each scenario that failed, with the step and the error.
        by: Vec<Catch>,
        /// Whether the whole suite was needed (the scenarios named missed it).
        by_the_whole_suite: bool,
    },
    /// Every scenario passed: the features did not notice.
    Missed,
    /// The run could not tell (the cluster did not start, say).
    Error {
        /// Why.
        error: String,
    },
}

/// A scenario that caught a mutant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Catch {
    /// The scenario.
    pub scenario: String,
    /// The step that failed.
    pub step: String,
    /// Its error.
    pub error: String,
    /// Whether the catalogue expected this scenario to catch it.
    pub expected: bool,
}

/// One mutant and how it fared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MutantReport {
    /// The mutant.
    #[serde(flatten)]
    pub mutant: Mutant,
    /// How it fared.
    pub result: Verdict,
    /// Seconds its runs took.
    pub seconds: f64,
}

/// A whole run of the catalogue.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MutantsReport {
    /// When it started (RFC 3339).
    pub started: String,
    /// Its wall time in seconds.
    pub seconds: f64,
    /// Mutants caught.
    pub caught: usize,
    /// Mutants in the run.
    pub total: usize,
    /// Each mutant.
    pub mutants: Vec<MutantReport>,
    /// With `--sweep`: the scenarios that caught no mutant they were run against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_scenarios: Option<Vec<String>>,
}

impl MutantsReport {
    /// Whether the features caught every mutant with a scenario the catalogue names for
    /// it. A mutant only the whole suite caught counts as caught, but the scenarios named
    /// for it missed it once — a weak scenario, or the wrong one — and a run that relied on
    /// the fallback is not one to trust.
    pub fn all_caught_as_catalogued(&self) -> bool {
        self.mutants.iter().all(|report| {
            matches!(
                report.result,
                Verdict::Caught {
                    by_the_whole_suite: false,
                    ..
                }
            )
        })
    }
}

/// What the reference's certification report says of the last run of the mutants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Score {
    /// Mutants caught.
    pub caught: usize,
    /// Mutants run.
    pub total: usize,
    /// When they ran.
    pub started: String,
    /// Their report, relative to a driver's report directory.
    pub report: String,
}

/// The score of the last run of the mutants under `report_root`, if there was one.
pub fn last_score(report_root: &Path) -> Option<Score> {
    let dir = report_root.join("mutants");
    let text = std::fs::read_to_string(dir.join("summary.json")).ok()?;
    let summary: Value = serde_json::from_str(&text).ok()?;
    Some(Score {
        caught: usize::try_from(summary.get("caught")?.as_u64()?).ok()?,
        total: usize::try_from(summary.get("total")?.as_u64()?).ok()?,
        started: summary.get("started")?.as_str()?.to_owned(),
        report: "../mutants/report.html".to_owned(),
    })
}

/// Runs every mutant (or those named in `only`) and writes the report under
/// `<report_root>/mutants/`; returns it. With `sweep`, every mutant also runs on the
/// scenarios no mutant names, and the report lists the scenarios that caught nothing.
pub async fn run(
    report_root: &Path,
    only: &[String],
    jobs: usize,
    sweep: bool,
) -> anyhow::Result<MutantsReport> {
    if !cfg!(feature = "failpoints") {
        bail!(
            "this build of the kit has no fail points: run `cargo run -p shipshape-conformance --features failpoints -- mutants`"
        );
    }
    if !(1..=MAX_JOBS).contains(&jobs) {
        bail!("--jobs must be between 1 and {MAX_JOBS}, not {jobs}");
    }
    let mut mutants = load(&catalogue_path())?;
    if let Some(unknown) = only
        .iter()
        .find(|name| !mutants.iter().any(|m| &&m.name == name))
    {
        bail!("the catalogue has no mutant {unknown:?}");
    }
    // The scenarios no mutant names, which a sweep adds to every mutant's.
    let suite = crate::run::scenario_names(&crate::run::features_dir())?;
    let unnamed: Vec<String> = if sweep {
        suite
            .iter()
            .filter(|name| !mutants.iter().any(|m| m.scenarios.contains(name)))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    if !only.is_empty() {
        mutants.retain(|mutant| only.contains(&mutant.name));
    }
    // The images once, before clusters that would each build them start side by side.
    let docker = shipshape::agent::runtime::connect()
        .await
        .context("the mutants run reference clusters on the local Docker engine")?;
    shipshape::images::ensure(&docker)
        .await
        .context("failed to build the images")?;
    let dir = report_root.join("mutants");
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    for stale in ["summary.json", "report.html"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let started = Instant::now();
    let started_at = format!("{:.0}", k8s_openapi::jiff::Timestamp::now());
    let total = mutants.len();
    println!(
        "mutants: {total} mutants and a control, {jobs} at a time, each on a reference cluster of its own{}; reports in {}",
        if sweep {
            format!(
                ", each also on the {} scenarios no mutant names",
                unnamed.len()
            )
        } else {
            String::new()
        },
        dir.display()
    );
    let slots = Slots::new(jobs);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let width = total.to_string().len();
    let judged = futures::stream::iter(mutants.iter().enumerate())
        .map(|(index, mutant)| {
            let (slots, dir, done, unnamed) = (&slots, &dir, &done, &unnamed);
            async move {
                let slot = slots.take().await;
                let began = Instant::now();
                let result = judge(mutant, unnamed, dir, &slot.node_ports).await;
                drop(slot);
                let seconds = began.elapsed().as_secs_f64();
                let finished = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                println!(
                    "[{finished:>width$}/{total}] {}",
                    progress_line(mutant, &result, seconds)
                );
                let _ = std::io::stdout().flush();
                (
                    index,
                    MutantReport {
                        mutant: mutant.clone(),
                        result,
                        seconds,
                    },
                )
            }
        })
        .buffer_unordered(jobs)
        .collect::<Vec<_>>();
    let (control, mut judged) = tokio::join!(control(&mutants, &unnamed, &dir, &slots), judged);
    control?;
    judged.sort_by_key(|(index, _)| *index);
    let reports: Vec<MutantReport> = judged.into_iter().map(|(_, report)| report).collect();
    let caught = reports
        .iter()
        .filter(|report| matches!(report.result, Verdict::Caught { .. }))
        .count();
    let idle_scenarios = sweep.then(|| idle(&suite, &unnamed, &mutants, &reports));
    let report = MutantsReport {
        started: started_at,
        seconds: started.elapsed().as_secs_f64(),
        caught,
        total,
        mutants: reports,
        idle_scenarios,
    };
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&report).context("failed to serialize the report")?,
    )
    .context("failed to write the mutants' summary")?;
    std::fs::write(dir.join("report.html"), render(&report))
        .context("failed to write the mutants' report")?;
    println!(
        "mutants: {caught} of {total} caught, in {:.0} s; report in {}",
        report.seconds,
        dir.join("report.html").display()
    );
    if let Some(idle) = &report.idle_scenarios {
        println!(
            "mutants: {} scenario(s) caught no mutant they were run against",
            idle.len()
        );
        for scenario in idle {
            println!("  {scenario}");
        }
    }
    Ok(report)
}

/// The scenarios that ran against some mutant (those it names, and `unnamed`) and failed
/// none, in the suite's order.
fn idle(
    suite: &[String],
    unnamed: &[String],
    mutants: &[Mutant],
    reports: &[MutantReport],
) -> Vec<String> {
    let caught: BTreeSet<&str> = reports
        .iter()
        .flat_map(|report| match &report.result {
            Verdict::Caught { by, .. } => by.iter().map(|c| c.scenario.as_str()).collect(),
            _ => Vec::new(),
        })
        .collect();
    suite
        .iter()
        .filter(|name| unnamed.contains(name) || mutants.iter().any(|m| m.scenarios.contains(name)))
        .filter(|name| !caught.contains(name.as_str()))
        .cloned()
        .collect()
}

/// A mutant's line of progress: its verdict, time and name, and what caught it where.
fn progress_line(mutant: &Mutant, result: &Verdict, seconds: f64) -> String {
    match result {
        Verdict::Caught {
            by,
            by_the_whole_suite,
        } => {
            let first = by.first();
            format!(
                "caught  {seconds:>5.1} s  {}{} — by {}{}",
                mutant.name,
                if *by_the_whole_suite {
                    " (missed by the scenarios named for it, caught by the whole suite)"
                } else {
                    ""
                },
                first.map_or("", |catch| catch.scenario.as_str()),
                first.map_or(String::new(), |catch| format!(
                    "\n            at: {}",
                    catch.step
                ))
            )
        }
        Verdict::Missed => format!(
            "MISSED  {seconds:>5.1} s  {}: {}",
            mutant.name, mutant.promise
        ),
        Verdict::Error { error } => format!("ERROR   {seconds:>5.1} s  {}: {error}", mutant.name),
    }
}

/// The most clusters the runner starts at once.
const MAX_JOBS: usize = 8;

/// The node ports upstream allocates from, shared out among the clusters that run at once.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Places for clusters to run side by side: at most `jobs` at once, each with a node port
/// range of its own (every cluster's service proxy listens on the host's loopback
/// address; two clusters giving out the same port would disturb each other).
struct Slots {
    /// One permit per place.
    permits: tokio::sync::Semaphore,
    /// The free places' node port ranges.
    free: std::sync::Mutex<Vec<String>>,
}

/// A place taken; given back when dropped.
struct Slot<'a> {
    slots: &'a Slots,
    _permit: tokio::sync::SemaphorePermit<'a>,
    /// Its node port range, `FIRST-LAST`.
    node_ports: String,
}

impl Slots {
    fn new(jobs: usize) -> Self {
        let span = (NODE_PORTS.len() / jobs.max(1)) as u16;
        let free = (0..jobs as u16)
            .map(|place| {
                let first = NODE_PORTS.start() + place * span;
                format!("{first}-{}", first + span - 1)
            })
            .collect();
        Slots {
            permits: tokio::sync::Semaphore::new(jobs),
            free: std::sync::Mutex::new(free),
        }
    }

    async fn take(&self) -> Slot<'_> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let node_ports = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .expect("a permit comes with a free place");
        Slot {
            slots: self,
            _permit: permit,
            node_ports,
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(std::mem::take(&mut self.node_ports));
    }
}

/// The control: the same build with no fail point switched on must pass every scenario
/// the mutants are expected to fail, or a catch would prove nothing.
async fn control(
    mutants: &[Mutant],
    unnamed: &[String],
    dir: &Path,
    slots: &Slots,
) -> anyhow::Result<()> {
    let scenarios: BTreeSet<String> = mutants
        .iter()
        .flat_map(|mutant| mutant.scenarios.iter().cloned())
        .chain(unnamed.iter().cloned())
        .collect();
    let control = Mutant {
        name: "control".to_owned(),
        failpoints: String::new(),
        feature: String::new(),
        promise: String::new(),
        scenarios: scenarios.into_iter().collect(),
        // One member: scenarios that need several are not applicable to the control, and
        // the suite's own run of them on three members (tests/high_availability.rs) is
        // their control.
        members: 1,
    };
    let slot = slots.take().await;
    let began = Instant::now();
    let failed = certify(
        &control,
        &control.scenarios,
        &dir.join("control"),
        &slot.node_ports,
        CONTROL_CONCURRENCY,
    )
    .await
    .context("the control run (no mutant) failed")?;
    if let Some(first) = failed.first() {
        bail!(
            "without any mutant the reference fails {} scenario(s), so a catch would prove nothing; first {:?} at {:?}: {}",
            failed.len(),
            first.scenario,
            first.step,
            first.error
        );
    }
    println!(
        "control: the reference without mutants passes the {} scenarios the mutants are expected to fail, in {:.0} s",
        control.scenarios.len(),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs one mutant on its scenarios (and `unnamed`, in a sweep), then, if they missed it,
/// on the whole suite.
async fn judge(mutant: &Mutant, unnamed: &[String], dir: &Path, node_ports: &str) -> Verdict {
    let out = dir.join(mutant.name.replace("::", "--"));
    let whole_suite = out.join("whole-suite");
    let scenarios: Vec<String> = mutant.scenarios.iter().chain(unnamed).cloned().collect();
    match certify(mutant, &scenarios, &out, node_ports, MUTANT_CONCURRENCY).await {
        Err(error) => Verdict::Error {
            error: format!("{error:#}"),
        },
        Ok(by) if by.iter().any(|catch| catch.expected) => Verdict::Caught {
            by,
            by_the_whole_suite: false,
        },
        // Only scenarios it was not expected to fail caught it (in a sweep): the named
        // ones missed it, as if the whole suite had been needed.
        Ok(by) if !by.is_empty() => Verdict::Caught {
            by,
            by_the_whole_suite: true,
        },
        Ok(_) => match certify(mutant, &[], &whole_suite, node_ports, MUTANT_CONCURRENCY).await {
            Err(error) => Verdict::Error {
                error: format!("{error:#}"),
            },
            Ok(by) if !by.is_empty() => Verdict::Caught {
                by,
                by_the_whole_suite: true,
            },
            Ok(_) => Verdict::Missed,
        },
    }
}

/// Certifies the reference with the mutant switched on, on `scenarios` (all when empty),
/// `concurrency` of them side by side, in a process of its own; returns the scenarios that
/// failed.
async fn certify(
    mutant: &Mutant,
    scenarios: &[String],
    out: &Path,
    node_ports: &str,
    concurrency: usize,
) -> anyhow::Result<Vec<Catch>> {
    std::fs::create_dir_all(out).with_context(|| format!("failed to create {}", out.display()))?;
    let log_path = out.join("run.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("failed to create {}", log_path.display()))?;
    let exe = std::env::current_exe().context("failed to locate this program")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .args(["certify", "--driver", "reference", "--out"])
        .arg(out)
        .args(["--concurrency", &concurrency.to_string()])
        .env("FAILPOINTS", &mutant.failpoints)
        .env(crate::reference::MEMBERS_ENV, mutant.members.to_string())
        .env(crate::reference::NODE_PORT_RANGE_ENV, node_ports)
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            log.try_clone().context("failed to share the log")?,
        ))
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    for scenario in scenarios {
        command.arg("--scenario").arg(scenario);
    }
    let mut child = command.spawn().context("failed to start a certification")?;
    tokio::time::timeout(RUN_TIMEOUT, child.wait())
        .await
        .map_err(|_| anyhow!("the certification took longer than {RUN_TIMEOUT:?}"))?
        .context("failed to wait for the certification")?;
    let driver = crate::run::DriverChoice::Reference {
        members: mutant.members,
    };
    let summary = out.join(driver.name()).join("summary.json");
    let text = std::fs::read_to_string(&summary).map_err(|_| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        anyhow!(
            "the certification wrote no report (see {}): {}",
            log_path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        )
    })?;
    let report: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", summary.display()))?;
    let mut caught = Vec::new();
    for scenario in report
        .pointer("/features")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|feature| {
            feature
                .get("scenarios")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
    {
        if scenario.get("verdict").and_then(Value::as_str) != Some("failed") {
            continue;
        }
        let name = scenario
            .pointer("/id/scenario")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        caught.push(Catch {
            expected: mutant.scenarios.contains(&name),
            scenario: name,
            step: scenario
                .get("step")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            error: scenario
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        });
    }
    Ok(caught)
}

/// The mutants' report as a page: the score, then a row per mutant.
pub fn render(report: &MutantsReport) -> String {
    let mut page = String::new();
    let all = report.caught == report.total;
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>shipshape — the kit's mutants</title><style>\
         body {{ font-family: -apple-system, \"Segoe UI\", Roboto, Arial, sans-serif; margin: 0 auto; max-width: 1100px; padding: 24px; color: #222; }}\
         .banner {{ padding: 14px 18px; border-radius: 6px; color: #fff; background: {}; }}\
         table {{ border-collapse: collapse; width: 100%; margin-top: 16px; font-size: 14px; }}\
         th, td {{ text-align: left; vertical-align: top; padding: 6px 10px 6px 0; border-bottom: 1px solid #eee; }}\
         .caught {{ color: #2e7d32; font-weight: bold; }} .missed, .error {{ color: #c62828; font-weight: bold; }}\
         .muted {{ color: #666; font-size: 12px; }} code {{ font-size: 12px; }}\
         </style></head><body><div class=\"banner\"><h1>The kit caught {} of {} behavioural mutants of the reference</h1>\
         <p>Run of {} · {:.0} s · each mutant breaks one promise a feature makes; a scenario that fails catches it.</p></div>\
         <h2>By feature</h2>{}\
         <h2>Every mutant</h2><table><tr><th>mutant</th><th>the promise it breaks</th><th>verdict</th><th>caught by</th><th>time</th></tr>",
        if all { "#2e7d32" } else { "#c62828" },
        report.caught,
        report.total,
        escape(&report.started),
        report.seconds,
        by_feature(report)
    );
    for mutant in &report.mutants {
        let (class, verdict, by) = match &mutant.result {
            Verdict::Caught {
                by,
                by_the_whole_suite,
            } => {
                let list: Vec<String> = by
                    .iter()
                    .map(|catch| {
                        format!(
                            "{}{}<div class=\"muted\">at: {}<br>{}</div>",
                            escape(&catch.scenario),
                            if catch.expected {
                                ""
                            } else {
                                " <i>(not expected)</i>"
                            },
                            escape(&catch.step),
                            escape(&truncate(&catch.error, 400))
                        )
                    })
                    .collect();
                (
                    "caught",
                    if *by_the_whole_suite {
                        "caught only by the whole suite"
                    } else {
                        "caught"
                    },
                    list.join("<br>"),
                )
            }
            Verdict::Missed => ("missed", "MISSED", String::new()),
            Verdict::Error { error } => ("error", "ERROR", escape(error)),
        };
        let _ = write!(
            page,
            "<tr><td><code>{}</code><div class=\"muted\">{}</div></td><td>{}<div class=\"muted\">{}</div></td><td class=\"{class}\">{verdict}</td><td>{by}</td><td>{:.0} s</td></tr>",
            escape(&mutant.mutant.name),
            escape(&mutant.mutant.failpoints),
            escape(&mutant.mutant.promise),
            escape(&mutant.mutant.feature),
            mutant.seconds
        );
    }
    page.push_str("</table>");
    if let Some(idle) = &report.idle_scenarios {
        let _ = write!(
            page,
            "<h2>Scenarios that caught no mutant</h2><p>A sweep ran every mutant also on the scenarios the catalogue names for none. {}</p>",
            if idle.is_empty() {
                "Every scenario caught at least one.".to_owned()
            } else {
                format!(
                    "These {} caught nothing they were run against: each may check nothing a broken orchestrator would get wrong, or wants a mutant of its own.<ul>{}</ul>",
                    idle.len(),
                    idle.iter()
                        .map(|name| format!("<li>{}</li>", escape(name)))
                        .collect::<String>()
                )
            }
        );
    }
    page.push_str("</body></html>\n");
    page
}

/// A picture of the score: one row per feature, one square per mutant breaking one of its
/// promises: green when a scenario named for it caught it, amber when only the whole
/// suite did, red when nothing did (or the run failed); its name on hovering.
fn by_feature(report: &MutantsReport) -> String {
    const ROW: usize = 30;
    const LABEL: usize = 430;
    const SQUARE: usize = 22;
    let mut features: Vec<(&str, Vec<&MutantReport>)> = Vec::new();
    for mutant in &report.mutants {
        match features
            .iter_mut()
            .find(|(name, _)| *name == mutant.mutant.feature)
        {
            Some((_, list)) => list.push(mutant),
            None => features.push((&mutant.mutant.feature, vec![mutant])),
        }
    }
    let most = features
        .iter()
        .map(|(_, list)| list.len())
        .max()
        .unwrap_or(1);
    let width = LABEL + most * (SQUARE + 4) + 20;
    let height = features.len() * ROW + 10;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-size=\"13\">"
    );
    for (row, (feature, list)) in features.iter().enumerate() {
        let y = row * ROW + 5;
        let caught = list
            .iter()
            .filter(|m| matches!(m.result, Verdict::Caught { .. }))
            .count();
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\">{} ({caught}/{})</text>",
            y + 16,
            escape(&truncate(feature, 52)),
            list.len()
        );
        for (column, mutant) in list.iter().enumerate() {
            let colour = match mutant.result {
                Verdict::Caught {
                    by_the_whole_suite: false,
                    ..
                } => "#2e7d32",
                Verdict::Caught { .. } => "#f9a825",
                Verdict::Missed | Verdict::Error { .. } => "#c62828",
            };
            let _ = write!(
                svg,
                "<rect x=\"{}\" y=\"{y}\" width=\"{SQUARE}\" height=\"{SQUARE}\" rx=\"3\" fill=\"{colour}\"><title>{}</title></rect>",
                LABEL + column * (SQUARE + 4),
                escape(&mutant.mutant.name)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// At most `limit` characters of `text`.
fn truncate(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(limit).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_is_sound_and_covers_every_feature() {
        let mutants = load(&catalogue_path()).expect("the catalogue loads");
        assert!(mutants.len() >= 20, "only {} mutants", mutants.len());
        let features: BTreeSet<&str> = mutants.iter().map(|m| m.feature.as_str()).collect();
        for feature in std::fs::read_dir(crate::run::features_dir()).expect("features") {
            let path = feature.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("feature");
            let name = text
                .lines()
                .find_map(|line| line.trim().strip_prefix("Feature: "))
                .expect("a feature name");
            assert!(
                features.contains(name),
                "no mutant breaks a promise of {name:?}"
            );
        }
        // Every promise is quoted from its feature's description.
        for mutant in &mutants {
            let quoted = mutant.promise.split(" (").next().unwrap_or_default();
            let found = std::fs::read_dir(crate::run::features_dir())
                .expect("features")
                .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
                .any(|text| {
                    text.split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .contains(quoted)
                });
            assert!(found, "mutant {}: {quoted:?} is in no feature", mutant.name);
        }
    }

    #[test]
    fn a_catalogue_with_an_unknown_fail_point_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mutants.toml");
        std::fs::write(
            &path,
            "[[mutant]]\nname = \"x\"\nfailpoints = \"no::such-point=return\"\nfeature = \"f\"\npromise = \"p\"\nscenarios = [\"s\"]\n",
        )
        .expect("write");
        let error = load(&path).expect_err("refused");
        assert!(format!("{error:#}").contains("no::such-point"), "{error:#}");
    }

    fn sample() -> MutantsReport {
        let mutant = |name: &str, feature: &str| Mutant {
            name: name.to_owned(),
            failpoints: format!("{name}=return"),
            feature: feature.to_owned(),
            promise: "a <promise>".to_owned(),
            scenarios: vec!["S".to_owned()],
            members: 1,
        };
        MutantsReport {
            started: "2026-11-27T12:00:00Z".to_owned(),
            seconds: 60.0,
            caught: 1,
            total: 2,
            mutants: vec![
                MutantReport {
                    mutant: mutant("a::caught", "F"),
                    result: Verdict::Caught {
                        by: vec![Catch {
                            scenario: "S".to_owned(),
                            step: "Then it holds".to_owned(),
                            error: "it did not".to_owned(),
                            expected: true,
                        }],
                        by_the_whole_suite: false,
                    },
                    seconds: 10.0,
                },
                MutantReport {
                    mutant: mutant("b::missed", "G"),
                    result: Verdict::Missed,
                    seconds: 50.0,
                },
            ],
            idle_scenarios: None,
        }
    }

    #[test]
    fn the_report_says_what_was_caught_and_what_was_missed() {
        let report = sample();
        assert!(!report.all_caught_as_catalogued());
        let page = render(&report);
        assert!(page.contains("The kit caught 1 of 2 behavioural mutants"));
        assert!(page.contains("<code>a::caught</code>"));
        assert!(page.contains("at: Then it holds"));
        assert!(page.contains(">MISSED<"));
        assert!(page.contains("a &lt;promise&gt;"));
        // One square per mutant in the picture, red for the missed one.
        assert_eq!(page.matches("<rect").count(), 2);
        assert!(page.contains("fill=\"#c62828\"><title>b::missed</title>"));
    }

    #[test]
    fn a_mutant_only_the_whole_suite_caught_fails_the_run() {
        let mut report = sample();
        report.mutants.truncate(1);
        assert!(report.all_caught_as_catalogued());
        if let Verdict::Caught {
            by_the_whole_suite, ..
        } = &mut report.mutants[0].result
        {
            *by_the_whole_suite = true;
        }
        assert!(!report.all_caught_as_catalogued());
    }

    #[test]
    fn a_sweep_lists_the_scenarios_that_caught_nothing_they_ran_against() {
        let mut report = sample();
        let mutants: Vec<Mutant> = report.mutants.iter().map(|r| r.mutant.clone()).collect();
        let suite = ["S", "T", "U", "V"].map(str::to_owned);
        // T ran in the sweep and caught nothing; U caught the missed one; V never ran.
        let unnamed = ["T", "U"].map(str::to_owned);
        report.mutants[1].result = Verdict::Caught {
            by: vec![Catch {
                scenario: "U".to_owned(),
                step: "Then".to_owned(),
                error: "no".to_owned(),
                expected: false,
            }],
            by_the_whole_suite: true,
        };
        let idle = idle(&suite, &unnamed, &mutants, &report.mutants);
        assert_eq!(idle, ["T"]);
        report.idle_scenarios = Some(idle);
        let page = render(&report);
        assert!(page.contains("<h2>Scenarios that caught no mutant</h2>"));
        assert!(page.contains("<li>T</li>"));
        assert!(!page.contains("<li>V</li>"));
    }

    #[test]
    fn fail_point_names_come_out_of_a_configuration() {
        let names: Vec<&str> = fail_points_of("a::b=return;c=sleep(10)").collect();
        assert_eq!(names, ["a::b", "c"]);
    }
}
