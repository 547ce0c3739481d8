//! Bulk API 2.0 query jobs: `POST jobs/query` (`query` or `queryAll`), the job's state,
//! `GET …/results` as CSV pages with `Sforce-Locator` / `Sforce-NumberOfRecords` and the
//! `locator` / `maxRecords` parameters, abort, delete and the list of jobs.
//!
//! The query runs when the job is created (the matching rows are fixed then); the job reports
//! `UploadComplete` in the creation answer and `JobComplete` from the first state read on, so
//! a client must poll as it would against Salesforce. A page is rendered from the org when it
//! is read, so a large result costs the ids of its rows, not their text.
//!
//! CSV as Bulk API 2.0 writes it: a header of the selected field names, a null as an empty
//! cell, datetimes in UTC with `Z`, booleans `true`/`false`. The rows come in the order the
//! org keeps them, not the query's: Bulk API 2.0 documents `ORDER BY` as unsupported (it turns
//! chunking off), so a client must not rely on order; accepting it, but ignoring it, finds one
//! that does.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use super::Sim;
use super::http::{csv_delimiter, json_response, not_found};
use super::org::RecordRef;
use super::schema::Storage;
use super::soql;
use super::values::{self, Val};

/// Rows per results page when the client does not say (`maxRecords`).
const DEFAULT_PAGE: usize = 50_000;

#[derive(Debug)]
pub struct QueryJob {
    id: String,
    /// `query` or `queryAll`.
    operation: String,
    object: String,
    created_by: String,
    created: i64,
    version: String,
    line_ending: String,
    delimiter: String,
    state: &'static str,
    table: usize,
    fields: Vec<usize>,
    rows: Vec<RecordRef>,
}

#[derive(Debug)]
pub struct QueryJobs {
    map: HashMap<String, QueryJob>,
    next: u64,
    /// Jobs created since the start, for `DailyBulkV2QueryJobs`.
    pub created: u64,
    /// How many may be created (`DailyBulkV2QueryJobs`' maximum); past it, creation is
    /// refused.
    pub limit: u64,
}

impl Default for QueryJobs {
    fn default() -> Self {
        QueryJobs {
            map: HashMap::new(),
            next: 0,
            created: 0,
            limit: DAILY_JOBS,
        }
    }
}

/// A Developer Edition's `DailyBulkV2QueryJobs`.
pub const DAILY_JOBS: u64 = 10_000;

fn bulk_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, &json!([{"errorCode": code, "message": message}]))
}

fn info(job: &QueryJob, full: bool) -> Value {
    let mut v = json!({
        "id": job.id,
        "operation": job.operation,
        "object": job.object,
        "createdById": job.created_by,
        "createdDate": values::rest_datetime(job.created),
        "systemModstamp": values::rest_datetime(job.created),
        "state": job.state,
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": job.version.parse::<f64>().unwrap_or(0.0),
        "lineEnding": job.line_ending,
        "columnDelimiter": job.delimiter,
    });
    if full && let Value::Object(m) = &mut v {
        let processed = if job.state == "JobComplete" {
            job.rows.len()
        } else {
            0
        };
        m.insert("jobType".into(), json!("V2Query"));
        m.insert("numberRecordsProcessed".into(), json!(processed));
        m.insert("retries".into(), json!(0));
        m.insert("totalProcessingTime".into(), json!(0));
        m.insert("isPkChunkingSupported".into(), json!(true));
    }
    v
}

