//! The walk over `plansync.toml`: every section and key checked against what is allowed
//! there, every value against its range, every secret looked up; all problems collected with
//! their spans, none stops the walk.

use std::collections::BTreeMap;
use std::env::VarError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::anaplan::{AuthMethod, CertFormat};
use crate::crm::AuthConfig;
use crate::crm::cdc::Transport;
use crate::rules::FileErrors;
use crate::secret::Secret;
use plansync_toml::diagnostic::Problem;
use plansync_toml::table::{Problems, Str, Table, did_you_mean};

use super::duration::{format_duration, parse_duration};
use super::{
    AnaplanSettings, Config, CrmSettings, EngineSettings, MAX_BATCH_WINDOW, MAX_SHARDS, MIN_POLL,
    Schedule, Sources,
};

const ROOT_KEYS: &[&str] = &["crm", "anaplan", "rules", "store", "schedule", "engine"];
const CRM_KEYS: &[&str] = &[
    "login_url",
    "api_version",
    "client_id_for_call_options",
    "auth",
    "streaming",
    "channels",
];
const CRM_AUTH_KEYS: &[&str] = &[
    "method",
    "client_id",
    "client_secret_env",
    "client_secret_file",
    "username",
    "private_key_file",
    "private_key_env",
    "audience",
    // Refused with their own message, so listed here to avoid a second "unknown key".
    "client_secret",
    "private_key",
    "password",
    "token",
];
const ANAPLAN_KEYS: &[&str] = &["auth_url", "api_url", "auth", "calls_per_minute"];
const ANAPLAN_AUTH_KEYS: &[&str] = &[
    "method",
    "user",
    "password_env",
    "password_file",
    "certificate_file",
    "private_key_file",
    "private_key_env",
    "format",
    "token_env",
    "token_file",
    "password",
    "private_key",
    "token",
    "client_secret",
];
const SCHEDULE_KEYS: &[&str] = &["crm_poll", "anaplan_poll", "lookback"];
const ENGINE_KEYS: &[&str] = &[
    "shards",
    "batch_window",
    "transactional_max_cells",
    "crm_bulk_threshold",
    "bulk_imports",
];
/// Keys that would hold a secret in the file itself.
const INLINE_SECRETS: &[&str] = &["client_secret", "private_key", "password", "token"];

const DEFAULT_POLL: Duration = Duration::from_secs(300);
const DEFAULT_LOOKBACK: Duration = Duration::from_secs(120);
const MAX_LOOKBACK: Duration = Duration::from_secs(24 * 3600);

