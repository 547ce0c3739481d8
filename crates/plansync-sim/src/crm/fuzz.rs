//! The bodies of the CRM simulator's fuzz targets (`fuzz/fuzz_targets/sim_soql.rs`,
//! `sim_bayeux.rs`) and of their corpus replay on stable (`tests/fuzz_corpus.rs`), reached
//! through [`crate::fuzzing`]. Both take what a client sends and must never panic, overflow
//! the stack or run for long on any input.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use serde_json::{Value, json};

use super::bayeux::{self, Collected, Step, Transport};
use super::org::Org;
use super::{CrmSimConfig, Seed, build, soql};

/// A query against the default org: parse, bind, and run over every row (deleted ones too).
pub(crate) fn soql_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Built once: the default seed is the crate's own, and a query only reads the org.
    static ORG: OnceLock<Option<Org>> = OnceLock::new();
    let Some(org) = ORG
        .get_or_init(|| Org::from_seed(&Seed::default_org(), i64::MAX).ok())
        .as_ref()
    else {
        return;
    };
    if let Ok(bound) = soql::prepare(text, org) {
        let rows = bound.run(org, true);
        let table = org.tables.get(bound.table).map_or(0, |t| t.records.len());
        assert!(rows.len() <= table, "more rows than the table holds");
    }
}

/// The `clientId` a fuzz input writes to mean "the client the last handshake made", so one
/// input can handshake, subscribe, connect and disconnect (real ids are random).
pub const CLIENT_PLACEHOLDER: &str = "$client";

/// One batch of Bayeux messages, as a long-polling `POST /cometd/XX.X` body (JSON, or
/// `message=…` form-encoded when the input starts that way), answered under both transports
/// by a fresh org with a valid access token. A connect that would be held is answered at once
/// with what is waiting; a record edit halfway gives subscriptions an event to deliver.
pub(crate) fn bayeux_messages(data: &[u8]) {
    let Ok(sim) = build(CrmSimConfig::default(), "http://127.0.0.1:9".into()) else {
        return;
    };
    let token = {
        let org_id = sim.org_lock().org_id.clone();
        sim.tokens_lock()
            .issue(&org_id, 0, Duration::from_secs(3600))
    };
    let mut headers = HeaderMap::new();
    if data.starts_with(b"message=") {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    let Some(messages) = bayeux::parse_messages(&headers, data) else {
        return;
    };
    let mut client: Option<String> = None;
    let half = messages.len() / 2;
    for (i, mut msg) in messages.into_iter().enumerate() {
        if i == half {
            let _ = sim.edit(
                "Opportunity",
                "0065g0000000001AAA",
                &json!({"Amount": i}),
                None,
            );
        }
        if let (Some(c), Some(Value::String(id))) = (&client, msg.get_mut("clientId"))
            && id == CLIENT_PLACEHOLDER
        {
            *id = c.clone();
        }
        for transport in [Transport::LongPolling, Transport::WebSocket] {
            match bayeux::process(&sim, &msg, Some(&token), transport) {
                Step::Reply(reply) => {
                    if let Some(Value::String(id)) = reply.get("clientId")
                        && reply.get("channel").and_then(Value::as_str) == Some("/meta/handshake")
                    {
                        client = Some(id.clone());
                    }
                }
                Step::Hold { client: held, .. } => {
                    if let Collected::Events(events) = bayeux::collect(&sim, &held) {
                        assert!(events.iter().all(|e| e.starts_with("{\"channel\":")));
                    }
                    bayeux::finish_hold(&sim, &held);
                }
            }
        }
    }
}
