//! shipshape-conformance: the conformance kit.
//!
//! The kit answers one question with evidence: *does this orchestrator behave?* The
//! specification is `features/*.feature`, written in the plain words of the seed —
//! deployment, replicas, service, node, control plane — and never in the words of one
//! implementation. This crate is the harness that runs those features, with cucumber,
//! against a real system, and writes a certification report a person reads.
//!
//! # How a system plugs in
//!
//! A system under test is a [`Driver`](driver::Driver): a handful of operations in the
//! seed's terms (deploy, scale, update the image, roll back, read the rollout's status and
//! history, expose, list replicas with their phase, node and readiness, reach a service,
//! list the nodes), the [`Fault`](driver::Fault)s it can inject, the
//! [`Capability`](driver::Capability)s it has beyond the basics (three nodes or more, add a
//! node, label or taint a node, run a single pod, reach one replica's port), each with the
//! reason when it lacks it, and, for systems that speak it, a Kubernetes API client. That
//! trait is the only thing a new orchestrator implements; one file per driver:
//!
//! - [`kubernetes`](mod@kubernetes) certifies any cluster a kubeconfig reaches, through the
//!   Kubernetes API only ([`kubeapi`]); it finds out before the run how services and
//!   replicas answer from where the kit runs ([`plain_http`]), and whether it can reach the
//!   pods' containers ([`docker`]) to kill them;
//! - [`reference`](mod@reference) starts a whole shipshape cluster on the local Docker
//!   engine — the control plane and three node agents, each a child process, so that each
//!   can fail on its own — and certifies it with the `kubernetes` driver, exactly as it
//!   would any cluster; the processes are the machines the faults past the API hit;
//! - [`swarm`](mod@swarm) certifies Docker Swarm on the local engine through the Docker
//!   API, reaching services by DNS round robin from a relay on each scenario's overlay
//!   network; where Swarm really differs, the report says which scenarios fail and why.
//!
//! Features declare what they need with capability tags (`@kubernetes-api`, one tag per
//! fault such as `@lose-node`, one per capability such as `@add-node`). A scenario needing
//! something the driver lacks is reported *not applicable* — with the driver's reason —
//! rather than failed ([`applicability`]).
//!
//! # How a run goes
//!
//! [`run::certify`] is one run, whether it is started by `cargo test -p
//! shipshape-conformance` (the test targets in `tests/`, which pick the driver from
//! `SHIPSHAPE_DRIVER`) or by `shipshape-conformance certify --driver NAME` (`src/main.rs`):
//!
//! 1. If the process was started as a `shipshape` child of the reference driver, it
//!    becomes one ([`run_reference_child_if_requested`]) and nothing else happens.
//! 2. The driver is started — one system for the whole run; the banner says which system
//!    is under test, its capabilities, and the timing profile ([`profile`]).
//! 3. Scenarios run one at a time. Each gets a fresh [`World`](world::ConformanceWorld)
//!    and its own namespace, labelled `shipshape.conformance/run=<run id>` so a reaper can
//!    find what a killed run left behind. Afterwards the nodes it made fail are brought
//!    back (a partition healed, a lost node restarted), the namespace is deleted, nodes the
//!    scenario added are removed, labels, taints and cordons it put on nodes are taken
//!    back, and the harness waits until the failed nodes are ready and as they were.
//! 4. "within N seconds" steps measure how long the system took to converge (and, after
//!    a fault, how long after the fault that was); traffic and an availability monitor
//!    ([`traffic`]) check invariants while the system changes, and a load of costly
//!    requests at a set rate ([`load`]) gives an autoscaler real CPU use to follow. A
//!    progress line reports each scenario as it ends.
//! 5. The report ([`report`]) goes to `<target>/conformance/<driver>/`: `report.html`,
//!    `summary.json`, and JUnit XML with each scenario's convergence times as properties
//!    ([`junit`]). The driver is shut down cleanly. The run fails if a step fails, a hook
//!    fails, a feature does not parse, a step is skipped for any reason other than "not
//!    applicable" (an undefined step, say), or the system under test does not stop
//!    cleanly.
//!
//! Every operation talks to a real system, so every step can really fail: nothing here
//! mocks the orchestrator, and a driver never reports success for work it did not do.
//!
//! # How the kit shows what it catches
//!
//! A scenario that passes on the reference might pass as well on a system that ignores
//! half of what its feature promises. [`mutants`] answers that with a number: it
//! certifies the reference once per *behavioural mutant* — one decision turned wrong by a
//! fail point the reference has only in `--features failpoints` builds — and every mutant
//! must fail a scenario the catalogue (`conformance/mutants.toml`) names for it. The
//! reference's report shows the score.
//!
//! # How the kit checks consistency
//!
//! [`linearizability`] records what several clients of any Kubernetes API read and write
//! while faults happen, and searches for one order of their operations that explains every
//! answer (Wing–Gong–Lowe, key by key). A history with none is drawn as a timeline in the
//! report.

#![warn(missing_docs)]

pub mod applicability;
pub mod docker;
pub mod driver;
pub mod images;
pub mod junit;
pub mod kubeapi;
pub mod kubernetes;
pub mod linearizability;
pub mod links;
pub mod load;
pub mod mutants;
pub mod node_containers;
pub mod node_watch;
pub mod plain_http;
pub mod profile;
pub mod reaper;
pub mod reference;
pub mod report;
pub mod run;
pub mod steps;
pub mod swarm;
pub mod traffic;
pub mod world;

pub use reference::run_reference_child_if_requested;

/// Environment variable that names the driver under test.
pub const DRIVER_ENV: &str = "SHIPSHAPE_DRIVER";

/// The drivers this kit knows, by the name `SHIPSHAPE_DRIVER` takes.
pub const DRIVERS: &[&str] = &["reference", "kubernetes", "swarm"];
