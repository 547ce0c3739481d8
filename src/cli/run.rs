//! `plansync run --config plansync.toml`: the sync engine as a long-running process.
//!
//! Signals: SIGINT / SIGTERM stop it cleanly (intake stops, the batch in hand is finished,
//! SQLite is closed); SIGHUP reloads the rule files, taken only if every file compiles and
//! every `[[test]]` case passes (otherwise the running rules stay and the error is logged);
//! SIGUSR1 runs both pollers now.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;

use plansync::anaplan::AnaplanClient;
use plansync::config::{Config, ConfigError};
use plansync::crm::CrmClient;
use plansync::engine::run::{EngineHandle, EngineOptions, Sinks, StreamOptions};
use plansync::engine::sink::anaplan::{AnaplanSink, AnaplanSinkSettings};
use plansync::engine::sink::crm::CrmSink;
use plansync::preflight::{self, Outcome};
use plansync::rules::{self, LoadError, RuleSet, cases};
use plansync_toml::diagnostic;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The configuration file (see examples/plansync.toml).
    #[arg(long, default_value = "plansync.toml", env = "PLANSYNC_CONFIG")]
    pub config: PathBuf,
    /// Run on the pollers alone, without the CDC stream.
    #[arg(long)]
    pub no_stream: bool,
}

/// Loads the rule set and checks its test cases: the gate for starting and for a reload.
fn load_rules(dir: &Path) -> Result<RuleSet, String> {
    let rules = rules::load(&[dir.to_path_buf()]).map_err(|errors| {
        errors
            .iter()
            .flat_map(|e| match e {
                LoadError::Invalid(file) => file.one_line_each(),
                other => vec![other.to_string()],
            })
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let mut failures = Vec::new();
    for pairing in &rules.pairings {
        for outcome in cases::run(pairing) {
            if !outcome.passed() {
                failures.push(format!(
                    "{}: test `{}` fails",
                    pairing.path.display(),
                    outcome.name
                ));
            }
        }
    }
    if failures.is_empty() {
        Ok(rules)
    } else {
        Err(failures.join("\n"))
    }
}

/// The configuration, or the exit code after reporting why it cannot be used.
fn load_config(path: &Path) -> anyhow::Result<Result<Config, ExitCode>> {
    match Config::load(path) {
        Ok(c) => Ok(Ok(c)),
        Err(ConfigError::Invalid(errors)) => {
            eprint!("{}", diagnostic::render(&errors, false));
            for line in errors.one_line_each() {
                eprintln!("error: {line}");
            }
            Ok(Err(ExitCode::from(2)))
        }
        Err(e) => Err(e.into()),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The configuration and its rules, both checked, or the exit code after saying why not.
fn checked(path: &Path) -> anyhow::Result<Result<(Config, RuleSet), ExitCode>> {
    let config = match load_config(path)? {
        Ok(c) => c,
        Err(code) => return Ok(Err(code)),
    };
    match load_rules(&config.rules) {
        Ok(rules) => Ok(Ok((config, rules))),
        Err(e) => {
            eprintln!(
                "error: the rules in {} cannot be used:\n{e}",
                config.rules.display()
            );
            Ok(Err(ExitCode::from(2)))
        }
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        // Before anything else: a signal during start-up (reading the configuration, the
        // first run) is taken like any other, never the default action that kills.
        let mut signals = Signals::install()?;
        let (config, rules) = match checked(&args.config)? {
            Ok(both) => both,
            Err(code) => return Ok(code),
        };
        // The preflight of `plansync check`: a wrong password, a name no system knows or a
        // field the rules cannot write stops the start here, with what to fix, before
        // anything is read or decided. A system that did not answer is not a refusal: the
        // engine retries its reads.
        let report = tokio::select! {
            report = preflight::check(&config, &rules) => report,
            _ = signals.term.recv() => return Ok(ExitCode::SUCCESS),
            _ = signals.int.recv() => return Ok(ExitCode::SUCCESS),
        };
        let failed: Vec<_> = report
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .collect();
        if !failed.is_empty() {
            eprintln!(
                "error: plansync did not start: {} preflight check(s) failed (`plansync check --config {}` lists every check):",
                failed.len(),
                args.config.display()
            );
            for c in failed {
                let fix = c.fix.as_deref().map(|f| format!(" → {f}")).unwrap_or_default();
                eprintln!("  ✗ {}: {}{fix}", c.name, c.detail);
            }
            return Ok(ExitCode::from(2));
        }
        for c in report.checks.iter().filter(|c| c.outcome == Outcome::CouldNotRun) {
            tracing::warn!(target: "plansync::engine", event = "preflight_check_skipped", check = %c.name, detail = %c.detail, "a preflight check could not be made; starting anyway");
        }
        serve(config, rules, args.no_stream, signals).await
    })
}

/// The signals `plansync run` takes.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            usr1: signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?,
        })
    }
}

