//! Rumor mongering (Demers et al. 1987, §1.4 "Complex Epidemics"; PROTOCOLS.md §2).
//!
//! A node that learns a rumor becomes **infective** ("hot") and, at every tick of its round
//! timer, sends its hot rumors to `fanout` uniformly random other peers (push), asks them for
//! theirs (pull), or both in one exchange (push-pull). It loses interest in a rumor, and the
//! rumor becomes **removed** (known, no longer spread), by one of four rules: *feedback* (only
//! contacts whose recipient already knew the rumor count, which needs a reply) or *blind*
//! (every transmission counts), combined with *counter* (removed after k counting events; with
//! feedback, k *consecutive* ones: a useful contact resets the counter) or *coin* (removed with
//! probability 1/k at each counting event). The rules, and exactly when they are applied, are
//! those of PROTOCOLS.md §2.2; [`Staging`] selects the round-based or the continuous reading.
//!
//! Rumors are identified by a [`RumorId`]: a topic message's id (stream and seq) or an
//! aggregation query's id. hearsay spreads `gossip`-mode topics and query announcements this
//! way; pbcast and anti-entropy repair whatever the epidemic leaves behind.
//!
//! # Driving it
//!
//! The [`Machine`] contract (see [`crate::machine`]): after each input drain `poll_transmit`,
//! then `poll_event`, then read `poll_timeout`. Side input: [`RumorMonger::handle_peers`] (the
//! partner view changed). Commands: [`RumorMonger::inject`] starts a rumor here,
//! [`RumorMonger::set_scope`] restricts the topics this node accepts. Events:
//! [`RumorEvent::Delivered`] on the first receipt of a rumor, [`RumorEvent::Removed`] when this
//! node loses interest in one.
//!
//! # Departures from PROTOCOLS.md §2
//!
//! - **Feedback is matched to what was sent.** A `RumorFeedback` item counts only if this node
//!   sent that rumor to that peer and is still waiting for its answer; anything else is counted
//!   as unsolicited and changes nothing, so a peer cannot talk a node out of a rumor it never
//!   received. Answers are awaited until the end of the cycle under
//!   [`Staging::AtCycleStart`] (§2.2: only feedback that *has arrived* counts) and for two
//!   periods under [`Staging::Immediate`] \[H\].
//! - **Blind, continuous time, fanout > 1**: the rule is applied per contact, so a rumor that
//!   is removed after the first contact of a tick is not sent to the tick's later partners
//!   (§2.2 "per contact"; with fanout 1, as in every anchor, the question does not arise).
//! - **Bounds** \[H\]: at most `hot_max` rumors hot and `known_max` remembered at once; a new
//!   rumor beyond either is dropped and counted (`overflow`), without feedback. Removed rumors
//!   are forgotten `known_retention` periods after their removal (§2.4's 300 rounds), checked
//!   at this node's ticks.
//! - **An idle push node sleeps** \[H\]: in push mode a node with nothing hot or staged asks for
//!   no timer, and a rumor that arrives restarts its ticker at the next tick strictly after
//!   the arrival (the next cycle boundary in sync timing, keeping the phase in phased timing,
//!   a fresh exponential gap in Poisson timing, which is memoryless). The epidemic is the same
//!   process; the daemon and the simulator skip the wake-ups of nodes with nothing to say.
//! - **A push-pull split over several datagrams** asks for the partner's rumors in its first
//!   datagram only, so one exchange is answered once.
//! - **Small wire choices**: a pull that finds nothing hot gets no answer (§2.4 would send an
//!   empty `Rumors`); a rumor injected here is hot at once even under
//!   [`Staging::AtCycleStart`] (a local write, like anti-entropy's `insert`) and is not
//!   reported as `Delivered`; §2.3's `RumorPull` and `RumorFeedback` are the variants `Pull` and
//!   `Feedback` of [`RumorMessage`].
//! - **Topic scope** (§2.8): the machine does not know subscriptions; the host hands it the
//!   topics to accept with [`RumorMonger::set_scope`] (default: everything). A message rumor of
//!   another topic is neither stored nor delivered, and is acknowledged as known.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::{NodeId, Seq, StreamId, TopicId};
use crate::machine::{Machine, Outbox, Transmit};
use crate::peers::PeerView;
use crate::rng::{Rng, Seed};
use crate::time::{Duration, Instant};
use crate::timer::{Ticker, Timing};
use crate::wire::{DATAGRAM_BUDGET, Protocol, WireMessage};

