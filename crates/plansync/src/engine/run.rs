//! Starting and stopping the engine: the shards (one OS thread each, since their work is
//! SQLite), the sources, the two write loops, the claimer of resolution writes, and the
//! counters' flusher, all joined by bounded channels.
//!
//! Start order matters for "nothing lost": sent-but-unanswered writes from a previous run are
//! queued again first; the checkpoints are re-keyed to the shard count; then the sources'
//! task (`start.rs`) runs the first run until its completion is committed (Anaplan read,
//! then the CRM, before the stream starts from the tip: the pollers' next run covers the
//! moments between), or on a store that completed one resumes every source from its oldest
//! per-shard checkpoint. `launch` returns before any of that, so a stop is heard at once.
//!
//! Stop order: sources stop taking input, the write loops finish the batch in hand, every
//! shard commits what it holds, the counters are stored, and the shard threads end when
//! their channels close.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::counters::Counters;
use super::db::Db;
use super::dispatch::{self, DispatchSettings, Sink};
use super::observe::Observer;
use super::router::Router;
use super::shard::{RoundSummary, ShardCore, ShardMsg};
use super::sources::{PollerCtx, Trigger};
use super::start::{Sources, rekey_checkpoints, unclaimed};
use super::write::WriteRetry;
use crate::anaplan::AnaplanClient;
use crate::crm::CrmClient;
use crate::crm::cdc::Transport;
use crate::model::Side;
use crate::rules::RuleSet;
use crate::store::{Batch, Store, StoreError, WriteGate};

/// The stream's settings; `None` in [`EngineOptions::stream`] runs on the pollers alone.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub api_version: String,
    pub channels: Vec<String>,
    pub transport: Transport,
    /// Our writes' `Sforce-Call-Options` client id, to recognise their events.
    pub client_id: String,
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub store: PathBuf,
    pub shards: usize,
    /// Messages a shard's channel holds before its senders wait (one round's worth: more
    /// only holds memory while the shard is busy).
    pub channel_capacity: usize,
    pub batch_window: Duration,
    /// The most writes handed to a sink at once.
    pub max_batch: usize,
    pub crm_poll: Duration,
    /// The CRM pollers' interval while the change stream is down (when shorter).
    pub crm_poll_stream_down: Duration,
    /// The share (0–100) of the CRM's daily API calls kept in reserve (see
    /// [`super::sources::CrmSchedule::api_reserve_percent`]).
    pub crm_api_reserve_percent: u8,
    pub anaplan_poll: Duration,
    pub lookback: Duration,
    pub stream: Option<StreamOptions>,
    /// Run the sources (first reconciliation, pollers, and the stream when configured).
    /// Off, the engine only sends what is queued, e.g. resolutions (`exceptions apply`).
    pub sources: bool,
    /// How long a write answered "retry" keeps being retried.
    pub write_retry: WriteRetry,
}

/// The shard count when none is configured: the machine's cores, at most 4. Shards decide in
/// parallel but commit one at a time, and more shards than cores only contend: the
/// 1M-record first run on 2 cores took 62.7 / 64.3 s with 2 shards, 68.8–75.4 s with 4.
pub fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4)
}

