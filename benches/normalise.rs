//! Measures value normalisation, `FieldRule::normalise(side, &json)`, the first thing done to
//! every field of every change: numbers at scale 2 from a JSON number and from a string, a
//! picklist value given in Anaplan's vocabulary and mapped back to the CRM's, a date, a boolean;
//! and `Value::to_text`, the canonical text stored in SQLite for every shadow and audit row.
//! Fields come from `rules/opportunity.toml` and `rules/territory.toml` (the boolean).
//!
//! Every result is checked once before measuring. Reported in values a second; there is no
//! separate target, but normalisation sits inside the CDC path, whose target is 200,000
//! events (of 3 to 20 fields) a second, so it should stay well above 2,000,000 values a second.
//!
//! ```text
//! cargo bench --bench normalise -- --warm-up-time 1 --measurement-time 5
//! ```

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plansync::model::{Side, Value};
use plansync::rules::{FieldRule, Pairing};
use serde_json::json;

fn pairing(file: &str) -> Pairing {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("rules")
        .join(file);
    match plansync::rules::load_file(&path) {
        Ok(p) => p,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

fn field<'p>(pairing: &'p Pairing, crm: &str) -> &'p FieldRule {
    match pairing.field(crm) {
        Some(f) => f,
        None => panic!("{} has no field {crm}", pairing.name),
    }
}

fn bench(c: &mut Criterion) {
    let opportunity = pairing("opportunity.toml");
    let territory = pairing("territory.toml");
    let amount = field(&opportunity, "Amount");
    let stage = field(&opportunity, "StageName");
    let close = field(&opportunity, "CloseDate");
    let active = field(&territory, "Active__c");

    // (name, field, side, raw, canonical text)
    let cases: Vec<(&str, &FieldRule, Side, serde_json::Value, &str)> = vec![
        (
            "number_json",
            amount,
            Side::Crm,
            json!(125000.5),
            "125000.50",
        ),
        (
            "number_string",
            amount,
            Side::Anaplan,
            json!("98765.432"),
            "98765.43",
        ),
        (
            "picklist_mapped",
            stage,
            Side::Anaplan,
            json!("Won"),
            "Closed Won",
        ),
        (
            "picklist_plain",
            stage,
            Side::Crm,
            json!("Negotiation"),
            "Negotiation",
        ),
        ("date", close, Side::Crm, json!("2027-01-29"), "2027-01-29"),
        ("boolean", active, Side::Anaplan, json!(true), "true"),
    ];
    for (name, f, side, raw, text) in &cases {
        let got = f.normalise(*side, raw).map(|v| v.to_text());
        assert_eq!(
            got,
            Ok(Some(text.to_string())),
            "bench case {name} on {}",
            f.id
        );
    }

    let mut group = c.benchmark_group("normalise");
    group.throughput(Throughput::Elements(1));
    for (name, f, side, raw, _) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| f.normalise(black_box(*side), black_box(raw)))
        });
    }
    group.throughput(Throughput::Elements(cases.len() as u64));
    group.bench_function("all_six", |b| {
        b.iter(|| {
            for (_, f, side, raw, _) in &cases {
                let _ = black_box(f.normalise(black_box(*side), black_box(raw)));
            }
        })
    });
    group.finish();

    let values: Vec<(&str, Value)> = cases
        .iter()
        .filter(|(name, ..)| ["number_json", "picklist_plain", "date", "boolean"].contains(name))
        .filter_map(|(name, f, side, raw, _)| Some((*name, f.normalise(*side, raw).ok()?)))
        .collect();
    let mut text = c.benchmark_group("to_text");
    text.throughput(Throughput::Elements(1));
    for (name, v) in &values {
        text.bench_function(*name, |b| b.iter(|| black_box(v).to_text()));
    }
    text.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
