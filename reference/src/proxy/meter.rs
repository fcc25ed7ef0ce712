//! What the proxy sees of each backend's load: the connections it opened to it over the
//! last [`WINDOW`] (a rate) and those open now (in flight) — the service proxy's view that
//! an autoscaler can scale on, as Kubernetes' would through a custom metrics adapter fed
//! by a mesh's proxies.
//!
//! The proxy forwards TCP, not HTTP: what it counts are connections. For clients that
//! send one request a connection (the kit's traffic, `curl`, anything with
//! `Connection: close`) that is the request rate; a client that keeps a connection alive
//! counts once for all its requests.
//!
//! A meter is shared by the proxy (which counts) and the node agents of the same process
//! (which report it at `GET /stats/proxy`, for the apiserver to serve
//! `custom.metrics.k8s.io`). Every meter has an id, so that the apiserver counts a proxy
//! once when several agents report it (`shipshape up` runs one proxy for all its nodes).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How far back the rate looks.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One backend's counts.
#[derive(Debug, Default)]
struct Backend {
    /// When each connection of the window was opened, oldest first.
    opened: VecDeque<Instant>,
    in_flight: u64,
}

#[derive(Debug)]
struct Counts {
    started: Instant,
    backends: HashMap<IpAddr, Backend>,
}

/// The counts of one proxy; cheap to clone (clones share them).
#[derive(Clone, Debug)]
pub struct Meter {
    id: String,
    counts: Arc<Mutex<Counts>>,
}

impl Default for Meter {
    fn default() -> Self {
        let id: u64 = rand::random();
        Meter {
            id: format!("{id:016x}"),
            counts: Arc::new(Mutex::new(Counts {
                started: Instant::now(),
                backends: HashMap::new(),
            })),
        }
    }
}

/// A connection in flight to a backend: counted from [`Meter::opened`] until dropped.
pub struct InFlight {
    meter: Meter,
    backend: IpAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(b) = self.meter.counts().backends.get_mut(&self.backend) {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
    }
}

impl Meter {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a connection opened to `backend` at `now`; it is in flight until the guard
    /// returned is dropped.
    pub fn opened(&self, backend: IpAddr, now: Instant) -> InFlight {
        let mut counts = self.counts();
        let b = counts.backends.entry(backend).or_default();
        b.opened.push_back(now);
        b.in_flight += 1;
        InFlight {
            meter: self.clone(),
            backend,
        }
    }

    /// What the meter saw, at `now`, as `GET /stats/proxy` answers it:
    /// `{"proxy": id, "windowSeconds": 10, "backends": [{"ip", "perSecond", "inFlight"}]}`.
    /// The rate is over the window, or over the meter's life while that is shorter.
    pub fn report(&self, now: Instant) -> Value {
        let mut counts = self.counts();
        let span = now
            .saturating_duration_since(counts.started)
            .clamp(Duration::from_secs(1), WINDOW);
        counts.backends.retain(|_, b| {
            while b
                .opened
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) > WINDOW)
            {
                b.opened.pop_front();
            }
            !b.opened.is_empty() || b.in_flight > 0
        });
        let backends: Vec<Value> = counts
            .backends
            .iter()
            .map(|(ip, b)| {
                let per_second = b.opened.len() as f64 / span.as_secs_f64();
                json!({"ip": ip.to_string(), "perSecond": per_second, "inFlight": b.in_flight})
            })
            .collect();
        json!({"proxy": self.id, "windowSeconds": WINDOW.as_secs(), "backends": backends})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_cover_the_window_and_in_flight_ends_with_the_connection() {
        let meter = Meter::default();
        let start = meter.counts().started;
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        for i in 0..20 {
            drop(meter.opened(a, start + Duration::from_millis(500 * i)));
        }
        let open = meter.opened(b, start + Duration::from_secs(9));
        let report = meter.report(start + Duration::from_secs(10));
        let backend = |ip: IpAddr| {
            let mut each = report["backends"].as_array().into_iter().flatten();
            each.find(|x| x["ip"] == ip.to_string()).cloned()
        };
        assert_eq!(backend(a).expect("a")["perSecond"], 2.0);
        assert_eq!(backend(a).expect("a")["inFlight"], 0);
        assert_eq!(backend(b).expect("b")["inFlight"], 1);
        drop(open);
        // Twenty seconds on, a's connections have left the window, b's too: both go.
        let later = meter.report(start + Duration::from_secs(30));
        assert_eq!(later["backends"], json!([]));
        // A young meter's rate is over its life, not the whole window.
        let young = Meter::default();
        let t = young.counts().started;
        for _ in 0..4 {
            drop(young.opened(a, t));
        }
        let r = young.report(t + Duration::from_secs(2));
        assert_eq!(r["backends"][0]["perSecond"], 2.0);
    }
}
