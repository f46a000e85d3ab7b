//! The OTLP decoder on arbitrary bytes, as a plain and as a gzip body, under the
//! default limits and under tight ones: it never panics, and whatever it accepts
//! respects every limit. The OTLP/JSON logs and traces decoders read the same bytes and
//! never panic either. Shared by the fuzz target and the corpus replay test
//! (`series/tests/fuzz_corpus_otlp.rs`).

#[path = "limits.rs"]
mod limits;

use kaas_series::{PushLimits, compression, otlp, otlp_logs_json, otlp_traces_json};

use self::limits::{check, tight};

/// One input.
pub fn run(data: &[u8]) {
    for limits in [PushLimits::default(), tight()] {
        if let Ok(pushed) = otlp::decode(data, &limits) {
            check(&pushed, &limits);
        }
        let _ = otlp_logs_json::decode(data, &limits);
        let _ = otlp_traces_json::decode(data, &limits);
        if let Ok(raw) = compression::gzip(data, limits.max_decompressed_bytes) {
            assert!(raw.len() <= limits.max_decompressed_bytes);
            if let Ok(pushed) = otlp::decode(&raw, &limits) {
                check(&pushed, &limits);
            }
        }
    }
}
