//! Gossip aggregation (PROTOCOLS.md §5): avg, sum and count by push-sum (Kempe, Dobra, Gehrke,
//! *Gossip-based computation of aggregate information*, FOCS 2003), min and max by extremum
//! gossip, and push-pull averaging (Jelasity, Montresor, Babaoglu, *Gossip-based aggregation in
//! large dynamic networks*, ACM TOCS 23(3), 2005) as an alternative.
//!
//! A querier starts a [`Query`] (id = querier + counter, one epoch per id, §5.6). Every node
//! that takes part holds a value mass `s` and a weight mass `w` (§5.1) and, once per `agg_tick`,
//! moves mass to a uniformly random other member; its estimate is s/w. Plain push-sum (§5.2)
//! sends half of (s, w) and forgets it, so every lost message destroys mass and biases the
//! result. **Acknowledged push-sum** (§5.3, the default) keeps each half *outstanding* until
//! the receiver acknowledges it, retransmits it until then, and the receiver applies each
//! transfer exactly once, so Σ(s, w) over nodes and outstanding transfers is conserved under
//! loss, duplication and reordering; transfers to a member reported dead or gone are reclaimed.
//! Extremum gossip (§5.4) merges min/max by idempotent push-pull. Push-pull averaging (§5.5)
//! replaces both sides' (s, w) by the pair's mean in one request/reply exchange. The querier
//! answers with a [`QueryResult`] once its estimate has stopped moving (§5.7).
//!
//! # Driving it
//!
//! The [`Machine`] contract: after every input drain `poll_transmit`, then `poll_event`, then
//! read `poll_timeout`. Side inputs: [`Aggregation::handle_query`] (a query announcement
//! arrived by rumor), [`Aggregation::handle_peers`], [`Aggregation::handle_member_down`].
//! Commands: [`Aggregation::set_value`], [`Aggregation::remove_value`],
//! [`Aggregation::start_query`], [`Aggregation::end`].
//!
//! # Timers
//!
//! One timer kind: all queries share one clock, `agg_tick` (period T_a, placed by `timing`;
//! the idiom of [`crate::machine#timers`]), and at each tick every query, in id order, takes
//! one round. With [`AggConfig::manual_ticks`] there is no timer and the host calls
//! [`Aggregation::tick`] itself (the simulator's sequential push-pull cycles, §9.4). With no
//! query in progress the machine asks for no timer (`poll_timeout` is `None`), but its ticker
//! keeps running: a host that calls `handle_timeout` anyway has a due tick served (it only
//! moves the ticker on), and a query joined while the ticker is behind moves it past `now`,
//! keeping its phase.
//!
//! # Joining, announcing, ending (hooks for the Engine)
//!
//! The query announcement rumor (§5.1) belongs to the rumor machine. Here a node joins on the
//! first aggregation message that carries the query; the Engine also calls
//! [`Aggregation::handle_query`] when the rumor delivers one. [`Aggregation::start_query`] emits
//! [`AggEvent::Announce`] for the Engine to spread, and the querier's
//! [`AggEvent::Answered`] is the cue for the `QueryEnd` rumor, which the Engine turns into
//! [`Aggregation::end`] on every node. Without it a node drops the query after
//! `max_rounds + query_ttl_extra` of its own rounds. An ended or expired query is remembered
//! (up to `finished_max` ids) and not joined again.
//!
//! # Departures from PROTOCOLS.md §5, on purpose
//!
//! - **Transfer seqs are per (node, query), not per (node, query, peer)**, and every `PsMass`
//!   carries the sender's `floor` (its lowest outstanding seq): the receiver forgets applied
//!   seqs below it. A sender then keeps one counter instead of a map over every peer it ever
//!   picked (at 10^5 nodes that map was the largest state), and the receiver's dedup window is
//!   pruned by the sender instead of needing contiguous seqs per link. Exactly-once is kept:
//!   a seq below the floor was acknowledged, hence applied.
//! - **`PsMass` and `PsAck` carry a `session`**, a random number per (node life, query). A node
//!   that restarts starts its seqs again at 1; without the session its new transfers would be
//!   taken for duplicates, acknowledged and lost. A receiver keeps the windows of the last two
//!   lives of each sender.
//! - **Push-pull averages the (s, w) pair, not a bare x** (`PpxRequest{query, s, w}`), so it
//!   computes sum and count as well (s/w with the weight at the querier) and needs no special
//!   case for nodes without the attribute. For avg with every node holding the attribute, w
//!   stays exactly 1 and s is Jelasity's x.
//! - **A push-pull reply is accepted only from the peer the exchange was opened with**; a
//!   reply still awaited at the next tick is given up (the exchange was lost).
//! - **Bounds that §5 does not give** \[H\]: at most `queries_max` concurrent queries per node,
//!   `max_rounds` ≤ [`MAX_ROUNDS_LIMIT`], epsilon in (0, 1], at most 1024 unpruned applied
//!   seqs per sender life, `query_ttl` = `max_rounds + query_ttl_extra` (50).
//! - **What a peer can make a node hold** (issue 12): a query from the network is joined only
//!   if its querier is in the peer view (when there is one), and at most
//!   `queries_per_querier_max` queries of one querier at once (`refused_querier`); a node that
//!   is not the querier keeps a query at most `min(max_rounds, joined_rounds_max) +
//!   query_ttl_extra` of its rounds. 64 bogus queries with `max_rounds = 10000` used to fill
//!   `queries_max` for 10,050 rounds (33 minutes at 200 ms).
//! - **Stopping rule: a round in which no mass reached the querier neither counts toward
//!   `stable_rounds` nor resets the count** (push-sum family and push-pull; a querier with no
//!   other member counts every round). §5.7 counts it as stable, since s/w did not move, but a
//!   push-sum node receives nothing in a round with probability about e^−1, so three quiet
//!   rounds in a row come by chance. Measured with the experiment (N = 1000, uniform values,
//!   1% loss, 60 rounds, seed 1, 5 runs): with §5.7 as written the querier answered at round
//!   23.4 (avg) / 28.2 (sum) on average with relative error 1.7·10^−3 / 6.8·10^−2 (worst run
//!   7.6·10^−3 / 0.31); with quiet rounds neutral, at 29.4 / 39.6 with 1.7·10^−5 / 3.9·10^−5
//!   (worst 5.4·10^−5 / 6.5·10^−5).
//! - **Tag scopes** (issue 15; §5 aggregates over every node): a [`Query`] carries a
//!   [`TagScope`](crate::tags::TagScope); a node whose own tags ([`Aggregation::set_tags`])
//!   do not match it joins without a value, exactly like a node that does not hold the
//!   attribute, so avg, sum and count are over the nodes in scope. Each node decides once, when
//!   it joins; the scope's bounds are checked with the query's, and a pattern that does not
//!   compile within its limits makes the message malformed.
//! - **Restart caveat** (not fixed): a node that crashes and restarts during a query rejoins
//!   it with its value, which the system may still hold part of. §5.8 does not cover it.

