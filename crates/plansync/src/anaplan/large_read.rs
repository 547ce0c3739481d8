//! Large-volume reads: views over the 1,000,000-cell limit of a plain view read, and lists
//! over the item limit, read as a read request whose CSV pages are fetched one at a time.
//!
//! `POST …/{views/{v}|lists/{l}}/readRequests` starts the request; its status
//! (`GET …/readRequests/{id}`) is polled with backoff until the next page is available (pages
//! may be fetched while the request is still `IN_PROGRESS`, up to `availablePages`); each
//! page (`GET …/pages/{n}`, zero-based, `Accept: text/csv`) is parsed on its own, so memory is
//! bounded by one page whatever the size of the view; `DELETE …/readRequests/{id}` frees the
//! pages (Anaplan reclaims an untouched request after 30 minutes anyway: a handle dropped
//! without [`ViewPages::finish`] sends the DELETE in the background).
//!
//! Every call goes through the client's one send path (rate limit, retry, token refresh).
//! The status's `url` is not followed: the documentation's own example of it lacks the
//! request id, so the path is built from `requestId`.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use tokio::time::Instant;

use super::error::AnaplanError;
use super::http::Request;
use super::stats::CallKind;
use super::view::{ViewData, ViewRow};
use super::wire::{ListItem, parse_json};
use super::{AnaplanClient, seg};
use crate::secret::excerpt;

/// The first wait between two status polls; it doubles up to `task_poll_interval`.
const FIRST_POLL: Duration = Duration::from_millis(50);

/// `requestState` of a read request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadState {
    NotStarted,
    InProgress,
    Complete,
    Cancelling,
    Cancelled,
    Other(String),
}

impl ReadState {
    fn parse(s: &str) -> ReadState {
        match s {
            "NOT_STARTED" => ReadState::NotStarted,
            "IN_PROGRESS" => ReadState::InProgress,
            "COMPLETE" => ReadState::Complete,
            "CANCELLING" => ReadState::Cancelling,
            "CANCELLED" => ReadState::Cancelled,
            other => ReadState::Other(other.to_string()),
        }
    }
}

/// A read request's status, from either `viewReadRequest` or `listReadRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadStatus {
    pub request_id: String,
    pub state: ReadState,
    pub available_pages: usize,
    /// Absent from the creation's answer, which is no verdict.
    pub successful: Option<bool>,
}

/// Parses the body of a read request's creation, status or deletion.
pub fn parse_read_status(
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<ReadStatus, AnaplanError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope {
        #[serde(default)]
        view_read_request: Option<Wire>,
        #[serde(default)]
        list_read_request: Option<Wire>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        #[serde(default, deserialize_with = "super::wire::opt_id")]
        request_id: Option<String>,
        #[serde(default)]
        request_state: Option<String>,
        #[serde(default, deserialize_with = "super::wire::opt_count")]
        available_pages: Option<u64>,
        #[serde(default)]
        successful: Option<bool>,
    }
    let what = "read request";
    let envelope: Envelope = parse_json(what, status, content_type, body)?;
    let fail = |detail: &str| AnaplanError::Decode {
        what,
        status,
        content_type: content_type.to_string(),
        detail: detail.to_string(),
        body: excerpt(body),
    };
    let wire = envelope
        .view_read_request
        .or(envelope.list_read_request)
        .ok_or_else(|| fail("no viewReadRequest or listReadRequest"))?;
    let request_id = wire
        .request_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| fail("no requestId"))?;
    let state = wire
        .request_state
        .as_deref()
        .map(ReadState::parse)
        .ok_or_else(|| fail("no requestState"))?;
    Ok(ReadStatus {
        request_id,
        state,
        available_pages: usize::try_from(wire.available_pages.unwrap_or(0)).unwrap_or(usize::MAX),
        successful: wire.successful,
    })
}

/// Reads the CSV records of a page, handing each data record to `row` as it is read (a page
/// can be 10 MB: it is never held as strings whole). The first line is the header on page 0;
/// on a later page it is skipped only if it repeats `header` (so both "a header on every page"
/// and "a header on the first page only" read right). Returns the header.
fn each_page_record(
    what: &'static str,
    status: u16,
    content_type: &str,
    body: &[u8],
    header: Option<&[String]>,
    mut row: impl FnMut(&[String], &csv::StringRecord),
) -> Result<Vec<String>, AnaplanError> {
    let fail = |detail: String| AnaplanError::Decode {
        what,
        status,
        content_type: content_type.to_string(),
        detail,
        body: excerpt(body),
    };
    let ct = content_type.to_ascii_lowercase();
    if !(ct.is_empty()
        || ct.contains("csv")
        || ct.contains("text/plain")
        || ct.contains("octet-stream"))
    {
        return Err(fail("expected a CSV body".to_string()));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut known: Option<Vec<String>> = header.map(<[String]>::to_vec);
    let mut record = csv::StringRecord::new();
    let mut line = 0;
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(fail(format!("line {}: {e}", line + 1))),
        }
        line += 1;
        match &known {
            None => {
                known = Some(record.iter().map(str::to_string).collect());
                continue;
            }
            Some(h) if line == 1 && record.iter().eq(h.iter().map(String::as_str)) => continue,
            Some(h) => row(h, &record),
        }
    }
    known.ok_or_else(|| fail("an empty page: no header line".to_string()))
}

