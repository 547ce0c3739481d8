#![no_main]
//! Everything Anaplan sends back (auth, listings, tasks, cell and list write results, view
//! grids, failure dumps) goes through a parser that must never panic, whatever the bytes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| plansync::anaplan::fuzz::fuzz_responses(data));
