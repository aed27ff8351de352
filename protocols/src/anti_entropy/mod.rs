//! Anti-entropy (Demers et al. 1987, PROTOCOLS.md §1): every period, exchange with one
//! uniformly random peer and resolve differences by push, pull or push-pull, **digest first,
//! then only the deltas** the other side lacks.
//!
//! What is reconciled is a [`Store`] of sequenced, immutable entries per stream
//! (topic, origin): a topic's message history, or, with retention 1, any last-writer-wins table.
//!
//! # Exchanges
//!
//! | mode | initiator A → B | B → A | A → B | who learns |
//! |---|---|---|---|---|
//! | Pull | `Syn{digest D_A}` | `SynAck{delta for A}` | — | A |
//! | Push | `Syn{}` | `SynAck{digest D_B}` | `Delta{for B}` | B |
//! | PushPull | `Syn{digest D_A}` | `SynAck{digest D_B, delta for A}` | `Delta{for B}` | both |
//! | Heads | `Syn{}` | `SynAck{digest D_B}` | — | A learns B's heads |
//!
//! All three messages travel on one stream. The responder keeps no state; the initiator keeps
//! one exchange in flight, aborted after `timeout`. A tick that finds an exchange still in
//! flight is skipped (counted).
//!
//! # Departures from PROTOCOLS.md §1, on purpose
//!
//! - **Nothing below the remote floor is pushed.** §1.3 counts seqs below the remote's `floor`
//!   as lacking; a remote whose floor rose because its bounded history evicted old entries
//!   would then be sent that history again at every exchange, only to drop it. A remote that
//!   holds nothing of a stream has `floor = max + 1 = 1` and still gets everything.
//! - **`SynAck` carries the responder's scope** (the topics it agreed to reconcile), so the
//!   initiator never pushes entries of topics the responder does not store.
//! - **Digests say whether they are partial.** Over `digest_streams_max` streams, a digest is a
//!   rotating window; a stream absent from a partial digest is unknown, not empty, so it is not
//!   pushed in full. One rotation cursor serves all peers (per-peer cursors would grow with
//!   the membership).
//! - **Timer order** on equal deadlines: the exchange timeout before the tick, so a tick can
//!   start a new exchange at the instant the old one is given up.
//! - **The responder concurrency cap** (`ae_concurrent_max`) belongs to the runtime, which owns
//!   streams; the machine's responder is stateless and has nothing to bound.
//!
//! # Rounds (`Commit::AtRoundStart`)
//!
//! For the round-based experiments, entries received during a round are staged and become
//! visible (in digests and deltas) only at this node's next tick, before it builds anything:
//! with aligned ticks, state is judged at the start of the round (§1.5).

mod store;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use self::store::{Entry, Inserted, Store, StreamSummary};
use crate::id::{NodeId, StreamId, TopicId};
use crate::machine::{Machine, Outbox, Transmit};
use crate::peers::PeerView;
use crate::rng::{Rng, Seed};
use crate::time::{Duration, Instant};
use crate::timer::{Ticker, Timing};
use crate::wire::{MessageKind, WireMessage};

/// The most topics a `Syn` may name in its scope; more is malformed.
pub const SCOPE_MAX: usize = 1024;

/// Which way an exchange moves entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AeMode {
    /// The initiator sends what the responder lacks.
    Push,
    /// The initiator fetches what it lacks.
    Pull,
    /// Both (Demers: converges fastest).
    #[default]
    PushPull,
    /// The initiator learns only the responder's summaries (a new subscriber's cursors, §4.7).
    Heads,
}

/// When received entries become visible to this node's own digests and deltas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Commit {
    /// As soon as they are stored (the daemon).
    #[default]
    Immediate,
    /// At this node's next tick (round-based experiments, §1.5).
    AtRoundStart,
}

