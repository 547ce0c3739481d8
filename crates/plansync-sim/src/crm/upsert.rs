//! Upsert by external id: `PATCH …/sobjects/{object}/{field}/{value}` (one record; `GET` on the
//! same path reads it) and `PATCH …/composite/sobjects/{object}/{field}` (sObject Collections,
//! up to 200 records, `allOrNone`).
//!
//! As the REST API Developer Guide describes it: no record with the value → the record is
//! created with it (201, `created: true`); one → it is updated (200 with `created: false` from
//! API 46.0, 204 before); several → 300 with the matching records' URLs (in a collection, that
//! record's `DUPLICATE_EXTERNAL_ID` error). `Id` serves as the field too (it never creates),
//! except in `POST …/sobjects/{object}/Id` (API 37.0 on), which creates: `Id` as the field,
//! null as the value. Within one collection, a key two records share fails both
//! (`DUPLICATE_VALUE`), as Salesforce checks keys per chunk of 200.
//! The writes go through the ordinary commit path, so they emit change events like any other.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Sim;
use super::composite::{self, Prepared};
use super::http::{self, json_response, not_found, sf_error};
use super::org::{CommitCtx, Org, RecordRef, USER_TABLE};
use super::rest::{record_write, write_errors};
use super::schema::{FieldDef, ObjectDef, Storage, SystemField};
use super::values::{self, FieldError};

/// First API version whose upsert answers say `created` (and answer an update 200, not 204).
const CREATED_FLAG_SINCE: f64 = 46.0;

/// What an external id value matched.
enum Match {
    None,
    One(RecordRef),
    Many(Vec<RecordRef>),
}

fn field_not_found(field: &str) -> Response {
    sf_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("Provided external ID field does not exist or is not accessible: {field}"),
    )
}

/// The object and its external id field (or `Id`), as a path names them.
fn target(
    org: &Org,
    object: &str,
    field: &str,
) -> Result<(usize, Arc<ObjectDef>, usize), Response> {
    let Some(table) = org.table_index(object).filter(|&t| t != USER_TABLE) else {
        return Err(not_found());
    };
    let Some(def) = org.def(table).map(Arc::clone) else {
        return Err(not_found());
    };
    let fi = key_field(&def, field).ok_or_else(|| field_not_found(field))?;
    Ok((table, def, fi))
}

fn is_key(f: &FieldDef) -> bool {
    f.external_id || f.storage == Storage::System(SystemField::Id)
}

/// The live records of `table` whose key field holds `value`.
fn find(org: &Org, table: usize, field: &FieldDef, value: &Value) -> Result<Match, FieldError> {
    if field.storage == Storage::System(SystemField::Id) {
        let id = value.as_str().unwrap_or_default();
        let hit = org
            .resolve_id(id)
            .filter(|r| r.table == table && org.record(*r).is_some_and(|rec| !rec.deleted));
        return Ok(hit.map_or(Match::None, Match::One));
    }
    let wanted = values::from_json(field, value)?;
    if wanted.is_null() {
        return Err(FieldError::new(
            "MISSING_ARGUMENT",
            format!("{} not specified", field.name),
            &[&field.name],
        ));
    }
    let mut hits = org.find_by_value(table, field, &wanted);
    Ok(match hits.len() {
        0 => Match::None,
        1 => Match::One(hits.remove(0)),
        _ => Match::Many(hits),
    })
}

/// The path's value as JSON of the field's type (a number field's value is a number).
fn path_value(field: &FieldDef, raw: &str) -> Value {
    if field.ty.is_numeric()
        && let Ok(n) = raw.parse::<f64>()
    {
        return json!(n);
    }
    Value::String(raw.to_string())
}

/// A create or an update of one record by its key value.
fn prepare(
    org: &mut Org,
    object: &str,
    field: &FieldDef,
    value: &Value,
    fields: &Map<String, Value>,
) -> Result<(Op, bool), FieldError> {
    match find(
        org,
        org.table_index(object).unwrap_or(usize::MAX),
        field,
        value,
    )? {
        Match::Many(hits) => {
            let ids: Vec<String> = hits.iter().map(|&r| org.id_of(r)).collect();
            Err(FieldError::new(
                "DUPLICATE_EXTERNAL_ID",
                format!(
                    "{}: more than one record found for external id field: [{}]",
                    field.name,
                    ids.join(", ")
                ),
                &[&field.name],
            ))
        }
        Match::One(r) => {
            let id = org.id_of(r);
            Ok((Op::Update(id), false))
        }
        Match::None if field.storage == Storage::System(SystemField::Id) => Err(FieldError::new(
            "NOT_FOUND",
            "The requested resource does not exist",
            &[],
        )),
        Match::None => {
            let mut with_key = fields.clone();
            with_key.insert(field.name.clone(), value.clone());
            Ok((Op::Create(with_key), true))
        }
    }
}

