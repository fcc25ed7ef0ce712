//! Sentences about autoscaling (`features/autoscaling.feature`): replicas added while each
//! one uses more of the CPU it asks for than its target, given back once the load has
//! stopped and stayed low, never more than the most allowed.
//!
//! The load is real: the probe's `REQUEST_CPU_MS` makes every request it answers cost
//! that much CPU, and the scenario's traffic sends requests one after the other. How many
//! replicas run is looked at four times a second while a step waits, so a system that
//! runs more than the most allowed, even for a moment between two of its own looks at the
//! load, is caught.

use std::time::Duration;

use cucumber::{given, then, when};

use super::{StepResult, Wait, fail, probe_spec};
use crate::driver::{AutoscaleSpec, DeploymentSpec, Resources};
use crate::traffic::Traffic;
use crate::world::ConformanceWorld;

#[given(
    expr = "a deployment {string} of probe replicas whose requests each cost {int} milliseconds of CPU, each asking for {int} millicores"
)]
async fn costly_deployment(
    world: &mut ConformanceWorld,
    name: String,
    cost: u32,
    millicpu: u64,
) -> StepResult {
    let driver = world.driver()?;
    let mut spec = probe_spec(&*driver, &name, "v1");
    spec.env
        .insert("REQUEST_CPU_MS".to_owned(), cost.to_string());
    spec.port = Some(8080);
    spec.requests = Resources {
        millicpu: Some(millicpu),
        memory_bytes: None,
    };
    let namespace = world.namespace().await?;
    driver.deploy(&namespace, &spec).await?;
    Ok(())
}

#[when(expr = "clients send requests to the service {string} one after the other")]
async fn load(world: &mut ConformanceWorld, service: String) -> StepResult {
    let namespace = world.namespace().await?;
    world.traffic = Some(Traffic::start(world.driver()?, namespace, service));
    Ok(())
}

#[given(expr = "a deployment {string} of probe replicas that ask for no CPU")]
async fn unasking_deployment(world: &mut ConformanceWorld, name: String) -> StepResult {
    let driver = world.driver()?;
    let spec = DeploymentSpec {
        port: Some(8080),
        ..probe_spec(&*driver, &name, "v1")
    };
    let namespace = world.namespace().await?;
    driver.deploy(&namespace, &spec).await?;
    Ok(())
}

#[given(
    expr = "deployment {string} is autoscaled between {int} and {int} replicas at {int}% of the CPU it asks for, giving replicas back after {int} seconds of low load"
)]
async fn autoscaled(
    world: &mut ConformanceWorld,
    deployment: String,
    min: u32,
    max: u32,
    cpu_percent: u32,
    seconds: u64,
) -> StepResult {
    let scale_down_after = Duration::from_secs(seconds);
    let spec = AutoscaleSpec {
        deployment,
        min,
        max,
        cpu_percent,
        scale_down_after,
    };
    let namespace = world.namespace().await?;
    world.driver()?.autoscale(&namespace, &spec).await?;
    world.scale_down_after = scale_down_after;
    Ok(())
}

/// Waits `seconds` until `deployment` runs a count of replicas `wanted` accepts (`what`
/// says which), failing at once if it ever runs more than `most`.
async fn replicas_until(
    world: &mut ConformanceWorld,
    deployment: &str,
    seconds: u64,
    most: u32,
    (what, wanted): (String, impl Fn(u32) -> bool),
) -> StepResult {
    let wait = Wait::new(seconds, what);
    loop {
        let replicas = super::placement::list(world, deployment).await?;
        let running = replicas.iter().filter(|r| !r.terminating).count() as u32;
        let ready = replicas
            .iter()
            .filter(|r| r.ready && !r.terminating)
            .count() as u32;
        if running > most {
            fail!(
                "deployment {deployment} runs {running} replicas, more than the most allowed, {most}"
            );
        }
        if wanted(ready) && running == ready {
            wait.done(world);
            println!("      deployment {deployment}: {ready} ready replicas");
            return Ok(());
        }
        wait.again(&format!("{running} replicas, {ready} of them ready"))
            .await?;
    }
}

#[then(
    expr = "within {int} seconds deployment {string} runs more than {int} ready replica(s), and never more than {int}"
)]
async fn grows(
    world: &mut ConformanceWorld,
    seconds: u64,
    deployment: String,
    least: u32,
    most: u32,
) -> StepResult {
    let what = format!("more than {least} ready replicas of deployment {deployment}");
    replicas_until(
        world,
        &deployment,
        seconds,
        most,
        (what, |ready| ready > least),
    )
    .await
}

#[then(
    expr = "within the giving-back delay and {int} more seconds deployment {string} runs {int} replica(s), and never more than {int}"
)]
async fn shrinks(
    world: &mut ConformanceWorld,
    seconds: u64,
    deployment: String,
    count: u32,
    most: u32,
) -> StepResult {
    let bound = world.scale_down_after.as_secs() + seconds;
    let what = format!("{count} replicas of deployment {deployment}, the others given back");
    replicas_until(
        world,
        &deployment,
        bound,
        most,
        (what, |ready| ready == count),
    )
    .await
}

#[then(
    expr = "within {int} seconds the autoscaler of deployment {string} reports that it cannot measure the CPU use, for want of a CPU request"
)]
async fn cannot_measure(
    world: &mut ConformanceWorld,
    seconds: u64,
    deployment: String,
) -> StepResult {
    let namespace = world.namespace().await?;
    let wait = Wait::new(
        seconds,
        format!("a reason from the autoscaler of {deployment}"),
    );
    loop {
        let status = world
            .driver()?
            .read_autoscaler(&namespace, &deployment)
            .await?;
        if let Some(Err(why)) = &status.measuring
            && why.contains("cpu")
            && why.contains("request")
        {
            println!("      the autoscaler says: {why}");
            wait.done(world);
            return Ok(());
        }
        if let Some(Ok(())) = status.measuring {
            fail!(
                "the autoscaler of {deployment} says it measures the CPU use of replicas that ask for none"
            );
        }
        wait.again(&format!("{:?}", status.measuring)).await?;
    }
}
