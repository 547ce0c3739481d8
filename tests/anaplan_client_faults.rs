//! The Anaplan client against small throwaway servers on real loopback sockets, each scripting
//! one fault the client must survive: a 429 storm (with and without `Retry-After`) under the
//! tenant budget, 5xx, a dropped connection, a truncated body, a refused token, per-cell and
//! per-item failures across chunks, HTML error pages, giving up in bounded time, and the
//! certificate-authentication request shape (v1 and v2, signature checked). These fakes script
//! faults; they are not a simulator.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use plansync::anaplan::{
    AnaplanClient, AnaplanConfig, AnaplanError, AuthMethod, CellValue, CellWrite, CertFormat,
    DimRef, ItemRef, LineItemRef, ListItemWrite, RetryPolicy,
};
use plansync::model::Decimal;
use plansync::secret::Secret;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------------
// The scripted fake.

#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    method: String,
    path: String,
    query: String,
    authorization: String,
    content_type: String,
    body: Vec<u8>,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

struct Reply {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn reply_json(status: u16, v: Value) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        headers: vec![],
        body: v.to_string().into_bytes(),
    }
}

fn reply_raw(status: u16, content_type: &'static str, body: &[u8]) -> Reply {
    Reply {
        status,
        content_type,
        headers: vec![],
        body: body.to_vec(),
    }
}

type Script = dyn Fn(&Seen, &[Seen]) -> Reply + Send + Sync;

#[derive(Clone)]
struct FakeState {
    log: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Script>,
}

struct Fake {
    url: String,
    log: Arc<Mutex<Vec<Seen>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Fake {
    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.path).collect()
    }
}

async fn handle(State(state): State<FakeState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap()
        .to_vec();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let seen = Seen {
        at: Instant::now(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body,
    };
    // The log lock is held while the (synchronous) script runs, so scripts see a consistent
    // history; nothing awaits under it.
    let reply = {
        let mut log = state.log.lock().unwrap();
        let reply = (state.script)(&seen, &log);
        log.push(seen);
        reply
    };
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    if !reply.content_type.is_empty() {
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static(reply.content_type));
    }
    for (k, v) in reply.headers {
        response
            .headers_mut()
            .insert(k, HeaderValue::from_str(&v).unwrap());
    }
    response
}

async fn start_fake(script: impl Fn(&Seen, &[Seen]) -> Reply + Send + Sync + 'static) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let state = FakeState {
        log: log.clone(),
        script: Arc::new(script),
    };
    let app = Router::new().fallback(handle).with_state(state);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Fake {
        url: format!("http://{addr}"),
        log,
        _stop: stop,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The auth service's answer to a good authenticate call: `tok-N` for the Nth call.
fn token_reply(log: &[Seen], lifetime: Duration) -> Reply {
    let n = log
        .iter()
        .filter(|s| s.path == "/token/authenticate")
        .count()
        + 1;
    reply_json(
        201,
        json!({"meta":{"validationUrl":"x"},"status":"SUCCESS","statusMessage":"Login successful",
            "tokenInfo":{"tokenId":"id","tokenValue":format!("tok-{n}"),
                "expiresAt": now_ms() + lifetime.as_millis() as u64,"refreshTokenId":"r"}}),
    )
}

fn basic() -> AuthMethod {
    AuthMethod::Basic {
        user: "integration@example.com".into(),
        password: Secret::new("pa55word"),
    }
}

fn config(url: &str, auth: AuthMethod) -> AnaplanConfig {
    let mut c = AnaplanConfig::new(url, format!("{url}/2/0"), auth);
    c.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        max_elapsed: Duration::from_secs(30),
    };
    c.task_poll_interval = Duration::from_millis(50);
    c.request_timeout = Duration::from_secs(10);
    c
}

fn cell(n: usize, value: CellValue) -> CellWrite {
    CellWrite {
        line_item: LineItemRef::Name("Amount".into()),
        dimensions: vec![(
            DimRef::Name("Opportunities".into()),
            ItemRef::Code(format!("006{n:05}")),
        )],
        value,
    }
}

fn number(s: &str) -> CellValue {
    CellValue::Number(Decimal::parse(s, 2).unwrap())
}

const DATA: &str = "/2/0/models/M1/modules/102000000001/data";

// ---------------------------------------------------------------------------------------------
// Throttling and the budget.

