//! The `plansync` command: argument parsing over the library (`plansync`), and what only the
//! command has: the demo, the bench harness, and the simulators' command lines (over
//! `plansync-sim`). Errors are `anyhow` here and only here.

mod bench;
mod cli;
mod demo;
mod harness;
mod serve;

use std::process::ExitCode;

use clap::Parser;

/// glibc's allocator was a sixth of the engine's samples in a first run (shards allocate and
/// free each round's rows from two threads at once); mimalloc's per-thread heaps avoid that.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // The demo prints its own summary; the engine's warnings (a dropped stream it recovers
    // from is part of the script) would only interleave with it.
    let default_filter = match args.command {
        cli::Command::Demo(_) => "error",
        _ => "warn",
    };
    // Logs redirected to a file (a service's journal, the bench's engine log) stay plain text.
    let ansi = args.color.enabled();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLANSYNC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
    // A panic is a bug: one log line like every other event (a journal keeps it whole), its
    // message redacted as any outside text is, since it may quote a value it choked on.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = panic_message(info.payload());
        tracing::error!(target: "plansync", event = "panic", %location, %message,
            "plansync hit a bug (a panic); please report this line");
    }));
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`plansync exceptions list | head`) is not an error.
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", chain_once(&err));
            ExitCode::from(2)
        }
    }
}

/// A panic's message, redacted (see `plansync::secret::redact`).
fn panic_message(payload: &dyn std::any::Any) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    plansync::secret::redact(&text)
}

/// The error and its causes, `: `-joined as anyhow's `{:#}` prints them, but a cause whose
/// text its parent already shows is left out. Many error types print their source in their
/// own message (`CDC authentication failed: {0}` over a `#[from]` source); `{:#}` would then
/// say the same thing twice ("`abc` is not a number: `abc` is not a number").
fn chain_once(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut shown = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !shown.is_empty() && shown.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        shown = text;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panic_message_is_redacted() {
        let payload: Box<dyn std::any::Any> = Box::new(String::from(
            r#"bad answer {"tokenValue":"CANARYx"} at Bearer CANARYy"#,
        ));
        let m = super::panic_message(payload.as_ref());
        assert!(!m.contains("CANARY"), "{m}");
        assert!(m.starts_with("bad answer"), "{m}");
        let payload: Box<dyn std::any::Any> = Box::new(7_u8);
        assert_eq!(super::panic_message(payload.as_ref()), "(no message)");
    }
}
