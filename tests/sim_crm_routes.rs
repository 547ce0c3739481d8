//! The CRM simulator's routes as the REST API Developer Guide writes them, read as a
//! third-party client would (raw HTTP over a loopback socket, `serde_json::Value`): every
//! resource with and without its trailing slash, Salesforce's error bodies for an unknown
//! resource and a wrong method, the global describe and basic information, and `limits`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use plansync_sim::crm::{self, CrmSimConfig, CrmSimHandle};

const V: &str = "/services/data/v59.0";

/// A simulator on a loopback socket and a token for it (the other `sim_crm_*` modules use it
/// too).
pub(crate) struct Env {
    pub sim: CrmSimHandle,
    pub url: String,
    pub http: reqwest::Client,
    pub token: String,
}

pub(crate) async fn start(config: CrmSimConfig) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = crm::start(config, listener).await.expect("start");
    let url = sim.instance_url().to_string();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{url}/services/oauth2/token"))
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
    Env {
        sim,
        url,
        http,
        token,
    }
}

impl Env {
    /// One call; the body as JSON (`Null` when empty), and the `Allow` header.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, Option<String>) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status();
        let allow = resp
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
        };
        (status, json, allow)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, b, _) = self.call(Method::GET, path, None).await;
        (s, b)
    }

    pub async fn bayeux(&self, msgs: Value) -> Vec<Value> {
        let resp = self
            .http
            .post(format!("{}/cometd/59.0", self.url))
            .bearer_auth(&self.token)
            .json(&msgs)
            .send()
            .await
            .expect("cometd");
        assert_eq!(resp.status(), StatusCode::OK);
        match resp.json::<Value>().await.expect("json") {
            Value::Array(list) => list,
            other => panic!("not an array: {other}"),
        }
    }
}

pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn every_resource_answers_with_its_trailing_slash_too() {
    let env = start(CrmSimConfig::default()).await;
    let q = encode("SELECT Id, Name FROM Opportunity ORDER BY Name");
    // The forms simple-salesforce sends: `query/?q=`, `queryAll/?q=`.
    for resource in ["query", "queryAll"] {
        let (status, body) = env.get(&format!("{V}/{resource}/?q={q}")).await;
        assert_eq!(status, StatusCode::OK, "{resource}/: {body}");
        assert!(body["totalSize"].as_u64().is_some_and(|n| n > 0), "{body}");
    }
    let (status, body, _) = env
        .call(
            Method::POST,
            &format!("{V}/sobjects/Opportunity/"),
            Some(json!({"Name": "Slash deal", "StageName": "Prospecting", "CloseDate": "2027-03-01"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let record = format!("{V}/sobjects/Opportunity/{id}/");
    let (status, body) = env.get(&record).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Name"], "Slash deal");
    let (status, _, _) = env
        .call(Method::PATCH, &record, Some(json!({"Amount": 42.0})))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body, _) = env
        .call(
            Method::PATCH,
            &format!("{V}/composite/sobjects/"),
            Some(json!({"allOrNone": false, "records": [
                {"attributes": {"type": "Opportunity"}, "id": id, "Amount": 43.0}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["success"], true, "{body}");
    for path in [
        format!("{V}/sobjects/"),
        format!("{V}/sobjects/Opportunity/"),
        format!("{V}/sobjects/Opportunity/describe/"),
        format!("{V}/limits/"),
        "/services/data/".to_string(),
    ] {
        let (status, body) = env.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (status, _, _) = env.call(Method::DELETE, &record, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = env.get(&format!("{V}/sobjects/Opportunity/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body[0]["errorCode"], "ENTITY_IS_DELETED");
}

#[tokio::test]
async fn unknown_resources_and_wrong_methods_answer_salesforce_error_bodies() {
    let env = start(CrmSimConfig::default()).await;
    for path in [
        format!("{V}/no/such/resource"),
        "/services/nothing".to_string(),
        format!("{V}/sobjects/Opportunity/006000000000001AAA/extra/deep/path"),
    ] {
        let (status, body) = env.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            body,
            json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]),
            "{path}"
        );
    }
    // A known path with a method it does not take: 405, the method and the allowed ones named.
    let (status, body, allow) = env
        .call(Method::PUT, &format!("{V}/query/"), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body[0]["errorCode"], "METHOD_NOT_ALLOWED", "{body}");
    let message = body[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("HTTP Method 'PUT' not allowed. Allowed are "),
        "{message}"
    );
    assert!(message.contains("GET"), "{message}");
    assert!(allow.is_some_and(|a| a.contains("GET")));
    let (status, body, _) = env
        .call(
            Method::PATCH,
            &format!("{V}/sobjects/Opportunity"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body[0]["errorCode"], "METHOD_NOT_ALLOWED");
    let (status, body, _) = env.call(Method::DELETE, &format!("{V}/limits"), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
}

#[tokio::test]
async fn global_describe_and_basic_information() {
    let env = start(CrmSimConfig::default()).await;
    let (status, body) = env.get(&format!("{V}/sobjects")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["encoding"], "UTF-8");
    assert_eq!(body["maxBatchSize"], 200);
    let objects = body["sobjects"].as_array().expect("sobjects");
    let opp = objects
        .iter()
        .find(|o| o["name"] == "Opportunity")
        .unwrap_or_else(|| panic!("no Opportunity in {body}"));
    assert_eq!(opp["label"], "Opportunity");
    assert_eq!(opp["keyPrefix"], "006");
    for flag in ["queryable", "updateable", "createable", "deletable"] {
        assert_eq!(opp[flag], true, "{flag}: {opp}");
    }
    assert_eq!(opp["urls"]["sobject"], format!("{V}/sobjects/Opportunity"));
    assert_eq!(
        opp["urls"]["describe"],
        format!("{V}/sobjects/Opportunity/describe")
    );
    // The summary, not the full describe.
    assert!(opp.get("fields").is_none(), "{opp}");
    let territory = objects.iter().find(|o| o["name"] == "Territory__c");
    assert!(territory.is_some_and(|t| t["custom"] == true && t["keyPrefix"] == "a0X"));

    let (status, body) = env.get(&format!("{V}/sobjects/Opportunity")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["objectDescribe"]["name"], "Opportunity");
    assert_eq!(body["recentItems"], json!([]));
    let (status, body) = env.get(&format!("{V}/sobjects/Nope__c")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body[0]["errorCode"], "NOT_FOUND");
}

#[tokio::test]
async fn limits_report_the_daily_budget() {
    let config = CrmSimConfig {
        daily_limit: 500,
        ..CrmSimConfig::default()
    };
    let env = start(config).await;
    let (status, body) = env.get(&format!("{V}/limits")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["DailyApiRequests"]["Max"], 500);
    // The limits call itself is the first metered request.
    assert_eq!(body["DailyApiRequests"]["Remaining"], 499);
    for name in [
        "DailyBulkApiBatches",
        "DailyBulkV2QueryJobs",
        "DataStorageMB",
        "FileStorageMB",
        "DailyDurableStreamingApiEvents",
        "DurableStreamingApiConcurrentClients",
    ] {
        let l = &body[name];
        assert!(
            l["Max"].as_u64().is_some() && l["Remaining"].as_u64().is_some(),
            "{name}: {body}"
        );
    }
    env.sim.set_daily_limit(Some(500), Some(120));
    let (_, body) = env.get(&format!("{V}/limits/")).await;
    assert_eq!(body["DailyApiRequests"]["Remaining"], 500 - 121);
}
