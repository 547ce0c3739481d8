//! Failures never stall, loop or hide: a write that can never land ends as one exception
//! while the rest of its side flows, and an exception whose sides come to agree closes
//! itself. Each test runs both simulators on loopback sockets and
//! the engine in-process, and checks both systems and the store.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;
use plansync::anaplan::ListItemWrite;
use plansync::backoff::Backoff;
use plansync::engine::write::WriteRetry;
use plansync::model::{ExceptionKind, ExceptionStatus};

/// `(state, attempts, last_error)` of the writes of `field` of `crm_id` to the CRM.
fn crm_writes(db: &Path, crm_id: &str, field: &str) -> Vec<(String, i64, Option<String>)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let mut stmt = conn
        .prepare(
            "SELECT state, attempts, last_error FROM outbox
             WHERE crm_id = ?1 AND field = ?2 AND target = 'crm' ORDER BY id",
        )
        .expect("prepare");
    stmt.query_map([crm_id, field], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// A CRM record held locked: every write of it is answered `UNABLE_TO_LOCK_ROW`, after the
/// client's own retries. Its write is retried on its own backoff while writes of other
/// records go through at once, and after its budget it is exactly one `write_failed`
/// exception with the CRM's words; the record keeps its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_keeps_failing_ends_as_one_write_failed_exception_while_the_side_flows() {
    let mut env = Env::new(&rules_dir()).await;
    env.write_retry = Some(WriteRetry {
        attempts: 4,
        give_up_after: Duration::from_secs(3600),
        backoff: Backoff::new(Duration::from_millis(400), Duration::from_millis(800)),
    });
    env.start(true).await;
    env.settle().await;
    let territories = env.ids("Territory__c").await;
    let (locked, free, later) = (&territories[0], &territories[1], &territories[2]);
    let before = env.crm_field(locked, "Annual_Quota__c");
    env.crm.lock_record(locked, true);

    // Planners change two quotas (Anaplan owns them): one record is locked in the CRM.
    for (id, quota) in [(locked, "7100000"), (free, "7200000")] {
        env.planner_sets(TER_MODULE, TER_LIST, id, "Annual Quota", number(quota))
            .await;
    }
    env.engine().poll_now(None);
    wait_for("the free record's quota to reach the CRM", || async {
        env.crm_field(free, "Annual_Quota__c").as_f64() == Some(7_200_000.0)
    })
    .await;
    wait_for("the locked record's write to be answered once", || async {
        crm_writes(&env.db, locked, "Annual_Quota__c")
            .iter()
            .any(|(state, attempts, _)| state == "pending" && *attempts >= 1)
    })
    .await;

    // While the locked record's write waits on its own backoff, the side is not held up.
    env.planner_sets(
        TER_MODULE,
        TER_LIST,
        later,
        "Annual Quota",
        number("7300000"),
    )
    .await;
    let asked = Instant::now();
    env.engine().poll_now(None);
    wait_for("a later write to reach the CRM", || async {
        env.crm_field(later, "Annual_Quota__c").as_f64() == Some(7_300_000.0)
    })
    .await;
    assert!(
        crm_writes(&env.db, locked, "Annual_Quota__c")
            .iter()
            .any(|(state, _, _)| state == "pending"),
        "the later write went while the locked one still waited ({:?} after the poll)",
        asked.elapsed()
    );

    // Four answered attempts, then it is given up: one exception, with the CRM's words.
    wait_for("the locked record's write to be given up", || async {
        !env.exceptions(Some(ExceptionKind::WriteFailed)).is_empty()
    })
    .await;
    env.settle().await;
    let failed = env.exceptions(Some(ExceptionKind::WriteFailed));
    assert_eq!(failed.len(), 1, "{failed:?}");
    let e = &failed[0];
    assert_eq!(e.crm_id.as_deref(), Some(locked.as_str()));
    assert!(
        e.message.contains("gave up after 4 attempts") && e.message.contains("UNABLE_TO_LOCK_ROW"),
        "{}",
        e.message
    );
    let writes = crm_writes(&env.db, locked, "Annual_Quota__c");
    let last = writes.last().expect("the locked record's write");
    assert_eq!((last.0.as_str(), last.1), ("failed", 4), "{writes:?}");
    assert!(
        last.2
            .as_deref()
            .is_some_and(|m| m.contains("UNABLE_TO_LOCK_ROW")),
        "{writes:?}"
    );
    assert_eq!(env.crm_field(locked, "Annual_Quota__c"), before);
    assert_eq!(
        env.territory_cell(locked, "Annual Quota").as_deref(),
        Some("7100000"),
        "Anaplan keeps the planner's value"
    );

    // Released, nothing is sent behind the reviewer's back: the exception waits for them.
    env.crm.lock_record(locked, false);
    env.poll().await;
    assert_eq!(env.crm_field(locked, "Annual_Quota__c"), before);
    assert_eq!(env.exceptions(Some(ExceptionKind::WriteFailed)).len(), 1);
    env.stop().await;
}

