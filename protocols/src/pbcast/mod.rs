//! Bimodal multicast, pbcast (Birman, Hayden, Ozkasap, Xiao, Budiu, Minsky, *Bimodal
//! Multicast*, ACM TOCS 17(2), 1999; PROTOCOLS.md §4).
//!
//! A message travels in two phases. **Phase one** is a best-effort multicast that the host
//! arranges: in the daemon the Scribe tree carries first-phase `Data` to the topic's
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
//! The [`Machine`](crate::Machine) contract: after every input drain `poll_transmit`, then `poll_event`, then
//! read `poll_timeout`. Other inputs, called by the host between those (the naming rule of
//! [`crate::machine`]):
//!
//! | input | what it does |
//! |---|---|
//! | [`Pbcast::handle_topic_peers`] | side input: the topic's members, partners are drawn from them (self may be included) |
//! | [`Pbcast::handle_heads`] | side input: the reply (or failure) of the Heads exchange that `subscribe(.., Start::Heads)` asked for |
//! | [`Pbcast::handle_data`] | side input: a `Data` that arrived by another path (tree, rumor, anti-entropy) and how |
//! | [`Pbcast::subscribe`] | command: become a member; [`Start`] says where streams start (§4.7) |
//! | [`Pbcast::unsubscribe`] | command: stop being a member |
//! | [`Pbcast::publish`] | command: stamp a message (origin, topic, seq), keep it, return the first-phase `Data` |
//! | [`Pbcast::multicast`] | command: send first-phase copies of a `Data` to chosen targets |
//!
//! Events: [`PbEvent::Deliver`] (per-origin FIFO, at most once), [`PbEvent::Gap`],
//! [`PbEvent::HeadsWanted`] (run a Heads anti-entropy exchange with this peer and call
//! `handle_heads`) and [`PbEvent::PullWanted`] (run an on-demand anti-entropy Pull, §4.7).
//!
//! # Timers
//!
//! `pb_tick` every `period` (in `timing`, phased by default), and one heads deadline per topic
//! waiting for its start cursors (the idiom of [`crate::machine#timers`]). On equal deadlines
//! the heads deadlines are served first, by topic. A tick:
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
//! - **A source forgets the topic** once its own entries have left the gossip buffer (§4.2
//!   says it keeps them G rounds; it then has no role left).
//! - **A member delivers its own messages** at publish time (`via: Local`); §4.7 is silent.
//! - **No `via` on the wire.** §4.3's `Data` carries how it travels; here the message kind
//!   says it ([`PbMessage::Data`] first phase, [`PbMessage::Retransmit`] and
//!   [`PbMessage::Repair`] repair), so a peer cannot claim a path it did not take, and each
//!   copy is a byte shorter.
//! - **Summary truncation.** §1.1 lowers a truncated summary's `max` to "the (M+1)-th missing
//!   seq − 1", which is itself a missing seq when the cut falls inside a run of missing seqs,
//!   and §1.6's consistency check then rejects the summary. [`summarize`] (and
//!   `anti_entropy::Store::summary`, fixed alongside) lowers `max` to the last held seq before
//!   that run instead.
//! - **A bound on seqs from peers**: anything above [`SEQ_MAX`] (2^62) is malformed, so no
//!   cursor or counter can be pushed to overflow.
//! - [`MsgId`] (PROTOCOLS.md §0.2) is defined here until another machine needs it in `id`.
//!
//! # Authenticity (what a member that lies can and cannot do)
//!
//! Every message carries its origin's [`Seal`](crate::auth::Seal): an Ed25519 signature by
//! the author's node key over (origin, topic, seq, publish time, SHA-256 of the payload). A
//! stream origin's first 24 bytes are its author's key, so nobody can seal for an origin that
//! is not theirs. A receiver checks the seal (after the duplicate check, so a copy it holds
//! costs no signature check) before anything about the stream changes; a forged entry is
//! dropped and counted (`forged`).
//!
//! - **Digests are hints, not proof.** A digest line makes this node solicit, never fixes a
//!   cursor, and never makes it give anything up: a gap is announced only below a seq *proven*
//!   to exist (an entry whose seal checked, or a [`Proof`](crate::auth::Proof): the seal and
//!   the payload's digest, without the payload). So no member can make a subscriber skip
//!   another origin's messages.
//! - **Proof of a stream's tail.** When the missing seq is the newest a digest spoke of, no
//!   later entry will prove it; after `gap_after` rounds the node sends
//!   [`PbMessage::ProofWanted`] to a random member each round and the answer
//!   ([`PbMessage::Proofs`], the newest proof that member holds) lets the gap check give the
//!   seqs up as usual. A line nobody proves in `4 × gap_after` rounds (forged, or lost
//!   everywhere) is forgotten (`unproven_forgotten`): the seqs are neither delivered nor
//!   announced until a later entry or proof names them, then they become a gap.
//! - **Heads need proofs** ([`Pbcast::handle_heads`]): a head without its seal is ignored.
//! - **Bounds a peer cannot push**: at most `streams_max` streams per topic (the rest refused,
//!   `refused_streams`), a hold buffer takes no entry while the history is full
//!   (`hold_refused`), and one peer takes at most a quarter of a round's retransmission budget
//!   (solicits and proof requests alike).

