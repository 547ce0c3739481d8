//! The CRM client and CDC listener against small throwaway servers that script exactly the
//! faults the client must survive. These fakes are not a simulator: each one answers the few
//! requests its test makes, checks their shape, and misbehaves on cue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt, StreamExt};
use plansync::crm::cdc::{
    Backoff, CdcConfig, CdcItem, CdcListener, EventProblem, ProblemKind, ReplayFrom, Transport,
};
use plansync::crm::{
    AuthConfig, CallKind, CrmClient, CrmConfig, CrmError, RecordUpdate, RetryPolicy, WriteOptions,
};
use plansync::secret::Secret;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Shared plumbing

/// Serves `app` on a fresh loopback port until the test ends; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

fn client_credentials() -> AuthConfig {
    AuthConfig::ClientCredentials {
        client_id: "cid".into(),
        client_secret: Secret::new("s3cret"),
    }
}

fn config(login_url: &str, auth: AuthConfig) -> CrmConfig {
    let mut c = CrmConfig::new(login_url, "59.0", auth);
    c.call_client_id = "plansync-test".into();
    c.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    c.request_timeout = Duration::from_secs(10);
    c.bulk_poll_interval = Duration::from_millis(10);
    c
}

/// State of a fake org: which tokens it has issued and what it was asked.
#[derive(Default)]
struct Org {
    /// The instance URL to hand out (filled once the server's port is known).
    instance: Mutex<String>,
    /// Tokens issued so far, in order; the last one is valid unless `reject_all`.
    issued: Mutex<Vec<String>>,
    /// Every token request's form.
    token_forms: Mutex<Vec<Vec<(String, String)>>>,
    /// Requests seen by the API routes: (path, headers of interest, body).
    seen: Mutex<Vec<(String, Option<String>, String)>>,
    /// Scripted failures for the next API calls, popped one per call.
    faults: Mutex<VecDeque<(StatusCode, Value)>>,
}

impl Org {
    fn valid(&self, headers: &HeaderMap) -> bool {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let issued = self.issued.lock().unwrap();
        issued.last().is_some_and(|t| auth == format!("Bearer {t}"))
    }

    fn record(&self, path: &str, headers: &HeaderMap, body: &str) {
        let call_options = headers
            .get("sforce-call-options")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        self.seen
            .lock()
            .unwrap()
            .push((path.to_string(), call_options, body.to_string()));
    }

    /// The common prelude of an API route: session check, then any scripted fault.
    fn gate(&self, headers: &HeaderMap) -> Option<Response> {
        if !self.valid(headers) {
            return Some(
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!([{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}])),
                )
                    .into_response(),
            );
        }
        let fault = self.faults.lock().unwrap().pop_front();
        fault.map(|(status, body)| (status, axum::Json(body)).into_response())
    }
}

async fn token(State(org): State<Arc<Org>>, Form(form): Form<Vec<(String, String)>>) -> Response {
    let pub_pem = include_str!("data/keys/crm_client_rsa.pub.pem");
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    org.token_forms.lock().unwrap().push(form.clone());
    let ok = match get("grant_type").as_str() {
        "client_credentials" => get("client_id") == "cid" && get("client_secret") == "s3cret",
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            verify_jwt(&get("assertion"), pub_pem).is_ok()
        }
        _ => false,
    };
    if !ok {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"error":"invalid_grant","error_description":"authentication failure"}),
            ),
        )
            .into_response();
    }
    let mut issued = org.issued.lock().unwrap();
    let t = format!("00Dtoken!{}", issued.len() + 1);
    issued.push(t.clone());
    let instance = org.instance.lock().unwrap().clone();
    axum::Json(json!({
        "access_token": t, "instance_url": instance,
        "id": "https://login.example/id/00D/005", "token_type": "Bearer",
        "issued_at": "1735689600000", "signature": "x", "scope": "api"
    }))
    .into_response()
}

/// Checks an RS256 JWT bearer assertion the way the CRM does: signature over
/// `header.claims` with the connected app's public key, then the claims.
fn verify_jwt(assertion: &str, public_pem: &str) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    let mut parts = assertion.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not three parts".into());
    };
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err("alg".into());
    }
    let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(public_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    let (_, parsed) = <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<
        x509_parser::error::X509Error,
    >>::from_der(spki.as_ref())
    .map_err(|e| e.to_string())?;
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        parsed.subject_public_key.data.as_ref(),
    );
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())?;
    key.verify(format!("{h}.{c}").as_bytes(), &signature)
        .map_err(|_| "bad signature".to_string())?;
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let now = chrono::Utc::now().timestamp();
    let exp = claims["exp"].as_i64().ok_or("no exp")?;
    if claims["iss"] != "conn-app-key"
        || claims["sub"] != "integration@acme.example"
        || claims["aud"] != "https://login.example"
        || exp <= now
        || exp > now + 180
    {
        return Err(format!("bad claims {claims}"));
    }
    Ok(())
}

async fn query(
    State(org): State<Arc<Org>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let soql = q
        .iter()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    org.record("query", &headers, &soql);
    if let Some(r) = org.gate(&headers) {
        return r;
    }
    let mut response = axum::Json(json!({
        "totalSize": 5, "done": false,
        "nextRecordsUrl": "/services/data/v59.0/query/01gQ-2",
        "records": [
            {"attributes": {"type": "Account", "url": "/x/001A"}, "Id": "001A", "Name": "a"},
            {"attributes": {"type": "Account", "url": "/x/001B"}, "Id": "001B", "Name": "b"}
        ]
    }))
    .into_response();
    response
        .headers_mut()
        .insert("Sforce-Limit-Info", "api-usage=25/5000".parse().unwrap());
    response
}

