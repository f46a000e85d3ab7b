//! log-bench's harness on a tiny workload: each agent (cluster-agent, syslog-ng,
//! rsyslog) delivers every line to the sink exactly as counted, so a full run's
//! figures rest on a working harness. Timings are printed, never asserted.
//!
//! Needs the debug `cluster-agent` built (`cargo build -p kaas-cluster-agent`).

use std::path::PathBuf;

use kaas_bench::logs::peers::Peer;
use kaas_bench::logs::workload::{self, LogWorkload};
use kaas_bench::logs::{measure, report};

/// The debug cluster-agent built next to this test binary.
fn cluster_agent() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let agent = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .join("cluster-agent");
    assert!(
        agent.is_file(),
        "{} not built; build kaas-cluster-agent first",
        agent.display()
    );
    agent
}

#[test]
fn every_agent_delivers_every_line_of_a_small_workload() {
    let workload = LogWorkload {
        files: 20,
        total_bytes: 2 << 20,
        mean_line_bytes: 256,
        json_percent: 10,
    };
    let dir = tempfile::tempdir().unwrap();
    let files = workload::write(&workload, &dir.path().join("pods")).unwrap();
    let mut results = Vec::new();
    for peer in [
        Peer::ClusterAgent(cluster_agent()),
        Peer::SyslogNg,
        Peer::Rsyslog,
    ] {
        let result = measure(&peer, &files, dir.path()).unwrap();
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
    assert!(text.contains("cluster-agent / syslog-ng"), "{text}");
    assert!(text.contains("syslog-ng / rsyslog"), "{text}");
    assert!(!text.contains("NOT COMPARABLE"), "{text}");
}
