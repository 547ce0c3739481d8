//! The Anaplan poller (`plansync::engine::anaplan_poll`) against the Anaplan simulator over
//! real loopback sockets, with the shadow in a temporary SQLite store. Edits are made the way
//! a planner's would arrive (cell and list item writes through the API); each test checks the
//! poll's report against the simulator's own state and the store.

use crate::support::anaplan_sim;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use plansync::anaplan::{
    AnaplanClient, AnaplanConfig, AuthMethod, CellValue, CellWrite, DimRef, ItemRef, LineItemRef,
    ListItemWrite, RetryPolicy,
};
use plansync::engine::anaplan_poll::{
    AnaplanPollError, AnaplanPollOutcome, PollLimits, PollParts, poll_anaplan,
    poll_resolved_each_with, resolve_target,
};
use plansync::engine::anaplan_target::ReadLimits;
use plansync::model::{ChangeKind, Decimal, ExceptionKind, Side, Source, Value, ValueKind};
use plansync::rules::Pairing;
use plansync::rules::ruleset::AnaplanField;
use plansync::secret::Secret;
use plansync::store::{Batch, FieldKey, Observed, ShadowUpsert, Store};
use plansync_sim::anaplan::{self as sim, Seed, SimConfig, SimHandle};
use serde_json::Value as Json;

const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";
const OPP: &str = "OPP01 Opportunity Data";
const OPPS: &str = "Opportunities";
const LONG: Duration = Duration::from_secs(60);

/// The code of the default model's opportunity `n`: the CRM simulator's id of its record `n`
/// (its ids are base 62, so this holds for n below 10; larger n are codes of test items).
fn opp(n: u32) -> String {
    format!("0065g{n:010}AAA")
}

fn t(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 10, 15, minute, 0)
        .single()
        .unwrap_or_default()
}

fn pairing() -> Pairing {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/opportunity.toml");
    plansync::rules::load_file(&path).expect("the example rule file compiles")
}

async fn start(seed: Seed) -> SimHandle {
    anaplan_sim(SimConfig {
        seed,
        ..SimConfig::default()
    })
    .await
}

fn client(sim: &SimHandle) -> AnaplanClient {
    let auth = AuthMethod::Basic {
        user: sim::DEFAULT_USER.into(),
        password: Secret::new(sim::DEFAULT_PASSWORD),
    };
    let mut c = AnaplanConfig::new(sim.auth_url(), sim.api_url(), auth);
    c.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(300),
        max_elapsed: Duration::from_secs(30),
    };
    c.request_timeout = Duration::from_secs(20);
    AnaplanClient::new(c).unwrap()
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LONG, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {LONG:?}"))
}

fn open_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("plansync.db")).unwrap();
    (dir, store)
}

/// What the simulator holds now for every mapped field, read through its introspection (not
/// through the client), normalised by the rules: the shadow after a sync that saw all of it.
/// Unset cells show 0 (number line items), false (booleans) or blank, as Anaplan shows them;
/// `text_items` are line items this model formats as text although the rule reads a number.
fn sim_values_with(
    sim: &SimHandle,
    pairing: &Pairing,
    text_items: &[&str],
) -> HashMap<String, HashMap<String, Value>> {
    let cells = sim.cells(MODEL, OPP).unwrap();
    let mut out = HashMap::new();
    for item in sim.list_items(MODEL, OPPS).unwrap() {
        let code = item.code.clone().unwrap();
        let row = cells.get(&code).cloned().unwrap_or_default();
        let mut fields = HashMap::new();
        for rule in &pairing.fields {
            let raw = match &rule.anaplan {
                AnaplanField::ListProperty(p) => {
                    item.properties.get(p).cloned().unwrap_or_default()
                }
                AnaplanField::LineItem(li) => match (row.get(li), rule.kind) {
                    (Some(v), _) => v.to_string(),
                    (None, ValueKind::Number { .. }) if !text_items.contains(&li.as_str()) => {
                        "0".into()
                    }
                    (None, _) => String::new(),
                },
            };
            let value = rule
                .normalise(Side::Anaplan, &Json::String(raw))
                .expect("the seed's values are mapped");
            fields.insert(rule.crm.clone(), value);
        }
        out.insert(code, fields);
    }
    out
}

