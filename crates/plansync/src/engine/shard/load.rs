//! What a round loads before it decides a record: its stored fields (the shadow), the first
//! run's staged Anaplan values, whether it is mapped, and the record's context for `when`
//! conditions.

use super::*;

impl Round<'_> {
    /// Loads the record's shadow rows into `fields` (once a round); says whether it has any.
    pub(super) fn load_record(
        &mut self,
        pairing: &Pairing,
        record: &RecordKey,
    ) -> Result<bool, StoreError> {
        if let Some(loaded) = self.loaded.get(record) {
            return Ok(loaded.stored);
        }
        let rows = self.store.shadow_record(record)?;
        self.loaded.insert(
            record.clone(),
            Loaded {
                stored: !rows.is_empty(),
                staging_read: false,
            },
        );
        let stored = !rows.is_empty();
        for (field, state) in rows {
            let key = FieldKey {
                record: record.clone(),
                field: field.clone(),
            };
            if self.fields.contains_key(&key) {
                continue;
            }
            let kind = pairing.field(&field).map_or(state.kind, |r| r.kind);
            let flight = match state.in_flight {
                Some(id) => self.store.outbox(id)?,
                None => None,
            };
            self.fields
                .insert(key, Working::from_stored(state, kind, flight));
        }
        Ok(stored)
    }

    /// Takes the first run's staged Anaplan values of `record` (a record with no shadow
    /// rows) as its fields' Anaplan side, to decide its CRM values against. The fields are
    /// stored at the end of the round, so the staged item counts as claimed from then on.
    pub(super) fn claim_staged(
        &mut self,
        pairing: &Pairing,
        record: &RecordKey,
    ) -> Result<(), StoreError> {
        match self.loaded.get_mut(record) {
            Some(loaded) if !loaded.stored && !loaded.staging_read => loaded.staging_read = true,
            _ => return Ok(()),
        }
        let Some(item) = self.store.staged_item(record)? else {
            return Ok(());
        };
        for (field, _, value) in item.fields {
            // A field no longer mapped, or a value that no longer fits its rule's kind, is
            // unknown (as for a stored shadow row): the next poll reads it again.
            let Some(rule) = pairing.field(&field) else {
                continue;
            };
            let Ok(value) = value.to_kind(rule.kind) else {
                continue;
            };
            let key = FieldKey {
                record: record.clone(),
                field,
            };
            if self.fields.contains_key(&key) {
                continue;
            }
            let mut w = Working::new(rule.kind);
            w.set_seen(
                Side::Anaplan,
                Observed {
                    value,
                    at: item.at,
                    source: Source::Reconcile,
                },
            );
            self.fields.insert(key, w);
        }
        Ok(())
    }

    /// Whether any field of `record` is being worked on this round.
    pub(super) fn has_working(&self, pairing: &Pairing, record: &RecordKey) -> bool {
        pairing.fields.iter().any(|rule| {
            self.fields.contains_key(&FieldKey {
                record: record.clone(),
                field: rule.crm.clone(),
            })
        })
    }

    pub(super) fn working(&mut self, key: &FieldKey, kind: ValueKind) -> &mut Working {
        self.fields
            .entry(key.clone())
            .or_insert_with(|| Working::new(kind))
    }

    pub(super) fn is_mapped(&mut self, record: &RecordKey) -> Result<bool, StoreError> {
        if let Some(m) = self.mapped.get(record) {
            return Ok(*m);
        }
        let m = self.store.record_map_entry(record)?.is_some();
        self.mapped.insert(record.clone(), m);
        Ok(m)
    }

    /// The record's values and flags for `when` conditions: the CRM values last seen,
    /// overlaid with the change being decided.
    pub(super) fn context(
        &self,
        pairing: &Pairing,
        record: &RecordKey,
        overlay: &[(String, Value)],
    ) -> Context {
        let mut values = BTreeMap::new();
        for rule in &pairing.fields {
            let key = FieldKey {
                record: record.clone(),
                field: rule.crm.clone(),
            };
            if let Some(seen) = self.fields.get(&key).and_then(|w| w.seen_crm.as_ref()) {
                values.insert(rule.crm.clone(), seen.value.clone());
            }
        }
        if let Some(Some((_, extra))) = self.contexts.get(record) {
            for (field, value) in extra {
                values.insert(field.clone(), value.clone());
            }
        }
        for (field, value) in overlay {
            values.insert(field.clone(), value.clone());
        }
        Context {
            record: values,
            flags: self.flags.get(record).cloned().unwrap_or_default(),
        }
    }

    /// Loads the record's stored `extra_crm_fields` (once a round; only for a pairing that
    /// has some), so conditions see them as last seen, not only in the change that carries
    /// them.
    pub(super) fn load_context(
        &mut self,
        pairing: &Pairing,
        record: &RecordKey,
    ) -> Result<(), StoreError> {
        if pairing.extra_crm_fields.is_empty() || self.contexts.contains_key(record) {
            return Ok(());
        }
        let stored = self.store.crm_context(record)?;
        self.contexts.insert(record.clone(), stored);
        Ok(())
    }

    /// Takes the `extra_crm_fields` a CRM change carries into the record's context (stored
    /// with the round), unless the change is older than what the context holds.
    pub(super) fn record_context(&mut self, pairing: &Pairing, change: &Change) {
        let extra: Vec<(String, Value)> = change
            .fields
            .iter()
            .filter(|fc| pairing.extra_crm_fields.contains(&fc.field))
            .map(|fc| (fc.field.clone(), context_value(&fc.value)))
            .collect();
        if extra.is_empty() {
            return;
        }
        let entry = self.contexts.entry(change.record.clone()).or_insert(None);
        if entry
            .as_ref()
            .is_some_and(|(at, _)| change.committed_at < *at)
        {
            return;
        }
        let (at, fields) = entry.get_or_insert_with(|| (change.committed_at, BTreeMap::new()));
        *at = change.committed_at;
        fields.extend(extra);
        let (at, fields) = (*at, fields.clone());
        self.batch
            .set_crm_context(change.record.clone(), at, fields);
    }
}
