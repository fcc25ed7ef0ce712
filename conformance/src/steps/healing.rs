//! Sentences about failures and how the cluster heals (`features/self-healing.feature`).
//!
//! A fault is aimed at something the scenario names by its part, never by its name: "one
//! replica of deployment web" (the first by name, so a run is repeatable), "the node
//! running the most replicas of deployment web" (ties go to the first by name). The node
//! becomes the *failed* node (lost or cut off) or the *drained* node for the steps that
//! follow; what it ran just before is noted, and so is the node itself, so the harness can
//! bring it back and check that it is as it was ([`FailedNode`]).
//!
//! Every wait is a "within N seconds" step that records how long the system took, and, for
//! what follows a fault, how long after the fault that was. Replicas being deleted
//! (*terminating*) no longer count as replicas of their deployment, as in Kubernetes; a
//! deployment that "keeps exactly N replicas" has no other, terminating or not.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, anyhow};
use cucumber::{given, then, when};

use super::placement::{deploy_probe, describe_nodes, list, role_node};
use super::{
    Bound, StepResult, describe, describe_all, exactly_running, fail, grace_for, plural,
    probe_spec, stopping_after, wait_for_replica, wait_for_replicas, wait_for_running,
};
use crate::driver::{DeploymentSpec, Fault, Phase, Placement, Replica};
use crate::world::{ConformanceWorld, FailedNode, NodeChange, NodeFault};

/// How long the replicas of a deployment may take to be running in a `Given` (a
/// precondition, measured all the same).
const START_SECONDS: u64 = 60;

/// The role of a node the scenario made fail.
const FAILED: &str = "failed";

/// The role of a node the scenario drained.
const DRAINED: &str = "drained";

// --- preconditions ------------------------------------------------------------------------

#[given(expr = "a deployment {string} of {int} probe replica(s) is running")]
async fn running_deployment(
    world: &mut ConformanceWorld,
    name: String,
    replicas: usize,
) -> StepResult {
    let count = u32::try_from(replicas).context("too many replicas")?;
    deploy_probe(world, name.clone(), count, Placement::default()).await?;
    wait_for_running(world, &name, START_SECONDS, replicas).await?;
    Ok(())
}

/// Probe replicas that take `stop` seconds to stop once asked to (`STOP_AFTER`), given
/// `grace` seconds to do it before they are killed.
async fn deploy_slow_stopping(
    world: &mut ConformanceWorld,
    name: String,
    replicas: usize,
    stop: u32,
    grace: u32,
) -> StepResult {
    let spec = DeploymentSpec {
        replicas: u32::try_from(replicas).context("too many replicas")?,
        ..probe_spec(&*world.driver()?, &name, "v1")
    };
    let spec = stopping_after(spec, stop, grace);
    let namespace = world.namespace().await?;
    world.driver()?.deploy(&namespace, &spec).await?;
    wait_for_running(world, &name, START_SECONDS, replicas).await?;
    Ok(())
}

#[given(
    expr = "a deployment {string} of {int} probe replica(s) that take(s) {int} seconds to stop is running"
)]
async fn slow_stopping_deployment(
    world: &mut ConformanceWorld,
    name: String,
    replicas: usize,
    stop: u32,
) -> StepResult {
    deploy_slow_stopping(world, name, replicas, stop, grace_for(stop)).await
}

#[given(
    expr = "a deployment {string} of {int} probe replica(s) that take(s) {int} seconds to stop, given {int} seconds to do it, is running"
)]
async fn too_slow_stopping_deployment(
    world: &mut ConformanceWorld,
    name: String,
    replicas: usize,
    stop: u32,
    grace: u32,
) -> StepResult {
    deploy_slow_stopping(world, name, replicas, stop, grace).await
}

// --- faults on one replica ----------------------------------------------------------------

#[when(expr = "the container of one replica of deployment {string} is killed")]
async fn kill_container(world: &mut ConformanceWorld, deployment: String) -> StepResult {
    let (victim, all) = pick_replica(world, &deployment).await?;
    let fault = Fault::KillContainer {
        namespace: world.namespace().await?,
        replica: victim.name.clone(),
    };
    inject(world, &fault).await?;
    println!("      killed the container of {}", describe(&victim));
    world.victim = Some(victim);
    world.before_fault = all;
    Ok(())
}

