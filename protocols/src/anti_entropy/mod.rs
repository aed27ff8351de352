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
//! # Driving it
//!
//! The [`Machine`] contract. Side input: [`AntiEntropy::handle_peers`] (the members partners
//! are drawn from). Commands: [`AntiEntropy::subscribe`] / [`AntiEntropy::unsubscribe`] (the
//! topics reconciled), [`AntiEntropy::insert`] (an entry written here),
//! [`AntiEntropy::start_exchange`] (an on-demand Push, Pull or PushPull) and
//! [`AntiEntropy::ask_heads`].
//!
//! All three messages travel on one stream. The responder keeps no state; the initiator keeps
//! one exchange in flight, aborted after `timeout`. A tick that finds an exchange still in
//! flight is skipped (counted).
//!
//! # Timers
//!
//! The periodic exchange (`interval`, in `timing`) and the reply deadline of the exchange in
//! flight (`timeout`), in the idiom of [`crate::machine#timers`]; on equal deadlines the reply
//! deadline first.
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
//!   start a new exchange at the instant the old one is given up (the timer idiom of
//!   [`crate::machine#timers`]).
//! - **Heads exchanges know their topic.** A new pbcast subscriber asks for heads
//!   ([`AntiEntropy::ask_heads`]); the exchange remembers the topic and its outcome comes back
//!   as one [`AeEvent::Heads`] naming it, the summaries or `None` on failure, so the host
//!   keeps no table of exchanges in flight.
//! - **The responder concurrency cap** (`ae_concurrent_max`) belongs to the runtime, which owns
//!   streams.
//! - **A `Delta` is applied only if this node asked for it** (issue 12): a responder that
//!   answers a Push or PushPull `Syn` with its digest remembers (peer, xid) for `timeout`, at
//!   most one per peer and [`AWAITED_MAX`] in all (the oldest forgotten first), and applies
//!   only the `Delta` that answers one of them; any other is counted (`unsolicited`) and
//!   dropped. §1 applies every `Delta`.
//! - **Bounds** \[H\]: besides `retention` entries per stream, the store holds at most
//!   `streams_max` streams, `stream_bytes_max` bytes per stream (its oldest entries make room)
//!   and `store_bytes_max` in all; an entry over a cap is refused and counted (`refused_full`).
//!   Entries staged for the next round count against the total too.
//!
//! # Rounds (`Commit::AtRoundStart`)
//!
//! For the round-based experiments, entries received during a round are staged and become
//! visible (in digests and deltas) only at this node's next tick, before it builds anything:
//! with aligned ticks, state is judged at the start of the round (§1.5).

mod config;
mod exchange;
mod message;
mod store;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use self::config::{AeConfig, AeMode, Commit, ConfigError, SCOPE_MAX};
pub use self::message::{AeEvent, AeMessage, Digest};
pub use self::store::{ENTRY_OVERHEAD, Entry, Inserted, Limits, STREAM_OVERHEAD, Store, StreamSummary};
use crate::id::{NodeId, StreamId, TopicId};
use crate::machine::{Machine, Outbox, Transmit};
use crate::peers::PeerView;
use crate::rng::{Rng, Seed};
use crate::time::Instant;
use crate::timer::{Earliest, Ticker};

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
    /// `Delta`s that answered nothing this node asked for (dropped).
    pub unsolicited: u64,
    /// Entries that failed the check (a seal not their origin's signature): dropped.
    pub forged: u64,
    /// Entries refused at the store's caps (`streams_max`, `stream_bytes_max`,
    /// `store_bytes_max`).
    pub refused_full: u64,
}

/// Most Deltas a responder awaits at once (one per peer) \[H\].
pub const AWAITED_MAX: usize = 256;

#[derive(Clone, Copy, Debug)]
struct Exchange {
    xid: u64,
    peer: NodeId,
    mode: AeMode,
    /// For a Heads exchange: the topic it asks for.
    heads_for: Option<TopicId>,
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
    /// (stream, seq) of the staged entries, and the bytes they cost.
    staged_ids: std::collections::BTreeSet<(StreamId, crate::id::Seq)>,
    staged_bytes: usize,
    /// Deltas this node awaits as a responder: peer → (xid, until when).
    awaited: std::collections::BTreeMap<NodeId, (u64, Instant)>,
    tick: Ticker,
    exchange: Option<Exchange>,
    next_xid: u64,
    /// Where the next partial digest continues (boxed: rarely set, and 10^5 machines).
    cursor: Option<Box<StreamId>>,
    out: Outbox<AeMessage, AeEvent>,
    stats: AeStats,
    /// Checks a received entry before it is stored (the daemon: its origin's seal).
    check: Option<EntryCheck>,
}

/// A check every entry received from a peer must pass before it is stored or reported (the
/// Engine's: the entry's seal is its origin's signature).
#[derive(Clone)]
pub struct EntryCheck(pub Arc<dyn Fn(&Entry) -> bool + Send + Sync>);

impl std::fmt::Debug for EntryCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EntryCheck")
    }
}

impl AntiEntropy {
    /// The machine name used to derive its RNG from the node seed.
    pub const NAME: &'static str = "anti-entropy";

