//! Routing over the ring (PROTOCOLS.md §7.4, §8.1): `closest_preceding_node`, the next hop of
//! a message routed toward a key, and responsibility for a key.
//!
//! [`Routes`] is a copy of one node's routing state (successor list, predecessor or its
//! stand-in, fingers, the hops it avoids). The ring hands it out with [`Chord::routes`]
//! (super::Chord::routes) whenever that state may have changed, and Scribe routes by it: a
//! side input, not a borrow of the ring on every call. The ring's own lookups use the same
//! [`closest_preceding`] with its live state.

use hearsay_protocols::NodeId;

use super::ring::Fingers;
use super::{RingId, RingNode};

/// A snapshot of one node's routing state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routes {
    pub(super) me: RingNode,
    /// On a ring (joined, not left).
    pub(super) joined: bool,
    /// Successor list, closest first, self never included; empty: alone.
    pub(super) succ: Vec<RingNode>,
    /// The predecessor, or the closest member below standing in for it (§8.1).
    pub(super) below: Option<RingNode>,
    pub(super) fingers: Fingers,
    /// Nodes kept out of routing (reported dead, or silent recently), ascending.
    pub(super) avoided: Vec<NodeId>,
    /// Successor-list entries compete with fingers (`ChordConfig::route_via_successors`).
    pub(super) via_successors: bool,
}

impl Routes {
    /// The routes of a node that is on no ring: it cannot route and is responsible for
    /// nothing.
    pub fn unrouted(id: NodeId) -> Self {
        Routes {
            me: RingNode::of(id),
            joined: false,
            succ: Vec::new(),
            below: None,
            fingers: Fingers::default(),
            avoided: Vec::new(),
            via_successors: false,
        }
    }

    /// The node these routes belong to.
    pub fn node(&self) -> RingNode {
        self.me
    }

    /// The node a message routed toward `key` goes to next (§8.1): the successor if `key` lies
    /// in (n, succ\[0\]], else the closest preceding finger (or successor), else the successor.
    /// `None` when this node is alone or not joined (it is then responsible itself).
    pub fn next_hop(&self, key: RingId) -> Option<NodeId> {
        if !self.joined {
            return None;
        }
        let s = *self.succ.first()?;
        if key.in_half_open(self.me.ring, s.ring) {
            return Some(s.id);
        }
        let x = self.closest_preceding(key, &[]);
        Some(if x.id == self.me.id { s.id } else { x.id })
    }

    /// [`Routes::next_hop`] avoiding the nodes in `avoid` (hops a routed message already went to
    /// without an answer): the closest preceding finger or successor of `key` not avoided.
    /// `None` if there is none, or if `key` lies in (n, succ\[0\]]: its successor is then the one
    /// node to go to (any other overshoots the key). Scribe retries a JOIN this way, as a lookup
    /// retries from its next-best first hop (§7.4).
    pub fn next_hop_avoiding(&self, key: RingId, avoid: &[NodeId]) -> Option<NodeId> {
        if avoid.is_empty() {
            return self.next_hop(key);
        }
        if !self.joined {
            return None;
        }
        let s = *self.succ.first()?;
        if key.in_half_open(self.me.ring, s.ring) {
            return (!avoid.contains(&s.id)).then_some(s.id);
        }
        let x = self.closest_preceding(key, avoid);
        (x.id != self.me.id).then_some(x.id)
    }

    /// True if this node is responsible for `key`: `key ∈ (pred, n]` (§8.1). With no
    /// predecessor, the closest member below from the membership layer stands in; with
    /// neither, only a node alone on the ring is responsible.
    pub fn is_responsible(&self, key: RingId) -> bool {
        if !self.joined {
            return false;
        }
        match self.below {
            Some(p) => key.in_half_open(p.ring, self.me.ring),
            None => self.succ.is_empty(),
        }
    }

    fn closest_preceding(&self, key: RingId, exclude: &[NodeId]) -> RingNode {
        let avoided = |id: &NodeId| self.avoided.binary_search(id).is_ok();
        closest_preceding(self.me, &self.fingers, &self.succ, self.via_successors, key, |x| {
            !avoided(&x.id) && !exclude.contains(&x.id)
        })
    }
}

/// closest_preceding_node(key): the finger in (n, key) farthest from `me` that is `usable`
/// (and not `me`); successor-list entries compete too with `via_successors` (the ToN variant),
/// and stand in when no finger qualifies. `me` if none.
pub(super) fn closest_preceding(
    me: RingNode,
    fingers: &Fingers,
    succ: &[RingNode],
    via_successors: bool,
    key: RingId,
    usable: impl Fn(&RingNode) -> bool,
) -> RingNode {
    let n = me.ring;
    let farthest = |best: RingNode, x: &RingNode| {
        if n.distance(x.ring) > n.distance(best.ring) && x.ring.in_open(n, key) && x.id != me.id && usable(x)
        {
            *x
        } else {
            best
        }
    };
    let best = if via_successors {
        fingers.entries().chain(succ.iter()).fold(me, farthest)
    } else {
        fingers.entries().fold(me, farthest)
    };
    if best.id == me.id { succ.iter().fold(me, farthest) } else { best }
}
