//! Simulator of a Salesforce-style org: OAuth (client credentials, JWT bearer), REST query,
//! sObject describe and writes, upserts by external id, sObject Collections, Bulk API 2.0 ingest and query, and Change Data
//! Capture over CometD/Bayeux (long-polling and WebSocket), all on one loopback port.
//!
//! Written from `reference/salesforce-api.md` with its own wire types; it shares nothing with the
//! client in `plansync::crm`. Test hooks live under `/__sim/` and on [`CrmSimHandle`]; over HTTP
//! they need the `X-Sim-Token` header (see [`crate::hooks_token`]).
//!
//! Layout: `config` (what it starts with), `seed` (objects, users, records; TOML),
//! `schema`/`values`/`ids` (typed fields and Salesforce ids), `org` (tables and the commit path),
//! `cdc` (change events and retention), `soql` (the query subset), `oauth`, `rest`,
//! `describe` (sObject metadata), `composite`, `upsert` (by external id), `bulk` (ingest), `bulk_query`,
//! `bayeux` (streaming), `admin` (test hooks; `hook_body` reads their settings strictly),
//! `limits` (daily budget, request log, the `limits` resource), `http` (shared helpers),
//! `routing` (one trailing slash dropped before routing, Salesforce's 405 body).

// Handlers return a ready-made error `Response` from helpers with `?`-style early returns; it is
// built once per failed request, so its size does not matter here.
#![allow(clippy::result_large_err)]

mod admin;
mod bayeux;
mod bulk;
mod bulk_query;
mod cdc;
mod composite;
pub mod config;
mod describe;
pub(crate) mod fuzz;
mod hook_body;
mod http;
mod ids;
mod limits;
mod oauth;
mod org;
mod rest;
mod routing;
mod schema;
pub mod seed;
mod soql;
mod upsert;
mod values;

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use tokio::sync::watch;

pub use admin::{AdminError, CrmSimHandle};
pub use config::{CrmSimConfig, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
pub use limits::{LoggedRequest, RequestCounts, RequestKind};
pub use seed::{Seed, SeedError};

#[derive(Debug, thiserror::Error)]
pub enum CrmSimError {
    #[error("invalid seed: {0}")]
    Seed(#[from] SeedError),
    #[error("invalid JWT public key: {0}")]
    Key(#[from] oauth::KeyError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything the handlers share. Each mutex guards one concern and is held only for short,
/// synchronous sections (no `.await` while held); when two are needed, `streaming` is taken
/// before `org`.
pub struct Sim {
    pub(crate) config: CrmSimConfig,
    pub(crate) instance_url: String,
    org: Mutex<org::Org>,
    /// Bumped after every commit and session drop, to wake held `/meta/connect`s.
    pub(crate) pulse: watch::Sender<u64>,
    /// Set when the server stops, so held connects and WebSocket loops end.
    pub(crate) closing: watch::Sender<bool>,
    tokens: Mutex<oauth::Tokens>,
    streaming: Mutex<bayeux::Sessions>,
    cursors: Mutex<rest::Cursors>,
    jobs: Mutex<bulk::Jobs>,
    query_jobs: Mutex<bulk_query::QueryJobs>,
    usage: Mutex<limits::Usage>,
    jwt_keys: Vec<Vec<u8>>,
    /// What `/__sim/` requests must carry in `X-Sim-Token`.
    pub(crate) hooks_token: crate::Secret,
    /// Share (0.0–1.0) of REST calls answered 503 `SERVER_UNAVAILABLE` before they are
    /// looked at (nothing of them is applied), by [`CrmSimHandle::set_error_rate`].
    pub(crate) error_rate: Mutex<f64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a guard cannot leave these structures half-updated in a way that
    // matters to a test simulator; keep serving.
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Sim {
    pub(crate) fn org_lock(&self) -> MutexGuard<'_, org::Org> {
        lock(&self.org)
    }
    pub(crate) fn tokens_lock(&self) -> MutexGuard<'_, oauth::Tokens> {
        lock(&self.tokens)
    }
    fn streaming_lock(&self) -> MutexGuard<'_, bayeux::Sessions> {
        lock(&self.streaming)
    }
    fn cursors_lock(&self) -> MutexGuard<'_, rest::Cursors> {
        lock(&self.cursors)
    }
    fn jobs_lock(&self) -> MutexGuard<'_, bulk::Jobs> {
        lock(&self.jobs)
    }
    fn query_jobs_lock(&self) -> MutexGuard<'_, bulk_query::QueryJobs> {
        lock(&self.query_jobs)
    }
    fn usage_lock(&self) -> MutexGuard<'_, limits::Usage> {
        lock(&self.usage)
    }

    /// Wakes streaming clients waiting for events.
    pub(crate) fn notify(&self) {
        self.pulse.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The user of the request's access token, or the 401 `INVALID_SESSION_ID` response.
    pub(crate) fn authenticate(&self, headers: &axum::http::HeaderMap) -> Result<u32, Response> {
        http::bearer(headers)
            .and_then(|t| self.tokens_lock().check(t))
            .ok_or_else(|| {
                http::sf_error(
                    StatusCode::UNAUTHORIZED,
                    "INVALID_SESSION_ID",
                    "Session expired or invalid",
                )
            })
    }

    /// Checks the path's API version and the token: `(version without the v, user)`.
    pub(crate) fn api(
        &self,
        version: &str,
        headers: &axum::http::HeaderMap,
    ) -> Result<(String, u32), Response> {
        let v = http::api_version(version).ok_or_else(http::not_found)?;
        let user = self.authenticate(headers)?;
        Ok((v, user))
    }
}

