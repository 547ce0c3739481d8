//! Starting and stopping the engine: the shards (one OS thread each, since their work is
//! SQLite), the sources, the two write loops, the claimer of resolution writes, and the
//! counters' flusher, all joined by bounded channels.
//!
//! Start order matters for "nothing lost": sent-but-unanswered writes from a previous run are
//! queued again first; on an empty store the first reconciliation reads Anaplan, then the
//! CRM, before the stream starts (from the tip: the pollers' next run covers the moments
//! between); otherwise every source resumes from its oldest per-shard checkpoint.
//!
//! Stop order: sources stop taking input, the write loops finish the batch in hand, every
//! shard commits what it holds, the counters are stored, and the shard threads end when
//! their channels close.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::counters::Counters;
use super::crm_poll::RecentSeen;
use super::db::Db;
use super::dispatch::{self, DispatchSettings, Sink};
use super::router::Router;
use super::shard::{RoundSummary, ShardCore, ShardMsg};
use super::sources::{
    self, PollerCtx, SourceError, Trigger, anaplan_poll_once, cdc_source, crm_poll_once,
    resume_position,
};
use crate::anaplan::AnaplanClient;
use crate::crm::CrmClient;
use crate::crm::cdc::{CdcConfig, ReplayFrom, Transport};
use crate::model::{Position, Side};
use crate::rules::RuleSet;
use crate::store::{Batch, Store, StoreError, Unclaimed, WriteGate};

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
    pub anaplan_poll: Duration,
    pub lookback: Duration,
    pub stream: Option<StreamOptions>,
    /// Run the sources (first reconciliation, pollers, and the stream when configured).
    /// Off, the engine only sends what is queued, e.g. resolutions (`exceptions apply`).
    pub sources: bool,
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
            anaplan_poll: Duration::from_secs(300),
            lookback: Duration::from_secs(120),
            stream: None,
            sources: true,
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
                tracing::debug!(target: "plansync::engine", frames = passive.frames, restarted = done, "WAL restart");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(target: "plansync::engine", error = %e, "a WAL checkpoint failed; the next one retries");
            }
        }
    }
}

