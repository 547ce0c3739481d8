#![no_main]
//! Field values arrive from both remote systems: normalising them must never panic, and a
//! normalised value must survive a trip through its text form.

libfuzzer_sys::fuzz_target!(|data: &[u8]| plansync::fuzzing::value_parse(data));
