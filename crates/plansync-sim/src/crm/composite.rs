//! sObject Collections: `composite/sobjects` create (POST), update (PATCH) and delete (DELETE),
//! up to 200 records, one transaction, per-record results in request order, and `allOrNone`
//! rollback. (The upsert form, `composite/sobjects/{object}/{field}`, is in `upsert`.)

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::Sim;
use super::http::{self, json_response, sf_error};
use super::org::{CommitCtx, Op, Org};
use super::values::FieldError;

const MAX_RECORDS: usize = 200;

/// A record's id as sent (if any) and its validated write or its errors.
pub(super) type Prepared = (Option<String>, Result<Op, Vec<FieldError>>);

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Create,
    Update,
}

fn too_many() -> Response {
    sf_error(
        StatusCode::BAD_REQUEST,
        "EXCEEDED_ID_LIMIT",
        "record limit reached. cannot submit more than 200 records into this call",
    )
}

fn rolled_back() -> FieldError {
    FieldError::new(
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "Record rolled back because not all records were valid and the request was using AllOrNone header",
        &[],
    )
}

pub async fn create(
    State(sim): State<Arc<Sim>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(&sim, &version, &headers, &body, Kind::Create)
}

pub async fn update(
    State(sim): State<Arc<Sim>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(&sim, &version, &headers, &body, Kind::Update)
}

/// A collection request's `records` and `allOrNone`, or the 400 a malformed one gets.
pub(super) fn parse_request(body: &[u8]) -> Result<(Vec<Value>, bool), Response> {
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Err(sf_error(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                &format!(
                    "Unexpected character at [line:{}, column:{}]",
                    e.line(),
                    e.column()
                ),
            ));
        }
    };
    let all_or_none = match request.get("allOrNone") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(sf_error(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                "Cannot deserialize instance of boolean for allOrNone",
            ));
        }
    };
    let Some(records) = request.get("records").and_then(Value::as_array) else {
        return Err(sf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            "No records were provided",
        ));
    };
    if records.len() > MAX_RECORDS {
        return Err(too_many());
    }
    Ok((records.clone(), all_or_none))
}

fn write(sim: &Sim, version: &str, headers: &HeaderMap, body: &[u8], kind: Kind) -> Response {
    let (v, user) = match sim.api(version, headers) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let (records, all_or_none) = match parse_request(body) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let ctx = CommitCtx {
        user,
        origin: http::change_origin("rest", &v, headers),
    };
    let results = {
        let mut org = sim.org_lock();
        let prepared: Vec<Prepared> = records
            .iter()
            .map(|r| prepare_one(&mut org, r, kind))
            .collect();
        finish(&mut org, &ctx, prepared, all_or_none)
    };
    sim.notify();
    json_response(StatusCode::OK, &Value::Array(results))
}

fn prepare_one(org: &mut Org, record: &Value, kind: Kind) -> Prepared {
    let Some(fields) = record.as_object() else {
        return (
            None,
            Err(vec![FieldError::new(
                "JSON_PARSER_ERROR",
                "Each record must be a JSON object",
                &[],
            )]),
        );
    };
    let object = fields
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str);
    let Some(object) = object else {
        return (
            None,
            Err(vec![FieldError::new(
                "INVALID_TYPE",
                "No SObject Type defined in the attributes",
                &[],
            )]),
        );
    };
    let id = fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("id"))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_string);
    match kind {
        Kind::Update => match &id {
            None => (
                None,
                Err(vec![FieldError::new(
                    "MISSING_ARGUMENT",
                    "Id not specified in an update call",
                    &["Id"],
                )]),
            ),
            Some(id) => (
                Some(id.clone()),
                org.prepare_update(Some(object), id, fields),
            ),
        },
        Kind::Create => {
            if id.is_some() {
                return (
                    None,
                    Err(vec![FieldError::new(
                        "INVALID_FIELD",
                        "cannot specify Id in an insert call",
                        &["Id"],
                    )]),
                );
            }
            let without: Map<String, Value> = fields.clone();
            (None, org.prepare_create(object, &without))
        }
    }
}

/// Commits what passed (nothing with `allOrNone` and a failure) and renders the results.
pub(super) fn finish(
    org: &mut Org,
    ctx: &CommitCtx,
    prepared: Vec<Prepared>,
    all_or_none: bool,
) -> Vec<Value> {
    let failed = prepared.iter().any(|(_, r)| r.is_err());
    let error_result = |errors: &[FieldError]| json!({"success": false, "errors": errors.iter().map(FieldError::to_json).collect::<Vec<_>>()});
    if all_or_none && failed {
        return prepared
            .iter()
            .map(|(id, r)| match r {
                Err(errors) => error_result(errors),
                Ok(_) => json!({"id": id, "success": false, "errors": [rolled_back().to_json()]}),
            })
            .collect();
    }
    let ops: Vec<Op> = prepared
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().cloned())
        .collect();
    let mut ids = org.commit(ctx, ops).into_iter();
    prepared
        .iter()
        .map(|(_, r)| match r {
            Err(errors) => error_result(errors),
            Ok(_) => json!({"id": ids.next(), "success": true, "errors": []}),
        })
        .collect()
}

/// `DELETE …/composite/sobjects?ids=a,b&allOrNone=true`.
pub async fn delete(
    State(sim): State<Arc<Sim>>,
    Path(version): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (v, user) = match sim.api(&version, &headers) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let ids: Vec<String> = params
        .get("ids")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "MISSING_ARGUMENT",
            "ids parameter is required",
        );
    }
    if ids.len() > MAX_RECORDS {
        return too_many();
    }
    let all_or_none = params
        .get("allOrNone")
        .is_some_and(|s| s.eq_ignore_ascii_case("true"));
    let ctx = CommitCtx {
        user,
        origin: http::change_origin("rest", &v, &headers),
    };
    let results = {
        let mut org = sim.org_lock();
        let prepared = ids
            .iter()
            .map(|id| (Some(id.clone()), org.prepare_delete(id, false)))
            .collect();
        finish(&mut org, &ctx, prepared, all_or_none)
    };
    sim.notify();
    json_response(StatusCode::OK, &Value::Array(results))
}
