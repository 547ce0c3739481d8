//! Property tests pinning the decision engine's invariants (see ARCHITECTURE.md).

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use plansync::model::{Decimal, Side, Value, ValueKind};
use plansync::rules::calendar::Calendar;
use plansync::rules::decide::{Acked, InFlight, Seen};
use plansync::rules::ruleset::{
    AnaplanField, AnaplanTarget, Blank, ConflictPolicy, FieldRule, Lifecycle, OnViolation, Owner,
    Pairing, Policy, Validation,
};
use plansync::rules::{Action, Context, FieldState, Observation, decide};

fn pairing() -> Pairing {
    Pairing {
        name: "p".into(),
        path: "p.toml".into(),
        hash: "0".repeat(64),
        crm_object: "Opportunity".into(),
        anaplan: AnaplanTarget {
            workspace: "a".repeat(32),
            model: "B".repeat(32),
            list: "L".into(),
            module: "M".into(),
        },
        flags: vec![],
        extra_crm_fields: vec![],
        lifecycle: Lifecycle::default(),
        calendar: Calendar::default(),
        windows: vec![],
        fields: vec![],
        tests: vec![],
    }
}

fn field(policy: Policy) -> FieldRule {
    FieldRule {
        id: "Opportunity.Amount".into(),
        crm: "Amount".into(),
        anaplan: AnaplanField::LineItem("Amount".into()),
        kind: ValueKind::Number { scale: 0 },
        picklist: None,
        blank: Blank::default(),
        policy,
        overrides: vec![],
        span: 0..0,
    }
}

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, minute, 0).unwrap()
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        6 => (-2i128..6).prop_map(|u| Value::Number(Decimal { units: u * 10, scale: 0 })),
        1 => prop_oneof![Just(-(10i128.pow(38) - 1)), Just(10i128.pow(38) - 1)]
            .prop_map(|u| Value::Number(Decimal { units: u, scale: 0 })),
    ]
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Crm), Just(Side::Anaplan)]
}

fn seen() -> impl Strategy<Value = Option<Seen>> {
    proptest::option::of((value(), 0u32..4).prop_map(|(value, m)| Seen { value, at: at(m) }))
}

fn state() -> impl Strategy<Value = FieldState> {
    (
        proptest::option::of(value()),
        seen(),
        seen(),
        proptest::option::weighted(
            0.2,
            (side(), value()).prop_map(|(to, value)| InFlight { to, value }),
        ),
        proptest::bool::weighted(0.15),
        proptest::option::weighted(
            0.2,
            (side(), value(), 0u32..4, proptest::option::of(value())).prop_map(
                |(to, value, m, replaced)| Acked {
                    to,
                    value,
                    at: at(m),
                    replaced,
                },
            ),
        ),
    )
        .prop_map(
            |(base, seen_crm, seen_anaplan, in_flight, held, last_ack)| FieldState {
                base,
                seen_crm,
                seen_anaplan,
                in_flight,
                held,
                last_ack,
            },
        )
}

fn observation() -> impl Strategy<Value = Observation> {
    (side(), value(), 0u32..4, any::<bool>()).prop_map(|(side, value, m, ours)| Observation {
        side,
        value,
        at: at(m),
        ours,
    })
}

fn conflict() -> impl Strategy<Value = ConflictPolicy> {
    prop_oneof![
        Just(ConflictPolicy::CrmWins),
        Just(ConflictPolicy::AnaplanWins),
        side().prop_map(|tie| ConflictPolicy::NewestWins { tie }),
        Just(ConflictPolicy::Manual),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![Just(Owner::Crm), Just(Owner::Anaplan), Just(Owner::Shared)],
        prop_oneof![Just(OnViolation::Reject), Just(OnViolation::Revert)],
        conflict(),
        proptest::option::of(-10i128..10),
        proptest::option::of(prop_oneof![Just(10i128), Just(50), Just(200)]),
    )
        .prop_map(|(owner, on_violation, c, min, pct)| Policy {
            owner,
            on_violation,
            on_conflict: (owner == Owner::Shared).then_some(c),
            validation: Validation {
                min: min.map(|u| Decimal { units: u, scale: 0 }),
                max: None,
                allowed: None,
                max_length: None,
                max_change_pct: pct.map(|u| Decimal { units: u, scale: 0 }),
            },
        })
}

fn mirror_state(s: &FieldState) -> FieldState {
    FieldState {
        base: s.base.clone(),
        seen_crm: s.seen_anaplan.clone(),
        seen_anaplan: s.seen_crm.clone(),
        in_flight: s.in_flight.clone().map(|f| InFlight {
            to: f.to.other(),
            value: f.value,
        }),
        held: s.held,
        last_ack: s.last_ack.clone().map(|a| Acked {
            to: a.to.other(),
            ..a
        }),
    }
}

