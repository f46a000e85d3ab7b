//! The receive gateway's Loki route end to end (issue 16, "Central"): Loki pushes over
//! mutual TLS with certificates of the observer's real CA, through the gateway on a
//! loopback port, to a recording receiver standing in for the central Loki. What the
//! receiver got is decoded with Loki's published `push.proto`, compiled by protox and
//! read with prost-reflect (`kaas_test_support::loki`), so the check shares no code
//! with the gateway's encoder.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kaas_observer::gateway::forward::Upstream;
use kaas_observer::gateway::limits::{IngestLimiter, LogRateLimiter, TenantLimits};
use kaas_observer::gateway::loki::LOGS_PATH;
use kaas_observer::gateway::server::{self, GatewayState};
use kaas_observer::gateway::{DEFAULT_TENANT_HEADER, client_ca_bundle};
use kaas_observer::identity::ClusterCa;
use kaas_observer::internal_events::GatewayMetrics;
use kaas_proto::loki::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use kaas_series::PushLimits;
use kaas_test_support::loki::loki_streams;
use kaas_test_support::recording_receiver::{Recorded, RecordingReceiver, Reply};
use kaas_test_support::tls::agent_key_and_csr;
use prost::Message as _;

mod gateway_harness;

/// Largest body the test gateway reads.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Each tenant's log rate on the test gateway: a burst of 20 KiB.
const LOG_BYTES_PER_SECOND: u64 = 4096;

/// The observer's CA and a gateway in front of `loki` (none: no Loki upstream).
struct Gateway {
    ca: ClusterCa,
    _dir: tempfile::TempDir,
    url: String,
    state: Arc<GatewayState>,
    _task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    async fn start(loki: Option<&RecordingReceiver>) -> Self {
        kaas_tls::install_default_provider();
        let dir = tempfile::tempdir().expect("test fixture");
        let ca = ClusterCa::load_or_create(dir.path()).expect("test fixture");
        let (cert, key) = ca
            .server_certificate(&["127.0.0.1".to_owned()])
            .expect("test fixture");
        let client_ca = client_ca_bundle(dir.path()).expect("test fixture");
        let tls =
            server::tls_config(cert.as_bytes(), key.as_bytes(), &client_ca).expect("test fixture");
        let upstream = |url: String, header: &str| {
            Upstream::new(
                url.parse().expect("test fixture"),
                kaas_tls::ClientTls::default(),
                header,
            )
            .expect("test fixture")
        };
        let state = Arc::new(GatewayState {
            push_limits: PushLimits {
                max_body_bytes: MAX_BODY_BYTES,
                ..PushLimits::default()
            },
            limiter: IngestLimiter::new(
                TenantLimits {
                    max_active_series: 10,
                    max_samples_per_second: 10,
                },
                4,
                10,
            ),
            log_limiter: LogRateLimiter::new(LOG_BYTES_PER_SECOND, 4),
            // Thanos is never reached by these tests.
            upstream: upstream("http://127.0.0.1:9/".into(), DEFAULT_TENANT_HEADER),
            loki: loki.map(|l| {
                upstream(
                    format!("{}/loki/api/v1/push", l.base_url()),
                    "X-Scope-OrgID",
                )
            }),
            metrics: GatewayMetrics::default(),
            standings: None,
        });
        let (port, task) = gateway_harness::serve(state.clone(), tls).await;
        Self {
            ca,
            _dir: dir,
            url: format!("https://127.0.0.1:{port}{LOGS_PATH}"),
            state,
            _task: task,
        }
    }

    /// A client of `cluster`'s agent, with a certificate the CA signed.
    fn agent(&self, cluster: &str) -> reqwest::Client {
        let (key, csr) = agent_key_and_csr();
        let signed = self
            .ca
            .sign_agent_csr(cluster, "default", &csr, Duration::from_secs(3600))
            .expect("test fixture");
        gateway_harness::client(&self.ca.bundle_pem(), Some(&(signed.pem, key)))
    }

