//! `plansync exceptions list`.

use std::io::Write;

use chrono::{DateTime, Utc};

use super::columns::ListColumns;
use super::rows::ExceptionRow;
use super::table::{LineTable, TableWidth};
use super::{Format, ReviewError};
use crate::store::{ExceptionFilter, Store};

/// How the table form of a list looks; JSON and CSV always carry every field in full.
#[derive(Debug, Clone)]
pub struct ListTable {
    pub columns: ListColumns,
    pub width: TableWidth,
    /// What ages are counted from.
    pub now: DateTime<Utc>,
}

impl Default for ListTable {
    fn default() -> Self {
        ListTable {
            columns: ListColumns::default(),
            width: TableWidth::default(),
            now: Utc::now(),
        }
    }
}

/// Prints the exceptions `filter` selects; returns how many were printed.
pub fn list(
    store: &Store,
    filter: &ExceptionFilter,
    format: Format,
    layout: &ListTable,
    out: &mut dyn Write,
) -> Result<usize, ReviewError> {
    let exceptions = store.list_exceptions(filter)?;
    match format {
        Format::Json => {
            let rows: Vec<ExceptionRow<'_>> = exceptions.iter().map(Into::into).collect();
            serde_json::to_writer_pretty(&mut *out, &rows)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut csv = super::csv_out::CsvOut::new(&mut *out);
            if exceptions.is_empty() {
                // serde writes the header with the first row; scripts still want it.
                csv.header(&EXCEPTION_CSV_HEADER)?;
            }
            for e in &exceptions {
                csv.serialize(ExceptionRow::from(e))?;
            }
            csv.flush()?;
        }
        Format::Table => {
            let total = store.count_exceptions(filter)?;
            if exceptions.is_empty() {
                writeln!(out, "No exceptions match ({total} in the selection).")?;
                return Ok(0);
            }
            let columns = layout.columns.resolve(filter);
            let header: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
            let mut table = LineTable::new(&header, layout.width);
            for (index, column) in columns.iter().enumerate() {
                if column.keep_whole() {
                    table.keep_whole(index);
                }
            }
            for e in &exceptions {
                table.add_row(columns.iter().map(|c| c.cell(e, layout.now)));
            }
            writeln!(out, "{table}")?;
            writeln!(out, "{} of {total} matching exceptions", exceptions.len())?;
        }
    }
    Ok(exceptions.len())
}

/// The CSV header, written by hand only when there is no row to derive it from. Must match
/// the fields of `ExceptionRow` (a test checks).
pub(crate) const EXCEPTION_CSV_HEADER: [&str; 21] = [
    "id",
    "kind",
    "status",
    "object",
    "pairing",
    "record",
    "field",
    "value_kind",
    "crm_value",
    "anaplan_value",
    "base_value",
    "rule_id",
    "rule_hash",
    "message",
    "created_at",
    "updated_at",
    "resolved_at",
    "resolved_by",
    "resolution",
    "resolution_value",
    "note",
];
