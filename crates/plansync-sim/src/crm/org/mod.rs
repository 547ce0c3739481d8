//! The org's data: one compact table per object, typed values, and the commit path that applies
//! a transaction's writes and appends its change events in the same critical section, so event
//! order is commit order.
//!
//! Rooms: this file holds the tables and finding records and users in them; `seed.rs` builds
//! an org from a seed; `validate.rs` checks writes and turns them into [`Op`]s; `commit.rs`
//! applies them and appends their change events; `rest_shape.rs` renders records for REST.

mod commit;
mod rest_shape;
mod seed;
mod validate;

use std::collections::HashMap;
use std::sync::Arc;

use super::cdc::EventLog;
use super::ids;
use super::schema::{FieldDef, ObjectDef, Storage, SystemField};
use super::values::Val;

/// One record. System fields are kept as plain numbers; user ids are indexes into the User table.
#[derive(Debug, Clone)]
pub struct Record {
    pub values: Box<[Val]>,
    pub deleted: bool,
    /// Hard-deleted (Bulk API `hardDelete`): gone for good, even from `queryAll` and the
    /// recycle bin. The slot stays, so the ids (and cursors) of other records keep their
    /// place.
    pub purged: bool,
    pub created: i64,
    pub created_by: u32,
    pub modified: i64,
    pub modified_by: u32,
    pub modstamp: i64,
    pub owner: u32,
}

#[derive(Debug)]
pub struct Table {
    pub def: Arc<ObjectDef>,
    /// Record `n` (from 1) lives at index `n - 1`; records are never removed, only flagged.
    pub records: Vec<Record>,
}

/// A record's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordRef {
    pub table: usize,
    pub idx: usize,
}

/// One validated write of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Update {
        r: RecordRef,
        changes: Vec<(usize, Val)>,
    },
    Create {
        table: usize,
        changes: Vec<(usize, Val)>,
    },
    Delete {
        r: RecordRef,
    },
    Undelete {
        r: RecordRef,
    },
}

/// Who commits and through which API (the event's `changeOrigin`).
#[derive(Debug, Clone)]
pub struct CommitCtx {
    pub user: u32,
    pub origin: String,
}

pub const USER_TABLE: usize = 0;

#[derive(Debug)]
pub struct Org {
    pub org_id: String,
    pub org_name: String,
    pub tables: Vec<Table>,
    by_name: HashMap<String, usize>,
    by_prefix: HashMap<String, usize>,
    usernames: HashMap<String, u32>,
    /// The user client-credentials tokens act as.
    pub run_as: u32,
    pub events: EventLog,
    last_commit_ms: i64,
    commit_number: u64,
    /// The next this many record writes fail with `UNABLE_TO_LOCK_ROW` (test hook).
    pub lock_failures: u32,
    /// Records every write of fails with `UNABLE_TO_LOCK_ROW` until released, as a record
    /// held by a long-running job is (test hook).
    pub locked: std::collections::HashSet<String>,
    /// A transaction with more changes than this ends in one `GAP_OVERFLOW` per entity.
    pub overflow_threshold: usize,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Org {
    pub fn table_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }

    pub fn def(&self, table: usize) -> Option<&Arc<ObjectDef>> {
        self.tables.get(table).map(|t| &t.def)
    }

    pub fn user_by_name(&self, username: &str) -> Option<u32> {
        self.usernames.get(&username.to_ascii_lowercase()).copied()
    }

    pub fn user_id(&self, user: u32) -> String {
        ids::make_id("005", u64::from(user) + 1)
    }

    /// Accepts a username or a user id.
    pub fn find_user(&self, who: &str) -> Option<u32> {
        self.user_by_name(who).or_else(|| {
            self.resolve_id(who)
                .filter(|r| r.table == USER_TABLE)
                .map(|r| r.idx as u32)
        })
    }

    pub fn id_of(&self, r: RecordRef) -> String {
        match self.tables.get(r.table) {
            Some(t) => ids::make_id(&t.def.key_prefix, r.idx as u64 + 1),
            None => String::new(),
        }
    }

    /// Finds a record (deleted or not) by its 15- or 18-character id.
    pub fn resolve_id(&self, id: &str) -> Option<RecordRef> {
        let (prefix, n) = ids::parse_id(id)?;
        let table = *self.by_prefix.get(prefix)?;
        let idx = usize::try_from(n.checked_sub(1)?).ok()?;
        let t = self.tables.get(table)?;
        t.records
            .get(idx)
            .filter(|rec| !rec.purged)
            .map(|_| RecordRef { table, idx })
    }

    /// Makes a deleted record unrecoverable: no id finds it, no query (`queryAll`
    /// included) returns it.
    pub fn purge(&mut self, r: RecordRef) {
        if let Some(rec) = self
            .tables
            .get_mut(r.table)
            .and_then(|t| t.records.get_mut(r.idx))
        {
            rec.purged = true;
        }
    }

    pub fn record(&self, r: RecordRef) -> Option<&Record> {
        self.tables.get(r.table)?.records.get(r.idx)
    }

    /// A field's value (system fields computed). Compound fields read as null: render their
    /// parts instead.
    pub fn get(&self, r: RecordRef, field: &FieldDef) -> Val {
        let Some(rec) = self.record(r) else {
            return Val::Null;
        };
        match field.storage {
            Storage::Slot(i) => rec.values.get(i).cloned().unwrap_or(Val::Null),
            Storage::Compound => Val::Null,
            Storage::System(s) => match s {
                SystemField::Id => Val::Str(self.id_of(r).into()),
                SystemField::IsDeleted => Val::Bool(rec.deleted),
                SystemField::CreatedDate => Val::DateTime(rec.created),
                SystemField::LastModifiedDate => Val::DateTime(rec.modified),
                SystemField::SystemModstamp => Val::DateTime(rec.modstamp),
                SystemField::CreatedById => Val::Str(self.user_id(rec.created_by).into()),
                SystemField::LastModifiedById => Val::Str(self.user_id(rec.modified_by).into()),
                SystemField::OwnerId => Val::Str(self.user_id(rec.owner).into()),
            },
        }
    }
}
