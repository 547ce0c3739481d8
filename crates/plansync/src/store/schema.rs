//! The SQLite schema: tables, indexes and review views, as an ordered list of migrations.
//!
//! Conventions an admin querying the file with `sqlite3` can rely on:
//!
//! - **Timestamps** are RFC 3339 UTC text with exactly six fractional digits and a `Z`
//!   (`2026-11-01T09:30:00.000000Z`), so they sort and compare correctly as plain text and
//!   `substr(x, 1, 10)` is the UTC day. The exception is `shadow` (v5): six rows per record
//!   and five times per row, stored as integer microseconds since 1970 UTC; the view
//!   `shadow_readable` shows them as the text above.
//! - **Values** are canonical text (`Value::to_text`: numbers at their field's scale, `true` /
//!   `false`, `YYYY-MM-DD`), SQL `NULL` for a null value. Beside every value column sits a
//!   `value_kind` tag (`text`, `number:2`, `boolean`, `date`, `picklist`) so the value can be
//!   parsed back without the rule files.
//! - **Enumerations** are lowercase snake_case text: sides `crm` / `anaplan`; sources
//!   `stream` / `poll` / `reconcile` / `resolution` / `write` (our acknowledged write);
//!   exception kinds and statuses as in
//!   `ExceptionKind` and `ExceptionStatus`.
//!
//! The file is marked with `PRAGMA application_id = 0x706C7379` ("plsy") and its schema version
//! is `PRAGMA user_version`. A shipped migration is never edited: a change to the schema is a
//! new entry at the end of [`MIGRATIONS`].
//!
//! # Tables
//!
//! ## `record_map`: which Anaplan list item stands for which CRM record
//! - `pairing`: the rule file's stem (e.g. `opportunity`) the record is synced under.
//! - `crm_id`: the 18-character CRM record id.
//! - `anaplan_code`: the Anaplan list item code (plansync uses the CRM id).
//! - `anaplan_item_id`: Anaplan's own item id once the item exists; NULL before.
//! - `state`: `active`, or `deleted` once the CRM record was deleted.
//! - `created_at`, `updated_at`: when the row was first written and last changed.
//!
//! ## `shadow`: the per-field sync state (see `decisions.md`)
//! One row per (`pairing`, `crm_id`, `field`); `field` is the CRM field API name.
//! - `value_kind`: the kind tag of every value in the row.
//! - `base_value`, `base_at`, `base_source`: the last value both sides were known to agree
//!   on, when that became true, and the source (`stream`, `poll`, `reconcile`, `resolution`)
//!   of the change that led to it. `base_at` NULL means no agreed value is known yet (then
//!   `base_value` is NULL too); `base_at` set with `base_value` NULL means both sides agreed
//!   on "no value".
//! - `seen_crm_value`, `seen_crm_at`, `seen_crm_source`: the last value observed in the CRM,
//!   its commit time, and the path it came through. Same NULL convention as `base_*`.
//! - `seen_anaplan_value`, `seen_anaplan_at`, `seen_anaplan_source`: the same for Anaplan;
//!   the time is that of the poll that saw it (Anaplan cells carry no timestamp).
//! - `in_flight_outbox_id`: the `outbox` row of the one write in flight for this field, or
//!   NULL. At most one per field: this is the "one writer per field" lock.
//! - `held_exception_id`: the open `conflict` exception holding this field, or NULL. Cleared
//!   when that exception is resolved; never set to an exception that is no longer open.
//! - `last_ack_target`, `last_ack_value`, `last_ack_at`, `last_ack_replaced`: our last
//!   acknowledged write to this field: the side, the value, when it was committed there, and
//!   the value it replaced (NULL target: none yet). Used to notice a person's edit that our
//!   write overwrote.
//! - `updated_at`: when the row last changed.
//! - Every `*_at` column of this table is an INTEGER of microseconds since 1970 UTC (v5).
//!
//! ## `outbox`: writes plansync intends to make
//! - `id`: increasing integer; the order writes were decided in.
//! - `pairing`, `crm_id`, `field`: the field to write (CRM field API name).
//! - `target`: the side to write to, `crm` or `anaplan`.
//! - `value`, `value_kind`: the value to write.
//! - `reason`: `decision` (a change propagated by the rules), `revert` (an owner's value pushed
//!   back over a non-owner's edit) or `resolution` (a person resolved an exception).
//! - `exception_id`: the exception that caused it (a revert's violation, a resolution), or NULL.
//! - `state`: `pending` (not sent), `in_flight` (sent, no answer yet), `done` (acknowledged),
//!   `failed` (refused for good; its `write_failed` exception says why), `held` (v7: not
//!   written because the target had changed since it was read; deciding that newer value
//!   held the field for review, see `result_exception_id`), `superseded` (v7: not written
//!   for the same reason; deciding the newer value needed no person: it converged, or a
//!   newer write took its place).
//! - `attempts`: how many times the remote answered it with a failure or success (from v8, a
//!   call that found the remote unreachable is not counted: it says nothing about this
//!   write); `last_error`: the last remote error, or NULL.
//! - `created_at`, `updated_at`.
//! - `replaced_value` (v2): what the target side showed when the write was decided (the value
//!   it deliberately replaces); NULL for none. Kept so that, after the acknowledgement, an
//!   edit our write overwrote can be told from the value we meant to replace.
//! - `result_exception_id` (v7): the exception the write ended in: a `failed` write's
//!   `write_failed`, a `held` write's conflict (or other exception); NULL otherwise, and for
//!   rows stored before v7.
//! - `not_before` (v8): a `pending` write answered "retry" waits on its own backoff until
//!   then; NULL: send at once. After the configured attempts or age it ends `failed` with a
//!   `write_failed` exception.
//!
//! ## `first_run_anaplan` (v4): the first run's Anaplan values, waiting for the CRM side
//! Empty except during a first run (or after one that stopped halfway, until the next start).
//! - `pairing`, `crm_id`: the record (the item's code is the CRM id).
//! - `seen_at`: the time of the poll that read the item.
//! - `fields`: JSON array of `[field, value_kind, value]` (canonical text, `null` for none).
//!
//! ## `checkpoints`: how far each source has been durably consumed
//! - `source`: the source's name (a CDC channel, a poller), primary key.
//! - `position`: JSON of `model::Position`, e.g. `{"kind":"replay","channel":…,"replay_id":…}`.
//! - `updated_at`.
//! - A source split over shards stores one row per shard, `<source>#<shard>`; it resumes
//!   from the oldest of them.
//!
//! ## `engine_state` (v6): what the engine remembers between runs
//! - `name`, primary key; `value` (text); `updated_at`. Names in use:
//!   - `first_run.completed_at`: when the first reconciliation was committed complete (both
//!     sides read in full and every value decided). Until it is set, every start runs the
//!     first run again; nothing else (a checkpoint, a metric) means "reconciled".
//!   - `first_run.phase`: what a first run in progress is doing or waiting for, in words.
//!   - `poll.last_run:<source>`: when that poller last completed a run (RFC 3339); the next
//!     run is due one interval after it, across restarts.
//!
//! ## `anaplan_flags` (v6): the boolean line items last seen set, per item
//! - `pairing`, `crm_id`, `flags` (JSON object of line item → true/false), `updated_at`.
//! - Only items with a flag set have a row: `anaplan_flag` conditions read an absent row as
//!   every flag false. Loaded by the shards at start, so a decision after a restart sees the
//!   flags as last polled.
//!
//! ## `crm_context` (v6): the `extra_crm_fields` of each record, as last seen
//! - `pairing`, `crm_id`; `at`: the commit time of the change that last set them;
//!   `fields`: JSON object of field → text (or null).
//! - Read by `when.record` conditions: a change event carries only the fields it changed, so
//!   a condition on a field the pairing does not sync needs the value last seen, also after a
//!   restart.
//!
//! ## `metrics` (v2): the running engine's counters, for `plansync status`
//! - `name`: e.g. `anaplan.calls`, `anaplan.rate_limited`, `crm.calls`; primary key.
//! - `value`: the counter's value (cumulative over the engine's life unless the name says).
//! - `updated_at`: when the engine last stored it.
//!
//! ## `exceptions`: every value plansync did not propagate, and why
//! - `id`: increasing integer, the handle used by `plansync exceptions show/resolve`.
//! - `kind`: `conflict`, `ownership_violation`, `validation`, `write_failed`, `gap`,
//!   `unmapped`, `lifecycle`.
//! - `status`: `open` (waiting for a person), `resolved` (a person decided),
//!   `auto_resolved` (the rules decided on the spot; kept as the audit trail), `converged`
//!   (the two sides came to agree while it was open).
//! - `pairing`: the rule file's stem; `object`: the CRM object name (e.g. `Opportunity`).
//! - `crm_id`: the record, NULL when the exception is not about one record (e.g. a `gap`).
//! - `field`: the CRM field API name, NULL when not about one field (`gap`, `lifecycle`).
//! - `value_kind`: kind tag of the three values, NULL when `field` is NULL.
//! - `crm_value`, `anaplan_value`, `base_value`: the value in each system and the last agreed
//!   value when the exception was raised (kept current while it is open).
//! - `rule_id`, `rule_hash`: the rule that decided and the SHA-256 of its rule file.
//! - `message`: why, in words.
//! - `created_at`, `updated_at`.
//! - `resolved_at`: when it stopped being open (the resolution, the convergence, or the
//!   creation time of an `auto_resolved` one); NULL while open.
//! - `resolved_by`: who resolved it (a person's name), NULL otherwise.
//! - `resolution`: `take_crm`, `take_anaplan`, `set_value` or `dismiss`, NULL unless a person
//!   resolved it; `resolution_value`: the value chosen (NULL for `dismiss`).
//! - `note`: the resolver's note.
//!
//! ## `audit`: every decision the engine made about an observed value
//! - `id`, `at` (when the observed change was committed or polled).
//! - `pairing`, `crm_id`, `field`: the field.
//! - `side`: the side the value was observed on; `source`: the path it came through.
//! - `value`, `value_kind`: the observed value.
//! - `decision`: what the engine did, in the engine's vocabulary (e.g. `write`, `echo`,
//!   `no_change`, `held`, `rejected`).
//! - `rule_id`, `rule_hash`: the rule that decided (NULL when no rule was needed, e.g. echoes).
//! - `exception_id`: the exception the decision raised, or NULL.
//!
//! # Views (for review with plain SQL)
//!
//! - `open_exceptions_by_kind(object, field, kind, count, oldest)`: open exceptions grouped by
//!   object, field and kind, with the creation time of the oldest in each group.
//! - `oldest_open_exceptions(id, kind, object, pairing, crm_id, field, crm_value,
//!   anaplan_value, base_value, message, created_at, age_days)`: open exceptions, oldest
//!   first; `age_days` is fractional days since creation, as of the query.
//! - `exceptions_per_day(day, kind, opened, resolved)`: per UTC day and kind, how many
//!   exceptions were raised and how many stopped being open (`resolved_at` on that day,
//!   whatever the final status).
//! - `shadow_readable` (v5): every column of `shadow`, its times as RFC 3339 text.

