//! Test and operator hooks under `/__sim/…` (JSON), the HTTP twin of [`super::SimHandle`]'s
//! methods, so a simulator started from the CLI can be inspected and poked with curl:
//!
//! | call | does |
//! |---|---|
//! | `GET /__sim/faults`, `PUT /__sim/faults` | read or replace the [`super::Faults`] |
//! | `GET /__sim/rate-limit`, `PUT /__sim/rate-limit` `{"per_minute":N}` | the tenant limit (0 = off) |
//! | `POST /__sim/tokens/expire` | every live token expires now |
//! | `GET /__sim/requests`, `DELETE /__sim/requests` | the request log and counts, or reset them |
//! | `GET /__sim/models/{m}/modules/{module}/cells` | `{code: {line item: value}}` |
//! | `GET /__sim/models/{m}/lists/{list}/items` | `[{id, name, code, properties}]` |
//!
//! Modules and lists are named by ID or by name. Admin calls are not rate limited, faulted
//! or logged. Each must carry the simulator's token in the `X-Sim-Token` header (401 without,
//! 403 with a wrong one; see [`crate::hooks_token`]), e.g.
//! `curl -H "X-Sim-Token: $TOKEN" localhost:8090/__sim/requests`.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::faults::Faults;
use super::model::CellValue;
use super::server::{Shared, lock, model_lock};
use super::wire::{self, Req, ok_json};

pub fn cell_json(v: &CellValue) -> Value {
    match v {
        CellValue::Number(n) => json!(n),
        CellValue::Boolean(b) => json!(b),
        other => json!(other.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimit {
    per_minute: u32,
}

pub fn handle(sh: &Shared, req: &Req) -> Response {
    let decoded: Vec<String> = req
        .path
        .trim_start_matches("/__sim/")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| wire::percent_decode(&s.replace('+', "%2B")))
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let m = &req.method;
    match segs.as_slice() {
        ["faults"] if m == Method::GET => ok_json(json!(lock(&sh.faults).faults)),
        ["faults"] if m == Method::PUT => match Faults::from_json(&req.body) {
            Ok(f) => {
                lock(&sh.faults).set(f.clone());
                ok_json(json!(f))
            }
            Err(e) => wire::bad_request(&format!("Invalid faults: {e}"), &req.path),
        },
        ["rate-limit"] if m == Method::GET => {
            let b = lock(&sh.bucket);
            ok_json(json!({"per_minute": b.per_minute(), "available": b.available()}))
        }
        ["rate-limit"] if m == Method::PUT => {
            match serde_json::from_slice::<RateLimit>(&req.body) {
                // serde names neither the field nor the range: say both.
                Err(_) => wire::bad_request(
                    &format!(
                        "Invalid rate limit: per_minute must be a whole number from 0 (off) to {}",
                        u32::MAX
                    ),
                    &req.path,
                ),
                Ok(r) => {
                    *lock(&sh.bucket) = super::faults::Bucket::new(r.per_minute);
                    ok_json(json!({"per_minute": r.per_minute}))
                }
            }
        }
        ["tokens", "expire"] if m == Method::POST => {
            ok_json(json!({"expired": sh.auth.expire_all()}))
        }
        ["requests"] if m == Method::GET => {
            let log = lock(&sh.log);
            ok_json(json!({"counts": log.counts, "entries": log.entries()}))
        }
        ["requests"] if m == Method::DELETE => {
            lock(&sh.log).clear();
            wire::no_content()
        }
        ["models", model, "modules", module, "cells"] if m == Method::GET => {
            match module_cells(sh, model, module) {
                Some(v) => ok_json(v),
                None => wire::not_found(&req.path),
            }
        }
        ["models", model, "lists", list, "items"] if m == Method::GET => {
            match list_items(sh, model, list) {
                Some(v) => ok_json(v),
                None => wire::not_found(&req.path),
            }
        }
        _ => wire::error(StatusCode::NOT_FOUND, "Not Found", &req.path),
    }
}

fn module_cells(sh: &Shared, model: &str, module: &str) -> Option<Value> {
    let slot = sh.tenant.model(model)?;
    let md = model_lock(&slot.data);
    let m = md.find_module(module)?;
    let cells = md.module_cells(m);
    Some(Value::Object(
        cells
            .into_iter()
            .map(|(code, row)| {
                let row = row.iter().map(|(k, v)| (k.clone(), cell_json(v))).collect();
                (code, Value::Object(row))
            })
            .collect(),
    ))
}

fn list_items(sh: &Shared, model: &str, list: &str) -> Option<Value> {
    let slot = sh.tenant.model(model)?;
    let md = model_lock(&slot.data);
    let l = md.find_list(list)?;
    Some(
        md.lists[l]
            .snapshot()
            .into_iter()
            .map(
                |i| json!({"id": i.id, "name": i.name, "code": i.code, "properties": i.properties}),
            )
            .collect(),
    )
}
