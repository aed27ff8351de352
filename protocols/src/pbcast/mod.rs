//! Bimodal multicast, pbcast (Birman, Hayden, Ozkasap, Xiao, Budiu, Minsky, *Bimodal
//! Multicast*, ACM TOCS 17(2), 1999; PROTOCOLS.md §4).
//!
//! A message travels in two phases. **Phase one** is a best-effort multicast that the host
//! arranges: in the daemon the Scribe tree carries `Data{via: FirstPhase}` to the topic's
//! members, in the simulator the origin sends one datagram to every member ([`Pbcast::multicast`]).
//! **Phase two** repairs what phase one lost: every gossip period (`period`, T_g) each member
//! sends a digest of its *gossip buffer* (the entries it received during its last G local
//! rounds, summarized per origin exactly as anti-entropy summarizes a store, §1.1, reusing
//! [`StreamSummary`]) to `fanout` uniformly random other members; the receiver solicits what it
//! lacks from the digest's sender, oldest first; the sender retransmits from its bounded history,
//! up to a per-round limit. Entries leave the gossip buffer G rounds after this node received
//! them. Delivery to the local subscriber is at most once and FIFO per origin: an entry waits in
//! a hold buffer for the seqs before it, and a seq that cannot be had (known to exist for
//! `gap_after` rounds, or the hold buffer full) is announced as a [`PbEvent::Gap`]. The outcome
//! is Birman's bimodal guarantee: a message reaches almost all members or almost none.
//!
//! # Driving it
//!
//! The [`Machine`] contract: after every input drain `poll_transmit`, then `poll_event`, then
//! read `poll_timeout`. Local commands, called by the host between inputs:
//!
//! | command | what it does |
//! |---|---|
//! | [`Pbcast::set_topic_peers`] | the topic's members, partners are drawn from them (self may be included) |
//! | [`Pbcast::subscribe`] | become a member; [`Start`] says where streams start (§4.7) |
//! | [`Pbcast::handle_heads`] | the reply of the Heads exchange that `subscribe(.., Start::Heads)` asked for |
//! | [`Pbcast::unsubscribe`] | stop being a member |
//! | [`Pbcast::publish`] | stamp a message (origin, topic, seq), keep it, return the first-phase `Data` |
//! | [`Pbcast::multicast`] | send first-phase copies of a `Data` to chosen targets |
//! | [`Pbcast::handle_data`] | a `Data` that arrived by another path (tree, anti-entropy) |
//!
//! Events: [`PbEvent::Deliver`] (per-origin FIFO, at most once), [`PbEvent::Gap`],
//! [`PbEvent::HeadsWanted`] (run a Heads anti-entropy exchange with this peer and call
//! `handle_heads`) and [`PbEvent::PullWanted`] (run an on-demand anti-entropy Pull, §4.7).
//!
//! # Timers
//!
//! `pb_tick` every `period` (in `timing`, phased by default), and one heads deadline per topic
//! waiting for its start cursors. On equal deadlines the heads deadline is served first. A tick:
//! round += 1, retransmission budget reset, gossip buffers aged, digests sent for up to
//! `topics_per_round` topics (rotating), then the gap check and the anti-entropy pull hook.
//!
//! # Departures from PROTOCOLS.md §4, on purpose
//!
//! - **Known-missing is learned for whole prefixes.** Seqs are dense per stream, so a digest
//!   advertising `max` (or an entry `s`) proves every lower seq exists; `known_missing_since` is
//!   set for all of them, not only for the seqs the digest advertises. That is the field's own
//!   definition ("first learned that this seq exists and it lacks it") and lets it be stored as a
//!   step function instead of one value per seq.
//! - **A member never solicits below its cursor.** §4.6 excludes held, lost and pre-`start`
//!   seqs; a seq below `next` that is none of these was delivered and since evicted, and
//!   soliciting it again would only fetch what the subscriber already has.
//! - **Entries in a hold buffer are not evicted.** History eviction takes entries in the order
//!   they became evictable (when delivered, or on arrival if they will never be delivered here),
//!   so a held-back entry cannot be lost to eviction before its turn; the history may exceed
//!   its bound by at most the hold buffers (each ≤ `hold_max`).
//! - **Digests are sent for topics with something active.** A topic with an empty gossip
//!   buffer sends nothing and does not use one of the `topics_per_round` slots.
//! - **While waiting for heads** a new subscriber stores entries but ignores digests (it solicits
//!   nothing, §4.7); a stream absent from the heads reply starts at its lowest held seq.
//! - **[`Start::FromFirst`]** is added for a member that subscribed before anything was
//!   published (the simulator's setup, a topic's creator): every stream starts at seq 1.
//! - **Rounds of a source.** A source that is not a member keeps its own entries while they are
//!   active (G rounds) and forgets the topic when nothing is left.

