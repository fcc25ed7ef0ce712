//! # The store: the cluster's memory, replicated with Raft and kept in sled
//!
//! In the seed, etcd is "a distributed key-value store that keeps the cluster's data,
//! kept consistent with Raft; only the apiserver reads and writes it". This module is that
//! store. Nothing but the apiserver holds a [`Store`].
//!
//! ## What it keeps
//!
//! A flat map from keys (`/registry/deployments/default/web`) to values (an object's JSON),
//! plus a single, ever-growing **revision**. Every write that changes something bumps the
//! revision by one, and the value remembers the revision that last wrote it (its
//! *mod revision*). The apiserver shows that number to clients as `resourceVersion`:
//! an update that carries an older one fails its precondition and becomes 409 Conflict.
//!
//! Every change is also written to an **event history** keyed by revision. A watch from
//! revision `r` replays the history after `r` and then follows new writes, in revision order
//! and without gaps. History is only kept for a window of revisions; a watch that starts
//! before it answers [`StoreError::Compacted`] (410 Gone at the API), and the client relists.
//!
//! ## How a write travels
//!
//! ```text
//! Store::write ──propose──▶ raft driver task ──append+fsync──▶ log (sled)
//!                              │ committed on a quorum
//!                              ▼
//!                       state machine applies: preconditions, kv, history, revision
//!                              │
//!            ◀──── reply ──────┘  (only now is the write acknowledged)
//! ```
//!
//! [`node`] wraps raft-rs's `RawNode`: one task owns it and drives it in the documented
//! `Ready` order (send, apply snapshot, apply committed entries, persist entries and hard
//! state and fsync, send persisted messages, advance). [`log`] persists the Raft log, hard
//! state and snapshot metadata in sled. [`state`] is the state machine: it applies committed
//! writes atomically (one sled batch per entry, holding the applied index too, so a restart
//! resumes exactly where it stopped) and serves reads and watches. [`transport`] is the seam
//! for other voters, and [`peers`] the transport between processes: Raft messages and
//! forwarded writes over HTTPS with mutual TLS.
//!
//! ## Several replicas
//!
//! Every replica serves reads, writes and watches. A write that reaches a follower is
//! *forwarded* to the leader, which proposes it; the follower answers with the leader's
//! answer. A read first calls [`Store::linearizable`]: the replica asks the leader for a
//! read index (confirmed by a majority) and waits until it has applied that far, so a read
//! never misses a write acknowledged before it began, whichever replica serves it. With a
//! single voter that is free: the one replica applies every write before acknowledging it.
//! Watches read each replica's own history, which every replica applies in the same order
//! with the same revisions, so a watcher that moves to another replica resumes from its
//! revision without a gap.
//!
//! ## Members come and go
//!
//! The voters change only through Raft configuration changes, one at a time:
//! [`Store::remove_member`] and [`Store::add_member`]. An addition carries the new
//! member's peer address, which every replica records as the change applies (and keeps in
//! its snapshot), so that members started with the first list of peers still find it. A
//! removed member's id is never added again. Every log starts from a snapshot at index 1
//! holding the first voters ([`log`]), so a new member, whose log is empty, always takes a
//! snapshot first and never replays entries without the voters they were committed under.
//!
//! ## When the disk fails
//!
//! A write is acknowledged only after it is durable; when sled cannot make it so (the disk
//! is full, typically), the replica's run ends ([`node`]): what was in flight answers
//! [`StoreError::Interrupted`], the database and raft-rs's memory are let go of, and until
//! the disk takes a write again every request answers [`StoreError::DiskFailed`] with the
//! reason. Then the replica opens its database again and goes on from what is durable, as
//! after a restart of the process.

mod codec;
mod log;
mod node;
pub mod peers;
mod state;
pub mod transport;
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a write or a read waits for a leader to be elected before it gives up.
const LEADER_WAIT: Duration = Duration::from_secs(5);

/// How long one read-index request may go unanswered before it is asked again.
const READ_INDEX_RETRY: Duration = Duration::from_millis(500);

use tokio::sync::{mpsc, oneshot};

pub use state::{Event, EventKind, Record};
pub use watch::WatchStream;

