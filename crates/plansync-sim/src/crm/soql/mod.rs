//! The SOQL subset the sync engine's poller uses: a field list, `FROM` one object, `WHERE` with
//! comparisons (`= != <> < <= > >= LIKE IN NOT IN`), `AND`/`OR`/`NOT` and parentheses, `ORDER BY`
//! one or more fields (`ASC`/`DESC`, `NULLS FIRST|LAST`), `LIMIT` and `OFFSET`.
//!
//! Errors carry Salesforce's message layout (the query line, a caret, `ERROR at Row:R:Column:C`
//! and the reason) and its error codes: `MALFORMED_QUERY`, `INVALID_FIELD`, `INVALID_TYPE`.
//!
//! Rooms: `lex.rs` (tokens), `parse.rs` (the query's syntax tree), `bind.rs` (names and values
//! checked against the org), `run.rs` (filtering and ordering the records); the error layout
//! is here, as every room reports with it.

mod bind;
mod lex;
mod parse;
mod run;

pub use bind::prepare;

#[derive(Debug, Clone, PartialEq)]
pub struct SoqlError {
    pub code: &'static str,
    pub message: String,
}

/// The query text, for errors that point into it.
struct Ctx<'a> {
    text: &'a str,
}

impl Ctx<'_> {
    fn error(&self, code: &'static str, pos: usize, reason: &str) -> SoqlError {
        // Salesforce echoes the offending line with a caret under the column (1-based).
        let before = self.text.get(..pos).unwrap_or(self.text);
        let row = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before.len() - line_start + 1;
        let line = self.text[line_start..].lines().next().unwrap_or("");
        SoqlError {
            code,
            message: format!(
                "\n{line}\n{}^\nERROR at Row:{row}:Column:{col}\n{reason}",
                " ".repeat(col - 1)
            ),
        }
    }
    fn malformed(&self, pos: usize, reason: &str) -> SoqlError {
        self.error("MALFORMED_QUERY", pos, reason)
    }
}
