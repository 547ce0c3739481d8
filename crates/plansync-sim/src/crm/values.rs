//! Field values: compact storage, parsing from JSON writes and CSV cells, and rendering for REST
//! (`+0000` datetimes) and change events (`Z` datetimes).

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, TimeZone, Utc};
use serde_json::Value;

use super::ids;
use super::schema::{FieldDef, FieldType};

/// One stored value. Sixteen bytes or so, with strings boxed, so large orgs stay compact.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    Num(f64),
    /// Days from the common era (chrono's `num_days_from_ce`).
    Date(i32),
    /// Milliseconds since the Unix epoch, UTC.
    DateTime(i64),
    Str(Box<str>),
}

impl Val {
    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }
}

/// A per-field failure, shaped like Salesforce's `errors[]` entries.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub status_code: &'static str,
    pub message: String,
    pub fields: Vec<String>,
}

impl FieldError {
    pub fn new(status_code: &'static str, message: impl Into<String>, fields: &[&str]) -> Self {
        FieldError {
            status_code,
            message: message.into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({"statusCode": self.status_code, "message": self.message, "fields": self.fields})
    }
}

pub fn date_from_days(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days)
}

pub fn parse_date(s: &str) -> Option<i32> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(|d| d.num_days_from_ce())
}

/// Accepts RFC 3339 (`Z` or `+00:00`) and Salesforce's `+0000` form, with or without millis.
pub fn parse_datetime(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.timestamp_millis());
        }
    }
    None
}

/// `2025-01-01T00:00:00.000+0000`, as REST and SOQL results print datetimes.
pub fn rest_datetime(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string(),
        None => String::new(),
    }
}

/// `2025-01-01T00:00:00.000Z`, as change events print datetimes.
pub fn event_datetime(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => String::new(),
    }
}

pub fn date_string(days: i32) -> String {
    date_from_days(days)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Renders a value for REST (`event == false`) or a change event.
pub fn to_json(v: &Val, event: bool) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => serde_json::Number::from_f64(*n)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Val::Date(d) => Value::String(date_string(*d)),
        Val::DateTime(ms) => Value::String(if event {
            event_datetime(*ms)
        } else {
            rest_datetime(*ms)
        }),
        Val::Str(s) => Value::String(s.to_string()),
    }
}

fn deserialize_error(kind: &str, json: &Value) -> FieldError {
    let (token, text) = match json {
        Value::String(s) => ("VALUE_STRING", s.clone()),
        Value::Bool(b) => (if *b { "VALUE_TRUE" } else { "VALUE_FALSE" }, b.to_string()),
        Value::Number(n) => ("VALUE_NUMBER_INT", n.to_string()),
        Value::Array(_) => ("START_ARRAY", "[".into()),
        Value::Object(_) => ("START_OBJECT", "{".into()),
        Value::Null => ("VALUE_NULL", "null".into()),
    };
    FieldError::new(
        "JSON_PARSER_ERROR",
        format!(
            "Cannot deserialize instance of {kind} from {token} value {text} or request may be missing a required field"
        ),
        &[],
    )
}

/// The characters a text field holds (what describe reports as its `length`).
pub const MAX_TEXT: usize = 255;

