//! # Jobs: pods that run to completion
//!
//! A Deployment's pods serve until they are replaced; a Job's pods do a piece of work and
//! end. The Job says how many of them must end well (`completions`), how many may run at
//! once (`parallelism`), and how many failures it tolerates (`backoffLimit`) before it
//! gives up. This controller keeps `min(parallelism, completions - succeeded)` pods
//! running, replaces one that fails (after a back-off of 10 s, doubling with every failure,
//! at most 6 minutes, as Kubernetes does), and finishes the Job:
//!
//! * **Complete** once `completions` pods have succeeded (without `completions`, once one
//!   has succeeded and none is left running);
//! * **Failed** once more pods have failed than `backoffLimit` allows (with restart policy
//!   `OnFailure` a container's restarts count as failures too: the node agent restarts it
//!   in place), reason `BackoffLimitExceeded`; or once it has been active longer than
//!   `activeDeadlineSeconds`, reason `DeadlineExceeded`. Its running pods are deleted.
//!
//! A suspended Job (`suspend: true`) runs no pods and says so in a `Suspended` condition;
//! a finished Job with `ttlSecondsAfterFinished` is deleted that long after it finished,
//! and the garbage collector takes its pods.
//!
//! The apiserver gives a Job's pods its uid as a label (`batch.kubernetes.io/controller-uid`),
//! and selects them by it; the pods name the Job as their controller. A pass lists them
//! fresh, so it always sees its own earlier creates.
//!
//! Counting: `succeeded` and `failed` in the status never go down, so a finished pod that
//! someone deletes still counts. (Kubernetes tracks each pod with a finalizer until it is
//! counted; here a pod deleted before any pass saw it finish is not counted.)
//!
//! Not built: `Indexed` completion mode (refused at admission), pod failure and success
//! policies, per-index back-off, `managedBy`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::{
    ControllerError, Recorder, delete_if_present, identity, is_terminated, owned_pods,
    pod_from_template, pod_phase, pod_ready, terminating, write_status,
};
use crate::api::defaults::JOB_UID_LABEL;

/// The first wait before a failed pod is replaced; it doubles with every failure.
const BACKOFF: Duration = Duration::from_secs(10);
/// The longest wait before a failed pod is replaced.
const MAX_BACKOFF: Duration = Duration::from_secs(360);

/// How a Job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finish {
    /// Enough pods succeeded.
    Complete,
    /// Too many failures.
    BackoffLimitExceeded,
    /// Active longer than `activeDeadlineSeconds`.
    DeadlineExceeded,
}

/// What one pass does to a Job.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Plan {
    /// How many pods to create from the template.
    pub create: u32,
    /// The pods to delete, by name.
    pub delete: Vec<String>,
    /// How the Job ends in this pass, if it does.
    pub finish: Option<Finish>,
    /// The status to report.
    pub status: JobStatus,
    /// Look again after this long even if nothing changes (back-off, deadlines, TTL).
    pub requeue: Option<Duration>,
    /// Delete the Job itself: it finished longer ago than its TTL.
    pub delete_job: bool,
}

impl Finish {
    /// The condition it sets, with the reason and message of that condition and its Event.
    fn describe(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Finish::Complete => ("Complete", "Completed", "Job completed"),
            Finish::BackoffLimitExceeded => (
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
            Finish::DeadlineExceeded => (
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ),
        }
    }
}

fn is_true(conditions: Option<&Vec<JobCondition>>, kind: &str) -> Option<jiff::Timestamp> {
    let is_it = |c: &&JobCondition| c.type_ == kind && c.status == "True";
    let found = conditions?.iter().find(is_it)?;
    let since = found.last_transition_time.as_ref();
    Some(since.map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0))
}

