//! Sentences about stateful sets (`features/stateful-sets.feature`): pods with stable names
//! and an order — started one at a time, stopped from the last, updated from the last down
//! to a partition.
//!
//! Order is judged by watching. While a step waits, every look at the set's pods is compared
//! with the one before it, and the step fails the moment what it sees could not come from
//! the promised order: a pod that appears while one before it is not ready, a pod that
//! starts to go while one after it is still there, a pod that runs the new version while
//! one after it still runs the old. Each probe pod takes seconds to become ready (it
//! reports ready [`READY_AFTER`] seconds after it starts), so a system that starts them all
//! at once is seen doing so by looks four times a second.

use std::collections::BTreeMap;

use cucumber::{given, then, when};

use super::routing::{PROBE_PORT, probe_readiness};
use super::{StepResult, Wait, describe_all, fail};
use crate::driver::{ContainerSpec, Fault, Phase, Replica, StatefulSpec};
use crate::world::ConformanceWorld;

/// Seconds a probe pod takes to report ready once it runs.
const READY_AFTER: &str = "2";

/// What order a wait holds the set's pods to, look after look.
enum Order {
    /// Whatever the system does on the way.
    Any,
    /// A pod appears only when every pod before it runs ready.
    Start,
    /// A pod starts to go only when every pod after it is gone.
    Stop,
    /// A pod runs `image` only when every pod after it does, and none below `from` does.
    Update { image: String, from: u32 },
}

/// The ordinal of a pod of set `set` (`db-2` → 2).
fn ordinal(set: &str, pod: &str) -> Option<u32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// The set's pods, by ordinal.
async fn look(world: &mut ConformanceWorld, set: &str) -> anyhow::Result<BTreeMap<u32, Replica>> {
    let namespace = world.namespace().await?;
    let pods = world.driver()?.list_stateful_pods(&namespace, set).await?;
    Ok(pods
        .into_iter()
        .filter_map(|p| Some((ordinal(set, &p.name)?, p)))
        .collect())
}

/// What in `now` breaks `order`, given the look `before` it; `None` if nothing does.
fn breach(
    order: &Order,
    before: &BTreeMap<u32, Replica>,
    now: &BTreeMap<u32, Replica>,
) -> Option<String> {
    let live = |p: &&Replica| !p.terminating;
    let up = |p: Option<&Replica>| p.is_some_and(|p| !p.terminating && p.ready);
    for (n, pod) in now.iter().filter(|(_, p)| live(p)) {
        let new = before.get(n).is_none_or(|b| b.id != pod.id);
        let was = before.get(n);
        match order {
            Order::Start if new => {
                if let Some(m) = (0..*n).find(|m| !up(now.get(m))) {
                    return Some(format!(
                        "{} appeared while pod {m} was not running ready",
                        pod.name
                    ));
                }
            }
            Order::Update { image, from } if pod.image.as_ref() == Some(image) => {
                let changed = new || was.is_some_and(|b| b.image.as_ref() != Some(image));
                let old_after = now
                    .range(n + 1..)
                    .find(|(_, p)| live(p) && p.image.as_ref() != Some(image));
                if *n < *from {
                    return Some(format!(
                        "{} runs {image}, though below ordinal {from}",
                        pod.name
                    ));
                }
                if let Some((_, old)) = old_after.filter(|_| changed) {
                    return Some(format!(
                        "{} runs {image} while {} does not",
                        pod.name, old.name
                    ));
                }
            }
            _ => {}
        }
    }
    if let Order::Stop = order {
        for (m, was) in before.iter().filter(|(_, p)| live(p)) {
            let going = now.get(m).is_none_or(|p| p.terminating || p.id != was.id);
            if let Some(after) = now.range(m + 1..).next().filter(|_| going) {
                return Some(format!(
                    "{} began to go while {} was there",
                    was.name, after.1.name
                ));
            }
        }
    }
    None
}

