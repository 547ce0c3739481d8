//! The pure CDC parser as one function for `fuzz/fuzz_targets/cdc_frame.rs` and the stable
//! corpus replay: frame → messages → session reaction / events → changes, and for every
//! event that parses, a round trip through its own encoding.

use std::collections::{HashMap, HashSet};

use crate::crm::cdc::bayeux::{self, Message, ReplayFrom, Session};
use crate::crm::cdc::event::{CdcEvent, ParseContext, Parsed, parse_data};

/// Never panics on any input; panics (a fuzz finding) if an event does not survive a trip
/// through `to_message_json` and back, or `to_changes` loses a record.
#[doc(hidden)]
pub fn fuzz_cdc(data: &[u8]) {
    let Ok(messages) = bayeux::split_frame(data) else {
        let _ = crate::secret::excerpt(data);
        return;
    };
    let known: HashMap<String, HashSet<String>> = HashMap::from([(
        "Account".to_string(),
        ["Name", "Industry", "BillingCity", "LastModifiedDate"]
            .into_iter()
            .map(String::from)
            .collect(),
    )]);
    let open = ParseContext {
        our_client_id: "plansync",
        known_fields: None,
    };
    let strict = ParseContext {
        our_client_id: "plansync",
        known_fields: Some(&known),
    };
    for raw in messages {
        let Ok(msg) = serde_json::from_str::<Message<'_>>(raw.get()) else {
            continue;
        };
        let mut session = Session::new("websocket", &[(msg.channel.to_string(), ReplayFrom::Tip)]);
        if msg.is_meta() {
            let _ = session.on_meta(&msg);
            let _ = session.subscribe(&[0, 1]);
            let _ = session.connect();
            continue;
        }
        let Some(payload) = msg.data else {
            continue;
        };
        let _ = parse_data(&msg.channel, payload.get(), &strict);
        if let Parsed::Event(event) = parse_data(&msg.channel, payload.get(), &open) {
            let changes = event.to_changes("fuzz");
            assert_eq!(changes.len(), event.record_ids.len());
            round_trip(&event, &open);
        }
    }
}

fn round_trip(event: &CdcEvent, ctx: &ParseContext<'_>) {
    let text = event.to_message_json();
    let msg: Message<'_> = match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(e) => panic!("own encoding does not parse: {e}\n{text}"),
    };
    let Some(data) = msg.data else {
        panic!("own encoding has no data: {text}");
    };
    match parse_data(&msg.channel, data.get(), ctx) {
        Parsed::Event(again) => assert!(
            same_event(event, &again),
            "round trip changed the event\nbefore: {event:?}\nafter:  {again:?}\n{text}"
        ),
        other => panic!("own encoding parsed as {other:?}\n{text}"),
    }
}

/// Equal, except that numbers need only agree to about 15 digits: serde_json's float
/// parsing (without `float_roundtrip`) may differ in the last bit.
pub(crate) fn same_event(a: &CdcEvent, b: &CdcEvent) -> bool {
    let mut b_fields_equal = a.fields.len() == b.fields.len();
    if b_fields_equal {
        b_fields_equal = a
            .fields
            .iter()
            .zip(&b.fields)
            .all(|(x, y)| x.field == y.field && same_value(&x.value, &y.value));
    }
    b_fields_equal
        && CdcEvent {
            fields: Vec::new(),
            ..a.clone()
        } == CdcEvent {
            fields: Vec::new(),
            ..b.clone()
        }
}

fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_f64() || b.is_f64() => {
            x == y || ((x - y).abs() <= 1e-12 * x.abs().max(y.abs()))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays the saved corpus on stable, as `tests/fuzz_corpus.rs` does for other targets.
    #[test]
    fn corpus_replays() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("fuzz/corpus/cdc_frame");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            fuzz_cdc(&data);
            count += 1;
        }
        assert!(count >= 10, "corpus under {}", dir.display());
    }

    #[test]
    fn round_trip_catches_a_changed_event() {
        let text = r#"{"event":{"replayId":5},"payload":{"ChangeEventHeader":{"entityName":"Account","recordIds":["001A"],"changeType":"CREATE","commitTimestamp":1},"Name":"x","Amount":1.5}}"#;
        let ctx = ParseContext {
            our_client_id: "p",
            known_fields: None,
        };
        let Parsed::Event(e) = parse_data("/data/AccountChangeEvent", text, &ctx) else {
            panic!("parses");
        };
        round_trip(&e, &ctx);
        let mut other = e.clone();
        other.fields[1].value = serde_json::json!(1.6);
        assert!(!same_event(&e, &other));
    }
}
