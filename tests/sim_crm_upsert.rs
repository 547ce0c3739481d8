//! Upsert by external id on the CRM simulator, over raw HTTP: `PATCH
//! sobjects/{object}/{field}/{value}` creating (201, `created: true`) then updating (200,
//! `created: false`), `Id` as the field, the 300 of a value several records hold, the
//! collection form `composite/sobjects/{object}/{field}`, `externalId` in describe, a unique
//! external id refusing a duplicate, and the change events the upserts emit.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use plansync_sim::crm::{CrmSimConfig, Seed, seed::DEFAULT_SEED};

use crate::sim_crm_routes::{encode, start};

const V: &str = "/services/data/v59.0";

#[tokio::test]
async fn upsert_creates_then_updates_and_emits_events() {
    let env = start(CrmSimConfig::default()).await;
    let path = format!("{V}/sobjects/Opportunity/External_Id__c/EXT-1");
    let body = json!({"Name": "Upserted", "StageName": "Prospecting", "CloseDate": "2027-02-01"});
    let (status, created, _) = env.call(Method::PATCH, &path, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["success"], true);
    assert_eq!(created["created"], true);
    assert_eq!(created["errors"], json!([]));
    let id = created["id"].as_str().expect("id").to_string();

    let (status, updated, _) = env
        .call(Method::PATCH, &path, Some(json!({"Amount": 99.0})))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["created"], false);

    let (status, record) = env.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["Id"], id.as_str());
    assert_eq!(record["External_Id__c"], "EXT-1");
    assert_eq!(record["Amount"], 99.0);

    // `Id` as the external id field.
    let (status, by_id, _) = env
        .call(
            Method::PATCH,
            &format!("{V}/sobjects/Opportunity/Id/{id}"),
            Some(json!({"Amount": 100.0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{by_id}");
    assert_eq!(by_id["created"], false);

    // A field that is not an external id, and an unknown one.
    for field in ["Name", "Nope__c"] {
        let (status, err, _) = env
            .call(
                Method::PATCH,
                &format!("{V}/sobjects/Opportunity/{field}/x"),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{field}: {err}");
        assert_eq!(err[0]["errorCode"], "NOT_FOUND");
    }

    let changes = replay_all(&env, "/data/OpportunityChangeEvent").await;
    let mine: Vec<&Value> = changes
        .iter()
        .map(|m| &m["data"])
        .filter(|e| e["payload"]["ChangeEventHeader"]["recordIds"][0] == id.as_str())
        .collect();
    let types: Vec<&str> = mine
        .iter()
        .filter_map(|e| e["payload"]["ChangeEventHeader"]["changeType"].as_str())
        .collect();
    assert_eq!(types, ["CREATE", "UPDATE", "UPDATE"], "{mine:?}");
    assert_eq!(mine[0]["payload"]["External_Id__c"], "EXT-1");
}

/// Every retained event of `channel`, read as a CometD client would (replay from -2).
async fn replay_all(env: &crate::sim_crm_routes::Env, channel: &str) -> Vec<Value> {
    let hs = env
        .bayeux(json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"], "id": "1"}]))
        .await;
    let cid = hs[0]["clientId"].as_str().expect("clientId").to_string();
    env.bayeux(json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling", "id": "2"}]))
        .await;
    env.bayeux(json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": channel, "ext": {"replay": {channel: -2}}, "id": "3"}]))
        .await;
    let mut msgs = env
        .bayeux(json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling", "id": "4"}]))
        .await;
    msgs.retain(|m| m["channel"] == channel);
    msgs
}

#[tokio::test]
async fn describe_reports_the_external_id_and_unique_values_are_enforced() {
    let env = start(CrmSimConfig::default()).await;
    let (_, describe) = env.get(&format!("{V}/sobjects/Opportunity/describe")).await;
    let field = describe["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "External_Id__c"))
        .cloned()
        .expect("External_Id__c");
    assert_eq!(field["externalId"], true);
    assert_eq!(field["unique"], true);
    assert_eq!(field["idLookup"], true);
    let new = json!({"Name": "A", "StageName": "Prospecting", "CloseDate": "2027-02-01", "External_Id__c": "dup"});
    let (status, _, _) = env
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity"),
            Some(new.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, err, _) = env
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity"),
            Some(new),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err[0]["errorCode"], "DUPLICATE_VALUE");
}

/// The default seed with `External_Id__c` not unique, and two opportunities sharing a value.
fn seed_with_shared_external_id() -> Seed {
    let text = DEFAULT_SEED.replace("external_id = true, unique = true", "external_id = true");
    let extra = r#"
[[record]]
object = "Opportunity"
fields = { Name = "Twin A", StageName = "Prospecting", CloseDate = 2027-01-01, External_Id__c = "TWIN" }

[[record]]
object = "Opportunity"
fields = { Name = "Twin B", StageName = "Prospecting", CloseDate = 2027-01-01, External_Id__c = "twin" }
"#;
    Seed::from_toml(&format!("{text}{extra}")).expect("seed")
}

#[tokio::test]
async fn a_value_several_records_hold_is_ambiguous() {
    let env = start(CrmSimConfig {
        seed: seed_with_shared_external_id(),
        ..CrmSimConfig::default()
    })
    .await;
    let (status, urls, _) = env
        .call(
            Method::PATCH,
            &format!("{V}/sobjects/Opportunity/External_Id__c/TWIN"),
            Some(json!({"Amount": 1.0})),
        )
        .await;
    assert_eq!(status, StatusCode::MULTIPLE_CHOICES, "{urls}");
    let urls = urls.as_array().expect("a list of URLs");
    assert_eq!(urls.len(), 2);
    assert!(
        urls.iter().all(|u| u
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("{V}/sobjects/Opportunity/006")))),
        "{urls:?}"
    );
    let (status, body, _) = env
        .call(
            Method::PATCH,
            &format!("{V}/composite/sobjects/Opportunity/External_Id__c"),
            Some(json!({"allOrNone": false, "records": [
                {"attributes": {"type": "Opportunity"}, "External_Id__c": "TWIN", "Amount": 2.0}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["success"], false);
    assert_eq!(
        body[0]["errors"][0]["statusCode"], "DUPLICATE_EXTERNAL_ID",
        "{body}"
    );
}

#[tokio::test]
async fn collection_upsert_reports_created_per_record() {
    let env = start(CrmSimConfig::default()).await;
    let path = format!("{V}/composite/sobjects/Opportunity/External_Id__c/");
    let (status, first, _) = env
        .call(
            Method::PATCH,
            &path,
            Some(json!({"allOrNone": false, "records": [
                {"attributes": {"type": "Opportunity"}, "External_Id__c": "C-1", "Name": "One", "StageName": "Prospecting", "CloseDate": "2027-02-01"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first[0]["success"], true, "{first}");
    assert_eq!(first[0]["created"], true);
    let (status, body, _) = env
        .call(
            Method::PATCH,
            &path,
            Some(json!({"allOrNone": false, "records": [
                {"attributes": {"type": "Opportunity"}, "External_Id__c": "C-1", "Amount": 5.0},
                {"attributes": {"type": "Opportunity"}, "External_Id__c": "C-2", "Name": "Two", "StageName": "Prospecting", "CloseDate": "2027-02-01"},
                {"attributes": {"type": "Opportunity"}, "External_Id__c": "C-3", "Name": "Three"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["id"], first[0]["id"]);
    assert_eq!(body[0]["created"], false);
    assert_eq!(body[1]["created"], true);
    assert_eq!(
        body[2]["success"], false,
        "a required field is missing: {body}"
    );
    // allOrNone: one failure rolls the others back.
    let (_, body, _) = env
        .call(
            Method::PATCH,
            &path,
            Some(json!({"allOrNone": true, "records": [
                {"attributes": {"type": "Opportunity"}, "External_Id__c": "C-1", "Amount": 6.0},
                {"attributes": {"type": "Opportunity"}, "External_Id__c": "C-4", "Name": "Four"}]})),
        )
        .await;
    assert_eq!(
        body[0]["errors"][0]["statusCode"], "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "{body}"
    );
    let (_, rows) = env
        .get(&format!(
            "{V}/query?q={}",
            encode("SELECT External_Id__c, Amount FROM Opportunity WHERE External_Id__c = 'C-1'")
        ))
        .await;
    assert_eq!(rows["records"][0]["Amount"], 5.0, "{rows}");
}