/// A page of a view read request: the header (`corner,line item…`) and the rows (`item
/// name,cell…`). `header` is the first page's, `None` when this is the first page.
pub fn parse_view_page(
    status: u16,
    content_type: &str,
    body: &[u8],
    header: Option<&[String]>,
) -> Result<(Vec<String>, ViewData), AnaplanError> {
    let mut rows = Vec::new();
    let header = fold_view_page(status, content_type, body, header, |_, row| rows.push(row))?;
    let data = ViewData {
        rows,
        ..view_shape(&header)
    };
    Ok((header, data))
}

/// A page of a view read request, handed to `each` row by row as the CSV is read, with the
/// page's header (see [`parse_view_page`]). Returns the header.
pub fn fold_view_page(
    status: u16,
    content_type: &str,
    body: &[u8],
    header: Option<&[String]>,
    mut each: impl FnMut(&[String], ViewRow),
) -> Result<Vec<String>, AnaplanError> {
    each_page_record(
        "view page (CSV)",
        status,
        content_type,
        body,
        header,
        |h, r| {
            let mut fields = r.iter();
            let row = ViewRow {
                coordinates: fields.next().map(str::to_string).into_iter().collect(),
                cells: fields.map(str::to_string).collect(),
            };
            each(h, row);
        },
    )
}

/// The columns of a page with this header (the first label is the rows' dimension), no rows.
fn view_shape(header: &[String]) -> ViewData {
    ViewData {
        pages: Vec::new(),
        columns: header.iter().skip(1).map(|l| vec![l.clone()]).collect(),
        rows: Vec::new(),
    }
}

/// A page of a list read request. Columns are found by name (`id`, `name`, `code`, `parent`,
/// `parentId`; `listId` and `listName` are ignored); every other column is a property. With no
/// `name` column the first column holds the name (the list-items CSV's shape).
pub fn parse_list_page(
    status: u16,
    content_type: &str,
    body: &[u8],
    header: Option<&[String]>,
) -> Result<(Vec<String>, Vec<ListItem>), AnaplanError> {
    let mut items = Vec::new();
    let header = fold_list_page(status, content_type, body, header, |item| items.push(item))?;
    Ok((header, items))
}

/// A page of a list read request, handed to `each` item by item as the CSV is read (see
/// [`parse_list_page`] for the columns), so a caller that keeps less than a [`ListItem`] never
/// holds the page's items at once. Returns the header.
pub fn fold_list_page(
    status: u16,
    content_type: &str,
    body: &[u8],
    header: Option<&[String]>,
    mut each: impl FnMut(ListItem),
) -> Result<Vec<String>, AnaplanError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Col {
        Id,
        Name,
        Code,
        Parent,
        ParentId,
        Ignored,
        Property(usize),
    }
    let columns = |header: &[String]| -> Vec<Col> {
        let mut cols: Vec<Col> = header
            .iter()
            .enumerate()
            .map(|(i, h)| match h.to_ascii_lowercase().as_str() {
                "id" => Col::Id,
                "name" => Col::Name,
                "code" => Col::Code,
                "parent" => Col::Parent,
                "parentid" => Col::ParentId,
                "listid" | "listname" => Col::Ignored,
                _ => Col::Property(i),
            })
            .collect();
        if !cols.contains(&Col::Name)
            && let Some(c) = cols.first_mut()
        {
            *c = Col::Name;
        }
        cols
    };
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mut cols: Option<Vec<Col>> = None;
    each_page_record(
        "list page (CSV)",
        status,
        content_type,
        body,
        header,
        |header, fields| {
            let cols = cols.get_or_insert_with(|| columns(header));
            let mut item = ListItem {
                id: String::new(),
                name: String::new(),
                code: None,
                parent: None,
                parent_id: None,
                properties: BTreeMap::new(),
            };
            for (col, value) in cols.iter().zip(fields) {
                match *col {
                    Col::Id => item.id = value.to_string(),
                    Col::Name => item.name = value.to_string(),
                    Col::Code => item.code = nonempty(value),
                    Col::Parent => item.parent = nonempty(value),
                    Col::ParentId => item.parent_id = nonempty(value),
                    Col::Ignored => {}
                    Col::Property(i) => {
                        if let Some(name) = header.get(i) {
                            item.properties.insert(name.clone(), value.to_string());
                        }
                    }
                }
            }
            each(item);
        },
    )
}

