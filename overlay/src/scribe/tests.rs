//! Scribe stepped by hand: a few machines on a ring whose routing the test controls (by default
//! each node routes to its successor, which makes every JOIN walk the ring and every hop a
//! forwarder), on the `testing::Net` harness: a zero-latency FIFO, a clock moved from deadline
//! to deadline, nodes that can be silenced and messages that can be dropped, and every node
//! handed its routes before each input.

use std::cell::{RefCell, RefMut};
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use hearsay_protocols::pbcast::{Data, MsgId};
use hearsay_protocols::testing::Net;
use hearsay_protocols::wire::{self, DATAGRAM_BUDGET, DEFAULT_FRAME_LIMIT};
use hearsay_protocols::{Duration, Instant, Machine, NodeId, Reliability, Seed, Timing, TopicId};

use super::*;
use crate::chord::{Chord, ChordConfig, RingId, RingNode, RingSnapshot};

fn id(n: u64) -> NodeId {
    NodeId::from_u64(n)
}

fn config() -> Arc<ScribeConfig> {
    Arc::new(ScribeConfig { timing: Timing::Sync, ..ScribeConfig::default() })
}

/// The ring as every node sees it: members sorted by RingId, routing by successor unless a
/// node's next hop is overridden.
#[derive(Clone, Debug, Default)]
struct TestRing {
    nodes: Vec<RingNode>,
    next: BTreeMap<NodeId, NodeId>,
}

impl TestRing {
    fn add(&mut self, n: RingNode) {
        self.nodes.push(n);
        self.nodes.sort_by_key(|x| x.ring);
    }

    fn remove(&mut self, id: NodeId) {
        self.nodes.retain(|x| x.id != id);
    }

    fn position(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|x| x.id == id)
    }

    /// Node `me`'s routes: a copy of the ring as it is now, what a host hands in.
    fn at(&self, me: NodeId) -> Arc<dyn Routing> {
        Arc::new(At { ring: self.clone(), me })
    }
}

/// One node's view of the test ring.
#[derive(Debug)]
struct At {
    ring: TestRing,
    me: NodeId,
}

impl Routing for At {
    fn next_hop(&self, _key: RingId) -> Option<NodeId> {
        if let Some(n) = self.ring.next.get(&self.me) {
            return Some(*n);
        }
        let n = self.ring.nodes.len();
        let i = self.ring.position(self.me)?;
        (n > 1).then(|| self.ring.nodes[(i + 1) % n].id)
    }

    fn next_hop_avoiding(&self, key: RingId, avoid: &[NodeId]) -> Option<NodeId> {
        if self.ring.next.contains_key(&self.me) {
            return self.next_hop(key);
        }
        let n = self.ring.nodes.len();
        let i = self.ring.position(self.me)?;
        (1..n).map(|k| self.ring.nodes[(i + k) % n].id).find(|x| !avoid.contains(x))
    }

    fn is_responsible(&self, key: RingId) -> bool {
        let n = self.ring.nodes.len();
        let Some(i) = self.ring.position(self.me) else {
            return false;
        };
        let pred = self.ring.nodes[(i + n - 1) % n];
        n == 1 || key.in_half_open(pred.ring, self.ring.nodes[i].ring)
    }
}

/// The harness, with every node handed its routes from the shared test ring before each input.
struct RingNet {
    net: Net<Scribe>,
    ring: Rc<RefCell<TestRing>>,
}

impl Deref for RingNet {
    type Target = Net<Scribe>;

    fn deref(&self) -> &Net<Scribe> {
        &self.net
    }
}

impl DerefMut for RingNet {
    fn deref_mut(&mut self) -> &mut Net<Scribe> {
        &mut self.net
    }
}

impl RingNet {
    /// Nodes 1..=n on the ring.
    fn new(n: u64) -> Self {
        let ring = Rc::new(RefCell::new(TestRing::default()));
        let mut net = Net::new();
        let routes = ring.clone();
        net.set_before_input(move |who, m: &mut Scribe, now| m.handle_routes(now, routes.borrow().at(who)));
        let mut net = RingNet { net, ring };
        for k in 1..=n {
            net.add_node(id(k));
        }
        net
    }

    /// A new node `who`, on the ring.
    fn add_node(&mut self, who: NodeId) {
        let seed = Seed::derive(3, "node", 0, who.prefix_u64());
        let now = self.now();
        self.net.add(who, Scribe::new(who, config(), &seed, now));
        self.ring.borrow_mut().add(RingNode::of(who));
    }