async fn query_more(
    State(org): State<Arc<Org>>,
    headers: HeaderMap,
    axum::extract::Path(locator): axum::extract::Path<String>,
) -> Response {
    org.record(&format!("query/{locator}"), &headers, "");
    if let Some(r) = org.gate(&headers) {
        return r;
    }
    let body = match locator.as_str() {
        "01gQ-2" => json!({
            "totalSize": 5, "done": false, "nextRecordsUrl": "/services/data/v59.0/query/01gQ-4",
            "records": [
                {"attributes": {"type": "Account"}, "Id": "001C", "Name": "c"},
                {"attributes": {"type": "Account"}, "Id": "001D", "Name": "d"}
            ]
        }),
        "01gQ-4" => json!({
            "totalSize": 5, "done": true,
            "records": [{"attributes": {"type": "Account"}, "Id": "001E", "Name": null}]
        }),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    axum::Json(body).into_response()
}

/// `PATCH composite/sobjects`: fails every record whose `Name` is empty, in request order.
async fn collections(State(org): State<Arc<Org>>, headers: HeaderMap, body: String) -> Response {
    org.record("composite/sobjects", &headers, &body);
    if let Some(r) = org.gate(&headers) {
        return r;
    }
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let records = request["records"].as_array().cloned().unwrap_or_default();
    if records.len() > 200
        || records
            .iter()
            .any(|r| r["attributes"]["type"].is_null() || r["id"].is_null())
    {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let results: Vec<Value> = records
        .iter()
        .map(|r| {
            if r["Name"] == "" {
                json!({"success": false, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                    "message": "Required fields are missing: [Name]", "fields": ["Name"]}]})
            } else {
                json!({"id": r["id"], "success": true, "errors": []})
            }
        })
        .collect();
    axum::Json(Value::Array(results)).into_response()
}

/// A fake org for the REST tests, with its token endpoint and API routes.
async fn rest_org() -> (Arc<Org>, String) {
    let org = Arc::new(Org::default());
    let app = Router::new()
        .route("/services/oauth2/token", post(token))
        .route("/services/data/v59.0/query", get(query))
        .route("/services/data/v59.0/query/{locator}", get(query_more))
        .route(
            "/services/data/v59.0/composite/sobjects",
            patch(collections),
        )
        .route("/services/data/v59.0/jobs/ingest", post(bulk_create))
        .route(
            "/services/data/v59.0/jobs/ingest/{id}/batches",
            put(bulk_upload),
        )
        .route(
            "/services/data/v59.0/jobs/ingest/{id}",
            patch(bulk_close).get(bulk_state),
        )
        .route(
            "/services/data/v59.0/jobs/ingest/{id}/successfulResults/",
            get(bulk_ok),
        )
        .route(
            "/services/data/v59.0/jobs/ingest/{id}/failedResults/",
            get(bulk_failed),
        )
        .with_state(org.clone());
    let url = serve(app).await;
    *org.instance.lock().unwrap() = url.clone();
    (org, url)
}

// ---------------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn client_credentials_are_sent_as_a_form_and_the_token_is_used() {
    let (org, url) = rest_org().await;
    let client = CrmClient::new(config(&url, client_credentials())).unwrap();
    let result = client.query("SELECT Id FROM Account").await.unwrap();
    assert_eq!(result.records.len(), 5);
    let forms = org.token_forms.lock().unwrap().clone();
    assert_eq!(forms.len(), 1);
    assert!(forms[0].contains(&("grant_type".into(), "client_credentials".into())));
    assert!(forms[0].contains(&("client_id".into(), "cid".into())));
    assert!(forms[0].contains(&("client_secret".into(), "s3cret".into())));
    // The debug form of the client names no secret.
    assert!(!format!("{client:?} {:?}", client.config()).contains("s3cret"));
}

#[tokio::test]
async fn the_token_is_never_sent_to_an_instance_off_salesforce_domains() {
    let (org, url) = rest_org().await;
    *org.instance.lock().unwrap() = "https://collector.example".to_string();
    let client = CrmClient::new(config(&url, client_credentials())).unwrap();
    let e = client.query("SELECT Id FROM Account").await.unwrap_err();
    assert!(matches!(e, CrmError::Config(_)), "{e:?}");
    let shown = e.to_string();
    assert!(
        shown.contains("instance_url") && shown.contains("not on a Salesforce domain"),
        "{shown}"
    );
    assert!(org.seen.lock().unwrap().is_empty(), "an API call was made");
    // A login URL off loopback over http:// is refused before anything is sent…
    let e = CrmClient::new(config("http://login.example.com", client_credentials())).unwrap_err();
    assert!(e.to_string().contains("not a loopback address"), "{e}");
    // …unless opted into, and credentials inside the URL never are.
    let mut c = config("http://login.example.com", client_credentials());
    c.allow_insecure_http = true;
    assert!(CrmClient::new(c).is_ok());
    let e = CrmClient::new(config(
        "https://u:pw7@login.example.com",
        client_credentials(),
    ))
    .unwrap_err();
    assert!(!e.to_string().contains("pw7"), "{e}");
}

