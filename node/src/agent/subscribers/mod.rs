//! The local subscriptions of one agent: the fan-out of what the Engine delivers, durable
//! subscriptions and their cursors, and replays from the store.
//!
//! A delivery is decoded once into an [`AppMessage`] and rendered once as the API's stream
//! line (the body as text when it is UTF-8, base64 when not); each subscription of its topic
//! whose filter matches the headers gets a copy. Nothing here touches the Engine: whatever
//! ends a non-durable subscription returns its topic name, and the actor unsubscribes the
//! Engine from it (a durable subscription's topic stays subscribed, its "anchor", until the
//! durable subscription is deleted).
//!
//! # Kinds
//!
//! - **Non-durable, from `new`**: live from the moment it opens, each message at most once, in
//!   the Engine's per-origin order with its gap notices. Its sink is bounded: a client whose
//!   queue is full when an item comes did not keep up and is closed, with a last
//!   [`Closed`](StreamItem::Closed) line saying so.
//! - **Non-durable, from `all` or a time**: first a replay of the local store, then live, as
//!   below; slow clients are closed as above.
//! - **Durable** (a [`DurableName`]): per origin a cursor, the last seq its clients
//!   acknowledged, kept in the store. A client that connects gets a replay of everything after
//!   the cursors, then live items. A client that does not keep up is paused, not closed: live
//!   items stop going to it (they are in the store) and a replay from what it was last sent
//!   starts, which waits on the client's queue. At most one client at a time.
//!
//! # Replay, then live: the handover
//!
//! A replay ([`replay`]) runs in its own task. It first waits until the store's synced ticket
//! reaches the last ticket submitted when it began: every message the Engine delivered before
//! that moment had its write submitted before its delivery (the Engine emits
//! [`Persist`](crate::engine::Persist) before the delivery, and the actor submits in that
//! order), so it is in the store by then and the replay reads it (or, if retention trimmed it,
//! announces it as a gap). Meanwhile every live item for the subscription is buffered. When the
//! replay has sent everything it found, the buffered items go out, each only if it is past what
//! the replay sent of its origin (`sent`, per origin the last seq sent or passed over), so:
//!
//! - **nothing is lost**: an item delivered before the replay began is in what it reads; one
//!   delivered after is in the buffer. If the buffer outgrows [`BUFFER_MAX`] it is dropped and
//!   another replay pass starts from `sent` once the first ends (those items are in the store
//!   too), so memory stays bounded however slow the client;
//! - **nothing is sent twice on one connection**: per origin the store and the buffer are both
//!   in seq order, and only what is past `sent` goes out. Redeliveries happen only across
//!   connections (a client that reconnects gets what it had not acknowledged again, with the
//!   same (origin, seq)), so duplicates are bounded by what was unacknowledged.
//!
//! A live item reaches a durable client only after its write was submitted, never before: if
//! the agent crashes before that write is durable, the client's acknowledgement of it (a later
//! write, committed in order) is lost with it, and the restarted agent fetches the message
//! again from its peers (its stored heads do not include it).
//!
//! # Cursors of streams that appear later
//!
//! The first time this node delivers anything of an origin on a topic, each durable
//! subscription of the topic without a cursor for that origin gets one just before it (seq
//! minus one): that is where the node's copy of the stream begins. A replay announces what is
//! missing after a cursor as a gap (retention dropped it), so a stream that was already old when
//! this node joined the topic is not announced as a gap, while one whose first messages were
//! trimmed before a client read them is. A durable subscription created `--from all` or from a
//! time gets 0 instead (it wants everything retained). "First" is counted from the moment the
//! Engine last subscribed the topic afresh: when a subscription makes the agent hold a topic it
//! did not hold, the Engine starts the topic's streams anew (at their current heads, or from
//! seq 1), not where the store's older copy of them ends, so what was known of their heads is
//! forgotten then.

mod durables;
mod replay;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hearsay_protocols::pbcast::Delivery;
use hearsay_protocols::{NodeId, Seq, TopicId};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;

pub(super) use self::replay::ReplayDone;
use self::replay::{Outcome, Plan};
use super::command::{DurableName, StartAt, SubscribeOptions};
use crate::api::types::{self, StreamItem, hex};
use crate::filter::Filter;
use crate::message::{AppMessage, TopicName};
use crate::store::{Durable, Store};

