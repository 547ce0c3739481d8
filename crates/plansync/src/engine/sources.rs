//! The tasks that feed the shards: the CDC stream, the CRM watermark poller and the Anaplan
//! diff poller, one poller task per pairing and side. Each routes its changes to the owning
//! shards and then marks its position, so the checkpoint is stored by the same shard
//! transactions that store what the changes caused.
//!
//! The stream reports holes it cannot fill itself (gap events, overflow, a replay id the org
//! no longer has, an event it could not read): the CRM poller is woken to re-read, since a
//! watermark poll returns every record changed since its cursor, a superset of what the hole
//! lost. An invalid replay id also re-reads the whole object from the beginning.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, mpsc, watch};

use super::anaplan_poll::{
    AnaplanPollError, AnaplanPollOutcome, PollParts, ResolvedTarget, poll_resolved_each,
    resolve_target,
};
use super::counters::Counters;
use super::crm_poll::{CrmPoll, RecentSeen};
use super::db::Db;
use super::router::{Router, ShardGone};
use super::run::StreamOptions;
use super::shard::ShardMsg;
use crate::anaplan::AnaplanClient;
use crate::backoff::Backoff;
use crate::crm::CrmClient;
use crate::crm::cdc::{CdcConfig, CdcItem, CdcListener, Gap, Overflow, ReplayFrom};
use crate::model::{Change, Position, RecordKey, Source};
use crate::rules::RuleSet;

/// The checkpoint name of a pairing's CRM poller.
pub fn crm_poll_source(pairing: &str) -> String {
    format!("crm_poll:{pairing}")
}

/// The checkpoint name of a pairing's Anaplan poller.
pub fn anaplan_poll_source(pairing: &str) -> String {
    format!("anaplan_poll:{pairing}")
}

/// The checkpoint name of a CDC channel.
pub fn cdc_source(channel: &str) -> String {
    format!("cdc:{channel}")
}

/// How a poller is asked to run now rather than at its next tick.
#[derive(Debug, Default)]
pub struct Trigger {
    notify: Notify,
    /// Set when the next run must read everything, not only what changed since the cursor.
    full: std::sync::atomic::AtomicBool,
}

impl Trigger {
    pub fn poll_now(&self) {
        self.notify.notify_one();
    }

    pub fn read_all(&self) {
        self.full.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// The oldest of a source's per-shard positions: where it resumes.
pub async fn resume_position(db: &Db, source: &str) -> Option<Position> {
    let name = source.to_string();
    let rows = match db.call(move |s| s.checkpoints_of(&name)).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(target: "plansync::engine", event = "checkpoints_read_failed", source, error = %e, "reading checkpoints failed");
            return None;
        }
    };
    rows.into_iter().map(|(_, p)| p).min_by(position_order)
}

pub fn position_order(a: &Position, b: &Position) -> std::cmp::Ordering {
    use std::cmp::Ordering as O;
    match (a, b) {
        (Position::Replay { replay_id: x, .. }, Position::Replay { replay_id: y, .. }) => {
            match (x.parse::<i64>(), y.parse::<i64>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => x.cmp(y),
            }
        }
        (Position::Watermark { at: x, id: i }, Position::Watermark { at: y, id: j }) => {
            x.cmp(y).then_with(|| i.cmp(j))
        }
        (Position::PollRun { at: x }, Position::PollRun { at: y }) => x.cmp(y),
        _ => O::Equal,
    }
}

async fn route_change(
    router: &Router,
    counters: &Counters,
    mut change: Change,
    source: Source,
) -> Result<(), ShardGone> {
    change.source = source;
    let counter = match (source, change.side) {
        (Source::Stream, _) => &counters.changes_stream,
        (Source::Reconcile, _) => &counters.changes_reconcile,
        (_, crate::model::Side::Crm) => &counters.changes_crm_poll,
        (_, crate::model::Side::Anaplan) => &counters.changes_anaplan_poll,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let record = change.record.clone();
    router.send(&record, ShardMsg::Change(change)).await
}

/// Everything a poller task needs.
#[derive(Clone)]
pub struct PollerCtx {
    pub db: Db,
    pub router: Router,
    pub rules: watch::Receiver<Arc<RuleSet>>,
    pub counters: Arc<Counters>,
    pub shutdown: watch::Receiver<bool>,
}

/// Why a read of one side failed, and whether trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub message: String,
    /// Waiting cannot help: a person must fix the configuration, the credentials or a rule
    /// file (a first run stops on it; a poller keeps retrying, slowly, and says so).
    pub permanent: bool,
}