impl EngineOptions {
    pub fn new(store: impl Into<PathBuf>) -> EngineOptions {
        EngineOptions {
            store: store.into(),
            shards: default_shards(),
            channel_capacity: 1024,
            batch_window: Duration::from_millis(100),
            max_batch: 100_000,
            crm_poll: Duration::from_secs(300),
            crm_poll_stream_down: Duration::from_secs(60),
            crm_api_reserve_percent: 10,
            anaplan_poll: Duration::from_secs(300),
            lookback: Duration::from_secs(120),
            stream: None,
            sources: true,
            write_retry: WriteRetry::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the engine stopped: {0}")]
    Failed(String),
}

/// The engine's two sinks, built by the caller (the CLI from the configuration; tests may
/// bring their own).
pub struct Sinks {
    pub anaplan: Box<dyn Sink>,
    pub crm: Box<dyn Sink>,
}

/// A running engine.
pub struct EngineHandle {
    router: Router,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    shard_threads: Vec<std::thread::JoinHandle<()>>,
    crm_triggers: Vec<Arc<Trigger>>,
    anaplan_triggers: Vec<Arc<Trigger>>,
    counters: Arc<Counters>,
    db: Db,
    failure: Arc<Mutex<Option<String>>>,
    failed: Arc<Notify>,
    stream_connected: Arc<AtomicBool>,
    /// Whether the CDC stream runs at all (not `--no-stream`).
    streaming: bool,
    /// True once the first run is complete (or was not needed).
    ready: watch::Receiver<bool>,
    crm: CrmClient,
    anaplan: AnaplanClient,
}

/// How long an engine connection waits for the write lock. Shards, sinks and the pollers
/// take turns on one file; at a quarter-end burst a turn can take a while, and a shard that
/// gave up would stop the engine.
const ENGINE_BUSY_TIMEOUT: Duration = Duration::from_secs(120);
/// Page cache per engine connection. A shard's round touches a leaf page per record it
/// decides; with SQLite's 2 MiB default a 1,024-message round spilled pages to the WAL
/// before its commit.
const ENGINE_CACHE_KIB: u32 = 8 * 1024;

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// One of the engine's connections: they take turns through `gate`, and none checkpoints on
/// commit (the checkpointer task does, off the shards' path).
fn engine_store(path: &std::path::Path, gate: &WriteGate) -> Result<Store, EngineError> {
    let mut store = Store::open(path)?;
    store.set_busy_timeout(ENGINE_BUSY_TIMEOUT)?;
    store.set_write_gate(gate.clone());
    store.disable_auto_checkpoint()?;
    store.set_cache_kib(ENGINE_CACHE_KIB)?;
    store.set_wal_size_limit(WAL_SIZE_LIMIT)?;
    Ok(store)
}

/// A WAL holding more frames than this (about 64 MiB of 4 KiB pages) is restarted.
const WAL_RESTART_FRAMES: i64 = 16 * 1024;
/// What the WAL file is cut back to when it restarts.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;
/// How long a restart waits for readers, in the write turn (every shard's commit waits too).
const WAL_RESTART_WAIT: Duration = Duration::from_millis(500);

/// Keeps the WAL short: a passive checkpoint every `CHECKPOINT_EVERY`, which never blocks a
/// writer, and a restart (in the write turn) once the WAL has grown past
/// `WAL_RESTART_FRAMES` all the same, as it does while the shards write without pause.
async fn run_checkpointer(db: Db, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(CHECKPOINT_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let step = db
            .call(|s| {
                let passive = s.checkpoint_wal()?;
                if passive.frames < WAL_RESTART_FRAMES {
                    return Ok(None);
                }
                s.restart_wal(WAL_RESTART_WAIT)
                    .map(|done| Some((passive, done)))
            })
            .await;
        match step {
            Ok(Some((passive, done))) => {
                tracing::debug!(target: "plansync::engine", event = "wal_restart", frames = passive.frames, restarted = done, "the WAL was restarted");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(target: "plansync::engine", event = "wal_checkpoint_failed", error = %e, "a WAL checkpoint failed; the next one retries");
            }
        }
    }
}

/// Staged first-run items moved into the shadow per transaction.
pub(super) const UNSTAGE_PAGE: usize = 4096;

/// The most messages a shard takes into one round (one transaction). A round's working
/// state and batch are the engine's largest allocations: at 4,096 the first run's rounds
/// held ~125 MB across four shards (heaptrack), at 1,024 a quarter of that, at the same speed
/// (the 100k-record reconcile: 17.0 s / 561 MiB → 16.2 s / 387 MiB; the burst unchanged).
const ROUND_MAX: usize = 1024;

/// A round slower than this is logged.
const SLOW_ROUND: Duration = Duration::from_secs(2);

fn run_shard(
    mut core: ShardCore,
    mut rx: mpsc::Receiver<ShardMsg>,
    rules: watch::Receiver<Arc<RuleSet>>,
    wake: [Arc<Notify>; 2],
    counters: Arc<Counters>,
    failure: Arc<Mutex<Option<String>>>,
    failed: Arc<Notify>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut msgs = Vec::with_capacity(64);
        msgs.push(first);
        while msgs.len() < ROUND_MAX {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        let current = rules.borrow().clone();
        let took = std::time::Instant::now();
        let n = msgs.len();
        let count = |summary: &RoundSummary| {
            counters
                .writes_queued
                .fetch_add(summary.writes_queued as u64, Ordering::Relaxed);
            counters
                .exceptions
                .fetch_add(summary.exceptions as u64, Ordering::Relaxed);
            counters
                .reconcile_agreed
                .fetch_add(summary.agreed as u64, Ordering::Relaxed);
            counters
                .changes_decided
                .fetch_add(summary.changes as u64, Ordering::Relaxed);
            counters.record_decisions(&summary.decisions);
        };
        let result = core.round_then(&current, msgs, Utc::now(), count);
        if took.elapsed() > SLOW_ROUND {
            // Other connections wait for the write lock meanwhile: worth knowing.
            tracing::warn!(target: "plansync::engine", event = "slow_round", shard = core.index, messages = n, ms = took.elapsed().as_millis() as u64, "slow round");
        }
        match result {
            Ok(summary) => {
                if summary.writes_queued > 0 {
                    for w in &wake {
                        w.notify_one();
                    }
                }
            }
            Err(e) => {
                // Nothing of the round was stored: its changes are not checkpointed and its
                // answers leave their writes `in_flight`, so a restart redoes all of it. Going
                // on would decide later changes on a state that misses this round.
                let message = format!("shard {} could not store a round: {e}", core.index);
                tracing::error!(target: "plansync::engine", event = "round_store_failed", "{message}");
                *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
                failed.notify_waiters();
                return;
            }
        }
    }
}

impl EngineHandle {
    /// Starts the engine on `rules` (a watch, so a reloaded rule set takes effect at the next
    /// round of each shard and poll) and returns once its first run, if it needs one, is
    /// complete (see [`EngineHandle::launch`] to be answered at once).
    pub async fn start(
        options: EngineOptions,
        rules: watch::Receiver<Arc<RuleSet>>,
        crm: CrmClient,
        anaplan: AnaplanClient,
        sinks: Sinks,
    ) -> Result<EngineHandle, EngineError> {
        let engine = EngineHandle::launch(options, rules, crm, anaplan, sinks).await?;
        if let Err(e) = engine.ready().await {
            let _ = engine.shutdown().await;
            return Err(e);
        }
        Ok(engine)
    }

    /// Starts the engine and returns at once: the first run (on a store that has not
    /// completed one) goes on in the background, then the pollers and the stream start.
    /// [`EngineHandle::ready`] tells when it is done; a stop during it is clean, and the next
    /// start runs it again from the beginning.
    pub async fn launch(
        options: EngineOptions,
        rules: watch::Receiver<Arc<RuleSet>>,
        crm: CrmClient,
        anaplan: AnaplanClient,
        sinks: Sinks,
    ) -> Result<EngineHandle, EngineError> {
        let gate = WriteGate::default();
        let shards = options.shards.max(1);
        let mut main = engine_store(&options.store, &gate)?;
        let requeued = main.requeue_sent_outbox(Utc::now())?;
        if requeued > 0 {
            tracing::info!(target: "plansync::engine", event = "writes_requeued", requeued, "writes sent before a stop are sent again");
        }
        rekey_checkpoints(&mut main, shards)?;
        let first_run = main.first_run_completed()?.is_none();
        if !first_run {
            // Values left staged by a first run that completed (a crash between its last
            // commit and the unstaging): into the shadow before any source runs.
            let moved =
                main.unstage_first_run(Utc::now(), UNSTAGE_PAGE, &unclaimed(&rules.borrow()))?;
            if moved.cleared > 0 {
                tracing::info!(target: "plansync::engine", event = "first_run_unstaged", items = moved.items, fields = moved.fields, "Anaplan values staged by the first run recorded in the shadow");
            }
        }
        let counters = Arc::new(Counters::default());
        let failure = Arc::new(Mutex::new(None));
        let failed = Arc::new(Notify::new());
        let wake = [Arc::new(Notify::new()), Arc::new(Notify::new())];

        let mut senders = Vec::with_capacity(shards);
        let mut shard_threads = Vec::with_capacity(shards);
        for index in 0..shards {
            let store = engine_store(&options.store, &gate)?;
            let (tx, rx) = mpsc::channel(options.channel_capacity.max(1));
            senders.push(tx);
            let core = ShardCore::new(index, store, options.write_retry)?;
            let (rules, wake, counters) = (rules.clone(), wake.clone(), counters.clone());
            let (failure, failed) = (failure.clone(), failed.clone());
            let thread = std::thread::Builder::new()
                .name(format!("plansync-shard-{index}"))
                .spawn(move || run_shard(core, rx, rules, wake, counters, failure, failed))
                .map_err(|e| EngineError::Failed(format!("cannot start a shard thread: {e}")))?;
            shard_threads.push(thread);
        }
        let router = Router::new(senders);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let db = Db::new(main);
        let mut tasks = Vec::new();

        let settings = DispatchSettings {
            batch_window: options.batch_window,
            max_batch: options.max_batch.max(1),
            max_backoff: Duration::from_secs(60),
        };
        let [wake_anaplan, wake_crm] = wake;
        for (sink, wake) in [(sinks.anaplan, wake_anaplan), (sinks.crm, wake_crm)] {
            let db = Db::new(engine_store(&options.store, &gate)?);
            let ctx = dispatch::DispatchCtx {
                db,
                router: router.clone(),
                rules: rules.clone(),
                wake,
                settings,
                counters: counters.clone(),
                shutdown: shutdown.clone(),
            };
            tasks.push(tokio::spawn(dispatch::run(sink, ctx)));
        }
        tasks.push(tokio::spawn(run_checkpointer(
            Db::new(engine_store(&options.store, &gate)?),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(run_claimer(
            db.clone(),
            router.clone(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(run_metrics(
            db.clone(),
            counters.clone(),
            crm.clone(),
            anaplan.clone(),
            shutdown.clone(),
        )));
        if options.sources {
            tasks.push(tokio::spawn(run_crm_limits(crm.clone(), shutdown.clone())));
        }

        let ctx = PollerCtx {
            db: db.clone(),
            router: router.clone(),
            rules: rules.clone(),
            counters: counters.clone(),
            shutdown: shutdown.clone(),
        };
        let pairings: Vec<(String, String)> = rules
            .borrow()
            .pairings
            .iter()
            .map(|p| (p.name.clone(), p.crm_object.clone()))
            .collect();
        let triggers: Vec<(Arc<Trigger>, Arc<Trigger>)> = pairings
            .iter()
            .map(|_| (Arc::default(), Arc::default()))
            .collect();
        let stream_connected = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = watch::channel(false);
        let sources = Sources {
            ctx,
            crm: crm.clone(),
            anaplan: anaplan.clone(),
            pairings,
            triggers: triggers.clone(),
            options: options.clone(),
            first_run: first_run && options.sources,
            stream_connected: stream_connected.clone(),
            ready: ready_tx,
            failure: failure.clone(),
            failed: failed.clone(),
        };
        tasks.push(tokio::spawn(sources.run()));

        Ok(EngineHandle {
            router,
            shutdown: shutdown_tx,
            tasks,
            shard_threads,
            crm_triggers: triggers.iter().map(|(c, _)| c.clone()).collect(),
            anaplan_triggers: triggers.iter().map(|(_, a)| a.clone()).collect(),
            counters,
            db,
            failure,
            failed,
            stream_connected,
            streaming: options.stream.is_some() && options.sources,
            ready,
            crm,
            anaplan,
        })
    }

    /// Completes when the first run is complete (at once on a store that completed one), or
    /// with the reason it cannot be (a permanent failure: credentials, a name no system
    /// knows), or when the engine stopped first.
    pub async fn ready(&self) -> Result<(), EngineError> {
        let mut ready = self.ready.clone();
        loop {
            if *ready.borrow_and_update() {
                return Ok(());
            }
            tokio::select! {
                changed = ready.changed() => if changed.is_err() {
                    // The sources' task ended: with the reason, when it failed.
                    let failure = self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    return Err(EngineError::Failed(failure.unwrap_or_else(|| {
                        "the engine stopped before its first run completed".into()
                    })));
                },
                message = self.failed() => return Err(EngineError::Failed(message)),
            }
        }
    }

    /// Runs the pollers of `side` (both with `None`) now instead of at their next tick.
    pub fn poll_now(&self, side: Option<Side>) {
        if side != Some(Side::Anaplan) {
            self.crm_triggers.iter().for_each(|t| t.poll_now());
        }
        if side != Some(Side::Crm) {
            self.anaplan_triggers.iter().for_each(|t| t.poll_now());
        }
    }

    /// Waits until every shard has committed what was routed to it before this call.
    pub async fn flush(&self) -> Result<(), EngineError> {
        self.router
            .flush()
            .await
            .map_err(|e| EngineError::Failed(e.to_string()))
    }

    pub fn counters(&self) -> BTreeMap<String, u64> {
        remote_stats(&self.counters, &self.crm, &self.anaplan);
        self.counters.snapshot()
    }

    pub fn stream_connected(&self) -> bool {
        self.stream_connected.load(Ordering::SeqCst)
    }

    /// A cheap, cloneable view of the engine for the HTTP server: [`Observer::observe`].
    pub fn observer(&self) -> Observer {
        Observer {
            counters: self.counters.clone(),
            db: self.db.clone(),
            stream_connected: self.stream_connected.clone(),
            streaming: self.streaming,
            ready: self.ready.clone(),
            crm: self.crm.clone(),
            anaplan: self.anaplan.clone(),
        }
    }

    /// How many writes are queued or sent and not yet answered.
    pub async fn outbox_depth(&self) -> Result<u64, EngineError> {
        Ok(self.db.call(|s| s.open_outbox_count()).await?)
    }

    /// Completes when the engine has failed for good (a shard could not store a round).
    pub async fn failed(&self) -> String {
        loop {
            let notified = self.failed.notified();
            if let Some(m) = self
                .failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return m;
            }
            notified.await;
        }
    }

    /// Stops taking input, finishes the work in hand, and closes the store.
    pub async fn shutdown(self) -> Result<(), EngineError> {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .is_err()
            {
                tracing::warn!(target: "plansync::engine", event = "task_stop_timeout", "a task did not stop within 30 s");
            }
        }
        let flushed = self.router.flush().await;
        remote_stats(&self.counters, &self.crm, &self.anaplan);
        store_metrics(&self.db, &self.counters).await;
        drop(self.router);
        for thread in self.shard_threads {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Some(m) = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(EngineError::Failed(m));
        }
        flushed.map_err(|e| EngineError::Failed(e.to_string()))
    }
}

/// Hands writes queued by `plansync exceptions resolve` to their shards to claim.
async fn run_claimer(db: Db, router: Router, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        let rows = match db.call(|s| s.unclaimed_outbox(1000)).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(target: "plansync::engine", event = "claims_read_failed", error = %e, "reading resolution writes failed");
                continue;
            }
        };
        for row in rows {
            let msg = ShardMsg::Claim { outbox_id: row.id };
            if router.send(&row.key.record, msg).await.is_err() {
                return;
            }
        }
    }
}

/// Stores the counters every few seconds, for `plansync status` in another process.
async fn run_metrics(
    db: Db,
    counters: Arc<Counters>,
    crm: CrmClient,
    anaplan: AnaplanClient,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
        remote_stats(&counters, &crm, &anaplan);
        store_metrics(&db, &counters).await;
    }
}

/// How often the CRM's `limits` resource is read, besides at start.
const CRM_LIMITS_EVERY: Duration = Duration::from_secs(10 * 60);

/// Reads the org's limits at start and every `CRM_LIMITS_EVERY`, so the daily API budget
/// (which the reserve and `status` go by) is known before the first poll and stays fresh
/// while plansync makes no other call. A failure decides nothing: the `Sforce-Limit-Info`
/// of every other answer still counts. The first is a WARN (the integration user may lack
/// the permission to read limits: the budget is then known only from answers), later ones
/// DEBUG.
async fn run_crm_limits(crm: CrmClient, mut shutdown: watch::Receiver<bool>) {
    let mut warned = false;
    loop {
        match crm.limits().await {
            Ok(limits) => {
                if let Some(api) = limits.daily_api_requests() {
                    tracing::debug!(target: "plansync::engine", event = "crm_limits", used = api.used(), max = api.max, bulk_query_jobs_left = limits.daily_bulk_query_jobs().map(|a| a.remaining), "read the CRM's daily limits");
                }
                warned = false;
            }
            Err(e) if !warned => {
                tracing::warn!(target: "plansync::engine", event = "crm_limits_unread", error = %e, "could not read the CRM's limits; the daily API budget is known only from its answers' Sforce-Limit-Info");
                warned = true;
            }
            Err(e) => {
                tracing::debug!(target: "plansync::engine", event = "crm_limits_unread", error = %e, "could not read the CRM's limits");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(CRM_LIMITS_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The clients' own counters: every call they made (polls, writes, auth, retries), not only
/// the sinks'.
pub(super) fn remote_stats(counters: &Counters, crm: &CrmClient, anaplan: &AnaplanClient) {
    let a = anaplan.stats();
    counters.set_remote("anaplan.calls", a.total());
    counters.set_remote("anaplan.rate_limited", a.throttled);
    counters.set_remote("anaplan.retries", a.retries);
    let c = crm.stats();
    counters.set_remote("crm.calls", c.total_calls);
    counters.set_remote("crm.retries", c.retries);
    if let Some((used, max)) = c.api_usage {
        counters.set_remote("crm.api_used", used);
        counters.set_remote("crm.api_max", max);
    }
}

pub(super) async fn store_metrics(db: &Db, counters: &Counters) {
    let snapshot = counters.snapshot();
    let result = db
        .call(move |s| {
            let mut batch = Batch::new(Utc::now());
            for (name, value) in snapshot {
                batch.set_metric(name, i64::try_from(value).unwrap_or(i64::MAX));
            }
            s.commit(&batch).map(|_| ())
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(target: "plansync::engine", event = "counters_store_failed", error = %e, "storing the counters failed");
    }
}
