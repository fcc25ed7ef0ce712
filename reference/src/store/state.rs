//! The state machine: key-values, revisions and the event history, kept in one sled tree.
//!
//! Layout of the tree (one tree, so one `sled::Batch` applies an entry atomically):
//!
//! | key | value |
//! |---|---|
//! | `k` + key | [`Record`]: create revision, mod revision, value |
//! | `h` + revision (big-endian) | [`Event`]: what that revision changed |
//! | `m:applied` | the last applied Raft index |
//! | `m:revision` | the current revision |
//! | `m:oldest` | the oldest revision a watch may start after |
//! | `p` + member id (big-endian) | [`MemberRecord`]: a member added (its peer address) or removed |
//!
//! Only the raft driver task calls [`StateMachine::apply`]; readers take the `RwLock`'s read
//! side so that a list never sees half of an entry.
//!
//! The newest [`RECENT_EVENTS`] events are also kept in memory, in order ([`Recent`]).
//! Watchers that keep up — nearly all of them — read those instead of the history tree: a
//! thousand watchers of pods, each reading and decoding every event of the tree (node
//! heartbeats included) to keep the few under its prefix, were most of what a write cost
//! at scale. A watcher further behind reads the tree, as before; both give the same events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use super::codec::{Reader, decode_ops, push_bytes};
use super::{Precondition, StoreError, WriteResult};

const APPLIED: &[u8] = b"m:applied";
const REVISION: &[u8] = b"m:revision";
const OLDEST: &[u8] = b"m:oldest";

/// How many of the newest events are kept in memory for watchers ([`Recent`]): a few
/// seconds of writes at a thousand a second.
pub(super) const RECENT_EVENTS: usize = 4096;

/// The newest events, in revision order: every event with a revision greater than
/// `complete_after` (up to the current revision) is here.
#[derive(Debug)]
struct Recent {
    /// Shared with every watch that reads them, not copied for each.
    events: VecDeque<Arc<Event>>,
    complete_after: u64,
}

impl Recent {
    /// Nothing kept: only events after `revision` will be.
    fn empty_after(revision: u64) -> Recent {
        Recent {
            events: VecDeque::new(),
            complete_after: revision,
        }
    }

    /// Adds the events of one revision; forgets the oldest revisions beyond the capacity
    /// (whole revisions, so a revision is never half kept).
    fn push(&mut self, events: Vec<Event>) {
        self.events.extend(events.into_iter().map(Arc::new));
        while self.events.len() > RECENT_EVENTS {
            let Some(oldest) = self.events.front().map(|e| e.revision()) else {
                break;
            };
            while self.events.front().is_some_and(|e| e.revision() == oldest) {
                self.events.pop_front();
            }
            self.complete_after = oldest;
        }
    }
}

/// What one read of the history found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct HistoryRead {
    /// The events under the prefix, in order.
    pub(super) events: Vec<Arc<Event>>,
    /// Every event up to this revision was looked at (the reader's next `after`); `None`
    /// if there was none to look at.
    pub(super) through: Option<u64>,
}

/// What the members' configuration changes said about one member. The members a control
/// plane started with have no record: their addresses come from each member's own flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum MemberRecord {
    /// Added while the control plane ran, reachable at this peer address (`HOST:PORT`).
    Added(String),
    /// Removed; its id is never used again.
    Removed,
}

impl MemberRecord {
    fn encode(&self) -> Vec<u8> {
        match self {
            MemberRecord::Added(address) => [&[0], address.as_bytes()].concat(),
            MemberRecord::Removed => vec![1],
        }
    }

    fn decode(bytes: &[u8]) -> Result<MemberRecord, StoreError> {
        let corrupt = || StoreError::Corrupt("a member record does not decode".into());
        match bytes.split_first().ok_or_else(corrupt)? {
            (0, address) => Ok(MemberRecord::Added(String::from_utf8_lossy(address).into())),
            (1, []) => Ok(MemberRecord::Removed),
            _ => Err(corrupt()),
        }
    }
}

fn member_key(id: u64) -> Vec<u8> {
    [b"p".as_slice(), &id.to_be_bytes()].concat()
}

/// A stored value and the revisions that created and last modified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The value (an object's JSON, for the apiserver).
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: u64,
    /// The revision that last wrote the key; the object's `resourceVersion`.
    pub mod_revision: u64,
}

impl Record {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.value.len());
        out.extend_from_slice(&self.create_revision.to_be_bytes());
        out.extend_from_slice(&self.mod_revision.to_be_bytes());
        push_bytes(&mut out, &self.value);
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Record, StoreError> {
        let mut r = Reader::new(bytes);
        Ok(Record {
            create_revision: r.u64()?,
            mod_revision: r.u64()?,
            value: r.bytes()?.to_vec(),
        })
    }
}

