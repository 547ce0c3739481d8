//! Test hooks, over HTTP under `/__sim/` (JSON) and through [`CrmSimHandle`]: edits "by a
//! user" (no API origin), creates, deletes and undeletes, injected gap, overflow and merged
//! events, injected lock failures, token revocation and expiry, dropped streaming sessions,
//! retention and purge, direct record reads, request counts and the daily budget.
//!
//! Every `/__sim/` request must carry the simulator's token in `X-Sim-Token` (checked with the
//! request accounting in `mod.rs`; see [`crate::hooks_token`]); the handle needs none.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

use super::Sim;
use super::hook_body::{self, MAX_SECONDS};
use super::http::json_response;
use super::limits::{LoggedRequest, RequestCounts};
use super::org::{CommitCtx, Op};
use super::values::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("unknown object {0}")]
    UnknownObject(String),
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("unknown record {0}")]
    UnknownRecord(String),
    #[error("fields must be a JSON object")]
    NotAnObject,
    #[error("unsupported change type {0}")]
    ChangeType(String),
    #[error("write refused: {}", .0.iter().map(|e| format!("{}: {}", e.status_code, e.message)).collect::<Vec<_>>().join("; "))]
    Refused(Vec<FieldError>),
}

fn as_object(v: &Value) -> Result<Map<String, Value>, AdminError> {
    match v {
        Value::Object(m) => Ok(m.clone()),
        Value::Null => Ok(Map::new()),
        _ => Err(AdminError::NotAnObject),
    }
}

impl Sim {
    fn ctx_for(&self, user: Option<&str>) -> Result<CommitCtx, AdminError> {
        let org = self.org_lock();
        let user = match user {
            Some(u) => org
                .find_user(u)
                .ok_or_else(|| AdminError::UnknownUser(u.to_string()))?,
            // A person in the UI: the first non-integration user if there is one.
            None => {
                let users = org.tables.first().map_or(0, |t| t.records.len()) as u32;
                (0..users).find(|&u| u != org.run_as).unwrap_or(0)
            }
        };
        Ok(CommitCtx {
            user,
            origin: String::new(),
        })
    }

    pub(super) fn edit(
        &self,
        object: &str,
        id: &str,
        fields: &Value,
        user: Option<&str>,
    ) -> Result<(), AdminError> {
        let ctx = self.ctx_for(user)?;
        let fields = as_object(fields)?;
        {
            let mut org = self.org_lock();
            if org.table_index(object).is_none() {
                return Err(AdminError::UnknownObject(object.to_string()));
            }
            let op = org
                .prepare_update(Some(object), id, &fields)
                .map_err(AdminError::Refused)?;
            org.commit(&ctx, vec![op]);
        }
        self.notify();
        Ok(())
    }

    fn create_record(
        &self,
        object: &str,
        fields: &Value,
        user: Option<&str>,
    ) -> Result<String, AdminError> {
        let ctx = self.ctx_for(user)?;
        let fields = as_object(fields)?;
        let id = {
            let mut org = self.org_lock();
            let op = org
                .prepare_create(object, &fields)
                .map_err(AdminError::Refused)?;
            org.commit(&ctx, vec![op]).pop().unwrap_or_default()
        };
        self.notify();
        Ok(id)
    }

    fn delete_record(
        &self,
        id: &str,
        undelete: bool,
        user: Option<&str>,
    ) -> Result<(), AdminError> {
        let ctx = self.ctx_for(user)?;
        {
            let mut org = self.org_lock();
            let op = org
                .prepare_delete(id, undelete)
                .map_err(AdminError::Refused)?;
            org.commit(&ctx, vec![op]);
        }
        self.notify();
        Ok(())
    }

    fn gap(
        &self,
        object: &str,
        ids: &[String],
        change_type: &str,
        fields: &Value,
    ) -> Result<(), AdminError> {
        if !matches!(
            change_type,
            "GAP_CREATE" | "GAP_UPDATE" | "GAP_DELETE" | "GAP_UNDELETE" | "GAP_OVERFLOW"
        ) {
            return Err(AdminError::ChangeType(change_type.to_string()));
        }
        let ctx = self.ctx_for(None)?;
        let fields = as_object(fields)?;
        {
            let mut org = self.org_lock();
            let table = org
                .table_index(object)
                .ok_or_else(|| AdminError::UnknownObject(object.to_string()))?;
            let mut ops = Vec::new();
            if !fields.is_empty() {
                for id in ids {
                    let r = org
                        .resolve_id(id)
                        .ok_or_else(|| AdminError::UnknownRecord(id.clone()))?;
                    let changes = org
                        .check_fields(r.table, &fields, false)
                        .map_err(AdminError::Refused)?;
                    ops.push(Op::Update { r, changes });
                }
            }
            let record_ids = if change_type == "GAP_OVERFLOW" {
                Vec::new()
            } else {
                ids.to_vec()
            };
            org.commit_gap(&ctx, table, change_type, record_ids, ops);
        }
        self.notify();
        Ok(())
    }

