//! A checked walk over a parsed TOML document that keeps every span and collects every
//! problem instead of stopping at the first: unknown keys (with a "did you mean"), wrong
//! types and missing keys are all reported in one check of the file.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::Problem;

/// The problems found so far in one file.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }
}

/// A string with the span it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str {
    pub value: String,
    pub span: Range<usize>,
}

/// One table of the document, with the keys a reader accepts in it checked on entry.
pub struct Table<'d, 'i> {
    pub span: Range<usize>,
    entries: &'d DeTable<'i>,
    /// What this table is called in messages, e.g. "[[field]]".
    pub what: String,
    /// The known keys its unknown keys were taken for (`ownr` → `owner`): a key reported as
    /// misspelt is not also reported as missing.
    misspelt: Vec<String>,
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The closest known key to a misspelt one, if it is close enough to be a typo.
pub fn did_you_mean<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl<'d, 'i> Table<'d, 'i> {
    /// Views `value` as a table whose keys must be among `known`; unknown keys are reported.
    pub fn new(
        problems: &mut Problems,
        value: &'d Spanned<DeValue<'i>>,
        what: &str,
        known: &[&str],
    ) -> Option<Table<'d, 'i>> {
        match value.get_ref() {
            DeValue::Table(entries) => {
                let mut table = Table {
                    span: value.span(),
                    entries,
                    what: what.to_string(),
                    misspelt: Vec::new(),
                };
                table.check_keys(problems, known);
                Some(table)
            }
            other => {
                problems.push(
                    Problem::new(
                        value.span(),
                        format!("{what} must be a table, found {}", type_name(other)),
                    )
                    .label("expected a table"),
                );
                None
            }
        }
    }

    /// The document root.
    pub fn root(
        problems: &mut Problems,
        root: &'d Spanned<DeTable<'i>>,
        known: &[&str],
    ) -> Table<'d, 'i> {
        let mut table = Table {
            span: root.span(),
            entries: root.get_ref(),
            what: "the file".to_string(),
            misspelt: Vec::new(),
        };
        table.check_keys(problems, known);
        table
    }

    fn check_keys(&mut self, problems: &mut Problems, known: &[&str]) {
        for key in self.entries.keys() {
            let name: &str = key.get_ref();
            if known.contains(&name) {
                continue;
            }
            let mut problem =
                Problem::new(key.span(), format!("unknown key `{name}` in {}", self.what))
                    .label("not a known key here");
            problem = match did_you_mean(name, known) {
                Some(guess) => {
                    self.misspelt.push(guess.to_string());
                    problem.help(format!("did you mean `{guess}`?"))
                }
                None => problem.help(format!("the keys allowed here are: {}", known.join(", "))),
            };
            problems.push(problem);
        }
    }

    pub fn get(&self, key: &str) -> Option<&'d Spanned<DeValue<'i>>> {
        self.entries.get(key)
    }

    /// Whether an unknown key of this table was taken for a known one (a misspelling).
    pub fn has_misspelt(&self) -> bool {
        !self.misspelt.is_empty()
    }

    /// Whether the author wrote `key`: present (whatever its value), or misspelt as an
    /// unknown key already reported. A required key that is attempted is not also missing.
    pub fn attempted(&self, key: &str) -> bool {
        self.get(key).is_some() || self.misspelt.iter().any(|k| k == key)
    }

    pub fn entries(&self) -> impl Iterator<Item = (Str, &'d Spanned<DeValue<'i>>)> + '_ {
        self.entries.iter().map(|(k, v)| {
            (
                Str {
                    value: k.get_ref().to_string(),
                    span: k.span(),
                },
                v,
            )
        })
    }

    fn wrong_type(
        &self,
        problems: &mut Problems,
        key: &str,
        value: &Spanned<DeValue<'_>>,
        expected: &str,
    ) {
        problems.push(
            Problem::new(
                value.span(),
                format!(
                    "`{key}` in {} must be {expected}, found {}",
                    self.what,
                    type_name(value.get_ref())
                ),
            )
            .label(format!("expected {expected}")),
        );
    }

    /// Reports `key` as required here, unless the author wrote it (its bad value, or its
    /// misspelling, is the one error to report).
    pub fn missing(&self, problems: &mut Problems, key: &str, help: &str) {
        if self.attempted(key) {
            return;
        }
        problems.push(
            Problem::new(self.span.clone(), format!("{} has no `{key}`", self.what))
                .label(format!("`{key}` is required here"))
                .help(help.to_string()),
        );
    }

