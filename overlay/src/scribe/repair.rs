//! Keeping the tree whole (§8.7): heartbeats down, acknowledgements up, parent and child
//! timeouts, cycle detection through the ancestor list, and the membership layer's Dead/Left.

use hearsay_protocols::{Instant, NodeId, TopicId};

use super::{Detach, PATH_MAX, Scribe, ScribeMessage};
use crate::chord::RingId;

impl Scribe {
    /// Side input: the membership layer reports `id` Dead or Left: a parent is lost at once
    /// (re-join), a child is removed (prune), without waiting for the timeouts (§8.7).
    pub fn handle_member_down(&mut self, now: Instant, id: NodeId) {
        let topics: Vec<TopicId> = self.topics.keys().copied().collect();
        for topic in topics {
            let Some(e) = self.topics.get_mut(&topic) else {
                continue;
            };
            if e.children.remove(&id).is_some() {
                self.prune(topic);
            } else if e.parent.is_some_and(|p| p.id == id) {
                self.detach(now, topic, Detach::ParentDown);
            }
        }
    }

    /// The heartbeat tick: root check, then per topic the parent and child timeouts and the
    /// heartbeats to the children.
    pub(super) fn on_tick(&mut self, now: Instant) {
        self.handle_ring_change(now);
        let (parent_timeout, child_timeout) = (self.config.parent_timeout(), self.config.child_timeout());
        let topics: Vec<TopicId> = self.topics.keys().copied().collect();
        for topic in topics {
            let Some(e) = self.topics.get_mut(&topic) else {
                continue;
            };
            if e.parent.is_some() && now - e.parent_heard > parent_timeout {
                self.stats.parent_timeouts += 1;
                self.detach(now, topic, Detach::ParentTimeout);
            }
            let Some(e) = self.topics.get_mut(&topic) else {
                continue;
            };
            let lost: Vec<NodeId> = e
                .children
                .iter()
                .filter(|(_, heard)| now - **heard > child_timeout)
                .map(|(c, _)| *c)
                .collect();
            if !lost.is_empty() {
                for c in &lost {
                    e.children.remove(c);
                }
                self.stats.child_timeouts += lost.len() as u64;
                // A child that is alive after all (its acknowledgements were lost) learns at
                // once that it has no parent.
                for c in lost {
                    self.send_leave(c, topic);
                }
                self.prune(topic);
            }
            self.send_heartbeats(topic);
        }
    }

    /// A heartbeat to every child of `topic`: on the tick, and at once whenever this node's
    /// ancestor list changes, so that a subtree learns its new ancestry in one pass.
    pub(super) fn send_heartbeats(&mut self, topic: TopicId) {
        let Some(e) = self.topics.get(&topic) else {
            return;
        };
        if e.children.is_empty() {
            return;
        }
        let ancestors = e.lineage(self.me.ring);
        let root = if e.detached() { None } else { e.root };
        let children: Vec<NodeId> = e.children.keys().copied().collect();
        for c in children {
            self.stats.heartbeats_sent += 1;
            self.send(c, ScribeMessage::Heartbeat { topic, root, ancestors: ancestors.clone() });
        }
    }

    /// A heartbeat from `from`, which believes it is our parent (§8.7).
    pub(super) fn on_heartbeat(
        &mut self,
        now: Instant,
        from: NodeId,
        topic: TopicId,
        root: Option<RingId>,
        ancestors: Vec<RingId>,
    ) {
        if ancestors.is_empty() || ancestors.len() > PATH_MAX {
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
        let parent = match e.parent {
            Some(p) if p.id == from => p,
            None if !e.is_root => {
                let asked = e.join.as_ref().is_some_and(|j| j.asked.contains(&from));
                if !asked {
                    // Detached, with a JOIN out: the sender still counts us as its child (a
                    // heartbeat that crossed our Leave, or a parent given up on too early).
                    // No Leave: it could arrive after the sender adopted us again through
                    // that JOIN and undo the new link. Unacknowledged, it drops us in time.
                    self.stats.stale += 1;
                    return;
                }
                // A node our JOIN went to adopted us and its JoinAck was lost: the heartbeat
                // carries what the JoinAck did, and passes the same checks.
                if ancestors.last() != Some(&RingId::of(&from)) {
                    self.stats.malformed += 1;
                    return;
                }
                self.on_join_ack(now, from, topic, root, ancestors);
                if self.parent(topic) == Some(from) {
                    self.stats.adopted_by_heartbeat += 1;
                    self.send(from, ScribeMessage::HeartbeatAck { topic });
                }
                return;
            }
            _ => {
                // A stale link on the sender's side.
                self.stats.stale += 1;
                self.send_leave(from, topic);
                return;
            }
        };
        if ancestors.last() != Some(&parent.ring) {
            self.stats.malformed += 1;
            return;
        }
        if ancestors.contains(&me) || ancestors.len() >= max_depth {
            self.stats.cycles += 1;
            self.send_leave(from, topic);
            self.detach(now, topic, Detach::Cycle);
            return;
        }
        let changed = e.ancestors != ancestors || e.root != root;
        e.ancestors = ancestors;
        e.root = root;
        e.parent_heard = now;
        self.send(from, ScribeMessage::HeartbeatAck { topic });
        if changed {
            self.send_heartbeats(topic);
        }
    }

    /// A child acknowledges a heartbeat; a node acknowledging that is not (or no longer) a
    /// child is adopted again (§8.7), and a topic with no tree here is disowned.
    pub(super) fn on_heartbeat_ack(&mut self, now: Instant, from: NodeId, topic: TopicId) {
        let max = self.config.max_children;
        let full = self.children_total() >= self.config.max_children_total;
        let Some(e) = self.topics.get_mut(&topic) else {
            self.stats.stale += 1;
            self.send_leave(from, topic);
            return;
        };
        if let Some(heard) = e.children.get_mut(&from) {
            *heard = now;
        } else if e.parent.is_some_and(|p| p.id == from) {
            self.stats.stale += 1;
        } else if e.children.len() < max && !full {
            e.children.insert(from, now);
            self.stats.adopted += 1;
        } else {
            self.stats.over_limit += 1;
            self.send_leave(from, topic);
        }
    }
}
