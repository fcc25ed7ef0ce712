//! Sentences about rollouts and rollbacks (`features/rollback.feature`).
//!
//! A deployment keeps a history: each pod template it has had is one ReplicaSet it owns,
//! numbered by the annotation `deployment.kubernetes.io/revision`. Changing the template
//! (a new image) rolls the replicas over to a new ReplicaSet, by the deployment's
//! strategy — `RollingUpdate`, bounded by `maxSurge` and `maxUnavailable`, or `Recreate`,
//! all old replicas gone before any new one starts — and rolling back copies an old
//! template back. These steps do, through the Kubernetes API, exactly what `kubectl` does
//! on the client side, so any system that speaks the API is judged the same way:
//!
//! - *set image* is a strategic merge patch of the container's image
//!   ([`Driver::update_image`](crate::driver::Driver::update_image), done by
//!   [`kubeapi::update_image`]);
//! - *rollout undo* finds the ReplicaSet of the wanted revision among those the
//!   deployment owns and JSON-patches its template back into the deployment
//!   ([`Driver::roll_back`](crate::driver::Driver::roll_back), done by
//!   [`kubeapi::roll_back`]);
//! - *rollout history* lists the owned ReplicaSets by revision;
//! - *rollout status* applies kubectl's rule for "complete" ([`progress`]).
//!
//! What a rollout promises is checked while it happens: the traffic generator counts
//! failed requests and which version answered, in order; the availability monitor
//! ([`Availability`]) samples the deployment's pods and keeps the fewest available and
//! the most templates running at once. And "back to v1" is judged by what the replicas
//! answer through the service, not by what the spec says.

use std::collections::BTreeSet;

use anyhow::{Context as _, anyhow, bail};
use cucumber::gherkin::Step;
use cucumber::{given, then, when};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};

