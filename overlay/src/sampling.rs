//! Peer sampling: uniform random samples of live members, for SWIM's own choices (ping-req
//! helpers, gossip targets, the push-pull partner) and for the gossip machines above it.
//!
//! The gossip machines take their partners from a [`PeerView`](hearsay_protocols::PeerView)
//! of the live members, which [`Swim::peers`](crate::swim::Swim::peers) builds (sorted, self
//! excluded), or draw a few at a time with [`Swim::sample_live`](crate::swim::Swim::sample_live)
//! and their **own** RNG, so that sampling never shifts SWIM's random stream.
//!
//! # The draw
//!
//! [`sample_indices`] draws k distinct indices of a sorted list uniformly among those an
//! `accept` predicate admits: a partial Fisher–Yates shuffle of the whole list, drawn front to
//! back and kept sparse (O(draws) memory), that skips rejected entries. Every k-subset of the
//! admitted entries is equally likely and comes out in draw order, so this is the uniform choice
//! of PROTOCOLS.md §0.3 rule 1. **Departure from §0.3:** the rule builds the admitted list S
//! first and then draws indices into it; that costs O(N) per draw, and SWIM draws several times
//! per second over its whole member table (N² work per simulated second at N = 2,000). The
//! distribution is the same; the sequence of values drawn from the RNG is not.

use std::collections::BTreeMap;

use hearsay_protocols::Rng;

/// Up to `k` distinct indices of `0..len` uniformly among those for which `accept` holds, in
/// draw order. Fewer than `k` when fewer are admitted.
pub fn sample_indices(
    len: usize,
    k: usize,
    rng: &mut Rng,
    mut accept: impl FnMut(usize) -> bool,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(k.min(len));
    // Slots of the permuted array that differ from the identity; slot i is read once, when
    // it is drawn, so it is removed then.
    let mut moved: BTreeMap<usize, usize> = BTreeMap::new();
    let mut i = 0;
    while out.len() < k && i < len {
        let j = i + rng.index(len - i);
        let vi = moved.remove(&i).unwrap_or(i);
        let vj = if j == i { vi } else { moved.insert(j, vi).unwrap_or(j) };
        if accept(vj) {
            out.push(vj);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearsay_protocols::Seed;

    fn rng(n: u64) -> Rng {
        Rng::from_seed(Seed::derive(n, "sampling", 0, 0))
    }

    #[test]
    fn without_rejection_it_is_the_partial_fisher_yates_of_distinct() {
        for (len, k) in [(1, 1), (5, 2), (40, 40), (100, 7)] {
            let mut a = rng(len as u64 + k as u64);
            let mut b = a.clone();
            assert_eq!(sample_indices(len, k, &mut a, |_| true), b.distinct(len, k));
        }
    }

    #[test]
    fn samples_are_distinct_admitted_and_uniform() {
        // Admit the even indices of 0..20: each of the 10 must come out equally often.
        let mut r = rng(1);
        let mut counts = [0u32; 20];
        for _ in 0..20_000 {
            let s = sample_indices(20, 3, &mut r, |i| i % 2 == 0);
            assert_eq!(s.len(), 3);
            let mut d = s.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 3, "{s:?}");
            for i in s {
                counts[i] += 1;
            }
        }
        for (i, c) in counts.iter().enumerate() {
            if i % 2 == 1 {
                assert_eq!(*c, 0);
            } else {
                assert!((5_600..6_400).contains(c), "{counts:?}");
            }
        }
    }

    #[test]
    fn fewer_admitted_than_asked_gives_all_of_them() {
        let mut r = rng(2);
        let mut s = sample_indices(50, 10, &mut r, |i| i == 7 || i == 42);
        s.sort_unstable();
        assert_eq!(s, vec![7, 42]);
        assert!(sample_indices(0, 3, &mut r, |_| true).is_empty());
        assert!(sample_indices(10, 0, &mut r, |_| true).is_empty());
    }
}
