//! The README cannot rot: every `plansync …` command in its shell blocks is parsed by the real
//! binary (with `--help` appended, so the subcommand, every flag and every value are checked
//! without needing a tenant), and every `cargo …` command in them is one that CI runs
//! (`.ci/run`). What the commands do is tested where each feature is (cli_*, engine_*,
//! cli_demo).

use std::path::Path;
use std::process::Command;

use crate::support::readme_text;

/// The shell blocks' command lines, continuation lines joined, comments dropped.
fn commands(readme: &str) -> Vec<String> {
    readme_text::shell_commands(readme)
}

/// Splits a command line like a shell would for these simple cases (double quotes only).
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in command.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
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

#[test]
fn every_readme_command_parses_or_runs_in_ci() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    let all = commands(&readme);
    assert!(all.len() > 15, "found only {all:?}");
    let mut checked = 0;
    for command in &all {
        let words = words(command);
        match words.first().map(String::as_str) {
            Some("plansync") => {
                // Placeholders stand for a value of the reader's: give one.
                let args: Vec<String> = words[1..]
                    .iter()
                    .filter(|w| !w.starts_with('['))
                    .map(|w| {
                        if w.starts_with('<') {
                            "1".to_string()
                        } else {
                            w.clone()
                        }
                    })
                    .collect();
                let out = Command::new(env!("CARGO_BIN_EXE_plansync"))
                    .args(&args)
                    .arg("--help")
                    .output()
                    .expect("run plansync");
                assert!(
                    out.status.success(),
                    "README command `{command}` does not parse:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                checked += 1;
            }
            Some("cargo") => {
                assert!(
                    ci.contains(command.as_str()),
                    "README command `{command}` is not run by .ci/run"
                );
                checked += 1;
            }
            Some("curl") | Some("SELECT") | Some("--") => {}
            _ => {}
        }
    }
    assert!(checked > 15, "{checked} commands checked");
}

#[test]
fn the_extractor_joins_lines_and_drops_comments() {
    let text = "```sh\nplansync a \\\n    --b c   # note\ncargo test # x\n```\n```toml\nplansync no\n```\n";
    assert_eq!(commands(text), ["plansync a --b c", "cargo test"]);
    assert_eq!(words(r#"x --note "a b" y"#), ["x", "--note", "a b", "y"]);
}
