//! `plansync check --config plansync.toml`: the preflight (`plansync::preflight`), one line
//! per check. Exit 0 when every check passed, 1 when one failed, 2 when the preflight could
//! not run (a bad config or rule files) or some check could not be made and none failed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde_json::json;

use plansync::config::{Config, ConfigError};
use plansync::preflight::{self, Outcome, Report};
use plansync::rules::{self, LoadError};
use plansync_toml::diagnostic;

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// The configuration file (see examples/plansync.toml).
    #[arg(long, default_value = "plansync.toml", env = "PLANSYNC_CONFIG")]
    pub config: PathBuf,
    /// Output: one line per check for people, or one JSON object for tools.
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub format: CheckFormat,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum CheckFormat {
    Text,
    Json,
}

pub fn run(args: &CheckArgs, color: bool) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(ConfigError::Invalid(errors)) => {
            eprint!("{}", diagnostic::render(&errors, color));
            for line in errors.one_line_each() {
                eprintln!("error: {line}");
            }
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    // Rule files that do not compile leave nothing to check against: the preflight cannot run.
    // Their `[[test]]` cases are one of its checks instead.
    let rules = match rules::load(std::slice::from_ref(&config.rules)) {
        Ok(r) => r,
        Err(errors) => {
            for e in &errors {
                match e {
                    LoadError::Invalid(file) => eprint!("{}", diagnostic::render(file, color)),
                    other => eprintln!("error: {other}"),
                }
            }
            eprintln!(
                "error: the rules in {} cannot be used; `plansync rules check {}` shows why",
                config.rules.display(),
                config.rules.display()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let report = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(preflight::check(&config, &rules));
    let mut out = std::io::stdout().lock();
    match args.format {
        CheckFormat::Text => write_text(&mut out, &report)?,
        CheckFormat::Json => {
            let body = json!({
                "outcome": report.outcome(),
                "passed": report.count(Outcome::Pass),
                "failed": report.count(Outcome::Fail),
                "could_not_run": report.count(Outcome::CouldNotRun),
                "checks": report.checks,
            });
            serde_json::to_writer_pretty(&mut out, &body)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::from(match report.outcome() {
        Outcome::Pass => 0,
        Outcome::Fail => 1,
        Outcome::CouldNotRun => 2,
    }))
}

/// `✓ name: detail`, or `✗ name: detail → what to do` (`?` for a check that could not be made),
/// then a summary line.
fn write_text(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    for check in &report.checks {
        let mark = match check.outcome {
            Outcome::Pass => '✓',
            Outcome::Fail => '✗',
            Outcome::CouldNotRun => '?',
        };
        write!(out, "{mark} {}: {}", check.name, check.detail)?;
        if let Some(fix) = &check.fix {
            write!(out, " → {fix}")?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "{} checks: {} passed, {} failed, {} could not run",
        report.checks.len(),
        report.count(Outcome::Pass),
        report.count(Outcome::Fail),
        report.count(Outcome::CouldNotRun)
    )
}
