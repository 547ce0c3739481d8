//! The reverse scenario: planners change N records × F fields directly in Anaplan, the
//! engine's Anaplan poller finds the changes (one read of the list and the module, diffed
//! against the shadow) and the CRM sink writes them to the CRM (sObject Collections, or a
//! Bulk API 2.0 job past the client's threshold). The clock runs from the poll's trigger
//! until every write is acknowledged and every value reads back from the CRM simulator as
//! the planner wrote it.
//!
//! The demo's rules make most opportunity fields CRM-owned, so this scenario runs under a
//! rule file of its own (`reverse_rules.toml`): five opportunity fields owned by Anaplan,
//! no conditional rules, so every change found is one plain write to the CRM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use serde::Serialize;
use serde_json::{Value as Json, json};

use super::{BenchError, BenchOptions, Rig};
use crate::harness::world;
use plansync::anaplan::{CellValue, CellWrite, DimRef, ItemRef, LineItemRef};
use plansync::model::{Decimal, Side, Value};
use plansync::rules::ruleset::FieldRule;

const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";
const OPP_MODULE: &str = "OPP01 Opportunity Data";
const OPP_LIST: &str = "Opportunities";
/// Cells a planner's edit call carries (the client splits under Anaplan's limits anyway).
const EDIT_CHUNK: usize = 50_000;

/// The scenario's rule file, written under the bench directory when it starts.
pub const RULES: &str = include_str!("reverse_rules.toml");

/// The fields a planner changes (CRM name, Anaplan line item), in order of use.
const FIELDS: [(&str, &str); 5] = [
    ("Amount", "Amount"),
    ("Forecast_Override__c", "Forecast Override"),
    ("Probability", "Probability"),
    ("CloseDate", "Close Date"),
    ("StageName", "Stage"),
];

#[derive(Debug, Clone, Serialize)]
pub struct ReverseReport {
    pub records: usize,
    /// Cells the planner wrote whose value differed from the CRM's: what must reach the CRM.
    pub field_changes: usize,
    /// From the poll's trigger until every write was acknowledged and every changed field
    /// read back from the CRM simulator as the planner wrote it.
    pub seconds: f64,
    /// Of which: until the poll had reported every changed record to the shards,
    pub poll_seconds: f64,
    /// and until the shards had decided and committed them (writes queued).
    pub decided_seconds: f64,
    /// How long the planner's own writes took (before the clock starts).
    pub planner_seconds: f64,
    /// Calls the CRM simulator answered while the clock ran (the engine's), and by kind.
    pub crm_calls: u64,
    pub crm_calls_by_kind: BTreeMap<String, u64>,
    /// Calls the Anaplan simulator answered while the clock ran (the poll's reads).
    pub anaplan_calls: u64,
    /// Calls the planner made to Anaplan to write the changes.
    pub planner_calls: u64,
    /// CRM writes acknowledged (one per field change).
    pub writes_acked: u64,
    /// Exceptions raised, the echoes of our own CRM writes included (expected: 0).
    pub exceptions: u64,
    /// Changed fields whose CRM value differs from what the planner wrote (must be 0).
    pub mismatches: usize,
    /// Change events of our own writes that came back on the CRM stream after the clock
    /// stopped (each one decided as an echo, not as a rep's edit).
    pub echoes: u64,
}

/// What a planner writes to one field of record `i`: the cell, and the same value as the
/// poller reads it (for the expected CRM value). Always a change from the demo's seed:
/// amounts with cents (the seed's are whole), probabilities 81–99 (the seed's are 10–75),
/// dates in 2028, closed stages (the seed's are open).
fn planned(field: &str, i: usize) -> (CellValue, Json) {
    match field {
        "Amount" => {
            let units = ((10_000 + i as i128 * 7) % 400_000 + 1_000) * 100 + 37;
            number(units, 2)
        }
        "Forecast_Override__c" => {
            let units = ((20_000 + i as i128 * 11) % 300_000 + 1_000) * 100 + 61;
            number(units, 2)
        }
        "Probability" => number(81 + (i % 19) as i128, 0),
        "CloseDate" => {
            let base = NaiveDate::from_ymd_opt(2028, 1, 1).unwrap_or_default();
            let date = base
                .checked_add_days(Days::new((i % 300) as u64))
                .unwrap_or(base);
            (CellValue::Date(date), json!(date.to_string()))
        }
        _ => {
            let stage = ["Won", "Lost"][i % 2];
            (CellValue::Text(stage.into()), json!(stage))
        }
    }
}

fn number(units: i128, scale: u8) -> (CellValue, Json) {
    let d = Decimal { units, scale };
    (CellValue::Number(d), json!(d.to_f64()))
}

