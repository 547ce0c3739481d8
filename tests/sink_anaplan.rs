//! The engine's Anaplan sink (`plansync::engine::sink::anaplan`) against the Anaplan simulator
//! over real loopback sockets, with the project's rule files. Every test checks what the sink
//! answered AND what the simulator's model holds afterwards (cells, list items), and where the
//! number or order of calls matters, the simulator's request log.

use crate::support::anaplan_sim;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveDate;
use plansync::anaplan::{AnaplanClient, AnaplanConfig, AuthMethod, RetryPolicy};
use plansync::engine::sink::anaplan::{AnaplanSink, AnaplanSinkSettings};
use plansync::engine::write::{WriteOutcome, WriteReport, WriteRequest, lifecycle};
use plansync::model::{Decimal, RecordKey, Value};
use plansync::rules::RuleSet;
use plansync::rules::ruleset::AnaplanField;
use plansync::secret::Secret;
use plansync_sim::anaplan::{
    self as sim, CellValue, Faults, LoggedRequest, Seed, SimConfig, SimHandle,
};

const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";
const OPP: &str = "OPP01 Opportunity Data";
const OPPS: &str = "Opportunities";
const TER: &str = "TER01 Territory Quotas";
const LONG: Duration = Duration::from_secs(60);
const OPP_IMPORT: &str = "OPP01 Opportunity Data from opportunities.csv";

// ---------------------------------------------------------------------------------------------
// Set-up.

async fn start() -> SimHandle {
    start_with(Seed::default_seed()).await
}

async fn start_with(seed: Seed) -> SimHandle {
    anaplan_sim(SimConfig {
        seed,
        task_step: Duration::from_millis(30),
        ..SimConfig::default()
    })
    .await
}

/// A model over Anaplan's read limits (1,000,000 items or cells; 3 here): plain list and view
/// reads are refused, and read requests answer in pages of a few rows.
async fn start_over_read_limits() -> SimHandle {
    anaplan_sim(SimConfig {
        task_step: Duration::from_millis(30),
        max_read: 3,
        read_page_bytes: 200,
        read_request_step: Duration::from_millis(20),
        ..SimConfig::default()
    })
    .await
}

/// A client for `sim` whose retries give up after `give_up`.
fn client_with(sim: &SimHandle, give_up: Duration) -> AnaplanClient {
    let auth = AuthMethod::Basic {
        user: sim::DEFAULT_USER.into(),
        password: Secret::new(sim::DEFAULT_PASSWORD),
    };
    let mut c = AnaplanConfig::new(sim.auth_url(), sim.api_url(), auth);
    c.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_elapsed: give_up,
    };
    c.task_poll_interval = Duration::from_millis(20);
    c.task_timeout = Duration::from_secs(30);
    c.request_timeout = Duration::from_secs(20);
    AnaplanClient::new(c).unwrap()
}

fn sink(sim: &SimHandle, settings: AnaplanSinkSettings) -> AnaplanSink {
    AnaplanSink::new(client_with(sim, Duration::from_secs(30)), settings)
}

fn rules() -> RuleSet {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    plansync::rules::load(&[dir]).expect("the project's rule files load")
}

/// The code of the default model's opportunity `n`: the CRM simulator's id of its record `n`
/// (its ids are base 62, so this holds for n below 10; larger n are codes of test items).
fn opp(n: u32) -> String {
    format!("0065g{n:010}AAA")
}

/// The code of the default model's territory `n`, the CRM simulator's id of its record `n`.
fn ter(n: u32) -> String {
    format!("a0X5g{n:010}EAA")
}

fn num(s: &str, scale: u8) -> Value {
    Value::Number(Decimal::parse(s, scale).unwrap())
}

