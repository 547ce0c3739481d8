//! `GET /services/data/vXX.X/sobjects/{object}/describe`: an object's metadata in the shape
//! of Salesforce's `DescribeSObjectResult`; `GET …/sobjects` (the global describe: every
//! object's summary, `encoding`, `maxBatchSize`) and `GET …/sobjects/{object}` (basic
//! information: the summary and `recentItems`) give the same summary keys. All are built
//! from the simulator's own schema (so a field the seed marks `updateable = false` says so
//! here, and the write path refuses it).
//!
//! Only what the schema knows is reported; the many flags it has no notion of (layouts,
//! search, feeds) are given the values a plain custom object has, so clients that read them
//! find a value, not a missing key.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::Sim;
use super::http::{json_response, not_found};
use super::schema::{FieldDef, FieldType, ObjectDef, Storage, SystemField};
use super::values;

pub async fn describe(
    State(sim): State<Arc<Sim>>,
    Path((version, object)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (v, _user) = match sim.api(&version, &headers) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let def = {
        let org = sim.org_lock();
        match org.table_index(&object).and_then(|t| org.def(t)) {
            Some(def) => Arc::clone(def),
            None => return not_found(),
        }
    };
    json_response(StatusCode::OK, &object_json(&def, &v))
}

/// `GET …/sobjects`: the global describe, every object's summary (the per-object describe
/// without its field, relationship and record-type lists).
pub async fn global(
    State(sim): State<Arc<Sim>>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (v, _user) = match sim.api(&version, &headers) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let defs: Vec<Arc<ObjectDef>> = {
        let org = sim.org_lock();
        org.tables.iter().map(|t| Arc::clone(&t.def)).collect()
    };
    let sobjects: Vec<Value> = defs.iter().map(|d| summary_json(d, &v)).collect();
    json_response(
        StatusCode::OK,
        &json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects}),
    )
}

