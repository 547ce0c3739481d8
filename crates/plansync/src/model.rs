//! The domain vocabulary shared by every part of plansync: the two sides, typed field values
//! and their normalisation, record identity, and the changes the sources report.
//!
//! Values are normalised on the way in, so that everything downstream (the decision engine,
//! the shadow in the store, the echo check) compares canonical values only: `100`, `100.0`
//! and `"100.00"` are the same number for a field of scale 2, an empty text is the same as no
//! text, and a picklist value is always in the CRM's vocabulary.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// One of the two systems kept in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Crm,
    Anaplan,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Crm, Side::Anaplan];

    pub fn other(self) -> Side {
        match self {
            Side::Crm => Side::Anaplan,
            Side::Anaplan => Side::Crm,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Crm => "crm",
            Side::Anaplan => "anaplan",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Side {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "crm" => Ok(Side::Crm),
            "anaplan" => Ok(Side::Anaplan),
            other => Err(format!(
                "unknown side `{other}` (expected `crm` or `anaplan`)"
            )),
        }
    }
}

/// Which path a change came through. Carried into the audit so a reviewer can tell a streamed
/// edit from one the poller caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The CRM change-data-capture stream.
    Stream,
    /// A scheduled poll (CRM watermark or Anaplan diff).
    Poll,
    /// The initial or a forced full reconciliation.
    Reconcile,
    /// A person resolving an exception.
    Resolution,
    /// Our own write, acknowledged by the side it went to. A value seen this way is dated
    /// by when we sent it (the APIs return no commit time), so it is never used to call a
    /// later-arriving CRM event stale.
    Write,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Stream => "stream",
            Source::Poll => "poll",
            Source::Reconcile => "reconcile",
            Source::Resolution => "resolution",
            Source::Write => "write",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in its source a change sits, so the checkpoint that acknowledges it can be stored in
/// the same transaction as its effects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Position {
    /// A CDC replay id (opaque, per channel).
    Replay { channel: String, replay_id: String },
    /// A CRM poll cursor: `(SystemModstamp, Id)`.
    Watermark { at: DateTime<Utc>, id: String },
    /// An Anaplan poll, known only by when it ran.
    PollRun { at: DateTime<Utc> },
    /// A resolution of an exception.
    Exception { id: i64 },
}

/// Identity of a synced record: the CRM id, which is also the Anaplan list item code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordKey {
    /// The pairing's name (the rule file's stem), e.g. `opportunity`.
    pub pairing: String,
    /// The 18-character CRM id; the Anaplan list item code is the same string.
    pub crm_id: String,
}

/// The type of a synced field. Picklists carry their value map in the field rule; their values
/// are plain text in the CRM's vocabulary here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    Text,
    /// A decimal number kept at a fixed number of digits after the point.
    Number {
        scale: u8,
    },
    Boolean,
    Date,
    Picklist,
}

impl ValueKind {
    /// The largest scale plansync accepts: values are kept as `i128` units of `10^-scale`.
    pub const MAX_SCALE: u8 = 18;

    /// A short tag stored beside values in SQLite (`number:2`, `date`, ...), so a value in the
    /// database can be parsed back without the rule files.
    pub fn tag(self) -> String {
        match self {
            ValueKind::Text => "text".into(),
            ValueKind::Number { scale } => format!("number:{scale}"),
            ValueKind::Boolean => "boolean".into(),
            ValueKind::Date => "date".into(),
            ValueKind::Picklist => "picklist".into(),
        }
    }

    pub fn from_tag(tag: &str) -> Option<ValueKind> {
        Some(match tag {
            "text" => ValueKind::Text,
            "boolean" => ValueKind::Boolean,
            "date" => ValueKind::Date,
            "picklist" => ValueKind::Picklist,
            other => {
                let scale: u8 = other.strip_prefix("number:")?.parse().ok()?;
                if scale > ValueKind::MAX_SCALE {
                    return None;
                }
                ValueKind::Number { scale }
            }
        })
    }
}

/// Why a raw value could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("`{raw}` is not a number")]
    NotANumber { raw: String },
    #[error("`{raw}` has more than 38 significant digits")]
    NumberTooLarge { raw: String },
    #[error("`{raw}` is not a boolean (expected true or false)")]
    NotABoolean { raw: String },
    #[error("`{raw}` is not a date (expected YYYY-MM-DD)")]
    NotADate { raw: String },
    #[error("expected text, found {found}")]
    NotText { found: &'static str },
}

