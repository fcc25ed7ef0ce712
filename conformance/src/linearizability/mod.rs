//! # Linearizability: did the system behave like one copy of the data, even under faults?
//!
//! A store is *linearizable* when every operation appears to take effect at one instant
//! between its call and its return, in an order that one sequential copy of the data would
//! accept. It is the promise behind "an acknowledged write is never lost" and "a read sees
//! the last write", and exactly what a leader change, a partition or a restart can break:
//! a new leader that serves a stale read, two compare-and-sets that both succeed.
//!
//! The kit checks it the way Knossos and Porcupine do, on a *history* recorded from
//! outside: several clients run creates, reads, compare-and-set updates and deletes on a
//! few keys through the system's API ([`workload`]) while faults happen, and note when each
//! call started, when it returned and what it answered — or that the answer is unknown (a
//! timeout, a reset connection). Then:
//!
//! 1. the history is split by key: operations on different keys do not constrain each
//!    other, and a history is linearizable exactly when each key's part is (Herlihy and
//!    Wing's locality; Porcupine's *P-compositionality*). Small parts keep the search
//!    small;
//! 2. each part is searched for an order ([`search`], Wing–Gong–Lowe) that respects real
//!    time and that the sequential model of one key ([`model`]) accepts;
//! 3. a part with no such order is a *violation*, drawn as a timeline ([`timeline`]): every
//!    operation as a bar from call to return, the longest order that works, and the
//!    operation that could not come next.
//!
//! The checker is plain code over plain data; it knows nothing of Kubernetes. Its own
//! tests feed it histories known to be broken — a stale read after a leader change, a
//! lost update — and see it say so.

pub mod model;
pub mod search;
pub mod timeline;
pub mod workload;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use model::{Input, Output};
use search::Outcome;

/// How many states the search explores for one key before it gives up.
pub const SEARCH_BUDGET: u64 = 2_000_000;

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Which client ran it (for the timeline).
    pub client: usize,
    /// The key it was on.
    pub key: String,
    /// What was asked.
    pub input: Input,
    /// What was answered ([`Output::Unknown`] if nobody knows).
    pub output: Output,
    /// When it was called, in microseconds since the history began.
    pub invoked: u64,
    /// When it returned, in microseconds since the history began; `None` when the outcome
    /// is unknown: it may take effect at any time after the call, or never.
    pub completed: Option<u64>,
}

/// A history being recorded by several clients at once. Cheap to clone; the clones share
/// the history.
#[derive(Clone, Debug)]
pub struct Recorder {
    start: Instant,
    operations: Arc<Mutex<Vec<Operation>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// A new, empty history starting now.
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            operations: Arc::default(),
        }
    }

    /// Microseconds since the history began.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records an operation called at `invoked` (from [`Recorder::now`]) that answered
    /// `output` just now.
    pub fn record(&self, client: usize, key: &str, input: Input, invoked: u64, output: Output) {
        let completed = (output != Output::Unknown).then(|| self.now());
        let operation = Operation {
            client,
            key: key.to_owned(),
            input,
            output,
            invoked,
            completed,
        };
        self.operations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(operation);
    }

    /// How many operations have returned with a known outcome so far.
    pub fn completed(&self) -> usize {
        self.operations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|op| op.completed.is_some())
            .count()
    }

    /// The operations recorded so far.
    pub fn operations(&self) -> Vec<Operation> {
        self.operations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The verdict on one key's part of a history.
#[derive(Clone, Debug)]
pub struct KeyVerdict {
    /// The key.
    pub key: String,
    /// Its operations, in the order they were called.
    pub operations: Vec<Operation>,
    /// What the search found.
    pub outcome: Outcome,
}

/// The verdict on a whole history.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// One verdict per key, in key order.
    pub keys: Vec<KeyVerdict>,
}

impl Verdict {
    /// How many operations were checked, over all keys.
    pub fn operations(&self) -> usize {
        self.keys.iter().map(|k| k.operations.len()).sum()
    }

    /// Whether every key's part has an order.
    pub fn is_linearizable(&self) -> bool {
        self.keys
            .iter()
            .all(|k| matches!(k.outcome, Outcome::Linearizable(_)))
    }

    /// The keys without an order, or for which the search gave up.
    pub fn failures(&self) -> impl Iterator<Item = &KeyVerdict> {
        self.keys
            .iter()
            .filter(|k| !matches!(k.outcome, Outcome::Linearizable(_)))
    }

    /// A line for the step's output: how much was checked and what was found.
    pub fn summary(&self) -> String {
        let unknown: usize = self
            .keys
            .iter()
            .flat_map(|k| &k.operations)
            .filter(|op| op.output == Output::Unknown)
            .count();
        let bad = self.failures().count();
        format!(
            "{} operations on {} keys ({unknown} with an unknown outcome): {}",
            self.operations(),
            self.keys.len(),
            if bad == 0 {
                "linearizable".to_owned()
            } else {
                format!("{bad} key(s) not linearizable")
            }
        )
    }
}

/// Checks a history: every key must start absent.
pub fn check(operations: &[Operation]) -> Verdict {
    check_with_budget(operations, SEARCH_BUDGET)
}

/// [`check`] with a search budget per key.
pub fn check_with_budget(operations: &[Operation], budget: u64) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in operations {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    let keys = by_key
        .into_iter()
        .map(|(key, mut ops)| {
            ops.sort_by_key(|op| (op.invoked, op.client));
            let outcome = search::search(&ops, &None, budget);
            KeyVerdict {
                key: key.to_owned(),
                operations: ops,
                outcome,
            }
        })
        .collect();
    Verdict { keys }
}

#[cfg(test)]
mod tests;
