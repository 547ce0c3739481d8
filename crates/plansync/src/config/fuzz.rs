//! The config parser as a fuzz target body: arbitrary text must give a config or a list of
//! problems whose spans lie inside the text, never a panic, and never touch the real
//! environment or file system.

use std::env::VarError;
use std::io;
use std::path::Path;

use plansync_toml::diagnostic;

use super::{Config, Sources};

/// No variable is set and no file can be read, except that variables and files named
/// `fuzz...` hold a fixed value, so the success path is reached too.
struct FuzzSources;

impl Sources for FuzzSources {
    fn env(&self, name: &str) -> Result<String, VarError> {
        if name.starts_with("FUZZ") {
            Ok("fuzz-secret".to_string())
        } else {
            Err(VarError::NotPresent)
        }
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        match path.file_name().and_then(|n| n.to_str()) {
            Some(n) if n.starts_with("fuzz") => Ok("fuzz-secret\n".to_string()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not in the fuzz sources",
            )),
        }
    }
}

#[doc(hidden)]
pub fn config_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Path::new("/fuzz/plansync.toml"), text, &FuzzSources) {
        Ok(config) => {
            let shown = format!("{config:?}");
            assert!(!shown.contains("fuzz-secret"), "a secret leaked into Debug");
            let _ = config.anaplan_client_config();
            let _ = config.crm_client_config();
        }
        Err(errors) => {
            assert!(!errors.problems.is_empty());
            for p in &errors.problems {
                assert!(
                    p.span.start <= p.span.end && p.span.end <= text.len(),
                    "{p:?}"
                );
            }
            let _ = diagnostic::render(&errors, false);
            let _ = errors.one_line_each();
        }
    }
}
