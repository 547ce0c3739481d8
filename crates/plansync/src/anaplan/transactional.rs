//! The transactional API: listings (paged), names to ids, view reads, cell writes and list
//! item writes, each split under the per-call limits, with per-cell and per-item failures
//! mapped back to the caller's input index.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use chrono::{DateTime, NaiveDate, Utc};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::Decimal;

use super::chunk::{chunk_ranges, join_json};
use super::error::AnaplanError;
use super::http::Request;
use super::limits::LOOKUP_CODES_PER_CALL;
use super::stats::CallKind;
use super::view::{CsvLayout, ViewData, parse_view_csv, parse_view_json};
use super::wire::{
    LineItem, ListItem, Model, Named, WireFailure, Workspace, parse_cell_write,
    parse_list_metadata, parse_list_properties, parse_list_write, parse_page,
};
use super::{AnaplanClient, seg};

/// A line item, by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineItemRef {
    Id(String),
    Name(String),
}

/// A dimension (list, Time, Versions…), by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DimRef {
    Id(String),
    Name(String),
}

/// An item of a dimension, by id, name or code (plansync keys list items by the CRM id as code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemRef {
    Id(String),
    Name(String),
    Code(String),
}

/// A value to write. Numbers go as JSON numbers written from their exact decimal text (never
/// through a float); a list-formatted line item takes the item's name as `Text`; an empty
/// `Text` clears a text cell (the API takes no null).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellValue {
    Text(String),
    Number(Decimal),
    Bool(bool),
    Date(NaiveDate),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellWrite {
    pub line_item: LineItemRef,
    /// Omitted for a dimensionless line item.
    pub dimensions: Vec<(DimRef, ItemRef)>,
    pub value: CellValue,
}

/// A cell Anaplan refused, by the caller's index into the slice given to `write_cells`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellFailure {
    pub index: usize,
    /// E.g. `cellIsCalculated`, `cellIsInvalid`.
    pub failure_type: String,
    pub details: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CellWriteOutcome {
    pub cells_changed: u64,
    pub failures: Vec<CellFailure>,
    /// API calls made (excluding retries).
    pub calls: usize,
}

/// One call of a cell write that Anaplan answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellCall {
    /// The cells it carried, as indices into the caller's slice.
    pub cells: Range<usize>,
    /// When it was first sent: a bound on when Anaplan applied its cells.
    pub sent_at: DateTime<Utc>,
    pub cells_changed: u64,
}

/// A cell write call by call ([`AnaplanClient::write_cells_by_call`]): what each answered
/// call carried, and where the write stopped if a call failed as a whole.
#[derive(Debug, Default)]
pub struct CellWriteCalls {
    /// The answered calls, in order.
    pub calls: Vec<CellCall>,
    /// Cells Anaplan refused, by the caller's index.
    pub failures: Vec<CellFailure>,
    /// The call that failed as a whole (after retries and re-authentication): its cells are
    /// not known to be written, and the cells after them were not sent.
    pub stopped: Option<(Range<usize>, AnaplanError)>,
}

/// A list item to add or update, keyed by code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListItemWrite {
    pub code: String,
    /// Required by Anaplan to add an item; the code is used when none is given.
    pub name: Option<String>,
    pub parent: Option<String>,
    pub properties: BTreeMap<String, String>,
    pub subsets: BTreeMap<String, bool>,
}

