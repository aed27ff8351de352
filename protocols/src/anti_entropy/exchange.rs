//! One exchange, both sides (PROTOCOLS.md §1.2–§1.4): the initiator's `Syn`, the responder's
//! `SynAck`, the initiator's `Delta`, and applying received entries to the store.

use super::{
    AWAITED_MAX, AeEvent, AeMessage, AeMode, AntiEntropy, Commit, Digest, ENTRY_OVERHEAD, Entry, Exchange,
    Inserted, SCOPE_MAX,
};
use crate::auth::Proof;
use crate::id::{NodeId, TopicId};
use crate::time::Instant;

impl AntiEntropy {
    pub(super) fn open(
        &mut self,
        now: Instant,
        mode: AeMode,
        peer: NodeId,
        heads_for: Option<TopicId>,
    ) -> u64 {
        let xid = self.next_xid;
        self.next_xid += 1;
        let digest = match mode {
            AeMode::Pull | AeMode::PushPull => self.digest(&self.topics.clone()),
            AeMode::Push | AeMode::Heads => Digest::default(),
        };
        self.out.stream(peer, AeMessage::Syn { xid, mode, scope: self.topics.clone(), digest });
        self.exchange = Some(Exchange { xid, peer, mode, heads_for, deadline: now + self.config.timeout });
        self.stats.exchanges_started += 1;
        xid
    }

    fn digest(&mut self, scope: &[TopicId]) -> Digest {
        let c = &self.config;
        let (summaries, last) =
            self.store.digest(scope, c.digest_missing_max, c.digest_streams_max, self.cursor.as_deref());
        let partial = last.is_some();
        if partial {
            self.cursor = last.map(Box::new);
        }
        Digest { summaries, partial }
    }

    fn delta_for(&mut self, remote: &Digest, scope: &[TopicId]) -> (Vec<Entry>, bool) {
        let (delta, more) =
            self.store.delta_for(&remote.summaries, remote.partial, scope, self.config.delta_bytes_max);
        self.stats.entries_sent += delta.len() as u64;
        self.stats.deltas_cut += u64::from(more);
        (delta, more)
    }

    fn valid_digest(&self, digest: &Digest) -> bool {
        digest.summaries.len() <= self.config.digest_streams_max
            && digest.summaries.windows(2).all(|w| w[0].stream < w[1].stream)
            && digest.summaries.iter().all(|s| s.is_consistent(self.config.digest_missing_max))
    }

    pub(super) fn on_syn(
        &mut self,
        now: Instant,
        from: NodeId,
        xid: u64,
        mode: AeMode,
        scope: Vec<TopicId>,
        digest: Digest,
    ) {
        let scope_ok = scope.len() <= SCOPE_MAX && scope.windows(2).all(|w| w[0] < w[1]);
        if !scope_ok || !self.valid_digest(&digest) {
            self.stats.malformed += 1;
            return;
        }
        let shared: Vec<TopicId> =
            scope.into_iter().filter(|t| self.topics.binary_search(t).is_ok()).collect();
        let mine = match mode {
            AeMode::Push | AeMode::PushPull | AeMode::Heads => self.digest(&shared),
            AeMode::Pull => Digest::default(),
        };
        let (delta, more) = match mode {
            AeMode::Pull | AeMode::PushPull => self.delta_for(&digest, &shared),
            AeMode::Push | AeMode::Heads => (Vec::new(), false),
        };
        self.stats.exchanges_served += 1;
        if matches!(mode, AeMode::Push | AeMode::PushPull) && !shared.is_empty() {
            self.await_delta(now, from, xid);
        }
        let proofs = if mode == AeMode::Heads { self.proofs(&mine) } else { Vec::new() };
        self.out.stream(from, AeMessage::SynAck { xid, scope: shared, digest: mine, delta, more, proofs });
    }

    /// A proof per summary that its `max` exists: the held entry's seal over its digest.
    fn proofs(&self, digest: &Digest) -> Vec<Proof> {
        digest
            .summaries
            .iter()
            .filter_map(|s| {
                let e = self.store.entry(&s.stream, s.max)?;
                Some(Proof {
                    origin: s.stream.origin,
                    topic: s.stream.topic.0,
                    seq: s.max,
                    published_at: e.published_at.as_micros(),
                    digest: crate::auth::payload_digest(&e.payload),
                    seal: e.seal,
                })
            })
            .collect()
    }

    /// Remember that `from` may answer our digest with a `Delta` for exchange `xid`: one per
    /// peer, at most [`AWAITED_MAX`] (expired ones, then the oldest, forgotten first).
    fn await_delta(&mut self, now: Instant, from: NodeId, xid: u64) {
        let until = now + self.config.timeout;
        if !self.awaited.contains_key(&from) && self.awaited.len() >= AWAITED_MAX {
            self.awaited.retain(|_, (_, t)| *t > now);
            if self.awaited.len() >= AWAITED_MAX {
                let oldest = self.awaited.iter().min_by_key(|(p, (_, t))| (*t, **p)).map(|(p, _)| *p);
                if let Some(p) = oldest {
                    self.awaited.remove(&p);
                }
            }
        }
        self.awaited.insert(from, (xid, until));
    }

