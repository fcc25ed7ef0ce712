//! Sentences about rollouts and rollbacks (`features/rollback.feature`).
//!
//! A deployment keeps a history: each template it has had is one revision. Changing the
//! template (a new image, a new environment) rolls the replicas over to it by the
//! deployment's strategy — a rolling update bounded by `maxSurge` and `maxUnavailable`,
//! or `Recreate`, all old replicas gone before any new one starts — and rolling back
//! brings an old template back. Every step speaks through the driver
//! ([`Driver::update_image`], [`Driver::set_env`], [`Driver::rollout_status`],
//! [`Driver::history`], [`Driver::roll_back`]): a Kubernetes driver does what `kubectl set
//! image`, `rollout status`, `rollout history` and `rollout undo` do, another system what
//! it has for the same.
//!
//! What a rollout promises is checked while it happens: the traffic generator counts
//! failed requests and which version answered, in order; the availability monitor
//! ([`Availability`]) samples the deployment's replicas and keeps the fewest available and
//! the most templates running at once. And "back to v1" is judged by what the replicas
//! answer through the service, not by what the spec says.
//!
//! [`Driver::update_image`]: crate::driver::Driver::update_image
//! [`Driver::set_env`]: crate::driver::Driver::set_env
//! [`Driver::rollout_status`]: crate::driver::Driver::rollout_status
//! [`Driver::history`]: crate::driver::Driver::history
//! [`Driver::roll_back`]: crate::driver::Driver::roll_back

use std::collections::BTreeSet;

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow, bail};
use cucumber::gherkin::Step;
use cucumber::{given, then, when};

use super::routing::{PROBE_PORT, batch, probe_readiness};
use super::{
    StepResult, Wait, describe_all, desired_replicas, fail, grace_for, probe_spec, stopping_after,
};
use crate::driver::{DeploymentSpec, Driver, Revision, Rollout, RolloutStatus, Strategy};
use crate::traffic::Availability;
use crate::world::ConformanceWorld;

/// How long a deployment created by a `Given` may take to be rolled out.
const START_SECONDS: u64 = 60;

/// How long the availability monitor may take to have its first sample.
const MONITOR_START_SECONDS: u64 = 10;

/// The share of the monitor's looks that may fail (the API not answering a list) before
/// its minimum no longer says anything: one in ten.
const MONITOR_MISSES_PER_LOOK: u64 = 10;

/// The environment variable a template change sets, to a new value each time.
const CHANGE_VARIABLE: &str = "ROUND";

/// The versions of the probe image the kit has; a ReplicaSet is reported by version when
/// its image is one of them.
const PROBE_VERSIONS: [&str; 3] = ["v1", "v2", "broken"];

// --- deployments with a rollout strategy ----------------------------------------------

/// Creates a deployment of probe replicas, checked for readiness, with the rollout
/// settings of the step's table (one `| setting | value |` row each: `strategy`,
/// `maxSurge`, `maxUnavailable`, `minReadySeconds`, `progressDeadlineSeconds`,
/// `revisionHistoryLimit`), and waits until it is rolled out.
#[given(
    expr = "a deployment {string} of {int} probe replicas of version {word} is rolled out, with:"
)]
async fn rolled_out_deployment(
    world: &mut ConformanceWorld,
    #[step] step: &Step,
    name: String,
    replicas: u32,
    version: String,
) -> StepResult {
    roll_out(world, step, name, replicas, version, None).await
}

/// Like the step above, with replicas that take `stop` seconds to stop after SIGTERM (and
/// are given the time to).
#[given(
    expr = "a deployment {string} of {int} probe replicas of version {word}, that take {int} seconds to stop, is rolled out, with:"
)]
async fn rolled_out_slow_stopping_deployment(
    world: &mut ConformanceWorld,
    #[step] step: &Step,
    name: String,
    replicas: u32,
    version: String,
    stop: u32,
) -> StepResult {
    roll_out(world, step, name, replicas, version, Some(stop)).await
}

