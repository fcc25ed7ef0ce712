//! Step definitions: the sentences of `features/` and what each one does.
//!
//! Steps speak to the system through the [`Driver`](crate::driver::Driver) wherever the
//! sentence is platform-neutral. Steps of `@kubernetes-api` scenarios, which check what the
//! Kubernetes API promises (optimistic concurrency, object identity), use the driver's
//! Kubernetes client directly.
//!
//! This file holds the deployment and control-plane sentences and what every step shares;
//! `placement.rs` has the nodes and where replicas land (`@scheduling`), `pods.rs` the life
//! of single pods (`@lifecycle`), `healing.rs` the faults and how the cluster recovers from
//! them (`@self-healing`), `routing.rs` services and the traffic through them
//! (`@service-routing`), `rollout.rs` rolling updates, their history and rollbacks
//! (`@rollback`), `daemons.rs`, `jobs.rs` and `stateful.rs` the other workload kinds
//! (`@daemons`, `@jobs`, `@stateful-sets`), `autoscaling.rs` replicas that follow a load
//! (`@autoscaling`), `consistency.rs` clients reading and writing through the API and the
//! check that what they saw is linearizable (`@control-plane`).
//!
//! Every step returns a [`StepResult`]; a failure carries the whole chain of causes, so
//! the report says what failed, for which object, and why.
//!
//! # Waiting
//!
//! A "within N seconds" step polls the system four times a second until what it waits
//! for is observed, or fails once N seconds have passed, saying what it saw last. It
//! records the measured time (printed, and summed up in the run's
//! [`Report`](crate::report::Report)). Steps never sleep to let something happen: they
//! observe that it did. A "stays ... for N seconds" step is the other way round: it
//! samples the system for N seconds and fails the first time the state is not kept.
//!
//! Where a bound depends on what a system promises rather than on work it does, the step
//! names the promise — "within the node grace period, the eviction delay and 20 more
//! seconds" — and the run's timing profile says how long that is ([`Bound`],
//! [`crate::profile`]).

mod autoscaling;
mod consistency;
mod daemons;
mod healing;
mod jobs;
mod placement;
mod pods;
mod rollout;
mod routing;
mod stateful;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use cucumber::{Parameter, given, then, when};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::driver::{DeploymentSpec, Driver, Fault, Replica, ServiceSpec};
use crate::kubeapi::is_status;
use crate::profile::Profile;
use crate::world::ConformanceWorld;

/// How long objects may keep changing (status updates by controllers) before they are noted.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an object must stay unchanged to count as settled.
const SETTLE_QUIET: Duration = Duration::from_secs(1);

/// How often a waiting step looks at the system again.
const POLL: Duration = Duration::from_millis(250);

/// Fails the step with a formatted message: anyhow's `bail!`, for a [`StepResult`].
macro_rules! fail {
    ($($message:tt)*) => {
        return Err(anyhow::anyhow!($($message)*).into())
    };
}
use fail;

/// What a step returns.
pub type StepResult = Result<(), StepError>;

/// A failed step: an error shown with its whole chain of causes.
pub struct StepError(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for StepError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

/// A time bound as the features write it: `30 seconds`, or seconds on top of timings the
/// profile sets — `the node grace period and 10 more seconds`, `the node grace period, the
/// eviction delay and 20 more seconds`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Parameter)]
#[param(
    name = "bound",
    regex = r"\d+ seconds|the node grace period and \d+ more seconds|the node grace period, the eviction delay and \d+ more seconds"
)]
pub struct Bound {
    /// Whether the node grace period counts.
    grace: bool,
    /// Whether the eviction delay counts.
    eviction: bool,
    /// The seconds on top.
    seconds: u64,
}

impl std::str::FromStr for Bound {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let (grace, eviction, rest) = if let Some(rest) =
            text.strip_prefix("the node grace period, the eviction delay and ")
        {
            (true, true, rest.strip_suffix(" more seconds"))
        } else if let Some(rest) = text.strip_prefix("the node grace period and ") {
            (true, false, rest.strip_suffix(" more seconds"))
        } else {
            (false, false, text.strip_suffix(" seconds"))
        };
        let seconds = rest
            .and_then(|number| number.parse().ok())
            .ok_or_else(|| anyhow!("{text:?} is not a time bound"))?;
        Ok(Self {
            grace,
            eviction,
            seconds,
        })
    }
}

