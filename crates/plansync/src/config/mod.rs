//! `plansync.toml`: where the two systems are, how to log in to them, the schedules, the
//! store and the engine's knobs.
//!
//! Two forms, as in ripgrep's `LowArgs`/`HiArgs`: the TOML text is walked once with every
//! span kept (`parse.rs`), and what comes out is a [`Config`] that has passed every check, so
//! code holding one never meets a bad URL, a 10 ms poll or a missing secret halfway through a
//! sync. Every problem in the file is reported at once, as `file:line:column` with a hint,
//! through the same renderer as rule files (`plansync_toml::diagnostic`).
//!
//! Secrets are never written in the file: only the name of an environment variable
//! (`*_env`) or of a file (`*_file`) holding them. They are read at load time into
//! [`Secret`], so `{:?}` of a `Config` shows `[redacted]`.

pub mod duration;
mod fuzz;
mod parse;
mod sources;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::anaplan::{AnaplanConfig, AuthMethod};
use crate::crm::cdc::Transport;
use crate::crm::{AuthConfig, CrmConfig};
use crate::engine::write::WriteRetry;
use crate::rules::FileErrors;

#[doc(hidden)]
pub use fuzz::config_parse;
pub use sources::{Sources, SystemSources};

/// Polls may not run more often than this: below it the CRM API budget and Anaplan's
/// 600 calls a minute go to polling instead of writing.
pub const MIN_POLL: Duration = Duration::from_secs(30);
/// Writes may wait at most this long to be batched: longer would look like a stall.
pub const MAX_BATCH_WINDOW: Duration = Duration::from_secs(10);
/// Shard tasks: at least one, and more than 64 only adds contention on the store.
pub const MAX_SHARDS: u64 = 64;

/// A validated `plansync.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    pub crm: CrmSettings,
    pub anaplan: AnaplanSettings,
    /// The directory of rule files (absolute, or relative to the working directory when the
    /// config path itself was relative).
    pub rules: PathBuf,
    /// The SQLite file.
    pub store: PathBuf,
    pub schedule: Schedule,
    pub engine: EngineSettings,
    pub http: HttpSettings,
    /// `[notify]`, when the file has one.
    pub notify: Option<crate::notify::NotifySettings>,
}

/// `[http]`: the address `plansync run` serves `/healthz`, `/readyz` and `/metrics` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// `None`: not served (`enabled = false`).
    pub address: Option<std::net::SocketAddr>,
}

impl HttpSettings {
    /// The port plansync listens on by default, on loopback.
    pub const DEFAULT_PORT: u16 = 8490;
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            address: Some(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                HttpSettings::DEFAULT_PORT,
            ))),
        }
    }
}

/// `[crm]`.
#[derive(Debug, Clone)]
pub struct CrmSettings {
    pub login_url: String,
    /// `62.0` style.
    pub api_version: String,
    /// Sent as `Sforce-Call-Options: client=<this>` so our writes are recognised in CDC.
    pub call_client_id: String,
    pub auth: AuthConfig,
    pub streaming: Transport,
    /// CDC channels; `None`: one `/data/<Object>ChangeEvent` per object the rules map.
    pub channels: Option<Vec<String>>,
    /// `http://` beyond loopback was opted into (see [`crate::endpoint`]).
    pub allow_insecure_http: bool,
    /// The share (0–50) of the org's daily API calls plansync leaves to others: below it,
    /// only scheduled polls run.
    pub api_reserve_percent: u8,
}

/// `[anaplan]`.
#[derive(Debug, Clone)]
pub struct AnaplanSettings {
    pub auth_url: String,
    /// Ends in `/2/0`.
    pub api_url: String,
    pub auth: AuthMethod,
    pub calls_per_minute: u32,
    /// `http://` beyond loopback was opted into (see [`crate::endpoint`]).
    pub allow_insecure_http: bool,
}

/// `[schedule]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub crm_poll: Duration,
    pub anaplan_poll: Duration,
    /// How far before the last watermark a CRM poll reads again, for commits that became
    /// visible late.
    pub lookback: Duration,
    /// The CRM poll's interval while the change stream is down (when shorter than
    /// `crm_poll`).
    pub crm_poll_while_stream_down: Duration,
}

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    pub shards: usize,
    pub batch_window: Duration,
    /// Above this many cells a batch goes to Anaplan as a bulk import.
    pub transactional_max_cells: usize,
    /// At or above this many records a CRM update uses a Bulk API 2.0 job.
    pub crm_bulk_threshold: usize,
    /// A full CRM read (the first run, a re-read) of more records than this goes through a
    /// Bulk API 2.0 query job; 0: always REST.
    pub crm_bulk_query_above: usize,
    /// Pairing name → the import definition that loads its module from a CSV.
    pub bulk_imports: std::collections::BTreeMap<String, String>,
    /// Attempts the remote answered with a failure after which a write is given up as a
    /// `write_failed` exception.
    pub write_attempts: usize,
    /// Age of a write (since it was queued) past which its next failure is its last.
    pub write_give_up_after: Duration,
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found, each with its place in the file (render with
    /// `plansync_toml::diagnostic::render` or `one_line_each`).
    #[error(transparent)]
    Invalid(#[from] FileErrors),
}

impl EngineSettings {
    /// How a write answered "retry" is retried: these limits, on the engine's backoff.
    pub fn write_retry(&self) -> WriteRetry {
        WriteRetry {
            attempts: u32::try_from(self.write_attempts).unwrap_or(u32::MAX),
            give_up_after: self.write_give_up_after,
            ..WriteRetry::default()
        }
    }
}

impl Config {
    /// Reads and checks the file at `path`, taking secrets from the process environment and
    /// the files the config names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &SystemSources)
    }

    /// As [`Config::load`], with secrets looked up through `sources`.
    pub fn load_with(path: &Path, sources: &dyn Sources) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Config::parse(path, &text, sources)?)
    }

    /// Checks `text` as if read from `path` (relative paths in it resolve against the
    /// directory of `path`).
    pub fn parse(path: &Path, text: &str, sources: &dyn Sources) -> Result<Config, FileErrors> {
        parse::parse(path, text, sources)
    }

    /// The Anaplan client's configuration: connection and auth from the file, the rest at
    /// the client's documented defaults.
    pub fn anaplan_client_config(&self) -> AnaplanConfig {
        let mut c = AnaplanConfig::new(
            self.anaplan.auth_url.clone(),
            self.anaplan.api_url.clone(),
            self.anaplan.auth.clone(),
        );
        c.calls_per_minute = self.anaplan.calls_per_minute;
        c.allow_insecure_http = self.anaplan.allow_insecure_http;
        c
    }

    /// The CRM client's configuration.
    pub fn crm_client_config(&self) -> CrmConfig {
        let mut c = CrmConfig::new(
            self.crm.login_url.clone(),
            self.crm.api_version.clone(),
            self.crm.auth.clone(),
        );
        c.call_client_id = self.crm.call_client_id.clone();
        c.bulk_threshold = self.engine.crm_bulk_threshold;
        c.bulk_query_above = self.engine.crm_bulk_query_above as u64;
        c.allow_insecure_http = self.crm.allow_insecure_http;
        c
    }

    /// The CDC channels to subscribe to: the configured ones, or one change-event channel
    /// per CRM object in `objects` (the objects the rules map).
    pub fn cdc_channels<'a>(&self, objects: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        match &self.crm.channels {
            Some(channels) => channels.clone(),
            None => objects
                .into_iter()
                .map(crate::crm::cdc::channel::of_object)
                .collect(),
        }
    }
}
