//! Measures the decision engine, `plansync::rules::decide`, on one thread over the rules of
//! `rules/opportunity.toml`: a mix of 21 cases weighted like a quarter-end stream (mostly
//! unchanged fields and echoes of our own writes, then writes, and a few waits, conflicts held
//! or won by `crm_wins` inside the `quarter_end` window, reverts, newest-wins and validation
//! failures), plus each kind of case on its own to show which paths cost most.
//!
//! Every case's action is checked once before measuring, so the mix is what it says it is.
//! Target: at least 1,000,000 decisions a second on one core.
//!
//! ```text
//! cargo bench --bench decide -- --warm-up-time 1 --measurement-time 5
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plansync::model::{AckedWrite, Side, Value, ValueKind};
use plansync::rules::decide::{InFlight, Seen};
use plansync::rules::{Context, FieldRule, FieldState, Observation, Pairing, decide};

/// One observation to decide, with what it must come to.
struct Case {
    name: &'static str,
    field: usize,
    state: FieldState,
    obs: Observation,
    ctx: Context,
    expect: &'static str,
}

fn at(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
    match Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).single() {
        Some(t) => t,
        None => panic!("bad bench time {y}-{mo}-{d} {h}h"),
    }
}

fn value(field: &FieldRule, raw: &str) -> Value {
    match Value::from_text(field.kind, raw) {
        Ok(v) => v,
        Err(e) => panic!("bench value {raw} for {}: {e}", field.id),
    }
}

/// The record around the field, as the engine builds it from the CRM record and Anaplan row.
fn context(stage: &str, approved: bool) -> Context {
    let text = |s: &str| Value::Text(s.to_string());
    let mut record = BTreeMap::new();
    record.insert("Name".to_string(), text("Acme - 500 seats"));
    record.insert("StageName".to_string(), text(stage));
    record.insert(
        "Amount".to_string(),
        Value::from_text(ValueKind::Number { scale: 2 }, "125000").unwrap_or(Value::Null),
    );
    let mut flags = BTreeMap::new();
    flags.insert("Approved".to_string(), approved);
    Context { record, flags }
}

struct Builder<'p> {
    pairing: &'p Pairing,
}

impl Builder<'_> {
    fn field(&self, crm: &str) -> (usize, &FieldRule) {
        match self.pairing.fields.iter().position(|f| f.crm == crm) {
            Some(i) => (i, &self.pairing.fields[i]),
            None => panic!("opportunity.toml has no field {crm}"),
        }
    }

    /// A case where `from` reports `new` for `crm`, the base is `base` and the other side
    /// shows `other` (the base when `None`).
    #[allow(clippy::too_many_arguments)]
    fn case(
        &self,
        name: &'static str,
        crm: &str,
        when: DateTime<Utc>,
        from: Side,
        base: &str,
        other: Option<&str>,
        new: &str,
        expect: &'static str,
    ) -> Case {
        let (index, field) = self.field(crm);
        let seen = Seen {
            value: value(field, other.unwrap_or(base)),
            at: when - chrono::Duration::minutes(30),
        };
        let mut state = FieldState {
            base: Some(value(field, base)),
            ..FieldState::default()
        };
        match from.other() {
            Side::Crm => state.seen_crm = Some(seen),
            Side::Anaplan => state.seen_anaplan = Some(seen),
        }
        Case {
            name,
            field: index,
            state,
            obs: Observation {
                side: from,
                value: value(field, new),
                at: when,
                ours: false,
            },
            ctx: context("Negotiation", false),
            expect,
        }
    }
}

