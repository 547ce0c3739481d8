//! Command-line arguments and dispatch. Exit codes: 0 success, 1 the check or the tests
//! failed (rule errors, failing cases), 2 the command itself could not run.

mod bench;
mod check;
mod demo;
mod exceptions;
mod os_user;
mod rules;
mod run;
mod sim_anaplan;
mod sim_crm;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use plansync::model::{ExceptionKind, ExceptionStatus, Side};
use plansync::review::{Format, ListColumn};

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
    pub fn enabled(self) -> bool {
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
    /// Review the exceptions plansync recorded: list, show, resolve, stats.
    Exceptions {
        /// The plansync database (the SQLite file `plansync run` writes).
        #[arg(
            long,
            env = "PLANSYNC_DB",
            global = true,
            default_value = "plansync.db"
        )]
        db: PathBuf,
        /// Output: a table for people, JSON or CSV for tools.
        #[arg(long, global = true, default_value = "table", value_parser = parse_format)]
        format: Format,
        #[command(subcommand)]
        command: ExceptionsCommand,
    },
    /// Local simulators of the remote systems.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Measure the engine end to end on local simulators (burst, steady).
    Bench(bench::BenchArgs),
    /// Run the whole loop on local simulators: a scripted quarter-end day, then a summary.
    Demo(demo::DemoArgs),
    /// Run the sync engine: stream and pollers in, rules, batched writes out.
    Run(run::RunArgs),
    /// Where the sync stands: lag per source, queued writes, open exceptions, API counters.
    Status(status::StatusArgs),
    /// Preflight: log in to both systems and check every name the rules and the config give
    /// (objects, fields, lists, modules, line items, imports, CDC channels); writes nothing.
    Check(check::CheckArgs),
}

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// Serve a simulated Anaplan tenant (auth service, transactional and bulk APIs) on one
    /// loopback port; prints its base URL.
    Anaplan(sim_anaplan::SimAnaplanArgs),
    /// Serve a simulated Salesforce-style org (OAuth, REST, Bulk 2.0, CDC streaming) on one
    /// loopback port; prints its instance URL.
    Crm(sim_crm::SimCrmArgs),
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

#[derive(Subcommand, Debug)]
pub enum ExceptionsCommand {
    /// List exceptions, oldest first, with filters.
    List(ListArgs),
    /// Show one exception: both values, the base, the rule, and the field's history.
    Show {
        /// The exception's id.
        id: i64,
    },
    /// Resolve an open exception; the chosen value is queued for the sides that lack it.
    Resolve(ResolveArgs),
    /// Counts by status and kind, open ones by object and field, the oldest open.
    Stats(FilterArgs),
    /// Send the writes that resolutions queued, once, without a running engine (the store
    /// and the connections come from the configuration).
    Apply {
        /// The configuration file (see examples/plansync.toml).
        #[arg(long, default_value = "plansync.toml", env = "PLANSYNC_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The table's columns, in this order (comma-separated): id, kind, status, field, record,
    /// crm, anaplan, base, rule, created, age, resolution, by, note, message.
    #[arg(long, value_delimiter = ',', value_parser = parse_column)]
    pub columns: Vec<ListColumn>,
    /// Every column (unless --columns chooses), every value in full, however wide.
    #[arg(long)]
    pub wide: bool,
}

/// `--status`: one status, or `all` (the same as leaving it out; there for scripts and for
/// people who expect to be able to say it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusArg {
    All,
    Only(ExceptionStatus),
}

impl StatusArg {
    pub fn status(self) -> Option<ExceptionStatus> {
        match self {
            StatusArg::All => None,
            StatusArg::Only(status) => Some(status),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct FilterArgs {
    /// all, open, resolved, auto_resolved or converged (default: all).
    #[arg(long, value_parser = parse_status)]
    pub status: Option<StatusArg>,
    /// conflict, ownership_violation, validation, write_failed, gap, unmapped or lifecycle.
    #[arg(long, value_parser = parse_kind)]
    pub kind: Option<ExceptionKind>,
    /// The CRM object, e.g. Opportunity.
    #[arg(long)]
    pub object: Option<String>,
    /// The CRM field, e.g. Amount.
    #[arg(long)]
    pub field: Option<String>,
    /// The CRM record id.
    #[arg(long)]
    pub record: Option<String>,
    /// Created on or after: YYYY-MM-DD (UTC) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Created before (a bare day includes that day).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip this many rows first.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
}

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["take", "set", "dismiss"])))]
pub struct ResolveArgs {
    /// The exception's id.
    pub id: i64,
    /// Make both sides hold this side's value: crm or anaplan.
    #[arg(long, value_parser = parse_side)]
    pub take: Option<Side>,
    /// Make both sides hold this value (checked against the field's type).
    #[arg(long, value_name = "VALUE", allow_hyphen_values = true)]
    pub set: Option<String>,
    /// Close it without writing anything.
    #[arg(long)]
    pub dismiss: bool,
    /// Why, for the record.
    #[arg(long)]
    pub note: Option<String>,
    /// Who resolved it (default: $USER, else $USERNAME, else the system's name for the
    /// process's user).
    #[arg(long)]
    pub by: Option<String>,
    /// Rule files: with them, a --set value must also pass the field's picklist, allowed
    /// values and bounds (not only its type).
    #[arg(long, value_name = "PATH")]
    pub rules: Vec<PathBuf>,
}

fn parse_status(s: &str) -> Result<StatusArg, String> {
    if s == "all" {
        return Ok(StatusArg::All);
    }
    s.parse().map(StatusArg::Only).map_err(|_: String| {
        let names: Vec<&str> = ExceptionStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown status `{s}` (one of: all, {})", names.join(", "))
    })
}

fn parse_column(s: &str) -> Result<ListColumn, String> {
    s.parse()
}

fn parse_kind(s: &str) -> Result<ExceptionKind, String> {
    s.parse()
}

fn parse_side(s: &str) -> Result<Side, String> {
    s.parse()
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
        Command::Exceptions {
            db,
            format,
            command,
        } => match command {
            ExceptionsCommand::List(args) => exceptions::list(&db, &args, format),
            ExceptionsCommand::Show { id } => exceptions::show(&db, id, format),
            ExceptionsCommand::Resolve(args) => exceptions::resolve(&db, &args, format),
            ExceptionsCommand::Stats(args) => exceptions::stats(&db, &args, format),
            ExceptionsCommand::Apply { config } => run::apply(&config),
        },
        Command::Sim(SimCommand::Anaplan(args)) => sim_anaplan::run(args),
        Command::Sim(SimCommand::Crm(args)) => sim_crm::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Run(args) => run::run(args),
        Command::Status(args) => status::run(&args),
        Command::Check(args) => check::run(&args, color),
    }
}

/// `--sim-token` of both simulators: a [`plansync_sim::Secret`], so it stays out of `Debug`
/// output.
fn sim_token(s: &str) -> Result<plansync_sim::Secret, String> {
    if s.trim().is_empty() {
        Err("the token must not be empty".into())
    } else {
        Ok(plansync_sim::Secret::new(s.trim()))
    }
}

/// A simulator's start banner on stdout. A reader that took only the first line (a script
/// after the URL) and closed the pipe must not stop the simulator, so write errors are
/// ignored: `println!` would panic.
fn banner(lines: &[String]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
    let _ = out.flush();
}
