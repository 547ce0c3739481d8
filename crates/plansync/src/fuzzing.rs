//! The bodies of the fuzz targets under `fuzz/`, kept in the library so the normal test run
//! can replay the saved corpus through exactly the same code on stable Rust.

use std::path::Path;

use crate::model::{Value, ValueKind};
use crate::rules::{cases, compile};
use plansync_toml::diagnostic;

/// Rule text → compiled pairing or errors; whichever, every later step must hold up too:
/// rendering the errors (spans must lie inside the text) and running the embedded cases.
pub fn rules_compile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match compile::compile_file(Path::new("fuzz.toml"), text) {
        Ok(pairing) => {
            for outcome in cases::run(&pairing) {
                let _ = outcome.passed();
            }
        }
        Err(errors) => {
            assert!(!errors.problems.is_empty());
            for p in &errors.problems {
                assert!(
                    p.span.start <= p.span.end && p.span.end <= text.len(),
                    "{p:?}"
                );
            }
            let _ = diagnostic::render(&errors, false);
            let _ = errors.one_line_each();
        }
    }
}

/// Raw values as the remote systems send them → normalised values; a value that parses
/// must print back to a text that parses to the same value.
pub fn value_parse(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let kind = match selector % 5 {
        0 => ValueKind::Text,
        1 => ValueKind::Number {
            scale: (selector / 5) % (ValueKind::MAX_SCALE + 1),
        },
        2 => ValueKind::Boolean,
        3 => ValueKind::Date,
        _ => ValueKind::Picklist,
    };
    if let Ok(value) = Value::from_text(kind, text) {
        let again = match value.to_text() {
            Some(t) => Value::from_text(kind, &t),
            None => Ok(Value::Null),
        };
        assert_eq!(again.as_ref(), Ok(&value), "{text:?} as {kind:?}");
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = Value::from_json(kind, &json);
    }
}
