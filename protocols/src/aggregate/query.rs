//! Queries: what is asked (PROTOCOLS.md §5.1), how it is checked, and what is answered.

use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::tags::{ScopeError, TagScope};

/// The longest attribute name a query may name, in bytes (PROTOCOLS.md §10.5).
pub const ATTR_MAX_BYTES: usize = 64;

/// The largest `max_rounds` a query may carry; more is malformed [H: 33 minutes of 200 ms
/// rounds is far beyond any convergence time]. How long a peer can make a node keep a query is
/// bounded lower, by `AggConfig::joined_rounds_max`.
pub const MAX_ROUNDS_LIMIT: u32 = 10_000;

/// A query's identity: the querier and its own counter. Every query id is one epoch
/// (PROTOCOLS.md §5.6): asking again starts a new query with a new counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueryId {
    /// The node that asked, and the only one that answers.
    pub querier: NodeId,
    /// The querier's counter, +1 per query it starts.
    pub counter: u64,
}

/// The aggregate a query computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Func {
    /// Mean of the values of the nodes that hold the attribute.
    Avg,
    /// Sum of those values.
    Sum,
    /// Number of nodes that hold the attribute.
    Count,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
}

impl Func {
    /// The default algorithm for this function (PROTOCOLS.md §5.1 \[H\]): acknowledged push-sum
    /// for avg, sum and count; extremum gossip for min and max.
    pub fn default_algorithm(self) -> Algorithm {
        match self {
            Func::Avg | Func::Sum | Func::Count => Algorithm::AckPushSum,
            Func::Min | Func::Max => Algorithm::Extremum,
        }
    }

    /// True for min and max, which only extremum gossip computes.
    pub fn is_extremum(self) -> bool {
        matches!(self, Func::Min | Func::Max)
    }

    /// The command-line and JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Func::Avg => "avg",
            Func::Sum => "sum",
            Func::Count => "count",
            Func::Min => "min",
            Func::Max => "max",
        }
    }
}

/// How a query is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Push-sum with exactly-once, acknowledged mass transfer (§5.3): conserves mass under
    /// loss, duplication and reordering. The default for avg, sum and count.
    AckPushSum,
    /// Kempe et al.'s plain push-sum (§5.2): loses mass with every lost message.
    PushSum,
    /// Jelasity et al.'s push-pull averaging (§5.5) of the (s, w) pair; mass is conserved only
    /// by atomic exchanges without loss.
    PushPull,
    /// Min or max by idempotent push-pull merging (§5.4).
    Extremum,
}

impl Algorithm {
    /// True if this algorithm can compute `func`: extremum gossip for min/max, the others for
    /// avg/sum/count.
    pub fn computes(self, func: Func) -> bool {
        (self == Algorithm::Extremum) == func.is_extremum()
    }

    /// The command-line and JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::AckPushSum => "ack-push-sum",
            Algorithm::PushSum => "push-sum",
            Algorithm::PushPull => "push-pull",
            Algorithm::Extremum => "extremum",
        }
    }
}

/// A query as it travels: in the announcement rumor and in every aggregation message that may
/// make a node join (PROTOCOLS.md §5.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// Identity (and epoch).
    pub qid: QueryId,
    /// What is computed.
    pub func: Func,
    /// The attribute whose values are aggregated (≤ [`ATTR_MAX_BYTES`] bytes, not empty).
    pub attr: String,
    /// How it is computed.
    pub algorithm: Algorithm,
    /// The stopping rule's relative-change threshold (§5.7), in (0, 1].
    pub epsilon: f64,
    /// Consecutive stable rounds the querier waits for (push-sum family, push-pull), ≥ 1.
    pub stable_rounds: u32,
    /// Rounds after which the querier answers anyway, unconverged; 1..=[`MAX_ROUNDS_LIMIT`].
    pub max_rounds: u32,
    /// The members whose values count: a node contributes only if its own tags match
    /// (empty: every node). Bounded by [`TagScope::validate`]; compiled once per node that
    /// joins.
    pub scope: TagScope,
}