/// Deploys and waits until rolled out; `stop`: seconds each replica takes to stop.
async fn roll_out(
    world: &mut ConformanceWorld,
    step: &Step,
    name: String,
    replicas: u32,
    version: String,
    stop: Option<u32>,
) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let table = step
        .table
        .as_ref()
        .ok_or_else(|| anyhow!("the step needs a table of rollout settings"))?;
    let rollout = configure(&table.rows)
        .with_context(|| format!("bad rollout settings for deployment {name}"))?;
    let mut spec = DeploymentSpec {
        replicas,
        port: Some(PROBE_PORT),
        readiness: Some(probe_readiness()),
        rollout,
        ..probe_spec(&*driver, &name, &version)
    };
    if let Some(stop) = stop {
        spec = stopping_after(spec, stop, grace_for(stop));
    }
    driver.deploy(&namespace, &spec).await?;
    wait_rolled_out(world, &name, START_SECONDS).await?;
    Ok(())
}

#[when(expr = "the deployment {string} is updated to version {word}")]
async fn update_to(world: &mut ConformanceWorld, name: String, version: String) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let image = driver.probe_image(&version);
    driver.update_image(&namespace, &name, &image).await?;
    Ok(())
}

#[when(expr = "the deployment {string} is rolled back")]
async fn roll_back(world: &mut ConformanceWorld, name: String) -> StepResult {
    let namespace = world.namespace().await?;
    world
        .driver()?
        .roll_back(&namespace, &name, Revision::Previous)
        .await?;
    Ok(())
}

#[when(expr = "the deployment {string} is rolled back to revision {int}")]
async fn roll_back_to(world: &mut ConformanceWorld, name: String, revision: u64) -> StepResult {
    let namespace = world.namespace().await?;
    world
        .driver()?
        .roll_back(&namespace, &name, Revision::Number(revision))
        .await?;
    Ok(())
}

/// Changes the pod template without changing its image — as `kubectl set env` would, by
/// giving the container an environment variable with a new value each time — and waits
/// for each change to be rolled out before the next.
#[when(
    expr = "the pod template of deployment {string} is changed {int} time(s), each change rolled out within {int} seconds"
)]
async fn change_template(
    world: &mut ConformanceWorld,
    name: String,
    times: u32,
    seconds: u64,
) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    for _ in 0..times {
        world.template_changes += 1;
        let value = world.template_changes.to_string();
        driver
            .set_env(&namespace, &name, CHANGE_VARIABLE, &value)
            .await?;
        wait_rolled_out(world, &name, seconds).await?;
    }
    Ok(())
}

// --- rollout status -----------------------------------------------------------------------

#[then(expr = "within {int} seconds the rollout of deployment {string} is complete")]
async fn rollout_complete(world: &mut ConformanceWorld, seconds: u64, name: String) -> StepResult {
    wait_rolled_out(world, &name, seconds).await?;
    Ok(())
}

#[then(expr = "within {int} seconds the deployment {string} reports that its rollout has stalled")]
async fn rollout_stalled(world: &mut ConformanceWorld, seconds: u64, name: String) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let wait = Wait::new(
        seconds,
        format!("deployment {name} reporting its rollout stalled"),
    );
    loop {
        let last = match driver.rollout_status(&namespace, &name).await {
            Ok(RolloutStatus::Stalled(why)) => {
                wait.done(world);
                println!("      {why}");
                return Ok(());
            }
            Ok(RolloutStatus::Complete) => "the rollout is complete".to_owned(),
            Ok(RolloutStatus::InProgress(why)) => format!("in progress: {why}"),
            Err(error) => format!("{error:#}"),
        };
        wait.again(&last).await?;
    }
}

// --- history --------------------------------------------------------------------------

