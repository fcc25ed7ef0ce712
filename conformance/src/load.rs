//! The load profile: a background load of costly requests that rises, holds, and stops.
//!
//! An autoscaler follows CPU use, so a scenario about it needs a load that is real and
//! the same on every machine. The [`Traffic`](crate::traffic::Traffic) generator sends
//! one request after the other: how many it sends a second depends on how fast the
//! system answers, so the CPU it asks for would too. A [`Load`] instead sends requests
//! at a *rate* its [`Profile`] sets, each costing the same CPU (`GET /?cpu_ms=N`: the
//! probe spends N milliseconds of CPU on that request only), so the CPU it asks of the
//! system — rate × cost — is set by the scenario, not by the machine. It does not wait
//! for an answer before sending the next request: each request is sent on its own, as
//! many clients would, and a slow answer only means more requests in flight (at most
//! [`MAX_IN_FLIGHT`]; one over that is counted as failed, not sent).
//!
//! A profile is a list of [`Stage`]s: the rate rises (or falls) in a straight line from
//! where the stage before left it to the stage's own rate over its ramp, then holds
//! there; after the last stage the load stops by itself. The `k`-th request goes out as
//! soon as the area under the rate reaches `k` ([`Profile::due_by`]), so a ramp from 0 to
//! 20 a second over 10 seconds sends 100 requests, 25 of them in its first half.
//!
//! The load counts its own answers and failures ([`Counts`], with the replica that
//! answered each); it is bounded like the traffic generator — no longer than
//! [`MAX_RUN`], and stopped when dropped ([`Background`]), its requests in flight with it
//! (they are the load task's own, and go with it).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::ensure;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::driver::Driver;
use crate::traffic::{Background, Counts, Failure, MAX_RUN};

/// The most requests a load keeps in flight: past it the system is not answering, and a
/// request more is counted as failed instead of piling up.
pub const MAX_IN_FLIGHT: usize = 200;

/// How often the load looks whether a request is due (a request is never late by more).
const TICK: Duration = Duration::from_millis(5);

/// One stage of a profile: the rate rises (or falls) to `rate` over `ramp`, then holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// Requests a second at the end of the ramp, and through the hold.
    pub rate: f64,
    /// How long the rate takes to get there from the stage before's (from 0 for the
    /// first).
    pub ramp: Duration,
    /// How long it then holds.
    pub hold: Duration,
}

/// How a load goes: the CPU each request costs, and its stages; it stops after the last.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Milliseconds of CPU each request costs the replica that answers it.
    pub cpu_ms: u32,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

impl Profile {
    /// A profile of `stages` whose requests cost `cpu_ms` each; fails if it would run
    /// longer than [`MAX_RUN`] or a rate is not a number of requests a second.
    pub fn new(cpu_ms: u32, stages: Vec<Stage>) -> anyhow::Result<Self> {
        let profile = Self { cpu_ms, stages };
        ensure!(
            profile.duration() <= MAX_RUN,
            "a load of {} s is longer than a load may run, {} s",
            profile.duration().as_secs(),
            MAX_RUN.as_secs()
        );
        ensure!(
            profile
                .stages
                .iter()
                .all(|s| s.rate.is_finite() && s.rate >= 0.0),
            "a load's rates must be requests a second, 0 or more"
        );
        Ok(profile)
    }

