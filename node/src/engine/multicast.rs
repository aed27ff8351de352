//! The multicast stack of one node: the Chord ring (PROTOCOLS.md §7), Scribe's topic trees as
//! the first phase (§8), and pbcast's repair, history and per-origin FIFO delivery behind them
//! (§4, §8.9). The Engine composes it with membership, anti-entropy, rumor mongering and
//! aggregation; the simulator's `scribe` experiment drives it alone, so both run this one
//! wiring of the three machines.
//!
//! # Wiring
//!
//! | from | to | what |
//! |---|---|---|
//! | ring, after any input it had | trees | a copy of its routing state ([`Scribe::handle_routes`]), before the trees' next input |
//! | ring: `SuccessorChanged`, `PredecessorChanged` | trees | the root check ([`Scribe::handle_ring_change`]) |
//! | trees: `FirstPhase(data)` | pbcast | [`Pbcast::handle_data`] with `Via::FirstPhase` (and reported as a [`MulticastEvent::Tree`]) |
//! | host: a member Alive / Dead or Left | ring, trees | [`Multicast::handle_member_up`], [`Multicast::handle_member_down`] |
//! | host: publish | pbcast, then trees | pbcast stamps and keeps it ([`Multicast::publish`]), the tree carries it ([`Multicast::send_down_tree`]) |
//!
//! # Driving it
//!
//! A [`Machine`] whose messages are the three parts' messages ([`MulticastMessage`]). The
//! parts are drained lazily in the fixed order ring, trees, pbcast: `poll_transmit` yields the
//! ring's transmits, then routes the ring's events, then yields the trees' transmits, routes
//! the trees' events, then yields pbcast's transmits; `poll_event` yields tree events, then
//! pbcast's. Routing at poll time uses the instant of the last input. A host that calls back
//! into the stack while handling an event (the Engine answering `HeadsWanted`) sees the
//! effects come out in the same order as if it had driven the three machines itself. Timers:
//! the kinds are the parts, ring before trees before pbcast on equal deadlines.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use hearsay_overlay::chord::{
    Chord, ChordConfig, ChordError, ChordEvent, ChordMessage, RingNode, RingSnapshot,
};
use hearsay_overlay::scribe::{Scribe, ScribeConfig, ScribeEvent, ScribeMessage};
use hearsay_protocols::auth::{Authenticator, Proof};
use hearsay_protocols::pbcast::{Data, PbConfig, PbEvent, PbMessage, Pbcast, PublishError, Start, Via};
use hearsay_protocols::{Duration, Earliest, Instant, Machine, NodeId, PeerView, Seed, TopicId, Transmit};

/// The settings of the three parts.
#[derive(Clone, Debug)]
pub struct MulticastConfig {
    /// The ring.
    pub chord: Arc<ChordConfig>,
    /// The topic trees.
    pub scribe: Arc<ScribeConfig>,
    /// Repair and delivery.
    pub pbcast: Arc<PbConfig>,
}

/// A message of one of the parts.
#[derive(Clone, Debug, PartialEq)]
pub enum MulticastMessage {
    /// Ring maintenance and lookups.
    Ring(ChordMessage),
    /// Topic trees.
    Tree(ScribeMessage),
    /// pbcast data, digests, solicitations, retransmissions.
    Pbcast(PbMessage),
}

/// What the stack tells its host.
#[derive(Clone, Debug, PartialEq)]
pub enum MulticastEvent {
    /// A tree event. First-phase copies have already been handed to pbcast; they are reported
    /// too, for hosts that time the tree.
    Tree(ScribeEvent),
    /// Deliveries, gaps, and pbcast's requests for anti-entropy (`HeadsWanted`, `PullWanted`).
    Pbcast(PbEvent),
}

/// Why a publish was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MulticastError {
    /// pbcast refused it (payload over `max_payload`).
    #[error(transparent)]
    Publish(#[from] PublishError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Ring,
    Trees,
    Pbcast,
}

/// The stack's timer kinds: its parts, in the order simultaneous ones are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Ring,
    Trees,
    Pbcast,
}

/// Ring + trees + pbcast at one node. Drive it as described in the [module docs](self).
#[derive(Debug)]
pub struct Multicast {
    chord: Chord,
    scribe: Scribe,
    pbcast: Pbcast,
    /// The ring had an input since the trees last got its routes.
    routes_stale: bool,
    /// Where `poll_transmit` is in the drain order.
    stage: Stage,
    /// The instant of the last input (internal routing at poll time happens then).
    now: Instant,
    /// Something was routed inside the stack since [`Multicast::take_moved`].
    moved: bool,
    tree_events: VecDeque<ScribeEvent>,
    /// Tree refusals of subscriptions and publishes (over its bounds); repair still serves
    /// those topics among their members.
    tree_refusals: u64,
}

