//! The one HTTP entry point: every request passes the admin check, fault injection, the rate
//! limit and the request log here, then goes to the auth service or the Integration API.
//!
//! Routing is by path segments (see `api/mod.rs`) rather than axum routes, so that both path forms
//! of model-scoped resources share one table and unknown routes get Anaplan's 404 body.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::auth::Auth;
use super::conn::ConnInfo;
use super::faults::{Bucket, Fault, FaultState, Kind, LoggedRequest, RequestLog};
use super::large_read::ReadRequests;
use super::model::{ModelData, Tenant};
use super::wire::{self, Req};
use super::{admin, api};

/// The largest body read (upload chunks are at most 50 MB, gzip ones a little more).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

pub struct Shared {
    pub tenant: Arc<Tenant>,
    pub auth: Auth,
    /// Fault settings and their generator; locked briefly per request.
    pub faults: Mutex<FaultState>,
    /// The tenant rate limit; locked briefly per API request.
    pub bucket: Mutex<Bucket>,
    /// The request log; locked briefly per request.
    pub log: Mutex<RequestLog>,
    /// `http://127.0.0.1:P`.
    pub base: String,
    /// What `/__sim/` requests must carry in `X-Sim-Token`.
    pub hooks_token: crate::Secret,
    /// At most this many cells per view read, list items per list read.
    pub max_read: usize,
    /// Large-volume read requests.
    pub reads: ReadRequests,
}

/// Locks a mutex even if a panicking thread poisoned it: the data is still consistent, since
/// every critical section here leaves it valid at each step.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn model_lock(m: &Mutex<ModelData>) -> MutexGuard<'_, ModelData> {
    lock(m)
}

pub async fn entry(
    State(sh): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    if path.starts_with("/__sim/") {
        if let Err((status, message)) = crate::hooks_token::check(&parts.headers, &sh.hooks_token) {
            return wire::error(status, message, &path);
        }
        let req = match read(parts, body, &sh.base).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        return admin::handle(&sh, &req);
    }

    let kind = Kind::of(&path);
    let (latency, fault) = lock(&sh.faults).next(kind == Kind::Auth);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let record = |status: u16, fault: Fault| {
        lock(&sh.log).record(
            LoggedRequest {
                method: method.to_string(),
                path: path.clone(),
                status,
                kind,
            },
            fault,
        );
    };
    match fault {
        Fault::Drop => {
            record(0, fault);
            conn.kill();
            return wire::error(StatusCode::INTERNAL_SERVER_ERROR, "dropped", &path);
        }
        Fault::Error(code) => {
            record(code, fault);
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return wire::error(code, wire::reason(code), &path);
        }
        Fault::None => {}
    }
    if kind != Kind::Auth && !lock(&sh.bucket).take() {
        record(429, fault);
        return wire::error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests", &path);
    }

    let refuse = lock(&sh.faults).faults.refuse_body_containing.clone();
    let resp = match read(parts, body, &sh.base).await {
        Ok(req)
            if refuse.as_ref().is_some_and(|needle| {
                !needle.is_empty()
                    && req
                        .body
                        .windows(needle.len())
                        .any(|w| w == needle.as_bytes())
            }) =>
        {
            wire::error(
                StatusCode::FORBIDDEN,
                "Request blocked by the web application firewall",
                &path,
            )
        }
        Ok(req) => {
            if kind == Kind::Auth {
                sh.auth.handle(&req)
            } else if path.starts_with("/2/0/") {
                api::handle(&sh, &req)
            } else {
                wire::not_found(&path)
            }
        }
        Err(resp) => resp,
    };
    record(resp.status().as_u16(), fault);
    resp
}

async fn read(parts: axum::http::request::Parts, body: Body, base: &str) -> Result<Req, Response> {
    let path = parts.uri.path().to_string();
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| wire::error(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large", &path))?;
    Ok(Req {
        method: parts.method,
        query: wire::parse_query(parts.uri.query()),
        path,
        headers: parts.headers,
        body: bytes,
        base: base.to_string(),
    })
}

/// How long a task shows IN_PROGRESS before it is applied, if not configured.
pub const DEFAULT_TASK_STEP: Duration = Duration::from_millis(200);
