//! # The Deployment controller: one template, a revision history of ReplicaSets
//!
//! The seed's deployment is "a template and a replica count, replaced on failure", with
//! rolling updates and one-click rollback. The replica count is the ReplicaSet controller's
//! business; a Deployment adds *history*. Every distinct pod template it has had is one
//! ReplicaSet it owns, named `<deployment>-<pod-template-hash>` and numbered by the
//! annotation `deployment.kubernetes.io/revision`.
//!
//! Each pass, [`reconcile`]:
//!
//! 1. finds the *new* ReplicaSet: the owned one whose template, ignoring its
//!    `pod-template-hash` label, equals the Deployment's (comparing templates, not hashes,
//!    means a change in how the hash is computed never triggers a rollout);
//! 2. if there is none, creates it — template labels plus `pod-template-hash`, a selector
//!    that adds the same label (so ReplicaSets of one Deployment never share pods), revision
//!    one more than the highest among the others. Rolling back is this same step: `kubectl
//!    rollout undo` copies an old template back, the old ReplicaSet becomes the new one and
//!    takes the next revision number;
//! 3. scales the new ReplicaSet to `spec.replicas` and every older one to 0. (This is a
//!    simple switch-over; a `RollingUpdate` that honours `maxSurge` / `maxUnavailable` step by
//!    step replaces only this step — everything else stays.) A paused Deployment
//!    (`spec.paused`) touches no ReplicaSet;
//! 4. deletes the oldest empty ReplicaSets beyond `revisionHistoryLimit`;
//! 5. reports status: replica counts summed over its ReplicaSets, and the `Available` and
//!    `Progressing` conditions with Kubernetes' reasons and timing rules.
//!
//! [`apply`] lists the namespace's ReplicaSets, calls `reconcile`, and carries the plan out
//! (Events `ScalingReplicaSet`), handling a hash collision the way Kubernetes does: by
//! bumping `status.collisionCount`, which changes the hash.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::{
    ControllerError, RESYNC, Recorder, controller_ref, controller_uid, describe, terminating,
};

