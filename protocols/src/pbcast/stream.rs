//! One stream (topic, origin) as one node sees it: the entries it holds, the ones in its
//! gossip buffer, its delivery cursor, and what it knows to be missing (PROTOCOLS.md §1.1,
//! §4.2, §4.7).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::Via;
use crate::anti_entropy::StreamSummary;
use crate::id::{Seq, StreamId};
use crate::time::Instant;

/// A stored entry and how it got here.
#[derive(Clone, Debug)]
pub(super) struct Held {
    pub(super) payload: Bytes,
    pub(super) published_at: Instant,
    pub(super) received_at: Instant,
    pub(super) via: Via,
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
    pub(super) held: BTreeMap<Seq, Held>,
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
    /// Round of the last solicitation, per unheld seq ≥ `next`.
    pub(super) solicited: BTreeMap<Seq, u64>,
    /// The `next` for which an anti-entropy pull was already asked (0: none).
    pub(super) pull_asked: Seq,
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

    /// Learn, in local round `round`, that every seq up to `hi` exists.
    pub(super) fn learn(&mut self, hi: Seq, round: u64) {
        if hi <= self.known_hi {
            return;
        }
        self.known_hi = hi;
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
        self.cursor.map_or(0, |c| self.held.range(c.next.saturating_add(1)..).count())
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
        if self.active.back().is_none_or(|&last| last < seq) {
            self.active.push_back(seq);
        } else if let Err(i) = self.active.binary_search(&seq) {
            self.active.insert(i, seq);
        }
    }

    /// Take `seq` out of the gossip buffer; true if it was there.
    pub(super) fn deactivate(&mut self, seq: Seq) -> bool {
        if self.active.front() == Some(&seq) {
            self.active.pop_front();
            return true;
        }
        match self.active.binary_search(&seq) {
            Ok(i) => self.active.remove(i).is_some(),
            Err(_) => false,
        }
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
