//! The versioned store anti-entropy reconciles: streams of immutable, sequenced entries
//! (PROTOCOLS.md §1.1).
//!
//! A key is a [`StreamId`] (topic, origin) and its versions are sequence numbers; a higher
//! seq is a newer version. Each stream keeps its newest `retention` entries, so the same
//! store carries a message history (retention in the thousands) or a last-writer-wins table
//! such as membership (retention 1: only the newest version survives).

use std::collections::VecDeque;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::auth::Seal;
use crate::id::{Seq, StreamId, TopicId};
use crate::time::Instant;

/// One stored entry: a version of a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its sequence number (version), ≥ 1.
    pub seq: Seq,
    /// The opaque value.
    pub payload: Bytes,
    /// When its origin wrote it (the origin's clock).
    pub published_at: Instant,
    /// The origin's signature over it (checked by whoever acts on the entry; anti-entropy
    /// itself checks it on receipt when given a checker).
    pub seal: Seal,
}

impl Entry {
    /// An entry with no publish time and no seal (machines that reconcile unsigned data, and
    /// tests).
    pub fn unsealed(stream: StreamId, seq: Seq, payload: Bytes) -> Self {
        Entry { stream, seq, payload, published_at: Instant::ZERO, seal: Seal::default() }
    }

    /// Bytes this entry costs in a delta budget: payload plus a fixed allowance for ids, time
    /// and seal.
    pub fn budget_cost(&self) -> usize {
        self.payload.len() + 128
    }
}

/// What a node holds of one stream (PROTOCOLS.md §1.1). The invariant it promises: every seq
/// `s` with `floor ≤ s ≤ max` and `s ∉ missing` is held by the sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    /// The stream described.
    pub stream: StreamId,
    /// Smallest seq held; `max + 1` if none.
    pub floor: Seq,
    /// Largest `c ≥ floor − 1` such that every seq in `[floor, c]` is held.
    pub contig: Seq,
    /// Largest seq held (lowered when `missing` was truncated); 0 if none.
    pub max: Seq,
    /// Seqs in `(contig, max)` not held, ascending, at most the configured bound.
    pub missing: Vec<Seq>,
}

impl StreamSummary {
    /// True when the summary says its sender holds `seq`.
    pub fn covers(&self, seq: Seq) -> bool {
        self.floor <= seq
            && seq <= self.max
            && (seq <= self.contig || self.missing.binary_search(&seq).is_err())
    }

    /// True when the sender holds nothing of the stream.
    pub fn is_empty(&self) -> bool {
        self.max < self.floor
    }

    /// Check the summary's internal consistency (PROTOCOLS.md §1.6): `contig ≤ max` unless
    /// empty, `floor ≤ contig + 1`, `missing` strictly ascending inside `(contig, max)` and
    /// no longer than `missing_max`.
    pub fn is_consistent(&self, missing_max: usize) -> bool {
        if self.floor == 0 || self.missing.len() > missing_max {
            return false;
        }
        if self.is_empty() {
            return self.contig == self.max && self.missing.is_empty();
        }
        let contig_ok = self.contig >= self.floor.saturating_sub(1)
            && self.contig <= self.max
            && self.floor <= self.contig.saturating_add(1);
        let missing_ok = self.missing.windows(2).all(|w| w[0] < w[1])
            && self.missing.iter().all(|&s| s > self.contig && s < self.max);
        contig_ok && missing_ok
    }
}

/// The outcome of [`Store::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Stored; it was not held before.
    New,
    /// Already held; nothing changed.
    Duplicate,
    /// Older than everything a full stream keeps: not stored.
    TooOld,
    /// Seq 0 is "none" and cannot be stored.
    Invalid,
    /// Over a cap that evicting older entries of its own stream cannot make room under: a new
    /// stream beyond `streams_max`, or the store's total bytes ([`Limits`]). Not stored.
    Full,
}

/// Bytes an entry costs against the caps besides its payload.
pub const ENTRY_OVERHEAD: usize = 120;
/// Bytes a stream costs against the total cap besides its entries.
pub const STREAM_OVERHEAD: usize = 96;

