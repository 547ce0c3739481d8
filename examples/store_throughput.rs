//! Measures how many shadow updates per second `Store::commit` sustains, in batches of a few
//! thousand (the engine's group commit). Run with:
//!
//! ```text
//! cargo run --release --example store_throughput [records] [fields] [batch]
//! ```

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use plansync::model::{Source, Value, ValueKind};
use plansync::store::{Batch, FieldKey, NewAudit, Observed, ShadowUpsert, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let records = args.next().transpose()?.unwrap_or(20_000);
    let fields = args.next().transpose()?.unwrap_or(10);
    let batch_size = args.next().transpose()?.unwrap_or(2_000);

    let dir = tempfile::tempdir()?;
    let mut store = Store::open(dir.path().join("bench.db"))?;
    let kind = ValueKind::Number { scale: 2 };
    let keys: Vec<FieldKey> = (0..records)
        .flat_map(|r| {
            (0..fields).map(move |f| {
                FieldKey::new(
                    "opportunity",
                    format!("006{r:015}"),
                    format!("Field_{f}__c"),
                )
            })
        })
        .collect();
    let at = Utc
        .with_ymd_and_hms(2026, 11, 2, 10, 0, 0)
        .single()
        .ok_or("bad time")?;

    for (pass, with_audit) in [("insert", false), ("update", false), ("update+audit", true)] {
        let mut commit_time = Duration::ZERO;
        let started = Instant::now();
        for (n, chunk) in keys.chunks(batch_size).enumerate() {
            let mut batch = Batch::new(at);
            for (i, key) in chunk.iter().enumerate() {
                let value = Value::from_text(kind, &format!("{}.{:02}", n * 7 + i, i % 100))?;
                let seen = Some(Observed {
                    value: value.clone(),
                    at,
                    source: Source::Stream,
                });
                batch.upsert_shadow(ShadowUpsert {
                    key: key.clone(),
                    kind,
                    base: seen.clone(),
                    seen_crm: seen.clone(),
                    seen_anaplan: seen,
                    in_flight: None,
                    held: None,
                    last_ack: None,
                });
                if with_audit {
                    batch.add_audit(NewAudit {
                        key: key.clone(),
                        at,
                        side: plansync::model::Side::Crm,
                        source: Source::Stream,
                        kind,
                        value,
                        decision: "write".into(),
                        rule_id: Some("amount".into()),
                        rule_hash: Some("0123456789abcdef".into()),
                        exception: None,
                    });
                }
            }
            let t = Instant::now();
            store.commit(&batch)?;
            commit_time += t.elapsed();
        }
        let total = started.elapsed();
        let n = keys.len() as f64;
        println!(
            "{pass:>13}: {} shadow rows in batches of {batch_size}: commit {:.0}/s ({:.2?}), build+commit {:.0}/s ({:.2?})",
            keys.len(),
            n / commit_time.as_secs_f64(),
            commit_time,
            n / total.as_secs_f64(),
            total
        );
    }
    Ok(())
}
