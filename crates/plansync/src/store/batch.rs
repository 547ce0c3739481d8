//! The engine's write path: everything one round of decisions caused, gathered in a [`Batch`]
//! and applied by [`Store::commit`] in one transaction, together with the checkpoint that
//! acknowledges the changes it came from. Either all of it is stored or none of it.
//!
//! Rows added to a batch can refer to exceptions and outbox writes added to the same batch,
//! whose ids are not known until the commit: [`Batch::add_exception`] and
//! [`Batch::add_outbox`] hand out references that the commit replaces with the new ids.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use rusqlite::{Transaction, TransactionBehavior, params};

use super::codec::{micros, ts};
use super::rows::{
    ExceptionField, FieldKey, Observed, OutboxReason, OutboxState, RecordState, ShadowState,
};
use super::staging::{StagedItem, UPSERT_STAGED, fields_json};
use super::{Store, StoreError};
use crate::model::{
    ExceptionKind, ExceptionStatus, Position, RecordKey, Side, Source, Value, ValueKind,
};

/// Gives every batch its own number, so a reference taken from one batch cannot silently
/// resolve to a row of another.
static NEXT_BATCH: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RowRef {
    Stored(i64),
    InBatch { batch: u64, index: usize },
}

/// An exception: one already stored (by id) or one added to the batch being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExceptionRef(RowRef);

impl ExceptionRef {
    pub fn stored(id: i64) -> ExceptionRef {
        ExceptionRef(RowRef::Stored(id))
    }
}

/// An outbox write: one already stored (by id) or one added to the batch being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutboxRef(RowRef);

impl OutboxRef {
    pub fn stored(id: i64) -> OutboxRef {
        OutboxRef(RowRef::Stored(id))
    }
}

/// A new row of `record_map`; replaces the existing row for the record, keeping its
/// `created_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMapUpsert {
    pub record: RecordKey,
    pub anaplan_code: String,
    pub anaplan_item_id: Option<String>,
    pub state: RecordState,
}

/// A new exception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewException {
    pub kind: ExceptionKind,
    /// `Open`, or `AutoResolved` for a conflict the rules settled (kept as the audit trail).
    /// Any status but `Open` sets `resolved_at` to `at`.
    pub status: ExceptionStatus,
    pub pairing: String,
    pub object: String,
    pub crm_id: Option<String>,
    pub field: Option<ExceptionField>,
    pub rule_id: Option<String>,
    pub rule_hash: Option<String>,
    pub message: String,
    /// When it was raised.
    pub at: DateTime<Utc>,
}

/// New values for an open exception (a held field observed again), and possibly its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionUpdate {
    pub id: ExceptionRef,
    pub crm_value: Value,
    pub anaplan_value: Value,
    /// `Open` to keep holding, `Converged` when both sides came to agree.
    pub status: ExceptionStatus,
}

/// A write to queue, `pending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutbox {
    pub key: FieldKey,
    pub target: Side,
    pub kind: ValueKind,
    pub value: Value,
    pub reason: OutboxReason,
    pub exception: Option<ExceptionRef>,
    /// What `target` showed when the write was decided (`Null` for nothing).
    pub replaced: Value,
}

/// A queued write moving on: sent, acknowledged, or refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxUpdate {
    pub id: OutboxRef,
    pub state: OutboxState,
    /// Sends made since the last update (added to `attempts`).
    pub add_attempts: u32,
    /// The remote's error; `None` keeps the previous one.
    pub last_error: Option<String>,
    /// The exception the write ended in (a failed write's `write_failed`, a held write's
    /// conflict); `None` keeps what was there.
    pub result_exception: Option<ExceptionRef>,
    /// When a write answered "retry" may be sent again; `None` clears the wait.
    pub not_before: Option<DateTime<Utc>>,
}