/// A list item Anaplan refused, by the caller's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFailure {
    pub index: usize,
    pub failure_type: String,
    pub details: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListWriteOutcome {
    pub added: u64,
    pub updated: u64,
    pub ignored: u64,
    pub failures: Vec<ItemFailure>,
    pub calls: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListDeleteOutcome {
    pub deleted: u64,
    pub failures: Vec<ItemFailure>,
    pub calls: usize,
}

/// One cell as the API's JSON, written by hand so a number keeps every digit.
pub fn encode_cell(cell: &CellWrite) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"{");
    match &cell.line_item {
        LineItemRef::Id(id) => key_string(&mut out, "lineItemId", id),
        LineItemRef::Name(name) => key_string(&mut out, "lineItemName", name),
    }
    if !cell.dimensions.is_empty() {
        out.extend_from_slice(b",\"dimensions\":[");
        for (n, (dim, item)) in cell.dimensions.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.push(b'{');
            match dim {
                DimRef::Id(id) => key_string(&mut out, "dimensionId", id),
                DimRef::Name(name) => key_string(&mut out, "dimensionName", name),
            }
            out.push(b',');
            match item {
                ItemRef::Id(id) => key_string(&mut out, "itemId", id),
                ItemRef::Name(name) => key_string(&mut out, "itemName", name),
                ItemRef::Code(code) => key_string(&mut out, "itemCode", code),
            }
            out.push(b'}');
        }
        out.push(b']');
    }
    out.extend_from_slice(b",\"value\":");
    match &cell.value {
        CellValue::Text(s) => json_string(&mut out, s),
        // `Decimal`'s text is `-?digits(.digits)?`, which is JSON number syntax.
        CellValue::Number(d) => out.extend_from_slice(d.to_string().as_bytes()),
        CellValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        CellValue::Date(d) => json_string(&mut out, &d.format("%Y-%m-%d").to_string()),
    }
    out.push(b'}');
    out
}

fn key_string(out: &mut Vec<u8>, key: &str, value: &str) {
    json_string(out, key);
    out.push(b':');
    json_string(out, value);
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[derive(Serialize)]
struct WireItem<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    properties: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    subsets: &'a BTreeMap<String, bool>,
}

