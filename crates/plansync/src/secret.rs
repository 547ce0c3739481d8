//! Secrets (passwords, tokens, private keys) in a type that never prints its contents.
//!
//! `Debug` and `Display` show `[redacted]`, so a secret that ends up in a `tracing` field, an
//! error message or a `{:?}` of a config struct leaks nothing. Reading the value needs an explicit
//! `expose()`, which makes every use easy to find in review. The bytes are zeroed on drop
//! (through `secrecy`).
//!
//! Bodies a remote system sent us reach error messages and logs only through [`excerpt`],
//! which cuts them short and blanks every token-shaped field: a broken answer from an
//! authentication endpoint must not put the token it carried into a log line or the store.

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

/// How much of a body an error message keeps: enough to recognise it, never a whole page.
pub const EXCERPT_BYTES: usize = 512;

/// The start of a body a remote system sent, for an error message: at most
/// [`EXCERPT_BYTES`], cut on a character boundary, trimmed, `…` when cut, with every
/// token-shaped value redacted. Every excerpt of outside bytes goes through here.
pub fn excerpt(body: &[u8]) -> String {
    excerpt_of(body, EXCERPT_BYTES)
}

fn excerpt_of(body: &[u8], max: usize) -> String {
    let mut cut = body.len().min(max);
    // Back up to a character boundary rather than leave half a character.
    while cut > 0 && cut < body.len() && body[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    let text = String::from_utf8_lossy(&body[..cut]);
    let mut s = redact(text.trim());
    if body.len() > cut {
        s.push('…');
    }
    s
}

/// Where and how a JSON body failed to parse, without serde's wording (which quotes the
/// offending value): for bodies that may carry a credential.
pub fn json_error_shape(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "could not be read",
        serde_json::error::Category::Syntax => "is not valid JSON",
        serde_json::error::Category::Data => "is not the expected shape",
        serde_json::error::Category::Eof => "is cut short",
    };
    format!("the body {what} (line {}, column {})", e.line(), e.column())
}

/// What stands in for a redacted value.
const REDACTED: &str = "[redacted]";

