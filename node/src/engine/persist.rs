//! Durability, the Engine's side (DESIGN.md, "Durability"): what it asks its host to keep, and
//! what it takes back after a restart. The store itself is I/O and belongs to the host (the
//! daemon's runtime writes to disk, the simulator keeps a map per node); the Engine only emits
//! [`Persist`] records and accepts a [`Restored`] snapshot.
//!
//! - Every message this node publishes, every message it delivers on a subscribed topic and
//!   every gap it announces is emitted as a [`Persist`] record before the event that reports it (a publish's write
//!   comes out of [`Engine::publish`](super::Engine::publish) itself, so a host can hold the
//!   publisher's acknowledgement until the write is durable).
//! - After a restart the host hands back, before anything else happens, the last seq of each
//!   of this node's own streams and the most recent retained messages
//!   ([`Engine::restore`](super::Engine::restore)). The node's streams continue where they
//!   stopped (same origin, next seq), its own recent messages are advertised again for repair,
//!   and a topic resumed with [`SubscribeFrom::Resume`] starts each stream after the last
//!   message this node kept, so what was published meanwhile is fetched from its peers.

use hearsay_protocols::pbcast::Data;
use hearsay_protocols::{NodeId, Seq, TopicId};

/// A record the Engine asks its host to make durable.
#[derive(Clone, Debug, PartialEq)]
pub enum Persist {
    /// A message of one of this node's streams (`own`) or one it delivered on a subscribed
    /// topic. A store keeps it as retention allows, and keeps the last seq of each own stream
    /// beyond retention.
    Message {
        /// The message.
        data: Data,
        /// Published here.
        own: bool,
    },
    /// A gap notice this node announced: kept, so a replay announces it again.
    Gap {
        /// The topic.
        topic: TopicId,
        /// The stream's origin.
        origin: NodeId,
        /// First seq given up.
        first: Seq,
        /// Last seq given up.
        last: Seq,
    },
}

/// What a host's store gives back at start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restored {
    /// Per topic, the last seq this node published (its own streams continue after it).
    pub counters: Vec<(TopicId, Seq)>,
    /// Per (topic, origin), the highest seq this node kept: where a resumed subscription's
    /// streams continue.
    pub heads: Vec<(TopicId, NodeId, Seq)>,
    /// Recent retained messages (the Engine keeps what fits its in-memory histories, oldest
    /// first), to serve repairs again.
    pub messages: Vec<Data>,
}

/// Where a new subscription's streams start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SubscribeFrom {
    /// The topic's current heads: only what is published from now on (asked of a member; no
    /// gap is announced for what came before).
    #[default]
    New,
    /// Every stream from seq 1: everything any member still holds is fetched, what none holds
    /// any more is announced as a gap.
    All,
    /// After what this node kept before a restart ([`Restored::heads`]); streams it never saw
    /// from seq 1.
    Resume,
}
