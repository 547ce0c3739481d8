//! plansync never decides on what it has not read: the first run after a failed read, the
//! decision state a restart must keep (flags, the schedule, checkpoints across a new shard
//! count), and blanks that are not values. Each test runs both simulators on loopback
//! sockets and the engine in-process, and checks both systems and the store.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;
use plansync::anaplan::{CellValue as Cell, ListItemWrite};
use plansync::engine::dispatch::Sink;
use plansync::engine::write::{WriteReport, WriteRequest};
use plansync::model::Side;
use plansync::model::{ExceptionKind, ExceptionStatus};
use plansync::rules::RuleSet;
use plansync::store::{Resolution, ResolutionHow, Store};
use serde_json::{Value as Json, json};
use tokio::sync::watch;

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

/// A rep edits `deal`'s forecast to `value` through the stream: the edit must be refused by
/// the `when` named `rule` (an `ownership_violation`), and Anaplan's forecast left as it was.
async fn rep_forecast_edit_is_refused(env: &Env, deal: &str, value: i64, rule: &str) {
    let before = env.cell(deal, "Forecast Override");
    env.rep_edits(deal, json!({ "Forecast_Override__c": value }));
    wait_for("the rep's edit to be decided", || async {
        count(
            &env.db,
            &format!(
                "SELECT count(*) FROM audit WHERE crm_id = '{deal}' AND field = 'Forecast_Override__c' AND source = 'stream'"
            ),
        ) > 0
    })
    .await;
    env.settle().await;
    let open = env.open_exceptions_for(deal, "Forecast_Override__c");
    let refused = open
        .iter()
        .find(|e| e.message.contains(&format!("`{value}.00`")))
        .unwrap_or_else(|| panic!("the rep's edit is refused: {open:?}"));
    assert_eq!(refused.kind, ExceptionKind::OwnershipViolation);
    let rule = format!("Opportunity.Forecast_Override__c.when.{rule}");
    assert_eq!(refused.rule_id.as_deref(), Some(rule.as_str()));
    assert_eq!(
        env.cell(deal, "Forecast Override"),
        before,
        "Anaplan untouched"
    );
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
    rep_forecast_edit_is_refused(&env, &deal, 123456, "approved").await;
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

/// Stops a settled engine, makes an edit with `edit` (which names the record it edited),
/// dates the last run of the poller `source` at `last_poll` (the interval is one hour), and
/// restarts without the stream: `arrived` must then come true without a poll being asked for.
async fn restart_after(
    source: &str,
    last_poll: chrono::DateTime<chrono::Utc>,
    edit: impl AsyncFnOnce(&Env) -> String,
    arrived: impl Fn(&Env, &str) -> bool,
) {
    let mut env = Env::new(&rules_dir()).await;
    env.start(false).await;
    env.settle().await;
    env.stop().await;
    let record = edit(&env).await;
    let mut store = Store::open(&env.db).expect("store");
    store.set_last_poll(source, last_poll).expect("set");
    drop(store);

    env.start(false).await;
    wait_for("the edit made while plansync was down", || {
        let done = arrived(&env, &record);
        async move { done }
    })
    .await;
    let last = env
        .store()
        .last_poll(source)
        .expect("state")
        .expect("stored");
    assert!(last > last_poll, "the run is recorded");
    env.stop().await;
}

/// The schedule survives a restart: a CRM poll that came due while the engine was down runs
/// at once after the start, not one full interval later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_poll_runs_at_once_after_a_restart() {
    restart_after(
        "crm_poll:opportunity",
        chrono::Utc::now() - chrono::Duration::hours(2),
        async |env: &Env| {
            let deal = env.deal_in("Negotiation").await;
            env.rep_edits(&deal, json!({ "Amount": 133000.5 }));
            deal
        },
        |env, deal| env.cell(deal, "Amount").as_deref() == Some("133000.5"),
    )
    .await;
}

/// A planner's edit made while plansync was down is not left for the next scheduled poll
/// (the last poll was just now): Anaplan has no change feed, so a restart polls it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_polls_anaplan_at_once() {
    restart_after(
        "anaplan_poll:territory",
        chrono::Utc::now(),
        async |env: &Env| {
            let territory = env.ids("Territory__c").await[0].clone();
            let quota = number("8800000");
            env.planner_sets(TER_MODULE, TER_LIST, &territory, "Annual Quota", quota)
                .await;
            territory
        },
        |env, territory| env.crm_field(territory, "Annual_Quota__c").as_f64() == Some(8_800_000.0),
    )
    .await;
}

