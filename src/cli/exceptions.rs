//! `plansync exceptions list|show|resolve|stats`: the review workflow over the SQLite file.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;

use std::io::IsTerminal as _;

use plansync::review::{
    self, Format, ListColumns, ListTable, TableWidth, TimeBound, parse_time_arg,
};
use plansync::store::{ExceptionFilter, Resolution, ResolutionHow, Store};

use super::{FilterArgs, ListArgs, ResolveArgs, os_user};

fn open_read_only(db: &Path) -> anyhow::Result<Store> {
    Ok(Store::open_read_only(db)?)
}

fn filter(args: &FilterArgs) -> anyhow::Result<ExceptionFilter> {
    Ok(ExceptionFilter {
        status: args.status.and_then(|s| s.status()),
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

/// How wide tables may be: `COLUMNS` when it is a number (as `ls` does; it also lets a pipe
/// or a test ask for a width), else the terminal's when stdout is one; not a terminal and
/// no `COLUMNS`, no limit, so what a pipe or a file gets does not depend on a window.
fn table_width() -> TableWidth {
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|&c| c > 0);
    match columns {
        Some(columns) => TableWidth::Columns(columns),
        None if std::io::stdout().is_terminal() => TableWidth::Terminal,
        None => TableWidth::Unlimited,
    }
}

pub fn list(db: &Path, args: &ListArgs, format: Format) -> anyhow::Result<ExitCode> {
    let store = open_read_only(db)?;
    let filter = filter(&args.filter)?;
    let columns = match (args.columns.is_empty(), args.wide) {
        (false, _) => ListColumns::These(args.columns.clone()),
        (true, true) => ListColumns::All,
        (true, false) => ListColumns::ForFilter,
    };
    let layout = ListTable {
        columns,
        width: if args.wide {
            TableWidth::Unlimited
        } else {
            table_width()
        },
        now: Utc::now(),
    };
    let mut out = std::io::stdout().lock();
    review::list(&store, &filter, format, &layout, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn show(db: &Path, id: i64, format: Format) -> anyhow::Result<ExitCode> {
    let store = open_read_only(db)?;
    let mut out = std::io::stdout().lock();
    review::show(&store, id, format, table_width(), &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn stats(db: &Path, args: &FilterArgs, format: Format) -> anyhow::Result<ExitCode> {
    let store = open_read_only(db)?;
    let filter = filter(args)?;
    let mut out = std::io::stdout().lock();
    review::stats(&store, &filter, format, table_width(), &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A value set by a person passes the same validation as a value from either side.
fn check_against_rules(store: &Store, args: &ResolveArgs, raw: &str) -> anyhow::Result<()> {
    let set = plansync::rules::load(&args.rules).map_err(|errors| {
        anyhow::anyhow!(
            "the rules do not load ({} problem(s)); run `plansync rules check`",
            errors.len()
        )
    })?;
    let exception = store.exception(args.id)?;
    let Some(pairing) = set.pairing(&exception.pairing) else {
        anyhow::bail!("the rules have no pairing `{}`", exception.pairing);
    };
    let Some(field) = exception.field_name().and_then(|name| pairing.field(name)) else {
        anyhow::bail!("the rules do not map the field of exception {}", args.id);
    };
    let value = plansync::model::Value::from_text(field.kind, raw)
        .map_err(|e| anyhow::anyhow!("--set {raw}: {e}"))
        .and_then(|v| {
            field
                .from_side(plansync::model::Side::Crm, v)
                .map_err(|e| anyhow::anyhow!("--set {raw}: {}", e.message))
        })?;
    let base = exception.field.as_ref().map(|f| &f.base_value);
    // A person may knowingly make a large change; everything else applies.
    let rules = plansync::rules::ruleset::Validation {
        max_change_pct: None,
        ..field.policy.validation.clone()
    };
    if let Some(problem) = plansync::rules::decide::invalid(field, &rules, base, &value) {
        anyhow::bail!("--set {raw} is refused by the rules: {problem}");
    }
    Ok(())
}

pub fn resolve(db: &Path, args: &ResolveArgs, format: Format) -> anyhow::Result<ExitCode> {
    if !db.exists() {
        anyhow::bail!(
            "{}: no such database (give the path of the file `plansync run` writes)",
            db.display()
        );
    }
    // A resolution is a person's decision: one nobody can be named for is not recorded
    // (asked before the store is opened, which may migrate it).
    let by = match args.by.as_deref().map(str::trim) {
        Some("") => anyhow::bail!("--by needs a name"),
        Some(by) => by.to_string(),
        None => os_user::name().ok_or_else(|| {
            anyhow::anyhow!(
                "cannot tell who you are ($USER is not set and the system has no name for \
                 this user); pass --by NAME"
            )
        })?,
    };
    let mut store = Store::open(db)?;
    if let (Some(raw), false) = (&args.set, args.rules.is_empty()) {
        check_against_rules(&store, args, raw)?;
    }
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
