//! SWIM settings: memberlist's LAN, WAN and Local presets (PROTOCOLS.md §6.13, §10.6) and the
//! Lifeguard switches.

use serde::{Deserialize, Serialize};

use hearsay_protocols::wire::DATAGRAM_BUDGET;
use hearsay_protocols::{Duration, Timing};

/// The three parts of Lifeguard (Dadgar et al. 2018), each switchable for comparison.
/// [`Lifeguard::OFF`] is plain SWIM with suspicion (Das et al. 2002 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Lifeguard {
    /// Local Health Multiplier and nacks (§IV.A): a node whose probes fail slows its own
    /// probing; helpers answer ping-reqs with a nack when the target stays silent.
    pub health: bool,
    /// Local-health-aware suspicion (§IV.B): a suspicion starts at `max` and shrinks towards
    /// `min` as independent confirmations arrive. Off: a fixed timeout of `min`.
    pub dynamic_suspicion: bool,
    /// Buddy system (§IV.C): a ping to a suspect carries the suspicion, so a live suspect
    /// learns of it at once and refutes.
    pub buddy: bool,
}

impl Lifeguard {
    /// All three parts (the default).
    pub const ON: Lifeguard = Lifeguard { health: true, dynamic_suspicion: true, buddy: true };
    /// None: plain SWIM with suspicion.
    pub const OFF: Lifeguard = Lifeguard { health: false, dynamic_suspicion: false, buddy: false };

    /// True if every part is on.
    pub fn is_on(&self) -> bool {
        *self == Lifeguard::ON
    }

    /// True if every part is off.
    pub fn is_off(&self) -> bool {
        *self == Lifeguard::OFF
    }
}

impl Default for Lifeguard {
    fn default() -> Self {
        Lifeguard::ON
    }
}

/// SWIM and Lifeguard settings. [`SwimConfig::default`] is [`SwimConfig::lan`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwimConfig {
    /// Protocol period T: one probe per period (memberlist LAN ProbeInterval, 1 s).
    pub probe_interval: Duration,
    /// Wait for a direct ack before asking helpers (memberlist LAN ProbeTimeout, 500 ms).
    /// Not scaled by the health multiplier (memberlist `probeNode`).
    pub probe_timeout: Duration,
    /// How long a helper waits for the target's ack before sending a nack: 0.8 ×
    /// `probe_timeout` (Lifeguard's proposal, swift-cluster-membership's default; memberlist
    /// waits the full ProbeTimeout).
    pub nack_timeout: Duration,
    /// Helpers asked on a failed direct ping, k (memberlist LAN IndirectChecks, 3).
    pub indirect_checks: usize,
    /// λ: an update is piggybacked λ·⌈log10(n + 1)⌉ times (memberlist LAN RetransmitMult, 4).
    pub retransmit_mult: u32,
    /// Suspicion timeout multiplier (memberlist LAN SuspicionMult, 4).
    pub suspicion_mult: u32,
    /// Lifeguard's `max` = this × `min` (memberlist LAN SuspicionMaxTimeoutMult, 6).
    pub suspicion_max_timeout_mult: u32,
    /// S: the health score L stays in 0..S (memberlist LAN AwarenessMaxMultiplier, 8).
    pub awareness_max_multiplier: u32,
    /// Period of the gossip-only datagrams (memberlist LAN GossipInterval, 200 ms).
    pub gossip_interval: Duration,
    /// Members each gossip round goes to (memberlist LAN GossipNodes, 3).
    pub gossip_nodes: usize,
    /// Dead members still get gossip this long, and are reaped after it (memberlist LAN
    /// GossipToTheDeadTime, 30 s).
    pub gossip_to_the_dead_time: Duration,
    /// Push-pull period below 33 members, scaled up beyond (memberlist LAN
    /// PushPullInterval, 30 s; `pushPullScale`).
    pub push_pull_interval: Duration,
    /// A push-pull exchange or a join attempt is given up after this (memberlist LAN
    /// TCPTimeout, 10 s).
    pub tcp_timeout: Duration,
    /// Largest datagram frame, piggyback included (1200 B, QUIC's minimum MTU; memberlist
    /// uses 1400 B of UDP).
    pub datagram_budget: usize,
    /// A leave is done after this even if the `Dead` about self was not sent `gossip_nodes`
    /// times (5 s, hearsay).
    pub leave_timeout: Duration,
    /// Which Lifeguard parts are on (all, hearsay's default).
    pub lifeguard: Lifeguard,
    /// Placement of the probe and gossip ticks (phased in the daemon; sync for the
    /// round-based analyses, PROTOCOLS.md §9.4). Push-pull is always staggered.
    pub timing: Timing,
    /// Most entries in the member table; a new member beyond it is refused and counted
    /// (65,536, hearsay: members are peer-created entries, issue 12).
    pub members_max: usize,
    /// Most bytes the member table may account for (each entry 256 bytes plus its encoded
    /// profile); a new member beyond it is refused and counted (32 MiB, hearsay).
    pub members_bytes_max: usize,
    /// Most records of one push-pull merged, and sent (8,192, hearsay); more are dropped
    /// unread and counted. A table above it is sent as a window starting at a random member,
    /// own entry first.
    pub push_pull_records_max: usize,
    /// Most encoded record bytes of one push-pull merged, and sent (1 MiB, hearsay: half the
    /// stream frame limit, so a push-pull always fits in a frame).
    pub push_pull_bytes_max: usize,
}

