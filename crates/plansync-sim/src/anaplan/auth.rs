//! The auth service: `POST /token/authenticate` (Basic and CA certificate), `/token/refresh`,
//! `/token/validate`, `/token/logout`, and the token check of every Integration API call.
//!
//! Certificate authentication follows Anaplan: the `Authorization: CACertificate <b64>` header
//! carries the certificate (base64 of the PEM text, or bare base64 DER), the body carries
//! `encodedData` (at least 100 random bytes) and `encodedSignedData` (RSA PKCS#1 v1.5 SHA-512
//! over those bytes). The certificate must be within its validity dates and signed by one of
//! the configured CAs, and its subject's e-mail address (or common name) must be a configured
//! user. With `"encodedDataFormat":"v2"` the data starts with an 8-byte big-endian Unix-seconds
//! timestamp that must be within [`V2_SKEW`] of now.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

use super::wire::Req;
use crate::Secret;

/// How far a v2 timestamp may be from the simulator's clock.
pub const V2_SKEW: Duration = Duration::from_secs(300);
/// The least random data a certificate login must sign.
const MIN_ENCODED_DATA: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("CA certificate {0}: not a PEM certificate")]
    BadCa(usize),
}

pub struct User {
    pub email: String,
    password: Secret,
    /// 32 lowercase hex digits, derived from the e-mail address so it is stable.
    pub guid: String,
}

impl User {
    pub fn new(email: &str, password: Secret) -> User {
        let d = digest::digest(&digest::SHA256, email.to_ascii_lowercase().as_bytes());
        let guid = d.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        User {
            email: email.to_string(),
            password,
            guid,
        }
    }
}

struct Token {
    token_id: String,
    refresh_id: String,
    user: usize,
    expires_ms: i64,
}

