//! # A whole cluster in one process: what `shipshape up` runs
//!
//! The control plane (with its scheduler and controllers), N node agents and the service
//! proxy, all as tasks of this process, on the local Docker engine. Starting builds the images (offline) and
//! removes whatever a killed earlier run on the same data directory left behind; stopping
//! removes every container it made. The pod network stays: every cluster on the engine
//! shares it (see [`runtime`]'s essay).

use std::path::PathBuf;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::agent::{self, AgentConfig, runtime};
use crate::control_plane::{ControlPlane, ControlPlaneConfig};
use crate::controllers::node_lifecycle::NodeLifecycleConfig;
use crate::images;

/// A running local cluster.
pub struct LocalCluster {
    control_plane: ControlPlane,
    docker: Option<bollard::Docker>,
    stop: watch::Sender<bool>,
    agents: JoinSet<()>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("control_plane", &self.control_plane)
            .finish_non_exhaustive()
    }
}

impl LocalCluster {
    /// Starts the control plane and `nodes` node agents (`node-1`...). With 0 nodes, Docker
    /// is not needed.
    pub async fn start(config: ControlPlaneConfig, nodes: u32) -> anyhow::Result<LocalCluster> {
        Self::start_with(config, nodes, NodeLifecycleConfig::default()).await
    }

    /// [`LocalCluster::start`], with the node lifecycle timing given.
    pub async fn start_with(
        config: ControlPlaneConfig,
        nodes: u32,
        node_lifecycle: NodeLifecycleConfig,
    ) -> anyhow::Result<LocalCluster> {
        let data_dir: PathBuf = config.data_dir.clone();
        // Docker first: without it there is no cluster to speak of, so say so at once.
        let docker = if nodes > 0 {
            let docker = runtime::connect().await?;
            images::ensure(&docker).await?;
            Some(docker)
        } else {
            None
        };
        let mut control_plane = ControlPlane::start(config).await?;
        control_plane.start_components_with(node_lifecycle)?;
        let (stop, stopped) = watch::channel(false);
        let mut agents = JoinSet::new();
        if let Some(docker) = &docker {
            let cluster = control_plane.cluster_id().to_owned();
            let reaped = runtime::reap(docker, &cluster).await?;
            if reaped > 0 {
                tracing::info!(reaped, "removed containers a previous run left behind");
            }
            runtime::ensure_network(docker).await?;
            let creds = control_plane.credentials();
            // The service proxy: node ports on loopback and on the pod network's gateway.
            let gateway = runtime::network_gateway(docker).await;
            let client = creds
                .client()
                .context("failed to build the proxy's client")?;
            let stopped_proxy = stopped.clone();
            agents.spawn(crate::proxy::run(
                client,
                gateway.into_iter().collect(),
                stopped_proxy,
            ));
            for i in 1..=nodes {
                let name = format!("node-{i}");
                let dir = data_dir.join("nodes").join(&name);
                let config = AgentConfig::new(&name, &cluster, dir, control_plane.token());
                let client = creds
                    .client()
                    .context("failed to build a node agent's client")?;
                let docker = docker.clone();
                let stopped = stopped.clone();
                agents.spawn(async move {
                    if let Err(e) = agent::run(client, docker, config, stopped).await {
                        tracing::error!(node = %name, error = %e, "node agent failed");
                    }
                });
            }
        }
        Ok(LocalCluster {
            control_plane,
            docker,
            stop,
            agents,
        })
    }

    /// The control plane.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// Stops the agents (which remove their containers), then the control plane.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        while self.agents.join_next().await.is_some() {}
        if let Some(docker) = &self.docker {
            runtime::reap(docker, self.control_plane.cluster_id()).await?;
        }
        self.control_plane.stop().await;
        Ok(())
    }
}