#[when(expr = "one replica of deployment {string} is deleted")]
async fn delete_replica(world: &mut ConformanceWorld, deployment: String) -> StepResult {
    let (victim, all) = pick_replica(world, &deployment).await?;
    let fault = Fault::DeleteReplica {
        namespace: world.namespace().await?,
        replica: victim.name.clone(),
    };
    inject(world, &fault).await?;
    println!("      deleted {}", describe(&victim));
    world.victim = Some(victim);
    world.before_fault = all;
    Ok(())
}

#[then(
    expr = "within {int} seconds that replica has restarted and is running again, as the same pod on the same node"
)]
async fn victim_restarted_in_place(world: &mut ConformanceWorld, seconds: u64) -> StepResult {
    let victim = victim(world)?;
    let replica = wait_for_replica(
        world,
        &victim.name,
        seconds,
        "restarted in place and running again",
        |now| {
            let same = now.id == victim.id && now.node == victim.node;
            if same && now.restarts > victim.restarts && now.phase == Phase::Running && now.ready {
                Ok(())
            } else {
                Err(describe(now))
            }
        },
    )
    .await?;
    println!(
        "      {} restarts before, {} now",
        victim.restarts, replica.restarts
    );
    Ok(())
}

#[then(expr = "the deployment {string} still has the same {int} replicas")]
async fn same_replicas(
    world: &mut ConformanceWorld,
    deployment: String,
    count: usize,
) -> StepResult {
    let now = list(world, &deployment).await?;
    let ids = |replicas: &[Replica]| -> BTreeSet<String> {
        replicas
            .iter()
            .filter(|replica| !replica.terminating)
            .map(|replica| replica.id.clone())
            .collect()
    };
    let before = ids(&world.before_fault);
    if before.len() != count || ids(&now) != before {
        fail!(
            "deployment {deployment} should still have the same {count} replicas; before the \
             fault: {}; now: {}",
            describe_all(&world.before_fault),
            describe_all(&now)
        );
    }
    Ok(())
}

#[then(
    expr = "within {int} seconds {int} replica(s) of deployment {string} is/are running, none of them the deleted one"
)]
async fn replaced(
    world: &mut ConformanceWorld,
    seconds: u64,
    count: usize,
    deployment: String,
) -> StepResult {
    let victim = victim(world)?;
    let replicas = wait_for_replicas(
        world,
        &deployment,
        seconds,
        &format!(
            "{} running, {} replaced",
            plural(count, "replica"),
            victim.name
        ),
        |replicas| {
            let active: Vec<&Replica> = replicas.iter().filter(|r| !r.terminating).collect();
            let all_running = active.iter().all(|r| r.phase == Phase::Running);
            let victim_gone = active.iter().all(|r| r.id != victim.id);
            if active.len() == count && all_running && victim_gone {
                Ok(())
            } else {
                Err(describe_all(replicas))
            }
        },
    )
    .await?;
    let before: BTreeSet<&str> = world.before_fault.iter().map(|r| r.id.as_str()).collect();
    let new: Vec<String> = replicas
        .iter()
        .filter(|replica| !replica.terminating && !before.contains(replica.id.as_str()))
        .map(describe)
        .collect();
    println!("      {} replaced by {}", victim.name, new.join("; "));
    Ok(())
}

#[then(expr = "the deleted replica is still stopping")]
async fn still_stopping(world: &mut ConformanceWorld) -> StepResult {
    let (victim, deployment) = victim_and_deployment(world)?;
    let replicas = list(world, &deployment).await?;
    match replicas.iter().find(|replica| replica.id == victim.id) {
        Some(replica) if replica.terminating => {
            println!("      still stopping: {}", describe(replica));
            Ok(())
        }
        Some(replica) => fail!(
            "the deleted replica is not on its way out: {}",
            describe(replica)
        ),
        None => fail!(
            "the deleted replica {} is gone already: its replacement may have waited for it",
            victim.name
        ),
    }
}

#[then(
    expr = "within {int} seconds the deleted replica is gone, no sooner than {int} seconds after it was deleted"
)]
async fn gone_after_grace(
    world: &mut ConformanceWorld,
    seconds: u64,
    not_before: u64,
) -> StepResult {
    let (victim, deployment) = victim_and_deployment(world)?;
    let (_, deleted_at) = world
        .last_fault()
        .ok_or_else(|| anyhow!("no replica was deleted earlier in this scenario"))?;
    let id = victim.id.clone();
    wait_for_replicas(
        world,
        &deployment,
        seconds,
        &format!("{} gone", victim.name),
        |replicas| match replicas.iter().find(|replica| replica.id == id) {
            Some(replica) => Err(describe(replica)),
            None => Ok(()),
        },
    )
    .await?;
    let after = deleted_at.elapsed();
    if after < std::time::Duration::from_secs(not_before) {
        fail!(
            "the deleted replica was gone {:.1} s after it was deleted, before its {not_before} s to stop were up: it was killed, not let stop",
            after.as_secs_f64()
        );
    }
    println!(
        "      gone {:.1} s after it was deleted",
        after.as_secs_f64()
    );
    Ok(())
}

