//! A view of the peers a machine may pick partners from, and uniform choice over it
//! (PROTOCOLS.md §0.3, rule 1).
//!
//! The view is a sorted, deduplicated, shared list. Hosts build one from the membership
//! table and hand it to every machine that needs partners; in the simulator one `Arc` serves
//! all nodes, so a machine pays a pointer for it, not N identities.

use std::sync::Arc;

use crate::id::NodeId;
use crate::rng::Rng;

/// A sorted set of candidate partners, cheap to clone and share.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerView(Arc<[NodeId]>);

impl PeerView {
    /// A view of these nodes (sorted and deduplicated here).
    pub fn new(mut ids: Vec<NodeId>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        PeerView(ids.into())
    }

    /// Number of nodes in the view (self included if present).
    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the view holds no node.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `id` is in the view.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.0.binary_search(id).is_ok()
    }

    /// The nodes, ascending.
    pub fn as_slice(&self) -> &[NodeId] {
        &self.0
    }

    /// A uniformly random node other than `me`: the list without `me`, sorted, index drawn
    /// with one `below` call. `None` if there is no other node.
    #[inline]
    pub fn pick_other(&self, me: &NodeId, rng: &mut Rng) -> Option<NodeId> {
        self.pick_except(self.position(me), rng)
    }

    /// The position of `id` in the view, if present. Machines that pick often cache their own
    /// position (it changes only with the view) and call [`PeerView::pick_except`].
    #[inline]
    pub fn position(&self, id: &NodeId) -> Option<usize> {
        self.0.binary_search(id).ok()
    }

    /// [`PeerView::pick_other`] with `me`'s position already known (`None`: not in the view).
    /// Draws exactly as `pick_other` does.
    #[inline]
    pub fn pick_except(&self, skip: Option<usize>, rng: &mut Rng) -> Option<NodeId> {
        let n = self.0.len() - usize::from(skip.is_some());
        if n == 0 {
            return None;
        }
        let i = rng.index(n);
        Some(self.0[Self::shift(i, skip)])
    }

    /// Up to `k` distinct uniformly random nodes other than `me`, in draw order (a partial
    /// Fisher–Yates shuffle of the sorted list without `me`).
    pub fn pick_others(&self, me: &NodeId, k: usize, rng: &mut Rng) -> Vec<NodeId> {
        let (skip, n) = self.without(me);
        rng.distinct(n, k).into_iter().map(|i| self.0[Self::shift(i, skip)]).collect()
    }

    /// Position of `me` (if present) and the number of other nodes.
    fn without(&self, me: &NodeId) -> (Option<usize>, usize) {
        match self.0.binary_search(me) {
            Ok(p) => (Some(p), self.0.len() - 1),
            Err(_) => (None, self.0.len()),
        }
    }

    fn shift(i: usize, skip: Option<usize>) -> usize {
        match skip {
            Some(p) if i >= p => i + 1,
            _ => i,
        }
    }
}

impl FromIterator<NodeId> for PeerView {
    fn from_iter<I: IntoIterator<Item = NodeId>>(iter: I) -> Self {
        PeerView::new(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Seed;

    #[test]
    fn never_picks_self_and_covers_everyone_else() {
        let view: PeerView = (0..5).map(NodeId::from_u64).collect();
        let me = NodeId::from_u64(2);
        let mut rng = Rng::from_seed(Seed::derive(0, "peers", 0, 0));
        let mut seen = [0u32; 5];
        for _ in 0..4_000 {
            let p = view.pick_other(&me, &mut rng).unwrap();
            seen[p.prefix_u64() as usize] += 1;
        }
        assert_eq!(seen[2], 0);
        for (i, c) in seen.iter().enumerate().filter(|(i, _)| *i != 2) {
            assert!((850..1150).contains(c), "node {i}: {seen:?}");
        }
    }

    #[test]
    fn choice_equals_the_rule_of_sorting_then_removing_self() {
        let view = PeerView::new(vec![NodeId::from_u64(9), NodeId::from_u64(1), NodeId::from_u64(4)]);
        let me = NodeId::from_u64(4);
        let mut a = Rng::from_seed(Seed::derive(1, "peers", 0, 0));
        let mut b = a.clone();
        let others = [NodeId::from_u64(1), NodeId::from_u64(9)];
        for _ in 0..50 {
            assert_eq!(view.pick_other(&me, &mut a), Some(others[b.index(2)]));
        }
    }

    #[test]
    fn edge_cases() {
        let mut rng = Rng::from_seed(Seed::derive(2, "peers", 0, 0));
        let me = NodeId::from_u64(1);
        assert_eq!(PeerView::default().pick_other(&me, &mut rng), None);
        assert_eq!(PeerView::new(vec![me]).pick_other(&me, &mut rng), None);
        let view: PeerView = (0..10).map(NodeId::from_u64).collect();
        let picked = view.pick_others(&me, 20, &mut rng);
        assert_eq!(picked.len(), 9);
        assert!(!picked.contains(&me));
    }
}
