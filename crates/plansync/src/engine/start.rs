//! The start of the sources: per-shard checkpoints re-keyed to the shard count, the first
//! run (all or nothing, retried until it completes, with its progress), the Anaplan flags
//! made known before anything is decided, then the pollers and the stream. Everything here
//! runs in the engine's background, so a stop or a signal is heard at any moment of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::crm_poll::RecentSeen;
use super::run::{EngineOptions, UNSTAGE_PAGE, store_metrics};
use super::sources::{self, PollerCtx, SourceError, Trigger, anaplan_poll_once, crm_poll_once};
use crate::anaplan::AnaplanClient;
use crate::crm::CrmClient;
use crate::model::Position;
use crate::rules::RuleSet;
use crate::store::{Store, StoreError, Unclaimed};

use super::run::EngineError;

/// Re-keys the per-shard checkpoints (`<source>#<n>`) when the shard count changed since
/// they were stored: every source gets one row per shard that exists, at the oldest position
/// any old row held (so it resumes once from there, losing nothing), and rows of shards that
/// no longer exist do not linger (they would hold the source's resume point back for ever).
pub(super) fn rekey_checkpoints(store: &mut Store, shards: usize) -> Result<(), EngineError> {
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
    tracing::info!(target: "plansync::engine", event = "checkpoints_rekeyed", shards, sources = by_source.len(), "checkpoints re-keyed for a new shard count; each source resumes from its oldest position");
    Ok(())
}

/// How the first run reports the Anaplan items of each pairing that no CRM record claims.
pub(super) fn unclaimed(rules: &RuleSet) -> BTreeMap<String, Unclaimed> {
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
pub(super) struct Sources {
    pub(super) ctx: PollerCtx,
    pub(super) crm: CrmClient,
    pub(super) anaplan: AnaplanClient,
    pub(super) pairings: Vec<(String, String)>,
    /// The (CRM, Anaplan) poller triggers of each pairing, in `pairings` order.
    pub(super) triggers: Vec<(Arc<Trigger>, Arc<Trigger>)>,
    pub(super) options: EngineOptions,
    pub(super) first_run: bool,
    pub(super) stream_connected: Arc<AtomicBool>,
    pub(super) ready: watch::Sender<bool>,
    pub(super) failure: Arc<Mutex<Option<String>>>,
    pub(super) failed: Arc<Notify>,
}

impl Sources {
    pub(super) async fn run(self) {
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
            first_run,
            ..
        } = self;
        let mut tasks = Vec::new();
        let mut by_object = HashMap::new();
        for ((name, object), (crm_trigger, anaplan_trigger)) in pairings.iter().zip(triggers) {
            by_object.insert(object.clone(), crm_trigger.clone());
            let schedule = sources::CrmSchedule {
                every: options.crm_poll,
                stream: options
                    .stream
                    .is_some()
                    .then(|| (stream_connected.clone(), options.crm_poll_stream_down)),
                api_reserve_percent: options.crm_api_reserve_percent,
            };
            tasks.push(tokio::spawn(sources::run_crm_poller(
                ctx.clone(),
                crm.clone(),
                name.clone(),
                schedule,
                options.lookback,
                crm_trigger,
            )));
            tasks.push(tokio::spawn(sources::run_anaplan_poller(
                ctx.clone(),
                anaplan.clone(),
                name.clone(),
                options.anaplan_poll,
                anaplan_trigger,
                !first_run,
            )));
        }
        if let Some(stream) = options.stream.clone() {
            tasks.push(tokio::spawn(sources::run_cdc(
                ctx.clone(),
                crm.clone(),
                stream,
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
            tracing::info!(target: "plansync::engine", event = "flags_poll_first", pairing = %name, "the Anaplan flags are not on record yet: polling Anaplan before anything is decided");
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
                        tracing::error!(target: "plansync::engine", event = "flags_poll_failed", pairing = %name, error = %e, failures, retry_in_s = wait.as_secs(), "polling the Anaplan flags failed; nothing is decided before they are known, retrying");
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
            tracing::warn!(target: "plansync::engine", event = "first_run_phase_store_failed", error = %e, "storing the first run's phase failed");
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
        tracing::info!(target: "plansync::engine", event = "first_run_unmapped_items", items = moved.items, fields = moved.fields, "first run: Anaplan items without a CRM record recorded, each with an unmapped exception");
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
            tracing::warn!(target: "plansync::engine", event = "first_run_progress_store_failed", error = %e, "storing the first run's progress failed");
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