/// Live items a replaying subscription buffers at most; past it the buffer is dropped and
/// another replay pass reads them from the store.
pub(super) const BUFFER_MAX: usize = 8192;

/// One connected subscription.
struct Subscription {
    topic: TopicId,
    name: TopicName,
    filter: Option<Filter>,
    /// Messages published before this (µs) are passed over.
    since: Option<u64>,
    expires: Option<Instant>,
    sink: mpsc::Sender<StreamItem>,
    /// The durable subscription this client is connected to.
    durable: Option<DurableName>,
    /// Per origin, the last seq sent to this client or passed over (filtered out).
    sent: BTreeMap<NodeId, Seq>,
    mode: Mode,
}

enum Mode {
    /// Live items go straight to the sink.
    Live,
    /// A replay task is sending from the store; live items wait in the buffer.
    Replaying(Replaying),
}

struct Replaying {
    /// Which replay: a report from an older one is stale.
    generation: u64,
    task: tokio::task::JoinHandle<()>,
    buffer: VecDeque<Pending>,
    /// The buffer overflowed: what it dropped is read by another pass.
    overflowed: bool,
}

/// A live item waiting for a replay to end: seqs up to `last` of `origin` (one message, or a
/// gap notice ending there).
struct Pending {
    origin: NodeId,
    last: Seq,
    item: StreamItem,
}

/// A durable subscription as the agent holds it.
struct DurableState {
    topic: TopicName,
    topic_id: TopicId,
    durable: Durable,
    /// The subscription of its connected client.
    client: Option<u64>,
}

/// The agent's local subscriptions, by the order they were opened, and its durable ones.
pub(super) struct Subscribers {
    subs: BTreeMap<u64, Subscription>,
    next: u64,
    generation: u64,
    durables: BTreeMap<DurableName, DurableState>,
    /// Per topic and origin, the highest seq this node has delivered or announced as a gap
    /// (from the store at start, then as the Engine delivers): an origin absent here appears
    /// for the first time.
    heads: BTreeMap<TopicId, BTreeMap<NodeId, Seq>>,
    store: Option<Store>,
    done: mpsc::UnboundedSender<ReplayDone>,
    buffer_max: usize,
}

impl Subscribers {
    /// Subscriptions over `store` (none: no durable subscriptions, no replays), knowing the
    /// stored `heads` and the stored `durables`. Replays report on the receiver returned: hand
    /// each report to [`Subscribers::replay_done`].
    pub(super) fn new(
        store: Option<Store>,
        heads: &[(TopicId, NodeId, Seq)],
        durables: Vec<(String, Durable)>,
    ) -> (Subscribers, mpsc::UnboundedReceiver<ReplayDone>) {
        let (done, reports) = mpsc::unbounded_channel();
        let mut known: BTreeMap<TopicId, BTreeMap<NodeId, Seq>> = BTreeMap::new();
        for (t, o, s) in heads {
            known.entry(*t).or_default().insert(*o, *s);
        }
        let mut held = BTreeMap::new();
        for (name, durable) in durables {
            let (Ok(n), Ok(topic)) = (DurableName::new(name.clone()), TopicName::new(durable.topic.clone()))
            else {
                tracing::warn!(
                    name,
                    topic = durable.topic,
                    "a stored durable subscription with a bad name is ignored"
                );
                continue;
            };
            let topic_id = TopicId::of(topic.as_str());
            held.insert(n, DurableState { topic, topic_id, durable, client: None });
        }
        let subs = Subscribers {
            subs: BTreeMap::new(),
            next: 0,
            generation: 0,
            durables: held,
            heads: known,
            store,
            done,
            buffer_max: BUFFER_MAX,
        };
        (subs, reports)
    }

    /// Subscriptions open.
    pub(super) fn len(&self) -> usize {
        self.subs.len()
    }

    /// Subscriptions open on `topic`.
    pub(super) fn on(&self, topic: TopicId) -> usize {
        self.subs.values().filter(|s| s.topic == topic).count()
    }

