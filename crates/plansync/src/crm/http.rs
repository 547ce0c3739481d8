//! The one send path every REST call takes: bearer token, `Sforce-Call-Options` on writes,
//! `Sforce-Limit-Info` into the stats, error classification, one re-authentication on an
//! expired session, and retry with backoff on transient faults.

use reqwest::Method;

use crate::crm::client::{AccessToken, CrmClient};
use crate::crm::error::CrmError;
use crate::crm::stats::CallKind;
use crate::crm::wire::ApiErrorItem;
use crate::outage::Loudness;

/// What to send.
pub(crate) enum Body {
    Empty,
    Json(Vec<u8>),
    Csv(Vec<u8>),
}

/// One REST call, described so it can be rebuilt for each attempt.
pub(crate) struct Call<'a> {
    pub method: Method,
    /// A path from the instance root (`/services/data/v59.0/query`, or a `nextRecordsUrl`).
    pub path: &'a str,
    pub query: &'a [(&'a str, &'a str)],
    pub body: Body,
    pub kind: CallKind,
    /// Tag with `Sforce-Call-Options: client=<id>` so the CDC echo of this write is ours.
    pub write: bool,
    /// Safe to send twice (GET, PATCH of fields, PUT of the same data). A call that is not is
    /// retried only when the connection failed before the request went out.
    pub idempotent: bool,
}

/// A successful answer.
pub(crate) struct Reply {
    pub body: Vec<u8>,
    /// For the few answers whose headers carry data (`Sforce-Locator`).
    pub headers: reqwest::header::HeaderMap,
}

/// A failed attempt, with whether the request may have reached the server.
struct Failed {
    error: CrmError,
    may_have_arrived: bool,
}