/// Anti-entropy settings (PROTOCOLS.md §10.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AeConfig {
    /// Mode of the periodic exchange. Default push-pull (Demers §1.3).
    pub mode: AeMode,
    /// Period between exchanges. Default 30 s, after memberlist's LAN PushPullInterval.
    pub interval: Duration,
    /// How long the initiator waits for the reply. Default 10 s, after memberlist's LAN
    /// TCPTimeout.
    pub timeout: Duration,
    /// Placement of the ticks in time.
    pub timing: Timing,
    /// When received entries become visible.
    pub commit: Commit,
    /// Missing seqs listed per summary (M). Default 32.
    pub digest_missing_max: usize,
    /// Summaries per digest. Default 256.
    pub digest_streams_max: usize,
    /// Byte budget of one delta. Default 1 MiB.
    pub delta_bytes_max: usize,
    /// Entries kept per stream. Default 4096 (PROTOCOLS.md §4.2 `history_msgs`).
    pub retention: usize,
}

impl Default for AeConfig {
    fn default() -> Self {
        AeConfig {
            mode: AeMode::PushPull,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            timing: Timing::Phased,
            commit: Commit::Immediate,
            digest_missing_max: 32,
            digest_streams_max: 256,
            delta_bytes_max: 1 << 20,
            retention: 4096,
        }
    }
}

impl AeConfig {
    /// Check the settings a run cannot work with; the daemon refuses such a config at load.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval == Duration::ZERO {
            return Err(ConfigError::Zero("interval"));
        }
        if self.timeout == Duration::ZERO {
            return Err(ConfigError::Zero("timeout"));
        }
        if self.digest_streams_max == 0 {
            return Err(ConfigError::Zero("digest_streams_max"));
        }
        if self.retention == 0 {
            return Err(ConfigError::Zero("retention"));
        }
        Ok(())
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named setting must be greater than zero.
    #[error("anti-entropy setting `{0}` must be greater than zero")]
    Zero(&'static str),
}

/// A list of stream summaries, possibly a rotating window of a larger set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Summaries, strictly ascending by stream.
    pub summaries: Vec<StreamSummary>,
    /// True when streams were left out: an absent stream is then unknown, not empty.
    pub partial: bool,
}

/// The anti-entropy wire messages (all sent on one stream per exchange).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AeMessage {
    /// Initiator → responder: opens an exchange.
    Syn {
        /// Exchange id, chosen by the initiator.
        xid: u64,
        /// The exchange's mode.
        mode: AeMode,
        /// Topics the initiator reconciles, strictly ascending.
        scope: Vec<TopicId>,
        /// The initiator's digest (empty in Push and Heads).
        digest: Digest,
    },
    /// Responder → initiator.
    SynAck {
        /// The exchange id.
        xid: u64,
        /// Topics the responder reconciles: the initiator's scope ∩ its own topics.
        scope: Vec<TopicId>,
        /// The responder's digest (Push, PushPull, Heads).
        digest: Digest,
        /// Entries the initiator lacks (Pull, PushPull).
        delta: Vec<Entry>,
        /// The delta was cut by the byte budget.
        more: bool,
    },
    /// Initiator → responder: entries the responder lacks (Push, PushPull).
    Delta {
        /// The exchange id.
        xid: u64,
        /// The entries.
        delta: Vec<Entry>,
        /// The delta was cut by the byte budget.
        more: bool,
    },
}

impl WireMessage for AeMessage {
    const KIND: MessageKind = MessageKind::AntiEntropy;
}

/// What anti-entropy tells its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AeEvent {
    /// A new entry arrived from `from` (staged until the next tick under `AtRoundStart`).
    Received {
        /// The peer that sent it.
        from: NodeId,
        /// The entry.
        entry: Entry,
    },
    /// An exchange this node started has finished.
    ExchangeCompleted {
        /// The partner.
        peer: NodeId,
        /// Its id.
        xid: u64,
    },
    /// An exchange this node started got no reply in time, or a malformed one.
    ExchangeAborted {
        /// The partner.
        peer: NodeId,
        /// Its id.
        xid: u64,
    },
    /// The reply of a Heads exchange: the partner's summaries.
    Heads {
        /// The partner.
        peer: NodeId,
        /// The exchange's id (what `start_exchange` returned).
        xid: u64,
        /// Its summaries for the scope of the exchange.
        summaries: Vec<StreamSummary>,
    },
}

