//! Checks the boundaries ARCHITECTURE.md promises: the crates' manifests declare none of the
//! dependencies that would open a wall (the compiler keeps the rest), and every source file
//! says what it owns.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The dependencies a member's manifest declares (normal, dev and build).
fn dependencies(member: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(member)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let manifest: toml::Table = toml::from_str(&text).expect("a TOML manifest");
    ["dependencies", "dev-dependencies", "build-dependencies"]
        .iter()
        .filter_map(|section| manifest.get(*section).and_then(|d| d.as_table()))
        .flat_map(|deps| deps.keys().cloned())
        .collect()
}

/// The walls between the crates are kept by the compiler: a crate cannot use what its
/// manifest does not declare. These are the declarations that would open them.
#[test]
fn the_manifests_keep_the_walls() {
    let library = dependencies("crates/plansync");
    for forbidden in ["plansync-sim", "plansync-cli", "axum", "clap"] {
        assert!(
            !library.iter().any(|d| d == forbidden),
            "the library must not depend on {forbidden}: {library:?}"
        );
    }
    let sim = dependencies("crates/plansync-sim");
    for forbidden in ["plansync", "plansync-toml", "plansync-cli", "reqwest"] {
        assert!(
            !sim.iter().any(|d| d == forbidden),
            "the simulators must not depend on {forbidden}: {sim:?}"
        );
    }
    let toml_walk = dependencies("crates/plansync-toml");
    assert!(
        !toml_walk.iter().any(|d| d.starts_with("plansync")),
        "plansync-toml stands alone: {toml_walk:?}"
    );
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let missing: Vec<String> = [
        "src",
        "crates/plansync/src",
        "crates/plansync-sim/src",
        "crates/plansync-toml/src",
    ]
    .iter()
    .flat_map(|dir| rust_files(&root.join(dir)))
    .filter(|f| {
        let text = std::fs::read_to_string(f).expect("read source");
        !text.trim_start().starts_with("//!")
    })
    .map(|f| f.display().to_string())
    .collect();
    assert!(
        missing.is_empty(),
        "files without a //! doc:\n{}",
        missing.join("\n")
    );
}

/// One log dialect: every `tracing` event in the code carries an `event = "…"` name, the field
/// operators filter and alert on.
#[test]
fn every_log_event_is_named() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut unnamed = Vec::new();
    for dir in ["src", "crates/plansync/src", "crates/plansync-sim/src"] {
        for file in rust_files(&root.join(dir)) {
            let text = std::fs::read_to_string(&file).expect("read source");
            // Macros imported bare (`use tracing::debug;`) would escape the check below.
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("use tracing::") {
                    unnamed.push(format!(
                        "{}:{}: call tracing's macros by path",
                        file.display(),
                        n + 1
                    ));
                }
            }
            for level in ["trace", "debug", "info", "warn", "error"] {
                let call = format!("tracing::{level}!(");
                for (at, _) in text.match_indices(&call) {
                    let args = &text[at + call.len()..];
                    // The arguments up to the call's closing parenthesis.
                    let mut depth = 1;
                    let end = args
                        .char_indices()
                        .find(|&(_, c)| {
                            match c {
                                '(' => depth += 1,
                                ')' => depth -= 1,
                                _ => {}
                            }
                            depth == 0
                        })
                        .map_or(args.len(), |(i, _)| i);
                    if !args[..end].contains("event =") {
                        let line = text[..at].matches('\n').count() + 1;
                        unnamed.push(format!("{}:{line}", file.display()));
                    }
                }
            }
        }
    }
    assert!(
        unnamed.is_empty(),
        "log events without `event =`:\n{}",
        unnamed.join("\n")
    );
}
