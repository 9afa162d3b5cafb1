//! cargo-fuzz target `request_frame`: see fuzz/targets_common.rs and docs/fuzzing.md.
#![no_main]

#[path = "../targets_common.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::request_frame(data));
