//! Updates and deletes through sObject Collections (`PATCH composite/sobjects` with the
//! records, `DELETE composite/sobjects?ids=…`; at most 200 records a call), with per-record
//! results mapped back to the caller's order. Large batches go to Bulk API 2.0 (`bulk.rs`)
//! through `update` and `delete`.
//!
//! Every write carries `Sforce-Call-Options: client=<our id>` (see `http.rs`). A record
//! refused with `UNABLE_TO_LOCK_ROW` (reported per record inside a 200 answer, so the send
//! path's retry never sees it) is sent again here, under the same retry policy.

use std::ops::Range;

use reqwest::Method;

use crate::crm::client::CrmClient;
use crate::crm::error::{CrmError, RecordError};
use crate::crm::http::{Body, Call};
use crate::crm::stats::CallKind;
use crate::crm::wire::{CollectionRecord, CollectionRequest, SaveResult, TypeAttr};

/// One record to update: its object type, its id, and the fields to set (JSON null clears).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordUpdate {
    pub object: String,
    pub id: String,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// One record to delete: its object type (a Bulk API job is per object) and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordDelete {
    pub object: String,
    pub id: String,
}

/// What a collections call or a bulk job does to its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Update,
    Delete,
}

impl Operation {
    /// The Bulk API 2.0 `operation`, and the word for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// The outcome for one record, at the same index as the caller's input: the record id, or
/// why this record (only this one) was not written.
pub type RecordResult = Result<String, RecordError>;

#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Roll back a whole collections call when one record in it fails. It applies per call
    /// of at most 200 records, not across calls; bulk jobs ignore it.
    pub all_or_none: bool,
}

/// The API refuses more than ten runs of one object type in a single collections call.
const MAX_TYPE_RUNS: usize = 10;

impl CrmClient {
    /// Updates `updates`, choosing sObject Collections below the configured bulk threshold
    /// and a Bulk API 2.0 job at or above it. Results are in input order.
    pub async fn update(
        &self,
        updates: &[RecordUpdate],
        options: WriteOptions,
    ) -> Vec<RecordResult> {
        if updates.len() >= self.config().bulk_threshold {
            self.bulk_update(updates).await
        } else {
            self.update_collections(updates, options).await
        }
    }

    /// Deletes `records`, as `update` writes: sObject Collections below the bulk threshold,
    /// a Bulk API 2.0 `delete` job at or above it. Results are in input order; a record
    /// already deleted comes back as its `ENTITY_IS_DELETED` error, for the caller to judge.
    pub async fn delete(
        &self,
        records: &[RecordDelete],
        options: WriteOptions,
    ) -> Vec<RecordResult> {
        // The same machinery as updates, with no fields.
        let as_updates: Vec<RecordUpdate> = records
            .iter()
            .map(|r| RecordUpdate {
                object: r.object.clone(),
                id: r.id.clone(),
                fields: serde_json::Map::new(),
            })
            .collect();
        if records.len() >= self.config().bulk_threshold {
            self.bulk(&as_updates, Operation::Delete).await
        } else {
            self.collections(&as_updates, options, Operation::Delete)
                .await
        }
    }

    /// Updates through sObject Collections, in calls of at most `collection_chunk` records.
    /// A call that fails as a whole fails each of its records; after a failure no later call
    /// can succeed (API limit, authentication), the remaining records are `NOT_ATTEMPTED`.
    pub async fn update_collections(
        &self,
        updates: &[RecordUpdate],
        options: WriteOptions,
    ) -> Vec<RecordResult> {
        self.collections(updates, options, Operation::Update).await
    }

