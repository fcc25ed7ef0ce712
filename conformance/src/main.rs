//! `shipshape-conformance`: the kit's command line, for people who certify an orchestrator
//! without writing Rust.
//!
//! ```text
//! shipshape-conformance certify --driver reference|kubernetes|swarm [--tags EXPR] [--profile FILE]
//! shipshape-conformance certify --driver kubernetes --kubeconfig PATH [--context NAME] [--image-prefix P]
//! shipshape-conformance images --save DIR
//! shipshape-conformance mutants [--only NAME]... [--jobs N] [--sweep]   (built with --features failpoints)
//! ```
//!
//! `certify` runs the features against the system the driver names and writes the report
//! (`report.html`, `summary.json`, `junit.xml`) under `target/conformance/<driver>/`,
//! printing a line per scenario as it ends; it exits non-zero if any scenario that applies
//! failed. `mutants` certifies the reference once per behavioural mutant of the catalogue
//! (`conformance/mutants.toml`) and exits non-zero unless a scenario the catalogue names
//! caught every one. `images` writes the kit's probe images as `docker save` archives, for systems
//! whose nodes do not share the local Docker engine. Errors are one line each.
//!
//! The same binary doubles as the reference's processes: when the reference driver starts
//! a control plane or a node agent, it runs this very executable as `shipshape ...`
//! ([`shipshape_conformance::run_reference_child_if_requested`]).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shipshape_conformance::profile::Profile;
use shipshape_conformance::run::{self, DriverChoice, Options};

/// The conformance kit: certifies a container orchestrator against shipshape's features.
#[derive(Debug, Parser)]
#[command(name = "shipshape-conformance", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the features against a system and writes its certification report.
    Certify {
        /// The system under test: `reference` (started for the run), `kubernetes` (any
        /// cluster a kubeconfig reaches), `swarm` (Docker Swarm on the local engine).
        #[arg(long, default_value = "reference")]
        driver: String,
        /// For `kubernetes`: the kubeconfig (else SHIPSHAPE_KUBECONFIG, KUBECONFIG,
        /// ~/.kube/config).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// For `kubernetes`: the kubeconfig context (else its current one).
        #[arg(long)]
        context: Option<String>,
        /// For `kubernetes`: put in front of the probe images' names, for a copy in a
        /// registry the cluster pulls from (`registry.example/`).
        #[arg(long)]
        image_prefix: Option<String>,
        /// Runs only the scenarios this tag expression selects, e.g.
        /// `@self-healing and not @disruptive`.
        #[arg(long)]
        tags: Option<String>,
        /// Runs only the scenario of this name (repeatable).
        #[arg(long = "scenario")]
        scenarios: Vec<String>,
        /// A timing profile (TOML) with the system's promised timings; the kit's defaults
        /// without it. `conformance/profiles/` has upstream Kubernetes'.
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Where reports go (a directory per driver is made in it); default
        /// `target/conformance`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also prints every step as it runs.
        #[arg(long)]
        verbose: bool,
        /// How many scenarios run side by side; those that change or fail nodes or the
        /// control plane always run alone. 1 runs every scenario alone.
        #[arg(long, default_value_t = run::DEFAULT_CONCURRENCY, value_parser = run::parse_concurrency)]
        concurrency: usize,
    },
    /// Runs the kit's behavioural mutants of the reference: each must fail a scenario.
    /// Needs a build with `--features failpoints`.
    Mutants {
        /// Runs only the mutant of this name (repeatable).
        #[arg(long = "only")]
        only: Vec<String>,
        /// How many mutants run at once, each on a reference cluster of its own. Three on
        /// the 2-core CI machine: 561 s for the catalogue, against 846 s two at a time,
        /// every mutant caught and the control passing either way (the clusters mostly
        /// wait: for grace periods, back-offs and time-outs).
        #[arg(long, default_value_t = 3)]
        jobs: usize,
        /// Where reports go (`mutants/` is made in it); default `target/conformance`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also runs every mutant on the scenarios no mutant names, and lists the
        /// scenarios that caught nothing (a longer run, for reviewing the features).
        #[arg(long)]
        sweep: bool,
    },
    /// Writes the kit's probe images as `docker save` archives.
    Images {
        /// The directory to write them to.
        #[arg(long)]
        save: PathBuf,
    },
}

fn main() -> ExitCode {
    // First: this process may be a control plane or node agent of the reference driver.
    if let Some(code) = shipshape_conformance::run_reference_child_if_requested() {
        return code;
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("shipshape-conformance: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("shipshape-conformance: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command.
async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Certify {
            driver,
            kubeconfig,
            context,
            image_prefix,
            tags,
            scenarios,
            profile,
            out,
            verbose,
            concurrency,
        } => {
            let mut driver = DriverChoice::named(&driver)?;
            match &mut driver {
                DriverChoice::Kubernetes(options) => {
                    options.kubeconfig = kubeconfig.or(options.kubeconfig.take());
                    options.context = context.or(options.context.take());
                    options.image_prefix = image_prefix;
                }
                _ if kubeconfig.is_some() || context.is_some() || image_prefix.is_some() => {
                    anyhow::bail!(
                        "--kubeconfig, --context and --image-prefix are for --driver kubernetes"
                    );
                }
                _ => {}
            }
            let profile = match profile {
                Some(path) => Profile::load(&path)?,
                None => Profile::default(),
            };
            let options = Options {
                driver,
                scenarios,
                tags,
                profile,
                report_root: out.unwrap_or_else(run::default_report_root),
                verbose,
                concurrency,
            };
            let outcome = run::certify(options).await?;
            Ok(if outcome.success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Mutants {
            only,
            jobs,
            out,
            sweep,
        } => {
            let root = out.unwrap_or_else(run::default_report_root);
            let report = shipshape_conformance::mutants::run(&root, &only, jobs, sweep).await?;
            Ok(if report.all_caught_as_catalogued() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Images { save } => {
            let written = shipshape_conformance::images::save(&save)
                .await
                .with_context(|| {
                    format!("failed to save the probe images to {}", save.display())
                })?;
            for (image, path) in &written {
                println!("{image}: {}", path.display());
            }
            println!("{}", shipshape_conformance::images::how_to_load(&written));
            Ok(ExitCode::SUCCESS)
        }
    }
}
