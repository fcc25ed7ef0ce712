//! # The ReplicaSet controller: keep `spec.replicas` pods alive
//!
//! A ReplicaSet is the seed's "replica count" made literal: a pod template, a selector, and
//! a number. This controller counts the *active* pods the ReplicaSet controls — its
//! controller ownerReference names the ReplicaSet's uid, it is not terminating, it has not
//! finished (phase `Succeeded` or `Failed`) — and:
//!
//! * creates pods from the template when there are too few (a crashed, deleted or evicted
//!   pod stops being active and is replaced — this is the seed's self-healing);
//! * deletes the pods least worth keeping when there are too many, ranked as Kubernetes
//!   ranks them: unscheduled before scheduled, `Pending` before `Unknown` before `Running`,
//!   not ready before ready, ready for less time before longer, more restarts before
//!   fewer, newest before oldest;
//! * adopts matching pods that have no controller, and releases the pods it controls that
//!   no longer match its selector (relabelling a pod takes it out of the set);
//! * deletes its finished pods (they are replaced like any other lost pod);
//! * reports `status`: `replicas` (active pods), `fullyLabeledReplicas` (those carrying every
//!   template label), `readyReplicas` (Ready condition `True`), `availableReplicas` (ready
//!   for at least `minReadySeconds`), `observedGeneration`.
//!
//! [`reconcile`] decides all of that from the ReplicaSet, its pods and the time; [`apply`]
//! gathers the pods, calls it, and carries the plan out.
//!
//! **Which pods it reads, and from where.** From a cache of every pod, kept by a watch
//! ([`kube::runtime::reflector`]), as Kubernetes' controllers read from their informers:
//! the pods of the ReplicaSet's namespace that match its selector (owned, or to adopt) or
//! that it controls (to release if they no longer match). A cache is a moment behind, so
//! every write a pass makes is recorded as an *expectation* (`expectations.rs`), and the
//! next pass decides from the cache only once the cache shows those writes: a pod created
//! a moment ago is never missed and never created twice. If the cache lags for longer than
//! a second, the pass reads the live list by selector instead.
//!
//! An earlier version listed the pods live on every pass. The apiserver answers a selector
//! by scanning the namespace, so each pass cost as much as the namespace is big: with ten
//! thousand pods the control plane spent over a third of its time in those lists.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::join_all;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::expectations::{Awaited, Expectations, Freshness, Written};
use super::{
    ControllerError, RESYNC, Recorder, Selector, controller_ref, controller_uid, delete_if_present,
    describe, is_terminated, terminating, write_status,
};

/// What one ReplicaSet needs done so that its pods match its spec.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Plan {
    /// New pods, ready to be created (generateName, template, controller reference).
    pub create: Vec<Pod>,
    /// Names of orphan pods matching the selector, to adopt.
    pub adopt: Vec<String>,
    /// Names of controlled pods that no longer match the selector, to release.
    pub release: Vec<String>,
    /// Names of surplus active pods to delete, the least valuable first.
    pub delete: Vec<String>,
    /// Names of finished pods (`Succeeded`/`Failed`) to delete; they are replaced.
    pub remove_finished: Vec<String>,
    /// The status to write, when it differs from the current one.
    pub status: Option<ReplicaSetStatus>,
    /// When to look again although nothing changed: a ready pod becomes available once it
    /// has been ready for `minReadySeconds`.
    pub requeue_after: Option<Duration>,
}

