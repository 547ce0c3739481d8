//! A field's state while a shard works on it: loaded once per round from the shadow, changed
//! in memory by every observation and acknowledgement of the round, and stored back as one
//! upsert. References to outbox rows and exceptions may point into the batch being built.

use crate::model::{AckedWrite, Side, Value, ValueKind};
use crate::rules::decide::{FieldState, InFlight, Seen};
use crate::store::{
    ExceptionField, ExceptionRef, FieldKey, Observed, OutboxRecord, OutboxRef, ShadowState,
    ShadowUpsert,
};

/// The one write in flight for a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flight {
    pub outbox: OutboxRef,
    /// The stored id, once committed (a flight added this round has none yet).
    pub id: Option<i64>,
    pub to: Side,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Working {
    pub kind: ValueKind,
    pub base: Option<Observed>,
    pub seen_crm: Option<Observed>,
    pub seen_anaplan: Option<Observed>,
    pub in_flight: Option<Flight>,
    pub held: Option<ExceptionRef>,
    pub last_ack: Option<AckedWrite>,
    /// Changed this round: stored at the end of it.
    pub dirty: bool,
}

impl Working {
    pub fn new(kind: ValueKind) -> Working {
        Working {
            kind,
            base: None,
            seen_crm: None,
            seen_anaplan: None,
            in_flight: None,
            held: None,
            last_ack: None,
            dirty: false,
        }
    }

    /// From the stored state, brought to the rule's current `kind` (a rule edited since the
    /// value was stored, e.g. a new scale): a value that no longer fits is treated as
    /// unknown rather than compared wrongly. `flight` is the in-flight outbox row, if any.
    pub fn from_stored(
        state: ShadowState,
        kind: ValueKind,
        flight: Option<OutboxRecord>,
    ) -> Working {
        let convert = |o: Option<Observed>| {
            o.and_then(|o| {
                let value = o.value.to_kind(kind).ok()?;
                Some(Observed { value, ..o })
            })
        };
        let in_flight = match (state.in_flight, flight) {
            (Some(id), Some(row)) if row.id == id => Some(Flight {
                outbox: OutboxRef::stored(id),
                id: Some(id),
                to: row.target,
                value: row.value.to_kind(kind).unwrap_or(row.value),
            }),
            _ => None,
        };
        Working {
            kind,
            base: convert(state.base),
            seen_crm: convert(state.seen_crm),
            seen_anaplan: convert(state.seen_anaplan),
            in_flight,
            held: state.held.map(ExceptionRef::stored),
            last_ack: state.last_ack,
            dirty: false,
        }
    }

    pub fn seen(&self, side: Side) -> Option<&Observed> {
        match side {
            Side::Crm => self.seen_crm.as_ref(),
            Side::Anaplan => self.seen_anaplan.as_ref(),
        }
    }

    pub fn set_seen(&mut self, side: Side, observed: Observed) {
        match side {
            Side::Crm => self.seen_crm = Some(observed),
            Side::Anaplan => self.seen_anaplan = Some(observed),
        }
        self.dirty = true;
    }

    /// The state as the decision engine takes it.
    pub fn for_decide(&self) -> FieldState {
        let seen = |o: &Option<Observed>| {
            o.as_ref().map(|o| Seen {
                value: o.value.clone(),
                at: o.at,
            })
        };
        FieldState {
            base: self.base.as_ref().map(|b| b.value.clone()),
            seen_crm: seen(&self.seen_crm),
            seen_anaplan: seen(&self.seen_anaplan),
            in_flight: self.in_flight.as_ref().map(|f| InFlight {
                to: f.to,
                value: f.value.clone(),
            }),
            held: self.held.is_some(),
            last_ack: self.last_ack.clone(),
        }
    }

    /// The field's values for an exception row (`Null` where nothing is known).
    pub fn exception_field(&self, name: &str) -> ExceptionField {
        let value = |o: &Option<Observed>| o.as_ref().map_or(Value::Null, |o| o.value.clone());
        ExceptionField {
            name: name.to_string(),
            kind: self.kind,
            crm_value: value(&self.seen_crm),
            anaplan_value: value(&self.seen_anaplan),
            base_value: value(&self.base),
        }
    }

    pub fn upsert(&self, key: FieldKey) -> ShadowUpsert {
        ShadowUpsert {
            key,
            kind: self.kind,
            base: self.base.clone(),
            seen_crm: self.seen_crm.clone(),
            seen_anaplan: self.seen_anaplan.clone(),
            in_flight: self.in_flight.as_ref().map(|f| f.outbox),
            held: self.held,
            last_ack: self.last_ack.clone(),
        }
    }
}