/// Writes the scenario's rule file into `<dir>/reverse-rules/` and returns that directory.
fn write_rules(dir: &Path) -> Result<PathBuf, BenchError> {
    let rules_dir = dir.join("reverse-rules");
    std::fs::create_dir_all(&rules_dir)
        .and_then(|()| std::fs::write(rules_dir.join("opportunity.toml"), RULES))
        .map_err(|e| BenchError::Setup(format!("{}: {e}", rules_dir.display())))?;
    Ok(rules_dir)
}

/// A field's value in a record as the CRM simulator holds it, in the rule's canonical form.
fn crm_value(record: Option<&Json>, rule: &FieldRule) -> Option<Value> {
    let raw = record?.get(&rule.crm).unwrap_or(&Json::Null);
    rule.normalise(Side::Crm, raw).ok()
}

/// The fields planned for each record, by index into the record ids.
type Expected<'r> = Vec<(usize, Vec<(&'r FieldRule, Value)>)>;

/// Fields whose CRM value is not the planned one (one read of each record).
fn count_mismatches(rig: &Rig, ids: &[String], expected: &Expected<'_>) -> usize {
    expected
        .iter()
        .map(|(i, fields)| {
            let record = rig.world.crm.record(&ids[*i]);
            fields
                .iter()
                .filter(|(rule, want)| crm_value(record.as_ref(), rule).as_ref() != Some(want))
                .count()
        })
        .sum()
}

