//! The Wing–Gong–Lowe search: is there an order of one key's operations that the
//! sequential model accepts and that respects real time?
//!
//! The history becomes a list of events, each operation's *call* and *return* sorted by
//! time. Walking the list from the front, a call may be *linearized* — taken as having
//! happened now — if the model accepts its answer in the current state; it is then lifted
//! out of the list with its return, and the walk starts again from the front. Meeting a
//! return whose call is still in the list means that operation had to happen before this
//! point but could not: the search undoes the last choice and tries the next call instead.
//! The history is linearizable when the list empties.
//!
//! Lowe's addition makes it practical: a cache of (set of linearized operations, model
//! state) pairs already explored; reaching one again cannot succeed where it failed
//! before, so the search skips it. Lifting and putting back are O(1) on a doubly linked
//! list held in two index arrays (Knuth's dancing links).
//!
//! An operation whose outcome is unknown returns "at infinity": it may be placed anywhere
//! after its call, including after everything else, which is the same as never.

use std::collections::HashSet;

use super::Operation;
use super::model::{State, step};

/// What the search concluded for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An order exists; it is given as indices into the key's operations.
    Linearizable(Vec<usize>),
    /// No order exists. `longest` is the longest order found that the model accepts;
    /// `stuck` is an operation that had to come next (its return was reached) and could
    /// not, in the state that order leaves.
    Violation {
        /// The longest accepted order, as indices into the key's operations.
        longest: Vec<usize>,
        /// The operation that could not come next.
        stuck: usize,
    },
    /// The search gave up after exploring this many states, without an answer.
    GaveUp(u64),
}

/// One event of the list: a call or a return of an operation.
#[derive(Clone, Copy, Debug)]
struct Event {
    operation: usize,
    call: bool,
    /// For a call, the index of its return event.
    partner: usize,
}

/// The list of events, with the head sentinel at index 0 and the tail sentinel last.
struct Links {
    prev: Vec<usize>,
    next: Vec<usize>,
}

impl Links {
    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        self.prev[n] = i;
    }
}

/// Searches for an order of `operations` (all on one key) that starts from `initial`,
/// exploring at most `budget` states.
pub fn search(operations: &[Operation], initial: &State, budget: u64) -> Outcome {
    // Events 1..=2n, sorted by time; at equal times calls come first, so that two
    // operations whose times touch count as concurrent rather than ordered.
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(operations.len() * 2);
    for (i, op) in operations.iter().enumerate() {
        order.push((op.invoked, true, i));
        order.push((op.completed.unwrap_or(u64::MAX), false, i));
    }
    order.sort_by_key(|&(time, call, i)| (time, !call, i));
    let tail = order.len() + 1;
    let mut events = vec![
        Event {
            operation: usize::MAX,
            call: false,
            partner: 0,
        };
        tail + 1
    ];
    let mut return_of = vec![0; operations.len()];
    for (slot, &(_, call, i)) in order.iter().enumerate() {
        events[slot + 1] = Event {
            operation: i,
            call,
            partner: 0,
        };
        if !call {
            return_of[i] = slot + 1;
        }
    }
    for event in events.iter_mut().skip(1).take(order.len()) {
        if event.call {
            event.partner = return_of[event.operation];
        }
    }
    let mut links = Links {
        prev: (0..=tail).map(|i| i.saturating_sub(1)).collect(),
        next: (0..=tail).map(|i| (i + 1).min(tail)).collect(),
    };

    let mut linearized = vec![0u64; operations.len().div_ceil(64)];
    let mut state = initial.clone();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut longest: Vec<usize> = Vec::new();
    // The operation that could not follow the longest order: the first return met while
    // the stack was exactly that order.
    let mut stuck = None;
    let mut explored = 0u64;
    let mut at = links.next[0];
    while links.next[0] != tail {
        explored += 1;
        if explored > budget {
            return Outcome::GaveUp(budget);
        }
        let event = events[at];
        if event.call {
            let op = &operations[event.operation];
            if let Some(next) = step(&state, &op.input, &op.output) {
                let (word, bit) = (event.operation / 64, 1u64 << (event.operation % 64));
                linearized[word] |= bit;
                if seen.insert((linearized.clone(), next.clone())) {
                    stack.push((at, std::mem::replace(&mut state, next)));
                    links.unlink(at);
                    links.unlink(event.partner);
                    if stack.len() > longest.len() {
                        longest = stack.iter().map(|&(e, _)| events[e].operation).collect();
                        stuck = None;
                    }
                    at = links.next[0];
                    continue;
                }
                linearized[word] &= !bit;
            }
            at = links.next[at];
        } else {
            // This operation has returned and was never placed: undo the last choice.
            if stack.len() == longest.len() && stuck.is_none() {
                stuck = Some(event.operation);
            }
            let Some((call, previous)) = stack.pop() else {
                return Outcome::Violation {
                    longest,
                    stuck: stuck.unwrap_or(event.operation),
                };
            };
            state = previous;
            let operation = events[call].operation;
            linearized[operation / 64] &= !(1u64 << (operation % 64));
            links.relink(events[call].partner);
            links.relink(call);
            at = links.next[call];
        }
    }
    Outcome::Linearizable(stack.iter().map(|&(e, _)| events[e].operation).collect())
}
