//! Multicast down (and up) the tree (§8.6): a publish enters the tree where its publisher is,
//! or is routed toward the root until it meets the tree, then floods along tree edges with the
//! `seen` dedupe; members hand each first copy to pbcast (§8.9).

use hearsay_protocols::pbcast::{Data, SEQ_MAX};
use hearsay_protocols::wire::{self, DATAGRAM_BUDGET};
use hearsay_protocols::{Instant, NodeId};

use super::{Scribe, ScribeError, ScribeEvent, ScribeMessage, TTL_MAX, topic_key};

impl Scribe {
    /// Send `data` (stamped by pbcast at this node) to `data.id.topic`'s members: flood it
    /// from here if this node is on the tree, else route it toward the root (§8.6). This
    /// node's own pbcast already holds it, so no [`ScribeEvent::FirstPhase`] is emitted here.
    pub fn publish(&mut self, now: Instant, data: Data) -> Result<(), ScribeError> {
        if !self.valid_data(&data) {
            return Err(ScribeError::InvalidData(data.id));
        }
        self.stats.published += 1;
        let ttl = self.config.publish_ttl;
        if self.topics.contains_key(&data.id.topic) {
            self.flood(now, data, None, true, ttl);
        } else {
            self.route_publish(data, ttl);
        }
        Ok(())
    }

    /// What a peer may put on a tree: a seq in range and a payload within the limit.
    fn valid_data(&self, data: &Data) -> bool {
        (1..=SEQ_MAX).contains(&data.id.seq) && data.payload.len() <= self.config.max_payload
    }

    /// A message routed toward the root (§8.6).
    pub(super) fn on_publish(&mut self, now: Instant, from: NodeId, data: Data, ttl: u8) {
        if !self.valid_data(&data) || ttl > TTL_MAX {
            self.stats.malformed += 1;
            return;
        }
        if self.topics.contains_key(&data.id.topic) {
            self.flood(now, data, Some(from), false, ttl.saturating_sub(1));
        } else if ttl == 0 {
            self.stats.ttl_expired += 1;
        } else {
            self.route_publish(data, ttl - 1);
        }
    }

    /// A message along a tree edge (§8.6); it also shows that the sender is alive (§8.7).
    pub(super) fn on_tree_data(&mut self, now: Instant, from: NodeId, data: Data) {
        if !self.valid_data(&data) {
            self.stats.malformed += 1;
            return;
        }
        let Some(e) = self.topics.get_mut(&data.id.topic) else {
            self.stats.stale += 1;
            return;
        };
        if e.parent.is_some_and(|p| p.id == from) {
            e.parent_heard = now;
        } else if let Some(heard) = e.children.get_mut(&from) {
            *heard = now;
        } else {
            self.stats.from_stranger += 1;
        }
        let ttl = self.config.publish_ttl;
        self.flood(now, data, Some(from), false, ttl);
    }

    /// tree_flood (§8.6): once per message id, hand it to pbcast at a member, send it to every
    /// tree neighbour but `from`; a detached node also routes it on toward the root.
    fn flood(&mut self, _now: Instant, data: Data, from: Option<NodeId>, local: bool, ttl: u8) {
        let seen_max = self.config.seen_max;
        let Some(e) = self.topics.get_mut(&data.id.topic) else {
            return;
        };
        if !e.seen.insert(data.id, seen_max) {
            self.stats.duplicates += 1;
            return;
        }
        let targets: Vec<NodeId> = e
            .parent
            .map(|p| p.id)
            .into_iter()
            .chain(e.children.keys().copied())
            .filter(|to| Some(*to) != from)
            .collect();
        let detached = e.detached();
        let member = e.member;
        if member && !local {
            self.out.event(ScribeEvent::FirstPhase(data.clone()));
        }
        if !targets.is_empty() {
            let msg = ScribeMessage::TreeData { data: data.clone() };
            let stream = self.config.tree_streams || wire::encoded_len(&msg) > DATAGRAM_BUDGET;
            for to in targets {
                self.stats.tree_data_sent += 1;
                if stream {
                    self.out.stream(to, msg.clone());
                } else {
                    self.out.datagram(to, msg.clone());
                }
            }
        }
        if detached {
            if ttl > 0 {
                self.route_publish(data, ttl);
            } else {
                self.stats.ttl_expired += 1;
            }
        }
    }

    /// Send a `ScribePublish` one hop toward the root, unless this node is the root's place
    /// (no tree here: the message ends, pbcast from its source repairs it).
    fn route_publish(&mut self, data: Data, ttl: u8) {
        let key = topic_key(data.id.topic);
        if self.routes.is_responsible(key) {
            self.stats.no_tree += 1;
            return;
        }
        match self.routes.next_hop(key) {
            Some(hop) if hop != self.me.id => {
                self.stats.publish_routed += 1;
                let msg = ScribeMessage::Publish { data, ttl };
                if self.config.tree_streams || wire::encoded_len(&msg) > DATAGRAM_BUDGET {
                    self.out.stream(hop, msg);
                } else {
                    self.out.datagram(hop, msg);
                }
            }
            _ => self.stats.not_routable += 1,
        }
    }
}
