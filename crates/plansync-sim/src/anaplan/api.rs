//! The Integration API (`/2/0/…`): the route table and the transactional endpoints (users,
//! workspaces, models, modules, line items, dimensions, views and view data, lists and list
//! items, cell writes). Bulk endpoints are in `bulk.rs`.
//!
//! Model-scoped resources answer under `/workspaces/{ws}/models/{m}/…` and `/models/{m}/…`
//! alike; `GET /workspaces/{ws}/models/{m}` is 405, as on Anaplan.

use std::borrow::Cow;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::bulk;
use super::large_read;
use super::model::{Format, Input, ItemInput, ModelData, ModelSlot, PropFormat};
use super::scalar::{CellScalar, Scalar};
use super::server::{Shared, model_lock};
use super::wire::{self, Page, Req, envelope, ok_json};

/// At most this many cells per write.
pub const MAX_CELLS: usize = 100_000;
/// At most this many bytes per cell write.
pub const MAX_CELL_BODY: usize = 15 * 1024 * 1024;
/// At most this many list items per add, update or delete.
pub const MAX_ITEMS: usize = 100_000;
/// At most this many cells per view read, list items per list read, unless configured.
pub const MAX_READ: usize = 1_000_000;

pub fn handle(sh: &Shared, req: &Req) -> Response {
    let Some(user) = sh.auth.check(req) else {
        return wire::not_authenticated();
    };
    let rest = req.path.trim_start_matches("/2/0/");
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let get = req.method == Method::GET;
    let only_get = |f: &dyn Fn() -> Response| {
        if get {
            f()
        } else {
            wire::method_not_allowed(&req.path)
        }
    };
    match segs.as_slice() {
        ["users", "me"] => only_get(&|| users(sh, req, Some(user))),
        ["users"] => only_get(&|| users(sh, req, None)),
        ["users", id] => only_get(&|| match sh.auth.users.iter().position(|u| u.guid == *id) {
            Some(u) => users(sh, req, Some(u)),
            None => wire::not_found(&req.path),
        }),
        ["workspaces"] => only_get(&|| workspaces(sh, req, None)),
        ["workspaces", ws] => only_get(&|| workspaces(sh, req, Some(ws))),
        ["workspaces", ws, "models"] => only_get(&|| models(sh, req, Some(ws), None)),
        ["workspaces", _, "models", _] => wire::method_not_allowed(&req.path),
        ["workspaces", ws, "models", m, rest @ ..] => model_scoped(sh, req, Some(ws), m, rest),
        ["models"] => only_get(&|| models(sh, req, None, None)),
        ["models", m] => only_get(&|| models(sh, req, None, Some(m))),
        ["models", m, rest @ ..] => model_scoped(sh, req, None, m, rest),
        _ => wire::not_found(&req.path),
    }
}

