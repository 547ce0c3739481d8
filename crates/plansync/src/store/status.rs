//! The engine's health as the store shows it, for `plansync status`: how far behind each
//! source is, how many writes wait for each side, the open exceptions and the engine's
//! counters. Read-only, so it works on [`Store::open_read_only`] while the sync runs.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::codec::{corrupt, parse_enum, parse_ts};
use super::rows::OutboxState;
use super::{Store, StoreError, parse_side};
use crate::model::{ExceptionKind, Position, Side};

/// Everything `plansync status` shows, as of `now`.
///
/// JSON (`plansync status --format json`) is this struct through serde; field names:
/// - `now`: the instant the lags and ages are measured from (RFC 3339).
/// - `sources[]`: `source` (the name without a `#<shard>` suffix), `shards` (rows in
///   `checkpoints` for it), `position` (the oldest shard's `model::Position`, tagged by
///   `kind`: `replay`, `watermark`, `poll_run`, `exception`), `updated_at` (when that
///   checkpoint was stored), `lag_seconds`.
/// - `outbox[]`: `target` (`crm`/`anaplan`), `state` (`pending`, `in_flight`, `done`,
///   `failed`, `held`, `superseded`), `count`, for `pending` and `in_flight`
///   `oldest_created_at` and `oldest_age_seconds` (`null` otherwise), and for `failed` and
///   `held` `exception_count` (the distinct exceptions those writes ended in) and
///   `exception_ids` (the lowest few of their ids).
/// - `open_exceptions[]`: `kind`, `count`, `oldest_created_at`, `oldest_age_seconds`.
/// - `metrics[]`: `name`, `value`, `updated_at`.
/// - `first_run`: `completed_at` (RFC 3339, `null` until a first run completed) and `phase`
///   (what a first run in progress does or waits for, in words; `null` otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub now: DateTime<Utc>,
    pub first_run: FirstRunStatus,
    /// By source name.
    pub sources: Vec<SourceStatus>,
    /// By target, then state (pending, in flight, done, failed); only pairs that occur.
    pub outbox: Vec<OutboxDepth>,
    /// By kind; only kinds with open exceptions.
    pub open_exceptions: Vec<OpenExceptions>,
    /// By name.
    pub metrics: Vec<Metric>,
    /// The CDC session, as the engine last recorded it; `None` when no stream ever ran.
    pub stream: Option<super::StreamHealth>,
}

/// Whether the first reconciliation completed, and what one in progress waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirstRunStatus {
    pub completed_at: Option<DateTime<Utc>>,
    pub phase: Option<String>,
}

/// How far one source has been durably consumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    pub source: String,
    /// Checkpoint rows of this source: its shards (`<source>#<n>`), or 1 when not sharded.
    pub shards: u32,
    /// The oldest shard's position: where the source resumes from.
    pub position: Position,
    pub updated_at: DateTime<Utc>,
    /// `now` minus the position's own time (`watermark`, `poll_run`), or minus when the
    /// checkpoint was stored for positions without a time (`replay`, `exception`); for a
    /// poller, at most `now` minus its last completed run (a quiet org's watermark does not
    /// move, yet the poller is current); for a stream channel whose session is alive, `now`
    /// minus its last sign of life. Negative when a remote clock is ahead of ours.
    pub lag_seconds: i64,
    /// A stream channel that is current (its session alive) but has delivered nothing since
    /// this time: quiet, not behind.
    pub quiet_since: Option<DateTime<Utc>>,
}

/// Queued writes to one side in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxDepth {
    pub target: Side,
    pub state: OutboxState,
    pub count: u64,
    /// The oldest row still waiting (`pending`, `in_flight` only).
    pub oldest_created_at: Option<DateTime<Utc>>,
    pub oldest_age_seconds: Option<i64>,
    /// For writes that ended in an exception (`failed`, `held`): how many exceptions, and
    /// the lowest of their ids (at most [`EXCEPTION_IDS_SHOWN`]), for `exceptions show`.
    pub exception_count: u64,
    pub exception_ids: Vec<i64>,
}

/// How many exception ids an outbox line of the status names.
pub const EXCEPTION_IDS_SHOWN: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenExceptions {
    pub kind: ExceptionKind,
    pub count: u64,
    pub oldest_created_at: DateTime<Utc>,
    pub oldest_age_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metric {
    pub name: String,
    pub value: i64,
    pub updated_at: DateTime<Utc>,
}

impl StatusReport {
    /// A metric's value, if the engine stored it.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    pub fn source(&self, name: &str) -> Option<&SourceStatus> {
        self.sources.iter().find(|s| s.source == name)
    }

    /// Pending writes to `target` and the age of the oldest, if any wait.
    pub fn pending(&self, target: Side) -> (u64, Option<i64>) {
        self.outbox
            .iter()
            .find(|d| d.target == target && d.state == OutboxState::Pending)
            .map_or((0, None), |d| (d.count, d.oldest_age_seconds))
    }
}

