//! Sentences about services and the traffic through them (`features/service-routing.feature`).
//!
//! A service is reached from outside the cluster through the driver
//! ([`Driver::reach_service`](crate::driver::Driver::reach_service)), one connection per
//! request, so every request is balanced anew. The probe names the replica that answered
//! (`{"pod": ...}`), which is how the steps tell where a request went.
//!
//! Two ways to send requests: a batch, sent one after the other by the step itself ("N
//! requests are sent to the service"), whose answers the following steps look at; and
//! continuous traffic in the background ([`Traffic`]), started by one step and stopped by
//! the step that checks it, so that what happens *during* a change (scaling down, a
//! replica deleted) is counted, not only its end state.

use std::collections::BTreeSet;

use anyhow::{Context as _, anyhow};
use cucumber::{given, then, when};

use super::{
    Bound, StepResult, Wait, describe_all, desired_replicas, fail, plural, probe_spec,
    wait_for_replicas,
};
use crate::driver::{
    CheckAction, DeploymentSpec, HealthCheck, HttpRequest, Phase, Replica, ServiceSpec,
};
use crate::traffic::{Counts, Traffic};
use crate::world::ConformanceWorld;

/// The port the probe listens on.
pub(super) const PROBE_PORT: u16 = 8080;

/// The port services listen on.
const SERVICE_PORT: u16 = 80;

/// How long the replicas of a deployment may take to be running and ready in a `Given`.
const START_SECONDS: u64 = 60;

/// How many answers continuous traffic must have had before the scenario changes anything.
const WARM_UP_ANSWERS: u64 = 20;

/// How long continuous traffic may take to get its first answers.
const WARM_UP_SECONDS: u64 = 15;

/// How long traffic keeps running past the bound on failures after a fault, so that
/// failures later than the bound would be seen.
const PAST_BOUND_SECONDS: u64 = 5;

// --- preconditions ------------------------------------------------------------------------

#[given(
    expr = "a deployment {string} of {int} probe replica(s) checked for readiness is running and ready"
)]
async fn ready_deployment(
    world: &mut ConformanceWorld,
    name: String,
    replicas: usize,
) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let spec = DeploymentSpec {
        replicas: u32::try_from(replicas).context("too many replicas")?,
        port: Some(PROBE_PORT),
        readiness: Some(probe_readiness()),
        ..probe_spec(&*driver, &name, "v1")
    };
    driver.deploy(&namespace, &spec).await?;
    wait_for_replicas(
        world,
        &name,
        START_SECONDS,
        &format!("{} running and ready", plural(replicas, "replica")),
        |listed| ready_count(listed, replicas),
    )
    .await?;
    Ok(())
}

#[given(expr = "a service {string} in front of deployment {string} answers within {int} seconds")]
async fn answering_service(
    world: &mut ConformanceWorld,
    name: String,
    deployment: String,
    seconds: u64,
) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let service = ServiceSpec {
        name: name.clone(),
        deployment,
        port: SERVICE_PORT,
        target_port: PROBE_PORT,
    };
    driver.expose(&namespace, &service).await?;
    world
        .fronted
        .insert(service.name.clone(), service.deployment.clone());
    let wait = Wait::new(seconds, format!("service {name} answering"));
    loop {
        match driver.reach_service(&namespace, &name, "/").await {
            Ok(_) => {
                wait.done(world);
                return Ok(());
            }
            Err(error) => wait.again(&format!("{error:#}")).await?,
        }
    }
}

// --- batches of requests ------------------------------------------------------------------

#[when(expr = "{int} requests are sent to the service {string}")]
async fn send_requests(world: &mut ConformanceWorld, count: u64, service: String) -> StepResult {
    let counts = batch(world, &service, count).await?;
    println!("      {counts}");
    world.answers = Some(counts);
    Ok(())
}

#[then(expr = "every request was answered by a replica of deployment {string}")]
async fn all_answered_by(world: &mut ConformanceWorld, deployment: String) -> StepResult {
    let counts = answers(world)?;
    if let Some(failure) = counts.failures.first() {
        fail!(
            "{} of {} requests failed; the first: {}",
            counts.failures.len(),
            counts.total(),
            failure.error
        );
    }
    let replicas = replica_names(world, &deployment).await?;
    let strangers: Vec<&String> = counts
        .by_replica
        .keys()
        .filter(|name| !replicas.contains(*name))
        .collect();
    if !strangers.is_empty() {
        fail!(
            "answers came from {strangers:?}, which are not replicas of deployment {deployment} ({replicas:?}); {counts}"
        );
    }
    Ok(())
}