/// The caps of a [`Store`] besides its per-stream retention: every stream and entry a peer
/// can make it hold counts against them (issue 12, case 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most streams held; an entry of a new stream beyond it is refused ([`Inserted::Full`]).
    pub streams_max: usize,
    /// Most bytes one stream holds (payloads and [`ENTRY_OVERHEAD`] each); its oldest entries
    /// make room, as with retention.
    pub stream_bytes_max: usize,
    /// Most bytes the whole store holds; an entry that would pass it is refused.
    pub bytes_max: usize,
}

impl Limits {
    /// No caps but retention.
    pub const NONE: Limits =
        Limits { streams_max: usize::MAX, stream_bytes_max: usize::MAX, bytes_max: usize::MAX };
}

/// What is kept of an entry besides its stream and seq.
#[derive(Clone, Debug)]
struct Value {
    payload: Bytes,
    published_at: Instant,
    seal: Seal,
}

/// One stream's entries, ascending by seq, and the bytes they cost.
#[derive(Clone, Debug, Default)]
struct Held {
    entries: VecDeque<(Seq, Value)>,
    bytes: usize,
}

fn cost(payload: &Bytes) -> usize {
    payload.len().saturating_add(ENTRY_OVERHEAD)
}

/// Streams of entries, each bounded to its newest `retention` seqs, and the whole bounded by
/// [`Limits`].
///
/// Laid out for the common case of few streams and mostly in-order arrivals: a sorted `Vec`
/// of streams, each a sorted ring buffer of (seq, payload). An entry costs 40 bytes plus its
/// payload; a new seq above the newest is an O(1) append, a repaired hole an O(distance)
/// shift.
#[derive(Clone, Debug)]
pub struct Store {
    streams: Vec<(StreamId, Held)>,
    retention: usize,
    limits: Limits,
    /// Σ over streams of [`STREAM_OVERHEAD`] and their entries' costs.
    bytes: usize,
}

impl Store {
    /// An empty store keeping at most `retention` (≥ 1) entries per stream, otherwise
    /// unbounded.
    pub fn new(retention: usize) -> Self {
        Store::bounded(retention, Limits::NONE)
    }

    /// An empty store keeping at most `retention` (≥ 1) entries per stream, within `limits`.
    pub fn bounded(retention: usize, limits: Limits) -> Self {
        Store { streams: Vec::new(), retention: retention.max(1), limits, bytes: 0 }
    }

    fn held(&self, stream: &StreamId) -> Option<&VecDeque<(Seq, Value)>> {
        self.streams.binary_search_by(|(s, _)| s.cmp(stream)).ok().map(|i| &self.streams[i].1.entries)
    }

    /// Bytes held: payloads, [`ENTRY_OVERHEAD`] per entry and [`STREAM_OVERHEAD`] per stream.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Store `entry` unless held already, too old to keep, or over a cap. Older entries of its
    /// stream make room for it when the stream is at `retention` entries or
    /// `stream_bytes_max` bytes; nothing else is ever evicted.
    pub fn insert(&mut self, entry: Entry) -> Inserted {
        if entry.seq == 0 {
            return Inserted::Invalid;
        }
        let c = cost(&entry.payload);
        if c > self.limits.stream_bytes_max {
            return Inserted::Full;
        }
        let i = match self.streams.binary_search_by(|(s, _)| s.cmp(&entry.stream)) {
            Ok(i) => i,
            Err(i) => {
                let new_bytes = self.bytes.saturating_add(STREAM_OVERHEAD).saturating_add(c);
                if self.streams.len() >= self.limits.streams_max || new_bytes > self.limits.bytes_max {
                    return Inserted::Full;
                }
                self.streams.insert(i, (entry.stream, Held::default()));
                self.bytes += STREAM_OVERHEAD;
                i
            }
        };
        let held = &mut self.streams[i].1;
        let pos = if held.entries.back().is_none_or(|(last, _)| *last < entry.seq) {
            // The common case: newer than everything held.
            held.entries.len()
        } else {
            match held.entries.binary_search_by(|(q, _)| q.cmp(&entry.seq)) {
                Ok(_) => return Inserted::Duplicate,
                Err(pos) => pos,
            }
        };
        // How many of the oldest entries must go, never one newer than the new entry.
        let (mut evict, mut freed) = (0usize, 0usize);
        while held.entries.len() - evict >= self.retention
            || held.bytes - freed + c > self.limits.stream_bytes_max
        {
            if evict >= pos {
                return Inserted::TooOld;
            }
            freed += cost(&held.entries[evict].1.payload);
            evict += 1;
        }
        if (self.bytes - freed).saturating_add(c) > self.limits.bytes_max {
            return Inserted::Full;
        }
        held.entries.drain(..evict);
        let value = Value { payload: entry.payload, published_at: entry.published_at, seal: entry.seal };
        held.entries.insert(pos - evict, (entry.seq, value));
        held.bytes = held.bytes - freed + c;
        self.bytes = self.bytes - freed + c;
        Inserted::New
    }