/// A fixed-point decimal: `units × 10^-scale`. Comparing two decimals of the same field is
/// comparing `units`, exactly, with no floating point involved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Decimal {
    pub units: i128,
    pub scale: u8,
}

impl Decimal {
    /// Parses a decimal literal (`-12.5`, `1e3`, `+0.125`) and rounds it half away from zero
    /// to `scale` digits, as the CRM does for currency fields.
    pub fn parse(raw: &str, scale: u8) -> Result<Decimal, ValueError> {
        let not_a_number = || ValueError::NotANumber {
            raw: raw.to_string(),
        };
        let s = raw.trim();
        let (negative, s) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exponent) = match s.find(['e', 'E']) {
            Some(i) => {
                let exp: i32 = s[i + 1..].parse().map_err(|_| not_a_number())?;
                (&s[..i], exp)
            }
            None => (s, 0),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty())
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(not_a_number());
        }
        // All digits as one integer, with the point `frac_part.len() - exponent` from the right.
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let point_from_right = frac_part.len() as i64 - exponent as i64;
        let shift = scale as i64 - point_from_right;
        let too_large = || ValueError::NumberTooLarge {
            raw: raw.to_string(),
        };
        let units: i128 = if digits.is_empty() {
            0
        } else if shift >= 0 {
            if digits.len() as i64 + shift > 38 {
                return Err(too_large());
            }
            let base: i128 = digits.parse().map_err(|_| too_large())?;
            base.checked_mul(10i128.pow(shift as u32))
                .filter(|u| *u < 10i128.pow(38))
                .ok_or_else(too_large)?
        } else {
            let drop = (-shift) as usize;
            if drop > digits.len() {
                0
            } else {
                let (kept, dropped) = digits.split_at(digits.len() - drop);
                if kept.len() > 38 {
                    return Err(too_large());
                }
                let kept: i128 = if kept.is_empty() {
                    0
                } else {
                    kept.parse().map_err(|_| too_large())?
                };
                let round_up = dropped.as_bytes().first().is_some_and(|&b| b >= b'5');
                let rounded = kept + i128::from(round_up);
                // Rounding 99…9.5 up can reach 39 digits, which could not be read back.
                if rounded >= 10i128.pow(38) {
                    return Err(too_large());
                }
                rounded
            }
        };
        Ok(Decimal {
            units: if negative { -units } else { units },
            scale,
        })
    }

    /// This value at another scale (rounded half away from zero when digits are dropped).
    pub fn rescale(self, scale: u8) -> Option<Decimal> {
        if scale >= self.scale {
            let factor = 10i128.checked_pow(u32::from(scale - self.scale))?;
            Some(Decimal {
                units: self.units.checked_mul(factor)?,
                scale,
            })
        } else {
            let factor = 10i128.pow(u32::from(self.scale - scale));
            let q = self.units / factor;
            let r = self.units % factor;
            let adjust = if r.abs() * 2 >= factor {
                self.units.signum()
            } else {
                0
            };
            Some(Decimal {
                units: q + adjust,
                scale,
            })
        }
    }

    /// The same number with no trailing zeros after the point (`50`, `12.5`), for limits
    /// read from rule files: they are kept at the largest scale, whose every digit would
    /// otherwise be printed (`50.000000000000000000`). Field values keep their own scale:
    /// `1200.00` is what the CRM shows.
    pub fn shortest(self) -> Decimal {
        let mut d = self;
        while d.scale > 0 && d.units % 10 == 0 {
            d.units /= 10;
            d.scale -= 1;
        }
        d
    }

    pub fn to_f64(self) -> f64 {
        self.units as f64 / 10f64.powi(i32::from(self.scale))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let abs = self.units.unsigned_abs();
        if self.scale == 0 {
            return write!(f, "{sign}{abs}");
        }
        let factor = 10u128.pow(u32::from(self.scale));
        write!(
            f,
            "{sign}{}.{:0width$}",
            abs / factor,
            abs % factor,
            width = self.scale as usize
        )
    }
}

