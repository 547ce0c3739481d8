//! Secrets: never in the file itself; looked up from the environment or a file the config
//! names, certificates and keys checked as PEM, and nothing of their value in a problem.

use super::*;

/// Keys that would hold a secret in the file itself.
const INLINE_SECRETS: &[&str] = &[
    "client_secret",
    "private_key",
    "password",
    "token",
    "webhook_url",
];

/// `text` with every character inside `spans` but quotes and line ends replaced by `*`, byte
/// for byte, so every other problem's span still points at the same text.
pub(super) fn masked(text: &str, spans: &[std::ops::Range<usize>]) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        let hidden = spans.iter().any(|s| s.contains(&i)) && !matches!(c, '"' | '\'' | '\n' | '\r');
        if hidden {
            out.extend(std::iter::repeat_n('*', c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    out
}

impl Walk<'_> {
    /// A secret written into the file itself: refused, pointing at `*_env` and `*_file`.
    pub(super) fn refuse_inline_secrets(&mut self, t: &Table<'_, '_>) {
        for (key, value) in t.entries() {
            if INLINE_SECRETS.contains(&key.value.as_str()) {
                let k = &key.value;
                self.inline_secrets.push(value.span());
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
    pub(super) fn not_used_by(&mut self, t: &Table<'_, '_>, method: &str, used: &[&str]) {
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
    pub(super) fn secret(&mut self, t: &Table<'_, '_>, base: &str, what: &str) -> Option<Secret> {
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

    pub(super) fn secret_from_env(&mut self, key: &str, file_key: &str, e: Str) -> Option<Secret> {
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

    pub(super) fn secret_from_file(&mut self, key: &str, f: Str) -> Option<Secret> {
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

    pub(super) fn read_named_file(&mut self, key: &str, f: &Str) -> Option<String> {
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

    pub(super) fn certificate(&mut self, f: Str) -> Option<String> {
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
    pub(super) fn pem_key(&mut self, t: &Table<'_, '_>, base: &str, key: Secret) -> Option<Secret> {
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