fn cases(pairing: &Pairing) -> Vec<Case> {
    let b = Builder { pairing };
    let mid = at(2026, 12, 10, 15);
    // The last business week of FY27 Q3 (quarter ends 31 Jan 2027): inside `quarter_end`.
    let qe = at(2027, 1, 27, 15);
    let crm = Side::Crm;
    let ana = Side::Anaplan;
    let mut all = Vec::new();

    // Unchanged: a CDC update carries every field of a compound change; most equal the base.
    for (crm_field, v) in [
        ("StageName", "Negotiation"),
        ("CloseDate", "2027-01-29"),
        ("Amount", "125000"),
        ("Probability", "60"),
        ("Name", "Acme - 500 seats"),
        ("Forecast_Override__c", "118000"),
    ] {
        all.push(b.case("unchanged", crm_field, mid, crm, v, None, v, "unchanged"));
    }

    // Writes: an owner's change goes to the other side (windows and `when`s evaluated).
    all.push(b.case("write", "Amount", mid, crm, "1000", None, "1200", "write"));
    all.push(b.case(
        "write",
        "StageName",
        mid,
        crm,
        "Negotiation",
        None,
        "Closed Won",
        "write",
    ));
    all.push(b.case(
        "write",
        "CloseDate",
        qe,
        crm,
        "2027-01-29",
        None,
        "2027-02-12",
        "write",
    ));
    all.push(b.case(
        "write",
        "Forecast_Override__c",
        mid,
        ana,
        "500",
        None,
        "650",
        "write",
    ));

    // Echoes: our own write coming back, matched against the write in flight.
    for (crm_field, from, v) in [
        ("Amount", ana, "1200"),
        ("StageName", ana, "Closed Won"),
        ("Forecast_Override__c", crm, "650"),
        ("Probability", crm, "70"),
    ] {
        let mut c = b.case("echo", crm_field, mid, from, v, None, v, "echo");
        let (_, field) = b.field(crm_field);
        c.state.base = Some(value(field, "1"));
        if field.picklist.is_some() {
            c.state.base = Some(value(field, "Proposal"));
        }
        c.state.in_flight = Some(InFlight {
            to: from,
            value: value(field, v),
        });
        c.obs.ours = true;
        all.push(c);
    }

    // Wait: a person's change while our write to the field is in flight.
    let mut wait = b.case(
        "wait",
        "Forecast_Override__c",
        mid,
        crm,
        "500",
        None,
        "610",
        "wait",
    );
    wait.state.in_flight = Some(InFlight {
        to: ana,
        value: value(b.field("Forecast_Override__c").1, "600"),
    });
    all.push(wait);

    // Conflicts: held for a person mid-quarter; won by the CRM inside `quarter_end`.
    all.push(b.case(
        "conflict_manual_hold",
        "Forecast_Override__c",
        mid,
        crm,
        "500",
        Some("650"),
        "700",
        "hold",
    ));
    all.push(b.case(
        "conflict_crm_wins_quarter_end",
        "Forecast_Override__c",
        qe,
        crm,
        "500",
        Some("650"),
        "700",
        "write",
    ));
    all.push(b.case(
        "conflict_newest_wins",
        "Probability",
        mid,
        ana,
        "40",
        Some("60"),
        "70",
        "write",
    ));

    // Revert: a planner typing over a CRM-owned amount.
    all.push(b.case("revert", "Amount", mid, ana, "1000", None, "900", "revert"));

    // Validation: a jump of more than half in the last week of the quarter.
    all.push(b.case(
        "validation",
        "Amount",
        qe,
        crm,
        "1000",
        None,
        "2000",
        "invalid",
    ));

    // A late sighting that our acknowledged write replaced a person's edit.
    let mut over = b.case(
        "overwritten",
        "Probability",
        mid,
        ana,
        "40",
        None,
        "55",
        "overwritten",
    );
    over.state.last_ack = Some(AckedWrite {
        to: ana,
        value: value(b.field("Probability").1, "40"),
        at: mid + chrono::Duration::seconds(30),
        replaced: Some(value(b.field("Probability").1, "35")),
    });
    all.push(over);
    all
}

/// Decides every case once; the sum of the rule id lengths keeps the work observable.
fn run(pairing: &Pairing, cases: &[Case]) -> usize {
    let mut n = 0;
    for c in cases {
        let d = decide(pairing, &pairing.fields[c.field], &c.state, &c.obs, &c.ctx);
        n += d.rule_id.len();
        black_box(d);
    }
    n
}

fn bench(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/opportunity.toml");
    let pairing = match plansync::rules::load_file(&path) {
        Ok(p) => p,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let cases = cases(&pairing);
    for case in &cases {
        let d = decide(
            &pairing,
            &pairing.fields[case.field],
            &case.state,
            &case.obs,
            &case.ctx,
        );
        assert_eq!(
            d.action.name(),
            case.expect,
            "bench case {} on {}: {d:?}",
            case.name,
            pairing.fields[case.field].id
        );
    }

    let mut mix = c.benchmark_group("decide");
    mix.throughput(Throughput::Elements(cases.len() as u64));
    mix.bench_function("mix", |b| {
        b.iter(|| run(black_box(&pairing), black_box(&cases)))
    });
    mix.finish();

    let mut each = c.benchmark_group("decide_case");
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.dedup();
    for name in names {
        let subset: Vec<&Case> = cases.iter().filter(|c| c.name == name).collect();
        each.throughput(Throughput::Elements(subset.len() as u64));
        each.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0;
                for c in &subset {
                    let d = decide(
                        black_box(&pairing),
                        &pairing.fields[c.field],
                        &c.state,
                        &c.obs,
                        &c.ctx,
                    );
                    n += d.rule_id.len();
                    black_box(d);
                }
                n
            })
        });
    }
    each.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