impl SourceError {
    pub fn transient(message: impl Into<String>) -> SourceError {
        SourceError {
            message: message.into(),
            permanent: false,
        }
    }
}

impl From<ShardGone> for SourceError {
    fn from(e: ShardGone) -> SourceError {
        SourceError::transient(e.to_string())
    }
}

impl From<AnaplanPollError> for SourceError {
    fn from(e: AnaplanPollError) -> SourceError {
        SourceError {
            permanent: e.is_permanent(),
            message: e.to_string(),
        }
    }
}

impl From<super::crm_poll::PollError> for SourceError {
    fn from(e: super::crm_poll::PollError) -> SourceError {
        SourceError {
            permanent: e.is_permanent(),
            message: e.to_string(),
        }
    }
}

/// Waits until `due`, a trigger, or shutdown (false).
async fn wait_until(
    due: tokio::time::Instant,
    trigger: &Trigger,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        () = tokio::time::sleep_until(due) => true,
        () = trigger.notify.notified() => true,
        _ = shutdown.changed() => false,
    }
}

/// When a poller's first run after a start is due: one interval after its last completed
/// run, as stored, so a restart neither resets the schedule nor skips a run that came due
/// while the engine was down (an overdue poll runs at once). A poller with no completed run
/// on record polls at once.
async fn first_due(db: &Db, source: &str, interval: Duration) -> tokio::time::Instant {
    let name = source.to_string();
    let now = tokio::time::Instant::now();
    match db.call(move |s| s.last_poll(&name)).await {
        Ok(Some(last)) => {
            let since = (Utc::now() - last).to_std().unwrap_or(Duration::ZERO);
            now + interval.saturating_sub(since)
        }
        Ok(None) => now,
        Err(e) => {
            tracing::warn!(target: "plansync::engine", event = "last_poll_read_failed", source, error = %e, "reading when this poller last ran failed; polling now");
            now
        }
    }
}

/// Records a completed run once the shards have stored what it routed, so the stored time
/// never runs ahead of what the run caused.
pub async fn completed_run(ctx: &PollerCtx, source: &str, at: chrono::DateTime<Utc>) {
    if ctx.router.flush().await.is_err() {
        return;
    }
    let name = source.to_string();
    if let Err(e) = ctx.db.call(move |s| s.set_last_poll(&name, at)).await {
        tracing::warn!(target: "plansync::engine", event = "last_poll_store_failed", source, error = %e, "storing when this poller ran failed");
    }
}

/// How long a poller waits after its `failures`-th failure in a row: steps of 2 s, doubling,
/// at most a minute (the shared schedule, `crate::backoff`), and never more than the interval
/// (a failed poll is retried soon, not one whole interval later).
pub fn retry_after(failures: u32, interval: Duration) -> Duration {
    Backoff::new(Duration::from_secs(2), Duration::from_secs(60))
        .wait(failures)
        .min(interval)
}

