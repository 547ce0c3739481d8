//! Small HTTP helpers shared by the handlers: Salesforce error bodies, form decoding, API
//! versions in paths, and the `Authorization` / `Sforce-*` headers.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Oldest and newest API versions the simulator answers (`/services/data/vXX.X`).
pub const MIN_VERSION: f64 = 20.0;
pub const MAX_VERSION: f64 = 67.0;
pub const LATEST_VERSION: &str = "67.0";

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF-8"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// `[{"message":…,"errorCode":…}]`, the REST API's error body.
pub fn sf_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, &json!([{"message": message, "errorCode": code}]))
}

pub fn not_found() -> Response {
    sf_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
    )
}

/// `v59.0` → `59.0`, if it is a version the simulator serves.
pub fn api_version(segment: &str) -> Option<String> {
    let number = segment.strip_prefix('v')?;
    let (major, minor) = number.split_once('.')?;
    if major.is_empty()
        || minor.len() != 1
        || !major
            .bytes()
            .chain(minor.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let v: f64 = number.parse().ok()?;
    (MIN_VERSION..=MAX_VERSION)
        .contains(&v)
        .then(|| number.to_string())
}

/// The token of `Authorization: Bearer …` (or `OAuth …`, which some clients send).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The `client=` option of `Sforce-Call-Options`.
pub fn call_client(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("sforce-call-options")?.to_str().ok()?;
    value.split(',').find_map(|opt| {
        let (k, v) = opt.trim().split_once('=')?;
        (k.trim().eq_ignore_ascii_case("client") && !v.trim().is_empty())
            .then(|| v.trim().to_string())
    })
}

/// `com/salesforce/api/<api>/<version>[;client=<client>]`, the change events' `changeOrigin`.
pub fn change_origin(api: &str, version: &str, headers: &HeaderMap) -> String {
    match call_client(headers) {
        Some(c) => format!("com/salesforce/api/{api}/{version};client={c}"),
        None => format!("com/salesforce/api/{api}/{version}"),
    }
}

/// The `batchSize=` of `Sforce-Query-Options`.
pub fn query_batch_size(headers: &HeaderMap) -> Option<usize> {
    let value = headers.get("sforce-query-options")?.to_str().ok()?;
    value.split(',').find_map(|opt| {
        let (k, v) = opt.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case("batchsize") {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// The byte of a Bulk API 2.0 `columnDelimiter` name; `None` for a name it does not have.
pub fn csv_delimiter(name: &str) -> Option<u8> {
    Some(match name {
        "COMMA" => b',',
        "TAB" => b'\t',
        "PIPE" => b'|',
        "SEMICOLON" => b';',
        "CARET" => b'^',
        "BACKQUOTE" => b'`',
        _ => return None,
    })
}

/// Decodes an `application/x-www-form-urlencoded` body; `None` if it is not valid.
pub fn form_decode(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut out = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Some(out)
}

pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_forms() {
        assert_eq!(api_version("v59.0").as_deref(), Some("59.0"));
        assert_eq!(api_version("v99.0"), None);
        assert_eq!(api_version("59.0"), None);
        assert_eq!(api_version("v59"), None);
        let f =
            form_decode(b"grant_type=client_credentials&client_id=a%2Bb&x=1+2").unwrap_or_default();
        assert_eq!(f[1], ("client_id".to_string(), "a+b".to_string()));
        assert_eq!(f[2].1, "1 2");
        assert_eq!(form_decode(b"a=%zz"), None);
    }
}
