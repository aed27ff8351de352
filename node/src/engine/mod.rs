//! The Engine: one node's composition of every protocol machine, still without any I/O. It
//! builds without the daemon's runtime (no tokio, quinn, axum or rustls), so the simulator and
//! any embedder depend on it alone.
//!
//! It is itself a [`Machine`] whose messages are **encoded frames**: the runtime feeds it the
//! bytes a peer sent and sends the bytes it produces, and the simulator's `cluster`
//! experiment drives thousands of Engines the same way, so the same decoding, routing and
//! composition run in both.
//!
//! # Parts and how they feed each other
//!
//! | field | machine | role | fed by |
//! |---|---|---|---|
//! | `swim` | [`Swim`] | membership, failure detection, the member table (each member's name and subscribed topics) | frames; join/leave/subscribe |
//! | `multicast` | [`Multicast`]: [`Chord`], [`Scribe`], [`Pbcast`] | ring routing, topic trees (the first phase of every publish), repair, history, per-origin FIFO delivery, gaps | frames; member events; publishes; rumor and anti-entropy data; heads |
//! | `anti_entropy` | [`AntiEntropy`] | history catch-up (`Pull`), a new subscriber's heads (`Heads`), catch-up after an outage | pbcast's requests; every stored entry |
//! | `rumor_topics` | [`RumorMonger`] | rumor mongering for `gossip`-mode topics (names starting with the gossip prefix) | publishes on such topics |
//! | `rumor_queries` | [`RumorMonger`] | query announcements | aggregation's `Announce` |
//! | `aggregation` | [`Aggregation`] | aggregation queries | values, queries, announcements, member deaths |
//!
//! After every input the Engine **pumps**: it drains each machine in a fixed order (swim,
//! multicast, anti-entropy, rumors, aggregation), encodes transmits into frames, and routes
//! events to the machines that consume them, until nothing moves. Everything is ordered
//! (`BTreeMap`, sorted views), so one seed gives one run. Timers follow the idiom of
//! [`hearsay_protocols::machine#timers`], the parts being the timer kinds.
//!
//! # A message's representations
//!
//! From the publisher's API to a subscriber's API a message takes these forms, each for a
//! reason:
//!
//! 1. the application's [`AppMessage`](crate::message::AppMessage) (headers and body), encoded
//!    by the agent into the payload `Bytes`: the machines never look inside;
//! 2. pbcast's [`Data`] (id, publish time, payload), stamped by [`Pbcast::publish`]: what every
//!    machine carries (a Scribe `TreeData`, a pbcast `Data`/`Retransmit`/`Repair`, an
//!    anti-entropy [`Entry`](hearsay_protocols::anti_entropy::Entry), a rumor's payload);
//! 3. the frame `Bytes` on the wire: version, [`Protocol`](hearsay_protocols::Protocol) byte,
//!    postcard body;
//! 4. pbcast's [`Delivery`] (the data plus when and how this node got it), handed up
//!    unchanged as [`EngineEvent::Delivered`];
//! 5. the agent's subscriber line (JSON), decoded from the payload once per delivery.
//!
//! # Stream origins and restarts
//!
//! A message id is (origin, topic, seq), seq counting from 1 per origin. A node that
//! restarts would count from 1 again and subscribers, whose cursors are past those seqs, would
//! silently drop its new messages as duplicates. So the origin of a node's streams is not its
//! NodeId but an **origin id per process life**: the first 24 bytes of the NodeId and an
//! 8-byte epoch chosen at start (wall-clock milliseconds in the daemon, the restart count in
//! the simulator). A restart opens new streams; the old ones simply end. Origins still name
//! their node: [`Engine::node_of_origin`] maps them back by the shared prefix.

