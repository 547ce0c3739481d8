//! The running engine's reads and small writes around the outbox and the shadow: what a sink
//! may send now, what a shard must load to decide a record, and where a sharded source
//! resumes.
//!
//! One writer per field is kept by the shards: a field's write is sendable only once its
//! shard has recorded it as the field's in-flight write (`shadow.in_flight_outbox_id`).
//! Writes queued by a person's resolution start unclaimed; the engine routes them to their
//! shard, which claims them when the field is free.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::codec::ts;
use super::rows::{FieldKey, OutboxRecord, ShadowState};
use super::{OUTBOX_COLUMNS, Store, StoreError, outbox_from_row, shadow_from_row};
use crate::model::{ExceptionKind, Position, RecordKey, Side};

/// The outbox columns, qualified by a table alias (for joins).
fn outbox_columns_of(alias: &str) -> String {
    OUTBOX_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Every stored field of one record, by CRM field name: what a shard loads before it
    /// decides a change to the record (the other fields are the `when` conditions' context).
    pub fn shadow_record(
        &self,
        record: &RecordKey,
    ) -> Result<Vec<(String, ShadowState)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT value_kind, base_value, base_at, base_source, seen_crm_value, seen_crm_at,
                    seen_crm_source, seen_anaplan_value, seen_anaplan_at, seen_anaplan_source,
                    in_flight_outbox_id, held_exception_id, updated_at,
                    last_ack_target, last_ack_value, last_ack_at, last_ack_replaced, field
             FROM shadow WHERE pairing = ?1 AND crm_id = ?2",
        )?;
        stmt.query_and_then(params![record.pairing, record.crm_id], |row| {
            Ok((row.get::<_, String>(17)?, shadow_from_row(row)?))
        })?
        .collect()
    }

    /// The pending writes to `target` that may be sent at `now`, oldest first: each is its
    /// field's in-flight write (claimed by its shard), or a record lifecycle operation
    /// (`$…` pseudo fields, which have no shadow row), and not waiting on its own backoff
    /// (`not_before`).
    pub fn sendable_outbox(
        &self,
        target: Side,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let columns = outbox_columns_of("o");
        let sql = format!(
            "SELECT {columns} FROM outbox o
             LEFT JOIN shadow s ON s.pairing = o.pairing AND s.crm_id = o.crm_id
                  AND s.field = o.field
             WHERE o.target = ?1 AND o.state = 'pending'
               AND (s.in_flight_outbox_id = o.id OR substr(o.field, 1, 1) = '$')
               AND (o.not_before IS NULL OR o.not_before <= ?3)
             ORDER BY o.id LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        stmt.query_and_then(params![target.as_str(), limit, ts(now)], outbox_from_row)?
            .collect()
    }

    /// Pending writes queued by resolutions that no shard has claimed yet, oldest first.
    pub fn unclaimed_outbox(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        let columns = outbox_columns_of("o");
        let sql = format!(
            "SELECT {columns} FROM outbox o
             LEFT JOIN shadow s ON s.pairing = o.pairing AND s.crm_id = o.crm_id
                  AND s.field = o.field
             WHERE o.state = 'pending' AND substr(o.field, 1, 1) != '$'
               AND (s.in_flight_outbox_id IS NULL OR s.in_flight_outbox_id != o.id)
             ORDER BY o.id LIMIT ?1"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        stmt.query_and_then(params![limit], outbox_from_row)?
            .collect()
    }

    /// Whether `key` (a field or a `$…` lifecycle operation) has a queued or sent write, other
    /// than `except` when given: a resolution queues one per side, and the second must go
    /// before the field is decided again; an item being created is not yet missing.
    pub fn open_write(&self, key: &FieldKey, except: Option<i64>) -> Result<bool, StoreError> {
        let found: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT id FROM outbox WHERE pairing = ?1 AND crm_id = ?2 AND field = ?3
                   AND state IN ('pending', 'in_flight') AND id IS NOT ?4 LIMIT 1",
            )?
            .query_row(
                params![key.record.pairing, key.record.crm_id, key.field, except],
                |row| row.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        Ok(found.is_some())
    }

    /// Marks writes as handed to a sink (`pending` → `in_flight`).
    pub fn mark_outbox_sent(&mut self, ids: &[i64], at: DateTime<Utc>) -> Result<(), StoreError> {
        self.ensure_writable()?;
        let _turn = super::take_turn(&self.write_gate);
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE outbox SET state = 'in_flight', updated_at = ?2
                 WHERE id = ?1 AND state = 'pending'",
            )?;
            let at = ts(at);
            for id in ids {
                stmt.execute(params![id, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// After a restart, writes that were sent but never answered are sent again: the
    /// remote may or may not have applied them, and writing a value twice is harmless.
    pub fn requeue_sent_outbox(&mut self, at: DateTime<Utc>) -> Result<usize, StoreError> {
        self.ensure_writable()?;
        let _turn = super::take_turn(&self.write_gate);
        Ok(self.conn.execute(
            "UPDATE outbox SET state = 'pending', updated_at = ?1 WHERE state = 'in_flight'",
            [ts(at)],
        )?)
    }

    /// The checkpoints of a source split over shards (`<source>#<n>`), or stored whole.
    pub fn checkpoints_of(&self, source: &str) -> Result<Vec<(String, Position)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT source, position FROM checkpoints
             WHERE source = ?1 OR (substr(source, 1, length(?1) + 1) = ?1 || '#')",
        )?;
        checkpoint_rows(&mut stmt, [source])
    }

    /// Whether the same exception (kind, record, field and message) exists, only open ones
    /// with `open_only`: a source that reports the same bad value at every poll raises it
    /// once.
    pub fn exception_exists(
        &self,
        kind: ExceptionKind,
        pairing: &str,
        crm_id: &str,
        field: Option<&str>,
        message: &str,
        open_only: bool,
    ) -> Result<bool, StoreError> {
        let found: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM exceptions
                 WHERE (status = 'open' OR NOT ?6) AND kind = ?1 AND pairing = ?2
                   AND crm_id = ?3 AND field IS ?4 AND message = ?5",
            )?
            .query_row(
                params![kind.as_str(), pairing, crm_id, field, message, open_only],
                |row| row.get(0),
            )?;
        Ok(found > 0)
    }

    /// The open exceptions of the field `key` of one of `kinds`, with when each was raised.
    pub fn open_field_exceptions(
        &self,
        key: &FieldKey,
        kinds: &[ExceptionKind],
    ) -> Result<Vec<(i64, DateTime<Utc>)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, kind, created_at FROM exceptions
             WHERE crm_id = ?1 AND field = ?2 AND pairing = ?3 AND status = 'open'
             ORDER BY id",
        )?;
        let rows = stmt.query_map(
            params![key.record.crm_id, key.field, key.record.pairing],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, created_at) = row?;
            if kinds.iter().any(|k| k.as_str() == kind) {
                out.push((
                    id,
                    super::codec::parse_ts("exceptions", "created_at", created_at)?,
                ));
            }
        }
        Ok(out)
    }

    /// Writes queued or sent and not yet answered.
    pub fn open_outbox_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM outbox
             WHERE target IN ('crm', 'anaplan') AND state IN ('pending', 'in_flight')",
            [],
            |row| row.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether the store has never recorded anything from a source: the engine's cue for
    /// the initial reconciliation.
    pub fn has_checkpoints(&self) -> Result<bool, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM checkpoints", [], |row| row.get(0))?;
        Ok(n > 0)
    }
}

/// The `(source, position)` rows a checkpoint query selects, positions parsed.
pub(super) fn checkpoint_rows(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<(String, Position)>, StoreError> {
    let rows = stmt.query_map(params, |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, raw) = row?;
        let position = serde_json::from_str(&raw).map_err(|_| {
            super::codec::corrupt("checkpoints", "position", raw, "a position (JSON)")
        })?;
        out.push((name, position));
    }
    Ok(out)
}