/// The whole per-field state to store, replacing what was there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowUpsert {
    pub key: FieldKey,
    pub kind: ValueKind,
    pub base: Option<Observed>,
    pub seen_crm: Option<Observed>,
    pub seen_anaplan: Option<Observed>,
    pub in_flight: Option<OutboxRef>,
    /// Stored only while that exception is open: a person may have resolved it since the
    /// engine loaded the state, and a resolved exception must not hold the field again.
    pub held: Option<ExceptionRef>,
    pub last_ack: Option<crate::model::AckedWrite>,
}

impl ShadowUpsert {
    /// The upsert that stores `state` (as loaded, then changed by the engine) under `key`.
    pub fn from_state(key: FieldKey, state: &ShadowState) -> ShadowUpsert {
        ShadowUpsert {
            key,
            kind: state.kind,
            base: state.base.clone(),
            seen_crm: state.seen_crm.clone(),
            seen_anaplan: state.seen_anaplan.clone(),
            in_flight: state.in_flight.map(OutboxRef::stored),
            held: state.held.map(ExceptionRef::stored),
            last_ack: state.last_ack.clone(),
        }
    }
}

/// A decision about one observed value, for the `audit` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    pub key: FieldKey,
    /// When the observed change was committed (CRM) or polled (Anaplan).
    pub at: DateTime<Utc>,
    pub side: Side,
    pub source: Source,
    pub kind: ValueKind,
    pub value: Value,
    pub decision: String,
    pub rule_id: Option<String>,
    pub rule_hash: Option<String>,
    pub exception: Option<ExceptionRef>,
}

/// Everything one round of decisions caused, committed atomically by [`Store::commit`].
#[derive(Debug, Clone)]
pub struct Batch {
    id: u64,
    at: DateTime<Utc>,
    records: Vec<RecordMapUpsert>,
    exceptions: Vec<NewException>,
    exception_updates: Vec<ExceptionUpdate>,
    outbox: Vec<NewOutbox>,
    outbox_updates: Vec<OutboxUpdate>,
    shadow: Vec<ShadowUpsert>,
    audit: Vec<NewAudit>,
    checkpoints: Vec<(String, Position)>,
    metrics: Vec<(String, i64)>,
    staged: Vec<StagedItem>,
    flags: Vec<(RecordKey, BTreeMap<String, bool>)>,
    contexts: Vec<(RecordKey, DateTime<Utc>, BTreeMap<String, Value>)>,
}

