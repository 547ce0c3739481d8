//! `plansync exceptions show <id>`.

use std::io::Write;

use serde::Serialize;

use super::rows::{AuditRow, ExceptionRow};
use super::table::{
    LineTable, TableWidth, new_table, object_field, resolution, short_time, value, wrap_to,
};
use super::{Format, ReviewError};
use crate::store::{ExceptionDetail, ExceptionRecord, Store};

#[derive(Serialize)]
struct ShowJson<'a> {
    #[serde(flatten)]
    exception: ExceptionRow<'a>,
    history: Vec<AuditRow<'a>>,
    history_total: u64,
    related: Vec<ExceptionRow<'a>>,
}

/// Prints one exception: its values, rule, status and resolution, the recent decisions about
/// its field and the other exceptions on that field. CSV carries the exception alone (the
/// columns of `list`); the history is in the table and JSON forms.
pub fn show(
    store: &Store,
    id: i64,
    format: Format,
    width: TableWidth,
    out: &mut dyn Write,
) -> Result<(), ReviewError> {
    let detail = store.exception_detail(id)?;
    match format {
        Format::Json => {
            let json = ShowJson {
                exception: (&detail.exception).into(),
                history: detail.history.iter().map(Into::into).collect(),
                history_total: detail.history_total,
                related: detail.related.iter().map(Into::into).collect(),
            };
            serde_json::to_writer_pretty(&mut *out, &json)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut csv = super::csv_out::CsvOut::new(&mut *out);
            csv.serialize(ExceptionRow::from(&detail.exception))?;
            csv.flush()?;
        }
        Format::Table => write_table(&detail, width, out)?,
    }
    Ok(())
}

fn write_table(
    detail: &ExceptionDetail,
    width: TableWidth,
    out: &mut dyn Write,
) -> Result<(), ReviewError> {
    let e = &detail.exception;
    // Read in full: long values wrap rather than being cut.
    let mut table = new_table(["", &format!("exception {}", e.id)]);
    wrap_to(&mut table, width);
    for (name, text) in exception_lines(e) {
        table.add_row([name.to_string(), text]);
    }
    writeln!(out, "{table}")?;

    if e.field.is_none() {
        return Ok(());
    }
    if detail.history.is_empty() {
        writeln!(out, "No decisions about this field were recorded.")?;
    } else {
        let shown = detail.history.len();
        let total = detail.history_total;
        writeln!(
            out,
            "History of {} on record {} ({shown} of {total} decisions, oldest first):",
            object_field(e),
            e.crm_id.as_deref().unwrap_or("-"),
        )?;
        let mut history = LineTable::new(
            &[
                "audit",
                "at",
                "side",
                "source",
                "value",
                "decision",
                "rule",
                "exception",
            ],
            width,
        );
        for keep in [0, 1, 7] {
            history.keep_whole(keep);
        }
        for a in &detail.history {
            history.add_row([
                a.id.to_string(),
                short_time(a.at),
                a.side.to_string(),
                a.source.to_string(),
                value(&a.value),
                a.decision.clone(),
                a.rule_id.clone().unwrap_or_default(),
                a.exception_id.map(|id| id.to_string()).unwrap_or_default(),
            ]);
        }
        writeln!(out, "{history}")?;
    }
    if !detail.related.is_empty() {
        writeln!(out, "Other exceptions on this field:")?;
        let mut related = LineTable::new(&["id", "kind", "status", "created", "message"], width);
        for keep in [0, 2, 3] {
            related.keep_whole(keep);
        }
        for r in &detail.related {
            related.add_row([
                r.id.to_string(),
                r.kind.to_string(),
                r.status.to_string(),
                short_time(r.created_at),
                r.message.clone(),
            ]);
        }
        writeln!(out, "{related}")?;
    }
    Ok(())
}

/// The exception's attributes as (label, text) lines; absent ones are left out.
fn exception_lines(e: &ExceptionRecord) -> Vec<(&'static str, String)> {
    let mut lines = vec![
        ("kind", e.kind.to_string()),
        ("status", e.status.to_string()),
        (
            "object",
            format!("{} (pairing {})", object_field(e), e.pairing),
        ),
        ("record", e.crm_id.clone().unwrap_or_else(|| "-".into())),
    ];
    if let Some(f) = &e.field {
        lines.push(("value kind", f.kind.tag()));
        lines.push(("crm value", value(&f.crm_value)));
        lines.push(("anaplan value", value(&f.anaplan_value)));
        lines.push(("base value", value(&f.base_value)));
    }
    let optional = [
        ("rule", e.rule_id.clone()),
        ("rule hash", e.rule_hash.clone()),
    ];
    lines.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    lines.push(("message", e.message.clone()));
    lines.push(("created", short_time(e.created_at)));
    lines.push(("updated", short_time(e.updated_at)));
    if let Some(at) = e.resolved_at {
        lines.push(("resolved at", short_time(at)));
    }
    if let Some(by) = &e.resolved_by {
        lines.push(("resolved by", by.clone()));
    }
    if let Some(how) = resolution(e) {
        lines.push(("resolution", how));
    }
    if let Some(note) = &e.note {
        lines.push(("note", note.clone()));
    }
    lines
}
