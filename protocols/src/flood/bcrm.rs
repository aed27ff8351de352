//! Blind counter rumor mongering with parameters B and F (PROTOCOLS.md §3.3).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::{BcrmConfig, Expiry, FloodEvent, FloodMessage, FloodStats};
use crate::id::NodeId;
use crate::machine::{Machine, Outbox, Transmit};
use crate::peers::PeerView;
use crate::rng::{Rng, Seed};
use crate::rumor::RumorId;
use crate::time::Instant;

/// One message's state at one node.
#[derive(Clone, Debug)]
struct Held {
    /// Receptions so far (the origin's own send is not one).
    received: u32,
    /// Neighbours known to have the message, ascending.
    known: Vec<NodeId>,
    /// Kept while receptions may still trigger forwarding.
    payload: Bytes,
    first_seen: Instant,
}

/// Blind counter rumor mongering at one node. Drive it as described in [`crate::machine`]; it
/// has no timer.
#[derive(Debug)]
pub struct Bcrm {
    id: NodeId,
    config: Arc<BcrmConfig>,
    rng: Rng,
    neighbours: PeerView,
    held: BTreeMap<RumorId, Held>,
    expiry: Expiry,
    out: Outbox<FloodMessage, FloodEvent>,
    stats: FloodStats,
}

impl Bcrm {
    /// The machine name used to derive its RNG from the node seed.
    pub const NAME: &'static str = "bcrm";

    /// A BCRM machine for node `id`, its RNG derived from the node's seed.
    pub fn new(id: NodeId, config: Arc<BcrmConfig>, node_seed: &Seed) -> Self {
        Bcrm {
            id,
            config,
            rng: Rng::from_seed(node_seed.machine(Self::NAME)),
            neighbours: PeerView::default(),
            held: BTreeMap::new(),
            expiry: Expiry::default(),
            out: Outbox::default(),
            stats: FloodStats::default(),
        }
    }

    /// Replace the neighbour list.
    pub fn set_neighbours(&mut self, neighbours: PeerView) {
        self.neighbours = neighbours;
    }

    /// Start a message here: send it to min(B, degree) uniformly chosen neighbours. False
    /// (nothing sent) if this node already holds it.
    pub fn originate(&mut self, now: Instant, id: RumorId, payload: Bytes) -> bool {
        if self.held.contains_key(&id) {
            return false;
        }
        self.held.insert(id, Held { received: 0, known: Vec::new(), payload, first_seen: now });
        self.forward(id);
        true
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// True if this node holds `id` (and has not yet forgotten it).
    pub fn holds(&self, id: &RumorId) -> bool {
        self.held.contains_key(id)
    }

    /// The neighbours this node knows to have `id`, ascending.
    pub fn known(&self, id: &RumorId) -> &[NodeId] {
        self.held.get(id).map_or(&[], |h| &h.known)
    }

    /// The counters.
    pub fn stats(&self) -> &FloodStats {
        &self.stats
    }

    /// Send `id` to min(B, |C|) members of C = neighbours not known to have it, drawn
    /// uniformly from C in ascending order (§0.3), and add them to `known`.
    fn forward(&mut self, id: RumorId) {
        let Some(held) = self.held.get_mut(&id) else { return };
        let me = self.id;
        let candidates: Vec<NodeId> = self
            .neighbours
            .as_slice()
            .iter()
            .copied()
            .filter(|n| *n != me && held.known.binary_search(n).is_err())
            .collect();
        let b = self.config.b as usize;
        for i in self.rng.distinct(candidates.len(), b) {
            let to = candidates[i];
            if let Err(at) = held.known.binary_search(&to) {
                held.known.insert(at, to);
            }
            self.stats.sent += 1;
            self.out.datagram(to, FloodMessage::Gossip { id, payload: held.payload.clone() });
        }
    }
}

impl Machine for Bcrm {
    type Message = FloodMessage;
    type Event = FloodEvent;

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: FloodMessage) {
        let FloodMessage::Gossip { id, payload } = msg else {
            self.stats.malformed += 1;
            return;
        };
        let retention = self.config.retention;
        if self.expiry.due(now, retention) {
            self.held.retain(|_, h| h.first_seen + retention > now);
        }
        let f = self.config.f;
        let is_neighbour = self.neighbours.contains(&from);
        let held = match self.held.get_mut(&id) {
            Some(h) => {
                self.stats.duplicates += 1;
                h
            }
            None => {
                self.stats.delivered += 1;
                self.out.event(FloodEvent::Delivered { id, payload: payload.clone(), from });
                self.held.entry(id).or_insert(Held {
                    received: 0,
                    known: Vec::new(),
                    payload,
                    first_seen: now,
                })
            }
        };
        if is_neighbour {
            if let Err(at) = held.known.binary_search(&from) {
                held.known.insert(at, from);
            }
        }
        held.received = held.received.saturating_add(1);
        if held.received <= f {
            self.forward(id);
        }
        if let Some(h) = self.held.get_mut(&id).filter(|h| h.received >= f) {
            h.payload = Bytes::new();
        }
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
