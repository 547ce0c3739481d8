//! The shapes of what the store holds, as the rest of plansync sees them: a field's shadow
//! state, outbox writes, exceptions, audit entries, and the small enumerations stored as text.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{ExceptionKind, ExceptionStatus, RecordKey, Side, Source, Value, ValueKind};

/// One synced field of one record: the key of the per-field state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldKey {
    pub record: RecordKey,
    /// The CRM field API name (the pairing's rule maps it to the Anaplan line item).
    pub field: String,
}

impl FieldKey {
    pub fn new(
        pairing: impl Into<String>,
        crm_id: impl Into<String>,
        field: impl Into<String>,
    ) -> FieldKey {
        FieldKey {
            record: RecordKey {
                pairing: pairing.into(),
                crm_id: crm_id.into(),
            },
            field: field.into(),
        }
    }
}

impl fmt::Display for FieldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}.{}",
            self.record.pairing, self.record.crm_id, self.field
        )
    }
}

/// A value together with when it was committed or observed and the path it came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub value: Value,
    pub at: DateTime<Utc>,
    pub source: Source,
}

/// The persisted per-field state of `decisions.md`, as loaded from the `shadow` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowState {
    pub kind: ValueKind,
    /// The last value both sides agreed on; `None` while no agreement is known.
    pub base: Option<Observed>,
    pub seen_crm: Option<Observed>,
    pub seen_anaplan: Option<Observed>,
    /// The outbox id of the one write in flight for this field.
    pub in_flight: Option<i64>,
    /// The open conflict exception holding this field.
    pub held: Option<i64>,
    /// Our last acknowledged write to this field.
    pub last_ack: Option<crate::model::AckedWrite>,
    pub updated_at: DateTime<Utc>,
}

impl ShadowState {
    /// The last value seen on `side`.
    pub fn seen(&self, side: Side) -> Option<&Observed> {
        match side {
            Side::Crm => self.seen_crm.as_ref(),
            Side::Anaplan => self.seen_anaplan.as_ref(),
        }
    }
}

/// Declares a text-stored enumeration with `as_str`, `Display`, `FromStr` and a snake_case
/// serde form, so the SQL text, the CLI and the JSON output agree by construction.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        let all: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                        format!("unknown {} `{s}` (one of: {})", stringify!($name), all.join(", "))
                    })
            }
        }
    };
}

text_enum! {
    /// Whether a mapped record still exists in the CRM.
    RecordState {
        Active => "active",
        Deleted => "deleted",
    }
}

text_enum! {
    /// Why a write was queued.
    OutboxReason {
        /// The rules propagated a change to the other side.
        Decision => "decision",
        /// The owner's value is pushed back over a non-owner's edit.
        Revert => "revert",
        /// A person resolved an exception.
        Resolution => "resolution",
    }
}

text_enum! {
    /// Where a queued write stands.
    OutboxState {
        Pending => "pending",
        InFlight => "in_flight",
        Done => "done",
        /// Refused for good; its `write_failed` exception says why.
        Failed => "failed",
        /// Not written: the target had changed since it was read, and deciding the newer
        /// value held the field for a person (its exception is the write's result).
        Held => "held",
        /// Not written for the same reason; deciding the newer value needed no person.
        Superseded => "superseded",
    }
}

text_enum! {
    /// How a person resolved an exception, as recorded.
    ResolutionKind {
        TakeCrm => "take_crm",
        TakeAnaplan => "take_anaplan",
        SetValue => "set_value",
        Dismiss => "dismiss",
    }
}

/// The field an exception is about, with the value in each system and the last agreed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionField {
    /// The CRM field API name.
    pub name: String,
    pub kind: ValueKind,
    pub crm_value: Value,
    pub anaplan_value: Value,
    /// The last agreed value (`Null` when none is known).
    pub base_value: Value,
}

impl ExceptionField {
    /// The value currently in `side`.
    pub fn value(&self, side: Side) -> &Value {
        match side {
            Side::Crm => &self.crm_value,
            Side::Anaplan => &self.anaplan_value,
        }
    }
}

/// One row of the `exceptions` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionRecord {
    pub id: i64,
    pub kind: ExceptionKind,
    pub status: ExceptionStatus,
    pub pairing: String,
    /// The CRM object name, e.g. `Opportunity`.
    pub object: String,
    pub crm_id: Option<String>,
    /// `None` for exceptions not about one field (e.g. `gap`).
    pub field: Option<ExceptionField>,
    pub rule_id: Option<String>,
    pub rule_hash: Option<String>,
    pub message: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolution: Option<ResolutionKind>,
    /// The value a person chose; `None` unless resolved with take/set.
    pub resolution_value: Option<Value>,
    pub note: Option<String>,
}

impl ExceptionRecord {
    pub fn field_name(&self) -> Option<&str> {
        self.field.as_ref().map(|f| f.name.as_str())
    }
}

/// One row of the `outbox` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub id: i64,
    pub key: FieldKey,
    pub target: Side,
    pub kind: ValueKind,
    pub value: Value,
    pub reason: OutboxReason,
    pub exception_id: Option<i64>,
    pub state: OutboxState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the target showed when the write was decided (`Null` for nothing).
    pub replaced: Value,
    /// The exception the write ended in (`failed`, `held`), when one was recorded.
    pub result_exception_id: Option<i64>,
}

/// One row of the `audit` table: a decision about an observed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub key: FieldKey,
    pub side: Side,
    pub source: Source,
    pub kind: ValueKind,
    pub value: Value,
    pub decision: String,
    pub rule_id: Option<String>,
    pub rule_hash: Option<String>,
    pub exception_id: Option<i64>,
}

/// One row of the `record_map` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMapEntry {
    pub record: RecordKey,
    pub anaplan_code: String,
    pub anaplan_item_id: Option<String>,
    pub state: RecordState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_enums_round_trip() {
        for r in ResolutionKind::ALL {
            assert_eq!(r.as_str().parse::<ResolutionKind>().unwrap(), *r);
        }
        for s in OutboxState::ALL {
            assert_eq!(s.as_str().parse::<OutboxState>().unwrap(), *s);
        }
        let err = "later".parse::<OutboxState>().unwrap_err();
        assert!(err.contains("pending, in_flight, done, failed"), "{err}");
    }
}
