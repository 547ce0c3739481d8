//! The first run's Anaplan values, staged one row per item (`first_run_anaplan`) until the
//! CRM side of the same record is read and decided against them.
//!
//! Why: the first run reads Anaplan before the CRM, so each item's values must wait for
//! their CRM record. Kept as six shadow rows a record, they were written twice (the CRM pass
//! read them back and rewrote them, larger): that was most of the 1M-record first run. A
//! staged item is one narrow row, read once by the shard that decides the CRM record; the
//! record's shadow rows are then inserted once, complete. Items no CRM record claimed are
//! moved into the shadow at the end ([`Store::unstage_first_run`]), as the Anaplan values
//! seen, which is what the shadow would have held without staging.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::codec::{corrupt, parse_kind, parse_ts, parse_value};
use super::{Batch, FieldKey, NewException, Observed, ShadowUpsert, Store, StoreError};
use crate::model::{ExceptionKind, ExceptionStatus, RecordKey, Source, Value, ValueKind};

/// The Anaplan values of one item, seen by the first run's poll at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedItem {
    pub record: RecordKey,
    pub at: DateTime<Utc>,
    /// CRM field name, the rule's kind, the normalised value.
    pub fields: Vec<(String, ValueKind, Value)>,
}

/// What an Anaplan item no CRM record claimed is reported as, per pairing: an `unmapped`
/// exception naming the item, so orphans are seen in `status` and the review queue (as a
/// poll reports an item planners add later), not only counted in a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unclaimed {
    /// The CRM object and the Anaplan list of the pairing, for the message.
    pub object: String,
    pub list: String,
    pub rule_hash: String,
}

/// What [`Store::unstage_first_run`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unstaged {
    /// Items no CRM record claimed, now in the shadow.
    pub items: usize,
    /// Their fields (shadow rows written).
    pub fields: usize,
    /// Staged items removed in all (claimed or moved).
    pub cleared: usize,
}

/// A staged item's `fields` column: a JSON array of `[field, kind tag, value text or null]`.
pub(crate) fn fields_json(item: &StagedItem) -> String {
    let rows: Vec<(&str, String, Option<String>)> = item
        .fields
        .iter()
        .map(|(field, kind, value)| (field.as_str(), kind.tag(), value.to_text()))
        .collect();
    // Strings and nulls only: serialising them cannot fail.
    serde_json::to_string(&rows).unwrap_or_default()
}

fn parse_fields(raw: String) -> Result<Vec<(String, ValueKind, Value)>, StoreError> {
    let rows: Vec<(String, String, Option<String>)> = serde_json::from_str(&raw).map_err(|_| {
        corrupt(
            "first_run_anaplan",
            "fields",
            raw.clone(),
            "a JSON array of [field, kind, value]",
        )
    })?;
    rows.into_iter()
        .map(|(field, tag, text)| {
            let kind = parse_kind("first_run_anaplan", "fields", tag)?;
            let value = parse_value("first_run_anaplan", "fields", kind, text)?;
            Ok((field, kind, value))
        })
        .collect()
}

fn item_from_row(row: &rusqlite::Row<'_>) -> Result<StagedItem, StoreError> {
    Ok(StagedItem {
        record: RecordKey {
            pairing: row.get(0)?,
            crm_id: row.get(1)?,
        },
        at: parse_ts("first_run_anaplan", "seen_at", row.get(2)?)?,
        fields: parse_fields(row.get(3)?)?,
    })
}

pub(crate) const UPSERT_STAGED: &str = "\
INSERT OR REPLACE INTO first_run_anaplan (pairing, crm_id, seen_at, fields) VALUES (?1, ?2, ?3, ?4)";

