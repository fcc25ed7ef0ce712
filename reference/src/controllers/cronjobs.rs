//! # CronJobs: jobs on a schedule
//!
//! A CronJob holds a Job template and a schedule in cron's five fields (`*/5 * * * *`,
//! or `@hourly`, `@daily`...), read in UTC. At every time the schedule names, this
//! controller creates a Job from the template, named after the CronJob and the minute it
//! was due (`backup-29417280`), so a pass repeated after a crash finds the Job it already
//! made instead of making another. Then:
//!
//! * only the latest missed time runs: a controller that was down for an hour starts one
//!   Job, not sixty; and none at all if that time is further back than
//!   `startingDeadlineSeconds`;
//! * `concurrencyPolicy` says what to do when the previous Job still runs: `Allow` a second
//!   one, `Forbid` it (the time is skipped; it runs once the Job ends, if still within the
//!   deadline), or `Replace` the running Job;
//! * `suspend: true` starts nothing;
//! * finished Jobs beyond `successfulJobsHistoryLimit` (3) and `failedJobsHistoryLimit` (1)
//!   are deleted, oldest first, and the garbage collector takes their pods;
//! * the status lists the running Jobs and the last times one was scheduled and one
//!   succeeded: what `kubectl get cronjobs` shows.
//!
//! Not built: `timeZone` (refused at admission unless UTC).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job, JobCondition};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::{
    ControllerError, Recorder, controller_ref, controller_uid, delete_if_present, identity,
    write_status,
};
use crate::api::validate::parse_schedule;

/// The annotation on a Job saying which scheduled time it runs for.
const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// What one CronJob needs done.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Plan {
    /// A Job to start, for this scheduled time.
    pub start: Option<jiff::Timestamp>,
    /// Jobs to delete: running ones a `Replace` ends, and finished ones beyond the limits.
    pub delete: Vec<String>,
    /// The status to write.
    pub status: CronJobStatus,
    /// When the schedule next comes due.
    pub next: Option<Duration>,
}

/// When a Job finished, and whether it succeeded; `None` while it runs.
fn finished(job: &Job) -> Option<(bool, Option<jiff::Timestamp>)> {
    let status = job.status.as_ref()?;
    let is_done =
        |c: &&JobCondition| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True";
    let done = status.conditions.iter().flatten().find(is_done)?;
    let transitioned = done.last_transition_time.as_ref();
    let at = status.completion_time.as_ref().or(transitioned);
    Some((done.type_ == "Complete", at.map(|t| t.0)))
}

/// The name of the Job for the time `at`: the CronJob's, and the minute since the epoch.
fn job_name(cron_job: &str, at: jiff::Timestamp) -> String {
    format!("{cron_job}-{}", at.as_second() / 60)
}

