//! A person's resolution of an exception: recorded on the exception and, in the same
//! transaction, turned into outbox writes so the chosen value flows through the normal write
//! path to every side that does not hold it yet.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::codec::{parse_value, ts};
use super::exceptions::load_exception;
use super::rows::{ExceptionRecord, OutboxReason, OutboxRecord, ResolutionKind};
use super::{Store, StoreError, load_outbox};
use crate::model::{ExceptionStatus, Side, Value};

/// What the person decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolutionHow {
    /// Make both sides hold the CRM's value.
    TakeCrm,
    /// Make both sides hold Anaplan's value.
    TakeAnaplan,
    /// Make both sides hold this value, given as text and normalised with the field's kind.
    SetValue(String),
    /// Close the exception and write nothing (any kind, including those about no field).
    Dismiss,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub how: ResolutionHow,
    /// Who resolved it (recorded as `resolved_by`).
    pub by: String,
    pub note: Option<String>,
    /// When (recorded as `resolved_at`); passed in so the caller owns the clock.
    pub at: DateTime<Utc>,
}

/// What a resolution stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOutcome {
    /// The exception as it now stands.
    pub exception: ExceptionRecord,
    /// The writes queued to carry the chosen value (empty for a dismissal, or when both sides
    /// already hold it).
    pub queued: Vec<OutboxRecord>,
}

impl Store {
    /// Resolves an open exception. Fails, changing nothing, if it does not exist, is not open
    /// (resolving twice is an error), or the value does not fit the field's kind.
    pub fn resolve(
        &mut self,
        id: i64,
        resolution: &Resolution,
    ) -> Result<ResolveOutcome, StoreError> {
        self.ensure_writable()?;
        if resolution.by.trim().is_empty() {
            return Err(StoreError::MissingResolver);
        }
        let _turn = super::take_turn(&self.write_gate);
        // IMMEDIATE: the open-status check and the update happen under the write lock, so two
        // reviewers resolving the same exception cannot both succeed.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exception = load_exception(&tx, id)?.ok_or(StoreError::ExceptionNotFound { id })?;
        if exception.status != ExceptionStatus::Open {
            return Err(not_open(&exception));
        }

        // Decide on what the sides show now, not when the exception was raised: the field may
        // have moved on since (only held conflicts keep their exception's values current).
        let mut exception = exception;
        if let (Some(field), Some(crm_id)) = (exception.field.as_mut(), &exception.crm_id) {
            let current = tx
                .prepare_cached(
                    "SELECT seen_crm_value, seen_crm_at IS NOT NULL, seen_anaplan_value,
                            seen_anaplan_at IS NOT NULL,
                            in_flight_outbox_id
                     FROM shadow WHERE pairing = ?1 AND crm_id = ?2 AND field = ?3",
                )?
                .query_row(params![exception.pairing, crm_id, field.name], |row| {
                    Ok((
                        row.get::<_, Option<String>>(0)?,
                        row.get::<_, bool>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, bool>(3)?,
                        row.get::<_, Option<i64>>(4)?,
                    ))
                })
                .optional()?;
            if let Some((crm, crm_seen, anaplan, anaplan_seen, in_flight)) = current {
                // One writer per field: never queue a resolution beside a write in flight.
                if let Some(outbox) = in_flight {
                    return Err(StoreError::WriteInFlight {
                        id,
                        field: format!("{}.{}", exception.object, field.name),
                        outbox,
                    });
                }
                if crm_seen {
                    field.crm_value = parse_value("shadow", "seen_crm_value", field.kind, crm)?;
                }
                if anaplan_seen {
                    field.anaplan_value =
                        parse_value("shadow", "seen_anaplan_value", field.kind, anaplan)?;
                }
            }
        }
        let (recorded, chosen) = choose(&exception, &resolution.how)?;
        let at = ts(resolution.at);
        tx.prepare_cached(
            "UPDATE exceptions SET status = 'resolved', resolution = ?2, resolution_value = ?3,
                 resolved_by = ?4, resolved_at = ?5, note = ?6, updated_at = ?5
             WHERE id = ?1 AND status = 'open'",
        )?
        .execute(params![
            id,
            recorded.as_str(),
            chosen.as_ref().and_then(Value::to_text),
            resolution.by,
            at,
            resolution.note,
        ])?;

        let mut queued_ids = Vec::new();
        if let (Some(value), Some(field), Some(crm_id)) =
            (&chosen, &exception.field, &exception.crm_id)
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO outbox (pairing, crm_id, field, target, value, value_kind, reason,
                     exception_id, state, attempts, created_at, updated_at, replaced_value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, ?9, ?9, ?10)",
            )?;
            for side in Side::BOTH {
                if field.value(side) == value {
                    continue;
                }
                insert.execute(params![
                    exception.pairing,
                    crm_id,
                    field.name,
                    side.as_str(),
                    value.to_text(),
                    field.kind.tag(),
                    OutboxReason::Resolution.as_str(),
                    id,
                    at,
                    field.value(side).to_text(),
                ])?;
                queued_ids.push(tx.last_insert_rowid());
            }
        }

        // A field is held only by an open exception: release it, so the engine decides the
        // field's next observation normally (after these writes are acknowledged).
        tx.prepare_cached(
            "UPDATE shadow SET held_exception_id = NULL WHERE held_exception_id = ?1",
        )?
        .execute([id])?;

        let exception = load_exception(&tx, id)?.ok_or(StoreError::ExceptionNotFound { id })?;
        let queued = queued_ids
            .into_iter()
            .map(|oid| load_outbox(&tx, oid)?.ok_or(StoreError::UnknownOutbox { id: oid }))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(ResolveOutcome { exception, queued })
    }
}

