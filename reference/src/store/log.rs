//! The Raft log on disk: entries, hard state, conf state and snapshot metadata in sled.
//!
//! raft-rs reads its log through the `Storage` trait. [`DiskLog`] keeps a `MemStorage` as
//! the in-memory view raft-rs reads from, and writes every change through to the `raft`
//! tree, so that on restart the in-memory view is rebuilt exactly. The driver decides when
//! the writes become durable (it flushes before acknowledging anything).
//!
//! | key | value |
//! |---|---|
//! | `e` + index (big-endian) | an `Entry` (protobuf) |
//! | `hs` | the `HardState` (term, vote, commit) |
//! | `cs` | the `ConfState` (the voters) |
//! | `snap` | `SnapshotMetadata` of the last compaction point |

use std::ops::Range;
use std::sync::Arc;

use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage};

use super::StoreError;
use super::state::StateMachine;

const HARD_STATE: &[u8] = b"hs";
const CONF_STATE: &[u8] = b"cs";
const SNAPSHOT: &[u8] = b"snap";

/// The index (and term) of the snapshot a new log starts from: see [`bootstrap`].
pub(super) const BOOTSTRAP_INDEX: u64 = 1;

fn entry_key(index: u64) -> Vec<u8> {
    let mut k = vec![b'e'];
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("failed to decode {what}: {e}"))
}

/// `message` in protobuf's encoding (`what` names it in an error).
fn encode(what: &str, message: &impl protobuf::Message) -> Result<Vec<u8>, StoreError> {
    message.write_to_bytes().map_err(|e| corrupt(what, e))
}

/// The `what` that `bytes` encode.
fn decode<M: protobuf::Message>(what: &str, bytes: &[u8]) -> Result<M, StoreError> {
    M::parse_from_bytes(bytes).map_err(|e| corrupt(what, e))
}

/// raft-rs's view of the log, written through to sled.
pub(super) struct DiskLog {
    mem: MemStorage,
    tree: sled::Tree,
    state: Arc<StateMachine>,
}

/// Starts a new log. A member of a new control plane starts from a snapshot at index 1
/// that holds nothing but the first voters, so that every log begins after index 1 and a
/// member that joins later, with an empty log, always gets a snapshot first — never the
/// entries from index 1 without the voters they were committed under. A member that joins
/// (no `voters`) starts with nothing at all and waits for that snapshot.
fn bootstrap(
    tree: &sled::Tree,
    core: &mut raft::storage::MemStorageCore,
    voters: &[u64],
) -> Result<(), StoreError> {
    let cs = ConfState {
        voters: voters.to_vec(),
        ..Default::default()
    };
    let mut batch = sled::Batch::default();
    batch.insert(CONF_STATE, encode("conf state", &cs)?);
    if voters.is_empty() {
        tree.apply_batch(batch)?;
        core.set_conf_state(cs);
        return Ok(());
    }
    let meta = SnapshotMetadata {
        index: BOOTSTRAP_INDEX,
        term: BOOTSTRAP_INDEX,
        conf_state: Some(cs).into(),
        ..Default::default()
    };
    let hs = HardState {
        term: BOOTSTRAP_INDEX,
        commit: BOOTSTRAP_INDEX,
        ..Default::default()
    };
    batch.insert(SNAPSHOT, encode("snapshot", &meta)?);
    batch.insert(HARD_STATE, encode("hard state", &hs)?);
    tree.apply_batch(batch)?;
    let mut snapshot = Snapshot::default();
    snapshot.set_metadata(meta);
    core.apply_snapshot(snapshot)?;
    Ok(())
}

impl DiskLog {
    /// Loads the log from `db`, or starts a new one whose voters are `voters`.
    pub(super) fn open(
        db: &sled::Db,
        state: Arc<StateMachine>,
        voters: &[u64],
    ) -> Result<DiskLog, StoreError> {
        let tree = db.open_tree("raft")?;
        let mem = MemStorage::new();
        {
            let mut core = mem.wl();
            if let Some(bytes) = tree.get(SNAPSHOT)? {
                let mut snap = Snapshot::default();
                snap.set_metadata(decode("snapshot", &bytes)?);
                core.apply_snapshot(snap)?;
            }
            let entries = tree.range(entry_key(0)..entry_key(u64::MAX)).values();
            let entries: Vec<Entry> = entries
                .map(|v| decode("log entry", &v?))
                .collect::<Result<_, StoreError>>()?;
            core.append(&entries)?;
            match tree.get(CONF_STATE)? {
                Some(bytes) => core.set_conf_state(decode("conf state", &bytes)?),
                None => bootstrap(&tree, &mut core, voters)?,
            }
            if let Some(bytes) = tree.get(HARD_STATE)? {
                core.set_hardstate(decode("hard state", &bytes)?);
            }
        }
        // An entry's effect is written as it is applied, and the commit index that let it
        // be applied at the end of the same round: a power cut between the two keeps the
        // first and loses the second, and raft-rs refuses to start on an applied index
        // past the commit index. What was applied was committed, so the commit index is
        // raised to it (where the log holds the entry).
        let applied = state.applied_index()?;
        let last = raft::Storage::last_index(&mem)?;
        let mut core = mem.wl();
        if applied > core.hard_state().commit && applied <= last {
            tracing::info!(
                applied,
                commit = core.hard_state().commit,
                "the commit index on disk is behind what was applied; raising it"
            );
            core.mut_hard_state().commit = applied;
        }
        drop(core);
        Ok(DiskLog { mem, tree, state })
    }

