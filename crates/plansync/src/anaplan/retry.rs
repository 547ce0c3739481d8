//! When to try a call again, and how long to wait first.
//!
//! Transient answers (429, 409 "busy", 5xx, connection failures) are retried on the shared
//! schedule of `crate::backoff` (doubling, with "equal jitter"). A `Retry-After` header wins over the schedule. The whole
//! call is bounded in time: once the next wait would pass `max_elapsed`, the caller gets an
//! error saying what kept failing.

use std::time::Duration;

use reqwest::StatusCode;

use super::error::AnaplanError;
use crate::backoff::Backoff;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first wait.
    pub initial_backoff: Duration,
    /// No single wait (except one the server asked for) is longer than this.
    pub max_backoff: Duration,
    /// A call (all its attempts and waits) gives up once it would run longer than this.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    pub(crate) fn validate(&self) -> Result<(), AnaplanError> {
        if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            return Err(AnaplanError::Config(
                "retry: initial_backoff must be positive and at most max_backoff".into(),
            ));
        }
        Ok(())
    }

    /// The wait before retry number `retry` (0 for the first retry), on the shared schedule
    /// (`crate::backoff`). `unit` is a number in [0, 1).
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        Backoff::new(self.initial_backoff, self.max_backoff).wait_with(retry + 1, unit)
    }

    /// The wait before the next attempt: what the server asked for when it said, otherwise the
    /// jittered schedule.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(wait) => wait,
            None => self.backoff(retry, fastrand::f64()),
        }
    }
}

/// What to do with an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// The token was refused: authenticate again (once) and repeat.
    Reauthenticate,
    /// Transient: wait and repeat.
    Retry,
    /// Final: report it.
    Fail,
}

/// Classifies a status. `idempotent` says whether repeating the request after the server may
/// have acted on it is harmless: a 500 may mean "half done", so only idempotent calls retry it,
/// while 429, 409 (busy), 502, 503 and 504 mean the request was not carried out.
pub fn classify(status: StatusCode, idempotent: bool) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Success,
        401 => Verdict::Reauthenticate,
        429 | 409 | 502 | 503 | 504 => Verdict::Retry,
        500..=599 if idempotent => Verdict::Retry,
        _ => Verdict::Fail,
    }
}

/// Reads `Retry-After` in its seconds form (Anaplan documents none; HTTP dates are rare enough
/// from API gateways that they fall back to the schedule). Capped at an hour so a garbage value
/// cannot park a call forever; the time budget still applies.
pub fn retry_after(value: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let secs: f64 = value?.to_str().ok()?.trim().parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(10),
        }
    }

    #[test]
    fn retries_map_onto_the_shared_schedule_from_the_first_step() {
        let p = policy();
        for (retry, step_ms) in [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1600), (5, 2000)] {
            let step = Duration::from_millis(step_ms);
            assert_eq!(p.backoff(retry, 0.0), step / 2, "retry {retry}");
            assert_eq!(p.backoff(retry, 1.0), step, "retry {retry}");
            for _ in 0..100 {
                let d = p.backoff(retry, fastrand::f64());
                assert!(d >= step / 2 && d <= step, "retry {retry}: {d:?}");
            }
        }
        // Far past the cap, and with absurd retry numbers, nothing overflows.
        assert_eq!(p.backoff(1000, 1.0), Duration::from_secs(2));
    }

    #[test]
    fn server_retry_after_wins() {
        let p = policy();
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        let h = HeaderValue::from_static("3");
        assert_eq!(retry_after(Some(&h)), Some(Duration::from_secs(3)));
        let h = HeaderValue::from_static("0.5");
        assert_eq!(retry_after(Some(&h)), Some(Duration::from_millis(500)));
        for bad in ["soon", "-1", "NaN", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            let h = HeaderValue::from_str(bad).unwrap();
            assert_eq!(retry_after(Some(&h)), None, "{bad}");
        }
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn classification() {
        let c = |s: u16, idem| classify(StatusCode::from_u16(s).unwrap(), idem);
        assert_eq!(c(200, false), Verdict::Success);
        assert_eq!(c(201, false), Verdict::Success);
        assert_eq!(c(204, false), Verdict::Success);
        assert_eq!(c(401, true), Verdict::Reauthenticate);
        for s in [429, 409, 502, 503, 504] {
            assert_eq!(c(s, false), Verdict::Retry, "{s}");
        }
        assert_eq!(c(500, true), Verdict::Retry);
        assert_eq!(c(500, false), Verdict::Fail);
        for s in [400, 403, 404, 405, 413] {
            assert_eq!(c(s, true), Verdict::Fail, "{s}");
        }
    }
}
