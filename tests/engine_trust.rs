//! plansync never decides on what it has not read: the first run after a failed read, the
//! decision state a restart must keep (flags, the schedule, checkpoints across a new shard
//! count), and blanks that are not values. Each test runs both simulators on loopback
//! sockets and the engine in-process, and checks both systems and the store.

mod support;

use std::path::Path;
use std::time::Duration;

use plansync::anaplan::{CellValue as Cell, ListItemWrite};
use plansync::model::{ExceptionKind, ExceptionStatus};
use plansync::store::{Resolution, ResolutionHow, Store};
use serde_json::{Value as Json, json};
use support::*;

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open")
        .query_row(sql, [], |r| r.get(0))
        .expect("count")
}

/// Adds Anaplan items for those of `codes` the list lacks (a planner's rows for CRM records,
/// before any sync; the default model already holds the default org's).
async fn planner_adds_items(env: &Env, codes: &[&str]) {
    let planner = anaplan_client(&env.anaplan);
    let list = planner.list_id(MODEL, OPP_LIST).await.expect("list id");
    let existing = env.anaplan.list_items(MODEL, OPP_LIST).expect("the list");
    let items: Vec<ListItemWrite> = codes
        .iter()
        .filter(|code| !existing.iter().any(|i| i.code.as_deref() == Some(**code)))
        .map(|code| ListItemWrite {
            code: (*code).into(),
            name: Some((*code).into()),
            parent: None,
            properties: Default::default(),
            subsets: Default::default(),
        })
        .collect();
    if items.is_empty() {
        return;
    }
    let added = planner
        .add_list_items(MODEL, &list, &items)
        .await
        .expect("items added");
    assert!(added.failures.is_empty(), "{:?}", added.failures);
}