/// Exceptions whose field comes to show the same value on both sides close themselves as
/// converged, whatever their kind: a planner's probability over the rule's 0..=100
/// (`validation`) taken back by the planner, and a planner's rename of a CRM-owned name
/// (`ownership_violation`) that the rep then adopts. A revert's violation is not closed by
/// the revert landing (`engine_e2e`'s planner typing over a CRM-owned amount).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_whose_sides_agree_again_close_as_converged() {
    let mut env = Env::running(&rules_dir()).await;
    env.poll().await;
    let ids = env.opportunities().await;
    let (a, b) = (&ids[0], &ids[1]);

    // A value the rule refuses, then the value both sides had.
    let agreed = env
        .crm_field(a, "Probability")
        .as_f64()
        .expect("a probability");
    env.planner_sets(OPP_MODULE, OPP_LIST, a, "Probability", number("150"))
        .await;
    env.poll().await;
    let open = env.open_exceptions_for(a, "Probability");
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].kind, ExceptionKind::Validation);
    let validation = open[0].id;
    env.planner_sets(
        OPP_MODULE,
        OPP_LIST,
        a,
        "Probability",
        number(&format!("{agreed}")),
    )
    .await;
    env.poll().await;
    assert!(env.open_exceptions_for(a, "Probability").is_empty());
    let closed = exception(&env, validation);
    assert_eq!(closed.status, ExceptionStatus::Converged, "{closed:?}");
    assert!(closed.resolved_at.is_some(), "{closed:?}");

    // A planner renames a CRM-owned name: refused, both sides keep their own.
    let planner = anaplan_client(&env.anaplan);
    let list = planner.list_id(MODEL, OPP_LIST).await.expect("list id");
    let renamed = "Renamed by planning";
    let update = ListItemWrite {
        code: b.clone(),
        properties: [("Opportunity Name".to_string(), renamed.to_string())].into(),
        ..ListItemWrite::default()
    };
    let done = planner
        .update_list_items(MODEL, &list, &[update])
        .await
        .expect("property updated");
    assert!(done.failures.is_empty(), "{:?}", done.failures);
    env.poll().await;
    let open = env.open_exceptions_for(b, "Name");
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].kind, ExceptionKind::OwnershipViolation);
    let violation = open[0].id;
    assert_ne!(env.crm_field(b, "Name"), serde_json::json!(renamed));

    // The rep takes the planner's name: the two sides agree, the violation is over.
    env.rep_edits(b, serde_json::json!({ "Name": renamed }));
    wait_for("the violation to close", || async {
        env.open_exceptions_for(b, "Name").is_empty()
    })
    .await;
    let closed = exception(&env, violation);
    assert_eq!(closed.status, ExceptionStatus::Converged, "{closed:?}");
    let f = closed.field.as_ref().expect("field");
    assert_eq!(f.crm_value.to_text().as_deref(), Some(renamed));
    assert_eq!(f.anaplan_value.to_text().as_deref(), Some(renamed));
    env.stop().await;
}

