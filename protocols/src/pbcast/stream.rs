//! One stream (topic, origin) as one node sees it: the entries it holds, the ones in its
//! gossip buffer, its delivery cursor, and what it knows to be missing (PROTOCOLS.md §1.1,
//! §4.2, §4.7).

use std::collections::{BTreeMap, VecDeque};

use self::seq_map::SeqMap;

use bytes::Bytes;

use super::Via;
use crate::anti_entropy::StreamSummary;
use crate::auth::Proof;
use crate::id::{Seq, StreamId};
use crate::time::Instant;

/// A stored entry and how it got here.
#[derive(Clone, Debug)]
pub(super) struct Held {
    pub(super) payload: Bytes,
    pub(super) published_at: Instant,
    pub(super) received_at: Instant,
    pub(super) via: Via,
    pub(super) seal: crate::auth::Seal,
}

/// A member's delivery cursor (§4.7): `start` is the first seq it is responsible for, `next`
/// the next seq to hand to the subscriber. Every seq in `[start, next)` was delivered or
/// announced as a gap; `lost` is therefore implicit (the gaps below `next`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cursor {
    pub(super) start: Seq,
    pub(super) next: Seq,
}

impl Cursor {
    pub(super) fn at(seq: Seq) -> Self {
        let seq = seq.max(1);
        Cursor { start: seq, next: seq }
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct Stream {
    /// Entries held (this topic's bounded history), by seq.
    pub(super) held: SeqMap<Held>,
    /// Held seqs still in the gossip buffer (received at most G local rounds ago), ascending.
    /// Small and mostly appended at the back and expired at the front: a sorted deque reads
    /// faster than a tree when every tick summarizes it.
    active: VecDeque<Seq>,
    /// `None` until the cursor is fixed (a member waiting for heads or for first evidence;
    /// always `None` at a source that is not a member).
    pub(super) cursor: Option<Cursor>,
    /// When this node learned that seqs exist: `(hi, round)` pairs, both strictly rising, so
    /// seqs in `(previous hi, hi]` became known in `round`. Seqs are dense per stream, so
    /// learning that `s` exists teaches that every lower seq exists too.
    known: VecDeque<(Seq, u64)>,
    /// `known`'s last `hi`, kept inline: checked on every summary received.
    known_hi: Seq,
    /// The highest seq proven to exist by its origin's seal (an entry held here, or a heads
    /// proof). Digests only hint at what exists; a gap is announced only below a proven seq,
    /// so a forged digest cannot make this node skip messages that were never published.
    proven: Seq,
    /// The proof of the highest seq this node has checked (answers [`PbMessage::ProofWanted`]).
    ///
    /// [`PbMessage::ProofWanted`]: super::PbMessage::ProofWanted
    proof: Option<Box<Proof>>,
    /// The round of the last [`PbMessage::ProofWanted`] naming this stream (0: none).
    ///
    /// [`PbMessage::ProofWanted`]: super::PbMessage::ProofWanted
    pub(super) proof_asked: u64,
    /// Round of the last solicitation, per unheld seq ≥ `next`.
    pub(super) solicited: BTreeMap<Seq, u64>,
    /// The `next` for which an anti-entropy pull was already asked (0: none).
    pub(super) pull_asked: Seq,
    /// Payload bytes held.
    pub(super) bytes: usize,
}

impl Stream {
    /// An empty stream whose cursor is `cursor`.
    pub(super) fn with_cursor(cursor: Option<Cursor>) -> Self {
        Stream { cursor, ..Stream::default() }
    }

    /// The highest seq known to exist (0: none).
    pub(super) fn known_hi(&self) -> Seq {
        self.known_hi
    }

    /// The highest seq proven to exist (0: none).
    pub(super) fn proven(&self) -> Seq {
        self.proven
    }

    /// `seq` is proven to exist (an entry whose seal checked, or a checked proof).
    pub(super) fn prove(&mut self, seq: Seq) {
        self.proven = self.proven.max(seq);
    }

    /// Keep `proof` (checked by the caller) if it is the highest seen; it proves its seq.
    pub(super) fn keep_proof(&mut self, proof: Proof) {
        self.prove(proof.seq);
        match &mut self.proof {
            // Overwritten in place: one allocation per stream, not one per message.
            Some(p) if p.seq < proof.seq => **p = proof,
            Some(_) => {}
            None => self.proof = Some(Box::new(proof)),
        }
    }

    /// The proof of the highest seq seen, if any.
    pub(super) fn proof(&self) -> Option<&Proof> {
        self.proof.as_deref()
    }

    /// Forget what digests alone said exists beyond the proven seqs and those held: nobody
    /// proved it in time. A forged digest line ends here, at no cost but the requests.
    pub(super) fn forget_unproven(&mut self) {
        let keep = self.proven; // every held seq is proven
        if self.known_hi <= keep {
            return;
        }
        // Seqs in (previous hi, hi] became known in that entry's round; cut at `keep`.
        let i = self.known.partition_point(|k| k.0 <= keep);
        if let Some(&(_, round)) = self.known.get(i) {
            self.known.truncate(i);
            if keep > self.known.back().map_or(0, |k| k.0) {
                self.known.push_back((keep, round));
            }
        }
        self.known_hi = self.known.back().map_or(0, |k| k.0);
        self.solicited.retain(|s, _| *s <= keep);
    }

    /// Learn, in local round `round`, that every seq up to `hi` exists.
    pub(super) fn learn(&mut self, hi: Seq, round: u64) {
        if hi <= self.known_hi {
            return;
        }
        self.known_hi = hi;
        if self.known.capacity() == 0 {
            self.known.reserve_exact(1); // most streams never need a second breakpoint
        }
        match self.known.back_mut() {
            Some(last) if last.1 == round => last.0 = hi,
            _ => self.known.push_back((hi, round)),
        }
    }

    /// The round in which this node learned that `seq` exists, if it has.
    pub(super) fn known_since(&self, seq: Seq) -> Option<u64> {
        let i = self.known.partition_point(|k| k.0 < seq);
        self.known.get(i).map(|k| k.1)
    }

    /// The largest seq whose existence has been known since round `by` or earlier (0: none).
    pub(super) fn known_by(&self, by: u64) -> Seq {
        let i = self.known.partition_point(|k| k.1 <= by);
        if i == 0 { 0 } else { self.known[i - 1].0 }
    }

    /// Held entries above `next` waiting for an earlier seq (the hold buffer, §4.7).
    pub(super) fn hold_len(&self) -> usize {
        self.cursor.map_or(0, |c| self.held.count_from(c.next.saturating_add(1)))
    }

    /// Forget bookkeeping about seqs below `next` (delivered or declared lost).
    pub(super) fn prune_below(&mut self, next: Seq) {
        while self.known.front().is_some_and(|k| k.0 < next) {
            self.known.pop_front();
        }
        if self.solicited.first_key_value().is_some_and(|(s, _)| *s < next) {
            self.solicited = self.solicited.split_off(&next);
        }
    }

    /// Put `seq` in the gossip buffer.
    pub(super) fn activate(&mut self, seq: Seq) {
        if self.active.capacity() == 0 {
            self.active.reserve_exact(1);
        }
        if self.active.back().is_none_or(|&last| last < seq) {
            self.active.push_back(seq);
        } else if let Err(i) = self.active.binary_search(&seq) {
            self.active.insert(i, seq);
        }
    }

    /// Take `seq` out of the gossip buffer; true if it was there.
    pub(super) fn deactivate(&mut self, seq: Seq) -> bool {
        let removed = if self.active.front() == Some(&seq) {
            self.active.pop_front().is_some()
        } else {
            match self.active.binary_search(&seq) {
                Ok(i) => self.active.remove(i).is_some(),
                Err(_) => false,
            }
        };
        if self.active.is_empty() {
            self.active = VecDeque::new(); // release the buffer
        }
        removed
    }

    /// True when nothing of this stream is in the gossip buffer.
    pub(super) fn is_inactive(&self) -> bool {
        self.active.is_empty()
    }

    /// True when `seq` is in the gossip buffer.
    pub(super) fn is_active(&self, seq: Seq) -> bool {
        self.active.binary_search(&seq).is_ok()
    }

    /// The summary of the gossip buffer (§4.5): §1.1's definitions over the active seqs.
    pub(super) fn active_summary(&self, stream: StreamId, missing_max: usize) -> StreamSummary {
        summarize(stream, self.active.iter().copied(), missing_max)
    }
}

/// The §1.1 summary of a set of seqs given in ascending order: `floor`, `contig`, `max`, and
/// `missing` truncated to `missing_max` seqs with `max` lowered so the summary stays true.
/// Identical to what `anti_entropy::Store::summary` computes over a store's seqs.
///
/// When the cut falls inside a run of missing seqs, `max` is lowered to the last seq held
/// before that run (not to the (M+1)-th missing seq − 1 as §1.1 words it, which can be a
/// missing seq and makes a summary that §1.6's consistency check rejects).
pub fn summarize(stream: StreamId, seqs: impl IntoIterator<Item = Seq>, missing_max: usize) -> StreamSummary {
    let mut seqs = seqs.into_iter();
    let Some(floor) = seqs.next() else {
        return StreamSummary { stream, floor: 1, contig: 0, max: 0, missing: Vec::new() };
    };
    let (mut contig, mut max, mut prev) = (floor, floor, floor);
    let mut missing = Vec::new();
    for s in seqs {
        if s == prev + 1 && missing.is_empty() {
            contig = s;
        } else {
            for m in prev + 1..s {
                if missing.len() == missing_max {
                    // Cut: `max` becomes the last seq held before this hole, and the hole's
                    // seqs listed so far go (they lie above the new `max`).
                    missing.retain(|&x| x < prev);
                    return StreamSummary { stream, floor, contig, max: prev, missing };
                }
                missing.push(m);
            }
        }
        max = s;
        prev = s;
    }
    StreamSummary { stream, floor, contig, max, missing }
}

mod seq_map {
    //! A map from seq to value kept as a sorted deque: one small allocation for the common
    //! stream of a few entries (a `BTreeMap` leaf costs ~750 bytes however few it holds), and
    //! O(1) at both ends, where arrivals (in order) and evictions (oldest first) happen.

    use std::collections::VecDeque;

    use crate::id::Seq;

    #[derive(Clone, Debug)]
    pub(in super::super) struct SeqMap<V>(VecDeque<(Seq, V)>);

    impl<V> Default for SeqMap<V> {
        fn default() -> Self {
            SeqMap(VecDeque::new())
        }
    }

    impl<V> SeqMap<V> {
        fn find(&self, seq: Seq) -> Result<usize, usize> {
            self.0.binary_search_by(|(s, _)| s.cmp(&seq))
        }

        pub(in super::super) fn get(&self, seq: &Seq) -> Option<&V> {
            self.find(*seq).ok().map(|i| &self.0[i].1)
        }

        pub(in super::super) fn contains_key(&self, seq: &Seq) -> bool {
            self.find(*seq).is_ok()
        }

        /// Insert `value` at `seq`; a value already there is replaced and returned.
        pub(in super::super) fn insert(&mut self, seq: Seq, value: V) -> Option<V> {
            if self.0.capacity() == 0 {
                self.0.reserve_exact(1); // most streams hold one or two entries
            }
            if self.0.back().is_none_or(|(last, _)| *last < seq) {
                self.0.push_back((seq, value));
                return None;
            }
            match self.find(seq) {
                Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
                Err(i) => {
                    self.0.insert(i, (seq, value));
                    None
                }
            }
        }

        pub(in super::super) fn remove(&mut self, seq: &Seq) -> Option<V> {
            let i = self.find(*seq).ok()?;
            let v = self.0.remove(i).map(|(_, v)| v);
            if self.0.is_empty() {
                self.0 = VecDeque::new(); // release the buffer
            }
            v
        }

        /// The smallest seq held that is ≥ `seq`.
        pub(in super::super) fn first_from(&self, seq: Seq) -> Option<Seq> {
            let i = self.find(seq).unwrap_or_else(|i| i);
            self.0.get(i).map(|(s, _)| *s)
        }

        /// How many seqs held are ≥ `seq`.
        pub(in super::super) fn count_from(&self, seq: Seq) -> usize {
            self.0.len() - self.find(seq).unwrap_or_else(|i| i)
        }

        /// The held seqs below `seq`, ascending.
        pub(in super::super) fn keys_below(&self, seq: Seq) -> impl Iterator<Item = Seq> + '_ {
            let end = self.find(seq).unwrap_or_else(|i| i);
            self.0.range(..end).map(|(s, _)| *s)
        }

        pub(in super::super) fn keys(&self) -> impl Iterator<Item = Seq> + '_ {
            self.0.iter().map(|(s, _)| *s)
        }

        pub(in super::super) fn values(&self) -> impl Iterator<Item = &V> + '_ {
            self.0.iter().map(|(_, v)| v)
        }

