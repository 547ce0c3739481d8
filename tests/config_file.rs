//! `plansync.toml` end to end: the shipped examples load, every class of mistake is reported
//! at its line with the key named, all at once, and the result builds working clients.

use std::collections::HashMap;
use std::env::VarError;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plansync::anaplan::{AnaplanClient, AuthMethod, CertFormat};
use plansync::config::{Config, ConfigError, Sources, SystemSources};
use plansync::crm::cdc::Transport;
use plansync::crm::{AuthConfig, CrmClient};
use plansync::rules::FileErrors;
use plansync_toml::diagnostic::render;

/// Environment variables from a map (so tests never call the `unsafe` `set_var`), files from
/// the real file system.
struct Env(HashMap<String, String>);

impl Env {
    fn of(pairs: &[(&str, &str)]) -> Env {
        Env(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }
}

impl Sources for Env {
    fn env(&self, name: &str) -> Result<String, VarError> {
        self.0.get(name).cloned().ok_or(VarError::NotPresent)
    }
    fn read(&self, path: &Path) -> io::Result<String> {
        SystemSources.read(path)
    }
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plansync.toml")
}

fn key_file(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/keys")
            .join(name),
    )
    .unwrap()
}

/// A minimal valid file, with `extra` spliced in at the end of the given section.
const MINIMAL: &str = r#"[crm]
login_url = "http://127.0.0.1:9"

[crm.auth]
method = "client_credentials"
client_id = "app"
client_secret_env = "T_SECRET"

[anaplan]
api_url = "http://127.0.0.1:9/2/0"
auth_url = "http://127.0.0.1:9"

[anaplan.auth]
method = "basic"
user = "u@example.com"
password_env = "T_PASSWORD"
"#;

fn minimal_env() -> Env {
    Env::of(&[("T_SECRET", "s3cr3t-crm"), ("T_PASSWORD", "s3cr3t-anaplan")])
}

fn errors(text: &str, env: &Env) -> FileErrors {
    match Config::parse(Path::new("/etc/plansync/plansync.toml"), text, env) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e,
    }
}

/// The `file:line:column: message` line mentioning `needle`.
fn line_with(errors: &FileErrors, needle: &str) -> String {
    let lines = errors.one_line_each();
    lines
        .iter()
        .find(|l| l.contains(needle))
        .cloned()
        .unwrap_or_else(|| panic!("no error mentioning {needle:?} in {lines:#?}"))
}

#[test]
fn the_example_loads_with_its_secrets_and_builds_both_clients() {
    let env = Env::of(&[
        ("PLANSYNC_CRM_CLIENT_SECRET", "crm-example-secret"),
        ("PLANSYNC_ANAPLAN_PASSWORD", "anaplan-example-password"),
    ]);
    let config = Config::load_with(&example_path(), &env).unwrap();
    let dir = example_path().parent().unwrap().to_path_buf();
    assert_eq!(config.rules, dir.join("rules"));
    assert_eq!(config.store, dir.join("plansync.db"));
    assert_eq!(config.crm.streaming, Transport::LongPolling);
    assert_eq!(config.crm.api_version, "62.0");
    assert_eq!(config.schedule.crm_poll, Duration::from_secs(300));
    assert_eq!(config.schedule.lookback, Duration::from_secs(120));
    assert_eq!(
        config.engine.shards,
        plansync::engine::run::default_shards()
    );
    assert_eq!(config.engine.batch_window, Duration::from_millis(100));
    assert_eq!(config.engine.transactional_max_cells, 50_000);
    match &config.crm.auth {
        AuthConfig::ClientCredentials { client_secret, .. } => {
            assert_eq!(client_secret.expose(), "crm-example-secret")
        }
        other => panic!("{other:?}"),
    }
    let anaplan = config.anaplan_client_config();
    assert_eq!(anaplan.calls_per_minute, 600);
    AnaplanClient::new(anaplan).unwrap();
    let crm = config.crm_client_config();
    assert_eq!(crm.call_client_id, "plansync");
    assert_eq!(crm.bulk_threshold, 2000);
    CrmClient::new(crm).unwrap();
    assert_eq!(
        config.cdc_channels(["Opportunity", "Territory__c"]),
        [
            "/data/OpportunityChangeEvent",
            "/data/Territory__ChangeEvent"
        ]
    );
}