fn sim_values(sim: &SimHandle, pairing: &Pairing) -> HashMap<String, HashMap<String, Value>> {
    sim_values_with(sim, pairing, &[])
}

/// Stores `values` as the values seen in Anaplan (and agreed), through the store's batch API.
fn seed_shadow(
    store: &mut Store,
    pairing: &Pairing,
    values: &HashMap<String, HashMap<String, Value>>,
    at: DateTime<Utc>,
) {
    let mut batch = Batch::new(at);
    for (code, fields) in values {
        for (field, value) in fields {
            let rule = pairing.field(field).unwrap();
            let seen = Some(Observed {
                value: value.clone(),
                at,
                source: Source::Poll,
            });
            batch.upsert_shadow(ShadowUpsert {
                key: FieldKey::new(&pairing.name, code, field),
                kind: rule.kind,
                base: seen.clone(),
                seen_crm: seen.clone(),
                seen_anaplan: seen,
                in_flight: None,
                held: None,
                last_ack: None,
            });
        }
    }
    store.commit(&batch).unwrap();
}

async fn poll(client: &AnaplanClient, store: &Store, at: DateTime<Utc>) -> AnaplanPollOutcome {
    let pairing = pairing();
    let seen = store.anaplan_seen(&pairing.name).unwrap();
    within("poll", poll_anaplan(client, &pairing, &seen, at))
        .await
        .unwrap()
}

fn cell(code: &str, line_item: &str, value: CellValue) -> CellWrite {
    CellWrite {
        line_item: LineItemRef::Name(line_item.into()),
        dimensions: vec![(DimRef::Name(OPPS.into()), ItemRef::Code(code.into()))],
        value,
    }
}

/// (code, field, value) of every changed field, in the poll's order.
fn changed(out: &AnaplanPollOutcome) -> Vec<(String, String, Json)> {
    out.changes
        .iter()
        .flat_map(|c| {
            c.fields
                .iter()
                .map(|f| (c.record.crm_id.clone(), f.field.clone(), f.value.clone()))
        })
        .collect()
}

#[tokio::test]
async fn an_unchanged_model_reports_nothing_and_the_store_holds_what_was_seeded() {
    let sim = start(Seed::default_seed()).await;
    let c = client(&sim);
    let (_dir, mut store) = open_store();
    let pairing = pairing();
    let values = sim_values(&sim, &pairing);
    seed_shadow(&mut store, &pairing, &values, t(0));
    assert_eq!(store.anaplan_seen(&pairing.name).unwrap(), values);

    sim.clear_request_log();
    let out = poll(&c, &store, t(5)).await;
    assert_eq!(out.changes, [], "problems: {:?}", out.problems);
    assert_eq!(out.problems, []);
    assert_eq!(out.new_items, Vec::<String>::new());
    assert_eq!(out.items, 4);
    // Two name resolutions, the list's item count, the list read, the view read: and nothing
    // else went to the API.
    assert_eq!(out.calls, 5);
    let api_calls = sim
        .request_log()
        .iter()
        .filter(|r| r.path.starts_with("/2/0/"))
        .count();
    assert_eq!(api_calls, 5, "{:?}", sim.request_log());
    // Flags as the simulator holds them: only OPP-0004 is approved.
    let approved: BTreeMap<String, bool> = out
        .flags
        .iter()
        .map(|(code, f)| (code.clone(), f["Approved"]))
        .collect();
    let expected: BTreeMap<String, bool> = (1..=4).map(|n| (opp(n), n == 4)).collect();
    assert_eq!(approved, expected);
    sim.shutdown().await;
}

