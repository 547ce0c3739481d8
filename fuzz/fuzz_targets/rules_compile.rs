#![no_main]
//! Rule files are written by people: no text may make the compiler, the error renderer or
//! the embedded test cases panic.

libfuzzer_sys::fuzz_target!(|data: &[u8]| plansync::fuzzing::rules_compile(data));