mod stream;
#[cfg(test)]
mod tests;
mod topic;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use self::stream::summarize;
use self::stream::{Cursor, Held};
use self::topic::{StartRule, Topic};
pub use crate::anti_entropy::StreamSummary;
use crate::id::{NodeId, Seq, StreamId, TopicId};
use crate::machine::{Machine, Outbox, Transmit};
use crate::peers::PeerView;
use crate::rng::{Rng, Seed};
use crate::time::{Duration, Instant};
use crate::timer::{Ticker, Timing};
use crate::wire::{self, DATAGRAM_BUDGET, MessageKind, WireMessage};

/// A message's identity (PROTOCOLS.md §0.2): its origin, topic and per-(origin, topic) seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgId {
    /// The node that published it.
    pub origin: NodeId,
    /// The topic it was published on.
    pub topic: TopicId,
    /// Its sequence number in the stream (origin, topic), from 1.
    pub seq: Seq,
}

impl MsgId {
    /// The stream the message belongs to.
    pub fn stream(&self) -> StreamId {
        StreamId { topic: self.topic, origin: self.origin }
    }
}

/// How a node obtained an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Via {
    /// It published the entry itself (never on the wire).
    Local,
    /// The first-phase multicast (the tree, or the origin's direct copies).
    FirstPhase,
    /// A pbcast retransmission, solicited after a digest.
    Repair,
    /// An anti-entropy exchange (handed in by the host).
    AntiEntropy,
}

/// One message on the wire: first-phase copy or retransmission (PROTOCOLS.md §4.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    /// Its identity.
    pub id: MsgId,
    /// The origin's clock at publish time (informational).
    pub published_at: Instant,
    /// The application's bytes.
    pub payload: Bytes,
    /// How it travels.
    pub via: Via,
}

/// The pbcast wire messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PbMessage {
    /// A message, first phase or retransmission (a datagram unless over the budget).
    Data(Data),
    /// A summary of the sender's gossip buffer for one topic.
    Digest {
        /// The topic.
        topic: TopicId,
        /// One summary per stream with active entries, strictly ascending by stream.
        summaries: Vec<StreamSummary>,
    },
    /// A request for retransmissions, sent to a digest's sender.
    Solicit {
        /// The topic.
        topic: TopicId,
        /// Per origin (strictly ascending), the seqs wanted (strictly ascending, non-empty).
        wants: Vec<(NodeId, Vec<Seq>)>,
    },
    /// More than `batch_over` retransmissions for one solicitation, on a stream.
    Repair {
        /// The entries, each `via: Repair`.
        entries: Vec<Data>,
    },
}

impl WireMessage for PbMessage {
    const KIND: MessageKind = MessageKind::Pbcast;
}

/// One message handed to the local subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Its identity.
    pub id: MsgId,
    /// The application's bytes.
    pub payload: Bytes,
    /// The origin's clock at publish time.
    pub published_at: Instant,
    /// When this node first obtained it.
    pub received_at: Instant,
    /// How this node first obtained it.
    pub via: Via,
}

/// What pbcast tells its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbEvent {
    /// Hand this message to the subscriber (per origin in seq order, each at most once).
    Deliver(Delivery),
    /// Seqs `first..=last` of `origin` on `topic` can no longer be had; the subscriber will
    /// never see them.
    Gap {
        /// The topic.
        topic: TopicId,
        /// The stream's origin.
        origin: NodeId,
        /// First seq given up.
        first: Seq,
        /// Last seq given up.
        last: Seq,
    },
    /// A new subscriber needs the members' heads: run an anti-entropy exchange in Heads mode
    /// with `peer` for `topic` and pass the reply to [`Pbcast::handle_heads`] (§4.7).
    HeadsWanted {
        /// The topic subscribed to.
        topic: TopicId,
        /// The member to ask.
        peer: NodeId,
    },
    /// A seq of `topic` has been missing for G rounds: run one on-demand anti-entropy Pull
    /// for the topic and hand what it brings to [`Pbcast::handle_data`] (§4.7).
    PullWanted {
        /// The topic.
        topic: TopicId,
    },
}

/// Where a new subscriber's streams start (PROTOCOLS.md §4.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Ask a member for its heads first ([`PbEvent::HeadsWanted`]); streams start after
    /// them. Without any other member, every stream starts at its first evidence.
    Heads,
    /// Every stream starts at its first evidence: the first entry obtained or the floor of the
    /// first summary seen.
    FirstEvidence,
    /// Every stream starts at seq 1: nothing was published before this subscription.
    FromFirst,
}

