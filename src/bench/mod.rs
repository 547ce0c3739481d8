//! `plansync bench`: the engine measured end to end on the local simulators, so a team can
//! size its own deployment. Each scenario starts both simulators (with an optional per-call
//! latency on Anaplan, e.g. a WAN's 80 ms), the engine with a real SQLite file, drives load,
//! and reports figures; nothing here is a pass/fail test.
//!
//! Scenarios so far:
//! - `burst`: N records × F fields changed at once in the CRM, arriving on the stream; the
//!   time until Anaplan has acknowledged every write, the Anaplan calls it took (by kind), the
//!   429s, and a naive integration's figures (one call per change under the same rate limit),
//!   extrapolated from a timed sample, with the ratio of calls;
//! - `steady`: a fixed rate of CRM events for a while; the commit → acknowledgement latency
//!   percentiles and the outbox depth over time;
//! - `poll_diff`: one Anaplan poll of a module of a million cells with a planner's edits in
//!   it, from the trigger until the edits are decided and committed;
//! - `reconcile`: the engine's first run (as its own process, `plansync run`) against a
//!   million records seeded on both sides; the time, the engine's peak memory and the CRM
//!   calls, with the CRM read through a Bulk API 2.0 query job and again through REST;
//! - `reverse`: N records × F fields changed by a planner in Anaplan, found by one poll and
//!   written to the CRM (Collections or Bulk API 2.0); the time until every write is
//!   acknowledged and reads back from the CRM, the calls on both sides, mismatches.

mod burst;
mod poll_diff;
mod reconcile;
mod reverse;
mod steady;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::harness::world::{self, World};
use plansync::engine::run::{EngineHandle, EngineOptions, Sinks, StreamOptions};
use plansync::engine::sink::anaplan::{AnaplanSink, AnaplanSinkSettings};
use plansync::engine::sink::crm::CrmSink;
use plansync::rules::{self, RuleSet};

pub use burst::BurstReport;
pub use poll_diff::PollDiffReport;
pub use reconcile::ReconcileReport;
pub use reverse::ReverseReport;
pub use steady::SteadyReport;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench setup: {0}")]
    Setup(String),
    #[error("bench: {0}")]
    Run(String),
    #[error(transparent)]
    Engine(#[from] plansync::engine::run::EngineError),
    #[error(transparent)]
    Store(#[from] plansync::store::StoreError),
}

impl From<crate::harness::SetupError> for BenchError {
    fn from(e: crate::harness::SetupError) -> Self {
        BenchError::Setup(e.0)
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub rules: PathBuf,
    /// Where the engine's SQLite files go (one per scenario).
    pub dir: PathBuf,
    /// Added to every Anaplan call by the simulator.
    pub anaplan_latency: Duration,
    pub burst_records: usize,
    pub burst_fields: usize,
    pub steady_rate: u32,
    pub steady_seconds: u64,
    /// Cells (list items × line items) of the module the poll-diff scenario reads.
    pub poll_diff_cells: usize,
    /// Records seeded on both sides for the reconcile scenario.
    pub reconcile_records: usize,
    /// Above this many CRM records the reconcile scenario's first run reads the CRM through a
    /// Bulk API 2.0 query job (then runs again through REST, to compare).
    pub reconcile_bulk_above: usize,
    /// The `plansync` executable the reconcile scenario runs the engine with.
    pub engine_exe: PathBuf,
    /// Records a planner changes in the reverse scenario, and fields per record (1 to 5).
    pub reverse_records: usize,
    pub reverse_fields: usize,
    pub seed: u64,
}

impl BenchOptions {
    /// The sizes: 20,000 records × 5 fields; 2,000 events/s for 60 s.
    pub fn full(rules: PathBuf, dir: PathBuf) -> BenchOptions {
        BenchOptions {
            rules,
            dir,
            anaplan_latency: Duration::ZERO,
            burst_records: 20_000,
            burst_fields: 5,
            steady_rate: 2_000,
            steady_seconds: 60,
            poll_diff_cells: 1_000_000,
            reconcile_records: 1_000_000,
            reconcile_bulk_above: 20_000,
            engine_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("plansync")),
            reverse_records: 20_000,
            reverse_fields: 5,
            seed: 7,
        }
    }

    /// Small sizes that run in seconds (what CI checks).
    pub fn quick(rules: PathBuf, dir: PathBuf) -> BenchOptions {
        BenchOptions {
            burst_records: 1_000,
            steady_rate: 200,
            steady_seconds: 3,
            poll_diff_cells: 20_000,
            reconcile_records: 2_000,
            reconcile_bulk_above: 1_000,
            reverse_records: 1_000,
            ..BenchOptions::full(rules, dir)
        }
    }
}

/// Everything `--json` prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<BurstReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady: Option<SteadyReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_diff: Option<PollDiffReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<ReconcileReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse: Option<ReverseReport>,
}

