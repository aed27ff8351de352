//! Scribe topic trees over the Chord ring (Castro, Druschel, Kermarrec, Rowstron, *SCRIBE: A
//! large-scale and decentralized application-level multicast infrastructure*, IEEE JSAC 20(8),
//! 2002; PROTOCOLS.md §8).
//!
//! A topic's id is hashed onto the ring; the node responsible for it (its ring successor) is the
//! root of the topic's multicast tree. A subscriber routes a JOIN toward the id, hop by hop over
//! the ring: the first hop that is not yet in the tree becomes a *forwarder* with the joiner as
//! its child and joins for itself, the first hop that is already in the tree just adopts the
//! joiner, so the tree is the union of the ring routes from the members to the root. A message
//! enters the tree wherever its publisher is (or is routed toward the root until it meets the
//! tree) and floods along tree edges, each node forwarding a message id at most once. Parents
//! heartbeat their children every second and children acknowledge; a child that stops hearing
//! from its parent re-joins, a parent drops a child that stops acknowledging, cycles show up as
//! the node itself in the ancestor list a heartbeat carries, and when the ring's
//! responsibility for the id moves (the root failed, or a node joined in front of it) the root
//! check hands the root role to the node now responsible. The tree is phase one of bimodal
//! multicast: every first copy that reaches a member is handed to pbcast
//! ([`ScribeEvent::FirstPhase`]), whose digest gossip among the topic's members repairs
//! whatever the tree lost (§8.9).
//!
//! # Driving it
//!
//! A [`Machine`] (the contract of [`hearsay_protocols::machine`]): after each input drain
//! `poll_transmit`, then `poll_event`, then read `poll_timeout`. Scribe never runs without the
//! ring, and routing reaches it as a side input: a copy of the ring's routing state
//! ([`Routes`], from [`Chord::routes`](crate::chord::Chord::routes); anything that implements
//! [`Routing`] will do, as the hand-stepped tests' ring does), handed in whenever the ring had
//! an input. Until the first one, the node cannot route and is responsible for nothing.
//!
//! | input | what it does |
//! |---|---|
//! | [`Scribe::handle_message`](Machine::handle_message) | a [`ScribeMessage`] from a peer |
//! | [`Scribe::handle_timeout`](Machine::handle_timeout) | join retries and the heartbeat tick |
//! | [`Scribe::handle_routes`] | side input: the ring's routing state, copied (§8.1) |
//! | [`Scribe::handle_ring_change`] | side input: the ring's successor or predecessor changed: root check (§8.8) |
//! | [`Scribe::handle_member_down`] | side input: the membership layer says a node is Dead or Left (§8.7) |
//! | [`Scribe::subscribe`] / [`Scribe::unsubscribe`] | command: a local subscriber appears / the last one goes (§8.4, §8.5) |
//! | [`Scribe::publish`] | command: a message stamped by pbcast ([`Pbcast::publish`](hearsay_protocols::pbcast::Pbcast::publish)) enters the tree (§8.6) |
//!
//! Events: [`ScribeEvent::FirstPhase`] (hand to `Pbcast::handle_data`), and tree changes
//! ([`ScribeEvent::Attached`], [`ScribeEvent::Detached`], [`ScribeEvent::BecameRoot`]). The
//! tree state for `hearsay topics` is [`Scribe::tree`] / [`Scribe::trees`].
//!
//! # Timers
//!
//! One heartbeat tick every `heartbeat_interval` (phased by default) and one join deadline per
//! topic with a JOIN outstanding (the idiom of [`hearsay_protocols::machine#timers`]). Due
//! together they run in the order (deadline, kind, topic): join deadlines before the tick. A tick runs the root check, then per topic (ascending) the
//! parent and child timeouts, then sends the heartbeats.
//!
//! # Departures from PROTOCOLS.md §8
//!
//! - **A new forwarder's JOIN carries on the path** that made it a forwarder (§8.4 starts a
//!   fresh `[X]`), and a node passes a JOIN through if *any* node on its path is its parent or
//!   one of its ancestors (§8.4 checks the child only). Every node on a JOIN's path is, or is
//!   about to be, below the joiner: the chain of forwarders it created and the nodes of its
//!   own subtree that passed it on. Without this, a root that hands over its role (§8.8) and
//!   re-joins around the ring makes the first node outside its subtree a forwarder whose own
//!   JOIN is adopted inside that subtree: a cycle, found and re-formed over and over (the
//!   hand-stepped root migration test livelocked that way). JOIN retries start a fresh path.
//! - **Ancestor changes are pushed down at once.** A node whose ancestor list changes (a
//!   JoinAck, a heartbeat with a new list, detaching, taking the root role) heartbeats its
//!   children at once instead of at its next tick, so a subtree learns its new ancestry within
//!   one message delay per level rather than one heartbeat interval per level: the pass-through
//!   and the cycle check work from current lists.
//! - **JOIN retries avoid the hops already tried** ([`Routing::next_hop_avoiding`], as a
//!   Chord lookup retries from its next-best first hop, §7.4): §8.4 resends to `next_hop(t)`,
//!   which is the same hop until the ring repairs itself, and a ring without a membership
//!   layer keeps a crashed finger for many seconds. A node that lost its parent to a timeout,
//!   the membership layer or a cycle also avoids that parent on its first JOIN (one that said
//!   Leave is alive and may take it back). After four avoided hops the list starts over.
//! - **Routing is a copy.** §8 calls the ring's `next_hop` and `is_responsible` directly; here
//!   the host hands Scribe a snapshot of the ring's routing state after every input the ring
//!   had, so both are the same functions of the same state, without Scribe borrowing the ring.
//! - **Tree data carries no `via`**: everything on a tree is a first-phase copy.
//! - **Publish and tree data carry no separate topic**: `Data.id.topic` is the topic, so the
//!   two can never disagree.
//! - **A heartbeat's `root` is optional**, as in `JoinAck`: a detached node that keeps
//!   heartbeating its subtree does not know the root.
//! - **`ScribeLeave` from the parent detaches.** A Leave always means "I am not your
//!   neighbour": from a child, the child is removed (§8.5); from the parent, the node is
//!   detached and re-joins at once. A parent that drops a child after missed acknowledgements
//!   tells it so, and a node that gets a heartbeat acknowledgement for a topic it has no tree
//!   for answers with a Leave. With 5% datagram loss, three lost heartbeat round trips in a row
//!   happen about once per 1,000 edge-seconds; without the notice the child would keep
//!   believing in its parent for another parent timeout.
//! - **A detached node still forwards toward the root.** A node with no parent that is not the
//!   root floods a message to its subtree *and* routes it on toward the root as a
//!   `ScribePublish` (§8.6 floods only), so a message published inside a subtree cut off by a
//!   failure still reaches the rest of the tree; the `seen` set stops any copy coming back.
//!   A `ScribePublish` at a node with an entry is flooded as §8.6 says, excluding its sender.
//! - **A detached node answers no heartbeat with a Leave** (§8.7 answers every heartbeat from
//!   a node that is not the parent so). A heartbeat from a node its current JOIN went to is
//!   taken as that JOIN's JoinAck, which was lost (it carries the same root and ancestors and
//!   passes the same checks); any other is ignored. The sender is often the very node the JOIN
//!   goes to: a forwarder that pruned itself and is re-created by a JOIN a moment later gets
//!   its old parent's last heartbeat, and a Leave in reply would arrive after the old parent
//!   has adopted it again and undo the new link. Unacknowledged, a sender drops it after the
//!   child timeout. At 5% loss a lost JoinAck otherwise left the joiner detached, ignoring its
//!   adopter's heartbeats, until a JOIN retry seconds later.
//! - **A JoinAck is refused** (answered with a Leave, the JOIN stays pending) if it comes from
//!   one of this node's children or lists this node among its ancestors: adopting it would close
//!   a cycle at once.
//! - **Tree data from a child** also refreshes that child's `last_heard` (Scribe: multicast
//!   traffic counts as a heartbeat; §8.7 says so only for data from the parent).
//! - **The root check runs on every heartbeat tick** (the "every stabilize" of §8.8) and
//!   whenever the host reports a ring change; a join deadline finding the node responsible makes
//!   it root at once.
//! - **Bounds** \[H\]: at most `max_topics` tree entries (a peer's JOINs can create forwarder
//!   entries, at most `max_forwarders_per_peer` of them per peer), `max_children` children per
//!   entry and `max_children_total` in all; a JOIN's `child` must carry the RingId
//!   of its NodeId (as the ring checks its node references); `ancestors` must end with the
//!   sender's RingId; tree data must be first-phase with a seq in 1..=2^62 and a payload within
//!   `max_payload`. The topic peer cache of §8.9 is the host's: [`Scribe::neighbours`] gives
//!   the tree neighbours.
//! - **No `addr`** in node references, as in the ring: transmits are addressed by NodeId.

