//! Kubernetes discovery into scrape targets, end to end without an API server: the
//! test publishes pod snapshots (what the reflector publishes), a pod "runs" on
//! 127.0.0.1 where nginx serves its metrics, and the pipeline must scrape exactly the
//! annotated pods of the namespaces it admits, and mark their series stale when they go.
//!
//! Needs `nginx` (`scripts/test.sh` installs it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kaas_cluster_agent::agent::Agent;
use kaas_cluster_agent::exporters::auth::NoSecrets;
use kaas_cluster_agent::labels::Labels;
use kaas_cluster_agent::pipeline::runtime::AgentContext;
use kaas_pipeline::agent_config::AgentConfig;
use kaas_test_support::peers::Nginx;
use kaas_test_support::remote_write_receiver::{RemoteWriteReceiver, Samples, SeriesLabels};

const DEADLINE: Duration = Duration::from_secs(20);
const STALE: u64 = 0x7ff0_0000_0000_0002;

fn pod(name: &str, namespace: &str, port: u16, annotated: bool) -> Arc<Pod> {
    let annotations = if annotated {
        serde_json::json!({"prometheus.io/scrape": "true", "prometheus.io/port": port.to_string()})
    } else {
        serde_json::json!({})
    };
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "ports": [{"containerPort": port}]}]},
            "status": {"podIP": "127.0.0.1", "phase": "Running"}
        }))
        .expect("pod JSON"),
    )
}

fn series_with(receiver: &RemoteWriteReceiver, name: &str) -> Vec<(SeriesLabels, Samples)> {
    receiver
        .accepted()
        .into_iter()
        .filter(|(labels, _)| labels.iter().any(|(n, v)| n == "__name__" && v == name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_pods_are_scraped_and_forgotten_when_they_go() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(&dir.path().join("nginx").tap_create());
    nginx.serve("metrics", "app_requests_total 7\n");
    let receiver = RemoteWriteReceiver::start().await;

    let (pods, pods_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let mut agent = Agent::new(AgentContext {
        data_dir: dir.path().join("data"),
        external_labels: Arc::new(Labels::default()),
        secrets: Arc::new(NoSecrets),
        pods: Some(pods_rx),
    });
    let config = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n  - metadata: {{name: workloads}}\n    spec:\n      input: {{scrapeInterval: 1s, scrapeTimeout: 1s, prometheus: {{enabled: true, namespaces: {{include: [shop]}}}}}}\n      output: {{prometheusRemoteWrite: {{url: \"{}\"}}}}\n",
        receiver.url()
    );
    let report = agent
        .apply(AgentConfig::parse(&config).expect("valid config"))
        .await;
    assert_eq!(report.started, ["workloads"]);

    pods.send_replace(Arc::new(vec![
        pod("web-1", "shop", nginx.port, true),
        pod("web-2", "sandbox", nginx.port, true),
        pod("db-1", "shop", nginx.port, false),
    ]));
    let until = Instant::now() + DEADLINE;
    let scraped = loop {
        let found = series_with(&receiver, "app_requests_total");
        if !found.is_empty() {
            break found;
        }
        assert!(
            Instant::now() < until,
            "the annotated pod was never scraped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        scraped.len(),
        1,
        "only web-1: sandbox is not included, db-1 is not annotated"
    );
    let labels: std::collections::BTreeMap<_, _> = scraped[0].0.iter().cloned().collect();
    for (name, value) in [
        ("namespace", "shop"),
        ("pod", "web-1"),
        ("container", "app"),
        ("node", "node-1"),
        ("job", "workloads"),
        ("instance", format!("127.0.0.1:{}", nginx.port).as_str()),
    ] {
        assert_eq!(labels.get(name).map(String::as_str), Some(value), "{name}");
    }
    assert_eq!(
        agent.pipelines.read().await["workloads"]
            .target_states()
            .len(),
        1
    );

    // The pod goes away: its loop stops and its series are marked stale.
    pods.send_replace(Arc::new(Vec::new()));
    let until = Instant::now() + DEADLINE;
    loop {
        let stale = series_with(&receiver, "app_requests_total")
            .iter()
            .any(|(_, samples)| samples.iter().any(|(_, v)| v.to_bits() == STALE));
        if stale {
            break;
        }
        assert!(
            Instant::now() < until,
            "no staleness marker after the pod went away"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        agent.pipelines.read().await["workloads"]
            .target_states()
            .is_empty()
    );
    agent.shutdown().await;
}

trait TapCreate {
    fn tap_create(self) -> Self;
}

impl TapCreate for std::path::PathBuf {
    fn tap_create(self) -> Self {
        std::fs::create_dir_all(&self).expect("create directory");
        self
    }
}
