//! Joining, leaving, the periodic maintenance of §7.5 (stabilize, notify, fix_fingers,
//! check_predecessor) and the membership input (§7.6: Alive, Dead, Left).

use hearsay_protocols::{Duration, Instant, NodeId, Ticker};

use super::pace::Check;
use super::ring::Fingers;
use super::{Avoid, Chord, ChordError, ChordEvent, ChordMessage, Detector, PRED_CANDIDATES, Probe};
use super::{Purpose, RingNode, RingSnapshot, SUCC_LIST_MAX, Status, Ticks};

impl Chord {
    /// Start a new ring with this node alone on it.
    pub fn create(&mut self, now: Instant) -> Result<(), ChordError> {
        self.check_can_join()?;
        self.become_joined(now);
        self.report_changes();
        Ok(())
    }

    /// Join from the membership table (§7.6, hearsay's join): successor list, predecessor,
    /// finger table and predecessor stand-ins are computed from `members` (the alive members,
    /// this node included or not), exactly what a converged ring would hold; stabilize keeps
    /// them right from then on.
    pub fn join_from_members(&mut self, now: Instant, members: &RingSnapshot) -> Result<(), ChordError> {
        self.join_from_members_near(now, members, |_| None)
    }

    /// [`Chord::join_from_members`] with proximity neighbour selection
    /// ([`ChordConfig::proximity_candidates`](super::ChordConfig::proximity_candidates)): each
    /// finger is, among the first candidates of its interval, the member with the lowest
    /// `rtt` (the host's estimate, `None` if it has none; ties and unknowns go to the
    /// interval's first member, the paper's finger). With proximity off it is
    /// `join_from_members`.
    pub fn join_from_members_near(
        &mut self,
        now: Instant,
        members: &RingSnapshot,
        rtt: impl Fn(&RingNode) -> Option<Duration>,
    ) -> Result<(), ChordError> {
        self.check_can_join()?;
        if let Some(x) =
            members.successor(self.me.ring).filter(|x| x.ring == self.me.ring && x.id != self.me.id)
        {
            return Err(ChordError::RingIdTaken(x.ring));
        }
        let me = self.me;
        self.succ = members.successors_of(&me, self.config.successor_list_len);
        self.pred_candidates = members.predecessors_of(&me, PRED_CANDIDATES);
        self.pred = self.pred_candidates.first().copied();
        let first = self.succ.first().copied();
        let layout = self.layout();
        let candidates = self.config.proximity_candidates;
        self.fingers = Fingers::from_fn(layout.len(), |k| match first {
            // Every finger whose start lies in (n, succ[0]] is the successor: no search.
            Some(s) if layout.start(me.ring, k).in_half_open(me.ring, s.ring) => Some(s),
            // The first minimum wins and an unknown RTT counts as the longest, so ties and
            // unknowns go to the interval's first member; an empty interval: its successor.
            _ if candidates > 1 => members
                .walk_from(layout.start(me.ring, k))
                .take(candidates)
                .take_while(|x| layout.covers(me.ring, k, x.ring) && x.id != me.id)
                .min_by_key(|x| rtt(x).map_or(u64::MAX, |d| d.as_micros()))
                .or_else(|| members.successor(layout.start(me.ring, k)).filter(|x| x.id != me.id)),
            _ => members.successor(layout.start(me.ring, k)).filter(|x| x.id != me.id),
        });
        self.become_joined(now);
        self.report_changes();
        Ok(())
    }

    /// Join through `bootstrap`, any member of the ring (the paper's join, for a ring without
    /// a membership layer): look up this node's own successor through it. Answered by
    /// [`ChordEvent::Joined`] or [`ChordEvent::JoinFailed`].
    pub fn join_via(&mut self, now: Instant, bootstrap: NodeId) -> Result<(), ChordError> {
        self.check_can_join()?;
        if bootstrap == self.me.id {
            return Err(ChordError::SelfBootstrap);
        }
        self.status = Status::Joining { bootstrap };
        self.start_lookup(now, self.me.ring, Purpose::Join);
        Ok(())
    }

