//! Issue 18: output URLs bound from a service-binding Secret, against real receivers.
//!
//! - A Secret watch event (through kube's mock client, as the API server would send
//!   it) moves a running metric pipeline's remote-write URL from a real Prometheus
//!   (receiver mode) to a real VictoriaMetrics, both on loopback; the series follow
//!   without the pipeline being restarted, each sample stored by exactly one of them.
//! - A Secret naming the provider's central receiver is refused by the agent with
//!   `SecretInvalid`, by checking, never by connecting: the "receiver" is a recording
//!   server on loopback that must see no request; what the pipeline reports names the
//!   Secret, never the URL.
//!
//! Needs `prometheus` and `victoria-metrics` (`scripts/test.sh` installs them).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Request, Response};
use kaas_cluster_agent::agent::Agent;
use kaas_cluster_agent::control::health;
use kaas_cluster_agent::discovery::kubernetes::secrets::KubernetesSecrets;
use kaas_cluster_agent::internal_events::ErrorReason;
use kaas_cluster_agent::labels::Labels;
use kaas_cluster_agent::outbound::auth::SecretStore;
use kaas_cluster_agent::outbound::destination::BoundUrlRules;
use kaas_cluster_agent::pipeline::PipelineId;
use kaas_cluster_agent::pipeline::runtime::{AgentContext, ClusterView};
use kaas_pipeline::agent_config::{AgentConfig, ValidatedAgentConfig};
use kaas_pipeline::{ProviderPolicy, ValidationContext};
use kaas_test_support::kube_api;
use kaas_test_support::peers::{Prometheus, VictoriaMetrics};
use kaas_test_support::recording_receiver::{RecordingReceiver, Reply};
use kube::client::Body;

const DEADLINE: Duration = Duration::from_secs(30);
/// The metric the scraped target exposes.
const METRIC: &str = "bound_endpoint_test_up";

/// An agent reading Secrets from `secrets`, checking bound URLs under `bound_urls`.
fn agent(dir: &std::path::Path, secrets: Arc<dyn SecretStore>, bound_urls: BoundUrlRules) -> Agent {
    Agent::new(AgentContext {
        data_dir: dir.join("data"),
        external_labels: Arc::new(Labels::default()),
        secrets,
        files: Arc::default(),
        cluster: ClusterView::default(),
        service_account_dir: dir.join("serviceaccount"),
        kubelet_insecure_skip_verify: false,
        bound_urls,
    })
}

/// A metric pipeline scraping `target` every second, its remote-write URL read from
/// key `url` of Secret `kaas-observer/backend-binding`, as an agent taking its
/// configuration from the observer reads it (the agent's default policy).
fn config(target: &str) -> ValidatedAgentConfig {
    let text = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n  - metadata: {{name: bound}}\n    spec:\n      input:\n        scrapeInterval: 1s\n        scrapeTimeout: 1s\n        static:\n          targets:\n            - addresses: ['{target}']\n              labels: {{job: bound}}\n      output:\n        prometheusRemoteWrite:\n          url: {{valueFrom: {{secretKeyRef: {{name: backend-binding, namespace: kaas-observer, key: url}}}}}}\n"
    );
    AgentConfig::parse(
        &text,
        &ValidationContext::observer(ProviderPolicy::agent_default()),
    )
    .expect("valid config")
}

/// A loopback target exposing [`METRIC`].
async fn target() -> (String, tokio::sync::oneshot::Sender<()>) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async { format!("{METRIC} 1\n") }),
    );
    let (address, stop) = kaas_test_support::http::serve_loopback(0, app).await;
    (address.to_string(), stop)
}

fn binding_secret(url: &str, version: &str) -> serde_json::Value {
    use base64::Engine;
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "backend-binding", "namespace": "kaas-observer", "resourceVersion": version},
        "data": {"url": base64::engine::general_purpose::STANDARD.encode(url)}
    })
}

