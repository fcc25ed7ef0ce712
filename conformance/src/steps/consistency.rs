//! The sentences about what clients of the control plane see: several clients reading and
//! writing through the API while faults happen, and the check that their history is
//! linearizable ([`crate::linearizability`]).

use std::sync::Arc;

use anyhow::anyhow;
use cucumber::{given, then};

use super::{StepResult, Wait};
use crate::linearizability::workload::{ClientSource, Workload};
use crate::linearizability::{self, timeline};
use crate::world::ConformanceWorld;

/// How many operations the clients must have completed before the scenario goes on, so a
/// fault meets a busy system.
const WARM_UP_OPERATIONS: usize = 40;

/// How long the clients may take to warm up.
const WARM_UP_SECONDS: u64 = 30;

#[given(
    expr = "{int} clients create, read, compare-and-set and delete {int} objects through the control plane"
)]
async fn start_clients(world: &mut ConformanceWorld, clients: usize, keys: usize) -> StepResult {
    if clients == 0 || keys == 0 {
        return Err(anyhow!("a history needs at least one client and one object").into());
    }
    let namespace = world.namespace().await?;
    world.kube()?;
    let driver = world.driver()?;
    let source: ClientSource = Arc::new(move || {
        driver
            .kube_client()
            .ok_or_else(|| anyhow!("driver {} has no Kubernetes API client", driver.name()))
    });
    let workload = Workload::start(source, &namespace, "register", clients, keys);
    world.workload = Some(workload);
    wait_for_operations(world, WARM_UP_SECONDS, WARM_UP_OPERATIONS).await
}

#[then(expr = "within {int} seconds the clients have completed {int} more operations")]
async fn more_operations(world: &mut ConformanceWorld, seconds: u64, more: usize) -> StepResult {
    wait_for_operations(world, seconds, more).await
}

/// Waits until the clients have completed `more` operations after now (unknown outcomes
/// do not count).
async fn wait_for_operations(
    world: &mut ConformanceWorld,
    seconds: u64,
    more: usize,
) -> StepResult {
    let completed = |world: &ConformanceWorld| -> anyhow::Result<usize> {
        let workload = world
            .workload
            .as_ref()
            .ok_or_else(|| anyhow!("no clients were started in this scenario"))?;
        Ok(workload.recorder().completed())
    };
    let before = completed(world)?;
    let wait = Wait::new(
        seconds,
        format!("{more} more operations completed by the clients"),
    );
    loop {
        let done = completed(world)? - before;
        if done >= more {
            wait.done(world);
            return Ok(());
        }
        wait.again(&format!("{done} completed")).await?;
    }
}

#[then("the history of their operations is linearizable")]
async fn history_is_linearizable(world: &mut ConformanceWorld) -> StepResult {
    let workload = world
        .workload
        .take()
        .ok_or_else(|| anyhow!("no clients were started in this scenario"))?;
    let history = workload.stop().await.operations();
    let checked = tokio::task::spawn_blocking(move || linearizability::check(&history))
        .await
        .map_err(|e| anyhow!("the linearizability check failed to run: {e}"))?;
    println!("      checked: {}", checked.summary());
    if checked.is_linearizable() {
        return Ok(());
    }
    let drawn: Vec<String> = checked.failures().take(2).map(timeline::draw).collect();
    Err(anyhow!("{}\n{}", checked.summary(), drawn.join("\n")).into())
}
