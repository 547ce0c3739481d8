//! Rule files → a validated `Pairing`: the second stage of parsing. The first stage (the
//! TOML parser) gives a spanned document; this walk checks every key, type and cross
//! reference, collects every problem with its span, and builds the `RuleSet` types only when
//! there is none.
//!
//! The walk is split by the parts of a rule file, each checking its own: `pairing` (the
//! `[pairing]` and `[lifecycle]` sections, and the walk over the file that joins the parts),
//! `windows` (`[calendar]`, `[window.*]`), `fields` (`[[field]]`), `policy` (a field's or a
//! `when`'s settings), `overrides` (`[[field.when]]`) and `test_cases` (`[[test]]`). This module
//! holds what they share: the compiler, the key lists, literals, and reporting an unknown name
//! once.

mod fields;
mod overrides;
mod pairing;
mod policy;
mod test_cases;
mod windows;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc, Weekday};
use sha2::{Digest, Sha256};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::calendar::{Anchor, Calendar, Period, Window};
use super::decide::Action;
use super::ruleset::*;
use crate::model::{Decimal, ExceptionKind, Side, Value, ValueKind};
use plansync_toml::diagnostic::{FileErrors, Problem};
use plansync_toml::table::{Problems, Scalar, Str, Table, did_you_mean, scalar};

const ROOT_KEYS: &[&str] = &[
    "pairing",
    "lifecycle",
    "calendar",
    "window",
    "field",
    "test",
];
const PAIRING_KEYS: &[&str] = &["crm", "anaplan", "flags", "extra_crm_fields"];
const ANAPLAN_KEYS: &[&str] = &["workspace", "model", "list", "module"];
const LIFECYCLE_KEYS: &[&str] = &[
    "crm_delete",
    "deleted_flag",
    "crm_undelete",
    "anaplan_delete",
    "new_item",
];
const CALENDAR_KEYS: &[&str] = &["fiscal_year_start", "time_zone", "weekend", "holidays"];
const WINDOW_KEYS: &[&str] = &["last_business_days", "first_business_days", "of"];
const POLICY_KEYS: &[&str] = &[
    "owner",
    "on_violation",
    "on_conflict",
    "tie",
    "min",
    "max",
    "allowed",
    "max_length",
    "max_change_pct",
];
const FIELD_ONLY_KEYS: &[&str] = &[
    "crm",
    "anaplan",
    "anaplan_property",
    "type",
    "scale",
    "values",
    "map",
    "blank",
    "when",
];
const WHEN_ONLY_KEYS: &[&str] = &["id", "window", "record", "anaplan_flag"];
const TEST_KEYS: &[&str] = &[
    "name",
    "field",
    "at",
    "from",
    "value",
    "base",
    "other",
    "other_at",
    "in_flight",
    "held",
    "ours",
    "record",
    "flags",
    "expect",
    "last_ack",
];
const EXPECT_KEYS: &[&str] = &["action", "to", "value", "exception", "rule"];

/// Compiles one rule file's text. `name` is the pairing's name (the file stem).
pub fn compile_file(path: &Path, text: &str) -> Result<Pairing, FileErrors> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut problems = Problems::default();
    let (root, syntax) = DeTable::parse_recoverable(text);
    for err in syntax {
        let span = err.span().unwrap_or(0..0);
        problems.push(Problem::new(span, err.message().trim().to_string()).label("TOML syntax"));
    }
    let mut tests_not_run = 0;
    let pairing = if problems.0.is_empty() {
        let mut compiler = Compiler {
            p: &mut problems,
            text,
            tests_not_run: 0,
            once: BTreeMap::new(),
        };
        let pairing = compiler.pairing(&root, &name, path);
        tests_not_run = compiler.tests_not_run;
        compiler.label_repeats();
        pairing
    } else {
        None
    };
    match pairing {
        Some(pairing) if problems.0.is_empty() => Ok(pairing),
        _ => {
            let mut list = problems.0;
            list.sort_by_key(|p| (p.span.start, p.span.end));
            list.dedup();
            if list.is_empty() {
                list.push(Problem::new(0..0, "the rule file could not be compiled"));
            }
            Err(FileErrors {
                path: path.to_path_buf(),
                source_text: text.to_string(),
                problems: list,
                note: match tests_not_run {
                    0 => None,
                    1 => Some("its [[test]] case was not run, as the file did not compile".into()),
                    n => Some(format!(
                        "its {n} [[test]] cases were not run, as the file did not compile"
                    )),
                },
            })
        }
    }
}

