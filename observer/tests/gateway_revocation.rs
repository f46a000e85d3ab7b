//! The real `observer gateway` process and the observer's store (SQLite, read only by
//! the gateway): revoking a cluster's agent and deleting a cluster stop their writes at
//! the gateway within the recheck interval, and a changed CA bundle in
//! `--client-ca-dir` is taken without a restart (issue 15; docs/operator-guide.md, the
//! incident runbook).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kaas_observer::identity::{ClusterCa, PREVIOUS_CA_CERT_FILE};
use kaas_observer::secrets::SecretBox;
use kaas_observer::store::certificates::NewAgentCertificate;
use kaas_observer::store::{Actor, NewCluster, Store};
use kaas_proto::remote_write::{CONTENT_ENCODING, VERSION_HEADER, v1};
use kaas_test_support::process::{ChildGuard, free_port};
use kaas_test_support::remote_write_receiver::RemoteWriteReceiver;
use kaas_test_support::tls::agent_key_and_csr;
use prost::Message as _;

/// How long a change may take to reach the gateway in these tests: the intervals are
/// one second; the deadline only bounds a failing test.
const DEADLINE: Duration = Duration::from_secs(20);
/// How long an agent certificate issued here is valid: far longer than the test.
const VALIDITY: Duration = Duration::from_secs(3600);

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("clock")
}

