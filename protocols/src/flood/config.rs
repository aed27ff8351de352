//! Flooding's and BCRM's settings (PROTOCOLS.md §10.3).

use serde::{Deserialize, Serialize};

use crate::time::Duration;

/// Flooding settings (PROTOCOLS.md §10.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FloodConfig {
    /// Hops a message may travel from its origin. Default 7 (Gnutella v0.4).
    pub ttl: u8,
    /// How long a seen id is remembered. Default 300 s \[H\].
    pub seen_retention: Duration,
}

impl Default for FloodConfig {
    fn default() -> Self {
        FloodConfig { ttl: 7, seen_retention: Duration::from_secs(300) }
    }
}

impl FloodConfig {
    /// Check the settings a run cannot work with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl == 0 {
            return Err(ConfigError::Zero("ttl"));
        }
        if self.seen_retention == Duration::ZERO {
            return Err(ConfigError::Zero("seen_retention"));
        }
        Ok(())
    }
}

/// BCRM settings (PROTOCOLS.md §10.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BcrmConfig {
    /// B: neighbours a node forwards to, at most, each time it forwards. Default 2 (seed).
    pub b: u32,
    /// F: receptions of a message that trigger forwarding (the first F). Default 2 (seed).
    pub f: u32,
    /// How long a message's state is remembered. Default 300 s \[H\].
    pub retention: Duration,
}

impl Default for BcrmConfig {
    fn default() -> Self {
        BcrmConfig { b: 2, f: 2, retention: Duration::from_secs(300) }
    }
}

impl BcrmConfig {
    /// Check the settings a run cannot work with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.b == 0 {
            return Err(ConfigError::Zero("b"));
        }
        if self.retention == Duration::ZERO {
            return Err(ConfigError::Zero("retention"));
        }
        Ok(())
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named setting must be greater than zero.
    #[error("flooding/BCRM setting `{0}` must be greater than zero")]
    Zero(&'static str),
}
