//! The end-to-end harness the integration tests share: both simulators on loopback sockets,
//! the engine in-process with its real clients, sinks and SQLite file, and the helpers that
//! read both systems and the store.

pub mod readme_text;
pub mod run;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plansync::anaplan::{
    AnaplanClient, AnaplanConfig, AuthMethod, CellValue as Cell, CellWrite, DimRef, ItemRef,
    LineItemRef, RetryPolicy,
};
use plansync::crm::cdc::Transport;
use plansync::crm::{AuthConfig, CrmClient, CrmConfig};
use plansync::engine::dispatch::Sink;
use plansync::engine::run::{EngineHandle, EngineOptions, Sinks, StreamOptions};
use plansync::engine::sink::anaplan::{AnaplanSink, AnaplanSinkSettings};
use plansync::engine::sink::crm::CrmSink;
use plansync::engine::write::WriteRetry;
use plansync::model::{Decimal, ExceptionKind, ExceptionStatus};
use plansync::rules::{self, RuleSet};
use plansync::secret::Secret;
use plansync::store::{ExceptionFilter, ExceptionRecord, Store};
use plansync_sim::anaplan::{self as asim, AnaplanSim, SimConfig, SimHandle};
use plansync_sim::crm::{self as csim, CrmSimConfig, CrmSimHandle};
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const MODEL: &str = "75A40874E6B64FA3AE0743278996850F";
pub const OPP_MODULE: &str = "OPP01 Opportunity Data";
pub const OPP_LIST: &str = "Opportunities";
pub const TER_MODULE: &str = "TER01 Territory Quotas";
pub const TER_LIST: &str = "Territories";
pub const API_VERSION: &str = "59.0";

/// An Anaplan simulator on a loopback port of its own.
pub async fn anaplan_sim(config: SimConfig) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    AnaplanSim::start(config, listener)
        .await
        .expect("Anaplan simulator starts")
}

/// A CRM simulator on a loopback port of its own.
pub async fn crm_sim(config: CrmSimConfig) -> CrmSimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    csim::start(config, listener)
        .await
        .expect("CRM simulator starts")
}

pub fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

/// A copy of the example rules, each file's text passed through `edit(file name, text)`.
pub fn rules_copy(edit: impl Fn(&str, String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["opportunity.toml", "territory.toml"] {
        let text = std::fs::read_to_string(rules_dir().join(file)).expect("rule file");
        std::fs::write(dir.path().join(file), edit(file, text)).expect("write rule file");
    }
    dir
}

pub struct Env {
    pub crm: CrmSimHandle,
    pub anaplan: SimHandle,
    pub engine: Option<EngineHandle>,
    pub rules: RuleSet,
    pub db: PathBuf,
    /// The engine's retry budget for writes answered "retry" (its default when `None`).
    pub write_retry: Option<WriteRetry>,
    /// Applied to the engine's options last, for what a test needs to differ.
    pub tune: Option<fn(&mut EngineOptions)>,
    _dir: tempfile::TempDir,
}

pub fn crm_client(sim: &CrmSimHandle) -> CrmClient {
    let auth = AuthConfig::ClientCredentials {
        client_id: csim::DEFAULT_CLIENT_ID.into(),
        client_secret: Secret::new(csim::DEFAULT_CLIENT_SECRET),
    };
    let mut config = CrmConfig::new(sim.instance_url(), API_VERSION, auth);
    config.call_client_id = "plansync-e2e".into();
    config.request_timeout = Duration::from_secs(20);
    CrmClient::new(config).expect("CRM client")
}

pub fn anaplan_client(sim: &SimHandle) -> AnaplanClient {
    anaplan_client_as(sim, asim::DEFAULT_PASSWORD)
}

pub fn anaplan_client_as(sim: &SimHandle, password: &str) -> AnaplanClient {
    let auth = AuthMethod::Basic {
        user: asim::DEFAULT_USER.into(),
        password: Secret::new(password),
    };
    let mut c = AnaplanConfig::new(sim.auth_url(), sim.api_url(), auth);
    c.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(300),
        max_elapsed: Duration::from_secs(20),
    };
    c.request_timeout = Duration::from_secs(20);
    AnaplanClient::new(c).expect("Anaplan client")
}

impl Env {
    pub async fn new(rules_dir: &Path) -> Env {
        Env::with(rules_dir, CrmSimConfig::default(), SimConfig::default()).await
    }