mod commands;
mod compose;
mod config;
mod frames;
pub mod limits;
pub mod multicast;
mod notices;
mod persist;
mod views;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use hearsay_overlay::chord::{Chord, RingSnapshot};
use hearsay_overlay::scribe::Scribe;
use hearsay_overlay::swim::{Addr, Meta, Profile, State, Swim, SwimEvent};
use hearsay_protocols::aggregate::{AggEvent, Aggregation, Query, QueryId};
use hearsay_protocols::anti_entropy::{AeEvent, AeMode, AntiEntropy, Entry, EntryCheck};
use hearsay_protocols::auth::Authenticator;
use hearsay_protocols::pbcast::{Data, Delivery, MsgId, PbEvent, Pbcast, Via};
use hearsay_protocols::rumor::{RumorEvent, RumorId, RumorMessage, RumorMonger};
use hearsay_protocols::wire::WireMessage;
use hearsay_protocols::{Earliest, Instant, Machine, NodeId, Seed, StreamId, TopicId, Transmit};

pub use self::commands::CommandError;
pub use self::config::{ConfigError, EngineConfig};
use self::frames::Inbound;
pub use self::frames::{ChannelRumor, DecodeErrors, RumorChannel, Traffic};
use self::multicast::{Multicast, MulticastEvent, MulticastMessage};
pub use self::notices::{MemberChange, Notice, TreeChange};
pub use self::persist::{Persist, Restored, SubscribeFrom};
pub use self::views::{MemberView, RingView, TopicView};

/// What the Engine tells its host.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineEvent {
    /// A message for the local subscribers of its topic, in per-origin FIFO order, at most
    /// once; its `via` says how it first reached this node. The origin is a stream origin
    /// (see the module docs).
    Delivered(Delivery),
    /// Messages `first..=last` of `origin` on `topic` can no longer be had.
    Gap {
        /// The topic.
        topic: TopicId,
        /// The stream origin.
        origin: NodeId,
        /// First missing seq.
        first: u64,
        /// Last missing seq.
        last: u64,
    },
    /// A query this node started has an answer.
    Answered {
        /// The query.
        qid: QueryId,
        /// The estimate; `None` when no node has the attribute.
        value: Option<f64>,
        /// Rounds the querier took.
        rounds: u32,
        /// False when the round cap came first.
        converged: bool,
        /// Members in view when it answered (self included).
        nodes: usize,
    },
    /// A member changed state (as this node sees it).
    Member {
        /// The member.
        node: NodeId,
        /// Its new state.
        state: State,
        /// Its incarnation.
        incarnation: u64,
    },
    /// The first seed answered: this node is part of the cluster.
    Joined,
    /// No seed answered; SWIM retries by itself.
    JoinFailed,
    /// Our departure has been announced.
    LeaveDone,
    /// Something for the operator's event stream (member and tree changes, see
    /// [`Notice`]).
    Notice(Notice),
    /// Keep this durably (see [`persist`](self#durability)): emitted before the event that
    /// reports the same message.
    Persist(Persist),
}

/// Counters of the Engine itself (each machine keeps its own too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Frames by protocol.
    pub traffic: Traffic,
    /// Frames that did not decode.
    pub decode_errors: DecodeErrors,
    /// Messages the Engine could not encode (a bug if ever non-zero).
    pub encode_failures: u64,
    /// Deliveries by path, indexed like [`Via::ALL`]: local, first phase, repair,
    /// anti-entropy.
    pub delivered: [u64; 4],
    /// Gap events, and the messages they cover.
    pub gaps: (u64, u64),
    /// Anti-entropy exchanges started to catch up with a member that was unreachable.
    pub catch_ups: u64,
    /// Amplifying requests not answered over their per-peer rate, by
    /// [`limits::Amplifier`] index ([`limits`]).
    pub replies_limited: [u64; 3],
}

/// Most members waiting for a catch-up exchange; more recoveries at once (a healed partition)
/// are left to the periodic exchange and to the epidemic spread among those caught up.
pub const CATCH_UP_QUEUE: usize = 8;

