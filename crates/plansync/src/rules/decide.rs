//! The decision engine: what to do with one observed value of one field.
//!
//! A pure function of the field's rule, its state (base, what each side last showed, the
//! write in flight, a held conflict), the observation and the record's context. It reads no
//! clock (the observation carries its time), does no IO, never fails and never panics: every
//! outcome, including "this cannot be propagated", is a value, and every value that is not
//! propagated comes with the exception that says why. See `decisions.md` in the design notes
//! and ARCHITECTURE.md for the state machine this implements.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::calendar::Span;
use super::ruleset::{
    Condition, ConflictPolicy, FieldRule, OnViolation, Owner, Pairing, Policy, Validation,
};
use crate::model::{Decimal, ExceptionKind, Side, Value};

/// A value observed on one side, with when it was committed (or polled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub value: Value,
    pub at: DateTime<Utc>,
}

/// A write of ours that has not been acknowledged yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub to: Side,
    pub value: Value,
}

/// Our last acknowledged write to the field (stored in the shadow beside the state).
pub use crate::model::AckedWrite as Acked;

/// What plansync knows of one field of one record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldState {
    /// The last value both sides agreed on; `None` before the first sync.
    pub base: Option<Value>,
    pub seen_crm: Option<Seen>,
    pub seen_anaplan: Option<Seen>,
    pub in_flight: Option<InFlight>,
    /// An open `conflict` exception blocks writes to the field until resolved.
    pub held: bool,
    pub last_ack: Option<Acked>,
}

impl FieldState {
    pub fn seen(&self, side: Side) -> Option<&Seen> {
        match side {
            Side::Crm => self.seen_crm.as_ref(),
            Side::Anaplan => self.seen_anaplan.as_ref(),
        }
    }
}

/// A value reported by one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub side: Side,
    pub value: Value,
    pub at: DateTime<Utc>,
    /// The change was made by plansync's integration user / client id.
    pub ours: bool,
}

/// The record around the field, for `when` conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The record's current CRM values (CRM vocabulary), by CRM field name.
    pub record: BTreeMap<String, Value>,
    /// Boolean line items of the record's Anaplan row, by line item name; absent = false.
    pub flags: BTreeMap<String, bool>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Our own write coming back.
    Echo,
    /// The value equals the base: nothing changed.
    Unchanged,
    /// A write to this field is in flight: decide again when it is acknowledged.
    Wait,
    /// Write `value` to side `to`.
    Write { to: Side, value: Value },
    /// Both sides now hold the same value: it becomes the base (and a held conflict closes).
    Converged { value: Value },
    /// A conflict is (or stays) held for a person.
    Hold,
    /// The side that changed the field does not own it.
    Reject,
    /// The non-owner changed it: write the owner's value back to that side.
    Revert { to: Side, value: Value },
    /// The value breaks a validation rule.
    Invalid,
    /// A person's edit was replaced by our write before we saw it.
    Overwritten,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Echo => "echo",
            Action::Unchanged => "unchanged",
            Action::Wait => "wait",
            Action::Write { .. } => "write",
            Action::Converged { .. } => "converged",
            Action::Hold => "hold",
            Action::Reject => "reject",
            Action::Revert { .. } => "revert",
            Action::Invalid => "invalid",
            Action::Overwritten => "overwritten",
        }
    }

    pub const NAMES: [&'static str; 10] = [
        "echo",
        "unchanged",
        "wait",
        "write",
        "converged",
        "hold",
        "reject",
        "revert",
        "invalid",
        "overwritten",
    ];

    /// The side written to, if any. At most one, by construction.
    pub fn write_target(&self) -> Option<(Side, &Value)> {
        match self {
            Action::Write { to, value } | Action::Revert { to, value } => Some((*to, value)),
            _ => None,
        }
    }
}

/// An exception implied by a decision, to be stored for review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionDraft {
    pub kind: ExceptionKind,
    /// Recorded as `auto_resolved` rather than `open` (the policy settled it; kept as audit).
    pub auto_resolved: bool,
    pub message: String,
    pub crm: Option<Value>,
    pub anaplan: Option<Value>,
    pub base: Option<Value>,
}

