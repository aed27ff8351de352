//! Scribe's settings, their bounds (PROTOCOLS.md §10.8) and the errors of local commands.

use hearsay_protocols::pbcast::MsgId;
use hearsay_protocols::{Duration, Timing};
use serde::{Deserialize, Serialize};

use super::{PATH_MAX, TTL_MAX};

/// Scribe settings (PROTOCOLS.md §10.8).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScribeConfig {
    /// Period of the heartbeat tick. Default 1 s \[H; Scribe: periodic, value U].
    pub heartbeat_interval: Duration,
    /// A parent unheard for this many intervals is lost. Default 3 \[H\].
    pub parent_timeout_mult: u32,
    /// A child that acknowledged nothing for this many intervals is dropped. Default 3 \[H\].
    pub child_timeout_mult: u32,
    /// First JOIN retry after this long, doubling per retry. Default 2 s \[H\].
    pub join_timeout: Duration,
    /// Longest wait between JOIN retries. Default 30 s \[H\].
    pub join_timeout_max: Duration,
    /// Ancestor lists this long or longer mean a cycle or a runaway tree. Default 64 \[H\].
    pub max_depth: usize,
    /// Message ids remembered per topic for the flood's dedupe. Default 4096 \[H\].
    pub seen_max: usize,
    /// Hops a `ScribePublish` may travel. Default 64 \[H\].
    pub publish_ttl: u8,
    /// Most tree entries (topics) this node holds. Default 4096 \[H\].
    pub max_topics: usize,
    /// Most children per tree entry. Default 1024 \[H\].
    pub max_children: usize,
    /// Largest payload forwarded. Default 1 MiB (pbcast's `max_payload`).
    pub max_payload: usize,
    /// Most forwarder entries the JOINs of one peer may create (and keep) here, so one member
    /// cannot take all `max_topics`. Default 512 \[H\].
    pub max_forwarders_per_peer: usize,
    /// Most children over all tree entries. Default 65,536 \[H\].
    pub max_children_total: usize,
    /// Placement of the heartbeat ticks. Default phased.
    pub timing: Timing,
    /// Send every tree copy (`TreeData`, and `ScribePublish` on its way to the root) on the
    /// reliable stream to the next hop, not only those too large for a datagram: a copy lost
    /// on a link is retransmitted by the transport instead of left to pbcast's repair, for
    /// the transport's per-stream cost and a retransmission delay on loss (issue 14, item 6).
    /// Default off \[H\]: datagrams.
    pub tree_streams: bool,
}

impl Default for ScribeConfig {
    fn default() -> Self {
        ScribeConfig {
            heartbeat_interval: Duration::from_secs(1),
            parent_timeout_mult: 3,
            child_timeout_mult: 3,
            join_timeout: Duration::from_secs(2),
            join_timeout_max: Duration::from_secs(30),
            max_depth: 64,
            seen_max: 4096,
            publish_ttl: TTL_MAX,
            max_topics: 4096,
            max_children: 1024,
            max_payload: 1 << 20,
            max_forwarders_per_peer: 512,
            max_children_total: 1 << 16,
            timing: Timing::Phased,
            tree_streams: false,
        }
    }
}

impl ScribeConfig {
    /// Check the settings a tree cannot work with; the daemon refuses such a config at load.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = [
            (self.heartbeat_interval == Duration::ZERO, "heartbeat_interval"),
            (self.parent_timeout_mult == 0, "parent_timeout_mult"),
            (self.child_timeout_mult == 0, "child_timeout_mult"),
            (self.join_timeout == Duration::ZERO, "join_timeout"),
            (self.seen_max == 0, "seen_max"),
            (self.publish_ttl == 0, "publish_ttl"),
            (self.max_topics == 0, "max_topics"),
            (self.max_children == 0, "max_children"),
            (self.max_payload == 0, "max_payload"),
            (self.max_forwarders_per_peer == 0, "max_forwarders_per_peer"),
            (self.max_children_total == 0, "max_children_total"),
        ];
        if let Some((_, name)) = zero.iter().find(|(bad, _)| *bad) {
            return Err(ConfigError::Zero(name));
        }
        if self.max_depth < 2 || self.max_depth > PATH_MAX {
            return Err(ConfigError::OutOfRange("max_depth", 2, PATH_MAX as u64));
        }
        if self.publish_ttl > TTL_MAX {
            return Err(ConfigError::OutOfRange("publish_ttl", 1, u64::from(TTL_MAX)));
        }
        if self.join_timeout_max < self.join_timeout {
            return Err(ConfigError::Order("join_timeout_max", "join_timeout"));
        }
        Ok(())
    }

    pub(super) fn parent_timeout(&self) -> Duration {
        self.heartbeat_interval * u64::from(self.parent_timeout_mult)
    }

    pub(super) fn child_timeout(&self) -> Duration {
        self.heartbeat_interval * u64::from(self.child_timeout_mult)
    }

    /// The wait after JOIN attempt `attempt` (0-based): join_timeout · 2^attempt, capped.
    pub(super) fn join_wait(&self, attempt: u32) -> Duration {
        let doubled = self.join_timeout.saturating_mul(1u64 << attempt.min(20));
        doubled.min(self.join_timeout_max)
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named setting must be greater than zero.
    #[error("scribe setting `{0}` must be greater than zero")]
    Zero(&'static str),
    /// The named setting must lie in the range.
    #[error("scribe setting `{0}` must be between {1} and {2}")]
    OutOfRange(&'static str, u64, u64),
    /// The first setting must be at least the second.
    #[error("scribe setting `{0}` must be at least `{1}`")]
    Order(&'static str, &'static str),
}

/// Why a local command was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScribeError {
    /// This node already holds `max_topics` tree entries.
    #[error("this node already takes part in {0} topic trees")]
    TooManyTopics(usize),
    /// The message cannot travel down a tree (seq out of range or payload too large).
    #[error("message {0:?} cannot be published on a tree")]
    InvalidData(MsgId),
}