pub(super) fn parse(path: &Path, text: &str, sources: &dyn Sources) -> Result<Config, FileErrors> {
    let mut problems = Problems::default();
    let (root, syntax) = DeTable::parse_recoverable(text);
    for err in syntax {
        let span = err.span().unwrap_or(0..0);
        problems.push(Problem::new(span, err.message().trim().to_string()).label("TOML syntax"));
    }
    let config = if problems.0.is_empty() {
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        Walk {
            p: &mut problems,
            base,
            sources,
        }
        .config(&root, path)
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
                source_text: text.to_string(),
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
            },
        };
        let engine = match top.table(self.p, "engine", ENGINE_KEYS) {
            Some(t) => self.engine(&t),
            None => default_engine(),
        };
        Some(Config {
            path: path.to_path_buf(),
            crm: crm?,
            anaplan: anaplan?,
            rules: rules?,
            store: store?,
            schedule,
            engine,
        })
    }

    fn crm(&mut self, t: &Table<'_, '_>) -> Option<CrmSettings> {
        let login_url = t
            .required_str(
                self.p,
                "login_url",
                "e.g. login_url = \"https://login.salesforce.com\" or your My Domain URL",
            )
            .and_then(|s| self.url(s, "login_url"));
        let api_version = match t.str(self.p, "api_version") {
            Some(s) if is_api_version(&s.value) => Some(s.value),
            Some(s) => {
                self.p.push(
                    Problem::new(s.span, format!("`{}` is not a CRM API version", s.value))
                        .label("expected digits, a dot and digits")
                        .help("write it like api_version = \"62.0\""),
                );
                None
            }
            None => Some("62.0".to_string()),
        };
        let call_client_id = match t.str(self.p, "client_id_for_call_options") {
            Some(s) if valid_call_client(&s.value) => Some(s.value),
            Some(s) => {
                self.p.push(
                    Problem::new(s.span, "`client_id_for_call_options` must be a plain word")
                        .label("letters, digits, `_`, `-` and `.` only")
                        .help(
                            "it is sent as `Sforce-Call-Options: client=<this>`; e.g. \"plansync\"",
                        ),
                );
                None
            }
            None => Some("plansync".to_string()),
        };
        let auth = match t.table(self.p, "auth", CRM_AUTH_KEYS) {
            Some(a) => self.crm_auth(&a),
            None => {
                if t.get("auth").is_none() {
                    t.missing(
                        self.p,
                        "auth",
                        "add [crm.auth] with method = \"client_credentials\" or \"jwt_bearer\"",
                    );
                }
                None
            }
        };
        let streaming = match t.str(self.p, "streaming") {
            None => Some(Transport::WebSocket),
            Some(s) => match s.value.as_str() {
                "websocket" => Some(Transport::WebSocket),
                "long_polling" => Some(Transport::LongPolling),
                _ => {
                    self.unknown_choice(&s, "streaming", &["websocket", "long_polling"]);
                    None
                }
            },
        };
        let channels = match t.str_array(self.p, "channels") {
            None => Some(None),
            Some((list, span)) => {
                let mut ok = !list.is_empty();
                if list.is_empty() {
                    self.p.push(
                        Problem::new(span, "`channels` is empty")
                            .label("no channel to listen to")
                            .help("remove `channels` to derive them from the rules' objects"),
                    );
                }
                for c in &list {
                    if !c.value.starts_with("/data/") || c.value.len() <= "/data/".len() {
                        ok = false;
                        self.p.push(
                            Problem::new(
                                c.span.clone(),
                                format!("`{}` is not a change data capture channel", c.value),
                            )
                            .label("expected /data/<Entity>")
                            .help(
                                "e.g. \"/data/OpportunityChangeEvent\" or \"/data/ChangeEvents\"",
                            ),
                        );
                    }
                }
                ok.then(|| Some(list.into_iter().map(|s| s.value).collect()))
            }
        };
        Some(CrmSettings {
            login_url: login_url?,
            api_version: api_version?,
            call_client_id: call_client_id?,
            auth: auth?,
            streaming: streaming?,
            channels: channels?,
        })
    }

    fn crm_auth(&mut self, t: &Table<'_, '_>) -> Option<AuthConfig> {
        self.refuse_inline_secrets(t);
        let method = self.method(t, &["client_credentials", "jwt_bearer"], "[crm.auth]")?;
        let client_id = t.required_str(
            self.p,
            "client_id",
            "the connected app's consumer key: client_id = \"3MVG9...\"",
        );
        match method.as_str() {
            "client_credentials" => {
                self.not_used_by(
                    t,
                    &method,
                    &["client_id", "client_secret_env", "client_secret_file"],
                );
                let secret = self.secret(t, "client_secret", "the connected app's consumer secret");
                Some(AuthConfig::ClientCredentials {
                    client_id: client_id?.value,
                    client_secret: secret?,
                })
            }
            _ => {
                self.not_used_by(
                    t,
                    &method,
                    &[
                        "client_id",
                        "username",
                        "private_key_file",
                        "private_key_env",
                        "audience",
                    ],
                );
                let username = t.required_str(
                    self.p,
                    "username",
                    "the CRM user the integration runs as: username = \"integration@example.com\"",
                );
                let key = self.secret(
                    t,
                    "private_key",
                    "the connected app's PKCS#8 PEM private key",
                );
                let key = key.and_then(|k| self.pem_key(t, "private_key", k));
                let audience = t.str(self.p, "audience").map(|s| self.url(s, "audience"));
                let audience = match audience {
                    None => Some(None),
                    Some(a) => a.map(Some),
                };
                Some(AuthConfig::JwtBearer {
                    client_id: client_id?.value,
                    username: username?.value,
                    private_key_pem: key?,
                    audience: audience?,
                })
            }
        }
    }

    fn anaplan(&mut self, t: &Table<'_, '_>) -> Option<AnaplanSettings> {
        let auth_url = match t.str(self.p, "auth_url") {
            Some(s) => self.url(s, "auth_url"),
            None => Some("https://auth.anaplan.com".to_string()),
        };
        let api_url = match t.str(self.p, "api_url") {
            Some(s) => {
                let span = s.span.clone();
                self.url(s, "api_url").and_then(|u| {
                    if u.ends_with("/2/0") {
                        Some(u)
                    } else {
                        self.p.push(
                            Problem::new(span, "`api_url` must end with the API version /2/0")
                                .label("not a /2/0 base")
                                .help("e.g. api_url = \"https://api.anaplan.com/2/0\" (the 1.3 API is retired)"),
                        );
                        None
                    }
                })
            }
            None => Some("https://api.anaplan.com/2/0".to_string()),
        };
        let auth = match t.table(self.p, "auth", ANAPLAN_AUTH_KEYS) {
            Some(a) => self.anaplan_auth(&a),
            None => {
                if t.get("auth").is_none() {
                    t.missing(
                        self.p,
                        "auth",
                        "add [anaplan.auth] with method = \"basic\", \"certificate\" or \"token\"",
                    );
                }
                None
            }
        };
        let calls_per_minute = match t.uint(self.p, "calls_per_minute") {
            None => Some(600),
            Some((n, span)) => match u32::try_from(n) {
                Ok(n) if (1..=100_000).contains(&n) => Some(n),
                _ => {
                    self.p.push(
                        Problem::new(span, "`calls_per_minute` must be between 1 and 100000")
                            .label("out of range")
                            .help("Anaplan's default tenant budget is 600"),
                    );
                    None
                }
            },
        };
        Some(AnaplanSettings {
            auth_url: auth_url?,
            api_url: api_url?,
            auth: auth?,
            calls_per_minute: calls_per_minute?,
        })
    }

    fn anaplan_auth(&mut self, t: &Table<'_, '_>) -> Option<AuthMethod> {
        self.refuse_inline_secrets(t);
        let method = self.method(t, &["basic", "certificate", "token"], "[anaplan.auth]")?;
        match method.as_str() {
            "basic" => {
                self.not_used_by(t, &method, &["user", "password_env", "password_file"]);
                let user = t.required_str(
                    self.p,
                    "user",
                    "the Anaplan user name: user = \"integration@example.com\"",
                );
                let password = self.secret(t, "password", "the Anaplan user's password");
                Some(AuthMethod::Basic {
                    user: user?.value,
                    password: password?,
                })
            }
            "certificate" => {
                self.not_used_by(
                    t,
                    &method,
                    &[
                        "certificate_file",
                        "private_key_file",
                        "private_key_env",
                        "format",
                    ],
                );
                let cert = t
                    .required_str(
                        self.p,
                        "certificate_file",
                        "the PEM certificate registered with the tenant: certificate_file = \"anaplan.crt\"",
                    )
                    .and_then(|s| self.certificate(s));
                let key = self.secret(t, "private_key", "the certificate's PKCS#8 PEM private key");
                let key = key.and_then(|k| self.pem_key(t, "private_key", k));
                let format = match t.str(self.p, "format") {
                    None => Some(CertFormat::V2),
                    Some(s) => match s.value.as_str() {
                        "v2" => Some(CertFormat::V2),
                        "v1" => Some(CertFormat::V1),
                        _ => {
                            self.unknown_choice(&s, "format", &["v1", "v2"]);
                            None
                        }
                    },
                };
                Some(AuthMethod::Certificate {
                    cert_pem: cert?,
                    key_pem: key?,
                    format: format?,
                })
            }
            _ => {
                self.not_used_by(t, &method, &["token_env", "token_file"]);
                let token = self.secret(t, "token", "an Anaplan access token obtained elsewhere");
                Some(AuthMethod::Token(token?))
            }
        }
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
        Schedule {
            crm_poll,
            anaplan_poll,
            lookback,
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
            bulk_imports: self.bulk_imports(t),
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

    /// A duration within `[min, max]`; the default when absent. Problems are recorded and the
    /// default returned, so the walk goes on.
    fn duration(
        &mut self,
        t: &Table<'_, '_>,
        key: &str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let Some(value) = t.get(key) else {
            return default;
        };
        let Some(s) = t.str(self.p, key) else {
            // Not a string: say how durations are written rather than only "wrong type".
            self.p.push(
                Problem::new(value.span(), format!("`{key}` must be a duration string"))
                    .label("expected e.g. \"30s\"")
                    .help(format!(
                        "write it with a unit, e.g. {key} = \"{}\"",
                        format_duration(default)
                    )),
            );
            return default;
        };
        match parse_duration(&s.value) {
            Err(why) => {
                self.p.push(
                    Problem::new(s.span, format!("`{key}`: {why}"))
                        .label("not a duration")
                        .help("units: ms, s, m, h (e.g. \"250ms\", \"30s\", \"5m\", \"1h\")"),
                );
                default
            }
            Ok(d) if d < min => {
                self.p.push(
                    Problem::new(
                        s.span,
                        format!(
                            "`{key}` is {}, below the minimum of {}",
                            format_duration(d),
                            format_duration(min)
                        ),
                    )
                    .label("too short")
                    .help(format!("use {} or more", format_duration(min))),
                );
                default
            }
            Ok(d) if d > max => {
                self.p.push(
                    Problem::new(
                        s.span,
                        format!(
                            "`{key}` is {}, above the maximum of {}",
                            format_duration(d),
                            format_duration(max)
                        ),
                    )
                    .label("too long")
                    .help(format!("use {} or less", format_duration(max))),
                );
                default
            }
            Ok(d) => d,
        }
    }

    fn count(&mut self, t: &Table<'_, '_>, key: &str, default: usize, min: u64, max: u64) -> usize {
        match t.uint(self.p, key) {
            None => default,
            Some((n, span)) if n < min || n > max => {
                self.p.push(
                    Problem::new(span, format!("`{key}` must be between {min} and {max}"))
                        .label("out of range")
                        .help(format!("the default is {default}")),
                );
                default
            }
            Some((n, span)) => usize::try_from(n).unwrap_or_else(|_| {
                self.p
                    .push(Problem::new(span, format!("`{key}` is too large")));
                default
            }),
        }
    }

    /// An http(s) URL without query or fragment, trailing slashes removed.
    fn url(&mut self, s: Str, key: &str) -> Option<String> {
        let trimmed = s.value.trim().trim_end_matches('/');
        let problem = match reqwest::Url::parse(trimmed) {
            Err(e) => Some(format!("`{key}` is not a URL: {e}")),
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                Some(format!("`{key}` must be an http or https URL"))
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                Some(format!("`{key}` must not carry a query or fragment"))
            }
            Ok(_) => None,
        };
        match problem {
            Some(message) => {
                self.p.push(
                    Problem::new(s.span, message)
                        .label("not a usable URL")
                        .help("write the full base URL, e.g. \"https://login.salesforce.com\""),
                );
                None
            }
            None => Some(trimmed.to_string()),
        }
    }

    /// A path key resolved against the config file's directory, or the default (resolved
    /// the same way) when absent.
    fn path_or(&mut self, t: &Table<'_, '_>, key: &str, default: &str) -> Option<PathBuf> {
        match t.str(self.p, key) {
            None if t.get(key).is_some() => None,
            None => Some(self.resolve(default)),
            Some(s) if s.value.trim().is_empty() => {
                self.p.push(
                    Problem::new(s.span, format!("`{key}` is empty"))
                        .label("no path")
                        .help(format!("remove it to use the default \"{default}\"")),
                );
                None
            }
            Some(s) => Some(self.resolve(&s.value)),
        }
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn unknown_choice(&mut self, s: &Str, key: &str, choices: &[&str]) {
        let quoted: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
        let mut problem = Problem::new(
            s.span.clone(),
            format!("`{}` is not a valid `{key}`", s.value),
        )
        .label(format!("expected {}", quoted.join(" or ")));
        problem = match did_you_mean(&s.value, choices) {
            Some(guess) => problem.help(format!("did you mean \"{guess}\"?")),
            None => problem.help(format!("use one of {}", quoted.join(", "))),
        };
        self.p.push(problem);
    }

    fn method(&mut self, t: &Table<'_, '_>, choices: &[&str], what: &str) -> Option<String> {
        let quoted: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
        let s = t.required_str(
            self.p,
            "method",
            &format!("say how to log in: method = {}", quoted.join(" | ")),
        )?;
        if choices.contains(&s.value.as_str()) {
            Some(s.value)
        } else {
            self.unknown_choice(&s, &format!("method in {what}"), choices);
            None
        }
    }

    /// A secret written into the file itself: refused, pointing at `*_env` and `*_file`.
    fn refuse_inline_secrets(&mut self, t: &Table<'_, '_>) {
        for (key, value) in t.entries() {
            if INLINE_SECRETS.contains(&key.value.as_str()) {
                let k = &key.value;
                self.p.push(
                    Problem::new(
                        key.span.start..value.span().end,
                        format!("`{k}` would put a secret in the config file"),
                    )
                    .label("secrets are not read from the file")
                    .help(format!(
                        "remove it and use `{k}_env = \"VARIABLE\"` (an environment variable) or `{k}_file = \"path\"` (a file only plansync can read); then revoke this {k}, as it has been written down"
                    )),
                );
            }
        }
    }

    /// Keys present that the chosen `method` does not use: probably meant for another one.
    fn not_used_by(&mut self, t: &Table<'_, '_>, method: &str, used: &[&str]) {
        for (key, _) in t.entries() {
            let k = key.value.as_str();
            if k == "method" || used.contains(&k) || INLINE_SECRETS.contains(&k) {
                continue;
            }
            self.p.push(
                Problem::new(
                    key.span,
                    format!("`{k}` is not used by method \"{method}\""),
                )
                .label("ignored with this method")
                .help("remove it, or change `method`"),
            );
        }
    }

    /// `<base>_env` or `<base>_file`: exactly one, read now.
    fn secret(&mut self, t: &Table<'_, '_>, base: &str, what: &str) -> Option<Secret> {
        let env_key = format!("{base}_env");
        let file_key = format!("{base}_file");
        let env = t.str(self.p, &env_key);
        let file = t.str(self.p, &file_key);
        match (env, file) {
            (Some(_), Some(f)) => {
                self.p.push(
                    Problem::new(f.span, format!("both `{env_key}` and `{file_key}` are set"))
                        .label("second source of the same secret")
                        .help(format!(
                            "keep one of them: {what} comes from exactly one place"
                        )),
                );
                None
            }
            (None, None) => {
                if t.get(&env_key).is_none() && t.get(&file_key).is_none() {
                    t.missing(
                        self.p,
                        &env_key,
                        &format!(
                            "{what}: set `{env_key} = \"VARIABLE\"` or `{file_key} = \"path\"`"
                        ),
                    );
                }
                None
            }
            (Some(e), None) => self.secret_from_env(&env_key, &file_key, e),
            (None, Some(f)) => self.secret_from_file(&file_key, f),
        }
    }

    fn secret_from_env(&mut self, key: &str, file_key: &str, e: Str) -> Option<Secret> {
        let name = e.value.as_str();
        if name.is_empty() || name.contains(['=', '\0']) {
            self.p.push(
                Problem::new(e.span, format!("`{key}` must name an environment variable"))
                    .label("not a variable name")
                    .help("e.g. \"PLANSYNC_CRM_CLIENT_SECRET\""),
            );
            return None;
        }
        let (message, help) = match self.sources.env(name) {
            Ok(v) if v.is_empty() => (
                format!("environment variable `{name}` (from `{key}`) is set but empty"),
                format!("set {name} to the secret before starting plansync"),
            ),
            Ok(v) => return Some(Secret::new(v)),
            Err(VarError::NotPresent) => (
                format!("environment variable `{name}` (from `{key}`) is not set"),
                format!(
                    "set {name} in plansync's environment before starting it, or use `{file_key}` to read the secret from a file"
                ),
            ),
            Err(VarError::NotUnicode(_)) => (
                format!("environment variable `{name}` (from `{key}`) is not valid UTF-8"),
                format!("set {name} to the secret as UTF-8 text"),
            ),
        };
        self.p.push(
            Problem::new(e.span, message)
                .label("no secret here")
                .help(help),
        );
        None
    }

    fn secret_from_file(&mut self, key: &str, f: Str) -> Option<Secret> {
        let text = self.read_named_file(key, &f)?;
        // A trailing newline is how editors and `echo` end files; it is never part of the
        // secret.
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            let path = self.resolve(&f.value);
            self.p.push(
                Problem::new(f.span, format!("`{key}` file {} is empty", path.display()))
                    .label("no secret in this file")
                    .help("write the secret into the file"),
            );
            return None;
        }
        Some(Secret::new(value))
    }

    fn read_named_file(&mut self, key: &str, f: &Str) -> Option<String> {
        if f.value.trim().is_empty() {
            self.p.push(
                Problem::new(f.span.clone(), format!("`{key}` is empty"))
                    .label("no path")
                    .help("name the file, relative to this config file's directory or absolute"),
            );
            return None;
        }
        let path = self.resolve(&f.value);
        match self.sources.read(&path) {
            Ok(text) => Some(text),
            Err(e) => {
                self.p.push(
                    Problem::new(
                        f.span.clone(),
                        format!("cannot read `{key}` {}: {e}", path.display()),
                    )
                    .label("unreadable file")
                    .help(format!(
                        "check that the file exists and plansync may read it (relative paths are resolved against {})",
                        if self.base.as_os_str().is_empty() {
                            "the config file's directory".to_string()
                        } else {
                            self.base.display().to_string()
                        }
                    )),
                );
                None
            }
        }
    }

    fn certificate(&mut self, f: Str) -> Option<String> {
        let text = self.read_named_file("certificate_file", &f)?;
        if text.contains("-----BEGIN CERTIFICATE-----") {
            Some(text)
        } else {
            self.p.push(
                Problem::new(f.span, "`certificate_file` holds no PEM certificate")
                    .label("no BEGIN CERTIFICATE block")
                    .help("give the PEM file of the certificate registered with Anaplan"),
            );
            None
        }
    }

    /// The key must be PKCS#8 PEM: say so at load time, with the conversion command, rather
    /// than failing at the first login.
    fn pem_key(&mut self, t: &Table<'_, '_>, base: &str, key: Secret) -> Option<Secret> {
        if key.expose().contains("-----BEGIN PRIVATE KEY-----") {
            return Some(key);
        }
        let (name, span) = [format!("{base}_file"), format!("{base}_env")]
            .into_iter()
            .find_map(|k| t.get(&k).map(|v| (k, v.span())))
            .unwrap_or_else(|| (base.to_string(), t.span.clone()));
        let help = if key.expose().contains("-----BEGIN RSA PRIVATE KEY-----") {
            "this is a PKCS#1 key: convert it with `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.p8.pem`"
        } else {
            "give an unencrypted PKCS#8 PEM key (-----BEGIN PRIVATE KEY-----)"
        };
        self.p.push(
            Problem::new(
                span,
                format!("the key from `{name}` is not a PKCS#8 PEM private key"),
            )
            .label("not a BEGIN PRIVATE KEY block")
            .help(help),
        );
        None
    }
}

fn default_engine() -> EngineSettings {
    EngineSettings {
        shards: crate::engine::run::default_shards(),
        batch_window: Duration::from_millis(100),
        transactional_max_cells: 50_000,
        crm_bulk_threshold: 2_000,
        bulk_imports: BTreeMap::new(),
    }
}

fn is_api_version(v: &str) -> bool {
    match v.split_once('.') {
        Some((major, minor)) => {
            !major.is_empty()
                && !minor.is_empty()
                && major.bytes().all(|b| b.is_ascii_digit())
                && minor.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

fn valid_call_client(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
