//! The engine end to end: both simulators on loopback sockets, the engine in-process with its
//! real clients, sinks and SQLite file, and assertions on the final state of both systems and
//! of the store. (The crash test, which needs a separate process, is `engine_crash.rs`.)

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;
use plansync::anaplan::ListItemWrite;
use plansync::model::{ExceptionKind, ExceptionStatus};
use plansync::store::{Resolution, ResolutionHow, Store};
use plansync_sim::anaplan::{self as asim, SimConfig};
use plansync_sim::crm::CrmSimConfig;
use serde_json::json;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_edit_reaches_the_anaplan_cell_through_the_stream() {
    let mut env = Env::new(&rules_dir()).await;
    // A deal only the CRM has (the default model holds the default org's others): the first
    // reconciliation creates its item and writes the CRM-owned values.
    let id = env
        .crm
        .create(
            "Opportunity",
            json!({ "Name": "Vandelay imports", "Amount": 64000, "StageName": "Proposal",
                    "CloseDate": "2027-02-12", "Probability": 50 }),
            None,
        )
        .expect("create");
    env.start(true).await;
    env.settle().await;
    assert!(
        env.anaplan
            .list_items(MODEL, OPP_LIST)
            .expect("list")
            .iter()
            .any(|i| i.code.as_deref() == Some(id.as_str())),
        "the first run created the deal's item"
    );
    assert_eq!(
        env.cell(&id, "Amount").and_then(|c| c.parse::<f64>().ok()),
        env.crm_field(&id, "Amount").as_f64()
    );

    let started = Instant::now();
    env.rep_edits(&id, json!({ "Amount": 133000.5 }));
    env.wait_cell(&id, "Amount", "133000.5").await;
    let took = started.elapsed();
    eprintln!("CRM commit → Anaplan cell: {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    env.settle().await;
    assert!(env.exceptions(Some(ExceptionKind::WriteFailed)).is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anaplan_edit_reaches_the_crm_at_the_next_poll() {
    let mut env = Env::running(&rules_dir()).await;
    env.poll().await;
    let territory = env.ids("Territory__c").await[0].clone();

    env.planner_sets(
        TER_MODULE,
        TER_LIST,
        &territory,
        "Annual Quota",
        number("5100000"),
    )
    .await;
    // Nothing moves before the poll: Anaplan has no change feed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_ne!(
        env.crm_field(&territory, "Annual_Quota__c").as_f64(),
        Some(5_100_000.0)
    );
    env.poll().await;
    assert_eq!(
        env.crm_field(&territory, "Annual_Quota__c").as_f64(),
        Some(5_100_000.0)
    );
    let store = env.store();
    let shadow = store
        .shadow(&plansync::store::FieldKey::new(
            "territory",
            &territory,
            "Annual_Quota__c",
        ))
        .expect("shadow")
        .expect("a shadow row");
    assert_eq!(
        shadow.base.map(|b| b.value.to_text()),
        Some(Some("5100000.00".into())),
        "the acknowledged write is the new base"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_typing_over_a_crm_owned_amount_is_reverted_with_an_exception() {
    let mut env = Env::running(&rules_dir()).await;
    let id = env.opportunities().await[0].clone();
    let crm_amount = env.crm_field(&id, "Amount").as_f64();

    env.planner_sets(OPP_MODULE, OPP_LIST, &id, "Amount", number("1"))
        .await;
    env.poll().await;
    // Anaplan is set back to the CRM's amount; the CRM is untouched.
    assert_eq!(
        env.cell(&id, "Amount").and_then(|c| c.parse::<f64>().ok()),
        crm_amount
    );
    assert_eq!(env.crm_field(&id, "Amount").as_f64(), crm_amount);
    let open = env.open_exceptions_for(&id, "Amount");
    assert_eq!(open.len(), 1, "{open:?}");
    let e = &open[0];
    assert_eq!(e.kind, ExceptionKind::OwnershipViolation);
    let f = e.field.as_ref().expect("field");
    assert_eq!(f.anaplan_value.to_text().as_deref(), Some("1.00"));
    assert!(e.rule_hash.is_some() && e.rule_id.is_some());
    // Another poll finds Anaplan as the revert left it: nothing new.
    env.poll().await;
    assert_eq!(env.open_exceptions_for(&id, "Amount").len(), 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_of_a_manual_field_are_held_then_resolved() {
    let mut env = Env::running(&rules_dir()).await;
    env.poll().await;
    // An open deal (the `closed` override would give the field to the CRM).
    let id = env.deal_in("Negotiation").await;
    let base = env.crm_field(&id, "Forecast_Override__c").as_f64();

    // A planner edits the override in Anaplan (not polled yet) while a rep edits it in the
    // CRM: the rep's change arrives first, through the stream.
    env.planner_sets(
        OPP_MODULE,
        OPP_LIST,
        &id,
        "Forecast Override",
        number("115000"),
    )
    .await;
    env.rep_edits(&id, json!({ "Forecast_Override__c": 120000 }));
    wait_for("the conflict to be recorded", || async {
        !env.open_exceptions_for(&id, "Forecast_Override__c")
            .is_empty()
    })
    .await;
    env.settle().await;
    env.poll().await;

    // Neither side was overwritten.
    assert_eq!(
        env.crm_field(&id, "Forecast_Override__c").as_f64(),
        Some(120000.0)
    );
    assert_eq!(
        env.cell(&id, "Forecast Override").as_deref(),
        Some("115000")
    );
    let open = env.open_exceptions_for(&id, "Forecast_Override__c");
    assert_eq!(open.len(), 1, "{open:?}");
    let e = &open[0];
    assert_eq!(e.kind, ExceptionKind::Conflict);
    let f = e.field.as_ref().expect("field");
    assert_eq!(f.crm_value.to_text().as_deref(), Some("120000.00"));
    assert_eq!(f.anaplan_value.to_text().as_deref(), Some("115000.00"));
    assert_eq!(
        f.base_value.to_text().and_then(|t| t.parse::<f64>().ok()),
        base,
        "the base is the last agreed value"
    );
    // The rep's write found Anaplan changed and was not made: it is held, with the conflict
    // it became, not a failed write with nothing to show for it.
    let conn =
        rusqlite::Connection::open_with_flags(&env.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let written: Vec<(String, Option<i64>)> = conn
        .prepare(
            "SELECT state, result_exception_id FROM outbox
             WHERE crm_id = ?1 AND field = 'Forecast_Override__c' AND target = 'anaplan'",
        )
        .expect("prepare")
        .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(written, vec![("held".to_string(), Some(e.id))]);
    drop(conn);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_plansync"))
        .args(["status", "--db"])
        .arg(&env.db)
        .output()
        .expect("plansync status");
    let text = String::from_utf8_lossy(&status.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(" anaplan ") && l.contains(" held "))
        .unwrap_or_else(|| panic!("a held line in:\n{text}"));
    assert!(line.contains(&format!("#{}", e.id)), "{line}");
    assert!(!text.contains(" failed "), "{text}");

    // A reviewer takes the CRM's value: it flows to Anaplan through the engine's sinks.
    let mut writer = Store::open(&env.db).expect("store");
    let resolution = Resolution {
        how: ResolutionHow::TakeCrm,
        by: "reviewer@example.com".into(),
        note: Some("the rep's number is the committed one".into()),
        at: chrono::Utc::now(),
    };
    writer.resolve(e.id, &resolution).expect("resolve");
    drop(writer);
    env.wait_cell(&id, "Forecast Override", "120000").await;
    env.settle().await;
    env.poll().await;
    assert!(
        env.open_exceptions_for(&id, "Forecast_Override__c")
            .is_empty()
    );
    assert_eq!(
        env.crm_field(&id, "Forecast_Override__c").as_f64(),
        Some(120000.0)
    );
    env.stop().await;
}

/// The outbox rows of one field, oldest first: (id, state, created_at, updated_at, value).
fn outbox_rows(
    db: &Path,
    id: &str,
    field: &str,
) -> Vec<(i64, String, String, String, Option<String>)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let mut stmt = conn
        .prepare(
            "SELECT id, state, created_at, updated_at, value FROM outbox
             WHERE crm_id = ?1 AND field = ?2 ORDER BY id",
        )
        .expect("prepare");
    stmt.query_map([id, field], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

fn decisions(db: &Path, id: &str, field: &str) -> Vec<(String, String, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let mut stmt = conn
        .prepare(
            "SELECT source, decision, coalesce(value, '') FROM audit
             WHERE crm_id = ?1 AND field = ?2 ORDER BY id",
        )
        .expect("prepare");
    stmt.query_map([id, field], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rapid_changes_never_have_two_writes_in_flight_and_the_last_wins() {
    let mut env = Env::running(&rules_dir()).await;
    let id = env.opportunities().await[0].clone();
    // Slow Anaplan down so that the first write is still in flight when the second edit
    // arrives.
    env.anaplan.set_faults(asim::Faults {
        latency_ms: 400,
        ..asim::Faults::default()
    });
    env.rep_edits(&id, json!({ "Amount": 50001 }));
    tokio::time::sleep(Duration::from_millis(150)).await;
    env.rep_edits(&id, json!({ "Amount": 50002 }));
    env.wait_cell(&id, "Amount", "50002").await;
    env.settle().await;
    env.anaplan.set_faults(asim::Faults::default());

    let rows = outbox_rows(&env.db, &id, "Amount");
    let last_two = &rows[rows.len() - 2..];
    assert_eq!(last_two[0].4.as_deref(), Some("50001.00"), "{rows:?}");
    assert_eq!(last_two[1].4.as_deref(), Some("50002.00"), "{rows:?}");
    assert!(rows.iter().all(|r| r.1 == "done"), "{rows:?}");
    // The second write was decided only once the first was acknowledged.
    assert!(
        last_two[1].2 >= last_two[0].3,
        "the second write ({}) was queued before the first was done ({})",
        last_two[1].2,
        last_two[0].3
    );
    let log = decisions(&env.db, &id, "Amount");
    assert!(
        log.iter().any(|(_, d, v)| d == "wait" && v == "50002.00"),
        "the second change waited: {log:?}"
    );
    env.stop().await;
}

fn is_write(method: &str, path: &str) -> bool {
    let method_writes = matches!(method, "POST" | "PUT" | "PATCH" | "DELETE");
    method_writes
        && !path.contains("/token/")
        && !path.contains("oauth2")
        && !path.contains("cometd")
        && !path.contains("/query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_burst_and_quiescence_nothing_more_is_written() {
    let mut env = Env::running(&rules_dir()).await;
    env.poll().await;
    let ids = env.opportunities().await;
    // A burst on both sides: reps through the stream, planners through the poll.
    for (n, id) in ids.iter().enumerate() {
        env.rep_edits(id, json!({ "Amount": 70000 + n, "Probability": 30 + n }));
        env.rep_edits(id, json!({ "CloseDate": "2027-01-15" }));
    }
    let territories = env.ids("Territory__c").await;
    for (n, t) in territories.iter().enumerate() {
        env.planner_sets(
            TER_MODULE,
            TER_LIST,
            t,
            "Quarterly Quota",
            number(&format!("{}", 900000 + n)),
        )
        .await;
    }
    env.settle().await;
    env.poll().await;
    env.poll().await;

    // The logs do show writes (so the filter below can see them)...
    assert!(
        env.anaplan
            .request_log()
            .iter()
            .any(|r| is_write(&r.method, &r.path))
    );
    assert!(
        env.crm
            .request_log()
            .iter()
            .any(|r| is_write(&r.method, &r.path))
    );
    // ...but quiet now: more polls and time write nothing anywhere.
    env.anaplan.clear_request_log();
    env.crm.reset_request_log();
    for _ in 0..3 {
        env.poll().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.settle().await;
    let anaplan_writes: Vec<_> = env
        .anaplan
        .request_log()
        .into_iter()
        .filter(|r| is_write(&r.method, &r.path))
        .collect();
    let crm_writes: Vec<_> = env
        .crm
        .request_log()
        .into_iter()
        .filter(|r| is_write(&r.method, &r.path))
        .collect();
    assert!(
        anaplan_writes.is_empty(),
        "Anaplan writes after quiescence: {anaplan_writes:?}"
    );
    assert!(
        crm_writes.is_empty(),
        "CRM writes after quiescence: {crm_writes:?}"
    );
    // And the burst landed.
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(env.cell(id, "Amount"), Some(format!("{}", 70000 + n)));
    }
    for (n, t) in territories.iter().enumerate() {
        assert_eq!(
            env.crm_field(t, "Quarterly_Quota__c").as_f64(),
            Some((900000 + n) as f64)
        );
    }
    env.stop().await;
}

/// The example rules with the quarter-end window stretched over the whole quarter, so that
/// "now" is inside it.
fn rules_in_quarter_end() -> tempfile::TempDir {
    rules_copy(|_, text| text.replace("last_business_days = 5", "last_business_days = 60"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_the_quarter_end_window_the_crm_wins_a_concurrent_edit() {
    let rules = rules_in_quarter_end();
    let mut env = Env::running(rules.path()).await;
    env.poll().await;
    let id = env.deal_in("Negotiation").await;

    env.planner_sets(
        OPP_MODULE,
        OPP_LIST,
        &id,
        "Forecast Override",
        number("115000"),
    )
    .await;
    env.rep_edits(&id, json!({ "Forecast_Override__c": 120000 }));
    env.wait_cell(&id, "Forecast Override", "120000").await;
    env.settle().await;
    env.poll().await;
    assert_eq!(
        env.crm_field(&id, "Forecast_Override__c").as_f64(),
        Some(120000.0)
    );
    assert!(
        env.open_exceptions_for(&id, "Forecast_Override__c")
            .is_empty()
    );
    // The planner's value is not lost: an auto-resolved conflict records it and the rule.
    let conflicts: Vec<_> = env
        .exceptions(Some(ExceptionKind::Conflict))
        .into_iter()
        .filter(|e| e.crm_id.as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let c = &conflicts[0];
    assert_eq!(c.status, ExceptionStatus::AutoResolved);
    assert_eq!(
        c.rule_id.as_deref(),
        Some("Opportunity.Forecast_Override__c.when.quarter_end")
    );
    let f = c.field.as_ref().expect("field");
    assert_eq!(f.anaplan_value.to_text().as_deref(), Some("115000.00"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_covers_a_stream_outage_and_the_replay_applies_nothing_twice() {
    let mut env = Env::running(&rules_dir()).await;
    let ids = env.opportunities().await;
    // One change through the stream, so the stream has a durable position.
    env.rep_edits(&ids[0], json!({ "Amount": 61000 }));
    env.wait_cell(&ids[0], "Amount", "61000").await;
    env.settle().await;
    env.stop().await;

    // The stream is down (the engine runs on its pollers) while reps keep working.
    for (n, id) in ids.iter().enumerate() {
        env.rep_edits(id, json!({ "Amount": 62000 + n }));
        env.rep_edits(id, json!({ "Amount": 63000 + n }));
    }
    env.start(false).await;
    env.poll().await;
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(env.cell(id, "Amount"), Some(format!("{}", 63000 + n)));
    }
    env.stop().await;
    let writes_before: usize = ids
        .iter()
        .map(|id| outbox_rows(&env.db, id, "Amount").len())
        .sum();
    let anaplan_cells_before = env
        .anaplan
        .request_log()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/data"))
        .count();

    // The stream comes back and replays what it missed from its checkpoint: every event is
    // older than what the poller already applied.
    env.start(true).await;
    env.settle().await;
    let writes_after: usize = ids
        .iter()
        .map(|id| outbox_rows(&env.db, id, "Amount").len())
        .sum();
    assert_eq!(
        writes_before, writes_after,
        "a replayed event caused a write"
    );
    let anaplan_cells_after = env
        .anaplan
        .request_log()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/data"))
        .count();
    assert_eq!(anaplan_cells_before, anaplan_cells_after);
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(env.cell(id, "Amount"), Some(format!("{}", 63000 + n)));
    }
    // The replay did reach the engine (it was not simply lost).
    let counters = env.engine().counters();
    assert!(
        counters["changes.stream"] >= 2 * ids.len() as u64,
        "{counters:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_lifecycle_create_delete_undelete_and_an_anaplan_item_removed() {
    let mut env = Env::running(&rules_dir()).await;

    // A new deal in the CRM: its Anaplan item (code = CRM id) is created before its cells.
    let id = env
        .crm
        .create(
            "Opportunity",
            json!({ "Name": "Initech renewal", "Amount": 77000, "StageName": "Prospecting",
                    "CloseDate": "2027-02-26", "Probability": 10,
                    "AccountId": null }),
            None,
        )
        .expect("create");
    env.wait_cell(&id, "Amount", "77000").await;
    let item = env
        .anaplan
        .list_items(MODEL, OPP_LIST)
        .expect("list")
        .into_iter()
        .find(|i| i.code.as_deref() == Some(id.as_str()))
        .expect("the item exists");
    assert_eq!(
        item.properties.get("Opportunity Name").map(String::as_str),
        Some("Initech renewal")
    );
    let log = env.anaplan.request_log();
    let add = log
        .iter()
        .position(|r| {
            r.method == "POST" && r.path.ends_with("/items") && r.path.contains("/lists/")
        })
        .expect("an item add");
    let cells = log
        .iter()
        .rposition(|r| r.method == "POST" && r.path.ends_with("/data"))
        .expect("a cell write");
    assert!(
        add < cells,
        "the item is added before its cells are written"
    );
    env.settle().await;

    // Deleted in the CRM: the pairing flags the item (its plan data stays).
    env.crm.delete(&id, None).expect("delete");
    env.wait_cell(&id, "CRM Deleted", "true").await;
    assert_eq!(env.cell(&id, "Amount").as_deref(), Some("77000"));
    // Restored in the CRM: the flag is cleared.
    env.crm.undelete(&id, None).expect("undelete");
    env.wait_cell(&id, "CRM Deleted", "false").await;
    env.settle().await;

    // A planner removes an item: an exception, never a CRM delete.
    let other = env.opportunities().await[0].clone();
    let planner = anaplan_client(&env.anaplan);
    let list = planner.list_id(MODEL, OPP_LIST).await.expect("list id");
    planner
        .delete_list_items(MODEL, &list, std::slice::from_ref(&other))
        .await
        .expect("planner delete");
    env.poll().await;
    env.poll().await;
    let lifecycle: Vec<_> = env
        .exceptions(Some(ExceptionKind::Lifecycle))
        .into_iter()
        .filter(|e| e.crm_id.as_deref() == Some(other.as_str()))
        .collect();
    assert_eq!(lifecycle.len(), 1, "{lifecycle:?}");
    assert!(env.crm.record(&other).is_some(), "the CRM record is kept");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_and_overflow_events_are_covered_by_a_re_read() {
    let mut env = Env::running(&rules_dir()).await;
    let ids = env.opportunities().await;

    // A change made below the API (no values in the event): the poller re-reads the record.
    env.crm
        .inject_gap(
            "Opportunity",
            std::slice::from_ref(&ids[0]),
            "GAP_UPDATE",
            json!({ "Amount": 88000 }),
        )
        .expect("gap");
    env.wait_cell(&ids[0], "Amount", "88000").await;
    env.settle().await;
    let gaps = env.exceptions(Some(ExceptionKind::Gap));
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].crm_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(gaps[0].status, ExceptionStatus::AutoResolved);

    // Too many changes to send one by one: the object is re-read.
    env.crm
        .inject_gap(
            "Opportunity",
            &ids[1..],
            "GAP_UPDATE",
            json!({ "Probability": 65 }),
        )
        .expect("silent change");
    env.crm.inject_overflow("Opportunity").expect("overflow");
    wait_for("every silent change in Anaplan", || async {
        ids[1..]
            .iter()
            .all(|id| env.cell(id, "Probability").as_deref() == Some("65"))
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_replay_id_makes_the_engine_reconcile_the_object() {
    let mut env = Env::running(&rules_dir()).await;
    let ids = env.opportunities().await;
    env.rep_edits(&ids[0], json!({ "Amount": 51000 }));
    env.wait_cell(&ids[0], "Amount", "51000").await;
    env.settle().await;
    env.stop().await;

    // While the engine is down, a change is made and the org's event retention passes it.
    env.rep_edits(&ids[1], json!({ "Amount": 52000 }));
    env.crm.purge_events(None);
    env.start(true).await;
    env.wait_cell(&ids[1], "Amount", "52000").await;
    env.settle().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_over_the_view_read_limit_is_polled_through_read_requests() {
    // The opportunity module (4 items × 8 line items) is over a 20-cell read limit, and its
    // read request comes in pages of a few rows.
    let anaplan = SimConfig {
        max_read: 20,
        read_page_bytes: 150,
        read_request_step: Duration::from_millis(50),
        ..SimConfig::default()
    };
    let mut env = Env::with(&rules_dir(), CrmSimConfig::default(), anaplan).await;
    env.start(true).await;
    env.settle().await;
    env.poll().await;
    let id = env.opportunities().await[0].clone();
    env.planner_sets(OPP_MODULE, OPP_LIST, &id, "Probability", number("97"))
        .await;
    env.poll().await;
    wait_for("the planner's probability in the CRM", || async {
        env.crm_field(&id, "Probability").as_f64() == Some(97.0)
    })
    .await;
    let log = env.anaplan.request_log();
    let refused = log
        .iter()
        .filter(|r| r.path.ends_with("/data") && r.method == "GET" && r.status == 400)
        .count();
    assert!(refused >= 1, "the plain view read was tried and refused");
    let pages = log
        .iter()
        .filter(|r| r.path.contains("/readRequests/") && r.path.contains("/pages/"))
        .count();
    assert!(pages >= 2, "{pages} pages read");
    assert_eq!(env.anaplan.read_requests(), 0, "every read request deleted");
    env.stop().await;
}

fn staged_rows(db: &Path) -> i64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open")
        .query_row("SELECT count(*) FROM first_run_anaplan", [], |r| r.get(0))
        .expect("count")
}

/// The first run reads Anaplan first and stages each item's values in one row; each CRM
/// record is then decided against them (an agreeing amount is the base, with no write), and
/// the items no CRM record claims are kept as seen, so later polls find nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_run_decides_each_crm_record_against_the_staged_anaplan_values() {
    let mut env = Env::new(&rules_dir()).await;
    let deal = env.opportunities().await[0].clone();
    let amount = env.crm_field(&deal, "Amount").as_f64().expect("an amount");
    let amount = format!("{amount:.2}");
    let planner_only = "PLAN-ONLY-7";
    let planner = anaplan_client(&env.anaplan);
    let list = planner.list_id(MODEL, OPP_LIST).await.expect("list id");
    let item = |code: &str| ListItemWrite {
        code: code.into(),
        name: Some(code.into()),
        parent: None,
        properties: Default::default(),
        subsets: Default::default(),
    };
    // The default model already holds the deal's item (coded by its CRM id); the planner's
    // own item is one no CRM record claims.
    assert!(
        env.cell(&deal, "Amount").is_some(),
        "the deal's item exists"
    );
    let added = planner
        .add_list_items(MODEL, &list, &[item(planner_only)])
        .await
        .expect("items added");
    assert!(added.failures.is_empty(), "{:?}", added.failures);
    env.planner_sets(OPP_MODULE, OPP_LIST, &deal, "Amount", number(&amount))
        .await;
    env.planner_sets(OPP_MODULE, OPP_LIST, planner_only, "Amount", number("4200"))
        .await;

    env.start(false).await;
    env.settle().await;
    assert_eq!(staged_rows(&env.db), 0, "nothing left staged");
    let store = env.store();
    let field = |id: &str, f: &str| {
        store
            .shadow(&plansync::store::FieldKey::new("opportunity", id, f))
            .expect("shadow")
            .unwrap_or_else(|| panic!("a shadow row for {id}.{f}"))
    };
    let agreed = field(&deal, "Amount");
    let base = agreed.base.expect("the agreeing amount is the base");
    assert_eq!(base.value.to_text(), Some(amount.clone()));
    assert_eq!(base.source, plansync::model::Source::Reconcile);
    assert_eq!(
        agreed.seen_anaplan.map(|s| s.value.to_text()),
        Some(Some(amount))
    );
    assert!(
        outbox_rows(&env.db, &deal, "Amount").is_empty(),
        "no write for an amount both sides hold"
    );
    let kept = field(planner_only, "Amount");
    assert_eq!(kept.base, None);
    assert_eq!(kept.seen_crm, None);
    assert_eq!(
        kept.seen_anaplan.map(|s| s.value.to_text()),
        Some(Some("4200.00".into()))
    );

    // The planner's item is an orphan on record (one `unmapped` exception, raised by the
    // first run); the next poll knows it and the agreeing deal: nothing to decide, nothing
    // raised twice.
    let unmapped = || -> Vec<_> {
        env.exceptions(Some(ExceptionKind::Unmapped))
            .into_iter()
            .filter(|e| e.crm_id.as_deref() == Some(planner_only))
            .collect()
    };
    assert_eq!(unmapped().len(), 1, "{:?}", unmapped());
    assert!(unmapped()[0].message.contains(planner_only));
    let decided = decisions(&env.db, planner_only, "Amount").len();
    env.poll().await;
    assert_eq!(decisions(&env.db, planner_only, "Amount").len(), decided);
    assert_eq!(unmapped().len(), 1, "{:?}", unmapped());
    assert_eq!(field(&deal, "Amount").base.map(|b| b.at), Some(base.at));
    env.stop().await;
}

/// A first run that stopped after reading Anaplan leaves values staged: the next start
/// records them in the shadow before any source runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_staged_by_an_unfinished_first_run_are_recorded_at_the_next_start() {
    let mut env = Env::new(&rules_dir()).await;
    env.start(false).await;
    env.settle().await;
    env.stop().await;

    let mut store = Store::open(&env.db).expect("store");
    let mut batch = plansync::store::Batch::new(chrono::Utc::now());
    let value =
        plansync::model::Value::from_text(plansync::model::ValueKind::Number { scale: 2 }, "31.00")
            .expect("value");
    batch.stage_anaplan(plansync::store::StagedItem {
        record: plansync::model::RecordKey {
            pairing: "opportunity".into(),
            crm_id: "LEFT-STAGED-1".into(),
        },
        at: chrono::Utc::now(),
        fields: vec![(
            "Amount".into(),
            plansync::model::ValueKind::Number { scale: 2 },
            value.clone(),
        )],
    });
    store.commit(&batch).expect("staged");
    drop(store);
    assert_eq!(staged_rows(&env.db), 1);

    env.start(false).await;
    assert_eq!(staged_rows(&env.db), 0);
    let row = env
        .store()
        .shadow(&plansync::store::FieldKey::new(
            "opportunity",
            "LEFT-STAGED-1",
            "Amount",
        ))
        .expect("shadow")
        .expect("recorded");
    assert_eq!(row.seen_anaplan.map(|s| s.value), Some(value));
    env.stop().await;
}

/// With `anaplan_delete = "delete_record"`, an item a planner removes deletes its CRM
/// record (sObject Collections delete), and nothing else: no exception, the other records
/// stay, and the record's later absence from the CRM is not taken for a new deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_item_deletes_its_crm_record_when_the_rules_say_so() {
    let rules = rules_copy(|file, text| {
        if file == "opportunity.toml" {
            text.replace(
                "anaplan_delete = \"exception\"",
                "anaplan_delete = \"delete_record\"",
            )
        } else {
            text
        }
    });
    let mut env = Env::running(rules.path()).await;
    let deals = env.opportunities().await;
    let (gone, kept) = (&deals[0], &deals[1]);
    let planner = anaplan_client(&env.anaplan);
    let list = planner.list_id(MODEL, OPP_LIST).await.expect("list id");
    planner
        .delete_list_items(MODEL, &list, std::slice::from_ref(gone))
        .await
        .expect("planner delete");
    env.poll().await;
    wait_for("the CRM record to be deleted", || async {
        env.crm_field(gone, "IsDeleted") == json!(true)
    })
    .await;
    env.settle().await;
    env.poll().await;
    env.settle().await;
    assert_eq!(env.crm_field(kept, "IsDeleted"), json!(false));
    let open: Vec<_> = env
        .exceptions(None)
        .into_iter()
        .filter(|e| e.status == ExceptionStatus::Open)
        .collect();
    assert!(open.is_empty(), "{open:#?}");
    let deletes = env
        .crm
        .request_log()
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.ends_with("/composite/sobjects"))
        .count();
    assert_eq!(deletes, 1, "one delete call");
    // The CRM's delete event does not bring the item back for its deleted flag.
    let items = env.anaplan.list_items(MODEL, OPP_LIST).expect("list");
    assert!(
        !items
            .iter()
            .any(|i| i.code.as_deref() == Some(gone.as_str())),
        "the item stays removed"
    );
    env.stop().await;
}
