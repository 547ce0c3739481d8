//! `plansync check` through the real binary against both simulators over loopback sockets: a
//! good configuration passes and writes nothing anywhere; a wrong password, an unknown module,
//! a missing CRM field and a read-only field the rules write are each named, with what to do,
//! and exit 1; `--format json` parses; a configuration that cannot be read exits 2.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value as Json;
use tokio::net::TcpListener;

use plansync_sim::anaplan::{self as asim, AnaplanSim, SimConfig, SimHandle};
use plansync_sim::crm::seed::DEFAULT_SEED;
use plansync_sim::crm::{self as csim, CrmSimConfig, CrmSimHandle, Seed};

struct Sims {
    crm: CrmSimHandle,
    anaplan: SimHandle,
}

async fn sims_with(crm_seed: Seed) -> Sims {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = CrmSimConfig {
        seed: crm_seed,
        ..CrmSimConfig::default()
    };
    let crm = csim::start(config, listener).await.expect("CRM sim");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let anaplan = AnaplanSim::start(SimConfig::default(), listener)
        .await
        .expect("Anaplan sim");
    Sims { crm, anaplan }
}

async fn sims() -> Sims {
    sims_with(Seed::default_org()).await
}

fn repo_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

/// A copy of the project's rule files with `from` replaced by `to` in `file`.
fn rules_with(dir: &Path, file: &str, from: &str, to: &str) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    for name in ["opportunity.toml", "territory.toml"] {
        let text = std::fs::read_to_string(repo_rules().join(name)).expect("read rules");
        let text = if name == file {
            assert!(text.contains(from), "{name} has {from}");
            text.replace(from, to)
        } else {
            text
        };
        std::fs::write(rules.join(name), text).expect("write rules");
    }
    rules
}