#[then(expr = "no request was answered by a replica of deployment {string}")]
async fn none_answered_by(world: &mut ConformanceWorld, deployment: String) -> StepResult {
    let counts = answers(world)?;
    let replicas = replica_names(world, &deployment).await?;
    let reached: Vec<&String> = counts
        .by_replica
        .keys()
        .filter(|name| replicas.contains(*name))
        .collect();
    if !reached.is_empty() {
        fail!("replicas {reached:?} of deployment {deployment} answered; {counts}");
    }
    Ok(())
}

#[then(
    expr = "each of the {int} replicas of deployment {string} answered at least {int}% of the requests"
)]
async fn spread_evenly(
    world: &mut ConformanceWorld,
    count: usize,
    deployment: String,
    percent: u64,
) -> StepResult {
    let counts = answers(world)?;
    let replicas = replica_names(world, &deployment).await?;
    if replicas.len() != count {
        fail!(
            "deployment {deployment} has {} replicas ({replicas:?}), expected {count}",
            replicas.len()
        );
    }
    let total = counts.total();
    let short: Vec<String> = replicas
        .iter()
        .filter_map(|name| {
            let answered = counts.by_replica.get(name).copied().unwrap_or(0);
            (answered * 100 < total * percent).then(|| format!("{name} answered {answered}"))
        })
        .collect();
    if !short.is_empty() {
        fail!(
            "not every replica answered at least {percent}% of {total} requests: {}; {counts}",
            short.join(", ")
        );
    }
    Ok(())
}

// --- readiness ----------------------------------------------------------------------------

#[when(expr = "the readiness check of one replica of deployment {string} starts failing")]
async fn fail_readiness(world: &mut ConformanceWorld, deployment: String) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let replicas = driver.list_replicas(&namespace, &deployment).await?;
    let victim = first_ready(&replicas, &deployment)?;
    let request = HttpRequest {
        method: "POST".to_owned(),
        path: "/fail/readiness".to_owned(),
        body: String::new(),
    };
    let answer = driver
        .request_replica(&namespace, &victim.name, PROBE_PORT, &request)
        .await?;
    if answer.status != 200 {
        fail!(
            "replica {} answered POST /fail/readiness with {}: {:?}",
            victim.name,
            answer.status,
            answer.body
        );
    }
    println!("      the readiness check of {} now fails", victim.name);
    world.victim = Some(victim);
    Ok(())
}

#[then(
    expr = "within {int} seconds none of {int} requests to the service {string} reaches that replica"
)]
async fn victim_unreached(
    world: &mut ConformanceWorld,
    seconds: u64,
    count: u64,
    service: String,
) -> StepResult {
    let victim = world
        .victim
        .clone()
        .ok_or_else(|| anyhow!("no replica was picked earlier in this scenario"))?
        .name;
    let wait = Wait::new(
        seconds,
        format!("service {service} sending no request to the not-ready replica {victim}"),
    );
    loop {
        let counts = batch(world, &service, count).await?;
        let reached = counts.by_replica.get(&victim).copied().unwrap_or(0);
        if reached == 0 && counts.failures.is_empty() {
            wait.done(world);
            println!("      {counts}");
            return Ok(());
        }
        let last = format!("{victim} answered {reached}; {counts}");
        wait.again(&last).await?;
    }
}

// --- new replicas -------------------------------------------------------------------------

#[then(
    expr = "within {int} seconds every replica of deployment {string} answers through the service {string}"
)]
async fn every_replica_answers(
    world: &mut ConformanceWorld,
    seconds: u64,
    deployment: String,
    service: String,
) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let desired = desired_replicas(world, &deployment).await?;
    let wait = Wait::new(
        seconds,
        format!(
            "every one of the {desired} replicas of deployment {deployment} answering through service {service}"
        ),
    );
    let mut seen: BTreeSet<String> = BTreeSet::new();
    loop {
        let replicas: Vec<Replica> = driver
            .list_replicas(&namespace, &deployment)
            .await?
            .into_iter()
            .filter(|replica| !replica.terminating)
            .collect();
        let counts = batch(world, &service, u64::from(desired) * 4).await?;
        seen.extend(counts.by_replica.keys().cloned());
        let silent: Vec<&str> = replicas
            .iter()
            .filter(|replica| !seen.contains(&replica.name))
            .map(|replica| replica.name.as_str())
            .collect();
        if replicas.len() == desired as usize && silent.is_empty() {
            wait.done(world);
            return Ok(());
        }
        let last = format!(
            "{} listed ({}), not yet answering: {silent:?}; last batch: {counts}",
            replicas.len(),
            describe_all(&replicas)
        );
        wait.again(&last).await?;
    }
}

// --- a request in flight while its replica is deleted --------------------------------------

