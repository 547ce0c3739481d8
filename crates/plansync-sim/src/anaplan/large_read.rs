//! Large-volume reads (`…/views/{v}/readRequests`, `…/lists/{l}/readRequests`): the answer
//! to views over the cell limit and lists over the item limit.
//!
//! `POST` snapshots the view or list into CSV pages at once (later edits do not show in it)
//! and answers `{viewReadRequest|listReadRequest:{requestId,requestState,url}}`; `GET
//! …/{requestId}` reports `requestState`, `availablePages` and `successful`; `GET
//! …/{requestId}/pages/{n}` (zero-based) sends page `n` as CSV; `DELETE …/{requestId}`
//! cancels the request and drops its pages.
//!
//! Decisions where the reference is silent:
//! - Requests of one model run one after another: a request waits `NOT_STARTED` while an
//!   earlier one of the same model is `IN_PROGRESS`, then is `IN_PROGRESS` for
//!   `read_request_step`, its pages becoming available evenly over that time, then
//!   `COMPLETE`.
//! - Every page is a whole CSV with the header line first, and holds at most
//!   `read_page_bytes` (a single row larger than that is alone on its page).
//! - View pages have the list's items on rows, one column per line item; the corner cell is
//!   the list's name for `TABULAR_MULTI_COLUMN`, empty for `GRID_ALL_PAGES` (the default).
//!   List pages have the columns `id,name,code,parent,parentId,listId,listName` (the fields of
//!   a JSON list item), then one per property.
//! - A request not accessed for `read_request_ttl` is gone (404), as are the pages of a
//!   cancelled request; its status still answers `CANCELLED` until then.
//! - A page number that is not a number is 400; a page not (yet) available is 400 with the
//!   number available.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::model::{ModelData, ModelSlot};
use super::server::{lock, model_lock};
use super::wire::{self, Req, envelope};

/// What a read request reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    View(u64),
    List(u64),
}

impl Target {
    fn key(self) -> &'static str {
        match self {
            Target::View(_) => "viewReadRequest",
            Target::List(_) => "listReadRequest",
        }
    }
}

/// The knobs of large reads, from `SimConfig`.
#[derive(Debug, Clone, Copy)]
pub struct ReadConfig {
    pub page_bytes: usize,
    pub step: Duration,
    pub ttl: Duration,
}

struct ReadRequest {
    model: String,
    target: Target,
    url: String,
    /// Dropped when the request is cancelled.
    pages: Vec<Vec<u8>>,
    start: Instant,
    finish: Instant,
    last_access: Instant,
    cancelled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    InProgress,
    Complete,
    Cancelled,
}

impl State {
    fn wire(self) -> &'static str {
        match self {
            State::NotStarted => "NOT_STARTED",
            State::InProgress => "IN_PROGRESS",
            State::Complete => "COMPLETE",
            State::Cancelled => "CANCELLED",
        }
    }
}

impl ReadRequest {
    /// The state now and how many pages may be fetched.
    fn progress(&self, now: Instant) -> (State, usize) {
        if self.cancelled {
            return (State::Cancelled, 0);
        }
        if now < self.start {
            return (State::NotStarted, 0);
        }
        if now >= self.finish {
            return (State::Complete, self.pages.len());
        }
        let done = now.duration_since(self.start).as_secs_f64()
            / self.finish.duration_since(self.start).as_secs_f64();
        let available = (self.pages.len() as f64 * done).floor() as usize;
        (State::InProgress, available.min(self.pages.len()))
    }

    fn json(&self, id: &str, now: Instant, with_progress: bool) -> Value {
        let (state, available) = self.progress(now);
        let mut v = json!({
            "requestId": id,
            "requestState": state.wire(),
            "url": self.url,
        });
        match self.target {
            Target::View(view) => v["viewId"] = json!(view.to_string()),
            Target::List(list) => v["listId"] = json!(list.to_string()),
        }
        if with_progress {
            v["availablePages"] = json!(available);
            v["successful"] = json!(state == State::Complete);
        }
        v
    }
}

#[derive(Default)]
struct Book {
    requests: HashMap<String, ReadRequest>,
    /// Per model, when its last request finishes (requests of a model run in turn).
    busy_until: HashMap<String, Instant>,
    next: u64,
}