#[tokio::test]
async fn an_unreadable_token_answer_leaves_nothing_of_the_token_in_the_error() {
    let app = Router::new().route(
        "/services/oauth2/token",
        post(|| async {
            (
                [("content-type", "application/json")],
                // A token of the wrong type: serde's own message would quote it.
                r#"{"access_token":987654321987,"instance_url":"x","token_type":"Bearer"}"#,
            )
        }),
    );
    let url = serve(app).await;
    let client = CrmClient::new(config(&url, client_credentials())).unwrap();
    let e = client.query("SELECT Id FROM Account").await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("token request"), "{shown}");
    assert!(!shown.contains("987654321987"), "{shown}");
}

#[tokio::test]
async fn jwt_bearer_assertion_is_signed_with_the_configured_key() {
    let (org, url) = rest_org().await;
    let auth = AuthConfig::JwtBearer {
        client_id: "conn-app-key".into(),
        username: "integration@acme.example".into(),
        private_key_pem: Secret::new(include_str!("data/keys/crm_client_rsa.pem")),
        audience: Some("https://login.example".into()),
    };
    let client = CrmClient::new(config(&url, auth)).unwrap();
    client.query("SELECT Id FROM Account").await.unwrap();
    let forms = org.token_forms.lock().unwrap().clone();
    assert_eq!(forms[0][0].1, "urn:ietf:params:oauth:grant-type:jwt-bearer");
    // And a wrong key is refused by the same check (so the check can fail).
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256);
    if let Ok(other) = other {
        let bad = AuthConfig::JwtBearer {
            client_id: "conn-app-key".into(),
            username: "integration@acme.example".into(),
            private_key_pem: Secret::new(other.serialize_pem()),
            audience: Some("https://login.example".into()),
        };
        let client = CrmClient::new(config(&url, bad)).unwrap();
        let e = client.query("SELECT Id FROM Account").await.unwrap_err();
        assert!(matches!(e, CrmError::Auth { status: 400, .. }), "{e}");
    } else {
        // rcgen cannot generate RSA keys with ring: tamper with the audience instead.
        let bad = AuthConfig::JwtBearer {
            client_id: "conn-app-key".into(),
            username: "integration@acme.example".into(),
            private_key_pem: Secret::new(include_str!("data/keys/crm_client_rsa.pem")),
            audience: Some("https://evil.example".into()),
        };
        let client = CrmClient::new(config(&url, bad)).unwrap();
        let e = client.query("SELECT Id FROM Account").await.unwrap_err();
        assert!(matches!(e, CrmError::Auth { status: 400, .. }), "{e}");
    }
}