    /// How long the load runs before it stops.
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.ramp + s.hold).sum()
    }

    /// Each stage with the rate it starts from and when it starts.
    fn timed(&self) -> impl Iterator<Item = (f64, Duration, &Stage)> {
        let mut from = (0.0, Duration::ZERO);
        self.stages.iter().map(move |stage| {
            let start = from;
            from = (stage.rate, start.1 + stage.ramp + stage.hold);
            (start.0, start.1, stage)
        })
    }

    /// When the load holds at `rate`: from the end of the first stage that rises (or
    /// falls) to it to the end of that stage; `None` if no stage does.
    pub fn hold_at(&self, rate: f64) -> Option<(Duration, Duration)> {
        self.timed()
            .find(|(_, _, stage)| stage.rate == rate)
            .map(|(_, start, stage)| (start + stage.ramp, start + stage.ramp + stage.hold))
    }

    /// How many requests are due `at` this time since the load started: the area under
    /// the rate until then, rounded down.
    pub fn due_by(&self, at: Duration) -> u64 {
        let area: f64 = self
            .timed()
            .map(|(from, start, stage)| {
                let ramp = stage.ramp.as_secs_f64();
                let t = at.saturating_sub(start).as_secs_f64();
                let rising = t.min(ramp);
                let climbed = if ramp > 0.0 {
                    (stage.rate - from) * rising * rising / (2.0 * ramp)
                } else {
                    0.0
                };
                let holding = (t - ramp).clamp(0.0, stage.hold.as_secs_f64());
                from * rising + climbed + stage.rate * holding
            })
            .sum();
        // A hair over, so that 25.0 computed as 24.999… still counts 25.
        (area + 1e-9).floor() as u64
    }

    /// The most CPU the load asks for, in millicores: its highest rate times the cost.
    pub fn peak_millicores(&self) -> f64 {
        let peak = self.stages.iter().map(|s| s.rate).fold(0.0, f64::max);
        peak * f64::from(self.cpu_ms)
    }
}

/// A load running in the background against one service.
pub struct Load {
    /// How it goes.
    profile: Profile,
    /// What it has seen so far, shared with the task.
    counts: Arc<Mutex<Counts>>,
    /// When it started: the profile's times count from here.
    started: Instant,
    /// The task.
    task: Background,
}

impl Load {
    /// Starts sending `GET /?cpu_ms=N` to `service` of `namespace` as `profile` says,
    /// through [`Driver::reach_service`]; needs a Tokio runtime.
    pub fn start(
        driver: Arc<dyn Driver>,
        namespace: String,
        service: String,
        profile: Profile,
    ) -> Self {
        let path = format!("/?cpu_ms={}", profile.cpu_ms);
        let send = move || {
            let (driver, namespace, service, path) = (
                Arc::clone(&driver),
                namespace.clone(),
                service.clone(),
                path.clone(),
            );
            async move {
                let answer = driver.reach_service(&namespace, &service, &path).await;
                answer.map_err(|error| format!("{error:#}"))
            }
        };
        let counts = Arc::new(Mutex::new(Counts::default()));
        let started = Instant::now();
        let task = Background::spawn(run(profile.clone(), started, send, Arc::clone(&counts)));
        Self {
            profile,
            counts,
            started,
            task,
        }
    }

