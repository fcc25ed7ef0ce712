//! The machines of a cluster the kit did not start, when its nodes are containers on a
//! Docker engine the kit reaches — as kind and k3d make them, and as the reference makes
//! them with `--machines containers`.
//!
//! The [`kubernetes`](crate::kubernetes) driver finds each node's container by name
//! (`SHIPSHAPE_NODE_CONTAINERS`, `{node}` standing for the node's name; the node's name
//! itself by default) and hands the node faults to [`NodeContainers`], which does to a
//! node's container what would happen to the machine:
//!
//! - *lose a node*: its container gets SIGKILL, as a machine that loses power; whatever
//!   runs inside it — the node's agent, and, for kind and k3d, its pods — dies with it.
//!   *Restart a node* starts the same container again, as a machine that is switched
//!   back on. Both need a container that stays when it stops: one the engine removes when
//!   it stops (`AutoRemove`) could not be switched back on, so there the two faults are
//!   not applicable, and the report says why;
//! - *partition a node*: the links between its container and every other container on
//!   its networks, and those networks' gateways (this host, where a published API
//!   server's port is), are cut in the container's own network namespace ([`links`]);
//!   its agent and its pods keep running, but reach nothing and nothing reaches them.
//!   *Heal* restores the links.
//!
//! Faults of the control plane are not applicable: the kit does not know which machines
//! run it, nor how they are brought back.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use futures::FutureExt as _;

use crate::docker::Engine;
use crate::driver::{DriverFuture, Fault, Support};
use crate::kubernetes::Machines;
use crate::links;

/// Nodes that are containers on a Docker engine the kit reaches.
#[derive(Debug)]
pub struct NodeContainers {
    /// The engine.
    engine: Engine,
    /// Each node's container, by node name.
    containers: BTreeMap<String, String>,
    /// Why a lost node could not be started again, if so.
    not_restartable: Option<String>,
    /// The links cut, by node, until healed.
    cuts: tokio::sync::Mutex<BTreeMap<String, links::Cut>>,
}

