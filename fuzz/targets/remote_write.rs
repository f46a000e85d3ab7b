//! The remote-write decoder on arbitrary bytes, both as a snappy body and as an
//! uncompressed `WriteRequest`, under the default limits and under tight ones: it
//! never panics, and whatever it accepts respects every limit and is a proper label
//! set (sorted, unique names, no empty value). Shared by the fuzz target and the
//! corpus replay test (`series/tests/fuzz_corpus_remote_write.rs`).

#[path = "limits.rs"]
mod limits;

use kaas_series::{PushLimits, remote_write};

use self::limits::{check, tight};

/// One input.
pub fn run(data: &[u8]) {
    for limits in [PushLimits::default(), tight()] {
        if let Ok(pushed) = remote_write::decode(data, &limits) {
            check(&pushed, &limits);
        }
        if let Ok(pushed) = remote_write::decode_request(data, &limits) {
            check(&pushed, &limits);
        }
    }
}