/// The rule files, or an error naming each problem (file, line, what to do).
pub(crate) fn load_rules(path: &Path) -> Result<rules::RuleSet, BenchError> {
    rules::load(&[path.to_path_buf()]).map_err(|errors| {
        let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
        BenchError::Setup(format!(
            "the rules in {} do not load:\n  {}",
            path.display(),
            problems.join("\n  ")
        ))
    })
}

/// The path of scenario `name`'s SQLite file in `dir`, with any earlier run's file removed:
/// every run starts from an empty store (a first run).
pub(crate) fn fresh_db(dir: &std::path::Path, name: &str) -> Result<PathBuf, BenchError> {
    let db = dir.join(format!("bench-{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        match std::fs::remove_file(PathBuf::from(&path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(BenchError::Setup(format!(
                    "removing the last run's {}: {e}",
                    PathBuf::from(path).display()
                )));
            }
            _ => {}
        }
    }
    Ok(db)
}

/// Both simulators and the engine, started and settled (the first reconciliation done).
pub(crate) struct Rig {
    pub world: World,
    pub engine: EngineHandle,
    pub _rules: watch::Sender<Arc<RuleSet>>,
    pub db: PathBuf,
}

impl Rig {
    pub async fn start(
        options: &BenchOptions,
        name: &str,
        records: usize,
    ) -> Result<Rig, BenchError> {
        Rig::start_with_rules(options, name, records, &options.rules).await
    }

    /// As [`Rig::start`], under the rule files at `rules_path` instead of the options'.
    pub async fn start_with_rules(
        options: &BenchOptions,
        name: &str,
        records: usize,
        rules_path: &Path,
    ) -> Result<Rig, BenchError> {
        let rules = load_rules(rules_path)?;
        std::fs::create_dir_all(&options.dir)
            .map_err(|e| BenchError::Setup(format!("{}: {e}", options.dir.display())))?;
        let db = fresh_db(&options.dir, name)?;
        let world = world::start(&rules, records, options.seed).await?;
        if !options.anaplan_latency.is_zero() {
            world.anaplan.set_faults(plansync_sim::anaplan::Faults {
                latency_ms: u64::try_from(options.anaplan_latency.as_millis()).unwrap_or(u64::MAX),
                ..plansync_sim::anaplan::Faults::default()
            });
        }
        let crm = world::crm_client(&world.crm)?;
        let anaplan = world::anaplan_client(&world.anaplan)?;
        let mut engine_options = EngineOptions::new(&db);
        engine_options.batch_window = Duration::from_millis(100);
        // Only the stream feeds a bench: pollers would add noise.
        engine_options.crm_poll = Duration::from_secs(24 * 3600);
        engine_options.anaplan_poll = Duration::from_secs(24 * 3600);
        engine_options.stream = Some(StreamOptions {
            api_version: world::API_VERSION.into(),
            channels: vec!["/data/OpportunityChangeEvent".into()],
            transport: plansync::crm::cdc::Transport::WebSocket,
            client_id: world::CLIENT_ID.into(),
        });
        let sinks = Sinks {
            anaplan: Box::new(AnaplanSink::new(
                anaplan.clone(),
                AnaplanSinkSettings {
                    transactional_max_cells: 50_000,
                    bulk_imports: Default::default(),
                },
            )),
            crm: Box::new(CrmSink::new(crm.clone())),
        };
        let (tx, rx) = watch::channel(Arc::new(rules));
        let engine = EngineHandle::start(engine_options, rx, crm, anaplan, sinks).await?;
        let rig = Rig {
            world,
            engine,
            _rules: tx,
            db,
        };
        rig.settle(Duration::from_secs(3600)).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !rig.engine.stream_connected() {
            if Instant::now() > deadline {
                return Err(BenchError::Setup("the stream did not connect".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(rig)
    }

    /// Waits until every shard has committed and no write is open.
    pub async fn settle(&self, limit: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + limit;
        loop {
            self.engine.flush().await?;
            if self.engine.outbox_depth().await? == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Run(format!("not settled within {limit:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) -> Result<(), BenchError> {
        self.engine.shutdown().await?;
        self.world.crm.shutdown().await;
        self.world.anaplan.shutdown().await;
        Ok(())
    }
}

/// Runs the named scenario (`None`: all that exist).
pub async fn run(
    options: &BenchOptions,
    scenario: Option<&str>,
) -> Result<BenchReport, BenchError> {
    let mut report = BenchReport::default();
    let want = |name: &str| scenario.is_none_or(|s| s == name);
    if want("burst") {
        report.burst = Some(burst::run(options).await?);
    }
    if want("steady") {
        report.steady = Some(steady::run(options).await?);
    }
    if want("poll_diff") {
        report.poll_diff = Some(poll_diff::run(options).await?);
    }
    if want("reconcile") {
        report.reconcile = Some(reconcile::run(options).await?);
    }
    if want("reverse") {
        report.reverse = Some(reverse::run(options).await?);
    }
    Ok(report)
}
