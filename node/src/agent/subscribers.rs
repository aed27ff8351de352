//! The local subscriptions of one agent and the fan-out of what the Engine delivers to them.
//!
//! A delivery is decoded once into an [`AppMessage`] and rendered once as the API's stream
//! line (the body as text when it is UTF-8, base64 when not); each subscription of its topic
//! whose filter matches the headers gets a copy. Sinks are bounded: a subscriber whose queue is
//! full when an item comes did not keep up and is closed, with a last
//! [`Closed`](StreamItem::Closed) line saying so (sent from a task, since its queue is full).
//!
//! Nothing here touches the Engine: whatever ends a subscription returns its topic name, and
//! the actor unsubscribes the Engine from it.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use hearsay_protocols::pbcast::Delivery;
use hearsay_protocols::{NodeId, TopicId};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::api::types::{self, StreamItem, hex};
use crate::filter::Filter;
use crate::message::{AppMessage, TopicName};

/// One local subscription.
struct Subscription {
    topic: TopicId,
    name: TopicName,
    filter: Option<Filter>,
    expires: Option<Instant>,
    sink: mpsc::Sender<StreamItem>,
}

/// The agent's local subscriptions, by the order they were opened.
#[derive(Default)]
pub(super) struct Subscribers {
    subs: BTreeMap<u64, Subscription>,
    next: u64,
}

impl Subscribers {
    /// Add a subscription to `name` (whose id is `topic`), ending `expire` from now if given.
    pub(super) fn add(
        &mut self,
        topic: TopicId,
        name: TopicName,
        filter: Option<Filter>,
        expire: Option<Duration>,
        sink: mpsc::Sender<StreamItem>,
    ) {
        self.next += 1;
        let expires = expire.map(|d| Instant::now() + d);
        self.subs.insert(self.next, Subscription { topic, name, filter, expires, sink });
    }

    /// Subscriptions open.
    pub(super) fn len(&self) -> usize {
        self.subs.len()
    }

    /// Subscriptions open on `topic`.
    pub(super) fn on(&self, topic: TopicId) -> usize {
        self.subs.values().filter(|s| s.topic == topic).count()
    }

