//! A shard: the one place where the fields of its records are decided. Every change, write
//! acknowledgement and resolution claim for a record is routed to the same shard (by a hash
//! of the pairing and record), so one shard sees everything that happens to a field, in
//! order, and the stream and poller paths never race.
//!
//! A shard works in rounds: it takes what is waiting in its channel (up to a bound), loads
//! the touched records' shadow, applies [`crate::rules::decide`] per field, and commits ONE
//! store transaction with the shadow, the outbox writes, the exceptions, the audit rows and
//! the checkpoints of the sources whose changes it consumed. A checkpoint is stored per shard
//! (`<source>#<shard>`); a source resumes from the oldest, so a crash may replay changes a
//! shard already stored, which the duplicate and stale checks make harmless.
//!
//! One writer per field: a decision that writes records the outbox row as the field's
//! in-flight write; later changes to the field are recorded but decided only when that
//! write is acknowledged or fails (`wait`), against the new base.
//!
//! The round is split by what it handles: `load` (what a decision reads), `observe`
//! (changes), `answers` (sink answers and claims), `records` (records coming and going) and
//! `exceptions` (raising them).

mod answers;
mod exceptions;
mod load;
mod observe;
mod records;

use std::collections::BTreeMap;

// A round hashes every record and field key it touches, several times: SipHash was ~4% of
// the first run's samples.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::state::{Flight, Working};
use super::write::{WriteOutcome, WriteRetry, lifecycle};
use crate::model::{
    AckedWrite, Change, ChangeKind, ExceptionKind, ExceptionStatus, Position, RecordKey, Side,
    Source, Value, ValueKind,
};
use crate::rules::RuleSet;
use crate::rules::decide::{Action, Context, Decision, Observation, decide};
use crate::rules::ruleset::{
    AnaplanDelete, CrmDelete, CrmUndelete, FieldRule, NewItem, Owner, Pairing,
};
use crate::store::{
    Batch, ExceptionField, ExceptionRef, ExceptionUpdate, FieldKey, NewAudit, NewException,
    NewOutbox, Observed, OutboxReason, OutboxRef, OutboxState, OutboxUpdate, RecordMapUpsert,
    RecordState, StagedItem, Store, StoreError,
};

/// What a shard is asked to do.
#[derive(Debug)]
pub enum ShardMsg {
    /// A change from a source.
    Change(Change),
    /// Everything `source` sent before this has been routed: store `position` as consumed.
    Mark { source: String, position: Position },
    /// A sink's answer for one write.
    Ack {
        outbox_id: i64,
        outcome: WriteOutcome,
    },
    /// A write queued by a person's resolution: make it the field's write in flight when the
    /// field is free.
    Claim { outbox_id: i64 },
    /// The Anaplan flags of a record as last polled (for `anaplan_flag` conditions).
    Flags {
        record: RecordKey,
        flags: BTreeMap<String, bool>,
    },
    /// Anaplan item ids learned by a sink or a poll, for `record_map`.
    ItemIds(Vec<(RecordKey, String)>),
    /// A problem a source found with one record's value (a value that cannot be normalised),
    /// to record as an exception once.
    Problem {
        record: RecordKey,
        field: Option<String>,
        kind: ExceptionKind,
        message: String,
    },
    /// Something that happened to a record and was handled (e.g. a CDC gap event: the record
    /// was re-read), recorded once as an auto-resolved exception for the audit trail.
    Notice {
        record: RecordKey,
        kind: ExceptionKind,
        message: String,
    },
    /// Answer when everything sent before has been committed.
    Flush(oneshot::Sender<()>),
}

/// What one round did, for the engine's counters and the sinks' wake-up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundSummary {
    pub changes: usize,
    pub decisions: BTreeMap<&'static str, usize>,
    pub writes_queued: usize,
    pub exceptions: usize,
    pub acks: usize,
    /// Fields the first reconciliation found agreeing on both sides: decided, recorded in
    /// the shadow, not audited row by row (metric `reconcile.agreed`).
    pub agreed: usize,
}

/// A shard's state between rounds: its store connection and the flags last polled.
pub struct ShardCore {
    pub index: usize,
    store: Store,
    flags: HashMap<RecordKey, BTreeMap<String, bool>>,
    /// How long a write answered "retry" is retried before it is a `write_failed` exception.
    retry: WriteRetry,
}

