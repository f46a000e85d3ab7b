//! The receive gateway (`observer gateway`) end to end: agents' requests over mutual
//! TLS with certificates of the observer's real CA, through the gateway on a loopback
//! port, into a real Prometheus receiver (or the recording receiver where the test
//! reads headers). Each test of issue 15's findings says what 552c13e did.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kaas_observer::gateway::forward::Upstream;
use kaas_observer::gateway::limits::{IngestLimiter, LogRateLimiter, TenantLimits};
use kaas_observer::gateway::server::{self, AGENT_PATH, GatewayState, WORKLOAD_PATH};
use kaas_observer::gateway::thanos::{
    RECEIVE_TENANT_LABEL, TENANT_HEADER_FLAG, TENANT_LABEL_FLAG, flag_value, stored_labels,
};
use kaas_observer::gateway::{
    DEFAULT_MAX_LOG_BYTES_PER_SECOND_PER_TENANT, DEFAULT_TENANT_HEADER, client_ca_bundle,
};
use kaas_observer::identity::ClusterCa;
use kaas_observer::integrations::remote_write::DEFAULT_PROVIDER_TENANT;
use kaas_observer::internal_events::GatewayMetrics;
use kaas_proto::remote_write::{CONTENT_ENCODING, VERSION_HEADER, v1};
use kaas_series::PushLimits;
use kaas_series::labels::Labels;
use kaas_test_support::peers::Prometheus;
use kaas_test_support::remote_write_receiver::RemoteWriteReceiver;
use kaas_test_support::tls::{TestPki, agent_key_and_csr};
use prost::Message as _;

mod gateway_harness;

/// How long an agent certificate issued here is valid: far longer than any test.
const VALIDITY: Duration = Duration::from_secs(3600);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The observer's CA in a temporary directory, as `observer serve` creates it.
struct Authority {
    ca: ClusterCa,
    dir: tempfile::TempDir,
}

impl Authority {
    fn new() -> Self {
        kaas_tls::install_default_provider();
        let dir = tempfile::tempdir().expect("test fixture");
        let ca = ClusterCa::load_or_create(dir.path()).expect("test fixture");
        Self { ca, dir }
    }

    /// A certificate and key for the default instance of `cluster`, signed as `Join`
    /// signs them.
    fn agent(&self, cluster: &str) -> (String, String) {
        let (key, csr) = agent_key_and_csr();
        let signed = self
            .ca
            .sign_agent_csr(cluster, "default", &csr, VALIDITY)
            .expect("test fixture");
        (signed.pem, key)
    }
}

/// A gateway on a loopback port in front of `upstream`.
struct Gateway {
    url: String,
    ca_pem: String,
    state: Arc<GatewayState>,
    _task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    async fn start(authority: &Authority, upstream: &str, limits: TenantLimits) -> Self {
        let (cert, key) = authority
            .ca
            .server_certificate(&["127.0.0.1".to_owned()])
            .expect("test fixture");
        let client_ca = client_ca_bundle(authority.dir.path()).expect("test fixture");
        let tls =
            server::tls_config(cert.as_bytes(), key.as_bytes(), &client_ca).expect("test fixture");
        let state = Arc::new(GatewayState {
            push_limits: PushLimits::default(),
            limiter: IngestLimiter::new(limits, 16, 1000),
            log_limiter: LogRateLimiter::new(DEFAULT_MAX_LOG_BYTES_PER_SECOND_PER_TENANT, 16),
            upstream: Upstream::new(
                upstream.parse().expect("test fixture"),
                kaas_tls::ClientTls::default(),
                DEFAULT_TENANT_HEADER,
            )
            .expect("test fixture"),
            loki: None,
            metrics: GatewayMetrics::default(),
            standings: None,
        });
        let (port, task) = gateway_harness::serve(state.clone(), tls).await;
        Self {
            url: format!("https://127.0.0.1:{port}"),
            ca_pem: authority.ca.bundle_pem(),
            state,
            _task: task,
        }
    }

    /// A client trusting the gateway, presenting `identity` if any.
    fn client(&self, identity: Option<&(String, String)>) -> reqwest::Client {
        gateway_harness::client(&self.ca_pem, identity)
    }