/// The outcome for one observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The rule that decided: the field's id or the id of the `when` that matched.
    pub rule_id: String,
    pub exception: Option<ExceptionDraft>,
}

/// How one `when` fared against a context (for `rules explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionTrace {
    pub condition: Condition,
    pub holds: bool,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideTrace {
    pub id: String,
    pub conditions: Vec<ConditionTrace>,
    pub matched: bool,
}

/// The effective rule for a field at a moment, and how it was chosen.
#[derive(Debug, Clone)]
pub struct Effective<'r> {
    pub rule_id: &'r str,
    pub policy: &'r Policy,
    pub trace: Vec<OverrideTrace>,
}

/// Chooses the policy in force: the first `when` whose conditions all hold, else the field's.
/// With `full_trace` every override is evaluated (for `rules explain`); otherwise evaluation
/// stops at the first match.
pub fn effective<'r>(
    pairing: &'r Pairing,
    field: &'r FieldRule,
    at: DateTime<Utc>,
    ctx: &Context,
    full_trace: bool,
) -> Effective<'r> {
    let mut trace = Vec::new();
    let mut chosen: Option<(&'r str, &'r Policy)> = None;
    for over in &field.overrides {
        if chosen.is_some() && !full_trace {
            break;
        }
        // Filled only for a trace: deciding need not clone each condition (a `record`
        // condition's set is a whole BTreeSet) on every observation.
        let mut conditions = Vec::new();
        let mut all = true;
        for cond in &over.conditions {
            let (holds, why) = condition_holds(pairing, cond, at, ctx, full_trace);
            all &= holds;
            if full_trace {
                conditions.push(ConditionTrace {
                    condition: cond.clone(),
                    holds,
                    why,
                });
            } else if !all {
                break;
            }
        }
        if all && chosen.is_none() {
            chosen = Some((&over.id, &over.policy));
        }
        if full_trace {
            trace.push(OverrideTrace {
                id: over.id.clone(),
                conditions,
                matched: all,
            });
        }
    }
    let (rule_id, policy) = chosen.unwrap_or((&field.id, &field.policy));
    Effective {
        rule_id,
        policy,
        trace,
    }
}

fn condition_holds(
    pairing: &Pairing,
    cond: &Condition,
    at: DateTime<Utc>,
    ctx: &Context,
    explain: bool,
) -> (bool, String) {
    match cond {
        Condition::Window(name) => {
            let Some(window) = pairing.window(name) else {
                // Unreachable for a compiled rule set; an unknown window never matches.
                return (false, format!("window `{name}` is not defined"));
            };
            let (inside, span) = pairing.calendar.in_window(window, at);
            let why = if explain {
                let day = pairing.calendar.local_date(at);
                match span {
                    Some(Span { first, last }) => format!(
                        "{day} ({}) is {} window `{name}`, {first} to {last}",
                        pairing.calendar.time_zone,
                        if inside { "inside" } else { "outside" },
                    ),
                    None => format!("window `{name}` has no span in the period of {day}"),
                }
            } else {
                String::new()
            };
            (inside, why)
        }
        Condition::Record { field, values } => {
            let current = ctx.record.get(field).unwrap_or(&Value::Null);
            let holds = values.contains(current);
            let why = if explain {
                format!(
                    "{field} is `{current}`, {} the set",
                    if holds { "in" } else { "not in" }
                )
            } else {
                String::new()
            };
            (holds, why)
        }
        Condition::AnaplanFlag(flag) => {
            let holds = ctx.flags.get(flag).copied().unwrap_or(false);
            let why = if explain {
                format!("Anaplan flag `{flag}` is {holds}")
            } else {
                String::new()
            };
            (holds, why)
        }
    }
}

