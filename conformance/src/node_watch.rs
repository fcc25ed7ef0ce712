//! False alarms: healthy nodes the system under test marked not ready.
//!
//! A system that notices a lost machine quickly is only worth it if it does not also "lose"
//! machines that are fine: a node marked not ready has its pods evicted and rescheduled, and
//! on a busy machine a tight heartbeat deadline does exactly that to healthy nodes. So for
//! the whole run the kit looks at every node's readiness (the driver's own view of it,
//! [`Driver::list_nodes`]) every [`LOOK_EVERY`], and records each time a node it saw ready
//! is next seen not ready. After each scenario, the harness takes the ones that fell within
//! it and were not on a node the scenario itself made fail or added; those are the false
//! alarms, and the report counts them.
//!
//! A look that fails (the control plane restarting, say) records nothing: readiness is
//! compared between two successful looks only. A not-ready spell shorter than a look can be
//! missed; every system here holds a node not ready for at least a heartbeat period, longer
//! than a look.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::driver::Driver;

/// How often every node's readiness is looked at.
pub const LOOK_EVERY: Duration = Duration::from_millis(250);

/// A node seen ready, then not ready at the next look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnedNotReady {
    /// The node.
    pub node: String,
    /// The look that first saw it not ready.
    pub at: Instant,
}

/// What the looks found so far.
#[derive(Debug, Default)]
struct Seen {
    /// Each node's readiness at the last successful look.
    ready: BTreeMap<String, bool>,
    /// Every time a node turned from ready to not ready, in order.
    turned: Vec<TurnedNotReady>,
    /// Successful looks.
    looks: u64,
}

impl Seen {
    /// Takes in one successful look at the nodes.
    fn look(&mut self, nodes: impl IntoIterator<Item = (String, bool)>, at: Instant) {
        let mut now = BTreeMap::new();
        for (node, ready) in nodes {
            if !ready && self.ready.get(&node) == Some(&true) {
                self.turned.push(TurnedNotReady {
                    node: node.clone(),
                    at,
                });
            }
            now.insert(node, ready);
        }
        self.ready = now;
        self.looks += 1;
    }
}

/// Looks at every node's readiness for as long as it lives.
#[derive(Debug)]
pub struct NodeWatch {
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl NodeWatch {
    /// Starts looking at `driver`'s nodes (on the current tokio runtime).
    pub fn start(driver: Arc<dyn Driver>) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn({
            let seen = Arc::clone(&seen);
            async move {
                let mut every = tokio::time::interval(LOOK_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    if let Ok(nodes) = driver.list_nodes().await {
                        let at = Instant::now();
                        seen.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .look(nodes.into_iter().map(|n| (n.name, n.ready)), at);
                    }
                }
            }
        });
        Self { seen, task }
    }

    /// The nodes that turned not ready at or after `since`.
    pub fn turned_not_ready_since(&self, since: Instant) -> Vec<TurnedNotReady> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.turned
            .iter()
            .filter(|t| t.at >= since)
            .cloned()
            .collect()
    }

    /// How many looks succeeded so far.
    pub fn looks(&self) -> u64 {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .looks
    }
}

impl Drop for NodeWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(seen: &mut Seen, nodes: &[(&str, bool)], at: Instant) {
        seen.look(nodes.iter().map(|(n, r)| ((*n).to_owned(), *r)), at);
    }

    #[test]
    fn only_a_node_seen_ready_then_not_ready_counts() {
        let t = Instant::now();
        let mut seen = Seen::default();
        // A node that joins not ready, then turns ready, is no alarm.
        look(&mut seen, &[("a", true), ("b", false)], t);
        look(&mut seen, &[("a", true), ("b", true)], t);
        assert!(seen.turned.is_empty());
        // a turns not ready: one alarm, not repeated while it stays so.
        look(&mut seen, &[("a", false), ("b", true)], t);
        look(&mut seen, &[("a", false), ("b", true)], t);
        assert_eq!(seen.turned.len(), 1);
        assert_eq!(seen.turned[0].node, "a");
        // b vanishes (removed) and comes back not ready: no alarm.
        look(&mut seen, &[("a", true)], t);
        look(&mut seen, &[("a", true), ("b", false)], t);
        assert_eq!(seen.turned.len(), 1);
        // a again: a second alarm.
        look(&mut seen, &[("a", false), ("b", false)], t);
        assert_eq!(seen.turned.len(), 2);
        assert_eq!(seen.looks, 7);
    }
}
