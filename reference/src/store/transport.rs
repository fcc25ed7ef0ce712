//! How store replicas reach each other.
//!
//! The raft driver hands every outgoing Raft message to a [`Transport`]; what comes back —
//! messages from other replicas, and news that a peer could not be reached or that a
//! snapshot was or was not delivered — goes into the driver's [`Inbox`]. A write that
//! reaches a replica which does not lead is *forwarded* to the leader through
//! [`Transport::forward`], so a client needs to know only one member.
//!
//! A single-voter store has nobody to talk to and uses [`NoPeers`]; a store of several
//! voters uses the network transport of [`super::peers`].

use futures::future::BoxFuture;
use raft::prelude::Message;
use tokio::sync::mpsc;

use super::{Op, StoreError, WriteResult};

/// Carries Raft messages to other replicas. Sending must not block the driver: queue and
/// return, and drop a message rather than wait (Raft retries what matters).
pub trait Transport: Send + Sync {
    /// Sends one message to replica `message.to`.
    fn send(&self, message: Message);

    /// Whether this transport reaches other members at all (members can be added).
    fn reaches_peers(&self) -> bool {
        false
    }

    /// Called once the replica's driver runs, with the inbox for what peers send back.
    fn attach(&self, _inbox: Inbox) {}

    /// Asks replica `leader` to apply `ops`; its answer is the write's outcome.
    fn forward(
        &self,
        leader: u64,
        ops: Vec<Op>,
    ) -> BoxFuture<'static, Result<WriteResult, StoreError>> {
        let _ = ops;
        not_leader(leader)
    }

    /// Asks replica `leader` to take member `id` out of the voters.
    fn forward_removal(&self, leader: u64, id: u64) -> BoxFuture<'static, Result<(), StoreError>> {
        let _ = id;
        not_leader(leader)
    }

    /// Asks replica `leader` to add member `id`, reachable at `address`, to the voters.
    fn forward_addition(
        &self,
        leader: u64,
        id: u64,
        address: String,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let _ = (id, address);
        not_leader(leader)
    }

    /// Member `id` joined, at peer address `address` (`HOST:PORT`): send to it from now
    /// on. Called for members the replica does not know yet, as their addition applies
    /// and again at every start.
    fn member_added(&self, id: u64, address: &str) {
        let _ = (id, address);
    }

    /// Member `id` left: stop sending to it and refuse what it sends.
    fn member_removed(&self, id: u64) {
        let _ = id;
    }
}

/// What a transport that cannot forward answers: `leader` leads, not this replica.
fn not_leader<T: Send + 'static>(leader: u64) -> BoxFuture<'static, Result<T, StoreError>> {
    let leader = Some(leader);
    Box::pin(std::future::ready(Err(StoreError::NotLeader { leader })))
}

/// What reaches the raft driver from outside.
#[derive(Debug)]
pub(super) enum Inbound {
    /// A Raft message from another replica.
    Message(Message),
    /// Replica `.0` could not be reached: raft-rs slows down sending to it.
    Unreachable(u64),
    /// A snapshot sent to replica `.0` was delivered (`true`) or not.
    SnapshotSent(u64, bool),
}

/// The driver's inbox, for a transport to hand in what it received. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Inbox(pub(super) mpsc::Sender<Inbound>);

impl Inbox {
    /// Hands in a message from another replica (dropped if the driver is busy: Raft
    /// resends what matters).
    pub fn deliver(&self, message: Message) {
        if self.0.try_send(Inbound::Message(message)).is_err() {
            tracing::debug!("dropped an inbound raft message: driver busy or stopped");
        }
    }

    /// Says replica `id` could not be reached.
    pub fn unreachable(&self, id: u64) {
        let _ = self.0.try_send(Inbound::Unreachable(id));
    }

    /// Says whether a snapshot reached replica `id`.
    pub fn snapshot_sent(&self, id: u64, delivered: bool) {
        let _ = self.0.try_send(Inbound::SnapshotSent(id, delivered));
    }
}

/// The transport of a single-voter store: there are no peers, so nothing is ever sent.
#[derive(Debug, Default)]
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, message: Message) {
        tracing::warn!(
            to = message.to,
            "dropping a raft message: this store has no peers"
        );
    }
}
