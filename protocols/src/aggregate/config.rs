//! Aggregation's settings and the query defaults they carry (PROTOCOLS.md §10.5).

use serde::{Deserialize, Serialize};

use super::query::{Algorithm, Func, Query, QueryError, QueryId};
use crate::id::NodeId;
use crate::time::Duration;
use crate::timer::Timing;

/// Aggregation settings (PROTOCOLS.md §10.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AggConfig {
    /// T_a, the period of `agg_tick`. Default 200 ms [H, §5.1].
    pub period: Duration,
    /// Placement of the ticks. Default phased (the daemon's mode, §9.4).
    pub timing: Timing,
    /// No timer: the host calls [`Aggregation::tick`](super::Aggregation::tick) (simulator cycle
    /// models). Default false.
    pub manual_ticks: bool,
    /// Most transfers outstanding to one peer (`aps_window`). Default 64 [H, §5.3].
    pub aps_window: usize,
    /// Most retransmissions per round (`aps_retx_max`). Default 8 [H, §5.3].
    pub aps_retx_max: usize,
    /// Default stopping threshold. 10^−4 [H, §5.7].
    pub epsilon: f64,
    /// Default stable rounds. 3 [H, §5.7].
    pub stable_rounds: u32,
    /// Default round cap. 200 [H, §5.7].
    pub max_rounds: u32,
    /// `query_ttl` = max_rounds + this, in this node's rounds. 50 [H, §5.1].
    pub query_ttl_extra: u32,
    /// Most queries a node takes part in at once; more are refused (counted). 64 \[H\].
    pub queries_max: usize,
    /// Ended or expired query ids remembered so they are not joined again. 1024 \[H\].
    pub finished_max: usize,
    /// A node that is not the querier keeps a query at most this many of its rounds plus
    /// `query_ttl_extra`, whatever its `max_rounds` (2 minutes at 200 ms, far beyond any
    /// convergence time: a peer cannot make a node hold a query for half an hour). 600 \[H\].
    pub joined_rounds_max: u32,
    /// Most queries of one querier a node takes part in at once. 8 \[H\].
    pub queries_per_querier_max: usize,
}

impl Default for AggConfig {
    fn default() -> Self {
        AggConfig {
            period: Duration::from_millis(200),
            timing: Timing::Phased,
            manual_ticks: false,
            aps_window: 64,
            aps_retx_max: 8,
            epsilon: 1e-4,
            stable_rounds: 3,
            max_rounds: 200,
            query_ttl_extra: 50,
            queries_max: 64,
            finished_max: 1024,
            joined_rounds_max: 600,
            queries_per_querier_max: 8,
        }
    }
}

impl AggConfig {
    /// Check the settings a node cannot work with; the daemon refuses such a config at load.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = |v: u64, name| if v == 0 { Err(ConfigError::Zero(name)) } else { Ok(()) };
        zero(self.period.as_micros(), "period")?;
        zero(self.aps_window as u64, "aps_window")?;
        zero(self.queries_max as u64, "queries_max")?;
        zero(u64::from(self.joined_rounds_max), "joined_rounds_max")?;
        zero(self.queries_per_querier_max as u64, "queries_per_querier_max")?;
        let defaults = Query {
            qid: QueryId { querier: NodeId::from_u64(0), counter: 0 },
            func: Func::Avg,
            attr: "x".into(),
            algorithm: Algorithm::AckPushSum,
            epsilon: self.epsilon,
            stable_rounds: self.stable_rounds,
            max_rounds: self.max_rounds,
            scope: crate::tags::TagScope::default(),
        };
        defaults.validate().map_err(ConfigError::Defaults)
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named setting must be greater than zero.
    #[error("aggregation setting `{0}` must be greater than zero")]
    Zero(&'static str),
    /// The default epsilon / stable_rounds / max_rounds would make an invalid query.
    #[error("aggregation query defaults: {0}")]
    Defaults(QueryError),
}
