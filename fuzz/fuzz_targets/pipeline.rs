//! `cargo fuzz run pipeline`: see [`target::run`].

#![no_main]

#[path = "../targets/pipeline.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
