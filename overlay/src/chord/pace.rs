//! Adaptive maintenance (issue 14): on a still ring, stabilize and fix_fingers back off.
//!
//! With the membership detector the ring learns every join and failure from SWIM
//! ([`Chord::handle_member_up`], [`Chord::handle_member_down`]), so the periodic checks of
//! §7.5 mostly confirm what the node holds. Each answer that confirms it (a `PredIs` that
//! leaves the successor list as it was, a finger refresh that finds the finger already held)
//! doubles that kind's period, up to [`ChordConfig::stabilize_interval_max`] and
//! [`ChordConfig::fix_fingers_interval_max`]; any change (a different successor list or
//! finger, a new predecessor, a missed `PredIs`, a silent finger, a `LeaveHint`, a membership
//! event that touches the tables) brings both back to their base periods at once, the next
//! tick no later than one base period away. The standalone ring detects failures by these
//! very checks and keeps its base periods.

use hearsay_protocols::{Duration, Instant};

use super::{Chord, ChordConfig, Detector};

/// Longest run of still answers counted: 2^16 × any base period is past any cap.
const STILL_MAX: u32 = 16;

/// Answers in a row that changed nothing, per maintenance kind.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Still {
    stabilize: u32,
    fix_fingers: u32,
}

/// Which periodic check an answer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Check {
    Stabilize,
    FixFingers,
}

/// `base × 2^still`, at most `max` (and never below `base`).
fn period(base: Duration, max: Duration, still: u32) -> Duration {
    let stretched = base.saturating_mul(1u64 << still.min(STILL_MAX));
    stretched.min(max).max(base)
}

impl Check {
    fn base_and_max(self, c: &ChordConfig) -> (Duration, Duration) {
        match self {
            Check::Stabilize => (c.stabilize_interval, c.stabilize_interval_max),
            Check::FixFingers => (c.fix_fingers_interval, c.fix_fingers_interval_max),
        }
    }
}

impl Chord {
    fn adaptive(&self) -> bool {
        self.config.detector == Detector::Membership
    }

    /// An answer of `check` confirmed what this node holds: stretch its period.
    pub(super) fn settled(&mut self, check: Check) {
        if !self.adaptive() {
            return;
        }
        let (base, max) = check.base_and_max(&self.config);
        let Some(t) = self.ticks.as_mut() else { return };
        let (ticker, still) = match check {
            Check::Stabilize => (&mut t.stabilize, &mut t.still.stabilize),
            Check::FixFingers => (&mut t.fix_fingers, &mut t.still.fix_fingers),
        };
        *still = (*still + 1).min(STILL_MAX);
        ticker.set_period(period(base, max, *still));
    }

    /// Something changed that `check` should look at soon: its base period again, the next
    /// tick no later than one base period from `now`.
    pub(super) fn unsettled(&mut self, now: Instant, check: Check) {
        if !self.adaptive() {
            return;
        }
        let (base, _) = check.base_and_max(&self.config);
        let Some(t) = self.ticks.as_mut() else { return };
        let (ticker, still) = match check {
            Check::Stabilize => (&mut t.stabilize, &mut t.still.stabilize),
            Check::FixFingers => (&mut t.fix_fingers, &mut t.still.fix_fingers),
        };
        if *still == 0 {
            return;
        }
        self.stats.maintenance_resets += 1;
        *still = 0;
        ticker.set_period(base);
        ticker.bring_forward(now + base);
    }

    /// The ring around this node changed: both checks at their base pace.
    pub(super) fn ring_changed(&mut self, now: Instant) {
        self.unsettled(now, Check::Stabilize);
        self.unsettled(now, Check::FixFingers);
    }

    /// The current period of `check` (for tests and views).
    #[cfg(test)]
    pub(super) fn period_of(&self, check: Check) -> Option<Duration> {
        let t = self.ticks.as_ref()?;
        Some(match check {
            Check::Stabilize => t.stabilize.period(),
            Check::FixFingers => t.fix_fingers.period(),
        })
    }
}