fn exception(env: &Env, id: i64) -> plansync::store::ExceptionRecord {
    env.exceptions(None)
        .into_iter()
        .find(|e| e.id == id)
        .expect("the exception")
}

/// A resolution made with `plansync exceptions resolve` while the engine runs is written
/// within seconds, not at the next poll (the pollers here run hourly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_made_while_the_engine_runs_goes_out_at_once() {
    let mut env = Env::running(&rules_dir()).await;
    env.poll().await;
    let id = env.deal_in("Negotiation").await;
    // A planner and a rep edit the same shared, manual field: a conflict is held.
    env.planner_sets(
        OPP_MODULE,
        OPP_LIST,
        &id,
        "Forecast Override",
        number("115000"),
    )
    .await;
    env.rep_edits(&id, serde_json::json!({ "Forecast_Override__c": 120000 }));
    wait_for("the conflict to be recorded", || async {
        !env.open_exceptions_for(&id, "Forecast_Override__c")
            .is_empty()
    })
    .await;
    env.settle().await;
    env.poll().await;
    let open = env.open_exceptions_for(&id, "Forecast_Override__c");
    assert_eq!(open.len(), 1, "{open:?}");

    let started = Instant::now();
    resolve_by_cli(&env.db, open[0].id, &["--take", "crm"]);
    env.wait_cell(&id, "Forecast Override", "120000").await;
    let took = started.elapsed();
    eprintln!("resolution → Anaplan cell: {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    env.settle().await;
    assert!(
        env.open_exceptions_for(&id, "Forecast_Override__c")
            .is_empty()
    );

    // A value set by the reviewer goes to both sides, one write after the other.
    env.planner_sets(OPP_MODULE, OPP_LIST, &id, "Probability", number("150"))
        .await;
    env.poll().await;
    let open = env.open_exceptions_for(&id, "Probability");
    assert_eq!(open.len(), 1, "{open:?}");
    let started = Instant::now();
    resolve_by_cli(&env.db, open[0].id, &["--set", "55"]);
    env.wait_cell(&id, "Probability", "55").await;
    wait_for("the CRM to hold the set value", || async {
        env.crm_field(&id, "Probability").as_f64() == Some(55.0)
    })
    .await;
    let took = started.elapsed();
    eprintln!("resolution → both sides: {took:?}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    env.stop().await;
}

/// The change stream never dies for good: refused by the org (advice `none`), the listener
/// stops, and the engine starts it again and again (ERROR lines, capped backoff) while the
/// CRM poller runs at its shortened interval, so a rep's edit still arrives within seconds;
/// once the org takes handshakes again, the stream is back and carries the next edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_started_again_and_the_crm_poller_fills_in_meanwhile() {
    let mut env = Env::new(&rules_dir()).await;
    env.tune = Some(|o| o.crm_poll_stream_down = Duration::from_secs(1));
    env.start(true).await;
    env.settle().await;
    let ids = env.opportunities().await;

    env.crm
        .refuse_streaming(Some("403::Organization total events daily limit exceeded"));
    wait_for("the stream to be down", || async {
        !env.engine().stream_connected()
    })
    .await;
    let started = Instant::now();
    env.rep_edits(&ids[0], serde_json::json!({ "Amount": 424242 }));
    env.wait_cell(&ids[0], "Amount", "424242").await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the CRM poller filled in after {took:?}"
    );

    env.crm.refuse_streaming(None);
    wait_for("the stream to be back", || async {
        env.engine().stream_connected()
    })
    .await;
    env.rep_edits(&ids[1], serde_json::json!({ "Amount": 434343 }));
    env.wait_cell(&ids[1], "Amount", "434343").await;
    env.settle().await;
    let conn =
        rusqlite::Connection::open_with_flags(&env.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let streamed: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit WHERE crm_id = ?1 AND field = 'Amount' AND source = 'stream'",
            [&ids[1]],
            |r| r.get(0),
        )
        .expect("count");
    assert!(
        streamed > 0,
        "the edit after the outage came through the stream"
    );
    env.stop().await;
}

