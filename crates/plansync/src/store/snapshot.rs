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

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::model::{Source, ValueKind};
    use crate::store::{Batch, FieldKey, Observed, ShadowUpsert};

    fn upsert(crm_id: &str, field: &str, kind: ValueKind, anaplan: Option<&str>) -> ShadowUpsert {
        let at = Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap();
        let observed = |raw: &str| Observed {
            value: Value::from_text(kind, raw).unwrap(),
            at,
            source: Source::Poll,
        };
        ShadowUpsert {
            key: FieldKey::new("opportunity", crm_id, field),
            kind,
            base: None,
            seen_crm: Some(observed("1")),
            seen_anaplan: anaplan.map(observed),
            in_flight: None,
            held: None,
            last_ack: None,
        }
    }

    #[test]
    fn seen_values_of_one_pairing_in_their_stored_kind() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("plansync.db")).unwrap();
        let mut batch = Batch::new(Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap());
        let n2 = ValueKind::Number { scale: 2 };
        batch.upsert_shadow(upsert("A", "Amount", n2, Some("12.5")));
        batch.upsert_shadow(upsert("A", "StageName", ValueKind::Picklist, Some("")));
        // Seen only in the CRM: not part of the Anaplan snapshot.
        batch.upsert_shadow(upsert(
            "A",
            "Probability",
            ValueKind::Number { scale: 0 },
            None,
        ));
        batch.upsert_shadow(upsert("B", "Amount", n2, None));
        let mut other = upsert("C", "Amount", n2, Some("3"));
        other.key.record.pairing = "territory".into();
        batch.upsert_shadow(other);
        store.commit(&batch).unwrap();

        let seen = store.anaplan_seen("opportunity").unwrap();
        assert_eq!(
            seen.len(),
            1,
            "B was never seen in Anaplan, C is another pairing"
        );
        let a = &seen["A"];
        assert_eq!(a.len(), 2);
        assert_eq!(a["Amount"], Value::from_text(n2, "12.50").unwrap());
        assert_eq!(a["StageName"], Value::Null);
        assert!(store.anaplan_seen("nobody").unwrap().is_empty());
    }
}
