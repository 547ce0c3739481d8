//! Bulk reads of the shadow for the pollers: one query per pairing, streamed row by row into
//! a map, because the Anaplan poller diffs whole modules (up to a million cells) and a lookup
//! per field would cost a query per cell.

use std::collections::HashMap;

use rusqlite::params;

use super::codec::{parse_kind, parse_value};
use super::{Store, StoreError};
use crate::model::Value;

/// Per CRM id, per CRM field API name (the shadow's `field` key), the last value seen in
/// Anaplan.
pub type AnaplanSeen = HashMap<String, HashMap<String, Value>>;

impl Store {
    /// Every field of `pairing` with a value seen in Anaplan, in the kind it was stored under
    /// (the caller brings it to the current rule's kind with `Value::to_kind`). Fields never
    /// seen in Anaplan (`seen_anaplan_at` NULL) are absent, so a record only the CRM side has
    /// reported is absent too.
    pub fn anaplan_seen(&self, pairing: &str) -> Result<AnaplanSeen, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT crm_id, field, value_kind, seen_anaplan_value FROM shadow
             WHERE pairing = ?1 AND seen_anaplan_at IS NOT NULL",
        )?;
        let mut rows = stmt.query(params![pairing])?;
        let mut seen = AnaplanSeen::new();
        while let Some(row) = rows.next()? {
            let crm_id: String = row.get(0)?;
            let field: String = row.get(1)?;
            let kind = parse_kind("shadow", "value_kind", row.get(2)?)?;
            let value = parse_value("shadow", "seen_anaplan_value", kind, row.get(3)?)?;
            seen.entry(crm_id).or_default().insert(field, value);
        }
        Ok(seen)
    }
}
