//! `plansync demo`: runs the whole loop on the local simulators and prints what happened.
//! Progress goes to stderr (a spinner on a terminal, nothing otherwise); the summary, or one
//! JSON object with `--json`, to stdout. Exit 0 only if both systems agree and nothing was
//! written after the engine settled.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::demo::{self, DemoOptions, Progress};

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Opportunities in the simulated CRM (territories: one per hundred).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(10..=200_000))]
    pub records: u64,
    /// Seconds the scripted day's edits are paced over.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub duration: u64,
    /// Picks the generated data and the script.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The SQLite file to write (a previous demo's file there is replaced).
    #[arg(long, default_value = "plansync-demo.db")]
    pub db: PathBuf,
    /// A folder of rule files to run the demo under (default: the built-in copies of the
    /// repository's `rules/`, whatever the current directory).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Leave the simulators and the engine running afterwards (until Ctrl-C).
    #[arg(long)]
    pub keep_running: bool,
}

struct Spinner(ProgressBar);

impl Progress for Spinner {
    fn phase(&self, name: &str) {
        self.0.set_message(name.to_string());
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = DemoOptions {
        records: usize::try_from(args.records).unwrap_or(usize::MAX),
        duration: Duration::from_secs(args.duration),
        seed: args.seed,
        db: args.db.clone(),
        rules: args.rules.clone(),
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        ProgressBar::hidden()
    };
    let spinner = Spinner(bar);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let (report, running) = demo::run(&options, &spinner).await?;
        spinner.0.finish_and_clear();
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.render());
        }
        if args.keep_running {
            eprintln!(
                "\nStill running (Ctrl-C to stop):\n  CRM      {}  (OAuth client {} / {})\n  Anaplan  {}  (user {} / {})\n  store    {}",
                running.world.crm.instance_url(),
                plansync_sim::crm::DEFAULT_CLIENT_ID,
                plansync_sim::crm::DEFAULT_CLIENT_SECRET,
                running.world.anaplan.base_url(),
                plansync_sim::anaplan::DEFAULT_USER,
                plansync_sim::anaplan::DEFAULT_PASSWORD,
                report.db,
            );
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        }
        running.engine.shutdown().await?;
        running.world.crm.shutdown().await;
        running.world.anaplan.shutdown().await;
        let passed = report.agree && report.writes_after_quiescence == 0;
        Ok(if passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}
