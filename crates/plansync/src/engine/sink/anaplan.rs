//! The Anaplan sink: turns a batch of [`WriteRequest`]s into as few Anaplan calls as the
//! batch allows, and answers one [`WriteOutcome`] per request.
//!
//! Per pairing (rule file) of the batch, in this order:
//! 1. **Names to ids**, once per pairing and kept: the list, the module, its line items (and,
//!    when a bulk import is configured, the import and its data source file). Names cost
//!    listing calls, and the tenant's budget is about 600 calls a minute.
//! 2. **Item cache**: list items are keyed by code = CRM id. The first write of a pairing reads
//!    the list once (code → item id); later batches use the cache. A large list is read with
//!    a read request, page by page (`read_items`).
//! 3. **Record lifecycle first**: every record whose item is not known is added in one call
//!    (name = code, properties from the batch's `ListProperty` writes) before any of its cells
//!    is written, then the list is read again for the new item ids (and to tell "refused"
//!    from "was already there": a duplicate-code refusal for an item that exists is a success);
//!    a large list is not read again: the new codes are looked up.
//!    A record whose item could not be created has every request rejected and no cell written.
//! 4. `ListProperty` writes of existing items: one update call.
//! 5. Cells (`LineItem` fields and `$deleted_flag`): transactional writes, split exactly as
//!    the client would split them so each call's requests get that call's send time; or, for a
//!    large batch of a pairing with a bulk import configured, a CSV upload and an import whose
//!    failure dump rows are tied back to the requests of their rows.
//! 6. `$delete_item`: one delete call by code; an item already gone counts as deleted.
//!
//! Failures: a per-cell or per-item failure rejects only its requests, with Anaplan's own
//! words. A call that fails as a whole (after the client's retries) answers `Retry` for the
//! requests it carried; requests of calls that succeeded stay `Acked`. When the failure says
//! the tenant cannot be reached at all (the retry budget ran out, the transport failed, the
//! token was refused), the rest of the batch is answered `Retry` without spending more calls.
//!
//! Call counts in the report come from the client's outcomes (`calls`) for writes, one per
//! single-request read, and the difference of the client's `bulk` counter around an import
//! (which includes retries and, if another task shares the client, its bulk calls too).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use tracing::{debug, warn};

use crate::anaplan::chunk::chunk_ranges;
use crate::anaplan::transactional::{LOOKUP_CODES_PER_CALL, encode_cell};
use crate::anaplan::{
    AnaplanClient, AnaplanError, CellValue, CellWrite, DimRef, DumpRowError, ItemRef, LineItemRef,
    ListItem, ListItemWrite, TaskKind, ViewData, ViewRow,
};
use crate::engine::anaplan_poll::{MAX_VIEW_CELLS, PAGED_LIST_ITEMS};
use crate::engine::write::{WriteOutcome, WriteReport, WriteRequest, lifecycle};
use crate::model::{RecordKey, Side, Value, ValueKind};
use crate::rules::ruleset::{AnaplanField, AnaplanTarget};
use crate::rules::{Pairing, RuleSet};

/// How the sink chooses between transactional and bulk writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnaplanSinkSettings {
    /// A batch of more cells than this goes as a bulk import (when the pairing has one).
    pub transactional_max_cells: usize,
    /// Pairing name (rule file stem, e.g. "opportunity") → name of the import definition
    /// in the model that loads that module from a CSV (e.g. "Load Opportunities").
    pub bulk_imports: BTreeMap<String, String>,
}

impl Default for AnaplanSinkSettings {
    /// One transactional call's worth of cells; no bulk imports.
    fn default() -> Self {
        AnaplanSinkSettings {
            transactional_max_cells: 100_000,
            bulk_imports: BTreeMap::new(),
        }
    }
}

/// Writes batches to Anaplan. Holds the resolved ids and item caches of the pairings it has
/// written, so it is meant to live as long as the engine (one per tenant).
pub struct AnaplanSink {
    client: AnaplanClient,
    settings: AnaplanSinkSettings,
    targets: HashMap<String, Target>,
}

/// The ids one pairing's names resolve to, and what the sink knows of its list.
struct Target {
    /// What the ids were resolved from: a reloaded rule file naming other objects
    /// re-resolves.
    names: AnaplanTarget,
    list_id: String,
    module_id: String,
    /// Line item name (trimmed) → ids with that name (more than one: ambiguous).
    line_items: HashMap<String, Vec<String>>,
    /// Item code → item id; `None` until read, and again after a write whose effect on the
    /// list is unknown.
    items: Option<HashMap<String, String>>,
    /// How many items the list had at its last read, those without a code included (the
    /// cache leaves them out): what decides whether the next read is paged.
    list_size: Option<usize>,
    /// Whether the last read of the list went through a read request (it was large, or
    /// Anaplan refused it whole).
    list_paged: bool,
    /// The bulk import, once looked up.
    import: Option<ImportState>,
}

#[derive(Clone)]
enum ImportState {
    Ready {
        name: String,
        import_id: String,
        file_id: String,
    },
    /// The configured import cannot be used (not found, no data source); writes go
    /// transactionally, with a warning each batch.
    Unusable(String),
}

impl Target {
    fn line_item(&self, name: &str) -> Result<String, String> {
        match self.line_items.get(name.trim()).map(Vec::as_slice) {
            Some([one]) => Ok(one.clone()),
            Some(many) if many.len() > 1 => Err(format!(
                "{} line items are named `{name}` in module `{}`; the rule file must name one",
                many.len(),
                self.names.module
            )),
            _ => {
                // A rule file may name a line item by id.
                if self.line_items.values().flatten().any(|id| id == name) {
                    return Ok(name.to_string());
                }
                Err(format!(
                    "no line item `{name}` in module `{}` of model {}",
                    self.names.module, self.names.model
                ))
            }
        }
    }
}

/// What one request asks of Anaplan, once checked against the rule.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    /// A cell of `line_item` (a name; resolved to an id when written) for the record's item.
    Cell {
        line_item: String,
        value: CellValue,
    },
    /// A list property of the record's item.
    Property {
        name: String,
        value: String,
    },
    Ensure,
    Delete,
}

/// The answers being built for one batch.
struct Run {
    outcomes: Vec<Option<WriteOutcome>>,
    items: Vec<(RecordKey, String)>,
    calls: BTreeMap<&'static str, u64>,
    /// Set once a call failed in a way that says the tenant cannot be reached: everything not
    /// yet answered is answered `Retry` with this message, without more calls.
    down: Option<String>,
}

impl Run {
    fn set(&mut self, i: usize, outcome: WriteOutcome) {
        if let Some(slot) = self.outcomes.get_mut(i) {
            *slot = Some(outcome);
        }
    }

    fn reject(&mut self, i: usize, message: impl Into<String>) {
        self.set(
            i,
            WriteOutcome::Rejected {
                message: message.into(),
            },
        );
    }

    fn ack(&mut self, i: usize, at: DateTime<Utc>) {
        self.set(i, WriteOutcome::Acked { at });
    }

    fn retry(&mut self, i: usize, message: &str) {
        self.set(
            i,
            WriteOutcome::Retry {
                message: message.to_string(),
            },
        );
    }

    fn count(&mut self, kind: &'static str, n: u64) {
        if n > 0 {
            *self.calls.entry(kind).or_default() += n;
        }
    }