    /// How it goes.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// How long it has been running (or ran, and then stopped).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// What it has seen so far.
    pub fn counts(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until it has stopped by itself and its last requests are answered, and
    /// returns what it saw. Waiting again returns the same.
    pub async fn finish(&mut self) -> Counts {
        self.task.join().await;
        self.counts()
    }
}

impl std::fmt::Debug for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Load")
            .field("profile", &self.profile)
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

/// The load's loop: sends each request when it is due, each on its own, until the
/// profile ends; then waits for the answers still out.
async fn run<F, A>(profile: Profile, started: Instant, send: F, counts: Arc<Mutex<Counts>>)
where
    F: Fn() -> A,
    A: Future<Output = Result<String, String>> + Send + 'static,
{
    let record = |at: Duration, answer: Result<String, String>| {
        let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        match answer {
            Ok(body) => counts.answered_at(&body, at),
            Err(error) => counts.failures.push(Failure { at, error }),
        }
        counts.ran = counts.ran.max(at);
    };
    let end = profile.duration();
    let mut in_flight = JoinSet::new();
    let mut sent = 0;
    loop {
        let now = started.elapsed();
        let due = profile.due_by(now.min(end));
        while sent < due {
            if in_flight.len() < MAX_IN_FLIGHT {
                let request = send();
                in_flight.spawn(async move { (request.await, started.elapsed()) });
            } else {
                let error = format!("{MAX_IN_FLIGHT} requests in flight already: not sent");
                record(now, Err(error));
            }
            sent += 1;
        }
        while let Some(Ok((answer, at))) = in_flight.try_join_next() {
            record(at, answer);
        }
        if now >= end {
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    while let Some(done) = in_flight.join_next().await {
        if let Ok((answer, at)) = done {
            record(at, answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(rate: f64, ramp: u64, hold: u64) -> Stage {
        Stage {
            rate,
            ramp: Duration::from_secs(ramp),
            hold: Duration::from_secs(hold),
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_ramp_sends_the_area_under_its_rate() {
        let profile = Profile::new(10, vec![stage(20.0, 10, 5)]).expect("a short profile");
        assert_eq!(profile.due_by(Duration::ZERO), 0);
        // 20 a second reached in 10 s: after 5 s the rate is 10, the area 25.
        assert_eq!(profile.due_by(secs(5.0)), 25);
        assert_eq!(profile.due_by(secs(10.0)), 100);
        assert_eq!(profile.due_by(secs(12.5)), 150);
        assert_eq!(profile.due_by(secs(15.0)), 200);
        // Stopped: nothing more is due.
        assert_eq!(profile.due_by(secs(60.0)), 200);
        assert_eq!(profile.duration(), secs(15.0));
        assert_eq!(profile.peak_millicores(), 200.0);
    }

    #[test]
    fn a_second_stage_rises_from_where_the_first_held() {
        let profile =
            Profile::new(10, vec![stage(10.0, 2, 3), stage(30.0, 4, 1)]).expect("a short profile");
        // 10 (ramp) + 30 (hold), then from 10 to 30 over 4 s: 80, then 30 more.
        assert_eq!(profile.due_by(secs(5.0)), 40);
        assert_eq!(profile.due_by(secs(7.0)), 40 + 30);
        assert_eq!(profile.due_by(secs(9.0)), 120);
        assert_eq!(profile.due_by(secs(10.0)), 150);
        assert_eq!(profile.hold_at(10.0), Some((secs(2.0), secs(5.0))));
        assert_eq!(profile.hold_at(30.0), Some((secs(9.0), secs(10.0))));
        assert_eq!(profile.hold_at(20.0), None);
    }

    #[test]
    fn a_load_longer_than_a_load_may_run_is_refused() {
        let long = stage(1.0, 0, MAX_RUN.as_secs() + 1);
        assert!(Profile::new(10, vec![long]).is_err());
        assert!(Profile::new(10, vec![stage(f64::NAN, 1, 1)]).is_err());
    }

    /// The requests a run sends, and when, with time paused: the rate is the profile's
    /// whatever the answers take, and the load stops by itself at its end.
    #[tokio::test(start_paused = true)]
    async fn the_load_keeps_its_rate_whatever_the_answers_take_and_stops_by_itself() {
        let profile = Profile::new(10, vec![stage(20.0, 10, 5)]).expect("a short profile");
        let counts = Arc::new(Mutex::new(Counts::default()));
        let sent = Arc::new(Mutex::new(0u64));
        let sender = Arc::clone(&sent);
        let send = move || {
            *sender.lock().expect("not poisoned") += 1;
            async {
                // Each answer takes a second: twenty in flight at the peak.
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(r#"{"pod": "web-1"}"#.to_owned())
            }
        };
        let started = Instant::now();
        let task = tokio::spawn(run(profile, started, send, Arc::clone(&counts)));
        // Just after 5 s (the load looks every 5 ms): half the ramp, a quarter of its area.
        tokio::time::sleep(secs(5.0025)).await;
        assert_eq!(*sent.lock().expect("not poisoned"), 25);
        task.await.expect("the load ends");
        // Stopped at 15 s, once the last answers were in, a second later.
        let took = started.elapsed();
        assert!(took >= secs(16.0) && took < secs(16.1), "{took:?}");
        let counts = counts.lock().expect("not poisoned").clone();
        assert_eq!(*sent.lock().expect("not poisoned"), 200);
        assert_eq!(counts.successes, 200);
        assert_eq!(counts.by_replica.get("web-1"), Some(&200));
    }
}
