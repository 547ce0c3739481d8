//! Bulk writes: the pairing's import looked up once ([`ImportState`]), cells grouped by the
//! line items their record writes into one CSV per group, the upload and the import run,
//! and the failure dump's rows tied back to the requests of their file rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::Utc;

use crate::anaplan::{AnaplanError, CellValue, DumpRowError, TaskKind};
use crate::rules::Pairing;

use super::AnaplanSink;
use super::answers::{Run, permanent};
use super::plan::PlannedCell;

/// The pairing's bulk import as last looked up: kept on its `Target`, so one lookup serves
/// every later batch.
#[derive(Clone)]
pub(super) enum ImportState {
    Ready {
        name: String,
        import_id: String,
        file_id: String,
    },
    /// The configured import cannot be used (not found, no data source); writes go
    /// transactionally, with a warning each batch.
    Unusable(String),
}

/// An import's CSV and how to find the requests of a row.
struct ImportFile {
    csv: Vec<u8>,
    /// The file line each row starts on (1 = the header), in row order, with the row's code.
    row_lines: Vec<(u64, String)>,
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
    /// Writes the cells of record shapes large enough for an import; returns the cells left
    /// for transactional writes.
    ///
    /// An import row sets every column it has, and a blank clears a cell, so records are
    /// grouped by the set of line items they write ("shape") and each shape is its own file:
    /// a record never has a cell cleared that the batch did not ask to write. Shapes of more
    /// than `transactional_max_cells` cells go by import; smaller ones (which would cost more
    /// calls as an import than as part of a cell write) go transactionally.
    pub(super) async fn write_by_import(
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
                tracing::warn!(target: "plansync::engine", event = "sink_import_unusable", pairing = %pairing.name, "bulk import unusable ({why}); writing cells transactionally");
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
                    run.not_reached(i, &message);
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
        let (ws, model) = (
            target.resolved.names.workspace.clone(),
            target.resolved.names.model.clone(),
        );
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
        tracing::debug!(target: "plansync::engine", event = "sink_import_ran",
            pairing = %pairing.name,
            import = %name,
            rows = file.row_lines.len(),
            bytes = file.csv.len(),
            successful = outcome.successful,
            row_errors = outcome.row_errors.len(),
            "ran a bulk import"
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
            tracing::warn!(target: "plansync::engine", event = "sink_import_failed", pairing = %pairing.name, "{message}");
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
            tracing::warn!(target: "plansync::engine", event = "sink_import_failed", pairing = %pairing.name, "{message}");
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
                &target.resolved.names.workspace,
                &target.resolved.names.model,
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
