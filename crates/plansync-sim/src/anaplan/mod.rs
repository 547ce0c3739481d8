//! A local Anaplan tenant over HTTP: the auth service (`/token/…`) and the Integration API
//! (`/2/0/…`, transactional and bulk) on one loopback port, written from the public reference
//! so that a third-party client works against it unchanged.
//!
//! Start it in-process with [`AnaplanSim::start`] on a bound listener (tests bind port 0), or
//! from the CLI (`plansync sim anaplan`). The tenant comes from a [`Seed`] (TOML, see
//! `seed.rs`; [`Seed::default_seed`] matches the project's rule files).
//!
//! Layout:
//! - `server.rs`: the single entry point: admin hooks, faults, rate limit, request log.
//! - `auth.rs`: tokens, Basic and CA-certificate authentication.
//! - `api/`: the route table and the transactional API; `bulk.rs`: files, definitions,
//!   tasks, dumps; `tasks.rs`: the per-model task queue and runner; `actions.rs`: what
//!   imports, exports and processes do; `large_read.rs`: read requests (large-volume reads
//!   of views and lists, in CSV pages).
//! - `model/`: the tenant's data, and building it from a seed; `formula.rs`: calculated line
//!   items; `seed.rs`: the seed.
//! - `wire.rs`, `scalar.rs`: envelope, paging, errors, request parsing.
//! - `faults.rs`, `conn.rs`, `admin.rs`: limits, injected faults, dropped connections, the
//!   `/__sim/…` hooks (which need the `X-Sim-Token` header, see [`crate::hooks_token`]).
//!
//! Behaviour worth knowing (decisions where the reference is silent):
//! - The rate limit (a token bucket of `rate_per_minute`, refilled at `rate_per_minute/60` a
//!   second) applies to `/2/0/…` calls only; auth calls are not limited.
//! - A running task holds the model lock: cell and list item writes get 409
//!   `{"status":{"code":409,"message":"Model or object busy, conflicting action, state
//!   mismatch"},…}`; reads are served.
//! - Unset number cells read as 0 and unset booleans as false, as in Anaplan.

// Handlers bail out with a ready `Response` as their error (`Result<T, Response>`); it is the
// cold path of a request, so its size does not matter.
#![allow(clippy::result_large_err)]

mod actions;
mod admin;
mod api;
mod auth;
mod bulk;
mod conn;
mod faults;
mod formula;
mod large_read;
mod model;
mod scalar;
mod seed;
mod server;
mod tasks;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use faults::{Faults, FaultsError, Kind, LoggedRequest, RequestCounts};
pub use model::{CellValue, ListItemView};
pub use seed::{
    DEFAULT_SEED_TOML, Seed, SeedError, SeedExport, SeedImport, SeedItem, SeedLineItem, SeedList,
    SeedModel, SeedModule, SeedProcess, SeedProperty, SeedValue, SeedView, SeedWorkspace,
};

use crate::Secret;
use server::{Shared, lock, model_lock};

/// The user the CLI and [`SimConfig::default`] configure.
pub const DEFAULT_USER: &str = "demo@plansync.local";
pub const DEFAULT_PASSWORD: &str = "demo";

