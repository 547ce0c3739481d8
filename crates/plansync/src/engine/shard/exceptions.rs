//! Raising exceptions: a field's or a record's, a notice, a refused lifecycle write, and the
//! check that the same one is not raised twice. Every exception of a round goes through
//! [`Round::raise`], which records, counts and logs it.

use super::*;

impl Round<'_> {
    /// Raises an exception: the one place that adds it to the round's batch, counts it in the
    /// round's summary and emits `exception_recorded` (WARN while it waits for a person, INFO
    /// when it is on record as handled).
    pub(super) fn raise(&mut self, exception: NewException) -> ExceptionRef {
        self.summary.exceptions += 1;
        let field = exception.field.as_ref().map_or("", |f| f.name.as_str());
        let record = exception.crm_id.as_deref().unwrap_or("");
        let kind = exception.kind.as_str();
        if exception.status == ExceptionStatus::Open {
            tracing::warn!(target: "plansync::engine", event = "exception_recorded", kind, pairing = %exception.pairing, record, field, message = %exception.message);
        } else {
            tracing::info!(target: "plansync::engine", event = "exception_recorded", kind, status = %exception.status.as_str(), pairing = %exception.pairing, record, field, message = %exception.message);
        }
        self.batch.add_exception(exception)
    }

    pub(super) fn problem(
        &mut self,
        record: &RecordKey,
        field: Option<&str>,
        kind: ExceptionKind,
        message: String,
    ) -> Result<(), StoreError> {
        let rules = self.rules;
        let pairing = rules.pairing(&record.pairing);
        match (
            pairing,
            field.and_then(|f| pairing.and_then(|p| p.field(f))),
        ) {
            (Some(pairing), Some(rule)) => {
                self.load_record(pairing, record)?;
                self.field_exception(pairing, rule, record, kind, message)
            }
            (pairing, _) => {
                let object = pairing.map_or(record.pairing.clone(), |p| p.crm_object.clone());
                self.record_exception(record, &object, pairing, kind, message)
            }
        }
    }

    /// Whether this exception was raised already (this round, or in the store: while open,
    /// or ever with `open_only` false); if not, it is noted as raised now.
    pub(super) fn already_raised(
        &mut self,
        kind: ExceptionKind,
        record: &RecordKey,
        field: Option<&str>,
        message: &str,
        open_only: bool,
    ) -> Result<bool, StoreError> {
        let once = (
            kind,
            record.clone(),
            field.map(str::to_string),
            message.to_string(),
        );
        if self.raised.contains(&once)
            || self.store.exception_exists(
                kind,
                &record.pairing,
                &record.crm_id,
                field,
                message,
                open_only,
            )?
        {
            return Ok(true);
        }
        self.raised.insert(once);
        Ok(false)
    }

    /// An exception about one field's value, raised once while the same one is open.
    pub(super) fn field_exception(
        &mut self,
        pairing: &Pairing,
        rule: &FieldRule,
        record: &RecordKey,
        kind: ExceptionKind,
        message: String,
    ) -> Result<(), StoreError> {
        if self.already_raised(kind, record, Some(&rule.crm), &message, true)? {
            return Ok(());
        }
        let key = FieldKey {
            record: record.clone(),
            field: rule.crm.clone(),
        };
        let field = self.working(&key, rule.kind).exception_field(&rule.crm);
        self.raise(NewException {
            kind,
            status: ExceptionStatus::Open,
            pairing: pairing.name.clone(),
            object: pairing.crm_object.clone(),
            crm_id: Some(record.crm_id.clone()),
            field: Some(field),
            rule_id: Some(rule.id.clone()),
            rule_hash: Some(pairing.hash.clone()),
            message,
            at: self.now,
        });
        Ok(())
    }

    /// An exception about a record as a whole, raised once while the same one is open.
    pub(super) fn record_exception(
        &mut self,
        record: &RecordKey,
        object: &str,
        pairing: Option<&Pairing>,
        kind: ExceptionKind,
        message: String,
    ) -> Result<(), StoreError> {
        if self.already_raised(kind, record, None, &message, true)? {
            return Ok(());
        }
        self.lifecycle_exception(record, object, pairing, kind, message);
        Ok(())
    }

    /// A handled event, on record once (whatever became of an earlier copy).
    pub(super) fn notice(
        &mut self,
        record: &RecordKey,
        kind: ExceptionKind,
        message: String,
    ) -> Result<(), StoreError> {
        if self.already_raised(kind, record, None, &message, false)? {
            return Ok(());
        }
        let rules = self.rules;
        let pairing = rules.pairing(&record.pairing);
        let object = pairing.map_or(record.pairing.clone(), |p| p.crm_object.clone());
        self.raise(NewException {
            kind,
            status: ExceptionStatus::AutoResolved,
            pairing: record.pairing.clone(),
            object,
            crm_id: Some(record.crm_id.clone()),
            field: None,
            rule_id: None,
            rule_hash: pairing.map(|p| p.hash.clone()),
            message,
            at: self.now,
        });
        Ok(())
    }

    pub(super) fn lifecycle_exception(
        &mut self,
        record: &RecordKey,
        object: &str,
        pairing: Option<&Pairing>,
        kind: ExceptionKind,
        message: String,
    ) -> ExceptionRef {
        self.raise(NewException {
            kind,
            status: ExceptionStatus::Open,
            pairing: record.pairing.clone(),
            object: object.to_string(),
            crm_id: Some(record.crm_id.clone()),
            field: None,
            rule_id: None,
            rule_hash: pairing.map(|p| p.hash.clone()),
            message,
            at: self.now,
        })
    }

    /// A person's change left both sides showing the same value: the field's open ownership
    /// violations, failed writes and validation problems are over, and close as converged,
    /// with both values, as a held conflict does. Not on the echo of our own write (the
    /// stream says so), nor when the value is that of our write made after the exception
    /// (a revert landing undid the edit the exception records, which a reviewer still has
    /// to see; an Anaplan poll cannot tell whose a value is).
    pub(super) fn close_converged(
        &mut self,
        key: &FieldKey,
        rule: &FieldRule,
        obs: &Obs,
    ) -> Result<(), StoreError> {
        const CONVERGING: [ExceptionKind; 3] = [
            ExceptionKind::OwnershipViolation,
            ExceptionKind::WriteFailed,
            ExceptionKind::Validation,
        ];
        if obs.ours {
            return Ok(());
        }
        let Some(w) = self.fields.get(key) else {
            return Ok(());
        };
        let (Some(crm), Some(anaplan)) = (&w.seen_crm, &w.seen_anaplan) else {
            return Ok(());
        };
        if !rule.same(&crm.value, &anaplan.value) {
            return Ok(());
        }
        let (crm_value, anaplan_value) = (crm.value.clone(), anaplan.value.clone());
        let ours = w
            .last_ack
            .as_ref()
            .filter(|a| a.to == obs.side && rule.same(&a.value, &obs.value))
            .map(|a| a.at);
        for (id, raised) in self.store.open_field_exceptions(key, &CONVERGING)? {
            if ours.is_some_and(|acked| acked >= raised) {
                continue;
            }
            tracing::info!(target: "plansync::engine", event = "exception_converged", exception = id, field = %key, "both sides agree again: the exception is closed as converged");
            self.batch.update_exception(ExceptionUpdate {
                id: ExceptionRef::stored(id),
                crm_value: crm_value.clone(),
                anaplan_value: anaplan_value.clone(),
                status: ExceptionStatus::Converged,
            });
        }
        Ok(())
    }
}
