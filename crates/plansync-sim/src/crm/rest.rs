//! REST resources: API versions, `query`/`queryAll` with `nextRecordsUrl` paging, and single
//! sObject rows (GET with `?fields=`, PATCH with `If-Unmodified-Since`, POST, DELETE).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Sim;
use super::http::{self, json_response, not_found, sf_error};
use super::org::{CommitCtx, RecordRef};
use super::soql;
use super::values::FieldError;

/// How long a query cursor can be followed, and how many are kept.
const CURSOR_TTL: Duration = Duration::from_secs(15 * 60);
const MAX_CURSORS: usize = 1_000;

/// A query's remaining rows, followed through `nextRecordsUrl`.
#[derive(Debug)]
pub struct Cursor {
    rows: Vec<RecordRef>,
    fields: Vec<usize>,
    batch: usize,
    created: Instant,
}

#[derive(Debug, Default)]
pub struct Cursors {
    map: HashMap<String, Cursor>,
    order: VecDeque<String>,
}

impl Cursors {
    fn insert(&mut self, cursor: Cursor) -> String {
        let mut id = String::from("01g5g");
        for _ in 0..10 {
            id.push(fastrand::alphanumeric());
        }
        id.push_str(&super::ids::suffix_of(&id));
        while self.order.len() >= MAX_CURSORS {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.order.push_back(id.clone());
        self.map.insert(id.clone(), cursor);
        id
    }
}

/// `GET /services/data`: the versions served.
pub async fn versions() -> Response {
    let list: Vec<Value> = (44..=67)
        .map(|v| {
            json!({"label": format!("v{v}.0"), "url": format!("/services/data/v{v}.0"), "version": format!("{v}.0")})
        })
        .collect();
    json_response(StatusCode::OK, &Value::Array(list))
}

pub async fn query(
    State(sim): State<Arc<Sim>>,
    Path(version): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    run_query(&sim, &version, params, &headers, false)
}

pub async fn query_all(
    State(sim): State<Arc<Sim>>,
    Path(version): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    run_query(&sim, &version, params, &headers, true)
}

fn run_query(
    sim: &Sim,
    version: &str,
    params: HashMap<String, String>,
    headers: &HeaderMap,
    all_rows: bool,
) -> Response {
    let (v, _user) = match sim.api(version, headers) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let Some(text) = params.get("q").filter(|q| !q.trim().is_empty()) else {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "A query string has to be specified",
        );
    };
    let batch = http::query_batch_size(headers)
        .unwrap_or(sim.config.query_batch_size)
        .clamp(200, 2000)
        .min(sim.config.query_batch_size.max(1));
    let org = sim.org_lock();
    let bound = match soql::prepare(text, &org) {
        Ok(b) => b,
        Err(e) => return sf_error(StatusCode::BAD_REQUEST, e.code, &e.message),
    };
    let rows = bound.run(&org, all_rows);
    let cursor = Cursor {
        rows,
        fields: bound.fields.clone(),
        batch,
        created: Instant::now(),
    };
    let page = render_page(&org, &v, &cursor, 0);
    drop(org);
    match page {
        Page::Done(body) => json_response(StatusCode::OK, &body),
        Page::More(mut body, next) => {
            let id = sim.cursors_lock().insert(cursor);
            if let Value::Object(m) = &mut body {
                m.insert(
                    "nextRecordsUrl".into(),
                    Value::String(format!("/services/data/v{v}/query/{id}-{next}")),
                );
            }
            json_response(StatusCode::OK, &body)
        }
    }
}

enum Page {
    Done(Value),
    More(Value, usize),
}

fn render_page(org: &super::org::Org, v: &str, cursor: &Cursor, from: usize) -> Page {
    let end = (from + cursor.batch).min(cursor.rows.len());
    let records: Vec<Value> = cursor
        .rows
        .get(from..end)
        .unwrap_or(&[])
        .iter()
        .map(|&r| org.rest_record(r, &format!("v{v}"), Some(&cursor.fields)))
        .collect();
    let done = end >= cursor.rows.len();
    let body = json!({"totalSize": cursor.rows.len(), "done": done, "records": records});
    if done {
        Page::Done(body)
    } else {
        Page::More(body, end)
    }
}

/// `GET …/query/01g…-2000`: the next page of an earlier query.
pub async fn query_more(
    State(sim): State<Arc<Sim>>,
    Path((version, locator)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (v, _user) = match sim.api(&version, &headers) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let invalid = || {
        sf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        )
    };
    let Some((id, offset)) = locator.split_once('-') else {
        return invalid();
    };
    let Ok(offset) = offset.parse::<usize>() else {
        return invalid();
    };
    let mut cursors = sim.cursors_lock();
    let expired = cursors
        .map
        .get(id)
        .is_some_and(|c| c.created.elapsed() > CURSOR_TTL);
    if expired {
        cursors.map.remove(id);
    }
    let Some(cursor) = cursors.map.get(id) else {
        return invalid();
    };
    if offset > cursor.rows.len() {
        return invalid();
    }
    let org = sim.org_lock();
    let page = render_page(&org, &v, cursor, offset);
    drop(org);
    match page {
        Page::Done(body) => json_response(StatusCode::OK, &body),
        Page::More(mut body, next) => {
            if let Value::Object(m) = &mut body {
                m.insert(
                    "nextRecordsUrl".into(),
                    Value::String(format!("/services/data/v{v}/query/{id}-{next}")),
                );
            }
            json_response(StatusCode::OK, &body)
        }
    }
}