impl Multicast {
    /// A node `id` started at `now`, on no ring yet. Its pbcast streams carry `origin` (the
    /// Engine's origin per process life; the node id elsewhere).
    /// `auth` seals this node's messages and checks everyone's.
    pub fn new(
        id: NodeId,
        origin: NodeId,
        auth: Arc<dyn Authenticator>,
        config: &MulticastConfig,
        seed: &Seed,
        now: Instant,
    ) -> Self {
        Multicast {
            chord: Chord::new(id, config.chord.clone(), seed, now),
            scribe: Scribe::new(id, config.scribe.clone(), seed, now),
            pbcast: Pbcast::new(origin, auth, config.pbcast.clone(), seed, now),
            routes_stale: true,
            stage: Stage::Ring,
            now,
            moved: false,
            tree_events: VecDeque::new(),
            tree_refusals: 0,
        }
    }

    /// The ring (read-only).
    pub fn chord(&self) -> &Chord {
        &self.chord
    }

    /// The topic trees (read-only).
    pub fn scribe(&self) -> &Scribe {
        &self.scribe
    }

    /// Repair and delivery (read-only).
    pub fn pbcast(&self) -> &Pbcast {
        &self.pbcast
    }

    /// Subscriptions and publishes the trees refused (over their bounds).
    pub fn tree_refusals(&self) -> u64 {
        self.tree_refusals
    }

    /// True (once) if something was routed between the parts since the last call: the host's
    /// pump goes round once more.
    pub fn take_moved(&mut self) -> bool {
        std::mem::take(&mut self.moved)
    }

    // ---- commands --------------------------------------------------------------------------

    /// Start a ring of one.
    pub fn create(&mut self, now: Instant) -> Result<(), ChordError> {
        self.input(now);
        self.routes_stale = true;
        self.chord.create(now)
    }

    /// Join the ring from the member table (what SWIM's table gives the daemon, §7.6).
    pub fn join_from_members(&mut self, now: Instant, members: &RingSnapshot) -> Result<(), ChordError> {
        self.join_from_members_near(now, members, |_| None)
    }

    /// [`Multicast::join_from_members`] with proximity neighbour selection by `rtt`
    /// ([`Chord::join_from_members_near`]).
    pub fn join_from_members_near(
        &mut self,
        now: Instant,
        members: &RingSnapshot,
        rtt: impl Fn(&RingNode) -> Option<Duration>,
    ) -> Result<(), ChordError> {
        self.input(now);
        self.routes_stale = true;
        self.chord.join_from_members_near(now, members, rtt)
    }

    /// Leave the ring (the node is leaving the cluster).
    pub fn leave(&mut self, now: Instant) -> Result<(), ChordError> {
        self.input(now);
        self.routes_stale = true;
        self.chord.leave(now)
    }

    /// Subscribe to `topic`: become a pbcast member from `start`, then, with `tree`, join its
    /// tree (a topic whose first phase is rumor mongering has none). A tree over its bounds
    /// refuses (counted); repair among the members still serves the topic.
    pub fn subscribe(&mut self, now: Instant, topic: TopicId, start: Start, tree: bool) {
        self.input(now);
        self.pbcast.subscribe(now, topic, start);
        if tree {
            self.sync_routes(now);
            if self.scribe.subscribe(now, topic).is_err() {
                self.tree_refusals += 1;
            }
        }
    }

    /// Drop the subscription to `topic` (pbcast, then, with `tree`, the tree).
    pub fn unsubscribe(&mut self, now: Instant, topic: TopicId, tree: bool) {
        self.input(now);
        self.pbcast.unsubscribe(now, topic);
        if tree {
            self.scribe.unsubscribe(now, topic);
        }
    }

    /// Stamp `payload` as this node's next message on `topic` and keep it (pbcast); the
    /// first phase is the caller's: [`Multicast::send_down_tree`], or rumor mongering.
    pub fn publish(&mut self, now: Instant, topic: TopicId, payload: Bytes) -> Result<Data, MulticastError> {
        self.input(now);
        Ok(self.pbcast.publish(now, topic, payload)?)
    }

    /// The first phase of a message stamped here: into `data.id.topic`'s tree (§8.6). A tree
    /// refusal is counted; repair still spreads the message.
    pub fn send_down_tree(&mut self, now: Instant, data: Data) {
        self.input(now);
        self.sync_routes(now);
        if self.scribe.publish(now, data).is_err() {
            self.tree_refusals += 1;
        }
    }

    // ---- side inputs -----------------------------------------------------------------------

    /// The membership layer reports `id` Alive: the ring takes it in (§7.6).
    pub fn handle_member_up(&mut self, now: Instant, id: NodeId) {
        self.input(now);
        self.routes_stale = true;
        self.chord.handle_member_up(now, id);
    }

    /// The membership layer reports `id` Dead or Left: the ring drops it, the trees lose it as
    /// parent or child at once (§8.7).
    pub fn handle_member_down(&mut self, now: Instant, id: NodeId) {
        self.input(now);
        self.routes_stale = true;
        self.chord.handle_member_down(now, id);
        self.sync_routes(now);
        self.scribe.handle_member_down(now, id);
    }

    /// The members of `topic` pbcast draws partners from.
    pub fn handle_topic_peers(&mut self, now: Instant, topic: TopicId, peers: PeerView) {
        self.input(now);
        self.pbcast.handle_topic_peers(now, topic, peers);
    }

