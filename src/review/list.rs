//! `plansync exceptions list`.

use std::io::Write;

use super::rows::ExceptionRow;
use super::table::{new_table, object_field, short_time, values};
use super::{Format, ReviewError};
use crate::store::{ExceptionFilter, Store};

/// Prints the exceptions `filter` selects; returns how many were printed.
pub fn list(
    store: &Store,
    filter: &ExceptionFilter,
    format: Format,
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
            let mut csv = csv::Writer::from_writer(&mut *out);
            if exceptions.is_empty() {
                // serde writes the header with the first row; scripts still want it.
                csv.write_record(EXCEPTION_CSV_HEADER)?;
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
            let mut table = new_table([
                "id", "kind", "status", "field", "record", "crm", "anaplan", "base", "created",
                "message",
            ]);
            for e in &exceptions {
                let [crm, anaplan, base] = values(e);
                table.add_row([
                    e.id.to_string(),
                    e.kind.to_string(),
                    e.status.to_string(),
                    object_field(e),
                    e.crm_id.clone().unwrap_or_else(|| "-".into()),
                    crm,
                    anaplan,
                    base,
                    short_time(e.created_at),
                    e.message.clone(),
                ]);
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
