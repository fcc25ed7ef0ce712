//! One certification run: start the system under test, run the features against it, write
//! the report.
//!
//! Both doors into the kit come here: `cargo test -p shipshape-conformance` (the test
//! targets in `tests/`) and `shipshape-conformance certify` (`src/main.rs`). A run
//!
//! 1. starts the driver ([`DriverChoice::start`]) — which fails within seconds, in one
//!    line, when the system cannot be reached or lacks what the kit needs;
//! 2. asks it what it can do ([`Capabilities`]) and prints a banner: the system, its
//!    capabilities, the profile;
//! 3. runs the selected scenarios one at a time with cucumber, each in its own namespace,
//!    printing a progress line as each ends (`[ 3/37] passed  12.3 s  Feature — Scenario`)
//!    and, with `verbose`, cucumber's own step-by-step output;
//! 4. stops the system cleanly, and writes `junit.xml`, `summary.json` and `report.html`
//!    into `<report root>/<driver>/` ([`crate::report`]).
//!
//! It succeeds when every scenario that applies passed, the system stopped cleanly, and the
//! report was written.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use cucumber::gherkin::tagexpr::TagOperation;
use cucumber::gherkin::{Feature, GherkinEnv};
use cucumber::runner::ScenarioType;
use cucumber::tag::Ext as _;
use cucumber::{StatsWriter as _, World as _, WriterExt as _, parser, writer};
use futures::FutureExt as _;

use crate::applicability::{Capabilities, NotApplicable, runs_alone};
use crate::driver::Driver;
use crate::kubernetes::{KubernetesDriver, KubernetesOptions};
use crate::profile::Profile;
use crate::report::{self, CapabilityReport, Header, Recorder, SystemReport, Verdict};
use crate::swarm::SwarmDriver;
use crate::world::{ConformanceWorld, Harness};
use crate::{junit, reference};

/// Which system to certify, and how to reach it.
#[derive(Clone, Debug)]
pub enum DriverChoice {
    /// shipshape's reference orchestrator, started for the run, with a control plane of
    /// this many members (`shipshape up --control-plane N`).
    Reference {
        /// Control-plane members: 1, 3, 5 or 7.
        members: u64,
    },
    /// Any Kubernetes cluster, through a kubeconfig.
    Kubernetes(KubernetesOptions),
    /// Docker Swarm on the local engine.
    Swarm,
}

impl DriverChoice {
    /// The driver's name, which names its report directory (the reference with a control
    /// plane of several members reports apart: `reference-members`).
    pub fn name(&self) -> &'static str {
        match self {
            DriverChoice::Reference { members } if *members > 1 => "reference-members",
            DriverChoice::Reference { .. } => "reference",
            DriverChoice::Kubernetes(_) => "kubernetes",
            DriverChoice::Swarm => "swarm",
        }
    }

    /// Picks the driver `SHIPSHAPE_DRIVER` names (default `reference`).
    pub fn from_env() -> anyhow::Result<Self> {
        let name = match std::env::var(crate::DRIVER_ENV) {
            Ok(name) if !name.is_empty() => name,
            Ok(_) | Err(std::env::VarError::NotPresent) => "reference".to_owned(),
            Err(std::env::VarError::NotUnicode(raw)) => {
                bail!("{}={raw:?} is not valid UTF-8", crate::DRIVER_ENV)
            }
        };
        Self::named(&name).with_context(|| format!("{}={name}", crate::DRIVER_ENV))
    }

    /// The driver of this name, configured from the environment.
    pub fn named(name: &str) -> anyhow::Result<Self> {
        match name {
            "reference" => Ok(DriverChoice::Reference {
                members: reference::members_from_env()?,
            }),
            "kubernetes" => Ok(DriverChoice::Kubernetes(KubernetesOptions::from_env()?)),
            "swarm" => Ok(DriverChoice::Swarm),
            other => bail!(
                "unknown driver {other:?}; the drivers are {}",
                crate::DRIVERS.join(", ")
            ),
        }
    }

    /// Starts (or connects to) the system under test for the run `run_id`; logs of what
    /// it starts go to `report_dir`.
    pub async fn start(&self, report_dir: &Path, run_id: &str) -> anyhow::Result<Arc<dyn Driver>> {
        match self {
            DriverChoice::Reference { members } => {
                let log = report_dir.join("reference-cluster.log");
                let driver = reference::start(log, run_id, *members)
                    .await
                    .context("failed to start the reference driver")?;
                Ok(Arc::new(driver))
            }
            DriverChoice::Kubernetes(options) => {
                let driver = KubernetesDriver::start(options.clone(), run_id)
                    .await
                    .context("the kubernetes driver cannot certify this cluster")?;
                Ok(Arc::new(driver))
            }
            DriverChoice::Swarm => {
                let driver = SwarmDriver::start(run_id)
                    .await
                    .context("the swarm driver cannot certify this engine")?;
                Ok(Arc::new(driver))
            }
        }
    }
}

