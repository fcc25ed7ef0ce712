//! The scheduling queue: which pending pods to try next, and which to leave alone until
//! something changes.
//!
//! Two sets, as upstream's `SchedulingQueue` has (minus its back-off stage):
//! - **active** — pods to try in the next round, first in first out, each at most once;
//! - **parked** — pods that fit nowhere last time ("unschedulableQ" upstream). Trying them
//!   again is pointless until the cluster changes: a node is added or changes, a pod
//!   leaves a node, or the retry interval passes (a backstop for changes nobody signals).
//!   [`Queue::retry_parked`] moves them all back to active.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fmt;

/// A pod's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Pods waiting to be scheduled.
#[derive(Debug, Default)]
pub struct Queue {
    /// Pods to try, in arrival order.
    active: VecDeque<PodKey>,
    /// The same pods, to keep each in `active` at most once.
    queued: HashSet<PodKey>,
    /// Pods that fit nowhere, waiting for a change (ordered so retries are reproducible).
    parked: BTreeSet<PodKey>,
}

impl Queue {
    /// Queues the pod for the next round (taking it out of the parked set).
    pub fn add(&mut self, key: PodKey) {
        self.parked.remove(&key);
        if self.queued.insert(key.clone()) {
            self.active.push_back(key);
        }
    }

    /// The next pod to try.
    pub fn pop(&mut self) -> Option<PodKey> {
        let key = self.active.pop_front()?;
        self.queued.remove(&key);
        Some(key)
    }

    /// Sets the pod aside until something changes.
    pub fn park(&mut self, key: PodKey) {
        if self.queued.remove(&key) {
            self.active.retain(|k| k != &key);
        }
        self.parked.insert(key);
    }

    /// Whether the pod is parked.
    pub fn is_parked(&self, key: &PodKey) -> bool {
        self.parked.contains(key)
    }

    /// Moves every parked pod back to active: the cluster changed, they may fit now.
    pub fn retry_parked(&mut self) {
        for key in std::mem::take(&mut self.parked) {
            self.add(key);
        }
    }

    /// Drops the pod entirely (it was bound, deleted, or is not ours any more).
    pub fn forget(&mut self, key: &PodKey) {
        self.parked.remove(key);
        if self.queued.remove(key) {
            self.active.retain(|k| k != key);
        }
    }

    /// How many pods are active and parked.
    pub fn counts(&self) -> (usize, usize) {
        (self.active.len(), self.parked.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> PodKey {
        PodKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn pods_come_out_in_arrival_order_once_each() {
        let mut q = Queue::default();
        for n in ["a", "b", "a", "c"] {
            q.add(key(n));
        }
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|k| k.name).collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn parked_pods_wait_until_retried() {
        let mut q = Queue::default();
        q.add(key("a"));
        let a = q.pop().expect("a");
        q.park(a);
        assert!(q.is_parked(&key("a")));
        assert_eq!(q.pop(), None);
        assert_eq!(q.counts(), (0, 1));
        q.retry_parked();
        assert!(!q.is_parked(&key("a")));
        assert_eq!(q.pop(), Some(key("a")));
    }

    #[test]
    fn adding_a_parked_pod_makes_it_active_and_forgetting_drops_it() {
        let mut q = Queue::default();
        q.park(key("a"));
        q.add(key("a"));
        assert_eq!(q.counts(), (1, 0));
        q.add(key("b"));
        q.forget(&key("a"));
        q.park(key("c"));
        q.forget(&key("c"));
        assert_eq!(q.counts(), (1, 0));
        assert_eq!(q.pop(), Some(key("b")));
    }
}
