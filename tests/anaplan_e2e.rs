//! The production Anaplan client (`plansync::anaplan`) against the Anaplan simulator
//! (`plansync_sim::anaplan`) over real loopback sockets. The two were written independently
//! from the same public reference, so every test here checks that they agree: the outcome is
//! read both from what the client returned and from the simulator's model (its cells, lists and
//! request log), never from one side alone.

use crate::support::anaplan_sim;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use plansync::anaplan::{
    AnaplanClient, AnaplanConfig, AnaplanError, AuthMethod, CellValue, CellWrite, CertFormat,
    CsvLayout, DimRef, ItemRef, LineItemRef, ListItemWrite, RetryPolicy, TaskKind,
};
use plansync::model::Decimal;
use plansync::secret::Secret;
use plansync_sim::anaplan::{self as sim, Faults, Seed, SimConfig, SimHandle};
use proptest::prelude::*;
use serde_json::Value;

const WS: &str = "8a81b09d5e8c6f27015e8d4f1a2b3c4d";
const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";
const OPP: &str = "OPP01 Opportunity Data";
const OPPS: &str = "Opportunities";
const LONG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Set-up.

fn sim_config() -> SimConfig {
    SimConfig {
        task_step: Duration::from_millis(30),
        ..SimConfig::default()
    }
}

fn basic() -> AuthMethod {
    AuthMethod::Basic {
        user: sim::DEFAULT_USER.into(),
        password: Secret::new(sim::DEFAULT_PASSWORD),
    }
}

/// A client for `sim` with short waits: fast backoff, quick task polls.
fn client_config(sim: &SimHandle, auth: AuthMethod) -> AnaplanConfig {
    let mut c = AnaplanConfig::new(sim.auth_url(), sim.api_url(), auth);
    c.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(300),
        max_elapsed: Duration::from_secs(45),
    };
    c.task_poll_interval = Duration::from_millis(20);
    c.task_timeout = Duration::from_secs(30);
    c.request_timeout = Duration::from_secs(20);
    c
}

fn client(sim: &SimHandle) -> AnaplanClient {
    AnaplanClient::new(client_config(sim, basic())).unwrap()
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LONG, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {LONG:?}"))
}

fn num(s: &str) -> CellValue {
    let scale = s.split_once('.').map_or(0, |(_, f)| f.len()) as u8;
    CellValue::Number(Decimal::parse(s, scale).unwrap())
}

fn opp_cell(code: &str, line_item: &str, value: CellValue) -> CellWrite {
    CellWrite {
        line_item: LineItemRef::Name(line_item.into()),
        dimensions: vec![(DimRef::Name(OPPS.into()), ItemRef::Code(code.into()))],
        value,
    }
}

/// The code of the default model's opportunity `n`: the CRM simulator's id of its record `n`
/// (its ids are base 62, so this holds for n below 10; larger n are codes of test items).
fn opp_code(n: u32) -> String {
    format!("0065g{n:010}AAA")
}

/// A model cell as text, for comparisons (`None` when the model holds nothing there).
fn model_cell(
    sim: &SimHandle,
    module: &str,
    code: &str,
    line_item: &str,
) -> Option<sim::CellValue> {
    sim.cells(MODEL, module)
        .unwrap()
        .get(code)
        .and_then(|row| row.get(line_item))
        .cloned()
}

/// IDs of the bulk definitions, read with a plain HTTP client the way any caller would see
/// them (the production client has no listing of imports and exports).
struct Defs {
    /// name → (import id, data source file id)
    imports: BTreeMap<String, (String, String)>,
    exports: BTreeMap<String, String>,
    processes: BTreeMap<String, String>,
}

