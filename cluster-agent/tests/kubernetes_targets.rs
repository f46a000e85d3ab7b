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
use kaas_cluster_agent::labels::Labels;
use kaas_cluster_agent::outbound::auth::NoSecrets;
use kaas_cluster_agent::pipeline::runtime::{AgentContext, ClusterView};
use kaas_pipeline::ValidationContext;
use kaas_pipeline::agent_config::AgentConfig;
use kaas_test_support::peers::Nginx;

mod fake_kubelet;
use fake_kubelet::FakeKubelet;
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
        files: Arc::default(),
        cluster: ClusterView {
            pods: Some(pods_rx),
            ..ClusterView::default()
        },
        service_account_dir: dir.path().join("serviceaccount"),
        kubelet_insecure_skip_verify: false,
        bound_urls: Default::default(),
    });
    let config = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n  - metadata: {{name: workloads}}\n    spec:\n      input: {{scrapeInterval: 1s, scrapeTimeout: 1s, prometheus: {{enabled: true, namespaces: {{include: [shop]}}}}}}\n      output: {{prometheusRemoteWrite: {{url: \"{}\"}}}}\n",
        receiver.url()
    );
    let report = agent
        .apply(
            AgentConfig::parse(&config, &ValidationContext::tenant_default())
                .expect("valid config"),
        )
        .await;
    assert_eq!(
        report.started,
        [kaas_cluster_agent::pipeline::PipelineId::metric(
            "workloads"
        )]
    );

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_input_scrapes_kubelets_with_the_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet_dir = dir.path().join("kubelet").tap_create();
    let kubelet = FakeKubelet::start(&kubelet_dir, "kubelet-token", &["node-1", "127.0.0.1"]);
    let kubelet_port = kubelet.port;
    let service_account = dir.path().join("serviceaccount").tap_create();
    std::fs::write(service_account.join("token"), "kubelet-token\n").unwrap();
    // The cluster CA, which signed the kubelet's serving certificate.
    std::fs::write(service_account.join("ca.crt"), &kubelet.ca_pem).unwrap();
    let receiver = RemoteWriteReceiver::start().await;

    let (nodes, nodes_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let mut agent = Agent::new(AgentContext {
        data_dir: dir.path().join("data"),
        external_labels: Arc::new(Labels::default()),
        secrets: Arc::new(NoSecrets),
        files: Arc::default(),
        cluster: ClusterView {
            nodes: Some(nodes_rx),
            ..ClusterView::default()
        },
        service_account_dir: service_account,
        kubelet_insecure_skip_verify: false,
        bound_urls: Default::default(),
    });
    let config = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n  - metadata: {{name: runtime}}\n    spec:\n      input: {{scrapeInterval: 1s, scrapeTimeout: 1s, runtime: {{enabled: true, resources: {{node: false}}}}}}\n      output: {{prometheusRemoteWrite: {{url: \"{}\"}}}}\n",
        receiver.url()
    );
    agent
        .apply(
            AgentConfig::parse(&config, &ValidationContext::tenant_default())
                .expect("valid config"),
        )
        .await;
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "node-1"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}}
        }
    }))
    .unwrap();
    nodes.send_replace(Arc::new(vec![Arc::new(node)]));

    let until = Instant::now() + DEADLINE;
    while series_with(&receiver, "kubelet_running_pods").is_empty()
        || series_with(&receiver, "container_cpu_usage_seconds_total").is_empty()
    {
        assert!(Instant::now() < until, "the kubelet was never scraped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let label = |series: &[(String, String)], name: &str| {
        series
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let kubelet = &series_with(&receiver, "kubelet_running_pods")[0].0;
    assert_eq!(label(kubelet, "job"), "kubelet");
    assert_eq!(label(kubelet, "metrics_path"), "/metrics");
    assert_eq!(label(kubelet, "node"), "node-1");
    assert_eq!(
        label(kubelet, "instance"),
        format!("127.0.0.1:{kubelet_port}")
    );
    // Container metrics of system namespaces are left out; node-level ones pass.
    let containers = series_with(&receiver, "container_cpu_usage_seconds_total");
    let namespaces: Vec<String> = containers
        .iter()
        .map(|(l, _)| label(l, "namespace"))
        .collect();
    assert_eq!(namespaces, ["shop"]);
    assert_eq!(label(&containers[0].0, "metrics_path"), "/metrics/cadvisor");
    assert!(!series_with(&receiver, "machine_cpu_cores").is_empty());
    // resources.node is off: /metrics/resource is not scraped.
    assert!(series_with(&receiver, "node_cpu_usage_seconds_total").is_empty());
    let ups = series_with(&receiver, "up");
    assert_eq!(ups.len(), 2, "kubelet and cadvisor targets only");
    assert!(
        ups.iter()
            .all(|(_, samples)| samples.iter().all(|(_, v)| *v == 1.0)),
        "the token was accepted"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_sidecars_are_scraped_without_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(&dir.path().join("nginx").tap_create());
    std::fs::create_dir_all(nginx.root.join("stats")).expect("stats dir");
    nginx.serve(
        "stats/prometheus",
        "istio_requests_total{response_code=\"200\"} 5\n",
    );
    let receiver = RemoteWriteReceiver::start().await;
    let (pods, pods_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let mut agent = Agent::new(AgentContext {
        data_dir: dir.path().join("data"),
        external_labels: Arc::new(Labels::default()),
        secrets: Arc::new(NoSecrets),
        files: Arc::default(),
        cluster: ClusterView {
            pods: Some(pods_rx),
            ..ClusterView::default()
        },
        service_account_dir: dir.path().join("serviceaccount"),
        kubelet_insecure_skip_verify: false,
        bound_urls: Default::default(),
    });
    let config = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n  - metadata: {{name: mesh}}\n    spec:\n      input: {{scrapeInterval: 1s, scrapeTimeout: 1s, istio: {{enabled: true}}}}\n      output: {{prometheusRemoteWrite: {{url: \"{}\"}}}}\n",
        receiver.url()
    );
    agent
        .apply(
            AgentConfig::parse(&config, &ValidationContext::tenant_default())
                .expect("valid config"),
        )
        .await;
    let meshed: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-1", "namespace": "shop"},
        "spec": {"containers": [
            {"name": "app", "ports": [{"containerPort": 8080}]},
            {"name": "istio-proxy", "ports": [{"containerPort": nginx.port, "name": "http-envoy-prom"}]}
        ]},
        "status": {"podIP": "127.0.0.1", "phase": "Running"}
    }))
    .expect("pod JSON");
    pods.send_replace(Arc::new(vec![Arc::new(meshed)]));
    let until = Instant::now() + DEADLINE;
    while series_with(&receiver, "istio_requests_total").is_empty() {
        assert!(Instant::now() < until, "the sidecar was never scraped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let labels: std::collections::BTreeMap<_, _> = series_with(&receiver, "istio_requests_total")
        [0]
    .0
    .iter()
    .cloned()
    .collect();
    assert_eq!(labels.get("namespace").map(String::as_str), Some("shop"));
    assert_eq!(labels.get("pod").map(String::as_str), Some("web-1"));
    assert_eq!(
        agent.pipelines.read().await["mesh"].target_states().len(),
        1,
        "only the sidecar's port, not the app's"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_services_are_scraped_through_their_endpoints() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(&dir.path().join("nginx").tap_create());
    nginx.serve("metrics", "service_requests_total 11\n");
    let receiver = RemoteWriteReceiver::start().await;
    let (services, services_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let (slices, slices_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let mut agent = Agent::new(AgentContext {
        data_dir: dir.path().join("data"),
        external_labels: Arc::new(Labels::default()),
        secrets: Arc::new(NoSecrets),
        files: Arc::default(),
        cluster: ClusterView {
            services: Some(services_rx),
            endpoint_slices: Some(slices_rx),
            ..ClusterView::default()
        },
        service_account_dir: dir.path().join("serviceaccount"),
        kubelet_insecure_skip_verify: false,
        bound_urls: Default::default(),
    });
    let config = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n  - metadata: {{name: services}}\n    spec:\n      input: {{scrapeInterval: 1s, scrapeTimeout: 1s, prometheus: {{enabled: true}}}}\n      output: {{prometheusRemoteWrite: {{url: \"{}\"}}}}\n",
        receiver.url()
    );
    agent
        .apply(
            AgentConfig::parse(&config, &ValidationContext::tenant_default())
                .expect("valid config"),
        )
        .await;
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop",
                     "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": nginx.port.to_string()}}
    }))
    .expect("service JSON");
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-x1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "web-1"}}],
        "ports": [{"name": "http", "port": 1}, {"name": "metrics", "port": nginx.port}]
    }))
    .expect("slice JSON");
    services.send_replace(Arc::new(vec![Arc::new(service)]));
    slices.send_replace(Arc::new(vec![Arc::new(slice)]));
    let until = Instant::now() + DEADLINE;
    while series_with(&receiver, "service_requests_total").is_empty() {
        assert!(
            Instant::now() < until,
            "the annotated service was never scraped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let labels: std::collections::BTreeMap<_, _> = series_with(&receiver, "service_requests_total")
        [0]
    .0
    .iter()
    .cloned()
    .collect();
    for (name, value) in [("namespace", "shop"), ("service", "web"), ("pod", "web-1")] {
        assert_eq!(labels.get(name).map(String::as_str), Some(value), "{name}");
    }
    assert_eq!(
        agent.pipelines.read().await["services"]
            .target_states()
            .len(),
        1,
        "only the annotated port"
    );
    agent.shutdown().await;
}
