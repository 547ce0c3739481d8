//! Building an org from a seed: the User table first, then the seed's objects (their
//! references checked), users, records (keys resolved in file order) and generated records.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Org, Record, Table, USER_TABLE, now_ms};
use crate::crm::cdc::EventLog;
use crate::crm::ids;
use crate::crm::schema::{FieldSpec, FieldType, ObjectDef};
use crate::crm::seed::{Seed, SeedError};
use crate::crm::values::Val;

fn user_def() -> ObjectDef {
    let spec = |name: &str, ty, required| FieldSpec {
        name: name.into(),
        ty,
        required,
        updateable: true,
        compound: None,
        external_id: false,
        unique: false,
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
            locked: Default::default(),
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
                purged: false,
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
}
