//! The validated rule set. Values of these types exist only after `compile` has checked
//! them, so the decision engine never meets a contradiction (a shared field without a
//! conflict policy, a window that is not defined, a bound outside its field's type).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::calendar::{Calendar, Window};
use crate::model::{Decimal, ExceptionKind, Side, Value, ValueKind};

/// Every pairing of a rules directory.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub pairings: Vec<Pairing>,
}

impl RuleSet {
    pub fn pairing(&self, name: &str) -> Option<&Pairing> {
        self.pairings.iter().find(|p| p.name == name)
    }

    /// The pairing for a CRM object (`Opportunity`), or a pairing named so.
    pub fn find(&self, object_or_name: &str) -> Option<&Pairing> {
        self.pairings
            .iter()
            .find(|p| p.crm_object == object_or_name || p.name == object_or_name)
    }
}

/// One rule file: a CRM object kept in step with an Anaplan list and module.
#[derive(Debug, Clone)]
pub struct Pairing {
    /// The file stem, e.g. `opportunity`; the key of this pairing in the store.
    pub name: String,
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, recorded with every decision it made.
    pub hash: String,
    pub crm_object: String,
    pub anaplan: AnaplanTarget,
    /// Boolean line items read with each record so `when.anaplan_flag` can test them.
    pub flags: Vec<String>,
    /// CRM fields read with each record only so `when.record` can test them.
    pub extra_crm_fields: Vec<String>,
    pub lifecycle: Lifecycle,
    pub calendar: Calendar,
    pub windows: Vec<Window>,
    pub fields: Vec<FieldRule>,
    pub tests: Vec<TestCase>,
}

impl Pairing {
    /// The first 12 hex digits of the file hash: enough to tell versions apart in a table.
    pub fn short_hash(&self) -> &str {
        &self.hash[..12.min(self.hash.len())]
    }

    pub fn field(&self, crm_field: &str) -> Option<&FieldRule> {
        self.fields.iter().find(|f| f.crm == crm_field)
    }

    pub fn field_by_anaplan(&self, name: &str) -> Option<&FieldRule> {
        self.fields.iter().find(|f| f.anaplan.name() == name)
    }

    pub fn window(&self, name: &str) -> Option<&Window> {
        self.windows.iter().find(|w| w.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnaplanTarget {
    pub workspace: String,
    pub model: String,
    /// The list whose items are the CRM records (item code = CRM id).
    pub list: String,
    /// The module whose line items, dimensioned by `list`, hold the synced fields.
    pub module: String,
}

/// Where a field lives in Anaplan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnaplanField {
    LineItem(String),
    ListProperty(String),
}

impl AnaplanField {
    pub fn name(&self) -> &str {
        match self {
            AnaplanField::LineItem(n) | AnaplanField::ListProperty(n) => n,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrmDelete {
    /// Delete the Anaplan list item.
    DeleteItem,
    /// Set this boolean line item to true (and keep the item and its plan data).
    Flag,
    /// Leave Anaplan as it is.
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrmUndelete {
    /// Re-add the item (or clear the flag) and write the record's values again.
    Restore,
    Ignore,
}

/// What the Anaplan-owned fields of an item plansync creates (for a CRM record with no
/// item) start as. Its cells are blank because nobody filled them, and a blank no one set is
/// not the owner's value: neither choice ever copies it over the CRM's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NewItem {
    /// Leave the CRM's values, open one `lifecycle` exception per item naming the fields
    /// Anaplan has not set, and sync each field once a planner gives it a value.
    #[default]
    Hold,
    /// Write the CRM's current values into the new item as its starting values (audited as
    /// `seed`); Anaplan owns them from then on.
    SeedFromCrm,
}

impl NewItem {
    pub fn as_str(self) -> &'static str {
        match self {
            NewItem::Hold => "hold",
            NewItem::SeedFromCrm => "seed_from_crm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnaplanDelete {
    /// Record a `lifecycle` exception for review (the default: plansync never deletes CRM
    /// records unless a rule says so).
    Exception,
    /// Add the item back from the CRM record.
    Recreate,
    /// Delete the CRM record.
    DeleteRecord,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    pub crm_delete: CrmDelete,
    /// The boolean line item set by `crm_delete = "flag"`.
    pub deleted_flag: Option<String>,
    pub crm_undelete: CrmUndelete,
    pub anaplan_delete: AnaplanDelete,
    pub new_item: NewItem,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            crm_delete: CrmDelete::Ignore,
            deleted_flag: None,
            crm_undelete: CrmUndelete::Restore,
            anaplan_delete: AnaplanDelete::Exception,
            new_item: NewItem::Hold,
        }
    }
}

/// A picklist's vocabulary: the CRM values, and how they are named in Anaplan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Picklist {
    pub values: BTreeSet<String>,
    pub to_anaplan: BTreeMap<String, String>,
    pub from_anaplan: BTreeMap<String, String>,
}

/// One synced field and everything that decides it.
#[derive(Debug, Clone)]
pub struct FieldRule {
    /// `Object.Field`, e.g. `Opportunity.Amount`.
    pub id: String,
    pub crm: String,
    pub anaplan: AnaplanField,
    pub kind: ValueKind,
    pub picklist: Option<Picklist>,
    /// Whether a CRM null and Anaplan's blank (0, false) are one value.
    pub blank: Blank,
    pub policy: Policy,
    /// Ordered; the first whose conditions all hold replaces `policy`.
    pub overrides: Vec<Override>,
    pub span: Range<usize>,
}

/// How a number or boolean field compares "no value" with Anaplan's blank.
///
/// Anaplan has no blank number or boolean: an empty cell reads as 0 or false. So by default
/// (`Empty`) a CRM null, 0 and, for booleans, false are one value: no conflict between them,
/// no write of 0 over a null nor of a null that Anaplan would show as 0 anyway, and a null
/// that a person chose (a resolution) stays chosen when Anaplan reads it back as 0.
/// `Distinct` (`blank = "distinct"`) keeps them apart for teams to whom a CRM null means
/// "unknown", not zero. Text, dates and picklists need no such rule: an empty Anaplan cell
/// of those kinds reads as no value already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Blank {
    #[default]
    Empty,
    Distinct,
}

impl Blank {
    pub fn as_str(self, kind: ValueKind) -> &'static str {
        match (self, kind) {
            (Blank::Distinct, _) => "distinct",
            (Blank::Empty, ValueKind::Boolean) => "false",
            (Blank::Empty, _) => "zero",
        }
    }
}

/// Why an incoming raw value could not become a value of this field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormaliseError {
    pub kind: ExceptionKind,
    pub message: String,
}

