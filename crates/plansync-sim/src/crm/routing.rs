//! What every request goes through around routing, so each route is declared once:
//!
//! - one trailing slash is dropped from the path before routing: the REST API Developer Guide
//!   writes most resources both ways (`…/query/?q=`, `…/sobjects/`, `…/limits/`,
//!   `…/jobs/ingest/{id}/batches/`), and clients such as simple-salesforce always send the
//!   slash;
//! - a known path asked with a method it does not take answers Salesforce's 405 body,
//!   `[{"errorCode":"METHOD_NOT_ALLOWED","message":"HTTP Method 'PUT' not allowed. Allowed are
//!   HEAD,GET,POST"}]` (unknown paths already answer the `NOT_FOUND` body from the fallback).

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::Response;

use super::http::sf_error;

/// Middleware wrapped around the whole router (outside it, so the rewritten path is the one
/// routed).
pub async fn normalize(mut req: Request, next: Next) -> Response {
    if let Some(uri) = without_trailing_slash(req.uri()) {
        *req.uri_mut() = uri;
    }
    let method = req.method().to_string();
    let response = next.run(req).await;
    // axum's own 405 has no body and no content type; a handler's answers always have one.
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let allow = response
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut out = sf_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        &format!("HTTP Method '{method}' not allowed. Allowed are {allow}"),
    );
    if let Ok(v) = HeaderValue::from_str(&allow) {
        out.headers_mut().insert(header::ALLOW, v);
    }
    out
}

/// The URI with one trailing slash removed from its path (query kept); `None` when there is
/// none to remove (and for `/` itself).
fn without_trailing_slash(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty())?;
    let rebuilt = match uri.query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(rebuilt.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(s: &str) -> Option<String> {
        let uri: Uri = s.parse().ok()?;
        without_trailing_slash(&uri).map(|u| u.to_string())
    }

    #[test]
    fn one_trailing_slash_goes_and_the_query_stays() {
        assert_eq!(
            strip("/services/data/v59.0/query/?q=SELECT+Id").as_deref(),
            Some("/services/data/v59.0/query?q=SELECT+Id")
        );
        assert_eq!(strip("/a/b/").as_deref(), Some("/a/b"));
        assert_eq!(strip("/a//").as_deref(), Some("/a/"));
        assert_eq!(strip("/"), None);
        assert_eq!(strip("/a/b"), None);
    }
}