pub async fn create_job(
    State(sim): State<Arc<Sim>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (v, user) = match sim.api(&version, &headers) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&body) else {
        return bulk_error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "The request body must be a JSON object",
        );
    };
    let field = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_string);
    let operation = field("operation").unwrap_or_default();
    if !matches!(operation.as_str(), "query" | "queryAll") {
        return bulk_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            &format!("InvalidJob : Operation '{operation}' is not supported for a query job"),
        );
    }
    let Some(text) = field("query").filter(|q| !q.trim().is_empty()) else {
        return bulk_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            "InvalidJob : Required field query is missing",
        );
    };
    if field("contentType").is_some_and(|c| c != "CSV") {
        return bulk_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            "InvalidJob : contentType must be CSV",
        );
    }
    let line_ending = field("lineEnding").unwrap_or_else(|| "LF".into());
    let delimiter = field("columnDelimiter").unwrap_or_else(|| "COMMA".into());
    if !matches!(line_ending.as_str(), "LF" | "CRLF") || csv_delimiter(&delimiter).is_none() {
        return bulk_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            "InvalidJob : invalid lineEnding or columnDelimiter",
        );
    }
    let (table, object, fields, rows, created_by) = {
        let org = sim.org_lock();
        let bound = match soql::prepare(&text, &org) {
            Ok(b) => b,
            Err(e) => return bulk_error(StatusCode::BAD_REQUEST, e.code, &e.message),
        };
        if bound.has_offset() {
            return bulk_error(
                StatusCode::BAD_REQUEST,
                "INVALIDJOB",
                "InvalidJob : OFFSET is not supported by Bulk API 2.0 query",
            );
        }
        let Some(def) = org.def(bound.table).map(Arc::clone) else {
            return not_found();
        };
        if let Some(f) = bound
            .fields
            .iter()
            .filter_map(|&i| def.fields.get(i))
            .find(|f| f.storage == Storage::Compound)
        {
            return bulk_error(
                StatusCode::BAD_REQUEST,
                "INVALIDJOB",
                &format!(
                    "InvalidJob : compound field '{}' is not supported by Bulk API 2.0 query; select its parts",
                    f.name
                ),
            );
        }
        let mut rows = bound.run(&org, operation == "queryAll");
        // The org's own order, whatever the query asked: see the module comment.
        rows.sort_by_key(|r| r.idx);
        (
            bound.table,
            def.name.clone(),
            bound.fields.clone(),
            rows,
            org.user_id(user),
        )
    };
    let mut jobs = sim.query_jobs_lock();
    if jobs.created >= jobs.limit {
        // The code Salesforce gives is not documented; this one says what happened.
        return bulk_error(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            "The org has used all of its Bulk API 2.0 query jobs for the last 24 hours (DailyBulkV2QueryJobs)",
        );
    }
    jobs.next += 1;
    jobs.created += 1;
    let id = super::ids::make_id("750", 500_000 + jobs.next);
    let job = QueryJob {
        id: id.clone(),
        operation,
        object,
        created_by,
        created: super::org::now_ms(),
        version: v,
        line_ending,
        delimiter,
        state: "UploadComplete",
        table,
        fields,
        rows,
    };
    let body = info(&job, false);
    jobs.map.insert(id, job);
    json_response(StatusCode::OK, &body)
}

