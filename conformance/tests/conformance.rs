//! Runs `features/` against the driver named by `SHIPSHAPE_DRIVER` (default `reference`),
//! and writes its report under `<target>/conformance/<driver>/` (`report.html`,
//! `summary.json`, `junit.xml`). `SHIPSHAPE_TAGS` selects scenarios by a tag expression;
//! `SHIPSHAPE_PROFILE` names a timing profile file. The process exits non-zero if any
//! scenario that applies failed, or a step was skipped for another reason than "not
//! applicable".
//!
//! The same binary doubles as the reference's processes: see
//! `shipshape_conformance::run_reference_child_if_requested`.

use std::process::ExitCode;

use shipshape_conformance::run::{self, DriverChoice, Options};

fn main() -> ExitCode {
    run::test_main(|| Options::from_env(DriverChoice::from_env()?))
}