/// The label that ties a ReplicaSet and its pods to one template of a Deployment.
pub(super) const HASH_LABEL: &str = "pod-template-hash";
/// The revision number of a ReplicaSet (and, on the Deployment, of its current one).
pub(super) const REVISION: &str = "deployment.kubernetes.io/revision";
/// The Deployment's `spec.replicas` when the ReplicaSet was last scaled.
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas` + `maxSurge` when the ReplicaSet was last scaled.
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Reasons of the `Progressing` and `Available` conditions, as Kubernetes spells them.
mod reason {
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    pub const PAUSED: &str = "DeploymentPaused";
    pub const RESUMED: &str = "DeploymentResumed";
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// A change to one existing ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Update {
    /// The ReplicaSet.
    pub name: String,
    /// `(from, to)` when its `spec.replicas` changes.
    pub scale: Option<(i32, i32)>,
    /// Annotations to set.
    pub annotations: BTreeMap<String, String>,
}

/// What one Deployment needs done.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Plan {
    /// The new ReplicaSet to create, when no owned one has the current template.
    pub create: Option<ReplicaSet>,
    /// Scaling and annotation changes to existing ReplicaSets.
    pub update: Vec<Update>,
    /// Old, empty ReplicaSets beyond `revisionHistoryLimit`, to delete.
    pub delete: Vec<String>,
    /// The Deployment's own revision annotation, when it changes.
    pub revision: Option<String>,
    /// The status to write, when it differs from the current one.
    pub status: Option<DeploymentStatus>,
    /// When to look again although nothing changed (the progress deadline).
    pub requeue_after: Option<Duration>,
}

/// The `pod-template-hash` of a template: FNV-1a (32 bits) of its JSON, followed by the
/// collision count, rendered as Kubernetes renders it (the decimal digits mapped onto
/// consonants and digits that cannot spell words), so it is short and DNS-label safe.
pub(super) fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(n) = collision_count {
        bytes.extend_from_slice(&n.to_le_bytes());
    }
    let hash = bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// Whether two templates are the same apart from the `pod-template-hash` label.
fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    fn strip(t: &PodTemplateSpec) -> PodTemplateSpec {
        let mut t = t.clone();
        if let Some(meta) = t.metadata.as_mut() {
            if let Some(labels) = meta.labels.as_mut() {
                labels.remove(HASH_LABEL);
                if labels.is_empty() {
                    meta.labels = None;
                }
            }
            if *meta == ObjectMeta::default() {
                t.metadata = None;
            }
        }
        t
    }
    strip(a) == strip(b)
}

/// A ReplicaSet's revision number (0 when it has none).
fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `maxSurge` or `maxUnavailable` of `total` replicas: an absolute number, or a percentage
/// rounded up (surge) or down (unavailable).
fn resolve(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match value {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let Some(percent) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return 0;
            };
            let scaled = percent * i64::from(total);
            let n = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(n).unwrap_or(0)
        }
        None => resolve(Some(&IntOrString::String("25%".into())), total, round_up),
    }
}

/// `(maxSurge, maxUnavailable)` resolved against `spec.replicas`, as Kubernetes resolves
/// them: both 0 for `Recreate`; never both 0 for `RollingUpdate`.
fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let Some(spec) = d.spec.as_ref() else {
        return (0, 0);
    };
    let replicas = spec.replicas.unwrap_or(1);
    let strategy = spec.strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return (0, 0);
    }
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(rolling.and_then(|r| r.max_surge.as_ref()), replicas, true);
    let mut unavailable = resolve(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas).max(0))
}

/// The annotations a ReplicaSet carries after being scaled for `d`.
fn scale_annotations(desired: i32, surge: i32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (DESIRED_REPLICAS.to_owned(), desired.to_string()),
        (MAX_REPLICAS.to_owned(), (desired + surge).to_string()),
    ])
}

/// Decides what to do for `d`, given the ReplicaSets it controls, at time `now`.
pub(super) fn reconcile(
    d: &Deployment,
    owned: &[ReplicaSet],
    now: Timestamp,
) -> Result<Plan, ControllerError> {
    let malformed = |reason: &str| ControllerError::Malformed {
        object: describe(d),
        reason: reason.to_owned(),
    };
    let spec = d.spec.as_ref().ok_or_else(|| malformed("no spec"))?;
    let name = d
        .metadata
        .name
        .as_deref()
        .ok_or_else(|| malformed("no name"))?;
    let desired = spec.replicas.unwrap_or(1).max(0);
    let paused = spec.paused == Some(true);
    let (surge, max_unavailable) = surge_and_unavailable(d);
    let current = d.status.clone().unwrap_or_default();

    // Oldest first, so that of two equal templates the older ReplicaSet is "the new one".
    let mut sets: Vec<&ReplicaSet> = owned
        .iter()
        .filter(|rs| !terminating(&rs.metadata))
        .collect();
    sets.sort_by_key(|rs| (rs.metadata.creation_timestamp.clone(), rs.name_any()));
    let new_rs = sets.iter().copied().find(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| equal_ignoring_hash(t, &spec.template))
    });
    let old: Vec<&ReplicaSet> = sets
        .iter()
        .copied()
        .filter(|rs| new_rs.is_none_or(|n| n.metadata.uid != rs.metadata.uid))
        .collect();
    let next_revision = old.iter().map(|rs| revision(rs)).max().unwrap_or(0) + 1;

    let mut plan = Plan::default();
    // The replicas each ReplicaSet is asked for after this pass, by name.
    let mut target: BTreeMap<String, i32> = sets
        .iter()
        .map(|rs| (rs.name_any(), replicas_of(rs)))
        .collect();
    if !paused {
        match new_rs {
            None => {
                let hash = template_hash(&spec.template, current.collision_count);
                let rs = new_replicaset(d, &hash, next_revision, desired, surge)
                    .ok_or_else(|| malformed("no name or uid"))?;
                plan.revision = Some(next_revision.to_string());
                plan.create = Some(rs);
            }
            Some(rs) => {
                let mut annotations = BTreeMap::new();
                if revision(rs) < next_revision {
                    annotations.insert(REVISION.to_owned(), next_revision.to_string());
                }
                let revision_now = revision(rs).max(next_revision).to_string();
                if annotation(&d.metadata, REVISION) != Some(revision_now.as_str()) {
                    plan.revision = Some(revision_now);
                }
                let wanted = scale_annotations(desired, surge);
                if wanted
                    .iter()
                    .any(|(k, v)| annotation(&rs.metadata, k) != Some(v.as_str()))
                {
                    annotations.extend(wanted);
                }
                push_update(
                    &mut plan,
                    &mut target,
                    rs,
                    desired,
                    annotations,
                    (desired, surge),
                );
            }
        }
        for rs in &old {
            push_update(
                &mut plan,
                &mut target,
                rs,
                0,
                BTreeMap::new(),
                (desired, surge),
            );
        }

        // Revision history: the oldest empty ReplicaSets beyond the limit go.
        let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .copied()
            .filter(|rs| replicas_of(rs) == 0 && rs.status.as_ref().is_none_or(|s| s.replicas == 0))
            .collect();
        cleanable.sort_by_key(|rs| revision(rs));
        let excess = cleanable.len().saturating_sub(limit);
        plan.delete = cleanable[..excess].iter().map(|rs| rs.name_any()).collect();
    }

    // Status: counts summed over the ReplicaSets as they will be after this pass.
    let new_name = match (&plan.create, new_rs) {
        (Some(created), _) => created.metadata.name.clone(),
        (None, Some(rs)) => rs.metadata.name.clone(),
        (None, None) => None,
    };
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        collision_count: current.collision_count,
        conditions: current.conditions.clone(),
        ..DeploymentStatus::default()
    };
    let (mut total, mut replicas, mut updated, mut ready, mut available) = (0, 0, 0, 0, 0);
    for rs in &sets {
        let s = rs.status.clone().unwrap_or_default();
        total += target.get(&rs.name_any()).copied().unwrap_or(0);
        replicas += s.replicas;
        ready += s.ready_replicas.unwrap_or(0);
        available += s.available_replicas.unwrap_or(0);
        if rs.metadata.name == new_name {
            updated = s.replicas;
        }
    }
    if plan.create.is_some() {
        total += desired;
    }
    status.replicas = Some(replicas);
    status.updated_replicas = Some(updated);
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status.unavailable_replicas = Some((total - available).max(0));

    let mut conditions = current.conditions.clone().unwrap_or_default();
    let at = Time(now);
    if available >= desired - max_unavailable {
        set_condition(
            &mut conditions,
            condition(
                "Available",
                "True",
                reason::MIN_AVAILABLE,
                "Deployment has minimum availability.",
                &at,
            ),
        );
    } else {
        set_condition(
            &mut conditions,
            condition(
                "Available",
                "False",
                reason::MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                &at,
            ),
        );
    }
    let progressing = find(&conditions, "Progressing").cloned();
    let progressing_reason = progressing.as_ref().and_then(|c| c.reason.as_deref());
    let new_label = new_name.as_deref().map_or_else(
        || format!("Deployment {name:?}"),
        |n| format!("ReplicaSet {n:?}"),
    );
    if paused {
        if progressing_reason != Some(reason::PAUSED)
            && progressing_reason != Some(reason::TIMED_OUT)
        {
            set_condition(
                &mut conditions,
                condition(
                    "Progressing",
                    "Unknown",
                    reason::PAUSED,
                    "Deployment is paused",
                    &at,
                ),
            );
        }
    } else {
        if progressing_reason == Some(reason::PAUSED) {
            set_condition(
                &mut conditions,
                condition(
                    "Progressing",
                    "Unknown",
                    reason::RESUMED,
                    "Deployment is resumed",
                    &at,
                ),
            );
        }
        if let Some(n) = plan
            .create
            .as_ref()
            .and_then(|rs| rs.metadata.name.as_deref())
        {
            replace_progressing(
                &mut conditions,
                reason::NEW_RS_CREATED,
                &format!("Created new replica set {n:?}"),
                &at,
            );
        } else if progressing.is_none()
            && let Some(n) = new_name.as_deref()
        {
            replace_progressing(
                &mut conditions,
                reason::FOUND_NEW_RS,
                &format!("Found new replica set {n:?}"),
                &at,
            );
        }
        let complete = updated == desired
            && replicas == desired
            && available == desired
            && plan.create.is_none();
        let deadline = spec.progress_deadline_seconds.map(i64::from);
        if complete {
            set_condition(
                &mut conditions,
                condition(
                    "Progressing",
                    "True",
                    reason::NEW_RS_AVAILABLE,
                    &format!("{new_label} has successfully progressed."),
                    &at,
                ),
            );
        } else if progressed(&current, &status) {
            replace_progressing(
                &mut conditions,
                reason::RS_UPDATED,
                &format!("{new_label} is progressing."),
                &at,
            );
        } else if let Some(deadline) = deadline
            && let Some(cond) = find(&conditions, "Progressing")
            && cond.status == "True"
            && let Some(since) = cond.last_update_time.as_ref()
        {
            let left = SignedDuration::from_secs(deadline) - now.duration_since(since.0);
            if left.is_positive() {
                plan.requeue_after = Duration::try_from(left).ok();
            } else {
                set_condition(
                    &mut conditions,
                    condition(
                        "Progressing",
                        "False",
                        reason::TIMED_OUT,
                        &format!("{new_label} has timed out progressing."),
                        &at,
                    ),
                );
            }
        }
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    if d.status.as_ref() != Some(&status) {
        plan.status = Some(status);
    }
    Ok(plan)
}

/// Records that `rs` goes to `to` replicas (and gets `annotations`), if anything changes.
/// Kubernetes stamps the Deployment's size on every ReplicaSet it scales.
fn push_update(
    plan: &mut Plan,
    target: &mut BTreeMap<String, i32>,
    rs: &ReplicaSet,
    to: i32,
    mut annotations: BTreeMap<String, String>,
    (desired, surge): (i32, i32),
) {
    let name = rs.name_any();
    let from = replicas_of(rs);
    let scale = (from != to).then_some((from, to));
    if scale.is_some() {
        annotations.extend(scale_annotations(desired, surge));
    }
    target.insert(name.clone(), to);
    if scale.is_some() || !annotations.is_empty() {
        plan.update.push(Update {
            name,
            scale,
            annotations,
        });
    }
}

/// The new ReplicaSet for `d`'s current template.
fn new_replicaset(
    d: &Deployment,
    hash: &str,
    revision: i64,
    replicas: i32,
    surge: i32,
) -> Option<ReplicaSet> {
    let spec = d.spec.as_ref()?;
    let mut template = spec.template.clone();
    let labels = template
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default();
    labels.insert(HASH_LABEL.to_owned(), hash.to_owned());
    let labels = labels.clone();
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_default()
        .insert(HASH_LABEL.to_owned(), hash.to_owned());
    // The Deployment's annotations travel along (kubectl's change-cause is read from the
    // ReplicaSets), except the ones that describe the Deployment itself.
    let mut annotations: BTreeMap<String, String> = d
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| {
            !k.starts_with("deployment.kubernetes.io/")
                && *k != "kubectl.kubernetes.io/last-applied-configuration"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(REVISION.to_owned(), revision.to_string());
    annotations.extend(scale_annotations(replicas, surge));
    Some(ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.metadata.name.as_deref()?)),
            namespace: d.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(d)?]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    })
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    at: &Time,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_update_time: Some(at.clone()),
        last_transition_time: Some(at.clone()),
    }
}

fn find<'a>(conditions: &'a [DeploymentCondition], type_: &str) -> Option<&'a DeploymentCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Kubernetes' `SetDeploymentCondition`: nothing changes when status and reason are the
/// same; the transition time is kept when only the reason changes.
fn set_condition(conditions: &mut Vec<DeploymentCondition>, mut new: DeploymentCondition) {
    if let Some(old) = conditions.iter().find(|c| c.type_ == new.type_) {
        if old.status == new.status && old.reason == new.reason {
            return;
        }
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != new.type_);
    conditions.push(new);
}

/// Sets `Progressing` to `True` with `reason`, refreshing its update time even when the
/// reason is unchanged (progress was made), and keeping its transition time if it was
/// already `True`.
fn replace_progressing(
    conditions: &mut Vec<DeploymentCondition>,
    reason: &str,
    message: &str,
    at: &Time,
) {
    let mut new = condition("Progressing", "True", reason, message, at);
    if let Some(old) = find(conditions, "Progressing")
        && old.status == "True"
    {
        new.last_transition_time = old.last_transition_time.clone();
    }
    conditions.retain(|c| c.type_ != "Progressing");
    conditions.push(new);
}

/// Whether the rollout moved since the last status: more updated, fewer old, more ready
/// or more available replicas.
fn progressed(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// Runs the Deployment controller until shutdown: reconciles a Deployment whenever it or
/// one of its ReplicaSets changes.
pub(super) async fn run(client: Client, shutdown: watch::Receiver<bool>) {
    let controller = Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let recorder = Recorder {
        client,
        component: "deployment-controller",
    };
    super::drive(
        "deployment",
        controller,
        Arc::new(recorder),
        apply,
        shutdown,
    )
    .await;
}

/// One pass for one Deployment: list its ReplicaSets, decide, act.
async fn apply(d: Arc<Deployment>, ctx: Arc<Recorder>) -> Result<Action, ControllerError> {
    if terminating(&d.metadata) {
        return Ok(Action::await_change());
    }
    let namespace = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let what = describe(d.as_ref());
    let client = ctx.client.clone();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
    let deployments: Api<Deployment> = Api::namespaced(client, &namespace);
    let uid = d.metadata.uid.as_deref();
    let owned: Vec<ReplicaSet> = sets
        .list(&ListParams::default())
        .await
        .map_err(ControllerError::api(format!(
            "list the ReplicaSets of {what}"
        )))?
        .items
        .into_iter()
        .filter(|rs| uid.is_some() && controller_uid(&rs.metadata) == uid)
        .collect();
    let plan = reconcile(&d, &owned, Timestamp::now())?;

    if let Some(rs) = &plan.create {
        let rs_name = rs.name_any();
        match sets.create(&PostParams::default(), rs).await {
            Ok(_) => {
                let to = replicas_of(rs);
                tracing::info!(replicaset = %rs_name, replicas = to, "created new ReplicaSet");
                ctx.normal(
                    d.as_ref(),
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {rs_name} from 0 to {to}"),
                )
                .await;
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                // Someone else's ReplicaSet, or ours with another template: the hash
                // collides. A new collision count gives a new hash next time.
                let count = d
                    .status
                    .as_ref()
                    .and_then(|s| s.collision_count)
                    .unwrap_or(0)
                    .saturating_add(1);
                tracing::warn!(replicaset = %rs_name, count, "pod-template-hash collision");
                deployments
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"collisionCount": count}})),
                    )
                    .await
                    .map_err(ControllerError::api(format!(
                        "record a hash collision of {what}"
                    )))?;
                return Ok(Action::requeue(Duration::from_millis(100)));
            }
            Err(source) => {
                return Err(ControllerError::Api {
                    action: format!("create ReplicaSet {rs_name} for {what}"),
                    source,
                });
            }
        }
    }

    for update in &plan.update {
        let mut patch = json!({"metadata": {"annotations": update.annotations}});
        if let Some((_, to)) = update.scale {
            patch["spec"] = json!({"replicas": to});
        }
        sets.patch(&update.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(ControllerError::api(format!(
                "update ReplicaSet {} of {what}",
                update.name
            )))?;
        if let Some((from, to)) = update.scale {
            let direction = if to > from { "up" } else { "down" };
            tracing::info!(replicaset = %update.name, from, to, "scaled ReplicaSet");
            ctx.normal(
                d.as_ref(),
                "ScalingReplicaSet",
                format!(
                    "Scaled {direction} replica set {} from {from} to {to}",
                    update.name
                ),
            )
            .await;
        }
    }

    for rs_name in &plan.delete {
        let uid = owned
            .iter()
            .find(|rs| rs.metadata.name.as_deref() == Some(rs_name))
            .and_then(|rs| rs.metadata.uid.clone());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match sets.delete(rs_name, &params).await {
            Ok(_) => {
                tracing::info!(replicaset = %rs_name, "deleted an old ReplicaSet beyond the limit")
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(source) => {
                return Err(ControllerError::Api {
                    action: format!("delete old ReplicaSet {rs_name} of {what}"),
                    source,
                });
            }
        }
    }

    if let Some(revision) = &plan.revision {
        deployments
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {REVISION: revision}}})),
            )
            .await
            .map_err(ControllerError::api(format!(
                "annotate the revision of {what}"
            )))?;
    }
    if let Some(status) = &plan.status {
        deployments
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .map_err(ControllerError::api(format!("update the status of {what}")))?;
    }
    Ok(Action::requeue(plan.requeue_after.unwrap_or(RESYNC)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetStatus};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("time")
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "probe".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    fn deployment(replicas: i32, image: &str) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("d-uid".into()),
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                    match_expressions: None,
                },
                template: template(image),
                revision_history_limit: Some(10),
                progress_deadline_seconds: Some(600),
                ..DeploymentSpec::default()
            }),
            status: None,
        }
    }

    /// The ReplicaSet a pass over `d` creates, as the apiserver would store it, created at
    /// `at`, with `ready` of its replicas ready and available.
    fn created(d: &Deployment, at: i64, ready: i32) -> ReplicaSet {
        let mut rs = reconcile(d, &[], t(at))
            .expect("plan")
            .create
            .expect("creates one");
        rs.metadata.uid = Some(format!("rs-uid-{at}"));
        rs.metadata.creation_timestamp = Some(Time(t(at)));
        let replicas = replicas_of(&rs);
        rs.status = Some(ReplicaSetStatus {
            replicas,
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            ..ReplicaSetStatus::default()
        });
        rs
    }

    fn with_revision(mut rs: ReplicaSet, revision: i64) -> ReplicaSet {
        rs.metadata
            .annotations
            .get_or_insert_default()
            .insert(REVISION.into(), revision.to_string());
        rs
    }

    fn scaled(mut rs: ReplicaSet, replicas: i32) -> ReplicaSet {
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        if let Some(status) = rs.status.as_mut() {
            status.replicas = replicas;
            status.ready_replicas = Some(replicas);
            status.available_replicas = Some(replicas);
        }
        rs
    }

    fn progressing(status: &DeploymentStatus) -> (String, String) {
        let c = find(
            status.conditions.as_deref().unwrap_or_default(),
            "Progressing",
        )
        .expect("Progressing");
        (c.status.clone(), c.reason.clone().unwrap_or_default())
    }

    fn available(status: &DeploymentStatus) -> (String, String) {
        let c = find(
            status.conditions.as_deref().unwrap_or_default(),
            "Available",
        )
        .expect("Available");
        (c.status.clone(), c.reason.clone().unwrap_or_default())
    }

    #[test]
    fn the_hash_is_stable_short_and_label_safe_and_follows_the_template() {
        let a = template_hash(&template("probe:v1"), None);
        assert_eq!(a, template_hash(&template("probe:v1").clone(), None));
        assert!(!a.is_empty() && a.len() <= 10, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "{a}"
        );
        assert_ne!(a, template_hash(&template("probe:v2"), None));
        assert_ne!(a, template_hash(&template("probe:v1"), Some(1)));
        assert_ne!(
            template_hash(&template("probe:v1"), Some(1)),
            template_hash(&template("probe:v1"), Some(2))
        );
    }

    #[test]
    fn templates_compare_equal_ignoring_only_the_hash_label() {
        let mut hashed = template("probe:v1");
        if let Some(labels) = hashed.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.insert(HASH_LABEL.into(), "abc".into());
        }
        assert!(equal_ignoring_hash(&hashed, &template("probe:v1")));
        assert!(!equal_ignoring_hash(&hashed, &template("probe:v2")));
        let mut bare = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([(HASH_LABEL.into(), "abc".into())])),
                ..ObjectMeta::default()
            }),
            spec: None,
        };
        assert!(equal_ignoring_hash(&bare, &PodTemplateSpec::default()));
        bare.spec = Some(PodSpec::default());
        assert!(!equal_ignoring_hash(&bare, &PodTemplateSpec::default()));
    }

    #[test]
    fn a_new_deployment_gets_revision_one_named_by_its_hash() {
        let d = deployment(3, "probe:v1");
        let plan = reconcile(&d, &[], t(0)).expect("plan");
        let rs = plan.create.expect("a ReplicaSet");
        let hash = template_hash(&template("probe:v1"), None);
        assert_eq!(rs.metadata.name, Some(format!("web-{hash}")));
        assert_eq!(rs.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(annotation(&rs.metadata, REVISION), Some("1"));
        assert_eq!(annotation(&rs.metadata, DESIRED_REPLICAS), Some("3"));
        assert_eq!(
            annotation(&rs.metadata, MAX_REPLICAS),
            Some("4"),
            "3 + 25% rounded up"
        );
        let spec = rs.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.selector
                .match_labels
                .as_ref()
                .and_then(|l| l.get(HASH_LABEL)),
            Some(&hash)
        );
        let labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .expect("labels");
        assert_eq!(labels.get(HASH_LABEL), Some(&hash));
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(rs.metadata.labels.as_ref(), Some(labels));
        let owner = &rs.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Deployment", "d-uid", Some(true))
        );
        assert_eq!(plan.revision.as_deref(), Some("1"));
        let status = plan.status.expect("status");
        assert_eq!(
            progressing(&status),
            ("True".into(), reason::NEW_RS_CREATED.into())
        );
        assert_eq!(status.unavailable_replicas, Some(3));
        assert_eq!(
            available(&status),
            ("False".into(), reason::MIN_UNAVAILABLE.into())
        );
    }

    #[test]
    fn a_new_template_gets_the_next_revision_and_the_old_set_goes_to_zero() {
        let v1 = deployment(3, "probe:v1");
        let old = with_revision(created(&v1, 0, 3), 1);
        let v2 = deployment(3, "probe:v2");
        let plan = reconcile(&v2, std::slice::from_ref(&old), t(10)).expect("plan");
        let new = plan.create.expect("a new ReplicaSet");
        assert_eq!(annotation(&new.metadata, REVISION), Some("2"));
        assert_ne!(new.metadata.name, old.metadata.name);
        assert_eq!(new.spec.as_ref().and_then(|s| s.replicas), Some(3));
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0].name, old.name_any());
        assert_eq!(plan.update[0].scale, Some((3, 0)));
        assert_eq!(
            plan.update[0]
                .annotations
                .get(DESIRED_REPLICAS)
                .map(String::as_str),
            Some("3")
        );
        assert_eq!(plan.revision.as_deref(), Some("2"));
    }

    #[test]
    fn an_existing_set_is_scaled_not_recreated() {
        let d = deployment(5, "probe:v1");
        let rs = with_revision(created(&deployment(3, "probe:v1"), 0, 3), 1);
        let plan = reconcile(&d, &[rs], t(10)).expect("plan");
        assert!(plan.create.is_none());
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0].scale, Some((3, 5)));
        assert_eq!(
            plan.update[0]
                .annotations
                .get(DESIRED_REPLICAS)
                .map(String::as_str),
            Some("5")
        );
        assert!(
            !plan.update[0].annotations.contains_key(REVISION),
            "revision 1 is already the highest"
        );
    }

    #[test]
    fn rolling_back_renumbers_the_old_set_as_the_newest_revision() {
        let v1 = with_revision(scaled(created(&deployment(3, "probe:v1"), 0, 3), 0), 1);
        let v2 = with_revision(created(&deployment(3, "probe:v2"), 10, 3), 2);
        let back = deployment(3, "probe:v1");
        let plan = reconcile(&back, &[v1.clone(), v2.clone()], t(20)).expect("plan");
        assert!(plan.create.is_none(), "the v1 ReplicaSet is reused");
        let for_v1 = plan
            .update
            .iter()
            .find(|u| u.name == v1.name_any())
            .expect("v1 updated");
        assert_eq!(for_v1.scale, Some((0, 3)));
        assert_eq!(
            for_v1.annotations.get(REVISION).map(String::as_str),
            Some("3")
        );
        let for_v2 = plan
            .update
            .iter()
            .find(|u| u.name == v2.name_any())
            .expect("v2 updated");
        assert_eq!(for_v2.scale, Some((3, 0)));
        assert_eq!(plan.revision.as_deref(), Some("3"));
    }

    #[test]
    fn a_paused_deployment_touches_no_replicaset() {
        let mut d = deployment(3, "probe:v2");
        if let Some(spec) = d.spec.as_mut() {
            spec.paused = Some(true);
        }
        let old = with_revision(created(&deployment(3, "probe:v1"), 0, 3), 1);
        let plan = reconcile(&d, &[old], t(10)).expect("plan");
        assert!(plan.create.is_none() && plan.update.is_empty() && plan.delete.is_empty());
        let status = plan.status.expect("status");
        assert_eq!(
            progressing(&status),
            ("Unknown".into(), reason::PAUSED.into())
        );
        assert_eq!(status.updated_replicas, Some(0));
        assert_eq!(status.replicas, Some(3));
    }

    #[test]
    fn old_empty_sets_beyond_the_history_limit_are_deleted_oldest_first() {
        let mut d = deployment(2, "probe:v9");
        if let Some(spec) = d.spec.as_mut() {
            spec.revision_history_limit = Some(1);
        }
        let old: Vec<ReplicaSet> = (1..=3)
            .map(|rev| {
                let image = format!("probe:v{rev}");
                with_revision(scaled(created(&deployment(2, &image), rev, 0), 0), rev)
            })
            .collect();
        let mut busy = with_revision(created(&deployment(2, "probe:v4"), 4, 2), 4);
        busy.metadata.name = Some("busy".into());
        let mut sets = old.clone();
        sets.push(busy);
        let plan = reconcile(&d, &sets, t(10)).expect("plan");
        assert_eq!(plan.delete, vec![old[0].name_any(), old[1].name_any()]);
        assert_eq!(
            plan.create
                .as_ref()
                .and_then(|rs| annotation(&rs.metadata, REVISION)),
            Some("5")
        );
    }

    #[test]
    fn surge_and_unavailable_resolve_like_kubernetes() {
        let total = 10;
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(resolve(Some(&pct("25%")), total, true), 3);
        assert_eq!(resolve(Some(&pct("25%")), total, false), 2);
        assert_eq!(resolve(Some(&IntOrString::Int(4)), total, false), 4);
        assert_eq!(resolve(None, 3, true), 1);
        assert_eq!(resolve(None, 3, false), 0);
        assert_eq!(surge_and_unavailable(&deployment(3, "x")), (1, 0));
        let mut zero = deployment(3, "x");
        if let Some(spec) = zero.spec.as_mut() {
            spec.strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(k8s_openapi::api::apps::v1::RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            });
        }
        assert_eq!(surge_and_unavailable(&zero), (0, 1), "never both zero");
    }

    #[test]
    fn status_sums_the_sets_and_sets_available_and_progressing() {
        let d = deployment(4, "probe:v2");
        let old = with_revision(scaled(created(&deployment(4, "probe:v1"), 0, 0), 1), 1);
        let mut new = with_revision(created(&d, 10, 2), 2);
        if let Some(s) = new.status.as_mut() {
            s.ready_replicas = Some(3);
        }
        // Before: nothing updated yet.
        let mut before = d.clone();
        before.status = Some(DeploymentStatus {
            replicas: Some(1),
            updated_replicas: Some(0),
            conditions: Some(vec![condition(
                "Progressing",
                "True",
                reason::NEW_RS_CREATED,
                "",
                &Time(t(10)),
            )]),
            ..DeploymentStatus::default()
        });
        let plan = reconcile(&before, &[old, new], t(20)).expect("plan");
        assert_eq!(plan.update.len(), 1, "only the old set is scaled to 0");
        let status = plan.status.expect("status");
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.replicas, Some(5));
        assert_eq!(status.updated_replicas, Some(4));
        assert_eq!(status.ready_replicas, Some(4));
        assert_eq!(status.available_replicas, Some(3));
        assert_eq!(
            status.unavailable_replicas,
            Some(1),
            "4 wanted, 3 available"
        );
        // maxUnavailable of 4 at 25% is 1: 3 available is enough.
        assert_eq!(
            available(&status),
            ("True".into(), reason::MIN_AVAILABLE.into())
        );
        assert_eq!(
            progressing(&status),
            ("True".into(), reason::RS_UPDATED.into())
        );
        let cond = find(
            status.conditions.as_deref().unwrap_or_default(),
            "Progressing",
        )
        .expect("Progressing");
        assert_eq!(
            cond.last_transition_time,
            Some(Time(t(10))),
            "still True: same transition"
        );
        assert_eq!(cond.last_update_time, Some(Time(t(20))));
    }

    #[test]
    fn a_finished_rollout_is_complete_and_then_stable() {
        let mut d = deployment(3, "probe:v1");
        let rs = with_revision(created(&d, 0, 3), 1);
        d.metadata
            .annotations
            .get_or_insert_default()
            .insert(REVISION.into(), "1".into());
        let plan = reconcile(&d, std::slice::from_ref(&rs), t(30)).expect("plan");
        assert!(plan.create.is_none() && plan.update.is_empty() && plan.revision.is_none());
        let status = plan.status.expect("status");
        assert_eq!(
            progressing(&status),
            ("True".into(), reason::NEW_RS_AVAILABLE.into())
        );
        assert_eq!(status.unavailable_replicas, Some(0));
        d.status = Some(status);
        let again = reconcile(&d, &[rs], t(90)).expect("plan");
        assert_eq!(again, Plan::default(), "nothing left to do or to report");
    }

    #[test]
    fn no_progress_for_the_deadline_times_out() {
        let mut d = deployment(3, "probe:v1");
        let rs = with_revision(created(&d, 0, 1), 1);
        let first = reconcile(&d, std::slice::from_ref(&rs), t(0)).expect("plan");
        d.status = first.status;
        let waiting = reconcile(&d, std::slice::from_ref(&rs), t(100)).expect("plan");
        assert_eq!(waiting.status, None);
        assert_eq!(waiting.requeue_after, Some(Duration::from_secs(500)));
        let late = reconcile(&d, &[rs], t(601)).expect("plan");
        let status = late.status.expect("status");
        assert_eq!(
            progressing(&status),
            ("False".into(), reason::TIMED_OUT.into())
        );
    }
}
