//! The production Anaplan client: authentication (Basic, CA certificate, static token; refresh
//! and one re-authentication on 401), the tenant's rate limit, retry with backoff, the
//! transactional API (listings, name resolution, view reads, cell writes, list items) and the
//! bulk API (chunked upload, import with failure dump, export, process).
//!
//! Layout:
//! - `config`: `AnaplanConfig`, `AuthMethod`, the documented limits.
//! - `http`: the one send path (limiter → request → classify → retry); `rate`: the token
//!   bucket; `retry`: classification and backoff; `auth`: tokens; `stats`: call counters.
//! - `wire`: response types and their parsers; `view`: view grids (JSON and CSV); `dump`:
//!   import failure dumps; `chunk`: splitting batches under the per-call limits.
//! - `large_read`: read requests (views and lists over the read limits, page by page).
//! - `transactional`, `bulk`: the operations, as methods of `AnaplanClient`.
//! - `fuzz`: every parser of outside bytes, for the fuzz target.
//!
//! A 200 whose body lists per-cell or per-item `failures` is not an error: the failures come
//! back in the outcome, each with the caller's index.

mod auth;
pub mod bulk;
pub mod chunk;
pub mod config;
pub mod dump;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
mod http;
pub mod large_read;
pub mod limits;
pub mod rate;
pub mod retry;
pub mod stats;
pub mod transactional;
pub mod view;
pub mod wire;

use std::sync::Arc;

pub use bulk::{ImportOutcome, ProcessOutcome, TaskKind};
pub use config::{AnaplanConfig, AuthMethod, CertFormat};
pub use dump::DumpRowError;
pub use error::AnaplanError;
pub use large_read::{ListPages, ReadState, ReadStatus, ViewPages};
pub use retry::RetryPolicy;
pub use stats::{CallKind, CallStats};
pub use transactional::{
    CellCall, CellFailure, CellValue, CellWrite, CellWriteCalls, CellWriteOutcome, DimRef,
    ItemFailure, ItemRef, LineItemRef, ListDeleteOutcome, ListItemWrite, ListWriteOutcome,
};
pub use view::{CsvLayout, ViewData, ViewRow};
pub use wire::{
    Definition, FileInfo, LineItem, ListItem, ListMetadata, Model, Named, Task, TaskResult,
    TaskState, Workspace,
};

use self::auth::Auth;
use self::http::{Request, Response, Transport};

/// A client for one tenant. Cheap to clone; clones share the rate limiter, the token and the
/// call counters, so the tenant's budget holds however many tasks use it.
#[derive(Clone, Debug)]
pub struct AnaplanClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: AnaplanConfig,
    /// The API base without a trailing slash, ending in `/2/0`.
    api: String,
    transport: Transport,
    auth: Auth,
}

impl AnaplanClient {
    /// Checks the configuration (URLs, limits, the certificate and key) and builds the client.
    /// No network call is made until the first operation.
    pub fn new(config: AnaplanConfig) -> Result<Self, AnaplanError> {
        let (auth_url, api) = config.validate()?;
        for url in [&auth_url, &api] {
            if crate::endpoint::is_insecure(url) {
                tracing::warn!(
                    event = "insecure_transport",
                    system = "anaplan",
                    url = %url,
                    "Anaplan is reached over http:// beyond loopback (allow_insecure_http): credentials and data cross the network in clear text"
                );
            }
        }
        let transport = Transport::new(
            config.calls_per_minute,
            config.retry.clone(),
            config.request_timeout,
            config.max_response_bytes,
        )?;
        let auth = Auth::new(&config.auth, auth_url, config.refresh_margin)?;
        Ok(AnaplanClient {
            inner: Arc::new(Inner {
                config,
                api,
                transport,
                auth,
            }),
        })
    }

    pub fn config(&self) -> &AnaplanConfig {
        &self.inner.config
    }

    /// Whether Anaplan answered the last call that tried to reach it (any answer, an error
    /// status included, but a 5xx): for readiness checks.
    pub fn reachable(&self) -> bool {
        self.inner.transport.reachable()
    }

    /// Whether Anaplan refused the credentials at the last authentication (cleared by the
    /// next that succeeds).
    pub fn auth_refused(&self) -> bool {
        self.inner.auth.refused()
    }

    /// Counters of every call made through this client and its clones.
    pub fn stats(&self) -> CallStats {
        self.inner.transport.stats.snapshot()
    }

    /// Gets a token now (to check credentials at start-up rather than on the first write).
    pub async fn authenticate(&self) -> Result<(), AnaplanError> {
        self.inner
            .auth
            .token(&self.inner.transport)
            .await
            .map(|_| ())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.api)
    }

    /// Sends an API request with the current token; on a 401, authenticates once more and
    /// repeats it once.
    async fn call(&self, req: Request) -> Result<Response, AnaplanError> {
        let transport = &self.inner.transport;
        let token = self.inner.auth.token(transport).await?;
        match transport.execute(&req, Some(&token.header)).await {
            Err(refused @ AnaplanError::Unauthorized { .. }) => {
                match self.inner.auth.renew(transport, &token).await? {
                    Some(fresh) => {
                        transport.stats.retry();
                        transport.execute(&req, Some(&fresh.header)).await
                    }
                    None => Err(refused),
                }
            }
            other => other,
        }
    }
}

/// Percent-encodes one path segment (ids are hex or digits, but a name-derived id must never
/// be able to change the path).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
