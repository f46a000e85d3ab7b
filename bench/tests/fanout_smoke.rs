//! Runs the fan-out harness with a handful of agents against the debug observer, so it
//! cannot rot: every agent must join, receive the pipeline change, have it acknowledged
//! and come back after the observer is killed. Timings are printed, never asserted.

use std::path::PathBuf;
use std::time::Duration;

use kaas_bench::fanout::{FanoutSettings, Phase, run};

/// Few enough for a loaded CI machine, more than the setup concurrency per join channel.
const AGENTS: usize = 20;

/// The debug observer built next to this test binary.
fn observer() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let observer = dir.join("observer");
    assert!(
        observer.is_file(),
        "{} not built; run the workspace tests (cargo nextest run --workspace)",
        observer.display()
    );
    observer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_converges_and_reconnects_after_a_restart() {
    let settings = FanoutSettings {
        setup_concurrency: 8,
        setup_deadline: Duration::from_secs(30),
        converge_deadline: Duration::from_secs(20),
        // The agents' backoff windows grow 1, 2, 4, 8 s while the observer restarts.
        storm_deadline: Duration::from_secs(30),
        quiet: Duration::from_millis(300),
        ..FanoutSettings::new(AGENTS, observer())
    };
    let report = run(&settings).await.expect("the benchmark runs");
    println!("{}", report.render());
    assert_eq!(report.convergence.pushed.len(), AGENTS, "pushed");
    assert_eq!(report.converged(), AGENTS, "acknowledged in the API");
    assert!(
        report.convergence.status_true.is_some(),
        "ConfigurationApplied never turned True"
    );
    assert!(
        report.storm.settled_after.is_some(),
        "not every agent came back"
    );
    assert_eq!(report.reconnected(), AGENTS);
    assert_eq!(
        report.refusals(Phase::Restart) + report.refusals(Phase::Storm),
        0,
        "{:?}",
        report.failures
    );
    assert!(report.connected.rss_bytes > 0 && report.idle.rss_bytes > 0);
    // Every agent that came back finished a handshake with the restarted observer's
    // TLS front, and none waited in vain.
    let handshakes = report.storm.handshakes;
    assert!(
        handshakes.handshakes_succeeded >= AGENTS as u64,
        "{handshakes:?}"
    );
    assert_eq!(handshakes.handshakes_timed_out, 0, "{handshakes:?}");
    // All agents come from 127.0.0.1: the bench's --control-max-pending-per-address
    // keeps the per-address cap from refusing them.
    assert_eq!(handshakes.handshakes_refused, 0, "{handshakes:?}");
}
