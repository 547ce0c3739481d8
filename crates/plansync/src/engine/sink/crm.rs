//! The CRM sink: turns a batch of [`WriteRequest`]s into record updates (every field of one
//! record in one update), hands them to [`CrmClient::update`] in one go (sObject Collections
//! in calls of 200, or a Bulk API 2.0 job past the client's threshold), then the batch's
//! record deletes (`anaplan_delete = "delete_record"`) to [`CrmClient::delete`], and answers
//! one [`WriteOutcome`] per request. A record already deleted counts as deleted.
//!
//! What a CRM error means for a write is decided in one place, [`outcome_of`]: errors that
//! pass by themselves (locks, limits, authentication, calls that never went through) are
//! `Retry`, everything the CRM refused about the record itself is `Rejected`.

use std::collections::HashMap;

use chrono::Utc;

use crate::crm::{
    CallKind, CrmClient, RecordDelete, RecordError, RecordUpdate, StatsSnapshot, WriteOptions,
};
use crate::engine::write::{WriteOutcome, WriteReport, WriteRequest, lifecycle};
use crate::model::{RecordKey, Side};
use crate::rules::ruleset::RuleSet;

/// Writes engine batches to the CRM through one client.
#[derive(Debug, Clone)]
pub struct CrmSink {
    client: CrmClient,
}

/// The update for one record, and the requests it carries.
struct RecordWrite {
    update: RecordUpdate,
    /// Indexes into the batch of every request folded into `update`.
    requests: Vec<usize>,
}

impl CrmSink {
    pub fn new(client: CrmClient) -> CrmSink {
        CrmSink { client }
    }

    pub fn client(&self) -> &CrmClient {
        &self.client
    }

    /// One outcome per request, by outbox id, in request order; never panics, never errors
    /// as a whole (a call that fails answers each of its requests).
    ///
    /// `calls` is the difference of the client's counters around the batch, so it also
    /// counts calls a clone of the same client made meanwhile (the engine gives the sink a
    /// client of its own).
    pub async fn write(&mut self, rules: &RuleSet, batch: &[WriteRequest]) -> WriteReport {
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; batch.len()];
        let mut records: Vec<RecordWrite> = Vec::new();
        let mut by_key: HashMap<&RecordKey, usize> = HashMap::new();
        // Records to delete (`anaplan_delete = "delete_record"`), and their requests.
        let mut deletes: Vec<(usize, RecordDelete)> = Vec::new();
        for (i, request) in batch.iter().enumerate() {
            if request.field == lifecycle::DELETE_RECORD {
                match rules.pairing(&request.record.pairing) {
                    Some(pairing) if !request.record.crm_id.is_empty() => deletes.push((
                        i,
                        RecordDelete {
                            object: pairing.crm_object.clone(),
                            id: request.record.crm_id.clone(),
                        },
                    )),
                    _ => {
                        outcomes[i] = Some(WriteOutcome::Rejected {
                            message: format!(
                                "no CRM record to delete for pairing `{}`",
                                request.record.pairing
                            ),
                        })
                    }
                }
                continue;
            }
            let (object, field, value) = match prepare(rules, request) {
                Ok(p) => p,
                Err(outcome) => {
                    outcomes[i] = Some(outcome);
                    continue;
                }
            };
            let slot = *by_key.entry(&request.record).or_insert_with(|| {
                records.push(RecordWrite {
                    update: RecordUpdate {
                        object: object.to_string(),
                        id: request.record.crm_id.clone(),
                        fields: serde_json::Map::new(),
                    },
                    requests: Vec::new(),
                });
                records.len() - 1
            });
            let record = &mut records[slot];
            if record.update.fields.contains_key(field) {
                // The shards keep one write in flight per field, so this is a caller's slip;
                // the first value goes now and this one in a later batch, never both at once.
                outcomes[i] = Some(WriteOutcome::Retry {
                    message: format!(
                        "another write to {field} of {} is in the same batch",
                        request.record.crm_id
                    ),
                });
                continue;
            }
            record.update.fields.insert(field.to_string(), value);
            record.requests.push(i);
        }
        // Records of one object next to each other: a collections call allows at most ten
        // runs of one type, so interleaved pairings would split calls needlessly.
        records.sort_by(|a, b| a.update.object.cmp(&b.update.object));