mod config;
mod join;
mod message;
mod multicast;
mod repair;
#[cfg(test)]
mod tests;
mod tree;

use std::collections::BTreeMap;
use std::sync::Arc;

use hearsay_protocols::{Earliest, Instant, Machine, NodeId, Outbox, Rng, Seed, Ticker, TopicId, Transmit};
use serde::Serialize;

pub use self::config::{ConfigError, ScribeConfig, ScribeError};
pub use self::message::{Detach, ScribeEvent, ScribeMessage};
use self::tree::Entry;
use crate::chord::{RingId, RingNode, Routes};

/// Longest JOIN path and ancestor list accepted from a peer (§8.3: 64).
pub const PATH_MAX: usize = 64;
/// Largest `ttl` a `ScribePublish` may carry (§10.8).
pub const TTL_MAX: u8 = 64;

/// The ring position of a topic: its id read as a [`RingId`] (§8.1).
pub fn topic_key(topic: TopicId) -> RingId {
    RingId(topic.0)
}

/// What Scribe needs from the ring: where a message routed toward a key goes next, and whether
/// this node is the key's root. The host hands a copy in with [`Scribe::handle_routes`].
pub trait Routing: std::fmt::Debug + Send + Sync {
    /// The next node on the route toward `key` (§8.1); `None` if this node cannot route
    /// (not on a ring, or alone on it).
    fn next_hop(&self, key: RingId) -> Option<NodeId>;
    /// True if this node is responsible for `key`: `key ∈ (pred, n]` (§8.1).
    fn is_responsible(&self, key: RingId) -> bool;
    /// The next hop toward `key` other than the nodes in `avoid` (hops tried without an
    /// answer), for retries. By default the plain next hop.
    fn next_hop_avoiding(&self, key: RingId, avoid: &[NodeId]) -> Option<NodeId> {
        let _ = avoid;
        self.next_hop(key)
    }
}

