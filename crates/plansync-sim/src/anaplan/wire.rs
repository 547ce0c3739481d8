//! The simulator's own wire conventions, written from the public reference: the request as the
//! handlers see it, the `meta`/`status` envelope, paging, and the error bodies.
//!
//! Every collection that is empty is left out of its response (Anaplan drops empty
//! collections, e.g. `failures`, `items`, `chunks`), and every ID is a JSON string.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::model::ModelSlot;

/// Default and maximum page size of paged collections.
pub const MAX_PAGE: usize = 5000;

/// A request, read once: the handlers are plain functions over it.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `http://127.0.0.1:P`, for `next`/`previous` paging links and `meta.schema`.
    pub base: String,
}

impl Req {
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean query flag (`includeAll=true`).
    pub fn flag(&self, key: &str) -> bool {
        self.q(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the client asked for CSV (`Accept: text/csv`, with or without `;escaped=true`).
    pub fn wants_csv(&self) -> bool {
        self.header(header::ACCEPT)
            .is_some_and(|a| a.to_ascii_lowercase().contains("text/csv"))
    }

    pub fn schema(&self, tail: &str) -> String {
        format!("{}/2/0/{tail}", self.base)
    }
}

pub fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    match raw {
        None => Vec::new(),
        Some(q) => url_decode_pairs(q),
    }
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i) {
            Some(b'+') => out.push(b' '),
            Some(b'%') => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            Some(&b) => out.push(b),
            None => break,
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The reason phrase Anaplan puts in `status.message` of an error body.
pub fn reason(code: StatusCode) -> &'static str {
    code.canonical_reason().unwrap_or("Error")
}

/// `{"status":{"code":404,"message":"Not Found"},"path":"/2/0/…","timestamp":"<ISO>"}`.
pub fn error(code: StatusCode, message: &str, path: &str) -> Response {
    let body = json!({
        "status": {"code": code.as_u16(), "message": message},
        "path": path,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    });
    (code, axum::Json(body)).into_response()
}

pub fn not_found(path: &str) -> Response {
    error(StatusCode::NOT_FOUND, "Not Found", path)
}

pub fn bad_request(message: &str, path: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message, path)
}

pub fn method_not_allowed(path: &str) -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", path)
}

/// The body of a 401 on an Integration API call with a missing, unknown or expired token.
pub fn not_authenticated() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"status": {"code": 401, "message": "Not Authenticated."}})),
    )
        .into_response()
}

/// Offset and limit of a paged request.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    /// Reads `limit`/`offset`; `default_all` means "no limit given = everything" (list items).
    pub fn read(req: &Req, default_all: bool) -> Result<Page, Response> {
        let parse = |key: &str| -> Result<Option<usize>, Response> {
            match req.q(key) {
                None | Some("") => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    bad_request(&format!("Invalid value for parameter '{key}'"), &req.path)
                }),
            }
        };
        let offset = parse("offset")?.unwrap_or(0);
        let limit = match parse("limit")? {
            Some(0) => {
                return Err(bad_request(
                    "Invalid value for parameter 'limit'",
                    &req.path,
                ));
            }
            Some(n) => n.min(MAX_PAGE),
            None if default_all => usize::MAX,
            None => MAX_PAGE,
        };
        Ok(Page { offset, limit })
    }

    pub fn range(&self, total: usize) -> std::ops::Range<usize> {
        let start = self.offset.min(total);
        let end = start.saturating_add(self.limit).min(total);
        start..end
    }

    /// `meta.paging` for a page of `count` items out of `total`.
    pub fn meta(&self, req: &Req, count: usize, total: usize) -> Value {
        let mut paging = Map::new();
        paging.insert("currentPageSize".into(), json!(count));
        paging.insert("totalSize".into(), json!(total));
        paging.insert("offset".into(), json!(self.offset));
        if self.limit != usize::MAX {
            let link = |offset: usize| {
                format!(
                    "{}{}?limit={}&offset={offset}",
                    req.base, req.path, self.limit
                )
            };
            if self.offset.saturating_add(count) < total {
                paging.insert("next".into(), json!(link(self.offset + count)));
            }
            if self.offset > 0 {
                paging.insert(
                    "previous".into(),
                    json!(link(self.offset.saturating_sub(self.limit))),
                );
            }
        }
        Value::Object(paging)
    }
}

/// A success body: `{"meta":{"schema",…},"status":{"code":200,"message":"Success"},…fields}`.
/// A field whose value is an empty array is left out.
pub fn envelope(schema: String, paging: Option<Value>, fields: Vec<(&str, Value)>) -> Response {
    ok_json(envelope_value(schema, paging, fields))
}

pub fn envelope_value(schema: String, paging: Option<Value>, fields: Vec<(&str, Value)>) -> Value {
    let mut meta = Map::new();
    if let Some(p) = paging {
        meta.insert("paging".into(), p);
    }
    meta.insert("schema".into(), Value::String(schema));
    let mut body = Map::new();
    body.insert("meta".into(), Value::Object(meta));
    body.insert("status".into(), json!({"code": 200, "message": "Success"}));
    for (k, v) in fields {
        if matches!(&v, Value::Array(a) if a.is_empty()) {
            continue;
        }
        body.insert(k.to_string(), v);
    }
    Value::Object(body)
}

pub fn ok_json(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

pub fn bytes(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// The schema URL of a model-scoped object kind.
pub(super) fn model_schema(req: &Req, slot: &ModelSlot, kind: &str) -> String {
    req.schema(&format!("models/{}/objects/{kind}", slot.id))
}

/// One page of `all` (from the request's `offset`/`limit`) under `key`, with its meta.
pub(super) fn paged(req: &Req, schema: String, key: &str, all: Vec<Value>) -> Response {
    let page = match Page::read(req, false) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let total = all.len();
    let range = page.range(total);
    let list: Vec<Value> = all
        .into_iter()
        .skip(range.start)
        .take(range.len())
        .collect();
    envelope(
        schema,
        Some(page.meta(req, list.len(), total)),
        vec![(key, Value::Array(list))],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("a=1&b=x%20y+z&pages=1%3A2&flag&bad=%zz"));
        assert_eq!(q[0], ("a".into(), "1".into()));
        assert_eq!(q[1], ("b".into(), "x y z".into()));
        assert_eq!(q[2], ("pages".into(), "1:2".into()));
        assert_eq!(q[3], ("flag".into(), "".into()));
        assert_eq!(q[4], ("bad".into(), "%zz".into()));
    }

    #[test]
    fn empty_arrays_are_dropped() {
        let v = envelope_value(
            "s".into(),
            None,
            vec![("failures", json!([])), ("n", json!(1))],
        );
        assert!(v.get("failures").is_none());
        assert_eq!(v["n"], 1);
        assert_eq!(v["status"]["code"], 200);
    }
}