    async fn collections(
        &self,
        updates: &[RecordUpdate],
        options: WriteOptions,
        op: Operation,
    ) -> Vec<RecordResult> {
        let mut results: Vec<Option<RecordResult>> = vec![None; updates.len()];
        let mut stop: Option<CrmError> = None;
        for range in chunk_ranges(updates, self.config().collection_chunk) {
            if let Some(fatal) = &stop {
                for slot in &mut results[range] {
                    *slot = Some(Err(RecordError::new(
                        "NOT_ATTEMPTED",
                        format!("not sent: an earlier call failed: {fatal}"),
                    )));
                }
                continue;
            }
            // Records that cannot be sent at all fail here, alone.
            let mut sent: Vec<usize> = Vec::with_capacity(range.len());
            for i in range {
                let u = &updates[i];
                if u.id.is_empty() || u.object.is_empty() {
                    results[i] = Some(Err(RecordError::new(
                        "INVALID_INPUT",
                        "a record update needs an object type and an id",
                    )));
                } else {
                    sent.push(i);
                }
            }
            if sent.is_empty() {
                continue;
            }
            match self.send_chunk(updates, &sent, options, op).await {
                Ok(per_record) => {
                    for (i, r) in sent.iter().zip(per_record) {
                        results[*i] = Some(r);
                    }
                }
                Err(e) => {
                    let one = RecordError::from_call(&e);
                    for i in &sent {
                        results[*i] = Some(Err(one.clone()));
                    }
                    if matches!(
                        e,
                        CrmError::RequestLimit { .. } | CrmError::Auth { .. } | CrmError::Config(_)
                    ) {
                        stop = Some(e);
                    }
                }
            }
        }
        let results: Vec<RecordResult> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(RecordError::new("NOT_ATTEMPTED", "not sent"))))
            .collect();
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        self.call_stats().records(ok, results.len() as u64 - ok);
        results
    }

    /// One chunk: a collections call, then the records that failed only because a row was
    /// locked sent again with backoff. Collections report `UNABLE_TO_LOCK_ROW` per record in a
    /// 200 answer, so the send path's retry (which sees only failed calls) never sees it.
    async fn send_chunk(
        &self,
        updates: &[RecordUpdate],
        indexes: &[usize],
        options: WriteOptions,
        op: Operation,
    ) -> Result<Vec<RecordResult>, CrmError> {
        let mut results = self.send_collection(updates, indexes, options, op).await?;
        let policy = &self.config().retry;
        let mut attempt = 0;
        loop {
            let again = retry_positions(&results, options.all_or_none);
            if again.is_empty() || attempt + 1 >= policy.max_attempts {
                return Ok(results);
            }
            self.call_stats().retry();
            tokio::time::sleep(policy.backoff(attempt)).await;
            attempt += 1;
            let resend: Vec<usize> = again.iter().map(|&p| indexes[p]).collect();
            match self.send_collection(updates, &resend, options, op).await {
                Ok(fresh) => {
                    for (&p, r) in again.iter().zip(fresh) {
                        results[p] = r;
                    }
                }
                Err(e) => {
                    let one = RecordError::from_call(&e);
                    for &p in &again {
                        results[p] = Err(one.clone());
                    }
                    return Ok(results);
                }
            }
        }
    }

    /// One collections call for `updates[i]` for each `i` in `indexes`; results in that order.
    async fn send_collection(
        &self,
        updates: &[RecordUpdate],
        indexes: &[usize],
        options: WriteOptions,
        op: Operation,
    ) -> Result<Vec<RecordResult>, CrmError> {
        let path = format!("{}/composite/sobjects", self.data_prefix());
        // A delete names its records in the query; an update carries them in the body.
        let ids = match op {
            Operation::Update => String::new(),
            Operation::Delete => indexes
                .iter()
                .map(|&i| updates[i].id.as_str())
                .collect::<Vec<_>>()
                .join(","),
        };
        let all_or_none = options.all_or_none.to_string();
        let (method, body, what, query) = match op {
            Operation::Update => (
                Method::PATCH,
                Body::Json(self.collection_body(updates, indexes, options)?),
                "collections update",
                Vec::new(),
            ),
            Operation::Delete => (
                Method::DELETE,
                Body::Empty,
                "collections delete",
                vec![("ids", ids.as_str()), ("allOrNone", all_or_none.as_str())],
            ),
        };
        let reply = self
            .send(&Call {
                method,
                path: &path,
                query: &query,
                body,
                kind: CallKind::CompositeWrite,
                write: true,
                idempotent: true,
            })
            .await?;
        let ids: Vec<&str> = indexes.iter().map(|&i| updates[i].id.as_str()).collect();
        collection_results(&reply.body, &ids).map_err(|e| match e {
            CrmError::Decode { detail, .. } => CrmError::Decode { what, detail },
            other => other,
        })
    }

    /// The JSON of a collections update of `updates[i]` for each `i` in `indexes`.
    fn collection_body(
        &self,
        updates: &[RecordUpdate],
        indexes: &[usize],
        options: WriteOptions,
    ) -> Result<Vec<u8>, CrmError> {
        let request = CollectionRequest {
            all_or_none: options.all_or_none,
            records: indexes
                .iter()
                .map(|&i| CollectionRecord {
                    attributes: TypeAttr {
                        kind: &updates[i].object,
                    },
                    id: &updates[i].id,
                    fields: &updates[i].fields,
                })
                .collect(),
        };
        serde_json::to_vec(&request).map_err(|e| CrmError::Decode {
            what: "collections update",
            detail: e.to_string(),
        })
    }
}

