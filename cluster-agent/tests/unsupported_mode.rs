//! Unsupported mode (issue 18): a pipeline's raw Prometheus scrape configs run on the
//! agent's own scrape loops.
//!
//! - The same `scrape_configs` text (a static job and a file-discovery job, with
//!   params, honor_labels, target and metric relabeling on the discovered metadata)
//!   runs in the real Prometheus agent (Debian's package) and as a cluster-agent
//!   pipeline in unsupported mode, each remote-writing to its own real Prometheus
//!   receiver: the series each receiver holds (names, label sets, latest values) must
//!   be equal.
//! - A pipeline in unsupported mode whose targets are broken (refused connections, a
//!   body that is not an exposition, a missing target file) never affects another
//!   pipeline of the same agent: the healthy one delivers all its series to its own
//!   receiver, and nothing of the broken one arrives there.
//!
//! Needs `nginx` and `prometheus` (`scripts/test.sh` installs them). Every address is
//! on 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_test_support::peers::{Nginx, Prometheus};
use kaas_test_support::process::{ChildGuard, free_port};

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
const DEADLINE: Duration = Duration::from_secs(60);

/// What target `i` exposes: labels that clash with target labels (for
/// `honor_labels`), a histogram, special values and a series metric relabeling drops.
fn exposition(i: usize) -> String {
    format!(
        "# TYPE http_requests_total counter\n\
http_requests_total{{method=\"GET\",code=\"200\",job=\"exposed\"}} {}\n\
http_requests_total{{method=\"POST\",code=\"500\",instance=\"inner\"}} 7\n\
# TYPE temperature_celsius gauge\n\
temperature_celsius{{room=\"a \\\"quoted\\\" room\"}} 21.5\n\
temperature_celsius{{room=\"b\"}} NaN\n\
limit_bytes +Inf\n\
debug_internal_state 1\n\
# TYPE latency_seconds histogram\n\
latency_seconds_bucket{{le=\"0.1\"}} 10\n\
latency_seconds_bucket{{le=\"+Inf\"}} 30\n\
latency_seconds_sum 17.5\n\
latency_seconds_count 30\n",
        1000 + i
    )
}

/// The raw `scrape_configs`, written once and given to both agents as they are.
fn scrape_configs(static_targets: &[String], targets_file: &Path) -> String {
    let quoted: Vec<String> = static_targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        r#"- job_name: static-probe
  scrape_interval: 1s
  scrape_timeout: 1s
  metrics_path: /metrics
  params:
    module: [http_2xx]
  static_configs:
    - targets: [{}]
      labels:
        tier: front
        __meta_fake_zone: eu-1
  relabel_configs:
    - source_labels: [__address__]
      regex: '127\.0\.0\.1:(\d+)'
      target_label: port
    - action: labelmap
      regex: __meta_fake_(.+)
      replacement: meta_$1
    - source_labels: [__param_module]
      target_label: module
  metric_relabel_configs:
    - action: drop
      source_labels: [__name__]
      regex: debug_.*
    - source_labels: [code]
      regex: '(\d)\d\d'
      target_label: code_class
      replacement: '${{1}}xx'
- job_name: file-targets
  scrape_interval: 1s
  scrape_timeout: 1s
  honor_labels: true
  file_sd_configs:
    - files: ['{}']
  relabel_configs:
    - source_labels: [__meta_filepath]
      regex: '.*/([^/]+)'
      target_label: listed_in
"#,
        quoted.join(", "),
        targets_file.display()
    )
}

fn indent(text: &str, spaces: usize) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{}{l}\n", " ".repeat(spaces)))
        .collect()
}

fn prometheus_config(scrape_configs: &str, url: &str) -> String {
    format!(
        "scrape_configs:\n{}remote_write:\n  - url: {url}\n    queue_config:\n      batch_send_deadline: 1s\n",
        indent(scrape_configs, 2)
    )
}

/// A standalone agent configuration holding `pipelines` (YAML list items).
fn agent_config(pipelines: &str) -> String {
    format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n{}",
        indent(pipelines, 2)
    )
}

fn unsupported_pipeline(name: &str, scrape_configs: &str, url: &str) -> String {
    format!(
        "- metadata:\n    name: {name}\n  spec:\n    input:\n      unsupported:\n        scrapeConfigs:\n{}    output:\n      prometheusRemoteWrite:\n        url: {url}\n",
        indent(scrape_configs, 10)
    )
}