    /// Notes a whole-call failure: `Retry` for `which`, and the tenant marked down when the
    /// error says so.
    fn failed_call(
        &mut self,
        which: impl IntoIterator<Item = usize>,
        what: &str,
        e: &AnaplanError,
    ) {
        let message = format!("{what}: {e}");
        warn!(error = %e, "Anaplan sink: {what} failed; the writes it carried will be retried");
        for i in which {
            self.retry(i, &message);
        }
        if unreachable(e) && self.down.is_none() {
            self.down = Some(message);
        }
    }

    fn pending(&self, i: usize) -> bool {
        self.outcomes.get(i).is_some_and(Option::is_none)
    }
}

/// Whether an error means the tenant cannot be reached now (so further calls would only burn
/// the retry budget again), rather than that one call was refused.
fn unreachable(e: &AnaplanError) -> bool {
    matches!(
        e,
        AnaplanError::GaveUp { .. }
            | AnaplanError::Transport { .. }
            | AnaplanError::AuthRefused { .. }
            | AnaplanError::Unauthorized { .. }
    )
}

/// Whether a resolution error is a mismatch between the rule file and the model (which
/// retrying will not fix) rather than a failed call.
fn permanent(e: &AnaplanError) -> bool {
    matches!(
        e,
        AnaplanError::NotFound { .. } | AnaplanError::Ambiguous { .. }
    )
}

/// The value a CRM-vocabulary value becomes in a cell of `kind`.
///
/// `Null`: the API takes no null, and a CRM null means "no value". A blank string clears a
/// cell of any format, as a blank value in an import does: a text or list-formatted cell
/// becomes blank, a number reads back as 0, a date as blank, a boolean as false (the
/// simulator accepts `""` for every format; the reference documents the blank clearing text
/// and import values). Writing `0`/`false` instead would store a value the CRM never had.
fn cell_value(kind: ValueKind, value: Value) -> Result<CellValue, String> {
    match (kind, value) {
        (_, Value::Null) => Ok(CellValue::Text(String::new())),
        (ValueKind::Number { .. }, Value::Number(d)) => Ok(CellValue::Number(d)),
        (ValueKind::Text | ValueKind::Picklist, Value::Text(s)) => Ok(CellValue::Text(s)),
        (ValueKind::Boolean, Value::Bool(b)) => Ok(CellValue::Bool(b)),
        (ValueKind::Date, Value::Date(d)) => Ok(CellValue::Date(d)),
        (kind, other) => Err(format!(
            "a {} field cannot take the value `{other}`",
            kind.tag()
        )),
    }
}

/// A cell value as CSV text for an import (the same text the transactional API takes).
fn csv_text(value: &CellValue) -> String {
    match value {
        CellValue::Text(s) => s.clone(),
        CellValue::Number(d) => d.to_string(),
        CellValue::Bool(b) => b.to_string(),
        CellValue::Date(d) => d.format("%Y-%m-%d").to_string(),
    }
}

/// A list property value as text (properties are sent as strings); `Null` clears.
fn property_text(value: &Value) -> String {
    value.to_text().unwrap_or_default()
}

/// What `req` asks for under `pairing`, or why it cannot be done.
fn classify(pairing: &Pairing, req: &WriteRequest) -> Result<Op, String> {
    if lifecycle::is_lifecycle(&req.field) {
        return match req.field.as_str() {
            lifecycle::ENSURE_ITEM => Ok(Op::Ensure),
            lifecycle::DELETE_ITEM => Ok(Op::Delete),
            lifecycle::DELETED_FLAG => {
                let Some(flag) = &pairing.lifecycle.deleted_flag else {
                    return Err(format!(
                        "pairing `{}` has no lifecycle.deleted_flag line item to set",
                        pairing.name
                    ));
                };
                match &req.value {
                    Value::Bool(b) => Ok(Op::Cell {
                        line_item: flag.clone(),
                        value: CellValue::Bool(*b),
                    }),
                    other => Err(format!(
                        "`{}` takes true or false, not `{other}`",
                        lifecycle::DELETED_FLAG
                    )),
                }
            }
            lifecycle::DELETE_RECORD => Err(format!(
                "`{}` deletes the CRM record: not an Anaplan operation",
                lifecycle::DELETE_RECORD
            )),
            other => Err(format!("unknown lifecycle operation `{other}`")),
        };
    }
    let Some(rule) = pairing.field(&req.field) else {
        return Err(format!(
            "no field `{}` in pairing `{}` ({})",
            req.field,
            pairing.name,
            pairing.path.display()
        ));
    };
    let value = rule.to_side(Side::Anaplan, &req.value);
    match &rule.anaplan {
        AnaplanField::LineItem(name) => Ok(Op::Cell {
            line_item: name.clone(),
            value: cell_value(rule.kind, value).map_err(|e| format!("{}: {e}", rule.id))?,
        }),
        AnaplanField::ListProperty(name) => Ok(Op::Property {
            name: name.clone(),
            value: property_text(&value),
        }),
    }
}

/// One record's requests in a pairing's batch.
#[derive(Default)]
struct RecordPlan<'a> {
    key: Option<&'a RecordKey>,
    /// (request index, op), in request order.
    ops: Vec<(usize, Op)>,
}

impl RecordPlan<'_> {
    /// Whether anything but a delete is asked: then the item must exist first.
    fn needs_item(&self) -> bool {
        self.ops.iter().any(|(_, op)| !matches!(op, Op::Delete))
    }
}

/// A cell ready to send: the request it answers, the record's code, and the write.
struct PlannedCell {
    req: usize,
    code: String,
    line_item_name: String,
    write: CellWrite,
}

/// An import's CSV and how to find the requests of a row.
struct ImportFile {
    csv: Vec<u8>,
    /// The file line each row starts on (1 = the header), in row order, with the row's code.
    row_lines: Vec<(u64, String)>,
}

/// Builds the CSV of one import: `Code`, then one column per line item, one row per record.
/// The simulator's import maps columns by header (the key column `Code`, line items by
/// name); a real model's import definition must map the same headers.
fn import_csv(columns: &[String], rows: &[(String, Vec<String>)]) -> ImportFile {
    let mut w = csv::Writer::from_writer(Vec::with_capacity(64 * (rows.len() + 1)));
    let mut header = Vec::with_capacity(columns.len() + 1);
    header.push("Code");
    header.extend(columns.iter().map(String::as_str));
    // Writing to a Vec cannot fail.
    let _ = w.write_record(&header);
    let mut line: u64 = 2;
    let mut row_lines = Vec::with_capacity(rows.len());
    for (code, values) in rows {
        let mut record = Vec::with_capacity(values.len() + 1);
        record.push(code.as_str());
        record.extend(values.iter().map(String::as_str));
        let _ = w.write_record(&record);
        row_lines.push((line, code.clone()));
        // A quoted value keeps its line breaks, so the next row starts that much lower.
        let breaks: usize = record
            .iter()
            .map(|v| v.bytes().filter(|&b| b == b'\n').count())
            .sum();
        line += 1 + breaks as u64;
    }
    ImportFile {
        csv: w.into_inner().unwrap_or_default(),
        row_lines,
    }
}

/// The code of the row a dump row came from: by `_Line_`, else by its `Code` value.
fn dump_row_code(file: &ImportFile, row: &DumpRowError) -> Option<String> {
    if let Some(line) = row.line
        && let Ok(i) = file.row_lines.binary_search_by_key(&line, |(l, _)| *l)
    {
        return file.row_lines.get(i).map(|(_, c)| c.clone());
    }
    row.values
        .iter()
        .find(|(h, _)| h.trim().eq_ignore_ascii_case("Code"))
        .map(|(_, v)| v.trim().to_string())
        .filter(|code| file.row_lines.iter().any(|(_, c)| c == code))
}