/// `plansync status` (another process, reading the store) tells a quiet channel (the session
/// alive, no events) from a stream that is down, and shows the stream's health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_a_quiet_channel_from_a_stream_that_is_down() {
    let mut env = Env::new(&rules_dir()).await;
    env.start(true).await;
    env.settle().await;
    let db = env.db.clone();
    let status = move |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plansync"))
            .args(["status", "--format", format, "--db"])
            .arg(&db)
            .output()
            .expect("plansync status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json = |text: String| -> serde_json::Value { serde_json::from_str(&text).expect("json") };
    wait_for("the stream connected, in status", || async {
        !json(status("json"))["stream"]["connected_since"].is_null()
    })
    .await;
    // A channel is listed once it has delivered an event (its replay id is then stored).
    let ids = env.opportunities().await;
    env.rep_edits(&ids[0], serde_json::json!({ "Amount": 515151 }));
    env.wait_cell(&ids[0], "Amount", "515151").await;
    env.settle().await;
    let now = json(status("json"));
    let channels: Vec<&serde_json::Value> = now["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source"].as_str().unwrap().starts_with("cdc:"))
        .collect();
    assert!(!channels.is_empty(), "{now:#}");
    for c in &channels {
        assert!(
            !c["quiet_since"].is_null(),
            "a live channel is quiet, not behind: {c}"
        );
        assert!(c["lag_seconds"].as_i64().unwrap() < 60, "{c}");
    }
    assert_eq!(now["stream"]["reconnects"], 0, "{now:#}");
    let table = status("table");
    assert!(
        table.contains("quiet: no events since") && table.contains("connected since"),
        "{table}"
    );

    env.crm
        .refuse_streaming(Some("403::Organization total events daily limit exceeded"));
    wait_for("the stream down, in status", || async {
        !json(status("json"))["stream"]["down_since"].is_null()
    })
    .await;
    let down = json(status("json"));
    assert!(down["stream"]["connected_since"].is_null(), "{down:#}");
    assert!(!down["stream"]["last_error"].is_null(), "{down:#}");
    for c in down["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source"].as_str().unwrap().starts_with("cdc:"))
    {
        assert!(
            c["quiet_since"].is_null(),
            "a channel of a dead session is not quiet: {c}"
        );
    }
    let table = status("table");
    assert!(
        table.contains("down since") && table.contains("last error at"),
        "{table}"
    );
    assert!(!table.contains("quiet: no events since"), "{table}");

    env.crm.refuse_streaming(None);
    wait_for("the stream back, in status", || async {
        let s = json(status("json"));
        !s["stream"]["connected_since"].is_null() && s["stream"]["reconnects"].as_u64() >= Some(1)
    })
    .await;
    env.stop().await;
    let stopped = json(status("json"));
    assert_eq!(
        stopped["stream"]["last_error"], "plansync stopped",
        "{stopped:#}"
    );
    assert!(stopped["stream"]["connected_since"].is_null());
}