/// Decides what to do with `obs` for `field`. Never fails.
pub fn decide(
    pairing: &Pairing,
    field: &FieldRule,
    state: &FieldState,
    obs: &Observation,
    ctx: &Context,
) -> Decision {
    let s = obs.side;
    let o = s.other();
    let v = &obs.value;
    let other = state.seen(o);
    let values = |crm: Option<&Value>, anaplan: Option<&Value>| (crm.cloned(), anaplan.cloned());
    let (crm_now, anaplan_now) = match s {
        Side::Crm => values(Some(v), other.map(|x| &x.value)),
        Side::Anaplan => values(other.map(|x| &x.value), Some(v)),
    };
    let draft = |kind: ExceptionKind, auto: bool, message: String| ExceptionDraft {
        kind,
        auto_resolved: auto,
        message,
        crm: crm_now.clone(),
        anaplan: anaplan_now.clone(),
        base: state.base.clone(),
    };
    let plain = |action: Action, rule_id: &str| Decision {
        action,
        rule_id: rule_id.to_string(),
        exception: None,
    };

    // 1. One writer per field: while our write is in flight, only its echo is settled now.
    if let Some(flight) = &state.in_flight {
        if flight.to == s && field.same(&flight.value, v) {
            return plain(Action::Echo, &field.id);
        }
        return plain(Action::Wait, &field.id);
    }

    // 2. A held conflict: nothing is written until a person resolves it, unless the two
    //    sides come to agree by themselves.
    if state.held {
        if other.is_some_and(|x| field.same(&x.value, v)) {
            return plain(Action::Converged { value: v.clone() }, &field.id);
        }
        return Decision {
            action: Action::Hold,
            rule_id: field.id.clone(),
            exception: Some(draft(
                ExceptionKind::Conflict,
                false,
                format!("{} is held for review; {s} now shows `{v}`", field.id),
            )),
        };
    }

    // 3. Equal to the base: an echo of our acknowledged write, or no change at all.
    if state.base.as_ref().is_some_and(|b| field.same(b, v)) {
        return plain(Action::Unchanged, &field.id);
    }

    // A person's value committed before our write to this side, and different from it: our
    // write replaced it. It cannot be undone silently; record it. Not for a change of our own
    // (a trigger changing what we wrote is a change to decide), nor for a late sighting of the
    // value the write was meant to replace.
    if let Some(ack) = &state.last_ack
        && ack.to == s
        && !obs.ours
        && obs.at < ack.at
        && !field.same(&ack.value, v)
    {
        if ack.replaced.as_ref().is_some_and(|r| field.same(r, v)) {
            return plain(Action::Unchanged, &field.id);
        }
        // Ownership decides first: a non-owner's edit that our write replaced was not the
        // owner's to keep, and a conflict would invite a reviewer to push a value the rules
        // reject. It is recorded as the violation it was, with nothing to write.
        let eff = effective(pairing, field, obs.at, ctx, false);
        if !eff.policy.owner.allows(s) {
            return Decision {
                action: Action::Reject,
                rule_id: eff.rule_id.to_string(),
                exception: Some(draft(
                    ExceptionKind::OwnershipViolation,
                    false,
                    format!(
                        "{} is owned by {}; the edit to `{v}` on {s} at {} was not propagated (our write of `{}`, acknowledged at {}, replaced it)",
                        field.id,
                        eff.policy.owner.as_str(),
                        obs.at,
                        ack.value,
                        ack.at
                    ),
                )),
            };
        }
        return Decision {
            action: Action::Overwritten,
            rule_id: field.id.clone(),
            exception: Some(draft(
                ExceptionKind::Conflict,
                false,
                format!(
                    "overwritten concurrent edit: {s} had `{v}` at {}, replaced by our write of `{}` acknowledged at {}",
                    obs.at, ack.value, ack.at
                ),
            )),
        };
    }

    // The other side already shows this value: both agree, whoever owns the field, and
    // that agreement is the new base. (Also how the first sight of a record settles.)
    if other.is_some_and(|x| field.same(&x.value, v)) {
        return plain(Action::Converged { value: v.clone() }, &field.id);
    }
    if state.base.is_none() && other.is_none() && v.is_null() {
        return plain(Action::Unchanged, &field.id);
    }

    // 4. The rule in force for this record at this moment.
    let eff = effective(pairing, field, obs.at, ctx, false);
    let policy = eff.policy;
    let rule_id = eff.rule_id;

    // 5. The side that changed it does not own it.
    if !policy.owner.allows(s) {
        let owner_value = state
            .base
            .clone()
            .or_else(|| other.map(|x| x.value.clone()));
        // With no base the two sides were never synced: the value is what this side held when
        // it was first read, not a change.
        let message = match (&state.base, other) {
            (None, Some(x)) => format!(
                "{} is owned by {}; {} `{v}` differs from {} `{}` at the first reconciliation and was not propagated",
                field.id,
                policy.owner.as_str(),
                possessive(s),
                possessive(o),
                x.value
            ),
            (None, None) => format!(
                "{} is owned by {}; {} `{v}` (never synced before) was not propagated",
                field.id,
                policy.owner.as_str(),
                possessive(s)
            ),
            (Some(_), _) => format!(
                "{} is owned by {}; the change to `{v}` on {s} was not propagated",
                field.id,
                policy.owner.as_str()
            ),
        };
        // A blank the owner was never seen to agree on (an item just created, an empty
        // cell at the first run) is not the owner's value: putting it back would destroy
        // the non-owner's value on a guess. Refused with the exception instead.
        let action = match (policy.on_violation, owner_value) {
            (OnViolation::Revert, Some(value))
                if state.base.is_some() || !field.is_unset(&value) =>
            {
                Action::Revert { to: s, value }
            }
            _ => Action::Reject,
        };
        return Decision {
            action,
            rule_id: rule_id.to_string(),
            exception: Some(draft(ExceptionKind::OwnershipViolation, false, message)),
        };
    }

    // 6./7. Did the other side change it too (relative to the base)?
    // Only a shared field has concurrent edits: an owner's change simply wins (a change the
    // non-owner made earlier was already recorded as a violation when it was seen).
    let concurrent = policy.owner == Owner::Shared
        && match (other, &state.base) {
            (Some(x), Some(base)) => !field.same(&x.value, base),
            // With no base, two different values on the two sides conflict.
            (Some(_), None) => true,
            (None, _) => false,
        };
    let Some(x) = other.filter(|_| concurrent) else {
        return validated_write(field, policy, state, o, v.clone(), rule_id, None, &draft);
    };
    let winner = match policy.on_conflict {
        Some(ConflictPolicy::CrmWins) => Side::Crm,
        Some(ConflictPolicy::AnaplanWins) => Side::Anaplan,
        Some(ConflictPolicy::NewestWins { tie }) => match obs.at.cmp(&x.at) {
            std::cmp::Ordering::Greater => s,
            std::cmp::Ordering::Less => o,
            std::cmp::Ordering::Equal => tie,
        },
        // `compile` gives every shared policy an `on_conflict`; holding is the safe answer
        // should one ever be missing.
        None | Some(ConflictPolicy::Manual) => {
            return held(field, rule_id, state, &crm_now, &anaplan_now, &draft);
        }
    };
    let values = both_values(state, &crm_now, &anaplan_now);
    let conflict_policy = policy.on_conflict.map_or("", |p| p.as_str());
    let note = match state.base {
        Some(_) => format!(
            "concurrent edit of {}: {values}; {winner} wins by {conflict_policy}",
            field.id
        ),
        None => format!(
            "{} found different at the first reconciliation: {values}; {winner} wins by {conflict_policy}",
            field.id
        ),
    };
    let (target, value) = if winner == s {
        (o, v.clone())
    } else {
        (s, x.value.clone())
    };
    validated_write(
        field,
        policy,
        state,
        target,
        value,
        rule_id,
        Some(note),
        &draft,
    )
}

