//! Runs the control-plane features — `control-plane.feature` and
//! `high-availability.feature` — against the reference with a control plane of three
//! members (`shipshape up --control-plane 3 --machines containers`): the leader killed
//! under load, the leader cut off from the others, every member killed at once and
//! started again, the history of the clients checked for linearizability. Here every
//! machine is a container with an address of its own, so it also runs the scenario of a
//! node cut off from the control plane (`@partition-node`) as a real network partition.
//! Its report goes under `<target>/conformance/reference-members/`. `SHIPSHAPE_TAGS`
//! replaces the default selection.

use std::process::ExitCode;

use shipshape_conformance::run::{self, DriverChoice, Options};

fn main() -> ExitCode {
    run::test_main(|| {
        let mut options = Options::from_env(DriverChoice::Reference { members: 3 })?;
        options
            .tags
            .get_or_insert_with(|| "@control-plane or @partition-node".to_owned());
        Ok(options)
    })
}
