//! Differential test: the same targets and relabel rules through the real Prometheus
//! (Debian's package, in agent mode) and through cluster-agent's relabeling. Prometheus
//! reports each target's labels before and after relabeling on `/api/v1/targets`; ours
//! must be identical, and the targets it dropped must be the ones we drop.
//!
//! Needs `prometheus` on PATH (`scripts/test.sh` installs it).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_cluster_agent::labels::{ADDRESS, Labels};
use kaas_cluster_agent::scrape::target::{ScrapeDefaults, populate, public_labels};
use kaas_pipeline::processors::{RelabelConfig, compile_rule};
use kaas_test_support::process::{ChildGuard, free_port};
use serde_json::Value;

/// Rules exercising every action, written as a Prometheus user would.
const RULES: &str = r#"
- source_labels: [__address__]
  regex: '127\.0\.0\.1:(\d+)'
  target_label: port
- action: hashmod
  source_labels: [__address__]
  modulus: 3
  target_label: shard
- action: drop
  source_labels: [env]
  regex: dev
- action: keep
  source_labels: [team, shard]
  regex: '(a|b|c);[01]|d;.*'
- action: keepequal
  source_labels: [absent_a]
  target_label: absent_b
- action: labelmap
  regex: __meta_kubernetes_pod_label_(.+)
  replacement: k8s_$1
- action: lowercase
  source_labels: [tier]
  target_label: tier_lower
- action: uppercase
  source_labels: [team, env]
  target_label: team_env_upper
- action: dropequal
  source_labels: [port]
  target_label: blocked_port
- source_labels: [team, env]
  regex: '(.+);(.+)'
  target_label: '${1}_env'
  replacement: '$2'
- source_labels: [remove_me]
  regex: '.*'
  target_label: remove_me
  replacement: ''
- source_labels: [__address__]
  regex: '(.*):(1000[0-4])'
  target_label: instance
  replacement: 'low-$2'
- action: labeldrop
  regex: 'unused_.*'
- action: labelkeep
  regex: '__.*|job|instance|team|env|port|shard|k8s_.*|tier.*|team_env_upper|.+_env|remove_me'
"#;

/// Target groups: (labels, number of targets). Ports count up from 10000.
fn groups() -> Vec<(Vec<(&'static str, &'static str)>, usize)> {
    vec![
        (
            vec![
                ("team", "a"),
                ("env", "prod"),
                ("tier", "FrontEnd"),
                ("__meta_kubernetes_pod_label_app", "web"),
            ],
            12,
        ),
        (vec![("team", "b"), ("env", "dev"), ("unused_x", "1")], 6),
        (
            vec![
                ("team", "c"),
                ("env", "staging"),
                ("remove_me", "gone"),
                ("unused_y", "2"),
            ],
            9,
        ),
        (
            vec![("team", "d"), ("env", "prod"), ("blocked_port", "10030")],
            5,
        ),
        (vec![("team", "d"), ("absent_a", "x")], 3),
        (vec![("team", "e"), ("env", "prod")], 4),
        (
            vec![
                ("team", "d"),
                ("__meta_kubernetes_pod_label_app", "api"),
                ("__meta_kubernetes_pod_label_tier", "back"),
                ("k8s_app", "shadowed"),
            ],
            4,
        ),
    ]
}

fn prometheus_binary() -> String {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|path| path.is_file());
    found
        .unwrap_or_else(|| panic!("prometheus is not installed; scripts/test.sh installs it (apt-get install prometheus)"))
        .display()
        .to_string()
}

fn prometheus_config() -> String {
    let mut config = String::from(
        "global:\n  scrape_interval: 1h\n  scrape_timeout: 10s\nscrape_configs:\n  - job_name: diff\n    static_configs:\n",
    );
    let mut port = 10000;
    for (labels, count) in groups() {
        let targets: Vec<String> = (0..count)
            .map(|_| {
                port += 1;
                format!("'127.0.0.1:{}'", port - 1)
            })
            .collect();
        config.push_str(&format!("      - targets: [{}]\n", targets.join(", ")));
        config.push_str("        labels:\n");
        for (name, value) in labels {
            config.push_str(&format!("          {name}: '{value}'\n"));
        }
    }
    config.push_str("    relabel_configs:\n");
    for line in RULES.lines().filter(|l| !l.is_empty()) {
        config.push_str(&format!("      {line}\n"));
    }
    config
}

fn labels_of(value: &Value) -> Labels {
    let map: BTreeMap<String, String> =
        serde_json::from_value(value.clone()).expect("a label object");
    Labels::from_pairs(map)
}

#[test]
fn target_relabeling_is_identical_to_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, prometheus_config()).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = ChildGuard::spawn(
        "prometheus",
        Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config_path.display()))
            .arg("--enable-feature=agent")
            .arg(format!(
                "--storage.agent.path={}",
                dir.path().join("wal").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log),
    );

    let total: usize = groups().iter().map(|(_, n)| n).sum();
    let url = format!("http://127.0.0.1:{port}/api/v1/targets?state=any");
    let deadline = Instant::now() + Duration::from_secs(60);
    let data = loop {
        if let Ok((200, body)) = kaas_test_support::http::get(&url) {
            let json: Value = serde_json::from_str(&body).unwrap();
            let data = json["data"].clone();
            let seen = data["activeTargets"].as_array().map_or(0, Vec::len)
                + data["droppedTargets"].as_array().map_or(0, Vec::len);
            if seen == total {
                break data;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not report {total} targets in time; log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    let configs: Vec<RelabelConfig> = serde_yaml::from_str(RULES).unwrap();
    let rules: Vec<_> = configs.iter().map(|c| compile_rule(c).unwrap()).collect();
    let defaults = ScrapeDefaults {
        job: "diff".into(),
        interval: Duration::from_secs(3600),
        timeout: Duration::from_secs(10),
        metrics_path: "/metrics".into(),
        scheme: "http".into(),
    };

    // Our view of every discovered target, keyed by address.
    let mut ours = BTreeMap::new();
    let mut port = 10000;
    for (group_labels, count) in groups() {
        for _ in 0..count {
            let address = format!("127.0.0.1:{port}");
            port += 1;
            let discovered = Labels::from_pairs(
                group_labels
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .chain([(ADDRESS.to_owned(), address.clone())]),
            );
            ours.insert(address, discovered);
        }
    }

    let mut kept = 0;
    for target in data["activeTargets"].as_array().unwrap() {
        let theirs_discovered = labels_of(&target["discoveredLabels"]);
        let address = theirs_discovered.get(ADDRESS).to_owned();
        let result = populate(&ours[&address], &defaults, &rules).unwrap();
        let ours_public = public_labels(&result.unwrap_or_else(|| {
            panic!(
                "we dropped {address}, Prometheus kept it as {}",
                target["labels"]
            )
        }));
        assert_eq!(
            ours_public,
            labels_of(&target["labels"]),
            "labels of {address}"
        );
        kept += 1;
    }
    let mut dropped = 0;
    for target in data["droppedTargets"].as_array().unwrap() {
        let address = labels_of(&target["discoveredLabels"])
            .get(ADDRESS)
            .to_owned();
        let result = populate(&ours[&address], &defaults, &rules).unwrap();
        assert_eq!(result, None, "Prometheus dropped {address}, we kept it");
        dropped += 1;
    }
    // The rules must both keep and drop targets, or the comparison proves little.
    assert!(
        kept >= 10 && dropped >= 10,
        "kept {kept}, dropped {dropped}"
    );
}