fn mirror_action(a: &Action) -> Action {
    match a {
        Action::Write { to, value } => Action::Write {
            to: to.other(),
            value: value.clone(),
        },
        Action::Revert { to, value } => Action::Revert {
            to: to.other(),
            value: value.clone(),
        },
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn a_non_owner_never_writes_to_the_owner(p in policy(), st in state(), obs in observation()) {
        let pr = pairing();
        let f = field(p.clone());
        let d = decide(&pr, &f, &st, &obs, &Context::default());
        if !p.owner.allows(obs.side) {
            prop_assert_ne!(d.action.write_target().map(|t| t.0), Some(obs.side.other()), "{:?}", d);
        }
    }

    #[test]
    fn a_value_equal_to_the_base_never_writes(p in policy(), st in state(), obs in observation()) {
        let f = field(p);
        let d = decide(&pairing(), &f, &st, &obs, &Context::default());
        if st.base.as_ref() == Some(&obs.value) {
            prop_assert_eq!(d.action.write_target(), None, "{:?}", d);
        }
    }

    #[test]
    fn a_write_never_invents_a_value(p in policy(), st in state(), obs in observation()) {
        let f = field(p);
        let d = decide(&pairing(), &f, &st, &obs, &Context::default());
        if let Some((to, v)) = d.action.write_target() {
            let other = st.seen(obs.side.other()).map(|s| &s.value);
            let candidates = [Some(&obs.value), other, st.base.as_ref()];
            prop_assert!(candidates.contains(&Some(v)), "{:?}", d);
            // Writing a side the value it already shows is pointless, and never happens.
            if to == obs.side.other() {
                prop_assert_ne!(other, Some(v));
            } else {
                prop_assert_ne!(&obs.value, v);
            }
        }
    }

    #[test]
    fn nothing_is_written_while_a_write_is_in_flight_or_held(p in policy(), st in state(), obs in observation()) {
        let f = field(p);
        let d = decide(&pairing(), &f, &st, &obs, &Context::default());
        if st.in_flight.is_some() || st.held {
            prop_assert_eq!(d.action.write_target(), None, "{:?}", d);
        }
    }

    #[test]
    fn manual_never_writes_on_a_concurrent_edit(st in state(), obs in observation()) {
        let p = Policy { owner: Owner::Shared, on_violation: OnViolation::Reject, on_conflict: Some(ConflictPolicy::Manual), validation: Validation::default() };
        let f = field(p);
        let d = decide(&pairing(), &f, &st, &obs, &Context::default());
        let other_changed = match (st.seen(obs.side.other()), &st.base) {
            (Some(o), Some(b)) => !f.same(&o.value, b),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if other_changed {
            prop_assert_eq!(d.action.write_target(), None, "{:?}", d);
        }
    }

    /// Ownership decides first: a side that does not own the field never opens a
    /// conflict (a conflict invites a reviewer to push its value), whatever our last write.
    #[test]
    fn a_non_owner_never_opens_a_conflict(mut p in policy(), mut st in state(), obs in observation()) {
        st.in_flight = None;
        st.held = false;
        p.owner = if obs.side == Side::Crm { Owner::Anaplan } else { Owner::Crm };
        p.on_conflict = None;
        let f = field(p);
        let d = decide(&pairing(), &f, &st, &obs, &Context::default());
        if let Some(e) = &d.exception {
            prop_assert_ne!(e.kind, plansync::model::ExceptionKind::Conflict, "{:?}", d);
        }
        prop_assert_ne!(d.action.clone(), Action::Overwritten);
    }

    /// Anaplan has no blank number: by default a null and a 0 are one value, so no state
    /// in which the two sides show only those ever writes or raises an exception.
    #[test]
    fn null_and_zero_never_conflict_by_default(p in policy(), held in any::<bool>(), obs_null in any::<bool>(), base in proptest::option::of(prop_oneof![Just(Value::Null), Just(Value::Number(Decimal { units: 0, scale: 0 }))]), side in side()) {
        let f = field(p);
        let zero = Value::Number(Decimal { units: 0, scale: 0 });
        let (mine, theirs) = if obs_null { (Value::Null, zero) } else { (zero, Value::Null) };
        let other = Some(Seen { value: theirs, at: at(1) });
        let st = FieldState {
            base,
            seen_crm: if side == Side::Crm { None } else { other.clone() },
            seen_anaplan: if side == Side::Anaplan { None } else { other },
            held,
            ..FieldState::default()
        };
        let obs = Observation { side, value: mine, at: at(2), ours: false };
        let d = decide(&pairing(), &f, &st, &obs, &Context::default());
        prop_assert_eq!(d.action.write_target(), None, "{:?}", d);
        if !held {
            prop_assert!(d.exception.is_none(), "{:?}", d);
        }
    }

    /// `blank = "distinct"` keeps them apart: a null against a 0 is a difference.
    #[test]
    fn distinct_blanks_are_a_difference(side in side()) {
        let mut f = field(Policy { owner: Owner::Shared, on_violation: OnViolation::Reject, on_conflict: Some(ConflictPolicy::Manual), validation: Validation::default() });
        f.blank = Blank::Distinct;
        let zero = Value::Number(Decimal { units: 0, scale: 0 });
        let st = FieldState {
            base: None,
            seen_crm: (side == Side::Anaplan).then(|| Seen { value: Value::Null, at: at(1) }),
            seen_anaplan: (side == Side::Crm).then(|| Seen { value: zero.clone(), at: at(1) }),
            ..FieldState::default()
        };
        let value = if side == Side::Crm { Value::Null } else { zero };
        let d = decide(&pairing(), &f, &st, &Observation { side, value, at: at(2), ours: false }, &Context::default());
        prop_assert_eq!(d.action, Action::Hold);
    }

    #[test]
    fn every_value_not_propagated_has_an_exception(p in policy(), st in state(), obs in observation()) {
        let f = field(p);
        let d = decide(&pairing(), &f, &st, &obs, &Context::default());
        if matches!(d.action, Action::Reject | Action::Revert { .. } | Action::Invalid | Action::Hold | Action::Overwritten) {
            prop_assert!(d.exception.is_some(), "{:?}", d);
            let e = d.exception.unwrap();
            prop_assert!(!e.auto_resolved);
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_decision(p in policy(), st in state(), obs in observation()) {
        let f = field(p);
        let a = decide(&pairing(), &f, &st, &obs, &Context::default());
        let b = decide(&pairing(), &f, &st.clone(), &obs.clone(), &Context::default());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn crm_wins_and_anaplan_wins_are_mirror_images(st in state(), obs in observation(), c in conflict(), p in policy()) {
        let mirror_conflict = |c: ConflictPolicy| match c {
            ConflictPolicy::CrmWins => ConflictPolicy::AnaplanWins,
            ConflictPolicy::AnaplanWins => ConflictPolicy::CrmWins,
            ConflictPolicy::NewestWins { tie } => ConflictPolicy::NewestWins { tie: tie.other() },
            ConflictPolicy::Manual => ConflictPolicy::Manual,
        };
        let mirror_owner = |o: Owner| match o {
            Owner::Crm => Owner::Anaplan,
            Owner::Anaplan => Owner::Crm,
            Owner::Shared => Owner::Shared,
        };
        let base_policy = Policy { on_conflict: (p.owner == Owner::Shared).then_some(c), ..p };
        let mirrored_policy = Policy {
            owner: mirror_owner(base_policy.owner),
            on_conflict: base_policy.on_conflict.map(mirror_conflict),
            ..base_policy.clone()
        };
        let d = decide(&pairing(), &field(base_policy), &st, &obs, &Context::default());
        let mobs = Observation { side: obs.side.other(), ..obs.clone() };
        let md = decide(&pairing(), &field(mirrored_policy), &mirror_state(&st), &mobs, &Context::default());
        prop_assert_eq!(mirror_action(&d.action), md.action.clone());
        prop_assert_eq!(d.exception.as_ref().map(|e| (e.kind, e.auto_resolved, e.crm.clone(), e.anaplan.clone())),
                        md.exception.as_ref().map(|e| (e.kind, e.auto_resolved, e.anaplan.clone(), e.crm.clone())));
    }
}

/// The race the APIs leave open: a person's edit committed before our write's acknowledgement
/// was replaced by it, and must be recorded, not swallowed.
#[test]
fn an_overwritten_edit_is_recorded() {
    let p = Policy {
        owner: Owner::Shared,
        on_violation: OnViolation::Reject,
        on_conflict: Some(ConflictPolicy::CrmWins),
        validation: Validation::default(),
    };
    let n = |u| Value::Number(Decimal { units: u, scale: 0 });
    let st = FieldState {
        base: Some(n(10)),
        last_ack: Some(Acked {
            to: Side::Anaplan,
            value: n(10),
            at: at(3),
            replaced: Some(n(5)),
        }),
        ..FieldState::default()
    };
    let obs = Observation {
        side: Side::Anaplan,
        value: n(7),
        at: at(2),
        ours: false,
    };
    let d = decide(
        &pairing(),
        &field(p.clone()),
        &st,
        &obs,
        &Context::default(),
    );
    assert_eq!(d.action, Action::Overwritten);
    assert_eq!(
        d.exception.unwrap().kind,
        plansync::model::ExceptionKind::Conflict
    );

    // A late sighting of the value our write deliberately replaced is already on record.
    let stale = Observation {
        value: n(5),
        ..obs.clone()
    };
    let d = decide(
        &pairing(),
        &field(p.clone()),
        &st,
        &stale,
        &Context::default(),
    );
    assert_eq!(d.action, Action::Unchanged);

    // A change of our own (a trigger rewrote what we wrote) is decided as a change.
    let ours = Observation { ours: true, ..obs };
    let d = decide(&pairing(), &field(p), &st, &ours, &Context::default());
    assert_eq!(
        d.action,
        Action::Write {
            to: Side::Crm,
            value: n(7)
        }
    );
}

/// The messages of the shipped rules' decisions when the two sides were never synced (no
/// base: the first reconciliation found them different) and when they were.
#[test]
fn the_first_reconciliation_is_not_called_a_change_or_a_concurrent_edit() {
    let set = plansync::rules::load(&["rules".into()]).expect("the shipped rules compile");
    let message = |object: &str,
                   name: &str,
                   base: Option<Value>,
                   obs: Observation,
                   other: Value,
                   ctx: &Context| {
        let pairing = set.find(object).expect("pairing");
        let field = pairing.field(name).expect("field");
        let seen = Some(Seen {
            value: other,
            at: obs.at,
        });
        let mut st = FieldState {
            base,
            ..FieldState::default()
        };
        match obs.side {
            Side::Crm => st.seen_anaplan = seen,
            Side::Anaplan => st.seen_crm = seen,
        }
        let d = decide(pairing, field, &st, &obs, ctx);
        d.exception.map(|e| e.message).unwrap_or_default()
    };
    let text = |s: &str| Value::Text(s.into());
    let money = |units: i128| {
        Value::Number(Decimal {
            units: units * 100,
            scale: 2,
        })
    };
    let crm = |value: Value, at: DateTime<Utc>| Observation {
        side: Side::Crm,
        value,
        at,
        ours: false,
    };
    let mid_quarter = Utc.with_ymd_and_hms(2026, 12, 10, 15, 0, 0).unwrap();
    let quarter_end = Utc.with_ymd_and_hms(2027, 1, 27, 15, 0, 0).unwrap();
    let negotiation = Context {
        record: [("StageName".to_string(), text("Negotiation"))].into(),
        ..Context::default()
    };

    // An owned field: the CRM's value was never a change.
    assert_eq!(
        message(
            "Territory__c",
            "Region__c",
            None,
            crm(text("EMEA"), mid_quarter),
            text("AMER"),
            &Context::default()
        ),
        "Territory__c.Region__c is owned by anaplan; the CRM's `EMEA` differs from Anaplan's `AMER` at the first reconciliation and was not propagated"
    );
    assert_eq!(
        message(
            "Territory__c",
            "Region__c",
            Some(text("AMER")),
            crm(text("EMEA"), mid_quarter),
            text("AMER"),
            &Context::default()
        ),
        "Territory__c.Region__c is owned by anaplan; the change to `EMEA` on crm was not propagated"
    );

    // A shared field settled by its policy, and one held for a person.
    assert_eq!(
        message(
            "Opportunity",
            "Forecast_Override__c",
            None,
            crm(money(700), quarter_end),
            money(650),
            &negotiation
        ),
        "Opportunity.Forecast_Override__c found different at the first reconciliation: crm `700.00`, anaplan `650.00` (never synced before); crm wins by crm_wins"
    );
    assert_eq!(
        message(
            "Opportunity",
            "Forecast_Override__c",
            Some(money(500)),
            crm(money(700), quarter_end),
            money(650),
            &negotiation
        ),
        "concurrent edit of Opportunity.Forecast_Override__c: crm `700.00`, anaplan `650.00`, base `500.00`; crm wins by crm_wins"
    );
    assert_eq!(
        message(
            "Opportunity",
            "Forecast_Override__c",
            None,
            crm(money(700), mid_quarter),
            money(650),
            &negotiation
        ),
        "Opportunity.Forecast_Override__c found different at the first reconciliation: crm `700.00`, anaplan `650.00` (never synced before); held for a person to resolve"
    );
    assert_eq!(
        message(
            "Opportunity",
            "Forecast_Override__c",
            Some(money(500)),
            crm(money(700), mid_quarter),
            money(650),
            &negotiation
        ),
        "concurrent edit of Opportunity.Forecast_Override__c on both sides; held for a person to resolve"
    );
}
