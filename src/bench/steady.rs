//! The steady scenario: CRM commits at a fixed rate (one changed amount each) for a while;
//! the latency from each commit to Anaplan's acknowledgement of its write (from the store's
//! audit and outbox rows), and the outbox depth sampled every second.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::{BenchError, BenchOptions, Rig};
use crate::harness::percentile;

#[derive(Debug, Clone, Serialize)]
pub struct SteadyReport {
    pub rate_per_second: u32,
    pub seconds: u64,
    pub events: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: usize,
    /// Writes queued or unanswered, once a second.
    pub outbox_depth: Vec<u64>,
}

pub async fn run(options: &BenchOptions) -> Result<SteadyReport, BenchError> {
    let rate = options.steady_rate.max(1);
    let seconds = options.steady_seconds.max(1);
    // Enough records that a record is rarely changed twice within a write's round trip.
    let records = (rate as usize * 2).clamp(100, 20_000);
    let rig = Rig::start(options, "steady", records).await?;
    let ids = rig.world.opportunities.clone();
    // Commits go out in ticks of 10 ms.
    let per_tick = (rate as usize).div_ceil(100);
    let ticks = seconds * 100;
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut depth = Vec::new();
    let mut next_sample = Instant::now();
    let mut sent = 0usize;
    for tick in 0..ticks {
        interval.tick().await;
        for k in 0..per_tick {
            let i = (tick as usize * per_tick + k) % ids.len();
            let amount = 1_000 + ((tick as usize * 31 + k * 7) % 500_000);
            rig.world
                .crm
                .user_edit(
                    "Opportunity",
                    &ids[i],
                    json!({ "Amount": amount as f64 }),
                    None,
                )
                .map_err(|e| BenchError::Run(format!("a CRM commit: {e}")))?;
            sent += 1;
        }
        if Instant::now() >= next_sample {
            depth.push(rig.engine.outbox_depth().await?);
            next_sample += Duration::from_secs(1);
        }
    }
    rig.settle(Duration::from_secs(600)).await?;
    let store = plansync::store::Store::open_read_only(&rig.db)?;
    let mut latencies = store.stream_write_latencies_ms()?;
    drop(store);
    latencies.sort_by(f64::total_cmp);
    let report = SteadyReport {
        rate_per_second: rate,
        seconds,
        events: sent,
        p50_ms: percentile(&latencies, 50.0),
        p95_ms: percentile(&latencies, 95.0),
        p99_ms: percentile(&latencies, 99.0),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        samples: latencies.len(),
        outbox_depth: depth,
    };
    rig.stop().await?;
    Ok(report)
}
