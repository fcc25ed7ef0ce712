//! # Service accounts: every namespace has a `default` one
//!
//! A pod acts as a ServiceAccount, and one that names none acts as its namespace's
//! `default`. Client libraries and tools expect that account to be there (`kubectl get sa`
//! in a new namespace shows it), so, as Kubernetes' service account controller does, this
//! one makes a `default` ServiceAccount in every namespace that is not being deleted, and
//! makes it again if someone deletes it.
//!
//! It reconciles namespaces, and a change to any ServiceAccount named `default` brings its
//! namespace round again; a pass looks the account up and creates it if it is missing.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::watch;

use super::{ControllerError, terminating};

/// The account a pod that names none acts as.
pub const DEFAULT: &str = "default";

/// Runs the controller until shutdown.
pub(super) async fn run(client: Client, shutdown: watch::Receiver<bool>) {
    let controller = Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default(),
        |account| {
            (account.name_any() == DEFAULT)
                .then(|| account.namespace().map(|ns| ObjectRef::new(&ns)))
                .flatten()
        },
    );
    super::drive(
        "service-accounts",
        controller,
        Arc::new(client),
        ensure_default,
        shutdown,
    )
    .await;
}

/// Makes the namespace's `default` account unless it exists or the namespace is going.
async fn ensure_default(
    namespace: Arc<Namespace>,
    client: Arc<Client>,
) -> Result<Action, ControllerError> {
    if terminating(namespace.meta()) {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    let accounts: Api<ServiceAccount> = Api::namespaced(Client::clone(&client), &name);
    let action = || format!("make the default service account of namespace {name}");
    let found = accounts.get_opt(DEFAULT).await;
    if found.map_err(ControllerError::api(action()))?.is_some() {
        return Ok(Action::await_change());
    }
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => tracing::info!(namespace = %name, "made the default service account"),
        // Made by another pass, or the namespace is being deleted or gone: nothing to do.
        Err(kube::Error::Api(s))
            if s.is_already_exists() || s.is_forbidden() || s.is_not_found() => {}
        Err(e) => return Err(ControllerError::api(action())(e)),
    }
    Ok(Action::await_change())
}
