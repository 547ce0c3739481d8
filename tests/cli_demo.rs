//! `plansync demo` through the real binary at a small size: its JSON summary says both
//! systems agree, nothing was written after quiescence, and every source, API and exception
//! kind the script exercises shows up; the SQLite file it leaves behind answers the review
//! commands the summary suggests.

use std::process::Command;

use serde_json::Value;

fn plansync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plansync"))
}

#[test]
fn a_small_demo_agrees_and_reports_in_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("demo.db");
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let out = plansync()
        .args([
            "demo",
            "--records",
            "150",
            "--duration",
            "3",
            "--json",
            "--db",
        ])
        .arg(&db)
        .arg("--rules")
        .arg(&rules)
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");

    assert_eq!(report["agree"], true, "{report:#}");
    assert_eq!(report["writes_after_quiescence"], 0, "{report:#}");
    let n = |path: &[&str]| -> u64 {
        let mut v = &report;
        for p in path {
            v = &v[*p];
        }
        v.as_u64()
            .unwrap_or_else(|| panic!("{path:?} is not a count: {report:#}"))
    };
    // Every source delivered changes.
    assert!(n(&["changes", "crm_stream"]) > 0);
    assert!(n(&["changes", "crm_poll"]) > 0);
    assert!(n(&["changes", "anaplan_poll"]) > 0);
    // Writes went both ways, through the APIs the batches called for.
    assert!(n(&["writes", "anaplan_transactional"]) + n(&["writes", "anaplan_bulk"]) > 0);
    assert!(n(&["writes", "crm_collections"]) + n(&["writes", "crm_bulk"]) > 0);
    assert!(n(&["calls", "anaplan"]) > 0 && n(&["calls", "crm"]) > 0);
    let _ = n(&["rate_limited"]);
    // Latency was measured from the store.
    assert!(
        report["latency_ms"]["p50"]
            .as_f64()
            .is_some_and(|v| v > 0.0)
    );
    assert!(report["latency_ms"]["p99"].as_f64() >= report["latency_ms"]["p50"].as_f64());
    // The script's concurrent edits and invalid values left exceptions of those kinds.
    assert!(n(&["exceptions", "conflict"]) >= 3, "{report:#}");
    assert!(n(&["exceptions", "validation"]) >= 3, "{report:#}");

    // The file stays for review, and the suggested commands work on it.
    assert!(db.exists());
    let listed = plansync()
        .args([
            "exceptions",
            "list",
            "--status",
            "open",
            "--format",
            "json",
            "--db",
        ])
        .arg(&db)
        .output()
        .expect("list");
    assert!(listed.status.success());
    let open: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(
        open.as_array().map(Vec::len),
        report["open_exceptions"].as_u64().map(|n| n as usize)
    );
    let status = plansync()
        .args(["status", "--format", "json", "--db"])
        .arg(&db)
        .output()
        .expect("status");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn keep_running_leaves_both_systems_up_until_interrupted() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("demo.db");
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut child = plansync()
        .args([
            "demo",
            "--records",
            "60",
            "--duration",
            "1",
            "--json",
            "--keep-running",
            "--db",
        ])
        .arg(&db)
        .arg("--rules")
        .arg(&rules)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the demo");
    let stderr = child.stderr.take().expect("stderr");
    let mut urls = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("line");
        if let Some(url) = line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
        {
            urls.push(url.to_string());
        }
        if line.trim_start().starts_with("store") {
            break;
        }
    }
    assert_eq!(urls.len(), 2, "the CRM and Anaplan URLs: {urls:?}");
    // The CRM simulator still answers, as any client would reach it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let code = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            reqwest::Client::new()
                .post(format!("{}/services/oauth2/token", urls[0]))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", "plansync-demo"),
                    ("client_secret", "demo-secret"),
                ])
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
        .expect("the CRM simulator answers");
    assert_eq!(code, 200);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(
        child.wait().expect("wait").success(),
        "exits 0 after Ctrl-C"
    );
}

/// Run from a directory with no `rules/` (as after `cargo install`), the demo uses its
/// built-in rules, and its summary explains itself: every figure has a unit, latency is
/// reported per phase of the day, the counts that differ from people's edits say why, and
/// it names the files it leaves behind.
#[test]
fn outside_a_checkout_the_summary_explains_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = plansync()
        .current_dir(dir.path())
        .args(["demo", "--records", "120", "--duration", "3"])
        .output()
        .expect("run the demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for heading in [
        "What people did",
        "The first reconciliation",
        "What plansync decided, per field change (from the audit)",
        "Latency, CRM commit → Anaplan acknowledgement, by phase of the day",
        "Left behind (the next demo with the same --db replaces them):",
    ] {
        assert!(
            text.lines().any(|l| l == heading),
            "no `{heading}` in:\n{text}"
        );
    }
    // Each phase with writes has its own figures; the quarter-end burst says why it is slow.
    let latency = |phase: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(phase) && l.contains(" ms, p99 "))
            .unwrap_or_else(|| panic!("no latency for `{phase}` in:\n{text}"))
            .to_string()
    };
    assert!(latency("reps at work").contains("writes)"));
    assert!(latency("quarter-end burst").contains("writes)"));
    assert!(text.contains("During the quarter-end burst the demo squeezes Anaplan's limit to 6"));
    assert!(text.contains("Why these differ from what people did"));
    // Every figure has a unit: no value column is a bare number.
    let bare = bare_figures(&text);
    assert!(bare.is_empty(), "figures without a unit: {bare:?}\n{text}");
    // It fits a 100-column terminal.
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "too wide: {line}");
    }
    // The files it names are there.
    assert!(
        text.contains("  plansync-demo.db\n      the store, for review"),
        "{text}"
    );
    assert!(
        text.contains("  plansync-demo.quarter-end-rules/\n"),
        "{text}"
    );
    assert!(dir.path().join("plansync-demo.db").is_file());
    let rules = dir.path().join("plansync-demo.quarter-end-rules");
    assert!(rules.join("opportunity.toml").is_file());
    assert!(rules.join("territory.toml").is_file());
}

/// Summary lines (`  label   value`) whose value is only digits and separators.
fn bare_figures(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.len() > 39)
        .filter(|l| {
            let value = l.chars().skip(39).collect::<String>();
            !value.trim().is_empty() && value.trim().chars().all(|c| c.is_ascii_digit() || c == ',')
        })
        .map(str::to_string)
        .collect()
}
