//! The commit path: applying a transaction's ops to the tables and appending its change events
//! (one per record, merged, or a header-only gap) under the same lock, so event order is commit
//! order.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{CommitCtx, Op, Org, Record, RecordRef, now_ms};
use crate::crm::cdc::{self, Header, StoredEvent};
use crate::crm::ids;
use crate::crm::schema::{Storage, SystemField};
use crate::crm::values::{self, Val};

impl Org {
    pub(super) fn insert(
        &mut self,
        table: usize,
        changes: Vec<(usize, Val)>,
        user: u32,
        at: i64,
    ) -> RecordRef {
        let t = &mut self.tables[table];
        let mut values = vec![Val::Null; t.def.slots].into_boxed_slice();
        let mut owner = user;
        for (fi, v) in changes {
            match t.def.fields.get(fi).map(|f| f.storage) {
                Some(Storage::Slot(i)) => {
                    if let Some(slot) = values.get_mut(i) {
                        *slot = v;
                    }
                }
                Some(Storage::System(SystemField::OwnerId)) => {
                    if let Val::Str(id) = &v
                        && let Some((_, n)) = ids::parse_id(id)
                    {
                        owner = n.saturating_sub(1) as u32;
                    }
                }
                _ => {}
            }
        }
        t.records.push(Record {
            values,
            deleted: false,
            purged: false,
            created: at,
            created_by: user,
            modified: at,
            modified_by: user,
            modstamp: at,
            owner,
        });
        RecordRef {
            table,
            idx: t.records.len() - 1,
        }
    }

    fn commit_clock(&mut self) -> i64 {
        // Non-decreasing, so SystemModstamp order is commit order even if the wall clock steps.
        self.last_commit_ms = self.last_commit_ms.max(now_ms());
        self.commit_number += 1 + fastrand::u64(0..5);
        self.last_commit_ms
    }

    /// Applies a transaction and appends its change events. Returns the ids written, in order.
    pub fn commit(&mut self, ctx: &CommitCtx, ops: Vec<Op>) -> Vec<String> {
        let at = self.commit_clock();
        let tx = transaction_key();
        let user_id = self.user_id(ctx.user);
        let mut ids_out = Vec::with_capacity(ops.len());
        let mut counted = 0usize;
        let mut overflowed: Vec<usize> = Vec::new();
        let mut seq = 0u32;
        for op in ops {
            let (r, change_type, body, changed) = match op {
                Op::Create { table, changes } => {
                    let r = self.insert(table, changes, ctx.user, at);
                    let body = self.full_body(r);
                    (r, "CREATE", body, Vec::new())
                }
                Op::Update { r, changes } => {
                    let (body, changed) = self.apply_update(r, changes, ctx.user, at);
                    (r, "UPDATE", body, changed)
                }
                Op::Delete { r } => {
                    self.touch(r, ctx.user, at, Some(true));
                    (r, "DELETE", Map::new(), Vec::new())
                }
                Op::Undelete { r } => {
                    self.touch(r, ctx.user, at, Some(false));
                    (r, "UNDELETE", self.full_body(r), Vec::new())
                }
            };
            let id = self.id_of(r);
            counted += changed.len().max(1);
            if counted > self.overflow_threshold {
                if !overflowed.contains(&r.table) {
                    overflowed.push(r.table);
                }
            } else {
                seq += 1;
                self.push_event(
                    r.table,
                    vec![id.clone()],
                    change_type,
                    &ctx.origin,
                    &tx,
                    seq,
                    at,
                    &user_id,
                    changed,
                    body,
                );
            }
            ids_out.push(id);
        }
        for table in overflowed {
            seq += 1;
            self.push_event(
                table,
                Vec::new(),
                "GAP_OVERFLOW",
                &ctx.origin,
                &tx,
                seq,
                at,
                &user_id,
                Vec::new(),
                Map::new(),
            );
        }
        self.events.expire(now_ms());
        ids_out
    }

    /// Applies the same update to several records of one object and emits one merged event
    /// carrying all their ids.
    pub fn commit_merged(&mut self, ctx: &CommitCtx, ops: Vec<Op>) -> Vec<String> {
        let at = self.commit_clock();
        let tx = transaction_key();
        let user_id = self.user_id(ctx.user);
        let mut ids_out = Vec::new();
        let mut first: Option<(usize, Map<String, Value>, Vec<String>)> = None;
        for op in ops {
            if let Op::Update { r, changes } = op {
                let (body, changed) = self.apply_update(r, changes, ctx.user, at);
                ids_out.push(self.id_of(r));
                if first.is_none() {
                    first = Some((r.table, body, changed));
                }
            }
        }
        if let Some((table, body, changed)) = first {
            self.push_event(
                table,
                ids_out.clone(),
                "UPDATE",
                &ctx.origin,
                &tx,
                1,
                at,
                &user_id,
                changed,
                body,
            );
        }
        ids_out
    }

