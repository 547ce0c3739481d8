//! Limits and injected faults: the tenant rate limit (a token bucket), configurable latency,
//! 5xx answers and dropped connections, and the request log tests read.
//!
//! The rate limit counts Integration API calls (`/2/0/…`) only; auth calls (`/token/…`) are
//! not limited, as Anaplan's published limit is about API calls, and the admin endpoints
//! (`/__sim/…`) are neither limited, faulted nor logged. Faults (latency, errors, drops) hit API
//! calls, and auth calls too unless `include_auth` is false. Which calls fail is decided by a
//! generator seeded from `Faults::seed`, so a run with the same seed and the same calls fails
//! the same calls.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Faults to inject, settable at start, through `SimHandle::set_faults`, or with
/// `PUT /__sim/faults` (JSON with these field names; missing fields take the defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added before answering every call.
    pub latency_ms: u64,
    /// Share of calls (0.0 to 1.0) answered with `error_status`.
    pub error_rate: f64,
    /// The status of injected errors (500, 502, 503 or 504).
    pub error_status: u16,
    /// Share of calls whose connection is closed without any response.
    pub drop_rate: f64,
    /// The next this-many calls get `error_status`, whatever the rates.
    pub fail_next: u32,
    /// The next this-many calls are dropped, whatever the rates.
    pub drop_next: u32,
    /// Seed of the generator behind the rates.
    pub seed: u64,
    /// Whether auth calls (`/token/…`) are faulted too.
    pub include_auth: bool,
    /// A call whose body contains this text is refused 403 as a whole, as a web application
    /// firewall in front of the tenant refuses a request for its content.
    pub refuse_body_containing: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 0,
            error_rate: 0.0,
            error_status: 503,
            drop_rate: 0.0,
            fail_next: 0,
            drop_next: 0,
            seed: 1,
            include_auth: true,
            refuse_body_containing: None,
        }
    }
}

/// The longest latency a fault may add. Far longer than any client waits (they time out
/// within a minute or two); a larger value would park each connection for good.
pub const MAX_LATENCY_MS: u64 = 10 * 60 * 1000;

/// A fault setting that makes no sense, named by its field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultsError {
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
    #[error("the faults must be a JSON object: {0}")]
    Body(String),
}

fn bad(field: &str, reason: impl Into<String>) -> FaultsError {
    FaultsError::Field {
        field: field.to_string(),
        reason: reason.into(),
    }
}

impl Faults {
    /// Refuses settings outside their meaning: rates outside 0 to 1, a status that is not a
    /// 5xx, a latency over [`MAX_LATENCY_MS`].
    pub fn validate(&self) -> Result<(), FaultsError> {
        for (field, rate) in [
            ("error_rate", self.error_rate),
            ("drop_rate", self.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(bad(field, format!("must be from 0.0 to 1.0, got {rate}")));
            }
        }
        if !(500..=599).contains(&self.error_status) {
            return Err(bad(
                "error_status",
                format!(
                    "must be a 5xx status (500, 502, 503 or 504), got {}",
                    self.error_status
                ),
            ));
        }
        if self.latency_ms > MAX_LATENCY_MS {
            return Err(bad(
                "latency_ms",
                format!(
                    "must be at most {MAX_LATENCY_MS} (10 minutes), got {}",
                    self.latency_ms
                ),
            ));
        }
        Ok(())
    }

    /// Reads `PUT /__sim/faults`'s body (missing fields take their defaults) and validates
    /// it. A field of the wrong type is named: each is read on its own first, as serde's
    /// message for a whole struct says where, not which field.
    pub fn from_json(body: &[u8]) -> Result<Faults, FaultsError> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| FaultsError::Body(e.to_string()))?;
        let serde_json::Value::Object(fields) = &value else {
            return Err(FaultsError::Body(format!("got {value}")));
        };
        for (name, v) in fields {
            let one = serde_json::Value::Object([(name.clone(), v.clone())].into_iter().collect());
            if let Err(e) = serde_json::from_value::<Faults>(one) {
                let reason = e.to_string();
                // An unknown field's message names it (and the known ones) already.
                return Err(if reason.starts_with("unknown field") {
                    FaultsError::Body(reason)
                } else {
                    bad(name, reason)
                });
            }
        }
        let faults: Faults =
            serde_json::from_value(value).map_err(|e| FaultsError::Body(e.to_string()))?;
        faults.validate()?;
        Ok(faults)
    }
}

/// What to do with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Error(u16),
    Drop,
}

pub struct FaultState {
    pub faults: Faults,
    rng: fastrand::Rng,
}

impl FaultState {
    pub fn new(faults: Faults) -> FaultState {
        let rng = fastrand::Rng::with_seed(faults.seed);
        FaultState { faults, rng }
    }

    pub fn set(&mut self, faults: Faults) {
        self.rng = fastrand::Rng::with_seed(faults.seed);
        self.faults = faults;
    }

    /// Decides the fault for the next call (and consumes a `*_next` count).
    pub fn next(&mut self, is_auth: bool) -> (Duration, Fault) {
        let f = &mut self.faults;
        if is_auth && !f.include_auth {
            return (Duration::ZERO, Fault::None);
        }
        let latency = Duration::from_millis(f.latency_ms);
        let status = if (500..=599).contains(&f.error_status) {
            f.error_status
        } else {
            503
        };
        if f.drop_next > 0 {
            f.drop_next -= 1;
            return (latency, Fault::Drop);
        }
        if f.fail_next > 0 {
            f.fail_next -= 1;
            return (latency, Fault::Error(status));
        }
        if f.drop_rate > 0.0 && self.rng.f64() < f.drop_rate {
            return (latency, Fault::Drop);
        }
        if f.error_rate > 0.0 && self.rng.f64() < f.error_rate {
            return (latency, Fault::Error(status));
        }
        (latency, Fault::None)
    }
}