/// One CRM poll of `pairing`: from the stored watermark (or everything, for the first run and
/// for a full re-read), page by page, each page's changes routed then its watermark marked.
pub async fn crm_poll_once(
    ctx: &PollerCtx,
    client: &CrmClient,
    pairing_name: &str,
    lookback: Duration,
    recent: &mut RecentSeen,
    full: bool,
) -> Result<usize, SourceError> {
    let rules = ctx.rules.borrow().clone();
    let Some(pairing) = rules.pairing(pairing_name) else {
        return Ok(0);
    };
    let source = crm_poll_source(pairing_name);
    let stored = resume_position(&ctx.db, &source).await;
    let since = if full { None } else { stored.clone() };
    let kind = if since.is_none() {
        Source::Reconcile
    } else {
        Source::Poll
    };
    let mut poll = CrmPoll::start(client, pairing, since.as_ref(), lookback, recent)?;
    let mut n = 0;
    while let Some(batch) = poll.next_batch().await? {
        if kind == Source::Reconcile
            && let Some(total) = poll.total()
        {
            ctx.counters.first_run_total.store(total, Ordering::Relaxed);
        }
        for problem in &batch.problems {
            tracing::warn!(target: "plansync::engine", event = "crm_poll_row_skipped", pairing = pairing_name, problem = %problem, "CRM poll skipped a row");
        }
        for change in batch.changes {
            n += 1;
            route_change(&ctx.router, &ctx.counters, change, kind).await?;
        }
        // A full re-read must not move the regular cursor back.
        let advance = match (&batch.cursor, &stored) {
            (Some(c), Some(s)) => position_order(c, s).is_gt(),
            (Some(_), None) => true,
            _ => false,
        };
        if advance && let Some(cursor) = &batch.cursor {
            ctx.router.mark(&source, cursor).await?;
        }
    }
    Ok(n)
}

/// The CRM poller of one pairing: every `interval` from its last completed run, or when
/// triggered; a failed poll is retried with backoff.
/// When a CRM poller runs: every `every`, or every `stream.1` while the change stream
/// (`stream.0`, when one is configured) is not connected, so that edits keep arriving within
/// a minute or so instead of one interval while the stream is down.
#[derive(Debug, Clone)]
pub struct CrmSchedule {
    pub every: Duration,
    pub stream: Option<(Arc<std::sync::atomic::AtomicBool>, Duration)>,
    /// The share (0–100) of the org's daily API calls kept in reserve: while fewer remain,
    /// only the scheduled polls run (no early, stream-down or full re-read polls), so the
    /// customer's other integrations never meet `REQUEST_LIMIT_EXCEEDED` because of us.
    pub api_reserve_percent: u8,
}

impl CrmSchedule {
    fn interval(&self) -> Duration {
        match &self.stream {
            Some((connected, down)) if !connected.load(Ordering::SeqCst) => self.every.min(*down),
            _ => self.every,
        }
    }
}