/// Marks the file as a plansync store (`PRAGMA application_id`): "plsy" in ASCII.
pub const APPLICATION_ID: i32 = 0x706C_7379;

/// One step of the schema's history. Applied in its own transaction, together with the
/// `user_version` bump that records it.
pub(crate) struct Migration {
    pub version: i64,
    pub sql: &'static str,
    /// The step drops and rebuilds a table other rows refer to: the references are checked
    /// after it (a whole-file scan, so only for such steps).
    pub rebuilds: bool,
}

/// Every migration, oldest first; `version` counts up from 1 without gaps.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: V1_INITIAL,
        rebuilds: false,
    },
    Migration {
        version: 2,
        sql: V2_ENGINE,
        rebuilds: false,
    },
    Migration {
        version: 3,
        sql: V3_OPEN_OUTBOX,
        rebuilds: false,
    },
    Migration {
        version: 4,
        sql: V4_FIRST_RUN_STAGING,
        rebuilds: false,
    },
    Migration {
        version: 5,
        sql: V5_SHADOW_TIMES,
        rebuilds: false,
    },
    Migration {
        version: 6,
        sql: V6_ENGINE_STATE,
        rebuilds: false,
    },
    Migration {
        version: 7,
        sql: V7_OUTBOX_OUTCOMES,
        rebuilds: true,
    },
    Migration {
        version: 8,
        sql: V8_OUTBOX_BACKOFF,
        rebuilds: false,
    },
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The v5 conversion of one RFC 3339 text time to microseconds. The fixed-width text every
/// earlier version wrote converts exactly; another RFC 3339 shape (a hand edit: fewer digits,
/// an offset) at millisecond precision; anything else is kept as a blob, which no integer
/// affinity can turn into a plausible time, and reading it reports the row as corrupt.
macro_rules! v5_micros {
    ($col:literal) => {
        concat!(
            "CASE WHEN ",
            $col,
            " GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]",
            ".[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(",
            $col,
            ", 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(",
            $col,
            ", 1, 19)) AS INTEGER) * 1000000 + CAST(substr(",
            $col,
            ", 21, 6) AS INTEGER) WHEN ",
            $col,
            " GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*' AND julianday(",
            $col,
            ") IS NOT NULL THEN CAST(round((julianday(",
            $col,
            ") - 2440587.5) * 86400000) AS INTEGER) * 1000 ELSE CAST(",
            $col,
            " AS BLOB) END"
        )
    };
}

