//! Large CRM reads through Bulk API 2.0 query: `plansync run`'s first run of an org above
//! `engine.crm_bulk_query_above` reads it through a query job (unordered CSV pages), decides
//! every record as a REST read would, and stores the greatest watermark; the client pages
//! through `Sforce-Locator`, and a failed job is an error, never an empty side.

use std::time::Duration;

use crate::support::run::{first_run_done, run_config, simulators, spawn_run, wait_long};
use crate::support::*;
use plansync::crm::CrmError;
use plansync::model::Side;
use serde_json::{Value as Json, json};

/// Every shadow row of `pairing`: (record, field) → the CRM value last seen.
fn seen_crm(db: &std::path::Path, pairing: &str) -> Vec<(String, String, Option<String>)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let mut stmt = conn
        .prepare(
            "SELECT crm_id, field, seen_crm_value FROM shadow WHERE pairing = ?1
             ORDER BY crm_id, field",
        )
        .expect("prepare");
    stmt.query_map([pairing], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// The position each shard stored for `source` (`source#<shard>`).
fn checkpoints(db: &std::path::Path, source: &str) -> Vec<Json> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let mut stmt = conn
        .prepare("SELECT position FROM checkpoints WHERE source = ?1 OR source LIKE ?1 || '#%'")
        .expect("prepare");
    stmt.query_map([source], |r| r.get::<_, String>(0))
        .expect("query")
        .map(|p| serde_json::from_str(&p.expect("row")).expect("a position"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_above_the_threshold_reads_the_crm_through_a_bulk_query_job() {
    let (crm, anaplan) = simulators().await;
    // Thirty new deals Anaplan has never seen, so the first run has items to create there.
    let mut created = Vec::new();
    for n in 0..30 {
        let amount = if n % 7 == 0 {
            Json::Null
        } else {
            json!(1_000.25 + f64::from(n))
        };
        created.push(
            crm.create(
                "Opportunity",
                json!({
                    "Name": format!("Bulk deal {n}, \"quoted\""),
                    "Amount": amount,
                    "StageName": "Prospecting",
                    "CloseDate": "2027-02-01",
                }),
                None,
            )
            .expect("create"),
        );
    }
    // The first seeded deal changes last: the greatest stamp is on the first row the job
    // returns, not its last.
    let opportunities = crm_client(&crm)
        .query("SELECT Id FROM Opportunity ORDER BY CreatedDate, Id")
        .await
        .expect("query")
        .records;
    let first = opportunities[0]["Id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(5)).await;
    crm.user_edit("Opportunity", &first, json!({"Amount": 125_500.0}), None)
        .expect("edit");
    crm.reset_request_log();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("plansync.db");
    let engine = spawn_run(
        dir.path(),
        &run_config(&crm, &anaplan, "[engine]\ncrm_bulk_query_above = 10\n"),
    );
    wait_long("the first run", Duration::from_secs(60), async || {
        first_run_done(&db)
    })
    .await;

    // One query job for the opportunities (34 > 10), none for the three territories; each
    // pairing's REST read stopped at its first page.
    let log = crm.request_log();
    let calls = |method: &str, pred: &dyn Fn(&str) -> bool| {
        log.iter()
            .filter(|r| r.method == method && pred(&r.path))
            .count()
    };
    assert_eq!(
        calls("POST", &|p| p.ends_with("/jobs/query")),
        1,
        "{log:#?}"
    );
    assert!(calls("GET", &|p| p.ends_with("/results")) >= 1);
    assert_eq!(
        calls("DELETE", &|p| p.contains("/jobs/query/")),
        1,
        "the finished job is deleted"
    );
    assert_eq!(calls("GET", &|p| p.ends_with("/queryAll")), 2);
    assert_eq!(calls("GET", &|p| p.contains("/queryAll/")), 0);
    assert!(engine.log().contains("crm_bulk_query"), "{}", engine.log());

    // Every value read as CSV text is the value REST would give, field by field.
    let rules = plansync::rules::load(&[rules_dir()]).expect("rules");
    let pairing = rules.pairing("opportunity").expect("pairing");
    let fields: Vec<&str> = pairing.fields.iter().map(|f| f.crm.as_str()).collect();
    let rest = crm_client(&crm)
        .query(&format!(
            "SELECT Id, {} FROM Opportunity",
            fields.join(", ")
        ))
        .await
        .expect("query")
        .records;
    assert_eq!(rest.len(), 34);
    let mut expected = Vec::new();
    for row in &rest {
        let id = row["Id"].as_str().unwrap().to_string();
        for f in &pairing.fields {
            let value = f
                .normalise(Side::Crm, &row[f.crm.as_str()])
                .expect("a valid CRM value");
            expected.push((id.clone(), f.crm.clone(), value.to_text()));
        }
    }
    expected.sort();
    assert_eq!(seen_crm(&db, "opportunity"), expected);
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let validation: i64 = conn
        .query_row(
            "SELECT count(*) FROM exceptions WHERE kind = 'validation'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(
        validation, 0,
        "no value read as CSV failed its field's type"
    );

    // Anaplan gets the new deals (the first run queued their writes), with the CRM's amounts;
    // a null amount is Anaplan's blank (no value, or 0).
    let amounts = || {
        let cells = anaplan.cells(MODEL, OPP_MODULE).expect("module");
        created
            .iter()
            .map(|id| {
                cells.get(id).map(|item| {
                    item.get("Amount")
                        .and_then(|v| v.to_string().parse::<f64>().ok())
                        .filter(|a| *a != 0.0)
                })
            })
            .collect::<Vec<_>>()
    };
    let want: Vec<Option<Option<f64>>> = (0..30)
        .map(|row| Some((row % 7 != 0).then(|| 1_000.25 + f64::from(row))))
        .collect();
    wait_long(
        "the new deals in Anaplan",
        Duration::from_secs(30),
        async || amounts() == want,
    )
    .await;

    // The watermark is the greatest stamp read, though it came first.
    let stamps = crm_client(&crm)
        .query("SELECT Id, SystemModstamp FROM Opportunity ORDER BY SystemModstamp DESC, Id")
        .await
        .expect("query")
        .records;
    assert_eq!(stamps[0]["Id"], first.as_str());
    let newest = chrono::DateTime::parse_from_str(
        stamps[0]["SystemModstamp"].as_str().unwrap(),
        "%Y-%m-%dT%H:%M:%S%.f%z",
    )
    .unwrap();
    let marks = checkpoints(&db, "crm_poll:opportunity");
    assert!(!marks.is_empty(), "a CRM watermark is stored");
    for mark in &marks {
        let at = chrono::DateTime::parse_from_rfc3339(mark["at"].as_str().unwrap()).unwrap();
        assert_eq!(at, newest, "{mark}");
    }
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_pages_a_bulk_query_by_locator_and_a_failed_job_is_an_error() {
    let crm = crm_sim(plansync_sim::crm::CrmSimConfig::default()).await;
    for n in 0..20 {
        crm.create(
            "Opportunity",
            json!({"Name": format!("Deal {n}"), "StageName": "Prospecting", "CloseDate": "2027-02-01", "Amount": n}),
            None,
        )
        .expect("create");
    }
    let mut config = crm_client(&crm).config().clone();
    config.bulk_query_page = 7;
    let client = plansync::crm::CrmClient::new(config).expect("client");
    let mut pager = client.bulk_query_pages("SELECT Id, Name, Amount FROM Opportunity", false, 5);
    let mut ids = Vec::new();
    while let Some(rows) = pager.next_page().await.expect("a page") {
        assert!(rows.len() <= 5);
        ids.extend(rows.iter().map(|r| r["Id"].as_str().unwrap().to_string()));
    }
    assert_eq!(pager.total_size(), Some(24));
    let mut rest: Vec<String> = client
        .query("SELECT Id FROM Opportunity")
        .await
        .expect("query")
        .records
        .iter()
        .map(|r| r["Id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    rest.sort();
    assert_eq!(ids, rest, "every row once");
    let log = crm.request_log();
    let results = log.iter().filter(|r| r.path.ends_with("/results")).count();
    assert_eq!(results, 4, "24 rows in pages of 7: {log:#?}");
    let stats = client.stats();
    assert_eq!(
        stats.calls_of(plansync::crm::CallKind::BulkResults),
        4,
        "{stats:?}"
    );

    // A query the org refuses is an error at once, not an empty result.
    let mut bad = client.bulk_query_pages("SELECT Nope__c FROM Opportunity", false, 5);
    match bad.next_page().await {
        Err(CrmError::Api { code, .. }) => assert_eq!(code, "INVALID_FIELD"),
        other => panic!("expected INVALID_FIELD, got {other:?}"),
    }
}

/// simple-salesforce, unchanged, reads a large org: REST `query_all` past 2,000 rows (its
/// `nextRecordsUrl` paging), and `bulk2` query and query_all through the simulator's query
/// jobs, the same rows REST gives (a deleted one only through queryAll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_salesforce_reads_a_large_org_through_rest_pages_and_bulk_query_jobs() {
    let crm = crm_sim(plansync_sim::crm::CrmSimConfig::default()).await;
    for n in 0..2_101 {
        crm.create(
            "Opportunity",
            json!({"Name": format!("Deal {n}, with a comma"), "StageName": "Prospecting", "CloseDate": "2027-02-01", "Amount": n}),
            None,
        )
        .expect("create");
    }
    let client = crm_client(&crm);
    crm.reset_request_log();
    let gone = client
        .query("SELECT Id FROM Opportunity WHERE Name = 'Deal 3, with a comma'")
        .await
        .expect("query")
        .records[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    crm.delete(&gone, None).expect("delete");
    let seen = crm_script(&crm, "third_party_bulk_query.py").await;
    let more = crm
        .request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/services/data/v59.0/query/"))
        .count();
    assert_eq!(more, 1, "simple-salesforce followed one nextRecordsUrl");
    let rest = client
        .query("SELECT Id, Name, Amount, CloseDate FROM Opportunity")
        .await
        .expect("query")
        .records;
    // 4 seeded + 2,101 created - 1 deleted: REST pages of 2,000, Bulk pages of 1,000.
    assert_eq!(rest.len(), 2_104);
    assert_eq!(seen["rest_total"], 2_104);
    let mut rest_ids: Vec<&str> = seen["rest_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    rest_ids.sort_unstable();
    rest_ids.dedup();
    assert_eq!(
        rest_ids.len(),
        2_104,
        "every row once through nextRecordsUrl"
    );
    assert_eq!(seen["pages"], 3, "{seen}");
    let rows = seen["rows"].as_array().unwrap();
    assert_eq!(rows.len(), rest.len());
    for want in &rest {
        let id = want["Id"].as_str().unwrap();
        let got = rows
            .iter()
            .find(|r| r["Id"] == id)
            .unwrap_or_else(|| panic!("{id} read"));
        assert_eq!(got["Name"], want["Name"]);
        assert_eq!(got["CloseDate"], want["CloseDate"]);
        assert_eq!(got["IsDeleted"], "false");
        let amount = got["Amount"].as_str().unwrap().parse::<f64>().ok();
        assert_eq!(amount, want["Amount"].as_f64(), "{id}");
    }
    let all = seen["all_rows"].as_array().unwrap();
    assert_eq!(seen["all_pages"], 3);
    assert_eq!(all.len(), 2_105);
    let deleted: Vec<&Json> = all.iter().filter(|r| r["IsDeleted"] == "true").collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["Id"], gone.as_str());
}

/// An org with no Bulk API 2.0 query jobs left today refuses the job: the first run says so
/// and reads the CRM through REST pages instead, deciding every record all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bulk_query_job_falls_back_to_rest_pages() {
    let (crm, anaplan) = simulators().await;
    for n in 0..15 {
        crm.create(
            "Opportunity",
            json!({"Name": format!("Deal {n}"), "StageName": "Prospecting", "CloseDate": "2027-02-01", "Amount": n}),
            None,
        )
        .expect("create");
    }
    crm.set_bulk_query_job_limit(0);
    crm.reset_request_log();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("plansync.db");
    let engine = spawn_run(
        dir.path(),
        &run_config(&crm, &anaplan, "[engine]\ncrm_bulk_query_above = 10\n"),
    );
    wait_long("the first run", Duration::from_secs(60), async || {
        first_run_done(&db)
    })
    .await;
    let log = engine.log();
    assert!(log.contains("crm_bulk_query_refused"), "{log}");
    assert!(log.contains("LIMIT_EXCEEDED"), "{log}");
    let requests = crm.request_log();
    let refused = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/jobs/query"))
        .all(|r| r.status == 400);
    assert!(refused, "{requests:#?}");
    // The probe page, then the whole read again through REST, for the opportunities.
    let rest_reads = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/queryAll"))
        .count();
    assert_eq!(rest_reads, 3, "{requests:#?}");
    let seen = seen_crm(&db, "opportunity");
    let records: std::collections::BTreeSet<&str> =
        seen.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(records.len(), 19, "every deal decided");
    drop(engine);
}