pub(super) fn reconcile(cj: &CronJob, jobs: &[&Job], now: jiff::Timestamp) -> Plan {
    let mut plan = Plan::default();
    let spec = cj.spec.clone().unwrap_or_default();
    let Ok(cron) = parse_schedule(&spec.schedule) else {
        return plan;
    };
    let utc = |t: jiff::Timestamp| chrono::DateTime::from_timestamp(t.as_second(), 0);
    let back = |t: chrono::DateTime<chrono::Utc>| jiff::Timestamp::from_second(t.timestamp()).ok();
    let (running, mut done): (Vec<&Job>, Vec<&Job>) =
        jobs.iter().copied().partition(|j| finished(j).is_none());
    // The latest time due, if it is later than the last one scheduled (or the creation).
    let last_scheduled = cj.status.iter().find_map(|s| s.last_schedule_time.as_ref());
    let created = cj.metadata.creation_timestamp.as_ref();
    let since = last_scheduled.or(created).map_or(now, |t| t.0);
    let due = utc(now)
        .and_then(|n| cron.find_previous_occurrence(&n, true).ok())
        .and_then(back)
        .filter(|due| *due > since);
    // A mutant starts the first Job as soon as the CronJob exists, whatever the schedule.
    let first = last_scheduled.is_none();
    let due =
        due.or((first && crate::failpoints::on!("cronjobs::start-when-created")).then_some(now));
    let in_time = |due: jiff::Timestamp| {
        spec.starting_deadline_seconds
            .is_none_or(|d| now.as_second() - due.as_second() <= d)
    };
    let mut status = cj.status.clone().unwrap_or_default();
    let name_of = |j: &&Job| j.metadata.name.clone();
    if let Some(due) = due.filter(|d| in_time(*d) && spec.suspend != Some(true)) {
        let made = jobs
            .iter()
            .any(|j| j.metadata.name.as_deref() == Some(&job_name(&cj.name_any(), due)));
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        if made || running.is_empty() || policy == "Allow" {
            plan.start = (!made).then_some(due);
            status.last_schedule_time = Some(Time(due));
        } else if policy == "Replace" {
            plan.delete.extend(running.iter().filter_map(name_of));
            plan.start = Some(due);
            status.last_schedule_time = Some(Time(due));
        }
    }
    // History: the newest finished Jobs of each outcome are kept.
    done.sort_by_key(|j| std::cmp::Reverse(finished(j).and_then(|(_, at)| at)));
    for (succeeded, limit) in [
        (true, spec.successful_jobs_history_limit.unwrap_or(3)),
        (false, spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let of_kind = done
            .iter()
            .filter(|j| finished(j).is_some_and(|(ok, _)| ok == succeeded));
        let keep = usize::try_from(limit).unwrap_or(0);
        plan.delete.extend(of_kind.skip(keep).filter_map(name_of));
    }
    status.last_successful_time = done
        .iter()
        .filter_map(|j| finished(j).filter(|(ok, _)| *ok).and_then(|(_, at)| at))
        .max()
        .map(Time)
        .or(status.last_successful_time);
    let active: Vec<ObjectReference> = running
        .iter()
        .filter(|j| !plan.delete.contains(&j.name_any()))
        .map(|j| ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            name: j.metadata.name.clone(),
            namespace: j.metadata.namespace.clone(),
            uid: j.metadata.uid.clone(),
            ..ObjectReference::default()
        })
        .collect();
    status.active = Some(active).filter(|a| !a.is_empty());
    plan.status = status;
    plan.next = utc(now)
        .and_then(|n| cron.find_next_occurrence(&n, false).ok())
        .and_then(back)
        .map(|next| Duration::from_secs((next.as_second() - now.as_second()).max(1) as u64));
    plan
}

/// Runs the CronJob controller until shutdown: a pass whenever a CronJob or one of its
/// Jobs changes, and when its schedule comes due.
pub(super) async fn run(client: Client, shutdown: watch::Receiver<bool>) {
    let controller = super::owning::<CronJob, Job>(&client, None);
    let recorder = Recorder::shared(client, "cronjob-controller");
    super::drive("cronjob", controller, recorder, pass, shutdown).await;
}

