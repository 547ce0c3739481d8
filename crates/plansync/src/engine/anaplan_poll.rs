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
//!
//! Memory: the list is held as a [`ListIndex`] (names, codes that differ from them, the mapped
//! properties; a few tens of bytes an item), built from one plain read for a small list or
//! page by page from a read request for a large one; a large module is diffed a part of a
//! view page at a time ([`PageDiff`]). Only the shadow's `seen` map, the caller's, grows with the model.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use crate::anaplan::{AnaplanClient, AnaplanError, ListItem, ViewData, ViewRow};
pub use crate::engine::anaplan_target::ResolvedTarget;
use crate::engine::anaplan_target::{self, ReadLimits, View};
use crate::model::{
    Change, ChangeKind, ExceptionKind, FieldChange, Position, RecordKey, Side, Source, Value,
};
use crate::rules::Pairing;
use crate::rules::ruleset::AnaplanField;

pub mod list_index;

use list_index::Item;
pub use list_index::{ListIndex, ListIndexBuilder, Met};

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
    /// The engine could not take a part of the poll (it is stopping).
    #[error("Anaplan poll: {0}")]
    Route(String),
    /// The rule file names a line item the module's default view does not show: every item
    /// would fail, so the poll stops instead of reporting a problem per item.
    #[error("line item `{line_item}` is not in the default view of module `{module}`")]
    MissingLineItem { module: String, line_item: String },
    /// The list's names, codes and mapped properties pass the index's 4 GiB of offsets.
    #[error("list {list} is too large to index")]
    ListTooLarge { list: String },
}

impl AnaplanPollError {
    /// Whether another attempt cannot succeed until a person fixes the configuration, the
    /// credentials or the rule file.
    pub fn is_permanent(&self) -> bool {
        match self {
            AnaplanPollError::Anaplan { source, .. } => source.is_permanent(),
            AnaplanPollError::MissingLineItem { .. } | AnaplanPollError::ListTooLarge { .. } => {
                true
            }
            AnaplanPollError::Route(_) => false,
        }
    }
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

/// The result of one poll (or of one part of it, see [`poll_resolved_each`]).
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// API operations made: name resolutions, the list's item count, the list read and the
    /// view read (a listing the client pages, or a read request with its status polls and
    /// pages, counts once; retries and auth excluded).
    pub calls: usize,
}

