//! Entry points for the fuzz targets under `fuzz/` and their corpus replay in
//! `tests/fuzz_corpus.rs`; not an API. Each takes raw bytes and must not panic.

/// The CRM simulator's SOQL: parse, bind and run against the default org.
#[doc(hidden)]
pub fn sim_soql(data: &[u8]) {
    crate::crm::fuzz::soql_query(data);
}

/// The CRM simulator's Bayeux handling: handshake, connect, subscribe, unsubscribe and
/// disconnect messages from a client (see `crm/fuzz.rs` for the `$client` placeholder).
#[doc(hidden)]
pub fn sim_bayeux(data: &[u8]) {
    crate::crm::fuzz::bayeux_messages(data);
}