fn write_config(dir: &Path, rules: &Path, sims: &Sims, streaming: &str) -> PathBuf {
    let text = format!(
        r#"rules = "{rules}"
store = "plansync.db"

[crm]
login_url = "{crm}"
api_version = "59.0"
streaming = "{streaming}"

[crm.auth]
method = "client_credentials"
client_id = "{client}"
client_secret_env = "PLANSYNC_TEST_CRM_SECRET"

[anaplan]
auth_url = "{auth}"
api_url = "{api}"

[anaplan.auth]
method = "basic"
user = "{user}"
password_env = "PLANSYNC_TEST_ANAPLAN_PASSWORD"

[engine]
bulk_imports = {{ opportunity = "OPP01 Opportunity Data from opportunities.csv" }}
"#,
        rules = rules.display(),
        crm = sims.crm.instance_url(),
        client = csim::DEFAULT_CLIENT_ID,
        auth = sims.anaplan.auth_url(),
        api = sims.anaplan.api_url(),
        user = asim::DEFAULT_USER,
    );
    let path = dir.join("plansync.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Runs `plansync check` off the async workers (the simulators serve on them meanwhile).
async fn check(config: &Path, anaplan_password: &str, extra: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_plansync"));
    cmd.arg("check")
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("NO_COLOR", "1")
        .env("PLANSYNC_TEST_CRM_SECRET", csim::DEFAULT_CLIENT_SECRET)
        .env("PLANSYNC_TEST_ANAPLAN_PASSWORD", anaplan_password)
        .env_remove("PLANSYNC_CONFIG");
    tokio::task::spawn_blocking(move || cmd.output().expect("run plansync check"))
        .await
        .expect("join")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn explain(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The output line of check `name`.
fn line<'a>(text: &'a str, name: &str) -> &'a str {
    let prefix_ok = format!("✓ {name}:");
    let prefix_bad = format!("✗ {name}:");
    let prefix_unknown = format!("? {name}:");
    text.lines()
        .find(|l| {
            l.starts_with(&prefix_ok)
                || l.starts_with(&prefix_bad)
                || l.starts_with(&prefix_unknown)
        })
        .unwrap_or_else(|| panic!("no line for {name} in:\n{text}"))
}

/// Exit 1 and exactly the named checks failed, each with what to do.
fn assert_fails_only(out: &Output, names: &[&str]) -> String {
    let text = stdout(out);
    assert_eq!(out.status.code(), Some(1), "{}", explain(out));
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with('✗')).collect();
    assert_eq!(failed.len(), names.len(), "{}", explain(out));
    for name in names {
        let l = line(&text, name);
        assert!(l.starts_with('✗'), "{l}");
        assert!(l.contains(" → "), "says what to do: {l}");
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_config_passes_and_writes_nothing() {
    let sims = sims().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &repo_rules(), &sims, "long_polling");
    sims.crm.reset_request_log();
    sims.anaplan.clear_request_log();
    let out = check(&config, asim::DEFAULT_PASSWORD, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let text = stdout(&out);
    for name in [
        "anaplan.login",
        "anaplan.opportunity.workspace",
        "anaplan.opportunity.model",
        "anaplan.opportunity.module",
        "anaplan.opportunity.line_items",
        "anaplan.opportunity.flags",
        "anaplan.opportunity.properties",
        "anaplan.opportunity.bulk_import",
        "anaplan.territory.list",
        "crm.login",
        "crm.Opportunity.Amount",
        "crm.Territory__c.Annual_Quota__c",
        "crm.cdc:/data/OpportunityChangeEvent",
        "crm.cdc:/data/Territory__ChangeEvent",
    ] {
        assert!(line(&text, name).starts_with('✓'), "{name}:\n{text}");
    }
    assert!(
        text.lines()
            .all(|l| !l.starts_with('✗') && !l.starts_with('?')),
        "{text}"
    );
    assert!(text.contains("0 failed, 0 could not run"), "{text}");

    // Read-only: the CRM saw its token request, describes and the streaming probe; Anaplan its
    // login and listings. No store was created.
    for r in sims.crm.request_log() {
        let allowed = r.method == "GET"
            || r.path.starts_with("/services/oauth2/token")
            || r.path.starts_with("/cometd/");
        assert!(
            allowed,
            "a CRM request that may write: {} {}",
            r.method, r.path
        );
    }
    let anaplan = sims.anaplan.request_log();
    assert!(!anaplan.is_empty());
    for r in anaplan {
        let allowed = r.method == "GET" || r.path.ends_with("/token/authenticate");
        assert!(
            allowed,
            "an Anaplan request that may write: {} {}",
            r.method, r.path
        );
    }
    assert!(
        !dir.path().join("plansync.db").exists(),
        "no store is created"
    );
    assert_eq!(sims.crm.streaming_sessions(), 0, "the probe disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_anaplan_password_is_named() {
    let sims = sims().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &repo_rules(), &sims, "websocket");
    let out = check(&config, "not-the-password", &[]).await;
    let text = assert_fails_only(&out, &["anaplan.login"]);
    let login = line(&text, "anaplan.login");
    assert!(login.contains("401"), "{login}");
    assert!(login.contains("[anaplan.auth]"), "{login}");
    assert!(!login.contains("not-the-password"), "no secret is printed");
    // What depends on the login is said not to have been checked; the CRM is checked anyway.
    assert!(line(&text, "anaplan.models").starts_with('?'), "{text}");
    assert!(
        line(&text, "crm.Opportunity.Amount").starts_with('✓'),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_module_is_named() {
    let sims = sims().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_with(
        dir.path(),
        "opportunity.toml",
        r#"module = "OPP01 Opportunity Data""#,
        r#"module = "OPP99 Nowhere""#,
    );
    let config = write_config(dir.path(), &rules, &sims, "websocket");
    let out = check(&config, asim::DEFAULT_PASSWORD, &[]).await;
    let text = assert_fails_only(&out, &["anaplan.opportunity.module"]);
    let module = line(&text, "anaplan.opportunity.module");
    assert!(module.contains("OPP99 Nowhere"), "{module}");
    assert!(module.contains("opportunity.toml"), "{module}");
    assert!(
        line(&text, "anaplan.opportunity.line_items").starts_with('?'),
        "{text}"
    );
    // The list beside it still resolves; the other pairing is untouched.
    assert!(
        line(&text, "anaplan.opportunity.list").starts_with('✓'),
        "{text}"
    );
    assert!(
        line(&text, "anaplan.territory.module").starts_with('✓'),
        "{text}"
    );

    // The same run as JSON, for tools.
    let out = check(&config, asim::DEFAULT_PASSWORD, &["--format", "json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let body: Json = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(body["outcome"], "fail");
    assert_eq!(body["failed"], 1);
    let checks = body["checks"].as_array().expect("checks");
    // The module's line items and flags cannot be looked up without it: said, not hidden.
    assert_eq!(body["could_not_run"], 1);
    let count = |key: &str| body[key].as_u64().expect("a count") as usize;
    assert_eq!(
        count("passed") + count("failed") + count("could_not_run"),
        checks.len()
    );
    let module = checks
        .iter()
        .find(|c| c["name"] == "anaplan.opportunity.module")
        .expect("module check");
    assert_eq!(module["outcome"], "fail");
    assert!(
        module["detail"]
            .as_str()
            .expect("detail")
            .contains("OPP99 Nowhere")
    );
    assert!(module["fix"].is_string());
    let login = checks
        .iter()
        .find(|c| c["name"] == "crm.login")
        .expect("crm login");
    assert_eq!(login["outcome"], "pass");
    assert!(login.get("fix").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_crm_field_is_named() {
    // An org whose Opportunity calls the probability field something else.
    let seed =
        Seed::from_toml(&DEFAULT_SEED.replace("Probability", "Win_Chance__c")).expect("seed");
    let out = check_against(seed).await;
    let text = assert_fails_only(&out, &["crm.Opportunity.Probability"]);
    let field = line(&text, "crm.Opportunity.Probability");
    assert!(field.contains("no field `Probability`"), "{field}");
    assert!(field.contains("field-level access"), "{field}");
}

/// The default org with `field` (a currency field) read-only, as a formula would be.
fn seed_with_read_only(field: &str) -> Seed {
    let declared = format!(r#"{{ name = "{field}", type = "currency" }}"#);
    assert!(DEFAULT_SEED.contains(&declared), "{field}");
    let read_only = format!(r#"{{ name = "{field}", type = "currency", updateable = false }}"#);
    Seed::from_toml(&DEFAULT_SEED.replace(&declared, &read_only)).expect("seed")
}

/// `plansync check` of the project's rules against the default simulators but for `seed`.
async fn check_against(seed: Seed) -> Output {
    let sims = sims_with(seed).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &repo_rules(), &sims, "websocket");
    check(&config, asim::DEFAULT_PASSWORD, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_field_the_rules_write_is_named() {
    // Forecast_Override__c is shared in the rules (a planner's override is written to the CRM)
    // but a formula in this org.
    let out = check_against(seed_with_read_only("Forecast_Override__c")).await;
    let text = assert_fails_only(&out, &["crm.Opportunity.Forecast_Override__c"]);
    let field = line(&text, "crm.Opportunity.Forecast_Override__c");
    assert!(field.contains("not updateable (a formula)"), "{field}");
    assert!(field.contains(r#"owner = "crm""#), "{field}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_field_the_rules_never_write_passes() {
    // Amount is CRM-owned with `revert`: a planner's edit is put back in Anaplan, and nothing
    // is ever written to the CRM's Amount, so a read-only Amount is fine.
    let out = check_against(seed_with_read_only("Amount")).await;
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert!(line(&stdout(&out), "crm.Opportunity.Amount").contains("never written"));
}

#[test]
fn a_config_that_cannot_be_used_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("plansync.toml");
    std::fs::write(
        &config,
        "[crm]\nlogin_url = \"https://example.my.salesforce.com\"\nclient_secret = \"inline\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plansync"))
        .args(["check", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("client_secret"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// A text field the rules write to the CRM must not let through more than the field holds:
/// without `max_length` (or with one above the describe's length) a planner's long name would
/// only fail at its write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_field_written_without_a_length_limit_is_named() {
    let sims = sims().await;
    for (to, says) in [
        ("", "the rules set no max_length"),
        (
            "max_length = 300",
            "the rules let values of up to 300 through",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = rules_with(
            dir.path(),
            "territory.toml",
            "max_length = 80                  # what a custom object's Name holds: longer is held for review",
            to,
        );
        let config = write_config(dir.path(), &rules, &sims, "websocket");
        let out = check(&config, asim::DEFAULT_PASSWORD, &[]).await;
        // The file's own test case of a long name fails too, as it should.
        let text = assert_fails_only(&out, &["rules.territory.tests", "crm.Territory__c.Name"]);
        let field = line(&text, "crm.Territory__c.Name");
        assert!(field.contains("holds at most 255 characters"), "{field}");
        assert!(field.contains(says), "{field}");
        assert!(field.contains("max_length = 255"), "{field}");
    }
}