impl Store {
    /// The staged Anaplan values of `record`, if the first run staged any.
    pub fn staged_item(&self, record: &RecordKey) -> Result<Option<StagedItem>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT pairing, crm_id, seen_at, fields FROM first_run_anaplan
                 WHERE pairing = ?1 AND crm_id = ?2",
            )?
            .query_row(params![record.pairing, record.crm_id], |row| {
                Ok(item_from_row(row))
            })
            .optional()?
            .transpose()
    }

    /// Ends the first run's staging: items whose record has no shadow rows (no CRM record
    /// claimed them) go into the shadow as the Anaplan values seen, `page` items a
    /// transaction, then the staging table is emptied. Also run at start, for a first run
    /// that stopped halfway. An item whose record has shadow rows was claimed: the shard
    /// that decided its CRM record stored all of its fields.
    pub fn unstage_first_run(
        &mut self,
        now: DateTime<Utc>,
        page: usize,
        unclaimed: &BTreeMap<String, Unclaimed>,
    ) -> Result<Unstaged, StoreError> {
        self.ensure_writable()?;
        let mut done = Unstaged::default();
        let mut after = (String::new(), String::new());
        let limit = i64::try_from(page.max(1)).unwrap_or(i64::MAX);
        loop {
            let mut items = Vec::with_capacity(page);
            let mut scanned = 0;
            {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT f.pairing, f.crm_id, f.seen_at, f.fields,
                            EXISTS (SELECT 1 FROM shadow s
                                    WHERE s.pairing = f.pairing AND s.crm_id = f.crm_id)
                     FROM first_run_anaplan f
                     WHERE (f.pairing, f.crm_id) > (?1, ?2)
                     ORDER BY f.pairing, f.crm_id LIMIT ?3",
                )?;
                let mut rows = stmt.query(params![after.0, after.1, limit])?;
                while let Some(row) = rows.next()? {
                    scanned += 1;
                    after = (row.get(0)?, row.get(1)?);
                    let claimed: bool = row.get(4)?;
                    if !claimed {
                        items.push(item_from_row(row)?);
                    }
                }
            }
            if scanned == 0 {
                break;
            }
            done.cleared += scanned;
            if items.is_empty() {
                continue;
            }
            let mut batch = Batch::new(now);
            for item in items {
                done.items += 1;
                if let Some(u) = unclaimed.get(&item.record.pairing) {
                    batch.add_exception(NewException {
                        kind: ExceptionKind::Unmapped,
                        status: ExceptionStatus::Open,
                        pairing: item.record.pairing.clone(),
                        object: u.object.clone(),
                        crm_id: Some(item.record.crm_id.clone()),
                        field: None,
                        rule_id: None,
                        rule_hash: Some(u.rule_hash.clone()),
                        message: format!(
                            "Anaplan item `{}` of list {} has no CRM {} record: not synced",
                            item.record.crm_id, u.list, u.object
                        ),
                        at: now,
                    });
                }
                for (field, kind, value) in item.fields {
                    done.fields += 1;
                    batch.upsert_shadow(ShadowUpsert {
                        key: FieldKey {
                            record: item.record.clone(),
                            field,
                        },
                        kind,
                        base: None,
                        seen_crm: None,
                        seen_anaplan: Some(Observed {
                            value,
                            at: item.at,
                            source: Source::Reconcile,
                        }),
                        in_flight: None,
                        held: None,
                        last_ack: None,
                    });
                }
            }
            self.commit(&batch)?;
        }
        if done.cleared > 0 {
            let _turn = super::take_turn(&self.write_gate);
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM first_run_anaplan", [])?;
            tx.commit()?;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn fields_round_trip_through_their_json() {
        let item = StagedItem {
            record: RecordKey {
                pairing: "opportunity".into(),
                crm_id: "006A".into(),
            },
            at: Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap(),
            fields: vec![
                (
                    "Amount".into(),
                    ValueKind::Number { scale: 2 },
                    Value::from_text(ValueKind::Number { scale: 2 }, "12.50").unwrap(),
                ),
                ("Name".into(), ValueKind::Text, Value::Null),
            ],
        };
        let json = fields_json(&item);
        assert_eq!(
            json,
            r#"[["Amount","number:2","12.50"],["Name","text",null]]"#
        );
        assert_eq!(parse_fields(json).unwrap(), item.fields);
    }

    #[test]
    fn a_damaged_fields_cell_names_the_table_and_column() {
        let err = parse_fields("[[\"Amount\"]]".into()).unwrap_err();
        assert!(
            err.to_string().contains("first_run_anaplan.fields"),
            "{err}"
        );
        let err = parse_fields(r#"[["Amount","number:2","x"]]"#.into()).unwrap_err();
        assert!(err.to_string().contains("number:2"), "{err}");
    }
}
