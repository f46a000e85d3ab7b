//! Two observers watching each other (issue 15; seed 004: "observer clusters side by
//! side, observing each other"): site A's observer is scraped by site A's peer-watch
//! agent, which remote-writes its `up` to site B's receiver. Here site A's observer is
//! a real `observer serve`, its peer-watch agent a real `cluster-agent` run with the
//! documented configuration (`deploy/integrations/peer-watch/files/peer-watch.yaml`,
//! with this test's addresses), and site B's receiver a real Prometheus. Killing
//! observer A shows at B as A's `up` dropping to 0, which the peer alert's expression
//! (`alerts/kaas-observer-peer.rules.yaml`) selects; that the alert then fires and
//! clears is `alerts/tests/peer.test.yaml` (promtool).
//!
//! Needs `prometheus` and the `cluster-agent` binary (`cargo build -p
//! kaas-cluster-agent`; scripts/test.sh builds the workspace).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_test_support::http;
use kaas_test_support::peers::Prometheus;
use kaas_test_support::process::{ChildGuard, free_port, workspace_binary};

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");
/// How long series may take to arrive; generous, the actual time is a few seconds.
const DEADLINE: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts `observer serve` in `dir` on loopback ports; its metrics address.
fn start_observer(dir: &Path) -> (ChildGuard, String) {
    let (api_port, metrics_port) = (free_port(), free_port());
    let process = ChildGuard::spawn(
        "observer A",
        Command::new(OBSERVER)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--metrics-listen-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--grpc-listen-address")
            .arg(format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let until = Instant::now() + DEADLINE;
    while http::get(&format!("http://127.0.0.1:{api_port}/readyz")).map(|(s, _)| s) != Ok(200) {
        assert!(Instant::now() < until, "observer A did not get ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    (process, format!("127.0.0.1:{metrics_port}"))
}

/// The documented peer-watch configuration with this test's addresses: the observer
/// as a static target (no Kubernetes here, so the pod-discovery `keep` rule goes),
/// one-second scrapes, and site B's receiver over plain HTTP without credentials.
fn peer_watch_config(observer_metrics: &str, receiver_url: &str) -> (String, String) {
    let path = repo().join("deploy/integrations/peer-watch/files/peer-watch.yaml");
    let text = std::fs::read_to_string(&path).expect("the peer-watch configuration");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let site = config["externalLabels"]["site"]
        .as_str()
        .expect("the site label")
        .to_owned();
    let spec = &mut config["pipelines"][0]["spec"];
    spec["input"] = serde_yaml::from_str(&format!(
        "{{scrapeInterval: 1s, static: {{targets: [{{addresses: [\"{observer_metrics}\"]}}]}}}}"
    ))
    .expect("an input");
    let relabel = spec["processors"]["relabelConfigs"]
        .as_sequence_mut()
        .expect("relabel rules");
    assert_eq!(relabel[0]["action"], "keep", "the pod-discovery rule");
    relabel.remove(0);
    let output = &mut spec["output"]["prometheusRemoteWrite"];
    output["url"] = receiver_url.into();
    if let Some(output) = output.as_mapping_mut() {
        output.remove("authentication");
    }
    (
        serde_yaml::to_string(&config).expect("the configuration as YAML"),
        site,
    )
}

/// The alert's expression from the rule file.
fn peer_alert_expr() -> String {
    let path = repo().join("alerts/kaas-observer-peer.rules.yaml");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("the rules")).expect("YAML");
    rules["groups"][0]["rules"][0]["expr"]
        .as_str()
        .expect("an expression")
        .to_owned()
}

/// Polls `expr` at `prometheus` until `check` accepts the result.
fn wait_until(
    prometheus: &Prometheus,
    expr: &str,
    what: &str,
    check: impl Fn(&[serde_json::Value]) -> bool,
    log: &Path,
) -> Vec<serde_json::Value> {
    let until = Instant::now() + DEADLINE;
    loop {
        let result = prometheus.query(expr);
        if check(&result) {
            return result;
        }
        assert!(
            Instant::now() < until,
            "{what}: {expr} gave {result:?}; peer-watch agent log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Seed 004 (issue 15, "two observers watching each other"): before, an observer's
/// self-monitoring went only to its own site, so a site that died whole (observer,
/// Thanos and Alertmanager) paged nobody. Now site A's peer-watch agent writes A's
/// observer `up` to site B: killing observer A shows at B as `up == 0` for site A,
/// which the peer alert selects, and nothing but the scrape's report series of A
/// crosses over.
#[test]
fn killing_observer_a_shows_it_down_in_site_bs_data() {
    let dir = tempfile::tempdir().expect("a directory");
    let receiver_dir = dir.path().join("site-b");
    std::fs::create_dir_all(&receiver_dir).expect("a directory");
    let site_b = Prometheus::receiver(&receiver_dir);
    let observer_dir = dir.path().join("observer-a");
    std::fs::create_dir_all(&observer_dir).expect("a directory");
    let (observer_a, metrics) = start_observer(&observer_dir);

    let (config, site) = peer_watch_config(&metrics, &site_b.write_url());
    let config_path = dir.path().join("peer-watch.yaml");
    std::fs::write(&config_path, config).expect("write the configuration");
    let log = dir.path().join("agent.log");
    let _agent = ChildGuard::spawn(
        "peer-watch agent",
        Command::new(workspace_binary("cluster-agent", "kaas-cluster-agent"))
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.path().join("agent-data"))
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--otlp-grpc-listen-address")
            .arg("127.0.0.1:0")
            .arg("--otlp-http-listen-address")
            .arg("127.0.0.1:0")
            .arg("--zipkin-listen-address")
            .arg("127.0.0.1:0")
            .arg("--kubernetes")
            .arg("off")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the agent log")),
    );

    let up = format!(r#"up{{job="kaas-observer-peer", site="{site}"}}"#);
    let series = wait_until(
        &site_b,
        &format!("{up} == 1"),
        "observer A up at site B",
        |r| !r.is_empty(),
        &log,
    );
    assert_eq!(series[0]["metric"]["cluster"], "management");
    assert_eq!(series[0]["metric"]["instance"], metrics);
    let alert = peer_alert_expr();
    assert!(
        site_b.query(&alert).is_empty(),
        "the peer alert selects a healthy peer"
    );
    // Only the report series cross: none of the observer's own families.
    let names: Vec<String> = site_b
        .query(&format!(r#"count by (__name__) ({{site="{site}"}})"#))
        .iter()
        .map(|r| {
            r["metric"]["__name__"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        names.iter().all(|n| n == "up" || n.starts_with("scrape_")),
        "{names:?}"
    );

    // Observer A dies (SIGKILL); its peer-watch agent keeps reporting.
    drop(observer_a);
    wait_until(
        &site_b,
        &format!("{up} == 0"),
        "observer A down at site B",
        |r| !r.is_empty(),
        &log,
    );
    let selected = site_b.query(&alert);
    assert_eq!(selected.len(), 1, "{selected:?}");
    assert_eq!(selected[0]["metric"]["site"], site.as_str());
}