/// Counters, for metrics and experiments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AeStats {
    /// Exchanges this node opened.
    pub exchanges_started: u64,
    /// Exchanges this node opened that completed.
    pub exchanges_completed: u64,
    /// Exchanges this node opened that timed out or failed.
    pub exchanges_aborted: u64,
    /// Exchanges this node answered.
    pub exchanges_served: u64,
    /// Ticks that started nothing: an exchange still in flight, or no peer.
    pub ticks_skipped: u64,
    /// Entries sent in deltas.
    pub entries_sent: u64,
    /// New entries received.
    pub entries_received: u64,
    /// Entries received that were already held.
    pub duplicates: u64,
    /// Entries received for topics this node does not store.
    pub out_of_scope: u64,
    /// Entries received that were older than a full stream keeps.
    pub too_old: u64,
    /// Deltas this node cut at the byte budget.
    pub deltas_cut: u64,
    /// Messages dropped as malformed (inconsistent summaries, bounds, seq 0, unexpected parts).
    pub malformed: u64,
    /// Replies that matched no exchange in flight.
    pub unknown_xid: u64,
}

#[derive(Clone, Copy, Debug)]
struct Exchange {
    xid: u64,
    peer: NodeId,
    mode: AeMode,
    deadline: Instant,
}

/// The anti-entropy machine of one node. Drive it as described in [`crate::machine`].
#[derive(Debug)]
pub struct AntiEntropy {
    id: NodeId,
    config: Arc<AeConfig>,
    rng: Rng,
    peers: PeerView,
    /// Our own position in `peers` (cached: a binary search per tick is a hot path at 10^5
    /// nodes).
    self_pos: Option<usize>,
    topics: Vec<TopicId>,
    store: Store,
    staged: Vec<Entry>,
    tick: Ticker,
    exchange: Option<Exchange>,
    next_xid: u64,
    /// Where the next partial digest continues (boxed: rarely set, and 10^5 machines).
    cursor: Option<Box<StreamId>>,
    out: Outbox<AeMessage, AeEvent>,
    stats: AeStats,
}

impl AntiEntropy {
    /// The machine name used to derive its RNG from the node seed.
    pub const NAME: &'static str = "anti-entropy";

    /// A machine for node `id`, started at `now`, with its RNG derived from the node's seed.
    pub fn new(id: NodeId, config: Arc<AeConfig>, node_seed: &Seed, now: Instant) -> Self {
        let mut rng = Rng::from_seed(node_seed.machine(Self::NAME));
        let tick = Ticker::start(now, config.interval, config.timing, &mut rng);
        let store = Store::new(config.retention);
        AntiEntropy {
            id,
            config,
            rng,
            peers: PeerView::default(),
            self_pos: None,
            topics: Vec::new(),
            store,
            staged: Vec::new(),
            tick,
            exchange: None,
            next_xid: 1,
            cursor: None,
            out: Outbox::default(),
            stats: AeStats::default(),
        }
    }

    /// Replace the set of peers partners are drawn from.
    pub fn set_peers(&mut self, peers: PeerView) {
        self.self_pos = peers.position(&self.id);
        self.peers = peers;
    }

    /// Reconcile `topic` from now on.
    pub fn subscribe(&mut self, topic: TopicId) {
        if let Err(i) = self.topics.binary_search(&topic) {
            self.topics.insert(i, topic);
        }
    }

    /// Stop reconciling `topic` and drop its entries.
    pub fn unsubscribe(&mut self, topic: TopicId) {
        if let Ok(i) = self.topics.binary_search(&topic) {
            self.topics.remove(i);
            self.store.remove_topic(topic);
            self.staged.retain(|e| e.stream.topic != topic);
        }
    }

    /// Store a locally written entry; visible at once, whatever the commit mode.
    pub fn insert(&mut self, entry: Entry) -> Inserted {
        self.store.insert(entry)
    }