/// A copy of the example rules with `new_item` set for territories.
fn territory_rules_with_new_item(mode: &str) -> tempfile::TempDir {
    rules_copy(|file, text| {
        if file != "territory.toml" {
            return text;
        }
        text.replace(
            "anaplan_delete = \"exception\"",
            &format!("anaplan_delete = \"exception\"\nnew_item = \"{mode}\""),
        )
    })
}

/// A territory created in the CRM alone, with a name, a region and both quotas.
fn crm_only_territory(env: &Env) -> String {
    env.crm
        .create(
            "Territory__c",
            json!({ "Name": "EMEA North", "Region__c": "EMEA", "Annual_Quota__c": 2000000, "Quarterly_Quota__c": 500000, "Active__c": true }),
            None,
        )
        .expect("create")
}

fn territory_item_exists(env: &Env, code: &str) -> bool {
    env.anaplan
        .list_items(MODEL, TER_LIST)
        .expect("list")
        .iter()
        .any(|i| i.code.as_deref() == Some(code))
}

/// The CRM still shows the values [`crm_only_territory`] gave it, and nothing was ever
/// queued for the CRM.
fn crm_territory_kept(env: &Env, territory: &str) {
    let record = env.crm.record(territory).expect("record");
    assert_eq!(record["Name"], json!("EMEA North"));
    assert_eq!(record["Annual_Quota__c"].as_f64(), Some(2_000_000.0));
    assert_eq!(record["Quarterly_Quota__c"].as_f64(), Some(500_000.0));
    let to_crm = count(
        &env.db,
        &format!("SELECT count(*) FROM outbox WHERE crm_id = '{territory}' AND target = 'crm'"),
    );
    assert_eq!(to_crm, 0, "no blank is written to the CRM");
}

/// An item plansync creates for a CRM-only territory has blank cells that no planner chose:
/// they are not the owner's values. With the default `new_item = "hold"` the CRM keeps its
/// name and quotas (one `lifecycle` exception says which fields wait for a planner), the next
/// polls write nothing to the CRM, and a quota a planner then sets is synced as the owner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blanks_of_an_item_plansync_created_are_not_copied_over_crm_values() {
    let mut env = Env::new(&rules_dir()).await;
    let territory = crm_only_territory(&env);
    env.start(false).await;
    env.settle().await;
    env.poll().await;
    env.poll().await;

    crm_territory_kept(&env, &territory);
    assert!(
        territory_item_exists(&env, &territory),
        "the item was created"
    );
    let lifecycle: Vec<_> = env
        .exceptions(Some(ExceptionKind::Lifecycle))
        .into_iter()
        .filter(|e| e.crm_id.as_deref() == Some(territory.as_str()))
        .collect();
    assert_eq!(lifecycle.len(), 1, "{lifecycle:?}");
    for field in ["Name", "Region__c", "Annual_Quota__c", "Quarterly_Quota__c"] {
        assert!(
            lifecycle[0].message.contains(field),
            "{}",
            lifecycle[0].message
        );
    }
    let per_field: Vec<_> = env
        .exceptions(Some(ExceptionKind::OwnershipViolation))
        .into_iter()
        .filter(|e| e.crm_id.as_deref() == Some(territory.as_str()))
        .collect();
    assert!(per_field.is_empty(), "{per_field:?}");

    // A planner gives the quota a value: the owner's value now, synced to the CRM.
    env.planner_sets(
        TER_MODULE,
        TER_LIST,
        &territory,
        "Annual Quota",
        number("2100000"),
    )
    .await;
    env.poll().await;
    let record = env.crm.record(&territory).expect("record");
    assert_eq!(record["Annual_Quota__c"].as_f64(), Some(2_100_000.0));
    assert_eq!(record["Name"], json!("EMEA North"), "the unset name stays");
    assert_eq!(record["Quarterly_Quota__c"].as_f64(), Some(500_000.0));
    env.stop().await;
}

/// Where a [`GatedSink`] holds the writes handed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    Open,
    /// Before anything is sent to Anaplan.
    BeforeSending,
    /// After Anaplan took the writes, before the engine hears back.
    BeforeAnswering,
}