    /// Add a non-durable subscription to `name` (whose id is `topic`); the Engine is
    /// subscribed already. From `all` or a time (with a store) it starts with a replay.
    pub(super) fn add(
        &mut self,
        topic: TopicId,
        name: TopicName,
        options: SubscribeOptions,
        sink: mpsc::Sender<StreamItem>,
    ) {
        let from = options.from;
        self.fresh(topic);
        let id = self.insert(topic, name, &options, from.since(), sink, None);
        if from != StartAt::New && self.store.is_some() {
            // Every origin known here from seq 1: what is not in the store is a gap.
            let known =
                self.heads.get(&topic).map(|h| h.keys().map(|o| (*o, 0)).collect()).unwrap_or_default();
            if let Some(sub) = self.subs.get_mut(&id) {
                sub.sent = known;
            }
            self.start_replay(id);
        }
    }

    fn insert(
        &mut self,
        topic: TopicId,
        name: TopicName,
        options: &SubscribeOptions,
        since: Option<u64>,
        sink: mpsc::Sender<StreamItem>,
        durable: Option<DurableName>,
    ) -> u64 {
        self.next += 1;
        let expires = options.expire.map(|d| Instant::now() + d);
        let sub = Subscription {
            topic,
            name,
            filter: options.filter.clone(),
            since,
            expires,
            sink,
            durable,
            sent: BTreeMap::new(),
            mode: Mode::Live,
        };
        self.subs.insert(self.next, sub);
        self.next
    }

    /// Hand a delivered message to every matching subscription of its topic. Returns the
    /// topics of the non-durable subscriptions closed for not keeping up.
    pub(super) fn deliver(&mut self, d: &Delivery) -> Vec<TopicName> {
        let (topic, origin, seq) = (d.id.topic, d.id.origin, d.id.seq);
        self.seen(topic, origin, seq, seq);
        if !self.subs.values().any(|s| s.topic == topic) {
            return Vec::new();
        }
        let rendered = Rendered::new(&d.payload);
        let published_at = d.published_at.as_micros();
        let origin_hex = hex(&origin);
        self.offer(topic, origin, seq, |sub| {
            if sub.since.is_some_and(|t| published_at < t) || !rendered.matches(sub.filter.as_ref()) {
                return None;
            }
            Some(rendered.item(&sub.name, &origin_hex, seq))
        })
    }

    /// Tell every subscription of `topic` that `first..=last` of `origin` will never come.
    /// Returns the topics of the non-durable subscriptions closed for not keeping up.
    pub(super) fn gap(&mut self, topic: TopicId, origin: NodeId, first: Seq, last: Seq) -> Vec<TopicName> {
        self.seen(topic, origin, first, last);
        let origin_hex = hex(&origin);
        self.offer(topic, origin, last, |sub| Some(gap_item(&sub.name, &origin_hex, first, last)))
    }

    /// Offer seqs up to `last` of `origin` on `topic`, rendered per subscription by `item`
    /// (`None`: passed over), to every subscription of the topic: live ones get it now, those
    /// replaying buffer it. Returns the topics of the non-durable subscriptions closed.
    fn offer(
        &mut self,
        topic: TopicId,
        origin: NodeId,
        last: Seq,
        item: impl Fn(&Subscription) -> Option<StreamItem>,
    ) -> Vec<TopicName> {
        let mut slow = Vec::new();
        let mut paused = Vec::new();
        let mut gone = Vec::new();
        let buffer_max = self.buffer_max;
        for (id, sub) in self.subs.iter_mut().filter(|(_, s)| s.topic == topic) {
            let after = sub.sent.get(&origin).copied();
            if after.is_some_and(|s| last <= s) {
                continue;
            }
            let rendered = item(sub);
            match &mut sub.mode {
                Mode::Replaying(r) => {
                    let Some(item) = rendered else { continue };
                    if r.overflowed {
                        continue;
                    }
                    if r.buffer.len() >= buffer_max {
                        r.overflowed = true;
                        r.buffer.clear();
                        continue;
                    }
                    r.buffer.push_back(Pending { origin, last, item });
                }
                Mode::Live => {
                    let Some(item) = rendered else {
                        sub.sent.insert(origin, last);
                        continue;
                    };
                    let item = match after {
                        Some(s) => trim(item, s),
                        None => item,
                    };
                    match offer(&sub.sink, item) {
                        Offer::Queued => {
                            sub.sent.insert(origin, last);
                        }
                        Offer::Full if sub.durable.is_some() => paused.push(*id),
                        Offer::Full => slow.push(*id),
                        Offer::Gone => gone.push(*id),
                    }
                }
            }
        }
        let mut ended = Vec::new();
        for id in paused {
            tracing::debug!(sub = id, "durable client paused: its queue is full; it resumes from the store");
            self.start_replay(id);
        }
        for id in slow {
            ended.extend(self.end_slow(id));
        }
        for id in gone {
            ended.extend(self.remove(id));
        }
        ended
    }

