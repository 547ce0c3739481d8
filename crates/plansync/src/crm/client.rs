//! The client handle: configuration, the HTTP connection pool, the current access token and
//! the call counters, shared by every clone (and by the CDC listener, which authenticates
//! through it).

use std::sync::{Arc, Mutex};

use crate::crm::auth;
use crate::crm::config::CrmConfig;
use crate::crm::error::CrmError;
use crate::crm::stats::{CallStats, StatsSnapshot};
use crate::secret::Secret;

/// An access token and the instance it is good for.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: Secret,
    /// `https://acme.my.salesforce.com` (no trailing slash): API calls and the CDC endpoint
    /// live here.
    pub instance_url: String,
    /// Counts tokens fetched by this client, so a caller holding a stale token can tell
    /// whether someone else already replaced it.
    pub generation: u64,
}

/// The CRM client. Cheap to clone; clones share the token, the pool and the counters.
#[derive(Clone)]
pub struct CrmClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: CrmConfig,
    http: reqwest::Client,
    stats: CallStats,
    /// The current token. A std mutex: it is held only to clone or replace the `Arc`, never
    /// across an await.
    token: Mutex<Option<Arc<AccessToken>>>,
    /// Serialises token requests, so a burst of expired-session answers leads to one new
    /// token, not one per call. Held across the token request's await, hence tokio's mutex.
    refresh: tokio::sync::Mutex<u64>,
    /// Whether the CRM is out of reach, for how loud its failures are logged.
    outage: crate::outage::Outage,
    /// Whether the last token request was refused (the credentials).
    auth_refused: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for CrmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmClient")
            .field("login_url", &self.inner.config.login_url)
            .field("api_version", &self.inner.config.api_version)
            .finish_non_exhaustive()
    }
}

impl CrmClient {
    pub fn new(config: CrmConfig) -> Result<CrmClient, CrmError> {
        let login_url = crate::endpoint::base_url(&config.login_url, config.allow_insecure_http)
            .map_err(|e| CrmError::Config(format!("the login URL {e}")))?;
        if crate::endpoint::is_insecure(&login_url) {
            tracing::warn!(
                event = "insecure_transport",
                system = "crm",
                url = %login_url,
                "the CRM is reached over http:// beyond loopback (allow_insecure_http): credentials and data cross the network in clear text"
            );
        }
        if config.collection_chunk == 0 || config.collection_chunk > 200 {
            return Err(CrmError::Config(
                "collection_chunk must be between 1 and 200".into(),
            ));
        }
        // reqwest is built without a default TLS provider; installing ring twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| CrmError::Config(format!("HTTP client: {e}")))?;
        Ok(CrmClient {
            inner: Arc::new(Inner {
                config,
                http,
                stats: CallStats::new(),
                token: Mutex::new(None),
                refresh: tokio::sync::Mutex::new(0),
                outage: crate::outage::Outage::default(),
                auth_refused: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    pub fn config(&self) -> &CrmConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    pub fn call_stats(&self) -> &CallStats {
        &self.inner.stats
    }

    /// Whether the CRM answered the last call that tried to reach it (any answer but a
    /// 5xx): for readiness checks.
    pub fn reachable(&self) -> bool {
        !self.inner.outage.is_down()
    }

    /// Whether the CRM refused the credentials at the last token request (cleared by the
    /// next that succeeds).
    pub fn auth_refused(&self) -> bool {
        self.inner
            .auth_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn outage(&self) -> &crate::outage::Outage {
        &self.inner.outage
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The current token, fetching one if there is none yet.
    pub async fn token(&self) -> Result<Arc<AccessToken>, CrmError> {
        if let Some(t) = self.current() {
            return Ok(t);
        }
        let mut generation = self.inner.refresh.lock().await;
        if let Some(t) = self.current() {
            return Ok(t);
        }
        self.fetch(&mut generation).await
    }

    /// A new token because `stale` was refused (`INVALID_SESSION_ID`, a 401 on the stream).
    /// If another task already replaced `stale`, its token is returned without a new request.
    pub async fn reauthenticate(&self, stale: &AccessToken) -> Result<Arc<AccessToken>, CrmError> {
        let mut generation = self.inner.refresh.lock().await;
        if let Some(t) = self.current()
            && t.generation != stale.generation
        {
            return Ok(t);
        }
        self.inner.stats.reauth();
        self.fetch(&mut generation).await
    }

    fn current(&self) -> Option<Arc<AccessToken>> {
        match self.inner.token.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn fetch(&self, generation: &mut u64) -> Result<Arc<AccessToken>, CrmError> {
        let requested = auth::request_token(self).await;
        self.inner.auth_refused.store(
            matches!(requested, Err(CrmError::Auth { .. })),
            std::sync::atomic::Ordering::Relaxed,
        );
        let (token, instance_url) = requested?;
        // Checked before the token is ever sent there.
        let instance_url = crate::endpoint::instance_url(
            &instance_url,
            &self.inner.config.login_url,
            self.inner.config.allow_insecure_http,
        )
        .map_err(|e| CrmError::Config(format!("the token response's instance_url {e}")))?;
        *generation += 1;
        let fresh = Arc::new(AccessToken {
            token,
            instance_url,
            generation: *generation,
        });
        let mut slot = match self.inner.token.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// `/services/data/v59.0` — the prefix of every REST path.
    pub(crate) fn data_prefix(&self) -> String {
        format!("/services/data/v{}", self.inner.config.api_version)
    }
}