/// What `prepare` decided, before the org validates the write itself.
enum Op {
    Update(String),
    Create(Map<String, Value>),
}

fn validate(org: &mut Org, object: &str, op: Op, fields: &Map<String, Value>) -> Prepared {
    match op {
        Op::Update(id) => {
            let result = org.prepare_update(Some(object), &id, fields);
            (Some(id), result)
        }
        Op::Create(with_key) => (None, org.prepare_create(object, &with_key)),
    }
}

/// First API version of `POST …/sobjects/{object}/Id`.
const POST_BY_ID_SINCE: f64 = 37.0;

/// `POST …/sobjects/{object}/Id`: a create, through the sObject path a client upserting by
/// several keys already uses. Any other last segment is a record id, which takes no POST.
pub async fn create_by_id(
    State(sim): State<Arc<Sim>>,
    Path((version, object, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let since = http::api_version(&version)
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(|v| v >= POST_BY_ID_SINCE);
    if !id.eq_ignore_ascii_case("Id") || !since {
        return sf_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "HTTP Method 'POST' not allowed. Allowed are HEAD,GET,PATCH,DELETE",
        );
    }
    let named = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.as_object()
            .and_then(|m| m.keys().find(|k| k.eq_ignore_ascii_case("Id")).cloned())
    });
    if let Some(key) = named {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            &format!("The record to create with Id as the key must not give a value of {key}"),
        );
    }
    super::rest::create(State(sim), Path((version, object)), headers, body).await
}

/// `PATCH …/sobjects/{object}/{field}/{value}`.
pub async fn upsert(
    State(sim): State<Arc<Sim>>,
    Path((version, object, field, value)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (v, fields, ctx) = match record_write(&sim, &version, &headers, &body) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let (id, created) = {
        let mut org = sim.org_lock();
        let (_, def, fi) = match target(&org, &object, &field) {
            Ok(t) => t,
            Err(resp) => return resp,
        };
        let key = &def.fields[fi];
        let value = path_value(key, &value);
        let (op, created) = match prepare(&mut org, &object, key, &value, &fields) {
            Ok(x) => x,
            Err(e) if e.status_code == "DUPLICATE_EXTERNAL_ID" => {
                return multiple_choices(&org, &def, &v, key, &value);
            }
            Err(e) if e.status_code == "NOT_FOUND" => return not_found(),
            Err(e) => return write_errors(&[e]),
        };
        let op = match validate(&mut org, &object, op, &fields) {
            (_, Ok(op)) => op,
            (_, Err(errors)) => return write_errors(&errors),
        };
        (
            org.commit(&ctx, vec![op]).pop().unwrap_or_default(),
            created,
        )
    };
    sim.notify();
    let new_shape = v.parse::<f64>().is_ok_and(|n| n >= CREATED_FLAG_SINCE);
    match (created, new_shape) {
        (true, true) => json_response(
            StatusCode::CREATED,
            &json!({"id": id, "success": true, "errors": [], "created": true}),
        ),
        (true, false) => json_response(
            StatusCode::CREATED,
            &json!({"id": id, "success": true, "errors": []}),
        ),
        (false, true) => json_response(
            StatusCode::OK,
            &json!({"id": id, "success": true, "errors": [], "created": false}),
        ),
        (false, false) => StatusCode::NO_CONTENT.into_response(),
    }
}

/// 300: the URLs of the records an external id value matched.
fn multiple_choices(
    org: &Org,
    def: &ObjectDef,
    v: &str,
    key: &FieldDef,
    value: &Value,
) -> Response {
    let table = org.table_index(&def.name).unwrap_or(usize::MAX);
    let urls: Vec<Value> = match find(org, table, key, value) {
        Ok(Match::Many(hits)) => hits
            .iter()
            .map(|&r| {
                json!(format!(
                    "/services/data/v{v}/sobjects/{}/{}",
                    def.name,
                    org.id_of(r)
                ))
            })
            .collect(),
        _ => Vec::new(),
    };
    json_response(StatusCode::MULTIPLE_CHOICES, &Value::Array(urls))
}

/// `GET …/sobjects/{object}/{field}/{value}`: the record an external id value names.
pub async fn get_by_value(
    State(sim): State<Arc<Sim>>,
    Path((version, object, field, value)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let (v, _user) = match sim.api(&version, &headers) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let org = sim.org_lock();
    let (table, def, fi) = match target(&org, &object, &field) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let key = &def.fields[fi];
    let value = path_value(key, &value);
    match find(&org, table, key, &value) {
        Ok(Match::One(r)) => {
            json_response(StatusCode::OK, &org.rest_record(r, &format!("v{v}"), None))
        }
        Ok(Match::Many(_)) => multiple_choices(&org, &def, &v, key, &value),
        Ok(Match::None) => not_found(),
        Err(e) => write_errors(&[e]),
    }
}

/// `PATCH …/composite/sobjects/{object}/{field}`: each record matched by its own value of
/// `field`; results in request order, with `created`.
pub async fn composite(
    State(sim): State<Arc<Sim>>,
    Path((version, object, field)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (v, user) = match sim.api(&version, &headers) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let (records, all_or_none) = match composite::parse_request(&body) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let ctx = CommitCtx {
        user,
        origin: http::change_origin("rest", &v, &headers),
    };
    let results = {
        let mut org = sim.org_lock();
        let (_, def, fi) = match target(&org, &object, &field) {
            Ok(t) => t,
            Err(resp) => return resp,
        };
        let key = &def.fields[fi];
        let keys: Vec<Value> = records
            .iter()
            .map(|r| {
                r.as_object()
                    .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key.name)))
                    .map_or(Value::Null, |(_, v)| v.clone())
            })
            .collect();
        let repeated = repeated_keys(&keys);
        let mut created = Vec::with_capacity(records.len());
        let prepared: Vec<Prepared> = records
            .iter()
            .zip(keys.iter().zip(repeated))
            .map(|(record, (value, repeated))| {
                if repeated {
                    created.push(false);
                    return (None, Err(vec![repeated_key_error(key, value)]));
                }
                let (p, c) = prepare_record(&mut org, &object, key, record);
                created.push(c);
                p
            })
            .collect();
        let mut results = composite::finish(&mut org, &ctx, prepared, all_or_none);
        for (result, created) in results.iter_mut().zip(created) {
            if let Value::Object(m) = result
                && m.get("success") == Some(&Value::Bool(true))
            {
                m.insert("created".into(), Value::Bool(created));
            }
        }
        results
    };
    sim.notify();
    json_response(StatusCode::OK, &Value::Array(results))
}

