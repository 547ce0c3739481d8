//! What a pairing's requests ask of Anaplan, decided before any call: each request classified
//! into an [`Op`] (or refused with the reason), the ops grouped per record ([`RecordPlan`]),
//! and a cell ready to send ([`PlannedCell`]).

use crate::anaplan::{CellValue, CellWrite};
use crate::engine::write::{WriteRequest, lifecycle};
use crate::model::{RecordKey, Side, Value};
use crate::rules::Pairing;
use crate::rules::ruleset::AnaplanField;

use super::cells::cell_value;

/// What one request asks of Anaplan, once checked against the rule.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Op {
    /// A cell of `line_item` (a name; resolved to an id when written) for the record's item.
    Cell {
        line_item: String,
        value: CellValue,
    },
    /// A list property of the record's item.
    Property {
        name: String,
        value: String,
    },
    Ensure,
    Delete,
}

/// A list property value as text (properties are sent as strings); `Null` clears.
fn property_text(value: &Value) -> String {
    value.to_text().unwrap_or_default()
}

/// What `req` asks for under `pairing`, or why it cannot be done.
pub(super) fn classify(pairing: &Pairing, req: &WriteRequest) -> Result<Op, String> {
    if lifecycle::is_lifecycle(&req.field) {
        return match req.field.as_str() {
            lifecycle::ENSURE_ITEM => Ok(Op::Ensure),
            lifecycle::DELETE_ITEM => Ok(Op::Delete),
            lifecycle::DELETED_FLAG => {
                let Some(flag) = &pairing.lifecycle.deleted_flag else {
                    return Err(format!(
                        "pairing `{}` has no lifecycle.deleted_flag line item to set",
                        pairing.name
                    ));
                };
                match &req.value {
                    Value::Bool(b) => Ok(Op::Cell {
                        line_item: flag.clone(),
                        value: CellValue::Bool(*b),
                    }),
                    other => Err(format!(
                        "`{}` takes true or false, not `{other}`",
                        lifecycle::DELETED_FLAG
                    )),
                }
            }
            lifecycle::DELETE_RECORD => Err(format!(
                "`{}` deletes the CRM record: not an Anaplan operation",
                lifecycle::DELETE_RECORD
            )),
            other => Err(format!("unknown lifecycle operation `{other}`")),
        };
    }
    let Some(rule) = pairing.field(&req.field) else {
        return Err(format!(
            "no field `{}` in pairing `{}` ({})",
            req.field,
            pairing.name,
            pairing.path.display()
        ));
    };
    let value = rule.to_side(Side::Anaplan, &req.value);
    match &rule.anaplan {
        AnaplanField::LineItem(name) => Ok(Op::Cell {
            line_item: name.clone(),
            value: cell_value(rule.kind, value).map_err(|e| format!("{}: {e}", rule.id))?,
        }),
        AnaplanField::ListProperty(name) => Ok(Op::Property {
            name: name.clone(),
            value: property_text(&value),
        }),
    }
}

/// One record's requests in a pairing's batch.
#[derive(Default)]
pub(super) struct RecordPlan<'a> {
    pub(super) key: Option<&'a RecordKey>,
    /// (request index, op), in request order.
    pub(super) ops: Vec<(usize, Op)>,
}

impl RecordPlan<'_> {
    /// Whether anything but a delete is asked: then the item must exist first.
    pub(super) fn needs_item(&self) -> bool {
        self.ops.iter().any(|(_, op)| !matches!(op, Op::Delete))
    }
}

/// A cell ready to send: the request it answers, the record's code, and the write.
pub(super) struct PlannedCell {
    pub(super) req: usize,
    pub(super) code: String,
    pub(super) line_item_name: String,
    pub(super) write: CellWrite,
}