/// What a run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// The system under test.
    pub driver: DriverChoice,
    /// A tag expression selecting the scenarios (`@scheduling and not @disruptive`); all
    /// of them when `None`.
    pub tags: Option<String>,
    /// Only the scenarios of these names (all when empty).
    pub scenarios: Vec<String>,
    /// The timing profile.
    pub profile: Profile,
    /// Where reports go: the run writes into `<report_root>/<driver>/`.
    pub report_root: PathBuf,
    /// Whether to print cucumber's step-by-step output besides the progress lines.
    pub verbose: bool,
    /// How many scenarios may run side by side (those that must run alone always run
    /// alone; see [`crate::applicability::runs_alone`]). 1 runs them one after another.
    pub concurrency: usize,
}

/// How many scenarios run side by side unless told otherwise. On the 2-core machine the
/// kit is measured on, four take the reference suite from 230 s to about 157 s, and the
/// measured time closest to its bound stays under 40 % of it.
pub const DEFAULT_CONCURRENCY: usize = 4;

impl Options {
    /// The options the test targets take from the environment for `driver`: a tag
    /// expression from `SHIPSHAPE_TAGS`, a profile file from `SHIPSHAPE_PROFILE`, how many
    /// scenarios run side by side from `SHIPSHAPE_CONCURRENCY` (default
    /// [`DEFAULT_CONCURRENCY`]); reports under the target directory; step-by-step output on.
    pub fn from_env(driver: DriverChoice) -> anyhow::Result<Self> {
        let tags = std::env::var("SHIPSHAPE_TAGS")
            .ok()
            .filter(|tags| !tags.trim().is_empty());
        let profile = match std::env::var_os("SHIPSHAPE_PROFILE") {
            Some(path) if !path.is_empty() => Profile::load(Path::new(&path))?,
            _ => Profile::default(),
        };
        let concurrency = match std::env::var("SHIPSHAPE_CONCURRENCY") {
            Ok(text) if !text.trim().is_empty() => parse_concurrency(&text)
                .map_err(|error| anyhow!("SHIPSHAPE_CONCURRENCY: {error}"))?,
            _ => DEFAULT_CONCURRENCY,
        };
        Ok(Self {
            driver,
            scenarios: Vec::new(),
            tags,
            profile,
            report_root: default_report_root(),
            verbose: true,
            concurrency,
        })
    }

    /// The run's report directory.
    pub fn report_dir(&self) -> PathBuf {
        self.report_root.join(self.driver.name())
    }
}

/// Reads how many scenarios may run side by side: a whole number, at least 1.
pub fn parse_concurrency(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number of scenarios to run side by side (1 or more)"
        )),
    }
}

