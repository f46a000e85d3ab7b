//! The observer's metric table (the `//!` table of `observer/src/telemetry.rs`) against
//! what a running `observer serve` registers: started on loopback with every optional
//! source of metrics on (API over TLS, the fleet remote writer, OTLP self-telemetry,
//! the Grafana sync, all pointed at 127.0.0.1), its `/metrics` declares exactly the families the
//! table lists, except the labelled counters that show only once they counted
//! something ([`SHOWN_ONCE_COUNTED`]). A family registered without a row, or a row for
//! a family nobody registers, fails here.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_test_support::http;
use kaas_test_support::process::{ChildGuard, free_port};
use kaas_test_support::tls::TestPki;

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

/// Families prometheus-client leaves out of the exposition while they have no series:
/// labelled counters and histograms of events that did not happen in this test (API
/// requests, handshakes, pushes, joins, refusals, onboarding syncs, the per-source
/// gauge of held deletions, set by a source's first pass; a Grafana pass counts only
/// once it is over). Each must still be a row of the table.
const SHOWN_ONCE_COUNTED: &[&str] = &[
    "kaas_observer_grafana_syncs_total",
    "kaas_observer_api_refusals_total",
    "kaas_observer_api_request_duration_seconds",
    "kaas_observer_api_requests_total",
    "kaas_observer_api_tls_handshakes_total",
    "kaas_observer_config_pushes_total",
    "kaas_observer_deletions_pending",
    "kaas_observer_egress_refusals_total",
    "kaas_observer_join_failures_total",
    "kaas_observer_onboarding_cluster_changes_total",
    "kaas_observer_onboarding_last_success_timestamp_seconds",
    "kaas_observer_onboarding_syncs_total",
    "kaas_observer_tls_handshakes_total",
];

/// The table's metric names, in its order.
fn documented() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/telemetry.rs");
    let source = std::fs::read_to_string(&path).expect("observer/src/telemetry.rs");
    source
        .lines()
        .filter_map(|line| line.strip_prefix("//! | `"))
        .map(|row| row.split('`').next().unwrap_or_default().to_owned())
        .collect()
}

/// The families a text exposition declares, with counters under their `_total` name.
fn declared(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            let (name, kind) = (words.next()?, words.next()?);
            Some(if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            })
        })
        .collect()
}

#[test]
fn the_metric_table_lists_exactly_what_the_observer_registers() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["127.0.0.1"]);
    let files = pki.write(dir.path());
    let (api_port, metrics_port) = (free_port(), free_port());
    // Nothing listens on these: the writer's and the exporter's attempts fail, which
    // is all their metrics need to be registered.
    let remote_write = format!("http://127.0.0.1:{}/api/v1/write", free_port());
    let otlp = format!("http://127.0.0.1:{}", free_port());
    let grafana = format!("http://127.0.0.1:{}", free_port());
    let grafana_password = dir.path().join("grafana-admin-password");
    std::fs::write(&grafana_password, "unused").unwrap();
    let _observer = ChildGuard::spawn(
        "observer",
        Command::new(OBSERVER)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--metrics-listen-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--grpc-listen-address")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--api-tls-cert-file")
            .arg(&files.server_cert)
            .arg("--api-tls-key-file")
            .arg(&files.server_key)
            .args(["--central-remote-write-url", &remote_write])
            .args(["--otlp-endpoint", &otlp])
            .args(["--grafana-url", &grafana])
            .arg("--grafana-admin-password-file")
            .arg(&grafana_password)
            .args(["--thanos-query-url", "http://127.0.0.1:9/"])
            .args(["--thanos-query-tenancy-url", "http://127.0.0.1:10/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let until = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Ok((200, text)) = http::get(&metrics) {
            break text;
        }
        assert!(Instant::now() < until, "the observer did not start");
        std::thread::sleep(Duration::from_millis(100));
    };

    let table = documented();
    let served = declared(&text);
    assert!(table.len() > 20, "the table was not found: {table:?}");
    let unique: BTreeSet<&String> = table.iter().collect();
    assert_eq!(
        unique.len(),
        table.len(),
        "a row is listed twice: {table:?}"
    );
    let served_set: BTreeSet<&String> = served.iter().collect();
    assert_eq!(
        served_set.len(),
        served.len(),
        "a family is registered twice:\n{text}"
    );
    let missing: Vec<&&String> = served_set.difference(&unique).collect();
    let stale: Vec<&&String> = unique
        .difference(&served_set)
        .filter(|name| !SHOWN_ONCE_COUNTED.contains(&name.as_str()))
        .collect();
    for name in SHOWN_ONCE_COUNTED {
        assert!(
            table.iter().any(|row| row == name),
            "{name} is not a row of the table"
        );
    }
    assert!(
        missing.is_empty() && stale.is_empty(),
        "registered but not in the table: {missing:?}\nin the table but not registered: {stale:?}"
    );
}