/// Bytes of a `Rumors` datagram that are not items: header, tag, length, flags (generous).
const RUMORS_OVERHEAD: usize = 16;

/// What a rumor is: a topic message or an aggregation query announcement (PROTOCOLS.md §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RumorId {
    /// A message of a `gossip`-mode topic: its MsgId (origin and topic as a stream, and seq).
    Message {
        /// The topic and the origin.
        stream: StreamId,
        /// The origin's sequence number on that topic.
        seq: Seq,
    },
    /// An aggregation query (§5.1): the querier and its own query counter.
    Query {
        /// The node that asked.
        querier: NodeId,
        /// The querier's counter.
        counter: u64,
    },
}

impl RumorId {
    /// The topic a message rumor belongs to; `None` for a query.
    pub fn topic(&self) -> Option<TopicId> {
        match self {
            RumorId::Message { stream, .. } => Some(stream.topic),
            RumorId::Query { .. } => None,
        }
    }
}

/// One rumor on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rumor {
    /// Its id.
    pub id: RumorId,
    /// Its content, opaque to this machine.
    pub payload: Bytes,
}

/// The rumor-mongering wire messages (all datagrams but an oversized rumor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RumorMessage {
    /// Hot rumors, strictly ascending by id: a push, the push half of push-pull (`pull`), or
    /// the answer to a pull.
    Rumors {
        /// The rumors.
        items: Vec<Rumor>,
        /// The sender also wants the recipient's hot rumors (push-pull).
        pull: bool,
        /// The sender wants to know which of `items` the recipient already knew.
        want_feedback: bool,
    },
    /// Ask the recipient for its hot rumors (pull).
    Pull,
    /// Whether the recipient of a `Rumors` already knew each item, strictly ascending by id.
    Feedback {
        /// (rumor, knew it already).
        items: Vec<(RumorId, bool)>,
    },
}

impl WireMessage for RumorMessage {
    const KIND: Protocol = Protocol::Rumor;
}

/// When a node loses interest in a rumor (Demers §1.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// After k consecutive cycles (contacts) whose transmissions were all unnecessary.
    #[default]
    FeedbackCounter,
    /// With probability 1/k after each cycle (contact) of only unnecessary transmissions.
    FeedbackCoin,
    /// After k cycles (contacts) with a transmission, useful or not.
    BlindCounter,
    /// With probability 1/k after each cycle (contact) with a transmission.
    BlindCoin,
}

impl Variant {
    /// All four, in the order of the command line.
    pub const ALL: [Variant; 4] =
        [Variant::FeedbackCoin, Variant::FeedbackCounter, Variant::BlindCoin, Variant::BlindCounter];

    /// Recipients report whether they knew the rumor.
    pub fn is_feedback(self) -> bool {
        matches!(self, Variant::FeedbackCounter | Variant::FeedbackCoin)
    }

    /// Loss of interest by counter (else by coin).
    pub fn is_counter(self) -> bool {
        matches!(self, Variant::FeedbackCounter | Variant::BlindCounter)
    }

    /// The kebab-case name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Variant::FeedbackCounter => "feedback-counter",
            Variant::FeedbackCoin => "feedback-coin",
            Variant::BlindCounter => "blind-counter",
            Variant::BlindCoin => "blind-coin",
        }
    }
}

/// Which way rumors move in a contact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Hot nodes send their hot rumors.
    #[default]
    Push,
    /// Every node asks its partner for the partner's hot rumors.
    Pull,
    /// Both in one exchange.
    PushPull,
}

impl Direction {
    /// The kebab-case name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Push => "push",
            Direction::Pull => "pull",
            Direction::PushPull => "push-pull",
        }
    }
}

