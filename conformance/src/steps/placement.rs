//! Sentences about nodes and where replicas land (`features/scheduling.feature`).
//!
//! Nodes are referred to by role, never by name: "one of the nodes" becomes "the labelled
//! node" or "the tainted node"; an added node is "the new node". The roles are kept in
//! the World, and so are the changes made to nodes, which the harness undoes after the
//! scenario.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow};
use cucumber::{given, then, when};

use super::{
    StepResult, describe, describe_all, fail, parse_labels, plural, probe_spec, unscheduled_naming,
    wait_for_replica, wait_for_replicas, wait_for_running,
};
use crate::driver::{DeploymentSpec, NodeSpec, NodeStatus, Phase, Placement, Resources, Taint};
use crate::world::{ConformanceWorld, NodeChange};

/// How long the cluster may take to show the expected ready nodes at the start of a
/// scenario (a precondition, not a measurement).
const NODES_SETTLE_SECONDS: u64 = 30;

/// The role of the node a scenario labelled.
const LABELLED: &str = "labelled";

/// The role of the node a scenario tainted.
const TAINTED: &str = "tainted";

/// The role of the node a scenario added.
const NEW: &str = "new";

// --- the nodes --------------------------------------------------------------------------

#[given(expr = "a cluster of {int} ready nodes")]
async fn cluster_of_ready_nodes(world: &mut ConformanceWorld, count: usize) -> StepResult {
    let driver = world.driver()?;
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_secs(NODES_SETTLE_SECONDS);
    loop {
        let nodes = driver.list_nodes().await?;
        let ready: Vec<&NodeStatus> = nodes.iter().filter(|node| node.ready).collect();
        if ready.len() == count && ready.iter().all(|node| node.schedulable) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            fail!(
                "the cluster should have {count} ready, schedulable nodes, but has: {}",
                describe_nodes(&nodes)
            );
        }
        tokio::time::sleep(super::POLL).await;
    }
}

#[given(expr = "one of the nodes is labelled {string}")]
async fn a_node_is_labelled(world: &mut ConformanceWorld, label: String) -> StepResult {
    let node = pick_node(world).await?;
    label_node(world, &node, &label).await?;
    world.roles.insert(LABELLED.to_owned(), node);
    Ok(())
}

#[given(expr = "one of the nodes is labelled {string} and tainted {string}")]
async fn a_node_is_labelled_and_tainted(
    world: &mut ConformanceWorld,
    label: String,
    taint: String,
) -> StepResult {
    let node = pick_node(world).await?;
    label_node(world, &node, &label).await?;
    let taint: Taint = taint.parse()?;
    let driver = world.driver()?;
    let had_it = driver
        .list_nodes()
        .await?
        .iter()
        .any(|status| status.name == node && status.taints.contains(&taint));
    if !had_it {
        // Recorded before it is done: a half-done change is undone all the same.
        world.node_changes.push(NodeChange::Taint {
            node: node.clone(),
            taint: taint.clone(),
        });
    }
    driver
        .taint_node(&node, &taint, true)
        .await
        .with_context(|| format!("failed to taint node {node} with {taint}"))?;
    world.roles.insert(LABELLED.to_owned(), node.clone());
    world.roles.insert(TAINTED.to_owned(), node);
    Ok(())
}

#[when(expr = "a node with room for the pod {string} joins the cluster")]
async fn a_node_with_room_joins(world: &mut ConformanceWorld, pod: String) -> StepResult {
    let wanted =
        world.requested_millicpu.get(&pod).copied().ok_or_else(|| {
            anyhow!("pod {pod} was not created by this scenario with a CPU request")
        })?;
    let name = format!("{}-node", world.namespace_name()?);
    let spec = NodeSpec {
        name: name.clone(),
        // Room for the pod, and a CPU to spare.
        allocatable: Resources {
            millicpu: Some(wanted + 1000),
            memory_bytes: None,
        },
        ..NodeSpec::default()
    };
    let driver = world.driver()?;
    // Recorded before it is asked for: a node that half joined is removed all the same.
    world.added_nodes.push(name.clone());
    let started = std::time::Instant::now();
    driver
        .add_node(&spec)
        .await
        .with_context(|| format!("failed to add node {name} with room for pod {pod}"))?;
    println!(
        "      node {name} ({} CPU) joined and is ready after {:.1} s",
        (wanted + 1000) / 1000,
        started.elapsed().as_secs_f64()
    );
    world.roles.insert(NEW.to_owned(), name);
    Ok(())
}

