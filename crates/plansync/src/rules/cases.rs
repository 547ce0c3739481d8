//! The test cases rule files carry (`[[test]]`), run by `plansync rules test`: an admin
//! states "given this base and this change at this time, expect this decision" next to the
//! rules, so a precedence change is proven before it is deployed.

use super::decide::{Context, Decision, FieldState, InFlight, Observation, Seen, decide};
use super::ruleset::{Pairing, TestCase};

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    pub name: String,
    pub decision: Decision,
    /// What did not match, one line each; empty when the case passed.
    pub mismatches: Vec<String>,
}

impl CaseOutcome {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Runs every test case of a pairing.
pub fn run(pairing: &Pairing) -> Vec<CaseOutcome> {
    pairing
        .tests
        .iter()
        .map(|case| run_case(pairing, case))
        .collect()
}

fn run_case(pairing: &Pairing, case: &TestCase) -> CaseOutcome {
    let Some(field) = pairing.field(&case.field) else {
        // `compile` only accepts cases for mapped fields.
        return CaseOutcome {
            name: case.name.clone(),
            decision: Decision {
                action: super::Action::Unchanged,
                rule_id: String::new(),
                exception: None,
            },
            mismatches: vec![format!("field `{}` is not mapped", case.field)],
        };
    };
    let other_value = case.other.clone().or_else(|| case.base.clone());
    let other = other_value.map(|value| Seen {
        value,
        at: case.other_at.unwrap_or(case.at),
    });
    let mut state = FieldState {
        base: case.base.clone(),
        in_flight: case
            .in_flight
            .clone()
            .map(|(to, value)| InFlight { to, value }),
        held: case.held,
        last_ack: case.last_ack.clone(),
        ..FieldState::default()
    };
    match case.from.other() {
        crate::model::Side::Crm => state.seen_crm = other,
        crate::model::Side::Anaplan => state.seen_anaplan = other,
    }
    let obs = Observation {
        side: case.from,
        value: case.value.clone(),
        at: case.at,
        ours: case.ours,
    };
    let ctx = Context {
        record: case.record.clone(),
        flags: case.flags.clone(),
    };
    let decision = decide(pairing, field, &state, &obs, &ctx);

    let mut mismatches = Vec::new();
    let expect = &case.expect;
    if decision.action.name() != expect.action {
        mismatches.push(format!(
            "action: expected `{}`, got `{}`",
            expect.action,
            decision.action.name()
        ));
    }
    let target = decision.action.write_target();
    if let Some(to) = expect.to
        && target.map(|(side, _)| side) != Some(to)
    {
        mismatches.push(format!(
            "write to: expected {to}, got {}",
            target.map_or("no write".to_string(), |(s, _)| s.to_string())
        ));
    }
    if let Some(value) = &expect.value {
        let got = match &decision.action {
            super::Action::Converged { value } => Some(value),
            other => other.write_target().map(|(_, v)| v),
        };
        if got != Some(value) {
            mismatches.push(format!(
                "value: expected `{value}`, got {}",
                got.map_or("none".to_string(), |v| format!("`{v}`"))
            ));
        }
    }
    if let Some(kind) = &expect.exception {
        let got = decision.exception.as_ref().map(|e| e.kind);
        if got != *kind {
            let show = |k: Option<crate::model::ExceptionKind>| {
                k.map_or("none".to_string(), |k| k.to_string())
            };
            mismatches.push(format!(
                "exception: expected {}, got {}",
                show(*kind),
                show(got)
            ));
        }
    }
    if let Some(rule) = &expect.rule
        && &decision.rule_id != rule
    {
        mismatches.push(format!(
            "rule: expected `{rule}`, got `{}`",
            decision.rule_id
        ));
    }
    CaseOutcome {
        name: case.name.clone(),
        decision,
        mismatches,
    }
}