/// When received rumors become hot and when loss of interest is decided (PROTOCOLS.md
/// §2.1–2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Staging {
    /// Continuous reading (async timing, the daemon): a received rumor is hot at once, a
    /// transmission is necessary iff the recipient did not know the rumor when it processed
    /// the message, and the rule is applied per contact as its feedback (or, blind, its send)
    /// is processed.
    #[default]
    Immediate,
    /// Round reading (sync timing, Demers' tables): state is judged at the start of the cycle.
    /// A rumor learned during a cycle is delivered at once but becomes hot only at this node's
    /// next tick; recipients judge "knew" by their state at the start of their cycle; the rule
    /// is applied once per cycle per hot rumor at the next tick, before anything is sent.
    AtCycleStart,
}

/// Rumor-mongering settings (PROTOCOLS.md §10.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RumorConfig {
    /// Loss-of-interest rule. Default feedback counter (Demers §1.4: counters beat coins).
    pub variant: Variant,
    /// The counter limit, or 1/k the coin's probability. Default 3 (Demers' table row).
    pub k: u32,
    /// Partners contacted per tick. Default 1 (Demers).
    pub fanout: u32,
    /// Push, pull or push-pull. Default push (Demers §1.4).
    pub direction: Direction,
    /// Tick period. Default 200 ms, after memberlist's LAN GossipInterval.
    pub period: Duration,
    /// Placement of the ticks. Default phased (the daemon); the simulator uses sync or Poisson.
    pub timing: Timing,
    /// Round or continuous reading of the rules. Default immediate (the daemon).
    pub staging: Staging,
    /// Periods a removed rumor stays remembered for duplicate detection. Default 300 (§2.4).
    pub known_retention: u64,
    /// Rumors remembered at most (hot, staged or removed). Default 65,536 \[H\].
    pub known_max: usize,
    /// Rumors hot or staged at most. Default 1,024 \[H\].
    pub hot_max: usize,
}

impl Default for RumorConfig {
    fn default() -> Self {
        RumorConfig {
            variant: Variant::FeedbackCounter,
            k: 3,
            fanout: 1,
            direction: Direction::Push,
            period: Duration::from_millis(200),
            timing: Timing::Phased,
            staging: Staging::Immediate,
            known_retention: 300,
            known_max: 1 << 16,
            hot_max: 1 << 10,
        }
    }
}

impl RumorConfig {
    /// Check the settings a run cannot work with; the daemon refuses such a config at load.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = [
            ("k", self.k == 0),
            ("fanout", self.fanout == 0),
            ("period", self.period == Duration::ZERO),
            ("known_retention", self.known_retention == 0),
            ("known_max", self.known_max == 0),
            ("hot_max", self.hot_max == 0),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, bad)| *bad) {
            return Err(ConfigError::Zero(name));
        }
        if self.hot_max > self.known_max {
            return Err(ConfigError::HotAboveKnown);
        }
        Ok(())
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named setting must be greater than zero.
    #[error("rumor setting `{0}` must be greater than zero")]
    Zero(&'static str),
    /// `hot_max` exceeds `known_max`.
    #[error("rumor setting `hot_max` must not exceed `known_max`")]
    HotAboveKnown,
}

/// What rumor mongering tells its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RumorEvent {
    /// The first receipt of a rumor (never for one injected here).
    Delivered {
        /// The rumor.
        id: RumorId,
        /// Its content.
        payload: Bytes,
        /// The peer it came from.
        from: NodeId,
    },
    /// This node lost interest in a rumor: it will not send it again.
    Removed {
        /// The rumor.
        id: RumorId,
    },
}

/// Where one rumor stands at this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RumorState {
    /// Learned this cycle, hot from the next tick (`Staging::AtCycleStart` only).
    Staged,
    /// Infective, with its counter.
    Hot {
        /// Counting events so far (consecutive ones for feedback counter).
        counter: u32,
    },
    /// Known, no longer spread.
    Removed,
}

