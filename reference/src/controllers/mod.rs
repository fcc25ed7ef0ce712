//! # The controllers: the seed's controller-manager, driving actual state to desired state
//!
//! The seed calls the controller-manager "the automation center of every resource object
//! in the cluster: it watches the cluster's state through the apiserver and makes sure the
//! current state is the desired one". A deployment there is "a set of pods defined by a
//! template and a replica count"; "if a deployment has 10 replicas and 3 pods crash because
//! a machine failed, those 3 pods are scheduled on other machines".
//!
//! Both sentences describe *controllers*. Each watches the objects it is responsible for,
//! compares what they ask for (the *desired* state, their `spec`) with what exists (the
//! *observed* state: other objects, and `status`), and acts to close the gap. It never
//! finishes: a pod crashes, a node goes away, a user scales — and the next pass closes the
//! new gap. The seed's 3 crashed pods are nothing more than this loop noticing that 7 pods
//! are not 10, and creating 3 more for the scheduler to place.
//!
//! ## What each one owns
//!
//! | controller | watches | writes |
//! |---|---|---|
//! | `replicaset.rs` | ReplicaSets, and the pods they own (from a cache, with `expectations.rs`) | pods (create, adopt, release, delete); `replicasets/{name}/status` |
//! | `deployment.rs` | Deployments, and the ReplicaSets they own | ReplicaSets (create, scale, prune history); `deployments/{name}/status` |
//! | `garbage_collector.rs` | pods and ReplicaSets with owners; deletions of Deployments and ReplicaSets | deletes dependents whose owner is gone |
//! | `daemonsets.rs` | DaemonSets, their pods, and nodes | pods (one per eligible node, via node affinity; rolling update); `daemonsets/{name}/status` |
//! | `statefulsets.rs` | StatefulSets, and their pods | pods `<set>-<ordinal>` (in order; rolling update from the highest, down to a partition); ControllerRevisions; `statefulsets/{name}/status` |
//! | `jobs.rs` | Jobs, and the pods they own | pods (create, delete); `jobs/{name}/status`; deletes a finished Job past its TTL |
//! | `cronjobs.rs` | CronJobs, and the Jobs they own | Jobs (create on schedule, delete past the history limits); `cronjobs/{name}/status` |
//! | `autoscaler.rs` | HorizontalPodAutoscalers, every few seconds; their targets' scale, pods and `metrics.k8s.io` | the targets' `scale`; `horizontalpodautoscalers/{name}/status` |
//! | `service_accounts.rs` | namespaces, ServiceAccounts named `default`, ConfigMaps named `kube-root-ca.crt` | a `default` ServiceAccount and the cluster CA in every namespace |
//!
//! The chain Deployment → ReplicaSet → Pod is held together by `ownerReferences`: the
//! Deployment controller creates ReplicaSets that name their Deployment as controller, the
//! ReplicaSet controller creates pods that name their ReplicaSet. Deleting a Deployment
//! removes only the Deployment (the apiserver cascades nothing); the garbage collector then
//! finds ReplicaSets whose owner is gone and deletes them, and then their pods.
//!
//! ## What they never touch
//!
//! Controllers are API clients like any other (a `kube::Client`); they never open the store.
//! They do not place pods on nodes (the scheduler binds them), do not run containers or
//! report pod status (the node agent does), and do not remove a bound pod for good: deleting
//! one with a grace period only marks it terminating, and its node agent finishes the job.
//! A terminating pod no longer counts, so its replacement is created at once.
//!
//! ## The shape of a controller
//!
//! Each controller is split in two, as `STYLE.md` asks:
//!
//! * a **pure `reconcile(desired, observed, now) -> Plan`**: given one object and what it owns,
//!   the list of actions that closes the gap and the status to report. No I/O, no clock
//!   (`now` is passed in), so every rule — which pod to delete first, what revision a new
//!   ReplicaSet gets, when a Deployment counts as available — is a unit test;
//! * a thin **async driver** that reads what it needs from the API, calls `reconcile`, and
//!   carries the plan out, writing Events (`SuccessfulCreate`, `SuccessfulDelete`,
//!   `ScalingReplicaSet`) as it goes.
//!
//! The loop around them — watch the objects, queue the ones that changed (an owned object's
//! change queues its owner), run one reconcile per object at a time, requeue on error with
//! back-off — is kube-rs's [`kube::runtime::Controller`], entered through one shared helper,
//! `drive`, which adds the per-object exponential back-off, a tracing span carrying the
//! object's namespace and name, and shutdown.
//!
//! The ReplicaSet controller, which watches the most objects, reads the pods it owns from
//! a watch-fed cache, with *expectations* (`expectations.rs`) so that it never acts on a
//! cache that does not yet show its own earlier writes. The others read what an object
//! owns with a fresh LIST from the apiserver, so a reconcile always sees its own earlier
//! writes without expectations, at the cost of one list per reconcile — cheap for
//! ReplicaSets per Deployment and Endpoints per Service.
//!
//! ## The flow
//!
//! ```text
//! user ──create Deployment──▶ apiserver ──watch──▶ deployment controller
//!                                 ▲                    │ create <name>-<hash> ReplicaSet
//!                                 │◀───────────────────┘ scale it, status
//!                                 │──watch──▶ replicaset controller
//!                                 │◀──────────── create pods from the template, status
//!                                 │──watch──▶ scheduler, node agents (not here): bind, run, report
//! user ──delete Deployment──▶     │──watch──▶ garbage collector: its ReplicaSets, then their pods
//! ```