    /// True when `(stream, seq)` is held.
    pub fn contains(&self, stream: &StreamId, seq: Seq) -> bool {
        self.get(stream, seq).is_some()
    }

    /// The payload of `(stream, seq)`, if held.
    pub fn get(&self, stream: &StreamId, seq: Seq) -> Option<&Bytes> {
        let held = self.held(stream)?;
        held.binary_search_by(|(q, _)| q.cmp(&seq)).ok().map(|i| &held[i].1.payload)
    }

    /// The entry `(stream, seq)`, if held.
    pub fn entry(&self, stream: &StreamId, seq: Seq) -> Option<Entry> {
        let held = self.held(stream)?;
        let i = held.binary_search_by(|(q, _)| q.cmp(&seq)).ok()?;
        let v = &held[i].1;
        Some(Entry {
            stream: *stream,
            seq,
            payload: v.payload.clone(),
            published_at: v.published_at,
            seal: v.seal,
        })
    }

    /// Number of entries held over all streams.
    pub fn len(&self) -> usize {
        self.streams.iter().map(|(_, h)| h.entries.len()).sum()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.streams.iter().all(|(_, h)| h.entries.is_empty())
    }

    /// Number of streams held.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// The streams held, ascending.
    pub fn streams(&self) -> impl Iterator<Item = &StreamId> {
        self.streams.iter().map(|(s, _)| s)
    }

    /// Drop every stream of `topic`.
    pub fn remove_topic(&mut self, topic: TopicId) {
        let mut freed = 0usize;
        self.streams.retain(|(s, h)| {
            let gone = s.topic == topic;
            if gone {
                freed += h.bytes + STREAM_OVERHEAD;
            }
            !gone
        });
        self.bytes -= freed;
    }

    /// The summary of one stream, with `missing` truncated to `missing_max` seqs (and `max`
    /// lowered accordingly, so the summary stays true).
    pub fn summary(&self, stream: StreamId, missing_max: usize) -> StreamSummary {
        let empty = StreamSummary { stream, floor: 1, contig: 0, max: 0, missing: Vec::new() };
        let Some(held) = self.held(&stream) else {
            return empty;
        };
        let (Some(&(floor, _)), Some(&(max, _))) = (held.front(), held.back()) else {
            return empty;
        };
        let mut contig = floor - 1;
        let mut missing = Vec::new();
        let mut prev = floor - 1;
        for &(s, _) in held {
            if s == prev + 1 && missing.is_empty() {
                contig = s;
            } else {
                // seqs prev+1 .. s-1 are missing
                let mut m = prev + 1;
                while m < s {
                    if missing.len() == missing_max {
                        // Cut inside this hole: `max` is the last seq held before it, and the
                        // hole's seqs listed so far (all above that) go. Lowering `max` to
                        // m − 1 instead could land on a missing seq, which `is_consistent`
                        // rejects.
                        missing.retain(|&x| x < prev);
                        return StreamSummary { stream, floor, contig, max: prev, missing };
                    }
                    missing.push(m);
                    m += 1;
                }
            }
            prev = s;
        }
        StreamSummary { stream, floor, contig, max, missing }
    }