/// The recorded resolution and the value both sides should end up with (`None`: write
/// nothing).
fn choose(
    exception: &ExceptionRecord,
    how: &ResolutionHow,
) -> Result<(ResolutionKind, Option<Value>), StoreError> {
    if *how == ResolutionHow::Dismiss {
        return Ok((ResolutionKind::Dismiss, None));
    }
    let field = match (&exception.field, &exception.crm_id) {
        (Some(field), Some(_)) => field,
        _ => {
            return Err(StoreError::NoField {
                id: exception.id,
                kind: exception.kind,
            });
        }
    };
    Ok(match how {
        ResolutionHow::TakeCrm => (ResolutionKind::TakeCrm, Some(field.crm_value.clone())),
        ResolutionHow::TakeAnaplan => (
            ResolutionKind::TakeAnaplan,
            Some(field.anaplan_value.clone()),
        ),
        ResolutionHow::SetValue(raw) => {
            let value =
                Value::from_text(field.kind, raw).map_err(|problem| StoreError::BadValue {
                    raw: raw.clone(),
                    kind: field.kind.tag(),
                    field: format!("{}.{}", exception.object, field.name),
                    problem,
                })?;
            (ResolutionKind::SetValue, Some(value))
        }
        ResolutionHow::Dismiss => (ResolutionKind::Dismiss, None),
    })
}

fn not_open(exception: &ExceptionRecord) -> StoreError {
    let detail = match (&exception.resolved_by, exception.resolved_at) {
        (Some(by), Some(at)) => format!(" (resolved by {by} at {})", ts(at)),
        (None, Some(at)) => format!(" (since {})", ts(at)),
        _ => String::new(),
    };
    StoreError::NotOpen {
        id: exception.id,
        status: exception.status,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExceptionKind, ValueKind};
    use crate::store::ExceptionField;

    fn exception(field: Option<ExceptionField>) -> ExceptionRecord {
        let at = DateTime::UNIX_EPOCH;
        ExceptionRecord {
            id: 7,
            kind: ExceptionKind::Conflict,
            status: ExceptionStatus::Open,
            pairing: "opportunity".into(),
            object: "Opportunity".into(),
            crm_id: Some("006A".into()),
            field,
            rule_id: None,
            rule_hash: None,
            message: "m".into(),
            created_at: at,
            updated_at: at,
            resolved_at: None,
            resolved_by: None,
            resolution: None,
            resolution_value: None,
            note: None,
        }
    }

    #[test]
    fn set_value_is_normalised_with_the_fields_kind() {
        let kind = ValueKind::Number { scale: 2 };
        let e = exception(Some(ExceptionField {
            name: "Amount".into(),
            kind,
            crm_value: Value::Null,
            anaplan_value: Value::Null,
            base_value: Value::Null,
        }));
        let (recorded, value) = choose(&e, &ResolutionHow::SetValue("12.5".into())).unwrap();
        assert_eq!(recorded, ResolutionKind::SetValue);
        assert_eq!(value.unwrap().to_text().unwrap(), "12.50");
        let err = choose(&e, &ResolutionHow::SetValue("twelve".into())).unwrap_err();
        assert!(err.to_string().contains("number:2"), "{err}");
        assert!(err.to_string().contains("Opportunity.Amount"), "{err}");
    }

    #[test]
    fn only_dismiss_fits_an_exception_without_a_field() {
        let e = exception(None);
        assert!(matches!(
            choose(&e, &ResolutionHow::TakeCrm),
            Err(StoreError::NoField { id: 7, .. })
        ));
        assert_eq!(
            choose(&e, &ResolutionHow::Dismiss).unwrap(),
            (ResolutionKind::Dismiss, None)
        );
    }
}