mod config;
mod message;
mod query;
mod receive;
mod state;
#[cfg(test)]
mod tests;
mod tick;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

pub use self::config::{AggConfig, ConfigError};
pub use self::message::{AggEvent, AggMessage};
pub use self::query::{
    ATTR_MAX_BYTES, Algorithm, Func, MAX_ROUNDS_LIMIT, Query, QueryError, QueryId, QueryResult, QuerySpec,
    ValueError,
};
use self::receive::PsMass;
use self::state::{Mass, Part, QueryState};
use crate::id::NodeId;
use crate::machine::{Machine, Outbox, Transmit};
use crate::peers::PeerView;
use crate::rng::{Rng, Seed};
use crate::tags::Tags;
use crate::time::Instant;
use crate::timer::{Earliest, Ticker};

/// Counters, for metrics and experiments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggStats {
    /// Queries joined (started ones included).
    pub joined: u64,
    /// Queries answered (querier only).
    pub answered: u64,
    /// Queries dropped by the TTL.
    pub expired: u64,
    /// Per-query ticks that found no other member.
    pub ticks_idle: u64,
    /// Push-sum transfers sent (plain and acknowledged, first transmissions).
    pub transfers_sent: u64,
    /// Acknowledged push-sum retransmissions.
    pub retransmissions: u64,
    /// Ticks that sent no new transfer because `aps_window` transfers to the peer were
    /// outstanding.
    pub window_full: u64,
    /// Transfers applied.
    pub transfers_applied: u64,
    /// Transfers received again (acknowledged, not applied).
    pub duplicates: u64,
    /// Transfers dropped unacknowledged: too many unpruned seqs from that sender.
    pub applied_full: u64,
    /// Acknowledgements that matched an outstanding transfer.
    pub acked: u64,
    /// Acknowledgements that matched nothing (late duplicates, another session).
    pub stale_acks: u64,
    /// Outstanding transfers reclaimed from members reported gone.
    pub reclaimed: u64,
    /// Push-pull exchanges completed by this node as initiator.
    pub exchanges: u64,
    /// Push-pull replies never received (given up at the next tick).
    pub exchanges_lost: u64,
    /// Replies from a peer no exchange was opened with.
    pub unexpected_replies: u64,
    /// Messages refused: invalid query, non-finite or negative mass, wrong message for the
    /// algorithm, inconsistent seq/floor, a query conflicting with the known one.
    pub malformed: u64,
    /// Messages naming a query this node does not hold (replies, acks).
    pub unknown_query: u64,
    /// Messages for a query that has ended or expired here.
    pub ended_query: u64,
    /// Queries refused because `queries_max` were in progress.
    pub refused: u64,
    /// Queries from the network refused: their querier is not in the peer view, or already
    /// has `queries_per_querier_max` queries here.
    pub refused_querier: u64,
}

