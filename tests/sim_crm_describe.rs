//! `GET …/sobjects/{object}/describe` on the CRM simulator, read as a third-party client would
//! (raw HTTP, `serde_json::Value`): the `DescribeSObjectResult` keys and field types
//! Salesforce documents, a field the seed makes read-only, and the 404 of an unknown object.

use reqwest::StatusCode;
use serde_json::Value;

use plansync_sim::crm::{self, CrmSimConfig, CrmSimHandle, Seed, seed::DEFAULT_SEED};

const V: &str = "/services/data/v59.0";

async fn start(seed: Seed) -> (CrmSimHandle, reqwest::Client, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = CrmSimConfig {
        seed,
        ..CrmSimConfig::default()
    };
    let sim = crm::start(config, listener).await.expect("start");
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/services/oauth2/token", sim.instance_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", crm::DEFAULT_CLIENT_ID),
            ("client_secret", crm::DEFAULT_CLIENT_SECRET),
        ])
        .send()
        .await
        .expect("token");
    let body: Value = resp.json().await.expect("json");
    let token = body["access_token"].as_str().expect("token").to_string();
    (sim, http, token)
}

async fn get(
    sim: &CrmSimHandle,
    http: &reqwest::Client,
    token: &str,
    path: &str,
) -> (StatusCode, Value) {
    let resp = http
        .get(format!("{}{path}", sim.instance_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    let status = resp.status();
    (status, resp.json().await.expect("json body"))
}

fn field<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no field {name} in {body}"))
}

#[tokio::test]
async fn describe_answers_in_the_salesforce_shape() {
    let (sim, http, token) = start(Seed::default_org()).await;
    let (status, body) = get(
        &sim,
        &http,
        &token,
        &format!("{V}/sobjects/Opportunity/describe"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Opportunity");
    assert_eq!(body["label"], "Opportunity");
    assert_eq!(body["keyPrefix"], "006");
    assert_eq!(body["updateable"], true);
    assert_eq!(body["createable"], true);
    assert_eq!(body["custom"], false);
    assert_eq!(
        body["urls"]["describe"],
        "/services/data/v59.0/sobjects/Opportunity/describe"
    );
    // Every field carries the documented keys, with JSON types a typed client expects.
    for f in body["fields"].as_array().expect("fields") {
        for key in ["name", "label", "type", "soapType"] {
            assert!(f[key].is_string(), "{key} of {f}");
        }
        for key in ["length", "precision", "scale", "byteLength", "digits"] {
            assert!(f[key].is_u64(), "{key} of {f}");
        }
        for key in [
            "nillable",
            "createable",
            "updateable",
            "calculated",
            "custom",
        ] {
            assert!(f[key].is_boolean(), "{key} of {f}");
        }
        assert!(f["picklistValues"].is_array(), "{f}");
        assert!(f["referenceTo"].is_array(), "{f}");
    }

    let id = field(&body, "Id");
    assert_eq!(id["type"], "id");
    assert_eq!(id["updateable"], false);
    assert_eq!(id["nillable"], false);
    let amount = field(&body, "Amount");
    assert_eq!(amount["type"], "currency");
    assert_eq!(amount["precision"], 18);
    assert_eq!(amount["scale"], 2);
    assert_eq!(amount["nillable"], true);
    assert_eq!(amount["updateable"], true);
    let stage = field(&body, "StageName");
    assert_eq!(stage["type"], "picklist");
    assert_eq!(stage["nillable"], false, "StageName is required");
    assert_eq!(stage["restrictedPicklist"], true);
    let values: Vec<&str> = stage["picklistValues"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| {
            assert_eq!(v["active"], true);
            assert_eq!(v["label"], v["value"]);
            assert!(v["defaultValue"].is_boolean());
            v["value"].as_str().expect("value")
        })
        .collect();
    assert!(values.contains(&"Closed Won"), "{values:?}");
    let account = field(&body, "AccountId");
    assert_eq!(account["type"], "reference");
    assert_eq!(account["referenceTo"], serde_json::json!(["Account"]));
    assert_eq!(account["relationshipName"], "Account");
    assert_eq!(field(&body, "CloseDate")["type"], "date");
    assert_eq!(field(&body, "Probability")["type"], "percent");
    assert_eq!(field(&body, "Forecast_Override__c")["custom"], true);
    assert_eq!(field(&body, "SystemModstamp")["type"], "datetime");
    assert_eq!(field(&body, "SystemModstamp")["updateable"], false);

    // A trailing slash is the same resource; a custom object reads the same way.
    let (status, slash) = get(
        &sim,
        &http,
        &token,
        &format!("{V}/sobjects/Opportunity/describe/"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(slash, body);
    let (status, territory) = get(
        &sim,
        &http,
        &token,
        &format!("{V}/sobjects/Territory__c/describe"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(territory["custom"], true);
    assert_eq!(field(&territory, "Active__c")["type"], "boolean");
    assert_eq!(field(&territory, "Active__c")["nillable"], false);

    // Account's compound address: the compound is read-only, its parts name it.
    let (_, acct) = get(
        &sim,
        &http,
        &token,
        &format!("{V}/sobjects/Account/describe"),
    )
    .await;
    assert_eq!(field(&acct, "BillingAddress")["type"], "address");
    assert_eq!(field(&acct, "BillingAddress")["updateable"], false);
    assert_eq!(
        field(&acct, "BillingCity")["compoundFieldName"],
        "BillingAddress"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_objects_and_missing_tokens_get_salesforce_errors() {
    let (sim, http, token) = start(Seed::default_org()).await;
    let (status, body) = get(
        &sim,
        &http,
        &token,
        &format!("{V}/sobjects/Nope__c/describe"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        serde_json::json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])
    );
    let (status, body) = get(
        &sim,
        &http,
        "not-a-token",
        &format!("{V}/sobjects/Opportunity/describe"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body[0]["errorCode"], "INVALID_SESSION_ID");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_field_the_seed_makes_read_only_is_described_so_and_refuses_writes() {
    let text = DEFAULT_SEED.replace(
        r#"{ name = "Forecast_Override__c", type = "currency" }"#,
        r#"{ name = "Forecast_Override__c", type = "currency", updateable = false }"#,
    );
    assert_ne!(text, DEFAULT_SEED, "the default seed declares the field");
    // The seed still gives the field its values.
    let (sim, http, token) = start(Seed::from_toml(&text).expect("seed")).await;
    let (_, body) = get(
        &sim,
        &http,
        &token,
        &format!("{V}/sobjects/Opportunity/describe"),
    )
    .await;
    let f = field(&body, "Forecast_Override__c");
    assert_eq!(f["updateable"], false);
    assert_eq!(f["createable"], false);
    assert_eq!(f["calculated"], true);
    assert_eq!(field(&body, "Amount")["updateable"], true);

    let page: Value = http
        .get(format!("{}{V}/query", sim.instance_url()))
        .bearer_auth(&token)
        .query(&[(
            "q",
            "SELECT Id, Forecast_Override__c FROM Opportunity WHERE Name = 'Globex expansion'",
        )])
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    let id = page["records"][0]["Id"].as_str().expect("an opportunity");
    assert!(page["records"][0]["Forecast_Override__c"].is_number());
    let resp = http
        .patch(format!(
            "{}{V}/sobjects/Opportunity/{id}",
            sim.instance_url()
        ))
        .bearer_auth(&token)
        .json(&serde_json::json!({"Forecast_Override__c": 1.0}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD_FOR_INSERT_UPDATE");
    sim.shutdown().await;
}
