//! Getting and keeping an Anaplan token: Basic or CA-certificate authentication, refresh before
//! expiry, one fresh authentication when the API refuses the token, or a static token.
//!
//! The token is shared by every clone of a client. Renewing it is single-flight: the first
//! caller that finds it stale takes `gate`, renews, and the others, once they get the gate,
//! find a fresh token and use it, so a burst of calls at expiry costs one auth call, not one
//! each.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::Method;
use reqwest::header::HeaderValue;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{RSA_PKCS1_SHA512, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::secret::Secret;

use super::config::{AuthMethod, CertFormat};
use super::error::AnaplanError;
use super::http::{Request, Transport};
use super::stats::CallKind;
use super::wire::parse_auth;

/// Tokens last 35 minutes; used when the auth service does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(35 * 60);
/// Bytes signed for certificate authentication (Anaplan asks for at least 100).
const SIGNED_BYTES: usize = 150;

/// A token in use: the full `Authorization` header value, its expiry, and a generation number
/// that tells a caller whose call was refused whether someone already replaced it.
#[derive(Clone)]
pub(crate) struct Token {
    pub header: HeaderValue,
    expires_at: Option<SystemTime>,
    pub generation: u64,
}

enum Credential {
    Basic(Secret),
    Certificate {
        /// `CACertificate <base64 of the PEM>`: public, not a secret.
        header: String,
        key: Box<RsaKeyPair>,
        format: CertFormat,
    },
    Static,
}

pub(crate) struct Auth {
    credential: Credential,
    auth_url: String,
    refresh_margin: Duration,
    /// The token and the generation counter. Held only to copy or replace them; never across
    /// an await.
    current: Mutex<(Option<Token>, u64)>,
    /// Serialises renewals (held across the auth call on purpose: that is the single flight).
    gate: tokio::sync::Mutex<()>,
    rng: SystemRandom,
    /// Whether the last authentication was refused (the credentials), for readiness and
    /// notifications.
    refused: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.credential {
            Credential::Basic(_) => "basic",
            Credential::Certificate { .. } => "certificate",
            Credential::Static => "static token",
        };
        f.debug_struct("Auth").field("method", &kind).finish()
    }
}

