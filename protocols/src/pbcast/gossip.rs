//! pbcast's wire handlers and its tick: digests (§4.5), solicitation and retransmission
//! (§4.6), the gap check and the anti-entropy hook (§4.7).

use super::config::valid_summary;
use super::stream::{Cursor, Held};
use super::{Data, MsgId, PROOFS_MAX, PbEvent, PbMessage, Pbcast, RETX_PEERS_MAX, SEQ_MAX, Via};
use crate::anti_entropy::StreamSummary;
use crate::auth::Proof;
use crate::id::{NodeId, Seq, TopicId};

use crate::time::Instant;
use crate::wire::{self, DATAGRAM_BUDGET};

impl Pbcast {
    fn valid_data(&self, data: &Data) -> bool {
        (1..=SEQ_MAX).contains(&data.id.seq) && data.payload.len() <= self.config.max_payload
    }

    pub(super) fn on_data(&mut self, now: Instant, data: Data, via: Via) {
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
        if t.streams.get(&origin).is_some_and(|s| s.held.contains_key(&seq)) {
            self.stats.duplicates += 1;
            return;
        }
        // Nothing about a stream changes on the word of an entry whose seal does not check.
        let Some(proof) = data.checked_proof(self.auth.as_ref()) else {
            self.stats.forged += 1;
            return;
        };
        if !t.admits(&origin, self.config.streams_max) {
            self.stats.refused_streams += 1;
            return;
        }
        let over = t.bytes.saturating_add(data.payload.len()) > self.config.history_bytes;
        let stream = t.stream_mut(origin);
        stream.keep_proof(proof);
        if stream.cursor.is_none() && !waiting {
            stream.cursor = Some(Cursor::at(seq)); // first evidence
        }
        let held_back = stream.cursor.is_none_or(|c| seq > c.next);
        if over && held_back {
            // A full history keeps no more entries waiting for earlier ones (they would sit
            // outside its bounds); repair brings this one again once the earlier ones came.
            self.stats.hold_refused += 1;
            return;
        }
        let held = Held {
            payload: data.payload,
            published_at: data.published_at,
            received_at: now,
            via,
            seal: data.seal,
        };
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

    pub(super) fn on_digest(&mut self, from: NodeId, topic: TopicId, summaries: Vec<StreamSummary>) {
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
            if !t.admits(&origin, self.config.streams_max) {
                self.stats.refused_streams += 1;
                continue;
            }
            let stream = t.stream_mut(origin);
            stream.learn(r.max, round);
            // A digest never fixes a cursor (its word is not proof): with none yet, what it
            // lists is asked for, and the first entry that comes (checked) is the evidence.
            let from = match stream.cursor {
                Some(c) => {
                    if r.max >= c.next && !stream.held.contains_key(&c.next) {
                        t.lagging.insert(origin);
                    }
                    c.next
                }
                None => r.floor,
            };
            let stream = t.stream_mut(origin);
            let mut seqs = Vec::new();
            for s in r.floor.max(from)..=r.max {
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

    pub(super) fn on_solicit(&mut self, from: NodeId, topic: TopicId, wants: Vec<(NodeId, Vec<Seq>)>) {
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
        // One peer takes at most a quarter of the round's budget, so no member can use it all.
        let (share_msgs, share_bytes) =
            ((self.config.retx_msgs / 4).max(1), (self.config.retx_bytes / 4).max(1));
        let (mut peer_msgs, mut peer_bytes) = self.retx_by_peer.get(&from).copied().unwrap_or((0, 0));
        'all: for (origin, seqs) in &wants {
            for &seq in seqs {
                let round_spent =
                    self.retx_msgs >= self.config.retx_msgs || self.retx_bytes >= self.config.retx_bytes;
                let peer_spent = peer_msgs >= share_msgs || peer_bytes >= share_bytes;
                if round_spent || peer_spent {
                    self.stats.retx_limited += left;
                    break 'all;
                }
                left -= 1;
                match t.repair_data(*origin, seq) {
                    Some(d) => {
                        self.retx_msgs += 1;
                        self.retx_bytes += d.payload.len();
                        peer_msgs += 1;
                        peer_bytes += d.payload.len();
                        entries.push(d);
                    }
                    None => self.stats.solicit_absent += 1,
                }
            }
        }
        if self.retx_by_peer.len() < RETX_PEERS_MAX || self.retx_by_peer.contains_key(&from) {
            self.retx_by_peer.insert(from, (peer_msgs, peer_bytes));
        }
        self.stats.retransmitted += entries.len() as u64;
        if entries.len() > self.config.batch_over {
            self.out.stream(from, PbMessage::Repair { entries });
        } else {
            for d in entries {
                self.send(from, PbMessage::Retransmit(d));
            }
        }
    }

    /// Answer a [`PbMessage::ProofWanted`] with the newest proof held of each stream named.
    /// Each proof counts as one retransmission against the round's and the peer's budgets.
    pub(super) fn on_proof_wanted(&mut self, from: NodeId, topic: TopicId, origins: Vec<NodeId>) {
        if origins.len() > PROOFS_MAX || !origins.windows(2).all(|w| w[0] < w[1]) {
            self.stats.malformed += 1;
            return;
        }
        let Some(t) = self.topics.get(&topic) else {
            self.stats.unknown_topic += 1;
            return;
        };
        let share = (self.config.retx_msgs / 4).max(1);
        let (mut peer_msgs, peer_bytes) = self.retx_by_peer.get(&from).copied().unwrap_or((0, 0));
        let mut proofs = Vec::new();
        for o in &origins {
            if self.retx_msgs >= self.config.retx_msgs || peer_msgs >= share {
                self.stats.retx_limited += 1;
                break;
            }
            if let Some(p) = t.streams.get(o).and_then(|s| s.proof()) {
                proofs.push(*p);
                self.retx_msgs += 1;
                peer_msgs += 1;
            }
        }
        if self.retx_by_peer.len() < RETX_PEERS_MAX || self.retx_by_peer.contains_key(&from) {
            self.retx_by_peer.insert(from, (peer_msgs, peer_bytes));
        }
        if !proofs.is_empty() {
            self.stats.proofs_sent += proofs.len() as u64;
            self.send(from, PbMessage::Proofs { topic, proofs });
        }
    }

    /// Take the proofs that came back: each that checks proves its seq, so the gap check can
    /// give up what is missing below it. Proofs for streams this node does not know are
    /// ignored (they create nothing).
    pub(super) fn on_proofs(&mut self, topic: TopicId, proofs: Vec<Proof>) {
        if proofs.len() > PROOFS_MAX {
            self.stats.malformed += 1;
            return;
        }
        let Some(t) = self.topics.get_mut(&topic).filter(|t| t.member) else {
            self.stats.unknown_topic += 1;
            return;
        };
        for p in proofs {
            let Some(stream) = t.streams.get_mut(&p.origin) else {
                continue;
            };
            if p.topic != topic.0 || !(1..=SEQ_MAX).contains(&p.seq) || p.seq <= stream.proven() {
                continue;
            }
            if !p.verify(self.auth.as_ref()) {
                self.stats.forged += 1;
                continue;
            }
            self.stats.proofs_received += 1;
            stream.keep_proof(p);
        }
    }

    pub(super) fn on_repair(&mut self, now: Instant, entries: Vec<Data>) {
        if entries.len() > self.config.solicit_max || !entries.iter().all(|d| self.valid_data(d)) {
            self.stats.malformed += 1;
            return;
        }
        for d in entries {
            self.on_data(now, d, Via::Repair);
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

    pub(super) fn deliver_all(&mut self, topic: TopicId) {
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        let origins: Vec<NodeId> = t.streams.keys().copied().collect();
        for origin in origins {
            t.deliver(origin, &mut self.out, &mut self.stats);
        }
        t.enforce_bounds(&self.config, &mut self.stats);
    }

    pub(super) fn on_tick(&mut self) {
        self.round += 1;
        self.retx_msgs = 0;
        self.retx_by_peer.clear();
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
        self.proof_hook();
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

    /// Per topic, one [`PbMessage::ProofWanted`] per tick to a random member, naming the
    /// streams whose next seq is overdue and known only from digests (proof is what lets the
    /// gap check give it up). A stream asked about for `4 × gap_after` rounds without an
    /// answer forgets what the digests said (counted in `unproven_forgotten`).
    fn proof_hook(&mut self) {
        let (round, gap_after) = (self.round, self.config.gap_after());
        let give_up = gap_after.saturating_mul(4).max(1);
        for (topic, t) in self.topics.iter_mut().filter(|(_, t)| t.member && t.awaiting_heads.is_none()) {
            let mut origins = Vec::new();
            let mut forgotten = Vec::new();
            let lagging: Vec<NodeId> = t.lagging.iter().copied().collect();
            for o in lagging {
                let Some(s) = t.streams.get_mut(&o) else {
                    continue;
                };
                let Some(c) = s.cursor else {
                    continue;
                };
                let next = c.next;
                let unproven = !s.held.contains_key(&next) && s.known_hi() >= next && s.proven() < next;
                let Some(since) = s.known_since(next).filter(|_| unproven) else {
                    s.proof_asked = 0;
                    continue;
                };
                if round.saturating_sub(since) < gap_after {
                    continue;
                }
                if s.proof_asked == 0 {
                    s.proof_asked = round;
                }
                if round.saturating_sub(s.proof_asked) >= give_up {
                    s.forget_unproven();
                    s.proof_asked = 0;
                    self.stats.unproven_forgotten += 1;
                    forgotten.push(o);
                    continue;
                }
                if origins.len() < PROOFS_MAX {
                    origins.push(o);
                }
            }
            for o in forgotten {
                t.refresh(o);
            }
            if origins.is_empty() {
                continue;
            }
            let Some((view, pos)) = self.views.get(topic) else {
                continue;
            };
            if let Some(to) = view.pick_except(*pos, &mut self.rng) {
                self.stats.proofs_wanted += 1;
                let msg = PbMessage::ProofWanted { topic: *topic, origins };
                if wire::encoded_len(&msg) > DATAGRAM_BUDGET {
                    self.out.stream(to, msg);
                } else {
                    self.out.datagram(to, msg);
                }
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
