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
        "the store {} can be read by other users (mode {mode:o}) and plansync could not make it private: {reason} (as its owner, run `chmod 600` on it and its -wal and -shm files)",
        .path.display()
    )]
    NotPrivate {
        path: PathBuf,
        mode: u32,
        reason: String,
    },

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
        "migrating the store to schema v{version} failed: {} (nothing of that step was kept; fix the cause and start again)", sqlite_message(.cause)
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

    /// Said as what happened and what to do (a full disk, a damaged file, a lock held by
    /// another process), SQLite's own words after.
    #[error("{}", sqlite_message(.0))]
    Sqlite(#[from] rusqlite::Error),

    /// A store call from the engine's async tasks did not complete (its thread panicked or
    /// the runtime is shutting down).
    #[error("internal: {0}")]
    Internal(String),
}

/// What an SQLite failure means for the person running plansync.
fn sqlite_message(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    use rusqlite::ffi;
    let Some(code) = e.sqlite_error_code() else {
        return format!("SQLite: {e}");
    };
    let extended = match e {
        rusqlite::Error::SqliteFailure(f, _) => f.extended_code,
        _ => 0,
    };
    let advice = match code {
        ErrorCode::DiskFull => {
            "the disk holding the store is full: free space or move the store, then start again (the step that failed was not kept)"
        }
        ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
            "the store file is damaged: stop plansync, keep a copy of the file, and restore it from a backup (or rebuild it with `sqlite3 FILE .recover`)"
        }
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
            "the store is locked by another process (another plansync on the same store?): stop it, or try again when it is done"
        }
        ErrorCode::ReadOnly => {
            "the store cannot be written: check the permissions of the file and its directory, and that the disk is not mounted read-only"
        }
        ErrorCode::SystemIoFailure
            if matches!(
                extended,
                ffi::SQLITE_IOERR_SHMOPEN
                    | ffi::SQLITE_IOERR_SHMSIZE
                    | ffi::SQLITE_IOERR_SHMMAP
                    | ffi::SQLITE_IOERR_SHMLOCK
            ) =>
        {
            "cannot use the store's shared-memory file (the store's name with -shm): its disk may be full, or its directory not writable"
        }
        ErrorCode::SystemIoFailure => {
            "a disk I/O error on the store: the disk may be full or failing, or the file was moved or deleted while plansync ran"
        }
        ErrorCode::CannotOpen => {
            "cannot open the store or its journal: check that its directory exists and can be written"
        }
        _ => return format!("SQLite: {e}"),
    };
    format!("{advice} (SQLite: {e}; code {extended})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_failures_say_what_to_do() {
        let full = rusqlite::Connection::open_in_memory().unwrap();
        full.execute_batch("PRAGMA max_page_count = 2; CREATE TABLE t (x)")
            .unwrap();
        let e = full
            .execute_batch("INSERT INTO t SELECT zeroblob(100000)")
            .unwrap_err();
        let shown = StoreError::from(e).to_string();
        assert!(
            shown.starts_with("the disk holding the store is full"),
            "{shown}"
        );

        let io = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_SHMSIZE),
            Some("disk I/O error".into()),
        );
        let shown = StoreError::from(io).to_string();
        assert!(
            shown.contains("shared-memory file") && shown.contains("4874"),
            "{shown}"
        );
    }
}
