//! `plansync exceptions list|show|resolve|stats`: the review workflow over the SQLite file.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;

use plansync::review::{self, Format, TimeBound, parse_time_arg};
use plansync::store::{ExceptionFilter, Resolution, ResolutionHow, Store};

use super::{FilterArgs, ResolveArgs};

fn open_read_only(db: &Path) -> anyhow::Result<Store> {
    Ok(Store::open_read_only(db)?)
}

fn filter(args: &FilterArgs) -> anyhow::Result<ExceptionFilter> {
    Ok(ExceptionFilter {
        status: args.status,
        kind: args.kind,
        object: args.object.clone(),
        field: args.field.clone(),
        crm_id: args.record.clone(),
        since: args
            .since
            .as_deref()
            .map(|s| parse_time_arg(s, TimeBound::Since))
            .transpose()
            .context("--since")?,
        until: args
            .until
            .as_deref()
            .map(|s| parse_time_arg(s, TimeBound::Until))
            .transpose()
            .context("--until")?,
        limit: args.limit,
        offset: args.offset,
    })
}

pub fn list(db: &Path, args: &FilterArgs, format: Format) -> anyhow::Result<ExitCode> {
    let store = open_read_only(db)?;
    let filter = filter(args)?;
    let mut out = std::io::stdout().lock();
    review::list(&store, &filter, format, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn show(db: &Path, id: i64, format: Format) -> anyhow::Result<ExitCode> {
    let store = open_read_only(db)?;
    let mut out = std::io::stdout().lock();
    review::show(&store, id, format, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn stats(db: &Path, args: &FilterArgs, format: Format) -> anyhow::Result<ExitCode> {
    let store = open_read_only(db)?;
    let filter = filter(args)?;
    let mut out = std::io::stdout().lock();
    review::stats(&store, &filter, format, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn resolve(db: &Path, args: &ResolveArgs, format: Format) -> anyhow::Result<ExitCode> {
    if !db.exists() {
        anyhow::bail!(
            "{}: no such database (give the path of the file `plansync run` writes)",
            db.display()
        );
    }
    let mut store = Store::open(db)?;
    let how = match (&args.take, &args.set, args.dismiss) {
        (Some(side), None, false) => match side {
            plansync::model::Side::Crm => ResolutionHow::TakeCrm,
            plansync::model::Side::Anaplan => ResolutionHow::TakeAnaplan,
        },
        (None, Some(value), false) => ResolutionHow::SetValue(value.clone()),
        (None, None, true) => ResolutionHow::Dismiss,
        // clap's argument group makes exactly one of them present.
        _ => anyhow::bail!("give exactly one of --take, --set, --dismiss"),
    };
    let by = match &args.by {
        Some(by) => by.clone(),
        None => std::env::var("USER")
            .or_else(|_| std::env::var("USERNAME"))
            .unwrap_or_else(|_| "unknown".to_string()),
    };
    let resolution = Resolution {
        how,
        by,
        note: args.note.clone(),
        at: Utc::now(),
    };
    let mut out = std::io::stdout().lock();
    review::resolve(&mut store, args.id, &resolution, format, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
