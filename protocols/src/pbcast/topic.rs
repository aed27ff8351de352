//! One topic's state at one node: its streams, the bounded history they share, the gossip
//! buffer's expiry queue, and the FIFO delivery of §4.7.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::anti_entropy::StreamSummary;

use super::stream::{Cursor, Held, Stream};
use super::{Data, Delivery, MsgId, PbConfig, PbEvent, PbMessage, PbStats};
use crate::id::{NodeId, Seq, StreamId, TopicId};
use crate::machine::Outbox;
use crate::time::Instant;

/// Where a member's streams start when it first hears of them (§4.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StartRule {
    /// At seq 1: the node subscribed before anything was published.
    FromFirst,
    /// At the first evidence: the first entry obtained or the floor of the first summary.
    FirstEvidence,
}

#[derive(Debug)]
pub(super) struct Topic {
    pub(super) id: TopicId,
    /// Subscribed: delivers, solicits, and gossips every stream.
    pub(super) member: bool,
    /// The heads deadline while a new subscriber waits for its start cursors (§4.7).
    pub(super) awaiting_heads: Option<Instant>,
    /// When the heads were asked for: a head published about then or later may have been
    /// published after the subscription, and is delivered (see `Pbcast::handle_heads`).
    pub(super) heads_asked_at: Instant,
    pub(super) start_rule: StartRule,
    /// Last local round in which this node counts as a source (published within G rounds).
    pub(super) source_until: u64,
    pub(super) streams: BTreeMap<NodeId, Stream>,
    /// The summary of every stream with at least one active seq, kept up to date as the
    /// gossip buffer changes (a digest is built every tick; buffers change far less often).
    summaries: BTreeMap<NodeId, StreamSummary>,
    /// M: missing seqs listed per summary.
    missing_max: usize,
    /// Origins of the member streams whose next seq is known to exist and not held (the only
    /// streams the gap check and the pull hook look at).
    pub(super) lagging: BTreeSet<NodeId>,
    /// Active entries in the order received: (received round, origin, seq).
    active_queue: VecDeque<(u64, NodeId, Seq)>,
    /// Entries that may be evicted, oldest first: delivered, or never to be delivered.
    evictable: VecDeque<(NodeId, Seq)>,
    /// Entries held and their payload bytes.
    pub(super) msgs: usize,
    pub(super) bytes: usize,
    /// The last origin of a digest cut at `digest_streams`; the next one continues after it.
    pub(super) digest_cursor: Option<NodeId>,
}

/// Bookkeeping bytes counted per held entry (its map node, seal and timestamps) and per queue
/// slot, in [`Topic::state_bytes`].
const ENTRY_COST: usize = 128;
/// Bookkeeping bytes counted per stream, summary or lagging origin.
const STREAM_COST: usize = 192;

impl Topic {
    pub(super) fn new(id: TopicId, member: bool, start_rule: StartRule, missing_max: usize) -> Self {
        Topic {
            id,
            member,
            awaiting_heads: None,
            heads_asked_at: Instant::ZERO,
            start_rule,
            source_until: 0,
            streams: BTreeMap::new(),
            summaries: BTreeMap::new(),
            missing_max,
            lagging: BTreeSet::new(),
            active_queue: VecDeque::new(),
            evictable: VecDeque::new(),
            msgs: 0,
            bytes: 0,
            digest_cursor: None,
        }
    }

    /// Bytes this topic accounts for: held payloads, [`ENTRY_COST`] per held entry and per
    /// queue slot, [`STREAM_COST`] per stream and summary.
    pub(super) fn state_bytes(&self) -> usize {
        let entries = self.msgs.saturating_add(self.active_queue.len()).saturating_add(self.evictable.len());
        let streams =
            self.streams.len().saturating_add(self.summaries.len()).saturating_add(self.lagging.len());
        self.bytes
            .saturating_add(entries.saturating_mul(ENTRY_COST))
            .saturating_add(streams.saturating_mul(STREAM_COST))
    }

    /// The stream of `origin`, created with the cursor the start rule gives.
    pub(super) fn stream_mut(&mut self, origin: NodeId) -> &mut Stream {
        let fixed = self.member && self.awaiting_heads.is_none() && self.start_rule == StartRule::FromFirst;
        self.streams.entry(origin).or_insert_with(|| Stream::with_cursor(fixed.then(|| Cursor::at(1))))
    }