#[tokio::test]
async fn written_cells_come_back_as_exactly_those_fields_normalised() {
    let sim = start(Seed::default_seed()).await;
    let c = client(&sim);
    let (_dir, mut store) = open_store();
    let pairing = pairing();
    seed_shadow(&mut store, &pairing, &sim_values(&sim, &pairing), t(0));

    let cells = [
        cell(&opp(3), "Stage", CellValue::Text("Won".into())),
        cell(
            &opp(1),
            "Amount",
            CellValue::Number(Decimal::parse("33000.125", 3).unwrap()),
        ),
        cell(
            &opp(2),
            "Forecast Override",
            CellValue::Number(Decimal::parse("450000", 0).unwrap()),
        ),
    ];
    let module = within("module id", c.module_id(MODEL, OPP)).await.unwrap();
    let wrote = within("write", c.write_cells(MODEL, &module, &cells))
        .await
        .unwrap();
    assert_eq!(wrote.failures, []);
    let list = within("list id", c.list_id(MODEL, OPPS)).await.unwrap();
    let rename = ListItemWrite {
        code: opp(4),
        properties: [("Opportunity Name".to_string(), "Umbrella AI".to_string())].into(),
        ..ListItemWrite::default()
    };
    let renamed = within("rename", c.update_list_items(MODEL, &list, &[rename]))
        .await
        .unwrap();
    assert_eq!(renamed.failures, []);

    // The simulator holds what was written.
    let held = sim.cells(MODEL, OPP).unwrap();
    assert_eq!(held[&opp(3)]["Stage"], sim::CellValue::Item("Won".into()));
    assert_eq!(held[&opp(1)]["Amount"], sim::CellValue::Number(33000.125));

    let out = poll(&c, &store, t(5)).await;
    assert_eq!(out.problems, []);
    // The forecast override was written with the value it already had: no change.
    assert_eq!(
        changed(&out),
        [
            (opp(1), "Amount".into(), Json::from("33000.13")),
            (opp(3), "StageName".into(), Json::from("Closed Won")),
            (opp(4), "Name".into(), Json::from("Umbrella AI")),
        ]
    );
    for ch in &out.changes {
        assert_eq!(ch.kind, ChangeKind::Update);
        assert_eq!(ch.side, Side::Anaplan);
        assert_eq!(ch.source, Source::Poll);
        assert_eq!(ch.committed_at, t(5));
        assert!(!ch.ours);
    }

    // Once the engine records what it saw, the same model polls clean.
    seed_shadow(&mut store, &pairing, &sim_values(&sim, &pairing), t(6));
    let seen = store.anaplan_seen(&pairing.name).unwrap();
    assert_eq!(
        seen[&opp(3)]["StageName"],
        Value::Text("Closed Won".into()),
        "the shadow keeps the CRM vocabulary"
    );
    let again = poll(&c, &store, t(10)).await;
    assert_eq!(again.changes, []);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_deleted_item_is_a_delete_and_a_new_item_is_reported_as_new() {
    let sim = start(Seed::default_seed()).await;
    let c = client(&sim);
    let (_dir, mut store) = open_store();
    let pairing = pairing();
    seed_shadow(&mut store, &pairing, &sim_values(&sim, &pairing), t(0));

    let list = within("list id", c.list_id(MODEL, OPPS)).await.unwrap();
    let deleted = within("delete", c.delete_list_items(MODEL, &list, &[opp(4)]))
        .await
        .unwrap();
    assert_eq!((deleted.deleted, deleted.failures.len()), (1, 0));
    let new = ListItemWrite {
        code: opp(9),
        name: Some("OPP-0009".into()),
        properties: [("Opportunity Name".to_string(), "Planner's idea".to_string())].into(),
        ..ListItemWrite::default()
    };
    let added = within("add", c.add_list_items(MODEL, &list, &[new]))
        .await
        .unwrap();
    assert_eq!((added.added, added.failures.len()), (1, 0));
    let codes: Vec<String> = sim
        .list_items(MODEL, OPPS)
        .unwrap()
        .into_iter()
        .filter_map(|i| i.code)
        .collect();
    assert!(!codes.contains(&opp(4)) && codes.contains(&opp(9)));

    let out = poll(&c, &store, t(5)).await;
    assert_eq!(out.problems, []);
    assert_eq!(out.new_items, [opp(9)]);
    assert_eq!(out.changes.len(), 2, "{:?}", out.changes);
    let added = &out.changes[0];
    assert_eq!(
        (added.record.crm_id.as_str(), added.kind),
        (opp(9).as_str(), ChangeKind::Create)
    );
    assert!(
        added
            .fields
            .iter()
            .any(|f| f.field == "Name" && f.value == "Planner's idea"),
        "{added:?}"
    );
    let gone = &out.changes[1];
    assert_eq!(
        (gone.record.crm_id.as_str(), gone.kind),
        (opp(4).as_str(), ChangeKind::Delete)
    );
    assert!(gone.fields.is_empty());
    assert!(out.flags.contains_key(&opp(9)) && !out.flags.contains_key(&opp(4)));
    // The poll only reports: the shadow still knows the deleted item.
    assert!(
        store
            .anaplan_seen(&pairing.name)
            .unwrap()
            .contains_key(&opp(4))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn values_that_cannot_be_normalised_are_problems_not_changes() {
    // A model where someone made Forecast Override a text line item: a planner can type
    // anything there.
    let toml = sim::DEFAULT_SEED_TOML.replace(
        r#"{ name = "Forecast Override", format = "number" }"#,
        r#"{ name = "Forecast Override", format = "text" }"#,
    );
    assert_ne!(toml, sim::DEFAULT_SEED_TOML);
    let seed = Seed::from_toml_str(&toml, "test").unwrap();
    let sim = start(seed).await;
    let c = client(&sim);
    let (_dir, mut store) = open_store();
    let pairing = pairing();
    seed_shadow(
        &mut store,
        &pairing,
        &sim_values_with(&sim, &pairing, &["Forecast Override"]),
        t(0),
    );

    // A stage the rules have no mapping for.
    let stages = within("stages id", c.list_id(MODEL, "Stages"))
        .await
        .unwrap();
    let on_hold = ListItemWrite {
        code: "HOLD".into(),
        name: Some("On Hold".into()),
        ..ListItemWrite::default()
    };
    let added = within("add stage", c.add_list_items(MODEL, &stages, &[on_hold]))
        .await
        .unwrap();
    assert_eq!(added.failures, []);
    let cells = [
        cell(&opp(2), "Stage", CellValue::Text("On Hold".into())),
        cell(&opp(3), "Forecast Override", CellValue::Text("n/a".into())),
        cell(&opp(3), "Close Date", CellValue::Text("".into())),
    ];
    let module = within("module id", c.module_id(MODEL, OPP)).await.unwrap();
    let wrote = within("write", c.write_cells(MODEL, &module, &cells))
        .await
        .unwrap();
    assert_eq!(wrote.failures, []);

    let out = poll(&c, &store, t(5)).await;
    let problems: Vec<_> = out
        .problems
        .iter()
        .map(|p| (p.code.clone(), p.field.clone(), p.raw.clone(), p.kind))
        .collect();
    assert_eq!(
        problems,
        [
            (
                opp(2),
                Some("StageName".into()),
                "On Hold".into(),
                ExceptionKind::Unmapped
            ),
            (
                opp(3),
                Some("Forecast_Override__c".into()),
                "n/a".into(),
                ExceptionKind::Validation
            ),
        ]
    );
    // The bad fields are left out; the good edit on the same item still comes through.
    assert_eq!(
        changed(&out),
        [(opp(3), "CloseDate".into(), Json::Null)],
        "a cleared date is a change to null"
    );
    sim.shutdown().await;
}

/// Adds `n` opportunities (codes `006…BBB`, names `OPP-1000`…) with an amount each.
async fn grow(c: &AnaplanClient, n: u32) {
    let list = within("list id", c.list_id(MODEL, OPPS)).await.unwrap();
    let module = within("module id", c.module_id(MODEL, OPP)).await.unwrap();
    let items: Vec<ListItemWrite> = (0..n)
        .map(|i| ListItemWrite {
            code: format!("006{i:012}BBB"),
            name: Some(format!("OPP-{}", 1000 + i)),
            properties: [("Opportunity Name".to_string(), format!("Deal, {i}"))].into(),
            ..ListItemWrite::default()
        })
        .collect();
    let added = within("add", c.add_list_items(MODEL, &list, &items))
        .await
        .unwrap();
    assert_eq!((added.added, added.failures.len()), (u64::from(n), 0));
    let cells: Vec<CellWrite> = (0..n)
        .map(|i| {
            cell(
                &format!("006{i:012}BBB"),
                "Amount",
                CellValue::Number(Decimal::parse(&format!("{}.5", i * 10), 1).unwrap()),
            )
        })
        .collect();
    let wrote = within("write", c.write_cells(MODEL, &module, &cells))
        .await
        .unwrap();
    assert_eq!(wrote.failures, []);
}

/// A planner's edits of every kind: a cell, a renamed item, an item deleted, an item added.
async fn edit(c: &AnaplanClient) {
    let list = within("list id", c.list_id(MODEL, OPPS)).await.unwrap();
    let module = within("module id", c.module_id(MODEL, OPP)).await.unwrap();
    let cells = [
        cell(&opp(3), "Stage", CellValue::Text("Won".into())),
        cell(
            "006000000000007BBB",
            "Amount",
            CellValue::Number(Decimal::parse("1234.5", 1).unwrap()),
        ),
    ];
    let wrote = within("write", c.write_cells(MODEL, &module, &cells))
        .await
        .unwrap();
    assert_eq!(wrote.failures, []);
    let rename = ListItemWrite {
        code: "006000000000011BBB".into(),
        properties: [("Opportunity Name".to_string(), "Renamed".to_string())].into(),
        ..ListItemWrite::default()
    };
    let renamed = within("rename", c.update_list_items(MODEL, &list, &[rename]))
        .await
        .unwrap();
    assert_eq!(renamed.failures, []);
    let deleted = within("delete", c.delete_list_items(MODEL, &list, &[opp(4)]))
        .await
        .unwrap();
    assert_eq!(deleted.deleted, 1);
    let new = ListItemWrite {
        code: opp(9),
        name: Some("OPP-0009".into()),
        properties: [("Opportunity Name".to_string(), "Planner's idea".to_string())].into(),
        ..ListItemWrite::default()
    };
    let added = within("add", c.add_list_items(MODEL, &list, &[new]))
        .await
        .unwrap();
    assert_eq!(added.failures.len(), 0);
}

/// One poll with ids resolved and the given limits, all parts collected.
async fn poll_with(
    c: &AnaplanClient,
    store: &Store,
    at: DateTime<Utc>,
    limits: PollLimits,
) -> AnaplanPollOutcome {
    let pairing = pairing();
    let target = within("resolve", resolve_target(c, &pairing))
        .await
        .unwrap();
    let seen = store.anaplan_seen(&pairing.name).unwrap();
    let mut out = AnaplanPollOutcome::default();
    within(
        "poll",
        poll_resolved_each_with(c, &pairing, &target, &seen, at, limits, &mut out),
    )
    .await
    .unwrap();
    out
}

/// An outcome without the order of its parts (a paged poll reports in view order).
fn unordered(o: &AnaplanPollOutcome) -> impl PartialEq + std::fmt::Debug {
    let mut changes: Vec<String> = o.changes.iter().map(|c| format!("{c:?}")).collect();
    changes.sort();
    let mut problems: Vec<String> = o.problems.iter().map(|p| format!("{p:?}")).collect();
    problems.sort();
    let mut new_items = o.new_items.clone();
    new_items.sort();
    let flags: BTreeMap<String, BTreeMap<String, bool>> = o
        .flags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (changes, problems, new_items, flags, o.items)
}

/// (method, path) of the API calls the simulator logged, without the API prefix.
fn api_log(sim: &SimHandle) -> Vec<(String, String)> {
    sim.request_log()
        .into_iter()
        .filter_map(|r| {
            let path = r.path.strip_prefix("/2/0")?.to_string();
            Some((r.method, path))
        })
        .collect()
}

#[tokio::test]
async fn a_list_over_the_paging_threshold_is_indexed_page_by_page_with_the_same_outcome() {
    let sim = anaplan_sim(SimConfig {
        read_page_bytes: 500,
        read_request_step: Duration::from_millis(20),
        ..SimConfig::default()
    })
    .await;
    let c = client(&sim);
    let (_dir, mut store) = open_store();
    let pairing = pairing();
    grow(&c, 40).await;
    seed_shadow(&mut store, &pairing, &sim_values(&sim, &pairing), t(0));
    edit(&c).await;

    sim.clear_request_log();
    let plain = poll_with(&c, &store, t(5), PollLimits::default()).await;
    // The item count, the list, the view: each read whole.
    assert_eq!(plain.calls, 3);
    let log = api_log(&sim);
    assert_eq!(log.len(), 5, "{log:?}");
    assert!(log[2].1.ends_with("/lists/101000000002"), "{log:?}");
    assert!(
        log[3].1.ends_with("/items") && log[4].1.ends_with("/data"),
        "{log:?}"
    );

    sim.clear_request_log();
    let limits = PollLimits {
        read: ReadLimits {
            paged_list_items: 10,
            ..ReadLimits::default()
        },
        ..PollLimits::default()
    };
    let paged = poll_with(&c, &store, t(5), limits).await;
    assert_eq!(
        paged.calls, 3,
        "the count, a list read request, a view read request"
    );
    let log = api_log(&sim);
    assert!(
        !log.iter()
            .any(|(_, p)| p.ends_with("/items") || p.ends_with("/data")),
        "no plain read: {log:?}"
    );
    let list_pages = log
        .iter()
        .filter(|(_, p)| p.contains("/lists/") && p.contains("/pages/"))
        .count();
    let view_pages = log
        .iter()
        .filter(|(_, p)| p.contains("/views/") && p.contains("/pages/"))
        .count();
    assert!(list_pages >= 2 && view_pages >= 2, "{log:?}");
    assert_eq!(sim.read_requests(), 0, "both read requests deleted");

    assert_eq!(unordered(&paged), unordered(&plain));
    assert_eq!(plain.items, 44);
    assert_eq!(plain.problems, []);
    assert_eq!(plain.new_items, [opp(9)]);
    let kinds: Vec<(String, ChangeKind)> = plain
        .changes
        .iter()
        .map(|c| (c.record.crm_id.clone(), c.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("006000000000007BBB".to_string(), ChangeKind::Update),
            ("006000000000011BBB".to_string(), ChangeKind::Update),
            (opp(3), ChangeKind::Update),
            (opp(9), ChangeKind::Create),
            (opp(4), ChangeKind::Delete),
        ]
    );
    let fields: Vec<(String, String, Json)> = changed(&plain)
        .into_iter()
        .filter(|(code, _, _)| code != &opp(9))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "006000000000007BBB".into(),
                "Amount".into(),
                Json::from("1234.50")
            ),
            (
                "006000000000011BBB".into(),
                "Name".into(),
                Json::from("Renamed")
            ),
            (opp(3), "StageName".into(), Json::from("Closed Won")),
        ]
    );
    assert_eq!(paged.flags.len(), 44);
    sim.shutdown().await;
}

