//! The CRM simulator: SOQL nesting and `LIKE` matching bounded.

use std::time::{Duration, Instant};

use plansync_sim::crm::{
    self, CrmSimConfig, CrmSimHandle, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET,
};
use serde_json::json;

use crate::http::{self, encode};

const API: &str = "/services/data/v59.0";

async fn start() -> CrmSimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    crm::start(CrmSimConfig::default(), listener)
        .await
        .expect("start")
}

async fn access_token(sim: &CrmSimHandle) -> String {
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        encode(DEFAULT_CLIENT_ID),
        encode(DEFAULT_CLIENT_SECRET)
    );
    let r = http::send(
        sim.instance_url(),
        "POST",
        "/services/oauth2/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["access_token"]
        .as_str()
        .expect("a token")
        .to_string()
}

async fn query(sim: &CrmSimHandle, token: &str, soql: &str) -> http::Response {
    let bearer = format!("Bearer {token}");
    http::send(
        sim.instance_url(),
        "GET",
        &format!("{API}/query?q={}", encode(soql)),
        &[("Authorization", &bearer)],
        b"",
    )
    .await
}

fn error_code(r: &http::Response) -> String {
    r.json()[0]["errorCode"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

// A worker thread of its own for the simulator, so a stuck handler cannot stall the test's
// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_soql_is_a_malformed_query_not_a_crash() {
    let sim = start().await;
    let token = access_token(&sim).await;
    let nots = format!(
        "SELECT Id FROM Account WHERE {}Name = 'x'",
        "NOT ".repeat(8000)
    );
    let parens = format!(
        "SELECT Id FROM Account WHERE {}Name = 'x'{}",
        "(".repeat(8000),
        ")".repeat(8000)
    );
    for soql in [&nots, &parens] {
        let r = query(&sim, &token, soql).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(error_code(&r), "MALFORMED_QUERY");
        assert!(r.text().contains("more than 64 deep"), "{}", r.text());
    }
    // Nesting within the bound, and a long flat chain, are still answered.
    let nested = format!(
        "SELECT Id FROM Account WHERE {}NOT Name = 'x'{}",
        "(".repeat(60),
        ")".repeat(60)
    );
    // As long as a URI may be (64 KB).
    let chain = vec!["Name != 'x'"; 1500].join(" AND ");
    for soql in [nested, format!("SELECT Id FROM Account WHERE {chain}")] {
        let r = query(&sim, &token, &soql).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["totalSize"], 2, "both seeded accounts");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn like_with_many_wildcards_is_answered_at_once() {
    let sim = start().await;
    let token = access_token(&sim).await;
    sim.create(
        "Account",
        // As long as the field holds: enough for a backtracking match to take years.
        json!({"Name": "Long", "Industry": "a".repeat(255)}),
        None,
    )
    .expect("create");
    let started = Instant::now();
    let miss = query(
        &sim,
        &token,
        "SELECT Id FROM Account WHERE Industry LIKE '%a%a%a%a%a%a%a%a%b'",
    )
    .await;
    assert_eq!(miss.status, 200, "{}", miss.text());
    assert_eq!(miss.json()["totalSize"], 0);
    let hit = query(
        &sim,
        &token,
        "SELECT Id FROM Account WHERE Industry LIKE '%A%a%_%a%a%a%a%a'",
    )
    .await;
    assert_eq!(hit.json()["totalSize"], 1, "{}", hit.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    sim.shutdown().await;
}

/// A `/__sim/` call with a JSON body.
async fn hook(sim: &CrmSimHandle, path: &str, body: &str) -> http::Response {
    http::send(
        sim.instance_url(),
        "POST",
        path,
        &[
            ("Content-Type", "application/json"),
            ("X-Sim-Token", sim.hooks_token()),
        ],
        body.as_bytes(),
    )
    .await
}

#[tokio::test]
async fn nonsense_fault_and_limit_settings_are_refused_naming_the_field() {
    let sim = start().await;
    for (path, body, field) in [
        ("/__sim/lock_errors", r#"{"count": -1}"#, "count"),
        ("/__sim/lock_errors", r#"{"count": 1.5}"#, "count"),
        ("/__sim/lock_errors", r#"{}"#, "count"),
        ("/__sim/retention", r#"{"seconds": 99999999999}"#, "seconds"),
        ("/__sim/age", r#"{"seconds": -3600}"#, "seconds"),
        (
            "/__sim/purge",
            r#"{"up_to_replay_id": "all"}"#,
            "up_to_replay_id",
        ),
        ("/__sim/limits", r#"{"daily_limit": -1}"#, "daily_limit"),
        ("/__sim/limits", r#"{"used": 5, "limt": 10}"#, "limt"),
    ] {
        let r = hook(&sim, path, body).await;
        assert_eq!(r.status, 400, "{path} {body}: {}", r.text());
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            error.contains(&format!("`{field}`")),
            "{path} {body}: {error}"
        );
    }
    assert_eq!(sim.api_usage(), (0, 100_000), "the limits are as they were");
    let r = hook(&sim, "/__sim/limits", r#"{"daily_limit": 10, "used": 10}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sim.api_usage(), (10, 10));
    sim.shutdown().await;
}

#[tokio::test]
async fn the_hooks_need_the_token() {
    let sim = start().await;
    let deal = "0065g0000000001AAA";
    let edit = format!(r#"{{"object": "Opportunity", "id": "{deal}", "fields": {{"Amount": 1}}}}"#);
    let amount = || sim.record(deal).expect("the deal")["Amount"].clone();
    let before = amount();
    for (headers, status) in [
        (vec![], 401),
        (vec![("X-Sim-Token", "guess")], 403),
        // Only the header counts, not the API's bearer token.
        (vec![("Authorization", "Bearer guess")], 401),
    ] {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend(headers);
        for (method, path, body) in [
            ("POST", "/__sim/edit", edit.as_str()),
            ("GET", "/__sim/requests", ""),
            ("GET", "/__sim/no-such-hook", ""),
        ] {
            let r = http::send(sim.instance_url(), method, path, &all, body.as_bytes()).await;
            assert_eq!(r.status, status, "{method} {path}: {}", r.text());
            let error = r.json()["error"].as_str().unwrap_or_default().to_string();
            assert!(error.contains("X-Sim-Token"), "{error}");
        }
    }
    assert_eq!(amount(), before, "no edit went through");
    let r = hook(&sim, "/__sim/edit", &edit).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(amount(), 1.0);
    sim.shutdown().await;

    // A configured token is the one taken.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = CrmSimConfig {
        hooks_token: Some("configured-token".into()),
        ..CrmSimConfig::default()
    };
    let sim = crm::start(config, listener).await.expect("start");
    assert_eq!(sim.hooks_token(), "configured-token");
    let r = hook(&sim, "/__sim/lock_errors", r#"{"count": 1}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    sim.shutdown().await;
}
