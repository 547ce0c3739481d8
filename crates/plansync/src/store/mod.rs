//! The SQLite store: the only module that touches SQLite.
//!
//! One file holds the per-field sync state (`shadow`), the record pairing (`record_map`), the
//! queued writes (`outbox`), the source checkpoints, the exceptions and the audit of decisions
//! (tables and views documented in `schema.rs`). The engine owns the single writing
//! [`Store`] and hands it a [`Batch`] per round of decisions; the review CLI opens its own
//! [`Store::open_read_only`] (WAL lets it read while the engine writes) and a writing one only
//! to resolve.

mod batch;
mod codec;
mod engine_state;
mod error;
mod exceptions;
mod latency;
mod open;
mod queue;
mod resolve;
mod rows;
mod schema;
mod snapshot;
mod staging;
mod status;
mod stream_health;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params};

pub use batch::{
    Batch, CommitReceipt, ExceptionRef, ExceptionUpdate, NewAudit, NewException, NewOutbox,
    OutboxRef, OutboxUpdate, RecordMapUpsert, ShadowUpsert,
};
pub use engine_state::{CrmContext, Flags};
pub use error::StoreError;
pub use exceptions::{
    ExceptionDetail, ExceptionFilter, ExceptionStats, FieldCount, HISTORY_LIMIT, OLDEST_OPEN_LIMIT,
    StatusKindCount,
};
pub use latency::{DecisionCount, WriteLatency};
pub use resolve::{Resolution, ResolutionHow, ResolveOutcome};
pub use rows::{
    AuditRecord, ExceptionField, ExceptionRecord, FieldKey, Observed, OutboxReason, OutboxRecord,
    OutboxState, RecordMapEntry, RecordState, ResolutionKind, ShadowState,
};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use snapshot::AnaplanSeen;
pub use staging::{StagedItem, Unclaimed, Unstaged};
pub use status::{FirstRunStatus, Metric, OpenExceptions, OutboxDepth, SourceStatus, StatusReport};
pub use stream_health::{STREAM_SIGN_OF_LIFE, StreamHealth};

use crate::model::{Position, RecordKey, Side};
use codec::{corrupt, micros_at, opt_micros_at, parse_enum, parse_kind, parse_ts, parse_value};

/// An open store file. Writing methods take `&mut self`: one writer per connection, and the
/// engine keeps exactly one writing `Store`.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    read_only: bool,
    /// Shared by the connections of one process that write (the engine's shards and sinks):
    /// they take turns here, woken the moment the writer before them is done, instead of
    /// sleeping in SQLite's busy handler (which backs off up to 100 ms a try).
    write_gate: Option<WriteGate>,
}

/// A turn at writing, shared by the connections of one process (see [`Store::set_write_gate`]).
pub type WriteGate = std::sync::Arc<std::sync::Mutex<()>>;

/// What a passive WAL checkpoint found: the frames in the WAL, and how many of them it could
/// not copy into the database yet (a reader still uses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalCheckpoint {
    pub frames: i64,
    pub left: i64,
}

/// One read transaction, ended when dropped (see [`Store::read_snapshot`]).
pub struct ReadSnapshot<'a> {
    conn: Option<&'a Connection>,
}

impl Drop for ReadSnapshot<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn {
            // It only read: ending it cannot lose anything, and a failure leaves the
            // transaction open, which the next commit's BEGIN reports.
            if let Err(e) = conn.execute_batch("ROLLBACK") {
                tracing::warn!(target: "plansync::store", event = "read_txn_end_failed", error = %e, "a read transaction could not be ended");
            }
        }
    }
}

/// Waits for this process's turn to write, if the connection shares a gate.
fn take_turn(gate: &Option<WriteGate>) -> Option<std::sync::MutexGuard<'_, ()>> {
    // A writer that panicked held no SQLite transaction open past its drop: the gate is free.
    gate.as_ref()
        .map(|g| g.lock().unwrap_or_else(|p| p.into_inner()))
}

impl Store {
    /// Makes this connection's writes take turns with the other connections given `gate`.
    pub fn set_write_gate(&mut self, gate: WriteGate) {
        self.write_gate = Some(gate);
    }