fn encode_item(item: &ListItemWrite, adding: bool) -> Vec<u8> {
    let name = match (&item.name, adding) {
        (Some(n), _) => Some(n.as_str()),
        (None, true) => Some(item.code.as_str()),
        (None, false) => None,
    };
    let wire = WireItem {
        name,
        code: &item.code,
        parent: item.parent.as_deref(),
        properties: &item.properties,
        subsets: &item.subsets,
    };
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// Maps a chunk's failures to the caller's indexes: `origin[chunk.start + requestIndex]`.
fn map_failures(
    failures: Vec<WireFailure>,
    chunk: &Range<usize>,
    origin: &[usize],
    what: &'static str,
) -> Result<Vec<(usize, String, String)>, AnaplanError> {
    failures
        .into_iter()
        .map(|f| {
            let at = usize::try_from(f.request_index)
                .ok()
                .filter(|&i| i < chunk.len())
                .and_then(|i| origin.get(chunk.start + i))
                .ok_or_else(|| AnaplanError::Decode {
                    what,
                    status: 200,
                    content_type: "application/json".into(),
                    detail: format!(
                        "failure requestIndex {} outside the request of {} items",
                        f.request_index,
                        chunk.len()
                    ),
                    body: String::new(),
                })?;
            Ok((*at, f.failure_type, f.failure_message_details))
        })
        .collect()
}

impl AnaplanClient {
    /// GETs a paged collection, following `meta.paging` until `totalSize`.
    pub(super) async fn get_paged<T: DeserializeOwned>(
        &self,
        what: &'static str,
        path: &str,
        key: &str,
        extra: &[(&str, &str)],
    ) -> Result<Vec<T>, AnaplanError> {
        let limit = self.inner.config.page_size;
        let mut out = Vec::new();
        let mut offset: u64 = 0;
        loop {
            let mut req = Request::new(Method::GET, self.url(path), CallKind::Read)
                .query("limit", limit.to_string())
                .query("offset", offset.to_string());
            for (k, v) in extra {
                req = req.query(k, *v);
            }
            let r = self.call(req).await?;
            let (items, paging): (Vec<T>, _) =
                parse_page(what, key, r.status, &r.content_type, &r.body)?;
            let n = items.len() as u64;
            out.extend(items);
            let Some(p) = paging else { break };
            offset = p.offset.unwrap_or(offset) + p.current_page_size.unwrap_or(n).max(n);
            match p.total_size {
                Some(total) if n > 0 && offset < total => continue,
                _ => break,
            }
        }
        Ok(out)
    }

    pub async fn list_workspaces(&self) -> Result<Vec<Workspace>, AnaplanError> {
        self.get_paged(
            "workspaces",
            "/workspaces",
            "workspaces",
            &[("tenantDetails", "true")],
        )
        .await
    }

    /// Models of one workspace, or of the tenant.
    pub async fn list_models(&self, workspace: Option<&str>) -> Result<Vec<Model>, AnaplanError> {
        let path = match workspace {
            Some(ws) => format!("/workspaces/{}/models", seg(ws)),
            None => "/models".to_string(),
        };
        self.get_paged("models", &path, "models", &[]).await
    }

    pub async fn list_modules(&self, model: &str) -> Result<Vec<Named>, AnaplanError> {
        let path = format!("/models/{}/modules", seg(model));
        self.get_paged("modules", &path, "modules", &[]).await
    }

    /// Line items of a module, or of the whole model.
    pub async fn list_line_items(
        &self,
        model: &str,
        module: Option<&str>,
    ) -> Result<Vec<LineItem>, AnaplanError> {
        let path = match module {
            Some(m) => format!("/models/{}/modules/{}/lineItems", seg(model), seg(m)),
            None => format!("/models/{}/lineItems", seg(model)),
        };
        self.get_paged("line items", &path, "items", &[]).await
    }

    pub async fn list_lists(&self, model: &str) -> Result<Vec<Named>, AnaplanError> {
        let path = format!("/models/{}/lists", seg(model));
        self.get_paged("lists", &path, "lists", &[]).await
    }

    /// Every item of a list, with properties (`includeAll=true`).
    pub async fn list_items(&self, model: &str, list: &str) -> Result<Vec<ListItem>, AnaplanError> {
        self.read_list_items(model, list, true).await
    }

    /// How many items a list has (`metadata.itemCount` of `GET /models/{m}/lists/{l}`): one
    /// small call that tells whether the list can be read whole before reading it.
    pub async fn list_item_count(&self, model: &str, list: &str) -> Result<u64, AnaplanError> {
        let path = format!("/models/{}/lists/{}", seg(model), seg(list));
        let r = self
            .call(Request::new(Method::GET, self.url(&path), CallKind::Read))
            .await?;
        parse_list_metadata(r.status, &r.content_type, &r.body).map(|m| m.item_count)
    }

    /// The names of a list's properties (`metadata.properties` of `GET /models/{m}/lists/{l}`).
    pub async fn list_properties(
        &self,
        model: &str,
        list: &str,
    ) -> Result<Vec<String>, AnaplanError> {
        let path = format!("/models/{}/lists/{}", seg(model), seg(list));
        let r = self
            .call(Request::new(Method::GET, self.url(&path), CallKind::Read))
            .await?;
        parse_list_properties(r.status, &r.content_type, &r.body)
    }

    /// The items of `list` whose codes are among `codes` (`POST /models/{m}/dimensions/{l}/
    /// items` with `{"codes":[…]}`; a list's id is its dimension id): ids, names and codes,
    /// no properties. Codes no item has are left out. Unlike the plain list read this is not
    /// refused for a list of over 1,000,000 items. Sent `LOOKUP_CODES_PER_CALL` codes a call.
    pub async fn lookup_list_items(
        &self,
        model: &str,
        list: &str,
        codes: &[String],
    ) -> Result<Vec<ListItem>, AnaplanError> {
        let path = format!("/models/{}/dimensions/{}/items", seg(model), seg(list));
        let mut found = Vec::new();
        for chunk in codes.chunks(LOOKUP_CODES_PER_CALL) {
            let body =
                serde_json::to_vec(&serde_json::json!({ "codes": chunk })).unwrap_or_default();
            // A lookup changes nothing: safe to resend.
            let req = Request::new(Method::POST, self.url(&path), CallKind::Read)
                .json(body)
                .idempotent(true);
            let r = self.call(req).await?;
            let (items, _) = parse_page(
                "dimension items",
                "items",
                r.status,
                &r.content_type,
                &r.body,
            )?;
            found.extend(items);
        }
        Ok(found)
    }

    async fn read_list_items(
        &self,
        model: &str,
        list: &str,
        include_all: bool,
    ) -> Result<Vec<ListItem>, AnaplanError> {
        let path = format!("/models/{}/lists/{}/items", seg(model), seg(list));
        let mut req = Request::new(Method::GET, self.url(&path), CallKind::Read);
        if include_all {
            req = req.query("includeAll", "true");
        }
        let r = self.call(req).await?;
        parse_page(
            "list items",
            "listItems",
            r.status,
            &r.content_type,
            &r.body,
        )
        .map(|(v, _)| v)
    }

    /// The id of the module a rule file names (an id is accepted as is).
    pub async fn module_id(&self, model: &str, name: &str) -> Result<String, AnaplanError> {
        let modules = self.list_modules(model).await?;
        pick(
            "module",
            model,
            name,
            modules.iter().map(|m| (&m.id, &m.name)),
        )
    }

    pub async fn list_id(&self, model: &str, name: &str) -> Result<String, AnaplanError> {
        let lists = self.list_lists(model).await?;
        pick("list", model, name, lists.iter().map(|l| (&l.id, &l.name)))
    }

    /// The id of a line item of `module` (an id or a name).
    pub async fn line_item_id(
        &self,
        model: &str,
        module: &str,
        name: &str,
    ) -> Result<String, AnaplanError> {
        let items = self.list_line_items(model, Some(module)).await?;
        pick(
            "line item",
            model,
            name,
            items.iter().map(|l| (&l.id, &l.name)),
        )
    }

    /// A view's cells as JSON (`format=v1`). A module's default view has the module's id.
    /// `pages` are (dimension id, item id) selectors.
    pub async fn read_view_json(
        &self,
        model: &str,
        view: &str,
        pages: &[(String, String)],
    ) -> Result<ViewData, AnaplanError> {
        let r = self
            .call(self.view_request(model, view, pages, "application/json", true))
            .await?;
        parse_view_json(r.status, &r.content_type, &r.body)
    }

    /// A view's cells as CSV, read with the caller's layout.
    pub async fn read_view_csv(
        &self,
        model: &str,
        view: &str,
        pages: &[(String, String)],
        layout: CsvLayout,
    ) -> Result<ViewData, AnaplanError> {
        let r = self
            .call(self.view_request(model, view, pages, "text/csv", false))
            .await?;
        parse_view_csv(r.status, &r.content_type, &r.body, layout)
    }

    fn view_request(
        &self,
        model: &str,
        view: &str,
        pages: &[(String, String)],
        accept: &'static str,
        json: bool,
    ) -> Request {
        let path = format!("/models/{}/views/{}/data", seg(model), seg(view));
        let mut req = Request::new(Method::GET, self.url(&path), CallKind::Read);
        req.accept = Some(accept);
        if json {
            req = req.query("format", "v1");
        }
        if !pages.is_empty() {
            let sel: Vec<String> = pages.iter().map(|(d, i)| format!("{d}:{i}")).collect();
            req = req.query("pages", sel.join(","));
        }
        req
    }

    /// Writes cells, as few calls as the limits allow. Cells Anaplan refuses come back in
    /// `failures` by their index in `cells`; an `Err` means a call failed as a whole.
    pub async fn write_cells(
        &self,
        model: &str,
        module: &str,
        cells: &[CellWrite],
    ) -> Result<CellWriteOutcome, AnaplanError> {
        let by_call = self.write_cells_by_call(model, module, cells).await?;
        if let Some((_, e)) = by_call.stopped {
            return Err(e);
        }
        Ok(CellWriteOutcome {
            cells_changed: by_call.calls.iter().map(|c| c.cells_changed).sum(),
            calls: by_call.calls.len(),
            failures: by_call.failures,
        })
    }

    /// The bytes `cell` makes in a write's body, if that is over what one call may carry:
    /// such a cell is refused whatever else is sent.
    pub fn cell_too_large(&self, cell: &CellWrite) -> Option<usize> {
        let size = encode_cell(cell).len();
        (size.saturating_add(2) > self.inner.config.max_write_bytes).then_some(size)
    }

    /// Writes cells as [`AnaplanClient::write_cells`] does, split under the per-call limits,
    /// and reports each call: the cells it carried and when it was sent. The first call that
    /// fails as a whole ends the write (see [`CellWriteCalls::stopped`]); the caller decides
    /// whether the rest is worth another try. An error is returned only when nothing could be
    /// sent: a cell too large for any call (see [`AnaplanClient::cell_too_large`]).
    pub async fn write_cells_by_call(
        &self,
        model: &str,
        module: &str,
        cells: &[CellWrite],
    ) -> Result<CellWriteCalls, AnaplanError> {
        let encoded: Vec<Vec<u8>> = cells.iter().map(encode_cell).collect();
        let sizes: Vec<usize> = encoded.iter().map(Vec::len).collect();
        let cfg = &self.inner.config;
        let ranges = chunk_ranges(&sizes, cfg.max_cells_per_write, cfg.max_write_bytes, 2)?;
        let identity: Vec<usize> = (0..cells.len()).collect();
        let path = format!("/models/{}/modules/{}/data", seg(model), seg(module));
        let mut report = CellWriteCalls::default();
        for range in ranges {
            let body = join_json(b"", &encoded[range.clone()], b"");
            // Setting a cell to a value twice is harmless: the write may be retried.
            let req = Request::new(Method::POST, self.url(&path), CallKind::Write)
                .json(body)
                .idempotent(true);
            let sent_at = Utc::now();
            let answered = match self.call(req).await {
                Ok(r) => parse_cell_write(r.status, &r.content_type, &r.body),
                Err(e) => Err(e),
            };
            let failures = answered.and_then(|parsed| {
                let failures = map_failures(parsed.failures, &range, &identity, "cell write")?;
                Ok((parsed.number_of_cells_changed.unwrap_or(0), failures))
            });
            let (changed, failures) = match failures {
                Ok(done) => done,
                Err(e) => {
                    report.stopped = Some((range, e));
                    return Ok(report);
                }
            };
            for (index, failure_type, details) in failures {
                report.failures.push(CellFailure {
                    index,
                    failure_type,
                    details,
                });
            }
            report.calls.push(CellCall {
                cells: range,
                sent_at,
                cells_changed: changed,
            });
        }
        Ok(report)
    }

    /// Adds items whose code the list does not have and updates the others: one read of the
    /// list's codes, then one update and one add call per 100,000 items.
    pub async fn upsert_list_items(
        &self,
        model: &str,
        list: &str,
        items: &[ListItemWrite],
    ) -> Result<ListWriteOutcome, AnaplanError> {
        let existing: HashSet<String> = self
            .read_list_items(model, list, false)
            .await?
            .into_iter()
            .filter_map(|i| i.code)
            .collect();
        let (update, add): (Vec<usize>, Vec<usize>) =
            (0..items.len()).partition(|&i| existing.contains(&items[i].code));
        let mut outcome = self
            .write_list_items_at(model, list, items, &update, false)
            .await?;
        let added = self
            .write_list_items_at(model, list, items, &add, true)
            .await?;
        outcome.calls += 1 + added.calls;
        outcome.added = added.added;
        outcome.ignored += added.ignored;
        outcome.failures.extend(added.failures);
        outcome.failures.sort_by_key(|f| f.index);
        Ok(outcome)
    }

    /// Adds items (`POST …/items?action=add`).
    pub async fn add_list_items(
        &self,
        model: &str,
        list: &str,
        items: &[ListItemWrite],
    ) -> Result<ListWriteOutcome, AnaplanError> {
        let all: Vec<usize> = (0..items.len()).collect();
        self.write_list_items_at(model, list, items, &all, true)
            .await
    }

    /// Updates items by code (`PUT …/items`).
    pub async fn update_list_items(
        &self,
        model: &str,
        list: &str,
        items: &[ListItemWrite],
    ) -> Result<ListWriteOutcome, AnaplanError> {
        let all: Vec<usize> = (0..items.len()).collect();
        self.write_list_items_at(model, list, items, &all, false)
            .await
    }

    /// Adds (`POST …/items?action=add`) or updates (`PUT …/items`) the items at `which`,
    /// chunked; failures come back at the caller's indexes. Only updates are safe to resend.
    async fn write_list_items_at(
        &self,
        model: &str,
        list: &str,
        items: &[ListItemWrite],
        which: &[usize],
        add: bool,
    ) -> Result<ListWriteOutcome, AnaplanError> {
        let encoded: Vec<Vec<u8>> = which.iter().map(|&i| encode_item(&items[i], add)).collect();
        let path = format!("/models/{}/lists/{}/items", seg(model), seg(list));
        let (method, action, idempotent) = if add {
            (Method::POST, Some("add"), false)
        } else {
            (Method::PUT, None, true)
        };
        let mut outcome = ListWriteOutcome::default();
        for (range, r) in self
            .list_calls(&path, method, action, &encoded, idempotent)
            .await?
        {
            outcome.calls += 1;
            outcome.added += r.added.unwrap_or(0);
            outcome.updated += r.updated.unwrap_or(0);
            outcome.ignored += r.ignored.unwrap_or(0);
            push_item_failures(&mut outcome.failures, r.failures, &range, which)?;
        }
        Ok(outcome)
    }

    /// Deletes items by code (`POST …/items?action=delete`).
    pub async fn delete_list_items(
        &self,
        model: &str,
        list: &str,
        codes: &[String],
    ) -> Result<ListDeleteOutcome, AnaplanError> {
        let encoded: Vec<Vec<u8>> = codes
            .iter()
            .map(|c| serde_json::to_vec(&serde_json::json!({ "code": c })).unwrap_or_default())
            .collect();
        let all: Vec<usize> = (0..codes.len()).collect();
        let path = format!("/models/{}/lists/{}/items", seg(model), seg(list));
        let mut outcome = ListDeleteOutcome::default();
        for (range, r) in self
            .list_calls(&path, Method::POST, Some("delete"), &encoded, false)
            .await?
        {
            outcome.calls += 1;
            outcome.deleted += r
                .deleted
                .or_else(|| r.result.and_then(|d| d.number_of_items_deleted))
                .unwrap_or(0);
            push_item_failures(&mut outcome.failures, r.failures, &range, &all)?;
        }
        Ok(outcome)
    }

    /// Sends `{"items":[…]}` in chunks of at most `max_list_items_per_call`.
    async fn list_calls(
        &self,
        path: &str,
        method: Method,
        action: Option<&str>,
        encoded: &[Vec<u8>],
        idempotent: bool,
    ) -> Result<Vec<(Range<usize>, super::wire::ListWriteResponse)>, AnaplanError> {
        let sizes: Vec<usize> = encoded.iter().map(Vec::len).collect();
        let per_call = self.inner.config.max_list_items_per_call;
        let mut out = Vec::new();
        for range in chunk_ranges(&sizes, per_call, usize::MAX, 0)? {
            let body = join_json(b"{\"items\":", &encoded[range.clone()], b"}");
            let mut req = Request::new(method.clone(), self.url(path), CallKind::Write)
                .json(body)
                .idempotent(idempotent);
            if let Some(a) = action {
                req = req.query("action", a);
            }
            let r = self.call(req).await?;
            out.push((range, parse_list_write(r.status, &r.content_type, &r.body)?));
        }
        Ok(out)
    }
}

fn push_item_failures(
    out: &mut Vec<ItemFailure>,
    failures: Vec<WireFailure>,
    range: &Range<usize>,
    origin: &[usize],
) -> Result<(), AnaplanError> {
    for (index, failure_type, details) in map_failures(failures, range, origin, "list item write")?
    {
        out.push(ItemFailure {
            index,
            failure_type,
            details,
        });
    }
    Ok(())
}

/// The one object whose id is `name`, else whose name is `name`.
pub(super) fn pick<'a>(
    kind: &'static str,
    model: &str,
    name: &str,
    objects: impl Iterator<Item = (&'a String, &'a String)> + Clone,
) -> Result<String, AnaplanError> {
    if let Some((id, _)) = objects.clone().find(|(id, _)| id.as_str() == name) {
        return Ok(id.clone());
    }
    let matches: Vec<&String> = objects
        .filter(|(_, n)| n.trim() == name.trim())
        .map(|(id, _)| id)
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(AnaplanError::NotFound {
            kind,
            name: name.to_string(),
            model: model.to_string(),
        }),
        many => Err(AnaplanError::Ambiguous {
            kind,
            name: name.to_string(),
            model: model.to_string(),
            count: many.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_json_keeps_every_digit_and_escapes_text() {
        let cell = CellWrite {
            line_item: LineItemRef::Name("Amount \"USD\"".into()),
            dimensions: vec![
                (
                    DimRef::Name("Opportunities".into()),
                    ItemRef::Code("006A".into()),
                ),
                (
                    DimRef::Id("20000000020".into()),
                    ItemRef::Name("Actual".into()),
                ),
            ],
            value: CellValue::Number(Decimal::parse("12345678901234567890.123456789", 9).unwrap()),
        };
        let json = String::from_utf8(encode_cell(&cell)).unwrap();
        assert_eq!(
            json,
            r#"{"lineItemName":"Amount \"USD\"","dimensions":[{"dimensionName":"Opportunities","itemCode":"006A"},{"dimensionId":"20000000020","itemName":"Actual"}],"value":12345678901234567890.123456789}"#
        );
        // It is valid JSON, and the number's text survives.
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v["value"].is_number());
    }

    #[test]
    fn cell_json_other_values_and_no_dimensions() {
        let mk = |value| CellWrite {
            line_item: LineItemRef::Id("206000000001".into()),
            dimensions: vec![],
            value,
        };
        let s = |c: &CellWrite| String::from_utf8(encode_cell(c)).unwrap();
        assert_eq!(
            s(&mk(CellValue::Bool(true))),
            r#"{"lineItemId":"206000000001","value":true}"#
        );
        assert_eq!(
            s(&mk(CellValue::Date(
                NaiveDate::from_ymd_opt(2026, 3, 31).unwrap()
            ))),
            r#"{"lineItemId":"206000000001","value":"2026-03-31"}"#
        );
        assert_eq!(
            s(&mk(CellValue::Number(Decimal::parse("-0.5", 2).unwrap()))),
            r#"{"lineItemId":"206000000001","value":-0.50}"#
        );
        assert_eq!(
            s(&mk(CellValue::Text("a\nb".into()))),
            r#"{"lineItemId":"206000000001","value":"a\nb"}"#
        );
    }

    #[test]
    fn list_items_encode_name_for_add_only_when_missing() {
        let mut item = ListItemWrite {
            code: "006A".into(),
            ..Default::default()
        };
        assert_eq!(
            encode_item(&item, true),
            br#"{"name":"006A","code":"006A"}"#
        );
        assert_eq!(encode_item(&item, false), br#"{"code":"006A"}"#);
        item.properties.insert("Stage".into(), "Won".into());
        item.parent = Some("EMEA".into());
        assert_eq!(
            encode_item(&item, false),
            br#"{"code":"006A","parent":"EMEA","properties":{"Stage":"Won"}}"#
        );
    }

    #[test]
    fn failures_map_through_chunk_and_origin() {
        let f = |i| WireFailure {
            request_index: i,
            failure_type: "t".into(),
            failure_message_details: "d".into(),
        };
        let origin = [7, 3, 9, 4];
        let mapped = map_failures(vec![f(0), f(1)], &(2..4), &origin, "x").unwrap();
        assert_eq!(mapped.iter().map(|m| m.0).collect::<Vec<_>>(), [9, 4]);
        assert!(map_failures(vec![f(2)], &(2..4), &origin, "x").is_err());
    }

    #[test]
    fn pick_by_id_then_unique_name() {
        let objs = [
            ("102000000001".to_string(), "Revenue".to_string()),
            ("102000000002".to_string(), "Costs".to_string()),
            ("102000000003".to_string(), "Costs".to_string()),
        ];
        let it = || objs.iter().map(|(a, b)| (a, b));
        assert_eq!(
            pick("module", "M", "Revenue", it()).unwrap(),
            "102000000001"
        );
        assert_eq!(
            pick("module", "M", "102000000003", it()).unwrap(),
            "102000000003"
        );
        assert!(matches!(
            pick("module", "M", "Costs", it()),
            Err(AnaplanError::Ambiguous { count: 2, .. })
        ));
        assert!(matches!(
            pick("module", "M", "Nope", it()),
            Err(AnaplanError::NotFound { .. })
        ));
    }
}
