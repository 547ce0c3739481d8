//! The one path every request takes: rate limiter → request → classify → retry.
//!
//! Nothing else in the client talks to the network. A call takes a token from the tenant's
//! bucket before *every* attempt (retries spend budget too), counts itself, and is classified:
//! success is returned, a refused token is handed back to the caller (which owns
//! re-authentication), transient failures wait and go again until the time budget runs out,
//! and anything else is a typed error with the status and the start of the body.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use super::error::AnaplanError;
use super::rate::RateLimiter;
use super::retry::{RetryPolicy, Verdict, classify, retry_after};
use super::stats::{CallKind, Stats};
use crate::outage::{Loudness, Outage};
use crate::secret::excerpt;

/// One request, rebuilt for every attempt.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: Method,
    pub url: String,
    pub query: Vec<(String, String)>,
    pub kind: CallKind,
    /// Whether repeating it after the server may have acted on it is harmless.
    pub idempotent: bool,
    pub accept: Option<&'static str>,
    pub content_type: Option<&'static str>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: Method, url: String, kind: CallKind) -> Self {
        let idempotent = matches!(method, Method::GET | Method::PUT | Method::DELETE);
        Request {
            method,
            url,
            query: Vec::new(),
            kind,
            idempotent,
            accept: Some("application/json"),
            content_type: None,
            body: None,
        }
    }

    pub fn json(mut self, body: Vec<u8>) -> Self {
        self.content_type = Some("application/json");
        self.body = Some(body);
        self
    }

    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    pub fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_string(), value.into()));
        self
    }

    /// The path, for error messages (the URL without scheme and host).
    pub fn path(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(u) => u.path().to_string(),
            Err(_) => self.url.clone(),
        }
    }
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Shared by every clone of a client.
#[derive(Debug)]
pub(crate) struct Transport {
    client: reqwest::Client,
    limiter: RateLimiter,
    retry: RetryPolicy,
    pub stats: Arc<Stats>,
    /// Whether Anaplan is out of reach, for how loud its failures are logged.
    outage: Outage,
    /// The cap on one response body (see `crate::body`).
    max_response_bytes: usize,
}

