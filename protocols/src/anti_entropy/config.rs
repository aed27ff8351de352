//! Anti-entropy settings and the bounds on what a peer may send (PROTOCOLS.md §10.1).

use serde::{Deserialize, Serialize};

use super::store::Limits;
use crate::time::Duration;
use crate::timer::Timing;

/// The most topics a `Syn` may name in its scope; more is malformed.
pub const SCOPE_MAX: usize = 1024;

/// Which way an exchange moves entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AeMode {
    /// The initiator sends what the responder lacks.
    Push,
    /// The initiator fetches what it lacks.
    Pull,
    /// Both (Demers: converges fastest).
    #[default]
    PushPull,
    /// The initiator learns only the responder's summaries (a new subscriber's cursors, §4.7).
    Heads,
}

/// When received entries become visible to this node's own digests and deltas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Commit {
    /// As soon as they are stored (the daemon).
    #[default]
    Immediate,
    /// At this node's next tick (round-based experiments, §1.5).
    AtRoundStart,
}

/// Anti-entropy settings (PROTOCOLS.md §10.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AeConfig {
    /// Mode of the periodic exchange. Default push-pull (Demers §1.3).
    pub mode: AeMode,
    /// Period between exchanges. Default 30 s, after memberlist's LAN PushPullInterval.
    pub interval: Duration,
    /// How long the initiator waits for the reply. Default 10 s, after memberlist's LAN
    /// TCPTimeout.
    pub timeout: Duration,
    /// Placement of the ticks in time.
    pub timing: Timing,
    /// When received entries become visible.
    pub commit: Commit,
    /// Missing seqs listed per summary (M). Default 32.
    pub digest_missing_max: usize,
    /// Summaries per digest. Default 256.
    pub digest_streams_max: usize,
    /// Byte budget of one delta. Default 1 MiB.
    pub delta_bytes_max: usize,
    /// Entries kept per stream. Default 4096 (PROTOCOLS.md §4.2 `history_msgs`).
    pub retention: usize,
    /// Most streams stored (a stream is a topic and an origin, so peers create them). Default
    /// 4096 \[H\].
    pub streams_max: usize,
    /// Most bytes one stream stores (payloads and 40 bytes an entry); its oldest entries make
    /// room. Default 64 MiB \[H\].
    pub stream_bytes_max: usize,
    /// Most bytes the whole store holds. Default 256 MiB \[H\].
    pub store_bytes_max: usize,
}

impl Default for AeConfig {
    fn default() -> Self {
        AeConfig {
            mode: AeMode::PushPull,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            timing: Timing::Phased,
            commit: Commit::Immediate,
            digest_missing_max: 32,
            digest_streams_max: 256,
            delta_bytes_max: 1 << 20,
            retention: 4096,
            streams_max: 4096,
            stream_bytes_max: 64 << 20,
            store_bytes_max: 256 << 20,
        }
    }
}

impl AeConfig {
    /// The store's caps.
    pub fn limits(&self) -> Limits {
        Limits {
            streams_max: self.streams_max,
            stream_bytes_max: self.stream_bytes_max,
            bytes_max: self.store_bytes_max,
        }
    }

    /// Check the settings a run cannot work with; the daemon refuses such a config at load.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval == Duration::ZERO {
            return Err(ConfigError::Zero("interval"));
        }
        if self.timeout == Duration::ZERO {
            return Err(ConfigError::Zero("timeout"));
        }
        if self.digest_streams_max == 0 {
            return Err(ConfigError::Zero("digest_streams_max"));
        }
        for (name, v) in [
            ("retention", self.retention),
            ("streams_max", self.streams_max),
            ("stream_bytes_max", self.stream_bytes_max),
            ("store_bytes_max", self.store_bytes_max),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(())
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named setting must be greater than zero.
    #[error("anti-entropy setting `{0}` must be greater than zero")]
    Zero(&'static str),
}