impl FieldRule {
    /// Whether people may edit this field on `side` under some policy of the rule (its own
    /// or a `when` override's): the side owns it, or shares it. A write there must then not
    /// replace an edit plansync has not read yet.
    pub fn may_be_edited_in(&self, side: Side) -> bool {
        let theirs = match side {
            Side::Crm => Owner::Anaplan,
            Side::Anaplan => Owner::Crm,
        };
        std::iter::once(&self.policy)
            .chain(self.overrides.iter().map(|o| &o.policy))
            .any(|p| p.owner != theirs)
    }

    /// Whether `a` and `b` are the same value of this field: equal, or both blank where the
    /// field's [`Blank`] rule makes null, 0 and false one value.
    pub fn same(&self, a: &Value, b: &Value) -> bool {
        a == b || (self.blank == Blank::Empty && is_blank(a) && is_blank(b))
    }

    /// Whether `v` may be nothing anyone set: no value, or Anaplan's blank 0 / false where
    /// the field's [`Blank`] rule makes those one with no value.
    pub fn is_unset(&self, v: &Value) -> bool {
        v.is_null() || (self.blank == Blank::Empty && is_blank(v))
    }

    /// Normalises a raw value reported by `side` into the field's canonical value (picklists
    /// in the CRM vocabulary). A picklist value with no mapping is `unmapped`; a value of the
    /// wrong shape is a `validation` problem.
    pub fn normalise(&self, side: Side, raw: &serde_json::Value) -> Result<Value, NormaliseError> {
        let value = Value::from_json(self.kind, raw).map_err(|e| NormaliseError {
            kind: ExceptionKind::Validation,
            message: format!("{} value for {}: {e}", side, self.id),
        })?;
        self.from_side(side, value)
    }

    /// Maps an already typed value from `side`'s vocabulary into the canonical one.
    pub fn from_side(&self, side: Side, value: Value) -> Result<Value, NormaliseError> {
        let (Some(pick), Value::Text(text)) = (&self.picklist, &value) else {
            return Ok(value);
        };
        let canonical = match side {
            Side::Crm => Some(text.clone()),
            Side::Anaplan => pick
                .from_anaplan
                .get(text)
                .cloned()
                .or_else(|| pick.values.contains(text).then(|| text.clone())),
        };
        match canonical {
            Some(v) if pick.values.contains(&v) => Ok(Value::Text(v)),
            _ => Err(NormaliseError {
                kind: ExceptionKind::Unmapped,
                message: format!(
                    "{side} value `{text}` of {} is not in its picklist or value map",
                    self.id
                ),
            }),
        }
    }

