//! What the engine remembers between runs (tables `engine_state` and `anaplan_flags`, v6):
//! whether the first run completed, what a first run in progress waits for, when each poller
//! last completed a run, the Anaplan flags last seen, and the re-keying of per-shard
//! checkpoints when the shard count changes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::codec::ts;
use super::{Store, StoreError};
use crate::model::{Position, RecordKey, Value};

const FIRST_RUN_COMPLETED: &str = "first_run.completed_at";
const FIRST_RUN_PHASE: &str = "first_run.phase";
/// Set by `plansync demo` in the store it creates: the only kind of store it may replace.
const DEMO_STORE: &str = "demo.created_at";

/// An item's boolean line items, by name.
pub type Flags = BTreeMap<String, bool>;

/// A record's fields read only for conditions, by name.
pub type CrmContext = BTreeMap<String, Value>;

fn last_run_name(source: &str) -> String {
    format!("poll.last_run:{source}")
}

impl Store {
    pub(super) fn state_value(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM engine_state WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub(super) fn state_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self.state_value(name)? {
            None => Ok(None),
            Some(raw) => DateTime::parse_from_rfc3339(&raw)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| {
                    super::codec::corrupt("engine_state", "value", raw, "an RFC 3339 time")
                }),
        }
    }

    fn set_state_value(
        &mut self,
        name: &str,
        value: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.ensure_writable()?;
        let _turn = super::take_turn(&self.write_gate);
        self.conn.execute(
            "INSERT INTO engine_state (name, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![name, value, ts(at)],
        )?;
        Ok(())
    }

    /// Marks this store as one `plansync demo` created, so the next demo may replace it.
    pub fn mark_demo_store(&mut self, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.set_state_value(DEMO_STORE, &ts(at), at)
    }

    /// Whether the plansync store at `path` was created by `plansync demo`, read without
    /// migrating or writing it, whatever its schema version. `Ok(false)` for a plansync store
    /// without the mark; an error for a file that is not a plansync store at all.
    pub fn is_demo_store(path: &std::path::Path) -> Result<bool, StoreError> {
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags)?;
        let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
        if app != super::APPLICATION_ID {
            return Err(StoreError::NotPlansync {
                path: path.to_path_buf(),
                reason: "no plansync application id".into(),
            });
        }
        let has_state: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'engine_state')",
            [],
            |r| r.get(0),
        )?;
        if !has_state {
            return Ok(false);
        }
        let mark: Option<String> = conn
            .query_row(
                "SELECT value FROM engine_state WHERE name = ?1",
                [DEMO_STORE],
                |r| r.get(0),
            )
            .optional()?;
        Ok(mark.is_some())
    }

    /// When the first run was committed complete; `None` while no first run has completed
    /// (the engine then runs it, however many checkpoints a failed attempt left).
    pub fn first_run_completed(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.state_time(FIRST_RUN_COMPLETED)
    }

    /// Records the first run as complete, and clears its phase, in one transaction. Called
    /// only after every value it read was decided and committed.
    pub fn complete_first_run(&mut self, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.ensure_writable()?;
        let _turn = super::take_turn(&self.write_gate);
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO engine_state (name, value, updated_at) VALUES (?1, ?2, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![FIRST_RUN_COMPLETED, ts(at)],
        )?;
        tx.execute(
            "DELETE FROM engine_state WHERE name = ?1",
            [FIRST_RUN_PHASE],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// What a first run in progress is doing or waiting for, for `plansync status`.
    pub fn set_first_run_phase(
        &mut self,
        phase: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.set_state_value(FIRST_RUN_PHASE, phase, at)
    }

    pub fn first_run_phase(&self) -> Result<Option<String>, StoreError> {
        self.state_value(FIRST_RUN_PHASE)
    }

    /// When the poller named `source` last completed a run.
    pub fn last_poll(&self, source: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.state_time(&last_run_name(source))
    }

    pub fn set_last_poll(&mut self, source: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.set_state_value(&last_run_name(source), &ts(at), at)
    }

    /// Every item's flags last seen with one set.
    pub fn anaplan_flags(&self) -> Result<Vec<(RecordKey, Flags)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT pairing, crm_id, flags FROM anaplan_flags")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (pairing, crm_id, raw) = row?;
            let flags = serde_json::from_str(&raw).map_err(|_| {
                super::codec::corrupt("anaplan_flags", "flags", raw, "a JSON object of booleans")
            })?;
            out.push((RecordKey { pairing, crm_id }, flags));
        }
        Ok(out)
    }

    /// The record's `extra_crm_fields` as last seen, and the commit time they are from.
    pub fn crm_context(
        &self,
        record: &RecordKey,
    ) -> Result<Option<(DateTime<Utc>, CrmContext)>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT at, fields FROM crm_context WHERE pairing = ?1 AND crm_id = ?2",
            )?
            .query_row(params![record.pairing, record.crm_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((at, raw)) = row else {
            return Ok(None);
        };
        let at = super::codec::parse_ts("crm_context", "at", at)?;
        let text: BTreeMap<String, Option<String>> = serde_json::from_str(&raw).map_err(|_| {
            super::codec::corrupt("crm_context", "fields", raw, "a JSON object of texts")
        })?;
        let fields = text
            .into_iter()
            .map(|(k, v)| (k, v.map_or(Value::Null, Value::Text)))
            .collect();
        Ok(Some((at, fields)))
    }

    /// Every checkpoint row, by name.
    pub fn all_checkpoints(&self) -> Result<Vec<(String, Position)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT source, position FROM checkpoints ORDER BY source")?;
        super::queue::checkpoint_rows(&mut stmt, [])
    }

    /// Replaces every checkpoint row with `rows`, in one transaction (the engine re-keys the
    /// per-shard rows when the shard count changed).
    pub fn replace_checkpoints(
        &mut self,
        rows: &[(String, Position)],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.ensure_writable()?;
        let _turn = super::take_turn(&self.write_gate);
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM checkpoints", [])?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO checkpoints (source, position, updated_at) VALUES (?1, ?2, ?3)",
            )?;
            let at = ts(at);
            for (name, position) in rows {
                // `Position` is plain data; serialising it cannot fail.
                let json = serde_json::to_string(position).map_err(|e| {
                    StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
                })?;
                stmt.execute(params![name, json, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Empties the first run's staging: each attempt of a first run reads Anaplan anew, so
    /// what an attempt that failed part-way staged is not taken for a complete read.
    pub fn clear_first_run_staging(&mut self) -> Result<usize, StoreError> {
        self.ensure_writable()?;
        let _turn = super::take_turn(&self.write_gate);
        Ok(self.conn.execute("DELETE FROM first_run_anaplan", [])?)
    }
}