/// The `main` of a test target that certifies one system: becomes a reference child if
/// started as one, else runs [`certify`] with the options `options` gives and exits
/// non-zero unless the run succeeded.
pub fn test_main(options: impl FnOnce() -> anyhow::Result<Options>) -> std::process::ExitCode {
    use std::process::ExitCode;
    // First: this process may be a control plane or node agent of the reference driver.
    if let Some(code) = crate::run_reference_child_if_requested() {
        return code;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("conformance: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async { certify(options()?).await }) {
        Ok(outcome) if outcome.success => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("conformance: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Whether every scenario that applies passed, the system stopped cleanly and the
    /// report was written.
    pub success: bool,
    /// The report, as written.
    pub report: report::RunReport,
    /// Where `report.html` is.
    pub html: PathBuf,
}

/// The features directory of this kit.
pub fn features_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../features")
}

/// Runs the features against the system `options` name, and writes the report.
pub async fn certify(options: Options) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let started_at = format!("{:.0}", k8s_openapi::jiff::Timestamp::now());
    let tags = options
        .tags
        .as_deref()
        .map(|expression| {
            TagOperation::from_str(expression).map_err(|error| {
                anyhow!("the tag expression {expression:?} does not parse: {error}")
            })
        })
        .transpose()?;
    let selection = Selection {
        tags,
        names: options.scenarios.clone(),
    };
    let selected = count_scenarios(&features_dir(), &selection)?;
    if selected == 0 {
        bail!(
            "no scenario matches the tag expression {:?}",
            options.tags.as_deref().unwrap_or_default()
        );
    }
    let report_dir = options.report_dir();
    std::fs::create_dir_all(&report_dir)
        .with_context(|| format!("failed to create {}", report_dir.display()))?;
    let junit_path = report_dir.join("junit.xml");
    let summary_path = report_dir.join("summary.json");
    let html_path = report_dir.join("report.html");
    // A run never leaves the report of an earlier one looking like its own.
    for stale in [&junit_path, &summary_path, &html_path] {
        let _ = std::fs::remove_file(stale);
    }

    let run_id = run_id();
    let driver = options.driver.start(&report_dir, &run_id).await?;
    println!(
        "conformance: system under test started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let version = driver.version().await.unwrap_or_else(|error| {
        format!(
            "{} (its version could not be read: {error:#})",
            driver.name()
        )
    });
    let harness = Arc::new(Harness::new(
        Arc::clone(&driver),
        options.profile.clone(),
        run_id,
    ));
    let capabilities = harness.capabilities();
    println!(
        "conformance: driver under test: {} — {version}",
        driver.name()
    );
    println!("conformance: {}", driver.describe());
    println!(
        "conformance: profile {} ({}); run id {}",
        options.profile.name,
        options.profile.describe(),
        harness.run_id()
    );
    let listed: Vec<String> = capabilities
        .tags()
        .iter()
        .map(|(tag, support)| match support {
            None => format!("@{tag}: yes"),
            Some(_) => format!("@{tag}: no"),
        })
        .collect();
    println!("conformance: capabilities: {}", listed.join(", "));
    println!(
        "conformance: {selected} scenarios selected; reports in {}",
        report_dir.display()
    );

    let outcome = run_features(
        &harness,
        capabilities,
        selection,
        selected,
        options.verbose,
        options.concurrency,
        &junit_path,
    )
    .await;
    print!("{}", harness.report().summary());
    // Before the system stops: its nodes going away then is no alarm.
    let node_looks = harness.node_looks();
    // Stop the system under test cleanly (its containers go with it) before judging.
    let stopped = driver.shut_down().await;
    if let Err(error) = &stopped {
        eprintln!("conformance: failed to stop the system under test cleanly: {error:#}");
    }
    let properties = match &outcome {
        Ok(_) => add_measurements(&junit_path, &harness.report().measurements()),
        Err(_) => Ok(()),
    };
    if let Err(error) = &properties {
        eprintln!("conformance: {error:#}");
    }
    let failed = outcome?;

    let header = Header {
        system: SystemReport {
            driver: driver.name().to_owned(),
            version,
            description: driver.describe(),
            reach: driver.reach(),
        },
        started: started_at,
        took: started.elapsed(),
        profile: options.profile.clone(),
        tags: options.tags.clone(),
        capabilities: harness
            .capabilities()
            .tags()
            .iter()
            .map(|(tag, support)| CapabilityReport {
                tag: (*tag).to_owned(),
                has: support.is_none(),
                reason: support.clone(),
            })
            .collect(),
        differences: driver
            .differences()
            .into_iter()
            .map(|(scenario, why)| (scenario.to_owned(), why.to_owned()))
            .collect(),
        files: BTreeMap::from([
            ("html".to_owned(), html_path.display().to_string()),
            ("json".to_owned(), summary_path.display().to_string()),
            ("junit".to_owned(), junit_path.display().to_string()),
        ]),
        mutation_score: matches!(options.driver, DriverChoice::Reference { members: 1 })
            .then(|| crate::mutants::last_score(&options.report_root))
            .flatten(),
        node_looks,
    };
    let report = harness.report().finish(header);
    let json = serde_json::to_string_pretty(&report).context("failed to serialize the report")?;
    std::fs::write(&summary_path, json)
        .with_context(|| format!("failed to write {}", summary_path.display()))?;
    std::fs::write(&html_path, report::html::render(&report))
        .with_context(|| format!("failed to write {}", html_path.display()))?;
    println!("conformance: {}", report.false_alarm_line());
    println!(
        "conformance: {} passed, {} failed, {} not applicable, in {:.1} s",
        report.passed,
        report.failed,
        report.not_applicable,
        started.elapsed().as_secs_f64()
    );
    println!("conformance: report in {}", html_path.display());
    let success = !failed && stopped.is_ok() && properties.is_ok() && report.certified();
    Ok(Outcome {
        success,
        report,
        html: html_path,
    })
}

