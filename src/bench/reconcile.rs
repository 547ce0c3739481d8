//! The reconcile scenario: the engine's first run against two systems already holding the
//! same N records (the demo world, seeded on both sides). The engine runs as its own process
//! (`plansync run`), so its peak memory is its own and not the simulators': the figure that
//! matters is that memory stays bounded by batches, not by the size of the model.
//!
//! Done means the engine has stored `reconcile.ms`: every value of both sides read, decided
//! and committed (see `engine::run::reconcile`).
//!
//! The run is made twice over the same two systems, each engine on a fresh store: as
//! configured (a CRM this large is read through a Bulk API 2.0 query job), then with every
//! CRM read through REST pages, so the report sets the two reads side by side (time, calls,
//! memory). The seeded sides agree, so the first run changes nothing the second would see.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, BenchOptions, fresh_db};
use crate::harness::world;
use plansync::store::Store;
use plansync_sim::anaplan as asim;
use plansync_sim::crm as csim;

const CRM_SECRET_ENV: &str = "PLANSYNC_BENCH_CRM_SECRET";
const ANAPLAN_PASSWORD_ENV: &str = "PLANSYNC_BENCH_ANAPLAN_PASSWORD";
/// The longest the first run may take before the scenario gives up.
const LIMIT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    /// Records on each side (the requested number plus the demo org's own).
    pub records: usize,
    /// From the engine process's start until the reconciliation was committed.
    pub seconds: f64,
    /// The engine's own timing of the reconciliation (without process start and sign-in).
    pub engine_seconds: f64,
    /// The engine process's peak resident memory (VmHWM), in MiB.
    pub peak_rss_mb: f64,
    /// CPU time the engine process used until then (user + system, all threads): next to
    /// `seconds` it says how busy the two cores were, and it varies less than wall time on a
    /// shared machine.
    pub engine_cpu_seconds: f64,
    /// Values read and decided (both sides).
    pub changes: u64,
    /// Fields found agreeing on both sides (recorded as the base, not audited one by one).
    pub fields_agreed: u64,
    /// Writes the reconciliation queued (0 when the seeded sides agree).
    pub writes_queued: u64,
    pub exceptions_raised: u64,
    /// Seeding both simulators, for scale (not a target).
    pub setup_seconds: f64,
    /// How the CRM was read: `bulk_query` (a Bulk API 2.0 query job) or `rest`.
    pub crm_read: &'static str,
    /// CRM calls of the run: REST queries (pages), and Bulk API 2.0 job calls.
    pub crm_query_calls: u64,
    pub crm_bulk_calls: u64,
    /// The same first run with every CRM read through REST pages (when the run above used
    /// Bulk API 2.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest_read: Option<RunFigures>,
}

/// One engine run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RunFigures {
    pub seconds: f64,
    pub engine_seconds: f64,
    pub peak_rss_mb: f64,
    pub engine_cpu_seconds: f64,
    pub crm_query_calls: u64,
    pub crm_bulk_calls: u64,
}

/// What one engine run left: its figures, its store's metrics, and how it read the CRM.
struct Run {
    figures: RunFigures,
    metrics: std::collections::BTreeMap<&'static str, u64>,
    through_bulk: bool,
}

