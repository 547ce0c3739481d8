//! The tenant's call budget as a token bucket: `budget` tokens at most (the burst), refilled at
//! `budget / 60` per second. Every call through any clone of a client takes one token first.
//!
//! A caller that finds the bucket empty *reserves* the next token (the count goes negative)
//! and sleeps until it is due. So waiting callers are served in arrival order, nobody spins,
//! and over any window of `t` seconds at most `burst + t × rate` calls start, which is what
//! the tenant's limit allows.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    /// Guards the token count and when it was last brought up to date. Held only to do the
    /// arithmetic, never across an await, so a std mutex is right.
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// May be negative: that many tokens are already promised to sleeping callers.
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A full bucket for `calls_per_minute` (at least 1).
    pub fn per_minute(calls_per_minute: u32) -> Self {
        let burst = f64::from(calls_per_minute.max(1));
        RateLimiter {
            burst,
            per_second: burst / 60.0,
            state: Mutex::new(Bucket {
                tokens: burst,
                updated: Instant::now(),
            }),
        }
    }

    /// Takes a token, waiting until one is due.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a token now and says how long until it may be used.
    fn reserve(&self) -> Duration {
        // A poisoned lock only means another thread panicked mid-arithmetic; the numbers
        // are still usable.
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.updated = now;
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_rate() {
        let limiter = RateLimiter::per_minute(60); // burst 60, one a second
        let start = Instant::now();
        for _ in 0..60 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        limiter.acquire().await;
        let after = start.elapsed();
        assert!(
            after >= Duration::from_millis(999) && after <= Duration::from_millis(1001),
            "{after:?}"
        );
        for _ in 0..9 {
            limiter.acquire().await;
        }
        let after = start.elapsed();
        assert!(
            after >= Duration::from_millis(9999) && after <= Duration::from_millis(10_001),
            "{after:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_up_to_the_burst_only() {
        let limiter = RateLimiter::per_minute(600); // 10 a second
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
        assert!(start.elapsed() >= Duration::from_millis(99));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_never_exceed_the_bucket_in_any_window() {
        let limiter = Arc::new(RateLimiter::per_minute(120)); // burst 120, 2 a second
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let l = limiter.clone();
            tasks.push(tokio::spawn(async move {
                l.acquire().await;
                start.elapsed()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort();
        for i in 0..times.len() {
            for j in i..times.len() {
                let window = (times[j] - times[i]).as_secs_f64();
                let count = (j - i + 1) as f64;
                assert!(
                    count <= 120.0 + window * 2.0 + 1e-6,
                    "{count} calls in {window}s"
                );
            }
        }
        // And the limiter did not hold back more than it had to: 80 over the burst at 2/s.
        let last = times.last().copied().unwrap();
        assert!(last <= Duration::from_millis(40_001), "{last:?}");
    }
}