/// pbcast settings (PROTOCOLS.md §10.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PbConfig {
    /// Gossip period T_g. Default 200 ms, after memberlist's LAN GossipInterval.
    pub period: Duration,
    /// Placement of the ticks. Default phased (a random offset per node, PROTOCOLS.md §9.4).
    pub timing: Timing,
    /// Digests per topic per round. Default 1 (Birman's fanout parameter; its value there is
    /// not checked). 0 turns repair off.
    pub fanout: usize,
    /// G: rounds an entry stays in the gossip buffer after this node received it. Default 20
    /// (PROTOCOLS.md §4.8: delivery ≥ 0.9999 at 20% loss needs G ≥ 15).
    pub gc_rounds: u64,
    /// Rounds a known-missing seq may wait before it is declared lost. Default `None`: 2·G.
    pub gap_after: Option<u64>,
    /// Summaries per digest, rotating when more streams are active. Default 64 [H].
    pub digest_streams: usize,
    /// Missing seqs listed per summary (M of §1.1). Default 32 [H].
    pub digest_missing_max: usize,
    /// Seqs per solicitation. Default 64 [H].
    pub solicit_max: usize,
    /// Rounds before the same seq is solicited again. Default 1 [H].
    pub solicit_backoff: u64,
    /// Retransmissions per round (Birman's round retransmission limit). Default 256 [H].
    pub retx_msgs: usize,
    /// Retransmitted payload bytes per round. Default 256 KiB [H].
    pub retx_bytes: usize,
    /// Topics that send digests per round, rotating. Default 16 [H].
    pub topics_per_round: usize,
    /// Entries per stream waiting for an earlier seq before a gap is declared. Default 1024 [H].
    pub hold_max: usize,
    /// Entries kept per topic. Default 4096 [H].
    pub history_msgs: usize,
    /// Payload bytes kept per topic. Default 16 MiB [H].
    pub history_bytes: usize,
    /// Retransmissions for one solicitation are batched on a stream when more than this.
    /// Default 4 [H].
    pub batch_over: usize,
    /// Largest payload accepted, published or received. Default 1 MiB [H].
    pub max_payload: usize,
    /// How long a new subscriber waits for its heads reply. Default 10 s (`ae_timeout`).
    pub heads_timeout: Duration,
    /// Ask the host for an anti-entropy pull when a seq has been missing for G rounds. Default
    /// on (the daemon runs anti-entropy); the standalone experiment turns it off.
    pub pull_on_missing: bool,
}

impl Default for PbConfig {
    fn default() -> Self {
        PbConfig {
            period: Duration::from_millis(200),
            timing: Timing::Phased,
            fanout: 1,
            gc_rounds: 20,
            gap_after: None,
            digest_streams: 64,
            digest_missing_max: 32,
            solicit_max: 64,
            solicit_backoff: 1,
            retx_msgs: 256,
            retx_bytes: 256 << 10,
            topics_per_round: 16,
            hold_max: 1024,
            history_msgs: 4096,
            history_bytes: 16 << 20,
            batch_over: 4,
            max_payload: 1 << 20,
            heads_timeout: Duration::from_secs(10),
            pull_on_missing: true,
        }
    }
}

impl PbConfig {
    /// Rounds after which a known-missing seq is declared lost (2·G unless set).
    pub fn gap_after(&self) -> u64 {
        self.gap_after.unwrap_or(2 * self.gc_rounds)
    }

    /// Check the settings a run cannot work with; the daemon refuses such a config at load.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = [
            (self.period == Duration::ZERO, "period"),
            (self.gc_rounds == 0, "gc_rounds"),
            (self.gap_after == Some(0), "gap_after"),
            (self.digest_streams == 0, "digest_streams"),
            (self.solicit_max == 0, "solicit_max"),
            (self.retx_msgs == 0, "retx_msgs"),
            (self.retx_bytes == 0, "retx_bytes"),
            (self.topics_per_round == 0, "topics_per_round"),
            (self.hold_max == 0, "hold_max"),
            (self.history_msgs == 0, "history_msgs"),
            (self.history_bytes == 0, "history_bytes"),
            (self.max_payload == 0, "max_payload"),
            (self.heads_timeout == Duration::ZERO, "heads_timeout"),
        ];
        if let Some((_, name)) = zero.iter().find(|(bad, _)| *bad) {
            return Err(ConfigError::Zero(name));
        }
        if self.fanout > FANOUT_MAX {
            return Err(ConfigError::TooLarge { name: "fanout", max: FANOUT_MAX });
        }
        if self.digest_missing_max > DIGEST_MISSING_LIMIT {
            return Err(ConfigError::TooLarge { name: "digest_missing_max", max: DIGEST_MISSING_LIMIT });
        }
        Ok(())
    }
}