impl Store {
    /// The status as of `now`. Reads only; a damaged cell is `StoreError::Corrupt`.
    pub fn status(&self, now: DateTime<Utc>) -> Result<StatusReport, StoreError> {
        Ok(StatusReport {
            now,
            first_run: FirstRunStatus {
                completed_at: self.first_run_completed()?,
                phase: self.first_run_phase()?,
            },
            sources: self.source_status(now)?,
            outbox: self.outbox_depth(now)?,
            open_exceptions: self.open_exceptions(now)?,
            metrics: self.metrics()?,
            stream: self.stream_health()?,
        })
    }

    fn source_status(&self, now: DateTime<Utc>) -> Result<Vec<SourceStatus>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT source, position, updated_at FROM checkpoints")?;
        let rows = stmt.query_and_then([], |row| -> Result<_, StoreError> {
            let source: String = row.get(0)?;
            let raw: String = row.get(1)?;
            let position: Position = serde_json::from_str(&raw)
                .map_err(|_| corrupt("checkpoints", "position", raw, "a position (JSON)"))?;
            let updated_at = parse_ts("checkpoints", "updated_at", row.get(2)?)?;
            Ok((source, position, updated_at))
        })?;
        let mut by_source: BTreeMap<String, SourceStatus> = BTreeMap::new();
        for row in rows {
            let (name, position, updated_at) = row?;
            let base = base_name(&name).to_string();
            let candidate = SourceStatus {
                lag_seconds: seconds(now - as_of(&position, updated_at)),
                quiet_since: None,
                source: base.clone(),
                shards: 1,
                position,
                updated_at,
            };
            match by_source.get_mut(&base) {
                None => {
                    by_source.insert(base, candidate);
                }
                Some(current) => {
                    let shards = current.shards + 1;
                    if older(&candidate, current) {
                        *current = candidate;
                    }
                    current.shards = shards;
                }
            }
        }
        // A poller that completed a run has read everything up to that run, however old the
        // newest change it found (a quiet org's watermark stays put): it is that far behind,
        // not more.
        for status in by_source.values_mut() {
            if let Some(last) = self.last_poll(&status.source)? {
                status.lag_seconds = status.lag_seconds.min(seconds(now - last));
            }
        }
        // A stream channel of a live session has been read up to the session's last sign of
        // life: nothing came since its last event, so it is quiet, not behind. (A session
        // down, or silent past `STREAM_SIGN_OF_LIFE`, leaves the position's own age.)
        if let Some(alive) = self.stream_health()?.and_then(|h| h.live(now)) {
            for status in by_source.values_mut() {
                if status.source.starts_with("cdc:") {
                    status.lag_seconds = status.lag_seconds.min(seconds(now - alive));
                    status.quiet_since = Some(status.updated_at);
                }
            }
        }
        Ok(by_source.into_values().collect())
    }

    fn outbox_depth(&self, now: DateTime<Utc>) -> Result<Vec<OutboxDepth>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT target, state, count(*), min(created_at) FROM outbox GROUP BY target, state",
        )?;
        let mut out = stmt
            .query_and_then([], |row| -> Result<_, StoreError> {
                let target = parse_side("outbox", "target", row.get(0)?)?;
                let state: OutboxState = parse_enum("outbox", "state", row.get(1)?)?;
                let waiting = matches!(state, OutboxState::Pending | OutboxState::InFlight);
                let oldest = if waiting {
                    Some(parse_ts("outbox", "created_at", row.get(3)?)?)
                } else {
                    None
                };
                Ok(OutboxDepth {
                    target,
                    state,
                    count: row.get::<_, i64>(2)?.max(0) as u64,
                    oldest_created_at: oldest,
                    oldest_age_seconds: oldest.map(|at| seconds(now - at)),
                    exception_count: 0,
                    exception_ids: Vec::new(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        // Writes that ended in an exception name it, so a reader sees a held conflict where a
        // bare count of not-written rows would suggest lost writes.
        let mut linked = self.conn.prepare_cached(
            "SELECT count(DISTINCT result_exception_id), (SELECT group_concat(id) FROM (
                 SELECT DISTINCT result_exception_id AS id FROM outbox
                 WHERE target = ?1 AND state = ?2 AND result_exception_id IS NOT NULL
                 ORDER BY id LIMIT ?3))
             FROM outbox WHERE target = ?1 AND state = ?2 AND result_exception_id IS NOT NULL",
        )?;
        for d in &mut out {
            if !matches!(d.state, OutboxState::Failed | OutboxState::Held) {
                continue;
            }
            let (count, ids): (i64, Option<String>) = linked.query_row(
                rusqlite::params![
                    d.target.as_str(),
                    d.state.as_str(),
                    EXCEPTION_IDS_SHOWN as i64
                ],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            d.exception_count = count.max(0) as u64;
            d.exception_ids = ids
                .unwrap_or_default()
                .split(',')
                .filter_map(|id| id.parse().ok())
                .collect();
        }
        let rank = |s: OutboxState| OutboxState::ALL.iter().position(|x| *x == s);
        out.sort_by_key(|d| (d.target.as_str(), rank(d.state)));
        Ok(out)
    }

    fn open_exceptions(&self, now: DateTime<Utc>) -> Result<Vec<OpenExceptions>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT kind, count(*), min(created_at) FROM exceptions WHERE status = 'open'
             GROUP BY kind ORDER BY kind",
        )?;
        stmt.query_and_then([], |row| {
            let oldest = parse_ts("exceptions", "created_at", row.get(2)?)?;
            Ok(OpenExceptions {
                kind: parse_enum("exceptions", "kind", row.get(0)?)?,
                count: row.get::<_, i64>(1)?.max(0) as u64,
                oldest_created_at: oldest,
                oldest_age_seconds: seconds(now - oldest),
            })
        })?
        .collect()
    }

    /// One engine counter as last stored, without building the whole status report.
    pub fn metric(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT value FROM metrics WHERE name = ?1")?;
        let mut rows = stmt.query([name])?;
        Ok(match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        })
    }

    fn metrics(&self) -> Result<Vec<Metric>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, value, updated_at FROM metrics ORDER BY name")?;
        stmt.query_and_then([], |row| {
            Ok(Metric {
                name: row.get(0)?,
                value: row.get(1)?,
                updated_at: parse_ts("metrics", "updated_at", row.get(2)?)?,
            })
        })?
        .collect()
    }
}