/// Counters, for metrics and experiments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RumorStats {
    /// Ticks served.
    pub ticks: u64,
    /// `Rumors` messages sent (datagrams and streams).
    pub rumors_messages: u64,
    /// Rumor items sent: the traffic of Demers' tables.
    pub rumors_sent: u64,
    /// `Pull` requests sent.
    pub pulls_sent: u64,
    /// `Feedback` messages sent.
    pub feedback_sent: u64,
    /// Rumors oversized for a datagram, sent on a stream.
    pub streamed: u64,
    /// New rumors received.
    pub received_new: u64,
    /// Rumor items received that were already known.
    pub received_known: u64,
    /// Feedback items saying the recipient did not know (necessary transmissions).
    pub necessary: u64,
    /// Feedback items saying the recipient knew (unnecessary transmissions).
    pub unnecessary: u64,
    /// Rumors this node lost interest in.
    pub removed: u64,
    /// Feedback items that answered nothing this node was waiting for.
    pub unsolicited_feedback: u64,
    /// Awaited feedback that never came in time.
    pub feedback_expired: u64,
    /// Message rumors of topics outside the scope, acknowledged and dropped.
    pub out_of_scope: u64,
    /// New rumors dropped because `hot_max` or `known_max` was reached.
    pub overflow: u64,
    /// Messages dropped as malformed (items not strictly ascending).
    pub malformed: u64,
}

/// A hot (or staged) rumor.
#[derive(Clone, Debug)]
struct Hot {
    payload: Bytes,
    /// Encoded size of the `Rumor` item, for packing datagrams.
    size: usize,
    counter: u32,
    /// This cycle (`AtCycleStart`): some feedback said necessary / unnecessary; some
    /// transmission was made.
    necessary: bool,
    unnecessary: bool,
    sent: bool,
}

#[derive(Clone, Debug)]
enum Status {
    Staged(Hot),
    Hot(Hot),
    /// Removed at this instant.
    Removed(Instant),
}

/// A transmission whose feedback is awaited.
#[derive(Clone, Copy, Debug)]
struct Pending {
    peer: NodeId,
    id: RumorId,
    sent_at: Instant,
}

/// The rumor-mongering machine of one node. Drive it as described in [`crate::machine`].
#[derive(Debug)]
pub struct RumorMonger {
    id: NodeId,
    config: Arc<RumorConfig>,
    rng: Rng,
    peers: PeerView,
    /// Our own position in `peers`, cached.
    self_pos: Option<usize>,
    /// Topics accepted; `None` accepts every topic.
    scope: Option<Vec<TopicId>>,
    tick: Ticker,
    rumors: BTreeMap<RumorId, Status>,
    /// Rumors in `Hot` or `Staged`.
    active: usize,
    pending: Vec<Pending>,
    out: Outbox<RumorMessage, RumorEvent>,
    stats: RumorStats,
}

impl RumorMonger {
    /// The machine name used to derive its RNG from the node seed.
    pub const NAME: &'static str = "rumor";

    /// A machine for node `id`, started at `now`, with its RNG derived from the node's seed.
    /// The config should have passed [`RumorConfig::validate`]; zeros are read as ones.
    pub fn new(id: NodeId, config: Arc<RumorConfig>, node_seed: &Seed, now: Instant) -> Self {
        let mut rng = Rng::from_seed(node_seed.machine(Self::NAME));
        let tick = Ticker::start(now, config.period, config.timing, &mut rng);
        RumorMonger {
            id,
            config,
            rng,
            peers: PeerView::default(),
            self_pos: None,
            scope: None,
            tick,
            rumors: BTreeMap::new(),
            active: 0,
            pending: Vec::new(),
            out: Outbox::default(),
            stats: RumorStats::default(),
        }
    }

    /// Side input: the peers partners are drawn from changed.
    pub fn handle_peers(&mut self, _now: Instant, peers: PeerView) {
        self.self_pos = peers.position(&self.id);
        self.peers = peers;
    }

    /// Accept message rumors of these topics only (`None`: all). Queries are always accepted.
    pub fn set_scope(&mut self, _now: Instant, topics: Option<Vec<TopicId>>) {
        self.scope = topics.map(|mut t| {
            t.sort_unstable();
            t.dedup();
            t
        });
    }

