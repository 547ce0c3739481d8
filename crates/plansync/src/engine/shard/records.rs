//! Records coming and going: a new CRM record's Anaplan item, CRM deletes and undeletes,
//! Anaplan items that vanish (never taken for a delete while plansync is creating them), by
//! the pairing's lifecycle rules.

use super::*;

impl Round<'_> {
    /// A CRM record seen for the first time gets its `record_map` row, and its Anaplan item
    /// is created before any of its cells is written (the Anaplan sink also creates a
    /// missing item itself before writing cells; this covers a record with no value to
    /// write yet).
    pub(super) fn ensure_mapped(
        &mut self,
        pairing: &Pairing,
        record: &RecordKey,
    ) -> Result<bool, StoreError> {
        if self.is_mapped(record)? {
            return Ok(false);
        }
        self.batch.upsert_record(RecordMapUpsert {
            record: record.clone(),
            anaplan_code: record.crm_id.clone(),
            anaplan_item_id: None,
            state: RecordState::Active,
        });
        self.mapped.insert(record.clone(), true);
        let in_anaplan = pairing.fields.iter().any(|r| {
            let key = FieldKey {
                record: record.clone(),
                field: r.crm.clone(),
            };
            self.fields
                .get(&key)
                .is_some_and(|w| w.seen_anaplan.is_some())
        });
        if !in_anaplan {
            self.lifecycle_write(record, lifecycle::ENSURE_ITEM, Side::Anaplan, Value::Null);
            // The item we create has blank cells that no planner chose. Recorded as what
            // Anaplan shows, they are nothing new when a poll reads them, so an Anaplan-owned
            // field keeps the CRM's value until a planner gives it one (which is then decided
            // as the owner's change); the CRM's value meanwhile is refused with an exception,
            // never replaced by the blank (see `decide`: no revert to a blank with no base).
            // Shared and CRM-owned fields are left unseen: their CRM value is written.
            for rule in pairing
                .fields
                .iter()
                .filter(|r| r.policy.owner == Owner::Anaplan)
            {
                let key = FieldKey {
                    record: record.clone(),
                    field: rule.crm.clone(),
                };
                let at = self.now;
                let w = self.working(&key, rule.kind);
                if w.seen_anaplan.is_none() {
                    w.set_seen(
                        Side::Anaplan,
                        Observed {
                            value: Value::Null,
                            at,
                            source: Source::Write,
                        },
                    );
                }
            }
        }
        Ok(!in_anaplan)
    }

    /// The CRM value of an Anaplan-owned field of an item plansync has just created, where
    /// Anaplan has no value to own yet: recorded as the CRM's, then by the pairing's
    /// `new_item`: held (the field's name is returned, for the item's one `lifecycle`
    /// exception) or written into the new item as its starting value. A CRM value that is
    /// itself unset needs neither.
    pub(super) fn new_item_field(
        &mut self,
        pairing: &Pairing,
        rule: &FieldRule,
        record: &RecordKey,
        change: &Change,
        value: Value,
    ) -> Option<String> {
        let key = FieldKey {
            record: record.clone(),
            field: rule.crm.clone(),
        };
        let observed = Observed {
            value: value.clone(),
            at: change.committed_at,
            source: change.source,
        };
        self.working(&key, rule.kind).set_seen(Side::Crm, observed);
        if rule.is_unset(&value) {
            return None;
        }
        let decision = match pairing.lifecycle.new_item {
            NewItem::Hold => "held_new_item",
            NewItem::SeedFromCrm => {
                self.queue_write(
                    &key,
                    rule,
                    Side::Anaplan,
                    value.clone(),
                    OutboxReason::Decision,
                    None,
                );
                "seed"
            }
        };
        *self.summary.decisions.entry(decision).or_default() += 1;
        self.batch.add_audit(NewAudit {
            key,
            at: change.committed_at,
            side: Side::Crm,
            source: change.source,
            kind: rule.kind,
            value,
            decision: decision.to_string(),
            rule_id: Some(rule.id.clone()),
            rule_hash: Some(pairing.hash.clone()),
            exception: None,
        });
        (pairing.lifecycle.new_item == NewItem::Hold).then(|| rule.crm.clone())
    }

    pub(super) fn lifecycle_write(
        &mut self,
        record: &RecordKey,
        op: &str,
        target: Side,
        value: Value,
    ) {
        let kind = match value {
            Value::Bool(_) => ValueKind::Boolean,
            _ => ValueKind::Text,
        };
        self.batch.add_outbox(NewOutbox {
            key: FieldKey {
                record: record.clone(),
                field: op.to_string(),
            },
            target,
            kind,
            value,
            reason: OutboxReason::Decision,
            exception: None,
            replaced: Value::Null,
        });
        self.summary.writes_queued += 1;
    }

    pub(super) fn set_record_state(
        &mut self,
        record: &RecordKey,
        state: RecordState,
    ) -> Result<(), StoreError> {
        let entry = self.store.record_map_entry(record)?;
        self.batch.upsert_record(RecordMapUpsert {
            record: record.clone(),
            anaplan_code: record.crm_id.clone(),
            anaplan_item_id: entry.and_then(|e| e.anaplan_item_id),
            state,
        });
        self.mapped.insert(record.clone(), true);
        Ok(())
    }

    pub(super) fn crm_delete(
        &mut self,
        pairing: &Pairing,
        change: &Change,
    ) -> Result<(), StoreError> {
        let record = &change.record;
        if self
            .store
            .record_map_entry(record)?
            .is_some_and(|e| e.state == RecordState::Deleted)
        {
            return Ok(());
        }
        self.set_record_state(record, RecordState::Deleted)?;
        match pairing.lifecycle.crm_delete {
            CrmDelete::Flag => self.lifecycle_write(
                record,
                lifecycle::DELETED_FLAG,
                Side::Anaplan,
                Value::Bool(true),
            ),
            CrmDelete::DeleteItem => {
                self.lifecycle_write(record, lifecycle::DELETE_ITEM, Side::Anaplan, Value::Null)
            }
            CrmDelete::Ignore => {}
        }
        tracing::info!(
            target: "plansync::engine",
            event = "record_deleted",
            side = "crm",
            record = %record.crm_id,
            rule = ?pairing.lifecycle.crm_delete,
        );
        Ok(())
    }

    pub(super) fn crm_undelete(
        &mut self,
        pairing: &Pairing,
        change: &Change,
    ) -> Result<(), StoreError> {
        let record = &change.record;
        self.set_record_state(record, RecordState::Active)?;
        if pairing.lifecycle.crm_undelete == CrmUndelete::Ignore {
            return Ok(());
        }
        match pairing.lifecycle.crm_delete {
            CrmDelete::Flag => self.lifecycle_write(
                record,
                lifecycle::DELETED_FLAG,
                Side::Anaplan,
                Value::Bool(false),
            ),
            CrmDelete::DeleteItem => self.restore_item(pairing, record),
            CrmDelete::Ignore => {}
        }
        Ok(())
    }

    /// Adds the record's item back and writes the CRM's values into it again.
    pub(super) fn restore_item(&mut self, pairing: &Pairing, record: &RecordKey) {
        self.lifecycle_write(record, lifecycle::ENSURE_ITEM, Side::Anaplan, Value::Null);
        for rule in &pairing.fields {
            let key = FieldKey {
                record: record.clone(),
                field: rule.crm.clone(),
            };
            let Some(w) = self.fields.get_mut(&key) else {
                continue;
            };
            let Some(seen) = w.seen_crm.clone() else {
                continue;
            };
            if w.in_flight.is_some() {
                continue;
            }
            let outbox = self.batch.add_outbox(NewOutbox {
                key: key.clone(),
                target: Side::Anaplan,
                kind: rule.kind,
                value: seen.value.clone(),
                reason: OutboxReason::Decision,
                exception: None,
                replaced: Value::Null,
            });
            w.seen_anaplan = None;
            w.in_flight = Some(Flight {
                outbox,
                id: None,
                to: Side::Anaplan,
                value: seen.value,
            });
            w.dirty = true;
            self.summary.writes_queued += 1;
        }
    }

    /// Whether the record's `$ensure_item` write is queued (in this batch or stored) and not
    /// yet answered.
    pub(super) fn item_being_created(&self, record: &RecordKey) -> Result<bool, StoreError> {
        let key = FieldKey {
            record: record.clone(),
            field: lifecycle::ENSURE_ITEM.to_string(),
        };
        Ok(self.batch.queues_write(&key) || self.store.open_write(&key, None)?)
    }

    pub(super) fn anaplan_delete(
        &mut self,
        pairing: &Pairing,
        change: &Change,
    ) -> Result<(), StoreError> {
        let record = &change.record;
        // An item plansync is still creating is missing from a list read before the create
        // went out: that is no planner's delete. Nothing is forgotten, so a poll after the
        // create is answered reports the item again if it really is gone.
        if self.item_being_created(record)? {
            tracing::debug!(
                target: "plansync::engine",
                event = "delete_ignored",
                pairing = %record.pairing,
                record = %record.crm_id,
                "the item is missing because its creation is not answered yet",
            );
            return Ok(());
        }
        // Forget what Anaplan showed, so the poller stops reporting the item as gone.
        for rule in &pairing.fields {
            let key = FieldKey {
                record: record.clone(),
                field: rule.crm.clone(),
            };
            if let Some(w) = self.fields.get_mut(&key)
                && w.seen_anaplan.is_some()
            {
                w.seen_anaplan = None;
                w.dirty = true;
            }
        }
        let entry = self.store.record_map_entry(record)?;
        if entry
            .as_ref()
            .is_some_and(|e| e.state == RecordState::Deleted)
        {
            // Our own deletion (the CRM record went first) coming back.
            return Ok(());
        }
        match pairing.lifecycle.anaplan_delete {
            AnaplanDelete::Exception => {
                let message = format!(
                    "Anaplan item `{}` was removed from list {}; the CRM {} record is kept \
                     (anaplan_delete = \"exception\"): restore the item or delete the record",
                    record.crm_id, pairing.anaplan.list, pairing.crm_object
                );
                self.record_exception(
                    record,
                    &pairing.crm_object,
                    Some(pairing),
                    ExceptionKind::Lifecycle,
                    message,
                )?;
            }
            AnaplanDelete::Recreate => self.restore_item(pairing, record),
            AnaplanDelete::DeleteRecord => {
                self.set_record_state(record, RecordState::Deleted)?;
                self.lifecycle_write(record, lifecycle::DELETE_RECORD, Side::Crm, Value::Null);
            }
        }
        Ok(())
    }
}