impl Bound {
    /// How many seconds the bound is under a profile.
    pub fn seconds(self, profile: &Profile) -> u64 {
        let timings = profile.timings;
        let grace = if self.grace {
            timings.node_grace_seconds
        } else {
            0
        };
        let eviction = if self.eviction {
            timings.eviction_seconds
        } else {
            0
        };
        grace + eviction + self.seconds
    }

    /// Its seconds under the scenario's profile.
    fn resolve(self, world: &ConformanceWorld) -> anyhow::Result<u64> {
        Ok(self.seconds(&*world.profile()?))
    }
}

// --- deployments, through the driver --------------------------------------------------

#[given(expr = "a deployment {string} with {int} replicas of image {string}")]
async fn given_deployment(
    world: &mut ConformanceWorld,
    name: String,
    replicas: u32,
    image: String,
) -> StepResult {
    let labels = BTreeMap::from([("app".to_owned(), name.clone())]);
    deploy(world, name, replicas, image, labels).await
}

#[when(
    expr = "a deployment {string} is created with {int} replicas of image {string} labelled {string}"
)]
async fn create_labelled_deployment(
    world: &mut ConformanceWorld,
    name: String,
    replicas: u32,
    image: String,
    labels: String,
) -> StepResult {
    let labels = parse_labels(&labels)?;
    deploy(world, name, replicas, image, labels).await
}

#[then(
    expr = "the deployment {string} is reported with {int} replicas of image {string} labelled {string}"
)]
async fn deployment_reported_as_written(
    world: &mut ConformanceWorld,
    name: String,
    replicas: u32,
    image: String,
    labels: String,
) -> StepResult {
    let labels = parse_labels(&labels)?;
    let reported = read_deployment(world, &name).await?;
    // What was written, and nothing the system may fill in by default (a rollout
    // strategy, a history limit).
    let as_written = reported.name == name
        && reported.image == image
        && reported.replicas == replicas
        && reported.labels == labels;
    if !as_written {
        fail!(
            "deployment {name} was reported as {reported:?}, but was written with image {image:?}, {replicas} replicas and labels {labels:?}"
        );
    }
    Ok(())
}

#[then(expr = "the deployment {string} has {int} replicas")]
async fn deployment_has_replicas(
    world: &mut ConformanceWorld,
    name: String,
    replicas: u32,
) -> StepResult {
    let reported = read_deployment(world, &name).await?;
    if reported.replicas != replicas {
        fail!(
            "deployment {name} has {} replicas, expected {replicas}",
            reported.replicas
        );
    }
    Ok(())
}

#[given(
    expr = "a service {string} sending port {int} to port {int} of the replicas of deployment {string}"
)]
async fn given_service(
    world: &mut ConformanceWorld,
    name: String,
    port: u16,
    target_port: u16,
    deployment: String,
) -> StepResult {
    let namespace = world.namespace().await?;
    let service = ServiceSpec {
        name,
        deployment,
        port,
        target_port,
    };
    world.driver()?.expose(&namespace, &service).await?;
    world
        .fronted
        .insert(service.name.clone(), service.deployment.clone());
    Ok(())
}

// --- concurrent writers, through the Kubernetes API -----------------------------------

#[given(expr = "I have read the deployment {string}")]
async fn read_for_later(world: &mut ConformanceWorld, name: String) -> StepResult {
    let api = deployments(world).await?;
    let deployment = api
        .get(&name)
        .await
        .with_context(|| format!("failed to read deployment {name}"))?;
    world.read = Some(deployment);
    Ok(())
}

#[when(expr = "another client changes the replicas of deployment {string} to {int}")]
async fn another_client_changes_replicas(
    world: &mut ConformanceWorld,
    name: String,
    replicas: i32,
) -> StepResult {
    let api = deployments(world).await?;
    // The other client patches: it names no version, so the system's own status writes
    // (which move the version too) cannot make *its* change conflict.
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .with_context(|| {
        format!("the other client failed to change the replicas of deployment {name} to {replicas}")
    })?;
    Ok(())
}

