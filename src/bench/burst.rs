//! The burst scenario: every one of N records gets F fields changed in one CRM commit each,
//! as fast as the org takes them, and the clock runs until Anaplan has acknowledged every
//! write. Beside it, a naive integration (one Anaplan call per field change, the same client
//! and rate limit) is timed on a sample and extrapolated.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value as Json, json};

use super::{BenchError, BenchOptions, Rig};
use crate::harness::world;
use plansync::anaplan::{CellValue, CellWrite, DimRef, ItemRef, LineItemRef};
use plansync::model::Decimal;

const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";
const OPP_MODULE: &str = "OPP01 Opportunity Data";

#[derive(Debug, Clone, Serialize)]
pub struct BurstReport {
    pub records: usize,
    pub field_changes: usize,
    /// From the first CRM commit until every write was acknowledged by Anaplan.
    pub seconds: f64,
    pub anaplan_calls: u64,
    /// Anaplan calls by kind (transactional reads/writes, bulk, auth).
    pub anaplan_calls_by_kind: std::collections::BTreeMap<String, u64>,
    pub rate_limited: u64,
    pub naive_calls: u64,
    /// One call per change at the measured per-call time, under the 600-a-minute budget.
    pub naive_seconds: f64,
    pub calls_ratio: f64,
    pub naive_sample: usize,
}

/// The CRM fields a burst changes, in order of use.
const FIELDS: [&str; 5] = [
    "Amount",
    "StageName",
    "CloseDate",
    "Name",
    "Forecast_Override__c",
];

fn change(field: &str, i: usize, round: usize) -> Json {
    match field {
        "Amount" => json!(((10_000 + i * 7 + round * 13) % 400_000 + 1_000) as f64),
        "StageName" => json!(["Qualification", "Proposal", "Negotiation"][(i + round) % 3]),
        "CloseDate" => json!(format!("2027-02-{:02}", 1 + (i + round) % 27)),
        "Name" => json!(format!("Deal {i:05} (rev {round})")),
        _ => json!(((20_000 + i * 11 + round * 17) % 300_000 + 1_000) as f64),
    }
}

pub async fn run(options: &BenchOptions) -> Result<BurstReport, BenchError> {
    let records = options.burst_records.max(1);
    let fields = options.burst_fields.clamp(1, FIELDS.len());
    let rig = Rig::start(options, "burst", records).await?;
    let ids = rig.world.opportunities.clone();
    let before = rig.world.anaplan.request_counts();
    let streamed_at_start = rig
        .engine
        .counters()
        .get("changes.stream")
        .copied()
        .unwrap_or(0);

    let started = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let mut update = Map::new();
        for field in &FIELDS[..fields] {
            update.insert((*field).to_string(), change(field, i, 1));
        }
        rig.world
            .crm
            .user_edit("Opportunity", id, Json::Object(update), None)
            .map_err(|e| BenchError::Run(format!("a CRM commit: {e}")))?;
        if i % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
    let expected = (ids.len() * fields) as u64;
    // Done when the stream has delivered every commit and nothing is left to write: every
    // change decided, every write acknowledged.
    let streamed = |rig: &Rig| {
        rig.engine
            .counters()
            .get("changes.stream")
            .copied()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        if streamed(&rig) - streamed_at_start >= ids.len() as u64 {
            rig.engine.flush().await?;
            if rig.engine.outbox_depth().await? == 0 {
                break;
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::Run(
                "the burst did not settle within an hour".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = rig.world.anaplan.request_counts();
    let by_kind = std::collections::BTreeMap::from([
        (
            "transactional".to_string(),
            after.transactional - before.transactional,
        ),
        ("bulk".to_string(), after.bulk - before.bulk),
        ("auth".to_string(), after.auth - before.auth),
    ]);
    let anaplan_calls = after.total - before.total;
    let rate_limited = after.rate_limited - before.rate_limited;

    // The naive integration: one cell write per change, through a client of its own under
    // the same 600-a-minute budget; timed on a sample.
    let sample = 30.min(ids.len());
    let client = world::anaplan_client(&rig.world.anaplan)?;
    let module = client
        .module_id(MODEL, OPP_MODULE)
        .await
        .map_err(|e| BenchError::Run(format!("naive baseline: {e}")))?;
    let naive_started = Instant::now();
    for (i, id) in ids.iter().take(sample).enumerate() {
        let cell = CellWrite {
            line_item: LineItemRef::Name("Amount".into()),
            dimensions: vec![(
                DimRef::Name("Opportunities".into()),
                ItemRef::Code(id.clone()),
            )],
            value: CellValue::Number(Decimal {
                units: (50_000 + i as i128) * 100,
                scale: 2,
            }),
        };
        client
            .write_cells(MODEL, &module, &[cell])
            .await
            .map_err(|e| BenchError::Run(format!("naive baseline: {e}")))?;
    }
    let per_call = naive_started.elapsed().as_secs_f64() / sample.max(1) as f64;
    // A sample fits in the budget's burst; sustained, 600 a minute is one call per 0.1 s.
    let per_call = per_call.max(60.0 / 600.0);
    let naive_calls = expected;
    let report = BurstReport {
        records: ids.len(),
        field_changes: expected as usize,
        seconds,
        anaplan_calls,
        anaplan_calls_by_kind: by_kind,
        rate_limited,
        naive_calls,
        naive_seconds: per_call * naive_calls as f64,
        calls_ratio: naive_calls as f64 / anaplan_calls.max(1) as f64,
        naive_sample: sample,
    };
    rig.stop().await?;
    Ok(report)
}
