//! OAuth 2.0 against the CRM's token endpoint: client credentials, and the JWT bearer flow
//! with an RS256 assertion signed by ring.
//!
//! Secrets (client secret, private key, the access token) stay in `Secret` and are exposed
//! only to build the request body or the signature.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

use crate::crm::client::CrmClient;
use crate::crm::config::AuthConfig;
use crate::crm::error::CrmError;
use crate::crm::stats::CallKind;
use crate::crm::wire::{TokenError, TokenResponse};
use crate::secret::Secret;

/// The grant type of the JWT bearer flow.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Builds a signed JWT bearer assertion: header `{"alg":"RS256"}`, claims `iss` (the
/// connected app's client id), `sub` (the username), `aud` and `exp` (epoch seconds).
pub fn jwt_assertion(
    client_id: &str,
    username: &str,
    audience: &str,
    private_key_pem: &Secret,
    now: DateTime<Utc>,
    lifetime: Duration,
) -> Result<String, CrmError> {
    let key_der = PrivatePkcs8KeyDer::from_pem_slice(private_key_pem.expose().as_bytes())
        .map_err(|e| CrmError::Config(format!("JWT private key is not a PKCS#8 PEM: {e}")))?;
    let key = RsaKeyPair::from_pkcs8(key_der.secret_pkcs8_der())
        .map_err(|e| CrmError::Config(format!("JWT private key is not an RSA key: {e}")))?;
    let exp = now.timestamp() + i64::try_from(lifetime.as_secs()).unwrap_or(180);
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": username,
        "aud": audience,
        "exp": exp,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| CrmError::Config("signing the JWT assertion failed".into()))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// Asks the token endpoint for a new access token; returns it with the instance URL.
/// Transport faults and 5xx are retried under the client's retry policy; a refusal is not.
pub(crate) async fn request_token(client: &CrmClient) -> Result<(Secret, String), CrmError> {
    let config = client.config();
    let url = format!(
        "{}/services/oauth2/token",
        config.login_url.trim_end_matches('/')
    );
    let mut attempt = 0;
    loop {
        // The assertion carries `exp`, so it is rebuilt for each attempt.
        let form: Vec<(&str, String)> = match &config.auth {
            AuthConfig::ClientCredentials {
                client_id,
                client_secret,
            } => vec![
                ("grant_type", "client_credentials".to_string()),
                ("client_id", client_id.clone()),
                ("client_secret", client_secret.expose().to_string()),
            ],
            AuthConfig::JwtBearer {
                client_id,
                username,
                private_key_pem,
                audience,
            } => {
                let aud = audience
                    .clone()
                    .unwrap_or_else(|| config.login_url.trim_end_matches('/').to_string());
                let assertion = jwt_assertion(
                    client_id,
                    username,
                    &aud,
                    private_key_pem,
                    Utc::now(),
                    config.jwt_lifetime,
                )?;
                vec![
                    ("grant_type", JWT_BEARER_GRANT.to_string()),
                    ("assertion", assertion),
                ]
            }
        };
        client.call_stats().call(CallKind::Auth);
        let sent = client
            .http()
            .post(&url)
            .form(&form)
            .timeout(config.request_timeout)
            .send()
            .await;
        let outcome = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = super::http::read_body(
                    response,
                    crate::body::MAX_AUTH_RESPONSE_BYTES,
                    "token request",
                )
                .await;
                match body {
                    Ok(body) => token_outcome(status, &body),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(CrmError::Transport(format!(
                "token request: {}",
                e.without_url()
            ))),
        };
        let out_of_reach = matches!(
            &outcome,
            Err(CrmError::Transport(_)
                | CrmError::Api { status: 500.., .. }
                | CrmError::Auth { status: 500.., .. })
        );
        if out_of_reach {
            if let Err(e) = &outcome {
                let retry = if attempt + 1 < config.retry.max_attempts {
                    attempt + 1
                } else {
                    0
                };
                client.unreachable("token request", e, retry);
            }
        } else {
            client.reached();
        }
        match outcome {
            Ok(ok) => return Ok(ok),
            Err(e) if e.is_transient() && attempt + 1 < config.retry.max_attempts => {
                client.call_stats().retry();
                tokio::time::sleep(config.retry.backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                client.call_stats().failure();
                return Err(e);
            }
        }
    }
}

pub(crate) fn token_outcome(status: u16, body: &[u8]) -> Result<(Secret, String), CrmError> {
    if (200..300).contains(&status) {
        // serde's message quotes values, and this body carries the token: keep its shape only.
        let parsed: TokenResponse = serde_json::from_slice(body).map_err(|e| CrmError::Decode {
            what: "token request",
            detail: crate::secret::json_error_shape(&e),
        })?;
        if let Some(kind) = &parsed.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(CrmError::Decode {
                what: "token request",
                detail: format!("token type `{kind}` is not Bearer"),
            });
        }
        return Ok((Secret::new(parsed.access_token), parsed.instance_url));
    }
    if status >= 500 {
        return Err(CrmError::Api {
            status,
            code: format!("HTTP_{status}"),
            message: "token endpoint unavailable".into(),
            fields: Vec::new(),
        });
    }
    let refused: TokenError = serde_json::from_slice(body).unwrap_or(TokenError {
        error: String::new(),
        error_description: String::new(),
    });
    let error = if refused.error.trim().is_empty() {
        format!("HTTP_{status}")
    } else {
        refused.error
    };
    Err(CrmError::Auth {
        status,
        error,
        description: refused.error_description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_odd_bodies_are_errors_not_panics() {
        let e = token_outcome(
            400,
            br#"{"error":"invalid_grant","error_description":"expired"}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&e, CrmError::Auth { error, .. } if error == "invalid_grant"),
            "{e}"
        );
        assert!(token_outcome(400, b"<html>").is_err());
        let e = token_outcome(401, br#"{"error_description":"no code"}"#).unwrap_err();
        assert!(
            matches!(&e, CrmError::Auth { error, .. } if error == "HTTP_401"),
            "{e}"
        );
        assert!(token_outcome(200, b"{}").is_err());
        assert!(token_outcome(503, b"").unwrap_err().is_transient());
        let (token, instance) = token_outcome(
            200,
            br#"{"access_token":"00Dx!AR8","instance_url":"https://x.my","token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(token.expose(), "00Dx!AR8");
        assert_eq!(instance, "https://x.my");
    }

    #[test]
    fn a_bad_key_is_a_config_error() {
        let e = jwt_assertion(
            "id",
            "u",
            "aud",
            &Secret::new("not a pem"),
            Utc::now(),
            Duration::from_secs(60),
        )
        .unwrap_err();
        assert!(matches!(e, CrmError::Config(_)));
    }
}
