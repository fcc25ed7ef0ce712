//! # HorizontalPodAutoscalers: as many replicas as the load needs
//!
//! The seed asks a cluster to stay available at the business peak and to give resources
//! back at the trough. An `autoscaling/v2` HorizontalPodAutoscaler says how: keep the
//! replicas of a Deployment (or of anything with a `scale` subresource) between
//! `minReplicas` and `maxReplicas`, so that each pod's use of a resource stays near a
//! target — a share of what its containers request (`averageUtilization: 50`, of CPU) or
//! an amount (`averageValue: 200Mi`, of memory).
//!
//! A `Pods` metric scales on an amount per pod of something else than a resource — here
//! what the service proxies count of each pod's load, `connections_per_second` or
//! `connections_in_flight` (`averageValue: 5`).
//!
//! Every [`SYNC_PERIOD`] this controller reads the target's scale, its pods, and what they
//! use from `metrics.k8s.io` and `custom.metrics.k8s.io` (which the apiserver measures
//! through the node agents: no metrics-server, no adapter), and follows Kubernetes'
//! algorithm:
//!
//! * the **ratio** of use to target over the ready pods that have metrics gives the
//!   replicas, `ceil(pods × ratio)`; within 10 % of 1 ([`TOLERANCE`]) nothing changes;
//! * pods without metrics, and pods not yet ready (for CPU, which a start inflates),
//!   **damp** the change: when scaling up they count as using nothing, when scaling down a
//!   pod without metrics counts as using its whole request; a change that this turns
//!   around or brings within the tolerance is not made;
//! * of several metrics, the one asking for the **most** replicas wins;
//! * the recommendation is **stabilized**: a scale-down goes only as low as the highest
//!   recommendation of its window (`behavior.scaleDown.stabilizationWindowSeconds`, 300 s
//!   by default), a scale-up only as high as the lowest of its window (0 s), so a dip in
//!   the load does not remove pods that the next minute needs again;
//! * **policies** limit the rate (by default at most 4 pods or 100 % more per 15 s up,
//!   and 100 % per 15 s down), counting the changes already made in each policy's period;
//! * then `minReplicas` and `maxReplicas`.
//!
//! The status says what it saw and why it did what it did, as Kubernetes' does: the
//! current metrics, and the conditions `AbleToScale`, `ScalingActive` (false, saying why,
//! when a metric cannot be had — a container without a CPU request, say) and
//! `ScalingLimited`. A rescale is an Event (`SuccessfulRescale`).
//!
//! The recommendations and changes of the windows are kept in memory, as Kubernetes'
//! controller keeps them: a controller that restarts starts its windows afresh.
//!
//! Not built: `Object`, `External` and `ContainerResource` metrics (the condition
//! `ScalingActive` says so), and the CPU initialization period for pods just started.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler as Hpa, HorizontalPodAutoscalerCondition as Condition,
    HorizontalPodAutoscalerStatus as Status, MetricIdentifier, MetricSpec, MetricStatus,
    MetricValueStatus, PodsMetricStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{ControllerError, Recorder, identity, pod_phase, pod_ready, terminating};
use crate::api::quantity::{parse_cpu, parse_memory};

/// How often each autoscaler looks at its target (Kubernetes: 15 s,
/// `--horizontal-pod-autoscaler-sync-period`).
pub const SYNC_PERIOD: Duration = Duration::from_secs(5);

/// How far from the target the load may be before the replicas change.
pub const TOLERANCE: f64 = 0.1;

/// The resources a metric can name, in the order [`PodLoad`] keeps them.
const RESOURCES: [&str; 2] = ["cpu", "memory"];

/// What one pod uses and asks for: CPU in millicores, memory in bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct PodLoad {
    pub name: String,
    pub ready: bool,
    /// What it uses now; `None` while the metrics have no word of it.
    pub usage: Option<[u64; 2]>,
    /// What its containers request in all; `None` if one of them requests none.
    pub requests: [Option<u64>; 2],
    /// Its custom metrics that have a value, in thousandths (`1500` is 1.5).
    pub custom: HashMap<String, u64>,
}