/// Decides what to do for `rs`, given every pod of its namespace, at time `now`.
pub(super) fn reconcile(
    rs: &ReplicaSet,
    pods: &[Pod],
    now: Timestamp,
) -> Result<Plan, ControllerError> {
    let malformed = |reason: &str| ControllerError::malformed(rs, reason);
    let Some(uid) = rs.metadata.uid.as_deref() else {
        return Err(malformed("no uid"));
    };
    let spec = rs.spec.as_ref().ok_or_else(|| malformed("no spec"))?;
    let selector =
        Selector::new(Some(&spec.selector)).ok_or_else(|| malformed("invalid selector"))?;
    let deleting = terminating(&rs.metadata);
    let mut plan = Plan::default();

    // Claim: which pods are ours, which to adopt, which to let go.
    let mut active: Vec<&Pod> = Vec::new();
    for pod in pods {
        let name = pod.name_any();
        let matches = selector.matches(pod.metadata.labels.as_ref());
        match controller_uid(&pod.metadata) {
            Some(owner) if owner == uid => {
                if !matches && !deleting && !terminating(&pod.metadata) {
                    plan.release.push(name);
                    continue;
                }
            }
            Some(_) => continue,
            None => {
                if !matches || deleting || terminating(&pod.metadata) {
                    continue;
                }
                plan.adopt.push(name.clone());
            }
        }
        if terminating(&pod.metadata)
            && !crate::failpoints::on!("replicaset::count-terminating-pods")
        {
            continue;
        }
        if is_terminated(pod) {
            if !deleting {
                plan.remove_finished.push(name);
            }
            continue;
        }
        active.push(pod);
    }

    // Scale: create what is missing, delete the surplus.
    let desired = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    if !deleting {
        if active.len() < desired {
            let pod = pod_from_template(rs).ok_or_else(|| malformed("no name or uid"))?;
            plan.create = vec![pod; desired - active.len()];
        } else if active.len() > desired {
            active.sort_by_key(|p| deletion_rank(p));
            let surplus = &active[..active.len() - desired];
            plan.delete = surplus.iter().map(|p| p.name_any()).collect();
        }
    }

    // Report what was observed (the pods just created or deleted show up next time).
    let min_ready = SignedDuration::from_secs(i64::from(spec.min_ready_seconds.unwrap_or(0)));
    let meta = spec.template.as_ref().and_then(|t| t.metadata.as_ref());
    let template_labels = meta.and_then(|m| m.labels.clone()).unwrap_or_default();
    let (mut fully_labeled, mut ready, mut available) = (0, 0, 0);
    for pod in &active {
        let labels = pod.metadata.labels.as_ref();
        let carried = |(k, v): (&String, &String)| labels.and_then(|l| l.get(k)) == Some(v);
        fully_labeled += i32::from(template_labels.iter().all(carried));
        let since = match ready_since(pod) {
            Some(since) => since,
            None if crate::failpoints::on!("replicaset::count-unready-as-available") => now,
            None => continue,
        };
        ready += 1;
        let ready_for = now.duration_since(since);
        if min_ready.is_zero() || ready_for >= min_ready {
            available += 1;
        } else {
            let wait = Duration::try_from(min_ready - ready_for).unwrap_or_default();
            plan.requeue_after = Some(plan.requeue_after.map_or(wait, |w| w.min(wait)));
        }
    }
    let status = ReplicaSetStatus {
        replicas: count(active.len()),
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        observed_generation: rs.metadata.generation,
        ..rs.status.clone().unwrap_or_default()
    };
    plan.status = (rs.status.as_ref() != Some(&status)).then_some(status);
    Ok(plan)
}

/// A count as the API's `int32`.
fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// When the pod became ready, if its Ready condition is `True` (the epoch when the
/// condition carries no time).
fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    let since = ready.last_transition_time.as_ref();
    Some(since.map_or(Timestamp::UNIX_EPOCH, |t| t.0))
}

/// The order in which surplus pods go: smaller first (Kubernetes' `ActivePods` ranking).
fn deletion_rank(pod: &Pod) -> impl Ord {
    let spec_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        Some(_) => 3,
    };
    let ready = ready_since(pod);
    let containers = status.and_then(|s| s.container_statuses.as_ref());
    let restarts = containers.map_or(0, |cs| {
        cs.iter().map(|c| c.restart_count).max().unwrap_or(0)
    });
    let created = pod.metadata.creation_timestamp.as_ref();
    (
        spec_node.is_some_and(|n| !n.is_empty()),
        phase,
        ready.is_some(),
        Reverse(ready.unwrap_or(Timestamp::MAX)),
        Reverse(restarts),
        Reverse(created.map_or(Timestamp::MAX, |t| t.0)),
    )
}