    /// A machine for node `id`, started at `now`, with its RNG derived from the node's seed.
    pub fn new(id: NodeId, config: Arc<AeConfig>, node_seed: &Seed, now: Instant) -> Self {
        let mut rng = Rng::from_seed(node_seed.machine(Self::NAME));
        let tick = Ticker::start(now, config.interval, config.timing, &mut rng);
        let store = Store::bounded(config.retention, config.limits());
        AntiEntropy {
            id,
            config,
            rng,
            peers: PeerView::default(),
            self_pos: None,
            topics: Vec::new(),
            store,
            staged: Vec::new(),
            staged_ids: std::collections::BTreeSet::new(),
            staged_bytes: 0,
            awaited: std::collections::BTreeMap::new(),
            tick,
            exchange: None,
            next_xid: 1,
            cursor: None,
            out: Outbox::default(),
            stats: AeStats::default(),
            check: None,
        }
    }

    /// Check every entry received from a peer with `check` before keeping it (rejected ones
    /// are counted in [`AeStats::forged`]).
    pub fn set_check(&mut self, _now: Instant, check: EntryCheck) {
        self.check = Some(check);
    }

    /// Side input: the peers partners are drawn from changed.
    pub fn handle_peers(&mut self, _now: Instant, peers: PeerView) {
        self.self_pos = peers.position(&self.id);
        self.peers = peers;
    }

    /// Reconcile `topic` from now on.
    pub fn subscribe(&mut self, _now: Instant, topic: TopicId) {
        if let Err(i) = self.topics.binary_search(&topic) {
            self.topics.insert(i, topic);
        }
    }

    /// Stop reconciling `topic` and drop its entries.
    pub fn unsubscribe(&mut self, _now: Instant, topic: TopicId) {
        if let Ok(i) = self.topics.binary_search(&topic) {
            self.topics.remove(i);
            self.store.remove_topic(topic);
            self.staged.retain(|e| e.stream.topic != topic);
            self.staged_ids.retain(|(s, _)| s.topic != topic);
            self.staged_bytes = self.staged.iter().map(|e| e.payload.len() + ENTRY_OVERHEAD).sum();
        }
    }

    /// Store a locally written entry; visible at once, whatever the commit mode.
    pub fn insert(&mut self, _now: Instant, entry: Entry) -> Inserted {
        self.store.insert(entry)
    }

    /// Open an exchange now (an on-demand Push, Pull or PushPull, §1.4), with `peer` or a
    /// uniformly random one. Returns the exchange id, or `None` if one is already in flight,
    /// no peer exists, or `mode` is Heads (opened with [`AntiEntropy::ask_heads`]).
    pub fn start_exchange(&mut self, now: Instant, mode: AeMode, peer: Option<NodeId>) -> Option<u64> {
        if self.exchange.is_some() || self.topics.is_empty() || mode == AeMode::Heads {
            return None;
        }
        let peer = match peer {
            Some(p) => p,
            None => self.peers.pick_except(self.self_pos, &mut self.rng)?,
        };
        Some(self.open(now, mode, peer, None))
    }

    /// Ask `peer` for its heads on behalf of a new subscriber of `topic` (§4.7): a Heads
    /// exchange, whose outcome comes back as one [`AeEvent::Heads`] for `topic` (the summaries,
    /// or `None` when it fails). Returns the exchange id, or `None` when another exchange is in
    /// flight (or nothing is reconciled): no event follows, the host has no heads for now.
    pub fn ask_heads(&mut self, now: Instant, topic: TopicId, peer: NodeId) -> Option<u64> {
        if self.exchange.is_some() || self.topics.is_empty() {
            return None;
        }
        Some(self.open(now, AeMode::Heads, peer, Some(topic)))
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

    /// Bytes of state this machine accounts for: the store, the staged entries and the
    /// awaited Deltas. Each is capped.
    pub fn state_bytes(&self) -> usize {
        self.store
            .bytes()
            .saturating_add(self.staged_bytes)
            .saturating_add(self.awaited.len() * 64)
            .saturating_add(std::mem::size_of::<Self>())
    }

    /// Topics reconciled, ascending.
    pub fn topics(&self) -> &[TopicId] {
        &self.topics
    }

    /// The earliest armed timer: the exchange's reply deadline, or the tick.
    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let mut e = Earliest::new();
        e.offer(self.exchange.map(|x| x.deadline), Timer::Reply);
        e.offer(Some(self.tick.deadline()), Timer::Tick);
        e.get()
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Reply => {
                if let Some(ex) = self.exchange {
                    self.abort(ex);
                }
            }
            Timer::Tick => {
                self.tick.advance(now, &mut self.rng);
                self.commit_staged();
                if self.exchange.is_some() || self.topics.is_empty() {
                    self.stats.ticks_skipped += 1;
                } else if let Some(peer) = self.peers.pick_except(self.self_pos, &mut self.rng) {
                    self.open(now, self.config.mode, peer, None);
                } else {
                    self.stats.ticks_skipped += 1;
                }
            }
        }
    }
}

/// Anti-entropy's timer kinds, in the order simultaneous ones are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The exchange in flight got no reply in time.
    Reply,
    /// The periodic exchange.
    Tick,
}

impl Machine for AntiEntropy {
    type Message = AeMessage;
    type Event = AeEvent;

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: AeMessage) {
        match msg {
            AeMessage::Syn { xid, mode, scope, digest } => self.on_syn(now, from, xid, mode, scope, digest),
            AeMessage::SynAck { xid, scope, digest, delta, more: _, proofs } => {
                self.on_syn_ack(from, xid, scope, digest, delta, proofs)
            }
            AeMessage::Delta { xid, delta, more: _ } => self.on_delta(now, from, xid, delta),
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

    fn poll_transmit(&mut self) -> Option<Transmit<AeMessage>> {
        self.out.pop_transmit()
    }

    fn poll_event(&mut self) -> Option<AeEvent> {
        self.out.pop_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(at, _)| at)
    }
}
