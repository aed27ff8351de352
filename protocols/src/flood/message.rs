//! The wire messages of flooding and BCRM and the events they give their host
//! (PROTOCOLS.md §3.2–3.3).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::rumor::RumorId;
use crate::wire::{Protocol, WireMessage};

/// The wire messages of both protocols (datagrams).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FloodMessage {
    /// Flooding: the message and the hops it may still travel (≥ 1).
    Flood {
        /// The message's id.
        id: RumorId,
        /// Remaining hops, including this one.
        ttl: u8,
        /// The content.
        payload: Bytes,
    },
    /// BCRM: the message.
    Gossip {
        /// The message's id.
        id: RumorId,
        /// The content.
        payload: Bytes,
    },
}

impl WireMessage for FloodMessage {
    const KIND: Protocol = Protocol::Flood;
}

/// What both machines tell their host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FloodEvent {
    /// The first copy of a message reached this node (never for one originated here).
    Delivered {
        /// The message.
        id: RumorId,
        /// Its content.
        payload: Bytes,
        /// The neighbour it came from.
        from: NodeId,
    },
}