pub async fn run_crm_poller(
    mut ctx: PollerCtx,
    client: CrmClient,
    pairing: String,
    schedule: CrmSchedule,
    lookback: Duration,
    trigger: Arc<Trigger>,
) {
    let interval = schedule.every;
    let mut recent = RecentSeen::new();
    let mut shutdown = ctx.shutdown.clone();
    let source = crm_poll_source(&pairing);
    let mut due = first_due(&ctx.db, &source, interval).await;
    // When the regular schedule wants the next poll: anything earlier is discretionary.
    let mut scheduled = due;
    let mut failures = 0u32;
    let mut reserve_said = false;
    while wait_until(due, &trigger, &mut shutdown).await {
        let early = tokio::time::Instant::now() < scheduled;
        if let Some((used, max)) = low_budget(&client, schedule.api_reserve_percent) {
            let wants_full = trigger.full.load(Ordering::SeqCst);
            if early || wants_full {
                if !reserve_said {
                    tracing::warn!(target: "plansync::engine", event = "crm_api_reserve", pairing = %pairing, used, max, reserve_percent = schedule.api_reserve_percent,
                        "the CRM's daily API calls are down to the reserve: only scheduled polls run (no early polls or full re-reads) until they free up");
                    reserve_said = true;
                }
                if early {
                    due = scheduled;
                    continue;
                }
            }
        } else if reserve_said {
            tracing::info!(target: "plansync::engine", event = "crm_api_reserve_over", pairing = %pairing, "the CRM's daily API calls are above the reserve again");
            reserve_said = false;
        }
        let full = !reserve_said && trigger.full.swap(false, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let at = Utc::now();
        match crm_poll_once(&ctx, &client, &pairing, lookback, &mut recent, full).await {
            Ok(n) => {
                tracing::info!(
                    target: "plansync::engine",
                    event = "poll",
                    side = "crm",
                    pairing = %pairing,
                    changes = n,
                    full,
                    ms = started.elapsed().as_millis() as u64,
                );
                completed_run(&ctx, &source, at).await;
                failures = 0;
                scheduled = tokio::time::Instant::now() + schedule.every;
                due = tokio::time::Instant::now() + schedule.interval();
            }
            Err(e) => {
                if full {
                    trigger.full.store(true, Ordering::SeqCst);
                }
                failures += 1;
                let wait = retry_after(failures, interval);
                tracing::warn!(target: "plansync::engine", event = "poll_failed", side = "crm", pairing = %pairing, error = %e, failures, retry_in_s = wait.as_secs(), "CRM poll failed; retrying");
                due = tokio::time::Instant::now() + wait;
            }
        }
        ctx.rules.borrow_and_update();
    }
}

/// `(used, max)` when the org's daily API calls (as the last answer's `Sforce-Limit-Info`
/// said) are down to `reserve_percent` of the maximum or fewer.
fn low_budget(client: &CrmClient, reserve_percent: u8) -> Option<(u64, u64)> {
    let (used, max) = client.stats().api_usage?;
    let remaining = max.saturating_sub(used);
    (max > 0 && remaining * 100 <= max * u64::from(reserve_percent)).then_some((used, max))
}

/// One Anaplan poll of `pairing`: read the list and module, diff against the shadow, route
/// each part of the poll as it comes (a large module is read and diffed page by page): flags
/// first (so conditions see them), then the changes and problems; then mark the run.
pub async fn anaplan_poll_once(
    ctx: &PollerCtx,
    client: &AnaplanClient,
    pairing_name: &str,
    target: &mut Option<ResolvedTarget>,
    flagged: &mut HashSet<String>,
    reconcile: bool,
) -> Result<usize, SourceError> {
    let rules = ctx.rules.borrow().clone();
    let Some(pairing) = rules.pairing(pairing_name) else {
        return Ok(0);
    };
    // Resolved once, and again when a reloaded rule file names other objects.
    if !target.as_ref().is_some_and(|t| t.is_for(&pairing.anaplan)) {
        *target = Some(resolve_target(client, pairing).await?);
    }
    let Some(resolved) = target.as_ref() else {
        return Ok(0);
    };
    let name = pairing_name.to_string();
    let seen = ctx
        .db
        .call(move |s| s.anaplan_seen(&name))
        .await
        .map_err(|e| SourceError::transient(e.to_string()))?;
    let at = Utc::now();
    let mut route = RouteParts {
        router: &ctx.router,
        counters: &ctx.counters,
        pairing: pairing_name,
        flagged,
        kind: if reconcile {
            Source::Reconcile
        } else {
            Source::Poll
        },
        changes: 0,
    };
    if let Err(e) = poll_resolved_each(client, pairing, resolved, &seen, at, &mut route).await {
        // Ids may have changed (a model rebuilt): resolve again next time.
        *target = None;
        return Err(e.into());
    }
    let n = route.changes;
    drop(seen);
    ctx.router
        .mark(
            &anaplan_poll_source(pairing_name),
            &Position::PollRun { at },
        )
        .await?;
    Ok(n)
}

/// Routes each part of an Anaplan poll to the shards.
struct RouteParts<'a> {
    router: &'a Router,
    counters: &'a Arc<Counters>,
    pairing: &'a str,
    /// Items whose flags were last seen with one set (so a flag cleared is sent once).
    flagged: &'a mut HashSet<String>,
    kind: Source,
    changes: usize,
}