    /// A message obtained by another path (rumor mongering: `FirstPhase`; anti-entropy).
    pub fn handle_data(&mut self, now: Instant, data: Data, via: Via) {
        self.input(now);
        self.pbcast.handle_data(now, data, via);
    }

    /// What this node kept of `topic` before a restart (see pbcast's `handle_restored`).
    pub fn handle_restored(&mut self, now: Instant, topic: TopicId, own_last: u64, entries: Vec<Data>) {
        self.input(now);
        self.pbcast.handle_restored(now, topic, own_last, entries);
    }

    /// The outcome of the Heads exchange pbcast asked for (`None`: no heads): summaries and
    /// the proofs of their heads.
    pub fn handle_heads(
        &mut self,
        now: Instant,
        topic: TopicId,
        heads: Option<(&[hearsay_protocols::anti_entropy::StreamSummary], &[Proof])>,
    ) {
        self.input(now);
        self.pbcast.handle_heads(now, topic, heads);
    }

    // ---- plumbing --------------------------------------------------------------------------

    fn input(&mut self, now: Instant) {
        self.now = now;
    }

    /// Hand the trees the ring's routing state if the ring had an input since they last got it.
    fn sync_routes(&mut self, now: Instant) {
        if std::mem::take(&mut self.routes_stale) {
            self.scribe.handle_routes(now, Arc::new(self.chord.routes()));
        }
    }

    /// The ring's events: a successor or predecessor change runs the trees' root check.
    fn route_ring_events(&mut self) {
        let mut changed = false;
        while let Some(e) = self.chord.poll_event() {
            self.moved = true;
            changed |=
                matches!(e, ChordEvent::SuccessorChanged { .. } | ChordEvent::PredecessorChanged { .. });
        }
        if changed {
            let now = self.now;
            self.sync_routes(now);
            self.scribe.handle_ring_change(now);
        }
    }

    /// The trees' events: first-phase copies to pbcast; all reported to the host.
    fn route_tree_events(&mut self) {
        while let Some(e) = self.scribe.poll_event() {
            self.moved = true;
            if let ScribeEvent::FirstPhase(data) = &e {
                self.pbcast.handle_data(self.now, data.clone(), Via::FirstPhase);
            }
            self.tree_events.push_back(e);
        }
    }

    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let mut e = Earliest::new();
        e.offer(self.chord.poll_timeout(), Timer::Ring);
        e.offer(self.scribe.poll_timeout(), Timer::Trees);
        e.offer(self.pbcast.poll_timeout(), Timer::Pbcast);
        e.get()
    }
}

impl Machine for Multicast {
    type Message = MulticastMessage;
    type Event = MulticastEvent;

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: MulticastMessage) {
        self.input(now);
        match msg {
            MulticastMessage::Ring(m) => {
                self.routes_stale = true;
                self.chord.handle_message(now, from, m);
            }
            MulticastMessage::Tree(m) => {
                self.sync_routes(now);
                self.scribe.handle_message(now, from, m);
            }
            MulticastMessage::Pbcast(m) => self.pbcast.handle_message(now, from, m),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.input(now);
        while let Some((at, timer)) = self.next_timer() {
            if at > now {
                break;
            }
            match timer {
                Timer::Ring => {
                    self.routes_stale = true;
                    self.chord.handle_timeout(now);
                }
                Timer::Trees => {
                    self.sync_routes(now);
                    self.scribe.handle_timeout(now);
                }
                Timer::Pbcast => self.pbcast.handle_timeout(now),
            }
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit<MulticastMessage>> {
        loop {
            match self.stage {
                Stage::Ring => {
                    if let Some(t) = self.chord.poll_transmit() {
                        return Some(wrap(t, MulticastMessage::Ring));
                    }
                    self.route_ring_events();
                    self.stage = Stage::Trees;
                }
                Stage::Trees => {
                    if let Some(t) = self.scribe.poll_transmit() {
                        return Some(wrap(t, MulticastMessage::Tree));
                    }
                    self.route_tree_events();
                    self.stage = Stage::Pbcast;
                }
                Stage::Pbcast => {
                    if let Some(t) = self.pbcast.poll_transmit() {
                        return Some(wrap(t, MulticastMessage::Pbcast));
                    }
                    self.stage = Stage::Ring;
                    return None;
                }
            }
        }
    }

    fn poll_event(&mut self) -> Option<MulticastEvent> {
        if let Some(e) = self.tree_events.pop_front() {
            return Some(MulticastEvent::Tree(e));
        }
        if self.tree_events.capacity() > 0 {
            self.tree_events = VecDeque::new();
        }
        self.pbcast.poll_event().map(MulticastEvent::Pbcast)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(at, _)| at)
    }
}

fn wrap<M>(t: Transmit<M>, f: impl FnOnce(M) -> MulticastMessage) -> Transmit<MulticastMessage> {
    Transmit { to: t.to, reliability: t.reliability, msg: f(t.msg) }
}