    /// Open an exchange now (on-demand Pull or Heads, §1.4), with `peer` or a uniformly random
    /// one. Returns the exchange id, or `None` if one is already in flight or no peer exists.
    pub fn start_exchange(&mut self, now: Instant, mode: AeMode, peer: Option<NodeId>) -> Option<u64> {
        if self.exchange.is_some() || self.topics.is_empty() {
            return None;
        }
        let peer = match peer {
            Some(p) => p,
            None => self.peers.pick_except(self.self_pos, &mut self.rng)?,
        };
        Some(self.open(now, mode, peer))
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The entries held (staged ones excluded).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Entries received but not yet visible (`AtRoundStart` only).
    pub fn staged(&self) -> &[Entry] {
        &self.staged
    }

    /// The counters.
    pub fn stats(&self) -> &AeStats {
        &self.stats
    }

    /// Topics reconciled, ascending.
    pub fn topics(&self) -> &[TopicId] {
        &self.topics
    }

    fn open(&mut self, now: Instant, mode: AeMode, peer: NodeId) -> u64 {
        let xid = self.next_xid;
        self.next_xid += 1;
        let digest = match mode {
            AeMode::Pull | AeMode::PushPull => self.digest(&self.topics.clone()),
            AeMode::Push | AeMode::Heads => Digest::default(),
        };
        self.out.stream(peer, AeMessage::Syn { xid, mode, scope: self.topics.clone(), digest });
        self.exchange = Some(Exchange { xid, peer, mode, deadline: now + self.config.timeout });
        self.stats.exchanges_started += 1;
        xid
    }

    fn digest(&mut self, scope: &[TopicId]) -> Digest {
        let c = &self.config;
        let (summaries, last) =
            self.store.digest(scope, c.digest_missing_max, c.digest_streams_max, self.cursor.as_deref());
        let partial = last.is_some();
        if partial {
            self.cursor = last.map(Box::new);
        }
        Digest { summaries, partial }
    }

    fn delta_for(&mut self, remote: &Digest, scope: &[TopicId]) -> (Vec<Entry>, bool) {
        let (delta, more) =
            self.store.delta_for(&remote.summaries, remote.partial, scope, self.config.delta_bytes_max);
        self.stats.entries_sent += delta.len() as u64;
        self.stats.deltas_cut += u64::from(more);
        (delta, more)
    }

    fn valid_digest(&self, digest: &Digest) -> bool {
        digest.summaries.len() <= self.config.digest_streams_max
            && digest.summaries.windows(2).all(|w| w[0].stream < w[1].stream)
            && digest.summaries.iter().all(|s| s.is_consistent(self.config.digest_missing_max))
    }

    fn on_syn(&mut self, from: NodeId, xid: u64, mode: AeMode, scope: Vec<TopicId>, digest: Digest) {
        let scope_ok = scope.len() <= SCOPE_MAX && scope.windows(2).all(|w| w[0] < w[1]);
        if !scope_ok || !self.valid_digest(&digest) {
            self.stats.malformed += 1;
            return;
        }
        let shared: Vec<TopicId> =
            scope.into_iter().filter(|t| self.topics.binary_search(t).is_ok()).collect();
        let mine = match mode {
            AeMode::Push | AeMode::PushPull | AeMode::Heads => self.digest(&shared),
            AeMode::Pull => Digest::default(),
        };
        let (delta, more) = match mode {
            AeMode::Pull | AeMode::PushPull => self.delta_for(&digest, &shared),
            AeMode::Push | AeMode::Heads => (Vec::new(), false),
        };
        self.stats.exchanges_served += 1;
        self.out.stream(from, AeMessage::SynAck { xid, scope: shared, digest: mine, delta, more });
    }

    fn on_syn_ack(&mut self, from: NodeId, xid: u64, scope: Vec<TopicId>, digest: Digest, delta: Vec<Entry>) {
        let Some(ex) = self.exchange.filter(|e| e.xid == xid && e.peer == from) else {
            self.stats.unknown_xid += 1;
            return;
        };
        let wants_delta = matches!(ex.mode, AeMode::Pull | AeMode::PushPull);
        let scope_ok = scope.len() <= SCOPE_MAX && scope.windows(2).all(|w| w[0] < w[1]);
        if !scope_ok || !self.valid_digest(&digest) || (!wants_delta && !delta.is_empty()) {
            self.stats.malformed += 1;
            self.exchange = None;
            self.stats.exchanges_aborted += 1;
            self.out.event(AeEvent::ExchangeAborted { peer: from, xid });
            return;
        }
        self.exchange = None;
        self.apply(from, delta);
        match ex.mode {
            AeMode::Push | AeMode::PushPull => {
                // Only topics both sides reconcile.
                let shared: Vec<TopicId> =
                    scope.into_iter().filter(|t| self.topics.binary_search(t).is_ok()).collect();
                let (delta, more) = self.delta_for(&digest, &shared);
                if !delta.is_empty() {
                    self.out.stream(from, AeMessage::Delta { xid, delta, more });
                }
            }
            AeMode::Heads => self.out.event(AeEvent::Heads { peer: from, xid, summaries: digest.summaries }),
            AeMode::Pull => {}
        }
        self.stats.exchanges_completed += 1;
        self.out.event(AeEvent::ExchangeCompleted { peer: from, xid });
    }

    fn apply(&mut self, from: NodeId, entries: Vec<Entry>) {
        for entry in entries {
            if self.topics.binary_search(&entry.stream.topic).is_err() {
                self.stats.out_of_scope += 1;
                continue;
            }
            if entry.seq == 0 {
                self.stats.malformed += 1;
                continue;
            }
            match self.config.commit {
                Commit::Immediate => match self.store.insert(entry.clone()) {
                    Inserted::New => {}
                    Inserted::Duplicate => {
                        self.stats.duplicates += 1;
                        continue;
                    }
                    Inserted::TooOld | Inserted::Invalid => {
                        self.stats.too_old += 1;
                        continue;
                    }
                },
                Commit::AtRoundStart => {
                    let staged = self.staged.iter().any(|e| e.stream == entry.stream && e.seq == entry.seq);
                    if staged || self.store.contains(&entry.stream, entry.seq) {
                        self.stats.duplicates += 1;
                        continue;
                    }
                    self.staged.push(entry.clone());
                }
            }
            self.stats.entries_received += 1;
            self.out.event(AeEvent::Received { from, entry });
        }
    }

    fn commit_staged(&mut self) {
        for entry in std::mem::take(&mut self.staged) {
            if self.store.insert(entry) == Inserted::TooOld {
                self.stats.too_old += 1;
            }
        }
    }
}

impl Machine for AntiEntropy {
    type Message = AeMessage;
    type Event = AeEvent;