/// The largest seq accepted from a peer. No real stream gets near it; the bound keeps every
/// cursor and counter far from overflow whatever a peer claims.
pub const SEQ_MAX: Seq = 1 << 62;

/// A summary that is consistent (§1.6) and within [`SEQ_MAX`].
fn valid_summary(s: &StreamSummary, missing_max: usize) -> bool {
    s.max <= SEQ_MAX && s.floor <= SEQ_MAX + 1 && s.is_consistent(missing_max)
}

/// The largest fanout accepted.
pub const FANOUT_MAX: usize = 64;
/// The largest `digest_missing_max` accepted (a summary must fit a datagram).
pub const DIGEST_MISSING_LIMIT: usize = 256;

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named setting must be greater than zero.
    #[error("pbcast setting `{0}` must be greater than zero")]
    Zero(&'static str),
    /// The named setting is above its limit.
    #[error("pbcast setting `{name}` must be at most {max}")]
    TooLarge {
        /// The setting.
        name: &'static str,
        /// Its limit.
        max: usize,
    },
}

/// Why a publish was refused; nothing was stored or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The payload is larger than `max_payload`.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Counters, for metrics and experiments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PbStats {
    /// Messages published here.
    pub published: u64,
    /// First-phase copies sent.
    pub first_phase_sent: u64,
    /// New entries obtained from others (any path).
    pub received: u64,
    /// Entries received that were already held.
    pub duplicates: u64,
    /// Entries handed to the subscriber.
    pub delivered: u64,
    /// Gap events, and the seqs they covered.
    pub gaps: u64,
    /// Seqs given up in gaps.
    pub gap_seqs: u64,
    /// Digests sent.
    pub digests_sent: u64,
    /// Digests received and acted on.
    pub digests_received: u64,
    /// Digests ignored: not a member of the topic, or waiting for heads.
    pub digests_ignored: u64,
    /// Solicitations sent.
    pub solicits_sent: u64,
    /// Seqs asked for in them.
    pub seqs_solicited: u64,
    /// Retransmissions sent.
    pub retransmitted: u64,
    /// Solicited seqs not served because of the per-round limit.
    pub retx_limited: u64,
    /// Solicited seqs this node did not hold.
    pub solicit_absent: u64,
    /// Entries evicted from history.
    pub evicted: u64,
    /// Messages for a topic this node has no role in (or is not a member of).
    pub unknown_topic: u64,
    /// Messages dropped as malformed (bounds, order, consistency, seq 0).
    pub malformed: u64,
}

/// The pbcast machine of one node. Drive it as described in [`crate::machine`]; the poll
/// order is transmits, then events, then the timeout.
#[derive(Debug)]
pub struct Pbcast {
    id: NodeId,
    config: Arc<PbConfig>,
    rng: Rng,
    tick: Ticker,
    round: u64,
    retx_msgs: usize,
    retx_bytes: usize,
    topics: BTreeMap<TopicId, Topic>,
    /// Topic members, per topic, with this node's position in the view.
    views: BTreeMap<TopicId, (PeerView, Option<usize>)>,
    /// The last seq this node published per topic (kept across unsubscribe).
    own_seq: BTreeMap<TopicId, Seq>,
    /// The last topic that sent digests; the next tick continues after it.
    topic_cursor: Option<TopicId>,
    out: Outbox<PbMessage, PbEvent>,
    stats: PbStats,
}

impl Pbcast {
    /// The machine name used to derive its RNG from the node seed.
    pub const NAME: &'static str = "pbcast";

