//! The poll-diff scenario: Anaplan has no change feed, so every poll reads the pairing's list
//! and its module's default view whole and diffs each mapped value against the shadow. This
//! times one poll of a module of about a million cells (list items × line items), with a
//! planner's batch of edits in it, from the trigger until every edit is decided and committed.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, BenchOptions, Rig};
use crate::harness::world;
use plansync::anaplan::{CellValue, CellWrite, DimRef, ItemRef, LineItemRef};
use plansync::model::{Decimal, Side};

const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";
const OPP_MODULE: &str = "OPP01 Opportunity Data";
const OPP_LIST: &str = "Opportunities";
/// Line items in the opportunity module's default view (the simulator's seed).
const LINE_ITEMS: usize = 8;
/// Cells a planner's edit call carries.
const EDIT_CHUNK: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct PollDiffReport {
    pub records: usize,
    /// List items × line items of the module's default view.
    pub cells: usize,
    /// Cells a planner changed before the poll (1% of the items, one cell each).
    pub edits: usize,
    /// From the trigger until every edit was decided and committed.
    pub seconds: f64,
    /// The first reconciliation of the same model, for scale (not a target here).
    pub setup_seconds: f64,
}

pub async fn run(options: &BenchOptions) -> Result<PollDiffReport, BenchError> {
    let records = options.poll_diff_cells.div_ceil(LINE_ITEMS).max(10);
    let setup = Instant::now();
    let rig = Rig::start(options, "poll_diff", records).await?;
    let setup_seconds = setup.elapsed().as_secs_f64();
    let ids = rig.world.opportunities.clone();

    // A planner changes the probability of every hundredth deal (a shared field, so each
    // edit is a real decision, not a revert).
    let planner = world::anaplan_client(&rig.world.anaplan)?;
    let module = planner
        .module_id(MODEL, OPP_MODULE)
        .await
        .map_err(|e| BenchError::Run(format!("a planner's lookup: {e}")))?;
    let edited: Vec<&String> = ids.iter().step_by(100).collect();
    for chunk in edited.chunks(EDIT_CHUNK) {
        let cells: Vec<CellWrite> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| CellWrite {
                line_item: LineItemRef::Name("Probability".into()),
                dimensions: vec![(DimRef::Name(OPP_LIST.into()), ItemRef::Code((*id).clone()))],
                // The seed's probabilities are 10, 25, 50 or 75: 97 to 100 is always a change.
                value: CellValue::Number(Decimal {
                    units: 97 + (i % 4) as i128,
                    scale: 0,
                }),
            })
            .collect();
        planner
            .write_cells(MODEL, &module, &cells)
            .await
            .map_err(|e| BenchError::Run(format!("a planner's edit: {e}")))?;
    }

    let polled = |rig: &Rig| {
        rig.engine
            .counters()
            .get("changes.anaplan_poll")
            .copied()
            .unwrap_or(0)
    };
    let before = polled(&rig);
    let started = Instant::now();
    rig.engine.poll_now(Some(Side::Anaplan));
    let deadline = started + Duration::from_secs(3600);
    while polled(&rig) - before < edited.len() as u64 {
        if Instant::now() > deadline {
            return Err(BenchError::Run(format!(
                "the poll reported {} of {} edits within an hour",
                polled(&rig) - before,
                edited.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rig.engine.flush().await?;
    let seconds = started.elapsed().as_secs_f64();
    let report = PollDiffReport {
        records: ids.len(),
        cells: ids.len() * LINE_ITEMS,
        edits: edited.len(),
        seconds,
        setup_seconds,
    };
    rig.stop().await?;
    Ok(report)
}
