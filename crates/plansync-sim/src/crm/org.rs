//! The org's data: one compact table per object, typed values, and the commit path that applies
//! a transaction's writes and appends its change events in the same critical section, so event
//! order is commit order.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::cdc::{self, EventLog, Header, StoredEvent};
use super::ids;
use super::schema::{FieldDef, FieldSpec, FieldType, ObjectDef, Storage, SystemField};
use super::seed::{Seed, SeedError};
use super::values::{self, FieldError, Val};

/// One record. System fields are kept as plain numbers; user ids are indexes into the User table.
#[derive(Debug, Clone)]
pub struct Record {
    pub values: Box<[Val]>,
    pub deleted: bool,
    pub created: i64,
    pub created_by: u32,
    pub modified: i64,
    pub modified_by: u32,
    pub modstamp: i64,
    pub owner: u32,
}

#[derive(Debug)]
pub struct Table {
    pub def: Arc<ObjectDef>,
    /// Record `n` (from 1) lives at index `n - 1`; records are never removed, only flagged.
    pub records: Vec<Record>,
}

/// A record's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordRef {
    pub table: usize,
    pub idx: usize,
}

/// One validated write of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Update {
        r: RecordRef,
        changes: Vec<(usize, Val)>,
    },
    Create {
        table: usize,
        changes: Vec<(usize, Val)>,
    },
    Delete {
        r: RecordRef,
    },
    Undelete {
        r: RecordRef,
    },
}

/// Who commits and through which API (the event's `changeOrigin`).
#[derive(Debug, Clone)]
pub struct CommitCtx {
    pub user: u32,
    pub origin: String,
}

pub const USER_TABLE: usize = 0;

