//! Push-pull full-state sync (PROTOCOLS.md §6.11, memberlist `pushPull`, `mergeState`), join
//! and leave (§6.12).

use hearsay_protocols::auth::Signature;
use hearsay_protocols::{Instant, NodeId};

use sha2::{Digest, Sha256};

use super::{
    Cause, CommandError, Exchange, Join, Leave, Member, MemberRecord, State, Swim, SwimEvent, SwimMessage,
    TableDigest, Update, push_pull_period,
};
use crate::sampling::sample_indices;

impl Swim {
    /// Join a cluster through `seeds`, tried in turn: a push-pull exchange with `join` set,
    /// each given `tcp_timeout`. On success the seed's table is merged, our incarnation raised
    /// and our `Alive` broadcast ([`SwimEvent::JoinCompleted`]); if no seed answers,
    /// [`SwimEvent::JoinFailed`] and the whole list is retried every `push_pull_interval`.
    ///
    /// Seeds are NodeIds: the runtime resolves a seed *address* to the NodeId its transport
    /// authenticates there before calling this.
    pub fn join(
        &mut self,
        now: Instant,
        seeds: impl IntoIterator<Item = NodeId>,
    ) -> Result<(), CommandError> {
        if self.leave.is_some() || self.done {
            return Err(CommandError::Leaving);
        }
        let mut list: Vec<NodeId> = Vec::new();
        for s in seeds {
            if s != self.id && !list.contains(&s) {
                list.push(s);
            }
        }
        if list.is_empty() {
            return Err(CommandError::NoSeeds);
        }
        self.exchange = None;
        self.join = Some(Join { seeds: list, next: 0, retry_at: None });
        self.try_next_seed(now);
        Ok(())
    }

    /// Leave gracefully: broadcast `Dead` about self from self (others record Left), stop
    /// probing, and report [`SwimEvent::LeaveDone`] once that update has gone out in
    /// `gossip_nodes` datagrams or as often as its retransmit limit allows, whichever comes
    /// first, or after `leave_timeout`.
    pub fn leave(&mut self, now: Instant) {
        if self.leave.is_some() || self.done {
            return;
        }
        self.leave = Some(Leave { deadline: now + self.config.leave_timeout, sent: 0 });
        self.probe = None;
        self.next_probe = Instant::MAX;
        self.exchange = None;
        self.join = None;
        let own = self.table.own_mut();
        own.state = State::Left;
        own.changed_at = now;
        let update = Update::Dead { node: own.id, incarnation: own.incarnation, from: own.id };
        self.queue.push(update);
    }

    pub(super) fn finish_leave(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.probe = None;
        self.relays.clear();
        self.suspicions.clear();
        self.out.event(SwimEvent::LeaveDone);
    }

    /// Our table as sent in a push-pull: all of it, in order, when it fits in
    /// `push_pull_records_max` records and `push_pull_bytes_max` bytes; otherwise our own entry
    /// and then a window of the others from a random member on, up to both caps.
    fn states(&mut self) -> Vec<MemberRecord> {
        let record = |m: &Member| MemberRecord {
            node: m.id,
            incarnation: m.incarnation,
            state: m.state,
            profile: m.profile.clone(),
            sig: m.sig,
        };
        let (max, bytes_max) = (self.config.push_pull_records_max, self.config.push_pull_bytes_max);
        let members = self.table.members();
        let all: Vec<MemberRecord> = members.iter().map(record).collect();
        let total = all.iter().fold(0usize, |sum, r| sum.saturating_add(r.encoded_len()));
        if all.len() <= max && total <= bytes_max {
            return all;
        }
        let own = members.iter().position(|m| m.id == self.id).unwrap_or(0);
        let start = self.rng.index(all.len());
        let mut out = vec![all[own].clone()];
        let mut used = all[own].encoded_len();
        for r in all.iter().cycle().skip(start).take(all.len()) {
            if r.node == self.id {
                continue;
            }
            let len = r.encoded_len();
            if out.len() >= max || used.saturating_add(len) > bytes_max {
                break;
            }
            used += len;
            out.push(r.clone());
        }
        out
    }

    /// The push-pull timer: exchange tables with one random Alive member; the next tick comes
    /// `push_pull_interval × scale(n)` later.
    pub(super) fn push_pull_tick(&mut self, now: Instant) {
        self.push_pull_at = now + push_pull_period(self.config.push_pull_interval, self.table.len());
        let own_under_way = self.exchange.is_some_and(|e| !e.answering);
        if own_under_way || self.join.is_some() || self.leave.is_some() {
            return;
        }
        if self.exchange.take().is_some() {
            self.stats.push_pulls_aborted += 1;
        }
        let me = self.id;
        let members = self.table.members();
        let picked = sample_indices(members.len(), 1, &mut self.rng, |i| {
            members[i].id != me && members[i].state == State::Alive
        });
        let Some(peer) = picked.first().map(|&i| members[i].id) else { return };
        self.open_digest_exchange(now, peer);
    }

    /// A full push-pull with `peer`: our table goes out now, theirs comes back.
    pub(super) fn open_exchange(&mut self, now: Instant, peer: NodeId, join: bool) {
        self.open_full(now, peer, join, false);
    }

    fn open_full(&mut self, now: Instant, peer: NodeId, join: bool, answering: bool) {
        let states = self.states();
        self.out.stream(peer, SwimMessage::PushPull { join, reply: false, states });
        let deadline = now + self.config.tcp_timeout;
        self.exchange = Some(Exchange { peer, deadline, join, digest: false, answering });
        self.stats.push_pulls_started += 1;
    }