    pub async fn with(rules_dir: &Path, crm: CrmSimConfig, anaplan: SimConfig) -> Env {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let crm = csim::start(crm, listener).await.expect("CRM sim");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let anaplan = AnaplanSim::start(anaplan, listener)
            .await
            .expect("Anaplan sim");
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("plansync.db");
        Env {
            crm,
            anaplan,
            engine: None,
            rules: rules::load(&[rules_dir.to_path_buf()]).expect("rules load"),
            db,
            write_retry: None,
            tune: None,
            _dir: dir,
        }
    }

    pub async fn start(&mut self, stream: bool) {
        let engine = self.launch(stream, 2, anaplan_client(&self.anaplan)).await;
        engine.ready().await.expect("the first run completes");
        if stream {
            let e = &engine;
            wait_for("the stream to connect", || async { e.stream_connected() }).await;
        }
        self.engine = Some(engine);
    }

    /// The engine launched on this store with `shards` and `anaplan` (a client of the test's
    /// choosing, e.g. with a wrong password), not waited for.
    pub async fn launch(
        &self,
        stream: bool,
        shards: usize,
        anaplan: AnaplanClient,
    ) -> EngineHandle {
        self.launch_with(stream, shards, anaplan, |sink| sink).await
    }

    /// [`Env::launch`] with the Anaplan sink wrapped by `wrap` (e.g. to hold its writes).
    pub async fn launch_with(
        &self,
        stream: bool,
        shards: usize,
        anaplan: AnaplanClient,
        wrap: impl FnOnce(Box<dyn Sink>) -> Box<dyn Sink>,
    ) -> EngineHandle {
        let mut options = EngineOptions::new(&self.db);
        options.shards = shards;
        options.batch_window = Duration::from_millis(20);
        // Pollers run when a test asks (`poll`), not on their own.
        options.crm_poll = Duration::from_secs(3600);
        options.anaplan_poll = Duration::from_secs(3600);
        options.lookback = Duration::from_secs(60);
        if let Some(retry) = self.write_retry {
            options.write_retry = retry;
        }
        options.stream = stream.then(|| StreamOptions {
            api_version: API_VERSION.into(),
            channels: vec![
                "/data/OpportunityChangeEvent".into(),
                "/data/Territory__ChangeEvent".into(),
            ],
            transport: Transport::WebSocket,
            client_id: "plansync-e2e".into(),
        });
        if let Some(tune) = self.tune {
            tune(&mut options);
        }
        let crm = crm_client(&self.crm);
        let sinks = Sinks {
            anaplan: wrap(Box::new(AnaplanSink::new(
                anaplan.clone(),
                AnaplanSinkSettings {
                    transactional_max_cells: 50_000,
                    bulk_imports: Default::default(),
                },
            ))),
            crm: Box::new(CrmSink::new(crm.clone())),
        };
        let (_tx, rx) = watch::channel(Arc::new(self.rules.clone()));
        // The sender is dropped: these tests do not reload rules, and a closed watch keeps
        // its last value.
        EngineHandle::launch(options, rx, crm, anaplan, sinks)
            .await
            .expect("engine launches")
    }

    /// Both simulators, and the engine started on them and settled.
    pub async fn running(rules_dir: &Path) -> Env {
        let mut env = Env::new(rules_dir).await;
        env.start(true).await;
        env.settle().await;
        env
    }

    /// Waits until Anaplan's opportunity cell shows `value`.
    pub async fn wait_cell(&self, id: &str, line_item: &str, value: &str) {
        wait_for(
            &format!("{line_item} of {id} to be {value} in Anaplan"),
            || async { self.cell(id, line_item).as_deref() == Some(value) },
        )
        .await;
    }

    /// An open deal in `stage` (so the `closed` override does not apply).
    pub async fn deal_in(&self, stage: &str) -> String {
        let ids = self.opportunities().await;
        ids.into_iter()
            .find(|id| self.crm_field(id, "StageName") == json!(stage))
            .unwrap_or_else(|| panic!("a deal in {stage}"))
    }

