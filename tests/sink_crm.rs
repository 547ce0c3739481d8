//! The CRM sink (`plansync::engine::sink::crm`) against the CRM org simulator over real
//! loopback sockets: a batch of fields over several records in one collections call, a large
//! batch through a Bulk API 2.0 job, per-record refusals next to accepted records, requests
//! the sink refuses itself, and the faults that must come back as `Retry` with nothing lost
//! (lock contention, a spent daily limit, a token endpoint that refuses us).
//!
//! Every outcome is checked in the sink's answer and in the simulator's records.

use crate::support::crm_sim;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use serde_json::{Value as Json, json};
use tokio::sync::{mpsc, oneshot};

use plansync::crm::cdc::{Backoff, CdcConfig, CdcItem, CdcListener, ReplayFrom, Transport};
use plansync::crm::{AuthConfig, CrmClient, CrmConfig, RetryPolicy};
use plansync::engine::sink::crm::CrmSink;
use plansync::engine::write::{WriteOutcome, WriteRequest, lifecycle};
use plansync::model::{Decimal, RecordKey, Value};
use plansync::rules::RuleSet;
use plansync::secret::Secret;
use plansync_sim::crm::{self, CrmSimConfig, CrmSimHandle, DEFAULT_CLIENT_ID};

const OUR_CLIENT: &str = "plansync-sink-test";
const PATIENCE: Duration = Duration::from_secs(25);

async fn start_sim() -> CrmSimHandle {
    crm_sim(CrmSimConfig {
        connect_timeout: Duration::from_secs(1),
        ..CrmSimConfig::default()
    })
    .await
}

fn config_with(sim: &CrmSimHandle, secret: &str) -> CrmConfig {
    let auth = AuthConfig::ClientCredentials {
        client_id: DEFAULT_CLIENT_ID.into(),
        client_secret: Secret::new(secret),
    };
    let mut config = CrmConfig::new(sim.instance_url(), "59.0", auth);
    config.call_client_id = OUR_CLIENT.into();
    config.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    config.request_timeout = Duration::from_secs(20);
    config.bulk_poll_interval = Duration::from_millis(20);
    config.bulk_timeout = Duration::from_secs(20);
    config
}

fn sink(sim: &CrmSimHandle) -> CrmSink {
    CrmSink::new(CrmClient::new(config_with(sim, crm::DEFAULT_CLIENT_SECRET)).expect("client"))
}

fn rules() -> RuleSet {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    plansync::rules::load(&[dir]).expect("the example rules load")
}

/// A new opportunity in the simulator, made "by a user".
fn opportunity(sim: &CrmSimHandle, name: &str) -> String {
    sim.create(
        "Opportunity",
        json!({"Name": name, "StageName": "Prospecting", "CloseDate": "2027-01-29", "Amount": 100}),
        None,
    )
    .expect("create opportunity")
}

fn territory(sim: &CrmSimHandle, name: &str) -> String {
    sim.create(
        "Territory__c",
        json!({"Name": name, "Region__c": "AMER", "Annual_Quota__c": 5000, "Active__c": false}),
        None,
    )
    .expect("create territory")
}

fn request(outbox_id: i64, pairing: &str, id: &str, field: &str, value: Value) -> WriteRequest {
    WriteRequest {
        outbox_id,
        record: RecordKey {
            pairing: pairing.into(),
            crm_id: id.into(),
        },
        field: field.into(),
        value,
        expect: None,
    }
}