    /// The periodic push-pull opened by our table's digest: tables are only sent if the
    /// peer's differs (issue 14: a still cluster costs two small frames per exchange, not two
    /// tables that grow with N).
    pub(super) fn open_digest_exchange(&mut self, now: Instant, peer: NodeId) {
        let digest = self.table_digest();
        self.out.stream(peer, SwimMessage::PushPullDigest { reply: false, digest });
        let deadline = now + self.config.tcp_timeout;
        self.exchange = Some(Exchange { peer, deadline, join: false, digest: true, answering: false });
        self.stats.push_pulls_started += 1;
    }

    /// The digest of our table ([`TableDigest`]).
    pub(super) fn table_digest(&self) -> TableDigest {
        let mut h = Sha256::new();
        h.update(b"hearsay/swim/table/");
        for m in self.table.members().iter().filter(|m| m.state.is_live()) {
            h.update(m.id.as_bytes());
            h.update(m.incarnation.to_be_bytes());
            h.update([u8::from(m.state == State::Suspect)]);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize()[..16]);
        TableDigest(out)
    }

    /// A push-pull digest: a request (compare, then answer with ours or open a full exchange)
    /// or the answer to ours (the tables agree).
    pub(super) fn on_push_pull_digest(
        &mut self,
        now: Instant,
        from: NodeId,
        reply: bool,
        digest: TableDigest,
    ) {
        if reply {
            if !self.exchange.is_some_and(|e| e.peer == from && e.digest) {
                self.stats.unexpected += 1;
                return;
            }
            self.exchange = None;
            self.stats.push_pulls_completed += 1;
            self.stats.push_pulls_in_sync += 1;
            return;
        }
        self.stats.push_pulls_served += 1;
        let mine = self.table_digest();
        if mine == digest {
            self.stats.push_pulls_in_sync += 1;
            self.out.stream(from, SwimMessage::PushPullDigest { reply: true, digest: mine });
        } else if self.exchange.is_none() && self.join.is_none() && self.leave.is_none() {
            // Both tables must travel: ours as a push-pull of our own, whose reply brings theirs.
            self.open_full(now, from, false, true);
        } else {
            // An exchange of our own is under way: at least they get our table.
            let states = self.states();
            self.out.stream(from, SwimMessage::PushPull { join: false, reply: true, states });
        }
    }

    pub(super) fn exchange_timeout(&mut self, now: Instant) {
        let Some(ex) = self.exchange.take() else { return };
        self.stats.push_pulls_aborted += 1;
        if ex.join {
            self.try_next_seed(now);
        }
    }

    /// Try the next seed of the join in progress; past the last, report failure and arm the
    /// retry.
    pub(super) fn try_next_seed(&mut self, now: Instant) {
        let retry = now + self.config.push_pull_interval;
        let Some(j) = self.join.as_mut() else { return };
        let Some(&seed) = j.seeds.get(j.next) else {
            j.next = 0;
            j.retry_at = Some(retry);
            self.stats.joins_failed += 1;
            self.out.event(SwimEvent::JoinFailed);
            return;
        };
        j.next += 1;
        self.open_exchange(now, seed, true);
    }

    pub(super) fn on_push_pull(
        &mut self,
        now: Instant,
        from: NodeId,
        reply: bool,
        states: Vec<MemberRecord>,
    ) {
        if !reply {
            let mine = self.states();
            self.out.stream(from, SwimMessage::PushPull { join: false, reply: true, states: mine });
            self.stats.push_pulls_served += 1;
            if self.exchange.is_some_and(|e| e.peer == from && e.digest) {
                // The peer's answer to our digest: its own push-pull, which we just answered.
                self.exchange = None;
                self.stats.push_pulls_completed += 1;
            }
            self.merge(now, from, states);
            return;
        }
        let Some(ex) = self.exchange.filter(|e| e.peer == from) else {
            self.stats.unexpected += 1;
            return;
        };
        self.exchange = None;
        self.stats.push_pulls_completed += 1;
        self.merge(now, from, states);
        if ex.join {
            self.join = None;
            let own = self.table.own();
            let (incarnation, profile) = (own.incarnation.saturating_add(1), own.profile.clone());
            let update = self.sign_own(incarnation, profile);
            self.queue.push(update);
            self.out.event(SwimEvent::JoinCompleted { seed: from });
        }
    }

    /// Merge a remote table (memberlist `mergeState`): Alive as Alive (its signature checked
    /// if it is news), Left as a `Dead` from the member itself, Dead or Suspect only as our own
    /// suspicion. At most `push_pull_records_max` records and `push_pull_bytes_max` encoded
    /// bytes are read; the rest are dropped and counted.
    fn merge(&mut self, now: Instant, via: NodeId, states: Vec<MemberRecord>) {
        let me = self.id;
        let (max, bytes_max) = (self.config.push_pull_records_max, self.config.push_pull_bytes_max);
        let total = states.len();
        let mut used = 0usize;
        let mut read = 0usize;
        for r in states {
            let len = r.encoded_len();
            if read >= max || used.saturating_add(len) > bytes_max {
                break;
            }
            read += 1;
            used += len;
            let update = match r.state {
                State::Alive => {
                    let sig = r.sig.unwrap_or(Signature::ZERO);
                    Update::Alive { node: r.node, incarnation: r.incarnation, profile: r.profile, sig }
                }
                State::Left => Update::Dead { node: r.node, incarnation: r.incarnation, from: r.node },
                State::Dead | State::Suspect => {
                    Update::Suspect { node: r.node, incarnation: r.incarnation, from: me }
                }
            };
            self.apply(now, update, Cause::PushPull { via });
        }
        self.stats.records_dropped += (total - read) as u64;
    }
}
