//! What the `plansync exceptions` commands print: exception lists, one exception with its
//! field's history, summary counts, and the outcome of a resolution, as a table for people or
//! JSON / CSV for tools. No argument parsing here (that is the CLI's job) beyond the time
//! arguments of the filters, whose meaning belongs with the output.
//!
//! Output formats are a contract with scripts: JSON keys and CSV headers are stable
//! snake_case, values are the canonical text the store keeps (`12.50`, `true`, `2026-11-01`;
//! null for no value), timestamps are RFC 3339 UTC.

mod columns;
mod csv_out;
mod list;
mod resolve;
mod rows;
mod show;
mod stats;
mod table;
mod time_arg;

use std::fmt;
use std::io;
use std::str::FromStr;

pub use columns::{ListColumn, ListColumns};
pub use list::{ListTable, list};
pub use resolve::resolve;
pub use show::show;
pub use stats::stats;
pub use table::{TableWidth, terminal_safe};
pub use time_arg::{TimeArgError, TimeBound, parse_time_arg};

use crate::store::StoreError;

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Aligned tables for a person at a terminal.
    Table,
    /// Pretty-printed JSON for tools.
    Json,
    /// CSV with a header row, for spreadsheets.
    Csv,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Table, Format::Json, Format::Csv];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown format `{s}` (one of: table, json, csv)"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the output failed (e.g. a closed pipe; the CLI treats that as success).
    #[error("cannot write the output: {0}")]
    Io(#[from] io::Error),
    #[error("cannot write JSON output: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write CSV output: {0}")]
    Csv(#[from] csv::Error),
}
