//! Call counters by kind, and the org's API budget as last reported, for operators and for
//! the benchmark that compares plansync's call count with a naive integration's.
//!
//! Plain atomics: every call bumps a counter, and nothing needs them consistent with each
//! other, so no lock is taken.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What a call was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    Auth,
    Query,
    QueryMore,
    CompositeWrite,
    BulkCreate,
    BulkUpload,
    BulkClose,
    BulkPoll,
    BulkResults,
    Streaming,
    Other,
}

impl CallKind {
    pub const ALL: [CallKind; 11] = [
        CallKind::Auth,
        CallKind::Query,
        CallKind::QueryMore,
        CallKind::CompositeWrite,
        CallKind::BulkCreate,
        CallKind::BulkUpload,
        CallKind::BulkClose,
        CallKind::BulkPoll,
        CallKind::BulkResults,
        CallKind::Streaming,
        CallKind::Other,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Live counters, shared by every clone of a client.
#[derive(Debug, Default)]
pub struct CallStats {
    calls: [AtomicU64; 11],
    retries: AtomicU64,
    reauths: AtomicU64,
    failures: AtomicU64,
    records_written: AtomicU64,
    records_failed: AtomicU64,
    /// `api-usage=N/M` from the last `Sforce-Limit-Info` header, once `api_seen`.
    api_used: AtomicU64,
    api_max: AtomicU64,
    api_seen: AtomicBool,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    pub calls: Vec<(CallKind, u64)>,
    pub total_calls: u64,
    pub retries: u64,
    pub reauths: u64,
    pub failures: u64,
    pub records_written: u64,
    pub records_failed: u64,
    /// `(used, max)` as the CRM last reported it.
    pub api_usage: Option<(u64, u64)>,
}

impl StatsSnapshot {
    pub fn calls_of(&self, kind: CallKind) -> u64 {
        self.calls
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

impl CallStats {
    pub fn new() -> Self {
        CallStats::default()
    }

    pub(crate) fn call(&self, kind: CallKind) {
        self.calls[kind.index()].fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn reauth(&self) {
        self.reauths.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn records(&self, written: u64, failed: u64) {
        self.records_written.fetch_add(written, Ordering::Relaxed);
        self.records_failed.fetch_add(failed, Ordering::Relaxed);
    }

    /// Reads `api-usage=25/5000` out of a `Sforce-Limit-Info` header value (other parts, such
    /// as `per-app-api-usage=…`, are ignored).
    pub(crate) fn limit_info(&self, header: &str) {
        if let Some((used, max)) = parse_limit_info(header) {
            self.api_usage(used, max);
        }
    }

    /// The org's daily API calls, as the header or the `limits` resource reported them.
    pub(crate) fn api_usage(&self, used: u64, max: u64) {
        self.api_max.store(max, Ordering::Relaxed);
        self.api_used.store(used, Ordering::Relaxed);
        self.api_seen.store(true, Ordering::Release);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let calls: Vec<(CallKind, u64)> = CallKind::ALL
            .iter()
            .map(|k| (*k, self.calls[k.index()].load(Ordering::Relaxed)))
            .collect();
        let seen = self.api_seen.load(Ordering::Acquire);
        StatsSnapshot {
            total_calls: calls.iter().map(|(_, n)| n).sum(),
            calls,
            retries: self.retries.load(Ordering::Relaxed),
            reauths: self.reauths.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            records_written: self.records_written.load(Ordering::Relaxed),
            records_failed: self.records_failed.load(Ordering::Relaxed),
            api_usage: seen.then(|| {
                (
                    self.api_used.load(Ordering::Relaxed),
                    self.api_max.load(Ordering::Relaxed),
                )
            }),
        }
    }
}

pub(crate) fn parse_limit_info(header: &str) -> Option<(u64, u64)> {
    header.split(';').find_map(|part| {
        let value = part.trim().strip_prefix("api-usage=")?;
        let (used, max) = value.split_once('/')?;
        Some((used.trim().parse().ok()?, max.trim().parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_api_usage() {
        assert_eq!(parse_limit_info("api-usage=25/5000"), Some((25, 5000)));
        assert_eq!(
            parse_limit_info("api-usage=25/5000; per-app-api-usage=17/250(appName=x)"),
            Some((25, 5000))
        );
        assert_eq!(
            parse_limit_info("per-app-api-usage=17/250(appName=x)"),
            None
        );
        assert_eq!(parse_limit_info("api-usage=x/5000"), None);
        let s = CallStats::new();
        assert_eq!(s.snapshot().api_usage, None);
        s.limit_info("api-usage=7/100");
        assert_eq!(s.snapshot().api_usage, Some((7, 100)));
        // The largest count is a count like any other, not "never seen".
        s.limit_info("api-usage=18446744073709551615/18446744073709551615");
        assert_eq!(s.snapshot().api_usage, Some((u64::MAX, u64::MAX)));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any header value: no panic, and a reading only where `api-usage=` is spelt.
            #[test]
            fn arbitrary_headers_never_panic(header in "\\PC{0,80}") {
                let stats = CallStats::new();
                stats.limit_info(&header);
                let parsed = parse_limit_info(&header);
                prop_assert_eq!(stats.snapshot().api_usage, parsed);
                if parsed.is_some() {
                    prop_assert!(header.contains("api-usage="));
                }
            }

            /// `api-usage=a/b` among other parts, in any order and spacing, reads as (a, b).
            #[test]
            fn well_formed_headers_round_trip(
                used in any::<u64>(),
                max in any::<u64>(),
                before in prop::collection::vec("per-app-api-usage=[0-9]{1,4}/[0-9]{1,4}\\(appName=[a-z]{1,8}\\)", 0..3),
                after in prop::collection::vec("[a-z-]{1,12}=[0-9/]{0,9}", 0..3),
                space in " {0,2}",
            ) {
                let mut parts = before;
                parts.push(format!("api-usage={used}/{max}"));
                parts.extend(after.into_iter().filter(|p| !p.starts_with("api-usage=")));
                let header = parts.join(&format!(";{space}"));
                prop_assert_eq!(parse_limit_info(&header), Some((used, max)), "{}", header);
                let stats = CallStats::new();
                stats.limit_info(&header);
                prop_assert_eq!(stats.snapshot().api_usage, Some((used, max)));
            }
        }
    }
}