fn model_scoped(sh: &Shared, req: &Req, ws: Option<&str>, m: &str, rest: &[&str]) -> Response {
    let Some(slot) = sh.tenant.model(m) else {
        return wire::not_found(&req.path);
    };
    if let Some(ws) = ws
        && sh
            .tenant
            .workspaces
            .get(slot.workspace)
            .map(|w| w.id.as_str())
            != Some(ws)
    {
        return wire::not_found(&req.path);
    }
    let method = &req.method;
    let is = |m: Method| *method == m;
    let mna = || wire::method_not_allowed(&req.path);
    match rest {
        ["status"] if is(Method::GET) => status(sh, req, slot),
        ["open"] if is(Method::POST) => {
            model_lock(&slot.data).open = true;
            wire::bytes(StatusCode::ACCEPTED, "application/json", Vec::new())
        }
        ["close"] if is(Method::POST) => {
            model_lock(&slot.data).open = false;
            wire::no_content()
        }
        ["status"] | ["open"] | ["close"] => mna(),
        ["modules"] if is(Method::GET) => modules(req, slot),
        ["modules", module, "lineItems"] if is(Method::GET) => line_items(req, slot, Some(module)),
        ["modules", module, "views"] if is(Method::GET) => views(req, slot, Some(module)),
        ["modules", module, "data"] if is(Method::POST) => write_cells(req, slot, module),
        ["lineItems"] if is(Method::GET) => line_items(req, slot, None),
        ["lineItems", li, "dimensions"] if is(Method::GET) => line_item_dimensions(req, slot, li),
        ["dimensions", d, "items"] if is(Method::GET) => {
            dimension_items(req, slot, d, false, sh.max_read)
        }
        ["dimensions", d, "items"] if is(Method::POST) => {
            dimension_items(req, slot, d, true, sh.max_read)
        }
        ["views"] if is(Method::GET) => views(req, slot, None),
        ["views", v] if is(Method::GET) => view(req, slot, v),
        ["views", v, "data"] if is(Method::GET) => view_data(req, slot, v, sh.max_read),
        [
            kind @ ("views" | "lists"),
            object,
            "readRequests",
            tail @ ..,
        ] => large_read::handle(&sh.reads, req, slot, kind, object, tail),
        ["lists"] if is(Method::GET) => lists(req, slot),
        ["lists", l] if is(Method::GET) => list_metadata(req, slot, l),
        ["lists", l, "items"] if is(Method::GET) => list_items(req, slot, l, sh.max_read),
        ["lists", l, "items"] if is(Method::POST) => match req.q("action") {
            Some("add") => write_items(req, slot, l, ItemOp::Add),
            Some("delete") => write_items(req, slot, l, ItemOp::Delete),
            _ => wire::bad_request(
                "Mandatory query parameter 'action' is missing or invalid",
                &req.path,
            ),
        },
        ["lists", l, "items"] if is(Method::PUT) => write_items(req, slot, l, ItemOp::Update),
        ["lists", l, "resetIndex"] if is(Method::POST) => reset_index(req, slot, l),
        ["modules"]
        | ["modules", _, "lineItems" | "views" | "data"]
        | ["lineItems"]
        | ["lineItems", _, "dimensions"]
        | ["dimensions", _, "items"]
        | ["views"]
        | ["views", _]
        | ["views", _, "data"]
        | ["lists"]
        | ["lists", _]
        | ["lists", _, "items" | "resetIndex"] => mna(),
        [first, ..] if bulk::owns(first) => bulk::handle(req, slot, rest),
        _ => wire::not_found(&req.path),
    }
}

// ---- users, workspaces, models ----