/// Every read request of the tenant.
pub struct ReadRequests {
    config: ReadConfig,
    book: Mutex<Book>,
}

impl ReadRequests {
    pub fn new(config: ReadConfig) -> Self {
        ReadRequests {
            config,
            book: Mutex::new(Book::default()),
        }
    }

    /// Requests held and not cancelled (expired ones are not counted).
    pub fn live(&self) -> usize {
        let now = Instant::now();
        let mut book = lock(&self.book);
        self.expire(&mut book, now);
        book.requests.values().filter(|r| !r.cancelled).count()
    }

    fn expire(&self, book: &mut Book, now: Instant) {
        let ttl = self.config.ttl;
        book.requests
            .retain(|_, r| now.duration_since(r.last_access) <= ttl);
        book.busy_until.retain(|_, until| *until > now);
    }
}

/// The routes under `views/{v}/readRequests` and `lists/{l}/readRequests`: `rest` is what
/// follows `readRequests`.
pub fn handle(
    reads: &ReadRequests,
    req: &Req,
    slot: &ModelSlot,
    kind: &str,
    object: &str,
    rest: &[&str],
) -> Response {
    use axum::http::Method;
    let method = &req.method;
    let at = At {
        reads,
        req,
        slot,
        kind,
        object,
    };
    match rest {
        [] if *method == Method::POST => create(at),
        [id] if *method == Method::GET => status(at, id),
        [id] if *method == Method::DELETE => cancel(at, id),
        [id, "pages", n] if *method == Method::GET => page(at, id, n),
        [] | [_] | [_, "pages", _] => wire::method_not_allowed(&req.path),
        _ => wire::not_found(&req.path),
    }
}

/// What every read request route works from: the registry, the HTTP request, the model, and
/// the view or list (`kind` is `views` or `lists`, `object` its id).
#[derive(Clone, Copy)]
struct At<'a> {
    reads: &'a ReadRequests,
    req: &'a Req,
    slot: &'a ModelSlot,
    kind: &'a str,
    object: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    #[serde(default)]
    export_type: Option<String>,
}

fn create(at: At<'_>) -> Response {
    let At {
        reads,
        req,
        slot,
        kind,
        object,
    } = at;
    let (target, pages) = {
        let md = model_lock(&slot.data);
        let snapshot = if kind == "views" {
            let export_type = if req.body.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                match serde_json::from_slice::<Option<CreateBody>>(&req.body) {
                    Ok(b) => b.and_then(|b| b.export_type),
                    Err(_) => return wire::bad_request("Invalid request body", &req.path),
                }
            };
            let tabular = match export_type.as_deref() {
                None | Some("GRID_ALL_PAGES") => false,
                Some("TABULAR_MULTI_COLUMN") => true,
                Some(other) => {
                    return wire::bad_request(
                        &format!("Unsupported exportType {other}"),
                        &req.path,
                    );
                }
            };
            view_pages(&md, object, tabular, reads.config.page_bytes)
        } else {
            list_pages(&md, object, reads.config.page_bytes)
        };
        match snapshot {
            Some(s) => s,
            None => return wire::not_found(&req.path),
        }
    };
    let now = Instant::now();
    let mut book = lock(&reads.book);
    reads.expire(&mut book, now);
    book.next += 1;
    let id = request_id(book.next);
    let start = book
        .busy_until
        .get(&slot.id)
        .copied()
        .filter(|t| *t > now)
        .unwrap_or(now);
    let finish = start + reads.config.step;
    book.busy_until.insert(slot.id.clone(), finish);
    let url = format!("{}{}/{id}", req.base, req.path.trim_end_matches('/'));
    let request = ReadRequest {
        model: slot.id.clone(),
        target,
        url,
        pages,
        start,
        finish,
        last_access: now,
        cancelled: false,
    };
    let body = request.json(&id, now, false);
    book.requests.insert(id, request);
    envelope(
        req.schema(&format!("objects/{}", schema_name(target))),
        None,
        vec![(target.key(), body)],
    )
}

