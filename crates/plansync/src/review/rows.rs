//! The flat, serialisable forms of store records used by the JSON and CSV outputs. Field
//! names here are the output's keys and headers: renaming one breaks scripts.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::model::Value;
use crate::store::{AuditRecord, ExceptionRecord, OutboxRecord};

/// A timestamp as printed: RFC 3339 UTC with microseconds, as the store keeps it.
pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// One exception; the row of `list --format json|csv`.
#[derive(Debug, Serialize)]
pub(crate) struct ExceptionRow<'a> {
    pub id: i64,
    pub kind: &'static str,
    pub status: &'static str,
    pub object: &'a str,
    pub pairing: &'a str,
    pub record: Option<&'a str>,
    pub field: Option<&'a str>,
    pub value_kind: Option<String>,
    pub crm_value: Option<String>,
    pub anaplan_value: Option<String>,
    pub base_value: Option<String>,
    pub rule_id: Option<&'a str>,
    pub rule_hash: Option<&'a str>,
    pub message: &'a str,
    pub created_at: String,
    pub updated_at: String,
    pub resolved_at: Option<String>,
    pub resolved_by: Option<&'a str>,
    pub resolution: Option<&'static str>,
    pub resolution_value: Option<String>,
    pub note: Option<&'a str>,
}

impl<'a> From<&'a ExceptionRecord> for ExceptionRow<'a> {
    fn from(e: &'a ExceptionRecord) -> Self {
        let f = e.field.as_ref();
        ExceptionRow {
            id: e.id,
            kind: e.kind.as_str(),
            status: e.status.as_str(),
            object: &e.object,
            pairing: &e.pairing,
            record: e.crm_id.as_deref(),
            field: f.map(|f| f.name.as_str()),
            value_kind: f.map(|f| f.kind.tag()),
            crm_value: f.and_then(|f| f.crm_value.to_text()),
            anaplan_value: f.and_then(|f| f.anaplan_value.to_text()),
            base_value: f.and_then(|f| f.base_value.to_text()),
            rule_id: e.rule_id.as_deref(),
            rule_hash: e.rule_hash.as_deref(),
            message: &e.message,
            created_at: time(e.created_at),
            updated_at: time(e.updated_at),
            resolved_at: e.resolved_at.map(time),
            resolved_by: e.resolved_by.as_deref(),
            resolution: e.resolution.map(|r| r.as_str()),
            resolution_value: e.resolution_value.as_ref().and_then(Value::to_text),
            note: e.note.as_deref(),
        }
    }
}

/// One decision about the field, in `show --format json`.
#[derive(Debug, Serialize)]
pub(crate) struct AuditRow<'a> {
    pub id: i64,
    pub at: String,
    pub side: &'static str,
    pub source: &'static str,
    pub value: Option<String>,
    pub decision: &'a str,
    pub rule_id: Option<&'a str>,
    pub rule_hash: Option<&'a str>,
    pub exception_id: Option<i64>,
}

impl<'a> From<&'a AuditRecord> for AuditRow<'a> {
    fn from(a: &'a AuditRecord) -> Self {
        AuditRow {
            id: a.id,
            at: time(a.at),
            side: a.side.as_str(),
            source: a.source.as_str(),
            value: a.value.to_text(),
            decision: &a.decision,
            rule_id: a.rule_id.as_deref(),
            rule_hash: a.rule_hash.as_deref(),
            exception_id: a.exception_id,
        }
    }
}

/// One queued write, in `resolve --format json|csv`.
#[derive(Debug, Serialize)]
pub(crate) struct OutboxRow<'a> {
    pub id: i64,
    pub target: &'static str,
    pub pairing: &'a str,
    pub record: &'a str,
    pub field: &'a str,
    pub value_kind: String,
    pub value: Option<String>,
    pub reason: &'static str,
    pub exception_id: Option<i64>,
    pub state: &'static str,
}

impl<'a> From<&'a OutboxRecord> for OutboxRow<'a> {
    fn from(o: &'a OutboxRecord) -> Self {
        OutboxRow {
            id: o.id,
            target: o.target.as_str(),
            pairing: &o.key.record.pairing,
            record: &o.key.record.crm_id,
            field: &o.key.field,
            value_kind: o.kind.tag(),
            value: o.value.to_text(),
            reason: o.reason.as_str(),
            exception_id: o.exception_id,
            state: o.state.as_str(),
        }
    }
}
