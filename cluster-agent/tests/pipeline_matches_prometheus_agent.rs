//! Differential test of the whole data path: the same nginx-served targets and the same
//! target and metric relabeling through the real Prometheus agent (Debian's package)
//! and through cluster-agent, each remote-writing to its own receiver. The series each
//! receiver gets (label sets, and the latest value of every series) must be equal.
//!
//! Needs `nginx` and `prometheus` (`scripts/test.sh` installs them).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_test_support::peers::{Nginx, Prometheus};
use kaas_test_support::process::{ChildGuard, free_port};
use kaas_test_support::remote_write_receiver::{RemoteWriteReceiver, SeriesLabels};

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
const DEADLINE: Duration = Duration::from_secs(60);

/// What each target exposes: counters, gauges, a histogram, a summary, escapes,
/// special values, and labels that clash with target labels.
fn exposition(target: usize) -> String {
    format!(
        "# HELP http_requests_total Requests.\n\
# TYPE http_requests_total counter\n\
http_requests_total{{method=\"GET\",code=\"200\",job=\"exposed\"}} {}\n\
http_requests_total{{method=\"POST\",code=\"500\",instance=\"inner\"}} 7\n\
http_requests_total{{method=\"Put\",code=\"404\"}} 3\n\
# TYPE temperature_celsius gauge\n\
temperature_celsius{{room=\"a \\\"quoted\\\" \\\\ room\",Zone=\"North\"}} 21.5\n\
temperature_celsius{{room=\"b\",Zone=\"South\"}} NaN\n\
limit_bytes +Inf\n\
debug_internal_state 1\n\
# TYPE latency_seconds histogram\n\
latency_seconds_bucket{{le=\"0.1\"}} 10\n\
latency_seconds_bucket{{le=\"1\"}} 25\n\
latency_seconds_bucket{{le=\"+Inf\"}} 30\n\
latency_seconds_sum 17.5\n\
latency_seconds_count 30\n\
# TYPE rpc_seconds summary\n\
rpc_seconds{{quantile=\"0.5\"}} 0.2\n\
rpc_seconds{{quantile=\"0.99\"}} 1.4\n\
rpc_seconds_sum 120\n\
rpc_seconds_count 600\n\
pod_template_hash_info{{pod_template_hash=\"abc123\",app=\"web\"}} 1\n",
        1000 + target
    )
}

/// Target relabeling, as written in a Prometheus configuration.
const RELABEL: &str = r#"
- source_labels: [__address__]
  regex: '127\.0\.0\.1:(\d+)'
  target_label: port
- action: labelmap
  regex: __meta_fake_(.+)
  replacement: meta_$1
- action: hashmod
  source_labels: [__address__]
  modulus: 2
  target_label: shard
- action: drop
  source_labels: [tier]
  regex: excluded
"#;

/// Metric relabeling, as written in a Prometheus configuration.
const METRIC_RELABEL: &str = r#"
- action: drop
  source_labels: [__name__]
  regex: debug_.*
- action: labeldrop
  regex: pod_template_hash
- action: lowercase
  source_labels: [method]
  target_label: method
- source_labels: [code]
  regex: '(\d)\d\d'
  target_label: code_class
  replacement: '${1}xx'
- action: hashmod
  source_labels: [__name__, room]
  modulus: 8
  target_label: bucket
- action: uppercase
  source_labels: [Zone]
  target_label: zone
- action: labeldrop
  regex: Zone
"#;

fn indent(text: &str, spaces: usize) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{}{l}\n", " ".repeat(spaces)))
        .collect()
}

/// Target addresses with the labels of their group.
type TargetGroup = (Vec<String>, Vec<(&'static str, &'static str)>);

fn target_groups(targets: &[String]) -> Vec<TargetGroup> {
    vec![
        (
            vec![targets[0].clone(), targets[1].clone()],
            vec![("tier", "front"), ("__meta_fake_zone", "eu-1")],
        ),
        (vec![targets[2].clone()], vec![("tier", "excluded")]),
    ]
}

fn prometheus_config(targets: &[String], url: &str) -> String {
    let mut groups = String::new();
    for (addresses, labels) in target_groups(targets) {
        let quoted: Vec<String> = addresses.iter().map(|a| format!("'{a}'")).collect();
        groups.push_str(&format!(
            "      - targets: [{}]\n        labels:\n",
            quoted.join(", ")
        ));
        for (name, value) in labels {
            groups.push_str(&format!("          {name}: '{value}'\n"));
        }
    }
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: diff\n    static_configs:\n{groups}    relabel_configs:\n{}    metric_relabel_configs:\n{}remote_write:\n  - url: {url}\n    queue_config:\n      batch_send_deadline: 1s\n",
        indent(RELABEL, 6),
        indent(METRIC_RELABEL, 6)
    )
}

