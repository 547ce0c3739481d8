//! `plansync demo`: the whole loop with no account. Both simulators start in-process on
//! loopback ports with a realistic sales-planning model (`world.rs`), the engine runs on them
//! with its real clients, sinks and SQLite file, a scripted quarter-end day plays out
//! (`script.rs`), and the summary (`report.rs`) says what happened and checks that both
//! systems agree on every synced field, or that an open exception says why not.

mod report;
mod script;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;

use crate::harness::world::{self, World};
pub use report::DemoReport;

use plansync::engine::run::{EngineHandle, EngineOptions, Sinks, StreamOptions};
use plansync::engine::sink::anaplan::{AnaplanSink, AnaplanSinkSettings};
use plansync::engine::sink::crm::CrmSink;
use plansync::rules::decide::{Context, effective};
use plansync::rules::{self, RuleSet};
use plansync::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo setup: {0}")]
    Setup(String),
    #[error("demo script: {0}")]
    Script(String),
    #[error("the rules in {}: {message}", path.display())]
    Rules { path: PathBuf, message: String },
    #[error(transparent)]
    Engine(#[from] plansync::engine::run::EngineError),
    #[error(transparent)]
    Store(#[from] plansync::store::StoreError),
}

impl From<crate::harness::SetupError> for DemoError {
    fn from(e: crate::harness::SetupError) -> Self {
        DemoError::Setup(e.0)
    }
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Opportunities in the CRM (territories: one per hundred, 6 to 60).
    pub records: usize,
    /// How long the scripted day's edits are paced over (the burst and the settling come on
    /// top).
    pub duration: Duration,
    /// Picks the data and the script.
    pub seed: u64,
    /// The SQLite file the engine writes and the demo leaves behind.
    pub db: PathBuf,
    /// The rule files; `None`: the built-in copies of the repository's `rules/`.
    pub rules: Option<PathBuf>,
}

/// The repository's example rules, compiled into the binary so that `plansync demo` runs
/// from any directory (the simulated world is built to match them).
const BUILT_IN_RULES: [(&str, &str); 2] = [
    (
        "opportunity.toml",
        include_str!("../../rules/opportunity.toml"),
    ),
    ("territory.toml", include_str!("../../rules/territory.toml")),
];

/// The rule files' names and texts: the given folder's, or the built-in ones.
fn rule_texts(rules: Option<&Path>) -> Result<Vec<(PathBuf, String)>, DemoError> {
    let Some(dir) = rules else {
        return Ok(BUILT_IN_RULES
            .iter()
            .map(|(name, text)| (Path::new("rules").join(name), (*text).to_string()))
            .collect());
    };
    let files = rules::rule_files(&[dir.to_path_buf()]).map_err(|e| DemoError::Rules {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).map_err(|e| DemoError::Rules {
                path: file.clone(),
                message: format!("cannot read it: {e}"),
            })?;
            Ok((file, text))
        })
        .collect()
}

fn compile(path: &Path, texts: &[(PathBuf, String)]) -> Result<RuleSet, DemoError> {
    rules::load_texts(texts).map_err(|errors| DemoError::Rules {
        path: path.to_path_buf(),
        message: errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })
}

/// Where the demo is, for a progress display.
pub trait Progress: Send + Sync {
    fn phase(&self, name: &str);
}

/// Both simulators and the engine, left running for `--keep-running`.
pub struct Running {
    pub world: World,
    pub engine: EngineHandle,
    /// Keeps the engine's rules channel open.
    pub _rules: watch::Sender<Arc<RuleSet>>,
}

/// The Anaplan import that loads the opportunity module (default simulator seed).
const OPPORTUNITY_IMPORT: &str = "OPP01 Opportunity Data from opportunities.csv";

