//! The receiving side: joining on a message, applying mass, acknowledgements, replies
//! (PROTOCOLS.md §5.2–5.5). Everything a peer sends is checked first; a message that fails is
//! counted and changes nothing.

use super::state::{Mass, Offer, Part, QueryState};
use super::{AggMessage, Aggregation, Algorithm, Func, Query, QueryId};
use crate::id::NodeId;
use crate::time::Instant;

impl Aggregation {
    /// Make sure this node holds the query a message carries, joining if new. `None`: the
    /// message is dropped (and counted).
    fn ensure_joined(&mut self, now: Instant, from: NodeId, query: Query) -> Option<QueryId> {
        let qid = query.qid;
        match self.queries.get(&qid) {
            Some(st) if st.query == query => {}
            Some(_) => {
                self.stats.malformed += 1;
                return None;
            }
            None => {
                if query.validate().is_err() {
                    self.stats.malformed += 1;
                    return None;
                }
                if self.finished.contains(&qid) {
                    self.stats.ended_query += 1;
                    return None;
                }
                self.admit(now, query, Some(from)).ok()?;
            }
        }
        Some(qid)
    }

    /// The state of a query named only by id (replies and acks).
    fn known(&mut self, qid: &QueryId) -> Option<&mut QueryState> {
        if !self.queries.contains_key(qid) {
            if self.finished.contains(qid) {
                self.stats.ended_query += 1;
            } else {
                self.stats.unknown_query += 1;
            }
        }
        self.queries.get_mut(qid)
    }

    pub(super) fn on_ps_mass(&mut self, now: Instant, from: NodeId, m: PsMass) {
        let mass_ok = m.s.is_finite() && m.w.is_finite() && m.w >= 0.0;
        let ack_shape = m.seq >= 1 && m.floor >= 1 && m.floor <= m.seq;
        let plain_shape = m.seq == 0 && m.floor == 0 && m.session == 0;
        let shape_ok = match m.query.algorithm {
            Algorithm::AckPushSum => ack_shape,
            Algorithm::PushSum => plain_shape,
            _ => false,
        };
        if !mass_ok || !shape_ok {
            self.stats.malformed += 1;
            return;
        }
        let Some(qid) = self.ensure_joined(now, from, m.query) else { return };
        let Some(st) = self.queries.get_mut(&qid) else { return };
        let round = st.round;
        let Part::Mass(mass) = &mut st.part else { return };
        let offer = match mass.acked.as_deref_mut() {
            None => Offer::New,
            Some(acked) => acked.offer(from, m.session, m.floor, m.seq, round),
        };
        match offer {
            Offer::New => {
                mass.s += m.s;
                mass.w += m.w;
                mass.received = true;
                self.stats.transfers_applied += 1;
            }
            Offer::Duplicate => self.stats.duplicates += 1,
            Offer::Full => {
                self.stats.applied_full += 1;
                return;
            }
        }
        if mass.acked.is_some() {
            self.out.datagram(from, AggMessage::PsAck { qid, session: m.session, seq: m.seq });
        }
    }

    pub(super) fn on_ps_ack(&mut self, from: NodeId, qid: QueryId, session: u64, seq: u64) {
        let Some(st) = self.known(&qid) else { return };
        let Part::Mass(Mass { acked: Some(acked), .. }) = &mut st.part else {
            self.stats.malformed += 1;
            return;
        };
        let matches = acked.session == session && acked.outstanding.get(&seq).is_some_and(|p| p.peer == from);
        if matches {
            acked.outstanding.remove(&seq);
            self.stats.acked += 1;
        } else {
            self.stats.stale_acks += 1;
        }
    }

    pub(super) fn on_ext_push(&mut self, now: Instant, from: NodeId, query: Query, m: f64) {
        if m.is_nan() || query.algorithm != Algorithm::Extremum {
            self.stats.malformed += 1;
            return;
        }
        let Some(qid) = self.ensure_joined(now, from, query) else { return };
        let Some(st) = self.queries.get_mut(&qid) else { return };
        let func = st.query.func;
        let Part::Extremum(mine) = &mut st.part else { return };
        self.out.datagram(from, AggMessage::ExtReply { qid, m: *mine });
        *mine = merge(func, *mine, m);
    }

    pub(super) fn on_ext_reply(&mut self, qid: QueryId, m: f64) {
        if m.is_nan() {
            self.stats.malformed += 1;
            return;
        }
        let Some(st) = self.known(&qid) else { return };
        let func = st.query.func;
        match &mut st.part {
            Part::Extremum(mine) => *mine = merge(func, *mine, m),
            Part::Mass(_) => self.stats.malformed += 1,
        }
    }

    pub(super) fn on_ppx_request(&mut self, now: Instant, from: NodeId, query: Query, s: f64, w: f64) {
        if !(s.is_finite() && w.is_finite() && w >= 0.0) || query.algorithm != Algorithm::PushPull {
            self.stats.malformed += 1;
            return;
        }
        let Some(qid) = self.ensure_joined(now, from, query) else { return };
        let Some(st) = self.queries.get_mut(&qid) else { return };
        let Part::Mass(mass) = &mut st.part else { return };
        self.out.datagram(from, AggMessage::PpxReply { qid, s: mass.s, w: mass.w });
        mass.s = (mass.s + s) * 0.5;
        mass.w = (mass.w + w) * 0.5;
        mass.received = true;
    }

    pub(super) fn on_ppx_reply(&mut self, from: NodeId, qid: QueryId, s: f64, w: f64) {
        if !(s.is_finite() && w.is_finite() && w >= 0.0) {
            self.stats.malformed += 1;
            return;
        }
        let Some(st) = self.known(&qid) else { return };
        let Part::Mass(mass) = &mut st.part else {
            self.stats.malformed += 1;
            return;
        };
        if mass.awaiting != Some(from) {
            self.stats.unexpected_replies += 1;
            return;
        }
        mass.awaiting = None;
        mass.s = (mass.s + s) * 0.5;
        mass.w = (mass.w + w) * 0.5;
        mass.received = true;
        self.stats.exchanges += 1;
    }
}

/// The fields of a `PsMass`, unpacked.
pub(super) struct PsMass {
    pub(super) query: Query,
    pub(super) session: u64,
    pub(super) floor: u64,
    pub(super) seq: u64,
    pub(super) s: f64,
    pub(super) w: f64,
}

fn merge(func: Func, a: f64, b: f64) -> f64 {
    if func == Func::Min { a.min(b) } else { a.max(b) }
}