/// Catch-up exchanges a topic subscribed with [`SubscribeFrom::All`] or
/// [`SubscribeFrom::Resume`] runs with its members as they appear: a few members' histories
/// cover what one of them may lack; the periodic exchange does the rest.
pub const CATCH_UP_EXCHANGES: u32 = 3;

#[derive(Clone, Debug, Default)]
struct TopicState {
    name: Option<String>,
    /// Local subscriptions (the API may hold several for one topic).
    subscribers: usize,
    /// This node published on it (so it takes part in repair as a source, §4.1).
    published: bool,
}

/// What a restart gave back for one topic: its streams' heads and recent messages.
type Kept = (Vec<(NodeId, u64)>, Vec<Data>);

/// The Engine's timer kinds: its parts, in the order simultaneous ones are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Swim,
    Multicast,
    AntiEntropy,
    RumorTopics,
    RumorQueries,
    Aggregation,
}

/// One node's machines, composed. Drive it as described in [`hearsay_protocols::machine`].
pub struct Engine {
    id: NodeId,
    origin: NodeId,
    name: String,
    config: Arc<EngineConfig>,
    swim: Swim,
    multicast: Multicast,
    anti_entropy: AntiEntropy,
    rumor_topics: RumorMonger,
    rumor_queries: RumorMonger,
    aggregation: Aggregation,
    topics: BTreeMap<TopicId, TopicState>,
    /// Members advertising each topic (live ones only), from SWIM meta.
    topic_members: BTreeMap<TopicId, BTreeSet<NodeId>>,
    /// Each live member's state and profile as last reported: what it advertises, to update
    /// `topic_members` on change, and what the event stream compares against (`notices`).
    advertised: BTreeMap<NodeId, (State, hearsay_overlay::swim::SharedProfile)>,
    /// Our own queries in flight.
    my_queries: BTreeSet<QueryId>,
    /// The tags this node advertises (issue 15).
    tags: hearsay_protocols::tags::Tags,
    /// Members seen suspect, dead or left: when one is alive again (a refutation, a healed
    /// partition, a restart), what either side published meanwhile may have outlived
    /// pbcast's repair window, so it is caught up by anti-entropy with that member.
    unreachable: BTreeSet<NodeId>,
    /// Members to run an anti-entropy exchange with, one at a time, at most
    /// [`CATCH_UP_QUEUE`].
    catch_up: VecDeque<NodeId>,
    /// Topics that fetch history from their members (subscribed from all, or resumed), with
    /// the catch-up exchanges they may still start.
    catch_up_topics: BTreeMap<TopicId, u32>,
    /// What a restart gave back for topics not subscribed yet: their heads and messages.
    restored: BTreeMap<TopicId, Kept>,
    /// This node's own messages its host gave back at start, per topic: kept for
    /// anti-entropy once the topic is subscribed again (pbcast got them at once).
    restored_own: BTreeMap<TopicId, Vec<Data>>,
    joined_ring: bool,
    out: VecDeque<Transmit<Bytes>>,
    events: VecDeque<EngineEvent>,
    stats: EngineStats,
    /// Per-peer rates of the requests that earn large answers.
    reply_limits: limits::ReplyLimits,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

/// The origin id of a process life (module docs).
pub fn origin_id(node: &NodeId, epoch: u64) -> NodeId {
    let mut b = *node.as_bytes();
    b[24..].copy_from_slice(&epoch.to_be_bytes());
    NodeId::from_bytes(b)
}

impl Engine {
    /// A node named `name`, reachable at `addr`, whose streams carry `epoch` (module docs). Its
    /// id is `auth`'s, which signs what only this node may say (its SWIM `Alive`).
    pub fn new(
        auth: Arc<dyn Authenticator>,
        name: &str,
        addr: Addr,
        epoch: u64,
        config: Arc<EngineConfig>,
        seed: &Seed,
        now: Instant,
    ) -> Self {
        let id = auth.id();
        let origin = origin_id(&id, epoch);
        let meta = Meta::new(Vec::new()).unwrap_or_default().with_name(name);
        let swim = Swim::new(auth.clone(), Profile { addr, meta }, config.swim.clone(), seed, now);
        let multicast = Multicast::new(id, origin, auth.clone(), &config.multicast(), seed, now);
        let mut anti_entropy = AntiEntropy::new(id, config.ae.clone(), seed, now);
        // An entry a peer sends is kept only if its seal is its origin's signature.
        let checker = auth.clone();
        anti_entropy
            .set_check(now, EntryCheck(Arc::new(move |e: &Entry| sealed(e).verify(checker.as_ref()))));
        let mut rumor_topics = RumorMonger::new(id, config.rumor_topics.clone(), &seed.child("topics"), now);
        rumor_topics.set_scope(now, Some(Vec::new()));
        let rumor_queries = RumorMonger::new(id, config.rumor_queries.clone(), &seed.child("queries"), now);
        let aggregation = Aggregation::new(id, config.agg.clone(), seed, now);
        let mut e = Engine {
            id,
            origin,
            name: name.to_string(),
            config,
            swim,
            multicast,
            anti_entropy,
            rumor_topics,
            rumor_queries,
            aggregation,
            topics: BTreeMap::new(),
            topic_members: BTreeMap::new(),
            advertised: BTreeMap::new(),
            my_queries: BTreeSet::new(),
            tags: hearsay_protocols::tags::Tags::default(),
            unreachable: BTreeSet::new(),
            catch_up: VecDeque::new(),
            catch_up_topics: BTreeMap::new(),
            restored: BTreeMap::new(),
            restored_own: BTreeMap::new(),
            joined_ring: false,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: EngineStats::default(),
            reply_limits: limits::ReplyLimits::default(),
        };
        // Alone until joined: the ring is just us.
        let _ = e.multicast.create(now);
        e.pump(now);
        e
    }

