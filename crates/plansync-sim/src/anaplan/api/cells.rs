//! Cell writes (`POST …/modules/{m}/data`): each cell names its line item and its one
//! dimension's item; failures are reported per cell, the others are written.

use std::borrow::Cow;

use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{MAX_CELL_BODY, MAX_CELLS, busy, model_schema};
use crate::anaplan::model::{Input, ModelData, ModelSlot};
use crate::anaplan::scalar::{CellScalar, Scalar};
use crate::anaplan::server::model_lock;
use crate::anaplan::wire::{self, Req, envelope};

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

pub(super) fn write_cells(req: &Req, slot: &ModelSlot, module: &str) -> Response {
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
