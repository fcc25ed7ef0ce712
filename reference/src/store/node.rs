//! The raft driver: one task that owns the `RawNode` and drives it.
//!
//! raft-rs owns no threads and does no I/O; the application ticks it, steps messages into
//! it, proposes, and then handles each `Ready` in the documented order:
//!
//! 1. send the messages a leader may send before persisting;
//! 2. apply a snapshot, if one arrived;
//! 3. apply the committed entries to the state machine and answer their proposers;
//! 4. append the new entries and the hard state to the log, and fsync if asked to;
//! 5. send the messages that must wait for persistence (votes, append responses);
//! 6. advance, then handle the light ready the same way (commit index, messages, entries).
//!
//! A proposal is answered only from step 3, after its entry committed, which for a single
//! voter means after the fsync of step 4 in an earlier round: nothing is acknowledged
//! before it is durable.
//!
//! A *linearizable read* asks raft-rs for a read index (`ReadIndex`, Raft thesis §6.4): the
//! leader notes its commit index and confirms with a round of heartbeats that a majority
//! still follows it; the read may go ahead on this replica once it has applied up to that
//! index. A follower's request travels to the leader and back the same way. Requests that
//! raft-rs drops (no leader yet, a leader that has not committed in its term) are answered
//! by nobody: the caller's timeout retries them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message};
use raft::{RawNode, StateRole};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::log::{BOOTSTRAP_INDEX, DiskLog};
use super::state::{MemberRecord, StateMachine};
use super::transport::{Inbound, Inbox, Transport};
use super::{Change, Proposal, StoreConfig, StoreError, WriteResult, codec};

type Reply = oneshot::Sender<Result<WriteResult, StoreError>>;

/// The answer to a read-index request: the replica has applied everything committed when
/// the request was confirmed.
pub(super) type ReadReply = oneshot::Sender<Result<(), StoreError>>;

/// Controls the running driver task.
pub(super) struct DriverHandle {
    flags: Arc<Flags>,
    stop: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
    inbound: mpsc::Sender<Inbound>,
    reads: mpsc::Sender<ReadReply>,
}

impl DriverHandle {
    pub(super) fn is_leader(&self) -> bool {
        self.flags.leader.load(Ordering::Acquire)
    }

    /// Whether this replica is the only voter (so every write it applied is every write
    /// acknowledged).
    pub(super) fn is_alone(&self) -> bool {
        self.flags.alone.load(Ordering::Acquire)
    }

    /// The id of the replica this one believes leads, if any.
    pub(super) fn leader_id(&self) -> Option<u64> {
        Some(self.flags.leader_id.load(Ordering::Acquire)).filter(|id| *id != 0)
    }

    pub(super) fn inbox(&self) -> Inbox {
        Inbox(self.inbound.clone())
    }

    pub(super) fn reads(&self) -> &mpsc::Sender<ReadReply> {
        &self.reads
    }

