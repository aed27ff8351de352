//! The ring's wire messages (PROTOCOLS.md §7.3), the events it gives its host, and the errors
//! of its local commands.

use serde::{Deserialize, Serialize};

use hearsay_protocols::NodeId;
use hearsay_protocols::wire::{Protocol, WireMessage};

use super::{RingId, RingNode};

/// Why a local command was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChordError {
    /// The node is not (or no longer) part of a ring.
    #[error("this node has not joined the ring")]
    NotJoined,
    /// The node already joined or is joining.
    #[error("this node already joined the ring")]
    AlreadyJoined,
    /// Another member holds this node's RingId (§7.1).
    #[error("ring identifier {0} is taken by another member")]
    RingIdTaken(RingId),
    /// A join needs another node.
    #[error("cannot join through this node itself")]
    SelfBootstrap,
}

/// The ring's wire messages (§7.3), all datagrams.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChordMessage {
    /// Find the successor of `key`: forwarded (recursive) or answered with `NextHop`
    /// (iterative).
    FindSucc {
        /// The origin's request id.
        req_id: u64,
        /// The key looked up.
        key: RingId,
        /// The node that wants the answer.
        origin: NodeId,
        /// Forwardings so far (the first hop receives 1).
        hops: u8,
        /// Forwardings left.
        ttl: u8,
        /// Iterative mode: answer `NextHop` to the sender instead of forwarding.
        iterative: bool,
        /// Nodes visited, origin first, the sender last (at most [`PATH_MAX`](super::PATH_MAX)).
        path: Vec<NodeId>,
    },
    /// The answer of a recursive lookup, sent to the origin.
    FoundSucc {
        /// The origin's request id.
        req_id: u64,
        /// The key looked up.
        key: RingId,
        /// successor(key).
        node: RingNode,
        /// Forwardings it took to reach the answering node.
        hops: u8,
        /// Nodes visited, origin first, the answering node last (at most [`PATH_MAX`](super::PATH_MAX)).
        path: Vec<NodeId>,
    },
    /// Iterative reply: ask `next` (or, with `done`, `next` is the answer).
    NextHop {
        /// The origin's request id.
        req_id: u64,
        /// The key looked up.
        key: RingId,
        /// The next node to ask, or the answer.
        next: RingNode,
        /// `next` is successor(key).
        done: bool,
    },
    /// Stabilize: what are your predecessor and successor list?
    GetPred {
        /// Request id, echoed.
        req_id: u64,
    },
    /// The answer to `GetPred`.
    PredIs {
        /// The `GetPred`'s id.
        req_id: u64,
        /// The responder's predecessor.
        pred: Option<RingNode>,
        /// The responder's successor list.
        succ_list: Vec<RingNode>,
    },
    /// "I might be your predecessor."
    Notify {
        /// The sender itself.
        node: RingNode,
    },
    /// Liveness probe of the predecessor (standalone ring only).
    RingPing {
        /// Request id, echoed.
        req_id: u64,
    },
    /// The answer to `RingPing`.
    RingPong {
        /// The `RingPing`'s id.
        req_id: u64,
    },
    /// The sender leaves the ring: to its predecessor with its successor list, to its
    /// successor with its predecessor.
    LeaveHint {
        /// The leaver's predecessor (for its successor).
        pred: Option<RingNode>,
        /// The leaver's successor list (for its predecessor).
        succ_list: Vec<RingNode>,
    },
}

impl WireMessage for ChordMessage {
    const KIND: Protocol = Protocol::Ring;
}

/// What the ring tells its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChordEvent {
    /// This node is part of the ring now (from a member table or after its join lookup).
    Joined,
    /// A join through `bootstrap` got no answer after every attempt; the node is idle again.
    JoinFailed {
        /// The member asked.
        bootstrap: NodeId,
    },
    /// A lookup started with [`Chord::lookup`](super::Chord::lookup) found successor(key).
    LookupDone {
        /// Its id.
        id: u64,
        /// The key.
        key: RingId,
        /// successor(key) as the ring answered.
        node: RingNode,
        /// Forwardings (§7.7): 0 when this node answered from its own state.
        hops: u8,
        /// Nodes visited, this node first, the answering node last (at most [`PATH_MAX`](super::PATH_MAX)).
        path: Vec<NodeId>,
    },
    /// A lookup got no answer after every attempt (or the node left).
    LookupFailed {
        /// Its id.
        id: u64,
        /// The key.
        key: RingId,
    },
    /// `succ[0]` changed (`None`: alone on the ring or not joined).
    SuccessorChanged {
        /// The previous successor.
        old: Option<NodeId>,
        /// The new one.
        new: Option<NodeId>,
    },
    /// The predecessor changed.
    PredecessorChanged {
        /// The previous predecessor.
        old: Option<NodeId>,
        /// The new one.
        new: Option<NodeId>,
    },
}
