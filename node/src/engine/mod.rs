//! The Engine: one node's composition of every protocol machine, still without any I/O.
//!
//! It is itself a [`Machine`] whose messages are **encoded frames**: the runtime feeds it the
//! bytes a peer sent and sends the bytes it produces, and the simulator's `cluster`
//! experiment drives thousands of Engines the same way, so the same decoding, routing and
//! composition run in both.
//!
//! # Parts and how they feed each other
//!
//! | machine | role | fed by |
//! |---|---|---|
//! | `swim` | membership, failure detection, the member table (with each member's name and subscribed topics) | frames; join/leave/subscribe |
//! | `ring` | Chord routing | member events (`member_up`/`member_down`), first join |
//! | `trees` | Scribe topic trees: the first phase of every publish | subscribe/publish, ring changes, member events |
//! | `pbcast` | repair among topic members, history, per-origin FIFO delivery, gaps | first-phase data (tree or rumor), anti-entropy entries, topic member views |
//! | `ae` | anti-entropy: history catch-up (`Pull`) and new subscribers' heads (`Heads`) | pbcast's requests; every stored entry |
//! | `rumor_topics` | rumor mongering for `gossip`-mode topics (names starting with the gossip prefix) | publishes on such topics |
//! | `rumor_queries` | query announcements | aggregation's `Announce` |
//! | `agg` | aggregation queries | values, queries, announcements, member deaths |
//!
//! After every input the Engine **pumps**: it drains each machine in a fixed order, encodes
//! transmits into frames, and routes events to the machines that consume them, until nothing
//! moves. Everything is ordered (`BTreeMap`, sorted views), so one seed gives one run.
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

mod frames;
mod views;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use hearsay_overlay::chord::{Chord, ChordConfig, ChordEvent, RingSnapshot};
use hearsay_overlay::scribe::{Scribe, ScribeConfig, ScribeEvent};
use hearsay_overlay::swim::{Addr, Meta, Profile, State, Swim, SwimConfig, SwimEvent};
use hearsay_protocols::aggregate::{AggConfig, AggEvent, Aggregation, Func, Query, QueryId, QuerySpec};
use hearsay_protocols::anti_entropy::{AeConfig, AeEvent, AeMode, AntiEntropy, Entry};
use hearsay_protocols::pbcast::{Data, MsgId, PbConfig, PbEvent, Pbcast, Start, Via};
use hearsay_protocols::rumor::{RumorConfig, RumorEvent, RumorId, RumorMessage, RumorMonger};
use hearsay_protocols::wire::WireMessage;
use hearsay_protocols::{Instant, Machine, NodeId, PeerView, Seed, Seq, StreamId, TopicId, Transmit};

use self::frames::Inbound;
pub use self::frames::{ChannelRumor, DecodeErrors, Protocol, RumorChannel, Traffic};
pub use self::views::{MemberView, RingView, TopicView};

/// Settings of every machine of a node.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Membership and failure detection.
    pub swim: Arc<SwimConfig>,
    /// The ring.
    pub chord: Arc<ChordConfig>,
    /// The topic trees.
    pub scribe: Arc<ScribeConfig>,
    /// Repair and delivery.
    pub pbcast: Arc<PbConfig>,
    /// History catch-up.
    pub ae: Arc<AeConfig>,
    /// Rumor mongering for `gossip`-mode topics.
    pub rumor_topics: Arc<RumorConfig>,
    /// Rumor mongering for query announcements (push, feedback counter, k = 4: §5.1).
    pub rumor_queries: Arc<RumorConfig>,
    /// Aggregation.
    pub agg: Arc<AggConfig>,
    /// Topics whose name starts with this use rumor mongering instead of a tree.
    pub gossip_prefix: String,
    /// Largest frame accepted.
    pub frame_limit: usize,
}