impl Default for SwimConfig {
    fn default() -> Self {
        SwimConfig::lan()
    }
}

impl SwimConfig {
    /// memberlist `DefaultLANConfig` (PROTOCOLS.md §6.13), 1200-byte datagrams.
    pub fn lan() -> Self {
        SwimConfig {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            nack_timeout: Duration::from_millis(400),
            indirect_checks: 3,
            retransmit_mult: 4,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            awareness_max_multiplier: 8,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_the_dead_time: Duration::from_secs(30),
            push_pull_interval: Duration::from_secs(30),
            tcp_timeout: Duration::from_secs(10),
            datagram_budget: DATAGRAM_BUDGET,
            leave_timeout: Duration::from_secs(5),
            lifeguard: Lifeguard::ON,
            timing: Timing::Phased,
            members_max: 1 << 16,
            members_bytes_max: 32 << 20,
            push_pull_records_max: 8_192,
            push_pull_bytes_max: 1 << 20,
        }
    }

    /// memberlist `DefaultWANConfig`.
    pub fn wan() -> Self {
        SwimConfig {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            nack_timeout: Duration::from_millis(2_400),
            suspicion_mult: 6,
            gossip_interval: Duration::from_millis(500),
            gossip_nodes: 4,
            gossip_to_the_dead_time: Duration::from_secs(60),
            push_pull_interval: Duration::from_secs(60),
            tcp_timeout: Duration::from_secs(30),
            ..SwimConfig::lan()
        }
    }

    /// memberlist `DefaultLocalConfig` (loopback clusters).
    pub fn local() -> Self {
        SwimConfig {
            probe_timeout: Duration::from_millis(200),
            nack_timeout: Duration::from_millis(160),
            indirect_checks: 1,
            retransmit_mult: 2,
            suspicion_mult: 3,
            gossip_interval: Duration::from_millis(100),
            gossip_to_the_dead_time: Duration::from_secs(15),
            push_pull_interval: Duration::from_secs(15),
            tcp_timeout: Duration::from_secs(1),
            ..SwimConfig::lan()
        }
    }

    /// Refuse settings a node cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = [
            ("probe_interval", self.probe_interval),
            ("probe_timeout", self.probe_timeout),
            ("nack_timeout", self.nack_timeout),
            ("gossip_interval", self.gossip_interval),
            ("push_pull_interval", self.push_pull_interval),
            ("tcp_timeout", self.tcp_timeout),
            ("leave_timeout", self.leave_timeout),
        ];
        for (name, d) in nonzero {
            if d == Duration::ZERO {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, v) in [
            ("retransmit_mult", self.retransmit_mult),
            ("suspicion_mult", self.suspicion_mult),
            ("suspicion_max_timeout_mult", self.suspicion_max_timeout_mult),
            ("awareness_max_multiplier", self.awareness_max_multiplier),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, v) in [
            ("gossip_nodes", self.gossip_nodes),
            ("members_max", self.members_max),
            ("members_bytes_max", self.members_bytes_max),
            ("push_pull_records_max", self.push_pull_records_max),
            ("push_pull_bytes_max", self.push_pull_bytes_max),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.probe_timeout >= self.probe_interval {
            return Err(ConfigError::Order("probe_timeout", "probe_interval"));
        }
        if self.nack_timeout > self.probe_timeout {
            return Err(ConfigError::Order("nack_timeout", "probe_timeout"));
        }
        if self.datagram_budget < MIN_DATAGRAM_BUDGET {
            return Err(ConfigError::BudgetTooSmall(self.datagram_budget));
        }
        Ok(())
    }
}

/// The smallest datagram budget accepted: a ping-req (at most 42 bytes) and a signed `Alive`
/// with an 18-byte address and a 64-byte name (185 bytes, 194 at the largest incarnation).
pub const MIN_DATAGRAM_BUDGET: usize = 256;

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named setting must be greater than zero.
    #[error("SWIM setting `{0}` must be greater than zero")]
    Zero(&'static str),
    /// The first setting is too long for the second (`probe_timeout` must be shorter than
    /// `probe_interval`; `nack_timeout` must not exceed `probe_timeout`).
    #[error("SWIM setting `{0}` is too long for `{1}`")]
    Order(&'static str, &'static str),
    /// Too small for a ping-req and its piggyback.
    #[error("datagram budget of {0} bytes is below the minimum of {MIN_DATAGRAM_BUDGET}")]
    BudgetTooSmall(usize),
}