    /// Start (or restart) subscription `id`'s replay from what it was sent. Without a store
    /// it stays live.
    fn start_replay(&mut self, id: u64) {
        let Some(store) = &self.store else { return };
        let Some(sub) = self.subs.get_mut(&id) else { return };
        self.generation += 1;
        let plan = Plan {
            sub: id,
            generation: self.generation,
            topic: sub.topic,
            name: sub.name.clone(),
            filter: sub.filter.clone(),
            since: sub.since,
            from: sub.sent.clone(),
            upto: store.last_ticket(),
        };
        let task = tokio::spawn(replay::run(store.clone(), plan, sub.sink.clone(), self.done.clone()));
        let replaying =
            Replaying { generation: self.generation, task, buffer: VecDeque::new(), overflowed: false };
        if let Mode::Replaying(old) = std::mem::replace(&mut sub.mode, Mode::Replaying(replaying)) {
            old.task.abort();
        }
    }

    /// A replay ended: go live (sending what was buffered and is past what the replay sent),
    /// run another pass if the buffer overflowed, or end the subscription if its client left
    /// or the store failed. Returns the topics of non-durable subscriptions that ended.
    pub(super) fn replay_done(&mut self, done: ReplayDone) -> Vec<TopicName> {
        let id = done.sub;
        let current = self
            .subs
            .get(&id)
            .is_some_and(|s| matches!(&s.mode, Mode::Replaying(r) if r.generation == done.generation));
        if !current {
            return Vec::new();
        }
        match done.outcome {
            Outcome::Caught => {}
            Outcome::ClientGone => return self.remove(id).into_iter().collect(),
            Outcome::StoreFailed(e) => {
                return self.end(id, &format!("the store failed: {e}")).into_iter().collect();
            }
        }
        let Some(sub) = self.subs.get_mut(&id) else { return Vec::new() };
        for (origin, seq) in done.sent {
            let s = sub.sent.entry(origin).or_insert(0);
            *s = (*s).max(seq);
        }
        let Mode::Replaying(r) = std::mem::replace(&mut sub.mode, Mode::Live) else { return Vec::new() };
        if r.overflowed {
            self.start_replay(id);
            return Vec::new();
        }
        for p in r.buffer {
            let after = sub.sent.get(&p.origin).copied();
            if after.is_some_and(|s| p.last <= s) {
                continue;
            }
            let item = match after {
                Some(s) => trim(p.item, s),
                None => p.item,
            };
            match offer(&sub.sink, item) {
                Offer::Queued => {
                    sub.sent.insert(p.origin, p.last);
                }
                Offer::Full if sub.durable.is_some() => {
                    self.start_replay(id);
                    return Vec::new();
                }
                Offer::Full => return self.end_slow(id).into_iter().collect(),
                Offer::Gone => return self.remove(id).into_iter().collect(),
            }
        }
        Vec::new()
    }