    /// A node that starts in a converged cluster of `members` (all alive, incarnation 0): the
    /// simulator's starting point, where joining 10^3 nodes through one seed would only measure
    /// the join.
    #[allow(clippy::too_many_arguments)]
    pub fn converged(
        auth: Arc<dyn Authenticator>,
        name: &str,
        addr: Addr,
        epoch: u64,
        config: Arc<EngineConfig>,
        seed: &Seed,
        now: Instant,
        members: &[NodeId],
    ) -> Self {
        let id = auth.id();
        let mut e = Engine::new(auth.clone(), name, addr.clone(), epoch, config.clone(), seed, now);
        let others: Vec<(NodeId, hearsay_overlay::swim::SharedProfile)> = members
            .iter()
            .filter(|m| **m != id)
            .map(|m| (*m, hearsay_overlay::swim::SharedProfile::default()))
            .collect();
        let meta = Meta::new(Vec::new()).unwrap_or_default().with_name(name);
        e.swim = Swim::with_members(auth, Profile { addr, meta }, config.swim.clone(), seed, now, &others);
        let _ = e.multicast.join_from_members(now, &RingSnapshot::new(members.iter().copied()));
        e.joined_ring = true;
        let everyone = e.swim.peers();
        e.aggregation.handle_peers(now, everyone.clone());
        e.rumor_queries.handle_peers(now, everyone);
        e.pump(now);
        e
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The origin id of this process life's streams.
    pub fn origin(&self) -> NodeId {
        self.origin
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Subscriptions and publishes the trees refused (over their bounds); repair still serves
    /// them.
    pub fn tree_refusals(&self) -> u64 {
        self.multicast.tree_refusals()
    }

    /// The membership machine (read-only: metrics, views).
    pub fn swim(&self) -> &Swim {
        &self.swim
    }

    /// The multicast stack: ring, trees and pbcast (read-only).
    pub fn multicast(&self) -> &Multicast {
        &self.multicast
    }

    /// The ring (read-only).
    pub fn chord(&self) -> &Chord {
        self.multicast.chord()
    }

    /// The topic trees (read-only).
    pub fn scribe(&self) -> &Scribe {
        self.multicast.scribe()
    }

    /// The repair machine (read-only).
    pub fn pbcast(&self) -> &Pbcast {
        self.multicast.pbcast()
    }

    /// The aggregation machine (read-only).
    pub fn aggregation(&self) -> &Aggregation {
        &self.aggregation
    }

    /// The anti-entropy machine (read-only).
    pub fn anti_entropy(&self) -> &AntiEntropy {
        &self.anti_entropy
    }

    /// The rumor mongers (read-only): `gossip`-mode topics, then query announcements.
    pub fn rumors(&self) -> [&RumorMonger; 2] {
        [&self.rumor_topics, &self.rumor_queries]
    }

    /// Bytes of state the machines account for themselves, each part capped: SWIM's member
    /// table, broadcast queue and relays; pbcast's held messages and streams; anti-entropy's
    /// store, staged entries and awaited deltas; both rumor mongers' payloads and remembered
    /// rumors; aggregation's queries; Scribe's tree entries. Not the process's resident size:
    /// the Chord ring's fixed-size tables and the Engine's own maps are not in it.
    pub fn state_bytes(&self) -> usize {
        let [topics, queries] = self.rumors();
        [
            self.swim.state_bytes(),
            self.pbcast().state_bytes(),
            self.anti_entropy.state_bytes(),
            topics.state_bytes(),
            queries.state_bytes(),
            self.aggregation.state_bytes(),
            self.scribe().state_bytes(),
        ]
        .into_iter()
        .fold(0, usize::saturating_add)
    }

    /// The address a member advertised, if any.
    pub fn addr_of(&self, id: &NodeId) -> Option<Addr> {
        self.swim.addr_of(id)
    }

    /// The node whose process life `origin` names, if it is in the member table.
    pub fn node_of_origin(&self, origin: &NodeId) -> Option<NodeId> {
        let prefix = &origin.as_bytes()[..24];
        self.swim.members().iter().find(|m| &m.id.as_bytes()[..24] == prefix).map(|m| m.id)
    }

    /// The name of a topic id, if this node knows it.
    pub fn topic_name(&self, topic: TopicId) -> Option<&str> {
        self.topics.get(&topic).and_then(|t| t.name.as_deref())
    }

    // ---- the pump ----------------------------------------------------------------------

    /// Drain every machine, encode transmits, route events, until nothing moves.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            moved |= self.drain_swim(now);
            moved |= self.drain_multicast(now);
            moved |= self.drain_anti_entropy(now);
            moved |= self.drain_rumors(now);
            moved |= self.drain_aggregation(now);
            if !moved {
                break;
            }
        }
    }