pub struct Auth {
    pub users: Vec<User>,
    /// DER of each trusted CA certificate.
    cas: Vec<Vec<u8>>,
    ttl: Duration,
    customer_guid: String,
    /// Live tokens by value. A std mutex: lookups and inserts only, never held across await.
    tokens: Mutex<HashMap<String, Token>>,
    rng: SystemRandom,
    /// Every sign-in refused as bad credentials (a changed password, a disabled account),
    /// by [`super::SimHandle::refuse_credentials`].
    pub refuse_all: std::sync::atomic::AtomicBool,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn failure(code: StatusCode, status: &str, message: &str) -> Response {
    (
        code,
        axum::Json(json!({"status": status, "statusMessage": message})),
    )
        .into_response()
}

fn bad_header() -> Response {
    failure(
        StatusCode::BAD_REQUEST,
        "FAILURE_BAD_HEADER",
        "Invalid header. Verify the header.",
    )
}

fn bad_credential(message: &str) -> Response {
    failure(StatusCode::UNAUTHORIZED, "FAILURE_BAD_CREDENTIAL", message)
}

/// Equal-time comparison, so a password check does not leak the matching prefix length.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    pub fn new(
        users: Vec<User>,
        ca_pems: &[String],
        ttl: Duration,
        customer_guid: String,
    ) -> Result<Auth, AuthConfigError> {
        let mut cas = Vec::new();
        for (i, pem) in ca_pems.iter().enumerate() {
            let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
                .map_err(|_| AuthConfigError::BadCa(i))?
                .1
                .contents;
            if x509_parser::parse_x509_certificate(&der).is_err() {
                return Err(AuthConfigError::BadCa(i));
            }
            cas.push(der);
        }
        Ok(Auth {
            users,
            cas,
            ttl,
            customer_guid,
            tokens: Mutex::new(HashMap::new()),
            rng: SystemRandom::new(),
            refuse_all: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn random_hex(&self, n: usize) -> String {
        let mut bytes = vec![0u8; n];
        if self.rng.fill(&mut bytes).is_err() {
            fastrand::fill(&mut bytes);
        }
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn uuid(&self) -> String {
        let h = self.random_hex(16);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    fn issue(&self, user: usize) -> Value {
        let value = self.random_hex(32);
        let token = Token {
            token_id: self.uuid(),
            refresh_id: self.uuid(),
            user,
            expires_ms: now_ms() + self.ttl.as_millis() as i64,
        };
        let info = token_info(&value, &token);
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(value, token);
        }
        info
    }

    /// The user behind an `AnaplanAuthToken` or `Bearer` token, if it is live.
    pub fn check(&self, req: &Req) -> Option<usize> {
        let h = req.header(header::AUTHORIZATION)?;
        let token = h
            .strip_prefix("AnaplanAuthToken ")
            .or_else(|| h.strip_prefix("Bearer "))?
            .trim();
        let tokens = self.tokens.lock().ok()?;
        let t = tokens.get(token)?;
        (t.expires_ms > now_ms()).then_some(t.user)
    }

    /// Makes every live token expire now.
    pub fn expire_all(&self) -> usize {
        let Ok(mut tokens) = self.tokens.lock() else {
            return 0;
        };
        let now = now_ms();
        for t in tokens.values_mut() {
            t.expires_ms = t.expires_ms.min(now);
        }
        tokens.len()
    }

    pub fn handle(&self, req: &Req) -> Response {
        let m = &req.method;
        match req.path.as_str() {
            "/token/authenticate" if m == "POST" => self.authenticate(req),
            "/token/refresh" if m == "POST" => self.refresh(req),
            "/token/validate" if m == "GET" => self.validate(req),
            "/token/logout" if m == "POST" => self.logout(req),
            "/token/authenticate" | "/token/refresh" | "/token/validate" | "/token/logout" => {
                super::wire::method_not_allowed(&req.path)
            }
            _ => super::wire::not_found(&req.path),
        }
    }

    fn authenticate(&self, req: &Req) -> Response {
        let Some(h) = req.header(header::AUTHORIZATION) else {
            return bad_header();
        };
        if self.refuse_all.load(std::sync::atomic::Ordering::Relaxed) {
            return bad_credential("Invalid username or password.");
        }
        let user = if let Some(b64) = h.strip_prefix("Basic ") {
            let Some((email, password)) = STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| {
                    s.split_once(':')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                })
            else {
                return bad_header();
            };
            let found = self.users.iter().position(|u| {
                u.email.eq_ignore_ascii_case(&email)
                    & same(u.password.expose().as_bytes(), password.as_bytes())
            });
            match found {
                Some(u) => u,
                None => return bad_credential("Invalid username or password."),
            }
        } else if let Some(b64) = h.strip_prefix("CACertificate ") {
            match self.certificate_user(b64, req) {
                Ok(u) => u,
                Err(resp) => return resp,
            }
        } else {
            return bad_header();
        };
        let body = json!({
            "meta": {"validationUrl": format!("{}/token/validate", req.base)},
            "status": "SUCCESS",
            "statusMessage": "Login successful",
            "tokenInfo": self.issue(user),
        });
        (StatusCode::CREATED, axum::Json(body)).into_response()
    }

    fn certificate_user(&self, header_b64: &str, req: &Req) -> Result<usize, Response> {
        let compact: String = header_b64.chars().filter(|c| !c.is_whitespace()).collect();
        let raw = STANDARD.decode(compact).map_err(|_| bad_header())?;
        let der = if raw.starts_with(b"-----BEGIN") {
            x509_parser::pem::parse_x509_pem(&raw)
                .map_err(|_| bad_credential("Invalid certificate."))?
                .1
                .contents
        } else {
            raw
        };
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| bad_credential("Invalid certificate."))?;
        if !cert.validity().is_valid() {
            return Err(bad_credential(
                "The certificate has expired or is not yet valid.",
            ));
        }
        let trusted = self.cas.iter().any(|ca_der| {
            x509_parser::parse_x509_certificate(ca_der).is_ok_and(|(_, ca)| {
                ca.subject().as_raw() == cert.issuer().as_raw()
                    && ca.validity().is_valid()
                    && cert.verify_signature(Some(ca.public_key())).is_ok()
            })
        });
        if !trusted {
            return Err(bad_credential(
                "The certificate is not issued by a trusted authority.",
            ));
        }

        let body: Value = serde_json::from_slice(&req.body).map_err(|_| bad_header())?;
        let field = |k: &str| body.get(k).and_then(Value::as_str);
        let (Some(data_b64), Some(sig_b64)) = (field("encodedData"), field("encodedSignedData"))
        else {
            return Err(bad_header());
        };
        let data = STANDARD.decode(data_b64.trim()).map_err(|_| bad_header())?;
        let sig = STANDARD.decode(sig_b64.trim()).map_err(|_| bad_header())?;
        if data.len() < MIN_ENCODED_DATA {
            return Err(bad_credential(
                "The encoded data must be at least 100 bytes.",
            ));
        }
        match field("encodedDataFormat") {
            None | Some("v1") => {}
            Some("v2") => {
                let ts = data
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                let now = chrono::Utc::now().timestamp().max(0) as u64;
                if now.abs_diff(ts) > V2_SKEW.as_secs() {
                    return Err(bad_credential(
                        "The encoded data timestamp is out of range.",
                    ));
                }
            }
            Some(_) => return Err(bad_header()),
        }
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA512,
            cert.public_key().subject_public_key.data.as_ref(),
        );
        key.verify(&data, &sig)
            .map_err(|_| bad_credential("The signature does not match the certificate."))?;

        let subject = cert.subject();
        let names: Vec<&str> = subject
            .iter_email()
            .chain(subject.iter_common_name())
            .filter_map(|a| a.as_str().ok())
            .collect();
        self.users
            .iter()
            .position(|u| names.iter().any(|n| n.eq_ignore_ascii_case(&u.email)))
            .ok_or_else(|| bad_credential("The certificate is not registered to a user."))
    }

    /// The token of a `/token/*` call: only the AnaplanAuthToken scheme is accepted there.
    fn own_token(&self, req: &Req, bearer_status: StatusCode) -> Result<String, Response> {
        let h = req.header(header::AUTHORIZATION).unwrap_or("");
        match h.strip_prefix("AnaplanAuthToken ") {
            Some(t) => Ok(t.trim().to_string()),
            None if bearer_status == StatusCode::UNAUTHORIZED => {
                Err(bad_credential("Invalid token."))
            }
            None => Err(bad_header()),
        }
    }

    fn live<R>(&self, value: &str, f: impl FnOnce(&mut Token) -> R) -> Option<R> {
        let mut tokens = self.tokens.lock().ok()?;
        let t = tokens.get_mut(value)?;
        if t.expires_ms <= now_ms() {
            tokens.remove(value);
            return None;
        }
        Some(f(t))
    }

    fn refresh(&self, req: &Req) -> Response {
        let value = match self.own_token(req, StatusCode::BAD_REQUEST) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let ttl = self.ttl.as_millis() as i64;
        match self.live(&value, |t| {
            t.expires_ms = now_ms() + ttl;
            token_info(&value, t)
        }) {
            Some(info) => axum::Json(json!({
                "meta": {"validationUrl": format!("{}/token/validate", req.base)},
                "status": "SUCCESS",
                "statusMessage": "Token refreshed",
                "tokenInfo": info,
            }))
            .into_response(),
            None => bad_credential("Token is invalid or expired."),
        }
    }

    fn validate(&self, req: &Req) -> Response {
        let value = match self.own_token(req, StatusCode::BAD_REQUEST) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let Some((expires, token_id, user)) =
            self.live(&value, |t| (t.expires_ms, t.token_id.clone(), t.user))
        else {
            return bad_credential("Token is invalid or expired.");
        };
        let (email, guid) = self
            .users
            .get(user)
            .map(|u| (u.email.clone(), u.guid.clone()))
            .unwrap_or_default();
        axum::Json(json!({
            "meta": {"validationUrl": format!("{}/token/validate", req.base)},
            "status": "SUCCESS",
            "statusMessage": "Token validated",
            "tokenInfo": {"expiresAt": expires, "tokenId": token_id},
            "userInfo": {"userGuid": guid, "userId": email, "customerGuid": self.customer_guid},
        }))
        .into_response()
    }

    fn logout(&self, req: &Req) -> Response {
        let value = match self.own_token(req, StatusCode::UNAUTHORIZED) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if self.live(&value, |_| ()).is_none() {
            return bad_credential("Token is invalid or expired.");
        }
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(&value);
        }
        StatusCode::NO_CONTENT.into_response()
    }
}

fn token_info(value: &str, t: &Token) -> Value {
    json!({
        "tokenId": t.token_id,
        "tokenValue": value,
        "expiresAt": t.expires_ms,
        "refreshTokenId": t.refresh_id,
    })
}
