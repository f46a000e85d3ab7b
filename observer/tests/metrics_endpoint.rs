//! The running observer's `/metrics` against the catalogue (`docs/metrics.yaml`): every
//! metric the catalogue says the observer serves is there, except the few that only
//! exist once their feature is configured or has happened; the REST API's requests are
//! counted by route template. `/metrics` is served on its own listen address only, not
//! on the API's, and behind a bearer token when one is configured.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_test_support::http;
use kaas_test_support::process::{ChildGuard, free_port};

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

/// Catalogue metrics a fresh observer with default flags does not serve yet: onboarding
/// and the fleet remote writer are off by default, and pushes are counted per outcome
/// once one happened (egress refusals and refused joins too); self-telemetry's counters
/// exist only with `--otlp-endpoint`.
const SERVED_ONLY_ONCE_USED: &[&str] = &[
    "kaas_observer_config_pushes_total",
    "kaas_observer_egress_refusals_total",
    "kaas_observer_tls_handshakes_total",
    // Only with --api-tls-cert-file (tests/api_tls.rs).
    "kaas_observer_api_tls_handshakes_total",
    "kaas_observer_api_tls_handshakes_waiting",
    "kaas_observer_join_failures_total",
    "kaas_observer_onboarding_syncs_total",
    "kaas_observer_onboarding_cluster_changes_total",
    "kaas_observer_onboarding_last_success_timestamp_seconds",
    "kaas_observer_deletions_pending",
    "kaas_observer_remote_write_samples_total",
    "kaas_observer_remote_write_last_success_timestamp_seconds",
    // Only with --grafana-url (tests/metric_table.rs, tests/grafana_orgs.rs).
    "kaas_observer_grafana_syncs_total",
    "kaas_observer_grafana_last_success_timestamp_seconds",
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

/// A running `observer serve` on loopback ports.
struct Observer {
    api: String,
    metrics: String,
    bearer: String,
    _process: ChildGuard,
    _dir: tempfile::TempDir,
}

/// Starts `observer serve` with `extra` flags and waits until it is ready.
fn start(extra: &[&str]) -> Observer {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (api_port, metrics_port) = (free_port(), free_port());
    let process = ChildGuard::spawn(
        "observer",
        Command::new(OBSERVER)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--metrics-listen-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--grpc-listen-address")
            .arg(format!("127.0.0.1:{}", free_port()))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let api = format!("http://127.0.0.1:{api_port}");
    let until = Instant::now() + Duration::from_secs(30);
    while http::get(&format!("{api}/readyz")).map(|(s, _)| s) != Ok(200) {
        assert!(Instant::now() < until, "the observer did not get ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let token = std::fs::read_to_string(dir.path().join("admin.token")).expect("admin token");
    Observer {
        api,
        metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
        bearer: format!("Bearer {}", token.trim()),
        _process: process,
        _dir: dir,
    }
}

impl Observer {
    /// Creates a tenant and a cluster of it through the API.
    fn add_cluster(&self, tenant: &str, cluster: &str) {
        let headers = [
            ("Authorization", self.bearer.as_str()),
            ("Content-Type", "application/json"),
        ];
        for (path, body) in [
            ("tenants", format!(r#"{{"name":"{tenant}"}}"#)),
            (
                "clusters",
                format!(r#"{{"name":"{cluster}","tenant":"{tenant}"}}"#),
            ),
        ] {
            let (status, answer) = http::post(
                &format!("{}/api/v1/{path}", self.api),
                &headers,
                body.as_bytes(),
            )
            .expect("POST");
            assert_eq!(status, 201, "{answer}");
        }
    }
}

#[test]
fn the_observer_serves_its_catalogued_metrics_and_counts_api_requests() {
    let observer = start(&[]);
    let (api, bearer) = (&observer.api, &observer.bearer);
    for name in ["a", "b"] {
        let (status, _) = http::get_with(
            &format!("{api}/api/v1/clusters/{name}"),
            &[("Authorization", bearer)],
        )
        .unwrap();
        assert_eq!(status, 404);
    }
    let (status, text) = http::get(&observer.metrics).unwrap();
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

/// Issue 13, finding 8: `/metrics` is not on the tenant API's port. On 552c13e
/// `GET /metrics` on the API port answered 200 without a token, listing every tenant
/// and cluster (`kaas_cluster_info{cluster,tenant,state}`); now the API port answers
/// 404 (with or without a token, as for any unknown path) and the series are on the
/// metrics listener.
#[test]
fn the_api_port_shows_nothing_about_tenants_and_the_metrics_listener_does() {
    let observer = start(&[]);
    observer.add_cluster("bank", "vault-1");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = http::get(&observer.metrics).unwrap();
        assert_eq!(status, 200);
        if text.contains("cluster=\"bank.vault-1\"") && text.contains("tenant=\"bank\"") {
            break;
        }
        assert!(
            Instant::now() < until,
            "the cluster never showed up:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let auth = [("Authorization", observer.bearer.as_str())];
    for headers in [&[][..], &auth[..]] {
        let (status, text) = http::get_with(&format!("{}/metrics", observer.api), headers).unwrap();
        assert_eq!(status, 404, "{text}");
        assert!(
            !text.contains("vault-1") && !text.contains("kaas_"),
            "{text}"
        );
    }
}

/// Issue 13, finding 8: with `--metrics-token-file` the metrics listener serves only a
/// caller with that bearer token. On 552c13e there was no such flag (the observer
/// refused to start) and `/metrics` was open to anyone who reached the API.
#[test]
fn with_a_token_file_the_metrics_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, "metrics-s3cret\n").unwrap();
    let observer = start(&["--metrics-token-file", token_file.to_str().unwrap()]);
    for refused in [&[][..], &[("Authorization", "Bearer wrong")][..]] {
        let (status, text) = http::get_with(&observer.metrics, refused).unwrap();
        assert_eq!(status, 401, "{text}");
        assert!(!text.contains("kaas_"), "{text}");
    }
    // The API's admin token is not the metrics token either.
    let admin = [("Authorization", observer.bearer.as_str())];
    assert_eq!(http::get_with(&observer.metrics, &admin).unwrap().0, 401);
    let (status, text) = http::get_with(
        &observer.metrics,
        &[("Authorization", "Bearer metrics-s3cret")],
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("kaas_observer_build_info"), "{text}");
}
