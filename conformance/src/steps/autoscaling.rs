//! Sentences about autoscaling (`features/autoscaling.feature`): replicas added while each
//! one uses more of the CPU it asks for than its target, never more than the most
//! allowed, given back once the load has stopped and stayed low.
//!
//! The load is real and the same on every machine: a [`Load`] sends requests to the
//! service at the rates the scenario gives, each costing the replica that answers it the
//! same milliseconds of CPU, so the CPU the load asks for is rate × cost whatever the
//! machine. Next to it the scenario's ordinary traffic goes on, one cheap request after
//! the other, through the scale-up and the giving-back: a replica taken away while it
//! answers shows there as a failed request.
//!
//! What the numbers of the feature give: replicas asking for 100 millicores, an
//! autoscaler aiming at 50 % of that — 50 millicores a replica — between 1 and 4.
//!
//! * At 8 requests a second of 10 ms the load asks for 80 millicores: 1.6 replicas'
//!   worth, 2 or 3 with the replicas' own work on the ordinary traffic (20 to 80
//!   millicores more, measured on the reference), with room before a 4th is wanted (over
//!   165 millicores on 3). There the autoscaler must have grown the deployment until the
//!   replicas are at or under its target.
//! * At 30 a second it asks for 300 millicores, 6 replicas' worth: more than the 4
//!   allowed. There the autoscaler must stop at 4, whose use stays over the target (60 to
//!   90 % measured on the reference) — the peak is where "never more than the most" is
//!   put to the test (an autoscaler that forgets its maximum runs 6 or 7).
//!
//! Together with the ordinary traffic that is about a third of a core, on a machine the
//! cluster's nodes share.
//!
//! "At or under the target" allows what the autoscaler itself allows: within 10 % of its
//! target it changes nothing ([`TOLERANCE`]), and its measure is of the replicas running
//! now (it says how many it measured). How many replicas run, and how many the
//! autoscaler wants, is looked at four times a second while a step waits — even while it
//! only waits for the load to get somewhere — so a system that runs or wants more than
//! the most allowed, even for a moment between two of its own looks at the load, is
//! caught.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use cucumber::{given, then, when};

use super::{POLL, StepResult, Wait, fail, probe_spec};
use crate::driver::{AutoscaleSpec, AutoscalerStatus, DeploymentSpec, Resources};
use crate::load::{Load, Profile, Stage};
use crate::world::ConformanceWorld;

/// How far from its target an autoscaler's measure may be and still count as on target
/// (Kubernetes' `--horizontal-pod-autoscaler-tolerance`).
const TOLERANCE: f64 = 0.1;

#[given(expr = "a deployment {string} of probe replicas, each asking for {int} millicores of CPU")]
async fn asking_deployment(
    world: &mut ConformanceWorld,
    name: String,
    millicpu: u64,
) -> StepResult {
    let driver = world.driver()?;
    let spec = DeploymentSpec {
        port: Some(8080),
        requests: Resources {
            millicpu: Some(millicpu),
            memory_bytes: None,
        },
        ..probe_spec(&*driver, &name, "v1")
    };
    let namespace = world.namespace().await?;
    driver.deploy(&namespace, &spec).await?;
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
    let spec = AutoscaleSpec {
        deployment,
        min,
        max,
        cpu_percent,
        scale_down_after: Duration::from_secs(seconds),
    };
    let namespace = world.namespace().await?;
    world.driver()?.autoscale(&namespace, &spec).await?;
    world.autoscaler = Some(spec);
    Ok(())
}

#[when(
    regex = r#"^a load of requests to the service "([^"]*)", each costing (\d+) milliseconds of CPU, ((?:rises to \d+ a second over \d+ seconds, holds for \d+ seconds, )+)then stops$"#
)]
async fn load(
    world: &mut ConformanceWorld,
    service: String,
    cpu_ms: u32,
    stages: String,
) -> StepResult {
    let profile = Profile::new(cpu_ms, stages_of(&stages)?)?;
    println!(
        "      the load asks for {:.0} millicores at its peak, and stops after {} s",
        profile.peak_millicores(),
        profile.duration().as_secs()
    );
    let namespace = world.namespace().await?;
    world.load = Some(Load::start(world.driver()?, namespace, service, profile));
    Ok(())
}