/// The mass a node holds for a query, for invariant checks and experiments.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MassView {
    /// Value mass held.
    pub s: f64,
    /// Weight mass held.
    pub w: f64,
    /// Value mass in outstanding transfers (acknowledged push-sum).
    pub outstanding_s: f64,
    /// Weight mass in outstanding transfers.
    pub outstanding_w: f64,
    /// Outstanding transfers.
    pub outstanding: usize,
}

/// One acknowledged transfer still outstanding at its sender (for invariant checks).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InFlight {
    /// The receiver.
    pub peer: NodeId,
    /// The sender's session in the query.
    pub session: u64,
    /// The transfer's seq.
    pub seq: u64,
    /// Value mass carried.
    pub s: f64,
    /// Weight mass carried.
    pub w: f64,
}

/// The aggregation machine of one node. Drive it as described in [`crate::machine`].
#[derive(Debug)]
pub struct Aggregation {
    id: NodeId,
    config: Arc<AggConfig>,
    rng: Rng,
    peers: PeerView,
    self_pos: Option<usize>,
    values: BTreeMap<String, f64>,
    /// This node's tags: a query's scope decides from them whether its value counts.
    tags: Tags,
    queries: BTreeMap<QueryId, QueryState>,
    finished: BTreeSet<QueryId>,
    finished_order: VecDeque<QueryId>,
    tick: Ticker,
    next_counter: u64,
    out: Outbox<AggMessage, AggEvent>,
    stats: AggStats,
}

impl Aggregation {
    /// The machine name used to derive its RNG from the node seed.
    pub const NAME: &'static str = "aggregation";