#[when(expr = "a request that takes {int} seconds is sent to one replica of deployment {string}")]
async fn long_request(
    world: &mut ConformanceWorld,
    seconds: u64,
    deployment: String,
) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let replicas = driver.list_replicas(&namespace, &deployment).await?;
    let replica = first_ready(&replicas, &deployment)?;
    let request = HttpRequest {
        method: "GET".to_owned(),
        path: format!("/?sleep={seconds}"),
        body: String::new(),
    };
    let name = replica.name.clone();
    let task = tokio::spawn(async move {
        driver
            .request_replica(&namespace, &name, PROBE_PORT, &request)
            .await
    });
    // Let the request reach the replica before anything else happens.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    println!(
        "      a {seconds} s request is in flight to {}",
        replica.name
    );
    world.request_in_flight = Some((replica, task));
    Ok(())
}

#[when("that replica is deleted while it answers")]
async fn delete_answering_replica(world: &mut ConformanceWorld) -> StepResult {
    let replica = world
        .request_in_flight
        .as_ref()
        .map(|(replica, _)| replica.clone())
        .ok_or_else(|| anyhow!("no request was sent to a replica earlier in this scenario"))?;
    let fault = crate::driver::Fault::DeleteReplica {
        namespace: world.namespace().await?,
        replica: replica.name.clone(),
    };
    let driver = world.driver()?;
    world.fault_injected(&fault);
    driver.inject(&fault).await?;
    world.victim = Some(replica);
    Ok(())
}

#[then(expr = "within {int} seconds the request was answered in full")]
async fn answered_in_full(world: &mut ConformanceWorld, seconds: u64) -> StepResult {
    let (replica, task) = world
        .request_in_flight
        .take()
        .ok_or_else(|| anyhow!("no request was sent to a replica earlier in this scenario"))?;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(seconds), task)
        .await
        .map_err(|_| {
            anyhow!(
                "the request to {} got no answer within {seconds} s",
                replica.name
            )
        })?
        .context("the request's task failed")?
        .with_context(|| format!("the request to {} was not answered", replica.name))?;
    let named = crate::traffic::replica_of(&answer.body);
    if answer.status != 200 || named != replica.name {
        fail!(
            "the request to {} was answered {} by {named:?}: {:?}",
            replica.name,
            answer.status,
            answer.body
        );
    }
    println!("      answered in full by {}", replica.name);
    Ok(())
}

// --- continuous traffic -------------------------------------------------------------------

#[given(expr = "continuous traffic to the service {string} is being answered")]
async fn start_traffic(world: &mut ConformanceWorld, service: String) -> StepResult {
    let namespace = world.namespace().await?;
    if let Some(deployment) = world.fronted.get(&service).cloned() {
        world.watch(&deployment).await?;
    }
    let traffic = Traffic::start(world.driver()?, namespace, service.clone());
    let wait = Wait::new(
        WARM_UP_SECONDS,
        format!("{WARM_UP_ANSWERS} answers to the traffic to service {service}"),
    );
    loop {
        let counts = traffic.counts();
        if counts.successes >= WARM_UP_ANSWERS {
            wait.done(world);
            break;
        }
        wait.again(&counts.to_string()).await?;
    }
    world.traffic = Some(traffic);
    Ok(())
}

#[then(
    expr = "the traffic to the service {string} stays free of failed requests for {int} more seconds"
)]
async fn traffic_stays_clean(
    world: &mut ConformanceWorld,
    service: String,
    seconds: u64,
) -> StepResult {
    let traffic = world
        .traffic
        .as_ref()
        .ok_or_else(|| anyhow!("no traffic was started earlier in this scenario"))?;
    let started = std::time::Instant::now();
    let bound = std::time::Duration::from_secs(seconds);
    while started.elapsed() < bound {
        let counts = traffic.counts();
        if let Some(failure) = counts.failures.first() {
            fail!(
                "a request to service {service} failed at {:.1} s of the traffic: {}; {counts}",
                failure.at.as_secs_f64(),
                failure.error
            );
        }
        tokio::time::sleep(super::POLL).await;
    }
    Ok(())
}

#[then(expr = "the traffic to the service {string} had no failed request")]
async fn traffic_without_failures(world: &mut ConformanceWorld, service: String) -> StepResult {
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
    Ok(counts.none_failed(&format!("to service {service}"))?)
}