#[when(expr = "I change the replicas of deployment {string} to {int} based on what I read")]
async fn change_based_on_stale_read(
    world: &mut ConformanceWorld,
    name: String,
    replicas: i32,
) -> StepResult {
    let mut stale = world
        .read
        .clone()
        .ok_or_else(|| anyhow!("deployment {name} was not read earlier in this scenario"))?;
    set_replicas(&mut stale, replicas)?;
    let api = deployments(world).await?;
    world.last_write = Some(api.replace(&name, &PostParams::default(), &stale).await);
    Ok(())
}

#[then("the change is refused as a conflict")]
fn refused_as_conflict(world: &mut ConformanceWorld) -> StepResult {
    match world.last_write.take() {
        None => fail!("no change was attempted earlier in this scenario"),
        Some(Err(error)) if is_status(&error, 409) => Ok(()),
        Some(Err(error)) => Err(anyhow::Error::from(error)
            .context("the change was refused, but not as a conflict (409)")
            .into()),
        Some(Ok(written)) => fail!(
            "the change based on an outdated version was accepted (deployment {} now at version {})",
            written.metadata.name.unwrap_or_default(),
            written.metadata.resource_version.unwrap_or_default()
        ),
    }
}

// --- the control plane fails ----------------------------------------------------------

#[given(expr = "I note the deployment {string} and the service {string} as they are now")]
async fn note_objects(
    world: &mut ConformanceWorld,
    deployment: String,
    service: String,
) -> StepResult {
    let namespace = world.namespace().await?;
    let client = world.kube()?;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
    let services = Api::<Service>::namespaced(client, &namespace);
    // Controllers may still be writing status; note the objects once they are quiet.
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let before = (
            get(&deployments, &deployment).await?,
            get(&services, &service).await?,
        );
        tokio::time::sleep(SETTLE_QUIET).await;
        let after = (
            get(&deployments, &deployment).await?,
            get(&services, &service).await?,
        );
        let quiet =
            version(&before.0) == version(&after.0) && version(&before.1) == version(&after.1);
        if quiet {
            world.noted_deployments.insert(deployment, after.0);
            world.noted_services.insert(service, after.1);
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            fail!(
                "deployment {deployment} or service {service} kept changing for {SETTLE_TIMEOUT:?}"
            );
        }
    }
}

#[when("the control plane is killed abruptly and started again")]
async fn restart_control_plane(world: &mut ConformanceWorld) -> StepResult {
    let driver = world.driver()?;
    let started = Instant::now();
    world.fault_injected(&Fault::RestartControlPlane);
    driver
        .inject(&Fault::RestartControlPlane)
        .await
        .with_context(|| {
            format!(
                "driver {} failed to restart the control plane",
                driver.name()
            )
        })?;
    println!(
        "      the control plane is serving again after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[when(
    expr = "the member of the control plane that leads is killed abruptly while the deployment {string} runs"
)]
async fn lose_control_plane_leader(world: &mut ConformanceWorld, deployment: String) -> StepResult {
    healing::inject_while_running(world, &deployment, &Fault::LoseControlPlaneLeader).await?;
    Ok(())
}

#[then(expr = "the deployment {string} is unchanged, with the same identity and spec")]
async fn deployment_unchanged(world: &mut ConformanceWorld, name: String) -> StepResult {
    let noted = world
        .noted_deployments
        .get(&name)
        .cloned()
        .ok_or_else(|| anyhow!("deployment {name} was not noted earlier in this scenario"))?;
    let now = get(&deployments(world).await?, &name).await?;
    unchanged("deployment", &name, &noted, &now)
}

#[then(expr = "the service {string} is unchanged, with the same identity and spec")]
async fn service_unchanged(world: &mut ConformanceWorld, name: String) -> StepResult {
    let noted = world
        .noted_services
        .get(&name)
        .cloned()
        .ok_or_else(|| anyhow!("service {name} was not noted earlier in this scenario"))?;
    let namespace = world.namespace().await?;
    let services = Api::<Service>::namespaced(world.kube()?, &namespace);
    let now = get(&services, &name).await?;
    unchanged("service", &name, &noted, &now)
}

// --- helpers --------------------------------------------------------------------------

/// Creates a deployment in the scenario's namespace through the driver.
async fn deploy(
    world: &mut ConformanceWorld,
    name: String,
    replicas: u32,
    image: String,
    labels: BTreeMap<String, String>,
) -> StepResult {
    let namespace = world.namespace().await?;
    let spec = DeploymentSpec {
        name,
        image,
        replicas,
        labels,
        ..DeploymentSpec::default()
    };
    world.driver()?.deploy(&namespace, &spec).await?;
    Ok(())
}