    fn merged(
        &self,
        object: &str,
        ids: &[String],
        fields: &Value,
        user: Option<&str>,
    ) -> Result<(), AdminError> {
        let ctx = self.ctx_for(user)?;
        let fields = as_object(fields)?;
        {
            let mut org = self.org_lock();
            let mut ops = Vec::new();
            for id in ids {
                ops.push(
                    org.prepare_update(Some(object), id, &fields)
                        .map_err(AdminError::Refused)?,
                );
            }
            org.commit_merged(&ctx, ops);
        }
        self.notify();
        Ok(())
    }

    fn read(&self, id: &str) -> Option<Value> {
        let org = self.org_lock();
        let r = org.resolve_id(id)?;
        Some(org.rest_record(r, &format!("v{}", super::http::LATEST_VERSION), None))
    }

    fn drop_streaming(&self) {
        self.streaming_lock().drop_all();
        self.notify();
    }
}

/// Drives a running simulator from Rust tests and the demo.
pub struct CrmSimHandle {
    sim: Arc<Sim>,
    task: Option<JoinHandle<()>>,
}

impl CrmSimHandle {
    pub(super) fn new(sim: Arc<Sim>, task: JoinHandle<()>) -> Self {
        CrmSimHandle {
            sim,
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT`, the `instance_url` tokens carry.
    pub fn instance_url(&self) -> &str {
        &self.sim.instance_url
    }

    /// The token `/__sim/` requests over HTTP must carry in `X-Sim-Token` (the handle's own
    /// methods need none).
    pub fn hooks_token(&self) -> &str {
        self.sim.hooks_token.expose()
    }

    pub fn org_name(&self) -> String {
        self.sim.org_lock().org_name.clone()
    }

    pub fn org_id(&self) -> String {
        self.sim.org_lock().org_id.clone()
    }

    /// The id of a user, by username.
    pub fn user_id(&self, username: &str) -> Option<String> {
        let org = self.sim.org_lock();
        org.user_by_name(username).map(|u| org.user_id(u))
    }

    /// Edits a record as a person would in the UI (empty `changeOrigin`); `user` is a username
    /// or user id (default: a non-integration user).
    pub fn user_edit(
        &self,
        object: &str,
        id: &str,
        fields: Value,
        user: Option<&str>,
    ) -> Result<(), AdminError> {
        self.sim.edit(object, id, &fields, user)
    }

    pub fn create(
        &self,
        object: &str,
        fields: Value,
        user: Option<&str>,
    ) -> Result<String, AdminError> {
        self.sim.create_record(object, &fields, user)
    }

    pub fn delete(&self, id: &str, user: Option<&str>) -> Result<(), AdminError> {
        self.sim.delete_record(id, false, user)
    }

    pub fn undelete(&self, id: &str, user: Option<&str>) -> Result<(), AdminError> {
        self.sim.delete_record(id, true, user)
    }

    /// Emits a header-only gap event (`GAP_UPDATE`, …, or `GAP_OVERFLOW`); non-empty `fields`
    /// also change the records silently, as a database-level change would.
    pub fn inject_gap(
        &self,
        object: &str,
        ids: &[String],
        change_type: &str,
        fields: Value,
    ) -> Result<(), AdminError> {
        self.sim.gap(object, ids, change_type, &fields)
    }

    pub fn inject_overflow(&self, object: &str) -> Result<(), AdminError> {
        self.sim.gap(object, &[], "GAP_OVERFLOW", &Value::Null)
    }

    /// The same update to several records, emitted as one event with all their ids.
    pub fn inject_merged(
        &self,
        object: &str,
        ids: &[String],
        fields: Value,
        user: Option<&str>,
    ) -> Result<(), AdminError> {
        self.sim.merged(object, ids, &fields, user)
    }

    /// How many Bulk API 2.0 query jobs the org may create (`DailyBulkV2QueryJobs`; 10,000
    /// by default); past it, creating one is refused with `LIMIT_EXCEEDED`.
    pub fn set_bulk_query_job_limit(&self, limit: u64) {
        self.sim.query_jobs_lock().limit = limit;
    }

    /// Answers this share (0.0–1.0, clamped) of REST calls with 503 `SERVER_UNAVAILABLE`,
    /// before they are looked at; OAuth and streaming are not affected.
    pub fn set_error_rate(&self, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        *self
            .sim
            .error_rate
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = rate;
    }

    /// The next `count` record writes fail with `UNABLE_TO_LOCK_ROW`.
    pub fn inject_lock_errors(&self, count: u32) {
        self.sim.org_lock().lock_failures = count;
    }

    /// Every write of record `id` fails with `UNABLE_TO_LOCK_ROW` while `locked`, as a
    /// record held by a long-running job does.
    pub fn lock_record(&self, id: &str, locked: bool) {
        let mut org = self.sim.org_lock();
        if locked {
            org.locked.insert(id.to_string());
        } else {
            org.locked.remove(id);
        }
    }

    /// A record as REST would return it (all fields, deleted ones too).
    pub fn record(&self, id: &str) -> Option<Value> {
        self.sim.read(id)
    }

    pub fn request_counts(&self) -> RequestCounts {
        self.sim.usage_lock().counts()
    }

    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.sim.usage_lock().log()
    }

    pub fn reset_request_log(&self) {
        self.sim.usage_lock().reset_log();
    }

    pub fn revoke_all_tokens(&self) {
        self.sim.tokens_lock().revoke_all();
    }

    pub fn expire_all_tokens(&self) {
        self.sim.tokens_lock().expire_all();
    }

    /// Forgets every streaming client: their next message gets `403::Unknown client`.
    pub fn drop_sessions(&self) {
        self.sim.drop_streaming();
    }

    /// While `refusal` is set, every streaming handshake is refused with it (e.g.
    /// `403::Organization total events daily limit exceeded`) and advice `none`; existing
    /// sessions are dropped so their clients must handshake again.
    pub fn refuse_streaming(&self, refusal: Option<&str>) {
        self.sim.streaming_lock().refusal = refusal.map(str::to_string);
        if refusal.is_some() {
            self.sim.drop_streaming();
        }
    }

    pub fn streaming_sessions(&self) -> usize {
        self.sim.streaming_lock().len()
    }

    pub fn set_retention(&self, retention: Duration) {
        let mut org = self.sim.org_lock();
        org.events.retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        org.events.expire(super::org::now_ms());
    }

    /// Drops retained events up to `replay_id` (all with `None`).
    pub fn purge_events(&self, up_to: Option<u64>) {
        self.sim.org_lock().events.purge(up_to);
    }

    /// Makes retained events look older, then applies retention.
    pub fn age_events(&self, by: Duration) {
        let mut org = self.sim.org_lock();
        org.events
            .age(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
        org.events.expire(super::org::now_ms());
    }

    pub fn last_replay_id(&self) -> u64 {
        self.sim.org_lock().events.last_replay_id()
    }

    pub fn retained_events(&self) -> usize {
        self.sim.org_lock().events.len()
    }

    /// Sets the daily request limit and/or the requests already used.
    pub fn set_daily_limit(&self, limit: Option<u64>, used: Option<u64>) {
        self.sim.usage_lock().set(limit, used);
    }

    pub fn api_usage(&self) -> (u64, u64) {
        self.sim.usage_lock().usage()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        self.sim.closing.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for CrmSimHandle {
    fn drop(&mut self) {
        self.sim.closing.send_replace(true);
    }
}

// ---- HTTP ----

#[derive(Deserialize)]
struct EditBody {
    object: String,
    id: String,
    #[serde(default)]
    fields: Value,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct CreateBody {
    object: String,
    #[serde(default)]
    fields: Value,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct IdBody {
    id: String,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct GapBody {
    object: String,
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default = "gap_update")]
    change_type: String,
    #[serde(default)]
    fields: Value,
}

fn gap_update() -> String {
    "GAP_UPDATE".into()
}

#[derive(Deserialize)]
struct MergedBody {
    object: String,
    ids: Vec<String>,
    #[serde(default)]
    fields: Value,
    #[serde(default)]
    user: Option<String>,
}

fn done(result: Result<Value, AdminError>) -> Response {
    match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body)
        .map_err(|e| json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})))
}

/// A fault or limit hook's settings, read strictly (see `hook_body`); a 400 naming the
/// field otherwise.
macro_rules! settings {
    ($body:expr, $fields:expr, |$m:ident| $read:expr) => {
        match hook_body::object(&$body, $fields).and_then(|$m| $read) {
            Ok(v) => v,
            Err(e) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": e})),
        }
    };
}

macro_rules! with_body {
    ($body:expr, $ty:ty) => {
        match parse::<$ty>(&$body) {
            Ok(b) => b,
            Err(resp) => return resp,
        }
    };
}

type S = State<Arc<Sim>>;
type B = axum::body::Bytes;

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/__sim/edit", post(|State(sim): S, body: B| async move {
            let b = with_body!(body, EditBody);
            done(sim.edit(&b.object, &b.id, &b.fields, b.user.as_deref()).map(|_| json!({"ok": true})))
        }))
        .route("/__sim/create", post(|State(sim): S, body: B| async move {
            let b = with_body!(body, CreateBody);
            done(sim.create_record(&b.object, &b.fields, b.user.as_deref()).map(|id| json!({"id": id})))
        }))
        .route("/__sim/delete", post(|State(sim): S, body: B| async move {
            let b = with_body!(body, IdBody);
            done(sim.delete_record(&b.id, false, b.user.as_deref()).map(|_| json!({"ok": true})))
        }))
        .route("/__sim/undelete", post(|State(sim): S, body: B| async move {
            let b = with_body!(body, IdBody);
            done(sim.delete_record(&b.id, true, b.user.as_deref()).map(|_| json!({"ok": true})))
        }))
        .route("/__sim/gap", post(|State(sim): S, body: B| async move {
            let b = with_body!(body, GapBody);
            done(sim.gap(&b.object, &b.ids, &b.change_type, &b.fields).map(|_| json!({"ok": true})))
        }))
        .route("/__sim/merged", post(|State(sim): S, body: B| async move {
            let b = with_body!(body, MergedBody);
            done(sim.merged(&b.object, &b.ids, &b.fields, b.user.as_deref()).map(|_| json!({"ok": true})))
        }))
        .route("/__sim/lock_errors", post(|State(sim): S, body: B| async move {
            let count = settings!(body, &["count"], |m| hook_body::required(&m, "count", u64::from(u32::MAX)));
            sim.org_lock().lock_failures = u32::try_from(count).unwrap_or(u32::MAX);
            done(Ok(json!({"ok": true})))
        }))
        .route("/__sim/revoke_tokens", post(|State(sim): S| async move {
            sim.tokens_lock().revoke_all();
            done(Ok(json!({"ok": true})))
        }))
        .route("/__sim/expire_tokens", post(|State(sim): S| async move {
            sim.tokens_lock().expire_all();
            done(Ok(json!({"ok": true})))
        }))
        .route("/__sim/drop_sessions", post(|State(sim): S| async move {
            sim.drop_streaming();
            done(Ok(json!({"ok": true})))
        }))
        .route("/__sim/retention", post(|State(sim): S, body: B| async move {
            let seconds = settings!(body, &["seconds"], |m| hook_body::required(&m, "seconds", MAX_SECONDS));
            let mut org = sim.org_lock();
            org.events.retention_ms = i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
            org.events.expire(super::org::now_ms());
            done(Ok(json!({"retained": org.events.len()})))
        }))
        .route("/__sim/purge", post(|State(sim): S, body: B| async move {
            let up_to = settings!(body, &["up_to_replay_id"], |m| hook_body::whole(&m, "up_to_replay_id", u64::MAX));
            let mut org = sim.org_lock();
            org.events.purge(up_to);
            done(Ok(json!({"retained": org.events.len()})))
        }))
        .route("/__sim/age", post(|State(sim): S, body: B| async move {
            let seconds = settings!(body, &["seconds"], |m| hook_body::required(&m, "seconds", MAX_SECONDS));
            let mut org = sim.org_lock();
            org.events.age(i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX));
            org.events.expire(super::org::now_ms());
            done(Ok(json!({"retained": org.events.len()})))
        }))
        .route("/__sim/record/{id}", get(|State(sim): S, Path(id): Path<String>| async move {
            match sim.read(&id) {
                Some(v) => json_response(StatusCode::OK, &v),
                None => json_response(StatusCode::NOT_FOUND, &json!({"error": "unknown record"})),
            }
        }))
        .route("/__sim/requests", get(|State(sim): S| async move {
            let usage = sim.usage_lock();
            let (used, limit) = usage.usage();
            done(Ok(json!({"counts": usage.counts(), "log": usage.log(), "api_usage": {"used": used, "limit": limit}})))
        }))
        .route("/__sim/limits", post(|State(sim): S, body: B| async move {
            let (limit, used) = settings!(body, &["daily_limit", "used"], |m| Ok((
                hook_body::whole(&m, "daily_limit", u64::MAX)?,
                hook_body::whole(&m, "used", u64::MAX)?,
            )));
            sim.usage_lock().set(limit, used);
            done(Ok(json!({"ok": true})))
        }))
}