fn schema_name(target: Target) -> &'static str {
    match target {
        Target::View(_) => "viewReadRequest",
        Target::List(_) => "listReadRequest",
    }
}

/// 32 upper-case hex digits, unique within the simulator's run.
fn request_id(n: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{nanos:016X}{n:016X}")
}

/// Finds the request `id` if it belongs to this model and this view or list, and marks it
/// accessed.
fn with_request<T>(
    at: At<'_>,
    id: &str,
    f: impl FnOnce(&mut ReadRequest, Instant) -> T,
) -> Result<T, Response> {
    let At {
        reads,
        req,
        slot,
        kind,
        object,
    } = at;
    let now = Instant::now();
    let mut book = lock(&reads.book);
    reads.expire(&mut book, now);
    let Some(r) = book.requests.get_mut(id) else {
        return Err(wire::not_found(&req.path));
    };
    let owner = match r.target {
        Target::View(v) => kind == "views" && v.to_string() == object,
        Target::List(l) => kind == "lists" && l.to_string() == object,
    };
    if !owner || r.model != slot.id {
        return Err(wire::not_found(&req.path));
    }
    r.last_access = now;
    Ok(f(r, now))
}

fn status(at: At<'_>, id: &str) -> Response {
    answer(at, id, |r, now| r.json(id, now, true))
}

fn cancel(at: At<'_>, id: &str) -> Response {
    answer(at, id, |r, now| {
        r.cancelled = true;
        r.pages = Vec::new();
        r.json(id, now, false)
    })
}

/// The request's JSON (as `f` leaves it) in the usual envelope, or the lookup's error.
fn answer(
    at: At<'_>,
    id: &str,
    f: impl FnOnce(&mut ReadRequest, Instant) -> serde_json::Value,
) -> Response {
    let req = at.req;
    match with_request(at, id, |r, now| {
        let body = f(r, now);
        (r.target, body)
    }) {
        Ok((target, body)) => envelope(
            req.schema(&format!("objects/{}", schema_name(target))),
            None,
            vec![(target.key(), body)],
        ),
        Err(resp) => resp,
    }
}

fn page(at: At<'_>, id: &str, n: &str) -> Response {
    let req = at.req;
    let Ok(n) = n.trim().parse::<usize>() else {
        return wire::bad_request(&format!("Invalid page number {n}"), &req.path);
    };
    let found = with_request(at, id, |r, now| {
        let (state, available) = r.progress(now);
        if state == State::Cancelled {
            return Err(wire::not_found(&req.path));
        }
        match r.pages.get(n) {
            Some(p) if n < available => Ok(p.clone()),
            _ => Err(wire::bad_request(
                &format!(
                    "Page {n} is not available: {available} of {} pages are available",
                    r.pages.len()
                ),
                &req.path,
            )),
        }
    });
    match found {
        Ok(Ok(body)) => wire::bytes(StatusCode::OK, "text/csv", body),
        Ok(Err(resp)) | Err(resp) => resp,
    }
}

/// The view's rows as CSV pages, or `None` if the model has no such view.
fn view_pages(
    md: &ModelData,
    view: &str,
    tabular: bool,
    page_bytes: usize,
) -> Option<(Target, Vec<Vec<u8>>)> {
    let vi = md.views.iter().position(|v| v.id.to_string() == view)?;
    let v = &md.views[vi];
    let list = md.lists.get(md.modules.get(v.module)?.list)?;
    let corner = if tabular { list.name.as_str() } else { "" };
    let mut header = Vec::new();
    csv_line(
        &mut header,
        std::iter::once(corner).chain(
            v.line_items
                .iter()
                .map(|&li| md.line_items[li].name.as_str()),
        ),
    );
    let mut pager = Pager::new(header, page_bytes);
    let mut cells: Vec<String> = Vec::with_capacity(v.line_items.len());
    for (i, item) in list.iter() {
        cells.clear();
        cells.extend(v.line_items.iter().map(|&li| md.cell_text(li, i)));
        pager.row(std::iter::once(&*item.name).chain(cells.iter().map(String::as_str)));
    }
    Some((Target::View(v.id), pager.finish()))
}

