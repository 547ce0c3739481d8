//! Shared pieces of the human-readable output.

use chrono::{DateTime, Utc};
use comfy_table::{ContentArrangement, Row, Table, presets};

use crate::model::Value;
use crate::store::ExceptionRecord;

/// A table in the house style; wraps to the terminal's width when there is one.
pub(crate) fn new_table(header: impl Into<Row>) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}

/// A timestamp for people: to the second, still unambiguous (UTC).
pub(crate) fn short_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// A value for people: `(null)` for no value.
pub(crate) fn value(v: &Value) -> String {
    v.to_string()
}

/// `Opportunity.Amount`, or just `Opportunity` when the exception is about no field.
pub(crate) fn object_field(e: &ExceptionRecord) -> String {
    match e.field_name() {
        Some(field) => format!("{}.{field}", e.object),
        None => e.object.clone(),
    }
}

/// The three values of an exception's field for a table row (`-` when it has no field).
pub(crate) fn values(e: &ExceptionRecord) -> [String; 3] {
    match &e.field {
        Some(f) => [
            value(&f.crm_value),
            value(&f.anaplan_value),
            value(&f.base_value),
        ],
        None => ["-".into(), "-".into(), "-".into()],
    }
}
