//! Lists: listing them, a list's metadata, its items (JSON pages or CSV), item adds, updates
//! and deletes, and resetting an empty list's index.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{MAX_ITEMS, busy, grouped, model_schema, paged};
use crate::anaplan::model::{ItemInput, ModelData, ModelSlot, PropFormat};
use crate::anaplan::server::model_lock;
use crate::anaplan::wire::{self, Page, Req, envelope};

fn find_list(req: &Req, md: &ModelData, l: &str) -> Result<usize, Response> {
    md.lists
        .iter()
        .position(|x| x.id.to_string() == l)
        .ok_or_else(|| wire::not_found(&req.path))
}

pub(super) fn lists(req: &Req, slot: &ModelSlot) -> Response {
    let all = {
        let md = model_lock(&slot.data);
        md.lists
            .iter()
            .map(|l| json!({"id": l.id.to_string(), "name": l.name, "code": ""}))
            .collect()
    };
    paged(req, model_schema(req, slot, "list"), "lists", all)
}

pub(super) fn list_metadata(req: &Req, slot: &ModelSlot, l: &str) -> Response {
    let md = model_lock(&slot.data);
    let li = match find_list(req, &md, l) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let list = &md.lists[li];
    let used: Vec<&str> = md
        .modules
        .iter()
        .filter(|m| m.list == li)
        .map(|m| m.name.as_str())
        .collect();
    let props: Vec<Value> = list
        .properties
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "format": match p.format { PropFormat::Text => "TEXT", PropFormat::Number => "NUMBER", PropFormat::Boolean => "BOOLEAN" },
                "formula": "",
                "notes": "",
                "referencedBy": "",
                "dataTags": [],
            })
        })
        .collect();
    envelope(
        model_schema(req, slot, "list"),
        None,
        vec![(
            "metadata",
            json!({
                "id": list.id.to_string(),
                "name": list.name,
                "properties": props,
                "hasSelectiveAccess": false,
                "managedBy": "",
                "numberedList": false,
                "useTopLevelAsPageDefault": false,
                "itemCount": list.len(),
                "nextItemIndex": list.next_index(),
                "workflowEnabled": false,
                "permittedItems": 999_999_999,
                "usedInAppliesTo": used.join(", "),
                "productionData": false,
                "dataTags": [],
            }),
        )],
    )
}

