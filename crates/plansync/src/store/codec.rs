//! Conversions between domain values and the TEXT columns of the store (conventions in
//! `schema.rs`). Reading goes through here so that a hand-edited or damaged cell becomes a
//! `StoreError::Corrupt` naming the table and column, never a panic.

use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::Row;
use rusqlite::types::ValueRef;

use super::StoreError;
use crate::model::{Value, ValueKind};

/// A timestamp as stored: fixed-width RFC 3339 UTC, so text order is time order.
pub(crate) fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A timestamp as the shadow stores it: microseconds since the Unix epoch (UTC). Eight bytes
/// against the text form's 27, in the table that holds six rows per record (the
/// `shadow_readable` view shows them as RFC 3339).
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// Reads a time stored by [`micros`]; NULL is `None`. Anything else in the cell (text left by
/// a hand edit, an out-of-range number) is reported as corrupt, naming the column.
pub(crate) fn opt_micros_at(
    row: &Row<'_>,
    index: usize,
    table: &'static str,
    column: &'static str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let expected = "microseconds since 1970 (UTC)";
    match row.get_ref(index)? {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(raw) => DateTime::from_timestamp_micros(raw)
            .map(Some)
            .ok_or_else(|| corrupt(table, column, raw.to_string(), expected)),
        ValueRef::Real(raw) => Err(corrupt(table, column, raw.to_string(), expected)),
        ValueRef::Text(raw) | ValueRef::Blob(raw) => Err(corrupt(
            table,
            column,
            String::from_utf8_lossy(raw).into_owned(),
            expected,
        )),
    }
}

/// [`opt_micros_at`] for a column that is never NULL.
pub(crate) fn micros_at(
    row: &Row<'_>,
    index: usize,
    table: &'static str,
    column: &'static str,
) -> Result<DateTime<Utc>, StoreError> {
    opt_micros_at(row, index, table, column)?
        .ok_or_else(|| corrupt(table, column, "NULL".into(), "a time"))
}

pub(crate) fn parse_ts(
    table: &'static str,
    column: &'static str,
    raw: String,
) -> Result<DateTime<Utc>, StoreError> {
    match DateTime::parse_from_rfc3339(&raw) {
        Ok(at) => Ok(at.with_timezone(&Utc)),
        Err(_) => Err(corrupt(table, column, raw, "an RFC 3339 timestamp")),
    }
}

pub(crate) fn parse_opt_ts(
    table: &'static str,
    column: &'static str,
    raw: Option<String>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    raw.map(|raw| parse_ts(table, column, raw)).transpose()
}

pub(crate) fn parse_kind(
    table: &'static str,
    column: &'static str,
    raw: String,
) -> Result<ValueKind, StoreError> {
    ValueKind::from_tag(&raw).ok_or_else(|| corrupt(table, column, raw, "a value kind tag"))
}

/// Parses a stored value back with its kind; NULL is `Value::Null`.
pub(crate) fn parse_value(
    table: &'static str,
    column: &'static str,
    kind: ValueKind,
    raw: Option<String>,
) -> Result<Value, StoreError> {
    match raw {
        None => Ok(Value::Null),
        Some(raw) => Value::from_text(kind, &raw).map_err(|_| {
            let expected = format!("a {} value", kind.tag());
            corrupt(table, column, raw, &expected)
        }),
    }
}

/// Parses an enumeration stored as its `as_str` text.
pub(crate) fn parse_enum<T: FromStr>(
    table: &'static str,
    column: &'static str,
    raw: String,
) -> Result<T, StoreError> {
    raw.parse()
        .map_err(|_| corrupt(table, column, raw, "a known value"))
}

pub(crate) fn corrupt(
    table: &'static str,
    column: &'static str,
    value: String,
    expected: &str,
) -> StoreError {
    StoreError::Corrupt {
        table,
        column,
        value,
        expected: expected.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_are_fixed_width_so_text_order_is_time_order() {
        let whole = Utc.with_ymd_and_hms(2026, 11, 1, 9, 30, 5).unwrap();
        let later = whole + chrono::Duration::milliseconds(500);
        assert_eq!(ts(whole), "2026-11-01T09:30:05.000000Z");
        assert!(ts(whole) < ts(later));
        assert_eq!(parse_ts("t", "c", ts(later)).unwrap(), later);
    }

    #[test]
    fn bad_cells_are_reported_as_corrupt() {
        let err = parse_ts("exceptions", "created_at", "yesterday".into()).unwrap_err();
        assert!(
            err.to_string()
                .contains("exceptions.created_at holds `yesterday`")
        );
        let err = parse_value(
            "shadow",
            "base_value",
            ValueKind::Number { scale: 2 },
            Some("x".into()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("number:2"));
        assert_eq!(
            parse_value("shadow", "base_value", ValueKind::Text, None).unwrap(),
            Value::Null
        );
    }
}