/// "the CRM's" / "Anaplan's", for messages that compare the two sides' values.
fn possessive(side: Side) -> &'static str {
    match side {
        Side::Crm => "the CRM's",
        Side::Anaplan => "Anaplan's",
    }
}

/// Both sides' values and the base, for a conflict's message. With no base the two sides
/// were never synced: the values were found different when both were first read, which is
/// not a concurrent edit, and there is no base to show.
fn both_values(state: &FieldState, crm: &Option<Value>, anaplan: &Option<Value>) -> String {
    let crm = crm.as_ref().unwrap_or(&Value::Null);
    let anaplan = anaplan.as_ref().unwrap_or(&Value::Null);
    match &state.base {
        Some(base) => format!("crm `{crm}`, anaplan `{anaplan}`, base `{base}`"),
        None => format!("crm `{crm}`, anaplan `{anaplan}` (never synced before)"),
    }
}

fn held(
    field: &FieldRule,
    rule_id: &str,
    state: &FieldState,
    crm: &Option<Value>,
    anaplan: &Option<Value>,
    draft: &dyn Fn(ExceptionKind, bool, String) -> ExceptionDraft,
) -> Decision {
    let message = match state.base {
        Some(_) => format!(
            "concurrent edit of {} on both sides; held for a person to resolve",
            field.id
        ),
        None => format!(
            "{} found different at the first reconciliation: {}; held for a person to resolve",
            field.id,
            both_values(state, crm, anaplan)
        ),
    };
    Decision {
        action: Action::Hold,
        rule_id: rule_id.to_string(),
        exception: Some(draft(ExceptionKind::Conflict, false, message)),
    }
}

