//! shipshape-conformance: the conformance kit.
//!
//! The kit answers one question with evidence: *does this orchestrator behave?* The
//! specification is `features/*.feature`, written in the plain words of the seed —
//! deployment, replicas, service, node, control plane — and never in the words of one
//! implementation. This crate is the harness that runs those features, with cucumber,
//! against a real system: the reference orchestrator today, any Kubernetes cluster or
//! Docker Swarm later.
//!
//! # How a system plugs in
//!
//! A system under test is a [`Driver`](driver::Driver): a handful of operations in the
//! seed's terms (deploy, scale, update the image, roll back, expose, list replicas with
//! their phase, node and readiness, reach a service, list the nodes), the
//! [`Fault`](driver::Fault)s it can inject, the [`Capability`](driver::Capability)s it has
//! beyond the basics (add a node, label or taint a node, run a single pod, reach one
//! replica's port), and, for systems that speak it, a Kubernetes API client. That trait is
//! the only thing a new orchestrator implements. Drivers are chosen at run time by the
//! `SHIPSHAPE_DRIVER` environment variable ([`driver_from_env`]); the [`reference`](mod@reference) driver
//! starts a whole shipshape cluster on the local Docker engine — the control plane and
//! three node agents, each a child process, so that each can fail on its own — and talks
//! to it only through the Kubernetes API ([`kubeapi`]) and, to reach a replica, over plain
//! HTTP to the replica's address ([`plain_http`]), exactly as it would to any cluster. Its
//! faults go past the orchestrator, to the processes and to the Docker engine
//! ([`docker`]).
//!
//! Features declare what they need with capability tags (`@kubernetes-api`, one tag per
//! fault such as `@lose-node`, one per capability such as `@add-node`). A
//! scenario needing something the driver lacks is reported *not applicable* — skipped
//! with the reason — rather than failed ([`applicability`]).
//!
//! # How a run goes
//!
//! `cargo test -p shipshape-conformance --test conformance` runs `tests/conformance.rs`:
//!
//! 1. If the process was started as a `shipshape` child of the reference driver, it
//!    becomes one ([`run_reference_child_if_requested`]) and nothing else happens.
//! 2. The driver is picked and started — one system for the whole run; the banner says
//!    which system is under test and which capabilities it has.
//! 3. Scenarios run one at a time. Each gets a fresh [`World`](world::ConformanceWorld)
//!    and its own namespace, labelled `shipshape.conformance/run=<run id>` so a reaper can
//!    find what a killed run left behind. Afterwards the nodes it made fail are brought
//!    back (a partition healed, a lost node restarted), the namespace is deleted, nodes the
//!    scenario added are removed, labels, taints and cordons it put on nodes are taken
//!    back, and the harness waits until the failed nodes are ready and as they were.
//! 4. "within N seconds" steps measure how long the system took to converge (and, after
//!    a fault, how long after the fault that was); those times and each scenario's wall
//!    time are printed as they happen and summed up per feature at the end
//!    ([`world::Report`]).
//! 5. Results go to the console and to JUnit XML (`target/conformance/junit.xml`), where
//!    each scenario's convergence times become properties of its test case ([`junit`]). The
//!    driver is shut down cleanly. The run fails if a step fails, a hook fails, a feature
//!    does not parse, a step is skipped for any reason other than "not applicable" (an
//!    undefined step, say), or the system under test does not stop cleanly.
//!
//! Every operation talks to a real system, so every step can really fail: nothing here
//! mocks the orchestrator, and a driver never reports success for work it did not do.

#![warn(missing_docs)]

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};

pub mod applicability;
pub mod docker;
pub mod driver;
pub mod junit;
pub mod kubeapi;
pub mod plain_http;
pub mod reference;
pub mod steps;
pub mod traffic;
pub mod world;

pub use reference::run_reference_child_if_requested;

/// Environment variable that names the driver under test.
pub const DRIVER_ENV: &str = "SHIPSHAPE_DRIVER";

/// The drivers this kit knows, by the name `SHIPSHAPE_DRIVER` takes.
pub const DRIVERS: &[&str] = &["reference"];

/// Starts the driver named by `SHIPSHAPE_DRIVER` (default `reference`); logs of the
/// systems it starts go to `report_dir`.
pub async fn driver_from_env(report_dir: &Path) -> anyhow::Result<Arc<dyn driver::Driver>> {
    let name = match std::env::var(DRIVER_ENV) {
        Ok(name) if !name.is_empty() => name,
        Ok(_) | Err(std::env::VarError::NotPresent) => "reference".to_owned(),
        Err(std::env::VarError::NotUnicode(raw)) => {
            bail!("{DRIVER_ENV}={raw:?} is not valid UTF-8")
        }
    };
    match name.as_str() {
        "reference" => {
            let log = report_dir.join("reference-cluster.log");
            let driver = reference::ReferenceDriver::start(log)
                .await
                .context("failed to start the reference driver")?;
            Ok(Arc::new(driver))
        }
        "kubernetes" | "swarm" => {
            bail!("{DRIVER_ENV}={name}: that driver is not written yet; known drivers: {DRIVERS:?}")
        }
        other => bail!("{DRIVER_ENV}={other}: unknown driver; known drivers: {DRIVERS:?}"),
    }
}