fn agent_config(targets: &[String], url: &str) -> String {
    let mut groups = String::new();
    for (addresses, labels) in target_groups(targets) {
        let quoted: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
        groups.push_str(&format!(
            "            - addresses: [{}]\n              labels:\n",
            quoted.join(", ")
        ));
        for (name, value) in labels {
            groups.push_str(&format!("                {name}: '{value}'\n"));
        }
    }
    format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n  - metadata:\n      name: diff\n    spec:\n      input:\n        scrapeInterval: 1s\n        scrapeTimeout: 1s\n        static:\n          targets:\n{groups}      processors:\n        relabelConfigs:\n{}        metricRelabelConfigs:\n{}      output:\n        prometheusRemoteWrite:\n          url: {url}\n",
        indent(RELABEL, 10),
        indent(METRIC_RELABEL, 10)
    )
}

/// Each series' latest value that is not a staleness marker; NaN written as "NaN".
fn latest(receiver: &RemoteWriteReceiver) -> BTreeMap<SeriesLabels, String> {
    const STALE: u64 = 0x7ff0_0000_0000_0002;
    receiver
        .accepted()
        .into_iter()
        .filter_map(|(labels, samples)| {
            let mut samples: Vec<(i64, f64)> = samples
                .into_iter()
                .filter(|(_, v)| v.to_bits() != STALE)
                .collect();
            samples.sort_by_key(|(t, _)| *t);
            let (_, value) = *samples.last()?;
            let shown = if value.is_nan() {
                "NaN".to_owned()
            } else {
                value.to_string()
            };
            Some((labels, shown))
        })
        .collect()
}

/// Series whose value legitimately differs between two agents.
fn comparable(series: BTreeMap<SeriesLabels, String>) -> BTreeMap<SeriesLabels, String> {
    series
        .into_iter()
        .map(|(labels, value)| {
            let name = labels
                .iter()
                .find(|(n, _)| n == "__name__")
                .map(|(_, v)| v.as_str());
            let value = match name {
                Some("scrape_duration_seconds") => "<varies>".to_owned(),
                _ => value,
            };
            (labels, value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_and_relabeled_series_equal_the_prometheus_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut nginxes = Vec::new();
    for i in 0..3 {
        let nginx_dir = dir.path().join(format!("nginx-{i}"));
        std::fs::create_dir_all(&nginx_dir).unwrap();
        let nginx = Nginx::start(&nginx_dir);
        nginx.serve("metrics", &exposition(i));
        nginxes.push(nginx);
    }
    let targets: Vec<String> = nginxes.iter().map(Nginx::address).collect();

    let theirs = RemoteWriteReceiver::start().await;
    let ours = RemoteWriteReceiver::start().await;
    let prometheus_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prometheus_dir).unwrap();
    let _prometheus =
        Prometheus::agent(&prometheus_dir, &prometheus_config(&targets, &theirs.url()));

    let agent_config_path = dir.path().join("agent.yaml");
    std::fs::write(&agent_config_path, agent_config(&targets, &ours.url())).unwrap();
    let _agent = ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .arg("run")
            .arg("--config")
            .arg(&agent_config_path)
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
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );

    // Wait until both have delivered several scrapes of both kept targets.
    let until = Instant::now() + DEADLINE;
    let enough = |receiver: &RemoteWriteReceiver| {
        let ups: Vec<usize> = receiver
            .accepted()
            .iter()
            .filter(|(labels, _)| labels.iter().any(|(n, v)| n == "__name__" && v == "up"))
            .map(|(_, samples)| samples.len())
            .collect();
        ups.len() == 2 && ups.iter().all(|n| *n >= 3)
    };
    while !(enough(&theirs) && enough(&ours)) {
        assert!(
            Instant::now() < until,
            "both agents did not deliver three scrapes in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let theirs = comparable(latest(&theirs));
    let ours = comparable(latest(&ours));
    let their_series: BTreeSet<_> = theirs.keys().collect();
    let our_series: BTreeSet<_> = ours.keys().collect();
    assert_eq!(
        our_series.difference(&their_series).collect::<Vec<_>>(),
        Vec::<&&SeriesLabels>::new(),
        "series only cluster-agent sent"
    );
    assert_eq!(
        their_series.difference(&our_series).collect::<Vec<_>>(),
        Vec::<&&SeriesLabels>::new(),
        "series only Prometheus sent"
    );
    assert_eq!(ours, theirs, "latest values differ");
    // The comparison must cover real work: every relabel effect shows up.
    let all: Vec<String> = ours.keys().map(|l| format!("{l:?}")).collect();
    for expected in [
        "\"exported_job\"",
        "\"exported_instance\"",
        "\"meta_zone\"",
        "\"code_class\"",
        "\"bucket\"",
        "\"zone\", \"NORTH\"",
    ] {
        assert!(
            all.iter().any(|s| s.contains(expected)),
            "no series shows {expected}"
        );
    }
    assert!(ours.len() >= 30, "only {} series compared", ours.len());
}
