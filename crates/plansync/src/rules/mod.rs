//! The rules: the language admins write (`compile`, over `plansync_toml`'s checked walk and
//! diagnostics), the fiscal
//! calendar (`calendar`), the validated types (`ruleset`), the pure decision engine
//! (`decide`), and the tools for rule authors (`cases`, `explain`).
//!
//! Invariant: nothing in this module does IO except `load`, which only reads rule files;
//! deciding is a pure function of its arguments.

pub mod calendar;
pub mod cases;
pub mod compile;
pub mod decide;
pub mod explain;
pub mod ruleset;

use std::path::{Path, PathBuf};

pub use decide::{Action, Context, Decision, FieldState, Observation, decide};
pub use plansync_toml::diagnostic::FileErrors;
pub use ruleset::{FieldRule, Pairing, RuleSet};

/// Why a rule set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Invalid(#[from] FileErrors),
    #[error("{}: no rule files (*.toml) here", path.display())]
    Empty { path: PathBuf },
    #[error("{} and {} both pair the CRM object {object}: one file per pairing", first.display(), second.display())]
    DuplicateObject {
        object: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// A rule file that could not even be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read rule file {}: {source}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl ReadError {
    pub fn new(path: &Path, source: std::io::Error) -> ReadError {
        ReadError {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Reads and compiles one rule file.
pub fn load_file(path: &Path) -> Result<Pairing, LoadError> {
    let bytes = std::fs::read(path).map_err(|e| ReadError::new(path, e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        ReadError::new(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is not UTF-8 text",
            ),
        )
    })?;
    Ok(compile::compile_file(path, &text)?)
}

/// The rule files named by `paths`: files as given, directories as their `*.toml` files in
/// name order.
pub fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| ReadError::new(path, e))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect();
            if found.is_empty() {
                return Err(LoadError::Empty { path: path.clone() });
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Loads every rule file under `paths` into one rule set, reporting every file's errors.
pub fn load(paths: &[PathBuf]) -> Result<RuleSet, Vec<LoadError>> {
    let files = rule_files(paths).map_err(|e| vec![e])?;
    collect(files.iter().map(|file| load_file(file)))
}

/// Compiles rule files already in memory (`path`, `text`), as [`load`] compiles files: the
/// demo's built-in rules, which must not depend on the directory it is started in.
pub fn load_texts(files: &[(PathBuf, String)]) -> Result<RuleSet, Vec<LoadError>> {
    collect(
        files
            .iter()
            .map(|(path, text)| Ok(compile::compile_file(path, text)?)),
    )
}

/// One rule set from compiled files, refusing two files for one object.
fn collect(
    compiled: impl Iterator<Item = Result<Pairing, LoadError>>,
) -> Result<RuleSet, Vec<LoadError>> {
    let mut errors = Vec::new();
    let mut set = RuleSet::default();
    for result in compiled {
        match result {
            Ok(pairing) => {
                if let Some(first) = set
                    .pairings
                    .iter()
                    .find(|p| p.crm_object == pairing.crm_object || p.name == pairing.name)
                {
                    errors.push(LoadError::DuplicateObject {
                        object: pairing.crm_object.clone(),
                        first: first.path.clone(),
                        second: pairing.path.clone(),
                    });
                } else {
                    set.pairings.push(pairing);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}