impl Batch {
    /// An empty batch; `at` stamps the `created_at` / `updated_at` columns it writes (the
    /// engine passes its clock so tests are deterministic).
    pub fn new(at: DateTime<Utc>) -> Batch {
        Batch {
            id: NEXT_BATCH.fetch_add(1, Ordering::Relaxed),
            at,
            records: Vec::new(),
            exceptions: Vec::new(),
            exception_updates: Vec::new(),
            outbox: Vec::new(),
            outbox_updates: Vec::new(),
            shadow: Vec::new(),
            audit: Vec::new(),
            checkpoints: Vec::new(),
            metrics: Vec::new(),
            staged: Vec::new(),
            flags: Vec::new(),
            contexts: Vec::new(),
        }
    }

    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }

    pub fn upsert_record(&mut self, row: RecordMapUpsert) {
        self.records.push(row);
    }

    /// Adds an exception; the reference can be used by later rows of this batch.
    pub fn add_exception(&mut self, row: NewException) -> ExceptionRef {
        self.exceptions.push(row);
        ExceptionRef(RowRef::InBatch {
            batch: self.id,
            index: self.exceptions.len() - 1,
        })
    }

    /// How many exceptions the batch adds so far: a mark for [`Batch::open_exception_since`].
    pub fn exception_mark(&self) -> usize {
        self.exceptions.len()
    }

    /// The last open exception about `key` added after `mark`, if any.
    pub fn open_exception_since(&self, mark: usize, key: &FieldKey) -> Option<ExceptionRef> {
        let added = self.exceptions.get(mark..)?;
        let (offset, _) = added.iter().enumerate().rev().find(|(_, e)| {
            e.status == ExceptionStatus::Open
                && e.pairing == key.record.pairing
                && e.crm_id.as_deref() == Some(key.record.crm_id.as_str())
                && e.field.as_ref().is_some_and(|f| f.name == key.field)
        })?;
        Some(ExceptionRef(RowRef::InBatch {
            batch: self.id,
            index: mark + offset,
        }))
    }

    pub fn update_exception(&mut self, row: ExceptionUpdate) {
        self.exception_updates.push(row);
    }

    /// Queues a write; the reference can be used by later rows of this batch (e.g. as a
    /// field's `in_flight`).
    pub fn add_outbox(&mut self, row: NewOutbox) -> OutboxRef {
        self.outbox.push(row);
        OutboxRef(RowRef::InBatch {
            batch: self.id,
            index: self.outbox.len() - 1,
        })
    }

    /// Whether this batch queues a write to `key`.
    pub fn queues_write(&self, key: &FieldKey) -> bool {
        self.outbox.iter().any(|o| &o.key == key)
    }

    pub fn update_outbox(&mut self, row: OutboxUpdate) {
        self.outbox_updates.push(row);
    }

    pub fn upsert_shadow(&mut self, row: ShadowUpsert) {
        self.shadow.push(row);
    }

    pub fn add_audit(&mut self, row: NewAudit) {
        self.audit.push(row);
    }

    /// Records how far `source` has been consumed; the last call for a source wins.
    pub fn set_checkpoint(&mut self, source: impl Into<String>, position: Position) {
        self.checkpoints.push((source.into(), position));
    }

    /// Stores the current value of an engine counter (see the `metrics` table).
    pub fn set_metric(&mut self, name: impl Into<String>, value: i64) {
        self.metrics.push((name.into(), value));
    }

    /// Stages the first run's Anaplan values of one item (see `staging.rs`), replacing what
    /// was staged for it before.
    pub fn stage_anaplan(&mut self, item: StagedItem) {
        self.staged.push(item);
    }

    /// Records an item's Anaplan flags as last seen (see the `anaplan_flags` table): kept
    /// while one is set, removed when none is.
    pub fn set_flags(&mut self, record: RecordKey, flags: BTreeMap<String, bool>) {
        self.flags.push((record, flags));
    }

    /// Records a record's `extra_crm_fields` as seen in a change committed at `at` (see the
    /// `crm_context` table).
    pub fn set_crm_context(
        &mut self,
        record: RecordKey,
        at: DateTime<Utc>,
        fields: BTreeMap<String, Value>,
    ) {
        self.contexts.push((record, at, fields));
    }

    /// How many rows the batch will write.
    pub fn len(&self) -> usize {
        self.records.len()
            + self.exceptions.len()
            + self.exception_updates.len()
            + self.outbox.len()
            + self.outbox_updates.len()
            + self.shadow.len()
            + self.audit.len()
            + self.checkpoints.len()
            + self.metrics.len()
            + self.staged.len()
            + self.flags.len()
            + self.contexts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a commit stored: the ids given to the batch's new rows, in the order they were added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitReceipt {
    batch: u64,
    pub exception_ids: Vec<i64>,
    pub outbox_ids: Vec<i64>,
    /// Exception updates that found their exception no longer open (a person resolved it
    /// meanwhile) and so changed nothing; the engine should reload those fields.
    pub stale_exception_updates: Vec<i64>,
}

impl CommitReceipt {
    pub fn exception_id(&self, r: ExceptionRef) -> Option<i64> {
        lookup(self.batch, &self.exception_ids, r.0)
    }

    pub fn outbox_id(&self, r: OutboxRef) -> Option<i64> {
        lookup(self.batch, &self.outbox_ids, r.0)
    }
}

