//! The traffic generator: continuous requests to a service while the system changes.
//!
//! Invariants are checked *during* transitions, not only at the end: a scenario starts
//! traffic to a service, changes the system (scales down, deletes a replica, rolls out),
//! and then asks how many requests failed, and when. The generator is a background task
//! that sends `GET /` through [`Driver::reach_service`] one request after the other — a
//! fresh connection each, as the driver sends them — with a short pause in between, and
//! counts the answers, the failures (with the time each happened and why), and which
//! replica answered (the probe names itself in its answer: `{"pod": ...}`).
//!
//! It is bounded: it stops by itself after [`MAX_RUN`], and when it is dropped (at the
//! latest with the scenario's world), so a failed scenario never leaves it running.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;

use crate::driver::Driver;

/// Pause between two requests of the generator.
pub const PAUSE: Duration = Duration::from_millis(20);

/// The longest a generator runs before it stops by itself.
pub const MAX_RUN: Duration = Duration::from_secs(180);

/// One failed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// When it failed, counted from the start of the traffic.
    pub at: Duration,
    /// Why, as the driver said.
    pub error: String,
}

/// What the traffic has seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests answered with success.
    pub successes: u64,
    /// Requests that failed, in order.
    pub failures: Vec<Failure>,
    /// Successful answers, by the replica that gave them (`?` when the answer named none).
    pub by_replica: BTreeMap<String, u64>,
    /// How long the traffic ran.
    pub ran: Duration,
}

impl Counts {
    /// All requests sent (answered or failed).
    pub fn total(&self) -> u64 {
        self.successes + self.failures.len() as u64
    }

    /// Counts one answer body, noting the replica it names.
    pub fn answered(&mut self, body: &str) {
        self.successes += 1;
        *self.by_replica.entry(replica_of(body)).or_default() += 1;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests in {:.1} s: {} answered, {} failed",
            self.total(),
            self.ran.as_secs_f64(),
            self.successes,
            self.failures.len()
        )?;
        if !self.by_replica.is_empty() {
            let spread: Vec<String> = self
                .by_replica
                .iter()
                .map(|(replica, count)| format!("{replica}: {count}"))
                .collect();
            write!(f, " ({})", spread.join(", "))?;
        }
        Ok(())
    }
}

/// The replica an answer of the probe names (`{"pod": ...}`), or `?`.
pub fn replica_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|answer| Some(answer.get("pod")?.as_str()?.to_owned()))
        .unwrap_or_else(|| "?".to_owned())
}

/// Traffic running in the background to one service.
pub struct Traffic {
    /// The service it is sent to.
    service: String,
    /// What it has seen so far, shared with the task.
    counts: Arc<Mutex<Counts>>,
    /// Set to stop the task after its current request.
    stop: Arc<AtomicBool>,
    /// When it started: [`Failure::at`] counts from here.
    started: Instant,
    /// The task.
    task: Option<JoinHandle<()>>,
}

impl Traffic {
    /// Starts sending requests to `service` of `namespace`; needs a Tokio runtime.
    pub fn start(driver: Arc<dyn Driver>, namespace: String, service: String) -> Self {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let task = tokio::spawn(run(
            driver,
            namespace,
            service.clone(),
            started,
            Arc::clone(&counts),
            Arc::clone(&stop),
        ));
        Self {
            service,
            counts,
            stop,
            started,
            task: Some(task),
        }
    }

    /// When the traffic started: the instant each [`Failure::at`] counts from.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The service the traffic goes to.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// What it has seen so far.
    pub fn counts(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the traffic once the request in flight is done, and returns what it saw.
    pub async fn stop(mut self) -> Counts {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            // A request is bounded by the HTTP client's timeout; a panic is counted out.
            let _ = task.await;
        }
        self.counts()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for Traffic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traffic")
            .field("service", &self.service)
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

/// The generator's loop.
async fn run(
    driver: Arc<dyn Driver>,
    namespace: String,
    service: String,
    started: Instant,
    counts: Arc<Mutex<Counts>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) && started.elapsed() < MAX_RUN {
        let answer = driver.reach_service(&namespace, &service, "/").await;
        {
            let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
            match answer {
                Ok(body) => counts.answered(&body),
                Err(error) => counts.failures.push(Failure {
                    at: started.elapsed(),
                    error: format!("{error:#}"),
                }),
            }
            counts.ran = started.elapsed();
        }
        tokio::time::sleep(PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_the_replica_they_name() {
        let mut counts = Counts::default();
        counts.answered(r#"{"pod":"web-1","version":"v1"}"#);
        counts.answered(r#"{"pod":"web-1"}"#);
        counts.answered("not json");
        counts.failures.push(Failure {
            at: Duration::from_millis(1500),
            error: "refused".to_owned(),
        });
        assert_eq!(counts.total(), 4);
        assert_eq!(counts.by_replica.get("web-1"), Some(&2));
        assert_eq!(counts.by_replica.get("?"), Some(&1));
        assert!(counts.to_string().contains("4 requests"), "{counts}");
    }
}