impl AnaplanSink {
    pub fn new(client: AnaplanClient, settings: AnaplanSinkSettings) -> AnaplanSink {
        AnaplanSink {
            client,
            settings,
            targets: HashMap::new(),
        }
    }

    pub fn settings(&self) -> &AnaplanSinkSettings {
        &self.settings
    }

    /// Forgets every pairing's item cache (the next write of each pairing reads its list
    /// again), e.g. after items were changed outside plansync.
    pub fn forget_items(&mut self) {
        for t in self.targets.values_mut() {
            t.items = None;
        }
    }

    /// Writes one batch; one outcome per request (by outbox id), never panics, never errors as a whole.
    pub async fn write(&mut self, rules: &RuleSet, batch: &[WriteRequest]) -> WriteReport {
        let mut run = Run {
            outcomes: vec![None; batch.len()],
            items: Vec::new(),
            calls: BTreeMap::new(),
            down: None,
        };
        // Pairings in the order they first appear in the batch.
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, req) in batch.iter().enumerate() {
            let name = req.record.pairing.as_str();
            match groups.iter_mut().find(|(n, _)| *n == name) {
                Some((_, idxs)) => idxs.push(i),
                None => groups.push((name, vec![i])),
            }
        }
        for (name, idxs) in groups {
            let Some(pairing) = rules.pairing(name) else {
                for i in idxs {
                    run.reject(
                        i,
                        format!("unknown pairing `{name}`: no rule file defines it"),
                    );
                }
                continue;
            };
            self.write_pairing(pairing, batch, &idxs, &mut run).await;
        }
        let down = run.down.clone();
        WriteReport {
            outcomes: batch
                .iter()
                .zip(run.outcomes)
                .map(|(req, outcome)| {
                    let outcome = outcome.unwrap_or_else(|| WriteOutcome::Retry {
                        message: down.clone().unwrap_or_else(|| {
                            "the Anaplan sink did not get to this write".to_string()
                        }),
                    });
                    (req.outbox_id, outcome)
                })
                .collect(),
            items: run.items,
            calls: run.calls.into_iter().collect(),
        }
    }

    async fn write_pairing(
        &mut self,
        pairing: &Pairing,
        batch: &[WriteRequest],
        idxs: &[usize],
        run: &mut Run,
    ) {
        // What each request asks; refusals need no call.
        let mut records: BTreeMap<&str, RecordPlan> = BTreeMap::new();
        for &i in idxs {
            let Some(req) = batch.get(i) else { continue };
            match classify(pairing, req) {
                Ok(op) => {
                    let plan = records.entry(req.record.crm_id.as_str()).or_default();
                    plan.key = Some(&req.record);
                    plan.ops.push((i, op));
                }
                Err(message) => run.reject(i, message),
            }
        }
        if records.is_empty() {
            return;
        }
        let all_ops = |records: &BTreeMap<&str, RecordPlan>| -> Vec<usize> {
            records
                .values()
                .flat_map(|p| p.ops.iter().map(|(i, _)| *i))
                .collect()
        };
        if let Some(message) = run.down.clone() {
            for i in all_ops(&records) {
                run.retry(i, &message);
            }
            return;
        }

        // 1. Names to ids.
        if let Err(e) = self.resolve(pairing, run).await {
            if permanent(&e) {
                let message = format!("pairing `{}`: {e}", pairing.name);
                for i in all_ops(&records) {
                    run.reject(i, message.clone());
                }
            } else {
                run.failed_call(all_ops(&records), "resolving the pairing's names", &e);
            }
            return;
        }
        let Some(target) = self.targets.get(&pairing.name) else {
            return;
        };
        // Line items the rule names but the module lacks.
        for plan in records.values_mut() {
            plan.ops.retain(|(i, op)| match op {
                Op::Cell { line_item, .. } => match target.line_item(line_item) {
                    Ok(_) => true,
                    Err(message) => {
                        run.reject(*i, message);
                        false
                    }
                },
                _ => true,
            });
        }

        // 2. The item cache.
        if let Err(e) = self.load_items(pairing, run).await {
            run.failed_call(all_ops(&records), "reading the list's items", &e);
            return;
        }

        // 3. Items first.
        self.create_items(pairing, &mut records, run).await;
        // Ensure requests of items that exist are done; nothing to send.
        let now = Utc::now();
        for plan in records.values() {
            for (i, op) in &plan.ops {
                if matches!(op, Op::Ensure) && run.pending(*i) {
                    run.ack(*i, now);
                }
            }
        }

        // 4. Writes that must not replace an edit not yet polled.
        self.check_expectations(pairing, batch, &mut records, run)
            .await;

        // 5. Properties of existing items.
        self.update_properties(pairing, &records, run).await;

        // 6. Cells.
        self.write_cells(pairing, &records, run).await;

        // 7. Deletes.
        self.delete_items(pairing, &records, run).await;

        // Items the batch's records have (for `record_map`).
        if let Some(items) = self
            .targets
            .get(&pairing.name)
            .and_then(|t| t.items.as_ref())
        {
            for (code, plan) in &records {
                if let (Some(key), Some(id)) = (plan.key, items.get(*code)) {
                    run.items.push((key.clone(), id.clone()));
                }
            }
        }
    }

    /// Reads what Anaplan shows now for the requests that carry an expectation (two reads:
    /// the list, for item names, and the module's default view) and answers `Stale` for
    /// each whose cell or property no longer holds the expected value; those are not
    /// written. The window between this read and the write is a call long; it cannot be
    /// closed, as Anaplan has no conditional write. Only the checked items are kept from
    /// either read (see [`read_checked`]).
    async fn check_expectations(
        &mut self,
        pairing: &Pairing,
        batch: &[WriteRequest],
        records: &mut BTreeMap<&str, RecordPlan<'_>>,
        run: &mut Run,
    ) {
        let checked: Vec<usize> = records
            .values()
            .flat_map(|p| p.ops.iter())
            .filter(|(i, op)| {
                run.pending(*i)
                    && matches!(op, Op::Cell { .. } | Op::Property { .. })
                    && batch
                        .get(*i)
                        .is_some_and(|r| r.expect.is_some() && !lifecycle::is_lifecycle(&r.field))
            })
            .map(|(i, _)| *i)
            .collect();
        if checked.is_empty() {
            return;
        }
        let Some(target) = self.targets.get(&pairing.name) else {
            return;
        };
        let codes: HashSet<&str> = checked
            .iter()
            .filter_map(|i| batch.get(*i))
            .map(|r| r.record.crm_id.as_str())
            .collect();
        let current = match read_checked(&self.client, target, &codes, run).await {
            Ok(current) => current,
            Err((what, e)) => {
                run.failed_call(checked, what, &e);
                return;
            }
        };
        let mut stale = HashSet::new();
        for i in checked {
            let Some(req) = batch.get(i) else { continue };
            let (Some(rule), Some(expect)) = (pairing.field(&req.field), &req.expect) else {
                continue;
            };
            // An item that does not exist yet shows nothing.
            let Some(item) = current.items.get(req.record.crm_id.as_str()) else {
                continue;
            };
            let raw = match &rule.anaplan {
                AnaplanField::LineItem(name) => current
                    .rows
                    .get(item.name.as_str())
                    .zip(current.columns.get(name.as_str()))
                    .and_then(|(cells, c)| cells.get(*c))
                    .cloned()
                    .unwrap_or_default(),
                AnaplanField::ListProperty(name) => {
                    item.properties.get(name).cloned().unwrap_or_default()
                }
            };
            let Ok(current) = rule.normalise(Side::Anaplan, &serde_json::Value::String(raw)) else {
                // What Anaplan shows cannot even be read as the field's type: not the
                // expected value, and the poller will report it as a problem.
                continue;
            };
            let expected = expect.to_kind(rule.kind).unwrap_or_else(|_| expect.clone());
            if current != expected {
                debug!(
                    record = %req.record.crm_id,
                    field = %req.field,
                    "Anaplan sink: the cell changed since it was last read; not written"
                );
                run.set(i, WriteOutcome::Stale { current });
                stale.insert(i);
            }
        }
        if !stale.is_empty() {
            for plan in records.values_mut() {
                plan.ops.retain(|(i, _)| !stale.contains(i));
            }
        }
    }

    /// Resolves (once) the pairing's list, module and line item ids.
    async fn resolve(&mut self, pairing: &Pairing, run: &mut Run) -> Result<(), AnaplanError> {
        if self
            .targets
            .get(&pairing.name)
            .is_some_and(|t| t.names == pairing.anaplan)
        {
            return Ok(());
        }
        let names = pairing.anaplan.clone();
        let model = names.model.as_str();
        run.count("metadata", 1);
        let list_id = self.client.list_id(model, &names.list).await?;
        run.count("metadata", 1);
        let module_id = self.client.module_id(model, &names.module).await?;
        run.count("metadata", 1);
        let all = self.client.list_line_items(model, Some(&module_id)).await?;
        let mut line_items: HashMap<String, Vec<String>> = HashMap::new();
        for li in all {
            line_items
                .entry(li.name.trim().to_string())
                .or_default()
                .push(li.id);
        }
        debug!(
            pairing = %pairing.name,
            list_id = %list_id,
            module_id = %module_id,
            line_items = line_items.len(),
            "Anaplan sink: resolved the pairing's names (3 calls)"
        );
        self.targets.insert(
            pairing.name.clone(),
            Target {
                names,
                list_id,
                module_id,
                line_items,
                items: None,
                list_size: None,
                list_paged: false,
                import: None,
            },
        );
        Ok(())
    }

    /// Reads the list's items into the cache when it is not filled.
    async fn load_items(&mut self, pairing: &Pairing, run: &mut Run) -> Result<(), AnaplanError> {
        let Some(target) = self.targets.get_mut(&pairing.name) else {
            return Ok(());
        };
        if target.items.is_some() {
            return Ok(());
        }
        let items = read_items(&self.client, target, None, run).await?;
        target.set_items(items);
        Ok(())
    }

    /// Adds the items of records that need one and have none; rejects every request of a
    /// record whose item could not be created.
    async fn create_items(
        &mut self,
        pairing: &Pairing,
        records: &mut BTreeMap<&str, RecordPlan<'_>>,
        run: &mut Run,
    ) {
        let Some(target) = self.targets.get_mut(&pairing.name) else {
            return;
        };
        let known = target.items.as_ref();
        let missing: Vec<&str> = records
            .iter()
            .filter(|(code, plan)| {
                plan.needs_item() && !known.is_some_and(|items| items.contains_key(**code))
            })
            .map(|(code, _)| *code)
            .collect();
        if missing.is_empty() {
            return;
        }
        let writes: Vec<ListItemWrite> = missing
            .iter()
            .map(|code| ListItemWrite {
                code: code.to_string(),
                name: Some(code.to_string()),
                properties: records
                    .get(code)
                    .map(|plan| {
                        plan.ops
                            .iter()
                            .filter_map(|(_, op)| match op {
                                Op::Property { name, value } => Some((name.clone(), value.clone())),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                ..ListItemWrite::default()
            })
            .collect();
        let ops_of = |records: &BTreeMap<&str, RecordPlan>, code: &str| -> Vec<usize> {
            records
                .get(code)
                .map(|p| p.ops.iter().map(|(i, _)| *i).collect())
                .unwrap_or_default()
        };
        let at = Utc::now();
        let added = self
            .client
            .add_list_items(&target.names.model, &target.list_id, &writes)
            .await;
        let outcome = match added {
            Ok(o) => o,
            Err(e) => {
                // Some items may have been added: read the list again next time.
                target.items = None;
                let which: Vec<usize> = missing.iter().flat_map(|c| ops_of(records, c)).collect();
                run.failed_call(which, "adding list items", &e);
                for code in &missing {
                    records.remove(code);
                }
                return;
            }
        };
        run.count("list_items", outcome.calls as u64);
        debug!(
            pairing = %pairing.name,
            items = writes.len(),
            added = outcome.added,
            failures = outcome.failures.len(),
            calls = outcome.calls,
            "Anaplan sink: added list items"
        );
        let failures: HashMap<usize, String> = outcome
            .failures
            .iter()
            .map(|f| (f.index, format!("{}: {}", f.failure_type, f.details)))
            .collect();
        // Read the list again: for the new items' ids, and because a refused add of an item
        // that turns out to exist (added by someone else since the cache was filled) is fine.
        let expected = target.list_size.map(|n| n + writes.len());
        let large = target.list_paged || expected.is_some_and(|n| n > PAGED_LIST_ITEMS);
        let reread = if large && target.items.is_some() {
            // A large list is not read again whole for a few new items: their codes are
            // looked up, which tells the same about them.
            let codes: Vec<String> = missing.iter().map(|c| c.to_string()).collect();
            run.count(
                "list_items",
                codes.len().div_ceil(LOOKUP_CODES_PER_CALL) as u64,
            );
            self.client
                .lookup_list_items(&target.names.model, &target.list_id, &codes)
                .await
                .map(|found| target.add_items(found))
        } else {
            read_items(&self.client, target, expected, run)
                .await
                .map(|items| target.set_items(items))
        };
        let fresh = match reread {
            Ok(()) => true,
            Err(e) => {
                target.items = None;
                warn!(error = %e, pairing = %pairing.name,
                    "Anaplan sink: could not read the list after adding items");
                false
            }
        };
        for (n, code) in missing.iter().enumerate() {
            let exists = target
                .items
                .as_ref()
                .is_some_and(|items| items.contains_key(*code));
            let refused = failures.get(&n);
            let ops = ops_of(records, code);
            match (exists, refused, fresh) {
                // Created, or already there: the properties went with the add only when it
                // was not refused.
                (true, None, _) | (false, None, false) => {
                    if let Some(plan) = records.get_mut(code) {
                        for (i, op) in &plan.ops {
                            if matches!(op, Op::Property { .. } | Op::Ensure) {
                                run.ack(*i, at);
                            }
                        }
                        plan.ops
                            .retain(|(_, op)| !matches!(op, Op::Property { .. }));
                    }
                }
                (true, Some(_), _) => {
                    // It exists after all; its properties still need an update.
                }
                (false, Some(why), true) => {
                    for i in ops {
                        run.reject(i, format!("list item could not be created: {why}"));
                    }
                    records.remove(code);
                }
                (false, Some(why), false) => {
                    for i in ops {
                        run.retry(
                            i,
                            &format!(
                                "list item was refused ({why}) and the list could not be read to check whether it exists"
                            ),
                        );
                    }
                    records.remove(code);
                }
                (false, None, true) => {
                    for i in ops {
                        run.reject(
                            i,
                            "list item could not be created: Anaplan accepted the add but the item is not in the list",
                        );
                    }
                    records.remove(code);
                }
            }
        }
    }

    /// One update call for the properties of items that already existed.
    async fn update_properties(
        &mut self,
        pairing: &Pairing,
        records: &BTreeMap<&str, RecordPlan<'_>>,
        run: &mut Run,
    ) {
        if run.down.is_some() {
            return;
        }
        let Some(target) = self.targets.get(&pairing.name) else {
            return;
        };
        let mut writes = Vec::new();
        let mut carried: Vec<Vec<usize>> = Vec::new();
        for (code, plan) in records {
            let props: Vec<(usize, &String, &String)> = plan
                .ops
                .iter()
                .filter(|(i, _)| run.pending(*i))
                .filter_map(|(i, op)| match op {
                    Op::Property { name, value } => Some((*i, name, value)),
                    _ => None,
                })
                .collect();
            if props.is_empty() {
                continue;
            }
            writes.push(ListItemWrite {
                code: code.to_string(),
                properties: props
                    .iter()
                    .map(|(_, n, v)| ((*n).clone(), (*v).clone()))
                    .collect(),
                ..ListItemWrite::default()
            });
            carried.push(props.iter().map(|(i, _, _)| *i).collect());
        }
        if writes.is_empty() {
            return;
        }
        let at = Utc::now();
        match self
            .client
            .update_list_items(&target.names.model, &target.list_id, &writes)
            .await
        {
            Ok(outcome) => {
                run.count("list_items", outcome.calls as u64);
                debug!(
                    pairing = %pairing.name,
                    items = writes.len(),
                    updated = outcome.updated,
                    failures = outcome.failures.len(),
                    calls = outcome.calls,
                    "Anaplan sink: updated list item properties"
                );
                let failures: HashMap<usize, String> = outcome
                    .failures
                    .iter()
                    .map(|f| (f.index, format!("{}: {}", f.failure_type, f.details)))
                    .collect();
                for (n, reqs) in carried.iter().enumerate() {
                    for &i in reqs {
                        match failures.get(&n) {
                            Some(why) => run.reject(i, why.clone()),
                            None => run.ack(i, at),
                        }
                    }
                }
            }
            Err(e) => {
                run.failed_call(carried.concat(), "updating list item properties", &e);
            }
        }
    }

    /// The batch's cells for records that have an item: transactional, or by import.
    async fn write_cells(
        &mut self,
        pairing: &Pairing,
        records: &BTreeMap<&str, RecordPlan<'_>>,
        run: &mut Run,
    ) {
        let Some(target) = self.targets.get(&pairing.name) else {
            return;
        };
        let mut cells: Vec<PlannedCell> = Vec::new();
        for (code, plan) in records {
            for (i, op) in &plan.ops {
                let Op::Cell { line_item, value } = op else {
                    continue;
                };
                if !run.pending(*i) {
                    continue;
                }
                // Checked when the ops were planned; a failure here cannot happen.
                let Ok(li) = target.line_item(line_item) else {
                    continue;
                };
                cells.push(PlannedCell {
                    req: *i,
                    code: code.to_string(),
                    line_item_name: line_item.clone(),
                    write: CellWrite {
                        line_item: LineItemRef::Id(li),
                        dimensions: vec![(
                            DimRef::Id(target.list_id.clone()),
                            ItemRef::Code(code.to_string()),
                        )],
                        value: value.clone(),
                    },
                });
            }
        }
        if cells.is_empty() {
            return;
        }
        if let Some(message) = run.down.clone() {
            for c in &cells {
                run.retry(c.req, &message);
            }
            return;
        }
        let bulk = cells.len() > self.settings.transactional_max_cells
            && self.settings.bulk_imports.contains_key(&pairing.name);
        let transactional = if bulk {
            self.write_by_import(pairing, cells, run).await
        } else {
            cells
        };
        self.write_transactional(pairing, transactional, run).await;
    }

    /// Transactional cell writes, split the way the client splits them (so each call's
    /// requests get that call's time), at most 100,000 cells and 15 MB a call.
    async fn write_transactional(
        &mut self,
        pairing: &Pairing,
        cells: Vec<PlannedCell>,
        run: &mut Run,
    ) {
        if cells.is_empty() {
            return;
        }
        let Some(target) = self.targets.get_mut(&pairing.name) else {
            return;
        };
        let cfg = self.client.config();
        let (max_cells, max_bytes) = (cfg.max_cells_per_write, cfg.max_write_bytes);
        // A cell too large for any call is refused alone instead of failing the batch.
        let mut sendable = Vec::with_capacity(cells.len());
        let mut sizes = Vec::with_capacity(cells.len());
        for c in cells {
            let size = encode_cell(&c.write).len();
            if size.saturating_add(2) > max_bytes {
                run.reject(
                    c.req,
                    format!(
                        "the cell's value makes a {size}-byte write, over the {max_bytes}-byte request limit"
                    ),
                );
            } else {
                sizes.push(size);
                sendable.push(c);
            }
        }
        let ranges = chunk_ranges(&sizes, max_cells, max_bytes, 2)
            .unwrap_or_else(|_| (0..sendable.len()).map(|i| i..i + 1).collect());
        for range in ranges {
            let Some(chunk) = sendable.get(range.clone()) else {
                continue;
            };
            if let Some(message) = run.down.clone() {
                for c in chunk {
                    run.retry(c.req, &message);
                }
                continue;
            }
            let writes: Vec<CellWrite> = chunk.iter().map(|c| c.write.clone()).collect();
            let at = Utc::now();
            match self
                .client
                .write_cells(&target.names.model, &target.module_id, &writes)
                .await
            {
                Ok(outcome) => {
                    run.count("cells", outcome.calls as u64);
                    debug!(
                        pairing = %pairing.name,
                        cells = writes.len(),
                        changed = outcome.cells_changed,
                        failures = outcome.failures.len(),
                        calls = outcome.calls,
                        "Anaplan sink: wrote cells"
                    );
                    let mut refused: HashMap<usize, String> = HashMap::new();
                    for f in &outcome.failures {
                        refused.insert(f.index, format!("{}: {}", f.failure_type, f.details));
                        // Anything but a calculated cell may be an item deleted behind our
                        // back: check the item again before its next write.
                        if f.failure_type != "cellIsCalculated"
                            && let (Some(c), Some(items)) =
                                (chunk.get(f.index), target.items.as_mut())
                        {
                            items.remove(&c.code);
                        }
                    }
                    for (n, c) in chunk.iter().enumerate() {
                        match refused.remove(&n) {
                            Some(why) => run.reject(c.req, why),
                            None => run.ack(c.req, at),
                        }
                    }
                }
                Err(e) => {
                    run.failed_call(chunk.iter().map(|c| c.req), "writing cells", &e);
                }
            }
        }
    }

    /// Writes the cells of record shapes large enough for an import; returns the cells left
    /// for transactional writes.
    ///
    /// An import row sets every column it has, and a blank clears a cell, so records are
    /// grouped by the set of line items they write ("shape") and each shape is its own file:
    /// a record never has a cell cleared that the batch did not ask to write. Shapes of more
    /// than `transactional_max_cells` cells go by import; smaller ones (which would cost more
    /// calls as an import than as part of a cell write) go transactionally.
    async fn write_by_import(
        &mut self,
        pairing: &Pairing,
        cells: Vec<PlannedCell>,
        run: &mut Run,
    ) -> Vec<PlannedCell> {
        let import = match self.import_state(pairing, run).await {
            Ok(ImportState::Ready {
                name,
                import_id,
                file_id,
            }) => (name, import_id, file_id),
            Ok(ImportState::Unusable(why)) => {
                warn!(pairing = %pairing.name, "Anaplan sink: bulk import unusable ({why}); writing cells transactionally");
                return cells;
            }
            Err(e) => {
                run.failed_call(
                    cells.iter().map(|c| c.req).collect::<Vec<_>>(),
                    "looking up the bulk import",
                    &e,
                );
                return Vec::new();
            }
        };
        // Shape → (record code → cells of the record).
        let mut by_record: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (n, c) in cells.iter().enumerate() {
            by_record.entry(c.code.as_str()).or_default().push(n);
        }
        let mut shapes: BTreeMap<BTreeSet<&str>, Vec<&str>> = BTreeMap::new();
        for (code, ns) in &by_record {
            let shape: BTreeSet<&str> = ns
                .iter()
                .filter_map(|&n| cells.get(n))
                .map(|c| c.line_item_name.as_str())
                .collect();
            shapes.entry(shape).or_default().push(code);
        }
        let mut leftover: Vec<usize> = Vec::new();
        let mut imports: Vec<(Vec<String>, Vec<&str>)> = Vec::new();
        for (shape, codes) in shapes {
            let count = shape.len() * codes.len();
            if count > self.settings.transactional_max_cells {
                imports.push((shape.into_iter().map(str::to_string).collect(), codes));
            } else {
                for code in codes {
                    leftover.extend(by_record.get(code).into_iter().flatten());
                }
            }
        }
        for (columns, codes) in imports {
            let mut rows = Vec::with_capacity(codes.len());
            let mut reqs_of: HashMap<String, Vec<usize>> = HashMap::new();
            for code in &codes {
                let ns = by_record.get(code).cloned().unwrap_or_default();
                let mut values = vec![String::new(); columns.len()];
                for &n in &ns {
                    let Some(c) = cells.get(n) else { continue };
                    if let Some(col) = columns.iter().position(|x| *x == c.line_item_name)
                        && let Some(slot) = values.get_mut(col)
                    {
                        *slot = csv_text(&c.write.value);
                    }
                    reqs_of.entry(code.to_string()).or_default().push(c.req);
                }
                rows.push((code.to_string(), values));
            }
            let file = import_csv(&columns, &rows);
            let all: Vec<usize> = reqs_of.values().flatten().copied().collect();
            if let Some(message) = run.down.clone() {
                for i in all {
                    run.retry(i, &message);
                }
                continue;
            }
            self.run_import(pairing, &import, &file, &reqs_of, all, run)
                .await;
        }
        let mut keep: Vec<Option<PlannedCell>> = cells.into_iter().map(Some).collect();
        leftover
            .into_iter()
            .filter_map(|n| keep.get_mut(n).and_then(Option::take))
            .collect()
    }

    /// Uploads one import file, runs the import, and answers the requests of its rows.
    async fn run_import(
        &mut self,
        pairing: &Pairing,
        (name, import_id, file_id): &(String, String, String),
        file: &ImportFile,
        reqs_of: &HashMap<String, Vec<usize>>,
        all: Vec<usize>,
        run: &mut Run,
    ) {
        let Some(target) = self.targets.get_mut(&pairing.name) else {
            return;
        };
        let (ws, model) = (target.names.workspace.clone(), target.names.model.clone());
        let before = self.client.stats().bulk;
        let uploaded = self
            .client
            .upload_file(&ws, &model, file_id, &file.csv)
            .await;
        if let Err(e) = uploaded {
            run.count("import", self.client.stats().bulk.saturating_sub(before));
            run.failed_call(all, &format!("uploading the file of import `{name}`"), &e);
            return;
        }
        let at = Utc::now();
        let result = self.client.run_import(&ws, &model, import_id).await;
        run.count("import", self.client.stats().bulk.saturating_sub(before));
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                run.failed_call(all, &format!("running import `{name}`"), &e);
                return;
            }
        };
        debug!(
            pairing = %pairing.name,
            import = %name,
            rows = file.row_lines.len(),
            bytes = file.csv.len(),
            successful = outcome.successful,
            row_errors = outcome.row_errors.len(),
            "Anaplan sink: ran a bulk import"
        );
        let failed: Vec<&DumpRowError> = outcome
            .row_errors
            .iter()
            .filter(|r| !r.status.trim().eq_ignore_ascii_case("W"))
            .collect();
        if !outcome.successful && failed.is_empty() {
            // Failed as a whole (no rows to blame): nothing is known to be loaded.
            let detail: Vec<String> = outcome
                .result
                .details
                .iter()
                .filter_map(|d| d.local_message_text.clone())
                .collect();
            let message = format!(
                "import `{name}` did not succeed: {}",
                if detail.is_empty() {
                    "no detail given".to_string()
                } else {
                    detail.join("; ")
                }
            );
            warn!(pairing = %pairing.name, "Anaplan sink: {message}");
            for i in all {
                run.retry(i, &message);
            }
            return;
        }
        let mut refused: HashMap<String, String> = HashMap::new();
        let mut unplaced = Vec::new();
        for row in failed {
            let why = if row.errors.is_empty() {
                "the row was refused (no message)".to_string()
            } else {
                row.errors.join("; ")
            };
            match dump_row_code(file, row) {
                Some(code) => {
                    refused.insert(code, why);
                }
                None => unplaced.push(why),
            }
        }
        if !unplaced.is_empty() {
            // A dump row that matches no row of the file: which writes it concerns is
            // unknown, so none of them can be called done.
            let message = format!(
                "import `{name}` refused rows that could not be matched to the file: {}",
                unplaced.join("; ")
            );
            warn!(pairing = %pairing.name, "Anaplan sink: {message}");
            for (code, reqs) in reqs_of {
                for &i in reqs {
                    match refused.get(code) {
                        Some(why) => run.reject(i, format!("import `{name}`: {why}")),
                        None => run.retry(i, &message),
                    }
                }
            }
            return;
        }
        for (code, reqs) in reqs_of {
            for &i in reqs {
                match refused.get(code) {
                    Some(why) => run.reject(i, format!("import `{name}`: {why}")),
                    None => run.ack(i, at),
                }
            }
        }
    }

    /// The pairing's bulk import, looked up once. `Err` only for a failed call.
    async fn import_state(
        &mut self,
        pairing: &Pairing,
        run: &mut Run,
    ) -> Result<ImportState, AnaplanError> {
        let Some(name) = self.settings.bulk_imports.get(&pairing.name).cloned() else {
            return Ok(ImportState::Unusable("no import configured".into()));
        };
        let Some(target) = self.targets.get_mut(&pairing.name) else {
            return Ok(ImportState::Unusable("pairing not resolved".into()));
        };
        if let Some(state) = &target.import {
            return Ok(state.clone());
        }
        run.count("metadata", 1);
        let found = self
            .client
            .definition(
                &target.names.workspace,
                &target.names.model,
                TaskKind::Import,
                &name,
            )
            .await;
        let state = match found {
            Ok(def) => match def.import_data_source_id {
                Some(file_id) if !file_id.is_empty() => ImportState::Ready {
                    name: def.name,
                    import_id: def.id,
                    file_id,
                },
                _ => ImportState::Unusable(format!("import `{name}` names no data source file")),
            },
            Err(e) if permanent(&e) => ImportState::Unusable(e.to_string()),
            Err(e) => return Err(e),
        };
        target.import = Some(state.clone());
        Ok(state)
    }

    /// Deletes the items of `$delete_item` requests; an item already gone counts as deleted.
    async fn delete_items(
        &mut self,
        pairing: &Pairing,
        records: &BTreeMap<&str, RecordPlan<'_>>,
        run: &mut Run,
    ) {
        let mut codes = Vec::new();
        let mut carried = Vec::new();
        for (code, plan) in records {
            for (i, op) in &plan.ops {
                if matches!(op, Op::Delete) && run.pending(*i) {
                    codes.push(code.to_string());
                    carried.push(*i);
                }
            }
        }
        if codes.is_empty() {
            return;
        }
        if let Some(message) = run.down.clone() {
            for i in carried {
                run.retry(i, &message);
            }
            return;
        }
        let Some(target) = self.targets.get_mut(&pairing.name) else {
            return;
        };
        let at = Utc::now();
        let outcome = match self
            .client
            .delete_list_items(&target.names.model, &target.list_id, &codes)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                target.items = None;
                run.failed_call(carried, "deleting list items", &e);
                return;
            }
        };
        run.count("list_items", outcome.calls as u64);
        debug!(
            pairing = %pairing.name,
            items = codes.len(),
            deleted = outcome.deleted,
            failures = outcome.failures.len(),
            calls = outcome.calls,
            "Anaplan sink: deleted list items"
        );
        if let Some(items) = target.items.as_mut() {
            for code in &codes {
                items.remove(code);
            }
        }
        if outcome.failures.is_empty() {
            for i in carried {
                run.ack(i, at);
            }
            return;
        }
        // A refused delete of an item that is not there is done; tell the two apart by
        // reading the list rather than by the wording of the failure.
        let present = match read_items(&self.client, target, target.list_size, run).await {
            Ok(items) => {
                let present: HashSet<String> = codes
                    .iter()
                    .filter(|c| items.ids.contains_key(*c))
                    .cloned()
                    .collect();
                target.set_items(items);
                Some(present)
            }
            Err(e) => {
                target.items = None;
                warn!(error = %e, "Anaplan sink: could not read the list after a refused delete");
                None
            }
        };
        let failures: HashMap<usize, String> = outcome
            .failures
            .iter()
            .map(|f| (f.index, format!("{}: {}", f.failure_type, f.details)))
            .collect();
        for (n, i) in carried.into_iter().enumerate() {
            let code = codes.get(n).map(String::as_str).unwrap_or("");
            match (failures.get(&n), &present) {
                (None, _) => run.ack(i, at),
                (Some(_), Some(p)) if !p.contains(code) => run.ack(i, at),
                (Some(why), Some(_)) => run.reject(i, format!("list item not deleted: {why}")),
                (Some(why), None) => run.retry(
                    i,
                    &format!(
                        "list item delete refused ({why}) and the list could not be read to check it"
                    ),
                ),
            }
        }
    }
}

