//! The walk over `plansync.toml`: every section and key checked against what is allowed
//! there, every value against its range, every secret looked up; all problems collected with
//! their spans, none stops the walk.

mod secrets;
mod systems;
mod values;

use systems::{ANAPLAN_KEYS, CRM_KEYS};

use std::collections::BTreeMap;
use std::env::VarError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::anaplan::{AuthMethod, CertFormat};
use crate::crm::AuthConfig;
use crate::crm::cdc::Transport;
use crate::engine::write::WriteRetry;
use crate::notify::NotifySettings;
use crate::rules::FileErrors;
use crate::secret::Secret;
use plansync_toml::diagnostic::Problem;
use plansync_toml::table::{Problems, Str, Table, did_you_mean};

use super::duration::{format_duration, parse_duration};
use super::{
    AnaplanSettings, Config, CrmSettings, EngineSettings, HttpSettings, MAX_BATCH_WINDOW,
    MAX_SHARDS, MIN_POLL, Schedule, Sources,
};

const ROOT_KEYS: &[&str] = &[
    "crm", "anaplan", "rules", "store", "schedule", "engine", "http", "notify",
];
const NOTIFY_KEYS: &[&str] = &[
    "webhook_url_env",
    "webhook_url_file",
    "stream_down_after",
    "outbox_older_than",
    "repeat_after",
    "allow_insecure_http",
    // Refused with its own message.
    "webhook_url",
];
const HTTP_KEYS: &[&str] = &["address", "enabled"];
const SCHEDULE_KEYS: &[&str] = &[
    "crm_poll",
    "anaplan_poll",
    "lookback",
    "crm_poll_while_stream_down",
];
const ENGINE_KEYS: &[&str] = &[
    "shards",
    "batch_window",
    "transactional_max_cells",
    "crm_bulk_threshold",
    "crm_bulk_query_above",
    "bulk_imports",
    "write_attempts",
    "write_give_up_after",
];

const DEFAULT_POLL: Duration = Duration::from_secs(300);
const DEFAULT_LOOKBACK: Duration = Duration::from_secs(120);
const DEFAULT_POLL_STREAM_DOWN: Duration = Duration::from_secs(60);
const MAX_LOOKBACK: Duration = Duration::from_secs(24 * 3600);

pub(super) fn parse(path: &Path, text: &str, sources: &dyn Sources) -> Result<Config, FileErrors> {
    let mut problems = Problems::default();
    let (root, syntax) = DeTable::parse_recoverable(text);
    for err in syntax {
        let span = err.span().unwrap_or(0..0);
        problems.push(Problem::new(span, err.message().trim().to_string()).label("TOML syntax"));
    }
    let mut inline_secrets = Vec::new();
    let config = if problems.0.is_empty() {
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut walk = Walk {
            p: &mut problems,
            base,
            sources,
            inline_secrets: Vec::new(),
        };
        let config = walk.config(&root, path);
        inline_secrets = walk.inline_secrets;
        config
    } else {
        None
    };
    match config {
        Some(config) if problems.0.is_empty() => Ok(config),
        _ => {
            let mut list = problems.0;
            list.sort_by_key(|p| (p.span.start, p.span.end));
            list.dedup();
            if list.is_empty() {
                list.push(Problem::new(0..0, "the config file could not be read"));
            }
            Err(FileErrors {
                path: path.to_path_buf(),
                // The report shows the file's lines: a secret written into it is not repeated.
                source_text: secrets::masked(text, &inline_secrets),
                problems: list,
                note: None,
            })
        }
    }
}

struct Walk<'a> {
    p: &'a mut Problems,
    /// The config file's directory: relative paths in the file are relative to it, so the
    /// file means the same whatever directory plansync is started from.
    base: PathBuf,
    sources: &'a dyn Sources,
    /// Where the file holds secrets it should not (refused): masked in the report.
    inline_secrets: Vec<std::ops::Range<usize>>,
}

