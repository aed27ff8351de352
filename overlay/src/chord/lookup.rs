//! Lookups (PROTOCOLS.md §7.4): the routing snapshot Scribe routes by (§8.1, [`Routes`]), the
//! origin's outstanding lookups with their timeouts and retries, and the handlers of
//! `FindSucc`, `FoundSucc` and `NextHop`.

use hearsay_protocols::{Instant, NodeId};

use super::routes::{Routes, closest_preceding};
use super::{Chord, ChordError, ChordEvent, ChordMessage, LookupMode, PATH_MAX, Pending, Purpose, Status};
use super::{RingId, RingNode, TTL_MAX};

/// What one node does with a request for `key`.
enum Step {
    /// `key`'s successor is this node.
    Answer(RingNode),
    /// Ask this node next.
    Forward(RingNode),
}

impl Chord {
    /// Start a lookup of successor(`key`). The answer comes as [`ChordEvent::LookupDone`] (or
    /// [`ChordEvent::LookupFailed`]) with the returned id, possibly before this returns (a key
    /// this node resolves from its own state: 0 hops, no message).
    pub fn lookup(&mut self, now: Instant, key: RingId) -> Result<u64, ChordError> {
        if self.status != Status::Joined {
            return Err(ChordError::NotJoined);
        }
        self.stats.lookups_started += 1;
        Ok(self.start_lookup(now, key, Purpose::User))
    }

    /// A copy of this node's routing state, for Scribe (§8.1): hand it over again whenever the
    /// ring had an input, since any input may change it.
    pub fn routes(&self) -> Routes {
        Routes {
            me: self.me,
            joined: self.status == Status::Joined,
            succ: self.succ.clone(),
            below: self.pred.or_else(|| self.pred_candidates.first().copied()),
            fingers: self.fingers.clone(),
            avoided: self.avoid.keys().copied().collect(),
            via_successors: self.config.route_via_successors,
        }
    }

    /// closest_preceding_node(key) over the live state, skipping avoided nodes and `exclude`
    /// ([`closest_preceding`]).
    pub(super) fn closest_preceding(&self, key: RingId, exclude: &[NodeId]) -> RingNode {
        closest_preceding(self.me, &self.fingers, &self.succ, self.config.route_via_successors, key, |x| {
            !self.avoided(&x.id) && !exclude.contains(&x.id)
        })
    }

    /// One node's routing decision for `key` with `ttl` forwardings left.
    fn step(&mut self, key: RingId, ttl: u8) -> Step {
        let Some(s) = self.successor() else {
            return Step::Answer(self.me);
        };
        if key.in_half_open(self.me.ring, s.ring) {
            return Step::Answer(s);
        }
        let x = self.closest_preceding(key, &[]);
        if x.id == self.me.id || ttl == 0 {
            self.stats.stuck += 1;
            return Step::Answer(s);
        }
        Step::Forward(x)
    }

    pub(super) fn start_lookup(&mut self, now: Instant, key: RingId, purpose: Purpose) -> u64 {
        let req = self.next_req_id();
        let pending = Pending {
            key,
            purpose,
            deadline: now,
            attempt: 0,
            tried: Vec::new(),
            current: self.me.id,
            hops: 0,
            path: Vec::new(),
        };
        self.pending.insert(req, pending);
        self.attempt(now, req);
        req
    }

    fn max_attempts(&self, purpose: Purpose) -> u32 {
        match purpose {
            Purpose::Finger(_) => 1,
            Purpose::User | Purpose::Join => self.config.lookup_attempts,
        }
    }

