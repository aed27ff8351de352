//! The periodic side: one tick of this node's round timer closes the cycle (round reading),
//! forgets old state and contacts partners (PROTOCOLS.md §2.1–2.2, §2.4).

use super::{Direction, RumorMessage, RumorMonger, Staging, Status, Variant};
use crate::time::Instant;

impl RumorMonger {
    /// A tick: close the cycle (round reading), forget old state, contact partners.
    pub(super) fn on_tick(&mut self, now: Instant) {
        self.stats.ticks += 1;
        match self.config.staging {
            Staging::AtCycleStart => self.close_cycle(now),
            Staging::Immediate => {
                let horizon = self.config.period * 2;
                let mut expired = 0u64;
                self.pending.retain(|_, sent| {
                    let before = sent.len();
                    sent.retain(|&at| at + horizon > now);
                    expired += (before - sent.len()) as u64;
                    !sent.is_empty()
                });
                self.stats.feedback_expired += expired;
            }
        }
        self.forget_old(now);
        let fanout = self.config.fanout.max(1) as usize;
        let direction = self.config.direction;
        if direction == Direction::Push && !self.any_hot() {
            return;
        }
        let partners = if fanout == 1 {
            self.peers.pick_except(self.self_pos, &mut self.rng).into_iter().collect()
        } else {
            self.peers.pick_others(&self.id, fanout, &mut self.rng)
        };
        for peer in partners {
            match direction {
                Direction::Push => self.send_hot(now, peer, false),
                Direction::Pull => {
                    self.stats.pulls_sent += 1;
                    self.out.datagram(peer, RumorMessage::Pull);
                }
                Direction::PushPull => self.send_hot(now, peer, true),
            }
        }
    }

    /// §2.2, round reading: once per hot rumor for the cycle that just ended, then promote the
    /// rumors learned during it. Feedback still outstanding no longer counts.
    fn close_cycle(&mut self, now: Instant) {
        self.stats.feedback_expired += self.pending.values().map(|s| s.len() as u64).sum::<u64>();
        self.pending.clear();
        let (variant, k) = (self.config.variant, self.k());
        let mut removed = Vec::new();
        for (id, status) in self.rumors.iter_mut() {
            match status {
                Status::Hot(h) => {
                    let (necessary, unnecessary, sent) = (h.necessary, h.unnecessary, h.sent);
                    h.necessary = false;
                    h.unnecessary = false;
                    h.sent = false;
                    let lose = match variant {
                        Variant::FeedbackCounter => {
                            if necessary {
                                h.counter = 0;
                            } else if unnecessary {
                                h.counter += 1;
                            }
                            h.counter >= k
                        }
                        Variant::FeedbackCoin => {
                            !necessary && unnecessary && self.rng.chance(1.0 / f64::from(k))
                        }
                        Variant::BlindCounter => {
                            if sent {
                                h.counter += 1;
                            }
                            h.counter >= k
                        }
                        Variant::BlindCoin => sent && self.rng.chance(1.0 / f64::from(k)),
                    };
                    if lose {
                        removed.push(*id);
                    }
                }
                Status::Staged(h) => *status = Status::Hot(h.clone()),
                Status::Removed(_) => {}
            }
        }
        for id in removed {
            self.remove(now, id);
        }
    }

    fn forget_old(&mut self, now: Instant) {
        if self.rumors.len() == self.active {
            return;
        }
        let keep = self.config.period * self.config.known_retention;
        self.rumors.retain(|_, s| !matches!(s, Status::Removed(at) if *at + keep <= now));
    }
}
