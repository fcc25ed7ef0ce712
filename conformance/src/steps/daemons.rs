//! Sentences about daemons (`features/daemons.feature`): one pod on every node that may run
//! it, and none on any other.
//!
//! A node *may* run a daemon when it is ready, untainted, and carries the labels the daemon
//! asks for; the nodes come from the driver's list, so a cluster of any size is judged the
//! same way.

use std::collections::BTreeMap;

use cucumber::{given, then, when};

use super::placement::{describe_nodes, role_node};
use super::{StepResult, Wait, describe, fail, parse_labels};
use crate::driver::{DaemonSpec, NodeStatus, Phase, Replica};
use crate::world::ConformanceWorld;

async fn create(
    world: &mut ConformanceWorld,
    name: String,
    node_selector: BTreeMap<String, String>,
) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let daemon = DaemonSpec {
        image: driver.probe_image("v1"),
        name,
        node_selector,
    };
    driver.run_daemon(&namespace, &daemon).await?;
    world
        .daemon_selectors
        .insert(daemon.name, daemon.node_selector);
    Ok(())
}

#[when(expr = "a daemon {string} of probe pods is created")]
async fn daemon_created(world: &mut ConformanceWorld, name: String) -> StepResult {
    create(world, name, BTreeMap::new()).await
}

#[when(expr = "a daemon {string} of probe pods for nodes labelled {string} is created")]
async fn daemon_for_labelled(
    world: &mut ConformanceWorld,
    name: String,
    labels: String,
) -> StepResult {
    let selector = parse_labels(&labels)?;
    create(world, name, selector).await
}

#[given(expr = "a daemon {string} of probe pods runs on every node")]
async fn daemon_running(world: &mut ConformanceWorld, name: String) -> StepResult {
    create(world, name.clone(), BTreeMap::new()).await?;
    on_every_node(world, 60, name, None).await
}

#[when(expr = "the image of daemon {string} is changed to version {word}")]
async fn daemon_image(world: &mut ConformanceWorld, name: String, version: String) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let image = driver.probe_image(&version);
    driver.set_daemon_image(&namespace, &name, &image).await?;
    Ok(())
}

#[when(expr = "the {word} node loses its label {string}")]
async fn node_loses_label(world: &mut ConformanceWorld, role: String, key: String) -> StepResult {
    let node = role_node(world, &role)?;
    world.driver()?.label_node(&node, &key, None).await?;
    Ok(())
}

/// Whether a node may run a daemon asking for `selector`: ready, untainted, labelled.
fn may_run(node: &NodeStatus, selector: &BTreeMap<String, String>) -> bool {
    node.ready
        && node.taints.is_empty()
        && selector.iter().all(|(k, v)| node.labels.get(k) == Some(v))
}

/// The daemon's live pods (not being deleted) per node.
async fn pods_per_node(
    world: &mut ConformanceWorld,
    name: &str,
) -> anyhow::Result<(Vec<NodeStatus>, BTreeMap<String, Vec<Replica>>)> {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let nodes = driver.list_nodes().await?;
    let mut per_node: BTreeMap<String, Vec<Replica>> = BTreeMap::new();
    for pod in driver.list_daemon_pods(&namespace, name).await? {
        if !pod.terminating && !matches!(pod.phase, Phase::Succeeded | Phase::Failed) {
            per_node
                .entry(pod.node.clone().unwrap_or_else(|| "(no node)".into()))
                .or_default()
                .push(pod);
        }
    }
    Ok((nodes, per_node))
}

/// Waits until every node that may run the daemon runs exactly one pod of it, running (of
/// `image`, if given), and no other node runs one.
async fn on_every_node(
    world: &mut ConformanceWorld,
    seconds: u64,
    name: String,
    image: Option<String>,
) -> StepResult {
    let selector = world
        .daemon_selectors
        .get(&name)
        .cloned()
        .unwrap_or_default();
    let wait = Wait::new(
        seconds,
        format!("daemon {name} on every node that may run it"),
    );
    loop {
        let (nodes, mut per_node) = pods_per_node(world, &name).await?;
        let mut wrong = Vec::new();
        for node in &nodes {
            let pods = per_node.remove(&node.name).unwrap_or_default();
            let good = pods.len() == 1
                && pods[0].phase == Phase::Running
                && image
                    .as_ref()
                    .is_none_or(|i| pods[0].image.as_ref() == Some(i));
            if may_run(node, &selector) && !good {
                let seen: Vec<String> = pods.iter().map(describe).collect();
                wrong.push(format!(
                    "{} should run one, runs [{}]",
                    node.name,
                    seen.join("; ")
                ));
            } else if !may_run(node, &selector) && node.ready && !pods.is_empty() {
                wrong.push(format!(
                    "{} may not run it, yet runs {}",
                    node.name,
                    pods.len()
                ));
            }
        }
        for (node, pods) in per_node {
            wrong.push(format!(
                "{} pod(s) on {node}, not a node of the cluster",
                pods.len()
            ));
        }
        if nodes.iter().any(|n| may_run(n, &selector)) && wrong.is_empty() {
            wait.done(world);
            return Ok(());
        }
        let last = if wrong.is_empty() {
            format!("no node may run it: {}", describe_nodes(&nodes))
        } else {
            wrong.join("; ")
        };
        wait.again(&last).await?;
    }
}

#[then(
    expr = "within {int} seconds every node that may run daemon {string} runs exactly one pod of it"
)]
async fn every_node_runs_one(
    world: &mut ConformanceWorld,
    seconds: u64,
    name: String,
) -> StepResult {
    on_every_node(world, seconds, name, None).await
}

#[then(
    expr = "within {int} seconds every node that may run daemon {string} runs exactly one pod of it, of version {word}"
)]
async fn every_node_runs_version(
    world: &mut ConformanceWorld,
    seconds: u64,
    name: String,
    version: String,
) -> StepResult {
    let image = world.driver()?.probe_image(&version);
    on_every_node(world, seconds, name, Some(image)).await
}

#[then(expr = "only the {word} node runs a pod of daemon {string}")]
async fn only_node_runs(world: &mut ConformanceWorld, role: String, name: String) -> StepResult {
    let node = role_node(world, &role)?;
    let (_, per_node) = pods_per_node(world, &name).await?;
    let elsewhere: Vec<&String> = per_node.keys().filter(|n| **n != node).collect();
    if elsewhere.is_empty() && per_node.contains_key(&node) {
        return Ok(());
    }
    fail!("daemon {name} should run on the {role} node {node} alone; it runs on {per_node:?}")
}

#[then(expr = "within {int} seconds no node runs a pod of daemon {string}")]
async fn no_node_runs(world: &mut ConformanceWorld, seconds: u64, name: String) -> StepResult {
    let wait = Wait::new(seconds, format!("daemon {name} gone from every node"));
    loop {
        let (_, per_node) = pods_per_node(world, &name).await?;
        if per_node.is_empty() {
            wait.done(world);
            return Ok(());
        }
        let seen: Vec<String> = per_node
            .iter()
            .map(|(node, pods)| format!("{node}: {}", pods.len()))
            .collect();
        wait.again(&seen.join(", ")).await?;
    }
}
