//! Runs the benchmark harness on a tiny workload so it cannot rot: every agent must
//! deliver what it scraped. Timings are printed, never asserted.

use std::path::PathBuf;
use std::time::Duration;

use kaas_bench::{Agent, Workload, compare, exposition, report, run};

/// The debug cluster-agent built next to this test binary.
fn cluster_agent() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let agent = dir.join("cluster-agent");
    assert!(
        agent.is_file(),
        "{} not built; run the workspace tests",
        agent.display()
    );
    agent
}

#[test]
fn expositions_have_the_requested_series_count() {
    for series in [1, 49, 50, 151, 2500] {
        let text = exposition(3, series);
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, series);
    }
}

#[test]
fn every_agent_delivers_on_a_small_workload() {
    let workload = Workload {
        targets: 2,
        series_per_target: 60,
        interval: Duration::from_secs(1),
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(2),
    };
    let agents = [
        Agent::PrometheusAgent,
        Agent::VmAgent,
        Agent::ClusterAgent(cluster_agent()),
    ];
    let results = run(&workload, &agents);
    println!("{}", report(&workload, &results));
    for m in &results {
        assert!(m.expected_samples > 0.0, "{} delivered no scrape", m.agent);
        assert!(
            m.delivered_ratio() > 0.95,
            "{} delivered {:.1}% of its samples",
            m.agent,
            m.delivered_ratio() * 100.0
        );
        assert!(m.peak_rss_bytes > 0 && m.cpu_seconds >= 0.0);
    }
}

/// `agent-bench --baseline-agent`: the same build as old and new, three alternating
/// rounds each in one run; every round delivers and the report prints new/old.
#[test]
fn two_builds_compare_in_alternating_rounds() {
    let workload = Workload {
        targets: 1,
        series_per_target: 60,
        interval: Duration::from_secs(1),
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(2),
    };
    let comparison = compare::compare(
        &workload,
        cluster_agent(),
        cluster_agent(),
        compare::MIN_ROUNDS,
    );
    let text = compare::report(&workload, &comparison);
    println!("{text}");
    assert_eq!(comparison.old.len(), compare::MIN_ROUNDS);
    assert_eq!(comparison.new.len(), compare::MIN_ROUNDS);
    for m in comparison.old.iter().chain(&comparison.new) {
        assert!(
            m.delivered_ratio() > 0.95,
            "a round delivered {:.1}% of its samples",
            m.delivered_ratio() * 100.0
        );
    }
    assert!(text.contains("new/old"), "{text}");
}
