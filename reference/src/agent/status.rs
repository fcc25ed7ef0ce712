//! A pod's status, computed from what the agent sees of its containers.
//!
//! The phases are the seed's (and Kubernetes'):
//!
//! | phase | meaning here |
//! |---|---|
//! | Pending | accepted, but some container has not started yet (image missing, creating, waiting) |
//! | Running | bound to this node, every container created, at least one running or restarting |
//! | Succeeded | every container exited 0 and will not be restarted |
//! | Failed | every container exited, at least one in failure, and none will be restarted; or the agent refused the pod |
//! | Unknown | set by the control plane, not here: the node's agent cannot be reached |
//!
//! Pure functions of their inputs, so the rules are unit-tested without Docker.

use k8s_openapi::api::core::v1::PodStatus;
use serde_json::{Value, json};

/// What one container looks like to the agent right now.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerState {
    /// Not running and not started (yet): why.
    Waiting {
        /// `ContainerCreating`, `ErrImageNeverPull`, `CrashLoopBackOff`, ...
        reason: String,
        /// Details.
        message: String,
    },
    /// Running since `started_at`.
    Running {
        /// RFC 3339.
        started_at: String,
    },
    /// Exited and will not be restarted (or not yet).
    Terminated {
        /// Exit code.
        exit_code: i64,
        /// `Completed`, `Error`, `OOMKilled`.
        reason: String,
        /// RFC 3339.
        started_at: Option<String>,
        /// RFC 3339.
        finished_at: Option<String>,
    },
}

/// One container's status inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    /// Name in the spec.
    pub name: String,
    /// Image in the spec.
    pub image: String,
    /// Docker's image id, if created.
    pub image_id: Option<String>,
    /// Docker's container id, if created.
    pub container_id: Option<String>,
    /// State now.
    pub state: ContainerState,
    /// The previous termination, after a restart.
    pub last_state: Option<ContainerState>,
    /// Passing its readiness probe (or has none) and running.
    pub ready: bool,
    /// Times restarted.
    pub restart_count: i32,
    /// Whether the agent will restart it when it exits (restart policy).
    pub will_restart: bool,
}

/// Everything a pod's status is computed from.
#[derive(Debug, Clone)]
pub struct PodView {
    /// Containers, in spec order.
    pub containers: Vec<ContainerView>,
    /// A reason the agent refuses to run the pod at all.
    pub refused: Option<(String, String)>,
    /// The sandbox's IP.
    pub pod_ip: Option<String>,
    /// The node's address.
    pub host_ip: String,
    /// When the agent first took the pod on.
    pub start_time: String,
    /// The QoS class.
    pub qos_class: String,
}

/// The phase, by the table in the module docs.
pub fn phase(view: &PodView) -> &'static str {
    if view.refused.is_some() {
        return "Failed";
    }
    let mut all_terminated = true;
    let mut any_failed = false;
    for c in &view.containers {
        match &c.state {
            ContainerState::Waiting { .. } if c.restart_count == 0 && c.last_state.is_none() => {
                return "Pending";
            }
            ContainerState::Terminated { exit_code, .. } if !c.will_restart => {
                any_failed |= *exit_code != 0;
            }
            _ => all_terminated = false,
        }
    }
    match (all_terminated, any_failed) {
        (true, false) => "Succeeded",
        (true, true) => "Failed",
        _ => "Running",
    }
}

fn state_json(s: &ContainerState) -> Value {
    match s {
        ContainerState::Waiting { reason, message } => {
            let mut w = json!({"reason": reason});
            if !message.is_empty() {
                w["message"] = json!(message);
            }
            json!({"waiting": w})
        }
        ContainerState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        ContainerState::Terminated {
            exit_code,
            reason,
            started_at,
            finished_at,
        } => json!({"terminated": {
            "exitCode": exit_code, "reason": reason,
            "startedAt": started_at, "finishedAt": finished_at,
        }}),
    }
}

