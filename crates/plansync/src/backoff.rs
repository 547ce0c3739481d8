//! The one backoff schedule every retry in plansync waits by: the Anaplan and CRM clients'
//! calls, the CDC stream's reconnects, the write loops and the pollers. Each caller keeps its
//! own judgement of what is worth retrying (`anaplan::retry::classify`, the CRM client's error
//! kinds); only how long to wait is shared.
//!
//! The step doubles from `initial` up to `max`, and the wait is between half of it and all of
//! it, uniformly ("equal jitter"): never less than half the step, so a throttled client does
//! back off, and spread, so many clients throttled together do not come back together.
//! Written here rather than taken from a crate: it is these few lines, and the callers each
//! already own their loop (attempt counting, `Retry-After`, time bounds, shutdown).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first step.
    pub initial: Duration,
    /// No step is longer than this.
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max }
    }

    /// The full step after the `failures`-th failure in a row (1-based; 0 counts as 1):
    /// `initial × 2^(failures-1)`, capped at `max`.
    pub fn step(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.initial
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max)
    }

    /// The wait after the `failures`-th failure in a row, `unit` in [0, 1] choosing where it
    /// falls between half the step and the whole step.
    pub fn wait_with(&self, failures: u32, unit: f64) -> Duration {
        let half = self.step(failures) / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The wait after the `failures`-th failure in a row, jittered.
    pub fn wait(&self, failures: u32) -> Duration {
        self.wait_with(failures, fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_doubles_and_caps_and_the_wait_stays_within_it() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let steps: Vec<u64> = (0..7).map(|n| b.step(n).as_millis() as u64).collect();
        assert_eq!(steps, [100, 100, 200, 400, 800, 1000, 1000]);
        for n in 1..10 {
            assert_eq!(b.wait_with(n, 0.0), b.step(n) / 2);
            assert_eq!(b.wait_with(n, 1.0), b.step(n));
            let w = b.wait(n);
            assert!(w >= b.step(n) / 2 && w <= b.step(n), "{w:?}");
        }
        assert_eq!(b.step(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let waits: std::collections::BTreeSet<Duration> = (0..50).map(|_| b.wait(3)).collect();
        assert!(waits.len() > 10, "{waits:?}");
    }
}
