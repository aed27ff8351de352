//! What retention needs to know without reading the file: per topic, the messages held in
//! order of age with their sizes, and each stream's highest seq.

use std::collections::{BTreeMap, VecDeque};

use hearsay_protocols::{NodeId, Seq, TopicId};

use super::Retention;

#[derive(Debug, Default)]
struct Topic {
    /// (published_at µs, origin, seq, payload bytes), oldest first: sorted by publish time at
    /// open, then in arrival order (a late copy of an old message is trimmed when its turn
    /// comes, not before).
    entries: VecDeque<(u64, NodeId, Seq, u64)>,
    bytes: u64,
}

/// The retention index of an open store.
#[derive(Debug)]
pub(super) struct Index {
    retention: Retention,
    topics: BTreeMap<TopicId, Topic>,
    /// Highest seq held (message or gap) per stream.
    heads: BTreeMap<(TopicId, NodeId), Seq>,
    /// Gap records per topic, to remove with the messages around them: (first seq, origin).
    gaps: BTreeMap<(TopicId, NodeId), Vec<Seq>>,
}

impl Index {
    pub(super) fn new(retention: Retention) -> Self {
        Index { retention, topics: BTreeMap::new(), heads: BTreeMap::new(), gaps: BTreeMap::new() }
    }

    fn head(&mut self, topic: TopicId, origin: NodeId, seq: Seq) {
        let h = self.heads.entry((topic, origin)).or_insert(0);
        *h = (*h).max(seq);
    }

    /// A message now held.
    pub(super) fn add(&mut self, topic: TopicId, origin: NodeId, seq: Seq, published_at: u64, bytes: u64) {
        let t = self.topics.entry(topic).or_default();
        t.entries.push_back((published_at, origin, seq, bytes));
        t.bytes = t.bytes.saturating_add(bytes);
        self.head(topic, origin, seq);
    }

    /// A gap record now held, covering up to `last`.
    pub(super) fn add_gap(&mut self, topic: TopicId, origin: NodeId, first: Seq, last: Seq) {
        self.gaps.entry((topic, origin)).or_default().push(first);
        self.head(topic, origin, last);
    }

    /// Order every topic's entries by publish time (after the scan at open, which reads them
    /// in key order).
    pub(super) fn sort_by_age(&mut self) {
        for t in self.topics.values_mut() {
            t.entries.make_contiguous().sort_unstable();
        }
    }

    /// Every stream's highest seq held.
    pub(super) fn heads(&self) -> Vec<(TopicId, NodeId, Seq)> {
        self.heads.iter().map(|((t, o), s)| (*t, *o, *s)).collect()
    }

    /// Messages and payload bytes held, over all topics.
    pub(super) fn totals(&self) -> (u64, u64) {
        self.topics.values().fold((0, 0), |(m, b), t| (m + t.entries.len() as u64, b + t.bytes))
    }

    /// The messages retention no longer covers at `now_us` (µs, the publish times' clock),
    /// removed from the index: (topic, origin, seq). Also the gap records of streams whose
    /// every message went before them.
    pub(super) fn expired(&mut self, now_us: u64) -> Vec<(TopicId, NodeId, Seq)> {
        let r = self.retention;
        let cutoff = now_us.saturating_sub(r.age.as_micros().min(u128::from(u64::MAX)) as u64);
        let mut out = Vec::new();
        for (topic, t) in self.topics.iter_mut() {
            while let Some(&(at, origin, seq, bytes)) = t.entries.front() {
                let over = t.entries.len() as u64 > r.messages || t.bytes > r.bytes || at < cutoff;
                if !over {
                    break;
                }
                t.entries.pop_front();
                t.bytes = t.bytes.saturating_sub(bytes);
                out.push((*topic, origin, seq));
            }
        }
        self.topics.retain(|_, t| !t.entries.is_empty());
        out
    }

    /// Gap records of `(topic, origin)` below `seq`, removed from the index (they cover
    /// messages retention already dropped).
    pub(super) fn gaps_below(&mut self, topic: TopicId, origin: NodeId, seq: Seq) -> Vec<Seq> {
        let Some(g) = self.gaps.get_mut(&(topic, origin)) else { return Vec::new() };
        let (below, keep): (Vec<Seq>, Vec<Seq>) = g.iter().partition(|f| **f < seq);
        *g = keep;
        below
    }
}
