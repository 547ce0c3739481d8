//! `plansync sim crm` through the real binary: it starts on a free port, prints its URL on
//! stdout, answers a client there, and refuses bad input with a one-line error. (The same for
//! `plansync sim anaplan` lives in `tests/sim_anaplan.rs`.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// Kills the simulator when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `plansync sim <args>` and returns it with the first line it printed on stdout.
fn start(args: &[&str]) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_plansync"))
        .arg("sim")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start plansync sim");
    let stdout = child.stdout.take().expect("stdout");
    let running = Running(child);
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    reader.read_line(&mut line).expect("read the first line");
    // Keep reading what follows (the admin line): with the pipe closed, the simulator's next
    // print fails and it exits before the test talks to it.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    (running, line.trim().to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    // reqwest is built without a default TLS provider; the library installs ring on demand.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn sim_crm_prints_its_instance_url_and_serves_oauth_there() {
    let (_sim, url) = start(&["crm", "--port", "0"]);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let body: Value = runtime().block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{url}/services/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "plansync-demo"),
                ("client_secret", "demo-secret"),
            ])
            .send()
            .await
            .expect("token request");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    });
    assert_eq!(body["instance_url"], Value::String(url.clone()), "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
}

#[test]
fn sim_crm_refuses_a_missing_seed_file_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_plansync"))
        .args(["sim", "crm", "--port", "0", "--seed", "no/such/seed.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no/such/seed.toml"), "{err}");
    assert!(out.stdout.is_empty());
}

/// A reader that closed stdout (a script that took the URL and went on, `… | head -1`) does
/// not stop the simulators: their banner's write errors are not fatal.
#[test]
fn a_closed_stdout_does_not_stop_the_simulators() {
    for kind in ["crm", "anaplan"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_plansync"))
            .args(["sim", kind, "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start plansync sim");
        // Closed before the simulator writes a byte.
        drop(child.stdout.take());
        let running = Running(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{kind}: never served");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut running = running;
        assert!(
            running.0.try_wait().expect("status").is_none(),
            "{kind}: the simulator stopped"
        );
    }
}
