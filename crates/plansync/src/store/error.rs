//! The one error type of the store. Every message is a single line that says what went wrong
//! and what to do about it, because these reach an operator's terminal unchanged.

use std::path::PathBuf;

use crate::model::{ExceptionKind, ExceptionStatus, ValueError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot create the store {}: directory {} does not exist or is not a directory (create it, or choose another store path)",
        .path.display(),
        .dir.display()
    )]
    DirectoryMissing { path: PathBuf, dir: PathBuf },

    #[error(
        "cannot open the store {} for writing: {reason} (fix the permissions of the file and its directory, or choose another store path)",
        .path.display()
    )]
    NotWritable { path: PathBuf, reason: String },

    #[error(
        "cannot read the store {}: {reason} (check the file's permissions)",
        .path.display()
    )]
    NotReadable { path: PathBuf, reason: String },

    #[error(
        "the store {} does not exist (check the path, or run plansync once to create it)",
        .path.display()
    )]
    Missing { path: PathBuf },

    #[error(
        "{} is not a plansync database ({reason}); it was left unchanged: choose another store path",
        .path.display()
    )]
    NotPlansync { path: PathBuf, reason: String },

    #[error(
        "{} was created by a newer plansync (schema v{found}, this build knows v{known}): upgrade plansync",
        .path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },

    #[error(
        "{} has schema v{found}, older than this build's v{known}: open it once for writing (e.g. start the sync) to migrate it",
        .path.display()
    )]
    OlderSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },

    #[error(
        "cannot enable WAL mode on {} (SQLite answered `{mode}`): keep the store on a local disk",
        .path.display()
    )]
    NoWal { path: PathBuf, mode: String },

    // `cause` is in the message, so it is not also the source (see BadValue).
    #[error(
        "migrating the store to schema v{version} failed: {cause} (nothing of that step was kept; fix the cause and start again)"
    )]
    Migration {
        version: i64,
        cause: rusqlite::Error,
    },

    #[error("the store was opened read-only and this operation writes: open it with Store::open")]
    ReadOnly,

    #[error("no exception with id {id} (list them with `plansync exceptions list`)")]
    ExceptionNotFound { id: i64 },

    #[error(
        "a write to {field} is in flight (outbox {outbox}): resolve exception {id} again once it is acknowledged"
    )]
    WriteInFlight { id: i64, field: String, outbox: i64 },

    #[error("exception {id} is {status}, not open{detail}: only open exceptions can be resolved")]
    NotOpen {
        id: i64,
        status: ExceptionStatus,
        /// ` (resolved by … at …)` when known, so the operator sees who got there first.
        detail: String,
    },

    #[error("exception {id} ({kind}) has no field value to write: resolve it with --how dismiss")]
    NoField { id: i64, kind: ExceptionKind },

    // The problem is printed here and not exposed as the source: an error chain printed
    // with `{:#}` would say "`abc` is not a number" twice.
    #[error("{problem}: {field} holds {kind} values")]
    BadValue {
        raw: String,
        /// The value kind's tag, e.g. `number:2`.
        kind: String,
        /// `Object.Field`, e.g. `Opportunity.Amount`.
        field: String,
        problem: ValueError,
    },

    #[error("a resolution needs the name of who made it (pass --by, or set USER)")]
    MissingResolver,

    #[error(
        "the batch refers to {what} #{index} of another batch, or to one it does not hold: refer only to rows added to the same batch"
    )]
    BadReference { what: &'static str, index: usize },

    #[error(
        "the batch updates outbox row {id}, which does not exist: the engine's state is out of step with the store (restart the sync)"
    )]
    UnknownOutbox { id: i64 },

    #[error(
        "{table}.{column} holds `{value}`, which is not {expected}: the store was edited by hand or is damaged"
    )]
    Corrupt {
        table: &'static str,
        column: &'static str,
        value: String,
        expected: String,
    },

    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// A store call from the engine's async tasks did not complete (its thread panicked or
    /// the runtime is shutting down).
    #[error("internal: {0}")]
    Internal(String),
}