    /// Leave the ring voluntarily (§7.6): hand the successor list to the predecessor and the
    /// predecessor to the successor, fail outstanding lookups, stop every timer.
    pub fn leave(&mut self, _now: Instant) -> Result<(), ChordError> {
        if self.status != Status::Joined {
            return Err(ChordError::NotJoined);
        }
        if let Some(p) = self.pred {
            self.out.datagram(p.id, ChordMessage::LeaveHint { pred: None, succ_list: self.succ.clone() });
        }
        if let Some(s) = self.successor() {
            self.out.datagram(s.id, ChordMessage::LeaveHint { pred: self.pred, succ_list: Vec::new() });
        }
        self.fail_all();
        self.status = Status::Left;
        self.ticks = None;
        self.get_pred = None;
        self.ping = None;
        self.succ = Vec::new();
        self.pred = None;
        self.pred_candidates = Vec::new();
        self.fingers = Fingers::empty(self.layout().len());
        self.report_changes();
        Ok(())
    }

    /// The membership layer reports `id` Alive (joined, or back). It is inserted where it
    /// belongs at once: successor list, the fingers it is a closer successor for, predecessor
    /// if it lies in (pred, n) (what its Notify would do), predecessor stand-ins.
    pub fn handle_member_up(&mut self, now: Instant, id: NodeId) {
        if id == self.me.id {
            return;
        }
        let was_avoided = self.avoid.remove(&id).is_some();
        if self.status != Status::Joined {
            return;
        }
        let before = (self.succ.len(), self.pred, self.pred_candidates.len(), self.fingers.clone());
        let node = RingNode::of(id);
        if node.ring == self.me.ring {
            self.stats.ring_id_collisions += 1;
            return;
        }
        let me = self.me.ring;
        let d = me.distance(node.ring);
        let pos = self.succ.partition_point(|x| me.distance(x.ring) < d);
        let r = self.config.successor_list_len;
        if pos < r && self.succ.get(pos).is_none_or(|x| x.id != id) && !self.succ.iter().any(|x| x.id == id) {
            self.succ.insert(pos, node);
            self.succ.truncate(r);
        }
        let layout = self.layout();
        let near = self.config.proximity_candidates > 1;
        self.fingers.update(|k, cur| {
            let start = layout.start(me, k);
            // With proximity selection a finger inside its interval was chosen, not merely
            // found: keep it.
            if near && cur.is_some_and(|f| layout.covers(me, k, f.ring)) {
                return None;
            }
            cur.filter(|f| start.distance(node.ring) < start.distance(f.ring)).map(|_| Some(node))
        });
        if self.pred.is_none_or(|p| node.ring.in_open(p.ring, me)) {
            self.pred = Some(node);
            self.ping = None;
            self.pred_misses = 0;
        }
        let below = node.ring.distance(me);
        let pos = self.pred_candidates.partition_point(|x| x.ring.distance(me) < below);
        if pos < PRED_CANDIDATES && !self.pred_candidates.iter().any(|x| x.id == id) {
            self.pred_candidates.insert(pos, node);
            self.pred_candidates.truncate(PRED_CANDIDATES);
        }
        // A node taken into a table (or back from the dead) is a change the periodic checks
        // should confirm at their base pace; an update about a member the tables do not
        // hold (a meta change, a far-away join) is not.
        let inserted = self.succ.iter().any(|x| x.id == id)
            || self.pred_candidates.iter().any(|x| x.id == id)
            || before != (self.succ.len(), self.pred, self.pred_candidates.len(), self.fingers.clone());
        if was_avoided || inserted {
            self.ring_changed(now);
        }
        self.report_changes();
    }

    /// The membership layer reports `id` Dead or Left: it leaves every table at once and is
    /// not taken back from other nodes' lists for `dead_retention`.
    pub fn handle_member_down(&mut self, now: Instant, id: NodeId) {
        if id == self.me.id {
            return;
        }
        self.avoid.insert(id, Avoid { until: now + self.config.dead_retention, dead: true });
        if self.status != Status::Joined {
            return;
        }
        self.forget(&id);
        self.ring_changed(now);
        self.report_changes();
    }

    fn check_can_join(&self) -> Result<(), ChordError> {
        match self.status {
            Status::Idle | Status::Left => Ok(()),
            Status::Joining { .. } | Status::Joined => Err(ChordError::AlreadyJoined),
        }
    }

