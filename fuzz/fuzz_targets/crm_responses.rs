#![no_main]
//! Everything the CRM's REST API sends back (the token answer and its refusals, error bodies,
//! query pages, collections results, bulk job info and result files, the `Sforce-Limit-Info`
//! and long-polling `Set-Cookie` headers) goes through a parser that must never panic,
//! whatever the bytes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| plansync::crm::fuzz::fuzz_responses(data));