#[tokio::test]
async fn an_expired_session_reauthenticates_and_retries_once() {
    let (org, url) = rest_org().await;
    let client = CrmClient::new(config(&url, client_credentials())).unwrap();
    client.query("SELECT Id FROM Account").await.unwrap();
    // The org revokes the session: the next call gets 401, re-authenticates, and succeeds.
    org.issued.lock().unwrap().push("revoked-elsewhere".into());
    let result = client.query("SELECT Id FROM Account").await.unwrap();
    assert_eq!(result.records.len(), 5);
    let stats = client.stats();
    assert_eq!(stats.reauths, 1);
    assert_eq!(stats.calls_of(CallKind::Auth), 2);

    // A session that is refused even with a fresh token: one re-auth, then the error.
    org.faults.lock().unwrap().extend([
        (
            StatusCode::UNAUTHORIZED,
            json!([{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]),
        ),
        (
            StatusCode::UNAUTHORIZED,
            json!([{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]),
        ),
    ]);
    let e = client.query("SELECT Id FROM Account").await.unwrap_err();
    assert!(
        matches!(&e, CrmError::Api { status: 401, code, .. } if code == "INVALID_SESSION_ID"),
        "{e}"
    );
    assert_eq!(client.stats().reauths, 2);
}

// ---------------------------------------------------------------------------------------------
// Query, retries, limits

#[tokio::test]
async fn query_follows_next_records_url_and_strips_attributes() {
    let (org, url) = rest_org().await;
    let client = CrmClient::new(config(&url, client_credentials())).unwrap();
    let result = client.query("SELECT Id, Name FROM Account").await.unwrap();
    let ids: Vec<_> = result
        .records
        .iter()
        .map(|r| r["Id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["001A", "001B", "001C", "001D", "001E"]);
    assert!(result.records.iter().all(|r| !r.contains_key("attributes")));
    assert_eq!(result.total_size, 5);
    let seen: Vec<String> = org
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.0.clone())
        .collect();
    assert_eq!(seen, ["query", "query/01gQ-2", "query/01gQ-4"]);
    assert_eq!(
        org.seen.lock().unwrap()[0].2,
        "SELECT Id, Name FROM Account"
    );
    let stats = client.stats();
    assert_eq!(stats.calls_of(CallKind::Query), 1);
    assert_eq!(stats.calls_of(CallKind::QueryMore), 2);
    assert_eq!(stats.api_usage, Some((25, 5000)));
}

#[tokio::test]
async fn transient_faults_are_retried_and_the_request_limit_is_not() {
    let (org, url) = rest_org().await;
    let client = CrmClient::new(config(&url, client_credentials())).unwrap();
    org.faults.lock().unwrap().extend([
        (StatusCode::BAD_REQUEST, json!([{"message":"unable to obtain exclusive access to this record","errorCode":"UNABLE_TO_LOCK_ROW"}])),
        (StatusCode::SERVICE_UNAVAILABLE, json!([{"message":"busy","errorCode":"SERVER_UNAVAILABLE"}])),
    ]);
    client.query("SELECT Id FROM Account").await.unwrap();
    assert_eq!(client.stats().retries, 2);

    org.faults.lock().unwrap().push_back((
        StatusCode::FORBIDDEN,
        json!([{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]),
    ));
    let before = org.seen.lock().unwrap().len();
    let e = client.query("SELECT Id FROM Account").await.unwrap_err();
    assert!(matches!(e, CrmError::RequestLimit { .. }), "{e}");
    assert_eq!(org.seen.lock().unwrap().len(), before + 1, "not retried");
}

// ---------------------------------------------------------------------------------------------
// Writes

#[tokio::test]
async fn collection_results_map_back_to_caller_indexes_across_chunks() {
    let (org, url) = rest_org().await;
    let client = CrmClient::new(config(&url, client_credentials())).unwrap();
    let updates: Vec<RecordUpdate> = (0..250)
        .map(|i| {
            let mut fields = serde_json::Map::new();
            // Record 230 (in the second call) is refused by the org.
            fields.insert("Name".into(), json!(if i == 230 { "" } else { "ok" }));
            RecordUpdate {
                object: "Account".into(),
                id: format!("001{i:015}"),
                fields,
            }
        })
        .collect();
    let results = client.update(&updates, WriteOptions::default()).await;
    assert_eq!(results.len(), 250);
    for (i, r) in results.iter().enumerate() {
        if i == 230 {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.status_code, "REQUIRED_FIELD_MISSING");
            assert_eq!(e.fields, ["Name"]);
        } else {
            assert_eq!(r.as_ref().unwrap(), &updates[i].id);
        }
    }
    let seen = org.seen.lock().unwrap().clone();
    let writes: Vec<_> = seen
        .iter()
        .filter(|s| s.0 == "composite/sobjects")
        .collect();
    assert_eq!(writes.len(), 2);
    for (_, call_options, body) in &writes {
        assert_eq!(call_options.as_deref(), Some("client=plansync-test"));
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["allOrNone"], false);
        assert_eq!(body["records"][0]["attributes"]["type"], "Account");
    }
    let stats = client.stats();
    assert_eq!((stats.records_written, stats.records_failed), (249, 1));
}

#[tokio::test]
async fn a_call_that_hits_the_limit_fails_its_records_and_stops_the_rest() {
    let (org, url) = rest_org().await;
    let client = CrmClient::new(config(&url, client_credentials())).unwrap();
    client.query("SELECT Id FROM Account").await.unwrap();
    org.faults.lock().unwrap().push_back((
        StatusCode::FORBIDDEN,
        json!([{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]),
    ));
    let updates: Vec<RecordUpdate> = (0..300)
        .map(|i| RecordUpdate {
            object: "Account".into(),
            id: format!("001{i:015}"),
            fields: serde_json::Map::new(),
        })
        .collect();
    let results = client
        .update_collections(&updates, WriteOptions::default())
        .await;
    assert_eq!(
        results[0].as_ref().unwrap_err().status_code,
        "REQUEST_LIMIT_EXCEEDED"
    );
    assert_eq!(
        results[250].as_ref().unwrap_err().status_code,
        "NOT_ATTEMPTED"
    );
    let writes = org
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.0 == "composite/sobjects")
        .count();
    assert_eq!(writes, 1);
}

/// Bulk ingest: the fake records the upload and reports rows whose `Industry` is `bad` as
/// failed, the rest as successful.
async fn bulk_create(State(org): State<Arc<Org>>, headers: HeaderMap, body: String) -> Response {
    org.record("bulk/create", &headers, &body);
    if let Some(r) = org.gate(&headers) {
        return r;
    }
    axum::Json(json!({"id": "750J1", "state": "Open", "contentUrl": "services/data/v59.0/jobs/ingest/750J1/batches"})).into_response()
}

async fn bulk_upload(State(org): State<Arc<Org>>, headers: HeaderMap, body: String) -> Response {
    org.record("bulk/upload", &headers, &body);
    if let Some(r) = org.gate(&headers) {
        return r;
    }
    StatusCode::CREATED.into_response()
}

async fn bulk_close(State(org): State<Arc<Org>>, headers: HeaderMap, body: String) -> Response {
    org.record("bulk/close", &headers, &body);
    if let Some(r) = org.gate(&headers) {
        return r;
    }
    axum::Json(json!({"id": "750J1", "state": "UploadComplete"})).into_response()
}

async fn bulk_state(State(org): State<Arc<Org>>, headers: HeaderMap) -> Response {
    org.record("bulk/state", &headers, "");
    if let Some(r) = org.gate(&headers) {
        return r;
    }
    let polls = org
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.0 == "bulk/state")
        .count();
    let state = if polls < 3 {
        "InProgress"
    } else {
        "JobComplete"
    };
    axum::Json(json!({"id": "750J1", "state": state})).into_response()
}

fn uploaded_rows(org: &Org) -> Vec<csv::StringRecord> {
    let seen = org.seen.lock().unwrap();
    let csv = seen
        .iter()
        .find(|s| s.0 == "bulk/upload")
        .map(|s| s.2.clone())
        .unwrap_or_default();
    csv::Reader::from_reader(csv.as_bytes())
        .records()
        .map(|r| r.unwrap())
        .collect()
}

async fn bulk_ok(State(org): State<Arc<Org>>) -> Response {
    let mut out = String::from("sf__Id,sf__Created,Id,Industry\n");
    for row in uploaded_rows(&org) {
        if &row[1] != "bad" {
            out.push_str(&format!("{},false,{},{}\n", &row[0], &row[0], &row[1]));
        }
    }
    out.into_response()
}

async fn bulk_failed(State(org): State<Arc<Org>>) -> Response {
    let mut out = String::from("\"sf__Id\",\"sf__Error\",Id,Industry\n");
    for row in uploaded_rows(&org) {
        if &row[1] == "bad" {
            out.push_str(&format!(
                ",FIELD_CUSTOM_VALIDATION_EXCEPTION:Industry is not allowed:Industry --,{},{}\n",
                &row[0], &row[1]
            ));
        }
    }
    out.into_response()
}

#[tokio::test]
async fn bulk_ingest_reads_both_result_files_into_caller_order() {
    let (org, url) = rest_org().await;
    let mut cfg = config(&url, client_credentials());
    cfg.bulk_threshold = 10;
    let client = CrmClient::new(cfg).unwrap();
    let updates: Vec<RecordUpdate> = (0..12)
        .map(|i| {
            let mut fields = serde_json::Map::new();
            fields.insert(
                "Industry".into(),
                json!(if i % 5 == 3 { "bad" } else { "Energy" }),
            );
            RecordUpdate {
                object: "Account".into(),
                id: format!("001{i:015}"),
                fields,
            }
        })
        .collect();
    let results = client.update(&updates, WriteOptions::default()).await;
    for (i, r) in results.iter().enumerate() {
        if i % 5 == 3 {
            assert_eq!(
                r.as_ref().unwrap_err().status_code,
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "{i}"
            );
        } else {
            assert_eq!(r.as_ref().unwrap(), &updates[i].id, "{i}");
        }
    }
    let seen = org.seen.lock().unwrap().clone();
    let create: Value =
        serde_json::from_str(&seen.iter().find(|s| s.0 == "bulk/create").unwrap().2).unwrap();
    assert_eq!(
        create,
        json!({"object":"Account","operation":"update","contentType":"CSV","lineEnding":"LF"})
    );
    assert!(
        seen.iter()
            .filter(|s| s.0.starts_with("bulk/") && s.0 != "bulk/state")
            .all(|s| s.1.as_deref() == Some("client=plansync-test"))
    );
    assert_eq!(
        seen.iter().find(|s| s.0 == "bulk/close").unwrap().2,
        r#"{"state":"UploadComplete"}"#
    );
    assert_eq!(client.stats().calls_of(CallKind::BulkPoll), 3);
}

// ---------------------------------------------------------------------------------------------
// CDC over WebSocket: a bare tokio-tungstenite server scripted per connection

/// What a scripted socket peer sees and says.
struct Peer {
    ws: WebSocketStream<TcpStream>,
    authorization: String,
}

impl Peer {
    /// The next frame's messages (panics in the fake, which fails the test, on anything else).
    async fn recv(&mut self) -> Vec<Value> {
        loop {
            match tokio::time::timeout(PATIENCE, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).unwrap(),
                Ok(Some(Ok(_))) => continue,
                other => panic!("fake server: expected a frame, got {other:?}"),
            }
        }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).await.unwrap();
    }

    /// Answers a handshake (checking its shape) with `client_id`.
    async fn handshake(&mut self, client_id: &str) {
        let m = self.recv().await;
        assert_eq!(m[0]["channel"], "/meta/handshake");
        assert_eq!(m[0]["ext"]["replay"], true);
        assert_eq!(m[0]["supportedConnectionTypes"], json!(["websocket"]));
        self.send(json!([{"channel":"/meta/handshake","version":"1.0","clientId":client_id,
            "supportedConnectionTypes":["websocket"],"ext":{"replay":true},"successful":true,"id":m[0]["id"]}]))
            .await;
    }

    /// Answers a connect at once.
    async fn connect(&mut self, client_id: &str) {
        let m = self.recv().await;
        assert_eq!(m[0]["channel"], "/meta/connect");
        assert_eq!(m[0]["clientId"], client_id);
        assert_eq!(m[0]["connectionType"], "websocket");
        self.send(json!([{"channel":"/meta/connect","clientId":client_id,"successful":true,"id":m[0]["id"],
            "advice":{"reconnect":"retry","interval":0,"timeout":5000}}]))
            .await;
    }

    /// Reads a subscribe and returns the replay id asked for `channel`, without answering.
    async fn subscribe_request(&mut self, channel: &str) -> (i64, Value) {
        let m = self.recv().await;
        assert_eq!(m[0]["channel"], "/meta/subscribe");
        assert_eq!(m[0]["subscription"], channel);
        (
            m[0]["ext"]["replay"][channel].as_i64().unwrap(),
            m[0]["id"].clone(),
        )
    }

    async fn subscribed(&mut self, channel: &str, id: Value) {
        self.send(
            json!([{"channel":"/meta/subscribe","subscription":channel,"successful":true,"id":id}]),
        )
        .await;
    }
}

