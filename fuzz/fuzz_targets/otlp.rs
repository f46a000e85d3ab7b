//! `cargo fuzz run otlp`: see [`target::run`].

#![no_main]

#[path = "../targets/otlp.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