pub(super) fn list_items(req: &Req, slot: &ModelSlot, l: &str, max: usize) -> Response {
    let md = model_lock(&slot.data);
    let li = match find_list(req, &md, l) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let list = &md.lists[li];
    if list.len() > max {
        return wire::bad_request(
            &format!("The list has more than {} items", grouped(max)),
            &req.path,
        );
    }
    if req.wants_csv() {
        let mut w = csv::Writer::from_writer(Vec::with_capacity(list.len() * 48 + 64));
        let mut header = vec![list.name.as_str(), "Code", "Parent"];
        header.extend(list.properties.iter().map(|p| p.name.as_str()));
        let _ = w.write_record(&header);
        for (_, item) in list.iter() {
            let mut rec: Vec<&str> = vec![&item.name, item.code.as_deref().unwrap_or(""), ""];
            rec.extend((0..list.properties.len()).map(|p| list.prop_value(item, p)));
            let _ = w.write_record(&rec);
        }
        return wire::bytes(
            StatusCode::OK,
            "text/csv",
            w.into_inner().unwrap_or_default(),
        );
    }
    let page = match Page::read(req, true) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let all = req.flag("includeAll");
    let total = list.len();
    let range = page.range(total);
    let items: Vec<Value> = list
        .iter()
        .skip(range.start)
        .take(range.len())
        .map(|(i, item)| {
            let mut v = Map::new();
            v.insert("id".into(), json!(list.item_id(i).to_string()));
            v.insert("name".into(), json!(&*item.name));
            if let Some(c) = &item.code {
                v.insert("code".into(), json!(&**c));
            }
            if all {
                let props: Map<String, Value> = list
                    .properties
                    .iter()
                    .enumerate()
                    .map(|(p, def)| (def.name.clone(), json!(list.prop_value(item, p))))
                    .collect();
                v.insert("properties".into(), Value::Object(props));
                v.insert("subsets".into(), json!({}));
            }
            Value::Object(v)
        })
        .collect();
    envelope(
        model_schema(req, slot, "list"),
        Some(page.meta(req, items.len(), total)),
        vec![("listItems", Value::Array(items))],
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ItemOp {
    Add,
    Update,
    Delete,
}

pub(super) fn write_items(req: &Req, slot: &ModelSlot, l: &str, op: ItemOp) -> Response {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => return wire::bad_request("Invalid request body", &req.path),
    };
    let Some(items) = body.get("items").and_then(Value::as_array) else {
        return wire::bad_request("The request body needs an 'items' array", &req.path);
    };
    if items.len() > MAX_ITEMS {
        return wire::bad_request("More than 100,000 items in one request", &req.path);
    }
    let mut md = model_lock(&slot.data);
    let li = match find_list(req, &md, l) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if md.busy() {
        return busy(req);
    }
    let mut failures = Vec::new();
    let mut done = 0usize;
    let mut deleted = Vec::new();
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    for (k, item) in items.iter().enumerate() {
        let field = |f: &str| item.get(f).and_then(text);
        let (id, name, code) = (field("id"), field("name"), field("code"));
        let properties: Vec<(String, String)> = item
            .get("properties")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            text(v)
                                .or_else(|| v.as_bool().map(|b| b.to_string()))
                                .unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let input = ItemInput {
            id: id.as_deref(),
            name: name.as_deref(),
            code: code.as_deref(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect(),
        };
        let list = &mut md.lists[li];
        let outcome = match op {
            ItemOp::Add => list.add(&input).map(|_| ()),
            ItemOp::Update => {
                let keys = [
                    input.id.is_some(),
                    input.code.is_some(),
                    input.name.is_some(),
                ];
                if !keys.contains(&true) {
                    Err((
                        "INCOMPLETE_DATA",
                        "give one of id, code or name".to_string(),
                    ))
                } else {
                    list.locate(&input).and_then(|i| list.update(i, &input))
                }
            }
            ItemOp::Delete => {
                let found = if let Some(id) = input.id {
                    list.by_id(id)
                } else if let Some(c) = input.code {
                    list.by_code(c)
                } else {
                    input.name.and_then(|n| list.by_name(n))
                };
                match found {
                    Some(i) if !deleted.contains(&i) => {
                        deleted.push(i);
                        Ok(())
                    }
                    _ => Err(("INCOMPLETE_DATA", "item not found".to_string())),
                }
            }
        };
        match outcome {
            Ok(()) => done += 1,
            Err((kind, why)) => failures.push(json!({
                "requestIndex": k,
                "failureType": kind,
                "failureMessageDetails": why,
            })),
        }
    }
    if !deleted.is_empty() {
        md.delete_items(li, &deleted);
    }
    if done > 0 {
        md.touch();
    }
    let ignored = failures.len();
    let total = items.len();
    let mut fields = match op {
        ItemOp::Add => vec![
            ("added", json!(done)),
            ("ignored", json!(ignored)),
            ("total", json!(total)),
        ],
        ItemOp::Update => vec![
            ("updated", json!(done)),
            ("ignored", json!(ignored)),
            ("total", json!(total)),
        ],
        ItemOp::Delete => vec![("deleted", json!(done))],
    };
    fields.push(("failures", Value::Array(failures)));
    envelope(model_schema(req, slot, "list"), None, fields)
}

pub(super) fn reset_index(req: &Req, slot: &ModelSlot, l: &str) -> Response {
    let mut md = model_lock(&slot.data);
    let li = match find_list(req, &md, l) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if md.lists[li].reset_index() {
        envelope(model_schema(req, slot, "list"), None, Vec::new())
    } else {
        wire::bad_request("The list contains data", &req.path)
    }
}
