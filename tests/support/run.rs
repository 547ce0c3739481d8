//! `plansync run` as a real process, for the tests that need the binary itself (signals, exit
//! codes, its HTTP server): a configuration for the two simulators, the process, its log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use plansync_sim::anaplan::{self as asim, AnaplanSim, SimConfig, SimHandle};
use plansync_sim::crm::{self as csim, CrmSimConfig, CrmSimHandle};
use tokio::net::TcpListener;

/// Both simulators with their default seeds, on fresh loopback ports.
pub async fn simulators() -> (CrmSimHandle, SimHandle) {
    let crm = csim::start(
        CrmSimConfig::default(),
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    )
    .await
    .expect("CRM simulator");
    let anaplan = AnaplanSim::start(
        SimConfig::default(),
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    )
    .await
    .expect("Anaplan simulator");
    (crm, anaplan)
}

/// A configuration for both simulators: the repository's rules, the store `plansync.db`
/// beside the file, the secrets from `T_CRM_SECRET` / `T_ANAPLAN_PASSWORD` (set by
/// [`spawn_run`]), the stream over WebSocket, any free port for health and metrics; `extra`
/// (sections of its own: `[schedule]`, `[engine]`, …) is appended.
pub fn run_config(crm: &CrmSimHandle, anaplan: &SimHandle, extra: &str) -> String {
    format!(
        r#"rules = "{rules}"
store = "plansync.db"

[crm]
login_url = "{crm}"
api_version = "59.0"
streaming = "websocket"

[crm.auth]
method = "client_credentials"
client_id = "{client}"
client_secret_env = "T_CRM_SECRET"

[anaplan]
auth_url = "{auth}"
api_url = "{api}"

[anaplan.auth]
method = "basic"
user = "{user}"
password_env = "T_ANAPLAN_PASSWORD"

[http]
address = "127.0.0.1:0"

{extra}
"#,
        rules = super::rules_dir().display(),
        crm = crm.instance_url(),
        client = csim::DEFAULT_CLIENT_ID,
        auth = anaplan.auth_url(),
        api = anaplan.api_url(),
        user = asim::DEFAULT_USER,
    )
}

/// A running `plansync run`; killed when dropped, however the test ends.
pub struct Running {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Running {
    /// `kill -NAME` (`TERM`, `USR1`, …).
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    /// The log so far (stderr, at `plansync=info`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to end by itself (after a signal).
    pub fn wait(mut self) -> ExitStatus {
        self.child
            .take()
            .expect("running")
            .wait()
            .expect("wait for plansync run")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes `config` as `dir/plansync.toml` and starts `plansync run` on it, its log in
/// `dir/engine.log`, with the simulators' default secrets in the environment.
pub fn spawn_run(dir: &Path, config: &str) -> Running {
    let path = dir.join("plansync.toml");
    std::fs::write(&path, config).expect("write the config");
    let log = dir.join("engine.log");
    let child = Command::new(env!("CARGO_BIN_EXE_plansync"))
        .args(["run", "--config"])
        .arg(&path)
        .env("T_CRM_SECRET", csim::DEFAULT_CLIENT_SECRET)
        .env("T_ANAPLAN_PASSWORD", asim::DEFAULT_PASSWORD)
        .env("PLANSYNC_LOG", "plansync=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start plansync run");
    Running {
        child: Some(child),
        log,
    }
}

/// Waits up to `limit` for `cond`, looking every 250 ms.
pub async fn wait_long(
    what: &str,
    limit: std::time::Duration,
    mut cond: impl AsyncFnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Whether the store at `db` records a completed first run.
pub fn first_run_done(db: &Path) -> bool {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM engine_state WHERE name = 'first_run.completed_at'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .ok()
        })
        .is_some_and(|n| n == 1)
}