/// Failures are allowed for the bound after the fault the scenario injected last (losing a
/// node), none later, and none before it. Connections to the lost node's replicas fail
/// until the service's endpoints drop them, which happens once the system declares the
/// node lost (the node grace period of the profile); the scenario allows 10 s more for
/// the endpoints to be updated and for polling.
///
/// The traffic is kept running until `seconds` + [`PAST_BOUND_SECONDS`] after the fault,
/// so the bound is checked against traffic that outlived it; then it is stopped and its
/// counts reported.
#[then(
    expr = "no request to the service {string} failed more than {bound} after the node was lost"
)]
async fn failures_only_after_loss(
    world: &mut ConformanceWorld,
    service: String,
    bound: Bound,
) -> StepResult {
    let seconds = bound.resolve(world)?;
    let (fault, fault_at) = world
        .last_fault()
        .ok_or_else(|| anyhow!("no fault was injected earlier in this scenario"))?;
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
    let bound = std::time::Duration::from_secs(seconds);
    let until = fault_at + bound + std::time::Duration::from_secs(PAST_BOUND_SECONDS);
    if let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        tokio::time::sleep(left).await;
    }
    let started = traffic.started();
    let counts = traffic.stop().await;
    println!("      traffic: {counts}");
    // When each failure happened, in seconds after the fault (negative: before it).
    let after_fault = |failure: &crate::traffic::Failure| {
        let at = started + failure.at;
        match at.checked_duration_since(fault_at) {
            Some(after) => after.as_secs_f64(),
            None => -fault_at.duration_since(at).as_secs_f64(),
        }
    };
    if let (Some(first), Some(last)) = (counts.failures.first(), counts.failures.last()) {
        println!(
            "      failures from {:.1} s to {:.1} s after: {fault}",
            after_fault(first),
            after_fault(last)
        );
    }
    let late: Vec<String> = counts
        .failures
        .iter()
        .filter(|failure| {
            let after = after_fault(failure);
            after < 0.0 || after > bound.as_secs_f64()
        })
        .take(5)
        .map(|failure| {
            format!(
                "at {:.1} s after the fault: {}",
                after_fault(failure),
                failure.error
            )
        })
        .collect();
    if !late.is_empty() {
        fail!(
            "requests to service {service} failed outside the {seconds} s after {fault}: {}; {counts}",
            late.join("; ")
        );
    }
    Ok(())
}

// --- helpers ------------------------------------------------------------------------------

/// Sends `count` requests to a service, one after the other, each on a connection of its
/// own, and counts the answers.
pub(super) async fn batch(
    world: &mut ConformanceWorld,
    service: &str,
    count: u64,
) -> anyhow::Result<Counts> {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let started = std::time::Instant::now();
    let mut counts = Counts::default();
    for _ in 0..count {
        match driver.reach_service(&namespace, service, "/").await {
            Ok(body) => counts.answered(&body),
            Err(error) => counts.failures.push(crate::traffic::Failure {
                at: started.elapsed(),
                error: format!("{error:#}"),
            }),
        }
    }
    counts.ran = started.elapsed();
    Ok(counts)
}

/// The probe's readiness check: checked every second, out of service at the first
/// failure, so a replica that stops being ready leaves the rotation quickly.
pub(super) fn probe_readiness() -> HealthCheck {
    HealthCheck {
        action: CheckAction::HttpGet {
            port: PROBE_PORT,
            path: "/ready".to_owned(),
        },
        period_seconds: 1,
        failure_threshold: 1,
    }
}

/// The answers to the last batch of requests.
fn answers(world: &ConformanceWorld) -> anyhow::Result<Counts> {
    world
        .answers
        .clone()
        .ok_or_else(|| anyhow!("no requests were sent earlier in this scenario"))
}

/// The names of a deployment's replicas (terminating ones too: they may still answer).
async fn replica_names(
    world: &mut ConformanceWorld,
    deployment: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let namespace = world.namespace().await?;
    let replicas = world
        .driver()?
        .list_replicas(&namespace, deployment)
        .await?;
    Ok(replicas.into_iter().map(|replica| replica.name).collect())
}

/// Whether exactly `count` replicas are listed, all running, ready and staying.
fn ready_count(replicas: &[Replica], count: usize) -> Result<(), String> {
    let ready = replicas
        .iter()
        .filter(|replica| replica.phase == Phase::Running && replica.ready && !replica.terminating)
        .count();
    if replicas.len() == count && ready == count {
        Ok(())
    } else {
        Err(describe_all(replicas))
    }
}

/// The ready replica of `deployment` that sorts first by name: the same one on every run,
/// so a scenario's victim does not depend on listing order.
fn first_ready(replicas: &[Replica], deployment: &str) -> anyhow::Result<Replica> {
    replicas
        .iter()
        .filter(|replica| replica.phase == Phase::Running && replica.ready && !replica.terminating)
        .min_by(|a, b| a.name.cmp(&b.name))
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "deployment {deployment} has no ready replica: {}",
                describe_all(replicas)
            )
        })
}
