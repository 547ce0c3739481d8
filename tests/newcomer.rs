//! A newcomer's real path, as the README gives it, through the real binary: `plansync sim
//! anaplan` and `plansync sim crm` as processes, `plansync check --config
//! examples/plansync-sim.toml`, then `plansync run` with it until its first run is complete,
//! and a SIGTERM. The simulators run on free ports here (two tests must not fight over 8090
//! and 8091), so the run uses a copy of the example with only the two addresses and the paths
//! rewritten. The two default seeds hold the same records, so that first run opens no
//! exception, queues no write, and leaves both simulators as they started.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use plansync_sim::anaplan as asim;
use plansync_sim::crm as csim;
use serde_json::Value as Json;

const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";
const API: &str = "/services/data/v62.0";
/// The addresses the example names: the simulators' default ports.
const EXAMPLE_ANAPLAN: &str = "http://127.0.0.1:8090";
const EXAMPLE_CRM: &str = "http://127.0.0.1:8091";
const SECRETS: [(&str, &str); 2] = [
    ("PLANSYNC_SIM_CRM_SECRET", csim::DEFAULT_CLIENT_SECRET),
    ("PLANSYNC_SIM_ANAPLAN_PASSWORD", asim::DEFAULT_PASSWORD),
];

/// A child process, killed when the test ends however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn plansync() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plansync"));
    cmd.env_remove("PLANSYNC_CONFIG").env("NO_COLOR", "1");
    cmd
}

/// Starts `plansync sim <which> --port 0` and returns it with the base URL it printed first
/// and the hooks' token it printed on its admin line.
/// Its stdout is drained to the end on a thread: the Anaplan simulator prints more lines,
/// and a closed pipe would make its printing fail.
fn simulator(which: &str) -> (Running, String, String) {
    let mut child = plansync()
        .args(["sim", which, "--port", "0"])
        .env_remove("PLANSYNC_SIM_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start plansync sim");
    let stdout = child.stdout.take().expect("stdout");
    let running = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        // The admin line carries the hooks' token: `… (X-Sim-Token: <token>)`.
        let token = lines.by_ref().map_while(Result::ok).find_map(|l| {
            l.split("X-Sim-Token: ")
                .nth(1)
                .map(|t| t.trim_end_matches(')').to_string())
        });
        if let (Some(first), Some(token)) = (first, token) {
            let _ = tx.send((first, token));
        }
        for _ in lines {}
    });
    let (url, token) = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("plansync sim {which} printed no URL and token"));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    (running, url.trim().to_string(), token)
}

/// `examples/plansync-sim.toml` with the simulators' addresses and the store moved to `dir`,
/// and the rules named by absolute path (the copy is not next to them); every other key as
/// the example has it.
fn example_for(dir: &Path, anaplan: &str, crm: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/plansync-sim.toml")).expect("example");
    let rules = format!("rules = \"{}\"", root.join("rules").display());
    let mut out = text.clone();
    for (from, to) in [
        (EXAMPLE_ANAPLAN, anaplan),
        (EXAMPLE_CRM, crm),
        ("rules = \"../rules\"", rules.as_str()),
        (
            "store = \"../plansync-sim.db\"",
            "store = \"plansync-sim.db\"",
        ),
        // Tests run side by side: any free port for health and metrics.
        ("address = \"127.0.0.1:8490\"", "address = \"127.0.0.1:0\""),
    ] {
        assert!(out.contains(from), "the example has `{from}`");
        out = out.replace(from, to);
    }
    let path = dir.join("plansync-sim.toml");
    std::fs::write(&path, out).expect("write the config");
    path
}

fn explain(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Both simulators as their APIs show them, and what each was asked.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    anaplan: String,
    crm: String,
    /// The `/__sim/` hooks' tokens: (Anaplan's, the CRM's).
    hooks_tokens: (String, String),
}

