//! Measures `plansync::store::Store::commit`, the engine's group commit, on a real SQLite file
//! (WAL, `synchronous = NORMAL`, as `Store::open` sets it) in a temporary directory: batches of
//! 2,000 shadow upserts (200 records × 10 fields, numbers at scale 2, all three observed
//! values set) plus the CDC checkpoint each batch carries. Three cases: new rows; updates of
//! rows already stored (20,000 fields stored, updated 2,000 at a time in turn); and updates
//! with one audit row each, as every decided observation writes one.
//!
//! Only the commit is timed: each batch is built, with new values, outside the measurement.
//! Reported in shadow upserts a second. Target: at least 100,000 shadow updates a second.
//!
//! ```text
//! cargo bench --bench store_commit -- --warm-up-time 1 --measurement-time 5
//! ```

use chrono::{DateTime, TimeZone, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use plansync::model::{Position, Side, Source, Value, ValueKind};
use plansync::store::{Batch, FieldKey, NewAudit, Observed, ShadowUpsert, Store};

const BATCH: usize = 2_000;
const FIELDS: usize = 10;
/// Fields stored before the update cases run: ten batches' worth.
const STORED: usize = 20_000;
const KIND: ValueKind = ValueKind::Number { scale: 2 };

fn key(n: usize) -> FieldKey {
    FieldKey::new(
        "opportunity",
        format!("006{:015}", n / FIELDS),
        format!("Field_{}__c", n % FIELDS),
    )
}

/// A batch upserting fields `first..first + BATCH`, with values that depend on `round` so an
/// update really changes them; with `audit`, one audit row per field.
fn batch(at: DateTime<Utc>, first: usize, round: usize, audit: bool) -> Batch {
    let mut batch = Batch::new(at);
    for n in first..first + BATCH {
        let key = key(n);
        let value = Value::from_text(KIND, &format!("{}.{:02}", n * 7 + round, round % 100))
            .expect("a number");
        let seen = Some(Observed {
            value: value.clone(),
            at,
            source: Source::Stream,
        });
        if audit {
            batch.add_audit(NewAudit {
                key: key.clone(),
                at,
                side: Side::Crm,
                source: Source::Stream,
                kind: KIND,
                value,
                decision: "write".into(),
                rule_id: Some("Opportunity.Amount".into()),
                rule_hash: Some("0123456789abcdef".into()),
                exception: None,
            });
        }
        batch.upsert_shadow(ShadowUpsert {
            key,
            kind: KIND,
            base: seen.clone(),
            seen_crm: seen.clone(),
            seen_anaplan: seen,
            in_flight: None,
            held: None,
            last_ack: None,
        });
    }
    batch.set_checkpoint(
        "/data/OpportunityChangeEvent",
        Position::Replay {
            channel: "/data/OpportunityChangeEvent".into(),
            replay_id: (4_567_000 + round).to_string(),
        },
    );
    batch
}

fn bench(c: &mut Criterion) {
    let at = Utc
        .with_ymd_and_hms(2027, 1, 27, 15, 0, 0)
        .single()
        .expect("a valid time");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut group = c.benchmark_group("store_commit");
    group.throughput(Throughput::Elements(BATCH as u64));
    // A commit takes milliseconds: fewer samples keep a run within the measurement time.
    group.sample_size(20);

    {
        let mut store = Store::open(dir.path().join("insert.db")).expect("open the store");
        let mut round = 0;
        group.bench_function("insert_2000", |b| {
            b.iter_batched(
                || {
                    round += 1;
                    batch(at, round * BATCH, round, false)
                },
                |batch| store.commit(&batch).expect("commit"),
                BatchSize::PerIteration,
            )
        });
    }

    for (name, audit) in [("update_2000", false), ("update_2000_audit", true)] {
        let mut store = Store::open(dir.path().join(format!("{name}.db"))).expect("open");
        for first in (0..STORED).step_by(BATCH) {
            store
                .commit(&batch(at, first, 0, false))
                .expect("fill the store");
        }
        let mut round = 0;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    round += 1;
                    batch(at, (round * BATCH) % STORED, round, audit)
                },
                |batch| store.commit(&batch).expect("commit"),
                BatchSize::PerIteration,
            )
        });
        let stored = store
            .shadow(&key(STORED - 1))
            .expect("read back")
            .map(|s| s.base.map(|o| o.value));
        assert!(
            matches!(stored, Some(Some(Value::Number(_)))),
            "{name}: {stored:?}"
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