/// A normalised field value. Two values of the same field are equal exactly when the two
/// systems hold the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    /// No value: a CRM null, or an empty Anaplan text cell.
    Null,
    Text(String),
    Number(Decimal),
    Bool(bool),
    Date(NaiveDate),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Normalises a value given as text (a CSV cell, a CLI argument, a SQLite column).
    pub fn from_text(kind: ValueKind, raw: &str) -> Result<Value, ValueError> {
        match kind {
            ValueKind::Text | ValueKind::Picklist => Ok(if raw.is_empty() {
                Value::Null
            } else {
                Value::Text(raw.to_string())
            }),
            _ if raw.trim().is_empty() => Ok(Value::Null),
            ValueKind::Number { scale } => Decimal::parse(raw, scale).map(Value::Number),
            ValueKind::Boolean => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Value::Bool(true)),
                "false" | "0" | "no" => Ok(Value::Bool(false)),
                _ => Err(ValueError::NotABoolean {
                    raw: raw.to_string(),
                }),
            },
            ValueKind::Date => NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
                .map(Value::Date)
                .map_err(|_| ValueError::NotADate {
                    raw: raw.to_string(),
                }),
        }
    }

    /// Normalises a value from a JSON payload (a CDC event, a REST record, an Anaplan cell).
    pub fn from_json(kind: ValueKind, raw: &serde_json::Value) -> Result<Value, ValueError> {
        use serde_json::Value as J;
        match (kind, raw) {
            (_, J::Null) => Ok(Value::Null),
            (_, J::String(s)) => Value::from_text(kind, s),
            (ValueKind::Number { scale }, J::Number(n)) => {
                Decimal::parse(&n.to_string(), scale).map(Value::Number)
            }
            (ValueKind::Boolean, J::Bool(b)) => Ok(Value::Bool(*b)),
            (ValueKind::Number { .. }, other) => Err(ValueError::NotANumber {
                raw: other.to_string(),
            }),
            (ValueKind::Boolean, other) => Err(ValueError::NotABoolean {
                raw: other.to_string(),
            }),
            (ValueKind::Date, other) => Err(ValueError::NotADate {
                raw: other.to_string(),
            }),
            (ValueKind::Text | ValueKind::Picklist, other) => Err(ValueError::NotText {
                found: json_type_name(other),
            }),
        }
    }

    /// This value as a value of `kind`: how a value stored under an earlier rule (e.g. a
    /// number kept at scale 0 before the field's scale became 2) is compared under the
    /// current one. Numbers are rescaled (rounding half away from zero); other kinds are
    /// re-read from their text.
    pub fn to_kind(&self, kind: ValueKind) -> Result<Value, ValueError> {
        match (self, kind) {
            (Value::Number(d), ValueKind::Number { scale }) if d.scale == scale => Ok(self.clone()),
            (Value::Number(d), ValueKind::Number { scale }) => d
                .rescale(scale)
                .map(Value::Number)
                .ok_or_else(|| ValueError::NumberTooLarge { raw: d.to_string() }),
            (Value::Null, _) => Ok(Value::Null),
            _ => Value::from_text(kind, &self.to_text().unwrap_or_default()),
        }
    }

    /// The canonical text form (what SQLite stores and CSV carries); `None` for null.
    pub fn to_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Text(s) => Some(s.clone()),
            Value::Number(d) => Some(d.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Date(d) => Some(d.format("%Y-%m-%d").to_string()),
        }
    }

    /// A JSON form of the value. Numbers become JSON numbers: exact for whole numbers that fit
    /// in 64 bits, otherwise through `f64` (about 15 significant digits); a client that must
    /// send more digits exactly should send `to_text()` instead.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(d) if d.scale == 0 && i64::try_from(d.units).is_ok() => {
                serde_json::Value::from(d.units as i64)
            }
            Value::Number(d) => serde_json::Number::from_f64(d.to_f64())
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            other => serde_json::Value::String(other.to_text().unwrap_or_default()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_text() {
            None => f.write_str("(null)"),
            Some(s) => f.write_str(&s),
        }
    }
}