/// The write requests each simulator answered (method and path), for "nothing was written".
fn anaplan_writes(env: &Env) -> Vec<String> {
    env.anaplan
        .request_log()
        .into_iter()
        .filter(|r| {
            r.method != "GET" && !r.path.contains("/readRequests") && !r.path.contains("token")
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn crm_writes(env: &Env) -> Vec<String> {
    env.crm
        .request_log()
        .into_iter()
        .filter(|r| {
            matches!(r.method.as_str(), "PATCH" | "DELETE") || r.path.contains("/composite")
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// A first start whose Anaplan login fails reads nothing there, so it decides nothing: no
/// write is queued or sent, no exception claims Anaplan is empty, and the first run is not
/// recorded as done. Once the password is right, the first run runs in full, and a
/// planner-approved value in Anaplan is not replaced by the CRM's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_anaplan_login_at_the_first_run_decides_nothing() {
    let mut env = Env::new(&rules_dir()).await;
    let deal = env.deal_in("Negotiation").await;
    planner_adds_items(&env, &[&deal]).await;
    env.planner_sets(
        OPP_MODULE,
        OPP_LIST,
        &deal,
        "Forecast Override",
        number("99000"),
    )
    .await;
    env.planner_sets(OPP_MODULE, OPP_LIST, &deal, "Approved", Cell::Bool(true))
        .await;
    env.anaplan.clear_request_log();
    env.crm.reset_request_log();

    let engine = env
        .launch(
            false,
            2,
            anaplan_client_as(&env.anaplan, "not-the-password"),
        )
        .await;
    let refused = tokio::time::timeout(Duration::from_secs(30), engine.ready())
        .await
        .expect("a wrong password is final, not retried for ever");
    let message = refused
        .expect_err("the first run cannot complete")
        .to_string();
    assert!(message.contains("Anaplan"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
    let _ = engine.shutdown().await;

    assert_eq!(count(&env.db, "SELECT count(*) FROM outbox"), 0);
    assert_eq!(count(&env.db, "SELECT count(*) FROM exceptions"), 0);
    assert_eq!(count(&env.db, "SELECT count(*) FROM shadow"), 0);
    assert_eq!(
        env.store().first_run_completed().expect("state"),
        None,
        "a first run that read nothing in Anaplan is not done"
    );
    assert!(crm_writes(&env).is_empty(), "{:?}", crm_writes(&env));
    assert!(
        anaplan_writes(&env).is_empty(),
        "{:?}",
        anaplan_writes(&env)
    );

    env.start(false).await;
    env.settle().await;
    assert!(env.store().first_run_completed().expect("state").is_some());
    assert_eq!(
        env.cell(&deal, "Forecast Override").as_deref(),
        Some("99000"),
        "the planner's approved value stays"
    );
    let forecast_writes = count(
        &env.db,
        &format!(
            "SELECT count(*) FROM outbox WHERE crm_id = '{deal}' AND field = 'Forecast_Override__c' AND target = 'anaplan'"
        ),
    );
    assert_eq!(
        forecast_writes, 0,
        "no CRM value is written over an approved one"
    );
    env.stop().await;
}

/// The approval flag is decision state: a restart keeps it, so a rep's edit of an approved
/// forecast right after a restart (before any Anaplan poll) is refused as before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_approval_flags_a_decision_needs() {
    let mut env = Env::new(&rules_dir()).await;
    let deal = env.deal_in("Negotiation").await;
    env.start(true).await;
    env.settle().await;
    let before = env.cell(&deal, "Forecast Override");
    env.planner_sets(OPP_MODULE, OPP_LIST, &deal, "Approved", Cell::Bool(true))
        .await;
    env.poll().await;
    env.stop().await;
    assert_eq!(
        count(
            &env.db,
            &format!("SELECT count(*) FROM anaplan_flags WHERE crm_id = '{deal}'")
        ),
        1,
        "the flag is stored"
    );

    // No poll runs after this start (the last one is recent and the interval an hour).
    env.start(true).await;
    env.rep_edits(&deal, json!({ "Forecast_Override__c": 123456 }));
    wait_for("the rep's edit to be refused", || async {
        !env.open_exceptions_for(&deal, "Forecast_Override__c")
            .is_empty()
    })
    .await;
    env.settle().await;
    let open = env.open_exceptions_for(&deal, "Forecast_Override__c");
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].kind, ExceptionKind::OwnershipViolation);
    assert_eq!(
        open[0].rule_id.as_deref(),
        Some("Opportunity.Forecast_Override__c.when.approved")
    );
    assert_eq!(
        env.cell(&deal, "Forecast Override"),
        before,
        "Anaplan untouched"
    );
    env.stop().await;
}

/// Anaplan has no blank number: a CRM null against an empty (0) cell is no conflict and no
/// write, and a reviewer's choice of a CRM null sticks when Anaplan reads it back as 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_null_and_an_anaplan_blank_number_are_one_value() {
    let mut env = Env::new(&rules_dir()).await;
    let ids = env.opportunities().await;
    let open_deals: Vec<String> = ids
        .into_iter()
        .filter(|id| {
            let stage = env.crm_field(id, "StageName");
            stage != json!("Closed Won") && stage != json!("Closed Lost")
        })
        .collect();
    let (blank, disputed) = (open_deals[0].clone(), open_deals[1].clone());
    env.rep_edits(&blank, json!({ "Forecast_Override__c": null }));
    env.rep_edits(&disputed, json!({ "Forecast_Override__c": 5000 }));
    planner_adds_items(&env, &[&blank, &disputed]).await;
    env.planner_sets(
        OPP_MODULE,
        OPP_LIST,
        &blank,
        "Forecast Override",
        number("0"),
    )
    .await;
    env.planner_sets(
        OPP_MODULE,
        OPP_LIST,
        &disputed,
        "Forecast Override",
        number("7000"),
    )
    .await;

    env.start(true).await;
    env.settle().await;
    assert!(
        env.open_exceptions_for(&blank, "Forecast_Override__c")
            .is_empty(),
        "null against a blank number is no conflict"
    );
    let writes = |id: &str| {
        count(
            &env.db,
            &format!(
                "SELECT count(*) FROM outbox WHERE crm_id = '{id}' AND field = 'Forecast_Override__c'"
            ),
        )
    };
    assert_eq!(writes(&blank), 0, "nothing to write either way");
    assert_eq!(env.crm_field(&blank, "Forecast_Override__c"), Json::Null);

    // A real conflict, resolved for the CRM's null.
    let held = env.open_exceptions_for(&disputed, "Forecast_Override__c");
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].kind, ExceptionKind::Conflict);
    env.rep_edits(&disputed, json!({ "Forecast_Override__c": null }));
    // The held conflict takes the rep's null once the stream delivers it.
    wait_for("the held conflict to show the CRM's null", || async {
        env.open_exceptions_for(&disputed, "Forecast_Override__c")
            .first()
            .and_then(|e| e.field.as_ref())
            .is_some_and(|f| f.crm_value.is_null())
    })
    .await;
    env.settle().await;
    let mut writer = Store::open(&env.db).expect("store");
    writer
        .resolve(
            held[0].id,
            &Resolution {
                how: ResolutionHow::TakeCrm,
                by: "reviewer@example.com".into(),
                note: Some("no override after all".into()),
                at: chrono::Utc::now(),
            },
        )
        .expect("resolve");
    drop(writer);
    wait_for("Anaplan's forecast to be cleared", || async {
        matches!(
            env.cell(&disputed, "Forecast Override").as_deref(),
            None | Some("0")
        )
    })
    .await;
    env.settle().await;
    env.poll().await;
    env.poll().await;
    assert_eq!(
        env.crm_field(&disputed, "Forecast_Override__c"),
        Json::Null,
        "the chosen null stays a null"
    );
    assert!(
        env.open_exceptions_for(&disputed, "Forecast_Override__c")
            .is_empty()
    );
    let to_crm = count(
        &env.db,
        &format!(
            "SELECT count(*) FROM outbox WHERE crm_id = '{disputed}' AND field = 'Forecast_Override__c' AND target = 'crm'"
        ),
    );
    assert_eq!(to_crm, 0, "Anaplan's 0 is not written over the chosen null");
    let resolved = env.store().exception(held[0].id).expect("exception");
    assert_eq!(resolved.status, ExceptionStatus::Resolved);
    env.stop().await;
}

/// The names of the stored checkpoints.
fn checkpoint_names(db: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let mut stmt = conn
        .prepare("SELECT source FROM checkpoints ORDER BY source")
        .expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Checkpoints follow the shard count: after a start with fewer shards every source has a
/// row per shard that exists and none for the others, so no stale row holds it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_re_keyed_when_the_shard_count_changes() {
    let env = Env::new(&rules_dir()).await;
    let engine = env.launch(true, 4, anaplan_client(&env.anaplan)).await;
    engine.ready().await.expect("first run");
    let e = &engine;
    wait_for("the stream to connect", || async { e.stream_connected() }).await;
    let id = env.opportunities().await[0].clone();
    env.rep_edits(&id, json!({ "Amount": 4321 }));
    env.wait_cell(&id, "Amount", "4321").await;
    engine.flush().await.expect("flush");
    engine.shutdown().await.expect("stop");
    assert!(checkpoint_names(&env.db).iter().any(|n| n.ends_with("#3")));

    let engine = env.launch(true, 2, anaplan_client(&env.anaplan)).await;
    engine.ready().await.expect("ready");
    engine.flush().await.expect("flush");
    engine.shutdown().await.expect("stop");
    let names = checkpoint_names(&env.db);
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|n| n.ends_with("#0") || n.ends_with("#1")),
        "{names:?}"
    );
    let status = env.store().status(chrono::Utc::now()).expect("status");
    assert!(
        status.sources.iter().all(|s| s.shards == 2),
        "{:?}",
        status.sources
    );
}

/// The schedule survives a restart: a poll that came due while the engine was down runs at
/// once after the start, not one full interval later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_poll_runs_at_once_after_a_restart() {
    let mut env = Env::new(&rules_dir()).await;
    env.start(false).await;
    env.settle().await;
    env.stop().await;
    let territory = env.ids("Territory__c").await[0].clone();
    env.planner_sets(
        TER_MODULE,
        TER_LIST,
        &territory,
        "Annual Quota",
        number("7700000"),
    )
    .await;
    // The last Anaplan poll was two hours ago; the interval is one hour.
    let mut store = Store::open(&env.db).expect("store");
    let two_hours_ago = chrono::Utc::now() - chrono::Duration::hours(2);
    store
        .set_last_poll("anaplan_poll:territory", two_hours_ago)
        .expect("set");
    drop(store);

    env.start(false).await;
    wait_for("the overdue poll to bring the quota", || async {
        env.crm_field(&territory, "Annual_Quota__c").as_f64() == Some(7_700_000.0)
    })
    .await;
    let last = env
        .store()
        .last_poll("anaplan_poll:territory")
        .expect("state")
        .expect("stored");
    assert!(last > two_hours_ago, "the run is recorded");
    env.stop().await;
}
