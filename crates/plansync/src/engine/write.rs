//! What the engine asks a sink to write, and what the sink answers: the contract between the
//! shards (which decide and own the per-field state) and the two sinks (which only talk to
//! their remote side).
//!
//! A sink gets a batch of [`WriteRequest`]s (at most one per field: the shards keep one
//! write in flight per field) and answers one [`WriteOutcome`] per request, by outbox id. It
//! never touches the store: the owning shard applies the outcome (shadow, outbox state,
//! `write_failed` exception) in its own transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backoff::Backoff;

use crate::model::{RecordKey, Value};

/// A pseudo field naming a record lifecycle operation instead of a synced field. Lifecycle
/// writes travel through the same outbox and sinks as field writes, so they are as durable.
pub mod lifecycle {
    /// Delete the record's Anaplan list item (`crm_delete = "delete"`). Value: `Null`.
    pub const DELETE_ITEM: &str = "$delete_item";
    /// Set the pairing's `deleted_flag` boolean line item for the record's item
    /// (`crm_delete = "flag"` with `true`, `crm_undelete = "restore"` with `false`).
    pub const DELETED_FLAG: &str = "$deleted_flag";
    /// Make sure the record's Anaplan list item exists (code = CRM id), before any of its
    /// cells is written. Value: `Null`. Sinks also do this implicitly for any cell write.
    pub const ENSURE_ITEM: &str = "$ensure_item";
    /// Delete the CRM record (`anaplan_delete = "delete_record"`). Value: `Null`.
    pub const DELETE_RECORD: &str = "$delete_record";

    /// Whether `field` names a lifecycle operation rather than a synced field.
    pub fn is_lifecycle(field: &str) -> bool {
        field.starts_with('$')
    }
}

/// One write to make: put `value` into `field` of `record` on the sink's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest {
    /// The outbox row this write carries; the answer is keyed by it.
    pub outbox_id: i64,
    pub record: RecordKey,
    /// The CRM field API name (the pairing's rule maps it to the Anaplan line item or list
    /// property), or a [`lifecycle`] pseudo field.
    pub field: String,
    /// In the CRM's vocabulary and the rule's kind; the sink converts it for its side
    /// (`FieldRule::to_side`).
    pub value: Value,
    /// Write only if the target still shows this value (CRM vocabulary, the rule's kind);
    /// otherwise answer [`WriteOutcome::Stale`]. Set for shared fields written to Anaplan,
    /// whose edits are seen only by polling: without the check, a planner's edit made since
    /// the last poll would be overwritten without a trace. `None`: write unconditionally.
    pub expect: Option<Value>,
}

/// What became of one [`WriteRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The remote accepted it. `at` is the best known time it was committed there: the
    /// time the call that carried it was sent (neither API returns a commit time).
    Acked { at: DateTime<Utc> },
    /// The remote refused this write for good (a per-cell or per-record failure, a record
    /// whose list item could not be created, an unknown field): a `write_failed` exception
    /// with `message`, the remote's own words.
    Rejected { message: String },
    /// The call that carried it failed (after the client's own retries) while the remote
    /// could be reached: nothing is known to be written. It is sent again on its own
    /// backoff, the rest of the side flowing meanwhile, and after [`WriteRetry`]'s budget
    /// it ends as a `write_failed` exception with `message`: a write that can never land
    /// must not be retried forever.
    Retry { message: String },
    /// Not sent, or sent without an answer, because the remote could not be reached at all
    /// (the transport failed, the client's retry budget ran out, the credentials were
    /// refused): this says nothing about the write itself. It waits, uncounted, while the
    /// whole side backs off.
    Unreachable { message: String },
    /// Not written: the target no longer shows the [`WriteRequest::expect`]ed value but
    /// `current` (CRM vocabulary, the rule's kind), an edit the engine has not seen yet. The
    /// engine decides that edit first.
    Stale { current: Value },
}

/// A sink's answer for a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// One outcome per request, by outbox id, in the order of the requests.
    pub outcomes: Vec<(i64, WriteOutcome)>,
    /// Anaplan list items the sink created or found, with their Anaplan item ids
    /// (for `record_map`).
    pub items: Vec<(RecordKey, String)>,
    /// API calls made for the batch, by kind (e.g. `cells`, `list_items`, `import`,
    /// `collections`, `bulk`), for the status and the demo's summary.
    pub calls: Vec<(&'static str, u64)>,
}

impl WriteReport {
    /// Every request answered with the same outcome (e.g. a whole call that failed).
    pub fn all(requests: &[WriteRequest], outcome: WriteOutcome) -> WriteReport {
        WriteReport {
            outcomes: requests
                .iter()
                .map(|r| (r.outbox_id, outcome.clone()))
                .collect(),
            ..WriteReport::default()
        }
    }
}

/// How long a write answered [`WriteOutcome::Retry`] keeps being retried, and how it waits
/// between attempts. Only attempts the remote answered for the write count: an unreachable
/// remote says nothing about any one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRetry {
    /// Answered attempts after which it is a `write_failed` exception.
    pub attempts: u32,
    /// Age (since it was queued) past which the next failed attempt is its last.
    pub give_up_after: Duration,
    /// The wait after each failed attempt: doubling from `backoff.initial` to `backoff.max`.
    pub backoff: Backoff,
}

impl Default for WriteRetry {
    /// Ten attempts over about ten minutes (waits of 1 s doubling to 5 min), or a day since
    /// the write was queued.
    fn default() -> Self {
        WriteRetry {
            attempts: 10,
            give_up_after: Duration::from_secs(24 * 3600),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        }
    }
}

impl WriteRetry {
    /// Whether a write that has failed `attempts` times, queued `age` ago, is given up.
    pub fn gives_up(&self, attempts: u32, age: Duration) -> bool {
        attempts >= self.attempts || age >= self.give_up_after
    }
}