/// A new pod from the ReplicaSet's template, its finalizers too, controlled by the
/// ReplicaSet; `None` when the ReplicaSet has no name or uid to be named by.
fn pod_from_template(rs: &ReplicaSet) -> Option<Pod> {
    let template = rs.spec.as_ref()?.template.clone().unwrap_or_default();
    let meta = template.metadata.as_ref();
    let finalizers = meta.and_then(|m| m.finalizers.clone());
    controller_ref(rs)?;
    let mut pod = super::pod_from_template(rs, template);
    pod.metadata.finalizers = finalizers;
    Some(pod)
}

/// Runs the ReplicaSet controller until shutdown: reconciles a ReplicaSet whenever it or
/// one of its pods changes.
///
/// The pod watch feeds the cache first and triggers the ReplicaSet's pass second, as an
/// informer does in Kubernetes: a pass started by a pod's change always finds that change
/// in the cache. (Two watches, one for the cache and one for the trigger, would let a pass
/// run on a cache without the change that started it, and nothing would start it again.)
pub(super) async fn run(client: Client, shutdown: watch::Receiver<bool>) {
    let (pods, cache) = reflector::store();
    let every_pod = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let pod_changes = reflector::reflector(cache, every_pod)
        .default_backoff()
        .touched_objects();
    let sets = Api::<ReplicaSet>::all(client.clone());
    let controller = Controller::new(sets, watcher::Config::default()).owns_stream(pod_changes);
    let context = Context {
        recorder: Recorder {
            client,
            component: "replicaset-controller",
        },
        pods,
        expectations: Expectations::default(),
    };
    super::drive("replicaset", controller, Arc::new(context), apply, shutdown).await;
}

/// What every pass shares: the Event recorder, the cache of every pod, and what each
/// ReplicaSet has written and not yet seen in that cache.
struct Context {
    recorder: Recorder,
    pods: Store<Pod>,
    expectations: Expectations,
}

/// How soon a pass whose own writes are not in the cache yet looks again.
const CACHE_BEHIND_RETRY: Duration = Duration::from_millis(25);

/// The pods the ReplicaSet controls that no longer match its selector, from the cache:
/// the ones to release. `fresh` holds every pod that matches now, so a cached pod named
/// there is not taken from the cache.
fn strays(rs: &ReplicaSet, cached: &[Arc<Pod>], fresh: &[Pod]) -> Vec<Pod> {
    let selector = Selector::new(rs.spec.as_ref().map(|s| &s.selector));
    let (Some(uid), Some(selector)) = (rs.metadata.uid.as_deref(), selector) else {
        return Vec::new();
    };
    cached
        .iter()
        .filter(|p| p.metadata.namespace == rs.metadata.namespace)
        .filter(|p| controller_uid(&p.metadata) == Some(uid))
        .filter(|p| !selector.matches(p.metadata.labels.as_ref()))
        .filter(|p| !fresh.iter().any(|f| f.metadata.name == p.metadata.name))
        .map(|p| (**p).clone())
        .collect()
}

