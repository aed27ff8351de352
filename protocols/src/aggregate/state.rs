//! One node's state for one query: the mass (push-sum family, push-pull) or the extremum, the
//! acknowledged-transfer bookkeeping, and the querier's stopping rule.

use std::collections::{BTreeMap, BTreeSet};

use super::query::{Algorithm, Query};
use crate::id::NodeId;

/// Most dedup windows (sender lives) kept per sender; a third evicts the least recently used.
const SESSIONS_PER_SENDER: usize = 2;

/// Most applied-but-unpruned seqs remembered per sender window; a transfer beyond it is neither
/// applied nor acknowledged (the sender keeps it outstanding and retries).
pub(super) const APPLIED_MAX: usize = 1024;

/// A transfer sent but not yet acknowledged (PROTOCOLS.md §5.3 `outstanding`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Pending {
    pub(super) peer: NodeId,
    pub(super) s: f64,
    pub(super) w: f64,
    pub(super) last_sent: u32,
}

/// What the receiver remembers of one sender life: every seq below `floor` and every seq in
/// `seqs` has been applied.
#[derive(Clone, Debug, Default)]
struct Window {
    floor: u64,
    seqs: Seqs,
    touched: u32,
}

/// A set of seqs that is almost always empty or a single seq (a sender reaches one receiver
/// about once per N rounds), kept inline then: a receiver holds one window per sender it
/// heard from, and at 10^5 nodes a heap-allocated set per window doubled the memory.
#[derive(Clone, Debug, Default)]
enum Seqs {
    #[default]
    Empty,
    One(u64),
    Many(BTreeSet<u64>),
}

impl Seqs {
    fn contains(&self, seq: u64) -> bool {
        match self {
            Seqs::Empty => false,
            Seqs::One(x) => *x == seq,
            Seqs::Many(set) => set.contains(&seq),
        }
    }

    fn len(&self) -> usize {
        match self {
            Seqs::Empty => 0,
            Seqs::One(_) => 1,
            Seqs::Many(set) => set.len(),
        }
    }

    fn insert(&mut self, seq: u64) {
        match self {
            Seqs::Empty => *self = Seqs::One(seq),
            Seqs::One(x) if *x == seq => {}
            Seqs::One(x) => *self = Seqs::Many(BTreeSet::from([*x, seq])),
            Seqs::Many(set) => {
                set.insert(seq);
            }
        }
    }

    /// Forget every seq below `floor`.
    fn prune_below(&mut self, floor: u64) {
        match self {
            Seqs::Empty => {}
            Seqs::One(x) => {
                if *x < floor {
                    *self = Seqs::Empty;
                }
            }
            Seqs::Many(set) => {
                *set = set.split_off(&floor);
                match set.len() {
                    0 => *self = Seqs::Empty,
                    1 => *self = set.first().map_or(Seqs::Empty, |&x| Seqs::One(x)),
                    _ => {}
                }
            }
        }
    }
}

/// The outcome of offering a transfer to the dedup state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Offer {
    /// Not seen before: apply it and acknowledge.
    New,
    /// Already applied: acknowledge only.
    Duplicate,
    /// Too many unpruned seqs from this sender: drop without acknowledging.
    Full,
}

/// Acknowledged push-sum bookkeeping (§5.3, with the departures listed in the module docs).
#[derive(Clone, Debug, Default)]
pub(super) struct Acked {
    /// This node's random id for its life in this query.
    pub(super) session: u64,
    /// The last seq used (seqs are per (node, query), not per peer).
    pub(super) next_seq: u64,
    /// Outstanding transfers by seq.
    pub(super) outstanding: BTreeMap<u64, Pending>,
    /// Dedup windows by (sender, sender's session).
    applied: BTreeMap<(NodeId, u64), Window>,
}

impl Acked {
    /// The floor announced with each transfer: the lowest seq still outstanding, or the next
    /// seq if none is. Every seq below it has been acknowledged, so never resent.
    pub(super) fn floor(&self) -> u64 {
        self.outstanding.keys().next().copied().unwrap_or(self.next_seq + 1)
    }

    /// Transfers outstanding to `peer`.
    pub(super) fn outstanding_to(&self, peer: &NodeId) -> usize {
        self.outstanding.values().filter(|p| p.peer == *peer).count()
    }

    /// Offer transfer `seq` of `from`'s life `session`, whose sender floor is `floor`.
    pub(super) fn offer(&mut self, from: NodeId, session: u64, floor: u64, seq: u64, round: u32) -> Offer {
        if !self.applied.contains_key(&(from, session)) {
            let lives: Vec<(u64, u32)> =
                self.applied.range((from, 0)..=(from, u64::MAX)).map(|((_, s), w)| (*s, w.touched)).collect();
            if lives.len() >= SESSIONS_PER_SENDER {
                // Evict the least recently used life (ties: lower session id), deterministically.
                if let Some(&(old, _)) = lives.iter().min_by_key(|(s, t)| (*t, *s)) {
                    self.applied.remove(&(from, old));
                }
            }
        }
        let win = self.applied.entry((from, session)).or_default();
        win.touched = round;
        if floor > win.floor {
            win.floor = floor;
            win.seqs.prune_below(floor);
        }
        if seq < win.floor || win.seqs.contains(seq) {
            Offer::Duplicate
        } else if win.seqs.len() >= APPLIED_MAX {
            Offer::Full
        } else {
            win.seqs.insert(seq);
            Offer::New
        }
    }

    /// Forget every dedup window of `peer` (it is dead or has left).
    pub(super) fn forget(&mut self, peer: &NodeId) {
        let keys: Vec<(NodeId, u64)> =
            self.applied.range((*peer, 0)..=(*peer, u64::MAX)).map(|(k, _)| *k).collect();
        for k in keys {
            self.applied.remove(&k);
        }
    }

