//! Secrets (passwords, tokens, private keys) in a type that never prints its contents.
//!
//! `Debug` and `Display` show `[redacted]`, so a secret that ends up in a `tracing` field, an
//! error message or a `{:?}` of a config struct leaks nothing. Reading the value needs an explicit
//! `expose()`, which makes every use easy to find in review. The bytes are zeroed on drop
//! (through `secrecy`).

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A secret string: a password, client secret, access or refresh token, or a PEM private key.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The secret itself. Call only where it is sent to the system it belongs to.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Config {
            password: Secret,
        }
        let shown = format!("{:?}", Config { password: s });
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