/// The pods a pass decides about, from the cache: those of the ReplicaSet's namespace
/// that match its selector or that it controls. `None` while the cache has not caught up
/// with the ReplicaSet's own writes ([`Freshness::Behind`]); the live list when it lags
/// too long ([`Freshness::Lagging`]).
async fn pods_of(
    rs: &ReplicaSet,
    uid: &str,
    context: &Context,
    live: &Api<Pod>,
) -> Result<Option<Vec<Pod>>, ControllerError> {
    let what = describe(rs);
    // Until the watch has listed every pod once, the cache knows nothing: read live.
    let cache_ready = matches!(context.pods.wait_until_ready().now_or_never(), Some(Ok(())));
    let cached = context
        .pods
        .state_filter(|p| p.metadata.namespace == rs.metadata.namespace);
    let namespace: Vec<&Pod> = cached.iter().map(AsRef::as_ref).collect();
    let freshness = if cache_ready {
        context.expectations.check(uid, &namespace, Instant::now())
    } else {
        Freshness::Lagging
    };
    match freshness {
        Freshness::Behind => Ok(None),
        Freshness::Fresh => {
            let selector = Selector::new(rs.spec.as_ref().map(|s| &s.selector));
            let selector =
                selector.ok_or_else(|| ControllerError::malformed(rs, "invalid selector"))?;
            Ok(Some(
                namespace
                    .into_iter()
                    // Pods another controller owns are none of this one's business
                    // (`reconcile` skips them): only orphans need the selector.
                    .filter(|p| match controller_uid(&p.metadata) {
                        Some(owner) => owner == uid,
                        None => selector.matches(p.metadata.labels.as_ref()),
                    })
                    .cloned()
                    .collect(),
            ))
        }
        Freshness::Lagging => {
            tracing::debug!(replicaset = %what, "the pod cache lags behind; reading live");
            let label_selector = rs
                .spec
                .as_ref()
                .map(|s| kube::core::Selector::try_from(s.selector.clone()))
                .transpose()
                .map_err(|e| ControllerError::malformed(rs, format!("invalid selector: {e}")))?
                .unwrap_or_default();
            let mut list = live
                .list(&ListParams::default().labels_from(&label_selector))
                .await
                .map_err(ControllerError::api(format!("list the pods of {what}")))?;
            context.expectations.forget(uid);
            let strays = strays(rs, &cached, &list.items);
            list.items.extend(strays);
            Ok(Some(list.items))
        }
    }
}

/// One pass for one ReplicaSet: gather its pods (from the cache once it holds the
/// ReplicaSet's own earlier writes), decide, act, and record what the cache should show
/// next.
async fn apply(rs: Arc<ReplicaSet>, context: Arc<Context>) -> Result<Action, ControllerError> {
    let namespace = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let what = describe(rs.as_ref());
    let ctx = &context.recorder;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = rs
        .uid()
        .ok_or_else(|| ControllerError::malformed(rs.as_ref(), "no uid"))?;
    let Some(owned) = pods_of(&rs, &uid, &context, &pods).await? else {
        return Ok(Action::requeue(CACHE_BEHIND_RETRY));
    };
    let mut writes = Written::new(&context.expectations, &uid);
    let plan = reconcile(&rs, &owned, Timestamp::now())?;
    let by_name = |n: &str| owned.iter().find(|p| p.metadata.name.as_deref() == Some(n));

    // Adopt the orphans that match; release the pods that no longer do.
    let adopt = plan.adopt.iter().map(|pod_name| (pod_name, true));
    for (pod_name, ours) in adopt.chain(plan.release.iter().map(|pod_name| (pod_name, false))) {
        let Some(pod) = by_name(pod_name) else {
            continue;
        };
        let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
        if ours {
            refs.extend(controller_ref(rs.as_ref()));
        } else {
            refs.retain(|r| r.uid != uid);
        }
        set_owner_references(&pods, pod, refs).await?;
        writes.push(Awaited::Owned {
            pod: pod.uid().unwrap_or_default(),
            ours,
        });
        if ours {
            tracing::info!(pod = %pod_name, "adopted");
        } else {
            tracing::info!(pod = %pod_name, "released: it no longer matches the selector");
        }
    }

    // The ReplicaSet came from the controller's cache, which may be a moment behind: one
    // deleted with its Deployment (its pods going with it) must not get new pods. A fresh
    // read confirms it before any pod is created; a gone or terminating set creates none.
    if !plan.create.is_empty() {
        let live = sets.get_opt(&name).await;
        let live = live.map_err(ControllerError::api(format!("read {what}")))?;
        let same = live.is_some_and(|live| {
            live.metadata.uid == rs.metadata.uid && !terminating(&live.metadata)
        });
        if !same {
            tracing::debug!(replicaset = %name, "gone or going; no pods created");
            return Ok(Action::await_change());
        }
    }
    let post = PostParams::default();
    let created = join_all(plan.create.iter().map(|pod| pods.create(&post, pod))).await;
    let mut first_error = None;
    for result in created {
        match result {
            Ok(pod) => {
                writes.push(Awaited::Created(pod.uid().unwrap_or_default()));
                let pod_name = pod.name_any();
                tracing::info!(pod = %pod_name, "created pod");
                let message = format!("Created pod: {pod_name}");
                ctx.normal(rs.as_ref(), "SuccessfulCreate", message).await;
            }
            Err(error) => {
                let message = format!("Error creating: {error}");
                ctx.record(&*rs, "Warning", "FailedCreate", message).await;
                let action = format!("create a pod for {what}");
                first_error.get_or_insert(ControllerError::api(action)(error));
            }
        }
    }

    for pod_name in plan.delete.iter().chain(&plan.remove_finished) {
        // With the pod's own grace period, and only if it is still the pod decided about.
        let uid = by_name(pod_name).and_then(|p| p.uid());
        let preconditions = uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        });
        let params = DeleteParams {
            preconditions,
            ..DeleteParams::default()
        };
        let action = || format!("delete pod {namespace}/{pod_name} of {what}");
        match delete_if_present(&pods, pod_name, &params, action).await {
            Ok(true) => {
                writes.push(Awaited::Deleted(uid.unwrap_or_default()));
                tracing::info!(pod = %pod_name, "deleted pod");
                let message = format!("Deleted pod: {pod_name}");
                ctx.normal(rs.as_ref(), "SuccessfulDelete", message).await;
            }
            Ok(false) => {}
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }

    if let Some(status) = &plan.status {
        let action = || format!("update the status of {what}");
        write_status(sets, &name, rs.status.as_ref(), status, action).await?;
    }
    Ok(Action::requeue(plan.requeue_after.unwrap_or(RESYNC)))
}

