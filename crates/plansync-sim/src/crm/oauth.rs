//! The OAuth token endpoint (client credentials and the JWT bearer flow), token revocation, and
//! the access tokens every other endpoint checks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use serde_json::{Value, json};
use x509_parser::prelude::FromDer;

use super::Sim;
use super::http::{form_decode, json_response};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no PUBLIC KEY or CERTIFICATE block in the PEM text")]
    NoPem,
    #[error("the PEM block is not a valid public key or certificate")]
    BadDer,
}

/// Reads an RSA public key (SPKI PEM or an X.509 certificate PEM) into the PKCS#1 form ring's
/// verifier takes.
pub fn rsa_public_key(pem: &str) -> Result<Vec<u8>, KeyError> {
    if let Ok(spki) = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()) {
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref())
            .map_err(|_| KeyError::BadDer)?;
        return Ok(info.subject_public_key.data.to_vec());
    }
    if let Ok(cert) = CertificateDer::from_pem_slice(pem.as_bytes()) {
        let (_, parsed) =
            x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| KeyError::BadDer)?;
        return Ok(parsed.public_key().subject_public_key.data.to_vec());
    }
    Err(KeyError::NoPem)
}

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub user: u32,
    pub expires: Instant,
    pub revoked: bool,
}

/// Issued access tokens. Guarded by a std mutex: lookups are map reads, nothing awaits inside.
#[derive(Debug, Default)]
pub struct Tokens {
    map: HashMap<String, TokenInfo>,
}

impl Tokens {
    pub fn issue(&mut self, org_id: &str, user: u32, ttl: Duration) -> String {
        let mut token = String::with_capacity(112);
        token.push_str(org_id.get(..15).unwrap_or(org_id));
        token.push_str("!AQ");
        for _ in 0..96 {
            token.push(fastrand::alphanumeric());
        }
        self.map.insert(
            token.clone(),
            TokenInfo {
                user,
                expires: Instant::now() + ttl,
                revoked: false,
            },
        );
        token
    }

    /// The user of a live token.
    pub fn check(&self, token: &str) -> Option<u32> {
        self.map
            .get(token)
            .filter(|t| !t.revoked && t.expires > Instant::now())
            .map(|t| t.user)
    }

    pub fn revoke(&mut self, token: &str) -> bool {
        match self.map.get_mut(token) {
            Some(t) => {
                t.revoked = true;
                true
            }
            None => false,
        }
    }

    pub fn revoke_all(&mut self) {
        for t in self.map.values_mut() {
            t.revoked = true;
        }
    }

    /// Makes every token expire now (tests of expiry without waiting).
    pub fn expire_all(&mut self) {
        let now = Instant::now();
        for t in self.map.values_mut() {
            t.expires = now;
        }
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// `POST /services/oauth2/token`.
pub async fn token(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(form) = form_decode(&body) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "invalid request body",
        );
    };
    let param = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match param("grant_type") {
        Some("client_credentials") => {
            let basic = basic_credentials(&headers);
            let (id, secret) = match (param("client_id"), param("client_secret"), &basic) {
                (Some(id), Some(secret), _) => (id.to_string(), secret.to_string()),
                (_, _, Some((id, secret))) => (id.clone(), secret.clone()),
                _ => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_client_id",
                        "client identifier invalid",
                    );
                }
            };
            let Some((_, expected)) = sim.config.clients.iter().find(|(c, _)| *c == id) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client_id",
                    "client identifier invalid",
                );
            };
            if !constant_time_eq(expected.expose().as_bytes(), secret.as_bytes()) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client",
                    "invalid client credentials",
                );
            }
            let user = sim.org_lock().run_as;
            success(&sim, user, expected.expose())
        }
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let Some(assertion) = param("assertion") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "invalid assertion",
                );
            };
            match verify_jwt(&sim, assertion) {
                Ok((user, client_secret)) => success(&sim, user, &client_secret),
                Err(resp) => resp,
            }
        }
        Some(_) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant type not supported",
        ),
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant type not supported",
        ),
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn success(sim: &Sim, user: u32, signing_secret: &str) -> Response {
    let (org_id, user_id) = {
        let org = sim.org_lock();
        (org.org_id.clone(), org.user_id(user))
    };
    let access_token = sim.tokens_lock().issue(&org_id, user, sim.config.token_ttl);
    let issued_at = super::org::now_ms().to_string();
    let id = format!("{}/id/{org_id}/{user_id}", sim.instance_url);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, signing_secret.as_bytes());
    let signature = STANDARD.encode(ring::hmac::sign(
        &key,
        format!("{id}{issued_at}").as_bytes(),
    ));
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "instance_url": sim.instance_url,
            "id": id,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": signature,
            "scope": "api",
        }),
    )
}

fn b64url(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()
}

/// Checks a JWT bearer assertion: RS256 signature by a configured key, `iss` a known client,
/// `sub` a known username, `aud` accepted, `exp` in the future. Returns the user and the
/// client's secret (to sign the response).
fn verify_jwt(sim: &Sim, assertion: &str) -> Result<(u32, String), Response> {
    let invalid = || {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "invalid assertion",
        )
    };
    let mut parts = assertion.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let header: Value = b64url(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(invalid)?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(invalid());
    }
    let signature = b64url(s).ok_or_else(invalid)?;
    let signed = &assertion[..h.len() + 1 + p.len()];
    let verified = sim.jwt_keys.iter().any(|key| {
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
            .verify(signed.as_bytes(), &signature)
            .is_ok()
    });
    if !verified {
        return Err(invalid());
    }
    let claims: Value = b64url(p)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(invalid)?;
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    let Some((_, secret)) = sim.config.clients.iter().find(|(c, _)| c == iss) else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client_id",
            "client identifier invalid",
        ));
    };
    let aud_ok = |a: &str| {
        let a = a.trim_end_matches('/');
        a == sim.instance_url
            || sim
                .config
                .jwt_audiences
                .iter()
                .any(|x| x.trim_end_matches('/') == a)
    };
    let aud_valid = match claims.get("aud") {
        Some(Value::String(a)) => aud_ok(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(aud_ok),
        _ => false,
    };
    if !aud_valid {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "audience is invalid",
        ));
    }
    let now = super::org::now_ms() / 1000;
    match claims.get("exp").and_then(Value::as_i64) {
        Some(exp) if exp > now => {}
        _ => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "expired authorization code",
            ));
        }
    }
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let Some(user) = sim.org_lock().user_by_name(sub) else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "user hasn't approved this consumer",
        ));
    };
    Ok((user, secret.expose().to_string()))
}

/// `POST /services/oauth2/revoke` (form `token=…`) and `GET …?token=…`.
pub async fn revoke(State(sim): State<Arc<Sim>>, uri: axum::http::Uri, body: Bytes) -> Response {
    let mut pairs = form_decode(&body).unwrap_or_default();
    if let Some(q) = uri.query() {
        pairs.extend(form_decode(q.as_bytes()).unwrap_or_default());
    }
    let token = pairs
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.clone());
    match token {
        Some(t) if sim.tokens_lock().revoke(&t) => StatusCode::OK.into_response(),
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_token_type",
            "this token type is not supported",
        ),
    }
}