/// What kind of change an [`Event`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was written (created if `previous` is `None`).
    Put,
    /// The key was deleted.
    Delete,
}

/// One change to one key, as watches deliver it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key.
    pub key: String,
    /// The record after a put; for a delete, the record as it was, with `mod_revision`
    /// set to the deleting revision.
    pub record: Record,
    /// The record before the change, if the key existed.
    pub previous: Option<Record>,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> u64 {
        self.record.mod_revision
    }

    fn encode(&self) -> Vec<u8> {
        // 0 for a put, 1 for a delete.
        let mut out = vec![u8::from(self.kind == EventKind::Delete)];
        push_bytes(&mut out, self.key.as_bytes());
        push_bytes(&mut out, &self.record.encode());
        out.push(u8::from(self.previous.is_some()));
        if let Some(p) = &self.previous {
            push_bytes(&mut out, &p.encode());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Event, StoreError> {
        let mut r = Reader::new(bytes);
        Ok(Event {
            kind: match r.u8()? {
                0 => EventKind::Put,
                _ => EventKind::Delete,
            },
            key: r.string()?,
            record: Record::decode(r.bytes()?)?,
            previous: match r.u8()? {
                0 => None,
                _ => Some(Record::decode(r.bytes()?)?),
            },
        })
    }
}

fn data_key(key: &str) -> Vec<u8> {
    [b"k", key.as_bytes()].concat()
}

fn history_key(revision: u64) -> Vec<u8> {
    [b"h".as_slice(), &revision.to_be_bytes()].concat()
}

fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<u64, StoreError> {
    tree.get(key)?.map_or(Ok(0), |v| Reader::new(&v).u64())
}

/// The read side of `lock`, even if a holder panicked.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// The write side of `lock`, even if a holder panicked.
fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// The state tree of `db`, with its revision and oldest revision.
fn open_state(db: &sled::Db) -> Result<(sled::Tree, u64, u64), StoreError> {
    let tree = db.open_tree("state")?;
    let revision = read_u64(&tree, REVISION)?;
    let oldest = read_u64(&tree, OLDEST)?;
    Ok((tree, revision, oldest))
}

/// What one read of the history finds in `events` (in order): those under `prefix`, after
/// looking at about `limit` events (never stopping inside one revision).
fn read_history(
    events: impl Iterator<Item = Result<Arc<Event>, StoreError>>,
    limit: usize,
    prefix: &str,
) -> Result<HistoryRead, StoreError> {
    let mut read = HistoryRead::default();
    for (looked, event) in events.enumerate() {
        let event = event?;
        // Stop at the limit, but never inside one revision: watchers resume by revision.
        if looked >= limit && read.through != Some(event.revision()) {
            break;
        }
        read.through = Some(event.revision());
        if event.key.starts_with(prefix) {
            read.events.push(event);
        }
    }
    Ok(read)
}

/// The replicated state: applies committed entries, serves reads and feeds watches.
///
/// Its tree is that of the database the replica has open; while the disk has failed and
/// the replica waits to open it again ([`super::node`]), there is none, and every read
/// answers why ([`StoreError::DiskFailed`]).
pub(super) struct StateMachine {
    tree: RwLock<Result<sled::Tree, String>>,
    /// Held for writing while an entry is applied, for reading while a list scans.
    apply_lock: RwLock<()>,
    revision: AtomicU64,
    oldest: AtomicU64,
    history_window: u64,
    /// Tells watchers the revision moved.
    notify: watch::Sender<u64>,
    /// The newest events, for watchers that keep up.
    recent: RwLock<Recent>,
}

impl StateMachine {
    pub(super) fn open(db: &sled::Db, history_window: u64) -> Result<StateMachine, StoreError> {
        let (tree, revision, oldest) = open_state(db)?;
        Ok(StateMachine {
            tree: RwLock::new(Ok(tree)),
            apply_lock: RwLock::new(()),
            revision: AtomicU64::new(revision),
            oldest: AtomicU64::new(oldest),
            history_window: history_window.max(1),
            notify: watch::Sender::new(revision),
            recent: RwLock::new(Recent::empty_after(revision)),
        })
    }

    /// The tree, or why there is none.
    fn tree(&self) -> Result<sled::Tree, StoreError> {
        read(&self.tree).clone().map_err(StoreError::DiskFailed)
    }

    /// Lets go of the database, whose disk failed for the reason `why`: reads answer it
    /// until [`StateMachine::reopen`].
    pub(super) fn close(&self, why: String) {
        let _guard = write(&self.apply_lock);
        *write(&self.recent) = Recent::empty_after(self.revision());
        *write(&self.tree) = Err(why);
    }

    /// Why the database was let go of, while it is.
    pub(super) fn failure(&self) -> Option<String> {
        read(&self.tree).as_ref().err().cloned()
    }

    /// Takes up the state kept in `db`, opened again after its disk failed: what was
    /// applied but not yet durable then is applied again from the log.
    pub(super) fn reopen(&self, db: &sled::Db) -> Result<(), StoreError> {
        let _guard = write(&self.apply_lock);
        let (tree, revision, oldest) = open_state(db)?;
        self.reset(revision, oldest);
        *write(&self.tree) = Ok(tree);
        self.notify.send_replace(revision);
        Ok(())
    }

    /// Forgets the events in memory and takes up `revision` and `oldest` as the counters.
    fn reset(&self, revision: u64, oldest: u64) {
        *write(&self.recent) = Recent::empty_after(revision);
        self.revision.store(revision, Ordering::Release);
        self.oldest.store(oldest, Ordering::Release);
    }

    /// The last Raft index applied (0 for a new store).
    pub(super) fn applied_index(&self) -> Result<u64, StoreError> {
        read_u64(&self.tree()?, APPLIED)
    }

    pub(super) fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    pub(super) fn oldest(&self) -> u64 {
        self.oldest.load(Ordering::Acquire)
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub(super) fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.tree()?
            .get(data_key(key))?
            .map(|v| Record::decode(&v))
            .transpose()
    }

    pub(super) fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<(Vec<(String, Record)>, u64), StoreError> {
        let _guard = read(&self.apply_lock);
        let revision = self.revision();
        let start = data_key(after.unwrap_or(prefix));
        let prefix = data_key(prefix);
        let out = self
            .tree()?
            .range(start.clone()..)
            .skip_while(|item| after.is_some() && item.as_ref().is_ok_and(|(k, _)| **k == *start))
            .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .map(|item| {
                let (k, v) = item?;
                let key = String::from_utf8(k[1..].to_vec())
                    .map_err(|_| StoreError::Corrupt("key is not UTF-8".into()))?;
                Ok((key, Record::decode(&v)?))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((out, revision))
    }

    /// The events under `prefix` with a revision greater than `after`, looking at about
    /// `limit` events at most (never stopping inside one revision). From memory when it
    /// holds everything after `after`, else from the tree.
    pub(super) fn history_after(
        &self,
        after: u64,
        limit: usize,
        prefix: &str,
    ) -> Result<HistoryRead, StoreError> {
        self.retained_after(after)?;
        self.recent_history_after(after, limit, prefix)
            .map_or_else(|| self.stored_history_after(after, limit, prefix), Ok)
    }

    /// [`StoreError::Compacted`] if the history no longer reaches back to `after`.
    pub(super) fn retained_after(&self, after: u64) -> Result<(), StoreError> {
        let oldest = self.oldest();
        if after < oldest {
            return Err(StoreError::Compacted {
                requested: after,
                oldest,
            });
        }
        Ok(())
    }

    /// [`StateMachine::history_after`] from memory, if it holds every event after `after`.
    fn recent_history_after(&self, after: u64, limit: usize, prefix: &str) -> Option<HistoryRead> {
        let recent = read(&self.recent);
        if after < recent.complete_after {
            return None;
        }
        let first = recent.events.partition_point(|e| e.revision() <= after);
        read_history(recent.events.range(first..).cloned().map(Ok), limit, prefix).ok()
    }

    /// [`StateMachine::history_after`] from the tree.
    fn stored_history_after(
        &self,
        after: u64,
        limit: usize,
        prefix: &str,
    ) -> Result<HistoryRead, StoreError> {
        let history = self
            .tree()?
            .range(history_key(after + 1)..history_key(u64::MAX))
            .values()
            .map(|v| Ok(Arc::new(Event::decode(&v?)?)));
        read_history(history, limit, prefix)
    }

    /// Marks a Raft index applied that carried no write (an empty entry, a conf change).
    pub(super) fn apply_noop(&self, index: u64) -> Result<(), StoreError> {
        self.tree()?.insert(APPLIED, &index.to_be_bytes())?;
        Ok(())
    }

    /// Records what the configuration change at Raft index `index` did to member `id`.
    pub(super) fn record_member(
        &self,
        index: u64,
        id: u64,
        record: &MemberRecord,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(member_key(id), record.encode());
        batch.insert(APPLIED, &index.to_be_bytes());
        self.tree()?.apply_batch(batch)?;
        Ok(())
    }

    /// Every member record, by id.
    pub(super) fn member_records(&self) -> Result<Vec<(u64, MemberRecord)>, StoreError> {
        self.tree()?
            .scan_prefix(b"p")
            .map(|item| {
                let (k, v) = item?;
                // `p`, then the id.
                let id = Reader::new(k.get(1..).unwrap_or_default()).u64()?;
                Ok((id, MemberRecord::decode(&v)?))
            })
            .collect()
    }

    /// The record of member `id`, if a configuration change ever named it.
    pub(super) fn member_record(&self, id: u64) -> Result<Option<MemberRecord>, StoreError> {
        self.tree()?
            .get(member_key(id))?
            .map(|v| MemberRecord::decode(&v))
            .transpose()
    }

    /// Applies the write in the committed entry at `index`, all or nothing.
    ///
    /// The outer `Result` is for the store failing; the inner one is the write's own
    /// outcome (a failed precondition changes nothing but still consumes the index).
    pub(super) fn apply(
        &self,
        index: u64,
        data: &[u8],
    ) -> Result<Result<WriteResult, StoreError>, StoreError> {
        let _guard = write(&self.apply_lock);
        let mut batch = sled::Batch::default();
        batch.insert(APPLIED, &index.to_be_bytes());
        let outcome = match decode_ops(data) {
            Ok(ops) => self.plan(&ops, &mut batch)?,
            // An entry we cannot decode was proposed by a newer or broken writer; applying
            // nothing keeps every replica identical, which is what matters.
            Err(e) => Err(e),
        };
        self.tree()?.apply_batch(batch)?;
        let (result, events) = match outcome {
            Ok(planned) => planned,
            Err(e) => return Ok(Err(e)),
        };
        // In memory before the revision moves: a watcher that sees the new revision finds
        // its events.
        write(&self.recent).push(events);
        self.revision.store(result.revision, Ordering::Release);
        self.notify.send_replace(result.revision);
        self.trim_history(result.revision)?;
        Ok(Ok(result))
    }

    /// Checks every precondition, then stages the changes into `batch`; returns the write's
    /// result and its events.
    fn plan(
        &self,
        ops: &[super::Op],
        batch: &mut sled::Batch,
    ) -> Result<Result<(WriteResult, Vec<Event>), StoreError>, StoreError> {
        let mut previous = Vec::with_capacity(ops.len());
        for op in ops {
            let current = self.get(&op.key)?;
            let key = || op.key.clone();
            let failed = match (op.precondition, &current) {
                (Precondition::Absent, Some(_)) => Some(StoreError::AlreadyExists { key: key() }),
                (Precondition::Exists | Precondition::Revision(_), None) => {
                    Some(StoreError::NotFound { key: key() })
                }
                (Precondition::Revision(expected), Some(rec)) if rec.mod_revision != expected => {
                    Some(StoreError::Conflict {
                        key: key(),
                        expected,
                        actual: rec.mod_revision,
                    })
                }
                (Precondition::None, None) if op.value.is_none() => {
                    Some(StoreError::NotFound { key: key() })
                }
                _ => None,
            };
            if let Some(err) = failed {
                return Ok(Err(err));
            }
            previous.push(current);
        }
        let revision = self.revision() + 1;
        let mut events = Vec::with_capacity(ops.len());
        for (op, prev) in ops.iter().zip(&previous) {
            let (kind, record) = match &op.value {
                Some(value) => {
                    let record = Record {
                        value: value.clone(),
                        create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                        mod_revision: revision,
                    };
                    batch.insert(data_key(&op.key), record.encode());
                    (EventKind::Put, record)
                }
                None => {
                    batch.remove(data_key(&op.key));
                    let mut record = prev.clone().ok_or_else(|| {
                        StoreError::Corrupt(format!("delete of missing key {}", op.key))
                    })?;
                    record.mod_revision = revision;
                    (EventKind::Delete, record)
                }
            };
            let event = Event {
                kind,
                key: op.key.clone(),
                record,
                previous: prev.clone(),
            };
            // Several ops of one write share the revision; the history key gets a suffix.
            let mut hk = history_key(revision);
            hk.extend_from_slice(op.key.as_bytes());
            batch.insert(hk, event.encode());
            events.push(event);
        }
        batch.insert(REVISION, &revision.to_be_bytes());
        Ok(Ok((WriteResult { revision, previous }, events)))
    }

    /// Drops history older than the window, in chunks, so disk use stays bounded.
    fn trim_history(&self, revision: u64) -> Result<(), StoreError> {
        let oldest = self.oldest();
        // Trim in steps of a tenth of the window, not on every write.
        if revision.saturating_sub(oldest) <= self.history_window + self.history_window / 10 {
            return Ok(());
        }
        let new_oldest = revision - self.history_window;
        let tree = self.tree()?;
        let mut batch = sled::Batch::default();
        let stale = tree.range(history_key(0)..history_key(new_oldest + 1));
        for key in stale.keys() {
            batch.remove(key?);
        }
        batch.insert(OLDEST, &new_oldest.to_be_bytes());
        tree.apply_batch(batch)?;
        self.oldest.store(new_oldest, Ordering::Release);
        Ok(())
    }

    /// Every key-value, every member record and the revision counters, for a Raft
    /// snapshot sent to a follower.
    pub(super) fn snapshot_data(&self) -> Result<Vec<u8>, StoreError> {
        let _guard = read(&self.apply_lock);
        let mut out = Vec::new();
        out.extend_from_slice(&self.revision().to_be_bytes());
        let tree = self.tree()?;
        for item in tree.scan_prefix(b"k").chain(tree.scan_prefix(b"p")) {
            let (k, v) = item?;
            push_bytes(&mut out, &k);
            push_bytes(&mut out, &v);
        }
        Ok(out)
    }

    /// Replaces the whole state with a snapshot's, as of Raft index `index`.
    pub(super) fn restore(&self, index: u64, data: &[u8]) -> Result<(), StoreError> {
        let _guard = write(&self.apply_lock);
        let mut r = Reader::new(data);
        let revision = r.u64()?;
        let mut batch = sled::Batch::default();
        for key in self.tree()?.iter().keys() {
            batch.remove(key?);
        }
        while !r.is_empty() {
            batch.insert(r.bytes()?, r.bytes()?);
        }
        batch.insert(APPLIED, &index.to_be_bytes());
        batch.insert(REVISION, &revision.to_be_bytes());
        // History before a snapshot is unknown here: watches must start after it.
        batch.insert(OLDEST, &revision.to_be_bytes());
        self.tree()?.apply_batch(batch)?;
        self.reset(revision, revision);
        self.notify.send_replace(revision);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Op;
    use super::super::codec::encode_ops;
    use super::*;

    /// Applies one write of `ops` at `index`.
    fn apply(state: &StateMachine, index: u64, ops: &[Op]) {
        state
            .apply(index, &encode_ops(ops))
            .expect("the store works")
            .expect("the write applies");
    }

    #[test]
    fn the_history_in_memory_is_the_history_in_the_tree() {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("sled opens");
        let state = StateMachine::open(&db, 100_000).expect("state opens");
        // More events than memory keeps, under two prefixes, some revisions with two keys
        // (one write of two ops), puts and deletes.
        let mut index = 0;
        for i in 0..(RECENT_EVENTS + 500) {
            index += 1;
            let key = if i % 3 == 0 { "/pods/a" } else { "/nodes/n" };
            let mut ops = vec![Op::put(
                format!("{key}{}", i % 7),
                i.to_string().into_bytes(),
                Precondition::None,
            )];
            if i % 11 == 0 {
                ops.push(Op::put(format!("/pods/b{i}"), vec![1], Precondition::None));
            }
            apply(&state, index, &ops);
            if i % 13 == 0 {
                index += 1;
                apply(
                    &state,
                    index,
                    &[Op::delete(format!("{key}{}", i % 7), Precondition::None)],
                );
            }
        }
        let current = state.revision();
        let recent = state.recent.read().expect("lock").complete_after;
        assert!(recent > 0, "memory forgot the oldest events");
        for prefix in ["/pods/", "/nodes/", "/"] {
            for after in [recent, recent + 1, current - 300, current - 1, current] {
                for limit in [1, 7, 256, 100_000] {
                    let memory = state
                        .recent_history_after(after, limit, prefix)
                        .expect("memory holds it");
                    let tree = state
                        .stored_history_after(after, limit, prefix)
                        .expect("tree reads");
                    assert_eq!(
                        memory, tree,
                        "after {after}, limit {limit}, prefix {prefix}"
                    );
                }
            }
            // Before what memory holds, the tree answers.
            assert!(state.recent_history_after(recent - 1, 10, prefix).is_none());
            let read = state.history_after(recent - 1, 10, prefix).expect("reads");
            assert_eq!(
                read,
                state
                    .stored_history_after(recent - 1, 10, prefix)
                    .expect("reads")
            );
        }
    }
}