/// A deployment `name` of the probe at `version`, labelled `app=name`: one replica, no
/// placement, the probe's defaults; callers change what their scenario is about.
fn probe_spec(driver: &dyn Driver, name: &str, version: &str) -> DeploymentSpec {
    DeploymentSpec {
        labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
        image: driver.probe_image(version),
        name: name.to_owned(),
        replicas: 1,
        ..DeploymentSpec::default()
    }
}

/// `spec` with replicas that take `stop` seconds to stop once asked to (the probe's
/// `STOP_AFTER`), given `grace` seconds to do it before they are killed.
fn stopping_after(spec: DeploymentSpec, stop: u32, grace: u32) -> DeploymentSpec {
    let mut env = spec.env.clone();
    env.insert("STOP_AFTER".to_owned(), stop.to_string());
    DeploymentSpec {
        env,
        termination_grace_seconds: Some(grace),
        ..spec
    }
}

/// Grace enough for a replica that takes `stop` seconds to stop: a slow stop, not one cut
/// short.
fn grace_for(stop: u32) -> u32 {
    stop + 15
}

/// A wait with a bound, for the "within N seconds" steps.
struct Wait {
    /// What is waited for, for the record and for the error.
    what: String,
    /// When the wait started.
    started: Instant,
    /// How long it may take.
    bound: Duration,
}

impl Wait {
    /// Starts waiting `seconds` for `what`.
    fn new(seconds: u64, what: String) -> Self {
        Self {
            what,
            started: Instant::now(),
            bound: Duration::from_secs(seconds),
        }
    }