    /// Appends entries, replacing any conflicting tail.
    pub(super) fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        // A new leader may overwrite a tail this replica had: drop it on disk too.
        let mut batch = self.without_entries(first.index..u64::MAX)?;
        for e in entries {
            batch.insert(entry_key(e.index), encode("log entry", e)?);
        }
        self.tree.apply_batch(batch)?;
        self.mem.wl().append(entries)?;
        Ok(())
    }

    /// A batch that removes the entries at `indexes` from the disk.
    fn without_entries(&self, indexes: Range<u64>) -> Result<sled::Batch, StoreError> {
        let mut batch = sled::Batch::default();
        let keys = self
            .tree
            .range(entry_key(indexes.start)..entry_key(indexes.end));
        for key in keys.keys() {
            batch.remove(key?);
        }
        Ok(batch)
    }

    /// Records the hard state.
    pub(super) fn set_hard_state(&self, hs: &HardState) -> Result<(), StoreError> {
        self.tree.insert(HARD_STATE, encode("hard state", hs)?)?;
        self.mem.wl().set_hardstate(hs.clone());
        Ok(())
    }

    /// Records a new commit index (from a light ready).
    pub(super) fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        let mut hs = self.mem.rl().hard_state().clone();
        hs.commit = commit;
        self.set_hard_state(&hs)
    }

    /// Records the voters after a membership change.
    pub(super) fn set_conf_state(&self, cs: ConfState) -> Result<(), StoreError> {
        self.tree.insert(CONF_STATE, encode("conf state", &cs)?)?;
        self.mem.wl().set_conf_state(cs);
        Ok(())
    }

    /// Replaces the log with a snapshot received from the leader.
    pub(super) fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let meta = snapshot.get_metadata();
        let mut batch = self.without_entries(0..u64::MAX)?;
        batch.insert(SNAPSHOT, encode("snapshot", meta)?);
        batch.insert(CONF_STATE, encode("conf state", meta.get_conf_state())?);
        self.tree.apply_batch(batch)?;
        self.mem.wl().apply_snapshot(snapshot.clone())?;
        Ok(())
    }

    /// The first index still in the log.
    pub(super) fn first_index(&self) -> u64 {
        Storage::first_index(&self.mem).unwrap_or(1)
    }

    fn conf_state(&self) -> ConfState {
        self.mem
            .initial_state()
            .map(|s| s.conf_state)
            .unwrap_or_default()
    }

    /// Discards the entries before `index` (which must be applied), keeping disk use bounded.
    pub(super) fn compact(&self, index: u64) -> Result<(), StoreError> {
        if index <= self.first_index() {
            return Ok(());
        }
        let meta = SnapshotMetadata {
            index: index - 1,
            term: self.mem.term(index - 1)?,
            conf_state: Some(self.conf_state()).into(),
            ..Default::default()
        };
        let mut batch = self.without_entries(0..index)?;
        batch.insert(SNAPSHOT, encode("snapshot", &meta)?);
        self.tree.apply_batch(batch)?;
        self.mem.wl().compact(index)?;
        Ok(())
    }
}

impl Storage for DiskLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    /// A snapshot of the state machine as applied now, for a follower that fell behind the
    /// compacted log.
    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let unavailable = || raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable);
        let applied = self.state.applied_index().map_err(|_| unavailable())?;
        let mut snap = Snapshot {
            data: self
                .state
                .snapshot_data()
                .map_err(|_| unavailable())?
                .into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = applied;
        meta.term = self.mem.term(applied)?;
        meta.set_conf_state(self.conf_state());
        Ok(snap)
    }
}
