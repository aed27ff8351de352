//! The periodic side: one round of a query at this node's `agg_tick`, and the querier's
//! stopping rule (PROTOCOLS.md §5.2–5.5, §5.7).

use super::state::{Part, Pending, ceil_log2};
use super::{AggEvent, AggMessage, Aggregation, Algorithm, QueryId, QueryResult};
use crate::id::NodeId;

impl Aggregation {
    /// Members in the local view including self (N_view of §5.7).
    fn n_view(&self) -> u64 {
        self.peers.len() as u64 + u64::from(self.self_pos.is_none())
    }

    pub(super) fn round(&mut self, qid: QueryId) {
        let n_view = self.n_view();
        let (ttl_extra, retx_max, window) =
            (self.config.query_ttl_extra, self.config.aps_retx_max, self.config.aps_window);
        let joined_max = self.config.joined_rounds_max;
        let Some(st) = self.queries.get_mut(&qid) else { return };
        st.round = st.round.saturating_add(1);
        // The querier keeps its query for `max_rounds`; others at most `joined_rounds_max`.
        let rounds =
            if st.stopping.is_some() { st.query.max_rounds } else { st.query.max_rounds.min(joined_max) };
        if st.round > rounds.saturating_add(ttl_extra) {
            self.queries.remove(&qid);
            self.remember_finished(qid);
            self.stats.expired += 1;
            self.out.event(AggEvent::Expired(qid));
            return;
        }
        let round = st.round;
        let peer = self.peers.pick_except(self.self_pos, &mut self.rng);
        if peer.is_none() {
            self.stats.ticks_idle += 1;
            if let Part::Mass(mass) = &mut st.part {
                // Alone, the estimate is already the aggregate of all the node knows of.
                mass.received = true;
            }
        }
        let (out, stats) = (&mut self.out, &mut self.stats);
        match (&mut st.part, st.query.algorithm) {
            (Part::Extremum(m), _) => {
                if let Some(p) = peer {
                    out.datagram(p, AggMessage::ExtPush { query: st.query.clone(), m: *m });
                }
            }
            (Part::Mass(mass), Algorithm::PushPull) => {
                if mass.awaiting.take().is_some() {
                    stats.exchanges_lost += 1;
                }
                if let Some(p) = peer {
                    mass.awaiting = Some(p);
                    out.datagram(p, AggMessage::PpxRequest { query: st.query.clone(), s: mass.s, w: mass.w });
                }
            }
            (Part::Mass(mass), Algorithm::PushSum) => {
                if let Some(p) = peer {
                    let (hs, hw) = (mass.s * 0.5, mass.w * 0.5);
                    mass.s -= hs;
                    mass.w -= hw;
                    stats.transfers_sent += 1;
                    let query = st.query.clone();
                    out.datagram(p, AggMessage::PsMass { query, session: 0, floor: 0, seq: 0, s: hs, w: hw });
                }
            }
            (Part::Mass(mass), _) => {
                let Some(acked) = mass.acked.as_deref_mut() else { return };
                if let Some(p) = peer {
                    if acked.outstanding_to(&p) < window {
                        let (hs, hw) = (mass.s * 0.5, mass.w * 0.5);
                        mass.s -= hs;
                        mass.w -= hw;
                        acked.next_seq += 1;
                        let seq = acked.next_seq;
                        acked.outstanding.insert(seq, Pending { peer: p, s: hs, w: hw, last_sent: round });
                        let floor = acked.floor();
                        stats.transfers_sent += 1;
                        let query = st.query.clone();
                        let session = acked.session;
                        out.datagram(p, AggMessage::PsMass { query, session, floor, seq, s: hs, w: hw });
                    } else {
                        stats.window_full += 1;
                    }
                }
                // Retransmit the oldest (last_sent, peer, seq) first.
                let mut due: Vec<(u32, NodeId, u64)> = acked
                    .outstanding
                    .iter()
                    .filter(|(_, p)| p.last_sent < round)
                    .map(|(q, p)| (p.last_sent, p.peer, *q))
                    .collect();
                due.sort_unstable();
                due.truncate(retx_max);
                let floor = acked.floor();
                for (_, p, seq) in due {
                    if let Some(pending) = acked.outstanding.get_mut(&seq) {
                        pending.last_sent = round;
                        stats.retransmissions += 1;
                        out.datagram(
                            p,
                            AggMessage::PsMass {
                                query: st.query.clone(),
                                session: acked.session,
                                floor,
                                seq,
                                s: pending.s,
                                w: pending.w,
                            },
                        );
                    }
                }
            }
        }
        self.evaluate(qid, n_view);
    }

    /// The querier's stopping rule at the end of its round (§5.7).
    fn evaluate(&mut self, qid: QueryId, n_view: u64) {
        let Some(st) = self.queries.get_mut(&qid) else { return };
        let estimate = st.estimate();
        let Some(stop) = st.stopping.as_mut() else { return };
        let t = st.round;
        let min_rounds = ceil_log2(n_view + 1) + 2;
        let needed = match &mut st.part {
            Part::Extremum(m) => {
                stop.stable = if stop.last_raw == Some(*m) { stop.stable + 1 } else { 0 };
                stop.last_raw = Some(*m);
                ceil_log2(n_view + 1) + 1
            }
            Part::Mass(mass) => {
                let delta = match (estimate, stop.last) {
                    (Some(now), Some(before)) => Some((now - before).abs() / before.abs().max(1e-12)),
                    _ => None,
                };
                // A round in which nothing arrived leaves s/w as it was: it says nothing about
                // convergence, so it neither counts nor resets (departure from §5.7).
                if std::mem::take(&mut mass.received) {
                    stop.stable = match delta {
                        Some(d) if d <= st.query.epsilon => stop.stable + 1,
                        _ => 0,
                    };
                } else if delta.is_none() {
                    stop.stable = 0;
                }
                st.query.stable_rounds
            }
        };
        stop.last = estimate;
        if stop.answered {
            return;
        }
        let converged = t >= min_rounds && stop.stable >= needed;
        if converged || t >= st.query.max_rounds {
            stop.answered = true;
            self.stats.answered += 1;
            self.out.event(AggEvent::Answered(QueryResult {
                qid,
                value: estimate,
                rounds: t,
                converged,
                epsilon: st.query.epsilon,
                stable_rounds: st.query.stable_rounds,
                algorithm: st.query.algorithm,
            }));
        }
    }
}