impl EngineConfig {
    /// The daemon's defaults on top of a SWIM preset (`lan`, `wan` or `local`, after
    /// memberlist).
    pub fn with_swim(swim: SwimConfig) -> Self {
        let queries = RumorConfig { k: 4, ..RumorConfig::default() };
        EngineConfig {
            swim: Arc::new(swim),
            // One finger refresh per second, not per 250 ms: the daemon's ring learns members
            // from SWIM (member_up/down) and a full refresh still takes about log2 N ticks.
            // At 250 ms, fix_fingers lookups were a third of all frames of an idle N = 100
            // cluster (hearsay bench).
            chord: Arc::new(ChordConfig {
                fix_fingers_interval: hearsay_protocols::Duration::from_secs(1),
                ..ChordConfig::default()
            }),
            scribe: Arc::new(ScribeConfig::default()),
            pbcast: Arc::new(PbConfig::default()),
            ae: Arc::new(AeConfig::default()),
            rumor_topics: Arc::new(RumorConfig::default()),
            rumor_queries: Arc::new(queries),
            agg: Arc::new(AggConfig::default()),
            gossip_prefix: "gossip/".into(),
            frame_limit: hearsay_protocols::wire::DEFAULT_FRAME_LIMIT,
        }
    }

    /// memberlist's LAN preset and the daemon's defaults.
    pub fn lan() -> Self {
        Self::with_swim(SwimConfig::lan())
    }
}

/// What the Engine tells its host.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineEvent {
    /// A message for the local subscribers of `topic`, in per-origin FIFO order, at most once.
    Delivered {
        /// The topic.
        topic: TopicId,
        /// The stream origin (see the module docs).
        origin: NodeId,
        /// Its sequence number.
        seq: Seq,
        /// The payload as published.
        payload: Bytes,
        /// How it first reached this node.
        via: Via,
        /// When the origin published it (its clock; informational).
        published_at: Instant,
    },
    /// Messages `first..=last` of `origin` on `topic` can no longer be had.
    Gap {
        /// The topic.
        topic: TopicId,
        /// The stream origin.
        origin: NodeId,
        /// First missing seq.
        first: Seq,
        /// Last missing seq.
        last: Seq,
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
}

/// Why a local command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The payload is over the limit.
    #[error("{0}")]
    Publish(String),
    /// The value or attribute is not acceptable.
    #[error("{0}")]
    Value(String),
    /// The query could not start.
    #[error("{0}")]
    Query(String),
    /// More topics than a member can advertise.
    #[error("at most {0} topics can be subscribed at once")]
    TooManyTopics(usize),
    /// The node is leaving.
    #[error("the node is leaving the cluster")]
    Leaving,
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
    /// Subscriptions or publishes the tree refused (over its bounds); repair still serves them.
    pub tree_refusals: u64,
    /// Deliveries by path: local, first phase, repair, anti-entropy.
    pub delivered: [u64; 4],
    /// Gap events, and the messages they cover.
    pub gaps: (u64, u64),
    /// Anti-entropy exchanges started to catch up with a member that was unreachable.
    pub catch_ups: u64,
}

/// Most members waiting for a catch-up exchange; more recoveries at once (a healed partition)
/// are left to the periodic exchange and to the epidemic spread among those caught up.
pub const CATCH_UP_QUEUE: usize = 8;

#[derive(Clone, Debug, Default)]
struct TopicState {
    name: Option<String>,
    /// Local subscriptions (the API may hold several for one topic).
    subscribers: usize,
    /// This node published on it (so it takes part in repair as a source, §4.1).
    published: bool,
}

