//! One topic's tree state at one node (PROTOCOLS.md §8.2) and the bounded set of message ids
//! the flood has forwarded.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use hearsay_protocols::pbcast::MsgId;
use hearsay_protocols::{Instant, NodeId, TopicId};

use super::{Role, TreeView};
use crate::chord::{RingId, RingNode};

/// Hops a JOIN retry avoids before starting over.
pub(super) const AVOID_MAX: usize = 4;

/// An outstanding JOIN: when to retry, how many retries came before, the hops the next
/// attempt avoids (tried, or a lost parent), and the hops its attempts went to (any of which
/// may have adopted this node and lost the JoinAck).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct JoinPending {
    pub(super) deadline: Instant,
    pub(super) attempt: u32,
    pub(super) avoid: Vec<NodeId>,
    pub(super) asked: Vec<NodeId>,
}

/// The last `max` message ids forwarded on a topic; the oldest is forgotten first.
#[derive(Debug, Default)]
pub(super) struct Seen {
    order: VecDeque<MsgId>,
    set: BTreeSet<MsgId>,
}

impl Seen {
    /// Ids remembered.
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// Remember `id`; false if it was already remembered.
    pub(super) fn insert(&mut self, id: MsgId, max: usize) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        while self.order.len() > max {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// One topic's entry (§8.2). It exists while the node is a member, has children, or is a root
/// with children; `prune` deletes it otherwise.
#[derive(Debug)]
pub(super) struct Entry {
    /// Local subscribers exist.
    pub(super) member: bool,
    /// This node is responsible for the topic and holds the tree's top.
    pub(super) is_root: bool,
    /// The parent; `None` for the root and while detached.
    pub(super) parent: Option<RingNode>,
    /// When the parent was last heard (heartbeat, tree data, JoinAck).
    pub(super) parent_heard: Instant,
    /// Children and when each last acknowledged or sent data.
    pub(super) children: BTreeMap<NodeId, Instant>,
    /// Root first, up to and excluding this node; empty for the root and while detached.
    pub(super) ancestors: Vec<RingId>,
    /// The root as last told (this node's own RingId at the root).
    pub(super) root: Option<RingId>,
    /// An outstanding JOIN.
    pub(super) join: Option<JoinPending>,
    /// Message ids forwarded.
    pub(super) seen: Seen,
    /// The peer whose JOIN created this entry as a forwarder (counted against its
    /// `max_forwarders_per_peer`); `None` once a local subscriber holds it, or if it was ours.
    pub(super) created_by: Option<NodeId>,
}

impl Entry {
    pub(super) fn new(now: Instant) -> Self {
        Entry {
            member: false,
            is_root: false,
            parent: None,
            parent_heard: now,
            children: BTreeMap::new(),
            ancestors: Vec::new(),
            root: None,
            join: None,
            seen: Seen::default(),
            created_by: None,
        }
    }

    /// Bytes this entry accounts for: 256 fixed, 48 a child, 8 an ancestor, 112 a seen id.
    pub(super) fn bytes(&self) -> usize {
        256 + self.children.len() * 48 + self.ancestors.len() * 8 + self.seen.len() * 112
    }

    /// Neither root nor with a parent.
    pub(super) fn detached(&self) -> bool {
        !self.is_root && self.parent.is_none()
    }

    /// The ancestor list this node hands its children: its own followed by itself.
    pub(super) fn lineage(&self, me: RingId) -> Vec<RingId> {
        let mut a = Vec::with_capacity(self.ancestors.len() + 1);
        a.extend_from_slice(&self.ancestors);
        a.push(me);
        a
    }

    pub(super) fn view(&self, topic: TopicId) -> TreeView {
        let role = if self.is_root {
            Role::Root
        } else if self.member {
            Role::Member
        } else {
            Role::Forwarder
        };
        TreeView {
            topic,
            role,
            member: self.member,
            parent: self.parent.map(|p| p.id),
            children: self.children.keys().copied().collect(),
            ancestors: self.ancestors.clone(),
            root: self.root,
            joining: self.join.is_some(),
        }
    }
}