/// Staged first-run items moved into the shadow per transaction.
const UNSTAGE_PAGE: usize = 4096;

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
        };
        let result = core.round_then(&current, msgs, Utc::now(), count);
        if took.elapsed() > SLOW_ROUND {
            // Other connections wait for the write lock meanwhile: worth knowing.
            tracing::warn!(target: "plansync::engine", shard = core.index, messages = n, ms = took.elapsed().as_millis() as u64, "slow round");
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
                tracing::error!(target: "plansync::engine", "{message}");
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
            tracing::info!(target: "plansync::engine", requeued, "writes sent before a stop are sent again");
        }
        rekey_checkpoints(&mut main, shards)?;
        let first_run = main.first_run_completed()?.is_none();
        if !first_run {
            // Values left staged by a first run that completed (a crash between its last
            // commit and the unstaging): into the shadow before any source runs.
            let moved =
                main.unstage_first_run(Utc::now(), UNSTAGE_PAGE, &unclaimed(&rules.borrow()))?;
            if moved.cleared > 0 {
                tracing::info!(target: "plansync::engine", items = moved.items, fields = moved.fields, "Anaplan values staged by the first run recorded in the shadow");
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
            let core = ShardCore::new(index, store)?;
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
            tasks.push(tokio::spawn(dispatch::run(
                sink,
                db,
                router.clone(),
                rules.clone(),
                wake,
                settings,
                counters.clone(),
                shutdown.clone(),
            )));
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
                tracing::warn!(target: "plansync::engine", "a task did not stop within 30 s");
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

/// Re-keys the per-shard checkpoints (`<source>#<n>`) when the shard count changed since
/// they were stored: every source gets one row per shard that exists, at the oldest position
/// any old row held (so it resumes once from there, losing nothing), and rows of shards that
/// no longer exist do not linger (they would hold the source's resume point back for ever).
fn rekey_checkpoints(store: &mut Store, shards: usize) -> Result<(), EngineError> {
    let rows = store.all_checkpoints()?;
    let mut by_source: BTreeMap<String, Vec<(Option<usize>, Position)>> = BTreeMap::new();
    for (name, position) in rows {
        let (source, shard) = match name.rsplit_once('#') {
            Some((source, n)) => match n.parse::<usize>() {
                Ok(n) => (source.to_string(), Some(n)),
                Err(_) => (name.clone(), None),
            },
            None => (name.clone(), None),
        };
        by_source.entry(source).or_default().push((shard, position));
    }
    let fits = by_source.values().all(|rows| {
        let mut shards_seen: Vec<usize> = rows.iter().filter_map(|(n, _)| *n).collect();
        shards_seen.sort_unstable();
        rows.iter().all(|(n, _)| n.is_some()) && shards_seen == (0..shards).collect::<Vec<_>>()
    });
    if fits || by_source.is_empty() {
        return Ok(());
    }
    let mut new_rows = Vec::new();
    for (source, rows) in &by_source {
        let Some(oldest) = rows
            .iter()
            .map(|(_, p)| p)
            .min_by(|a, b| sources::position_order(a, b))
        else {
            continue;
        };
        for n in 0..shards {
            new_rows.push((format!("{source}#{n}"), oldest.clone()));
        }
    }
    store.replace_checkpoints(&new_rows, Utc::now())?;
    tracing::info!(target: "plansync::engine", shards, sources = by_source.len(), "checkpoints re-keyed for a new shard count; each source resumes from its oldest position");
    Ok(())
}

/// How the first run reports the Anaplan items of each pairing that no CRM record claims.
fn unclaimed(rules: &RuleSet) -> BTreeMap<String, Unclaimed> {
    rules
        .pairings
        .iter()
        .map(|p| {
            let u = Unclaimed {
                object: p.crm_object.clone(),
                list: p.anaplan.list.clone(),
                rule_hash: p.hash.clone(),
            };
            (p.name.clone(), u)
        })
        .collect()
}

/// How a first run ended.
enum FirstRun {
    Done,
    /// The engine is stopping; the next start runs it again.
    Stopped,
    /// It cannot succeed until a person fixes something.
    Failed(String),
}

/// Why one attempt of a first run failed.
struct AttemptError {
    phase: &'static str,
    pairing: String,
    error: SourceError,
}

/// Longest wait between two attempts of a first run.
const FIRST_RUN_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The sources' task: the first run, if the store needs one, then the pollers and the
/// stream. Spawned by `launch`, so signals and `shutdown` are heard from the first instant.
struct Sources {
    ctx: PollerCtx,
    crm: CrmClient,
    anaplan: AnaplanClient,
    pairings: Vec<(String, String)>,
    /// The (CRM, Anaplan) poller triggers of each pairing, in `pairings` order.
    triggers: Vec<(Arc<Trigger>, Arc<Trigger>)>,
    options: EngineOptions,
    first_run: bool,
    stream_connected: Arc<AtomicBool>,
    ready: watch::Sender<bool>,
    failure: Arc<Mutex<Option<String>>>,
    failed: Arc<Notify>,
}

impl Sources {
    async fn run(self) {
        if self.first_run {
            match self.first_run_until_done().await {
                FirstRun::Done => {}
                FirstRun::Stopped => return,
                FirstRun::Failed(message) => {
                    tracing::error!(target: "plansync::engine", event = "first_run_failed", "{message}");
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
                    self.failed.notify_waiters();
                    return;
                }
            }
        }
        let _ = self.ready.send(true);
        if !self.options.sources {
            return;
        }
        if !self.first_run && !self.flags_known().await {
            return;
        }
        let Sources {
            ctx,
            crm,
            anaplan,
            pairings,
            triggers,
            options,
            stream_connected,
            ..
        } = self;
        let mut tasks = Vec::new();
        let mut by_object = HashMap::new();
        for ((name, object), (crm_trigger, anaplan_trigger)) in pairings.iter().zip(triggers) {
            by_object.insert(object.clone(), crm_trigger.clone());
            tasks.push(tokio::spawn(sources::run_crm_poller(
                ctx.clone(),
                crm.clone(),
                name.clone(),
                options.crm_poll,
                options.lookback,
                crm_trigger,
            )));
            tasks.push(tokio::spawn(sources::run_anaplan_poller(
                ctx.clone(),
                anaplan.clone(),
                name.clone(),
                options.anaplan_poll,
                anaplan_trigger,
            )));
        }
        if let Some(stream) = options.stream.as_ref() {
            let mut channels = Vec::new();
            for channel in &stream.channels {
                let from = match resume_position(&ctx.db, &cdc_source(channel)).await {
                    Some(Position::Replay { replay_id, .. }) => match replay_id.parse::<i64>() {
                        Ok(id) => ReplayFrom::After(id),
                        Err(_) => ReplayFrom::Tip,
                    },
                    _ => ReplayFrom::Tip,
                };
                tracing::info!(target: "plansync::engine", %channel, ?from, "stream resumes");
                channels.push((channel.clone(), from));
            }
            let mut config = CdcConfig::new(
                stream.api_version.clone(),
                channels,
                stream.transport,
                stream.client_id.clone(),
            );
            // One `/meta/connect` answer carries every event the org had ready: at a
            // quarter-end burst that is megabytes. A frame over the cap is dropped (and the
            // pollers re-read), so the cap is generous; the transport still bounds memory.
            config.max_frame_bytes = 64 << 20;
            tasks.push(tokio::spawn(sources::run_cdc(
                ctx.clone(),
                crm.clone(),
                config,
                by_object,
                stream_connected,
            )));
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Makes sure the Anaplan flags `anaplan_flag` conditions read are known before any
    /// change is decided: a pairing with flags whose Anaplan poller has no completed run on
    /// record (a store from before the flags were stored) is polled first, retried with
    /// backoff until it succeeds; a flag never seen is not taken as false. False when the
    /// engine stops meanwhile.
    async fn flags_known(&self) -> bool {
        let mut shutdown = self.ctx.shutdown.clone();
        for (name, _) in &self.pairings {
            let has_flags = self
                .ctx
                .rules
                .borrow()
                .pairing(name)
                .is_some_and(|p| !p.flags.is_empty());
            let source = sources::anaplan_poll_source(name);
            let probe = source.clone();
            let polled = self.ctx.db.call(move |s| s.last_poll(&probe)).await;
            if !has_flags || matches!(polled, Ok(Some(_))) {
                continue;
            }
            tracing::info!(target: "plansync::engine", pairing = %name, "the Anaplan flags are not on record yet: polling Anaplan before anything is decided");
            let mut failures = 0u32;
            loop {
                let at = Utc::now();
                let mut target = None;
                let mut flagged = sources::flagged_items(&self.ctx.db, name).await;
                let polled = tokio::select! {
                    r = anaplan_poll_once(&self.ctx, &self.anaplan, name, &mut target, &mut flagged, false) => r,
                    () = stopped(&mut shutdown) => return false,
                };
                match polled {
                    Ok(_) => {
                        sources::completed_run(&self.ctx, &source, at).await;
                        break;
                    }
                    Err(e) => {
                        failures += 1;
                        let wait = sources::retry_after(failures, FIRST_RUN_MAX_BACKOFF);
                        tracing::error!(target: "plansync::engine", pairing = %name, error = %e, failures, retry_in_s = wait.as_secs(), "polling the Anaplan flags failed; nothing is decided before they are known, retrying");
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = stopped(&mut shutdown) => return false,
                        }
                    }
                }
            }
        }
        true
    }

    async fn phase(&self, phase: String) {
        let result = self
            .ctx
            .db
            .call(move |s| s.set_first_run_phase(&phase, Utc::now()))
            .await;
        if let Err(e) = result {
            tracing::warn!(target: "plansync::engine", error = %e, "storing the first run's phase failed");
        }
    }

    /// Attempts the first run until it completes: a transient failure (the network, a
    /// 5xx past the client's retries, an expired read request) is retried with backoff, a
    /// permanent one ends it with what to fix.
    async fn first_run_until_done(&self) -> FirstRun {
        let mut shutdown = self.ctx.shutdown.clone();
        let mut failures = 0u32;
        loop {
            let attempt = tokio::select! {
                r = self.first_run_attempt() => r,
                () = stopped(&mut shutdown) => return FirstRun::Stopped,
            };
            let Err(e) = attempt else {
                return FirstRun::Done;
            };
            if e.error.permanent {
                let what = if e.phase == "anaplan" {
                    "Anaplan"
                } else {
                    "the CRM"
                };
                self.phase(format!("stopped: reading {} failed: {}", e.phase, e.error))
                    .await;
                return FirstRun::Failed(format!(
                    "the first run cannot read {what} for pairing `{}`: {}. Nothing was decided from a partial read; fix the configuration or the rule file (`plansync check` names what is wrong) and start again",
                    e.pairing, e.error
                ));
            }
            failures += 1;
            let wait = sources::retry_after(failures, FIRST_RUN_MAX_BACKOFF);
            tracing::error!(target: "plansync::engine", event = "first_run_retry", side = e.phase, pairing = %e.pairing, error = %e.error, failures, retry_in_s = wait.as_secs(), "the first run could not read a side; nothing is decided from a partial read, retrying");
            self.phase(format!(
                "waiting to read {} again (attempt {} failed: {})",
                e.phase, failures, e.error
            ))
            .await;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopped(&mut shutdown) => return FirstRun::Stopped,
            }
        }
    }

    /// One attempt of the first run: Anaplan's values are read in full and staged first, so
    /// that each CRM value read next is decided against them (equal values settle as the
    /// base without a write); a record is decided only once both of its sides are read.
    /// The run counts as done only when its completion is committed.
    async fn first_run_attempt(&self) -> Result<(), AttemptError> {
        let ctx = &self.ctx;
        let fail = |phase: &'static str, pairing: &str| {
            let pairing = pairing.to_string();
            move |error: SourceError| AttemptError {
                phase,
                pairing,
                error,
            }
        };
        // The store failing is no fault of either side's: transient, the attempt is retried.
        let store_failed = |phase: &'static str| {
            move |e: StoreError| AttemptError {
                phase,
                pairing: String::new(),
                error: SourceError::transient(e.to_string()),
            }
        };
        let gone = |phase: &'static str| AttemptError {
            phase,
            pairing: String::new(),
            error: SourceError {
                message: "the engine is stopping".into(),
                permanent: false,
            },
        };
        tracing::info!(target: "plansync::engine", event = "reconcile", pairings = self.pairings.len(), "first run: reconciling both sides");
        let started = std::time::Instant::now();
        let progress = FirstRunProgress::start(ctx.clone(), "Anaplan");
        self.phase("reading Anaplan".into()).await;
        // What an earlier attempt staged may be partial, or stale: read it anew.
        ctx.db
            .call(|s| s.clear_first_run_staging())
            .await
            .map_err(store_failed("anaplan"))?;
        let anaplan_at = Utc::now();
        for (name, _) in &self.pairings {
            let mut target = None;
            let mut flagged = sources::flagged_items(&ctx.db, name).await;
            anaplan_poll_once(ctx, &self.anaplan, name, &mut target, &mut flagged, true)
                .await
                .map_err(fail("anaplan", name))?;
        }
        ctx.router.flush().await.map_err(|_| gone("anaplan"))?;
        tracing::info!(target: "plansync::engine", event = "reconcile_anaplan_read", ms = started.elapsed().as_millis() as u64, "first run: Anaplan read and staged");
        let progress = progress.next("the CRM");
        self.phase("reading the CRM".into()).await;
        let crm_at = Utc::now();
        for (name, _) in &self.pairings {
            let mut recent = RecentSeen::off();
            crm_poll_once(
                ctx,
                &self.crm,
                name,
                self.options.lookback,
                &mut recent,
                true,
            )
            .await
            .map_err(fail("crm", name))?;
        }
        ctx.router.flush().await.map_err(|_| gone("crm"))?;
        drop(progress);
        // Items no CRM record claimed keep their values as seen in Anaplan, each with an
        // `unmapped` exception.
        let orphans = unclaimed(&ctx.rules.borrow());
        let moved = ctx
            .db
            .call(move |s| s.unstage_first_run(Utc::now(), UNSTAGE_PAGE, &orphans))
            .await
            .map_err(store_failed("anaplan"))?;
        tracing::info!(target: "plansync::engine", items = moved.items, fields = moved.fields, "first run: Anaplan items without a CRM record recorded, each with an unmapped exception");
        // Stored at once, not at the next counters tick: `plansync status` and the bench read
        // it to know the first run is over (every value read, decided and committed).
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        ctx.counters.set_remote("reconcile.ms", ms);
        store_metrics(&ctx.db, &ctx.counters).await;
        let sources: Vec<(String, chrono::DateTime<Utc>)> = self
            .pairings
            .iter()
            .flat_map(|(name, _)| {
                [
                    (sources::crm_poll_source(name), crm_at),
                    (sources::anaplan_poll_source(name), anaplan_at),
                ]
            })
            .collect();
        ctx.db
            .call(move |s| {
                // The first run's reads were each poller's run: the next is one interval on.
                for (source, at) in &sources {
                    s.set_last_poll(source, *at)?;
                }
                s.complete_first_run(Utc::now())
            })
            .await
            .map_err(store_failed("crm"))?;
        tracing::info!(target: "plansync::engine", event = "reconciled", ms, changes = ctx.counters.changes_reconcile.load(Ordering::Relaxed), agreed = ctx.counters.reconcile_agreed.load(Ordering::Relaxed), "first run: reconciliation committed");
        Ok(())
    }
}