    /// A `Delta`: applied only if it answers a digest this node sent `from` for `xid`, in
    /// time; anything else is counted and dropped.
    pub(super) fn on_delta(&mut self, now: Instant, from: NodeId, xid: u64, delta: Vec<Entry>) {
        match self.awaited.get(&from) {
            Some(&(x, until)) if x == xid && until >= now => {
                self.awaited.remove(&from);
                self.apply(from, delta);
            }
            _ => self.stats.unsolicited += 1,
        }
    }

    pub(super) fn on_syn_ack(
        &mut self,
        from: NodeId,
        xid: u64,
        scope: Vec<TopicId>,
        digest: Digest,
        delta: Vec<Entry>,
        proofs: Vec<Proof>,
    ) {
        let Some(ex) = self.exchange.filter(|e| e.xid == xid && e.peer == from) else {
            self.stats.unknown_xid += 1;
            return;
        };
        let wants_delta = matches!(ex.mode, AeMode::Pull | AeMode::PushPull);
        let scope_ok = scope.len() <= SCOPE_MAX && scope.windows(2).all(|w| w[0] < w[1]);
        let proofs_ok =
            proofs.len() <= digest.summaries.len() && (ex.mode == AeMode::Heads || proofs.is_empty());
        if !scope_ok || !proofs_ok || !self.valid_digest(&digest) || (!wants_delta && !delta.is_empty()) {
            self.stats.malformed += 1;
            self.abort(ex);
            return;
        }
        self.exchange = None;
        self.apply(from, delta);
        match ex.mode {
            AeMode::Push | AeMode::PushPull => {
                // Only topics both sides reconcile.
                let shared: Vec<TopicId> =
                    scope.into_iter().filter(|t| self.topics.binary_search(t).is_ok()).collect();
                let (delta, more) = self.delta_for(&digest, &shared);
                if !delta.is_empty() {
                    self.out.stream(from, AeMessage::Delta { xid, delta, more });
                }
            }
            AeMode::Heads => {
                if let Some(topic) = ex.heads_for {
                    self.out.event(AeEvent::Heads {
                        peer: from,
                        topic,
                        summaries: Some(digest.summaries),
                        proofs,
                    });
                }
            }
            AeMode::Pull => {}
        }
        self.stats.exchanges_completed += 1;
        self.out.event(AeEvent::ExchangeCompleted { peer: from, xid });
    }

    pub(super) fn apply(&mut self, from: NodeId, entries: Vec<Entry>) {
        for entry in entries {
            if self.topics.binary_search(&entry.stream.topic).is_err() {
                self.stats.out_of_scope += 1;
                continue;
            }
            if entry.seq == 0 {
                self.stats.malformed += 1;
                continue;
            }
            if self.store.contains(&entry.stream, entry.seq) {
                self.stats.duplicates += 1;
                continue;
            }
            if self.check.as_ref().is_some_and(|c| !(c.0)(&entry)) {
                self.stats.forged += 1;
                continue;
            }
            match self.config.commit {
                Commit::Immediate => match self.store.insert(entry.clone()) {
                    Inserted::New => {}
                    Inserted::Duplicate => {
                        self.stats.duplicates += 1;
                        continue;
                    }
                    Inserted::TooOld | Inserted::Invalid => {
                        self.stats.too_old += 1;
                        continue;
                    }
                    Inserted::Full => {
                        self.stats.refused_full += 1;
                        continue;
                    }
                },
                Commit::AtRoundStart => {
                    let staged = self.staged_ids.contains(&(entry.stream, entry.seq));
                    if staged || self.store.contains(&entry.stream, entry.seq) {
                        self.stats.duplicates += 1;
                        continue;
                    }
                    let cost = entry.payload.len() + ENTRY_OVERHEAD;
                    let total = self.store.bytes().saturating_add(self.staged_bytes).saturating_add(cost);
                    if total > self.config.store_bytes_max {
                        self.stats.refused_full += 1;
                        continue;
                    }
                    self.staged_bytes += cost;
                    self.staged_ids.insert((entry.stream, entry.seq));
                    self.staged.push(entry.clone());
                }
            }
            self.stats.entries_received += 1;
            self.out.event(AeEvent::Received { from, entry });
        }
    }

    pub(super) fn commit_staged(&mut self) {
        self.staged_ids.clear();
        self.staged_bytes = 0;
        for entry in std::mem::take(&mut self.staged) {
            match self.store.insert(entry) {
                Inserted::TooOld => self.stats.too_old += 1,
                Inserted::Full => self.stats.refused_full += 1,
                _ => {}
            }
        }
    }

    /// Give up the exchange in flight: no reply in time, or a malformed one.
    pub(super) fn abort(&mut self, ex: Exchange) {
        self.exchange = None;
        self.stats.exchanges_aborted += 1;
        self.out.event(AeEvent::ExchangeAborted { peer: ex.peer, xid: ex.xid });
        if let Some(topic) = ex.heads_for {
            self.out.event(AeEvent::Heads { peer: ex.peer, topic, summaries: None, proofs: Vec::new() });
        }
    }
}
