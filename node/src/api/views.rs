//! The API's reply types built from the Engine's read-only views: ids in hex, states and tree
//! roles by name. The actor answers [`Command`](crate::agent::Command)s with these.

use std::net::SocketAddr;
use std::time::Duration;

use hearsay_overlay::chord::RingNode;
use hearsay_overlay::scribe::Role;
use hearsay_overlay::swim::State;
use hearsay_protocols::TopicId;

use super::types::{Member, RingInfo, RingPeer, Status, TopicInfo, hex};
use crate::engine::Engine;

/// `GET /v1/status` of a node bound to `addr`, up for `uptime`.
pub(crate) fn status(engine: &Engine, addr: SocketAddr, uptime: Duration) -> Status {
    let members =
        engine.members().iter().filter(|m| matches!(m.state, State::Alive | State::Suspect)).count();
    Status {
        name: engine.name().to_string(),
        id: hex(&engine.id()),
        addr: addr.to_string(),
        members,
        uptime_s: uptime.as_secs_f64(),
    }
}

/// `GET /v1/members`.
pub(crate) fn members(engine: &Engine) -> Vec<Member> {
    engine.members().into_iter().map(member).collect()
}

/// One member as the API shows it.
pub(crate) fn member(m: crate::engine::MemberView) -> Member {
    Member {
        name: m.name,
        addr: m.addr.map_or_else(String::new, |a| a.to_string()),
        state: state_name(m.state).to_string(),
        incarnation: m.incarnation,
        id: hex(&m.id),
        ring_id: format!("{:016x}", m.ring_id.0),
        tags: m.tags,
    }
}

/// `GET /v1/topics`: the topics this node subscribes to or published on, then those it only
/// forwards for others; `subscribers(t)` counts the local subscriptions of `t`.
pub(crate) fn topics(engine: &Engine, subscribers: impl Fn(TopicId) -> usize) -> Vec<TopicInfo> {
    let views = engine.topic_views();
    let mut v: Vec<TopicInfo> = views
        .iter()
        .map(|t| {
            let tree = engine.scribe().tree(t.topic);
            let role = match &tree {
                Some(tv) => tree_role(tv.role).to_string(),
                None => t.role.to_string(),
            };
            TopicInfo {
                topic: t.name.clone().unwrap_or_else(|| t.topic.to_string()),
                topic_id: t.topic.to_string(),
                subscribers: subscribers(t.topic),
                members: t.members,
                role,
                parent: tree.as_ref().and_then(|tv| tv.parent).map(|p| hex(&p)),
                children: tree.as_ref().map_or_else(Vec::new, |tv| tv.children.iter().map(hex).collect()),
                depth: tree.as_ref().filter(|tv| !tv.joining).map(|tv| tv.depth()),
            }
        })
        .collect();
    for tv in engine.scribe().trees().filter(|tv| !views.iter().any(|t| t.topic == tv.topic)) {
        v.push(TopicInfo {
            topic: engine.topic_name(tv.topic).map_or_else(|| tv.topic.to_string(), str::to_string),
            topic_id: tv.topic.to_string(),
            subscribers: 0,
            members: 0,
            role: tree_role(tv.role).to_string(),
            parent: tv.parent.map(|p| hex(&p)),
            children: tv.children.iter().map(hex).collect(),
            depth: (!tv.joining).then(|| tv.depth()),
        });
    }
    v
}

/// `GET /v1/ring`.
pub(crate) fn ring(engine: &Engine) -> RingInfo {
    let r = engine.ring_view();
    let peer = |n: &RingNode| RingPeer { id: hex(&n.id), ring_id: format!("{:016x}", n.ring.0) };
    RingInfo {
        me: peer(&r.me),
        predecessor: r.predecessor.as_ref().map(peer),
        successors: r.successors.iter().map(peer).collect(),
        fingers: r.fingers.iter().map(peer).collect(),
    }
}

fn tree_role(r: Role) -> &'static str {
    match r {
        Role::Root => "root",
        Role::Member => "member",
        Role::Forwarder => "forwarder",
    }
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Alive => "alive",
        State::Suspect => "suspect",
        State::Dead => "dead",
        State::Left => "left",
    }
}
