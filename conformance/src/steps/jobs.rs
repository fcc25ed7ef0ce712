//! Sentences about jobs (`features/jobs.feature`): pods that do a piece of work and end,
//! so many at a time, tried again when they fail; and scheduled jobs, which start a job
//! each time their schedule comes due.
//!
//! Each pod of a job runs the kit's `probe`, told by its environment to work a few seconds
//! and end (`EXIT_AFTER`), well or with a failure code (`EXIT_CODE`). How many ran at
//! once is judged twice: from when each pod's container started and ended, as the system
//! reports them, and from how many the system reported running at once while the kit
//! waited for the job to end.
//!
//! A scheduled job runs every minute, the finest a cron schedule names. A job it starts is
//! on time when the system created it in the first [`ON_TIME`] of a minute, by the
//! system's own clock. The kit creates the scheduled job well inside a minute, so that a
//! job started at once, not when the schedule came due, cannot pass for one on time.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use cucumber::{then, when};

use super::{StepResult, Wait, fail};
use crate::driver::{JobOutcome, JobPod, JobSpec, JobState, Phase, ScheduledJobSpec, ScheduledRun};
use crate::world::ConformanceWorld;

/// How many times a failed pod is tried again when a scenario does not say: Kubernetes'
/// default.
const DEFAULT_RETRIES: u32 = 6;

/// Systems report when containers started and ended in whole seconds, so two pods, one
/// starting in the second the other ended, may seem to overlap by up to this much.
const TIMESTAMP_SLACK: Duration = Duration::from_secs(1);

/// How soon after the minute it comes due a scheduled job's job must be created.
const ON_TIME: Duration = Duration::from_secs(10);

/// The seconds of a minute the kit creates a scheduled job in (see the module's essay).
const CREATE_BETWEEN: std::ops::RangeInclusive<u64> = 15..=48;

/// A job of probe pods that each work `seconds`, then exit with `code`.
fn probe_job(
    image: String,
    name: String,
    (completions, parallelism, retries): (u32, u32, u32),
    seconds: u32,
    code: i32,
) -> JobSpec {
    JobSpec {
        name,
        image,
        completions,
        parallelism,
        retries,
        env: BTreeMap::from([
            ("EXIT_AFTER".to_owned(), seconds.to_string()),
            ("EXIT_CODE".to_owned(), code.to_string()),
        ]),
    }
}

async fn submit(
    world: &mut ConformanceWorld,
    name: String,
    counts: (u32, u32, u32),
    seconds: u32,
    code: i32,
) -> StepResult {
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let job = probe_job(driver.probe_image("v1"), name, counts, seconds, code);
    driver.run_job(&namespace, &job).await?;
    Ok(())
}

#[when(
    expr = "a job {string} is created that needs {int} probe pod(s) to end well, {int} at a time, each working {int} second(s)"
)]
async fn job_that_works(
    world: &mut ConformanceWorld,
    name: String,
    completions: u32,
    parallelism: u32,
    seconds: u32,
) -> StepResult {
    let counts = (completions, parallelism, DEFAULT_RETRIES);
    submit(world, name, counts, seconds, 0).await
}

#[when(
    expr = "a job {string} is created that needs {int} probe pod(s) to end well, tried again at most {int} time(s), each failing with code {int} after {int} second(s)"
)]
async fn job_that_fails(
    world: &mut ConformanceWorld,
    name: String,
    completions: u32,
    retries: u32,
    code: i32,
    seconds: u32,
) -> StepResult {
    submit(world, name, (completions, 1, retries), seconds, code).await
}

/// Reads a job, which must exist.
async fn read(world: &mut ConformanceWorld, name: &str) -> anyhow::Result<JobState> {
    let namespace = world.namespace().await?;
    world
        .driver()?
        .read_job(&namespace, name)
        .await?
        .ok_or_else(|| anyhow!("job {namespace}/{name} does not exist"))
}

/// `3 pods: a Succeeded, b Failed, c Running`.
fn describe(job: &JobState) -> String {
    let pods: Vec<String> = job
        .pods
        .iter()
        .map(|pod| format!("{} {:?}", pod.name, pod.phase))
        .collect();
    let outcome = match &job.outcome {
        None => "running".to_owned(),
        Some(JobOutcome::Complete) => "complete".to_owned(),
        Some(JobOutcome::Failed(why)) => format!("failed ({why})"),
    };
    format!("{outcome}, {} pod(s): {}", pods.len(), pods.join(", "))
}

fn count(job: &JobState, phase: Phase) -> usize {
    job.pods.iter().filter(|pod| pod.phase == phase).count()
}

/// Notes the pods of the job running now, if more than ever seen before.
fn note_running(world: &mut ConformanceWorld, name: &str, job: &JobState) {
    let running: Vec<String> = job
        .pods
        .iter()
        .filter(|pod| pod.phase == Phase::Running)
        .map(|pod| pod.name.clone())
        .collect();
    let peak = world.job_peaks.entry(name.to_owned()).or_default();
    if running.len() > peak.len() {
        *peak = running;
    }
}

