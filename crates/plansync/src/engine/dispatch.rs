//! The write loop of one side: picks up the writes its shards have made sendable, hands them
//! to the side's sink as one batch, and routes every answer back to the shard that owns the
//! record. It never changes the per-field state itself (only the shard does), so an answer
//! and a new change for the same field cannot race.
//!
//! Batching: the loop wakes when a shard queued writes (or every second, for writes queued by
//! a person's resolution or left by a restart), waits one batch window so that a burst
//! gathers into one batch, and sends at most `max_batch` writes per call of the sink. When
//! the remote could not be reached at all (`Unreachable`), the side backs off as a whole with
//! a growing delay; the other side keeps working meanwhile. A write answered `Retry` waits
//! on its own backoff (`outbox.not_before`, set by its shard), so the rest of the side keeps
//! flowing, and ends as a `write_failed` exception past its retry budget.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, watch};

use super::counters::Counters;
use super::db::Db;
use super::router::Router;
use super::shard::ShardMsg;
use super::write::{WriteOutcome, WriteReport, WriteRequest};
use crate::model::{RecordKey, Side};
use crate::rules::RuleSet;

/// A side's sink as the write loop drives it.
pub trait Sink: Send {
    fn side(&self) -> Side;
    fn write<'a>(
        &'a mut self,
        rules: &'a RuleSet,
        batch: &'a [WriteRequest],
    ) -> Pin<Box<dyn Future<Output = WriteReport> + Send + 'a>>;
}

#[derive(Debug, Clone, Copy)]
pub struct DispatchSettings {
    /// How long a batch gathers after the first write is queued.
    pub batch_window: Duration,
    /// The most writes handed to the sink at once.
    pub max_batch: usize,
    /// The longest wait between attempts after a batch could not be delivered.
    pub max_backoff: Duration,
}

/// What one side's write loop works with, besides its sink.
pub struct DispatchCtx {
    /// Its own store connection: the outbox reads and the "sent" marks.
    pub db: Db,
    /// Where the sink's answers go (each to its record's shard).
    pub router: Router,
    /// The rules in force, for what a write must check first.
    pub rules: watch::Receiver<Arc<RuleSet>>,
    /// Rung by a shard that queued writes for this side.
    pub wake: Arc<Notify>,
    pub settings: DispatchSettings,
    pub counters: Arc<Counters>,
    /// Turns true when the engine stops.
    pub shutdown: watch::Receiver<bool>,
}

/// Runs until `shutdown` turns true; the batch being written is finished first.
pub async fn run(mut sink: Box<dyn Sink>, ctx: DispatchCtx) {
    let DispatchCtx {
        db,
        router,
        rules,
        wake,
        settings,
        counters,
        mut shutdown,
    } = ctx;
    let side = sink.side();
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        tokio::time::sleep(settings.batch_window).await;
        loop {
            let limit = settings.max_batch;
            let rows = match db
                .call(move |s| s.sendable_outbox(side, limit, Utc::now()))
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(target: "plansync::engine", event = "outbox_read_failed", %side, error = %e, "reading the outbox failed");
                    break;
                }
            };
            if rows.is_empty() {
                break;
            }
            let full = rows.len() >= settings.max_batch;
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let now = Utc::now();
            if let Err(e) = db.call(move |s| s.mark_outbox_sent(&ids, now)).await {
                tracing::error!(target: "plansync::engine", event = "outbox_mark_failed", %side, error = %e, "marking writes as sent failed");
                break;
            }
            let current = rules.borrow().clone();
            let requests: Vec<WriteRequest> = rows
                .into_iter()
                .map(|r| {
                    // Nothing seen there yet (a new item, or a cell never read): nothing to
                    // protect, and a blank Anaplan number reads as 0, not as "no value".
                    let checked = side == Side::Anaplan
                        && !r.replaced.is_null()
                        && current
                            .pairing(&r.key.record.pairing)
                            .and_then(|p| p.field(&r.key.field))
                            .is_some_and(|rule| rule.may_be_edited_in(Side::Anaplan));
                    let expect = checked.then(|| r.replaced.clone());
                    WriteRequest {
                        outbox_id: r.id,
                        record: r.key.record,
                        field: r.key.field,
                        value: r.value,
                        expect,
                    }
                })
                .collect();
            let records: HashMap<i64, RecordKey> = requests
                .iter()
                .map(|r| (r.outbox_id, r.record.clone()))
                .collect();
            tracing::debug!(
                target: "plansync::engine",
                event = "write_batched",
                %side,
                writes = requests.len(),
            );
            let report = sink.write(&current, &requests).await;
            counters.record_calls(side, &report.calls);
            let mut retry = false;
            let mut acked = 0u64;
            for (id, outcome) in report.outcomes {
                match &outcome {
                    // The side could not be reached: it backs off as a whole. A write
                    // answered `Retry` waits on its own backoff (the shard sets it).
                    WriteOutcome::Unreachable { .. } => retry = true,
                    WriteOutcome::Acked { .. } => acked += 1,
                    WriteOutcome::Retry { .. }
                    | WriteOutcome::Rejected { .. }
                    | WriteOutcome::Stale { .. } => {}
                }
                let Some(record) = records.get(&id) else {
                    continue;
                };
                let msg = ShardMsg::Ack {
                    outbox_id: id,
                    outcome,
                };
                if router.send(record, msg).await.is_err() {
                    return;
                }
            }
            counters.record_acks(side, acked);
            if !report.items.is_empty() {
                let mut by_shard: HashMap<usize, Vec<(RecordKey, String)>> = HashMap::new();
                for (record, item) in report.items {
                    by_shard
                        .entry(router.shard_of(&record))
                        .or_default()
                        .push((record, item));
                }
                for (_, items) in by_shard {
                    let first = items[0].0.clone();
                    if router.send(&first, ShardMsg::ItemIds(items)).await.is_err() {
                        return;
                    }
                }
            }
            if retry {
                failures = failures.saturating_add(1);
                let delay = backoff(failures, settings.max_backoff);
                tracing::warn!(
                    target: "plansync::engine",
                    event = "retry",
                    %side,
                    attempt = failures,
                    delay_ms = delay.as_millis() as u64,
                    "the remote could not take the batch; trying again later"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return,
                }
                break;
            }
            failures = 0;
            if !full {
                break;
            }
        }
    }
}

/// Steps of 1 s, 2 s, 4 s … up to `max`, on the shared schedule (`crate::backoff`).
fn backoff(failures: u32, max: Duration) -> Duration {
    crate::backoff::Backoff::new(Duration::from_secs(1), max).wait(failures)
}