    /// A machine for node `id`, started at `now`, with its RNG derived from the node's seed.
    pub fn new(id: NodeId, config: Arc<AggConfig>, node_seed: &Seed, now: Instant) -> Self {
        let mut rng = Rng::from_seed(node_seed.machine(Self::NAME));
        let tick = Ticker::start(now, config.period, config.timing, &mut rng);
        Aggregation {
            id,
            config,
            rng,
            peers: PeerView::default(),
            self_pos: None,
            values: BTreeMap::new(),
            tags: Tags::default(),
            queries: BTreeMap::new(),
            finished: BTreeSet::new(),
            finished_order: VecDeque::new(),
            tick,
            next_counter: 0,
            out: Outbox::default(),
            stats: AggStats::default(),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The counters.
    pub fn stats(&self) -> &AggStats {
        &self.stats
    }

    /// Replace the members partners are drawn from (§0.3: Alive or Suspect, self excluded or
    /// not: self is never picked).
    pub fn handle_peers(&mut self, _now: Instant, peers: PeerView) {
        self.self_pos = peers.position(&self.id);
        self.peers = peers;
    }

    /// The peers last given by [`Aggregation::handle_peers`].
    pub fn peers(&self) -> &PeerView {
        &self.peers
    }

    /// `peer` is Dead or has Left: reclaim acknowledged transfers outstanding to it, forget
    /// its dedup windows, give up an exchange awaiting its reply (§5.3).
    pub fn handle_member_down(&mut self, _now: Instant, peer: NodeId) {
        for st in self.queries.values_mut() {
            let Part::Mass(mass) = &mut st.part else { continue };
            if mass.awaiting == Some(peer) {
                mass.awaiting = None;
            }
            if let Some(acked) = mass.acked.as_deref_mut() {
                let gone: Vec<u64> =
                    acked.outstanding.iter().filter(|(_, p)| p.peer == peer).map(|(q, _)| *q).collect();
                for q in gone {
                    if let Some(p) = acked.outstanding.remove(&q) {
                        mass.s += p.s;
                        mass.w += p.w;
                        self.stats.reclaimed += 1;
                    }
                }
                acked.forget(&peer);
            }
        }
    }

    /// This node's value for `attr` from now on (queries joined later start from it).
    pub fn set_value(&mut self, _now: Instant, attr: &str, value: f64) -> Result<(), ValueError> {
        if attr.is_empty() || attr.len() > ATTR_MAX_BYTES {
            return Err(ValueError::BadAttr);
        }
        if !value.is_finite() {
            return Err(ValueError::NotFinite(value));
        }
        self.values.insert(attr.to_owned(), value);
        Ok(())
    }

    /// This node's tags from now on: queries joined later count its values only if their
    /// scope matches them.
    pub fn set_tags(&mut self, _now: Instant, tags: Tags) {
        self.tags = tags;
    }

    /// This node no longer holds `attr`.
    pub fn remove_value(&mut self, _now: Instant, attr: &str) {
        self.values.remove(attr);
    }

    /// Start a query as its querier. Emits [`AggEvent::Announce`] and [`AggEvent::Joined`].
    pub fn start_query(&mut self, now: Instant, spec: QuerySpec) -> Result<Query, QueryError> {
        let c = &self.config;
        let query = Query {
            qid: QueryId { querier: self.id, counter: self.next_counter },
            algorithm: spec.algorithm.unwrap_or(spec.func.default_algorithm()),
            func: spec.func,
            attr: spec.attr,
            epsilon: spec.epsilon.unwrap_or(c.epsilon),
            stable_rounds: spec.stable_rounds.unwrap_or(c.stable_rounds),
            max_rounds: spec.max_rounds.unwrap_or(c.max_rounds),
            scope: spec.scope,
        };
        query.validate()?;
        if self.queries.len() >= self.config.queries_max {
            return Err(QueryError::TooManyQueries);
        }
        self.next_counter += 1;
        self.out.event(AggEvent::Announce(query.clone()));
        self.admit(now, query.clone(), None)?;
        Ok(query)
    }

    /// Join `query` (the Engine calls this when the announcement rumor delivers it). Returns
    /// true if newly joined, false if already taking part.
    pub fn handle_query(&mut self, now: Instant, query: Query) -> Result<bool, QueryError> {
        query.validate()?;
        match self.queries.get(&query.qid) {
            Some(st) if st.query == query => Ok(false),
            Some(_) => Err(QueryError::Conflict),
            None => self.admit(now, query, None).map(|_| true),
        }
    }

    /// End `qid` here (the `QueryEnd` rumor): drop its state and never join it again.
    pub fn end(&mut self, _now: Instant, qid: QueryId) {
        self.queries.remove(&qid);
        self.remember_finished(qid);
    }

    /// This node's current estimate for `qid` (`None`: not joined, or undefined).
    pub fn estimate(&self, qid: &QueryId) -> Option<f64> {
        self.queries.get(qid).and_then(QueryState::estimate)
    }

    /// The mass held for `qid` (push-sum family and push-pull), outstanding transfers apart.
    pub fn mass(&self, qid: &QueryId) -> Option<MassView> {
        let Part::Mass(m) = &self.queries.get(qid)?.part else { return None };
        let mut view = MassView { s: m.s, w: m.w, ..MassView::default() };
        if let Some(acked) = &m.acked {
            for p in acked.outstanding.values() {
                view.outstanding_s += p.s;
                view.outstanding_w += p.w;
            }
            view.outstanding = acked.outstanding.len();
        }
        Some(view)
    }

    /// The acknowledged transfers this node has outstanding for `qid`, by seq.
    pub fn in_flight(&self, qid: &QueryId) -> Vec<InFlight> {
        let Some(Part::Mass(Mass { acked: Some(a), .. })) = self.queries.get(qid).map(|st| &st.part) else {
            return Vec::new();
        };
        let session = a.session;
        a.outstanding
            .iter()
            .map(|(&seq, p)| InFlight { peer: p.peer, session, seq, s: p.s, w: p.w })
            .collect()
    }

    /// True if this node has applied transfer `seq` of `from`'s session `session` for `qid`.
    /// With [`Aggregation::in_flight`] it gives §5.3's exact invariant: Σ held + Σ transfers
    /// in flight and not yet applied at their receiver.
    pub fn has_applied(&self, qid: &QueryId, from: &NodeId, session: u64, seq: u64) -> bool {
        match self.queries.get(qid).map(|st| &st.part) {
            Some(Part::Mass(Mass { acked: Some(a), .. })) => a.has_applied(*from, session, seq),
            _ => false,
        }
    }

    /// Bytes of state this machine accounts for: per query its state (with the attribute and
    /// the scope's text) and its transfer bookkeeping, per remembered finished id 48 bytes.
    /// Queries are capped in number, their bookkeeping in entries.
    pub fn state_bytes(&self) -> usize {
        let per_query: usize = self
            .queries
            .values()
            .map(|st| {
                let book = match &st.part {
                    Part::Mass(Mass { acked: Some(a), .. }) => a.bytes(),
                    _ => 0,
                };
                let scope: usize = st.query.scope.terms().iter().map(|(k, p)| k.len() + p.len()).sum();
                256 + st.query.attr.len() + scope + book
            })
            .sum();
        per_query.saturating_add(self.finished.len() * 48).saturating_add(std::mem::size_of::<Self>())
    }

    /// The ids of the queries this node takes part in, ascending.
    pub fn queries(&self) -> impl Iterator<Item = &QueryId> {
        self.queries.keys()
    }

    /// Dedup windows held for `qid` (acknowledged push-sum): one per sender life heard from.
    pub fn dedup_windows(&self, qid: &QueryId) -> usize {
        match self.queries.get(qid).map(|st| &st.part) {
            Some(Part::Mass(Mass { acked: Some(a), .. })) => a.windows(),
            _ => 0,
        }
    }

    /// One `agg_tick`: every query, in id order, takes one round. The timer calls this; with
    /// [`AggConfig::manual_ticks`] the host does.
    pub fn tick(&mut self, now: Instant) {
        let _ = now;
        let qids: Vec<QueryId> = self.queries.keys().copied().collect();
        for qid in qids {
            self.round(qid);
        }
    }

    fn admit(&mut self, now: Instant, query: Query, from: Option<NodeId>) -> Result<(), QueryError> {
        if self.finished.contains(&query.qid) {
            return Err(QueryError::Ended);
        }
        if self.queries.len() >= self.config.queries_max {
            self.stats.refused += 1;
            return Err(QueryError::TooManyQueries);
        }
        let querier = query.qid.querier;
        if querier != self.id {
            let stranger = !self.peers.is_empty() && !self.peers.contains(&querier);
            let first = QueryId { querier, counter: 0 };
            let last = QueryId { querier, counter: u64::MAX };
            let held = self.queries.range(first..=last).count();
            if stranger || held >= self.config.queries_per_querier_max {
                self.stats.refused_querier += 1;
                return Err(QueryError::TooManyQueries);
            }
        }
        if self.queries.is_empty() && !self.config.manual_ticks && self.tick.is_due(now) {
            // The ticker idled while no query ran: move it past `now`, keeping its phase.
            self.tick.advance(now, &mut self.rng);
        }
        // Out of scope, a node still takes part (it relays mass) but holds no value: push-sum
        // then counts it as a node without the attribute, so avg, sum and count are over the
        // members in scope only.
        let in_scope = if query.scope.is_empty() {
            true
        } else {
            match query.scope.matcher() {
                Ok(m) => m.matches(&self.tags),
                Err(e) => {
                    self.stats.malformed += 1;
                    return Err(QueryError::BadScope(e));
                }
            }
        };
        let value = if in_scope { self.values.get(&query.attr).copied() } else { None };
        let is_querier = query.qid.querier == self.id;
        let session = if query.algorithm == Algorithm::AckPushSum { self.rng.next_u64() } else { 0 };
        let qid = query.qid;
        self.queries.insert(qid, QueryState::new(query, value, is_querier, session));
        self.stats.joined += 1;
        self.out.event(AggEvent::Joined { qid, from });
        Ok(())
    }

    fn remember_finished(&mut self, qid: QueryId) {
        if self.finished.insert(qid) {
            self.finished_order.push_back(qid);
            while self.finished_order.len() > self.config.finished_max {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
    }

    /// The earliest armed timer: the tick, which runs unless `manual_ticks` (with no query in
    /// progress the machine only asks for no wake-up, in `poll_timeout`).
    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let mut e = Earliest::new();
        e.offer((!self.config.manual_ticks).then(|| self.tick.deadline()), Timer::Tick);
        e.get()
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Tick => {
                self.tick.advance(now, &mut self.rng);
                self.tick(now);
            }
        }
    }
}

/// Aggregation's timer kinds, in the order simultaneous ones are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// `agg_tick` (`period`): one round of every query.
    Tick,
}

impl Machine for Aggregation {
    type Message = AggMessage;
    type Event = AggEvent;

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: AggMessage) {
        match msg {
            AggMessage::PsMass { query, session, floor, seq, s, w } => {
                self.on_ps_mass(now, from, PsMass { query, session, floor, seq, s, w })
            }
            AggMessage::PsAck { qid, session, seq } => self.on_ps_ack(from, qid, session, seq),
            AggMessage::ExtPush { query, m } => self.on_ext_push(now, from, query, m),
            AggMessage::ExtReply { qid, m } => self.on_ext_reply(qid, m),
            AggMessage::PpxRequest { query, s, w } => self.on_ppx_request(now, from, query, s, w),
            AggMessage::PpxReply { qid, s, w } => self.on_ppx_reply(from, qid, s, w),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.next_timer() {
            if at > now {
                break;
            }
            self.fire(now, timer);
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit<AggMessage>> {
        self.out.pop_transmit()
    }

    fn poll_event(&mut self) -> Option<AggEvent> {
        self.out.pop_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        // No query in progress: the tick stays armed, unasked for (module docs, "Timers").
        if self.queries.is_empty() { None } else { self.next_timer().map(|(at, _)| at) }
    }
}
