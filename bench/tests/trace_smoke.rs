//! trace-bench's harness on a tiny workload: each gateway (cluster-agent, rotel)
//! delivers exactly the expected spans of both mixes to the sink, and cluster-agent's
//! processors row exactly the spans its sampling and drop rule keep, so a full run's
//! figures rest on a working harness. Timings are printed, never asserted.
//!
//! Needs the debug `cluster-agent` built (`cargo build -p kaas-cluster-agent`) and
//! rotel (`scripts/test.sh` installs it).

use std::path::PathBuf;

use kaas_bench::traces::peers::{Gateway, Row};
use kaas_bench::traces::workload::{self, SpanMix};
use kaas_bench::traces::{measure, report};
use kaas_test_support::process::workspace_binary;

/// The debug cluster-agent built next to this test binary.
fn cluster_agent() -> PathBuf {
    workspace_binary("cluster-agent", "kaas-cluster-agent")
}

#[test]
fn every_gateway_delivers_exactly_the_expected_spans_of_a_small_workload() {
    let dir = tempfile::tempdir().unwrap();
    let mut sent = Vec::new();
    let mut results = Vec::new();
    for (mix, spans) in [(SpanMix::Small, 4_000), (SpanMix::Kyma, 1_000)] {
        let requests = workload::encode(mix, spans, 100);
        sent.push((mix.name(), spans, requests.bytes()));
        for (gateway, row) in [
            (Gateway::ClusterAgent(cluster_agent()), Row::LikeForLike),
            (Gateway::Rotel, Row::LikeForLike),
            (Gateway::ClusterAgent(cluster_agent()), Row::Processors),
        ] {
            let result = measure(&gateway, row, &requests, 2, dir.path()).unwrap();
            let what = format!("{} on {} ({})", gateway.name(), mix.name(), row.name());
            assert_eq!(
                result.received.distinct, result.expected,
                "{what}: delivered {:?} of {}",
                result.received, result.expected
            );
            assert_eq!(result.received.unknown, 0, "{what}: spans never sent");
            assert!(result.cpu_seconds > 0.0, "{what}: no CPU time read");
            assert!(result.peak_rss > 0, "{what}: no peak RSS read");
            results.push(result);
        }
        // The processors row keeps about half of the nine spans in ten that are not
        // health checks: the expectation is computed, not just copied.
        let processed = results.last().expect("a result");
        assert!(
            processed.expected * 100 > spans * 40 && processed.expected * 100 < spans * 50,
            "{processed:?}"
        );
    }
    let text = report(&sent, &results);
    println!("{text}");
    assert!(text.contains("cluster-agent / rotel"), "{text}");
    assert!(!text.contains("NOT COMPARABLE"), "{text}");
}