impl CrmClient {
    pub(crate) async fn send(&self, call: &Call<'_>) -> Result<Reply, CrmError> {
        let stats = self.call_stats();
        let policy = &self.config().retry;
        let mut reauthenticated = false;
        let mut attempt = 0;
        loop {
            let token = self.token().await?;
            stats.call(call.kind);
            let failed = match self.attempt(call, &token).await {
                Ok(reply) => {
                    self.reached();
                    return Ok(reply);
                }
                Err(failed) => failed,
            };
            let out_of_reach = matches!(
                &failed.error,
                CrmError::Transport(_) | CrmError::Api { status: 500.., .. }
            );
            if !out_of_reach {
                self.reached();
            }
            let session_expired = matches!(&failed.error, CrmError::Api { status: 401, .. });
            if session_expired && !reauthenticated {
                reauthenticated = true;
                self.reauthenticate(&token).await?;
                continue;
            }
            let retry = failed.error.is_transient()
                && (call.idempotent || !failed.may_have_arrived)
                && attempt + 1 < policy.max_attempts;
            if !retry {
                if out_of_reach {
                    self.unreachable(&format!("{:?}", call.kind), &failed.error, 0);
                }
                stats.failure();
                return Err(failed.error);
            }
            if out_of_reach {
                self.unreachable(&format!("{:?}", call.kind), &failed.error, attempt + 1);
            } else {
                tracing::debug!(event = "crm_call_retry", kind = ?call.kind, attempt, error = %failed.error, "retrying a CRM call");
            }
            stats.retry();
            tokio::time::sleep(policy.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// A failure to reach the CRM (a connection, a timeout, a 5xx) while doing `what`: a
    /// WARN for the first of an outage, an ERROR now and then while it lasts, else DEBUG (see
    /// `crate::outage`). `retry` is the attempt about to be made, 0 when the call gives up.
    pub(crate) fn unreachable(&self, what: &str, error: &CrmError, retry: u32) {
        let now = std::time::Instant::now();
        let outage = self.outage();
        let loudness = outage.failed(now);
        let down_s = outage.lasted(now).as_secs();
        match loudness {
            Loudness::Warn => {
                tracing::warn!(event = "crm_unreachable", what, retry, error = %error, "the CRM could not be reached")
            }
            Loudness::Error => {
                tracing::error!(event = "crm_unreachable", what, retry, down_s, error = %error, "the CRM is still out of reach")
            }
            Loudness::Quiet => {
                tracing::debug!(event = "crm_call_retry", what, retry, error = %error, "retrying a CRM call")
            }
        }
    }

    /// The CRM answered: an outage, if there was one, is over.
    pub(crate) fn reached(&self) {
        if let Some(down) = self.outage().recovered(std::time::Instant::now()) {
            tracing::info!(
                event = "crm_reachable",
                down_ms = down.as_millis() as u64,
                "the CRM answers again"
            );
        }
    }

    async fn attempt(&self, call: &Call<'_>, token: &AccessToken) -> Result<Reply, Failed> {
        let url = format!("{}{}", token.instance_url, call.path);
        let mut request = self
            .http()
            .request(call.method.clone(), &url)
            .bearer_auth(token.token.expose())
            .timeout(self.config().request_timeout);
        if !call.query.is_empty() {
            request = request.query(call.query);
        }
        if call.write {
            request = request.header(
                "Sforce-Call-Options",
                format!("client={}", self.config().call_client_id),
            );
        }
        request = match &call.body {
            Body::Empty => request,
            Body::Json(bytes) => request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes.clone()),
            Body::Csv(bytes) => request
                .header(reqwest::header::CONTENT_TYPE, "text/csv")
                .body(bytes.clone()),
        };
        let response = request.send().await.map_err(|e| Failed {
            may_have_arrived: !e.is_connect(),
            error: CrmError::Transport(e.without_url().to_string()),
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if let Some(info) = response
            .headers()
            .get("Sforce-Limit-Info")
            .and_then(|v| v.to_str().ok())
        {
            self.call_stats().limit_info(info);
        }
        let body = read_body(response, self.config().max_response_bytes, "a request")
            .await
            .map_err(|error| Failed {
                may_have_arrived: true,
                error,
            })?;
        if (200..300).contains(&status) {
            return Ok(Reply {
                body: body.to_vec(),
                headers,
            });
        }
        Err(Failed {
            error: classify(status, &body),
            may_have_arrived: true,
        })
    }
}

/// The body of an answer to `what`, at most `limit` bytes decompressed (`crate::body`).
pub(crate) async fn read_body(
    response: reqwest::Response,
    limit: usize,
    what: &'static str,
) -> Result<Vec<u8>, CrmError> {
    crate::body::read_capped(response, limit)
        .await
        .map_err(|e| match e {
            crate::body::BodyError::TooLarge { limit } => CrmError::Decode {
                what,
                detail: format!(
                    "the answer is larger than {}, the most plansync reads in one response; not read further (check login_url points at the CRM)",
                    crate::body::size(limit)
                ),
            },
            crate::body::BodyError::Read(e) => CrmError::Transport(format!(
                "reading the answer to {what}: {}",
                e.without_url()
            )),
        })
}

/// Turns an error answer into the error it means: the CRM's `[{"errorCode","message"}]`
/// body where there is one, the bare status otherwise.
pub(crate) fn classify(status: u16, body: &[u8]) -> CrmError {
    let items: Vec<ApiErrorItem> = serde_json::from_slice(body).unwrap_or_default();
    let Some(first) = items.into_iter().next() else {
        return CrmError::Api {
            status,
            code: format!("HTTP_{status}"),
            message: crate::secret::excerpt(body),
            fields: Vec::new(),
        };
    };
    if first.error_code == "REQUEST_LIMIT_EXCEEDED" {
        return CrmError::RequestLimit {
            message: first.message,
        };
    }
    // A code-less item still needs a code: callers and the exceptions list go by it.
    let code = if first.error_code.trim().is_empty() {
        format!("HTTP_{status}")
    } else {
        first.error_code
    };
    CrmError::Api {
        status,
        code,
        message: first.message,
        fields: first.fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_error_bodies() {
        let e = classify(
            401,
            br#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#,
        );
        assert!(
            matches!(&e, CrmError::Api { status: 401, code, .. } if code == "INVALID_SESSION_ID")
        );
        assert!(!e.is_transient());
        let e = classify(
            403,
            br#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
        );
        assert!(matches!(e, CrmError::RequestLimit { .. }));
        assert!(!e.is_transient());
        let e = classify(
            400,
            br#"[{"message":"locked","errorCode":"UNABLE_TO_LOCK_ROW"}]"#,
        );
        assert!(e.is_transient());
        let e = classify(503, b"<html>busy</html>");
        assert!(e.is_transient());
        assert_eq!(e.code(), Some("HTTP_503"));
        let e = classify(400, b"[]");
        assert!(matches!(e, CrmError::Api { status: 400, .. }));
        let e = classify(400, br#"[{"message":"no code"}]"#);
        assert_eq!(e.code(), Some("HTTP_400"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn status() -> impl Strategy<Value = u16> {
            prop_oneof![
                Just(400u16),
                Just(401),
                Just(403),
                Just(404),
                Just(500),
                Just(503),
                100u16..600
            ]
        }

        proptest! {
            /// Any body: no panic, the same answer twice, always a code, the status kept.
            #[test]
            fn arbitrary_bodies_classify(status in status(), body in prop::collection::vec(any::<u8>(), 0..200)) {
                let e = classify(status, &body);
                prop_assert_eq!(e.to_string(), classify(status, &body).to_string());
                prop_assert!(e.code().is_some_and(|c| !c.is_empty()));
                if let CrmError::Api { status: s, .. } = &e {
                    prop_assert_eq!(*s, status);
                }
            }

            /// The CRM's own error array reads back as its first item.
            #[test]
            fn error_arrays_round_trip(
                status in status(),
                code in "[A-Z_]{1,30}",
                message in "\\PC{0,60}",
                fields in prop::collection::vec("[A-Za-z_]{1,20}", 0..3),
                more in 0usize..3,
            ) {
                let mut items = vec![serde_json::json!({
                    "message": message, "errorCode": code, "fields": fields,
                })];
                for _ in 0..more {
                    items.push(serde_json::json!({"message": "other", "errorCode": "OTHER"}));
                }
                let body = serde_json::to_vec(&items).unwrap();
                match classify(status, &body) {
                    CrmError::RequestLimit { message: m } => {
                        prop_assert_eq!(code.as_str(), "REQUEST_LIMIT_EXCEEDED");
                        prop_assert_eq!(m, message);
                    }
                    CrmError::Api { status: s, code: c, message: m, fields: f } => {
                        prop_assert_eq!(s, status);
                        prop_assert_eq!(c, code);
                        prop_assert_eq!(m, message);
                        prop_assert_eq!(f, fields);
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