/// `text` with the values of secret-looking fields blanked: JSON members (`"tokenValue":"…"`,
/// also when the excerpt cut the value short), form fields (`access_token=…`) and
/// authorization schemes (`Bearer …`, `AnaplanAuthToken …`, `Basic …`). Hand-written rather
/// than a regex: one linear pass, and the library takes no regex engine for it.
pub fn redact(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    // Everything before `copied` is in `out`.
    let mut copied = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // A member name: `"name"` of name characters, then `:`. Tried at every quote rather
        // than by walking strings, so a stray quote in hostile text cannot shift the pairing.
        if b == b'"' {
            let key_end = bytes[i + 1..]
                .iter()
                .position(|c| !is_word(*c))
                .map_or(bytes.len(), |p| i + 1 + p);
            let colon = skip_space(bytes, key_end + 1);
            if key_end > i + 1
                && key_end < bytes.len()
                && bytes[key_end] == b'"'
                && colon < bytes.len()
                && bytes[colon] == b':'
                && is_secret_name(&text[i + 1..key_end])
            {
                let j = skip_space(bytes, colon + 1);
                // An object or array under a secret-looking name is walked into, not blanked.
                let (start, end) = match bytes.get(j) {
                    Some(b'"') => (j + 1, string_end(bytes, j + 1)),
                    Some(b'{' | b'[') | None => (j, j),
                    Some(_) => (j, bare_end(bytes, j)),
                };
                if end > start {
                    out.push_str(&text[copied..start]);
                    out.push_str(REDACTED);
                    copied = end;
                }
                i = end.max(j).max(i + 1);
                continue;
            }
            i += 1;
            continue;
        }
        if b.is_ascii_alphabetic() && (i == 0 || !is_word(bytes[i - 1])) {
            let word_end = bytes[i..]
                .iter()
                .position(|c| !is_word(*c))
                .map_or(bytes.len(), |p| i + p);
            let word = &text[i..word_end];
            let value = if word_end < bytes.len() && bytes[word_end] == b'=' && is_secret_name(word)
            {
                Some(word_end + 1)
            } else if word_end < bytes.len()
                && bytes[word_end] == b' '
                && ["bearer", "basic", "anaplanauthtoken"]
                    .iter()
                    .any(|scheme| word.eq_ignore_ascii_case(scheme))
            {
                Some(skip_space(bytes, word_end))
            } else {
                None
            };
            if let Some(start) = value {
                let end = bare_end(bytes, start);
                if end > start {
                    out.push_str(&text[copied..start]);
                    out.push_str(REDACTED);
                    copied = end;
                }
                i = end.max(word_end);
                continue;
            }
            i = word_end;
            continue;
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// Whether a field name says its value is a credential.
fn is_secret_name(name: &str) -> bool {
    const WORDS: [&str; 12] = [
        "token",
        "secret",
        "password",
        "passwd",
        "authorization",
        "assertion",
        "signature",
        "signed",
        "session",
        "cookie",
        "apikey",
        "privatekey",
    ];
    let folded: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    WORDS.iter().any(|w| folded.contains(w))
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// The index of the quote closing a JSON string whose text starts at `from` (past its
/// opening quote), or `bytes.len()` when it is cut short.
fn string_end(bytes: &[u8], from: usize) -> usize {
    let mut j = from;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 2,
            b'"' => return j,
            _ => j += 1,
        }
    }
    bytes.len()
}

/// The end of an unquoted value: up to a separator a JSON, form or header value ends at.
fn bare_end(bytes: &[u8], from: usize) -> usize {
    bytes[from.min(bytes.len())..]
        .iter()
        .position(|c| {
            matches!(c, b',' | b'}' | b']' | b'&' | b'"' | b'\'' | b';') || c.is_ascii_whitespace()
        })
        .map_or(bytes.len(), |p| from + p)
}

fn skip_space(bytes: &[u8], from: usize) -> usize {
    let mut j = from;
    while j < bytes.len() && bytes[j].is_ascii_whitespace() {
        j += 1;
    }
    j
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

    #[test]
    fn excerpts_blank_token_shaped_values() {
        let body = br#"{"meta":{"v":1},"status":"SUCCESS","tokenInfo":{"expiresAt":1,"tokenId":"id-7","tokenValue":"CANARY.x+y/z=","refreshTokenId":"r-9"}}"#;
        let e = excerpt(body);
        assert!(
            !e.contains("CANARY") && !e.contains("id-7") && !e.contains("r-9"),
            "{e}"
        );
        assert!(
            e.contains(r#""status":"SUCCESS""#) && e.contains(r#""expiresAt":1"#),
            "{e}"
        );
        // Cut in the middle of the value: what is left of it goes too.
        let cut = excerpt_of(body, body.len() - 40);
        assert!(!cut.contains("CANARY"), "{cut}");
        assert!(cut.ends_with('…'));
        for text in [
            "access_token=CANARY&instance_url=x",
            "Authorization: Bearer CANARY",
            "header AnaplanAuthToken CANARY was refused",
            r#"{"access_token": "CANARY", "n": 2}"#,
            r#"{"client_secret":12345CANARY}"#,
            r#"{"password":"a\"CANARY"}"#,
        ] {
            let r = redact(text);
            assert!(!r.contains("CANARY"), "{text} -> {r}");
            assert!(r.contains(REDACTED), "{text} -> {r}");
        }
        // Ordinary text passes unchanged.
        let plain = r#"[{"errorCode":"INVALID_FIELD","message":"No such column 'Amount__x'"}]"#;
        assert_eq!(redact(plain), plain);
        assert_eq!(
            excerpt_of("é".repeat(300).as_bytes(), 201).chars().count(),
            101
        );
        let long = excerpt("é".repeat(1000).as_bytes());
        assert!(long.len() <= EXCERPT_BYTES + '…'.len_utf8() && long.ends_with('…'));
        assert_eq!(excerpt(b"  short \n"), "short");
    }

    proptest::proptest! {
        #[test]
        fn redaction_holds_for_any_text(text in ".{0,200}", secret in "[A-Za-z0-9+/=.]{4,40}") {
            let _ = redact(&text);
            for shape in [
                format!(r#"{{"tokenValue":"{secret}"}}"#),
                format!("refresh_token={secret}"),
                format!("Bearer {secret}"),
            ] {
                let framed = format!("{text} {shape} {text}");
                let r = redact(&framed);
                proptest::prop_assert!(!r.contains(shape.as_str()), "{}", r);
            }
        }
    }
}
