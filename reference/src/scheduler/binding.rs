//! Everything the scheduler writes, all through the apiserver: the binding that places a
//! pod, the pod's `PodScheduled` condition, and events.
//!
//! - **Bind**: `POST pods/{name}/binding` with a `Binding` naming the node; the apiserver
//!   sets `spec.nodeName`. A 409 means the pod is already bound (by another scheduler, or by
//!   us before a restart), a 404 that it is gone: neither is an error, the watch will tell.
//! - **Unschedulable**: a strategic merge patch of `pods/{name}/status` sets the condition
//!   `PodScheduled=False, reason Unschedulable` with the "0/3 nodes are available: …"
//!   message, merged by `type` so the pod's other conditions stay as they are.
//! - **Events** (`FailedScheduling`, `Scheduled`) are best effort, as upstream's event
//!   recorder is: a [`Recorder`] task sends them off the scheduling path, and drops them
//!   (with a log line) rather than slow scheduling down when the apiserver lags.

use k8s_openapi::api::core::v1::{Binding, Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::SchedulerError;
use super::queue::PodKey;

/// What became of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The pod is now bound to the node.
    Done,
    /// The pod was already bound (409): someone else placed it.
    AlreadyBound,
    /// The pod no longer exists (404).
    Gone,
}

/// Binds the pod to the node.
pub async fn bind(
    client: &kube::Client,
    key: &PodKey,
    node: &str,
) -> Result<Bound, SchedulerError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            ..ObjectReference::default()
        },
    };
    let reply = pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &key.name,
            &PostParams::default(),
            &binding,
        )
        .await;
    match reply {
        Ok(_) => Ok(Bound::Done),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Bound::AlreadyBound),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Bound::Gone),
        Err(source) => Err(SchedulerError::Bind {
            pod: key.to_string(),
            node: node.to_owned(),
            source,
        }),
    }
}

/// The pod's `PodScheduled` condition, if it has one.
fn scheduled_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")
}

/// Whether the pod already carries `PodScheduled=False/Unschedulable` with this message.
pub fn already_reported(pod: &Pod, message: &str) -> bool {
    scheduled_condition(pod).is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    })
}

/// Whether the pod carries a `PodScheduled` condition that is not `True` (it was
/// unschedulable before): once bound, that condition must be turned to `True`.
pub fn needs_scheduled_condition(pod: &Pod) -> bool {
    scheduled_condition(pod).is_some_and(|c| c.status != "True")
}

/// Sets `PodScheduled=False, reason Unschedulable` with `message` on the pod's status. The
/// transition time moves only when the status changes, as Kubernetes keeps it.
pub async fn set_unschedulable(
    client: &kube::Client,
    pod: &Pod,
    key: &PodKey,
    message: &str,
) -> Result<(), SchedulerError> {
    let mut condition = json!({
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
    });
    if scheduled_condition(pod).is_none_or(|c| c.status != "False") {
        condition["lastTransitionTime"] = json!(crate::api::meta::now_rfc3339());
    }
    patch_condition(client, key, condition).await
}

/// Sets `PodScheduled=True` on a pod that was unschedulable before and is bound now
/// (upstream's apiserver does this as part of the binding; ours leaves it to us).
pub async fn set_scheduled(client: &kube::Client, key: &PodKey) -> Result<(), SchedulerError> {
    let condition = json!({
        "type": "PodScheduled",
        "status": "True",
        "reason": null,
        "message": null,
        "lastTransitionTime": crate::api::meta::now_rfc3339(),
    });
    patch_condition(client, key, condition).await
}

async fn patch_condition(
    client: &kube::Client,
    key: &PodKey,
    condition: serde_json::Value,
) -> Result<(), SchedulerError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
    let patch = Patch::Strategic(json!({"status": {"conditions": [condition]}}));
    let params = PatchParams::default();
    match pods.patch_status(&key.name, &params, &patch).await {
        Ok(_) => Ok(()),
        // Deleted meanwhile: nothing left to report on.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(SchedulerError::Status {
            pod: key.to_string(),
            source,
        }),
    }
}

/// An event about the pod, as upstream's scheduler words it (`type` is `Normal` or
/// `Warning`). Its name is the pod's name, a dot and the time in hexadecimal
/// nanoseconds, as upstream's event recorder names them.
pub fn pod_event(pod: &Pod, component: &str, type_: &str, reason: &str, message: String) -> Event {
    let now = k8s_openapi::jiff::Timestamp::now();
    let name = pod.metadata.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: pod.metadata.namespace.clone(),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..ObjectReference::default()
        },
        type_: Some(type_.into()),
        reason: Some(reason.into()),
        message: Some(message),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        reporting_instance: Some(component.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    }
}

/// How many events may wait to be sent before new ones are dropped.
const EVENT_BACKLOG: usize = 1024;

/// Sends events in the background; dropping the recorder stops it (events still waiting
/// are lost, as upstream's are when the scheduler exits).
#[derive(Debug)]
pub struct Recorder {
    /// Where events wait to be sent.
    tx: mpsc::Sender<Event>,
    /// The task that sends them.
    task: JoinHandle<()>,
}

impl Recorder {
    /// Starts the sending task.
    pub fn start(client: kube::Client) -> Recorder {
        let (tx, mut rx) = mpsc::channel::<Event>(EVENT_BACKLOG);
        let task = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let namespace = event.metadata.namespace.clone().unwrap_or_default();
                let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
                if let Err(e) = events.create(&PostParams::default(), &event).await {
                    let error = SchedulerError::Event {
                        pod: format!(
                            "{namespace}/{}",
                            event.involved_object.name.as_deref().unwrap_or_default()
                        ),
                        reason: event.reason.clone().unwrap_or_default(),
                        source: e,
                    };
                    tracing::warn!(%error, "event not recorded");
                }
            }
        });
        Recorder { tx, task }
    }

    /// Queues an event; drops it if the backlog is full.
    pub fn record(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            tracing::debug!("event backlog full, event dropped");
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1"},
            "status": {"conditions": conditions},
        }))
        .expect("pod")
    }

    #[test]
    fn a_report_is_repeated_only_when_the_message_changes() {
        let p = pod(json!([
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."}
        ]));
        assert!(already_reported(
            &p,
            "0/1 nodes are available: 1 Insufficient cpu."
        ));
        assert!(!already_reported(
            &p,
            "0/2 nodes are available: 2 Insufficient cpu."
        ));
        assert!(!already_reported(&pod(json!([])), "anything"));
        assert!(needs_scheduled_condition(&p));
        assert!(!needs_scheduled_condition(&pod(json!([]))));
        assert!(!needs_scheduled_condition(&pod(
            json!([{"type": "PodScheduled", "status": "True"}])
        )));
    }

    #[test]
    fn events_point_at_the_pod() {
        let e = pod_event(
            &pod(json!([])),
            "default-scheduler",
            "Warning",
            "FailedScheduling",
            "no".into(),
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("shop"));
        assert!(
            e.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("web-1."))
        );
        assert_eq!(e.involved_object.kind.as_deref(), Some("Pod"));
        assert_eq!(e.involved_object.name.as_deref(), Some("web-1"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("u-1"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("FailedScheduling"));
        assert_eq!(
            e.source.and_then(|s| s.component).as_deref(),
            Some("default-scheduler")
        );
    }
}