/// 250 callers through clones of one client with a budget of `budget` calls a minute; the first
/// 60 data calls get 429, and their retries spend budget too. Everyone gets through, and no
/// 60 s window of the calls the server saw holds more than the budget: past it, a call
/// waited for the first to be a minute old.
async fn storm(
    retry_after: Option<&'static str>,
    budget: u32,
) -> (Vec<Seen>, plansync::anaplan::CallStats) {
    let throttled = Arc::new(AtomicUsize::new(0));
    let t = throttled.clone();
    let fake = start_fake(move |seen, log| {
        if seen.path == "/token/authenticate" {
            return token_reply(log, Duration::from_secs(2100));
        }
        assert_eq!(seen.path, DATA);
        if t.fetch_add(1, Ordering::SeqCst) < 60 {
            let mut r = reply_json(
                429,
                json!({"status":{"code":429,"message":"Too Many Requests"}}),
            );
            if let Some(wait) = retry_after {
                r.headers.push(("retry-after", wait.to_string()));
            }
            return r;
        }
        reply_json(
            200,
            json!({"meta":{},"status":{"code":200,"message":"Success"},"numberOfCellsChanged":1}),
        )
    })
    .await;
    let mut cfg = config(&fake.url, basic());
    cfg.calls_per_minute = budget;
    let client = AnaplanClient::new(cfg).unwrap();
    let mut tasks = Vec::new();
    for i in 0..250 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.write_cells("M1", "102000000001", &[cell(i, number("1"))])
                .await
        }));
    }
    for t in tasks {
        let outcome = t.await.unwrap().unwrap();
        assert_eq!(outcome.cells_changed, 1);
    }
    let seen = fake.seen();
    // 1 authentication (single flight) + 250 first attempts + 60 retries.
    assert_eq!(seen.len(), 311);
    let stats = client.stats();
    assert_eq!(
        (stats.auth, stats.writes, stats.retries, stats.throttled),
        (1, 310, 60, 60)
    );
    let start = seen[0].at;
    let mut times: Vec<f64> = seen
        .iter()
        .map(|s| s.at.duration_since(start).as_secs_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    // The server sees a call a little after the client started it, and a burst of 300
    // later still (queued behind the others): a second of slack on the window. A token
    // bucket would have let the 311 calls through within a few seconds.
    let mut first = 0;
    for (last, t) in times.iter().enumerate() {
        while t - times[first] >= 59.0 {
            first += 1;
        }
        assert!(
            last - first < budget as usize,
            "{} calls within {:.3}s",
            last - first + 1,
            t - times[first]
        );
    }
    if times.len() > budget as usize {
        assert!(
            times.last().copied().unwrap_or_default() >= 59.9,
            "the calls over the budget waited for the window"
        );
    }
    (seen, stats)
}

fn attempts_by_caller(seen: &[Seen]) -> BTreeMap<String, Vec<Instant>> {
    let mut by: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.path == DATA) {
        let code = s.json()[0]["dimensions"][0]["itemCode"]
            .as_str()
            .unwrap()
            .to_string();
        by.entry(code).or_default().push(s.at);
    }
    by
}

#[tokio::test]
async fn throttle_storm_without_retry_after_stays_within_budget() {
    // 311 calls (60 of them retries) over a budget of 300: the last ones wait a minute.
    let (seen, _) = storm(None, 300).await;
    let by = attempts_by_caller(&seen);
    assert_eq!(by.len(), 250);
    assert_eq!(by.values().filter(|v| v.len() == 2).count(), 60);
    for attempts in by.values().filter(|v| v.len() == 2) {
        // Backoff: at least half the 10 ms first step.
        assert!(attempts[1] - attempts[0] >= Duration::from_millis(5));
    }
}

#[tokio::test]
async fn throttle_storm_with_retry_after_honours_it_and_stays_within_budget() {
    let (seen, _) = storm(Some("1"), 400).await;
    let by = attempts_by_caller(&seen);
    for attempts in by.values().filter(|v| v.len() == 2) {
        let gap = attempts[1] - attempts[0];
        assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Transient failures.

#[tokio::test]
async fn server_errors_then_success() {
    let fake = start_fake(|seen, log| {
        if seen.path == "/token/authenticate" {
            return token_reply(log, Duration::from_secs(2100));
        }
        match log.iter().filter(|s| s.path == DATA).count() {
            0 => reply_raw(503, "text/plain", b"unavailable"),
            1 => reply_json(
                500,
                json!({"status":{"code":500,"message":"Internal Server Error"}}),
            ),
            2 => reply_json(409, json!({"status":{"code":409,"message":"model busy"}})),
            _ => reply_json(200, json!({"numberOfCellsChanged":1})),
        }
    })
    .await;
    let client = AnaplanClient::new(config(&fake.url, basic())).unwrap();
    let outcome = client
        .write_cells("M1", "102000000001", &[cell(1, number("2.5"))])
        .await
        .unwrap();
    assert_eq!(outcome.cells_changed, 1);
    assert_eq!(fake.paths().iter().filter(|p| *p == DATA).count(), 4);
    assert_eq!(client.stats().retries, 3);
    // The Basic header is the base64 of user:password; API calls carry the token.
    let seen = fake.seen();
    assert_eq!(
        seen[0].authorization,
        format!("Basic {}", B64.encode("integration@example.com:pa55word"))
    );
    assert_eq!(seen[1].authorization, "AnaplanAuthToken tok-1");
    assert_eq!(seen[1].content_type, "application/json");
    assert_eq!(
        seen[1].json(),
        json!([{"lineItemName":"Amount","dimensions":[{"dimensionName":"Opportunities","itemCode":"00600001"}],"value":2.5}])
    );
}

#[tokio::test]
async fn a_500_on_a_task_start_is_not_repeated() {
    let fake =
        start_fake(|_, _| reply_json(500, json!({"status":{"code":500,"message":"boom"}}))).await;
    let client =
        AnaplanClient::new(config(&fake.url, AuthMethod::Token(Secret::new("static")))).unwrap();
    let err = client
        .start_task(
            "W1",
            "M1",
            plansync::anaplan::TaskKind::Import,
            "112000000001",
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(
        fake.seen().len(),
        1,
        "a start that may have run is not sent twice"
    );
}

/// A bare TCP server that handles one request per connection, by script: drop the connection
/// after reading the request, send a body shorter than its Content-Length, or answer.
#[derive(Clone, Copy)]
enum Raw {
    Drop,
    Truncate,
    Answer(&'static str),
}

async fn raw_server(script: Vec<Raw>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let action = script.get(n).copied().unwrap_or(Raw::Drop);
            tokio::spawn(async move {
                // Read the head and the body it announces.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(read) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..read]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                match action {
                    Raw::Drop => drop(socket),
                    Raw::Truncate => {
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{\"numberOfCe")
                            .await;
                        drop(socket);
                    }
                    Raw::Answer(body) => {
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    }
                }
            });
        }
    });
    (url, connections)
}