    pub fn str(&self, problems: &mut Problems, key: &str) -> Option<Str> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(Str {
                value: s.to_string(),
                span: value.span(),
            }),
            _ => {
                self.wrong_type(problems, key, value, "a string");
                None
            }
        }
    }

    pub fn required_str(&self, problems: &mut Problems, key: &str, help: &str) -> Option<Str> {
        if self.get(key).is_none() {
            self.missing(problems, key, help);
            return None;
        }
        self.str(problems, key)
    }

    /// A non-negative integer with its span.
    pub fn uint(&self, problems: &mut Problems, key: &str) -> Option<(u64, Range<usize>)> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Integer(i) => {
                match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
                    Ok(n) if n >= 0 => Some((n as u64, value.span())),
                    _ => {
                        problems.push(
                            Problem::new(
                                value.span(),
                                format!("`{key}` must be a whole number of 0 or more"),
                            )
                            .label("out of range"),
                        );
                        None
                    }
                }
            }
            _ => {
                self.wrong_type(problems, key, value, "a whole number");
                None
            }
        }
    }

    /// A number written as an integer or a float, as its literal text (so decimals are
    /// parsed exactly, never through `f64`).
    pub fn number(&self, problems: &mut Problems, key: &str) -> Option<Str> {
        let value = self.get(key)?;
        if let DeValue::Integer(i) = value.get_ref()
            && i.radix() != 10
        {
            problems.push(
                Problem::new(value.span(), format!("`{key}` must be written in decimal"))
                    .label("hexadecimal, octal and binary are not accepted here"),
            );
            return None;
        }
        number_literal(value).or_else(|| {
            self.wrong_type(problems, key, value, "a number");
            None
        })
    }

    pub fn bool(&self, problems: &mut Problems, key: &str) -> Option<(bool, Range<usize>)> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some((*b, value.span())),
            _ => {
                self.wrong_type(problems, key, value, "true or false");
                None
            }
        }
    }

    pub fn table(
        &self,
        problems: &mut Problems,
        key: &str,
        known: &[&str],
    ) -> Option<Table<'d, 'i>> {
        let value = self.get(key)?;
        Table::new(problems, value, &format!("`{key}`"), known)
    }

    /// A table whose keys are names chosen by the admin (windows, value maps, record
    /// predicates), so no key is unknown.
    pub fn map(&self, problems: &mut Problems, key: &str) -> Option<Table<'d, 'i>> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Table(entries) => Some(Table {
                span: value.span(),
                entries,
                what: format!("`{key}`"),
                misspelt: Vec::new(),
            }),
            _ => {
                self.wrong_type(problems, key, value, "a table");
                None
            }
        }
    }

    /// An array of strings; non-string items are reported and skipped.
    pub fn str_array(
        &self,
        problems: &mut Problems,
        key: &str,
    ) -> Option<(Vec<Str>, Range<usize>)> {
        let value = self.get(key)?;
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(problems, key, value, "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Str {
                    value: s.to_string(),
                    span: item.span(),
                }),
                other => problems.push(
                    Problem::new(
                        item.span(),
                        format!("`{key}` must hold strings only, found {}", type_name(other)),
                    )
                    .label("expected a string"),
                ),
            }
        }
        Some((out, value.span()))
    }

    /// An array of tables (`[[key]]`), each checked against `known`.
    pub fn table_array(
        &self,
        problems: &mut Problems,
        key: &str,
        what: &str,
        known: &[&str],
    ) -> Vec<Table<'d, 'i>> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(
                problems,
                key,
                value,
                &format!("an array of tables (write it as {what})"),
            );
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| Table::new(problems, item, what, known))
            .collect()
    }
}

/// The literal text of an integer or float value.
pub fn number_literal(value: &Spanned<DeValue<'_>>) -> Option<Str> {
    let text = match value.get_ref() {
        DeValue::Integer(i) if i.radix() == 10 => i.as_str().replace('_', ""),
        DeValue::Float(f) => f.as_str().replace('_', ""),
        _ => return None,
    };
    Some(Str {
        value: text,
        span: value.span(),
    })
}

/// A scalar written in the file (in a rule file: a value in a test case or a predicate), as text, with
/// what kind of literal it was.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Number(String),
    Bool(bool),
    Date(String),
}

pub fn scalar(value: &Spanned<DeValue<'_>>) -> Option<Scalar> {
    match value.get_ref() {
        DeValue::String(s) => Some(Scalar::Str(s.to_string())),
        DeValue::Boolean(b) => Some(Scalar::Bool(*b)),
        DeValue::Datetime(d) => Some(Scalar::Date(d.to_string())),
        DeValue::Integer(_) | DeValue::Float(_) => {
            number_literal(value).map(|s| Scalar::Number(s.value))
        }
        _ => None,
    }
}

pub fn describe(value: &Spanned<DeValue<'_>>) -> &'static str {
    type_name(value.get_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_keys_only() {
        let known = ["owner", "on_conflict", "anaplan"];
        assert_eq!(did_you_mean("ownr", &known), Some("owner"));
        assert_eq!(did_you_mean("on_conflit", &known), Some("on_conflict"));
        assert_eq!(did_you_mean("zzzzzz", &known), None);
    }
}