    /// Store a new entry (the caller checked it is not held). It is active from this round.
    pub(super) fn store(&mut self, origin: NodeId, seq: Seq, held: Held, round: u64) {
        self.msgs += 1;
        self.bytes += held.payload.len();
        let member = self.member;
        let len = held.payload.len();
        let stream = self.stream_mut(origin);
        stream.bytes += len;
        stream.held.insert(seq, held);
        stream.activate(seq);
        stream.solicited.remove(&seq);
        stream.learn(seq, round);
        stream.prove(seq);
        // Entries that will never be delivered here can be evicted at once.
        let never_delivered = !member || stream.cursor.is_some_and(|c| seq < c.next);
        self.resummarize(origin);
        self.active_queue.push_back((round, origin, seq));
        if never_delivered {
            self.evictable.push_back((origin, seq));
        }
    }

    /// Drop entries received more than `g` rounds before `round` from the gossip buffer. A
    /// source that is not a member forgets them altogether.
    pub(super) fn expire(&mut self, round: u64, g: u64) {
        while let Some(&(r, origin, seq)) = self.active_queue.front() {
            if round.saturating_sub(r) <= g {
                break;
            }
            self.active_queue.pop_front();
            let Some(stream) = self.streams.get_mut(&origin) else {
                continue;
            };
            stream.deactivate(seq);
            if !self.member {
                if let Some(h) = stream.held.remove(&seq) {
                    self.msgs -= 1;
                    self.bytes -= h.payload.len();
                    stream.bytes -= h.payload.len();
                }
            }
            self.resummarize(origin);
        }
        if !self.member {
            self.streams.retain(|_, s| !s.held.is_empty());
        }
        // Forget eviction candidates that are gone already (expired at a source).
        while let Some(&(origin, seq)) = self.evictable.front() {
            if self.streams.get(&origin).is_some_and(|s| s.held.contains_key(&seq)) {
                break;
            }
            self.evictable.pop_front();
        }
    }

    /// True when any entry is still in the gossip buffer.
    pub(super) fn has_active(&self) -> bool {
        !self.active_queue.is_empty()
    }

    /// True if an entry of `origin` may be kept: its stream exists, or there is room for one
    /// more under `streams_max`.
    pub(super) fn admits(&self, origin: &NodeId, streams_max: usize) -> bool {
        self.streams.len() < streams_max || self.streams.contains_key(origin)
    }

    /// The oldest evictable entry of the stream holding the most bytes, if it has one: when a
    /// topic is over its bounds the biggest stream gives first, so many streams of minted
    /// origins cannot push out a real publisher's history.
    fn evict_from_largest(&self) -> Option<(NodeId, Seq)> {
        let (origin, stream) = self.streams.iter().max_by_key(|(o, s)| (s.bytes, std::cmp::Reverse(**o)))?;
        let first = stream.held.first_from(1)?;
        let evictable = !self.member || stream.cursor.is_some_and(|c| first < c.next);
        evictable.then_some((*origin, first))
    }

    /// Evict entries until the history fits its bounds: the biggest stream's oldest evictable
    /// entry first, else the oldest evictable. Entries waiting in a hold buffer are never
    /// evicted, so the bound can be exceeded by at most those.
    pub(super) fn enforce_bounds(&mut self, config: &PbConfig, stats: &mut PbStats) {
        while self.msgs > config.history_msgs || self.bytes > config.history_bytes {
            let next = match self.evict_from_largest() {
                Some(x) => Some(x),
                None => self.evictable.pop_front(),
            };
            let Some((origin, seq)) = next else {
                break;
            };
            let Some(stream) = self.streams.get_mut(&origin) else {
                continue;
            };
            if let Some(h) = stream.held.remove(&seq) {
                self.msgs -= 1;
                self.bytes -= h.payload.len();
                stream.bytes -= h.payload.len();
                stats.evicted += 1;
                if stream.deactivate(seq) {
                    self.resummarize(origin);
                }
            }
        }
    }