    /// A machine for node `id`, started at `now`, with its RNG derived from the node's seed.
    /// The config should have passed [`PbConfig::validate`].
    pub fn new(id: NodeId, config: Arc<PbConfig>, node_seed: &Seed, now: Instant) -> Self {
        let mut rng = Rng::from_seed(node_seed.machine(Self::NAME));
        let tick = Ticker::start(now, config.period, config.timing, &mut rng);
        Pbcast {
            id,
            config,
            rng,
            tick,
            round: 0,
            retx_msgs: 0,
            retx_bytes: 0,
            topics: BTreeMap::new(),
            views: BTreeMap::new(),
            own_seq: BTreeMap::new(),
            topic_cursor: None,
            out: Outbox::default(),
            stats: PbStats::default(),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The local round counter (+1 per tick).
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The counters.
    pub fn stats(&self) -> &PbStats {
        &self.stats
    }

    /// The settings.
    pub fn config(&self) -> &PbConfig {
        &self.config
    }

    /// Replace the members of `topic` that partners are drawn from.
    pub fn set_topic_peers(&mut self, topic: TopicId, peers: PeerView) {
        let pos = peers.position(&self.id);
        self.views.insert(topic, (peers, pos));
    }

    /// True when this node is subscribed to `topic`.
    pub fn is_member(&self, topic: TopicId) -> bool {
        self.topics.get(&topic).is_some_and(|t| t.member)
    }

    /// Topics this node has a role in (member or source), ascending.
    pub fn topics(&self) -> impl Iterator<Item = TopicId> + '_ {
        self.topics.keys().copied()
    }

    /// True when `id` is in this node's history.
    pub fn holds(&self, id: &MsgId) -> bool {
        self.topics
            .get(&id.topic)
            .and_then(|t| t.streams.get(&id.origin))
            .is_some_and(|s| s.held.contains_key(&id.seq))
    }

    /// The next seq this node will deliver from `origin` on `topic`, once its cursor is fixed.
    pub fn next_delivery(&self, topic: TopicId, origin: NodeId) -> Option<Seq> {
        self.topics.get(&topic)?.streams.get(&origin)?.cursor.map(|c| c.next)
    }

    /// Entries held in `topic`'s history.
    pub fn history_len(&self, topic: TopicId) -> usize {
        self.topics.get(&topic).map_or(0, |t| t.msgs)
    }

    /// True when nothing is left to do: no entry in any gossip buffer, no known-missing seq,
    /// no subscription waiting for heads. Only new input can change anything after that.
    pub fn is_quiescent(&self) -> bool {
        self.topics.values().all(|t| !t.has_active() && !t.has_known_missing() && t.awaiting_heads.is_none())
    }

    /// True when some subscribed stream knows of a seq it neither holds nor has given up.
    pub fn has_known_missing(&self) -> bool {
        self.topics.values().any(Topic::has_known_missing)
    }

    /// Subscribe to `topic`: deliver its messages from the streams' starts (§4.7). With
    /// [`Start::Heads`] a [`PbEvent::HeadsWanted`] asks the host for a Heads exchange; until
    /// [`Pbcast::handle_heads`] (or `heads_timeout`) entries are stored but not delivered and
    /// nothing is solicited. Subscribing again is a no-op.
    pub fn subscribe(&mut self, now: Instant, topic: TopicId, start: Start) {
        if self.is_member(topic) {
            return;
        }
        let rule = match start {
            Start::FromFirst => StartRule::FromFirst,
            Start::Heads | Start::FirstEvidence => StartRule::FirstEvidence,
        };
        let me = self.id;
        let own_next = self.own_seq.get(&topic).map_or(1, |s| s + 1);
        let t = self
            .topics
            .entry(topic)
            .or_insert_with(|| Topic::new(topic, true, rule, self.config.digest_missing_max));
        t.member = true;
        t.start_rule = rule;
        // Our own stream is delivered from the next publish on.
        t.stream_mut(me).cursor = Some(Cursor::at(own_next));
        if start == Start::Heads {
            let peer = self.views.get(&topic).and_then(|(v, pos)| v.pick_except(*pos, &mut self.rng));
            if let Some(peer) = peer {
                let t = self.topics.get_mut(&topic).expect("inserted above");
                t.awaiting_heads = Some(now + self.config.heads_timeout);
                self.out.event(PbEvent::HeadsWanted { topic, peer });
            }
        }
    }

    /// The reply of the Heads exchange asked for by [`PbEvent::HeadsWanted`]: the partner's
    /// summaries of `topic`. Streams named start after their `max`; the others at first
    /// evidence. Summaries of other topics or that are inconsistent are ignored (counted).
    /// Ignored unless `topic` is waiting for heads.
    pub fn handle_heads(&mut self, _now: Instant, topic: TopicId, summaries: &[StreamSummary]) {
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        if t.awaiting_heads.is_none() {
            return;
        }
        let mut heads = Vec::with_capacity(summaries.len());
        for s in summaries {
            if s.stream.topic != topic || !valid_summary(s, DIGEST_MISSING_LIMIT) {
                self.stats.malformed += 1;
                continue;
            }
            heads.push((s.stream.origin, s.max));
        }
        t.resolve_heads(&heads, self.id);
        self.deliver_all(topic);
    }

    /// Stop delivering `topic`. A node that published on it within G rounds stays a source of
    /// its own entries until they leave the gossip buffer.
    pub fn unsubscribe(&mut self, topic: TopicId) {
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        if t.source_until >= self.round && t.streams.contains_key(&self.id) {
            t.keep_only_own(self.id);
        } else {
            self.topics.remove(&topic);
        }
    }

    /// Publish `payload` on `topic`: stamp it (this node, topic, next seq), keep it in history
    /// and the gossip buffer, deliver it locally if subscribed, and return the `Data` the host
    /// sends in the first phase (through the tree, or [`Pbcast::multicast`]). A node that is not
    /// a member becomes a source of the topic for G rounds (§4.1).
    pub fn publish(&mut self, now: Instant, topic: TopicId, payload: Bytes) -> Result<Data, PublishError> {
        if payload.len() > self.config.max_payload {
            return Err(PublishError::TooLarge { len: payload.len(), max: self.config.max_payload });
        }
        let seq = {
            let s = self.own_seq.entry(topic).or_insert(0);
            *s += 1;
            *s
        };
        let me = self.id;
        let round = self.round;
        let t = self.topics.entry(topic).or_insert_with(|| {
            Topic::new(topic, false, StartRule::FirstEvidence, self.config.digest_missing_max)
        });
        t.source_until = round + self.config.gc_rounds;
        let held = Held { payload: payload.clone(), published_at: now, received_at: now, via: Via::Local };
        t.store(me, seq, held, round);
        t.deliver(me, &mut self.out, &mut self.stats);
        t.enforce_bounds(&self.config, &mut self.stats);
        self.stats.published += 1;
        Ok(Data { id: MsgId { origin: me, topic, seq }, published_at: now, payload, via: Via::FirstPhase })
    }

    /// Send first-phase copies of `data` to each of `targets` (self skipped), in order: a
    /// datagram each, or a stream message if over the datagram budget.
    pub fn multicast<'a>(&mut self, data: &Data, targets: impl IntoIterator<Item = &'a NodeId>) {
        let copy = PbMessage::Data(Data { via: Via::FirstPhase, ..data.clone() });
        let over = wire::encoded_len(&copy) > DATAGRAM_BUDGET;
        for &to in targets {
            if to == self.id {
                continue;
            }
            self.stats.first_phase_sent += 1;
            if over {
                self.out.stream(to, copy.clone());
            } else {
                self.out.datagram(to, copy.clone());
            }
        }
    }