impl Auth {
    pub fn new(
        method: &AuthMethod,
        auth_url: String,
        refresh_margin: Duration,
    ) -> Result<Self, AnaplanError> {
        let mut first = None;
        let credential = match method {
            AuthMethod::Basic { user, password } => {
                let raw = format!("{user}:{}", password.expose());
                Credential::Basic(Secret::new(format!("Basic {}", B64.encode(raw))))
            }
            AuthMethod::Certificate {
                cert_pem,
                key_pem,
                format,
            } => {
                CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
                    AnaplanError::Credentials(format!(
                        "the certificate is not a PEM certificate: {e}"
                    ))
                })?;
                let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.expose().as_bytes()).map_err(
                    |e| {
                        AnaplanError::Credentials(format!(
                            "the private key is not a PKCS#8 PEM key (BEGIN PRIVATE KEY): {e}"
                        ))
                    },
                )?;
                let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| {
                    AnaplanError::Credentials(format!(
                        "the private key is not a usable RSA key: {e}"
                    ))
                })?;
                Credential::Certificate {
                    header: format!("CACertificate {}", B64.encode(cert_pem.as_bytes())),
                    key: Box::new(key),
                    format: *format,
                }
            }
            AuthMethod::Token(token) => {
                first = Some(Token {
                    header: token_header(token)?,
                    expires_at: None,
                    generation: 1,
                });
                Credential::Static
            }
        };
        Ok(Auth {
            credential,
            auth_url,
            refresh_margin,
            current: Mutex::new((first, 1)),
            gate: tokio::sync::Mutex::new(()),
            rng: SystemRandom::new(),
            refused: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether Anaplan refused the credentials at the last authentication.
    pub fn refused(&self) -> bool {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn snapshot(&self) -> Option<Token> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    fn fresh(&self, token: &Token) -> bool {
        match token.expires_at {
            None => true,
            Some(at) => SystemTime::now() + self.refresh_margin < at,
        }
    }

    /// A token good for a call: the current one, refreshed or replaced first when it is
    /// close to expiry.
    pub async fn token(&self, transport: &Transport) -> Result<Token, AnaplanError> {
        if let Some(t) = self.snapshot().filter(|t| self.fresh(t)) {
            return Ok(t);
        }
        let _gate = self.gate.lock().await;
        let current = self.snapshot();
        if let Some(t) = current.clone().filter(|t| self.fresh(t)) {
            return Ok(t);
        }
        // Still valid, only close to expiry: refresh it; if that fails, authenticate anew.
        if let Some(t) = current.filter(|t| t.expires_at.is_some_and(|at| SystemTime::now() < at)) {
            match self.refresh(transport, &t).await {
                Ok(new) => return Ok(new),
                Err(e) => {
                    tracing::warn!(event = "token_refresh_failed", error = %e, "token refresh failed; authenticating again")
                }
            }
        }
        self.authenticate(transport).await
    }

    /// After a 401 on `refused`: authenticate again, unless another caller already replaced
    /// that token. A static token cannot be renewed.
    pub async fn renew(
        &self,
        transport: &Transport,
        refused: &Token,
    ) -> Result<Option<Token>, AnaplanError> {
        if matches!(self.credential, Credential::Static) {
            return Ok(None);
        }
        let _gate = self.gate.lock().await;
        if let Some(t) = self
            .snapshot()
            .filter(|t| t.generation != refused.generation)
        {
            return Ok(Some(t));
        }
        self.authenticate(transport).await.map(Some)
    }

    async fn authenticate(&self, transport: &Transport) -> Result<Token, AnaplanError> {
        let result = self.authenticate_once(transport).await;
        match &result {
            Ok(_) => self
                .refused
                .store(false, std::sync::atomic::Ordering::Relaxed),
            Err(AnaplanError::AuthRefused { .. }) => self
                .refused
                .store(true, std::sync::atomic::Ordering::Relaxed),
            Err(_) => {}
        }
        result
    }

    async fn authenticate_once(&self, transport: &Transport) -> Result<Token, AnaplanError> {
        let url = format!("{}/token/authenticate", self.auth_url);
        let (req, header) = match &self.credential {
            Credential::Basic(header) => (
                Request::new(Method::POST, url, CallKind::Auth),
                header.expose().to_string(),
            ),
            Credential::Certificate {
                header,
                key,
                format,
            } => {
                let body = self.signed_body(key, *format)?;
                (
                    Request::new(Method::POST, url, CallKind::Auth).json(body),
                    header.clone(),
                )
            }
            Credential::Static => {
                return self
                    .snapshot()
                    .ok_or_else(|| AnaplanError::Credentials("no static token configured".into()));
            }
        };
        let mut header = HeaderValue::from_str(&header).map_err(|_| {
            AnaplanError::Credentials(
                "credentials contain characters not allowed in an HTTP header".into(),
            )
        })?;
        header.set_sensitive(true);
        let token = self
            .call_auth(transport, &req.idempotent(true), &header)
            .await?;
        tracing::debug!(
            event = "anaplan_authenticated",
            "authenticated with Anaplan"
        );
        Ok(token)
    }

    async fn refresh(&self, transport: &Transport, token: &Token) -> Result<Token, AnaplanError> {
        let req = Request::new(
            Method::POST,
            format!("{}/token/refresh", self.auth_url),
            CallKind::Auth,
        )
        .idempotent(true);
        let token = self.call_auth(transport, &req, &token.header).await?;
        tracing::debug!(
            event = "anaplan_token_refreshed",
            "refreshed the Anaplan token"
        );
        Ok(token)
    }

    async fn call_auth(
        &self,
        transport: &Transport,
        req: &Request,
        header: &HeaderValue,
    ) -> Result<Token, AnaplanError> {
        let response = transport
            .execute(req, Some(header))
            .await
            .map_err(|e| match e {
                AnaplanError::Unauthorized { status, body, .. }
                | AnaplanError::Status { status, body, .. } => {
                    AnaplanError::AuthRefused { status, body }
                }
                other => other,
            })?;
        let info = parse_auth(response.status, &response.content_type, &response.body)?;
        let expires_at = match info.expires_at {
            Some(ms) => UNIX_EPOCH.checked_add(Duration::from_millis(ms)),
            None => SystemTime::now().checked_add(DEFAULT_LIFETIME),
        };
        let header = token_header(&info.token_value)?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.1 += 1;
        let token = Token {
            header,
            expires_at,
            generation: current.1,
        };
        current.0 = Some(token.clone());
        Ok(token)
    }

    /// `{"encodedData","encodedSignedData"[,"encodedDataFormat":"v2"]}` over fresh random
    /// bytes (v2: the first 8 are the big-endian Unix time in seconds).
    fn signed_body(&self, key: &RsaKeyPair, format: CertFormat) -> Result<Vec<u8>, AnaplanError> {
        let (data, signature) = sign_challenge(key, format, &self.rng, SystemTime::now())?;
        let mut body = serde_json::json!({
            "encodedData": B64.encode(&data),
            "encodedSignedData": B64.encode(&signature),
        });
        if format == CertFormat::V2 {
            body["encodedDataFormat"] = serde_json::Value::from("v2");
        }
        serde_json::to_vec(&body).map_err(|e| AnaplanError::Credentials(e.to_string()))
    }
}

/// The data to sign and its SHA512withRSA signature.
pub(crate) fn sign_challenge(
    key: &RsaKeyPair,
    format: CertFormat,
    rng: &dyn SecureRandom,
    now: SystemTime,
) -> Result<(Vec<u8>, Vec<u8>), AnaplanError> {
    let mut data = vec![0u8; SIGNED_BYTES];
    rng.fill(&mut data)
        .map_err(|_| AnaplanError::Credentials("no random bytes from the system".into()))?;
    if format == CertFormat::V2 {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        data[..8].copy_from_slice(&secs.to_be_bytes());
    }
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(&RSA_PKCS1_SHA512, rng, &data, &mut signature)
        .map_err(|_| AnaplanError::Credentials("signing the challenge failed".into()))?;
    Ok((data, signature))
}

fn token_header(token: &Secret) -> Result<HeaderValue, AnaplanError> {
    let mut v =
        HeaderValue::from_str(&format!("AnaplanAuthToken {}", token.expose())).map_err(|_| {
            AnaplanError::Credentials(
                "the token contains characters not allowed in an HTTP header".into(),
            )
        })?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{RSA_PKCS1_2048_8192_SHA512, UnparsedPublicKey};

    fn key() -> RsaKeyPair {
        let pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/keys/client_leaf_rsa.pem"
        ))
        .unwrap();
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).unwrap();
        RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap()
    }

    #[test]
    fn v1_and_v2_challenges_verify_and_v2_starts_with_the_time() {
        let key = key();
        let public = key.public().as_ref().to_vec();
        let rng = SystemRandom::new();
        let now = UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        for format in [CertFormat::V1, CertFormat::V2] {
            let (data, sig) = sign_challenge(&key, format, &rng, now).unwrap();
            assert_eq!(data.len(), 150);
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA512, &public)
                .verify(&data, &sig)
                .unwrap();
            let mut tampered = data.clone();
            tampered[20] ^= 1;
            assert!(
                UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA512, &public)
                    .verify(&tampered, &sig)
                    .is_err()
            );
            if format == CertFormat::V2 {
                assert_eq!(data[..8], 1_780_000_000u64.to_be_bytes());
            }
        }
    }

    #[test]
    fn bad_certificate_or_key_is_refused_at_construction() {
        let bad = AuthMethod::Certificate {
            cert_pem: "not a cert".into(),
            key_pem: Secret::new("nope"),
            format: CertFormat::V1,
        };
        let err = Auth::new(&bad, "http://x".into(), Duration::ZERO).unwrap_err();
        assert!(matches!(err, AnaplanError::Credentials(_)));
        assert!(!err.to_string().contains("nope"));
    }
}
