//! The production CRM client (`plansync::crm`) against the CRM org simulator
//! (`plansync_sim::crm`) over real loopback sockets: authentication, paging, collections and
//! bulk writes, the CDC stream on both transports (echo marking, replay after a disconnect,
//! expired replay ids, gap/overflow/merged events, token revocation) and the fault paths
//! (row locks, the daily request limit).
//!
//! Every outcome is checked twice: in what the client returned and in the simulator's state
//! through its handle. Waits are bounded by `PATIENCE`; "nothing else arrived" is shown with a
//! sentinel edit that must be the very next event, never with a sleep.

use crate::support::crm_sim;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use plansync::crm::cdc::{
    Backoff, CdcConfig, CdcError, CdcEvent, CdcItem, CdcListener, Gap, Overflow, ReplayFrom,
    Transport,
};
use plansync::crm::{
    AuthConfig, CallKind, CrmClient, CrmConfig, CrmError, RecordUpdate, RetryPolicy, WriteOptions,
};
use plansync::model::ChangeKind;
use plansync::secret::Secret;
use plansync_sim::crm::{self, CrmSimConfig, CrmSimHandle, DEFAULT_CLIENT_ID, Seed};

const PRIVATE_KEY: &str = include_str!("data/keys/crm_jwt_rsa.pem");
const PUBLIC_KEY: &str = include_str!("data/keys/crm_jwt_rsa.pub.pem");
/// A key the simulator does not trust.
const OTHER_PRIVATE_KEY: &str = include_str!("data/keys/crm_client_rsa.pem");
const INTEGRATION_USER: &str = "integration@plansync.example";
const OUR_CLIENT: &str = "plansync-e2e";
const OPP_CHANNEL: &str = "/data/OpportunityChangeEvent";
const PATIENCE: Duration = Duration::from_secs(25);

fn sim_config() -> CrmSimConfig {
    CrmSimConfig {
        connect_timeout: Duration::from_secs(1),
        jwt_public_keys_pem: vec![PUBLIC_KEY.to_string()],
        ..CrmSimConfig::default()
    }
}

fn client_credentials() -> AuthConfig {
    AuthConfig::ClientCredentials {
        client_id: DEFAULT_CLIENT_ID.into(),
        client_secret: Secret::new(crm::DEFAULT_CLIENT_SECRET),
    }
}

fn jwt(private_key: &str) -> AuthConfig {
    AuthConfig::JwtBearer {
        client_id: DEFAULT_CLIENT_ID.into(),
        username: INTEGRATION_USER.into(),
        private_key_pem: Secret::new(private_key),
        audience: None,
    }
}

fn client_with(sim: &CrmSimHandle, auth: AuthConfig) -> CrmClient {
    let mut config = CrmConfig::new(sim.instance_url(), "59.0", auth);
    config.call_client_id = OUR_CLIENT.into();
    config.retry = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
    };
    config.request_timeout = Duration::from_secs(20);
    config.bulk_poll_interval = Duration::from_millis(20);
    config.bulk_timeout = Duration::from_secs(20);
    CrmClient::new(config).expect("client config")
}

fn client(sim: &CrmSimHandle) -> CrmClient {
    client_with(sim, client_credentials())
}

fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn update(object: &str, id: &str, v: Value) -> RecordUpdate {
    RecordUpdate {
        object: object.into(),
        id: id.into(),
        fields: fields(v),
    }
}

/// `Name` → `Id` of every live record of `object`, read through the client.
async fn ids_by_name(client: &CrmClient, object: &str) -> BTreeMap<String, String> {
    let result = client
        .query(&format!("SELECT Id, Name FROM {object}"))
        .await
        .expect("query");
    result
        .records
        .iter()
        .map(|r| {
            (
                r["Name"].as_str().expect("Name").to_string(),
                r["Id"].as_str().expect("Id").to_string(),
            )
        })
        .collect()
}

async fn opportunity_ids(client: &CrmClient) -> Vec<String> {
    let by_name = ids_by_name(client, "Opportunity").await;
    assert_eq!(by_name.len(), 4, "the default org has four opportunities");
    by_name.into_values().collect()
}

/// A field of a record as the simulator holds it.
fn sim_field(sim: &CrmSimHandle, id: &str, field: &str) -> Value {
    sim.record(id).expect("record exists")[field].clone()
}

// ---- the CDC listener under test ----

struct Listening {
    rx: mpsc::Receiver<CdcItem>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), CdcError>>,
    client: CrmClient,
}

fn listen(client: CrmClient, transport: Transport, from: ReplayFrom) -> Listening {
    listen_on(client, transport, OPP_CHANNEL, from)
}