/// A condition's status, reason and message.
type Said = (bool, &'static str, String);

/// The replicas one metric asks for when `current` replicas run `pods` — each (ready,
/// use, capacity), capacity being its request or the target amount — and each pod should
/// use `target` of its capacity; with the ratio of use to target over the ready pods with
/// metrics. `None` when no pod has metrics. (Only CPU sets unready pods aside: the others
/// count every pod as ready.)
fn replicas_for(
    current: i32,
    pods: &[(bool, Option<u64>, u64)],
    target: f64,
) -> Option<(i32, f64)> {
    let ratio_of = |loads: &mut dyn Iterator<Item = (u64, u64)>| {
        let sum = |(u, c), (used, capacity)| (u + used as f64, c + capacity as f64);
        let (used, capacity): (f64, f64) = loads.fold((0.0, 0.0), sum);
        (capacity > 0.0).then(|| used / (capacity * target))
    };
    let measured = pods
        .iter()
        .filter_map(|&(ready, used, c)| Some((used?, c)).filter(|_| ready));
    let ratio = ratio_of(&mut measured.clone())?;
    let missing = pods.iter().any(|(_, used, _)| used.is_none());
    let with_unready = ratio > 1.0 && pods.iter().any(|(ready, used, _)| !ready && used.is_some());
    let within = |ratio: f64| (ratio - 1.0).abs() <= TOLERANCE;
    if !with_unready && !missing {
        let desired = (ratio * measured.count() as f64).ceil() as i32;
        return Some((if within(ratio) { current } else { desired }, ratio));
    }
    // What is not known holds the change back: a pod without metrics uses nothing when
    // scaling up and its whole capacity when scaling down; an unready one, nothing.
    let filled = pods
        .iter()
        .filter_map(|&(ready, used, capacity)| match used {
            None if ratio < 1.0 => Some((capacity, capacity)),
            None => Some((0, capacity)),
            Some(_) if !ready => with_unready.then_some((0, capacity)),
            Some(used) => Some((used, capacity)),
        });
    let filled: Vec<(u64, u64)> = filled.collect();
    let new_ratio = ratio_of(&mut filled.iter().copied()).unwrap_or(1.0);
    let desired = (new_ratio * filled.len() as f64).ceil() as i32;
    let turned = (ratio < 1.0) != (new_ratio < 1.0) || (desired > current) != (new_ratio > 1.0);
    Some((
        if within(new_ratio) || turned {
            current
        } else {
            desired
        },
        ratio,
    ))
}

/// The replicas `metric` asks for and what it saw, or why it cannot tell.
fn metric_replicas(
    metric: &MetricSpec,
    current: i32,
    pods: &[PodLoad],
) -> Result<(i32, MetricStatus), String> {
    if let Some(spec) = metric.pods.as_ref().filter(|_| metric.type_ == "Pods") {
        return pods_metric_replicas(&spec.metric.name, &spec.target, current, pods);
    }
    let spec = metric
        .resource
        .as_ref()
        .filter(|_| metric.type_ == "Resource");
    let spec = spec.ok_or_else(|| format!("{} metrics are not supported", metric.type_))?;
    let (name, target) = (&spec.name, &spec.target);
    let index = RESOURCES
        .iter()
        .position(|r| r == name)
        .ok_or(format!("unknown resource {name}"))?;
    let capacity = |pod: &PodLoad| match (target.average_utilization, &target.average_value) {
        (Some(_), _) => {
            pod.requests[index].ok_or(format!("missing request for {name} in pod {}", pod.name))
        }
        (None, Some(amount)) => quantity(index, &amount.0),
        (None, None) => Err(format!(
            "the target for {name} has no averageUtilization or averageValue"
        )),
    };
    let loads = pods.iter().map(|p| {
        Ok((
            p.ready || index != 0,
            p.usage.map(|u| u[index]),
            capacity(p)?,
        ))
    });
    let loads = loads.collect::<Result<Vec<_>, String>>()?;
    let share = target
        .average_utilization
        .map(|percent| f64::from(percent) / 100.0);
    let replicas = replicas_for(current, &loads, share.unwrap_or(1.0));
    let (desired, ratio) = replicas.ok_or(format!("no metrics returned for the pods' {name}"))?;
    let used: Vec<u64> = loads
        .iter()
        .filter(|(ready, _, _)| *ready)
        .filter_map(|l| l.1)
        .collect();
    let average = used.iter().sum::<u64>() / (used.len().max(1) as u64);
    let current = MetricValueStatus {
        average_utilization: share.map(|share| (ratio * share * 100.0).round() as i32),
        average_value: Some(Quantity(match index {
            0 => format!("{average}m"),
            _ => format!("{}Ki", average / 1024),
        })),
        value: None,
    };
    let resource = Some(ResourceMetricStatus {
        name: name.clone(),
        current,
    });
    Ok((
        desired,
        MetricStatus {
            type_: "Resource".into(),
            resource,
            ..MetricStatus::default()
        },
    ))
}

/// The replicas a `Pods` metric `name` asks for, each pod to have `target` on average.
fn pods_metric_replicas(
    name: &str,
    target: &k8s_openapi::api::autoscaling::v2::MetricTarget,
    current: i32,
    pods: &[PodLoad],
) -> Result<(i32, MetricStatus), String> {
    let amount = target.average_value.as_ref();
    let amount = amount.ok_or(format!("the target for {name} has no averageValue"))?;
    let amount = quantity(0, &amount.0)?;
    let loads: Vec<_> = pods
        .iter()
        .map(|p| (true, p.custom.get(name).copied(), amount))
        .collect();
    let replicas = replicas_for(current, &loads, 1.0);
    let (desired, _) = replicas.ok_or(format!("no metrics returned for the pods' {name}"))?;
    let values: Vec<u64> = loads.iter().filter_map(|l| l.1).collect();
    let average = values.iter().sum::<u64>() / (values.len().max(1) as u64);
    let pods = Some(PodsMetricStatus {
        metric: MetricIdentifier {
            name: name.to_owned(),
            selector: None,
        },
        current: MetricValueStatus {
            average_value: Some(Quantity(format!("{average}m"))),
            ..MetricValueStatus::default()
        },
    });
    let status = MetricStatus {
        type_: "Pods".into(),
        pods,
        ..MetricStatus::default()
    };
    Ok((desired, status))
}

/// A quantity of resource `index`, in its unit (millicores, bytes).
fn quantity(index: usize, text: &str) -> Result<u64, String> {
    let parsed = if index == 0 {
        parse_cpu(text)
    } else {
        parse_memory(text)
    };
    parsed.map(|q| q.max(0) as u64).map_err(|e| e.to_string())
}

/// What an autoscaler remembers between passes, with their times: the recommendations of
/// its windows, and the changes it made (replicas added positive, removed negative).
#[derive(Debug, Default, Clone)]
pub(super) struct Memory {
    recommendations: Vec<(i32, Timestamp)>,
    changes: Vec<(i32, Timestamp)>,
    /// When the last pass ran, for which generation of the autoscaler.
    last_pass: Option<(Timestamp, Option<i64>)>,
}

impl Memory {
    /// How long to wait before a pass, if the last one, of the same generation, ran less
    /// than a [`SYNC_PERIOD`] ago: a pass's own status write must not start the next one.
    fn too_soon(&mut self, now: Timestamp, generation: Option<i64>) -> Option<Duration> {
        if let Some((at, seen)) = self.last_pass
            && seen == generation
        {
            let elapsed = Duration::try_from(now.duration_since(at)).unwrap_or_default();
            if elapsed < SYNC_PERIOD {
                return Some(SYNC_PERIOD - elapsed);
            }
        }
        self.last_pass = Some((now, generation));
        None
    }
}

/// The numbers of `list` since `seconds` before `now`.
fn since(list: &[(i32, Timestamp)], now: Timestamp, seconds: i64) -> impl Iterator<Item = i32> {
    let start = now - SignedDuration::from_secs(seconds);
    list.iter()
        .filter(move |(_, at)| *at > start)
        .map(|(n, _)| *n)
}

/// One direction's stabilization window, select policy and policies (type, value,
/// period), with Kubernetes' defaults for what the autoscaler leaves out.
fn rules(hpa: &Hpa, up: bool) -> (i64, String, Vec<(String, i32, i64)>) {
    let behavior = hpa
        .spec
        .as_ref()
        .and_then(|s| s.behavior.clone())
        .unwrap_or_default();
    let given = if up {
        behavior.scale_up
    } else {
        behavior.scale_down
    }
    .unwrap_or_default();
    let window = given
        .stabilization_window_seconds
        .map_or(if up { 0 } else { 300 }, i64::from);
    let policies = given.policies.map(|given| {
        given
            .into_iter()
            .map(|p| (p.type_, p.value, i64::from(p.period_seconds)))
            .collect()
    });
    let default = match up {
        true => vec![("Pods".into(), 4, 15), ("Percent".into(), 100, 15)],
        false => vec![("Percent".into(), 100, 15)],
    };
    (
        window,
        given.select_policy.unwrap_or("Max".into()),
        policies.unwrap_or(default),
    )
}

/// What one pass decides: the replicas, what the metrics are, and the conditions
/// `ScalingActive` and `ScalingLimited` that explain it.
#[derive(Debug, PartialEq)]
pub(super) struct Decision {
    pub desired: i32,
    pub metrics: Vec<MetricStatus>,
    pub active: Said,
    pub limited: Said,
}

/// The replicas `hpa` wants of a target whose scale asks for `current` and which runs
/// `pods`, at `now`; this pass's recommendation goes into `memory`.
pub(super) fn decide(
    hpa: &Hpa,
    current: i32,
    pods: &[PodLoad],
    memory: &mut Memory,
    now: Timestamp,
) -> Decision {
    let spec = hpa.spec.clone().unwrap_or_default();
    let (min, max) = (spec.min_replicas.unwrap_or(1), spec.max_replicas);
    let said = |status, reason, message: &str| (status, reason, message.to_owned());
    let too_many = said(
        true,
        "TooManyReplicas",
        "the desired replica count is more than the maximum replica count",
    );
    let too_few = said(
        true,
        "TooFewReplicas",
        "the desired replica count is less than the minimum replica count",
    );
    let mut decision = Decision {
        desired: current,
        metrics: Vec::new(),
        active: said(
            true,
            "ValidMetricFound",
            "the HPA was able to successfully calculate a replica count",
        ),
        limited: said(
            false,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        ),
    };
    if current == 0 && min != 0 {
        decision.active = said(
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        );
        return decision;
    }
    // A broken autoscaler that forgets its maximum, for the kit's mutants.
    let max = if crate::failpoints::on!("autoscaler::ignore-max") {
        i32::MAX
    } else {
        max
    };
    if current > max || current < min {
        decision.desired = current.clamp(min, max);
        decision.limited = if current > max { too_many } else { too_few };
        return decision;
    }
    let mut wanted = None;
    for metric in spec.metrics.iter().flatten() {
        match metric_replicas(metric, current, pods) {
            Ok((replicas, status)) => {
                decision.metrics.push(status);
                wanted = wanted.max(Some(replicas));
            }
            Err(why) => {
                let message = format!("the HPA was unable to compute the replica count: {why}");
                let reason = match metric.type_.as_str() {
                    "Pods" => "FailedGetPodsMetric",
                    _ => "FailedGetResourceMetric",
                };
                decision.active = (false, reason, message);
                return decision;
            }
        }
    }
    let Some(wanted) = wanted else {
        decision.active = said(false, "FailedGetResourceMetric", "the HPA has no metrics");
        return decision;
    };
    // Stabilized: up only as far as every recommendation of the up window allows, down
    // only as far as every one of the down window does.
    let ((up_window, ..), (down_window, ..)) = (rules(hpa, true), rules(hpa, false));
    let kept = up_window.max(down_window);
    memory
        .recommendations
        .retain(|(_, at)| *at > now - SignedDuration::from_secs(kept));
    let up_to = since(&memory.recommendations, now, up_window).fold(wanted, i32::min);
    let down_to = since(&memory.recommendations, now, down_window).fold(wanted, i32::max);
    memory.recommendations.push((wanted, now));
    let stable = current.max(up_to).min(down_to);
    // Then no faster than the policies allow, counting the changes of their periods.
    let up = stable > current;
    let (_, select, policies) = rules(hpa, up);
    let limits = policies.iter().map(|(kind, value, period)| {
        let made: i32 = since(&memory.changes, now, *period)
            .filter(|c| (*c > 0) == up)
            .sum();
        let (start, value) = (current - made, if up { *value } else { -value });
        match kind.as_str() {
            "Pods" => start + value,
            _ if up => (f64::from(start) * (1.0 + f64::from(value) / 100.0)).ceil() as i32,
            _ => (f64::from(start) * (1.0 + f64::from(value) / 100.0)) as i32,
        }
    });
    let limits: Vec<i32> = limits.collect();
    let (most, least) = (limits.iter().max().copied(), limits.iter().min().copied());
    let limit = match select.as_str() {
        "Disabled" => current,
        "Min" if up => least.unwrap_or(current),
        "Min" => most.unwrap_or(current),
        _ if up => most.unwrap_or(current),
        _ => least.unwrap_or(current),
    };
    let rate = |reason, way| {
        let message =
            format!("the desired replica count is {way} faster than the maximum scale rate");
        (true, reason, message)
    };
    // The bound that holds the change back, if one does: the rate, or the range.
    let (desired, limited) = if up {
        match stable {
            _ if limit < max && stable > limit => (limit, Some(rate("ScaleUpLimit", "increasing"))),
            _ if stable > max => (max, Some(too_many)),
            _ => (stable, None),
        }
    } else {
        match stable {
            _ if limit > min && stable < limit => {
                (limit, Some(rate("ScaleDownLimit", "decreasing")))
            }
            _ if stable < min => (min, Some(too_few)),
            _ => (stable, None),
        }
    };
    decision.desired = desired;
    if let Some(limited) = limited {
        decision.limited = limited;
    }
    decision
}

/// Condition `kind` as `said` at `now`, keeping the time of an `old` one that said the same.
fn condition(
    old: Option<&Status>,
    kind: &str,
    (status, reason, message): Said,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let old = old.and_then(|s| s.conditions.iter().flatten().find(|c| c.type_ == kind));
    let same = old
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone());
    let (type_, status, reason) = (kind.into(), status.into(), Some(reason.into()));
    let last_transition_time = Some(same.unwrap_or(Time(now)));
    Condition {
        type_,
        status,
        reason,
        message: Some(message),
        last_transition_time,
    }
}