    /// The gateway's metrics in the text format.
    fn metrics(&self) -> String {
        gateway_harness::metrics(&self.state)
    }
}

/// Pushes `request` snappy compressed, with `X-Scope-OrgID: claimed` if any.
async fn push(
    client: &reqwest::Client,
    url: &str,
    request: &PushRequest,
    claimed: Option<&str>,
) -> reqwest::Response {
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("test fixture");
    let mut builder = client
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy");
    if let Some(tenant) = claimed {
        builder = builder.header("X-Scope-OrgID", tenant);
    }
    builder
        .body(body)
        .send()
        .await
        .expect("the gateway answers")
}

fn entry(seconds: i64, line: &str, metadata: &[(&str, &str)]) -> EntryAdapter {
    EntryAdapter {
        timestamp: Some(Timestamp { seconds, nanos: 7 }),
        line: line.into(),
        structured_metadata: metadata
            .iter()
            .map(|(name, value)| LabelPairAdapter {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect(),
    }
}

/// One stream of what the receiver got, as Loki's schema reads it: labels, and per
/// entry its time, line and metadata.
type Stream = (String, Vec<(i64, i32, String, BTreeMap<String, String>)>);

fn decoded(request: &Recorded) -> Vec<Stream> {
    loki_streams(&request.body)
        .into_iter()
        .map(|(labels, entries)| {
            let entries = entries
                .into_iter()
                .map(|e| (e.seconds, e.nanos, e.line, e.metadata))
                .collect();
            (labels, entries)
        })
        .collect()
}

fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// A node agent of `shop.edge` pushes the control plane's and the kubelet's lines, one
/// stream claiming to be `bank.core` of tenant `bank`: the central Loki gets every line,
/// time and metadata as sent, under `X-Scope-OrgID: shop` and with `cluster` and
/// `tenant` from the certificate on every stream, the claims kept as `exported_…`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_files_every_stream_under_its_cluster_and_tenant() {
    let loki = RecordingReceiver::start(Reply::status(204)).await;
    let gateway = Gateway::start(Some(&loki)).await;
    let request = PushRequest {
        streams: vec![
            StreamAdapter {
                labels:
                    r#"{k8s_container_name="kube-apiserver", k8s_namespace_name="kube-system"}"#
                        .into(),
                entries: vec![
                    entry(1_700_000_000, "I1207 apiserver started", &[]),
                    entry(
                        1_700_000_001,
                        "W1207 slow etcd",
                        &[("log_iostream", "stderr")],
                    ),
                ],
                hash: 42,
            },
            StreamAdapter {
                labels: r#"{cluster="bank.core", k8s_node_name="n1", tenant="bank"}"#.into(),
                entries: vec![entry(
                    1_700_000_002,
                    "kubelet: node ready",
                    &[("systemd_unit", "kubelet.service"), ("tenant", "bank")],
                )],
                hash: 0,
            },
        ],
    };
    let answer = push(&gateway.agent("shop.edge"), &gateway.url, &request, None).await;
    assert_eq!(answer.status(), 204, "{:?}", answer.text().await);

    let received = loki.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/loki/api/v1/push");
    assert_eq!(
        received[0].headers.get("x-scope-orgid").map(String::as_str),
        Some("shop")
    );
    assert_eq!(
        decoded(&received[0]),
        vec![
            (
                r#"{cluster="shop.edge", k8s_container_name="kube-apiserver", k8s_namespace_name="kube-system", tenant="shop"}"#.to_owned(),
                vec![
                    (1_700_000_000, 7, "I1207 apiserver started".to_owned(), metadata(&[])),
                    (1_700_000_001, 7, "W1207 slow etcd".to_owned(), metadata(&[("log_iostream", "stderr")])),
                ],
            ),
            (
                r#"{cluster="shop.edge", exported_cluster="bank.core", exported_tenant="bank", k8s_node_name="n1", tenant="shop"}"#.to_owned(),
                vec![(
                    1_700_000_002,
                    7,
                    "kubelet: node ready".to_owned(),
                    metadata(&[("systemd_unit", "kubelet.service"), ("exported_tenant", "bank")]),
                )],
            ),
        ]
    );
    let metrics = gateway.metrics();
    assert!(
        metrics.contains(r#"kaas_gateway_log_entries_forwarded_total{tenant="shop"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kaas_gateway_requests_total{path="logs",code="204"} 1"#),
        "{metrics}"
    );
}

/// A push naming another tenant in `X-Scope-OrgID` is refused whole and nothing
/// reaches Loki; one naming its own tenant passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_claims_another_tenant_is_refused() {
    let loki = RecordingReceiver::start(Reply::status(204)).await;
    let gateway = Gateway::start(Some(&loki)).await;
    let agent = gateway.agent("shop.edge");
    let request = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{k8s_node_name="n1"}"#.into(),
            entries: vec![entry(1_700_000_000, "line", &[])],
            hash: 0,
        }],
    };
    let answer = push(&agent, &gateway.url, &request, Some("bank")).await;
    assert_eq!(answer.status(), 403);
    let reason = answer.text().await.expect("a reason");
    assert!(
        reason.contains("\"bank\"") && reason.contains("\"shop\""),
        "{reason}"
    );
    assert!(loki.received().is_empty());

    let answer = push(&agent, &gateway.url, &request, Some("shop")).await;
    assert_eq!(answer.status(), 204);
    assert_eq!(loki.received().len(), 1);
}