fn listen_on(
    client: CrmClient,
    transport: Transport,
    channel: &str,
    from: ReplayFrom,
) -> Listening {
    let mut config = CdcConfig::new("59.0", vec![(channel.into(), from)], transport, OUR_CLIENT);
    config.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    config.timeout_margin = Duration::from_secs(5);
    let listener = CdcListener::new(client.clone(), config).expect("listener config");
    let (tx, rx) = mpsc::channel(64);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(listener.run(tx, async move {
        let _ = stopped.await;
    }));
    Listening {
        rx,
        stop: Some(stop),
        task,
        client,
    }
}

impl Listening {
    async fn item(&mut self) -> CdcItem {
        tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("a CDC item in time")
            .expect("the listener is still running")
    }

    /// Waits until the listener has subscribed (edits after this are seen).
    async fn connected(&mut self) {
        loop {
            match self.item().await {
                CdcItem::Connected { .. } => return,
                CdcItem::Disconnected { .. } => {}
                other => panic!("expected Connected, got {other:?}"),
            }
        }
    }

    /// The next item that is not a session notice (`Connected`/`Disconnected`).
    async fn next_data(&mut self) -> CdcItem {
        loop {
            match self.item().await {
                CdcItem::Connected { .. } | CdcItem::Disconnected { .. } => {}
                other => return other,
            }
        }
    }

    async fn event(&mut self) -> CdcEvent {
        match self.next_data().await {
            CdcItem::Event(e) => e,
            other => panic!("expected a change event, got {other:?}"),
        }
    }

    async fn events(&mut self, n: usize) -> Vec<CdcEvent> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.event().await);
        }
        out
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the listener stops in time")
            .expect("the listener task did not panic");
        assert!(result.is_ok(), "listener ended with {result:?}");
    }
}

fn field_value<'a>(event: &'a CdcEvent, field: &str) -> Option<&'a Value> {
    event
        .fields
        .iter()
        .find(|f| f.field == field)
        .map(|f| &f.value)
}