fn date(s: &str) -> Value {
    Value::Date(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// Builds requests with outbox ids 1, 2, 3… in order.
#[derive(Default)]
struct Batch(Vec<WriteRequest>);

impl Batch {
    fn add(mut self, pairing: &str, crm_id: &str, field: &str, value: Value) -> Batch {
        let id = self.0.len() as i64 + 1;
        self.0.push(WriteRequest {
            outbox_id: id,
            record: RecordKey {
                pairing: pairing.into(),
                crm_id: crm_id.into(),
            },
            field: field.into(),
            value,
            expect: None,
        });
        self
    }

    fn opp(self, crm_id: &str, field: &str, value: Value) -> Batch {
        self.add("opportunity", crm_id, field, value)
    }
}

async fn write(sink: &mut AnaplanSink, rules: &RuleSet, batch: &Batch) -> WriteReport {
    tokio::time::timeout(LONG, sink.write(rules, &batch.0))
        .await
        .expect("the sink answers within a minute")
}

fn outcome(report: &WriteReport, outbox_id: i64) -> &WriteOutcome {
    &report
        .outcomes
        .iter()
        .find(|(id, _)| *id == outbox_id)
        .unwrap_or_else(|| panic!("no outcome for outbox id {outbox_id}: {report:?}"))
        .1
}

fn assert_all_acked(report: &WriteReport, batch: &Batch) {
    assert_eq!(report.outcomes.len(), batch.0.len(), "{report:?}");
    for (n, (id, o)) in report.outcomes.iter().enumerate() {
        assert_eq!(*id, batch.0[n].outbox_id, "outcomes follow request order");
        assert!(
            matches!(o, WriteOutcome::Acked { .. }),
            "request {id} ({}): {o:?}",
            batch.0[n].field
        );
    }
}

fn rejected(report: &WriteReport, outbox_id: i64) -> String {
    match outcome(report, outbox_id) {
        WriteOutcome::Rejected { message } => message.clone(),
        other => panic!("request {outbox_id} should be rejected, got {other:?}"),
    }
}

fn cell(sim: &SimHandle, module: &str, code: &str, line_item: &str) -> Option<CellValue> {
    sim.cells(MODEL, module)
        .unwrap()
        .get(code)
        .and_then(|row| row.get(line_item))
        .cloned()
}

fn item(sim: &SimHandle, list: &str, code: &str) -> Option<sim::ListItemView> {
    sim.list_items(MODEL, list)
        .unwrap()
        .into_iter()
        .find(|i| i.code.as_deref() == Some(code))
}

/// Cell writes in the log: `POST /2/0/models/{m}/modules/{mod}/data`.
fn is_cell_write(r: &LoggedRequest) -> bool {
    r.method == "POST" && r.path.contains("/modules/") && r.path.ends_with("/data")
}

/// List item writes in the log (add and delete are POSTs, update a PUT).
fn is_item_write(r: &LoggedRequest, method: &str) -> bool {
    r.method == method && r.path.contains("/lists/") && r.path.ends_with("/items")
}

fn calls(report: &WriteReport, kind: &str) -> u64 {
    report
        .calls
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(0, |(_, n)| *n)
}

// ---------------------------------------------------------------------------------------------
// 1. Existing items: every kind of value lands, mapped, in one cell write per module.

#[tokio::test]
async fn values_of_every_kind_land_mapped_in_one_cell_write_per_module() {
    let sim = start().await;
    let rules = rules();
    let mut sink = sink(&sim, AnaplanSinkSettings::default());
    let batch = Batch::default()
        .opp(&opp(1), "Amount", num("130000.25", 2))
        .opp(&opp(1), "StageName", text("Closed Won"))
        .opp(&opp(1), "CloseDate", date("2027-01-15"))
        .opp(&opp(1), "Probability", num("55", 0))
        .opp(&opp(1), "Name", text("Acme renewal, year 2"))
        .opp(&opp(2), "Amount", num("12345678901.99", 2))
        .opp(&opp(2), "StageName", text("Closed Lost"))
        .opp(&opp(3), "Forecast_Override__c", Value::Null)
        .add("territory", &ter(3), "Active__c", Value::Bool(true))
        .add("territory", &ter(1), "Region__c", text("EMEA"));
    sim.clear_request_log();
    let report = write(&mut sink, &rules, &batch).await;
    assert_all_acked(&report, &batch);

    assert_eq!(
        cell(&sim, OPP, &opp(1), "Amount"),
        Some(CellValue::Number(130000.25))
    );
    // The picklist went in Anaplan's vocabulary.
    assert_eq!(
        cell(&sim, OPP, &opp(1), "Stage"),
        Some(CellValue::Item("Won".into()))
    );
    assert_eq!(
        cell(&sim, OPP, &opp(2), "Stage"),
        Some(CellValue::Item("Lost".into()))
    );
    assert_eq!(
        cell(&sim, OPP, &opp(1), "Close Date"),
        Some(CellValue::Date(
            NaiveDate::from_ymd_opt(2027, 1, 15).unwrap()
        ))
    );
    assert_eq!(
        cell(&sim, OPP, &opp(1), "Probability"),
        Some(CellValue::Number(55.0))
    );
    assert_eq!(
        cell(&sim, OPP, &opp(2), "Amount"),
        Some(CellValue::Number(12345678901.99))
    );
    // A null cleared the cell.
    assert_eq!(cell(&sim, OPP, &opp(3), "Forecast Override"), None);
    assert_eq!(
        cell(&sim, TER, &ter(3), "Active"),
        Some(CellValue::Boolean(true))
    );
    assert_eq!(
        cell(&sim, TER, &ter(1), "Region"),
        Some(CellValue::Item("Europe, Middle East & Africa".into()))
    );
    // The text property of an existing item was updated, its name and code kept.
    let one = item(&sim, OPPS, &opp(1)).unwrap();
    assert_eq!(one.properties["Opportunity Name"], "Acme renewal, year 2");
    assert_eq!(one.name, "OPP-0001");

    let log = sim.request_log();
    let cell_writes: Vec<_> = log.iter().filter(|r| is_cell_write(r)).collect();
    assert_eq!(cell_writes.len(), 2, "one cell write per module: {log:#?}");
    assert!(cell_writes.iter().all(|r| r.status == 200));
    assert_eq!(log.iter().filter(|r| is_item_write(r, "PUT")).count(), 1);
    assert_eq!(log.iter().filter(|r| is_item_write(r, "POST")).count(), 0);
    assert_eq!(calls(&report, "cells"), 2);
    assert_eq!(
        calls(&report, "list_items"),
        5,
        "each pairing's list read (item count, then the items) and one update"
    );
    assert_eq!(
        calls(&report, "metadata"),
        6,
        "list, module and line items of each pairing"
    );
    // Every record's item is reported with its Anaplan id.
    let one_id = item(&sim, OPPS, &opp(1)).unwrap().id;
    assert!(report.items.contains(&(
        RecordKey {
            pairing: "opportunity".into(),
            crm_id: opp(1)
        },
        one_id
    )));
    assert_eq!(report.items.len(), 5);

    // A second batch uses the cached ids and items: one call, a cell write.
    sim.clear_request_log();
    let again = Batch::default().opp(&opp(4), "Probability", num("90", 0));
    let report = write(&mut sink, &rules, &again).await;
    assert_all_acked(&report, &again);
    let log = sim.request_log();
    let api: Vec<_> = log.iter().filter(|r| r.path.starts_with("/2/0/")).collect();
    assert_eq!(api.len(), 1, "only the cell write: {api:#?}");
    assert!(is_cell_write(api[0]));
    assert_eq!(
        cell(&sim, OPP, &opp(4), "Probability"),
        Some(CellValue::Number(90.0))
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A new CRM record: its item is created (code = id, with its property) before its cells.

#[tokio::test]
async fn a_new_record_gets_its_item_before_its_cells() {
    let sim = start().await;
    let rules = rules();
    let mut sink = sink(&sim, AnaplanSinkSettings::default());
    let new = opp(99);
    let batch = Batch::default()
        .opp(&new, "Amount", num("1000", 2))
        .opp(&new, "Name", text("Brand new deal"))
        .opp(&new, "StageName", text("Prospecting"))
        .opp(&opp(1), "Amount", num("1", 2));
    assert!(item(&sim, OPPS, &new).is_none());
    sim.clear_request_log();
    let report = write(&mut sink, &rules, &batch).await;
    assert_all_acked(&report, &batch);

    let created = item(&sim, OPPS, &new).expect("the item was created");
    assert_eq!(created.name, new, "named after its code");
    assert_eq!(created.properties["Opportunity Name"], "Brand new deal");
    assert_eq!(
        cell(&sim, OPP, &new, "Amount"),
        Some(CellValue::Number(1000.0))
    );
    assert_eq!(
        cell(&sim, OPP, &new, "Stage"),
        Some(CellValue::Item("Prospecting".into()))
    );
    assert!(report.items.contains(&(
        RecordKey {
            pairing: "opportunity".into(),
            crm_id: new.clone()
        },
        created.id.clone()
    )));

    let log = sim.request_log();
    let add = log
        .iter()
        .position(|r| is_item_write(r, "POST"))
        .expect("an add call");
    let cells = log
        .iter()
        .position(is_cell_write)
        .expect("a cell write call");
    assert!(add < cells, "the item is added before its cells: {log:#?}");
    assert_eq!(log.iter().filter(|r| is_item_write(r, "POST")).count(), 1);
    assert_eq!(log.iter().filter(|r| is_cell_write(r)).count(), 1);
    // The property went with the add: no separate update.
    assert_eq!(log.iter().filter(|r| is_item_write(r, "PUT")).count(), 0);

    // The item is now known: the next write of the record adds nothing.
    sim.clear_request_log();
    let again = Batch::default().opp(&new, "Amount", num("2000", 2));
    let report = write(&mut sink, &rules, &again).await;
    assert_all_acked(&report, &again);
    let log = sim.request_log();
    assert_eq!(log.iter().filter(|r| is_item_write(r, "POST")).count(), 0);
    assert_eq!(
        cell(&sim, OPP, &new, "Amount"),
        Some(CellValue::Number(2000.0))
    );
}

/// A list Anaplan will not return whole (over its read limit: 1,000,000 items in Anaplan, 3
/// here) is read through a read request, page by page; after the add it is not read again,
/// the new code is looked up. The new item's id reaches the engine, and the cells land.
#[tokio::test]
async fn a_list_over_the_read_limit_is_read_in_pages_for_its_item_ids() {
    let sim = start_over_read_limits().await;
    let rules = rules();
    let mut sink = sink(&sim, AnaplanSinkSettings::default());
    let new = opp(98);
    let batch =
        Batch::default()
            .opp(&new, "Amount", num("1500", 2))
            .opp(&opp(1), "Amount", num("7", 2));
    sim.clear_request_log();
    let report = write(&mut sink, &rules, &batch).await;
    assert_all_acked(&report, &batch);

    let key = |crm_id: &str| RecordKey {
        pairing: "opportunity".into(),
        crm_id: crm_id.into(),
    };
    let created = item(&sim, OPPS, &new).expect("the item was created");
    let existing = item(&sim, OPPS, &opp(1)).expect("a seeded item");
    assert!(
        report.items.contains(&(key(&new), created.id)),
        "{report:?}"
    );
    assert!(
        report.items.contains(&(key(&opp(1)), existing.id)),
        "{report:?}"
    );
    assert_eq!(
        cell(&sim, OPP, &new, "Amount"),
        Some(CellValue::Number(1500.0))
    );
    assert_eq!(
        cell(&sim, OPP, &opp(1), "Amount"),
        Some(CellValue::Number(7.0))
    );

    let log = sim.request_log();
    let refused = log
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/items") && r.status == 400)
        .count();
    assert_eq!(
        refused, 1,
        "the plain list read was tried and refused: {log:#?}"
    );
    let requests = log
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/readRequests"))
        .count();
    let pages = log
        .iter()
        .filter(|r| r.path.contains("/readRequests/") && r.path.contains("/pages/"))
        .count();
    assert_eq!(requests, 1, "one read request, before the add: {log:#?}");
    assert!(pages >= 2, "the list came in several pages: {pages}");
    assert_eq!(sim.read_requests(), 0, "every read request deleted");
    let add = log
        .iter()
        .position(|r| is_item_write(r, "POST"))
        .expect("an add call");
    let lookups: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method == "POST" && r.path.contains("/dimensions/"))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(lookups.len(), 1, "one lookup of the new code: {log:#?}");
    assert!(lookups[0] > add, "after the add");
    assert_eq!(log[lookups[0]].status, 200);
}

// ---------------------------------------------------------------------------------------------
// 3. Above the transactional limit, with an import configured: the same result, by import.

fn big_batch() -> Batch {
    let stages = [
        "Proposal",
        "Closed Won",
        "Negotiation",
        "Closed Lost",
        "Qualification",
    ];
    let mut b = Batch::default();
    // Opportunities 1 to 4 are the default model's; 5 is new to it, like 50 below.
    for n in 1..=5u32 {
        b = b
            .opp(&opp(n), "Amount", num(&format!("{n}000.5{n}"), 2))
            .opp(&opp(n), "StageName", text(stages[n as usize - 1]))
            .opp(&opp(n), "CloseDate", date(&format!("2027-02-0{n}")))
            .opp(&opp(n), "Probability", num(&format!("{}", n * 10), 0));
    }
    // A new record, created first, then loaded by the import too.
    b.opp(&opp(50), "Amount", num("777.77", 2))
        .opp(&opp(50), "StageName", text("Prospecting"))
        .opp(&opp(50), "CloseDate", Value::Null)
        .opp(&opp(50), "Probability", num("5", 0))
}

#[tokio::test]
async fn a_large_batch_goes_by_import_and_lands_as_the_transactional_one_does() {
    let rules = rules();
    let batch = big_batch();

    // The reference: the same batch written transactionally.
    let plain = start().await;
    let mut by_cells = sink(&plain, AnaplanSinkSettings::default());
    let report = write(&mut by_cells, &rules, &batch).await;
    assert_all_acked(&report, &batch);

    let bulk = start().await;
    let settings = AnaplanSinkSettings {
        transactional_max_cells: 5,
        bulk_imports: BTreeMap::from([("opportunity".to_string(), OPP_IMPORT.to_string())]),
    };
    let mut by_import = sink(&bulk, settings);
    bulk.clear_request_log();
    let report = write(&mut by_import, &rules, &batch).await;
    assert_all_acked(&report, &batch);

    assert_eq!(
        bulk.cells(MODEL, OPP).unwrap(),
        plain.cells(MODEL, OPP).unwrap(),
        "the import left the module as the cell writes did"
    );
    assert_eq!(
        cell(&bulk, OPP, &opp(2), "Stage"),
        Some(CellValue::Item("Won".into()))
    );
    assert_eq!(
        cell(&bulk, OPP, &opp(3), "Amount"),
        Some(CellValue::Number(3000.53))
    );
    assert!(item(&bulk, OPPS, &opp(50)).is_some());

    let log = bulk.request_log();
    assert_eq!(
        log.iter().filter(|r| is_cell_write(r)).count(),
        0,
        "{log:#?}"
    );
    let upload = log
        .iter()
        .position(|r| {
            r.method == "POST" && r.path.contains("/files/") && !r.path.ends_with("/complete")
        })
        .expect("an upload");
    assert!(
        log.iter()
            .any(|r| r.method == "PUT" && r.path.contains("/chunks/"))
    );
    let task = log
        .iter()
        .position(|r| {
            r.method == "POST" && r.path.contains("/imports/") && r.path.ends_with("/tasks")
        })
        .expect("an import task");
    assert!(upload < task);
    let add = log.iter().position(|r| is_item_write(r, "POST")).unwrap();
    assert!(add < upload, "the new item exists before the import runs");
    assert!(calls(&report, "import") >= 4, "{:?}", report.calls);
    assert_eq!(calls(&report, "cells"), 0);

    // A row Anaplan refuses: that record's requests are rejected with the dump's words, the
    // other rows are acknowledged.
    let mut bad = big_batch();
    bad.0[5].value = text("Bogus Stage"); // opp(2)'s StageName
    bad.0[0].value = num("4242.42", 2); // opp(1)'s Amount
    let report = write(&mut by_import, &rules, &bad).await;
    for req in &bad.0 {
        let o = outcome(&report, req.outbox_id);
        if req.record.crm_id == opp(2) {
            let WriteOutcome::Rejected { message } = o else {
                panic!("opp(2) {}: {o:?}", req.field)
            };
            assert!(message.contains("Bogus Stage"), "{message}");
            assert!(message.contains(OPP_IMPORT), "{message}");
        } else {
            assert!(
                matches!(o, WriteOutcome::Acked { .. }),
                "{}: {o:?}",
                req.field
            );
        }
    }
    assert_eq!(
        cell(&bulk, OPP, &opp(1), "Amount"),
        Some(CellValue::Number(4242.42))
    );
    assert_eq!(
        cell(&bulk, OPP, &opp(2), "Stage"),
        Some(CellValue::Item("Won".into())),
        "the refused value did not land"
    );
}

#[tokio::test]
async fn an_import_name_the_model_lacks_falls_back_to_cell_writes() {
    let sim = start().await;
    let rules = rules();
    // "Load Opportunities" is a process in the default seed, not an import.
    let settings = AnaplanSinkSettings {
        transactional_max_cells: 5,
        bulk_imports: BTreeMap::from([(
            "opportunity".to_string(),
            "Load Opportunities".to_string(),
        )]),
    };
    let mut sink = sink(&sim, settings);
    let batch = big_batch();
    sim.clear_request_log();
    let report = write(&mut sink, &rules, &batch).await;
    assert_all_acked(&report, &batch);
    assert_eq!(
        cell(&sim, OPP, &opp(3), "Amount"),
        Some(CellValue::Number(3000.53))
    );
    let log = sim.request_log();
    assert_eq!(log.iter().filter(|r| is_cell_write(r)).count(), 1);
    assert!(!log.iter().any(|r| r.path.contains("/tasks")), "{log:#?}");
}

// ---------------------------------------------------------------------------------------------
// 4. Refused cells: rejected with Anaplan's words; the rest of the call lands.

/// The rule set with two more opportunity fields: one mapped to a calculated line item and a
/// text field for a line item the module does not have.
fn rules_with_extra_fields() -> RuleSet {
    let mut rules = rules();
    let p = rules
        .pairings
        .iter_mut()
        .find(|p| p.name == "opportunity")
        .unwrap();
    let mut weighted = p.field("Amount").unwrap().clone();
    weighted.crm = "Weighted__c".into();
    weighted.id = "Opportunity.Weighted__c".into();
    weighted.anaplan = AnaplanField::LineItem("Weighted Amount".into());
    let mut missing = p.field("Amount").unwrap().clone();
    missing.crm = "Margin__c".into();
    missing.id = "Opportunity.Margin__c".into();
    missing.anaplan = AnaplanField::LineItem("Margin".into());
    p.fields.push(weighted);
    p.fields.push(missing);
    rules
}

#[tokio::test]
async fn refused_cells_are_rejected_with_the_remote_message_and_the_rest_lands() {
    let sim = start().await;
    let rules = rules_with_extra_fields();
    let mut sink = sink(&sim, AnaplanSinkSettings::default());
    let before_weighted = cell(&sim, OPP, &opp(1), "Weighted Amount");
    let batch = Batch::default()
        .opp(&opp(1), "Amount", num("200000", 2)) // 1
        .opp(&opp(1), "Weighted__c", num("5", 2)) // 2: calculated
        .opp(&opp(2), "StageName", text("Bogus Stage")) // 3: not an item of Stages
        .opp(&opp(2), "Probability", num("65", 0)) // 4
        .opp(&opp(3), "Margin__c", num("1", 2)) // 5: no such line item
        .opp(&opp(3), "NoSuchField", num("1", 2)) // 6: not in the rule file
        .add("nosuch", "X1", "Amount", num("1", 2)) // 7: no such pairing
        .opp(&opp(3), lifecycle::DELETE_RECORD, Value::Null); // 8: CRM-side
    sim.clear_request_log();
    let report = write(&mut sink, &rules, &batch).await;

    let calc = rejected(&report, 2);
    assert!(calc.contains("cellIsCalculated"), "{calc}");
    assert!(calc.contains("calculated"), "{calc}");
    let invalid = rejected(&report, 3);
    assert!(invalid.contains("cellIsInvalid"), "{invalid}");
    assert!(invalid.contains("Bogus Stage"), "{invalid}");
    assert!(rejected(&report, 5).contains("no line item `Margin`"));
    assert!(rejected(&report, 6).contains("NoSuchField"));
    assert!(rejected(&report, 7).contains("unknown pairing `nosuch`"));
    assert!(rejected(&report, 8).contains("not an Anaplan operation"));
    for id in [1, 4] {
        assert!(
            matches!(outcome(&report, id), WriteOutcome::Acked { .. }),
            "{id}: {:?}",
            outcome(&report, id)
        );
    }

    assert_eq!(
        cell(&sim, OPP, &opp(1), "Amount"),
        Some(CellValue::Number(200000.0))
    );
    assert_eq!(
        cell(&sim, OPP, &opp(2), "Probability"),
        Some(CellValue::Number(65.0))
    );
    assert_eq!(
        cell(&sim, OPP, &opp(2), "Stage"),
        Some(CellValue::Item("Negotiation".into()))
    );
    // The calculated cell still shows its formula's result (Amount changed, so did it).
    assert_ne!(cell(&sim, OPP, &opp(1), "Weighted Amount"), before_weighted);
    assert_eq!(
        cell(&sim, OPP, &opp(1), "Weighted Amount"),
        Some(CellValue::Number(80000.0))
    );
    let log = sim.request_log();
    assert_eq!(log.iter().filter(|r| is_cell_write(r)).count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 5. The tenant failing longer than the client retries: Retry for all, nothing lost.

#[tokio::test]
async fn a_tenant_down_past_the_retry_budget_is_unreachable_for_all_then_the_batch_lands() {
    let sim = start().await;
    let rules = rules();
    let client = client_with(&sim, Duration::from_millis(600));
    let mut sink = AnaplanSink::new(client.clone(), AnaplanSinkSettings::default());
    // A cold sink too: nothing resolved, nothing cached.
    let mut cold = AnaplanSink::new(client, AnaplanSinkSettings::default());
    // Warm the first sink (ids and items cached) with a small write.
    let warm = Batch::default().opp(&opp(4), "Probability", num("15", 0));
    assert_all_acked(&write(&mut sink, &rules, &warm).await, &warm);

    let batch = Batch::default()
        .opp(&opp(1), "Amount", num("111.11", 2))
        .opp(&opp(1), "Name", text("Renamed while down"))
        .opp(&opp(77), "Amount", num("7", 2)) // a new record
        .opp(&opp(2), lifecycle::DELETED_FLAG, Value::Bool(true))
        .add("territory", &ter(2), "Active__c", Value::Bool(false));
    let cells_before = sim.cells(MODEL, OPP).unwrap();
    let items_before = sim.list_items(MODEL, OPPS).unwrap();

    sim.set_faults(Faults {
        error_rate: 1.0,
        error_status: 503,
        include_auth: false,
        ..Faults::default()
    });
    for s in [&mut sink, &mut cold] {
        let report = write(s, &rules, &batch).await;
        assert_eq!(report.outcomes.len(), batch.0.len());
        for (id, o) in &report.outcomes {
            // The tenant could not be reached: every write waits, none counted against.
            let WriteOutcome::Unreachable { message } = o else {
                panic!("request {id}: {o:?}")
            };
            assert!(message.contains("503"), "{message}");
        }
    }
    assert!(sim.request_counts().faulted > 0);
    assert_eq!(
        sim.cells(MODEL, OPP).unwrap(),
        cells_before,
        "nothing written"
    );
    assert_eq!(sim.list_items(MODEL, OPPS).unwrap(), items_before);

    sim.set_faults(Faults::default());
    for s in [&mut sink, &mut cold] {
        let report = write(s, &rules, &batch).await;
        assert_all_acked(&report, &batch);
    }
    assert_eq!(
        cell(&sim, OPP, &opp(1), "Amount"),
        Some(CellValue::Number(111.11))
    );
    assert_eq!(
        item(&sim, OPPS, &opp(1)).unwrap().properties["Opportunity Name"],
        "Renamed while down"
    );
    assert_eq!(
        cell(&sim, OPP, &opp(77), "Amount"),
        Some(CellValue::Number(7.0))
    );
    assert_eq!(
        cell(&sim, OPP, &opp(2), "CRM Deleted"),
        Some(CellValue::Boolean(true))
    );
    assert_eq!(
        cell(&sim, TER, &ter(2), "Active"),
        Some(CellValue::Boolean(false))
    );
    // The new record's item exists once, though two sinks wrote it.
    let codes: Vec<_> = sim
        .list_items(MODEL, OPPS)
        .unwrap()
        .into_iter()
        .filter(|i| i.code.as_deref() == Some(opp(77).as_str()))
        .collect();
    assert_eq!(codes.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 6. Lifecycle operations.

#[tokio::test]
async fn lifecycle_flag_delete_and_ensure() {
    let sim = start().await;
    let rules = rules();
    let mut sink = sink(&sim, AnaplanSinkSettings::default());
    let batch = Batch::default()
        .opp(&opp(1), lifecycle::DELETED_FLAG, Value::Bool(true)) // 1
        .opp(&opp(3), lifecycle::DELETE_ITEM, Value::Null) // 2
        .opp(&opp(404), lifecycle::DELETE_ITEM, Value::Null) // 3: never existed
        .opp(&opp(60), lifecycle::ENSURE_ITEM, Value::Null) // 4: new
        .opp(&opp(4), lifecycle::ENSURE_ITEM, Value::Null) // 5: exists
        .add(
            "territory",
            &ter(1),
            lifecycle::DELETED_FLAG,
            Value::Bool(true),
        ); // 6
    assert_ne!(
        cell(&sim, OPP, &opp(1), "CRM Deleted"),
        Some(CellValue::Boolean(true))
    );
    let report = write(&mut sink, &rules, &batch).await;
    for id in 1..=5 {
        assert!(
            matches!(outcome(&report, id), WriteOutcome::Acked { .. }),
            "{id}: {:?}",
            outcome(&report, id)
        );
    }
    assert!(rejected(&report, 6).contains("no lifecycle.deleted_flag"));

    assert_eq!(
        cell(&sim, OPP, &opp(1), "CRM Deleted"),
        Some(CellValue::Boolean(true))
    );
    assert!(item(&sim, OPPS, &opp(1)).is_some(), "flagged, not deleted");
    assert!(item(&sim, OPPS, &opp(3)).is_none(), "deleted");
    assert!(!sim.cells(MODEL, OPP).unwrap().contains_key(&opp(3)));
    let ensured = item(&sim, OPPS, &opp(60)).expect("ensured");
    assert!(report.items.contains(&(
        RecordKey {
            pairing: "opportunity".into(),
            crm_id: opp(60)
        },
        ensured.id
    )));
    assert!(
        !report.items.iter().any(|(k, _)| k.crm_id == opp(3)),
        "a deleted item is not reported"
    );

    // Clearing the flag (an undelete) and deleting an item already gone.
    let batch = Batch::default()
        .opp(&opp(1), lifecycle::DELETED_FLAG, Value::Bool(false))
        .opp(&opp(3), lifecycle::DELETE_ITEM, Value::Null);
    let report = write(&mut sink, &rules, &batch).await;
    assert_all_acked(&report, &batch);
    assert_eq!(
        cell(&sim, OPP, &opp(1), "CRM Deleted"),
        Some(CellValue::Boolean(false))
    );
}

// ---------------------------------------------------------------------------------------------
// 7. An item Anaplan will not create: none of the record's writes happen.

#[tokio::test]
async fn a_record_whose_item_cannot_be_created_is_rejected_whole() {
    let sim = start().await;
    let rules = rules();
    let mut sink = sink(&sim, AnaplanSinkSettings::default());
    // The item would be named after its code, and an item is already named so: Anaplan
    // refuses a duplicate name.
    let clash = "OPP-0002";
    let amount_before = cell(&sim, OPP, &opp(2), "Amount");
    let batch = Batch::default()
        .opp(clash, "Amount", num("999", 2)) // 1
        .opp(clash, "Name", text("Clashing deal")) // 2
        .opp(clash, "StageName", text("Proposal")) // 3
        .opp(&opp(61), "Amount", num("61", 2)) // 4: a new record that can be created
        .opp(&opp(1), "Probability", num("41", 0)); // 5
    sim.clear_request_log();
    let report = write(&mut sink, &rules, &batch).await;
    for id in 1..=3 {
        let message = rejected(&report, id);
        assert!(
            message.starts_with("list item could not be created: "),
            "{message}"
        );
        assert!(message.contains("duplicate name"), "{message}");
        assert!(message.contains(clash), "{message}");
    }
    for id in 4..=5 {
        assert!(
            matches!(outcome(&report, id), WriteOutcome::Acked { .. }),
            "{id}: {:?}",
            outcome(&report, id)
        );
    }
    assert!(item(&sim, OPPS, clash).is_none());
    assert!(item(&sim, OPPS, &opp(61)).is_some());
    assert_eq!(
        cell(&sim, OPP, &opp(61), "Amount"),
        Some(CellValue::Number(61.0))
    );
    // Nothing of the refused record was written, not even to the item named like it.
    assert_eq!(cell(&sim, OPP, &opp(2), "Amount"), amount_before);
    assert!(!sim.cells(MODEL, OPP).unwrap().contains_key(clash));
    assert_eq!(
        item(&sim, OPPS, &opp(2)).unwrap().properties["Opportunity Name"],
        "Globex expansion"
    );
    assert!(!report.items.iter().any(|(k, _)| k.crm_id == clash));
    let log = sim.request_log();
    assert_eq!(log.iter().filter(|r| is_cell_write(r)).count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 8. A write that expects a value: not written when a planner changed the cell since.

/// Two checked writes of Probability from a fresh sink, with the request log cleared first:
/// opportunity 1 expected at 40 (still true: written 55), opportunity 3 expected at 25 (a
/// planner has moved the seeded value to 20: `Stale`, not written).
async fn checked_writes(sim: &SimHandle) -> WriteReport {
    let rules = rules();
    let mut sink = sink(sim, AnaplanSinkSettings::default());
    let mut batch = Batch::default()
        .opp(&opp(1), "Probability", num("55", 0))
        .opp(&opp(3), "Probability", num("35", 0));
    batch.0[0].expect = Some(num("40", 0));
    batch.0[1].expect = Some(num("25", 0));
    sim.clear_request_log();
    let report = write(&mut sink, &rules, &batch).await;
    assert!(
        matches!(outcome(&report, 1), WriteOutcome::Acked { .. }),
        "{report:?}"
    );
    match outcome(&report, 2) {
        WriteOutcome::Stale { current } => assert_eq!(*current, num("20", 0)),
        other => panic!("expected Stale, got {other:?}"),
    }
    assert_eq!(
        cell(sim, OPP, &opp(1), "Probability"),
        Some(CellValue::Number(55.0))
    );
    assert_eq!(
        cell(sim, OPP, &opp(3), "Probability"),
        Some(CellValue::Number(20.0)),
        "the unexpected value is left alone"
    );
    report
}

#[tokio::test]
async fn a_checked_write_is_not_made_over_an_edit_it_did_not_expect() {
    let sim = start().await;
    let report = checked_writes(&sim).await;
    // The check costs a list read and a view read; the write is still one call.
    let log = sim.request_log();
    assert_eq!(log.iter().filter(|r| is_cell_write(r)).count(), 1);
    assert!(calls(&report, "view") == 1, "{:?}", report.calls);
}

/// The same check on a model over Anaplan's read limits (1,000,000 items or cells; 3 here):
/// the list and the module are read through read requests, page by page, keeping only the
/// checked items, and the check answers as it does on a small model.
#[tokio::test]
async fn a_checked_write_on_a_model_over_the_read_limits_reads_it_in_pages() {
    let sim = start_over_read_limits().await;
    let report = checked_writes(&sim).await;
    let log = sim.request_log();
    let created: Vec<&str> = log
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/readRequests"))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(
        created.iter().filter(|p| p.contains("/lists/")).count(),
        2,
        "the cache's list read and the check's: {created:#?}"
    );
    assert_eq!(
        created.iter().filter(|p| p.contains("/views/")).count(),
        1,
        "the check's module read: {created:#?}"
    );
    assert_eq!(sim.read_requests(), 0, "every read request deleted");
    assert_eq!(log.iter().filter(|r| is_cell_write(r)).count(), 1);
    // A refused plain read and its paged read count one each, as the poller counts them.
    assert_eq!(calls(&report, "view"), 2, "{:?}", report.calls);
}
