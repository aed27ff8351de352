//! Building and pruning the tree: subscribe and JOIN forwarding with forwarder creation and the
//! ancestors pass-through (§8.4), LEAVE pruning (§8.5), detaching and re-joining, and the root
//! check of §8.8.

use hearsay_protocols::{Instant, NodeId, TopicId};

use super::tree::{AVOID_MAX, Entry, JoinPending};
use super::{Detach, PATH_MAX, Scribe, ScribeError, ScribeEvent, ScribeMessage, topic_key};
use crate::chord::{RingId, RingNode};

impl Scribe {
    /// A local subscriber for `topic` appeared (§8.4): on a tree already, just become a member;
    /// else create the entry and become root (if responsible) or route a JOIN toward the root.
    pub fn subscribe(&mut self, now: Instant, topic: TopicId) -> Result<(), ScribeError> {
        if let Some(e) = self.topics.get_mut(&topic) {
            e.member = true;
            // Ours now: it no longer counts against the peer that created it.
            if let Some(p) = e.created_by.take() {
                self.release_forwarder(p);
            }
            return Ok(());
        }
        if self.topics.len() >= self.config.max_topics {
            return Err(ScribeError::TooManyTopics(self.topics.len()));
        }
        let mut e = Entry::new(now);
        e.member = true;
        self.topics.insert(topic, e);
        if self.routes.is_responsible(topic_key(topic)) {
            self.become_root(topic);
        } else {
            self.start_join(now, topic);
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

    /// Side input: the ring's successor or predecessor changed (the tick also runs this, as
    /// anything may have): hand over or take the root role where responsibility moved (§8.8),
    /// judged by the routes last handed in.
    pub fn handle_ring_change(&mut self, now: Instant) {
        let topics: Vec<TopicId> = self.topics.keys().copied().collect();
        for topic in topics {
            let responsible = self.routes.is_responsible(topic_key(topic));
            let Some(e) = self.topics.get_mut(&topic) else {
                continue;
            };
            if e.is_root && !responsible {
                e.is_root = false;
                e.root = None;
                self.stats.roots_given_up += 1;
                self.out.event(ScribeEvent::Detached { topic, cause: Detach::RootMoved });
                self.send_heartbeats(topic);
                self.start_join(now, topic);
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
        if let Some(p) = self.topics.remove(&topic).and_then(|e| e.created_by) {
            self.release_forwarder(p);
        }
        if let Some(p) = parent {
            self.send_leave(p, topic);
        }
    }

    /// A forwarder entry `peer`'s JOIN created is gone (or ours now).
    fn release_forwarder(&mut self, peer: NodeId) {
        if let Some(n) = self.forwarders_by.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.forwarders_by.remove(&peer);
            }
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

    /// Lose the parent, keep the children, and re-join at once (or take the root role). The
    /// first JOIN avoids a parent that is presumed dead or below us (a timeout, the membership
    /// layer, a cycle); a parent that said Leave is alive and may take us back.
    pub(super) fn detach(&mut self, now: Instant, topic: TopicId, cause: Detach) {
        let Some(e) = self.topics.get_mut(&topic) else {
            return;
        };
        let lost = e.parent.take().map(|p| p.id).filter(|_| cause != Detach::ParentLeft);
        e.ancestors.clear();
        e.root = None;
        self.out.event(ScribeEvent::Detached { topic, cause });
        if self.routes.is_responsible(topic_key(topic)) {
            self.become_root(topic);
        } else {
            self.send_heartbeats(topic);
            self.join_toward_root(now, topic, vec![self.me.ring], lost.into_iter().collect());
        }
    }

    /// Send this node's own JOIN and arm its first deadline.
    pub(super) fn start_join(&mut self, now: Instant, topic: TopicId) {
        self.join_toward_root(now, topic, vec![self.me.ring], Vec::new());
    }

    /// Send this node's JOIN with `path` (ending with this node: for a new forwarder, the path
    /// of the JOIN that created it, the nodes about to be below it), not to the hops in
    /// `avoid`, and arm the first deadline.
    fn join_toward_root(&mut self, now: Instant, topic: TopicId, path: Vec<RingId>, avoid: Vec<NodeId>) {
        let wait = self.config.join_wait(0);
        if let Some(e) = self.topics.get_mut(&topic) {
            e.join = Some(JoinPending { deadline: now + wait, attempt: 0, avoid, asked: Vec::new() });
            self.send_join(topic, path);
        }
    }

    /// Send the JOIN to the next hop not avoided, and avoid that hop next time.
    fn send_join(&mut self, topic: TopicId, path: Vec<RingId>) {
        let key = topic_key(topic);
        let Some(j) = self.topics.get_mut(&topic).and_then(|e| e.join.as_mut()) else {
            return;
        };
        let mut hop = self.routes.next_hop_avoiding(key, &j.avoid);
        if hop.is_none() || j.avoid.len() >= AVOID_MAX {
            j.avoid.clear();
            hop = self.routes.next_hop(key);
        }
        match hop {
            Some(hop) if hop != self.me.id => {
                j.avoid.push(hop);
                if !j.asked.contains(&hop) {
                    if j.asked.len() >= 2 * AVOID_MAX {
                        j.asked.remove(0);
                    }
                    j.asked.push(hop);
                }
                self.stats.joins_sent += 1;
                self.send(hop, ScribeMessage::Join { topic, child: self.me, path });
            }
            _ => self.stats.not_routable += 1,
        }
    }

    /// A join deadline expired: retry with the wait doubled, avoiding the hops tried (or take
    /// the root role).
    pub(super) fn on_join_deadline(&mut self, now: Instant, topic: TopicId) {
        let wait = |attempt| self.config.join_wait(attempt);
        let Some(e) = self.topics.get_mut(&topic) else {
            return;
        };
        let detached = e.detached();
        let Some(j) = e.join.as_mut().filter(|j| j.deadline <= now) else {
            return;
        };
        if !detached {
            e.join = None;
            return;
        }
        j.attempt = j.attempt.saturating_add(1);
        j.deadline = now + wait(j.attempt);
        if self.routes.is_responsible(topic_key(topic)) {
            self.become_root(topic);
            return;
        }
        self.stats.join_retries += 1;
        self.send_join(topic, vec![self.me.ring]);
    }

    /// A JOIN for `child`, from `from` (§8.4).
    pub(super) fn on_join(
        &mut self,
        now: Instant,
        from: NodeId,
        topic: TopicId,
        child: RingNode,
        mut path: Vec<RingId>,
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
                match self.routes.next_hop(key) {
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
        let created = self.forwarders_by.get(&from).copied().unwrap_or(0);
        if self.topics.len() >= self.config.max_topics || created >= self.config.max_forwarders_per_peer {
            self.stats.over_limit += 1;
            return;
        }
        let mut entry = Entry::new(now);
        entry.created_by = Some(from);
        *self.forwarders_by.entry(from).or_default() += 1;
        self.topics.insert(topic, entry);
        if self.routes.is_responsible(key) {
            self.become_root(topic);
            self.adopt(now, topic, child.id);
        } else {
            self.stats.forwarders_created += 1;
            self.adopt(now, topic, child.id);
            // The path goes on: what is below this new forwarder must not adopt it.
            self.join_toward_root(now, topic, path, Vec::new());
        }
    }

    /// Add `child` (or refresh it) and tell it who its ancestors are.
    pub(super) fn adopt(&mut self, now: Instant, topic: TopicId, child: NodeId) {
        let me = self.me.ring;
        let max = self.config.max_children;
        let full = self.children_total() >= self.config.max_children_total;
        let Some(e) = self.topics.get_mut(&topic) else {
            return;
        };
        if !e.children.contains_key(&child) && (e.children.len() >= max || full) {
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
    pub(super) fn on_leave(&mut self, now: Instant, from: NodeId, topic: TopicId) {
        let Some(e) = self.topics.get_mut(&topic) else {
            self.stats.stale += 1;
            return;
        };
        if e.children.remove(&from).is_some() {
            self.prune(topic);
        } else if e.parent.is_some_and(|p| p.id == from) {
            self.detach(now, topic, Detach::ParentLeft);
        } else {
            self.stats.stale += 1;
        }
    }
}
