//! Checking writes before they commit: field values against the object's fields (every error,
//! not just the first), references to live records, the target of an update or delete, and the
//! injected row-lock failures; a write that passes becomes an [`Op`].

use serde_json::{Map, Value};

use super::{Op, Org, RecordRef, USER_TABLE};
use crate::crm::ids;
use crate::crm::schema::{FieldDef, FieldType, Storage};
use crate::crm::values::{self, FieldError, Val};

impl Org {
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
    pub(super) fn check_fields_as(
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
        self.check_unique(r.table, Some(r), &changes)?;
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
        self.check_unique(table, None, &changes)?;
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

    /// Live records of `table` whose `field` holds `value` (text compared without case, as
    /// Salesforce matches external ids). A scan: only upserts and unique fields ask.
    pub fn find_by_value(&self, table: usize, field: &FieldDef, value: &Val) -> Vec<RecordRef> {
        let Some(t) = self.tables.get(table) else {
            return Vec::new();
        };
        (0..t.records.len())
            .map(|idx| RecordRef { table, idx })
            .filter(|&r| {
                self.record(r)
                    .is_some_and(|rec| !rec.deleted && !rec.purged)
            })
            .filter(|&r| match (&self.get(r, field), value) {
                (Val::Str(a), Val::Str(b)) => a.eq_ignore_ascii_case(b),
                (a, b) => !a.is_null() && a == b,
            })
            .collect()
    }

    /// Refuses a value of a unique field another live record already holds.
    fn check_unique(
        &self,
        table: usize,
        except: Option<RecordRef>,
        changes: &[(usize, Val)],
    ) -> Result<(), Vec<FieldError>> {
        let Some(def) = self.def(table) else {
            return Ok(());
        };
        for (fi, value) in changes {
            let Some(field) = def.fields.get(*fi).filter(|f| f.unique) else {
                continue;
            };
            if value.is_null() {
                continue;
            }
            let other = self
                .find_by_value(table, field, value)
                .into_iter()
                .find(|&r| Some(r) != except);
            if let Some(other) = other {
                return Err(vec![FieldError::new(
                    "DUPLICATE_VALUE",
                    format!(
                        "duplicate value found: {} duplicates value on record with id: {}",
                        field.name,
                        self.id_of(other)
                    ),
                    &[&field.name],
                )]);
            }
        }
        Ok(())
    }

    fn take_lock(&mut self, id: &str) -> Result<(), Vec<FieldError>> {
        if !self.locked.contains(id) {
            if self.lock_failures == 0 {
                return Ok(());
            }
            self.lock_failures -= 1;
        }
        Err(vec![FieldError::new(
            "UNABLE_TO_LOCK_ROW",
            format!("unable to obtain exclusive access to this record or 1 records: {id}"),
            &[],
        )])
    }
}
