//! The Anaplan poller: Anaplan has no change feed, so an Anaplan-side edit is seen only by
//! reading the pairing's list (codes, names, properties) and module (its default view) and
//! diffing every mapped value against the last value plansync saw there (the shadow's
//! `seen_anaplan`, read in bulk with `Store::anaplan_seen`).
//!
//! What one poll reports, and what it leaves to the engine:
//! - an item known to the shadow whose mapped values differ → one [`ChangeKind::Update`]
//!   carrying only the differing fields, named by their CRM API name (the shadow's key) with
//!   values already normalised into the rule's kind and the CRM vocabulary (a picklist's
//!   Anaplan name mapped back). A field the shadow has never seen is reported once, whatever
//!   its value, so the engine records it.
//! - an item known to the shadow but gone from the list → a [`ChangeKind::Delete`]; what that
//!   means is the pairing's `anaplan_delete` lifecycle rule (an exception by default), never a
//!   silent CRM delete.
//! - an item in the list the shadow has never seen → its code in
//!   [`AnaplanPollOutcome::new_items`] and a [`ChangeKind::Create`] carrying all its mapped
//!   values: it may be an item plansync itself just created, one the first reconciliation
//!   meets, or a planner's new row with no CRM record behind it; the engine decides which.
//! - a value that cannot be normalised → an [`AnaplanPollProblem`] (with the exception kind
//!   the rule says: `validation` for a malformed value, `unmapped` for a picklist value with no
//!   mapping); that field is left out of the item's change, the others still go.
//!
//! Every change of one poll is dated by the poll (`committed_at = at`): Anaplan cells carry no
//! timestamp, so the poll time is an upper bound of when the edit was made.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use crate::anaplan::{AnaplanClient, AnaplanError, ListItem, ViewData};
use crate::model::{
    Change, ChangeKind, ExceptionKind, FieldChange, Position, RecordKey, Side, Source, Value,
};
use crate::rules::Pairing;
use crate::rules::ruleset::AnaplanField;

/// Why a poll failed as a whole. A bad cell or item is not an error: it is listed in
/// [`AnaplanPollOutcome::problems`].
#[derive(Debug, thiserror::Error)]
pub enum AnaplanPollError {
    /// Anaplan refused or failed a call (after the client's own retries and re-auth).
    #[error("Anaplan poll of {what}: {source}")]
    Anaplan {
        what: String,
        #[source]
        source: AnaplanError,
    },
    /// The rule file names a line item the module's default view does not show: every item
    /// would fail, so the poll stops instead of reporting a problem per item.
    #[error("line item `{line_item}` is not in the default view of module `{module}`")]
    MissingLineItem { module: String, line_item: String },
}

/// The ids the rule file's names resolve to. Resolve once with [`resolve_target`] and reuse
/// them across polls to save two listing calls a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    pub model: String,
    pub list_id: String,
    /// Also the id of the module's default view.
    pub module_id: String,
}

/// A value of one item that could not be normalised, for the engine to turn into an exception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnaplanPollProblem {
    /// The list item's code (the CRM id); empty for an item without a code.
    pub code: String,
    /// The CRM field API name, or the flag's line item name; `None` for an item-level problem.
    pub field: Option<String>,
    /// The value as Anaplan showed it.
    pub raw: String,
    /// `Unmapped` (a picklist value with no mapping) or `Validation` (a malformed value).
    pub kind: ExceptionKind,
    pub message: String,
}

/// The result of one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct AnaplanPollOutcome {
    /// One change per item whose values differ from the shadow (`Create` with every mapped
    /// value for an item the shadow has never seen), in code order, then one `Delete` per
    /// known item gone from the list (in code order).
    pub changes: Vec<Change>,
    /// Codes of list items the shadow has never seen, in code order.
    pub new_items: Vec<String>,
    /// Per item code, the pairing's `flags` line items as read now (for `anaplan_flag`
    /// conditions). A flag that could not be read is absent and listed in `problems`.
    pub flags: HashMap<String, BTreeMap<String, bool>>,
    pub problems: Vec<AnaplanPollProblem>,
    /// List items read.
    pub items: usize,
    /// API operations made: name resolutions, the list read and the view read (a listing the
    /// client pages counts once; retries and auth excluded).
    pub calls: usize,
}

