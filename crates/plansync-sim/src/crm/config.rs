//! What a simulated org is started with: connected apps, JWT keys, timeouts, limits and the seed.

use std::time::Duration;

use crate::Secret;

use super::seed::Seed;

/// The connected app `plansync sim crm` accepts when none is given.
pub const DEFAULT_CLIENT_ID: &str = "plansync-demo";
/// Its secret (a demo value, documented in the CLI help).
pub const DEFAULT_CLIENT_SECRET: &str = "demo-secret";

#[derive(Debug, Clone)]
pub struct CrmSimConfig {
    /// Connected apps: consumer key and secret. JWT assertions must name one as `iss`.
    pub clients: Vec<(String, Secret)>,
    /// Public keys (SPKI `PUBLIC KEY` PEM) or certificates (`CERTIFICATE` PEM) that JWT bearer
    /// assertions may be signed with.
    pub jwt_public_keys_pem: Vec<String>,
    /// Accepted JWT `aud` values besides the instance URL.
    pub jwt_audiences: Vec<String>,
    pub token_ttl: Duration,
    /// How long change events are kept for replay.
    pub retention: Duration,
    /// How long `/meta/connect` is held when there is nothing to deliver (advice timeout).
    pub connect_timeout: Duration,
    /// A streaming client that does not reconnect within this time loses its session.
    pub session_idle_timeout: Duration,
    /// API requests allowed per 24 hours.
    pub daily_limit: u64,
    /// Records per query page unless `Sforce-Query-Options: batchSize=N` asks for fewer.
    pub query_batch_size: usize,
    /// At most this many events in one `/meta/connect` reply.
    pub max_events_per_connect: usize,
    /// A transaction with more changes than this ends in `GAP_OVERFLOW` events.
    pub overflow_threshold: usize,
    pub seed: Seed,
    /// The token `/__sim/` requests must carry (`X-Sim-Token`); `None` (or empty): a random
    /// one per start, which the handle tells.
    pub hooks_token: Option<Secret>,
}

impl Default for CrmSimConfig {
    fn default() -> Self {
        CrmSimConfig {
            clients: vec![(
                DEFAULT_CLIENT_ID.to_string(),
                Secret::new(DEFAULT_CLIENT_SECRET),
            )],
            jwt_public_keys_pem: Vec::new(),
            jwt_audiences: vec![
                "https://login.salesforce.com".into(),
                "https://test.salesforce.com".into(),
            ],
            token_ttl: Duration::from_secs(2 * 3600),
            retention: Duration::from_secs(72 * 3600),
            connect_timeout: Duration::from_secs(110),
            session_idle_timeout: Duration::from_secs(40),
            daily_limit: 100_000,
            query_batch_size: 2000,
            max_events_per_connect: 2000,
            overflow_threshold: 100_000,
            seed: Seed::default_org(),
            hooks_token: None,
        }
    }
}