/// Waits until the job has an outcome that `ended` accepts, noting how many of its pods
/// were seen running at once on the way.
async fn wait_for_outcome(
    world: &mut ConformanceWorld,
    name: &str,
    seconds: u64,
    what: &str,
    ended: impl Fn(&JobOutcome) -> bool,
) -> anyhow::Result<JobState> {
    let wait = Wait::new(seconds, format!("job {name} {what}"));
    loop {
        let job = read(world, name).await;
        if let Ok(job) = &job {
            note_running(world, name, job);
        }
        let last = match job {
            Ok(job) if job.outcome.as_ref().is_some_and(&ended) => {
                wait.done(world);
                return Ok(job);
            }
            Ok(job) => describe(&job),
            Err(error) => format!("{error:#}"),
        };
        wait.again(&last).await?;
    }
}

#[then(expr = "within {int} seconds the job {string} is complete, with {int} pod(s) ended well")]
async fn job_complete(
    world: &mut ConformanceWorld,
    seconds: u64,
    name: String,
    pods: usize,
) -> StepResult {
    let job = wait_for_outcome(world, &name, seconds, "complete", |outcome| {
        *outcome == JobOutcome::Complete
    })
    .await?;
    if count(&job, Phase::Succeeded) != pods || count(&job, Phase::Failed) != 0 {
        fail!(
            "job {name} is complete, but not with {pods} pod(s) ended well and none failed: {}",
            describe(&job)
        );
    }
    Ok(())
}

#[then(expr = "within {int} seconds the job {string} has failed, after {int} pod(s) failed")]
async fn job_failed(
    world: &mut ConformanceWorld,
    seconds: u64,
    name: String,
    pods: usize,
) -> StepResult {
    let job = wait_for_outcome(world, &name, seconds, "failed", |outcome| {
        matches!(outcome, JobOutcome::Failed(_))
    })
    .await?;
    if count(&job, Phase::Failed) != pods || count(&job, Phase::Succeeded) != 0 {
        fail!(
            "job {name} has failed, but not after exactly {pods} failed pod(s): {}",
            describe(&job)
        );
    }
    Ok(())
}

#[then(expr = "for {int} seconds the job {string} runs no more pods")]
async fn job_runs_no_more(world: &mut ConformanceWorld, seconds: u64, name: String) -> StepResult {
    let first = read(world, &name).await?;
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < until {
        let now = read(world, &name).await?;
        let live: Vec<&JobPod> = now
            .pods
            .iter()
            .filter(|pod| matches!(pod.phase, Phase::Pending | Phase::Running))
            .collect();
        if now.pods.len() > first.pods.len() || !live.is_empty() {
            fail!(
                "job {name} ended, yet runs pods again: first {}, now {}",
                describe(&first),
                describe(&now)
            );
        }
        tokio::time::sleep(super::POLL).await;
    }
    Ok(())
}

#[when(
    expr = "a scheduled job {string} is created that starts a job every minute, of {int} probe pod(s) working {int} second(s)"
)]
async fn scheduled_job(
    world: &mut ConformanceWorld,
    name: String,
    pods: u32,
    seconds: u32,
) -> StepResult {
    let into_minute = seconds_into_minute(SystemTime::now());
    if !CREATE_BETWEEN.contains(&into_minute) {
        let wait = (CREATE_BETWEEN.start() + 60 - into_minute) % 60;
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    let namespace = world.namespace().await?;
    let driver = world.driver()?;
    let counts = (pods, pods, DEFAULT_RETRIES);
    let spec = ScheduledJobSpec {
        job: probe_job(driver.probe_image("v1"), String::new(), counts, seconds, 0),
        name,
        schedule: "* * * * *".to_owned(),
    };
    driver.run_scheduled_job(&namespace, &spec).await?;
    Ok(())
}

/// How many whole seconds past its minute `at` is.
fn seconds_into_minute(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() % 60)
}

async fn runs(world: &mut ConformanceWorld, name: &str) -> anyhow::Result<Vec<ScheduledRun>> {
    let namespace = world.namespace().await?;
    world.driver()?.list_scheduled_runs(&namespace, name).await
}

/// `job-1 created 0 s into its minute: complete, ...` for each run.
fn describe_runs(runs: &[ScheduledRun]) -> String {
    if runs.is_empty() {
        return "no job started yet".to_owned();
    }
    let each: Vec<String> = runs
        .iter()
        .map(|run| {
            let into = seconds_into_minute(run.created);
            format!(
                "{} created {into} s into its minute: {}",
                run.name,
                describe(&run.job)
            )
        })
        .collect();
    each.join("; ")
}