#[test]
fn the_example_without_its_environment_names_both_variables_and_lines() {
    let err = match Config::load_with(&example_path(), &Env::of(&[])) {
        Err(ConfigError::Invalid(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(err.problems.len(), 2, "{:#?}", err.one_line_each());
    let crm = line_with(&err, "PLANSYNC_CRM_CLIENT_SECRET");
    let text = std::fs::read_to_string(example_path()).unwrap();
    let at = text
        .lines()
        .position(|l| l.starts_with("client_secret_env"))
        .unwrap()
        + 1;
    assert!(
        crm.contains(&format!("examples/plansync.toml:{at}:21:")),
        "{crm}"
    );
    assert!(crm.contains("client_secret_env"), "{crm}");
    let anaplan = line_with(&err, "PLANSYNC_ANAPLAN_PASSWORD");
    assert!(anaplan.contains("password_env"), "{anaplan}");
}

fn sim_example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plansync-sim.toml")
}

/// The configuration for the two default simulators: it loads with the simulators' default
/// credentials, under the names its comments tell the reader to export, and points at their
/// default ports (that a run on it is quiet is `tests/newcomer.rs`).
#[test]
fn the_simulators_example_loads_with_their_default_credentials() {
    use plansync_sim::anaplan as asim;
    use plansync_sim::crm as csim;
    let text = std::fs::read_to_string(sim_example_path()).unwrap();
    for export in [
        format!(
            "export PLANSYNC_SIM_CRM_SECRET={}",
            csim::DEFAULT_CLIENT_SECRET
        ),
        format!(
            "export PLANSYNC_SIM_ANAPLAN_PASSWORD={}",
            asim::DEFAULT_PASSWORD
        ),
    ] {
        assert!(text.contains(&export), "the comments say `{export}`");
    }
    let env = Env::of(&[
        ("PLANSYNC_SIM_CRM_SECRET", csim::DEFAULT_CLIENT_SECRET),
        ("PLANSYNC_SIM_ANAPLAN_PASSWORD", asim::DEFAULT_PASSWORD),
    ]);
    let config = Config::load_with(&sim_example_path(), &env).unwrap();
    let dir = sim_example_path().parent().unwrap().to_path_buf();
    assert_eq!(config.rules, dir.join("../rules"));
    assert!(config.rules.join("opportunity.toml").is_file());
    assert_eq!(config.store, dir.join("../plansync-sim.db"));
    assert_eq!(config.crm.login_url, "http://127.0.0.1:8091");
    assert_eq!(config.crm.streaming, Transport::WebSocket);
    match &config.crm.auth {
        AuthConfig::ClientCredentials {
            client_id,
            client_secret,
        } => {
            assert_eq!(client_id, csim::DEFAULT_CLIENT_ID);
            assert_eq!(client_secret.expose(), csim::DEFAULT_CLIENT_SECRET);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(config.anaplan.auth_url, "http://127.0.0.1:8090");
    assert_eq!(config.anaplan.api_url, "http://127.0.0.1:8090/2/0");
    match &config.anaplan.auth {
        AuthMethod::Basic { user, password } => {
            assert_eq!(user, asim::DEFAULT_USER);
            assert_eq!(password.expose(), asim::DEFAULT_PASSWORD);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(config.schedule.anaplan_poll, Duration::from_secs(30));
    AnaplanClient::new(config.anaplan_client_config()).unwrap();
    CrmClient::new(config.crm_client_config()).unwrap();
}

#[test]
fn minimal_file_gets_every_default() {
    let c = Config::parse(
        Path::new("/etc/plansync/plansync.toml"),
        MINIMAL,
        &minimal_env(),
    )
    .unwrap();
    assert_eq!(c.rules, Path::new("/etc/plansync/rules"));
    assert_eq!(c.store, Path::new("/etc/plansync/plansync.db"));
    assert_eq!(c.crm.streaming, Transport::WebSocket);
    assert_eq!(c.crm.call_client_id, "plansync");
    assert_eq!(c.crm.channels, None);
    assert_eq!(c.anaplan.calls_per_minute, 600);
    assert_eq!(c.schedule.anaplan_poll, Duration::from_secs(300));
    assert_eq!(c.engine.crm_bulk_threshold, 2000);
    assert_eq!(c.engine.crm_bulk_query_above, 20_000);
}

#[test]
fn an_inline_secret_is_refused_with_a_pointer_to_env_and_file() {
    let text = MINIMAL.replace(
        "client_secret_env = \"T_SECRET\"",
        "client_secret = \"hunter2\"",
    );
    let err = errors(&text, &minimal_env());
    let line = line_with(&err, "`client_secret` would put a secret");
    assert!(
        line.starts_with("/etc/plansync/plansync.toml:7:1:"),
        "{line}"
    );
    let p = err
        .problems
        .iter()
        .find(|p| p.message.contains("would put a secret"))
        .unwrap();
    let help = p.help.as_deref().unwrap();
    assert!(
        help.contains("client_secret_env") && help.contains("client_secret_file"),
        "{help}"
    );
    // The value itself never appears in what is printed, nor in the file's lines the report
    // shows; the other lines are shown as they are.
    assert!(!p.message.contains("hunter2") && !help.contains("hunter2"));
    let shown = plansync_toml::diagnostic::render(&err, false);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("client_secret = \"*******\""), "{shown}");
    assert!(!format!("{err} {err:?}").contains("hunter2"));

    let text = MINIMAL.replace("password_env = \"T_PASSWORD\"", "password = \"pw\"");
    let err = errors(&text, &minimal_env());
    let line = line_with(&err, "`password` would put a secret");
    assert!(line.contains(":16:1:"), "{line}");
}

#[test]
fn a_poll_below_thirty_seconds_is_refused() {
    let text = format!("{MINIMAL}\n[schedule]\ncrm_poll = \"10s\"\nanaplan_poll = \"30s\"\n");
    let err = errors(&text, &minimal_env());
    assert_eq!(err.problems.len(), 1, "{:#?}", err.one_line_each());
    let line = line_with(&err, "crm_poll");
    assert!(line.contains(":19:12:"), "{line}");
    assert!(line.contains("below the minimum of 30s"), "{line}");
    // 30 s itself is allowed.
    let ok = format!("{MINIMAL}\n[schedule]\ncrm_poll = \"30s\"\n");
    let c = Config::parse(Path::new("p.toml"), &ok, &minimal_env()).unwrap();
    assert_eq!(c.schedule.crm_poll, Duration::from_secs(30));
}

#[test]
fn every_problem_is_reported_at_once_each_at_its_line() {
    let text = format!(
        "{}\n[schedule]\ncrm_pol = \"5m\"\nlookback = \"2 weeks\"\n\n[engine]\nshards = 0\nbatch_window = \"11s\"\n",
        MINIMAL
            .replace(
                "api_url = \"http://127.0.0.1:9/2/0\"",
                "api_url = \"http://127.0.0.1:9/1/3\""
            )
            .replace(
                "password_env = \"T_PASSWORD\"",
                "password_file = \"missing/pw.txt\""
            )
            .replace(
                "method = \"client_credentials\"",
                "method = \"client_credential\""
            )
    );
    let err = errors(&text, &minimal_env());
    let lines = err.one_line_each();
    assert_eq!(lines.len(), 7, "{lines:#?}");
    let method = line_with(&err, "client_credential");
    assert!(method.contains(":5:10:"), "{method}");
    let m = err
        .problems
        .iter()
        .find(|p| p.message.contains("client_credential"))
        .unwrap();
    assert_eq!(
        m.help.as_deref(),
        Some("did you mean \"client_credentials\"?")
    );
    assert!(line_with(&err, "/2/0").contains(":10:11:"));
    let pw = line_with(&err, "password_file");
    assert!(
        pw.contains(":16:17:") && pw.contains("/etc/plansync/missing/pw.txt"),
        "{pw}"
    );
    let unknown = line_with(&err, "unknown key `crm_pol`");
    assert!(unknown.contains(":19:1:"), "{unknown}");
    let u = err
        .problems
        .iter()
        .find(|p| p.message.contains("crm_pol"))
        .unwrap();
    assert_eq!(u.help.as_deref(), Some("did you mean `crm_poll`?"));
    assert!(line_with(&err, "lookback").contains(":20:12:"));
    assert!(line_with(&err, "shards").contains(":23:10:"));
    assert!(line_with(&err, "batch_window").contains(":24:16:"));
    // The miette picture names the file and position too.
    let picture = render(&err, false);
    assert!(picture.contains("plansync.toml:19:1"), "{picture}");
}

#[test]
fn unknown_sections_wrong_types_and_missing_pieces_are_each_reported() {
    let text = "rules = 5\n[anaplan]\ncalls_per_minute = 0\n[anaplan.auth]\nmethod = \"token\"\nuser = \"x\"\n[engin]\nshards = 2\n";
    let err = errors(text, &Env::of(&[]));
    let lines = err.one_line_each();
    assert!(line_with(&err, "`rules`").contains(":1:9:"), "{lines:#?}");
    assert!(line_with(&err, "calls_per_minute").contains(":3:20:"));
    assert!(line_with(&err, "`user` is not used by method \"token\"").contains(":6:1:"));
    assert!(line_with(&err, "no `token_env`").contains("plansync.toml"));
    let section = err
        .problems
        .iter()
        .find(|p| p.message.contains("`engin`"))
        .unwrap();
    assert_eq!(section.help.as_deref(), Some("did you mean `engine`?"));
    assert!(line_with(&err, "no `crm`").contains(":1:1:"));
}

#[test]
fn secrets_from_files_and_relative_paths_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(
        dir.path().join("secrets/crm.pem"),
        key_file("crm_client_rsa.pem"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("secrets/anaplan.key"),
        key_file("client_leaf_rsa.pem"),
    )
    .unwrap();
    std::fs::write(dir.path().join("secrets/anaplan.crt"), leaf_certificate()).unwrap();
    let text = r#"
rules = "my-rules"
store = "/var/lib/plansync/state.db"

[crm]
login_url = "http://127.0.0.1:9"
api_version = "61.0"
client_id_for_call_options = "plansync-test"
channels = ["/data/OpportunityChangeEvent"]

[crm.auth]
method = "jwt_bearer"
client_id = "app"
username = "integration@example.com"
private_key_file = "secrets/crm.pem"

[anaplan]
api_url = "http://127.0.0.1:9/2/0/"
auth_url = "http://127.0.0.1:9"
calls_per_minute = 120

[anaplan.auth]
method = "certificate"
certificate_file = "secrets/anaplan.crt"
private_key_file = "secrets/anaplan.key"
format = "v1"
"#;
    let path = dir.path().join("plansync.toml");
    std::fs::write(&path, text).unwrap();
    // The real environment and file system: no variable is involved.
    let config = Config::load(&path).unwrap();
    assert_eq!(config.rules, dir.path().join("my-rules"));
    assert_eq!(config.store, Path::new("/var/lib/plansync/state.db"));
    assert_eq!(config.anaplan.api_url, "http://127.0.0.1:9/2/0");
    assert_eq!(
        config.cdc_channels(["Account"]),
        ["/data/OpportunityChangeEvent"]
    );
    match &config.crm.auth {
        AuthConfig::JwtBearer {
            private_key_pem,
            username,
            ..
        } => {
            assert_eq!(username, "integration@example.com");
            assert!(private_key_pem.expose().contains("BEGIN PRIVATE KEY"));
        }
        other => panic!("{other:?}"),
    }
    match &config.anaplan.auth {
        AuthMethod::Certificate { format, .. } => assert_eq!(*format, CertFormat::V1),
        other => panic!("{other:?}"),
    }
    let anaplan = config.anaplan_client_config();
    assert_eq!(anaplan.calls_per_minute, 120);
    AnaplanClient::new(anaplan).unwrap();
    let crm = config.crm_client_config();
    assert_eq!(crm.call_client_id, "plansync-test");
    assert_eq!(crm.api_version, "61.0");
    CrmClient::new(crm).unwrap();

    // Neither secret nor key appears in Debug.
    let shown = format!("{config:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(shown.contains("[redacted]"));
}

#[test]
fn a_pkcs1_key_is_refused_with_the_conversion_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("k.pem"),
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    let text = MINIMAL
        .replace(
            "method = \"client_credentials\"",
            "method = \"jwt_bearer\"\nusername = \"x@y\"",
        )
        .replace(
            "client_secret_env = \"T_SECRET\"",
            "private_key_file = \"k.pem\"",
        );
    let err = match Config::parse(&dir.path().join("p.toml"), &text, &minimal_env()) {
        Err(e) => e,
        Ok(c) => panic!("{c:?}"),
    };
    let p = err
        .problems
        .iter()
        .find(|p| p.message.contains("PKCS#8"))
        .unwrap();
    assert!(p.help.as_deref().unwrap().contains("openssl pkcs8 -topk8"));
    assert!(line_with(&err, "private_key_file").contains(":8:20:"));
}

#[test]
fn debug_of_a_config_never_shows_a_secret() {
    let c = Config::parse(Path::new("p.toml"), MINIMAL, &minimal_env()).unwrap();
    let shown = format!(
        "{c:?} {:?} {:?}",
        c.anaplan_client_config(),
        c.crm_client_config()
    );
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("[redacted]"));
}

#[test]
fn a_secret_in_both_env_and_file_or_an_empty_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let text = MINIMAL
        .replace(
            "client_secret_env = \"T_SECRET\"",
            "client_secret_env = \"T_SECRET\"\nclient_secret_file = \"x\"",
        )
        .replace("password_env = \"T_PASSWORD\"", "password_file = \"empty\"");
    let err = match Config::parse(&dir.path().join("p.toml"), &text, &minimal_env()) {
        Err(e) => e,
        Ok(c) => panic!("{c:?}"),
    };
    assert!(
        line_with(&err, "both `client_secret_env` and `client_secret_file`").contains(":8:22:")
    );
    assert!(line_with(&err, "is empty").contains(":17:17:"));
}

#[test]
fn a_file_that_cannot_be_read_is_a_read_error() {
    let err = Config::load(Path::new("/nonexistent/plansync.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/plansync.toml"));
}

/// A certificate for `client_leaf_rsa.pem`, signed by the `client_ca_rsa.pem` test CA.
fn leaf_certificate() -> String {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        PKCS_RSA_SHA256,
    };
    let ca_kp =
        KeyPair::from_pem_and_sign_algo(&key_file("client_ca_rsa.pem"), &PKCS_RSA_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "config test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_kp).unwrap();
    let leaf_kp =
        KeyPair::from_pem_and_sign_algo(&key_file("client_leaf_rsa.pem"), &PKCS_RSA_SHA256)
            .unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "integration@example.com");
    params.signed_by(&leaf_kp, &ca).unwrap().pem()
}

#[test]
fn clear_text_beyond_loopback_needs_an_opt_in_and_credentials_never_ride_in_a_url() {
    let far = MINIMAL.replace(
        "api_url = \"http://127.0.0.1:9/2/0\"",
        "api_url = \"http://anaplan.corp.example/2/0\"",
    );
    let err = errors(&far, &minimal_env());
    let line = line_with(&err, "`api_url` uses http:// to anaplan.corp.example");
    assert!(line.contains(":10:11:"), "{line}");
    assert!(line.contains("allow_insecure_http = true"), "{line}");
    // The opt-in is the section's own: [anaplan]'s does not open [crm].
    let opted = far.replace("[anaplan]\n", "[anaplan]\nallow_insecure_http = true\n");
    let c = Config::parse(Path::new("p.toml"), &opted, &minimal_env()).unwrap();
    assert!(c.anaplan.allow_insecure_http && !c.crm.allow_insecure_http);
    assert!(c.anaplan_client_config().allow_insecure_http);
    let crm_far = opted.replace(
        "http://127.0.0.1:9\"\n\n[crm.auth]",
        "http://crm.example\"\n\n[crm.auth]",
    );
    let err = errors(&crm_far, &minimal_env());
    line_with(&err, "`login_url` uses http:// to crm.example");

    let creds = MINIMAL.replace(
        "login_url = \"http://127.0.0.1:9\"",
        "login_url = \"https://admin:Pa55word@login.salesforce.com\"",
    );
    let err = errors(&creds, &minimal_env());
    let line = line_with(&err, "`login_url` must not carry a user name or password");
    assert!(line.contains(":2:13:"), "{line}");
    let shown = plansync_toml::diagnostic::render(&err, false);
    assert!(
        !shown.contains("Pa55word") && !shown.contains("admin:"),
        "{shown}"
    );
}

#[test]
fn notify_takes_its_webhook_from_the_environment_and_never_repeats_it() {
    let with = |section: &str| format!("{MINIMAL}\n[notify]\n{section}\n");
    let hook = "https://hooks.slack.example/services/T0/B0/s3cr3tHookToken";
    let mut env = minimal_env();
    env.0.insert("T_HOOK".into(), hook.into());
    let c = Config::parse(
        Path::new("p.toml"),
        &with("webhook_url_env = \"T_HOOK\"\nstream_down_after = \"2m\""),
        &env,
    )
    .unwrap();
    let n = c.notify.expect("[notify]");
    assert_eq!(n.webhook.expose(), hook);
    assert_eq!(n.stream_down_after, Duration::from_secs(120));
    assert_eq!(n.outbox_older_than, Duration::from_secs(1800));
    assert!(!format!("{n:?}").contains("s3cr3t"));
    assert!(
        Config::parse(Path::new("p.toml"), MINIMAL, &minimal_env())
            .unwrap()
            .notify
            .is_none()
    );

    // Inline: refused, and masked in the report.
    let err = errors(&with(&format!("webhook_url = \"{hook}\"")), &env);
    line_with(&err, "`webhook_url` would put a secret");
    let shown = plansync_toml::diagnostic::render(&err, false);
    assert!(!shown.contains("s3cr3t"), "{shown}");

    // Clear text to another host: refused, naming the host but not the URL.
    env.0.insert(
        "T_HOOK".into(),
        "http://hooks.example/services/s3cr3tHookToken".into(),
    );
    let err = errors(&with("webhook_url_env = \"T_HOOK\""), &env);
    let line = line_with(&err, "the webhook's URL uses http:// to hooks.example");
    assert!(!line.contains("s3cr3t"), "{line}");
}