    /// A `Data` that reached this node by another path: the first-phase tree, or an
    /// anti-entropy exchange (with `via: AntiEntropy`). Handled exactly like one received from
    /// the pbcast wire.
    pub fn handle_data(&mut self, now: Instant, data: Data) {
        self.on_data(now, data);
    }

    fn valid_data(&self, data: &Data) -> bool {
        (1..=SEQ_MAX).contains(&data.id.seq)
            && data.via != Via::Local
            && data.payload.len() <= self.config.max_payload
    }

    fn on_data(&mut self, now: Instant, data: Data) {
        if !self.valid_data(&data) {
            self.stats.malformed += 1;
            return;
        }
        let MsgId { origin, topic, seq } = data.id;
        let round = self.round;
        let Some(t) = self.topics.get_mut(&topic).filter(|t| t.member) else {
            self.stats.unknown_topic += 1;
            return;
        };
        let waiting = t.awaiting_heads.is_some();
        let stream = t.stream_mut(origin);
        if stream.held.contains_key(&seq) {
            self.stats.duplicates += 1;
            return;
        }
        if stream.cursor.is_none() && !waiting {
            stream.cursor = Some(Cursor::at(seq)); // first evidence
        }
        let held =
            Held { payload: data.payload, published_at: data.published_at, received_at: now, via: data.via };
        t.store(origin, seq, held, round);
        self.stats.received += 1;
        t.deliver(origin, &mut self.out, &mut self.stats);
        t.enforce_bounds(&self.config, &mut self.stats);
    }

    fn valid_digest(&self, topic: TopicId, summaries: &[StreamSummary]) -> bool {
        summaries.len() <= self.config.digest_streams
            && summaries.windows(2).all(|w| w[0].stream < w[1].stream)
            && summaries
                .iter()
                .all(|s| s.stream.topic == topic && valid_summary(s, self.config.digest_missing_max))
    }