/// Bodies over the limit, bodies that are not Loki pushes, malformed stream labels and
/// a Loki that refuses: each answered with its status, only the last reaching Loki
/// (whose answer the agent is given, so that it retries a 5xx).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_malformed_and_refused_pushes_are_answered_with_their_status() {
    let loki = RecordingReceiver::start(Reply::status(503)).await;
    let gateway = Gateway::start(Some(&loki)).await;
    let agent = gateway.agent("shop.edge");
    let big = PushRequest {
        streams: vec![StreamAdapter {
            labels: "{a=\"1\"}".into(),
            // Random-looking text does not compress below the limit.
            entries: (0..5000)
                .map(|i| {
                    entry(
                        i,
                        &format!("{:x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                        &[],
                    )
                })
                .collect(),
            hash: 0,
        }],
    };
    assert_eq!(push(&agent, &gateway.url, &big, None).await.status(), 413);
    let garbage = agent
        .post(&gateway.url)
        .header("Content-Type", "application/x-protobuf")
        .body(b"\x04\x00\xff\xff".to_vec())
        .send()
        .await
        .expect("an answer");
    assert_eq!(garbage.status(), 400);
    let json = agent
        .post(&gateway.url)
        .header("Content-Type", "application/json")
        .body("{\"streams\": []}")
        .send()
        .await
        .expect("an answer");
    assert_eq!(json.status(), 415);
    let malformed = PushRequest {
        streams: vec![StreamAdapter {
            labels: "{tenant=bank}".into(),
            entries: vec![entry(1, "x", &[])],
            hash: 0,
        }],
    };
    assert_eq!(
        push(&agent, &gateway.url, &malformed, None).await.status(),
        400
    );
    assert!(loki.received().is_empty());
    let fine = PushRequest {
        streams: vec![StreamAdapter {
            labels: "{a=\"1\"}".into(),
            entries: vec![entry(1, "x", &[])],
            hash: 0,
        }],
    };
    assert_eq!(push(&agent, &gateway.url, &fine, None).await.status(), 503);
    assert_eq!(loki.received().len(), 1);
    assert!(
        !gateway
            .metrics()
            .contains("kaas_gateway_log_entries_forwarded_total{")
    );
}