    /// Emits a header-only gap event (`GAP_UPDATE`, `GAP_OVERFLOW`, …); with `ops`, the records
    /// change too, as a database-level change would, without any other event.
    pub fn commit_gap(
        &mut self,
        ctx: &CommitCtx,
        table: usize,
        change_type: &str,
        record_ids: Vec<String>,
        ops: Vec<Op>,
    ) {
        let at = self.commit_clock();
        for op in ops {
            if let Op::Update { r, changes } = op {
                self.apply_update(r, changes, ctx.user, at);
            }
        }
        let tx = transaction_key();
        let user_id = self.user_id(ctx.user);
        self.push_event(
            table,
            record_ids,
            change_type,
            &ctx.origin,
            &tx,
            1,
            at,
            &user_id,
            Vec::new(),
            Map::new(),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn push_event(
        &mut self,
        table: usize,
        record_ids: Vec<String>,
        change_type: &str,
        origin: &str,
        tx: &str,
        seq: u32,
        at: i64,
        user_id: &str,
        changed: Vec<String>,
        body: Map<String, Value>,
    ) {
        let Some(def) = self.tables.get(table).map(|t| Arc::clone(&t.def)) else {
            return;
        };
        let replay_id = self.events.next_replay_id();
        let header = Header {
            entity_name: &def.name,
            record_ids,
            change_type,
            change_origin: origin,
            transaction_key: tx,
            sequence_number: seq,
            commit_timestamp: at,
            commit_number: self.commit_number,
            commit_user: user_id,
            changed_fields: changed,
        };
        let data = cdc::event_data(&def.schema_id, header, body, replay_id);
        self.events.push(StoredEvent {
            replay_id,
            entity: table,
            at_ms: at,
            data: Arc::from(data),
        });
    }

    fn touch(&mut self, r: RecordRef, user: u32, at: i64, deleted: Option<bool>) {
        if let Some(rec) = self
            .tables
            .get_mut(r.table)
            .and_then(|t| t.records.get_mut(r.idx))
        {
            rec.modified = at;
            rec.modified_by = user;
            rec.modstamp = at;
            if let Some(d) = deleted {
                rec.deleted = d;
            }
        }
    }

    /// Writes the changes; returns the UPDATE body and its changedFields.
    fn apply_update(
        &mut self,
        r: RecordRef,
        changes: Vec<(usize, Val)>,
        user: u32,
        at: i64,
    ) -> (Map<String, Value>, Vec<String>) {
        let Some(def) = self.def(r.table).map(Arc::clone) else {
            return (Map::new(), Vec::new());
        };
        let mut body = Map::new();
        let mut changed = Vec::new();
        let previous_modifier = self.record(r).map(|rec| rec.modified_by);
        for (fi, v) in changes {
            let Some(field) = def.fields.get(fi) else {
                continue;
            };
            let old = self.get(r, field);
            if old == v {
                continue;
            }
            match field.storage {
                Storage::Slot(i) => {
                    if let Some(slot) = self
                        .tables
                        .get_mut(r.table)
                        .and_then(|t| t.records.get_mut(r.idx))
                        .and_then(|rec| rec.values.get_mut(i))
                    {
                        *slot = v.clone();
                    }
                }
                Storage::System(SystemField::OwnerId) => {
                    if let Val::Str(id) = &v
                        && let Some((_, n)) = ids::parse_id(id)
                        && let Some(rec) = self
                            .tables
                            .get_mut(r.table)
                            .and_then(|t| t.records.get_mut(r.idx))
                    {
                        rec.owner = n.saturating_sub(1) as u32;
                    }
                }
                _ => continue,
            }
            let json = values::to_json(&v, true);
            match &field.compound {
                Some((compound, part)) => {
                    changed.push(format!("{compound}.{part}"));
                    let entry = body
                        .entry(compound.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(m) = entry {
                        m.insert(part.clone(), json);
                    }
                }
                None => {
                    changed.push(field.name.clone());
                    body.insert(field.name.clone(), json);
                }
            }
        }
        self.touch(r, user, at, None);
        changed.push("LastModifiedDate".into());
        body.insert(
            "LastModifiedDate".into(),
            Value::String(values::event_datetime(at)),
        );
        if previous_modifier != Some(user) {
            changed.push("LastModifiedById".into());
            body.insert("LastModifiedById".into(), Value::String(self.user_id(user)));
        }
        (body, changed)
    }

    /// CREATE/UNDELETE body: all non-empty fields and the system fields events carry.
    fn full_body(&self, r: RecordRef) -> Map<String, Value> {
        let mut body = Map::new();
        let Some(def) = self.def(r.table) else {
            return body;
        };
        for field in &def.fields {
            let skip = matches!(
                field.storage,
                Storage::System(
                    SystemField::Id | SystemField::IsDeleted | SystemField::SystemModstamp
                ) | Storage::Compound
            );
            if skip {
                continue;
            }
            let v = self.get(r, field);
            if v.is_null() {
                continue;
            }
            let json = values::to_json(&v, true);
            match &field.compound {
                Some((compound, part)) => {
                    if let Value::Object(m) = body
                        .entry(compound.clone())
                        .or_insert_with(|| Value::Object(Map::new()))
                    {
                        m.insert(part.clone(), json);
                    }
                }
                None => {
                    body.insert(field.name.clone(), json);
                }
            }
        }
        body
    }
}

/// A UUID-shaped transaction key.
fn transaction_key() -> String {
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}