/// Each autoscaler's [`Memory`], by uid.
type Memories = Mutex<HashMap<String, Memory>>;

/// Runs the autoscaler controller until shutdown: a pass for each autoscaler when it
/// changes, and every [`SYNC_PERIOD`].
pub(super) async fn run(client: Client, shutdown: watch::Receiver<bool>) {
    let controller = Controller::new(Api::<Hpa>::all(client.clone()), watcher::Config::default());
    let recorder = Recorder {
        client,
        component: "horizontal-pod-autoscaler",
    };
    let context = Arc::new((recorder, Memories::default()));
    super::drive("autoscaler", controller, context, pass, shutdown).await;
}

async fn pass(hpa: Arc<Hpa>, ctx: Arc<(Recorder, Memories)>) -> Result<Action, ControllerError> {
    let Some((namespace, uid, name)) = identity(hpa.as_ref())? else {
        return Ok(Action::await_change());
    };
    let ((recorder, memories), now, old) = (ctx.as_ref(), Timestamp::now(), hpa.status.as_ref());
    let client = &recorder.client;
    let wait = {
        let mut memories = memories.lock().unwrap_or_else(PoisonError::into_inner);
        // Those of autoscalers gone for longer than the longest window are forgotten.
        let forgotten = now - SignedDuration::from_hours(2);
        memories.retain(|_, m| m.last_pass.is_some_and(|(at, _)| at > forgotten));
        let memory = memories.entry(uid.clone()).or_default();
        memory.too_soon(now, hpa.metadata.generation)
    };
    if let Some(wait) = wait {
        return Ok(Action::requeue(wait));
    }
    let target = hpa
        .spec
        .as_ref()
        .map(|s| s.scale_target_ref.clone())
        .unwrap_or_default();
    let version = target.api_version.as_deref().unwrap_or("apps/v1");
    let scaled = target_api(client, &namespace, &target.kind, version);
    let scaled =
        scaled.ok_or_else(|| format!("{version} {} has no scale subresource", target.kind));
    let scale = match scaled {
        Ok(api) => api
            .get_scale(&target.name)
            .await
            .map(|scale| (api, scale))
            .map_err(|e| e.to_string()),
        Err(why) => Err(why),
    };
    let mut status = Status {
        observed_generation: hpa.metadata.generation,
        ..old.cloned().unwrap_or_default()
    };
    let able = match scale {
        Err(why) => {
            let message =
                format!("the HPA controller was unable to get the target's current scale: {why}");
            recorder
                .record(hpa.as_ref(), "Warning", "FailedGetScale", message.clone())
                .await;
            (false, "FailedGetScale", message)
        }
        Ok((api, scale)) => {
            let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let selector = scale
                .status
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            let metrics = hpa.spec.as_ref().and_then(|s| s.metrics.as_ref());
            let custom: Vec<String> = (metrics.into_iter().flatten())
                .filter_map(|m| Some(m.pods.as_ref()?.metric.name.clone()))
                .collect();
            let pods = loads(client, &namespace, &selector, &custom).await?;
            let decision = {
                let mut memories = memories.lock().unwrap_or_else(PoisonError::into_inner);
                decide(
                    &hpa,
                    current,
                    &pods,
                    memories.entry(uid.clone()).or_default(),
                    now,
                )
            };
            let mut able = (
                true,
                "ReadyForNewScale",
                "recommended size matches current size".into(),
            );
            if decision.desired != current {
                let patch = Patch::Merge(json!({"spec": {"replicas": decision.desired}}));
                able = match api
                    .patch_scale(&target.name, &PatchParams::default(), &patch)
                    .await
                {
                    Ok(_) => {
                        let new = decision.desired;
                        let message = format!(
                            "New size: {new}; reason: {}",
                            rescale_reason(&decision, current)
                        );
                        recorder
                            .normal(hpa.as_ref(), "SuccessfulRescale", message)
                            .await;
                        status.last_scale_time = Some(Time(now));
                        let mut memories = memories.lock().unwrap_or_else(PoisonError::into_inner);
                        memories
                            .entry(uid)
                            .or_default()
                            .changes
                            .push((new - current, now));
                        (
                            true,
                            "SucceededRescale",
                            format!(
                                "the HPA controller was able to update the target scale to {new}"
                            ),
                        )
                    }
                    Err(e) => (
                        false,
                        "FailedUpdateScale",
                        format!("the HPA controller was unable to update the target scale: {e}"),
                    ),
                };
            } else if !decision.active.0 {
                recorder
                    .record(
                        hpa.as_ref(),
                        "Warning",
                        decision.active.1,
                        decision.active.2.clone(),
                    )
                    .await;
            }
            status.current_replicas = Some(scale.status.as_ref().map_or(0, |s| s.replicas));
            status.desired_replicas = decision.desired;
            status.current_metrics = Some(decision.metrics).filter(|m| !m.is_empty());
            let active = condition(old, "ScalingActive", decision.active, now);
            let limited = condition(old, "ScalingLimited", decision.limited, now);
            status.conditions = Some(vec![active, limited]);
            able
        }
    };
    let able = condition(old, "AbleToScale", able, now);
    status.conditions.get_or_insert_default().insert(0, able);
    let hpas: Api<Hpa> = Api::namespaced(client.clone(), &namespace);
    let action = || format!("update the status of HorizontalPodAutoscaler {namespace}/{name}");
    super::write_status(hpas, &name, old, &status, action).await?;
    Ok(Action::requeue(SYNC_PERIOD))
}