    fn drain_swim(&mut self, now: Instant) -> bool {
        let limit = self.config.frame_limit;
        let mut moved = send_all(|| self.swim.poll_transmit(), limit, &mut self.stats, &mut self.out);
        while let Some(e) = self.swim.poll_event() {
            moved = true;
            match e {
                SwimEvent::Member(ev) => self.on_member(now, ev),
                SwimEvent::JoinCompleted { .. } => {
                    if !self.joined_ring {
                        let live: Vec<NodeId> =
                            self.swim.members().iter().filter(|m| m.state.is_live()).map(|m| m.id).collect();
                        let _ = self.multicast.join_from_members(now, &RingSnapshot::new(live));
                        self.joined_ring = true;
                    }
                    self.events.push_back(EngineEvent::Joined);
                }
                SwimEvent::JoinFailed => self.events.push_back(EngineEvent::JoinFailed),
                SwimEvent::LeaveDone => self.events.push_back(EngineEvent::LeaveDone),
                _ => {}
            }
        }
        moved
    }

    fn drain_multicast(&mut self, now: Instant) -> bool {
        let limit = self.config.frame_limit;
        let mut moved = false;
        while let Some(t) = self.multicast.poll_transmit() {
            moved = true;
            let to = t.to;
            let rel = t.reliability;
            match t.msg {
                MulticastMessage::Ring(m) => send(to, rel, &m, limit, &mut self.stats, &mut self.out),
                MulticastMessage::Tree(m) => send(to, rel, &m, limit, &mut self.stats, &mut self.out),
                MulticastMessage::Pbcast(m) => send(to, rel, &m, limit, &mut self.stats, &mut self.out),
            }
        }
        moved |= self.multicast.take_moved();
        while let Some(e) = self.multicast.poll_event() {
            let e = match e {
                MulticastEvent::Pbcast(e) => e,
                MulticastEvent::Tree(t) => {
                    self.notice_tree(now, &t);
                    continue;
                }
            };
            moved = true;
            match e {
                PbEvent::Deliver(d) => {
                    if let Some(slot) = Via::ALL.iter().position(|v| *v == d.via) {
                        self.stats.delivered[slot] += 1;
                    }
                    let data = Data {
                        id: d.id,
                        published_at: d.published_at,
                        payload: d.payload.clone(),
                        seal: d.seal,
                    };
                    self.keep_for_catch_up(now, &data);
                    let ours = d.via == Via::Local;
                    if !ours {
                        self.events.push_back(EngineEvent::Persist(Persist::Message { data, own: false }));
                    }
                    if !ours || self.topics.get(&d.id.topic).is_some_and(|t| t.subscribers > 0) {
                        // Our own message goes to our own subscribers only if there are any.
                        self.events.push_back(EngineEvent::Delivered(d));
                    }
                }
                PbEvent::Gap { topic, origin, first, last } => {
                    self.stats.gaps.0 = self.stats.gaps.0.saturating_add(1);
                    self.stats.gaps.1 =
                        self.stats.gaps.1.saturating_add(last.saturating_sub(first).saturating_add(1));
                    self.events.push_back(EngineEvent::Persist(Persist::Gap { topic, origin, first, last }));
                    self.events.push_back(EngineEvent::Gap { topic, origin, first, last });
                }
                PbEvent::HeadsWanted { topic, peer } => {
                    if self.anti_entropy.ask_heads(now, topic, peer).is_none() {
                        // Anti-entropy busy with another exchange: no heads for now.
                        self.multicast.handle_heads(now, topic, None);
                    }
                }
                PbEvent::PullWanted { topic: _ } => {
                    let _ = self.anti_entropy.start_exchange(now, AeMode::Pull, None);
                }
            }
        }
        moved
    }

