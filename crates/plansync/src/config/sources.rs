//! Where secrets come from at load time: the process environment and files. A trait so
//! tests and the fuzz target can supply their own without touching the real environment.

use std::env::VarError;
use std::io;
use std::path::Path;

/// Lookups of `*_env` variables and reads of `*_file` files.
pub trait Sources {
    fn env(&self, name: &str) -> Result<String, VarError>;
    fn read(&self, path: &Path) -> io::Result<String>;
}

/// The process environment and the file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemSources;

impl Sources for SystemSources {
    fn env(&self, name: &str) -> Result<String, VarError> {
        std::env::var(name)
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
}
