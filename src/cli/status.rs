//! `plansync status`: how far behind each source is, what waits in the outbox, the open
//! exceptions and the engine's counters, read from the store without disturbing the sync.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use comfy_table::{ContentArrangement, Table, presets};

use plansync::model::Position;
use plansync::review::{TimeBound, parse_time_arg};
use plansync::store::{StatusReport, Store};

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// The plansync database (the SQLite file `plansync run` writes).
    #[arg(long, env = "PLANSYNC_DB", default_value = "plansync.db")]
    pub db: PathBuf,
    /// Output: tables for people, or one JSON object for tools (field names in the docs of
    /// `plansync::store::StatusReport`).
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    pub format: StatusFormat,
    /// Measure lags and ages from this instant instead of the clock (RFC 3339, or YYYY-MM-DD
    /// for midnight UTC): for scripts that compare runs.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum StatusFormat {
    Table,
    Json,
}

pub fn run(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let now = match &args.now {
        Some(raw) => parse_time_arg(raw, TimeBound::Since).context("--now")?,
        None => Utc::now(),
    };
    let store = Store::open_read_only(&args.db)?;
    let report = store.status(now)?;
    let mut out = std::io::stdout().lock();
    match args.format {
        StatusFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        StatusFormat::Table => write_tables(&mut out, &args.db, &report)?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    t
}

fn write_tables(
    out: &mut impl Write,
    db: &std::path::Path,
    report: &StatusReport,
) -> std::io::Result<()> {
    writeln!(
        out,
        "plansync status of {} as of {}",
        db.display(),
        time(report.now)
    )?;

    match (&report.first_run.completed_at, &report.first_run.phase) {
        (Some(at), _) => writeln!(out, "\nFirst run: completed {}", time(*at))?,
        (None, Some(phase)) => writeln!(out, "\nFirst run: in progress, {phase}")?,
        (None, None) => writeln!(out, "\nFirst run: not started")?,
    }

    // The org's daily API budget, as the CRM's last answer the engine stored said.
    if let (Some(used), Some(max)) = (report.metric("crm.api_used"), report.metric("crm.api_max")) {
        writeln!(
            out,
            "\nCRM API today: {used} of {max} calls used, {} left",
            (max - used).max(0)
        )?;
    }

    writeln!(out, "\nSources")?;
    if report.sources.is_empty() {
        writeln!(out, "  (no checkpoints yet)")?;
    } else {
        let mut t = table(&["source", "shards", "position (oldest shard)", "lag"]);
        for s in &report.sources {
            // Quiet (current, nothing new) is not behind: said apart.
            let lag = match s.quiet_since {
                Some(since) => format!(
                    "{}, quiet: no events since {}",
                    age(s.lag_seconds),
                    time(since)
                ),
                None => age(s.lag_seconds),
            };
            t.add_row(vec![
                s.source.clone(),
                s.shards.to_string(),
                // A position is the remote system's text (a replay id, a watermark).
                plansync::review::terminal_safe(&position(&s.position)).into_owned(),
                lag,
            ]);
        }
        writeln!(out, "{t}")?;
    }

    if let Some(h) = &report.stream {
        writeln!(out, "\nStream")?;
        let state = match (h.connected_since, h.down_since) {
            (Some(since), _) => format!("connected since {}", time(since)),
            (None, Some(since)) => format!("down since {}", time(since)),
            (None, None) => "not connected".to_string(),
        };
        writeln!(
            out,
            "  {state}; {} reconnect(s) since the engine started",
            h.reconnects
        )?;
        match (h.alive_at, h.live(report.now)) {
            (Some(at), Some(_)) => writeln!(
                out,
                "  last sign of life {} ago",
                age(seconds(report.now - at))
            )?,
            (Some(at), None) => writeln!(
                out,
                "  no sign of life for {}: its channels are behind, not quiet",
                age(seconds(report.now - at))
            )?,
            (None, _) => {}
        }
        if let (Some(e), Some(at)) = (&h.last_error, h.last_error_at) {
            writeln!(
                out,
                "  last error at {}: {}",
                time(at),
                plansync::review::terminal_safe(e)
            )?;
        }
    }

    writeln!(out, "\nOutbox")?;
    if report.outbox.is_empty() {
        writeln!(out, "  (no writes queued)")?;
    } else {
        let mut t = table(&["target", "state", "count", "oldest waiting", "exceptions"]);
        for d in &report.outbox {
            t.add_row(vec![
                d.target.as_str().to_string(),
                d.state.as_str().to_string(),
                d.count.to_string(),
                d.oldest_age_seconds.map_or_else(|| "-".into(), age),
                outcome_exceptions(d),
            ]);
        }
        writeln!(out, "{t}")?;
    }

    writeln!(out, "\nOpen exceptions")?;
    if report.open_exceptions.is_empty() {
        writeln!(out, "  (none)")?;
    } else {
        let mut t = table(&["kind", "count", "oldest"]);
        for e in &report.open_exceptions {
            t.add_row(vec![
                e.kind.as_str().to_string(),
                e.count.to_string(),
                age(e.oldest_age_seconds),
            ]);
        }
        writeln!(out, "{t}")?;
    }

    writeln!(out, "\nMetrics")?;
    if report.metrics.is_empty() {
        writeln!(out, "  (none stored)")?;
    } else {
        let mut t = table(&["name", "value", "updated"]);
        for m in &report.metrics {
            t.add_row(vec![
                m.name.clone(),
                m.value.to_string(),
                time(m.updated_at),
            ]);
        }
        writeln!(out, "{t}")?;
    }
    Ok(())
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

fn seconds(d: chrono::TimeDelta) -> i64 {
    d.num_seconds()
}

fn position(p: &Position) -> String {
    match p {
        Position::Replay { channel, replay_id } => format!("replay {replay_id} on {channel}"),
        Position::Watermark { at, id } => format!("watermark {} {id}", time(*at)),
        Position::PollRun { at } => format!("poll run {}", time(*at)),
        Position::Exception { id } => format!("exception {id}"),
    }
}

/// A duration for people, to two units: `45s`, `20m 05s`, `3h 02m`, `2d 04h`; a leading `-`
/// when the remote's clock is ahead of ours.
fn age(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    let body = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    };
    format!("{sign}{body}")
}

/// The exceptions writes of one state ended in, as `exceptions show` ids.
fn outcome_exceptions(d: &plansync::store::OutboxDepth) -> String {
    if d.exception_ids.is_empty() {
        return "-".into();
    }
    let ids: Vec<String> = d.exception_ids.iter().map(|id| format!("#{id}")).collect();
    let more = d
        .exception_count
        .saturating_sub(d.exception_ids.len() as u64);
    if more > 0 {
        format!("{} and {more} more", ids.join(" "))
    } else {
        ids.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_two_units() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(1205), "20m 05s");
        assert_eq!(age(3600), "1h 00m");
        assert_eq!(age(2 * 86400 + 4 * 3600 + 59), "2d 04h");
        assert_eq!(age(-90), "-1m 30s");
    }
}
