//! Applying membership updates: the precedence rules (PROTOCOLS.md §6.7, memberlist
//! `aliveNode`, `suspectNode`, `deadNode`), suspicions and their confirmations (§6.5), and
//! refutation by the member itself (§6.6), with the rules of "Who may say what" in the module
//! docs: signed `Alive`s, clamped `Suspect`/`Dead`, bounded refutation jumps.

use hearsay_protocols::auth::Signature;
use hearsay_protocols::{Instant, NodeId};

use super::members::entry_cost;
use super::suspicion::Suspicion;
use super::{
    Cause, INCARNATION_CEILING, Incarnation, Member, MemberEvent, SharedProfile, State, Swim, SwimEvent,
    Update, alive_claim,
};

impl Swim {
    /// Apply the updates piggybacked on a datagram from `via`, in order.
    pub(super) fn apply_all(&mut self, now: Instant, via: NodeId, updates: Vec<Update>) {
        for u in updates {
            self.apply(now, u, Cause::Received { via });
        }
    }

    /// Apply one update; every update that changes the table is queued for dissemination
    /// and reported as a [`MemberEvent`].
    pub(super) fn apply(&mut self, now: Instant, update: Update, cause: Cause) {
        let applied = match update {
            Update::Alive { node, incarnation, profile, sig } => {
                if node == self.id {
                    self.alive_about_self(incarnation, &profile, &sig);
                    return;
                }
                self.apply_alive(now, node, incarnation, profile, sig, cause)
            }
            Update::Suspect { node, incarnation, from } => {
                if node == self.id {
                    self.accused(incarnation);
                    return;
                }
                self.apply_suspect(now, node, incarnation, from, cause)
            }
            Update::Dead { node, incarnation, from } => {
                if node == self.id {
                    self.accused(incarnation);
                    return;
                }
                self.apply_dead(now, node, incarnation, from, cause)
            }
        };
        if applied {
            self.stats.updates_applied += 1;
        } else {
            self.stats.updates_ignored += 1;
        }
    }

    /// True if `sig` is `node`'s signature over its `Alive` at `incarnation` with `profile`.
    /// A missing signature (zero) fails without a check; once a check has failed in the
    /// message being applied (an honest member never sends a forged `Alive`), every other
    /// `Alive` of that message fails unchecked, so a message costs one failed check at most.
    fn signed_by(
        &mut self,
        node: &NodeId,
        incarnation: Incarnation,
        profile: &SharedProfile,
        sig: &Signature,
    ) -> bool {
        if *sig == Signature::ZERO || self.tainted {
            return false;
        }
        let ok = self.auth.verify(node, &alive_claim(node, incarnation, profile.profile()), sig);
        self.tainted = !ok;
        ok
    }

    /// The peer an update came through: the sender, the push-pull partner, or this node for
    /// its own findings.
    fn via(&self, cause: Cause) -> NodeId {
        match cause {
            Cause::Received { via } | Cause::PushPull { via } => via,
            Cause::FailedProbe | Cause::SuspicionTimeout => self.id,
        }
    }

    fn apply_alive(
        &mut self,
        now: Instant,
        node: NodeId,
        incarnation: Incarnation,
        profile: SharedProfile,
        sig: Signature,
        cause: Cause,
    ) -> bool {
        // Precedence first: a signature is checked only for news, once per incarnation.
        let old_cost = match self.table.get(&node) {
            None => {
                let c = &self.config;
                if !self.table.has_room(entry_cost(&profile), c.members_max, c.members_bytes_max) {
                    self.stats.members_refused += 1;
                    return false;
                }
                None
            }
            Some(m) if incarnation <= m.incarnation => return false,
            Some(m) => Some(entry_cost(&m.profile)),
        };
        if !self.signed_by(&node, incarnation, &profile, &sig) {
            self.stats.forged += 1;
            return false;
        }
        match (old_cost, self.table.get_mut(&node)) {
            (Some(old), Some(m)) => {
                if m.state != State::Alive {
                    m.changed_at = now;
                }
                m.state = State::Alive;
                m.incarnation = incarnation;
                m.profile = profile.clone();
                m.sig = Some(sig);
                if let Some(s) = m.suspicion.take() {
                    self.suspicions.remove(&(s.deadline, node));
                }
                self.table.recost(old, entry_cost(&profile));
            }
            _ => {
                let mut m = Member::new(node, incarnation, State::Alive, now, profile.clone());
                m.sig = Some(sig);
                self.table.insert(m);
            }
        }
        self.queue.push(Update::Alive { node, incarnation, profile: profile.clone(), sig });
        self.report(node, State::Alive, incarnation, profile, cause);
        true
    }

