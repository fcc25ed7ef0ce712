//! Runs the control-plane features — `control-plane.feature` and
//! `high-availability.feature` — against the reference with a control plane of three
//! members (`shipshape up --control-plane 3`): the leader killed under load, every member
//! killed at once and started again, the history of the clients checked for
//! linearizability. Its report goes under `<target>/conformance/reference-members/`.
//! `SHIPSHAPE_TAGS` replaces the default selection.

use std::process::ExitCode;

use shipshape_conformance::run::{self, DriverChoice, Options};

fn main() -> ExitCode {
    run::test_main(|| {
        let mut options = Options::from_env(DriverChoice::Reference { members: 3 })?;
        options
            .tags
            .get_or_insert_with(|| "@control-plane".to_owned());
        Ok(options)
    })
}
