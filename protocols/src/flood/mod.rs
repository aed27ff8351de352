//! Application-level broadcast over a fixed neighbour graph: flooding with a TTL, and blind
//! counter rumor mongering (BCRM) with parameters B and F (Portmann & Seneviratne 2002;
//! PROTOCOLS.md §3).
//!
//! Both spread one message from its origin over an overlay graph in which each node knows only
//! its neighbours. **Flooding** ([`Flooding`]) forwards every first copy to all neighbours but
//! the one it came from, while the TTL lasts; it reaches everything within TTL hops, at the
//! price of about one message per edge direction, most of them duplicates. **BCRM**
//! ([`Bcrm`]) forwards on each of a node's first F receptions to at most B neighbours chosen
//! uniformly among those *not known to have the message* (p knows r has m iff p sent m to r or
//! received m from r; nothing else, no feedback). It is "blind" because it never asks whether
//! a recipient already had m, and "counter" because a node stops after F receptions. The
//! seed's claim for B = F = 2 against flooding: about half the messages, about 90% coverage,
//! about twice as slow.
//!
//! These are simulator protocols (the `flood-vs-gossip` experiment), not delivery paths of the
//! daemon; neither repairs anything.
//!
//! # Driving it
//!
//! The [`Machine`] contract (see [`crate::machine`]). The host hands each machine its
//! neighbours with [`Flooding::set_neighbours`] / [`Bcrm::set_neighbours`] and starts a message
//! with [`Flooding::originate`] / [`Bcrm::originate`]. Event: [`FloodEvent::Delivered`] on the
//! first copy of a message.
//!
//! # Timers
//!
//! None: `poll_timeout` is always `None` and `handle_timeout` does nothing; old state expires
//! lazily as messages arrive (below).
//!
//! # Departures from PROTOCOLS.md §3
//!
//! - Messages are identified by a [`RumorId`] (a MsgId is one of its variants).
//! - Neighbour lists are sorted by `NodeId`, the machines' only view of their peers (§0.3),
//!   not by simulator index; uniform choice over either is the same distribution.
//! - `seen` (and BCRM's per-message state) expires lazily: entries older than the retention
//!   are dropped when a later message arrives, so neither machine needs a timer.
//! - A `Flood` with TTL 0 can only come from a broken peer: counted as malformed, dropped.

mod bcrm;
mod config;
mod message;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

pub use self::bcrm::Bcrm;
pub use self::config::{BcrmConfig, ConfigError, FloodConfig};
pub use self::message::{FloodEvent, FloodMessage};
use crate::id::NodeId;
use crate::machine::{Machine, Outbox, Transmit};
use crate::peers::PeerView;
pub use crate::rumor::RumorId;
use crate::time::{Duration, Instant};

/// Counters of both machines, for the experiment and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodStats {
    /// Messages sent (originated and forwarded copies).
    pub sent: u64,
    /// First copies received.
    pub delivered: u64,
    /// Copies of a message already seen (flooding) or received before (BCRM).
    pub duplicates: u64,
    /// Messages dropped as malformed (a `Flood` with TTL 0, a message of the other protocol).
    pub malformed: u64,
}

/// Drops entries older than `retention` at most every half retention (lazy expiry).
#[derive(Clone, Copy, Debug, Default)]
struct Expiry {
    next: Instant,
}

impl Expiry {
    fn due(&mut self, now: Instant, retention: Duration) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + Duration::from_micros(retention.as_micros() / 2).max(Duration::from_micros(1));
        true
    }
}

/// Flooding with a TTL at one node. Drive it as described in [`crate::machine`]; it has no
/// timer.
#[derive(Debug)]
pub struct Flooding {
    id: NodeId,
    config: Arc<FloodConfig>,
    neighbours: PeerView,
    seen: BTreeMap<RumorId, Instant>,
    expiry: Expiry,
    out: Outbox<FloodMessage, FloodEvent>,
    stats: FloodStats,
}

impl Flooding {
    /// A flooding machine for node `id` (it draws nothing at random, so it needs no seed).
    pub fn new(id: NodeId, config: Arc<FloodConfig>) -> Self {
        Flooding {
            id,
            config,
            neighbours: PeerView::default(),
            seen: BTreeMap::new(),
            expiry: Expiry::default(),
            out: Outbox::default(),
            stats: FloodStats::default(),
        }
    }

    /// Replace the neighbour list.
    pub fn set_neighbours(&mut self, neighbours: PeerView) {
        self.neighbours = neighbours;
    }

    /// Flood a new message from here to every neighbour. False (nothing sent) if already seen.
    pub fn originate(&mut self, now: Instant, id: RumorId, payload: Bytes) -> bool {
        if self.seen.contains_key(&id) {
            return false;
        }
        self.seen.insert(id, now);
        let ttl = self.config.ttl.max(1);
        self.forward(None, id, ttl, &payload);
        true
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// True if `id` has been seen (and not yet forgotten).
    pub fn has_seen(&self, id: &RumorId) -> bool {
        self.seen.contains_key(id)
    }

    /// The counters.
    pub fn stats(&self) -> &FloodStats {
        &self.stats
    }

    fn forward(&mut self, except: Option<NodeId>, id: RumorId, ttl: u8, payload: &Bytes) {
        for &n in self.neighbours.as_slice() {
            if Some(n) == except || n == self.id {
                continue;
            }
            self.stats.sent += 1;
            self.out.datagram(n, FloodMessage::Flood { id, ttl, payload: payload.clone() });
        }
    }
}

impl Machine for Flooding {
    type Message = FloodMessage;
    type Event = FloodEvent;

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: FloodMessage) {
        let FloodMessage::Flood { id, ttl, payload } = msg else {
            self.stats.malformed += 1;
            return;
        };
        if ttl == 0 {
            self.stats.malformed += 1;
            return;
        }
        let retention = self.config.seen_retention;
        if self.expiry.due(now, retention) {
            self.seen.retain(|_, at| *at + retention > now);
        }
        if self.seen.contains_key(&id) {
            self.stats.duplicates += 1;
            return;
        }
        self.seen.insert(id, now);
        self.stats.delivered += 1;
        if ttl > 1 {
            self.forward(Some(from), id, ttl - 1, &payload);
        }
        self.out.event(FloodEvent::Delivered { id, payload, from });
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self) -> Option<Transmit<FloodMessage>> {
        self.out.pop_transmit()
    }

    fn poll_event(&mut self) -> Option<FloodEvent> {
        self.out.pop_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
