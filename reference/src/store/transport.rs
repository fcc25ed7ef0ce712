//! How store replicas reach each other.
//!
//! The raft driver hands every outgoing Raft message to a [`Transport`]; messages that
//! arrive from other replicas are handed back with [`crate::store::Store::receive`]. A
//! single-voter store has nobody to talk to and uses [`NoPeers`]; a three-voter store plugs
//! in a network transport here and changes nothing else.

use raft::prelude::Message;

/// Carries Raft messages to other replicas. Sending must not block the driver: queue and
/// return, and drop a message rather than wait (Raft retries what matters).
pub trait Transport: Send + Sync {
    /// Sends one message to replica `message.to`.
    fn send(&self, message: Message);
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