use super::routing::{PROBE_PORT, batch, probe_readiness};
use super::{StepResult, Wait, describe_all, desired_replicas, fail};
use crate::driver::{DeploymentSpec, Revision};
use crate::kubeapi;
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
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let spec = DeploymentSpec {
        name: name.clone(),
        image: driver.probe_image(&version),
        replicas,
        labels: [("app".to_owned(), name.clone())].into(),
        port: Some(PROBE_PORT),
        readiness: Some(probe_readiness()),
        ..DeploymentSpec::default()
    };
    let mut deployment = kubeapi::deployment_of(&spec)?;
    let table = step
        .table
        .as_ref()
        .ok_or_else(|| anyhow!("the step needs a table of rollout settings"))?;
    configure(&mut deployment, &table.rows)
        .with_context(|| format!("bad rollout settings for deployment {name}"))?;
    Api::<Deployment>::namespaced(world.kube()?, &namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .with_context(|| format!("failed to create deployment {namespace}/{name}"))?;
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
    let client = world.kube()?;
    for _ in 0..times {
        world.template_changes += 1;
        let value = world.template_changes.to_string();
        let patch = serde_json::json!([{
            "op": "add",
            "path": "/spec/template/spec/containers/0/env",
            "value": [{ "name": CHANGE_VARIABLE, "value": value }],
        }]);
        kubeapi::json_patch_deployment(&client, &namespace, &name, &patch)
            .await
            .with_context(|| {
                format!("failed to set {CHANGE_VARIABLE}={value} in the pod template of deployment {name}")
            })?;
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

#[then(
    expr = "within {int} seconds the deployment {string} reports that its rollout exceeded its progress deadline"
)]
async fn deadline_exceeded(world: &mut ConformanceWorld, seconds: u64, name: String) -> StepResult {
    let api = super::deployments(world).await?;
    let wait = Wait::new(
        seconds,
        format!("deployment {name} reporting ProgressDeadlineExceeded"),
    );
    loop {
        let last = match api.get(&name).await {
            Ok(deployment) => {
                let progressing = condition(&deployment, "Progressing");
                let exceeded = progressing.as_ref().is_some_and(|(status, reason, _)| {
                    status == "False" && reason == DEADLINE_EXCEEDED
                });
                if exceeded {
                    wait.done(world);
                    return Ok(());
                }
                format!(
                    "Progressing condition {progressing:?}; {}",
                    status_of(&deployment)
                )
            }
            Err(error) => format!("failed to read deployment {name}: {error}"),
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
    let client = world.kube()?;
    let api = super::deployments(world).await?;
    let driver = world.driver()?;
    let wait = Wait::new(seconds, format!("history of deployment {name} as expected"));
    loop {
        let history = match api.get(&name).await {
            Ok(deployment) => history_of(&client, &deployment, driver.as_ref()).await,
            Err(error) => Err(anyhow!(error).context(format!("failed to read deployment {name}"))),
        };
        let last = match history {
            Ok(history) => {
                let seen: Vec<(u64, String)> = history
                    .iter()
                    .map(|entry| (entry.revision, entry.version.clone()))
                    .collect();
                if seen == expected {
                    wait.done(world);
                    println!("      REVISION  VERSION  CHANGE-CAUSE");
                    for entry in &history {
                        println!(
                            "      {:<8}  {:<7}  {}",
                            entry.revision,
                            entry.version,
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

/// Waits until the ReplicaSets the deployment owns are of the sizes of the table (header
/// `version | replicas`; a ReplicaSet not in it must be scaled to zero): each asks for
/// that many replicas (`spec.replicas`) and has them (`status.replicas`), as the upstream
/// end-to-end test waits for them.
#[then(expr = "within {int} seconds the ReplicaSets of deployment {string} are sized:")]
async fn replica_sets_sized(
    world: &mut ConformanceWorld,
    #[step] step: &Step,
    seconds: u64,
    name: String,
) -> StepResult {
    let table = step
        .table
        .as_ref()
        .ok_or_else(|| anyhow!("the step needs a table of versions and replicas"))?;
    let mut expected: Vec<(String, i32)> = table
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
    expected.sort();
    let client = world.kube()?;
    let api = super::deployments(world).await?;
    let driver = world.driver()?;
    let wait = Wait::new(
        seconds,
        format!("the ReplicaSets of deployment {name} sized {expected:?}"),
    );
    loop {
        let sizes = match api.get(&name).await {
            Ok(deployment) => kubeapi::owned_replica_sets(&client, &deployment).await,
            Err(error) => Err(anyhow!(error).context(format!("failed to read deployment {name}"))),
        };
        let last = match sizes {
            Ok(replica_sets) => {
                let mut sized: Vec<(String, i32, i32)> = replica_sets
                    .iter()
                    .map(|rs| {
                        let wanted = rs.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1);
                        let has = rs.status.as_ref().map_or(0, |status| status.replicas);
                        (version_of(rs, driver.as_ref()), wanted, has)
                    })
                    .filter(|(_, wanted, has)| *wanted != 0 || *has != 0)
                    .collect();
                sized.sort();
                let settled = sized.len() == expected.len()
                    && sized.iter().zip(&expected).all(
                        |((version, wanted, has), (expected_version, expected_replicas))| {
                            version == expected_version
                                && wanted == expected_replicas
                                && has == expected_replicas
                        },
                    );
                if settled {
                    wait.done(world);
                    return Ok(());
                }
                let seen: Vec<String> = sized
                    .iter()
                    .map(|(version, wanted, has)| format!("{version}: {has} of {wanted}"))
                    .collect();
                format!("non-empty ReplicaSets: {}", seen.join(", "))
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
        .take()
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
    let namespace = world.namespace().await?;
    let monitor = Availability::start(world.kube()?, &namespace, &deployment).await?;
    let wait = Wait::new(
        MONITOR_START_SECONDS,
        format!("a first look at the pods of deployment {deployment}"),
    );
    loop {
        let seen = monitor.seen();
        if seen.samples > 0 {
            wait.done(world);
            break;
        }
        wait.again(&seen.to_string()).await?;
    }
    world.monitor = Some(monitor);
    Ok(())
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
            lowest.pods
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
            "at {:.1} s of the monitor, replicas of {} pod templates of deployment {deployment} were running at once: {}",
            most.at.as_secs_f64(),
            most.templates_running,
            most.pods
        );
    }
    Ok(())
}

// --- helpers ------------------------------------------------------------------------------

/// Reason of the `Progressing` condition of a rollout that made no progress in time.
const DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// Where a rollout stands.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// Every replica runs the new template and is available; no old replica is left.
    Complete,
    /// Not yet, and why.
    Waiting(String),
    /// The system gave up: the progress deadline passed.
    Stalled(String),
}

/// Where a rollout stands, by the rule `kubectl rollout status` applies
/// (`DeploymentStatusViewer` in kubectl's `polymorphichelpers/rollout_status.go`): first
/// the controller must have seen the latest spec (`observedGeneration ≥ generation`); then
/// a `Progressing` condition with reason `ProgressDeadlineExceeded` is a failure; then
/// every replica must be updated, no old one left, and every updated one available.
fn progress(deployment: &Deployment) -> Progress {
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0);
    if observed < generation {
        return Progress::Waiting(format!(
            "waiting for deployment spec update to be observed (generation {generation}, observed {observed})"
        ));
    }
    if let Some((_, reason, message)) = condition(deployment, "Progressing")
        && reason == DEADLINE_EXCEEDED
    {
        return Progress::Stalled(format!(
            "deployment {name:?} exceeded its progress deadline: {message}"
        ));
    }
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        Progress::Waiting(format!(
            "{updated} out of {desired} new replicas have been updated"
        ))
    } else if replicas > updated {
        Progress::Waiting(format!(
            "{} old replicas are pending termination",
            replicas - updated
        ))
    } else if available < updated {
        Progress::Waiting(format!(
            "{available} of {updated} updated replicas are available"
        ))
    } else {
        Progress::Complete
    }
}

/// Waits until the rollout of a deployment is complete ([`progress`]), for at most
/// `seconds`, and records the time it took; fails at once if the rollout is reported
/// past its progress deadline.
async fn wait_rolled_out(
    world: &mut ConformanceWorld,
    name: &str,
    seconds: u64,
) -> anyhow::Result<()> {
    let api = super::deployments(world).await?;
    let wait = Wait::new(seconds, format!("rollout of deployment {name} complete"));
    loop {
        let last = match api.get(name).await {
            Ok(deployment) => match progress(&deployment) {
                Progress::Complete => {
                    wait.done(world);
                    return Ok(());
                }
                Progress::Stalled(why) => bail!("{why}; {}", status_of(&deployment)),
                Progress::Waiting(why) => format!("{why}; {}", status_of(&deployment)),
            },
            Err(error) => format!("failed to read deployment {name}: {error}"),
        };
        wait.again(&last).await?;
    }
}

/// A condition of a deployment's status: its status, reason and message.
fn condition(deployment: &Deployment, kind: &str) -> Option<(String, String, String)> {
    deployment
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == kind)
        .map(|condition| {
            (
                condition.status.clone(),
                condition.reason.clone().unwrap_or_default(),
                condition.message.clone().unwrap_or_default(),
            )
        })
}

/// A deployment's status in a few words, for errors.
fn status_of(deployment: &Deployment) -> String {
    let status = deployment.status.clone().unwrap_or_default();
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .flatten()
        .map(|condition| {
            format!(
                "{}={} ({})",
                condition.type_,
                condition.status,
                condition.reason.as_deref().unwrap_or_default()
            )
        })
        .collect();
    format!(
        "status: {} replicas, {} updated, {} available, observed generation {} of {}; {}",
        status.replicas.unwrap_or(0),
        status.updated_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
        status.observed_generation.unwrap_or(0),
        deployment.metadata.generation.unwrap_or(0),
        conditions.join(", ")
    )
}

/// Sets a deployment's rollout settings from `| setting | value |` rows.
fn configure(deployment: &mut Deployment, rows: &[Vec<String>]) -> anyhow::Result<()> {
    let spec = deployment
        .spec
        .as_mut()
        .ok_or_else(|| anyhow!("the deployment has no spec"))?;
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    let number = |value: &str| -> anyhow::Result<i32> {
        value
            .parse()
            .with_context(|| format!("{value:?} is not a whole number"))
    };
    let amount = |value: &str| -> anyhow::Result<IntOrString> {
        if value.ends_with('%') {
            Ok(IntOrString::String(value.to_owned()))
        } else {
            Ok(IntOrString::Int(number(value)?))
        }
    };
    for row in rows {
        let [setting, value] = row.as_slice() else {
            bail!("each row needs a setting and a value: {row:?}");
        };
        match setting.as_str() {
            "strategy" => match value.as_str() {
                "RollingUpdate" | "Recreate" => strategy.type_ = Some(value.clone()),
                other => bail!("unknown strategy {other:?}; expected RollingUpdate or Recreate"),
            },
            "maxSurge" => {
                strategy
                    .rolling_update
                    .get_or_insert_with(RollingUpdateDeployment::default)
                    .max_surge = Some(amount(value)?);
            }
            "maxUnavailable" => {
                strategy
                    .rolling_update
                    .get_or_insert_with(RollingUpdateDeployment::default)
                    .max_unavailable = Some(amount(value)?);
            }
            "minReadySeconds" => spec.min_ready_seconds = Some(number(value)?),
            "progressDeadlineSeconds" => spec.progress_deadline_seconds = Some(number(value)?),
            "revisionHistoryLimit" => spec.revision_history_limit = Some(number(value)?),
            other => bail!(
                "unknown rollout setting {other:?}; expected strategy, maxSurge, maxUnavailable, minReadySeconds, progressDeadlineSeconds or revisionHistoryLimit"
            ),
        }
    }
    if strategy.type_.as_deref() == Some("Recreate") && strategy.rolling_update.is_some() {
        bail!("maxSurge and maxUnavailable go with the RollingUpdate strategy, not Recreate");
    }
    Ok(())
}

/// One revision of a deployment's history.
#[derive(Debug)]
struct HistoryEntry {
    /// Its revision number.
    revision: u64,
    /// The probe version its template runs (or its image, if not a probe's).
    version: String,
    /// Why it was made, if anyone said (`kubernetes.io/change-cause`).
    change_cause: Option<String>,
}

/// The history of a deployment, as `kubectl rollout history` lists it: the ReplicaSets it
/// owns, by revision.
async fn history_of(
    client: &kube::Client,
    deployment: &Deployment,
    driver: &dyn crate::driver::Driver,
) -> anyhow::Result<Vec<HistoryEntry>> {
    let mut history = kubeapi::owned_replica_sets(client, deployment)
        .await?
        .iter()
        .map(|rs| {
            let name = rs.metadata.name.as_deref().unwrap_or_default();
            Ok(HistoryEntry {
                revision: kubeapi::revision_of(&rs.metadata)
                    .ok_or_else(|| anyhow!("ReplicaSet {name} has no revision"))?,
                version: version_of(rs, driver),
                change_cause: rs
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|annotations| annotations.get("kubernetes.io/change-cause"))
                    .cloned(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    history.sort_by_key(|entry| entry.revision);
    Ok(history)
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

/// The probe version a ReplicaSet's template runs, or its image if it is no probe's.
fn version_of(replica_set: &ReplicaSet, driver: &dyn crate::driver::Driver) -> String {
    let image = replica_set
        .spec
        .as_ref()
        .and_then(|spec| spec.template.as_ref())
        .and_then(|template| template.spec.as_ref())
        .and_then(|pod| pod.containers.first())
        .and_then(|container| container.image.clone())
        .unwrap_or_default();
    PROBE_VERSIONS
        .iter()
        .find(|version| driver.probe_image(version) == image)
        .map_or(image, |version| (*version).to_owned())
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

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web", "generation": 2 },
            "spec": {
                "replicas": 3,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {},
            },
            "status": status,
        }))
        .expect("deployment")
    }

    #[test]
    fn a_rollout_is_complete_by_kubectls_rule() {
        let waiting = |status| matches!(progress(&deployment(status)), Progress::Waiting(_));
        // Not yet observed: whatever the counts say.
        assert!(waiting(serde_json::json!({
            "observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3
        })));
        // An old replica is still there.
        assert!(waiting(serde_json::json!({
            "observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3
        })));
        // Updated but not all available.
        assert!(waiting(serde_json::json!({
            "observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2
        })));
        assert_eq!(
            progress(&deployment(serde_json::json!({
                "observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3
            }))),
            Progress::Complete
        );
        let stalled = progress(&deployment(serde_json::json!({
            "observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3,
            "conditions": [{
                "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"web-x\" has timed out progressing."
            }]
        })));
        assert!(matches!(stalled, Progress::Stalled(_)), "{stalled:?}");
    }

    #[test]
    fn rollout_settings_fill_the_strategy() {
        let mut object = deployment(serde_json::json!({}));
        let rows = |pairs: &[(&str, &str)]| -> Vec<Vec<String>> {
            pairs
                .iter()
                .map(|(key, value)| vec![(*key).to_owned(), (*value).to_owned()])
                .collect()
        };
        configure(
            &mut object,
            &rows(&[
                ("maxSurge", "25%"),
                ("maxUnavailable", "0"),
                ("progressDeadlineSeconds", "10"),
            ]),
        )
        .expect("settings");
        let spec = object.spec.as_ref().expect("spec");
        let rolling = spec
            .strategy
            .as_ref()
            .and_then(|strategy| strategy.rolling_update.as_ref())
            .expect("rolling update");
        assert_eq!(
            rolling.max_surge,
            Some(IntOrString::String("25%".to_owned()))
        );
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(spec.progress_deadline_seconds, Some(10));
        let mut recreate = deployment(serde_json::json!({}));
        assert!(
            configure(
                &mut recreate,
                &rows(&[("strategy", "Recreate"), ("maxSurge", "1")])
            )
            .is_err()
        );
        assert!(configure(&mut recreate, &rows(&[("surge", "1")])).is_err());
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