/// The stages of "rises to 10 a second over 10 seconds, holds for 40 seconds, rises to
/// …", as the step's pattern has checked them: three numbers each.
fn stages_of(words: &str) -> anyhow::Result<Vec<Stage>> {
    let numbers = words
        .split(|c: char| !c.is_ascii_digit())
        .filter(|number| !number.is_empty())
        .map(|number| {
            number
                .parse::<u64>()
                .context("a number of the load's stages")
        })
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let stages = numbers.chunks_exact(3).map(|stage| Stage {
        rate: stage[0] as f64,
        ramp: Duration::from_secs(stage[1]),
        hold: Duration::from_secs(stage[2]),
    });
    Ok(stages.collect())
}

/// One look at a deployment's replicas and at its autoscaler.
struct Look {
    /// Replicas not being deleted.
    running: u32,
    /// Of those, the ready ones.
    ready: u32,
    /// What the autoscaler reports.
    autoscaler: AutoscalerStatus,
}

impl fmt::Display for Look {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let AutoscalerStatus {
            desired,
            current,
            cpu_percent,
            ..
        } = &self.autoscaler;
        write!(
            f,
            "{} replicas, {} of them ready; the autoscaler wants {desired}",
            self.running, self.ready
        )?;
        match cpu_percent {
            Some(percent) => write!(f, ", having measured {current} at {percent}% of their CPU"),
            None => write!(f, ", having measured none"),
        }
    }
}

/// Looks at `deployment`'s replicas and autoscaler; fails if the deployment runs, or its
/// autoscaler wants, more than `most` replicas.
async fn look(world: &mut ConformanceWorld, deployment: &str, most: u32) -> anyhow::Result<Look> {
    let replicas = super::placement::list(world, deployment).await?;
    let namespace = world.namespace().await?;
    let autoscaler = world
        .driver()?
        .read_autoscaler(&namespace, deployment)
        .await?;
    let running = replicas.iter().filter(|r| !r.terminating).count() as u32;
    let ready = replicas
        .iter()
        .filter(|r| r.ready && !r.terminating)
        .count() as u32;
    let look = Look {
        running,
        ready,
        autoscaler,
    };
    if running > most || look.autoscaler.desired > most {
        anyhow::bail!(
            "deployment {deployment} has more than the most replicas allowed, {most}: {look}"
        );
    }
    Ok(look)
}

/// The scenario's load.
fn load_of(world: &ConformanceWorld) -> anyhow::Result<&Load> {
    let load = world.load.as_ref();
    load.ok_or_else(|| anyhow!("no load was started earlier in this scenario"))
}

/// The scenario's autoscaler, as it was asked for.
fn autoscaler_of(world: &ConformanceWorld) -> anyhow::Result<&AutoscaleSpec> {
    let autoscaler = world.autoscaler.as_ref();
    autoscaler.ok_or_else(|| anyhow!("no autoscaler was made earlier in this scenario"))
}

