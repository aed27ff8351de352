//! Read-only views of the Engine for the API: members, topics, ring.

use hearsay_overlay::chord::{RingId, RingNode};
use hearsay_overlay::swim::State;
use hearsay_protocols::{NodeId, TopicId};

use super::Engine;

/// One member table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Its id.
    pub id: NodeId,
    /// The name it advertises.
    pub name: String,
    /// Its address, if it advertised a socket address.
    pub addr: Option<std::net::SocketAddr>,
    /// Its state as this node sees it.
    pub state: State,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its ring position.
    pub ring_id: RingId,
    /// The tags it advertises.
    pub tags: std::collections::BTreeMap<String, String>,
}

/// A topic this node takes part in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicView {
    /// The id.
    pub topic: TopicId,
    /// The name, when known here.
    pub name: Option<String>,
    /// Local subscriptions.
    pub subscribers: usize,
    /// "member", "publisher" or "gossip".
    pub role: &'static str,
    /// Members of the topic this node knows of (self excluded).
    pub members: usize,
}

/// The ring neighbourhood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingView {
    /// This node.
    pub me: RingNode,
    /// Its predecessor.
    pub predecessor: Option<RingNode>,
    /// Its successor list.
    pub successors: Vec<RingNode>,
    /// Distinct finger targets, nearest first.
    pub fingers: Vec<RingNode>,
}

impl Engine {
    /// The member table, self included, by name then id.
    pub fn members(&self) -> Vec<MemberView> {
        let mut v: Vec<MemberView> = self
            .swim
            .members()
            .iter()
            .map(|m| MemberView {
                id: m.id,
                name: m.profile.meta().name().to_string(),
                addr: m.profile.addr().to_socket(),
                state: m.state,
                incarnation: m.incarnation,
                ring_id: RingId::of(&m.id),
                tags: m.profile.meta().tags().to_map(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        v
    }

    /// Topics this node subscribes to or has published on.
    pub fn topic_views(&self) -> Vec<TopicView> {
        self.topics
            .iter()
            .filter(|(_, s)| s.subscribers > 0 || s.published)
            .map(|(t, s)| {
                let gossip = s.name.as_deref().is_some_and(|n| self.is_gossip(n));
                let role = if gossip {
                    "gossip"
                } else if s.subscribers > 0 {
                    "member"
                } else {
                    "publisher"
                };
                TopicView {
                    topic: *t,
                    name: s.name.clone(),
                    subscribers: s.subscribers,
                    role,
                    members: self.topic_member_count(*t),
                }
            })
            .collect()
    }

    /// Other members that advertise `topic` in their membership meta (live ones, self
    /// excluded): what [`TopicView::members`] counts, for any topic.
    pub fn topic_member_count(&self, topic: TopicId) -> usize {
        self.topic_members.get(&topic).map_or(0, |m| m.iter().filter(|n| **n != self.id).count())
    }

    /// The ring neighbourhood.
    pub fn ring_view(&self) -> RingView {
        let mut fingers: Vec<RingNode> = Vec::new();
        for (_, _, node) in self.chord().finger_runs() {
            if let Some(n) = node {
                if !fingers.contains(&n) {
                    fingers.push(n);
                }
            }
        }
        RingView {
            me: self.chord().node(),
            predecessor: self.chord().predecessor(),
            successors: self.chord().successors().to_vec(),
            fingers,
        }
    }
}