/// GETs `path` (under the model, workspace form) with a plain HTTP client and a fresh login,
/// the way any third-party caller would.
async fn raw_get(sim: &SimHandle, path: &str) -> Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let login: Value = http
        .post(format!("{}/token/authenticate", sim.auth_url()))
        .basic_auth(sim::DEFAULT_USER, Some(sim::DEFAULT_PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["tokenInfo"]["tokenValue"].as_str().unwrap();
    http.get(format!(
        "{}/workspaces/{WS}/models/{MODEL}{path}",
        sim.api_url()
    ))
    .header("Authorization", format!("AnaplanAuthToken {token}"))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

/// The model's bulk definitions, read through the client's own listings (a client of its own,
/// so the caller's call counts are untouched).
async fn defs(sim: &SimHandle) -> Defs {
    let c = client(sim);
    let list = |kind| c.list_definitions(WS, MODEL, kind);
    let imports = within("imports", list(TaskKind::Import))
        .await
        .unwrap()
        .into_iter()
        .map(|i| {
            let file = i.import_data_source_id.expect("an import names its file");
            (i.name, (i.id, file))
        })
        .collect();
    let named = |defs: Vec<plansync::anaplan::Definition>| {
        defs.into_iter().map(|d| (d.name, d.id)).collect()
    };
    let exports = named(within("exports", list(TaskKind::Export)).await.unwrap());
    let processes = named(within("processes", list(TaskKind::Process)).await.unwrap());
    Defs {
        imports,
        exports,
        processes,
    }
}

fn count(sim: &SimHandle, method: &str, path_ends: &str, status: Option<u16>) -> usize {
    sim.request_log()
        .iter()
        .filter(|r| r.method == method && r.path.ends_with(path_ends))
        .filter(|r| status.is_none_or(|s| r.status == s))
        .count()
}

// ---------------------------------------------------------------------------------------------
// 1. Authentication.

fn key_file(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/data/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A CA from `ca_key` (its PEM certificate) and a certificate for `subject` on the key
/// `leaf_rsa.pem`, signed by it.
fn pki(ca_key: &str, subject: &str) -> (String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        PKCS_RSA_SHA256,
    };
    let ca_kp = KeyPair::from_pem_and_sign_algo(&key_file(ca_key), &PKCS_RSA_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("e2e CA {ca_key}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_kp).unwrap();
    let leaf_kp =
        KeyPair::from_pem_and_sign_algo(&key_file("leaf_rsa.pem"), &PKCS_RSA_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, subject);
    let leaf = params.signed_by(&leaf_kp, &ca).unwrap();
    (ca.pem(), leaf.pem())
}

fn cert_auth(leaf_pem: &str, format: CertFormat) -> AuthMethod {
    AuthMethod::Certificate {
        cert_pem: leaf_pem.to_string(),
        key_pem: Secret::new(key_file("leaf_rsa.pem")),
        format,
    }
}

#[tokio::test]
async fn basic_and_certificate_auth_v1_v2_then_a_call_succeeds() {
    let (ca_pem, leaf_pem) = pki("ca_rsa.pem", sim::DEFAULT_USER);
    let sim = anaplan_sim(SimConfig {
        ca_certs_pem: vec![ca_pem],
        ..sim_config()
    })
    .await;

    let c = client(&sim);
    let modules = within("basic", c.list_modules(MODEL)).await.unwrap();
    assert!(modules.iter().any(|m| m.name == OPP), "{modules:?}");
    assert_eq!(count(&sim, "POST", "/token/authenticate", Some(201)), 1);

    for format in [CertFormat::V1, CertFormat::V2] {
        sim.clear_request_log();
        let c = AnaplanClient::new(client_config(&sim, cert_auth(&leaf_pem, format))).unwrap();
        let lists = within("cert", c.list_lists(MODEL)).await.unwrap();
        assert!(
            lists.iter().any(|l| l.name == OPPS),
            "{format:?}: {lists:?}"
        );
        assert_eq!(
            count(&sim, "POST", "/token/authenticate", Some(201)),
            1,
            "{format:?}"
        );
        assert_eq!(count(&sim, "GET", "/lists", Some(200)), 1, "{format:?}");
    }

    // A certificate from a CA the tenant does not trust: refused, clearly, and no API call.
    let (_, foreign_leaf) = pki("other_ca_rsa.pem", sim::DEFAULT_USER);
    sim.clear_request_log();
    let c = AnaplanClient::new(client_config(
        &sim,
        cert_auth(&foreign_leaf, CertFormat::V2),
    ))
    .unwrap();
    let err = within("foreign", c.list_lists(MODEL)).await.unwrap_err();
    assert!(
        matches!(err, AnaplanError::AuthRefused { status: 401, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("401"), "{text}");
    assert_eq!(count(&sim, "POST", "/token/authenticate", Some(401)), 1);
    assert_eq!(sim.request_counts().transactional, 0);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Token expiry.

#[tokio::test]
async fn an_expired_token_is_replaced_and_the_run_carries_on() {
    let sim = anaplan_sim(sim_config()).await;
    let c = client(&sim);
    within("first", c.list_modules(MODEL)).await.unwrap();
    assert!(sim.expire_tokens() >= 1);
    // The client still believes its token good: the API refuses it, the client logs in again.
    let lists = within("after expiry", c.list_lists(MODEL)).await.unwrap();
    assert!(!lists.is_empty());
    let log = sim.request_log();
    let statuses: Vec<(String, u16)> = log
        .iter()
        .map(|r| (r.path.rsplit('/').next().unwrap().to_string(), r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("authenticate".to_string(), 201),
            ("modules".into(), 200),
            ("lists".into(), 401),
            ("authenticate".into(), 201),
            ("lists".into(), 200),
        ]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_short_lived_token_is_refreshed_before_it_expires() {
    let sim = anaplan_sim(SimConfig {
        token_ttl: Duration::from_secs(5),
        ..sim_config()
    })
    .await;
    let mut cfg = client_config(&sim, basic());
    cfg.refresh_margin = Duration::from_secs(4);
    let c = AnaplanClient::new(cfg).unwrap();
    within("first", c.list_modules(MODEL)).await.unwrap();
    // Let the token enter the refresh margin (it still has over three seconds to live on the
    // simulator's clock when the next call refreshes it).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    within("second", c.list_modules(MODEL)).await.unwrap();
    assert_eq!(count(&sim, "POST", "/token/authenticate", None), 1);
    assert_eq!(count(&sim, "POST", "/token/refresh", Some(200)), 1);
    assert_eq!(count(&sim, "GET", "/modules", Some(200)), 2);
    assert_eq!(count(&sim, "GET", "/modules", Some(401)), 0);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Throttling.

/// `writers` concurrent one-cell writes through clones of one client with budget
/// `client_per_minute` against a tenant limited to `sim_per_minute`.
async fn concurrent_writes(
    sim_per_minute: u32,
    client_per_minute: u32,
    writers: u32,
) -> (SimHandle, Duration, u64) {
    let sim = anaplan_sim(SimConfig {
        rate_per_minute: sim_per_minute,
        ..sim_config()
    })
    .await;
    let mut cfg = client_config(&sim, basic());
    cfg.calls_per_minute = client_per_minute;
    let c = AnaplanClient::new(cfg).unwrap();
    let module = within("module", c.module_id(MODEL, OPP)).await.unwrap();
    sim.clear_request_log();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..writers {
        let c = c.clone();
        let module = module.clone();
        tasks.push(tokio::spawn(async move {
            let code = opp_code(u64::from(n % 4 + 1) as u32);
            let cell = opp_cell(&code, "Forecast Override", num(&format!("{n}.25")));
            c.write_cells(MODEL, &module, &[cell]).await
        }));
    }
    for t in tasks {
        let outcome = within("writes", t).await.unwrap().unwrap();
        assert_eq!(outcome.cells_changed, 1);
        assert!(outcome.failures.is_empty());
    }
    let elapsed = started.elapsed();
    (sim, elapsed, c.stats().throttled)
}

#[tokio::test]
async fn a_429_storm_is_ridden_out_without_exceeding_the_budget() {
    // The client may spend 1200 a minute, the tenant allows 300: 429s must happen.
    let (sim, elapsed, throttled) = concurrent_writes(300, 1200, 360).await;
    let counts = sim.request_counts();
    assert!(counts.rate_limited > 0, "{counts:?}");
    assert_eq!(throttled, counts.rate_limited);
    assert_eq!(count(&sim, "POST", "/data", Some(200)), 360);
    // Every call (429s included) fitted the client's own budget: 1200 in any minute.
    assert!(
        counts.total <= 1200 || elapsed >= Duration::from_secs(60),
        "{} calls in {elapsed:?}",
        counts.total
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_budget_within_the_tenant_limit_is_never_throttled() {
    let (sim, elapsed, throttled) = concurrent_writes(300, 240, 260).await;
    let counts = sim.request_counts();
    assert_eq!(counts.rate_limited, 0, "{counts:?}");
    assert_eq!(throttled, 0);
    assert_eq!(count(&sim, "POST", "/data", Some(200)), 260);
    // The client really held back: 260 calls over a budget of 240 a minute, so the last 20
    // waited for the first to be a minute old.
    assert!(elapsed >= Duration::from_secs(59), "{elapsed:?}");
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 4. A write while an import holds the model.

#[tokio::test]
async fn a_cell_write_during_an_import_waits_for_it_and_lands_after() {
    let sim = anaplan_sim(SimConfig {
        task_step: Duration::from_millis(1500),
        ..sim_config()
    })
    .await;
    let c = client(&sim);
    let d = defs(&sim).await;
    let module = within("module", c.module_id(MODEL, OPP)).await.unwrap();
    let (import, file) = d.imports[&format!("{OPP} from opportunities.csv")].clone();
    let code = opp_code(1);
    // The import sets Amount to 1; the transactional write, sent while it runs, to 2.
    let csv = format!("Code,Amount\n{code},1\n");
    within("upload", c.upload_file(WS, MODEL, &file, csv.as_bytes()))
        .await
        .unwrap();
    let task = within("start", c.start_task(WS, MODEL, TaskKind::Import, &import))
        .await
        .unwrap();
    // Wait (polling, bounded) until the runner has picked the task up and holds the model.
    within("in progress", async {
        let path = format!("/imports/{import}/tasks/{task}");
        while raw_get(&sim, &path).await["task"]["taskState"] != "IN_PROGRESS" {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    sim.clear_request_log();
    let outcome = within(
        "write",
        c.write_cells(MODEL, &module, &[opp_cell(&code, "Amount", num("2"))]),
    )
    .await
    .unwrap();
    assert_eq!(outcome.cells_changed, 1);
    assert!(
        count(&sim, "POST", "/data", Some(409)) >= 1,
        "{:?}",
        sim.request_log()
    );
    assert_eq!(count(&sim, "POST", "/data", Some(200)), 1);
    let done = within(
        "wait",
        c.wait_task(WS, MODEL, TaskKind::Import, &import, &task),
    )
    .await
    .unwrap();
    assert!(done.result.unwrap().successful);
    assert_eq!(
        model_cell(&sim, OPP, &code, "Amount"),
        Some(sim::CellValue::Number(2.0))
    );
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 5. An import with failing rows.

#[tokio::test]
async fn an_import_reports_exactly_its_bad_rows_and_applies_the_good_ones() {
    let sim = anaplan_sim(sim_config()).await;
    let mut cfg = client_config(&sim, basic());
    cfg.chunk_bytes = 64;
    let c = AnaplanClient::new(cfg).unwrap();
    let d = defs(&sim).await;
    let (import, file) = d.imports[&format!("{OPP} from opportunities.csv")].clone();
    // The default model has four opportunities; the sixth row needs a fifth item.
    let list = within("list", c.list_id(MODEL, OPPS)).await.unwrap();
    let fifth = ListItemWrite {
        code: opp_code(5),
        name: Some("OPP-0005".into()),
        ..Default::default()
    };
    let added = within("add", c.upsert_list_items(MODEL, &list, &[fifth]))
        .await
        .unwrap();
    assert_eq!(added.added, 1, "{added:?}");
    let csv = format!(
        "Code,Amount,Close Date,Approved\n\
         {},101.5,2027-02-01,true\n\
         NOPE0000000001,5,2027-02-01,false\n\
         {},102,2027-02-02,false\n\
         {},abc,2027-02-03,true\n\
         {},104,2027-02-31,true\n\
         {},105,2027-02-05,false\n",
        opp_code(1),
        opp_code(2),
        opp_code(3),
        opp_code(4),
        opp_code(5)
    );
    sim.clear_request_log();
    let info = within("upload", c.upload_file(WS, MODEL, &file, csv.as_bytes()))
        .await
        .unwrap();
    let chunks = count(&sim, "PUT", "", Some(204));
    assert_eq!(chunks, csv.len().div_ceil(64));
    assert!(chunks >= 3);
    assert_eq!(info.chunk_count, Some(chunks as i64));

    let outcome = within("import", c.run_import(WS, MODEL, &import))
        .await
        .unwrap();
    assert!(!outcome.successful);
    assert_eq!(outcome.count("failedCount"), Some(3));
    assert_eq!(outcome.count("successRowCount"), Some(3));
    let lines: Vec<Option<u64>> = outcome.row_errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [Some(3), Some(5), Some(6)]);
    let first = &outcome.row_errors[0];
    assert_eq!(first.status, "E");
    assert!(first.errors[0].contains("NOPE0000000001"), "{first:?}");
    assert!(
        outcome.row_errors[1].errors[0].contains("Amount"),
        "{:?}",
        outcome.row_errors[1]
    );
    assert!(
        outcome.row_errors[2].errors[0].contains("Close Date"),
        "{:?}",
        outcome.row_errors[2]
    );
    assert_eq!(
        first.values.first(),
        Some(&("Code".to_string(), "NOPE0000000001".to_string()))
    );

    let cells = sim.cells(MODEL, OPP).unwrap();
    let amount = |n| cells[&opp_code(n)]["Amount"].clone();
    assert_eq!(amount(1), sim::CellValue::Number(101.5));
    assert_eq!(amount(2), sim::CellValue::Number(102.0));
    assert_eq!(amount(5), sim::CellValue::Number(105.0));
    assert_eq!(
        cells[&opp_code(5)]["Close Date"],
        sim::CellValue::Date(NaiveDate::from_ymd_opt(2027, 2, 5).unwrap())
    );
    // The refused values were not written (whether the rest of a failing row is applied the
    // reference does not say; the simulator applies it).
    assert_eq!(amount(3), sim::CellValue::Number(32000.5));
    assert_eq!(
        cells[&opp_code(4)]["Close Date"],
        sim::CellValue::Date(NaiveDate::from_ymd_opt(2026, 11, 30).unwrap())
    );
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 6. A cell write with calculated and invalid cells.

#[tokio::test]
async fn a_partial_cell_write_reports_failures_at_the_callers_indexes() {
    let sim = anaplan_sim(sim_config()).await;
    let c = client(&sim);
    let module = within("module", c.module_id(MODEL, OPP)).await.unwrap();
    let cells = vec![
        opp_cell(&opp_code(1), "Amount", num("200000")),
        opp_cell(&opp_code(1), "Weighted Amount", num("5")),
        opp_cell(&opp_code(2), "Stage", CellValue::Text("Won".into())),
        opp_cell(
            &opp_code(2),
            "Close Date",
            CellValue::Text("not a date".into()),
        ),
        opp_cell(&opp_code(3), "Approved", CellValue::Bool(true)),
        opp_cell("NO-SUCH-CODE", "Amount", num("1")),
        opp_cell(
            &opp_code(3),
            "Close Date",
            CellValue::Date(NaiveDate::from_ymd_opt(2027, 6, 30).unwrap()),
        ),
    ];
    let outcome = within("write", c.write_cells(MODEL, &module, &cells))
        .await
        .unwrap();
    assert_eq!(outcome.cells_changed, 4, "{outcome:?}");
    let failed: Vec<(usize, &str)> = outcome
        .failures
        .iter()
        .map(|f| (f.index, f.failure_type.as_str()))
        .collect();
    assert_eq!(
        failed,
        [
            (1, "cellIsCalculated"),
            (3, "cellIsInvalid"),
            (5, "cellIsInvalid")
        ],
        "{outcome:?}"
    );
    let model = sim.cells(MODEL, OPP).unwrap();
    assert_eq!(
        model[&opp_code(1)]["Amount"],
        sim::CellValue::Number(200000.0)
    );
    // The calculated cell follows its formula (Amount × Probability / 100), not the write.
    assert_eq!(
        model[&opp_code(1)]["Weighted Amount"],
        sim::CellValue::Number(80000.0)
    );
    assert_eq!(
        model[&opp_code(2)]["Stage"],
        sim::CellValue::Item("Won".into())
    );
    assert_eq!(
        model[&opp_code(2)]["Close Date"],
        sim::CellValue::Date(NaiveDate::from_ymd_opt(2027, 1, 22).unwrap())
    );
    assert_eq!(
        model[&opp_code(3)]["Approved"],
        sim::CellValue::Boolean(true)
    );
    assert_eq!(
        model[&opp_code(3)]["Close Date"],
        sim::CellValue::Date(NaiveDate::from_ymd_opt(2027, 6, 30).unwrap())
    );
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 7. List items.

#[tokio::test]
async fn list_upsert_and_delete_by_code_leave_the_list_as_asked() {
    let sim = anaplan_sim(sim_config()).await;
    let c = client(&sim);
    let list = within("list", c.list_id(MODEL, OPPS)).await.unwrap();
    let item = |code: &str, name: &str, opp_name: &str| ListItemWrite {
        code: code.into(),
        name: Some(name.into()),
        properties: [("Opportunity Name".to_string(), opp_name.to_string())].into(),
        ..Default::default()
    };
    let items = vec![
        item(&opp_code(1), "OPP-0001", "Acme renewal (2027)"),
        item("006NEW000000001AAA", "OPP-0101", "Fresh one"),
        item(&opp_code(2), "OPP-0002-R", "Globex renamed"),
        item("006NEW000000002AAA", "OPP-0102", "Fresh two"),
    ];
    let outcome = within("upsert", c.upsert_list_items(MODEL, &list, &items))
        .await
        .unwrap();
    assert_eq!((outcome.added, outcome.updated), (2, 2), "{outcome:?}");
    assert!(outcome.failures.is_empty(), "{outcome:?}");

    let deleted = within(
        "delete",
        c.delete_list_items(
            MODEL,
            &list,
            &[opp_code(3), "006NEW000000001AAA".into(), "NOT-THERE".into()],
        ),
    )
    .await
    .unwrap();
    assert_eq!(deleted.deleted, 2, "{deleted:?}");
    assert_eq!(
        deleted.failures.iter().map(|f| f.index).collect::<Vec<_>>(),
        [2],
        "{deleted:?}"
    );

    let model = sim.list_items(MODEL, OPPS).unwrap();
    let got: Vec<(String, String, String)> = model
        .iter()
        .map(|i| {
            (
                i.code.clone().unwrap_or_default(),
                i.name.clone(),
                i.properties
                    .get("Opportunity Name")
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect();
    let want = |code: String, name: &str, p: &str| (code, name.to_string(), p.to_string());
    assert_eq!(
        got,
        [
            want(opp_code(1), "OPP-0001", "Acme renewal (2027)"),
            want(opp_code(2), "OPP-0002-R", "Globex renamed"),
            want(opp_code(4), "OPP-0004", "Umbrella platform"),
            want("006NEW000000002AAA".into(), "OPP-0102", "Fresh two"),
        ]
    );
    // And the client reads back what the model holds.
    let read = within("read", c.list_items(MODEL, &list)).await.unwrap();
    let read: Vec<(String, String)> = read
        .iter()
        .map(|i| (i.code.clone().unwrap_or_default(), i.name.clone()))
        .collect();
    let model: Vec<(String, String)> = got.iter().map(|g| (g.0.clone(), g.1.clone())).collect();
    assert_eq!(read, model);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 8. View reads.

#[tokio::test]
async fn view_reads_in_json_and_csv_return_what_the_model_holds() {
    let sim = anaplan_sim(sim_config()).await;
    let c = client(&sim);
    let module = within("module", c.module_id(MODEL, OPP)).await.unwrap();
    within(
        "write",
        c.write_cells(
            MODEL,
            &module,
            &[opp_cell(&opp_code(3), "Forecast Override", num("31000.75"))],
        ),
    )
    .await
    .unwrap();
    let json = within("json", c.read_view_json(MODEL, &module, &[]))
        .await
        .unwrap();
    let csv = within(
        "csv",
        c.read_view_csv(MODEL, &module, &[], CsvLayout::default()),
    )
    .await
    .unwrap();
    assert_eq!(json.rows, csv.rows);
    assert_eq!(json.columns, csv.columns);

    let line_items: Vec<String> = json.columns.iter().map(|c| c[0].clone()).collect();
    assert!(line_items.contains(&"Amount".to_string()), "{line_items:?}");
    let cells = sim.cells(MODEL, OPP).unwrap();
    let items = sim.list_items(MODEL, OPPS).unwrap();
    assert_eq!(json.rows.len(), items.len());
    for (row, item) in json.rows.iter().zip(&items) {
        assert_eq!(row.coordinates, std::slice::from_ref(&item.name));
        let code = item.code.clone().unwrap();
        for (li, text) in line_items.iter().zip(&row.cells) {
            if let Some(v) = cells.get(&code).and_then(|r| r.get(li)) {
                assert_eq!(text, &v.to_string(), "{code} {li}");
            }
        }
    }
    let row3 = &json.rows[2];
    let at = line_items
        .iter()
        .position(|l| l == "Forecast Override")
        .unwrap();
    assert_eq!(row3.cells[at], "31000.75");
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 9. Export.

#[tokio::test]
async fn an_export_reflects_a_cell_written_just_before() {
    let sim = anaplan_sim(sim_config()).await;
    let c = client(&sim);
    let d = defs(&sim).await;
    let module = within("module", c.module_id(MODEL, OPP)).await.unwrap();
    within(
        "write",
        c.write_cells(
            MODEL,
            &module,
            &[
                opp_cell(&opp_code(4), "Amount", num("123456.78")),
                opp_cell(&opp_code(4), "Stage", CellValue::Text("Lost".into())),
            ],
        ),
    )
    .await
    .unwrap();
    let export = &d.exports[&format!("{OPP}.csv")];
    let bytes = within("export", c.run_export(WS, MODEL, export))
        .await
        .unwrap();
    let mut rdr = csv::Reader::from_reader(&bytes[..]);
    let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_string).collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 4);
    let row = rows.iter().find(|r| r[col("Code")] == opp_code(4)).unwrap();
    assert_eq!(&row[col("Amount")], "123456.78");
    assert_eq!(&row[col("Stage")], "Lost");
    assert_eq!(&row[col("Weighted Amount")], "123456.78");
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Structure: paging, ids instead of names, processes.

#[tokio::test]
async fn listings_follow_paging_and_ids_resolve_for_writes() {
    let sim = anaplan_sim(sim_config()).await;
    let mut cfg = client_config(&sim, basic());
    cfg.page_size = 1;
    let c = AnaplanClient::new(cfg).unwrap();
    let lists = within("lists", c.list_lists(MODEL)).await.unwrap();
    let names: Vec<&str> = lists.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["Stages", "Regions", OPPS, "Territories"]);
    // One page of one per call: the client walked meta.paging to the end, and no further.
    assert_eq!(count(&sim, "GET", "/lists", Some(200)), 4);

    // Every reference by id, as found through the client's own listings.
    let module = within("module", c.module_id(MODEL, OPP)).await.unwrap();
    let line_items = within("line items", c.list_line_items(MODEL, Some(&module)))
        .await
        .unwrap();
    assert_eq!(line_items.len(), 8, "{line_items:?}");
    assert!(
        line_items
            .iter()
            .all(|l| l.module_id.as_deref() == Some(module.as_str()))
    );
    let amount = within("line item", c.line_item_id(MODEL, &module, "Amount"))
        .await
        .unwrap();
    let list = within("list", c.list_id(MODEL, OPPS)).await.unwrap();
    let items = within("items", c.list_items(MODEL, &list)).await.unwrap();
    let item = items
        .iter()
        .find(|i| i.code.as_deref() == Some(opp_code(2).as_str()))
        .unwrap();
    assert_eq!(item.properties["Opportunity Name"], "Globex expansion");
    let out = within(
        "write",
        c.write_cells(
            MODEL,
            &module,
            &[CellWrite {
                line_item: LineItemRef::Id(amount),
                dimensions: vec![(DimRef::Id(list), ItemRef::Id(item.id.clone()))],
                value: num("-0.125"),
            }],
        ),
    )
    .await
    .unwrap();
    assert_eq!((out.cells_changed, out.failures.len()), (1, 0), "{out:?}");
    assert_eq!(
        model_cell(&sim, OPP, &opp_code(2), "Amount"),
        Some(sim::CellValue::Number(-0.125))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_process_reports_the_failure_dump_of_its_import() {
    let sim = anaplan_sim(sim_config()).await;
    let mut cfg = client_config(&sim, basic());
    cfg.chunk_bytes = 50;
    let c = AnaplanClient::new(cfg).unwrap();
    let d = defs(&sim).await;
    let (list_import, list_file) = d.imports["Opportunities from opportunities_list.csv"].clone();
    let (data_import, data_file) = d.imports[&format!("{OPP} from opportunities.csv")].clone();
    let process = d.processes["Load Opportunities"].clone();
    let list_csv = "Name,Code,Opportunity Name\nOPP-0200,006000000000200AAA,Brand new\n";
    let data_csv = "Code,Amount\n006000000000200AAA,777\nUNKNOWN,1\n";
    within(
        "upload list",
        c.upload_file(WS, MODEL, &list_file, list_csv.as_bytes()),
    )
    .await
    .unwrap();
    within(
        "upload data",
        c.upload_file(WS, MODEL, &data_file, data_csv.as_bytes()),
    )
    .await
    .unwrap();
    let outcome = within("process", c.run_process(WS, MODEL, &process))
        .await
        .unwrap();
    assert!(!outcome.successful, "{outcome:?}");
    let nested: Vec<(Option<&str>, bool)> = outcome
        .result
        .nested_results
        .iter()
        .map(|n| (n.object_id.as_deref(), n.successful))
        .collect();
    assert_eq!(
        nested,
        [
            (Some(list_import.as_str()), true),
            (Some(data_import.as_str()), false)
        ]
    );
    assert_eq!(outcome.row_errors.len(), 1, "{outcome:?}");
    let (object, rows) = &outcome.row_errors[0];
    assert_eq!(object, &data_import);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].line, Some(3));
    assert!(rows[0].errors[0].contains("UNKNOWN"), "{rows:?}");
    assert!(
        sim.list_items(MODEL, OPPS)
            .unwrap()
            .iter()
            .any(|i| i.code.as_deref() == Some("006000000000200AAA") && i.name == "OPP-0200")
    );
    assert_eq!(
        model_cell(&sim, OPP, "006000000000200AAA", "Amount"),
        Some(sim::CellValue::Number(777.0))
    );
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 11. Injected 5xx and dropped connections.

#[tokio::test]
async fn server_errors_and_dropped_connections_on_idempotent_calls_are_retried() {
    let sim = anaplan_sim(sim_config()).await;
    let c = client(&sim);
    let module = within("module", c.module_id(MODEL, OPP)).await.unwrap();
    sim.clear_request_log();

    sim.set_faults(Faults {
        fail_next: 2,
        error_status: 500,
        ..Faults::default()
    });
    let modules = within("read", c.list_modules(MODEL)).await.unwrap();
    assert!(!modules.is_empty());
    let statuses: Vec<u16> = sim.request_log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200]);

    sim.clear_request_log();
    sim.set_faults(Faults {
        drop_next: 2,
        ..Faults::default()
    });
    let out = within(
        "write",
        c.write_cells(
            MODEL,
            &module,
            &[opp_cell(&opp_code(3), "Probability", num("15"))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(out.cells_changed, 1);
    let statuses: Vec<u16> = sim.request_log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [0, 0, 200]);
    assert_eq!(sim.request_counts().dropped, 2);
    assert_eq!(
        model_cell(&sim, OPP, &opp_code(3), "Probability"),
        Some(sim::CellValue::Number(15.0))
    );

    // A 503 storm on the upload path (chunks, complete): still one file with the right bytes.
    let d = defs(&sim).await;
    let (import, file) = d.imports[&format!("{OPP} from opportunities.csv")].clone();
    sim.clear_request_log();
    sim.set_faults(Faults {
        fail_next: 3,
        ..Faults::default()
    });
    let csv = format!("Code,Probability\n{},25\n", opp_code(3));
    within("upload", c.upload_file(WS, MODEL, &file, csv.as_bytes()))
        .await
        .unwrap();
    assert_eq!(sim.request_counts().faulted, 3);
    let outcome = within("import", c.run_import(WS, MODEL, &import))
        .await
        .unwrap();
    assert!(outcome.successful, "{outcome:?}");
    assert_eq!(
        model_cell(&sim, OPP, &opp_code(3), "Probability"),
        Some(sim::CellValue::Number(25.0))
    );

    // A 500 on a task start is not idempotent-safe (the import may have started): reported,
    // never repeated.
    sim.clear_request_log();
    sim.set_faults(Faults {
        fail_next: 1,
        error_status: 500,
        ..Faults::default()
    });
    let err = within("start", c.run_import(WS, MODEL, &import))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AnaplanError::Status { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(count(&sim, "POST", "/tasks", None), 1);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 10. Transactional and bulk writes agree.

const PROP_SEED: &str = r#"
[[workspace]]
id = "8a81b09d5e8c6f27015e8d4f1a2b3c4d"
name = "Prop"

[[model]]
id = "75A40874E6B64FA3AE0743278996850F"
name = "Prop Model"
workspace = "8a81b09d5e8c6f27015e8d4f1a2b3c4d"

[[list]]
name = "Tiers"
items = [{ code = "T1", name = "Gold" }, { code = "T2", name = "Silver" }, { code = "T3", name = "Bronze" }]

[[list]]
name = "Accounts"
items = [
  { code = "A1", name = "Account 1" },
  { code = "A2", name = "Account 2" },
  { code = "A3", name = "Account 3" },
  { code = "A4", name = "Account 4" },
]

[[module]]
name = "ACC01 Account Data"
applies_to = "Accounts"
line_items = [
  { name = "Amount", format = "number" },
  { name = "Rate", format = "number" },
  { name = "Note", format = "text" },
  { name = "Active", format = "boolean" },
  { name = "Renewal", format = "date" },
  { name = "Tier", format = "list", list = "Tiers" },
]

[[import]]
name = "ACC01 from accounts.csv"
type = "MODULE_DATA"
target = "ACC01 Account Data"
file = "accounts.csv"
"#;

const ACC: &str = "ACC01 Account Data";
const ACC_LINE_ITEMS: [&str; 6] = ["Amount", "Rate", "Note", "Active", "Renewal", "Tier"];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn value_for(line_item: usize) -> BoxedStrategy<CellValue> {
    match ACC_LINE_ITEMS[line_item] {
        "Amount" | "Rate" => (
            -1_000_000_000_000_000_000i128..1_000_000_000_000_000_000,
            0u8..=6,
        )
            .prop_map(|(units, scale)| CellValue::Number(Decimal { units, scale }))
            .boxed(),
        "Note" => "[A-Za-z0-9]([A-Za-z0-9 ,\"'\n]{0,10}[A-Za-z0-9])?"
            .prop_map(CellValue::Text)
            .boxed(),
        "Active" => any::<bool>().prop_map(CellValue::Bool).boxed(),
        "Renewal" => (2000i32..2040, 1u32..=12, 1u32..=28)
            .prop_map(|(y, m, d)| CellValue::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap()))
            .boxed(),
        _ => prop_oneof![Just("Gold"), Just("Silver"), Just("Bronze")]
            .prop_map(|s| CellValue::Text(s.to_string()))
            .boxed(),
    }
}

/// A batch: (item code, line item index) → value; at least one cell.
fn batch() -> impl Strategy<Value = BTreeMap<(String, usize), CellValue>> {
    let cell = (1u32..=4, 0usize..ACC_LINE_ITEMS.len())
        .prop_flat_map(|(item, li)| (Just((format!("A{item}"), li)), value_for(li)));
    proptest::collection::vec(cell, 1..20).prop_map(|cells| cells.into_iter().collect())
}

fn csv_text(value: &CellValue) -> String {
    match value {
        CellValue::Text(s) => s.clone(),
        CellValue::Number(d) => d.to_string(),
        CellValue::Bool(b) => b.to_string(),
        CellValue::Date(d) => d.format("%Y-%m-%d").to_string(),
    }
}

async fn both_paths(cells: &BTreeMap<(String, usize), CellValue>) {
    let config = || SimConfig {
        seed: Seed::from_toml_str(PROP_SEED, "prop").unwrap(),
        task_step: Duration::from_millis(5),
        ..SimConfig::default()
    };
    let (a, b) = (anaplan_sim(config()).await, anaplan_sim(config()).await);

    // Transactional.
    let ca = client(&a);
    let module = ca.module_id(MODEL, ACC).await.unwrap();
    let writes: Vec<CellWrite> = cells
        .iter()
        .map(|((code, li), value)| CellWrite {
            line_item: LineItemRef::Name(ACC_LINE_ITEMS[*li].into()),
            dimensions: vec![(DimRef::Name("Accounts".into()), ItemRef::Code(code.clone()))],
            value: value.clone(),
        })
        .collect();
    let out = ca.write_cells(MODEL, &module, &writes).await.unwrap();
    assert!(out.failures.is_empty(), "{out:?}");

    // Bulk: one row per item written, a column per line item, blank where nothing was set
    // (the model starts empty, so a blank is the same as untouched).
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["Code"];
    header.extend(ACC_LINE_ITEMS);
    w.write_record(&header).unwrap();
    let mut rows: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for ((code, li), value) in cells {
        rows.entry(code)
            .or_insert_with(|| vec![String::new(); ACC_LINE_ITEMS.len()])[*li] = csv_text(value);
    }
    for (code, fields) in &rows {
        let mut rec = vec![code.to_string()];
        rec.extend(fields.iter().cloned());
        w.write_record(&rec).unwrap();
    }
    let data = w.into_inner().unwrap();
    let d = defs(&b).await;
    let (import, file) = d.imports["ACC01 from accounts.csv"].clone();
    let mut cfg = client_config(&b, basic());
    cfg.chunk_bytes = 40;
    let cb = AnaplanClient::new(cfg).unwrap();
    cb.upload_file(WS, MODEL, &file, &data).await.unwrap();
    let outcome = cb.run_import(WS, MODEL, &import).await.unwrap();
    assert!(
        outcome.successful && outcome.row_errors.is_empty(),
        "{outcome:?}\n{}",
        String::from_utf8_lossy(&data)
    );

    let (ta, tb) = (a.cells(MODEL, ACC).unwrap(), b.cells(MODEL, ACC).unwrap());
    assert_eq!(ta, tb, "\n{}", String::from_utf8_lossy(&data));
    // And both hold the batch (not merely the same nothing).
    let written: usize = ta.values().map(BTreeMap::len).sum();
    assert_eq!(written, cells.len());
    a.shutdown().await;
    b.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn transactional_and_bulk_writes_leave_the_same_model(cells in batch()) {
        runtime().block_on(async { tokio::time::timeout(LONG, both_paths(&cells)).await }).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_definitions_resolve_by_name_or_id() {
    let sim = anaplan_sim(SimConfig::default()).await;
    let c = client(&sim);
    // Config files name definitions as people see them: by name, or by id.
    let by_name = within(
        "definition by name",
        c.definition(WS, MODEL, TaskKind::Process, "Load Opportunities"),
    )
    .await
    .unwrap();
    let by_id = within(
        "definition by id",
        c.definition(WS, MODEL, TaskKind::Process, &by_name.id),
    )
    .await
    .unwrap();
    assert_eq!(by_id, by_name);
    assert!(by_name.id.starts_with("118"), "{by_name:?}");
    let missing = within(
        "missing definition",
        c.definition(WS, MODEL, TaskKind::Import, "No such import"),
    )
    .await;
    assert!(
        matches!(missing, Err(AnaplanError::NotFound { kind: "import", .. })),
        "{missing:?}"
    );
    sim.shutdown().await;
}