/// A time stored in microseconds, as the RFC 3339 text the other tables hold; a cell that is
/// not an integer (damaged) is shown as it is.
macro_rules! v5_text {
    ($col:literal) => {
        concat!(
            "CASE WHEN typeof(",
            $col,
            ") = 'integer' THEN strftime('%Y-%m-%dT%H:%M:%S', ",
            $col,
            " / 1000000, 'unixepoch') || printf('.%06dZ', ",
            $col,
            " % 1000000) ELSE ",
            $col,
            " END"
        )
    };
}

/// What the engine must remember across restarts to decide as it would have without one:
/// whether the first run completed (not merely started: any checkpoint used to count), when
/// each poller last completed a run, the Anaplan flags last seen per item, and the CRM
/// fields read only for `when.record` conditions. A store from
/// before v6 that holds checkpoints and no staged first-run values had started engines
/// that took it for reconciled; it keeps that meaning.
const V6_ENGINE_STATE: &str = r#"
CREATE TABLE engine_state (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE anaplan_flags (
    pairing    TEXT NOT NULL,
    crm_id     TEXT NOT NULL,
    flags      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (pairing, crm_id)
);
CREATE TABLE crm_context (
    pairing    TEXT NOT NULL,
    crm_id     TEXT NOT NULL,
    at         TEXT NOT NULL,
    fields     TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (pairing, crm_id)
);
INSERT INTO engine_state (name, value, updated_at)
    SELECT 'first_run.completed_at', max(updated_at), max(updated_at) FROM checkpoints
    WHERE NOT EXISTS (SELECT 1 FROM first_run_anaplan)
    HAVING count(*) > 0;
"#;

/// A write that was not made because the target had moved on was stored as `failed`, with no
/// exception, so `plansync status` suggested lost writes: the new states say what became of
/// it, and `result_exception_id` links the exception it ended in. SQLite cannot change a
/// CHECK constraint in place, so the table is rebuilt (foreign keys are off while migrations
/// run; see `open.rs`). Old not-written rows become `superseded`: which exception followed
/// them was not recorded.
const V7_OUTBOX_OUTCOMES: &str = r#"
CREATE TABLE outbox_v7 (
    id                  INTEGER PRIMARY KEY,
    pairing             TEXT NOT NULL,
    crm_id              TEXT NOT NULL,
    field               TEXT NOT NULL,  -- CRM field API name
    target              TEXT NOT NULL CHECK (target IN ('crm', 'anaplan')),
    value               TEXT,
    value_kind          TEXT NOT NULL,
    reason              TEXT NOT NULL,  -- decision, revert, resolution
    exception_id        INTEGER REFERENCES exceptions (id),  -- what caused the write
    state               TEXT NOT NULL CHECK (state IN
                            ('pending', 'in_flight', 'done', 'failed', 'held', 'superseded')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    last_error          TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    replaced_value      TEXT,           -- what the target showed when decided
    result_exception_id INTEGER REFERENCES exceptions (id)   -- what the write ended in
);
INSERT INTO outbox_v7 (id, pairing, crm_id, field, target, value, value_kind, reason,
    exception_id, state, attempts, last_error, created_at, updated_at, replaced_value)
SELECT id, pairing, crm_id, field, target, value, value_kind, reason, exception_id,
    CASE WHEN state = 'failed' AND last_error LIKE 'not written: %' THEN 'superseded'
         ELSE state END,
    attempts, last_error, created_at, updated_at, replaced_value
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v7 RENAME TO outbox;
CREATE INDEX outbox_by_target_state ON outbox (target, state, id);
CREATE INDEX outbox_by_exception ON outbox (exception_id) WHERE exception_id IS NOT NULL;
CREATE INDEX outbox_by_result ON outbox (result_exception_id)
    WHERE result_exception_id IS NOT NULL;
CREATE INDEX outbox_open_by_field ON outbox (pairing, crm_id, field)
    WHERE state IN ('pending', 'in_flight');
CREATE INDEX outbox_pending ON outbox (id) WHERE state = 'pending';
"#;

/// A write answered "retry" was sent again with every batch, and its whole side backed off
/// with it: a write that could never land stalled the side forever. Each write now waits on
/// its own backoff; `not_before` is when it may be sent again.
const V8_OUTBOX_BACKOFF: &str = r#"
ALTER TABLE outbox ADD COLUMN not_before TEXT;
"#;

/// The shadow holds six rows per record and five times per row: as RFC 3339 text those were
/// half of a row's bytes, and writing the rows was most of a 1M-record first run. The times
/// become integer microseconds (`codec::micros`); `shadow_readable` shows them as text.
/// It rewrites the whole table in one transaction (see `v5_micros!` for cells in other
/// shapes): on a 1M-record file that takes about the table's size again on disk, once.
const V5_SHADOW_TIMES: &str = concat!(
    r#"
CREATE TABLE shadow_v5 (
    pairing             TEXT NOT NULL,
    crm_id              TEXT NOT NULL,
    field               TEXT NOT NULL,  -- CRM field API name
    value_kind          TEXT NOT NULL,
    base_value          TEXT,           -- last agreed value
    base_at             INTEGER,        -- µs since 1970 UTC; NULL: no agreed value known yet
    base_source         TEXT,
    seen_crm_value      TEXT,           -- last value seen in the CRM
    seen_crm_at         INTEGER,
    seen_crm_source     TEXT,
    seen_anaplan_value  TEXT,           -- last value seen in Anaplan
    seen_anaplan_at     INTEGER,
    seen_anaplan_source TEXT,
    in_flight_outbox_id INTEGER REFERENCES outbox (id),      -- the one write in flight
    held_exception_id   INTEGER REFERENCES exceptions (id),  -- the open conflict holding it
    last_ack_target     TEXT,           -- our last acknowledged write: side,
    last_ack_value      TEXT,           --   value,
    last_ack_at         INTEGER,        --   commit time on that side,
    last_ack_replaced   TEXT,           --   and the value it replaced there
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (pairing, crm_id, field)
) WITHOUT ROWID;
INSERT INTO shadow_v5
SELECT pairing, crm_id, field, value_kind,
       base_value, "#,
    v5_micros!("base_at"),
    r#", base_source,
       seen_crm_value, "#,
    v5_micros!("seen_crm_at"),
    r#", seen_crm_source,
       seen_anaplan_value, "#,
    v5_micros!("seen_anaplan_at"),
    r#", seen_anaplan_source,
       in_flight_outbox_id, held_exception_id,
       last_ack_target, last_ack_value, "#,
    v5_micros!("last_ack_at"),
    r#", last_ack_replaced,
       "#,
    v5_micros!("updated_at"),
    r#"
FROM shadow;
DROP TABLE shadow;
ALTER TABLE shadow_v5 RENAME TO shadow;
CREATE INDEX shadow_in_flight ON shadow (in_flight_outbox_id) WHERE in_flight_outbox_id IS NOT NULL;
CREATE INDEX shadow_held ON shadow (held_exception_id) WHERE held_exception_id IS NOT NULL;

CREATE VIEW shadow_readable AS
SELECT pairing, crm_id, field, value_kind,
       base_value, "#,
    v5_text!("base_at"),
    r#" AS base_at, base_source,
       seen_crm_value, "#,
    v5_text!("seen_crm_at"),
    r#" AS seen_crm_at, seen_crm_source,
       seen_anaplan_value, "#,
    v5_text!("seen_anaplan_at"),
    r#" AS seen_anaplan_at, seen_anaplan_source,
       in_flight_outbox_id, held_exception_id,
       last_ack_target, last_ack_value, "#,
    v5_text!("last_ack_at"),
    r#" AS last_ack_at, last_ack_replaced,
       "#,
    v5_text!("updated_at"),
    r#" AS updated_at
FROM shadow;
"#
);

/// The first run's Anaplan values, one row per item, until their CRM record is decided (see
/// `staging.rs`): a 1M-record first run wrote each record's six shadow rows twice.
const V4_FIRST_RUN_STAGING: &str = r#"
CREATE TABLE first_run_anaplan (
    pairing TEXT NOT NULL,
    crm_id  TEXT NOT NULL,  -- the item's code
    seen_at TEXT NOT NULL,  -- the first run's poll
    fields  TEXT NOT NULL,  -- JSON: [[field, value_kind, value or null], ...]
    PRIMARY KEY (pairing, crm_id)
) WITHOUT ROWID;
"#;

/// The running engine asks about open writes (per field, and the unclaimed ones) many times a
/// second, while `done` rows pile up for the audit trail: partial indexes keep those questions
/// proportional to the open writes, not to the outbox's history (a quarter-end burst of 100k
/// writes made them quadratic).
const V3_OPEN_OUTBOX: &str = r#"
CREATE INDEX outbox_open_by_field ON outbox (pairing, crm_id, field)
    WHERE state IN ('pending', 'in_flight');
CREATE INDEX outbox_pending ON outbox (id) WHERE state = 'pending';
"#;

/// What the running engine needs beyond the first schema: the value a queued write replaces
/// (so a later edit can be told from the value we deliberately overwrote, after a restart
/// too) and the engine's counters for `plansync status`.
const V2_ENGINE: &str = r#"
ALTER TABLE outbox ADD COLUMN replaced_value TEXT;  -- what the target showed when decided

CREATE TABLE metrics (
    name       TEXT PRIMARY KEY,  -- e.g. anaplan.calls, crm.calls, anaplan.rate_limited
    value      INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
"#;

/// The initial schema. Column meanings are documented at the top of this module; the short
/// SQL comments are kept because `sqlite3`'s `.schema` shows them to an admin.
const V1_INITIAL: &str = r#"
CREATE TABLE record_map (
    pairing         TEXT NOT NULL,  -- rule file stem
    crm_id          TEXT NOT NULL,  -- CRM record id
    anaplan_code    TEXT NOT NULL,  -- Anaplan list item code
    anaplan_item_id TEXT,           -- Anaplan item id, NULL until known
    state           TEXT NOT NULL CHECK (state IN ('active', 'deleted')),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (pairing, crm_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX record_map_by_code ON record_map (pairing, anaplan_code);

CREATE TABLE exceptions (
    id               INTEGER PRIMARY KEY,
    kind             TEXT NOT NULL,  -- conflict, ownership_violation, validation, ...
    status           TEXT NOT NULL,  -- open, resolved, auto_resolved, converged
    pairing          TEXT NOT NULL,
    object           TEXT NOT NULL,  -- CRM object name
    crm_id           TEXT,           -- NULL when not about one record
    field            TEXT,           -- NULL when not about one field
    value_kind       TEXT,           -- kind tag of the three values
    crm_value        TEXT,
    anaplan_value    TEXT,
    base_value       TEXT,
    rule_id          TEXT,
    rule_hash        TEXT,           -- SHA-256 of the rule file
    message          TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    resolved_at      TEXT,           -- when it stopped being open
    resolved_by      TEXT,
    resolution       TEXT,           -- take_crm, take_anaplan, set_value, dismiss
    resolution_value TEXT,
    note             TEXT
);
CREATE INDEX exceptions_by_status_kind ON exceptions (status, kind);
CREATE INDEX exceptions_by_object_field ON exceptions (object, field);
CREATE INDEX exceptions_by_record_field ON exceptions (crm_id, field, pairing);
CREATE INDEX exceptions_by_created ON exceptions (created_at);

CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY,
    pairing      TEXT NOT NULL,
    crm_id       TEXT NOT NULL,
    field        TEXT NOT NULL,  -- CRM field API name
    target       TEXT NOT NULL CHECK (target IN ('crm', 'anaplan')),
    value        TEXT,
    value_kind   TEXT NOT NULL,
    reason       TEXT NOT NULL,  -- decision, revert, resolution
    exception_id INTEGER REFERENCES exceptions (id),
    state        TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'done', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
-- The sinks read the pending writes of one side in order.
CREATE INDEX outbox_by_target_state ON outbox (target, state, id);
CREATE INDEX outbox_by_exception ON outbox (exception_id) WHERE exception_id IS NOT NULL;

CREATE TABLE shadow (
    pairing             TEXT NOT NULL,
    crm_id              TEXT NOT NULL,
    field               TEXT NOT NULL,  -- CRM field API name
    value_kind          TEXT NOT NULL,
    base_value          TEXT,           -- last agreed value
    base_at             TEXT,           -- NULL: no agreed value known yet
    base_source         TEXT,
    seen_crm_value      TEXT,           -- last value seen in the CRM
    seen_crm_at         TEXT,
    seen_crm_source     TEXT,
    seen_anaplan_value  TEXT,           -- last value seen in Anaplan
    seen_anaplan_at     TEXT,
    seen_anaplan_source TEXT,
    in_flight_outbox_id INTEGER REFERENCES outbox (id),      -- the one write in flight
    held_exception_id   INTEGER REFERENCES exceptions (id),  -- the open conflict holding it
    last_ack_target     TEXT,           -- our last acknowledged write: side,
    last_ack_value      TEXT,           --   value,
    last_ack_at         TEXT,           --   commit time on that side,
    last_ack_replaced   TEXT,           --   and the value it replaced there
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (pairing, crm_id, field)
) WITHOUT ROWID;
CREATE INDEX shadow_in_flight ON shadow (in_flight_outbox_id) WHERE in_flight_outbox_id IS NOT NULL;
CREATE INDEX shadow_held ON shadow (held_exception_id) WHERE held_exception_id IS NOT NULL;

CREATE TABLE checkpoints (
    source     TEXT PRIMARY KEY,  -- CDC channel or poller name
    position   TEXT NOT NULL,     -- JSON of model::Position
    updated_at TEXT NOT NULL
);

CREATE TABLE audit (
    id           INTEGER PRIMARY KEY,
    at           TEXT NOT NULL,  -- commit or poll time of the observed change
    pairing      TEXT NOT NULL,
    crm_id       TEXT NOT NULL,
    field        TEXT NOT NULL,
    side         TEXT NOT NULL CHECK (side IN ('crm', 'anaplan')),  -- where it was observed
    source       TEXT NOT NULL,  -- stream, poll, reconcile, resolution
    value        TEXT,
    value_kind   TEXT NOT NULL,
    decision     TEXT NOT NULL,
    rule_id      TEXT,
    rule_hash    TEXT,
    exception_id INTEGER REFERENCES exceptions (id)
);
CREATE INDEX audit_by_field ON audit (pairing, crm_id, field, id);
CREATE INDEX audit_by_exception ON audit (exception_id) WHERE exception_id IS NOT NULL;

CREATE VIEW open_exceptions_by_kind AS
SELECT object, field, kind, count(*) AS count, min(created_at) AS oldest
FROM exceptions
WHERE status = 'open'
GROUP BY object, field, kind;

CREATE VIEW oldest_open_exceptions AS
SELECT id, kind, object, pairing, crm_id, field, crm_value, anaplan_value, base_value, message,
       created_at, julianday('now') - julianday(created_at) AS age_days
FROM exceptions
WHERE status = 'open'
ORDER BY created_at, id;

CREATE VIEW exceptions_per_day AS
SELECT day, kind, sum(opened) AS opened, sum(resolved) AS resolved
FROM (
    SELECT substr(created_at, 1, 10) AS day, kind, 1 AS opened, 0 AS resolved FROM exceptions
    UNION ALL
    SELECT substr(resolved_at, 1, 10), kind, 0, 1 FROM exceptions WHERE resolved_at IS NOT NULL
)
GROUP BY day, kind
ORDER BY day, kind;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
        }
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i64);
    }

    #[test]
    fn application_id_spells_plsy() {
        assert_eq!(&APPLICATION_ID.to_be_bytes(), b"plsy");
    }
}