/// `crm.opportunity#3` → `crm.opportunity`; a `#` not followed by a shard number is part of
/// the name.
fn base_name(source: &str) -> &str {
    match source.rsplit_once('#') {
        Some((base, shard))
            if !base.is_empty()
                && !shard.is_empty()
                && shard.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => source,
    }
}

/// The time a position stands for: its own for polls, when it was stored otherwise (a replay
/// id or an exception id carries no time).
fn as_of(position: &Position, updated_at: DateTime<Utc>) -> DateTime<Utc> {
    match position {
        Position::Watermark { at, .. } | Position::PollRun { at } => *at,
        Position::Replay { .. } | Position::Exception { .. } => updated_at,
    }
}

/// Whether `a` is behind `b`: compared by the positions themselves when they are of one kind
/// (numeric replay ids, watermark time then id, exception ids), by their times otherwise.
fn older(a: &SourceStatus, b: &SourceStatus) -> bool {
    let by_time = || as_of(&a.position, a.updated_at).cmp(&as_of(&b.position, b.updated_at));
    let order = match (&a.position, &b.position) {
        (Position::Watermark { at: ta, id: ia }, Position::Watermark { at: tb, id: ib }) => {
            (ta, ia).cmp(&(tb, ib))
        }
        (Position::Replay { replay_id: ra, .. }, Position::Replay { replay_id: rb, .. }) => {
            match (ra.parse::<i64>(), rb.parse::<i64>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => by_time(),
            }
        }
        (Position::Exception { id: x }, Position::Exception { id: y }) => x.cmp(y),
        _ => by_time(),
    };
    order == Ordering::Less
}

