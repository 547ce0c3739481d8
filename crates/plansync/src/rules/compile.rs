//! Rule files → a validated `Pairing`: the second stage of parsing. The first stage (the
//! TOML parser) gives a spanned document; this walk checks every key, type and cross
//! reference, collects every problem with its span, and builds the `RuleSet` types only when
//! there is none.

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

/// The policy settings written on a field or a `when`, before they are merged and checked.
#[derive(Default)]
struct PolicyParts {
    owner: Option<(Owner, Range<usize>)>,
    /// Some policy key was written (maybe misspelt) but gave no setting: its error is
    /// reported, and checks of how the settings fit together would only repeat it.
    broken: bool,
    /// Some policy key was written, even if none of them is valid.
    any_written: bool,
    on_violation: Option<(OnViolation, Range<usize>)>,
    on_conflict: Option<(&'static str, Range<usize>)>,
    tie: Option<(Side, Range<usize>)>,
    min: Option<(Decimal, Range<usize>)>,
    max: Option<(Decimal, Range<usize>)>,
    allowed: Option<(BTreeSet<String>, Range<usize>)>,
    max_change_pct: Option<(Decimal, Range<usize>)>,
}

impl PolicyParts {
    fn is_empty(&self) -> bool {
        self.owner.is_none()
            && self.on_violation.is_none()
            && self.on_conflict.is_none()
            && self.tie.is_none()
            && self.min.is_none()
            && self.max.is_none()
            && self.allowed.is_none()
            && self.max_change_pct.is_none()
    }
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
    fn pairing(&mut self, root: &Spanned<DeTable<'_>>, name: &str, path: &Path) -> Option<Pairing> {
        let root = Table::root(self.p, root, ROOT_KEYS);
        // A misspelt section moves what follows it: the `[[field.when]]`s after `[[fild]]`
        // join the field before, and a `[winow.x]` leaves its window undefined. Whatever
        // else would be reported follows from the misspelling, so it is reported alone.
        if root.has_misspelt() {
            self.tests_not_run = count_tests(&root);
            return None;
        }
        let Some(pairing_value) = root.get("pairing") else {
            self.p.push(
                Problem::new(0..0, "the file has no [pairing] section")
                    .help("start the file with [pairing], naming the CRM object and the Anaplan list and module"),
            );
            return None;
        };
        let pt = Table::new(self.p, pairing_value, "[pairing]", PAIRING_KEYS)?;
        let crm_object = pt.required_str(
            self.p,
            "crm",
            "name the CRM object, e.g. crm = \"Opportunity\"",
        );
        let anaplan = self.anaplan_target(&pt);
        let flags = pt
            .str_array(self.p, "flags")
            .map(|(v, _)| v)
            .unwrap_or_default();
        let extra = pt
            .str_array(self.p, "extra_crm_fields")
            .map(|(v, _)| v)
            .unwrap_or_default();
        let lifecycle = self.lifecycle(&root);
        let calendar = self.calendar(&root);
        let windows = self.windows(&root, &calendar);

        let field_tables = root.table_array(self.p, "field", "[[field]]", &all_field_keys());
        if field_tables.is_empty() && root.get("field").is_none() {
            self.p.push(
                Problem::new(pt.span.clone(), "the pairing maps no field")
                    .help("add a [[field]] section for each synced field"),
            );
        }
        let object = crm_object
            .as_ref()
            .map_or("?", |s| s.value.as_str())
            .to_string();
        let mut fields = Vec::new();
        let mut infos = BTreeMap::new();
        for ft in &field_tables {
            if let Some((rule, info)) = self.field(ft, &object) {
                infos.insert(rule.crm.clone(), info);
                fields.push(rule);
            }
        }
        self.check_duplicates(&field_tables);

        // The names a `when` may test: mapped fields (even one that failed its own checks,
        // so its `when`s are not misreported) and the declared extra fields.
        let mut record_kinds: BTreeMap<String, FieldInfo> = infos;
        let mut untyped = BTreeSet::new();
        let mut names_unreadable = false;
        for ft in &field_tables {
            let mut quiet = Problems::default();
            let mut shadow = Compiler {
                p: &mut quiet,
                text: self.text,
                tests_not_run: 0,
                once: BTreeMap::new(),
            };
            let crm = ft.str(shadow.p, "crm");
            let kind = shadow.kind(ft);
            match (&crm, kind) {
                (None, _) => names_unreadable = true,
                (Some(crm), None) => {
                    untyped.insert(crm.value.clone());
                }
                (Some(_), Some(_)) => {}
            }
            if let (Some(crm), Some(kind)) = (crm, kind) {
                let picklist = (kind == ValueKind::Picklist)
                    .then(|| shadow.picklist(ft))
                    .flatten();
                record_kinds
                    .entry(crm.value)
                    .or_insert(FieldInfo { kind, picklist });
            }
        }
        for extra in &extra {
            if record_kinds.contains_key(&extra.value) {
                self.p.push(
                    Problem::new(
                        extra.span.clone(),
                        format!("`{}` is already a mapped field", extra.value),
                    )
                    .help("only fields that are not synced need to be listed in extra_crm_fields"),
                );
            }
            record_kinds
                .entry(extra.value.clone())
                .or_insert(FieldInfo {
                    kind: ValueKind::Text,
                    picklist: None,
                });
        }
        let mut flag_names: BTreeSet<String> = flags.iter().map(|f| f.value.clone()).collect();
        for f in &fields {
            if f.kind == ValueKind::Boolean {
                flag_names.insert(f.anaplan.name().to_string());
            }
        }
        let scope = Scope {
            windows: &windows,
            window_names: root
                .get("window")
                .and_then(|w| match w.get_ref() {
                    DeValue::Table(t) => Some(t.keys().map(|k| k.get_ref().to_string()).collect()),
                    _ => None,
                })
                .unwrap_or_default(),
            flags_unreadable: pt.attempted("flags")
                && pt
                    .get("flags")
                    .is_none_or(|v| !matches!(v.get_ref(), DeValue::Array(_))),
            untyped,
            names_unreadable,
            record_kinds: &record_kinds,
            flags: &flag_names,
        };
        for ft in &field_tables {
            match fields.iter_mut().find(|f| f.span == ft.span) {
                Some(rule) => rule.overrides = self.overrides(ft, rule, &scope),
                // The field itself is broken; still report what is wrong in its `when`s.
                None => {
                    let mut known = WHEN_ONLY_KEYS.to_vec();
                    known.extend_from_slice(POLICY_KEYS);
                    for wt in ft.table_array(self.p, "when", "[[field.when]]", &known) {
                        self.conditions(&wt, &scope);
                    }
                }
            }
        }
        // A case of a definition that did not compile would only repeat its error (its
        // field "not mapped", its value "not a number"): the root is reported alone, and
        // the cases wait until the definitions compile.
        let tests = if self.p.0.is_empty() {
            self.tests(&root, &fields, &record_kinds)
        } else {
            self.tests_not_run = count_tests(&root);
            Vec::new()
        };

        if lifecycle.crm_delete == CrmDelete::Flag
            && let Some(flag) = &lifecycle.deleted_flag
            && fields.iter().any(|f| f.anaplan.name() == flag)
        {
            self.p.push(Problem::new(
                root.get("lifecycle").map_or(0..0, |v| v.span()),
                format!("deleted_flag `{flag}` is also a synced field; use a line item of its own"),
            ));
        }

        let (crm_object, anaplan) = (crm_object?, anaplan?);
        if !self.p.0.is_empty() {
            return None;
        }
        Some(Pairing {
            name: name.to_string(),
            path: path.to_path_buf(),
            hash: hex(&Sha256::digest(self.text.as_bytes())),
            crm_object: crm_object.value,
            anaplan,
            flags: flags.into_iter().map(|f| f.value).collect(),
            extra_crm_fields: extra.into_iter().map(|f| f.value).collect(),
            lifecycle,
            calendar,
            windows,
            fields,
            tests,
        })
    }