/// An Anaplan sink that holds its batches where the test says, counting the batches held at
/// each point, so a poll can be made to land inside a write.
struct GatedSink {
    inner: Box<dyn Sink>,
    hold: watch::Receiver<Hold>,
    held_before: Arc<AtomicUsize>,
    held_after: Arc<AtomicUsize>,
}

async fn pass(hold: &mut watch::Receiver<Hold>, at: Hold, count: &AtomicUsize) {
    if *hold.borrow() == at {
        count.fetch_add(1, Ordering::SeqCst);
        let _ = hold.wait_for(|h| *h != at).await;
    }
}

impl Sink for GatedSink {
    fn side(&self) -> Side {
        self.inner.side()
    }

    fn write<'a>(
        &'a mut self,
        rules: &'a RuleSet,
        batch: &'a [WriteRequest],
    ) -> Pin<Box<dyn Future<Output = WriteReport> + Send + 'a>> {
        Box::pin(async move {
            pass(&mut self.hold, Hold::BeforeSending, &self.held_before).await;
            let report = self.inner.write(rules, batch).await;
            pass(&mut self.hold, Hold::BeforeAnswering, &self.held_after).await;
            report
        })
    }
}

async fn wait_count(what: &str, count: &AtomicUsize) {
    wait_for(what, || async { count.load(Ordering::SeqCst) > 0 }).await;
}

/// Runs one Anaplan poll of territories and waits until it is recorded as complete (the
/// sink may be holding writes, so the outbox is not waited for).
async fn poll_territories(env: &Env) {
    let before = env
        .store()
        .last_poll("anaplan_poll:territory")
        .expect("state");
    env.engine().poll_now(Some(Side::Anaplan));
    wait_for("the Anaplan poll to complete", || async {
        env.store()
            .last_poll("anaplan_poll:territory")
            .expect("state")
            != before
    })
    .await;
}

/// Polls that land while plansync is creating an item, before the item exists and after it
/// exists but before the engine has the answer, see no planner's delete and no planner's
/// blanks: the CRM keeps its values, and the only exception is the new item's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_during_an_items_creation_see_no_delete_and_no_blanks() {
    let mut env = Env::new(&rules_dir()).await;
    let (hold, hold_rx) = watch::channel(Hold::Open);
    let held_before = Arc::new(AtomicUsize::new(0));
    let held_after = Arc::new(AtomicUsize::new(0));
    let (before, after) = (held_before.clone(), held_after.clone());
    let engine = env
        .launch_with(true, 2, anaplan_client(&env.anaplan), move |inner| {
            Box::new(GatedSink {
                inner,
                hold: hold_rx,
                held_before: before,
                held_after: after,
            })
        })
        .await;
    engine.ready().await.expect("the first run completes");
    wait_for("the stream to connect", || async {
        engine.stream_connected()
    })
    .await;
    env.engine = Some(engine);
    env.settle().await;

    hold.send_replace(Hold::BeforeSending);
    let territory = crm_only_territory(&env);
    wait_count("the item's creation to be held", &held_before).await;
    poll_territories(&env).await;
    hold.send_replace(Hold::BeforeAnswering);
    wait_count("the item's answer to be held", &held_after).await;
    assert!(
        territory_item_exists(&env, &territory),
        "the item exists in Anaplan"
    );
    poll_territories(&env).await;
    hold.send_replace(Hold::Open);
    env.settle().await;
    env.poll().await;
    env.poll().await;

    crm_territory_kept(&env, &territory);
    let raised: Vec<_> = env
        .exceptions(None)
        .into_iter()
        .filter(|e| e.crm_id.as_deref() == Some(territory.as_str()))
        .collect();
    assert_eq!(raised.len(), 1, "only the new item's exception: {raised:?}");
    assert_eq!(raised[0].kind, ExceptionKind::Lifecycle);
    assert!(
        !raised[0].message.contains("removed"),
        "{}",
        raised[0].message
    );
    env.stop().await;
}

