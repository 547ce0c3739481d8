//! `plansync exceptions stats`.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::rows::{ExceptionRow, time};
use super::table::{LineTable, TableWidth, new_table, object_field, short_time, wrap_to};
use super::{Format, ReviewError};
use crate::model::{ExceptionKind, ExceptionStatus};
use crate::store::{ExceptionFilter, ExceptionStats, Store};

#[derive(Serialize)]
struct StatusKindJson {
    status: &'static str,
    kind: &'static str,
    count: u64,
}

#[derive(Serialize)]
struct FieldCountJson<'a> {
    object: &'a str,
    field: Option<&'a str>,
    count: u64,
    oldest: String,
}

#[derive(Serialize)]
struct StatsJson<'a> {
    total: u64,
    open: u64,
    by_status_kind: Vec<StatusKindJson>,
    open_by_field: Vec<FieldCountJson<'a>>,
    oldest_open: Vec<ExceptionRow<'a>>,
}

/// One CSV line: the counts of both groupings in one long table, told apart by `group`
/// (`status_kind` or `open_by_field`). The oldest open exceptions are in the other formats.
#[derive(Serialize)]
struct StatsCsvRow<'a> {
    group: &'static str,
    status: Option<&'static str>,
    kind: Option<&'static str>,
    object: Option<&'a str>,
    field: Option<&'a str>,
    count: u64,
    oldest: Option<String>,
}

/// Prints counts over the exceptions `filter` selects (its limit and offset are ignored).
pub fn stats(
    store: &Store,
    filter: &ExceptionFilter,
    format: Format,
    width: TableWidth,
    out: &mut dyn Write,
) -> Result<(), ReviewError> {
    let stats = store.exception_stats(filter)?;
    match format {
        Format::Json => {
            let json = StatsJson {
                total: stats.total,
                open: stats.open,
                by_status_kind: stats
                    .by_status_kind
                    .iter()
                    .map(|c| StatusKindJson {
                        status: c.status.as_str(),
                        kind: c.kind.as_str(),
                        count: c.count,
                    })
                    .collect(),
                open_by_field: stats
                    .open_by_field
                    .iter()
                    .map(|c| FieldCountJson {
                        object: &c.object,
                        field: c.field.as_deref(),
                        count: c.count,
                        oldest: time(c.oldest),
                    })
                    .collect(),
                oldest_open: stats.oldest_open.iter().map(Into::into).collect(),
            };
            serde_json::to_writer_pretty(&mut *out, &json)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut csv = super::csv_out::CsvOut::new(&mut *out);
            let by_status_kind = stats.by_status_kind.iter().map(|c| StatsCsvRow {
                group: "status_kind",
                status: Some(c.status.as_str()),
                kind: Some(c.kind.as_str()),
                object: None,
                field: None,
                count: c.count,
                oldest: None,
            });
            let open_by_field = stats.open_by_field.iter().map(|c| StatsCsvRow {
                group: "open_by_field",
                status: Some(ExceptionStatus::Open.as_str()),
                kind: None,
                object: Some(&c.object),
                field: c.field.as_deref(),
                count: c.count,
                oldest: Some(time(c.oldest)),
            });
            let mut wrote = false;
            for row in by_status_kind.chain(open_by_field) {
                csv.serialize(row)?;
                wrote = true;
            }
            if !wrote {
                csv.header(&[
                    "group", "status", "kind", "object", "field", "count", "oldest",
                ])?;
            }
            csv.flush()?;
        }
        Format::Table => write_table(&stats, width, out)?,
    }
    Ok(())
}

fn write_table(
    stats: &ExceptionStats,
    width: TableWidth,
    out: &mut dyn Write,
) -> Result<(), ReviewError> {
    writeln!(out, "{} exceptions, {} open.", stats.total, stats.open)?;
    if stats.total == 0 {
        return Ok(());
    }

    // Kinds down, statuses across: the shape a reviewer scans.
    let mut by_kind: BTreeMap<ExceptionKind, [u64; 4]> = BTreeMap::new();
    for c in &stats.by_status_kind {
        let column = ExceptionStatus::ALL
            .iter()
            .position(|s| *s == c.status)
            .unwrap_or_default();
        by_kind.entry(c.kind).or_default()[column] += c.count;
    }
    let mut header = vec!["kind".to_string()];
    header.extend(ExceptionStatus::ALL.iter().map(|s| s.to_string()));
    header.push("total".into());
    let mut table = new_table(header);
    wrap_to(&mut table, width);
    for (kind, counts) in &by_kind {
        let mut row = vec![kind.to_string()];
        row.extend(counts.iter().map(u64::to_string));
        row.push(counts.iter().sum::<u64>().to_string());
        table.add_row(row);
    }
    writeln!(out, "{table}")?;

    if !stats.open_by_field.is_empty() {
        writeln!(out, "Open by field:")?;
        let mut table = LineTable::new(&["object", "field", "open", "oldest"], width);
        for keep in [2, 3] {
            table.keep_whole(keep);
        }
        for c in &stats.open_by_field {
            table.add_row([
                c.object.clone(),
                c.field.clone().unwrap_or_else(|| "-".into()),
                c.count.to_string(),
                short_time(c.oldest),
            ]);
        }
        writeln!(out, "{table}")?;
    }
    if !stats.oldest_open.is_empty() {
        writeln!(out, "Oldest open:")?;
        let mut table = LineTable::new(
            &["id", "kind", "field", "record", "created", "message"],
            width,
        );
        for keep in [0, 4] {
            table.keep_whole(keep);
        }
        for e in &stats.oldest_open {
            table.add_row([
                e.id.to_string(),
                e.kind.to_string(),
                object_field(e),
                e.crm_id.clone().unwrap_or_else(|| "-".into()),
                short_time(e.created_at),
                e.message.clone(),
            ]);
        }
        writeln!(out, "{table}")?;
    }
    Ok(())
}
