//! How the Engine's parts learn from one another: member events into the ring, the trees,
//! aggregation and the topic views; what this node advertises; what anti-entropy stores.

use hearsay_overlay::swim::{MemberEvent, Meta, State};
use hearsay_protocols::anti_entropy::Entry;
use hearsay_protocols::pbcast::Data;
use hearsay_protocols::{Instant, NodeId, PeerView, TopicId};

use super::{CATCH_UP_QUEUE, CommandError, Engine, EngineEvent};
use std::collections::BTreeSet;

impl Engine {
    pub(super) fn is_gossip(&self, name: &str) -> bool {
        !self.config.gossip_prefix.is_empty() && name.starts_with(&self.config.gossip_prefix)
    }

    /// Advertise our subscribed topics (and name) in the member table.
    pub(super) fn advertise(&mut self, now: Instant) -> Result<(), CommandError> {
        let topics: Vec<TopicId> =
            self.topics.iter().filter(|(_, s)| s.subscribers > 0).map(|(t, _)| *t).collect();
        let max = hearsay_overlay::swim::META_TOPICS_MAX;
        let meta = Meta::new(topics)
            .ok_or(CommandError::TooManyTopics(max))?
            .with_name(&self.name)
            .with_tags(self.tags.clone());
        self.swim.set_meta(now, meta).map_err(|_| CommandError::Leaving)
    }

    /// The `gossip`-mode topics rumor mongering carries: those subscribed here.
    pub(super) fn rumor_scope(&mut self, now: Instant) {
        let names: Vec<TopicId> = self
            .topics
            .iter()
            .filter(|(_, s)| s.subscribers > 0 && s.name.as_deref().is_some_and(|n| self.is_gossip(n)))
            .map(|(t, _)| *t)
            .collect();
        self.rumor_topics.set_scope(now, Some(names));
    }

    /// Everything this node stores can serve anti-entropy catch-up.
    pub(super) fn keep_for_catch_up(&mut self, now: Instant, data: &Data) {
        let id = data.id;
        if self.anti_entropy.topics().binary_search(&id.topic).is_ok() {
            let entry = Entry {
                stream: id.stream(),
                seq: id.seq,
                payload: data.payload.clone(),
                published_at: data.published_at,
                seal: data.seal,
            };
            self.anti_entropy.insert(now, entry);
        }
    }

    /// Recompute the peer views that depend on topic membership: pbcast's per topic for
    /// `changed` topics we take part in, and the union views of anti-entropy and gossip rumors.
    pub(super) fn refresh_views(&mut self, now: Instant, changed: &[TopicId]) {
        for topic in changed {
            let Some(state) = self.topics.get(topic) else { continue };
            if state.subscribers == 0 && !state.published {
                continue;
            }
            let view: PeerView = self
                .topic_members
                .get(topic)
                .map(|m| m.iter().copied().filter(|n| *n != self.id).collect())
                .unwrap_or_default();
            self.multicast.handle_topic_peers(now, *topic, view);
        }
        let mine: Vec<TopicId> =
            self.topics.iter().filter(|(_, s)| s.subscribers > 0 || s.published).map(|(t, _)| *t).collect();
        let mut union = BTreeSet::new();
        let mut gossip_union = BTreeSet::new();
        for t in &mine {
            if let Some(m) = self.topic_members.get(t) {
                union.extend(m.iter().copied());
                if self.topics.get(t).and_then(|s| s.name.as_deref()).is_some_and(|n| self.is_gossip(n)) {
                    gossip_union.extend(m.iter().copied());
                }
            }
        }
        union.remove(&self.id);
        gossip_union.remove(&self.id);
        self.anti_entropy.handle_peers(now, union.into_iter().collect());
        self.rumor_topics.handle_peers(now, gossip_union.into_iter().collect());
    }

    /// Queue catch-up exchanges with the members of `topic` this node knows now (a topic just
    /// subscribed from all, or resumed after a restart); later members are queued as they
    /// appear (`on_member`).
    pub(super) fn queue_catch_up_for(&mut self, topic: TopicId) {
        let members: Vec<NodeId> = self
            .topic_members
            .get(&topic)
            .map(|m| m.iter().copied().filter(|n| *n != self.id).collect())
            .unwrap_or_default();
        for m in members {
            self.queue_catch_up_with(m, &[topic]);
        }
    }