impl NodeContainers {
    /// The machines of nodes whose containers on `engine` are `containers` (node name →
    /// container name), all running; an error if one is not.
    pub async fn new(
        engine: Engine,
        containers: BTreeMap<String, String>,
    ) -> anyhow::Result<NodeContainers> {
        let mut removed = Vec::new();
        for (node, container) in &containers {
            let machine = engine
                .machine(container)
                .await
                .map_err(|e| anyhow!("node {node}'s container {container}: {e:#}"))?;
            if machine.removed_when_stopped {
                removed.push(container.clone());
            }
        }
        let not_restartable = (!removed.is_empty()).then(|| {
            format!(
                "the engine removes the node containers when they stop ({}: AutoRemove), so a \
                 node that lost power could not be started again",
                removed.join(", ")
            )
        });
        Ok(NodeContainers {
            engine,
            containers,
            not_restartable,
            cuts: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// Node `node`'s container.
    fn container(&self, node: &str) -> anyhow::Result<&str> {
        self.containers
            .get(node)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("node {node} is not one of the nodes found as containers"))
    }

    async fn lose(&self, node: &str) -> anyhow::Result<()> {
        let container = self.container(node)?;
        self.engine.kill(container).await?;
        tracing::info!(%node, %container, "killed the node's container");
        Ok(())
    }

    async fn restart(&self, node: &str) -> anyhow::Result<()> {
        let container = self.container(node)?;
        // A node that still runs is switched off first, as a reboot does.
        if self.engine.machine(container).await.is_ok() {
            self.engine.kill(container).await?;
        }
        self.engine.start(container).await?;
        tracing::info!(%node, %container, "started the node's container again");
        Ok(())
    }

    async fn partition(&self, node: &str) -> anyhow::Result<()> {
        let mut cuts = self.cuts.lock().await;
        if cuts.contains_key(node) {
            bail!("node {node} is cut off already");
        }
        let container = self.container(node)?;
        let machine = self.engine.machine(container).await?;
        let own: Vec<std::net::IpAddr> = machine.addresses.values().copied().collect();
        let mut peers: Vec<std::net::IpAddr> = machine.gateways.values().copied().collect();
        for network in machine.addresses.keys() {
            peers.extend(self.engine.network_addresses(network).await?);
        }
        peers.retain(|peer| !own.contains(peer));
        peers.sort();
        peers.dedup();
        let cut = links::cut(machine.pid, peers).await?;
        tracing::info!(%node, peers = ?cut.peers, "cut the node's container off");
        cuts.insert(node.to_owned(), cut);
        Ok(())
    }

    async fn heal(&self) -> anyhow::Result<()> {
        let mut cuts = self.cuts.lock().await;
        let mut failures = Vec::new();
        while let Some((node, cut)) = cuts.pop_first() {
            if let Err(error) = links::heal(&cut).await {
                failures.push(format!("node {node}: {error:#}"));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("{}", failures.join("; "))
        }
    }
}

impl Machines for NodeContainers {
    fn describe(&self) -> String {
        let names: Vec<&str> = self.containers.values().map(String::as_str).collect();
        format!(
            "the nodes are containers on the Docker engine at {} ({}): the kit kills, starts \
             and cuts off those containers",
            self.engine.host(),
            names.join(", ")
        )
    }

    fn supports(&self, fault: &Fault) -> Support {
        match fault {
            Fault::LoseNode { .. } | Fault::RestartNode { .. } => match &self.not_restartable {
                None => Support::Yes,
                Some(why) => Support::No(why.clone()),
            },
            Fault::PartitionNode { .. } | Fault::Heal => match links::unavailable() {
                None => Support::Yes,
                Some(why) => Support::No(why),
            },
            Fault::RestartControlPlane
            | Fault::LoseControlPlaneLeader
            | Fault::LoseControlPlaneMemberAndData
            | Fault::PartitionControlPlaneLeader
            | Fault::HealControlPlane => Support::No(
                "the kit did not start this cluster's control plane and does not know which \
                 machines run it"
                    .to_owned(),
            ),
            Fault::KillContainer { .. } | Fault::DeleteReplica { .. } => Support::No(
                "the driver itself kills and deletes replicas; the machines do not".to_owned(),
            ),
        }
    }

    fn inject<'a>(&'a self, fault: &'a Fault) -> DriverFuture<'a, ()> {
        async move {
            if let Support::No(why) = self.supports(fault) {
                bail!("cannot {fault}: {why}");
            }
            match fault {
                Fault::LoseNode { node } => self.lose(node).await,
                Fault::RestartNode { node } => self.restart(node).await,
                Fault::PartitionNode { node } => self.partition(node).await,
                Fault::Heal => self.heal().await,
                other => bail!("cannot {other}"),
            }
        }
        .boxed()
    }

    /// Restores whatever links a run left cut.
    fn shut_down(&self) -> DriverFuture<'_, ()> {
        async { self.heal().await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machines(not_restartable: Option<&str>) -> NodeContainers {
        NodeContainers {
            engine: Engine::at("unix:///nowhere"),
            containers: BTreeMap::from([("node-1".to_owned(), "kind-worker".to_owned())]),
            not_restartable: not_restartable.map(str::to_owned),
            cuts: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    #[test]
    fn a_node_is_lost_and_started_again_only_if_its_container_stays_when_stopped() {
        let node = || "node-1".to_owned();
        let restartable = machines(None);
        assert_eq!(
            restartable.supports(&Fault::LoseNode { node: node() }),
            Support::Yes
        );
        assert_eq!(
            restartable.supports(&Fault::RestartNode { node: node() }),
            Support::Yes
        );
        let removed = machines(Some("removed when stopped"));
        for fault in [
            Fault::LoseNode { node: node() },
            Fault::RestartNode { node: node() },
        ] {
            assert_eq!(
                removed.supports(&fault),
                Support::No("removed when stopped".to_owned())
            );
        }
        assert!(matches!(
            removed.supports(&Fault::RestartControlPlane),
            Support::No(_)
        ));
    }

    #[tokio::test]
    async fn a_node_that_is_not_a_container_gets_no_fault() {
        let error = machines(None)
            .inject(&Fault::LoseNode {
                node: "node-9".to_owned(),
            })
            .await
            .expect_err("node-9 is not one of them");
        assert!(
            error
                .to_string()
                .contains("node node-9 is not one of the nodes"),
            "{error:#}"
        );
    }
}
