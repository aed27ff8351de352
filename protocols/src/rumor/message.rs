//! Rumor mongering's wire messages and the events it gives its host (PROTOCOLS.md §2.3).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::{NodeId, Seq, StreamId, TopicId};
use crate::wire::{Protocol, WireMessage};

/// What a rumor is: a topic message or an aggregation query announcement (PROTOCOLS.md §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RumorId {
    /// A message of a `gossip`-mode topic: its MsgId (origin and topic as a stream, and seq).
    Message {
        /// The topic and the origin.
        stream: StreamId,
        /// The origin's sequence number on that topic.
        seq: Seq,
    },
    /// An aggregation query (§5.1): the querier and its own query counter.
    Query {
        /// The node that asked.
        querier: NodeId,
        /// The querier's counter.
        counter: u64,
    },
}

impl RumorId {
    /// Who the rumor is from: a message's stream origin, a query's querier (as claimed: not
    /// authenticated here).
    pub fn origin(&self) -> NodeId {
        match self {
            RumorId::Message { stream, .. } => stream.origin,
            RumorId::Query { querier, .. } => *querier,
        }
    }

    /// The topic a message rumor belongs to; `None` for a query.
    pub fn topic(&self) -> Option<TopicId> {
        match self {
            RumorId::Message { stream, .. } => Some(stream.topic),
            RumorId::Query { .. } => None,
        }
    }
}

/// One rumor on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rumor {
    /// Its id.
    pub id: RumorId,
    /// Its content, opaque to this machine.
    pub payload: Bytes,
}

/// The rumor-mongering wire messages (all datagrams but an oversized rumor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RumorMessage {
    /// Hot rumors, strictly ascending by id: a push, the push half of push-pull (`pull`), or
    /// the answer to a pull.
    Rumors {
        /// The rumors.
        items: Vec<Rumor>,
        /// The sender also wants the recipient's hot rumors (push-pull).
        pull: bool,
        /// The sender wants to know which of `items` the recipient already knew.
        want_feedback: bool,
    },
    /// Ask the recipient for its hot rumors (pull).
    Pull,
    /// Whether the recipient of a `Rumors` already knew each item, strictly ascending by id.
    Feedback {
        /// (rumor, knew it already).
        items: Vec<(RumorId, bool)>,
    },
}

impl WireMessage for RumorMessage {
    const KIND: Protocol = Protocol::Rumor;
}

/// What rumor mongering tells its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RumorEvent {
    /// The first receipt of a rumor (never for one injected here).
    Delivered {
        /// The rumor.
        id: RumorId,
        /// Its content.
        payload: Bytes,
        /// The peer it came from.
        from: NodeId,
    },
    /// This node lost interest in a rumor: it will not send it again.
    Removed {
        /// The rumor.
        id: RumorId,
    },
}