impl Routing for Routes {
    fn next_hop(&self, key: RingId) -> Option<NodeId> {
        Routes::next_hop(self, key)
    }

    fn next_hop_avoiding(&self, key: RingId, avoid: &[NodeId]) -> Option<NodeId> {
        Routes::next_hop_avoiding(self, key, avoid)
    }

    fn is_responsible(&self, key: RingId) -> bool {
        Routes::is_responsible(self, key)
    }
}

/// Counters, for metrics and experiments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScribeStats {
    /// JOINs sent for this node itself (first attempts and retries).
    pub joins_sent: u64,
    /// JOIN retries after a join deadline.
    pub join_retries: u64,
    /// JOINs passed through because their child is an ancestor here.
    pub joins_passed: u64,
    /// Forwarder entries created by a peer's JOIN.
    pub forwarders_created: u64,
    /// Children adopted (JOINs answered with a JoinAck, and re-adoptions).
    pub adopted: u64,
    /// JoinAcks refused (duplicate parent, cycle, no entry, root).
    pub acks_refused: u64,
    /// Detached nodes that took a heartbeat from a node their JOIN went to as its JoinAck.
    pub adopted_by_heartbeat: u64,
    /// Leaves sent.
    pub leaves_sent: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Parents lost to the parent timeout.
    pub parent_timeouts: u64,
    /// Children dropped after missed acknowledgements.
    pub child_timeouts: u64,
    /// Cycles found through the ancestor list.
    pub cycles: u64,
    /// Topics this node became root of.
    pub roots_taken: u64,
    /// Root roles given up by the root check.
    pub roots_given_up: u64,
    /// Messages this node published into a tree or toward a root.
    pub published: u64,
    /// `TreeData` copies sent.
    pub tree_data_sent: u64,
    /// `ScribePublish` sent or forwarded.
    pub publish_routed: u64,
    /// Tree data already seen (dropped by the dedupe).
    pub duplicates: u64,
    /// Published messages that reached the responsible node with no tree there.
    pub no_tree: u64,
    /// `ScribePublish` dropped at ttl 0.
    pub ttl_expired: u64,
    /// JOINs dropped because they came back to a node already on their path.
    pub routing_loops: u64,
    /// Messages that needed a next hop where the ring gave none.
    pub not_routable: u64,
    /// Tree data from a node that is neither parent nor child (flooded anyway).
    pub from_stranger: u64,
    /// Messages that named a tree this node has no entry for, or a neighbour it does not have.
    pub stale: u64,
    /// JOINs refused at `max_topics`, `max_forwarders_per_peer`, `max_children` or
    /// `max_children_total`.
    pub over_limit: u64,
    /// Messages dropped as malformed (bounds, RingIds not matching, bad data).
    pub malformed: u64,
}