/// The list's items as CSV pages, or `None` if the model has no such list.
fn list_pages(md: &ModelData, list: &str, page_bytes: usize) -> Option<(Target, Vec<Vec<u8>>)> {
    let l = md.lists.iter().find(|l| l.id.to_string() == list)?;
    let mut header = Vec::new();
    csv_line(
        &mut header,
        [
            "id", "name", "code", "parent", "parentId", "listId", "listName",
        ]
        .into_iter()
        .chain(l.properties.iter().map(|p| p.name.as_str())),
    );
    let mut pager = Pager::new(header, page_bytes);
    let list_id = l.id.to_string();
    for (i, item) in l.iter() {
        let id = l.item_id(i).to_string();
        let fixed = [
            id.as_str(),
            &*item.name,
            item.code.as_deref().unwrap_or(""),
            "",
            "",
            list_id.as_str(),
            l.name.as_str(),
        ];
        pager.row(
            fixed
                .into_iter()
                .chain((0..l.properties.len()).map(|p| l.prop_value(item, p))),
        );
    }
    Some((Target::List(l.id), pager.finish()))
}

/// Cuts rows into pages of at most `page_bytes`, each starting with the header.
struct Pager {
    header: Vec<u8>,
    page_bytes: usize,
    pages: Vec<Vec<u8>>,
    current: Vec<u8>,
    rows: usize,
    line: Vec<u8>,
}

impl Pager {
    fn new(header: Vec<u8>, page_bytes: usize) -> Self {
        Pager {
            current: header.clone(),
            header,
            page_bytes: page_bytes.max(1),
            pages: Vec::new(),
            rows: 0,
            line: Vec::new(),
        }
    }

    fn row<'a>(&mut self, fields: impl Iterator<Item = &'a str>) {
        self.line.clear();
        csv_line(&mut self.line, fields);
        if self.rows > 0 && self.current.len() + self.line.len() > self.page_bytes {
            let full = std::mem::replace(&mut self.current, self.header.clone());
            self.pages.push(full);
            self.rows = 0;
        }
        self.current.extend_from_slice(&self.line);
        self.rows += 1;
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.pages.push(self.current);
        self.pages
    }
}

/// One CSV line (RFC 4180: a field with a comma, quote or line break is quoted, quotes
/// doubled), ending in `\n`.
fn csv_line<'a>(out: &mut Vec<u8>, fields: impl Iterator<Item = &'a str>) {
    for (n, f) in fields.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        if f.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
            out.push(b'"');
            for b in f.bytes() {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(f.as_bytes());
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        let mut out = Vec::new();
        csv_line(&mut out, ["a", "b,c", "say \"hi\"", ""].into_iter());
        assert_eq!(out, b"a,\"b,c\",\"say \"\"hi\"\"\",\n");
    }

    #[test]
    fn pages_repeat_the_header_and_stay_under_the_size() {
        let mut pager = Pager::new(b"h\n".to_vec(), 10);
        for _ in 0..7 {
            pager.row(["abc"].into_iter());
        }
        let pages = pager.finish();
        // "h\n" + two rows of 4 bytes = 10 bytes per page.
        assert_eq!(pages.len(), 4);
        assert!(pages.iter().all(|p| p.starts_with(b"h\n") && p.len() <= 10));
        let mut big = Pager::new(b"h\n".to_vec(), 3);
        big.row(["a long row"].into_iter());
        big.row(["x"].into_iter());
        let pages = big.finish();
        assert_eq!(pages.len(), 2, "an oversized row is alone on its page");
    }

    #[test]
    fn states_follow_the_clock() {
        let t0 = Instant::now();
        let r = ReadRequest {
            model: "m".into(),
            target: Target::View(1),
            url: String::new(),
            pages: vec![Vec::new(); 4],
            start: t0 + Duration::from_millis(100),
            finish: t0 + Duration::from_millis(300),
            last_access: t0,
            cancelled: false,
        };
        assert_eq!(r.progress(t0), (State::NotStarted, 0));
        assert_eq!(
            r.progress(t0 + Duration::from_millis(200)),
            (State::InProgress, 2)
        );
        assert_eq!(
            r.progress(t0 + Duration::from_millis(300)),
            (State::Complete, 4)
        );
    }
}