    /// The ring, to change it; every node sees the change at its next input.
    fn ring_mut(&self) -> RefMut<'_, TestRing> {
        self.ring.borrow_mut()
    }

    /// The node at ring position `k` (clockwise, 0 = smallest RingId).
    fn pos(&self, k: usize) -> NodeId {
        self.ring.borrow().nodes[k].id
    }

    fn ring_id(&self, k: usize) -> RingId {
        self.ring.borrow().nodes[k].ring
    }

    /// A topic whose root is the node at position `k` (its key is that node's RingId).
    fn topic_at(&self, k: usize) -> TopicId {
        TopicId(self.ring_id(k).0)
    }

    /// The harness's `call`, here so that `net.call(net.pos(k), ..)` borrows.
    fn call<T>(&mut self, who: NodeId, f: impl FnOnce(&mut Scribe, Instant) -> T) -> T {
        self.net.call(who, f)
    }

    /// The harness's `inject`, here so that `net.inject(net.pos(k), ..)` borrows.
    fn inject(&mut self, from: NodeId, to: NodeId, msg: ScribeMessage) {
        self.net.inject(from, to, msg);
    }

    fn subscribe(&mut self, who: NodeId, topic: TopicId) {
        self.call(who, |m, now| m.subscribe(now, topic)).expect("under max_topics");
    }

    fn tree(&self, who: NodeId, topic: TopicId) -> Option<TreeView> {
        self[who].tree(topic)
    }

    /// Messages delivered so far whose kind `f` selects.
    fn count(&self, f: impl Fn(&ScribeMessage) -> bool) -> usize {
        self.delivered().filter(|s| f(&s.msg)).count()
    }

    /// The parent pointers of `topic`'s tree, followed from `who` to the root, `who` first.
    fn path_to_root(&self, who: NodeId, topic: TopicId) -> Vec<NodeId> {
        let mut path = vec![who];
        let mut at = who;
        while let Some(p) = self[at].parent(topic) {
            assert!(!path.contains(&p), "cycle through {p}");
            path.push(p);
            at = p;
        }
        path
    }
}

fn data(origin: NodeId, topic: TopicId, seq: u64) -> Data {
    Data {
        id: MsgId { origin, topic, seq },
        published_at: Instant::ZERO,
        payload: Bytes::from_static(b"hello"),
        seal: Default::default(),
    }
}

fn is_join(m: &ScribeMessage) -> bool {
    matches!(m, ScribeMessage::Join { .. })
}

/// A chain tree: the subscriber at position 1, root at position 7 of an 8-node ring; every
/// node between is a forwarder.
fn chain() -> (RingNet, TopicId) {
    let mut net = RingNet::new(8);
    let t = net.topic_at(7);
    let s = net.pos(1);
    net.subscribe(s, t);
    (net, t)
}

#[test]
fn a_join_makes_every_hop_on_the_route_a_forwarder_up_to_the_root() {
    let (net, t) = chain();
    let (s, root) = (net.pos(1), net.pos(7));
    // One JOIN per hop: the subscriber's, then each new forwarder's own.
    assert_eq!(net.count(is_join), 6);
    assert_eq!(net.path_to_root(s, t), (1..=7).map(|k| net.pos(k)).collect::<Vec<_>>());
    let view = net.tree(root, t).unwrap();
    assert_eq!((view.role, view.children.clone(), view.depth()), (Role::Root, vec![net.pos(6)], 0));
    for k in 2..=6 {
        let v = net.tree(net.pos(k), t).unwrap();
        assert_eq!(v.role, Role::Forwarder);
        assert_eq!(v.children, vec![net.pos(k - 1)]);
        assert!(!v.joining);
        assert_eq!(net[net.pos(k)].stats().forwarders_created, 1);
    }
    assert_eq!(net.tree(s, t).unwrap().role, Role::Member);
    assert!(net.events_of(root).any(|e| *e == ScribeEvent::BecameRoot { topic: t }));
    assert!(net.events_of(s).any(|e| *e == ScribeEvent::Attached { topic: t, parent: net.pos(2) }));
    // A new forwarder acks with itself as the only ancestor; once it is attached itself it
    // pushes its ancestors down at once, so the subscriber knows the whole list already.
    let v = net.tree(s, t).unwrap();
    assert_eq!(v.ancestors, (2..=7).rev().map(|k| net.ring_id(k)).collect::<Vec<_>>());
    assert_eq!(v.depth(), 6);
    assert_eq!(v.root, Some(net.ring_id(7)));
    // Non-members and nodes off the route hold nothing.
    assert_eq!(net[net.pos(0)].entries(), 0);
}

#[test]
fn a_second_subscriber_is_adopted_by_the_first_node_already_on_the_tree() {
    let (mut net, t) = chain();
    let joins = net.count(is_join);
    net.subscribe(net.pos(0), t);
    assert_eq!(net.count(is_join), joins + 1, "no new forwarder");
    assert_eq!(net[net.pos(0)].parent(t), Some(net.pos(1)));
    // A node already forwarding that subscribes only becomes a member: no JOIN at all.
    net.subscribe(net.pos(4), t);
    assert_eq!(net.count(is_join), joins + 1);
    assert_eq!(net.tree(net.pos(4), t).unwrap().role, Role::Member);
    // A subscriber that is the root's responsible node is the root at once.
    let mut alone = RingNet::new(3);
    let t2 = alone.topic_at(2);
    alone.subscribe(alone.pos(2), t2);
    assert!(alone[alone.pos(2)].is_root(t2));
    assert_eq!(alone.delivered().count(), 0);
}

#[test]
fn leaving_prunes_forwarders_without_children_or_subscribers() {
    let (mut net, t) = chain();
    net.subscribe(net.pos(3), t);
    net.call(net.pos(1), |m, now| m.unsubscribe(now, t));
    assert_eq!(net[net.pos(1)].entries(), 0);
    assert_eq!(net[net.pos(2)].entries(), 0, "a forwarder with no child left is pruned");
    let v = net.tree(net.pos(3), t).unwrap();
    assert_eq!((v.role, v.children.len()), (Role::Member, 0), "a member stays");
    assert!(net[net.pos(5)].is_attached(t));
    net.call(net.pos(3), |m, now| m.unsubscribe(now, t));
    for k in 0..8 {
        assert_eq!(net[net.pos(k)].entries(), 0, "position {k}: the whole tree is gone");
    }
    let heartbeats = net.count(|m| matches!(m, ScribeMessage::Heartbeat { .. }));
    net.advance(Duration::from_secs(5));
    assert_eq!(net.count(|m| matches!(m, ScribeMessage::Heartbeat { .. })), heartbeats);
}

