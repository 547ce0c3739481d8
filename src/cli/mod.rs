//! Command-line arguments and dispatch. Exit codes: 0 success, 1 the check or the tests
//! failed (rule errors, failing cases), 2 the command itself could not run.

mod rules;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "plansync",
    version,
    about = "Keeps a CRM and an Anaplan model in step, field by field, under ownership rules"
)]
pub struct Cli {
    /// When to colour output.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    pub color: Color,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum Color {
    Auto,
    Always,
    Never,
}

impl Color {
    fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check, test and explain rule files.
    #[command(subcommand)]
    Rules(RulesCommand),
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Check rule files and report every error with file:line:column.
    Check {
        /// Rule files or directories of them.
        #[arg(default_value = "rules")]
        paths: Vec<PathBuf>,
    },
    /// Run the test cases written in the rule files.
    Test {
        /// Rule files or directories of them.
        #[arg(default_value = "rules")]
        paths: Vec<PathBuf>,
    },
    /// Show which rule decides a field of a record at a given time, and why.
    Explain {
        /// Rule files or directories of them.
        #[arg(long, default_value = "rules")]
        rules: Vec<PathBuf>,
        /// The CRM object (e.g. Opportunity) or the pairing's name.
        #[arg(long)]
        object: String,
        /// The CRM field (e.g. Forecast_Override__c).
        #[arg(long)]
        field: String,
        /// The moment to decide at (RFC 3339, e.g. 2027-01-27T15:00:00Z); now by default.
        #[arg(long)]
        at: Option<String>,
        /// A value of the record, for `record` conditions: FIELD=VALUE (repeatable).
        #[arg(long = "record", value_name = "FIELD=VALUE")]
        record: Vec<String>,
        /// An Anaplan flag of the record: NAME=true|false (repeatable).
        #[arg(long = "flag", value_name = "NAME=BOOL")]
        flags: Vec<String>,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let color = cli.color.enabled();
    match cli.command {
        Command::Rules(RulesCommand::Check { paths }) => rules::check(&paths, color),
        Command::Rules(RulesCommand::Test { paths }) => rules::test(&paths, color),
        Command::Rules(RulesCommand::Explain {
            rules,
            object,
            field,
            at,
            record,
            flags,
        }) => rules::explain(&rules, &object, &field, at.as_deref(), &record, &flags),
    }
}