    fn on_digest(&mut self, from: NodeId, topic: TopicId, summaries: Vec<StreamSummary>) {
        if !self.valid_digest(topic, &summaries) {
            self.stats.malformed += 1;
            return;
        }
        let Some(t) = self.topics.get_mut(&topic) else {
            self.stats.unknown_topic += 1;
            return;
        };
        if !t.member || t.awaiting_heads.is_some() {
            self.stats.digests_ignored += 1;
            return;
        }
        self.stats.digests_received += 1;
        let (round, backoff, budget) = (self.round, self.config.solicit_backoff, self.config.solicit_max);
        let mut wants: Vec<(NodeId, Vec<Seq>)> = Vec::new();
        let mut asked = 0usize;
        for r in &summaries {
            let origin = r.stream.origin;
            if origin == self.id || r.is_empty() {
                continue;
            }
            let stream = t.stream_mut(origin);
            stream.learn(r.max, round);
            let cursor = *stream.cursor.get_or_insert_with(|| Cursor::at(r.floor)); // first evidence
            if r.max >= cursor.next && !stream.held.contains_key(&cursor.next) {
                t.lagging.insert(origin);
            }
            let stream = t.stream_mut(origin);
            let mut seqs = Vec::new();
            for s in r.floor.max(cursor.next)..=r.max {
                if asked >= budget {
                    break;
                }
                let fresh = stream.solicited.get(&s).is_none_or(|&at| round.saturating_sub(at) >= backoff);
                if r.covers(s) && !stream.held.contains_key(&s) && fresh {
                    stream.solicited.insert(s, round);
                    seqs.push(s);
                    asked += 1;
                }
            }
            if !seqs.is_empty() {
                wants.push((origin, seqs));
            }
            if asked >= budget {
                break;
            }
        }
        if !wants.is_empty() {
            self.stats.solicits_sent += 1;
            self.stats.seqs_solicited += asked as u64;
            self.send(from, PbMessage::Solicit { topic, wants });
        }
    }

    fn valid_solicit(&self, wants: &[(NodeId, Vec<Seq>)]) -> bool {
        let total: usize = wants.iter().map(|(_, s)| s.len()).sum();
        total <= self.config.solicit_max
            && wants.windows(2).all(|w| w[0].0 < w[1].0)
            && wants.iter().all(|(_, seqs)| {
                !seqs.is_empty()
                    && seqs[0] >= 1
                    && seqs[seqs.len() - 1] <= SEQ_MAX
                    && seqs.windows(2).all(|w| w[0] < w[1])
            })
    }