/// The `lastTransitionTime` of condition `kind` now `status`: the one in the `previous`
/// status if it had that status already (pods' and nodes' conditions alike), else `now`.
pub(super) fn since(previous: Option<&Value>, kind: &str, status: &str, now: &str) -> Value {
    previous
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c.get("type") == Some(&json!(kind))))
        .filter(|c| c.get("status") == Some(&json!(status)))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now))
}

/// Keeps a condition's `lastTransitionTime` when its status did not change.
fn condition(previous: &Value, kind: &str, ok: bool, now: &str, reason: Option<&str>) -> Value {
    let status = if ok { "True" } else { "False" };
    let since = since(Some(previous), kind, status, now);
    let mut c =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason.filter(|_| !ok) {
        c["reason"] = json!(r);
    }
    c
}

/// The `status` of the pod, given the previous one (for transition times) and `now`.
pub fn pod_status(view: &PodView, previous: &Value, now: &str) -> Value {
    let phase = phase(view);
    let all_ready = !view.containers.is_empty()
        && view.containers.iter().all(|c| c.ready)
        && phase == "Running";
    let containers: Vec<Value> = view
        .containers
        .iter()
        .map(|c| {
            let running = matches!(c.state, ContainerState::Running { .. });
            let mut s = json!({
                "name": c.name,
                "image": c.image,
                "imageID": c.image_id.clone().unwrap_or_default(),
                "ready": c.ready,
                "started": running,
                "restartCount": c.restart_count,
                "state": state_json(&c.state),
                "lastState": c.last_state.as_ref().map_or(json!({}), state_json),
            });
            if let Some(id) = &c.container_id {
                s["containerID"] = json!(format!("docker://{id}"));
            }
            s
        })
        .collect();
    let not_ready_reason = Some("ContainersNotReady");
    let mut status = json!({
        "phase": phase,
        "conditions": [
            condition(previous, "PodScheduled", true, now, None),
            condition(previous, "Initialized", true, now, None),
            condition(previous, "ContainersReady", all_ready, now, not_ready_reason),
            condition(previous, "Ready", all_ready, now, not_ready_reason),
        ],
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "startTime": view.start_time,
        "containerStatuses": containers,
        "qosClass": view.qos_class,
    });
    if let Some(ip) = &view.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some((reason, message)) = &view.refused {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
    }
    stored_form(status)
}

/// `status` as the API stores it: through the Kubernetes type, which keeps times to the
/// second (Docker's `StartedAt` has nanoseconds) and drops empty fields (a condition's
/// `lastProbeTime: null`). The agent compares the status it computes with the one it
/// read back; compared in any other form they would differ every round, and every round
/// would write the same status again. A status the type cannot read is left as it is.
fn stored_form(status: Value) -> Value {
    serde_json::from_value::<PodStatus>(status.clone())
        .ok()
        .and_then(|typed| serde_json::to_value(typed).ok())
        .unwrap_or(status)
}