    /// Summaries of the held streams whose topic is in `scope` (ascending), at most
    /// `streams_max` of them. When there are more, the window starts at the first stream
    /// after `after` (wrapping) and the second value is the last stream taken, where the
    /// next digest should continue; `None` means the digest is complete.
    pub fn digest(
        &self,
        scope: &[TopicId],
        missing_max: usize,
        streams_max: usize,
        after: Option<&StreamId>,
    ) -> (Vec<StreamSummary>, Option<StreamId>) {
        let in_scope = |s: &&StreamId| scope.binary_search(&s.topic).is_ok();
        let total = self.streams().filter(in_scope).count();
        if total <= streams_max {
            let all = self.streams().filter(in_scope).map(|s| self.summary(*s, missing_max)).collect();
            return (all, None);
        }
        let tail = self.streams().filter(|s| after.is_none_or(|a| *s > a));
        let head = self.streams().filter(|s| after.is_some_and(|a| *s <= a));
        let taken: Vec<StreamId> = tail.chain(head).filter(in_scope).take(streams_max).copied().collect();
        let last = taken.last().copied();
        let mut picked: Vec<StreamSummary> =
            taken.into_iter().map(|s| self.summary(s, missing_max)).collect();
        picked.sort_unstable_by_key(|s| s.stream);
        (picked, last)
    }