fn lookup(this_batch: u64, ids: &[i64], r: RowRef) -> Option<i64> {
    match r {
        RowRef::Stored(id) => Some(id),
        RowRef::InBatch { batch, index } if batch == this_batch => ids.get(index).copied(),
        RowRef::InBatch { .. } => None,
    }
}

fn resolve(this_batch: u64, ids: &[i64], r: RowRef, what: &'static str) -> Result<i64, StoreError> {
    match r {
        RowRef::Stored(id) => Ok(id),
        RowRef::InBatch { index, .. } => {
            lookup(this_batch, ids, r).ok_or(StoreError::BadReference { what, index })
        }
    }
}

const UPSERT_RECORD: &str = "\
INSERT INTO record_map (pairing, crm_id, anaplan_code, anaplan_item_id, state, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
ON CONFLICT (pairing, crm_id) DO UPDATE SET
    anaplan_code = excluded.anaplan_code,
    anaplan_item_id = excluded.anaplan_item_id,
    state = excluded.state,
    updated_at = excluded.updated_at";

const INSERT_EXCEPTION: &str = "\
INSERT INTO exceptions (kind, status, pairing, object, crm_id, field, value_kind, crm_value,
    anaplan_value, base_value, rule_id, rule_hash, message, created_at, updated_at, resolved_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15)";

const UPDATE_EXCEPTION: &str = "\
UPDATE exceptions SET crm_value = ?2, anaplan_value = ?3, status = ?4, updated_at = ?5,
    resolved_at = CASE WHEN ?4 = 'open' THEN NULL ELSE ?5 END
WHERE id = ?1 AND status = 'open'";

const INSERT_OUTBOX: &str = "\
INSERT INTO outbox (pairing, crm_id, field, target, value, value_kind, reason, exception_id,
    state, attempts, created_at, updated_at, replaced_value)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, ?9, ?9, ?10)";

const UPSERT_METRIC: &str = "\
INSERT INTO metrics (name, value, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";

const UPSERT_FLAGS: &str = "\
INSERT INTO anaplan_flags (pairing, crm_id, flags, updated_at) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (pairing, crm_id) DO UPDATE SET flags = excluded.flags, updated_at = excluded.updated_at";

const UPSERT_CONTEXT: &str = "\
INSERT INTO crm_context (pairing, crm_id, at, fields, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (pairing, crm_id) DO UPDATE SET at = excluded.at, fields = excluded.fields,
    updated_at = excluded.updated_at";

const UPDATE_OUTBOX: &str = "\
UPDATE outbox SET state = ?2, attempts = attempts + ?3, last_error = coalesce(?4, last_error),
    updated_at = ?5, result_exception_id = coalesce(?6, result_exception_id), not_before = ?7
WHERE id = ?1";

const UPSERT_SHADOW: &str = "\
INSERT INTO shadow (pairing, crm_id, field, value_kind,
    base_value, base_at, base_source,
    seen_crm_value, seen_crm_at, seen_crm_source,
    seen_anaplan_value, seen_anaplan_at, seen_anaplan_source,
    in_flight_outbox_id, held_exception_id, updated_at,
    last_ack_target, last_ack_value, last_ack_at, last_ack_replaced)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
    (SELECT id FROM exceptions WHERE id = ?15 AND status = 'open'), ?16, ?17, ?18, ?19, ?20)
ON CONFLICT (pairing, crm_id, field) DO UPDATE SET
    value_kind = excluded.value_kind,
    base_value = excluded.base_value,
    base_at = excluded.base_at,
    base_source = excluded.base_source,
    seen_crm_value = excluded.seen_crm_value,
    seen_crm_at = excluded.seen_crm_at,
    seen_crm_source = excluded.seen_crm_source,
    seen_anaplan_value = excluded.seen_anaplan_value,
    seen_anaplan_at = excluded.seen_anaplan_at,
    seen_anaplan_source = excluded.seen_anaplan_source,
    in_flight_outbox_id = excluded.in_flight_outbox_id,
    held_exception_id = excluded.held_exception_id,
    last_ack_target = excluded.last_ack_target,
    last_ack_value = excluded.last_ack_value,
    last_ack_at = excluded.last_ack_at,
    last_ack_replaced = excluded.last_ack_replaced,
    updated_at = excluded.updated_at";