#[tokio::test]
async fn dropped_connection_and_truncated_body_then_success() {
    let (url, connections) = raw_server(vec![
        Raw::Drop,
        Raw::Truncate,
        Raw::Answer(r#"{"numberOfCellsChanged":1}"#),
    ])
    .await;
    let client =
        AnaplanClient::new(config(&url, AuthMethod::Token(Secret::new("static")))).unwrap();
    let outcome = client
        .write_cells("M1", "102000000001", &[cell(1, number("3"))])
        .await
        .unwrap();
    assert_eq!(outcome.cells_changed, 1);
    assert_eq!(connections.load(Ordering::SeqCst), 3);
    assert_eq!(client.stats().retries, 2);
}

#[tokio::test]
async fn a_dropped_connection_on_a_task_start_is_reported_not_repeated() {
    let (url, connections) = raw_server(vec![Raw::Drop, Raw::Answer("{}")]).await;
    let client =
        AnaplanClient::new(config(&url, AuthMethod::Token(Secret::new("static")))).unwrap();
    let err = client
        .start_task(
            "W1",
            "M1",
            plansync::anaplan::TaskKind::Import,
            "112000000001",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AnaplanError::Transport { .. }), "{err:?}");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn gives_up_after_the_bounded_time() {
    let fake =
        start_fake(|_, _| reply_raw(503, "text/html", b"<html>Service Unavailable</html>")).await;
    let mut cfg = config(&fake.url, AuthMethod::Token(Secret::new("static")));
    cfg.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        max_elapsed: Duration::from_secs(1),
    };
    let client = AnaplanClient::new(cfg).unwrap();
    let start = Instant::now();
    let err = client.list_modules("M1").await.unwrap_err();
    let took = start.elapsed();
    match &err {
        AnaplanError::GaveUp { attempts, last, .. } => {
            assert!(*attempts >= 3, "{attempts}");
            assert!(
                last.contains("503") && last.contains("Service Unavailable"),
                "{last}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(took <= Duration::from_secs(3), "{took:?}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
}

// ---------------------------------------------------------------------------------------------
// Tokens.

#[tokio::test]
async fn a_refused_token_is_renewed_once() {
    let fake = start_fake(|seen, log| match seen.path.as_str() {
        "/token/authenticate" => token_reply(log, Duration::from_secs(2100)),
        _ if seen.authorization == "AnaplanAuthToken tok-2" => reply_json(
            200,
            json!({"meta":{"paging":{"currentPageSize":1,"totalSize":1,"offset":0}},"modules":[{"id":"102000000001","name":"Revenue"}]}),
        ),
        _ => reply_json(401, json!({"status":{"code":401,"message":"Not Authenticated."}})),
    })
    .await;
    let client = AnaplanClient::new(config(&fake.url, basic())).unwrap();
    assert_eq!(
        client.module_id("M1", "Revenue").await.unwrap(),
        "102000000001"
    );
    let auths: Vec<String> = fake
        .seen()
        .iter()
        .map(|s| s.authorization.clone())
        .collect();
    assert_eq!(auths.len(), 4);
    assert!(auths[0].starts_with("Basic "));
    assert_eq!(auths[1], "AnaplanAuthToken tok-1");
    assert!(auths[2].starts_with("Basic "));
    assert_eq!(auths[3], "AnaplanAuthToken tok-2");
}

#[tokio::test]
async fn a_token_refused_twice_is_an_error_after_one_renewal() {
    let fake = start_fake(|seen, log| match seen.path.as_str() {
        "/token/authenticate" => token_reply(log, Duration::from_secs(2100)),
        _ => reply_json(
            401,
            json!({"status":{"code":401,"message":"Not Authenticated."}}),
        ),
    })
    .await;
    let client = AnaplanClient::new(config(&fake.url, basic())).unwrap();
    let err = client.list_lists("M1").await.unwrap_err();
    assert!(
        matches!(err, AnaplanError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(fake.seen().len(), 4, "auth, call, auth, call");
    // Bad credentials: the auth service's own 401 is an authentication error.
    let refuse = start_fake(|_, _| {
        reply_json(
            401,
            json!({"status":"FAILURE_BAD_CREDENTIAL","statusMessage":"Bad credentials"}),
        )
    })
    .await;
    let client = AnaplanClient::new(config(&refuse.url, basic())).unwrap();
    let err = client.authenticate().await.unwrap_err();
    assert!(
        matches!(err, AnaplanError::AuthRefused { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("pa55word"));
}

#[tokio::test]
async fn a_token_close_to_expiry_is_refreshed_first() {
    let fake = start_fake(|seen, log| match seen.path.as_str() {
        // Two minutes left: inside the five-minute margin.
        "/token/authenticate" => token_reply(log, Duration::from_secs(120)),
        "/token/refresh" => {
            assert_eq!(seen.authorization, "AnaplanAuthToken tok-1");
            reply_json(
                200,
                json!({"status":"SUCCESS","statusMessage":"Token refreshed",
                    "tokenInfo":{"tokenValue":"tok-1","expiresAt":now_ms() + 2_100_000}}),
            )
        }
        _ => reply_json(
            200,
            json!({"lists":[{"id":"101000000001","name":"Opportunities"}]}),
        ),
    })
    .await;
    let client = AnaplanClient::new(config(&fake.url, basic())).unwrap();
    client.authenticate().await.unwrap();
    assert_eq!(
        client.list_id("M1", "Opportunities").await.unwrap(),
        "101000000001"
    );
    assert_eq!(
        client.list_id("M1", "Opportunities").await.unwrap(),
        "101000000001"
    );
    assert_eq!(
        fake.paths(),
        [
            "/token/authenticate",
            "/token/refresh",
            "/2/0/models/M1/lists",
            "/2/0/models/M1/lists"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Certificate authentication.

fn pem(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/data/keys/{name}.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A CA certificate and a leaf certificate for the client's key, signed by the CA.
fn certificates() -> (String, String) {
    let alg = &rcgen::PKCS_RSA_SHA256;
    let ca_key = rcgen::KeyPair::from_pem_and_sign_algo(&pem("client_ca_rsa"), alg).unwrap();
    let leaf_key = rcgen::KeyPair::from_pem_and_sign_algo(&pem("client_leaf_rsa"), alg).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "plansync test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "integration@example.com");
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    (ca.pem(), leaf.pem())
}

/// What the fake auth service checks: the header carries a PEM certificate issued by the CA;
/// the body's signature verifies with the certificate's key; v2 starts with the time.
fn verify_certificate_request(seen: &Seen, ca_pem: &str, format: CertFormat) -> Result<(), String> {
    let b64 = seen
        .authorization
        .strip_prefix("CACertificate ")
        .ok_or("no CACertificate header")?;
    let cert_pem = B64.decode(b64).map_err(|e| e.to_string())?;
    let (_, leaf) = x509_parser::pem::parse_x509_pem(&cert_pem).map_err(|e| e.to_string())?;
    let leaf = leaf.parse_x509().map_err(|e| e.to_string())?;
    let (_, ca) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    let ca = ca.parse_x509().map_err(|e| e.to_string())?;
    leaf.verify_signature(Some(ca.public_key()))
        .map_err(|e| format!("leaf not issued by the CA: {e}"))?;
    if !seen.content_type.starts_with("application/json") {
        return Err(format!("content type {}", seen.content_type));
    }
    let body = seen.json();
    let data = B64
        .decode(body["encodedData"].as_str().ok_or("no encodedData")?)
        .map_err(|e| e.to_string())?;
    let signature = B64
        .decode(
            body["encodedSignedData"]
                .as_str()
                .ok_or("no encodedSignedData")?,
        )
        .map_err(|e| e.to_string())?;
    if data.len() < 100 {
        return Err(format!("only {} bytes signed", data.len()));
    }
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA512,
        &leaf.public_key().subject_public_key.data,
    )
    .verify(&data, &signature)
    .map_err(|_| "signature does not verify".to_string())?;
    match format {
        CertFormat::V1 if body.get("encodedDataFormat").is_none() => Ok(()),
        CertFormat::V2 if body["encodedDataFormat"] == "v2" => {
            let stamp = u64::from_be_bytes(data[..8].try_into().unwrap());
            let now = now_ms() / 1000;
            if stamp.abs_diff(now) <= 60 {
                Ok(())
            } else {
                Err(format!("v2 timestamp {stamp} is not now ({now})"))
            }
        }
        _ => Err(format!("wrong encodedDataFormat: {body}")),
    }
}

async fn certificate_round(format: CertFormat) {
    let (ca_pem, leaf_pem) = certificates();
    let ca = ca_pem.clone();
    let fake = start_fake(move |seen, log| match seen.path.as_str() {
        "/token/authenticate" => match verify_certificate_request(seen, &ca, format) {
            Ok(()) => token_reply(log, Duration::from_secs(2100)),
            Err(why) => reply_json(
                401,
                json!({"status":"FAILURE_BAD_CREDENTIAL","statusMessage":why}),
            ),
        },
        _ => reply_json(
            200,
            json!({"modules":[{"id":"102000000001","name":"Revenue"}]}),
        ),
    })
    .await;
    let good = AuthMethod::Certificate {
        cert_pem: leaf_pem.clone(),
        key_pem: Secret::new(pem("client_leaf_rsa")),
        format,
    };
    let client = AnaplanClient::new(config(&fake.url, good)).unwrap();
    assert_eq!(
        client.module_id("M1", "Revenue").await.unwrap(),
        "102000000001"
    );
    assert_eq!(fake.seen()[1].authorization, "AnaplanAuthToken tok-1");

    // Signing with a key that is not the certificate's: the fake's check must refuse it.
    let wrong = AuthMethod::Certificate {
        cert_pem: leaf_pem,
        key_pem: Secret::new(pem("client_ca_rsa")),
        format,
    };
    let client = AnaplanClient::new(config(&fake.url, wrong)).unwrap();
    let err = client.authenticate().await.unwrap_err();
    assert!(
        matches!(&err, AnaplanError::AuthRefused { status: 401, body } if body.contains("signature does not verify")),
        "{err:?}"
    );
}

#[tokio::test]
async fn certificate_auth_v1_request_shape() {
    certificate_round(CertFormat::V1).await;
}

#[tokio::test]
async fn certificate_auth_v2_request_shape() {
    certificate_round(CertFormat::V2).await;
}

// ---------------------------------------------------------------------------------------------
// Per-cell and per-item failures; bad bodies.

/// Refuses every cell whose value is the text "bad", by its index in the request.
fn cell_writer(seen: &Seen) -> Reply {
    let cells = seen.json();
    let cells = cells.as_array().unwrap();
    let failures: Vec<Value> = cells
        .iter()
        .enumerate()
        .filter(|(_, c)| c["value"] == "bad")
        .map(|(i, _)| json!({"requestIndex": i, "failureType": "cellIsInvalid", "failureMessageDetails": "not a number"}))
        .collect();
    let mut body = json!({"meta":{},"status":{"code":200,"message":"Success"},
        "numberOfCellsChanged": cells.len() - failures.len()});
    if !failures.is_empty() {
        body["failures"] = Value::Array(failures);
    }
    reply_json(200, body)
}

#[tokio::test]
async fn cell_failures_map_to_caller_indexes_across_chunks() {
    let fake = start_fake(|seen, _| cell_writer(seen)).await;
    let mut cfg = config(&fake.url, AuthMethod::Token(Secret::new("static")));
    cfg.max_cells_per_write = 3;
    let client = AnaplanClient::new(cfg).unwrap();
    let cells: Vec<CellWrite> = (0..7)
        .map(|i| {
            let v = if [1, 4, 6].contains(&i) {
                CellValue::Text("bad".into())
            } else {
                number("10.25")
            };
            cell(i, v)
        })
        .collect();
    let outcome = client
        .write_cells("M1", "102000000001", &cells)
        .await
        .unwrap();
    assert_eq!(outcome.calls, 3);
    assert_eq!(outcome.cells_changed, 4);
    let indexes: Vec<usize> = outcome.failures.iter().map(|f| f.index).collect();
    assert_eq!(indexes, [1, 4, 6]);
    assert_eq!(outcome.failures[0].failure_type, "cellIsInvalid");
    // The chunks the server saw, in order: 3, 3, 1 cells, codes in input order.
    let sizes: Vec<usize> = fake
        .seen()
        .iter()
        .map(|s| s.json().as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [3, 3, 1]);
    let codes: Vec<String> = fake
        .seen()
        .iter()
        .flat_map(|s| s.json().as_array().unwrap().clone())
        .map(|c| c["dimensions"][0]["itemCode"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        codes,
        (0..7).map(|i| format!("006{i:05}")).collect::<Vec<_>>()
    );

    // The same by bytes: a limit that fits two cells per body.
    let one = fake.seen()[0].json()[0].to_string().len();
    let mut cfg = config(&fake.url, AuthMethod::Token(Secret::new("static")));
    cfg.max_write_bytes = 2 * one + 3 + 4; // brackets, a comma, and room for longer values
    let client = AnaplanClient::new(cfg).unwrap();
    let outcome = client
        .write_cells("M1", "102000000001", &cells)
        .await
        .unwrap();
    assert_eq!(outcome.calls, 4);
    let indexes: Vec<usize> = outcome.failures.iter().map(|f| f.index).collect();
    assert_eq!(indexes, [1, 4, 6]);
    for s in fake.seen().iter().skip(3) {
        assert!(s.body.len() <= 2 * one + 7, "{} bytes", s.body.len());
    }
}

#[tokio::test]
async fn html_error_pages_and_truncated_json_are_typed_errors() {
    let fake = start_fake(|seen, _| match seen.path.as_str() {
        "/2/0/models/M1/modules" => reply_raw(
            403,
            "text/html",
            format!(
                "<html><body><h1>Forbidden</h1>{}</body></html>",
                "x".repeat(5000)
            )
            .as_bytes(),
        ),
        "/2/0/models/M1/lists" => reply_raw(200, "text/html; charset=utf-8", b"<html>Login</html>"),
        _ => reply_raw(
            200,
            "application/json",
            br#"{"numberOfCellsChanged":1,"failu"#,
        ),
    })
    .await;
    let client =
        AnaplanClient::new(config(&fake.url, AuthMethod::Token(Secret::new("static")))).unwrap();
    match client.list_modules("M1").await.unwrap_err() {
        AnaplanError::Status {
            status, body, path, ..
        } => {
            assert_eq!(status, 403);
            assert_eq!(path, "/2/0/models/M1/modules");
            assert!(body.starts_with("<html><body><h1>Forbidden"));
            assert!(body.len() <= 520, "the excerpt is bounded: {}", body.len());
        }
        other => panic!("{other:?}"),
    }
    match client.list_lists("M1").await.unwrap_err() {
        AnaplanError::Decode {
            status,
            content_type,
            body,
            ..
        } => {
            assert_eq!(status, 200);
            assert!(content_type.starts_with("text/html"));
            assert_eq!(body, "<html>Login</html>");
        }
        other => panic!("{other:?}"),
    }
    let err = client
        .write_cells("M1", "102000000001", &[cell(1, number("1"))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AnaplanError::Decode { status: 200, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("failu"), "{err}");
}

#[tokio::test]
async fn paging_follows_meta_until_total_size() {
    let fake = start_fake(|seen, _| {
        let q: BTreeMap<String, String> = seen
            .query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let limit: usize = q["limit"].parse().unwrap();
        let offset: usize = q["offset"].parse().unwrap();
        let all: Vec<Value> = (0..5)
            .map(|i| json!({"id": format!("10200000000{i}"), "name": format!("Module {i}")}))
            .collect();
        let page: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
        reply_json(
            200,
            json!({"meta":{"paging":{"currentPageSize":page.len(),"totalSize":5,"offset":offset}},
                "status":{"code":200,"message":"Success"},"modules":page}),
        )
    })
    .await;
    let mut cfg = config(&fake.url, AuthMethod::Token(Secret::new("static")));
    cfg.page_size = 2;
    let client = AnaplanClient::new(cfg).unwrap();
    let modules = client.list_modules("M1").await.unwrap();
    assert_eq!(modules.len(), 5);
    assert_eq!(modules[4].name, "Module 4");
    let queries: Vec<String> = fake.seen().iter().map(|s| s.query.clone()).collect();
    assert_eq!(
        queries,
        ["limit=2&offset=0", "limit=2&offset=2", "limit=2&offset=4"]
    );
    assert_eq!(
        client.module_id("M1", "Module 3").await.unwrap(),
        "102000000003"
    );
    assert!(matches!(
        client.module_id("M1", "Nope").await,
        Err(AnaplanError::NotFound { .. })
    ));
}

#[tokio::test]
async fn upsert_updates_known_codes_adds_the_rest_and_maps_failures() {
    const ITEMS: &str = "/2/0/models/M1/lists/101000000001/items";
    let fake = start_fake(|seen, _| match (seen.method.as_str(), seen.query.as_str()) {
        ("GET", _) => reply_json(
            200,
            json!({"listItems":[{"id":"1","name":"A","code":"A","listId":"101000000001"},
                                {"id":"2","name":"B","code":"B"},{"id":"3","name":"no code"}]}),
        ),
        ("PUT", _) => {
            let n = seen.json()["items"].as_array().unwrap().len();
            reply_json(200, json!({"updated":n,"ignored":0,"total":n}))
        }
        ("POST", "action=add") => reply_json(
            200,
            json!({"added":1,"ignored":1,"total":2,"failures":[{"requestIndex":1,
                "failureType":"INCORRECT_FORMAT","failureMessageDetails":"bad number"}]}),
        ),
        ("POST", "action=delete") => {
            reply_json(200, json!({"deleted":1,"failures":[{"requestIndex":0,"failureType":"ITEM_NOT_FOUND","failureMessageDetails":"no X"}]}))
        }
        _ => reply_json(404, json!({"status":{"code":404,"message":"Not Found"}})),
    })
    .await;
    let client =
        AnaplanClient::new(config(&fake.url, AuthMethod::Token(Secret::new("static")))).unwrap();
    let item = |code: &str| ListItemWrite {
        code: code.into(),
        ..Default::default()
    };
    let items = [item("A"), item("C"), item("B"), item("D")];
    let outcome = client
        .upsert_list_items("M1", "101000000001", &items)
        .await
        .unwrap();
    assert_eq!((outcome.added, outcome.updated, outcome.calls), (1, 2, 3));
    assert_eq!(outcome.failures.len(), 1);
    assert_eq!(outcome.failures[0].index, 3, "D was second in the add call");
    let seen = fake.seen();
    assert!(seen.iter().all(|s| s.path == ITEMS));
    assert_eq!(seen[1].json(), json!({"items":[{"code":"A"},{"code":"B"}]}));
    assert_eq!(
        seen[2].json(),
        json!({"items":[{"name":"C","code":"C"},{"name":"D","code":"D"}]})
    );
    let deleted = client
        .delete_list_items("M1", "101000000001", &["X".to_string(), "A".to_string()])
        .await
        .unwrap();
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.failures[0].index, 0);
    assert_eq!(
        fake.seen().last().unwrap().json(),
        json!({"items":[{"code":"X"},{"code":"A"}]})
    );
}

// ---------------------------------------------------------------------------------------------
// Bulk.

const MODEL: &str = "/2/0/workspaces/W1/models/M1";

#[tokio::test]
async fn upload_import_poll_and_parse_the_failure_dump() {
    let dump = "_Status_,Code,Amount,_Line_,_Error_1_\nE,006A,abc,2,Invalid number\nE,006C,,4,\"Item not found, skipped\"\n";
    let uploaded = Arc::new(Mutex::new(BTreeMap::<usize, Vec<u8>>::new()));
    let up = uploaded.clone();
    let fake = start_fake(move |seen, log| {
        let file = format!("{MODEL}/files/113000000001");
        let task = format!("{MODEL}/imports/112000000001/tasks");
        let p = seen.path.as_str();
        if p == file && seen.method == "POST" {
            assert_eq!(seen.json(), json!({"chunkCount":-1}));
            return reply_json(200, json!({"file":{"id":"113000000001","name":"opps.csv","chunkCount":-1}}));
        }
        if let Some(n) = p.strip_prefix(&format!("{file}/chunks/")) {
            assert_eq!(seen.method, "PUT");
            assert_eq!(seen.content_type, "application/x-gzip");
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&seen.body[..])
                .read_to_end(&mut plain)
                .unwrap();
            up.lock().unwrap().insert(n.parse().unwrap(), plain);
            return reply_raw(204, "", b"");
        }
        if p == format!("{file}/complete") {
            let n = up.lock().unwrap().len();
            return reply_json(200, json!({"file":{"id":"113000000001","name":"opps.csv","chunkCount":n}}));
        }
        if p == task && seen.method == "POST" {
            assert_eq!(seen.json(), json!({"localeName":"en_US"}));
            return reply_json(200, json!({"task":{"taskId":"ABCDEF0123456789ABCDEF0123456789","taskState":"NOT_STARTED","creationTime":1}}));
        }
        if p == format!("{task}/ABCDEF0123456789ABCDEF0123456789") {
            let polls = log.iter().filter(|s| s.path == p).count();
            return if polls < 2 {
                reply_json(200, json!({"task":{"taskId":"ABCDEF0123456789ABCDEF0123456789","taskState":"IN_PROGRESS","progress":0.5}}))
            } else {
                reply_json(200, json!({"task":{"taskId":"ABCDEF0123456789ABCDEF0123456789","taskState":"COMPLETE","progress":1.0,
                    "result":{"successful":false,"failureDumpAvailable":true,"objectId":"112000000001",
                        "details":[{"type":"hierarchyRowsProcessed","values":["successRowCount","8","failedCount","2"]}]}}}))
            };
        }
        let dump_base = format!("{task}/ABCDEF0123456789ABCDEF0123456789/dump");
        if p == format!("{dump_base}/chunks") {
            return reply_json(200, json!({"chunks":[{"id":"0","name":"Chunk 0"},{"id":"1","name":"Chunk 1"}]}));
        }
        // The dump split in the middle of a row: the client must join before parsing.
        if p == format!("{dump_base}/chunks/0") {
            return reply_raw(200, "application/octet-stream", &dump.as_bytes()[..60]);
        }
        if p == format!("{dump_base}/chunks/1") {
            return reply_raw(200, "application/octet-stream", &dump.as_bytes()[60..]);
        }
        reply_json(404, json!({"status":{"code":404,"message":"Not Found"}}))
    })
    .await;
    let mut cfg = config(&fake.url, AuthMethod::Token(Secret::new("static")));
    cfg.chunk_bytes = 10;
    let client = AnaplanClient::new(cfg).unwrap();
    let data = b"Code,Amount\n006A,abc\n006B,5\n006C,7\n";
    let file = client
        .upload_file("W1", "M1", "113000000001", data)
        .await
        .unwrap();
    assert_eq!(file.chunk_count, Some(4));
    let joined: Vec<u8> = uploaded
        .lock()
        .unwrap()
        .values()
        .flatten()
        .copied()
        .collect();
    assert_eq!(joined, data);

    let outcome = client.run_import("W1", "M1", "112000000001").await.unwrap();
    assert!(!outcome.successful);
    assert_eq!(outcome.count("failedCount"), Some(2));
    assert_eq!(outcome.row_errors.len(), 2);
    assert_eq!(outcome.row_errors[0].line, Some(2));
    assert_eq!(outcome.row_errors[1].errors, ["Item not found, skipped"]);
    assert_eq!(
        outcome.row_errors[1].values,
        [
            ("Code".to_string(), "006C".to_string()),
            ("Amount".to_string(), String::new())
        ]
    );
    // Polls no more often than the configured interval, the first one after it too.
    let seen = fake.seen();
    let start = seen
        .iter()
        .find(|s| s.path.ends_with("/tasks") && s.method == "POST")
        .unwrap()
        .at;
    let polls: Vec<Instant> = seen
        .iter()
        .filter(|s| s.path.ends_with("/tasks/ABCDEF0123456789ABCDEF0123456789"))
        .map(|s| s.at)
        .collect();
    assert_eq!(polls.len(), 3);
    let mut last = start;
    for at in polls {
        assert!(at - last >= Duration::from_millis(45), "{:?}", at - last);
        last = at;
    }
}

#[tokio::test]
async fn export_downloads_its_file_chunks_and_a_bad_upload_id_is_refused() {
    let fake = start_fake(|seen, _| {
        let p = seen.path.as_str();
        if p == format!("{MODEL}/exports/116000000001/tasks") {
            return reply_json(200, json!({"task":{"taskId":"T1","taskState":"NOT_STARTED"}}));
        }
        if p == format!("{MODEL}/exports/116000000001/tasks/T1") {
            return reply_json(200, json!({"task":{"taskId":"T1","taskState":"COMPLETE",
                "result":{"successful":true,"failureDumpAvailable":false,"objectId":"116000000001"}}}));
        }
        if p == format!("{MODEL}/files/116000000001/chunks") {
            return reply_json(200, json!({"chunks":[{"id":"0","name":"Chunk 0"},{"id":"1","name":"Chunk 1"}]}));
        }
        if p == format!("{MODEL}/files/116000000001/chunks/0") {
            return reply_raw(200, "application/octet-stream", b"Code,Amount\n006A,");
        }
        if p == format!("{MODEL}/files/116000000001/chunks/1") {
            return reply_raw(200, "application/octet-stream", b"12.50\n");
        }
        if p == format!("{MODEL}/files/113000000099") {
            // Anaplan creates a private file under another id for an unknown one.
            return reply_json(200, json!({"file":{"id":"113000000123","name":"113000000099"}}));
        }
        reply_json(404, json!({"status":{"code":404,"message":"Not Found"}}))
    })
    .await;
    let client =
        AnaplanClient::new(config(&fake.url, AuthMethod::Token(Secret::new("static")))).unwrap();
    let bytes = client.run_export("W1", "M1", "116000000001").await.unwrap();
    assert_eq!(bytes, b"Code,Amount\n006A,12.50\n");
    let err = client
        .upload_file("W1", "M1", "113000000099", b"x")
        .await
        .unwrap_err();
    assert!(matches!(err, AnaplanError::UnknownFile { .. }), "{err:?}");
}

#[test]
fn the_retired_api_is_refused_at_construction() {
    let cfg = AnaplanConfig::new(
        "https://auth.anaplan.com",
        "https://api.anaplan.com/1/3",
        AuthMethod::Token(Secret::new("t")),
    );
    let err = AnaplanClient::new(cfg).unwrap_err();
    assert!(err.to_string().contains("use the 2/0 API"), "{err}");
}

/// A server whose every answer is `body` with `headers`: for the size cap.
async fn answering(body: Vec<u8>, gzip: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = Arc::new(body);
    let app = Router::new().fallback(move || {
        let body = body.clone();
        async move {
            let mut r = Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json");
            if gzip {
                r = r.header("content-encoding", "gzip");
            }
            r.body(Body::from(body.as_ref().clone())).unwrap()
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// 64 MiB of JSON-looking spaces, gzipped to about 64 KiB.
fn gzip_bomb() -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(b"{\"workspaces\":[").unwrap();
    let spaces = vec![b' '; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&spaces).unwrap();
    }
    gz.finish().unwrap()
}

#[tokio::test]
async fn an_answer_past_the_size_cap_is_refused_not_read_whole() {
    let big = {
        let mut b = b"{\"workspaces\":[".to_vec();
        b.resize(3 << 20, b' ');
        b
    };
    let bomb = gzip_bomb();
    assert!(bomb.len() < 1 << 20, "the bomb is small on the wire");
    for (body, gzip) in [(big, false), (bomb, true)] {
        let url = answering(body, gzip).await;
        let mut cfg = config(&url, AuthMethod::Token(Secret::new("static")));
        cfg.max_response_bytes = 1 << 20;
        let client = AnaplanClient::new(cfg).unwrap();
        let e = client.list_workspaces().await.unwrap_err();
        assert!(
            matches!(e, AnaplanError::TooLarge { .. }),
            "gzip {gzip}: {e:?}"
        );
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
        let stats = client.stats();
        assert_eq!((stats.reads, stats.retries), (1, 0), "not asked again");
    }
}