/// `new_item = "seed_from_crm"`: the new item starts with the CRM's values, audited as a
/// seed, and no exception.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_item_can_be_seeded_from_the_crm() {
    let rules = territory_rules_with_new_item("seed_from_crm");
    let mut env = Env::new(rules.path()).await;
    let territory = crm_only_territory(&env);
    env.start(false).await;
    env.settle().await;
    env.poll().await;
    assert_eq!(
        env.territory_cell(&territory, "Annual Quota").as_deref(),
        Some("2000000")
    );
    assert_eq!(
        env.territory_cell(&territory, "Region").as_deref(),
        Some("Europe, Middle East & Africa")
    );
    let seeded = count(
        &env.db,
        &format!("SELECT count(*) FROM audit WHERE crm_id = '{territory}' AND decision = 'seed'"),
    );
    assert_eq!(seeded, 4, "Name, Region, both quotas");
    let raised = count(
        &env.db,
        &format!("SELECT count(*) FROM exceptions WHERE crm_id = '{territory}'"),
    );
    assert_eq!(raised, 0);
    let record = env.crm.record(&territory).expect("record");
    assert_eq!(record["Annual_Quota__c"].as_f64(), Some(2_000_000.0));
    env.stop().await;
}

/// A paged first-run read of Anaplan that fails part-way (its read request expires between
/// pages) decides nothing from the pages it had: no write, no exception, no shadow row, no
/// audit row, and the first run is not done; it is retried, and `status` says what it waits
/// for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_anaplan_read_failing_part_way_decides_nothing() {
    let anaplan = plansync_sim::anaplan::SimConfig {
        // The lists and modules are read with read requests in pages of a row or two, and a
        // request left alone for 100 ms is gone: with every call slowed by 150 ms, the
        // second page finds it expired.
        max_read: 3,
        read_page_bytes: 120,
        read_request_step: Duration::from_millis(10),
        read_request_ttl: Duration::from_millis(100),
        ..plansync_sim::anaplan::SimConfig::default()
    };
    let env = Env::with(
        &rules_dir(),
        plansync_sim::crm::CrmSimConfig::default(),
        anaplan,
    )
    .await;
    env.anaplan.set_faults(plansync_sim::anaplan::Faults {
        latency_ms: 150,
        ..plansync_sim::anaplan::Faults::default()
    });
    let engine = env.launch(false, 2, anaplan_client(&env.anaplan)).await;
    wait_for("the first run to wait for a new attempt", || async {
        env.store()
            .first_run_phase()
            .ok()
            .flatten()
            .is_some_and(|p| p.starts_with("waiting to read anaplan again"))
    })
    .await;
    engine.flush().await.expect("flush");
    for table in ["outbox", "exceptions", "shadow", "audit", "record_map"] {
        assert_eq!(
            count(&env.db, &format!("SELECT count(*) FROM {table}")),
            0,
            "{table}: nothing is decided from a partial read"
        );
    }
    assert_eq!(env.store().first_run_completed().expect("state"), None);
    let status = env.store().status(chrono::Utc::now()).expect("status");
    assert!(
        status
            .first_run
            .phase
            .as_deref()
            .is_some_and(|p| p.contains("attempt")),
        "{:?}",
        status.first_run
    );
    assert!(crm_writes(&env).is_empty(), "{:?}", crm_writes(&env));
    engine
        .shutdown()
        .await
        .expect("a clean stop during the retries");
}

/// Ownership decides first: a rep's edit of an Anaplan-owned quota that our write (of the
/// planner's value) replaced before its change event arrived is a refused edit, an
/// `ownership_violation`, not a `conflict` inviting a reviewer to push it back over the
/// owner's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_owners_edit_our_write_replaced_is_an_ownership_violation() {
    let mut env = Env::new(&rules_dir()).await;
    let territory = env.ids("Territory__c").await[0].clone();
    env.start(true).await;
    env.settle().await;
    // An event, so the stream's position is stored and the next start replays from it.
    env.crm
        .user_edit(
            "Territory__c",
            &territory,
            json!({ "Active__c": false }),
            None,
        )
        .expect("edit");
    env.settle().await;
    wait_for("the stream's position", || async {
        count(
            &env.db,
            "SELECT count(*) FROM checkpoints WHERE source LIKE 'cdc:%'",
        ) > 0
    })
    .await;
    env.stop().await;

    // While the engine is down, a planner sets the quota and a rep types over it in the CRM.
    env.planner_sets(
        TER_MODULE,
        TER_LIST,
        &territory,
        "Annual Quota",
        number("3000000"),
    )
    .await;
    env.crm
        .user_edit(
            "Territory__c",
            &territory,
            json!({ "Annual_Quota__c": 5 }),
            None,
        )
        .expect("rep edit");
    // Without the stream, the planner's quota is polled and written, replacing the rep's 5
    // before plansync has seen it.
    env.start(false).await;
    env.engine().poll_now(Some(plansync::model::Side::Anaplan));
    wait_for("the planner's quota in the CRM", || async {
        env.crm_field(&territory, "Annual_Quota__c").as_f64() == Some(3_000_000.0)
    })
    .await;
    env.settle().await;
    env.stop().await;

    // The stream resumes and delivers the rep's edit, committed before our write.
    env.start(true).await;
    wait_for("the rep's edit to be decided", || async {
        count(
            &env.db,
            &format!(
                "SELECT count(*) FROM audit WHERE crm_id = '{territory}' AND field = 'Annual_Quota__c' AND source = 'stream' AND value = '5.00'"
            ),
        ) > 0
    })
    .await;
    env.settle().await;
    let open = env.open_exceptions_for(&territory, "Annual_Quota__c");
    assert!(
        open.iter().all(|e| e.kind != ExceptionKind::Conflict),
        "{open:?}"
    );
    assert!(
        open.iter()
            .any(|e| e.kind == ExceptionKind::OwnershipViolation
                && e.message.contains("replaced it")),
        "{open:?}"
    );
    assert_eq!(
        env.crm_field(&territory, "Annual_Quota__c").as_f64(),
        Some(3_000_000.0),
        "the owner's value stays"
    );
    assert_eq!(
        env.territory_cell(&territory, "Annual Quota").as_deref(),
        Some("3000000")
    );
    env.stop().await;
}

