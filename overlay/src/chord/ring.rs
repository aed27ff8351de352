//! The identifier circle: [`RingId`] and its interval arithmetic (PROTOCOLS.md §0.2, §7.1),
//! node references, the run-length finger table, and [`RingSnapshot`], a sorted view of the
//! members from which a joining node computes its state (§7.6) and the simulator its oracle.

use std::fmt;

use hearsay_protocols::NodeId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Number of fingers of the paper's base-2 table: the identifier space has m = 64 bits (§7.1,
/// §10.7).
pub const FINGERS: usize = 64;

/// Where the fingers point: base 2^`bits` (ChordConfig::finger_base_bits). Finger `k` is digit
/// `k % (b − 1) + 1` of level `k / (b − 1)`: it targets `n + digit · b^level`, and its interval
/// runs to the next finger's target (the last one's to `n`). Base 2 is the paper's table,
/// `n + 2^k` for k in `0..64`; base b has (b − 1) · 64 / bits fingers and routes in about
/// log_b N hops (the k-ary Chord of Ganesan and Manku, and Pastry's digits), which makes trees
/// shallower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FingerLayout {
    bits: u8,
}

impl FingerLayout {
    /// The paper's base-2 table.
    pub const BINARY: FingerLayout = FingerLayout { bits: 1 };

    /// Base 2^`bits`; `bits` must divide 64 and be at most 4 (base 2, 4 or 16).
    pub fn new(bits: u8) -> Option<FingerLayout> {
        matches!(bits, 1 | 2 | 4).then_some(FingerLayout { bits })
    }

    /// The bits of a base given as text (`"2"`, `"4"` or `"16"`), for command-line flags.
    pub fn parse_base(base: &str) -> Result<u8, String> {
        match base {
            "2" => Ok(1),
            "4" => Ok(2),
            "16" => Ok(4),
            _ => Err(format!("`{base}` is not a finger base: 2, 4 or 16")),
        }
    }

    /// Number of fingers.
    pub fn len(self) -> usize {
        ((1usize << self.bits) - 1) * (64 / usize::from(self.bits))
    }

    /// Never empty (for clippy's `len` without `is_empty`).
    pub fn is_empty(self) -> bool {
        false
    }

    /// How far finger `k` (`k < len`) targets from the node: digit · b^level.
    pub fn offset(self, k: usize) -> u64 {
        let per = (1usize << self.bits) - 1;
        let (level, digit) = (k / per, k % per + 1);
        (digit as u64) << ((level * usize::from(self.bits)) % 64)
    }

    /// The target of finger `k` of the node at `me`.
    pub fn start(self, me: RingId, k: usize) -> RingId {
        RingId(me.0.wrapping_add(self.offset(k)))
    }

    /// The end (exclusive) of finger `k`'s interval: the next finger's target, `me` for the
    /// last finger.
    pub fn end(self, me: RingId, k: usize) -> RingId {
        if k + 1 < self.len() { self.start(me, k + 1) } else { me }
    }

    /// `x` lies in finger `k`'s interval `[start, end)`.
    pub fn covers(self, me: RingId, k: usize, x: RingId) -> bool {
        let start = self.start(me, k);
        start.distance(x) < start.distance(self.end(me, k))
    }
}

/// A position on the identifier circle: the first 8 bytes, big-endian, of
/// SHA-256(`"hearsay/node/"` ‖ NodeId) for a node (§0.2); any `u64` for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RingId(pub u64);

impl RingId {
    /// The ring identifier of the node `id`.
    pub fn of(id: &NodeId) -> RingId {
        let digest = Sha256::new().chain_update(b"hearsay/node/").chain_update(id.as_bytes()).finalize();
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        RingId(u64::from_be_bytes(head))
    }

    /// Clockwise distance from `self` to `to`: `(to − self) mod 2^64`.
    #[inline]
    pub fn distance(self, to: RingId) -> u64 {
        to.0.wrapping_sub(self.0)
    }

    /// The point `2^k` clockwise from `self` (`k < 64`): the start of finger `k + 1`.
    #[inline]
    pub fn finger_start(self, k: usize) -> RingId {
        RingId(self.0.wrapping_add(1u64 << (k % FINGERS)))
    }

    /// `self ∈ (a, b]`, clockwise; the whole ring when `a == b`.
    #[inline]
    pub fn in_half_open(self, a: RingId, b: RingId) -> bool {
        if a == b {
            return true;
        }
        let d = a.distance(self);
        d != 0 && d <= a.distance(b)
    }

