//! Tenant-wide metadata: users, workspaces and models (with their sizes), and a model's
//! status (what its running task, if any, is doing).

use axum::response::Response;
use serde_json::{Value, json};

use crate::anaplan::model::{ModelData, ModelSlot};
use crate::anaplan::server::{Shared, model_lock};
use crate::anaplan::wire::{self, Page, Req, envelope, ok_json};

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

pub(super) fn users(sh: &Shared, req: &Req, one: Option<usize>) -> Response {
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

pub(super) fn workspaces(sh: &Shared, req: &Req, one: Option<&str>) -> Response {
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

pub(super) fn models(sh: &Shared, req: &Req, ws: Option<&str>, one: Option<&str>) -> Response {
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

pub(super) fn status(_sh: &Shared, _req: &Req, slot: &ModelSlot) -> Response {
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
