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

use std::collections::BTreeMap;

// A round hashes every record and field key it touches, several times: SipHash was ~4% of
// the first run's samples.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::state::{Flight, Working};
use super::write::{WriteOutcome, lifecycle};
use crate::model::{
    AckedWrite, Change, ChangeKind, ExceptionKind, ExceptionStatus, Position, RecordKey, Side,
    Source, Value, ValueKind,
};
use crate::rules::RuleSet;
use crate::rules::decide::{Action, Context, Observation, decide};
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
}

impl ShardCore {
    /// A shard on `store`, with the Anaplan flags last seen (stored by every shard's rounds),
    /// so a decision after a restart sees them as they were, not as all false until the
    /// next poll.
    pub fn new(index: usize, store: Store) -> Result<ShardCore, StoreError> {
        let flags = store.anaplan_flags()?.into_iter().collect();
        Ok(ShardCore {
            index,
            store,
            flags,
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
    now: DateTime<Utc>,
}

impl Round<'_> {
    /// Loads the record's shadow rows into `fields` (once a round); says whether it has any.
    fn load_record(&mut self, pairing: &Pairing, record: &RecordKey) -> Result<bool, StoreError> {
        if let Some(loaded) = self.loaded.get(record) {
            return Ok(loaded.stored);
        }
        let rows = self.store.shadow_record(record)?;
        self.loaded.insert(
            record.clone(),
            Loaded {
                stored: !rows.is_empty(),
                staging_read: false,
            },
        );
        let stored = !rows.is_empty();
        for (field, state) in rows {
            let key = FieldKey {
                record: record.clone(),
                field: field.clone(),
            };
            if self.fields.contains_key(&key) {
                continue;
            }
            let kind = pairing.field(&field).map_or(state.kind, |r| r.kind);
            let flight = match state.in_flight {
                Some(id) => self.store.outbox(id)?,
                None => None,
            };
            self.fields
                .insert(key, Working::from_stored(state, kind, flight));
        }
        Ok(stored)
    }

    /// Takes the first run's staged Anaplan values of `record` (a record with no shadow
    /// rows) as its fields' Anaplan side, to decide its CRM values against. The fields are
    /// stored at the end of the round, so the staged item counts as claimed from then on.
    fn claim_staged(&mut self, pairing: &Pairing, record: &RecordKey) -> Result<(), StoreError> {
        match self.loaded.get_mut(record) {
            Some(loaded) if !loaded.stored && !loaded.staging_read => loaded.staging_read = true,
            _ => return Ok(()),
        }
        let Some(item) = self.store.staged_item(record)? else {
            return Ok(());
        };
        for (field, _, value) in item.fields {
            // A field no longer mapped, or a value that no longer fits its rule's kind, is
            // unknown (as for a stored shadow row): the next poll reads it again.
            let Some(rule) = pairing.field(&field) else {
                continue;
            };
            let Ok(value) = value.to_kind(rule.kind) else {
                continue;
            };
            let key = FieldKey {
                record: record.clone(),
                field,
            };
            if self.fields.contains_key(&key) {
                continue;
            }
            let mut w = Working::new(rule.kind);
            w.set_seen(
                Side::Anaplan,
                Observed {
                    value,
                    at: item.at,
                    source: Source::Reconcile,
                },
            );
            self.fields.insert(key, w);
        }
        Ok(())
    }

    /// Whether any field of `record` is being worked on this round.
    fn has_working(&self, pairing: &Pairing, record: &RecordKey) -> bool {
        pairing.fields.iter().any(|rule| {
            self.fields.contains_key(&FieldKey {
                record: record.clone(),
                field: rule.crm.clone(),
            })
        })
    }

    fn working(&mut self, key: &FieldKey, kind: ValueKind) -> &mut Working {
        self.fields
            .entry(key.clone())
            .or_insert_with(|| Working::new(kind))
    }

    fn is_mapped(&mut self, record: &RecordKey) -> Result<bool, StoreError> {
        if let Some(m) = self.mapped.get(record) {
            return Ok(*m);
        }
        let m = self.store.record_map_entry(record)?.is_some();
        self.mapped.insert(record.clone(), m);
        Ok(m)
    }

    /// The record's values and flags for `when` conditions: the CRM values last seen,
    /// overlaid with the change being decided.
    fn context(
        &self,
        pairing: &Pairing,
        record: &RecordKey,
        overlay: &[(String, Value)],
    ) -> Context {
        let mut values = BTreeMap::new();
        for rule in &pairing.fields {
            let key = FieldKey {
                record: record.clone(),
                field: rule.crm.clone(),
            };
            if let Some(seen) = self.fields.get(&key).and_then(|w| w.seen_crm.as_ref()) {
                values.insert(rule.crm.clone(), seen.value.clone());
            }
        }
        if let Some(Some((_, extra))) = self.contexts.get(record) {
            for (field, value) in extra {
                values.insert(field.clone(), value.clone());
            }
        }
        for (field, value) in overlay {
            values.insert(field.clone(), value.clone());
        }
        Context {
            record: values,
            flags: self.flags.get(record).cloned().unwrap_or_default(),
        }
    }

    /// Loads the record's stored `extra_crm_fields` (once a round; only for a pairing that
    /// has some), so conditions see them as last seen, not only in the change that carries
    /// them.
    fn load_context(&mut self, pairing: &Pairing, record: &RecordKey) -> Result<(), StoreError> {
        if pairing.extra_crm_fields.is_empty() || self.contexts.contains_key(record) {
            return Ok(());
        }
        let stored = self.store.crm_context(record)?;
        self.contexts.insert(record.clone(), stored);
        Ok(())
    }

    /// Takes the `extra_crm_fields` a CRM change carries into the record's context (stored
    /// with the round), unless the change is older than what the context holds.
    fn record_context(&mut self, pairing: &Pairing, change: &Change) {
        let extra: Vec<(String, Value)> = change
            .fields
            .iter()
            .filter(|fc| pairing.extra_crm_fields.contains(&fc.field))
            .map(|fc| (fc.field.clone(), context_value(&fc.value)))
            .collect();
        if extra.is_empty() {
            return;
        }
        let entry = self.contexts.entry(change.record.clone()).or_insert(None);
        if entry
            .as_ref()
            .is_some_and(|(at, _)| change.committed_at < *at)
        {
            return;
        }
        let (at, fields) = entry.get_or_insert_with(|| (change.committed_at, BTreeMap::new()));
        *at = change.committed_at;
        fields.extend(extra);
        let (at, fields) = (*at, fields.clone());
        self.batch
            .set_crm_context(change.record.clone(), at, fields);
    }

    fn change(&mut self, change: &Change) -> Result<(), StoreError> {
        self.summary.changes += 1;
        let rules = self.rules;
        let Some(pairing) = rules.pairing(&change.record.pairing) else {
            let message = format!(
                "a change to {} came for pairing `{}`, which no rule file defines",
                change.record.crm_id, change.record.pairing
            );
            return self.record_exception(
                &change.record,
                &change.record.pairing,
                None,
                ExceptionKind::Unmapped,
                message,
            );
        };
        let stored = self.load_record(pairing, &change.record)?;
        // Set when this change made plansync create the record's Anaplan item.
        let mut new_item = false;
        if change.source == Source::Reconcile && change.side == Side::Crm {
            self.claim_staged(pairing, &change.record)?;
        }
        tracing::debug!(
            target: "plansync::engine",
            event = "change_received",
            side = %change.side,
            source = %change.source,
            pairing = %change.record.pairing,
            record = %change.record.crm_id,
            kind = ?change.kind,
            fields = change.fields.len(),
        );
        match (change.side, change.kind) {
            (Side::Crm, ChangeKind::Delete) => return self.crm_delete(pairing, change),
            (Side::Anaplan, ChangeKind::Delete) => return self.anaplan_delete(pairing, change),
            (Side::Crm, ChangeKind::Undelete) => self.crm_undelete(pairing, change)?,
            (Side::Crm, _) => new_item = self.ensure_mapped(pairing, &change.record)?,
            (Side::Anaplan, _) => {}
        }

        let mut values: Vec<(&FieldRule, Value)> = Vec::with_capacity(change.fields.len());
        for fc in &change.fields {
            // A CRM event carries every field the commit touched; only mapped ones sync.
            let Some(rule) = pairing.field(&fc.field) else {
                continue;
            };
            match rule.normalise(change.side, &fc.value) {
                Ok(v) => values.push((rule, v)),
                Err(e) => {
                    let message = format!(
                        "{} from {} for {} ({}): {}",
                        rule.id, change.side, change.record.crm_id, fc.value, e.message
                    );
                    self.field_exception(pairing, rule, &change.record, e.kind, message)?;
                }
            }
        }
        // The first run's Anaplan values of a record with no state yet wait, staged, for
        // its CRM values: nothing can be decided before those are read.
        if change.source == Source::Reconcile
            && change.side == Side::Anaplan
            && !stored
            && (self.staged.contains_key(&change.record)
                || !self.has_working(pairing, &change.record))
        {
            let item = self
                .staged
                .entry(change.record.clone())
                .or_insert_with(|| StagedItem {
                    record: change.record.clone(),
                    at: change.committed_at,
                    fields: Vec::with_capacity(values.len()),
                });
            item.at = change.committed_at;
            for (rule, value) in values {
                item.fields.retain(|(field, _, _)| *field != rule.crm);
                item.fields.push((rule.crm.clone(), rule.kind, value));
            }
            return Ok(());
        }
        let overlay: Vec<(String, Value)> = if change.side == Side::Crm {
            values
                .iter()
                .map(|(r, v)| (r.crm.clone(), v.clone()))
                .collect()
        } else {
            Vec::new()
        };
        self.load_context(pairing, &change.record)?;
        if change.side == Side::Crm {
            self.record_context(pairing, change);
        }
        let ctx = self.context(pairing, &change.record, &overlay);
        let mut unset = Vec::new();
        for (rule, value) in values {
            if new_item && rule.policy.owner == Owner::Anaplan {
                if let Some(field) =
                    self.new_item_field(pairing, rule, &change.record, change, value)
                {
                    unset.push(field);
                }
                continue;
            }
            let obs = Obs {
                side: change.side,
                value,
                at: change.committed_at,
                ours: change.ours,
                source: change.source,
            };
            self.observe(pairing, rule, &change.record, obs, &ctx, false)?;
        }

        if !unset.is_empty() {
            let message = format!(
                "Anaplan item `{}` of list {} was created for this CRM record; Anaplan owns {} and holds no value for {} yet: the CRM keeps its values until a planner sets them (lifecycle new_item = \"hold\")",
                change.record.crm_id,
                pairing.anaplan.list,
                if unset.len() == 1 {
                    "this field"
                } else {
                    "these fields"
                },
                unset.join(", "),
            );
            self.lifecycle_exception(
                &change.record,
                &pairing.crm_object,
                Some(pairing),
                ExceptionKind::Lifecycle,
                message,
            );
        }

        // A planner's new row with no CRM record behind it cannot be synced: say so once
        // (the values are recorded, so the next poll knows the item). The first
        // reconciliation reads Anaplan before the CRM, so it cannot tell yet.
        if change.side == Side::Anaplan
            && change.kind == ChangeKind::Create
            && change.source != Source::Reconcile
            && !self.is_mapped(&change.record)?
        {
            let message = format!(
                "Anaplan item `{}` of list {} has no CRM {} record: not synced",
                change.record.crm_id, pairing.anaplan.list, pairing.crm_object
            );
            self.record_exception(
                &change.record,
                &pairing.crm_object,
                Some(pairing),
                ExceptionKind::Unmapped,
                message,
            )?;
        }
        Ok(())
    }

    /// Decides one observed value of one field and records what follows. `redecide` is set
    /// for an observation stored earlier and decided now (after the write it waited for).
    fn observe(
        &mut self,
        pairing: &Pairing,
        rule: &FieldRule,
        record: &RecordKey,
        obs: Obs,
        ctx: &Context,
        redecide: bool,
    ) -> Result<(), StoreError> {
        let key = FieldKey {
            record: record.clone(),
            field: rule.crm.clone(),
        };
        let w = self.working(&key, rule.kind);
        if !redecide && let Some(seen) = w.seen(obs.side) {
            // The same value again (a stream event and a poll of the same commit, a replay
            // after a restart): nothing new on that side.
            if rule.same(&seen.value, &obs.value) {
                return Ok(());
            }
            // An older CRM commit arriving after a newer one was seen (the stream replaying
            // what the poller already caught): applying it would go back in time. A polled
            // value reflects every commit up to its SystemModstamp, so a streamed event of
            // the same millisecond is covered too (two streamed events of one millisecond
            // are not: the later one is newer). Times of our own acknowledged writes are
            // send times, not commit times, so they do not count here.
            let polled = matches!(seen.source, Source::Poll | Source::Reconcile);
            let covered =
                obs.at < seen.at || (obs.at == seen.at && polled && obs.source == Source::Stream);
            if obs.side == Side::Crm && covered && seen.source != Source::Write {
                tracing::debug!(
                    target: "plansync::engine",
                    event = "stale_skipped",
                    field = %key,
                    at = %obs.at,
                    seen_at = %seen.at,
                );
                return Ok(());
            }
        }
        let observed = Observed {
            value: obs.value.clone(),
            at: obs.at,
            source: obs.source,
        };
        // Anaplan's value of a field whose CRM value is not known yet (the first
        // reconciliation reads Anaplan first): recorded, decided when the CRM side is seen.
        if obs.side == Side::Anaplan
            && w.seen_crm.is_none()
            && w.base.is_none()
            && w.in_flight.is_none()
        {
            w.set_seen(Side::Anaplan, observed);
            return Ok(());
        }

        let decision = decide(
            pairing,
            rule,
            &w.for_decide(),
            &Observation {
                side: obs.side,
                value: obs.value.clone(),
                at: obs.at,
                ours: obs.ours,
            },
            ctx,
        );
        let action = decision.action.name();
        // A held conflict that converges is audited: it closes an exception.
        let first_agreement = obs.source == Source::Reconcile
            && w.base.is_none()
            && w.held.is_none()
            && matches!(decision.action, Action::Converged { .. })
            && decision.exception.is_none();
        *self.summary.decisions.entry(action).or_default() += 1;
        tracing::debug!(
            target: "plansync::engine",
            event = "decision",
            field = %key,
            side = %obs.side,
            action,
            rule = %decision.rule_id,
        );

        // The exception the decision raises, unless it only updates a held one.
        let w = self.fields.get_mut(&key).map(|w| w.held);
        let already_held = w.flatten();
        let mut exception_ref = None;
        if let Some(draft) = &decision.exception {
            if matches!(decision.action, Action::Hold) && already_held.is_some() {
                // The held conflict's exception carries the sides' latest values.
            } else {
                let field = ExceptionField {
                    name: rule.crm.clone(),
                    kind: rule.kind,
                    crm_value: draft.crm.clone().unwrap_or(Value::Null),
                    anaplan_value: draft.anaplan.clone().unwrap_or(Value::Null),
                    base_value: draft.base.clone().unwrap_or(Value::Null),
                };
                let r = self.batch.add_exception(NewException {
                    kind: draft.kind,
                    status: if draft.auto_resolved {
                        ExceptionStatus::AutoResolved
                    } else {
                        ExceptionStatus::Open
                    },
                    pairing: pairing.name.clone(),
                    object: pairing.crm_object.clone(),
                    crm_id: Some(record.crm_id.clone()),
                    field: Some(field),
                    rule_id: Some(decision.rule_id.clone()),
                    rule_hash: Some(pairing.hash.clone()),
                    message: draft.message.clone(),
                    at: self.now,
                });
                self.summary.exceptions += 1;
                tracing::info!(
                    target: "plansync::engine",
                    event = "exception_recorded",
                    field = %key,
                    kind = %draft.kind.as_str(),
                    auto_resolved = draft.auto_resolved,
                    message = %draft.message,
                );
                exception_ref = Some(r);
            }
        }

        let Some(w) = self.fields.get_mut(&key) else {
            return Ok(());
        };
        match &decision.action {
            // The side shows our write, not the person's value it replaced: that value lives
            // on in the exception.
            Action::Overwritten => {}
            _ => w.set_seen(obs.side, observed),
        }
        match &decision.action {
            Action::Converged { value } => {
                w.base = Some(Observed {
                    value: value.clone(),
                    at: obs.at,
                    source: obs.source,
                });
                if let Some(held) = w.held.take() {
                    let f = w.exception_field(&rule.crm);
                    self.batch.update_exception(ExceptionUpdate {
                        id: held,
                        crm_value: f.crm_value,
                        anaplan_value: f.anaplan_value,
                        status: ExceptionStatus::Converged,
                    });
                }
            }
            Action::Hold => {
                if let Some(held) = w.held {
                    let f = w.exception_field(&rule.crm);
                    self.batch.update_exception(ExceptionUpdate {
                        id: held,
                        crm_value: f.crm_value,
                        anaplan_value: f.anaplan_value,
                        status: ExceptionStatus::Open,
                    });
                } else {
                    w.held = exception_ref;
                }
            }
            Action::Write { to, value } | Action::Revert { to, value } => {
                let reason = if matches!(decision.action, Action::Revert { .. }) {
                    OutboxReason::Revert
                } else {
                    OutboxReason::Decision
                };
                self.queue_write(&key, rule, *to, value.clone(), reason, exception_ref);
            }
            _ => {}
        }
        if first_agreement {
            // The first reconciliation found both sides already agreeing: the shadow's base
            // (source `reconcile`, with its time) records that, and an audit row per field
            // would double the first run's writes for nothing a reviewer asks about.
            self.summary.agreed += 1;
            return Ok(());
        }
        self.batch.add_audit(NewAudit {
            key,
            at: obs.at,
            side: obs.side,
            source: obs.source,
            kind: rule.kind,
            value: obs.value,
            decision: action.to_string(),
            rule_id: Some(decision.rule_id),
            rule_hash: Some(pairing.hash.clone()),
            exception: exception_ref,
        });
        Ok(())
    }

    /// A sink's answer for one write.
    fn ack(&mut self, outbox_id: i64, outcome: WriteOutcome) -> Result<(), StoreError> {
        let Some(row) = self.store.outbox(outbox_id)? else {
            tracing::warn!(target: "plansync::engine", outbox_id, "an answer for an unknown write");
            return Ok(());
        };
        if matches!(row.state, OutboxState::Done | OutboxState::Failed) {
            return Ok(());
        }
        self.summary.acks += 1;
        let id = OutboxRef::stored(outbox_id);
        let rules = self.rules;
        let pairing = rules.pairing(&row.key.record.pairing);
        let field_rule = pairing.and_then(|p| p.field(&row.key.field));
        let same = |a: &Value, b: &Value| field_rule.map_or(a == b, |r| r.same(a, b));
        match &outcome {
            WriteOutcome::Retry { message } => {
                tracing::info!(
                    target: "plansync::engine",
                    event = "retry",
                    outbox_id,
                    field = %row.key,
                    message = %message,
                );
                self.batch.update_outbox(OutboxUpdate {
                    id,
                    state: OutboxState::Pending,
                    add_attempts: 1,
                    last_error: Some(message.clone()),
                    result_exception: None,
                });
                return Ok(());
            }
            WriteOutcome::Acked { .. } => self.batch.update_outbox(OutboxUpdate {
                id,
                state: OutboxState::Done,
                add_attempts: 1,
                last_error: None,
                result_exception: None,
            }),
            // Stored below, with the exception the write ends in.
            WriteOutcome::Rejected { .. } | WriteOutcome::Stale { .. } => {}
        }
        tracing::debug!(
            target: "plansync::engine",
            event = "write_acked",
            outbox_id,
            field = %row.key,
            target_side = %row.target,
            ok = matches!(outcome, WriteOutcome::Acked { .. }),
        );

        if lifecycle::is_lifecycle(&row.key.field) {
            if let WriteOutcome::Rejected { message } = &outcome {
                let object =
                    pairing.map_or(row.key.record.pairing.clone(), |p| p.crm_object.clone());
                let message = format!(
                    "{} of {} in {} failed: {message}",
                    row.key.field, row.key.record.crm_id, row.target
                );
                let record = row.key.record.clone();
                let exception = self.lifecycle_exception(
                    &record,
                    &object,
                    pairing,
                    ExceptionKind::WriteFailed,
                    message.clone(),
                );
                self.batch.update_outbox(OutboxUpdate {
                    id,
                    state: OutboxState::Failed,
                    add_attempts: 1,
                    last_error: Some(message),
                    result_exception: Some(exception),
                });
            }
            if let WriteOutcome::Stale { current } = &outcome {
                self.store_stale(id, &row, current, None);
            }
            return Ok(());
        }

        if let Some(pairing) = pairing {
            self.load_record(pairing, &row.key.record)?;
        }
        let target = row.target;
        let w = self.working(&row.key, row.kind);
        let pre = w.clone();
        if w.in_flight
            .as_ref()
            .is_some_and(|f| f.id == Some(outbox_id))
        {
            w.in_flight = None;
        }
        w.dirty = true;
        match &outcome {
            WriteOutcome::Acked { at } => {
                // The echo, when it came first, dates the commit exactly.
                let seen = match pre.seen(target) {
                    Some(s) if same(&s.value, &row.value) && s.source != Source::Write => s.clone(),
                    _ => Observed {
                        value: row.value.clone(),
                        at: *at,
                        source: Source::Write,
                    },
                };
                w.base = Some(Observed {
                    source: Source::Write,
                    ..seen.clone()
                });
                w.last_ack = Some(AckedWrite {
                    to: target,
                    value: row.value.clone(),
                    at: seen.at,
                    replaced: Some(row.replaced.clone()),
                });
                w.set_seen(target, seen);
            }
            WriteOutcome::Rejected { message } => {
                let field = w.exception_field(&row.key.field);
                let rule_id = pairing
                    .and_then(|p| p.field(&row.key.field))
                    .map(|r| r.id.clone());
                let object =
                    pairing.map_or(row.key.record.pairing.clone(), |p| p.crm_object.clone());
                let value = row.value.to_text().unwrap_or_else(|| "null".into());
                let exception = self.batch.add_exception(NewException {
                    kind: ExceptionKind::WriteFailed,
                    status: ExceptionStatus::Open,
                    pairing: row.key.record.pairing.clone(),
                    object,
                    crm_id: Some(row.key.record.crm_id.clone()),
                    field: Some(field),
                    rule_id,
                    rule_hash: pairing.map(|p| p.hash.clone()),
                    message: format!("writing {value} to {target} failed: {message}"),
                    at: self.now,
                });
                self.batch.update_outbox(OutboxUpdate {
                    id,
                    state: OutboxState::Failed,
                    add_attempts: 1,
                    last_error: Some(message.clone()),
                    result_exception: Some(exception),
                });
                self.summary.exceptions += 1;
                tracing::warn!(
                    target: "plansync::engine",
                    event = "exception_recorded",
                    kind = "write_failed",
                    field = %row.key,
                    message = %message,
                );
            }
            WriteOutcome::Retry { .. } | WriteOutcome::Stale { .. } => {}
        }

        // Observations that waited for this write are decided now, against the new state:
        // a newer value on the side the write came from, and an edit on the written side
        // other than the value the write meant to replace. A second write queued for the
        // field (a resolution writes both sides) goes first.
        let (Some(pairing), Some(rule)) = (pairing, pairing.and_then(|p| p.field(&row.key.field)))
        else {
            if let WriteOutcome::Stale { current } = &outcome {
                self.store_stale(id, &row, current, None);
            }
            return Ok(());
        };
        if self.store.other_open_write(&row.key, outbox_id)? {
            if let WriteOutcome::Stale { current } = &outcome {
                self.store_stale(id, &row, current, None);
            }
            return Ok(());
        }
        // The target had moved on: its new value is an edit the engine has not decided yet.
        // It goes first, so a concurrent edit is held as a conflict rather than overwritten.
        // Decided even when that value was seen already: a poll that found the value we were
        // writing took it for our write landing (an echo), which it was not.
        if let WriteOutcome::Stale { current } = &outcome {
            self.load_context(pairing, &row.key.record)?;
            let ctx = self.context(pairing, &row.key.record, &[]);
            let obs = Obs {
                side: target,
                value: current.clone(),
                at: self.now,
                ours: false,
                source: Source::Poll,
            };
            let mark = self.batch.exception_mark();
            self.observe(pairing, rule, &row.key.record, obs, &ctx, true)?;
            // What deciding the newer value led to is what became of the write: held with
            // the field's exception, or superseded when no person is needed.
            let held = self
                .batch
                .open_exception_since(mark, &row.key)
                .or_else(|| self.working(&row.key, row.kind).held);
            self.store_stale(id, &row, current, held);
        }
        let source_side = target.other();
        let mut pending = Vec::new();
        if let Some(s) = pre.seen(source_side)
            && !same(&s.value, &row.value)
        {
            pending.push((source_side, s.clone()));
        }
        if let Some(s) = pre.seen(target)
            && !same(&s.value, &row.value)
            && !same(&s.value, &row.replaced)
        {
            pending.push((target, s.clone()));
        }
        if pending.is_empty() {
            return Ok(());
        }
        self.load_context(pairing, &row.key.record)?;
        let ctx = self.context(pairing, &row.key.record, &[]);
        for (side, seen) in pending {
            let obs = Obs {
                side,
                value: seen.value,
                at: seen.at,
                ours: false,
                source: seen.source,
            };
            self.observe(pairing, rule, &row.key.record, obs, &ctx, true)?;
        }
        Ok(())
    }

    /// A resolution's write becomes the field's write in flight, if the field is free.
    fn claim(&mut self, outbox_id: i64) -> Result<(), StoreError> {
        let Some(row) = self.store.outbox(outbox_id)? else {
            return Ok(());
        };
        if row.state != OutboxState::Pending {
            return Ok(());
        }
        let rules = self.rules;
        if let Some(pairing) = rules.pairing(&row.key.record.pairing) {
            self.load_record(pairing, &row.key.record)?;
        }
        let w = self.working(&row.key, row.kind);
        if w.in_flight.is_none() {
            w.in_flight = Some(Flight {
                outbox: OutboxRef::stored(outbox_id),
                id: Some(outbox_id),
                to: row.target,
                value: row.value,
            });
            w.dirty = true;
        }
        Ok(())
    }

    fn item_ids(&mut self, items: Vec<(RecordKey, String)>) -> Result<(), StoreError> {
        for (record, item_id) in items {
            let entry = self.store.record_map_entry(&record)?;
            if entry
                .as_ref()
                .is_some_and(|e| e.anaplan_item_id.as_deref() == Some(item_id.as_str()))
            {
                continue;
            }
            self.batch.upsert_record(RecordMapUpsert {
                anaplan_code: record.crm_id.clone(),
                anaplan_item_id: Some(item_id),
                state: entry.map_or(RecordState::Active, |e| e.state),
                record: record.clone(),
            });
            self.mapped.insert(record, true);
        }
        Ok(())
    }

    /// A CRM record seen for the first time gets its `record_map` row, and its Anaplan item
    /// is created before any of its cells is written (the Anaplan sink also creates a
    /// missing item itself before writing cells; this covers a record with no value to
    /// write yet).
    fn ensure_mapped(&mut self, pairing: &Pairing, record: &RecordKey) -> Result<bool, StoreError> {
        if self.is_mapped(record)? {
            return Ok(false);
        }
        self.batch.upsert_record(RecordMapUpsert {
            record: record.clone(),
            anaplan_code: record.crm_id.clone(),
            anaplan_item_id: None,
            state: RecordState::Active,
        });
        self.mapped.insert(record.clone(), true);
        let in_anaplan = pairing.fields.iter().any(|r| {
            let key = FieldKey {
                record: record.clone(),
                field: r.crm.clone(),
            };
            self.fields
                .get(&key)
                .is_some_and(|w| w.seen_anaplan.is_some())
        });
        if !in_anaplan {
            self.lifecycle_write(record, lifecycle::ENSURE_ITEM, Side::Anaplan, Value::Null);
            // The item we create has blank cells that no planner chose. Recorded as what
            // Anaplan shows, they are nothing new when a poll reads them, so an Anaplan-owned
            // field keeps the CRM's value until a planner gives it one (which is then decided
            // as the owner's change); the CRM's value meanwhile is refused with an exception,
            // never replaced by the blank (see `decide`: no revert to a blank with no base).
            // Shared and CRM-owned fields are left unseen: their CRM value is written.
            for rule in pairing
                .fields
                .iter()
                .filter(|r| r.policy.owner == Owner::Anaplan)
            {
                let key = FieldKey {
                    record: record.clone(),
                    field: rule.crm.clone(),
                };
                let at = self.now;
                let w = self.working(&key, rule.kind);
                if w.seen_anaplan.is_none() {
                    w.set_seen(
                        Side::Anaplan,
                        Observed {
                            value: Value::Null,
                            at,
                            source: Source::Write,
                        },
                    );
                }
            }
        }
        Ok(!in_anaplan)
    }

    /// The CRM value of an Anaplan-owned field of an item plansync has just created, where
    /// Anaplan has no value to own yet: recorded as the CRM's, then by the pairing's
    /// `new_item`: held (the field's name is returned, for the item's one `lifecycle`
    /// exception) or written into the new item as its starting value. A CRM value that is
    /// itself unset needs neither.
    fn new_item_field(
        &mut self,
        pairing: &Pairing,
        rule: &FieldRule,
        record: &RecordKey,
        change: &Change,
        value: Value,
    ) -> Option<String> {
        let key = FieldKey {
            record: record.clone(),
            field: rule.crm.clone(),
        };
        let observed = Observed {
            value: value.clone(),
            at: change.committed_at,
            source: change.source,
        };
        self.working(&key, rule.kind).set_seen(Side::Crm, observed);
        if rule.is_unset(&value) {
            return None;
        }
        let decision = match pairing.lifecycle.new_item {
            NewItem::Hold => "held_new_item",
            NewItem::SeedFromCrm => {
                self.queue_write(
                    &key,
                    rule,
                    Side::Anaplan,
                    value.clone(),
                    OutboxReason::Decision,
                    None,
                );
                "seed"
            }
        };
        *self.summary.decisions.entry(decision).or_default() += 1;
        self.batch.add_audit(NewAudit {
            key,
            at: change.committed_at,
            side: Side::Crm,
            source: change.source,
            kind: rule.kind,
            value,
            decision: decision.to_string(),
            rule_id: Some(rule.id.clone()),
            rule_hash: Some(pairing.hash.clone()),
            exception: None,
        });
        (pairing.lifecycle.new_item == NewItem::Hold).then(|| rule.crm.clone())
    }

    /// Queues a write of `value` to `to` as the field's one write in flight.
    fn queue_write(
        &mut self,
        key: &FieldKey,
        rule: &FieldRule,
        to: Side,
        value: Value,
        reason: OutboxReason,
        exception: Option<ExceptionRef>,
    ) {
        let w = self.working(key, rule.kind);
        let replaced = w.seen(to).map_or(Value::Null, |s| s.value.clone());
        let outbox = self.batch.add_outbox(NewOutbox {
            key: key.clone(),
            target: to,
            kind: rule.kind,
            value: value.clone(),
            reason,
            exception,
            replaced,
        });
        let w = self.working(key, rule.kind);
        w.in_flight = Some(Flight {
            outbox,
            id: None,
            to,
            value,
        });
        w.dirty = true;
        self.summary.writes_queued += 1;
    }

    fn lifecycle_write(&mut self, record: &RecordKey, op: &str, target: Side, value: Value) {
        let kind = match value {
            Value::Bool(_) => ValueKind::Boolean,
            _ => ValueKind::Text,
        };
        self.batch.add_outbox(NewOutbox {
            key: FieldKey {
                record: record.clone(),
                field: op.to_string(),
            },
            target,
            kind,
            value,
            reason: OutboxReason::Decision,
            exception: None,
            replaced: Value::Null,
        });
        self.summary.writes_queued += 1;
    }

    fn set_record_state(
        &mut self,
        record: &RecordKey,
        state: RecordState,
    ) -> Result<(), StoreError> {
        let entry = self.store.record_map_entry(record)?;
        self.batch.upsert_record(RecordMapUpsert {
            record: record.clone(),
            anaplan_code: record.crm_id.clone(),
            anaplan_item_id: entry.and_then(|e| e.anaplan_item_id),
            state,
        });
        self.mapped.insert(record.clone(), true);
        Ok(())
    }

    fn crm_delete(&mut self, pairing: &Pairing, change: &Change) -> Result<(), StoreError> {
        let record = &change.record;
        if self
            .store
            .record_map_entry(record)?
            .is_some_and(|e| e.state == RecordState::Deleted)
        {
            return Ok(());
        }
        self.set_record_state(record, RecordState::Deleted)?;
        match pairing.lifecycle.crm_delete {
            CrmDelete::Flag => self.lifecycle_write(
                record,
                lifecycle::DELETED_FLAG,
                Side::Anaplan,
                Value::Bool(true),
            ),
            CrmDelete::DeleteItem => {
                self.lifecycle_write(record, lifecycle::DELETE_ITEM, Side::Anaplan, Value::Null)
            }
            CrmDelete::Ignore => {}
        }
        tracing::info!(
            target: "plansync::engine",
            event = "record_deleted",
            side = "crm",
            record = %record.crm_id,
            rule = ?pairing.lifecycle.crm_delete,
        );
        Ok(())
    }

    fn crm_undelete(&mut self, pairing: &Pairing, change: &Change) -> Result<(), StoreError> {
        let record = &change.record;
        self.set_record_state(record, RecordState::Active)?;
        if pairing.lifecycle.crm_undelete == CrmUndelete::Ignore {
            return Ok(());
        }
        match pairing.lifecycle.crm_delete {
            CrmDelete::Flag => self.lifecycle_write(
                record,
                lifecycle::DELETED_FLAG,
                Side::Anaplan,
                Value::Bool(false),
            ),
            CrmDelete::DeleteItem => self.restore_item(pairing, record),
            CrmDelete::Ignore => {}
        }
        Ok(())
    }

    /// Adds the record's item back and writes the CRM's values into it again.
    fn restore_item(&mut self, pairing: &Pairing, record: &RecordKey) {
        self.lifecycle_write(record, lifecycle::ENSURE_ITEM, Side::Anaplan, Value::Null);
        for rule in &pairing.fields {
            let key = FieldKey {
                record: record.clone(),
                field: rule.crm.clone(),
            };
            let Some(w) = self.fields.get_mut(&key) else {
                continue;
            };
            let Some(seen) = w.seen_crm.clone() else {
                continue;
            };
            if w.in_flight.is_some() {
                continue;
            }
            let outbox = self.batch.add_outbox(NewOutbox {
                key: key.clone(),
                target: Side::Anaplan,
                kind: rule.kind,
                value: seen.value.clone(),
                reason: OutboxReason::Decision,
                exception: None,
                replaced: Value::Null,
            });
            w.seen_anaplan = None;
            w.in_flight = Some(Flight {
                outbox,
                id: None,
                to: Side::Anaplan,
                value: seen.value,
            });
            w.dirty = true;
            self.summary.writes_queued += 1;
        }
    }

    /// Whether the record's `$ensure_item` write is queued (in this batch or stored) and not
    /// yet answered.
    fn item_being_created(&self, record: &RecordKey) -> Result<bool, StoreError> {
        let key = FieldKey {
            record: record.clone(),
            field: lifecycle::ENSURE_ITEM.to_string(),
        };
        Ok(self.batch.queues_write(&key) || self.store.has_open_write(&key)?)
    }

    fn anaplan_delete(&mut self, pairing: &Pairing, change: &Change) -> Result<(), StoreError> {
        let record = &change.record;
        // An item plansync is still creating is missing from a list read before the create
        // went out: that is no planner's delete. Nothing is forgotten, so a poll after the
        // create is answered reports the item again if it really is gone.
        if self.item_being_created(record)? {
            tracing::debug!(
                target: "plansync::engine",
                event = "delete_ignored",
                pairing = %record.pairing,
                record = %record.crm_id,
                "the item is missing because its creation is not answered yet",
            );
            return Ok(());
        }
        // Forget what Anaplan showed, so the poller stops reporting the item as gone.
        for rule in &pairing.fields {
            let key = FieldKey {
                record: record.clone(),
                field: rule.crm.clone(),
            };
            if let Some(w) = self.fields.get_mut(&key)
                && w.seen_anaplan.is_some()
            {
                w.seen_anaplan = None;
                w.dirty = true;
            }
        }
        let entry = self.store.record_map_entry(record)?;
        if entry
            .as_ref()
            .is_some_and(|e| e.state == RecordState::Deleted)
        {
            // Our own deletion (the CRM record went first) coming back.
            return Ok(());
        }
        match pairing.lifecycle.anaplan_delete {
            AnaplanDelete::Exception => {
                let message = format!(
                    "Anaplan item `{}` was removed from list {}; the CRM {} record is kept \
                     (anaplan_delete = \"exception\"): restore the item or delete the record",
                    record.crm_id, pairing.anaplan.list, pairing.crm_object
                );
                self.record_exception(
                    record,
                    &pairing.crm_object,
                    Some(pairing),
                    ExceptionKind::Lifecycle,
                    message,
                )?;
            }
            AnaplanDelete::Recreate => self.restore_item(pairing, record),
            AnaplanDelete::DeleteRecord => {
                self.set_record_state(record, RecordState::Deleted)?;
                self.lifecycle_write(record, lifecycle::DELETE_RECORD, Side::Crm, Value::Null);
            }
        }
        Ok(())
    }

    fn problem(
        &mut self,
        record: &RecordKey,
        field: Option<&str>,
        kind: ExceptionKind,
        message: String,
    ) -> Result<(), StoreError> {
        let rules = self.rules;
        let pairing = rules.pairing(&record.pairing);
        match (
            pairing,
            field.and_then(|f| pairing.and_then(|p| p.field(f))),
        ) {
            (Some(pairing), Some(rule)) => {
                self.load_record(pairing, record)?;
                self.field_exception(pairing, rule, record, kind, message)
            }
            (pairing, _) => {
                let object = pairing.map_or(record.pairing.clone(), |p| p.crm_object.clone());
                self.record_exception(record, &object, pairing, kind, message)
            }
        }
    }

    /// Whether this exception was raised already (this round, or in the store: while open,
    /// or ever with `open_only` false); if not, it is noted as raised now.
    fn already_raised(
        &mut self,
        kind: ExceptionKind,
        record: &RecordKey,
        field: Option<&str>,
        message: &str,
        open_only: bool,
    ) -> Result<bool, StoreError> {
        let once = (
            kind,
            record.clone(),
            field.map(str::to_string),
            message.to_string(),
        );
        if self.raised.contains(&once)
            || self.store.exception_exists(
                kind,
                &record.pairing,
                &record.crm_id,
                field,
                message,
                open_only,
            )?
        {
            return Ok(true);
        }
        self.raised.insert(once);
        Ok(false)
    }

    /// An exception about one field's value, raised once while the same one is open.
    fn field_exception(
        &mut self,
        pairing: &Pairing,
        rule: &FieldRule,
        record: &RecordKey,
        kind: ExceptionKind,
        message: String,
    ) -> Result<(), StoreError> {
        if self.already_raised(kind, record, Some(&rule.crm), &message, true)? {
            return Ok(());
        }
        let key = FieldKey {
            record: record.clone(),
            field: rule.crm.clone(),
        };
        let field = self.working(&key, rule.kind).exception_field(&rule.crm);
        self.batch.add_exception(NewException {
            kind,
            status: ExceptionStatus::Open,
            pairing: pairing.name.clone(),
            object: pairing.crm_object.clone(),
            crm_id: Some(record.crm_id.clone()),
            field: Some(field),
            rule_id: Some(rule.id.clone()),
            rule_hash: Some(pairing.hash.clone()),
            message,
            at: self.now,
        });
        self.summary.exceptions += 1;
        Ok(())
    }

    /// An exception about a record as a whole, raised once while the same one is open.
    fn record_exception(
        &mut self,
        record: &RecordKey,
        object: &str,
        pairing: Option<&Pairing>,
        kind: ExceptionKind,
        message: String,
    ) -> Result<(), StoreError> {
        if self.already_raised(kind, record, None, &message, true)? {
            return Ok(());
        }
        self.lifecycle_exception(record, object, pairing, kind, message);
        Ok(())
    }

    /// A handled event, on record once (whatever became of an earlier copy).
    fn notice(
        &mut self,
        record: &RecordKey,
        kind: ExceptionKind,
        message: String,
    ) -> Result<(), StoreError> {
        if self.already_raised(kind, record, None, &message, false)? {
            return Ok(());
        }
        let rules = self.rules;
        let pairing = rules.pairing(&record.pairing);
        let object = pairing.map_or(record.pairing.clone(), |p| p.crm_object.clone());
        self.summary.exceptions += 1;
        self.batch.add_exception(NewException {
            kind,
            status: ExceptionStatus::AutoResolved,
            pairing: record.pairing.clone(),
            object,
            crm_id: Some(record.crm_id.clone()),
            field: None,
            rule_id: None,
            rule_hash: pairing.map(|p| p.hash.clone()),
            message,
            at: self.now,
        });
        Ok(())
    }

    /// Stores what became of a write refused because the target had moved on.
    fn store_stale(
        &mut self,
        id: OutboxRef,
        row: &crate::store::OutboxRecord,
        current: &Value,
        held: Option<ExceptionRef>,
    ) {
        let now_shows = current.to_text().unwrap_or_else(|| "null".into());
        self.batch.update_outbox(OutboxUpdate {
            id,
            state: if held.is_some() {
                OutboxState::Held
            } else {
                OutboxState::Superseded
            },
            add_attempts: 1,
            last_error: Some(format!(
                "not written: {} had changed to {now_shows} since it was last read",
                row.target
            )),
            result_exception: held,
        });
    }

    fn lifecycle_exception(
        &mut self,
        record: &RecordKey,
        object: &str,
        pairing: Option<&Pairing>,
        kind: ExceptionKind,
        message: String,
    ) -> ExceptionRef {
        self.summary.exceptions += 1;
        tracing::warn!(
            target: "plansync::engine",
            event = "exception_recorded",
            kind = %kind.as_str(),
            record = %record.crm_id,
            message = %message,
        );
        self.batch.add_exception(NewException {
            kind,
            status: ExceptionStatus::Open,
            pairing: record.pairing.clone(),
            object: object.to_string(),
            crm_id: Some(record.crm_id.clone()),
            field: None,
            rule_id: None,
            rule_hash: pairing.map(|p| p.hash.clone()),
            message,
            at: self.now,
        })
    }
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