/// How a store replica is set up.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Directory holding the sled database (log, hard state, key-values, history).
    pub data_dir: PathBuf,
    /// This replica's Raft id (1-based).
    pub id: u64,
    /// Ids of every voter, this one included. `[1]` is a single-voter store. Empty for a
    /// replica that joins running voters (after [`Store::add_member`]): it waits for the
    /// leader's snapshot. Used only when the replica has no log yet.
    pub voters: Vec<u64>,
    /// Length of one Raft tick; elections and heartbeats count in ticks.
    pub tick: Duration,
    /// How many revisions of history watches can resume from.
    pub history_window: u64,
    /// Compact the Raft log once this many applied entries are behind the last snapshot.
    pub compact_after: u64,
}

impl StoreConfig {
    /// A single-voter store in `data_dir`, with the default timings and windows.
    pub fn single(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            id: 1,
            voters: vec![1],
            tick: Duration::from_millis(100),
            history_window: 10_000,
            compact_after: 1_000,
        }
    }
}

/// What must hold for a write to go ahead; checked on the state the write would change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// No condition.
    None,
    /// The key must not exist (create).
    Absent,
    /// The key must exist (update or delete without a resourceVersion).
    Exists,
    /// The key must exist and have been last written at exactly this revision.
    Revision(u64),
}

/// One change to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The key to change.
    pub key: String,
    /// `Some(value)` to put, `None` to delete.
    pub value: Option<Vec<u8>>,
    /// What must hold first.
    pub precondition: Precondition,
}

impl Op {
    /// Put `value` at `key` if `precondition` holds.
    pub fn put(key: impl Into<String>, value: Vec<u8>, precondition: Precondition) -> Self {
        Op {
            key: key.into(),
            value: Some(value),
            precondition,
        }
    }

    /// Delete `key` if `precondition` holds.
    pub fn delete(key: impl Into<String>, precondition: Precondition) -> Self {
        Op {
            key: key.into(),
            value: None,
            precondition,
        }
    }
}

/// The outcome of an acknowledged write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    /// The revision the write was applied at (every op of one write shares it).
    pub revision: u64,
    /// For each op, the record it replaced or deleted, if there was one.
    pub previous: Vec<Option<Record>>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key already exists.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key does not exist.
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// The key was written at another revision than the one expected.
    #[error("key {key} is at revision {actual}, not {expected}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the writer expected.
        expected: u64,
        /// The key's revision now.
        actual: u64,
    },
    /// The requested revision is newer than the store's.
    #[error("revision {requested} is ahead of the store's, {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: u64,
        /// The store's revision.
        current: u64,
    },
    /// The requested revision is older than the retained history.
    #[error("revision {requested} has been compacted (oldest retained is {oldest})")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision a watch can start after.
        oldest: u64,
    },
    /// This replica is not the Raft leader, so it cannot take writes.
    #[error("this store replica is not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's id, if known.
        leader: Option<u64>,
    },
    /// The store is shutting down or its driver stopped.
    #[error("the store is stopped")]
    Stopped,
    /// A write was proposed but leadership changed before it committed; its fate is unknown.
    #[error("leadership changed before the write committed; it may or may not have applied")]
    Dropped,
    /// sled failed.
    #[error("failed to access the store's database: {0}")]
    Disk(#[from] sled::Error),
    /// The replica's disk failed while the write was in flight; it may or may not have
    /// applied (another member may have taken it in).
    #[error("the write was interrupted, and may or may not have applied: {0}")]
    Interrupted(String),
    /// The replica's disk failed (is full, typically), and the replica is waiting to open
    /// its database again; until then it takes no writes and serves no reads. Nothing it
    /// acknowledged is lost.
    #[error("{0}")]
    DiskFailed(String),
    /// Raft failed.
    #[error("raft failed: {0}")]
    Raft(#[from] raft::Error),
    /// Something on disk could not be decoded.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// The member to remove is the only voter left: a store without voters is gone.
    #[error("member {id} is the last voter; a control plane cannot remove its last member")]
    LastVoter {
        /// The member.
        id: u64,
    },
    /// Members can only be added to a replica that talks to peers.
    #[error(
        "this control plane runs alone, with no peer listener: members can only be added to \
         one started with --member and --peer"
    )]
    NoPeers,
    /// The member to add is a voter already.
    #[error("member {id} is already a member of this control plane")]
    AlreadyAMember {
        /// The member.
        id: u64,
    },
    /// The member to add was a member once and was removed: ids are never used twice, so
    /// that nothing a removed member sent or voted can count for a new one.
    #[error(
        "member {id} was removed from this control plane, and a removed member's id is never \
         used again: give the new member another id"
    )]
    RemovedMember {
        /// The member.
        id: u64,
    },
    /// The member to remove is not a voter.
    #[error("member {id} is not a member of this control plane (members: {members:?})")]
    NotAMember {
        /// The member asked for.
        id: u64,
        /// The voters.
        members: Vec<u64>,
    },
    /// No leader could be reached, or no majority confirmed one, in time; nothing was
    /// changed.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// A request from a [`Store`] handle to the raft driver task.