        let mut report = WriteReport::default();
        if !records.is_empty() {
            let updates: Vec<RecordUpdate> = records.iter().map(|r| r.update.clone()).collect();
            let before = self.client.stats();
            // Neither API returns a commit time: the best known is just before the call.
            let at = Utc::now();
            let results = self
                .client
                .update(&updates, WriteOptions { all_or_none: false })
                .await;
            let after = self.client.stats();
            for (n, record) in records.iter().enumerate() {
                let outcome = match results.get(n) {
                    Some(Ok(_)) => WriteOutcome::Acked { at },
                    Some(Err(e)) => outcome_of(e),
                    // The client answers one result per record; if it ever did not, nothing
                    // is known about this record.
                    None => WriteOutcome::Retry {
                        message: "the CRM client returned no result for this record".into(),
                    },
                };
                for &i in &record.requests {
                    outcomes[i] = Some(outcome.clone());
                }
            }
            report.calls = call_delta(&before, &after);
        }
        if !deletes.is_empty() {
            let before = self.client.stats();
            let at = Utc::now();
            let targets: Vec<RecordDelete> = deletes.iter().map(|(_, d)| d.clone()).collect();
            let results = self
                .client
                .delete(&targets, WriteOptions { all_or_none: false })
                .await;
            let after = self.client.stats();
            for (n, (i, _)) in deletes.iter().enumerate() {
                outcomes[*i] = Some(match results.get(n) {
                    Some(Ok(_)) => WriteOutcome::Acked { at },
                    // Gone already (a person, or an earlier attempt whose answer was lost):
                    // what the write was for holds.
                    Some(Err(e)) if e.status_code == "ENTITY_IS_DELETED" => {
                        WriteOutcome::Acked { at }
                    }
                    Some(Err(e)) => outcome_of(e),
                    None => WriteOutcome::Retry {
                        message: "the CRM client returned no result for this record".into(),
                    },
                });
            }
            for (kind, n) in call_delta(&before, &after) {
                match report.calls.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, total)) => *total += n,
                    None => report.calls.push((kind, n)),
                }
            }
        }

        report.outcomes = batch
            .iter()
            .zip(outcomes)
            .map(|(request, outcome)| {
                let outcome = outcome.unwrap_or_else(|| WriteOutcome::Retry {
                    message: "not sent".into(),
                });
                (request.outbox_id, outcome)
            })
            .collect();
        let count =
            |f: fn(&WriteOutcome) -> bool| report.outcomes.iter().filter(|(_, o)| f(o)).count();
        tracing::debug!(
            event = "crm_batch_written", requests = batch.len(),
            records = records.len(),
            acked = count(|o| matches!(o, WriteOutcome::Acked { .. })),
            rejected = count(|o| matches!(o, WriteOutcome::Rejected { .. })),
            retry = count(|o| matches!(o, WriteOutcome::Retry { .. })),
            unreachable = count(|o| matches!(o, WriteOutcome::Unreachable { .. })),
            calls = ?report.calls,
            "the CRM sink wrote a batch"
        );
        report
    }
}

/// The object, field and JSON value one request writes, or why it cannot be written at all.
fn prepare<'a>(
    rules: &'a RuleSet,
    request: &'a WriteRequest,
) -> Result<(&'a str, &'a str, serde_json::Value), WriteOutcome> {
    let rejected = |message: String| WriteOutcome::Rejected { message };
    let field = request.field.as_str();
    if lifecycle::is_lifecycle(field) {
        return Err(rejected(format!("{field} is not a CRM operation")));
    }
    let pairing = rules
        .pairing(&request.record.pairing)
        .ok_or_else(|| rejected(format!("unknown pairing `{}`", request.record.pairing)))?;
    let rule = pairing.field(field).ok_or_else(|| {
        rejected(format!(
            "unknown field `{field}` in pairing `{}`",
            pairing.name
        ))
    })?;
    if request.record.crm_id.is_empty() {
        return Err(rejected(format!("no CRM id for a write to {}", rule.id)));
    }
    let value = request.value.to_kind(rule.kind).map_err(|e| {
        rejected(format!(
            "value for {} is not a {}: {e}",
            rule.id,
            rule.kind.tag()
        ))
    })?;
    let value = rule.to_side(Side::Crm, &value).to_json();
    Ok((&pairing.crm_object, &rule.crm, value))
}

/// Codes that say the CRM could not be reached at all, whatever the record: the write waits,
/// uncounted, while the side backs off (`Unreachable`):
///
/// | code | why |
/// |---|---|
/// | `REQUEST_LIMIT_EXCEEDED` | the rolling 24-hour API budget is spent; it frees up |
/// | `INVALID_SESSION_ID`, `AUTH_FAILED` | no token the CRM accepts (an operator may have to fix the credentials) |
/// | `NOT_ATTEMPTED` | never sent: an earlier call of the batch failed that way |
/// | `SERVER_UNAVAILABLE`, `HTTP_5xx` | the CRM is busy or down |
///
/// and `CALL_FAILED` when the client judged the fault transient (a connection or timeout).
const UNREACHABLE: &[&str] = &[
    "REQUEST_LIMIT_EXCEEDED",
    "INVALID_SESSION_ID",
    "AUTH_FAILED",
    "NOT_ATTEMPTED",
    "SERVER_UNAVAILABLE",
];