    fn become_joined(&mut self, now: Instant) {
        let c = &self.config;
        let rng = &mut self.rng;
        let stabilize = Ticker::start(now, c.stabilize_interval, c.timing, rng);
        let fix_fingers = Ticker::start(now, c.fix_fingers_interval, c.timing, rng);
        let check_predecessor = (c.detector == Detector::Standalone)
            .then(|| Ticker::start(now, c.check_predecessor_interval, c.timing, rng));
        self.ticks = Some(Ticks { stabilize, fix_fingers, check_predecessor, still: Default::default() });
        self.status = Status::Joined;
        self.next_finger = 0;
        self.out.event(ChordEvent::Joined);
    }

    /// The answer to this node's join lookup: `node` is its successor.
    pub(super) fn on_joined_via(&mut self, now: Instant, node: RingNode) {
        self.succ = vec![node];
        self.pred = None;
        self.fingers = Fingers::empty(self.layout().len());
        self.become_joined(now);
        self.stabilize(now);
    }

    /// Remove `id` from the successor list, fingers, predecessor and stand-ins.
    fn forget(&mut self, id: &NodeId) {
        self.succ.retain(|x| x.id != *id);
        self.fingers.remove(id);
        self.pred_candidates.retain(|x| x.id != *id);
        if self.pred.is_some_and(|p| p.id == *id) {
            self.pred = None;
        }
        if self.get_pred.is_some_and(|p| p.to == *id) {
            self.get_pred = None;
            self.succ_misses = 0;
        }
        if self.ping.is_some_and(|p| p.to == *id) {
            self.ping = None;
            self.pred_misses = 0;
        }
        if self.succ.is_empty() {
            self.fall_back_successor();
        }
    }

    /// With the successor list exhausted, the closest usable finger becomes the successor
    /// (stabilize then rebuilds the list); with none, the node is alone until a Notify.
    fn fall_back_successor(&mut self) {
        let me = self.me.ring;
        let best = self
            .fingers
            .entries()
            .filter(|f| !self.avoided(&f.id))
            .min_by_key(|f| me.distance(f.ring))
            .copied();
        self.succ.extend(best);
    }

    /// Keep `id` out of routing for 10 × lookup_timeout (§7.4), unless already reported dead.
    pub(super) fn suspect(&mut self, id: NodeId, now: Instant) {
        if id == self.me.id {
            return;
        }
        let until = now + self.config.lookup_timeout * 10;
        self.avoid.entry(id).or_insert(Avoid { until, dead: false });
    }

    /// `id` answered: it is no longer a suspect (a reported death stands).
    fn heard_from(&mut self, id: &NodeId) {
        if self.avoid.get(id).is_some_and(|a| !a.dead) {
            self.avoid.remove(id);
        }
    }

    /// Stabilize tick (§7.5): ask the successor for its predecessor and successor list.
    pub(super) fn stabilize(&mut self, now: Instant) {
        if self.status != Status::Joined {
            return;
        }
        if !self.avoid.is_empty() {
            self.avoid.retain(|_, a| a.until > now);
        }
        if self.succ.is_empty() {
            // Alone: a joiner's Notify made it our predecessor; it is our successor too.
            match self.pred {
                Some(p) => self.succ.push(p),
                None => return,
            }
        }
        if self.get_pred.is_some() {
            return;
        }
        let s = self.succ[0];
        let req_id = self.next_req_id();
        self.get_pred = Some(Probe { req_id, to: s.id, deadline: now + self.config.lookup_timeout });
        self.out.datagram(s.id, ChordMessage::GetPred { req_id });
    }

    pub(super) fn on_get_pred(&mut self, from: NodeId, req_id: u64) {
        let msg = ChordMessage::PredIs { req_id, pred: self.pred, succ_list: self.succ.clone() };
        self.out.datagram(from, msg);
    }

    pub(super) fn on_pred_is(
        &mut self,
        now: Instant,
        from: NodeId,
        req_id: u64,
        pred: Option<RingNode>,
        succ_list: Vec<RingNode>,
    ) {
        if !self.get_pred.is_some_and(|p| p.req_id == req_id && p.to == from) {
            self.stats.unmatched += 1;
            return;
        }
        if !self.valid_list(&succ_list) || pred.is_some_and(|p| !self.valid(&p)) {
            self.stats.malformed += 1;
            return;
        }
        self.get_pred = None;
        self.succ_misses = 0;
        self.heard_from(&from);
        let Some(s) = self.successor().filter(|s| s.id == from) else {
            return; // the successor changed while the question was out
        };
        let mut list = Vec::with_capacity(self.config.successor_list_len);
        if let Some(x) = pred.filter(|x| x.ring.in_open(self.me.ring, s.ring) && !self.dead(&x.id)) {
            list.push(x);
        }
        list.push(s);
        self.extend_successors(&mut list, &succ_list, &from);
        let still = list.len() == self.succ.len() && list.iter().zip(&self.succ).all(|(a, b)| a.id == b.id);
        self.succ = list;
        self.out.datagram(self.succ[0].id, ChordMessage::Notify { node: self.me });
        if still {
            self.settled(Check::Stabilize);
        } else {
            self.ring_changed(now);
        }
    }