/// Waits until the set runs exactly the pods `expected` (name, and image if given), each
/// running ready, holding it to `order` on the way.
async fn converge(
    world: &mut ConformanceWorld,
    seconds: u64,
    set: &str,
    expected: &[(String, Option<String>)],
    order: Order,
) -> StepResult {
    let names: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let wait = Wait::new(
        seconds,
        format!("stateful set {set} running {names:?}, ready"),
    );
    let mut before = BTreeMap::new();
    loop {
        let now = look(world, set).await?;
        if let Some(why) = breach(&order, &before, &now) {
            fail!("stateful set {set} broke its order: {why}");
        }
        let live: Vec<&Replica> = now.values().filter(|p| !p.terminating).collect();
        let good = live.len() == expected.len()
            && expected.iter().all(|(name, image)| {
                live.iter().any(|p| {
                    p.name == *name
                        && p.phase == Phase::Running
                        && p.ready
                        && image.as_ref().is_none_or(|i| p.image.as_ref() == Some(i))
                })
            });
        if good {
            wait.done(world);
            return Ok(());
        }
        let seen: Vec<Replica> = now.values().cloned().collect();
        wait.again(&describe_all(&seen)).await?;
        before = now;
    }
}

/// `"db-0, db-1"` → the names.
fn pod_names(list: &str) -> Vec<String> {
    list.split(',').map(|n| n.trim().to_owned()).collect()
}

/// The names in `list`, each to run `image` (any, if `None`).
fn of_image(list: &str, image: Option<&String>) -> Vec<(String, Option<String>)> {
    pod_names(list)
        .into_iter()
        .map(|n| (n, image.cloned()))
        .collect()
}

/// The names `<set>-0` … `<set>-(replicas-1)`.
fn ordinals(set: &str, replicas: u32) -> Vec<(String, Option<String>)> {
    (0..replicas)
        .map(|n| (format!("{set}-{n}"), None))
        .collect()
}

#[when(expr = "a stateful set {string} of {int} probe pods is created")]
async fn created(world: &mut ConformanceWorld, set: String, replicas: u32) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let container = ContainerSpec {
        name: "probe".to_owned(),
        image: driver.probe_image("v1"),
        port: Some(PROBE_PORT),
        env: BTreeMap::from([("READY_AFTER".to_owned(), READY_AFTER.to_owned())]),
        readiness: Some(probe_readiness()),
        ..ContainerSpec::default()
    };
    let spec = StatefulSpec {
        name: set,
        replicas,
        container,
    };
    driver.run_stateful_set(&namespace, &spec).await?;
    Ok(())
}

#[given(expr = "a stateful set {string} of {int} probe pods runs")]
async fn running(world: &mut ConformanceWorld, set: String, replicas: u32) -> StepResult {
    created(world, set.clone(), replicas).await?;
    converge(world, 120, &set, &ordinals(&set, replicas), Order::Start).await
}

#[when(expr = "the stateful set {string} is scaled to {int} pod(s)")]
async fn scaled(world: &mut ConformanceWorld, set: String, replicas: u32) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    driver
        .scale_stateful_set(&namespace, &set, replicas)
        .await?;
    Ok(())
}

#[when(expr = "the pod {string} of stateful set {string} is deleted")]
async fn pod_deleted(world: &mut ConformanceWorld, pod: String, set: String) -> StepResult {
    let noted = look(world, &set).await?;
    world
        .stateful_noted
        .insert(set, noted.into_values().collect());
    let fault = Fault::DeleteReplica {
        namespace: world.namespace().await?,
        replica: pod,
    };
    super::healing::inject(world, &fault).await?;
    Ok(())
}

#[when(
    expr = "the image of stateful set {string} is changed to version {word} from ordinal {int} up"
)]
async fn image_changed(
    world: &mut ConformanceWorld,
    set: String,
    version: String,
    from: u32,
) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let image = driver.probe_image(&version);
    driver
        .set_stateful_image(&namespace, &set, &image, from)
        .await?;
    world.stateful_update = Some((image, from));
    Ok(())
}

#[then(
    expr = "within {int} seconds the stateful set {string} runs the pods {string}, ready, started one at a time in order"
)]
async fn started_in_order(
    world: &mut ConformanceWorld,
    seconds: u64,
    set: String,
    pods: String,
) -> StepResult {
    converge(world, seconds, &set, &of_image(&pods, None), Order::Start).await
}

#[then(expr = "within {int} seconds the stateful set {string} runs the pods {string}, ready")]
async fn runs(world: &mut ConformanceWorld, seconds: u64, set: String, pods: String) -> StepResult {
    converge(world, seconds, &set, &of_image(&pods, None), Order::Any).await
}