// --- a deployment deleted -------------------------------------------------------------------

#[when(expr = "the deployment {string} is deleted")]
async fn delete_deployment(world: &mut ConformanceWorld, deployment: String) -> StepResult {
    world.before_fault = list(world, &deployment).await?;
    let namespace = world.namespace().await?;
    world
        .driver()?
        .delete_deployment(&namespace, &deployment)
        .await?;
    Ok(())
}

#[then(expr = "within {int} seconds none of the replicas of deployment {string} is left")]
async fn none_left(world: &mut ConformanceWorld, seconds: u64, deployment: String) -> StepResult {
    let noted = world.before_fault.clone();
    if noted.is_empty() {
        fail!("deployment {deployment} had no replica when it was deleted");
    }
    let wait = super::Wait::new(
        seconds,
        format!(
            "none of the {} replicas of deployment {deployment} left",
            noted.len()
        ),
    );
    loop {
        let mut left = Vec::new();
        for replica in &noted {
            match super::read_replica(world, &replica.name).await {
                Ok(now) if now.id == replica.id => left.push(describe(&now)),
                Ok(_) => {}
                Err(error) if format!("{error:#}").contains("does not exist") => {}
                Err(error) => left.push(format!("{}: {error:#}", replica.name)),
            }
        }
        if left.is_empty() {
            wait.done(world);
            return Ok(());
        }
        wait.again(&left.join("; ")).await?;
    }
}

// --- faults on a node -------------------------------------------------------------------------

#[when(expr = "the node running the most replicas of deployment {string} is lost")]
async fn lose_node(world: &mut ConformanceWorld, deployment: String) -> StepResult {
    let node = busiest_node(world, &deployment, FAILED).await?;
    fail_node(world, Fault::LoseNode { node }, NodeFault::Lost).await
}

#[when(
    expr = "the node running the most replicas of deployment {string} is cut off from the control plane"
)]
async fn partition_node(world: &mut ConformanceWorld, deployment: String) -> StepResult {
    let node = busiest_node(world, &deployment, FAILED).await?;
    fail_node(world, Fault::PartitionNode { node }, NodeFault::Partitioned).await
}

#[when("the partition heals")]
async fn heal(world: &mut ConformanceWorld) -> StepResult {
    inject(world, &Fault::Heal).await?;
    for failed in &mut world.failed_nodes {
        if failed.fault == NodeFault::Partitioned {
            failed.back = true;
        }
    }
    Ok(())
}

#[when(expr = "the {word} node is started again")]
async fn restart_node(world: &mut ConformanceWorld, role: String) -> StepResult {
    let node = role_node(world, &role)?;
    let started = std::time::Instant::now();
    inject(world, &Fault::RestartNode { node: node.clone() }).await?;
    for failed in &mut world.failed_nodes {
        if failed.before.name == node {
            failed.back = true;
        }
    }
    println!(
        "      node {node} is ready again after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[then(
    expr = "within {bound} the replicas of deployment {string} on the {word} node are in phase {word}"
)]
async fn replicas_on_node_in_phase(
    world: &mut ConformanceWorld,
    bound: Bound,
    deployment: String,
    role: String,
    phase: String,
) -> StepResult {
    let seconds = bound.resolve(world)?;
    let node = role_node(world, &role)?;
    let phase: Phase = phase.parse()?;
    let there: Vec<Replica> = world
        .before_fault
        .iter()
        .filter(|replica| replica.node.as_deref() == Some(node.as_str()))
        .cloned()
        .collect();
    if there.is_empty() {
        fail!("no replica of deployment {deployment} was noted on the {role} node {node}");
    }
    wait_for_replicas(
        world,
        &deployment,
        seconds,
        &format!(
            "the {} on the {role} node {node} in phase {phase}",
            plural(there.len(), "replica")
        ),
        |replicas| {
            let all_in_phase = there.iter().all(|noted| {
                replicas
                    .iter()
                    .any(|replica| replica.id == noted.id && replica.phase == phase)
            });
            if all_in_phase {
                Ok(())
            } else {
                Err(describe_all(replicas))
            }
        },
    )
    .await?;
    Ok(())
}