fn user_json(sh: &Shared, u: usize) -> Value {
    let Some(user) = sh.auth.users.get(u) else {
        return Value::Null;
    };
    let local = user.email.split('@').next().unwrap_or("");
    let mut first: Vec<char> = local.chars().collect();
    if let Some(c) = first.first_mut() {
        *c = c.to_ascii_uppercase();
    }
    json!({
        "id": user.guid,
        "active": true,
        "email": user.email,
        "emailOptIn": false,
        "firstName": first.into_iter().collect::<String>(),
        "lastName": "User",
        "customerId": sh.tenant.customer_guid,
        "lastLoginDate": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

fn users(sh: &Shared, req: &Req, one: Option<usize>) -> Response {
    if let Some(u) = one {
        return envelope(
            req.schema("objects/user"),
            None,
            vec![("user", user_json(sh, u))],
        );
    }
    let page = match Page::read(req, false) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let total = sh.auth.users.len();
    let list: Vec<Value> = page.range(total).map(|u| user_json(sh, u)).collect();
    envelope(
        req.schema("objects/user"),
        Some(page.meta(req, list.len(), total)),
        vec![("users", Value::Array(list))],
    )
}

fn model_size(md: &ModelData) -> u64 {
    let items: usize = md.lists.iter().map(|l| l.len()).sum();
    let cells: usize = md
        .modules
        .iter()
        .map(|m| md.lists.get(m.list).map_or(0, |l| l.len()) * m.line_items.len())
        .sum();
    let files: usize = md
        .files
        .values()
        .map(|f| f.chunks.values().map(Vec::len).sum::<usize>())
        .sum();
    (1_000_000 + items * 64 + cells * 16 + files) as u64
}

fn workspaces(sh: &Shared, req: &Req, one: Option<&str>) -> Response {
    let details = req.flag("tenantDetails");
    let ws_json = |i: usize| -> Value {
        let w = &sh.tenant.workspaces[i];
        let mut v = json!({"id": w.id, "name": w.name, "active": true});
        if details || one.is_some() {
            let used: u64 = sh
                .tenant
                .models
                .iter()
                .filter(|m| m.workspace == i)
                .map(|m| model_size(&model_lock(&m.data)))
                .sum();
            v["sizeAllowance"] = json!(w.size_allowance);
            v["currentSize"] = json!(used);
        }
        v
    };
    if let Some(id) = one {
        return match sh.tenant.workspace(id) {
            Some((i, _)) => envelope(
                req.schema("objects/workspace"),
                None,
                vec![("workspace", ws_json(i))],
            ),
            None => wire::not_found(&req.path),
        };
    }
    let page = match Page::read(req, false) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let total = sh.tenant.workspaces.len();
    let list: Vec<Value> = page.range(total).map(ws_json).collect();
    envelope(
        req.schema("objects/workspace"),
        Some(page.meta(req, list.len(), total)),
        vec![("workspaces", Value::Array(list))],
    )
}

fn model_json(sh: &Shared, req: &Req, slot: &ModelSlot, details: bool, single: bool) -> Value {
    let md = model_lock(&slot.data);
    let ws = sh.tenant.workspaces.get(slot.workspace);
    let mut v = json!({
        "id": slot.id,
        "name": slot.name,
        "activeState": "UNLOCKED",
        "lastSavedSerialNumber": md.serial.to_string(),
        "lastModifiedByUserGuid": sh.auth.users.first().map(|u| u.guid.clone()).unwrap_or_default(),
        "currentWorkspaceId": ws.map(|w| w.id.clone()).unwrap_or_default(),
        "currentWorkspaceName": ws.map(|w| w.name.clone()).unwrap_or_default(),
        "modelUrl": format!("{}/models/{}", req.base, slot.id),
        "categoryValues": [],
        "isoCreationDate": "2025-01-06T09:00:00.000+0000",
        "lastModified": md.last_modified.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string(),
    });
    if details {
        v["memoryUsage"] = json!(model_size(&md));
    }
    if single && details {
        v["modelTransactionRunning"] = json!(md.busy());
    }
    v
}

fn models(sh: &Shared, req: &Req, ws: Option<&str>, one: Option<&str>) -> Response {
    let details = req.flag("modelDetails");
    if let Some(id) = one {
        return match sh.tenant.model(id) {
            Some(slot) => envelope(
                req.schema("objects/model"),
                None,
                vec![("model", model_json(sh, req, slot, details, true))],
            ),
            None => wire::not_found(&req.path),
        };
    }
    let ws_index = match ws {
        None => None,
        Some(id) => match sh.tenant.workspace(id) {
            Some((i, _)) => Some(i),
            None => return wire::not_found(&req.path),
        },
    };
    let page = match Page::read(req, false) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let all: Vec<&ModelSlot> = sh
        .tenant
        .models
        .iter()
        .filter(|m| ws_index.is_none_or(|w| m.workspace == w))
        .collect();
    let list: Vec<Value> = all[page.range(all.len())]
        .iter()
        .map(|m| model_json(sh, req, m, details, false))
        .collect();
    envelope(
        req.schema("objects/model"),
        Some(page.meta(req, list.len(), all.len())),
        vec![("models", Value::Array(list))],
    )
}

fn status(_sh: &Shared, _req: &Req, slot: &ModelSlot) -> Response {
    let md = model_lock(&slot.data);
    let now = chrono::Utc::now().timestamp_millis();
    let body = match md.tasks.running() {
        Some(t) => {
            let task = md.tasks.task_json(t, true);
            let is_export = md.exports.iter().any(|e| e.id == t.action);
            json!({"requestStatus": {
                "peakMemoryUsageEstimate": null,
                "peakMemoryUsageTime": null,
                "progress": task["progress"],
                "currentStep": "Processing ...",
                "tooltip": action_name(&md, t.action),
                "taskId": t.id,
                "creationTime": now,
                "exportTaskType": if is_export { json!("TABULAR_MULTI_COLUMN") } else { Value::Null },
            }})
        }
        None => json!({"requestStatus": {
            "peakMemoryUsageEstimate": null,
            "peakMemoryUsageTime": null,
            "progress": -1.0,
            "currentStep": if md.open { "Open" } else { "Closed" },
            "tooltip": null,
            "taskId": null,
            "creationTime": now,
            "exportTaskType": null,
        }}),
    };
    ok_json(body)
}

pub fn action_name(md: &ModelData, id: u64) -> String {
    md.imports
        .iter()
        .find(|i| i.id == id)
        .map(|i| i.name.clone())
        .or_else(|| {
            md.exports
                .iter()
                .find(|e| e.id == id)
                .map(|e| e.name.clone())
        })
        .or_else(|| {
            md.processes
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.name.clone())
        })
        .unwrap_or_default()
}

// ---- structure ----

fn model_schema(req: &Req, slot: &ModelSlot, kind: &str) -> String {
    req.schema(&format!("models/{}/objects/{kind}", slot.id))
}

fn paged(req: &Req, schema: String, key: &str, all: Vec<Value>) -> Response {
    let page = match Page::read(req, false) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let total = all.len();
    let range = page.range(total);
    let list: Vec<Value> = all
        .into_iter()
        .skip(range.start)
        .take(range.len())
        .collect();
    envelope(
        schema,
        Some(page.meta(req, list.len(), total)),
        vec![(key, Value::Array(list))],
    )
}

fn modules(req: &Req, slot: &ModelSlot) -> Response {
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
            _ => {}
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

fn line_items(req: &Req, slot: &ModelSlot, module: Option<&str>) -> Response {
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

fn line_item_dimensions(req: &Req, slot: &ModelSlot, li: &str) -> Response {
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

fn dimension_items(req: &Req, slot: &ModelSlot, d: &str, lookup: bool, max: usize) -> Response {
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

fn views(req: &Req, slot: &ModelSlot, module: Option<&str>) -> Response {
    let all = {
        let md = model_lock(&slot.data);
        let filter = match module {
            Some(key) => match md.find_module(key) {
                Some(m) => Some(m),
                None => return wire::not_found(&req.path),
            },
            None => None,
        };
        md.views
            .iter()
            .filter(|v| filter.is_none_or(|m| v.module == m))
            .map(|v| {
                json!({
                    "code": "",
                    "id": v.id.to_string(),
                    "name": v.name,
                    "moduleId": md.modules[v.module].id.to_string(),
                })
            })
            .collect()
    };
    paged(req, req.schema("objects/view"), "views", all)
}

fn view(req: &Req, slot: &ModelSlot, v: &str) -> Response {
    let md = model_lock(&slot.data);
    let Some(vi) = md.find_view(v) else {
        return wire::not_found(&req.path);
    };
    let view = &md.views[vi];
    let list = &md.lists[md.modules[view.module].list];
    let mut body = wire::envelope_value(req.schema("objects/view"), None, Vec::new());
    body["viewName"] = json!(view.name);
    body["viewId"] = json!(view.id.to_string());
    body["rows"] = json!([{"id": list.id.to_string(), "name": list.name}]);
    body["columns"] = json!([{"id": "101999999999", "name": "Line items"}]);
    body["pages"] = json!([]);
    ok_json(body)
}

fn view_data(req: &Req, slot: &ModelSlot, v: &str, max: usize) -> Response {
    let json_wanted = !req.wants_csv()
        && req
            .header(axum::http::header::ACCEPT)
            .is_some_and(|a| a.contains("application/json"));
    if json_wanted && req.q("format") != Some("v1") {
        return wire::bad_request("Mandatory query parameter 'format' is missing", &req.path);
    }
    // The simulator's views have nothing on pages, so any page selector names a dimension
    // that is not on the view's pages.
    let selectors: Vec<&str> = req
        .query
        .iter()
        .filter(|(k, _)| k == "pages")
        .flat_map(|(_, v)| v.split(','))
        .filter(|s| !s.is_empty())
        .collect();
    if !selectors.is_empty() {
        return wire::bad_request(
            &format!("Invalid page selector [{}]", selectors.join(",")),
            &req.path,
        );
    }
    let md = model_lock(&slot.data);
    let Some(vi) = md.find_view(v) else {
        return wire::not_found(&req.path);
    };
    let view = &md.views[vi];
    let list = &md.lists[md.modules[view.module].list];
    if list.len().saturating_mul(view.line_items.len()) > max {
        return wire::bad_request(
            &format!("The view has more than {} cells", grouped(max)),
            &req.path,
        );
    }
    if json_wanted {
        let cols: Vec<Value> = view
            .line_items
            .iter()
            .map(|&li| json!([md.line_items[li].name]))
            .collect();
        let rows: Vec<Value> = list
            .iter()
            .map(|(i, item)| {
                let cells: Vec<String> = view
                    .line_items
                    .iter()
                    .map(|&li| md.cell_text(li, i))
                    .collect();
                json!({"rowCoordinates": [&*item.name], "cells": cells})
            })
            .collect();
        return ok_json(json!({"columnCoordinates": cols, "rows": rows}));
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec![String::new()];
    header.extend(
        view.line_items
            .iter()
            .map(|&li| md.line_items[li].name.clone()),
    );
    let _ = w.write_record(&header);
    let mut rec = Vec::with_capacity(header.len());
    for (i, item) in list.iter() {
        rec.clear();
        rec.push(item.name.to_string());
        rec.extend(view.line_items.iter().map(|&li| md.cell_text(li, i)));
        let _ = w.write_record(&rec);
    }
    wire::bytes(
        StatusCode::OK,
        "text/csv",
        w.into_inner().unwrap_or_default(),
    )
}

/// `1000000` as `1,000,000`, as Anaplan words its limits.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---- cell writes ----

#[derive(Deserialize)]
struct CellWrite<'a> {
    #[serde(rename = "lineItemId", borrow, default)]
    line_item_id: Option<Scalar<'a>>,
    #[serde(rename = "lineItemName", borrow, default)]
    line_item_name: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    dimensions: Vec<DimRef<'a>>,
    #[serde(borrow, default)]
    value: Option<CellScalar<'a>>,
}

#[derive(Deserialize)]
struct DimRef<'a> {
    #[serde(rename = "dimensionId", borrow, default)]
    dimension_id: Option<Scalar<'a>>,
    #[serde(rename = "dimensionName", borrow, default)]
    dimension_name: Option<Scalar<'a>>,
    #[serde(rename = "itemId", borrow, default)]
    item_id: Option<Scalar<'a>>,
    #[serde(rename = "itemName", borrow, default)]
    item_name: Option<Scalar<'a>>,
    #[serde(rename = "itemCode", borrow, default)]
    item_code: Option<Scalar<'a>>,
}

fn busy(req: &Req) -> Response {
    wire::error(
        StatusCode::CONFLICT,
        "Model or object busy, conflicting action, state mismatch",
        &req.path,
    )
}

fn write_cells(req: &Req, slot: &ModelSlot, module: &str) -> Response {
    if req.body.len() > MAX_CELL_BODY {
        return wire::bad_request("The request is larger than 15 MB", &req.path);
    }
    let cells: Vec<CellWrite> = match serde_json::from_slice(&req.body) {
        Ok(c) => c,
        Err(e) => return wire::bad_request(&format!("Invalid request body: {e}"), &req.path),
    };
    if cells.len() > MAX_CELLS {
        return wire::bad_request("More than 100,000 cells in one request", &req.path);
    }
    let mut md = model_lock(&slot.data);
    let Some(m) = md.find_module(module) else {
        return wire::not_found(&req.path);
    };
    if md.busy() {
        return busy(req);
    }
    let list_index = md.modules[m].list;
    let (list_id, list_name) = {
        let l = &md.lists[list_index];
        (l.id, l.name.clone())
    };
    let mut changed = 0usize;
    let mut failures = Vec::new();
    for (k, cell) in cells.iter().enumerate() {
        match write_cell(&mut md, m, list_index, list_id, &list_name, cell) {
            Ok(()) => changed += 1,
            Err((kind, why)) => failures.push(json!({
                "requestIndex": k,
                "failureType": kind,
                "failureMessageDetails": why,
            })),
        }
    }
    if changed > 0 {
        md.touch();
    }
    envelope(
        model_schema(req, slot, "cellWrite"),
        None,
        vec![
            ("numberOfCellsChanged", json!(changed)),
            ("failures", Value::Array(failures)),
        ],
    )
}

fn write_cell(
    md: &mut ModelData,
    module: usize,
    list_index: usize,
    list_id: u64,
    list_name: &str,
    cell: &CellWrite,
) -> Result<(), (&'static str, String)> {
    let invalid = |why: String| ("cellIsInvalid", why);
    let li_id = cell.line_item_id.as_ref().and_then(Scalar::id);
    let li_name = cell.line_item_name.as_ref().and_then(|n| match n {
        Scalar::Str(s) => Some(s.as_ref()),
        _ => None,
    });
    let li = md.modules[module]
        .line_items
        .iter()
        .copied()
        .find(|&li| {
            let l = &md.line_items[li];
            li_id.is_some_and(|id| l.id == id) || li_name.is_some_and(|n| l.name == n)
        })
        .ok_or_else(|| invalid("Line item not found in the module".to_string()))?;
    let [dim] = cell.dimensions.as_slice() else {
        return Err(invalid(format!(
            "Expected exactly one dimension ({list_name}), got {}",
            cell.dimensions.len()
        )));
    };
    let dim_ok = dim.dimension_id.as_ref().and_then(Scalar::id) == Some(list_id)
        || matches!(&dim.dimension_name, Some(Scalar::Str(n)) if n == list_name);
    if !dim_ok {
        return Err(invalid("Dimension not found on the line item".to_string()));
    }
    let list = &md.lists[list_index];
    fn text<'b>(s: &'b Option<Scalar<'_>>) -> Option<Cow<'b, str>> {
        s.as_ref().and_then(|s| s.text())
    }
    let item = if let Some(id) = text(&dim.item_id) {
        list.by_id(&id)
    } else if let Some(code) = text(&dim.item_code) {
        list.by_code(&code)
    } else if let Some(name) = text(&dim.item_name) {
        list.by_name(&name)
    } else {
        None
    }
    .ok_or_else(|| invalid(format!("Item not found in {list_name}")))?;
    if md.line_items[li].formula.is_some() {
        return Err((
            "cellIsCalculated",
            "The cell is calculated and cannot be written".to_string(),
        ));
    }
    let value: Input = cell
        .value
        .as_ref()
        .and_then(|v| v.0.input())
        .ok_or_else(|| invalid("A value is required".to_string()))?;
    md.set_cell(li, item, value).map_err(invalid)
}

// ---- lists ----

fn find_list(req: &Req, md: &ModelData, l: &str) -> Result<usize, Response> {
    md.lists
        .iter()
        .position(|x| x.id.to_string() == l)
        .ok_or_else(|| wire::not_found(&req.path))
}

fn lists(req: &Req, slot: &ModelSlot) -> Response {
    let all = {
        let md = model_lock(&slot.data);
        md.lists
            .iter()
            .map(|l| json!({"id": l.id.to_string(), "name": l.name, "code": ""}))
            .collect()
    };
    paged(req, model_schema(req, slot, "list"), "lists", all)
}

fn list_metadata(req: &Req, slot: &ModelSlot, l: &str) -> Response {
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

fn list_items(req: &Req, slot: &ModelSlot, l: &str, max: usize) -> Response {
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
enum ItemOp {
    Add,
    Update,
    Delete,
}

fn write_items(req: &Req, slot: &ModelSlot, l: &str, op: ItemOp) -> Response {
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

fn reset_index(req: &Req, slot: &ModelSlot, l: &str) -> Response {
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
