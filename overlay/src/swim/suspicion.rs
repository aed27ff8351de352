//! Suspicion timeouts: SWIM's fixed timeout and Lifeguard's dynamic one (PROTOCOLS.md §6.5,
//! memberlist `util.go` `suspicionTimeout`, `suspicion.go` `remainingSuspicionTime`).

use hearsay_protocols::{Duration, Instant, NodeId};

/// One member's suspicion, alive while the member is Suspect in our table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Suspicion {
    /// When it started.
    pub(crate) start: Instant,
    /// Confirmations that can still shorten it (K).
    pub(crate) k: u32,
    /// The shortest timeout.
    pub(crate) min: Duration,
    /// The longest timeout (the first one, with Lifeguard, when K ≥ 1).
    pub(crate) max: Duration,
    /// Who suspects the member: the first suspecter, then each new confirmer (at most K + 1).
    pub(crate) confirmers: Vec<NodeId>,
    /// The peers that delivered them (this node itself for its own probes and push-pull
    /// merges): a confirmation counts only if it came from a new peer too, so one member
    /// that forges `from` fields can add one confirmation at most, as it could honestly.
    pub(crate) vias: Vec<NodeId>,
    /// When it fires.
    pub(crate) deadline: Instant,
}

impl Suspicion {
    /// A suspicion started at `now` by `from`, heard from `via`, in a table of `n` entries
    /// (self included). With `dynamic` off it is plain SWIM: `min`, and confirmations are
    /// ignored (K = 0).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        now: Instant,
        from: NodeId,
        via: NodeId,
        n: usize,
        probe_interval: Duration,
        suspicion_mult: u32,
        max_mult: u32,
        dynamic: bool,
    ) -> Self {
        let min = min_timeout(suspicion_mult, n, probe_interval);
        let max = min * u64::from(max_mult);
        let k = if dynamic { confirmations_wanted(suspicion_mult, n) } else { 0 };
        let first = if k >= 1 { max } else { min };
        Suspicion { start: now, k, min, max, confirmers: vec![from], vias: vec![via], deadline: now + first }
    }

    /// Confirmations received so far (C), the first suspecter not counted.
    pub(crate) fn confirmations(&self) -> u32 {
        (self.confirmers.len() as u32).saturating_sub(1)
    }

    /// Count a confirmation by `from`, heard from `via`: true if both were new and it could
    /// still shorten the timeout, in which case the deadline has moved (possibly into the
    /// past: it then fires at once).
    pub(crate) fn confirm(&mut self, from: NodeId, via: NodeId) -> bool {
        if self.confirmations() >= self.k || self.confirmers.contains(&from) || self.vias.contains(&via) {
            return false;
        }
        self.confirmers.push(from);
        self.vias.push(via);
        self.deadline = self.start + timeout_after(self.confirmations(), self.k, self.min, self.max);
        true
    }
}

/// `min` = suspicion_mult × ⌊1000 × max(1, log10(max(1, n)))⌋ / 1000 × probe_interval
/// (memberlist `suspicionTimeout`: log10, not the log(N+1) its comment says).
pub(crate) fn min_timeout(suspicion_mult: u32, n: usize, probe_interval: Duration) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    let milli = (scale * 1000.0).floor() as u64;
    let micros =
        u128::from(suspicion_mult) * u128::from(milli) * u128::from(probe_interval.as_micros()) / 1000;
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// K = suspicion_mult − 2, or 0 when n − 2 < K (too few members to confirm; memberlist
/// `suspectNode`).
pub(crate) fn confirmations_wanted(suspicion_mult: u32, n: usize) -> u32 {
    let k = suspicion_mult.saturating_sub(2);
    if (n as u64).saturating_sub(2) < u64::from(k) { 0 } else { k }
}

