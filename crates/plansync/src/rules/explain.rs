//! `plansync rules explain`: which rule decides a field of a record at a moment, and why,
//! written for the admin who has to answer "why did plansync not copy this value?".

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::decide::{Context, effective};
use super::ruleset::{
    AnaplanField, Blank, ConflictPolicy, FieldRule, NewItem, OnViolation, Owner, Pairing, Policy,
};
use crate::model::ValueKind;

/// A multi-line explanation for people.
pub fn explain(pairing: &Pairing, field: &FieldRule, at: DateTime<Utc>, ctx: &Context) -> String {
    let mut out = String::new();
    let eff = effective(pairing, field, at, ctx, true);
    let where_ = match &field.anaplan {
        AnaplanField::LineItem(n) => {
            format!("line item `{n}` of module `{}`", pairing.anaplan.module)
        }
        AnaplanField::ListProperty(n) => {
            format!("property `{n}` of list `{}`", pairing.anaplan.list)
        }
    };
    let _ = writeln!(out, "{} ↔ {where_}", field.id);
    let _ = writeln!(
        out,
        "rules: {} (sha256 {}), type {}",
        pairing.path.display(),
        pairing.short_hash(),
        field.kind.tag()
    );
    let local = at.with_timezone(&pairing.calendar.time_zone);
    let _ = writeln!(out, "at: {at} ({local} in {})", pairing.calendar.time_zone);
    let _ = writeln!(out, "field rule {}: {}", field.id, describe(&field.policy));
    if field.overrides.is_empty() {
        let _ = writeln!(out, "no `when` overrides");
    }
    let mut decided = false;
    for (i, over) in eff.trace.iter().enumerate() {
        let verdict = match (over.matched, decided) {
            (true, false) => {
                decided = true;
                "MATCHES (first match wins)"
            }
            (true, true) => "would match, but an earlier `when` already did",
            (false, _) => "does not match",
        };
        let _ = writeln!(out, "  {}. {}: {verdict}", i + 1, over.id);
        for c in &over.conditions {
            let _ = writeln!(
                out,
                "       [{}] {}",
                if c.holds { "x" } else { " " },
                c.why
            );
        }
        if let Some(o) = field.overrides.iter().find(|o| o.id == over.id) {
            let _ = writeln!(out, "       sets: {}", describe(&o.policy));
        }
    }
    let _ = writeln!(out, "decided by: {}", eff.rule_id);
    let _ = writeln!(out, "  {}", describe(eff.policy));
    if field.policy.owner == Owner::Anaplan {
        let _ = writeln!(
            out,
            "a new Anaplan item (created for a CRM record): new_item = {} ({})",
            pairing.lifecycle.new_item.as_str(),
            match pairing.lifecycle.new_item {
                NewItem::Hold => {
                    "the CRM keeps its value, one lifecycle exception per item, synced once a planner sets it"
                }
                NewItem::SeedFromCrm => "the CRM's value is written into the new item",
            }
        );
    }
    if field.kind == ValueKind::Boolean || matches!(field.kind, ValueKind::Number { .. }) {
        let _ = writeln!(
            out,
            "blank = {}: a CRM null and Anaplan's blank are {}",
            field.blank.as_str(field.kind),
            if field.blank == Blank::Empty {
                "one value"
            } else {
                "different values"
            }
        );
    }
    out
}

/// One line: owner, what a non-owner change does, the conflict policy, the validation.
pub fn describe(p: &Policy) -> String {
    let mut parts = vec![format!("owner = {}", p.owner.as_str())];
    match p.owner {
        Owner::Shared => {
            let c = match p.on_conflict {
                Some(ConflictPolicy::NewestWins { tie }) => format!("newest_wins (tie: {tie})"),
                Some(c) => c.as_str().to_string(),
                None => "?".into(),
            };
            parts.push(format!("on_conflict = {c}"));
        }
        _ => parts.push(format!(
            "non-owner changes are {}",
            match p.on_violation {
                OnViolation::Reject => "rejected",
                OnViolation::Revert => "reverted",
            }
        )),
    }
    let v = &p.validation;
    if let Some(min) = v.min {
        parts.push(format!("min {}", min.shortest()));
    }
    if let Some(max) = v.max {
        parts.push(format!("max {}", max.shortest()));
    }
    if let Some(pct) = v.max_change_pct {
        parts.push(format!("max change {}%", pct.shortest()));
    }
    if let Some(n) = v.max_length {
        parts.push(format!("at most {n} characters"));
    }
    if let Some(allowed) = &v.allowed {
        let list: Vec<&str> = allowed.iter().map(String::as_str).collect();
        parts.push(format!("allowed: {}", list.join(", ")));
    }
    parts.join("; ")
}