fn money(raw: &str) -> Value {
    Value::Number(Decimal::parse(raw, 2).expect("number"))
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn field(sim: &CrmSimHandle, id: &str, name: &str) -> Json {
    sim.record(id).expect("record exists")[name].clone()
}

/// Collections update calls in the simulator's request log.
fn collections_calls(sim: &CrmSimHandle) -> usize {
    sim.request_log()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/composite/sobjects"))
        .count()
}

fn bulk_job_creations(sim: &CrmSimHandle) -> usize {
    sim.request_log()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/jobs/ingest"))
        .count()
}

fn outcome(report: &plansync::engine::write::WriteReport, outbox_id: i64) -> &WriteOutcome {
    &report
        .outcomes
        .iter()
        .find(|(id, _)| *id == outbox_id)
        .unwrap_or_else(|| panic!("no outcome for {outbox_id}"))
        .1
}

fn calls(report: &plansync::engine::write::WriteReport, kind: &str) -> u64 {
    report
        .calls
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(0, |(_, n)| *n)
}

#[track_caller]
fn assert_rejected(outcome: &WriteOutcome, needle: &str) {
    match outcome {
        WriteOutcome::Rejected { message } => {
            assert!(message.contains(needle), "`{message}` lacks `{needle}`")
        }
        other => panic!("expected Rejected with `{needle}`, got {other:?}"),
    }
}

/// Not sent because the CRM could not be reached at all: the side waits, the write uncounted.
#[track_caller]
fn assert_unreachable(outcome: &WriteOutcome, needle: &str) {
    match outcome {
        WriteOutcome::Unreachable { message } => {
            assert!(message.contains(needle), "`{message}` lacks `{needle}`")
        }
        other => panic!("expected Unreachable with `{needle}`, got {other:?}"),
    }
}

#[track_caller]
fn assert_retry(outcome: &WriteOutcome, needle: &str) {
    match outcome {
        WriteOutcome::Retry { message } => {
            assert!(message.contains(needle), "`{message}` lacks `{needle}`")
        }
        other => panic!("expected Retry with `{needle}`, got {other:?}"),
    }
}

#[tokio::test]
async fn fields_of_several_records_go_in_one_collections_call() {
    let sim = start_sim().await;
    let rules = rules();
    let a = opportunity(&sim, "Sink A");
    let b = opportunity(&sim, "Sink B");
    let t = territory(&sim, "Sink North");
    let mut sink = sink(&sim);
    sim.reset_request_log();

    let close = NaiveDate::from_ymd_opt(2027, 3, 31).expect("date");
    let batch = vec![
        request(1, "opportunity", &a, "Amount", money("1234.56")),
        request(2, "opportunity", &a, "StageName", text("Closed Won")),
        request(3, "opportunity", &a, "CloseDate", Value::Date(close)),
        request(4, "territory", &t, "Active__c", Value::Bool(true)),
        request(5, "opportunity", &b, "Probability", money("40")),
        request(6, "territory", &t, "Region__c", text("EMEA")),
        // A null clears the field.
        request(7, "territory", &t, "Annual_Quota__c", Value::Null),
        request(8, "opportunity", &b, "Name", text("Sink B, renamed")),
    ];
    let before = Utc::now();
    let report = sink.write(&rules, &batch).await;
    let after = Utc::now();

    assert_eq!(
        report
            .outcomes
            .iter()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>(),
        "one outcome per request, in request order"
    );
    for (id, o) in &report.outcomes {
        match o {
            WriteOutcome::Acked { at } => assert!(before <= *at && *at <= after, "{id}: {at}"),
            other => panic!("request {id}: {other:?}"),
        }
    }
    assert_eq!(collections_calls(&sim), 1, "{:?}", sim.request_log());
    assert_eq!(bulk_job_creations(&sim), 0);
    assert_eq!(calls(&report, "collections"), 1);
    assert_eq!(calls(&report, "bulk"), 0);

    assert_eq!(field(&sim, &a, "Amount"), json!(1234.56));
    assert_eq!(field(&sim, &a, "StageName"), json!("Closed Won"));
    assert_eq!(field(&sim, &a, "CloseDate"), json!("2027-03-31"));
    assert_eq!(field(&sim, &b, "Probability"), json!(40.0));
    assert_eq!(field(&sim, &b, "Name"), json!("Sink B, renamed"));
    assert_eq!(
        field(&sim, &b, "Amount"),
        json!(100.0),
        "untouched field kept"
    );
    assert_eq!(field(&sim, &t, "Active__c"), json!(true));
    assert_eq!(field(&sim, &t, "Region__c"), json!("EMEA"));
    assert_eq!(field(&sim, &t, "Annual_Quota__c"), Json::Null);
    assert_eq!(field(&sim, &t, "Name"), json!("Sink North"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_batch_over_the_bulk_threshold_goes_through_a_bulk_job() {
    let sim = start_sim().await;
    let rules = rules();
    let ids: Vec<String> = (0..6)
        .map(|n| opportunity(&sim, &format!("Bulk {n}")))
        .collect();
    let mut config = config_with(&sim, crm::DEFAULT_CLIENT_SECRET);
    config.bulk_threshold = 5;
    let mut sink = CrmSink::new(CrmClient::new(config).expect("client"));
    sim.reset_request_log();

    // Two fields per record: still six records, so six rows of one job.
    let mut batch = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let n = n as i64;
        batch.push(request(
            2 * n,
            "opportunity",
            id,
            "Amount",
            money(&format!("{}.25", 1000 + n)),
        ));
        batch.push(request(
            2 * n + 1,
            "opportunity",
            id,
            "StageName",
            text("Negotiation"),
        ));
    }
    // One record of the batch is deleted meanwhile: its row fails inside the job.
    sim.delete(&ids[5], None).expect("delete");
    let report = sink.write(&rules, &batch).await;

    assert_eq!(bulk_job_creations(&sim), 1, "{:?}", sim.request_log());
    assert_eq!(collections_calls(&sim), 0);
    assert!(calls(&report, "bulk") >= 5, "{:?}", report.calls);
    assert_eq!(calls(&report, "collections"), 0);
    for (n, id) in ids.iter().enumerate().take(5) {
        let n = n as i64;
        assert!(
            matches!(outcome(&report, 2 * n), WriteOutcome::Acked { .. }),
            "{:?}",
            report.outcomes
        );
        assert!(matches!(
            outcome(&report, 2 * n + 1),
            WriteOutcome::Acked { .. }
        ));
        assert_eq!(field(&sim, id, "Amount"), json!(1000.25 + n as f64));
        assert_eq!(field(&sim, id, "StageName"), json!("Negotiation"));
    }
    assert_rejected(outcome(&report, 10), "ENTITY_IS_DELETED");
    assert_rejected(outcome(&report, 11), "ENTITY_IS_DELETED");
    assert_eq!(field(&sim, &ids[5], "Amount"), json!(100.0));
    sim.shutdown().await;
}

#[tokio::test]
async fn refused_records_are_rejected_with_the_code_and_the_rest_land() {
    let sim = start_sim().await;
    let rules = rules();
    let good = opportunity(&sim, "Good");
    let bad_pick = opportunity(&sim, "Bad picklist");
    let deleted = opportunity(&sim, "Deleted");
    let no_name = opportunity(&sim, "Nameless");
    sim.delete(&deleted, None).expect("delete");
    let mut sink = sink(&sim);
    sim.reset_request_log();

    let batch = vec![
        request(1, "opportunity", &good, "Amount", money("10")),
        // The CRM refuses a record as a whole: the good field of it does not land either.
        request(2, "opportunity", &bad_pick, "StageName", text("Maybe Won")),
        request(3, "opportunity", &bad_pick, "Amount", money("20")),
        request(4, "opportunity", &deleted, "Amount", money("30")),
        request(5, "opportunity", &no_name, "Name", Value::Null),
        // Refused by the sink itself, without a call.
        request(6, "opportunity", &good, "Secret_Field__c", text("x")),
        request(7, "nosuchpairing", &good, "Amount", money("1")),
        request(8, "opportunity", &good, lifecycle::DELETE_ITEM, Value::Null),
        request(
            9,
            "opportunity",
            &good,
            lifecycle::DELETED_FLAG,
            Value::Bool(true),
        ),
        request(
            10,
            "opportunity",
            &good,
            lifecycle::ENSURE_ITEM,
            Value::Null,
        ),
        request(
            11,
            "nosuchpairing",
            &good,
            lifecycle::DELETE_RECORD,
            Value::Null,
        ),
        request(12, "opportunity", &good, "CloseDate", text("not a date")),
        request(13, "opportunity", "", "Amount", money("1")),
    ];
    let report = sink.write(&rules, &batch).await;

    assert!(matches!(outcome(&report, 1), WriteOutcome::Acked { .. }));
    assert_eq!(field(&sim, &good, "Amount"), json!(10.0));
    assert_rejected(
        outcome(&report, 2),
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: ",
    );
    assert_eq!(outcome(&report, 3), outcome(&report, 2));
    assert_eq!(field(&sim, &bad_pick, "StageName"), json!("Prospecting"));
    assert_eq!(field(&sim, &bad_pick, "Amount"), json!(100.0));
    assert_rejected(outcome(&report, 4), "ENTITY_IS_DELETED: ");
    assert_rejected(outcome(&report, 5), "REQUIRED_FIELD_MISSING: ");
    assert_eq!(field(&sim, &no_name, "Name"), json!("Nameless"));
    assert_rejected(outcome(&report, 6), "Secret_Field__c");
    assert_rejected(outcome(&report, 7), "nosuchpairing");
    assert_rejected(outcome(&report, 8), "not a CRM operation");
    assert_rejected(outcome(&report, 9), "not a CRM operation");
    assert_rejected(outcome(&report, 10), "not a CRM operation");
    assert_rejected(outcome(&report, 11), "no CRM record to delete");
    assert_rejected(outcome(&report, 12), "not a date");
    assert_rejected(outcome(&report, 13), "no CRM id");
    assert_eq!(field(&sim, &good, "IsDeleted"), json!(false));
    assert_eq!(collections_calls(&sim), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_batch_of_only_refused_requests_makes_no_call() {
    let sim = start_sim().await;
    let rules = rules();
    let id = opportunity(&sim, "Untouched");
    let mut sink = sink(&sim);
    sim.reset_request_log();
    let report = sink
        .write(
            &rules,
            &[request(1, "opportunity", &id, "Nope__c", text("x"))],
        )
        .await;
    assert_rejected(outcome(&report, 1), "Nope__c");
    assert!(report.calls.is_empty(), "{:?}", report.calls);
    assert!(sim.request_log().is_empty(), "{:?}", sim.request_log());
    let empty = sink.write(&rules, &[]).await;
    assert!(empty.outcomes.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn lock_contention_and_a_spent_limit_are_retried_and_nothing_is_lost() {
    let sim = start_sim().await;
    let rules = rules();
    let a = opportunity(&sim, "Locked A");
    let b = opportunity(&sim, "Locked B");
    let mut sink = sink(&sim);
    let batch = vec![
        request(1, "opportunity", &a, "Amount", money("111")),
        request(2, "opportunity", &b, "Amount", money("222")),
    ];

    // More lock failures than the client's three attempts can wait out.
    sim.inject_lock_errors(1000);
    let report = sink.write(&rules, &batch).await;
    assert_retry(outcome(&report, 1), "UNABLE_TO_LOCK_ROW");
    assert_retry(outcome(&report, 2), "UNABLE_TO_LOCK_ROW");
    assert_eq!(field(&sim, &a, "Amount"), json!(100.0));
    sim.inject_lock_errors(0);

    // The org's daily budget is spent.
    let (_, limit) = sim.api_usage();
    sim.set_daily_limit(None, Some(limit));
    let report = sink.write(&rules, &batch).await;
    assert_unreachable(outcome(&report, 1), "REQUEST_LIMIT_EXCEEDED");
    assert_unreachable(outcome(&report, 2), "REQUEST_LIMIT_EXCEEDED");
    assert_eq!(field(&sim, &a, "Amount"), json!(100.0));
    assert_eq!(field(&sim, &b, "Amount"), json!(100.0));

    // The budget frees up: the same batch, sent again, lands.
    sim.set_daily_limit(None, Some(0));
    let report = sink.write(&rules, &batch).await;
    assert!(
        report
            .outcomes
            .iter()
            .all(|(_, o)| matches!(o, WriteOutcome::Acked { .. })),
        "{:?}",
        report.outcomes
    );
    assert_eq!(field(&sim, &a, "Amount"), json!(111.0));
    assert_eq!(field(&sim, &b, "Amount"), json!(222.0));
    sim.shutdown().await;
}

#[tokio::test]
async fn authentication_faults_are_retried_and_nothing_is_lost() {
    let sim = start_sim().await;
    let rules = rules();
    let id = opportunity(&sim, "Auth");
    let batch = vec![request(1, "opportunity", &id, "Amount", money("77"))];

    // A token endpoint that refuses our credentials: nothing is written, the write waits.
    let mut refused =
        CrmSink::new(CrmClient::new(config_with(&sim, "not-the-secret")).expect("client"));
    let report = refused.write(&rules, &batch).await;
    assert_unreachable(outcome(&report, 1), "authentication failed");
    assert_eq!(field(&sim, &id, "Amount"), json!(100.0));
    assert_eq!(collections_calls(&sim), 0);

    // With the credentials fixed the same write lands; a token revoked in between is
    // replaced by the client without the sink noticing.
    let mut sink = sink(&sim);
    let report = sink.write(&rules, &batch).await;
    assert!(matches!(outcome(&report, 1), WriteOutcome::Acked { .. }));
    sim.revoke_all_tokens();
    let again = vec![request(2, "opportunity", &id, "Amount", money("78"))];
    let report = sink.write(&rules, &again).await;
    assert!(
        matches!(outcome(&report, 2), WriteOutcome::Acked { .. }),
        "{:?}",
        report.outcomes
    );
    assert_eq!(calls(&report, "auth"), 1, "{:?}", report.calls);
    assert_eq!(sink.client().stats().reauths, 1);
    assert_eq!(field(&sim, &id, "Amount"), json!(78.0));
    sim.shutdown().await;
}

#[tokio::test]
async fn our_writes_carry_the_client_id_into_change_events() {
    let sim = start_sim().await;
    let rules = rules();
    let id = opportunity(&sim, "Echo");
    let mut sink = sink(&sim);
    let from = i64::try_from(sim.last_replay_id()).expect("replay id");
    let report = sink
        .write(
            &rules,
            &[request(1, "opportunity", &id, "Amount", money("4242"))],
        )
        .await;
    assert!(matches!(outcome(&report, 1), WriteOutcome::Acked { .. }));

    // Replay from just before the write: the first event is ours, marked by our client id.
    let mut config = CdcConfig::new(
        "59.0",
        vec![(
            "/data/OpportunityChangeEvent".into(),
            ReplayFrom::After(from),
        )],
        Transport::LongPolling,
        OUR_CLIENT,
    );
    config.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    config.timeout_margin = Duration::from_secs(5);
    let listener = CdcListener::new(sink.client().clone(), config).expect("listener");
    let (tx, mut rx) = mpsc::channel(16);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(listener.run(tx, async move {
        let _ = stopped.await;
    }));
    let event = loop {
        let item = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("an event in time")
            .expect("listener running");
        match item {
            CdcItem::Event(e) => break e,
            CdcItem::Connected { .. } | CdcItem::Disconnected { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(event.record_ids, vec![id.clone()]);
    let origin = event.origin.clone().unwrap_or_default();
    assert!(
        origin.ends_with(&format!(";client={OUR_CLIENT}")),
        "{origin}"
    );
    assert!(event.ours);
    let _ = stop.send(());
    let _ = tokio::time::timeout(PATIENCE, task).await;
    sim.shutdown().await;
}

/// `anaplan_delete = "delete_record"`: the record deletes of a batch go in one collections
/// delete, each answered by its own result; one deleted already counts as deleted.
#[tokio::test]
async fn record_deletes_go_in_one_collections_call() {
    let sim = start_sim().await;
    let rules = rules();
    let doomed: Vec<String> = (0..3)
        .map(|n| opportunity(&sim, &format!("Doomed {n}")))
        .collect();
    let keep = opportunity(&sim, "Kept");
    sim.delete(&doomed[2], None).expect("delete");
    let mut sink = sink(&sim);
    sim.reset_request_log();
    let mut batch: Vec<_> = doomed
        .iter()
        .enumerate()
        .map(|(n, id)| {
            request(
                n as i64,
                "opportunity",
                id,
                lifecycle::DELETE_RECORD,
                Value::Null,
            )
        })
        .collect();
    batch.push(request(9, "opportunity", &keep, "Amount", money("55")));
    let report = sink.write(&rules, &batch).await;
    for n in 0..3 {
        assert!(
            matches!(outcome(&report, n), WriteOutcome::Acked { .. }),
            "{:?}",
            report.outcomes
        );
    }
    assert!(matches!(outcome(&report, 9), WriteOutcome::Acked { .. }));
    for id in &doomed {
        assert_eq!(field(&sim, id, "IsDeleted"), json!(true), "{id}");
    }
    assert_eq!(field(&sim, &keep, "IsDeleted"), json!(false));
    assert_eq!(field(&sim, &keep, "Amount"), json!(55.0));
    let deletes = sim
        .request_log()
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.ends_with("/composite/sobjects"))
        .count();
    assert_eq!((deletes, collections_calls(&sim)), (1, 1));
    assert_eq!(calls(&report, "collections"), 2, "{:?}", report.calls);
    sim.shutdown().await;
}

/// At or past the bulk threshold, deletes go through a Bulk API 2.0 `delete` job.
#[tokio::test]
async fn record_deletes_past_the_bulk_threshold_go_through_a_bulk_job() {
    let sim = start_sim().await;
    let rules = rules();
    let doomed: Vec<String> = (0..6)
        .map(|n| opportunity(&sim, &format!("Bulk doomed {n}")))
        .collect();
    let mut config = config_with(&sim, crm::DEFAULT_CLIENT_SECRET);
    config.bulk_threshold = 5;
    let mut sink = CrmSink::new(CrmClient::new(config).expect("client"));
    sim.reset_request_log();
    let batch: Vec<_> = doomed
        .iter()
        .enumerate()
        .map(|(n, id)| {
            request(
                n as i64,
                "opportunity",
                id,
                lifecycle::DELETE_RECORD,
                Value::Null,
            )
        })
        .collect();
    let report = sink.write(&rules, &batch).await;
    assert_eq!(bulk_job_creations(&sim), 1, "{:?}", sim.request_log());
    for (n, id) in doomed.iter().enumerate() {
        assert!(
            matches!(outcome(&report, n as i64), WriteOutcome::Acked { .. }),
            "{:?}",
            report.outcomes
        );
        assert_eq!(field(&sim, id, "IsDeleted"), json!(true));
    }
    sim.shutdown().await;
}
