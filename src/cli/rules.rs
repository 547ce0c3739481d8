//! `plansync rules check|test|explain`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};

use plansync::model::{Value, ValueKind};
use plansync::rules::{self, LoadError, RuleSet, cases, explain as explainer};
use plansync_toml::diagnostic;

/// Prints every load error (miette's picture for rule errors) to stderr.
fn report(errors: &[LoadError], color: bool) {
    let mut err = std::io::stderr().lock();
    for e in errors {
        match e {
            LoadError::Invalid(file) => {
                let _ = writeln!(err, "error: {file}");
                let _ = write!(err, "{}", diagnostic::render(file, color));
            }
            other => {
                let _ = writeln!(err, "error: {other}");
            }
        }
    }
}

fn count_problems(errors: &[LoadError]) -> usize {
    errors
        .iter()
        .map(|e| match e {
            LoadError::Invalid(f) => f.problems.len(),
            _ => 1,
        })
        .sum()
}

pub fn check(paths: &[PathBuf], color: bool) -> anyhow::Result<ExitCode> {
    let files = match rules::rule_files(paths) {
        Ok(files) => files,
        Err(e) => {
            report(&[e], color);
            return Ok(ExitCode::from(1));
        }
    };
    let mut out = std::io::stdout().lock();
    let mut errors = Vec::new();
    for file in &files {
        match rules::load_file(file) {
            Ok(p) => writeln!(
                out,
                "ok   {}: {} ↔ {} / {}, {} fields, {} tests (sha256 {})",
                file.display(),
                p.crm_object,
                p.anaplan.list,
                p.anaplan.module,
                p.fields.len(),
                p.tests.len(),
                p.short_hash()
            )?,
            Err(e) => {
                writeln!(out, "FAIL {}", file.display())?;
                errors.push(e);
            }
        }
    }
    // Cross-file checks only make sense once every file compiles.
    if errors.is_empty()
        && let Err(mut cross) = rules::load(paths)
    {
        errors.append(&mut cross);
    }
    out.flush()?;
    if errors.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    report(&errors, color);
    eprintln!(
        "{} error{} in rule files",
        count_problems(&errors),
        if count_problems(&errors) == 1 {
            ""
        } else {
            "s"
        }
    );
    Ok(ExitCode::from(1))
}

fn load(paths: &[PathBuf], color: bool) -> Option<RuleSet> {
    match rules::load(paths) {
        Ok(set) => Some(set),
        Err(errors) => {
            report(&errors, color);
            eprintln!("fix the rule files first (`plansync rules check`)");
            None
        }
    }
}

pub fn test(paths: &[PathBuf], color: bool) -> anyhow::Result<ExitCode> {
    let Some(set) = load(paths, color) else {
        return Ok(ExitCode::from(1));
    };
    let mut out = std::io::stdout().lock();
    let (mut passed, mut failed) = (0, 0);
    for pairing in &set.pairings {
        for outcome in cases::run(pairing) {
            if outcome.passed() {
                passed += 1;
                writeln!(out, "PASS {}: {}", pairing.path.display(), outcome.name)?;
            } else {
                failed += 1;
                writeln!(out, "FAIL {}: {}", pairing.path.display(), outcome.name)?;
                for m in &outcome.mismatches {
                    writeln!(out, "       {m}")?;
                }
                if let Some(e) = &outcome.decision.exception {
                    writeln!(out, "       (exception message: {})", e.message)?;
                }
            }
        }
    }
    writeln!(out, "{passed} passed, {failed} failed")?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn parse_at(at: Option<&str>) -> anyhow::Result<DateTime<Utc>> {
    match at {
        None => Ok(Utc::now()),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|d| d.with_timezone(&Utc))
            .with_context(|| {
                format!("--at `{text}` is not an RFC 3339 time (e.g. 2027-01-27T15:00:00Z)")
            }),
    }
}

pub fn explain(
    paths: &[PathBuf],
    object: &str,
    field_name: &str,
    at: Option<&str>,
    record: &[String],
    flags: &[String],
) -> anyhow::Result<ExitCode> {
    let Some(set) = load(paths, false) else {
        return Ok(ExitCode::from(1));
    };
    let Some(pairing) = set.find(object) else {
        let known: Vec<&str> = set.pairings.iter().map(|p| p.crm_object.as_str()).collect();
        bail!(
            "no pairing for `{object}` (the rules pair: {})",
            known.join(", ")
        );
    };
    let Some(field) = pairing.field(field_name) else {
        let known: Vec<&str> = pairing.fields.iter().map(|f| f.crm.as_str()).collect();
        bail!(
            "{} has no synced field `{field_name}` (its fields: {})",
            pairing.crm_object,
            known.join(", ")
        );
    };
    let at = parse_at(at)?;
    let mut ctx = rules::Context::default();
    for item in record {
        let (name, raw) = item
            .split_once('=')
            .with_context(|| format!("--record `{item}`: expected FIELD=VALUE"))?;
        let kind = pairing.field(name).map_or(ValueKind::Text, |f| f.kind);
        let value = Value::from_text(kind, raw).with_context(|| format!("--record {name}"))?;
        ctx.record.insert(name.to_string(), value);
    }
    for item in flags {
        let (name, raw) = item
            .split_once('=')
            .with_context(|| format!("--flag `{item}`: expected NAME=true|false"))?;
        let value = match raw {
            "true" => true,
            "false" => false,
            other => bail!("--flag {name}: `{other}` is not true or false"),
        };
        ctx.flags.insert(name.to_string(), value);
    }
    print!("{}", explainer::explain(pairing, field, at, &ctx));
    Ok(ExitCode::SUCCESS)
}