    /// `self ∈ (a, b)`, clockwise; the whole ring minus `a` when `a == b`.
    #[inline]
    pub fn in_open(self, a: RingId, b: RingId) -> bool {
        let d = a.distance(self);
        if a == b {
            return d != 0;
        }
        d != 0 && d < a.distance(b)
    }
}

impl fmt::Display for RingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A node as the ring knows it: identity and position. On the wire the position is checked
/// against the identity (a peer cannot place another node elsewhere on the ring).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RingNode {
    /// The node's identity.
    pub id: NodeId,
    /// Its ring identifier, `RingId::of(&id)`.
    pub ring: RingId,
}

impl RingNode {
    /// The reference to node `id`, its ring identifier computed.
    pub fn of(id: NodeId) -> RingNode {
        RingNode { id, ring: RingId::of(&id) }
    }
}

/// The finger table, stored as runs of equal entries: in the base-2 layout `finger[k]` for k
/// in `0..64` targets `n + 2^k` (the paper's `finger[k + 1]`); other layouts have more entries
/// ([`FingerLayout`]). On a converged ring of N nodes the first ~64 − log2 N fingers all name
/// the successor, so a table holds about log2 N + 1 runs instead of 64 entries: at 10^5
/// simulated nodes that is the difference between 0.3 GB and 0.1 GB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fingers {
    /// `(first index, entry)`, ascending by index; the first run starts at 0; neighbours differ.
    runs: Vec<(u8, Option<RingNode>)>,
    /// Number of entries (at most 255).
    len: u8,
}

impl Default for Fingers {
    fn default() -> Self {
        Fingers::empty(FINGERS)
    }
}

impl Fingers {
    /// A table of `len` (≤ 255) empty entries.
    pub(crate) fn empty(len: usize) -> Fingers {
        Fingers { runs: vec![(0, None)], len: len.min(255) as u8 }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Entry `k` (`k < len`).
    pub(crate) fn get(&self, k: usize) -> Option<RingNode> {
        let i = self.runs.partition_point(|(from, _)| usize::from(*from) <= k);
        self.runs[i.saturating_sub(1)].1
    }

    /// Set entries `lo..=hi` to `node`.
    pub(crate) fn set(&mut self, lo: usize, hi: usize, node: Option<RingNode>) {
        let unchanged = self.runs().all(|(from, to, n)| to < lo || from > hi || n == node);
        if unchanged {
            return;
        }
        let mut all = self.expand();
        let last = self.len() - 1;
        for slot in all.iter_mut().take(hi.min(last) + 1).skip(lo) {
            *slot = node;
        }
        self.compress(&all);
    }

    /// Apply `f(k, entry)` to every entry; `Some(new)` replaces it.
    pub(crate) fn update(&mut self, mut f: impl FnMut(usize, Option<RingNode>) -> Option<Option<RingNode>>) {
        let mut all = self.expand();
        let mut changed = false;
        for (k, slot) in all.iter_mut().enumerate() {
            if let Some(new) = f(k, *slot).filter(|new| new != slot) {
                *slot = new;
                changed = true;
            }
        }
        if changed {
            self.compress(&all);
        }
    }

    /// Clear every entry naming `id`.
    pub(crate) fn remove(&mut self, id: &NodeId) {
        if self.runs.iter().any(|(_, n)| n.is_some_and(|n| n.id == *id)) {
            let mut all = self.expand();
            for slot in all.iter_mut() {
                if slot.is_some_and(|n| n.id == *id) {
                    *slot = None;
                }
            }
            self.compress(&all);
        }
    }

    /// Every entry that is set, once per run (a node may appear in several runs).
    pub(crate) fn entries(&self) -> impl Iterator<Item = &RingNode> {
        self.runs.iter().filter_map(|(_, n)| n.as_ref())
    }

    /// Runs as `(first index, last index, entry)`.
    pub(crate) fn runs(&self) -> impl Iterator<Item = (usize, usize, Option<RingNode>)> + '_ {
        let last = self.len() - 1;
        self.runs.iter().enumerate().map(move |(i, (from, n))| {
            let to = self.runs.get(i + 1).map_or(last, |(next, _)| usize::from(*next) - 1);
            (usize::from(*from), to, *n)
        })
    }