/// Starts cluster-agent on `config` (a standalone file in `dir`).
fn start_agent(dir: &Path, config: &str) -> ChildGuard {
    let path = dir.join("agent.yaml");
    std::fs::write(&path, config).expect("the agent configuration is written");
    ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .arg("run")
            .arg("--config")
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.join("agent-data"))
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
    )
}

/// Every series a receiver holds: its labels (name included) and latest value.
fn series(receiver: &Prometheus) -> BTreeMap<BTreeMap<String, String>, String> {
    receiver
        .query(r#"{__name__=~".+"}"#)
        .into_iter()
        .map(|result| {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(result["metric"].clone()).expect("a label set");
            let value = result["value"][1].as_str().unwrap_or_default().to_owned();
            (labels, value)
        })
        .collect()
}

/// Waits until `receiver` holds `targets` `up` series of at least three scrapes each.
fn wait_for_scrapes(receiver: &Prometheus, targets: usize, who: &str) {
    let until = Instant::now() + DEADLINE;
    loop {
        let counts = receiver.query("count_over_time(up[10m])");
        let enough = counts.len() == targets
            && counts.iter().all(|c| {
                c["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|n| n >= 3.0)
            });
        if enough {
            return;
        }
        assert!(
            Instant::now() < until,
            "{who} did not deliver three scrapes of {targets} targets in time: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Values that legitimately differ between two agents scraping the same targets.
fn comparable(
    series: BTreeMap<BTreeMap<String, String>, String>,
) -> BTreeMap<BTreeMap<String, String>, String> {
    series
        .into_iter()
        .map(|(labels, value)| {
            let value = match labels.get("__name__").map(String::as_str) {
                Some("scrape_duration_seconds") => "<varies>".to_owned(),
                _ => value,
            };
            (labels, value)
        })
        .collect()
}

fn nginx_serving(dir: &Path, name: &str, body: &str) -> Nginx {
    let nginx_dir = dir.join(name);
    std::fs::create_dir_all(&nginx_dir).expect("nginx directory");
    let nginx = Nginx::start(&nginx_dir);
    nginx.serve("metrics", body);
    nginx
}

#[test]
fn raw_static_and_file_discovery_configs_equal_the_prometheus_agent() {
    let dir = tempfile::tempdir().unwrap();
    let nginxes: Vec<Nginx> = (0..3)
        .map(|i| nginx_serving(dir.path(), &format!("nginx-{i}"), &exposition(i)))
        .collect();
    let addresses: Vec<String> = nginxes.iter().map(Nginx::address).collect();
    let targets_file = dir.path().join("targets.json");
    std::fs::write(
        &targets_file,
        format!(
            r#"[{{"targets": ["{}", "{}"], "labels": {{"team": "files", "job": "from-file"}}}}]"#,
            addresses[2], addresses[0]
        ),
    )
    .unwrap();
    let configs = scrape_configs(&addresses[..2], &targets_file);

    let theirs_dir = dir.path().join("theirs");
    let ours_dir = dir.path().join("ours");
    let agent_dir = dir.path().join("prometheus-agent");
    for d in [&theirs_dir, &ours_dir, &agent_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let theirs = Prometheus::receiver(&theirs_dir);
    let ours = Prometheus::receiver(&ours_dir);
    let _prometheus = Prometheus::agent(
        &agent_dir,
        &prometheus_config(&configs, &theirs.write_url()),
    );
    let _agent = start_agent(
        dir.path(),
        &agent_config(&unsupported_pipeline("raw", &configs, &ours.write_url())),
    );

    wait_for_scrapes(&theirs, 4, "the Prometheus agent");
    wait_for_scrapes(&ours, 4, "cluster-agent");
    let theirs = comparable(series(&theirs));
    let ours = comparable(series(&ours));
    let their_series: BTreeSet<_> = theirs.keys().collect();
    let our_series: BTreeSet<_> = ours.keys().collect();
    assert_eq!(
        our_series.difference(&their_series).collect::<Vec<_>>(),
        Vec::<&&BTreeMap<String, String>>::new(),
        "series only cluster-agent sent"
    );
    assert_eq!(
        their_series.difference(&our_series).collect::<Vec<_>>(),
        Vec::<&&BTreeMap<String, String>>::new(),
        "series only Prometheus sent"
    );
    assert_eq!(ours, theirs, "latest values differ");
    // The comparison covers real work: each job, discovery's metadata, params,
    // honor_labels and both kinds of relabeling show in the series.
    let shown: Vec<String> = ours.keys().map(|l| format!("{l:?}")).collect();
    for expected in [
        r#""job": "static-probe""#,
        r#""job": "from-file""#,
        r#""listed_in": "targets.json""#,
        r#""meta_zone": "eu-1""#,
        r#""module": "http_2xx""#,
        r#""code_class": "2xx""#,
        r#""exported_job": "exposed""#,
        r#""instance": "inner""#,
    ] {
        assert!(
            shown.iter().any(|s| s.contains(expected)),
            "no series shows {expected}"
        );
    }
    let job_has = |job: &str, name: &str| {
        ours.keys().any(|labels| {
            labels.get("job").map(String::as_str) == Some(job)
                && labels.get("__name__").map(String::as_str) == Some(name)
        })
    };
    assert!(
        !job_has("static-probe", "debug_internal_state"),
        "the static job's metric relabeling did not run"
    );
    assert!(
        job_has("from-file", "debug_internal_state"),
        "metric relabeling of one job reached another"
    );
    assert!(ours.len() >= 40, "only {} series compared", ours.len());
}

#[test]
fn a_broken_unsupported_pipeline_never_affects_another_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let healthy_target = nginx_serving(dir.path(), "healthy", &exposition(0));
    let garbage = nginx_serving(dir.path(), "garbage", "this is { not an exposition\n\0\0");
    let refused = format!("127.0.0.1:{}", free_port());
    let broken_configs = format!(
        r#"- job_name: broken
  scrape_interval: 1s
  scrape_timeout: 1s
  static_configs:
    - targets: ['{refused}', '{}']
- job_name: missing-file
  scrape_interval: 1s
  scrape_timeout: 1s
  file_sd_configs:
    - files: ['{}']
      refresh_interval: 1s
"#,
        garbage.address(),
        dir.path().join("no-such-targets.json").display()
    );
    let healthy_dir = dir.path().join("healthy-receiver");
    let broken_dir = dir.path().join("broken-receiver");
    for d in [&healthy_dir, &broken_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let healthy_receiver = Prometheus::receiver(&healthy_dir);
    let broken_receiver = Prometheus::receiver(&broken_dir);
    let healthy = format!(
        "- metadata:\n    name: healthy\n  spec:\n    input:\n      scrapeInterval: 1s\n      scrapeTimeout: 1s\n      static:\n        targets:\n          - addresses: ['{}']\n    output:\n      prometheusRemoteWrite:\n        url: {}\n",
        healthy_target.address(),
        healthy_receiver.write_url()
    );
    let broken = unsupported_pipeline("broken", &broken_configs, &broken_receiver.write_url());
    let _agent = start_agent(dir.path(), &agent_config(&format!("{healthy}{broken}")));

    wait_for_scrapes(&healthy_receiver, 1, "the healthy pipeline");
    wait_for_scrapes(&broken_receiver, 2, "the broken pipeline");
    let up = |receiver: &Prometheus| -> BTreeMap<String, String> {
        receiver
            .query("up")
            .into_iter()
            .map(|r| {
                let instance = r["metric"]["instance"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                (
                    instance,
                    r["value"][1].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        up(&healthy_receiver),
        BTreeMap::from([(healthy_target.address(), "1".to_owned())]),
        "the healthy pipeline scrapes its own target only, and successfully"
    );
    assert_eq!(
        up(&broken_receiver),
        BTreeMap::from([
            (refused.clone(), "0".to_owned()),
            (garbage.address(), "0".to_owned()),
        ]),
        "the broken pipeline's targets are down, in its own receiver"
    );
    let healthy_series = series(&healthy_receiver);
    assert!(
        healthy_series
            .keys()
            .all(|labels| labels.get("job").map(String::as_str) == Some("healthy")),
        "a series of the broken pipeline reached the healthy one's receiver: {healthy_series:?}"
    );
    assert!(
        healthy_series
            .keys()
            .any(|labels| labels.get("__name__").map(String::as_str)
                == Some("latency_seconds_count")),
        "the healthy pipeline's scraped series are missing"
    );
}
