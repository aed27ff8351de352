//! Building and pruning the tree: subscribe and JOIN forwarding with forwarder creation and the
//! ancestors pass-through (§8.4), LEAVE pruning (§8.5), detaching and re-joining, and the root
//! check of §8.8.

use hearsay_protocols::{Instant, NodeId, TopicId};

use super::tree::{Entry, JoinPending};
use super::{Detach, PATH_MAX, Routing, Scribe, ScribeError, ScribeEvent, ScribeMessage, topic_key};
use crate::chord::{RingId, RingNode};

impl Scribe {
    /// A local subscriber for `topic` appeared (§8.4): on a tree already, just become a member;
    /// else create the entry and become root (if responsible) or route a JOIN toward the root.
    pub fn subscribe<R: Routing + ?Sized>(
        &mut self,
        now: Instant,
        topic: TopicId,
        ring: &R,
    ) -> Result<(), ScribeError> {
        if let Some(e) = self.topics.get_mut(&topic) {
            e.member = true;
            return Ok(());
        }
        if self.topics.len() >= self.config.max_topics {
            return Err(ScribeError::TooManyTopics(self.topics.len()));
        }
        let mut e = Entry::new(now);
        e.member = true;
        self.topics.insert(topic, e);
        if ring.is_responsible(topic_key(topic)) {
            self.become_root(topic);
        } else {
            self.start_join(now, topic, ring);
        }
        Ok(())
    }

    /// The last local subscriber for `topic` is gone (§8.5): stop being a member and prune.
    pub fn unsubscribe(&mut self, _now: Instant, topic: TopicId) {
        if let Some(e) = self.topics.get_mut(&topic) {
            e.member = false;
            self.prune(topic);
        }
    }

    /// The ring's successor or predecessor changed (or, periodically, anything may have): hand
    /// over or take the root role where responsibility moved (§8.8).
    pub fn ring_changed<R: Routing + ?Sized>(&mut self, now: Instant, ring: &R) {
        let topics: Vec<TopicId> = self.topics.keys().copied().collect();
        for topic in topics {
            let responsible = ring.is_responsible(topic_key(topic));
            let Some(e) = self.topics.get_mut(&topic) else {
                continue;
            };
            if e.is_root && !responsible {
                e.is_root = false;
                e.root = None;
                self.stats.roots_given_up += 1;
                self.out.event(ScribeEvent::Detached { topic, cause: Detach::RootMoved });
                self.send_heartbeats(topic);
                self.start_join(now, topic, ring);
            } else if !e.is_root && responsible {
                self.become_root(topic);
            }
        }
    }

    /// Delete the entry if nothing keeps it: no local subscriber and no child (§8.5).
    pub(super) fn prune(&mut self, topic: TopicId) {
        let Some(e) = self.topics.get(&topic) else {
            return;
        };
        if e.member || !e.children.is_empty() {
            return;
        }
        let parent = if e.is_root { None } else { e.parent.map(|p| p.id) };
        self.topics.remove(&topic);
        if let Some(p) = parent {
            self.send_leave(p, topic);
        }
    }

    /// Take the root role: no parent (told to go), no ancestors, no JOIN outstanding.
    pub(super) fn become_root(&mut self, topic: TopicId) {
        let me = self.me.ring;
        let Some(e) = self.topics.get_mut(&topic) else {
            return;
        };
        let old = e.parent.take();
        e.is_root = true;
        e.ancestors.clear();
        e.root = Some(me);
        e.join = None;
        self.stats.roots_taken += 1;
        self.out.event(ScribeEvent::BecameRoot { topic });
        if let Some(p) = old {
            self.send_leave(p.id, topic);
        }
        self.send_heartbeats(topic);
    }

    /// Lose the parent, keep the children, and re-join at once (or take the root role).
    pub(super) fn detach<R: Routing + ?Sized>(
        &mut self,
        now: Instant,
        topic: TopicId,
        cause: Detach,
        ring: &R,
    ) {
        let Some(e) = self.topics.get_mut(&topic) else {
            return;
        };
        e.parent = None;
        e.ancestors.clear();
        e.root = None;
        self.out.event(ScribeEvent::Detached { topic, cause });
        if ring.is_responsible(topic_key(topic)) {
            self.become_root(topic);
        } else {
            self.send_heartbeats(topic);
            self.start_join(now, topic, ring);
        }
    }

    /// Send this node's own JOIN and arm its first deadline.
    pub(super) fn start_join<R: Routing + ?Sized>(&mut self, now: Instant, topic: TopicId, ring: &R) {
        self.start_join_below(now, topic, vec![self.me.ring], ring);
    }

    /// [`Scribe::start_join`] with the path of the JOIN that made this node a forwarder
    /// (ending with this node): the nodes that are about to be below it.
    fn start_join_below<R: Routing + ?Sized>(
        &mut self,
        now: Instant,
        topic: TopicId,
        path: Vec<RingId>,
        ring: &R,
    ) {
        let wait = self.config.join_wait(0);
        if let Some(e) = self.topics.get_mut(&topic) {
            e.join = Some(JoinPending { deadline: now + wait, attempt: 0 });
            self.send_join(topic, path, ring);
        }
    }

    fn send_join<R: Routing + ?Sized>(&mut self, topic: TopicId, path: Vec<RingId>, ring: &R) {
        match ring.next_hop(topic_key(topic)) {
            Some(hop) if hop != self.me.id => {
                self.stats.joins_sent += 1;
                self.send(hop, ScribeMessage::Join { topic, child: self.me, path });
            }
            _ => self.stats.not_routable += 1,
        }
    }

