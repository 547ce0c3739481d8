//! `plansync run`'s health, readiness and metrics over a real socket: `/metrics` is parsed
//! by the Prometheus project's own OpenMetrics parser (Python `prometheus_client`, which
//! CI installs in a virtual environment; `PLANSYNC_TEST_PYTHON` names its interpreter), and
//! what it says is checked against both simulators and the store.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::run::{run_config, simulators, spawn_run};
use plansync_sim::anaplan as asim;
use plansync_sim::crm as csim;
use serde_json::{Value as Json, json};

fn python() -> String {
    std::env::var("PLANSYNC_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// One sample of the scrape, as the parser read it.
#[derive(Debug, Clone)]
struct Sample {
    family: String,
    kind: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_openmetrics(text: &str) -> Vec<Sample> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/openmetrics_to_json.py");
    let mut child = Command::new(python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "python (set PLANSYNC_TEST_PYTHON to a venv with prometheus-client, as .ci/run does)",
        );
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the scrape (is prometheus-client installed? .ci/run sets up a venv): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Json = serde_json::from_str(l).unwrap();
            Sample {
                family: v["family"].as_str().unwrap().to_string(),
                kind: v["type"].as_str().unwrap().to_string(),
                name: v["name"].as_str().unwrap().to_string(),
                labels: serde_json::from_value(v["labels"].clone()).unwrap(),
                value: v["value"].as_f64().unwrap(),
            }
        })
        .collect()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_say_what_the_engine_does() {
    let (crm, anaplan) = simulators().await;
    let dir = tempfile::tempdir().unwrap();
    let engine = spawn_run(
        dir.path(),
        &run_config(&crm, &anaplan, "[engine]\nbatch_window = \"20ms\"\n"),
    );
    let read = || engine.log();
    // The address it listens on, from its log (port 0: any free one).
    let mut base = String::new();
    wait_for("the server's address in the log", async || {
        if let Some(line) = read().lines().find(|l| l.contains("http_listening")) {
            let address = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("address="))
                .unwrap_or_default()
                .to_string();
            base = format!("http://{address}");
            return true;
        }
        false
    })
    .await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let get = async |path: &str| {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, content_type, r.text().await.unwrap())
    };

    let (status, _, body) = get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    wait_for("readiness", async || get("/readyz").await.0 == 200).await;
    let (_, _, ready) = get("/readyz").await;
    let ready: Json = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["checks"]["first_run"], "ok", "{ready}");
    wait_for("the stream", async || {
        let (_, _, r) = get("/readyz").await;
        r.contains(r#""stream":"ok""#)
    })
    .await;

    // A CRM edit flows to Anaplan; the scrape counts it.
    let client = plansync::crm::CrmClient::new(plansync::crm::CrmConfig::new(
        crm.instance_url(),
        "59.0",
        plansync::crm::AuthConfig::ClientCredentials {
            client_id: csim::DEFAULT_CLIENT_ID.into(),
            client_secret: plansync::secret::Secret::new(csim::DEFAULT_CLIENT_SECRET),
        },
    ))
    .unwrap();
    let id = client
        .query("SELECT Id FROM Opportunity ORDER BY Id")
        .await
        .unwrap()
        .records
        .iter()
        .find_map(|r| r.get("Id").and_then(Json::as_str).map(str::to_string))
        .expect("a deal");
    crm.user_edit("Opportunity", &id, json!({ "Amount": 123456.0 }), None)
        .expect("edit");
    let cell = || {
        anaplan
            .cells("75A40874E6B64FA3AE0743278996850F", "OPP01 Opportunity Data")
            .and_then(|c| {
                c.get(&id)
                    .and_then(|r| r.get("Amount"))
                    .map(|v| v.to_string())
            })
    };
    wait_for("the edit in Anaplan", async || {
        cell().as_deref() == Some("123456")
    })
    .await;
    let (status, content_type, text) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let samples = parse_openmetrics(&text);
    let stream_changes = value(&samples, "plansync_changes_total", &[("source", "stream")]);
    assert!(stream_changes >= Some(1.0), "{text}");
    assert!(
        value(
            &samples,
            "plansync_writes_acknowledged_total",
            &[("side", "anaplan")]
        ) >= Some(1.0),
        "{text}"
    );
    assert!(
        samples
            .iter()
            .any(|s| s.family == "plansync_decisions" && s.kind == "counter" && s.value >= 1.0),
        "{text}"
    );
    assert_eq!(value(&samples, "plansync_stream_connected", &[]), Some(1.0));
    assert_eq!(
        value(&samples, "plansync_first_run_complete", &[]),
        Some(1.0)
    );
    // The org's daily API budget, read from `limits` at start (and from every answer).
    assert!(
        crm.request_log()
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/limits")),
        "the engine read the CRM's limits"
    );
    let max = value(&samples, "plansync_crm_api_daily", &[("of", "max")]);
    assert_eq!(max, Some(100_000.0), "{text}");
    let remaining = value(&samples, "plansync_crm_api_daily", &[("of", "remaining")]).unwrap();
    let (used_now, _) = crm.api_usage();
    assert!(
        remaining < 100_000.0 && remaining >= 100_000.0 - used_now as f64,
        "{remaining} remaining, the org has used {used_now}"
    );
    assert_eq!(
        value(&samples, "plansync_side_reachable", &[("side", "anaplan")]),
        Some(1.0)
    );
    assert!(
        value(
            &samples,
            "plansync_remote_calls_total",
            &[("side", "anaplan")]
        ) > Some(0.0)
    );
    assert_eq!(
        value(
            &samples,
            "plansync_outbox_oldest_age_seconds",
            &[("side", "anaplan")]
        ),
        Some(0.0),
        "nothing waits"
    );
    // The store agrees: the acknowledged write is in the outbox as done.
    let conn = rusqlite::Connection::open_with_flags(
        dir.path().join("plansync.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let done: f64 = conn
        .query_row(
            "SELECT count(*) FROM outbox WHERE target = 'anaplan' AND state = 'done'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as f64;
    assert_eq!(
        value(
            &samples,
            "plansync_outbox_writes",
            &[("side", "anaplan"), ("state", "done")]
        ),
        Some(done),
        "{text}"
    );
    for s in samples.iter().filter(|s| s.name.ends_with("_lag_seconds")) {
        assert!(s.labels.contains_key("source"), "{s:?}");
    }

    // Anaplan stops answering: not ready, and the scrape says which side.
    anaplan.set_faults(asim::Faults {
        error_rate: 1.0,
        error_status: 503,
        include_auth: true,
        ..asim::Faults::default()
    });
    engine.signal("USR1");
    wait_for("readiness to fail", async || get("/readyz").await.0 == 503).await;
    let (_, _, body) = get("/readyz").await;
    let body: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(body["checks"]["anaplan"], "unreachable", "{body}");
    assert_eq!(body["checks"]["crm"], "ok", "{body}");
    let samples = parse_openmetrics(&get("/metrics").await.2);
    assert_eq!(
        value(&samples, "plansync_side_reachable", &[("side", "anaplan")]),
        Some(0.0)
    );
    anaplan.set_faults(asim::Faults::default());
    engine.signal("USR1");
    wait_for("readiness again", async || get("/readyz").await.0 == 200).await;

    assert_eq!(get("/nope").await.0, 404);
    engine.signal("TERM");
    let log = read();
    assert!(engine.wait().success(), "{log}");
}

#[test]
fn a_port_in_use_stops_the_start_with_the_key_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plansync-sim.toml"),
    )
    .unwrap()
    .replace(
        "address = \"127.0.0.1:8490\"",
        &format!("address = \"127.0.0.1:{port}\""),
    )
    .replace(
        "rules = \"../rules\"",
        &format!(
            "rules = \"{}\"",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("rules")
                .display()
        ),
    );
    std::fs::write(dir.path().join("c.toml"), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_plansync"))
        .args(["run", "--config", "c.toml"])
        .current_dir(dir.path())
        .env("PLANSYNC_SIM_CRM_SECRET", "x")
        .env("PLANSYNC_SIM_ANAPLAN_PASSWORD", "x")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && stderr.contains("[http] address"),
        "{stderr}"
    );
}
