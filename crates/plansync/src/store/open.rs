//! Opening the store file: creating it with the right permissions, refusing anything that is
//! not a plansync database without touching it, setting the connection up, and migrating.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::schema::{APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};
use super::{Store, StoreError};

/// How long a statement waits for another connection's lock before giving up. Long enough to
/// ride out a checkpoint or a reviewer's resolution, short enough to surface a stuck process.
/// The engine raises it for its own connections ([`Store::set_busy_timeout`]).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Every SQLite file starts with these 16 bytes.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Room for the engine's statements and the review queries, so none is re-prepared.
const STATEMENT_CACHE: usize = 64;

impl Store {
    /// Opens the store at `path` for reading and writing, creating it (mode 0600) if it does
    /// not exist and migrating it to this build's schema.
    ///
    /// An existing file that is not a plansync database, or one written by a newer plansync,
    /// is refused before anything is written to it.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let created = create_or_check(&path)?;
        open_read_write(&path).inspect_err(|_| {
            if created {
                // Leave nothing behind for a store we created and could not set up; an
                // existing file is never removed.
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = fs::remove_file(PathBuf::from(p));
                }
            }
        })
    }

    /// Opens an existing store for queries only (the review CLI). Never creates or migrates
    /// the file; WAL lets it read while the sync writes.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { path });
            }
            Err(e) => {
                return Err(StoreError::NotReadable {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        if !check_header(&path, &mut file)? {
            return Err(not_plansync(&path, "an empty file"));
        }
        drop(file);
        make_private(&path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(&path, flags).map_err(|e| read_only_failure(&path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let identity = Identity::read(&conn).map_err(|e| read_only_failure(&path, e))?;
        identity.check(&path, true)?;
        // Belt and braces: even a bug in a query cannot write through this connection.
        conn.pragma_update(None, "query_only", true)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Store {
            conn,
            path,
            read_only: true,
            write_gate: None,
        })
    }
}

/// Creates the file with mode 0600 if it is missing (returns `true`), or checks that the
/// existing one can be written and looks like SQLite (returns `false`). Done by hand before
/// SQLite sees the path, because SQLite would create it with the umask's permissions.
fn create_or_check(path: &Path) -> Result<bool, StoreError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(StoreError::DirectoryMissing {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    let not_writable = |e: io::Error| StoreError::NotWritable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => {
            // The umask may have taken bits away; set exactly 0600. SQLite gives the WAL and
            // shared-memory files the same mode as the database file.
            file.set_permissions(Permissions::from_mode(0o600))
                .map_err(not_writable)?;
            return Ok(true);
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(not_writable(e)),
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(not_writable)?;
    check_header(path, &mut file)?;
    make_private(path)?;
    Ok(false)
}

/// The store holds both systems' business data: a file (or its `-wal`, `-shm`) that others
/// may read or write is set to 0600, or refused when that is not ours to do.
fn make_private(path: &Path) -> Result<(), StoreError> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        let Ok(meta) = fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            continue;
        }
        fs::set_permissions(&file, Permissions::from_mode(0o600)).map_err(|e| {
            StoreError::NotPrivate {
                path: file.clone(),
                mode,
                reason: e.to_string(),
            }
        })?;
        tracing::info!(target: "plansync::store", event = "store_made_private", path = %file.display(), was = %format!("{mode:o}"),
            "the store could be read by other users; it is now readable by its owner only");
    }
    Ok(())
}

/// Reads the file's first bytes: `Ok(false)` for an empty file, `Ok(true)` for one that starts
/// like an SQLite database, `NotPlansync` otherwise. Checked by hand so that SQLite is never
/// asked to open (and possibly journal against) a file that is plainly something else.
fn check_header(path: &Path, file: &mut File) -> Result<bool, StoreError> {
    let mut head = [0u8; 16];
    let mut len = 0;
    while len < head.len() {
        match file.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(StoreError::NotReadable {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        }
    }
    match len {
        0 => Ok(false),
        16 if &head == SQLITE_MAGIC => Ok(true),
        _ => Err(not_plansync(path, "not an SQLite file")),
    }
}

fn open_read_write(path: &Path) -> Result<Store, StoreError> {
    // No SQLITE_OPEN_CREATE: the file exists by now, and must not be re-created by SQLite
    // if something removed it in between.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn =
        Connection::open_with_flags(path, flags).map_err(|e| classify(path, e, false))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Identify the file before any statement that could write to it.
    let identity = Identity::read(&conn).map_err(|e| classify(path, e, false))?;
    identity.check(path, false)?;

    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| classify(path, e, false))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    // In WAL mode NORMAL loses no committed transaction on a process crash (only on power
    // loss), and spares an fsync per commit.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Foreign keys are enforced only after the migrations: a step that rebuilds a table others
    // refer to (v7: the outbox) drops it first, which SQLite would otherwise refuse or cascade.
    // `migrate` checks the references itself after such a step. (The bundled SQLite turns
    // them on by default, hence the explicit off.)
    conn.pragma_update(None, "foreign_keys", false)?;
    migrate(&mut conn)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(Store {
        conn,
        path: path.to_path_buf(),
        read_only: false,
        write_gate: None,
    })
}

/// Applies every migration newer than the file's `user_version`, each in its own immediate
/// transaction that re-reads the version under the write lock, so two processes opening a new
/// file at once cannot both apply the same step.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // A store with data (not one being created): its upgrade is worth a line in the log.
    let existing = conn.pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))? > 0;
    for migration in MIGRATIONS {
        let step = |cause| StoreError::Migration {
            version: migration.version,
            cause,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(step)?;
        let current: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(step)?;
        if current >= migration.version {
            continue;
        }
        if existing {
            // Upgrading a store with data: some steps rewrite a table (v5: the shadow), which
            // takes a while on a large file; say why the start is slow.
            tracing::info!(target: "plansync::store", event = "store_migrating", from = current, to = migration.version,
                "migrating the store's schema");
        }
        tx.execute_batch(migration.sql).map_err(step)?;
        // A rebuilt table must leave every reference to it whole.
        let broken: i64 = if !migration.rebuilds {
            0
        } else {
            tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
                row.get(0)
            })
            .map_err(step)?
        };
        if broken > 0 {
            return Err(step(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                Some(format!("{broken} rows refer to rows the step removed")),
            )));
        }
        if migration.version == 1 {
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(step)?;
        }
        tx.pragma_update(None, "user_version", migration.version)
            .map_err(step)?;
        tx.commit().map_err(step)?;
    }
    Ok(())
}

