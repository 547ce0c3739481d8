//! The demo's quarter-end day, as a script of what people do in each system while the engine
//! runs: reps edit deals in the CRM (streamed), planners adjust quotas and forecast overrides
//! in Anaplan (seen by the poller), a few true concurrent edits and invalid values, the
//! stream dropping for a while, and the quarter-end burst under the quarter-end rules with
//! Anaplan's rate limit squeezed. The script is a pure function of the seed; only the
//! moments it runs at are real.

use std::time::Duration;

use chrono::{DateTime, Utc};

use serde_json::json;

use super::{DemoError, Progress};
use crate::harness::world::{Rng, World, anaplan_client};
use plansync::anaplan::{AnaplanClient, CellValue, CellWrite, DimRef, ItemRef, LineItemRef};
use plansync::engine::run::EngineHandle;
use plansync::model::{Decimal, Side};

const OPP_MODULE: &str = "OPP01 Opportunity Data";
const OPP_LIST: &str = "Opportunities";
const TER_MODULE: &str = "TER01 Territory Quotas";
const TER_LIST: &str = "Territories";
const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";

/// What the script did, for the summary.
#[derive(Debug, Default, Clone)]
pub struct Done {
    pub rep_edits: usize,
    pub planner_edits: usize,
    pub concurrent_edits: usize,
    pub invalid_values: usize,
    pub edits_while_stream_down: usize,
    pub quarter_end_edits: usize,
    /// Burst edits that move a number by more than half (held by the quarter-end rules).
    pub quarter_end_jumps: usize,
    /// When each phase of the day began, in order: the summary dates each write's CRM
    /// commit into one of them.
    pub phases: Vec<(&'static str, DateTime<Utc>)>,
}

impl Done {
    fn begin(&mut self, phase: usize, progress: &dyn Progress) {
        if let Some(p) = PHASES.get(phase) {
            progress.phase(p.name);
            self.phases.push((p.name, Utc::now()));
        }
    }
}

/// Anaplan's rate limit while the quarter-end burst lasts, in calls a minute.
pub const BURST_RATE_PER_MINUTE: u32 = 6;

/// One step of the day, with its share of the run time.
pub struct Phase {
    pub name: &'static str,
    share: f64,
}

pub const PHASES: [Phase; 5] = [
    Phase {
        name: "reps at work",
        share: 0.25,
    },
    Phase {
        name: "planners at work",
        share: 0.2,
    },
    Phase {
        name: "conflicts and bad values",
        share: 0.1,
    },
    Phase {
        name: "stream outage",
        share: 0.15,
    },
    Phase {
        name: "quarter-end burst",
        share: 0.3,
    },
];

/// How long a phase paces its edits over.
fn pace(total: Duration, phase: usize) -> Duration {
    total.mul_f64(PHASES.get(phase).map_or(0.1, |p| p.share))
}

struct Planner {
    client: AnaplanClient,
    opp_module: Option<String>,
    ter_module: Option<String>,
}

impl Planner {
    async fn set(
        &mut self,
        territory: bool,
        code: &str,
        line_item: &str,
        value: CellValue,
    ) -> Result<(), DemoError> {
        let (module, list, slot) = if territory {
            (TER_MODULE, TER_LIST, &mut self.ter_module)
        } else {
            (OPP_MODULE, OPP_LIST, &mut self.opp_module)
        };
        if slot.is_none() {
            *slot = Some(
                self.client
                    .module_id(MODEL, module)
                    .await
                    .map_err(|e| DemoError::Script(format!("a planner's lookup: {e}")))?,
            );
        }
        let module_id = slot.clone().unwrap_or_default();
        let cell = CellWrite {
            line_item: LineItemRef::Name(line_item.into()),
            dimensions: vec![(DimRef::Name(list.into()), ItemRef::Code(code.into()))],
            value,
        };
        self.client
            .write_cells(MODEL, &module_id, &[cell])
            .await
            .map_err(|e| DemoError::Script(format!("a planner's edit: {e}")))?;
        Ok(())
    }
}

fn money(units: i64) -> CellValue {
    CellValue::Number(Decimal {
        units: i128::from(units) * 100,
        scale: 2,
    })
}

fn rep_edit(world: &World, id: &str, fields: serde_json::Value) -> Result<(), DemoError> {
    world
        .crm
        .user_edit("Opportunity", id, fields, None)
        .map_err(|e| DemoError::Script(format!("a rep's edit of {id}: {e}")))
}

/// Sleeps so that `n` steps spread over `over`.
async fn step_pause(over: Duration, n: usize) {
    let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    tokio::time::sleep(over / n).await;
}

/// Runs the day. `quarter_end` switches the engine to the quarter-end rules.
pub async fn run(
    world: &World,
    engine: &EngineHandle,
    seed: u64,
    duration: Duration,
    progress: &dyn Progress,
    quarter_end: impl std::future::Future<Output = Result<(), DemoError>>,
) -> Result<Done, DemoError> {
    let mut rng = Rng::new(seed ^ 0xDA7);
    let mut done = Done::default();
    let opps = &world.opportunities;
    let ters = &world.territories;
    if opps.len() < 10 || ters.is_empty() {
        return Err(DemoError::Script(
            "the demo needs at least 10 opportunities and a territory".into(),
        ));
    }
    let mut planner = Planner {
        client: anaplan_client(&world.anaplan)?,
        opp_module: None,
        ter_module: None,
    };
    let pick = |rng: &mut Rng| opps[rng.below(opps.len())].clone();

    // 1. Reps update amounts, stages and close dates; the stream carries each commit.
    done.begin(0, progress);
    let n = (opps.len() / 4).clamp(10, 2_000);
    for _ in 0..n {
        let id = pick(&mut rng);
        let fields = match rng.below(3) {
            0 => json!({ "Amount": rng.between(50, 5_000) * 100 }),
            1 => {
                let stage = ["Qualification", "Proposal", "Negotiation"][rng.below(3)];
                json!({ "StageName": stage })
            }
            _ => json!({ "CloseDate": format!("2027-01-{:02}", 10 + rng.below(18)) }),
        };
        rep_edit(world, &id, fields)?;
        done.rep_edits += 1;
        step_pause(pace(duration, 0), n).await;
    }

    // 2. Planners adjust quotas (owned by Anaplan) and forecast overrides (shared); the
    //    poller finds them.
    done.begin(1, progress);
    let n = (ters.len() + opps.len() / 20).clamp(5, 400);
    for k in 0..n {
        if k % 2 == 0 {
            let t = &ters[rng.below(ters.len())];
            let quota = rng.between(5, 50) * 25_000;
            planner
                .set(true, t, "Quarterly Quota", money(quota))
                .await?;
        } else {
            let id = pick(&mut rng);
            planner
                .set(
                    false,
                    &id,
                    "Forecast Override",
                    money(rng.between(50, 5_000) * 100),
                )
                .await?;
        }
        done.planner_edits += 1;
        if k % 20 == 19 {
            engine.poll_now(Some(Side::Anaplan));
        }
        step_pause(pace(duration, 1), n).await;
    }
    engine.poll_now(Some(Side::Anaplan));

    // 3. True concurrent edits of the shared forecast override (held for review), and values
    //    the rules refuse (a negative amount, a probability over 100).
    done.begin(2, progress);
    for _ in 0..3 {
        let id = pick(&mut rng);
        planner
            .set(
                false,
                &id,
                "Forecast Override",
                money(rng.between(50, 900) * 100),
            )
            .await?;
        rep_edit(
            world,
            &id,
            json!({ "Forecast_Override__c": rng.between(901, 2_000) * 100 }),
        )?;
        done.concurrent_edits += 1;
    }
    for k in 0..3 {
        let id = pick(&mut rng);
        let fields = if k % 2 == 0 {
            json!({ "Amount": -1000 })
        } else {
            json!({ "Probability": 150 })
        };
        rep_edit(world, &id, fields)?;
        done.invalid_values += 1;
    }
    tokio::time::sleep(pace(duration, 2)).await;
    engine.poll_now(None);

    // 4. The stream drops (the org ends every streaming session) while reps keep working;
    //    the CRM poller covers what the stream would have carried.
    done.begin(3, progress);
    world.crm.drop_sessions();
    let n = 20.min(opps.len());
    for _ in 0..n {
        let id = pick(&mut rng);
        rep_edit(
            world,
            &id,
            json!({ "Probability": 10 * rng.between(1, 10) }),
        )?;
        done.edits_while_stream_down += 1;
    }
    engine.poll_now(Some(Side::Crm));
    tokio::time::sleep(pace(duration, 3)).await;

    // 5. Quarter-end: the admin's quarter-end rules take over (reps' overrides win, big
    //    amount jumps are held), a burst of updates arrives, and Anaplan's rate limit is
    //    squeezed to 6 calls a minute while it lasts (the engine's client meets 429s and
    //    backs off; the batches only grow, and nothing is lost).
    done.begin(4, progress);
    quarter_end.await?;
    world.anaplan.set_rate_per_minute(BURST_RATE_PER_MINUTE);
    let n = (opps.len() / 2).clamp(10, 20_000);
    for k in 0..n {
        let id = &opps[(k * 7919) % opps.len()];
        // Commits at quarter-end move numbers by a little (a jump of more than half is
        // held for review by the quarter-end rules; a few do that too).
        let current = world
            .crm
            .record(id)
            .and_then(|r| r["Amount"].as_f64())
            .unwrap_or(10_000.0);
        let factor = if k % 50 == 7 {
            done.quarter_end_jumps += 1;
            2.5
        } else {
            0.8 + rng.between(0, 50) as f64 / 100.0
        };
        let amount = ((current * factor) / 100.0).round() * 100.0;
        let fields = if k % 5 == 0 {
            json!({ "Forecast_Override__c": amount })
        } else {
            json!({ "Amount": amount, "StageName": "Negotiation" })
        };
        rep_edit(world, id, fields)?;
        done.quarter_end_edits += 1;
        if k % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::sleep(pace(duration, 4)).await;
    world.anaplan.set_rate_per_minute(600);
    engine.poll_now(None);
    Ok(done)
}