/// Why the replicas changed, as the Event says it.
fn rescale_reason(decision: &Decision, current: i32) -> String {
    match decision.limited.1 {
        "TooManyReplicas" | "TooFewReplicas" if decision.metrics.is_empty() => {
            let side = if current > decision.desired {
                "above Spec.MaxReplicas"
            } else {
                "below Spec.MinReplicas"
            };
            format!("Current number of replicas {side}")
        }
        _ => {
            let names = decision
                .metrics
                .iter()
                .filter_map(|m| match (&m.resource, &m.pods) {
                    (Some(r), _) => Some(format!(
                        "{} resource utilization (percentage of request)",
                        r.name
                    )),
                    (_, Some(p)) => Some(format!("pods metric {}", p.metric.name)),
                    _ => None,
                });
            let way = if decision.desired > current {
                "above"
            } else {
                "below"
            };
            format!("{} {way} target", names.collect::<Vec<_>>().join(", "))
        }
    }
}

/// The API of the objects of `kind` in `api_version` in `namespace`, if they have a
/// `scale` subresource.
fn target_api(
    client: &Client,
    namespace: &str,
    kind: &str,
    api_version: &str,
) -> Option<Api<DynamicObject>> {
    let r = crate::api::by_kind(kind).filter(|r| r.has_subresource("scale"))?;
    let served = match r.group {
        "" => r.version.to_owned(),
        group => format!("{group}/{}", r.version),
    };
    let (group, version) = (r.group.into(), r.version.into());
    let (kind, plural) = (kind.into(), r.plural.into());
    let resource = ApiResource {
        group,
        version,
        api_version: served.clone(),
        kind,
        plural,
    };
    (served == api_version).then(|| Api::namespaced_with(client.clone(), namespace, &resource))
}