        pub(in super::super) fn retain(&mut self, mut keep: impl FnMut(Seq, &V) -> bool) {
            self.0.retain(|(s, v)| keep(*s, v));
        }

        pub(in super::super) fn len(&self) -> usize {
            self.0.len()
        }

        pub(in super::super) fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }

    #[cfg(test)]
    mod tests {
        use std::collections::BTreeMap;

        use super::*;
        use crate::rng::{Rng, Seed};

        #[test]
        fn behaves_like_a_btree_map() {
            let mut rng = Rng::from_seed(Seed::derive(5, "seq-map", 0, 0));
            let mut ours: SeqMap<u64> = SeqMap::default();
            let mut model: BTreeMap<Seq, u64> = BTreeMap::new();
            for step in 0..5_000u64 {
                let seq = 1 + rng.below(60);
                match rng.below(4) {
                    0 | 1 => assert_eq!(ours.insert(seq, step), model.insert(seq, step)),
                    2 => assert_eq!(ours.remove(&seq), model.remove(&seq)),
                    _ => {
                        ours.retain(|s, _| s % 7 != 0);
                        model.retain(|s, _| s % 7 != 0);
                    }
                }
                assert_eq!(ours.get(&seq), model.get(&seq));
                assert_eq!(ours.first_from(seq), model.range(seq..).next().map(|(s, _)| *s));
                assert_eq!(ours.count_from(seq), model.range(seq..).count());
                assert!(ours.keys_below(seq).eq(model.range(..seq).map(|(s, _)| *s)));
                assert!(ours.keys().eq(model.keys().copied()));
                assert_eq!(ours.len(), model.len());
            }
        }
    }
}