/// A new run's id (see [`crate::reaper`]).
pub fn run_id() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    crate::reaper::run_id(seconds, std::process::id())
}

/// Runs the scenarios; returns whether cucumber saw a failure (a failed step or hook, a
/// feature that did not parse, a step skipped for another reason than "not applicable").
async fn run_features(
    harness: &Arc<Harness>,
    capabilities: Arc<Capabilities>,
    selection: Selection,
    selected: usize,
    verbose: bool,
    concurrency: usize,
    junit_path: &Path,
) -> anyhow::Result<bool> {
    let junit_file = File::create(junit_path)
        .with_context(|| format!("failed to create {}", junit_path.display()))?;
    let console: Box<dyn io::Write> = if verbose {
        Box::new(io::stdout())
    } else {
        Box::new(io::sink())
    };
    let report = harness.report_handle();
    let started = Instant::now();
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let progress = Recorder::new(Arc::clone(&report), move |id, verdict, took| {
        let done = finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let word = match verdict {
            Verdict::Passed => "passed".to_owned(),
            Verdict::Failed { .. } => "FAILED".to_owned(),
            Verdict::NotApplicable { .. } => "n/a".to_owned(),
        };
        let width = selected.to_string().len();
        let mut line = format!(
            "[{done:>width$}/{selected}] {word:<6} {:>5.1} s (run {:>4.0} s)  {} — {}",
            took.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            id.feature,
            id.scenario
        );
        match verdict {
            Verdict::Failed { step, error } => {
                line.push_str(&format!("\n           at: {step}\n           {error}"));
            }
            Verdict::NotApplicable { reason } => {
                line.push_str(&format!("\n           {reason}"));
            }
            Verdict::Passed => {}
        }
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    });
    let (before, after) = (Arc::clone(harness), Arc::clone(harness));
    let skips = Arc::clone(&capabilities);
    let outcome = ConformanceWorld::cucumber::<PathBuf>()
        .with_parser(NotApplicable::new(parser::Basic::default(), capabilities))
        .max_concurrent_scenarios(concurrency)
        // Scenarios that run alone are handed out first, one at a time; the harness's turn
        // on the cluster (taken in `prepare`) is what keeps everyone else out meanwhile.
        .which_scenario(|feature, rule, scenario| {
            if runs_alone(feature, rule, scenario) {
                ScenarioType::Serial
            } else {
                ScenarioType::Concurrent
            }
        })
        .before(move |feature, rule, scenario, world| {
            let harness = Arc::clone(&before);
            let id = report::ScenarioId::of(feature, scenario);
            let alone = runs_alone(feature, rule, scenario);
            async move { harness.prepare(id, alone, world).await }.boxed_local()
        })
        .after(move |_, _, _, _, world| {
            let harness = Arc::clone(&after);
            async move { harness.clean_up(world).await }.boxed_local()
        })
        // The console and JUnit want each scenario's events together, in the features'
        // order, so they see them normalized (held back until it is the scenario's turn).
        // The recorder times steps as they happen, so it sees every event at once; it keys
        // everything by scenario, so scenarios side by side do not mix.
        .with_writer(
            writer::Basic::raw(console, writer::Coloring::Auto, 0)
                .summarized()
                .tee::<ConformanceWorld, _>(writer::JUnit::for_tee(junit_file, 0))
                .normalized()
                .tee::<ConformanceWorld, _>(
                    progress
                        .discard_stats_writes()
                        .discard_arbitrary_writes()
                        .assert_normalized(),
                ),
        )
        .fail_on_skipped_with(move |feature, rule, scenario| {
            skips.fails_when_skipped(feature, rule, scenario)
        })
        .with_default_cli()
        .filter_run(features_dir(), move |feature, rule, scenario| {
            selection.selects(feature, rule, scenario)
        })
        .await;
    Ok(outcome.execution_has_failed())
}

/// Which scenarios a run runs: those a tag expression selects (all without one), of those
/// named (all when no name is given).
struct Selection {
    /// The tag expression.
    tags: Option<TagOperation>,
    /// The scenarios' names.
    names: Vec<String>,
}

