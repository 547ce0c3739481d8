//! Reading the bodies of the `/__sim/` fault and limit hooks strictly: a field of the wrong
//! type, out of range or unknown is refused with a message naming it (serde's own message for
//! a struct says where the problem is, not which field), so a typo in a test or a curl line is
//! a 400 rather than a setting silently ignored or wrapped around.

use serde_json::{Map, Value};

/// The longest retention or ageing a hook takes. Salesforce keeps change events 72 hours; a
/// year is beyond any test of retention, and a larger figure is a unit mistake.
pub const MAX_SECONDS: u64 = 366 * 24 * 3600;

/// The body as a JSON object with only the `allowed` fields (an empty body is an empty object).
pub fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err(format!("the body must be a JSON object, got {value}"));
    };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "unknown field `{unknown}`, expected {}",
            allowed
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    Ok(map)
}

/// A whole number from 0 to `max`; `None` if absent or null.
pub fn whole(map: &Map<String, Value>, field: &str, max: u64) -> Result<Option<u64>, String> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= max)
            .map(Some)
            .ok_or_else(|| format!("`{field}` must be a whole number from 0 to {max}, got {v}")),
    }
}

/// As [`whole`], but the field must be there.
pub fn required(map: &Map<String, Value>, field: &str, max: u64) -> Result<u64, String> {
    whole(map, field, max)?.ok_or_else(|| format!("`{field}` is missing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named() {
        let m = object(br#"{"count": -1}"#, &["count"]).expect("an object");
        assert_eq!(
            required(&m, "count", 10).expect_err("negative"),
            "`count` must be a whole number from 0 to 10, got -1"
        );
        let m = object(br#"{"count": 2.5}"#, &["count"]).expect("an object");
        assert!(required(&m, "count", 10).is_err());
        let m = object(b"", &["count"]).expect("empty is fine");
        assert_eq!(
            required(&m, "count", 10).expect_err("missing"),
            "`count` is missing"
        );
        assert_eq!(
            object(br#"{"cuont": 1}"#, &["count"]).expect_err("typo"),
            "unknown field `cuont`, expected `count`"
        );
        assert!(object(b"[1]", &["count"]).is_err());
        let m = object(br#"{"count": 3}"#, &["count"]).expect("an object");
        assert_eq!(required(&m, "count", 10), Ok(3));
    }
}
