//! Watches: every change under a prefix after a revision, in order and without gaps.
//!
//! A watch does not subscribe to a channel of events that could overflow and lose some.
//! It keeps the next revision it owes its reader and, whenever the store's revision moves,
//! reads the history from there. So a slow reader never misses an event; it only falls
//! behind, and if it falls behind the retained window it gets [`StoreError::Compacted`].

use std::sync::Arc;

use tokio::sync::watch;

use super::StoreError;
use super::state::{Event, StateMachine};

/// How many events one read of the history returns at most.
const BATCH: usize = 256;

/// A stream of [`Event`]s; see the module docs.
pub struct WatchStream {
    state: Arc<StateMachine>,
    prefix: String,
    /// Events with revision greater than this are still owed.
    after: u64,
    revisions: watch::Receiver<u64>,
    buffered: std::collections::VecDeque<Arc<Event>>,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("prefix", &self.prefix)
            .field("after", &self.after)
            .finish()
    }
}

impl WatchStream {
    pub(super) fn new(
        state: Arc<StateMachine>,
        prefix: String,
        after: u64,
    ) -> Result<WatchStream, StoreError> {
        state.retained_after(after)?;
        let revisions = state.subscribe();
        Ok(WatchStream {
            state,
            prefix,
            after,
            revisions,
            buffered: Default::default(),
        })
    }

    /// The revision up to which this watch has delivered (or skipped) every event.
    pub fn revision(&self) -> u64 {
        self.after
    }

    /// The next event under the prefix, waiting for one if need be. `None` once the store
    /// has stopped. Events are shared by every watch that reads them.
    pub async fn next(&mut self) -> Option<Result<Arc<Event>, StoreError>> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Some(Ok(event));
            }
            if let Err(e) = self.fill() {
                return Some(Err(e));
            }
            if self.buffered.is_empty() {
                // Wait for the revision to move past what we have read.
                self.revisions.changed().await.ok()?;
            }
        }
    }

    /// Reads the history after `self.after` into the buffer, keeping only our prefix.
    fn fill(&mut self) -> Result<(), StoreError> {
        loop {
            let current = self.state.revision();
            if current <= self.after {
                return Ok(());
            }
            let read = self.state.history_after(self.after, BATCH, &self.prefix)?;
            let Some(through) = read.through else {
                self.after = current;
                return Ok(());
            };
            self.after = through;
            self.buffered.extend(read.events);
            if !self.buffered.is_empty() {
                return Ok(());
            }
        }
    }
}