/// What the file says it is, read without writing anything.
struct Identity {
    application_id: i32,
    user_version: i64,
    schema_objects: i64,
}

impl Identity {
    fn read(conn: &Connection) -> rusqlite::Result<Identity> {
        Ok(Identity {
            application_id: conn.pragma_query_value(None, "application_id", |r| r.get(0))?,
            user_version: conn.pragma_query_value(None, "user_version", |r| r.get(0))?,
            schema_objects: conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?,
        })
    }

    fn check(&self, path: &Path, read_only: bool) -> Result<(), StoreError> {
        let found = self.user_version;
        if self.application_id == APPLICATION_ID {
            if found > SCHEMA_VERSION {
                return Err(StoreError::NewerSchema {
                    path: path.to_path_buf(),
                    found,
                    known: SCHEMA_VERSION,
                });
            }
            if read_only && found < SCHEMA_VERSION {
                return Err(StoreError::OlderSchema {
                    path: path.to_path_buf(),
                    found,
                    known: SCHEMA_VERSION,
                });
            }
            return Ok(());
        }
        if self.application_id != 0 {
            return Err(not_plansync(
                path,
                &format!(
                    "an SQLite database of another application, application_id {:#x}",
                    self.application_id
                ),
            ));
        }
        if self.schema_objects > 0 || found != 0 {
            return Err(not_plansync(
                path,
                "an SQLite database of another application: it has tables but no plansync mark",
            ));
        }
        if read_only {
            return Err(not_plansync(path, "an empty database"));
        }
        Ok(())
    }
}

fn not_plansync(path: &Path, reason: &str) -> StoreError {
    StoreError::NotPlansync {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// A read-only open that failed though the file itself could be read: in WAL mode even a
/// reader needs the `-shm` file beside the store (creating it if missing, opening it for
/// writing if not), so a directory or `-shm` this user cannot write to is the usual cause
/// and is named as such.
fn read_only_failure(path: &Path, e: rusqlite::Error) -> StoreError {
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    let shm = PathBuf::from(shm);
    let cannot_open = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::SystemIoFailure)
    );
    if !cannot_open {
        return classify(path, e, true);
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let fix = if shm.exists() {
        format!(
            "let this user write to {} (or run as the store's owner)",
            shm.display()
        )
    } else {
        format!("let this user write to {}", dir.display())
    };
    StoreError::NotReadable {
        path: path.to_path_buf(),
        reason: format!(
            "a reader of a store in WAL mode must open or create {} beside it, and could not ({e}); {fix}, or copy the store with its -wal file somewhere writable and review the copy",
            shm.display()
        ),
    }
}

/// Turns SQLite's answer at open time into the operator-facing error it stands for.
fn classify(path: &Path, e: rusqlite::Error, read_only: bool) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => not_plansync(path, "not an SQLite database"),
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) if read_only => {
            StoreError::NotReadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        }
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            StoreError::NotWritable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        }
        _ => StoreError::Sqlite(e),
    }
}