// --- deployments with a placement -------------------------------------------------------

#[when(expr = "a deployment {string} of {int} probe replica(s) is created")]
async fn probe_deployment(world: &mut ConformanceWorld, name: String, replicas: u32) -> StepResult {
    deploy_probe(world, name, replicas, Placement::default()).await
}

#[when(
    expr = "a deployment {string} of {int} probe replica(s) selecting nodes {string} is created"
)]
async fn probe_deployment_selecting(
    world: &mut ConformanceWorld,
    name: String,
    replicas: u32,
    selector: String,
) -> StepResult {
    let placement = Placement {
        node_selector: parse_labels(&selector)?,
        tolerations: Vec::new(),
    };
    deploy_probe(world, name, replicas, placement).await
}

#[when(
    expr = "a deployment {string} of {int} probe replica(s) selecting nodes {string} and tolerating {string} is created"
)]
async fn probe_deployment_selecting_tolerating(
    world: &mut ConformanceWorld,
    name: String,
    replicas: u32,
    selector: String,
    taint: String,
) -> StepResult {
    let placement = Placement {
        node_selector: parse_labels(&selector)?,
        tolerations: vec![taint.parse()?],
    };
    deploy_probe(world, name, replicas, placement).await
}

#[then(expr = "within {int} seconds {int} replica(s) of deployment {string} is/are running")]
async fn replicas_running(
    world: &mut ConformanceWorld,
    seconds: u64,
    count: usize,
    deployment: String,
) -> StepResult {
    wait_for_running(world, &deployment, seconds, count).await?;
    Ok(())
}

#[then(
    expr = "within {int} seconds {int} replica(s) of deployment {string} is/are pending, not scheduled, for a reason naming {string}"
)]
async fn replicas_unscheduled(
    world: &mut ConformanceWorld,
    seconds: u64,
    count: usize,
    deployment: String,
    word: String,
) -> StepResult {
    let replicas = wait_for_replicas(
        world,
        &deployment,
        seconds,
        &format!(
            "{} pending, not scheduled, for a reason naming {word:?}",
            plural(count, "replica")
        ),
        |replicas| {
            let unscheduled = replicas
                .iter()
                .filter(|replica| unscheduled_naming(replica, &word).is_ok());
            if replicas.len() == count && unscheduled.count() == count {
                Ok(())
            } else {
                Err(describe_all(replicas))
            }
        },
    )
    .await?;
    for replica in &replicas {
        println!("      {}", describe(replica));
    }
    Ok(())
}

#[then(expr = "every node runs {int} replica(s) of deployment {string}")]
async fn every_node_runs(
    world: &mut ConformanceWorld,
    count: usize,
    deployment: String,
) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let replicas = driver.list_replicas(&namespace, &deployment).await?;
    let nodes = driver.list_nodes().await?;
    let mut per_node: BTreeMap<&str, usize> = nodes
        .iter()
        .filter(|node| node.ready)
        .map(|node| (node.name.as_str(), 0))
        .collect();
    for replica in &replicas {
        let Some(node) = replica.node.as_deref() else {
            fail!("replica {} is not placed on any node", describe(replica));
        };
        match per_node.get_mut(node) {
            Some(placed) => *placed += 1,
            None => fail!(
                "replica {} is on {node}, which is not a ready node of the cluster",
                describe(replica)
            ),
        }
    }
    if per_node.values().any(|placed| *placed != count) {
        fail!(
            "replicas of deployment {deployment} per node: {per_node:?}; expected {count} on every node"
        );
    }
    Ok(())
}

#[then(expr = "every replica of deployment {string} runs on the {word} node")]
async fn every_replica_on(
    world: &mut ConformanceWorld,
    deployment: String,
    role: String,
) -> StepResult {
    let node = role_node(world, &role)?;
    let replicas = list(world, &deployment).await?;
    let elsewhere: Vec<String> = replicas
        .iter()
        .filter(|replica| replica.node.as_deref() != Some(node.as_str()))
        .map(describe)
        .collect();
    if replicas.is_empty() || !elsewhere.is_empty() {
        fail!(
            "every replica of deployment {deployment} should run on the {role} node {node}; not there: {}",
            if replicas.is_empty() {
                "no replicas at all".to_owned()
            } else {
                elsewhere.join("; ")
            }
        );
    }
    Ok(())
}