pub mod autoscaler;
pub mod cronjobs;
mod daemonsets;
mod deployment;
pub mod endpoints;
mod expectations;
mod garbage_collector;
mod jobs;
pub mod node_lifecycle;
mod replicaset;
pub mod service_accounts;
mod statefulsets;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, Namespace, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, MicroTime, ObjectMeta, OwnerReference, Time,
};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::Instrument;

use crate::scheduler::info::{controller_uid, is_terminated};

/// Why a controller could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A request to the apiserver failed.
    #[error("failed to {action}: {source}")]
    Api {
        /// What was being done, naming the object (`create a pod for ReplicaSet default/web`).
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// An object cannot be reconciled as it stands (no uid, an unknown selector operator…).
    #[error("cannot reconcile {object}: {reason}")]
    Malformed {
        /// `Kind namespace/name`.
        object: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ControllerError {
    /// A closure turning a kube error into [`ControllerError::Api`] for `action`.
    fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ControllerError {
        let action = action.into();
        move |source| ControllerError::Api { action, source }
    }

    /// [`ControllerError::Malformed`]: `obj` cannot be reconciled because of `reason`.
    fn malformed<K: Resource<DynamicType = ()>>(obj: &K, reason: impl Into<String>) -> Self {
        ControllerError::Malformed {
            object: describe(obj),
            reason: reason.into(),
        }
    }
}

/// Deletes `name`; one already gone was deleted by someone else. Whether this call did.
async fn delete_if_present<K>(
    api: &Api<K>,
    name: &str,
    params: &kube::api::DeleteParams,
    action: impl FnOnce() -> String,
) -> Result<bool, ControllerError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(false),
        Err(e) => Err(ControllerError::api(action())(e)),
    }
}

/// The namespace, uid and name of the object a pass works on; `None` while it is being
/// deleted, when there is nothing to do but wait.
fn identity<K: Resource<DynamicType = ()>>(
    obj: &K,
) -> Result<Option<(String, String, String)>, ControllerError> {
    if terminating(obj.meta()) {
        return Ok(None);
    }
    match (obj.meta().namespace.clone(), obj.meta().uid.clone()) {
        (Some(namespace), Some(uid)) => Ok(Some((namespace, uid, obj.name_any()))),
        _ => Err(ControllerError::malformed(
            obj,
            "it has no namespace or uid",
        )),
    }
}

