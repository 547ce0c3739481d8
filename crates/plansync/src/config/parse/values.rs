//! Checked values shared by every section: durations, counts, URLs, paths and choices, each
//! against its range, with the problem pointing at the value.

use super::*;

impl Walk<'_> {
    /// A duration within `[min, max]`; the default when absent. Problems are recorded and the
    /// default returned, so the walk goes on.
    pub(super) fn duration(
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

    pub(super) fn count(
        &mut self,
        t: &Table<'_, '_>,
        key: &str,
        default: usize,
        min: u64,
        max: u64,
    ) -> usize {
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

    /// A base URL plansync will call (the one check: [`crate::endpoint::base_url`]), trailing
    /// slashes removed. `allow_insecure_http` is the section's own opt-in.
    pub(super) fn url(&mut self, s: Str, key: &str, allow_insecure_http: bool) -> Option<String> {
        match crate::endpoint::base_url(&s.value, allow_insecure_http) {
            Ok(url) => Some(url),
            Err(e) => {
                if e == crate::endpoint::EndpointError::Credentials {
                    self.inline_secrets.push(s.span.clone());
                }
                self.p.push(
                    Problem::new(s.span, format!("`{key}` {e}"))
                        .label("not a usable URL")
                        .help("write the full base URL, e.g. \"https://login.salesforce.com\""),
                );
                None
            }
        }
    }

    /// `allow_insecure_http = true`: the section's opt-in to `http://` beyond loopback.
    pub(super) fn allow_insecure_http(&mut self, t: &Table<'_, '_>) -> bool {
        t.bool(self.p, "allow_insecure_http")
            .is_some_and(|(b, _)| b)
    }

    /// A path key resolved against the config file's directory, or the default (resolved
    /// the same way) when absent.
    pub(super) fn path_or(
        &mut self,
        t: &Table<'_, '_>,
        key: &str,
        default: &str,
    ) -> Option<PathBuf> {
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

    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub(super) fn unknown_choice(&mut self, s: &Str, key: &str, choices: &[&str]) {
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

    pub(super) fn method(
        &mut self,
        t: &Table<'_, '_>,
        choices: &[&str],
        what: &str,
    ) -> Option<String> {
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
}
