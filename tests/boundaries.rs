//! Checks the module boundaries that ARCHITECTURE.md promises and that the compiler cannot:
//! the simulators and the clients share no code, and every source file says what it owns.

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

fn src(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(sub)
}

/// Lines of `dir`'s files that mention any of `forbidden` outside comments.
fn offending_lines(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let mut bad = Vec::new();
    for file in rust_files(&src(dir)) {
        let text = std::fs::read_to_string(&file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if forbidden.iter().any(|f| code.contains(f)) {
                bad.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    bad
}

#[test]
fn simulators_do_not_use_the_clients() {
    let bad = offending_lines(
        "sim",
        &[
            "crate::anaplan",
            "crate::crm",
            "plansync::anaplan",
            "plansync::crm",
        ],
    );
    assert!(
        bad.is_empty(),
        "simulator code uses client code:\n{}",
        bad.join("\n")
    );
}

#[test]
fn clients_do_not_use_the_simulators() {
    for dir in ["anaplan", "crm"] {
        let bad = offending_lines(dir, &["crate::sim", "plansync::sim"]);
        assert!(
            bad.is_empty(),
            "client code uses simulator code:\n{}",
            bad.join("\n")
        );
    }
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let missing: Vec<String> = rust_files(&src(""))
        .into_iter()
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