/// Accepts connections one after another, handing the n-th to `script(n, peer)`.
async fn ws_server<F, Fut>(script: F) -> String
where
    F: Fn(usize, Peer) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::new(Mutex::new((String::new(), String::new())));
            let s2 = seen.clone();
            // The callback's signature is tungstenite's; its error type is not ours to shrink.
            #[allow(clippy::result_large_err)]
            let callback =
                move |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    *s2.lock().unwrap() = (req.uri().path().to_string(), auth);
                    Ok(resp)
                };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                continue;
            };
            let (path, authorization) = seen.lock().unwrap().clone();
            assert_eq!(path, "/cometd/59.0");
            // Each connection's script runs to completion before the next is accepted, so
            // the order of connections is the order of the script.
            script(n, Peer { ws, authorization }).await;
            n += 1;
        }
    });
    format!("http://{addr}")
}

/// A token endpoint whose instance URL is `instance`.
async fn login_for(instance: &str) -> (Arc<Org>, String) {
    let org = Arc::new(Org::default());
    *org.instance.lock().unwrap() = instance.to_string();
    let app = Router::new()
        .route("/services/oauth2/token", post(token))
        .with_state(org.clone());
    (org.clone(), serve(app).await)
}

fn event(replay_id: i64, record: &str, change_type: &str, fields: Value) -> Value {
    let mut payload = fields.as_object().cloned().unwrap_or_default();
    payload.insert(
        "ChangeEventHeader".into(),
        json!({"entityName":"Account","recordIds":[record],"changeType":change_type,
            "changeOrigin":"com/salesforce/api/rest/59.0;client=plansync-test",
            "transactionKey":"tk","sequenceNumber":1,"commitTimestamp":1735689600000i64,
            "commitNumber":1,"commitUser":"005A","changedFields":[]}),
    );
    json!({"channel":"/data/AccountChangeEvent","data":{"schema":"s","event":{"replayId":replay_id},"payload":payload}})
}