#[test]
fn heartbeats_keep_the_tree_and_a_silent_parent_is_replaced() {
    let (mut net, t) = chain();
    net.advance(Duration::from_secs(10));
    for k in 1..=7 {
        let st = *net[net.pos(k)].stats();
        assert_eq!((st.parent_timeouts, st.child_timeouts), (0, 0), "position {k}");
    }
    assert!(net.count(|m| matches!(m, ScribeMessage::HeartbeatAck { .. })) >= 6 * 9);
    // Position 4 crashes and leaves the ring; position 3 hears nothing for 3 intervals.
    let dead = net.pos(4);
    let (p3, p5) = (net.pos(3), net.pos(5));
    net.silence(dead);
    net.ring_mut().remove(dead);
    net.advance(Duration::from_secs(5));
    assert_eq!(net[p3].stats().parent_timeouts, 1);
    assert!(
        net.events_of(p3).any(|e| *e == ScribeEvent::Detached { topic: t, cause: Detach::ParentTimeout })
    );
    assert_eq!(net[p3].parent(t), Some(p5), "re-joined through its new next hop");
    assert_eq!(net[p5].stats().child_timeouts, 1, "the parent dropped the dead child");
    assert_eq!(net.tree(p5, t).unwrap().children, vec![p3]);
    net.advance(Duration::from_secs(2));
    // The subtree learned its new ancestors from the heartbeats.
    let v = net.tree(net.pos(1), t).unwrap();
    assert_eq!(v.depth(), 5);
    assert!(!v.ancestors.contains(&RingId::of(&dead)));
}

#[test]
fn the_membership_layer_speeds_up_repair() {
    let (mut net, t) = chain();
    let (p3, p4, p5) = (net.pos(3), net.pos(4), net.pos(5));
    net.silence(p4);
    net.ring_mut().remove(p4);
    net.call(p3, |m, now| m.handle_member_down(now, p4));
    net.call(p5, |m, now| m.handle_member_down(now, p4));
    assert_eq!(net[p3].parent(t), Some(p5), "re-joined at once, no timeout");
    assert_eq!(net.tree(p5, t).unwrap().children, vec![p3]);
    assert!(net.events_of(p3).any(|e| *e == ScribeEvent::Detached { topic: t, cause: Detach::ParentDown }));
}

#[test]
fn a_heartbeat_from_a_node_that_is_not_the_parent_gets_a_leave() {
    let (mut net, t) = chain();
    let (s, stranger) = (net.pos(1), net.pos(5));
    let before = net.tree(s, t).unwrap();
    let hb = ScribeMessage::Heartbeat { topic: t, root: None, ancestors: vec![net.ring_id(5)] };
    net.inject(stranger, s, hb);
    assert_eq!(net.tree(s, t).unwrap(), before);
    let last = net.delivered().last().unwrap();
    assert_eq!((last.from, last.to, &last.msg), (s, stranger, &ScribeMessage::Leave { topic: t }));
    // A heartbeat for a topic with no tree here: the same answer.
    let other = net.topic_at(3);
    net.inject(
        stranger,
        s,
        ScribeMessage::Heartbeat { topic: other, root: None, ancestors: vec![net.ring_id(5)] },
    );
    assert_eq!(net.delivered().last().unwrap().msg, ScribeMessage::Leave { topic: other });
    assert_eq!(net[s].entries(), 1);
}

#[test]
fn a_child_dropped_after_lost_acks_is_told_and_rejoins_at_once() {
    let (mut net, t) = chain();
    let (s, p2) = (net.pos(1), net.pos(2));
    net.advance(Duration::from_secs(2));
    // Every acknowledgement from the subscriber is lost for a while.
    net.set_drop(move |from, _, m| from == s && matches!(m, ScribeMessage::HeartbeatAck { .. }));
    net.advance(Duration::from_secs(4));
    assert_eq!(net[p2].stats().child_timeouts, 1);
    assert!(net.events_of(s).any(|e| *e == ScribeEvent::Detached { topic: t, cause: Detach::ParentLeft }));
    assert_eq!(net[s].stats().parent_timeouts, 0, "told before its own timeout");
    // Its JOIN went to the same next hop, which adopted it again.
    assert_eq!(net[s].parent(t), Some(p2));
    assert!(net.tree(p2, t).is_some_and(|v| v.children == vec![s]));
}

#[test]
fn a_rejoining_node_passes_through_its_own_subtree() {
    let (mut net, t) = chain();
    net.advance(Duration::from_secs(2)); // ancestors everywhere
    let (p2, p3, p4, p5, p6) = (net.pos(2), net.pos(3), net.pos(4), net.pos(5), net.pos(6));
    // Position 4 loses its parent; its JOIN is routed into its own subtree (to 2), which
    // must not adopt it but pass the JOIN on (to 6).
    net.ring_mut().next.insert(p4, p2);
    net.ring_mut().next.insert(p2, p6);
    net.call(p4, |m, now| m.handle_member_down(now, p5));
    assert_eq!(net[p2].stats().joins_passed, 1);
    assert_eq!(net[p4].parent(t), Some(p6));
    assert_eq!(net[p2].parent(t), Some(p3), "the subtree is unchanged");
    assert!(!net.tree(p2, t).unwrap().children.contains(&p4));
    net.advance(Duration::from_secs(3));
    assert_eq!(net.path_to_root(net.pos(1), t), vec![net.pos(1), p2, p3, p4, p6, net.pos(7)]);
    // Position 5 heartbeated its former child, got a Leave and pruned itself.
    assert_eq!(net[p5].entries(), 0);
}