    /// Append `from_list` to `list` up to r entries: stop at this node (the list wrapped
    /// around the ring), skip the sender, nodes reported dead and duplicates. Suspects stay:
    /// suspicion (a lost lookup, missed `PredIs`) only steers routing; whether a silent node
    /// is gone is its own successor's call, which pings it.
    fn extend_successors(&self, list: &mut Vec<RingNode>, from_list: &[RingNode], sender: &NodeId) {
        let r = self.config.successor_list_len;
        for e in from_list {
            if list.len() >= r || e.id == self.me.id {
                break;
            }
            if e.id == *sender || self.dead(&e.id) || list.iter().any(|x| x.id == e.id) {
                continue;
            }
            list.push(*e);
        }
        list.truncate(r);
    }

    fn valid_list(&self, list: &[RingNode]) -> bool {
        list.len() <= SUCC_LIST_MAX && list.iter().all(|n| self.valid(n))
    }

    pub(super) fn on_get_pred_timeout(&mut self, now: Instant, req_id: u64) {
        let Some(probe) = self.get_pred.filter(|p| p.req_id == req_id) else {
            return;
        };
        self.get_pred = None;
        self.succ_misses += 1;
        // Ask again at the base pace: the miss limit counts consecutive misses.
        self.unsettled(now, Check::Stabilize);
        if self.succ_misses < self.config.miss_limit {
            return;
        }
        self.succ_misses = 0;
        self.stats.successors_dropped += 1;
        self.suspect(probe.to, now);
        self.succ.retain(|x| x.id != probe.to);
        if self.succ.is_empty() {
            self.fall_back_successor();
        }
    }

    pub(super) fn on_notify(&mut self, now: Instant, from: NodeId, node: RingNode) {
        if node.id != from || node.id == self.me.id || !self.valid(&node) {
            self.stats.malformed += 1;
            return;
        }
        if self.dead(&from) {
            return; // the membership layer says it is gone
        }
        self.heard_from(&from);
        if self.pred.is_none_or(|p| node.ring.in_open(p.ring, self.me.ring)) {
            if self.pred.is_none_or(|p| p.id != node.id) {
                self.ring_changed(now);
            }
            self.pred = Some(node);
            self.ping = None;
            self.pred_misses = 0;
        }
    }

    /// fix_fingers tick (§7.5): refresh finger `next_finger`.
    pub(super) fn fix_fingers(&mut self, now: Instant) {
        if self.status != Status::Joined {
            return;
        }
        let Some(s) = self.successor() else {
            return;
        };
        let layout = self.layout();
        let k = usize::from(self.next_finger) % layout.len();
        self.next_finger = ((k + 1) % layout.len()) as u8;
        let start = layout.start(self.me.ring, k);
        if start.in_half_open(self.me.ring, s.ring) {
            self.apply_finger(now, k, s);
        } else {
            self.stats.finger_lookups += 1;
            self.start_lookup(now, start, Purpose::Finger(k as u8));
        }
    }