    fn drain_anti_entropy(&mut self, now: Instant) -> bool {
        let limit = self.config.frame_limit;
        let mut moved = send_all(|| self.anti_entropy.poll_transmit(), limit, &mut self.stats, &mut self.out);
        while let Some(e) = self.anti_entropy.poll_event() {
            moved = true;
            match e {
                AeEvent::Received { entry, .. } => {
                    self.multicast.handle_data(now, sealed(&entry), Via::AntiEntropy);
                }
                AeEvent::Heads { topic, summaries, proofs, .. } => {
                    let heads = summaries.as_deref().map(|s| (s, proofs.as_slice()));
                    self.multicast.handle_heads(now, topic, heads);
                }
                AeEvent::ExchangeAborted { .. } | AeEvent::ExchangeCompleted { .. } => {}
            }
        }
        // Catch up with a member that was unreachable, when anti-entropy is free.
        while let Some(&peer) = self.catch_up.front() {
            if !self.swim.member(&peer).is_some_and(|m| m.state.is_live()) {
                self.catch_up.pop_front();
                continue;
            }
            if self.anti_entropy.start_exchange(now, AeMode::PushPull, Some(peer)).is_some() {
                self.catch_up.pop_front();
                self.stats.catch_ups += 1;
                moved = true;
            }
            break;
        }
        moved
    }