    /// Leaves WAL checkpoints to [`Store::checkpoint_wal`] called elsewhere, so a commit never
    /// waits for one (a checkpoint copies pages and syncs the file twice).
    pub fn disable_auto_checkpoint(&mut self) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(())
    }

    /// Lets this connection keep up to `kib` KiB of database pages in memory (SQLite's
    /// default is 2 MiB). A writer whose transaction dirties more pages than that spills
    /// them to the WAL mid-transaction and reads them back.
    pub fn set_cache_kib(&mut self, kib: u32) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "cache_size", -i64::from(kib))?;
        Ok(())
    }

    /// Copies committed pages from the WAL into the database without blocking writers
    /// (`PRAGMA wal_checkpoint(PASSIVE)`).
    pub fn checkpoint_wal(&mut self) -> Result<WalCheckpoint, StoreError> {
        self.ensure_writable()?;
        let (frames, copied): (i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                    Ok((row.get(1)?, row.get(2)?))
                })?;
        Ok(WalCheckpoint {
            frames: frames.max(0),
            left: (frames - copied).max(0),
        })
    }

    /// Copies the whole WAL into the database and makes the next commit write the WAL from
    /// its start (`PRAGMA wal_checkpoint(RESTART)`), in this process's write turn. A passive
    /// checkpoint alone never gets there while writers keep committing: some reader always
    /// holds a recent frame, so the WAL grew without end (1.6 GB beside a 0.5 GB database
    /// in the 300k-record first run), and every commit wrote to newly allocated file blocks.
    /// Waits at most `wait` for readers (another process's long query among them); returns
    /// whether the WAL was emptied, and a `false` is for the next attempt.
    pub fn restart_wal(&mut self, wait: std::time::Duration) -> Result<bool, StoreError> {
        self.ensure_writable()?;
        let _turn = take_turn(&self.write_gate);
        let before: i64 = self
            .conn
            .pragma_query_value(None, "busy_timeout", |row| row.get(0))?;
        self.conn.busy_timeout(wait)?;
        let busy = self
            .conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
                row.get::<_, i64>(0)
            });
        self.conn
            .busy_timeout(std::time::Duration::from_millis(before.max(0) as u64))?;
        Ok(busy? == 0)
    }

    /// Makes a WAL longer than `bytes` shrink back to that size when it restarts
    /// (`PRAGMA journal_size_limit`): a burst leaves no large file behind.
    pub fn set_wal_size_limit(&mut self, bytes: u64) -> Result<(), StoreError> {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.conn.pragma_update(None, "journal_size_limit", bytes)?;
        Ok(())
    }

    /// Makes the reads that follow, until the guard is dropped, share one read transaction.
    /// Each statement outside a transaction begins and ends its own, which in WAL mode costs
    /// file-lock system calls on the shared-memory index: at the first run that was about a
    /// tenth of a shard's time, for records that had no rows to read. A shard reads its
    /// round's records under one snapshot, then drops it before its commit.
    pub fn read_snapshot(&self) -> Result<ReadSnapshot<'_>, StoreError> {
        if !self.conn.is_autocommit() {
            // Already inside a transaction: its snapshot is the one read.
            return Ok(ReadSnapshot { conn: None });
        }
        self.conn.execute_batch("BEGIN DEFERRED")?;
        Ok(ReadSnapshot {
            conn: Some(&self.conn),
        })
    }

    /// How long a statement of this connection waits for another connection's write lock.
    /// The engine's connections wait long: its shards and sinks take turns on one file, and
    /// a shard that gave up would stop the engine.
    pub fn set_busy_timeout(&mut self, wait: std::time::Duration) -> Result<(), StoreError> {
        Ok(self.conn.busy_timeout(wait)?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn ensure_writable(&self) -> Result<(), StoreError> {
        if self.read_only {
            Err(StoreError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// The stored state of one field, `None` if it was never stored.
    pub fn shadow(&self, key: &FieldKey) -> Result<Option<ShadowState>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT value_kind, base_value, base_at, base_source, seen_crm_value, seen_crm_at,
                    seen_crm_source, seen_anaplan_value, seen_anaplan_at, seen_anaplan_source,
                    in_flight_outbox_id, held_exception_id, updated_at,
                    last_ack_target, last_ack_value, last_ack_at, last_ack_replaced
             FROM shadow WHERE pairing = ?1 AND crm_id = ?2 AND field = ?3",
        )?;
        stmt.query_and_then(
            params![key.record.pairing, key.record.crm_id, key.field],
            shadow_from_row,
        )?
        .next()
        .transpose()
    }

    /// Where `source` was last acknowledged, `None` if it never was.
    pub fn checkpoint(&self, source: &str) -> Result<Option<Position>, StoreError> {
        let raw: Option<String> = self
            .conn
            .prepare_cached("SELECT position FROM checkpoints WHERE source = ?1")?
            .query_row([source], |row| row.get(0))
            .optional()?;
        raw.map(|raw| {
            serde_json::from_str(&raw)
                .map_err(|_| corrupt("checkpoints", "position", raw, "a position (JSON)"))
        })
        .transpose()
    }

    /// One queued write.
    pub fn outbox(&self, id: i64) -> Result<Option<OutboxRecord>, StoreError> {
        load_outbox(&self.conn, id)
    }

    /// The oldest `limit` pending writes to `target`, in the order they were decided.
    pub fn pending_outbox(
        &self,
        target: Side,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE target = ?1 AND state = 'pending'
             ORDER BY id LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        stmt.query_and_then(params![target.as_str(), limit], outbox_from_row)?
            .collect()
    }

    /// The pairing of one CRM record with its Anaplan list item.
    pub fn record_map_entry(
        &self,
        record: &RecordKey,
    ) -> Result<Option<RecordMapEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT anaplan_code, anaplan_item_id, state, created_at, updated_at
             FROM record_map WHERE pairing = ?1 AND crm_id = ?2",
        )?;
        stmt.query_and_then(params![record.pairing, record.crm_id], |row| {
            Ok(RecordMapEntry {
                record: record.clone(),
                anaplan_code: row.get(0)?,
                anaplan_item_id: row.get(1)?,
                state: parse_enum("record_map", "state", row.get(2)?)?,
                created_at: parse_ts("record_map", "created_at", row.get(3)?)?,
                updated_at: parse_ts("record_map", "updated_at", row.get(4)?)?,
            })
        })?
        .next()
        .transpose()
    }
}