    fn apply_suspect(
        &mut self,
        now: Instant,
        node: NodeId,
        incarnation: Incarnation,
        from: NodeId,
        cause: Cause,
    ) -> bool {
        let n = self.table.len();
        let via = self.via(cause);
        // Only a member of the table can confirm (a made-up id cannot).
        let known_from = self.table.get(&from).is_some();
        let c = &self.config;
        let Some(m) = self.table.get_mut(&node) else { return false };
        if incarnation < m.incarnation {
            return false;
        }
        // Suspect never raises an incarnation: above the entry's (the highest signed one
        // known) it is applied at the entry's, and passed on as received.
        let clamped = incarnation > m.incarnation;
        let at = m.incarnation;
        let applied = match m.state {
            State::Alive => {
                m.state = State::Suspect;
                m.changed_at = now;
                let s = Suspicion::start(
                    now,
                    from,
                    via,
                    n,
                    c.probe_interval,
                    c.suspicion_mult,
                    c.suspicion_max_timeout_mult,
                    c.lifeguard.dynamic_suspicion,
                );
                self.suspicions.insert((s.deadline, node));
                m.suspicion = Some(Box::new(s));
                let profile = m.profile.clone();
                self.stats.suspicions += 1;
                self.queue.push(Update::Suspect { node, incarnation, from });
                self.report(node, State::Suspect, at, profile, cause);
                true
            }
            State::Suspect => {
                // SWIM adopts a higher incarnation here (memberlist keeps the old one); hearsay
                // keeps the signed one (module docs, "Who may say what").
                let mut confirmed = false;
                if let Some(s) = m.suspicion.as_mut() {
                    let old = s.deadline;
                    if known_from && s.confirm(from, via) {
                        confirmed = true;
                        self.suspicions.remove(&(old, node));
                        self.suspicions.insert((s.deadline, node));
                    }
                }
                if confirmed {
                    self.stats.confirmations += 1;
                    self.queue.push(Update::Suspect { node, incarnation, from });
                }
                confirmed
            }
            State::Dead | State::Left => false,
        };
        if applied && clamped {
            self.stats.clamped += 1;
        }
        applied
    }

    fn apply_dead(
        &mut self,
        now: Instant,
        node: NodeId,
        incarnation: Incarnation,
        from: NodeId,
        cause: Cause,
    ) -> bool {
        let Some(m) = self.table.get_mut(&node) else { return false };
        if !m.state.is_live() || incarnation < m.incarnation {
            return false;
        }
        // Dead never raises an incarnation either (see `apply_suspect`).
        let clamped = incarnation > m.incarnation;
        let at = m.incarnation;
        let state = if from == node { State::Left } else { State::Dead };
        m.state = state;
        m.changed_at = now;
        if let Some(s) = m.suspicion.take() {
            self.suspicions.remove(&(s.deadline, node));
        }
        let profile = m.profile.clone();
        self.stats.clamped += u64::from(clamped);
        self.queue.push(Update::Dead { node, incarnation, from });
        self.report(node, state, at, profile, cause);
        true
    }

    fn report(
        &mut self,
        node: NodeId,
        state: State,
        incarnation: Incarnation,
        profile: SharedProfile,
        cause: Cause,
    ) {
        self.out.event(SwimEvent::Member(MemberEvent { node, state, incarnation, profile, cause }));
    }

    /// A `Suspect` or `Dead` about self: refute it unless it is stale or we are leaving.
    fn accused(&mut self, incarnation: Incarnation) {
        if self.leave.is_some() || incarnation < self.table.own().incarnation {
            self.stats.updates_ignored += 1;
            return;
        }
        self.refute(incarnation);
    }

    /// An `Alive` about self: refute a higher incarnation, or the same one with another
    /// profile, if it is our own signature (a previous life's); our own update coming back is
    /// ignored, and so is a forgery.
    fn alive_about_self(&mut self, incarnation: Incarnation, profile: &SharedProfile, sig: &Signature) {
        let own = self.table.own();
        let stale =
            incarnation < own.incarnation || (incarnation == own.incarnation && *profile == own.profile);
        if self.leave.is_some() || stale {
            self.stats.updates_ignored += 1;
            return;
        }
        let me = self.id;
        if !self.signed_by(&me, incarnation, profile, sig) {
            self.stats.forged += 1;
            return;
        }
        self.refute(incarnation);
    }

    /// Raise our incarnation above `seen` and broadcast our signed `Alive` (§6.6); Lifeguard
    /// counts a refutation against our own health (memberlist `refute`). We jump past `seen`
    /// only below [`INCARNATION_CEILING`], so no accusation can make us saturate.
    fn refute(&mut self, seen: Incarnation) {
        let own = self.table.own();
        let jump = if seen < INCARNATION_CEILING { seen + 1 } else { 0 };
        let incarnation = own.incarnation.saturating_add(1).max(jump);
        let profile = own.profile.clone();
        let update = self.sign_own(incarnation, profile);
        self.queue.push(update);
        self.adjust_health(1);
        self.stats.refutations += 1;
        self.out.event(SwimEvent::Refuted { incarnation });
    }

    /// The earliest suspicion is due: the member is declared Dead by us.
    pub(super) fn suspicion_timeout(&mut self, now: Instant) {
        let Some((deadline, node)) = self.suspicions.pop_first() else { return };
        let Some(m) = self.table.get(&node) else { return };
        if m.state != State::Suspect || m.suspicion_deadline() != Some(deadline) {
            return;
        }
        let incarnation = m.incarnation;
        self.stats.deaths_declared += 1;
        self.apply(now, Update::Dead { node, incarnation, from: self.id }, Cause::SuspicionTimeout);
    }
}
