//! The probe cycle (PROTOCOLS.md §6.3): ping, ping-req through k helpers, the helpers'
//! relays and nacks, and the health multiplier's bookkeeping (§6.9).

use hearsay_protocols::{Instant, NodeId};

use super::{
    Cause, Probe, RELAYS_MAX, RELAYS_PER_REQUESTER, Relay, State, Swim, SwimEvent, SwimMessage, Update,
    next_tick,
};
use crate::sampling::sample_indices;

impl Swim {
    /// The probe timer: pick the next target round-robin and ping it; the next tick comes
    /// `probe_interval × (L + 1)` later, L sampled now.
    pub(super) fn probe_tick(&mut self, now: Instant) {
        let due = self.next_probe;
        let period = self.probe_period();
        self.next_probe = next_tick(due, now, period, self.config.timing, &mut self.rng);
        if self.leave.is_some() {
            self.next_probe = Instant::MAX;
            return;
        }
        if self.probe.is_some() {
            self.stats.probe_ticks_skipped += 1;
            return;
        }
        let mut reaped = Vec::new();
        let target =
            self.table.next_target(now, self.config.gossip_to_the_dead_time, &mut self.rng, &mut reaped);
        for node in reaped {
            self.stats.reaped += 1;
            self.out.event(SwimEvent::Reaped { node });
        }
        let Some(target) = target else { return };
        let seq = self.new_seq();
        let mut updates = Vec::new();
        if let Some(m) = self.table.get(&target) {
            if self.config.lifeguard.buddy && m.state == State::Suspect {
                // Buddy system (§6.10): the suspect learns of the suspicion from its prober.
                updates.push(Update::Suspect { node: target, incarnation: m.incarnation, from: self.id });
            }
        }
        self.send_datagram(target, SwimMessage::Ping { seq, target, updates });
        self.probe = Some(Probe {
            seq,
            target,
            indirect_at: Some(now + self.config.probe_timeout),
            deadline: now + period,
            helpers: Vec::new(),
            nacked: Vec::new(),
            expected_nacks: 0,
        });
        self.stats.probes += 1;
    }

    /// No direct ack within `probe_timeout`: ask up to k random Alive members to ping the
    /// target for us.
    pub(super) fn probe_indirect(&mut self, _now: Instant) {
        let Some(probe) = self.probe.as_mut() else { return };
        probe.indirect_at = None;
        let (seq, target) = (probe.seq, probe.target);
        let me = self.id;
        let members = self.table.members();
        let picked = sample_indices(members.len(), self.config.indirect_checks, &mut self.rng, |i| {
            let m = &members[i];
            m.state == State::Alive && m.id != me && m.id != target
        });
        let helpers: Vec<NodeId> = picked.into_iter().map(|i| members[i].id).collect();
        let want_nack = self.config.lifeguard.health;
        for &h in &helpers {
            let msg = SwimMessage::PingReq { seq, target, want_nack, updates: Vec::new() };
            self.send_datagram(h, msg);
        }
        self.stats.ping_reqs_sent += helpers.len() as u64;
        if let Some(probe) = self.probe.as_mut() {
            probe.expected_nacks = if want_nack { helpers.len() as u32 } else { 0 };
            probe.helpers = helpers;
        }
    }

    /// The probe's period ended with no ack by any path: L rises by the missed nacks (or by 1
    /// when none were expected) and the target becomes Suspect (§6.3, §6.9).
    pub(super) fn probe_failed(&mut self, now: Instant) {
        let Some(probe) = self.probe.take() else { return };
        let delta = if probe.expected_nacks > 0 {
            probe.expected_nacks.saturating_sub(probe.nacked.len() as u32)
        } else {
            1
        };
        self.adjust_health(i64::from(delta));
        self.stats.probes_failed += 1;
        let Some(m) = self.table.get(&probe.target) else { return };
        if !m.state.is_live() {
            return;
        }
        let incarnation = m.incarnation;
        self.out.event(SwimEvent::ProbeFailed { target: probe.target, incarnation });
        let update = Update::Suspect { node: probe.target, incarnation, from: self.id };
        self.apply(now, update, Cause::FailedProbe);
    }

    /// An ack: for our probe (directly from the target, or relayed by a helper we asked), or
    /// from a target we ping on someone's behalf (relayed on).
    pub(super) fn on_ack(&mut self, from: NodeId, seq: u32) {
        if let Some(p) = &self.probe {
            if p.seq == seq && (from == p.target || p.helpers.contains(&from)) {
                if from == p.target {
                    self.stats.acks_direct += 1;
                } else {
                    self.stats.acks_indirect += 1;
                }
                self.probe = None;
                self.adjust_health(-1);
                return;
            }
        }
        if self.relays.get(&seq).is_some_and(|r| r.target == from) {
            if let Some(r) = self.relays.remove(&seq) {
                self.send_datagram(
                    r.requester,
                    SwimMessage::Ack { seq: r.requester_seq, updates: Vec::new() },
                );
            }
            return;
        }
        self.stats.unexpected += 1;
    }

    /// A helper's nack for our probe: the helper is working, the target silent.
    pub(super) fn on_nack(&mut self, from: NodeId, seq: u32) {
        if let Some(p) = self.probe.as_mut() {
            if p.seq == seq && p.helpers.contains(&from) && !p.nacked.contains(&from) {
                p.nacked.push(from);
                self.stats.nacks_received += 1;
                return;
            }
        }
        self.stats.unexpected += 1;
    }

    /// Serve a ping-req: ping the target with our own sequence number, relay its ack, nack if
    /// asked and it stays silent for `nack_timeout`, forget it at `probe_timeout`. Only a
    /// member of our table is pinged, at its own address, and only [`RELAYS_MAX`] relays
    /// ([`RELAYS_PER_REQUESTER`] per requester) run at once; anything else is refused.
    pub(super) fn on_ping_req(
        &mut self,
        now: Instant,
        from: NodeId,
        seq: u32,
        target: NodeId,
        want_nack: bool,
    ) {
        let busy = self.relays.len() >= RELAYS_MAX
            || self.relays.values().filter(|r| r.requester == from).count() >= RELAYS_PER_REQUESTER;
        if busy || self.table.get(&target).is_none() {
            self.stats.ping_reqs_refused += 1;
            return;
        }
        let own_seq = self.new_seq();
        let relay = Relay {
            requester: from,
            requester_seq: seq,
            target,
            nack_at: want_nack.then(|| now + self.config.nack_timeout),
            expire_at: now + self.config.probe_timeout,
        };
        self.relays.insert(own_seq, relay);
        self.stats.relays_served += 1;
        self.send_datagram(target, SwimMessage::Ping { seq: own_seq, target, updates: Vec::new() });
    }

    /// Due relay deadlines, in sequence order: nacks, then expiry.
    pub(super) fn relay_timers(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .relays
            .iter()
            .filter(|(_, r)| r.expire_at <= now || r.nack_at.is_some_and(|t| t <= now))
            .map(|(s, _)| *s)
            .collect();
        for seq in due {
            let Some(r) = self.relays.get_mut(&seq) else { continue };
            if r.nack_at.is_some_and(|t| t <= now) {
                r.nack_at = None;
                let (to, rseq) = (r.requester, r.requester_seq);
                self.stats.nacks_sent += 1;
                self.send_datagram(to, SwimMessage::Nack { seq: rseq, updates: Vec::new() });
            }
            if self.relays.get(&seq).is_some_and(|r| r.expire_at <= now) {
                self.relays.remove(&seq);
            }
        }
    }
}