/// A node's role in one topic's tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The root: this node is responsible for the topic.
    Root,
    /// A subscriber (not the root).
    Member,
    /// Neither: it only forwards for its children.
    Forwarder,
}

/// One topic's tree as this node sees it, for `hearsay topics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeView {
    /// The topic.
    pub topic: TopicId,
    /// Root, member or forwarder.
    pub role: Role,
    /// Local subscribers exist (also true for a root that is a member).
    pub member: bool,
    /// The parent; `None` for the root and while detached.
    pub parent: Option<NodeId>,
    /// The children, ascending.
    pub children: Vec<NodeId>,
    /// The ancestors, root first, as last told by the parent.
    pub ancestors: Vec<RingId>,
    /// The root, as last told.
    pub root: Option<RingId>,
    /// A JOIN is outstanding.
    pub joining: bool,
}

impl TreeView {
    /// Hops from the root as last told (`len(ancestors)`; 0 for the root).
    pub fn depth(&self) -> usize {
        self.ancestors.len()
    }
}

/// The Scribe machine of one node. Drive it as described in the [module docs](self).
#[derive(Debug)]
pub struct Scribe {
    me: RingNode,
    /// The ring's routing state, as last handed in.
    routes: Arc<dyn Routing>,
    config: Arc<ScribeConfig>,
    rng: Rng,
    tick: Ticker,
    topics: BTreeMap<TopicId, Entry>,
    /// Forwarder entries held per peer whose JOIN created them.
    forwarders_by: BTreeMap<NodeId, usize>,
    out: Outbox<ScribeMessage, ScribeEvent>,
    stats: ScribeStats,
}

impl Scribe {
    /// The machine name used to derive its RNG from the node seed.
    pub const NAME: &'static str = "scribe";

    /// A machine for node `id`, started at `now`. The config should have passed
    /// [`ScribeConfig::validate`].
    pub fn new(id: NodeId, config: Arc<ScribeConfig>, node_seed: &Seed, now: Instant) -> Self {
        let mut rng = Rng::from_seed(node_seed.machine(Self::NAME));
        let tick = Ticker::start(now, config.heartbeat_interval, config.timing, &mut rng);
        Scribe {
            me: RingNode::of(id),
            routes: Arc::new(Routes::unrouted(id)),
            config,
            rng,
            tick,
            topics: BTreeMap::new(),
            forwarders_by: BTreeMap::new(),
            out: Outbox::default(),
            stats: ScribeStats::default(),
        }
    }

    /// This node's identity.
    pub fn id(&self) -> NodeId {
        self.me.id
    }

    /// The counters.
    pub fn stats(&self) -> &ScribeStats {
        &self.stats
    }

    /// The settings.
    pub fn config(&self) -> &ScribeConfig {
        &self.config
    }