/// Issue 16: a tenant over its log bytes per second is refused whole with 429 and
/// `Retry-After`, nothing of it reaching Loki, and counted; another tenant has a rate
/// of its own, and the tenant is served again once its bucket refills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_log_rate_is_refused_with_when_to_retry() {
    let loki = RecordingReceiver::start(Reply::status(204)).await;
    let gateway = Gateway::start(Some(&loki)).await;
    // 12 KiB of line (compressing far below the body limit): one fits the 20 KiB
    // burst, two do not.
    let line = "kubelet: ".repeat(12 * 1024 / 9);
    let request = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{k8s_node_name="n1"}"#.into(),
            entries: vec![entry(1_700_000_000, &line, &[])],
            hash: 0,
        }],
    };
    let shop = gateway.agent("shop.edge");
    assert_eq!(
        push(&shop, &gateway.url, &request, None).await.status(),
        204
    );
    let refused = push(&shop, &gateway.url, &request, None).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let reason = refused.text().await.expect("a reason");
    assert!(reason.contains("log_bytes_per_second"), "{reason}");
    assert_eq!(loki.received().len(), 1, "the refused push reached Loki");
    // Another tenant's rate is its own.
    let bank = gateway.agent("bank.core");
    assert_eq!(
        push(&bank, &gateway.url, &request, None).await.status(),
        204
    );
    let metrics = gateway.metrics();
    assert!(
        metrics.contains(
            r#"kaas_gateway_requests_refused_total{tenant="shop",limit="log_bytes_per_second"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kaas_gateway_requests_total{path="logs",code="429"} 1"#),
        "{metrics}"
    );
    // Served again after the wait it was told.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let mut served = false;
    for _ in 0..10 {
        if push(&shop, &gateway.url, &request, None).await.status() == 204 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(served, "the tenant was never served again");
}

/// A gateway without `--loki-upstream-url` says so; a certificate whose cluster names
/// no tenant is refused as on the metrics paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_loki_upstream_or_a_tenant_the_route_refuses() {
    let gateway = Gateway::start(None).await;
    let request = PushRequest::default();
    let answer = push(&gateway.agent("shop.edge"), &gateway.url, &request, None).await;
    assert_eq!(answer.status(), 404);
    assert!(
        answer
            .text()
            .await
            .expect("a reason")
            .contains("--loki-upstream-url")
    );

    let loki = RecordingReceiver::start(Reply::status(204)).await;
    let gateway = Gateway::start(Some(&loki)).await;
    let answer = push(&gateway.agent("legacy"), &gateway.url, &request, None).await;
    assert_eq!(answer.status(), 403);
    assert!(loki.received().is_empty());
}

/// Appends `lines` in the CRI format to the container log `file`, stamped now (the
/// buffer drops records older than its maximum age).
fn append_cri(file: &std::path::Path, lines: &[&str]) {
    use std::io::Write as _;
    let now = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%NZ"])
        .output()
        .expect("date");
    let now = String::from_utf8(now.stdout).expect("test fixture");
    std::fs::create_dir_all(file.parent().expect("a container directory")).expect("test fixture");
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .expect("test fixture");
    for line in lines {
        writeln!(out, "{} stdout F {line}", now.trim()).expect("test fixture");
    }
}