struct Compiler<'p, 't> {
    p: &'p mut Problems,
    text: &'t str,
    /// `[[test]]` cases left unchecked because the definitions they test did not compile.
    tests_not_run: usize,
    /// Unknown names reported once each (a window, a field, a flag): by what was unknown,
    /// where the problem is and how many places name it.
    once: BTreeMap<String, Once>,
}

struct Once {
    index: usize,
    uses: usize,
    name: String,
}

/// How many `[[test]]` cases the file has.
fn count_tests(root: &Table<'_, '_>) -> usize {
    match root.get("test").map(|v| v.get_ref()) {
        Some(DeValue::Array(cases)) => cases.len(),
        Some(_) => 1,
        None => 0,
    }
}

/// What the field-level checks learnt about a field, needed by `when` and tests.
struct FieldInfo {
    kind: ValueKind,
    picklist: Option<Picklist>,
}

fn choice<T: Copy>(p: &mut Problems, s: &Str, key: &str, options: &[(&str, T)]) -> Option<T> {
    if let Some((_, v)) = options.iter().find(|(name, _)| *name == s.value) {
        return Some(*v);
    }
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let mut problem = Problem::new(
        s.span.clone(),
        format!("`{}` is not a valid `{key}`", s.value),
    )
    .label(format!("expected one of: {}", names.join(", ")));
    if let Some(guess) = did_you_mean(&s.value, &names) {
        problem = problem.help(format!("did you mean `{guess}`?"));
    }
    p.push(problem);
    None
}

const SIDES: &[(&str, Side)] = &[("crm", Side::Crm), ("anaplan", Side::Anaplan)];

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Compiler<'_, '_> {
    /// A value written in the rule file, normalised to `kind`.
    fn literal(&mut self, value: &Spanned<DeValue<'_>>, kind: ValueKind) -> Option<Value> {
        let text = match scalar(value) {
            Some(Scalar::Str(s) | Scalar::Number(s) | Scalar::Date(s)) => s,
            Some(Scalar::Bool(b)) => b.to_string(),
            None => {
                self.p.push(Problem::new(
                    value.span(),
                    format!(
                        "expected a value, found {}",
                        plansync_toml::table::describe(value)
                    ),
                ));
                return None;
            }
        };
        match Value::from_text(kind, &text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.p.push(
                    Problem::new(value.span(), e.to_string())
                        .label(format!("expected a {} value", kind.tag())),
                );
                None
            }
        }
    }

    /// Reports an unknown `name` (of a kind: "field", "window", "flag") once, at its first
    /// use: a typo in a definition is one error, not one per place that names it.
    fn report_once(&mut self, kind: &str, name: &str, problem: Problem) {
        let key = format!("{kind}:{name}");
        match self.once.get_mut(&key) {
            Some(once) => once.uses += 1,
            None => {
                self.once.insert(
                    key,
                    Once {
                        index: self.p.0.len(),
                        uses: 1,
                        name: name.to_string(),
                    },
                );
                self.p.push(problem);
            }
        }
    }

    /// Says, on each name reported once, how many places name it.
    fn label_repeats(&mut self) {
        for once in self.once.values() {
            if once.uses > 1
                && let Some(problem) = self.p.0.get_mut(once.index)
            {
                problem.label = Some(format!(
                    "`{}` is named here and in {} more place{}",
                    once.name,
                    once.uses - 1,
                    if once.uses == 2 { "" } else { "s" }
                ));
            }
        }
    }
}

/// What a `when` may refer to.
struct Scope<'a> {
    windows: &'a [Window],
    /// Every window the file defines, also those that did not compile (reported already).
    window_names: BTreeSet<String>,
    /// `[pairing] flags` was written but could not be read.
    flags_unreadable: bool,
    /// Mapped fields whose type could not be read.
    untyped: BTreeSet<String>,
    /// Some `[[field]]`'s CRM name could not be read.
    names_unreadable: bool,
    record_kinds: &'a BTreeMap<String, FieldInfo>,
    flags: &'a BTreeSet<String>,
}

fn all_field_keys() -> Vec<&'static str> {
    let mut keys = FIELD_ONLY_KEYS.to_vec();
    keys.extend_from_slice(POLICY_KEYS);
    keys
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