/// A snappy remote-write 1.0 body with one `up` sample.
fn body() -> Vec<u8> {
    let request = v1::WriteRequest {
        timeseries: vec![v1::TimeSeries {
            labels: vec![v1::Label {
                name: "__name__".into(),
                value: "up".into(),
            }],
            samples: vec![v1::Sample {
                value: 1.0,
                timestamp: now_ms(),
            }],
        }],
        metadata: Vec::new(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy")
}

/// An agent of `cluster` with a certificate `ca` signed, recorded in `store` unless
/// `record` is false.
async fn agent(store: &Store, ca: &ClusterCa, cluster: &str) -> (String, String) {
    let (key, csr) = agent_key_and_csr();
    let signed = ca
        .sign_agent_csr(cluster, "default", &csr, VALIDITY)
        .expect("signed");
    store
        .record_agent_certificate(
            cluster,
            NewAgentCertificate {
                serial_hex: &signed.serial_hex,
                pem: &signed.pem,
                instance: "default",
                not_after_ms: signed.not_after_ms,
            },
            None,
            now_ms(),
        )
        .await
        .expect("recorded");
    (signed.pem, key)
}

/// A client trusting `gateway_ca`, presenting `identity`.
fn client(gateway_ca: &str, identity: &(String, String)) -> reqwest::Client {
    let roots = kaas_tls::roots(gateway_ca.as_bytes(), "ca").expect("roots");
    let tls = kaas_tls::ClientTls {
        trust: kaas_tls::Trust::Roots(std::sync::Arc::new(roots)),
        identity: Some((
            kaas_tls::certificates(identity.0.as_bytes(), "cert").expect("cert"),
            kaas_tls::private_key(identity.1.as_bytes(), "key").expect("key"),
        )),
        ..kaas_tls::ClientTls::default()
    };
    kaas_tls::http::http_client(kaas_tls::http::HttpClientSettings::new(tls, "test"))
        .expect("client")
}

/// The status of one push, or `None` when the handshake was refused.
async fn push(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, v1::CONTENT_TYPE)
        .header(reqwest::header::CONTENT_ENCODING, CONTENT_ENCODING)
        .header(VERSION_HEADER, v1::VERSION_HEADER_VALUE)
        .body(body())
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

/// Pushes until `accepted` holds for the answer, or fails after [`DEADLINE`].
async fn until(
    client: &reqwest::Client,
    url: &str,
    what: &str,
    accepted: impl Fn(&Option<(u16, String)>) -> bool,
) -> Option<(u16, String)> {
    let start = Instant::now();
    loop {
        let answer = push(client, url).await;
        if accepted(&answer) {
            return answer;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: last answer {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts `observer gateway` on loopback reading `ca_dir` and the store at `db`.
fn gateway(
    dir: &Path,
    ca: &ClusterCa,
    ca_dir: &Path,
    db: &Path,
    upstream: &str,
) -> (ChildGuard, String) {
    let (cert, key) = ca
        .server_certificate(&["127.0.0.1".to_owned()])
        .expect("server certificate");
    std::fs::write(dir.join("gateway.crt"), cert).expect("write");
    std::fs::write(dir.join("gateway.key"), key).expect("write");
    let port = free_port();
    let metrics_port = free_port();
    let child = ChildGuard::spawn(
        "observer gateway",
        std::process::Command::new(env!("CARGO_BIN_EXE_observer"))
            .args(["gateway", "--listen-address"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--metrics-listen-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--tls-cert-file")
            .arg(dir.join("gateway.crt"))
            .arg("--tls-key-file")
            .arg(dir.join("gateway.key"))
            .arg("--client-ca-dir")
            .arg(ca_dir)
            .args(["--upstream-url", upstream])
            .arg("--database-url")
            .arg(format!("sqlite://{}?mode=ro", db.display()))
            .args(["--certificate-recheck-seconds", "1"])
            .args(["--client-ca-reload-seconds", "1"])
            .env_remove("KAAS_DATABASE_URL"),
    );
    kaas_test_support::process::wait_for_tcp(
        format!("127.0.0.1:{metrics_port}")
            .parse()
            .expect("address"),
        DEADLINE,
    );
    (child, format!("https://127.0.0.1:{port}/api/v1/receive"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_deleted_clusters_are_refused_and_a_rotated_ca_is_taken_without_a_restart() {
    kaas_tls::install_default_provider();
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("observer.db");
    let store = Store::open_sqlite(&db, SecretBox::generate().expect("key"))
        .await
        .expect("store");
    let ca_dir = dir.path().join("ca");
    let ca = ClusterCa::load_or_create(&ca_dir).expect("CA");
    store
        .create_tenant("shop", &Actor::admin())
        .await
        .expect("tenant");
    for name in ["edge-1", "edge-2", "edge-3"] {
        store
            .create_cluster(
                NewCluster {
                    name: name.into(),
                    tenant: "shop".into(),
                    labels: Default::default(),
                    api_endpoint: None,
                },
                Duration::from_secs(60),
                &Actor::admin(),
            )
            .await
            .expect("cluster");
    }
    let receiver = RemoteWriteReceiver::start().await;
    let (_gateway, url) = gateway(dir.path(), &ca, &ca_dir, &db, &receiver.url());
    let gateway_ca = ca.bundle_pem();

    let revoked = client(&gateway_ca, &agent(&store, &ca, "shop.edge-1").await);
    let deleted = client(&gateway_ca, &agent(&store, &ca, "shop.edge-2").await);
    let unrecorded = {
        let (key, csr) = agent_key_and_csr();
        let signed = ca
            .sign_agent_csr("shop.edge-3", "default", &csr, VALIDITY)
            .expect("signed");
        client(&gateway_ca, &(signed.pem, key))
    };
    for agent in [&revoked, &deleted] {
        let answer = until(agent, &url, "a recorded certificate sends", |a| {
            a.as_ref().is_some_and(|(status, _)| *status < 300)
        })
        .await;
        assert!(answer.is_some());
    }
    let answer = push(&unrecorded, &url).await;
    assert_eq!(
        answer.as_ref().map(|(status, _)| *status),
        Some(403),
        "{answer:?}"
    );

    // The incident: revoke edge-1's agent; delete edge-2.
    store
        .revoke_cluster_certificates("shop.edge-1", &Actor::admin(), now_ms())
        .await
        .expect("revoked");
    store
        .delete_cluster("shop.edge-2", &Actor::admin())
        .await
        .expect("deleted");
    for (agent, what) in [(&revoked, "revoked"), (&deleted, "deleted")] {
        let answer = until(agent, &url, what, |a| {
            a.as_ref().is_some_and(|(status, _)| *status == 403)
        })
        .await;
        assert!(
            answer.is_some_and(|(_, text)| text.contains(what)),
            "{what}"
        );
    }
    let before = receiver.received().len();
    assert_eq!(push(&revoked, &url).await.map(|(s, _)| s), Some(403));
    assert_eq!(
        receiver.received().len(),
        before,
        "nothing more reaches Thanos"
    );

    // A CA the gateway does not know: refused at the handshake, until it is put into
    // the bundle (as `observer ca rotate` keeps the old CA beside the new one).
    let other_dir = dir.path().join("other-ca");
    let other = ClusterCa::load_or_create(&other_dir).expect("CA");
    let store_edge_3 = agent(&store, &other, "shop.edge-3").await;
    let rotated = client(&gateway_ca, &store_edge_3);
    assert_eq!(push(&rotated, &url).await, None, "another CA's certificate");
    std::fs::copy(other_dir.join("ca.crt"), ca_dir.join(PREVIOUS_CA_CERT_FILE)).expect("bundle");
    let answer = until(&rotated, &url, "the changed bundle is taken", |a| {
        a.as_ref().is_some_and(|(status, _)| *status < 300)
    })
    .await;
    assert!(answer.is_some());
}