/// One node's machines, composed. Drive it as described in [`hearsay_protocols::machine`].
pub struct Engine {
    id: NodeId,
    origin: NodeId,
    name: String,
    config: Arc<EngineConfig>,
    swim: Swim,
    ring: Chord,
    trees: Scribe,
    pb: Pbcast,
    ae: AntiEntropy,
    rumor_topics: RumorMonger,
    rumor_queries: RumorMonger,
    agg: Aggregation,
    topics: BTreeMap<TopicId, TopicState>,
    /// Members advertising each topic (live ones only), from SWIM meta.
    topic_members: BTreeMap<TopicId, BTreeSet<NodeId>>,
    /// What each live member advertises, to update `topic_members` on change.
    advertised: BTreeMap<NodeId, Vec<TopicId>>,
    /// Our own queries in flight.
    my_queries: BTreeSet<QueryId>,
    /// Anti-entropy Heads exchanges in flight, by exchange id: the topic they are for.
    heads: BTreeMap<u64, TopicId>,
    /// Members seen suspect, dead or left: when one is alive again (a refutation, a healed
    /// partition, a restart), what either side published meanwhile may have outlived
    /// pbcast's repair window, so it is caught up by anti-entropy with that member.
    unreachable: BTreeSet<NodeId>,
    /// Members to run an anti-entropy exchange with, one at a time, at most
    /// [`CATCH_UP_QUEUE`].
    catch_up: VecDeque<NodeId>,
    joined_ring: bool,
    out: VecDeque<Transmit<Bytes>>,
    events: VecDeque<EngineEvent>,
    stats: EngineStats,
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
    /// A node named `name`, reachable at `addr`, whose streams carry `epoch` (module docs).
    pub fn new(
        id: NodeId,
        name: &str,
        addr: Addr,
        epoch: u64,
        config: Arc<EngineConfig>,
        seed: &Seed,
        now: Instant,
    ) -> Self {
        let origin = origin_id(&id, epoch);
        let meta = Meta::new(Vec::new()).unwrap_or_default().with_name(name);
        let swim = Swim::new(id, Profile { addr, meta }, config.swim.clone(), seed, now);
        let ring = Chord::new(id, config.chord.clone(), seed, now);
        let trees = Scribe::new(id, config.scribe.clone(), seed, now);
        let pb = Pbcast::new(origin, config.pbcast.clone(), seed, now);
        let ae = AntiEntropy::new(id, config.ae.clone(), seed, now);
        let mut rumor_topics = RumorMonger::new(id, config.rumor_topics.clone(), &seed.child("topics"), now);
        rumor_topics.set_scope(Some(Vec::new()));
        let rumor_queries = RumorMonger::new(id, config.rumor_queries.clone(), &seed.child("queries"), now);
        let agg = Aggregation::new(id, config.agg.clone(), seed, now);
        let mut e = Engine {
            id,
            origin,
            name: name.to_string(),
            config,
            swim,
            ring,
            trees,
            pb,
            ae,
            rumor_topics,
            rumor_queries,
            agg,
            topics: BTreeMap::new(),
            topic_members: BTreeMap::new(),
            advertised: BTreeMap::new(),
            my_queries: BTreeSet::new(),
            heads: BTreeMap::new(),
            unreachable: BTreeSet::new(),
            catch_up: VecDeque::new(),
            joined_ring: false,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: EngineStats::default(),
        };
        // Alone until joined: the ring is just us.
        let _ = e.ring.create(now);
        e.pump(now);
        e
    }

