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
//! 3. sizes the ReplicaSets, in one of three ways:
//!    - **rolling update** (the default): the new ReplicaSet grows while all of them
//!      together stay within `replicas + maxSurge`; the old ones shrink, oldest first, while
//!      at least `replicas − maxUnavailable` pods stay available (ready for
//!      `minReadySeconds`) — their unavailable pods go first. One step per pass; the next
//!      pass comes when a ReplicaSet's status moves. `maxSurge` and `maxUnavailable` are
//!      numbers or percentages of `replicas` (surge rounded up, unavailable down, default
//!      25% each, never both 0). A broken new template therefore stalls with the old pods
//!      still serving;
//!    - **Recreate**: every old ReplicaSet goes to 0, and the new one starts only once no
//!      old pod runs, so two versions never serve at once;
//!    - **proportional scaling**, when `spec.replicas` changed since the ReplicaSets were
//!      last sized (their `desired-replicas` annotation says so) or while the Deployment is
//!      paused: a single active ReplicaSet takes the whole size; several share the change
//!      in proportion to their sizes (see [`scale`]) — a rollout scaled mid-way keeps its
//!      ratio of old to new. A paused Deployment is scaled but never rolled;
//! 4. deletes the oldest empty ReplicaSets beyond `revisionHistoryLimit`;
//! 5. reports status: replica counts summed over its ReplicaSets, the `Available`
//!    condition, and the `Progressing` condition estimated as Kubernetes does — refreshed on
//!    every sign of progress, `False` with reason `ProgressDeadlineExceeded` after
//!    `progressDeadlineSeconds` without any.
//!
//! The rules, numbers and reasons are Kubernetes' (its `pkg/controller/deployment`), so
//! `kubectl rollout status`, `history` and `undo` read them as they would there.
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
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::{
    ControllerError, RESYNC, Recorder, controller_ref, controller_uid, delete_if_present, describe,
    is_terminated, terminating, write_status,
};