    pub async fn stop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown().await.expect("clean shutdown");
        }
    }

    pub fn engine(&self) -> &EngineHandle {
        self.engine.as_ref().expect("engine running")
    }

    /// Runs both pollers and waits until the store has taken everything and no write is open.
    pub async fn settle(&self) {
        let engine = self.engine();
        wait_for("the engine to settle", || async {
            engine.flush().await.expect("flush");
            engine.outbox_depth().await.expect("depth") == 0
        })
        .await;
    }

    pub async fn poll(&self) {
        self.engine().poll_now(None);
        // A poll is quick against the simulators; give it time, then settle.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.settle().await;
    }

    pub fn store(&self) -> Store {
        Store::open_read_only(&self.db).expect("store")
    }

    pub fn exceptions(&self, kind: Option<ExceptionKind>) -> Vec<ExceptionRecord> {
        let filter = ExceptionFilter {
            kind,
            ..ExceptionFilter::default()
        };
        self.store().list_exceptions(&filter).expect("exceptions")
    }

    pub fn cell(&self, code: &str, line_item: &str) -> Option<String> {
        let cells = self.anaplan.cells(MODEL, OPP_MODULE).expect("module");
        cells
            .get(code)
            .and_then(|row| row.get(line_item))
            .map(|v| v.to_string())
    }

    /// What Anaplan's territory module shows for `code`'s `line_item`.
    pub fn territory_cell(&self, code: &str, line_item: &str) -> Option<String> {
        self.anaplan
            .cells(MODEL, TER_MODULE)
            .expect("module")
            .get(code)
            .and_then(|row| row.get(line_item))
            .map(|v| v.to_string())
    }

    /// The CRM's opportunity ids, by name.
    pub async fn opportunities(&self) -> Vec<String> {
        let rows = crm_client(&self.crm)
            .query("SELECT Id FROM Opportunity ORDER BY Name")
            .await
            .expect("query");
        let ids: Vec<String> = rows
            .records
            .iter()
            .filter_map(|r| r.get("Id").and_then(Json::as_str).map(str::to_string))
            .collect();
        assert!(!ids.is_empty(), "the CRM seed has opportunities");
        ids
    }

    pub fn crm_field(&self, id: &str, field: &str) -> Json {
        self.crm.record(id).expect("record")[field].clone()
    }

    /// A planner's edit, through the API as any other Anaplan client would make it.
    pub async fn planner_sets(
        &self,
        module: &str,
        list: &str,
        code: &str,
        line_item: &str,
        value: Cell,
    ) {
        let planner = anaplan_client(&self.anaplan);
        let cell = CellWrite {
            line_item: LineItemRef::Name(line_item.into()),
            dimensions: vec![(DimRef::Name(list.into()), ItemRef::Code(code.into()))],
            value,
        };
        let module = planner.module_id(MODEL, module).await.expect("module id");
        let outcome = planner
            .write_cells(MODEL, &module, &[cell])
            .await
            .expect("planner write");
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    }

    pub async fn ids(&self, object: &str) -> Vec<String> {
        let rows = crm_client(&self.crm)
            .query(&format!("SELECT Id FROM {object} ORDER BY Name"))
            .await
            .expect("query");
        rows.records
            .iter()
            .filter_map(|r| r.get("Id").and_then(Json::as_str).map(str::to_string))
            .collect()
    }

    pub fn open_exceptions_for(&self, id: &str, field: &str) -> Vec<ExceptionRecord> {
        let filter = ExceptionFilter {
            status: Some(ExceptionStatus::Open),
            crm_id: Some(id.into()),
            field: Some(field.into()),
            ..ExceptionFilter::default()
        };
        self.store().list_exceptions(&filter).expect("exceptions")
    }

    pub fn rep_edits(&self, id: &str, fields: Json) {
        self.crm
            .user_edit("Opportunity", id, fields, None)
            .expect("rep edit");
    }
}

pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn number(v: &str) -> Cell {
    Cell::Number(Decimal::parse(v, 2).expect("number"))
}

/// `plansync exceptions resolve --db DB ID HOW… --by reviewer@example.com`, which must
/// succeed.
pub fn resolve_by_cli(db: &Path, id: i64, how: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plansync"))
        .args(["exceptions", "resolve", "--db"])
        .arg(db)
        .arg(id.to_string())
        .args(how)
        .args(["--by", "reviewer@example.com"])
        .output()
        .expect("plansync exceptions resolve");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `tests/data/<script>` (a Python script driving the CRM simulator with a third-party
/// client) with `PLANSYNC_TEST_PYTHON`, given the simulator's URL and a token in `CRM_URL` /
/// `CRM_TOKEN`; what it printed, as one JSON object.
pub async fn crm_script(crm: &CrmSimHandle, script: &str) -> Json {
    let token = crm_client(crm)
        .token()
        .await
        .expect("a token")
        .token
        .expose()
        .to_string();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(script);
    let python = std::env::var("PLANSYNC_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let url = crm.instance_url().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(&path)
            .env("CRM_URL", url)
            .env("CRM_TOKEN", token)
            .output()
            .expect("python (set PLANSYNC_TEST_PYTHON to a venv from .ci/requirements.txt)")
    })
    .await
    .expect("the script's thread");
    assert!(
        out.status.success(),
        "{script} failed against the simulator (is .ci/requirements.txt installed? .ci/run sets up a venv):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}
