//! What the local application (through the agent) asks of the Engine: join, leave, subscribe,
//! publish, values and queries. Each command takes `now` and pumps before it returns.

use bytes::Bytes;
use hearsay_protocols::aggregate::{Func, QueryError, QueryId, QuerySpec, ValueError};
use hearsay_protocols::pbcast::{MsgId, Start};
use hearsay_protocols::rumor::RumorId;
use hearsay_protocols::tags::{TagError, TagScope, Tags};
use hearsay_protocols::{Instant, NodeId, TopicId};

use super::multicast::MulticastError;
use super::{Engine, EngineEvent, Persist, Restored, SubscribeFrom};

/// Why a local command was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The publish was refused (payload over the limit).
    #[error(transparent)]
    Publish(#[from] MulticastError),
    /// The value or attribute is not acceptable.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// The query could not start.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// More topics than a member can advertise.
    #[error("at most {0} topics can be subscribed at once")]
    TooManyTopics(usize),
    /// The node is leaving.
    #[error("the node is leaving the cluster")]
    Leaving,
    /// The tags are beyond their bounds (the message says which and the limit).
    #[error(transparent)]
    Tags(#[from] TagError),
}

impl Engine {
    /// Join the cluster through these members (already reachable: the runtime resolved their
    /// addresses to NodeIds by connecting).
    pub fn join(&mut self, now: Instant, seeds: &[NodeId]) -> Result<(), CommandError> {
        self.swim.join(now, seeds.iter().copied()).map_err(|_| CommandError::Leaving)?;
        self.pump(now);
        Ok(())
    }

    /// Leave gracefully: announce it; [`EngineEvent::LeaveDone`]
    /// follows.
    pub fn leave(&mut self, now: Instant) {
        self.swim.leave(now);
        let _ = self.multicast.leave(now);
        self.pump(now);
    }

    /// Add a local subscription to `name`. `from` matters only for the topic's first local
    /// subscription: it says where the node's streams of the topic start.
    pub fn subscribe(
        &mut self,
        now: Instant,
        name: &str,
        from: SubscribeFrom,
    ) -> Result<TopicId, CommandError> {
        let topic = TopicId::of(name);
        let gossip = self.is_gossip(name);
        let state = self.topics.entry(topic).or_default();
        state.name.get_or_insert_with(|| name.to_string());
        state.subscribers += 1;
        if state.subscribers == 1 {
            if let Err(e) = self.advertise(now) {
                if let Some(s) = self.topics.get_mut(&topic) {
                    s.subscribers -= 1;
                }
                return Err(e);
            }
            // The topic's members first: pbcast asks one of them for the heads as it
            // subscribes, and with no member in view it would start every stream at seq 1
            // and hold new messages back until the whole history had been fetched.
            self.refresh_views(now, &[topic]);
            // pbcast first (its heads request), then anti-entropy, then the first phase.
            let (heads, kept) = self.restored.remove(&topic).unwrap_or_default();
            let start = match from {
                SubscribeFrom::New => Start::Heads,
                SubscribeFrom::All => Start::FromFirst,
                SubscribeFrom::Resume => Start::After(heads),
            };
            self.multicast.subscribe(now, topic, start, !gossip);
            self.anti_entropy.subscribe(now, topic);
            // This node's own kept messages serve catch-up too, whichever way it subscribes.
            for data in self.restored_own.remove(&topic).unwrap_or_default() {
                self.keep_for_catch_up(now, &data);
            }
            if from != SubscribeFrom::New {
                // What this node kept serves repairs again; history it lacks is fetched.
                for data in &kept {
                    self.keep_for_catch_up(now, data);
                }
                self.multicast.handle_restored(now, topic, 0, kept);
                self.catch_up_topics.insert(topic, super::CATCH_UP_EXCHANGES);
                self.queue_catch_up_for(topic);
            }
            if gossip {
                self.rumor_scope(now);
            }
            self.refresh_views(now, &[topic]);
        }
        self.pump(now);
        Ok(topic)
    }

    /// Drop one local subscription to `name`; the last one leaves the topic.
    pub fn unsubscribe(&mut self, now: Instant, name: &str) {
        let topic = TopicId::of(name);
        let Some(state) = self.topics.get_mut(&topic) else { return };
        if state.subscribers == 0 {
            return;
        }
        state.subscribers -= 1;
        if state.subscribers == 0 {
            let gossip = self.is_gossip(name);
            self.multicast.unsubscribe(now, topic, !gossip);
            self.anti_entropy.unsubscribe(now, topic);
            if gossip {
                self.rumor_scope(now);
            }
            let _ = self.advertise(now);
            self.refresh_views(now, &[topic]);
        }
        self.pump(now);
    }

    /// Publish `payload` on topic `name`; returns the message id.
    pub fn publish(&mut self, now: Instant, name: &str, payload: Bytes) -> Result<MsgId, CommandError> {
        let topic = TopicId::of(name);
        let gossip = self.is_gossip(name);
        let state = self.topics.entry(topic).or_default();
        state.name.get_or_insert_with(|| name.to_string());
        let first_publish = !state.published;
        state.published = true;
        if first_publish {
            self.refresh_views(now, &[topic]);
        }
        let data = self.multicast.publish(now, topic, payload)?;
        self.events.push_back(EngineEvent::Persist(Persist::Message { data: data.clone(), own: true }));
        self.keep_for_catch_up(now, &data);
        let id = data.id;
        if gossip {
            let rumor = RumorId::Message { stream: id.stream(), seq: id.seq };
            let sealed = super::SealedPayload {
                published_at: data.published_at.as_micros(),
                seal: data.seal,
                payload: data.payload,
            };
            let bytes = postcard::to_allocvec(&sealed).unwrap_or_default();
            self.rumor_topics.inject(now, rumor, Bytes::from(bytes));
        } else {
            self.multicast.send_down_tree(now, data);
        }
        self.pump(now);
        Ok(id)
    }

    /// What the host's store kept before a restart: call once, right after [`Engine::new`] and
    /// before anything else (see the module `engine/persist.rs`). This node's streams continue
    /// after their last seq, its own recent messages are held and advertised again, and
    /// others' wait for their topic to be subscribed with [`SubscribeFrom::Resume`].
    pub fn restore(&mut self, now: Instant, restored: Restored) {
        let Restored { counters, heads, messages } = restored;
        let mut own: std::collections::BTreeMap<TopicId, Vec<hearsay_protocols::pbcast::Data>> =
            std::collections::BTreeMap::new();
        for data in messages {
            if data.id.origin == self.origin {
                own.entry(data.id.topic).or_default().push(data);
            } else {
                self.restored.entry(data.id.topic).or_default().1.push(data);
            }
        }
        for (topic, origin, seq) in heads {
            if origin != self.origin {
                self.restored.entry(topic).or_default().0.push((origin, seq));
            }
        }
        let mut published = Vec::new();
        for (topic, last) in counters {
            let entries = own.remove(&topic).unwrap_or_default();
            if !entries.is_empty() {
                self.restored_own.insert(topic, entries.clone());
            }
            self.multicast.handle_restored(now, topic, last, entries);
            self.topics.entry(topic).or_default().published = true;
            published.push(topic);
        }
        self.refresh_views(now, &published);
        self.pump(now);
    }

    /// Start this node's SWIM incarnation at `n` at least: a restarted node passes one more
    /// than the last incarnation its previous life announced (see [`Engine::incarnation`]),
    /// so its announcements outrank that life's at once. Call it before joining.
    pub fn raise_incarnation(&mut self, n: u64) {
        self.swim.raise_incarnation(n);
    }

    /// This node's SWIM incarnation (what a host keeps for [`Engine::raise_incarnation`]).
    pub fn incarnation(&self) -> u64 {
        self.swim.incarnation()
    }

    /// Set this node's value of `attr` for aggregation queries.
    pub fn set_value(&mut self, now: Instant, attr: &str, value: f64) -> Result<(), CommandError> {
        Ok(self.aggregation.set_value(now, attr, value)?)
    }

    /// Start a query; [`EngineEvent::Answered`] reports the result.
    pub fn query(&mut self, now: Instant, func: Func, attr: &str) -> Result<QueryId, CommandError> {
        self.query_scoped(now, func, attr, TagScope::default())
    }

    /// Start a query over the members whose tags match `scope` only (each node decides from
    /// its own tags whether its value counts); [`EngineEvent::Answered`] reports the result.
    pub fn query_scoped(
        &mut self,
        now: Instant,
        func: Func,
        attr: &str,
        scope: TagScope,
    ) -> Result<QueryId, CommandError> {
        let spec = QuerySpec { scope, ..QuerySpec::new(func, attr) };
        let q = self.aggregation.start_query(now, spec)?;
        self.my_queries.insert(q.qid);
        self.pump(now);
        Ok(q.qid)
    }

    /// The tags this node advertises.
    pub fn tags(&self) -> &Tags {
        &self.tags
    }

    /// Advertise `tags` from now on (replacing the current ones): the member meta is re-signed
    /// with a raised incarnation and gossiped, aggregation scopes see them, and the event
    /// stream reports the update.
    pub fn set_tags(&mut self, now: Instant, tags: Tags) -> Result<(), CommandError> {
        let before = std::mem::replace(&mut self.tags, tags);
        if let Err(e) = self.advertise(now) {
            self.tags = before;
            return Err(e);
        }
        self.aggregation.set_tags(now, self.tags.clone());
        self.notice_self_update(now);
        self.pump(now);
        Ok(())
    }
}
