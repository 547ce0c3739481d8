//! The storm: `plansync run` for 60 s against both simulators failing as real systems do
//! (5% of calls answered 503, a tenant rate limit that answers 429, tokens expired and stream
//! sessions dropped every few seconds) while reps and planners keep editing, then quiet. Both
//! systems must end with every last edit, nothing lost; a write poisoned on purpose (its CRM
//! record locked throughout) must be exactly one `write_failed` exception; SIGTERM exits 0.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::run::{first_run_done, run_config, simulators, spawn_run, wait_long};
use crate::support::*;
use plansync::anaplan::{CellValue as Cell, CellWrite, DimRef, ItemRef, LineItemRef};
use plansync_sim::anaplan as asim;
use serde_json::{Value as Json, json};

const STORM: Duration = Duration::from_secs(60);

fn open_exceptions(db: &Path) -> Vec<(String, String, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let mut stmt = conn
        .prepare(
            "SELECT kind, coalesce(crm_id, ''), coalesce(field, '') FROM exceptions
             WHERE status = 'open' ORDER BY id",
        )
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn waiting_writes(db: &Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    conn.query_row(
        "SELECT count(*) FROM outbox WHERE state IN ('pending', 'in_flight')",
        [],
        |r| r.get(0),
    )
    .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_seconds_of_storm_then_quiet_and_both_systems_hold_every_last_edit() {
    let (crm, anaplan) = simulators().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("plansync.db");
    let engine = spawn_run(
        dir.path(),
        &run_config(
            &crm,
            &anaplan,
            r#"[schedule]
crm_poll = "30s"
anaplan_poll = "30s"
crm_poll_while_stream_down = "30s"

[engine]
batch_window = "50ms"
write_attempts = 3
"#,
        ),
    );
    let read = || engine.log();
    wait_long("the first run", Duration::from_secs(60), async || {
        first_run_done(&db)
    })
    .await;

    let crm_api = crm_client(&crm);
    let ids = |object: &'static str| {
        let crm_api = crm_api.clone();
        async move {
            crm_api
                .query(&format!("SELECT Id FROM {object} ORDER BY Name"))
                .await
                .expect("query")
                .records
                .iter()
                .filter_map(|r| r.get("Id").and_then(Json::as_str).map(str::to_string))
                .collect::<Vec<_>>()
        }
    };
    let deals = ids("Opportunity").await;
    let territories = ids("Territory__c").await;
    assert!(deals.len() >= 3 && territories.len() >= 3);
    let planner = anaplan_client(&anaplan);
    let ter_module = planner.module_id(MODEL, TER_MODULE).await.unwrap();
    let quota = |code: &str, v: i64| CellWrite {
        line_item: LineItemRef::Name("Annual Quota".into()),
        dimensions: vec![(DimRef::Name(TER_LIST.into()), ItemRef::Code(code.into()))],
        value: Cell::Number(plansync::model::Decimal::parse(&v.to_string(), 2).unwrap()),
    };

    // The poisoned write: a quota for a territory whose CRM record stays locked.
    let poisoned = territories[0].clone();
    crm.lock_record(&poisoned, true);
    planner
        .write_cells(MODEL, &ter_module, &[quota(&poisoned, 6_600_000)])
        .await
        .expect("planner write");

    // The storm.
    anaplan.set_faults(asim::Faults {
        error_rate: 0.05,
        error_status: 503,
        include_auth: true,
        ..asim::Faults::default()
    });
    anaplan.set_rate_per_minute(120);
    crm.set_error_rate(0.05);
    let mut last_amount: BTreeMap<String, i64> = BTreeMap::new();
    let mut last_quota: BTreeMap<String, i64> = BTreeMap::new();
    let started = Instant::now();
    let mut tick = 0u64;
    while started.elapsed() < STORM {
        tick += 1;
        let deal = &deals[(tick as usize) % deals.len()];
        let amount = 100_000 + tick as i64 * 7;
        // A rep's edit; the CRM's own 503s are the rep's problem, not the engine's: retried.
        while crm
            .user_edit("Opportunity", deal, json!({ "Amount": amount }), None)
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        last_amount.insert(deal.clone(), amount);
        let territory = &territories[1 + (tick as usize) % (territories.len() - 1)];
        let q = 5_000_000 + tick as i64 * 1_000;
        if planner
            .write_cells(MODEL, &ter_module, &[quota(territory, q)])
            .await
            .is_ok_and(|o| o.failures.is_empty())
        {
            last_quota.insert(territory.clone(), q);
        }
        if tick.is_multiple_of(8) {
            anaplan.expire_tokens();
            crm.expire_all_tokens();
        }
        if tick.is_multiple_of(12) {
            crm.drop_sessions();
        }
        if tick.is_multiple_of(5) {
            engine.signal("USR1");
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let counts = anaplan.request_counts();
    assert!(
        counts.faulted > 0,
        "the storm's 503s reached Anaplan: {counts:?}"
    );
    assert!(counts.rate_limited > 0, "and its 429s: {counts:?}");
    let crm_503 = crm.request_log().iter().filter(|r| r.status == 503).count();
    assert!(crm_503 > 0, "the storm's 503s reached the CRM");

    // Quiet.
    anaplan.set_faults(asim::Faults::default());
    anaplan.set_rate_per_minute(0);
    crm.set_error_rate(0.0);
    engine.signal("USR1");
    let amount_in_anaplan = |deal: &str| {
        anaplan.cells(MODEL, OPP_MODULE).and_then(|c| {
            c.get(deal)
                .and_then(|r| r.get("Amount"))
                .map(|v| v.to_string())
        })
    };
    wait_long(
        "both systems to hold every last edit",
        Duration::from_secs(150),
        async || {
            let amounts = last_amount.iter().all(|(deal, v)| {
                amount_in_anaplan(deal) == Some(v.to_string())
                    && crm
                        .record(deal)
                        .is_some_and(|r| r["Amount"].as_f64() == Some(*v as f64))
            });
            let quotas = last_quota.iter().all(|(t, v)| {
                crm.record(t)
                    .is_some_and(|r| r["Annual_Quota__c"].as_f64() == Some(*v as f64))
            });
            if !(amounts && quotas) {
                engine.signal("USR1");
            }
            amounts && quotas && waiting_writes(&db) == 0
        },
    )
    .await;

    // Exactly one write_failed: the poisoned one; nothing else needs a person.
    let open = open_exceptions(&db);
    let failed: Vec<_> = open
        .iter()
        .filter(|(k, _, _)| k == "write_failed")
        .collect();
    assert_eq!(
        failed,
        vec![&(
            "write_failed".to_string(),
            poisoned.clone(),
            "Annual_Quota__c".to_string()
        )],
        "{open:?}\n{}",
        read()
    );
    assert!(
        open.iter().all(|(k, _, _)| k == "write_failed"),
        "no other exception: {open:?}"
    );
    assert_ne!(
        crm.record(&poisoned).unwrap()["Annual_Quota__c"].as_f64(),
        Some(6_600_000.0),
        "the locked record kept its value"
    );

    engine.signal("TERM");
    let log = read();
    let status = engine.wait();
    assert!(status.success(), "SIGTERM exits 0: {status}\n{log}");
}