/// The tenant's token bucket: `capacity` calls at once, refilled at `capacity / 60` a second.
pub struct Bucket {
    per_minute: u32,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// `per_minute = 0` turns the limit off.
    pub fn new(per_minute: u32) -> Bucket {
        Bucket {
            per_minute,
            tokens: f64::from(per_minute),
            last: Instant::now(),
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Takes one token; false means the call is over the limit.
    pub fn take(&mut self) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let now = Instant::now();
        let cap = f64::from(self.per_minute);
        let refill = now.duration_since(self.last).as_secs_f64() * cap / 60.0;
        self.tokens = (self.tokens + refill).min(cap);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Tokens left now (for the admin endpoint).
    pub fn available(&self) -> f64 {
        let cap = f64::from(self.per_minute);
        (self.tokens + self.last.elapsed().as_secs_f64() * cap / 60.0).min(cap)
    }
}

/// Which service a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Auth,
    Transactional,
    Bulk,
}

impl Kind {
    pub fn of(path: &str) -> Kind {
        if path.starts_with("/token/") || path == "/token" {
            return Kind::Auth;
        }
        let bulk = path.split('/').any(|s| {
            matches!(
                s,
                "files" | "imports" | "exports" | "processes" | "actions" | "tasks"
            )
        });
        if bulk {
            Kind::Bulk
        } else {
            Kind::Transactional
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    /// The status sent, or 0 when the connection was dropped.
    pub status: u16,
    pub kind: Kind,
}

/// Counts since start (or the last reset).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestCounts {
    pub total: u64,
    pub auth: u64,
    pub transactional: u64,
    pub bulk: u64,
    /// Answered 429 by the rate limit.
    pub rate_limited: u64,
    /// Answered with an injected 5xx.
    pub faulted: u64,
    /// Dropped without a response.
    pub dropped: u64,
}

/// The most recent calls, oldest first, and the counts.
#[derive(Default)]
pub struct RequestLog {
    entries: VecDeque<LoggedRequest>,
    pub counts: RequestCounts,
}

/// How many calls the log keeps (counts cover all of them).
const LOG_CAPACITY: usize = 100_000;

impl RequestLog {
    pub fn record(&mut self, entry: LoggedRequest, fault: Fault) {
        let c = &mut self.counts;
        c.total += 1;
        match entry.kind {
            Kind::Auth => c.auth += 1,
            Kind::Transactional => c.transactional += 1,
            Kind::Bulk => c.bulk += 1,
        }
        match fault {
            Fault::Drop => c.dropped += 1,
            Fault::Error(_) => c.faulted += 1,
            Fault::None if entry.status == 429 => c.rate_limited += 1,
            Fault::None => {}
        }
        if self.entries.len() == LOG_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    pub fn entries(&self) -> Vec<LoggedRequest> {
        self.entries.iter().cloned().collect()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.counts = RequestCounts::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_capacity_then_refuses() {
        let mut b = Bucket::new(60);
        for _ in 0..60 {
            assert!(b.take());
        }
        assert!(!b.take());
        assert!(Bucket::new(0).take());
    }

    #[test]
    fn faults_are_deterministic_for_a_seed() {
        let f = Faults {
            error_rate: 0.3,
            drop_rate: 0.1,
            seed: 42,
            ..Faults::default()
        };
        let run = || {
            let mut s = FaultState::new(f.clone());
            (0..200).map(|_| s.next(false).1).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.contains(&Fault::Error(503)) && a.contains(&Fault::Drop));
        let mut s = FaultState::new(Faults {
            fail_next: 1,
            drop_next: 1,
            include_auth: false,
            ..Faults::default()
        });
        assert_eq!(s.next(true).1, Fault::None);
        assert_eq!(s.next(false).1, Fault::Drop);
        assert_eq!(s.next(false).1, Fault::Error(503));
        assert_eq!(s.next(false).1, Fault::None);
    }

    #[test]
    fn nonsense_faults_are_refused_by_name() {
        let err = |body: &str| {
            Faults::from_json(body.as_bytes())
                .expect_err(body)
                .to_string()
        };
        assert_eq!(
            err(r#"{"error_rate": 1.5}"#),
            "error_rate: must be from 0.0 to 1.0, got 1.5"
        );
        assert!(err(r#"{"drop_rate": -0.1}"#).starts_with("drop_rate: "));
        assert!(err(r#"{"latency_ms": -5}"#).starts_with("latency_ms: invalid value"));
        assert!(err(r#"{"latency_ms": 99999999999}"#).starts_with("latency_ms: must be at most"));
        assert!(err(r#"{"error_status": 200}"#).starts_with("error_status: must be a 5xx"));
        assert!(err(r#"{"fail_next": "x"}"#).starts_with("fail_next: invalid type"));
        assert!(err(r#"{"nope": 1}"#).contains("unknown field `nope`"));
        assert!(err("[1]").starts_with("the faults must be a JSON object"));
        let ok = Faults::from_json(br#"{"error_rate": 0.25, "latency_ms": 10}"#).expect("valid");
        assert_eq!(
            (ok.error_rate, ok.latency_ms, ok.error_status),
            (0.25, 10, 503)
        );
    }

    #[test]
    fn kinds() {
        assert_eq!(Kind::of("/token/authenticate"), Kind::Auth);
        assert_eq!(Kind::of("/2/0/workspaces/w/models/m/files/113"), Kind::Bulk);
        assert_eq!(Kind::of("/2/0/models/m/imports/1/tasks"), Kind::Bulk);
        assert_eq!(
            Kind::of("/2/0/models/m/modules/1/data"),
            Kind::Transactional
        );
    }
}
