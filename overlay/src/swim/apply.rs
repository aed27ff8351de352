//! Applying membership updates: the precedence rules (PROTOCOLS.md §6.7, memberlist
//! `aliveNode`, `suspectNode`, `deadNode`), suspicions and their confirmations (§6.5), and
//! refutation by the member itself (§6.6).

use hearsay_protocols::{Instant, NodeId};

use super::suspicion::Suspicion;
use super::{Cause, Incarnation, Member, MemberEvent, SharedProfile, State, Swim, SwimEvent, Update};

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
            Update::Alive { node, incarnation, profile } => {
                if node == self.id {
                    self.alive_about_self(incarnation, &profile);
                    return;
                }
                self.apply_alive(now, node, incarnation, profile, cause)
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

    fn apply_alive(
        &mut self,
        now: Instant,
        node: NodeId,
        incarnation: Incarnation,
        profile: SharedProfile,
        cause: Cause,
    ) -> bool {
        match self.table.get_mut(&node) {
            None => {
                let m = Member::new(node, incarnation, State::Alive, now, profile.clone());
                self.table.insert(m, &mut self.rng);
            }
            Some(m) => {
                if incarnation <= m.incarnation {
                    return false;
                }
                if m.state != State::Alive {
                    m.changed_at = now;
                }
                m.state = State::Alive;
                m.incarnation = incarnation;
                m.profile = profile.clone();
                if let Some(s) = m.suspicion.take() {
                    self.suspicions.remove(&(s.deadline, node));
                }
            }
        }
        self.queue.push(Update::Alive { node, incarnation, profile: profile.clone() });
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
        let c = &self.config;
        let Some(m) = self.table.get_mut(&node) else { return false };
        if incarnation < m.incarnation {
            return false;
        }
        match m.state {
            State::Alive => {
                m.state = State::Suspect;
                m.incarnation = incarnation;
                m.changed_at = now;
                let s = Suspicion::start(
                    now,
                    from,
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
                self.report(node, State::Suspect, incarnation, profile, cause);
                true
            }
            State::Suspect => {
                // SWIM's rule: a higher incarnation is adopted (memberlist keeps the old one).
                let raised = incarnation > m.incarnation;
                m.incarnation = incarnation;
                let mut confirmed = false;
                if let Some(s) = m.suspicion.as_mut() {
                    let old = s.deadline;
                    if s.confirm(from) {
                        confirmed = true;
                        self.suspicions.remove(&(old, node));
                        self.suspicions.insert((s.deadline, node));
                    }
                }
                let profile = m.profile.clone();
                if confirmed {
                    self.stats.confirmations += 1;
                    self.queue.push(Update::Suspect { node, incarnation, from });
                }
                if raised {
                    self.report(node, State::Suspect, incarnation, profile, cause);
                }
                confirmed || raised
            }
            State::Dead | State::Left => false,
        }
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
        let state = if from == node { State::Left } else { State::Dead };
        m.state = state;
        m.incarnation = incarnation;
        m.changed_at = now;
        if let Some(s) = m.suspicion.take() {
            self.suspicions.remove(&(s.deadline, node));
        }
        let profile = m.profile.clone();
        self.queue.push(Update::Dead { node, incarnation, from });
        self.report(node, state, incarnation, profile, cause);
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
    /// profile; our own update coming back is ignored.
    fn alive_about_self(&mut self, incarnation: Incarnation, profile: &SharedProfile) {
        let own = self.table.own();
        let stale =
            incarnation < own.incarnation || (incarnation == own.incarnation && *profile == own.profile);
        if self.leave.is_some() || stale {
            self.stats.updates_ignored += 1;
            return;
        }
        self.refute(incarnation);
    }

    /// Raise our incarnation above `seen` and broadcast `Alive` (§6.6); Lifeguard counts a
    /// refutation against our own health (memberlist `refute`).
    fn refute(&mut self, seen: Incarnation) {
        let own = self.table.own_mut();
        own.incarnation = own.incarnation.saturating_add(1).max(seen.saturating_add(1));
        let update =
            Update::Alive { node: own.id, incarnation: own.incarnation, profile: own.profile.clone() };
        let incarnation = own.incarnation;
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
