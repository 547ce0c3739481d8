#![no_main]
//! `plansync.toml` is written by people: any text must give a config or errors with spans
//! inside the text, never a panic, and a loaded config must never show a secret in Debug.

libfuzzer_sys::fuzz_target!(|data: &[u8]| plansync::config::config_parse(data));