#[then(
    expr = "within {int} seconds the stateful set {string} runs only the pods {string}, having stopped the others from the last"
)]
async fn stopped_from_last(
    world: &mut ConformanceWorld,
    seconds: u64,
    set: String,
    pods: String,
) -> StepResult {
    converge(world, seconds, &set, &of_image(&pods, None), Order::Stop).await
}

#[then(
    expr = "within {int} seconds the stateful set {string} runs {string} of version {word} and {string} of version {word}, ready, updated from the last"
)]
async fn updated_from_last(
    world: &mut ConformanceWorld,
    seconds: u64,
    set: String,
    new_pods: String,
    new: String,
    old_pods: String,
    old: String,
) -> StepResult {
    let driver = world.driver()?;
    let (new, old) = (driver.probe_image(&new), driver.probe_image(&old));
    let mut expected = of_image(&new_pods, Some(&new));
    expected.extend(of_image(&old_pods, Some(&old)));
    let Some((image, from)) = world.stateful_update.clone().filter(|(i, _)| *i == new) else {
        fail!("no update of stateful set {set} to {new} was asked for");
    };
    converge(
        world,
        seconds,
        &set,
        &expected,
        Order::Update { image, from },
    )
    .await
}

#[then(expr = "{string} is a new pod, and the others of stateful set {string} are the ones noted")]
async fn only_one_new(world: &mut ConformanceWorld, pod: String, set: String) -> StepResult {
    let noted = world.stateful_noted.get(&set).cloned().unwrap_or_default();
    let now = look(world, &set).await?;
    let mut wrong = Vec::new();
    for was in noted.iter().filter(|p| !p.terminating) {
        let same = now.values().any(|p| p.name == was.name && p.id == was.id);
        if same == (was.name == pod) {
            let should = if same {
                "is still the old pod"
            } else {
                "was replaced"
            };
            wrong.push(format!("{} {should}", was.name));
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    fail!("in stateful set {set}: {}", wrong.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(n: u32, id: &str, ready: bool, image: &str) -> (u32, Replica) {
        let replica = Replica {
            name: format!("db-{n}"),
            id: id.to_owned(),
            phase: Phase::Running,
            node: None,
            ready,
            restarts: 0,
            ip: None,
            reason: None,
            message: None,
            terminating: false,
            image: Some(image.to_owned()),
            template: None,
            ready_since: None,
        };
        (n, replica)
    }

    #[test]
    fn a_pod_that_appears_before_the_one_before_it_is_ready_breaks_the_start_order() {
        let before = BTreeMap::from([pod(0, "a", false, "v1")]);
        let both = BTreeMap::from([pod(0, "a", false, "v1"), pod(1, "b", false, "v1")]);
        assert!(breach(&Order::Start, &before, &both).is_some());
        let after_ready = BTreeMap::from([pod(0, "a", true, "v1"), pod(1, "b", false, "v1")]);
        assert_eq!(breach(&Order::Start, &before, &after_ready), None);
        // A pod of the middle that comes back, the others up: in order.
        let gap = BTreeMap::from([pod(0, "a", true, "v1"), pod(2, "c", true, "v1")]);
        let back = BTreeMap::from([
            pod(0, "a", true, "v1"),
            pod(1, "d", false, "v1"),
            pod(2, "c", true, "v1"),
        ]);
        assert_eq!(breach(&Order::Start, &gap, &back), None);
    }

    #[test]
    fn stopping_and_updating_out_of_order_are_seen() {
        let three = BTreeMap::from([
            pod(0, "a", true, "v1"),
            pod(1, "b", true, "v1"),
            pod(2, "c", true, "v1"),
        ]);
        let mut lower_first = three.clone();
        lower_first.remove(&1);
        assert!(breach(&Order::Stop, &three, &lower_first).is_some());
        let mut last_first = three.clone();
        last_first.remove(&2);
        assert_eq!(breach(&Order::Stop, &three, &last_first), None);

        let update = |from| Order::Update {
            image: "v2".into(),
            from,
        };
        let mut middle = three.clone();
        middle.insert(1, pod(1, "d", false, "v2").1);
        assert!(breach(&update(1), &three, &middle).is_some());
        let mut last = three.clone();
        last.insert(2, pod(2, "e", false, "v2").1);
        assert_eq!(breach(&update(1), &three, &last), None);
        let mut below = last.clone();
        below.insert(0, pod(0, "f", false, "v2").1);
        assert!(breach(&update(1), &last, &below).is_some());
    }
}