/// Rules where Anaplan owns the forecast of one key account's deals: a `when.record` on a
/// CRM field the pairing reads only for conditions (`extra_crm_fields`).
fn key_account_rules(account: &str) -> tempfile::TempDir {
    rules_copy(|file, text| {
        if file != "opportunity.toml" {
            return text;
        }
        text.replacen(
            "flags = [\"Approved\"]",
            "flags = [\"Approved\"]\nextra_crm_fields = [\"AccountId\"]",
            1,
        )
        .replacen(
            "  [[field.when]]\n  id = \"closed\"",
            &format!(
                "  [[field.when]]\n  id = \"key_account\"\n  record = {{ AccountId = [\"{account}\"] }}\n  owner = \"anaplan\"\n  [[field.when]]\n  id = \"closed\""
            ),
            1,
        )
    })
}

/// A `when.record` condition on a field read only for conditions sees its value as last
/// seen, also after a restart, though a change event carries only the fields it changed: a
/// rep's edit of a key account's forecast is refused (Anaplan owns it there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_when_record_condition_sees_a_read_only_field_as_last_seen_after_a_restart() {
    let probe = Env::new(&rules_dir()).await;
    let deal = probe.deal_in("Negotiation").await;
    let account = probe.crm_field(&deal, "AccountId");
    let account = account.as_str().expect("an account").to_string();
    drop(probe);

    let rules = key_account_rules(&account);
    let mut env = Env::new(rules.path()).await;
    env.start(true).await;
    env.settle().await;
    env.stop().await;
    env.start(true).await;
    rep_forecast_edit_is_refused(&env, &deal, 777000, "key_account").await;
    env.stop().await;
}

/// A store whose flags are not on record (one from before they were stored): the engine
/// polls Anaplan's flags before it decides anything, so a rep's edit of an approved forecast
/// streamed at once after the start is refused, never decided as if the flag were false.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_flags_are_polled_before_anything_is_decided() {
    let mut env = Env::new(&rules_dir()).await;
    let deal = env.deal_in("Negotiation").await;
    env.start(true).await;
    env.settle().await;
    env.stop().await;
    env.planner_sets(OPP_MODULE, OPP_LIST, &deal, "Approved", Cell::Bool(true))
        .await;
    // As an upgraded store: no flags and no Anaplan poll on record.
    let conn = rusqlite::Connection::open(&env.db).expect("open");
    conn.execute_batch(
        "DELETE FROM anaplan_flags; DELETE FROM engine_state WHERE name LIKE 'poll.last_run:anaplan%';",
    )
    .expect("forget");
    drop(conn);
    // A slow Anaplan: its poll would come well after the stream's first event.
    env.anaplan.set_faults(plansync_sim::anaplan::Faults {
        latency_ms: 300,
        ..plansync_sim::anaplan::Faults::default()
    });

    env.start(true).await;
    rep_forecast_edit_is_refused(&env, &deal, 654321, "approved").await;
    env.anaplan
        .set_faults(plansync_sim::anaplan::Faults::default());
    env.stop().await;
}