#[test]
fn a_cycle_is_refused_at_the_ack_or_found_by_the_next_heartbeats() {
    let mut net = RingNet::new(8);
    let t = net.topic_at(7);
    // Three detached members whose JOINs all get lost, and no heartbeat gets through yet: the
    // ancestor lists stay stale while a cycle forms.
    net.set_drop(|_, _, m| is_join(m) || matches!(m, ScribeMessage::Heartbeat { .. }));
    let (a, b, c) = (net.pos(1), net.pos(2), net.pos(3));
    for x in [a, b, c] {
        net.subscribe(x, t);
    }
    let join = |child: NodeId| ScribeMessage::Join {
        topic: t,
        child: RingNode::of(child),
        path: vec![RingId::of(&child)],
    };
    // b adopts a, c adopts b, a adopts c: every ack is taken, closing a → b → c → a.
    net.inject(a, b, join(a));
    net.inject(b, c, join(b));
    net.inject(c, a, join(c));
    assert_eq!((net[a].parent(t), net[b].parent(t), net[c].parent(t)), (Some(b), Some(c), Some(a)));
    // Heartbeats flow again: the lists pushed around the cycle find it within one tick.
    net.set_drop(|_, _, m| is_join(m));
    net.advance(Duration::from_secs(1));
    let cycles: u64 = [a, b, c].iter().map(|x| net[*x].stats().cycles).sum();
    assert!((1..=3).contains(&cycles), "found by the ancestor lists: {cycles}");
    let broken: Vec<NodeId> = net
        .events()
        .iter()
        .filter(|(_, e)| matches!(e, ScribeEvent::Detached { cause: Detach::Cycle, .. }))
        .map(|(w, _)| *w)
        .collect();
    assert_eq!(broken.len() as u64, cycles, "a node that saw itself detached");
    net.advance(Duration::from_secs(3));
    for x in [a, b, c] {
        net.path_to_root(x, t); // panics on a cycle
    }
    // With current lists the cycle never forms: c's JOIN reaching a is passed on, since a
    // knows c as an ancestor.
    let mut net = RingNet::new(8);
    net.set_drop(|_, _, m| is_join(m));
    for x in [a, b, c] {
        net.subscribe(x, t);
    }
    net.inject(a, b, join(a));
    net.inject(b, c, join(b));
    net.inject(c, a, join(c));
    assert_eq!(net[c].parent(t), None);
    assert_eq!(net[a].stats().joins_passed, 1);
    // A two-node cycle never forms: an ack from one of our children is refused.
    let mut net = RingNet::new(8);
    net.set_drop(|_, _, m| is_join(m));
    let (a, b) = (net.pos(1), net.pos(2));
    net.subscribe(a, t);
    net.subscribe(b, t);
    net.inject(a, b, join(a));
    assert_eq!(net[a].parent(t), Some(b));
    // b's JOIN reaching its own child a is passed on, not adopted...
    net.inject(b, a, join(b));
    assert_eq!(net[a].stats().joins_passed, 1);
    assert_eq!(net[b].parent(t), None);
    // ...and an ack from one of b's children is refused, and the child told to drop b.
    net.inject(
        a,
        b,
        ScribeMessage::JoinAck { topic: t, root: None, ancestors: vec![RingId::of(&b), RingId::of(&a)] },
    );
    assert_eq!(net[b].stats().acks_refused, 1);
    assert_eq!(net[b].parent(t), None);
    net.inject(a, b, ScribeMessage::JoinAck { topic: t, root: None, ancestors: vec![RingId::of(&a)] });
    assert_eq!(net[b].stats().acks_refused, 2, "refused even without the cycle in its list");
}

/// A NodeId whose RingId lies in (lo, hi), clockwise.
fn node_between(lo: RingId, hi: RingId) -> NodeId {
    (1_000u64..)
        .map(id)
        .find(|n| RingId::of(n).in_open(lo, hi))
        .expect("some id lands in an arc of 1/8 of the ring")
}

#[test]
fn root_migrates_to_a_node_that_joins_in_front_of_it() {
    let mut net = RingNet::new(8);
    // The key sits just after position 6: position 7 is the root until a node joins between.
    let key = RingId(net.ring_id(6).0.wrapping_add(1));
    let t = TopicId(key.0);
    net.subscribe(net.pos(1), t);
    let old = net.pos(7);
    assert!(net[old].is_root(t));
    let newcomer = node_between(key, net.ring_id(7));
    net.add_node(newcomer);
    // The old root's ring reports a new predecessor: the root check hands the role over.
    net.call(old, |m, now| m.handle_ring_change(now));
    assert!(!net[old].is_root(t));

    assert!(net.events_of(old).any(|e| *e == ScribeEvent::Detached { topic: t, cause: Detach::RootMoved }));
    // Its JOIN made its successor (outside its subtree) a forwarder, whose own JOIN walked on
    // through the old root's subtree, passed through (its path names the old root) to the
    // newcomer: no cycle.
    let p0 = net.pos(0);
    assert!(net[newcomer].is_root(t));
    assert_eq!(net[old].parent(t), Some(p0));
    assert_eq!(net[p0].parent(t), Some(newcomer));
    assert_eq!(net[net.pos(1)].stats().joins_passed, 1);
    assert_eq!(net.machines().map(|(_, m)| m.stats().cycles).sum::<u64>(), 0);
    let v = net.tree(net.pos(1), t).unwrap();
    assert_eq!(v.root, Some(RingId::of(&newcomer)));
    assert_eq!(v.depth(), 8);
    net.advance(Duration::from_secs(5));
    assert_eq!(net.tree(net.pos(1), t).unwrap(), v, "stable");
}