const INSERT_AUDIT: &str = "\
INSERT INTO audit (at, pairing, crm_id, field, side, source, value, value_kind, decision,
    rule_id, rule_hash, exception_id)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

const UPSERT_CHECKPOINT: &str = "\
INSERT INTO checkpoints (source, position, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT (source) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at";

/// The text columns of a batch's shadow and audit rows, formatted before the write turn.
struct Rendered {
    shadow: Vec<RenderedShadow>,
    audit: Vec<RenderedAudit>,
    /// Each staged item's seen time and fields.
    staged: Vec<(String, String)>,
}

struct RenderedShadow {
    /// Base, seen in the CRM, seen in Anaplan.
    observed: [Columns; 3],
    ack_value: Option<String>,
    ack_replaced: Option<String>,
}

struct RenderedAudit {
    at: String,
    value: Option<String>,
}

/// The three columns of an observation: value text, time, source.
#[derive(Default)]
struct Columns {
    value: Option<String>,
    at: Option<i64>,
    source: Option<&'static str>,
}

impl Rendered {
    fn of(batch: &Batch) -> Rendered {
        // A round's observations mostly share a few times (one poll's, one commit's).
        let mut times = TimeText::default();
        let columns = |o: Option<&Observed>| match o {
            None => Columns::default(),
            Some(o) => Columns {
                value: o.value.to_text(),
                at: Some(micros(o.at)),
                source: Some(o.source.as_str()),
            },
        };
        let shadow = batch
            .shadow
            .iter()
            .map(|s| RenderedShadow {
                observed: [
                    columns(s.base.as_ref()),
                    columns(s.seen_crm.as_ref()),
                    columns(s.seen_anaplan.as_ref()),
                ],
                ack_value: s.last_ack.as_ref().and_then(|a| a.value.to_text()),
                ack_replaced: s
                    .last_ack
                    .as_ref()
                    .and_then(|a| a.replaced.as_ref().and_then(|v| v.to_text())),
            })
            .collect();
        let audit = batch
            .audit
            .iter()
            .map(|a| RenderedAudit {
                at: times.text(a.at),
                value: a.value.to_text(),
            })
            .collect();
        let staged = batch
            .staged
            .iter()
            .map(|item| (times.text(item.at), fields_json(item)))
            .collect();
        Rendered {
            shadow,
            audit,
            staged,
        }
    }
}

/// `ts` with the last time's text kept: consecutive rows often carry the same time.
#[derive(Default)]
struct TimeText {
    last: Option<(DateTime<Utc>, String)>,
}

impl TimeText {
    fn text(&mut self, at: DateTime<Utc>) -> String {
        match &self.last {
            Some((t, text)) if *t == at => text.clone(),
            _ => {
                let text = ts(at);
                self.last = Some((at, text.clone()));
                text
            }
        }
    }
}

impl Store {
    /// Applies `batch` in one transaction: all of it is stored, or (on any error) none of it.
    pub fn commit(&mut self, batch: &Batch) -> Result<CommitReceipt, StoreError> {
        self.ensure_writable()?;
        // Formatting values and times is most of a row's cost outside SQLite: done before
        // the turn, so the other shards' writers wait only for SQLite itself.
        let rendered = Rendered::of(batch);
        let _turn = super::take_turn(&self.write_gate);
        // IMMEDIATE takes the write lock up front, so a busy database is waited for at BEGIN
        // (under busy_timeout) instead of failing halfway when a read would become a write.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // On error `tx` is dropped here, which rolls everything back.
        let receipt = apply(&tx, batch, &rendered)?;
        tx.commit()?;
        Ok(receipt)
    }
}