    /// A join deadline expired: retry with the wait doubled (or take the root role).
    pub(super) fn on_join_deadline<R: Routing + ?Sized>(&mut self, now: Instant, topic: TopicId, ring: &R) {
        let Some(e) = self.topics.get_mut(&topic) else {
            return;
        };
        let Some(j) = e.join.filter(|j| j.deadline <= now) else {
            return;
        };
        if !e.detached() {
            e.join = None;
            return;
        }
        if ring.is_responsible(topic_key(topic)) {
            self.become_root(topic);
            return;
        }
        let attempt = j.attempt.saturating_add(1);
        e.join = Some(JoinPending { deadline: now + self.config.join_wait(attempt), attempt });
        self.stats.join_retries += 1;
        self.send_join(topic, vec![self.me.ring], ring);
    }

    /// A JOIN for `child` (§8.4).
    pub(super) fn on_join<R: Routing + ?Sized>(
        &mut self,
        now: Instant,
        topic: TopicId,
        child: RingNode,
        mut path: Vec<RingId>,
        ring: &R,
    ) {
        if path.len() > PATH_MAX || child.ring != RingId::of(&child.id) || !path.contains(&child.ring) {
            self.stats.malformed += 1;
            return;
        }
        if child.id == self.me.id || path.contains(&self.me.ring) || path.len() == PATH_MAX {
            self.stats.routing_loops += 1;
            return;
        }
        path.push(self.me.ring);
        let key = topic_key(topic);
        if let Some(e) = self.topics.get(&topic) {
            // Every node on the path is (or is about to be) below the joiner: the joiner's own
            // chain of new forwarders, and nodes of its subtree that passed the JOIN on.
            let upstream = e.parent.is_some_and(|p| path.contains(&p.ring))
                || e.ancestors.iter().any(|a| path.contains(a));
            if upstream {
                // This node is in the joiner's subtree: adopting it would close a cycle.
                self.stats.joins_passed += 1;
                match ring.next_hop(key) {
                    Some(hop) if hop != self.me.id => {
                        self.send(hop, ScribeMessage::Join { topic, child, path })
                    }
                    _ => self.stats.not_routable += 1,
                }
                return;
            }
            self.adopt(now, topic, child.id);
            return;
        }
        if self.topics.len() >= self.config.max_topics {
            self.stats.over_limit += 1;
            return;
        }
        self.topics.insert(topic, Entry::new(now));
        if ring.is_responsible(key) {
            self.become_root(topic);
            self.adopt(now, topic, child.id);
        } else {
            self.stats.forwarders_created += 1;
            self.adopt(now, topic, child.id);
            // The path goes on: what is below this new forwarder must not adopt it.
            self.start_join_below(now, topic, path, ring);
        }
    }

    /// Add `child` (or refresh it) and tell it who its ancestors are.
    pub(super) fn adopt(&mut self, now: Instant, topic: TopicId, child: NodeId) {
        let me = self.me.ring;
        let max = self.config.max_children;
        let Some(e) = self.topics.get_mut(&topic) else {
            return;
        };
        if !e.children.contains_key(&child) && e.children.len() >= max {
            self.stats.over_limit += 1;
            if e.children.is_empty() {
                self.prune(topic);
            }
            return;
        }
        e.children.insert(child, now);
        let ancestors = e.lineage(me);
        let root = if e.detached() { None } else { e.root };
        self.stats.adopted += 1;
        self.send(child, ScribeMessage::JoinAck { topic, root, ancestors });
    }

    /// "You are my child": take `from` as parent unless that is wrong (§8.4).
    pub(super) fn on_join_ack(
        &mut self,
        now: Instant,
        from: NodeId,
        topic: TopicId,
        root: Option<RingId>,
        ancestors: Vec<RingId>,
    ) {
        let Some(&last) = ancestors.last() else {
            self.stats.malformed += 1;
            return;
        };
        if ancestors.len() > PATH_MAX || last != RingId::of(&from) {
            self.stats.malformed += 1;
            return;
        }
        let me = self.me.ring;
        let max_depth = self.config.max_depth;
        let Some(e) = self.topics.get_mut(&topic) else {
            self.stats.stale += 1;
            self.send_leave(from, topic);
            return;
        };
        let refuse = e.is_root
            || e.parent.is_some_and(|p| p.id != from)
            || e.children.contains_key(&from)
            || ancestors.contains(&me)
            || ancestors.len() >= max_depth;
        if refuse {
            self.stats.acks_refused += 1;
            self.send_leave(from, topic);
            return;
        }
        let fresh = e.parent.is_none();
        let changed = e.ancestors != ancestors || e.root != root;
        e.parent = Some(RingNode { id: from, ring: last });
        e.ancestors = ancestors;
        e.root = root;
        e.parent_heard = now;
        e.join = None;
        if fresh {
            self.out.event(ScribeEvent::Attached { topic, parent: from });
        }
        if changed {
            self.send_heartbeats(topic);
        }
    }

    /// "I am not your neighbour": a child leaves (prune), or the parent disowns us (re-join).
    pub(super) fn on_leave<R: Routing + ?Sized>(
        &mut self,
        now: Instant,
        from: NodeId,
        topic: TopicId,
        ring: &R,
    ) {
        let Some(e) = self.topics.get_mut(&topic) else {
            self.stats.stale += 1;
            return;
        };
        if e.children.remove(&from).is_some() {
            self.prune(topic);
        } else if e.parent.is_some_and(|p| p.id == from) {
            self.detach(now, topic, Detach::ParentLeft, ring);
        } else {
            self.stats.stale += 1;
        }
    }
}
