//! A model's structure: modules, line items (with their format metadata: a number's display
//! settings, a text's `textType`, a list's hierarchy; booleans and dates carry only their data
//! type) and the dimensions of line items, including the lookup of dimension items by code or
//! name.

use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{model_schema, paged};
use crate::anaplan::model::{Format, ModelData, ModelSlot};
use crate::anaplan::scalar::Scalar;
use crate::anaplan::server::model_lock;
use crate::anaplan::wire::{self, Req, envelope};

pub(super) fn modules(req: &Req, slot: &ModelSlot) -> Response {
    let all = {
        let md = model_lock(&slot.data);
        md.modules
            .iter()
            .map(|m| json!({"id": m.id.to_string(), "name": m.name, "code": ""}))
            .collect()
    };
    paged(req, model_schema(req, slot, "module"), "modules", all)
}

fn line_item_json(md: &ModelData, li: usize, all: bool) -> Value {
    let l = &md.line_items[li];
    let module = &md.modules[l.module];
    let mut v = json!({
        "moduleId": module.id.to_string(),
        "moduleName": module.name,
        "id": l.id.to_string(),
        "name": l.name,
    });
    if all {
        let list = &md.lists[module.list];
        let mut fm = Map::new();
        fm.insert("dataType".into(), json!(l.format.data_type()));
        match l.format {
            Format::Number => {
                fm.insert("minimumSignificantDigits".into(), json!(4));
                fm.insert("decimalPlaces".into(), json!(-1));
                fm.insert("negativeNumberNotation".into(), json!("MINUS_SIGN"));
                fm.insert("unitsType".into(), json!("NONE"));
                fm.insert("unitsDisplayType".into(), json!("NONE"));
                fm.insert("zeroFormat".into(), json!("ZERO"));
                fm.insert("comparisonIncrease".into(), json!("GOOD"));
                fm.insert("groupingSeparator".into(), json!("COMMA"));
                fm.insert("decimalSeparator".into(), json!("FULL_STOP"));
            }
            Format::List(fl) => {
                if let Some(f) = md.lists.get(fl) {
                    fm.insert("hierarchyEntityLongId".into(), json!(f.id));
                    fm.insert("selectiveAccessApplied".into(), json!(false));
                    fm.insert("showAll".into(), json!(false));
                }
            }
            // Anaplan's text formats are general text, e-mail addresses and drill-through
            // URIs; a client may require the kind (anaplan-sdk's line item model does).
            Format::Text => {
                fm.insert("textType".into(), json!("GENERAL"));
            }
            // Boolean and date formats carry only their data type.
            Format::Boolean | Format::Date => {}
        }
        let referenced_by: Vec<Value> = md.modules[l.module]
            .line_items
            .iter()
            .filter(|&&o| {
                md.line_items[o].formula.as_ref().is_some_and(|f| {
                    let mut r = Vec::new();
                    f.refs(&mut r);
                    r.contains(&li)
                })
            })
            .map(|&o| json!({"id": md.line_items[o].id.to_string(), "name": md.line_items[o].name}))
            .collect();
        let extra = json!({
            "format": match l.format { Format::List(_) => "LIST".to_string(), f => f.data_type().to_string() },
            "formatMetadata": Value::Object(fm),
            "summary": if l.format == Format::Number { "Sum" } else { "None" },
            "appliesTo": [{"id": list.id.to_string(), "name": list.name}],
            "dataTags": [],
            "referencedBy": referenced_by,
            "timeScale": "Not Applicable",
            "timeRange": "Model Calendar",
            "version": {"id": "16000000000", "name": "All"},
            "style": "Normal",
            "cellCount": list.len(),
            "notes": "",
            "code": "",
            "isSummary": false,
            "formula": l.formula_text.clone().unwrap_or_default(),
            "formulaScope": "All Versions",
            "useSwitchover": false,
            "breakback": false,
            "broughtForward": false,
            "startOfSection": false,
        });
        if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
            v.extend(extra);
        }
    }
    v
}

pub(super) fn line_items(req: &Req, slot: &ModelSlot, module: Option<&str>) -> Response {
    let all = req.flag("includeAll");
    let md = model_lock(&slot.data);
    let lis: Vec<usize> = match module {
        Some(key) => match md.find_module(key) {
            Some(m) => md.modules[m].line_items.clone(),
            None => return wire::not_found(&req.path),
        },
        None => (0..md.line_items.len()).collect(),
    };
    let items: Vec<Value> = lis.iter().map(|&li| line_item_json(&md, li, all)).collect();
    envelope(
        model_schema(req, slot, "lineItem"),
        None,
        vec![("items", Value::Array(items))],
    )
}

pub(super) fn line_item_dimensions(req: &Req, slot: &ModelSlot, li: &str) -> Response {
    let md = model_lock(&slot.data);
    let Some(l) = md.line_items.iter().find(|l| l.id.to_string() == li) else {
        return wire::not_found(&req.path);
    };
    let list = &md.lists[md.modules[l.module].list];
    envelope(
        model_schema(req, slot, "dimension"),
        None,
        vec![(
            "dimensions",
            json!([{"id": list.id.to_string(), "name": list.name}]),
        )],
    )
}

#[derive(Deserialize)]
struct Lookup<'a> {
    #[serde(borrow, default)]
    codes: Option<Vec<Scalar<'a>>>,
    #[serde(borrow, default)]
    names: Option<Vec<Scalar<'a>>>,
}

pub(super) fn dimension_items(
    req: &Req,
    slot: &ModelSlot,
    d: &str,
    lookup: bool,
    max: usize,
) -> Response {
    let md = model_lock(&slot.data);
    let Some(l) = md.lists.iter().position(|l| l.id.to_string() == d) else {
        return wire::not_found(&req.path);
    };
    let list = &md.lists[l];
    // The 1,000,000-item limit is documented for the read of all items, not the lookup.
    if !lookup && list.len() > max {
        return wire::bad_request("Too many items in the dimension", &req.path);
    }
    let item_json = |i: u32| -> Value {
        let it = list.get(i);
        let mut v =
            json!({"id": list.item_id(i).to_string(), "name": it.map(|x| &*x.name).unwrap_or("")});
        if let Some(c) = it.and_then(|x| x.code.as_deref()) {
            v["code"] = json!(c);
        }
        v
    };
    let items: Vec<Value> = if lookup {
        let body: Lookup = match serde_json::from_slice(&req.body) {
            Ok(b) => b,
            Err(_) => return wire::bad_request("Invalid request body", &req.path),
        };
        let mut found = Vec::new();
        for c in body.codes.iter().flatten() {
            if let Some(i) = c.text().and_then(|c| list.by_code(&c)) {
                found.push(i);
            }
        }
        for n in body.names.iter().flatten() {
            if let Some(i) = n.text().and_then(|n| list.by_name(&n))
                && !found.contains(&i)
            {
                found.push(i);
            }
        }
        found.into_iter().map(item_json).collect()
    } else {
        list.iter().map(|(i, _)| item_json(i)).collect()
    };
    envelope(
        model_schema(req, slot, "dimension"),
        None,
        vec![("items", Value::Array(items))],
    )
}