    pub(super) async fn shutdown(&self) {
        if let Some((stop, task)) = self.stop.lock().await.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

/// Everything the driver task owns.
struct Driver {
    node: RawNode<DiskLog>,
    db: sled::Db,
    state: Arc<StateMachine>,
    transport: Arc<dyn Transport>,
    flags: Arc<Flags>,
    /// Proposals of this replica waiting for their entry to apply, by sequence number.
    pending: HashMap<u64, Reply>,
    next_seq: u64,
    /// A random number of this run of the replica, in every proposal's context with the
    /// sequence number: after a restart the sequence starts again, and an entry proposed
    /// in an earlier run must not answer a proposal of this one.
    incarnation: u64,
    /// Read-index requests raft-rs has not answered yet, by request number.
    reads_asked: HashMap<u64, ReadReply>,
    /// Read-index requests answered, waiting for this replica to apply up to their index.
    reads_confirmed: Vec<(u64, ReadReply)>,
    next_read: u64,
    compact_after: u64,
    /// Whether this replica has ever known a leader, and the ticks it let pass since (for
    /// the `store::slow-to-elect-again` fail point).
    seen_leader: bool,
    slow_ticks: u64,
}

/// Opens the log, builds the `RawNode` and starts the driver task.
pub(super) async fn start(
    config: StoreConfig,
    db: sled::Db,
    state: Arc<StateMachine>,
    proposals: mpsc::Receiver<Proposal>,
    transport: Arc<dyn Transport>,
) -> Result<DriverHandle, StoreError> {
    let flags = Arc::new(Flags::default());
    let driver = Driver::new(&config, db, state, transport.clone(), flags.clone())?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let (inbound_tx, inbound_rx) = mpsc::channel(4096);
    let (reads_tx, reads_rx) = mpsc::channel(4096);
    transport.attach(Inbox(inbound_tx.clone()));
    let channels = Channels {
        proposals,
        inbound: inbound_rx,
        reads: reads_rx,
        stop: stop_rx,
    };
    let task = tokio::spawn(drive(driver, config, channels));
    Ok(DriverHandle {
        flags,
        stop: Mutex::new(Some((stop_tx, task))),
        inbound: inbound_tx,
        reads: reads_tx,
    })
}

/// How often a replica whose disk failed tries to open its database again.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the driver until it is stopped. When the disk fails under it, the replica lets go
/// of its database and of everything raft-rs held in memory (which may be ahead of what
/// is durable), answers every request with the reason, and opens the database again once
/// the disk takes writes — as a restart of the process would, but keeping the process, its
/// API and its peers' connections.
async fn drive(mut driver: Driver, config: StoreConfig, mut channels: Channels) {
    while let Ended::DiskFailed(why) = driver.run(config.tick, &mut channels).await {
        match driver.give_up(&config, why).wait(&mut channels).await {
            Some(back) => driver = back,
            None => return,
        }
    }
}

/// Why [`Driver::run`] returned.
enum Ended {
    /// Asked to stop, or every handle is gone.
    Stopped,
    /// The disk failed; the reason, for everyone who asks meanwhile.
    DiskFailed(String),
}

/// A replica whose disk failed, waiting to open its database again.
struct Recovering<'a> {
    config: &'a StoreConfig,
    state: Arc<StateMachine>,
    transport: Arc<dyn Transport>,
    flags: Arc<Flags>,
    why: String,
}

/// What the driver tells every `Store` handle: whether it leads, whether it is the only
/// voter, and whom it follows.
#[derive(Default)]
struct Flags {
    /// Whether this replica leads.
    leader: AtomicBool,
    /// Whether this replica is the only voter.
    alone: AtomicBool,
    /// The id of the replica this one believes leads; 0 for none.
    leader_id: AtomicU64,
}

impl Recovering<'_> {
    /// Answers every request with the reason until the database opens again and takes a
    /// write; the new driver, or `None` if the replica was stopped meanwhile.
    async fn wait(self, channels: &mut Channels) -> Option<Driver> {
        let mut retry = tokio::time::interval(REOPEN_EVERY);
        retry.tick().await;
        loop {
            tokio::select! {
                _ = &mut channels.stop => return None,
                p = channels.proposals.recv() => {
                    let p = p?;
                    let _ = p.reply.send(Err(StoreError::DiskFailed(self.why.clone())));
                }
                Some(reply) = channels.reads.recv() => {
                    let _ = reply.send(Err(StoreError::DiskFailed(self.why.clone())));
                }
                // Raft resends whatever matters once the replica is back.
                Some(_) = channels.inbound.recv() => {}
                _ = retry.tick() => match self.reopen() {
                    Ok(driver) => {
                        tracing::info!("the store's disk takes writes again: the replica is back");
                        return Some(driver);
                    }
                    Err(e) => {
                        self.state.close(self.why.clone());
                        tracing::debug!(error = %e, "the store's database does not open yet");
                    }
                },
            }
        }
    }