    /// Recompute whether `origin`'s stream is lagging: its cursor is fixed and its next seq
    /// is known to exist but is not held.
    pub(super) fn refresh(&mut self, origin: NodeId) {
        let lagging = self.streams.get(&origin).is_some_and(|s| {
            s.cursor.is_some_and(|c| s.known_hi() >= c.next && !s.held.contains_key(&c.next))
        });
        if lagging {
            self.lagging.insert(origin);
        } else {
            self.lagging.remove(&origin);
        }
    }

    /// Hand every deliverable entry of `origin`'s stream to the subscriber, in seq order.
    pub(super) fn deliver(
        &mut self,
        origin: NodeId,
        out: &mut Outbox<PbMessage, PbEvent>,
        stats: &mut PbStats,
    ) {
        self.deliver_ready(origin, out, stats);
        self.refresh(origin);
    }

    fn deliver_ready(&mut self, origin: NodeId, out: &mut Outbox<PbMessage, PbEvent>, stats: &mut PbStats) {
        if !self.member || self.awaiting_heads.is_some() {
            return;
        }
        let topic = self.id;
        let Some(stream) = self.streams.get_mut(&origin) else {
            return;
        };
        let Some(cursor) = stream.cursor.as_mut() else {
            return;
        };
        let before = cursor.next;
        while let Some(h) = stream.held.get(&cursor.next) {
            out.event(PbEvent::Deliver(Delivery {
                id: MsgId { origin, topic, seq: cursor.next },
                payload: h.payload.clone(),
                published_at: h.published_at,
                received_at: h.received_at,
                via: h.via,
                seal: h.seal,
            }));
            self.evictable.push_back((origin, cursor.next));
            stats.delivered += 1;
            cursor.next += 1;
        }
        if cursor.next != before {
            let next = cursor.next;
            stream.prune_below(next);
        }
    }

    /// The gap check of §4.7 on every stream, at local round `round`. Emits `Gap` events and
    /// delivers what the gaps unblock.
    pub(super) fn check_gaps(
        &mut self,
        round: u64,
        gap_after: u64,
        hold_max: usize,
        out: &mut Outbox<PbMessage, PbEvent>,
        stats: &mut PbStats,
    ) {
        if !self.member || self.awaiting_heads.is_some() {
            return;
        }
        let origins: Vec<NodeId> = self.lagging.iter().copied().collect();
        for origin in origins {
            while let Some(stream) = self.streams.get_mut(&origin) {
                let Some(c) = stream.cursor else {
                    break;
                };
                let s = c.next;
                // Only a seq below one proven to exist is given up: a digest's word alone
                // cannot make this node skip anything.
                if stream.held.contains_key(&s) || stream.known_hi() < s || stream.proven() < s {
                    break;
                }
                let hold_full = stream.hold_len() >= hold_max;
                let overdue = stream.known_since(s).is_some_and(|r| round.saturating_sub(r) >= gap_after);
                if !hold_full && !overdue {
                    break;
                }
                // [s, last]: unheld, and each satisfying the same test.
                let below_held = stream.held.first_from(s).map_or(Seq::MAX, |q| q - 1);
                let mut last = below_held.min(stream.known_hi()).min(stream.proven());
                if !hold_full {
                    last = last.min(stream.known_by(round.saturating_sub(gap_after)));
                }
                out.event(PbEvent::Gap { topic: self.id, origin, first: s, last });
                stats.gaps += 1;
                stats.gap_seqs = stats.gap_seqs.saturating_add(last - s + 1);
                if let Some(cursor) = stream.cursor.as_mut() {
                    cursor.next = last + 1;
                }
                stream.prune_below(last + 1);
                self.deliver(origin, out, stats);
            }
        }
    }

