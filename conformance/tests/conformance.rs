//! Runs `features/` against the driver named by `SHIPSHAPE_DRIVER` (default `reference`).
//!
//! Output: cucumber's console report, and JUnit XML in `<target>/conformance/junit.xml`
//! (`<target>` is `CARGO_TARGET_DIR` when set, else the target directory this test was
//! built in), completed after the run with each scenario's measured convergence times as
//! properties of its test case. The process exits non-zero if any scenario failed or any step was skipped
//! for another reason than "not applicable".
//!
//! The same binary doubles as the reference control plane: see
//! `shipshape_conformance::run_reference_child_if_requested`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use cucumber::{StatsWriter as _, World as _, WriterExt as _, parser, writer};
use futures::FutureExt as _;
use shipshape_conformance::applicability::NotApplicable;
use shipshape_conformance::junit;
use shipshape_conformance::world::{ConformanceWorld, Harness, Measurement, ScenarioId};

fn main() -> ExitCode {
    // First: this process may be the reference control plane the harness started.
    if let Some(code) = shipshape_conformance::run_reference_child_if_requested() {
        return code;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("conformance: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("conformance: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<ExitCode> {
    let report_dir = target_dir().join("conformance");
    std::fs::create_dir_all(&report_dir)
        .with_context(|| format!("failed to create {}", report_dir.display()))?;
    let junit_path = report_dir.join("junit.xml");
    let junit_file = File::create(&junit_path)
        .with_context(|| format!("failed to create {}", junit_path.display()))?;

    let started = Instant::now();
    let driver = shipshape_conformance::driver_from_env(&report_dir).await?;
    println!(
        "conformance: system under test started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let harness = Arc::new(Harness::new(driver));
    let capabilities = harness.capabilities();
    println!(
        "conformance: driver under test: {} — {}",
        harness.driver().name(),
        harness.driver().describe()
    );
    let listed: Vec<String> = capabilities
        .tags()
        .iter()
        .map(|(tag, has)| format!("@{tag}: {}", if *has { "yes" } else { "no" }))
        .collect();
    println!(
        "conformance: capabilities: {}; run id {}",
        listed.join(", "),
        harness.run_id()
    );

    let features = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../features");
    let (before, after) = (Arc::clone(&harness), Arc::clone(&harness));
    let skips = Arc::clone(&capabilities);
    let outcome = ConformanceWorld::cucumber::<PathBuf>()
        .with_parser(NotApplicable::new(parser::Basic::default(), capabilities))
        .max_concurrent_scenarios(1)
        .before(move |feature, _, scenario, world| {
            let id = ScenarioId {
                feature: feature.name.clone(),
                scenario: scenario.name.clone(),
                line: scenario.position.line,
                column: scenario.position.col,
            };
            before.prepare(id, world);
            async {}.boxed_local()
        })
        .after(move |_, _, _, _, world| {
            let harness = Arc::clone(&after);
            async move { harness.clean_up(world).await }.boxed_local()
        })
        .with_writer(
            writer::Basic::raw(io::stdout(), writer::Coloring::Auto, 0)
                .summarized()
                .tee::<ConformanceWorld, _>(writer::JUnit::for_tee(junit_file, 0))
                .normalized(),
        )
        .fail_on_skipped_with(move |feature, rule, scenario| {
            skips.fails_when_skipped(feature, rule, scenario)
        })
        .run(features)
        .await;

    print!("{}", harness.report().summary());
    let properties = add_measurements(&junit_path, &harness.report().measurements());
    // Stop the system under test cleanly (its containers go with it) before judging.
    let stopped = harness.driver().shut_down().await;
    if let Err(error) = &stopped {
        eprintln!("conformance: failed to stop the system under test cleanly: {error:#}");
    }
    match &properties {
        Ok(()) => println!(
            "conformance: JUnit report, with the measured times as properties, in {}",
            junit_path.display()
        ),
        Err(error) => eprintln!("conformance: {error:#}"),
    }
    println!(
        "conformance: run took {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    Ok(
        if outcome.execution_has_failed() || stopped.is_err() || properties.is_err() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// Writes the measured convergence times into the JUnit report, as properties of each
/// scenario's test case (cucumber's writer cannot: see `shipshape_conformance::junit`).
fn add_measurements(path: &Path, measurements: &[Measurement]) -> anyhow::Result<()> {
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

/// The cargo target directory: `CARGO_TARGET_DIR` if set (relative to the workspace),
/// else the one this test binary was built in.
fn target_dir() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .map_or_else(|| workspace.join("target"), PathBuf::from),
    }
}
