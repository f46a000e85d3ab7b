//! Log processing's memory on JSON bombs, measured: ten-MiB bodies nested past the
//! depth limit or holding 100,000 keys are refused by the bounded parser, and the
//! process's peak resident set (`VmHWM`, reset through `/proc/self/clear_refs` just
//! before) grows by at most a few MiB while they are processed, not by a multiple of
//! the bodies. Its own test binary, so no other test's allocations share the process.

use std::time::Instant;

use kaas_cluster_agent::internal_events::LogProcessingOutcome;
use kaas_cluster_agent::processing::logs::{LogProcessing, LogProcessor};
use kaas_proto::otlp::{AnyValue, LogRecord, ResourceLogs, ScopeLogs, any_value::Value};
use kaas_test_support::process::proc_status_bytes;

/// Each bomb's size.
const BOMB_BYTES: usize = 10 << 20;

/// What processing the bombs may add to the peak: the parser's work up to the key
/// limit (10,000 short keys, about 1 MiB of attributes) with room for the allocator;
/// a parser that built the document first would need several times the 10 MiB.
const PEAK_GROWTH_BYTES: u64 = 8 << 20;

fn deep_bomb() -> String {
    let half = BOMB_BYTES / 2;
    format!("{{\"a\":{}{}}}", "[".repeat(half), "]".repeat(half))
}

fn wide_bomb() -> String {
    let mut bomb = String::with_capacity(BOMB_BYTES + 16);
    bomb.push('{');
    let mut i = 0u64;
    while bomb.len() < BOMB_BYTES {
        bomb.push_str(&format!("\"k{i:09}\":\"{:>80}\",", i));
        i += 1;
    }
    bomb.push_str("\"end\":0}");
    assert!(i >= 100_000);
    bomb
}

fn batch(body: String) -> Vec<ResourceLogs> {
    vec![ResourceLogs {
        scope_logs: vec![ScopeLogs {
            log_records: vec![LogRecord {
                body: Some(AnyValue {
                    value: Some(Value::StringValue(body)),
                }),
                ..LogRecord::default()
            }],
            ..ScopeLogs::default()
        }],
        ..ResourceLogs::default()
    }]
}

#[test]
fn json_bombs_are_refused_without_the_peak_memory_growing_with_them() {
    let mut batches = [batch(deep_bomb()), batch(wide_bomb())];
    let settings = LogProcessing {
        // Past the default cap, so the parser itself meets the whole bomb.
        max_record_bytes: usize::MAX,
        ..LogProcessing::default()
    };
    let now = Instant::now();
    let mut processor = LogProcessor::new(settings, now);
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak resident set");
    let before = proc_status_bytes("self", "VmRSS:");
    let mut refused = Vec::new();
    for batch in &mut batches {
        let counts = processor.process(batch, now);
        refused.extend(counts.iter());
    }
    let growth = proc_status_bytes("self", "VmHWM:").saturating_sub(before);
    assert_eq!(
        refused,
        vec![
            (LogProcessingOutcome::JsonTooDeep, 1),
            (LogProcessingOutcome::JsonTooLarge, 1)
        ]
    );
    assert!(
        growth < PEAK_GROWTH_BYTES,
        "the peak grew by {growth} bytes processing two 10 MiB bombs"
    );
}
