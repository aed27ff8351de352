//! Chord settings (PROTOCOLS.md §10.7) and their validation.

use serde::{Deserialize, Serialize};

use hearsay_protocols::{Duration, Timing};

use super::{SUCC_LIST_MAX, TTL_MAX};

/// Most candidates proximity neighbour selection weighs per finger.
pub const PROXIMITY_CANDIDATES_MAX: usize = 64;

/// How a lookup travels (§7.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LookupMode {
    /// Node to node; the answering node replies to the origin.
    #[default]
    Recursive,
    /// The origin asks each hop in turn.
    Iterative,
}

/// Who tells the ring that a node failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Detector {
    /// The membership layer, through [`Chord::handle_member_down`](super::Chord::handle_member_down) (the daemon).
    #[default]
    Membership,
    /// The ring itself: `RingPing` to the predecessor every `check_predecessor_interval`
    /// (the standalone experiment, no SWIM).
    Standalone,
}

/// Chord settings (PROTOCOLS.md §10.7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChordConfig {
    /// Successor list length r. Default 16 \[H; paper: r = Ω(log N)].
    pub successor_list_len: usize,
    /// Period of stabilize. Default 1 s \[H\].
    pub stabilize_interval: Duration,
    /// Period of fix_fingers (one finger per tick). Default 250 ms \[H\].
    pub fix_fingers_interval: Duration,
    /// Longest stabilize period on a still ring, with the membership detector: every
    /// `PredIs` that changes nothing doubles the period, up to this; any change to the
    /// successor list, the predecessor or a membership event about a node in the tables
    /// brings it back to `stabilize_interval` (issue 14: a background cost that does not grow
    /// with N). Below `stabilize_interval`, that is used: no backing off. The standalone ring
    /// is its own failure detector and always stabilizes every `stabilize_interval`.
    /// Default 30 s \[H\].
    pub stabilize_interval_max: Duration,
    /// The same for fix_fingers: every refresh that finds the finger it already holds doubles
    /// the period up to this, a changed finger (or a membership event) brings it back to
    /// `fix_fingers_interval`. Default 30 s \[H\].
    pub fix_fingers_interval_max: Duration,
    /// Period of check_predecessor (standalone only). Default 1 s \[H\].
    pub check_predecessor_interval: Duration,
    /// How long a lookup step, a `GetPred` or a `RingPing` waits for its answer. Default 1 s
    /// \[H\]; a silent first hop is avoided for 10 × this.
    pub lookup_timeout: Duration,
    /// Attempts per lookup. Default 3 \[H\].
    pub lookup_attempts: u32,
    /// Hop limit of a lookup. Default 64 \[H\].
    pub lookup_ttl: u8,
    /// Recursive (default \[H\]) or iterative.
    pub lookup_mode: LookupMode,
    /// Let successor-list entries compete with fingers as next hops (the ToN variant of
    /// `closest_preceding_node`, §7.4). Default off \[departure\]: fingers only, the successor
    /// list standing in when no finger qualifies; see the module docs.
    pub route_via_successors: bool,
    /// log2 of the finger table's base ([`FingerLayout`](super::FingerLayout)): 1 (the
    /// paper's base 2, 64 fingers), 2 (base 4, 96 fingers) or 4 (base 16, 240 fingers).
    /// A larger base routes in about log_b N hops instead of ½·log2 N, so Scribe's trees are
    /// shallower, for more fingers to keep. Default 1 \[paper\].
    pub finger_base_bits: u8,
    /// Proximity neighbour selection (Chord with PNS, Dabek et al., NSDI 2004): a finger may
    /// be any node of its interval, and the ring picks, among the first this many members of
    /// the interval, the one with the lowest round-trip time the host reports
    /// ([`Chord::join_from_members_near`](super::Chord::join_from_members_near)). A refresh
    /// that finds the interval non-empty keeps a finger that lies in it and is not avoided.
    /// 0 (default) or 1 turns it off: each finger is the successor of its target, as in the
    /// paper.
    pub proximity_candidates: usize,
    /// Consecutive unanswered `GetPred` (or `RingPing`) before the successor is dropped (or the
    /// predecessor forgotten). Default 2 [H, departure: §7.5 says 1].
    pub miss_limit: u32,
    /// How long a node reported Dead or Left is kept out of every table. Default 60 s \[H\].
    pub dead_retention: Duration,
    /// Failure detection by the membership layer (default) or by the ring itself.
    pub detector: Detector,
    /// Placement of the periodic ticks. Default phased (memberlist's stagger).
    pub timing: Timing,
}

impl Default for ChordConfig {
    fn default() -> Self {
        ChordConfig {
            successor_list_len: 16,
            stabilize_interval: Duration::from_secs(1),
            fix_fingers_interval: Duration::from_millis(250),
            stabilize_interval_max: Duration::from_secs(30),
            fix_fingers_interval_max: Duration::from_secs(30),
            check_predecessor_interval: Duration::from_secs(1),
            lookup_timeout: Duration::from_secs(1),
            lookup_attempts: 3,
            lookup_ttl: TTL_MAX,
            lookup_mode: LookupMode::Recursive,
            route_via_successors: false,
            finger_base_bits: 1,
            proximity_candidates: 0,
            miss_limit: 2,
            dead_retention: Duration::from_secs(60),
            detector: Detector::Membership,
            timing: Timing::Phased,
        }
    }
}

impl ChordConfig {
    /// Check the settings a ring cannot work with; the daemon refuses such a config at load.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.successor_list_len == 0 || self.successor_list_len > SUCC_LIST_MAX {
            return Err(ConfigError::OutOfRange("successor_list_len", 1, SUCC_LIST_MAX as u64));
        }
        for (name, d) in [
            ("stabilize_interval", self.stabilize_interval),
            ("fix_fingers_interval", self.fix_fingers_interval),
            ("check_predecessor_interval", self.check_predecessor_interval),
            ("lookup_timeout", self.lookup_timeout),
        ] {
            if d == Duration::ZERO {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.lookup_attempts == 0 {
            return Err(ConfigError::Zero("lookup_attempts"));
        }
        if self.lookup_ttl == 0 || self.lookup_ttl > TTL_MAX {
            return Err(ConfigError::OutOfRange("lookup_ttl", 1, u64::from(TTL_MAX)));
        }
        if super::FingerLayout::new(self.finger_base_bits).is_none() {
            return Err(ConfigError::FingerBase(self.finger_base_bits));
        }
        if self.proximity_candidates > PROXIMITY_CANDIDATES_MAX {
            return Err(ConfigError::OutOfRange("proximity_candidates", 0, PROXIMITY_CANDIDATES_MAX as u64));
        }
        if self.miss_limit == 0 {
            return Err(ConfigError::Zero("miss_limit"));
        }
        Ok(())
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named setting must be greater than zero.
    #[error("chord setting `{0}` must be greater than zero")]
    Zero(&'static str),
    /// `finger_base_bits` must be 1, 2 or 4.
    #[error("chord setting `finger_base_bits` is {0}; it must be 1, 2 or 4 (base 2, 4 or 16)")]
    FingerBase(u8),
    /// The named setting must lie in the range.
    #[error("chord setting `{0}` must be between {1} and {2}")]
    OutOfRange(&'static str, u64, u64),
}
