//! The review queries over exceptions: filtered listing, one exception with the history of
//! its field, and summary counts.

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row, params, params_from_iter};

use super::codec::{corrupt, parse_enum, parse_kind, parse_opt_ts, parse_ts, parse_value, ts};
use super::rows::{AuditRecord, ExceptionField, ExceptionRecord, FieldKey};
use super::{Store, StoreError, parse_side, parse_source};
use crate::model::{ExceptionKind, ExceptionStatus};

/// How many audit rows (the most recent) and related exceptions `get` returns for a field.
pub const HISTORY_LIMIT: usize = 200;

/// How many of the oldest open exceptions `stats` returns.
pub const OLDEST_OPEN_LIMIT: usize = 10;

/// Which exceptions to list or count. Every set criterion must hold; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExceptionFilter {
    pub status: Option<ExceptionStatus>,
    pub kind: Option<ExceptionKind>,
    /// The CRM object name, e.g. `Opportunity`.
    pub object: Option<String>,
    /// The CRM field API name.
    pub field: Option<String>,
    /// The CRM record id.
    pub crm_id: Option<String>,
    /// Created at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Created strictly before this instant.
    pub until: Option<DateTime<Utc>>,
    /// At most this many rows (listing only).
    pub limit: Option<usize>,
    /// Skip this many rows first (listing only).
    pub offset: usize,
}

impl ExceptionFilter {
    /// The SQL condition (always valid after `WHERE`) and its parameters.
    fn condition(&self) -> (String, Vec<SqlValue>) {
        let mut terms = vec!["1 = 1".to_string()];
        let mut values = Vec::new();
        let mut term = |sql: &str, value: String| {
            values.push(SqlValue::Text(value));
            terms.push(format!("{sql} ?{}", values.len()));
        };
        if let Some(status) = self.status {
            term("status =", status.as_str().into());
        }
        if let Some(kind) = self.kind {
            term("kind =", kind.as_str().into());
        }
        if let Some(object) = &self.object {
            term("object =", object.clone());
        }
        if let Some(field) = &self.field {
            term("field =", field.clone());
        }
        if let Some(crm_id) = &self.crm_id {
            term("crm_id =", crm_id.clone());
        }
        if let Some(since) = self.since {
            term("created_at >=", ts(since));
        }
        if let Some(until) = self.until {
            term("created_at <", ts(until));
        }
        (terms.join(" AND "), values)
    }
}

/// One exception with its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionDetail {
    pub exception: ExceptionRecord,
    /// The decisions about the same field (same pairing, record and field), oldest first:
    /// the most recent [`HISTORY_LIMIT`]. Empty when the exception is not about a field.
    pub history: Vec<AuditRecord>,
    /// How many decisions about the field there are in all.
    pub history_total: u64,
    /// The other exceptions on the same field, by id (at most [`HISTORY_LIMIT`]).
    pub related: Vec<ExceptionRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusKindCount {
    pub status: ExceptionStatus,
    pub kind: ExceptionKind,
    pub count: u64,
}

/// Open exceptions on one object field (`field` is `None` for those about no field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCount {
    pub object: String,
    pub field: Option<String>,
    pub count: u64,
    pub oldest: DateTime<Utc>,
}

/// Summary counts over the exceptions a filter selects (its limit and offset are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionStats {
    pub total: u64,
    pub open: u64,
    /// Every (status, kind) pair that occurs, ordered by status then kind.
    pub by_status_kind: Vec<StatusKindCount>,
    /// Open exceptions per object and field, most first.
    pub open_by_field: Vec<FieldCount>,
    /// The oldest open exceptions, oldest first (at most [`OLDEST_OPEN_LIMIT`]).
    pub oldest_open: Vec<ExceptionRecord>,
}

pub(crate) const EXCEPTION_COLUMNS: &str = "id, kind, status, pairing, object, crm_id, field, \
     value_kind, crm_value, anaplan_value, base_value, rule_id, rule_hash, message, created_at, \
     updated_at, resolved_at, resolved_by, resolution, resolution_value, note";