#[test]
fn a_node_that_becomes_responsible_takes_the_root_role_and_leaves_its_parent() {
    let mut net = RingNet::new(8);
    let t = net.topic_at(7);
    net.subscribe(net.pos(0), t);
    assert_eq!(net.path_to_root(net.pos(0), t).len(), 8);
    // Position 7 leaves the ring: position 0 (its successor) is now responsible.
    let gone = net.pos(7);
    net.ring_mut().remove(gone);
    let p0 = net.pos(0);
    net.call(p0, |m, now| m.handle_ring_change(now));
    assert!(net[p0].is_root(t));
    // Its Leave to its old parent collapsed the chain of forwarders above it.
    for k in 1..7 {
        assert_eq!(net[net.pos(k)].entries(), 0, "forwarder {k} pruned");
    }
    assert_eq!(net[gone].entries(), 0);
    // A later subscriber's JOIN reaches the new root.
    let s = net.pos(3);
    net.subscribe(s, t);
    assert_eq!(*net.path_to_root(s, t).last().unwrap(), p0);
}

#[test]
fn a_join_retry_avoids_the_hop_that_did_not_answer() {
    let mut net = RingNet::new(8);
    let t = net.topic_at(7);
    let (s, silent, after) = (net.pos(1), net.pos(2), net.pos(3));
    // The next hop has crashed, but the ring still routes to it.
    net.silence(silent);
    net.subscribe(s, t);
    assert!(!net[s].is_attached(t));
    net.advance(Duration::from_secs(2));
    assert_eq!(net[s].parent(t), Some(after), "the retry went to the next-best hop");
    assert_eq!(net[s].stats().join_retries, 1);
    // A node that loses its parent avoids it on its first JOIN.
    net.restore(silent);
    let (p3, p4) = (net.pos(3), net.pos(4));
    assert_eq!(net[p3].parent(t), Some(p4));
    net.call(p3, |m, now| m.handle_member_down(now, p4));
    assert_eq!(net[p3].parent(t), Some(net.pos(5)));
}

/// True if a JoinAck to `who` was sent but not delivered.
fn lost_once(net: &RingNet, who: NodeId) -> bool {
    let acks = net.delivered().filter(|s| s.to == who && matches!(s.msg, ScribeMessage::JoinAck { .. }));
    acks.count() == 0 && net[net.pos(2)].tree(net.topic_at(7)).is_some_and(|v| v.children.contains(&who))
}

#[test]
fn a_lost_join_ack_is_replaced_by_the_adopters_next_heartbeat() {
    let mut net = RingNet::new(8);
    let t = net.topic_at(7);
    let s = net.pos(1);
    // The subscriber's first JoinAck is lost.
    let mut lost = false;
    net.set_drop(move |_, to, m| {
        let hit = !lost && to == s && matches!(m, ScribeMessage::JoinAck { .. });
        lost |= hit;
        hit
    });
    net.subscribe(s, t);
    assert!(lost_once(&net, s));
    // Its adopter's heartbeat (pushed at once when the adopter itself attached) stood in.
    assert_eq!(net[s].parent(t), Some(net.pos(2)), "the heartbeat stood in for the ack");
    assert_eq!(net[s].stats().adopted_by_heartbeat, 1);
    assert_eq!(net[s].stats().join_retries, 0);
    assert_eq!(net.tree(s, t).unwrap().depth(), 6);
    // A heartbeat from a node the JOIN never went to is ignored, not answered.
    let other = net.topic_at(5);
    net.set_drop(|_, _, m| is_join(m));
    net.subscribe(s, other);
    let stranger = net.pos(4);
    let sent = net.delivered().count();
    net.inject(
        stranger,
        s,
        ScribeMessage::Heartbeat { topic: other, root: None, ancestors: vec![net.ring_id(4)] },
    );
    assert_eq!(net[s].parent(other), None);
    assert_eq!(net.delivered().count(), sent, "no reply");
    assert!(net[s].stats().stale >= 1);
}

#[test]
fn join_retries_back_off_up_to_the_cap() {
    let mut net = RingNet::new(8);
    let t = net.topic_at(7);
    let s = net.pos(1);
    net.set_drop(|_, _, m| is_join(m));
    net.subscribe(s, t);
    net.advance(Duration::from_secs(100));
    // Sent at 0, then after 2, 4, 8, 16, 30, 30, 30 s: at 2, 6, 14, 30, 60, 90.
    assert_eq!(net[s].stats().joins_sent, 7);
    assert_eq!(net[s].stats().join_retries, 6);
    assert!(net.tree(s, t).unwrap().joining);
}