impl PollParts for RouteParts<'_> {
    async fn part(&mut self, outcome: AnaplanPollOutcome) -> Result<(), AnaplanPollError> {
        let record = |code: &str| RecordKey {
            pairing: self.pairing.to_string(),
            crm_id: code.to_string(),
        };
        let gone = |e: ShardGone| AnaplanPollError::Route(e.to_string());
        let router = self.router;
        for (code, flags) in outcome.flags {
            let any = flags.values().any(|b| *b);
            // Only flags that are, or were, set are worth a message: most rows carry none.
            if any || self.flagged.contains(&code) {
                if any {
                    self.flagged.insert(code.clone());
                } else {
                    self.flagged.remove(&code);
                }
                router
                    .send(
                        &record(&code),
                        ShardMsg::Flags {
                            record: record(&code),
                            flags,
                        },
                    )
                    .await
                    .map_err(gone)?;
            }
        }
        self.changes += outcome.changes.len();
        for change in outcome.changes {
            route_change(router, self.counters, change, self.kind)
                .await
                .map_err(gone)?;
        }
        for p in outcome.problems {
            if p.code.is_empty() {
                tracing::warn!(target: "plansync::engine", event = "anaplan_poll_item_skipped", pairing = self.pairing, message = %p.message, "Anaplan poll skipped an item");
                continue;
            }
            let msg = ShardMsg::Problem {
                record: record(&p.code),
                field: p.field,
                kind: p.kind,
                message: p.message,
            };
            router.send(&record(&p.code), msg).await.map_err(gone)?;
        }
        Ok(())
    }
}

/// The items of `pairing` whose flags were last stored with one set: a poll must tell the
/// shards when such a flag is cleared, also after a restart.
pub async fn flagged_items(db: &Db, pairing: &str) -> HashSet<String> {
    let name = pairing.to_string();
    match db.call(|s| s.anaplan_flags()).await {
        Ok(rows) => rows
            .into_iter()
            .filter(|(r, _)| r.pairing == name)
            .map(|(r, _)| r.crm_id)
            .collect(),
        Err(e) => {
            tracing::warn!(target: "plansync::engine", event = "flags_read_failed", pairing, error = %e, "reading the stored Anaplan flags failed");
            HashSet::new()
        }
    }
}