/// The timeout after C of K confirmations, measured from the suspicion's start:
/// max(min, max − (max − min)·ln(C + 1)/ln(K + 1)), rounded down to whole milliseconds
/// (memberlist `remainingSuspicionTime`).
pub(crate) fn timeout_after(c: u32, k: u32, min: Duration, max: Duration) -> Duration {
    if k == 0 {
        return min;
    }
    if c == 0 {
        // Exactly `max`: the formula below would floor 64.752 to 64.751 (memberlist starts a
        // suspicion at `max` and only uses the formula on confirmations).
        return max;
    }
    let frac = f64::from(c + 1).ln() / f64::from(k + 1).ln();
    let raw = max.as_secs_f64() - frac * (max.as_secs_f64() - min.as_secs_f64());
    let millis = (raw * 1000.0).floor().max(0.0) as u64;
    Duration::from_millis(millis).max(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_of_protocols_6_5() {
        // LAN defaults, n = 500: min 10.792 s, max 64.752 s, K = 2.
        let t = Duration::from_secs(1);
        let min = min_timeout(4, 500, t);
        assert_eq!(min, Duration::from_millis(10_792));
        assert_eq!(confirmations_wanted(4, 500), 2);
        let max = min * 6;
        assert_eq!(max, Duration::from_millis(64_752));
        assert_eq!(timeout_after(0, 2, min, max), max);
        assert_eq!(timeout_after(1, 2, min, max), Duration::from_millis(30_707));
        assert_eq!(timeout_after(2, 2, min, max), min);
    }

    #[test]
    fn small_clusters_and_plain_swim() {
        let t = Duration::from_secs(1);
        // log10 is floored at 1: below 10 nodes min = mult × T.
        assert_eq!(min_timeout(4, 3, t), Duration::from_secs(4));
        assert_eq!(min_timeout(4, 0, t), Duration::from_secs(4));
        assert_eq!(min_timeout(4, 100, t), Duration::from_secs(8));
        // n − 2 < K: no confirmations expected, the first timeout is min.
        assert_eq!(confirmations_wanted(4, 3), 0);
        let s = Suspicion::start(Instant::ZERO, NodeId::from_u64(1), NodeId::from_u64(1), 3, t, 4, 6, true);
        assert_eq!(s.deadline, Instant::ZERO + Duration::from_secs(4));
        // Lifeguard off: min, and confirmations do nothing.
        let one = NodeId::from_u64(1);
        let mut s = Suspicion::start(Instant::ZERO, one, one, 500, t, 4, 6, false);
        assert_eq!(s.deadline - Instant::ZERO, Duration::from_millis(10_792));
        assert!(!s.confirm(NodeId::from_u64(2), NodeId::from_u64(2)));
    }

    #[test]
    fn confirmations_shrink_the_timeout_once_each_up_to_k() {
        let t = Duration::from_secs(1);
        let start = Instant::from_micros(5_000_000);
        let n = NodeId::from_u64;
        let mut s = Suspicion::start(start, n(1), n(1), 500, t, 4, 6, true);
        assert_eq!(s.deadline, start + Duration::from_millis(64_752));
        assert!(!s.confirm(n(1), n(9)), "the first suspecter does not confirm itself");
        assert!(s.confirm(n(2), n(2)));
        assert!(!s.confirm(n(2), n(8)), "a repeat is not a confirmation");
        assert_eq!(s.deadline, start + Duration::from_millis(30_707));
        assert!(s.confirm(n(3), n(7)), "relayed by a third peer");
        assert_eq!(s.deadline, start + Duration::from_millis(10_792));
        assert!(!s.confirm(n(4), n(4)), "C = K: no more confirmations count");
        assert_eq!(s.confirmations(), 2);
    }

    /// Issue 12, case 7: one member forging `from` fields shortened Lifeguard's timeout to
    /// its minimum on its own (before the fix `confirm` took no `via` and counted both).
    #[test]
    fn one_peer_adds_one_confirmation_whatever_the_from_fields_say() {
        let n = NodeId::from_u64;
        let start = Instant::ZERO;
        let mut s = Suspicion::start(start, n(1), n(1), 500, Duration::from_secs(1), 4, 6, true);
        assert!(s.confirm(n(2), n(66)));
        assert!(!s.confirm(n(3), n(66)), "the same sender, another made-up confirmer");
        assert_eq!(s.confirmations(), 1);
        assert_eq!(s.deadline, start + Duration::from_millis(30_707));
    }
}