/// Writes `new` as an object's `status` (a merge patch of its status subresource),
/// unless it equals `old`. A merge patch leaves alone what it does not mention, so every
/// top-level field `old` has and `new` lacks is sent as `null`: a finished Job's `active`
/// count must go, not linger.
async fn write_status<K, S>(
    api: Api<K>,
    name: &str,
    old: Option<&S>,
    new: &S,
    action: impl FnOnce() -> String,
) -> Result<(), ControllerError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if old == Some(new) {
        return Ok(());
    }
    let mut status = serde_json::json!(new);
    if let (Some(serde_json::Value::Object(old)), Some(fields)) =
        (old.map(|o| serde_json::json!(o)), status.as_object_mut())
    {
        for key in old.into_iter().map(|(key, _)| key) {
            fields.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    let patch = kube::api::Patch::Merge(serde_json::json!({ "status": status }));
    api.patch_status(name, &kube::api::PatchParams::default(), &patch)
        .await
        .map(drop)
        .map_err(|e| ControllerError::api(action())(e))
}

/// Runs every controller — ReplicaSet, Deployment, garbage collector — until `shutdown`
/// becomes `true`, then waits for the reconciles in flight to finish.
///
/// Returns an error at once if the apiserver refuses the client (wrong address, CA or
/// token); after that, failures are retried with back-off and never end the controllers.
pub async fn run(client: Client, shutdown: watch::Receiver<bool>) -> Result<(), ControllerError> {
    let timing = node_lifecycle::NodeLifecycleConfig::default();
    run_with(client, timing, None, shutdown).await
}

/// [`run`], with the node lifecycle controller's timing given, and the cluster CA (PEM) to
/// publish in every namespace as ConfigMap `kube-root-ca.crt`.
pub async fn run_with(
    client: Client,
    node_lifecycle: node_lifecycle::NodeLifecycleConfig,
    root_ca: Option<String>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ControllerError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let reached = namespaces.list(&ListParams::default().limit(1)).await;
    reached.map_err(ControllerError::api("reach the apiserver"))?;
    tracing::info!("controllers running");
    tokio::join!(
        replicaset::run(client.clone(), shutdown.clone()),
        deployment::run(client.clone(), shutdown.clone()),
        garbage_collector::run(client.clone(), shutdown.clone()),
        endpoints::run(client.clone(), shutdown.clone()),
        service_accounts::run(client.clone(), root_ca, shutdown.clone()),
        jobs::run(client.clone(), shutdown.clone()),
        cronjobs::run(client.clone(), shutdown.clone()),
        daemonsets::run(client.clone(), shutdown.clone()),
        statefulsets::run(client.clone(), shutdown.clone()),
        autoscaler::run(client.clone(), shutdown.clone()),
        node_lifecycle::run(client, node_lifecycle, shutdown),
    );
    tracing::info!("controllers stopped");
    Ok(())
}

/// How long a reconcile that failed `n` times in a row waits: 250 ms, doubling, at most
/// [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between retries of a failing object.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often an object is reconciled even if nothing about it changed: a backstop for a
/// missed event, not the way the controllers normally learn of changes.
const RESYNC: Duration = Duration::from_secs(300);

/// Consecutive failures per object, for exponential back-off. A std `Mutex`: it is held
/// for a map lookup, never across an `.await`.
#[derive(Default)]
struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Counts one more failure of `key` and returns how long to wait before retrying.
    fn next_delay(&self, key: &str) -> Duration {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(key.to_owned()).or_insert(0);
        let delay = BASE_BACKOFF.saturating_mul(2u32.saturating_pow(*n));
        *n = n.saturating_add(1);
        delay.min(MAX_BACKOFF)
    }

    /// Forgets the failures of `key` after a success.
    fn reset(&self, key: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// `namespace/name` of an object (or `name` for a cluster-scoped one).
fn key_of<K: Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// The loop every controller shares: runs `controller` with `reconcile` until `shutdown`,
/// retrying a failed object after an exponentially growing delay and resetting that delay
/// once it succeeds. Each reconcile runs in a span named after the controller, carrying
/// the object's namespace and name.
async fn drive<K, C, F, Fut>(
    name: &'static str,
    controller: Controller<K>,
    ctx: Arc<C>,
    reconcile: F,
    shutdown: watch::Receiver<bool>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    C: Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<C>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action, ControllerError>> + Send + 'static,
{
    let failures = Arc::new(Failures::default());
    let on_success = failures.clone();
    controller
        .graceful_shutdown_on(stopped(shutdown))
        .run(
            move |obj, ctx| {
                let key = key_of(obj.as_ref());
                let span = tracing::info_span!(
                    "reconcile",
                    controller = name,
                    namespace = obj.meta().namespace.as_deref().unwrap_or(""),
                    name = %obj.name_any(),
                );
                let work = reconcile(obj, ctx);
                let failures = on_success.clone();
                async move {
                    let result = work.await;
                    if result.is_ok() {
                        failures.reset(&key);
                    }
                    result
                }
                .instrument(span)
            },
            move |obj, error, _ctx| {
                let key = key_of(obj.as_ref());
                let delay = failures.next_delay(&key);
                tracing::warn!(
                    controller = name,
                    object = %key,
                    %error,
                    ?delay,
                    "reconcile failed; will retry"
                );
                Action::requeue(delay)
            },
            ctx,
        )
        .for_each(|result| async move {
            match result {
                Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(controller = name, %obj, "object gone before its reconcile");
                }
                Err(e) => tracing::warn!(controller = name, error = %e, "watch failed; retrying"),
            }
        })
        .await;
    tracing::debug!(controller = name, "stopped");
}

/// A controller of every `K` that also runs for the `K` owning a `D` that changed — of
/// the `D`s carrying the label `label`, when it is given.
fn owning<K, D>(client: &Client, label: Option<&str>) -> Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    D: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let all = watcher::Config::default();
    let owned = label.map_or_else(watcher::Config::default, |label| all.clone().labels(label));
    Controller::new(Api::<K>::all(client.clone()), all).owns(Api::<D>::all(client.clone()), owned)
}

/// Resolves once shutdown is asked for (or its sender is gone).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

// ---------------------------------------------------------------------------------------
// Small pieces the controllers share.

/// A label selector as the controllers use it: `matchLabels` and `matchExpressions`,
/// matched with the apiserver's own selector code. Unlike the API's, an empty selector
/// here matches *nothing*: a controller must never claim every pod of a namespace.
#[derive(Debug, Clone)]
struct Selector {
    parsed: crate::api::selector::LabelSelector,
    empty: bool,
}

impl Selector {
    /// Reads a `LabelSelector`; `None` when it uses an operator that does not exist.
    fn new(selector: Option<&LabelSelector>) -> Option<Selector> {
        let text = selector_string(selector?)?;
        Some(Selector {
            empty: text.is_empty(),
            parsed: crate::api::selector::LabelSelector::parse(&text).ok()?,
        })
    }

    /// Whether an object with these labels matches.
    fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        !self.empty
            && self
                .parsed
                .matches_labels(|key| labels?.get(key).map(String::as_str))
    }
}

