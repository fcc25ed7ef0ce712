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

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::codec::{Reader, decode_ops, push_bytes};
use super::{Precondition, StoreError, WriteResult};

const APPLIED: &[u8] = b"m:applied";
const REVISION: &[u8] = b"m:revision";
const OLDEST: &[u8] = b"m:oldest";

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
            MemberRecord::Added(address) => {
                let mut out = vec![0];
                out.extend_from_slice(address.as_bytes());
                out
            }
            MemberRecord::Removed => vec![1],
        }
    }

    fn decode(bytes: &[u8]) -> Result<MemberRecord, StoreError> {
        match bytes.split_first() {
            Some((0, address)) => Ok(MemberRecord::Added(
                String::from_utf8_lossy(address).into_owned(),
            )),
            Some((1, [])) => Ok(MemberRecord::Removed),
            _ => Err(StoreError::Corrupt(
                "a member record does not decode".into(),
            )),
        }
    }
}

fn member_key(id: u64) -> Vec<u8> {
    let mut k = vec![b'p'];
    k.extend_from_slice(&id.to_be_bytes());
    k
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
        let mut out = Vec::new();
        out.push(match self.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        push_bytes(&mut out, self.key.as_bytes());
        push_bytes(&mut out, &self.record.encode());
        match &self.previous {
            Some(p) => {
                out.push(1);
                push_bytes(&mut out, &p.encode());
            }
            None => out.push(0),
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Event, StoreError> {
        let mut r = Reader::new(bytes);
        let kind = match r.u8()? {
            0 => EventKind::Put,
            _ => EventKind::Delete,
        };
        let key = r.string()?;
        let record = Record::decode(r.bytes()?)?;
        let previous = match r.u8()? {
            0 => None,
            _ => Some(Record::decode(r.bytes()?)?),
        };
        Ok(Event {
            kind,
            key,
            record,
            previous,
        })
    }
}

fn data_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b'k');
    k.extend_from_slice(key.as_bytes());
    k
}

fn history_key(revision: u64) -> Vec<u8> {
    let mut k = vec![b'h'];
    k.extend_from_slice(&revision.to_be_bytes());
    k
}

fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<u64, StoreError> {
    match tree.get(key)? {
        None => Ok(0),
        Some(v) => Reader::new(&v).u64(),
    }
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
}

impl StateMachine {
    pub(super) fn open(db: &sled::Db, history_window: u64) -> Result<StateMachine, StoreError> {
        let tree = db.open_tree("state")?;
        let revision = read_u64(&tree, REVISION)?;
        let oldest = read_u64(&tree, OLDEST)?;
        Ok(StateMachine {
            tree: RwLock::new(Ok(tree)),
            apply_lock: RwLock::new(()),
            revision: AtomicU64::new(revision),
            oldest: AtomicU64::new(oldest),
            history_window: history_window.max(1),
            notify: watch::Sender::new(revision),
        })
    }

    /// The tree, or why there is none.
    fn tree(&self) -> Result<sled::Tree, StoreError> {
        self.tree
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map_err(StoreError::DiskFailed)
    }

    /// Lets go of the database, whose disk failed for the reason `why`: reads answer it
    /// until [`StateMachine::reopen`].
    pub(super) fn close(&self, why: String) {
        let _guard = self.apply_lock.write().unwrap_or_else(|e| e.into_inner());
        *self.tree.write().unwrap_or_else(|e| e.into_inner()) = Err(why);
    }

    /// Why the database was let go of, while it is.
    pub(super) fn failure(&self) -> Option<String> {
        self.tree
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .err()
            .cloned()
    }