mod config;
mod gossip;
mod message;
mod stream;
#[cfg(test)]
mod tests;
mod topic;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use self::config::valid_summary;
pub use self::config::{ConfigError, DIGEST_MISSING_LIMIT, FANOUT_MAX, PbConfig, PublishError, SEQ_MAX};
pub use self::message::{Data, Delivery, MsgId, PROOFS_MAX, PbEvent, PbMessage, Start, Via};
pub use self::stream::summarize;
use self::stream::{Cursor, Held};
use self::topic::{StartRule, Topic};
pub use crate::anti_entropy::StreamSummary;
use crate::auth::{Authenticator, Proof};
use crate::id::{NodeId, Seq, TopicId};
use crate::machine::{Machine, Outbox, Transmit};
use crate::peers::PeerView;
use crate::rng::{Rng, Seed};
use crate::time::Instant;
use crate::timer::{Earliest, Ticker};
use crate::wire::{self, DATAGRAM_BUDGET};

/// Peers whose share of a round's retransmission budget is tracked; past it (a storm of
/// solicitors) the round's total budget still bounds the work.
pub const RETX_PEERS_MAX: usize = 4096;

/// A new subscription's heads reply names a stream's head with its publish time: one
/// published less than this before the heads were asked for is delivered (clocks of hosts
/// differ; a message this old delivered to a new subscription costs nothing).
pub const HEADS_RECENT: crate::Duration = crate::Duration::from_secs(1);

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
    /// Messages whose seal is not their origin's author's signature: dropped unseen.
    pub forged: u64,
    /// Entries, digest lines and heads of a stream beyond `streams_max` per topic: dropped.
    pub refused_streams: u64,
    /// Entries waiting for earlier seqs refused because the topic's history was full.
    pub hold_refused: u64,
    /// `ProofWanted` requests sent.
    pub proofs_wanted: u64,
    /// Proofs sent answering `ProofWanted`.
    pub proofs_sent: u64,
    /// Proofs received that checked and proved a new seq.
    pub proofs_received: u64,
    /// Streams whose digest-only hints nobody proved in time, forgotten.
    pub unproven_forgotten: u64,
}

/// The pbcast machine of one node. Drive it as described in [`crate::machine`]; the poll
/// order is transmits, then events, then the timeout.
#[derive(Debug)]
pub struct Pbcast {
    id: NodeId,
    /// Seals this node's messages and checks everyone else's.
    auth: Arc<dyn Authenticator>,
    config: Arc<PbConfig>,
    rng: Rng,
    tick: Ticker,
    round: u64,
    retx_msgs: usize,
    retx_bytes: usize,
    /// What each peer took of this round's retransmission budget (a quarter at most each).
    retx_by_peer: BTreeMap<NodeId, (usize, usize)>,
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

    /// Bytes this machine accounts for: every topic's held payloads and its per-entry and
    /// per-stream bookkeeping (the views are shared with the host and not counted).
    pub fn state_bytes(&self) -> usize {
        self.topics.values().map(Topic::state_bytes).fold(0, usize::saturating_add)
    }