/// Renders a `LabelSelector` in the `labelSelector` query syntax (`app=web,tier in (a,b)`);
/// `None` for an unknown operator.
fn selector_string(selector: &LabelSelector) -> Option<String> {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            _ => return None,
        });
    }
    Some(parts.join(","))
}

/// The pods of `owner` (of uid `uid`): a fresh list of those labelled `label`, kept when
/// `owner` is their controller and `selector`, if given, matches them.
async fn owned_pods<K: Resource<DynamicType = ()>>(
    api: &Api<Pod>,
    owner: &K,
    uid: &str,
    label: &str,
    selector: Option<&Selector>,
) -> Result<Vec<Pod>, ControllerError> {
    let listed = api.list(&ListParams::default().labels(label)).await;
    let action = format!("list the pods of {}", describe(owner));
    let listed = listed.map_err(ControllerError::api(action))?;
    let matches = |p: &Pod| selector.is_none_or(|s| s.matches(p.metadata.labels.as_ref()));
    let owned = listed.items.into_iter();
    Ok(owned
        .filter(|p| controller_uid(&p.metadata) == Some(uid) && matches(p))
        .collect())
}

/// An owner reference naming `owner` as the controller of a dependent.
fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone()?,
        uid: owner.meta().uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// A pod from `template` (its labels, annotations and spec), named `<owner>-<random>` in