    /// Topics with a tree entry here, ascending.
    pub fn topics(&self) -> impl Iterator<Item = TopicId> + '_ {
        self.topics.keys().copied()
    }

    /// Number of tree entries (node stress, §8.11).
    pub fn entries(&self) -> usize {
        self.topics.len()
    }

    /// Children over all entries (node stress, §8.11).
    pub fn children_total(&self) -> usize {
        self.topics.values().map(|e| e.children.len()).sum()
    }

    /// Bytes of state this machine accounts for: its tree entries (children, ancestors, seen
    /// ids). Entries, children and seen ids are capped.
    pub fn state_bytes(&self) -> usize {
        let entries: usize = self.topics.values().map(Entry::bytes).sum();
        entries.saturating_add(self.forwarders_by.len() * 48).saturating_add(std::mem::size_of::<Self>())
    }

    /// True if this node has local subscribers for `topic`.
    pub fn is_member(&self, topic: TopicId) -> bool {
        self.topics.get(&topic).is_some_and(|e| e.member)
    }

    /// True if this node is the root of `topic`'s tree.
    pub fn is_root(&self, topic: TopicId) -> bool {
        self.topics.get(&topic).is_some_and(|e| e.is_root)
    }

    /// The parent in `topic`'s tree.
    pub fn parent(&self, topic: TopicId) -> Option<NodeId> {
        self.topics.get(&topic).and_then(|e| e.parent.map(|p| p.id))
    }

    /// True if this node is on `topic`'s tree: the root, or with a parent.
    pub fn is_attached(&self, topic: TopicId) -> bool {
        self.topics.get(&topic).is_some_and(|e| e.is_root || e.parent.is_some())
    }

    /// The tree neighbours (parent and children) in `topic`'s tree, ascending: candidates for
    /// the topic peer cache of §8.9.
    pub fn neighbours(&self, topic: TopicId) -> Vec<NodeId> {
        let Some(e) = self.topics.get(&topic) else {
            return Vec::new();
        };
        let mut v: Vec<NodeId> = e.children.keys().copied().chain(e.parent.map(|p| p.id)).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// `topic`'s tree as this node sees it.
    pub fn tree(&self, topic: TopicId) -> Option<TreeView> {
        self.topics.get(&topic).map(|e| e.view(topic))
    }

    /// Every tree this node is part of, ascending by topic.
    pub fn trees(&self) -> impl Iterator<Item = TreeView> + '_ {
        self.topics.iter().map(|(t, e)| e.view(*t))
    }

    /// Side input: the ring's routing state changed (a copy, e.g. [`Chord::routes`](crate::chord::Chord::routes)).
    /// Nothing else happens until the next input; [`Scribe::handle_ring_change`] runs the
    /// root check.
    pub fn handle_routes(&mut self, _now: Instant, routes: Arc<dyn Routing>) {
        self.routes = routes;
    }

    /// The earliest armed timer: a topic's join deadline, or the tick.
    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let mut e = Earliest::new();
        for (topic, entry) in &self.topics {
            e.offer(entry.join.as_ref().map(|j| j.deadline), Timer::Join(*topic));
        }
        e.offer(Some(self.tick.deadline()), Timer::Tick);
        e.get()
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Join(topic) => self.on_join_deadline(now, topic),
            Timer::Tick => {
                self.tick.advance(now, &mut self.rng);
                self.on_tick(now);
            }
        }
    }

    /// Queue `msg` to `to` as a datagram.
    fn send(&mut self, to: NodeId, msg: ScribeMessage) {
        if to != self.me.id {
            self.out.datagram(to, msg);
        }
    }

    fn send_leave(&mut self, to: NodeId, topic: TopicId) {
        self.stats.leaves_sent += 1;
        self.send(to, ScribeMessage::Leave { topic });
    }
}

/// Scribe's timer kinds, in the order simultaneous ones are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A JOIN got no JoinAck in time.
    Join(TopicId),
    /// The heartbeat tick.
    Tick,
}

impl Machine for Scribe {
    type Message = ScribeMessage;
    type Event = ScribeEvent;

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: ScribeMessage) {
        if from == self.me.id {
            self.stats.malformed += 1;
            return;
        }
        match msg {
            ScribeMessage::Join { topic, child, path } => self.on_join(now, from, topic, child, path),
            ScribeMessage::JoinAck { topic, root, ancestors } => {
                self.on_join_ack(now, from, topic, root, ancestors)
            }
            ScribeMessage::Leave { topic } => self.on_leave(now, from, topic),
            ScribeMessage::Publish { data, ttl } => self.on_publish(now, from, data, ttl),
            ScribeMessage::TreeData { data } => self.on_tree_data(now, from, data),
            ScribeMessage::Heartbeat { topic, root, ancestors } => {
                self.on_heartbeat(now, from, topic, root, ancestors)
            }
            ScribeMessage::HeartbeatAck { topic } => self.on_heartbeat_ack(now, from, topic),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.next_timer() {
            if at > now {
                break;
            }
            self.fire(now, timer);
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit<ScribeMessage>> {
        self.out.pop_transmit()
    }

    fn poll_event(&mut self) -> Option<ScribeEvent> {
        self.out.pop_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(at, _)| at)
    }
}