    fn handle_message(&mut self, _now: Instant, from: NodeId, msg: AeMessage) {
        match msg {
            AeMessage::Syn { xid, mode, scope, digest } => self.on_syn(from, xid, mode, scope, digest),
            AeMessage::SynAck { xid, scope, digest, delta, more: _ } => {
                self.on_syn_ack(from, xid, scope, digest, delta)
            }
            AeMessage::Delta { xid: _, delta, more: _ } => self.apply(from, delta),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(ex) = self.exchange.filter(|e| e.deadline <= now) {
            self.exchange = None;
            self.stats.exchanges_aborted += 1;
            self.out.event(AeEvent::ExchangeAborted { peer: ex.peer, xid: ex.xid });
        }
        if self.tick.is_due(now) {
            self.tick.advance(now, &mut self.rng);
            self.commit_staged();
            if self.exchange.is_some() || self.topics.is_empty() {
                self.stats.ticks_skipped += 1;
            } else if let Some(peer) = self.peers.pick_except(self.self_pos, &mut self.rng) {
                self.open(now, self.config.mode, peer);
            } else {
                self.stats.ticks_skipped += 1;
            }
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit<AeMessage>> {
        self.out.pop_transmit()
    }

    fn poll_event(&mut self) -> Option<AeEvent> {
        self.out.pop_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let tick = self.tick.deadline();
        Some(self.exchange.map_or(tick, |e| e.deadline.min(tick)))
    }
}
