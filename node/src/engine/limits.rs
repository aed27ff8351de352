//! Replies rate-limited per peer: the requests whose answer is much larger than the request
//! (amplifiers) are answered at most at a per-peer rate, the rest dropped and counted. Sans-IO:
//! time is the `now` the Engine is given.
//!
//! | request | answer | rate per peer (burst: two seconds' worth) |
//! |---|---|---|
//! | anti-entropy `Syn` | a `SynAck` of up to the delta limit | [`SYN_PER_SEC`] |
//! | rumor `Pull` (or `Rumors` with `pull`) | every hot rumor | [`PULL_PER_SEC`] |
//! | SWIM `PushPull` (not a reply) | the member table | [`PUSH_PULL_PER_SEC`] |
//!
//! Honest peers send far fewer: one anti-entropy exchange per interval (30 s by default) to
//! a random member, a rumor pull per period (200 ms) to a random member, a push-pull every
//! 15–60 s. At most [`PEERS`] peers are tracked; a new one beyond replaces the one heard from
//! longest ago.

use std::collections::BTreeMap;

use hearsay_protocols::{Instant, NodeId};

/// Anti-entropy `Syn`s answered per second per peer.
pub const SYN_PER_SEC: u64 = 10;
/// Rumor pulls answered per second per peer.
pub const PULL_PER_SEC: u64 = 20;
/// SWIM push-pulls answered per second per peer.
pub const PUSH_PULL_PER_SEC: u64 = 2;
/// Peers whose buckets are kept.
pub const PEERS: usize = 1024;

/// The kinds of amplifying request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Amplifier {
    /// Anti-entropy `Syn`.
    Syn = 0,
    /// Rumor pull.
    Pull = 1,
    /// SWIM push-pull.
    PushPull = 2,
}

impl Amplifier {
    /// Every kind, in index order.
    pub const ALL: [Amplifier; 3] = [Amplifier::Syn, Amplifier::Pull, Amplifier::PushPull];

    /// Its name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Amplifier::Syn => "ae_syn",
            Amplifier::Pull => "rumor_pull",
            Amplifier::PushPull => "swim_push_pull",
        }
    }

    fn per_sec(self) -> u64 {
        match self {
            Amplifier::Syn => SYN_PER_SEC,
            Amplifier::Pull => PULL_PER_SEC,
            Amplifier::PushPull => PUSH_PULL_PER_SEC,
        }
    }
}

/// A token bucket in millionths of a request.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u64,
    at: Instant,
}

/// The per-peer buckets of every kind.
#[derive(Debug, Default)]
pub struct ReplyLimits {
    buckets: BTreeMap<(NodeId, Amplifier), Bucket>,
    /// Requests dropped, by [`Amplifier`] index.
    pub dropped: [u64; 3],
}

const UNIT: u64 = 1_000_000;

impl ReplyLimits {
    /// Whether a request of `kind` from `from` at `now` may be answered (and if so, it is
    /// charged); a refusal is counted.
    pub fn allow(&mut self, now: Instant, from: NodeId, kind: Amplifier) -> bool {
        let rate = kind.per_sec();
        let burst = rate.saturating_mul(2).saturating_mul(UNIT);
        if !self.buckets.contains_key(&(from, kind)) && self.buckets.len() >= PEERS {
            if let Some(oldest) = self.buckets.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k) {
                self.buckets.remove(&oldest);
            }
        }
        let b = self.buckets.entry((from, kind)).or_insert(Bucket { tokens: burst, at: now });
        let elapsed = now.as_micros().saturating_sub(b.at.as_micros());
        // rate per second = rate per 10^6 µs: tokens in millionths gain `rate` per µs.
        b.tokens = b.tokens.saturating_add(elapsed.saturating_mul(rate)).min(burst);
        if b.at < now {
            b.at = now;
        }
        if b.tokens < UNIT {
            self.dropped[kind as usize] = self.dropped[kind as usize].saturating_add(1);
            return false;
        }
        b.tokens -= UNIT;
        true
    }

    /// Peers tracked (for tests and state bounds).
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_syns_is_answered_at_the_rate_and_the_rest_counted() {
        let mut l = ReplyLimits::default();
        let peer = NodeId::from_bytes([1; 32]);
        let t0 = Instant::from_micros(1_000_000);
        let answered = (0..1000).filter(|_| l.allow(t0, peer, Amplifier::Syn)).count();
        assert_eq!(answered, 20, "the burst: two seconds' worth");
        assert_eq!(l.dropped[Amplifier::Syn as usize], 980);
        let later = Instant::from_micros(1_000_000 + 100_000);
        assert!(l.allow(later, peer, Amplifier::Syn), "a tenth of a second earns one");
        assert!(!l.allow(later, peer, Amplifier::Syn));
        let other = NodeId::from_bytes([2; 32]);
        assert!(l.allow(later, other, Amplifier::Syn), "another peer has its own bucket");
        assert!(l.allow(later, peer, Amplifier::Pull), "and another kind");
    }

    #[test]
    fn the_peers_tracked_stay_bounded() {
        let mut l = ReplyLimits::default();
        for i in 0..(PEERS as u64 * 3) {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&i.to_be_bytes());
            l.allow(Instant::from_micros(i), NodeId::from_bytes(b), Amplifier::PushPull);
        }
        assert_eq!(l.tracked(), PEERS);
    }
}
