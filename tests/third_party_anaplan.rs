//! The Anaplan simulator read by code it did not write: anaplan-sdk (PyPI, pinned in
//! `.ci/requirements.txt`), unchanged but for a transport that sends its calls to the loopback
//! simulator. Its own models parse the modules, every line item's format metadata (a text line
//! item must say its `textType`), the lists and a list's items; what it read is checked against
//! the simulator's seed.

use std::process::Command;

use crate::support::*;
use plansync_sim::anaplan::{DEFAULT_SEED_TOML, SimConfig};
use serde_json::{Value as Json, json};

const WORKSPACE: &str = "8a81b09d5e8c6f27015e8d4f1a2b3c4d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anaplan_sdk_reads_the_model_structure_with_every_format() {
    // The default model, with a text line item beside its numbers, list, date and booleans.
    let text = DEFAULT_SEED_TOML.replacen(
        r#"  { name = "Amount", format = "number" },"#,
        "  { name = \"Amount\", format = \"number\" },\n  { name = \"Planner Notes\", format = \"text\" },",
        1,
    );
    assert_ne!(text, DEFAULT_SEED_TOML, "the seed has the line to extend");
    let seed = plansync_sim::anaplan::Seed::from_toml_str(&text, "test seed").expect("seed");
    let anaplan = anaplan_sim(SimConfig {
        seed,
        ..SimConfig::default()
    })
    .await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let answer: Json = reqwest::Client::new()
        .post(format!("{}/token/authenticate", anaplan.auth_url()))
        .basic_auth(
            plansync_sim::anaplan::DEFAULT_USER,
            Some(plansync_sim::anaplan::DEFAULT_PASSWORD),
        )
        .send()
        .await
        .expect("authenticate")
        .json()
        .await
        .expect("JSON");
    let token = answer["tokenInfo"]["tokenValue"]
        .as_str()
        .expect("a token")
        .to_string();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/third_party_anaplan.py");
    let python = std::env::var("PLANSYNC_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let url = anaplan.base_url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(&script)
            .env("ANAPLAN_URL", url)
            .env("ANAPLAN_TOKEN", token)
            .env("ANAPLAN_WORKSPACE", WORKSPACE)
            .env("ANAPLAN_MODEL", MODEL)
            .output()
            .expect("python (set PLANSYNC_TEST_PYTHON to a venv from .ci/requirements.txt)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "anaplan-sdk failed against the simulator (is it installed? .ci/run sets up a venv):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Json = serde_json::from_slice(&out.stdout).expect("one JSON object");

    assert_eq!(seen["modules"], json!([OPP_MODULE, TER_MODULE]));
    let items = seen["line_items"].as_array().expect("line items");
    let find = |name: &str| {
        items
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {seen}"))
    };
    let notes = find("Planner Notes");
    assert_eq!(notes["format"], "TEXT");
    assert_eq!(notes["metadata"]["dataType"], "TEXT");
    assert_eq!(notes["metadata"]["textType"], "GENERAL");
    let amount = find("Amount");
    assert_eq!(amount["metadata"]["dataType"], "NUMBER");
    assert_eq!(amount["metadata"]["decimalSeparator"], "FULL_STOP");
    let stage = find("Stage");
    assert_eq!(stage["format"], "LIST");
    assert_eq!(stage["metadata"]["dataType"], "ENTITY");
    assert!(
        stage["metadata"]["hierarchyEntityId"].as_i64() > Some(0),
        "{stage}"
    );
    assert_eq!(find("Close Date")["metadata"], json!({"dataType": "DATE"}));
    assert_eq!(find("Approved")["metadata"], json!({"dataType": "BOOLEAN"}));
    assert_eq!(items.len(), 13, "every line item of both modules");
    assert!(
        seen["lists"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == OPP_LIST)
    );
    assert_eq!(
        seen["stages"],
        json!([
            "Lost",
            "Negotiation",
            "Proposal",
            "Prospecting",
            "Qualification",
            "Won"
        ])
    );
}
