//! The README's shell blocks as command lines, for the tests that hold the README to what
//! the binary does (`readme.rs`, `newcomer.rs`).

/// The command lines of the ```sh blocks in `text`: continuation lines joined, comments
/// dropped.
pub fn shell_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = line.trim() == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        let code = line.find(" #").map_or(line, |i| &line[..i]).trim();
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(code);
        let command = std::mem::take(&mut pending);
        if !command.trim().is_empty() {
            out.push(command.trim().to_string());
        }
    }
    out
}