/// One read request in progress: the pages fetched so far and what the status last said.
#[derive(Debug)]
struct Pages {
    client: AnaplanClient,
    /// What is read, for errors: `view 102000000001`.
    object: String,
    /// `/workspaces/{ws}/models/{m}/{views|lists}/{id}/readRequests/{requestId}`.
    path: String,
    request_id: String,
    next: usize,
    last: ReadStatus,
    header: Option<Vec<String>>,
    finished: bool,
}

impl Pages {
    async fn start(
        client: &AnaplanClient,
        workspace: &str,
        model: &str,
        kind: &str,
        id: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Pages, AnaplanError> {
        let base = format!(
            "/workspaces/{}/models/{}/{kind}/{}/readRequests",
            seg(workspace),
            seg(model),
            seg(id)
        );
        let mut req = Request::new(Method::POST, client.url(&base), CallKind::Read);
        if let Some(body) = body {
            req = req.json(body);
        }
        let r = client.call(req).await?;
        let status = parse_read_status(r.status, &r.content_type, &r.body)?;
        Ok(Pages {
            client: client.clone(),
            object: format!("{} {id}", kind.trim_end_matches('s')),
            path: format!("{base}/{}", seg(&status.request_id)),
            request_id: status.request_id.clone(),
            next: 0,
            last: status,
            header: None,
            finished: false,
        })
    }

    fn error(&self, detail: impl Into<String>) -> AnaplanError {
        AnaplanError::ReadRequest {
            object: self.object.clone(),
            request_id: self.request_id.clone(),
            detail: detail.into(),
        }
    }

    /// A 404 for the request or one of its pages: it expired (Anaplan keeps one for 30
    /// minutes unused) or was deleted. Not a wrong name in a rule file: a new read request
    /// may well succeed, so it is a `ReadRequest` failure, which callers retry.
    fn gone(&self, e: AnaplanError) -> AnaplanError {
        if e.status() == Some(404) {
            self.error(format!(
                "the read request is gone (expired or deleted): {e}"
            ))
        } else {
            e
        }
    }

    async fn poll_status(&mut self) -> Result<(), AnaplanError> {
        let r = self
            .client
            .call(Request::new(
                Method::GET,
                self.client.url(&self.path),
                CallKind::Read,
            ))
            .await
            .map_err(|e| self.gone(e))?;
        self.last = parse_read_status(r.status, &r.content_type, &r.body)?;
        Ok(())
    }

    /// The next page's body, once available; `None` after the last page.
    async fn next_body(&mut self) -> Result<Option<(u16, String, Vec<u8>)>, AnaplanError> {
        if self.finished {
            return Err(self.error("the read request was already deleted"));
        }
        let cfg = &self.client.inner.config;
        let (max_wait, timeout) = (cfg.task_poll_interval, cfg.task_timeout);
        let started = Instant::now();
        let mut wait = FIRST_POLL.min(max_wait);
        loop {
            let complete = match (&self.last.state, self.last.successful) {
                (ReadState::Complete, Some(false)) => {
                    return Err(self.error("Anaplan reports the read failed (successful: false)"));
                }
                (ReadState::Complete, Some(true)) => true,
                // The creation's answer gives no page count: ask the status.
                (ReadState::Complete, None) => false,
                (ReadState::Cancelling | ReadState::Cancelled, _) => {
                    return Err(self.error("the read request was cancelled"));
                }
                _ => false,
            };
            if self.next < self.last.available_pages {
                break;
            }
            if complete {
                return Ok(None);
            }
            if started.elapsed() >= timeout {
                return Err(self.error(format!(
                    "page {} not available after {timeout:?} (state {:?}, {} pages available)",
                    self.next, self.last.state, self.last.available_pages
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(max_wait);
            self.poll_status().await?;
        }
        let page = self.next;
        let mut req = Request::new(
            Method::GET,
            self.client.url(&format!("{}/pages/{page}", self.path)),
            CallKind::Read,
        );
        req.accept = Some("text/csv");
        let r = self.client.call(req).await.map_err(|e| self.gone(e))?;
        self.next += 1;
        Ok(Some((r.status, r.content_type, r.body)))
    }

    fn page_count(&self) -> Option<usize> {
        (self.last.state == ReadState::Complete && self.last.successful == Some(true))
            .then_some(self.last.available_pages)
    }

    async fn finish(&mut self) -> Result<(), AnaplanError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let req = Request::new(Method::DELETE, self.client.url(&self.path), CallKind::Read);
        self.client.call(req).await.map(|_| ())
    }
}

impl Drop for Pages {
    /// A request left behind holds its pages on Anaplan for 30 minutes: delete it in the
    /// background (best effort) if the owner did not.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let url = client.url(&self.path);
        runtime.spawn(async move {
            let req = Request::new(Method::DELETE, url, CallKind::Read);
            if let Err(e) = client.call(req).await {
                tracing::debug!(event = "read_request_delete_failed", error = %e, "could not delete an abandoned Anaplan read request");
            }
        });
    }
}

/// A view read request, page by page. Call [`ViewPages::finish`] when done.
#[derive(Debug)]
pub struct ViewPages {
    inner: Pages,
}

impl ViewPages {
    pub fn request_id(&self) -> &str {
        &self.inner.request_id
    }

    /// The next page's rows (and the view's columns), or `None` after the last page. Waits,
    /// polling the status with backoff, until the page is available.
    pub async fn next_page(&mut self) -> Result<Option<ViewData>, AnaplanError> {
        let Some((status, ct, body)) = self.inner.next_body().await? else {
            return Ok(None);
        };
        let (header, data) = parse_view_page(status, &ct, &body, self.inner.header.as_deref())?;
        self.inner.header.get_or_insert(header);
        Ok(Some(data))
    }

    /// The next page row by row: `each` gets the page's shape (its columns, no rows) and each
    /// row as it is parsed. Returns the page's shape, or `None` after the last page. Memory
    /// holds the page's body and one row, not its rows.
    pub async fn next_page_each(
        &mut self,
        mut each: impl FnMut(&ViewData, ViewRow),
    ) -> Result<Option<ViewData>, AnaplanError> {
        let Some((status, ct, body)) = self.inner.next_body().await? else {
            return Ok(None);
        };
        let mut shape: Option<ViewData> = None;
        let header = fold_view_page(
            status,
            &ct,
            &body,
            self.inner.header.as_deref(),
            |h, row| {
                each(shape.get_or_insert_with(|| view_shape(h)), row);
            },
        )?;
        let shape = shape.unwrap_or_else(|| view_shape(&header));
        self.inner.header.get_or_insert(header);
        Ok(Some(shape))
    }

    /// How many pages the request has, once Anaplan has said it is complete.
    pub fn page_count(&self) -> Option<usize> {
        self.inner.page_count()
    }

    /// Deletes the request (its pages are freed on Anaplan).
    pub async fn finish(mut self) -> Result<(), AnaplanError> {
        self.inner.finish().await
    }
}

/// A list read request, page by page. Call [`ListPages::finish`] when done.
#[derive(Debug)]
pub struct ListPages {
    inner: Pages,
}

impl ListPages {
    pub fn request_id(&self) -> &str {
        &self.inner.request_id
    }

    /// The next page's items, or `None` after the last page.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ListItem>>, AnaplanError> {
        let Some((status, ct, body)) = self.inner.next_body().await? else {
            return Ok(None);
        };
        let (header, items) = parse_list_page(status, &ct, &body, self.inner.header.as_deref())?;
        self.inner.header.get_or_insert(header);
        Ok(Some(items))
    }

    /// The next page's items, each handed to `each` as it is parsed; the page's item count, or
    /// `None` after the last page. Memory holds the page's body and one item, not its items.
    pub async fn next_page_each(
        &mut self,
        mut each: impl FnMut(ListItem),
    ) -> Result<Option<usize>, AnaplanError> {
        let Some((status, ct, body)) = self.inner.next_body().await? else {
            return Ok(None);
        };
        let mut n = 0;
        let header = fold_list_page(status, &ct, &body, self.inner.header.as_deref(), |item| {
            n += 1;
            each(item);
        })?;
        self.inner.header.get_or_insert(header);
        Ok(Some(n))
    }

    pub fn page_count(&self) -> Option<usize> {
        self.inner.page_count()
    }

    pub async fn finish(mut self) -> Result<(), AnaplanError> {
        self.inner.finish().await
    }
}

impl AnaplanClient {
    /// Starts a large-volume read of a view (a module's default view has the module's id),
    /// as a multi-column table: the list's items on rows, line items on columns.
    pub async fn read_view_pages(
        &self,
        workspace: &str,
        model: &str,
        view: &str,
    ) -> Result<ViewPages, AnaplanError> {
        let body = br#"{"exportType":"TABULAR_MULTI_COLUMN"}"#.to_vec();
        let inner = Pages::start(self, workspace, model, "views", view, Some(body)).await?;
        Ok(ViewPages { inner })
    }

    /// Starts a large-volume read of a list's items.
    pub async fn read_list_pages(
        &self,
        workspace: &str,
        model: &str,
        list: &str,
    ) -> Result<ListPages, AnaplanError> {
        let inner = Pages::start(self, workspace, model, "lists", list, None).await?;
        Ok(ListPages { inner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = "application/json";

    #[test]
    fn status_bodies_as_documented() {
        let created = br#"{"meta":{"schema":"x"},"status":{"code":200,"message":"Success"},
            "viewReadRequest":{"requestId":"0A06B0739F0E47BB92E2326C603D86EC","requestState":"IN_PROGRESS",
            "url":"https://api.anaplan.com/2/0/workspaces/w/models/m/views/v/readRequests/0A06"}}"#;
        let s = parse_read_status(200, JSON, created).unwrap();
        assert_eq!(s.request_id, "0A06B0739F0E47BB92E2326C603D86EC");
        assert_eq!(s.state, ReadState::InProgress);
        assert_eq!(s.available_pages, 0);
        let done = br#"{"viewReadRequest":{"requestId":"0A06","viewId":101000000014,
            "requestState":"COMPLETE","availablePages":100,"successful":true}}"#;
        let s = parse_read_status(200, JSON, done).unwrap();
        assert_eq!(
            (s.state, s.available_pages, s.successful),
            (ReadState::Complete, 100, Some(true))
        );
        let list = br#"{"listReadRequest":{"requestId":"690B","requestState":"NOT_STARTED"}}"#;
        assert_eq!(
            parse_read_status(200, JSON, list).unwrap().state,
            ReadState::NotStarted
        );
        assert!(parse_read_status(200, JSON, br#"{"status":{}}"#).is_err());
        assert!(
            parse_read_status(
                200,
                JSON,
                br#"{"viewReadRequest":{"requestState":"COMPLETE"}}"#
            )
            .is_err()
        );
        assert!(parse_read_status(200, "text/html", b"<html>").is_err());
    }

    #[test]
    fn view_pages_with_and_without_a_repeated_header() {
        let (header, first) =
            parse_view_page(200, "text/csv", b"Opps,Amount,Stage\nA,1,Won\n", None).unwrap();
        assert_eq!(first.columns, [["Amount"], ["Stage"]]);
        assert_eq!(first.rows[0].coordinates, ["A"]);
        assert_eq!(first.rows[0].cells, ["1", "Won"]);
        let (_, again) =
            parse_view_page(200, "text/csv", b"Opps,Amount,Stage\nB,2,\n", Some(&header)).unwrap();
        assert_eq!(again.rows.len(), 1);
        assert_eq!(again.rows[0].cells, ["2", ""]);
        // A later page without the header: its first line is a row.
        let (_, bare) = parse_view_page(200, "text/csv", b"C,3,Lost\n", Some(&header)).unwrap();
        assert_eq!(bare.rows[0].coordinates, ["C"]);
        assert_eq!(bare.columns, [["Amount"], ["Stage"]]);
        assert!(parse_view_page(200, "text/csv", b"", None).is_err());
        assert!(parse_view_page(200, JSON, b"{}", None).is_err());
    }

    #[test]
    fn list_pages_by_column_name() {
        let body = b"id,name,code,parent,parentId,listId,listName,Opportunity Name\n\
            1,OPP-1,0061,,,101,Opps,\"Acme, Inc\"\n2,OPP-2,,,,101,Opps,\n";
        let (_, items) = parse_list_page(200, "text/csv", body, None).unwrap();
        assert_eq!(items[0].id, "1");
        assert_eq!(items[0].name, "OPP-1");
        assert_eq!(items[0].code.as_deref(), Some("0061"));
        assert_eq!(items[0].parent, None);
        assert_eq!(items[0].properties["Opportunity Name"], "Acme, Inc");
        assert_eq!(items[1].code, None);
        // The list-items CSV's shape: the name first, under the list's name.
        let (_, items) =
            parse_list_page(200, "text/csv", b"Opps,Code,Parent\nOPP-1,0061,\n", None).unwrap();
        assert_eq!(items[0].name, "OPP-1");
        assert_eq!(items[0].code.as_deref(), Some("0061"));
        assert!(items[0].properties.is_empty());
    }
}