struct Running {
    rx: mpsc::Receiver<CdcItem>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), plansync::crm::cdc::CdcError>>,
}

impl Running {
    async fn next(&mut self) -> CdcItem {
        tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("an item in time")
            .expect("listener still running")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(PATIENCE, self.task)
            .await
            .unwrap()
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}

async fn listen(instance: &str, transport: Transport, from: ReplayFrom) -> Running {
    let (_, login) = login_for(instance).await;
    let client = CrmClient::new(config(&login, client_credentials())).unwrap();
    let mut cfg = CdcConfig::new(
        "59.0",
        vec![("/data/AccountChangeEvent".into(), from)],
        transport,
        "plansync-test",
    );
    cfg.backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
    };
    cfg.timeout_margin = Duration::from_secs(10);
    let listener = CdcListener::new(client, cfg).unwrap();
    let (tx, rx) = mpsc::channel(16);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(listener.run(tx, async move {
        let _ = stopped.await;
    }));
    Running {
        rx,
        stop: Some(stop),
        task,
    }
}

fn replay_of(item: &CdcItem) -> i64 {
    match item {
        CdcItem::Event(e) => e.replay_id,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn websocket_resumes_from_the_last_delivered_replay_id_after_a_drop() {
    let (resumed_tx, resumed_rx) = std::sync::mpsc::channel::<i64>();
    let resumed_tx = Arc::new(Mutex::new(resumed_tx));
    let instance = ws_server(move |n, mut peer| {
        let resumed_tx = resumed_tx.clone();
        async move {
            assert!(peer.authorization.starts_with("Bearer 00Dtoken!"));
            let client_id = format!("c{n}");
            peer.handshake(&client_id).await;
            peer.connect(&client_id).await;
            let (from, id) = peer.subscribe_request("/data/AccountChangeEvent").await;
            peer.subscribed("/data/AccountChangeEvent", id).await;
            if n == 0 {
                assert_eq!(from, -2);
                let _ = peer.recv().await; // the held connect
                peer.send(json!([event(10, "001A", "UPDATE", json!({"Industry":"Energy"}))])).await;
                peer.send(json!([event(11, "001B", "CREATE", json!({"Name":"B","BillingAddress":{"City":"Lyon"}}))])).await;
                // Garbage between good frames: reported, then the stream goes on.
                peer.send_raw("[{\"channel\": \"/data/AccountChangeEvent\", \"data\": ").await;
                peer.send(json!([event(12, "001C", "DELETE", json!({}))])).await;
                // Drop mid-stream, with the connect still held.
                drop(peer);
            } else {
                resumed_tx.lock().unwrap().send(from).unwrap();
                let m = peer.recv().await;
                assert_eq!(m[0]["channel"], "/meta/connect");
                peer.send(json!([event(13, "001D", "UNDELETE", json!({"Name":"D"})),
                    {"channel":"/meta/connect","clientId":client_id,"successful":true,"id":m[0]["id"]}]))
                    .await;
                let _ = peer.recv().await; // next connect: hold until the test ends
                std::future::pending::<()>().await;
            }
        }
    })
    .await;
    let mut run = listen(&instance, Transport::WebSocket, ReplayFrom::Earliest).await;
    assert_eq!(
        run.next().await,
        CdcItem::Connected {
            transport: Transport::WebSocket
        }
    );
    let first = run.next().await;
    assert_eq!(replay_of(&first), 10);
    if let CdcItem::Event(e) = &first {
        assert!(e.ours);
        let changes = e.to_changes("account");
        assert_eq!(changes[0].fields[0].field, "Industry");
    }
    let second = run.next().await;
    assert_eq!(replay_of(&second), 11);
    if let CdcItem::Event(e) = &second {
        assert!(
            e.fields
                .iter()
                .any(|f| f.field == "BillingCity" && f.value == "Lyon")
        );
    }
    assert!(matches!(
        run.next().await,
        CdcItem::Problem {
            problem: EventProblem {
                kind: ProblemKind::Malformed,
                ..
            },
            ..
        }
    ));
    assert_eq!(replay_of(&run.next().await), 12);
    assert!(matches!(run.next().await, CdcItem::Disconnected { .. }));
    assert_eq!(
        run.next().await,
        CdcItem::Connected {
            transport: Transport::WebSocket
        }
    );
    assert_eq!(replay_of(&run.next().await), 13);
    assert_eq!(resumed_rx.recv_timeout(PATIENCE).unwrap(), 12);
    run.stop().await;
}

#[tokio::test]
async fn websocket_unknown_client_rehandshakes_and_resubscribes() {
    let instance = ws_server(move |n, mut peer| async move {
        assert_eq!(n, 0, "the re-handshake happens on the same socket");
        peer.handshake("c1").await;
        peer.connect("c1").await;
        let (from, id) = peer.subscribe_request("/data/AccountChangeEvent").await;
        assert_eq!(from, -1);
        peer.subscribed("/data/AccountChangeEvent", id).await;
        let m = peer.recv().await;
        peer.send(json!([event(40, "001A", "UPDATE", json!({"Industry":"X"})),
            {"channel":"/meta/connect","successful":true,"id":m[0]["id"]}]))
            .await;
        let m = peer.recv().await;
        peer.send(
            json!([{"channel":"/meta/connect","id":m[0]["id"],"error":"403::Unknown client",
            "successful":false,"advice":{"reconnect":"handshake","interval":0}}]),
        )
        .await;
        peer.handshake("c2").await;
        peer.connect("c2").await;
        let (from, id) = peer.subscribe_request("/data/AccountChangeEvent").await;
        assert_eq!(from, 40, "resubscribed after the last delivered event");
        peer.subscribed("/data/AccountChangeEvent", id).await;
        let m = peer.recv().await;
        peer.send(json!([event(41, "001A", "UPDATE", json!({"Industry":"Y"})),
            {"channel":"/meta/connect","successful":true,"id":m[0]["id"]}]))
            .await;
        let _ = peer.recv().await;
        std::future::pending::<()>().await;
    })
    .await;
    let mut run = listen(&instance, Transport::WebSocket, ReplayFrom::Tip).await;
    assert!(matches!(run.next().await, CdcItem::Connected { .. }));
    assert_eq!(replay_of(&run.next().await), 40);
    match run.next().await {
        CdcItem::Disconnected { reason } => {
            assert!(reason.contains("403::Unknown client"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(run.next().await, CdcItem::Connected { .. }));
    assert_eq!(replay_of(&run.next().await), 41);
    run.stop().await;
}

#[tokio::test]
async fn websocket_invalid_replay_id_is_reported_and_the_tip_taken() {
    let instance = ws_server(move |_, mut peer| async move {
        peer.handshake("c1").await;
        peer.connect("c1").await;
        let (from, id) = peer.subscribe_request("/data/AccountChangeEvent").await;
        assert_eq!(from, 82);
        peer.send(json!([{"channel":"/meta/subscribe","subscription":"/data/AccountChangeEvent","successful":false,"id":id,
            "error":"400::The replayId {82} you provided was invalid. Please provide a valid ID, -2 to replay all events, or -1 to replay only new events."}]))
            .await;
        let (from, id) = peer.subscribe_request("/data/AccountChangeEvent").await;
        assert_eq!(from, -1);
        peer.subscribed("/data/AccountChangeEvent", id).await;
        let m = peer.recv().await;
        // An event for a channel nobody subscribed to, then a good one.
        let mut stray = event(7, "001Z", "UPDATE", json!({}));
        stray["channel"] = json!("/data/LeadChangeEvent");
        peer.send(json!([stray, event(90, "001A", "UPDATE", json!({"Industry":"Z"})),
            {"channel":"/meta/connect","successful":true,"id":m[0]["id"]}]))
            .await;
        let _ = peer.recv().await;
        std::future::pending::<()>().await;
    })
    .await;
    let mut run = listen(&instance, Transport::WebSocket, ReplayFrom::After(82)).await;
    match run.next().await {
        CdcItem::ReplayInvalid {
            channel,
            replay_id,
            message,
        } => {
            assert_eq!(channel, "/data/AccountChangeEvent");
            assert_eq!(replay_id, 82);
            assert!(message.starts_with("400::The replayId {82}"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(run.next().await, CdcItem::Connected { .. }));
    assert!(matches!(
        run.next().await,
        CdcItem::Problem {
            problem: EventProblem {
                kind: ProblemKind::UnknownChannel,
                ..
            },
            ..
        }
    ));
    assert_eq!(replay_of(&run.next().await), 90);
    run.stop().await;
}

// ---------------------------------------------------------------------------------------------
// CDC over long-polling (axum), with cookies

#[derive(Default)]
struct Cometd {
    /// (message channel, Cookie header) of every message received.
    requests: Mutex<Vec<(String, String)>>,
    connects: Mutex<u32>,
}

async fn cometd(State(state): State<Arc<Cometd>>, headers: HeaderMap, body: String) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !auth.starts_with("Bearer 00Dtoken!") {
        return (
            StatusCode::UNAUTHORIZED,
            "401::Request requires authentication",
        )
            .into_response();
    }
    let cookie = headers
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Ok(messages) = serde_json::from_str::<Vec<Value>>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut replies = Vec::new();
    let mut set_cookie = None;
    for m in &messages {
        let channel = m["channel"].as_str().unwrap_or("").to_string();
        state
            .requests
            .lock()
            .unwrap()
            .push((channel.clone(), cookie.clone()));
        match channel.as_str() {
            "/meta/handshake" => {
                assert_eq!(m["supportedConnectionTypes"], json!(["long-polling"]));
                set_cookie = Some("BAYEUX_BROWSER=5a1b-lp; Path=/; HttpOnly");
                replies.push(json!({"channel":"/meta/handshake","clientId":"lp1","successful":true,
                    "supportedConnectionTypes":["long-polling"],"ext":{"replay":true},"id":m["id"]}));
            }
            _ if !cookie.contains("BAYEUX_BROWSER=5a1b-lp") => {
                replies.push(json!({"channel":channel,"successful":false,"id":m["id"],
                    "error":"402::Client lp1 has established a session, but no BAYEUX_BROWSER cookie present",
                    "advice":{"reconnect":"none"}}));
            }
            "/meta/connect" => {
                assert_eq!(m["connectionType"], "long-polling");
                let n = {
                    let mut c = state.connects.lock().unwrap();
                    *c += 1;
                    *c
                };
                if n == 2 {
                    replies.push(event(5, "001A", "UPDATE", json!({"Industry":"LP"})));
                }
                if n > 2 {
                    // Hold, as a real server does, but only briefly.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                replies.push(json!({"channel":"/meta/connect","clientId":"lp1","successful":true,"id":m["id"],
                    "advice":{"reconnect":"retry","interval":0,"timeout":2000}}));
            }
            "/meta/subscribe" => {
                assert_eq!(m["ext"]["replay"]["/data/AccountChangeEvent"], -2);
                replies.push(json!({"channel":"/meta/subscribe","clientId":"lp1",
                    "subscription":"/data/AccountChangeEvent","successful":true,"id":m["id"]}));
            }
            _ => {}
        }
    }
    let mut response = axum::Json(Value::Array(replies)).into_response();
    if let Some(c) = set_cookie {
        response
            .headers_mut()
            .insert("set-cookie", c.parse().unwrap());
    }
    response
}

#[tokio::test]
async fn long_polling_shares_the_session_and_echoes_cookies() {
    let state = Arc::new(Cometd::default());
    let app = Router::new()
        .route("/cometd/59.0", post(cometd))
        .with_state(state.clone());
    let instance = serve(app).await;
    let mut run = listen(&instance, Transport::LongPolling, ReplayFrom::Earliest).await;
    assert_eq!(
        run.next().await,
        CdcItem::Connected {
            transport: Transport::LongPolling
        }
    );
    match run.next().await {
        CdcItem::Event(e) => {
            assert_eq!(e.replay_id, 5);
            assert_eq!(e.fields[0].value, "LP");
        }
        other => panic!("{other:?}"),
    }
    run.stop().await;
    let requests = state.requests.lock().unwrap().clone();
    assert_eq!(requests[0].0, "/meta/handshake");
    assert!(requests.len() >= 4, "{requests:?}");
    for (channel, cookie) in &requests[1..] {
        assert!(
            cookie.contains("BAYEUX_BROWSER=5a1b-lp"),
            "{channel} without the cookie"
        );
    }
}

#[tokio::test]
async fn answers_past_the_size_cap_are_refused_not_read_whole() {
    // A query page that inflates from ~32 KiB on the wire to 32 MiB.
    let bomb = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(b"{\"records\":[").unwrap();
        for _ in 0..32 {
            gz.write_all(&vec![b' '; 1 << 20]).unwrap();
        }
        gz.finish().unwrap()
    };
    let org = Arc::new(Org::default());
    let app = Router::new()
        .route("/services/oauth2/token", post(token))
        .route(
            "/services/data/v59.0/query",
            get(move || async move {
                (
                    [
                        ("content-type", "application/json"),
                        ("content-encoding", "gzip"),
                    ],
                    bomb,
                )
            }),
        )
        .with_state(org.clone());
    let url = serve(app).await;
    *org.instance.lock().unwrap() = url.clone();
    let mut c = config(&url, client_credentials());
    c.max_response_bytes = 1 << 20;
    let client = CrmClient::new(c).unwrap();
    let e = client.query("SELECT Id FROM Account").await.unwrap_err();
    assert!(e.to_string().contains("larger than 1 MiB"), "{e}");

    // A token endpoint that answers with megabytes.
    let app = Router::new().route(
        "/services/oauth2/token",
        post(|| async { vec![b'x'; 3 << 20] }),
    );
    let url = serve(app).await;
    let client = CrmClient::new(config(&url, client_credentials())).unwrap();
    let e = client.query("SELECT Id FROM Account").await.unwrap_err();
    assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
}