    fn drain_rumors(&mut self, now: Instant) -> bool {
        let limit = self.config.frame_limit;
        let mut moved = send_all(
            || self.rumor_topics.poll_transmit().map(|t| on_channel(RumorChannel::Topics, t)),
            limit,
            &mut self.stats,
            &mut self.out,
        );
        moved |= send_all(
            || self.rumor_queries.poll_transmit().map(|t| on_channel(RumorChannel::Queries, t)),
            limit,
            &mut self.stats,
            &mut self.out,
        );
        while let Some(e) = self.rumor_topics.poll_event() {
            moved = true;
            if let RumorEvent::Delivered { id: RumorId::Message { stream, seq }, payload, .. } = e {
                // The rumor carries the sealed message (pbcast checks the seal).
                if let Ok(s) = postcard::from_bytes::<SealedPayload>(&payload) {
                    let id = MsgId { origin: stream.origin, topic: stream.topic, seq };
                    let published_at = Instant::from_micros(s.published_at);
                    let data = Data { id, published_at, payload: s.payload, seal: s.seal };
                    self.multicast.handle_data(now, data, Via::FirstPhase);
                }
            }
        }
        while let Some(e) = self.rumor_queries.poll_event() {
            moved = true;
            if let RumorEvent::Delivered { id: RumorId::Query { .. }, payload, .. } = e {
                if let Ok(query) = postcard::from_bytes::<Query>(&payload) {
                    let _ = self.aggregation.handle_query(now, query);
                }
            }
        }
        moved
    }

    fn drain_aggregation(&mut self, now: Instant) -> bool {
        let limit = self.config.frame_limit;
        let mut moved = send_all(|| self.aggregation.poll_transmit(), limit, &mut self.stats, &mut self.out);
        while let Some(e) = self.aggregation.poll_event() {
            moved = true;
            match e {
                AggEvent::Announce(query) => {
                    if let Ok(bytes) = postcard::to_allocvec(&query) {
                        let id = RumorId::Query { querier: query.qid.querier, counter: query.qid.counter };
                        self.rumor_queries.inject(now, id, Bytes::from(bytes));
                    }
                }
                AggEvent::Answered(r) if self.my_queries.remove(&r.qid) => {
                    self.events.push_back(EngineEvent::Answered {
                        qid: r.qid,
                        value: r.value,
                        rounds: r.rounds,
                        converged: r.converged,
                        nodes: self.swim.peers().len() + 1,
                    });
                }
                _ => {}
            }
        }
        moved
    }

    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let mut e = Earliest::new();
        e.offer(self.swim.poll_timeout(), Timer::Swim);
        e.offer(self.multicast.poll_timeout(), Timer::Multicast);
        e.offer(self.anti_entropy.poll_timeout(), Timer::AntiEntropy);
        e.offer(self.rumor_topics.poll_timeout(), Timer::RumorTopics);
        e.offer(self.rumor_queries.poll_timeout(), Timer::RumorQueries);
        e.offer(self.aggregation.poll_timeout(), Timer::Aggregation);
        e.get()
    }
}

/// The kind of amplifying request `msg` is, if it is one (see [`limits`]).
fn amplifier(msg: &Inbound) -> Option<limits::Amplifier> {
    use hearsay_overlay::swim::SwimMessage;
    use hearsay_protocols::anti_entropy::AeMessage;
    match msg {
        Inbound::AntiEntropy(AeMessage::Syn { .. }) => Some(limits::Amplifier::Syn),
        Inbound::Rumor(ChannelRumor { msg: RumorMessage::Pull, .. })
        | Inbound::Rumor(ChannelRumor { msg: RumorMessage::Rumors { pull: true, .. }, .. }) => {
            Some(limits::Amplifier::Pull)
        }
        Inbound::Swim(
            SwimMessage::PushPull { reply: false, .. } | SwimMessage::PushPullDigest { reply: false, .. },
        ) => Some(limits::Amplifier::PushPull),
        _ => None,
    }
}

impl Machine for Engine {
    type Message = Bytes;
    type Event = EngineEvent;