fn apply(
    tx: &Transaction<'_>,
    batch: &Batch,
    rendered: &Rendered,
) -> Result<CommitReceipt, StoreError> {
    let now = ts(batch.at);
    let mut receipt = CommitReceipt {
        batch: batch.id,
        exception_ids: Vec::with_capacity(batch.exceptions.len()),
        outbox_ids: Vec::with_capacity(batch.outbox.len()),
        stale_exception_updates: Vec::new(),
    };

    if !batch.records.is_empty() {
        let mut stmt = tx.prepare_cached(UPSERT_RECORD)?;
        for r in &batch.records {
            stmt.execute(params![
                r.record.pairing,
                r.record.crm_id,
                r.anaplan_code,
                r.anaplan_item_id,
                r.state.as_str(),
                now,
            ])?;
        }
    }

    if !batch.exceptions.is_empty() {
        let mut stmt = tx.prepare_cached(INSERT_EXCEPTION)?;
        for e in &batch.exceptions {
            let f = e.field.as_ref();
            let at = ts(e.at);
            let resolved_at = (e.status != ExceptionStatus::Open).then(|| at.clone());
            stmt.execute(params![
                e.kind.as_str(),
                e.status.as_str(),
                e.pairing,
                e.object,
                e.crm_id,
                f.map(|f| f.name.as_str()),
                f.map(|f| f.kind.tag()),
                f.and_then(|f| f.crm_value.to_text()),
                f.and_then(|f| f.anaplan_value.to_text()),
                f.and_then(|f| f.base_value.to_text()),
                e.rule_id,
                e.rule_hash,
                e.message,
                at,
                resolved_at,
            ])?;
            receipt.exception_ids.push(tx.last_insert_rowid());
        }
    }

    if !batch.exception_updates.is_empty() {
        let mut stmt = tx.prepare_cached(UPDATE_EXCEPTION)?;
        for u in &batch.exception_updates {
            let id = resolve(batch.id, &receipt.exception_ids, u.id.0, "exception")?;
            let changed = stmt.execute(params![
                id,
                u.crm_value.to_text(),
                u.anaplan_value.to_text(),
                u.status.as_str(),
                now,
            ])?;
            if changed == 0 {
                receipt.stale_exception_updates.push(id);
            }
        }
    }

    if !batch.outbox.is_empty() {
        let mut stmt = tx.prepare_cached(INSERT_OUTBOX)?;
        for o in &batch.outbox {
            let exception = o
                .exception
                .map(|r| resolve(batch.id, &receipt.exception_ids, r.0, "exception"))
                .transpose()?;
            stmt.execute(params![
                o.key.record.pairing,
                o.key.record.crm_id,
                o.key.field,
                o.target.as_str(),
                o.value.to_text(),
                o.kind.tag(),
                o.reason.as_str(),
                exception,
                now,
                o.replaced.to_text(),
            ])?;
            receipt.outbox_ids.push(tx.last_insert_rowid());
        }
    }

    if !batch.outbox_updates.is_empty() {
        let mut stmt = tx.prepare_cached(UPDATE_OUTBOX)?;
        for u in &batch.outbox_updates {
            let id = resolve(batch.id, &receipt.outbox_ids, u.id.0, "outbox row")?;
            let result = u
                .result_exception
                .map(|r| resolve(batch.id, &receipt.exception_ids, r.0, "exception"))
                .transpose()?;
            let changed = stmt.execute(params![
                id,
                u.state.as_str(),
                u.add_attempts,
                u.last_error,
                now,
                result,
                u.not_before.map(ts),
            ])?;
            if changed == 0 {
                // An ack for a write that does not exist means the engine's view is wrong;
                // storing the rest would hide that.
                return Err(StoreError::UnknownOutbox { id });
            }
        }
    }

    if !batch.shadow.is_empty() {
        let mut stmt = tx.prepare_cached(UPSERT_SHADOW)?;
        let updated_at = micros(batch.at);
        for (s, r) in batch.shadow.iter().zip(&rendered.shadow) {
            let in_flight = s
                .in_flight
                .map(|r| resolve(batch.id, &receipt.outbox_ids, r.0, "outbox row"))
                .transpose()?;
            let held = s
                .held
                .map(|r| resolve(batch.id, &receipt.exception_ids, r.0, "exception"))
                .transpose()?;
            let [base, crm, anaplan] = &r.observed;
            stmt.execute(params![
                s.key.record.pairing,
                s.key.record.crm_id,
                s.key.field,
                s.kind.tag(),
                base.value,
                base.at,
                base.source,
                crm.value,
                crm.at,
                crm.source,
                anaplan.value,
                anaplan.at,
                anaplan.source,
                in_flight,
                held,
                updated_at,
                s.last_ack.as_ref().map(|a| a.to.as_str()),
                r.ack_value,
                s.last_ack.as_ref().map(|a| micros(a.at)),
                r.ack_replaced,
            ])?;
        }
    }

    if !batch.audit.is_empty() {
        let mut stmt = tx.prepare_cached(INSERT_AUDIT)?;
        for (a, r) in batch.audit.iter().zip(&rendered.audit) {
            let exception = a
                .exception
                .map(|r| resolve(batch.id, &receipt.exception_ids, r.0, "exception"))
                .transpose()?;
            stmt.execute(params![
                r.at,
                a.key.record.pairing,
                a.key.record.crm_id,
                a.key.field,
                a.side.as_str(),
                a.source.as_str(),
                r.value,
                a.kind.tag(),
                a.decision,
                a.rule_id,
                a.rule_hash,
                exception,
            ])?;
        }
    }

    if !batch.staged.is_empty() {
        let mut stmt = tx.prepare_cached(UPSERT_STAGED)?;
        for (item, (at, fields)) in batch.staged.iter().zip(&rendered.staged) {
            stmt.execute(params![item.record.pairing, item.record.crm_id, at, fields])?;
        }
    }

    if !batch.checkpoints.is_empty() {
        let mut stmt = tx.prepare_cached(UPSERT_CHECKPOINT)?;
        for (source, position) in &batch.checkpoints {
            // `Position` is plain data; serialising it cannot fail.
            let json = serde_json::to_string(position).map_err(|e| {
                StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
            })?;
            stmt.execute(params![source, json, now])?;
        }
    }

    for (record, flags) in &batch.flags {
        if flags.values().any(|b| *b) {
            // A map of names to booleans; serialising it cannot fail.
            let json = serde_json::to_string(flags).map_err(|e| {
                StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
            })?;
            tx.prepare_cached(UPSERT_FLAGS)?.execute(params![
                record.pairing,
                record.crm_id,
                json,
                now
            ])?;
        } else {
            tx.prepare_cached("DELETE FROM anaplan_flags WHERE pairing = ?1 AND crm_id = ?2")?
                .execute(params![record.pairing, record.crm_id])?;
        }
    }

    for (record, at, fields) in &batch.contexts {
        let text: BTreeMap<&String, Option<String>> =
            fields.iter().map(|(k, v)| (k, v.to_text())).collect();
        // A map of names to texts; serialising it cannot fail.
        let json = serde_json::to_string(&text).map_err(|e| {
            StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
        })?;
        tx.prepare_cached(UPSERT_CONTEXT)?.execute(params![
            record.pairing,
            record.crm_id,
            ts(*at),
            json,
            now
        ])?;
    }

    if !batch.metrics.is_empty() {
        let mut stmt = tx.prepare_cached(UPSERT_METRIC)?;
        for (name, value) in &batch.metrics {
            stmt.execute(params![name, value, now])?;
        }
    }

    Ok(receipt)
}