/// Checks and converts a JSON value written to `field`. References are checked for shape and
/// target here; whether the target exists is the org's business.
pub fn from_json(field: &FieldDef, json: &Value) -> Result<Val, FieldError> {
    let name = field.name.as_str();
    let val = match (&field.ty, json) {
        (_, Value::Null) => Val::Null,
        (FieldType::String, Value::String(s)) if s.is_empty() => Val::Null,
        (FieldType::String, Value::String(s)) if s.chars().count() > MAX_TEXT => {
            let head: String = s.chars().take(20).collect();
            return Err(FieldError::new(
                "STRING_TOO_LONG",
                format!("{name}: data value too large: {head}... (max length={MAX_TEXT})"),
                &[name],
            ));
        }
        (FieldType::String, Value::String(s)) => Val::Str(s.as_str().into()),
        (FieldType::String, Value::Number(n)) => Val::Str(n.to_string().into()),
        (FieldType::String, Value::Bool(b)) => Val::Str(b.to_string().into()),
        (t, Value::Number(n)) if t.is_numeric() => match n.as_f64() {
            Some(f) => Val::Num(f),
            None => return Err(deserialize_error("double", json)),
        },
        (t, Value::String(s)) if t.is_numeric() => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => Val::Num(f),
            _ if s.is_empty() => Val::Null,
            _ => return Err(deserialize_error("double", json)),
        },
        (FieldType::Boolean, Value::Bool(b)) => Val::Bool(*b),
        (FieldType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => Val::Bool(true),
        (FieldType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => {
            Val::Bool(false)
        }
        (FieldType::Date, Value::String(s)) if s.is_empty() => Val::Null,
        (FieldType::Date, Value::String(s)) => match parse_date(s) {
            Some(d) => Val::Date(d),
            None => return Err(deserialize_error("date", json)),
        },
        (FieldType::DateTime, Value::String(s)) if s.is_empty() => Val::Null,
        (FieldType::DateTime, Value::String(s)) => match parse_datetime(s) {
            Some(ms) => Val::DateTime(ms),
            None => return Err(deserialize_error("datetime", json)),
        },
        (FieldType::Picklist(values), Value::String(s)) => {
            if s.is_empty() {
                Val::Null
            } else if values.iter().any(|v| v == s) {
                Val::Str(s.as_str().into())
            } else {
                return Err(FieldError::new(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    format!(
                        "{}: bad value for restricted picklist field: {s}",
                        field.name
                    ),
                    &[name],
                ));
            }
        }
        (FieldType::Reference(_) | FieldType::Id, Value::String(s)) if s.is_empty() => Val::Null,
        (FieldType::Reference(_) | FieldType::Id, Value::String(s)) => {
            if !ids::looks_like_id(s) {
                return Err(FieldError::new(
                    "MALFORMED_ID",
                    format!("{}: id value of incorrect type: {s}", field.name),
                    &[name],
                ));
            }
            Val::Str(s.as_str().into())
        }
        (FieldType::Boolean, _) => return Err(deserialize_error("boolean", json)),
        (FieldType::Date, _) => return Err(deserialize_error("date", json)),
        (FieldType::DateTime, _) => return Err(deserialize_error("datetime", json)),
        (t, _) if t.is_numeric() => return Err(deserialize_error("double", json)),
        _ => return Err(deserialize_error("string", json)),
    };
    if val.is_null() && field.required {
        return Err(FieldError::new(
            "REQUIRED_FIELD_MISSING",
            format!("Required fields are missing: [{name}]"),
            &[name],
        ));
    }
    Ok(val)
}

/// Converts a Bulk API CSV cell: empty means "leave as is" (`None`), `#N/A` means null.
pub fn from_csv(field: &FieldDef, cell: &str) -> Result<Option<Val>, FieldError> {
    if cell.is_empty() {
        return Ok(None);
    }
    let json = if cell == "#N/A" {
        Value::Null
    } else {
        match field.ty {
            FieldType::Boolean => match cell.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Value::Bool(true),
                "false" | "0" | "no" => Value::Bool(false),
                _ => Value::String(cell.into()),
            },
            _ => Value::String(cell.into()),
        }
    };
    from_json(field, &json).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_print_both_ways_and_parse_back() {
        let ms = parse_datetime("2025-01-01T10:20:30.123Z").unwrap_or_default();
        assert_eq!(rest_datetime(ms), "2025-01-01T10:20:30.123+0000");
        assert_eq!(event_datetime(ms), "2025-01-01T10:20:30.123Z");
        assert_eq!(parse_datetime(&rest_datetime(ms)), Some(ms));
        assert_eq!(parse_datetime("2025-01-01T10:20:30+00:00"), Some(ms - 123));
        assert_eq!(parse_datetime("yesterday"), None);
    }
}