/// `GET jobs/query/{id}`: the job, complete from the first read on.
pub async fn job_info(
    State(sim): State<Arc<Sim>>,
    Path((version, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = sim.api(&version, &headers) {
        return resp;
    }
    let mut jobs = sim.query_jobs_lock();
    let Some(job) = jobs.map.get_mut(&job) else {
        return not_found();
    };
    let body = info(job, true);
    if job.state == "UploadComplete" {
        job.state = "JobComplete";
    }
    json_response(StatusCode::OK, &body)
}

/// `GET jobs/query`: every query job, in one page.
pub async fn list(
    State(sim): State<Arc<Sim>>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = sim.api(&version, &headers) {
        return resp;
    }
    let jobs = sim.query_jobs_lock();
    let mut records: Vec<(&String, Value)> =
        jobs.map.values().map(|j| (&j.id, info(j, false))).collect();
    records.sort_by(|a, b| a.0.cmp(b.0));
    let records: Vec<Value> = records.into_iter().map(|(_, v)| v).collect();
    json_response(
        StatusCode::OK,
        &json!({"done": true, "records": records, "nextRecordsUrl": null}),
    )
}

/// `PATCH jobs/query/{id}` with `{"state":"Aborted"}`.
pub async fn abort(
    State(sim): State<Arc<Sim>>,
    Path((version, job)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(resp) = sim.api(&version, &headers) {
        return resp;
    }
    let state = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("state").and_then(Value::as_str).map(str::to_string));
    let mut jobs = sim.query_jobs_lock();
    let Some(job) = jobs.map.get_mut(&job) else {
        return not_found();
    };
    match state.as_deref() {
        Some("Aborted") if matches!(job.state, "UploadComplete" | "InProgress") => {
            job.state = "Aborted";
            job.rows = Vec::new();
            json_response(StatusCode::OK, &info(job, false))
        }
        _ => bulk_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOBSTATE",
            "Job state is not valid for this operation",
        ),
    }
}

/// `DELETE jobs/query/{id}`: the job and its results are gone. Salesforce refuses to delete
/// a job still running; so does this.
pub async fn delete(
    State(sim): State<Arc<Sim>>,
    Path((version, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = sim.api(&version, &headers) {
        return resp;
    }
    let mut jobs = sim.query_jobs_lock();
    match jobs.map.get(&job).map(|j| j.state) {
        None => not_found(),
        Some("UploadComplete" | "InProgress") => bulk_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOBSTATE",
            "Job state is not valid for this operation",
        ),
        Some(_) => {
            jobs.map.remove(&job);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

/// Locators are opaque to clients; here one is the next row's position, encoded.
fn locator(offset: usize) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(offset.to_string())
}

fn offset_of(locator: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(locator)
        .ok()?;
    std::str::from_utf8(&raw).ok()?.parse().ok()
}

/// `GET jobs/query/{id}/results[?locator=…&maxRecords=…]`: one page of CSV.
pub async fn results(
    State(sim): State<Arc<Sim>>,
    Path((version, job)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (v, _) = match sim.api(&version, &headers) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let max = match params.get("maxRecords").map(|m| m.parse::<usize>()) {
        None => DEFAULT_PAGE,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            return bulk_error(
                StatusCode::BAD_REQUEST,
                "INVALIDREQUEST",
                "maxRecords must be a positive whole number",
            );
        }
    };
    let jobs = sim.query_jobs_lock();
    let Some(job) = jobs.map.get(&job) else {
        return not_found();
    };
    if job.version != v {
        return bulk_error(
            StatusCode::CONFLICT,
            "INVALIDVERSION",
            "Use the same API version to get query results that you used to create the query",
        );
    }
    if job.state != "JobComplete" {
        return bulk_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOBSTATE",
            "Job state is not valid for this operation",
        );
    }
    let start = match params.get("locator").filter(|l| !l.is_empty()) {
        None => 0,
        Some(l) => match offset_of(l).filter(|&o| o <= job.rows.len()) {
            Some(o) => o,
            None => {
                return bulk_error(
                    StatusCode::BAD_REQUEST,
                    "INVALIDLOCATOR",
                    "The locator is not valid for this job",
                );
            }
        },
    };
    let end = start.saturating_add(max).min(job.rows.len());
    let org = sim.org_lock();
    let Some(def) = org.def(job.table).map(Arc::clone) else {
        return not_found();
    };
    let terminator = if job.line_ending == "CRLF" {
        csv::Terminator::CRLF
    } else {
        csv::Terminator::Any(b'\n')
    };
    let mut w = csv::WriterBuilder::new()
        .delimiter(csv_delimiter(&job.delimiter).unwrap_or(b','))
        .terminator(terminator)
        .from_writer(Vec::new());
    let fields: Vec<_> = job
        .fields
        .iter()
        .filter_map(|&i| def.fields.get(i))
        .collect();
    let mut ok = w
        .write_record(fields.iter().map(|f| f.name.as_str()))
        .is_ok();
    let mut cells: Vec<String> = Vec::with_capacity(fields.len());
    for &r in &job.rows[start..end] {
        cells.clear();
        cells.extend(fields.iter().map(|f| cell(&org.get(r, f))));
        ok &= w.write_record(&cells).is_ok();
    }
    drop(org);
    let next = if end < job.rows.len() {
        locator(end)
    } else {
        // Salesforce sends the text `null` when there is nothing more.
        "null".to_string()
    };
    drop(jobs);
    let body = match w.into_inner() {
        Ok(b) if ok => b,
        _ => {
            return bulk_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN_EXCEPTION",
                "could not write results",
            );
        }
    };
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"))],
        body,
    )
        .into_response();
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&next) {
        h.insert("Sforce-Locator", value);
    }
    h.insert("Sforce-NumberOfRecords", HeaderValue::from(end - start));
    response
}

/// One value as a Bulk API 2.0 CSV cell.
fn cell(v: &Val) -> String {
    match v {
        Val::Null => String::new(),
        Val::Bool(b) => b.to_string(),
        Val::Num(n) => serde_json::Number::from_f64(*n)
            .map(|n| n.to_string())
            .unwrap_or_default(),
        Val::Date(d) => values::date_string(*d),
        Val::DateTime(ms) => values::event_datetime(*ms),
        Val::Str(s) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locators_round_trip_and_reject_junk() {
        for n in [0, 1, 2_000, 999_999] {
            assert_eq!(offset_of(&locator(n)), Some(n));
        }
        assert_eq!(offset_of("null"), None);
        assert_eq!(offset_of("!!"), None);
    }

    #[test]
    fn cells_are_written_as_bulk_api_writes_them() {
        assert_eq!(cell(&Val::Null), "");
        assert_eq!(cell(&Val::Bool(true)), "true");
        assert_eq!(cell(&Val::Num(12.5)), "12.5");
        assert_eq!(cell(&Val::DateTime(0)), "1970-01-01T00:00:00.000Z");
    }
}