/// Watches `deployment` (never more than `most` replicas) until the load has run for
/// `until`.
async fn watch_until(
    world: &mut ConformanceWorld,
    deployment: &str,
    most: u32,
    until: Duration,
) -> StepResult {
    while load_of(world)?.elapsed() < until {
        look(world, deployment, most).await?;
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Waits until the load holds at `rate`, then `seconds` for `deployment` to run replicas,
/// all ready, that `wanted` accepts (given the autoscaler's measure as a share of its
/// target) before the load leaves that rate; never more than `most`.
async fn while_holding(
    world: &mut ConformanceWorld,
    (rate, seconds): (u32, u64),
    (deployment, most): (&str, u32),
    what: String,
    wanted: impl Fn(&Look, f64) -> bool,
) -> StepResult {
    let target = f64::from(autoscaler_of(world)?.cpu_percent);
    let (from, to) = load_of(world)?
        .profile()
        .hold_at(f64::from(rate))
        .ok_or_else(|| anyhow!("the load never holds at {rate} requests a second"))?;
    watch_until(world, deployment, most, from).await?;
    let wait = Wait::new(
        seconds,
        format!("{what}, while the load holds at {rate} a second"),
    );
    loop {
        let look = look(world, deployment, most).await?;
        let load = load_of(world)?;
        // The measure counts only if it is of the replicas running now, not of fewer
        // before them.
        let measured = look.autoscaler.current == look.ready;
        let share = look.autoscaler.cpu_percent.filter(|_| measured);
        let share = share.map(|percent| f64::from(percent) / target);
        if look.running == look.ready && share.is_some_and(|share| wanted(&look, share)) {
            let into = load.elapsed().saturating_sub(from).as_secs_f64();
            wait.done(world);
            println!("      {look} ({into:.1} s into the hold at {rate} a second)");
            return Ok(());
        }
        if load.elapsed() >= to {
            fail!(
                "the load no longer holds at {rate} requests a second, and not {what}; last seen: {look}"
            );
        }
        wait.again(&look.to_string()).await?;
    }
}

#[then(
    expr = "once the load holds at {int} requests a second, within {int} seconds deployment {string} runs more than {int} ready replica(s), and never more than {int}, that use on average no more of the CPU they ask for than the autoscaler aims at"
)]
async fn grows_to_target(
    world: &mut ConformanceWorld,
    rate: u32,
    seconds: u64,
    deployment: String,
    least: u32,
    most: u32,
) -> StepResult {
    let what = format!(
        "more than {least} ready replicas of deployment {deployment}, at or under the autoscaler's target"
    );
    let wanted = |look: &Look, share: f64| look.ready > least && share <= 1.0 + TOLERANCE;
    while_holding(world, (rate, seconds), (&deployment, most), what, wanted).await
}

#[then(
    expr = "once the load holds at {int} requests a second, within {int} seconds deployment {string} runs {int} ready replica(s), and never more than {int}, that use on average more of the CPU they ask for than the autoscaler aims at"
)]
async fn stops_at_most(
    world: &mut ConformanceWorld,
    rate: u32,
    seconds: u64,
    deployment: String,
    count: u32,
    most: u32,
) -> StepResult {
    let what =
        format!("{count} ready replicas of deployment {deployment}, over the autoscaler's target");
    let wanted = |look: &Look, share: f64| look.ready == count && share > 1.0 + TOLERANCE;
    while_holding(world, (rate, seconds), (&deployment, most), what, wanted).await
}

#[then(
    expr = "once the load has stopped, within the giving-back delay and {int} more seconds deployment {string} runs {int} replica(s), and never more than {int}"
)]
async fn shrinks(
    world: &mut ConformanceWorld,
    seconds: u64,
    deployment: String,
    count: u32,
    most: u32,
) -> StepResult {
    let end = load_of(world)?.profile().duration();
    watch_until(world, &deployment, most, end).await?;
    let bound = autoscaler_of(world)?.scale_down_after.as_secs() + seconds;
    let what = format!("{count} replicas of deployment {deployment}, the others given back");
    let wait = Wait::new(bound, what);
    loop {
        let look = look(world, &deployment, most).await?;
        if look.ready == count && look.running == count {
            wait.done(world);
            println!("      {look}");
            return Ok(());
        }
        wait.again(&look.to_string()).await?;
    }
}

#[then(expr = "the load had no failed request")]
async fn load_without_failures(world: &mut ConformanceWorld) -> StepResult {
    let load = world.load.as_mut();
    let load = load.ok_or_else(|| anyhow!("no load was started earlier in this scenario"))?;
    let counts = load.finish().await;
    println!("      the load: {counts}");
    Ok(counts.none_failed("of the load")?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stages_are_read_in_order() {
        let words = "rises to 10 a second over 10 seconds, holds for 40 seconds, \
                     rises to 30 a second over 5 seconds, holds for 30 seconds, ";
        let stages = stages_of(words).expect("stages the pattern accepts");
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].rate, 10.0);
        assert_eq!(stages[0].ramp, Duration::from_secs(10));
        assert_eq!(stages[1].rate, 30.0);
        assert_eq!(stages[1].hold, Duration::from_secs(30));
    }
}