/// Kubernetes' QoS class of a pod spec: Guaranteed, Burstable or BestEffort.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers = || crate::api::meta::each(spec, "/containers");
    let mut any = false;
    let mut guaranteed = containers().next().is_some();
    for c in containers() {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        any |= req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty());
        let full = |m: Option<&serde_json::Map<String, Value>>| {
            m.is_some_and(|m| m.contains_key("cpu") && m.contains_key("memory"))
        };
        let equal = match (req, lim) {
            (Some(r), Some(l)) => r.iter().all(|(k, v)| l.get(k) == Some(v)),
            (None, Some(_)) => true,
            _ => false,
        };
        guaranteed &= full(lim) && equal;
    }
    match (guaranteed, any) {
        (true, _) => "Guaranteed",
        (false, true) => "Burstable",
        _ => "BestEffort",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_computed_again_from_the_same_containers_is_what_the_api_stored() {
        // Docker reports start times to the nanosecond; the API keeps them to the second.
        let mut running = container(
            ContainerState::Running {
                started_at: "2026-11-29T09:49:01.70934063Z".into(),
            },
            true,
            0,
        );
        running.ready = true;
        running.container_id = Some("abc".into());
        let mut pod = view(vec![running]);
        pod.pod_ip = Some("172.18.0.2".into());
        pod.start_time = "2026-11-29T09:49:01Z".into();
        let first = pod_status(&pod, &json!({}), "2026-11-29T09:49:01Z");
        // What the agent reads back is what the API stored: the Kubernetes type's form.
        let stored = serde_json::to_value(
            serde_json::from_value::<PodStatus>(first.clone()).expect("a pod status"),
        )
        .expect("serialises");
        assert_eq!(first, stored);
        assert_eq!(
            first.pointer("/containerStatuses/0/state/running/startedAt"),
            Some(&json!("2026-11-29T09:49:01Z"))
        );
        // A later round, same containers: nothing to write.
        assert_eq!(pod_status(&pod, &stored, "2026-11-29T09:49:05Z"), stored);
    }

    fn container(state: ContainerState, will_restart: bool, restarts: i32) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "i".into(),
            image_id: None,
            container_id: None,
            state,
            last_state: None,
            ready: false,
            restart_count: restarts,
            will_restart,
        }
    }

    fn view(containers: Vec<ContainerView>) -> PodView {
        PodView {
            containers,
            refused: None,
            pod_ip: None,
            host_ip: "127.0.0.1".into(),
            start_time: "t".into(),
            qos_class: "BestEffort".into(),
        }
    }

    fn exited(code: i64) -> ContainerState {
        ContainerState::Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            started_at: None,
            finished_at: None,
        }
    }

    fn waiting(reason: &str) -> ContainerState {
        ContainerState::Waiting {
            reason: reason.into(),
            message: String::new(),
        }
    }

    #[test]
    fn phases_follow_the_seed() {
        let running = ContainerState::Running {
            started_at: "t".into(),
        };
        assert_eq!(
            phase(&view(vec![container(
                waiting("ContainerCreating"),
                true,
                0
            )])),
            "Pending"
        );
        assert_eq!(
            phase(&view(vec![container(running.clone(), true, 0)])),
            "Running"
        );
        // Exited 0 under Never/OnFailure: done.
        assert_eq!(
            phase(&view(vec![container(exited(0), false, 0)])),
            "Succeeded"
        );
        assert_eq!(phase(&view(vec![container(exited(3), false, 0)])), "Failed");
        // Under Always, an exited container is restarted: still Running.
        assert_eq!(phase(&view(vec![container(exited(0), true, 0)])), "Running");
        // Crash looping after a first start is Running, not Pending.
        assert_eq!(
            phase(&view(vec![container(waiting("CrashLoopBackOff"), true, 2)])),
            "Running"
        );
        // One container still running keeps the pod Running.
        assert_eq!(
            phase(&view(vec![
                container(exited(0), false, 0),
                container(running, false, 0)
            ])),
            "Running"
        );
        let mut refused = view(vec![]);
        refused.refused = Some(("Forbidden".into(), "no".into()));
        assert_eq!(phase(&refused), "Failed");
    }

    #[test]
    fn ready_needs_every_container_ready_and_keeps_transition_times() {
        let mut c = container(
            ContainerState::Running {
                started_at: "t".into(),
            },
            true,
            0,
        );
        c.ready = true;
        let v = view(vec![c]);
        let s1 = pod_status(&v, &json!({}), "10:00");
        assert_eq!(s1["conditions"][3]["status"], "True");
        let s2 = pod_status(&v, &s1, "10:05");
        assert_eq!(s2["conditions"][3]["lastTransitionTime"], "10:00");
        assert_eq!(s1, s2, "an unchanged pod has an unchanged status");
    }

    #[test]
    fn qos_classes() {
        assert_eq!(qos_class(&json!({"containers": [{}]})), "BestEffort");
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]})),
            "Burstable"
        );
        assert_eq!(
            qos_class(
                &json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]})
            ),
            "Guaranteed"
        );
    }
}