/// One read of the list's items: code → id (items without a code are not plansync's).
///
/// A list of more than [`PAGED_LIST_ITEMS`] items, or one Anaplan refuses to return whole
/// (over 1,000,000 items), is read with a list read request, each item folded into the map as
/// its page is parsed: the plain read would hold every parsed item (ids, parents, every
/// property: about 770 bytes each) beside the map. The size decides from `expected` (what the
/// cache held, plus the items just added), or else from the list's item count, one call.
async fn read_items(
    client: &AnaplanClient,
    target: &Target,
    expected: Option<usize>,
    run: &mut Run,
) -> Result<ListRead, AnaplanError> {
    let (model, list) = (&target.names.model, &target.list_id);
    let count = match expected {
        Some(n) => Some(n),
        None => {
            run.count("list_items", 1);
            list_size(client, target).await?
        }
    };
    let mut read = ListRead {
        ids: HashMap::new(),
        size: 0,
        paged: false,
    };
    let mut keep = |item: ListItem| {
        read.size += 1;
        if let Some(code) = item.code.filter(|c| !c.is_empty()) {
            read.ids.insert(code, item.id);
        }
    };
    if count.is_none_or(|n| n <= PAGED_LIST_ITEMS) {
        run.count("list_items", 1);
        match client.list_items(model, list).await {
            Ok(items) => {
                debug!(list = %target.names.list, items = items.len(),
                    "Anaplan sink: read the list's items");
                items.into_iter().for_each(keep);
                return Ok(read);
            }
            Err(e) if e.is_over_read_limit() => {
                debug!(list = %target.names.list,
                    "Anaplan sink: the list is over the read limit: reading it in pages");
            }
            Err(e) => return Err(e),
        }
    }
    // One call in the counts, as the poller counts a paged read.
    run.count("list_items", 1);
    read_list_each(client, target, &mut keep).await?;
    read.paged = true;
    Ok(read)
}