    /// Call after a look that did not find what is waited for: fails if the bound has
    /// passed (with `last`, what was seen), else pauses before the next look.
    async fn again(&self, last: &str) -> anyhow::Result<()> {
        if self.started.elapsed() >= self.bound {
            anyhow::bail!(
                "not {} within {} s; last seen: {last}",
                self.what,
                self.bound.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
        Ok(())
    }

    /// Records the time it took.
    fn done(&self, world: &ConformanceWorld) {
        world.record(&self.what, self.started.elapsed(), self.bound);
    }
}

/// The replica count a deployment (which must exist) asks for.
async fn desired_replicas(world: &mut ConformanceWorld, deployment: &str) -> anyhow::Result<u32> {
    let namespace = world.namespace().await?;
    Ok(world
        .driver()?
        .read_deployment(&namespace, deployment)
        .await?
        .ok_or_else(|| anyhow!("deployment {namespace}/{deployment} does not exist"))?
        .replicas)
}

/// Reads a replica by name (it must exist) and notes the phase it is in.
async fn read_replica(world: &mut ConformanceWorld, name: &str) -> anyhow::Result<Replica> {
    let namespace = world.namespace().await?;
    let replica = world
        .driver()?
        .read_replica(&namespace, name)
        .await?
        .ok_or_else(|| anyhow!("replica {namespace}/{name} does not exist"))?;
    world.saw(&replica);
    Ok(replica)
}

/// Waits until the replica `name` passes `check` (which says what it sees when it does
/// not), for at most `seconds`; records the time it took and returns the replica.
async fn wait_for_replica(
    world: &mut ConformanceWorld,
    name: &str,
    seconds: u64,
    what: &str,
    check: impl Fn(&Replica) -> Result<(), String>,
) -> anyhow::Result<Replica> {
    let wait = Wait::new(seconds, format!("pod {name} {what}"));
    loop {
        let last = match read_replica(world, name).await {
            Ok(replica) => match check(&replica) {
                Ok(()) => {
                    wait.done(world);
                    return Ok(replica);
                }
                Err(seen) => seen,
            },
            Err(error) => format!("{error:#}"),
        };
        wait.again(&last).await?;
    }
}

/// Waits until the replicas of deployment `name` pass `check`, for at most `seconds`;
/// records the time it took and returns the replicas.
async fn wait_for_replicas(
    world: &mut ConformanceWorld,
    deployment: &str,
    seconds: u64,
    what: &str,
    check: impl Fn(&[Replica]) -> Result<(), String>,
) -> anyhow::Result<Vec<Replica>> {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let wait = Wait::new(seconds, format!("deployment {deployment}: {what}"));
    loop {
        let last = match driver.list_replicas(&namespace, deployment).await {
            Ok(replicas) => {
                replicas.iter().for_each(|replica| world.saw(replica));
                match check(&replicas) {
                    Ok(()) => {
                        wait.done(world);
                        return Ok(replicas);
                    }
                    Err(seen) => seen,
                }
            }
            Err(error) => format!("{error:#}"),
        };
        wait.again(&last).await?;
    }
}

/// Waits until exactly `count` replicas of deployment `name` run, none of them terminating.
async fn wait_for_running(
    world: &mut ConformanceWorld,
    deployment: &str,
    seconds: u64,
    count: usize,
) -> anyhow::Result<Vec<Replica>> {
    wait_for_replicas(
        world,
        deployment,
        seconds,
        &format!("{} running", plural(count, "replica")),
        |replicas| exactly_running(replicas, count),
    )
    .await
}

/// A replica in a few words, for errors: `web-x1 Running on node-2, ready, 0 restarts`.
fn describe(replica: &Replica) -> String {
    let mut text = format!("{} {}", replica.name, replica.phase);
    if let Some(node) = &replica.node {
        text.push_str(&format!(" on {node}"));
    }
    text.push_str(if replica.ready {
        ", ready"
    } else {
        ", not ready"
    });
    text.push_str(&format!(", {} restarts", replica.restarts));
    if replica.terminating {
        text.push_str(", terminating");
    }
    if let Some(reason) = &replica.reason {
        text.push_str(&format!(", {reason}"));
    }
    if let Some(message) = &replica.message {
        text.push_str(&format!(": {message}"));
    }
    text
}

/// Whether exactly `count` replicas are listed, all running and none on its way out
/// (terminating); what is seen otherwise.
fn exactly_running(replicas: &[Replica], count: usize) -> Result<(), String> {
    let running = replicas
        .iter()
        .filter(|replica| replica.phase == crate::driver::Phase::Running && !replica.terminating)
        .count();
    if replicas.len() == count && running == count {
        Ok(())
    } else {
        Err(describe_all(replicas))
    }
}

/// `1 replica`, `2 replicas`: a count and its noun.
fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// Several replicas in a few words each.
fn describe_all(replicas: &[Replica]) -> String {
    if replicas.is_empty() {
        return "no replicas".to_owned();
    }
    replicas.iter().map(describe).collect::<Vec<_>>().join("; ")
}

/// Whether a replica is placed nowhere and says why, with a reason or message that names
/// `word` (case aside). Says what it sees otherwise.
fn unscheduled_naming(replica: &Replica, word: &str) -> Result<(), String> {
    let why = format!(
        "{} {}",
        replica.reason.as_deref().unwrap_or_default(),
        replica.message.as_deref().unwrap_or_default()
    );
    let names_it = why.to_lowercase().contains(&word.to_lowercase());
    if replica.phase == crate::driver::Phase::Pending && replica.node.is_none() && names_it {
        Ok(())
    } else {
        Err(describe(replica))
    }
}

/// Reads a deployment back through the driver; missing is an error.
async fn read_deployment(
    world: &mut ConformanceWorld,
    name: &str,
) -> anyhow::Result<DeploymentSpec> {
    let namespace = world.namespace().await?;
    world
        .driver()?
        .read_deployment(&namespace, name)
        .await?
        .ok_or_else(|| anyhow!("deployment {namespace}/{name} does not exist"))
}

/// The Deployments of the scenario's namespace, through the Kubernetes API.
async fn deployments(world: &mut ConformanceWorld) -> anyhow::Result<Api<Deployment>> {
    let namespace = world.namespace().await?;
    Ok(Api::namespaced(world.kube()?, &namespace))
}

/// Gets an object that must exist.
async fn get<K>(api: &Api<K>, name: &str) -> anyhow::Result<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + fmt::Debug,
{
    api.get(name)
        .await
        .with_context(|| format!("failed to read {} {name}", K::kind(&())))
}

/// The resourceVersion of an object.
fn version<K: kube::Resource>(object: &K) -> Option<&str> {
    object.meta().resource_version.as_deref()
}

/// Checks that an object kept its uid, its resourceVersion and every field.
fn unchanged<K: kube::Resource + serde::Serialize>(
    kind: &str,
    name: &str,
    before: &K,
    after: &K,
) -> StepResult {
    let (was, is) = (before.meta(), after.meta());
    if was.uid.is_none() {
        fail!("{kind} {name} was reported without a uid: {was:?}");
    }
    if was.uid != is.uid {
        fail!(
            "{kind} {name} has a new identity: uid {:?} became {:?}",
            was.uid,
            is.uid
        );
    }
    // What a client wrote: the spec and the metadata it owns. The status (and with it the
    // resourceVersion) is the system's to update, before and after a restart alike.
    let written = |v: Value| {
        json!({
            "spec": v.get("spec"),
            "generation": v.pointer("/metadata/generation"),
            "labels": v.pointer("/metadata/labels"),
            "annotations": v.pointer("/metadata/annotations"),
            "creationTimestamp": v.pointer("/metadata/creationTimestamp"),
        })
    };
    let (was, is) = (
        written(to_json(kind, name, before)?),
        written(to_json(kind, name, after)?),
    );
    if was != is {
        fail!("{kind} {name} is not as it was written:\nbefore: {was}\nafter:  {is}");
    }
    Ok(())
}

/// An object as JSON, for comparison.
fn to_json<K: serde::Serialize>(kind: &str, name: &str, object: &K) -> anyhow::Result<Value> {
    serde_json::to_value(object).with_context(|| format!("failed to serialize {kind} {name}"))
}

/// Sets `spec.replicas` of a Deployment read through the API.
fn set_replicas(deployment: &mut Deployment, replicas: i32) -> anyhow::Result<()> {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    deployment
        .spec
        .as_mut()
        .ok_or_else(|| anyhow!("deployment {name} has no spec"))?
        .replicas = Some(replicas);
    Ok(())
}

/// Parses `a=1,b=2` into labels.
fn parse_labels(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    text.split(',')
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| anyhow!("label {pair:?} is not of the form key=value"))?;
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step of every feature matches exactly one definition, so no run can fail
    /// (or silently skip) on a typo.
    #[test]
    fn every_feature_step_has_one_definition() {
        use cucumber::World as _;
        use cucumber::gherkin::{Feature, GherkinEnv};

        let steps = ConformanceWorld::collection();
        let features = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../features");
        let mut checked = 0;
        for entry in std::fs::read_dir(&features).expect("features directory") {
            let path = entry.expect("features entry").path();
            if path.extension().is_none_or(|ext| ext != "feature") {
                continue;
            }
            let feature =
                Feature::parse_path(&path, GherkinEnv::default()).expect("feature parses");
            let scenarios = feature
                .scenarios
                .iter()
                .chain(feature.rules.iter().flat_map(|rule| &rule.scenarios));
            let background = feature.background.iter().flat_map(|bg| &bg.steps);
            for step in background.chain(scenarios.flat_map(|scenario| &scenario.steps)) {
                match steps.find(step) {
                    Ok(Some(_)) => checked += 1,
                    Ok(None) => panic!("{}: undefined step {:?}", path.display(), step.value),
                    Err(error) => panic!(
                        "{}: ambiguous step {:?}: {error:?}",
                        path.display(),
                        step.value
                    ),
                }
            }
        }
        assert!(
            checked > 0,
            "no feature steps found in {}",
            features.display()
        );
    }

    #[test]
    fn bounds_read_the_profile() {
        let profile = Profile::default();
        let plain: Bound = "30 seconds".parse().expect("bound");
        assert_eq!(plain.seconds(&profile), 30);
        let grace: Bound = "the node grace period and 10 more seconds"
            .parse()
            .expect("bound");
        assert_eq!(grace.seconds(&profile), 4 + 10);
        let both: Bound = "the node grace period, the eviction delay and 20 more seconds"
            .parse()
            .expect("bound");
        assert_eq!(both.seconds(&profile), 4 + 2 + 20);
        let mut upstream = profile.clone();
        upstream.timings.node_grace_seconds = 50;
        upstream.timings.eviction_seconds = 300;
        assert_eq!(both.seconds(&upstream), 370);
        assert!("soon".parse::<Bound>().is_err());
        assert!(
            "the node grace period and many more seconds"
                .parse::<Bound>()
                .is_err()
        );
    }

    #[test]
    fn labels_parse_from_pairs() {
        let labels = parse_labels("app=web, tier=front").expect("labels");
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
        assert!(parse_labels("app").is_err());
    }
}