    /// Hand a delivered message to every matching subscription of its topic. Returns the topics
    /// of the subscriptions closed for not keeping up.
    pub(super) fn deliver(&mut self, d: &Delivery) -> Vec<TopicName> {
        // A payload that is not an AppMessage (an embedder's raw bytes) is all body.
        let msg = AppMessage::decode(&d.payload)
            .unwrap_or_else(|_| AppMessage { headers: BTreeMap::new(), body: d.payload.clone() });
        let (payload, payload_b64) = match std::str::from_utf8(&msg.body) {
            Ok(t) => (Some(t.to_string()), None),
            Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(&msg.body))),
        };
        let origin = hex(&d.id.origin);
        self.send(d.id.topic, |sub| {
            if sub.filter.as_ref().is_some_and(|f| !f.matches(&msg.headers)) {
                return None;
            }
            Some(StreamItem::Message(types::Delivery {
                topic: sub.name.to_string(),
                origin: origin.clone(),
                seq: d.id.seq,
                payload: payload.clone(),
                payload_b64: payload_b64.clone(),
                headers: msg.headers.clone(),
            }))
        })
    }

    /// Tell every subscription of `topic` that `first..=last` of `origin` will never come.
    /// Returns the topics of the subscriptions closed for not keeping up.
    pub(super) fn gap(&mut self, topic: TopicId, origin: NodeId, first: u64, last: u64) -> Vec<TopicName> {
        let origin = hex(&origin);
        self.send(topic, |sub| {
            Some(StreamItem::Gap {
                gap: types::Gap {
                    topic: sub.name.to_string(),
                    origin: origin.clone(),
                    from_seq: first,
                    to_seq: last,
                },
            })
        })
    }

    /// Offer `item(sub)` to every subscription of `topic`; close those whose queue is full.
    fn send(&mut self, topic: TopicId, item: impl Fn(&Subscription) -> Option<StreamItem>) -> Vec<TopicName> {
        let mut slow = Vec::new();
        for (id, sub) in self.subs.iter().filter(|(_, s)| s.topic == topic) {
            if let Some(item) = item(sub) {
                if sub.sink.try_send(item).is_err() {
                    slow.push(*id);
                }
            }
        }
        slow.into_iter()
            .filter_map(|id| {
                let capacity = self.subs.get(&id)?.sink.max_capacity();
                let why =
                    format!("the subscriber did not keep up (its queue of {capacity} messages was full)");
                self.end(id, &why)
            })
            .collect()
    }

    /// Close the subscriptions that expired (telling their clients) and forget those whose
    /// client went away. Returns the topics of both.
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
        ended.extend(gone.into_iter().filter_map(|id| self.subs.remove(&id)).map(|s| s.name));
        ended
    }

    /// Close every subscription, telling each client `reason`. Returns their topics.
    pub(super) fn close_all(&mut self, reason: &str) -> Vec<TopicName> {
        let ids: Vec<u64> = self.subs.keys().copied().collect();
        ids.into_iter().filter_map(|id| self.end(id, reason)).collect()
    }

    /// Close one subscription, telling its client why (from a task: its queue may be full).
    fn end(&mut self, id: u64, reason: &str) -> Option<TopicName> {
        let sub = self.subs.remove(&id)?;
        let item = StreamItem::Closed { closed: types::Closed { reason: reason.to_string() } };
        let sink = sub.sink;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), sink.send(item)).await;
        });
        Some(sub.name)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use hearsay_protocols::pbcast::{MsgId, Via};
    use hearsay_protocols::{Instant as At, NodeId};

    use super::*;

    fn delivery(topic: &str, seq: u64, msg: &AppMessage) -> Delivery {
        Delivery {
            id: MsgId { origin: NodeId::from_bytes([7; 32]), topic: TopicId::of(topic), seq },
            payload: msg.encode().unwrap(),
            published_at: At::ZERO,
            received_at: At::ZERO,
            via: Via::Local,
            seal: Default::default(),
        }
    }

    fn text(body: &'static [u8], headers: &[(&str, &str)]) -> AppMessage {
        AppMessage {
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: Bytes::from_static(body),
        }
    }

    fn subscribe(
        subs: &mut Subscribers,
        topic: &str,
        filter: Option<&str>,
        queue: usize,
    ) -> mpsc::Receiver<StreamItem> {
        let (tx, rx) = mpsc::channel(queue);
        let name = TopicName::new(topic).unwrap();
        subs.add(TopicId::of(topic), name, filter.map(|f| Filter::parse(f).unwrap()), None, tx);
        rx
    }

    #[tokio::test]
    async fn a_delivery_reaches_the_matching_subscriptions_of_its_topic_only() {
        let mut subs = Subscribers::default();
        let mut all = subscribe(&mut subs, "news", None, 8);
        let mut urgent = subscribe(&mut subs, "news", Some("priority >= 3"), 8);
        let mut other = subscribe(&mut subs, "sports", None, 8);
        assert!(subs.deliver(&delivery("news", 1, &text(b"calm", &[("priority", "1")]))).is_empty());
        assert!(subs.deliver(&delivery("news", 2, &text(b"\xff\x00", &[("priority", "5")]))).is_empty());
        let first = all.try_recv().unwrap();
        let StreamItem::Message(d) = first else { panic!("{first:?}") };
        assert_eq!((d.topic.as_str(), d.seq, d.payload.as_deref()), ("news", 1, Some("calm")));
        assert_eq!(d.origin, "07".repeat(32));
        let StreamItem::Message(d) = urgent.try_recv().unwrap() else { panic!() };
        assert_eq!(d.seq, 2, "the filter let only priority 5 through");
        assert_eq!((d.payload, d.payload_b64.as_deref()), (None, Some("/wA=")), "binary bodies in base64");
        assert!(urgent.try_recv().is_err() && other.try_recv().is_err());
        assert_eq!((subs.len(), subs.on(TopicId::of("news"))), (3, 2));
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_keep_up_is_closed_and_told_why() {
        let mut subs = Subscribers::default();
        let mut slow = subscribe(&mut subs, "news", None, 1);
        let m = text(b"x", &[]);
        assert!(subs.deliver(&delivery("news", 1, &m)).is_empty());
        let closed = subs.deliver(&delivery("news", 2, &m));
        assert_eq!(closed, vec![TopicName::new("news").unwrap()]);
        assert_eq!(subs.len(), 0);
        assert!(matches!(slow.recv().await, Some(StreamItem::Message(_))));
        let Some(StreamItem::Closed { closed }) = slow.recv().await else { panic!("no closing line") };
        assert!(closed.reason.contains("queue of 1 messages was full"), "{}", closed.reason);
        assert!(slow.recv().await.is_none(), "the stream ends after the closing line");
    }

    #[tokio::test]
    async fn expired_and_abandoned_subscriptions_are_ended_by_housekeeping() {
        let mut subs = Subscribers::default();
        let (tx, mut expiring) = mpsc::channel(4);
        subs.add(TopicId::of("a"), TopicName::new("a").unwrap(), None, Some(Duration::from_secs(1)), tx);
        let abandoned = subscribe(&mut subs, "b", None, 4);
        let _kept = subscribe(&mut subs, "c", None, 4);
        drop(abandoned);
        let ended = subs.housekeeping(Instant::now() + Duration::from_secs(2));
        let names: Vec<&str> = ended.iter().map(TopicName::as_str).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(subs.len(), 1);
        let Some(StreamItem::Closed { closed }) = expiring.recv().await else { panic!() };
        assert_eq!(closed.reason, "the subscription expired");
    }
}
