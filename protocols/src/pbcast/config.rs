//! pbcast's settings and their bounds (PROTOCOLS.md §10.4).

use serde::{Deserialize, Serialize};

use crate::anti_entropy::StreamSummary;
use crate::id::Seq;
use crate::time::Duration;
use crate::timer::Timing;

/// pbcast settings (PROTOCOLS.md §10.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PbConfig {
    /// Gossip period T_g. Default 200 ms, after memberlist's LAN GossipInterval.
    pub period: Duration,
    /// Placement of the ticks. Default phased (a random offset per node, PROTOCOLS.md §9.4).
    pub timing: Timing,
    /// Digests per topic per round. Default 1 (Birman's fanout parameter; its value there is
    /// not checked). 0 turns repair off.
    pub fanout: usize,
    /// G: rounds an entry stays in the gossip buffer after this node received it. Default 20
    /// (PROTOCOLS.md §4.8: delivery ≥ 0.9999 at 20% loss needs G ≥ 15).
    pub gc_rounds: u64,
    /// Rounds a known-missing seq may wait before it is declared lost. Default `None`: 2·G.
    pub gap_after: Option<u64>,
    /// Summaries per digest, rotating when more streams are active. Default 64 \[H\].
    pub digest_streams: usize,
    /// Missing seqs listed per summary (M of §1.1). Default 32 \[H\].
    pub digest_missing_max: usize,
    /// Seqs per solicitation. Default 64 \[H\].
    pub solicit_max: usize,
    /// Rounds before the same seq is solicited again. Default 1 \[H\].
    pub solicit_backoff: u64,
    /// Retransmissions per round (Birman's round retransmission limit). Default 256 \[H\].
    pub retx_msgs: usize,
    /// Retransmitted payload bytes per round. Default 256 KiB \[H\].
    pub retx_bytes: usize,
    /// Topics that send digests per round, rotating. Default 16 \[H\].
    pub topics_per_round: usize,
    /// Entries per stream waiting for an earlier seq before a gap is declared. Default 1024 \[H\].
    pub hold_max: usize,
    /// Entries kept per topic. Default 4096 \[H\].
    pub history_msgs: usize,
    /// Payload bytes kept per topic. Default 16 MiB \[H\].
    pub history_bytes: usize,
    /// Streams (origins) per topic: a stream beyond it is not started (its entries, digest
    /// lines and heads are dropped, counted). Default 1024 \[H\]; a stream is an origin
    /// whose seal checked, but a member can mint identities.
    pub streams_max: usize,
    /// Retransmissions for one solicitation are batched on a stream when more than this.
    /// Default 4 \[H\].
    pub batch_over: usize,
    /// Largest payload accepted, published or received. Default 1 MiB \[H\].
    pub max_payload: usize,
    /// How long a new subscriber waits for its heads reply. Default 10 s (`ae_timeout`).
    pub heads_timeout: Duration,
    /// Ask the host for an anti-entropy pull when a seq has been missing for G rounds. Default
    /// on (the daemon runs anti-entropy); the standalone experiment turns it off.
    pub pull_on_missing: bool,
}

impl Default for PbConfig {
    fn default() -> Self {
        PbConfig {
            period: Duration::from_millis(200),
            timing: Timing::Phased,
            fanout: 1,
            gc_rounds: 20,
            gap_after: None,
            digest_streams: 64,
            digest_missing_max: 32,
            solicit_max: 64,
            solicit_backoff: 1,
            retx_msgs: 256,
            retx_bytes: 256 << 10,
            topics_per_round: 16,
            hold_max: 1024,
            history_msgs: 4096,
            history_bytes: 16 << 20,
            streams_max: 1024,
            batch_over: 4,
            max_payload: 1 << 20,
            heads_timeout: Duration::from_secs(10),
            pull_on_missing: true,
        }
    }
}

impl PbConfig {
    /// Rounds after which a known-missing seq is declared lost (2·G unless set).
    pub fn gap_after(&self) -> u64 {
        self.gap_after.unwrap_or(2 * self.gc_rounds)
    }

    /// Check the settings a run cannot work with; the daemon refuses such a config at load.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = [
            (self.period == Duration::ZERO, "period"),
            (self.gc_rounds == 0, "gc_rounds"),
            (self.gap_after == Some(0), "gap_after"),
            (self.digest_streams == 0, "digest_streams"),
            (self.solicit_max == 0, "solicit_max"),
            (self.retx_msgs == 0, "retx_msgs"),
            (self.retx_bytes == 0, "retx_bytes"),
            (self.topics_per_round == 0, "topics_per_round"),
            (self.hold_max == 0, "hold_max"),
            (self.history_msgs == 0, "history_msgs"),
            (self.history_bytes == 0, "history_bytes"),
            (self.streams_max == 0, "streams_max"),
            (self.max_payload == 0, "max_payload"),
            (self.heads_timeout == Duration::ZERO, "heads_timeout"),
        ];
        if let Some((_, name)) = zero.iter().find(|(bad, _)| *bad) {
            return Err(ConfigError::Zero(name));
        }
        if self.fanout > FANOUT_MAX {
            return Err(ConfigError::TooLarge { name: "fanout", max: FANOUT_MAX });
        }
        if self.digest_missing_max > DIGEST_MISSING_LIMIT {
            return Err(ConfigError::TooLarge { name: "digest_missing_max", max: DIGEST_MISSING_LIMIT });
        }
        Ok(())
    }
}

/// The largest seq accepted from a peer. No real stream gets near it; the bound keeps every
/// cursor and counter far from overflow whatever a peer claims.
pub const SEQ_MAX: Seq = 1 << 62;

/// A summary that is consistent (§1.6) and within [`SEQ_MAX`].
pub(super) fn valid_summary(s: &StreamSummary, missing_max: usize) -> bool {
    s.max <= SEQ_MAX && s.floor <= SEQ_MAX + 1 && s.is_consistent(missing_max)
}

/// The largest fanout accepted.
pub const FANOUT_MAX: usize = 64;
/// The largest `digest_missing_max` accepted (a summary must fit a datagram).
pub const DIGEST_MISSING_LIMIT: usize = 256;

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named setting must be greater than zero.
    #[error("pbcast setting `{0}` must be greater than zero")]
    Zero(&'static str),
    /// The named setting is above its limit.
    #[error("pbcast setting `{name}` must be at most {max}")]
    TooLarge {
        /// The setting.
        name: &'static str,
        /// Its limit.
        max: usize,
    },
}

/// Why a publish was refused; nothing was stored or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The payload is larger than `max_payload`.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}