impl Walk<'_> {
    fn config(&mut self, root: &toml::Spanned<DeTable<'_>>, path: &Path) -> Option<Config> {
        let top = Table::root(self.p, root, ROOT_KEYS);
        let crm = match top.table(self.p, "crm", CRM_KEYS) {
            Some(t) => self.crm(&t),
            None => {
                if top.get("crm").is_none() {
                    top.missing(
                        self.p,
                        "crm",
                        "add a [crm] section: login_url and [crm.auth]",
                    );
                }
                None
            }
        };
        let anaplan = match top.table(self.p, "anaplan", ANAPLAN_KEYS) {
            Some(t) => self.anaplan(&t),
            None => {
                if top.get("anaplan").is_none() {
                    top.missing(
                        self.p,
                        "anaplan",
                        "add an [anaplan] section with [anaplan.auth]",
                    );
                }
                None
            }
        };
        let rules = self.path_or(&top, "rules", "rules");
        let store = self.path_or(&top, "store", "plansync.db");
        let schedule = match top.table(self.p, "schedule", SCHEDULE_KEYS) {
            Some(t) => self.schedule(&t),
            None => Schedule {
                crm_poll: DEFAULT_POLL,
                anaplan_poll: DEFAULT_POLL,
                lookback: DEFAULT_LOOKBACK,
                crm_poll_while_stream_down: DEFAULT_POLL_STREAM_DOWN,
            },
        };
        let engine = match top.table(self.p, "engine", ENGINE_KEYS) {
            Some(t) => self.engine(&t),
            None => default_engine(),
        };
        let http = match top.table(self.p, "http", HTTP_KEYS) {
            Some(t) => self.http(&t),
            None => Some(HttpSettings::default()),
        };
        let notify = match top.table(self.p, "notify", NOTIFY_KEYS) {
            Some(t) => self.notify(&t).map(Some),
            None if top.get("notify").is_some() => None,
            None => Some(None),
        };
        Some(Config {
            path: path.to_path_buf(),
            crm: crm?,
            anaplan: anaplan?,
            rules: rules?,
            store: store?,
            schedule,
            engine,
            http: http?,
            notify: notify?,
        })
    }

    /// `[notify]`: the webhook (a secret: its URL carries a token) and the thresholds.
    fn notify(&mut self, t: &Table<'_, '_>) -> Option<NotifySettings> {
        self.refuse_inline_secrets(t);
        let allow_insecure_http = self.allow_insecure_http(t);
        let url_span = t
            .get("webhook_url_env")
            .or_else(|| t.get("webhook_url_file"))
            .map(|v| v.span());
        let webhook = self.secret(t, "webhook_url", "the webhook's URL")?;
        if let Err(e) = crate::endpoint::webhook_url(webhook.expose(), allow_insecure_http) {
            // The URL itself is not repeated: it is the secret.
            self.p.push(
                Problem::new(
                    url_span.unwrap_or(t.span.clone()),
                    format!("the webhook's URL {e}"),
                )
                .label("from here")
                .help("give the full https URL of the webhook, e.g. a Slack incoming webhook"),
            );
            return None;
        }
        let day = Duration::from_secs(24 * 3600);
        let at_least = Duration::from_secs(1);
        Some(NotifySettings {
            webhook,
            stream_down_after: self.duration(
                t,
                "stream_down_after",
                NotifySettings::DEFAULT_STREAM_DOWN_AFTER,
                at_least,
                day,
            ),
            outbox_older_than: self.duration(
                t,
                "outbox_older_than",
                NotifySettings::DEFAULT_OUTBOX_OLDER_THAN,
                at_least,
                day,
            ),
            repeat_after: self.duration(
                t,
                "repeat_after",
                NotifySettings::DEFAULT_REPEAT_AFTER,
                at_least,
                day,
            ),
        })
    }

    /// `[http]`: where `plansync run` serves health and metrics; on, on loopback, by default.
    fn http(&mut self, t: &Table<'_, '_>) -> Option<HttpSettings> {
        let enabled = t.bool(self.p, "enabled").is_none_or(|(b, _)| b);
        let address = match t.str(self.p, "address") {
            None if t.get("address").is_some() => return None,
            None => HttpSettings::default().address,
            Some(s) => match s.value.trim().parse::<std::net::SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.p.push(
                        Problem::new(s.span, "`address` is not an IP address and port")
                            .label("not host:port")
                            .help("e.g. address = \"127.0.0.1:8490\" (port 0: any free port, logged at start)"),
                    );
                    return None;
                }
            },
        };
        Some(HttpSettings {
            address: if enabled { address } else { None },
        })
    }

    fn schedule(&mut self, t: &Table<'_, '_>) -> Schedule {
        let poll = |w: &mut Self, key: &str| {
            w.duration(
                t,
                key,
                DEFAULT_POLL,
                MIN_POLL,
                Duration::from_secs(24 * 3600),
            )
        };
        let crm_poll = poll(self, "crm_poll");
        let anaplan_poll = poll(self, "anaplan_poll");
        let lookback = self.duration(
            t,
            "lookback",
            DEFAULT_LOOKBACK,
            Duration::ZERO,
            MAX_LOOKBACK,
        );
        let crm_poll_while_stream_down = self.duration(
            t,
            "crm_poll_while_stream_down",
            DEFAULT_POLL_STREAM_DOWN,
            MIN_POLL,
            Duration::from_secs(24 * 3600),
        );
        Schedule {
            crm_poll,
            anaplan_poll,
            lookback,
            crm_poll_while_stream_down,
        }
    }

    fn engine(&mut self, t: &Table<'_, '_>) -> EngineSettings {
        let d = default_engine();
        EngineSettings {
            shards: self.count(t, "shards", d.shards, 1, MAX_SHARDS),
            batch_window: self.duration(
                t,
                "batch_window",
                d.batch_window,
                Duration::from_millis(1),
                MAX_BATCH_WINDOW,
            ),
            transactional_max_cells: self.count(
                t,
                "transactional_max_cells",
                d.transactional_max_cells,
                1,
                100_000_000,
            ),
            crm_bulk_threshold: self.count(
                t,
                "crm_bulk_threshold",
                d.crm_bulk_threshold,
                1,
                100_000_000,
            ),
            crm_bulk_query_above: self.count(
                t,
                "crm_bulk_query_above",
                d.crm_bulk_query_above,
                0,
                1_000_000_000,
            ),
            bulk_imports: self.bulk_imports(t),
            write_attempts: self.count(t, "write_attempts", d.write_attempts, 1, 1000),
            write_give_up_after: self.duration(
                t,
                "write_give_up_after",
                d.write_give_up_after,
                Duration::from_secs(1),
                Duration::from_secs(30 * 24 * 3600),
            ),
        }
    }

    /// `bulk_imports = { <pairing> = "<import name>" }`: the import definition that loads a
    /// pairing's module from a CSV, for batches above `transactional_max_cells`.
    fn bulk_imports(&mut self, t: &Table<'_, '_>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(map) = t.map(self.p, "bulk_imports") else {
            return out;
        };
        for (pairing, value) in map.entries() {
            match value.get_ref() {
                DeValue::String(name) if !name.trim().is_empty() => {
                    out.insert(pairing.value, name.to_string());
                }
                _ => self.p.push(
                    Problem::new(
                        value.span(),
                        format!(
                            "`bulk_imports.{}` must be the name of an import definition",
                            pairing.value
                        ),
                    )
                    .label("expected a non-empty string")
                    .help("e.g. bulk_imports = { opportunity = \"Load Opportunities\" }"),
                ),
            }
        }
        out
    }

    // ---- value helpers ----
}

fn default_engine() -> EngineSettings {
    EngineSettings {
        shards: crate::engine::run::default_shards(),
        batch_window: Duration::from_millis(100),
        transactional_max_cells: 50_000,
        crm_bulk_threshold: 2_000,
        crm_bulk_query_above: 20_000,
        bulk_imports: BTreeMap::new(),
        write_attempts: WriteRetry::default().attempts as usize,
        write_give_up_after: WriteRetry::default().give_up_after,
    }
}