impl ShardCore {
    /// A shard on `store`, with the Anaplan flags last seen (stored by every shard's rounds),
    /// so a decision after a restart sees them as they were, not as all false until the
    /// next poll.
    pub fn new(index: usize, store: Store, retry: WriteRetry) -> Result<ShardCore, StoreError> {
        let flags = store.anaplan_flags()?.into_iter().collect();
        Ok(ShardCore {
            index,
            store,
            flags,
            retry,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Applies `msgs` in order and commits what they caused in one transaction. `Flush`
    /// senders are answered after the commit.
    pub fn round(
        &mut self,
        rules: &RuleSet,
        msgs: Vec<ShardMsg>,
        now: DateTime<Utc>,
    ) -> Result<RoundSummary, StoreError> {
        self.round_then(rules, msgs, now, |_| {})
    }

    /// [`ShardCore::round`], calling `committed` with the summary after the commit and before
    /// any `Flush` is answered: whoever flushed then sees the round in the engine's counters.
    pub fn round_then(
        &mut self,
        rules: &RuleSet,
        msgs: Vec<ShardMsg>,
        now: DateTime<Utc>,
        committed: impl FnOnce(&RoundSummary),
    ) -> Result<RoundSummary, StoreError> {
        let mut flushes = Vec::new();
        // The round's reads share one read transaction (see `Store::read_snapshot`), ended
        // before the commit.
        let snapshot = self.store.read_snapshot()?;
        let mut round = Round {
            rules,
            store: &self.store,
            flags: &mut self.flags,
            shard: self.index,
            batch: Batch::new(now),
            fields: HashMap::new(),
            loaded: HashMap::new(),
            staged: BTreeMap::new(),
            contexts: HashMap::new(),
            mapped: HashMap::new(),
            raised: HashSet::new(),
            summary: RoundSummary::default(),
            retry: self.retry,
            now,
        };
        for msg in msgs {
            match msg {
                ShardMsg::Change(change) => round.change(&change)?,
                ShardMsg::Mark { source, position } => {
                    let name = format!("{source}#{}", round.shard);
                    round.batch.set_checkpoint(name, position);
                }
                ShardMsg::Ack { outbox_id, outcome } => round.ack(outbox_id, outcome)?,
                ShardMsg::Claim { outbox_id } => round.claim(outbox_id)?,
                ShardMsg::Flags { record, flags } => {
                    let known = round.flags.get(&record);
                    let any = flags.values().any(|b| *b);
                    if known != Some(&flags) && (any || known.is_some()) {
                        round.batch.set_flags(record.clone(), flags.clone());
                    }
                    if any {
                        round.flags.insert(record, flags);
                    } else {
                        round.flags.remove(&record);
                    }
                }
                ShardMsg::ItemIds(items) => round.item_ids(items)?,
                ShardMsg::Problem {
                    record,
                    field,
                    kind,
                    message,
                } => round.problem(&record, field.as_deref(), kind, message)?,
                ShardMsg::Notice {
                    record,
                    kind,
                    message,
                } => round.notice(&record, kind, message)?,
                ShardMsg::Flush(tx) => flushes.push(tx),
            }
        }
        let Round {
            mut batch,
            fields,
            summary,
            staged,
            ..
        } = round;
        drop(snapshot);
        for item in staged.into_values() {
            batch.stage_anaplan(item);
        }
        let mut keys: Vec<&FieldKey> = fields
            .iter()
            .filter(|(_, w)| w.dirty)
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        for key in keys {
            if let Some(w) = fields.get(key) {
                batch.upsert_shadow(w.upsert(key.clone()));
            }
        }
        if !batch.is_empty() {
            self.store.commit(&batch)?;
        }
        committed(&summary);
        for tx in flushes {
            let _ = tx.send(());
        }
        Ok(summary)
    }
}

/// What loading a record found.
struct Loaded {
    /// It has shadow rows.
    stored: bool,
    /// Its staged first-run values were looked for.
    staging_read: bool,
}

/// One observation to decide.
struct Obs {
    side: Side,
    value: Value,
    at: DateTime<Utc>,
    ours: bool,
    source: Source,
}

/// The work of one round: the batch being built and the fields it has loaded.
struct Round<'a> {
    rules: &'a RuleSet,
    store: &'a Store,
    flags: &'a mut HashMap<RecordKey, BTreeMap<String, bool>>,
    shard: usize,
    batch: Batch,
    fields: HashMap<FieldKey, Working>,
    /// Records whose shadow rows are in `fields`, and what was found.
    loaded: HashMap<RecordKey, Loaded>,
    /// The first run's Anaplan values of records with no shadow state, staged one row per
    /// item instead of one shadow row per field (see `store/staging.rs`).
    staged: BTreeMap<RecordKey, StagedItem>,
    /// The `extra_crm_fields` of records touched this round (for `when.record`), as stored
    /// or as changed this round: the commit time they are from, and the values.
    contexts: HashMap<RecordKey, Option<(DateTime<Utc>, crate::store::CrmContext)>>,
    /// Whether each record touched has a `record_map` row (stored or added this round).
    mapped: HashMap<RecordKey, bool>,
    /// Exceptions raised once per occurrence that this round already raised (not yet
    /// stored, so the store's check cannot see them): kind, record, field, message.
    raised: HashSet<(ExceptionKind, RecordKey, Option<String>, String)>,
    summary: RoundSummary,
    retry: WriteRetry,
    now: DateTime<Utc>,
}

/// A raw CRM value of a field read only for conditions, as the text `when.record` compares
/// (such fields have no rule of their own, so their values are text).
fn context_value(raw: &serde_json::Value) -> Value {
    match raw {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::String(s) if s.is_empty() => Value::Null,
        serde_json::Value::String(s) => Value::Text(s.clone()),
        other => Value::Text(other.to_string()),
    }
}
