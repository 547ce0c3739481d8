//! Checked writes: requests that carry an expected current value are compared against a
//! fresh read of the list and the module (keeping only the checked items' rows), and those
//! whose cell or property changed since it was polled are answered `Stale`, not written.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::anaplan::{AnaplanClient, AnaplanError, ListItem, ViewData, ViewRow};
use crate::engine::anaplan_target::{self, ReadLimits, View};
use crate::engine::write::{WriteOutcome, WriteRequest, lifecycle};
use crate::model::Side;
use crate::rules::Pairing;
use crate::rules::ruleset::AnaplanField;

use super::AnaplanSink;
use super::answers::Run;
use super::items::Target;
use super::plan::{Op, RecordPlan};

impl AnaplanSink {
    /// Reads what Anaplan shows now for the requests that carry an expectation (two reads:
    /// the list, for item names, and the module's default view) and answers `Stale` for
    /// each whose cell or property no longer holds the expected value; those are not
    /// written. The window between this read and the write is a call long; it cannot be
    /// closed, as Anaplan has no conditional write. Only the checked items are kept from
    /// either read (see [`read_checked`]).
    pub(super) async fn check_expectations(
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
                tracing::debug!(target: "plansync::engine", event = "sink_stale",
                    record = %req.record.crm_id,
                    field = %req.field,
                    "the cell changed since it was last read; not written"
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

/// Reads the list and the module for the items `codes`, keeping only theirs, each read as
/// [`anaplan_target`] decides by its size: a plain read of a large model is refused (over
/// 1,000,000 items or cells), and would hold every item and row when not. The error names
/// what was being read.
async fn read_checked(
    client: &AnaplanClient,
    target: &Target,
    codes: &HashSet<&str>,
    run: &mut Run,
) -> Result<Checked, (&'static str, AnaplanError)> {
    const LIST: &str = "reading the list before a checked write";
    const MODULE: &str = "reading the module before a checked write";
    let resolved = &target.resolved;
    let limits = ReadLimits::default();
    // Known from the cache's read (`load_items` runs before any write), unless a failed
    // write emptied it since.
    let known = match target.list_size {
        Some(n) => Some(n),
        None => {
            run.count("list_items", 1);
            anaplan_target::item_count(client, resolved)
                .await
                .map_err(|e| (LIST, e))?
        }
    };

    let mut items = HashMap::new();
    let list = anaplan_target::read_list(
        client,
        resolved,
        limits.list_paged(known),
        &mut |item: ListItem| {
            if let Some(code) = item.code.as_deref().filter(|c| codes.contains(c)) {
                items.insert(code.to_string(), item);
            }
        },
    )
    .await
    .map_err(|e| (LIST, e))?;
    run.count("list_items", list.calls as u64);

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
    let paged = limits.view_paged(known, target.line_items.len());
    let (view, calls) = anaplan_target::read_view(client, resolved, paged)
        .await
        .map_err(|e| (MODULE, e))?;
    run.count("view", calls as u64);
    let mut columns = HashMap::new();
    match view {
        View::Whole(view) => {
            columns = owned(&view);
            view.rows.into_iter().for_each(&mut keep_row);
        }
        View::Pages(mut pages) => {
            while let Some(shape) = pages
                .next_page_each(|_, row| keep_row(row))
                .await
                .map_err(|e| (MODULE, e))?
            {
                if columns.is_empty() {
                    columns = owned(&shape);
                }
            }
            anaplan_target::close_view(pages).await;
        }
    }
    Ok(Checked {
        items,
        columns,
        rows,
    })
}