/// Reads a collections answer: one `{"id","success","errors"}` per record sent, in order.
/// `ids` are the ids sent, which a success without an `id` stands for.
pub(crate) fn collection_results(body: &[u8], ids: &[&str]) -> Result<Vec<RecordResult>, CrmError> {
    let saved: Vec<SaveResult> = serde_json::from_slice(body).map_err(|e| CrmError::Decode {
        what: "collections update",
        detail: e.to_string(),
    })?;
    if saved.len() != ids.len() {
        return Err(CrmError::Decode {
            what: "collections update",
            detail: format!("{} results for {} records", saved.len(), ids.len()),
        });
    }
    Ok(saved
        .into_iter()
        .zip(ids)
        .map(|(s, &sent)| {
            if s.success {
                Ok(s.id.unwrap_or_else(|| sent.to_string()))
            } else {
                let first = s.errors.first();
                let code = first
                    .map(|e| e.status_code.trim())
                    .filter(|c| !c.is_empty())
                    .unwrap_or("UNKNOWN_ERROR");
                let mut err = RecordError::new(
                    code,
                    s.errors
                        .iter()
                        .map(|e| e.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                );
                err.fields = s.errors.iter().flat_map(|e| e.fields.clone()).collect();
                Err(err)
            }
        })
        .collect())
}

/// Positions of a call's results worth sending again: records refused for a row lock, and,
/// under `allOrNone`, every failed record when row locks were the only real failures (the rest
/// were rolled back because of them). Nothing when a record failed for a reason that will not
/// pass by itself.
fn retry_positions(results: &[RecordResult], all_or_none: bool) -> Vec<usize> {
    const LOCKED: &str = "UNABLE_TO_LOCK_ROW";
    const ROLLED_BACK: &str = "ALL_OR_NONE_OPERATION_ROLLED_BACK";
    fn code(r: &RecordResult) -> Option<&str> {
        r.as_ref().err().map(|e| e.status_code.as_str())
    }
    let failed = || results.iter().enumerate().filter(|(_, r)| r.is_err());
    if all_or_none {
        let any_locked = results.iter().any(|r| code(r) == Some(LOCKED));
        let only_locks = failed().all(|(_, r)| matches!(code(r), Some(LOCKED | ROLLED_BACK)));
        if any_locked && only_locks {
            return failed().map(|(p, _)| p).collect();
        }
        return Vec::new();
    }
    failed()
        .filter(|(_, r)| code(r) == Some(LOCKED))
        .map(|(p, _)| p)
        .collect()
}

/// Splits `updates` into calls of at most `size` records and at most ten runs of one type.
fn chunk_ranges(updates: &[RecordUpdate], size: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut runs = 0;
    let mut last: Option<&str> = None;
    for (i, u) in updates.iter().enumerate() {
        let mut new_run = last != Some(u.object.as_str());
        if i - start == size || (new_run && runs == MAX_TYPE_RUNS) {
            out.push(start..i);
            start = i;
            runs = 0;
            new_run = true;
        }
        if new_run {
            runs += 1;
        }
        last = Some(&u.object);
    }
    if start < updates.len() {
        out.push(start..updates.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(object: &str, n: usize) -> RecordUpdate {
        RecordUpdate {
            object: object.into(),
            id: format!("id{n}"),
            fields: serde_json::Map::new(),
        }
    }

    #[test]
    fn only_row_locks_are_sent_again() {
        let ok = || Ok("id".to_string());
        let err = |code: &str| Err(RecordError::new(code, "x"));
        let results = vec![ok(), err("UNABLE_TO_LOCK_ROW"), err("INVALID_FIELD")];
        assert_eq!(retry_positions(&results, false), vec![1]);
        // allOrNone: a lock rolled the others back, so all of them go again...
        let results = vec![
            err("ALL_OR_NONE_OPERATION_ROLLED_BACK"),
            err("UNABLE_TO_LOCK_ROW"),
        ];
        assert_eq!(retry_positions(&results, true), vec![0, 1]);
        // ...unless a record is bad in itself, which another attempt will not fix.
        let results = vec![
            err("ALL_OR_NONE_OPERATION_ROLLED_BACK"),
            err("UNABLE_TO_LOCK_ROW"),
            err("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ];
        assert!(retry_positions(&results, true).is_empty());
        let results = vec![err("ALL_OR_NONE_OPERATION_ROLLED_BACK")];
        assert!(retry_positions(&results, true).is_empty());
        assert!(retry_positions(&[ok()], false).is_empty());
    }

    #[test]
    fn chunks_respect_size_and_type_runs() {
        let same: Vec<_> = (0..450).map(|n| upd("Account", n)).collect();
        assert_eq!(chunk_ranges(&same, 200), vec![0..200, 200..400, 400..450]);
        let mixed: Vec<_> = (0..25)
            .map(|n| upd(if n % 2 == 0 { "Account" } else { "Contact" }, n))
            .collect();
        assert_eq!(chunk_ranges(&mixed, 200), vec![0..10, 10..20, 20..25]);
        assert!(chunk_ranges(&[], 200).is_empty());
    }
}