fn json_type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Our last acknowledged write to a field: kept so that a person's edit our write replaced
/// can be noticed (the remote APIs offer no conditional writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedWrite {
    pub to: Side,
    pub value: Value,
    /// When our write was committed on `to`: the commit time of its echo or the time in the
    /// write's response, not when the acknowledgement reached us (an edit committed after our
    /// write, but seen before its acknowledgement, is a new change, not an overwritten one).
    pub at: DateTime<Utc>,
    /// What `to` showed when the write was decided: the value it deliberately replaced (a
    /// revert, a conflict won by the other side), already on record.
    pub replaced: Option<Value>,
}

/// One field's new value as reported by a source, before the rules have looked at it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    /// The field's CRM API name, whichever side reported it (the pollers and the CDC listener
    /// translate Anaplan line items and compound parts to it).
    pub field: String,
    pub value: serde_json::Value,
}

/// A change to one record reported by one source: what the sources send to the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub side: Side,
    pub record: RecordKey,
    pub kind: ChangeKind,
    pub fields: Vec<FieldChange>,
    /// The CRM's commit timestamp, or for Anaplan the time of the poll that saw the change
    /// (an upper bound: Anaplan cells carry no timestamp).
    pub committed_at: DateTime<Utc>,
    pub source: Source,
    /// True when the change was made by plansync itself (the CRM event's `changeOrigin`
    /// carries our client id). Not enough on its own to call it an echo: the values must also
    /// equal what we wrote.
    pub ours: bool,
    pub position: Position,
}

/// What happened to the record as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Create,
    Update,
    Delete,
    Undelete,
}

/// Why plansync did not propagate a value, as recorded in the `exceptions` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionKind {
    /// Both sides changed a shared field; held (manual) or auto-resolved by the policy.
    Conflict,
    /// The side that does not own the field changed it.
    OwnershipViolation,
    /// The value broke a validation rule (bounds, allowed values, maximum change).
    Validation,
    /// A remote system refused a write for good.
    WriteFailed,
    /// The CDC stream lost events; the records were re-read.
    Gap,
    /// A value or record plansync has no mapping for.
    Unmapped,
    /// A record lifecycle event the rules route to review (e.g. an Anaplan item deleted).
    Lifecycle,
}

impl ExceptionKind {
    pub const ALL: [ExceptionKind; 7] = [
        ExceptionKind::Conflict,
        ExceptionKind::OwnershipViolation,
        ExceptionKind::Validation,
        ExceptionKind::WriteFailed,
        ExceptionKind::Gap,
        ExceptionKind::Unmapped,
        ExceptionKind::Lifecycle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionKind::Conflict => "conflict",
            ExceptionKind::OwnershipViolation => "ownership_violation",
            ExceptionKind::Validation => "validation",
            ExceptionKind::WriteFailed => "write_failed",
            ExceptionKind::Gap => "gap",
            ExceptionKind::Unmapped => "unmapped",
            ExceptionKind::Lifecycle => "lifecycle",
        }
    }
}

impl fmt::Display for ExceptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExceptionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExceptionKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = ExceptionKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown exception kind `{s}` (one of: {})", all.join(", "))
            })
    }
}

/// Where an exception stands in review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionStatus {
    /// Waiting for a person.
    Open,
    /// A person resolved it.
    Resolved,
    /// The rules resolved it on the spot (e.g. `crm_wins`); kept as the audit trail.
    AutoResolved,
    /// Both sides came to agree on their own while it was open.
    Converged,
}

impl ExceptionStatus {
    pub const ALL: [ExceptionStatus; 4] = [
        ExceptionStatus::Open,
        ExceptionStatus::Resolved,
        ExceptionStatus::AutoResolved,
        ExceptionStatus::Converged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionStatus::Open => "open",
            ExceptionStatus::Resolved => "resolved",
            ExceptionStatus::AutoResolved => "auto_resolved",
            ExceptionStatus::Converged => "converged",
        }
    }
}