pub(crate) fn exception_from_row(row: &Row<'_>) -> Result<ExceptionRecord, StoreError> {
    const T: &str = "exceptions";
    let field_name: Option<String> = row.get(6)?;
    let kind_tag: Option<String> = row.get(7)?;
    let value_kind = kind_tag
        .map(|t| parse_kind(T, "value_kind", t))
        .transpose()?;
    let field = match (field_name, value_kind) {
        (None, _) => None,
        (Some(name), Some(kind)) => Some(ExceptionField {
            name,
            kind,
            crm_value: parse_value(T, "crm_value", kind, row.get(8)?)?,
            anaplan_value: parse_value(T, "anaplan_value", kind, row.get(9)?)?,
            base_value: parse_value(T, "base_value", kind, row.get(10)?)?,
        }),
        (Some(_), None) => {
            return Err(corrupt(T, "value_kind", "NULL".into(), "a value kind tag"));
        }
    };
    let resolution_value = match (value_kind, row.get::<_, Option<String>>(19)?) {
        (Some(kind), raw @ Some(_)) => Some(parse_value(T, "resolution_value", kind, raw)?),
        _ => None,
    };
    Ok(ExceptionRecord {
        id: row.get(0)?,
        kind: parse_enum(T, "kind", row.get(1)?)?,
        status: parse_enum(T, "status", row.get(2)?)?,
        pairing: row.get(3)?,
        object: row.get(4)?,
        crm_id: row.get(5)?,
        field,
        rule_id: row.get(11)?,
        rule_hash: row.get(12)?,
        message: row.get(13)?,
        created_at: parse_ts(T, "created_at", row.get(14)?)?,
        updated_at: parse_ts(T, "updated_at", row.get(15)?)?,
        resolved_at: parse_opt_ts(T, "resolved_at", row.get(16)?)?,
        resolved_by: row.get(17)?,
        resolution: row
            .get::<_, Option<String>>(18)?
            .map(|r| parse_enum(T, "resolution", r))
            .transpose()?,
        resolution_value,
        note: row.get(20)?,
    })
}

fn audit_from_row(row: &Row<'_>) -> Result<AuditRecord, StoreError> {
    const T: &str = "audit";
    let kind = parse_kind(T, "value_kind", row.get(8)?)?;
    Ok(AuditRecord {
        id: row.get(0)?,
        at: parse_ts(T, "at", row.get(1)?)?,
        key: FieldKey::new(
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
        ),
        side: parse_side(T, "side", row.get(5)?)?,
        source: parse_source(T, "source", row.get(6)?)?,
        kind,
        value: parse_value(T, "value", kind, row.get(7)?)?,
        decision: row.get(9)?,
        rule_id: row.get(10)?,
        rule_hash: row.get(11)?,
        exception_id: row.get(12)?,
    })
}

/// A `count(*)` column (rusqlite reads only signed integers; a count is never negative).
fn count_at(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let n: i64 = row.get(index)?;
    Ok(n.unsigned_abs())
}