async fn pass(cj: Arc<CronJob>, ctx: Arc<Recorder>) -> Result<Action, ControllerError> {
    let Some((namespace, uid, name)) = identity(cj.as_ref())? else {
        return Ok(Action::await_change());
    };
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = format!("list the Jobs of CronJob {namespace}/{name}");
    let listed = jobs_api.list(&ListParams::default()).await;
    let listed = listed.map_err(ControllerError::api(action))?;
    let ours = |j: &&Job| controller_uid(&j.metadata) == Some(uid.as_str());
    let jobs: Vec<&Job> = listed.items.iter().filter(ours).collect();
    let plan = reconcile(&cj, &jobs, jiff::Timestamp::now());
    for job in &plan.delete {
        let what = || format!("delete Job {job} of CronJob {namespace}/{name}");
        if delete_if_present(&jobs_api, job, &DeleteParams::background(), what).await? {
            let message = format!("Deleted job {job}");
            ctx.normal(cj.as_ref(), "SuccessfulDelete", message).await;
        }
    }
    if let Some(due) = plan.start {
        let template = cj.spec.as_ref().map(|s| s.job_template.clone());
        let template = template.unwrap_or_default();
        let meta = template.metadata.unwrap_or_default();
        let mut annotations = meta.annotations.unwrap_or_default();
        annotations.insert(SCHEDULED_AT.into(), due.to_string());
        let job = Job {
            metadata: ObjectMeta {
                name: Some(job_name(&name, due)),
                namespace: Some(namespace.clone()),
                labels: meta.labels,
                annotations: Some(annotations),
                owner_references: controller_ref(cj.as_ref()).map(|r| vec![r]),
                ..ObjectMeta::default()
            },
            spec: template.spec,
            status: None,
        };
        match jobs_api.create(&PostParams::default(), &job).await {
            Ok(created) => {
                let message = format!("Created job {}", created.name_any());
                ctx.normal(cj.as_ref(), "SuccessfulCreate", message).await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                let action = format!("create a Job for CronJob {namespace}/{name}");
                return Err(ControllerError::api(action)(e));
            }
        }
    }
    let cron_jobs = Api::<CronJob>::namespaced(ctx.client.clone(), &namespace);
    let action = || format!("update the status of CronJob {namespace}/{name}");
    write_status(cron_jobs, &name, cj.status.as_ref(), &plan.status, action).await?;
    Ok(plan.next.map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cron_job(schedule: &str, policy: &str, last: Option<&str>) -> CronJob {
        serde_json::from_value(json!({
            "metadata": {"name": "backup", "namespace": "default", "uid": "u1",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"schedule": schedule, "concurrencyPolicy": policy,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
            "status": {"lastScheduleTime": last},
        }))
        .expect("a CronJob")
    }

    fn job(name: &str, outcome: Option<&str>, at: &str) -> Job {
        let conditions =
            outcome.map(|o| json!([{"type": o, "status": "True", "lastTransitionTime": at}]));
        serde_json::from_value(
            json!({"metadata": {"name": name}, "status": {"conditions": conditions}}),
        )
        .expect("a Job")
    }

    fn at(t: &str) -> jiff::Timestamp {
        t.parse().expect("a time")
    }

    #[test]
    fn the_latest_missed_time_starts_one_job_and_the_next_is_awaited() {
        let cj = cron_job("*/5 * * * *", "Allow", Some("2026-01-01T00:00:00Z"));
        let plan = reconcile(&cj, &[], at("2026-01-01T01:02:00Z"));
        assert_eq!(
            plan.start,
            Some(at("2026-01-01T01:00:00Z")),
            "one Job, for 01:00"
        );
        assert_eq!(plan.next, Some(Duration::from_secs(180)));
        // Its Job exists already: not made again.
        let made = job(&job_name("backup", at("2026-01-01T01:00:00Z")), None, "");
        assert_eq!(
            reconcile(&cj, &[&made], at("2026-01-01T01:02:00Z")).start,
            None
        );
    }

    #[test]
    fn a_running_job_is_kept_forbidden_or_replaced_as_the_policy_says() {
        let running = job("backup-1", None, "");
        let now = at("2026-01-01T00:05:30Z");
        let forbid = reconcile(&cron_job("*/5 * * * *", "Forbid", None), &[&running], now);
        assert_eq!((forbid.start, forbid.delete.len()), (None, 0));
        let replace = reconcile(&cron_job("*/5 * * * *", "Replace", None), &[&running], now);
        assert_eq!(replace.start, Some(at("2026-01-01T00:05:00Z")));
        assert_eq!(replace.delete, ["backup-1"]);
        let allow = reconcile(&cron_job("*/5 * * * *", "Allow", None), &[&running], now);
        assert!(allow.start.is_some() && allow.delete.is_empty());
        assert_eq!(allow.status.active.map(|a| a.len()), Some(1));
    }

    #[test]
    fn finished_jobs_beyond_the_history_limits_go_oldest_first() {
        let jobs: Vec<Job> = (1..=5)
            .map(|i| {
                job(
                    &format!("ok-{i}"),
                    Some("Complete"),
                    &format!("2026-01-01T00:0{i}:00Z"),
                )
            })
            .chain([
                job("bad-1", Some("Failed"), "2026-01-01T00:01:00Z"),
                job("bad-2", Some("Failed"), "2026-01-01T00:02:00Z"),
            ])
            .collect();
        let refs: Vec<&Job> = jobs.iter().collect();
        let plan = reconcile(
            &cron_job("@yearly", "Allow", None),
            &refs,
            at("2026-01-01T00:10:00Z"),
        );
        let mut deleted = plan.delete.clone();
        deleted.sort();
        assert_eq!(deleted, ["bad-1", "ok-1", "ok-2"]);
        assert_eq!(
            plan.status.last_successful_time,
            Some(Time(at("2026-01-01T00:05:00Z")))
        );
    }
}