/// One record of a collection upsert: its validated write and whether it creates.
fn prepare_record(org: &mut Org, object: &str, key: &FieldDef, record: &Value) -> (Prepared, bool) {
    let fail = |e: FieldError| ((None, Err(vec![e])), false);
    let Some(fields) = record.as_object() else {
        return fail(FieldError::new(
            "JSON_PARSER_ERROR",
            "Each record must be a JSON object",
            &[],
        ));
    };
    let typed = fields
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str);
    if typed.is_some_and(|t| !t.eq_ignore_ascii_case(object)) {
        return fail(FieldError::new(
            "INVALID_TYPE",
            format!(
                "this request is for {object}; a record of another type cannot be upserted in it"
            ),
            &[],
        ));
    }
    let value = fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&key.name))
        .map(|(_, v)| v.clone())
        .unwrap_or(Value::Null);
    let mut rest = fields.clone();
    rest.retain(|k, _| !k.eq_ignore_ascii_case(&key.name));
    prepare_by_key(org, object, key, &value, &rest)
}

/// One upsert by key value (a REST collection's record, a Bulk API row): the validated write
/// and whether it creates.
pub(super) fn prepare_by_key(
    org: &mut Org,
    object: &str,
    key: &FieldDef,
    value: &Value,
    rest: &Map<String, Value>,
) -> (Prepared, bool) {
    match prepare(org, object, key, value, rest) {
        Ok((op, created)) => (validate(org, object, op, rest), created),
        Err(e) => ((None, Err(vec![e])), false),
    }
}

/// The index of `object`'s key field `name` (an external id field, or `Id`).
pub(super) fn key_field(def: &ObjectDef, name: &str) -> Option<usize> {
    def.field_index(name)
        .filter(|&i| def.fields.get(i).is_some_and(is_key))
}

/// Which of one chunk's key values appear more than once. Salesforce checks keys per chunk
/// of 200 (what a trigger sees at once): every row sharing a key fails, nothing is written
/// for them; the same key in two chunks is two upserts.
pub(super) fn repeated_keys(values: &[Value]) -> Vec<bool> {
    let norm = |v: &Value| match v {
        Value::String(s) => s.to_lowercase(),
        other => other.to_string(),
    };
    let mut counts = std::collections::HashMap::new();
    for v in values.iter().filter(|v| !v.is_null()) {
        *counts.entry(norm(v)).or_insert(0usize) += 1;
    }
    values
        .iter()
        .map(|v| !v.is_null() && counts.get(&norm(v)).is_some_and(|&n| n > 1))
        .collect()
}

/// The error of a row whose key another row of its chunk repeats.
pub(super) fn repeated_key_error(key: &FieldDef, value: &Value) -> FieldError {
    let shown = value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string);
    FieldError::new(
        "DUPLICATE_VALUE",
        format!("Duplicate external id specified: {shown}"),
        &[&key.name],
    )
}