#[test]
fn a_publish_floods_the_tree_once_per_node_and_reaches_members_only() {
    let (mut net, t) = chain();
    net.subscribe(net.pos(3), t);
    net.subscribe(net.pos(5), t);
    let p = net.pos(3);
    let d = data(p, t, 1);
    net.call(p, |m, now| m.publish(now, d.clone())).unwrap();
    let got: Vec<NodeId> = net
        .events()
        .iter()
        .filter(|(_, e)| matches!(e, ScribeEvent::FirstPhase(x) if x.id == d.id))
        .map(|(w, _)| *w)
        .collect();
    let mut members = vec![net.pos(1), net.pos(5)];
    members.sort();
    assert_eq!(got, members, "members other than the publisher");
    // Every tree node got exactly one copy; nothing went back to where it came from.
    let copies: Vec<NodeId> =
        net.delivered().filter(|s| matches!(s.msg, ScribeMessage::TreeData { .. })).map(|s| s.to).collect();
    let mut sorted = copies.clone();
    sorted.sort();
    let mut expect: Vec<NodeId> = [1, 2, 4, 5, 6, 7].iter().map(|&k| net.pos(k)).collect();
    expect.sort();
    assert_eq!(sorted, expect);
    // A copy arriving again is dropped by the dedupe.
    net.inject(net.pos(2), net.pos(1), ScribeMessage::TreeData { data: d.clone() });
    assert_eq!(net[net.pos(1)].stats().duplicates, 1);
    assert_eq!(net.events().iter().filter(|(_, e)| matches!(e, ScribeEvent::FirstPhase(_))).count(), 2);
}

#[test]
fn a_publish_from_off_the_tree_is_routed_until_it_meets_the_tree() {
    let mut net = RingNet::new(8);
    let t = net.topic_at(7);
    net.subscribe(net.pos(5), t);
    let p = net.pos(2);
    net.call(p, |m, now| m.publish(now, data(p, t, 1))).unwrap();
    let routed = net.count(|m| matches!(m, ScribeMessage::Publish { .. }));
    assert_eq!(routed, 3, "2 → 3 → 4 → 5: the first node with an entry floods it");
    assert!(net.events_of(net.pos(5)).any(|e| matches!(e, ScribeEvent::FirstPhase(_))));
    assert_eq!(net.count(|m| matches!(m, ScribeMessage::TreeData { .. })), 2, "5 → 6 → 7");
    // No subscriber at all: the message ends at the root's place, counted.
    let lonely = net.topic_at(2);
    net.call(p, |m, now| m.publish(now, data(p, lonely, 1))).unwrap();
    assert_eq!(net[net.pos(2)].stats().no_tree, 1, "this node is the root's place itself");
    let far = net.topic_at(4);
    net.call(p, |m, now| m.publish(now, data(p, far, 1))).unwrap();
    assert_eq!(net[net.pos(4)].stats().no_tree, 1);
}

#[test]
fn a_detached_subtree_still_sends_its_publishes_toward_the_root() {
    let (mut net, t) = chain();
    net.subscribe(net.pos(6), t);
    net.advance(Duration::from_secs(2));
    // Position 4 is cut off: its JOINs are lost, it keeps its subtree (1, 2, 3).
    let p4 = net.pos(4);
    net.set_drop(|_, _, m| is_join(m));
    let p5 = net.pos(5);
    net.call(p4, |m, now| m.handle_member_down(now, p5));
    assert!(!net[p4].is_attached(t));
    let s = net.pos(1);
    net.call(s, |m, now| m.publish(now, data(s, t, 1))).unwrap();
    // Flooded up to 4, then routed as a publish to 5 (which still has an entry) and on to 6.
    assert!(net.events_of(net.pos(6)).any(|e| matches!(e, ScribeEvent::FirstPhase(_))));
    assert!(net.count(|m| matches!(m, ScribeMessage::Publish { .. })) >= 1);
}

#[test]
fn malformed_and_stale_input_is_counted_and_changes_nothing() {
    let (mut net, t) = chain();
    net.advance(Duration::from_secs(2));
    let (s, p2, p5) = (net.pos(1), net.pos(2), net.pos(5));
    let snapshot = |net: &RingNet| (0..8).map(|k| net.tree(net.pos(k), t)).collect::<Vec<_>>();
    let before = snapshot(&net);
    let malformed = |net: &RingNet| -> u64 { net.machines().map(|(_, m)| m.stats().malformed).sum() };
    let bad: Vec<(NodeId, NodeId, ScribeMessage)> = vec![
        // A child whose RingId is not its NodeId's.
        (
            p5,
            p2,
            ScribeMessage::Join {
                topic: t,
                child: RingNode { id: p5, ring: RingId(7) },
                path: vec![RingId(7)],
            },
        ),
        // An empty path, and one over the bound.
        (p5, p2, ScribeMessage::Join { topic: t, child: RingNode::of(p5), path: vec![] }),
        (
            p5,
            p2,
            ScribeMessage::Join { topic: t, child: RingNode::of(p5), path: vec![RingId(1); PATH_MAX + 1] },
        ),
        // An ack whose ancestors do not end with its sender.
        (p5, s, ScribeMessage::JoinAck { topic: t, root: None, ancestors: vec![RingId(9)] }),
        (p5, s, ScribeMessage::JoinAck { topic: t, root: None, ancestors: vec![] }),
        // A heartbeat from the parent whose list does not end with the parent.
        (p2, s, ScribeMessage::Heartbeat { topic: t, root: None, ancestors: vec![RingId(9)] }),
        (p2, s, ScribeMessage::Heartbeat { topic: t, root: None, ancestors: vec![RingId(9); PATH_MAX + 1] }),
        // Data that has seq 0, or too large a payload; a ttl over the bound.
        (p2, s, ScribeMessage::TreeData { data: data(p2, t, 0) }),
        (
            p2,
            s,
            ScribeMessage::TreeData {
                data: Data { payload: Bytes::from(vec![0u8; (1 << 20) + 1]), ..data(p2, t, 2) },
            },
        ),
        (p5, p2, ScribeMessage::Publish { data: data(p5, t, 3), ttl: TTL_MAX + 1 }),
        // A message claiming to be from the receiver itself.
        (s, s, ScribeMessage::Leave { topic: t }),
    ];
    let n = bad.len() as u64;
    for (from, to, msg) in bad {
        net.inject(from, to, msg);
    }
    assert_eq!(malformed(&net), n);
    assert_eq!(snapshot(&net), before);
    assert!(net.events().iter().all(|(_, e)| !matches!(e, ScribeEvent::FirstPhase(_))));
    // Stale but well-formed: a Leave from a stranger, an ack for a topic with no tree.
    let other = net.topic_at(3);
    net.inject(p5, s, ScribeMessage::Leave { topic: t });
    net.inject(p5, s, ScribeMessage::HeartbeatAck { topic: other });
    assert_eq!(snapshot(&net), before);
    assert!(net[s].stats().stale >= 2);
    // A JOIN that comes back to a node on its path is a routing loop.
    let looped = ScribeMessage::Join {
        topic: t,
        child: RingNode::of(p5),
        path: vec![RingId::of(&p5), RingId::of(&p2)],
    };
    net.inject(p5, p2, looped);
    assert_eq!(net[p2].stats().routing_loops, 1);
    assert_eq!(snapshot(&net), before);
}