impl Http {
    fn new(anaplan: &str, crm: &str, hooks_tokens: (String, String)) -> Http {
        // reqwest is built without a default TLS provider; the library installs ring on demand.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Http {
            rt,
            client: reqwest::Client::new(),
            anaplan: anaplan.into(),
            crm: crm.into(),
            hooks_tokens,
        }
    }

    /// The `X-Sim-Token` a `/__sim/` URL of one of the simulators needs.
    fn hooks_token(&self, url: &str) -> Option<&str> {
        if !url.contains("/__sim/") {
            None
        } else if url.starts_with(&self.anaplan) {
            Some(&self.hooks_tokens.0)
        } else {
            Some(&self.hooks_tokens.1)
        }
    }

    fn get(&self, url: String, token: Option<&str>) -> Json {
        self.rt.block_on(async {
            let mut request = self.client.get(&url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(hooks) = self.hooks_token(&url) {
                request = request.header("X-Sim-Token", hooks);
            }
            let response = request.send().await.expect("GET");
            assert!(
                response.status().is_success(),
                "{url}: {}",
                response.status()
            );
            response.json().await.expect("JSON")
        })
    }

    fn crm_token(&self) -> String {
        self.rt.block_on(async {
            let body: Json = self
                .client
                .post(format!("{}/services/oauth2/token", self.crm))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", csim::DEFAULT_CLIENT_ID),
                    ("client_secret", csim::DEFAULT_CLIENT_SECRET),
                ])
                .send()
                .await
                .expect("token")
                .json()
                .await
                .expect("token JSON");
            body["access_token"].as_str().expect("a token").to_string()
        })
    }

    /// Every synced record of both systems: the CRM's through its REST API (with their
    /// `SystemModstamp`, so any write shows), Anaplan's lists and modules through the
    /// simulator's `/__sim/` reads.
    fn state(&self) -> Json {
        let token = self.crm_token();
        let query = |soql: &str| {
            self.rt.block_on(async {
                let response = self
                    .client
                    .get(format!("{}{API}/query", self.crm))
                    .query(&[("q", soql)])
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("query");
                assert!(response.status().is_success(), "{soql}");
                let body: Json = response.json().await.expect("query JSON");
                body["records"].clone()
            })
        };
        let sim = |path: &str| {
            self.get(
                format!("{}/__sim/models/{MODEL}/{path}", self.anaplan),
                None,
            )
        };
        serde_json::json!({
            "opportunities": query("SELECT Id, Name, Amount, StageName, CloseDate, Forecast_Override__c, Probability, SystemModstamp FROM Opportunity ORDER BY Id"),
            "territories": query("SELECT Id, Name, Region__c, Annual_Quota__c, Quarterly_Quota__c, Active__c, SystemModstamp FROM Territory__c ORDER BY Id"),
            "opportunity_items": sim("lists/Opportunities/items"),
            "opportunity_cells": sim("modules/OPP01%20Opportunity%20Data/cells"),
            "territory_items": sim("lists/Territories/items"),
            "territory_cells": sim("modules/TER01%20Territory%20Quotas/cells"),
        })
    }

    /// The requests each simulator answered that could have changed something.
    fn writes(&self) -> (Vec<String>, Vec<String>) {
        let entries = |body: &Json, key: &str| -> Vec<(String, String)> {
            body[key]
                .as_array()
                .expect("a request log")
                .iter()
                .map(|r| {
                    let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                    (text("method"), text("path"))
                })
                .collect()
        };
        let anaplan = self.get(format!("{}/__sim/requests", self.anaplan), None);
        let anaplan: Vec<String> = entries(&anaplan, "entries")
            .into_iter()
            .filter(|(method, path)| {
                method != "GET" && !path.starts_with("/token/") && !path.contains("/readRequests")
            })
            .map(|(m, p)| format!("{m} {p}"))
            .collect();
        let crm = self.get(format!("{}/__sim/requests", self.crm), None);
        let crm: Vec<String> = entries(&crm, "log")
            .into_iter()
            .filter(|(method, path)| {
                matches!(method.as_str(), "PATCH" | "PUT" | "DELETE")
                    || path.contains("/composite")
                    || path.contains("/jobs/ingest")
                    || (method == "POST" && path.contains("/sobjects/"))
            })
            .map(|(m, p)| format!("{m} {p}"))
            .collect();
        (anaplan, crm)
    }
}

fn count(db: &Path, sql: &str) -> Option<i64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.query_row(sql, [], |r| r.get(0)).ok()
}

fn rows(db: &Path, sql: &str) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the store");
    let mut stmt = conn.prepare(sql).expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// The README's simulators listen where the example looks for them.
#[test]
fn the_example_names_the_simulators_default_ports() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plansync-sim.toml"),
    )
    .expect("example");
    for (which, url) in [("anaplan", EXAMPLE_ANAPLAN), ("crm", EXAMPLE_CRM)] {
        let out = plansync()
            .args(["sim", which, "--help"])
            .output()
            .expect("help");
        let help = String::from_utf8_lossy(&out.stdout);
        let port = url.rsplit(':').next().unwrap_or_default();
        assert!(
            help.contains(&format!("[default: {port}]")),
            "plansync sim {which} listens on {port} by default:\n{help}"
        );
        assert!(example.contains(url), "the example names {url}");
    }
}