/// The engine child; killed if the scenario ends early, however it ends.
struct Engine(Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run(options: &BenchOptions) -> Result<ReconcileReport, BenchError> {
    let rules = super::load_rules(&options.rules)?;
    let setup = Instant::now();
    let world = world::start(&rules, options.reconcile_records, options.seed).await?;
    let records = world.opportunities.len();
    let setup_seconds = setup.elapsed().as_secs_f64();
    let first = one_run(options, &world, "reconcile", options.reconcile_bulk_above).await?;
    let rest_read = if first.through_bulk {
        Some(one_run(options, &world, "reconcile-rest", 0).await?.figures)
    } else {
        None
    };
    world.crm.shutdown().await;
    world.anaplan.shutdown().await;
    let metric = |name: &str| first.metrics.get(name).copied().unwrap_or(0);
    let f = &first.figures;
    Ok(ReconcileReport {
        records,
        seconds: f.seconds,
        engine_seconds: f.engine_seconds,
        peak_rss_mb: f.peak_rss_mb,
        engine_cpu_seconds: f.engine_cpu_seconds,
        changes: metric("changes.reconcile"),
        fields_agreed: metric("reconcile.agreed"),
        writes_queued: metric("writes.queued"),
        exceptions_raised: metric("exceptions.raised"),
        setup_seconds,
        crm_read: if first.through_bulk {
            "bulk_query"
        } else {
            "rest"
        },
        crm_query_calls: f.crm_query_calls,
        crm_bulk_calls: f.crm_bulk_calls,
        rest_read,
    })
}

/// One `plansync run` on a fresh store in `options.dir/<name>`, until its first run is
/// committed; `bulk_above` is its `engine.crm_bulk_query_above`.
async fn one_run(
    options: &BenchOptions,
    world: &world::World,
    name: &str,
    bulk_above: usize,
) -> Result<Run, BenchError> {
    let dir = options.dir.join(name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| BenchError::Setup(format!("{}: {e}", dir.display())))?;
    let db = fresh_db(&dir, "reconcile")?;
    let config = write_config(&dir, &options.rules, &db, world, bulk_above)?;
    let log = dir.join("engine.log");
    let calls_before = world.crm.request_counts();

    let started = Instant::now();
    let mut engine = Engine(spawn(&options.engine_exe, &config, &log)?);
    let pid = engine.0.id();
    let mut peak_kib = 0;
    let mut store = None;
    let engine_ms = loop {
        peak_kib = peak_kib.max(vm_hwm_kib(pid).unwrap_or(0));
        if let Ok(Some(status)) = engine.0.try_wait() {
            return Err(BenchError::Run(format!(
                "the engine exited ({status}) before reconciling; its log:\n{}",
                tail(&log)
            )));
        }
        if started.elapsed() > LIMIT {
            return Err(BenchError::Run(format!(
                "the reconciliation took over {LIMIT:?}; the engine's log is {}",
                log.display()
            )));
        }
        // The engine creates the file: open it once it is there.
        if store.is_none() && db.exists() {
            store = Store::open_read_only(&db).ok();
        }
        if let Some(s) = &store
            && let Ok(Some(ms)) = s.metric("reconcile.ms")
        {
            break ms;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    peak_kib = peak_kib.max(vm_hwm_kib(pid).unwrap_or(0));
    let cpu_seconds = cpu_seconds(pid).unwrap_or(0.0);
    let calls_after = world.crm.request_counts();
    let mut metrics = std::collections::BTreeMap::new();
    for name in [
        "changes.reconcile",
        "reconcile.agreed",
        "writes.queued",
        "exceptions.raised",
    ] {
        let value = store
            .as_ref()
            .and_then(|s| s.metric(name).ok().flatten())
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        metrics.insert(name, value);
    }
    drop(store);
    stop(&mut engine);
    // The engine says when it switched (`crm_bulk_query`, an INFO line).
    let through_bulk = std::fs::read_to_string(&log).is_ok_and(|l| l.contains("crm_bulk_query"));
    Ok(Run {
        figures: RunFigures {
            seconds,
            engine_seconds: engine_ms as f64 / 1000.0,
            peak_rss_mb: peak_kib as f64 / 1024.0,
            engine_cpu_seconds: cpu_seconds,
            crm_query_calls: calls_after.query - calls_before.query,
            crm_bulk_calls: calls_after.bulk - calls_before.bulk,
        },
        metrics,
        through_bulk,
    })
}

/// A configuration for `plansync run` against the bench's simulators: the pollers' schedule
/// is a day, so the first run's reconciliation is all that runs.
fn write_config(
    dir: &Path,
    rules: &Path,
    db: &Path,
    world: &world::World,
    bulk_above: usize,
) -> Result<PathBuf, BenchError> {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let text = format!(
        r#"rules = {rules:?}
store = {store:?}

[crm]
login_url = {crm:?}
api_version = {api:?}
streaming = "websocket"
client_id_for_call_options = {client_id:?}

[crm.auth]
method = "client_credentials"
client_id = {client:?}
client_secret_env = "{CRM_SECRET_ENV}"

[anaplan]
auth_url = {auth:?}
api_url = {api_url:?}

[anaplan.auth]
method = "basic"
user = {user:?}
password_env = "{ANAPLAN_PASSWORD_ENV}"

[schedule]
crm_poll = "24h"
anaplan_poll = "24h"

[engine]
batch_window = "100ms"
crm_bulk_query_above = {bulk_above}

# The bench may run beside another plansync: no fixed port.
[http]
address = "127.0.0.1:0"
"#,
        rules = absolute(rules).display().to_string(),
        store = absolute(db).display().to_string(),
        crm = world.crm.instance_url(),
        api = world::API_VERSION,
        client_id = world::CLIENT_ID,
        client = csim::DEFAULT_CLIENT_ID,
        auth = world.anaplan.auth_url(),
        api_url = world.anaplan.api_url(),
        user = asim::DEFAULT_USER,
    );
    let path = dir.join("plansync.toml");
    std::fs::write(&path, text)
        .map_err(|e| BenchError::Setup(format!("{}: {e}", path.display())))?;
    Ok(path)
}

fn spawn(exe: &Path, config: &Path, log: &Path) -> Result<Child, BenchError> {
    let failed = |e: std::io::Error| BenchError::Setup(format!("{}: {e}", log.display()));
    let out = std::fs::File::create(log).map_err(failed)?;
    let err = out.try_clone().map_err(failed)?;
    Command::new(exe)
        .args(["run", "--no-stream", "--config"])
        .arg(config)
        .env(CRM_SECRET_ENV, csim::DEFAULT_CLIENT_SECRET)
        .env(ANAPLAN_PASSWORD_ENV, asim::DEFAULT_PASSWORD)
        .env("PLANSYNC_LOG", "plansync=info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| BenchError::Setup(format!("starting {}: {e}", exe.display())))
}

/// A clean stop (SIGTERM), then a kill if it takes too long.
fn stop(engine: &mut Engine) {
    let pid = engine.0.id().to_string();
    let asked = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .is_ok_and(|s| s.success());
    if asked {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = engine.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = engine.0.kill();
}

/// The peak resident set of a live process, from `/proc/<pid>/status` (Linux).
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The user and system CPU time of a live process, from `/proc/<pid>/stat` (Linux), whose
/// fields 14 and 15 count clock ticks (100 a second on Linux, whatever the kernel's HZ).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

/// The last lines of the engine's log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_rss_of_this_process_is_read() {
        let kib = vm_hwm_kib(std::process::id()).expect("VmHWM on Linux");
        assert!(kib > 1024, "{kib} KiB");
    }

    #[test]
    fn the_cpu_time_of_this_process_is_read_and_grows() {
        let before = cpu_seconds(std::process::id()).expect("/proc/self/stat on Linux");
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = cpu_seconds(std::process::id()).expect("/proc/self/stat on Linux");
        assert!(after >= before + 0.1, "{before} s then {after} s");
    }
}