impl Transport {
    pub fn new(
        calls_per_minute: u32,
        retry: RetryPolicy,
        request_timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<Self, AnaplanError> {
        // Needed only for https endpoints; a second install (another client) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| AnaplanError::Config(format!("HTTP client: {e}")))?;
        Ok(Transport {
            client,
            limiter: RateLimiter::per_minute(calls_per_minute),
            retry,
            stats: Arc::new(Stats::default()),
            outage: Outage::default(),
            max_response_bytes,
        })
    }

    /// Whether Anaplan answered the last call that tried to reach it.
    pub fn reachable(&self) -> bool {
        !self.outage.is_down()
    }

    /// Sends `req` with `authorization` (already the full header value), retrying transient
    /// failures. A 401 comes back as `AnaplanError::Unauthorized` for the caller to handle.
    pub async fn execute(
        &self,
        req: &Request,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response, AnaplanError> {
        let start = Instant::now();
        let mut retries: u32 = 0;
        loop {
            self.limiter.acquire().await;
            self.stats.call(req.kind);
            if retries > 0 {
                self.stats.retry();
            }
            let attempt = self.attempt(req, authorization).await;
            if attempt.is_ok() {
                self.reached(
                    req,
                    attempt.as_ref().map_or(0, |(status, _, _)| status.as_u16()),
                );
            }
            let (last, wait) = match attempt {
                Ok((status, retry_header, response)) => match classify(status, req.idempotent) {
                    Verdict::Success => return Ok(response),
                    Verdict::Reauthenticate => {
                        return Err(AnaplanError::Unauthorized {
                            method: req.method.to_string(),
                            path: req.path(),
                            status: status.as_u16(),
                            body: excerpt(&response.body),
                        });
                    }
                    Verdict::Fail => {
                        return Err(AnaplanError::Status {
                            method: req.method.to_string(),
                            path: req.path(),
                            status: status.as_u16(),
                            body: excerpt(&response.body),
                        });
                    }
                    Verdict::Retry => {
                        if status == StatusCode::TOO_MANY_REQUESTS {
                            self.stats.throttled();
                        }
                        (
                            format!("HTTP {}: {}", status.as_u16(), excerpt(&response.body)),
                            self.retry.delay(retries, retry_header),
                        )
                    }
                },
                Err(Attempt::TooLarge { limit }) => {
                    // Asking again brings the same answer: a broken or hostile server.
                    return Err(AnaplanError::TooLarge {
                        method: req.method.to_string(),
                        path: req.path(),
                        limit: crate::body::size(limit),
                    });
                }
                Err(Attempt::Http(e)) => {
                    // A connection never made cannot have been acted on; anything later
                    // (a reset, a timeout, a truncated answer) may have been.
                    if !(e.is_connect() || req.idempotent) {
                        self.unreachable(req, &error_chain(&e), None);
                        return Err(AnaplanError::Transport {
                            method: req.method.to_string(),
                            path: req.path(),
                            detail: error_chain(&e),
                        });
                    }
                    (error_chain(&e), self.retry.delay(retries, None))
                }
            };
            let elapsed = start.elapsed();
            if elapsed + wait > self.retry.max_elapsed {
                return Err(AnaplanError::GaveUp {
                    method: req.method.to_string(),
                    path: req.path(),
                    attempts: retries + 1,
                    elapsed,
                    last,
                });
            }
            if last.starts_with("HTTP 429") || last.starts_with("HTTP 409") {
                // Throttled or busy: the tenant answers, and the rate limiter paces us.
                tracing::debug!(event = "anaplan_call_retry", method = %req.method, path = %req.path(), retry = retries + 1, wait_ms = wait.as_millis() as u64, reason = %last, "retrying an Anaplan call");
            } else {
                self.unreachable(req, &last, Some((retries + 1, wait)));
            }
            tokio::time::sleep(wait).await;
            retries += 1;
        }
    }

    /// A failure to reach Anaplan (a connection, a timeout, a 5xx): a WARN for the first of
    /// an outage, an ERROR now and then while it lasts, else DEBUG (see `crate::outage`).
    fn unreachable(&self, req: &Request, reason: &str, retry: Option<(u32, Duration)>) {
        let now = std::time::Instant::now();
        let loudness = self.outage.failed(now);
        let down_s = self.outage.lasted(now).as_secs();
        let (retry, wait_ms) = retry.map_or((0, 0), |(n, w)| (n, w.as_millis() as u64));
        let path = req.path();
        match loudness {
            Loudness::Warn => {
                tracing::warn!(event = "anaplan_unreachable", method = %req.method, %path, retry, wait_ms, reason, "Anaplan could not be reached; retrying")
            }
            Loudness::Error => {
                tracing::error!(event = "anaplan_unreachable", method = %req.method, %path, retry, wait_ms, down_s, reason, "Anaplan is still out of reach; retrying")
            }
            Loudness::Quiet => {
                tracing::debug!(event = "anaplan_call_retry", method = %req.method, %path, retry, wait_ms, reason, "retrying an Anaplan call")
            }
        }
    }

    /// Anaplan answered (whatever it said): an outage, if there was one, is over.
    fn reached(&self, req: &Request, status: u16) {
        if status >= 500 {
            return;
        }
        if let Some(down) = self.outage.recovered(std::time::Instant::now()) {
            tracing::info!(event = "anaplan_reachable", method = %req.method, path = %req.path(), down_ms = down.as_millis() as u64, "Anaplan answers again");
        }
    }

    /// One attempt: the status, any `Retry-After`, and the whole body.
    async fn attempt(
        &self,
        req: &Request,
        authorization: Option<&HeaderValue>,
    ) -> Result<(StatusCode, Option<Duration>, Response), Attempt> {
        let mut builder = self.client.request(req.method.clone(), &req.url);
        if !req.query.is_empty() {
            builder = builder.query(&req.query);
        }
        if let Some(auth) = authorization {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        if let Some(accept) = req.accept {
            builder = builder.header(reqwest::header::ACCEPT, accept);
        }
        if let Some(ct) = req.content_type {
            builder = builder.header(CONTENT_TYPE, ct);
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let response = builder.send().await.map_err(Attempt::Http)?;
        let status = response.status();
        let wait = retry_after(response.headers().get(RETRY_AFTER));
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = crate::body::read_capped(response, self.max_response_bytes)
            .await
            .map_err(|e| match e {
                crate::body::BodyError::TooLarge { limit } => Attempt::TooLarge { limit },
                crate::body::BodyError::Read(e) => Attempt::Http(e),
            })?;
        Ok((
            status,
            wait,
            Response {
                status: status.as_u16(),
                content_type,
                body,
            },
        ))
    }
}

/// Why one attempt got no answer to classify.
enum Attempt {
    Http(reqwest::Error),
    TooLarge { limit: usize },
}

/// An error with its causes, which is where reqwest puts the useful part.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
