//! Scribe's wire messages (PROTOCOLS.md §8.3) and the events it gives its host.

use hearsay_protocols::pbcast::Data;
use hearsay_protocols::wire::{Protocol, WireMessage};
use hearsay_protocols::{NodeId, TopicId};
use serde::{Deserialize, Serialize};

use crate::chord::{RingId, RingNode};

/// Scribe's wire messages (§8.3), kind [`Protocol::Tree`]. All are datagrams, except tree
/// data over the datagram budget, which travels on a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScribeMessage {
    /// `child` wants to join the tree of `topic`; routed toward the topic's root.
    Join {
        /// The topic.
        topic: TopicId,
        /// The node that wants a parent (the sender, or a node whose JOIN is passed through).
        child: RingNode,
        /// RingIds of the nodes the JOIN visited, the child first (at most [`PATH_MAX`](super::PATH_MAX)).
        path: Vec<RingId>,
    },
    /// "You are my child now", to the joiner.
    JoinAck {
        /// The topic.
        topic: TopicId,
        /// The root as the acker knows it (`None`: the acker is not attached yet).
        root: Option<RingId>,
        /// The acker's ancestors followed by the acker, root first.
        ancestors: Vec<RingId>,
    },
    /// "I am not your neighbour (any more) in this tree."
    Leave {
        /// The topic.
        topic: TopicId,
    },
    /// A message routed toward the root until it meets the tree.
    Publish {
        /// The message (`via: FirstPhase`).
        data: Data,
        /// Hops left.
        ttl: u8,
    },
    /// A message travelling along a tree edge.
    TreeData {
        /// The message (`via: FirstPhase`).
        data: Data,
    },
    /// Parent to child, every heartbeat interval.
    Heartbeat {
        /// The topic.
        topic: TopicId,
        /// The root as the parent knows it.
        root: Option<RingId>,
        /// The parent's ancestors followed by the parent, root first.
        ancestors: Vec<RingId>,
    },
    /// Child to parent, in answer to a heartbeat.
    HeartbeatAck {
        /// The topic.
        topic: TopicId,
    },
}

impl WireMessage for ScribeMessage {
    const KIND: Protocol = Protocol::Tree;
}

impl ScribeMessage {
    /// True for tree maintenance (JOIN, acks, LEAVE, heartbeats); false for messages that carry
    /// data.
    pub fn is_control(&self) -> bool {
        !matches!(self, ScribeMessage::Publish { .. } | ScribeMessage::TreeData { .. })
    }

    /// The data a `Publish` or `TreeData` carries.
    pub fn data(&self) -> Option<&Data> {
        match self {
            ScribeMessage::Publish { data, .. } | ScribeMessage::TreeData { data } => Some(data),
            _ => None,
        }
    }
}

/// Why a node lost its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detach {
    /// No heartbeat or tree data from the parent for `parent_timeout_mult` intervals.
    ParentTimeout,
    /// The membership layer reported the parent Dead or Left.
    ParentDown,
    /// The parent said it is not our parent (a Leave).
    ParentLeft,
    /// This node appeared in its own ancestor list, or the list reached `max_depth`.
    Cycle,
    /// This node was the root and no longer is responsible for the topic.
    RootMoved,
}

/// What Scribe tells its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScribeEvent {
    /// The first copy of a message reached this member through the tree: hand it to
    /// `Pbcast::handle_data` (§8.9). Never emitted for this node's own publishes.
    FirstPhase(Data),
    /// This node got a parent in `topic`'s tree.
    Attached {
        /// The topic.
        topic: TopicId,
        /// The new parent.
        parent: NodeId,
    },
    /// This node lost its parent (or its root role) and re-joins; its children stay.
    Detached {
        /// The topic.
        topic: TopicId,
        /// Why.
        cause: Detach,
    },
    /// This node is now the root of `topic`'s tree.
    BecameRoot {
        /// The topic.
        topic: TopicId,
    },
}
