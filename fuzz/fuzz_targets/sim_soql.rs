#![no_main]
//! A SOQL query sent to the CRM simulator: parsing, binding against the default org and
//! running it must never panic, overflow the stack (nesting is bounded) or take long (`LIKE`
//! is matched without exponential backtracking).

libfuzzer_sys::fuzz_target!(|data: &[u8]| plansync_sim::fuzzing::sim_soql(data));