/// The pods `selector` picks in `namespace` (those being deleted, or ended, aside), with
/// what each asks for and, from `metrics.k8s.io`, what each uses, and from
/// `custom.metrics.k8s.io` the `custom_metrics` of each.
async fn loads(
    client: &Client,
    namespace: &str,
    selector: &str,
    custom_metrics: &[String],
) -> Result<Vec<PodLoad>, ControllerError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods.list(&ListParams::default().labels(selector)).await;
    let listed = listed.map_err(ControllerError::api(format!(
        "list the pods of {namespace} for {selector:?}"
    )))?;
    let query: String = form_urlencoded::byte_serialize(selector.as_bytes()).collect();
    let path =
        format!("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods?labelSelector={query}");
    let metrics = match http::Request::get(path).body(Vec::new()) {
        Ok(request) => client.request::<Value>(request).await.unwrap_or_default(),
        Err(_) => Value::Null,
    };
    let sum = |containers: &Value, field: &str, index| {
        let each = containers.as_array().into_iter().flatten();
        each.map(|c| c.pointer(field)?.as_str().map(|q| quantity(index, q).ok()))
            .sum::<Option<Option<u64>>>()
            .flatten()
    };
    let mut custom: HashMap<String, HashMap<String, u64>> = HashMap::new();
    for metric in custom_metrics {
        let name: String = form_urlencoded::byte_serialize(metric.as_bytes()).collect();
        let path = format!(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/pods/*/{name}?labelSelector={query}"
        );
        let values = match http::Request::get(path).body(Vec::new()) {
            Ok(request) => client.request::<Value>(request).await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        for item in values["items"].as_array().into_iter().flatten() {
            let pod = item["describedObject"]["name"].as_str().unwrap_or_default();
            if let Some(Ok(value)) = item["value"].as_str().map(|v| quantity(0, v)) {
                let of_pod = custom.entry(pod.to_owned()).or_default();
                of_pod.insert(metric.clone(), value);
            }
        }
    }
    let mut usage: HashMap<&str, [u64; 2]> = HashMap::new();
    for item in metrics["items"].as_array().into_iter().flatten() {
        let used = |index| {
            sum(
                &item["containers"],
                &format!("/usage/{}", RESOURCES[index]),
                index,
            )
        };
        usage.insert(
            item["metadata"]["name"].as_str().unwrap_or_default(),
            [used(0).unwrap_or(0), used(1).unwrap_or(0)],
        );
    }
    let live = listed
        .items
        .iter()
        .filter(|p| !terminating(&p.metadata) && !matches!(pod_phase(p), "Succeeded" | "Failed"));
    let load = |pod: &Pod| {
        let spec = json!(pod.spec.as_ref().map(|s| &s.containers));
        let asked = |index| {
            sum(
                &spec,
                &format!("/resources/requests/{}", RESOURCES[index]),
                index,
            )
        };
        let name = pod.name_any();
        PodLoad {
            usage: usage.get(name.as_str()).copied(),
            ready: pod_ready(pod),
            requests: [asked(0), asked(1)],
            custom: custom.get(&name).cloned().unwrap_or_default(),
            name,
        }
    };
    Ok(live.map(load).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An autoscaler of `web` between `min` and `max` at `percent` of the CPU requested,
    /// with `behavior` (JSON) if given.
    fn hpa(min: i32, max: i32, percent: i32, behavior: Value) -> Hpa {
        let cpu = json!({"name": "cpu", "target": {"type": "Utilization", "averageUtilization": percent}});
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": min, "maxReplicas": max, "behavior": behavior,
                "metrics": [{"type": "Resource", "resource": cpu}]}}))
        .expect("an autoscaler")
    }

    /// `n` ready pods using `used` millicores each of a 100m request, each with `used`
    /// thousandths of a connection a second.
    fn pods(n: usize, used: u64) -> Vec<PodLoad> {
        let pod = |i| PodLoad {
            name: format!("web-{i}"),
            ready: true,
            usage: Some([used, 1 << 20]),
            requests: [Some(100), None],
            custom: HashMap::from([("connections_per_second".to_owned(), used)]),
        };
        (0..n).map(pod).collect()
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("a time")
    }

    #[test]
    fn replicas_follow_the_ratio_of_use_to_target_outside_the_tolerance() {
        let hpa = hpa(1, 10, 50, Value::Null);
        let decide_now = |pods: &[PodLoad]| decide(&hpa, 2, pods, &mut Memory::default(), at(0));
        // 2 pods at 90% of their request, target 50%: ceil(2 × 1.8) = 4.
        let up = decide_now(&pods(2, 90));
        assert_eq!(up.desired, 4);
        let cpu = up.metrics[0].resource.as_ref().expect("cpu");
        assert_eq!(cpu.current.average_utilization, Some(90));
        assert_eq!(up.active.1, "ValidMetricFound");
        // 54% is within 10% of 50%: nothing changes.
        assert_eq!(decide_now(&pods(2, 54)).desired, 2);
        // A container without a request: no CPU utilization to scale on, and why.
        let mut unasked = pods(2, 90);
        unasked[1].requests[0] = None;
        let failed = decide_now(&unasked);
        assert_eq!(
            (failed.desired, failed.active.0, failed.active.1),
            (2, false, "FailedGetResourceMetric")
        );
        assert!(
            failed
                .active
                .2
                .contains("missing request for cpu in pod web-1"),
            "{:?}",
            failed.active
        );
        // No metrics at all.
        let mut unmeasured = pods(2, 90);
        unmeasured.iter_mut().for_each(|p| p.usage = None);
        assert!(!decide_now(&unmeasured).active.0);
    }

    #[test]
    fn a_pods_metric_scales_on_its_average_per_pod() {
        let mut hpa = hpa(1, 10, 50, Value::Null);
        let metric = json!({"type": "Pods", "pods": {
            "metric": {"name": "connections_per_second"},
            "target": {"type": "AverageValue", "averageValue": "2"}}});
        hpa.spec.as_mut().expect("spec").metrics =
            Some(vec![serde_json::from_value(metric).expect("a metric")]);
        let decide_now = |pods: &[PodLoad]| decide(&hpa, 2, pods, &mut Memory::default(), at(0));
        // 2 pods at 3 connections a second each, 2 wanted: ceil(2 × 1.5) = 3. (Their CPU,
        // 3000m of a 100m request, is not a metric of this autoscaler.)
        let up = decide_now(&pods(2, 3000));
        assert_eq!(up.desired, 3);
        let seen = up.metrics[0].pods.as_ref().expect("a pods metric");
        assert_eq!(seen.current.average_value, Some(Quantity("3000m".into())));
        // A pod not ready still counts: only CPU sets unready pods aside.
        let mut unready = pods(2, 3000);
        unready[0].ready = false;
        assert_eq!(decide_now(&unready).desired, 3);
        // No pod has the metric: why.
        let failed = decide_now(
            &pods(2, 3000)
                .into_iter()
                .map(|p| PodLoad {
                    custom: HashMap::new(),
                    ..p
                })
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            (failed.desired, failed.active.1),
            (2, "FailedGetPodsMetric")
        );
        assert!(
            failed.active.2.contains("connections_per_second"),
            "{:?}",
            failed.active
        );
    }

    #[test]
    fn pods_without_metrics_or_not_ready_hold_a_change_back() {
        // Scaling up: the unready pod counts as using nothing, 2 × 90 + 0 over 3 × 50.
        let mut loads = pods(3, 90);
        loads[2].ready = false;
        let three: Vec<_> = loads
            .iter()
            .map(|p| (p.ready, p.usage.map(|u| u[0]), 100))
            .collect();
        assert_eq!(replicas_for(3, &three, 0.5), Some((4, 1.8)));
        // Scaling down: a pod without metrics counts as using its whole request, which
        // turns the change around; nothing changes.
        let down = [(true, Some(10), 100), (true, None, 100)];
        assert_eq!(replicas_for(2, &down, 0.5).map(|(n, _)| n), Some(2));
        assert_eq!(replicas_for(2, &[(false, None, 100)], 0.5), None);
    }

    #[test]
    fn a_scale_down_waits_for_its_window_and_a_scale_up_is_limited_by_its_policies() {
        let behavior = json!({"scaleDown": {"stabilizationWindowSeconds": 30}});
        let hpa = hpa(1, 20, 50, behavior);
        let mut memory = Memory::default();
        // Busy: 2 pods at 300% want 12, but up goes by at most 4 pods or 100% per 15 s.
        let first = decide(&hpa, 2, &pods(2, 300), &mut memory, at(0));
        assert_eq!((first.desired, first.limited.1), (6, "ScaleUpLimit"));
        memory.changes.push((4, at(0)));
        let soon = decide(&hpa, 6, &pods(6, 300), &mut memory, at(5));
        assert_eq!(soon.desired, 6, "the 15 s period still counts the 4 added");
        // Past the period, 6 may double: 100% beats 4 pods.
        let later = decide(&hpa, 6, &pods(6, 300), &mut memory, at(20));
        assert_eq!(later.desired, 12);
        memory.changes.push((6, at(20)));
        // Idle: the metrics recommend none, but the down window still holds 36 from 5 s
        // on; only once it has passed do the replicas go, down to the minimum.
        let idle = decide(&hpa, 12, &pods(12, 0), &mut memory, at(25));
        assert_eq!(idle.desired, 12);
        let past = decide(&hpa, 12, &pods(12, 0), &mut memory, at(60));
        assert_eq!((past.desired, past.limited.1), (1, "TooFewReplicas"));
    }

    #[test]
    fn passes_come_a_sync_period_apart_unless_the_spec_changed() {
        let mut memory = Memory::default();
        assert_eq!(memory.too_soon(at(0), Some(1)), None);
        assert_eq!(
            memory.too_soon(at(2), Some(1)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            memory.too_soon(at(2), Some(2)),
            None,
            "a new generation goes at once"
        );
        assert_eq!(memory.too_soon(at(7), Some(2)), None);
    }

    #[test]
    fn the_range_holds_whatever_the_metrics_say() {
        let hpa = hpa(2, 4, 50, Value::Null);
        let mut memory = Memory::default();
        let over = decide(&hpa, 7, &pods(7, 0), &mut memory, at(0));
        assert_eq!((over.desired, over.limited.1), (4, "TooManyReplicas"));
        let under = decide(&hpa, 1, &pods(1, 0), &mut memory, at(0));
        assert_eq!((under.desired, under.limited.1), (2, "TooFewReplicas"));
        let capped = decide(&hpa, 4, &pods(4, 500), &mut memory, at(0));
        assert_eq!((capped.desired, capped.limited.1), (4, "TooManyReplicas"));
        let zero = decide(&hpa, 0, &[], &mut memory, at(0));
        assert_eq!((zero.desired, zero.active.1), (0, "ScalingDisabled"));
    }
}
