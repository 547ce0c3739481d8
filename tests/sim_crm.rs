//! The CRM simulator driven like a third-party client would: raw HTTP with `reqwest` and
//! `serde_json::Value`, raw WebSocket frames with `tokio-tungstenite`, over loopback sockets.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};

use plansync_sim::crm::{self, CrmSimConfig, CrmSimHandle, Seed};

const V: &str = "/services/data/v59.0";
const PRIVATE_KEY: &str = include_str!("data/keys/crm_jwt_rsa.pem");
const PUBLIC_KEY: &str = include_str!("data/keys/crm_jwt_rsa.pub.pem");

struct Env {
    sim: CrmSimHandle,
    url: String,
    http: reqwest::Client,
    token: String,
}

fn test_config() -> CrmSimConfig {
    CrmSimConfig {
        connect_timeout: Duration::from_secs(2),
        jwt_public_keys_pem: vec![PUBLIC_KEY.to_string()],
        ..CrmSimConfig::default()
    }
}

async fn start(config: CrmSimConfig) -> Env {
    // reqwest is built without a default TLS provider; installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = crm::start(config, listener).await.expect("start");
    let url = sim.instance_url().to_string();
    let http = reqwest::Client::new();
    let token = client_credentials(&http, &url).await;
    Env {
        sim,
        url,
        http,
        token,
    }
}