/// `GET …/sobjects/{object}`: the object's basic information, its summary and its recently
/// viewed records (the simulator has no notion of viewing, so none).
pub async fn basic_info(
    State(sim): State<Arc<Sim>>,
    Path((version, object)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (v, _user) = match sim.api(&version, &headers) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let def = {
        let org = sim.org_lock();
        match org.table_index(&object).and_then(|t| org.def(t)) {
            Some(def) => Arc::clone(def),
            None => return not_found(),
        }
    };
    json_response(
        StatusCode::OK,
        &json!({"objectDescribe": summary_json(&def, &v), "recentItems": []}),
    )
}

fn summary_json(def: &ObjectDef, v: &str) -> Value {
    let mut full = object_json(def, v);
    if let Value::Object(m) = &mut full {
        for detail in [
            "fields",
            "childRelationships",
            "recordTypeInfos",
            "supportedScopes",
        ] {
            m.remove(detail);
        }
    }
    full
}

fn object_json(def: &ObjectDef, v: &str) -> Value {
    let custom = def.name.ends_with("__c");
    let base = format!("/services/data/v{v}/sobjects/{}", def.name);
    let writable = def.fields.iter().any(|f| f.updateable);
    json!({
        "name": def.name,
        "label": label_of(&def.name),
        "labelPlural": format!("{}s", label_of(&def.name)),
        "keyPrefix": def.key_prefix,
        "custom": custom,
        "createable": writable,
        "updateable": writable,
        "deletable": true,
        "undeletable": true,
        "queryable": true,
        "retrieveable": true,
        "searchable": true,
        "triggerable": true,
        "replicateable": true,
        "layoutable": true,
        "mergeable": false,
        "feedEnabled": false,
        "activateable": false,
        "customSetting": false,
        "deprecatedAndHidden": false,
        "childRelationships": [],
        "recordTypeInfos": [],
        "supportedScopes": [],
        "fields": def.fields.iter().map(field_json).collect::<Vec<_>>(),
        "urls": {
            "sobject": base,
            "describe": format!("{base}/describe"),
            "rowTemplate": format!("{base}/{{ID}}"),
        },
    })
}

fn field_json(f: &FieldDef) -> Value {
    let (length, precision, scale) = sizes(&f.ty);
    let system = matches!(f.storage, Storage::System(_));
    // Salesforce booleans are never null, and system fields are always set.
    let nillable = !(f.required || system || f.ty == FieldType::Boolean);
    let createable = f.updateable
        && !matches!(
            f.storage,
            Storage::System(SystemField::Id) | Storage::Compound
        );
    // A stored field the seed made read-only plays the part of a formula field.
    let calculated = !f.updateable && matches!(f.storage, Storage::Slot(_));
    let picklist: Vec<Value> = match &f.ty {
        FieldType::Picklist(values) => values
            .iter()
            .map(|v| json!({"active": true, "defaultValue": false, "label": v, "validFor": null, "value": v}))
            .collect(),
        _ => Vec::new(),
    };
    let reference_to: &[String] = match &f.ty {
        FieldType::Reference(to) => to,
        _ => &[],
    };
    let filterable = f.ty != FieldType::Address;
    json!({
        "name": f.name,
        "label": label_of(&f.name),
        "type": f.ty.name(),
        "soapType": soap_type(&f.ty),
        "length": length,
        "byteLength": length * 3,
        "precision": precision,
        "scale": scale,
        "digits": 0,
        "nillable": nillable,
        "createable": createable,
        "updateable": f.updateable,
        "calculated": calculated,
        "custom": f.name.ends_with("__c"),
        "defaultedOnCreate": system || f.ty == FieldType::Boolean,
        "defaultValue": if f.ty == FieldType::Boolean { json!(false) } else { Value::Null },
        "unique": f.unique,
        "externalId": f.external_id,
        "idLookup": f.external_id || f.storage == Storage::System(SystemField::Id),
        "nameField": f.name == "Name",
        "autoNumber": false,
        "caseSensitive": false,
        "htmlFormatted": false,
        "dependentPicklist": false,
        "restrictedPicklist": matches!(f.ty, FieldType::Picklist(_)),
        "filterable": filterable,
        "sortable": filterable,
        "groupable": filterable && !f.ty.is_numeric(),
        "picklistValues": picklist,
        "referenceTo": reference_to,
        "relationshipName": relationship_name(f),
        "compoundFieldName": f.compound.as_ref().map(|(c, _)| c.clone()),
        "inlineHelpText": null,
    })
}

/// `(length, precision, scale)` as Salesforce reports them: text lengths in characters,
/// numbers as Number(18, 2) except percentages (Number(3, 0), as `Opportunity.Probability`).
fn sizes(ty: &FieldType) -> (u32, u32, u32) {
    match ty {
        FieldType::Id | FieldType::Reference(_) => (18, 0, 0),
        FieldType::String | FieldType::Picklist(_) => (values::MAX_TEXT as u32, 0, 0),
        FieldType::Double | FieldType::Currency => (0, 18, 2),
        FieldType::Percent => (0, 3, 0),
        FieldType::Boolean | FieldType::Date | FieldType::DateTime | FieldType::Address => {
            (0, 0, 0)
        }
    }
}

fn soap_type(ty: &FieldType) -> &'static str {
    match ty {
        FieldType::Id | FieldType::Reference(_) => "tns:ID",
        FieldType::String | FieldType::Picklist(_) => "xsd:string",
        FieldType::Double | FieldType::Currency | FieldType::Percent => "xsd:double",
        FieldType::Boolean => "xsd:boolean",
        FieldType::Date => "xsd:date",
        FieldType::DateTime => "xsd:dateTime",
        FieldType::Address => "urn:address",
    }
}

/// `AccountId` → `Account`, `Owner__c` → `Owner__r`: the name SOQL follows a lookup by.
fn relationship_name(f: &FieldDef) -> Option<String> {
    if !matches!(f.ty, FieldType::Reference(_)) {
        return None;
    }
    if let Some(stem) = f.name.strip_suffix("__c") {
        return Some(format!("{stem}__r"));
    }
    Some(f.name.strip_suffix("Id").unwrap_or(&f.name).to_string())
}

/// A label from an API name: `Forecast_Override__c` → `Forecast Override`, `CloseDate` →
/// `Close Date`.
fn label_of(name: &str) -> String {
    let stem = name.strip_suffix("__c").unwrap_or(name);
    let mut out = String::with_capacity(stem.len() + 4);
    let mut prev_lower = false;
    for c in stem.chars() {
        if c == '_' {
            out.push(' ');
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_like_salesforce_labels() {
        assert_eq!(label_of("Forecast_Override__c"), "Forecast Override");
        assert_eq!(label_of("CloseDate"), "Close Date");
        assert_eq!(label_of("Name"), "Name");
        assert_eq!(label_of("SystemModstamp"), "System Modstamp");
    }
}