/// The history as `kubectl rollout history` shows it — the ReplicaSets the deployment
/// owns, by revision — with the version each runs; the table's header row names the
/// columns `revision` and `version`.
#[then(expr = "within {int} seconds the history of deployment {string} is:")]
async fn history_is(
    world: &mut ConformanceWorld,
    #[step] step: &Step,
    seconds: u64,
    name: String,
) -> StepResult {
    let table = step
        .table
        .as_ref()
        .ok_or_else(|| anyhow!("the step needs a table of revisions and versions"))?;
    let expected = expected_history(&table.rows)?;
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let wait = Wait::new(seconds, format!("history of deployment {name} as expected"));
    loop {
        let last = match driver.history(&namespace, &name).await {
            Ok(history) => {
                let seen: Vec<(u64, String)> = history
                    .iter()
                    .map(|entry| (entry.number, version_of(&entry.image, driver.as_ref())))
                    .collect();
                if seen == expected {
                    wait.done(world);
                    println!("      REVISION  VERSION  CHANGE-CAUSE");
                    for (entry, (_, version)) in history.iter().zip(&seen) {
                        println!(
                            "      {:<8}  {:<7}  {}",
                            entry.number,
                            version,
                            entry.change_cause.as_deref().unwrap_or("<none>")
                        );
                    }
                    return Ok(());
                }
                format!("{seen:?}, expected {expected:?}")
            }
            Err(error) => format!("{error:#}"),
        };
        wait.again(&last).await?;
    }
}

/// Waits until the deployment's replicas (those not being deleted) are, by the version
/// they run, as many as the table says (header `version | replicas`): the upstream
/// end-to-end test waits for each ReplicaSet to ask for and have that many.
#[then(expr = "within {int} seconds the replicas of deployment {string} are, by version:")]
async fn replicas_by_version(
    world: &mut ConformanceWorld,
    #[step] step: &Step,
    seconds: u64,
    name: String,
) -> StepResult {
    let table = step
        .table
        .as_ref()
        .ok_or_else(|| anyhow!("the step needs a table of versions and replicas"))?;
    let expected: BTreeMap<String, usize> = table
        .rows
        .iter()
        .skip(1)
        .map(|row| match row.as_slice() {
            [version, replicas] => Ok((
                version.clone(),
                replicas
                    .parse()
                    .with_context(|| format!("{replicas:?} is not a number of replicas"))?,
            )),
            _ => bail!("each row needs a version and a number of replicas: {row:?}"),
        })
        .collect::<anyhow::Result<_>>()?;
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let wait = Wait::new(
        seconds,
        format!("the replicas of deployment {name} by version {expected:?}"),
    );
    loop {
        let last = match driver.list_replicas(&namespace, &name).await {
            Ok(replicas) => {
                let mut by_version: BTreeMap<String, usize> = BTreeMap::new();
                for replica in replicas.iter().filter(|replica| !replica.terminating) {
                    let image = replica.image.as_deref().unwrap_or("?");
                    *by_version
                        .entry(version_of(image, driver.as_ref()))
                        .or_default() += 1;
                }
                if by_version == expected {
                    wait.done(world);
                    return Ok(());
                }
                format!("{by_version:?}")
            }
            Err(error) => format!("{error:#}"),
        };
        wait.again(&last).await?;
    }
}

// --- what the replicas answer -----------------------------------------------------------

