//! How long changes took to land, measured from the store's own records: for each write to
//! Anaplan that a streamed CRM change caused and Anaplan acknowledged, the time from the CRM
//! commit (the audit row of the decision) to the acknowledgement (the outbox row turning
//! `done`).

use super::{Store, StoreError};

impl Store {
    /// Milliseconds from CRM commit to Anaplan acknowledgement, one per acknowledged write
    /// decided on a streamed change, in no particular order.
    pub fn stream_write_latencies_ms(&self) -> Result<Vec<f64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT (julianday(o.updated_at) - julianday(
                        (SELECT a.at FROM audit a
                         WHERE a.pairing = o.pairing AND a.crm_id = o.crm_id
                           AND a.field = o.field AND a.side = 'crm' AND a.source = 'stream'
                           AND a.decision = 'write' AND a.at <= o.created_at
                         ORDER BY a.id DESC LIMIT 1))) * 86400000.0
             FROM outbox o
             WHERE o.target = 'anaplan' AND o.state = 'done' AND o.reason = 'decision'
               AND substr(o.field, 1, 1) != '$'",
        )?;
        let rows = stmt.query_map([], |row| row.get::<_, Option<f64>>(0))?;
        let mut out = Vec::new();
        for row in rows {
            if let Some(ms) = row? {
                out.push(ms.max(0.0));
            }
        }
        Ok(out)
    }
}