/// When a failed pod ended: its containers' latest finish, else when it was created.
fn ended(pod: &Pod) -> Option<jiff::Timestamp> {
    let statuses = pod.status.as_ref()?.container_statuses.iter().flatten();
    let finished = statuses
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    finished.or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn condition(kind: &str, reason: &str, message: &str, now: jiff::Timestamp) -> JobCondition {
    JobCondition {
        type_: kind.to_owned(),
        status: "True".to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn seconds(d: i64) -> Duration {
    Duration::from_secs(u64::try_from(d).unwrap_or(0).max(1))
}

/// The pure rule: given a Job and the pods it controls, what to do now.
pub(super) fn reconcile(job: &Job, pods: &[&Pod], now: jiff::Timestamp) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let mut status = job.status.clone().unwrap_or_default();
    let mut conditions = status.conditions.take().unwrap_or_default();
    let mut plan = Plan::default();

    let live: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| !terminating(&p.metadata))
        .collect();
    let active: Vec<&Pod> = live.iter().copied().filter(|p| !is_terminated(p)).collect();
    let count = |wanted: &str| live.iter().filter(|p| pod_phase(p) == wanted).count();
    let succeeded = status.succeeded.unwrap_or(0).max(count("Succeeded") as i32);
    let failed = status.failed.unwrap_or(0).max(count("Failed") as i32);
    let pod_spec = spec.template.spec.as_ref();
    let on_failure = pod_spec.and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure");
    let restarts: i32 = active
        .iter()
        .filter(|_| on_failure)
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    let ready = active.iter().filter(|p| pod_ready(p)).count() as i32;

    let finished = is_true(Some(&conditions), "Complete").or(is_true(Some(&conditions), "Failed"));
    let suspended = spec.suspend == Some(true);
    if status.start_time.is_none() && !suspended && finished.is_none() {
        status.start_time = Some(Time(now));
    }
    let started = status.start_time.as_ref().map(|t| t.0);
    let deadline = spec
        .active_deadline_seconds
        .zip(started)
        .map(|(limit, start)| start.as_second() + limit);

    let finish = if finished.is_some() {
        None
    } else if failed + restarts > spec.backoff_limit.unwrap_or(6)
        && !crate::failpoints::on!("jobs::retry-forever")
    {
        Some(Finish::BackoffLimitExceeded)
    } else if deadline.is_some_and(|d| now.as_second() >= d) && !suspended {
        Some(Finish::DeadlineExceeded)
    } else {
        let done = match spec.completions {
            Some(completions) => succeeded >= completions,
            None => succeeded > 0 && active.is_empty(),
        };
        done.then_some(Finish::Complete)
    };
    if let Some(finish) = finish {
        let (kind, reason, message) = finish.describe();
        conditions.push(condition(kind, reason, message, now));
        if finish == Finish::Complete {
            status.completion_time = Some(Time(now));
        }
        plan.finish = Some(finish);
    }

    let running = finished.is_none() && plan.finish.is_none() && !suspended;
    let wanted = if !running {
        0
    } else {
        let left = match spec.completions {
            Some(completions) => (completions - succeeded).max(0),
            None if succeeded > 0 => 0,
            None => i32::MAX,
        };
        let parallelism = if crate::failpoints::on!("jobs::ignore-parallelism") {
            i32::MAX
        } else {
            spec.parallelism.unwrap_or(1)
        };
        parallelism.min(left).max(0)
    };
    let have = active.len() as i32;
    if have > wanted {
        // The ones not yet running go first, then the youngest.
        let mut extra = active.clone();
        extra.sort_by_key(|p| {
            (
                pod_phase(p) == "Running",
                std::cmp::Reverse(p.metadata.creation_timestamp.clone()),
            )
        });
        plan.delete = extra
            .iter()
            .take((have - wanted) as usize)
            .filter_map(|p| p.metadata.name.clone())
            .collect();
    } else if have < wanted {
        let last_failure = live
            .iter()
            .filter(|p| pod_phase(p) == "Failed")
            .filter_map(|p| ended(p))
            .max();
        let wait = match last_failure {
            Some(at) if failed > 0 => {
                let backoff = BACKOFF
                    .saturating_mul(2u32.saturating_pow((failed - 1) as u32))
                    .min(MAX_BACKOFF);
                (at.as_second() + backoff.as_secs() as i64) - now.as_second()
            }
            _ => 0,
        };
        if wait > 0 {
            plan.requeue = Some(seconds(wait));
        } else {
            plan.create = (wanted - have) as u32;
        }
    }

    // Suspension is reported, and withdrawn when the Job resumes.
    let was_suspended = is_true(Some(&conditions), "Suspended").is_some();
    if suspended && !was_suspended && finished.is_none() {
        conditions.push(condition("Suspended", "JobSuspended", "Job suspended", now));
    } else if !suspended && was_suspended {
        for c in conditions.iter_mut().filter(|c| c.type_ == "Suspended") {
            c.status = "False".into();
            c.reason = Some("JobResumed".into());
            c.message = Some("Job resumed".into());
            c.last_transition_time = Some(Time(now));
        }
    }

    if let Some(deadline) = deadline.filter(|_| running) {
        let until = seconds(deadline - now.as_second());
        plan.requeue = Some(plan.requeue.map_or(until, |r| r.min(until)));
    }
    let finished_at = finished.or(plan.finish.map(|_| now));
    if let (Some(at), Some(ttl)) = (finished_at, spec.ttl_seconds_after_finished) {
        let expires = at.as_second() + i64::from(ttl);
        if now.as_second() >= expires {
            plan.delete_job = true;
        } else {
            plan.requeue = Some(seconds(expires - now.as_second()));
        }
    }

    status.active = Some(have + plan.create as i32 - plan.delete.len() as i32).filter(|n| *n > 0);
    status.ready = Some(ready);
    status.succeeded = Some(succeeded).filter(|n| *n > 0);
    status.failed = Some(failed).filter(|n| *n > 0);
    status.conditions = Some(conditions).filter(|c| !c.is_empty());
    plan.status = status;
    plan
}

/// Runs the Job controller until shutdown: reconciles a Job whenever it or one of its
/// pods changes.
pub(super) async fn run(client: Client, shutdown: watch::Receiver<bool>) {
    let controller = super::owning::<Job, Pod>(&client, Some(JOB_UID_LABEL));
    let recorder = Recorder::shared(client, "job-controller");
    super::drive("job", controller, recorder, pass, shutdown).await;
}

/// One pass over one Job: list its pods, plan, act, report.
async fn pass(job: Arc<Job>, ctx: Arc<Recorder>) -> Result<Action, ControllerError> {
    let Some((namespace, uid, name)) = identity(job.as_ref())? else {
        return Ok(Action::await_change());
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let label = format!("{JOB_UID_LABEL}={uid}");
    let owned = owned_pods(&pods_api, job.as_ref(), &uid, &label, None).await?;
    let pods: Vec<&Pod> = owned.iter().collect();
    let plan = reconcile(&job, &pods, jiff::Timestamp::now());

    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    if plan.delete_job {
        let action = || format!("delete finished Job {namespace}/{name}");
        delete_if_present(&jobs, &name, &DeleteParams::background(), action).await?;
        return Ok(Action::await_change());
    }
    let template = job.spec.as_ref().map(|s| s.template.clone());
    let template = template.unwrap_or_default();
    for _ in 0..plan.create {
        let pod = pod_from_template(job.as_ref(), template.clone());
        let action = format!("create a pod for Job {namespace}/{name}");
        let created = pods_api.create(&PostParams::default(), &pod).await;
        let created = created.map_err(ControllerError::api(action))?;
        let message = format!("Created pod: {}", created.name_any());
        ctx.normal(job.as_ref(), "SuccessfulCreate", message).await;
    }
    for pod in &plan.delete {
        let what = || format!("delete pod {pod} of Job {namespace}/{name}");
        if delete_if_present(&pods_api, pod, &DeleteParams::default(), what).await? {
            let message = format!("Deleted pod: {pod}");
            ctx.normal(job.as_ref(), "SuccessfulDelete", message).await;
        }
    }
    if let Some(finish) = plan.finish {
        let (_, reason, message) = finish.describe();
        let type_ = match finish {
            Finish::Complete => "Normal",
            _ => "Warning",
        };
        ctx.record(&*job, type_, reason, message.into()).await;
    }
    let action = || format!("write the status of Job {namespace}/{name}");
    write_status(jobs, &name, job.status.as_ref(), &plan.status, action).await?;
    Ok(plan
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodSpec, PodStatus,
        PodTemplateSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).expect("in range")
    }

    fn job(completions: Option<i32>, parallelism: i32, backoff_limit: i32) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("batch".into()),
                namespace: Some("default".into()),
                uid: Some("j-1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                completions,
                parallelism: Some(parallelism),
                backoff_limit: Some(backoff_limit),
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        restart_policy: Some("Never".into()),
                        ..PodSpec::default()
                    }),
                },
                ..JobSpec::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, phase: &str, finished_at: i64) -> Pod {
        let terminated = ContainerState {
            terminated: Some(ContainerStateTerminated {
                finished_at: Some(Time(at(finished_at))),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(at(0))),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    state: (phase == "Failed").then_some(terminated),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn a_job_runs_as_many_pods_as_parallelism_and_what_is_left_allow() {
        let plan = reconcile(&job(Some(3), 2, 6), &[], at(100));
        assert_eq!(plan.create, 2);
        assert_eq!(plan.status.active, Some(2));
        assert_eq!(plan.status.start_time, Some(Time(at(100))));

        let (a, b) = (pod("a", "Succeeded", 0), pod("b", "Succeeded", 0));
        let c = pod("c", "Running", 0);
        let plan = reconcile(&job(Some(3), 2, 6), &[&a, &b, &c], at(100));
        assert_eq!(
            (plan.create, plan.delete.len()),
            (0, 0),
            "one is left, and it runs"
        );
        assert_eq!(plan.status.succeeded, Some(2));
        assert_eq!(plan.finish, None);
    }

    #[test]
    fn a_job_completes_once_enough_pods_succeeded() {
        let pods = [
            pod("a", "Succeeded", 0),
            pod("b", "Succeeded", 0),
            pod("c", "Succeeded", 0),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let plan = reconcile(&job(Some(3), 2, 6), &refs, at(100));
        assert_eq!(plan.finish, Some(Finish::Complete));
        assert_eq!(plan.create, 0);
        assert_eq!(plan.status.completion_time, Some(Time(at(100))));
        let conditions = plan.status.conditions.unwrap_or_default();
        assert_eq!(conditions[0].type_, "Complete");
        assert_eq!(conditions[0].status, "True");
    }

    #[test]
    fn a_failed_pod_is_replaced_after_a_back_off_that_doubles() {
        let failed = pod("a", "Failed", 100);
        let plan = reconcile(&job(Some(1), 1, 6), &[&failed], at(104));
        assert_eq!(plan.create, 0, "the first back-off is 10 s");
        assert_eq!(plan.requeue, Some(Duration::from_secs(6)));
        let plan = reconcile(&job(Some(1), 1, 6), &[&failed], at(110));
        assert_eq!(plan.create, 1);
        assert_eq!(plan.status.failed, Some(1));

        let second = pod("b", "Failed", 120);
        let plan = reconcile(&job(Some(1), 1, 6), &[&failed, &second], at(130));
        assert_eq!(plan.create, 0, "after two failures the back-off is 20 s");
        assert_eq!(plan.requeue, Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_job_fails_once_failures_pass_the_backoff_limit_and_stops_its_pods() {
        let (a, b) = (pod("a", "Failed", 0), pod("b", "Failed", 0));
        let c = pod("c", "Running", 0);
        let plan = reconcile(&job(Some(1), 1, 2), &[&a, &b, &c], at(100));
        assert_eq!(plan.finish, None, "two failures are within a limit of 2");
        let d = pod("d", "Failed", 0);
        let plan = reconcile(&job(Some(1), 1, 2), &[&a, &b, &d, &c], at(100));
        assert_eq!(plan.finish, Some(Finish::BackoffLimitExceeded));
        assert_eq!(plan.delete, vec!["c".to_owned()]);
        assert_eq!(plan.status.completion_time, None);
        let conditions = plan.status.conditions.unwrap_or_default();
        assert_eq!(
            conditions[0].reason.as_deref(),
            Some("BackoffLimitExceeded")
        );
    }

    #[test]
    fn counts_never_go_down_when_finished_pods_are_deleted() {
        let mut counted = job(Some(3), 1, 6);
        counted.status = Some(JobStatus {
            succeeded: Some(2),
            ..JobStatus::default()
        });
        let plan = reconcile(&counted, &[], at(100));
        assert_eq!(plan.status.succeeded, Some(2));
        assert_eq!(plan.create, 1);
    }

    #[test]
    fn a_suspended_job_runs_nothing_and_a_deadline_fails_it() {
        let mut suspended = job(Some(1), 1, 6);
        if let Some(spec) = suspended.spec.as_mut() {
            spec.suspend = Some(true);
        }
        let running = pod("a", "Running", 0);
        let plan = reconcile(&suspended, &[&running], at(100));
        assert_eq!(plan.delete, vec!["a".to_owned()]);
        assert_eq!(plan.create, 0);
        assert!(is_true(plan.status.conditions.as_ref(), "Suspended").is_some());

        let mut limited = job(Some(1), 1, 6);
        if let Some(spec) = limited.spec.as_mut() {
            spec.active_deadline_seconds = Some(30);
        }
        limited.status = Some(JobStatus {
            start_time: Some(Time(at(100))),
            ..JobStatus::default()
        });
        let plan = reconcile(&limited, &[&running], at(110));
        assert_eq!(plan.requeue, Some(Duration::from_secs(20)));
        let plan = reconcile(&limited, &[&running], at(130));
        assert_eq!(plan.finish, Some(Finish::DeadlineExceeded));
        assert_eq!(plan.delete, vec!["a".to_owned()]);
    }

    #[test]
    fn a_finished_job_with_a_ttl_is_deleted_when_it_expires() {
        let mut done = job(Some(1), 1, 6);
        if let Some(spec) = done.spec.as_mut() {
            spec.ttl_seconds_after_finished = Some(60);
        }
        done.status = Some(JobStatus {
            conditions: Some(vec![condition(
                "Complete",
                "Completed",
                "Job completed",
                at(100),
            )]),
            succeeded: Some(1),
            ..JobStatus::default()
        });
        let plan = reconcile(&done, &[], at(130));
        assert!(!plan.delete_job);
        assert_eq!(plan.requeue, Some(Duration::from_secs(30)));
        assert!(reconcile(&done, &[], at(160)).delete_job);
    }
}