    fn handle_message(&mut self, now: Instant, from: NodeId, frame: Bytes) {
        let limit = self.config.frame_limit;
        let Some(msg) = frames::decode(&frame, limit, &mut self.stats.decode_errors, &mut self.stats.traffic)
        else {
            return;
        };
        if let Some(kind) = amplifier(&msg) {
            if !self.reply_limits.allow(now, from, kind) {
                self.stats.replies_limited = self.reply_limits.dropped;
                return;
            }
        }
        match msg {
            Inbound::Swim(m) => self.swim.handle_message(now, from, m),
            Inbound::Multicast(m) => self.multicast.handle_message(now, from, m),
            Inbound::AntiEntropy(m) => self.anti_entropy.handle_message(now, from, m),
            Inbound::Rumor(ChannelRumor { channel: RumorChannel::Topics, msg }) => {
                self.rumor_topics.handle_message(now, from, msg)
            }
            Inbound::Rumor(ChannelRumor { channel: RumorChannel::Queries, msg }) => {
                self.rumor_queries.handle_message(now, from, msg)
            }
            Inbound::Aggregation(m) => self.aggregation.handle_message(now, from, m),
        }
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.next_timer() {
            if at > now {
                break;
            }
            match timer {
                Timer::Swim => self.swim.handle_timeout(now),
                Timer::Multicast => self.multicast.handle_timeout(now),
                Timer::AntiEntropy => self.anti_entropy.handle_timeout(now),
                Timer::RumorTopics => self.rumor_topics.handle_timeout(now),
                Timer::RumorQueries => self.rumor_queries.handle_timeout(now),
                Timer::Aggregation => self.aggregation.handle_timeout(now),
            }
        }
        self.pump(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit<Bytes>> {
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(at, _)| at)
    }
}

/// A message as a rumor carries it for a `gossip`-mode topic: what its id does not say.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct SealedPayload {
    pub(crate) published_at: u64,
    pub(crate) seal: hearsay_protocols::auth::Seal,
    pub(crate) payload: Bytes,
}

/// An anti-entropy entry as the message it is.
fn sealed(e: &Entry) -> Data {
    let id = MsgId { origin: e.stream.origin, topic: e.stream.topic, seq: e.seq };
    Data { id, published_at: e.published_at, payload: e.payload.clone(), seal: e.seal }
}

/// A stream id of one of our own streams.
pub fn own_stream(engine: &Engine, topic: TopicId) -> StreamId {
    StreamId { topic, origin: engine.origin }
}

/// A rumor transmit of one of the Engine's two rumor-mongering instances, as it goes on the wire.
fn on_channel(channel: RumorChannel, t: Transmit<RumorMessage>) -> Transmit<ChannelRumor> {
    Transmit { to: t.to, reliability: t.reliability, msg: ChannelRumor { channel, msg: t.msg } }
}

/// Encode one message and queue it on `out`, counting its bytes under its protocol (and encode
/// failures, a bug if ever non-zero).
fn send<M: WireMessage>(
    to: NodeId,
    reliability: hearsay_protocols::Reliability,
    msg: &M,
    frame_limit: usize,
    stats: &mut EngineStats,
    out: &mut VecDeque<Transmit<Bytes>>,
) {
    match frames::encode(msg, frame_limit) {
        Ok(bytes) => {
            stats.traffic.count_sent(M::KIND, bytes.len());
            out.push_back(Transmit { to, reliability, msg: bytes });
        }
        Err(_) => stats.encode_failures += 1,
    }
}

/// [`send`] every transmit `next` yields. True if there was any.
fn send_all<M: WireMessage>(
    mut next: impl FnMut() -> Option<Transmit<M>>,
    frame_limit: usize,
    stats: &mut EngineStats,
    out: &mut VecDeque<Transmit<Bytes>>,
) -> bool {
    let mut moved = false;
    while let Some(t) = next() {
        moved = true;
        send(t.to, t.reliability, &t.msg, frame_limit, stats, out);
    }
    moved
}

#[cfg(test)]
mod tests;