/// Sends batches of requests through the service until a whole batch is answered, without
/// a failure, by the version named only, and every ready replica of the deployment (at
/// least as many as it should have) has answered as that version.
#[then(
    expr = "within {int} seconds the service {string} answers only as version {word}, from each ready replica of deployment {string}"
)]
async fn answers_only_as(
    world: &mut ConformanceWorld,
    seconds: u64,
    service: String,
    version: String,
    deployment: String,
) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let desired = desired_replicas(world, &deployment).await?;
    let wait = Wait::new(
        seconds,
        format!(
            "service {service} answering only as version {version}, from each ready replica of deployment {deployment}"
        ),
    );
    // Replicas seen answering as the version; a replica's version never changes.
    let mut answered_as: BTreeSet<String> = BTreeSet::new();
    loop {
        let counts = batch(world, &service, u64::from(desired).max(5) * 4).await?;
        let only_version = counts
            .by_version
            .keys()
            .all(|answered| *answered == version)
            && counts.successes > 0;
        if only_version {
            answered_as.extend(counts.by_replica.keys().cloned());
        }
        let replicas = driver.list_replicas(&namespace, &deployment).await?;
        let ready: Vec<&str> = replicas
            .iter()
            .filter(|replica| replica.ready && !replica.terminating)
            .map(|replica| replica.name.as_str())
            .collect();
        let silent: Vec<&str> = ready
            .iter()
            .copied()
            .filter(|name| !answered_as.contains(*name))
            .collect();
        let enough = ready.len() >= desired as usize;
        if only_version && counts.failures.is_empty() && enough && silent.is_empty() {
            wait.done(world);
            println!("      {counts}");
            return Ok(());
        }
        let last = format!(
            "last batch: {counts}; {} ready of {desired}; not yet heard as {version}: {silent:?}; replicas: {}",
            ready.len(),
            describe_all(&replicas)
        );
        wait.again(&last).await?;
    }
}

/// Stops the traffic and checks the order in which versions answered: all of the first,
/// then all of the second — never both in turn, never back. Failed requests are allowed
/// (a `Recreate` rollout has downtime by design), and reported.
#[then(
    expr = "the answers of the service {string} went over from version {word} to version {word} once, and never back"
)]
async fn versions_switched_once(
    world: &mut ConformanceWorld,
    service: String,
    from: String,
    to: String,
) -> StepResult {
    let traffic = world
        .traffic
        .as_mut()
        .ok_or_else(|| anyhow!("no traffic was started earlier in this scenario"))?;
    if traffic.service() != service {
        fail!(
            "the traffic of this scenario goes to service {}, not {service}",
            traffic.service()
        );
    }
    let counts = traffic.stop().await;
    println!("      traffic: {counts}");
    println!("      versions in order: {}", counts.version_sequence());
    if let (Some(first), Some(last)) = (counts.failures.first(), counts.failures.last()) {
        println!(
            "      {} failed requests, from {:.1} s to {:.1} s",
            counts.failures.len(),
            first.at.as_secs_f64(),
            last.at.as_secs_f64()
        );
    }
    let order: Vec<&str> = counts
        .versions
        .iter()
        .map(|run| run.version.as_str())
        .collect();
    if order != [from.as_str(), to.as_str()] {
        fail!(
            "service {service} should have answered as {from}, then as {to} only; it answered: {}",
            counts.version_sequence()
        );
    }
    Ok(())
}

// --- the availability monitor -----------------------------------------------------------

#[given(expr = "the availability of deployment {string} is being monitored")]
async fn start_monitor(world: &mut ConformanceWorld, deployment: String) -> StepResult {
    start_monitoring(world, &deployment).await?;
    Ok(())
}

/// Starts the scenario's availability monitor on a deployment (unless it already watches
/// it) and waits for its first sample.
async fn start_monitoring(world: &mut ConformanceWorld, deployment: &str) -> anyhow::Result<()> {
    if let Some(monitor) = &world.monitor
        && monitor.deployment() != deployment
    {
        bail!(
            "the availability monitor of this scenario watches deployment {}, not {deployment}",
            monitor.deployment()
        );
    }
    world.watch(deployment).await?;
    let wait = Wait::new(
        MONITOR_START_SECONDS,
        format!("a first look at the replicas of deployment {deployment}"),
    );
    loop {
        let seen = world
            .monitor
            .as_ref()
            .map(Availability::seen)
            .unwrap_or_default();
        if seen.samples > 0 {
            wait.done(world);
            return Ok(());
        }
        wait.again(&seen.to_string()).await?;
    }
}