    /// The gateway's metrics as `name{labels} value` lines.
    fn metrics(&self) -> String {
        gateway_harness::metrics(&self.state)
    }
}

fn limits() -> TenantLimits {
    TenantLimits {
        max_active_series: 1000,
        max_samples_per_second: 10_000,
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("test fixture")
            .as_millis(),
    )
    .expect("test fixture")
}

/// A snappy remote-write 1.0 body with one sample (value 1, now) per series.
fn body(series: &[&[(&str, &str)]]) -> Vec<u8> {
    let timestamp = now_ms();
    let request = v1::WriteRequest {
        timeseries: series
            .iter()
            .map(|labels| {
                let labels = Labels::from_pairs(labels.iter().copied());
                v1::TimeSeries {
                    labels: labels
                        .iter()
                        .map(|l| v1::Label {
                            name: l.name.clone(),
                            value: l.value.clone(),
                        })
                        .collect(),
                    samples: vec![v1::Sample {
                        value: 1.0,
                        timestamp,
                    }],
                }
            })
            .collect(),
        metadata: Vec::new(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("test fixture")
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> Result<reqwest::Response, reqwest::Error> {
    client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, v1::CONTENT_TYPE)
        .header(reqwest::header::CONTENT_ENCODING, CONTENT_ENCODING)
        .header(VERSION_HEADER, v1::VERSION_HEADER_VALUE)
        // A forged tenant header from the workload cluster: never passed on.
        .header(DEFAULT_TENANT_HEADER, "bank")
        .body(body)
        .send()
        .await
}

/// Runs a blocking Prometheus query from the async test.
fn query(prometheus: &Prometheus, expr: &str) -> Vec<serde_json::Value> {
    tokio::task::block_in_place(|| prometheus.query(expr))
}

/// Issue 15, finding 2: on 552c13e the central pipeline kept a `cluster` label a
/// workload set, the tenant header and `tenant` label came from the workload cluster,
/// and any `kaas_*`/`probe_*` series a workload exposed reached Thanos. Here a workload
/// of `shop.edge` forges each of them; what Thanos' stand-in stores is filed under
/// `shop.edge` and `shop` only, with the forged values kept as `exported_…`, and the
/// observer's families never arrive from a workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workloads_forgeries_are_filed_under_its_own_cluster_or_dropped() {
    let authority = Authority::new();
    let dir = tempfile::tempdir().expect("test fixture");
    let prometheus = tokio::task::block_in_place(|| Prometheus::receiver(dir.path()));
    let gateway = Gateway::start(&authority, &prometheus.write_url(), limits()).await;
    let shop = gateway.client(Some(&authority.agent("shop.edge")));

    let workload = body(&[
        &[("__name__", "up"), ("job", "web"), ("cluster", "bank.prod")],
        &[("__name__", "http_requests_total"), ("tenant", "bank")],
        &[
            ("__name__", "kaas_cluster_info"),
            ("cluster", "bank.prod"),
            ("tenant", "bank"),
            ("state", "deleted"),
        ],
        &[("__name__", "probe_success"), ("cluster", "bank.prod")],
        &[("__name__", "kaas_agent_config_last_reload_successful")],
        // The agent's own external label, as the agent sends every series.
        &[("__name__", "node_load1"), ("cluster", "shop.edge")],
    ]);
    let url = format!("{}{WORKLOAD_PATH}", gateway.url);
    let response = send(&shop, &url, workload).await.expect("test fixture");
    assert_eq!(response.status(), 204, "{:?}", response.text().await);
    let agent = body(&[
        &[
            ("__name__", "kaas_agent_config_last_reload_successful"),
            ("job", "kaas-agent"),
        ],
        &[
            ("__name__", "kaas_cluster_info"),
            ("cluster", "bank.prod"),
            ("state", "deleted"),
        ],
    ]);
    let url = format!("{}{AGENT_PATH}", gateway.url);
    let response = send(&shop, &url, agent).await.expect("test fixture");
    assert_eq!(response.status(), 204, "{:?}", response.text().await);

    let up = query(&prometheus, "up");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["metric"]["cluster"], "shop.edge");
    assert_eq!(up[0]["metric"]["exported_cluster"], "bank.prod");
    assert_eq!(up[0]["metric"]["tenant"], "shop");
    let requests = query(&prometheus, "http_requests_total");
    assert_eq!(requests[0]["metric"]["tenant"], "shop", "{requests:?}");
    assert_eq!(requests[0]["metric"]["exported_tenant"], "bank");
    let own = query(&prometheus, "node_load1");
    assert_eq!(own[0]["metric"]["cluster"], "shop.edge", "{own:?}");
    assert!(
        own[0]["metric"].get("exported_cluster").is_none(),
        "{own:?}"
    );

    assert!(query(&prometheus, r#"{cluster="bank.prod"}"#).is_empty());
    assert!(query(&prometheus, r#"{tenant="bank"}"#).is_empty());
    assert!(query(&prometheus, "kaas_cluster_info").is_empty());
    assert!(query(&prometheus, "probe_success").is_empty());
    // The agent's family arrived once: from the agent's own path, stamped.
    let agent_series = query(&prometheus, "kaas_agent_config_last_reload_successful");
    assert_eq!(agent_series.len(), 1, "{agent_series:?}");
    assert_eq!(agent_series[0]["metric"]["job"], "kaas-agent");
    assert_eq!(agent_series[0]["metric"]["cluster"], "shop.edge");

    let metrics = gateway.metrics();
    assert!(
        metrics.contains(
            r#"kaas_gateway_series_dropped_total{tenant="shop",reason="reserved_family"} 4"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kaas_gateway_samples_forwarded_total{tenant="shop"} 4"#),
        "{metrics}"
    );
}

/// Issue 15, finding 2: on 552c13e nothing authenticated the sender of the central
/// series (any credentials were read from the workload cluster). An agent without a
/// certificate, with one of another CA, or with one naming no tenant is refused, and
/// nothing reaches the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_without_a_valid_certificate_are_refused() {
    let authority = Authority::new();
    let receiver = RemoteWriteReceiver::start().await;
    let gateway = Gateway::start(&authority, &receiver.url(), limits()).await;
    let url = format!("{}{WORKLOAD_PATH}", gateway.url);
    let series: &[&[(&str, &str)]] = &[&[("__name__", "up")]];

    let anonymous = gateway.client(None);
    assert!(send(&anonymous, &url, body(series)).await.is_err());
    let stranger = TestPki::generate(&["127.0.0.1"]);
    let foreign = gateway.client(Some(&(stranger.client_cert, stranger.client_key)));
    assert!(send(&foreign, &url, body(series)).await.is_err());
    // Another CA's certificate claiming a cluster of ours is no better.
    let other = Authority::new();
    let impostor = gateway.client(Some(&other.agent("shop.edge")));
    assert!(send(&impostor, &url, body(series)).await.is_err());
    // Ours, but a cluster id from before names were per tenant: it names no tenant.
    let legacy = gateway.client(Some(&authority.agent("edge")));
    let response = send(&legacy, &url, body(series))
        .await
        .expect("test fixture");
    assert_eq!(response.status(), 403);
    assert!(
        response
            .text()
            .await
            .expect("test fixture")
            .contains("names no tenant")
    );

    assert!(receiver.received().is_empty(), "{:?}", receiver.received());
    assert!(
        gateway
            .metrics()
            .contains(r#"kaas_gateway_requests_total{path="workload",code="403"} 1"#)
    );
}

/// Per-tenant limits refuse and count: a tenant past its active series loses only its
/// new series, a tenant past its samples per second is refused with 429 and
/// `Retry-After` (the agent retries from its buffer), and another tenant is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_refuse_and_count() {
    let authority = Authority::new();
    let receiver = RemoteWriteReceiver::start().await;
    let limits = TenantLimits {
        max_active_series: 2,
        // Bucket of five seconds: 50 samples.
        max_samples_per_second: 10,
    };
    let gateway = Gateway::start(&authority, &receiver.url(), limits).await;
    let url = format!("{}{WORKLOAD_PATH}", gateway.url);
    let shop = gateway.client(Some(&authority.agent("shop.edge")));
    let bank = gateway.client(Some(&authority.agent("bank.prod")));

    let three: &[&[(&str, &str)]] = &[
        &[("__name__", "a")],
        &[("__name__", "b")],
        &[("__name__", "c")],
    ];
    let response = send(&shop, &url, body(three)).await.expect("test fixture");
    assert_eq!(response.status(), 204);
    assert_eq!(receiver.accepted().len(), 2);

    let names: Vec<String> = (0..60).map(|i| format!("x{i}")).collect();
    let many: Vec<[(&str, &str); 1]> = names.iter().map(|n| [("__name__", n.as_str())]).collect();
    let many: Vec<&[(&str, &str)]> = many.iter().map(|s| s.as_slice()).collect();
    let response = send(&shop, &url, body(&many)).await.expect("test fixture");
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let response = send(&bank, &url, body(three)).await.expect("test fixture");
    assert_eq!(response.status(), 204);

    let metrics = gateway.metrics();
    for line in [
        r#"kaas_gateway_series_dropped_total{tenant="shop",reason="active_series"} 1"#,
        r#"kaas_gateway_series_dropped_total{tenant="bank",reason="active_series"} 1"#,
        r#"kaas_gateway_requests_refused_total{tenant="shop",limit="samples_per_second"} 1"#,
        r#"kaas_gateway_requests_total{path="workload",code="429"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// The `args` of the Thanos receive container in `deploy/integrations/thanos/receive.yaml`
/// (as `text`).
fn receive_args(text: &str) -> Vec<String> {
    for document in serde_yaml::Deserializer::from_str(text) {
        let object = serde_yaml::Value::deserialize(document).expect("test fixture");
        if object["kind"] != "StatefulSet" {
            continue;
        }
        let containers = object["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .expect("test fixture");
        for container in containers {
            let args = container["args"].as_sequence().expect("test fixture");
            if args.first().and_then(|a| a.as_str()) == Some("receive") {
                return args
                    .iter()
                    .map(|a| a.as_str().expect("test fixture").to_owned())
                    .collect();
            }
        }
    }
    panic!("no thanos receive container in the manifest");
}

use serde::Deserialize as _;

/// What Thanos, deployed by `manifest`, would store of the requests `received`, and of
/// the observer's fleet series written as the provider: the `tenant` of each, or why
/// the deployment cannot work.
fn tenants_at_thanos(
    manifest: &str,
    received: &[kaas_test_support::remote_write_receiver::Received],
) -> Result<Vec<(String, String)>, String> {
    let args = receive_args(manifest);
    let label = flag_value(&args, TENANT_LABEL_FLAG).unwrap_or(RECEIVE_TENANT_LABEL);
    let header = flag_value(&args, TENANT_HEADER_FLAG).unwrap_or(DEFAULT_TENANT_HEADER);
    if !header.eq_ignore_ascii_case(DEFAULT_TENANT_HEADER) {
        return Err(format!(
            "receive reads the tenant from {header}, the gateway sets {DEFAULT_TENANT_HEADER}"
        ));
    }
    let mut stored = Vec::new();
    for request in received {
        let tenant = request
            .headers
            .get(&header.to_ascii_lowercase())
            .ok_or("the gateway sent no tenant header")?;
        for (labels, _) in &request.series {
            let labels = Labels::from_pairs(labels.iter().cloned());
            let name = labels.get("__name__").to_owned();
            stored.push((
                name,
                stored_labels(&labels, label, tenant)
                    .get("tenant")
                    .to_owned(),
            ));
        }
    }
    // The observer writes every cluster's fleet series as the provider's tenant.
    let fleet = Labels::from_pairs([
        ("__name__", "kaas_cluster_info"),
        ("cluster", "shop.edge"),
        ("tenant", "shop"),
        ("state", "active"),
    ]);
    stored.push((
        "kaas_cluster_info".to_owned(),
        stored_labels(&fleet, label, DEFAULT_PROVIDER_TENANT)
            .get("tenant")
            .to_owned(),
    ));
    Ok(stored)
}

/// Issue 15, finding 1: on 552c13e receive.yaml set `--receive.tenant-label-name=tenant`,
/// and Thanos' tenant label overrides a series label of the same name, so every fleet
/// series read back with the provider's tenant. Reads the flags from the manifest and
/// the header name from the code, and applies the rule to what the gateway forwards:
/// a tenant's series and the provider's fleet series keep their `tenant`. The same
/// check on the manifest with the flag set to `tenant` fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_and_the_tenants_keep_their_tenant_label_at_thanos() {
    let authority = Authority::new();
    let receiver = RemoteWriteReceiver::start().await;
    let gateway = Gateway::start(&authority, &receiver.url(), limits()).await;
    let shop = gateway.client(Some(&authority.agent("shop.edge")));
    let url = format!("{}{WORKLOAD_PATH}", gateway.url);
    let response = send(
        &shop,
        &url,
        body(&[&[("__name__", "up"), ("tenant", "bank")]]),
    )
    .await
    .expect("test fixture");
    assert_eq!(response.status(), 204);
    let received = receiver.received();
    assert_eq!(received[0].headers["thanos-tenant"], "shop");

    let manifest = std::fs::read_to_string(repo().join("deploy/integrations/thanos/receive.yaml"))
        .expect("test fixture");
    let stored = tenants_at_thanos(&manifest, &received).expect("test fixture");
    assert_eq!(
        stored,
        [
            ("up".to_owned(), "shop".to_owned()),
            ("kaas_cluster_info".to_owned(), "shop".to_owned()),
        ]
    );

    let args = receive_args(&manifest);
    let flag = args
        .iter()
        .find(|a| a.starts_with(TENANT_LABEL_FLAG))
        .cloned()
        .unwrap_or_default();
    let broken = if flag.is_empty() {
        manifest.replace(
            "- --receive.tenant-header",
            "- --receive.tenant-label-name=tenant\n            - --receive.tenant-header",
        )
    } else {
        manifest.replace(&flag, &format!("{TENANT_LABEL_FLAG}=tenant"))
    };
    let stored = tenants_at_thanos(&broken, &received).expect("test fixture");
    assert_eq!(
        stored,
        [
            ("up".to_owned(), "shop".to_owned()),
            (
                "kaas_cluster_info".to_owned(),
                DEFAULT_PROVIDER_TENANT.to_owned()
            ),
        ],
        "with the label named tenant, the fleet series read back as the provider"
    );
}

// ---- the central pipelines in a real agent ----

/// What a workload of the cluster exposes, forging another cluster and tenant and the
/// observer's own families.
const FORGED_EXPOSITION: &str = "\
# TYPE kaas_cluster_info gauge
kaas_cluster_info{cluster=\"bank.prod\",tenant=\"bank\",state=\"deleted\"} 1
# TYPE probe_success gauge
probe_success{cluster=\"bank.prod\",tenant=\"bank\"} 0
# TYPE shop_orders_total counter
shop_orders_total{cluster=\"bank.prod\",tenant=\"bank\"} 5
";

/// A provider pipeline as the central workload pipeline is, but scraping one static
/// target (no Kubernetes here): the agent's certificate, to the gateway's workload path.
fn workload_pipeline(target: &str, gateway: &Gateway) -> kaas_pipeline::ValidatedPipeline {
    use kaas_pipeline::output::Tls;
    use kaas_pipeline::secret::{SecretString, ValueSource};
    let mut pipeline: kaas_pipeline::MetricPipeline = serde_yaml::from_str(&format!(
        r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {{name: kaas-central-workload-test}}
spec:
  input:
    scrapeInterval: 1s
    static: {{targets: [{{addresses: ["{target}"], labels: {{job: shop-web}}}}]}}
  output: {{prometheusRemoteWrite: {{url: "{}{WORKLOAD_PATH}"}}}}
"#,
        gateway.url
    ))
    .expect("test fixture");
    let output = pipeline
        .spec
        .output
        .prometheus_remote_write
        .as_mut()
        .expect("test fixture");
    output.tls = Some(Tls {
        agent_identity: true,
        ca: Some(ValueSource {
            value: Some(SecretString::new(gateway.ca_pem.clone())),
            value_from: None,
        }),
        ..Tls::default()
    });
    kaas_pipeline::validate(
        &pipeline,
        &kaas_pipeline::ValidationContext::observer(kaas_pipeline::ProviderPolicy::unrestricted()),
    )
    .expect("test fixture")
}

/// Issue 15, finding 2, with the real agent: on 552c13e the agent sent the central
/// series straight to Thanos with the tenant it was told inside the cluster, keeping a
/// scraped `cluster` label. Here the agent runs the central pipelines the observer
/// renders (its own `/metrics` on the agent path) plus a workload pipeline scraping a
/// forging workload, all with its own certificate through the gateway into Prometheus:
/// the agent's own series arrive with the cluster and tenant of its certificate, the
/// workload's forged labels only as `exported_…`, and its `kaas_*`/`probe_*` series
/// not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_running_the_central_pipelines_delivers_through_the_gateway() {
    use kaas_observer::rendering::{CentralPipelineSettings, CentralScrape, central_pipelines};
    use kaas_pipeline::agent_config::AgentConfig;
    use kaas_test_support::peers::Nginx;
    use kaas_test_support::process::{ChildGuard, free_port};

    const DEADLINE: Duration = Duration::from_secs(20);
    let authority = Authority::new();
    let dir = tempfile::tempdir().expect("test fixture");
    let prometheus_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prometheus_dir).expect("test fixture");
    let prometheus = tokio::task::block_in_place(|| Prometheus::receiver(&prometheus_dir));
    let gateway = Gateway::start(&authority, &prometheus.write_url(), limits()).await;
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).expect("test fixture");
    let nginx = tokio::task::block_in_place(|| Nginx::start(&nginx_dir));
    nginx.serve("/metrics", FORGED_EXPOSITION);

    let agent_port = free_port();
    let mut settings = CentralPipelineSettings::new(gateway.url.clone());
    settings.scrape = CentralScrape {
        prometheus_annotations: false,
        runtime: false,
        interval: Some("1s".into()),
    };
    settings.agent_metrics_address = format!("127.0.0.1:{agent_port}");
    // Loopback only: no kube-state-metrics Service name to resolve here.
    settings.kube_state_metrics_address = format!("127.0.0.1:{}", free_port());
    settings.gateway_ca_pem = Some(gateway.ca_pem.clone());
    let mut pipelines = central_pipelines(&settings).expect("test fixture");
    pipelines.push(workload_pipeline(&nginx.address(), &gateway));
    // What the control service renders: the pipelines plus the `cluster` label.
    let rendered = AgentConfig::from_validated(
        std::collections::BTreeMap::from([("cluster".to_owned(), "shop.edge-1".to_owned())]),
        &pipelines,
    )
    .render();
    let config = dir.path().join("agent.json");
    std::fs::write(&config, &rendered.body).expect("test fixture");
    // The identity the agent got at join.
    let data = dir.path().join("agent-data");
    let identity = data.join("identity");
    std::fs::create_dir_all(&identity).expect("test fixture");
    let (cert, key) = authority.agent("shop.edge-1");
    std::fs::write(identity.join("tls.crt"), cert).expect("test fixture");
    std::fs::write(identity.join("tls.key"), key).expect("test fixture");

    let log = dir.path().join("agent.log");
    let _agent = ChildGuard::spawn(
        "cluster-agent",
        std::process::Command::new(gateway_harness::cluster_agent_binary())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{agent_port}"))
            .arg("--otlp-grpc-listen-address")
            .arg("127.0.0.1:0")
            .arg("--otlp-http-listen-address")
            .arg("127.0.0.1:0")
            .arg("--zipkin-listen-address")
            .arg("127.0.0.1:0")
            .arg("--kubernetes")
            .arg("off")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("test fixture")),
    );
    let wait = |expr: &str| {
        tokio::task::block_in_place(|| {
            let until = std::time::Instant::now() + DEADLINE;
            loop {
                let result = prometheus.query(expr);
                if !result.is_empty() || std::time::Instant::now() >= until {
                    break result;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let up = wait(r#"up{job="kaas-agent"} == 1"#);
    assert!(
        !up.is_empty(),
        "no up{{job=\"kaas-agent\"}} == 1; agent log:\n{}",
        agent_log()
    );
    let labels = &up[0]["metric"];
    assert_eq!(labels["cluster"], "shop.edge-1", "{labels}");
    assert_eq!(labels["tenant"], "shop", "{labels}");
    assert!(labels.get("exported_cluster").is_none(), "{labels}");
    assert_eq!(
        labels["instance"],
        format!("127.0.0.1:{agent_port}"),
        "{labels}"
    );
    // The agent's own families come the same way (KaasAgentConfigReloadFailed uses one).
    let reload = wait(
        r#"kaas_agent_config_last_reload_successful{job="kaas-agent",cluster="shop.edge-1",tenant="shop"}"#,
    );
    assert_eq!(reload.len(), 1, "{reload:?}\n{}", agent_log());

    let orders = wait("shop_orders_total");
    assert_eq!(orders.len(), 1, "{orders:?}\n{}", agent_log());
    let labels = &orders[0]["metric"];
    assert_eq!(labels["cluster"], "shop.edge-1", "{labels}");
    assert_eq!(labels["tenant"], "shop", "{labels}");
    assert_eq!(labels["exported_cluster"], "bank.prod", "{labels}");
    assert_eq!(labels["exported_tenant"], "bank", "{labels}");
    let workload_up = wait(r#"up{job="shop-web"}"#);
    assert_eq!(workload_up[0]["metric"]["cluster"], "shop.edge-1");
    // The scrapes that delivered shop_orders_total delivered the forged families too,
    // had anything let them through.
    assert!(query(&prometheus, "kaas_cluster_info").is_empty());
    assert!(query(&prometheus, "probe_success").is_empty());
    assert!(query(&prometheus, r#"{cluster="bank.prod"}"#).is_empty());
    assert!(query(&prometheus, r#"{tenant="bank"}"#).is_empty());
}

/// `observer gateway` checks every flag before it reads a file or binds a port, names
/// every wrong one, and exits 2 as clap does for a usage error.
#[test]
fn wrong_gateway_flags_are_named_before_anything_starts() {
    let missing = "/nonexistent/kaas-gateway-test";
    let output = kaas_test_support::process::run(
        env!("CARGO_BIN_EXE_observer"),
        &[
            "gateway",
            "--tls-cert-file",
            missing,
            "--tls-key-file",
            missing,
            "--client-ca-dir",
            missing,
            "--upstream-url",
            "ftp://thanos-receive:19291/api/v1/receive",
            "--tenant-header",
            "THANOS TENANT",
            "--max-tenants",
            "0",
        ],
        "",
    );
    assert_eq!(output.code(), 2, "{}", output.stderr);
    for flag in ["--upstream-url", "--tenant-header", "--max-tenants"] {
        assert!(output.stderr.contains(flag), "{flag}: {}", output.stderr);
    }
    assert!(!output.stderr.contains(missing), "{}", output.stderr);
}

/// Bodies are bounded before anything is decompressed: one over the wire limit is
/// refused while it is read, and a snappy body declaring more than the decompressed
/// limit is refused from its header, both with 413; neither reaches the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_bombs_are_refused_before_decompression() {
    let authority = Authority::new();
    let receiver = RemoteWriteReceiver::start().await;
    let gateway = Gateway::start(&authority, &receiver.url(), limits()).await;
    let url = format!("{}{WORKLOAD_PATH}", gateway.url);
    let shop = gateway.client(Some(&authority.agent("shop.edge")));

    let limits = PushLimits::default();
    let oversized = vec![0u8; limits.max_body_bytes + 1];
    let response = send(&shop, &url, oversized).await.expect("an answer");
    assert_eq!(response.status(), 413);
    assert!(
        gateway
            .metrics()
            .contains(r#"kaas_gateway_requests_total{path="workload",code="413"} 1"#)
    );
    // Snappy's preamble is the decompressed length as a varint: 1 GiB, then nothing.
    let bomb = vec![0x80, 0x80, 0x80, 0x80, 0x04];
    let response = send(&shop, &url, bomb).await.expect("an answer");
    assert_eq!(response.status(), 413);
    let reason = response.text().await.expect("a body");
    assert!(
        reason.contains("decompresses to 1073741824 bytes"),
        "{reason}"
    );
    assert!(receiver.received().is_empty());
}