/// Fails unless every run was created on time, and no two for the same minute.
fn as_scheduled(name: &str, runs: &[ScheduledRun]) -> StepResult {
    let minute = |run: &ScheduledRun| {
        let since = run.created.duration_since(SystemTime::UNIX_EPOCH);
        since.map_or(0, |since| since.as_secs() / 60)
    };
    if let Some(late) = runs
        .iter()
        .find(|run| seconds_into_minute(run.created) >= ON_TIME.as_secs())
    {
        fail!(
            "scheduled job {name} started job {} when its schedule did not name the time: {} s into a minute, not within {} s of one ({})",
            late.name,
            seconds_into_minute(late.created),
            ON_TIME.as_secs(),
            describe_runs(runs)
        );
    }
    if runs
        .windows(2)
        .any(|two| minute(&two[0]) == minute(&two[1]))
    {
        fail!(
            "scheduled job {name} started two jobs for the same time: {}",
            describe_runs(runs)
        );
    }
    Ok(())
}

#[then(
    expr = "within {int} seconds the scheduled job {string} has started a job when its schedule came due, and the job is complete"
)]
async fn scheduled_run_complete(
    world: &mut ConformanceWorld,
    seconds: u64,
    name: String,
) -> StepResult {
    let wait = Wait::new(seconds, format!("a job of scheduled job {name} complete"));
    loop {
        let last = match runs(world, &name).await {
            Ok(runs) => {
                as_scheduled(&name, &runs)?;
                let complete = |run: &ScheduledRun| run.job.outcome == Some(JobOutcome::Complete);
                if runs.first().is_some_and(complete) {
                    wait.done(world);
                    return Ok(());
                }
                describe_runs(&runs)
            }
            Err(error) => format!("{error:#}"),
        };
        wait.again(&last).await?;
    }
}

#[then(
    expr = "for {int} seconds the scheduled job {string} starts no job its schedule does not name"
)]
async fn scheduled_no_other(
    world: &mut ConformanceWorld,
    seconds: u64,
    name: String,
) -> StepResult {
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < until {
        as_scheduled(&name, &runs(world, &name).await?)?;
        tokio::time::sleep(super::POLL).await;
    }
    Ok(())
}

/// The most pods whose containers ran at one instant, each interval shortened by
/// [`TIMESTAMP_SLACK`]: `(count, the pods at that instant)`.
fn most_at_once(pods: &[JobPod]) -> (usize, Vec<String>) {
    let half = TIMESTAMP_SLACK / 2;
    let far = SystemTime::now() + Duration::from_secs(3_600);
    let spans: Vec<(SystemTime, SystemTime, &str)> = pods
        .iter()
        .filter_map(|pod| {
            let start = pod.started? + half;
            let end = pod.finished.unwrap_or(far).checked_sub(half)?;
            (start < end).then_some((start, end, pod.name.as_str()))
        })
        .collect();
    let mut most = (0, Vec::new());
    for (instant, _, _) in &spans {
        let at: Vec<String> = spans
            .iter()
            .filter(|(start, end, _)| start <= instant && instant < end)
            .map(|(_, _, name)| (*name).to_owned())
            .collect();
        if at.len() > most.0 {
            most = (at.len(), at);
        }
    }
    most
}

#[then(expr = "at no time did more than {int} pods of the job {string} run at once")]
async fn job_parallelism(world: &mut ConformanceWorld, limit: usize, name: String) -> StepResult {
    let job = read(world, &name).await?;
    let unstarted: Vec<&str> = job
        .pods
        .iter()
        .filter(|pod| {
            pod.started.is_none() && matches!(pod.phase, Phase::Succeeded | Phase::Running)
        })
        .map(|pod| pod.name.as_str())
        .collect();
    if !unstarted.is_empty() {
        fail!(
            "the system does not say when the containers of {} ran, so how many ran at once cannot be told",
            unstarted.join(", ")
        );
    }
    let (most, pods) = most_at_once(&job.pods);
    if most > limit {
        fail!(
            "{most} pods of job {name} ran at once, more than {limit}, by their containers' start and end times: {}",
            pods.join(", ")
        );
    }
    let seen = world.job_peaks.get(&name).cloned().unwrap_or_default();
    if seen.len() > limit {
        fail!(
            "{} pods of job {name} were reported running at once, more than {limit}: {}",
            seen.len(),
            seen.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, from: u64, to: Option<u64>) -> JobPod {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        JobPod {
            name: name.to_owned(),
            phase: Phase::Succeeded,
            started: Some(at(from)),
            finished: to.map(at),
        }
    }

    #[test]
    fn pods_that_follow_each_other_do_not_count_as_at_once() {
        let pods = [
            pod("a", 10, Some(12)),
            pod("b", 12, Some(14)),
            pod("c", 10, Some(12)),
        ];
        assert_eq!(most_at_once(&pods).0, 2);
        let three = [
            pod("a", 10, Some(14)),
            pod("b", 11, Some(14)),
            pod("c", 12, None),
        ];
        assert_eq!(
            most_at_once(&three),
            (3, vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(most_at_once(&[]).0, 0);
    }
}