impl Query {
    /// Check every bound a query must respect; a query from the network that fails is counted
    /// and dropped.
    pub fn validate(&self) -> Result<(), QueryError> {
        if self.attr.is_empty() {
            return Err(QueryError::EmptyAttr);
        }
        if self.attr.len() > ATTR_MAX_BYTES {
            return Err(QueryError::AttrTooLong(self.attr.len()));
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0 && self.epsilon <= 1.0) {
            return Err(QueryError::BadEpsilon(self.epsilon));
        }
        if self.max_rounds == 0 || self.max_rounds > MAX_ROUNDS_LIMIT {
            return Err(QueryError::BadMaxRounds(self.max_rounds));
        }
        if self.stable_rounds == 0 || self.stable_rounds > self.max_rounds {
            return Err(QueryError::BadStableRounds(self.stable_rounds));
        }
        if !self.algorithm.computes(self.func) {
            return Err(QueryError::AlgorithmMismatch { func: self.func, algorithm: self.algorithm });
        }
        self.scope.validate().map_err(QueryError::BadScope)?;
        Ok(())
    }
}

/// What a local caller asks for; unset fields take the machine's configured defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct QuerySpec {
    /// The aggregate.
    pub func: Func,
    /// The attribute.
    pub attr: String,
    /// `None`: [`Func::default_algorithm`].
    pub algorithm: Option<Algorithm>,
    /// `None`: the configured epsilon.
    pub epsilon: Option<f64>,
    /// `None`: the configured stable_rounds.
    pub stable_rounds: Option<u32>,
    /// `None`: the configured max_rounds.
    pub max_rounds: Option<u32>,
    /// Only members whose tags match contribute (empty: all).
    pub scope: TagScope,
}

impl QuerySpec {
    /// `func` over `attr`, everything else by default.
    pub fn new(func: Func, attr: impl Into<String>) -> Self {
        QuerySpec {
            func,
            attr: attr.into(),
            algorithm: None,
            epsilon: None,
            stable_rounds: None,
            max_rounds: None,
            scope: TagScope::default(),
        }
    }

    /// The same spec computed by `algorithm`.
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = Some(algorithm);
        self
    }
}

/// The querier's answer (PROTOCOLS.md §5.7).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryResult {
    /// Which query.
    pub qid: QueryId,
    /// The estimate; `None` when undefined (w = 0, or ±∞ for an extremum: no node holds the
    /// attribute as far as the querier learned).
    pub value: Option<f64>,
    /// The querier's rounds from issuing the query to answering.
    pub rounds: u32,
    /// True if the stopping rule fired; false if `max_rounds` forced the answer.
    pub converged: bool,
    /// The query's epsilon.
    pub epsilon: f64,
    /// The query's stable_rounds.
    pub stable_rounds: u32,
    /// The query's algorithm.
    pub algorithm: Algorithm,
}

/// Why a query cannot be started or joined.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The attribute name is empty.
    #[error("the attribute name is empty")]
    EmptyAttr,
    /// The attribute name is longer than [`ATTR_MAX_BYTES`].
    #[error("attribute name of {0} bytes exceeds {ATTR_MAX_BYTES}")]
    AttrTooLong(usize),
    /// epsilon is not in (0, 1].
    #[error("epsilon {0} is not in (0, 1]")]
    BadEpsilon(f64),
    /// stable_rounds is 0 or above max_rounds.
    #[error("stable_rounds {0} is not in 1..=max_rounds")]
    BadStableRounds(u32),
    /// max_rounds is 0 or above [`MAX_ROUNDS_LIMIT`].
    #[error("max_rounds {0} is not in 1..={MAX_ROUNDS_LIMIT}")]
    BadMaxRounds(u32),
    /// The algorithm cannot compute the function.
    #[error("{} cannot compute {}", .algorithm.name(), .func.name())]
    AlgorithmMismatch {
        /// The function asked for.
        func: Func,
        /// The algorithm asked for.
        algorithm: Algorithm,
    },
    /// The node already takes part in `queries_max` queries.
    #[error("too many concurrent queries")]
    TooManyQueries,
    /// The tag scope is beyond its bounds or does not compile.
    #[error("tag scope: {0}")]
    BadScope(ScopeError),
    /// The query has ended (or expired) here and is not joined again.
    #[error("the query has ended")]
    Ended,
    /// A query with this id but different fields is already known.
    #[error("conflicts with the known query of the same id")]
    Conflict,
}

/// Why a local value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// NaN or ±∞ (PROTOCOLS.md §5.1: refused at set time).
    #[error("value {0} is not finite")]
    NotFinite(f64),
    /// Empty or longer than [`ATTR_MAX_BYTES`].
    #[error("attribute name must have 1..={ATTR_MAX_BYTES} bytes")]
    BadAttr,
}