pub async fn run(options: &BenchOptions) -> Result<ReverseReport, BenchError> {
    let records = options.reverse_records.max(1);
    let fields = options.reverse_fields.clamp(1, FIELDS.len());
    let rules_dir = write_rules(&options.dir)?;
    let rules = super::load_rules(&rules_dir)?;
    let pairing = rules
        .pairings
        .first()
        .ok_or_else(|| BenchError::Setup("the reverse rules have no pairing".into()))?
        .clone();
    let rig = Rig::start_with_rules(options, "reverse", records, &rules_dir).await?;
    let ids = rig.world.opportunities.clone();

    // The planner's cells, and what each changed field must read in the CRM afterwards.
    let mut cells = Vec::with_capacity(ids.len() * fields);
    let mut expected: Expected<'_> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let record = rig.world.crm.record(id);
        let mut of_record = Vec::new();
        for (crm, line_item) in &FIELDS[..fields] {
            let rule = pairing
                .field(crm)
                .ok_or_else(|| BenchError::Setup(format!("no rule for {crm}")))?;
            let (cell, read) = planned(crm, i);
            let want = rule
                .normalise(Side::Anaplan, &read)
                .map_err(|e| BenchError::Setup(format!("a planned value: {}", e.message)))?;
            if crm_value(record.as_ref(), rule).as_ref() != Some(&want) {
                of_record.push((rule, want));
            }
            cells.push(CellWrite {
                line_item: LineItemRef::Name((*line_item).into()),
                dimensions: vec![(DimRef::Name(OPP_LIST.into()), ItemRef::Code(id.clone()))],
                value: cell,
            });
        }
        if !of_record.is_empty() {
            expected.push((i, of_record));
        }
    }
    let field_changes: usize = expected.iter().map(|(_, f)| f.len()).sum();

    let planner = world::anaplan_client(&rig.world.anaplan)?;
    let planner_started = Instant::now();
    let anaplan_before = rig.world.anaplan.request_counts();
    let module = planner
        .module_id(MODEL, OPP_MODULE)
        .await
        .map_err(|e| BenchError::Run(format!("a planner's lookup: {e}")))?;
    for chunk in cells.chunks(EDIT_CHUNK) {
        let outcome = planner
            .write_cells(MODEL, &module, chunk)
            .await
            .map_err(|e| BenchError::Run(format!("a planner's edit: {e}")))?;
        if let Some(f) = outcome.failures.first() {
            return Err(BenchError::Run(format!(
                "Anaplan refused {} of a planner's cells, e.g. {f:?}",
                outcome.failures.len()
            )));
        }
    }
    let planner_seconds = planner_started.elapsed().as_secs_f64();
    let anaplan_mid = rig.world.anaplan.request_counts();
    let planner_calls = anaplan_mid.total - anaplan_before.total;

    let counter = |rig: &Rig, name: &str| rig.engine.counters().get(name).copied().unwrap_or(0);
    let polled_before = counter(&rig, "changes.anaplan_poll");
    let acked_before = counter(&rig, "writes.acked.crm");
    let exceptions_before = counter(&rig, "exceptions.raised");
    let streamed_before = counter(&rig, "changes.stream");
    let crm_before = rig.world.crm.request_counts();

    let started = Instant::now();
    rig.engine.poll_now(Some(Side::Anaplan));
    let deadline = started + Duration::from_secs(3600);
    // Done when the poll has reported every changed record, nothing is left to write, and
    // every changed field reads back from the CRM as the planner wrote it.
    let mut polled_at = None;
    let mut decided_at = None;
    loop {
        if counter(&rig, "changes.anaplan_poll") - polled_before >= expected.len() as u64 {
            polled_at.get_or_insert_with(|| started.elapsed());
            rig.engine.flush().await?;
            decided_at.get_or_insert_with(|| started.elapsed());
            if rig.engine.outbox_depth().await? == 0 && count_mismatches(&rig, &ids, &expected) == 0
            {
                break;
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::Run(
                "the reverse scenario did not settle within an hour".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let crm_after = rig.world.crm.request_counts();
    let anaplan_after = rig.world.anaplan.request_counts();

    // Our writes come back on the stream as change events; wait (bounded) for them, so an
    // echo mistaken for a rep's edit would show as an exception or a revert.
    let echo_deadline = Instant::now() + Duration::from_secs(60);
    while counter(&rig, "changes.stream") - streamed_before < expected.len() as u64
        && Instant::now() < echo_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.settle(Duration::from_secs(60)).await?;
    let mismatches = count_mismatches(&rig, &ids, &expected);

    let by_kind = BTreeMap::from([
        ("auth".to_string(), crm_after.auth - crm_before.auth),
        ("query".to_string(), crm_after.query - crm_before.query),
        (
            "collections".to_string(),
            crm_after.write - crm_before.write,
        ),
        ("bulk".to_string(), crm_after.bulk - crm_before.bulk),
        (
            "streaming".to_string(),
            crm_after.streaming - crm_before.streaming,
        ),
        ("other".to_string(), crm_after.other - crm_before.other),
    ]);
    let report = ReverseReport {
        records: ids.len(),
        field_changes,
        seconds,
        poll_seconds: polled_at.unwrap_or_default().as_secs_f64(),
        decided_seconds: decided_at.unwrap_or_default().as_secs_f64(),
        planner_seconds,
        crm_calls: by_kind.values().sum(),
        crm_calls_by_kind: by_kind,
        anaplan_calls: anaplan_after.total - anaplan_mid.total,
        planner_calls,
        writes_acked: counter(&rig, "writes.acked.crm") - acked_before,
        exceptions: counter(&rig, "exceptions.raised") - exceptions_before,
        mismatches,
        echoes: counter(&rig, "changes.stream") - streamed_before,
    };
    rig.stop().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path, records: usize, fields: usize) -> BenchOptions {
        let mut o = BenchOptions::quick(PathBuf::from("rules"), dir.to_path_buf());
        o.reverse_records = records;
        o.reverse_fields = fields;
        o
    }

    #[test]
    fn the_rules_compile_and_their_cases_pass() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let rules_dir = write_rules(dir.path()).expect("the rules written");
        let rules = plansync::rules::load(&[rules_dir]).expect("the reverse rules load");
        let pairing = &rules.pairings[0];
        for (crm, _) in FIELDS {
            let rule = pairing.field(crm).expect("a rule per field");
            assert_eq!(
                rule.policy.owner,
                plansync::rules::ruleset::Owner::Anaplan,
                "{crm}"
            );
            assert!(rule.overrides.is_empty(), "{crm} has no conditional rule");
        }
        let outcomes = plansync::rules::cases::run(pairing);
        assert!(!outcomes.is_empty());
        for o in outcomes {
            assert!(o.passed(), "{}: {:?}", o.name, o.mismatches);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_field_a_planner_changes_lands_in_the_crm() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let report = run(&options(dir.path(), 60, 5))
            .await
            .expect("the scenario runs");
        assert!(report.records >= 60);
        // Every cell the planner wrote differs from the seed.
        assert_eq!(report.field_changes, report.records * 5);
        assert_eq!(report.mismatches, 0);
        assert_eq!(report.writes_acked, report.field_changes as u64);
        assert_eq!(report.exceptions, 0);
        assert!(report.crm_calls >= 1);
        assert!(report.crm_calls_by_kind["collections"] >= 1, "{report:?}");
        assert_eq!(report.crm_calls_by_kind["bulk"], 0, "{report:?}");
        assert!(
            report.anaplan_calls >= 2,
            "the poll reads the list and the module"
        );
        assert!(report.planner_calls >= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_records_take_few_crm_calls_and_fewer_fields_write_less() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let report = run(&options(dir.path(), 2_500, 2))
            .await
            .expect("the scenario runs");
        assert_eq!(report.field_changes, report.records * 2);
        assert_eq!(report.mismatches, 0);
        assert_eq!(report.writes_acked, report.field_changes as u64);
        assert_eq!(report.exceptions, 0);
        // Collections carry 200 records a call and a bulk job any number; how the shards'
        // rounds split the writes into batches varies, so only the order of magnitude holds.
        assert!(report.crm_calls <= report.records as u64 / 50, "{report:?}");
    }
}
