//! Views: listing them, a view's axes, and its data as JSON (`format=v1`) or CSV.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{grouped, paged};
use crate::anaplan::model::ModelSlot;
use crate::anaplan::server::model_lock;
use crate::anaplan::wire::{self, Req, ok_json};

pub(super) fn views(req: &Req, slot: &ModelSlot, module: Option<&str>) -> Response {
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

pub(super) fn view(req: &Req, slot: &ModelSlot, v: &str) -> Response {
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

pub(super) fn view_data(req: &Req, slot: &ModelSlot, v: &str, max: usize) -> Response {
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