/// How often a first run reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The progress of one side's read in a first run, reported every `PROGRESS_EVERY` as an
/// INFO line and as the phase `plansync status` shows: records read and decided, the rate,
/// and the time left when the size is known. Ends when dropped.
struct FirstRunProgress {
    ctx: PollerCtx,
    task: JoinHandle<()>,
}

impl FirstRunProgress {
    fn start(ctx: PollerCtx, side: &'static str) -> FirstRunProgress {
        ctx.counters.first_run_total.store(0, Ordering::Relaxed);
        let task = tokio::spawn(report_progress(ctx.clone(), side));
        FirstRunProgress { ctx, task }
    }

    /// The same for the next side's read.
    fn next(self, side: &'static str) -> FirstRunProgress {
        let ctx = self.ctx.clone();
        drop(self);
        FirstRunProgress::start(ctx, side)
    }
}

impl Drop for FirstRunProgress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn report_progress(ctx: PollerCtx, side: &'static str) {
    let counters = &ctx.counters;
    let (read0, decided0) = (
        counters.changes_reconcile.load(Ordering::Relaxed),
        counters.changes_decided.load(Ordering::Relaxed),
    );
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let read = counters.changes_reconcile.load(Ordering::Relaxed) - read0;
        let decided = counters
            .changes_decided
            .load(Ordering::Relaxed)
            .saturating_sub(decided0)
            .min(read);
        let total = counters.first_run_total.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let rate = read as f64 / secs;
        let left =
            (total > read && rate > 0.0).then(|| ((total - read) as f64 / rate).ceil() as u64);
        let of = if total > 0 {
            format!(" of {total}")
        } else {
            String::new()
        };
        let eta = left.map_or(String::new(), |s| format!(", about {s} s left"));
        let phase = format!(
            "reading {side}: {read}{of} records read, {decided} decided ({rate:.0}/s{eta})"
        );
        tracing::info!(target: "plansync::engine", event = "first_run_progress", side, read, decided, total, rate = rate.round() as u64, left_s = left, "first run: {phase}");
        let stored = ctx
            .db
            .call(move |s| s.set_first_run_phase(&phase, Utc::now()))
            .await;
        if let Err(e) = stored {
            tracing::warn!(target: "plansync::engine", error = %e, "storing the first run's progress failed");
        }
    }
}

/// Completes when `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
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
                tracing::warn!(target: "plansync::engine", error = %e, "reading resolution writes failed");
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

/// The clients' own counters: every call they made (polls, writes, auth, retries), not only
/// the sinks'.
fn remote_stats(counters: &Counters, crm: &CrmClient, anaplan: &AnaplanClient) {
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

async fn store_metrics(db: &Db, counters: &Counters) {
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
        tracing::warn!(target: "plansync::engine", error = %e, "storing the counters failed");
    }
}