#[then(
    expr = "within {bound}(,) {int} replica(s) of deployment {string} is/are running, none of them on the {word} node"
)]
async fn running_elsewhere(
    world: &mut ConformanceWorld,
    bound: Bound,
    count: usize,
    deployment: String,
    role: String,
) -> StepResult {
    let seconds = bound.resolve(world)?;
    let node = role_node(world, &role)?;
    let what = format!(
        "{} running, none on the {role} node {node}",
        plural(count, "replica")
    );
    wait_for_replicas(world, &deployment, seconds, &what, |replicas| {
        let on_node = |replica: &&Replica| replica.node.as_deref() == Some(node.as_str());
        // What runs elsewhere must be exactly the deployment's replicas; what is left on
        // the node (unreachable, or on its way out) must not be reported running.
        let elsewhere: Vec<&Replica> = replicas
            .iter()
            .filter(|replica| !on_node(replica) && !replica.terminating)
            .collect();
        let settled = elsewhere.len() == count
            && elsewhere.iter().all(|r| r.phase == Phase::Running)
            && !replicas
                .iter()
                .filter(on_node)
                .any(|r| r.phase == Phase::Running && !r.terminating);
        if settled {
            Ok(())
        } else {
            Err(describe_all(replicas))
        }
    })
    .await?;
    Ok(())
}

#[then(expr = "for {int} seconds deployment {string} keeps exactly {int} replica(s), all running")]
async fn keeps_exactly(
    world: &mut ConformanceWorld,
    seconds: u64,
    deployment: String,
    count: usize,
) -> StepResult {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < until {
        let replicas = list(world, &deployment).await?;
        if let Err(seen) = exactly_running(&replicas, count) {
            fail!(
                "deployment {deployment} should keep exactly {}, all running; it has: {seen}",
                plural(count, "replica")
            );
        }
        tokio::time::sleep(super::POLL).await;
    }
    Ok(())
}

// --- draining a node ----------------------------------------------------------------------------

#[when(expr = "the node running the most replicas of deployment {string} is drained")]
async fn drain(world: &mut ConformanceWorld, deployment: String) -> StepResult {
    let node = busiest_node(world, &deployment, DRAINED).await?;
    let driver = world.driver()?;
    // Recorded before it is done: a half-done drain is undone all the same.
    world
        .node_changes
        .push(NodeChange::Cordon { node: node.clone() });
    driver
        .drain_node(&node)
        .await
        .with_context(|| format!("failed to drain node {node}"))?;
    Ok(())
}

#[when(expr = "the {word} node is uncordoned")]
async fn uncordon(world: &mut ConformanceWorld, role: String) -> StepResult {
    let node = role_node(world, &role)?;
    world
        .driver()?
        .cordon_node(&node, false)
        .await
        .with_context(|| format!("failed to uncordon node {node}"))?;
    world
        .node_changes
        .retain(|change| *change != NodeChange::Cordon { node: node.clone() });
    Ok(())
}

#[then(expr = "the {word} node is reported as not accepting new replicas")]
async fn reported_cordoned(world: &mut ConformanceWorld, role: String) -> StepResult {
    let node = role_node(world, &role)?;
    let nodes = world.driver()?.list_nodes().await?;
    match nodes.iter().find(|status| status.name == node) {
        Some(status) if !status.schedulable => Ok(()),
        _ => fail!(
            "the {role} node {node} should be reported cordoned; the nodes are: {}",
            describe_nodes(&nodes)
        ),
    }
}

#[when(expr = "the deployment {string} is scaled to {int} replica(s)")]
async fn scale(world: &mut ConformanceWorld, deployment: String, replicas: u32) -> StepResult {
    let namespace = world.namespace().await?;
    world
        .driver()?
        .scale(&namespace, &deployment, replicas)
        .await?;
    Ok(())
}

#[then(expr = "at least {int} replica(s) of deployment {string} run(s) on the {word} node")]
async fn some_run_on(
    world: &mut ConformanceWorld,
    count: usize,
    deployment: String,
    role: String,
) -> StepResult {
    let node = role_node(world, &role)?;
    let replicas = list(world, &deployment).await?;
    let there = replicas
        .iter()
        .filter(|r| r.node.as_deref() == Some(node.as_str()) && r.phase == Phase::Running)
        .count();
    if there < count {
        fail!(
            "at least {} of deployment {deployment} should run on the {role} node {node}; {there} do: {}",
            plural(count, "replica"),
            describe_all(&replicas)
        );
    }
    println!("      {} on node {node}", plural(there, "replica"));
    Ok(())
}