#[derive(Debug)]
pub struct Org {
    pub org_id: String,
    pub org_name: String,
    pub tables: Vec<Table>,
    by_name: HashMap<String, usize>,
    by_prefix: HashMap<String, usize>,
    usernames: HashMap<String, u32>,
    /// The user client-credentials tokens act as.
    pub run_as: u32,
    pub events: EventLog,
    last_commit_ms: i64,
    commit_number: u64,
    /// The next this many record writes fail with `UNABLE_TO_LOCK_ROW` (test hook).
    pub lock_failures: u32,
    /// A transaction with more changes than this ends in one `GAP_OVERFLOW` per entity.
    pub overflow_threshold: usize,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn user_def() -> ObjectDef {
    let spec = |name: &str, ty, required| FieldSpec {
        name: name.into(),
        ty,
        required,
        updateable: true,
        compound: None,
    };
    ObjectDef::new(
        "User",
        "005",
        &[
            spec("Username", FieldType::String, true),
            spec("Name", FieldType::String, false),
            spec("IsActive", FieldType::Boolean, false),
        ],
        false,
    )
}

impl Org {
    pub fn from_seed(seed: &Seed, retention_ms: i64) -> Result<Org, SeedError> {
        let org_id = match seed.org_id.len() {
            15 => format!("{}{}", seed.org_id, ids::suffix_of(&seed.org_id)),
            18 => seed.org_id.clone(),
            _ => {
                return Err(SeedError::Invalid(
                    "org id must have 15 or 18 characters".into(),
                ));
            }
        };
        let mut org = Org {
            org_id,
            org_name: seed.org_name.clone(),
            tables: Vec::new(),
            by_name: HashMap::new(),
            by_prefix: HashMap::new(),
            usernames: HashMap::new(),
            run_as: 0,
            events: EventLog::new(retention_ms),
            last_commit_ms: 0,
            commit_number: 1_000_000_000 + fastrand::u64(0..1_000_000),
            lock_failures: 0,
            overflow_threshold: 100_000,
        };
        org.add_table(user_def())?;
        for o in &seed.objects {
            org.add_table(ObjectDef::new(&o.name, &o.key_prefix, &o.fields, o.owner))?;
        }
        for t in &org.tables {
            for f in &t.def.fields {
                if let FieldType::Reference(to) = &f.ty
                    && let Some(missing) = to.iter().find(|o| org.table_index(o).is_none())
                {
                    return Err(SeedError::Invalid(format!(
                        "{}.{} refers to unknown object {missing}",
                        t.def.name, f.name
                    )));
                }
            }
        }
        let now = now_ms();
        org.last_commit_ms = now;
        for (i, u) in seed.users.iter().enumerate() {
            let idx = i as u32;
            let record = Record {
                values: vec![
                    Val::Str(u.username.as_str().into()),
                    Val::Str(u.name.as_str().into()),
                    Val::Bool(true),
                ]
                .into_boxed_slice(),
                deleted: false,
                created: now,
                created_by: 0,
                modified: now,
                modified_by: 0,
                modstamp: now,
                owner: 0,
            };
            org.tables[USER_TABLE].records.push(record);
            org.usernames.insert(u.username.to_ascii_lowercase(), idx);
            if u.run_as {
                org.run_as = idx;
            }
        }
        let user_keys: HashMap<&str, u32> = seed
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.key.as_str(), i as u32))
            .collect();
        // Keys are resolved in file order, so a record may refer to any record before it.
        let mut keys: HashMap<String, String> = HashMap::new();
        for r in &seed.records {
            let owner = match &r.owner {
                Some(k) => *user_keys
                    .get(k.as_str())
                    .ok_or_else(|| SeedError::Invalid(format!("unknown user key {k}")))?,
                None => 0,
            };
            let id = org.seed_record(&r.object, owner, &r.fields, &keys, now)?;
            if let Some(k) = &r.key {
                keys.insert(k.clone(), id);
            }
        }
        for g in &seed.generated {
            org.tables
                .get_mut(
                    org.by_name
                        .get(&g.object.to_ascii_lowercase())
                        .copied()
                        .unwrap_or(usize::MAX),
                )
                .ok_or_else(|| SeedError::Invalid(format!("unknown object {}", g.object)))?
                .records
                .reserve(g.count);
            for i in 0..g.count {
                let fields = (g.make)(i);
                org.seed_record(&g.object, 0, &fields, &keys, now)?;
            }
        }
        Ok(org)
    }

    fn add_table(&mut self, def: ObjectDef) -> Result<(), SeedError> {
        let lower = def.name.to_ascii_lowercase();
        if self.by_name.contains_key(&lower) || self.by_prefix.contains_key(&def.key_prefix) {
            return Err(SeedError::Invalid(format!(
                "object {} or key prefix {} declared twice",
                def.name, def.key_prefix
            )));
        }
        self.by_name.insert(lower, self.tables.len());
        self.by_prefix
            .insert(def.key_prefix.clone(), self.tables.len());
        self.tables.push(Table {
            def: Arc::new(def),
            records: Vec::new(),
        });
        Ok(())
    }

    fn seed_record(
        &mut self,
        object: &str,
        owner: u32,
        fields: &[(String, Value)],
        keys: &HashMap<String, String>,
        now: i64,
    ) -> Result<String, SeedError> {
        let table = self
            .table_index(object)
            .ok_or_else(|| SeedError::Invalid(format!("unknown object {object}")))?;
        let mut map = Map::new();
        for (k, v) in fields {
            let v = match v.as_str().and_then(|s| s.strip_prefix('@')) {
                Some(key) => Value::String(
                    keys.get(key)
                        .cloned()
                        .ok_or_else(|| SeedError::Invalid(format!("unknown record key @{key}")))?,
                ),
                None => v.clone(),
            };
            map.insert(k.clone(), v);
        }
        let changes = self
            .check_fields_as(table, &map, true, true)
            .map_err(|errs| {
                SeedError::Invalid(format!(
                    "{object} record: {}",
                    errs.iter()
                        .map(|e| e.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
            })?;
        let r = self.insert(table, changes, owner, now);
        Ok(self.id_of(r))
    }

    pub fn table_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }

    pub fn def(&self, table: usize) -> Option<&Arc<ObjectDef>> {
        self.tables.get(table).map(|t| &t.def)
    }

    pub fn user_by_name(&self, username: &str) -> Option<u32> {
        self.usernames.get(&username.to_ascii_lowercase()).copied()
    }

    pub fn user_id(&self, user: u32) -> String {
        ids::make_id("005", u64::from(user) + 1)
    }

    /// Accepts a username or a user id.
    pub fn find_user(&self, who: &str) -> Option<u32> {
        self.user_by_name(who).or_else(|| {
            self.resolve_id(who)
                .filter(|r| r.table == USER_TABLE)
                .map(|r| r.idx as u32)
        })
    }

    pub fn id_of(&self, r: RecordRef) -> String {
        match self.tables.get(r.table) {
            Some(t) => ids::make_id(&t.def.key_prefix, r.idx as u64 + 1),
            None => String::new(),
        }
    }

    /// Finds a record (deleted or not) by its 15- or 18-character id.
    pub fn resolve_id(&self, id: &str) -> Option<RecordRef> {
        let (prefix, n) = ids::parse_id(id)?;
        let table = *self.by_prefix.get(prefix)?;
        let idx = usize::try_from(n.checked_sub(1)?).ok()?;
        (idx < self.tables.get(table)?.records.len()).then_some(RecordRef { table, idx })
    }

    pub fn record(&self, r: RecordRef) -> Option<&Record> {
        self.tables.get(r.table)?.records.get(r.idx)
    }

    /// A field's value (system fields computed). Compound fields read as null: render their
    /// parts instead.
    pub fn get(&self, r: RecordRef, field: &FieldDef) -> Val {
        let Some(rec) = self.record(r) else {
            return Val::Null;
        };
        match field.storage {
            Storage::Slot(i) => rec.values.get(i).cloned().unwrap_or(Val::Null),
            Storage::Compound => Val::Null,
            Storage::System(s) => match s {
                SystemField::Id => Val::Str(self.id_of(r).into()),
                SystemField::IsDeleted => Val::Bool(rec.deleted),
                SystemField::CreatedDate => Val::DateTime(rec.created),
                SystemField::LastModifiedDate => Val::DateTime(rec.modified),
                SystemField::SystemModstamp => Val::DateTime(rec.modstamp),
                SystemField::CreatedById => Val::Str(self.user_id(rec.created_by).into()),
                SystemField::LastModifiedById => Val::Str(self.user_id(rec.modified_by).into()),
                SystemField::OwnerId => Val::Str(self.user_id(rec.owner).into()),
            },
        }
    }

    /// A field for REST output: compound fields become `{street, city, …}` objects.
    pub fn rest_value(&self, r: RecordRef, def: &ObjectDef, field: &FieldDef) -> Value {
        if field.storage == Storage::Compound {
            let mut obj = Map::new();
            let mut any = false;
            for part in def.parts_of(&field.name) {
                let v = self.get(r, part);
                any |= !v.is_null();
                let key = part
                    .compound
                    .as_ref()
                    .map(|(_, p)| lower_first(p))
                    .unwrap_or_default();
                obj.insert(key, values::to_json(&v, false));
            }
            return if any { Value::Object(obj) } else { Value::Null };
        }
        values::to_json(&self.get(r, field), false)
    }

    /// A record as REST returns it: `attributes` then the fields (all, or `only`).
    pub fn rest_record(&self, r: RecordRef, version: &str, only: Option<&[usize]>) -> Value {
        let Some(t) = self.tables.get(r.table) else {
            return Value::Null;
        };
        let def = &t.def;
        let mut obj = Map::new();
        obj.insert(
            "attributes".into(),
            serde_json::json!({
                "type": def.name,
                "url": format!("/services/data/{version}/sobjects/{}/{}", def.name, self.id_of(r)),
            }),
        );
        let all: Vec<usize> = (0..def.fields.len()).collect();
        for &fi in only.unwrap_or(&all) {
            if let Some(f) = def.fields.get(fi) {
                obj.insert(f.name.clone(), self.rest_value(r, def, f));
            }
        }
        Value::Object(obj)
    }

    /// Validates field values written to `table` (create when `create`): every error, not just
    /// the first.
    pub fn check_fields(
        &self,
        table: usize,
        fields: &Map<String, Value>,
        create: bool,
    ) -> Result<Vec<(usize, Val)>, Vec<FieldError>> {
        self.check_fields_as(table, fields, create, false)
    }

    /// As [`Org::check_fields`]; `seeding` lets the seed set stored fields that API writes may
    /// not (a formula's value is the org's, not a writer's).
    fn check_fields_as(
        &self,
        table: usize,
        fields: &Map<String, Value>,
        create: bool,
        seeding: bool,
    ) -> Result<Vec<(usize, Val)>, Vec<FieldError>> {
        let Some(def) = self.def(table) else {
            return Err(vec![FieldError::new("INVALID_TYPE", "unknown object", &[])]);
        };
        let mut changes = Vec::new();
        let mut errors = Vec::new();
        for (name, json) in fields {
            if name == "attributes" || name.eq_ignore_ascii_case("id") {
                continue;
            }
            let Some(fi) = def.field_index(name) else {
                errors.push(FieldError::new(
                    "INVALID_FIELD",
                    format!("No such column '{name}' on sobject of type {}", def.name),
                    &[name],
                ));
                continue;
            };
            let field = &def.fields[fi];
            let seeded = seeding && matches!(field.storage, Storage::Slot(_));
            if !(field.updateable || seeded) {
                errors.push(FieldError::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    format!(
                        "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                        field.name
                    ),
                    &[&field.name],
                ));
                continue;
            }
            match values::from_json(field, json) {
                Ok(v) => match self.check_reference(field, &v) {
                    Ok(()) => changes.push((fi, v)),
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(e),
            }
        }
        if create {
            let missing: Vec<&str> = def
                .fields
                .iter()
                .enumerate()
                .filter(|(i, f)| f.required && !changes.iter().any(|(c, _)| c == i))
                .map(|(_, f)| f.name.as_str())
                .collect();
            if !missing.is_empty() {
                errors.push(FieldError::new(
                    "REQUIRED_FIELD_MISSING",
                    format!("Required fields are missing: [{}]", missing.join(", ")),
                    &missing,
                ));
            }
        }
        if errors.is_empty() {
            Ok(changes)
        } else {
            Err(errors)
        }
    }

    fn check_reference(&self, field: &FieldDef, v: &Val) -> Result<(), FieldError> {
        let (FieldType::Reference(to), Val::Str(id)) = (&field.ty, v) else {
            return Ok(());
        };
        let target = self.resolve_id(id).filter(|r| {
            self.def(r.table)
                .is_some_and(|d| to.iter().any(|t| t == &d.name))
                && self.record(*r).is_some_and(|rec| !rec.deleted)
        });
        match target {
            Some(_) => Ok(()),
            None => Err(FieldError::new(
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
                &[&field.name],
            )),
        }
    }

    /// Validates an update of the record `id` (of `object` when the caller named one).
    pub fn prepare_update(
        &mut self,
        object: Option<&str>,
        id: &str,
        fields: &Map<String, Value>,
    ) -> Result<Op, Vec<FieldError>> {
        let r = self.prepare_target(object, id)?;
        if self.record(r).is_some_and(|rec| rec.deleted) {
            return Err(vec![FieldError::new(
                "ENTITY_IS_DELETED",
                "entity is deleted",
                &[],
            )]);
        }
        let changes = self.check_fields(r.table, fields, false)?;
        self.take_lock(id)?;
        Ok(Op::Update { r, changes })
    }

    /// Validates a new record of `object`.
    pub fn prepare_create(
        &mut self,
        object: &str,
        fields: &Map<String, Value>,
    ) -> Result<Op, Vec<FieldError>> {
        let Some(table) = self.table_index(object).filter(|&t| t != USER_TABLE) else {
            return Err(vec![FieldError::new(
                "INVALID_TYPE",
                format!("sObject type '{object}' is not supported."),
                &[],
            )]);
        };
        let changes = self.check_fields(table, fields, true)?;
        self.take_lock("")?;
        Ok(Op::Create { table, changes })
    }

    /// Validates a delete (`undelete == false`) or an undelete.
    pub fn prepare_delete(&mut self, id: &str, undelete: bool) -> Result<Op, Vec<FieldError>> {
        let r = self.prepare_target(None, id)?;
        let deleted = self.record(r).is_some_and(|rec| rec.deleted);
        if deleted != undelete {
            return Err(vec![if undelete {
                FieldError::new("UNDELETE_FAILED", "Entity is not in the recycle bin", &[])
            } else {
                FieldError::new("ENTITY_IS_DELETED", "entity is deleted", &[])
            }]);
        }
        self.take_lock(id)?;
        Ok(if undelete {
            Op::Undelete { r }
        } else {
            Op::Delete { r }
        })
    }

    fn prepare_target(&self, object: Option<&str>, id: &str) -> Result<RecordRef, Vec<FieldError>> {
        let r = self.resolve_id(id).filter(|r| r.table != USER_TABLE);
        match (r, object) {
            (Some(r), Some(o))
                if !self
                    .def(r.table)
                    .is_some_and(|d| d.name.eq_ignore_ascii_case(o)) =>
            {
                Err(vec![FieldError::new(
                    "MALFORMED_ID",
                    format!("{o} ID: id value of incorrect type: {id}"),
                    &["Id"],
                )])
            }
            (Some(r), _) => Ok(r),
            (None, _) if ids::looks_like_id(id) && ids::parse_id(id).is_some() => {
                Err(vec![FieldError::new(
                    "ENTITY_IS_DELETED",
                    "entity is deleted",
                    &[],
                )])
            }
            (None, _) => Err(vec![FieldError::new(
                "MALFORMED_ID",
                format!("malformed id {id}"),
                &["Id"],
            )]),
        }
    }

    fn take_lock(&mut self, id: &str) -> Result<(), Vec<FieldError>> {
        if self.lock_failures == 0 {
            return Ok(());
        }
        self.lock_failures -= 1;
        Err(vec![FieldError::new(
            "UNABLE_TO_LOCK_ROW",
            format!("unable to obtain exclusive access to this record or 1 records: {id}"),
            &[],
        )])
    }

    fn insert(
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

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
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