/// A write of `value` to `to`, if the value passes validation. `conflict_note` records an
/// auto-resolved conflict beside the write.
#[allow(clippy::too_many_arguments)]
fn validated_write(
    field: &FieldRule,
    policy: &Policy,
    state: &FieldState,
    to: Side,
    value: Value,
    rule_id: &str,
    conflict_note: Option<String>,
    draft: &dyn Fn(ExceptionKind, bool, String) -> ExceptionDraft,
) -> Decision {
    if let Some(problem) = invalid(field, &policy.validation, state.base.as_ref(), &value) {
        return Decision {
            action: Action::Invalid,
            rule_id: rule_id.to_string(),
            exception: Some(draft(ExceptionKind::Validation, false, problem)),
        };
    }
    Decision {
        action: Action::Write { to, value },
        rule_id: rule_id.to_string(),
        exception: conflict_note.map(|note| draft(ExceptionKind::Conflict, true, note)),
    }
}

/// Why `value` breaks the field's validation, if it does.
pub fn invalid(
    field: &FieldRule,
    rules: &Validation,
    base: Option<&Value>,
    value: &Value,
) -> Option<String> {
    match value {
        Value::Number(n) => {
            if let Some(min) = rules.min.filter(|m| n.units < m.units) {
                return Some(format!(
                    "{}: `{n}` is below the minimum {}",
                    field.id,
                    min.shortest()
                ));
            }
            if let Some(max) = rules.max.filter(|m| n.units > m.units) {
                return Some(format!(
                    "{}: `{n}` is above the maximum {}",
                    field.id,
                    max.shortest()
                ));
            }
            if let (Some(pct), Some(Value::Number(b))) = (rules.max_change_pct, base)
                && exceeds_change(*b, *n, pct)
            {
                return Some(format!(
                    "{}: `{n}` changes `{b}` by more than {}%",
                    field.id,
                    pct.shortest()
                ));
            }
            None
        }
        Value::Text(t) => {
            if let Some(pick) = &field.picklist
                && !pick.values.contains(t)
            {
                return Some(format!(
                    "{}: `{t}` is not a value of its picklist",
                    field.id
                ));
            }
            if let Some(max) = rules.max_length
                && t.chars().count() > max as usize
            {
                return Some(format!(
                    "{}: the value has {} characters, more than the {max} the field holds",
                    field.id,
                    t.chars().count()
                ));
            }
            match &rules.allowed {
                Some(allowed) if !allowed.contains(t) => {
                    Some(format!("{}: `{t}` is not an allowed value", field.id))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// `|new - base| / |base| > pct / 100`, in exact integer arithmetic where it fits. A base of
/// zero has no relative change to speak of and is never limited.
fn exceeds_change(base: Decimal, new: Decimal, pct: Decimal) -> bool {
    if base.units == 0 {
        return false;
    }
    let delta = new.units.abs_diff(base.units);
    let base_abs = base.units.unsigned_abs();
    // delta * 100 * 10^pct.scale > pct.units * base_abs
    let lhs = 10u128
        .checked_pow(u32::from(pct.scale))
        .and_then(|f| delta.checked_mul(100)?.checked_mul(f));
    let rhs = pct.units.unsigned_abs().checked_mul(base_abs);
    match (lhs, rhs) {
        (Some(l), Some(r)) => l > r,
        _ => {
            let ratio = (new.to_f64() - base.to_f64()).abs() / base.to_f64().abs();
            ratio * 100.0 > pct.to_f64()
        }
    }
}
