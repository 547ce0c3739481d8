//! Bulk API 2.0 ingest: create a job, upload CSV, mark `UploadComplete`, poll the job, read
//! `successfulResults/` and `failedResults/`. Rows are applied in transactions of 200, as
//! Salesforce chunks them, with `changeOrigin` `com/salesforce/api/bulkapi/…`. Operations:
//! `insert`, `update`, `upsert` (by `externalIdFieldName`, as the REST upsert matches: see
//! `upsert.rs`; a key repeated within a chunk fails those rows), `delete` (to the recycle
//! bin) and `hardDelete` (gone for good, even from `queryAll`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Sim;
use super::http::{self, json_response, not_found, sf_error};
use super::org::{CommitCtx, Op};
use super::values::{self, FieldError};

const CHUNK: usize = 200;

#[derive(Debug)]
pub struct Job {
    id: String,
    object: String,
    operation: String,
    /// `upsert`'s key: an external id field or `Id`, as the job names it.
    external_id: Option<String>,
    state: &'static str,
    created_by: String,
    created: i64,
    version: String,
    line_ending: String,
    delimiter: String,
    origin: String,
    user: u32,
    csv: Vec<u8>,
    header: Vec<String>,
    successes: Vec<(String, bool, Vec<String>)>,
    failures: Vec<(String, String, Vec<String>)>,
    error_message: Option<String>,
}

#[derive(Debug, Default)]
pub struct Jobs {
    map: HashMap<String, Job>,
    next: u64,
}

fn bulk_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, &json!([{"errorCode": code, "message": message}]))
}

fn info(job: &Job, full: bool) -> Value {
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
        "contentUrl": format!("services/data/v{}/jobs/ingest/{}/batches", job.version, job.id),
        "lineEnding": job.line_ending,
        "columnDelimiter": job.delimiter,
    });
    if let (Some(key), Value::Object(m)) = (&job.external_id, &mut v) {
        m.insert("externalIdFieldName".into(), json!(key));
    }
    if full && let Value::Object(m) = &mut v {
        let processed = job.successes.len() + job.failures.len();
        m.insert("jobType".into(), json!("V2Ingest"));
        m.insert("numberRecordsProcessed".into(), json!(processed));
        m.insert("numberRecordsFailed".into(), json!(job.failures.len()));
        m.insert("retries".into(), json!(0));
        m.insert("totalProcessingTime".into(), json!(0));
        m.insert("apiActiveProcessingTime".into(), json!(0));
        m.insert("apexProcessingTime".into(), json!(0));
        if let Some(e) = &job.error_message {
            m.insert("errorMessage".into(), json!(e));
        }
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
    let Some(object) = field("object") else {
        return bulk_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            "InvalidJob : Required field object is missing",
        );
    };
    let operation = field("operation").unwrap_or_default();
    if !matches!(
        operation.as_str(),
        "insert" | "update" | "upsert" | "delete" | "hardDelete"
    ) {
        return bulk_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            &format!("InvalidJob : Operation '{operation}' is not supported"),
        );
    }
    if field("contentType").is_some_and(|c| c != "CSV") {
        return bulk_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            "InvalidJob : contentType must be CSV",
        );
    }
    let line_ending = field("lineEnding").unwrap_or_else(|| "LF".into());
    let delimiter = field("columnDelimiter").unwrap_or_else(|| "COMMA".into());
    if !matches!(line_ending.as_str(), "LF" | "CRLF") || http::csv_delimiter(&delimiter).is_none() {
        return bulk_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            "InvalidJob : invalid lineEnding or columnDelimiter",
        );
    }
    let (canonical, created_by) = {
        let org = sim.org_lock();
        let Some(t) = org
            .table_index(&object)
            .filter(|&t| t != super::org::USER_TABLE)
        else {
            return bulk_error(
                StatusCode::BAD_REQUEST,
                "INVALIDENTITY",
                &format!("InvalidEntity : Entity '{object}' is not supported by the Bulk API."),
            );
        };
        (
            org.def(t).map(|d| d.name.clone()).unwrap_or_default(),
            org.user_id(user),
        )
    };
    let external_id = if operation == "upsert" {
        let Some(key) = field("externalIdFieldName").filter(|k| !k.is_empty()) else {
            return bulk_error(
                StatusCode::BAD_REQUEST,
                "INVALIDJOB",
                "InvalidJob : External ID was blank for upsert",
            );
        };
        let org = sim.org_lock();
        let known = org
            .table_index(&canonical)
            .and_then(|t| org.def(t))
            .is_some_and(|def| super::upsert::key_field(def, &key).is_some());
        if !known {
            return bulk_error(
                StatusCode::BAD_REQUEST,
                "INVALIDJOB",
                &format!(
                    "InvalidJob : Field name provided, {key} does not match an External ID, Salesforce Id, or indexed field for {canonical}"
                ),
            );
        }
        Some(key)
    } else {
        None
    };
    let mut jobs = sim.jobs_lock();
    jobs.next += 1;
    let id = super::ids::make_id("750", jobs.next);
    let job = Job {
        id: id.clone(),
        object: canonical,
        operation,
        external_id,
        state: "Open",
        created_by,
        created: super::org::now_ms(),
        version: v.clone(),
        line_ending,
        delimiter,
        origin: http::change_origin("bulkapi", &v, &headers),
        user,
        csv: Vec::new(),
        header: Vec::new(),
        successes: Vec::new(),
        failures: Vec::new(),
        error_message: None,
    };
    let body = info(&job, false);
    jobs.map.insert(id, job);
    json_response(StatusCode::OK, &body)
}

