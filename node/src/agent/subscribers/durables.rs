//! Durable subscriptions: creating, connecting to, acknowledging, listing and deleting them,
//! and the cursors of streams that appear later (see the parent module).

use std::collections::BTreeMap;

use hearsay_protocols::{NodeId, Seq, TopicId};
use tokio::sync::mpsc;

use super::{DurableState, Subscribers};
use crate::agent::command::{DurableError, DurableName, StartAt, SubscribeOptions, rfc3339};
use crate::api::types::{Cursor, DurableInfo, StreamItem, hex};
use crate::message::TopicName;
use crate::store::{Durable, Write};

impl Subscribers {
    /// Called as the Engine is subscribed to `topic` for a new subscription: if nothing here
    /// held it before, the Engine starts its streams anew (at the topic's current heads, or
    /// from the first seq), not where this node's stored copy of them ended, so what is known
    /// of the topic's heads is forgotten: each stream's next delivery is its first appearance.
    pub(super) fn fresh(&mut self, topic: TopicId) {
        let held = self.subs.values().any(|s| s.topic == topic && s.durable.is_none())
            || self.durables.values().any(|d| d.topic_id == topic);
        if !held {
            self.heads.remove(&topic);
        }
    }

    /// Whether durable subscription `name` exists (`true`) or would be created (`false`) for
    /// `topic`; an error if it follows another topic, has a client, or cannot be had here. A
    /// client whose connection is gone is let go first.
    pub(in crate::agent) fn check_durable(
        &mut self,
        name: &DurableName,
        topic: &TopicName,
    ) -> Result<bool, DurableError> {
        if self.store.is_none() {
            return Err(DurableError::NoStore);
        }
        let Some(state) = self.durables.get(name) else { return Ok(false) };
        if state.topic != *topic {
            return Err(DurableError::OtherTopic {
                name: name.clone(),
                topic: state.topic.clone(),
                asked: topic.clone(),
            });
        }
        if let Some(id) = state.client {
            let gone = self.subs.get(&id).is_none_or(|s| s.sink.is_closed());
            if !gone {
                return Err(DurableError::InUse(name.clone()));
            }
            self.remove(id);
        }
        Ok(true)
    }

    /// Create durable subscription `name` on `topic` (the actor has anchored the topic in
    /// the Engine), its cursors starting per `from`: at the topic's current heads (`new`), or
    /// before everything this node holds (`all`, a time).
    pub(in crate::agent) fn create_durable(
        &mut self,
        name: DurableName,
        topic: TopicName,
        from: StartAt,
    ) -> Result<(), DurableError> {
        let topic_id = TopicId::of(topic.as_str());
        self.fresh(topic_id);
        let store = self.store.as_ref().ok_or(DurableError::NoStore)?;
        let known = self.heads.get(&topic_id).cloned().unwrap_or_default();
        let cursors: Vec<(NodeId, Seq)> = match from {
            StartAt::New => known.into_iter().collect(),
            StartAt::All | StartAt::Time(_) => known.into_keys().map(|o| (o, 0)).collect(),
        };
        let durable = Durable { topic: topic.to_string(), cursors, since: from.since() };
        store.submit(Write::Durable { name: name.to_string(), durable: durable.clone() })?;
        tracing::info!(durable = %name, %topic, ?from, "durable subscription created");
        self.durables.insert(name, DurableState { topic, topic_id, durable, client: None });
        Ok(())
    }

    /// Connect a client to durable subscription `name` (checked with
    /// [`Subscribers::check_durable`]): a replay of everything after its cursors, then live.
    pub(in crate::agent) fn connect(
        &mut self,
        name: &DurableName,
        options: &SubscribeOptions,
        sink: mpsc::Sender<StreamItem>,
    ) -> Result<(), DurableError> {
        let state = self.durables.get(name).ok_or_else(|| DurableError::Unknown(name.clone()))?;
        let (topic, topic_name, since) = (state.topic_id, state.topic.clone(), state.durable.since);
        let cursors: BTreeMap<NodeId, Seq> = state.durable.cursors.iter().copied().collect();
        let id = self.insert(topic, topic_name, options, since, sink, Some(name.clone()));
        if let Some(sub) = self.subs.get_mut(&id) {
            sub.sent = cursors;
        }
        if let Some(state) = self.durables.get_mut(name) {
            state.client = Some(id);
        }
        self.start_replay(id);
        Ok(())
    }

    /// Advance durable subscription `name`'s cursors (never backwards) and queue the write.
    pub(in crate::agent) fn ack(
        &mut self,
        name: &DurableName,
        acks: Vec<(NodeId, Seq)>,
    ) -> Result<(), DurableError> {
        let state = self.durables.get_mut(name).ok_or_else(|| DurableError::Unknown(name.clone()))?;
        let store = self.store.as_ref().ok_or(DurableError::NoStore)?;
        store.submit(Write::Ack { name: name.to_string(), acks: acks.clone() })?;
        for (origin, seq) in acks {
            state.durable.advance(origin, seq);
        }
        Ok(())
    }

    /// Forget durable subscription `name`, closing its client. Returns its topic: the actor
    /// drops the anchor.
    pub(in crate::agent) fn delete_durable(&mut self, name: &DurableName) -> Result<TopicName, DurableError> {
        if !self.durables.contains_key(name) {
            return Err(DurableError::Unknown(name.clone()));
        }
        let store = self.store.as_ref().ok_or(DurableError::NoStore)?;
        store.submit(Write::DeleteDurable { name: name.to_string() })?;
        let state = self.durables.remove(name).ok_or_else(|| DurableError::Unknown(name.clone()))?;
        if let Some(id) = state.client {
            self.end(id, "the durable subscription was deleted");
        }
        tracing::info!(durable = %name, topic = %state.topic, "durable subscription deleted");
        Ok(state.topic)
    }

    /// The durable subscriptions, by name.
    pub(in crate::agent) fn durables(&self) -> Vec<DurableInfo> {
        self.durables
            .iter()
            .map(|(name, s)| DurableInfo {
                name: name.to_string(),
                topic: s.topic.to_string(),
                connected: s.client.is_some(),
                since: s.durable.since.map(rfc3339),
                cursors: s
                    .durable
                    .cursors
                    .iter()
                    .map(|(o, seq)| Cursor { origin: hex(o), seq: *seq })
                    .collect(),
            })
            .collect()
    }

    /// This node delivered or announced `first..=last` of `origin` on `topic`: its heads move,
    /// and an origin seen for the first time gets cursors in the topic's durable
    /// subscriptions that lack one (module docs).
    pub(super) fn seen(&mut self, topic: TopicId, origin: NodeId, first: Seq, last: Seq) {
        let known = self.heads.entry(topic).or_default();
        let new_origin = !known.contains_key(&origin);
        let head = known.entry(origin).or_insert(0);
        *head = (*head).max(last);
        if !new_origin {
            return;
        }
        for (name, state) in self.durables.iter_mut().filter(|(_, s)| s.topic_id == topic) {
            if state.durable.cursors.iter().any(|(o, _)| *o == origin) {
                continue;
            }
            // One that wants everything retained (`all`, a time) starts before seq 1.
            let start = if state.durable.since.is_some() { 0 } else { first.saturating_sub(1) };
            state.durable.advance(origin, start);
            if let Some(store) = &self.store {
                if let Err(e) =
                    store.submit(Write::Ack { name: name.to_string(), acks: vec![(origin, start)] })
                {
                    tracing::warn!(durable = %name, "cursor of a new stream not kept: {e}");
                }
            }
        }
    }
}