/// Replaces a pod's ownerReferences, only if the pod has not changed since it was read (a
/// merge patch naming a resourceVersion is a precondition).
async fn set_owner_references(
    pods: &Api<Pod>,
    pod: &Pod,
    refs: Vec<OwnerReference>,
) -> Result<(), ControllerError> {
    let name = pod.name_any();
    let patch = Patch::Merge(json!({"metadata": {
        "resourceVersion": pod.metadata.resource_version,
        "ownerReferences": refs,
    }}));
    let action = format!("set the owners of pod {name}");
    match pods.patch(&name, &PatchParams::default(), &patch).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(source) => Err(ControllerError::Api { action, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{
        Container, ContainerStatus, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
    use std::collections::BTreeMap;

    const UID: &str = "rs-uid";

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("time")
    }

    fn app_labels() -> BTreeMap<String, String> {
        BTreeMap::from([("app".to_owned(), "web".to_owned())])
    }

    fn rs(replicas: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some(UID.into()),
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: None,
                selector: LabelSelector {
                    match_labels: Some(app_labels()),
                    match_expressions: None,
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(app_labels()),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "probe".into(),
                            image: Some("shipshape/probe:v1".into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                }),
            }),
            status: None,
        }
    }

    /// A pod owned by the ReplicaSet, created at `created`.
    fn pod(name: &str, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("{name}-uid")),
                labels: Some(app_labels()),
                creation_timestamp: Some(Time(t(created))),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "web".into(),
                    uid: UID.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                ..PodStatus::default()
            }),
        }
    }

    fn bound(mut p: Pod) -> Pod {
        p.spec.get_or_insert_default().node_name = Some("node-1".into());
        p
    }

    fn running(mut p: Pod) -> Pod {
        p.status.get_or_insert_default().phase = Some("Running".into());
        bound(p)
    }

    fn ready(mut p: Pod, since: i64) -> Pod {
        p = running(p);
        p.status.get_or_insert_default().conditions = Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(Time(t(since))),
            ..PodCondition::default()
        }]);
        p
    }

    fn phase(mut p: Pod, phase: &str) -> Pod {
        p.status.get_or_insert_default().phase = Some(phase.into());
        p
    }

    fn orphan(mut p: Pod) -> Pod {
        p.metadata.owner_references = None;
        p
    }

    #[test]
    fn creates_the_missing_pods_from_the_template() {
        let plan = reconcile(&rs(3), &[pod("web-a", 0)], t(10)).expect("plan");
        assert_eq!(plan.create.len(), 2);
        let new = &plan.create[0];
        assert_eq!(new.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(new.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(new.metadata.labels, Some(app_labels()));
        let owner = &new.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("ReplicaSet", "web", UID, Some(true))
        );
        assert_eq!(owner.api_version, "apps/v1");
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert_eq!(new.spec, rs(3).spec.and_then(|s| s.template?.spec));
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn terminating_finished_and_foreign_pods_do_not_count() {
        let mut gone = bound(pod("web-gone", 0));
        gone.metadata.deletion_timestamp = Some(Time(t(5)));
        let done = phase(pod("web-done", 0), "Succeeded");
        let failed = phase(pod("web-failed", 0), "Failed");
        let mut foreign = pod("other", 0);
        if let Some(refs) = foreign.metadata.owner_references.as_mut() {
            refs[0].uid = "someone-else".into();
        }
        let pods = [pod("web-a", 0), gone, done, failed, foreign];
        let plan = reconcile(&rs(3), &pods, t(10)).expect("plan");
        assert_eq!(plan.create.len(), 2, "two of three are missing");
        assert_eq!(plan.remove_finished, vec!["web-done", "web-failed"]);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.status.expect("status").replicas, 1);
    }

    #[test]
    fn deletes_the_least_valuable_pods_first() {
        let pods = [
            ready(pod("ready-old", 0), 10),
            ready(pod("ready-recent", 1), 50),
            running(pod("running-not-ready", 2)),
            bound(pod("pending-bound", 3)),
            pod("unscheduled-old", 4),
            pod("unscheduled-new", 5),
            phase(bound(pod("unknown", 6)), "Unknown"),
        ];
        let delete = |n| reconcile(&rs(7 - n), &pods, t(100)).expect("plan").delete;
        assert_eq!(
            delete(6),
            vec![
                "unscheduled-new",
                "unscheduled-old",
                "pending-bound",
                "unknown",
                "running-not-ready",
                "ready-recent"
            ]
        );
        assert_eq!(delete(2), vec!["unscheduled-new", "unscheduled-old"]);
        assert!(delete(0).is_empty());
    }

    #[test]
    fn among_equals_more_restarts_then_the_newest_go_first() {
        let mut crashy = running(pod("crashy", 0));
        crashy.status.get_or_insert_default().container_statuses = Some(vec![ContainerStatus {
            restart_count: 4,
            ..ContainerStatus::default()
        }]);
        let pods = [
            running(pod("old", 0)),
            running(pod("new", 9)),
            crashy,
            running(pod("mid", 5)),
        ];
        let plan = reconcile(&rs(1), &pods, t(100)).expect("plan");
        assert_eq!(plan.delete, vec!["crashy", "new", "mid"]);
    }

    #[test]
    fn adopts_matching_orphans_and_releases_relabelled_pods() {
        let mut relabelled = pod("relabelled", 0);
        relabelled.metadata.labels = Some(BTreeMap::from([("app".into(), "debug".into())]));
        let mut unrelated = orphan(pod("unrelated", 0));
        unrelated.metadata.labels = None;
        let pods = [orphan(pod("stray", 0)), relabelled, unrelated];
        let plan = reconcile(&rs(1), &pods, t(10)).expect("plan");
        assert_eq!(plan.adopt, vec!["stray"]);
        assert_eq!(plan.release, vec!["relabelled"]);
        assert!(
            plan.create.is_empty(),
            "the adopted pod fills the one replica"
        );
    }

    #[test]
    fn only_controlled_pods_that_stopped_matching_come_from_the_cache() {
        let mut relabelled = pod("relabelled", 0);
        relabelled.metadata.labels = Some(BTreeMap::from([("app".into(), "debug".into())]));
        let mut elsewhere = relabelled.clone();
        elsewhere.metadata.name = Some("elsewhere".into());
        elsewhere.metadata.namespace = Some("other".into());
        let mut stale = relabelled.clone();
        stale.metadata.name = Some("matches-again".into());
        let mut unowned = orphan(relabelled.clone());
        unowned.metadata.name = Some("unowned".into());
        let in_default = |mut p: Pod| {
            p.metadata.namespace.get_or_insert_with(|| "default".into());
            Arc::new(p)
        };
        let cached: Vec<Arc<Pod>> = [pod("matching", 0), relabelled, elsewhere, stale, unowned]
            .into_iter()
            .map(in_default)
            .collect();
        // The fresh list has every matching pod; `matches-again` is among them now.
        let fresh = [pod("matching", 0), pod("matches-again", 0)];
        let names: Vec<String> = strays(&rs(2), &cached, &fresh)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(names, vec!["relabelled"]);
    }

    #[test]
    fn status_counts_replicas_labels_readiness_and_availability() {
        let mut set = rs(4);
        // The template has one label more than the selector asks for.
        let full = BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("tier".to_owned(), "front".to_owned()),
        ]);
        if let Some(spec) = set.spec.as_mut() {
            spec.min_ready_seconds = Some(30);
            if let Some(meta) = spec.template.as_mut().and_then(|t| t.metadata.as_mut()) {
                meta.labels = Some(full.clone());
            }
        }
        let labelled = |mut p: Pod| {
            p.metadata.labels = Some(full.clone());
            p
        };
        let pods = [
            labelled(ready(pod("long-ready", 0), 0)),
            labelled(ready(pod("just-ready", 0), 90)),
            labelled(running(pod("not-ready", 0))),
            ready(pod("partly-labelled", 0), 0),
        ];
        let plan = reconcile(&set, &pods, t(100)).expect("plan");
        let status = plan.status.expect("status changed");
        assert_eq!(status.replicas, 4);
        assert_eq!(status.fully_labeled_replicas, Some(3));
        assert_eq!(status.ready_replicas, Some(3));
        assert_eq!(
            status.available_replicas,
            Some(2),
            "just-ready is 10 s short"
        );
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(20)));

        // Written once: the same observation again changes nothing.
        set.status = Some(status);
        let again = reconcile(&set, &pods, t(100)).expect("plan");
        assert_eq!(again.status, None);
        // Time alone makes just-ready available.
        let later = reconcile(&set, &pods, t(120)).expect("plan");
        assert_eq!(later.status.and_then(|s| s.available_replicas), Some(3));
    }

    #[test]
    fn a_replicaset_being_deleted_creates_and_deletes_nothing() {
        let mut set = rs(3);
        set.metadata.deletion_timestamp = Some(Time(t(0)));
        let plan = reconcile(&set, &[orphan(pod("stray", 0))], t(1)).expect("plan");
        assert!(plan.create.is_empty() && plan.adopt.is_empty() && plan.delete.is_empty());
        let plan = reconcile(&rs(0), &[pod("a", 0), pod("b", 1)], t(1)).expect("plan");
        assert_eq!(plan.delete, vec!["b", "a"]);
    }

    #[test]
    fn a_replicaset_without_uid_or_with_a_bad_selector_is_an_error() {
        let mut no_uid = rs(1);
        no_uid.metadata.uid = None;
        assert!(reconcile(&no_uid, &[], t(0)).is_err());
        let mut empty = rs(1);
        if let Some(spec) = empty.spec.as_mut() {
            spec.selector.match_labels = None;
        }
        // An empty selector is valid but claims nothing: no adoption of every pod.
        let plan = reconcile(&empty, &[orphan(pod("stray", 0))], t(0)).expect("plan");
        assert!(plan.adopt.is_empty());
    }
}