/// The Anaplan poller of one pairing: every `interval` from its last completed run, or when
/// triggered; a failed poll is retried with backoff. With `poll_now` (a restart) the first
/// poll runs at once: Anaplan has no change feed, so what planners edited while plansync was
/// down is seen only by a poll, where the CRM's edits are replayed by the stream. After a
/// first run, which has just read everything, the schedule is kept.
pub async fn run_anaplan_poller(
    ctx: PollerCtx,
    client: AnaplanClient,
    pairing: String,
    interval: Duration,
    trigger: Arc<Trigger>,
    poll_now: bool,
) {
    let mut target = None;
    let mut flagged = flagged_items(&ctx.db, &pairing).await;
    let mut shutdown = ctx.shutdown.clone();
    let source = anaplan_poll_source(&pairing);
    let mut due = if poll_now {
        tokio::time::Instant::now()
    } else {
        first_due(&ctx.db, &source, interval).await
    };
    let mut failures = 0u32;
    while wait_until(due, &trigger, &mut shutdown).await {
        trigger.full.store(false, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let at = Utc::now();
        match anaplan_poll_once(&ctx, &client, &pairing, &mut target, &mut flagged, false).await {
            Ok(n) => {
                tracing::info!(
                    target: "plansync::engine",
                    event = "poll",
                    side = "anaplan",
                    pairing = %pairing,
                    changes = n,
                    ms = started.elapsed().as_millis() as u64,
                );
                completed_run(&ctx, &source, at).await;
                failures = 0;
                due = tokio::time::Instant::now() + interval;
            }
            Err(e) => {
                failures += 1;
                let wait = retry_after(failures, interval);
                tracing::warn!(target: "plansync::engine", event = "poll_failed", side = "anaplan", pairing = %pairing, error = %e, failures, retry_in_s = wait.as_secs(), "Anaplan poll failed; retrying");
                due = tokio::time::Instant::now() + wait;
            }
        }
    }
}

/// The CDC stream: runs the listener for as long as the engine runs (see [`supervise_stream`])
/// and routes what it delivers. `crm_triggers` are the CRM pollers by CRM object name, woken
/// to cover holes in the stream.
pub async fn run_cdc(
    ctx: PollerCtx,
    client: CrmClient,
    stream: StreamOptions,
    crm_triggers: HashMap<String, Arc<Trigger>>,
    connected: Arc<std::sync::atomic::AtomicBool>,
) {
    let (tx, mut rx) = mpsc::channel::<CdcItem>(1024);
    note_stream(&ctx.db, |s, at| s.record_stream_starting(at)).await;
    let listen = tokio::spawn(supervise_stream(
        ctx.clone(),
        client,
        stream,
        tx,
        crm_triggers.values().cloned().collect(),
        connected.clone(),
    ));
    let wake = |entity: &str, full: bool| {
        if let Some(t) = crm_triggers.get(entity) {
            if full { t.read_all() } else { t.poll_now() }
        } else {
            for t in crm_triggers.values() {
                if full { t.read_all() } else { t.poll_now() }
            }
        }
    };
    while let Some(item) = rx.recv().await {
        match item {
            CdcItem::Event(event) => {
                let rules = ctx.rules.borrow().clone();
                let source = cdc_source(&event.channel);
                let position = event.replay().to_position();
                if let Some(pairing) = rules.find(&event.entity) {
                    for change in event.into_changes(&pairing.name) {
                        if route_change(&ctx.router, &ctx.counters, change, Source::Stream)
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                } else {
                    tracing::debug!(target: "plansync::engine", event = "stream_event_unmapped", entity = %event.entity, "an event for an object no rule maps");
                }
                if ctx.router.mark(&source, &position).await.is_err() {
                    break;
                }
            }
            CdcItem::Gap(Gap {
                entity,
                record_ids,
                change_type,
                ..
            }) => {
                tracing::warn!(target: "plansync::engine", event = "gap", %entity, records = record_ids.len(), %change_type, "the stream sent a gap; re-reading");
                let rules = ctx.rules.borrow().clone();
                if let Some(pairing) = rules.find(&entity) {
                    for id in &record_ids {
                        let record = RecordKey {
                            pairing: pairing.name.clone(),
                            crm_id: id.clone(),
                        };
                        let msg = ShardMsg::Notice {
                            record: record.clone(),
                            kind: crate::model::ExceptionKind::Gap,
                            message: format!(
                                "the change stream sent {change_type} for this {entity} record \
                                 without its values; the CRM poller re-read it"
                            ),
                        };
                        if ctx.router.send(&record, msg).await.is_err() {
                            break;
                        }
                    }
                }
                wake(&entity, false);
            }
            CdcItem::Overflow(Overflow { entity, .. }) => {
                tracing::warn!(target: "plansync::engine", event = "gap", %entity, "the stream overflowed; re-reading the object");
                wake(&entity, false);
            }
            CdcItem::ReplayInvalid {
                channel,
                replay_id,
                message,
            } => {
                tracing::warn!(target: "plansync::engine", event = "gap", %channel, replay_id, %message, "the stored replay id is no longer valid; reconciling in full");
                // A channel of several objects names none: every poller re-reads.
                let entity = crate::crm::cdc::channel::object_of(&channel).unwrap_or_default();
                wake(&entity, true);
            }
            CdcItem::Problem {
                channel, problem, ..
            } => {
                tracing::warn!(target: "plansync::engine", event = "stream_event_unusable", %channel, reason = %problem.reason, "the stream sent an event that could not be used; re-reading");
                // Without an entity the hole could be anywhere: every poller re-reads.
                wake(problem.entity.as_deref().unwrap_or(""), false);
            }
            CdcItem::Connected { transport } => {
                connected.store(true, Ordering::SeqCst);
                tracing::info!(target: "plansync::engine", event = "stream_connected", ?transport);
                note_stream(&ctx.db, |s, at| s.record_stream_connected(at)).await;
            }
            CdcItem::Disconnected { reason } => {
                connected.store(false, Ordering::SeqCst);
                tracing::warn!(target: "plansync::engine", event = "stream_disconnected", %reason);
                note_stream(&ctx.db, move |s, at| s.record_stream_down(at, &reason)).await;
            }
            CdcItem::Alive => note_stream(&ctx.db, |s, at| s.record_stream_alive(at)).await,
        }
    }
    let _ = listen.await;
    note_stream(&ctx.db, |s, at| {
        s.record_stream_down(at, "plansync stopped")
    })
    .await;
}

/// Records the stream's health for `plansync status` (another process reads it). A store
/// that cannot take it is worth a line, not a stop: the stream itself goes on.
async fn note_stream(
    db: &Db,
    write: impl FnOnce(
        &mut crate::store::Store,
        chrono::DateTime<Utc>,
    ) -> Result<(), crate::store::StoreError>
    + Send
    + 'static,
) {
    if let Err(e) = db.call(move |s| write(s, Utc::now())).await {
        tracing::warn!(target: "plansync::engine", event = "stream_health_unrecorded", error = %e, "the stream's health could not be recorded for status");
    }
}

/// Waits between restarts of a stopped stream: 1 s doubling to 5 minutes.
const STREAM_RESTART: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));

