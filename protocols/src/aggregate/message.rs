//! Aggregation's wire messages and the events it gives its host (PROTOCOLS.md §5.2–5.5).

use serde::{Deserialize, Serialize};

use super::query::{Query, QueryId, QueryResult};
use crate::id::NodeId;
use crate::wire::{Protocol, WireMessage};

/// The aggregation wire messages, all datagrams (PROTOCOLS.md §5.2–5.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AggMessage {
    /// Push-sum mass. Plain push-sum: `session`, `floor` and `seq` are 0. Acknowledged:
    /// `seq` ≥ 1, `floor` ≤ `seq` is the sender's lowest outstanding seq.
    PsMass {
        /// The query (a node joins on it).
        query: Query,
        /// The sender's session in this query.
        session: u64,
        /// Every seq of this session below it has been acknowledged.
        floor: u64,
        /// The transfer's seq.
        seq: u64,
        /// Value mass.
        s: f64,
        /// Weight mass (≥ 0).
        w: f64,
    },
    /// Acknowledges transfer `seq` of the receiver's session `session` (also sent for
    /// duplicates).
    PsAck {
        /// The query.
        qid: QueryId,
        /// The session of the transfer's sender, echoed.
        session: u64,
        /// The transfer's seq.
        seq: u64,
    },
    /// Extremum push: the sender's current min/max (±∞ if it knows none).
    ExtPush {
        /// The query.
        query: Query,
        /// The sender's value.
        m: f64,
    },
    /// Extremum reply: the replier's value before merging.
    ExtReply {
        /// The query.
        qid: QueryId,
        /// The replier's value.
        m: f64,
    },
    /// Push-pull averaging request: the initiator's (s, w).
    PpxRequest {
        /// The query.
        query: Query,
        /// Value mass.
        s: f64,
        /// Weight mass.
        w: f64,
    },
    /// Push-pull averaging reply: the passive side's (s, w) before averaging.
    PpxReply {
        /// The query.
        qid: QueryId,
        /// Value mass.
        s: f64,
        /// Weight mass.
        w: f64,
    },
}

impl WireMessage for AggMessage {
    const KIND: Protocol = Protocol::Aggregation;
}

/// What aggregation tells its host.
#[derive(Clone, Debug, PartialEq)]
pub enum AggEvent {
    /// This node started `query`: the Engine announces it by rumor (§5.1).
    Announce(Query),
    /// This node joined a query it learned from `from` (`None`: a local `join`).
    Joined {
        /// The query.
        qid: QueryId,
        /// The peer whose message carried it.
        from: Option<NodeId>,
    },
    /// The querier's answer (once per query): the Engine reports it and starts `QueryEnd`.
    Answered(QueryResult),
    /// The query's state was dropped after `query_ttl` rounds without an end.
    Expired(QueryId),
}