    fn reopen(&self) -> Result<Driver, StoreError> {
        let db = super::open_database(self.config)?;
        // A database opens on a full disk; only a write that reaches the disk tells.
        db.insert(DISK_CHECK, &rand::random::<u64>().to_be_bytes())?;
        db.flush()?;
        self.state.reopen(&db)?;
        let (state, transport) = (self.state.clone(), self.transport.clone());
        Driver::new(self.config, db, state, transport, self.flags.clone())
    }
}

/// The key a replica writes to find out whether its disk takes writes again.
const DISK_CHECK: &[u8] = b"disk-check";

/// What to tell clients about a failed disk.
fn disk_failure(e: &sled::Error) -> String {
    let full = matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28));
    let what = if full { "is full" } else { "failed" };
    format!(
        "this member's disk {what} ({e}): it takes no writes and serves no reads until it can \
         write again, and loses nothing it acknowledged"
    )
}

/// Hands the transport what the configuration changes applied so far said about members
/// added and removed since the control plane started.
fn tell_transport_the_members(
    state: &StateMachine,
    transport: &dyn Transport,
) -> Result<(), StoreError> {
    for (id, record) in state.member_records()? {
        match record {
            MemberRecord::Added(address) => transport.member_added(id, &address),
            MemberRecord::Removed => transport.member_removed(id),
        }
    }
    Ok(())
}

/// What the driver task listens to.
struct Channels {
    proposals: mpsc::Receiver<Proposal>,
    inbound: mpsc::Receiver<Inbound>,
    reads: mpsc::Receiver<ReadReply>,
    stop: oneshot::Receiver<()>,
}