    /// True if transfer `seq` of `from`'s life `session` has been applied here.
    pub(super) fn has_applied(&self, from: NodeId, session: u64, seq: u64) -> bool {
        self.applied.get(&(from, session)).is_some_and(|w| seq < w.floor || w.seqs.contains(seq))
    }

    /// Number of senders' windows held (for memory accounting and tests).
    pub(super) fn windows(&self) -> usize {
        self.applied.len()
    }

    /// Bytes this bookkeeping accounts for: 64 per outstanding transfer, 96 per dedup window
    /// and 16 per seq it holds.
    pub(super) fn bytes(&self) -> usize {
        let seqs: usize = self.applied.values().map(|w| w.seqs.len()).sum();
        self.outstanding.len() * 64 + self.applied.len() * 96 + seqs * 16
    }
}

/// Value and weight mass, with the algorithm-specific extras.
#[derive(Clone, Debug)]
pub(super) struct Mass {
    pub(super) s: f64,
    pub(super) w: f64,
    /// Acknowledged push-sum only (boxed: absent for the other algorithms).
    pub(super) acked: Option<Box<Acked>>,
    /// Push-pull only: the peer of the exchange this node opened and awaits a reply from.
    pub(super) awaiting: Option<NodeId>,
    /// Mass arrived since the querier last evaluated its stopping rule (or it has no one to
    /// hear from).
    pub(super) received: bool,
}

impl Mass {
    /// s/w, if defined (w > 0 and the ratio finite).
    pub(super) fn estimate(&self) -> Option<f64> {
        let x = self.s / self.w;
        (self.w > 0.0 && x.is_finite()).then_some(x)
    }
}

/// The algorithm's part of the state.
#[derive(Clone, Debug)]
pub(super) enum Part {
    /// Push-sum (plain or acknowledged) and push-pull.
    Mass(Mass),
    /// Extremum gossip: the best value seen.
    Extremum(f64),
}

/// The querier's stopping rule (§5.7).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Stopping {
    /// The estimate at the end of the previous round (`None`: undefined).
    pub(super) last: Option<f64>,
    /// For extremum: the previous raw value (±∞ included).
    pub(super) last_raw: Option<f64>,
    pub(super) stable: u32,
    pub(super) answered: bool,
}

/// One node's state for one query.
#[derive(Clone, Debug)]
pub(super) struct QueryState {
    pub(super) query: Query,
    /// This node's ticks since it joined (the querier: since it issued the query).
    pub(super) round: u32,
    pub(super) part: Part,
    /// The querier only.
    pub(super) stopping: Option<Stopping>,
}

impl QueryState {
    /// The initial state of §5.1 for a node holding `value` (if any) for the query's attribute.
    pub(super) fn new(query: Query, value: Option<f64>, is_querier: bool, session: u64) -> Self {
        use super::query::Func::*;
        let func = query.func;
        let part = match query.algorithm {
            Algorithm::Extremum => {
                let none = if func == Min { f64::INFINITY } else { f64::NEG_INFINITY };
                Part::Extremum(value.unwrap_or(none))
            }
            algorithm => {
                let querier_weight = if is_querier { 1.0 } else { 0.0 };
                let (s, w) = match func {
                    Avg => value.map_or((0.0, 0.0), |x| (x, 1.0)),
                    Sum => (value.unwrap_or(0.0), querier_weight),
                    Count => (if value.is_some() { 1.0 } else { 0.0 }, querier_weight),
                    Min | Max => (0.0, 0.0), // refused by Query::validate
                };
                let acked = (algorithm == Algorithm::AckPushSum)
                    .then(|| Box::new(Acked { session, ..Acked::default() }));
                Part::Mass(Mass { s, w, acked, awaiting: None, received: false })
            }
        };
        let mut st = QueryState { query, round: 0, part, stopping: None };
        if is_querier {
            // est_0, the estimate when the query is issued, is what round 1 compares with.
            let last_raw = match st.part {
                Part::Extremum(m) => Some(m),
                Part::Mass(_) => None,
            };
            st.stopping = Some(Stopping { last: st.estimate(), last_raw, ..Stopping::default() });
        }
        st
    }

    /// The node's current estimate, if defined.
    pub(super) fn estimate(&self) -> Option<f64> {
        match &self.part {
            Part::Mass(m) => m.estimate(),
            Part::Extremum(x) => x.is_finite().then_some(*x),
        }
    }
}

/// ⌈log2(x)⌉ for x ≥ 1.
pub(super) fn ceil_log2(x: u64) -> u32 {
    if x <= 1 { 0 } else { 64 - (x - 1).leading_zeros() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The inline set behaves as a `BTreeSet` under any mix of inserts and prunes.
        #[test]
        fn seqs_behave_like_a_set(ops in proptest::collection::vec((any::<bool>(), 0u64..40), 0..60)) {
            let (mut seqs, mut model) = (Seqs::default(), BTreeSet::new());
            for (insert, x) in ops {
                if insert {
                    seqs.insert(x);
                    model.insert(x);
                } else {
                    seqs.prune_below(x);
                    model = model.split_off(&x);
                }
                prop_assert_eq!(seqs.len(), model.len());
                prop_assert!(!matches!(seqs, Seqs::Many(ref s) if s.len() < 2), "small sets stay inline");
                for y in 0..40 {
                    prop_assert_eq!(seqs.contains(y), model.contains(&y));
                }
            }
        }
    }

    #[test]
    fn ceil_log2_matches_its_definition() {
        let cases = [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (9, 4), (1001, 10), (1024, 10), (1025, 11)];
        for (x, want) in cases {
            assert_eq!(ceil_log2(x), want, "⌈log2 {x}⌉");
        }
    }
}
