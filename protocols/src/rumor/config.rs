//! Rumor mongering's settings: the loss-of-interest rule, the direction of a contact, the
//! staging of the rules, and their bounds (PROTOCOLS.md §2.2, §10.2).

use serde::{Deserialize, Serialize};

use crate::time::Duration;
use crate::timer::Timing;

/// When a node loses interest in a rumor (Demers §1.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// After k consecutive cycles (contacts) whose transmissions were all unnecessary.
    #[default]
    FeedbackCounter,
    /// With probability 1/k after each cycle (contact) of only unnecessary transmissions.
    FeedbackCoin,
    /// After k cycles (contacts) with a transmission, useful or not.
    BlindCounter,
    /// With probability 1/k after each cycle (contact) with a transmission.
    BlindCoin,
}

impl Variant {
    /// All four, in the order of the command line.
    pub const ALL: [Variant; 4] =
        [Variant::FeedbackCoin, Variant::FeedbackCounter, Variant::BlindCoin, Variant::BlindCounter];

    /// Recipients report whether they knew the rumor.
    pub fn is_feedback(self) -> bool {
        matches!(self, Variant::FeedbackCounter | Variant::FeedbackCoin)
    }

    /// Loss of interest by counter (else by coin).
    pub fn is_counter(self) -> bool {
        matches!(self, Variant::FeedbackCounter | Variant::BlindCounter)
    }

    /// The kebab-case name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Variant::FeedbackCounter => "feedback-counter",
            Variant::FeedbackCoin => "feedback-coin",
            Variant::BlindCounter => "blind-counter",
            Variant::BlindCoin => "blind-coin",
        }
    }
}

/// Which way rumors move in a contact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Hot nodes send their hot rumors.
    #[default]
    Push,
    /// Every node asks its partner for the partner's hot rumors.
    Pull,
    /// Both in one exchange.
    PushPull,
}

impl Direction {
    /// The kebab-case name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Push => "push",
            Direction::Pull => "pull",
            Direction::PushPull => "push-pull",
        }
    }
}

/// When received rumors become hot and when loss of interest is decided (PROTOCOLS.md
/// §2.1–2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Staging {
    /// Continuous reading (async timing, the daemon): a received rumor is hot at once, a
    /// transmission is necessary iff the recipient did not know the rumor when it processed
    /// the message, and the rule is applied per contact as its feedback (or, blind, its send)
    /// is processed.
    #[default]
    Immediate,
    /// Round reading (sync timing, Demers' tables): state is judged at the start of the cycle.
    /// A rumor learned during a cycle is delivered at once but becomes hot only at this node's
    /// next tick; recipients judge "knew" by their state at the start of their cycle; the rule
    /// is applied once per cycle per hot rumor at the next tick, before anything is sent.
    AtCycleStart,
}

/// Rumor-mongering settings (PROTOCOLS.md §10.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RumorConfig {
    /// Loss-of-interest rule. Default feedback counter (Demers §1.4: counters beat coins).
    pub variant: Variant,
    /// The counter limit, or 1/k the coin's probability. Default 3 (Demers' table row).
    pub k: u32,
    /// Partners contacted per tick. Default 1 (Demers).
    pub fanout: u32,
    /// Push, pull or push-pull. Default push (Demers §1.4).
    pub direction: Direction,
    /// Tick period. Default 200 ms, after memberlist's LAN GossipInterval.
    pub period: Duration,
    /// Placement of the ticks. Default phased (the daemon); the simulator uses sync or Poisson.
    pub timing: Timing,
    /// Round or continuous reading of the rules. Default immediate (the daemon).
    pub staging: Staging,
    /// Periods a removed rumor stays remembered for duplicate detection. Default 300 (§2.4).
    pub known_retention: u64,
    /// Rumors remembered at most (hot, staged or removed). Default 65,536 \[H\].
    pub known_max: usize,
    /// Rumors hot or staged at most. Default 1,024 \[H\].
    pub hot_max: usize,
    /// Bytes of payload hot or staged rumors may hold in all. Default 32 MiB \[H\].
    pub hot_bytes_max: usize,
    /// Rumors hot or staged at most per origin (a message rumor's stream origin, a query's
    /// querier), so one origin cannot take every slot. Default 1,024 (no limit beyond
    /// `hot_max`); the Engine's query announcements use 4 \[H\].
    pub hot_per_origin_max: usize,
    /// Largest payload accepted from a peer; a larger rumor is dropped and counted. Default
    /// 1 MiB + 4 KiB (pbcast's largest message and its header) \[H\].
    pub payload_max: usize,
}

impl Default for RumorConfig {
    fn default() -> Self {
        RumorConfig {
            variant: Variant::FeedbackCounter,
            k: 3,
            fanout: 1,
            direction: Direction::Push,
            period: Duration::from_millis(200),
            timing: Timing::Phased,
            staging: Staging::Immediate,
            known_retention: 300,
            known_max: 1 << 16,
            hot_max: 1 << 10,
            hot_bytes_max: 32 << 20,
            hot_per_origin_max: 1 << 10,
            payload_max: (1 << 20) + 4096,
        }
    }
}

impl RumorConfig {
    /// Check the settings a run cannot work with; the daemon refuses such a config at load.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = [
            ("k", self.k == 0),
            ("fanout", self.fanout == 0),
            ("period", self.period == Duration::ZERO),
            ("known_retention", self.known_retention == 0),
            ("known_max", self.known_max == 0),
            ("hot_max", self.hot_max == 0),
            ("hot_bytes_max", self.hot_bytes_max == 0),
            ("hot_per_origin_max", self.hot_per_origin_max == 0),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, bad)| *bad) {
            return Err(ConfigError::Zero(name));
        }
        if self.hot_max > self.known_max {
            return Err(ConfigError::HotAboveKnown);
        }
        Ok(())
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named setting must be greater than zero.
    #[error("rumor setting `{0}` must be greater than zero")]
    Zero(&'static str),
    /// `hot_max` exceeds `known_max`.
    #[error("rumor setting `hot_max` must not exceed `known_max`")]
    HotAboveKnown,
}
