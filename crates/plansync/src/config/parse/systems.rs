//! The `[crm]` and `[anaplan]` sections: where each system is and how plansync signs in,
//! each method with only the keys it uses.

use super::*;

pub(super) const CRM_KEYS: &[&str] = &[
    "login_url",
    "api_version",
    "client_id_for_call_options",
    "auth",
    "streaming",
    "channels",
    "allow_insecure_http",
    "api_reserve_percent",
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
pub(super) const ANAPLAN_KEYS: &[&str] = &[
    "auth_url",
    "api_url",
    "auth",
    "calls_per_minute",
    "allow_insecure_http",
];
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

impl Walk<'_> {
    pub(super) fn crm(&mut self, t: &Table<'_, '_>) -> Option<CrmSettings> {
        let allow_insecure_http = self.allow_insecure_http(t);
        let login_url = t
            .required_str(
                self.p,
                "login_url",
                "e.g. login_url = \"https://login.salesforce.com\" or your My Domain URL",
            )
            .and_then(|s| self.url(s, "login_url", allow_insecure_http));
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
            allow_insecure_http,
            api_reserve_percent: u8::try_from(self.count(t, "api_reserve_percent", 10, 0, 50))
                .unwrap_or(10),
        })
    }

    pub(super) fn crm_auth(&mut self, t: &Table<'_, '_>) -> Option<AuthConfig> {
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
                let audience = t
                    .str(self.p, "audience")
                    .map(|s| self.url(s, "audience", true));
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

    pub(super) fn anaplan(&mut self, t: &Table<'_, '_>) -> Option<AnaplanSettings> {
        let allow_insecure_http = self.allow_insecure_http(t);
        let auth_url = match t.str(self.p, "auth_url") {
            Some(s) => self.url(s, "auth_url", allow_insecure_http),
            None => Some("https://auth.anaplan.com".to_string()),
        };
        let api_url = match t.str(self.p, "api_url") {
            Some(s) => {
                let span = s.span.clone();
                self.url(s, "api_url", allow_insecure_http).and_then(|u| {
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
            allow_insecure_http,
        })
    }

    pub(super) fn anaplan_auth(&mut self, t: &Table<'_, '_>) -> Option<AuthMethod> {
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
