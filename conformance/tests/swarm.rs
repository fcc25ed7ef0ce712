//! Certifies Docker Swarm on the local Docker engine: runs `features/` with the `swarm`
//! driver, which puts the engine in swarm mode for the run if it is not in a swarm, and
//! leaves it after. The report goes to `<target>/conformance/swarm/`; where Swarm really
//! differs from what a feature says, the report explains the failure.
//!
//! This target passes when the run completes and every failure is one the driver explains
//! as a known difference of Swarm ([`shipshape_conformance::driver::Driver::differences`]):
//! a failure nobody explained is a fault of the kit or of Swarm, and fails the test.
//! `SHIPSHAPE_TAGS` and `SHIPSHAPE_PROFILE` apply as for the other targets.

use std::process::ExitCode;

use shipshape_conformance::run::{self, DriverChoice, Options};

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("swarm: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let mut options = Options::from_env(DriverChoice::Swarm)?;
        // Two scenarios at a time, unless SHIPSHAPE_CONCURRENCY says otherwise: 285 s for
        // the whole run, against 501 s one at a time, with the same outcome. The more load,
        // the more often "Recreate never serves two versions at once" sees a task of each
        // template at the same time (a difference of Swarm, explained by the driver): with
        // four side by side on the 2-core CI machine, and once in CI with two.
        if std::env::var_os("SHIPSHAPE_CONCURRENCY").is_none() {
            options.concurrency = 2;
        }
        run::certify(options).await
    });
    match outcome {
        Ok(outcome) => {
            let unexplained = outcome.report.unexplained_failures();
            if unexplained.is_empty() {
                println!(
                    "swarm: every failure is a known difference of Swarm, explained in {}",
                    outcome.html.display()
                );
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "swarm: {} scenario(s) failed without an explanation: {}",
                    unexplained.len(),
                    unexplained.join("; ")
                );
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("swarm: {error:#}");
            ExitCode::FAILURE
        }
    }
}
