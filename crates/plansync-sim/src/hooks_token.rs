//! The token the `/__sim/` test hooks of both simulators take.
//!
//! The hooks edit records, inject faults and read everything, and a simulator listens on
//! loopback, where any local process, and any web page open in a local browser, can reach it.
//! So every `/__sim/` request must carry the simulator's token in the `X-Sim-Token` header: a
//! page cannot read the token, and a cross-origin request with a custom header needs a CORS
//! preflight that the simulators never grant. The token is random per start unless the
//! configuration gives one (`plansync sim … --sim-token` or `PLANSYNC_SIM_TOKEN`); the CLI
//! prints it once, next to the URL, and nothing else logs it. In-process callers use the
//! handles, which need no token and can tell it (`hooks_token()`) to code that calls over HTTP.

use axum::http::{HeaderMap, StatusCode};

use crate::Secret;

/// The request header that carries the token.
pub const HEADER: &str = "X-Sim-Token";

/// A fresh token: 128 random bits from the system's generator, as 32 hex digits.
pub fn generate() -> Secret {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // No system randomness at all: fall back to the process's seeded generator rather
        // than refusing to start a test simulator.
        bytes = fastrand::u128(..).to_le_bytes();
    }
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The configured token, or a fresh one.
pub fn or_generate(configured: Option<&Secret>) -> Secret {
    match configured {
        Some(t) if !t.expose().is_empty() => t.clone(),
        _ => generate(),
    }
}

/// Why a hook request is refused: its status and a message saying what to send.
pub fn check(headers: &HeaderMap, token: &Secret) -> Result<(), (StatusCode, &'static str)> {
    let Some(sent) = headers.get(HEADER) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "the /__sim/ hooks need the X-Sim-Token header, with the token the simulator printed at start",
        ));
    };
    if equal(sent.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err((
            StatusCode::FORBIDDEN,
            "wrong X-Sim-Token: send the token the simulator printed at start",
        ))
    }
}

/// Compares in time that does not depend on where the first difference is.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_checked() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.expose().len(), 32);
        assert_ne!(a, b);
        let mut headers = HeaderMap::new();
        assert_eq!(
            check(&headers, &a).map_err(|e| e.0),
            Err(StatusCode::UNAUTHORIZED)
        );
        headers.insert(HEADER, b.expose().parse().expect("a header value"));
        assert_eq!(
            check(&headers, &a).map_err(|e| e.0),
            Err(StatusCode::FORBIDDEN)
        );
        headers.insert(HEADER, a.expose().parse().expect("a header value"));
        assert_eq!(check(&headers, &a), Ok(()));
        assert_eq!(or_generate(Some(&Secret::new("fixed"))).expose(), "fixed");
        assert_eq!(or_generate(Some(&Secret::new(""))).expose().len(), 32);
    }
}