    /// Start (or restart) lookup `req` from this node, avoiding first hops already tried.
    fn attempt(&mut self, now: Instant, req: u64) {
        let Some(p) = self.pending.get(&req) else {
            return;
        };
        let (key, purpose) = (p.key, p.purpose);
        let first = if purpose == Purpose::Join {
            let Status::Joining { bootstrap } = self.status else {
                self.pending.remove(&req);
                return;
            };
            bootstrap
        } else {
            let Some(s) = self.successor() else {
                self.finish(now, req, self.me, 0, vec![self.me.id]);
                return;
            };
            if key.in_half_open(self.me.ring, s.ring) {
                self.finish(now, req, s, 0, vec![self.me.id]);
                return;
            }
            let x = self.closest_preceding(key, &p.tried);
            if x.id == self.me.id {
                if p.tried.is_empty() {
                    self.stats.stuck += 1;
                    self.finish(now, req, s, 0, vec![self.me.id]);
                } else {
                    self.fail(req);
                }
                return;
            }
            x.id
        };
        let iterative = purpose != Purpose::Join && self.config.lookup_mode == LookupMode::Iterative;
        let deadline = now + self.config.lookup_timeout;
        let me = self.me.id;
        let Some(p) = self.pending.get_mut(&req) else {
            return;
        };
        p.attempt += 1;
        p.tried.push(first);
        p.current = first;
        p.deadline = deadline;
        p.hops = 1;
        p.path = vec![me];
        let msg = ChordMessage::FindSucc {
            req_id: req,
            key,
            origin: me,
            hops: 1,
            ttl: self.config.lookup_ttl.saturating_sub(1),
            iterative,
            path: vec![me],
        };
        self.out.datagram(first, msg);
    }

    /// Lookup `req` found `node`: report it, or use it (finger, join).
    fn finish(&mut self, now: Instant, req: u64, node: RingNode, hops: u8, path: Vec<NodeId>) {
        let Some(p) = self.pending.get(&req) else {
            return;
        };
        if p.purpose == Purpose::Join && node.id == self.me.id {
            // A stale entry of this node's previous life answered; the timeout retries.
            self.stats.unmatched += 1;
            return;
        }
        let Some(p) = self.pending.remove(&req) else {
            return;
        };
        match p.purpose {
            Purpose::User => {
                self.stats.lookups_done += 1;
                self.out.event(ChordEvent::LookupDone { id: req, key: p.key, node, hops, path });
            }
            Purpose::Finger(k) => self.apply_finger(now, usize::from(k), node),
            Purpose::Join => self.on_joined_via(now, node),
        }
    }

    /// Lookup `req` gave up.
    fn fail(&mut self, req: u64) {
        let Some(p) = self.pending.remove(&req) else {
            return;
        };
        match p.purpose {
            Purpose::User => {
                self.stats.lookups_failed += 1;
                self.out.event(ChordEvent::LookupFailed { id: req, key: p.key });
            }
            Purpose::Finger(_) => {}
            Purpose::Join => {
                if let Status::Joining { bootstrap } = self.status {
                    self.status = Status::Idle;
                    self.out.event(ChordEvent::JoinFailed { bootstrap });
                }
            }
        }
    }

    /// Fail every outstanding lookup (leaving).
    pub(super) fn fail_all(&mut self) {
        let reqs: Vec<u64> = self.pending.keys().copied().collect();
        for req in reqs {
            self.fail(req);
        }
    }