    /// Close the subscriptions that expired (telling their clients) and forget those whose
    /// client went away. Returns the topics of the non-durable ones.
    pub(super) fn housekeeping(&mut self, now: Instant) -> Vec<TopicName> {
        let expired: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, s)| s.expires.is_some_and(|e| e <= now))
            .map(|(id, _)| *id)
            .collect();
        let mut ended: Vec<TopicName> =
            expired.into_iter().filter_map(|id| self.end(id, "the subscription expired")).collect();
        let gone: Vec<u64> =
            self.subs.iter().filter(|(_, s)| s.sink.is_closed()).map(|(id, _)| *id).collect();
        ended.extend(gone.into_iter().filter_map(|id| self.remove(id)));
        ended
    }

    /// Close every subscription, telling each client `reason`. Returns the topics of the
    /// non-durable ones.
    pub(super) fn close_all(&mut self, reason: &str) -> Vec<TopicName> {
        let ids: Vec<u64> = self.subs.keys().copied().collect();
        ids.into_iter().filter_map(|id| self.end(id, reason)).collect()
    }

    fn end_slow(&mut self, id: u64) -> Option<TopicName> {
        // The sink's last slot is kept for the closing line (see `offer`).
        let capacity = self.subs.get(&id)?.sink.max_capacity().saturating_sub(1);
        let why = format!("the subscriber did not keep up (its queue of {capacity} messages was full)");
        self.end(id, &why)
    }

    /// Close one subscription, telling its client why (from a task: its queue may be full).
    /// Returns its topic if it held an Engine subscription (a non-durable one).
    fn end(&mut self, id: u64, reason: &str) -> Option<TopicName> {
        let sink = self.subs.get(&id)?.sink.clone();
        let topic = self.remove(id);
        let item = StreamItem::Closed { closed: types::Closed { reason: reason.to_string() } };
        // At once if the queue has room (so it is queued even if the agent is about to exit),
        // else from a task that waits for room.
        if let Err(TrySendError::Full(item)) = sink.try_send(item) {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), sink.send(item)).await;
            });
        }
        topic
    }

    /// Forget one subscription (its replay stops, its durable subscription is free again).
    /// Returns its topic if it held an Engine subscription (a non-durable one).
    fn remove(&mut self, id: u64) -> Option<TopicName> {
        let sub = self.subs.remove(&id)?;
        if let Mode::Replaying(r) = &sub.mode {
            r.task.abort();
        }
        match &sub.durable {
            Some(name) => {
                if let Some(state) = self.durables.get_mut(name) {
                    if state.client == Some(id) {
                        state.client = None;
                    }
                }
                None
            }
            None => Some(sub.name),
        }
    }
}

/// Queue `item` for a client, keeping the queue's last slot free (sinks are made one larger
/// than the messages they hold): a client whose queue is that full did not keep up, and the
/// slot takes its closing line at once, so the line is queued however long the client takes
/// to read again.
fn offer(sink: &mpsc::Sender<StreamItem>, item: StreamItem) -> Offer {
    if sink.capacity() <= 1 {
        return Offer::Full;
    }
    match sink.try_send(item) {
        Ok(()) => Offer::Queued,
        Err(TrySendError::Full(_)) => Offer::Full,
        Err(TrySendError::Closed(_)) => Offer::Gone,
    }
}

/// What [`offer`] did.
enum Offer {
    Queued,
    /// The queue is full but for the slot kept for the closing line.
    Full,
    /// The client is gone.
    Gone,
}

/// `item` without what `after` covers: a gap notice that began at or before it starts after
/// it (messages past `after` are unchanged).
fn trim(item: StreamItem, after: Seq) -> StreamItem {
    match item {
        StreamItem::Gap { mut gap } => {
            gap.from_seq = gap.from_seq.max(after.saturating_add(1));
            StreamItem::Gap { gap }
        }
        other => other,
    }
}

/// A gap notice line.
fn gap_item(topic: &TopicName, origin_hex: &str, first: Seq, last: Seq) -> StreamItem {
    StreamItem::Gap {
        gap: types::Gap {
            topic: topic.to_string(),
            origin: origin_hex.to_string(),
            from_seq: first,
            to_seq: last,
        },
    }
}

/// A payload decoded once, rendered for each subscription that wants it.
struct Rendered {
    msg: AppMessage,
    text: Option<String>,
    b64: Option<String>,
}

impl Rendered {
    fn new(payload: &Bytes) -> Rendered {
        // A payload that is not an AppMessage (an embedder's raw bytes) is all body.
        let msg = AppMessage::decode(payload)
            .unwrap_or_else(|_| AppMessage { headers: BTreeMap::new(), body: payload.clone() });
        let (text, b64) = match std::str::from_utf8(&msg.body) {
            Ok(t) => (Some(t.to_string()), None),
            Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(&msg.body))),
        };
        Rendered { msg, text, b64 }
    }

    fn matches(&self, filter: Option<&Filter>) -> bool {
        filter.is_none_or(|f| f.matches(&self.msg.headers))
    }

    fn item(&self, topic: &TopicName, origin_hex: &str, seq: Seq) -> StreamItem {
        StreamItem::Message(types::Delivery {
            topic: topic.to_string(),
            origin: origin_hex.to_string(),
            seq,
            payload: self.text.clone(),
            payload_b64: self.b64.clone(),
            headers: self.msg.headers.clone(),
        })
    }
}