impl Driver {
    /// Opens the log in `db` and builds the `RawNode` on it.
    fn new(
        config: &StoreConfig,
        db: sled::Db,
        state: Arc<StateMachine>,
        transport: Arc<dyn Transport>,
        flags: Arc<Flags>,
    ) -> Result<Driver, StoreError> {
        let log = DiskLog::open(&db, state.clone(), &config.voters)?;
        let raft_config = raft::Config {
            id: config.id,
            election_tick: 10,
            heartbeat_tick: 2,
            applied: state.applied_index()?,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_config.validate()?;
        let logger = slog::Logger::root(TracingDrain, slog::o!());
        let mut node = RawNode::new(&raft_config, log, &logger)?;
        if config.voters == [config.id] {
            // Alone, there is nobody to wait for: lead at once rather than after a timeout.
            node.campaign()?;
        }
        tell_transport_the_members(&state, transport.as_ref())?;
        let driver = Driver {
            node,
            db,
            state,
            transport,
            flags,
            pending: HashMap::new(),
            next_seq: 0,
            incarnation: rand::random(),
            reads_asked: HashMap::new(),
            reads_confirmed: Vec::new(),
            next_read: 0,
            compact_after: config.compact_after.max(1),
            seen_leader: false,
            slow_ticks: 0,
        };
        driver.note_voters();
        Ok(driver)
    }

    /// Tells the handles whether this replica is now the only voter.
    fn note_voters(&self) {
        let voters = self.node.raft.prs().conf().voters().ids();
        let alone = voters.len() == 1 && voters.contains(self.node.raft.id);
        self.flags.alone.store(alone, Ordering::Release);
    }

    async fn run(&mut self, tick: std::time::Duration, channels: &mut Channels) -> Ended {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut channels.stop => break,
                _ = ticker.tick() => {
                    // Mutant: once a leader was known, a follower counts one tick in twenty
                    // towards an election, so losing the leader leaves the cluster without
                    // one for half a minute or so.
                    let slow = crate::failpoints::on!("store::slow-to-elect-again")
                        && self.seen_leader
                        && self.node.raft.state != StateRole::Leader;
                    self.slow_ticks += u64::from(slow);
                    if !slow || self.slow_ticks.is_multiple_of(20) {
                        self.node.tick();
                    }
                    // Readers that gave up waiting are forgotten.
                    self.reads_asked.retain(|_, reply| !reply.is_closed());
                }
                p = channels.proposals.recv() => {
                    // Every `Store` handle is gone: nobody can write or read any more.
                    let Some(p) = p else { break };
                    self.propose(p);
                    // Take whatever else is queued, so one fsync covers many writes.
                    while let Ok(p) = channels.proposals.try_recv() {
                        self.propose(p);
                    }
                }
                Some(reply) = channels.reads.recv() => {
                    self.read_index(reply);
                    while let Ok(reply) = channels.reads.try_recv() {
                        self.read_index(reply);
                    }
                }
                Some(inbound) = channels.inbound.recv() => self.receive(inbound),
            }
            match self.on_ready().await {
                Ok(()) => {}
                Err(StoreError::Disk(e)) => return self.disk_failed(&e),
                Err(e) => {
                    // Something raft-rs or the data on disk cannot get past: stop taking
                    // writes rather than risk acknowledging something that is not durable.
                    tracing::error!(error = %e, "store driver stopping");
                    break;
                }
            }
        }
        self.fail_pending(|| StoreError::Stopped);
        if let Err(e) = self.db.flush_async().await {
            tracing::error!(error = %e, "failed to flush the store on shutdown");
        }
        Ended::Stopped
    }

    /// Lets go of the database and of raft-rs's memory (dropped here, with the rest of the
    /// driver), keeping what the next run needs.
    fn give_up(self, config: &StoreConfig, why: String) -> Recovering<'_> {
        self.state.close(why.clone());
        Recovering {
            config,
            state: self.state,
            transport: self.transport,
            flags: self.flags,
            why,
        }
    }

    /// Gives up on this run of the replica after its disk failed: nothing in flight can be
    /// answered for sure any more.
    fn disk_failed(&mut self, e: &sled::Error) -> Ended {
        let why = disk_failure(e);
        tracing::error!(error = %e, "{why}");
        // A proposal may have reached the other members before the disk failed here: its
        // fate is for them to decide.
        self.fail_pending(|| StoreError::Interrupted(why.clone()));
        let (asked, confirmed) = (&mut self.reads_asked, &mut self.reads_confirmed);
        for (_, reply) in asked.drain().chain(confirmed.drain(..)) {
            let _ = reply.send(Err(StoreError::DiskFailed(why.clone())));
        }
        self.flags.leader.store(false, Ordering::Release);
        self.flags.alone.store(false, Ordering::Release);
        self.flags.leader_id.store(0, Ordering::Release);
        Ended::DiskFailed(why)
    }

    fn receive(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Message(m) => {
                if let Err(e) = self.node.step(m) {
                    tracing::debug!(error = %e, "ignored a raft message");
                }
            }
            Inbound::Unreachable(id) => self.node.report_unreachable(id),
            Inbound::SnapshotSent(id, delivered) => {
                let status = if delivered {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                self.node.report_snapshot(id, status);
            }
        }
    }

    /// Asks raft-rs for a read index; the answer comes in a later `Ready`.
    fn read_index(&mut self, reply: ReadReply) {
        self.next_read += 1;
        self.node.read_index(self.next_read.to_be_bytes().to_vec());
        self.reads_asked.insert(self.next_read, reply);
    }

    /// Answers the confirmed reads whose index this replica has applied.
    fn release_reads(&mut self) {
        let applied = self.node.raft.raft_log.applied;
        let confirmed = &mut self.reads_confirmed;
        for (_, reply) in confirmed.extract_if(.., |(index, _)| *index <= applied) {
            let _ = reply.send(Ok(()));
        }
    }

    fn propose(&mut self, p: Proposal) {
        match self.start_proposal(p.change) {
            Ok(seq) => _ = self.pending.insert(seq, p.reply),
            Err(e) => _ = p.reply.send(Err(e)),
        }
    }

    /// Hands a change to raft-rs if it can be made: the sequence number its proposer waits
    /// under, or why not.
    fn start_proposal(&mut self, change: Change) -> Result<u64, StoreError> {
        if self.node.raft.state != StateRole::Leader {
            let leader = Some(self.node.raft.leader_id).filter(|id| *id != 0);
            return Err(StoreError::NotLeader { leader });
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        let context = [self.node.raft.id, self.incarnation, seq].map(u64::to_be_bytes);
        let context = context.as_flattened().to_vec();
        match change {
            Change::Write(ops) => self.node.propose(context, codec::encode_ops(&ops))?,
            Change::RemoveMember(id) => {
                self.members_may_change()?;
                let mut voters: Vec<u64> =
                    self.node.raft.prs().conf().voters().ids().iter().collect();
                voters.sort_unstable();
                if !voters.contains(&id) {
                    return Err(StoreError::NotAMember {
                        id,
                        members: voters,
                    });
                }
                if voters.len() == 1 {
                    return Err(StoreError::LastVoter { id });
                }
                let change = ConfChange {
                    change_type: ConfChangeType::RemoveNode,
                    node_id: id,
                    ..Default::default()
                };
                self.node.propose_conf_change(context, change)?
            }
            Change::AddMember(id, address) => {
                if let Some(MemberRecord::Removed) = self.state.member_record(id)? {
                    return Err(StoreError::RemovedMember { id });
                }
                if self.node.raft.prs().conf().voters().contains(id) {
                    return Err(StoreError::AlreadyAMember { id });
                }
                self.members_may_change()?;
                let change = ConfChange {
                    change_type: ConfChangeType::AddNode,
                    node_id: id,
                    context: address.to_string().into_bytes().into(),
                    ..Default::default()
                };
                self.node.propose_conf_change(context, change)?
            }
        }
        Ok(seq)
    }

    /// Why the members cannot change right now, if they cannot: raft-rs takes one
    /// configuration change at a time (and silently drops a second one); and a log that
    /// starts at index 1 (made before logs began with the voters in a snapshot, see
    /// [`super::log`]) would hand a new member its entries without the voters they were
    /// committed under.
    fn members_may_change(&self) -> Result<(), StoreError> {
        if self.node.raft.has_pending_conf() {
            return Err(StoreError::Unavailable(
                "another change of the members is still being applied; try again".into(),
            ));
        }
        if self.node.store().first_index() <= BOOTSTRAP_INDEX {
            return Err(StoreError::Unavailable(
                "this control plane's log was made by an older shipshape and starts at \
                 index 1; members cannot be changed until it has been compacted once"
                    .into(),
            ));
        }
        Ok(())
    }

    fn fail_pending(&mut self, err: impl Fn() -> StoreError) {
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(err()));
        }
    }

    async fn on_ready(&mut self) -> Result<(), StoreError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        if let Some(ss) = ready.ss() {
            let leading = ss.raft_state == StateRole::Leader;
            self.flags.leader.store(leading, Ordering::Release);
            self.flags.leader_id.store(ss.leader_id, Ordering::Release);
            self.seen_leader |= ss.leader_id != 0;
            if !leading {
                self.fail_pending(|| StoreError::Dropped);
            }
            // raft-rs forgets read requests across a change of leader: ask again.
            for (_, reply) in self.reads_asked.drain() {
                let _ = reply.send(Err(StoreError::Dropped));
            }
        }
        for read in ready.take_read_states() {
            if let Ok(number) = <[u8; 8]>::try_from(read.request_ctx.as_slice())
                && let Some(reply) = self.reads_asked.remove(&u64::from_be_bytes(number))
            {
                self.reads_confirmed.push((read.index, reply));
            }
        }
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot();
            self.state
                .restore(snapshot.get_metadata().index, &snapshot.data)?;
            self.node.mut_store().apply_snapshot(snapshot)?;
            tell_transport_the_members(&self.state, self.transport.as_ref())?;
            self.note_voters();
        }
        self.apply(ready.take_committed_entries())?;
        self.node.mut_store().append(ready.entries())?;
        if let Some(hs) = ready.hs() {
            self.node.mut_store().set_hard_state(hs)?;
        }
        if ready.must_sync() {
            self.db.flush_async().await?;
        }
        self.send(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit)?;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.node.advance_apply();
        self.release_reads();
        self.maybe_compact().await
    }

    fn send(&self, messages: Vec<Message>) {
        messages.into_iter().for_each(|m| self.transport.send(m));
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        for entry in entries {
            let outcome = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    // A new leader's empty entry: nothing to apply.
                    self.state.apply_noop(entry.index)?;
                    continue;
                }
                EntryType::EntryNormal => self.state.apply(entry.index, &entry.data)?,
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let cs = if entry.get_entry_type() == EntryType::EntryConfChange {
                        let cc = ConfChange::parse_from_bytes(&entry.data)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        let cs = self.node.apply_conf_change(&cc)?;
                        self.record_member_change(entry.index, &cc)?;
                        cs
                    } else {
                        let cc = ConfChangeV2::parse_from_bytes(&entry.data)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        let cs = self.node.apply_conf_change(&cc)?;
                        self.state.apply_noop(entry.index)?;
                        cs
                    };
                    tracing::info!(voters = ?cs.voters, "the members changed");
                    self.node.mut_store().set_conf_state(cs)?;
                    self.note_voters();
                    Ok(WriteResult {
                        revision: self.state.revision(),
                        previous: Vec::new(),
                    })
                }
            };
            if let Some(reply) = self.own_proposal(&entry.context) {
                let _ = reply.send(outcome);
            }
        }
        Ok(())
    }

    /// Records what an applied configuration change did to its member, and tells the
    /// transport, so that every replica sends to a new member and refuses a removed one.
    fn record_member_change(&mut self, index: u64, cc: &ConfChange) -> Result<(), StoreError> {
        let id = cc.node_id;
        match cc.change_type {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let address = String::from_utf8_lossy(&cc.context).into_owned();
                self.state
                    .record_member(index, id, &MemberRecord::Added(address.clone()))?;
                self.transport.member_added(id, &address);
            }
            ConfChangeType::RemoveNode => {
                self.state
                    .record_member(index, id, &MemberRecord::Removed)?;
                self.transport.member_removed(id);
                if id == self.node.raft.id {
                    tracing::warn!(
                        member = id,
                        "this member was removed from the control plane: it no longer votes \
                         or serves, and its data directory can be wiped"
                    );
                }
            }
        }
        Ok(())
    }

    /// The reply channel for an entry this replica proposed, found through its context.
    fn own_proposal(&mut self, context: &[u8]) -> Option<Reply> {
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_be_bytes(
                context.get(at..at + 8)?.try_into().ok()?,
            ))
        };
        let (id, incarnation, seq) = (word(0)?, word(8)?, word(16)?);
        if id != self.node.raft.id || incarnation != self.incarnation {
            return None;
        }
        self.pending.remove(&seq)
    }

    async fn maybe_compact(&mut self) -> Result<(), StoreError> {
        let applied = self.node.raft.raft_log.applied;
        if applied.saturating_sub(self.node.store().first_index()) < self.compact_after {
            return Ok(());
        }
        // The applied state must be durable before the entries that produced it go.
        self.db.flush_async().await?;
        self.node.mut_store().compact(applied)
    }
}

/// Forwards raft-rs's slog records to `tracing`, at debug level.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        tracing::debug!(target: "raft", "{}", record.msg());
        Ok(())
    }
}
