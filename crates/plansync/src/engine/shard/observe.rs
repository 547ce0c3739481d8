//! A change, field by field: each observed value decided by `rules::decide` and what the
//! decision causes recorded (the shadow, a write queued, an exception, the audit row).

use super::*;

impl Round<'_> {
    pub(super) fn change(&mut self, change: &Change) -> Result<(), StoreError> {
        self.summary.changes += 1;
        let rules = self.rules;
        let Some(pairing) = rules.pairing(&change.record.pairing) else {
            let message = format!(
                "a change to {} came for pairing `{}`, which no rule file defines",
                change.record.crm_id, change.record.pairing
            );
            return self.record_exception(
                &change.record,
                &change.record.pairing,
                None,
                ExceptionKind::Unmapped,
                message,
            );
        };
        let stored = self.load_record(pairing, &change.record)?;
        // Set when this change made plansync create the record's Anaplan item.
        let mut new_item = false;
        if change.source == Source::Reconcile && change.side == Side::Crm {
            self.claim_staged(pairing, &change.record)?;
        }
        tracing::debug!(
            target: "plansync::engine",
            event = "change_received",
            side = %change.side,
            source = %change.source,
            pairing = %change.record.pairing,
            record = %change.record.crm_id,
            kind = ?change.kind,
            fields = change.fields.len(),
        );
        match (change.side, change.kind) {
            (Side::Crm, ChangeKind::Delete) => return self.crm_delete(pairing, change),
            (Side::Anaplan, ChangeKind::Delete) => return self.anaplan_delete(pairing, change),
            (Side::Crm, ChangeKind::Undelete) => self.crm_undelete(pairing, change)?,
            (Side::Crm, _) => new_item = self.ensure_mapped(pairing, &change.record)?,
            (Side::Anaplan, _) => {}
        }

        let mut values: Vec<(&FieldRule, Value)> = Vec::with_capacity(change.fields.len());
        for fc in &change.fields {
            // A CRM event carries every field the commit touched; only mapped ones sync.
            let Some(rule) = pairing.field(&fc.field) else {
                continue;
            };
            match rule.normalise(change.side, &fc.value) {
                Ok(v) => values.push((rule, v)),
                Err(e) => {
                    let message = format!(
                        "{} from {} for {} ({}): {}",
                        rule.id, change.side, change.record.crm_id, fc.value, e.message
                    );
                    self.field_exception(pairing, rule, &change.record, e.kind, message)?;
                }
            }
        }
        // The first run's Anaplan values of a record with no state yet wait, staged, for
        // its CRM values: nothing can be decided before those are read.
        if change.source == Source::Reconcile
            && change.side == Side::Anaplan
            && !stored
            && (self.staged.contains_key(&change.record)
                || !self.has_working(pairing, &change.record))
        {
            let item = self
                .staged
                .entry(change.record.clone())
                .or_insert_with(|| StagedItem {
                    record: change.record.clone(),
                    at: change.committed_at,
                    fields: Vec::with_capacity(values.len()),
                });
            item.at = change.committed_at;
            for (rule, value) in values {
                item.fields.retain(|(field, _, _)| *field != rule.crm);
                item.fields.push((rule.crm.clone(), rule.kind, value));
            }
            return Ok(());
        }
        let overlay: Vec<(String, Value)> = if change.side == Side::Crm {
            values
                .iter()
                .map(|(r, v)| (r.crm.clone(), v.clone()))
                .collect()
        } else {
            Vec::new()
        };
        self.load_context(pairing, &change.record)?;
        if change.side == Side::Crm {
            self.record_context(pairing, change);
        }
        let ctx = self.context(pairing, &change.record, &overlay);
        let mut unset = Vec::new();
        for (rule, value) in values {
            if new_item && rule.policy.owner == Owner::Anaplan {
                if let Some(field) =
                    self.new_item_field(pairing, rule, &change.record, change, value)
                {
                    unset.push(field);
                }
                continue;
            }
            let obs = Obs {
                side: change.side,
                value,
                at: change.committed_at,
                ours: change.ours,
                source: change.source,
            };
            self.observe(pairing, rule, &change.record, obs, &ctx, false)?;
        }

        if !unset.is_empty() {
            let message = format!(
                "Anaplan item `{}` of list {} was created for this CRM record; Anaplan owns {} and holds no value for {} yet: the CRM keeps its values until a planner sets them (lifecycle new_item = \"hold\")",
                change.record.crm_id,
                pairing.anaplan.list,
                if unset.len() == 1 {
                    "this field"
                } else {
                    "these fields"
                },
                unset.join(", "),
            );
            self.lifecycle_exception(
                &change.record,
                &pairing.crm_object,
                Some(pairing),
                ExceptionKind::Lifecycle,
                message,
            );
        }

        // A planner's new row with no CRM record behind it cannot be synced: say so once
        // (the values are recorded, so the next poll knows the item). The first
        // reconciliation reads Anaplan before the CRM, so it cannot tell yet.
        if change.side == Side::Anaplan
            && change.kind == ChangeKind::Create
            && change.source != Source::Reconcile
            && !self.is_mapped(&change.record)?
        {
            let message = format!(
                "Anaplan item `{}` of list {} has no CRM {} record: not synced",
                change.record.crm_id, pairing.anaplan.list, pairing.crm_object
            );
            self.record_exception(
                &change.record,
                &pairing.crm_object,
                Some(pairing),
                ExceptionKind::Unmapped,
                message,
            )?;
        }
        Ok(())
    }

    /// Decides one observed value of one field and records what follows. `redecide` is set
    /// for an observation stored earlier and decided now (after the write it waited for).
    pub(super) fn observe(
        &mut self,
        pairing: &Pairing,
        rule: &FieldRule,
        record: &RecordKey,
        obs: Obs,
        ctx: &Context,
        redecide: bool,
    ) -> Result<(), StoreError> {
        let key = FieldKey {
            record: record.clone(),
            field: rule.crm.clone(),
        };
        if !redecide && self.already_covered(&key, rule, &obs) {
            return Ok(());
        }
        let w = self.working(&key, rule.kind);
        let observed = Observed {
            value: obs.value.clone(),
            at: obs.at,
            source: obs.source,
        };
        // Anaplan's value of a field whose CRM value is not known yet (the first
        // reconciliation reads Anaplan first): recorded, decided when the CRM side is seen.
        if obs.side == Side::Anaplan
            && w.seen_crm.is_none()
            && w.base.is_none()
            && w.in_flight.is_none()
        {
            w.set_seen(Side::Anaplan, observed);
            return Ok(());
        }

        let decision = decide(
            pairing,
            rule,
            &w.for_decide(),
            &Observation {
                side: obs.side,
                value: obs.value.clone(),
                at: obs.at,
                ours: obs.ours,
            },
            ctx,
        );
        let action = decision.action.name();
        // A held conflict that converges is audited: it closes an exception.
        let first_agreement = obs.source == Source::Reconcile
            && w.base.is_none()
            && w.held.is_none()
            && matches!(decision.action, Action::Converged { .. })
            && decision.exception.is_none();
        *self.summary.decisions.entry(action).or_default() += 1;
        tracing::debug!(
            target: "plansync::engine",
            event = "decision",
            field = %key,
            side = %obs.side,
            action,
            rule = %decision.rule_id,
        );

        let exception_ref = self.decision_exception(pairing, rule, &key, &decision);
        self.apply_decision(&key, rule, &obs, observed, &decision, exception_ref);
        if !first_agreement
            && matches!(
                decision.action,
                Action::Converged { .. } | Action::Unchanged
            )
        {
            self.close_converged(&key, rule, &obs)?;
        }
        if first_agreement {
            // The first reconciliation found both sides already agreeing: the shadow's base
            // (source `reconcile`, with its time) records that, and an audit row per field
            // would double the first run's writes for nothing a reviewer asks about.
            self.summary.agreed += 1;
            return Ok(());
        }
        self.batch.add_audit(NewAudit {
            key,
            at: obs.at,
            side: obs.side,
            source: obs.source,
            kind: rule.kind,
            value: obs.value,
            decision: action.to_string(),
            rule_id: Some(decision.rule_id),
            rule_hash: Some(pairing.hash.clone()),
            exception: exception_ref,
        });
        Ok(())
    }

    /// Whether `obs` tells nothing new: the value already seen on its side (a stream event
    /// and a poll of the same commit, a replay after a restart), or an older CRM commit than
    /// one already seen.
    fn already_covered(&mut self, key: &FieldKey, rule: &FieldRule, obs: &Obs) -> bool {
        let w = self.working(key, rule.kind);
        let Some(seen) = w.seen(obs.side) else {
            return false;
        };
        // The same value again (a stream event and a poll of the same commit, a replay
        // after a restart): nothing new on that side.
        if rule.same(&seen.value, &obs.value) {
            return true;
        }
        // An older CRM commit arriving after a newer one was seen (the stream replaying
        // what the poller already caught): applying it would go back in time. A polled
        // value reflects every commit up to its SystemModstamp, so a streamed event of
        // the same millisecond is covered too (two streamed events of one millisecond
        // are not: the later one is newer). Times of our own acknowledged writes are
        // send times, not commit times, so they do not count here.
        let polled = matches!(seen.source, Source::Poll | Source::Reconcile);
        let covered =
            obs.at < seen.at || (obs.at == seen.at && polled && obs.source == Source::Stream);
        if obs.side == Side::Crm && covered && seen.source != Source::Write {
            tracing::debug!(
                target: "plansync::engine",
                event = "stale_skipped",
                field = %key,
                at = %obs.at,
                seen_at = %seen.at,
            );
            return true;
        }
        false
    }

    /// The exception a decision raises, unless it only updates the held one: the held
    /// conflict's exception then carries the sides' latest values.
    fn decision_exception(
        &mut self,
        pairing: &Pairing,
        rule: &FieldRule,
        key: &FieldKey,
        decision: &Decision,
    ) -> Option<ExceptionRef> {
        let draft = decision.exception.as_ref()?;
        let held = self.fields.get(key).and_then(|w| w.held);
        if matches!(decision.action, Action::Hold) && held.is_some() {
            return None;
        }
        let field = ExceptionField {
            name: rule.crm.clone(),
            kind: rule.kind,
            crm_value: draft.crm.clone().unwrap_or(Value::Null),
            anaplan_value: draft.anaplan.clone().unwrap_or(Value::Null),
            base_value: draft.base.clone().unwrap_or(Value::Null),
        };
        Some(self.raise(NewException {
            kind: draft.kind,
            status: if draft.auto_resolved {
                ExceptionStatus::AutoResolved
            } else {
                ExceptionStatus::Open
            },
            pairing: pairing.name.clone(),
            object: pairing.crm_object.clone(),
            crm_id: Some(key.record.crm_id.clone()),
            field: Some(field),
            rule_id: Some(decision.rule_id.clone()),
            rule_hash: Some(pairing.hash.clone()),
            message: draft.message.clone(),
            at: self.now,
        }))
    }

    /// What a decision does to the field: what its side shows, its base, the held conflict
    /// and the write it queues.
    fn apply_decision(
        &mut self,
        key: &FieldKey,
        rule: &FieldRule,
        obs: &Obs,
        observed: Observed,
        decision: &Decision,
        exception_ref: Option<ExceptionRef>,
    ) {
        let Some(w) = self.fields.get_mut(key) else {
            return;
        };
        match &decision.action {
            // The side shows our write, not the person's value it replaced: that value lives
            // on in the exception.
            Action::Overwritten => {}
            _ => w.set_seen(obs.side, observed),
        }
        match &decision.action {
            Action::Converged { value } => {
                w.base = Some(Observed {
                    value: value.clone(),
                    at: obs.at,
                    source: obs.source,
                });
                if let Some(held) = w.held.take() {
                    let f = w.exception_field(&rule.crm);
                    self.batch.update_exception(ExceptionUpdate {
                        id: held,
                        crm_value: f.crm_value,
                        anaplan_value: f.anaplan_value,
                        status: ExceptionStatus::Converged,
                    });
                }
            }
            Action::Hold => {
                if let Some(held) = w.held {
                    let f = w.exception_field(&rule.crm);
                    self.batch.update_exception(ExceptionUpdate {
                        id: held,
                        crm_value: f.crm_value,
                        anaplan_value: f.anaplan_value,
                        status: ExceptionStatus::Open,
                    });
                } else {
                    w.held = exception_ref;
                }
            }
            Action::Write { to, value } | Action::Revert { to, value } => {
                let reason = if matches!(decision.action, Action::Revert { .. }) {
                    OutboxReason::Revert
                } else {
                    OutboxReason::Decision
                };
                self.queue_write(key, rule, *to, value.clone(), reason, exception_ref);
            }
            _ => {}
        }
    }

    /// Queues a write of `value` to `to` as the field's one write in flight.
    pub(super) fn queue_write(
        &mut self,
        key: &FieldKey,
        rule: &FieldRule,
        to: Side,
        value: Value,
        reason: OutboxReason,
        exception: Option<ExceptionRef>,
    ) {
        let w = self.working(key, rule.kind);
        let replaced = w.seen(to).map_or(Value::Null, |s| s.value.clone());
        let outbox = self.batch.add_outbox(NewOutbox {
            key: key.clone(),
            target: to,
            kind: rule.kind,
            value: value.clone(),
            reason,
            exception,
            replaced,
        });
        let w = self.working(key, rule.kind);
        w.in_flight = Some(Flight {
            outbox,
            id: None,
            to,
            value,
        });
        w.dirty = true;
        self.summary.writes_queued += 1;
    }
}
