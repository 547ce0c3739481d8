//! The Integration API (`/2/0/…`): the route table and the transactional endpoints. Bulk
//! endpoints are in `bulk.rs`, large-volume reads in `large_read.rs`.
//!
//! Model-scoped resources answer under `/workspaces/{ws}/models/{m}/…` and `/models/{m}/…`
//! alike; `GET /workspaces/{ws}/models/{m}` is 405, as on Anaplan.
//!
//! Rooms, by route group:
//! - `tenant.rs`: users, workspaces, models and a model's status.
//! - `structure.rs`: modules, line items and dimensions.
//! - `views.rs`: views and view data.
//! - `cells.rs`: cell writes.
//! - `lists.rs`: lists, list items and their writes.

mod cells;
mod lists;
mod structure;
mod tenant;
mod views;

use axum::http::{Method, StatusCode};
use axum::response::Response;

use super::bulk;
use super::large_read;
use super::server::{Shared, model_lock};
use super::wire::{self, Req};

/// At most this many cells per write.
pub const MAX_CELLS: usize = 100_000;
/// At most this many bytes per cell write.
pub const MAX_CELL_BODY: usize = 15 * 1024 * 1024;
/// At most this many list items per add, update or delete.
pub const MAX_ITEMS: usize = 100_000;
/// At most this many cells per view read, list items per list read, unless configured.
pub const MAX_READ: usize = 1_000_000;

/// Answers one `/2/0/…` request: the token first, then the route.
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
        ["users", "me"] => only_get(&|| tenant::users(sh, req, Some(user))),
        ["users"] => only_get(&|| tenant::users(sh, req, None)),
        ["users", id] => only_get(&|| match sh.auth.users.iter().position(|u| u.guid == *id) {
            Some(u) => tenant::users(sh, req, Some(u)),
            None => wire::not_found(&req.path),
        }),
        ["workspaces"] => only_get(&|| tenant::workspaces(sh, req, None)),
        ["workspaces", ws] => only_get(&|| tenant::workspaces(sh, req, Some(ws))),
        ["workspaces", ws, "models"] => only_get(&|| tenant::models(sh, req, Some(ws), None)),
        ["workspaces", _, "models", _] => wire::method_not_allowed(&req.path),
        ["workspaces", ws, "models", m, rest @ ..] => model_scoped(sh, req, Some(ws), m, rest),
        ["models"] => only_get(&|| tenant::models(sh, req, None, None)),
        ["models", m] => only_get(&|| tenant::models(sh, req, None, Some(m))),
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
        ["status"] if is(Method::GET) => tenant::status(sh, req, slot),
        ["open"] if is(Method::POST) => {
            model_lock(&slot.data).open = true;
            wire::bytes(StatusCode::ACCEPTED, "application/json", Vec::new())
        }
        ["close"] if is(Method::POST) => {
            model_lock(&slot.data).open = false;
            wire::no_content()
        }
        ["status"] | ["open"] | ["close"] => mna(),
        ["modules"] if is(Method::GET) => structure::modules(req, slot),
        ["modules", module, "lineItems"] if is(Method::GET) => {
            structure::line_items(req, slot, Some(module))
        }
        ["modules", module, "views"] if is(Method::GET) => views::views(req, slot, Some(module)),
        ["modules", module, "data"] if is(Method::POST) => cells::write_cells(req, slot, module),
        ["lineItems"] if is(Method::GET) => structure::line_items(req, slot, None),
        ["lineItems", li, "dimensions"] if is(Method::GET) => {
            structure::line_item_dimensions(req, slot, li)
        }
        ["dimensions", d, "items"] if is(Method::GET) => {
            structure::dimension_items(req, slot, d, false, sh.max_read)
        }
        ["dimensions", d, "items"] if is(Method::POST) => {
            structure::dimension_items(req, slot, d, true, sh.max_read)
        }
        ["views"] if is(Method::GET) => views::views(req, slot, None),
        ["views", v] if is(Method::GET) => views::view(req, slot, v),
        ["views", v, "data"] if is(Method::GET) => views::view_data(req, slot, v, sh.max_read),
        [
            kind @ ("views" | "lists"),
            object,
            "readRequests",
            tail @ ..,
        ] => large_read::handle(&sh.reads, req, slot, kind, object, tail),
        ["lists"] if is(Method::GET) => lists::lists(req, slot),
        ["lists", l] if is(Method::GET) => lists::list_metadata(req, slot, l),
        ["lists", l, "items"] if is(Method::GET) => lists::list_items(req, slot, l, sh.max_read),
        ["lists", l, "items"] if is(Method::POST) => match req.q("action") {
            Some("add") => lists::write_items(req, slot, l, lists::ItemOp::Add),
            Some("delete") => lists::write_items(req, slot, l, lists::ItemOp::Delete),
            _ => wire::bad_request(
                "Mandatory query parameter 'action' is missing or invalid",
                &req.path,
            ),
        },
        ["lists", l, "items"] if is(Method::PUT) => {
            lists::write_items(req, slot, l, lists::ItemOp::Update)
        }
        ["lists", l, "resetIndex"] if is(Method::POST) => lists::reset_index(req, slot, l),
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

// ---- helpers the route groups share ----

// Model-scoped listings are paged the same way here and in `bulk.rs`.
use super::wire::{model_schema, paged};

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

/// 409 for a write while a task holds the model lock.
fn busy(req: &Req) -> Response {
    wire::error(
        StatusCode::CONFLICT,
        "Model or object busy, conflicting action, state mismatch",
        &req.path,
    )
}