fn anaplan_err(what: impl Into<String>) -> impl FnOnce(AnaplanError) -> AnaplanPollError {
    let what = what.into();
    move |source| AnaplanPollError::Anaplan { what, source }
}

/// Resolves the pairing's list and module names to ids (two listing calls).
pub async fn resolve_target(
    client: &AnaplanClient,
    pairing: &Pairing,
) -> Result<ResolvedTarget, AnaplanPollError> {
    let t = &pairing.anaplan;
    let list_id = client
        .list_id(&t.model, &t.list)
        .await
        .map_err(anaplan_err(format!("list {}", t.list)))?;
    let module_id = client
        .module_id(&t.model, &t.module)
        .await
        .map_err(anaplan_err(format!("module {}", t.module)))?;
    Ok(ResolvedTarget {
        model: t.model.clone(),
        list_id,
        module_id,
    })
}

/// Polls `pairing`'s list and module once and diffs them against `seen` (from
/// `Store::anaplan_seen`), resolving the names first. See [`poll_resolved`].
pub async fn poll_anaplan(
    client: &AnaplanClient,
    pairing: &Pairing,
    seen: &HashMap<String, HashMap<String, Value>>,
    at: DateTime<Utc>,
) -> Result<AnaplanPollOutcome, AnaplanPollError> {
    let target = resolve_target(client, pairing).await?;
    let mut outcome = poll_resolved(client, pairing, &target, seen, at).await?;
    outcome.calls += 2;
    Ok(outcome)
}

/// Polls with ids already resolved: two reads, the list items and the module's default view.
pub async fn poll_resolved(
    client: &AnaplanClient,
    pairing: &Pairing,
    target: &ResolvedTarget,
    seen: &HashMap<String, HashMap<String, Value>>,
    at: DateTime<Utc>,
) -> Result<AnaplanPollOutcome, AnaplanPollError> {
    let items = client
        .list_items(&target.model, &target.list_id)
        .await
        .map_err(anaplan_err(format!("list {}", pairing.anaplan.list)))?;
    let view = client
        .read_view_json(&target.model, &target.module_id, &[])
        .await
        .map_err(anaplan_err(format!("module {}", pairing.anaplan.module)))?;
    let mut outcome = diff(pairing, &items, &view, seen, at)?;
    outcome.calls = 2;
    Ok(outcome)
}

/// The view's column of each line item the pairing reads (mapped fields and flags).
fn columns(pairing: &Pairing, view: &ViewData) -> Result<HashMap<String, usize>, AnaplanPollError> {
    // A module view with line items on columns has one label per column; with more column
    // dimensions the line item is the innermost, i.e. the last label.
    let by_name = view.column_index();
    let wanted = pairing
        .fields
        .iter()
        .filter_map(|f| match &f.anaplan {
            AnaplanField::LineItem(name) => Some(name.as_str()),
            AnaplanField::ListProperty(_) => None,
        })
        .chain(pairing.flags.iter().map(String::as_str));
    let mut out = HashMap::new();
    for name in wanted {
        let column =
            by_name
                .get(name)
                .copied()
                .ok_or_else(|| AnaplanPollError::MissingLineItem {
                    module: pairing.anaplan.module.clone(),
                    line_item: name.to_string(),
                })?;
        out.insert(name.to_string(), column);
    }
    Ok(out)
}

