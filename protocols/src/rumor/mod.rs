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
//! # Timers
//!
//! One timer kind, the round tick: every `period`, placed by `timing` (the idiom of
//! [`crate::machine#timers`]). A tick closes the cycle under [`Staging::AtCycleStart`] (or,
//! under [`Staging::Immediate`], gives up feedback awaited for two periods), forgets removed
//! rumors past `known_retention`, then contacts `fanout` partners. In push mode a node with
//! nothing hot or staged asks for no wake-up (`poll_timeout` is `None`; see "An idle push node
//! sleeps" below), but its ticker keeps running: a host that calls `handle_timeout` anyway has
//! a due tick served (which forgets old rumors and sends nothing).
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
//! - **Bounds** \[H\]: at most `hot_max` rumors hot, `hot_bytes_max` bytes of their payloads,
//!   `hot_per_origin_max` of one origin (a stream origin or a querier) and `known_max`
//!   remembered at once; a new rumor beyond any is dropped and counted (`overflow`), without
//!   feedback. A rumor whose payload exceeds `payload_max` is dropped and counted
//!   (`oversized`), without feedback. Removed rumors
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

mod config;
mod message;
mod spread;
#[cfg(test)]
mod tests;
mod tick;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

pub use self::config::{ConfigError, Direction, RumorConfig, Staging, Variant};
pub use self::message::{Rumor, RumorEvent, RumorId, RumorMessage};
use crate::id::{NodeId, TopicId};
use crate::machine::{Machine, Outbox, Transmit};
use crate::peers::PeerView;
use crate::rng::{Rng, Seed};
use crate::time::Instant;
use crate::timer::{Earliest, Ticker};

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
    /// Rumors dropped because their payload exceeded `payload_max`.
    pub oversized: u64,
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
    /// Payload bytes of the rumors in `Hot` or `Staged`.
    active_bytes: usize,
    /// Rumors in `Hot` or `Staged`, per origin (entries at 0 removed).
    active_by_origin: BTreeMap<NodeId, usize>,
    /// Transmissions whose feedback is awaited: (peer, rumor) → when each was sent.
    pending: BTreeMap<(NodeId, RumorId), Vec<Instant>>,
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
            active_bytes: 0,
            active_by_origin: BTreeMap::new(),
            pending: BTreeMap::new(),
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
        self.activate(&id, hot.payload.len());
        self.rumors.insert(id, Status::Hot(hot));
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

    /// Bytes of state this machine accounts for: hot payloads, 96 bytes per rumor
    /// remembered, 64 per awaited feedback. Each is capped.
    pub fn state_bytes(&self) -> usize {
        let pending: usize = self.pending.values().map(Vec::len).sum();
        self.active_bytes
            .saturating_add(self.rumors.len().saturating_mul(96))
            .saturating_add(pending.saturating_mul(64))
            .saturating_add(std::mem::size_of::<Self>())
    }

    /// True if one more active rumor `id` with `len` payload bytes stays within the caps.
    fn has_room(&self, id: &RumorId, len: usize) -> bool {
        let c = &self.config;
        self.active < c.hot_max
            && self.rumors.len() < c.known_max
            && self.active_bytes.saturating_add(len) <= c.hot_bytes_max
            && self.active_by_origin.get(&id.origin()).copied().unwrap_or(0) < c.hot_per_origin_max
    }

    /// Count a rumor that becomes hot or staged.
    fn activate(&mut self, id: &RumorId, len: usize) {
        self.active += 1;
        self.active_bytes = self.active_bytes.saturating_add(len);
        *self.active_by_origin.entry(id.origin()).or_default() += 1;
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
        if let Status::Hot(h) | Status::Staged(h) = s {
            let len = h.payload.len();
            *s = Status::Removed(now);
            self.active -= 1;
            self.active_bytes = self.active_bytes.saturating_sub(len);
            let origin = id.origin();
            if let Some(n) = self.active_by_origin.get_mut(&origin) {
                *n -= 1;
                if *n == 0 {
                    self.active_by_origin.remove(&origin);
                }
            }
            self.stats.removed += 1;
            self.out.event(RumorEvent::Removed { id });
        }
    }

    fn any_hot(&self) -> bool {
        self.active > 0 && self.rumors.values().any(|s| matches!(s, Status::Hot(_)))
    }

    /// The earliest armed timer: the tick, which always runs (an idle node only asks for no
    /// wake-up, in `poll_timeout`).
    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let mut e = Earliest::new();
        e.offer(Some(self.tick.deadline()), Timer::Tick);
        e.get()
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Tick => {
                self.tick.advance(now, &mut self.rng);
                self.on_tick(now);
            }
        }
    }
}

/// Rumor mongering's timer kinds, in the order simultaneous ones are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The round tick (`period`).
    Tick,
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
        while let Some((at, timer)) = self.next_timer() {
            if at > now {
                break;
            }
            self.fire(now, timer);
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit<RumorMessage>> {
        self.out.pop_transmit()
    }

    fn poll_event(&mut self) -> Option<RumorEvent> {
        self.out.pop_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        // An idle push node sleeps (module docs, "Timers"): its tick stays armed, unasked for.
        if self.idle() { None } else { self.next_timer().map(|(at, _)| at) }
    }
}