    /// The value as `side` spells it (a picklist value renamed for Anaplan).
    pub fn to_side(&self, side: Side, value: &Value) -> Value {
        match (&self.picklist, value, side) {
            (Some(pick), Value::Text(text), Side::Anaplan) => {
                Value::Text(pick.to_anaplan.get(text).unwrap_or(text).clone())
            }
            _ => value.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Crm,
    Anaplan,
    Shared,
}

impl Owner {
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Crm => "crm",
            Owner::Anaplan => "anaplan",
            Owner::Shared => "shared",
        }
    }

    /// Whether a change made on `side` may be propagated.
    pub fn allows(self, side: Side) -> bool {
        match self {
            Owner::Shared => true,
            Owner::Crm => side == Side::Crm,
            Owner::Anaplan => side == Side::Anaplan,
        }
    }
}

/// What happens to a change made by the side that does not own the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnViolation {
    /// Record an `ownership_violation` exception; write nothing.
    Reject,
    /// Record the exception and write the owner's value back to the side that changed it.
    Revert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    CrmWins,
    AnaplanWins,
    /// The later commit wins; an exact tie goes to `tie`. Anaplan changes are dated by the poll
    /// that saw them, an upper bound, so an Anaplan edit can look newer than it was; no margin
    /// for the poll interval is applied yet (see the README).
    NewestWins {
        tie: Side,
    },
    /// Hold both values, open a `conflict` exception, write nothing until a person resolves it.
    Manual,
}

impl ConflictPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::CrmWins => "crm_wins",
            ConflictPolicy::AnaplanWins => "anaplan_wins",
            ConflictPolicy::NewestWins { .. } => "newest_wins",
            ConflictPolicy::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Validation {
    pub min: Option<Decimal>,
    pub max: Option<Decimal>,
    /// For text fields: the only values accepted.
    pub allowed: Option<BTreeSet<String>>,
    /// For text fields: the most characters a value may have (what the CRM field holds, so
    /// a longer value from Anaplan is held for review instead of failing its write).
    pub max_length: Option<u32>,
    /// The largest accepted change relative to the base, in percent.
    pub max_change_pct: Option<Decimal>,
}

/// Everything that decides a field at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub owner: Owner,
    pub on_violation: OnViolation,
    /// Present exactly when `owner` is `Shared`.
    pub on_conflict: Option<ConflictPolicy>,
    pub validation: Validation,
}

/// One `[[field.when]]`: conditions, all of which must hold, and the policy they put in force.
#[derive(Debug, Clone)]
pub struct Override {
    /// `Opportunity.Amount.when.freeze` or `Opportunity.Amount.when[1]`.
    pub id: String,
    pub conditions: Vec<Condition>,
    /// The field's policy with this override's settings applied (checked like the field's own).
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    /// The change falls inside this named window of the pairing's calendar.
    Window(String),
    /// The record's CRM field holds one of these values.
    Record {
        field: String,
        values: BTreeSet<Value>,
    },
    /// This boolean line item is true on the record's Anaplan row.
    AnaplanFlag(String),
}

/// A test case written in a rule file and run by `plansync rules test`.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub span: Range<usize>,
    pub field: String,
    pub at: DateTime<Utc>,
    pub from: Side,
    pub value: Value,
    pub base: Option<Value>,
    /// The other side's last seen value; the base when not given.
    pub other: Option<Value>,
    pub other_at: Option<DateTime<Utc>>,
    pub in_flight: Option<(Side, Value)>,
    pub held: bool,
    pub ours: bool,
    /// Our last acknowledged write to the field, for `overwritten` cases.
    pub last_ack: Option<crate::model::AckedWrite>,
    pub record: BTreeMap<String, Value>,
    pub flags: BTreeMap<String, bool>,
    pub expect: Expectation,
}

#[derive(Debug, Clone)]
pub struct Expectation {
    pub action: String,
    pub to: Option<Side>,
    pub value: Option<Value>,
    /// `Some(None)` means "expects no exception".
    pub exception: Option<Option<ExceptionKind>>,
    pub rule: Option<String>,
}

/// A value Anaplan would show as a blank cell: no value, zero, or false.
fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Number(n) => n.units == 0,
        Value::Bool(b) => !b,
        _ => false,
    }
}