/// Builds the simulator's state from a config (the instance URL is where it will listen).
fn build(config: CrmSimConfig, instance_url: String) -> Result<Arc<Sim>, CrmSimError> {
    let retention_ms = i64::try_from(config.retention.as_millis()).unwrap_or(i64::MAX);
    let mut org = org::Org::from_seed(&config.seed, retention_ms)?;
    org.overflow_threshold = config.overflow_threshold;
    let jwt_keys = config
        .jwt_public_keys_pem
        .iter()
        .map(|pem| oauth::rsa_public_key(pem))
        .collect::<Result<Vec<_>, _>>()?;
    let (pulse, _) = watch::channel(0);
    let (closing, _) = watch::channel(false);
    let hooks_token = crate::hooks_token::or_generate(config.hooks_token.as_ref());
    Ok(Arc::new(Sim {
        hooks_token,
        closing,
        usage: Mutex::new(limits::Usage::new(config.daily_limit)),
        config,
        instance_url,
        org: Mutex::new(org),
        pulse,
        tokens: Mutex::new(oauth::Tokens::default()),
        streaming: Mutex::new(bayeux::Sessions::default()),
        cursors: Mutex::new(rest::Cursors::default()),
        jobs: Mutex::new(bulk::Jobs::default()),
        query_jobs: Mutex::new(bulk_query::QueryJobs::default()),
        jwt_keys,
        error_rate: Mutex::new(0.0),
    }))
}

/// Counts every request, spends the daily budget on REST calls and adds `Sforce-Limit-Info`.
async fn account(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let kind = RequestKind::of(&method, &path);
    let metered = path.starts_with("/services/data/v");
    let mut usage = None;
    let mut response = if kind == RequestKind::Admin
        && let Err((status, message)) = crate::hooks_token::check(req.headers(), &sim.hooks_token)
    {
        http::json_response(status, &serde_json::json!({"error": message}))
    } else if metered && fastrand::f64() < *lock(&sim.error_rate) {
        http::sf_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_UNAVAILABLE",
            "The server is temporarily unable to service your request (injected fault).",
        )
    } else if metered {
        let spent = sim.usage_lock().spend();
        match spent {
            Ok(u) => {
                usage = Some(u);
                next.run(req).await
            }
            Err(u) => {
                usage = Some(u);
                http::sf_error(
                    StatusCode::FORBIDDEN,
                    "REQUEST_LIMIT_EXCEEDED",
                    "TotalRequests Limit exceeded.",
                )
            }
        }
    } else {
        next.run(req).await
    };
    if let Some((used, limit)) = usage
        && let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{limit}"))
    {
        response.headers_mut().insert("sforce-limit-info", v);
    }
    sim.usage_lock().record(LoggedRequest {
        method,
        path,
        status: response.status().as_u16(),
        kind,
    });
    response
}