/// The event's field names other than the system fields an UPDATE always or sometimes carries
/// (`LastModifiedDate` always, `LastModifiedById` when the modifying user changed).
fn business_fields(event: &CdcEvent) -> BTreeSet<String> {
    assert!(
        field_value(event, "LastModifiedDate").is_some(),
        "an UPDATE always carries LastModifiedDate: {event:?}"
    );
    event
        .fields
        .iter()
        .map(|f| f.field.clone())
        .filter(|f| f != "LastModifiedDate" && f != "LastModifiedById")
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A user edit of `Amount` on `id`, and the event it must produce.
fn user_amount(sim: &CrmSimHandle, id: &str, amount: f64) {
    sim.user_edit("Opportunity", id, json!({"Amount": amount}), None)
        .expect("user edit");
}

fn assert_amount_event(event: &CdcEvent, id: &str, amount: f64) {
    assert_eq!(event.change_type, ChangeKind::Update, "{event:?}");
    assert_eq!(event.record_ids, vec![id.to_string()], "{event:?}");
    assert_eq!(
        field_value(event, "Amount").and_then(Value::as_f64),
        Some(amount),
        "{event:?}"
    );
}

// ---- 1. authentication ----

#[tokio::test]
async fn client_credentials_and_jwt_bearer_both_authenticate_and_query() {
    let sim = crm_sim(sim_config()).await;

    let cc = client(&sim);
    let rows = cc.query("SELECT Id, Name FROM Opportunity").await.unwrap();
    assert_eq!(rows.total_size, 4);
    assert_eq!(rows.records.len(), 4);
    assert_eq!(sim.request_counts().auth, 1);

    let jwt_client = client_with(&sim, jwt(PRIVATE_KEY));
    let rows = jwt_client
        .query("SELECT Id, Name FROM Account")
        .await
        .unwrap();
    assert_eq!(rows.records.len(), 2);
    assert_eq!(sim.request_counts().auth, 2);

    // A revoked token: the REST call re-authenticates once and goes through.
    sim.revoke_all_tokens();
    let rows = cc.query("SELECT Id FROM Account").await.unwrap();
    assert_eq!(rows.records.len(), 2);
    assert_eq!(cc.stats().reauths, 1);
    assert_eq!(sim.request_counts().auth, 3);

    // The same flows must be refusable: a wrong secret, a key the org does not trust.
    let wrong_secret = client_with(
        &sim,
        AuthConfig::ClientCredentials {
            client_id: DEFAULT_CLIENT_ID.into(),
            client_secret: Secret::new("not-the-secret"),
        },
    );
    let err = wrong_secret
        .query("SELECT Id FROM Account")
        .await
        .unwrap_err();
    assert!(matches!(err, CrmError::Auth { status: 400, .. }), "{err}");
    let untrusted = client_with(&sim, jwt(OTHER_PRIVATE_KEY));
    let err = untrusted.query("SELECT Id FROM Account").await.unwrap_err();
    assert!(
        matches!(&err, CrmError::Auth { error, .. } if error == "invalid_grant"),
        "{err}"
    );
    // Neither refusal reached the data API (the revoked call did, once, with a 401).
    assert_eq!(sim.request_counts().query, 4);
    sim.shutdown().await;
}

// ---- 2. paging ----

#[tokio::test]
async fn a_query_over_five_thousand_records_pages_through_every_row_once() {
    const GENERATED: usize = 5_123;
    let mut seed = Seed::default_org();
    seed.generate("Opportunity", GENERATED, |i| {
        vec![
            ("Name".into(), json!(format!("Generated {i:05}"))),
            ("StageName".into(), json!("Prospecting")),
            ("CloseDate".into(), json!("2027-06-30")),
            ("Amount".into(), json!(i as f64)),
        ]
    });
    let sim = crm_sim(CrmSimConfig {
        seed,
        ..sim_config()
    })
    .await;
    let client = client(&sim);
    let result = client
        .query("SELECT Id, Name, Amount FROM Opportunity")
        .await
        .unwrap();
    let expected = GENERATED + 4;
    assert_eq!(result.total_size, expected as u64);
    assert_eq!(result.records.len(), expected);
    let ids: HashSet<&str> = result
        .records
        .iter()
        .map(|r| r["Id"].as_str().expect("Id"))
        .collect();
    assert_eq!(ids.len(), expected, "every id once");
    let generated: HashSet<&str> = result
        .records
        .iter()
        .filter_map(|r| r["Name"].as_str())
        .filter(|n| n.starts_with("Generated "))
        .collect();
    assert_eq!(generated.len(), GENERATED);
    assert!(result.records.iter().all(|r| !r.contains_key("attributes")));

    // 2,000 a page: one query and two queryMore calls, as the simulator saw it too.
    let pages = expected.div_ceil(2_000) as u64;
    let stats = client.stats();
    assert_eq!(stats.calls_of(CallKind::Query), 1);
    assert_eq!(stats.calls_of(CallKind::QueryMore), pages - 1);
    assert_eq!(sim.request_counts().query, pages);
    sim.shutdown().await;
}

// ---- 3. collections writes come back on CDC, marked ours ----

#[tokio::test]
async fn a_collections_update_comes_back_as_ours_and_a_user_edit_does_not() {
    let sim = crm_sim(sim_config()).await;
    let client = client(&sim);
    let opps = opportunity_ids(&client).await;
    let accounts = ids_by_name(&client, "Account").await;
    let acme = accounts["Acme Corp"].clone();
    let mut cdc = listen(client.clone(), Transport::WebSocket, ReplayFrom::Tip);
    cdc.connected().await;

    let results = client
        .update_collections(
            &[update(
                "Opportunity",
                &opps[0],
                json!({"Amount": 98765.0, "StageName": "Closed Won"}),
            )],
            WriteOptions::default(),
        )
        .await;
    assert_eq!(results, vec![Ok(opps[0].clone())]);
    assert_eq!(sim_field(&sim, &opps[0], "Amount"), json!(98765.0));
    assert_eq!(sim_field(&sim, &opps[0], "StageName"), json!("Closed Won"));

    let ours = cdc.event().await;
    assert!(ours.ours, "our write must be marked ours: {ours:?}");
    assert!(
        ours.origin
            .as_deref()
            .is_some_and(|o| o.ends_with(&format!(";client={OUR_CLIENT}"))),
        "{ours:?}"
    );
    assert_eq!(ours.entity, "Opportunity");
    assert_eq!(ours.record_ids, vec![opps[0].clone()]);
    assert_eq!(business_fields(&ours), names(&["Amount", "StageName"]));
    assert_eq!(field_value(&ours, "Amount"), Some(&json!(98765.0)));
    assert_eq!(field_value(&ours, "StageName"), Some(&json!("Closed Won")));

    // A person edits the next record in the UI: not ours, only that field.
    sim.user_edit(
        "Opportunity",
        &opps[1],
        json!({"StageName": "Qualification"}),
        Some("ada.ng@plansync.example"),
    )
    .unwrap();
    let theirs = cdc.event().await;
    assert!(!theirs.ours, "{theirs:?}");
    assert_eq!(theirs.record_ids, vec![opps[1].clone()]);
    assert_eq!(business_fields(&theirs), names(&["StageName"]));
    assert_eq!(
        field_value(&theirs, "StageName"),
        Some(&json!("Qualification"))
    );
    assert!(theirs.replay_id > ours.replay_id);
    cdc.stop().await;

    // A compound address part, on the all-objects channel: flattened to `BillingCity`.
    let mut all = listen_on(
        client.clone(),
        Transport::LongPolling,
        "/data/ChangeEvents",
        ReplayFrom::Tip,
    );
    all.connected().await;
    let results = client
        .update_collections(
            &[update("Account", &acme, json!({"BillingCity": "Grenoble"}))],
            WriteOptions::default(),
        )
        .await;
    assert_eq!(results, vec![Ok(acme.clone())]);
    assert_eq!(sim_field(&sim, &acme, "BillingCity"), json!("Grenoble"));
    let event = all.event().await;
    assert!(event.ours);
    assert_eq!(event.entity, "Account");
    assert_eq!(business_fields(&event), names(&["BillingCity"]));
    assert_eq!(field_value(&event, "BillingCity"), Some(&json!("Grenoble")));
    all.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn create_delete_and_undelete_events_carry_what_the_reference_says() {
    let sim = crm_sim(sim_config()).await;
    let client = client(&sim);
    let mut cdc = listen_on(
        client.clone(),
        Transport::WebSocket,
        "/data/AccountChangeEvent",
        ReplayFrom::Tip,
    );
    cdc.connected().await;
    let id = sim
        .create(
            "Account",
            json!({"Name": "Initech", "BillingCity": "Austin", "BillingCountry": "US"}),
            None,
        )
        .unwrap();
    let created = cdc.event().await;
    assert_eq!(created.change_type, ChangeKind::Create);
    assert_eq!(created.record_ids, vec![id.clone()]);
    assert!(!created.ours);
    // All non-empty fields, compound parts flattened, plus system fields.
    assert_eq!(field_value(&created, "Name"), Some(&json!("Initech")));
    assert_eq!(field_value(&created, "BillingCity"), Some(&json!("Austin")));
    assert_eq!(field_value(&created, "BillingCountry"), Some(&json!("US")));
    assert!(
        field_value(&created, "CreatedDate").is_some(),
        "{created:?}"
    );
    assert!(field_value(&created, "OwnerId").is_some(), "{created:?}");
    assert!(field_value(&created, "Industry").is_none(), "{created:?}");

    sim.delete(&id, None).unwrap();
    let deleted = cdc.event().await;
    assert_eq!(deleted.change_type, ChangeKind::Delete);
    assert_eq!(deleted.record_ids, vec![id.clone()]);
    assert!(deleted.fields.is_empty(), "{deleted:?}");

    sim.undelete(&id, None).unwrap();
    let undeleted = cdc.event().await;
    assert_eq!(undeleted.change_type, ChangeKind::Undelete);
    assert_eq!(field_value(&undeleted, "Name"), Some(&json!("Initech")));
    assert_eq!(
        field_value(&undeleted, "BillingCity"),
        Some(&json!("Austin"))
    );
    assert!(created.replay_id < deleted.replay_id && deleted.replay_id < undeleted.replay_id);
    cdc.stop().await;
    sim.shutdown().await;
}

// ---- 4. allOrNone ----

#[tokio::test]
async fn all_or_none_rolls_back_everything_and_without_it_only_the_bad_record_fails() {
    let sim = crm_sim(sim_config()).await;
    let client = client(&sim);
    let opps = opportunity_ids(&client).await;
    let before: Vec<Value> = opps
        .iter()
        .map(|id| sim_field(&sim, id, "Amount"))
        .collect();
    let stage_before = sim_field(&sim, &opps[1], "StageName");
    let mut cdc = listen(client.clone(), Transport::LongPolling, ReplayFrom::Tip);
    cdc.connected().await;

    let batch = vec![
        update("Opportunity", &opps[0], json!({"Amount": 1.0})),
        // Not one of the picklist's values: refused.
        update("Opportunity", &opps[1], json!({"StageName": "Nonsense"})),
        update("Opportunity", &opps[2], json!({"Amount": 3.0})),
    ];
    let last_replay = sim.last_replay_id();
    let results = client
        .update_collections(&batch, WriteOptions { all_or_none: true })
        .await;
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(Result::is_err), "{results:?}");
    let bad = results[1].as_ref().unwrap_err();
    assert_eq!(
        bad.status_code, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "{bad:?}"
    );
    assert_eq!(bad.fields, vec!["StageName".to_string()]);
    assert!(!bad.retryable, "{bad:?}");
    for i in [0, 2] {
        let e = results[i].as_ref().unwrap_err();
        assert_eq!(e.status_code, "ALL_OR_NONE_OPERATION_ROLLED_BACK", "{e:?}");
    }
    let after: Vec<Value> = opps
        .iter()
        .map(|id| sim_field(&sim, id, "Amount"))
        .collect();
    assert_eq!(before, after, "nothing changed in the org");
    assert_eq!(sim_field(&sim, &opps[1], "StageName"), stage_before);
    assert_eq!(
        sim.last_replay_id(),
        last_replay,
        "no change event was committed"
    );

    // Without allOrNone only the bad record fails.
    let results = client
        .update_collections(&batch, WriteOptions::default())
        .await;
    assert_eq!(results[0], Ok(opps[0].clone()));
    assert_eq!(results[2], Ok(opps[2].clone()));
    assert_eq!(
        results[1].as_ref().unwrap_err().status_code,
        bad.status_code
    );
    assert_eq!(sim_field(&sim, &opps[0], "Amount"), json!(1.0));
    assert_eq!(sim_field(&sim, &opps[2], "Amount"), json!(3.0));

    // The stream: nothing for the rolled-back call; the two good records of the second call
    // (one transaction, so one event each), then the sentinel edit, with nothing in between.
    let events = cdc.events(2).await;
    let changed: BTreeSet<String> = events.iter().map(|e| e.record_ids[0].clone()).collect();
    assert_eq!(changed, [opps[0].clone(), opps[2].clone()].into());
    assert!(events.iter().all(|e| e.ours));
    user_amount(&sim, &opps[3], 4.0);
    assert_amount_event(&cdc.event().await, &opps[3], 4.0);
    cdc.stop().await;
    sim.shutdown().await;
}

// ---- 5. Bulk API 2.0 ----

#[tokio::test]
async fn a_bulk_update_maps_row_results_to_caller_indexes_and_lands_the_good_rows() {
    let sim = crm_sim(sim_config()).await;
    let client = client(&sim);
    let opps = opportunity_ids(&client).await;
    let stage_before = sim_field(&sim, &opps[2], "StageName");
    assert!(
        sim_field(&sim, &opps[1], "Forecast_Override__c").is_number(),
        "a deal with an override to clear"
    );
    let mut cdc = listen(client.clone(), Transport::WebSocket, ReplayFrom::Tip);
    cdc.connected().await;

    // The failing row sits in the middle, and the rows are not in the org's order.
    let batch = vec![
        update("Opportunity", &opps[3], json!({"Amount": 33.0})),
        update(
            "Opportunity",
            &opps[0],
            json!({"Amount": 11.5, "Probability": 55.0}),
        ),
        update("Opportunity", &opps[2], json!({"StageName": "Nonsense"})),
        update(
            "Opportunity",
            &opps[1],
            json!({"Forecast_Override__c": null}),
        ),
    ];
    let results = client.bulk_update(&batch).await;
    assert_eq!(results.len(), 4);
    assert_eq!(results[0], Ok(opps[3].clone()));
    assert_eq!(results[1], Ok(opps[0].clone()));
    assert_eq!(results[3], Ok(opps[1].clone()));
    let failed = results[2].as_ref().unwrap_err();
    assert_eq!(
        failed.status_code, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "{failed:?}"
    );
    assert!(failed.message.contains("Nonsense"), "{failed:?}");
    assert!(!failed.retryable);

    assert_eq!(sim_field(&sim, &opps[3], "Amount"), json!(33.0));
    assert_eq!(sim_field(&sim, &opps[0], "Amount"), json!(11.5));
    assert_eq!(sim_field(&sim, &opps[0], "Probability"), json!(55.0));
    assert_eq!(
        sim_field(&sim, &opps[1], "Forecast_Override__c"),
        Value::Null
    );
    assert_eq!(sim_field(&sim, &opps[2], "StageName"), stage_before);

    let stats = client.stats();
    assert_eq!(stats.calls_of(CallKind::BulkCreate), 1);
    assert_eq!(stats.calls_of(CallKind::BulkUpload), 1);
    assert_eq!(stats.calls_of(CallKind::BulkClose), 1);
    assert_eq!(stats.calls_of(CallKind::BulkResults), 2);
    assert!(sim.request_counts().bulk >= 6);

    // The bulk writes come back tagged with our client id, under the bulk API's origin.
    let events = cdc.events(3).await;
    let changed: BTreeSet<String> = events.iter().map(|e| e.record_ids[0].clone()).collect();
    assert_eq!(
        changed,
        [opps[0].clone(), opps[1].clone(), opps[3].clone()].into()
    );
    for e in &events {
        assert!(e.ours, "{e:?}");
        assert!(
            e.origin.as_deref().is_some_and(|o| o.contains("/bulkapi/")),
            "{e:?}"
        );
    }
    let nulled = events.iter().find(|e| e.record_ids[0] == opps[1]).unwrap();
    assert_eq!(business_fields(nulled), names(&["Forecast_Override__c"]));
    assert_eq!(
        field_value(nulled, "Forecast_Override__c"),
        Some(&Value::Null)
    );
    cdc.stop().await;
    sim.shutdown().await;
}

// ---- 6. replay after a disconnect ----
//
// The contract (`listener.rs`): each channel resumes after the replay id of the last event
// *handed to the consumer*, and the server sends events strictly after that id. So across a
// stop/restart from a stored id and across a session the server dropped, every event arrives
// exactly once. The only repeat the contract allows is an event the listener had read but not
// yet handed over when it was stopped (the consumer dedupes by replay id); these tests consume
// everything before stopping, so they allow no repeat at all.

async fn replay_delivers_exactly_the_missed_events(transport: Transport) {
    let sim = crm_sim(sim_config()).await;
    let client = client(&sim);
    let opps = opportunity_ids(&client).await;

    let mut first = listen(client.clone(), transport, ReplayFrom::Tip);
    first.connected().await;
    client
        .update_collections(
            &[update("Opportunity", &opps[0], json!({"Amount": 101.0}))],
            WriteOptions::default(),
        )
        .await[0]
        .as_ref()
        .unwrap();
    user_amount(&sim, &opps[1], 102.0);
    user_amount(&sim, &opps[2], 103.0);
    let seen = first.events(3).await;
    assert_amount_event(&seen[0], &opps[0], 101.0);
    assert!(seen[0].ours);
    assert_amount_event(&seen[1], &opps[1], 102.0);
    assert_amount_event(&seen[2], &opps[2], 103.0);
    let stored = seen[2].replay_id;
    first.stop().await;

    // While nobody listens.
    user_amount(&sim, &opps[0], 201.0);
    client
        .update_collections(
            &[update("Opportunity", &opps[1], json!({"Amount": 202.0}))],
            WriteOptions::default(),
        )
        .await[0]
        .as_ref()
        .unwrap();
    user_amount(&sim, &opps[2], 203.0);

    let mut second = listen(client.clone(), transport, ReplayFrom::After(stored));
    let resumed = second.events(3).await;
    assert_amount_event(&resumed[0], &opps[0], 201.0);
    assert_amount_event(&resumed[1], &opps[1], 202.0);
    assert!(resumed[1].ours && !resumed[0].ours);
    assert_amount_event(&resumed[2], &opps[2], 203.0);
    assert!(resumed[0].replay_id > stored);
    assert!(resumed.windows(2).all(|w| w[0].replay_id < w[1].replay_id));
    // The next event is a fresh edit: nothing else (no repeat of the first three) came first.
    user_amount(&sim, &opps[3], 301.0);
    assert_amount_event(&second.event().await, &opps[3], 301.0);

    // The server forgets the session while the listener runs; edits made meanwhile arrive once.
    sim.drop_sessions();
    user_amount(&sim, &opps[0], 401.0);
    user_amount(&sim, &opps[1], 402.0);
    let mut saw_disconnect = false;
    let mut during = Vec::new();
    while during.len() < 2 {
        match second.item().await {
            CdcItem::Disconnected { .. } => saw_disconnect = true,
            CdcItem::Connected { .. } => {}
            CdcItem::Event(e) => during.push(e),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_disconnect, "the dropped session was noticed");
    assert_amount_event(&during[0], &opps[0], 401.0);
    assert_amount_event(&during[1], &opps[1], 402.0);
    user_amount(&sim, &opps[2], 403.0);
    assert_amount_event(&second.event().await, &opps[2], 403.0);
    second.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn websocket_replay_after_a_disconnect_delivers_exactly_the_missed_events() {
    replay_delivers_exactly_the_missed_events(Transport::WebSocket).await;
}

#[tokio::test]
async fn long_polling_replay_after_a_disconnect_delivers_exactly_the_missed_events() {
    replay_delivers_exactly_the_missed_events(Transport::LongPolling).await;
}

// ---- 7. expired replay ids ----

async fn an_expired_replay_id_is_reported(transport: Transport, expire: impl Fn(&CrmSimHandle)) {
    let sim = crm_sim(sim_config()).await;
    let client = client(&sim);
    let opps = opportunity_ids(&client).await;
    let mut first = listen(client.clone(), transport, ReplayFrom::Tip);
    first.connected().await;
    user_amount(&sim, &opps[0], 1.0);
    let stored = first.event().await.replay_id;
    first.stop().await;
    // Missed while away, then gone from the org's retention.
    user_amount(&sim, &opps[1], 2.0);
    expire(&sim);
    assert_eq!(sim.retained_events(), 0);

    let mut second = listen(client.clone(), transport, ReplayFrom::After(stored));
    match second.next_data().await {
        CdcItem::ReplayInvalid {
            channel,
            replay_id,
            message,
        } => {
            assert_eq!(channel, OPP_CHANNEL);
            assert_eq!(replay_id, stored);
            assert!(message.contains("400::The replayId"), "{message}");
        }
        other => panic!("expected ReplayInvalid, got {other:?}"),
    }
    // The listener went on from the tip: new events arrive.
    second.connected().await;
    user_amount(&sim, &opps[2], 3.0);
    assert_amount_event(&second.event().await, &opps[2], 3.0);
    second.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn websocket_an_aged_out_replay_id_is_reported_as_invalid() {
    an_expired_replay_id_is_reported(Transport::WebSocket, |sim| {
        sim.age_events(Duration::from_secs(73 * 3600));
    })
    .await;
}

#[tokio::test]
async fn long_polling_a_purged_replay_id_is_reported_as_invalid() {
    an_expired_replay_id_is_reported(Transport::LongPolling, |sim| sim.purge_events(None)).await;
}

// ---- 8. gap, overflow and merged events ----

#[tokio::test]
async fn gap_overflow_and_merged_events_are_surfaced() {
    let sim = crm_sim(sim_config()).await;
    let client = client(&sim);
    let opps = opportunity_ids(&client).await;
    let mut cdc = listen(client.clone(), Transport::LongPolling, ReplayFrom::Tip);
    cdc.connected().await;

    // A database-level change: the value moves, the event says only "re-read this record".
    sim.inject_gap(
        "Opportunity",
        &[opps[0].clone()],
        "GAP_UPDATE",
        json!({"Amount": 7.0}),
    )
    .unwrap();
    match cdc.next_data().await {
        CdcItem::Gap(Gap {
            entity,
            record_ids,
            change_type,
            replay,
        }) => {
            assert_eq!(entity, "Opportunity");
            assert_eq!(record_ids, vec![opps[0].clone()]);
            assert_eq!(change_type, "GAP_UPDATE");
            assert_eq!(replay.channel, OPP_CHANNEL);
        }
        other => panic!("expected Gap, got {other:?}"),
    }
    assert_eq!(sim_field(&sim, &opps[0], "Amount"), json!(7.0));

    sim.inject_overflow("Opportunity").unwrap();
    match cdc.next_data().await {
        CdcItem::Overflow(Overflow { entity, .. }) => assert_eq!(entity, "Opportunity"),
        other => panic!("expected Overflow, got {other:?}"),
    }

    let merged_ids = vec![opps[1].clone(), opps[2].clone()];
    sim.inject_merged(
        "Opportunity",
        &merged_ids,
        json!({"Probability": 42.0}),
        None,
    )
    .unwrap();
    let merged = cdc.event().await;
    assert_eq!(merged.record_ids, merged_ids);
    assert!(!merged.ours);
    let changes = merged.to_changes("opportunity");
    assert_eq!(changes.len(), 2, "one change per record id");
    for (change, id) in changes.iter().zip(&merged_ids) {
        assert_eq!(&change.record.crm_id, id);
        assert_eq!(change.kind, ChangeKind::Update);
        let probability = change.fields.iter().find(|f| f.field == "Probability");
        assert_eq!(probability.map(|f| &f.value), Some(&json!(42.0)));
        assert_eq!(sim_field(&sim, id, "Probability"), json!(42.0));
    }
    cdc.stop().await;
    sim.shutdown().await;
}

// ---- 9. token revoked mid-stream ----

async fn the_listener_reauthenticates_after_revocation(transport: Transport) {
    let sim = crm_sim(sim_config()).await;
    let client = client(&sim);
    let opps = opportunity_ids(&client).await;
    let mut cdc = listen(client.clone(), transport, ReplayFrom::Tip);
    cdc.connected().await;
    user_amount(&sim, &opps[0], 1.0);
    assert_amount_event(&cdc.event().await, &opps[0], 1.0);
    assert_eq!(sim.request_counts().auth, 1);

    sim.revoke_all_tokens();
    user_amount(&sim, &opps[1], 2.0);
    user_amount(&sim, &opps[2], 3.0);
    // Both events arrive (before or after the re-authentication), and the listener comes
    // back with a new session.
    let mut events = Vec::new();
    let mut reconnected = false;
    while events.len() < 2 || !reconnected {
        match cdc.item().await {
            CdcItem::Event(e) => events.push(e),
            CdcItem::Disconnected { .. } => {}
            CdcItem::Connected { .. } => reconnected = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(events.len(), 2, "{events:?}");
    assert_amount_event(&events[0], &opps[1], 2.0);
    assert_amount_event(&events[1], &opps[2], 3.0);
    assert_eq!(sim.request_counts().auth, 2, "exactly one new token");
    assert_eq!(cdc.client.stats().reauths, 1);

    // The resumed session delivers new events, and nothing was repeated before them.
    user_amount(&sim, &opps[3], 4.0);
    assert_amount_event(&cdc.event().await, &opps[3], 4.0);
    // REST calls use the new token without another refresh.
    assert_eq!(
        client
            .query("SELECT Id FROM Account")
            .await
            .unwrap()
            .records
            .len(),
        2
    );
    assert_eq!(sim.request_counts().auth, 2);
    cdc.stop().await;

    // A listener that starts with a token revoked in the meantime is refused at the handshake
    // (`403::Handshake denied`, failure reason `401::Authentication invalid`), gets a new
    // token and subscribes.
    sim.revoke_all_tokens();
    let mut late = listen(client.clone(), transport, ReplayFrom::Tip);
    late.connected().await;
    assert_eq!(sim.request_counts().auth, 3);
    user_amount(&sim, &opps[0], 5.0);
    assert_amount_event(&late.event().await, &opps[0], 5.0);
    late.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn websocket_listener_reauthenticates_after_revocation_and_loses_nothing() {
    the_listener_reauthenticates_after_revocation(Transport::WebSocket).await;
}

#[tokio::test]
async fn long_polling_listener_reauthenticates_after_revocation_and_loses_nothing() {
    the_listener_reauthenticates_after_revocation(Transport::LongPolling).await;
}

// ---- 10. row locks ----

#[tokio::test]
async fn a_locked_row_is_retried_until_the_write_lands() {
    let sim = crm_sim(sim_config()).await;
    let client = client(&sim);
    let opps = opportunity_ids(&client).await;
    let writes_before = sim.request_counts().write;
    sim.inject_lock_errors(2);
    let results = client
        .update_collections(
            &[
                update("Opportunity", &opps[0], json!({"Amount": 555.0})),
                update("Opportunity", &opps[1], json!({"Amount": 666.0})),
            ],
            WriteOptions::default(),
        )
        .await;
    assert_eq!(results, vec![Ok(opps[0].clone()), Ok(opps[1].clone())]);
    assert_eq!(sim_field(&sim, &opps[0], "Amount"), json!(555.0));
    assert_eq!(sim_field(&sim, &opps[1], "Amount"), json!(666.0));
    let writes = sim.request_counts().write - writes_before;
    assert!((2..=3).contains(&writes), "{writes} write calls");
    assert!(client.stats().retries >= 1);

    // Under allOrNone a locked row rolls the others back; all of them go again and land.
    sim.inject_lock_errors(1);
    let results = client
        .update_collections(
            &[
                update("Opportunity", &opps[2], json!({"Amount": 777.0})),
                update("Opportunity", &opps[3], json!({"Amount": 888.0})),
            ],
            WriteOptions { all_or_none: true },
        )
        .await;
    assert_eq!(results, vec![Ok(opps[2].clone()), Ok(opps[3].clone())]);
    assert_eq!(sim_field(&sim, &opps[2], "Amount"), json!(777.0));
    assert_eq!(sim_field(&sim, &opps[3], "Amount"), json!(888.0));

    // A lock that never clears ends as a retryable per-record error after the attempts.
    sim.inject_lock_errors(100);
    let results = client
        .update_collections(
            &[update("Opportunity", &opps[0], json!({"Amount": 999.0}))],
            WriteOptions::default(),
        )
        .await;
    let e = results[0].as_ref().unwrap_err();
    assert_eq!(e.status_code, "UNABLE_TO_LOCK_ROW");
    assert!(e.retryable);
    assert_eq!(sim_field(&sim, &opps[0], "Amount"), json!(555.0));
    sim.shutdown().await;
}

// ---- 11. the daily request limit ----

#[tokio::test]
async fn the_request_limit_is_a_clear_error_and_not_retried() {
    let sim = crm_sim(sim_config()).await;
    let client = client(&sim);
    let opps = opportunity_ids(&client).await;
    let amount_before = sim_field(&sim, &opps[0], "Amount");
    sim.set_daily_limit(Some(100), Some(100));
    sim.reset_request_log();

    let err = client.query("SELECT Id FROM Account").await.unwrap_err();
    assert!(matches!(err, CrmError::RequestLimit { .. }), "{err}");
    assert_eq!(err.code(), Some("REQUEST_LIMIT_EXCEEDED"));
    assert!(
        err.to_string().contains("TotalRequests Limit exceeded."),
        "{err}"
    );

    let results = client
        .update_collections(
            &[
                update("Opportunity", &opps[0], json!({"Amount": 1.0})),
                update("Opportunity", &opps[1], json!({"Amount": 2.0})),
            ],
            WriteOptions::default(),
        )
        .await;
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.status_code, "REQUEST_LIMIT_EXCEEDED", "{e:?}");
        assert!(!e.retryable);
    }
    assert_eq!(sim_field(&sim, &opps[0], "Amount"), amount_before);

    // One attempt each, both refused with 403; no retry, no new token.
    let log: Vec<_> = sim
        .request_log()
        .into_iter()
        .filter(|r| r.path.starts_with("/services/"))
        .collect();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log.iter().all(|r| r.status == 403), "{log:?}");
    let stats = client.stats();
    assert_eq!(stats.retries, 0);
    assert_eq!(stats.reauths, 0);
    assert_eq!(stats.api_usage, Some((100, 100)));
    sim.shutdown().await;
}