/// The diff itself, on data already read: pure, so it is tested without a server.
pub fn diff(
    pairing: &Pairing,
    items: &[ListItem],
    view: &ViewData,
    seen: &HashMap<String, HashMap<String, Value>>,
    at: DateTime<Utc>,
) -> Result<AnaplanPollOutcome, AnaplanPollError> {
    let columns = columns(pairing, view)?;
    // The view's rows are labelled by item name (unique within a list); the records are keyed
    // by code, so names join the two.
    let rows = view.row_index();
    let mut outcome = AnaplanPollOutcome {
        changes: Vec::new(),
        new_items: Vec::new(),
        flags: HashMap::new(),
        problems: Vec::new(),
        items: items.len(),
        calls: 0,
    };
    let mut present: HashSet<&str> = HashSet::with_capacity(items.len());
    let mut sorted: Vec<&ListItem> = items.iter().collect();
    sorted.sort_by(|a, b| a.code.cmp(&b.code));
    for item in sorted {
        let code = match item.code.as_deref() {
            Some(code) if !code.is_empty() => code,
            _ => {
                outcome.problems.push(AnaplanPollProblem {
                    code: String::new(),
                    field: None,
                    raw: item.name.clone(),
                    kind: ExceptionKind::Unmapped,
                    message: format!(
                        "item `{}` of list {} has no code, so no CRM record: skipped",
                        item.name, pairing.anaplan.list
                    ),
                });
                continue;
            }
        };
        present.insert(code);
        let cells = rows.get(item.name.as_str()).copied();
        let cell = |line_item: &str| -> Option<&str> {
            let column = columns.get(line_item)?;
            cells.and_then(|c| c.get(*column)).map(String::as_str)
        };
        read_flags(pairing, code, &cell, &mut outcome);
        let known = seen.get(code);
        if known.is_none() {
            outcome.new_items.push(code.to_string());
        }
        let mut fields = Vec::new();
        for rule in &pairing.fields {
            let raw = match &rule.anaplan {
                AnaplanField::LineItem(name) => cell(name),
                AnaplanField::ListProperty(name) => item.properties.get(name).map(String::as_str),
            };
            let Some(raw) = raw else {
                outcome.problems.push(AnaplanPollProblem {
                    code: code.to_string(),
                    field: Some(rule.crm.clone()),
                    raw: String::new(),
                    kind: ExceptionKind::Unmapped,
                    message: format!(
                        "{} of `{code}` was not returned by Anaplan (no row or property)",
                        rule.anaplan.name()
                    ),
                });
                continue;
            };
            let value = match rule.normalise(Side::Anaplan, &Json::String(raw.to_string())) {
                Ok(v) => v,
                Err(e) => {
                    outcome.problems.push(AnaplanPollProblem {
                        code: code.to_string(),
                        field: Some(rule.crm.clone()),
                        raw: raw.to_string(),
                        kind: e.kind,
                        message: format!("`{code}`: {}", e.message),
                    });
                    continue;
                }
            };
            // A value stored under an earlier rule (another scale) is compared in the current
            // kind; one that no longer fits it counts as different.
            let unchanged = known
                .and_then(|k| k.get(&rule.crm))
                .is_some_and(|old| old.to_kind(rule.kind).is_ok_and(|old| old == value));
            if !unchanged {
                fields.push(FieldChange {
                    field: rule.crm.clone(),
                    value: canonical_json(&value),
                });
            }
        }
        if !fields.is_empty() {
            let kind = if known.is_some() {
                ChangeKind::Update
            } else {
                ChangeKind::Create
            };
            outcome
                .changes
                .push(change(pairing, code, kind, fields, at));
        }
    }
    let mut gone: Vec<&str> = seen
        .keys()
        .map(String::as_str)
        .filter(|code| !present.contains(code))
        .collect();
    gone.sort_unstable();
    for code in gone {
        outcome
            .changes
            .push(change(pairing, code, ChangeKind::Delete, Vec::new(), at));
    }
    Ok(outcome)
}

/// Reads the pairing's flag line items of one item into `outcome.flags`.
fn read_flags<'a>(
    pairing: &Pairing,
    code: &str,
    cell: &impl Fn(&str) -> Option<&'a str>,
    outcome: &mut AnaplanPollOutcome,
) {
    if pairing.flags.is_empty() {
        return;
    }
    let mut flags = BTreeMap::new();
    for flag in &pairing.flags {
        let raw = cell(flag).unwrap_or_default();
        match Value::from_text(crate::model::ValueKind::Boolean, raw) {
            Ok(Value::Bool(b)) => {
                flags.insert(flag.clone(), b);
            }
            // A blank boolean cell is false in Anaplan.
            Ok(_) => {
                flags.insert(flag.clone(), false);
            }
            Err(e) => outcome.problems.push(AnaplanPollProblem {
                code: code.to_string(),
                field: Some(flag.clone()),
                raw: raw.to_string(),
                kind: ExceptionKind::Validation,
                message: format!("flag {flag} of `{code}`: {e}"),
            }),
        }
    }
    outcome.flags.insert(code.to_string(), flags);
}

/// A normalised value as JSON that `Value::from_json` reads back exactly: numbers go as their
/// decimal text (never through a float), dates as `YYYY-MM-DD`.
pub fn canonical_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        other => Json::String(other.to_text().unwrap_or_default()),
    }
}