#[test]
fn the_first_run_between_the_default_simulators_is_quiet() {
    let (_anaplan_sim, anaplan, anaplan_token) = simulator("anaplan");
    let (_crm_sim, crm, crm_token) = simulator("crm");
    let http = Http::new(&anaplan, &crm, (anaplan_token, crm_token));
    let before = http.state();
    assert_eq!(before["opportunities"].as_array().map(Vec::len), Some(4));
    assert_eq!(before["territories"].as_array().map(Vec::len), Some(3));

    let dir = tempfile::tempdir().expect("tempdir");
    let config = example_for(dir.path(), &anaplan, &crm);
    let db = dir.path().join("plansync-sim.db");

    let out = plansync()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .envs(SECRETS)
        .output()
        .expect("run plansync check");
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));

    let log = dir.path().join("engine.log");
    let stderr = std::fs::File::create(&log).expect("log file");
    let mut engine = Running(
        plansync()
            .arg("run")
            .arg("--config")
            .arg(&config)
            .envs(SECRETS)
            .env("PLANSYNC_LOG", "plansync=info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start plansync run"),
    );
    let engine_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let first_run_done = "SELECT count(*) FROM engine_state WHERE name = 'first_run.completed_at'";
    while count(&db, first_run_done) != Some(1) {
        if let Ok(Some(status)) = engine.0.try_wait() {
            panic!("plansync run exited with {status}:\n{}", engine_log());
        }
        assert!(
            Instant::now() < deadline,
            "no first run within two minutes:\n{}",
            engine_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(engine.0.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = engine.0.wait().expect("wait for plansync run");
    assert_eq!(exit.code(), Some(0), "{}", engine_log());

    let exceptions = rows(
        &db,
        "SELECT kind || ' ' || coalesce(crm_id, '') || ' ' || coalesce(field, '') || ': ' || message FROM exceptions",
    );
    assert!(exceptions.is_empty(), "{exceptions:#?}");
    let outbox = rows(
        &db,
        "SELECT target || ' ' || crm_id || ' ' || field FROM outbox",
    );
    assert!(outbox.is_empty(), "{outbox:#?}");
    // Every synced record was decided, and agreed.
    let records = count(&db, "SELECT count(*) FROM record_map");
    assert_eq!(records, Some(7), "four opportunities and three territories");

    let (anaplan_writes, crm_writes) = http.writes();
    assert!(anaplan_writes.is_empty(), "{anaplan_writes:#?}");
    assert!(crm_writes.is_empty(), "{crm_writes:#?}");
    assert_eq!(http.state(), before, "both simulators as they started");
}

use crate::support::readme_text;

/// The shell lines of the README section that starts with `heading`, up to the next `## `.
fn readme_commands(heading: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let start = readme.find(heading).expect("the section");
    let rest = &readme[start + heading.len()..];
    readme_text::shell_commands(&rest[..rest.find("\n## ").unwrap_or(rest.len())])
}

/// Splits a command line as a shell would for these simple cases (single and double quotes).
fn shell_words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut any = false;
    for c in command.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            (_, c) => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// `curl -s [-X METHOD] URL [-H HEADER] [-d BODY]`, as the README writes it.
struct Curl {
    method: String,
    url: String,
    body: Option<String>,
    /// The `X-Sim-Token` header's value, as written (`$CRM_SIM_TOKEN`).
    hooks_token: Option<String>,
}

fn parse_curl(words: &[String]) -> Curl {
    let mut curl = Curl {
        method: "GET".into(),
        url: String::new(),
        body: None,
        hooks_token: None,
    };
    let mut words = words.iter().skip(1);
    while let Some(w) = words.next() {
        match w.as_str() {
            "-s" => {}
            "-X" => curl.method = words.next().expect("a method").clone(),
            "-H" => {
                let header = words.next().expect("a header");
                match header.strip_prefix("X-Sim-Token: ") {
                    Some(token) => curl.hooks_token = Some(token.to_string()),
                    None => assert_eq!(header, "Content-Type: application/json"),
                }
            }
            "-d" => curl.body = Some(words.next().expect("a body").clone()),
            url if url.starts_with("http://") => curl.url = url.to_string(),
            other => panic!("a curl option the test does not know: {other}"),
        }
    }
    curl
}

impl Http {
    fn send(&self, curl: &Curl) -> String {
        self.rt.block_on(async {
            let mut request = self
                .client
                .request(curl.method.parse().expect("method"), &curl.url);
            if let Some(token) = &curl.hooks_token {
                request = request.header("X-Sim-Token", token);
            }
            if let Some(body) = &curl.body {
                request = request
                    .header("Content-Type", "application/json")
                    .body(body.clone());
            }
            let response = request.send().await.expect("the README's curl");
            assert!(
                response.status().is_success(),
                "{} {}: {}",
                curl.method,
                curl.url,
                response.status()
            );
            response.text().await.expect("body")
        })
    }
}

/// The `Amount` a simulator's answer shows for `id`: the CRM record (`/__sim/record/…`) or
/// the Anaplan cells (`…/cells`, rows keyed by item code).
fn amount_in(body: &str, id: &str) -> Option<f64> {
    let json: Json = serde_json::from_str(body).ok()?;
    let number = |v: &Json| v.as_f64().or_else(|| v.as_str()?.parse().ok());
    if let Some(v) = json.get("Amount") {
        return number(v);
    }
    number(json.get(id)?.get("Amount")?)
}

/// Waits until `check` holds, for at most `limit`; returns how long it took.
fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// The README's "Try it" real path, step by step with its own commands: the simulators,
/// the check, the run, a rep's edit carried to Anaplan, a refused typo recorded as exception
/// 1, its review and resolution, and the CRM back at the value taken from Anaplan.
#[test]
fn the_readme_real_path_runs_as_written() {
    let commands = readme_commands("### 3. The real path");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sims = Vec::new();
    let mut urls: Vec<(&str, String)> = Vec::new();
    // The hooks' tokens the simulators printed, in the order they started (Anaplan first).
    let mut hooks_tokens: Vec<String> = Vec::new();
    // What the README's `export …_SIM_TOKEN=<…>` stands for.
    let mut token_vars: Vec<(String, String)> = Vec::new();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut engine: Option<Running> = None;
    let mut http: Option<Http> = None;
    let mut config: Option<PathBuf> = None;
    let db = dir.path().join("plansync-sim.db");
    let deal = "0065g0000000001AAA";
    let mut ran = Vec::new();
    for command in &commands {
        let mut words = shell_words(command);
        // The simulators run on free ports: the README's addresses point at them.
        for w in &mut words {
            for (from, to) in &urls {
                *w = w.replace(from, to);
            }
        }
        let cmd = words.iter().take(3).cloned().collect::<Vec<_>>().join(" ");
        match words[0].as_str() {
            "plansync" if words[1] == "sim" => {
                let (child, url, token) = simulator(&words[2]);
                sims.push(child);
                hooks_tokens.push(token);
                let from = if words[2] == "anaplan" {
                    EXAMPLE_ANAPLAN
                } else {
                    EXAMPLE_CRM
                };
                urls.push((from, url));
                if urls.len() == 2 {
                    config = Some(example_for(dir.path(), &urls[0].1, &urls[1].1));
                    http = Some(Http::new(
                        &urls[0].1,
                        &urls[1].1,
                        (hooks_tokens[0].clone(), hooks_tokens[1].clone()),
                    ));
                }
            }
            "export" => {
                for pair in &words[1..] {
                    let (k, v) = pair.split_once('=').expect("KEY=VALUE");
                    // The tokens are whatever the simulators printed: the reader copies them.
                    let printed = match k {
                        "ANAPLAN_SIM_TOKEN" => hooks_tokens.first(),
                        "CRM_SIM_TOKEN" => hooks_tokens.get(1),
                        _ => {
                            env.push((k.into(), v.into()));
                            continue;
                        }
                    };
                    assert!(v.starts_with('<'), "{k} is a placeholder: {v}");
                    let token = printed.expect("the simulators run first").clone();
                    token_vars.push((format!("${k}"), token));
                }
                let expected: Vec<(String, String)> = SECRETS
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                assert_eq!(env, expected, "the README's secrets are the simulators'");
            }
            "plansync" => {
                let config = config.as_ref().expect("the simulators run first");
                let args: Vec<String> = words[1..]
                    .iter()
                    .map(|w| match w.as_str() {
                        "examples/plansync-sim.toml" => config.display().to_string(),
                        other => other.to_string(),
                    })
                    .collect();
                let mut run = plansync();
                run.args(&args)
                    .envs(env.iter().cloned())
                    .current_dir(dir.path());
                if words[1] == "run" {
                    let log = std::fs::File::create(dir.path().join("engine.log")).expect("log");
                    engine = Some(Running(
                        run.stdout(Stdio::null())
                            .stderr(log)
                            .spawn()
                            .expect("plansync run"),
                    ));
                    let done =
                        "SELECT count(*) FROM engine_state WHERE name = 'first_run.completed_at'";
                    within(Duration::from_secs(120), "the first run", || {
                        count(&db, done) == Some(1)
                    });
                    continue;
                }
                let out = run.output().expect("plansync");
                assert_eq!(out.status.code(), Some(0), "{command}: {}", explain(&out));
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                match cmd.as_str() {
                    "plansync check --config" => assert!(!text.contains('✗'), "{text}"),
                    "plansync status --db" => {
                        assert!(text.contains("First run: completed"), "{text}")
                    }
                    "plansync exceptions list" => {
                        let row = text
                            .lines()
                            .find(|l| l.contains(deal))
                            .unwrap_or_else(|| panic!("no row for {deal}:\n{text}"));
                        for part in ["│ 1 ", "validation", "-1000.00", "130000.00"] {
                            assert!(row.contains(part), "`{part}` in {row}");
                        }
                    }
                    "plansync exceptions show" => {
                        assert!(text.contains("exception 1"), "{text}");
                        assert!(text.contains("is below the minimum"), "{text}");
                    }
                    "plansync exceptions resolve" => {
                        // The running engine writes the resolution: the CRM shows
                        // Anaplan's value again.
                        let http = http.as_ref().expect("http");
                        let record = Curl {
                            method: "GET".into(),
                            url: format!("{}/__sim/record/{deal}", urls[1].1),
                            body: None,
                            hooks_token: Some(hooks_tokens[1].clone()),
                        };
                        let took = within(Duration::from_secs(10), "the resolution", || {
                            amount_in(&http.send(&record), deal) == Some(130000.0)
                        });
                        eprintln!("resolve → CRM write: {took:?}");
                    }
                    other => panic!("a README command the test does not check: {other}"),
                }
            }
            "curl" => {
                let http = http.as_ref().expect("the simulators run first");
                let words: Vec<String> = words
                    .iter()
                    .map(|w| {
                        token_vars
                            .iter()
                            .fold(w.clone(), |w, (var, token)| w.replace(var, token))
                    })
                    .collect();
                let curl = parse_curl(&words);
                let body = http.send(&curl);
                match curl.body.as_deref() {
                    Some(edit) if edit.contains("\"Amount\": 130000") => {
                        // The stream carries it: the Anaplan cell shows it well within
                        // the poll interval (30 s).
                        let cells = Curl {
                            method: "GET".into(),
                            url: format!(
                                "{}/__sim/models/{MODEL}/modules/OPP01%20Opportunity%20Data/cells",
                                urls[0].1
                            ),
                            body: None,
                            hooks_token: Some(hooks_tokens[0].clone()),
                        };
                        let took = within(Duration::from_secs(5), "the edit in Anaplan", || {
                            amount_in(&http.send(&cells), deal) == Some(130000.0)
                        });
                        eprintln!("CRM edit → Anaplan cell: {took:?}");
                    }
                    Some(edit) if edit.contains("\"Amount\": -1000") => {
                        within(Duration::from_secs(5), "the validation exception", || {
                            count(
                                &db,
                                "SELECT count(*) FROM exceptions WHERE id = 1 AND kind = 'validation' AND status = 'open'",
                            ) == Some(1)
                        });
                    }
                    Some(other) => panic!("an edit the test does not check: {other}"),
                    None if curl.url.contains("/cells") => {
                        assert_eq!(amount_in(&body, deal), Some(130000.0), "{body}");
                    }
                    None if curl.url.contains("/__sim/record/") => {
                        assert_eq!(amount_in(&body, deal), Some(130000.0), "{body}");
                    }
                    None => panic!("a read the test does not check: {}", curl.url),
                }
            }
            other => panic!("a README command the test does not run: {other}"),
        }
        ran.push(cmd);
    }
    assert_eq!(
        ran.len() + 1,
        commands.len(),
        "every command ran (plansync run in the background)"
    );
    // The store answers the README's SQL, and the record it names has its sync state.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the store");
    let mut statements = 0;
    for block in readme.split("```sql").skip(1) {
        let block = &block[..block.find("```").expect("a closed block")];
        for statement in block.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let sql: String = statement
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            let mut stmt = conn
                .prepare(&sql)
                .unwrap_or_else(|e| panic!("the README's SQL `{sql}`: {e}"));
            let rows = stmt.query_map([], |_| Ok(())).expect("query").count();
            if sql.contains("shadow_readable") {
                assert!(rows >= 1, "the README's record has sync state: {sql}");
                assert!(sql.contains(deal), "{sql}");
            }
            statements += 1;
        }
    }
    assert!(statements >= 4, "{statements} README statements");
    drop(engine);
    drop(sims);
}
