//! What the CRM client needs to know: where to log in, how, which API version, how to tag
//! our writes, and how hard to retry.

use std::time::Duration;

use crate::secret::Secret;

/// How the client obtains an access token.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// OAuth client credentials (the connected app's "run-as" user). Needs the My Domain host.
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
    },
    /// OAuth JWT bearer: an RS256 assertion signed with the connected app's private key.
    JwtBearer {
        client_id: String,
        username: String,
        /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
        private_key_pem: Secret,
        /// The `aud` claim; the login URL when `None` (`https://login.salesforce.com`,
        /// `https://test.salesforce.com` or the site URL).
        audience: Option<String>,
    },
}

/// Retry timing for transient faults (connection errors, 5xx, `UNABLE_TO_LOCK_ROW`).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`, on the shared schedule (`crate::backoff`).
    pub fn backoff(&self, attempt: u32) -> Duration {
        crate::backoff::Backoff::new(self.initial_backoff, self.max_backoff).wait(attempt + 1)
    }
}

/// Everything the client is configured with.
#[derive(Debug, Clone)]
pub struct CrmConfig {
    /// Where the token endpoint lives: `https://login.salesforce.com`, the My Domain URL, or a
    /// simulator's `http://127.0.0.1:port`. API calls go to the `instance_url` the token
    /// response names.
    pub login_url: String,
    /// `59.0` style; used in `/services/data/v59.0/...` and `/cometd/59.0`.
    pub api_version: String,
    pub auth: AuthConfig,
    /// Sent as `Sforce-Call-Options: client=<this>` on every write, so that our own changes
    /// come back in CDC with `changeOrigin` containing `client=<this>`.
    pub call_client_id: String,
    pub retry: RetryPolicy,
    /// Per-request timeout for REST calls.
    pub request_timeout: Duration,
    /// The most of one response body read, decompressed (see `crate::body`).
    pub max_response_bytes: usize,
    /// Records per sObject Collections call (the API allows at most 200).
    pub collection_chunk: usize,
    /// At or above this many records, `update` uses a Bulk API 2.0 ingest job.
    pub bulk_threshold: usize,
    /// A full read (the first run, a re-read) of more than this many records goes through a
    /// Bulk API 2.0 query job instead of REST pages of 2,000; 0: never.
    pub bulk_query_above: u64,
    /// Rows per Bulk API 2.0 query results page (`maxRecords`): what one page holds in
    /// memory as CSV.
    pub bulk_query_page: usize,
    /// The longest wait between looks at a bulk job's state, and how long to wait for it in
    /// all.
    pub bulk_poll_interval: Duration,
    pub bulk_timeout: Duration,
    /// Lifetime written into JWT assertions (`exp`); the CRM allows at most three minutes.
    pub jwt_lifetime: Duration,
    /// `http://` beyond loopback is allowed (a WARN at every start); see [`crate::endpoint`].
    pub allow_insecure_http: bool,
}

impl CrmConfig {
    /// A configuration with the usual defaults for everything but the essentials.
    pub fn new(
        login_url: impl Into<String>,
        api_version: impl Into<String>,
        auth: AuthConfig,
    ) -> Self {
        CrmConfig {
            login_url: login_url.into(),
            api_version: api_version.into(),
            auth,
            call_client_id: "plansync".to_string(),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(120),
            max_response_bytes: crate::body::DEFAULT_MAX_RESPONSE_BYTES,
            collection_chunk: 200,
            bulk_threshold: 2_000,
            bulk_query_above: 20_000,
            bulk_query_page: 100_000,
            bulk_poll_interval: Duration::from_secs(2),
            bulk_timeout: Duration::from_secs(30 * 60),
            jwt_lifetime: Duration::from_secs(170),
            allow_insecure_http: false,
        }
    }
}
