//! What comes back: a sink's answer for a write (acknowledged, refused, retry, stale), a
//! person's queued write claimed for its field, and the Anaplan item ids the sink learnt.

use super::*;

impl Round<'_> {
    /// A sink's answer for one write: the outbox row's new state, then (for a field's write)
    /// the field's working state, then the observations that waited for the write.
    pub(super) fn ack(&mut self, outbox_id: i64, outcome: WriteOutcome) -> Result<(), StoreError> {
        let Some(row) = self.store.outbox(outbox_id)? else {
            tracing::warn!(target: "plansync::engine", event = "unknown_write_answer", outbox_id, "an answer for an unknown write");
            return Ok(());
        };
        if matches!(row.state, OutboxState::Done | OutboxState::Failed) {
            return Ok(());
        }
        self.summary.acks += 1;
        let id = OutboxRef::stored(outbox_id);
        let outcome = match outcome {
            WriteOutcome::Unreachable { message } => {
                // Says nothing about this write: it waits, uncounted, with its side.
                self.batch.update_outbox(OutboxUpdate {
                    id,
                    state: OutboxState::Pending,
                    add_attempts: 0,
                    last_error: Some(message),
                    result_exception: None,
                    not_before: None,
                });
                return Ok(());
            }
            WriteOutcome::Retry { message } => match self.retry_or_give_up(id, &row, message) {
                Some(given_up) => given_up,
                None => return Ok(()),
            },
            other => other,
        };
        if let WriteOutcome::Acked { .. } = &outcome {
            self.batch.update_outbox(OutboxUpdate {
                id,
                state: OutboxState::Done,
                add_attempts: 1,
                last_error: None,
                result_exception: None,
                not_before: None,
            });
        }
        // A refused or stale write is stored below, with the exception it ends in.
        tracing::debug!(
            target: "plansync::engine",
            event = "write_acked",
            outbox_id,
            field = %row.key,
            target_side = %row.target,
            ok = matches!(outcome, WriteOutcome::Acked { .. }),
        );
        if lifecycle::is_lifecycle(&row.key.field) {
            self.lifecycle_answer(id, &row, &outcome);
            return Ok(());
        }
        let pre = self.field_answer(id, outbox_id, &row, &outcome)?;
        self.decide_what_waited(id, outbox_id, &row, &outcome, &pre)
    }

    /// A write answered "retry": sent again after its own backoff, or, past the retry budget
    /// (attempts or age), given up: the refusal it becomes is returned, to end as a
    /// `write_failed` exception with the last error.
    fn retry_or_give_up(
        &mut self,
        id: OutboxRef,
        row: &crate::store::OutboxRecord,
        message: String,
    ) -> Option<WriteOutcome> {
        let attempts = row.attempts.saturating_add(1);
        let age = (self.now - row.created_at).to_std().unwrap_or_default();
        if self.retry.gives_up(attempts, age) {
            tracing::warn!(target: "plansync::engine", event = "write_given_up", outbox_id = row.id, field = %row.key, attempts, message = %message, "a write kept failing; it ends as a write_failed exception");
            let age = crate::config::duration::format_duration(std::time::Duration::from_secs(
                age.as_secs(),
            ));
            return Some(WriteOutcome::Rejected {
                message: format!("gave up after {attempts} attempts in {age}: {message}"),
            });
        }
        let wait = self.retry.backoff.wait(attempts);
        tracing::info!(
            target: "plansync::engine",
            event = "retry",
            outbox_id = row.id,
            field = %row.key,
            attempts,
            wait_ms = wait.as_millis() as u64,
            message = %message,
        );
        let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero());
        self.batch.update_outbox(OutboxUpdate {
            id,
            state: OutboxState::Pending,
            add_attempts: 1,
            last_error: Some(message),
            result_exception: None,
            not_before: Some(self.now + wait),
        });
        None
    }

    /// A lifecycle write's answer: a refusal is a record's `write_failed` exception.
    fn lifecycle_answer(
        &mut self,
        id: OutboxRef,
        row: &crate::store::OutboxRecord,
        outcome: &WriteOutcome,
    ) {
        let rules = self.rules;
        let pairing = rules.pairing(&row.key.record.pairing);
        if let WriteOutcome::Rejected { message } = outcome {
            let object = pairing.map_or(row.key.record.pairing.clone(), |p| p.crm_object.clone());
            let message = format!(
                "{} of {} in {} failed: {message}",
                row.key.field, row.key.record.crm_id, row.target
            );
            let exception = self.lifecycle_exception(
                &row.key.record,
                &object,
                pairing,
                ExceptionKind::WriteFailed,
                message.clone(),
            );
            self.batch.update_outbox(OutboxUpdate {
                id,
                state: OutboxState::Failed,
                add_attempts: 1,
                last_error: Some(message),
                result_exception: Some(exception),
                not_before: None,
            });
        }
        if let WriteOutcome::Stale { current } = outcome {
            self.store_stale(id, row, current, None);
        }
    }

    /// A field's write answered: the field's working state as it was before (the caller
    /// decides what waited against it), and after: an acknowledged write is the new base and
    /// what the target shows; a refused one is a `write_failed` exception.
    fn field_answer(
        &mut self,
        id: OutboxRef,
        outbox_id: i64,
        row: &crate::store::OutboxRecord,
        outcome: &WriteOutcome,
    ) -> Result<Working, StoreError> {
        let rules = self.rules;
        let pairing = rules.pairing(&row.key.record.pairing);
        let field_rule = pairing.and_then(|p| p.field(&row.key.field));
        let same = |a: &Value, b: &Value| field_rule.map_or(a == b, |r| r.same(a, b));
        if let Some(pairing) = pairing {
            self.load_record(pairing, &row.key.record)?;
        }
        let target = row.target;
        let w = self.working(&row.key, row.kind);
        let pre = w.clone();
        if w.in_flight
            .as_ref()
            .is_some_and(|f| f.id == Some(outbox_id))
        {
            w.in_flight = None;
        }
        w.dirty = true;
        match outcome {
            WriteOutcome::Acked { at } => {
                // The echo, when it came first, dates the commit exactly.
                let seen = match pre.seen(target) {
                    Some(s) if same(&s.value, &row.value) && s.source != Source::Write => s.clone(),
                    _ => Observed {
                        value: row.value.clone(),
                        at: *at,
                        source: Source::Write,
                    },
                };
                w.base = Some(Observed {
                    source: Source::Write,
                    ..seen.clone()
                });
                w.last_ack = Some(AckedWrite {
                    to: target,
                    value: row.value.clone(),
                    at: seen.at,
                    replaced: Some(row.replaced.clone()),
                });
                w.set_seen(target, seen);
            }
            WriteOutcome::Rejected { message } => {
                let field = w.exception_field(&row.key.field);
                let object =
                    pairing.map_or(row.key.record.pairing.clone(), |p| p.crm_object.clone());
                let value = row.value.to_text().unwrap_or_else(|| "null".into());
                let exception = self.raise(NewException {
                    kind: ExceptionKind::WriteFailed,
                    status: ExceptionStatus::Open,
                    pairing: row.key.record.pairing.clone(),
                    object,
                    crm_id: Some(row.key.record.crm_id.clone()),
                    field: Some(field),
                    rule_id: field_rule.map(|r| r.id.clone()),
                    rule_hash: pairing.map(|p| p.hash.clone()),
                    message: format!("writing {value} to {target} failed: {message}"),
                    at: self.now,
                });
                self.batch.update_outbox(OutboxUpdate {
                    id,
                    state: OutboxState::Failed,
                    add_attempts: 1,
                    last_error: Some(message.clone()),
                    result_exception: Some(exception),
                    not_before: None,
                });
            }
            WriteOutcome::Retry { .. }
            | WriteOutcome::Unreachable { .. }
            | WriteOutcome::Stale { .. } => {}
        }
        Ok(pre)
    }

    /// Observations that waited for this write are decided now, against the new state: a
    /// newer value on the side the write came from, and an edit on the written side other
    /// than the value the write meant to replace. A second write queued for the field (a
    /// resolution writes both sides) goes first. `pre` is the field as it was before the
    /// answer.
    fn decide_what_waited(
        &mut self,
        id: OutboxRef,
        outbox_id: i64,
        row: &crate::store::OutboxRecord,
        outcome: &WriteOutcome,
        pre: &Working,
    ) -> Result<(), StoreError> {
        let rules = self.rules;
        let pairing = rules.pairing(&row.key.record.pairing);
        let target = row.target;
        let (Some(pairing), Some(rule)) = (pairing, pairing.and_then(|p| p.field(&row.key.field)))
        else {
            if let WriteOutcome::Stale { current } = outcome {
                self.store_stale(id, row, current, None);
            }
            return Ok(());
        };
        let same = |a: &Value, b: &Value| rule.same(a, b);
        if self.store.open_write(&row.key, Some(outbox_id))? {
            if let WriteOutcome::Stale { current } = outcome {
                self.store_stale(id, row, current, None);
            }
            return Ok(());
        }
        // The target had moved on: its new value is an edit the engine has not decided yet.
        // It goes first, so a concurrent edit is held as a conflict rather than overwritten.
        // Decided even when that value was seen already: a poll that found the value we were
        // writing took it for our write landing (an echo), which it was not.
        if let WriteOutcome::Stale { current } = outcome {
            self.load_context(pairing, &row.key.record)?;
            let ctx = self.context(pairing, &row.key.record, &[]);
            let obs = Obs {
                side: target,
                value: current.clone(),
                at: self.now,
                ours: false,
                source: Source::Poll,
            };
            let mark = self.batch.exception_mark();
            self.observe(pairing, rule, &row.key.record, obs, &ctx, true)?;
            // What deciding the newer value led to is what became of the write: held with
            // the field's exception, or superseded when no person is needed.
            let held = self
                .batch
                .open_exception_since(mark, &row.key)
                .or_else(|| self.working(&row.key, row.kind).held);
            self.store_stale(id, row, current, held);
        }
        let source_side = target.other();
        let mut pending = Vec::new();
        if let Some(s) = pre.seen(source_side)
            && !same(&s.value, &row.value)
        {
            pending.push((source_side, s.clone()));
        }
        if let Some(s) = pre.seen(target)
            && !same(&s.value, &row.value)
            && !same(&s.value, &row.replaced)
        {
            pending.push((target, s.clone()));
        }
        if pending.is_empty() {
            return Ok(());
        }
        self.load_context(pairing, &row.key.record)?;
        let ctx = self.context(pairing, &row.key.record, &[]);
        for (side, seen) in pending {
            let obs = Obs {
                side,
                value: seen.value,
                at: seen.at,
                ours: false,
                source: seen.source,
            };
            self.observe(pairing, rule, &row.key.record, obs, &ctx, true)?;
        }
        Ok(())
    }

    /// A resolution's write becomes the field's write in flight, if the field is free.
    pub(super) fn claim(&mut self, outbox_id: i64) -> Result<(), StoreError> {
        let Some(row) = self.store.outbox(outbox_id)? else {
            return Ok(());
        };
        if row.state != OutboxState::Pending {
            return Ok(());
        }
        let rules = self.rules;
        if let Some(pairing) = rules.pairing(&row.key.record.pairing) {
            self.load_record(pairing, &row.key.record)?;
        }
        let w = self.working(&row.key, row.kind);
        if w.in_flight.is_none() {
            w.in_flight = Some(Flight {
                outbox: OutboxRef::stored(outbox_id),
                id: Some(outbox_id),
                to: row.target,
                value: row.value,
            });
            w.dirty = true;
        }
        Ok(())
    }

    pub(super) fn item_ids(&mut self, items: Vec<(RecordKey, String)>) -> Result<(), StoreError> {
        for (record, item_id) in items {
            let entry = self.store.record_map_entry(&record)?;
            if entry
                .as_ref()
                .is_some_and(|e| e.anaplan_item_id.as_deref() == Some(item_id.as_str()))
            {
                continue;
            }
            self.batch.upsert_record(RecordMapUpsert {
                anaplan_code: record.crm_id.clone(),
                anaplan_item_id: Some(item_id),
                state: entry.map_or(RecordState::Active, |e| e.state),
                record: record.clone(),
            });
            self.mapped.insert(record, true);
        }
        Ok(())
    }

    /// Stores what became of a write refused because the target had moved on.
    pub(super) fn store_stale(
        &mut self,
        id: OutboxRef,
        row: &crate::store::OutboxRecord,
        current: &Value,
        held: Option<ExceptionRef>,
    ) {
        let now_shows = current.to_text().unwrap_or_else(|| "null".into());
        self.batch.update_outbox(OutboxUpdate {
            id,
            state: if held.is_some() {
                OutboxState::Held
            } else {
                OutboxState::Superseded
            },
            add_attempts: 1,
            last_error: Some(format!(
                "not written: {} had changed to {now_shows} since it was last read",
                row.target
            )),
            result_exception: held,
            not_before: None,
        });
    }
}
