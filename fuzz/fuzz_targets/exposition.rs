//! `cargo fuzz run exposition`: see [`target::run`].

#![no_main]

#[path = "../targets/exposition.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
