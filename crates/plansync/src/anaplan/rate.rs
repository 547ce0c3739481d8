//! The tenant's call budget: at most `budget` calls start in any 60 s window, however they
//! are spread. Every call through any clone of a client takes a start time here first.
//!
//! Kept as the start times of the last `budget` calls (the oldest first): a call may start
//! once the call `budget` places before it is a window old, so no 60 s window ever holds more
//! than the budget. A token bucket does not give this: one that starts full and refills at
//! `budget / 60` a second lets `burst + budget` calls start in the first minute (twice the
//! budget), and a small burst makes a batch of twenty calls wait for its pacing. That is also
//! why this is not `governor`: its GCRA bounds a window at its burst plus its quota. The
//! state is one slot per call of the budget (600 by default), a few kilobytes.
//!
//! A caller that finds the window full *reserves* the first start time that keeps it within
//! the budget and sleeps until then, so waiting callers are served in arrival order and
//! nobody spins.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The window the budget is counted over.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct RateLimiter {
    budget: usize,
    /// Start times of the last `budget` calls, some possibly in the future (reserved by
    /// callers asleep until then), in order. Held only to do the arithmetic, never across an
    /// await, so a std mutex is right.
    starts: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    /// At most `calls_per_minute` (at least 1) calls in any 60 s.
    pub fn per_minute(calls_per_minute: u32) -> Self {
        let budget = usize::try_from(calls_per_minute.max(1)).unwrap_or(usize::MAX);
        RateLimiter {
            budget,
            starts: Mutex::new(VecDeque::with_capacity(budget.min(100_000))),
        }
    }

    /// Takes a start time, waiting until it comes.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Reserves the first start time within the budget and says how long until it.
    fn reserve(&self) -> Duration {
        // A poisoned lock only means another thread panicked mid-arithmetic; the times are
        // still usable.
        let mut starts = self.starts.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Starts a window old no longer count against anything.
        while starts.front().is_some_and(|t| *t + WINDOW <= now) {
            starts.pop_front();
        }
        let at = if starts.len() >= self.budget {
            // The call `budget` places back must be a window old first.
            starts
                .pop_front()
                .map_or(now, |oldest| (oldest + WINDOW).max(now))
        } else {
            // After any caller already waiting: arrival order.
            starts.back().map_or(now, |last| (*last).max(now))
        };
        starts.push_back(at);
        at.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Whether any `WINDOW` of `times` (sorted) holds more than `budget` of them.
    fn most_in_a_window(times: &[Duration]) -> usize {
        let mut most = 0;
        let mut first = 0;
        for (last, t) in times.iter().enumerate() {
            while *t - times[first] >= WINDOW {
                first += 1;
            }
            most = most.max(last - first + 1);
        }
        most
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_is_free_at_once_and_the_next_call_waits_a_window() {
        let limiter = RateLimiter::per_minute(60);
        let start = Instant::now();
        for _ in 0..60 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the budget is free");
        limiter.acquire().await;
        assert_eq!(
            start.elapsed(),
            WINDOW,
            "the 61st waits for the first to age out"
        );
        for _ in 0..59 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), WINDOW, "the next 59 come free with it");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_never_exceed_the_budget_in_any_sliding_window() {
        let budget = 120;
        let limiter = Arc::new(RateLimiter::per_minute(budget));
        let start = Instant::now();
        let mut tasks = Vec::new();
        // Callers arrive in waves: some at once, some spread out, some after idle time.
        for i in 0..500u64 {
            let l = limiter.clone();
            let arrives = Duration::from_millis(match i {
                0..200 => 0,
                200..350 => (i - 200) * 250,
                _ => 100_000 + (i % 7) * 3000,
            });
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(arrives).await;
                l.acquire().await;
                start.elapsed()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.expect("task"));
        }
        times.sort();
        assert!(
            most_in_a_window(&times) <= budget as usize,
            "{} calls in one window",
            most_in_a_window(&times)
        );
        // Nobody was held back longer than the budget needs: 500 calls at 120 a minute,
        // the first wave free, take just over four windows.
        let last = times.last().copied().expect("times");
        assert!(last <= WINDOW * 4 + Duration::from_millis(1), "{last:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_frees_the_whole_budget_and_no_more() {
        let limiter = RateLimiter::per_minute(600);
        for _ in 0..600 {
            limiter.acquire().await;
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let start = Instant::now();
        for _ in 0..600 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.acquire().await;
        assert_eq!(start.elapsed(), WINDOW);
    }
}
