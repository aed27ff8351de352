//! Anti-entropy's wire messages and the events it gives its host (PROTOCOLS.md §1.2).

use serde::{Deserialize, Serialize};

use super::{AeMode, Entry, StreamSummary};
use crate::auth::Proof;
use crate::id::{NodeId, TopicId};
use crate::wire::{Protocol, WireMessage};

/// A list of stream summaries, possibly a rotating window of a larger set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Summaries, strictly ascending by stream.
    pub summaries: Vec<StreamSummary>,
    /// True when streams were left out: an absent stream is then unknown, not empty.
    pub partial: bool,
}

/// The anti-entropy wire messages (all sent on one stream per exchange).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AeMessage {
    /// Initiator → responder: opens an exchange.
    Syn {
        /// Exchange id, chosen by the initiator.
        xid: u64,
        /// The exchange's mode.
        mode: AeMode,
        /// Topics the initiator reconciles, strictly ascending.
        scope: Vec<TopicId>,
        /// The initiator's digest (empty in Push and Heads).
        digest: Digest,
    },
    /// Responder → initiator.
    SynAck {
        /// The exchange id.
        xid: u64,
        /// Topics the responder reconciles: the initiator's scope ∩ its own topics.
        scope: Vec<TopicId>,
        /// The responder's digest (Push, PushPull, Heads).
        digest: Digest,
        /// Entries the initiator lacks (Pull, PushPull).
        delta: Vec<Entry>,
        /// The delta was cut by the byte budget.
        more: bool,
        /// Heads only: for each summary, proof that its `max` exists (its seal, over the
        /// message's digest), so the initiator can check the heads it starts after.
        proofs: Vec<Proof>,
    },
    /// Initiator → responder: entries the responder lacks (Push, PushPull).
    Delta {
        /// The exchange id.
        xid: u64,
        /// The entries.
        delta: Vec<Entry>,
        /// The delta was cut by the byte budget.
        more: bool,
    },
}

impl WireMessage for AeMessage {
    const KIND: Protocol = Protocol::AntiEntropy;
}

/// What anti-entropy tells its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AeEvent {
    /// A new entry arrived from `from` (staged until the next tick under `AtRoundStart`).
    Received {
        /// The peer that sent it.
        from: NodeId,
        /// The entry.
        entry: Entry,
    },
    /// An exchange this node started has finished.
    ExchangeCompleted {
        /// The partner.
        peer: NodeId,
        /// Its id.
        xid: u64,
    },
    /// An exchange this node started got no reply in time, or a malformed one.
    ExchangeAborted {
        /// The partner.
        peer: NodeId,
        /// Its id.
        xid: u64,
    },
    /// The outcome of a Heads exchange opened by
    /// [`AntiEntropy::ask_heads`](super::AntiEntropy::ask_heads) for `topic`: the partner's
    /// summaries, or `None` when the exchange failed. Hand it to pbcast's `handle_heads`.
    Heads {
        /// The partner.
        peer: NodeId,
        /// The topic the heads were asked for.
        topic: TopicId,
        /// Its summaries for the scope of the exchange; `None`: no (valid) reply in time.
        summaries: Option<Vec<StreamSummary>>,
        /// Proofs that the summaries' `max` seqs exist (check them before trusting a head).
        proofs: Vec<Proof>,
    },
}