fn seconds(d: chrono::Duration) -> i64 {
    d.num_seconds()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::model::{ExceptionStatus, Value, ValueKind};
    use crate::store::rows::OutboxReason;
    use crate::store::{Batch, FieldKey, NewException, NewOutbox, OutboxRef, OutboxUpdate};

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 2, h, m, 0).unwrap()
    }

    fn write(n: usize, target: Side) -> NewOutbox {
        NewOutbox {
            key: FieldKey::new("opportunity", format!("006{n:015}"), "Amount"),
            target,
            kind: ValueKind::Number { scale: 2 },
            value: Value::Null,
            reason: OutboxReason::Decision,
            exception: None,
            replaced: Value::Null,
        }
    }

    #[test]
    fn base_names_drop_only_numeric_shard_suffixes() {
        assert_eq!(base_name("crm.opportunity#3"), "crm.opportunity");
        assert_eq!(base_name("crm.opportunity"), "crm.opportunity");
        assert_eq!(base_name("odd#name"), "odd#name");
        assert_eq!(base_name("#1"), "#1");
        assert_eq!(base_name("x#"), "x#");
    }

    #[test]
    fn status_of_a_populated_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plansync.db");
        let mut store = Store::open(&path).unwrap();

        let mut first = Batch::new(t(9, 0));
        // A sharded poller: shard 1 is behind; the replay source stores no time of its own.
        first.set_checkpoint(
            "crm.opportunity#0",
            Position::Watermark {
                at: t(9, 50),
                id: "006B".into(),
            },
        );
        first.set_checkpoint(
            "crm.opportunity#1",
            Position::Watermark {
                at: t(9, 40),
                id: "006A".into(),
            },
        );
        first.set_checkpoint(
            "crm.opportunity#2",
            Position::Watermark {
                at: t(9, 50),
                id: "006A".into(),
            },
        );
        first.set_checkpoint(
            "/data/OpportunityChangeEvent",
            Position::Replay {
                channel: "/data/OpportunityChangeEvent".into(),
                replay_id: "77".into(),
            },
        );
        first.set_checkpoint("anaplan.opportunity", Position::PollRun { at: t(9, 55) });
        let refs: Vec<OutboxRef> = (0..3)
            .map(|n| first.add_outbox(write(n, Side::Anaplan)))
            .collect();
        first.add_outbox(write(9, Side::Crm));
        first.add_exception(NewException {
            kind: ExceptionKind::Conflict,
            status: ExceptionStatus::Open,
            pairing: "opportunity".into(),
            object: "Opportunity".into(),
            crm_id: None,
            field: None,
            rule_id: None,
            rule_hash: None,
            message: "m".into(),
            at: t(8, 0),
        });
        first.set_metric("anaplan.calls", 12);
        let receipt = store.commit(&first).unwrap();

        let mut second = Batch::new(t(9, 30));
        second.update_outbox(OutboxUpdate {
            id: OutboxRef::stored(receipt.outbox_id(refs[0]).unwrap()),
            state: OutboxState::Done,
            add_attempts: 1,
            last_error: None,
            result_exception: None,
            not_before: None,
        });
        second.add_outbox(write(5, Side::Anaplan));
        second.set_metric("anaplan.calls", 15);
        store.commit(&second).unwrap();
        drop(store);

        let store = Store::open_read_only(&path).unwrap();
        let status = store.status(t(10, 0)).unwrap();
        assert_eq!(status.sources.len(), 3, "{:?}", status.sources);
        let opp = status.source("crm.opportunity").unwrap();
        assert_eq!(opp.shards, 3);
        assert_eq!(
            opp.position,
            Position::Watermark {
                at: t(9, 40),
                id: "006A".into()
            }
        );
        assert_eq!(opp.lag_seconds, 20 * 60);
        let cdc = status.source("/data/OpportunityChangeEvent").unwrap();
        assert_eq!(
            (cdc.shards, cdc.lag_seconds),
            (1, 3600),
            "now − stored time"
        );
        assert_eq!(
            status.source("anaplan.opportunity").unwrap().lag_seconds,
            300
        );

        assert_eq!(status.pending(Side::Anaplan), (3, Some(3600)));
        assert_eq!(status.pending(Side::Crm), (1, Some(3600)));
        let done: Vec<_> = status
            .outbox
            .iter()
            .filter(|d| d.state == OutboxState::Done)
            .collect();
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].count, done[0].oldest_age_seconds), (1, None));
        assert_eq!(status.open_exceptions.len(), 1);
        assert_eq!(status.open_exceptions[0].oldest_age_seconds, 2 * 3600);
        assert_eq!(status.metric("anaplan.calls"), Some(15));

        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["sources"][0]["position"]["kind"], "replay");
        assert_eq!(json["outbox"][0]["target"], "anaplan");
        assert_eq!(json["open_exceptions"][0]["kind"], "conflict");
    }

    #[test]
    fn an_empty_store_has_an_empty_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plansync.db");
        drop(Store::open(&path).unwrap());
        let status = Store::open_read_only(&path)
            .unwrap()
            .status(t(10, 0))
            .unwrap();
        assert!(status.sources.is_empty() && status.outbox.is_empty());
        assert!(status.open_exceptions.is_empty() && status.metrics.is_empty());
    }
}