impl Selection {
    /// Whether a scenario is selected (its feature's and rule's tags count as its own).
    fn selects(
        &self,
        feature: &Feature,
        rule: Option<&cucumber::gherkin::Rule>,
        scenario: &cucumber::gherkin::Scenario,
    ) -> bool {
        if !self.names.is_empty() && !self.names.contains(&scenario.name) {
            return false;
        }
        let Some(tags) = &self.tags else {
            return true;
        };
        let all: Vec<&String> = feature
            .tags
            .iter()
            .chain(rule.iter().flat_map(|rule| &rule.tags))
            .chain(&scenario.tags)
            .collect();
        tags.eval(all)
    }
}

/// The features in `dir`, parsed.
fn parse_features(dir: &Path) -> anyhow::Result<Vec<Feature>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("failed to read {}", dir.display()))?;
    let mut features = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("failed to read {}", dir.display()))?
            .path();
        if path.extension().is_none_or(|ext| ext != "feature") {
            continue;
        }
        features.push(
            Feature::parse_path(&path, GherkinEnv::default())
                .map_err(|error| anyhow!("{} does not parse: {error}", path.display()))?,
        );
    }
    Ok(features)
}

/// The name of every scenario of the features in `dir`, in and out of rules.
pub fn scenario_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    Ok(parse_features(dir)?
        .iter()
        .flat_map(|feature| {
            feature
                .scenarios
                .iter()
                .chain(feature.rules.iter().flat_map(|rule| &rule.scenarios))
                .map(|scenario| scenario.name.clone())
                .collect::<Vec<_>>()
        })
        .collect())
}

/// How many scenarios of the features in `dir` the selection selects; a name that is no
/// scenario's is an error.
fn count_scenarios(dir: &Path, selection: &Selection) -> anyhow::Result<usize> {
    let seen = scenario_names(dir)?;
    let mut count = 0;
    for feature in parse_features(dir)? {
        count += feature
            .scenarios
            .iter()
            .filter(|scenario| selection.selects(&feature, None, scenario))
            .count();
        for rule in &feature.rules {
            count += rule
                .scenarios
                .iter()
                .filter(|scenario| selection.selects(&feature, Some(rule), scenario))
                .count();
        }
    }
    if let Some(unknown) = selection.names.iter().find(|name| !seen.contains(name)) {
        bail!("no scenario is called {unknown:?}");
    }
    Ok(count)
}

/// Writes the measured convergence times into the JUnit report, as properties of each
/// scenario's test case (cucumber's writer cannot: see [`crate::junit`]).
fn add_measurements(path: &Path, measurements: &[report::Measurement]) -> anyhow::Result<()> {
    let xml = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the JUnit report {}", path.display()))?;
    let done = junit::add_properties(&xml, measurements)
        .with_context(|| format!("failed to add properties to {}", path.display()))?;
    for scenario in &done.missing {
        eprintln!(
            "conformance: warning: the JUnit report has no test case for {} — {} (line {})",
            scenario.feature, scenario.scenario, scenario.line
        );
    }
    std::fs::write(path, done.xml)
        .with_context(|| format!("failed to write the JUnit report {}", path.display()))
}

/// The directory reports go to by default: `<cargo target dir>/conformance`, where the
/// target directory is `CARGO_TARGET_DIR` when set, else the one the running binary was
/// built in (it lives in `<target>/<profile>/` or `<target>/<profile>/deps/`), else
/// `./target`.
pub fn default_report_root() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        return workspace.join(dir).join("conformance");
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?;
        let profile_dir = if dir.file_name().is_some_and(|name| name == "deps") {
            dir.parent()?
        } else {
            dir
        };
        Some(profile_dir.parent()?.to_path_buf())
    });
    from_exe
        .unwrap_or_else(|| workspace.join("target"))
        .join("conformance")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_expressions_and_names_select_scenarios() {
        let select = |tags: Option<&str>, names: &[&str]| Selection {
            tags: tags.map(|tags| TagOperation::from_str(tags).expect("parses")),
            names: names.iter().map(|name| (*name).to_owned()).collect(),
        };
        let all = count_scenarios(&features_dir(), &select(None, &[])).expect("features parse");
        let some = count_scenarios(&features_dir(), &select(Some("@scheduling"), &[]))
            .expect("features parse");
        assert!(some > 0 && some < all, "{some} of {all}");
        let none = select(Some("@scheduling and not @scheduling"), &[]);
        assert_eq!(count_scenarios(&features_dir(), &none).expect("parse"), 0);
        let named = select(None, &["Requests are spread across the replicas"]);
        assert_eq!(count_scenarios(&features_dir(), &named).expect("parse"), 1);
        assert!(count_scenarios(&features_dir(), &select(None, &["No such scenario"])).is_err());
    }
}