#[then(expr = "no replica of deployment {string} runs on the {word} node")]
async fn no_replica_on(
    world: &mut ConformanceWorld,
    deployment: String,
    role: String,
) -> StepResult {
    let node = role_node(world, &role)?;
    let replicas = list(world, &deployment).await?;
    let there: Vec<String> = replicas
        .iter()
        .filter(|replica| replica.node.as_deref() == Some(node.as_str()))
        .map(describe)
        .collect();
    if !there.is_empty() {
        fail!(
            "no replica of deployment {deployment} should run on the {role} node {node}, but these do: {}",
            there.join("; ")
        );
    }
    Ok(())
}

#[then(expr = "within {int} seconds the pod {string} is running on the {word} node")]
async fn pod_running_on(
    world: &mut ConformanceWorld,
    seconds: u64,
    pod: String,
    role: String,
) -> StepResult {
    let node = role_node(world, &role)?;
    wait_for_replica(
        world,
        &pod,
        seconds,
        &format!("running on the {role} node"),
        |replica| {
            if replica.phase == Phase::Running && replica.node.as_deref() == Some(node.as_str()) {
                Ok(())
            } else {
                Err(describe(replica))
            }
        },
    )
    .await?;
    Ok(())
}

// --- helpers ------------------------------------------------------------------------------

/// Creates a deployment of the probe (version v1) placed as asked.
pub(super) async fn deploy_probe(
    world: &mut ConformanceWorld,
    name: String,
    replicas: u32,
    placement: Placement,
) -> StepResult {
    let spec = DeploymentSpec {
        replicas,
        placement,
        ..probe_spec(&*world.driver()?, &name, "v1")
    };
    let namespace = world.namespace().await?;
    world.driver()?.deploy(&namespace, &spec).await?;
    Ok(())
}

/// Lists the replicas of a deployment, noting their phases.
pub(super) async fn list(
    world: &mut ConformanceWorld,
    deployment: &str,
) -> anyhow::Result<Vec<crate::driver::Replica>> {
    let namespace = world.namespace().await?;
    let replicas = world
        .driver()?
        .list_replicas(&namespace, deployment)
        .await?;
    replicas.iter().for_each(|replica| world.saw(replica));
    Ok(replicas)
}

/// Picks one ready node to label or taint: the last by name, so a run is repeatable.
async fn pick_node(world: &ConformanceWorld) -> anyhow::Result<String> {
    let nodes = world.driver()?.list_nodes().await?;
    nodes
        .iter()
        .filter(|node| node.ready && node.schedulable)
        .map(|node| node.name.clone())
        .max()
        .ok_or_else(|| anyhow!("the cluster has no ready node: {}", describe_nodes(&nodes)))
}

/// Sets the label `key=value` on a node, remembering what to restore.
async fn label_node(world: &mut ConformanceWorld, node: &str, label: &str) -> anyhow::Result<()> {
    let labels = parse_labels(label)?;
    let driver = world.driver()?;
    let before = driver
        .list_nodes()
        .await?
        .into_iter()
        .find(|status| status.name == node)
        .ok_or_else(|| anyhow!("node {node} is gone"))?;
    for (key, value) in labels {
        // Recorded before it is done: a half-done change is undone all the same.
        world.node_changes.push(NodeChange::Label {
            node: node.to_owned(),
            key: key.clone(),
            previous: before.labels.get(&key).cloned(),
        });
        driver
            .label_node(node, &key, Some(&value))
            .await
            .with_context(|| format!("failed to label node {node} with {key}={value}"))?;
    }
    Ok(())
}

/// The node playing `role` in this scenario.
pub(super) fn role_node(world: &ConformanceWorld, role: &str) -> anyhow::Result<String> {
    world.roles.get(role).cloned().ok_or_else(|| {
        anyhow!(
            "this scenario has no {role} node (known: {:?})",
            world.roles.keys().collect::<Vec<_>>()
        )
    })
}

/// Nodes in a few words each, for errors.
pub(super) fn describe_nodes(nodes: &[NodeStatus]) -> String {
    if nodes.is_empty() {
        return "no nodes".to_owned();
    }
    nodes
        .iter()
        .map(|node| {
            format!(
                "{} ({}{}{})",
                node.name,
                if node.ready { "ready" } else { "not ready" },
                if node.schedulable { "" } else { ", cordoned" },
                if node.taints.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", tainted {}",
                        node.taints
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
