//! A contact, both sides (PROTOCOLS.md §2.2–2.3): sending hot rumors packed into datagrams,
//! receiving them, answering pulls and feedback, and the loss-of-interest rule applied per
//! contact (continuous reading).

use super::{Rumor, RumorEvent, RumorId, RumorMessage, RumorMonger, Staging, Status};
use crate::id::NodeId;
use crate::time::Instant;
use crate::wire::DATAGRAM_BUDGET;

/// Bytes of a `Rumors` datagram that are not items: header, tag, length, flags (generous).
const RUMORS_OVERHEAD: usize = 16;

impl RumorMonger {
    /// Send every hot rumor to `peer` (possibly none, in push-pull), split over datagrams;
    /// record the transmissions.
    pub(super) fn send_hot(&mut self, now: Instant, peer: NodeId, pull: bool) {
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
            self.pending.entry((peer, id)).or_default().push(now);
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

    pub(super) fn on_rumors(
        &mut self,
        now: Instant,
        from: NodeId,
        items: Vec<Rumor>,
        pull: bool,
        want_feedback: bool,
    ) {
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
                None if payload.len() > self.config.payload_max => {
                    self.stats.oversized += 1;
                    continue;
                }
                None if !self.has_room(&id, payload.len()) => {
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
                    self.activate(&id, payload.len());
                    self.rumors.insert(id, status);
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
    pub(super) fn serve(&mut self, now: Instant, to: NodeId) {
        if self.any_hot() {
            self.send_hot(now, to, false);
        }
    }

    pub(super) fn on_feedback(&mut self, now: Instant, from: NodeId, items: Vec<(RumorId, bool)>) {
        if !items.windows(2).all(|w| w[0].0 < w[1].0) {
            self.stats.malformed += 1;
            return;
        }
        let (variant, k) = (self.config.variant, self.k());
        for (id, knew) in items {
            let Some(sent) = self.pending.get_mut(&(from, id)) else {
                self.stats.unsolicited_feedback += 1;
                continue;
            };
            sent.remove(0);
            if sent.is_empty() {
                self.pending.remove(&(from, id));
            }
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
