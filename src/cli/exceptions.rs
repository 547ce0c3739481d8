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