pub(crate) fn shadow_from_row(row: &Row<'_>) -> Result<ShadowState, StoreError> {
    let kind = parse_kind("shadow", "value_kind", row.get(0)?)?;
    let observed = |first: usize,
                    value_col: &'static str,
                    at_col: &'static str,
                    source_col: &'static str|
     -> Result<Option<Observed>, StoreError> {
        let Some(at) = opt_micros_at(row, first + 1, "shadow", at_col)? else {
            return Ok(None);
        };
        let source: Option<String> = row.get(first + 2)?;
        let source =
            source.ok_or_else(|| corrupt("shadow", source_col, "NULL".into(), "a source"))?;
        Ok(Some(Observed {
            value: parse_value("shadow", value_col, kind, row.get(first)?)?,
            at,
            source: parse_source("shadow", source_col, source)?,
        }))
    };
    Ok(ShadowState {
        kind,
        base: observed(1, "base_value", "base_at", "base_source")?,
        seen_crm: observed(4, "seen_crm_value", "seen_crm_at", "seen_crm_source")?,
        seen_anaplan: observed(
            7,
            "seen_anaplan_value",
            "seen_anaplan_at",
            "seen_anaplan_source",
        )?,
        in_flight: row.get(10)?,
        held: row.get(11)?,
        updated_at: micros_at(row, 12, "shadow", "updated_at")?,
        last_ack: last_ack_from_row(row, kind)?,
    })
}

/// The `last_ack_*` columns (13 to 16). A replaced value is stored as text and a NULL there
/// means the side showed no value, so `replaced` is `Some(Null)` rather than `None` then.
fn last_ack_from_row(
    row: &Row<'_>,
    kind: crate::model::ValueKind,
) -> Result<Option<crate::model::AckedWrite>, StoreError> {
    let Some(target) = row.get::<_, Option<String>>(13)? else {
        return Ok(None);
    };
    let to = parse_side("shadow", "last_ack_target", target)?;
    let value = parse_value("shadow", "last_ack_value", kind, row.get(14)?)?;
    let at = micros_at(row, 15, "shadow", "last_ack_at")?;
    let replaced = parse_value("shadow", "last_ack_replaced", kind, row.get(16)?)?;
    Ok(Some(crate::model::AckedWrite {
        to,
        value,
        at,
        replaced: Some(replaced),
    }))
}

/// `model::Source` has no `FromStr`; the store is the only place that reads it back.
pub(crate) fn parse_source(
    table: &'static str,
    column: &'static str,
    raw: String,
) -> Result<crate::model::Source, StoreError> {
    use crate::model::Source;
    match raw.as_str() {
        "stream" => Ok(Source::Stream),
        "poll" => Ok(Source::Poll),
        "reconcile" => Ok(Source::Reconcile),
        "resolution" => Ok(Source::Resolution),
        "write" => Ok(Source::Write),
        _ => Err(corrupt(table, column, raw, "a source")),
    }
}

fn parse_side(table: &'static str, column: &'static str, raw: String) -> Result<Side, StoreError> {
    parse_enum(table, column, raw)
}

fn load_outbox(conn: &Connection, id: i64) -> Result<Option<OutboxRecord>, StoreError> {
    let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    stmt.query_and_then([id], outbox_from_row)?
        .next()
        .transpose()
}

pub(crate) const OUTBOX_COLUMNS: &str = "id, pairing, crm_id, field, target, value, value_kind, reason, \
     exception_id, state, attempts, last_error, created_at, updated_at, replaced_value, \
     result_exception_id";

pub(crate) fn outbox_from_row(row: &Row<'_>) -> Result<OutboxRecord, StoreError> {
    let kind = parse_kind("outbox", "value_kind", row.get(6)?)?;
    Ok(OutboxRecord {
        id: row.get(0)?,
        key: FieldKey::new(
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
        ),
        target: parse_side("outbox", "target", row.get(4)?)?,
        kind,
        value: parse_value("outbox", "value", kind, row.get(5)?)?,
        reason: parse_enum("outbox", "reason", row.get(7)?)?,
        exception_id: row.get(8)?,
        state: parse_enum("outbox", "state", row.get(9)?)?,
        attempts: row.get(10)?,
        last_error: row.get(11)?,
        created_at: parse_ts("outbox", "created_at", row.get(12)?)?,
        updated_at: parse_ts("outbox", "updated_at", row.get(13)?)?,
        replaced: parse_value("outbox", "replaced_value", kind, row.get(14)?)?,
        result_exception_id: row.get(15)?,
    })
}

#[cfg(test)]
mod tests;