/// How the simulator starts.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Users allowed to log in: e-mail and password (Basic), or a certificate naming the e-mail.
    pub users: Vec<(String, Secret)>,
    /// PEM certificates of the CAs whose certificates may log in.
    pub ca_certs_pem: Vec<String>,
    /// Token lifetime (Anaplan: 35 minutes).
    pub token_ttl: Duration,
    /// Tenant rate limit in calls per minute (0 = off).
    pub rate_per_minute: u32,
    pub faults: Faults,
    pub seed: Seed,
    /// How long a bulk task stays IN_PROGRESS before it is applied.
    pub task_step: Duration,
    /// At most this many cells per view read and list items per list read (Anaplan:
    /// 1,000,000); larger views and lists are read with read requests.
    pub max_read: usize,
    /// The largest page of a read request, in bytes.
    pub read_page_bytes: usize,
    /// How long a read request is IN_PROGRESS before it is COMPLETE.
    pub read_request_step: Duration,
    /// A read request not accessed for this long is gone (Anaplan: 30 minutes).
    pub read_request_ttl: Duration,
    /// The token `/__sim/` requests must carry (`X-Sim-Token`); `None` (or empty): a random
    /// one per start, which the handle tells.
    pub hooks_token: Option<Secret>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            users: vec![(DEFAULT_USER.to_string(), Secret::new(DEFAULT_PASSWORD))],
            ca_certs_pem: Vec::new(),
            token_ttl: Duration::from_secs(35 * 60),
            rate_per_minute: 600,
            faults: Faults::default(),
            seed: Seed::default_seed(),
            task_step: server::DEFAULT_TASK_STEP,
            max_read: api::MAX_READ,
            read_page_bytes: 10 * 1024 * 1024,
            read_request_step: Duration::from_millis(200),
            read_request_ttl: Duration::from_secs(30 * 60),
            hooks_token: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error(transparent)]
    Certificate(#[from] auth::AuthConfigError),
    #[error("invalid faults: {0}")]
    Faults(#[from] FaultsError),
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
}

pub struct AnaplanSim;

impl AnaplanSim {
    /// Builds the tenant and serves it on `listener` until [`SimHandle::shutdown`].
    pub async fn start(config: SimConfig, listener: TcpListener) -> Result<SimHandle, SimError> {
        let addr = listener.local_addr().map_err(SimError::Listener)?;
        config.faults.validate()?;
        let tenant = Arc::new(model::build(&config.seed)?);
        for slot in &tenant.models {
            model_lock(&slot.data).tasks.step = config.task_step;
        }
        let users = config
            .users
            .iter()
            .map(|(e, p)| auth::User::new(e, p.clone()))
            .collect();
        let auth = auth::Auth::new(
            users,
            &config.ca_certs_pem,
            config.token_ttl,
            tenant.customer_guid.clone(),
        )?;
        let base = format!("http://{addr}");
        let shared = Arc::new(Shared {
            tenant: tenant.clone(),
            auth,
            faults: Mutex::new(faults::FaultState::new(config.faults.clone())),
            bucket: Mutex::new(faults::Bucket::new(config.rate_per_minute)),
            log: Mutex::new(faults::RequestLog::default()),
            base: base.clone(),
            hooks_token: crate::hooks_token::or_generate(config.hooks_token.as_ref()),
            max_read: config.max_read,
            reads: large_read::ReadRequests::new(large_read::ReadConfig {
                page_bytes: config.read_page_bytes,
                step: config.read_request_step,
                ttl: config.read_request_ttl,
            }),
        });
        let (stop, stopped) = watch::channel(false);
        let mut runners = Vec::new();
        for index in 0..tenant.models.len() {
            let slot = Arc::new(tasks::ModelSlotRef {
                tenant: tenant.clone(),
                index,
            });
            runners.push(tokio::spawn(tasks::run_model(
                slot,
                config.task_step,
                stopped.clone(),
            )));
        }
        let app = axum::Router::new()
            .fallback(server::entry)
            .with_state(shared.clone())
            .into_make_service_with_connect_info::<conn::ConnInfo>();
        let mut until = stopped.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(conn::KillableListener(listener), app).with_graceful_shutdown(
                async move {
                    let _ = until.wait_for(|s| *s).await;
                },
            );
            if let Err(e) = serve.await {
                tracing::warn!(event = "sim_stopped", error = %e, "the Anaplan simulator stopped with an error");
            }
        });
        Ok(SimHandle {
            shared,
            addr,
            stop,
            server,
            runners,
        })
    }

    /// Serves until `shutdown` completes (the mini-redis shape, for callers that own a signal).
    pub async fn run(
        config: SimConfig,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), SimError> {
        let handle = AnaplanSim::start(config, listener).await?;
        shutdown.await;
        handle.shutdown().await;
        Ok(())
    }
}

/// A running simulator: its URLs, introspection, and runtime fault control.
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    runners: Vec<JoinHandle<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:P`.
    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    /// The token `/__sim/` requests over HTTP must carry in `X-Sim-Token` (the handle's own
    /// methods need none).
    pub fn hooks_token(&self) -> &str {
        self.shared.hooks_token.expose()
    }

    /// The auth service's base (append `/token/authenticate`).
    pub fn auth_url(&self) -> String {
        self.shared.base.clone()
    }

    /// The Integration API's base: `http://127.0.0.1:P/2/0`.
    pub fn api_url(&self) -> String {
        format!("{}/2/0", self.shared.base)
    }

    /// A module's cells by item code (or name, for items without a code), then line item
    /// name; calculated line items included. `None` if the model or module does not exist.
    pub fn cells(
        &self,
        model: &str,
        module: &str,
    ) -> Option<BTreeMap<String, BTreeMap<String, CellValue>>> {
        let slot = self.shared.tenant.model(model)?;
        let md = model_lock(&slot.data);
        let m = md.find_module(module)?;
        Some(md.module_cells(m))
    }

    /// A list's items in index order (list by ID or name).
    pub fn list_items(&self, model: &str, list: &str) -> Option<Vec<ListItemView>> {
        let slot = self.shared.tenant.model(model)?;
        let md = model_lock(&slot.data);
        let l = md.find_list(list)?;
        Some(md.lists[l].snapshot())
    }

    /// Read requests held and not deleted (an expired one is not counted).
    pub fn read_requests(&self) -> usize {
        self.shared.reads.live()
    }

    pub fn request_counts(&self) -> RequestCounts {
        lock(&self.shared.log).counts.clone()
    }

    /// The most recent requests (up to 100,000), oldest first.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        lock(&self.shared.log).entries()
    }

    pub fn clear_request_log(&self) {
        lock(&self.shared.log).clear();
    }

    pub fn faults(&self) -> Faults {
        lock(&self.shared.faults).faults.clone()
    }

    /// Replaces the faults as given (an in-process caller is trusted; [`Faults::validate`]
    /// says whether they make sense, as `PUT /__sim/faults` checks).
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.shared.faults).set(faults);
    }

    /// Replaces the rate limit (a full bucket of `per_minute`; 0 turns it off).
    pub fn set_rate_per_minute(&self, per_minute: u32) {
        *lock(&self.shared.bucket) = faults::Bucket::new(per_minute);
    }

    /// Refuses every sign-in as bad credentials (as after a password change) while `refuse`;
    /// live tokens keep working until they expire.
    pub fn refuse_credentials(&self, refuse: bool) {
        self.shared
            .auth
            .refuse_all
            .store(refuse, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes every live token expire now; returns how many there were.
    pub fn expire_tokens(&self) -> usize {
        self.shared.auth.expire_all()
    }

    /// Stops serving and the task runners, and waits for them.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        for r in self.runners {
            let _ = r.await;
        }
    }
}