    /// The whole table of `len` (≤ 255) entries from a function of the index.
    pub(crate) fn from_fn(len: usize, f: impl FnMut(usize) -> Option<RingNode>) -> Fingers {
        let len = len.min(255);
        let all: Vec<Option<RingNode>> = (0..len).map(f).collect();
        let mut t = Fingers { runs: Vec::new(), len: len as u8 };
        t.compress(&all);
        t
    }

    fn expand(&self) -> Vec<Option<RingNode>> {
        let mut all = vec![None; self.len()];
        for (from, to, n) in self.runs() {
            for slot in &mut all[from..=to] {
                *slot = n;
            }
        }
        all
    }

    fn compress(&mut self, all: &[Option<RingNode>]) {
        self.runs.clear();
        for (k, n) in all.iter().enumerate() {
            if self.runs.last().is_none_or(|(_, last)| last != n) {
                self.runs.push((k as u8, *n));
            }
        }
        self.runs.shrink_to_fit();
    }
}

/// The members of a ring, sorted by [`RingId`]: what a joining node computes its successor
/// list, predecessor and fingers from (§7.6), and what the simulator checks them against.
/// Of two nodes with the same RingId only the one with the smaller NodeId is kept (§7.1:
/// the second cannot join).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RingSnapshot {
    nodes: Vec<RingNode>,
}

impl RingSnapshot {
    /// The ring of these nodes (ring identifiers computed here).
    pub fn new(ids: impl IntoIterator<Item = NodeId>) -> Self {
        Self::from_nodes(ids.into_iter().map(RingNode::of).collect())
    }

    /// The ring of these already computed references (sorted and deduplicated here).
    pub fn from_nodes(mut nodes: Vec<RingNode>) -> Self {
        nodes.sort_unstable_by_key(|a| (a.ring, a.id));
        nodes.dedup_by(|b, a| a.ring == b.ring);
        RingSnapshot { nodes }
    }

    /// Members, ascending by RingId.
    pub fn nodes(&self) -> &[RingNode] {
        &self.nodes
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the ring has no member.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The member responsible for `key`: the first whose RingId is ≥ `key`, wrapping.
    pub fn successor(&self, key: RingId) -> Option<RingNode> {
        if self.nodes.is_empty() {
            return None;
        }
        let i = self.nodes.partition_point(|n| n.ring < key);
        Some(self.nodes[i % self.nodes.len()])
    }

    /// Index of the first member strictly after `ring`, wrapping (for walking clockwise).
    fn after(&self, ring: RingId) -> usize {
        let i = self.nodes.partition_point(|n| n.ring <= ring);
        if self.nodes.is_empty() { 0 } else { i % self.nodes.len() }
    }

    /// Every member once, clockwise from successor(`key`) (the first at or after `key`).
    pub fn walk_from(&self, key: RingId) -> impl Iterator<Item = RingNode> + '_ {
        let n = self.nodes.len();
        let start = self.nodes.partition_point(|x| x.ring < key);
        (0..n).map(move |k| self.nodes[(start + k) % n])
    }

    /// Up to `r` members clockwise after `me`, `me` excluded: a converged successor list.
    pub fn successors_of(&self, me: &RingNode, r: usize) -> Vec<RingNode> {
        let n = self.nodes.len();
        let start = self.after(me.ring);
        (0..n).map(|k| self.nodes[(start + k) % n]).filter(|x| x.id != me.id).take(r).collect()
    }

    /// Up to `r` members counter-clockwise before `me`, closest first, `me` excluded.
    pub fn predecessors_of(&self, me: &RingNode, r: usize) -> Vec<RingNode> {
        let n = self.nodes.len();
        let below = self.nodes.partition_point(|x| x.ring < me.ring);
        (1..=n).map(|k| self.nodes[(below + n - k) % n]).filter(|x| x.id != me.id).take(r).collect()
    }