/// Issue 16, "Central", with the real agent: a node agent of `shop.edge` runs the
/// central log pipeline the observer renders (`--central-logs`), with the certificate
/// it got at join, and the gateway files the control plane's container lines in the
/// central Loki under `shop` with the certificate's `cluster`; other `kube-system`
/// containers and the tenant's own namespaces are not collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_agent_ships_the_control_planes_logs_through_the_gateway() {
    use kaas_observer::rendering::{CentralPipelineSettings, central_log_pipeline};
    use kaas_pipeline::agent_config::AgentConfig;
    use kaas_test_support::process::{ChildGuard, free_port};

    let loki = RecordingReceiver::start(Reply::status(204)).await;
    let gateway = Gateway::start(Some(&loki)).await;
    let dir = tempfile::tempdir().expect("test fixture");
    let base = gateway.url.trim_end_matches(LOGS_PATH).to_owned();
    let settings = CentralPipelineSettings {
        logs: true,
        gateway_ca_pem: Some(gateway.ca.bundle_pem()),
        ..CentralPipelineSettings::new(base)
    };
    let pipeline = central_log_pipeline(&settings).expect("test fixture");
    let rendered = AgentConfig::from_validated(
        BTreeMap::from([("cluster".to_owned(), "shop.edge".to_owned())]),
        &[],
    )
    .with_log_pipelines(&[pipeline])
    .render();
    let config = dir.path().join("agent.json");
    std::fs::write(&config, &rendered.body).expect("test fixture");
    let data = dir.path().join("agent-data");
    let identity = data.join("identity");
    std::fs::create_dir_all(&identity).expect("test fixture");
    let (key, csr) = agent_key_and_csr();
    let signed = gateway
        .ca
        .sign_agent_csr("shop.edge", "node-a", &csr, Duration::from_secs(3600))
        .expect("test fixture");
    std::fs::write(identity.join("tls.crt"), signed.pem).expect("test fixture");
    std::fs::write(identity.join("tls.key"), key).expect("test fixture");
    let pods = dir.path().join("pods");
    std::fs::create_dir_all(&pods).expect("test fixture");
    // A node without journal files yet (the journal input needs its directory).
    let journal = dir.path().join("journal");
    std::fs::create_dir_all(&journal).expect("test fixture");
    let log = dir.path().join("agent.log");
    let agent_port = free_port();
    let _agent = ChildGuard::spawn(
        "cluster-agent",
        std::process::Command::new(gateway_harness::cluster_agent_binary())
            .args(["run", "--role", "node", "--kubernetes", "off"])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .arg("--pod-log-dir")
            .arg(&pods)
            .arg("--journal-dir")
            .arg(&journal)
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{agent_port}"))
            .env("NODE_NAME", "node-a")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("test fixture")),
    );
    // Files that appear after the agent started are read from their beginning.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let uid = "0f3c9a52-1111-2222-3333-444455556666";
    append_cri(
        &pods.join(format!(
            "kube-system_kube-apiserver-node-a_{uid}/kube-apiserver/0.log"
        )),
        &["apiserver-line-1", "apiserver-line-2"],
    );
    append_cri(
        &pods.join(format!("kube-system_coredns-1_{uid}/coredns/0.log")),
        &["coredns-line"],
    );
    append_cri(
        &pods.join(format!("shop_web-1_{uid}/web/0.log")),
        &["tenant-line"],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let received = || -> Vec<Stream> { loki.received().iter().flat_map(decoded).collect() };
    while received().iter().map(|(_, e)| e.len()).sum::<usize>() < 2
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Time for lines that should not come to come, had anything let them through.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let streams = received();
    let agent_metrics = reqwest::get(format!("http://127.0.0.1:{agent_port}/metrics"))
        .await
        .expect("agent metrics")
        .text()
        .await
        .expect("agent metrics");
    let agent_log = std::fs::read_to_string(&log).unwrap_or_default()
        + &agent_metrics
            .lines()
            .filter(|l| l.contains("log_"))
            .collect::<Vec<_>>()
            .join("\n");
    let lines: Vec<&str> = streams
        .iter()
        .flat_map(|(_, entries)| entries.iter().map(|e| e.2.as_str()))
        .collect();
    assert_eq!(
        lines,
        ["apiserver-line-1", "apiserver-line-2"],
        "{agent_log}"
    );
    let labels = &streams[0].0;
    for label in [
        r#"cluster="shop.edge""#,
        r#"tenant="shop""#,
        r#"k8s_namespace_name="kube-system""#,
        r#"k8s_container_name="kube-apiserver""#,
        r#"k8s_node_name="node-a""#,
    ] {
        assert!(labels.contains(label), "{label} in {labels}");
    }
    assert!(
        loki.received()
            .iter()
            .all(|r| r.headers.get("x-scope-orgid").map(String::as_str) == Some("shop"))
    );
}
