//! Bulk API 2.0 ingest on the CRM simulator driven by simple-salesforce's `bulk2`, unchanged:
//! insert, upsert by `External_Id__c` (an existing key updates, a new one creates, a key two
//! rows of a chunk share fails both), update, delete (to the recycle bin: `queryAll` still
//! finds it) and hard_delete (gone, even from `queryAll`), each job's result files read back;
//! then the simulator's own records are checked. Also `POST sobjects/{object}/Id`, and a
//! key repeated within one collection upsert.

use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

use crate::sim_crm_routes::start;
use crate::support::*;
use plansync_sim::crm::CrmSimConfig;

const V: &str = "/services/data/v59.0";

fn rows(seen: &Json, job: &str, which: &str) -> Vec<Json> {
    seen[job][which].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_salesforce_loads_through_bulk_ingest_jobs() {
    let crm = crm_sim(CrmSimConfig::default()).await;
    let seen = crm_script(&crm, "third_party_bulk_ingest.py").await;

    assert_eq!(seen["insert"]["processed"], 3, "{seen}");
    assert_eq!(seen["insert"]["failed"], 0, "{seen}");
    assert!(
        rows(&seen, "insert", "ok")
            .iter()
            .all(|r| r["sf__Created"] == "true")
    );

    // Upsert: BULK-1 updated, BULK-4 created, both BULK-5 rows refused.
    assert_eq!(seen["upsert"]["processed"], 4, "{seen}");
    assert_eq!(seen["upsert"]["failed"], 2, "{seen}");
    let ok = rows(&seen, "upsert", "ok");
    let created = |key: &str| {
        ok.iter()
            .find(|r| r["External_Id__c"] == key)
            .map(|r| r["sf__Created"].clone())
    };
    assert_eq!(created("BULK-1"), Some(json!("false")), "{seen}");
    assert_eq!(created("BULK-4"), Some(json!("true")), "{seen}");
    let bad = rows(&seen, "upsert", "bad");
    assert_eq!(bad.len(), 2);
    for row in &bad {
        assert_eq!(row["External_Id__c"], "BULK-5");
        assert!(
            row["sf__Error"]
                .as_str()
                .unwrap()
                .starts_with("DUPLICATE_VALUE:Duplicate external id specified: BULK-5"),
            "{row}"
        );
    }
    assert_eq!(seen["update"]["failed"], 0, "{seen}");
    assert_eq!(seen["delete"]["processed"], 1, "{seen}");
    assert_eq!(seen["hard_delete"]["processed"], 1, "{seen}");
    assert_eq!(seen["hard_delete"]["failed"], 0, "{seen}");

    // The simulator's records.
    let ids = &seen["ids"];
    let one = crm.record(ids["BULK-1"].as_str().unwrap()).expect("BULK-1");
    assert_eq!(one["Name"], "Bulk one, upserted");
    assert_eq!(one["Amount"].as_f64(), Some(110.0));
    let client = crm_client(&crm);
    let keyed = |key: &'static str| {
        let client = client.clone();
        async move {
            client
                .query_all(&format!(
                    "SELECT Id, IsDeleted, Amount FROM Opportunity WHERE External_Id__c = '{key}'"
                ))
                .await
                .expect("queryAll")
                .records
        }
    };
    assert_eq!(keyed("BULK-4").await.len(), 1, "created by the upsert");
    assert!(
        keyed("BULK-5").await.is_empty(),
        "neither BULK-5 row was written"
    );
    let two = keyed("BULK-2").await;
    assert_eq!(two.len(), 1);
    assert_eq!(
        two[0]["IsDeleted"], true,
        "a delete goes to the recycle bin"
    );
    assert_eq!(two[0]["Amount"].as_f64(), Some(220.0), "after its update");
    assert!(
        keyed("BULK-3").await.is_empty(),
        "a hard delete is gone even from queryAll"
    );
    assert!(crm.record(ids["BULK-3"].as_str().unwrap()).is_none());
}

#[tokio::test]
async fn post_to_sobjects_id_creates_and_a_collection_refuses_a_repeated_key() {
    let env = start(CrmSimConfig::default()).await;
    let body = json!({"Name": "Posted", "StageName": "Prospecting", "CloseDate": "2027-02-01"});
    let (status, created, _) = env
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity/Id"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["success"], true);
    let id = created["id"].as_str().unwrap();
    let (status, read) = env.get(&format!("{V}/sobjects/Opportunity/{id}")).await;
    assert_eq!(
        (status, read["Name"].as_str()),
        (StatusCode::OK, Some("Posted"))
    );
    // Before API 37.0, or to a record id, a POST is not allowed.
    let (status, _, _) = env
        .call(
            Method::POST,
            "/services/data/v36.0/sobjects/Opportunity/Id",
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = env
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity/{id}"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, refused, _) = env
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity/Id"),
            Some(json!({"Id": id, "Name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    let record = |key: &str, name: &str| {
        json!({"attributes": {"type": "Opportunity"}, "External_Id__c": key, "Name": name,
               "StageName": "Prospecting", "CloseDate": "2027-02-01"})
    };
    let (status, results, _) = env
        .call(
            Method::PATCH,
            &format!("{V}/composite/sobjects/Opportunity/External_Id__c"),
            Some(json!({"allOrNone": false, "records": [
                record("TWICE", "a"), record("ONCE", "b"), record("twice", "c")
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{results}");
    assert_eq!(results[0]["success"], false, "{results}");
    assert_eq!(results[0]["errors"][0]["statusCode"], "DUPLICATE_VALUE");
    assert_eq!(
        results[2]["success"], false,
        "keys match case-insensitively: {results}"
    );
    assert_eq!(results[1]["success"], true, "{results}");
    assert_eq!(results[1]["created"], true, "{results}");
}

/// A text longer than describe's `length` is refused, as Salesforce refuses it.
#[tokio::test]
async fn a_text_longer_than_the_field_holds_is_refused() {
    let env = start(CrmSimConfig::default()).await;
    let (_, describe) = env
        .get(&format!("{V}/sobjects/Territory__c/describe"))
        .await;
    let length = describe["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Name")
        .and_then(|f| f["length"].as_u64())
        .expect("Name's length") as usize;
    for (chars, status) in [
        (length, StatusCode::CREATED),
        (length + 1, StatusCode::BAD_REQUEST),
    ] {
        let (got, answer, _) = env
            .call(
                Method::POST,
                &format!("{V}/sobjects/Territory__c"),
                Some(json!({"Name": "é".repeat(chars)})),
            )
            .await;
        assert_eq!(got, status, "{chars} characters: {answer}");
        if status == StatusCode::BAD_REQUEST {
            assert_eq!(answer[0]["errorCode"], "STRING_TOO_LONG", "{answer}");
        }
    }
}