/// The parts of one poll as they were handed over.
#[derive(Default)]
struct Parts(Vec<AnaplanPollOutcome>);

impl PollParts for Parts {
    async fn part(&mut self, part: AnaplanPollOutcome) -> Result<(), AnaplanPollError> {
        self.0.push(part);
        Ok(())
    }
}

#[tokio::test]
async fn a_paged_poll_hands_a_page_on_in_parts_of_a_bounded_number_of_items() {
    // One page holds every row: without parts its changes would all be held at once.
    let sim = anaplan_sim(SimConfig::default()).await;
    let c = client(&sim);
    let (_dir, store) = open_store();
    let pairing = pairing();
    grow(&c, 40).await;
    let target = within("resolve", resolve_target(&c, &pairing))
        .await
        .unwrap();
    let seen = store.anaplan_seen(&pairing.name).unwrap();
    let limits = PollLimits {
        read: ReadLimits {
            paged_list_items: 10,
            ..ReadLimits::default()
        },
        part_items: 4,
    };
    sim.clear_request_log();
    let mut parts = Parts::default();
    within(
        "poll",
        poll_resolved_each_with(&c, &pairing, &target, &seen, t(5), limits, &mut parts),
    )
    .await
    .unwrap();
    let view_pages = api_log(&sim)
        .iter()
        .filter(|(_, p)| p.contains("/views/") && p.contains("/pages/"))
        .count();
    assert_eq!(view_pages, 1, "{:?}", api_log(&sim));
    let (last, rows) = parts.0.split_last().expect("parts");
    let sizes: Vec<usize> = rows.iter().map(|p| p.changes.len()).collect();
    assert!(sizes.iter().all(|n| *n <= 4), "{sizes:?}");
    // Every item is new to the empty shadow: each is one change, in some part.
    let total: usize = sizes.iter().sum::<usize>() + last.changes.len();
    assert_eq!(total, last.items, "{sizes:?}");
    assert!(sizes.len() >= last.items / 4, "{sizes:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_stale_count_falls_back_to_read_requests_when_the_plain_reads_are_refused() {
    // 34 items: within the paging threshold by the count, but over the simulator's 20-item and
    // 20-cell read limits, so both plain reads are refused with 400 and read in pages instead.
    let sim = anaplan_sim(SimConfig {
        max_read: 20,
        read_page_bytes: 400,
        read_request_step: Duration::from_millis(20),
        ..SimConfig::default()
    })
    .await;
    let c = client(&sim);
    let (_dir, mut store) = open_store();
    let pairing = pairing();
    grow(&c, 30).await;
    seed_shadow(&mut store, &pairing, &sim_values(&sim, &pairing), t(0));
    let module = within("module id", c.module_id(MODEL, OPP)).await.unwrap();
    let cells = [cell(
        "006000000000029BBB",
        "Probability",
        CellValue::Number(Decimal::parse("97", 0).unwrap()),
    )];
    let wrote = within("write", c.write_cells(MODEL, &module, &cells))
        .await
        .unwrap();
    assert_eq!(wrote.failures, []);

    sim.clear_request_log();
    let out = poll_with(&c, &store, t(5), PollLimits::default()).await;
    assert_eq!(out.problems, []);
    assert_eq!(
        changed(&out),
        [(
            "006000000000029BBB".into(),
            "Probability".into(),
            Json::from("97")
        )]
    );
    assert_eq!(out.items, 34);
    assert_eq!(
        out.calls, 5,
        "count, refused list read, list pages, refused view, view pages"
    );
    let refused = sim.request_log().iter().filter(|r| r.status == 400).count();
    assert_eq!(refused, 2);
    assert_eq!(sim.read_requests(), 0);
    sim.shutdown().await;
}