#[test]
fn entries_and_children_are_bounded() {
    let mut net = RingNet::new(4);
    let target = net.pos(1);
    net.add(
        target,
        Scribe::new(
            target,
            Arc::new(ScribeConfig {
                max_topics: 2,
                max_children: 1,
                timing: Timing::Sync,
                ..ScribeConfig::default()
            }),
            &Seed::derive(1, "x", 0, 0),
            Instant::ZERO,
        ),
    );
    let from = net.pos(0);
    for k in 0..4u64 {
        let child = id(500 + k);
        let join = ScribeMessage::Join {
            topic: TopicId(k),
            child: RingNode::of(child),
            path: vec![RingId::of(&child)],
        };
        net.inject(from, target, join);
    }
    assert_eq!(net[target].entries(), 2);
    assert_eq!(net[target].stats().over_limit, 2);
    let child = id(600);
    let join =
        ScribeMessage::Join { topic: TopicId(0), child: RingNode::of(child), path: vec![RingId::of(&child)] };
    net.inject(from, target, join);
    assert_eq!(net[target].children_total(), 2, "one child per entry");
    let err = net.call(target, |m, now| m.subscribe(now, TopicId(99)));
    assert_eq!(err, Err(ScribeError::TooManyTopics(2)));
}

/// Issue 12, case 3. Before the fix one peer's JOINs could create every one of `max_topics`
/// forwarder entries (and then local subscriptions were refused), and children were bounded
/// per entry only. Now each peer's JOINs create at most `max_forwarders_per_peer` entries (a
/// local subscription takes one over), and children are capped over all entries.
#[test]
fn one_peer_creates_a_bounded_share_of_the_forwarders_and_children_are_capped_in_all() {
    let mut net = RingNet::new(4);
    let target = net.pos(1);
    let cfg = ScribeConfig {
        max_forwarders_per_peer: 3,
        max_children_total: 5,
        timing: Timing::Sync,
        ..ScribeConfig::default()
    };
    net.add(target, Scribe::new(target, Arc::new(cfg), &Seed::derive(1, "x", 0, 0), Instant::ZERO));
    let join = |k: u64, child: NodeId| ScribeMessage::Join {
        topic: TopicId(k),
        child: RingNode::of(child),
        path: vec![RingId::of(&child)],
    };
    let (p0, p2) = (net.pos(0), net.pos(2));
    for k in 0..10u64 {
        net.inject(p0, target, join(k, id(500 + k)));
    }
    assert_eq!(net[target].entries(), 3);
    assert_eq!(net[target].stats().over_limit, 7);
    // A local subscriber takes an entry over: the peer may create one more.
    net.call(target, |m, now| m.subscribe(now, TopicId(0))).expect("room");
    net.inject(p0, target, join(20, id(520)));
    assert_eq!(net[target].entries(), 4);
    // Another peer has its own share; children stop at 5 over all entries.
    for k in 30..33u64 {
        net.inject(p2, target, join(k, id(500 + k)));
    }
    assert_eq!(net[target].children_total(), 5);
    assert!(net[target].state_bytes() > 0);
}