    fn anaplan_target(&mut self, pt: &Table<'_, '_>) -> Option<AnaplanTarget> {
        let Some(at) = pt.table(self.p, "anaplan", ANAPLAN_KEYS) else {
            if pt.get("anaplan").is_none() {
                pt.missing(
                    self.p,
                    "anaplan",
                    "add anaplan = { workspace = \"…\", model = \"…\", list = \"…\", module = \"…\" }",
                );
            }
            return None;
        };
        let mut get = |key: &str, help: &str| at.required_str(self.p, key, help);
        let workspace = get(
            "workspace",
            "the workspace id: 32 hex digits, from the Anaplan URL",
        );
        let model = get("model", "the model id: 32 hex digits, from the Anaplan URL");
        let list = get("list", "the list whose item codes are the CRM record ids");
        let module = get(
            "module",
            "the module whose line items hold the synced fields",
        );
        for id in [&workspace, &model].into_iter().flatten() {
            if !is_hex32(&id.value) {
                self.p.push(
                    Problem::new(
                        id.span.clone(),
                        format!("`{}` is not an Anaplan id", id.value),
                    )
                    .label("expected 32 hexadecimal digits")
                    .help("copy the id from the Anaplan URL or from GET /workspaces"),
                );
            }
        }
        for named in [&list, &module].into_iter().flatten() {
            if named.value.trim().is_empty() {
                self.p
                    .push(Problem::new(named.span.clone(), "the name is empty"));
            }
        }
        Some(AnaplanTarget {
            workspace: workspace?.value,
            model: model?.value,
            list: list?.value,
            module: module?.value,
        })
    }

    fn lifecycle(&mut self, root: &Table<'_, '_>) -> Lifecycle {
        let mut lc = Lifecycle::default();
        let Some(t) = root.table(self.p, "lifecycle", LIFECYCLE_KEYS) else {
            return lc;
        };
        let mut crm_delete_read = !t.attempted("crm_delete");
        if let Some(s) = t.str(self.p, "crm_delete") {
            let options = [
                ("delete_item", CrmDelete::DeleteItem),
                ("flag", CrmDelete::Flag),
                ("ignore", CrmDelete::Ignore),
            ];
            let chosen = choice(self.p, &s, "crm_delete", &options);
            crm_delete_read = chosen.is_some();
            lc.crm_delete = chosen.unwrap_or(lc.crm_delete);
        }
        if let Some(s) = t.str(self.p, "crm_undelete") {
            let options = [
                ("restore", CrmUndelete::Restore),
                ("ignore", CrmUndelete::Ignore),
            ];
            lc.crm_undelete =
                choice(self.p, &s, "crm_undelete", &options).unwrap_or(lc.crm_undelete);
        }
        if let Some(s) = t.str(self.p, "anaplan_delete") {
            let options = [
                ("exception", AnaplanDelete::Exception),
                ("recreate", AnaplanDelete::Recreate),
                ("delete_record", AnaplanDelete::DeleteRecord),
            ];
            lc.anaplan_delete =
                choice(self.p, &s, "anaplan_delete", &options).unwrap_or(lc.anaplan_delete);
        }
        if let Some(s) = t.str(self.p, "new_item") {
            let options = [
                ("hold", NewItem::Hold),
                ("seed_from_crm", NewItem::SeedFromCrm),
            ];
            lc.new_item = choice(self.p, &s, "new_item", &options).unwrap_or(lc.new_item);
        }
        let flag = t.str(self.p, "deleted_flag");
        match (&flag, lc.crm_delete) {
            // What crm_delete says is not known: its error is the one to fix.
            _ if !crm_delete_read => {}
            (None, CrmDelete::Flag) => t.missing(
                self.p,
                "deleted_flag",
                "crm_delete = \"flag\" needs the boolean line item to set: deleted_flag = \"CRM Deleted\"",
            ),
            (Some(f), CrmDelete::DeleteItem | CrmDelete::Ignore) => self.p.push(
                Problem::new(f.span.clone(), "deleted_flag is set but crm_delete is not \"flag\"")
                    .help("set crm_delete = \"flag\", or remove deleted_flag"),
            ),
            _ => {}
        }
        lc.deleted_flag = flag.map(|f| f.value);
        lc
    }