#[then(expr = "at no time had the deployment {string} fewer than {int} available replicas")]
async fn never_fewer_available(
    world: &mut ConformanceWorld,
    deployment: String,
    minimum: usize,
) -> StepResult {
    let seen = monitored(world, &deployment)?;
    let Some(lowest) = &seen.lowest else {
        fail!("the monitor took no sample of deployment {deployment}: {seen}");
    };
    if lowest.available < minimum {
        fail!(
            "at {:.1} s of the monitor, deployment {deployment} had {} available replicas, fewer than {minimum}: {}",
            lowest.at.as_secs_f64(),
            lowest.available,
            lowest.replicas
        );
    }
    Ok(())
}

#[then(expr = "at no time did replicas of two versions of deployment {string} run at once")]
async fn never_two_versions(world: &mut ConformanceWorld, deployment: String) -> StepResult {
    let seen = monitored(world, &deployment)?;
    let Some(most) = &seen.most_templates else {
        fail!("the monitor took no sample of deployment {deployment}: {seen}");
    };
    if most.templates_running > 1 {
        fail!(
            "at {:.1} s of the monitor, replicas of {} templates of deployment {deployment} were running at once: {}",
            most.at.as_secs_f64(),
            most.templates_running,
            most.replicas
        );
    }
    Ok(())
}

// --- helpers ------------------------------------------------------------------------------

/// Waits until the rollout of a deployment is complete, for at most `seconds`, and
/// records the time it took; fails at once if the system says the rollout stalled.
async fn wait_rolled_out(
    world: &mut ConformanceWorld,
    name: &str,
    seconds: u64,
) -> anyhow::Result<()> {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let wait = Wait::new(seconds, format!("rollout of deployment {name} complete"));
    loop {
        let last = match driver.rollout_status(&namespace, name).await {
            Ok(RolloutStatus::Complete) => {
                wait.done(world);
                return Ok(());
            }
            Ok(RolloutStatus::Stalled(why)) => {
                bail!("the rollout of deployment {name} stalled: {why}")
            }
            Ok(RolloutStatus::InProgress(why)) => why,
            Err(error) => format!("{error:#}"),
        };
        wait.again(&last).await?;
    }
}

/// Rollout settings from `| setting | value |` rows: `strategy` (`RollingUpdate` or
/// `Recreate`), `maxSurge`, `maxUnavailable` (a count or a percentage), `minReadySeconds`,
/// `progressDeadlineSeconds`, `revisionHistoryLimit`.
fn configure(rows: &[Vec<String>]) -> anyhow::Result<Rollout> {
    let mut rollout = Rollout::default();
    let mut recreate = false;
    let (mut max_surge, mut max_unavailable) = (None, None);
    let number = |value: &str| -> anyhow::Result<u32> {
        value
            .parse()
            .with_context(|| format!("{value:?} is not a whole number"))
    };
    for row in rows {
        let [setting, value] = row.as_slice() else {
            bail!("each row needs a setting and a value: {row:?}");
        };
        match setting.as_str() {
            "strategy" => match value.as_str() {
                "RollingUpdate" => recreate = false,
                "Recreate" => recreate = true,
                other => bail!("unknown strategy {other:?}; expected RollingUpdate or Recreate"),
            },
            "maxSurge" => max_surge = Some(value.parse()?),
            "maxUnavailable" => max_unavailable = Some(value.parse()?),
            "minReadySeconds" => rollout.min_ready_seconds = Some(number(value)?),
            "progressDeadlineSeconds" => rollout.progress_deadline_seconds = Some(number(value)?),
            "revisionHistoryLimit" => rollout.revision_history_limit = Some(number(value)?),
            other => bail!(
                "unknown rollout setting {other:?}; expected strategy, maxSurge, maxUnavailable, minReadySeconds, progressDeadlineSeconds or revisionHistoryLimit"
            ),
        }
    }
    let rolling = max_surge.is_some() || max_unavailable.is_some();
    rollout.strategy = match (recreate, rolling) {
        (true, true) => {
            bail!("maxSurge and maxUnavailable go with the RollingUpdate strategy, not Recreate")
        }
        (true, false) => Some(Strategy::Recreate),
        (false, true) => Some(Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        }),
        (false, false) => None,
    };
    Ok(rollout)
}