    /// A node that starts in a converged cluster of `members` (all alive, incarnation 0): the
    /// simulator's starting point, where joining 10^3 nodes through one seed would only measure
    /// the join.
    #[allow(clippy::too_many_arguments)]
    pub fn converged(
        id: NodeId,
        name: &str,
        addr: Addr,
        epoch: u64,
        config: Arc<EngineConfig>,
        seed: &Seed,
        now: Instant,
        members: &[NodeId],
    ) -> Self {
        let mut e = Engine::new(id, name, addr.clone(), epoch, config.clone(), seed, now);
        let others: Vec<(NodeId, hearsay_overlay::swim::SharedProfile)> = members
            .iter()
            .filter(|m| **m != id)
            .map(|m| (*m, hearsay_overlay::swim::SharedProfile::default()))
            .collect();
        let meta = Meta::new(Vec::new()).unwrap_or_default().with_name(name);
        e.swim = Swim::with_members(id, Profile { addr, meta }, config.swim.clone(), seed, now, &others);
        let _ = e.ring.join_from_members(now, &RingSnapshot::new(members.iter().copied()));
        e.joined_ring = true;
        let everyone = e.swim.peers();
        e.agg.set_peers(everyone.clone());
        e.rumor_queries.set_peers(everyone);
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

    /// The counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The membership machine (read-only: metrics, views).
    pub fn swim(&self) -> &Swim {
        &self.swim
    }

    /// The ring (read-only).
    pub fn ring(&self) -> &Chord {
        &self.ring
    }

    /// The repair machine (read-only).
    pub fn pbcast(&self) -> &Pbcast {
        &self.pb
    }

    /// The topic trees (read-only).
    pub fn trees(&self) -> &Scribe {
        &self.trees
    }

    /// The aggregation machine (read-only).
    pub fn aggregation(&self) -> &Aggregation {
        &self.agg
    }

    /// The anti-entropy machine (read-only).
    pub fn anti_entropy(&self) -> &AntiEntropy {
        &self.ae
    }

    /// The rumor mongers (read-only): `gossip`-mode topics, then query announcements.
    pub fn rumors(&self) -> [&RumorMonger; 2] {
        [&self.rumor_topics, &self.rumor_queries]
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

    fn is_gossip(&self, name: &str) -> bool {
        !self.config.gossip_prefix.is_empty() && name.starts_with(&self.config.gossip_prefix)
    }

    /// Join the cluster through these members (already reachable: the runtime resolved their
    /// addresses to NodeIds by connecting).
    pub fn join(&mut self, now: Instant, seeds: &[NodeId]) -> Result<(), CommandError> {
        self.swim.join(now, seeds.iter().copied()).map_err(|_| CommandError::Leaving)?;
        self.pump(now);
        Ok(())
    }

    /// Leave gracefully: announce it; [`EngineEvent::LeaveDone`] follows.
    pub fn leave(&mut self, now: Instant) {
        self.swim.leave(now);
        let _ = self.ring.leave(now);
        self.pump(now);
    }

    /// Add a local subscription to `name`.
    pub fn subscribe(&mut self, now: Instant, name: &str) -> Result<TopicId, CommandError> {
        let topic = TopicId::of(name);
        let gossip = self.is_gossip(name);
        let state = self.topics.entry(topic).or_default();
        state.name.get_or_insert_with(|| name.to_string());
        state.subscribers += 1;
        if state.subscribers == 1 {
            if let Err(e) = self.advertise() {
                if let Some(s) = self.topics.get_mut(&topic) {
                    s.subscribers -= 1;
                }
                return Err(e);
            }
            self.pb.subscribe(now, topic, Start::Heads);
            self.ae.subscribe(topic);
            if gossip {
                self.rumor_scope();
            } else if self.trees.subscribe(now, topic, &self.ring).is_err() {
                // Over the tree bound: the topic is still served by repair among members.
                self.stats.tree_refusals += 1;
            }
            self.refresh_views(&[topic]);
        }
        self.pump(now);
        Ok(topic)
    }

    /// Drop one local subscription to `name`; the last one leaves the topic.
    pub fn unsubscribe(&mut self, now: Instant, name: &str) {
        let topic = TopicId::of(name);
        let Some(state) = self.topics.get_mut(&topic) else { return };
        if state.subscribers == 0 {
            return;
        }
        state.subscribers -= 1;
        if state.subscribers == 0 {
            self.pb.unsubscribe(topic);
            self.ae.unsubscribe(topic);
            if self.is_gossip(name) {
                self.rumor_scope();
            } else {
                self.trees.unsubscribe(now, topic);
            }
            let _ = self.advertise();
            self.refresh_views(&[topic]);
        }
        self.pump(now);
    }

    /// Publish `payload` on topic `name`; returns the message id.
    pub fn publish(&mut self, now: Instant, name: &str, payload: Bytes) -> Result<MsgId, CommandError> {
        let topic = TopicId::of(name);
        let gossip = self.is_gossip(name);
        let state = self.topics.entry(topic).or_default();
        state.name.get_or_insert_with(|| name.to_string());
        let first_publish = !state.published;
        state.published = true;
        if first_publish {
            self.refresh_views(&[topic]);
        }
        let data = self.pb.publish(now, topic, payload).map_err(|e| CommandError::Publish(e.to_string()))?;
        self.keep_for_catch_up(&data);
        if gossip {
            let id = RumorId::Message { stream: data.id.stream(), seq: data.id.seq };
            self.rumor_topics.inject(now, id, data.payload.clone());
        } else if self.trees.publish(now, data.clone(), &self.ring).is_err() {
            self.stats.tree_refusals += 1;
        }
        self.pump(now);
        Ok(data.id)
    }

    /// Set this node's value of `attr` for aggregation queries.
    pub fn set_value(&mut self, attr: &str, value: f64) -> Result<(), CommandError> {
        self.agg.set_value(attr, value).map_err(|e| CommandError::Value(e.to_string()))
    }

    /// Start a query; [`EngineEvent::Answered`] reports the result.
    pub fn query(&mut self, now: Instant, func: Func, attr: &str) -> Result<QueryId, CommandError> {
        let spec = QuerySpec::new(func, attr);
        let q = self.agg.start_query(now, spec).map_err(|e| CommandError::Query(e.to_string()))?;
        self.my_queries.insert(q.qid);
        self.pump(now);
        Ok(q.qid)
    }

    // ---- composition -------------------------------------------------------------------

    /// Advertise our subscribed topics (and name) in the member table.
    fn advertise(&mut self) -> Result<(), CommandError> {
        let topics: Vec<TopicId> =
            self.topics.iter().filter(|(_, s)| s.subscribers > 0).map(|(t, _)| *t).collect();
        let max = hearsay_overlay::swim::META_TOPICS_MAX;
        let meta = Meta::new(topics).ok_or(CommandError::TooManyTopics(max))?.with_name(&self.name);
        self.swim.set_meta(meta).map_err(|_| CommandError::Leaving)
    }

    fn rumor_scope(&mut self) {
        let names: Vec<TopicId> = self
            .topics
            .iter()
            .filter(|(_, s)| s.subscribers > 0 && s.name.as_deref().is_some_and(|n| self.is_gossip(n)))
            .map(|(t, _)| *t)
            .collect();
        self.rumor_topics.set_scope(Some(names));
    }

    /// Everything this node stores can serve anti-entropy catch-up.
    fn keep_for_catch_up(&mut self, data: &Data) {
        if self.ae.topics().binary_search(&data.id.topic).is_ok() {
            self.ae.insert(Entry {
                stream: data.id.stream(),
                seq: data.id.seq,
                payload: data.payload.clone(),
            });
        }
    }

    /// Recompute the peer views that depend on topic membership: pbcast's per topic for
    /// `changed` topics we take part in, and the union views of anti-entropy and gossip rumors.
    fn refresh_views(&mut self, changed: &[TopicId]) {
        for topic in changed {
            let Some(state) = self.topics.get(topic) else { continue };
            if state.subscribers == 0 && !state.published {
                continue;
            }
            let view: PeerView = self
                .topic_members
                .get(topic)
                .map(|m| m.iter().copied().filter(|n| *n != self.id).collect())
                .unwrap_or_default();
            self.pb.set_topic_peers(*topic, view);
        }
        let mine: Vec<TopicId> =
            self.topics.iter().filter(|(_, s)| s.subscribers > 0 || s.published).map(|(t, _)| *t).collect();
        let mut union = BTreeSet::new();
        let mut gossip_union = BTreeSet::new();
        for t in &mine {
            if let Some(m) = self.topic_members.get(t) {
                union.extend(m.iter().copied());
                if self.topics.get(t).and_then(|s| s.name.as_deref()).is_some_and(|n| self.is_gossip(n)) {
                    gossip_union.extend(m.iter().copied());
                }
            }
        }
        union.remove(&self.id);
        gossip_union.remove(&self.id);
        self.ae.set_peers(union.into_iter().collect());
        self.rumor_topics.set_peers(gossip_union.into_iter().collect());
    }

    fn on_member(&mut self, now: Instant, ev: hearsay_overlay::swim::MemberEvent) {
        let live = ev.state.is_live();
        if ev.node != self.id {
            if live {
                self.ring.member_up(now, ev.node);
            } else {
                self.ring.member_down(now, ev.node);
                self.trees.member_down(now, ev.node, &self.ring);
                self.agg.member_gone(ev.node);
            }
        }
        let new_topics: Vec<TopicId> = if live { ev.profile.meta().topics().to_vec() } else { Vec::new() };
        if ev.node != self.id {
            if ev.state == State::Alive {
                let shares_a_topic = new_topics
                    .iter()
                    .any(|t| self.topics.get(t).is_some_and(|s| s.subscribers > 0 || s.published));
                if self.unreachable.remove(&ev.node)
                    && shares_a_topic
                    && self.catch_up.len() < CATCH_UP_QUEUE
                    && !self.catch_up.contains(&ev.node)
                {
                    self.catch_up.push_back(ev.node);
                }
            } else {
                self.unreachable.insert(ev.node);
            }
        }
        let old_topics = self.advertised.remove(&ev.node).unwrap_or_default();
        let mut changed: Vec<TopicId> = old_topics.iter().chain(new_topics.iter()).copied().collect();
        changed.sort_unstable();
        changed.dedup();
        for t in &old_topics {
            if let Some(set) = self.topic_members.get_mut(t) {
                set.remove(&ev.node);
                if set.is_empty() {
                    self.topic_members.remove(t);
                }
            }
        }
        for t in &new_topics {
            self.topic_members.entry(*t).or_default().insert(ev.node);
        }
        if live {
            self.advertised.insert(ev.node, new_topics);
        }
        if old_topics != self.advertised.get(&ev.node).cloned().unwrap_or_default() || !live {
            self.refresh_views(&changed);
        }
        let everyone = self.swim.peers();
        self.agg.set_peers(everyone.clone());
        self.rumor_queries.set_peers(everyone);
        self.events.push_back(EngineEvent::Member {
            node: ev.node,
            state: ev.state,
            incarnation: ev.incarnation,
        });
    }

    /// Drain every machine, encode transmits, route events, until nothing moves.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            moved |= self.drain_swim(now);
            moved |= self.drain_ring(now);
            moved |= self.drain_trees(now);
            moved |= self.drain_pbcast(now);
            moved |= self.drain_ae(now);
            moved |= self.drain_rumors(now);
            moved |= self.drain_agg(now);
            if !moved {
                break;
            }
        }
    }

