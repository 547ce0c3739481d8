//! Records as the REST API shows them: `attributes`, then the fields, compound fields as
//! objects of their parts.

use serde_json::{Map, Value};

use super::{Org, RecordRef};
use crate::crm::schema::{FieldDef, ObjectDef, Storage};
use crate::crm::values;

impl Org {
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
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}