/// One read of the list: its items' ids by code, how many items it had, and whether it
/// was read through a read request.
struct ListRead {
    ids: HashMap<String, String>,
    size: usize,
    paged: bool,
}

impl Target {
    fn set_items(&mut self, read: ListRead) {
        self.items = Some(read.ids);
        self.list_size = Some(read.size);
        self.list_paged = read.paged;
    }

    /// Items found by a lookup, into the cache (which must be filled).
    fn add_items(&mut self, found: Vec<ListItem>) {
        let Some(items) = self.items.as_mut() else {
            return;
        };
        for item in found {
            if let Some(code) = item.code.filter(|c| !c.is_empty())
                && items.insert(code, item.id).is_none()
            {
                self.list_size = self.list_size.map(|n| n + 1);
            }
        }
    }
}

/// The list's item count (one call), `None` if Anaplan's answer carries none readable: then
/// a plain read (and its refusal for size) decides.
async fn list_size(client: &AnaplanClient, target: &Target) -> Result<Option<usize>, AnaplanError> {
    match client
        .list_item_count(&target.names.model, &target.list_id)
        .await
    {
        Ok(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Err(e @ AnaplanError::Decode { .. }) => {
            debug!(list = %target.names.list, error = %e,
                "Anaplan sink: no item count; reading the list whole");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The list through a read request, each item handed to `each` as its page is parsed.
async fn read_list_each(
    client: &AnaplanClient,
    target: &Target,
    each: &mut impl FnMut(ListItem),
) -> Result<(), AnaplanError> {
    let names = &target.names;
    let mut pages = client
        .read_list_pages(&names.workspace, &names.model, &target.list_id)
        .await?;
    let mut items = 0;
    while let Some(n) = pages.next_page_each(&mut *each).await? {
        items += n;
    }
    if let Err(e) = pages.finish().await {
        // The pages are read; Anaplan reclaims the request after 30 minutes anyway.
        debug!(error = %e, "Anaplan sink: could not delete a read request");
    }
    debug!(list = %names.list, items,
        "Anaplan sink: read the list's items through a read request");
    Ok(())
}

/// What Anaplan shows now for the items of checked writes, and nothing else.
struct Checked {
    /// Item code → the item (its name is the module's row label; its properties).
    items: HashMap<String, ListItem>,
    /// The module's column of each line item.
    columns: HashMap<String, usize>,
    /// Row label → cells, for the checked items' rows only.
    rows: HashMap<String, Vec<String>>,
}

/// Reads the list and the module for the items `codes`, keeping only theirs. Each is read
/// whole when small. A list of more than [`PAGED_LIST_ITEMS`] items, a module of more than
/// [`MAX_VIEW_CELLS`] cells, or either refused by Anaplan for its size, is read with a read
/// request, page by page: a plain read of a large model is refused (over 1,000,000 items or
/// cells), and would hold every item and row when not. The error names what was being read.
async fn read_checked(
    client: &AnaplanClient,
    target: &Target,
    codes: &HashSet<&str>,
    run: &mut Run,
) -> Result<Checked, (&'static str, AnaplanError)> {
    const LIST: &str = "reading the list before a checked write";
    const MODULE: &str = "reading the module before a checked write";
    let (model, module) = (&target.names.model, &target.module_id);
    // Known from the cache's read (`load_items` runs before any write), unless a failed
    // write emptied it since.
    let known = match target.list_size {
        Some(n) => n,
        None => {
            run.count("list_items", 1);
            list_size(client, target)
                .await
                .map_err(|e| (LIST, e))?
                .unwrap_or(0)
        }
    };

    let mut items = HashMap::new();
    let mut keep_item = |item: ListItem| {
        if let Some(code) = item.code.as_deref().filter(|c| codes.contains(c)) {
            items.insert(code.to_string(), item);
        }
    };
    let mut paged = known > PAGED_LIST_ITEMS;
    if !paged {
        run.count("list_items", 1);
        match client.list_items(model, &target.list_id).await {
            Ok(all) => all.into_iter().for_each(&mut keep_item),
            Err(e) if e.is_over_read_limit() => paged = true,
            Err(e) => return Err((LIST, e)),
        }
    }
    if paged {
        run.count("list_items", 1);
        read_list_each(client, target, &mut keep_item)
            .await
            .map_err(|e| (LIST, e))?;
    }

    let names: HashSet<String> = items.values().map(|i| i.name.clone()).collect();
    let mut rows = HashMap::new();
    let mut keep_row = |row: ViewRow| {
        if let Some(label) = row.coordinates.last().filter(|l| names.contains(*l)) {
            rows.insert(label.clone(), row.cells);
        }
    };
    let owned = |view: &ViewData| -> HashMap<String, usize> {
        view.column_index()
            .into_iter()
            .map(|(name, c)| (name.to_string(), c))
            .collect()
    };
    let mut columns = HashMap::new();
    let mut paged = known.saturating_mul(target.line_items.len()) > MAX_VIEW_CELLS;
    if !paged {
        run.count("view", 1);
        match client.read_view_json(model, module, &[]).await {
            Ok(view) => {
                columns = owned(&view);
                view.rows.into_iter().for_each(&mut keep_row);
            }
            Err(e) if e.is_over_read_limit() => paged = true,
            Err(e) => return Err((MODULE, e)),
        }
    }
    if paged {
        run.count("view", 1);
        let mut pages = client
            .read_view_pages(&target.names.workspace, model, module)
            .await
            .map_err(|e| (MODULE, e))?;
        while let Some(shape) = pages
            .next_page_each(|_, row| keep_row(row))
            .await
            .map_err(|e| (MODULE, e))?
        {
            if columns.is_empty() {
                columns = owned(&shape);
            }
        }
        if let Err(e) = pages.finish().await {
            debug!(error = %e, "Anaplan sink: could not delete a read request");
        }
    }
    Ok(Checked {
        items,
        columns,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Decimal;
    use chrono::NaiveDate;

    #[test]
    fn values_become_cells_of_their_kind_and_null_clears() {
        let d = Decimal::parse("12345678901234567.25", 2).unwrap();
        assert_eq!(
            cell_value(ValueKind::Number { scale: 2 }, Value::Number(d)),
            Ok(CellValue::Number(d))
        );
        assert_eq!(
            cell_value(ValueKind::Picklist, Value::Text("Won".into())),
            Ok(CellValue::Text("Won".into()))
        );
        assert_eq!(
            cell_value(ValueKind::Boolean, Value::Bool(true)),
            Ok(CellValue::Bool(true))
        );
        let day = NaiveDate::from_ymd_opt(2026, 12, 18).unwrap();
        assert_eq!(
            cell_value(ValueKind::Date, Value::Date(day)),
            Ok(CellValue::Date(day))
        );
        for kind in [
            ValueKind::Text,
            ValueKind::Number { scale: 0 },
            ValueKind::Boolean,
            ValueKind::Date,
        ] {
            assert_eq!(
                cell_value(kind, Value::Null),
                Ok(CellValue::Text(String::new()))
            );
        }
        let err =
            cell_value(ValueKind::Number { scale: 2 }, Value::Text("abc".into())).unwrap_err();
        assert!(err.contains("number:2") && err.contains("abc"), "{err}");
    }

    #[test]
    fn csv_rows_know_their_lines_even_with_line_breaks_in_values() {
        let columns = vec!["Amount".to_string(), "Note".to_string()];
        let rows = vec![
            ("A1".to_string(), vec!["1.50".into(), "two\nlines".into()]),
            ("B2".to_string(), vec!["".into(), "x, \"y\"".into()]),
            ("C3".to_string(), vec!["3".into(), "".into()]),
        ];
        let file = import_csv(&columns, &rows);
        let text = String::from_utf8(file.csv.clone()).unwrap();
        assert!(text.starts_with("Code,Amount,Note\n"), "{text}");
        assert_eq!(
            file.row_lines,
            vec![(2, "A1".into()), (4, "B2".into()), (5, "C3".into())]
        );
        // The lines agree with a CSV reader's own positions.
        let mut rdr = csv::Reader::from_reader(file.csv.as_slice());
        let starts: Vec<u64> = rdr
            .records()
            .map(|r| r.unwrap().position().unwrap().line())
            .collect();
        assert_eq!(starts, vec![2, 4, 5]);
        let by_line = DumpRowError {
            line: Some(4),
            status: "E".into(),
            errors: vec!["bad".into()],
            values: vec![],
        };
        assert_eq!(dump_row_code(&file, &by_line).as_deref(), Some("B2"));
        let by_code = DumpRowError {
            line: None,
            status: "E".into(),
            errors: vec![],
            values: vec![("Code".into(), "C3".into())],
        };
        assert_eq!(dump_row_code(&file, &by_code).as_deref(), Some("C3"));
        let stranger = DumpRowError {
            line: Some(99),
            status: "E".into(),
            errors: vec![],
            values: vec![("Code".into(), "ZZ".into())],
        };
        assert_eq!(dump_row_code(&file, &stranger), None);
    }

    #[test]
    fn unreachable_is_only_said_of_errors_about_the_tenant() {
        let gave_up = AnaplanError::GaveUp {
            method: "POST".into(),
            path: "/x".into(),
            attempts: 3,
            elapsed: std::time::Duration::from_secs(1),
            last: "503".into(),
        };
        assert!(unreachable(&gave_up));
        let refused = AnaplanError::Status {
            method: "POST".into(),
            path: "/x".into(),
            status: 400,
            body: String::new(),
        };
        assert!(!unreachable(&refused));
        assert!(permanent(&AnaplanError::NotFound {
            kind: "module",
            name: "M".into(),
            model: "X".into()
        }));
        assert!(!permanent(&gave_up));
    }
}
