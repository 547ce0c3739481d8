//! Secrets stay secret: canary values planted as the CRM client secret, the Anaplan password
//! and the token a (broken, then hostile) Anaplan hands out appear in no log line at trace
//! level, no byte of the store and no error message, across the failure paths: an
//! authentication answer that cannot be read, 401s whose bodies echo the token, and config
//! errors.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use plansync_sim::crm::{self as csim, CrmSimConfig};
use tokio::net::TcpListener;

const CRM_SECRET: &str = "CANARYcrmSecret7f3a";
const ANAPLAN_PASSWORD: &str = "CANARYanaplanPw91c2";
const ANAPLAN_TOKEN: &str = "CANARYtokenValue.5e8d+Q/w==";

/// Every secret the test planted.
const CANARIES: [&str; 3] = [CRM_SECRET, ANAPLAN_PASSWORD, ANAPLAN_TOKEN];

fn assert_clean(what: &str, text: &str) {
    for canary in CANARIES {
        // The distinctive part of each: a partial excerpt would leak it too.
        let core = &canary[6..16];
        assert!(
            !text.contains(core),
            "{what} holds a secret ({core}):\n{}",
            text.lines()
                .filter(|l| l.contains(core))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// An Anaplan whose authentication first answers in a shape plansync cannot read (the token
/// inside), then properly; whose API answers 401 with a body that echoes the header it got.
async fn hostile_anaplan() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let auths = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (a, c) = (auths.clone(), calls.clone());
    let app = Router::new()
        .route(
            "/token/authenticate",
            axum::routing::post(move || {
                let n = a.fetch_add(1, Ordering::SeqCst);
                async move {
                    let body = if n % 2 == 0 {
                        // expiresAt is not a number: unreadable, with the token inside.
                        format!(
                            r#"{{"status":"SUCCESS","tokenInfo":{{"expiresAt":"soon","tokenId":"t1","tokenValue":"{ANAPLAN_TOKEN}","refreshTokenId":"r1"}}}}"#
                        )
                    } else {
                        format!(
                            r#"{{"status":"SUCCESS","tokenInfo":{{"expiresAt":4102444800000,"tokenId":"t1","tokenValue":"{ANAPLAN_TOKEN}","refreshTokenId":"r1"}}}}"#
                        )
                    };
                    ([("content-type", "application/json")], body)
                }
            }),
        )
        .fallback(move |headers: HeaderMap| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                (
                    StatusCode::UNAUTHORIZED,
                    [("content-type", "application/json")],
                    format!(r#"{{"status":"FAILURE","statusMessage":"token rejected: {auth}"}}"#),
                )
                    .into_response()
            }
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, auths, calls)
}

fn config_text(crm: &str, anaplan: &str) -> String {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    format!(
        r#"rules = "{rules}"
store = "plansync.db"

[crm]
login_url = "{crm}"
api_version = "59.0"

[crm.auth]
method = "client_credentials"
client_id = "canary-app"
client_secret_env = "T_CRM_SECRET"

[anaplan]
auth_url = "{anaplan}"
api_url = "{anaplan}/2/0"

[anaplan.auth]
method = "basic"
user = "canary@example.com"
password_env = "T_ANAPLAN_PASSWORD"

[http]
address = "127.0.0.1:0"
"#,
        rules = rules.display(),
    )
}

fn plansync(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plansync"));
    c.current_dir(dir)
        .args(args)
        .env("T_CRM_SECRET", CRM_SECRET)
        .env("T_ANAPLAN_PASSWORD", ANAPLAN_PASSWORD)
        .env("PLANSYNC_LOG", "trace")
        .env("NO_COLOR", "1");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_secrets_reach_no_log_line_store_row_or_error() {
    let mut crm_config = CrmSimConfig::default();
    crm_config
        .clients
        .push(("canary-app".into(), plansync_sim::Secret::new(CRM_SECRET)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let crm = csim::start(crm_config, listener).await.unwrap();
    let (anaplan, auths, calls) = hostile_anaplan().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("plansync.toml"),
        config_text(crm.instance_url(), &anaplan),
    )
    .unwrap();

    // The engine, at trace level, against both: it signs in to the CRM, is refused by Anaplan
    // in both ways, and keeps trying.
    let log = dir.path().join("engine.log");
    let mut engine = plansync(dir.path(), &["run", "--config", "plansync.toml"])
        .stdout(Stdio::from(
            std::fs::File::create(dir.path().join("out.log")).unwrap(),
        ))
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while auths.load(Ordering::SeqCst) < 4 || calls.load(Ordering::SeqCst) < 2 {
        if let Ok(Some(status)) = engine.try_wait() {
            // It may give up on its own; that is a path too.
            eprintln!("plansync run ended by itself: {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Anaplan was not asked enough: {} auths, {} calls\n{}",
            auths.load(Ordering::SeqCst),
            calls.load(Ordering::SeqCst),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(engine.id().to_string())
        .status();
    let _ = engine.wait();

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().count() > 20 && text.contains("TRACE"),
        "a trace-level log: {text}"
    );
    assert!(
        text.contains("authentication") && text.contains("401"),
        "both failure paths were taken:\n{text}"
    );
    assert_clean("the engine's log", &text);
    assert_clean(
        "the engine's output",
        &std::fs::read_to_string(dir.path().join("out.log")).unwrap(),
    );
    // Every byte of the store, its WAL included, whatever table a value would be in.
    for suffix in ["", "-wal"] {
        let path = dir.path().join(format!("plansync.db{suffix}"));
        if let Ok(bytes) = std::fs::read(&path) {
            assert_clean(
                &path.display().to_string(),
                &String::from_utf8_lossy(&bytes),
            );
        }
    }
    let status = plansync(dir.path(), &["status", "--db", "plansync.db"])
        .output()
        .unwrap();
    assert_clean("status", &String::from_utf8_lossy(&status.stdout));

    // `check` on the same config: its errors name the failures, not the secrets.
    let out = plansync(dir.path(), &["check", "--config", "plansync.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_clean("check's output", &String::from_utf8_lossy(&out.stdout));
    assert_clean("check's errors", &String::from_utf8_lossy(&out.stderr));

    // Config errors: a secret written into the file, and one inside a URL.
    let inline = config_text(crm.instance_url(), &anaplan)
        .replace(
            "client_secret_env = \"T_CRM_SECRET\"",
            &format!("client_secret = \"{CRM_SECRET}\""),
        )
        .replace(
            &format!("auth_url = \"{anaplan}\""),
            &format!(
                "auth_url = \"{}\"",
                anaplan.replace("http://", &format!("http://u:{ANAPLAN_PASSWORD}@"))
            ),
        );
    std::fs::write(dir.path().join("bad.toml"), inline).unwrap();
    for args in [
        ["check", "--config", "bad.toml"],
        ["run", "--config", "bad.toml"],
    ] {
        let out = plansync(dir.path(), &args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("would put a secret") && stderr.contains("user name or password"),
            "{args:?}: {stderr}"
        );
        assert_clean("a config error", &stderr);
        assert_clean("a config error", &String::from_utf8_lossy(&out.stdout));
    }
}
