#![no_main]
//! CDC frames arrive from the network: splitting, message parsing, the session's reaction and
//! event parsing must never panic, and every event must survive a trip through its own
//! encoding.

libfuzzer_sys::fuzz_target!(|data: &[u8]| plansync::crm::cdc::fuzz_cdc(data));