/// Runs the demo: start, reconcile, the scripted day, quiescence, the summary.
pub async fn run(
    options: &DemoOptions,
    progress: &dyn Progress,
) -> Result<(DemoReport, Running), DemoError> {
    let started = Instant::now();
    let texts = rule_texts(options.rules.as_deref())?;
    let rules = compile(
        options.rules.as_deref().unwrap_or(Path::new("rules")),
        &texts,
    )?;
    fresh_store(&options.db)?;
    let quarter_end_dir = options.db.with_extension("quarter-end-rules");

    progress.phase("starting the simulators");
    let world = world::start(&rules, options.records, options.seed).await?;
    let crm = world::crm_client(&world.crm)?;
    let anaplan = world::anaplan_client(&world.anaplan)?;

    let mut engine_options = EngineOptions::new(&options.db);
    engine_options.batch_window = Duration::from_millis(100);
    // The day is compressed: the "5-minute" polls come every few seconds.
    engine_options.crm_poll = Duration::from_secs(5);
    engine_options.anaplan_poll = Duration::from_secs(3);
    engine_options.lookback = Duration::from_secs(60);
    engine_options.stream = Some(StreamOptions {
        api_version: world::API_VERSION.into(),
        channels: rules
            .pairings
            .iter()
            .map(|p| match p.crm_object.strip_suffix("__c") {
                Some(stem) => format!("/data/{stem}__ChangeEvent"),
                None => format!("/data/{}ChangeEvent", p.crm_object),
            })
            .collect(),
        transport: plansync::crm::cdc::Transport::WebSocket,
        client_id: world::CLIENT_ID.into(),
    });
    let sinks = Sinks {
        anaplan: Box::new(AnaplanSink::new(
            anaplan.clone(),
            AnaplanSinkSettings {
                transactional_max_cells: 1_000,
                bulk_imports: BTreeMap::from([(
                    "opportunity".to_string(),
                    OPPORTUNITY_IMPORT.to_string(),
                )]),
            },
        )),
        crm: Box::new(CrmSink::new(crm.clone())),
    };
    let (rules_tx, rules_rx) = watch::channel(Arc::new(rules.clone()));
    progress.phase("first reconciliation");
    let engine = EngineHandle::start(engine_options, rules_rx, crm, anaplan, sinks).await?;
    settle(&engine, Duration::from_secs(120)).await?;

    let quarter_end = async {
        let rules = quarter_end_rules(&texts, &quarter_end_dir)?;
        let _ = rules_tx.send(Arc::new(rules));
        Ok(())
    };
    let done = script::run(
        &world,
        &engine,
        options.seed,
        options.duration,
        progress,
        quarter_end,
    )
    .await?;

    progress.phase("settling");
    for _ in 0..2 {
        engine.poll_now(None);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        settle(&engine, Duration::from_secs(300)).await?;
    }

    progress.phase("checking for echoes");
    world.anaplan.clear_request_log();
    world.crm.reset_request_log();
    for _ in 0..2 {
        engine.poll_now(None);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        settle(&engine, Duration::from_secs(60)).await?;
    }
    let writes_after_quiescence = report::write_requests(&world);

    progress.phase("checking both systems");
    let current = rules_tx.borrow().clone();
    let report = report::build(report::Inputs {
        rules: &current,
        world: &world,
        engine: &engine,
        db: &options.db,
        done,
        writes_after_quiescence,
        records: options.records,
        seconds: started.elapsed().as_secs_f64(),
        quarter_end_rules: &quarter_end_dir,
    })?;
    Ok((
        report,
        Running {
            world,
            engine,
            _rules: rules_tx,
        },
    ))
}

