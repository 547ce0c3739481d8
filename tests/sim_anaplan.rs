//! The Anaplan simulator driven over real sockets the way a third-party client would: raw
//! `reqwest` calls and untyped JSON, checked against the public reference (paths, status codes,
//! envelope, paging, error bodies, bulk lifecycle, limits and faults).

use crate::support::anaplan_sim;
use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use plansync_sim::anaplan::{CellValue, Faults, SimConfig, SimHandle};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const WS: &str = "8a81b09d5e8c6f27015e8d4f1a2b3c4d";
const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";
const OPP_MODULE: &str = "OPP01 Opportunity Data";
const LONG: Duration = Duration::from_secs(30);

fn config() -> SimConfig {
    SimConfig {
        task_step: Duration::from_millis(50),
        ..SimConfig::default()
    }
}

fn client() -> Client {
    // Needed to build a client even for plain http; already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder().no_proxy().timeout(LONG).build().unwrap()
}

async fn login(c: &Client, sim: &SimHandle) -> String {
    let resp = c
        .post(format!("{}/token/authenticate", sim.auth_url()))
        .basic_auth("demo@plansync.local", Some("demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    body["tokenInfo"]["tokenValue"]
        .as_str()
        .unwrap()
        .to_string()
}

fn auth(token: &str) -> String {
    format!("AnaplanAuthToken {token}")
}

/// GET a JSON API path (relative to /2/0), returning status and body.
async fn get(c: &Client, sim: &SimHandle, token: &str, path: &str) -> (StatusCode, Value) {
    let resp = c
        .get(format!("{}{path}", sim.api_url()))
        .header("Authorization", auth(token))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn send(
    c: &Client,
    sim: &SimHandle,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let resp = c
        .request(method, format!("{}{path}", sim.api_url()))
        .header("Authorization", auth(token))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn model_path(rest: &str) -> String {
    format!("/workspaces/{WS}/models/{MODEL}{rest}")
}

/// The ID of the named entry of a collection (`imports`, `modules`, ...).
async fn id_of(c: &Client, sim: &SimHandle, token: &str, kind: &str, name: &str) -> String {
    let (status, body) = get(c, sim, token, &model_path(&format!("/{kind}"))).await;
    assert_eq!(status, 200, "{body}");
    body[kind]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}: {body}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Polls a task until it is terminal.
async fn wait_task(
    c: &Client,
    sim: &SimHandle,
    token: &str,
    kind: &str,
    id: &str,
    task: &str,
) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        let (status, body) = get(
            c,
            sim,
            token,
            &model_path(&format!("/{kind}/{id}/tasks/{task}")),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let t = &body["task"];
        assert!(
            t["progress"].is_number() && t["creationTime"].is_i64() && t["currentStep"].is_string()
        );
        if t["taskState"] == "COMPLETE" || t["taskState"] == "CANCELLED" {
            return t.clone();
        }
        assert!(Instant::now() < deadline, "task never finished: {body}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn start_task(c: &Client, sim: &SimHandle, token: &str, kind: &str, id: &str) -> String {
    let (status, body) = send(
        c,
        sim,
        token,
        reqwest::Method::POST,
        &model_path(&format!("/{kind}/{id}/tasks")),
        json!({"localeName": "en_US"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"]["taskState"], "NOT_STARTED");
    let id = body["task"]["taskId"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    id
}

fn detail_value(details: &Value, key: &str) -> String {
    let values = details[0]["values"].as_array().unwrap();
    let at = values.iter().position(|v| v == key).unwrap();
    values[at + 1].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn basic_auth_answers_201_with_the_token_and_401_on_bad_credentials() {
    let sim = anaplan_sim(config()).await;
    let c = client();
    let url = format!("{}/token/authenticate", sim.auth_url());
    let resp = c
        .post(&url)
        .basic_auth("demo@plansync.local", Some("demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "SUCCESS");
    assert_eq!(body["statusMessage"], "Login successful");
    assert!(
        body["meta"]["validationUrl"]
            .as_str()
            .unwrap()
            .ends_with("/token/validate")
    );
    let info = &body["tokenInfo"];
    assert_eq!(info["tokenId"].as_str().unwrap().len(), 36);
    assert_eq!(info["refreshTokenId"].as_str().unwrap().len(), 36);
    let now = chrono::Utc::now().timestamp_millis();
    let expires = info["expiresAt"].as_i64().unwrap();
    assert!(
        (expires - now - 35 * 60 * 1000).abs() < 60_000,
        "{expires} vs {now}"
    );
    let token = info["tokenValue"].as_str().unwrap();

    let bad = c
        .post(&url)
        .basic_auth("demo@plansync.local", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["status"], "FAILURE_BAD_CREDENTIAL");
    let malformed = c
        .post(&url)
        .header("Authorization", "Basic !!!")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        malformed.json::<Value>().await.unwrap()["status"],
        "FAILURE_BAD_HEADER"
    );

    // Both token schemes work on the Integration API; none gets Anaplan's 401 body.
    for scheme in ["AnaplanAuthToken", "Bearer"] {
        let resp = c
            .get(format!("{}/users/me", sim.api_url()))
            .header("Authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["user"]["email"], "demo@plansync.local");
        assert_eq!(body["status"]["code"], 200);
    }
    let resp = c
        .get(format!("{}/workspaces", sim.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"status": {"code": 401, "message": "Not Authenticated."}})
    );
    sim.shutdown().await;
}

struct Pki {
    ca_pem: String,
    leaf_pem: String,
    leaf_der: Vec<u8>,
    leaf_key: ring::signature::RsaKeyPair,
}

fn key_file(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/data/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).unwrap()
}

/// A CA (from `ca_key`) and a leaf for `subject`, signed by it, valid until `not_after`.
fn pki(ca_key: &str, subject: &str, not_after_year: i32) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_RSA_SHA256,
    };
    let ca_kp = KeyPair::from_pem_and_sign_algo(&key_file(ca_key), &PKCS_RSA_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("Test CA {ca_key}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_kp).unwrap();
    let issuer = Issuer::new(ca_params, ca_kp);

    let leaf_pem_key = key_file("leaf_rsa.pem");
    let leaf_kp = KeyPair::from_pem_and_sign_algo(&leaf_pem_key, &PKCS_RSA_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, subject);
    params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
    let leaf = params.signed_by(&leaf_kp, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        leaf_pem: leaf.pem(),
        leaf_der: leaf.der().to_vec(),
        leaf_key: ring::signature::RsaKeyPair::from_pkcs8(&pem_der(&leaf_pem_key)).unwrap(),
    }
}

fn sign(key: &ring::signature::RsaKeyPair, data: &[u8]) -> Vec<u8> {
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA512,
        &ring::rand::SystemRandom::new(),
        data,
        &mut sig,
    )
    .unwrap();
    sig
}

async fn cert_login(
    c: &Client,
    sim: &SimHandle,
    header_cert: &str,
    body: Value,
) -> (StatusCode, Value) {
    let resp = c
        .post(format!("{}/token/authenticate", sim.auth_url()))
        .header("Authorization", format!("CACertificate {header_cert}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn certificate_auth_v1_and_v2_accepts_only_trusted_valid_signed_logins() {
    let good = pki("ca_rsa.pem", "demo@plansync.local", 4000);
    let sim = anaplan_sim(SimConfig {
        ca_certs_pem: vec![good.ca_pem.clone()],
        ..config()
    })
    .await;
    let c = client();
    let pem_header = STANDARD.encode(good.leaf_pem.as_bytes());
    let der_header = STANDARD.encode(&good.leaf_der);

    // v1: 150 random bytes, the whole PEM in the header.
    let data: Vec<u8> = (0..150u8).map(|i| i.wrapping_mul(7)).collect();
    let body = json!({"encodedData": STANDARD.encode(&data), "encodedSignedData": STANDARD.encode(sign(&good.leaf_key, &data))});
    let (status, resp) = cert_login(&c, &sim, &pem_header, body.clone()).await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["statusMessage"], "Login successful");
    let token = resp["tokenInfo"]["tokenValue"].as_str().unwrap();
    let (status, me) = get(&c, &sim, token, "/users/me").await;
    assert_eq!(
        (status, me["user"]["email"].clone()),
        (StatusCode::OK, json!("demo@plansync.local"))
    );

    // v2: an 8-byte big-endian timestamp first, bare base64 DER in the header.
    let v2 = |secs: i64| {
        let mut d = (secs as u64).to_be_bytes().to_vec();
        d.extend((0..142u8).map(|i| i ^ 0x5a));
        json!({
            "encodedData": STANDARD.encode(&d),
            "encodedSignedData": STANDARD.encode(sign(&good.leaf_key, &d)),
            "encodedDataFormat": "v2",
        })
    };
    let now = chrono::Utc::now().timestamp();
    let (status, resp) = cert_login(&c, &sim, &der_header, v2(now)).await;
    assert_eq!(status, 201, "{resp}");
    let (status, resp) = cert_login(&c, &sim, &der_header, v2(now - 3600)).await;
    assert_eq!(status, 401, "{resp}");
    assert_eq!(resp["status"], "FAILURE_BAD_CREDENTIAL");

    // A signature over other data, too little data, a foreign CA, an expired certificate.
    let other: Vec<u8> = vec![1; 150];
    let forged = json!({"encodedData": STANDARD.encode(&data), "encodedSignedData": STANDARD.encode(sign(&good.leaf_key, &other))});
    assert_eq!(cert_login(&c, &sim, &pem_header, forged).await.0, 401);
    let short = vec![2u8; 99];
    let too_short = json!({"encodedData": STANDARD.encode(&short), "encodedSignedData": STANDARD.encode(sign(&good.leaf_key, &short))});
    assert_eq!(cert_login(&c, &sim, &pem_header, too_short).await.0, 401);
    let foreign = pki("other_ca_rsa.pem", "demo@plansync.local", 4000);
    let (status, _) = cert_login(
        &c,
        &sim,
        &STANDARD.encode(foreign.leaf_pem.as_bytes()),
        body.clone(),
    )
    .await;
    assert_eq!(status, 401);
    let expired = pki("ca_rsa.pem", "demo@plansync.local", 2001);
    let (status, _) = cert_login(&c, &sim, &STANDARD.encode(&expired.leaf_der), body.clone()).await;
    assert_eq!(status, 401);
    let stranger = pki("ca_rsa.pem", "nobody@example.com", 4000);
    let (status, _) =
        cert_login(&c, &sim, &STANDARD.encode(&stranger.leaf_der), body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(cert_login(&c, &sim, "not base64 !", body).await.0, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn refresh_validate_logout() {
    let sim = anaplan_sim(config()).await;
    let c = client();
    let token = login(&c, &sim).await;
    let url = |p: &str| format!("{}/token/{p}", sim.auth_url());

    let resp = c
        .post(url("refresh"))
        .header("Authorization", auth(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["statusMessage"], "Token refreshed");
    assert_eq!(body["tokenInfo"]["tokenValue"], token.as_str());

    let resp = c
        .get(url("validate"))
        .header("Authorization", auth(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["statusMessage"], "Token validated");
    assert_eq!(body["userInfo"]["userId"], "demo@plansync.local");
    assert_eq!(body["userInfo"]["userGuid"].as_str().unwrap().len(), 32);
    assert_eq!(body["userInfo"]["customerGuid"].as_str().unwrap().len(), 32);
    assert!(body["tokenInfo"]["expiresAt"].is_i64());

    let bearer = c
        .get(url("validate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 400);
    let bearer = c
        .post(url("logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 401);

    let resp = c
        .post(url("logout"))
        .header("Authorization", auth(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = c
        .get(url("validate"))
        .header("Authorization", auth(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["status"],
        "FAILURE_BAD_CREDENTIAL"
    );
    let (status, body) = get(&c, &sim, &token, "/users/me").await;
    assert_eq!(status, 401);
    assert_eq!(body["status"]["message"], "Not Authenticated.");
    sim.shutdown().await;
}

#[tokio::test]
async fn tokens_expire_after_their_ttl_and_on_demand() {
    let sim = anaplan_sim(SimConfig {
        token_ttl: Duration::from_secs(1),
        ..config()
    })
    .await;
    let c = client();
    let token = login(&c, &sim).await;
    assert_eq!(get(&c, &sim, &token, "/users/me").await.0, 200);
    let deadline = Instant::now() + LONG;
    let body = loop {
        let (status, body) = get(&c, &sim, &token, "/users/me").await;
        if status == 401 {
            break body;
        }
        assert!(Instant::now() < deadline, "the token never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        body,
        json!({"status": {"code": 401, "message": "Not Authenticated."}})
    );
    let resp = c
        .post(format!("{}/token/refresh", sim.auth_url()))
        .header("Authorization", auth(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    sim.shutdown().await;

    // Forced expiry, over the admin endpoint.
    let sim = anaplan_sim(config()).await;
    let token = login(&c, &sim).await;
    assert_eq!(get(&c, &sim, &token, "/users/me").await.0, 200);
    let resp = c
        .post(format!("{}/__sim/tokens/expire", sim.base_url()))
        .header("X-Sim-Token", sim.hooks_token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["expired"], 1);
    assert_eq!(get(&c, &sim, &token, "/users/me").await.0, 401);
    sim.shutdown().await;
}

// ---------------------------------------------------------------- transactional

#[tokio::test]
async fn structure_paging_and_both_path_forms() {
    let sim = anaplan_sim(config()).await;
    let c = client();
    let t = login(&c, &sim).await;

    let (status, body) = get(&c, &sim, &t, "/workspaces?tenantDetails=true").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], json!({"code": 200, "message": "Success"}));
    assert_eq!(body["meta"]["paging"]["totalSize"], 1);
    let ws = &body["workspaces"][0];
    assert_eq!(ws["id"], WS);
    assert!(ws["currentSize"].is_u64() && ws["sizeAllowance"].is_u64());

    let (_, body) = get(&c, &sim, &t, "/models?modelDetails=true").await;
    let m = &body["models"][0];
    assert_eq!(m["id"], MODEL);
    for key in [
        "activeState",
        "lastSavedSerialNumber",
        "lastModifiedByUserGuid",
        "memoryUsage",
        "currentWorkspaceId",
        "currentWorkspaceName",
        "modelUrl",
        "categoryValues",
        "isoCreationDate",
        "lastModified",
    ] {
        assert!(m.get(key).is_some(), "{key} missing: {m}");
    }
    let (_, body) = get(&c, &sim, &t, &format!("/workspaces/{WS}/models")).await;
    assert_eq!(body["models"][0]["id"], MODEL);
    let (_, body) = get(&c, &sim, &t, &format!("/models/{MODEL}?modelDetails=true")).await;
    assert_eq!(body["model"]["modelTransactionRunning"], false);
    let (status, _) = get(&c, &sim, &t, &format!("/workspaces/{WS}/models/{MODEL}")).await;
    assert_eq!(status, 405);

    // Paging: four lists, two from offset 1.
    let (_, all) = get(&c, &sim, &t, &model_path("/lists")).await;
    assert_eq!(all["meta"]["paging"]["totalSize"], 4);
    let (status, page) = get(&c, &sim, &t, &model_path("/lists?limit=2&offset=1")).await;
    assert_eq!(status, 200);
    assert_eq!(page["meta"]["paging"]["currentPageSize"], 2);
    assert_eq!(page["meta"]["paging"]["totalSize"], 4);
    assert_eq!(page["meta"]["paging"]["offset"], 1);
    assert!(
        page["meta"]["paging"]["next"]
            .as_str()
            .unwrap()
            .contains("offset=3")
    );
    assert_eq!(page["lists"][0], all["lists"][1]);
    assert_eq!(page["lists"][0]["id"].as_str().unwrap().len(), 12);
    assert!(page["lists"][0]["id"].as_str().unwrap().starts_with("101"));
    let (_, short) = get(
        &c,
        &sim,
        &t,
        &format!("/models/{MODEL}/lists?limit=2&offset=1"),
    )
    .await;
    assert_eq!(short["lists"], page["lists"]);
    // Past the end: the empty collection drops its key.
    let (_, empty) = get(&c, &sim, &t, &model_path("/lists?offset=10")).await;
    assert!(empty.get("lists").is_none(), "{empty}");
    assert_eq!(
        get(&c, &sim, &t, &model_path("/lists?limit=x")).await.0,
        400
    );

    // Modules, line items, views, both forms.
    let (_, mods) = get(&c, &sim, &t, &format!("/models/{MODEL}/modules")).await;
    let opp = mods["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == OPP_MODULE)
        .unwrap();
    let opp_id = opp["id"].as_str().unwrap();
    assert!(opp_id.starts_with("102"));
    let (_, lis) = get(
        &c,
        &sim,
        &t,
        &format!("/models/{MODEL}/modules/{opp_id}/lineItems?includeAll=true"),
    )
    .await;
    let items = lis["items"].as_array().unwrap();
    assert_eq!(items.len(), 8);
    let weighted = items
        .iter()
        .find(|i| i["name"] == "Weighted Amount")
        .unwrap();
    assert_eq!(weighted["formula"], "Amount * Probability / 100");
    assert_eq!(weighted["formatMetadata"]["dataType"], "NUMBER");
    let stage = items.iter().find(|i| i["name"] == "Stage").unwrap();
    assert_eq!(stage["formatMetadata"]["dataType"], "ENTITY");
    let (_, all_lis) = get(&c, &sim, &t, &model_path("/lineItems")).await;
    assert_eq!(all_lis["items"].as_array().unwrap().len(), 12);
    assert!(all_lis["items"][0].get("formula").is_none());
    let (_, views) = get(&c, &sim, &t, &model_path("/views")).await;
    let v = views["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == opp_id)
        .unwrap();
    assert_eq!(v["moduleId"], opp_id);
    let (_, view) = get(&c, &sim, &t, &format!("/models/{MODEL}/views/{opp_id}")).await;
    assert_eq!(view["viewName"], OPP_MODULE);
    assert_eq!(view["rows"][0]["name"], "Opportunities");

    // List metadata and the lookup by codes.
    let opp_list = all["lists"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "Opportunities")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, meta) = get(&c, &sim, &t, &model_path(&format!("/lists/{opp_list}"))).await;
    assert_eq!(meta["metadata"]["itemCount"], 4);
    assert_eq!(
        meta["metadata"]["properties"][0]["name"],
        "Opportunity Name"
    );
    let (_, found) = send(
        &c,
        &sim,
        &t,
        reqwest::Method::POST,
        &format!("/models/{MODEL}/dimensions/{opp_list}/items"),
        json!({"codes": ["0065g0000000003AAA", "nope"], "names": null}),
    )
    .await;
    assert_eq!(found["items"][0]["name"], "OPP-0003");
    assert_eq!(found["items"].as_array().unwrap().len(), 1);

    // Unknown things: Anaplan's 404 body.
    let (status, body) = get(
        &c,
        &sim,
        &t,
        "/models/00000000000000000000000000000000/modules",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["status"], json!({"code": 404, "message": "Not Found"}));
    assert_eq!(
        body["path"],
        "/2/0/models/00000000000000000000000000000000/modules"
    );
    assert!(body["timestamp"].is_string());
    let (status, body) = get(
        &c,
        &sim,
        &t,
        &format!("/workspaces/{WS}/models/{MODEL}/nothing"),
    )
    .await;
    assert_eq!(
        (status, body["status"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!(404))
    );

    let resp = c
        .get(format!("{}/models/{MODEL}/status", sim.api_url()))
        .header("Authorization", auth(&t))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["requestStatus"]["currentStep"], "Open");
    assert_eq!(body["requestStatus"]["progress"], -1.0);
    assert!(body.get("status").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn list_items_add_update_delete_with_partial_failures() {
    let sim = anaplan_sim(config()).await;
    let c = client();
    let t = login(&c, &sim).await;
    let list = id_of(&c, &sim, &t, "lists", "Opportunities").await;
    let items = format!("/models/{MODEL}/lists/{list}/items");
    let post = reqwest::Method::POST;

    let (status, body) = send(&c, &sim, &t, post.clone(), &format!("{items}?action=add"), json!({"items": [
        {"name": "OPP-0100", "code": "006000000000100AAA", "properties": {"Opportunity Name": "Wayne deal"}},
        {"name": "OPP-0001", "code": "006000000000101AAA"},
        {"code": "006000000000102AAA"},
        {"name": "OPP-0103", "code": "006000000000103AAA", "properties": {"Colour": "red"}},
    ]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["added"].clone(),
            body["ignored"].clone(),
            body["total"].clone()
        ),
        (json!(1), json!(3), json!(4))
    );
    let failures = body["failures"].as_array().unwrap();
    assert_eq!(
        failures
            .iter()
            .map(|f| f["requestIndex"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(failures[1]["failureType"], "INCOMPLETE_DATA");
    assert_eq!(failures[2]["failureType"], "INCORRECT_FORMAT");
    assert!(failures[0]["failureMessageDetails"].is_string());

    // All added: no failures key.
    let (_, body) = send(
        &c,
        &sim,
        &t,
        post.clone(),
        &format!("{items}?action=add"),
        json!({"items": [{"name": "OPP-0200", "code": "C200"}]}),
    )
    .await;
    assert_eq!(body["added"], 1);
    assert!(body.get("failures").is_none(), "{body}");

    // Update by code (a rename and a property), by name of an item that has a code (refused).
    let (_, body) = send(&c, &sim, &t, reqwest::Method::PUT, &items, json!({"items": [
        {"code": "006000000000100AAA", "name": "OPP-0100-R", "properties": {"Opportunity Name": "Wayne renewal"}},
        {"name": "OPP-0002", "properties": {"Opportunity Name": "x"}},
        {"code": "does-not-exist", "properties": {"Opportunity Name": "x"}},
    ]})).await;
    assert_eq!(
        (
            body["updated"].clone(),
            body["ignored"].clone(),
            body["total"].clone()
        ),
        (json!(1), json!(2), json!(3))
    );
    assert_eq!(body["failures"][0]["requestIndex"], 1);
    let snap = sim.list_items(MODEL, "Opportunities").unwrap();
    let renamed = snap
        .iter()
        .find(|i| i.code.as_deref() == Some("006000000000100AAA"))
        .unwrap();
    assert_eq!(renamed.name, "OPP-0100-R");
    assert_eq!(renamed.properties["Opportunity Name"], "Wayne renewal");

    // GET with includeAll, paging, and CSV.
    let (_, body) = get(&c, &sim, &t, &format!("{items}?includeAll=true")).await;
    let listed = body["listItems"].as_array().unwrap();
    assert_eq!(listed.len(), 6);
    assert_eq!(body["meta"]["paging"]["totalSize"], 6);
    let one = listed
        .iter()
        .find(|i| i["code"] == "006000000000100AAA")
        .unwrap();
    assert_eq!(one["properties"]["Opportunity Name"], "Wayne renewal");
    let (_, page) = get(&c, &sim, &t, &format!("{items}?limit=3&offset=5")).await;
    assert_eq!(page["listItems"].as_array().unwrap().len(), 1);
    assert!(page["listItems"][0].get("properties").is_none());
    let csv = c
        .get(format!("{}{items}", sim.api_url()))
        .header("Authorization", auth(&t))
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        "Opportunities,Code,Parent,Opportunity Name"
    );
    assert!(
        text.contains("OPP-0100-R,006000000000100AAA,,Wayne renewal"),
        "{text}"
    );

    // Delete by code and by id, one unknown.
    let id = one["id"].as_str().unwrap();
    let (_, body) = send(
        &c,
        &sim,
        &t,
        post.clone(),
        &format!("{items}?action=delete"),
        json!({"items": [{"code": "C200"}, {"code": "nope"}, {"id": id}]}),
    )
    .await;
    assert_eq!(body["deleted"], 2);
    assert_eq!(body["failures"][0]["requestIndex"], 1);
    assert_eq!(sim.list_items(MODEL, "Opportunities").unwrap().len(), 4);
    let (status, _) = send(&c, &sim, &t, post, &items, json!({"items": []})).await;
    assert_eq!(status, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn cell_writes_report_calculated_and_invalid_cells_per_cell() {
    let sim = anaplan_sim(config()).await;
    let c = client();
    let t = login(&c, &sim).await;
    let module = id_of(&c, &sim, &t, "modules", OPP_MODULE).await;
    let list = id_of(&c, &sim, &t, "lists", "Opportunities").await;
    let (_, lis) = get(
        &c,
        &sim,
        &t,
        &format!("/models/{MODEL}/modules/{module}/lineItems"),
    )
    .await;
    let li_id = |name: &str| {
        lis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let amount_id: u64 = li_id("Amount").parse().unwrap();
    let (_, items) = get(&c, &sim, &t, &format!("/models/{MODEL}/lists/{list}/items")).await;
    let item3 = items["listItems"][2]["id"].as_str().unwrap().to_string();
    let body = json!([
        {"lineItemName": "Amount", "dimensions": [{"dimensionName": "Opportunities", "itemCode": "0065g0000000001AAA"}], "value": 130000},
        {"lineItemName": "Weighted Amount", "dimensions": [{"dimensionName": "Opportunities", "itemCode": "0065g0000000001AAA"}], "value": 5},
        {"lineItemName": "Amount", "dimensions": [{"dimensionName": "Opportunities", "itemCode": "0065g0000000002AAA"}], "value": "lots"},
        {"lineItemName": "Amount", "dimensions": [{"dimensionName": "Opportunities", "itemCode": "nope"}], "value": 1},
        // IDs as JSON numbers, as the Python SDK sends them.
        {"lineItemId": amount_id, "dimensions": [{"dimensionId": list.parse::<u64>().unwrap(), "itemId": item3}], "value": "45000.5"},
        {"lineItemName": "Stage", "dimensions": [{"dimensionName": "Opportunities", "itemName": "OPP-0003"}], "value": "Won"},
        {"lineItemName": "Approved", "dimensions": [{"dimensionName": "Opportunities", "itemName": "OPP-0003"}], "value": true},
        {"lineItemName": "Close Date", "dimensions": [{"dimensionName": "Opportunities", "itemName": "OPP-0003"}], "value": "31/12/2026"},
    ]);
    let (status, resp) = send(
        &c,
        &sim,
        &t,
        reqwest::Method::POST,
        &format!("/models/{MODEL}/modules/{module}/data"),
        body,
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["numberOfCellsChanged"], 4);
    let failures = resp["failures"].as_array().unwrap();
    let summary: Vec<(u64, &str)> = failures
        .iter()
        .map(|f| {
            (
                f["requestIndex"].as_u64().unwrap(),
                f["failureType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "cellIsCalculated"),
            (2, "cellIsInvalid"),
            (3, "cellIsInvalid"),
            (7, "cellIsInvalid")
        ]
    );

    let cells = sim.cells(MODEL, OPP_MODULE).unwrap();
    assert_eq!(
        cells["0065g0000000001AAA"]["Amount"],
        CellValue::Number(130000.0)
    );
    assert_eq!(
        cells["0065g0000000001AAA"]["Weighted Amount"],
        CellValue::Number(52000.0)
    );
    assert_eq!(
        cells["0065g0000000002AAA"]["Amount"],
        CellValue::Number(480000.0)
    );
    assert_eq!(
        cells["0065g0000000003AAA"]["Amount"],
        CellValue::Number(45000.5)
    );
    assert_eq!(
        cells["0065g0000000003AAA"]["Stage"],
        CellValue::Item("Won".into())
    );
    assert_eq!(
        cells["0065g0000000003AAA"]["Approved"],
        CellValue::Boolean(true)
    );

    // All written: only the count.
    let (_, resp) = send(&c, &sim, &t, reqwest::Method::POST, &format!("/workspaces/{WS}/models/{MODEL}/modules/{module}/data"),
        json!([{"lineItemName": "CRM Deleted", "dimensions": [{"dimensionName": "Opportunities", "itemCode": "0065g0000000004AAA"}], "value": "true"}])).await;
    assert_eq!(resp["numberOfCellsChanged"], 1);
    assert!(resp.get("failures").is_none(), "{resp}");
    let (status, _) = send(
        &c,
        &sim,
        &t,
        reqwest::Method::POST,
        &format!("/models/{MODEL}/modules/{module}/data"),
        json!({"not": "an array"}),
    )
    .await;
    assert_eq!(status, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn cell_writes_are_limited_to_100000_cells() {
    let sim = anaplan_sim(config()).await;
    let c = client();
    let t = login(&c, &sim).await;
    let module = id_of(&c, &sim, &t, "modules", OPP_MODULE).await;
    let cell = |i: usize| json!({"lineItemName": "Forecast Override", "dimensions": [{"dimensionName": "Opportunities", "itemCode": format!("0065g000000000{}AAA", 1 + i % 4)}], "value": i});
    let path = format!("/models/{MODEL}/modules/{module}/data");
    let over: Vec<Value> = (0..100_001).map(cell).collect();
    let (status, body) = send(
        &c,
        &sim,
        &t,
        reqwest::Method::POST,
        &path,
        Value::Array(over),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["status"]["code"], 400);
    assert_eq!(
        sim.cells(MODEL, OPP_MODULE).unwrap()["0065g0000000001AAA"].get("Forecast Override"),
        None
    );
    let limit: Vec<Value> = (0..100_000).map(cell).collect();
    let (status, body) = send(
        &c,
        &sim,
        &t,
        reqwest::Method::POST,
        &path,
        Value::Array(limit),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["numberOfCellsChanged"], 100_000);
    // The last write to each item wins.
    assert_eq!(
        sim.cells(MODEL, OPP_MODULE).unwrap()["0065g0000000001AAA"]["Forecast Override"],
        CellValue::Number(99_996.0)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn view_data_reads_as_json_and_csv() {
    let sim = anaplan_sim(config()).await;
    let c = client();
    let t = login(&c, &sim).await;
    let module = id_of(&c, &sim, &t, "modules", OPP_MODULE).await;
    let url = format!("{}/models/{MODEL}/views/{module}/data", sim.api_url());

    let resp = c
        .get(format!("{url}?format=v1"))
        .header("Authorization", auth(&t))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let cols: Vec<&str> = body["columnCoordinates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap())
        .collect();
    assert_eq!(
        cols,
        vec![
            "Amount",
            "Stage",
            "Close Date",
            "Forecast Override",
            "Probability",
            "Approved",
            "CRM Deleted",
            "Weighted Amount"
        ]
    );
    let row = &body["rows"][1];
    assert_eq!(row["rowCoordinates"][0], "OPP-0002");
    assert_eq!(
        row["cells"],
        json!([
            "480000",
            "Negotiation",
            "2027-01-22",
            "450000",
            "70",
            "false",
            "false",
            "336000"
        ])
    );
    assert_eq!(body["rows"][0]["cells"][3], "0");
    // The closed-won deal is the one a planner approved.
    assert_eq!(body["rows"][3]["rowCoordinates"][0], "OPP-0004");
    assert_eq!(body["rows"][3]["cells"][5], "true");

    let resp = c
        .get(&url)
        .header("Authorization", auth(&t))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["status"]["message"],
        "Mandatory query parameter 'format' is missing"
    );

    let resp = c
        .get(&url)
        .header("Authorization", auth(&t))
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        ",Amount,Stage,Close Date,Forecast Override,Probability,Approved,CRM Deleted,Weighted Amount"
    );
    assert_eq!(
        lines.next().unwrap(),
        "OPP-0001,125000,Proposal,2026-12-18,0,40,false,false,50000"
    );

    // A saved view shows its own line items; a page selector the view lacks is refused.
    let (_, views) = get(
        &c,
        &sim,
        &t,
        &format!("/models/{MODEL}/modules/{module}/views"),
    )
    .await;
    let saved = views["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "OPP01 Forecast Review")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = c
        .get(format!(
            "{}/models/{MODEL}/views/{saved}/data?format=v1",
            sim.api_url()
        ))
        .header("Authorization", auth(&t))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["columnCoordinates"],
        json!([["Amount"], ["Forecast Override"], ["Approved"]])
    );
    let resp = c
        .get(format!("{url}?pages=101000000000:300000000000"))
        .header("Authorization", auth(&t))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    sim.shutdown().await;
}

// ---------------------------------------------------------------- bulk

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn bulk_upload_with_gzip_chunks_then_import_with_a_failure_dump() {
    let sim = anaplan_sim(config()).await;
    let c = client();
    let t = login(&c, &sim).await;
    let (_, imports) = get(&c, &sim, &t, &model_path("/imports")).await;
    let imp = imports["imports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "OPP01 Opportunity Data from opportunities.csv")
        .unwrap()
        .clone();
    assert_eq!(imp["importType"], "MODULE_DATA");
    let (imp_id, file) = (
        imp["id"].as_str().unwrap().to_string(),
        imp["importDataSourceId"].as_str().unwrap().to_string(),
    );
    assert!(file.starts_with("113") && imp_id.starts_with("112"));
    let (_, meta) = get(&c, &sim, &t, &model_path(&format!("/imports/{imp_id}"))).await;
    assert_eq!(
        meta["importMetadata"]["source"]["headerNames"][0],
        "Opportunities"
    );

    let (status, body) = send(
        &c,
        &sim,
        &t,
        reqwest::Method::POST,
        &model_path(&format!("/files/{file}")),
        json!({"chunkCount": -1}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["file"]["id"], file.as_str());
    assert_eq!(body["file"]["chunkCount"], -1);
    let part0 = "Code,Amount,Stage,Probability\n0065g0000000001AAA,200000,Won,100\n";
    let part1 = "0065g0000000002AAA,not a number,Won,90\nUNKNOWN,1,Won,1\n0065g0000000003AAA,77000,Proposal,35\n";
    let put = |n: u32, body: Vec<u8>, ct: &'static str| {
        c.put(format!(
            "{}{}",
            sim.api_url(),
            model_path(&format!("/files/{file}/chunks/{n}"))
        ))
        .header("Authorization", auth(&t))
        .header("Content-Type", ct)
        .body(body)
        .send()
    };
    assert_eq!(
        put(0, gzip(part0.as_bytes()), "application/x-gzip")
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        put(1, part1.as_bytes().to_vec(), "application/octet-stream")
            .await
            .unwrap()
            .status(),
        204
    );
    let (status, body) = send(
        &c,
        &sim,
        &t,
        reqwest::Method::POST,
        &model_path(&format!("/files/{file}/complete")),
        json!({"id": file, "chunkCount": -1}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["file"]["chunkCount"], 2);
    let whole = c
        .get(format!(
            "{}{}",
            sim.api_url(),
            model_path(&format!("/files/{file}"))
        ))
        .header("Authorization", auth(&t))
        .send()
        .await
        .unwrap();
    assert_eq!(whole.text().await.unwrap(), format!("{part0}{part1}"));
    let (_, chunks) = get(&c, &sim, &t, &model_path(&format!("/files/{file}/chunks"))).await;
    assert_eq!(
        chunks["chunks"],
        json!([{"id": "0", "name": "Chunk 0"}, {"id": "1", "name": "Chunk 1"}])
    );

    let task = start_task(&c, &sim, &t, "imports", &imp_id).await;
    let done = wait_task(&c, &sim, &t, "imports", &imp_id, &task).await;
    let result = &done["result"];
    assert_eq!(result["successful"], false);
    assert_eq!(result["failureDumpAvailable"], true);
    assert_eq!(result["objectId"], imp_id.as_str());
    assert_eq!(result["details"][0]["type"], "hierarchyRowsProcessed");
    assert_eq!(detail_value(&result["details"], "successRowCount"), "2");
    assert_eq!(detail_value(&result["details"], "failedCount"), "2");
    let cells = sim.cells(MODEL, OPP_MODULE).unwrap();
    assert_eq!(
        cells["0065g0000000001AAA"]["Amount"],
        CellValue::Number(200000.0)
    );
    assert_eq!(
        cells["0065g0000000001AAA"]["Weighted Amount"],
        CellValue::Number(200000.0)
    );
    assert_eq!(
        cells["0065g0000000003AAA"]["Stage"],
        CellValue::Item("Proposal".into())
    );

    let dump_url = format!(
        "{}{}",
        sim.api_url(),
        model_path(&format!("/imports/{imp_id}/tasks/{task}/dump"))
    );
    let dump = c
        .get(&dump_url)
        .header("Authorization", auth(&t))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = dump.lines().collect();
    assert_eq!(
        lines[0],
        "_Status_,Code,Amount,Stage,Probability,_Line_,_Error_1_"
    );
    assert!(
        lines[1].starts_with("E,0065g0000000002AAA,not a number,Won,90,3,"),
        "{dump}"
    );
    assert!(
        lines[2].starts_with("E,UNKNOWN,1,Won,1,4,Item not located in Opportunities list: UNKNOWN"),
        "{dump}"
    );
    let (_, dchunks) = get(
        &c,
        &sim,
        &t,
        &model_path(&format!("/imports/{imp_id}/tasks/{task}/dump/chunks")),
    )
    .await;
    assert_eq!(dchunks["chunks"][0]["id"], "0");
    let chunk0 = c
        .get(format!("{dump_url}/chunks/0"))
        .header("Authorization", auth(&t))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(chunk0, dump);

    // Task list; an unknown file ID gets a new private file with an ID of its own.
    let (_, tasks) = get(
        &c,
        &sim,
        &t,
        &model_path(&format!("/imports/{imp_id}/tasks")),
    )
    .await;
    assert_eq!(tasks["tasks"][0]["taskId"], task.as_str());
    let (_, created) = send(
        &c,
        &sim,
        &t,
        reqwest::Method::POST,
        &model_path("/files/113999999999"),
        json!({"chunkCount": 1}),
    )
    .await;
    assert_ne!(created["file"]["id"], "113999999999");
    assert_eq!(created["file"]["name"], "113999999999");
    let (_, tasks) = get(&c, &sim, &t, &model_path("/imports/112999999999/tasks")).await;
    assert!(tasks.get("tasks").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn exports_are_generated_at_run_time_and_processes_nest_results() {
    let sim = anaplan_sim(config()).await;
    let c = client();
    let t = login(&c, &sim).await;
    let module = id_of(&c, &sim, &t, "modules", OPP_MODULE).await;
    send(&c, &sim, &t, reqwest::Method::POST, &format!("/models/{MODEL}/modules/{module}/data"),
        json!([{"lineItemName": "Forecast Override", "dimensions": [{"dimensionName": "Opportunities", "itemCode": "0065g0000000004AAA"}], "value": 875000}])).await;
    let (_, exports) = get(&c, &sim, &t, &model_path("/exports")).await;
    let ex = &exports["exports"][0];
    assert_eq!(ex["exportType"], "TABULAR_MULTI_COLUMN");
    assert!(ex["exportFormat"].is_string() && ex["layout"].is_string());
    let ex_id = ex["id"].as_str().unwrap().to_string();
    assert!(ex_id.starts_with("116"));

    let task = start_task(&c, &sim, &t, "exports", &ex_id).await;
    let done = wait_task(&c, &sim, &t, "exports", &ex_id, &task).await;
    assert_eq!(done["result"]["successful"], true);
    assert_eq!(done["result"]["objectId"], ex_id.as_str());
    let (_, files) = get(&c, &sim, &t, &model_path("/files")).await;
    let f = files["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == ex_id.as_str())
        .unwrap();
    assert_eq!(f["chunkCount"], 1);
    let (_, chunks) = get(&c, &sim, &t, &model_path(&format!("/files/{ex_id}/chunks"))).await;
    assert_eq!(chunks["chunks"][0]["name"], "Chunk 0");
    let csv = c
        .get(format!(
            "{}{}",
            sim.api_url(),
            model_path(&format!("/files/{ex_id}/chunks/0"))
        ))
        .header("Authorization", auth(&t))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("Opportunities,Code,Amount,Stage,"), "{csv}");
    assert!(
        csv.contains(
            "OPP-0004,0065g0000000004AAA,910000,Won,2026-11-30,875000,100,true,false,910000"
        ),
        "{csv}"
    );

    let proc_id = id_of(&c, &sim, &t, "processes", "Load Opportunities").await;
    let (_, meta) = get(&c, &sim, &t, &model_path(&format!("/processes/{proc_id}"))).await;
    assert_eq!(
        meta["processMetadata"]["actions"].as_array().unwrap().len(),
        2
    );
    // Nothing uploaded yet: the first import fails outright and the process stops there.
    let task = start_task(&c, &sim, &t, "processes", &proc_id).await;
    let done = wait_task(&c, &sim, &t, "processes", &proc_id, &task).await;
    assert_eq!(done["result"]["successful"], false);
    assert_eq!(done["result"]["nestedResults"].as_array().unwrap().len(), 1);

    // Upload both sources (whole-file PUT) and run it again: a new item and its cells.
    let (_, imports) = get(&c, &sim, &t, &model_path("/imports")).await;
    let source = |name: &str| {
        imports["imports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()["importDataSourceId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (file, body) in [
        (
            source("Opportunities from opportunities_list.csv"),
            "Name,Code,Opportunity Name\nOPP-0900,006000000000900AAA,Stark upgrade\n",
        ),
        (
            source("OPP01 Opportunity Data from opportunities.csv"),
            "Opportunities,Amount,Close Date\n006000000000900AAA,64000,2027-02-26\n",
        ),
    ] {
        let resp = c
            .put(format!(
                "{}{}",
                sim.api_url(),
                model_path(&format!("/files/{file}"))
            ))
            .header("Authorization", auth(&t))
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }
    let task = start_task(&c, &sim, &t, "processes", &proc_id).await;
    let done = wait_task(&c, &sim, &t, "processes", &proc_id, &task).await;
    assert_eq!(done["result"]["successful"], true, "{done}");
    assert_eq!(done["result"]["objectId"], proc_id.as_str());
    let nested = done["result"]["nestedResults"].as_array().unwrap();
    assert_eq!(nested.len(), 2);
    assert!(
        nested
            .iter()
            .all(|n| n["objectId"].as_str().unwrap().starts_with("112"))
    );
    assert_eq!(
        detail_value(&nested[0]["details"], "successCreateCount"),
        "1"
    );
    let cells = sim.cells(MODEL, OPP_MODULE).unwrap();
    assert_eq!(
        cells["006000000000900AAA"]["Amount"],
        CellValue::Number(64000.0)
    );
    assert_eq!(
        cells["006000000000900AAA"]["Close Date"],
        CellValue::Date(chrono::NaiveDate::from_ymd_opt(2027, 2, 26).unwrap())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn tasks_queue_per_model_and_hold_the_model_lock() {
    let sim = anaplan_sim(SimConfig {
        task_step: Duration::from_millis(1500),
        ..config()
    })
    .await;
    let c = client();
    let t = login(&c, &sim).await;
    let ex_id = id_of(&c, &sim, &t, "exports", "OPP01 Opportunity Data.csv").await;
    let ex2_id = id_of(&c, &sim, &t, "exports", "TER01 Territory Quotas.csv").await;
    let module = id_of(&c, &sim, &t, "modules", OPP_MODULE).await;
    let list = id_of(&c, &sim, &t, "lists", "Opportunities").await;

    let first = start_task(&c, &sim, &t, "exports", &ex_id).await;
    let second = start_task(&c, &sim, &t, "exports", &ex2_id).await;
    // Wait for the first to start; the second must still be queued while it runs.
    let deadline = Instant::now() + LONG;
    loop {
        let (_, body) = get(
            &c,
            &sim,
            &t,
            &model_path(&format!("/exports/{ex_id}/tasks/{first}")),
        )
        .await;
        if body["task"]["taskState"] == "IN_PROGRESS" {
            assert!(body["task"].get("result").is_none());
            break;
        }
        assert_eq!(body["task"]["taskState"], "NOT_STARTED");
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, body) = get(
        &c,
        &sim,
        &t,
        &model_path(&format!("/exports/{ex2_id}/tasks/{second}")),
    )
    .await;
    assert_eq!(body["task"]["taskState"], "NOT_STARTED");
    let (_, status) = get(&c, &sim, &t, &format!("/models/{MODEL}/status")).await;
    assert_eq!(status["requestStatus"]["taskId"], first.as_str());

    // Writes while the model is locked: 409 with the error body; reads are served.
    let (code, body) = send(&c, &sim, &t, reqwest::Method::POST, &format!("/models/{MODEL}/modules/{module}/data"),
        json!([{"lineItemName": "Amount", "dimensions": [{"dimensionName": "Opportunities", "itemCode": "0065g0000000001AAA"}], "value": 1}])).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["status"]["code"], 409);
    assert!(body["path"].as_str().unwrap().ends_with("/data"));
    let (code, _) = send(
        &c,
        &sim,
        &t,
        reqwest::Method::POST,
        &format!("/models/{MODEL}/lists/{list}/items?action=add"),
        json!({"items": [{"name": "X", "code": "X"}]}),
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(
        get(&c, &sim, &t, &format!("/models/{MODEL}/lists/{list}/items"))
            .await
            .0,
        200
    );

    assert_eq!(
        wait_task(&c, &sim, &t, "exports", &ex_id, &first).await["taskState"],
        "COMPLETE"
    );
    assert_eq!(
        wait_task(&c, &sim, &t, "exports", &ex2_id, &second).await["taskState"],
        "COMPLETE"
    );
    let (code, body) = send(&c, &sim, &t, reqwest::Method::POST, &format!("/models/{MODEL}/modules/{module}/data"),
        json!([{"lineItemName": "Amount", "dimensions": [{"dimensionName": "Opportunities", "itemCode": "0065g0000000001AAA"}], "value": 1}])).await;
    assert_eq!(
        (code, body["numberOfCellsChanged"].clone()),
        (StatusCode::OK, json!(1))
    );

    // A queued task can be cancelled before it runs.
    let a = start_task(&c, &sim, &t, "exports", &ex_id).await;
    let b = start_task(&c, &sim, &t, "exports", &ex2_id).await;
    let (code, body) = send(
        &c,
        &sim,
        &t,
        reqwest::Method::DELETE,
        &model_path(&format!("/exports/{ex2_id}/tasks/{b}")),
        json!({}),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body["task"]["taskState"], "CANCELLED");
    assert_eq!(
        wait_task(&c, &sim, &t, "exports", &ex_id, &a).await["taskState"],
        "COMPLETE"
    );
    sim.shutdown().await;
}

// ---------------------------------------------------------------- limits and faults

#[tokio::test]
async fn the_rate_limit_answers_429_once_the_bucket_is_empty() {
    let sim = anaplan_sim(SimConfig {
        rate_per_minute: 5,
        ..config()
    })
    .await;
    let c = client();
    let t = login(&c, &sim).await;
    for _ in 0..5 {
        assert_eq!(get(&c, &sim, &t, "/users/me").await.0, 200);
    }
    let (status, body) = get(&c, &sim, &t, "/users/me").await;
    assert_eq!(status, 429);
    assert_eq!(body["status"]["code"], 429);
    // Auth calls are not limited.
    login(&c, &sim).await;
    assert_eq!(sim.request_counts().rate_limited, 1);
    let resp = c
        .put(format!("{}/__sim/rate-limit", sim.base_url()))
        .header("X-Sim-Token", sim.hooks_token())
        .json(&json!({"per_minute": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(get(&c, &sim, &t, "/users/me").await.0, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_5xx_and_dropped_connections() {
    let sim = anaplan_sim(config()).await;
    let c = client();
    let t = login(&c, &sim).await;
    sim.set_faults(Faults {
        fail_next: 1,
        error_status: 502,
        ..Faults::default()
    });
    let (status, body) = get(&c, &sim, &t, "/workspaces").await;
    assert_eq!(status, 502);
    assert_eq!(body["status"]["code"], 502);
    assert_eq!(get(&c, &sim, &t, "/workspaces").await.0, 200);

    // Over the admin endpoint: drop the next call.
    let resp = c
        .put(format!("{}/__sim/faults", sim.base_url()))
        .header("X-Sim-Token", sim.hooks_token())
        .json(&json!({"drop_next": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let err = c
        .get(format!("{}/workspaces", sim.api_url()))
        .header("Authorization", auth(&t))
        .send()
        .await
        .expect_err("the connection should be closed without a response");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert_eq!(get(&c, &sim, &t, "/workspaces").await.0, 200);

    // Deterministic rates: the same seed fails the same calls.
    let pattern = |sim: &SimHandle| {
        let sim_faults = Faults {
            error_rate: 0.5,
            seed: 7,
            ..Faults::default()
        };
        sim.set_faults(sim_faults);
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        pattern(&sim);
        let mut statuses = Vec::new();
        for _ in 0..12 {
            statuses.push(get(&c, &sim, &t, "/users/me").await.0.as_u16());
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(
        runs[0].contains(&503) && runs[0].contains(&200),
        "{:?}",
        runs[0]
    );
    let counts = sim.request_counts();
    assert_eq!(counts.dropped, 1);
    assert!(counts.faulted >= 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_request_log_counts_calls_by_kind() {
    let sim = anaplan_sim(config()).await;
    let c = client();
    let t = login(&c, &sim).await;
    get(&c, &sim, &t, "/workspaces").await;
    get(&c, &sim, &t, &model_path("/modules")).await;
    get(&c, &sim, &t, &model_path("/files")).await;
    get(&c, &sim, &t, &model_path("/nothing-here")).await;
    let counts = sim.request_counts();
    assert_eq!(
        (counts.auth, counts.transactional, counts.bulk, counts.total),
        (1, 3, 1, 5)
    );
    let log = sim.request_log();
    assert_eq!(log[0].path, "/token/authenticate");
    assert_eq!(log[0].status, 201);
    assert_eq!(log[4].status, 404);
    let resp: Value = c
        .get(format!("{}/__sim/requests", sim.base_url()))
        .header("X-Sim-Token", sim.hooks_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["counts"]["bulk"], 1);
    assert_eq!(resp["entries"][3]["kind"], "bulk");
    let cells: Value = c
        .get(format!(
            "{}/__sim/models/{MODEL}/modules/{OPP_MODULE}/cells",
            sim.base_url()
        ))
        .header("X-Sim-Token", sim.hooks_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cells["0065g0000000004AAA"]["Approved"], true);
    assert_eq!(cells["0065g0000000002AAA"]["Stage"], "Negotiation");
    let items: Value = c
        .get(format!(
            "{}/__sim/models/{MODEL}/lists/Territories/items",
            sim.base_url()
        ))
        .header("X-Sim-Token", sim.hooks_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(items[1]["properties"]["Display Name"], "UK & Ireland");
    // Admin calls are not logged.
    assert_eq!(sim.request_counts().total, 5);
    let resp = c
        .delete(format!("{}/__sim/requests", sim.base_url()))
        .header("X-Sim-Token", sim.hooks_token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(sim.request_counts().total, 0);
    sim.shutdown().await;
}

// ---------------------------------------------------------------- the CLI

fn plansync() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_plansync"))
}

#[test]
fn the_cli_refuses_bad_flags_with_one_line_naming_them() {
    let out = plansync()
        .args(["sim", "anaplan", "--user", "demo@plansync.local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "error: --user demo@plansync.local: expected EMAIL:PASSWORD"
    );
    let out = plansync()
        .args(["sim", "anaplan", "--seed", "/nonexistent/seed.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/seed.toml"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[list]]\nname = 3\n").unwrap();
    let out = plansync()
        .args(["sim", "anaplan", "--seed"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("bad.toml"), "{err}");
}

#[tokio::test]
async fn the_cli_serves_the_simulator_and_prints_its_urls() {
    use std::io::BufRead;
    let mut child = plansync()
        .args([
            "sim",
            "anaplan",
            "--port",
            "0",
            "--user",
            "ops@example.com:s3cret",
            "--rate-per-minute",
            "0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let base = lines.next().unwrap().unwrap();
    let mut rest = Vec::new();
    for _ in 0..4 {
        rest.push(lines.next().unwrap().unwrap());
    }
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert_eq!(rest[1], format!("api:   {base}/2/0"));
    assert!(!rest.iter().any(|l| l.contains("s3cret")));
    let c = client();
    let resp = c
        .post(format!("{base}/token/authenticate"))
        .basic_auth("ops@example.com", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let token = resp.json::<Value>().await.unwrap()["tokenInfo"]["tokenValue"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = c
        .get(format!("{base}/2/0/models/{MODEL}/lists"))
        .header("Authorization", auth(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The admin line shows the hooks' token next to the URL.
    let token_of = |line: &str| {
        line.split("X-Sim-Token: ")
            .nth(1)
            .map(|t| t.trim_end_matches(')').to_string())
    };
    let hooks_token = token_of(&rest[2]).unwrap_or_else(|| panic!("no token in {:?}", rest[2]));
    assert_eq!(hooks_token.len(), 32, "{}", rest[2]);
    let resp = c
        .put(format!("{base}/__sim/faults"))
        .json(&json!({"fail_next": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "no token, no faults");
    let resp = c
        .put(format!("{base}/__sim/faults"))
        .header("X-Sim-Token", &hooks_token)
        .json(&json!({"fail_next": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c
        .get(format!("{base}/2/0/users/me"))
        .header("Authorization", auth(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn get_text(c: &Client, sim: &SimHandle, token: &str, path: &str) -> (StatusCode, String) {
    let resp = c
        .get(format!("{}{path}", sim.api_url()))
        .header("Authorization", auth(token))
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    (resp.status(), resp.text().await.unwrap())
}

#[tokio::test]
async fn read_requests_snapshot_views_and_lists_into_csv_pages() {
    let sim = anaplan_sim(SimConfig {
        max_read: 20,
        read_page_bytes: 120,
        read_request_step: Duration::from_millis(300),
        ..config()
    })
    .await;
    let c = client();
    let t = login(&c, &sim).await;
    let module = id_of(&c, &sim, &t, "modules", OPP_MODULE).await;

    // 4 items × 8 line items is over the configured 20 cells.
    let (status, body) = get(
        &c,
        &sim,
        &t,
        &format!("/models/{MODEL}/views/{module}/data?format=v1"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["status"]["message"], "The view has more than 20 cells");

    let base = model_path(&format!("/views/{module}/readRequests"));
    let (status, body) = send(
        &c,
        &sim,
        &t,
        reqwest::Method::POST,
        &base,
        json!({"exportType": "TABULAR_MULTI_COLUMN"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let created = &body["viewReadRequest"];
    let id = created["requestId"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(created["requestState"], "IN_PROGRESS");
    assert!(
        created["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{base}/{id}"))
    );
    assert_eq!(sim.read_requests(), 1);

    // A second request of the same model waits for the first.
    let (_, second) = send(&c, &sim, &t, reqwest::Method::POST, &base, Value::Null).await;
    assert_eq!(second["viewReadRequest"]["requestState"], "NOT_STARTED");
    let second_id = second["viewReadRequest"]["requestId"]
        .as_str()
        .unwrap()
        .to_string();

    // The snapshot is taken at creation: a later write does not show in it.
    let (status, _) = send(&c, &sim, &t, reqwest::Method::POST, &model_path(&format!("/modules/{module}/data")),
        json!([{"lineItemName": "Amount", "dimensions": [{"dimensionName": "Opportunities", "itemName": "OPP-0001"}], "value": 1}])).await;
    assert_eq!(status, 200);

    let status_path = format!("{base}/{id}");
    let deadline = Instant::now() + LONG;
    let done = loop {
        let (status, body) = get(&c, &sim, &t, &status_path).await;
        assert_eq!(status, 200, "{body}");
        let r = body["viewReadRequest"].clone();
        if r["requestState"] == "COMPLETE" {
            break r;
        }
        assert_eq!(r["successful"], false);
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["successful"], true);
    let pages = done["availablePages"].as_u64().unwrap();
    assert!(pages >= 2, "{done}");
    let mut rows = Vec::new();
    for n in 0..pages {
        let (status, text) = get_text(&c, &sim, &t, &format!("{status_path}/pages/{n}")).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.len() <= 120 || text.lines().count() == 2, "{text}");
        let mut lines = text.lines();
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("Opportunities,Amount,Stage")
        );
        rows.extend(lines.map(str::to_string));
    }
    assert_eq!(rows.len(), 4);
    assert!(
        rows[0].starts_with("OPP-0001,125000,Proposal,2026-12-18"),
        "{}",
        rows[0]
    );

    // Page numbers: not a number, not available.
    let (status, _) = get_text(&c, &sim, &t, &format!("{status_path}/pages/x")).await;
    assert_eq!(status, 400);
    let (status, text) = get_text(&c, &sim, &t, &format!("{status_path}/pages/{pages}")).await;
    assert_eq!(status, 400);
    assert!(text.contains("is not available"), "{text}");
    // The request belongs to its view: another path does not find it.
    let (status, _) = get(
        &c,
        &sim,
        &t,
        &model_path(&format!("/views/1/readRequests/{id}")),
    )
    .await;
    assert_eq!(status, 404);

    // DELETE cancels: the status says so, the pages are gone.
    let (status, body) = send(
        &c,
        &sim,
        &t,
        reqwest::Method::DELETE,
        &status_path,
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["viewReadRequest"]["requestState"], "CANCELLED");
    let (_, body) = get(&c, &sim, &t, &status_path).await;
    assert_eq!(body["viewReadRequest"]["requestState"], "CANCELLED");
    let (status, _) = get_text(&c, &sim, &t, &format!("{status_path}/pages/0")).await;
    assert_eq!(status, 404);
    assert_eq!(sim.read_requests(), 1);
    let (status, _) = send(
        &c,
        &sim,
        &t,
        reqwest::Method::DELETE,
        &format!("/models/{MODEL}/views/{module}/readRequests/{second_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "the workspace-less form serves too");
    assert_eq!(sim.read_requests(), 0);

    // A list read request: one row per item, with ids and properties.
    let list = id_of(&c, &sim, &t, "lists", "Opportunities").await;
    let lbase = model_path(&format!("/lists/{list}/readRequests"));
    let (status, body) = send(&c, &sim, &t, reqwest::Method::POST, &lbase, Value::Null).await;
    assert_eq!(status, 200, "{body}");
    let lid = body["listReadRequest"]["requestId"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + LONG;
    let pages = loop {
        let (_, body) = get(&c, &sim, &t, &format!("{lbase}/{lid}")).await;
        if body["listReadRequest"]["requestState"] == "COMPLETE" {
            break body["listReadRequest"]["availablePages"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, text) = get_text(&c, &sim, &t, &format!("{lbase}/{lid}/pages/0")).await;
    assert_eq!(status, 200);
    assert!(
        text.starts_with("id,name,code,parent,parentId,listId,listName,Opportunity Name\n"),
        "{text}"
    );
    assert!(pages >= 2);
}

#[tokio::test]
async fn read_requests_expire_when_not_accessed() {
    let sim = anaplan_sim(SimConfig {
        read_request_step: Duration::ZERO,
        read_request_ttl: Duration::from_millis(300),
        ..config()
    })
    .await;
    let c = client();
    let t = login(&c, &sim).await;
    let list = id_of(&c, &sim, &t, "lists", "Opportunities").await;
    let base = model_path(&format!("/lists/{list}/readRequests"));
    let (_, body) = send(&c, &sim, &t, reqwest::Method::POST, &base, Value::Null).await;
    assert_eq!(body["listReadRequest"]["requestState"], "COMPLETE");
    let id = body["listReadRequest"]["requestId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sim.read_requests(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim.read_requests(), 0);
    let (status, _) = get(&c, &sim, &t, &format!("{base}/{id}")).await;
    assert_eq!(status, 404);
}
