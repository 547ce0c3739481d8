//! How changes fared, measured from the store's own records: for each write to Anaplan that a
//! CRM change caused and Anaplan acknowledged, the time from the CRM commit (the audit row of
//! the decision) to the acknowledgement (the outbox row turning `done`); and how many field
//! changes each source brought, by the decision taken.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::codec::parse_ts;
use super::{Store, StoreError, parse_side, parse_source};
use crate::model::{Side, Source};

/// One acknowledged Anaplan write decided on a CRM change.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteLatency {
    /// The CRM commit of the change.
    pub committed_at: DateTime<Utc>,
    /// How the change arrived: `Stream` or `Poll`.
    pub source: Source,
    /// From the commit to Anaplan's acknowledgement (0 when the clocks put it before).
    pub ms: f64,
}

/// How many field changes one source brought from one side and what was decided about them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionCount {
    pub side: Side,
    pub source: Source,
    /// The decision's name, as the audit stores it (`write`, `echo`, `hold`, …).
    pub decision: String,
    pub count: u64,
}

impl Store {
    /// Every acknowledged Anaplan write decided on a streamed or polled CRM change, in no
    /// particular order.
    pub fn crm_write_latencies(&self) -> Result<Vec<WriteLatency>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.updated_at, a.at, a.source FROM outbox o
             JOIN audit a ON a.id = (
                 SELECT a2.id FROM audit a2
                 WHERE a2.pairing = o.pairing AND a2.crm_id = o.crm_id
                   AND a2.field = o.field AND a2.side = 'crm'
                   AND a2.source IN ('stream', 'poll')
                   AND a2.decision = 'write' AND a2.at <= o.created_at
                 ORDER BY a2.id DESC LIMIT 1)
             WHERE o.target = 'anaplan' AND o.state = 'done' AND o.reason = 'decision'
               AND substr(o.field, 1, 1) != '$'",
        )?;
        stmt.query_and_then([], |row| {
            let acked = parse_ts("outbox", "updated_at", row.get(0)?)?;
            let committed_at = parse_ts("audit", "at", row.get(1)?)?;
            let ms = (acked - committed_at)
                .num_microseconds()
                .map_or(0.0, |us| us as f64 / 1_000.0);
            Ok(WriteLatency {
                committed_at,
                source: parse_source("audit", "source", row.get(2)?)?,
                ms: ms.max(0.0),
            })
        })?
        .collect()
    }

    /// Milliseconds from CRM commit to Anaplan acknowledgement, one per acknowledged write
    /// decided on a streamed change, in no particular order.
    pub fn stream_write_latencies_ms(&self) -> Result<Vec<f64>, StoreError> {
        Ok(self
            .crm_write_latencies()?
            .into_iter()
            .filter(|l| l.source == Source::Stream)
            .map(|l| l.ms)
            .collect())
    }

    /// The audit's decisions, counted by side, source and decision. The first run's fields
    /// that already agreed have no audit row each (the metric `reconcile.agreed` counts them).
    pub fn decision_counts(&self) -> Result<Vec<DecisionCount>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT side, source, decision, count(*) FROM audit
             GROUP BY side, source, decision ORDER BY side, source, count(*) DESC, decision",
        )?;
        stmt.query_and_then([], |row| {
            Ok(DecisionCount {
                side: parse_side("audit", "side", row.get(0)?)?,
                source: parse_source("audit", "source", row.get(1)?)?,
                decision: row.get(2)?,
                count: row.get::<_, i64>(3)?.max(0) as u64,
            })
        })?
        .collect()
    }
}