    /// The entries a remote node lacks according to its digest, restricted to `scope`,
    /// ascending by (stream, seq), cut once `bytes_max` would be exceeded (at least one entry
    /// is always included). Returns the entries and whether the cut left some out.
    ///
    /// A held seq `s` is sent when the remote's summary does not cover it and `s ≥` the
    /// remote's `floor` (see the module docs of `anti_entropy` for why not below it). A stream
    /// absent from the digest counts as "holds nothing" unless the digest is `partial`, in
    /// which case it is skipped.
    pub fn delta_for(
        &self,
        remote: &[StreamSummary],
        remote_partial: bool,
        scope: &[TopicId],
        bytes_max: usize,
    ) -> (Vec<Entry>, bool) {
        let mut out = Vec::new();
        let mut used = 0usize;
        for (stream, held) in self.streams.iter().map(|(s, h)| (s, &h.entries)) {
            if scope.binary_search(&stream.topic).is_err() {
                continue;
            }
            let summary = remote.binary_search_by(|r| r.stream.cmp(stream)).ok().map(|i| &remote[i]);
            if summary.is_none() && remote_partial {
                continue;
            }
            let from = summary.map_or(1, |r| r.floor);
            let first = held.partition_point(|(q, _)| *q < from);
            for (seq, v) in held.range(first..) {
                let seq = *seq;
                if summary.is_some_and(|r| r.covers(seq)) {
                    continue;
                }
                let entry = Entry {
                    stream: *stream,
                    seq,
                    payload: v.payload.clone(),
                    published_at: v.published_at,
                    seal: v.seal,
                };
                let cost = entry.budget_cost();
                if !out.is_empty() && used + cost > bytes_max {
                    return (out, true);
                }
                used += cost;
                out.push(entry);
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;

    fn sid(o: u64) -> StreamId {
        StreamId { topic: TopicId(1), origin: NodeId::from_u64(o) }
    }

    fn store_with(seqs: &[Seq]) -> Store {
        let mut s = Store::new(100);
        for &q in seqs {
            s.insert(Entry::unsealed(sid(1), q, Bytes::from(vec![q as u8])));
        }
        s
    }

    #[test]
    fn summary_follows_the_definitions() {
        let s = store_with(&[3, 4, 5, 7, 9, 10]);
        let sum = s.summary(sid(1), 32);
        assert_eq!((sum.floor, sum.contig, sum.max, sum.missing.clone()), (3, 5, 10, vec![6, 8]));
        assert!(sum.is_consistent(32));
        for q in 1..=12 {
            assert_eq!(sum.covers(q), s.contains(&sid(1), q), "seq {q}");
        }
        let empty = s.summary(sid(2), 32);
        assert_eq!((empty.floor, empty.contig, empty.max), (1, 0, 0));
        assert!(empty.is_empty() && empty.is_consistent(32));
    }

    #[test]
    fn truncated_summary_lowers_max_and_stays_true() {
        let s = store_with(&[1, 3, 5, 7, 9]);
        let sum = s.summary(sid(1), 2);
        assert_eq!((sum.floor, sum.contig, sum.max, sum.missing.clone()), (1, 1, 5, vec![2, 4]));
        for q in 1..=9 {
            if sum.covers(q) {
                assert!(s.contains(&sid(1), q), "summary claims {q}");
            }
        }
        assert!(sum.is_consistent(2));
        assert!(!sum.is_consistent(1));
        // A cut inside a run of missing seqs: max falls back to the last held seq before it.
        let s = store_with(&[1, 2, 3, 6]);
        let sum = s.summary(sid(1), 1);
        assert_eq!((sum.floor, sum.contig, sum.max, sum.missing.clone()), (1, 3, 3, vec![]));
        assert!(sum.is_consistent(1));
        let s = store_with(&[1, 3, 7]);
        let sum = s.summary(sid(1), 2);
        assert_eq!((sum.contig, sum.max, sum.missing.clone()), (1, 3, vec![2]));
        assert!(sum.is_consistent(2));
    }

    #[test]
    fn inconsistent_summaries_are_detected() {
        let base = StreamSummary { stream: sid(1), floor: 3, contig: 5, max: 10, missing: vec![6, 8] };
        assert!(base.is_consistent(32));
        let bad = [
            StreamSummary { contig: 11, ..base.clone() },
            StreamSummary { floor: 7, ..base.clone() },
            StreamSummary { missing: vec![8, 6], ..base.clone() },
            StreamSummary { missing: vec![5, 8], ..base.clone() },
            StreamSummary { missing: vec![6, 10], ..base.clone() },
            StreamSummary { floor: 0, ..base.clone() },
        ];
        for b in bad {
            assert!(!b.is_consistent(32), "{b:?}");
        }
    }

    #[test]
    fn retention_keeps_the_newest() {
        let mut s = Store::new(2);
        let e = |q: Seq| Entry::unsealed(sid(1), q, Bytes::new());
        assert_eq!(s.insert(e(5)), Inserted::New);
        assert_eq!(s.insert(e(5)), Inserted::Duplicate);
        assert_eq!(s.insert(e(6)), Inserted::New);
        assert_eq!(s.insert(e(4)), Inserted::TooOld);
        assert_eq!(s.insert(e(9)), Inserted::New);
        assert!(!s.contains(&sid(1), 5) && s.contains(&sid(1), 6) && s.contains(&sid(1), 9));
        assert_eq!(s.insert(e(0)), Inserted::Invalid);
    }

    #[test]
    fn out_of_order_arrivals_stay_sorted_and_bounded() {
        let mut s = Store::new(3);
        let e = |q: Seq| Entry::unsealed(sid(1), q, Bytes::new());
        for q in [9, 1, 5] {
            assert_eq!(s.insert(e(q)), Inserted::New);
        }
        assert_eq!(s.summary(sid(1), 32).missing, vec![2, 3, 4, 6, 7, 8]);
        // Full: a hole above the oldest evicts the oldest.
        assert_eq!(s.insert(e(7)), Inserted::New);
        assert_eq!((1..=9).filter(|&q| s.contains(&sid(1), q)).collect::<Vec<_>>(), vec![5, 7, 9]);
        assert_eq!(s.insert(e(7)), Inserted::Duplicate);
        assert_eq!(s.insert(e(4)), Inserted::TooOld);
        assert_eq!(s.len(), 3);
    }

    /// Issue 12, case 3. Before the fix a store kept `retention` entries of any size for any
    /// number of streams: a peer could fill memory with made-up origins and large payloads.
    /// Now streams are capped in number, each in bytes (its oldest entries make room) and
    /// the whole in bytes.
    #[test]
    fn streams_and_bytes_are_capped() {
        // Entries cost their payload plus ENTRY_OVERHEAD (ids, publish time, seal).
        let o = ENTRY_OVERHEAD;
        let limits =
            Limits { streams_max: 3, stream_bytes_max: 4 * (200 + o) + 40, bytes_max: 8 * (200 + o) };
        let mut s = Store::bounded(100, limits);
        let e = |o: u64, q: Seq, n: usize| Entry::unsealed(sid(o), q, Bytes::from(vec![0; n]));
        for o in 1..=3 {
            assert_eq!(s.insert(e(o, 1, 10)), Inserted::New);
        }
        assert_eq!(s.insert(e(4, 1, 10)), Inserted::Full, "a fourth stream");
        // One stream's bytes: the oldest entries make room, as with retention.
        for q in 2..=20 {
            assert_eq!(s.insert(e(1, q, 200)), Inserted::New);
        }
        let held: Vec<Seq> = (1..=20).filter(|&q| s.contains(&sid(1), q)).collect();
        assert_eq!(held, vec![17, 18, 19, 20], "4 entries of 200 bytes fit in the stream's cap");
        assert_eq!(s.insert(e(1, 16, 200)), Inserted::TooOld, "older than what the cap keeps");
        assert_eq!(s.insert(e(1, 21, 5_000)), Inserted::Full, "larger than a stream may hold");
        // The total: 3 streams, stream 1's four entries, two small ones.
        assert_eq!(s.bytes(), 3 * STREAM_OVERHEAD + 4 * (200 + o) + 2 * (10 + o));
        let room = limits.bytes_max - s.bytes();
        assert_eq!(s.insert(e(2, 2, room - o - 10)), Inserted::New);
        assert_eq!(s.insert(e(2, 3, 100)), Inserted::Full);
        assert!(s.bytes() <= limits.bytes_max);
        s.remove_topic(TopicId(1));
        assert_eq!((s.bytes(), s.stream_count()), (0, 0));
    }

    #[test]
    fn delta_sends_only_what_the_remote_lacks() {
        let mine = store_with(&[1, 2, 3, 4, 5, 6]);
        let theirs = store_with(&[3, 4, 6]);
        let (digest, cursor) = theirs.digest(&[TopicId(1)], 32, 256, None);
        assert!(cursor.is_none());
        let (delta, more) = mine.delta_for(&digest, false, &[TopicId(1)], 1 << 20);
        // 1 and 2 are below the remote floor (3): not sent; 5 is missing there.
        assert_eq!(delta.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5]);
        assert!(!more);
        // A remote that holds nothing gets everything; out-of-scope topics get nothing.
        let (all, _) = mine.delta_for(&[], false, &[TopicId(1)], 1 << 20);
        assert_eq!(all.len(), 6);
        let (none, _) = mine.delta_for(&[], false, &[TopicId(2)], 1 << 20);
        assert!(none.is_empty());
        let (skipped, _) = mine.delta_for(&[], true, &[TopicId(1)], 1 << 20);
        assert!(skipped.is_empty(), "partial digest: absent stream is unknown, not empty");
    }

    #[test]
    fn delta_respects_the_byte_budget_but_always_progresses() {
        let mine = store_with(&[1, 2, 3]);
        let (one, more) = mine.delta_for(&[], false, &[TopicId(1)], 10);
        assert_eq!((one.len(), more), (1, true));
        let (two, more) = mine.delta_for(&[], false, &[TopicId(1)], one[0].budget_cost() * 2);
        assert_eq!((two.len(), more), (2, true));
    }

    #[test]
    fn digest_rotates_when_over_the_stream_bound() {
        let mut s = Store::new(10);
        for o in 1..=5 {
            s.insert(Entry::unsealed(sid(o), 1, Bytes::new()));
        }
        let (d, cursor) = s.digest(&[TopicId(1)], 32, 2, None);
        assert_eq!(cursor, Some(sid(2)));
        assert_eq!(d.iter().map(|x| x.stream).collect::<Vec<_>>(), vec![sid(1), sid(2)]);
        let (d, cursor) = s.digest(&[TopicId(1)], 32, 2, Some(&sid(4)));
        assert_eq!(cursor, Some(sid(1)));
        assert_eq!(d.iter().map(|x| x.stream).collect::<Vec<_>>(), vec![sid(1), sid(5)]);
    }
}
