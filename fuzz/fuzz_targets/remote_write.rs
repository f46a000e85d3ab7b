//! `cargo fuzz run remote_write`: see [`target::run`].

#![no_main]

#[path = "../targets/remote_write.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
