//! `plansync exceptions resolve <id> --how …`.

use std::io::Write;

use serde::Serialize;

use super::rows::{ExceptionRow, OutboxRow};
use super::table::{new_table, object_field, short_time, value};
use super::{Format, ReviewError};
use crate::store::{Resolution, ResolveOutcome, Store};

#[derive(Serialize)]
struct ResolveJson<'a> {
    exception: ExceptionRow<'a>,
    queued_writes: Vec<OutboxRow<'a>>,
}

/// Resolves the exception and prints what was recorded and the writes queued. CSV carries
/// the queued writes (a header alone when there are none).
pub fn resolve(
    store: &mut Store,
    id: i64,
    resolution: &Resolution,
    format: Format,
    out: &mut dyn Write,
) -> Result<ResolveOutcome, ReviewError> {
    let outcome = store.resolve(id, resolution)?;
    match format {
        Format::Json => {
            let json = ResolveJson {
                exception: (&outcome.exception).into(),
                queued_writes: outcome.queued.iter().map(Into::into).collect(),
            };
            serde_json::to_writer_pretty(&mut *out, &json)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut csv = super::csv_out::CsvOut::new(&mut *out);
            if outcome.queued.is_empty() {
                csv.header(&OUTBOX_CSV_HEADER)?;
            }
            for o in &outcome.queued {
                csv.serialize(OutboxRow::from(o))?;
            }
            csv.flush()?;
        }
        Format::Table => write_table(&outcome, out)?,
    }
    Ok(outcome)
}

fn write_table(outcome: &ResolveOutcome, out: &mut dyn Write) -> Result<(), ReviewError> {
    let e = &outcome.exception;
    let how = e.resolution.map(|r| r.to_string()).unwrap_or_default();
    let chosen = e
        .resolution_value
        .as_ref()
        .map(|v| format!(" ({})", value(v)))
        .unwrap_or_default();
    writeln!(
        out,
        "Resolved exception {} ({} on {}, record {}) as {how}{chosen} by {} at {}.",
        e.id,
        e.kind,
        object_field(e),
        e.crm_id.as_deref().unwrap_or("-"),
        e.resolved_by.as_deref().unwrap_or("-"),
        e.resolved_at.map(short_time).unwrap_or_default(),
    )?;
    if let Some(note) = &e.note {
        writeln!(out, "Note: {note}")?;
    }
    if outcome.queued.is_empty() {
        writeln!(out, "No writes queued.")?;
        return Ok(());
    }
    writeln!(out, "Queued {} write(s):", outcome.queued.len())?;
    let mut table = new_table(["outbox", "to", "field", "record", "value"]);
    for o in &outcome.queued {
        table.add_row([
            o.id.to_string(),
            o.target.to_string(),
            o.key.field.clone(),
            o.key.record.crm_id.clone(),
            value(&o.value),
        ]);
    }
    writeln!(out, "{table}")?;
    Ok(())
}

/// Must match the fields of `OutboxRow` (a test checks).
pub(crate) const OUTBOX_CSV_HEADER: [&str; 10] = [
    "id",
    "target",
    "pairing",
    "record",
    "field",
    "value_kind",
    "value",
    "reason",
    "exception_id",
    "state",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Side, Value, ValueKind};
    use crate::store::{FieldKey, OutboxReason, OutboxRecord, OutboxState};

    #[test]
    fn the_hand_written_header_matches_the_serialised_one() {
        let at = chrono::DateTime::UNIX_EPOCH;
        let record = OutboxRecord {
            id: 1,
            key: FieldKey::new("opportunity", "006A", "Amount"),
            target: Side::Crm,
            kind: ValueKind::Text,
            value: Value::Null,
            reason: OutboxReason::Resolution,
            exception_id: None,
            state: OutboxState::Pending,
            attempts: 0,
            last_error: None,
            created_at: at,
            updated_at: at,
            replaced: Value::Null,
            result_exception_id: None,
        };
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.serialize(OutboxRow::from(&record)).unwrap();
        let text = String::from_utf8(csv.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next().unwrap(), OUTBOX_CSV_HEADER.join(","));
    }
}