    fn on_solicit(&mut self, from: NodeId, topic: TopicId, wants: Vec<(NodeId, Vec<Seq>)>) {
        if !self.valid_solicit(&wants) {
            self.stats.malformed += 1;
            return;
        }
        let Some(t) = self.topics.get(&topic) else {
            self.stats.unknown_topic += 1;
            return;
        };
        let mut entries = Vec::new();
        let mut left = wants.iter().map(|(_, s)| s.len() as u64).sum::<u64>();
        'all: for (origin, seqs) in &wants {
            for &seq in seqs {
                if self.retx_msgs >= self.config.retx_msgs || self.retx_bytes >= self.config.retx_bytes {
                    self.stats.retx_limited += left;
                    break 'all;
                }
                left -= 1;
                match t.repair_data(*origin, seq) {
                    Some(d) => {
                        self.retx_msgs += 1;
                        self.retx_bytes += d.payload.len();
                        entries.push(d);
                    }
                    None => self.stats.solicit_absent += 1,
                }
            }
        }
        self.stats.retransmitted += entries.len() as u64;
        if entries.len() > self.config.batch_over {
            self.out.stream(from, PbMessage::Repair { entries });
        } else {
            for d in entries {
                self.send(from, PbMessage::Data(d));
            }
        }
    }

    fn on_repair(&mut self, now: Instant, entries: Vec<Data>) {
        if entries.len() > self.config.solicit_max || !entries.iter().all(|d| self.valid_data(d)) {
            self.stats.malformed += 1;
            return;
        }
        for d in entries {
            self.on_data(now, d);
        }
    }

    /// A datagram, or a stream message when the encoded frame is over the datagram budget.
    fn send(&mut self, to: NodeId, msg: PbMessage) {
        if wire::encoded_len(&msg) > DATAGRAM_BUDGET {
            self.out.stream(to, msg);
        } else {
            self.out.datagram(to, msg);
        }
    }

    fn deliver_all(&mut self, topic: TopicId) {
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        let origins: Vec<NodeId> = t.streams.keys().copied().collect();
        for origin in origins {
            t.deliver(origin, &mut self.out, &mut self.stats);
        }
        t.enforce_bounds(&self.config, &mut self.stats);
    }

    fn on_tick(&mut self) {
        self.round += 1;
        self.retx_msgs = 0;
        self.retx_bytes = 0;
        let (round, g) = (self.round, self.config.gc_rounds);
        for t in self.topics.values_mut() {
            t.expire(round, g);
        }
        self.send_digests();
        let (gap_after, hold_max) = (self.config.gap_after(), self.config.hold_max);
        for t in self.topics.values_mut() {
            t.check_gaps(round, gap_after, hold_max, &mut self.out, &mut self.stats);
            t.enforce_bounds(&self.config, &mut self.stats);
        }
        if self.config.pull_on_missing {
            self.pull_hook();
        }
        self.topics.retain(|_, t| t.member || t.source_until >= round || !t.streams.is_empty());
    }

    /// Digests for up to `topics_per_round` topics with active entries, continuing after the
    /// last topic served.
    fn send_digests(&mut self) {
        if self.config.fanout == 0 {
            return;
        }
        let busy: Vec<TopicId> =
            self.topics.iter().filter(|(_, t)| t.has_active()).map(|(id, _)| *id).collect();
        let chosen: Vec<TopicId> = if busy.len() <= self.config.topics_per_round {
            busy
        } else {
            let after = self.topic_cursor;
            let tail = busy.iter().filter(|t| after.is_none_or(|a| **t > a));
            let head = busy.iter().filter(|t| after.is_some_and(|a| **t <= a));
            let chosen: Vec<TopicId> = tail.chain(head).take(self.config.topics_per_round).copied().collect();
            self.topic_cursor = chosen.last().copied();
            chosen
        };
        for topic in chosen {
            let Some((view, pos)) = self.views.get(&topic) else {
                continue;
            };
            let partners: Vec<NodeId> = if self.config.fanout == 1 {
                view.pick_except(*pos, &mut self.rng).into_iter().collect()
            } else {
                view.pick_others(&self.id, self.config.fanout, &mut self.rng)
            };
            if partners.is_empty() {
                continue;
            }
            let Some(t) = self.topics.get_mut(&topic) else {
                continue;
            };
            let summaries = t.digest(self.config.digest_streams);
            let msg = PbMessage::Digest { topic, summaries };
            for to in partners {
                self.stats.digests_sent += 1;
                self.send(to, msg.clone());
            }
        }
    }

    /// One `PullWanted` per topic per tick, when a stream's next seq has been known missing
    /// for G rounds and no pull was asked for it yet.
    fn pull_hook(&mut self) {
        let (round, g) = (self.round, self.config.gc_rounds);
        for (topic, t) in self.topics.iter_mut().filter(|(_, t)| t.member && t.awaiting_heads.is_none()) {
            let mut wanted = false;
            let lagging: Vec<NodeId> = t.lagging.iter().copied().collect();
            for o in &lagging {
                let Some(s) = t.streams.get_mut(o) else {
                    continue;
                };
                let Some(c) = s.cursor else {
                    continue;
                };
                let missing = !s.held.contains_key(&c.next) && s.known_hi() >= c.next;
                let long = s.known_since(c.next).is_some_and(|r| round.saturating_sub(r) >= g);
                if missing && long && s.pull_asked != c.next {
                    s.pull_asked = c.next;
                    wanted = true;
                }
            }
            if wanted {
                self.out.event(PbEvent::PullWanted { topic: *topic });
            }
        }
    }
}

impl Machine for Pbcast {
    type Message = PbMessage;
    type Event = PbEvent;

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: PbMessage) {
        match msg {
            PbMessage::Data(data) => self.on_data(now, data),
            PbMessage::Digest { topic, summaries } => self.on_digest(from, topic, summaries),
            PbMessage::Solicit { topic, wants } => self.on_solicit(from, topic, wants),
            PbMessage::Repair { entries } => self.on_repair(now, entries),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<TopicId> = self
            .topics
            .iter()
            .filter(|(_, t)| t.awaiting_heads.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for topic in expired {
            if let Some(t) = self.topics.get_mut(&topic) {
                t.resolve_heads(&[], self.id);
            }
            self.deliver_all(topic);
        }
        if self.tick.is_due(now) {
            self.tick.advance(now, &mut self.rng);
            self.on_tick();
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit<PbMessage>> {
        self.out.pop_transmit()
    }

    fn poll_event(&mut self) -> Option<PbEvent> {
        self.out.pop_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let heads = self.topics.values().filter_map(|t| t.awaiting_heads).min();
        let tick = self.tick.deadline();
        Some(heads.map_or(tick, |h| h.min(tick)))
    }
}