/// `plansync exceptions apply --config`: sends the writes resolutions queued, once, without
/// the sources (no poll, no stream), then stops.
pub fn apply(config: &Path) -> anyhow::Result<ExitCode> {
    let (config, rules) = match checked(config)? {
        Ok(both) => both,
        Err(code) => return Ok(code),
    };
    runtime()?.block_on(async {
        let (mut options, sinks, crm, anaplan) = engine_parts(&config, &rules, true)?;
        options.sources = false;
        let (_rules_tx, rules_rx) = watch::channel(Arc::new(rules));
        let engine = EngineHandle::start(options, rules_rx, crm, anaplan, sinks)
            .await
            .with_context(|| format!("opening {}", config.store.display()))?;
        let queued = engine.outbox_depth().await?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            engine.flush().await?;
            let depth = engine.outbox_depth().await?;
            if depth == 0 {
                break;
            }
            if std::time::Instant::now() > deadline {
                eprintln!(
                    "error: {depth} write(s) still unanswered after 5 minutes; run again later"
                );
                engine.shutdown().await?;
                return Ok(ExitCode::from(1));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        engine.shutdown().await?;
        println!("{queued} queued write(s) sent; refusals are recorded as write_failed exceptions");
        Ok(ExitCode::SUCCESS)
    })
}

/// The engine's options, sinks and clients as the configuration describes them.
fn engine_parts(
    config: &Config,
    rules: &RuleSet,
    no_stream: bool,
) -> anyhow::Result<(EngineOptions, Sinks, CrmClient, AnaplanClient)> {
    let anaplan = AnaplanClient::new(config.anaplan_client_config())
        .context("configuring the Anaplan client")?;
    let crm = CrmClient::new(config.crm_client_config()).context("configuring the CRM client")?;
    let objects: Vec<String> = rules
        .pairings
        .iter()
        .map(|p| p.crm_object.clone())
        .collect();
    let stream = (!no_stream).then(|| StreamOptions {
        api_version: config.crm.api_version.clone(),
        channels: config.cdc_channels(objects.iter().map(String::as_str)),
        transport: config.crm.streaming,
        client_id: config.crm.call_client_id.clone(),
    });
    let mut options = EngineOptions::new(&config.store);
    options.shards = config.engine.shards;
    options.batch_window = config.engine.batch_window;
    options.write_retry = config.engine.write_retry();
    options.crm_poll = config.schedule.crm_poll;
    options.crm_poll_stream_down = config.schedule.crm_poll_while_stream_down;
    options.crm_api_reserve_percent = config.crm.api_reserve_percent;
    options.anaplan_poll = config.schedule.anaplan_poll;
    options.lookback = config.schedule.lookback;
    options.stream = stream;
    let sinks = Sinks {
        anaplan: Box::new(AnaplanSink::new(
            anaplan.clone(),
            AnaplanSinkSettings {
                transactional_max_cells: config.engine.transactional_max_cells,
                bulk_imports: config.engine.bulk_imports.clone(),
            },
        )),
        crm: Box::new(CrmSink::new(crm.clone())),
    };
    Ok((options, sinks, crm, anaplan))
}

async fn serve(
    config: Config,
    rules: RuleSet,
    no_stream: bool,
    mut signals: Signals,
) -> anyhow::Result<ExitCode> {
    let (options, sinks, crm, anaplan) = engine_parts(&config, &rules, no_stream)?;
    let listener = match config.http.address {
        Some(address) => match crate::serve::bind(address).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        },
        None => None,
    };
    let (rules_tx, rules_rx) = watch::channel(Arc::new(rules));
    // `launch` returns at once; the first run goes on in the engine while signals are heard.
    let engine = EngineHandle::launch(options, rules_rx, crm, anaplan, sinks)
        .await
        .with_context(|| format!("starting the engine on {}", config.store.display()))?;
    tracing::info!(target: "plansync::engine", event = "running", store = %config.store.display(), "plansync is running");
    let server = match listener {
        Some(l) => Some(crate::serve::start(l, engine.observer())?),
        None => None,
    };
    let (notify_stop, notify_stopped) = watch::channel(false);
    let notifier = config.notify.clone().map(|settings| {
        tokio::spawn(plansync::notify::run(
            engine.observer(),
            settings,
            notify_stopped,
        ))
    });

    let progress = FirstRunBar::start(&config.store);
    let mut announced = false;
    let failure = loop {
        tokio::select! {
            _ = signals.int.recv() => break None,
            _ = signals.term.recv() => break None,
            _ = signals.hup.recv() => match load_rules(&config.rules) {
                Ok(new) => {
                    let hashes: Vec<String> =
                        new.pairings.iter().map(|p| format!("{} {}", p.name, p.short_hash())).collect();
                    tracing::info!(target: "plansync::engine", event = "rules_reloaded", rules = %hashes.join(", "));
                    let _ = rules_tx.send(Arc::new(new));
                }
                // One line per problem: a log event is one line, for the shippers that read them.
                Err(e) => {
                    for problem in e.lines() {
                        tracing::error!(
                            target: "plansync::engine",
                            event = "rules_reload_refused",
                            problem,
                            "the new rules were not taken (the running ones stay)"
                        );
                    }
                }
            },
            // Before the first run is over the pollers are not running yet: the request is
            // kept, and they poll as soon as they start.
            _ = signals.usr1.recv() => engine.poll_now(None),
            ready = engine.ready(), if !announced => {
                announced = true;
                progress.finish();
                if ready.is_ok() {
                    tracing::info!(target: "plansync::engine", event = "ready", "first run complete; the pollers and the stream are running");
                }
            }
            message = engine.failed() => break Some(message),
        }
    };
    progress.finish();
    tracing::info!(target: "plansync::engine", event = "stopping", "stopping");
    if let Some(server) = server {
        server.stop().await;
    }
    let _ = notify_stop.send(true);
    if let Some(notifier) = notifier {
        let _ = notifier.await;
    }
    let stopped = engine.shutdown().await;
    match (failure, stopped) {
        (None, Ok(())) => Ok(ExitCode::SUCCESS),
        (Some(m), _) => {
            eprintln!("error: {m}");
            Ok(ExitCode::from(2))
        }
        (None, Err(e)) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// On a terminal, a spinner with what the first run is doing (the phase it stores for
/// `plansync status`: the side it reads, records read and decided, the rate, the time left),
/// until it completes. Elsewhere (a service's journal) nothing: the engine logs its progress
/// as INFO lines there. A store that completed its first run shows nothing either.
struct FirstRunBar {
    bar: indicatif::ProgressBar,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FirstRunBar {
    fn start(store: &Path) -> FirstRunBar {
        use std::io::IsTerminal;
        let done = plansync::store::Store::open_read_only(store)
            .and_then(|s| s.first_run_completed())
            .is_ok_and(|at| at.is_some());
        if done || !std::io::stderr().is_terminal() {
            return FirstRunBar {
                bar: indicatif::ProgressBar::hidden(),
                task: None,
            };
        }
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} first run {elapsed:>4} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let (shown, path) = (bar.clone(), store.to_path_buf());
        let task = tokio::spawn(async move {
            loop {
                let phase = plansync::store::Store::open_read_only(&path)
                    .and_then(|s| s.first_run_phase())
                    .ok()
                    .flatten();
                if let Some(phase) = phase {
                    shown.set_message(phase);
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        });
        FirstRunBar {
            bar,
            task: Some(task),
        }
    }

    fn finish(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        self.bar.finish_and_clear();
    }
}