    /// Fix the start cursors once the heads reply is in (or will never come): streams named
    /// in `heads` start after the partner's `max`, the others at their first evidence.
    /// Set every stream's start from a heads reply (`Some`) or from nothing (`None`: no member
    /// answered in time). A stream absent from a reply did not exist when the reply was made,
    /// so all of it follows the subscription: later streams start at seq 1. Without a reply
    /// nothing is known, and they start at their first evidence.
    pub(super) fn resolve_heads(&mut self, heads: Option<&[(NodeId, Seq)]>, me: NodeId) {
        self.awaiting_heads = None;
        self.start_rule = if heads.is_some() { StartRule::FromFirst } else { StartRule::FirstEvidence };
        let heads = heads.unwrap_or(&[]);
        for &(origin, max) in heads {
            if origin == me {
                continue;
            }
            // Not `stream_mut`: under the rule just set, a stream first named here would be
            // created at seq 1, and the head it is named with would be ignored.
            let stream = self.streams.entry(origin).or_insert_with(|| Stream::with_cursor(None));
            if stream.cursor.is_none() {
                stream.cursor = Some(Cursor::at(max.saturating_add(1)));
            }
        }
        let from_first = self.start_rule == StartRule::FromFirst;
        for stream in self.streams.values_mut() {
            if stream.cursor.is_none() {
                stream.cursor =
                    if from_first { Some(Cursor::at(1)) } else { stream.held.keys().next().map(Cursor::at) };
            }
        }
        // What arrived while waiting and lies below a start is never delivered.
        for (origin, stream) in &self.streams {
            if let Some(c) = stream.cursor {
                self.evictable.extend(stream.held.keys_below(c.start).map(|s| (*origin, s)));
            }
        }
    }

    /// An entry as a retransmission.
    pub(super) fn repair_data(&self, origin: NodeId, seq: Seq) -> Option<Data> {
        let h = self.streams.get(&origin)?.held.get(&seq)?;
        Some(Data {
            id: MsgId { origin, topic: self.id, seq },
            published_at: h.published_at,
            payload: h.payload.clone(),
            seal: h.seal,
        })
    }

    /// True when a member stream knows of a seq it neither holds nor has given up.
    pub(super) fn has_known_missing(&self) -> bool {
        self.member && !self.lagging.is_empty()
    }

    /// Recompute the cached summary of `origin`'s gossip buffer.
    fn resummarize(&mut self, origin: NodeId) {
        match self.streams.get(&origin).filter(|s| !s.is_inactive()) {
            Some(s) => {
                let summary = s.active_summary(StreamId { topic: self.id, origin }, self.missing_max);
                self.summaries.insert(origin, summary);
            }
            None => {
                self.summaries.remove(&origin);
            }
        }
    }

    /// This round's digest: the summaries of the streams with active entries, ascending, at
    /// most `max` of them; when there are more, a window that continues after the last one
    /// sent (§4.5, "rotating when more").
    pub(super) fn digest(&mut self, max: usize) -> Vec<StreamSummary> {
        if self.summaries.len() <= max {
            return self.summaries.values().cloned().collect();
        }
        let after = self.digest_cursor;
        let tail = self.summaries.iter().filter(|(o, _)| after.is_none_or(|a| **o > a));
        let head = self.summaries.iter().filter(|(o, _)| after.is_some_and(|a| **o <= a));
        let mut window: Vec<(NodeId, StreamSummary)> =
            tail.chain(head).take(max).map(|(o, s)| (*o, s.clone())).collect();
        self.digest_cursor = window.last().map(|(o, _)| *o);
        window.sort_unstable_by_key(|(o, _)| *o);
        window.into_iter().map(|(_, s)| s).collect()
    }

    /// Keep only this node's own stream (a member that unsubscribes but is still a source).
    pub(super) fn keep_only_own(&mut self, me: NodeId) {
        self.member = false;
        self.awaiting_heads = None;
        self.streams.retain(|o, _| *o == me);
        self.active_queue.retain(|(_, o, _)| *o == me);
        self.evictable.retain(|(o, _)| *o == me);
        self.summaries.retain(|o, _| *o == me);
        self.lagging.clear();
        self.digest_cursor = None;
        if let Some(own) = self.streams.get_mut(&me) {
            own.cursor = None;
            // A source keeps its entries only while they are active.
            let active: Vec<Seq> = own.held.keys().filter(|s| own.is_active(*s)).collect();
            own.held.retain(|s, _| active.binary_search(&s).is_ok());
        }
        let own = self.streams.get(&me);
        self.msgs = own.map_or(0, |s| s.held.len());
        self.bytes = own.map_or(0, |s| s.held.values().map(|h| h.payload.len()).sum());
    }
}