/// The `| revision | version |` rows of a history table, after its header.
fn expected_history(rows: &[Vec<String>]) -> anyhow::Result<Vec<(u64, String)>> {
    match rows.first().map(Vec::as_slice) {
        Some([revision, version]) if revision == "revision" && version == "version" => {}
        header => {
            bail!("the history table's header should be | revision | version |, not {header:?}")
        }
    }
    rows.iter()
        .skip(1)
        .map(|row| match row.as_slice() {
            [revision, version] => Ok((
                revision
                    .parse()
                    .with_context(|| format!("{revision:?} is not a revision number"))?,
                version.clone(),
            )),
            _ => bail!("each row needs a revision and a version: {row:?}"),
        })
        .collect()
}

/// The probe version an image is, or the image itself if it is no probe's.
fn version_of(image: &str, driver: &dyn Driver) -> String {
    PROBE_VERSIONS
        .iter()
        .find(|version| driver.probe_image(version) == image)
        .map_or_else(|| image.to_owned(), |version| (*version).to_owned())
}

/// What the scenario's availability monitor has seen of `deployment`, printed.
fn monitored(world: &ConformanceWorld, deployment: &str) -> anyhow::Result<crate::traffic::Seen> {
    let monitor = world
        .monitor
        .as_ref()
        .ok_or_else(|| anyhow!("no availability monitor was started earlier in this scenario"))?;
    if monitor.deployment() != deployment {
        bail!(
            "the availability monitor of this scenario watches deployment {}, not {deployment}",
            monitor.deployment()
        );
    }
    let seen = monitor.seen();
    println!("      availability: {seen}");
    if seen.errors * MONITOR_MISSES_PER_LOOK > seen.samples {
        bail!("the availability monitor could not look often enough to tell: {seen}");
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Amount;

    #[test]
    fn rollout_settings_fill_the_strategy() {
        let rows = |pairs: &[(&str, &str)]| -> Vec<Vec<String>> {
            pairs
                .iter()
                .map(|(key, value)| vec![(*key).to_owned(), (*value).to_owned()])
                .collect()
        };
        let rollout = configure(&rows(&[
            ("maxSurge", "25%"),
            ("maxUnavailable", "0"),
            ("progressDeadlineSeconds", "10"),
        ]))
        .expect("settings");
        assert_eq!(
            rollout.strategy,
            Some(Strategy::RollingUpdate {
                max_surge: Some(Amount::Percent(25)),
                max_unavailable: Some(Amount::Count(0)),
            })
        );
        assert_eq!(rollout.progress_deadline_seconds, Some(10));
        assert_eq!(
            configure(&rows(&[("strategy", "Recreate")]))
                .expect("settings")
                .strategy,
            Some(Strategy::Recreate)
        );
        assert!(configure(&rows(&[("strategy", "Recreate"), ("maxSurge", "1")])).is_err());
        assert!(configure(&rows(&[("surge", "1")])).is_err());
        assert!(configure(&rows(&[("maxSurge", "lots")])).is_err());
    }

    #[test]
    fn history_tables_parse() {
        let rows = |cells: &[&[&str]]| -> Vec<Vec<String>> {
            cells
                .iter()
                .map(|row| row.iter().map(|cell| (*cell).to_owned()).collect())
                .collect()
        };
        let table = rows(&[&["revision", "version"], &["1", "v1"], &["2", "v2"]]);
        assert_eq!(
            expected_history(&table).expect("history"),
            [(1, "v1".to_owned()), (2, "v2".to_owned())]
        );
        assert!(expected_history(&rows(&[&["1", "v1"]])).is_err());
        assert!(expected_history(&rows(&[&["revision", "version"], &["one", "v1"]])).is_err());
    }
}
