//! The running observer's `/metrics` against the catalogue (`docs/metrics.yaml`): every
//! metric the catalogue says the observer serves is there, except the few that only
//! exist once their feature is configured or has happened; the REST API's requests are
//! counted by route template.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_test_support::http;
use kaas_test_support::process::{ChildGuard, free_port};

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

/// Catalogue metrics a fresh observer with default flags does not serve yet: onboarding
/// and the fleet remote writer are off by default, and pushes are counted per outcome
/// once one happened; self-telemetry's counters exist only with `--otlp-endpoint`.
const SERVED_ONLY_ONCE_USED: &[&str] = &[
    "kaas_observer_config_pushes_total",
    "kaas_observer_tls_handshakes_total",
    "kaas_observer_join_failures_total",
    "kaas_observer_onboarding_syncs_total",
    "kaas_observer_onboarding_cluster_changes_total",
    "kaas_observer_onboarding_last_success_timestamp_seconds",
    "kaas_observer_remote_write_samples_total",
    "kaas_observer_remote_write_last_success_timestamp_seconds",
];

#[derive(serde::Deserialize)]
struct Catalogue {
    metrics: Vec<Entry>,
}

#[derive(serde::Deserialize)]
struct Entry {
    name: String,
    emitted_by: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The families a text exposition declares (`# TYPE name …`).
fn families(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect()
}

#[test]
fn the_observer_serves_its_catalogued_metrics_and_counts_api_requests() {
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    let _observer = ChildGuard::spawn(
        "observer",
        Command::new(OBSERVER)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--grpc-listen-address")
            .arg(format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let api = format!("http://127.0.0.1:{api_port}");
    let until = Instant::now() + Duration::from_secs(30);
    while http::get(&format!("{api}/readyz")).map(|(s, _)| s) != Ok(200) {
        assert!(Instant::now() < until, "the observer did not get ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    for name in ["a", "b"] {
        let (status, _) = http::get_with(
            &format!("{api}/api/v1/clusters/{name}"),
            &[("Authorization", &bearer)],
        )
        .unwrap();
        assert_eq!(status, 404);
    }
    let (status, text) = http::get(&format!("{api}/metrics")).unwrap();
    assert_eq!(status, 200);

    let served = families(&text);
    let catalogue: Catalogue =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join("docs/metrics.yaml")).unwrap())
            .unwrap();
    let missing: Vec<&str> = catalogue
        .metrics
        .iter()
        .filter(|m| m.emitted_by.starts_with("observer (/metrics)"))
        .map(|m| m.name.as_str())
        .filter(|name| !SERVED_ONLY_ONCE_USED.contains(name))
        .filter(|name| {
            let family = name.strip_suffix("_total").unwrap_or(name);
            !served.contains(name) && !served.contains(&family)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/metrics.yaml says the observer serves {missing:?}, /metrics does not:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "kaas_observer_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(
        text.contains(
            r#"kaas_observer_api_requests_total{method="GET",route="/api/v1/clusters/{name}",code="404"} 2"#
        ),
        "{text}"
    );
}
