//! The cucumber World: what one scenario knows while it runs, and the hooks around it.
//!
//! One [`Harness`] lives for the whole run: it holds the driver and the run id. Before
//! each scenario it hands the fresh World the driver and the name of the scenario's own
//! namespace; the namespace is created on first use (so a scenario found not applicable
//! creates nothing) and deleted after the scenario, whatever its outcome.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;

use crate::applicability::Capabilities;
use crate::driver::Driver;

/// State shared by every scenario of a run.
#[derive(Debug)]
pub struct Harness {
    /// The system under test.
    driver: Arc<dyn Driver>,
    /// What the driver can do, for deciding which scenarios apply.
    capabilities: Arc<Capabilities>,
    /// Identifies this run; every namespace it creates is labelled with it.
    run_id: String,
    /// Scenarios started so far, numbering the namespaces.
    scenarios: AtomicUsize,
}

impl Harness {
    /// Prepares a run against `driver`, with a run id made of the time and process id.
    pub fn new(driver: Arc<dyn Driver>) -> Self {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        Self {
            capabilities: Arc::new(Capabilities::of(driver.as_ref())),
            driver,
            run_id: format!("{seconds}-{}", std::process::id()),
            scenarios: AtomicUsize::new(0),
        }
    }

    /// The driver under test.
    pub fn driver(&self) -> &dyn Driver {
        self.driver.as_ref()
    }

    /// What the driver can do.
    pub fn capabilities(&self) -> Arc<Capabilities> {
        Arc::clone(&self.capabilities)
    }

    /// This run's id (the value of the namespaces' run label).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Before-scenario hook: gives the World the driver and its namespace's name.
    pub fn prepare(&self, world: &mut ConformanceWorld) {
        let number = self.scenarios.fetch_add(1, Ordering::Relaxed) + 1;
        world.scope = Some(Scope {
            driver: Arc::clone(&self.driver),
            run_id: self.run_id.clone(),
            namespace: format!("conformance-{}-{number}", self.run_id),
            created: false,
        });
    }

    /// After-scenario hook: deletes the scenario's namespace if it was created. A failure
    /// is reported but does not fail the scenario; the run label lets a reaper finish the job.
    pub async fn clean_up(&self, world: Option<&mut ConformanceWorld>) {
        let Some(scope) = world.and_then(|world| world.scope.take()) else {
            return;
        };
        if !scope.created {
            return;
        }
        if let Err(error) = scope.driver.delete_namespace(&scope.namespace).await {
            eprintln!(
                "warning: failed to delete namespace {} (labelled {}={}): {error:#}",
                scope.namespace,
                crate::kubeapi::RUN_LABEL,
                scope.run_id
            );
        }
    }
}

/// Where a scenario runs: the driver and the scenario's own namespace.
struct Scope {
    /// The system under test.
    driver: Arc<dyn Driver>,
    /// The run id the namespace is labelled with.
    run_id: String,
    /// The scenario's namespace.
    namespace: String,
    /// Whether the namespace has been created yet.
    created: bool,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("driver", &self.driver.name())
            .field("namespace", &self.namespace)
            .field("created", &self.created)
            .finish()
    }
}

/// What one scenario knows while it runs.
#[derive(Debug, Default, cucumber::World)]
pub struct ConformanceWorld {
    /// Driver and namespace, given by the harness before the first step.
    scope: Option<Scope>,
    /// A deployment as "I" read it, to be written back later.
    pub(crate) read: Option<Deployment>,
    /// The outcome of "my" last write through the Kubernetes API.
    pub(crate) last_write: Option<Result<Deployment, kube::Error>>,
    /// Deployments as noted before a fault, by name.
    pub(crate) noted_deployments: BTreeMap<String, Deployment>,
    /// Services as noted before a fault, by name.
    pub(crate) noted_services: BTreeMap<String, Service>,
}

impl ConformanceWorld {
    /// The driver under test.
    pub(crate) fn driver(&self) -> anyhow::Result<Arc<dyn Driver>> {
        self.scope
            .as_ref()
            .map(|scope| Arc::clone(&scope.driver))
            .ok_or_else(|| anyhow!("the harness did not attach a driver to this scenario"))
    }

    /// The scenario's namespace, created on first use.
    pub(crate) async fn namespace(&mut self) -> anyhow::Result<String> {
        let scope = self
            .scope
            .as_mut()
            .ok_or_else(|| anyhow!("the harness did not attach a driver to this scenario"))?;
        if !scope.created {
            scope
                .driver
                .create_namespace(&scope.namespace, &scope.run_id)
                .await
                .with_context(|| {
                    format!(
                        "failed to create the scenario's namespace {}",
                        scope.namespace
                    )
                })?;
            scope.created = true;
        }
        Ok(scope.namespace.clone())
    }

    /// A Kubernetes API client, for scenarios tagged `@kubernetes-api`. Asked anew each
    /// time: after a control-plane restart the driver hands out a new one.
    pub(crate) fn kube(&self) -> anyhow::Result<kube::Client> {
        let driver = self.driver()?;
        driver.kube_client().ok_or_else(|| {
            anyhow!(
                "driver {} offers no Kubernetes API client; this scenario should carry @kubernetes-api",
                driver.name()
            )
        })
    }
}