    /// Takes up the state kept in `db`, opened again after its disk failed: what was
    /// applied but not yet durable then is applied again from the log.
    pub(super) fn reopen(&self, db: &sled::Db) -> Result<(), StoreError> {
        let _guard = self.apply_lock.write().unwrap_or_else(|e| e.into_inner());
        let tree = db.open_tree("state")?;
        let revision = read_u64(&tree, REVISION)?;
        self.revision.store(revision, Ordering::Release);
        self.oldest
            .store(read_u64(&tree, OLDEST)?, Ordering::Release);
        *self.tree.write().unwrap_or_else(|e| e.into_inner()) = Ok(tree);
        self.notify.send_replace(revision);
        Ok(())
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

    pub(super) fn list(&self, prefix: &str) -> Result<(Vec<(String, Record)>, u64), StoreError> {
        let _guard = self.apply_lock.read().unwrap_or_else(|e| e.into_inner());
        let revision = self.revision();
        let mut out = Vec::new();
        for item in self.tree()?.scan_prefix(data_key(prefix)) {
            let (k, v) = item?;
            let key = String::from_utf8(k[1..].to_vec())
                .map_err(|_| StoreError::Corrupt("key is not UTF-8".into()))?;
            out.push((key, Record::decode(&v)?));
        }
        Ok((out, revision))
    }

    /// Events with revision greater than `after`, up to `limit` of them.
    pub(super) fn history_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let oldest = self.oldest();
        if after < oldest {
            return Err(StoreError::Compacted {
                requested: after,
                oldest,
            });
        }
        let mut out = Vec::new();
        for item in self
            .tree()?
            .range(history_key(after + 1)..history_key(u64::MAX))
        {
            let (_, v) = item?;
            let event = Event::decode(&v)?;
            // Stop at the limit, but never inside one revision: watchers resume by revision.
            if out.len() >= limit && out.last().map(Event::revision) != Some(event.revision()) {
                break;
            }
            out.push(event);
        }
        Ok(out)
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
        let mut out = Vec::new();
        for item in self.tree()?.scan_prefix(b"p") {
            let (k, v) = item?;
            let id = k
                .get(1..9)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt("a member key does not decode".into()))?;
            out.push((id, MemberRecord::decode(&v)?));
        }
        Ok(out)
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
        let _guard = self.apply_lock.write().unwrap_or_else(|e| e.into_inner());
        let mut batch = sled::Batch::default();
        batch.insert(APPLIED, &index.to_be_bytes());
        let outcome = match decode_ops(data) {
            Ok(ops) => self.plan(&ops, &mut batch)?,
            // An entry we cannot decode was proposed by a newer or broken writer; applying
            // nothing keeps every replica identical, which is what matters.
            Err(e) => Err(e),
        };
        self.tree()?.apply_batch(batch)?;
        if let Ok(result) = &outcome {
            self.revision.store(result.revision, Ordering::Release);
            self.notify.send_replace(result.revision);
            self.trim_history(result.revision)?;
        }
        Ok(outcome)
    }

    /// Checks every precondition, then stages the changes into `batch`.
    fn plan(
        &self,
        ops: &[super::Op],
        batch: &mut sled::Batch,
    ) -> Result<Result<WriteResult, StoreError>, StoreError> {
        let mut previous = Vec::with_capacity(ops.len());
        for op in ops {
            let current = self.get(&op.key)?;
            let failed = match (op.precondition, &current) {
                (Precondition::Absent, Some(_)) => Some(StoreError::AlreadyExists {
                    key: op.key.clone(),
                }),
                (Precondition::Exists | Precondition::Revision(_), None) => {
                    Some(StoreError::NotFound {
                        key: op.key.clone(),
                    })
                }
                (Precondition::Revision(expected), Some(rec)) if rec.mod_revision != expected => {
                    Some(StoreError::Conflict {
                        key: op.key.clone(),
                        expected,
                        actual: rec.mod_revision,
                    })
                }
                (Precondition::None, None) if op.value.is_none() => Some(StoreError::NotFound {
                    key: op.key.clone(),
                }),
                _ => None,
            };
            if let Some(err) = failed {
                return Ok(Err(err));
            }
            previous.push(current);
        }
        let revision = self.revision() + 1;
        for (op, prev) in ops.iter().zip(&previous) {
            let event = match &op.value {
                Some(value) => {
                    let record = Record {
                        value: value.clone(),
                        create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                        mod_revision: revision,
                    };
                    batch.insert(data_key(&op.key), record.encode());
                    Event {
                        kind: EventKind::Put,
                        key: op.key.clone(),
                        record,
                        previous: prev.clone(),
                    }
                }
                None => {
                    batch.remove(data_key(&op.key));
                    let mut record = prev.clone().ok_or_else(|| {
                        StoreError::Corrupt(format!("delete of missing key {}", op.key))
                    })?;
                    record.mod_revision = revision;
                    Event {
                        kind: EventKind::Delete,
                        key: op.key.clone(),
                        record,
                        previous: prev.clone(),
                    }
                }
            };
            // Several ops of one write share the revision; the history key gets a suffix.
            let mut hk = history_key(revision);
            hk.extend_from_slice(op.key.as_bytes());
            batch.insert(hk, event.encode());
        }
        batch.insert(REVISION, &revision.to_be_bytes());
        Ok(Ok(WriteResult { revision, previous }))
    }

    /// Drops history older than the window, in chunks, so disk use stays bounded.
    fn trim_history(&self, revision: u64) -> Result<(), StoreError> {
        let oldest = self.oldest();
        // Trim in steps of a tenth of the window, not on every write.
        if revision.saturating_sub(oldest) <= self.history_window + self.history_window / 10 {
            return Ok(());
        }
        let new_oldest = revision - self.history_window;
        let mut batch = sled::Batch::default();
        for item in self
            .tree()?
            .range(history_key(0)..history_key(new_oldest + 1))
        {
            let (k, _) = item?;
            batch.remove(k);
        }
        batch.insert(OLDEST, &new_oldest.to_be_bytes());
        self.tree()?.apply_batch(batch)?;
        self.oldest.store(new_oldest, Ordering::Release);
        Ok(())
    }

    /// Every key-value, every member record and the revision counters, for a Raft
    /// snapshot sent to a follower.
    pub(super) fn snapshot_data(&self) -> Result<Vec<u8>, StoreError> {
        let _guard = self.apply_lock.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        out.extend_from_slice(&self.revision().to_be_bytes());
        for item in self
            .tree()?
            .scan_prefix(b"k")
            .chain(self.tree()?.scan_prefix(b"p"))
        {
            let (k, v) = item?;
            push_bytes(&mut out, &k);
            push_bytes(&mut out, &v);
        }
        Ok(out)
    }

    /// Replaces the whole state with a snapshot's, as of Raft index `index`.
    pub(super) fn restore(&self, index: u64, data: &[u8]) -> Result<(), StoreError> {
        let _guard = self.apply_lock.write().unwrap_or_else(|e| e.into_inner());
        let mut r = Reader::new(data);
        let revision = r.u64()?;
        let mut batch = sled::Batch::default();
        for item in self.tree()?.iter() {
            let (k, _) = item?;
            batch.remove(k);
        }
        while !r.is_empty() {
            let k = r.bytes()?.to_vec();
            let v = r.bytes()?.to_vec();
            batch.insert(k, v);
        }
        batch.insert(APPLIED, &index.to_be_bytes());
        batch.insert(REVISION, &revision.to_be_bytes());
        // History before a snapshot is unknown here: watches must start after it.
        batch.insert(OLDEST, &revision.to_be_bytes());
        self.tree()?.apply_batch(batch)?;
        self.revision.store(revision, Ordering::Release);
        self.oldest.store(revision, Ordering::Release);
        self.notify.send_replace(revision);
        Ok(())
    }
}