/// The label that ties a ReplicaSet and its pods to one template of a Deployment.
pub(super) const HASH_LABEL: &str = "pod-template-hash";
/// The revision number of a ReplicaSet (and, on the Deployment, of its current one).
pub(super) const REVISION: &str = "deployment.kubernetes.io/revision";
/// The revision numbers a ReplicaSet had before it took its current one (a rollback to
/// it renumbers it), comma-separated.
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's `spec.replicas` when the ReplicaSet was last scaled.
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas` + `maxSurge` when the ReplicaSet was last scaled.
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// How soon a `Recreate` rollout waiting for old pods to go looks again.
const RECREATE_POLL: Duration = Duration::from_millis(500);

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
    /// `spec.minReadySeconds` to set, when the Deployment's changed.
    pub min_ready_seconds: Option<i32>,
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

/// Whether `rs` has `template`, the `pod-template-hash` label aside.
fn has_template(rs: &ReplicaSet, template: &PodTemplateSpec) -> bool {
    let own = rs.spec.as_ref().and_then(|s| s.template.as_ref());
    own.is_some_and(|t| equal_ignoring_hash(t, template))
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
    let percent = match value {
        Some(IntOrString::Int(n)) => return *n,
        Some(IntOrString::String(s)) => s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()),
        None => Some(25),
    };
    // A string that is not a percentage resolves to 0.
    let scaled = percent.unwrap_or(0) * i64::from(total);
    let n = (scaled + if round_up { 99 } else { 0 }).div_euclid(100);
    i32::try_from(n).unwrap_or(0)
}

/// Whether `d` replaces its pods all at once (`strategy.type: Recreate`) rather than by a
/// rolling update.
fn is_recreate(d: &Deployment) -> bool {
    let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
    strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// `(maxSurge, maxUnavailable)` resolved against `spec.replicas`, as Kubernetes resolves
/// them: both 0 for `Recreate`; never both 0 for `RollingUpdate`.
fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let Some(spec) = d.spec.as_ref().filter(|_| !is_recreate(d)) else {
        return (0, 0);
    };
    let replicas = spec.replicas.unwrap_or(1);
    let strategy = spec.strategy.as_ref();
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(rolling.and_then(|r| r.max_surge.as_ref()), replicas, true);
    let max_unavailable = rolling.and_then(|r| r.max_unavailable.as_ref());
    let mut unavailable = resolve(max_unavailable, replicas, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    if crate::failpoints::on!("deployment::ignore-max-unavailable") {
        unavailable = replicas;
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

/// The Deployment's annotations a ReplicaSet of it carries (kubectl reads the
/// change-cause from the ReplicaSets), without the ones that describe the Deployment or
/// one ReplicaSet only.
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    let mut annotations = d.metadata.annotations.clone().unwrap_or_default();
    annotations.retain(|k, _| {
        !k.starts_with("deployment.kubernetes.io/")
            && k != "kubectl.kubernetes.io/last-applied-configuration"
    });
    annotations
}

/// One ReplicaSet as a pass sizes it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Member {
    name: String,
    /// `spec.replicas` before this pass; `None` for the ReplicaSet this pass creates.
    was: Option<i32>,
    /// `spec.replicas` after this pass.
    size: i32,
    /// `status.availableReplicas`.
    available: i32,
    /// Its `desired-replicas` annotation: the Deployment's size when it was last scaled.
    desired_mark: Option<i32>,
    /// Its `max-replicas` annotation: that size plus `maxSurge`.
    max_mark: Option<i32>,
    /// Visited by a proportional [`scale`], which stamps the Deployment's size on every
    /// active ReplicaSet even when its own size stays.
    stamped: bool,
}

impl Member {
    /// The new ReplicaSet this pass creates, of `size`, stamped with the Deployment's size.
    fn to_create(size: i32, shape: Shape) -> Member {
        Member {
            size,
            desired_mark: Some(shape.desired),
            max_mark: Some(shape.desired + shape.surge),
            ..Member::default()
        }
    }

    fn of(rs: &ReplicaSet) -> Member {
        let mark = |key| annotation(&rs.metadata, key).and_then(|v| v.parse().ok());
        let size = replicas_of(rs);
        // A ReplicaSet just scaled down may still report the pods it is deleting as
        // available; counting more than its size would let the next pass take old pods
        // out twice for the same new ones.
        let status = rs.status.as_ref();
        let reported = status.and_then(|s| s.available_replicas).unwrap_or(0);
        Member {
            name: rs.name_any(),
            was: Some(size),
            size,
            available: reported.min(size),
            desired_mark: mark(DESIRED_REPLICAS),
            max_mark: mark(MAX_REPLICAS),
            stamped: false,
        }
    }
}

/// A proportional scale (Kubernetes' `sync` path): used while the Deployment is paused,
/// and when its `spec.replicas` changed since its ReplicaSets were last scaled — a
/// *scaling event*, which may come in the middle of a rollout.
///
/// With one active ReplicaSet (or none: then the newest), that one takes the whole size.
/// With a saturated new one, the old ones go to zero. Otherwise, for a rolling update,
/// every active ReplicaSet grows or shrinks in proportion to its share of the size it was
/// last scaled for (`max-replicas`), the total kept at `replicas + maxSurge`; rounding
/// leftovers go to the largest. This is how a rollout stalled at 8 old and 5 new pods of
/// 10 (maxSurge 3) becomes 20 and 13 when scaled to 30: 8 × 33 / 13 ≈ 20, 5 × 33 / 13 ≈ 13.
fn scale(
    members: &mut [Member],
    new: Option<usize>,
    shape: Shape,
    status_replicas: i32,
    rolling: bool,
) {
    let Shape { desired, surge, .. } = shape;
    if crate::failpoints::on!("deployment::scale-only-the-newest") {
        // Every replica asked for goes to the newest ReplicaSet; the others keep theirs.
        if let Some(i) = new.or_else(|| members.len().checked_sub(1)) {
            let rest: i32 = others(members, Some(i)).map(|m| m.size).sum();
            members[i].size = (desired + surge - rest).max(0);
            members[i].stamped = true;
        }
        return;
    }
    let active: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].size > 0)
        .collect();
    let single = match active.as_slice() {
        [] => new.or_else(|| {
            // The newest of the old ones (members are oldest first).
            (0..members.len()).rev().find(|&i| Some(i) != new)
        }),
        [only] => Some(*only),
        _ => None,
    };
    if let Some(i) = single {
        members[i].size = desired;
        members[i].stamped = true;
        return;
    }
    if let Some(n) = new {
        let m = &members[n];
        if m.size == desired && m.desired_mark == Some(desired) && m.available == desired {
            for &i in active.iter().filter(|&&i| i != n) {
                members[i].size = 0;
            }
            return;
        }
    }
    if !rolling {
        return;
    }
    let allowed = if desired > 0 { desired + surge } else { 0 };
    let total: i32 = active.iter().map(|&i| members[i].size).sum();
    let to_add = allowed - total;
    // Largest first; of equal ones the newer first when growing, the older when shrinking.
    let mut order = active;
    order.sort_by(|&a, &b| {
        let by_size = members[b].size.cmp(&members[a].size);
        by_size.then(if to_add > 0 { b.cmp(&a) } else { a.cmp(&b) })
    });
    let mut added = 0;
    for &i in &order {
        members[i].stamped = true;
        if added == to_add {
            continue;
        }
        let fraction = fraction(&members[i], desired, surge, status_replicas);
        let left = to_add - added;
        let proportion = if to_add > 0 {
            fraction.min(left)
        } else {
            fraction.max(left)
        };
        members[i].size += proportion;
        added += proportion;
    }
    if let Some(&largest) = order.first() {
        members[largest].size = (members[largest].size + to_add - added).max(0);
    }
}

/// How many replicas a ReplicaSet gains (or loses) in a proportional scale: its size
/// scaled from what it was last sized for (`max-replicas`, else the Deployment's current
/// count) to `replicas + maxSurge`, rounded half away from zero, as Kubernetes'
/// `getReplicaSetFraction` does.
fn fraction(m: &Member, desired: i32, surge: i32, status_replicas: i32) -> i32 {
    if desired == 0 {
        return -m.size;
    }
    let annotated = m.max_mark.unwrap_or(status_replicas);
    if annotated <= 0 {
        return 0;
    }
    let scaled = f64::from(m.size) * f64::from(desired + surge) / f64::from(annotated);
    // The product of two i32 sizes over a positive i32 fits an i32 after rounding for
    // any size the API accepts; `as` saturates rather than wraps if it ever does not.
    scaled.round() as i32 - m.size
}

/// The size of a Deployment, as one pass uses it.
#[derive(Debug, Clone, Copy)]
struct Shape {
    desired: i32,
    surge: i32,
    max_unavailable: i32,
}

/// The new ReplicaSet's size in a rolling update: grow toward `replicas` while all
/// ReplicaSets together stay within `replicas + maxSurge`.
fn surged_size(current: i32, total: i32, shape: Shape) -> i32 {
    let Shape { desired, surge, .. } = shape;
    if current >= desired {
        return desired;
    }
    let room = (desired + surge - total).max(0);
    current + room.min(desired - current)
}

/// One step of a rolling update. If the new ReplicaSet's size changes, that is the whole
/// step (Kubernetes looks again once it has); otherwise old ReplicaSets shrink, oldest
/// first, as far as availability allows: first their unavailable pods, within the room
/// `all − minAvailable − unavailable-new` leaves; then available ones, while the
/// available total stays at or above `replicas − maxUnavailable`.
fn roll(members: &mut [Member], new: usize, created: bool, shape: Shape) {
    let all: i32 = members.iter().map(|m| m.size).sum();
    if !created {
        let to = surged_size(members[new].size, all, shape);
        if to != members[new].size {
            members[new].size = to;
            return;
        }
    }
    if others(members, Some(new)).map(|m| m.size).sum::<i32>() == 0 {
        return;
    }
    let min_available = shape.desired - shape.max_unavailable;
    let new_unavailable = members[new].size - members[new].available;
    let mut room = all - min_available - new_unavailable;
    if room <= 0 {
        return;
    }
    for m in others(members, Some(new)) {
        let down = room.min(m.size - m.available).max(0);
        m.size -= down;
        room -= down;
    }
    let available: i32 = members.iter().map(|m| m.available).sum();
    let mut allowance = available - min_available;
    for m in others(members, Some(new)).filter(|m| m.size != 0) {
        if allowance <= 0 {
            break;
        }
        let down = m.size.min(allowance);
        m.size -= down;
        allowance -= down;
    }
}

/// Every member but the one at `skip`: the old ReplicaSets, when `skip` is the new one.
fn others(members: &mut [Member], skip: Option<usize>) -> impl Iterator<Item = &mut Member> {
    members
        .iter_mut()
        .enumerate()
        .filter(move |(i, _)| Some(*i) != skip)
        .map(|(_, m)| m)
}

/// Decides what to do for `d`, given the ReplicaSets it controls, whether a pod of an
/// old one still runs (consulted by `Recreate` only), at time `now`.
pub(super) fn reconcile(
    d: &Deployment,
    owned: &[ReplicaSet],
    old_pods_running: bool,
    now: Timestamp,
) -> Result<Plan, ControllerError> {
    let malformed = |reason: &str| ControllerError::malformed(d, reason);
    let spec = d.spec.as_ref().ok_or_else(|| malformed("no spec"))?;
    let Some(name) = d.metadata.name.as_deref() else {
        return Err(malformed("no name"));
    };
    let desired = spec.replicas.unwrap_or(1).max(0);
    let paused = spec.paused == Some(true);
    let rolling = !is_recreate(d);
    let (surge, max_unavailable) = surge_and_unavailable(d);
    let shape = Shape {
        desired,
        surge,
        max_unavailable,
    };
    let current = d.status.clone().unwrap_or_default();

    // Oldest first, so that of two equal templates the older ReplicaSet is "the new one".
    let mut sets: Vec<&ReplicaSet> = owned.iter().collect();
    sets.retain(|rs| !terminating(&rs.metadata));
    sets.sort_by_key(|rs| (rs.metadata.creation_timestamp.clone(), rs.name_any()));
    let new_index = sets.iter().position(|rs| has_template(rs, &spec.template));
    // The others, still oldest first: what a rollout scales down and the history limit prunes.
    let mut old_sets = sets.clone();
    let new_set = new_index.map(|i| old_sets.remove(i));
    let next_revision = old_sets.iter().map(|rs| revision(rs)).max().unwrap_or(0) + 1;

    let mut plan = Plan::default();
    // Annotations (and minReadySeconds) the existing new ReplicaSet needs, whatever its size.
    let mut new_annotations = BTreeMap::new();
    let mut new_min_ready = None;
    if let Some(rs) = new_set {
        for (k, v) in copied_annotations(d) {
            if annotation(&rs.metadata, &k) != Some(v.as_str()) {
                new_annotations.insert(k, v);
            }
        }
        let old_revision = revision(rs);
        if old_revision < next_revision
            && !crate::failpoints::on!("deployment::no-renumbering-on-undo")
        {
            new_annotations.insert(REVISION.to_owned(), next_revision.to_string());
            if old_revision > 0 {
                let history = match annotation(&rs.metadata, REVISION_HISTORY) {
                    Some(h) if !h.is_empty() => format!("{h},{old_revision}"),
                    _ => old_revision.to_string(),
                };
                new_annotations.insert(REVISION_HISTORY.to_owned(), history);
            }
        }
        let revision_now = old_revision.max(next_revision).to_string();
        if annotation(&d.metadata, REVISION) != Some(revision_now.as_str()) {
            plan.revision = Some(revision_now);
        }
        let wanted = spec.min_ready_seconds.unwrap_or(0);
        let min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
        new_min_ready = (min_ready.unwrap_or(0) != wanted).then_some(wanted);
    }

    let mut members: Vec<Member> = sets.iter().map(|rs| Member::of(rs)).collect();
    let scaling_event = members
        .iter()
        .any(|m| m.size > 0 && m.desired_mark.is_some_and(|n| n != desired));
    let rollout = !paused && !scaling_event;
    // A Recreate waiting for old pods to go: their going changes no ReplicaSet or
    // Deployment (the ReplicaSet stops counting a pod as soon as it terminates), so nothing
    // would wake this controller when the last one is gone; it looks again soon.
    let mut recreate_waiting = false;
    if !rollout {
        let status_replicas = current.replicas.unwrap_or(0);
        scale(&mut members, new_index, shape, status_replicas, rolling);
    } else if rolling {
        let created = new_index.is_none();
        if created {
            let total: i32 = members.iter().map(|m| m.size).sum();
            members.push(Member::to_create(surged_size(0, total, shape), shape));
        }
        let new = new_index.unwrap_or(members.len() - 1);
        roll(&mut members, new, created, shape);
    } else {
        // Recreate: every old pod goes first; the new ReplicaSet starts once none runs.
        let mut scaled_down = false;
        for m in others(&mut members, new_index).filter(|m| m.size > 0) {
            m.size = 0;
            scaled_down = true;
        }
        let old_still_there = old_sets
            .iter()
            .any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0));
        recreate_waiting = (scaled_down || old_still_there || old_pods_running)
            && !crate::failpoints::on!("deployment::recreate-without-waiting");
        if !recreate_waiting {
            match new_index {
                Some(n) => members[n].size = desired,
                None => members.push(Member::to_create(desired, shape)),
            }
        }
    }

    // Carry the sizes out: a new ReplicaSet to create, and updates to existing ones.
    for (i, m) in members.iter().enumerate() {
        let Some(was) = m.was else {
            let hash = template_hash(&spec.template, current.collision_count);
            let rs = new_replicaset(d, &hash, next_revision, m.size, surge);
            plan.create = Some(rs.ok_or_else(|| malformed("no name or uid"))?);
            plan.revision = Some(next_revision.to_string());
            continue;
        };
        let is_new = Some(i) == new_index;
        let mut annotations = if is_new {
            new_annotations.clone()
        } else {
            BTreeMap::new()
        };
        let scale = (was != m.size).then_some((was, m.size));
        let marks_stale = m.desired_mark != Some(desired) || m.max_mark != Some(desired + surge);
        if (scale.is_some() || m.stamped) && marks_stale {
            annotations.extend(scale_annotations(desired, surge));
        }
        let min_ready_seconds = new_min_ready.filter(|_| is_new);
        if scale.is_some() || !annotations.is_empty() || min_ready_seconds.is_some() {
            plan.update.push(Update {
                name: m.name.clone(),
                scale,
                annotations,
                min_ready_seconds,
            });
        }
    }
    let new_set = plan.create.as_ref().or(new_set);
    let new_name = new_set.and_then(|rs| rs.metadata.name.clone());

    // Revision history: the oldest empty ReplicaSets beyond the limit go.
    if !scaling_event {
        let limit = if crate::failpoints::on!("deployment::keep-every-revision") {
            usize::MAX
        } else {
            usize::try_from(spec.revision_history_limit.unwrap_or(10)).unwrap_or(0)
        };
        let mut cleanable = old_sets;
        cleanable.retain(|rs| {
            replicas_of(rs) == 0 && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
        });
        cleanable.sort_by_key(|rs| revision(rs));
        let excess = cleanable.len().saturating_sub(limit);
        plan.delete = cleanable[..excess].iter().map(|rs| rs.name_any()).collect();
    }

    // Status: counts summed over the ReplicaSets, sizes as they will be after this pass.
    let total: i32 = members.iter().map(|m| m.size).sum();
    let (mut replicas, mut updated, mut ready, mut available) = (0, 0, 0, 0);
    for rs in &sets {
        let s = rs.status.clone().unwrap_or_default();
        replicas += s.replicas;
        ready += s.ready_replicas.unwrap_or(0);
        available += s.available_replicas.unwrap_or(0);
        if rs.metadata.name == new_name {
            updated = s.replicas;
        }
    }
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        collision_count: current.collision_count,
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        ..DeploymentStatus::default()
    };

    let mut conditions = Conditions {
        list: current.conditions.clone().unwrap_or_default(),
        at: Time(now),
    };
    if available >= desired - max_unavailable {
        let message = "Deployment has minimum availability.";
        conditions.set("Available", "True", reason::MIN_AVAILABLE, message);
    } else {
        let message = "Deployment does not have minimum availability.";
        conditions.set("Available", "False", reason::MIN_UNAVAILABLE, message);
    }
    let deadline = spec
        .progress_deadline_seconds
        .filter(|s| *s != i32::MAX)
        .map(i64::from);
    // With a deadline, pausing a rollout, or resuming it, leaves its progress Unknown.
    let pause_change = match (paused, conditions.progressing_reason()) {
        (true, Some(reason::PAUSED | reason::TIMED_OUT)) => None,
        (true, _) => Some((reason::PAUSED, "Deployment is paused")),
        (false, Some(reason::PAUSED)) => Some((reason::RESUMED, "Deployment is resumed")),
        (false, _) => None,
    };
    if let (Some(_), Some((why, message))) = (deadline, pause_change) {
        conditions.set("Progressing", "Unknown", why, message);
    }
    if rollout {
        progress(
            &mut conditions,
            Progress {
                deployment: name,
                new_set: new_name.as_deref(),
                created: plan.create.is_some(),
                deadline,
                before: &current,
                after: &status,
                desired,
                now,
            },
            &mut plan.requeue_after,
        );
    }
    if recreate_waiting {
        let after = plan.requeue_after.unwrap_or(RECREATE_POLL);
        plan.requeue_after = Some(after.min(RECREATE_POLL));
    }
    status.conditions = (!conditions.list.is_empty()).then_some(conditions.list);
    plan.status = (d.status.as_ref() != Some(&status)).then_some(status);
    Ok(plan)
}

/// What a rollout pass knows for estimating progress.
struct Progress<'a> {
    deployment: &'a str,
    new_set: Option<&'a str>,
    created: bool,
    deadline: Option<i64>,
    before: &'a DeploymentStatus,
    after: &'a DeploymentStatus,
    desired: i32,
    now: Timestamp,
}

/// The `Progressing` condition after a rollout pass, as Kubernetes estimates it: a new
/// ReplicaSet was created or found; the rollout completed; it moved (more updated, fewer
/// old, more ready or available replicas: the update time is refreshed); or it has not
/// moved for `progressDeadlineSeconds` and has timed out. A completed rollout that is
/// resynced is left alone, and never times out. Sets `requeue_after` to look again when
/// the deadline would pass.
fn progress(conditions: &mut Conditions, p: Progress<'_>, requeue_after: &mut Option<Duration>) {
    let Some(deadline) = p.deadline else {
        return;
    };
    let subject = p.new_set.map_or_else(
        || format!("Deployment {:?}", p.deployment),
        |n| format!("ReplicaSet {n:?}"),
    );
    match p.new_set {
        Some(n) if p.created => {
            let message = format!("Created new replica set {n:?}");
            conditions.replace("Progressing", "True", reason::NEW_RS_CREATED, &message);
        }
        Some(n) if find(&conditions.list, "Progressing").is_none() => {
            let message = format!("Found new replica set {n:?}");
            conditions.set("Progressing", "True", reason::FOUND_NEW_RS, &message);
        }
        _ => {}
    }
    let n = |v: Option<i32>| v.unwrap_or(0);
    let settled = n(p.after.replicas) == n(p.after.updated_replicas)
        && conditions.progressing_reason() == Some(reason::NEW_RS_AVAILABLE);
    if settled {
        return;
    }
    let complete = n(p.after.updated_replicas) == p.desired
        && n(p.after.replicas) == p.desired
        && n(p.after.available_replicas) == p.desired
        && !p.created;
    if complete {
        let message = format!("{subject} has successfully progressed.");
        conditions.set("Progressing", "True", reason::NEW_RS_AVAILABLE, &message);
    } else if progressed(p.before, p.after) {
        let message = format!("{subject} is progressing.");
        conditions.replace("Progressing", "True", reason::RS_UPDATED, &message);
        *requeue_after = Some(Duration::from_secs(u64::try_from(deadline).unwrap_or(0)));
    } else if let Some(cond) = find(&conditions.list, "Progressing")
        && !matches!(
            cond.reason.as_deref(),
            Some(reason::NEW_RS_AVAILABLE | reason::TIMED_OUT)
        )
    {
        let since = cond.last_update_time.as_ref().map_or(p.now, |t| t.0);
        let left = SignedDuration::from_secs(deadline) - p.now.duration_since(since);
        if left.is_positive() || crate::failpoints::on!("deployment::never-time-out") {
            *requeue_after = Duration::try_from(left).ok();
        } else {
            let message = format!("{subject} has timed out progressing.");
            conditions.set("Progressing", "False", reason::TIMED_OUT, &message);
        }
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
    let meta = template.metadata.get_or_insert_default();
    let labels = meta.labels.get_or_insert_default();
    labels.insert(HASH_LABEL.to_owned(), hash.to_owned());
    let labels = labels.clone();
    let mut selector = spec.selector.clone();
    let match_labels = selector.match_labels.get_or_insert_default();
    match_labels.insert(HASH_LABEL.to_owned(), hash.to_owned());
    let mut annotations = copied_annotations(d);
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

/// A Deployment's conditions as one pass sets them, every change stamped `at`.
struct Conditions {
    list: Vec<DeploymentCondition>,
    at: Time,
}

impl Conditions {
    /// Kubernetes' `SetDeploymentCondition`: nothing changes when status and reason are the
    /// same; otherwise as [`replace`](Self::replace).
    fn set(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        let old = find(&self.list, type_);
        if !old.is_some_and(|c| c.status == status && c.reason.as_deref() == Some(reason)) {
            self.replace(type_, status, reason, message);
        }
    }

    /// Puts a condition in place of the one of its type, its update time refreshed even
    /// when nothing else changes (as progress refreshes `Progressing`), its transition
    /// time kept when its status stays.
    fn replace(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        let mut new = condition(type_, status, reason, message, &self.at);
        if let Some(old) = find(&self.list, type_)
            && old.status == status
        {
            new.last_transition_time = old.last_transition_time.clone();
        }
        self.list.retain(|c| c.type_ != type_);
        self.list.push(new);
    }

    /// The reason of the `Progressing` condition.
    fn progressing_reason(&self) -> Option<&str> {
        find(&self.list, "Progressing")?.reason.as_deref()
    }
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
    let controller = super::owning::<Deployment, ReplicaSet>(&client, None);
    let recorder = Recorder::shared(client, "deployment-controller");
    super::drive("deployment", controller, recorder, apply, shutdown).await;
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
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let uid = d.metadata.uid.as_deref();
    let action = format!("list the ReplicaSets of {what}");
    let listed = sets.list(&ListParams::default()).await;
    let mut owned = listed.map_err(ControllerError::api(action))?.items;
    owned.retain(|rs| uid.is_some() && controller_uid(&rs.metadata) == uid);
    let old_pods_running =
        is_recreate(&d) && old_pods_running(&client, &namespace, &d, &owned).await?;
    let plan = reconcile(&d, &owned, old_pods_running, Timestamp::now())?;

    if let Some(rs) = &plan.create {
        let rs_name = rs.name_any();
        let created = sets.create(&PostParams::default(), rs).await;
        if let Err(kube::Error::Api(s)) = &created
            && s.is_already_exists()
        {
            // Someone else's ReplicaSet, or ours with another template: the hash
            // collides. A new collision count gives a new hash next time.
            let old = d.status.as_ref();
            let mut collided = old.cloned().unwrap_or_default();
            let count = collided.collision_count.unwrap_or(0).saturating_add(1);
            collided.collision_count = Some(count);
            tracing::warn!(replicaset = %rs_name, count, "pod-template-hash collision");
            let action = || format!("record a hash collision of {what}");
            write_status(deployments.clone(), &name, old, &collided, action).await?;
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        let action = format!("create ReplicaSet {rs_name} for {what}");
        created.map_err(ControllerError::api(action))?;
        let to = replicas_of(rs);
        tracing::info!(replicaset = %rs_name, replicas = to, "created new ReplicaSet");
        record_scaling(&ctx, &d, &rs_name, 0, to).await;
    }

    for update in &plan.update {
        let mut patch = json!({"metadata": {"annotations": update.annotations}});
        if let Some((_, to)) = update.scale {
            patch["spec"]["replicas"] = json!(to);
        }
        if let Some(seconds) = update.min_ready_seconds {
            patch["spec"]["minReadySeconds"] = json!(seconds);
        }
        let action = format!("update ReplicaSet {} of {what}", update.name);
        sets.patch(&update.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(ControllerError::api(action))?;
        if let Some((from, to)) = update.scale {
            tracing::info!(replicaset = %update.name, from, to, "scaled ReplicaSet");
            record_scaling(&ctx, &d, &update.name, from, to).await;
        }
    }

    for rs_name in &plan.delete {
        let uid = owned
            .iter()
            .find(|rs| rs.metadata.name.as_deref() == Some(rs_name))
            .and_then(|rs| rs.metadata.uid.clone());
        let params = DeleteParams::background().preconditions(Preconditions {
            uid,
            resource_version: None,
        });
        let action = || format!("delete old ReplicaSet {rs_name} of {what}");
        if delete_if_present(&sets, rs_name, &params, action).await? {
            tracing::info!(replicaset = %rs_name, "deleted an old ReplicaSet beyond the limit");
        }
    }

    if let Some(revision) = &plan.revision {
        let patch = Patch::Merge(json!({"metadata": {"annotations": {REVISION: revision}}}));
        let action = format!("annotate the revision of {what}");
        let params = PatchParams::default();
        let patched = deployments.patch(&name, &params, &patch).await;
        patched.map_err(ControllerError::api(action))?;
    }
    if let Some(status) = &plan.status {
        let action = || format!("update the status of {what}");
        write_status(deployments, &name, d.status.as_ref(), status, action).await?;
    }
    Ok(Action::requeue(plan.requeue_after.unwrap_or(RESYNC)))
}

/// Records the `ScalingReplicaSet` Event of ReplicaSet `rs` going from `from` to `to`
/// replicas: "up" unless it shrinks, so a new ReplicaSet of 0 is "scaled up from 0 to 0".
async fn record_scaling(ctx: &Recorder, d: &Deployment, rs: &str, from: i32, to: i32) {
    let direction = if to >= from { "up" } else { "down" };
    let message = format!("Scaled {direction} replica set {rs} from {from} to {to}");
    ctx.normal(d, "ScalingReplicaSet", message).await;
}

/// Whether a pod of one of `d`'s old ReplicaSets (any but the one with `d`'s template)
/// still runs, or may (phase Unknown, or terminating): `Recreate` waits for none to.
async fn old_pods_running(
    client: &Client,
    namespace: &str,
    d: &Deployment,
    owned: &[ReplicaSet],
) -> Result<bool, ControllerError> {
    let template = d.spec.as_ref().map(|s| &s.template);
    let old: Vec<&str> = owned
        .iter()
        .filter(|rs| !template.is_some_and(|t| has_template(rs, t)))
        .filter_map(|rs| rs.metadata.uid.as_deref())
        .collect();
    if old.is_empty() {
        return Ok(false);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let action = format!("list the pods of {}", describe(d));
    let list = pods.list(&ListParams::default()).await;
    let list = list.map_err(ControllerError::api(action))?;
    Ok(list.items.iter().any(|pod| {
        controller_uid(&pod.metadata).is_some_and(|uid| old.contains(&uid)) && !is_terminated(pod)
    }))
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
        let mut rs = reconcile(d, &[], false, t(at))
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
        let plan = reconcile(&d, &[], false, t(0)).expect("plan");
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
    fn a_new_template_gets_the_next_revision_and_starts_within_the_surge() {
        let v1 = deployment(3, "probe:v1");
        let old = with_revision(created(&v1, 0, 3), 1);
        let v2 = deployment(3, "probe:v2");
        let plan = reconcile(&v2, std::slice::from_ref(&old), false, t(10)).expect("plan");
        let new = plan.create.expect("a new ReplicaSet");
        assert_eq!(annotation(&new.metadata, REVISION), Some("2"));
        assert_ne!(new.metadata.name, old.metadata.name);
        assert_eq!(
            new.spec.as_ref().and_then(|s| s.replicas),
            Some(1),
            "3 replicas at 25% surge: one more pod than 3"
        );
        assert!(
            plan.update.is_empty(),
            "maxUnavailable 0: no old pod goes before a new one is available"
        );
        assert_eq!(plan.revision.as_deref(), Some("2"));
    }

    #[test]
    fn an_existing_set_is_scaled_not_recreated() {
        let d = deployment(5, "probe:v1");
        let rs = with_revision(created(&deployment(3, "probe:v1"), 0, 3), 1);
        let plan = reconcile(&d, &[rs], false, t(10)).expect("plan");
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
        let plan = reconcile(&back, &[v1.clone(), v2.clone()], false, t(20)).expect("plan");
        assert!(plan.create.is_none(), "the v1 ReplicaSet is reused");
        let for_v1 = plan
            .update
            .iter()
            .find(|u| u.name == v1.name_any())
            .expect("v1 updated");
        assert_eq!(for_v1.scale, Some((0, 1)), "it grows within the surge");
        assert_eq!(
            for_v1.annotations.get(REVISION).map(String::as_str),
            Some("3")
        );
        assert_eq!(
            for_v1.annotations.get(REVISION_HISTORY).map(String::as_str),
            Some("1")
        );
        assert!(
            plan.update.iter().all(|u| u.name != v2.name_any()),
            "v2 shrinks only once a v1 pod is available"
        );
        assert_eq!(plan.revision.as_deref(), Some("3"));
    }

    #[test]
    fn a_paused_deployment_touches_no_replicaset() {
        let mut d = deployment(3, "probe:v2");
        if let Some(spec) = d.spec.as_mut() {
            spec.paused = Some(true);
        }
        let old = with_revision(created(&deployment(3, "probe:v1"), 0, 3), 1);
        let plan = reconcile(&d, &[old], false, t(10)).expect("plan");
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
        let plan = reconcile(&d, &sets, false, t(10)).expect("plan");
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
        let plan = reconcile(&before, &[old, new], false, t(20)).expect("plan");
        assert!(
            plan.update.is_empty(),
            "2 of 4 new pods unavailable, 1 allowed: the old pod stays"
        );
        let status = plan.status.expect("status");
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.replicas, Some(5));
        assert_eq!(status.updated_replicas, Some(4));
        assert_eq!(status.ready_replicas, Some(4));
        assert_eq!(status.available_replicas, Some(3));
        assert_eq!(
            status.unavailable_replicas,
            Some(2),
            "5 asked for, 3 available"
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
        let plan = reconcile(&d, std::slice::from_ref(&rs), false, t(30)).expect("plan");
        assert!(plan.create.is_none() && plan.update.is_empty() && plan.revision.is_none());
        let status = plan.status.expect("status");
        assert_eq!(
            progressing(&status),
            ("True".into(), reason::NEW_RS_AVAILABLE.into())
        );
        assert_eq!(status.unavailable_replicas, Some(0));
        d.status = Some(status);
        let again = reconcile(&d, &[rs], false, t(90)).expect("plan");
        assert_eq!(again, Plan::default(), "nothing left to do or to report");
    }

    #[test]
    fn no_progress_for_the_deadline_times_out() {
        let mut d = deployment(3, "probe:v1");
        let rs = with_revision(created(&d, 0, 1), 1);
        let first = reconcile(&d, std::slice::from_ref(&rs), false, t(0)).expect("plan");
        d.status = first.status;
        let waiting = reconcile(&d, std::slice::from_ref(&rs), false, t(100)).expect("plan");
        assert_eq!(waiting.status, None);
        assert_eq!(waiting.requeue_after, Some(Duration::from_secs(500)));
        let late = reconcile(&d, &[rs], false, t(601)).expect("plan");
        let status = late.status.expect("status");
        assert_eq!(
            progressing(&status),
            ("False".into(), reason::TIMED_OUT.into())
        );
    }

    /// A Deployment and its ReplicaSets, driven pass after pass the way the apiserver and
    /// the ReplicaSet controller carry the plans out. Pods start at once when [`settle`] is
    /// called; those of an image with `broken` in its name never become available.
    struct Sim {
        d: Deployment,
        sets: Vec<ReplicaSet>,
        clock: i64,
    }

    impl Sim {
        fn new(d: Deployment) -> Sim {
            Sim {
                d,
                sets: Vec::new(),
                clock: 0,
            }
        }

        /// A Sim whose first rollout has completed.
        fn settled(d: Deployment) -> Sim {
            let mut sim = Sim::new(d);
            sim.run(|_| {});
            sim
        }

        fn image(rs: &ReplicaSet) -> String {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.containers[0].image.clone())
                .unwrap_or_default()
        }

        /// One controller pass, carried out.
        fn pass(&mut self) -> Plan {
            self.clock += 1;
            let plan = reconcile(&self.d, &self.sets, false, t(self.clock)).expect("plan");
            if let Some(rs) = &plan.create {
                let mut rs = rs.clone();
                rs.metadata.uid = Some(format!("rs-uid-{}", self.clock));
                rs.metadata.creation_timestamp = Some(Time(t(self.clock)));
                rs.status = Some(ReplicaSetStatus::default());
                self.sets.push(rs);
            }
            for update in &plan.update {
                let rs = self
                    .sets
                    .iter_mut()
                    .find(|rs| rs.name_any() == update.name)
                    .expect("an existing set");
                if let Some((_, to)) = update.scale {
                    rs.spec.get_or_insert_default().replicas = Some(to);
                }
                rs.metadata
                    .annotations
                    .get_or_insert_default()
                    .extend(update.annotations.clone());
            }
            self.sets.retain(|rs| !plan.delete.contains(&rs.name_any()));
            if let Some(revision) = &plan.revision {
                self.d
                    .metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(REVISION.into(), revision.clone());
            }
            if let Some(status) = &plan.status {
                self.d.status = Some(status.clone());
            }
            plan
        }

        /// The pods catch up with every ReplicaSet's size.
        fn settle(&mut self) {
            for rs in &mut self.sets {
                let n = replicas_of(rs);
                let up = if Sim::image(rs).contains("broken") {
                    0
                } else {
                    n
                };
                rs.status = Some(ReplicaSetStatus {
                    replicas: n,
                    ready_replicas: Some(up),
                    available_replicas: Some(up),
                    ..ReplicaSetStatus::default()
                });
            }
        }

        /// Passes (pods settling after each) until a pass changes nothing; after each,
        /// `check` sees the sets. Returns the number of passes.
        fn run(&mut self, mut check: impl FnMut(&[ReplicaSet])) -> usize {
            for passes in 1..=100 {
                let plan = self.pass();
                self.settle();
                check(&self.sets);
                if plan.create.is_none() && plan.update.is_empty() && plan.delete.is_empty() {
                    return passes;
                }
            }
            panic!("no steady state after 100 passes: {:?}", self.sizes());
        }

        /// `(image, spec.replicas)` of every set, oldest first.
        fn sizes(&self) -> Vec<(String, i32)> {
            self.sets
                .iter()
                .map(|rs| (Sim::image(rs), replicas_of(rs)))
                .collect()
        }

        fn set_image(&mut self, image: &str) {
            let spec = self.d.spec.as_mut().expect("spec");
            spec.template = template(image);
            self.d.metadata.generation = self.d.metadata.generation.map(|g| g + 1);
        }

        fn set_replicas(&mut self, replicas: i32) {
            self.d.spec.as_mut().expect("spec").replicas = Some(replicas);
            self.d.metadata.generation = self.d.metadata.generation.map(|g| g + 1);
        }
    }

    fn available_of(sets: &[ReplicaSet]) -> i32 {
        sets.iter()
            .filter_map(|rs| rs.status.as_ref()?.available_replicas)
            .sum()
    }

    fn recreate(mut d: Deployment) -> Deployment {
        d.spec.as_mut().expect("spec").strategy =
            Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            });
        d
    }

    fn with_strategy(
        mut d: Deployment,
        surge: IntOrString,
        unavailable: IntOrString,
    ) -> Deployment {
        d.spec.as_mut().expect("spec").strategy =
            Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(k8s_openapi::api::apps::v1::RollingUpdateDeployment {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            });
        d
    }

    #[test]
    fn a_rolling_update_stays_within_surge_and_availability_and_completes() {
        // Defaults for 10 replicas: maxSurge 25% → 3, maxUnavailable 25% → 2.
        let mut sim = Sim::settled(deployment(10, "probe:v1"));
        assert_eq!(sim.sizes(), vec![("probe:v1".into(), 10)]);
        sim.set_image("probe:v2");
        let mut waves = 0;
        let passes = sim.run(|sets| {
            let total: i32 = sets.iter().map(replicas_of).sum();
            assert!(total <= 13, "more than replicas + maxSurge: {total}");
            let available = available_of(sets);
            assert!(
                available >= 8,
                "fewer than replicas − maxUnavailable: {available}"
            );
            waves += 1;
        });
        assert!(passes > 2, "a rolling update goes in steps, not at once");
        assert!(waves >= 2);
        assert_eq!(
            sim.sizes(),
            vec![("probe:v1".into(), 0), ("probe:v2".into(), 10)]
        );
        let status = sim.d.status.clone().expect("status");
        assert_eq!(status.updated_replicas, Some(10));
        assert_eq!(status.available_replicas, Some(10));
        assert_eq!(
            progressing(&status),
            ("True".into(), reason::NEW_RS_AVAILABLE.into())
        );
    }

    #[test]
    fn a_set_still_reporting_pods_it_is_deleting_does_not_count_them() {
        // 10 replicas, defaults (surge 3, unavailable 2): old scaled from 8 to 6 a moment
        // ago still reports 8 available; the new set has 5 of 7 available.
        let v1 = deployment(10, "probe:v1");
        let mut old = with_revision(created(&v1, 0, 8), 1);
        old.spec.get_or_insert_default().replicas = Some(6);
        let v2 = deployment(10, "probe:v2");
        let mut new = with_revision(created(&v2, 5, 5), 2);
        new.spec.get_or_insert_default().replicas = Some(7);
        if let Some(status) = new.status.as_mut() {
            status.replicas = 7;
        }
        let plan = reconcile(&v2, &[old.clone(), new], false, t(10)).expect("plan");
        let for_old = plan
            .update
            .iter()
            .find(|u| u.name == old.name_any())
            .expect("old scaled down");
        assert_eq!(
            for_old.scale,
            Some((6, 3)),
            "6 + 5 available, 8 needed: 3 may go, not 5"
        );
    }

    #[test]
    fn with_max_unavailable_zero_every_old_pod_waits_for_an_available_new_one() {
        let d = with_strategy(
            deployment(3, "probe:v1"),
            IntOrString::Int(1),
            IntOrString::Int(0),
        );
        let mut sim = Sim::settled(d);
        sim.set_image("probe:v2");
        sim.run(|sets| assert!(available_of(sets) >= 3));
        assert_eq!(
            sim.sizes(),
            vec![("probe:v1".into(), 0), ("probe:v2".into(), 3)]
        );
    }

    #[test]
    fn a_broken_update_stalls_with_the_old_pods_serving() {
        let d = with_strategy(
            deployment(3, "probe:v1"),
            IntOrString::Int(1),
            IntOrString::Int(0),
        );
        let mut sim = Sim::settled(d);
        sim.set_image("probe:broken");
        sim.run(|sets| assert!(available_of(sets) >= 3));
        assert_eq!(
            sim.sizes(),
            vec![("probe:v1".into(), 3), ("probe:broken".into(), 1)]
        );
        // Rolling back: the v1 set is the new one again and the broken one goes.
        sim.set_image("probe:v1");
        sim.run(|sets| assert!(available_of(sets) >= 3));
        assert_eq!(
            sim.sizes(),
            vec![("probe:v1".into(), 3), ("probe:broken".into(), 0)]
        );
        assert_eq!(annotation(&sim.d.metadata, REVISION), Some("3"));
    }

    /// Kubernetes' e2e test `testProportionalScalingDeployment` (test/e2e/apps/deployment.go):
    /// 10 replicas, maxSurge 3, maxUnavailable 2, an update to an image that never runs.
    /// The rollout stalls with the old set at 10 − 2 = 8 and the new at 13 − 8 = 5;
    /// scaled to 30, 33 pods are allowed and 20 are added in proportion:
    /// 8 × 33 / 13 = 20.3 → 20 and 5 × 33 / 13 = 12.7 → 13.
    #[test]
    fn scaling_mid_rollout_splits_the_replicas_in_proportion() {
        let d = with_strategy(
            deployment(10, "probe:v1"),
            IntOrString::Int(3),
            IntOrString::Int(2),
        );
        let mut sim = Sim::settled(d);
        sim.set_image("probe:broken");
        sim.run(|_| {});
        assert_eq!(
            sim.sizes(),
            vec![("probe:v1".into(), 8), ("probe:broken".into(), 5)]
        );
        sim.set_replicas(30);
        sim.run(|_| {});
        assert_eq!(
            sim.sizes(),
            vec![("probe:v1".into(), 20), ("probe:broken".into(), 13)]
        );
        for rs in &sim.sets {
            assert_eq!(annotation(&rs.metadata, DESIRED_REPLICAS), Some("30"));
            assert_eq!(annotation(&rs.metadata, MAX_REPLICAS), Some("33"));
        }
        // And back down, in proportion again, within 10 + 3.
        sim.set_replicas(10);
        sim.run(|_| {});
        let total: i32 = sim.sizes().iter().map(|(_, n)| n).sum();
        assert_eq!(total, 13);
    }

    #[test]
    fn recreate_removes_every_old_pod_before_starting_a_new_one() {
        let d = recreate(deployment(3, "probe:v1"));
        let mut sim = Sim::settled(d);
        sim.set_image("probe:v2");
        sim.run(|sets| {
            let serving: Vec<String> = sets
                .iter()
                .filter(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0))
                .map(Sim::image)
                .collect();
            assert!(serving.len() <= 1, "two versions at once: {serving:?}");
        });
        assert_eq!(
            sim.sizes(),
            vec![("probe:v1".into(), 0), ("probe:v2".into(), 3)]
        );
    }

    #[test]
    fn a_recreate_waits_while_an_old_pod_still_runs() {
        let d = recreate(deployment(3, "probe:v2"));
        let old = with_revision(scaled(created(&deployment(3, "probe:v1"), 0, 0), 0), 1);
        let waiting = reconcile(&d, std::slice::from_ref(&old), true, t(5)).expect("plan");
        assert!(waiting.create.is_none(), "an old pod is still terminating");
        assert_eq!(
            waiting.requeue_after,
            Some(RECREATE_POLL),
            "nothing else wakes it when the pod is gone"
        );
        let go = reconcile(&d, &[old], false, t(6)).expect("plan");
        assert_eq!(
            go.create.and_then(|rs| rs.spec.and_then(|s| s.replicas)),
            Some(3)
        );
    }

    #[test]
    fn a_paused_deployment_still_scales() {
        let mut sim = Sim::settled(deployment(3, "probe:v1"));
        sim.d.spec.as_mut().expect("spec").paused = Some(true);
        sim.set_image("probe:v2");
        sim.set_replicas(5);
        sim.run(|_| {});
        assert_eq!(
            sim.sizes(),
            vec![("probe:v1".into(), 5)],
            "scaled, not rolled"
        );
        sim.d.spec.as_mut().expect("spec").paused = Some(false);
        sim.run(|_| {});
        assert_eq!(
            sim.sizes(),
            vec![("probe:v1".into(), 0), ("probe:v2".into(), 5)]
        );
    }

    #[test]
    fn the_history_keeps_the_limit_of_old_sets() {
        let mut d = deployment(2, "probe:r1");
        d.spec.as_mut().expect("spec").revision_history_limit = Some(2);
        let mut sim = Sim::settled(d);
        for n in 2..=5 {
            sim.set_image(&format!("probe:r{n}"));
            sim.run(|_| {});
        }
        let revisions: Vec<i64> = sim.sets.iter().map(revision).collect();
        assert_eq!(
            revisions,
            vec![3, 4, 5],
            "the current set and the 2 before it"
        );
    }
}