struct Proposal {
    change: Change,
    reply: oneshot::Sender<Result<WriteResult, StoreError>>,
}

/// What a proposal changes.
enum Change {
    /// Writes to the key-values.
    Write(Vec<Op>),
    /// Takes a member out of the voters (a Raft configuration change).
    RemoveMember(u64),
    /// Makes a new member, reachable at a peer address, a voter.
    AddMember(u64, peers::PeerAddress),
}

/// Opens the replica's database in `config.data_dir`.
/// The directory in a member's data directory that holds its store.
pub const STORE_DIR: &str = "store";

/// How much memory sled may keep of the database in its own cache. Its default, 1 GiB,
/// is what a control plane with a thousand nodes grew to within minutes (every heartbeat
/// is a write); what is not cached is read from the file, through the kernel's page cache.
const CACHE_BYTES: u64 = 128 * 1024 * 1024;

fn open_database(config: &StoreConfig) -> Result<sled::Db, StoreError> {
    Ok(open_sled(
        &sled::Config::new()
            .path(config.data_dir.join(STORE_DIR))
            .mode(sled::Mode::LowSpace)
            .cache_capacity(CACHE_BYTES),
    )?)
}

/// How long opening waits for a store closed in this process to let go of its file.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens sled, waiting up to [`LOCK_WAIT`] while its file is locked. A store that was
/// shut down in this same process can hold the lock a moment longer: sled frees its last
/// handles on the file through deferred, epoch-based reclamation, on whichever thread
/// collects next, not when the `Db` is dropped. Another process holding the lock is
/// reported once the wait is over.
fn open_sled(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            // sled reports the lock as an `Other` error, naming it in the message.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            outcome => return outcome,
        }
    }
}