    /// Start spreading a rumor from this node at `now`: hot at once, whatever the staging.
    /// Returns false (and changes nothing) if the rumor is already known here.
    pub fn inject(&mut self, now: Instant, id: RumorId, payload: Bytes) -> bool {
        if self.rumors.contains_key(&id) {
            return false;
        }
        let hot = Self::fresh(&id, payload);
        self.wake(now);
        self.rumors.insert(id, Status::Hot(hot));
        self.active += 1;
        true
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Where `id` stands here; `None` if unknown (or forgotten).
    pub fn state(&self, id: &RumorId) -> Option<RumorState> {
        self.rumors.get(id).map(|s| match s {
            Status::Staged(_) => RumorState::Staged,
            Status::Hot(h) => RumorState::Hot { counter: h.counter },
            Status::Removed(_) => RumorState::Removed,
        })
    }

    /// True if this node knows `id` (hot, staged or removed).
    pub fn knows(&self, id: &RumorId) -> bool {
        self.rumors.contains_key(id)
    }

    /// Rumors hot or staged here.
    pub fn active(&self) -> usize {
        self.active
    }

    /// The counters.
    pub fn stats(&self) -> &RumorStats {
        &self.stats
    }

    /// The settings.
    pub fn config(&self) -> &RumorConfig {
        &self.config
    }

    fn fresh(id: &RumorId, payload: Bytes) -> Hot {
        let size = postcard::experimental::serialized_size(&Rumor { id: *id, payload: payload.clone() })
            .unwrap_or(usize::MAX);
        Hot { payload, size, counter: 0, necessary: false, unnecessary: false, sent: false }
    }

    fn k(&self) -> u32 {
        self.config.k.max(1)
    }

    fn in_scope(&self, id: &RumorId) -> bool {
        match (&self.scope, id.topic()) {
            (Some(topics), Some(t)) => topics.binary_search(&t).is_ok(),
            _ => true,
        }
    }

    /// True when this node has no use for its timer: push mode with nothing hot or staged.
    fn idle(&self) -> bool {
        self.config.direction == Direction::Push && self.active == 0
    }

    /// About to gain an active rumor: an idle node restarts its ticker after `now`.
    fn wake(&mut self, now: Instant) {
        if self.idle() && self.tick.deadline() <= now {
            self.tick.advance(now, &mut self.rng);
        }
    }

    fn remove(&mut self, now: Instant, id: RumorId) {
        let Some(s) = self.rumors.get_mut(&id) else { return };
        if matches!(s, Status::Hot(_) | Status::Staged(_)) {
            *s = Status::Removed(now);
            self.active -= 1;
            self.stats.removed += 1;
            self.out.event(RumorEvent::Removed { id });
        }
    }

    /// A tick: close the cycle (round reading), forget old state, contact partners.
    fn on_tick(&mut self, now: Instant) {
        self.stats.ticks += 1;
        match self.config.staging {
            Staging::AtCycleStart => self.close_cycle(now),
            Staging::Immediate => {
                let horizon = self.config.period * 2;
                let before = self.pending.len();
                self.pending.retain(|p| p.sent_at + horizon > now);
                self.stats.feedback_expired += (before - self.pending.len()) as u64;
            }
        }
        self.forget_old(now);
        let fanout = self.config.fanout.max(1) as usize;
        let direction = self.config.direction;
        if direction == Direction::Push && !self.any_hot() {
            return;
        }
        let partners = if fanout == 1 {
            self.peers.pick_except(self.self_pos, &mut self.rng).into_iter().collect()
        } else {
            self.peers.pick_others(&self.id, fanout, &mut self.rng)
        };
        for peer in partners {
            match direction {
                Direction::Push => self.send_hot(now, peer, false),
                Direction::Pull => {
                    self.stats.pulls_sent += 1;
                    self.out.datagram(peer, RumorMessage::Pull);
                }
                Direction::PushPull => self.send_hot(now, peer, true),
            }
        }
    }

    /// §2.2, round reading: once per hot rumor for the cycle that just ended, then promote the
    /// rumors learned during it. Feedback still outstanding no longer counts.
    fn close_cycle(&mut self, now: Instant) {
        self.stats.feedback_expired += self.pending.len() as u64;
        self.pending.clear();
        let (variant, k) = (self.config.variant, self.k());
        let mut removed = Vec::new();
        for (id, status) in self.rumors.iter_mut() {
            match status {
                Status::Hot(h) => {
                    let (necessary, unnecessary, sent) = (h.necessary, h.unnecessary, h.sent);
                    h.necessary = false;
                    h.unnecessary = false;
                    h.sent = false;
                    let lose = match variant {
                        Variant::FeedbackCounter => {
                            if necessary {
                                h.counter = 0;
                            } else if unnecessary {
                                h.counter += 1;
                            }
                            h.counter >= k
                        }
                        Variant::FeedbackCoin => {
                            !necessary && unnecessary && self.rng.chance(1.0 / f64::from(k))
                        }
                        Variant::BlindCounter => {
                            if sent {
                                h.counter += 1;
                            }
                            h.counter >= k
                        }
                        Variant::BlindCoin => sent && self.rng.chance(1.0 / f64::from(k)),
                    };
                    if lose {
                        removed.push(*id);
                    }
                }
                Status::Staged(h) => *status = Status::Hot(h.clone()),
                Status::Removed(_) => {}
            }
        }
        for id in removed {
            self.remove(now, id);
        }
    }

    fn forget_old(&mut self, now: Instant) {
        if self.rumors.len() == self.active {
            return;
        }
        let keep = self.config.period * self.config.known_retention;
        self.rumors.retain(|_, s| !matches!(s, Status::Removed(at) if *at + keep <= now));
    }

    fn any_hot(&self) -> bool {
        self.active > 0 && self.rumors.values().any(|s| matches!(s, Status::Hot(_)))
    }

    /// Send every hot rumor to `peer` (possibly none, in push-pull), split over datagrams;
    /// record the transmissions.
    fn send_hot(&mut self, now: Instant, peer: NodeId, pull: bool) {
        let want_feedback = self.config.variant.is_feedback();
        let mut batch: Vec<Rumor> = Vec::new();
        let mut bytes = RUMORS_OVERHEAD;
        let mut sent: Vec<RumorId> = Vec::new();
        let mut ask = pull;
        for (id, status) in &self.rumors {
            let Status::Hot(h) = status else { continue };
            sent.push(*id);
            let item = Rumor { id: *id, payload: h.payload.clone() };
            if h.size.saturating_add(RUMORS_OVERHEAD) > DATAGRAM_BUDGET {
                self.stats.streamed += 1;
                self.stats.rumors_messages += 1;
                let msg = RumorMessage::Rumors { items: vec![item], pull: false, want_feedback };
                self.out.stream(peer, msg);
                continue;
            }
            if bytes + h.size > DATAGRAM_BUDGET {
                let items = std::mem::take(&mut batch);
                self.stats.rumors_messages += 1;
                self.out.datagram(peer, RumorMessage::Rumors { items, pull: ask, want_feedback });
                ask = false;
                bytes = RUMORS_OVERHEAD;
            }
            bytes += h.size;
            batch.push(item);
        }
        if !batch.is_empty() || ask {
            self.stats.rumors_messages += 1;
            self.out.datagram(peer, RumorMessage::Rumors { items: batch, pull: ask, want_feedback });
        }
        self.stats.rumors_sent += sent.len() as u64;
        for id in sent {
            self.transmitted(now, peer, id);
        }
    }

    /// Bookkeeping for one transmission of `id` to `peer`.
    fn transmitted(&mut self, now: Instant, peer: NodeId, id: RumorId) {
        let variant = self.config.variant;
        if variant.is_feedback() {
            self.pending.push(Pending { peer, id, sent_at: now });
            return;
        }
        let k = self.k();
        let Some(Status::Hot(h)) = self.rumors.get_mut(&id) else { return };
        let lose = match self.config.staging {
            Staging::AtCycleStart => {
                h.sent = true;
                false
            }
            Staging::Immediate if variant.is_counter() => {
                h.counter += 1;
                h.counter >= k
            }
            Staging::Immediate => self.rng.chance(1.0 / f64::from(k)),
        };
        if lose {
            self.remove(now, id);
        }
    }

    fn on_rumors(&mut self, now: Instant, from: NodeId, items: Vec<Rumor>, pull: bool, want_feedback: bool) {
        if !items.windows(2).all(|w| w[0].id < w[1].id) {
            self.stats.malformed += 1;
            return;
        }
        let mut feedback = Vec::with_capacity(if want_feedback { items.len() } else { 0 });
        for Rumor { id, payload } in items {
            let knew = match self.rumors.get(&id) {
                Some(Status::Staged(_)) => self.config.staging == Staging::Immediate,
                Some(_) => true,
                None if !self.in_scope(&id) => {
                    self.stats.out_of_scope += 1;
                    true
                }
                None if self.active >= self.config.hot_max || self.rumors.len() >= self.config.known_max => {
                    self.stats.overflow += 1;
                    continue;
                }
                None => {
                    self.wake(now);
                    let hot = Self::fresh(&id, payload.clone());
                    let status = match self.config.staging {
                        Staging::Immediate => Status::Hot(hot),
                        Staging::AtCycleStart => Status::Staged(hot),
                    };
                    self.rumors.insert(id, status);
                    self.active += 1;
                    self.stats.received_new += 1;
                    self.out.event(RumorEvent::Delivered { id, payload, from });
                    false
                }
            };
            if knew {
                self.stats.received_known += 1;
            }
            if want_feedback {
                feedback.push((id, knew));
            }
        }
        if !feedback.is_empty() {
            self.stats.feedback_sent += 1;
            self.out.datagram(from, RumorMessage::Feedback { items: feedback });
        }
        if pull {
            self.serve(now, from);
        }
    }

    /// Answer a pull: every hot rumor, if any.
    fn serve(&mut self, now: Instant, to: NodeId) {
        if self.any_hot() {
            self.send_hot(now, to, false);
        }
    }

    fn on_feedback(&mut self, now: Instant, from: NodeId, items: Vec<(RumorId, bool)>) {
        if !items.windows(2).all(|w| w[0].0 < w[1].0) {
            self.stats.malformed += 1;
            return;
        }
        let (variant, k) = (self.config.variant, self.k());
        for (id, knew) in items {
            let Some(i) = self.pending.iter().position(|p| p.peer == from && p.id == id) else {
                self.stats.unsolicited_feedback += 1;
                continue;
            };
            self.pending.swap_remove(i);
            if knew {
                self.stats.unnecessary += 1;
            } else {
                self.stats.necessary += 1;
            }
            let Some(Status::Hot(h)) = self.rumors.get_mut(&id) else { continue };
            let lose = match self.config.staging {
                Staging::AtCycleStart => {
                    if knew {
                        h.unnecessary = true;
                    } else {
                        h.necessary = true;
                    }
                    false
                }
                Staging::Immediate => match (knew, variant.is_counter()) {
                    (false, true) => {
                        h.counter = 0;
                        false
                    }
                    (false, false) => false,
                    (true, true) => {
                        h.counter += 1;
                        h.counter >= k
                    }
                    (true, false) => self.rng.chance(1.0 / f64::from(k)),
                },
            };
            if lose {
                self.remove(now, id);
            }
        }
    }
}

impl Machine for RumorMonger {
    type Message = RumorMessage;
    type Event = RumorEvent;

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: RumorMessage) {
        match msg {
            RumorMessage::Rumors { items, pull, want_feedback } => {
                self.on_rumors(now, from, items, pull, want_feedback)
            }
            RumorMessage::Pull => self.serve(now, from),
            RumorMessage::Feedback { items } => self.on_feedback(now, from, items),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.tick.is_due(now) {
            self.tick.advance(now, &mut self.rng);
            self.on_tick(now);
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit<RumorMessage>> {
        self.out.pop_transmit()
    }

    fn poll_event(&mut self) -> Option<RumorEvent> {
        self.out.pop_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.idle() { None } else { Some(self.tick.deadline()) }
    }
}