// --- helpers ------------------------------------------------------------------------------------

/// Injects a fault, noting when, so what is measured after it says how long after.
/// Notes the replicas of `deployment` as they are, then injects `fault`: the steps after
/// it compare what runs with what ran before.
pub(super) async fn inject_while_running(
    world: &mut ConformanceWorld,
    deployment: &str,
    fault: &Fault,
) -> anyhow::Result<()> {
    let namespace = world.namespace().await?;
    world.before_fault = world
        .driver()?
        .list_replicas(&namespace, deployment)
        .await?;
    inject(world, fault).await
}

pub(super) async fn inject(world: &mut ConformanceWorld, fault: &Fault) -> anyhow::Result<()> {
    let driver = world.driver()?;
    world.fault_injected(fault);
    driver
        .inject(fault)
        .await
        .with_context(|| format!("driver {} failed to {fault}", driver.name()))
}

/// The running replica of a deployment a fault aims at (the first by name), and all its
/// replicas as they are now.
async fn pick_replica(
    world: &mut ConformanceWorld,
    deployment: &str,
) -> anyhow::Result<(Replica, Vec<Replica>)> {
    world.watch(deployment).await?;
    world.victim_deployment = Some(deployment.to_owned());
    let replicas = list(world, deployment).await?;
    let victim = replicas
        .iter()
        .filter(|replica| replica.phase == Phase::Running && !replica.terminating)
        .min_by(|a, b| a.name.cmp(&b.name))
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "deployment {deployment} has no running replica to aim at: {}",
                describe_all(&replicas)
            )
        })?;
    Ok((victim, replicas))
}

/// The replica the scenario aimed a fault at, and the deployment it is a replica of.
fn victim_and_deployment(world: &ConformanceWorld) -> anyhow::Result<(Replica, String)> {
    let deployment = world
        .victim_deployment
        .clone()
        .ok_or_else(|| anyhow!("no fault was aimed at a replica earlier in this scenario"))?;
    Ok((victim(world)?, deployment))
}

/// The replica the scenario aimed a fault at.
fn victim(world: &ConformanceWorld) -> anyhow::Result<Replica> {
    world
        .victim
        .clone()
        .ok_or_else(|| anyhow!("no fault was aimed at a replica earlier in this scenario"))
}

/// Finds the node running the most replicas of a deployment (the first by name among
/// equals), gives it `role`, and notes the replicas as they are.
async fn busiest_node(
    world: &mut ConformanceWorld,
    deployment: &str,
    role: &str,
) -> anyhow::Result<String> {
    world.watch(deployment).await?;
    let replicas = list(world, deployment).await?;
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for replica in replicas
        .iter()
        .filter(|r| r.phase == Phase::Running && !r.terminating)
    {
        if let Some(node) = replica.node.as_deref() {
            *per_node.entry(node).or_default() += 1;
        }
    }
    // `max_by_key` keeps the last of equals; reversed, that is the first by name.
    let (node, count) = per_node
        .iter()
        .rev()
        .max_by_key(|(_, count)| **count)
        .map(|(node, count)| ((*node).to_owned(), *count))
        .ok_or_else(|| {
            anyhow!(
                "deployment {deployment} has no running replica on any node: {}",
                describe_all(&replicas)
            )
        })?;
    println!(
        "      replicas of deployment {deployment} per node: {per_node:?}; the {role} node is \
         {node}, with {}",
        plural(count, "replica")
    );
    world.roles.insert(role.to_owned(), node.clone());
    world.before_fault = replicas;
    Ok(node)
}

/// Makes a node fail, noting it first (as it is now) so the harness brings it back.
async fn fail_node(world: &mut ConformanceWorld, fault: Fault, how: NodeFault) -> StepResult {
    let (Fault::LoseNode { node } | Fault::PartitionNode { node }) = &fault else {
        fail!("{fault} is not a fault of a node");
    };
    let nodes = world.driver()?.list_nodes().await?;
    let before = nodes
        .into_iter()
        .find(|status| status.name == *node)
        .ok_or_else(|| anyhow!("node {node} is not a node of the cluster"))?;
    // Recorded before it is done: a half-done fault is undone all the same.
    world.failed_nodes.push(FailedNode {
        before,
        fault: how,
        back: false,
    });
    inject(world, &fault).await?;
    Ok(())
}