    pub(super) fn on_lookup_timeout(&mut self, now: Instant, req: u64) {
        let Some(p) = self.pending.get(&req) else {
            return;
        };
        if p.deadline > now {
            return;
        }
        self.stats.lookup_timeouts += 1;
        let (silent, attempt, purpose) = (p.current, p.attempt, p.purpose);
        match purpose {
            Purpose::User => self.suspect(silent, now),
            // A finger refresh (several a second) that timed out drops the silent first hop
            // from the fingers instead: a dead finger whose own refresh routes through it
            // would otherwise never be replaced, while suspecting it for 10 s on every lost
            // datagram would keep a node's best fingers out of use under loss. The next
            // refresh of those fingers puts a live node back.
            Purpose::Finger(_) => {
                self.fingers.remove(&silent);
                self.unsettled(now, super::pace::Check::FixFingers);
            }
            Purpose::Join => {}
        }
        if attempt >= self.max_attempts(purpose) {
            self.fail(req);
        } else {
            self.attempt(now, req);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_find_succ(
        &mut self,
        from: NodeId,
        req_id: u64,
        key: RingId,
        origin: NodeId,
        hops: u8,
        ttl: u8,
        iterative: bool,
        mut path: Vec<NodeId>,
    ) {
        let path_ok = !path.is_empty()
            && path.len() <= PATH_MAX
            && path[0] == origin
            && (path.len() == PATH_MAX || path.last() == Some(&from));
        if ttl > TTL_MAX || hops > TTL_MAX || !path_ok || (iterative && from != origin) {
            self.stats.malformed += 1;
            return;
        }
        if path.len() < PATH_MAX {
            path.push(self.me.id);
        }
        match (self.step(key, ttl), iterative) {
            (Step::Answer(node), true) => {
                self.stats.answered += 1;
                self.out.datagram(from, ChordMessage::NextHop { req_id, key, next: node, done: true });
            }
            (Step::Forward(next), true) => {
                self.stats.forwarded += 1;
                self.out.datagram(from, ChordMessage::NextHop { req_id, key, next, done: false });
            }
            (Step::Answer(node), false) => {
                self.stats.answered += 1;
                let msg = ChordMessage::FoundSucc { req_id, key, node, hops, path };
                self.out.datagram(origin, msg);
            }
            (Step::Forward(next), false) => {
                self.stats.forwarded += 1;
                let msg = ChordMessage::FindSucc {
                    req_id,
                    key,
                    origin,
                    hops: hops.saturating_add(1),
                    ttl: ttl - 1,
                    iterative,
                    path,
                };
                self.out.datagram(next.id, msg);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_found_succ(
        &mut self,
        now: Instant,
        _from: NodeId,
        req_id: u64,
        key: RingId,
        node: RingNode,
        hops: u8,
        path: Vec<NodeId>,
    ) {
        if self.pending.get(&req_id).is_none_or(|p| p.key != key) {
            self.stats.unmatched += 1;
            return;
        }
        let path_ok = !path.is_empty() && path.len() <= PATH_MAX && path[0] == self.me.id;
        if !path_ok || hops > TTL_MAX || !self.valid(&node) {
            self.stats.malformed += 1;
            return;
        }
        self.finish(now, req_id, node, hops, path);
    }

    pub(super) fn on_next_hop(
        &mut self,
        now: Instant,
        from: NodeId,
        req_id: u64,
        key: RingId,
        next: RingNode,
        done: bool,
    ) {
        if !self.pending.get(&req_id).is_some_and(|p| p.key == key && p.current == from) {
            self.stats.unmatched += 1;
            return;
        }
        if !self.valid(&next) {
            self.stats.malformed += 1;
            return;
        }
        let (ttl, timeout, me) = (self.config.lookup_ttl, self.config.lookup_timeout, self.me.id);
        let Some(p) = self.pending.get_mut(&req_id) else {
            return;
        };
        if p.path.len() < PATH_MAX {
            p.path.push(from);
        }
        if done {
            let (hops, path) = (p.hops, std::mem::take(&mut p.path));
            self.finish(now, req_id, next, hops, path);
            return;
        }
        if next.id == me || p.hops >= ttl {
            // Back at the origin, or out of hops: this attempt is lost; try another first hop.
            let (attempt, purpose) = (p.attempt, p.purpose);
            self.stats.stuck += 1;
            if attempt >= self.max_attempts(purpose) {
                self.fail(req_id);
            } else {
                self.attempt(now, req_id);
            }
            return;
        }
        p.hops += 1;
        p.current = next.id;
        p.deadline = now + timeout;
        let hops = p.hops;
        let msg = ChordMessage::FindSucc {
            req_id,
            key,
            origin: me,
            hops,
            ttl: ttl - hops,
            iterative: true,
            path: vec![me],
        };
        self.out.datagram(next.id, msg);
    }
}
