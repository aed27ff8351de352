//! Periodic timers in the three timing modes of PROTOCOLS.md §9.4.
//!
//! | mode | ticks |
//! |---|---|
//! | [`Timing::Sync`] | exactly at k·T for k = 1, 2, …: every node's timer of a kind fires at the same instants (the classic round-based analyses) |
//! | [`Timing::Phased`] | first tick at a uniformly random offset in [0, T) after start, then every T (memberlist's stagger; the daemon's mode) |
//! | [`Timing::Poisson`] | gaps drawn from Exp(mean T): continuous-time models (`--timing async`) |
//!
//! A [`Ticker`] only computes instants; the machine that owns it decides what a tick does.
//! [`Earliest`] picks the next timer of a machine among its deadlines (the timer idiom of
//! [`machine`](crate::machine#timers)).

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// How a periodic timer's ticks are placed in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Timing {
    /// Ticks at every multiple of the period, aligned across nodes (simulator `sync`,
    /// `--timing rounds`).
    Sync,
    /// A random phase per node, then strictly periodic (daemon default).
    #[default]
    Phased,
    /// Exponentially distributed gaps with the period as mean (`--timing async`).
    Poisson,
}

/// The next-tick bookkeeping of one periodic timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticker {
    period: Duration,
    timing: Timing,
    next: Instant,
}

impl Ticker {
    /// A ticker started at `now`; draws from `rng` in `Phased` and `Poisson` modes only.
    /// A zero period is treated as one microsecond, so a ticker can never spin.
    pub fn start(now: Instant, period: Duration, timing: Timing, rng: &mut Rng) -> Self {
        let period = period.max(Duration::from_micros(1));
        let next = match timing {
            Timing::Sync => Self::next_multiple(now, period),
            Timing::Phased => now + Duration::from_micros(rng.below(period.as_micros())),
            Timing::Poisson => now + Duration::from_secs_f64(rng.exp(period.as_secs_f64())),
        };
        Ticker { period, timing, next }
    }

    /// The instant of the next tick.
    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// The period T.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// True if the tick is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.next <= now
    }

    /// Move past the tick that was due, scheduling the next one after it. A driver that was
    /// late by more than a period skips the missed ticks instead of firing them in a burst.
    pub fn advance(&mut self, now: Instant, rng: &mut Rng) {
        match self.timing {
            Timing::Sync => self.next = Self::next_multiple(now, self.period),
            Timing::Phased => {
                let mut next = self.next + self.period;
                if next <= now {
                    let behind = (now - next).as_micros() / self.period.as_micros() + 1;
                    next += self.period * behind;
                }
                self.next = next;
            }
            Timing::Poisson => {
                let gap = Duration::from_secs_f64(rng.exp(self.period.as_secs_f64()));
                self.next = now + gap.max(Duration::from_micros(1));
            }
        }
    }

    /// Change the period from the next tick on (e.g. Lifeguard's health multiplier).
    pub fn set_period(&mut self, period: Duration) {
        self.period = period.max(Duration::from_micros(1));
    }

    /// Bring the next tick forward to `latest` if it is due later (a timer that had backed
    /// off and must tick soon again); an earlier tick stays where it is.
    pub fn bring_forward(&mut self, latest: Instant) {
        self.next = self.next.min(latest);
    }

    fn next_multiple(now: Instant, period: Duration) -> Instant {
        let p = period.as_micros();
        Instant::from_micros((now.as_micros() / p + 1).saturating_mul(p))
    }
}

/// The earliest of a machine's armed deadlines, ties broken by timer kind: every machine's
/// `next_timer()` offers each deadline it holds and returns [`Earliest::get`] (the timer
/// idiom of [`machine`](crate::machine#timers)). `K` is the machine's `Timer` enum, declared
/// in the order in which simultaneous timers are served.
#[derive(Clone, Copy, Debug)]
pub struct Earliest<K>(Option<(Instant, K)>);

impl<K: Ord> Default for Earliest<K> {
    fn default() -> Self {
        Earliest(None)
    }
}

impl<K: Ord> Earliest<K> {
    /// Nothing offered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offer `kind`, armed for `at` (`None`: not armed).
    #[inline]
    pub fn offer(&mut self, at: Option<Instant>, kind: K) {
        if let Some(at) = at {
            if self.0.as_ref().is_none_or(|(t, k)| (at, &kind) < (*t, k)) {
                self.0 = Some((at, kind));
            }
        }
    }

    /// The earliest `(deadline, kind)` offered.
    pub fn get(self) -> Option<(Instant, K)> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Seed;

    fn rng() -> Rng {
        Rng::from_seed(Seed::derive(1, "timer", 0, 0))
    }

    #[test]
    fn earliest_takes_the_first_deadline_then_the_first_kind() {
        let mut e = Earliest::new();
        e.offer(Some(Instant::from_micros(5)), 1);
        e.offer(None, 0);
        e.offer(Some(Instant::from_micros(5)), 0);
        e.offer(Some(Instant::from_micros(7)), 0);
        assert_eq!(e.get(), Some((Instant::from_micros(5), 0)));
        let mut e = Earliest::new();
        e.offer(Some(Instant::from_micros(9)), 0);
        e.offer(Some(Instant::from_micros(3)), 2);
        assert_eq!(e.get(), Some((Instant::from_micros(3), 2)));
        assert_eq!(Earliest::<u8>::new().get(), None);
    }

    #[test]
    fn sync_ticks_land_on_multiples_of_the_period() {
        let mut r = rng();
        let t = Duration::from_secs(1);
        let mut k = Ticker::start(Instant::from_micros(300), t, Timing::Sync, &mut r);
        assert_eq!(k.deadline(), Instant::from_micros(1_000_000));
        k.advance(k.deadline(), &mut r);
        assert_eq!(k.deadline(), Instant::from_micros(2_000_000));
        // Served late: still aligned, missed ticks skipped.
        k.advance(Instant::from_micros(4_500_000), &mut r);
        assert_eq!(k.deadline(), Instant::from_micros(5_000_000));
    }

    #[test]
    fn phased_ticks_keep_their_phase() {
        let mut r = rng();
        let t = Duration::from_millis(200);
        let mut k = Ticker::start(Instant::ZERO, t, Timing::Phased, &mut r);
        let phase = k.deadline().as_micros();
        assert!(phase < 200_000);
        k.advance(k.deadline(), &mut r);
        assert_eq!(k.deadline().as_micros(), phase + 200_000);
        k.advance(Instant::from_micros(phase + 1_000_000), &mut r);
        assert_eq!(k.deadline().as_micros(), phase + 1_200_000);
    }

    #[test]
    fn poisson_gaps_average_the_period() {
        let mut r = rng();
        let t = Duration::from_millis(100);
        let mut k = Ticker::start(Instant::ZERO, t, Timing::Poisson, &mut r);
        for _ in 0..20_000 {
            let now = k.deadline();
            k.advance(now, &mut r);
        }
        let mean = k.deadline().as_micros() as f64 / 20_001.0;
        assert!((mean - 100_000.0).abs() < 2_500.0, "{mean}");
    }
}