/// A handle on one store replica. Cheap to clone; all clones share the replica.
#[derive(Clone)]
pub struct Store {
    id: u64,
    state: Arc<state::StateMachine>,
    proposals: mpsc::Sender<Proposal>,
    driver: Arc<node::DriverHandle>,
    transport: Arc<dyn transport::Transport>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("revision", &self.revision())
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the replica in `config.data_dir` and starts its raft driver task.
    ///
    /// A single-voter store elects itself at once; with more voters, the replica waits for
    /// an election through the transport.
    pub async fn open(
        config: StoreConfig,
        transport: Arc<dyn transport::Transport>,
    ) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StoreError::Corrupt(format!("cannot create data dir: {e}")))?;
        let db = open_database(&config)?;
        if crate::failpoints::on!("store::forget-everything-on-restart") {
            // As a store that kept its state in memory only would: nothing survives.
            for name in db.tree_names() {
                if name != db.name() {
                    db.drop_tree(name)?;
                }
            }
            db.clear()?;
        }
        let state = Arc::new(state::StateMachine::open(&db, config.history_window)?);
        let (proposals, rx) = mpsc::channel(1024);
        let id = config.id;
        let driver = node::start(config, db, state.clone(), rx, transport.clone()).await?;
        Ok(Store {
            id,
            state,
            proposals,
            driver: Arc::new(driver),
            transport,
        })
    }

    /// Applies `ops` atomically, once committed on a quorum and durable; all or nothing.
    ///
    /// On a replica that does not lead, the write is forwarded to the leader; while there
    /// is none, it waits up to [`LEADER_WAIT`] for one.
    pub async fn write(&self, ops: Vec<Op>) -> Result<WriteResult, StoreError> {
        let here = || self.write_here(ops.clone());
        let forward = |leader| self.transport.forward(leader, ops.clone());
        self.through_leader(here, forward).await
    }

    /// Runs `here` on this replica; if another leads, `forward`s to it instead. While there
    /// is no leader, or the leader just stepped down or was not reached (so nothing
    /// happened and trying again is safe), tries again for up to [`LEADER_WAIT`].
    async fn through_leader<T, Here, Forward>(
        &self,
        here: impl Fn() -> Here,
        forward: impl Fn(u64) -> Forward,
    ) -> Result<T, StoreError>
    where
        Here: std::future::Future<Output = Result<T, StoreError>>,
        Forward: std::future::Future<Output = Result<T, StoreError>>,
    {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let leader = match here().await {
                Err(StoreError::NotLeader { leader }) => leader,
                outcome => return outcome,
            };
            match leader.filter(|leader| *leader != self.id) {
                Some(leader) => match forward(leader).await {
                    Err(StoreError::NotLeader { .. } | StoreError::Unavailable(_))
                        if tokio::time::Instant::now() < deadline => {}
                    outcome => return outcome,
                },
                None if tokio::time::Instant::now() >= deadline => {
                    return Err(StoreError::Unavailable(format!(
                        "no leader was elected within {LEADER_WAIT:?}"
                    )));
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Proposes `ops` on this replica; [`StoreError::NotLeader`] if it does not lead. What
    /// a leader does with a write another replica forwarded.
    pub async fn write_here(&self, ops: Vec<Op>) -> Result<WriteResult, StoreError> {
        self.propose_here(Change::Write(ops)).await
    }

    async fn propose_here(&self, change: Change) -> Result<WriteResult, StoreError> {
        let (reply, rx) = oneshot::channel();
        let sent = self.proposals.send(Proposal { change, reply }).await;
        sent.map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Takes member `id` out of the voters, through a Raft configuration change committed
    /// by the current voters; forwarded to the leader like a write. Removing the last voter
    /// is refused ([`StoreError::LastVoter`]), and so is removing a member that is not a
    /// voter ([`StoreError::NotAMember`]).
    pub async fn remove_member(&self, id: u64) -> Result<(), StoreError> {
        let here = || self.remove_member_here(id);
        let forward = |leader| self.transport.forward_removal(leader, id);
        self.through_leader(here, forward).await
    }

    /// [`Store::remove_member`] on this replica; [`StoreError::NotLeader`] if it does not
    /// lead.
    pub async fn remove_member_here(&self, id: u64) -> Result<(), StoreError> {
        self.propose_here(Change::RemoveMember(id)).await.map(drop)
    }

    /// Makes member `id`, whose peer listener is at `address`, a voter, through a Raft
    /// configuration change; forwarded to the leader like a write. Every member learns the
    /// address as the change applies. The new member starts with no voters of its own
    /// ([`StoreConfig::voters`] empty) and catches up from a snapshot. Refused for a
    /// current member ([`StoreError::AlreadyAMember`]) and for the id of a removed one
    /// ([`StoreError::RemovedMember`]).
    pub async fn add_member(&self, id: u64, address: peers::PeerAddress) -> Result<(), StoreError> {
        if !self.transport.reaches_peers() {
            return Err(StoreError::NoPeers);
        }
        let here = || self.add_member_here(id, address.clone());
        let address = address.to_string();
        let forward = |leader| self.transport.forward_addition(leader, id, address.clone());
        self.through_leader(here, forward).await
    }

    /// [`Store::add_member`] on this replica; [`StoreError::NotLeader`] if it does not
    /// lead.
    pub async fn add_member_here(
        &self,
        id: u64,
        address: peers::PeerAddress,
    ) -> Result<(), StoreError> {
        let change = Change::AddMember(id, address);
        self.propose_here(change).await.map(drop)
    }

    /// Waits until this replica has applied every write acknowledged (by any replica)
    /// before the call: after it, [`Store::get`], [`Store::list`] and [`Store::watch`] see
    /// at least that. Gives up with [`StoreError::Unavailable`] if no majority confirms a
    /// leader within [`LEADER_WAIT`].
    pub async fn linearizable(&self) -> Result<(), StoreError> {
        if self.driver.is_alone() {
            // The only replica applies every write before acknowledging it.
            return Ok(());
        }
        if crate::failpoints::on!("store::read-without-a-majority") {
            // Mutant: a replica answers from what it has applied without asking a majority
            // whether that is still current, so a leader cut off from the others goes on
            // serving what it knew while they move on.
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let (reply, answer) = oneshot::channel();
            let sent = self.driver.reads().send(reply).await;
            sent.map_err(|_| StoreError::Stopped)?;
            match tokio::time::timeout(READ_INDEX_RETRY, answer).await {
                Ok(Ok(Ok(()))) => return Ok(()),
                Ok(Err(_)) => return Err(StoreError::Stopped),
                Ok(Ok(Err(e @ StoreError::DiskFailed(_)))) => return Err(e),
                // Dropped by a change of leader, or unanswered: ask again.
                Ok(Ok(Err(_))) | Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "no majority confirmed a leader within {LEADER_WAIT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The record at `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.state.get(key)
    }

    /// Every record whose key starts with `prefix`, in key order, and the revision they
    /// were read at.
    pub fn list(&self, prefix: &str) -> Result<(Vec<(String, Record)>, u64), StoreError> {
        self.state.list(prefix, None)
    }

    /// The keys under `prefix` after key `after` (all, without one) as they were at
    /// `revision`, in key order: the current keys with every change made since undone,
    /// key by key, from the history (each changed key goes back to what its first later
    /// change found). [`StoreError::Compacted`]
    /// when the history no longer reaches back that far; [`StoreError::FutureRevision`]
    /// when the store has not come that far.
    pub fn list_at(
        &self,
        prefix: &str,
        after: Option<&str>,
        revision: u64,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let (records, now) = self.state.list(prefix, after)?;
        if revision > now {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: now,
            });
        }
        let mut before: BTreeMap<String, Option<Record>> = BTreeMap::new();
        let mut read_to = revision;
        while read_to < now {
            let read = self.state.history_after(read_to, 1024, prefix)?;
            let wanted = |e: &&Arc<state::Event>| {
                e.revision() <= now && after.is_none_or(|after| e.key.as_str() > after)
            };
            for event in read.events.iter().filter(wanted) {
                before
                    .entry(event.key.clone())
                    .or_insert_with(|| event.previous.clone());
            }
            match read.through {
                Some(through) if through > read_to => read_to = through,
                _ => break,
            }
        }
        if before.is_empty() {
            return Ok(records);
        }
        let mut at: BTreeMap<String, Record> = records.into_iter().collect();
        for (key, record) in before {
            match record {
                Some(record) => at.insert(key, record),
                None => at.remove(&key),
            };
        }
        Ok(at.into_iter().collect())
    }

    /// The store's current revision.
    pub fn revision(&self) -> u64 {
        self.state.revision()
    }

    /// Follows every change under `prefix` after revision `after`, in order, without gaps.
    pub fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream, StoreError> {
        watch::WatchStream::new(self.state.clone(), prefix.to_owned(), after)
    }

    /// Hands a Raft message that arrived from another replica to this replica's driver.
    pub fn receive(&self, message: raft::prelude::Message) {
        self.driver.inbox().deliver(message);
    }

    /// This replica's Raft id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Why this replica takes no requests, while its disk has failed (see
    /// [`StoreError::DiskFailed`]).
    pub fn failure(&self) -> Option<String> {
        self.state.failure()
    }

    /// Whether this replica currently leads (and so takes writes).
    pub fn is_leader(&self) -> bool {
        self.driver.is_leader()
    }

    /// The replica this one believes leads, if it knows one.
    pub fn leader(&self) -> Option<u64> {
        self.is_leader()
            .then_some(self.id)
            .or_else(|| self.driver.leader_id())
    }

    /// Stops the driver task and flushes the database.
    pub async fn shutdown(&self) {
        self.driver.shutdown().await;
    }
}

#[cfg(test)]
mod replicas_tests;
#[cfg(test)]
mod tests;
