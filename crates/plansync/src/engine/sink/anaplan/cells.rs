//! Cell writes: a CRM value made a cell value ([`cell_value`]), the batch's cells planned
//! for the records that have an item, and the transactional writes, answered call by call
//! as the client reports them; large batches of a pairing with a bulk import go to
//! `import.rs` first.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::anaplan::{CellValue, CellWrite, DimRef, ItemRef, LineItemRef};
use crate::model::{Value, ValueKind};
use crate::rules::Pairing;

use super::AnaplanSink;
use super::answers::{MAX_SPLITS, Run, refused_as_a_whole};
use super::plan::{Op, PlannedCell, RecordPlan};

/// The value a CRM-vocabulary value becomes in a cell of `kind`.
///
/// `Null`: the API takes no null, and a CRM null means "no value". A blank string clears a
/// cell of any format, as a blank value in an import does: a text or list-formatted cell
/// becomes blank, a number reads back as 0, a date as blank, a boolean as false (the
/// simulator accepts `""` for every format; the reference documents the blank clearing text
/// and import values). Writing `0`/`false` instead would store a value the CRM never had.
pub(super) fn cell_value(kind: ValueKind, value: Value) -> Result<CellValue, String> {
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

impl AnaplanSink {
    /// The batch's cells for records that have an item: transactional, or by import.
    pub(super) async fn write_cells(
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
                            DimRef::Id(target.resolved.list_id.clone()),
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
                run.not_reached(c.req, &message);
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

    /// Transactional cell writes. The client splits them under its per-call limits and
    /// reports each call, so each request is answered with its own call's send time, and a
    /// call that fails as a whole answers only the requests it carried; the cells after it
    /// are sent again, unless the failure says the tenant cannot be reached.
    ///
    /// A call Anaplan refused as a whole (one bad cell can do that) is split in halves and
    /// each sent again, down to the cell at fault, so one poisoned value does not take a
    /// whole call's writes with it to `write_failed`; at most [`MAX_SPLITS`] such splits a
    /// batch, so a refusal of everything costs a bounded number of calls.
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
        let max_bytes = self.client.config().max_write_bytes;
        // A cell too large for any call is refused alone instead of failing the batch.
        let mut sendable = Vec::with_capacity(cells.len());
        for c in cells {
            match self.client.cell_too_large(&c.write) {
                Some(size) => run.reject(
                    c.req,
                    format!(
                        "the cell's value makes a {size}-byte write, over the {max_bytes}-byte request limit"
                    ),
                ),
                None => sendable.push(c),
            }
        }
        // Runs of cells still to send, in order; a refused call's cells come back split.
        let mut queue: VecDeque<&[PlannedCell]> = VecDeque::from([&sendable[..]]);
        let mut splits_left = MAX_SPLITS;
        while let Some(rest) = queue.pop_front() {
            if rest.is_empty() {
                continue;
            }
            if let Some(message) = run.down.clone() {
                for c in rest.iter().chain(queue.iter().flat_map(|r| r.iter())) {
                    run.not_reached(c.req, &message);
                }
                return;
            }
            let writes: Vec<CellWrite> = rest.iter().map(|c| c.write.clone()).collect();
            let report = match self
                .client
                .write_cells_by_call(
                    &target.resolved.names.model,
                    &target.resolved.module_id,
                    &writes,
                )
                .await
            {
                Ok(report) => report,
                Err(e) => {
                    // Nothing was sent (the cells could not be split into calls).
                    run.failed_call(rest.iter().map(|c| c.req), "writing cells", &e);
                    continue;
                }
            };
            run.count("cells", report.calls.len() as u64);
            tracing::debug!(target: "plansync::engine", event = "sink_cells_written",
                pairing = %pairing.name,
                cells = writes.len(),
                changed = report.calls.iter().map(|c| c.cells_changed).sum::<u64>(),
                failures = report.failures.len(),
                calls = report.calls.len(),
                stopped = report.stopped.is_some(),
                "wrote cells"
            );
            let mut refused: HashMap<usize, String> = HashMap::new();
            for f in &report.failures {
                refused.insert(f.index, format!("{}: {}", f.failure_type, f.details));
                // Anything but a calculated cell may be an item deleted behind our back:
                // check the item again before its next write.
                if f.failure_type != "cellIsCalculated"
                    && let (Some(c), Some(items)) = (rest.get(f.index), target.items.as_mut())
                {
                    items.remove(&c.code);
                }
            }
            for call in &report.calls {
                for (n, c) in rest
                    .iter()
                    .enumerate()
                    .take(call.cells.end)
                    .skip(call.cells.start)
                {
                    match refused.remove(&n) {
                        Some(why) => run.reject(c.req, why),
                        None => run.ack(c.req, call.sent_at),
                    }
                }
            }
            let Some((failed, e)) = report.stopped else {
                continue;
            };
            let carried = rest.get(failed.clone()).unwrap_or_default();
            let after = rest.get(failed.end..).unwrap_or_default();
            queue.push_front(after);
            if carried.len() > 1 && splits_left > 0 && refused_as_a_whole(&e) {
                splits_left -= 1;
                let (first, second) = carried.split_at(carried.len() / 2);
                tracing::debug!(target: "plansync::engine", event = "sink_call_split", pairing = %pairing.name, cells = carried.len(), error = %e, "a refused call is sent again in halves");
                queue.push_front(second);
                queue.push_front(first);
            } else {
                run.failed_call(carried.iter().map(|c| c.req), "writing cells", &e);
            }
        }
    }
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
}