/// SQLite's LIMIT takes an i64, where -1 means "no limit".
fn sql_limit(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

pub(crate) fn load_exception(
    conn: &Connection,
    id: i64,
) -> Result<Option<ExceptionRecord>, StoreError> {
    let sql = format!("SELECT {EXCEPTION_COLUMNS} FROM exceptions WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    stmt.query_and_then([id], exception_from_row)?
        .next()
        .transpose()
}

impl Store {
    /// The exceptions `filter` selects, by id, after its offset and up to its limit.
    pub fn list_exceptions(
        &self,
        filter: &ExceptionFilter,
    ) -> Result<Vec<ExceptionRecord>, StoreError> {
        let (condition, mut values) = filter.condition();
        let n = values.len();
        let sql = format!(
            "SELECT {EXCEPTION_COLUMNS} FROM exceptions WHERE {condition}
             ORDER BY id LIMIT ?{} OFFSET ?{}",
            n + 1,
            n + 2
        );
        values.push(SqlValue::Integer(sql_limit(filter.limit)));
        values.push(SqlValue::Integer(
            i64::try_from(filter.offset).unwrap_or(i64::MAX),
        ));
        let mut stmt = self.conn.prepare(&sql)?;
        stmt.query_and_then(params_from_iter(values), exception_from_row)?
            .collect()
    }

    /// How many exceptions `filter` selects (its limit and offset are ignored).
    pub fn count_exceptions(&self, filter: &ExceptionFilter) -> Result<u64, StoreError> {
        let (condition, values) = filter.condition();
        let sql = format!("SELECT count(*) FROM exceptions WHERE {condition}");
        Ok(self
            .conn
            .query_row(&sql, params_from_iter(values), |r| count_at(r, 0))?)
    }

    /// One exception.
    pub fn exception(&self, id: i64) -> Result<ExceptionRecord, StoreError> {
        load_exception(&self.conn, id)?.ok_or(StoreError::ExceptionNotFound { id })
    }

    /// One exception with the history of its field and the other exceptions on it, read in
    /// one snapshot.
    pub fn exception_detail(&self, id: i64) -> Result<ExceptionDetail, StoreError> {
        self.snapshot(|| self.exception_detail_now(id))
    }

    /// Counts over the exceptions `filter` selects, read in one snapshot so the totals agree
    /// with each other while an engine writes.
    pub fn exception_stats(&self, filter: &ExceptionFilter) -> Result<ExceptionStats, StoreError> {
        self.snapshot(|| self.exception_stats_now(filter))
    }

    /// Runs several reads in one read transaction (one consistent view of the file).
    fn snapshot<T>(&self, read: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let out = read()?;
        tx.commit()?;
        Ok(out)
    }

    fn exception_detail_now(&self, id: i64) -> Result<ExceptionDetail, StoreError> {
        let exception = self.exception(id)?;
        let (Some(crm_id), Some(field)) = (&exception.crm_id, exception.field_name()) else {
            return Ok(ExceptionDetail {
                exception,
                history: Vec::new(),
                history_total: 0,
                related: Vec::new(),
            });
        };
        let key = params![exception.pairing, crm_id, field];
        let limit = sql_limit(Some(HISTORY_LIMIT));
        let history = self
            .conn
            .prepare_cached(
                "SELECT * FROM (
                     SELECT id, at, pairing, crm_id, field, side, source, value, value_kind,
                            decision, rule_id, rule_hash, exception_id
                     FROM audit WHERE pairing = ?1 AND crm_id = ?2 AND field = ?3
                     ORDER BY id DESC LIMIT ?4)
                 ORDER BY id",
            )?
            .query_and_then(
                params![exception.pairing, crm_id, field, limit],
                audit_from_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        let history_total: u64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM audit WHERE pairing = ?1 AND crm_id = ?2 AND field = ?3",
            )?
            .query_row(key, |r| count_at(r, 0))?;
        let sql = format!(
            "SELECT {EXCEPTION_COLUMNS} FROM exceptions
             WHERE crm_id = ?2 AND field = ?3 AND pairing = ?1 AND id <> ?4
             ORDER BY id LIMIT ?5"
        );
        let related = self
            .conn
            .prepare_cached(&sql)?
            .query_and_then(
                params![exception.pairing, crm_id, field, id, limit],
                exception_from_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ExceptionDetail {
            exception,
            history,
            history_total,
            related,
        })
    }

    fn exception_stats_now(&self, filter: &ExceptionFilter) -> Result<ExceptionStats, StoreError> {
        let (condition, values) = filter.condition();

        let sql = format!(
            "SELECT status, kind, count(*) FROM exceptions WHERE {condition}
             GROUP BY status, kind ORDER BY status, kind"
        );
        let by_status_kind = self
            .conn
            .prepare(&sql)?
            .query_and_then(params_from_iter(values.iter()), |row| {
                Ok(StatusKindCount {
                    status: parse_enum("exceptions", "status", row.get(0)?)?,
                    kind: parse_enum("exceptions", "kind", row.get(1)?)?,
                    count: count_at(row, 2)?,
                })
            })?
            .collect::<Result<Vec<_>, StoreError>>()?;

        let sql = format!(
            "SELECT object, field, count(*) AS n, min(created_at) FROM exceptions
             WHERE {condition} AND status = 'open'
             GROUP BY object, field ORDER BY n DESC, object, field"
        );
        let open_by_field = self
            .conn
            .prepare(&sql)?
            .query_and_then(params_from_iter(values.iter()), |row| {
                Ok(FieldCount {
                    object: row.get(0)?,
                    field: row.get(1)?,
                    count: count_at(row, 2)?,
                    oldest: parse_ts("exceptions", "created_at", row.get(3)?)?,
                })
            })?
            .collect::<Result<Vec<_>, StoreError>>()?;

        let sql = format!(
            "SELECT {EXCEPTION_COLUMNS} FROM exceptions WHERE {condition} AND status = 'open'
             ORDER BY created_at, id LIMIT {OLDEST_OPEN_LIMIT}"
        );
        let oldest_open = self
            .conn
            .prepare(&sql)?
            .query_and_then(params_from_iter(values.iter()), exception_from_row)?
            .collect::<Result<Vec<_>, _>>()?;

        let total = by_status_kind.iter().map(|c| c.count).sum();
        let open = by_status_kind
            .iter()
            .filter(|c| c.status == ExceptionStatus::Open)
            .map(|c| c.count)
            .sum();
        Ok(ExceptionStats {
            total,
            open,
            by_status_kind,
            open_by_field,
            oldest_open,
        })
    }
}