impl AnaplanPollOutcome {
    /// Adds a later part of the same poll.
    pub fn merge(&mut self, part: AnaplanPollOutcome) {
        self.changes.extend(part.changes);
        self.new_items.extend(part.new_items);
        self.flags.extend(part.flags);
        self.problems.extend(part.problems);
        self.items += part.items;
        self.calls += part.calls;
    }
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
    anaplan_target::resolve(client, &pairing.anaplan)
        .await
        .map_err(|e| AnaplanPollError::Anaplan {
            what: e.what,
            source: e.source,
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
    outcome.calls += anaplan_target::RESOLVE_CALLS;
    Ok(outcome)
}

/// Polls with ids already resolved: three reads, the list's item count, its items and the
/// module's default view (read requests for a large list).
/// The outcome is all of one poll; see [`poll_resolved_each`] to take it page by page.
pub async fn poll_resolved(
    client: &AnaplanClient,
    pairing: &Pairing,
    target: &ResolvedTarget,
    seen: &HashMap<String, HashMap<String, Value>>,
    at: DateTime<Utc>,
) -> Result<AnaplanPollOutcome, AnaplanPollError> {
    let mut all = AnaplanPollOutcome::default();
    poll_resolved_each(client, pairing, target, seen, at, &mut all).await?;
    Ok(all)
}

/// Where [`poll_resolved_each`] hands each part of a poll (the engine routes it to the shards).
pub trait PollParts {
    fn part(
        &mut self,
        part: AnaplanPollOutcome,
    ) -> impl std::future::Future<Output = Result<(), AnaplanPollError>> + Send;
}

/// Collecting the parts: the whole poll's outcome.
impl PollParts for AnaplanPollOutcome {
    async fn part(&mut self, part: AnaplanPollOutcome) -> Result<(), AnaplanPollError> {
        self.merge(part);
        Ok(())
    }
}

/// Items diffed into one part of a paged poll (a shard takes up to 1,024 messages a round).
pub const PART_ITEMS: usize = 1024;

/// When a poll reads in pages rather than whole (the defaults outside tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollLimits {
    /// When the list and the module are read through read requests.
    pub read: ReadLimits,
    /// Rows of a page diffed into one part of a paged poll ([`PART_ITEMS`]).
    pub part_items: usize,
}

impl Default for PollLimits {
    fn default() -> Self {
        PollLimits {
            read: ReadLimits::default(),
            part_items: PART_ITEMS,
        }
    }
}

/// Polls with ids already resolved and hands the outcome to `each` in parts, with the default
/// [`PollLimits`]; see [`poll_resolved_each_with`].
pub async fn poll_resolved_each(
    client: &AnaplanClient,
    pairing: &Pairing,
    target: &ResolvedTarget,
    seen: &HashMap<String, HashMap<String, Value>>,
    at: DateTime<Utc>,
    each: &mut (impl PollParts + Send),
) -> Result<(), AnaplanPollError> {
    poll_resolved_each_with(
        client,
        pairing,
        target,
        seen,
        at,
        PollLimits::default(),
        each,
    )
    .await
}

/// Polls with ids already resolved and hands the outcome to `each` in parts. The list's item
/// count is read first. A small list and module are read whole (the list's items, then the
/// view): one part, in code order. A list of more than `limits.read.paged_list_items` items,
/// or whose items times the line items read exceed `limits.read.max_view_cells`, is read with a list
/// read request folded page by page into a [`ListIndex`], and its module with a view read
/// request: parts of at most `limits.part_items` rows of a page (the changes of those items,
/// in view order), then a last part with items no page showed, items without a code, the
/// deletes and the count of items. Memory then holds the index (tens of bytes an item), one
/// page's rows and one part's changes, not the list and the module. A plain read refused for
/// size (the count was stale) falls back to the paged read.
pub async fn poll_resolved_each_with(
    client: &AnaplanClient,
    pairing: &Pairing,
    target: &ResolvedTarget,
    seen: &HashMap<String, HashMap<String, Value>>,
    at: DateTime<Utc>,
    limits: PollLimits,
    each: &mut (impl PollParts + Send),
) -> Result<(), AnaplanPollError> {
    let t = &pairing.anaplan;
    let list_what = || format!("list {}", t.list);
    let module_what = || format!("module {}", t.module);
    let read = pairing
        .fields
        .iter()
        .filter(|f| matches!(f.anaplan, AnaplanField::LineItem(_)))
        .count()
        + pairing.flags.len();
    let mut calls = 1;
    let count = anaplan_target::item_count(client, target)
        .await
        .map_err(anaplan_err(list_what()))?;
    // A list whose module is too large for a plain view read is paged too: the poll then
    // holds neither the parsed list nor the module whole.
    let large = limits.read.list_paged(count) || limits.read.view_paged(count, read);
    let mut builder = ListIndex::builder(pairing, count.unwrap_or(0));
    // Items are folded in as they are parsed: a page's items are never held at once.
    let mut refused = None;
    let list = anaplan_target::read_list(client, target, large, &mut |item| {
        if refused.is_none()
            && let Err(e) = builder.add(&item)
        {
            refused = Some(e);
        }
    })
    .await
    .map_err(anaplan_err(list_what()))?;
    calls += list.calls;
    if let Some(e) = refused {
        return Err(e);
    }
    let index = builder.finish();
    let paged = large || limits.read.view_paged(Some(index.items()), read);
    let (view, view_calls) = anaplan_target::read_view(client, target, paged)
        .await
        .map_err(anaplan_err(module_what()))?;
    calls += view_calls;
    let mut pages = match view {
        View::Whole(view) => {
            let mut outcome = diff_index(pairing, &index, &view, seen, at)?;
            outcome.calls = calls;
            return each.part(outcome).await;
        }
        View::Pages(pages) => pages,
    };
    let mut differ = PageDiff::new(pairing, &index, seen, at);
    // A page's rows are held (about 400 bytes a row), then diffed and handed on a round's
    // worth at a time: the changes of a whole page, about 1.5 KB an item at a first run,
    // would outweigh its rows several times.
    let mut rows: Vec<ViewRow> = Vec::new();
    while let Some(shape) = pages
        .next_page_each(|_, row| rows.push(row))
        .await
        .map_err(anaplan_err(module_what()))?
    {
        differ.set_columns(&shape)?;
        for chunk in rows.chunks(limits.part_items.max(1)) {
            let mut part = AnaplanPollOutcome::default();
            for row in chunk {
                differ.row(row, &mut part);
            }
            each.part(part).await?;
        }
        rows.clear();
    }
    anaplan_target::close_view(pages).await;
    let mut last = differ.finish();
    last.calls = calls;
    each.part(last).await
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

/// An item without a code has no CRM record: reported, skipped.
fn codeless(pairing: &Pairing, name: &str) -> AnaplanPollProblem {
    AnaplanPollProblem {
        code: String::new(),
        field: None,
        raw: name.to_string(),
        kind: ExceptionKind::Unmapped,
        message: format!(
            "item `{name}` of list {} has no code, so no CRM record: skipped",
            pairing.anaplan.list
        ),
    }
}

/// The diff itself, on data already read: pure, so it is tested without a server. The items
/// are indexed first, as the poller does; see [`diff_index`].
pub fn diff(
    pairing: &Pairing,
    items: &[ListItem],
    view: &ViewData,
    seen: &HashMap<String, HashMap<String, Value>>,
    at: DateTime<Utc>,
) -> Result<AnaplanPollOutcome, AnaplanPollError> {
    let index = ListIndex::from_items(pairing, items)?;
    diff_index(pairing, &index, view, seen, at)
}

/// The diff of a whole view against the indexed list: items without a code first, then the
/// items in code order, then the deletes.
pub fn diff_index(
    pairing: &Pairing,
    index: &ListIndex,
    view: &ViewData,
    seen: &HashMap<String, HashMap<String, Value>>,
    at: DateTime<Utc>,
) -> Result<AnaplanPollOutcome, AnaplanPollError> {
    let columns = columns(pairing, view)?;
    // The view's rows are labelled by item name (unique within a list); the records are keyed
    // by code, so names join the two.
    let rows = view.row_index();
    let mut outcome = AnaplanPollOutcome {
        items: index.items(),
        problems: index.problems().to_vec(),
        ..AnaplanPollOutcome::default()
    };
    for item in index.code_order().filter_map(|at| index.get(at)) {
        let cells = rows.get(item.name).copied();
        diff_item(
            pairing,
            &columns,
            item,
            cells,
            seen.get(item.code),
            at,
            &mut outcome,
        );
    }
    push_gone(pairing, seen, index, at, &mut outcome);
    Ok(outcome)
}

/// Known items gone from the list: one `Delete` each, in code order.
fn push_gone(
    pairing: &Pairing,
    seen: &HashMap<String, HashMap<String, Value>>,
    index: &ListIndex,
    at: DateTime<Utc>,
    outcome: &mut AnaplanPollOutcome,
) {
    let mut gone: Vec<&str> = seen
        .keys()
        .map(String::as_str)
        .filter(|code| index.find_code(code).is_none())
        .collect();
    gone.sort_unstable();
    for code in gone {
        outcome
            .changes
            .push(change(pairing, code, ChangeKind::Delete, Vec::new(), at));
    }
}

/// One item's flags and changed fields into `outcome`; `cells` is its row (`None`: the view
/// did not show it).
#[allow(clippy::too_many_arguments)]
fn diff_item(
    pairing: &Pairing,
    columns: &HashMap<String, usize>,
    item: Item<'_>,
    cells: Option<&[String]>,
    known: Option<&HashMap<String, Value>>,
    at: DateTime<Utc>,
    outcome: &mut AnaplanPollOutcome,
) {
    let code = item.code;
    let cell = |line_item: &str| -> Option<&str> {
        let column = columns.get(line_item)?;
        cells.and_then(|c| c.get(*column)).map(String::as_str)
    };
    read_flags(pairing, code, &cell, outcome);
    if known.is_none() {
        outcome.new_items.push(code.to_string());
    }
    let mut fields = Vec::new();
    for rule in &pairing.fields {
        let raw = match &rule.anaplan {
            AnaplanField::LineItem(name) => cell(name),
            AnaplanField::ListProperty(name) => item.property(name),
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

/// The diff of a view read in pages: each page's rows are diffed as they come, against the
/// indexed list (the join by item name needs it) and the shadow.
pub struct PageDiff<'a> {
    pairing: &'a Pairing,
    seen: &'a HashMap<String, HashMap<String, Value>>,
    at: DateTime<Utc>,
    index: &'a ListIndex,
    /// Items already met on a page (a later row of the same name is skipped).
    met: Met,
    /// The last page's columns, for items no page showed.
    columns: HashMap<String, usize>,
}

impl<'a> PageDiff<'a> {
    pub fn new(
        pairing: &'a Pairing,
        index: &'a ListIndex,
        seen: &'a HashMap<String, HashMap<String, Value>>,
        at: DateTime<Utc>,
    ) -> Self {
        PageDiff {
            pairing,
            seen,
            at,
            index,
            met: Met::new(index.len()),
            columns: HashMap::new(),
        }
    }

    /// The changes, flags and problems of the items on one page, in the page's order. A row
    /// of no known item (added since the list was read) waits for the next poll.
    pub fn page(&mut self, view: &ViewData) -> Result<AnaplanPollOutcome, AnaplanPollError> {
        self.set_columns(view)?;
        let mut outcome = AnaplanPollOutcome::default();
        for row in &view.rows {
            self.row(row, &mut outcome);
        }
        Ok(outcome)
    }

    /// Takes the columns of the page whose rows come next (`view`'s rows are not read).
    pub fn set_columns(&mut self, view: &ViewData) -> Result<(), AnaplanPollError> {
        self.columns = columns(self.pairing, view)?;
        Ok(())
    }

    /// One row of the current page into `outcome`: see [`PageDiff::page`].
    pub fn row(&mut self, row: &ViewRow, outcome: &mut AnaplanPollOutcome) {
        let Some(name) = row.coordinates.last() else {
            return;
        };
        let Some(at) = self.index.find_name(name) else {
            return;
        };
        if !self.met.meet(at) {
            return;
        }
        let Some(item) = self.index.get(at) else {
            return;
        };
        diff_item(
            self.pairing,
            &self.columns,
            item,
            Some(&row.cells),
            self.seen.get(item.code),
            self.at,
            outcome,
        );
    }

    /// Items no page showed (their line items are reported missing, their properties still
    /// diffed) in code order, items without a code, known items gone from the list, and the
    /// item count.
    pub fn finish(self) -> AnaplanPollOutcome {
        let mut outcome = AnaplanPollOutcome {
            items: self.index.items(),
            ..AnaplanPollOutcome::default()
        };
        let left = self
            .index
            .code_order()
            .filter(|&at| !self.met.is_met(at))
            .filter_map(|at| self.index.get(at));
        for item in left {
            diff_item(
                self.pairing,
                &self.columns,
                item,
                None,
                self.seen.get(item.code),
                self.at,
                &mut outcome,
            );
        }
        outcome.problems.extend_from_slice(self.index.problems());
        push_gone(self.pairing, self.seen, self.index, self.at, &mut outcome);
        outcome
    }
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
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("rules/opportunity.toml");
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

    /// Diffing page by page finds what one diff of the whole view finds (in another order),
    /// including an item no page shows.
    #[test]
    fn page_by_page_equals_the_whole_view() {
        let pairing = opportunity();
        let mut seen = seen_a();
        seen.insert("Z".into(), HashMap::new());
        let items = [
            item(Some("N"), "OPP-N", "New"),
            item(Some("A"), "OPP-A", "Acme"),
            item(None, "loose", "x"),
            item(Some("M"), "OPP-M", "Missing row"),
        ];
        let rows = [
            (
                "OPP-A",
                ["12a", "Closed Won", "31/12/2026", "0", "40", "maybe", ""],
            ),
            ("OPP-N", ["1", "Mystery", "", "", "", "true", ""]),
            ("loose", ["", "", "", "", "", "", ""]),
        ];
        let whole = diff(&pairing, &items, &view(&rows), &seen, at()).expect("diff");
        let index = ListIndex::from_items(&pairing, &items).expect("index");
        let mut differ = PageDiff::new(&pairing, &index, &seen, at());
        let mut paged = AnaplanPollOutcome::default();
        for page in rows.chunks(2) {
            paged.merge(differ.page(&view(page)).expect("page"));
        }
        paged.merge(differ.finish());
        let key = |o: &AnaplanPollOutcome| {
            let mut changes: Vec<String> = o.changes.iter().map(|c| format!("{c:?}")).collect();
            changes.sort();
            let mut problems: Vec<String> = o.problems.iter().map(|p| format!("{p:?}")).collect();
            problems.sort();
            let mut new_items = o.new_items.clone();
            new_items.sort();
            (changes, problems, new_items, o.flags.clone(), o.items)
        };
        assert_eq!(key(&paged), key(&whole));
        assert!(
            whole.problems.iter().any(|p| p.code == "M"),
            "{:?}",
            whole.problems
        );
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