type ApiServer = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The agent's Secret watch of `kaas-observer` through kube's mock client, once the
/// API server's side answered its list with the binding Secret holding `url`; the
/// handle answers what follows.
async fn watched_secrets(url: &str) -> (Arc<KubernetesSecrets>, ApiServer) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let secrets = Arc::new(KubernetesSecrets::watch(
        &client,
        ["kaas-observer".to_owned()],
    ));
    let (request, send) = handle.next_request().await.expect("a list request");
    assert_eq!(
        request.uri().path(),
        "/api/v1/namespaces/kaas-observer/secrets"
    );
    let list = kube_api::list("SecretList", "1", vec![binding_secret(url, "1")]);
    send.send_response(Response::new(Body::from(list)));
    let until = Instant::now() + DEADLINE;
    while secrets
        .get("kaas-observer", "backend-binding", "url")
        .is_none()
    {
        assert!(Instant::now() < until, "the Secret list was never read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (secrets, handle)
}

/// Every sample timestamp (ms) Prometheus stored of [`METRIC`].
fn prometheus_timestamps(prometheus: &Prometheus) -> Vec<i64> {
    prometheus
        .query(&format!("{METRIC}[1h]"))
        .iter()
        .flat_map(|series| series["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|pair| pair[0].as_f64())
        .map(|seconds| (seconds * 1000.0).round() as i64)
        .collect()
}

/// Every sample timestamp (ms) VictoriaMetrics stored of [`METRIC`].
fn victoria_timestamps(victoria: &VictoriaMetrics) -> Vec<i64> {
    victoria.flush();
    victoria
        .export(METRIC)
        .into_iter()
        .flat_map(|(_, timestamps)| timestamps)
        .collect()
}

/// Polls `probe` (blocking HTTP, so off the runtime's workers) until it returns at
/// least `want` timestamps.
async fn wait_for<T: Send + Sync + 'static>(
    peer: Arc<T>,
    want: usize,
    probe: fn(&T) -> Vec<i64>,
    what: &str,
) -> Vec<i64> {
    let until = Instant::now() + DEADLINE;
    loop {
        let peer = peer.clone();
        let found = tokio::task::spawn_blocking(move || probe(&peer))
            .await
            .expect("the probe ran");
        if found.len() >= want {
            return found;
        }
        assert!(Instant::now() < until, "{what} got {} samples", found.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The done-when test of issue 18: a watch event moves the URL, the series follow, no
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_watch_event_moves_remote_write_from_prometheus_to_victoria_metrics() {
    let dir = tempfile::tempdir().unwrap();
    for peer in ["prometheus", "victoria-metrics"] {
        std::fs::create_dir_all(dir.path().join(peer)).unwrap();
    }
    let prometheus = Arc::new(Prometheus::receiver(&dir.path().join("prometheus")));
    let victoria = Arc::new(VictoriaMetrics::start(&dir.path().join("victoria-metrics")));
    let (target, _stop_target) = target().await;

    let (secrets, mut handle) = watched_secrets(&prometheus.write_url()).await;

    let mut agent = agent(dir.path(), secrets, BoundUrlRules::default());
    let report = agent.apply(config(&target)).await;
    assert_eq!(report.started, [PipelineId::metric("bound")]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let before = wait_for(prometheus.clone(), 2, prometheus_timestamps, "Prometheus").await;
    assert!(
        victoria_timestamps(&victoria).is_empty(),
        "nothing went to VictoriaMetrics yet"
    );

    // The Secret is rotated: the API server sends the watch event.
    let (request, send) = handle.next_request().await.expect("a watch request");
    assert!(kube_api::is_watch(request.uri().query()));
    let event = kube_api::watch_event("MODIFIED", binding_secret(&victoria.write_url(), "2"));
    send.send_response(Response::new(Body::from(event)));

    let moved = wait_for(victoria.clone(), 2, victoria_timestamps, "VictoriaMetrics").await;
    let stayed = tokio::task::spawn_blocking({
        let prometheus = prometheus.clone();
        move || prometheus_timestamps(&prometheus)
    })
    .await
    .unwrap();
    assert!(stayed.len() >= before.len());
    // Each sample went to exactly one backend, in scrape order: every sample
    // VictoriaMetrics holds is newer than every sample Prometheus holds.
    let last_at_prometheus = stayed.iter().max().copied().unwrap_or_default();
    let first_at_victoria = moved.iter().min().copied().unwrap_or_default();
    assert!(
        last_at_prometheus < first_at_victoria,
        "Prometheus up to {last_at_prometheus}, VictoriaMetrics from {first_at_victoria}"
    );

    // Nothing was restarted: the one pipeline started by the one apply still runs,
    // and it reports no error.
    let snapshot = health::snapshot(
        &*agent.pipelines.read().await,
        &*agent.log_pipelines.read().await,
        &*agent.trace_pipelines.read().await,
        SystemTime::now(),
    );
    assert_eq!(snapshot.pipelines.len(), 1);
    assert!(
        snapshot.pipelines[0].last_error.is_none(),
        "{:?}",
        snapshot.pipelines[0].last_error
    );
    drop(handle);
}

/// A tenant cannot reach through a Secret what it could not write in place: the
/// provider's central receiver is refused by checking the resolved URL, no request
/// reaches it, and the refusal names the Secret, never the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_url_naming_the_central_receiver_is_refused_without_contacting_it() {
    let dir = tempfile::tempdir().unwrap();
    let central = RecordingReceiver::start(Reply::status(204)).await;
    let central_url = format!("{}/api/v1/receive?token=s3cret", central.base_url());
    let (target, _stop_target) = target().await;

    let (secrets, handle) = watched_secrets(&central_url).await;
    let rules = BoundUrlRules::refusing(vec![url::Url::parse(&central.base_url()).unwrap()]);
    let mut agent = agent(dir.path(), secrets, rules);
    let report = agent.apply(config(&target)).await;
    assert_eq!(report.started, [PipelineId::metric("bound")]);

    let until = Instant::now() + DEADLINE;
    let error = loop {
        let snapshot = health::snapshot(
            &*agent.pipelines.read().await,
            &*agent.log_pipelines.read().await,
            &*agent.trace_pipelines.read().await,
            SystemTime::now(),
        );
        if let Some(error) = snapshot.pipelines[0].last_error.clone() {
            break error;
        }
        assert!(Instant::now() < until, "no error reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(error.reason, ErrorReason::SecretInvalid.as_str());
    assert!(
        error.message.contains("central receiver"),
        "{}",
        error.message
    );
    assert!(
        error
            .message
            .contains(r#"Secret kaas-observer/backend-binding key "url""#),
        "{}",
        error.message
    );
    let port = central
        .base_url()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    for leaked in ["s3cret", "127.0.0.1", port.as_str()] {
        assert!(
            !error.message.contains(leaked),
            "{leaked} in {}",
            error.message
        );
    }
    assert!(
        central.received().is_empty(),
        "the central receiver was contacted"
    );
    drop(handle);
}