fn router(sim: Arc<Sim>) -> Router {
    let data = "/services/data/{version}";
    let routes = Router::new()
        .route("/services/oauth2/token", post(oauth::token))
        .route(
            "/services/oauth2/revoke",
            post(oauth::revoke).get(oauth::revoke),
        )
        .route("/services/data", get(rest::versions))
        .route(&format!("{data}/query"), get(rest::query))
        .route(&format!("{data}/queryAll"), get(rest::query_all))
        .route(&format!("{data}/query/{{locator}}"), get(rest::query_more))
        .route(
            &format!("{data}/queryAll/{{locator}}"),
            get(rest::query_more),
        )
        .route(&format!("{data}/sobjects"), get(describe::global))
        .route(
            &format!("{data}/sobjects/{{object}}"),
            post(rest::create).get(describe::basic_info),
        )
        .route(&format!("{data}/limits"), get(limits::limits))
        .route(
            &format!("{data}/sobjects/{{object}}/describe"),
            get(describe::describe),
        )
        .route(
            &format!("{data}/sobjects/{{object}}/{{id}}"),
            get(rest::get_record)
                .patch(rest::update)
                .delete(rest::delete)
                .post(upsert::create_by_id),
        )
        .route(
            &format!("{data}/sobjects/{{object}}/{{field}}/{{value}}"),
            get(upsert::get_by_value).patch(upsert::upsert),
        )
        .route(
            &format!("{data}/composite/sobjects/{{object}}/{{field}}"),
            axum::routing::patch(upsert::composite),
        )
        .route(
            &format!("{data}/composite/sobjects"),
            post(composite::create)
                .patch(composite::update)
                .delete(composite::delete),
        )
        .route(&format!("{data}/jobs/ingest"), post(bulk::create_job))
        .route(
            &format!("{data}/jobs/ingest/{{job}}"),
            get(bulk::job_info).patch(bulk::set_state),
        )
        .route(
            &format!("{data}/jobs/ingest/{{job}}/batches"),
            put(bulk::upload),
        )
        .route(
            &format!("{data}/jobs/ingest/{{job}}/{{result}}"),
            get(bulk::results),
        )
        .route(
            &format!("{data}/jobs/query"),
            post(bulk_query::create_job).get(bulk_query::list),
        )
        .route(
            &format!("{data}/jobs/query/{{job}}"),
            get(bulk_query::job_info)
                .patch(bulk_query::abort)
                .delete(bulk_query::delete),
        )
        .route(
            &format!("{data}/jobs/query/{{job}}/results"),
            get(bulk_query::results),
        )
        .route("/cometd", post(bayeux::no_version))
        .route(
            "/cometd/{version}",
            post(bayeux::long_poll).get(bayeux::websocket),
        )
        .route("/cometd/{version}/{*rest}", post(bayeux::long_poll_suffix))
        .merge(admin::routes())
        .fallback(|| async { http::not_found() })
        .layer(middleware::from_fn_with_state(Arc::clone(&sim), account))
        .with_state(sim);
    // A layer on a router runs after its routing; the path is normalised before it, so the
    // routes above sit behind an outer router that only forwards.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn(routing::normalize))
}

/// Serves a simulated org on `listener` until `shutdown` completes (mini-redis style).
pub async fn run(
    config: CrmSimConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CrmSimError> {
    let url = format!("http://{}", listener.local_addr()?);
    let sim = build(config, url)?;
    let mut closed = sim.closing.subscribe();
    let closer = Arc::clone(&sim);
    tokio::spawn(async move {
        shutdown.await;
        closer.closing.send_replace(true);
    });
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(async move {
            let _ = closed.wait_for(|c| *c).await;
        })
        .await?;
    Ok(())
}

/// Starts a simulated org on `listener` in the background; the handle drives the test hooks
/// and stops it.
pub async fn start(
    config: CrmSimConfig,
    listener: tokio::net::TcpListener,
) -> Result<CrmSimHandle, CrmSimError> {
    let url = format!("http://{}", listener.local_addr()?);
    let sim = build(config, url)?;
    let mut stop_rx = sim.closing.subscribe();
    let app = router(Arc::clone(&sim));
    let task = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::warn!(event = "sim_stopped", error = %err, "the CRM simulator stopped with an error");
        }
    });
    Ok(CrmSimHandle::new(sim, task))
}