fn change(
    pairing: &Pairing,
    code: &str,
    kind: ChangeKind,
    fields: Vec<FieldChange>,
    at: DateTime<Utc>,
) -> Change {
    Change {
        side: Side::Anaplan,
        record: RecordKey {
            pairing: pairing.name.clone(),
            crm_id: code.to_string(),
        },
        kind,
        fields,
        committed_at: at,
        source: Source::Poll,
        // A read does not say who wrote; the echo check compares values instead.
        ours: false,
        position: Position::PollRun { at },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anaplan::ViewRow;
    use crate::model::ValueKind;
    use chrono::TimeZone;

    fn opportunity() -> Pairing {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/opportunity.toml");
        crate::rules::load_file(&path).expect("the example rule file compiles")
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 10, 15, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn item(code: Option<&str>, name: &str, opp_name: &str) -> ListItem {
        ListItem {
            id: format!("id-{name}"),
            name: name.into(),
            code: code.map(str::to_string),
            parent: None,
            parent_id: None,
            properties: [("Opportunity Name".to_string(), opp_name.to_string())].into(),
        }
    }

    const LINE_ITEMS: [&str; 7] = [
        "Amount",
        "Stage",
        "Close Date",
        "Forecast Override",
        "Probability",
        "Approved",
        "CRM Deleted",
    ];

    /// A default view in the simulator's column order; `cells` in `LINE_ITEMS` order.
    fn view(rows: &[(&str, [&str; 7])]) -> ViewData {
        ViewData {
            pages: Vec::new(),
            columns: LINE_ITEMS.iter().map(|l| vec![l.to_string()]).collect(),
            rows: rows
                .iter()
                .map(|(name, cells)| ViewRow {
                    coordinates: vec![name.to_string()],
                    cells: cells.iter().map(|c| c.to_string()).collect(),
                })
                .collect(),
        }
    }

    fn v(kind: ValueKind, raw: &str) -> Value {
        Value::from_text(kind, raw).expect("a valid value")
    }

    /// What the shadow would hold after seeing `A` with these values.
    fn seen_a() -> HashMap<String, HashMap<String, Value>> {
        let n2 = ValueKind::Number { scale: 2 };
        let fields: HashMap<String, Value> = [
            ("Name", v(ValueKind::Text, "Acme")),
            // Stored at scale 0 under an earlier rule: 125000 is still 125000.00.
            ("Amount", v(ValueKind::Number { scale: 0 }, "125000")),
            ("StageName", v(ValueKind::Picklist, "Closed Won")),
            ("CloseDate", v(ValueKind::Date, "2026-12-18")),
            ("Forecast_Override__c", v(n2, "0")),
            ("Probability", v(ValueKind::Number { scale: 0 }, "40")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        [("A".to_string(), fields)].into()
    }

    #[test]
    fn equal_values_in_anaplan_spelling_are_no_change() {
        let pairing = opportunity();
        let items = [item(Some("A"), "OPP-A", "Acme")];
        let grid = view(&[(
            "OPP-A",
            ["125000", "Won", "2026-12-18", "0", "40", "true", "false"],
        )]);
        let out = diff(&pairing, &items, &grid, &seen_a(), at()).expect("diff");
        assert_eq!(out.changes, [], "{:?}", out.problems);
        assert_eq!(out.problems, []);
        assert_eq!(out.new_items, Vec::<String>::new());
        assert!(out.flags["A"]["Approved"]);
    }

    #[test]
    fn only_differing_fields_are_reported_normalised() {
        let pairing = opportunity();
        let items = [item(Some("A"), "OPP-A", "Acme Corp")];
        let grid = view(&[(
            "OPP-A",
            ["125000.004", "Lost", "2026-12-18", "12.5", "40", "", ""],
        )]);
        let out = diff(&pairing, &items, &grid, &seen_a(), at()).expect("diff");
        assert_eq!(out.changes.len(), 1);
        let c = &out.changes[0];
        assert_eq!(
            (c.side, c.kind, c.source, c.ours),
            (Side::Anaplan, ChangeKind::Update, Source::Poll, false)
        );
        assert_eq!(c.record.crm_id, "A");
        assert_eq!(c.position, Position::PollRun { at: at() });
        assert_eq!(c.committed_at, at());
        let got: Vec<(&str, &Json)> = c
            .fields
            .iter()
            .map(|f| (f.field.as_str(), &f.value))
            .collect();
        assert_eq!(
            got,
            [
                ("Name", &Json::from("Acme Corp")),
                ("StageName", &Json::from("Closed Lost")),
                ("Forecast_Override__c", &Json::from("12.50")),
            ],
            "Amount rounds to the same cents, so it is unchanged"
        );
        assert!(!out.flags["A"]["Approved"], "blank is false");
    }

    #[test]
    fn gone_new_codeless_and_bad_values() {
        let pairing = opportunity();
        let mut seen = seen_a();
        seen.insert("Z".into(), HashMap::new());
        let items = [
            item(Some("A"), "OPP-A", "Acme"),
            item(Some("N"), "OPP-N", "New"),
            item(None, "loose", "x"),
        ];
        let grid = view(&[
            (
                "OPP-A",
                ["12a", "Closed Won", "31/12/2026", "0", "40", "maybe", ""],
            ),
            ("OPP-N", ["1", "Mystery", "", "", "", "", ""]),
            ("loose", ["", "", "", "", "", "", ""]),
        ]);
        let out = diff(&pairing, &items, &grid, &seen, at()).expect("diff");
        assert_eq!(out.new_items, ["N"]);
        let kinds: Vec<_> = out
            .changes
            .iter()
            .map(|c| (c.record.crm_id.as_str(), c.kind))
            .collect();
        // "Closed Won" is the CRM spelling and is accepted as is: unchanged. The new item
        // reports every value that could be read.
        assert_eq!(
            kinds,
            [("N", ChangeKind::Create), ("Z", ChangeKind::Delete)]
        );
        let new_fields: Vec<&str> = out.changes[0]
            .fields
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert!(
            new_fields.contains(&"Amount") && new_fields.contains(&"Name"),
            "{new_fields:?}"
        );
        assert!(out.changes[1].fields.is_empty());
        let probs: Vec<_> = out
            .problems
            .iter()
            .map(|p| (p.code.as_str(), p.field.as_deref(), p.raw.as_str(), p.kind))
            .collect();
        assert_eq!(
            probs,
            [
                ("", None, "loose", ExceptionKind::Unmapped),
                ("A", Some("Approved"), "maybe", ExceptionKind::Validation),
                ("A", Some("Amount"), "12a", ExceptionKind::Validation),
                (
                    "A",
                    Some("CloseDate"),
                    "31/12/2026",
                    ExceptionKind::Validation
                ),
                ("N", Some("StageName"), "Mystery", ExceptionKind::Unmapped),
            ]
        );
    }

    #[test]
    fn unmapped_picklist_value_and_missing_line_item() {
        let pairing = opportunity();
        let items = [item(Some("A"), "OPP-A", "Acme")];
        let grid = view(&[(
            "OPP-A",
            ["125000", "Mystery", "2026-12-18", "0", "40", "", ""],
        )]);
        let out = diff(&pairing, &items, &grid, &seen_a(), at()).expect("diff");
        assert_eq!(out.changes, []);
        assert_eq!(out.problems.len(), 1);
        assert_eq!(out.problems[0].kind, ExceptionKind::Unmapped);
        assert_eq!(out.problems[0].raw, "Mystery");

        let mut narrow = grid.clone();
        narrow.columns.remove(1);
        let err = diff(&pairing, &items, &narrow, &seen_a(), at()).expect_err("no Stage column");
        assert!(
            matches!(err, AnaplanPollError::MissingLineItem { ref line_item, .. } if line_item == "Stage")
        );
    }

    #[test]
    fn a_field_never_seen_is_reported_once() {
        let pairing = opportunity();
        let mut seen = seen_a();
        if let Some(a) = seen.get_mut("A") {
            a.remove("Probability");
        }
        let items = [item(Some("A"), "OPP-A", "Acme")];
        let grid = view(&[("OPP-A", ["125000", "Won", "2026-12-18", "0", "40", "", ""])]);
        let out = diff(&pairing, &items, &grid, &seen, at()).expect("diff");
        assert_eq!(out.changes.len(), 1);
        assert_eq!(out.changes[0].fields[0].field, "Probability");
        assert_eq!(out.changes[0].fields[0].value, Json::from("40"));
    }
}
