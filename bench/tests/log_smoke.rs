//! log-bench's harness on a tiny workload: each peer delivers every line to the sink
//! exactly as counted, so a full run's figures rest on a working harness. Timings are
//! printed, never asserted.

use kaas_bench::logs::peers::Peer;
use kaas_bench::logs::workload::{self, LogWorkload};
use kaas_bench::logs::{measure, report};

#[test]
fn every_peer_delivers_every_line_of_a_small_workload() {
    let workload = LogWorkload {
        files: 20,
        total_bytes: 2 << 20,
        mean_line_bytes: 256,
        json_percent: 10,
    };
    let dir = tempfile::tempdir().unwrap();
    let files = workload::write(&workload, &dir.path().join("pods")).unwrap();
    let mut results = Vec::new();
    for peer in [Peer::SyslogNg, Peer::Rsyslog] {
        let result = measure(peer, &files, dir.path()).unwrap();
        assert_eq!(
            result.received.distinct,
            files.lines(),
            "{} delivered {} of {} lines",
            peer.name(),
            result.received.distinct,
            files.lines()
        );
        assert_eq!(
            result.received.unknown,
            0,
            "{}: documents without a line id",
            peer.name()
        );
        assert_eq!(result.received.distinct_bytes, files.bytes());
        assert!(
            result.cpu_seconds > 0.0,
            "{}: no CPU time read",
            peer.name()
        );
        assert!(result.peak_rss > 0, "{}: no peak RSS read", peer.name());
        results.push(result);
    }
    let text = report(&workload, &files, 1.0, &results);
    println!("{text}");
    assert!(text.contains("syslog-ng / rsyslog"), "{text}");
    assert!(!text.contains("NOT COMPARABLE"), "{text}");
}
