//! The Anaplan simulator: gzip chunks and formula nesting bounded.

use std::io::Write;

use plansync_sim::anaplan::{
    AnaplanSim, DEFAULT_PASSWORD, DEFAULT_USER, Seed, SimConfig, SimHandle,
};

use crate::http;

const WS: &str = "8a81b09d5e8c6f27015e8d4f1a2b3c4d";
const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";

async fn start(config: SimConfig) -> SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    AnaplanSim::start(config, listener).await.expect("start")
}

async fn login(sim: &SimHandle) -> String {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{DEFAULT_USER}:{DEFAULT_PASSWORD}"));
    let r = http::send(
        &sim.base_url(),
        "POST",
        "/token/authenticate",
        &[("Authorization", &format!("Basic {basic}"))],
        b"",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["tokenInfo"]["tokenValue"]
        .as_str()
        .expect("a token")
        .to_string();
    format!("AnaplanAuthToken {token}")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_chunk_that_inflates_past_the_chunk_limit_is_refused() {
    let sim = start(SimConfig::default()).await;
    let auth = login(&sim).await;
    let files = format!("/2/0/workspaces/{WS}/models/{MODEL}/files");
    let list = http::send(
        &sim.base_url(),
        "GET",
        &files,
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    let file = list.json()["files"][0]["id"]
        .as_str()
        .expect("a seeded file")
        .to_string();
    let r = http::send(
        &sim.base_url(),
        "POST",
        &format!("{files}/{file}"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        br#"{"chunkCount": -1}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let chunk = format!("{files}/{file}/chunks/0");
    let put = |body: Vec<u8>| {
        let (auth, chunk, base) = (auth.clone(), chunk.clone(), sim.base_url());
        async move {
            http::send(
                &base,
                "PUT",
                &chunk,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/x-gzip"),
                ],
                &body,
            )
            .await
        }
    };
    // 60 MB of zeros is a 60 KB gzip body: well under the request limit, over the chunk one.
    let bomb = gzip(&vec![0u8; 60 * 1024 * 1024]);
    assert!(bomb.len() < 1024 * 1024);
    let r = put(bomb).await;
    assert_eq!(r.status, 413, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"]["code"], 413);
    let message = body["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("50 MB"), "{message}");
    assert_eq!(body["path"], chunk.as_str());
    // A chunk within the limit is stored.
    let r = put(gzip(b"Code,Amount\nX,1\n")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_deeply_nested_formula_in_a_seed_is_refused_at_start() {
    let with_formula = |formula: String| {
        let mut seed = Seed::default_seed();
        let li = seed.module[0]
            .line_items
            .iter_mut()
            .find(|l| l.formula.is_some())
            .expect("a calculated line item");
        li.formula = Some(formula);
        SimConfig {
            seed,
            ..SimConfig::default()
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let deep = format!("{}Amount{}", "(".repeat(100_000), ")".repeat(100_000));
    let err = match AnaplanSim::start(with_formula(deep), listener).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a seed nesting 100,000 parentheses started"),
    };
    assert!(err.contains("more than 64 deep"), "{err}");
    // Within the bound it starts, and the calculated cells are served.
    let fine = format!("{}Amount * 2{}", "(".repeat(64), ")".repeat(64));
    let sim = start(with_formula(fine)).await;
    let cells = sim
        .cells(MODEL, "OPP01 Opportunity Data")
        .expect("the module");
    assert!(!cells.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn nonsense_fault_settings_are_refused_naming_the_field() {
    let sim = start(SimConfig::default()).await;
    for (body, field) in [
        (r#"{"error_rate": 1.5}"#, "error_rate"),
        (r#"{"drop_rate": -0.5}"#, "drop_rate"),
        (r#"{"latency_ms": -5}"#, "latency_ms"),
        (r#"{"latency_ms": 100000000000}"#, "latency_ms"),
        (r#"{"error_status": 404}"#, "error_status"),
        (r#"{"fail_next": "many"}"#, "fail_next"),
        (r#"{"error_rat": 0.5}"#, "error_rat"),
    ] {
        let r = admin(&sim, "PUT", "/__sim/faults", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let json = r.json();
        assert_eq!(json["status"]["code"], 400);
        let message = json["status"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{body}: {message}");
    }
    assert_eq!(sim.faults(), plansync_sim::anaplan::Faults::default());
    let r = admin(&sim, "PUT", "/__sim/rate-limit", r#"{"per_minute": -1}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("per_minute"), "{}", r.text());
    let r = admin(
        &sim,
        "PUT",
        "/__sim/faults",
        r#"{"error_rate": 0.5, "latency_ms": 5}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sim.faults().error_rate, 0.5);
    sim.shutdown().await;
}

/// A `/__sim/` call with a JSON body.
async fn admin(sim: &SimHandle, method: &str, path: &str, body: &str) -> http::Response {
    http::send(
        &sim.base_url(),
        method,
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
async fn the_hooks_need_the_token() {
    let sim = start(SimConfig::default()).await;
    let cells = format!("/__sim/models/{MODEL}/modules/OPP01%20Opportunity%20Data/cells");
    for (headers, status) in [
        (vec![], 401),
        (vec![("X-Sim-Token", "guess")], 403),
        (vec![("Authorization", "Bearer guess")], 401),
    ] {
        for (method, path, body) in [
            ("PUT", "/__sim/faults", r#"{"fail_next": 5}"#),
            ("POST", "/__sim/tokens/expire", ""),
            ("GET", cells.as_str(), ""),
        ] {
            let r = http::send(&sim.base_url(), method, path, &headers, body.as_bytes()).await;
            assert_eq!(r.status, status, "{method} {path}: {}", r.text());
            let json = r.json();
            assert_eq!(json["status"]["code"], status);
            let message = json["status"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("X-Sim-Token"), "{message}");
        }
    }
    assert_eq!(sim.faults(), plansync_sim::anaplan::Faults::default());
    let r = admin(&sim, "GET", &cells, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    sim.shutdown().await;
}