    /// A machine for node `id`, started at `now`, with its RNG derived from the node's seed.
    /// The config should have passed [`PbConfig::validate`].
    pub fn new(
        id: NodeId,
        auth: Arc<dyn Authenticator>,
        config: Arc<PbConfig>,
        node_seed: &Seed,
        now: Instant,
    ) -> Self {
        let mut rng = Rng::from_seed(node_seed.machine(Self::NAME));
        let tick = Ticker::start(now, config.period, config.timing, &mut rng);
        Pbcast {
            id,
            auth,
            config,
            rng,
            tick,
            round: 0,
            retx_msgs: 0,
            retx_bytes: 0,
            retx_by_peer: BTreeMap::new(),
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

    /// Side input: the members of `topic` that partners are drawn from changed.
    pub fn handle_topic_peers(&mut self, _now: Instant, topic: TopicId, peers: PeerView) {
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
            Start::FromFirst | Start::After(_) => StartRule::FromFirst,
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
        if let Start::After(cursors) = &start {
            for &(origin, last) in cursors {
                if origin != me {
                    t.stream_mut(origin).cursor = Some(Cursor::at(last.saturating_add(1)));
                }
            }
        }
        if start == Start::Heads {
            let peer = self.views.get(&topic).and_then(|(v, pos)| v.pick_except(*pos, &mut self.rng));
            match peer {
                Some(peer) => {
                    t.awaiting_heads = Some(now + self.config.heads_timeout);
                    t.heads_asked_at = now;
                    self.out.event(PbEvent::HeadsWanted { topic, peer });
                }
                // No other member known: whatever is published from now on is ours to deliver,
                // from seq 1 (first evidence would silently skip a lost first message).
                None => t.start_rule = StartRule::FromFirst,
            }
        }
    }

    /// Side input: the outcome of the Heads exchange asked for by [`PbEvent::HeadsWanted`].
    /// A head published less than [`HEADS_RECENT`] before the request (by its origin's clock
    /// against this node's) is delivered, with what arrived while the request was out.
    /// `Some((summaries, proofs))`: the partner's summaries of `topic` and, for each, the
    /// proof that its `max` exists; a stream whose head comes with a proof that checks starts
    /// after it, the others from seq 1 (those the partner did not name) or as if unnamed
    /// (a missing or forged proof: counted); summaries of other topics or that are
    /// inconsistent are ignored (counted). `None`: the exchange failed (no reply, or no member to ask);
    /// streams start at their first evidence, as after `heads_timeout`. Ignored unless `topic`
    /// is waiting for heads.
    pub fn handle_heads(
        &mut self,
        _now: Instant,
        topic: TopicId,
        heads: Option<(&[StreamSummary], &[Proof])>,
    ) {
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        if t.awaiting_heads.is_none() {
            return;
        }
        match heads {
            Some((summaries, proofs)) => {
                let mut heads = Vec::with_capacity(summaries.len());
                for s in summaries {
                    if s.stream.topic != topic || !valid_summary(s, DIGEST_MISSING_LIMIT) {
                        self.stats.malformed += 1;
                        continue;
                    }
                    if s.max == 0 {
                        continue;
                    }
                    // A head counts only with its proof: its origin's seal over message `max`.
                    let proof = proofs
                        .iter()
                        .find(|p| p.origin == s.stream.origin && p.topic == topic.0 && p.seq == s.max);
                    if !t.admits(&s.stream.origin, self.config.streams_max) {
                        self.stats.refused_streams += 1;
                        continue;
                    }
                    match proof {
                        Some(p) if p.verify(self.auth.as_ref()) => {
                            // The partner may have got a message published after this node
                            // subscribed before it answered (the request waited for a
                            // connection, say): a head published no earlier than
                            // HEADS_RECENT before the request is delivered too, and so is
                            // what arrived meanwhile. A message up to that old delivered to a
                            // new subscription costs nothing; one published after it and
                            // skipped would be a silent loss.
                            let asked = t.heads_asked_at.as_micros().saturating_sub(HEADS_RECENT.as_micros());
                            let start_after = if p.published_at >= asked {
                                let held =
                                    t.streams.get(&s.stream.origin).and_then(|st| st.held.keys().next());
                                held.map_or(s.max, |first| first.min(s.max)).saturating_sub(1)
                            } else {
                                s.max
                            };
                            heads.push((s.stream.origin, start_after));
                            t.stream_mut(s.stream.origin).keep_proof(*p);
                        }
                        Some(_) => self.stats.forged += 1,
                        None => self.stats.malformed += 1,
                    }
                }
                t.resolve_heads(Some(&heads), self.id);
            }
            None => t.resolve_heads(None, self.id),
        }
        self.deliver_all(topic);
    }

    /// Side input: what this node kept of `topic` before a restart (DESIGN.md, "Durability").
    /// `own_last` is the last seq it published on the topic: the stream continues after it.
    /// `entries` are retained messages, held again to serve repairs: this node's own become
    /// active, so its digests advertise them for G rounds (a publisher that crashed before its
    /// first-phase copies left gets them repaired); others' are kept only if this node is a
    /// member (subscribe first, with [`Start::After`] their seqs, so nothing is delivered
    /// twice). Call it before subscribing to `topic` when `own_last` is set, so the own stream's
    /// cursor starts after it.
    pub fn handle_restored(&mut self, now: Instant, topic: TopicId, own_last: Seq, entries: Vec<Data>) {
        if own_last > 0 {
            let s = self.own_seq.entry(topic).or_insert(0);
            *s = (*s).max(own_last.min(SEQ_MAX));
        }
        let me = self.id;
        let round = self.round;
        let gc = self.config.gc_rounds;
        for data in entries {
            if !self.valid_restored(&data, topic) {
                self.stats.malformed += 1;
                continue;
            }
            let origin = data.id.origin;
            let ours = origin == me;
            let missing_max = self.config.digest_missing_max;
            let t = match self.topics.get_mut(&topic) {
                Some(t) => t,
                None if ours => self
                    .topics
                    .entry(topic)
                    .or_insert_with(|| Topic::new(topic, false, StartRule::FirstEvidence, missing_max)),
                None => continue,
            };
            if !ours && !t.member {
                continue;
            }
            if ours {
                t.source_until = round + gc;
            }
            if t.streams.get(&origin).is_some_and(|s| s.held.contains_key(&data.id.seq)) {
                continue;
            }
            let via = if ours { Via::Local } else { Via::AntiEntropy };
            // The store kept it after its seal checked: it proves its seq.
            let proof = data.proof();
            let held = Held {
                payload: data.payload,
                published_at: data.published_at,
                received_at: now,
                via,
                seal: data.seal,
            };
            t.store(origin, data.id.seq, held, round);
            t.stream_mut(origin).keep_proof(proof);
        }
        if let Some(t) = self.topics.get_mut(&topic) {
            t.enforce_bounds(&self.config, &mut self.stats);
        }
    }

    fn valid_restored(&self, data: &Data, topic: TopicId) -> bool {
        data.id.topic == topic
            && (1..=SEQ_MAX).contains(&data.id.seq)
            && data.payload.len() <= self.config.max_payload
    }

    /// Stop delivering `topic`. A node that published on it within G rounds stays a source of
    /// its own entries until they leave the gossip buffer.
    pub fn unsubscribe(&mut self, _now: Instant, topic: TopicId) {
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
        let digest = crate::auth::payload_digest(&payload);
        let seal = crate::auth::seal_digest(self.auth.as_ref(), &me, topic.0, seq, now.as_micros(), &digest);
        let held =
            Held { payload: payload.clone(), published_at: now, received_at: now, via: Via::Local, seal };
        t.store(me, seq, held, round);
        let proof = Proof { origin: me, topic: topic.0, seq, published_at: now.as_micros(), digest, seal };
        t.stream_mut(me).keep_proof(proof);
        t.deliver(me, &mut self.out, &mut self.stats);
        t.enforce_bounds(&self.config, &mut self.stats);
        self.stats.published += 1;
        Ok(Data { id: MsgId { origin: me, topic, seq }, published_at: now, payload, seal })
    }

    /// Send first-phase copies of `data` to each of `targets` (self skipped), in order: a
    /// datagram each, or a stream message if over the datagram budget.
    pub fn multicast<'a>(
        &mut self,
        _now: Instant,
        data: &Data,
        targets: impl IntoIterator<Item = &'a NodeId>,
    ) {
        let copy = PbMessage::Data(data.clone());
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

    /// Side input: a `Data` that reached this node by another path, and which: the
    /// first-phase tree or rumor mongering (`Via::FirstPhase`), or an anti-entropy exchange
    /// (`Via::AntiEntropy`). Handled exactly like one received from the pbcast wire;
    /// `Via::Local` is not a path by which anything arrives, and is counted as malformed.
    pub fn handle_data(&mut self, now: Instant, data: Data, via: Via) {
        if via == Via::Local {
            self.stats.malformed += 1;
            return;
        }
        self.on_data(now, data, via);
    }

    /// The earliest armed timer: a topic's heads deadline, or the tick.
    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let mut e = Earliest::new();
        for (topic, t) in &self.topics {
            e.offer(t.awaiting_heads, Timer::Heads(*topic));
        }
        e.offer(Some(self.tick.deadline()), Timer::Tick);
        e.get()
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Heads(topic) => {
                if let Some(t) = self.topics.get_mut(&topic) {
                    t.resolve_heads(None, self.id);
                }
                self.deliver_all(topic);
            }
            Timer::Tick => {
                self.tick.advance(now, &mut self.rng);
                self.on_tick();
            }
        }
    }
}

impl Machine for Pbcast {
    type Message = PbMessage;
    type Event = PbEvent;

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: PbMessage) {
        match msg {
            PbMessage::Data(data) => self.on_data(now, data, Via::FirstPhase),
            PbMessage::Retransmit(data) => self.on_data(now, data, Via::Repair),
            PbMessage::Digest { topic, summaries } => self.on_digest(from, topic, summaries),
            PbMessage::Solicit { topic, wants } => self.on_solicit(from, topic, wants),
            PbMessage::ProofWanted { topic, origins } => self.on_proof_wanted(from, topic, origins),
            PbMessage::Proofs { topic, proofs } => self.on_proofs(topic, proofs),
            PbMessage::Repair { entries } => self.on_repair(now, entries),
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

    fn poll_transmit(&mut self) -> Option<Transmit<PbMessage>> {
        self.out.pop_transmit()
    }

    fn poll_event(&mut self) -> Option<PbEvent> {
        self.out.pop_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(at, _)| at)
    }
}

/// pbcast's timer kinds, in the order simultaneous ones are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A subscription waiting for heads gives up (`heads_timeout`).
    Heads(TopicId),
    /// `pb_tick`.
    Tick,
}