/// Codes of errors about this call or record that may pass, so the write is sent again on
/// its own backoff, and ends as a `write_failed` exception if it keeps failing (`Retry`):
///
/// | code | why it may pass |
/// |---|---|
/// | `UNABLE_TO_LOCK_ROW` | lock contention still there after the client's own retries |
/// | `NOT_PROCESSED` | a bulk row in neither result file |
/// | `ALL_OR_NONE_OPERATION_ROLLED_BACK` | rolled back because of another record |
/// | `CALL_FAILED` | an answer we could not read, a bulk job that failed |
///
/// Also anything else the client marks `retryable`. Every other code —
/// `FIELD_CUSTOM_VALIDATION_EXCEPTION`, `INVALID_FIELD`,
/// `INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`, `REQUIRED_FIELD_MISSING`, `ENTITY_IS_DELETED`,
/// `MALFORMED_ID`, codes we do not know — is about the record or the value and will fail the
/// same way again: `Rejected`.
const TRANSIENT: &[&str] = &[
    "UNABLE_TO_LOCK_ROW",
    "NOT_PROCESSED",
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "CALL_FAILED",
];

/// What one record's error means for its writes (see [`UNREACHABLE`] and [`TRANSIENT`]).
/// The message is the CRM's own words, `CODE: message`.
pub fn outcome_of(error: &RecordError) -> WriteOutcome {
    let code = error.status_code.as_str();
    let message = format!("{code}: {}", error.message);
    let server_fault = code
        .strip_prefix("HTTP_")
        .and_then(|s| s.parse::<u16>().ok())
        .is_some_and(|status| status >= 500);
    if server_fault || UNREACHABLE.contains(&code) || (code == "CALL_FAILED" && error.retryable) {
        WriteOutcome::Unreachable { message }
    } else if error.retryable || TRANSIENT.contains(&code) {
        WriteOutcome::Retry { message }
    } else {
        WriteOutcome::Rejected { message }
    }
}

/// Calls made between two snapshots, as `collections` and `bulk` (every step of a job), plus
/// `auth` when a token had to be fetched; kinds with no calls are left out.
fn call_delta(before: &StatsSnapshot, after: &StatsSnapshot) -> Vec<(&'static str, u64)> {
    let delta = |kinds: &[CallKind]| -> u64 {
        kinds
            .iter()
            .map(|&k| after.calls_of(k).saturating_sub(before.calls_of(k)))
            .sum()
    };
    [
        ("collections", delta(&[CallKind::CompositeWrite])),
        (
            "bulk",
            delta(&[
                CallKind::BulkCreate,
                CallKind::BulkUpload,
                CallKind::BulkClose,
                CallKind::BulkPoll,
                CallKind::BulkResults,
            ]),
        ),
        ("auth", delta(&[CallKind::Auth])),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, retryable: bool) -> RecordError {
        RecordError {
            status_code: code.into(),
            message: "m".into(),
            fields: Vec::new(),
            retryable,
        }
    }

    #[test]
    fn unreachable_codes_wait_transient_codes_retry_and_the_rest_are_rejected() {
        for code in [
            "REQUEST_LIMIT_EXCEEDED",
            "INVALID_SESSION_ID",
            "AUTH_FAILED",
            "NOT_ATTEMPTED",
            "HTTP_503",
        ] {
            assert_eq!(
                outcome_of(&error(code, false)),
                WriteOutcome::Unreachable {
                    message: format!("{code}: m")
                },
                "{code}"
            );
        }
        // A connection that failed is the CRM out of reach; an answer we could not read is
        // this call's failure, and counts against the write.
        assert!(matches!(
            outcome_of(&error("CALL_FAILED", true)),
            WriteOutcome::Unreachable { .. }
        ));
        for code in ["UNABLE_TO_LOCK_ROW", "NOT_PROCESSED", "CALL_FAILED"] {
            assert_eq!(
                outcome_of(&error(code, false)),
                WriteOutcome::Retry {
                    message: format!("{code}: m")
                },
                "{code}"
            );
        }
        for code in [
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "INVALID_FIELD",
            "ENTITY_IS_DELETED",
            "HTTP_400",
            "SOMETHING_NEW",
        ] {
            assert_eq!(
                outcome_of(&error(code, false)),
                WriteOutcome::Rejected {
                    message: format!("{code}: m")
                },
                "{code}"
            );
        }
        // The client's own judgement that a fault is transient is kept.
        assert!(matches!(
            outcome_of(&error("SOMETHING_NEW", true)),
            WriteOutcome::Retry { .. }
        ));
    }
}