/// Errors of one write as the REST API returns them: status by the first error's code.
pub fn write_errors(errors: &[FieldError]) -> Response {
    let status = match errors.first().map(|e| e.status_code) {
        Some("ENTITY_IS_DELETED") => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    let body: Vec<Value> = errors
        .iter()
        .map(|e| json!({"message": e.message, "errorCode": e.status_code, "fields": e.fields}))
        .collect();
    json_response(status, &Value::Array(body))
}

fn lookup(org: &super::org::Org, object: &str, id: &str) -> Result<RecordRef, Response> {
    let Some(table) = org.table_index(object) else {
        return Err(not_found());
    };
    match org.resolve_id(id).filter(|r| r.table == table) {
        Some(r) if org.record(r).is_some_and(|rec| rec.deleted) => Err(sf_error(
            StatusCode::NOT_FOUND,
            "ENTITY_IS_DELETED",
            "entity is deleted",
        )),
        Some(r) => Ok(r),
        None => Err(sf_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Provided external ID field does not exist or is not accessible: {id}"),
        )),
    }
}

pub async fn get_record(
    State(sim): State<Arc<Sim>>,
    Path((version, object, id)): Path<(String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (v, _user) = match sim.api(&version, &headers) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let org = sim.org_lock();
    let r = match lookup(&org, &object, &id) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let Some(def) = org.def(r.table).map(Arc::clone) else {
        return not_found();
    };
    let only = match params.get("fields") {
        Some(list) => {
            let mut out = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match def.field_index(name) {
                    Some(i) => out.push(i),
                    None => {
                        return sf_error(
                            StatusCode::BAD_REQUEST,
                            "INVALID_FIELD",
                            &format!(
                                "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                                def.name
                            ),
                        );
                    }
                }
            }
            Some(out)
        }
        None => None,
    };
    json_response(
        StatusCode::OK,
        &org.rest_record(r, &format!("v{v}"), only.as_deref()),
    )
}

/// What a REST record write starts with: the token checked for the API version (`v59.0`
/// → `59.0`, returned), the record's fields from the body, and the commit context (who, and
/// through which API).
pub(super) fn record_write(
    sim: &Sim,
    version: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, Map<String, Value>, CommitCtx), Response> {
    let (v, user) = sim.api(version, headers)?;
    let fields = parse_object(body)?;
    let ctx = CommitCtx {
        user,
        origin: http::change_origin("rest", &v, headers),
    };
    Ok((v, fields, ctx))
}

pub(super) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(sf_error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "Cannot deserialize instance of sObject from a non-object value",
        )),
        Err(e) => Err(sf_error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            &format!(
                "Unexpected character at [line:{}, column:{}]",
                e.line(),
                e.column()
            ),
        )),
    }
}

pub async fn update(
    State(sim): State<Arc<Sim>>,
    Path((version, object, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, fields, ctx) = match record_write(&sim, &version, &headers, &body) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let since = match headers.get("if-unmodified-since").map(|h| {
        h.to_str()
            .ok()
            .and_then(|s| chrono::DateTime::parse_from_rfc2822(s).ok())
    }) {
        None => None,
        Some(Some(t)) => Some(t.timestamp()),
        Some(None) => {
            return sf_error(
                StatusCode::BAD_REQUEST,
                "INVALID_HEADER",
                "Invalid If-Unmodified-Since header value",
            );
        }
    };
    {
        let mut org = sim.org_lock();
        let r = match lookup(&org, &object, &id) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        if let (Some(since), Some(rec)) = (since, org.record(r))
            && rec.modified.div_euclid(1000) > since
        {
            return sf_error(
                StatusCode::PRECONDITION_FAILED,
                "PRECONDITION_FAILED",
                "The requested entity has been modified since the time specified in the If-Unmodified-Since header",
            );
        }
        let op = match org.prepare_update(Some(&object), &id, &fields) {
            Ok(op) => op,
            Err(errors) => return write_errors(&errors),
        };
        org.commit(&ctx, vec![op]);
    }
    sim.notify();
    StatusCode::NO_CONTENT.into_response()
}

pub async fn create(
    State(sim): State<Arc<Sim>>,
    Path((version, object)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, fields, ctx) = match record_write(&sim, &version, &headers, &body) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let id = {
        let mut org = sim.org_lock();
        if org.table_index(&object).is_none() {
            return not_found();
        }
        let op = match org.prepare_create(&object, &fields) {
            Ok(op) => op,
            Err(errors) => return write_errors(&errors),
        };
        org.commit(&ctx, vec![op]).pop().unwrap_or_default()
    };
    sim.notify();
    json_response(
        StatusCode::CREATED,
        &json!({"id": id, "success": true, "errors": []}),
    )
}

pub async fn delete(
    State(sim): State<Arc<Sim>>,
    Path((version, object, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let (v, user) = match sim.api(&version, &headers) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let ctx = CommitCtx {
        user,
        origin: http::change_origin("rest", &v, &headers),
    };
    {
        let mut org = sim.org_lock();
        if let Err(resp) = lookup(&org, &object, &id) {
            return resp;
        }
        let op = match org.prepare_delete(&id, false) {
            Ok(op) => op,
            Err(errors) => return write_errors(&errors),
        };
        org.commit(&ctx, vec![op]);
    }
    sim.notify();
    StatusCode::NO_CONTENT.into_response()
}