    /// finger[k] := y, and every later finger whose start lies in (n, y] too (§7.5); the
    /// next tick skips those.
    pub(super) fn apply_finger(&mut self, now: Instant, k: usize, y: RingNode) {
        let held = self.fingers.get(k);
        if y.id == self.me.id {
            self.fingers.set(k, k, None);
            self.finger_refreshed(now, held.is_none());
            return;
        }
        let me = self.me.ring;
        let layout = self.layout();
        // With proximity selection any live member of the interval will do: a finger chosen
        // for its round-trip time stays while the interval's first member is found there too.
        if self.config.proximity_candidates > 1
            && layout.covers(me, k, y.ring)
            && held
                .is_some_and(|h| h.id != self.me.id && layout.covers(me, k, h.ring) && !self.avoided(&h.id))
        {
            self.finger_refreshed(now, true);
            return;
        }
        self.finger_refreshed(now, held.is_some_and(|h| h.id == y.id));
        let mut hi = k;
        while hi + 1 < layout.len() && layout.start(me, hi + 1).in_half_open(me, y.ring) {
            hi += 1;
        }
        if self.config.proximity_candidates > 1 {
            // y is the first member of the later intervals it fills too; keep the members
            // chosen there.
            let me_id = self.me.id;
            self.fingers.update(|j, cur| {
                let chosen = cur.is_some_and(|c| c.id != me_id && layout.covers(me, j, c.ring));
                (j >= k && j <= hi && !(j > k && chosen)).then_some(Some(y))
            });
        } else {
            self.fingers.set(k, hi, Some(y));
        }
        let next = usize::from(self.next_finger);
        if next > k && next <= hi {
            self.next_finger = ((hi + 1) % layout.len()) as u8;
        }
    }

    /// A finger refresh found what was held (`still`) or changed it.
    fn finger_refreshed(&mut self, now: Instant, still: bool) {
        if still {
            self.settled(Check::FixFingers);
        } else {
            self.unsettled(now, Check::FixFingers);
        }
    }

    /// check_predecessor tick (standalone ring): ping the predecessor.
    pub(super) fn check_predecessor(&mut self, now: Instant) {
        if self.status != Status::Joined || self.ping.is_some() {
            return;
        }
        let Some(p) = self.pred else {
            return;
        };
        let req_id = self.next_req_id();
        self.ping = Some(Probe { req_id, to: p.id, deadline: now + self.config.lookup_timeout });
        self.out.datagram(p.id, ChordMessage::RingPing { req_id });
    }

    pub(super) fn on_ring_pong(&mut self, from: NodeId, req_id: u64) {
        if !self.ping.is_some_and(|p| p.req_id == req_id && p.to == from) {
            self.stats.unmatched += 1;
            return;
        }
        self.ping = None;
        self.pred_misses = 0;
        self.heard_from(&from);
    }

    pub(super) fn on_ping_timeout(&mut self, now: Instant, req_id: u64) {
        let Some(probe) = self.ping.filter(|p| p.req_id == req_id) else {
            return;
        };
        self.ping = None;
        if self.pred.is_none_or(|p| p.id != probe.to) {
            return;
        }
        self.pred_misses += 1;
        if self.pred_misses >= self.config.miss_limit {
            self.pred_misses = 0;
            self.pred = None;
            self.stats.predecessors_dropped += 1;
            self.suspect(probe.to, now);
        }
    }

    pub(super) fn on_leave_hint(
        &mut self,
        now: Instant,
        from: NodeId,
        pred: Option<RingNode>,
        succ_list: Vec<RingNode>,
    ) {
        if !self.valid_list(&succ_list) || pred.is_some_and(|p| !self.valid(&p)) {
            self.stats.malformed += 1;
            return;
        }
        let from_succ = !succ_list.is_empty() && self.successor().is_some_and(|s| s.id == from);
        let from_pred = self.pred.is_some_and(|p| p.id == from);
        if !from_succ && !from_pred {
            self.stats.unmatched += 1;
            return;
        }
        if from_succ {
            let mut list = Vec::with_capacity(self.config.successor_list_len);
            self.extend_successors(&mut list, &succ_list, &from);
            self.succ = list;
            self.get_pred = None;
            self.succ_misses = 0;
        }
        if from_pred {
            self.pred = pred.filter(|p| p.id != self.me.id && p.id != from && !self.dead(&p.id));
            self.ping = None;
            self.pred_misses = 0;
        }
        if self.config.detector == Detector::Membership {
            // SWIM's Left follows; until a later Alive it stays out of every table.
            self.avoid.insert(from, Avoid { until: now + self.config.dead_retention, dead: true });
        } else {
            // Standalone, nothing would ever clear a death mark if it comes back: avoid it
            // for routing only.
            self.suspect(from, now);
        }
        self.forget(&from);
        self.ring_changed(now);
        if from_succ {
            if let Some(s) = self.successor() {
                self.out.datagram(s.id, ChordMessage::Notify { node: self.me });
            }
        }
    }
}