#[test]
fn messages_round_trip_and_heartbeats_fit_a_datagram() {
    let t = TopicId(42);
    let msgs = vec![
        ScribeMessage::Join { topic: t, child: RingNode::of(id(1)), path: vec![RingId(1), RingId(u64::MAX)] },
        ScribeMessage::JoinAck { topic: t, root: Some(RingId(5)), ancestors: vec![RingId(5), RingId(6)] },
        ScribeMessage::Leave { topic: t },
        ScribeMessage::Publish { data: data(id(1), t, 9), ttl: 64 },
        ScribeMessage::TreeData { data: data(id(1), t, 10) },
        ScribeMessage::Heartbeat { topic: t, root: None, ancestors: vec![RingId(u64::MAX); PATH_MAX] },
        ScribeMessage::HeartbeatAck { topic: t },
    ];
    for m in msgs {
        let bytes = wire::encode(&m, DATAGRAM_BUDGET).expect("every control message fits a datagram");
        assert_eq!(wire::decode::<ScribeMessage>(&bytes, DATAGRAM_BUDGET).unwrap(), m);
    }
    let join =
        ScribeMessage::Join { topic: t, child: RingNode::of(id(1)), path: vec![RingId(u64::MAX); PATH_MAX] };
    assert!(wire::encode(&join, DATAGRAM_BUDGET).is_ok());
    // Tree data over the budget travels on a stream.
    let mut net = RingNet::new(3);
    let t = net.topic_at(2);
    net.subscribe(net.pos(0), t);
    let big = Data { payload: Bytes::from(vec![1u8; 2_000]), ..data(net.pos(0), t, 1) };
    let p = net.pos(0);
    let routes = net.ring.borrow().at(p);
    let m = &mut net[p];
    m.handle_routes(Instant::ZERO, routes);
    m.publish(Instant::ZERO, big.clone()).unwrap();
    let tx = m.poll_transmit().unwrap();
    assert_eq!(tx.reliability, Reliability::Stream);
    assert!(wire::encode(&tx.msg, DEFAULT_FRAME_LIMIT).is_ok());
}

#[test]
fn config_validation_names_the_bad_setting() {
    assert_eq!(ScribeConfig::default().validate(), Ok(()));
    let bad = |c: ScribeConfig| c.validate().unwrap_err();
    let d = ScribeConfig::default;
    assert_eq!(
        bad(ScribeConfig { heartbeat_interval: Duration::ZERO, ..d() }),
        ConfigError::Zero("heartbeat_interval")
    );
    assert_eq!(bad(ScribeConfig { max_depth: 65, ..d() }), ConfigError::OutOfRange("max_depth", 2, 64));
    assert_eq!(bad(ScribeConfig { publish_ttl: 65, ..d() }), ConfigError::OutOfRange("publish_ttl", 1, 64));
    assert_eq!(
        bad(ScribeConfig { join_timeout_max: Duration::from_secs(1), ..d() }),
        ConfigError::Order("join_timeout_max", "join_timeout")
    );
    let c = ScribeConfig::default();
    assert_eq!(c.join_wait(0), Duration::from_secs(2));
    assert_eq!(c.join_wait(3), Duration::from_secs(16));
    assert_eq!(c.join_wait(40), Duration::from_secs(30));
}

#[test]
fn over_a_real_chord_ring_the_root_is_the_topic_successor() {
    let ids: Vec<NodeId> = (1..=32).map(id).collect();
    let snap = RingSnapshot::new(ids.iter().copied());
    let cfg = Arc::new(ChordConfig::default());
    let mut rings: BTreeMap<NodeId, Chord> = BTreeMap::new();
    let mut net: Net<Scribe> = Net::new();
    for &n in &ids {
        let seed = Seed::derive(5, "node", 0, n.prefix_u64());
        let mut c = Chord::new(n, cfg.clone(), &seed, Instant::ZERO);
        c.join_from_members(Instant::ZERO, &snap).unwrap();
        rings.insert(n, c);
        net.add(n, Scribe::new(n, config(), &seed, Instant::ZERO));
    }
    // Every node routes over its own (converged) Chord tables.
    net.set_before_input(move |who, m, now| m.handle_routes(now, Arc::new(rings[&who].routes())));
    let t = TopicId::of("news");
    let members: Vec<NodeId> = ids.iter().copied().step_by(3).collect();
    for &s in &members {
        net.call(s, |m, now| m.subscribe(now, t)).unwrap();
    }
    assert!(net.sent().iter().all(|s| s.delivered), "every message went to a node of the ring");
    let root = snap.successor(topic_key(t)).unwrap().id;
    assert!(net[root].is_root(t));
    assert_eq!(net.machines().filter(|(_, m)| m.is_root(t)).count(), 1);
    for &s in &members {
        // Every member's parent chain ends at the root, no longer than the ring route.
        let mut at = s;
        let mut hops = 0;
        while let Some(p) = net[at].parent(t) {
            at = p;
            hops += 1;
            assert!(hops <= 10);
        }
        assert_eq!(at, root, "member {s}");
    }
}

#[test]
fn chord_next_hop_avoiding_falls_back_to_the_next_best_preceding_node() {
    let ids: Vec<NodeId> = (1..=64).map(id).collect();
    let snap = RingSnapshot::new(ids.iter().copied());
    let me = snap.nodes()[0];
    let mut c =
        Chord::new(me.id, Arc::new(ChordConfig::default()), &Seed::derive(9, "n", 0, 0), Instant::ZERO);
    c.join_from_members(Instant::ZERO, &snap).unwrap();
    // A key half the ring away: the best hop is a finger, the next best another node before
    // the key, never past it.
    let key = RingId(me.ring.0.wrapping_add(1 << 63).wrapping_sub(1));
    let r = c.routes();
    let best = r.next_hop(key).unwrap();
    let second = r.next_hop_avoiding(key, &[best]).unwrap();
    assert_ne!(second, best);
    assert!(RingId::of(&second).in_open(me.ring, key), "does not overshoot the key");
    assert_eq!(r.next_hop_avoiding(key, &[]), Some(best));
    // A key the successor is responsible for has no alternative.
    let succ = c.successor().unwrap();
    assert_eq!(r.next_hop(succ.ring), Some(succ.id));
    assert_eq!(r.next_hop_avoiding(succ.ring, &[succ.id]), None);
}
