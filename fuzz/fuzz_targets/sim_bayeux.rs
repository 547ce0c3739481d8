#![no_main]
//! A batch of Bayeux messages sent to the CRM simulator's CometD endpoint (handshake,
//! connect, subscribe, unsubscribe, disconnect, anything else): parsing and the sessions'
//! reactions must never panic.

libfuzzer_sys::fuzz_target!(|data: &[u8]| plansync_sim::fuzzing::sim_bayeux(data));