/// Waits until every shard has committed and no write is queued or unanswered.
async fn settle(engine: &EngineHandle, limit: Duration) -> Result<(), DemoError> {
    let deadline = Instant::now() + limit;
    let mut quiet = 0;
    while quiet < 2 {
        engine.flush().await?;
        if engine.outbox_depth().await? == 0 {
            quiet += 1;
        } else {
            quiet = 0;
        }
        if Instant::now() > deadline {
            return Err(DemoError::Script(format!(
                "the engine did not settle within {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A previous demo's store is replaced (the demo starts from an empty store), whichever
/// plansync version wrote it; any other file, a plansync store the demo did not create
/// among them, is left alone and refused. Then the new store is created and marked.
fn fresh_store(db: &Path) -> Result<(), DemoError> {
    if db.exists() {
        // Demos before the mark left their quarter-end rules beside the store: a store with
        // that folder is one of theirs (a real store has no reason to).
        let legacy_demo = db.with_extension("quarter-end-rules").is_dir();
        match Store::is_demo_store(db) {
            Ok(true) => {}
            Ok(false) if legacy_demo => {}
            Ok(false) => {
                return Err(DemoError::Setup(format!(
                    "{} is a plansync store the demo did not create: it may hold real work, so the demo leaves it alone; choose another --db (or delete the file yourself)",
                    db.display()
                )));
            }
            Err(e) => {
                return Err(DemoError::Setup(format!(
                    "{} exists and is not a plansync store ({e}); choose another --db",
                    db.display()
                )));
            }
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut path = db.as_os_str().to_owned();
            path.push(suffix);
            let path = PathBuf::from(path);
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| {
                    DemoError::Setup(format!("cannot replace {}: {e}", path.display()))
                })?;
            }
        }
    }
    Store::open(db)
        .and_then(|mut store| store.mark_demo_store(Utc::now()))
        .map_err(|e| DemoError::Setup(format!("creating the demo store: {e}")))
}

/// The rules with the quarter-end window moved over today, as an admin switching on the
/// quarter-end rules for the last day would. Written to `out`, beside the store (the audit's
/// rule hashes name these files; the summary says they are there), and checked: the forecast
/// override of an open deal must now be decided by `when.quarter_end`.
fn quarter_end_rules(texts: &[(PathBuf, String)], out: &Path) -> Result<RuleSet, DemoError> {
    std::fs::create_dir_all(out)
        .map_err(|e| DemoError::Setup(format!("creating {}: {e}", out.display())))?;
    let now = Utc::now();
    for window in ["last_business_days = 60", "first_business_days = 60"] {
        let mut moved = Vec::new();
        for (file, text) in texts {
            let text = text.replace("last_business_days = 5", window);
            let path = out.join(file.file_name().unwrap_or_default());
            std::fs::write(&path, &text)
                .map_err(|e| DemoError::Setup(format!("writing {}: {e}", path.display())))?;
            moved.push((path, text));
        }
        let rules = compile(out, &moved)?;
        let inside = rules.pairing("opportunity").is_some_and(|p| {
            p.field("Forecast_Override__c").is_some_and(|f| {
                let ctx = Context {
                    record: BTreeMap::from([(
                        "StageName".to_string(),
                        plansync::model::Value::Text("Negotiation".into()),
                    )]),
                    flags: BTreeMap::new(),
                };
                effective(p, f, now, &ctx, false)
                    .rule_id
                    .ends_with("when.quarter_end")
            })
        });
        if inside {
            return Ok(rules);
        }
    }
    Err(DemoError::Setup(
        "no quarter-end window could be placed over today".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file marked as a plansync store at `version`, with the engine's state table, and
    /// the demo's mark when `demo`.
    fn store_file(path: &Path, version: i64, demo: bool) {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.pragma_update(None, "application_id", plansync::store::APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", version).unwrap();
        conn.execute_batch(
            "CREATE TABLE engine_state (name TEXT PRIMARY KEY, value TEXT, updated_at TEXT)",
        )
        .unwrap();
        if demo {
            conn.execute_batch("INSERT INTO engine_state VALUES ('demo.created_at', 'x', 'x')")
                .unwrap();
        }
    }

    #[test]
    fn only_a_store_the_demo_created_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("demo.db");
        let version = plansync::store::SCHEMA_VERSION;
        for found in [version - 1, version, version + 1] {
            store_file(&db, found, true);
            fresh_store(&db).unwrap_or_else(|e| panic!("schema v{found}: {e}"));
            assert!(
                Store::is_demo_store(&db).unwrap(),
                "schema v{found}: replaced"
            );
            let store = Store::open_read_only(&db).unwrap();
            assert_eq!(store.first_run_completed().unwrap(), None, "a fresh store");
            drop(store);
            std::fs::remove_file(&db).unwrap();
        }

        // A real store (the engine's, unmarked) is refused and left as it was.
        drop(Store::open(&db).unwrap());
        let before = std::fs::read(&db).unwrap();
        let err = fresh_store(&db).unwrap_err().to_string();
        assert!(err.contains("the demo did not create"), "{err}");
        assert_eq!(std::fs::read(&db).unwrap(), before, "left alone");
        // An unmarked store with an earlier demo's quarter-end rules beside it is a demo's.
        std::fs::create_dir(db.with_extension("quarter-end-rules")).unwrap();
        fresh_store(&db).unwrap();
        assert!(Store::is_demo_store(&db).unwrap());
        std::fs::remove_dir(db.with_extension("quarter-end-rules")).unwrap();
        std::fs::remove_file(&db).unwrap();

        std::fs::write(&db, "my notes, not a database").unwrap();
        let err = fresh_store(&db).unwrap_err().to_string();
        assert!(err.contains("is not a plansync store"), "{err}");
        assert_eq!(std::fs::read(&db).unwrap(), b"my notes, not a database");
    }
}
