//! pbcast's wire handlers and its tick: digests (§4.5), solicitation and retransmission
//! (§4.6), the gap check and the anti-entropy hook (§4.7).

use super::config::valid_summary;
use super::stream::{Cursor, Held};
use super::{Data, MsgId, PbEvent, PbMessage, Pbcast, SEQ_MAX, Via};
use crate::anti_entropy::StreamSummary;
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
        let stream = t.stream_mut(origin);
        if stream.held.contains_key(&seq) {
            self.stats.duplicates += 1;
            return;
        }
        if stream.cursor.is_none() && !waiting {
            stream.cursor = Some(Cursor::at(seq)); // first evidence
        }
        let held = Held { payload: data.payload, published_at: data.published_at, received_at: now, via };
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
                self.send(from, PbMessage::Retransmit(d));
            }
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