pub async fn upload(
    State(sim): State<Arc<Sim>>,
    Path((version, job)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(resp) = sim.api(&version, &headers) {
        return resp;
    }
    let mut jobs = sim.jobs_lock();
    let Some(job) = jobs.map.get_mut(&job) else {
        return not_found();
    };
    if job.state != "Open" {
        return bulk_error(
            StatusCode::CONFLICT,
            "INVALIDJOBSTATE",
            "Job state is not valid for this operation",
        );
    }
    job.csv.extend_from_slice(&body);
    StatusCode::CREATED.into_response()
}

pub async fn job_info(
    State(sim): State<Arc<Sim>>,
    Path((version, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = sim.api(&version, &headers) {
        return resp;
    }
    let jobs = sim.jobs_lock();
    match jobs.map.get(&job) {
        Some(j) => json_response(StatusCode::OK, &info(j, true)),
        None => not_found(),
    }
}

pub async fn set_state(
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
    let mut jobs = sim.jobs_lock();
    let Some(job) = jobs.map.get_mut(&job) else {
        return not_found();
    };
    match state.as_deref() {
        Some("UploadComplete") if job.state == "Open" => {
            let mut reply = info(job, false);
            if let Value::Object(m) = &mut reply {
                m.insert("state".into(), json!("UploadComplete"));
            }
            process(&sim, job);
            drop(jobs);
            sim.notify();
            json_response(StatusCode::OK, &reply)
        }
        Some("Aborted") if matches!(job.state, "Open" | "UploadComplete") => {
            job.state = "Aborted";
            json_response(StatusCode::OK, &info(job, false))
        }
        _ => bulk_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOBSTATE",
            "Job state is not valid for this operation",
        ),
    }
}

fn error_text(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}:{}:{} --", e.status_code, e.message, e.fields.join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where a job's upload has its `Id` and its upsert key.
struct Columns<'a> {
    header: &'a [String],
    id: Option<usize>,
    key: Option<usize>,
}

/// One row's write, validated, and whether it creates a record.
fn prepare_row(
    org: &mut super::org::Org,
    job: &Job,
    columns: &Columns<'_>,
    row: &[String],
) -> (Result<Op, Vec<FieldError>>, bool) {
    let id = columns
        .id
        .and_then(|c| row.get(c))
        .cloned()
        .unwrap_or_default();
    if matches!(job.operation.as_str(), "delete" | "hardDelete") {
        return (org.prepare_delete(&id, false), false);
    }
    let table = org.table_index(&job.object);
    let def = table.and_then(|t| org.def(t)).map(Arc::clone);
    let mut fields = Map::new();
    let mut errors = Vec::new();
    for (c, (col, cell)) in columns.header.iter().zip(row).enumerate() {
        if Some(c) == columns.id || Some(c) == columns.key {
            continue;
        }
        let Some(field) = def.as_ref().and_then(|d| d.field(col).cloned()) else {
            errors.push(FieldError::new(
                "INVALID_FIELD",
                format!("No such column '{col}' on entity '{}'", job.object),
                &[col],
            ));
            continue;
        };
        match values::from_csv(&field, cell) {
            Ok(Some(v)) => {
                fields.insert(field.name.clone(), values::to_json(&v, false));
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return (Err(errors), false);
    }
    match job.operation.as_str() {
        "insert" => (org.prepare_create(&job.object, &fields), true),
        "upsert" => {
            let key_name = job.external_id.as_deref().unwrap_or("Id");
            let Some(key) = def.as_ref().and_then(|d| d.field(key_name).cloned()) else {
                let error = FieldError::new(
                    "INVALID_FIELD",
                    format!(
                        "No such external id field '{key_name}' on entity '{}'",
                        job.object
                    ),
                    &[key_name],
                );
                return (Err(vec![error]), false);
            };
            let cell = columns
                .key
                .and_then(|c| row.get(c))
                .cloned()
                .unwrap_or_default();
            let value = if cell.is_empty() {
                Value::Null
            } else {
                Value::String(cell)
            };
            let ((_, result), created) =
                super::upsert::prepare_by_key(org, &job.object, &key, &value, &fields);
            (result, created)
        }
        _ => (org.prepare_update(Some(&job.object), &id, &fields), false),
    }
}

/// Applies the uploaded rows in chunks of 200, one transaction each. Called with the jobs lock
/// held; takes the org lock per chunk (jobs before org, nothing awaits).
fn process(sim: &Sim, job: &mut Job) {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(http::csv_delimiter(&job.delimiter).unwrap_or(b','))
        .has_headers(true)
        .flexible(false)
        .from_reader(job.csv.as_slice());
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => {
            job.state = "Failed";
            job.error_message = Some(format!("InvalidBatch : {e}"));
            return;
        }
    };
    let id_col = header.iter().position(|h| h.eq_ignore_ascii_case("id"));
    let key_col = match &job.external_id {
        Some(key) => match header.iter().position(|h| h.eq_ignore_ascii_case(key)) {
            Some(c) => Some(c),
            None => {
                job.state = "Failed";
                job.error_message = Some(format!("InvalidBatch : Field name not found : {key}"));
                return;
            }
        },
        None => None,
    };
    if !matches!(job.operation.as_str(), "insert" | "upsert") && id_col.is_none() {
        job.state = "Failed";
        job.error_message = Some("InvalidBatch : Field name not found : Id".into());
        return;
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    for rec in reader.records() {
        match rec {
            Ok(r) => rows.push(r.iter().map(str::to_string).collect()),
            Err(e) => {
                job.state = "Failed";
                job.error_message = Some(format!("InvalidBatch : {e}"));
                return;
            }
        }
    }
    job.header = header.clone();
    let ctx = CommitCtx {
        user: job.user,
        origin: job.origin.clone(),
    };
    let columns = Columns {
        header: &header,
        id: id_col,
        key: key_col,
    };
    for chunk in rows.chunks(CHUNK) {
        let mut org = sim.org_lock();
        let keys: Vec<Value> = chunk
            .iter()
            .map(|row| {
                key_col
                    .and_then(|c| row.get(c))
                    .filter(|v| !v.is_empty())
                    .map_or(Value::Null, |v| Value::String(v.clone()))
            })
            .collect();
        let repeated = if key_col.is_some() {
            super::upsert::repeated_keys(&keys)
        } else {
            vec![false; chunk.len()]
        };
        let mut prepared: Vec<(Result<Op, Vec<FieldError>>, bool)> = Vec::new();
        for ((row, key), repeated) in chunk.iter().zip(&keys).zip(repeated) {
            prepared.push(if repeated {
                let field = job.external_id.as_deref().unwrap_or("Id");
                let def = org.table_index(&job.object).and_then(|t| org.def(t));
                let error = def
                    .and_then(|d| d.field(field))
                    .map(|f| super::upsert::repeated_key_error(f, key));
                (Err(error.into_iter().collect()), false)
            } else {
                prepare_row(&mut org, job, &columns, row)
            });
        }
        let ops: Vec<Op> = prepared
            .iter()
            .filter_map(|(r, _)| r.as_ref().ok().cloned())
            .collect();
        let mut ids = org.commit(&ctx, ops).into_iter();
        for (i, (result, created)) in prepared.into_iter().enumerate() {
            let row = chunk.get(i).cloned().unwrap_or_default();
            match result {
                Ok(_) => {
                    let id = ids.next().unwrap_or_default();
                    if job.operation == "hardDelete"
                        && let Some(r) = org.resolve_id(&id)
                    {
                        org.purge(r);
                    }
                    job.successes.push((id, created, row));
                }
                Err(errors) => {
                    let id = id_col.and_then(|c| row.get(c)).cloned().unwrap_or_default();
                    job.failures.push((id, error_text(&errors), row));
                }
            }
        }
        drop(org);
    }
    job.state = "JobComplete";
}

/// `successfulResults/`, `failedResults/` and `unprocessedrecords/` as CSV.
pub async fn results(
    State(sim): State<Arc<Sim>>,
    Path((version, job, which)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = sim.api(&version, &headers) {
        return resp;
    }
    let jobs = sim.jobs_lock();
    let Some(job) = jobs.map.get(&job) else {
        return not_found();
    };
    if job.state != "JobComplete" && which != "unprocessedrecords" {
        return bulk_error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOBSTATE",
            "Job state is not valid for this operation",
        );
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let ok = match which.as_str() {
        "successfulResults" => {
            let mut head = vec!["sf__Id".to_string(), "sf__Created".to_string()];
            head.extend(job.header.iter().cloned());
            let mut ok = w.write_record(&head).is_ok();
            for (id, created, row) in &job.successes {
                let mut line = vec![id.clone(), created.to_string()];
                line.extend(row.iter().cloned());
                ok &= w.write_record(&line).is_ok();
            }
            ok
        }
        "failedResults" => {
            let mut head = vec!["sf__Id".to_string(), "sf__Error".to_string()];
            head.extend(job.header.iter().cloned());
            let mut ok = w.write_record(&head).is_ok();
            for (id, error, row) in &job.failures {
                let mut line = vec![id.clone(), error.clone()];
                line.extend(row.iter().cloned());
                ok &= w.write_record(&line).is_ok();
            }
            ok
        }
        "unprocessedrecords" => w.write_record(&job.header).is_ok(),
        _ => return not_found(),
    };
    let body = match w.into_inner() {
        Ok(b) if ok => b,
        _ => {
            return sf_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN_EXCEPTION",
                "could not write results",
            );
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"))],
        body,
    )
        .into_response()
}
