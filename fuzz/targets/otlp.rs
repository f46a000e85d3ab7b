//! The OTLP decoder on arbitrary bytes, as a plain and as a gzip body, under the
//! default limits and under tight ones: it never panics, and whatever it accepts
//! respects every limit. The OTLP/JSON logs and traces decoders and the Zipkin v2 JSON
//! decoder read the same bytes and never panic either; what the Zipkin decoder accepts
//! keeps its per-span bounds. Shared by the fuzz target and the corpus replay test
//! (`series/tests/fuzz_corpus_otlp.rs`).

#[path = "limits.rs"]
mod limits;

use kaas_series::{PushLimits, compression, otlp, otlp_logs_json, otlp_traces_json, zipkin};

use self::limits::{check, tight};

/// One input.
pub fn run(data: &[u8]) {
    for limits in [PushLimits::default(), tight()] {
        if let Ok(pushed) = otlp::decode(data, &limits) {
            check(&pushed, &limits);
        }
        let _ = otlp_logs_json::decode(data, &limits);
        let _ = otlp_traces_json::decode(data, &limits);
        if let Ok(request) = zipkin::decode(data, &limits) {
            let spans = request
                .resource_spans
                .iter()
                .flat_map(|resource| &resource.scope_spans)
                .flat_map(|scope| &scope.spans);
            for span in spans {
                // Tags, plus at most the five endpoint attributes and the absent start.
                assert!(span.attributes.len() <= zipkin::MAX_TAGS_PER_SPAN + 6);
                assert!(span.events.len() <= zipkin::MAX_ANNOTATIONS_PER_SPAN);
                assert_eq!(span.trace_id.len(), 16);
                assert_eq!(span.span_id.len(), 8);
            }
        }
        if let Ok(raw) = compression::gzip(data, limits.max_decompressed_bytes) {
            assert!(raw.len() <= limits.max_decompressed_bytes);
            if let Ok(pushed) = otlp::decode(&raw, &limits) {
                check(&pushed, &limits);
            }
        }
    }
}