    /// Queue a catch-up exchange with `member` if it advertises a topic that still wants one.
    fn queue_catch_up_with(&mut self, member: NodeId, topics: &[TopicId]) {
        if self.catch_up.len() >= CATCH_UP_QUEUE || self.catch_up.contains(&member) {
            return;
        }
        let wanted: Vec<TopicId> = topics
            .iter()
            .copied()
            .filter(|t| self.catch_up_topics.get(t).is_some_and(|left| *left > 0))
            .collect();
        if wanted.is_empty() {
            return;
        }
        for t in wanted {
            if let Some(left) = self.catch_up_topics.get_mut(&t) {
                *left -= 1;
            }
        }
        self.catch_up_topics.retain(|_, left| *left > 0);
        self.catch_up.push_back(member);
    }

    /// A member changed state: the ring and the trees, aggregation, catch-up, the topic views.
    pub(super) fn on_member(&mut self, now: Instant, ev: MemberEvent) {
        let live = ev.state.is_live();
        if ev.node != self.id {
            if live {
                self.multicast.handle_member_up(now, ev.node);
            } else {
                self.multicast.handle_member_down(now, ev.node);
                self.aggregation.handle_member_down(now, ev.node);
            }
        }
        let new_topics: Vec<TopicId> = if live { ev.profile.meta().topics().to_vec() } else { Vec::new() };
        if ev.node != self.id {
            if ev.state == State::Alive {
                let shares_a_topic = new_topics
                    .iter()
                    .any(|t| self.topics.get(t).is_some_and(|s| s.subscribers > 0 || s.published));
                let recovered = self.unreachable.remove(&ev.node) && shares_a_topic;
                if recovered && self.catch_up.len() < CATCH_UP_QUEUE && !self.catch_up.contains(&ev.node) {
                    self.catch_up.push_back(ev.node);
                } else if !self.catch_up_topics.is_empty() {
                    self.queue_catch_up_with(ev.node, &new_topics);
                }
            } else {
                self.unreachable.insert(ev.node);
            }
        }
        let before = self.advertised.remove(&ev.node);
        // The set of live peers changed only if this member became live or stopped being
        // live as the last view saw it (its meta alone changing does not). Aggregation and
        // query rumors hold the same view; aggregation's is the one asked.
        let live_set_changed = ev.node != self.id && self.aggregation.peers().contains(&ev.node) != live;
        self.notice_member(now, &ev, before.as_ref());
        let old_topics: Vec<TopicId> = before.map(|(_, p)| p.meta().topics().to_vec()).unwrap_or_default();
        let mut changed: Vec<TopicId> = old_topics.iter().chain(new_topics.iter()).copied().collect();
        changed.sort_unstable();
        changed.dedup();
        for t in &old_topics {
            if let Some(set) = self.topic_members.get_mut(t) {
                set.remove(&ev.node);
                if set.is_empty() {
                    self.topic_members.remove(t);
                }
            }
        }
        for t in &new_topics {
            self.topic_members.entry(*t).or_default().insert(ev.node);
        }
        if live {
            self.advertised.insert(ev.node, (ev.state, ev.profile.clone()));
        }
        if old_topics != new_topics || !live {
            self.refresh_views(now, &changed);
        }
        // Rebuilding the whole-cluster view is O(N): only when the live set changed (a meta
        // change rebuilt it for every subscription of every member: O(N²) per node, most of
        // the simulator's time at N = 4,000). The view rebuilt here is the table's now, so
        // skipping an unchanged one gives the machines the same view as before.
        if live_set_changed {
            let everyone = self.swim.peers();
            self.aggregation.handle_peers(now, everyone.clone());
            self.rumor_queries.handle_peers(now, everyone);
        }
        self.events.push_back(EngineEvent::Member {
            node: ev.node,
            state: ev.state,
            incarnation: ev.incarnation,
        });
    }
}
