//! Runs the control-plane features — `control-plane.feature` and
//! `high-availability.feature` — against the reference with a control plane of three
//! members (`shipshape up --control-plane 3`): the leader killed under load, every member
//! killed at once and started again, the history of the clients checked for
//! linearizability. Its report goes under `<target>/conformance/reference-members/`.
//! `SHIPSHAPE_TAGS` replaces the default selection.
//!
//! Known defect, issue #11: killing the leader under load sometimes yields a history that
//! is not linearizable — a write that took effect is answered "conflict" or "already
//! exists", as if it had been applied twice. Until that is fixed, the default selection
//! leaves `@lose-control-plane-member` out so that CI stays meaningful; run it with
//! `SHIPSHAPE_TAGS=@high-availability cargo test -p shipshape-conformance --test
//! high_availability` to see the checker catch it.

use std::process::ExitCode;

use shipshape_conformance::run::{self, DriverChoice, Options};

fn main() -> ExitCode {
    run::test_main(|| {
        let mut options = Options::from_env(DriverChoice::Reference { members: 3 })?;
        options
            .tags
            .get_or_insert_with(|| "@control-plane and not @lose-control-plane-member".to_owned());
        Ok(options)
    })
}
