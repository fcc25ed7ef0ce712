//! # Service accounts: every namespace has a `default` one
//!
//! A pod acts as a ServiceAccount, and one that names none acts as its namespace's
//! `default`. Client libraries and tools expect that account to be there (`kubectl get sa`
//! in a new namespace shows it), so, as Kubernetes' service account controller does, this
//! one makes a `default` ServiceAccount in every namespace that is not being deleted, and
//! makes it again if someone deletes it.
//!
//! Next to it, as Kubernetes' root CA publisher does, it keeps ConfigMap `kube-root-ca.crt`
//! holding the cluster CA (`ca.crt`): a pod's `kube-api-access-*` volume takes its `ca.crt`
//! from there, to trust the apiserver with.
//!
//! It reconciles namespaces, and a change to any ServiceAccount named `default` or
//! ConfigMap named `kube-root-ca.crt` brings its namespace round again; a pass looks both up
//! and creates what is missing.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
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

/// The ConfigMap of the cluster CA in every namespace.
pub const ROOT_CA: &str = "kube-root-ca.crt";

/// The namespace of `object` if it is named `name`.
fn named<K: Resource>(object: &K, name: &str) -> Option<ObjectRef<Namespace>> {
    (object.meta().name.as_deref() == Some(name))
        .then(|| object.meta().namespace.as_deref().map(ObjectRef::new))
        .flatten()
}

/// Runs the controller until shutdown; `root_ca` (PEM) is published if given.
pub(super) async fn run(client: Client, root_ca: Option<String>, shutdown: watch::Receiver<bool>) {
    let config = watcher::Config::default;
    let accounts = Api::<ServiceAccount>::all(client.clone());
    let config_maps = Api::<ConfigMap>::all(client.clone());
    let controller = Controller::new(Api::<Namespace>::all(client.clone()), config())
        .watches(accounts, config(), |a| named(&a, DEFAULT))
        .watches(config_maps, config(), |c| named(&c, ROOT_CA));
    let ctx = Arc::new((client, root_ca));
    super::drive("service-accounts", controller, ctx, provision, shutdown).await;
}

/// Makes the namespace's `default` account and its `kube-root-ca.crt` unless they exist or
/// the namespace is going.
async fn provision(
    namespace: Arc<Namespace>,
    context: Arc<(Client, Option<String>)>,
) -> Result<Action, ControllerError> {
    if terminating(namespace.meta()) {
        return Ok(Action::await_change());
    }
    let (client, root_ca) = &*context;
    let name = namespace.name_any();
    let metadata = |name: &str| ObjectMeta {
        name: Some(name.into()),
        ..ObjectMeta::default()
    };
    let account = ServiceAccount {
        metadata: metadata(DEFAULT),
        ..ServiceAccount::default()
    };
    ensure(Api::namespaced(client.clone(), &name), account).await?;
    if let Some(pem) = root_ca {
        let data = [("ca.crt".to_owned(), pem.clone())].into();
        let ca = ConfigMap {
            metadata: metadata(ROOT_CA),
            data: Some(data),
            ..ConfigMap::default()
        };
        ensure(Api::namespaced(client.clone(), &name), ca).await?;
    }
    Ok(Action::await_change())
}

/// Creates `object` unless one of its name exists.
async fn ensure<K>(api: Api<K>, object: K) -> Result<(), ControllerError>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.name_any();
    let action = || format!("make {name} in namespace {}", api.namespace().unwrap_or(""));
    let existing = api.get_opt(&name).await;
    if existing.map_err(ControllerError::api(action()))?.is_some() {
        return Ok(());
    }
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => tracing::info!(%name, "made"),
        // Made by another pass, or the namespace is being deleted or gone: nothing to do.
        Err(kube::Error::Api(s))
            if s.is_already_exists() || s.is_forbidden() || s.is_not_found() => {}
        Err(e) => return Err(ControllerError::api(action())(e)),
    }
    Ok(())
}