/// A stream that ran this long before it stopped starts its restart count over.
const STREAM_HEALTHY: Duration = Duration::from_secs(300);

/// Runs the CDC listener until the engine stops. The listener reconnects on its own through
/// what a session's end advises (re-authenticating when the token is refused); when it stops
/// (the server refused the session, the credentials were refused, it gave up), it is started
/// again after a capped backoff, from the replay ids the shards have stored: the stream never dies for
/// good. Each restart is an ERROR line (as rare as the backoff makes it); the first of an
/// outage wakes the CRM pollers, which poll more often while the stream is down.
pub async fn supervise_stream(
    ctx: PollerCtx,
    client: CrmClient,
    stream: StreamOptions,
    tx: mpsc::Sender<CdcItem>,
    crm_triggers: Vec<Arc<Trigger>>,
    connected: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut shutdown = ctx.shutdown.clone();
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let config = cdc_config(&ctx.db, &stream).await;
        let listener = match CdcListener::new(client.clone(), config) {
            Ok(l) => l,
            Err(e) => {
                // The channels were checked with the configuration: this cannot pass by itself.
                tracing::error!(target: "plansync::engine", event = "stream_start_failed", error = %e, "the CDC listener cannot start; the pollers carry on alone");
                return;
            }
        };
        let mut stop = ctx.shutdown.clone();
        let stopped = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    return;
                }
            }
        };
        let started = std::time::Instant::now();
        let Err(e) = listener.run(tx.clone(), stopped).await else {
            return;
        };
        connected.store(false, Ordering::SeqCst);
        if *shutdown.borrow() {
            return;
        }
        if started.elapsed() >= STREAM_HEALTHY {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let wait = STREAM_RESTART.wait(failures);
        tracing::error!(target: "plansync::engine", event = "stream_down", error = %e, failures, retry_in_s = wait.as_secs(), "the CDC stream stopped; starting it again (the CRM pollers poll more often meanwhile)");
        let why = e.to_string();
        note_stream(&ctx.db, move |s, at| s.record_stream_down(at, &why)).await;
        if failures == 1 {
            for t in &crm_triggers {
                t.poll_now();
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The listener's configuration, resuming each channel after the last replay id the shards
/// stored (from the tip when none is stored).
async fn cdc_config(db: &Db, stream: &StreamOptions) -> CdcConfig {
    let mut channels = Vec::new();
    for channel in &stream.channels {
        let from = match resume_position(db, &cdc_source(channel)).await {
            Some(Position::Replay { replay_id, .. }) => match replay_id.parse::<i64>() {
                Ok(id) => ReplayFrom::After(id),
                Err(_) => ReplayFrom::Tip,
            },
            _ => ReplayFrom::Tip,
        };
        tracing::info!(target: "plansync::engine", event = "stream_resume", %channel, ?from, "stream resumes");
        channels.push((channel.clone(), from));
    }
    let mut config = CdcConfig::new(
        stream.api_version.clone(),
        channels,
        stream.transport,
        stream.client_id.clone(),
    );
    // One `/meta/connect` answer carries every event the org had ready: at a quarter-end
    // burst that is megabytes. A frame over the cap is dropped (and the pollers re-read), so
    // the cap is generous; the transport still bounds memory.
    config.max_frame_bytes = 64 << 20;
    // A sign of life now and then, so `status` can tell a quiet channel from a dead one.
    config.alive_every = Some(Duration::from_secs(30));
    config
}