/// A call Anaplan refuses as a whole for what one value carries (here a web application
/// firewall that blocks a text) is split until the write at fault is alone: the other writes
/// of the call land, and only the poisoned one ends as a `write_failed` exception; for cell
/// writes and for list item properties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poisoned_value_does_not_take_its_call_with_it() {
    let mut env = Env::new(&rules_dir()).await;
    env.write_retry = Some(WriteRetry {
        attempts: 2,
        give_up_after: Duration::from_secs(3600),
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_millis(400)),
    });
    // One batch for the three edits below.
    env.tune = Some(|o| o.batch_window = Duration::from_millis(600));
    env.start(true).await;
    env.settle().await;
    let deals = env.opportunities().await;
    env.anaplan.set_faults(plansync_sim::anaplan::Faults {
        refuse_body_containing: Some("987654.32".into()),
        ..plansync_sim::anaplan::Faults::default()
    });
    // One change event: the poisoned amount and a close date of the same deal, in one call
    // with another deal's amount.
    env.rep_edits(
        &deals[0],
        serde_json::json!({ "Amount": 987654.32, "CloseDate": "2027-03-31" }),
    );
    env.rep_edits(&deals[1], serde_json::json!({ "Amount": 222222 }));
    env.wait_cell(&deals[1], "Amount", "222222").await;
    env.wait_cell(&deals[0], "Close Date", "2027-03-31").await;
    wait_for("the poisoned write to be given up", || async {
        !env.open_exceptions_for(&deals[0], "Amount").is_empty()
    })
    .await;
    let failed = env.exceptions(Some(ExceptionKind::WriteFailed));
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0].crm_id.as_deref(), Some(deals[0].as_str()));
    assert!(failed[0].message.contains("403"), "{}", failed[0].message);
    assert_ne!(
        env.cell(&deals[0], "Amount").as_deref(),
        Some("987654.32"),
        "never written"
    );

    // The same for list item properties (the deal's name): one update call, split.
    env.anaplan.set_faults(plansync_sim::anaplan::Faults {
        refuse_body_containing: Some("POISON-7f3".into()),
        ..plansync_sim::anaplan::Faults::default()
    });
    env.rep_edits(&deals[2], serde_json::json!({ "Name": "Acme POISON-7f3" }));
    env.rep_edits(&deals[3], serde_json::json!({ "Name": "Fine Industries" }));
    let name_of = |code: &str| {
        env.anaplan
            .list_items(MODEL, OPP_LIST)
            .expect("list")
            .into_iter()
            .find(|i| i.code.as_deref() == Some(code))
            .and_then(|i| i.properties.get("Opportunity Name").cloned())
    };
    wait_for("the fine name in Anaplan", || async {
        name_of(&deals[3]).as_deref() == Some("Fine Industries")
    })
    .await;
    wait_for("the poisoned name to be given up", || async {
        !env.open_exceptions_for(&deals[2], "Name").is_empty()
    })
    .await;
    assert_eq!(env.exceptions(Some(ExceptionKind::WriteFailed)).len(), 2);
    assert_ne!(name_of(&deals[2]).as_deref(), Some("Acme POISON-7f3"));
    env.stop().await;
}

/// Below the reserve of the org's daily API calls (as the CRM's `Sforce-Limit-Info` says),
/// polls asked for early do not run; once the budget frees up, they do again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_api_reserve_only_scheduled_polls_run() {
    let mut env = Env::new(&rules_dir()).await;
    env.tune = Some(|o| o.crm_api_reserve_percent = 10);
    env.start(true).await;
    env.settle().await;
    let queries = |env: &Env| {
        env.crm
            .request_log()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/query"))
            .count()
    };
    // 95% of the day's calls are spent; the next answer tells the client.
    env.crm.set_daily_limit(Some(10_000), Some(9_500));
    env.poll().await;
    let before = queries(&env);
    for _ in 0..3 {
        env.engine().poll_now(Some(plansync::model::Side::Crm));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(queries(&env), before, "no early poll below the reserve");

    // The budget frees up; a write's answer says so; early polls run again.
    env.crm.set_daily_limit(Some(10_000), Some(0));
    let territories = env.ids("Territory__c").await;
    env.planner_sets(
        TER_MODULE,
        TER_LIST,
        &territories[0],
        "Annual Quota",
        number("7400000"),
    )
    .await;
    env.engine().poll_now(Some(plansync::model::Side::Anaplan));
    wait_for("the quota in the CRM", || async {
        env.crm_field(&territories[0], "Annual_Quota__c").as_f64() == Some(7_400_000.0)
    })
    .await;
    let before = queries(&env);
    env.engine().poll_now(Some(plansync::model::Side::Crm));
    wait_for("an early CRM poll again", || async {
        queries(&env) > before
    })
    .await;
    env.stop().await;
}
