//! What the client needs to know: where the services are, how to authenticate, and the
//! limits it must keep. Checked once, at construction, so a running client never discovers a
//! bad URL halfway through a sync.

use std::time::Duration;

use crate::secret::Secret;

use super::error::AnaplanError;
use super::limits::{
    MAX_CELLS_PER_WRITE, MAX_LIST_ITEMS_PER_CALL, MAX_PAGE_SIZE, MAX_UPLOAD_CHUNK_BYTES,
    MAX_WRITE_BYTES,
};
use super::retry::RetryPolicy;

/// How the client proves who it is.
#[derive(Debug, Clone)]
pub enum AuthMethod {
    /// `POST /token/authenticate` with HTTP Basic (an "Exception User" on SSO tenants).
    Basic { user: String, password: Secret },
    /// A CA certificate registered with the tenant and its PKCS#8 private key, both PEM.
    Certificate {
        cert_pem: String,
        key_pem: Secret,
        format: CertFormat,
    },
    /// A token obtained elsewhere. It cannot be refreshed: a 401 is final.
    Token(Secret),
}

/// The body format of certificate authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertFormat {
    /// 150 random bytes, signed.
    V1,
    /// An 8-byte big-endian Unix-seconds timestamp then random bytes, signed, with
    /// `"encodedDataFormat":"v2"` (mandatory on Anaplan from 2026).
    V2,
}

#[derive(Debug, Clone)]
pub struct AnaplanConfig {
    /// The auth service, e.g. `https://auth.anaplan.com` (regional twins exist).
    pub auth_url: String,
    /// The Integration API base ending in `/2/0`, e.g. `https://api.anaplan.com/2/0`.
    pub api_url: String,
    pub auth: AuthMethod,
    /// The tenant's call budget; every clone of a client shares one bucket of this size.
    pub calls_per_minute: u32,
    pub retry: RetryPolicy,
    /// How long to wait between polls of a running task (Anaplan asks for at least 5 s).
    pub task_poll_interval: Duration,
    /// How long a task may run before the client stops waiting for it.
    pub task_timeout: Duration,
    /// Upload chunk size before compression (Anaplan: 1–50 MB).
    pub chunk_bytes: usize,
    /// Timeout of one HTTP request, connection included.
    pub request_timeout: Duration,
    /// The most of one response body read, decompressed (see `crate::body`).
    pub max_response_bytes: usize,
    /// Refresh the token when less than this is left of its life.
    pub refresh_margin: Duration,
    /// Cells per write call (at most the documented 100,000).
    pub max_cells_per_write: usize,
    /// Bytes of JSON body per cell write call (at most the documented 15 MB).
    pub max_write_bytes: usize,
    /// Items per list add/update/delete call (at most the documented 100,000).
    pub max_list_items_per_call: usize,
    /// Page size for paged listings (at most 5000).
    pub page_size: usize,
    /// `http://` beyond loopback is allowed (a WARN at every start); see [`crate::endpoint`].
    pub allow_insecure_http: bool,
}

impl AnaplanConfig {
    /// A configuration with the documented defaults.
    pub fn new(auth_url: impl Into<String>, api_url: impl Into<String>, auth: AuthMethod) -> Self {
        AnaplanConfig {
            auth_url: auth_url.into(),
            api_url: api_url.into(),
            auth,
            calls_per_minute: 600,
            retry: RetryPolicy::default(),
            task_poll_interval: Duration::from_secs(5),
            task_timeout: Duration::from_secs(3600),
            chunk_bytes: 25_000_000,
            request_timeout: Duration::from_secs(120),
            max_response_bytes: crate::body::DEFAULT_MAX_RESPONSE_BYTES,
            refresh_margin: Duration::from_secs(300),
            max_cells_per_write: MAX_CELLS_PER_WRITE,
            max_write_bytes: MAX_WRITE_BYTES,
            max_list_items_per_call: MAX_LIST_ITEMS_PER_CALL,
            page_size: MAX_PAGE_SIZE,
            allow_insecure_http: false,
        }
    }

    /// Checks the configuration and returns the two base URLs without trailing slashes.
    pub(crate) fn validate(&self) -> Result<(String, String), AnaplanError> {
        let auth = base_url("auth_url", &self.auth_url, self.allow_insecure_http)?;
        let api = base_url("api_url", &self.api_url, self.allow_insecure_http)?;
        if api.ends_with("/1/3") || api.contains("/1/3/") {
            return Err(AnaplanError::LegacyApi { url: api });
        }
        if !api.ends_with("/2/0") {
            return Err(AnaplanError::Config(format!(
                "api_url {api} must end with the API version /2/0 (for example https://api.anaplan.com/2/0)"
            )));
        }
        let bad = |what: &str| Err(AnaplanError::Config(what.to_string()));
        if self.calls_per_minute == 0 {
            return bad("calls_per_minute must be at least 1");
        }
        if self.chunk_bytes == 0 || self.chunk_bytes > MAX_UPLOAD_CHUNK_BYTES {
            return bad("chunk_bytes must be between 1 byte and 50 MB");
        }
        if self.max_cells_per_write == 0 || self.max_cells_per_write > MAX_CELLS_PER_WRITE {
            return bad("max_cells_per_write must be between 1 and 100000");
        }
        if self.max_write_bytes < 2 || self.max_write_bytes > MAX_WRITE_BYTES {
            return bad("max_write_bytes must be between 2 bytes and 15 MB");
        }
        if self.max_list_items_per_call == 0
            || self.max_list_items_per_call > MAX_LIST_ITEMS_PER_CALL
        {
            return bad("max_list_items_per_call must be between 1 and 100000");
        }
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            return bad("page_size must be between 1 and 5000");
        }
        if self.task_poll_interval.is_zero() {
            return bad("task_poll_interval must be positive");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be positive");
        }
        self.retry.validate()?;
        Ok((auth, api))
    }
}

fn base_url(field: &str, raw: &str, allow_insecure_http: bool) -> Result<String, AnaplanError> {
    crate::endpoint::base_url(raw, allow_insecure_http)
        .map_err(|e| AnaplanError::Config(format!("{field} {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(api: &str) -> AnaplanConfig {
        AnaplanConfig::new(
            "https://auth.anaplan.com/",
            api,
            AuthMethod::Token(Secret::new("t")),
        )
    }

    #[test]
    fn accepts_regional_2_0_bases_and_trims_slashes() {
        let (auth, api) = config("https://eu3.api.anaplan.com/2/0/")
            .validate()
            .unwrap();
        assert_eq!(auth, "https://auth.anaplan.com");
        assert_eq!(api, "https://eu3.api.anaplan.com/2/0");
    }

    #[test]
    fn refuses_the_retired_1_3_api_saying_what_to_use() {
        let err = config("https://api.anaplan.com/1/3")
            .validate()
            .unwrap_err();
        assert!(matches!(err, AnaplanError::LegacyApi { .. }));
        assert!(err.to_string().contains("/2/0"), "{err}");
    }

    #[test]
    fn refuses_a_base_without_a_version_and_impossible_limits() {
        assert!(config("https://api.anaplan.com").validate().is_err());
        assert!(config("not a url").validate().is_err());
        let mut c = config("https://api.anaplan.com/2/0");
        c.max_cells_per_write = 100_001;
        assert!(c.validate().is_err());
        let mut c = config("https://api.anaplan.com/2/0");
        c.chunk_bytes = 51 * 1024 * 1024;
        assert!(c.validate().is_err());
        let mut c = config("https://api.anaplan.com/2/0");
        c.calls_per_minute = 0;
        assert!(c.validate().is_err());
    }
}