async fn client_credentials(http: &reqwest::Client, url: &str) -> String {
    let resp = http
        .post(format!("{url}/services/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "plansync-demo"),
            ("client_secret", "demo-secret"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

impl Env {
    async fn get(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            // For the `/__sim/` reads; other paths ignore it.
            .header("X-Sim-Token", self.sim.hooks_token())
            .send()
            .await
            .expect("get");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn query(&self, soql: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}{V}/query", self.url))
            .query(&[("q", soql)])
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("query");
        (resp.status(), resp.json().await.expect("json"))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
        client: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body);
        if let Some(c) = client {
            req = req.header("Sforce-Call-Options", format!("client={c}"));
        }
        let resp = req.send().await.expect("send");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn bayeux(&self, msgs: Value) -> Vec<Value> {
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

    /// Handshake, first connect, and a subscription with a replay value; returns the clientId
    /// and the subscribe reply.
    async fn subscribe(&self, channel: &str, replay: Value) -> (String, Value) {
        let hs = self
            .bayeux(json!([{"channel": "/meta/handshake", "version": "1.0", "minimumVersion": "1.0", "supportedConnectionTypes": ["long-polling"], "id": "1"}]))
            .await;
        assert_eq!(hs[0]["successful"], true, "{hs:?}");
        assert_eq!(hs[0]["ext"]["replay"], true);
        assert_eq!(hs[0]["supportedConnectionTypes"], json!(["long-polling"]));
        let cid = hs[0]["clientId"].as_str().expect("clientId").to_string();
        let first = self.bayeux(json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling", "id": "2"}])).await;
        assert_eq!(first[0]["successful"], true);
        assert_eq!(first[0]["advice"]["reconnect"], "retry");
        assert!(
            first[0]["advice"]["timeout"]
                .as_u64()
                .is_some_and(|t| t >= 2000)
        );
        let sub = self
            .bayeux(json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": channel, "ext": {"replay": {channel: replay}}, "id": "3"}]))
            .await;
        (cid, sub[0].clone())
    }

    /// One held connect: the data messages it returned, and the connect reply.
    async fn connect(&self, cid: &str) -> (Vec<Value>, Value) {
        let mut msgs = self.bayeux(json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling", "id": "c"}])).await;
        let reply = msgs.pop().expect("connect reply");
        assert_eq!(reply["channel"], "/meta/connect");
        (msgs, reply)
    }

    async fn first_id(&self, object: &str) -> String {
        let (_, body) = self
            .query(&format!("SELECT Id FROM {object} ORDER BY Name LIMIT 1"))
            .await;
        body["records"][0]["Id"].as_str().expect("id").to_string()
    }
}

fn header(payload: &Value) -> &Value {
    &payload["data"]["payload"]["ChangeEventHeader"]
}

#[tokio::test]
async fn client_credentials_success_and_error_bodies() {
    let env = start(test_config()).await;
    let resp = env
        .http
        .post(format!("{}/services/oauth2/token", env.url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "plansync-demo"),
            ("client_secret", "demo-secret"),
        ])
        .send()
        .await
        .expect("token");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["instance_url"], env.url);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "api");
    assert!(
        body["issued_at"]
            .as_str()
            .is_some_and(|s| s.parse::<i64>().is_ok())
    );
    assert!(body["signature"].as_str().is_some_and(|s| !s.is_empty()));
    let id = body["id"].as_str().expect("id");
    assert!(id.starts_with(&format!("{}/id/00D", env.url)), "{id}");
    assert!(
        body["access_token"]
            .as_str()
            .expect("token")
            .starts_with("00D")
    );

    let post = |form: Vec<(&'static str, &'static str)>| {
        let http = env.http.clone();
        let url = format!("{}/services/oauth2/token", env.url);
        async move {
            let resp = http.post(url).form(&form).send().await.expect("post");
            (resp.status(), resp.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = post(vec![
        ("grant_type", "client_credentials"),
        ("client_id", "plansync-demo"),
        ("client_secret", "nope"),
    ])
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "invalid_client", "error_description": "invalid client credentials"})
    );
    let (status, body) = post(vec![
        ("grant_type", "client_credentials"),
        ("client_id", "someone"),
        ("client_secret", "x"),
    ])
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_client_id");
    let (_, body) = post(vec![("grant_type", "password")]).await;
    assert_eq!(body["error"], "unsupported_grant_type");

    // HTTP Basic works too.
    let resp = env
        .http
        .post(format!("{}/services/oauth2/token", env.url))
        .basic_auth("plansync-demo", Some("demo-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), StatusCode::OK);
}

fn jwt(claims: &Value) -> String {
    let key_der = {
        use rustls_pki_types::PrivatePkcs8KeyDer;
        use rustls_pki_types::pem::PemObject;
        PrivatePkcs8KeyDer::from_pem_slice(PRIVATE_KEY.as_bytes()).expect("pkcs8 pem")
    };
    let key = ring::signature::RsaKeyPair::from_pkcs8(key_der.secret_pkcs8_der()).expect("rsa key");
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
async fn jwt_bearer_checks_signature_issuer_subject_audience_and_expiry() {
    let env = start(test_config()).await;
    let now = chrono::Utc::now().timestamp();
    let good = json!({"iss": "plansync-demo", "sub": "integration@plansync.example", "aud": "https://login.salesforce.com", "exp": now + 180});
    let exchange = |assertion: String| {
        let http = env.http.clone();
        let url = format!("{}/services/oauth2/token", env.url);
        async move {
            let resp = http
                .post(url)
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ])
                .send()
                .await
                .expect("post");
            (resp.status(), resp.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = exchange(jwt(&good)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().expect("token");
    let resp = env
        .http
        .get(format!("{}{V}/query?q=SELECT+Id+FROM+User", env.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("q");
    assert_eq!(resp.status(), StatusCode::OK);

    // Change a character well inside the signature: the last one of the base64url text
    // may carry only padding bits, and changing it can leave the bytes as they were.
    let mut tampered = jwt(&good).into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let (status, body) = exchange(tampered).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "invalid assertion"})
    );

    let mut c = good.clone();
    c["aud"] = json!("https://example.com");
    assert_eq!(
        exchange(jwt(&c)).await.1["error_description"],
        "audience is invalid"
    );
    let mut c = good.clone();
    c["exp"] = json!(now - 10);
    assert_eq!(exchange(jwt(&c)).await.1["error"], "invalid_grant");
    let mut c = good.clone();
    c["sub"] = json!("nobody@example.com");
    assert_eq!(exchange(jwt(&c)).await.1["error"], "invalid_grant");
    let mut c = good.clone();
    c["iss"] = json!("other-app");
    assert_eq!(exchange(jwt(&c)).await.1["error"], "invalid_client_id");
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_invalid_sessions() {
    let mut config = test_config();
    config.token_ttl = Duration::from_secs(1);
    let env = start(config).await;
    let expected =
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]);
    assert_eq!(env.query("SELECT Id FROM Account").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = env.query("SELECT Id FROM Account").await;
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, expected.clone()));

    let env = start(test_config()).await;
    let resp = env
        .http
        .post(format!("{}/services/oauth2/revoke", env.url))
        .form(&[("token", env.token.as_str())])
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        env.query("SELECT Id FROM Account").await,
        (StatusCode::UNAUTHORIZED, expected.clone())
    );

    let env = start(test_config()).await;
    env.sim.revoke_all_tokens();
    assert_eq!(
        env.query("SELECT Id FROM Account").await,
        (StatusCode::UNAUTHORIZED, expected)
    );
    let resp = env
        .http
        .get(format!("{}{V}/query?q=SELECT+Id+FROM+Account", env.url))
        .send()
        .await
        .expect("q");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn soql_filters_on_system_modstamp_orders_and_limits() {
    let env = start(test_config()).await;
    let (status, all) = env.query("SELECT Id, Name, Amount, StageName, CloseDate, SystemModstamp FROM Opportunity ORDER BY Amount DESC").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["totalSize"], 4);
    assert_eq!(all["done"], true);
    let rec = &all["records"][0];
    assert_eq!(rec["attributes"]["type"], "Opportunity");
    assert_eq!(
        rec["attributes"]["url"],
        format!(
            "{V}/sobjects/Opportunity/{}",
            rec["Id"].as_str().unwrap_or("")
        )
    );
    assert_eq!(rec["Amount"], 910000.0);
    let id = rec["Id"].as_str().expect("id");
    assert_eq!(id.len(), 18);
    assert!(id.starts_with("006"));
    let stamp = rec["SystemModstamp"].as_str().expect("stamp");
    assert!(stamp.ends_with("+0000"), "{stamp}");

    // Two later edits: a watermark query sees exactly them, in SystemModstamp order.
    let ids: Vec<String> = all["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["Id"].as_str().unwrap_or("").to_string())
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let watermark = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    env.sim
        .user_edit("Opportunity", &ids[2], json!({"Amount": 1.0}), None)
        .expect("edit");
    tokio::time::sleep(Duration::from_millis(5)).await;
    env.sim
        .user_edit("Opportunity", &ids[0], json!({"Amount": 2.0}), None)
        .expect("edit");
    let (status, page) = env
        .query(&format!("SELECT Id, Amount FROM Opportunity WHERE SystemModstamp > {watermark} ORDER BY SystemModstamp ASC, Id LIMIT 5"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let got: Vec<&str> = page["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["Id"].as_str())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[0].as_str()]);
    let (_, page) = env
        .query(&format!("SELECT Id FROM Opportunity WHERE SystemModstamp > {watermark} ORDER BY SystemModstamp DESC LIMIT 1"))
        .await;
    assert_eq!(page["records"][0]["Id"], ids[0]);
    assert_eq!(page["totalSize"], 1);
    let (_, page) = env
        .query("SELECT Name FROM Opportunity WHERE StageName IN ('Closed Won', 'Qualification')")
        .await;
    assert_eq!(page["totalSize"], 2);
    // The closed-won deal's amount was just edited down to 2.
    let (_, page) = env.query("SELECT Name FROM Opportunity WHERE StageName IN ('Closed Won', 'Qualification') AND Amount >= 18000").await;
    assert_eq!(page["records"][0]["Name"], "Initech pilot");
    assert_eq!(page["totalSize"], 1);
    let (_, page) = env
        .query("SELECT Name FROM Territory__c WHERE Active__c = true OR Region__c = 'APAC'")
        .await;
    assert_eq!(page["totalSize"], 3);
    let (_, page) = env
        .query("SELECT Name FROM Opportunity WHERE CloseDate < 2027-01-01")
        .await;
    assert_eq!(page["totalSize"], 2);
}

#[tokio::test]
async fn a_large_query_pages_through_next_records_url() {
    let mut config = test_config();
    let mut seed = Seed::default_org();
    seed.generate("Opportunity", 5_000, |i| {
        vec![
            ("Name".to_string(), json!(format!("Generated {i:05}"))),
            ("StageName".to_string(), json!("Prospecting")),
            ("CloseDate".to_string(), json!("2027-01-29")),
            ("Amount".to_string(), json!(i as f64)),
            ("AccountId".to_string(), json!("@acme")),
        ]
    });
    config.seed = seed;
    let env = start(config).await;
    let (_, first) = env.query("SELECT Id, Name FROM Opportunity").await;
    assert_eq!(first["totalSize"], 5_004);
    assert_eq!(first["done"], false);
    assert_eq!(first["records"].as_array().map(Vec::len), Some(2000));
    let mut ids: Vec<String> = Vec::new();
    let mut page = first;
    let mut pages = 0;
    loop {
        pages += 1;
        ids.extend(
            page["records"]
                .as_array()
                .expect("records")
                .iter()
                .map(|r| r["Id"].as_str().unwrap_or("").to_string()),
        );
        if page["done"] == true {
            assert!(page.get("nextRecordsUrl").is_none());
            break;
        }
        let next = page["nextRecordsUrl"]
            .as_str()
            .expect("nextRecordsUrl")
            .to_string();
        assert!(next.starts_with(&format!("{V}/query/01g")), "{next}");
        let (status, _, body) = env.get(&next).await;
        assert_eq!(status, StatusCode::OK);
        page = body;
    }
    assert_eq!(pages, 3);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5_004);

    let resp = env
        .http
        .get(format!("{}{V}/query", env.url))
        .query(&[("q", "SELECT Id FROM Opportunity")])
        .header("Sforce-Query-Options", "batchSize=500")
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("q");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["records"].as_array().map(Vec::len), Some(500));
    let (status, _, body) = env.get(&format!("{V}/query/01gNOTAREALCURSOR-2000")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body[0]["errorCode"], "INVALID_QUERY_LOCATOR");
}

#[tokio::test]
async fn bad_soql_gets_salesforce_error_bodies() {
    let env = start(test_config()).await;
    let (status, body) = env.query("SELECT Id FRM Account").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!([{"message": "\nSELECT Id FRM Account\n          ^\nERROR at Row:1:Column:11\nunexpected token: 'FRM'", "errorCode": "MALFORMED_QUERY"}])
    );
    let (_, body) = env.query("SELECT Id, Nope__c FROM Opportunity").await;
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
    assert!(
        body[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("No such column 'Nope__c' on entity 'Opportunity'")
    );
    let (_, body) = env.query("SELECT Id FROM Nothing__c").await;
    assert_eq!(body[0]["errorCode"], "INVALID_TYPE");
    let (_, body) = env
        .query("SELECT Id FROM Opportunity WHERE CloseDate = '2027-01-01'")
        .await;
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
    let (_, body) = env.query("SELECT Id FROM Opportunity WHERE Amount >").await;
    assert_eq!(body[0]["errorCode"], "MALFORMED_QUERY");
}

#[tokio::test]
async fn get_and_patch_a_record_with_if_unmodified_since() {
    let env = start(test_config()).await;
    let id = env.first_id("Account").await;
    let (status, _, rec) = env
        .get(&format!(
            "{V}/sobjects/Account/{id}?fields=Name,BillingAddress"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rec["BillingAddress"]["city"], "Lyon");
    assert!(rec.get("Industry").is_none());

    let resp = env
        .http
        .patch(format!("{}{V}/sobjects/Account/{id}", env.url))
        .bearer_auth(&env.token)
        .header("If-Unmodified-Since", "Mon, 30 Nov 2020 08:34:54 GMT")
        .json(&json!({"Industry": "Retail"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    let resp = env
        .http
        .patch(format!("{}{V}/sobjects/Account/{id}", env.url))
        .bearer_auth(&env.token)
        .header("If-Unmodified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")
        .json(&json!({"Industry": "Retail"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(env.sim.record(&id).expect("record")["Industry"], "Retail");

    let (status, body) = env
        .send(
            reqwest::Method::PATCH,
            &format!("{V}/sobjects/Account/{id}"),
            json!({"Nope": 1}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
    env.sim.inject_lock_errors(1);
    let (status, body) = env
        .send(
            reqwest::Method::PATCH,
            &format!("{V}/sobjects/Account/{id}"),
            json!({"Industry": "Energy"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body[0]["errorCode"], "UNABLE_TO_LOCK_ROW");
    let (status, _) = env
        .send(
            reqwest::Method::PATCH,
            &format!("{V}/sobjects/Account/{id}"),
            json!({"Industry": "Energy"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn composite_updates_partial_and_all_or_none() {
    let env = start(test_config()).await;
    let (_, opps) = env
        .query("SELECT Id, Amount FROM Opportunity ORDER BY Name")
        .await;
    let a = opps["records"][0]["Id"].as_str().expect("id").to_string();
    let b = opps["records"][1]["Id"].as_str().expect("id").to_string();
    let amount_b = opps["records"][1]["Amount"].clone();
    let records = |stage: &str| {
        json!([
            {"attributes": {"type": "Opportunity"}, "id": a, "Amount": 999.0},
            {"attributes": {"type": "Opportunity"}, "id": b, "StageName": stage},
        ])
    };
    let before = env.sim.last_replay_id();
    let (status, results) = env
        .send(
            reqwest::Method::PATCH,
            &format!("{V}/composite/sobjects"),
            json!({"allOrNone": true, "records": records("Won-ish")}),
            Some("plansync"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        results[0],
        json!({"id": a, "success": false, "errors": [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "Record rolled back because not all records were valid and the request was using AllOrNone header", "fields": []}]})
    );
    assert_eq!(results[1]["success"], false);
    assert_eq!(
        results[1]["errors"][0]["statusCode"],
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    );
    assert_eq!(results[1]["errors"][0]["fields"], json!(["StageName"]));
    assert_ne!(env.sim.record(&a).expect("a")["Amount"], 999.0);
    assert_eq!(
        env.sim.last_replay_id(),
        before,
        "a rolled-back request emits no event"
    );

    let (_, results) = env
        .send(
            reqwest::Method::PATCH,
            &format!("{V}/composite/sobjects"),
            json!({"allOrNone": false, "records": records("Won-ish")}),
            Some("plansync"),
        )
        .await;
    assert_eq!(results[0], json!({"id": a, "success": true, "errors": []}));
    assert_eq!(results[1]["success"], false);
    assert_eq!(env.sim.record(&a).expect("a")["Amount"], 999.0);
    assert_eq!(env.sim.record(&b).expect("b")["Amount"], amount_b);
    assert!(env.sim.last_replay_id() > before);

    let many: Vec<Value> = (0..201)
        .map(|_| json!({"attributes": {"type": "Opportunity"}, "id": a, "Amount": 1.0}))
        .collect();
    let (status, body) = env
        .send(
            reqwest::Method::PATCH,
            &format!("{V}/composite/sobjects"),
            json!({"records": many}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body[0]["errorCode"], "EXCEEDED_ID_LIMIT");

    env.sim.inject_lock_errors(1);
    let (_, results) = env
        .send(
            reqwest::Method::PATCH,
            &format!("{V}/composite/sobjects"),
            json!({"records": records("Closed Won")}),
            None,
        )
        .await;
    assert_eq!(results[0]["errors"][0]["statusCode"], "UNABLE_TO_LOCK_ROW");
    assert_eq!(results[1]["success"], true);
}

#[tokio::test]
async fn bulk_ingest_update_reports_successes_and_failures() {
    let env = start(test_config()).await;
    let (_, opps) = env.query("SELECT Id FROM Opportunity ORDER BY Name").await;
    let a = opps["records"][0]["Id"].as_str().expect("id").to_string();
    let b = opps["records"][1]["Id"].as_str().expect("id").to_string();
    let b_before = env.sim.record(&b).expect("b");
    let (status, job) = env
        .send(reqwest::Method::POST, &format!("{V}/jobs/ingest"), json!({"object": "Opportunity", "operation": "update", "contentType": "CSV", "lineEnding": "LF"}), Some("plansync"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["state"], "Open");
    let job_id = job["id"].as_str().expect("job id").to_string();
    assert!(
        job["contentUrl"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!("/jobs/ingest/{job_id}/batches"))
    );
    let csv = format!("Id,Amount,StageName\n{a},5000,Proposal\n{b},6000,NotAStage\n");
    let resp = env
        .http
        .put(format!("{}{V}/jobs/ingest/{job_id}/batches", env.url))
        .bearer_auth(&env.token)
        .header("Content-Type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (status, body) = env
        .send(
            reqwest::Method::PATCH,
            &format!("{V}/jobs/ingest/{job_id}"),
            json!({"state": "UploadComplete"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "UploadComplete");
    let mut info = Value::Null;
    for _ in 0..50 {
        info = env.get(&format!("{V}/jobs/ingest/{job_id}")).await.2;
        if info["state"] == "JobComplete" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(info["state"], "JobComplete");
    assert_eq!(info["numberRecordsProcessed"], 2);
    assert_eq!(info["numberRecordsFailed"], 1);
    let ok = env
        .http
        .get(format!(
            "{}{V}/jobs/ingest/{job_id}/successfulResults/",
            env.url
        ))
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("ok")
        .text()
        .await
        .expect("text");
    let mut lines = ok.lines();
    assert_eq!(lines.next(), Some("sf__Id,sf__Created,Id,Amount,StageName"));
    assert_eq!(
        lines.next(),
        Some(format!("{a},false,{a},5000,Proposal").as_str())
    );
    assert_eq!(lines.next(), None);
    let failed = env
        .http
        .get(format!(
            "{}{V}/jobs/ingest/{job_id}/failedResults/",
            env.url
        ))
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("failed")
        .text()
        .await
        .expect("text");
    let mut reader = csv::Reader::from_reader(failed.as_bytes());
    assert_eq!(
        reader
            .headers()
            .expect("headers")
            .iter()
            .take(2)
            .collect::<Vec<_>>(),
        ["sf__Id", "sf__Error"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][0], b.as_str());
    assert!(
        rows[0][1].starts_with("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:"),
        "{}",
        &rows[0][1]
    );
    assert_eq!(env.sim.record(&a).expect("a")["Amount"], 5000.0);
    // The failed row changed nothing, not even its valid Amount.
    assert_eq!(
        env.sim.record(&b).expect("b")["StageName"],
        b_before["StageName"]
    );
    assert_eq!(env.sim.record(&b).expect("b")["Amount"], b_before["Amount"]);
}

#[tokio::test]
async fn limit_info_header_and_request_limit_exceeded() {
    let mut config = test_config();
    config.daily_limit = 3;
    let env = start(config).await;
    let (_, headers, _) = env
        .get(&format!("{V}/query?q=SELECT+Id+FROM+Account"))
        .await;
    assert_eq!(
        headers
            .get("sforce-limit-info")
            .and_then(|v| v.to_str().ok()),
        Some("api-usage=1/3")
    );
    env.get(&format!("{V}/query?q=SELECT+Id+FROM+Account"))
        .await;
    let (_, headers, _) = env
        .get(&format!("{V}/query?q=SELECT+Id+FROM+Account"))
        .await;
    assert_eq!(
        headers
            .get("sforce-limit-info")
            .and_then(|v| v.to_str().ok()),
        Some("api-usage=3/3")
    );
    let (status, _, body) = env
        .get(&format!("{V}/query?q=SELECT+Id+FROM+Account"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    let counts = env.sim.request_counts();
    assert_eq!(counts.query, 4);
    assert_eq!(counts.auth, 1);
    env.sim.set_daily_limit(Some(10), None);
    assert_eq!(
        env.get(&format!("{V}/query?q=SELECT+Id+FROM+Account"))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn cdc_over_long_polling_with_origin_replay_and_errors() {
    let env = start(test_config()).await;
    let channel = "/data/OpportunityChangeEvent";
    let (cid, sub) = env.subscribe(channel, json!(-1)).await;
    assert_eq!(sub["successful"], true, "{sub}");
    let advice = env.bayeux(json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}])).await;
    let other = advice[0]["clientId"].as_str().expect("clientId");
    let first = env.bayeux(json!([{"channel": "/meta/connect", "clientId": other, "connectionType": "long-polling"}])).await;
    assert_eq!(
        first[0]["advice"],
        json!({"reconnect": "retry", "interval": 0, "timeout": 2000})
    );
    let id = env.first_id("Opportunity").await;

    let (status, _) = env
        .send(
            reqwest::Method::PATCH,
            &format!("{V}/sobjects/Opportunity/{id}"),
            json!({"Amount": 4242.0, "Probability": null}),
            Some("plansync"),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (events, reply) = env.connect(&cid).await;
    assert_eq!(reply["successful"], true);
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = &events[0];
    assert_eq!(ev["channel"], channel);
    let h = header(ev);
    assert_eq!(h["entityName"], "Opportunity");
    assert_eq!(h["changeType"], "UPDATE");
    assert_eq!(h["recordIds"], json!([id]));
    assert_eq!(
        h["changeOrigin"],
        "com/salesforce/api/rest/59.0;client=plansync"
    );
    assert_eq!(
        h["commitUser"],
        env.sim
            .user_id("integration@plansync.example")
            .expect("user")
    );
    assert_eq!(h["sequenceNumber"], 1);
    assert!(h["transactionKey"].as_str().is_some_and(|k| k.len() == 36));
    assert!(h["commitTimestamp"].as_i64().is_some() && h["commitNumber"].as_i64().is_some());
    let changed: Vec<&str> = h["changedFields"]
        .as_array()
        .expect("changed")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        changed,
        [
            "Amount",
            "Probability",
            "LastModifiedDate",
            "LastModifiedById"
        ]
    );
    let payload = ev["data"]["payload"].as_object().expect("payload");
    let mut keys: Vec<&str> = payload
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "ChangeEventHeader")
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "Amount",
            "LastModifiedById",
            "LastModifiedDate",
            "Probability"
        ]
    );
    assert_eq!(payload["Probability"], Value::Null);
    assert!(
        payload["LastModifiedDate"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    let first_replay = ev["data"]["event"]["replayId"].as_u64().expect("replayId");
    assert!(ev["data"]["schema"].as_str().is_some_and(|s| s.len() == 22));

    // A person's edit has no origin; a quiet connect returns at the timeout with no events.
    env.sim
        .user_edit(
            "Opportunity",
            &id,
            json!({"StageName": "Closed Lost"}),
            Some("ada.ng@plansync.example"),
        )
        .expect("edit");
    env.sim
        .user_edit(
            "Opportunity",
            &id,
            json!({"Forecast_Override__c": 1.0}),
            Some("ada.ng@plansync.example"),
        )
        .expect("edit");
    let (events, _) = env.connect(&cid).await;
    assert_eq!(events.len(), 2);
    assert_eq!(header(&events[0])["changeOrigin"], "");
    let later: Vec<u64> = events
        .iter()
        .filter_map(|e| e["data"]["event"]["replayId"].as_u64())
        .collect();
    assert!(later[0] > first_replay && later[1] > later[0]);
    let started = std::time::Instant::now();
    let (events, reply) = env.connect(&cid).await;
    assert!(events.is_empty());
    assert_eq!(reply["successful"], true);
    assert!(started.elapsed() >= Duration::from_millis(1500));

    // Replay after a stored id returns exactly the later events; -2 returns all retained.
    let (cid2, sub) = env.subscribe(channel, json!(first_replay)).await;
    assert_eq!(sub["successful"], true);
    let (events, _) = env.connect(&cid2).await;
    let replayed: Vec<u64> = events
        .iter()
        .filter_map(|e| e["data"]["event"]["replayId"].as_u64())
        .collect();
    assert_eq!(replayed, later);
    let (cid3, _) = env.subscribe("/data/ChangeEvents", json!(-2)).await;
    let (events, _) = env.connect(&cid3).await;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e["channel"] == "/data/ChangeEvents"));

    // An id that is no longer retained is refused with Salesforce's message.
    env.sim.age_events(Duration::from_secs(73 * 3600));
    assert_eq!(env.sim.retained_events(), 0);
    let (_, sub) = env.subscribe(channel, json!(first_replay)).await;
    assert_eq!(sub["successful"], false);
    assert_eq!(
        sub["error"],
        format!(
            "400::The replayId {{{first_replay}}} you provided was invalid. Please provide a valid ID, -2 to replay all events, or -1 to replay only new events."
        )
    );
    let (_, sub) = env.subscribe("/data/NoSuchChangeEvent", json!(-1)).await;
    assert_eq!(
        sub["error"],
        "400::The channel you requested to subscribe to doesn't exist {/data/NoSuchChangeEvent}"
    );

    // A dropped session: 403::Unknown client with handshake advice.
    env.sim.drop_sessions();
    let (_, reply) = env.connect(&cid).await;
    assert_eq!(reply["successful"], false);
    assert_eq!(reply["error"], "403::Unknown client");
    assert_eq!(reply["advice"]["reconnect"], "handshake");

    // Revoked token: handshake denied.
    env.sim.revoke_all_tokens();
    let hs = env.bayeux(json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"], "id": "9"}])).await;
    assert_eq!(hs[0]["error"], "403::Handshake denied");
    assert_eq!(
        hs[0]["ext"]["sfdc"]["failureReason"],
        "401::Authentication invalid"
    );
    assert_eq!(hs[0]["advice"]["reconnect"], "none");
}

#[tokio::test]
async fn held_connect_returns_as_soon_as_an_event_exists() {
    let mut config = test_config();
    config.connect_timeout = Duration::from_secs(30);
    let env = start(config).await;
    let (cid, _) = env
        .subscribe("/data/Territory__ChangeEvent", json!(-1))
        .await;
    let id = env.first_id("Territory__c").await;
    let waiter = {
        let http = env.http.clone();
        let url = format!("{}/cometd/59.0/connect", env.url);
        let token = env.token.clone();
        let cid = cid.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let resp = http
                .post(url)
                .bearer_auth(token)
                .json(&json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling", "id": "5"}]))
                .send()
                .await
                .expect("connect");
            (started.elapsed(), resp.json::<Value>().await.expect("json"))
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.sim
        .user_edit(
            "Territory__c",
            &id,
            json!({"Active__c": false, "Annual_Quota__c": 10.0}),
            None,
        )
        .expect("edit");
    let (elapsed, msgs) = waiter.await.expect("join");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    assert_eq!(msgs[0]["channel"], "/data/Territory__ChangeEvent");
    assert_eq!(header(&msgs[0])["entityName"], "Territory__c");
    assert_eq!(msgs[1]["channel"], "/meta/connect");
}

#[tokio::test]
async fn compound_create_delete_undelete_and_injected_events() {
    let env = start(test_config()).await;
    let (cid, _) = env.subscribe("/data/ChangeEvents", json!(-1)).await;
    let account = env.first_id("Account").await;
    env.sim
        .user_edit("Account", &account, json!({"BillingCity": "Paris"}), None)
        .expect("edit");
    let new_id = env
        .sim
        .create("Opportunity", json!({"Name": "New", "StageName": "Prospecting", "CloseDate": "2027-02-01", "AccountId": account}), None)
        .expect("create");
    env.sim.delete(&new_id, None).expect("delete");
    env.sim.undelete(&new_id, None).expect("undelete");
    let (_, opps) = env
        .query("SELECT Id FROM Opportunity ORDER BY Name LIMIT 2")
        .await;
    let ids: Vec<String> = opps["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["Id"].as_str().map(str::to_string))
        .collect();
    env.sim
        .inject_merged("Opportunity", &ids, json!({"Probability": 55.0}), None)
        .expect("merged");
    env.sim
        .inject_gap(
            "Opportunity",
            &ids[..1],
            "GAP_UPDATE",
            json!({"Amount": 1.0}),
        )
        .expect("gap");
    env.sim.inject_overflow("Territory__c").expect("overflow");

    let (events, _) = env.connect(&cid).await;
    let types: Vec<&str> = events
        .iter()
        .filter_map(|e| header(e)["changeType"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "UPDATE",
            "CREATE",
            "DELETE",
            "UNDELETE",
            "UPDATE",
            "GAP_UPDATE",
            "GAP_OVERFLOW"
        ]
    );
    let compound = &events[0]["data"]["payload"];
    assert_eq!(compound["BillingAddress"], json!({"City": "Paris"}));
    assert_eq!(
        header(&events[0])["changedFields"][0],
        "BillingAddress.City"
    );
    let created = &events[1]["data"]["payload"];
    assert_eq!(created["Name"], "New");
    assert_eq!(created["CloseDate"], "2027-02-01");
    assert!(created.get("CreatedDate").is_some() && created.get("OwnerId").is_some());
    assert!(created.get("Amount").is_none() && created.get("SystemModstamp").is_none());
    assert_eq!(header(&events[1])["changedFields"], json!([]));
    let deleted = events[2]["data"]["payload"].as_object().expect("payload");
    assert_eq!(deleted.len(), 1, "DELETE carries only the header");
    assert_eq!(events[3]["data"]["payload"]["Name"], "New");
    assert_eq!(header(&events[4])["recordIds"], json!(ids));
    assert_eq!(header(&events[5])["recordIds"], json!([ids[0].clone()]));
    assert_eq!(
        events[5]["data"]["payload"].as_object().map(|m| m.len()),
        Some(1)
    );
    assert_eq!(env.sim.record(&ids[0]).expect("record")["Amount"], 1.0);
    assert_eq!(header(&events[6])["entityName"], "Territory__c");
    assert_eq!(header(&events[6])["recordIds"], json!([]));

    // queryAll sees deleted rows, query does not.
    env.sim.delete(&new_id, None).expect("delete");
    let q = format!("SELECT Id, IsDeleted FROM Opportunity WHERE Id = '{new_id}'");
    assert_eq!(env.query(&q).await.1["totalSize"], 0);
    let (_, _, all) = env
        .get(&format!(
            "{V}/queryAll?q={}",
            q.replace(' ', "+").replace('=', "%3D").replace('\'', "%27")
        ))
        .await;
    assert_eq!(all["records"][0]["IsDeleted"], true);
}

#[tokio::test]
async fn cdc_over_websocket() {
    let env = start(test_config()).await;
    let ws_url = format!("{}/cometd/59.0", env.url.replace("http://", "ws://"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws_url.as_str(),
        )
        .expect("request");
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", env.token).parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("ws connect");
    async fn exchange(
        ws: &mut (
                 impl StreamExt<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + SinkExt<tokio_tungstenite::tungstenite::Message>
                 + Unpin
             ),
        msgs: Option<Value>,
    ) -> Vec<Value> {
        if let Some(m) = msgs {
            let _ = ws
                .send(tokio_tungstenite::tungstenite::Message::Text(
                    m.to_string().into(),
                ))
                .await;
        }
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("frame in time")
                .expect("open")
                .expect("frame");
            if let tokio_tungstenite::tungstenite::Message::Text(t) = frame {
                return serde_json::from_str::<Value>(&t)
                    .expect("json")
                    .as_array()
                    .cloned()
                    .expect("array");
            }
        }
    }
    let hs = exchange(&mut ws, Some(json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["websocket"], "id": "1"}]))).await;
    assert_eq!(hs[0]["successful"], true);
    assert!(
        hs[0]["supportedConnectionTypes"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("websocket")))
    );
    let cid = hs[0]["clientId"].as_str().expect("cid").to_string();
    let first = exchange(&mut ws, Some(json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "websocket", "id": "2"}]))).await;
    assert_eq!(first[0]["successful"], true);
    let sub = exchange(&mut ws, Some(json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/data/OpportunityChangeEvent", "ext": {"replay": {"/data/OpportunityChangeEvent": -1}}, "id": "3"}]))).await;
    assert_eq!(sub[0]["successful"], true, "{sub:?}");
    // A held connect, answered when the write's event arrives.
    let _ = ws
        .send(tokio_tungstenite::tungstenite::Message::Text(json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "websocket", "id": "4"}]).to_string().into()))
        .await;
    let id = env.first_id("Opportunity").await;
    let (status, _) = env
        .send(
            reqwest::Method::PATCH,
            &format!("{V}/sobjects/Opportunity/{id}"),
            json!({"Amount": 77.0}),
            Some("plansync"),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let msgs = exchange(&mut ws, None).await;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(
        header(&msgs[0])["changeOrigin"],
        "com/salesforce/api/rest/59.0;client=plansync"
    );
    assert_eq!(msgs[0]["data"]["payload"]["Amount"], 77.0);
    assert_eq!(msgs[1]["channel"], "/meta/connect");
    assert_eq!(msgs[1]["id"], "4");
    // A quiet connect is answered at the timeout.
    let quiet = exchange(&mut ws, Some(json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "websocket", "id": "5"}]))).await;
    assert_eq!(
        quiet,
        vec![json!({"channel": "/meta/connect", "clientId": cid, "successful": true, "id": "5"})]
    );
    env.sim.drop_sessions();
    let gone = exchange(&mut ws, Some(json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "websocket", "id": "6"}]))).await;
    assert_eq!(gone[0]["error"], "403::Unknown client");
}

#[tokio::test]
async fn admin_hooks_over_http() {
    let env = start(test_config()).await;
    let id = env.first_id("Territory__c").await;
    let post = |path: &str, body: Value| {
        let req = env
            .http
            .post(format!("{}/__sim/{path}", env.url))
            .header("X-Sim-Token", env.sim.hooks_token())
            .json(&body);
        async move {
            let resp = req.send().await.expect("admin");
            (resp.status(), resp.json::<Value>().await.expect("json"))
        }
    };
    let (status, _) = post("edit", json!({"object": "Territory__c", "id": id, "fields": {"Region__c": "EMEA"}, "user": "ben.ortiz@plansync.example"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post(
        "edit",
        json!({"object": "Territory__c", "id": id, "fields": {"Region__c": "MARS"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
    );
    let (_, created) = post(
        "create",
        json!({"object": "Territory__c", "fields": {"Name": "LATAM", "Active__c": true}}),
    )
    .await;
    let new_id = created["id"].as_str().expect("id").to_string();
    assert!(new_id.starts_with("a0X"));
    let (status, _) = post(
        "gap",
        json!({"object": "Territory__c", "ids": [new_id], "change_type": "GAP_CREATE"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, rec) = env.get(&format!("/__sim/record/{id}")).await;
    assert_eq!(rec["Region__c"], "EMEA");
    assert_eq!(
        rec["LastModifiedById"],
        env.sim.user_id("ben.ortiz@plansync.example").expect("ben")
    );
    post("lock_errors", json!({"count": 1})).await;
    let (status, body) = env
        .send(
            reqwest::Method::PATCH,
            &format!("{V}/sobjects/Territory__c/{id}"),
            json!({"Active__c": true}),
            None,
        )
        .await;
    assert_eq!(
        (status, body[0]["errorCode"].clone()),
        (StatusCode::BAD_REQUEST, json!("UNABLE_TO_LOCK_ROW"))
    );
    let (_, counts) = {
        let (s, _, b) = env.get("/__sim/requests").await;
        (s, b)
    };
    assert_eq!(counts["counts"]["write"], 1);
    assert_eq!(counts["counts"]["auth"], 1);
    assert!(counts["counts"]["admin"].as_u64().is_some_and(|n| n >= 6));
    post("revoke_tokens", json!({})).await;
    assert_eq!(
        env.query("SELECT Id FROM Territory__c").await.0,
        StatusCode::UNAUTHORIZED
    );
}
