//! The daily API request budget (`Sforce-Limit-Info`, `REQUEST_LIMIT_EXCEEDED`) and the request
//! log tests read to count calls by kind, and the `limits` resource that reports them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};

use super::Sim;
use super::http::json_response;

/// What a request was for, to count calls the way the project budgets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Auth,
    Query,
    Write,
    Bulk,
    Streaming,
    Admin,
    Other,
}

impl RequestKind {
    const ALL: [RequestKind; 7] = [
        RequestKind::Auth,
        RequestKind::Query,
        RequestKind::Write,
        RequestKind::Bulk,
        RequestKind::Streaming,
        RequestKind::Admin,
        RequestKind::Other,
    ];

    /// Classifies a request by method and path.
    pub fn of(method: &str, path: &str) -> RequestKind {
        if path.starts_with("/services/oauth2/") {
            RequestKind::Auth
        } else if path.starts_with("/cometd/") {
            RequestKind::Streaming
        } else if path.starts_with("/__sim/") {
            RequestKind::Admin
        } else if path.contains("/jobs/ingest") || path.contains("/jobs/query") {
            RequestKind::Bulk
        } else if path.contains("/query") || path.contains("/queryAll") {
            RequestKind::Query
        } else if path.starts_with("/services/data/") && method != "GET" {
            RequestKind::Write
        } else if path.starts_with("/services/data/") && path.contains("/sobjects/") {
            RequestKind::Query
        } else {
            RequestKind::Other
        }
    }

    fn slot(self) -> usize {
        RequestKind::ALL
            .iter()
            .position(|k| *k == self)
            .unwrap_or(6)
    }
}

/// Request counts by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    pub auth: u64,
    pub query: u64,
    pub write: u64,
    pub bulk: u64,
    pub streaming: u64,
    pub admin: u64,
    pub other: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub kind: RequestKind,
}

const LOG_CAP: usize = 10_000;

#[derive(Debug)]
pub struct Usage {
    counts: [u64; 7],
    log: VecDeque<LoggedRequest>,
    window_start: Instant,
    used: u64,
    pub limit: u64,
}

impl Usage {
    pub fn new(limit: u64) -> Self {
        Usage {
            counts: [0; 7],
            log: VecDeque::new(),
            window_start: Instant::now(),
            used: 0,
            limit,
        }
    }

    /// Spends one API request; `Err` with the usage when the budget is spent.
    pub fn spend(&mut self) -> Result<(u64, u64), (u64, u64)> {
        if self.window_start.elapsed() >= Duration::from_secs(24 * 3600) {
            self.window_start = Instant::now();
            self.used = 0;
        }
        if self.used >= self.limit {
            return Err((self.used, self.limit));
        }
        self.used += 1;
        Ok((self.used, self.limit))
    }

    pub fn set(&mut self, limit: Option<u64>, used: Option<u64>) {
        if let Some(l) = limit {
            self.limit = l;
        }
        if let Some(u) = used {
            self.used = u;
        }
    }

    pub fn usage(&self) -> (u64, u64) {
        (self.used, self.limit)
    }

    pub fn record(&mut self, entry: LoggedRequest) {
        self.counts[entry.kind.slot()] += 1;
        if self.log.len() == LOG_CAP {
            self.log.pop_front();
        }
        self.log.push_back(entry);
    }

    pub fn counts(&self) -> RequestCounts {
        let c = &self.counts;
        RequestCounts {
            auth: c[0],
            query: c[1],
            write: c[2],
            bulk: c[3],
            streaming: c[4],
            admin: c[5],
            other: c[6],
        }
    }

    pub fn log(&self) -> Vec<LoggedRequest> {
        self.log.iter().cloned().collect()
    }

    pub fn reset_log(&mut self) {
        self.counts = [0; 7];
        self.log.clear();
    }
}

/// `GET …/limits`: the org's allocations as `{"Name": {"Max": n, "Remaining": n}}`.
/// `DailyApiRequests` is the budget above (this call already spent from it, as on
/// Salesforce), the durable streaming clients count the live Bayeux sessions and the Bulk
/// query jobs those created since the start; the others
/// are a Developer Edition's allocations, which nothing here consumes.
pub async fn limits(
    State(sim): State<Arc<Sim>>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = sim.api(&version, &headers) {
        return resp;
    }
    let (used, max) = sim.usage_lock().usage();
    let clients = u64::try_from(sim.streaming_lock().len()).unwrap_or(u64::MAX);
    let (query_jobs, query_jobs_max) = {
        let jobs = sim.query_jobs_lock();
        (jobs.created, jobs.limit)
    };
    let limit = |max: u64, used: u64| json!({"Max": max, "Remaining": max.saturating_sub(used)});
    let mut body = serde_json::Map::new();
    body.insert("DailyApiRequests".into(), limit(max, used));
    body.insert(
        "DurableStreamingApiConcurrentClients".into(),
        limit(2_000, clients),
    );
    body.insert(
        "DailyBulkV2QueryJobs".into(),
        limit(query_jobs_max, query_jobs),
    );
    for (name, max) in [
        ("DailyBulkApiBatches", 15_000),
        ("DailyBulkV2QueryFileStorageMB", 976_562),
        ("DailyDurableStreamingApiEvents", 1_000_000),
        ("DailyAsyncApexExecutions", 250_000),
        ("DataStorageMB", 5),
        ("FileStorageMB", 20),
        ("HourlyPublishedPlatformEvents", 250_000),
        ("SingleEmail", 15),
        ("MassEmail", 10),
    ] {
        body.insert(name.into(), limit(max, 0));
    }
    json_response(StatusCode::OK, &Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_spends() {
        assert_eq!(
            RequestKind::of("POST", "/services/oauth2/token"),
            RequestKind::Auth
        );
        assert_eq!(
            RequestKind::of("GET", "/services/data/v59.0/query"),
            RequestKind::Query
        );
        assert_eq!(
            RequestKind::of("PATCH", "/services/data/v59.0/composite/sobjects"),
            RequestKind::Write
        );
        assert_eq!(
            RequestKind::of("PUT", "/services/data/v59.0/jobs/ingest/750/batches"),
            RequestKind::Bulk
        );
        let mut u = Usage::new(2);
        assert_eq!(u.spend(), Ok((1, 2)));
        assert_eq!(u.spend(), Ok((2, 2)));
        assert_eq!(u.spend(), Err((2, 2)));
    }
}