impl fmt::Display for ExceptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExceptionStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExceptionStatus::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown status `{s}` (one of: open, resolved, auto_resolved, converged)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(raw: &str, scale: u8) -> Value {
        Value::from_text(ValueKind::Number { scale }, raw).unwrap()
    }

    #[test]
    fn numbers_normalise_to_their_scale() {
        assert_eq!(num("100", 2), num("100.0", 2));
        assert_eq!(num("100", 2), num("\"100.00\"".trim_matches('"'), 2));
        assert_eq!(
            Value::from_json(ValueKind::Number { scale: 2 }, &serde_json::json!(100.0)).unwrap(),
            num("100.00", 2)
        );
        assert_eq!(num("1e2", 2), num("100", 2));
        assert_eq!(num("0.005", 2).to_text().unwrap(), "0.01");
        assert_eq!(num("-0.005", 2).to_text().unwrap(), "-0.01");
        assert_eq!(num("-12.344", 2).to_text().unwrap(), "-12.34");
        assert_eq!(num("12", 0).to_text().unwrap(), "12");
        assert_eq!(num(".5", 1).to_text().unwrap(), "0.5");
        assert!(Value::from_text(ValueKind::Number { scale: 2 }, "12a").is_err());
        assert!(Value::from_text(ValueKind::Number { scale: 2 }, ".").is_err());
        assert!(Value::from_text(ValueKind::Number { scale: 2 }, "1e").is_err());
        assert!(Value::from_text(ValueKind::Number { scale: 18 }, "1e40").is_err());
    }

    #[test]
    fn values_follow_a_change_of_kind() {
        let at0 = num("100", 0);
        assert_eq!(
            at0.to_kind(ValueKind::Number { scale: 2 }).unwrap(),
            num("100.00", 2)
        );
        assert_eq!(
            num("1.25", 2)
                .to_kind(ValueKind::Number { scale: 1 })
                .unwrap(),
            num("1.3", 1)
        );
        assert_eq!(
            Value::Text("2026-01-31".into())
                .to_kind(ValueKind::Date)
                .unwrap(),
            Value::from_text(ValueKind::Date, "2026-01-31").unwrap()
        );
        assert!(Value::Text("x".into()).to_kind(ValueKind::Boolean).is_err());
    }

    #[test]
    fn empty_text_is_null() {
        assert_eq!(Value::from_text(ValueKind::Text, "").unwrap(), Value::Null);
        assert_eq!(
            Value::from_json(ValueKind::Text, &serde_json::json!("")).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn kinds_round_trip_through_their_tag() {
        for kind in [
            ValueKind::Text,
            ValueKind::Number { scale: 0 },
            ValueKind::Number { scale: 18 },
            ValueKind::Boolean,
            ValueKind::Date,
            ValueKind::Picklist,
        ] {
            assert_eq!(ValueKind::from_tag(&kind.tag()), Some(kind));
        }
        assert_eq!(ValueKind::from_tag("number:19"), None);
    }

    #[test]
    fn limits_print_in_their_shortest_form() {
        let show = |raw: &str| {
            Decimal::parse(raw, ValueKind::MAX_SCALE)
                .unwrap()
                .shortest()
                .to_string()
        };
        assert_eq!(show("50"), "50");
        assert_eq!(show("12.5"), "12.5");
        assert_eq!(show("0.125"), "0.125");
        assert_eq!(show("-3.10"), "-3.1");
        assert_eq!(show("0"), "0");
    }

    proptest::proptest! {
        #[test]
        fn large_decimals_round_trip_or_are_refused(digits in "[0-9]{30,40}(\\.[0-9]{0,20})?", scale in 0u8..=18) {
            if let Ok(d) = Decimal::parse(&digits, scale) {
                proptest::prop_assert_eq!(Decimal::parse(&d.to_string(), scale).unwrap(), d);
            }
        }

        #[test]
        fn decimal_text_round_trips(units in proptest::num::i64::ANY, scale in 0u8..=18) {
            let d = Decimal { units: i128::from(units), scale };
            proptest::prop_assert_eq!(Decimal::parse(&d.to_string(), scale).unwrap(), d);
        }

        #[test]
        fn the_shortest_form_is_the_same_number(units in proptest::num::i64::ANY, scale in 0u8..=18) {
            let d = Decimal { units: i128::from(units), scale };
            let short = d.shortest();
            proptest::prop_assert_eq!(Decimal::parse(&short.to_string(), scale).unwrap(), d);
            proptest::prop_assert!(!short.to_string().contains('.') || !short.to_string().ends_with('0'));
        }

        #[test]
        fn parsing_never_panics(raw in ".{0,40}", scale in 0u8..=18) {
            let _ = Decimal::parse(&raw, scale);
        }
    }
}
