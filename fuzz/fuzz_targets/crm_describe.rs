#![no_main]
//! sObject describe answers arrive from the network (the preflight reads them): any body is
//! an answer or a decode error, never a panic.

libfuzzer_sys::fuzz_target!(|data: &[u8]| plansync::crm::describe::fuzz_describe(data));