    /// The converged value of finger `k` of `me`: successor(me + 2^k), `None` if that is `me`.
    pub fn finger_of(&self, me: &RingNode, k: usize) -> Option<RingNode> {
        self.successor(me.ring.finger_start(k)).filter(|x| x.id != me.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(x: u64) -> RingId {
        RingId(x)
    }

    #[test]
    fn intervals_wrap_and_degenerate_as_documented() {
        assert!(r(5).in_half_open(r(3), r(5)));
        assert!(!r(3).in_half_open(r(3), r(5)));
        assert!(r(1).in_half_open(r(u64::MAX - 1), r(2)), "wraps past zero");
        assert!(!r(3).in_half_open(r(u64::MAX - 1), r(2)));
        assert!(r(9).in_half_open(r(4), r(4)) && r(4).in_half_open(r(4), r(4)), "a == b: whole ring");
        assert!(r(4).in_open(r(3), r(5)) && !r(5).in_open(r(3), r(5)));
        assert!(r(9).in_open(r(4), r(4)) && !r(4).in_open(r(4), r(4)), "a == b: ring minus a");
        assert_eq!(r(u64::MAX).distance(r(1)), 2);
        assert_eq!(r(10).finger_start(0), r(11));
        assert_eq!(r(u64::MAX).finger_start(63), r((1 << 63) - 1));
    }

    #[test]
    fn ring_ids_are_pinned() {
        let id = NodeId::from_u64(1);
        let d = Sha256::new().chain_update(b"hearsay/node/").chain_update(id.as_bytes()).finalize();
        assert_eq!(RingId::of(&id).0, u64::from_be_bytes(d[..8].try_into().unwrap()));
        assert_ne!(RingId::of(&id), RingId::of(&NodeId::from_u64(2)));
    }

    #[test]
    fn fingers_keep_runs_and_answer_like_an_array() {
        let a = RingNode { id: NodeId::from_u64(1), ring: r(100) };
        let b = RingNode { id: NodeId::from_u64(2), ring: r(200) };
        let mut f = Fingers::default();
        assert_eq!(f.get(0), None);
        f.set(0, 40, Some(a));
        f.set(41, 63, Some(b));
        assert_eq!(f.runs.len(), 2);
        assert_eq!((f.get(0), f.get(40), f.get(41), f.get(63)), (Some(a), Some(a), Some(b), Some(b)));
        f.set(10, 12, Some(b));
        assert_eq!(f.runs.len(), 4);
        assert_eq!(f.get(11), Some(b));
        f.remove(&b.id);
        assert_eq!(f.get(11), None);
        assert_eq!(f.get(63), None);
        assert_eq!(f.get(13), Some(a));
        assert_eq!(f.entries().count(), 2, "a appears in two runs around the gap");
        let runs: Vec<_> = f.runs().map(|(lo, hi, _)| (lo, hi)).collect();
        assert_eq!(runs, vec![(0, 9), (10, 12), (13, 40), (41, 63)]);
    }

    #[test]
    fn snapshot_successors_predecessors_and_fingers() {
        let nodes: Vec<RingNode> =
            [10u64, 20, 30, 40].iter().map(|&x| RingNode { id: NodeId::from_u64(x), ring: r(x) }).collect();
        let s = RingSnapshot::from_nodes(nodes.iter().rev().copied().collect());
        assert_eq!(s.successor(r(15)).unwrap().ring, r(20));
        assert_eq!(s.successor(r(20)).unwrap().ring, r(20));
        assert_eq!(s.successor(r(41)).unwrap().ring, r(10), "wraps");
        let me = nodes[1];
        let succ: Vec<u64> = s.successors_of(&me, 16).iter().map(|n| n.ring.0).collect();
        assert_eq!(succ, vec![30, 40, 10]);
        let pred: Vec<u64> = s.predecessors_of(&me, 2).iter().map(|n| n.ring.0).collect();
        assert_eq!(pred, vec![10, 40]);
        assert_eq!(s.finger_of(&me, 0).unwrap().ring, r(30));
        assert_eq!(s.finger_of(&me, 4).unwrap().ring, r(40), "20 + 16 = 36 → 40");
        assert_eq!(s.finger_of(&me, 63).unwrap().ring, r(10), "20 + 2^63 wraps to 10");
        // A node outside the snapshot still gets its neighbours.
        let out = RingNode { id: NodeId::from_u64(99), ring: r(25) };
        assert_eq!(s.successors_of(&out, 1)[0].ring, r(30));
        assert_eq!(s.predecessors_of(&out, 1)[0].ring, r(20));
        // Equal RingIds: the smaller NodeId stays.
        let dup = RingSnapshot::from_nodes(vec![
            RingNode { id: NodeId::from_u64(7), ring: r(5) },
            RingNode { id: NodeId::from_u64(3), ring: r(5) },
        ]);
        assert_eq!(dup.nodes(), &[RingNode { id: NodeId::from_u64(3), ring: r(5) }]);
    }
}