    fn drain_swim(&mut self, now: Instant) -> bool {
        let mut moved = send_all(
            Protocol::Membership,
            || self.swim.poll_transmit(),
            self.config.frame_limit,
            &mut self.stats,
            &mut self.out,
        );
        while let Some(e) = self.swim.poll_event() {
            moved = true;
            match e {
                SwimEvent::Member(ev) => self.on_member(now, ev),
                SwimEvent::JoinCompleted { .. } => {
                    if !self.joined_ring {
                        let live: Vec<NodeId> =
                            self.swim.members().iter().filter(|m| m.state.is_live()).map(|m| m.id).collect();
                        let _ = self.ring.join_from_members(now, &RingSnapshot::new(live));
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

    fn drain_ring(&mut self, now: Instant) -> bool {
        let mut moved = send_all(
            Protocol::Ring,
            || self.ring.poll_transmit(),
            self.config.frame_limit,
            &mut self.stats,
            &mut self.out,
        );
        let mut changed = false;
        while let Some(e) = self.ring.poll_event() {
            moved = true;
            changed |=
                matches!(e, ChordEvent::SuccessorChanged { .. } | ChordEvent::PredecessorChanged { .. });
        }
        if changed {
            // Roots move with responsibility (PROTOCOLS.md §8.8).
            self.trees.ring_changed(now, &self.ring);
        }
        moved
    }

    fn drain_trees(&mut self, now: Instant) -> bool {
        let mut moved = send_all(
            Protocol::Tree,
            || self.trees.poll_transmit(),
            self.config.frame_limit,
            &mut self.stats,
            &mut self.out,
        );
        while let Some(e) = self.trees.poll_event() {
            moved = true;
            if let ScribeEvent::FirstPhase(data) = e {
                self.pb.handle_data(now, data);
            }
        }
        moved
    }

    fn drain_pbcast(&mut self, now: Instant) -> bool {
        let mut moved = send_all(
            Protocol::Pbcast,
            || self.pb.poll_transmit(),
            self.config.frame_limit,
            &mut self.stats,
            &mut self.out,
        );
        while let Some(e) = self.pb.poll_event() {
            moved = true;
            match e {
                PbEvent::Deliver(d) => {
                    let slot = match d.via {
                        Via::Local => 0,
                        Via::FirstPhase => 1,
                        Via::Repair => 2,
                        Via::AntiEntropy => 3,
                    };
                    self.stats.delivered[slot] += 1;
                    let data = Data {
                        id: d.id,
                        published_at: d.published_at,
                        payload: d.payload.clone(),
                        via: d.via,
                    };
                    self.keep_for_catch_up(&data);
                    if d.via != Via::Local {
                        self.events.push_back(EngineEvent::Delivered {
                            topic: d.id.topic,
                            origin: d.id.origin,
                            seq: d.id.seq,
                            payload: d.payload,
                            via: d.via,
                            published_at: d.published_at,
                        });
                    } else if self.topics.get(&d.id.topic).is_some_and(|t| t.subscribers > 0) {
                        // Our own message, to our own subscribers.
                        self.events.push_back(EngineEvent::Delivered {
                            topic: d.id.topic,
                            origin: d.id.origin,
                            seq: d.id.seq,
                            payload: d.payload,
                            via: d.via,
                            published_at: d.published_at,
                        });
                    }
                }
                PbEvent::Gap { topic, origin, first, last } => {
                    self.stats.gaps.0 += 1;
                    self.stats.gaps.1 += last.saturating_sub(first) + 1;
                    self.events.push_back(EngineEvent::Gap { topic, origin, first, last });
                }
                PbEvent::HeadsWanted { topic, peer } => {
                    match self.ae.start_exchange(now, AeMode::Heads, Some(peer)) {
                        Some(xid) => {
                            self.heads.insert(xid, topic);
                        }
                        // Anti-entropy busy with another exchange: no heads for now.
                        None => self.pb.heads_unavailable(now, topic),
                    }
                }
                PbEvent::PullWanted { topic: _ } => {
                    let _ = self.ae.start_exchange(now, AeMode::Pull, None);
                }
            }
        }
        moved
    }

    fn drain_ae(&mut self, now: Instant) -> bool {
        let mut moved = send_all(
            Protocol::AntiEntropy,
            || self.ae.poll_transmit(),
            self.config.frame_limit,
            &mut self.stats,
            &mut self.out,
        );
        while let Some(e) = self.ae.poll_event() {
            moved = true;
            match e {
                AeEvent::Received { entry, .. } => {
                    let id = MsgId { origin: entry.stream.origin, topic: entry.stream.topic, seq: entry.seq };
                    self.pb.handle_data(
                        now,
                        Data { id, published_at: now, payload: entry.payload, via: Via::AntiEntropy },
                    );
                }
                AeEvent::Heads { xid, summaries, .. } => {
                    if let Some(topic) = self.heads.remove(&xid) {
                        self.pb.handle_heads(now, topic, &summaries);
                    }
                }
                AeEvent::ExchangeAborted { xid, .. } => {
                    if let Some(topic) = self.heads.remove(&xid) {
                        self.pb.heads_unavailable(now, topic);
                    }
                }
                AeEvent::ExchangeCompleted { .. } => {}
            }
        }
        // Catch up with a member that was unreachable, when anti-entropy is free.
        while let Some(&peer) = self.catch_up.front() {
            if !self.swim.member(&peer).is_some_and(|m| m.state.is_live()) {
                self.catch_up.pop_front();
                continue;
            }
            if self.ae.start_exchange(now, AeMode::PushPull, Some(peer)).is_some() {
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
            Protocol::Rumor,
            || self.rumor_topics.poll_transmit().map(|t| on_channel(RumorChannel::Topics, t)),
            limit,
            &mut self.stats,
            &mut self.out,
        );
        moved |= send_all(
            Protocol::Rumor,
            || self.rumor_queries.poll_transmit().map(|t| on_channel(RumorChannel::Queries, t)),
            limit,
            &mut self.stats,
            &mut self.out,
        );
        while let Some(e) = self.rumor_topics.poll_event() {
            moved = true;
            if let RumorEvent::Delivered { id: RumorId::Message { stream, seq }, payload, .. } = e {
                let id = MsgId { origin: stream.origin, topic: stream.topic, seq };
                self.pb.handle_data(now, Data { id, published_at: now, payload, via: Via::FirstPhase });
            }
        }
        while let Some(e) = self.rumor_queries.poll_event() {
            moved = true;
            if let RumorEvent::Delivered { id: RumorId::Query { .. }, payload, .. } = e {
                if let Ok(query) = postcard::from_bytes::<Query>(&payload) {
                    let _ = self.agg.join(now, query);
                }
            }
        }
        moved
    }

    fn drain_agg(&mut self, now: Instant) -> bool {
        let mut moved = send_all(
            Protocol::Aggregation,
            || self.agg.poll_transmit(),
            self.config.frame_limit,
            &mut self.stats,
            &mut self.out,
        );
        while let Some(e) = self.agg.poll_event() {
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

    fn deadlines(&self) -> [Option<Instant>; 8] {
        [
            self.swim.poll_timeout(),
            self.ring.poll_timeout(),
            self.trees.poll_timeout(),
            self.pb.poll_timeout(),
            self.ae.poll_timeout(),
            self.rumor_topics.poll_timeout(),
            self.rumor_queries.poll_timeout(),
            self.agg.poll_timeout(),
        ]
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
        match msg {
            Inbound::Swim(m) => self.swim.handle_message(now, from, m),
            Inbound::Ring(m) => self.ring.handle_message(now, from, m),
            Inbound::Pbcast(m) => self.pb.handle_message(now, from, m),
            Inbound::AntiEntropy(m) => self.ae.handle_message(now, from, m),
            Inbound::Rumor(ChannelRumor { channel: RumorChannel::Topics, msg }) => {
                self.rumor_topics.handle_message(now, from, msg)
            }
            Inbound::Rumor(ChannelRumor { channel: RumorChannel::Queries, msg }) => {
                self.rumor_queries.handle_message(now, from, msg)
            }
            Inbound::Aggregation(m) => self.agg.handle_message(now, from, m),
            Inbound::Tree(m) => self.trees.handle_message(now, from, m, &self.ring),
        }
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        let [swim, ring, trees, pb, ae, rt, rq, agg] = self.deadlines();
        let due = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        if due(swim) {
            self.swim.handle_timeout(now);
        }
        if due(ring) {
            self.ring.handle_timeout(now);
        }
        if due(trees) {
            self.trees.handle_timeout(now, &self.ring);
        }
        if due(pb) {
            self.pb.handle_timeout(now);
        }
        if due(ae) {
            self.ae.handle_timeout(now);
        }
        if due(rt) {
            self.rumor_topics.handle_timeout(now);
        }
        if due(rq) {
            self.rumor_queries.handle_timeout(now);
        }
        if due(agg) {
            self.agg.handle_timeout(now);
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
        self.deadlines().into_iter().flatten().min()
    }
}

/// A stream id of one of our own streams.
pub fn own_stream(engine: &Engine, topic: TopicId) -> StreamId {
    StreamId { topic, origin: engine.origin }
}

/// A rumor transmit of one of the Engine's two rumor-mongering instances, as it goes on the wire.
fn on_channel(channel: RumorChannel, t: Transmit<RumorMessage>) -> Transmit<ChannelRumor> {
    Transmit { to: t.to, reliability: t.reliability, msg: ChannelRumor { channel, msg: t.msg } }
}

/// Encode every transmit `next` yields and queue it on `out`, counting bytes per protocol
/// (and encode failures, a bug if ever non-zero). True if there was any.
fn send_all<M: WireMessage>(
    p: Protocol,
    mut next: impl FnMut() -> Option<Transmit<M>>,
    frame_limit: usize,
    stats: &mut EngineStats,
    out: &mut VecDeque<Transmit<Bytes>>,
) -> bool {
    let mut moved = false;
    while let Some(t) = next() {
        moved = true;
        match frames::encode(&t.msg, frame_limit) {
            Ok(bytes) => {
                stats.traffic.count_sent(p, bytes.len());
                out.push_back(Transmit { to: t.to, reliability: t.reliability, msg: bytes });
            }
            Err(_) => stats.encode_failures += 1,
        }
    }
    moved
}

#[cfg(test)]
mod tests;