    fn calendar(&mut self, root: &Table<'_, '_>) -> Calendar {
        let mut cal = Calendar::default();
        let Some(t) = root.table(self.p, "calendar", CALENDAR_KEYS) else {
            return cal;
        };
        if let Some((month, span)) = t.uint(self.p, "fiscal_year_start") {
            if (1..=12).contains(&month) {
                cal.fiscal_year_start = month as u32;
            } else {
                self.p.push(
                    Problem::new(span, "fiscal_year_start must be a month number, 1 to 12").help(
                        "e.g. fiscal_year_start = 2 for a fiscal year starting on 1 February",
                    ),
                );
            }
        }
        if let Some(tz) = t.str(self.p, "time_zone") {
            match tz.value.parse() {
                Ok(zone) => cal.time_zone = zone,
                Err(_) => self.p.push(
                    Problem::new(tz.span, format!("`{}` is not a time zone", tz.value))
                        .help("use an IANA name such as America/New_York, Europe/London or UTC"),
                ),
            }
        }
        if let Some((days, _)) = t.str_array(self.p, "weekend") {
            cal.weekend.clear();
            for day in days {
                match day.value.parse::<Weekday>() {
                    Ok(wd) => {
                        cal.weekend.insert(wd);
                    }
                    Err(_) => self.p.push(
                        Problem::new(
                            day.span,
                            format!("`{}` is not a day of the week", day.value),
                        )
                        .help("write days as \"saturday\", \"sunday\", …"),
                    ),
                }
            }
            if cal.weekend.len() == 7 {
                self.p.push(Problem::new(
                    t.get("weekend").map_or(0..0, |v| v.span()),
                    "every day is a weekend day: no window could ever have a business day",
                ));
            }
        }
        if let Some(value) = t.get("holidays") {
            match value.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        match self.date(item) {
                            Some(d) => {
                                cal.holidays.insert(d);
                            }
                            None => self.p.push(
                                Problem::new(item.span(), "a holiday must be a date")
                                    .label("expected YYYY-MM-DD"),
                            ),
                        }
                    }
                }
                _ => self.p.push(
                    Problem::new(value.span(), "holidays must be an array of dates")
                        .help("holidays = [2026-12-25, 2027-01-01]"),
                ),
            }
        }
        cal
    }

    fn date(&self, value: &Spanned<DeValue<'_>>) -> Option<NaiveDate> {
        let text = match scalar(value)? {
            Scalar::Date(d) | Scalar::Str(d) => d,
            _ => return None,
        };
        NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok()
    }

    fn windows(&mut self, root: &Table<'_, '_>, calendar: &Calendar) -> Vec<Window> {
        let mut out = Vec::new();
        let Some(wt) = root.map(self.p, "window") else {
            return out;
        };
        for (name, value) in wt.entries() {
            let what = format!("[window.{}]", name.value);
            let Some(t) = Table::new(self.p, value, &what, WINDOW_KEYS) else {
                continue;
            };
            let last = t.uint(self.p, "last_business_days");
            let first = t.uint(self.p, "first_business_days");
            let (anchor, days) = match (last, first) {
                (Some(l), None) => (Anchor::Last, l),
                (None, Some(f)) => (Anchor::First, f),
                (Some(_), Some((_, span))) => {
                    self.p.push(
                        Problem::new(
                            span,
                            "a window is either the last or the first business days, not both",
                        )
                        .help("split it into two windows"),
                    );
                    continue;
                }
                (None, None) if t.attempted("first_business_days") => continue,
                (None, None) => {
                    t.missing(
                        self.p,
                        "last_business_days",
                        "e.g. last_business_days = 5 (or first_business_days = 3)",
                    );
                    continue;
                }
            };
            let period = match t.str(self.p, "of") {
                Some(s) => {
                    let options = [
                        ("fiscal_quarter", Period::FiscalQuarter),
                        ("fiscal_year", Period::FiscalYear),
                        ("month", Period::Month),
                    ];
                    match choice(self.p, &s, "of", &options) {
                        Some(p) => p,
                        None => continue,
                    }
                }
                None => {
                    t.missing(
                        self.p,
                        "of",
                        "of = \"fiscal_quarter\", \"fiscal_year\" or \"month\"",
                    );
                    continue;
                }
            };
            let (n, span) = days;
            if n == 0 || n > u64::from(period.max_window_days()) {
                self.p.push(
                    Problem::new(
                        span,
                        format!(
                            "a window of {n} business days does not fit in a {}",
                            period.as_str().replace('_', " ")
                        ),
                    )
                    .help(format!("use 1 to {}", period.max_window_days())),
                );
                continue;
            }
            let window = Window {
                name: name.value,
                anchor,
                business_days: n as u32,
                period,
            };
            if let Some(day) = period_without_room(calendar, &window) {
                let period_span = calendar.period_of(period, day);
                self.p.push(
                    Problem::new(span.clone(), format!(
                        "window `{}` does not fit in the {} from {} to {}: it has fewer business days",
                        window.name,
                        period.as_str().replace('_', " "),
                        period_span.first,
                        period_span.last
                    ))
                    .help("shorten the window, or check the calendar's weekend and holidays"),
                );
                continue;
            }
            out.push(window);
        }
        out
    }

    fn field(&mut self, ft: &Table<'_, '_>, object: &str) -> Option<(FieldRule, FieldInfo)> {
        let crm = ft.required_str(self.p, "crm", "name the CRM field, e.g. crm = \"Amount\"");
        let line_item = ft.str(self.p, "anaplan");
        let property = ft.str(self.p, "anaplan_property");
        let anaplan = match (line_item, property) {
            (Some(li), None) => Some(AnaplanField::LineItem(li.value)),
            (None, Some(pr)) => Some(AnaplanField::ListProperty(pr.value)),
            (Some(_), Some(pr)) => {
                self.p.push(
                    Problem::new(pr.span, "a field maps to a line item or a list property, not both")
                        .help("keep `anaplan` (a line item of the module) or `anaplan_property` (a property of the list)"),
                );
                None
            }
            (None, None) if ft.attempted("anaplan_property") => None,
            (None, None) => {
                ft.missing(self.p, "anaplan", "name the Anaplan line item, e.g. anaplan = \"Amount\" (or anaplan_property = \"…\")");
                None
            }
        };
        let kind = self.kind(ft);
        let picklist = match kind {
            Some(ValueKind::Picklist) => self.picklist(ft),
            // An unknown type is reported already; `values` may well be right.
            None => None,
            Some(_) => {
                for key in ["values", "map"] {
                    if let Some(v) = ft.get(key) {
                        self.p.push(
                            Problem::new(
                                v.span(),
                                format!("`{key}` applies only to picklist fields"),
                            )
                            .help("set type = \"picklist\", or remove it"),
                        );
                    }
                }
                None
            }
        };
        let blank = kind.and_then(|k| self.blank(ft, k));
        let parts = self.policy_parts(ft);
        let (crm, anaplan, kind, blank) = (crm?, anaplan?, kind?, blank?);
        let info = FieldInfo {
            kind,
            picklist: picklist.clone(),
        };
        let policy = self.policy(None, &parts, &info, &ft.span)?;
        Some((
            FieldRule {
                id: format!("{object}.{}", crm.value),
                crm: crm.value,
                anaplan,
                kind,
                picklist,
                blank,
                policy,
                overrides: Vec::new(),
                span: ft.span.clone(),
            },
            info,
        ))
    }

    fn kind(&mut self, ft: &Table<'_, '_>) -> Option<ValueKind> {
        let ty = ft.required_str(
            self.p,
            "type",
            "type = \"text\", \"number\", \"boolean\", \"date\" or \"picklist\"",
        )?;
        let options = [
            ("text", 0u8),
            ("number", 1),
            ("boolean", 2),
            ("date", 3),
            ("picklist", 4),
        ];
        let tag = choice(self.p, &ty, "type", &options)?;
        let scale = ft.uint(self.p, "scale");
        match (tag, scale) {
            (1, Some((s, span))) => {
                if s > u64::from(ValueKind::MAX_SCALE) {
                    self.p.push(Problem::new(
                        span,
                        format!("scale must be at most {}", ValueKind::MAX_SCALE),
                    ));
                    return None;
                }
                Some(ValueKind::Number { scale: s as u8 })
            }
            (1, None) => {
                if ft.get("scale").is_none() {
                    ft.missing(
                        self.p,
                        "scale",
                        "give the digits after the point: scale = 2 for currency, 0 for counts",
                    );
                }
                None
            }
            (_, Some((_, span))) => {
                self.p.push(
                    Problem::new(span, "`scale` applies only to number fields")
                        .help("remove it, or set type = \"number\""),
                );
                None
            }
            (0, None) => Some(ValueKind::Text),
            (2, None) => Some(ValueKind::Boolean),
            (3, None) => Some(ValueKind::Date),
            _ => Some(ValueKind::Picklist),
        }
    }

    /// `blank`: whether a CRM null and Anaplan's blank 0 / false are one value (see
    /// [`Blank`]). Only numbers and booleans have a blank Anaplan cannot tell from a value.
    fn blank(&mut self, ft: &Table<'_, '_>, kind: ValueKind) -> Option<Blank> {
        let Some(s) = ft.str(self.p, "blank") else {
            return Some(Blank::default());
        };
        let empty = match kind {
            ValueKind::Number { .. } => "zero",
            ValueKind::Boolean => "false",
            _ => {
                self.p.push(
                    Problem::new(s.span, "`blank` applies only to number and boolean fields")
                        .help("an empty Anaplan cell of text, dates and picklists already reads as no value: remove it"),
                );
                return None;
            }
        };
        choice(
            self.p,
            &s,
            "blank",
            &[(empty, Blank::Empty), ("distinct", Blank::Distinct)],
        )
    }

    fn picklist(&mut self, ft: &Table<'_, '_>) -> Option<Picklist> {
        let Some((values, span)) = ft.str_array(self.p, "values") else {
            if ft.get("values").is_none() {
                ft.missing(
                    self.p,
                    "values",
                    "list the CRM picklist values: values = [\"Prospecting\", \"Closed Won\"]",
                );
            }
            return None;
        };
        let mut pick = Picklist::default();
        for v in &values {
            if !pick.values.insert(v.value.clone()) {
                self.p.push(Problem::new(
                    v.span.clone(),
                    format!("`{}` is listed twice", v.value),
                ));
            }
        }
        if pick.values.is_empty() {
            self.p
                .push(Problem::new(span, "a picklist needs at least one value"));
            return None;
        }
        let mut unlisted = false;
        if let Some(map) = ft.map(self.p, "map") {
            let mut seen_targets: BTreeMap<String, Range<usize>> = BTreeMap::new();
            for (key, value) in map.entries() {
                let Some(DeValue::String(target)) = Some(value.get_ref()) else {
                    self.p.push(Problem::new(
                        value.span(),
                        "a value map entry must be a string: \"CRM value\" = \"Anaplan item\"",
                    ));
                    continue;
                };
                let target = target.to_string();
                if !pick.values.contains(&key.value) {
                    let names: Vec<&str> = pick.values.iter().map(String::as_str).collect();
                    let mut problem = Problem::new(
                        key.span.clone(),
                        format!("`{}` is not one of the picklist's values", key.value),
                    );
                    if let Some(guess) = did_you_mean(&key.value, &names) {
                        problem = problem.help(format!("did you mean `{guess}`?"));
                        if let Some(listed) = values.iter().find(|v| v.value == guess) {
                            problem = problem.also(listed.span.clone(), "listed here");
                        }
                    }
                    self.p.push(problem);
                    // Which spelling is the typo is for the author to say: the picklist is
                    // not used, so `when`s naming the value do not repeat this error.
                    unlisted = true;
                    continue;
                }
                if let Some(first) = seen_targets.get(&target) {
                    self.p.push(
                        Problem::new(value.span(), format!("two CRM values map to `{target}`"))
                            .also(first.clone(), "first mapped here")
                            .help("each Anaplan item may stand for one CRM value, or values read back from Anaplan would be ambiguous"),
                    );
                    continue;
                }
                seen_targets.insert(target.clone(), value.span());
                pick.to_anaplan.insert(key.value.clone(), target.clone());
                pick.from_anaplan.insert(target, key.value);
            }
            // A CRM value kept as-is must not collide with another value's Anaplan name.
            for v in &pick.values {
                if !pick.to_anaplan.contains_key(v)
                    && let Some(source) = pick.from_anaplan.get(v)
                {
                    self.p.push(
                        Problem::new(
                            map.span.clone(),
                            format!(
                                "`{source}` maps to `{v}`, which is also an unmapped CRM value"
                            ),
                        )
                        .help(format!("map `{v}` to a name of its own")),
                    );
                }
            }
        }
        (!unlisted).then_some(pick)
    }

    fn policy_parts(&mut self, t: &Table<'_, '_>) -> PolicyParts {
        let mut parts = PolicyParts {
            any_written: POLICY_KEYS.iter().any(|k| t.attempted(k)),
            ..PolicyParts::default()
        };
        if let Some(s) = t.str(self.p, "owner") {
            let options = [
                ("crm", Owner::Crm),
                ("anaplan", Owner::Anaplan),
                ("shared", Owner::Shared),
            ];
            parts.owner = choice(self.p, &s, "owner", &options).map(|o| (o, s.span));
        }
        if let Some(s) = t.str(self.p, "on_violation") {
            let options = [
                ("reject", OnViolation::Reject),
                ("revert", OnViolation::Revert),
            ];
            parts.on_violation = choice(self.p, &s, "on_violation", &options).map(|o| (o, s.span));
        }
        if let Some(s) = t.str(self.p, "on_conflict") {
            let options = [
                ("crm_wins", "crm_wins"),
                ("anaplan_wins", "anaplan_wins"),
                ("newest_wins", "newest_wins"),
                ("manual", "manual"),
            ];
            parts.on_conflict = choice(self.p, &s, "on_conflict", &options).map(|o| (o, s.span));
        }
        if let Some(s) = t.str(self.p, "tie") {
            parts.tie = choice(self.p, &s, "tie", SIDES).map(|o| (o, s.span));
        }
        for (key, slot) in [
            ("min", &mut parts.min),
            ("max", &mut parts.max),
            ("max_change_pct", &mut parts.max_change_pct),
        ] {
            if let Some(lit) = t.number(self.p, key) {
                match Decimal::parse(&lit.value, ValueKind::MAX_SCALE) {
                    Ok(d) => *slot = Some((d, lit.span)),
                    Err(e) => self.p.push(Problem::new(lit.span, format!("`{key}`: {e}"))),
                }
            }
        }
        if let Some((values, span)) = t.str_array(self.p, "allowed") {
            parts.allowed = Some((values.into_iter().map(|v| v.value).collect(), span));
        }
        let given = [
            ("owner", parts.owner.is_some()),
            ("on_violation", parts.on_violation.is_some()),
            ("on_conflict", parts.on_conflict.is_some()),
            ("tie", parts.tie.is_some()),
            ("min", parts.min.is_some()),
            ("max", parts.max.is_some()),
            ("max_change_pct", parts.max_change_pct.is_some()),
            ("allowed", parts.allowed.is_some()),
        ];
        parts.broken = given.iter().any(|(key, ok)| !ok && t.attempted(key));
        parts
    }

    /// Merges `parts` over `base` (the field's policy, for a `when`) and checks that the
    /// result is coherent.
    fn policy(
        &mut self,
        base: Option<&Policy>,
        parts: &PolicyParts,
        info: &FieldInfo,
        span: &Range<usize>,
    ) -> Option<Policy> {
        if parts.broken {
            return None;
        }
        let owner = match (&parts.owner, base) {
            (Some((o, _)), _) => *o,
            (None, Some(b)) => b.owner,
            (None, None) => {
                self.p.push(
                    Problem::new(span.clone(), "the field has no `owner`")
                        .label("owner is required")
                        .help("owner = \"crm\", \"anaplan\" or \"shared\""),
                );
                return None;
            }
        };
        let mut ok = true;
        let on_violation = match (&parts.on_violation, owner) {
            (Some((_, s)), Owner::Shared) => {
                self.p.push(
                    Problem::new(s.clone(), "on_violation applies only to owned fields; both sides may change a shared field")
                        .help("remove it, or make one side the owner"),
                );
                ok = false;
                OnViolation::Reject
            }
            (Some((v, _)), _) => *v,
            (None, _) => base.map_or(OnViolation::Reject, |b| b.on_violation),
        };
        let inherited_conflict = base.and_then(|b| b.on_conflict);
        let on_conflict = match (owner, &parts.on_conflict) {
            (Owner::Shared, Some((name, _))) => {
                let tie = parts
                    .tie
                    .as_ref()
                    .map(|(t, _)| *t)
                    .or(match inherited_conflict {
                        Some(ConflictPolicy::NewestWins { tie }) => Some(tie),
                        _ => None,
                    });
                match *name {
                    "crm_wins" => Some(ConflictPolicy::CrmWins),
                    "anaplan_wins" => Some(ConflictPolicy::AnaplanWins),
                    "manual" => Some(ConflictPolicy::Manual),
                    _ => match tie {
                        Some(tie) => Some(ConflictPolicy::NewestWins { tie }),
                        None => {
                            self.p.push(
                                Problem::new(parts.on_conflict.as_ref().map_or(span.clone(), |(_, s)| s.clone()),
                                    "newest_wins needs a tie-breaker")
                                    .help("add tie = \"crm\" or tie = \"anaplan\": Anaplan changes are dated by the poll that saw them, so equal times are common"),
                            );
                            ok = false;
                            None
                        }
                    },
                }
            }
            (Owner::Shared, None) => match inherited_conflict {
                // A `when` may change only the tie-breaker of an inherited newest_wins.
                Some(ConflictPolicy::NewestWins { tie }) => Some(ConflictPolicy::NewestWins {
                    tie: parts.tie.as_ref().map_or(tie, |(t, _)| *t),
                }),
                Some(p) => Some(p),
                None => {
                    self.p.push(
                        Problem::new(parts.owner.as_ref().map_or(span.clone(), |(_, s)| s.clone()),
                            "a shared field needs `on_conflict`")
                            .help("on_conflict = \"crm_wins\", \"anaplan_wins\", \"newest_wins\" or \"manual\""),
                    );
                    ok = false;
                    None
                }
            },
            (_, Some((_, s))) => {
                self.p.push(
                    Problem::new(
                        s.clone(),
                        format!(
                            "on_conflict applies only to shared fields; this one is owned by {}",
                            owner.as_str()
                        ),
                    )
                    .help("remove it, or set owner = \"shared\""),
                );
                ok = false;
                None
            }
            (_, None) => None,
        };
        if let Some((_, s)) = &parts.tie
            && !matches!(on_conflict, Some(ConflictPolicy::NewestWins { .. }))
        {
            self.p.push(Problem::new(
                s.clone(),
                "`tie` applies only with on_conflict = \"newest_wins\"",
            ));
            ok = false;
        }

        let mut validation = base.map(|b| b.validation.clone()).unwrap_or_default();
        let number_scale = match info.kind {
            ValueKind::Number { scale } => Some(scale),
            _ => None,
        };
        for (key, part, slot) in [
            ("min", &parts.min, &mut validation.min),
            ("max", &parts.max, &mut validation.max),
        ] {
            let Some((d, s)) = part else { continue };
            let Some(scale) = number_scale else {
                self.p.push(Problem::new(
                    s.clone(),
                    format!("`{key}` applies only to number fields"),
                ));
                ok = false;
                continue;
            };
            match d
                .rescale(scale)
                .filter(|r| r.rescale(ValueKind::MAX_SCALE) == Some(*d))
            {
                Some(r) => *slot = Some(r),
                None => {
                    self.p.push(Problem::new(s.clone(), format!("`{key}` has more digits after the point than the field's scale ({scale})")));
                    ok = false;
                }
            }
        }
        if let Some((d, s)) = &parts.max_change_pct {
            if number_scale.is_none() {
                self.p.push(Problem::new(
                    s.clone(),
                    "`max_change_pct` applies only to number fields",
                ));
                ok = false;
            } else if d.units <= 0 {
                self.p
                    .push(Problem::new(s.clone(), "`max_change_pct` must be above 0"));
                ok = false;
            } else {
                validation.max_change_pct = Some(*d);
            }
        }
        if let (Some(min), Some(max)) = (validation.min, validation.max)
            && min > max
        {
            let at = parts
                .max
                .as_ref()
                .or(parts.min.as_ref())
                .map_or(span.clone(), |(_, s)| s.clone());
            self.p.push(Problem::new(
                at,
                format!(
                    "min {} is above max {}: no value could pass",
                    min.shortest(),
                    max.shortest()
                ),
            ));
            ok = false;
        }
        if let Some((allowed, s)) = &parts.allowed {
            match info.kind {
                ValueKind::Text | ValueKind::Picklist if allowed.is_empty() => {
                    self.p.push(Problem::new(
                        s.clone(),
                        "an empty `allowed` list rejects every value",
                    ));
                    ok = false;
                }
                ValueKind::Text => validation.allowed = Some(allowed.clone()),
                ValueKind::Picklist => match &info.picklist {
                    Some(pick) if allowed.is_subset(&pick.values) => {
                        validation.allowed = Some(allowed.clone())
                    }
                    _ => {
                        self.p.push(
                            Problem::new(
                                s.clone(),
                                "`allowed` names values that are not in the picklist",
                            )
                            .help("allowed values must be among `values`"),
                        );
                        ok = false;
                    }
                },
                _ => {
                    self.p.push(
                        Problem::new(
                            s.clone(),
                            "`allowed` applies only to text and picklist fields",
                        )
                        .help("use min and max for numbers"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(Policy {
            owner,
            on_violation,
            on_conflict,
            validation,
        })
    }

    fn overrides(
        &mut self,
        ft: &Table<'_, '_>,
        field: &FieldRule,
        scope: &Scope<'_>,
    ) -> Vec<Override> {
        let mut known = WHEN_ONLY_KEYS.to_vec();
        known.extend_from_slice(POLICY_KEYS);
        let whens = ft.table_array(self.p, "when", "[[field.when]]", &known);
        let mut out: Vec<(Override, Range<usize>)> = Vec::new();
        let info = FieldInfo {
            kind: field.kind,
            picklist: field.picklist.clone(),
        };
        let mut ids: BTreeMap<String, Range<usize>> = BTreeMap::new();
        for (i, wt) in whens.iter().enumerate() {
            let id = match wt.str(self.p, "id") {
                Some(s) => {
                    if let Some(first) = ids.get(&s.value) {
                        self.p.push(
                            Problem::new(s.span.clone(), format!("two `when`s of {} are named `{}`", field.id, s.value))
                                .also(first.clone(), "first named here")
                                .help("the id names the rule in every decision it makes: give each its own"),
                        );
                    }
                    ids.insert(s.value.clone(), s.span.clone());
                    format!("{}.when.{}", field.id, s.value)
                }
                None => format!("{}.when[{i}]", field.id),
            };
            let conditions = self.conditions(wt, scope);
            let parts = self.policy_parts(wt);
            if parts.is_empty() && !parts.any_written {
                self.p.push(
                    Problem::new(wt.span.clone(), "this `when` changes nothing")
                        .help("give it owner, on_violation, on_conflict, tie, min, max, allowed or max_change_pct"),
                );
            }
            let Some(conditions) = conditions else {
                continue;
            };
            let Some(policy) = self.policy(Some(&field.policy), &parts, &info, &wt.span) else {
                continue;
            };
            if let Some((earlier, span)) = out
                .iter()
                .find(|(e, _)| implies(&conditions, &e.conditions))
            {
                self.p.push(
                    Problem::new(
                        wt.span.clone(),
                        format!(
                            "this `when` can never match: `{}` above matches whenever it would",
                            earlier.id
                        ),
                    )
                    .also(span.clone(), "this one matches first")
                    .help("the first matching `when` wins: put the narrower one first"),
                );
                continue;
            }
            out.push((
                Override {
                    id,
                    conditions,
                    policy,
                },
                wt.span.clone(),
            ));
        }
        out.into_iter().map(|(o, _)| o).collect()
    }

    fn conditions(&mut self, wt: &Table<'_, '_>, scope: &Scope<'_>) -> Option<Vec<Condition>> {
        let mut out = Vec::new();
        let mut ok = true;
        if let Some(w) = wt.str(self.p, "window") {
            if scope.windows.iter().any(|x| x.name == w.value) {
                out.push(Condition::Window(w.value));
            } else if scope.window_names.contains(&w.value) {
                ok = false;
            } else {
                let names: Vec<&str> = scope.windows.iter().map(|x| x.name.as_str()).collect();
                let help = match did_you_mean(&w.value, &names) {
                    Some(g) => format!("did you mean `{g}`?"),
                    None => format!(
                        "define it: [window.{}] with last_business_days and of",
                        w.value
                    ),
                };
                let problem = Problem::new(w.span, format!("window `{}` is not defined", w.value))
                    .label("no [window] of this name")
                    .help(help);
                self.report_once("window", &w.value, problem);
                ok = false;
            }
        }
        if let Some(f) = wt.str(self.p, "anaplan_flag") {
            if scope.flags.contains(&f.value) {
                out.push(Condition::AnaplanFlag(f.value));
            } else if scope.flags_unreadable {
                // `flags` is misspelt or malformed, reported already.
                ok = false;
            } else {
                let problem =
                    Problem::new(f.span, format!("`{}` is not a known Anaplan flag", f.value))
                        .help("list the boolean line item in [pairing] flags = [...], or map it as a boolean field");
                self.report_once("flag", &f.value, problem);
                ok = false;
            }
        }
        if let Some(rt) = wt.map(self.p, "record") {
            for (key, value) in rt.entries() {
                let Some(info) = scope.record_kinds.get(&key.value) else {
                    ok = false;
                    // A field whose name or type could not be read (reported already) may
                    // be the one named here.
                    if scope.untyped.contains(&key.value) || scope.names_unreadable {
                        continue;
                    }
                    let names: Vec<&str> = scope.record_kinds.keys().map(String::as_str).collect();
                    let help = match did_you_mean(&key.value, &names) {
                        Some(g) => format!("did you mean `{g}`?"),
                        None => "a `when` may test mapped fields, and fields listed in [pairing] extra_crm_fields".into(),
                    };
                    let problem = Problem::new(
                        key.span,
                        format!("`{}` is not a field of this pairing", key.value),
                    )
                    .help(help);
                    self.report_once("field", &key.value, problem);
                    continue;
                };
                let items: Vec<&Spanned<DeValue<'_>>> = match value.get_ref() {
                    DeValue::Array(a) => a.iter().collect(),
                    _ => vec![value],
                };
                if items.is_empty() {
                    self.p
                        .push(Problem::new(value.span(), "an empty set never matches"));
                    ok = false;
                    continue;
                }
                let mut values = BTreeSet::new();
                for item in items {
                    match self.literal(item, info.kind) {
                        Some(v) => {
                            if let (Some(pick), Value::Text(t)) = (&info.picklist, &v)
                                && !pick.values.contains(t)
                            {
                                self.p.push(
                                    Problem::new(item.span(), format!("`{t}` is not a value of the picklist {}, so this never matches", key.value))
                                        .help("write CRM picklist values as listed in the field's `values`"),
                                );
                                ok = false;
                            }
                            values.insert(v);
                        }
                        None => ok = false,
                    }
                }
                out.push(Condition::Record {
                    field: key.value,
                    values,
                });
            }
        }
        let tried = ["window", "record", "anaplan_flag"]
            .iter()
            .any(|k| wt.attempted(k));
        if out.is_empty() && tried {
            // Its condition is misspelt or malformed (reported already): read as "always",
            // it would hide the `when`s after it.
            return None;
        }
        if out.is_empty() && ok {
            self.p.push(
                Problem::new(wt.span.clone(), "this `when` has no condition, so it always matches")
                    .help("give it window, record or anaplan_flag; or move its settings onto the field itself"),
            );
            return None;
        }
        ok.then_some(out)
    }

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

    /// A CRM field or an Anaplan line item (or list property) mapped by two `[[field]]`s.
    /// Checked on the raw tables, so a field that failed other checks is still counted.
    fn check_duplicates(&mut self, tables: &[Table<'_, '_>]) {
        let mut first: BTreeMap<(&str, String), Range<usize>> = BTreeMap::new();
        for t in tables {
            for key in ["crm", "anaplan", "anaplan_property"] {
                let Some(value) = t.get(key) else { continue };
                let DeValue::String(name) = value.get_ref() else {
                    continue;
                };
                let (namespace, what) = match key {
                    "crm" => ("crm", "CRM field"),
                    // One namespace: fields are also found by their Anaplan name.
                    "anaplan" => ("anaplan", "Anaplan line item"),
                    _ => ("anaplan", "Anaplan list property"),
                };
                match first.get(&(namespace, name.to_string())) {
                    Some(earlier) => self.p.push(
                        Problem::new(value.span(), format!("{what} `{name}` is mapped twice"))
                            .also(earlier.clone(), "first mapped here")
                            .help("a field has one rule; use [[field.when]] for conditions"),
                    ),
                    None => {
                        first.insert((namespace, name.to_string()), value.span());
                    }
                }
            }
        }
    }

    fn tests(
        &mut self,
        root: &Table<'_, '_>,
        fields: &[FieldRule],
        kinds: &BTreeMap<String, FieldInfo>,
    ) -> Vec<TestCase> {
        let tables = root.table_array(self.p, "test", "[[test]]", TEST_KEYS);
        let mut out = Vec::new();
        for (i, tt) in tables.iter().enumerate() {
            if let Some(case) = self.test(tt, i, fields, kinds) {
                out.push(case);
            }
        }
        out
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

    fn test(
        &mut self,
        tt: &Table<'_, '_>,
        index: usize,
        fields: &[FieldRule],
        kinds: &BTreeMap<String, FieldInfo>,
    ) -> Option<TestCase> {
        let name = tt
            .str(self.p, "name")
            .map_or(format!("test {}", index + 1), |s| s.value);
        let field_name =
            tt.required_str(self.p, "field", "the CRM name of the field under test")?;
        let Some(field) = fields.iter().find(|f| f.crm == field_name.value) else {
            let names: Vec<&str> = fields.iter().map(|f| f.crm.as_str()).collect();
            let mut problem = Problem::new(
                field_name.span.clone(),
                format!("`{}` is not a mapped field", field_name.value),
            );
            if let Some(g) = did_you_mean(&field_name.value, &names) {
                problem = problem.help(format!("did you mean `{g}`?"));
                if let Some(f) = fields.iter().find(|f| f.crm == g) {
                    problem = problem.also(f.span.clone(), format!("`{g}` is mapped here"));
                }
            }
            self.report_once("field", &field_name.value, problem);
            return None;
        };
        let kind = field.kind;
        let at = self.instant(tt, "at", true);
        let other_at = self.instant(tt, "other_at", false);
        let from = tt
            .required_str(
                self.p,
                "from",
                "from = \"crm\" or \"anaplan\": the side reporting the value",
            )
            .and_then(|s| choice(self.p, &s, "from", SIDES));
        let value = match tt.get("value") {
            Some(v) => self.literal(v, kind),
            None => {
                tt.missing(
                    self.p,
                    "value",
                    "the value the side reports (\"\" for null)",
                );
                None
            }
        };
        let base = tt.get("base").map(|v| self.literal(v, kind));
        let other = tt.get("other").map(|v| self.literal(v, kind));
        let in_flight = match tt.table(self.p, "in_flight", &["to", "value"]) {
            Some(ft) => {
                let to = ft
                    .required_str(self.p, "to", "the side being written")
                    .and_then(|s| choice(self.p, &s, "to", SIDES));
                let v = match ft.get("value") {
                    Some(v) => self.literal(v, kind),
                    None => {
                        ft.missing(self.p, "value", "the value being written");
                        None
                    }
                };
                Some(to.zip(v))
            }
            None => None,
        };
        let last_ack = match tt.table(self.p, "last_ack", &["to", "value", "at", "replaced"]) {
            Some(at_table) => {
                let to = at_table
                    .required_str(self.p, "to", "the side our write went to")
                    .and_then(|s| choice(self.p, &s, "to", SIDES));
                let value = match at_table.get("value") {
                    Some(v) => self.literal(v, kind),
                    None => {
                        at_table.missing(self.p, "value", "the value we wrote");
                        None
                    }
                };
                let when = self.instant(&at_table, "at", true);
                let replaced = at_table.get("replaced").and_then(|v| self.literal(v, kind));
                match (to, value, when) {
                    (Some(to), Some(value), Some(at)) => Some(crate::model::AckedWrite {
                        to,
                        value,
                        at,
                        replaced,
                    }),
                    _ => None,
                }
            }
            None => None,
        };
        let held = tt.bool(self.p, "held").is_some_and(|(b, _)| b);
        let ours = tt.bool(self.p, "ours").is_some_and(|(b, _)| b);
        let mut record = BTreeMap::new();
        if let Some(rt) = tt.map(self.p, "record") {
            for (key, v) in rt.entries() {
                match kinds.get(&key.value) {
                    Some(info) => {
                        if let Some(val) = self.literal(v, info.kind) {
                            record.insert(key.value, val);
                        }
                    }
                    None => {
                        let names: Vec<&str> = kinds.keys().map(String::as_str).collect();
                        let mut problem = Problem::new(
                            key.span.clone(),
                            format!("`{}` is not a field of this pairing", key.value),
                        );
                        if let Some(g) = did_you_mean(&key.value, &names) {
                            problem = problem.help(format!("did you mean `{g}`?"));
                        }
                        self.report_once("field", &key.value, problem);
                    }
                }
            }
        }
        let mut flags = BTreeMap::new();
        if let Some(ft) = tt.map(self.p, "flags") {
            for (key, v) in ft.entries() {
                match v.get_ref() {
                    DeValue::Boolean(b) => {
                        flags.insert(key.value, *b);
                    }
                    _ => self
                        .p
                        .push(Problem::new(v.span(), "a flag is true or false")),
                }
            }
        }
        let expect = self.expectation(tt, kind);
        Some(TestCase {
            name,
            span: tt.span.clone(),
            field: field.crm.clone(),
            at: at?,
            from: from?,
            value: value?,
            base: base.flatten(),
            other: other.flatten(),
            other_at,
            in_flight: in_flight.flatten(),
            held,
            ours,
            last_ack,
            record,
            flags,
            expect: expect?,
        })
    }

    fn instant(&mut self, t: &Table<'_, '_>, key: &str, required: bool) -> Option<DateTime<Utc>> {
        let Some(value) = t.get(key) else {
            if required {
                t.missing(
                    self.p,
                    key,
                    "a date-time with an offset, e.g. at = 2026-12-28T15:00:00Z",
                );
            }
            return None;
        };
        let text = match scalar(value) {
            Some(Scalar::Date(s) | Scalar::Str(s)) => s,
            _ => String::new(),
        };
        match DateTime::parse_from_rfc3339(&text) {
            Ok(d) => Some(d.with_timezone(&Utc)),
            Err(_) => {
                self.p.push(
                    Problem::new(
                        value.span(),
                        format!("`{key}` must be a date-time with an offset"),
                    )
                    .help("e.g. 2026-12-28T15:00:00Z or 2026-12-28T09:00:00-06:00"),
                );
                None
            }
        }
    }

    fn expectation(&mut self, tt: &Table<'_, '_>, kind: ValueKind) -> Option<Expectation> {
        let Some(et) = tt.table(self.p, "expect", EXPECT_KEYS) else {
            if tt.get("expect").is_none() {
                tt.missing(
                    self.p,
                    "expect",
                    "expect = { action = \"write\", to = \"anaplan\" }",
                );
            }
            return None;
        };
        let action = et.required_str(
            self.p,
            "action",
            "one of the decision actions, e.g. \"write\" or \"hold\"",
        )?;
        if !Action::NAMES.contains(&action.value.as_str()) {
            let mut problem = Problem::new(
                action.span.clone(),
                format!("`{}` is not an action", action.value),
            )
            .label(format!("expected one of: {}", Action::NAMES.join(", ")));
            if let Some(g) = did_you_mean(&action.value, &Action::NAMES) {
                problem = problem.help(format!("did you mean `{g}`?"));
            }
            self.p.push(problem);
            return None;
        }
        let to = et
            .str(self.p, "to")
            .and_then(|s| choice(self.p, &s, "to", SIDES));
        let value = et.get("value").and_then(|v| self.literal(v, kind));
        let exception = match et.str(self.p, "exception") {
            Some(s) if s.value == "none" => Some(None),
            Some(s) => match s.value.parse::<ExceptionKind>() {
                Ok(k) => Some(Some(k)),
                Err(e) => {
                    self.p
                        .push(Problem::new(s.span, e).help("or \"none\" to expect no exception"));
                    return None;
                }
            },
            None => None,
        };
        let rule = et.str(self.p, "rule").map(|s| s.value);
        Some(Expectation {
            action: action.value,
            to,
            value,
            exception,
            rule,
        })
    }
}

/// The first day of a period (checked over four years from 2024) in which the window finds
/// too few business days, if any.
fn period_without_room(calendar: &Calendar, window: &Window) -> Option<NaiveDate> {
    (0..48).find_map(|m| {
        let day = NaiveDate::from_ymd_opt(2024 + m / 12, (m % 12) as u32 + 1, 1)?;
        calendar.window_span(window, day).is_none().then_some(day)
    })
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

/// Whether `later` matching implies `earlier` matches (so `later` is unreachable).
fn implies(later: &[Condition], earlier: &[Condition]) -> bool {
    earlier.iter().all(|e| {
        later.iter().any(|l| match (l, e) {
            (
                Condition::Record {
                    field: lf,
                    values: lv,
                },
                Condition::Record {
                    field: ef,
                    values: ev,
                },
            ) => lf == ef && lv.is_subset(ev),
            _ => l == e,
        })
    })
}

fn all_field_keys() -> Vec<&'static str> {
    let mut keys = FIELD_ONLY_KEYS.to_vec();
    keys.extend_from_slice(POLICY_KEYS);
    keys
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