/// `owner`'s namespace, and controlled by `owner`.
fn pod_from_template<K: Resource<DynamicType = ()>>(owner: &K, template: PodTemplateSpec) -> Pod {
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name_any())),
            namespace: owner.meta().namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: controller_ref(owner).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// `Kind namespace/name`, for messages.
fn describe<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{} {}", K::kind(&()), key_of(obj))
}

/// A pod's phase; `Pending` until it reports one.
fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether a pod's `Ready` condition is true.
fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Whether an object is being deleted.
fn terminating(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// Writes core/v1 Events about what a controller did to an object. Best effort: an Event
/// that cannot be written is logged, never an error of the reconcile.
#[derive(Clone)]
struct Recorder {
    client: Client,
    /// The `source.component` of the Events (`replicaset-controller`).
    component: &'static str,
}

impl Recorder {
    /// A recorder of `component`'s Events, for the passes of one controller to share.
    fn shared(client: Client, component: &'static str) -> Arc<Recorder> {
        Arc::new(Recorder { client, component })
    }

    /// Records a `Normal` Event.
    async fn normal<K: Resource<DynamicType = ()>>(
        &self,
        about: &K,
        reason: &str,
        message: String,
    ) {
        self.record(about, "Normal", reason, message).await;
    }

    /// Records an Event of `type_`: `Normal` or `Warning`.
    async fn record<K: Resource<DynamicType = ()>>(
        &self,
        about: &K,
        type_: &str,
        reason: &str,
        message: String,
    ) {
        let Some(namespace) = about.meta().namespace.clone() else {
            return;
        };
        let now = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    about.name_any(),
                    now.as_nanosecond().unsigned_abs()
                )),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: about.object_ref(&()),
            reason: Some(reason.to_owned()),
            message: Some(message),
            type_: Some(type_.to_owned()),
            source: Some(EventSource {
                component: Some(self.component.to_owned()),
                host: None,
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            reporting_component: Some(self.component.to_owned()),
            reporting_instance: Some(self.component.to_owned()),
            ..Event::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(error) = events.create(&PostParams::default(), &event).await {
            tracing::debug!(%error, reason, "failed to record an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_render_and_match_like_the_apiserver() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["front".into(), "back".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(
            selector_string(&sel).as_deref(),
            Some("app=web,tier in (front,back),!canary")
        );
        let s = Selector::new(Some(&sel)).expect("valid");
        assert!(s.matches(Some(&labels(&[("app", "web"), ("tier", "front")]))));
        assert!(!s.matches(Some(&labels(&[("app", "web"), ("tier", "mid")]))));
        assert!(!s.matches(Some(&labels(&[
            ("app", "web"),
            ("tier", "back"),
            ("canary", "1")
        ]))));
        assert!(!s.matches(None));
    }

    #[test]
    fn an_empty_selector_matches_nothing_and_a_bad_operator_is_refused() {
        let empty = Selector::new(Some(&LabelSelector::default())).expect("valid");
        assert!(!empty.matches(Some(&labels(&[("app", "web")]))));
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..LabelSelector::default()
        };
        assert!(Selector::new(Some(&bad)).is_none());
        assert!(Selector::new(None).is_none());
    }

    #[test]
    fn backoff_doubles_up_to_a_ceiling_and_resets_on_success() {
        let f = Failures::default();
        assert_eq!(f.next_delay("a"), Duration::from_millis(250));
        assert_eq!(f.next_delay("a"), Duration::from_millis(500));
        assert_eq!(f.next_delay("a"), Duration::from_secs(1));
        assert_eq!(f.next_delay("b"), Duration::from_millis(250));
        for _ in 0..40 {
            f.next_delay("a");
        }
        assert_eq!(f.next_delay("a"), MAX_BACKOFF);
        f.reset("a");
        assert_eq!(f.next_delay("a"), Duration::from_millis(250));
    }
}
