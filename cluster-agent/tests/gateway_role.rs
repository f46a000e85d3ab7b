//! `cluster-agent run --role gateway` end to end (issue 17): the real binary takes a
//! pipeline's pushed input and never scrapes its pull input; on SIGTERM it drains
//! (`/readyz` 503, pushes refused with 503 and `Retry-After`) for `--drain-timeout`,
//! then stops, and what its backend had not taken stays on its data directory and is
//! shipped by the next agent that runs on it, as a scaled-in replica's volume is kept
//! for the next scale-out.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kaas_proto::remote_write::v1::{Label, Sample, TimeSeries, WriteRequest};
use kaas_test_support::http;
use kaas_test_support::process::{ChildGuard, free_port};
use kaas_test_support::remote_write_receiver::{Answer, RemoteWriteReceiver};
use prost::Message;

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
/// Generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);
/// Long enough for the checks made while the agent drains.
const DRAIN: &str = "20s";

/// A pipeline that scrapes `target` every second and takes remote-write pushes.
fn config(target: &str, url: &str) -> String {
    format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n  \
         - metadata: {{name: both}}\n    spec:\n      input:\n        scrapeInterval: 1s\n        \
         static: {{targets: [{{addresses: [\"{target}\"]}}]}}\n        \
         remoteWrite: {{enabled: true, authentication: {{mode: unauthenticated}}}}\n      \
         output: {{prometheusRemoteWrite: {{url: \"{url}\"}}}}\n"
    )
}

fn start(config: &Path, data: &Path, port: u16) -> ChildGuard {
    let agent = ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .args(["run", "--role", "gateway", "--drain-timeout", DRAIN])
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--otlp-grpc-listen-address", "127.0.0.1:0"])
            .args(["--otlp-http-listen-address", "127.0.0.1:0"])
            .args(["--zipkin-listen-address", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for(|| ready(port) == Some(200), "the agent is ready");
    agent
}

fn ready(port: u16) -> Option<u16> {
    http::get(&format!("http://127.0.0.1:{port}/readyz"))
        .ok()
        .map(|(status, _)| status)
}

fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let until = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < until, "not within {DEADLINE:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_body() -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let request = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: "pushed_before_scale_in".into(),
            }],
            samples: vec![Sample {
                value: 1.0,
                timestamp: i64::try_from(now.as_millis()).expect("a millisecond time"),
            }],
        }],
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy compresses")
}

fn push(port: u16) -> (u16, String) {
    http::post(
        &format!("http://127.0.0.1:{port}/api/v1/write"),
        &[("Content-Type", "application/x-protobuf")],
        &write_body(),
    )
    .expect("the agent answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_takes_pushes_never_scrapes_and_keeps_what_it_could_not_ship() {
    let dir = tempfile::tempdir().unwrap();
    // A scrape target that only counts: a gateway never connects to it.
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    target.set_nonblocking(true).unwrap();
    // The backend refuses (retryably) until the replica is gone.
    let backend = RemoteWriteReceiver::start().await;
    backend.script(std::iter::repeat_n(Answer::status(503), 10_000));
    let path = dir.path().join("agent.yaml");
    let target_address = target.local_addr().unwrap().to_string();
    std::fs::write(&path, config(&target_address, &backend.url())).unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut agent = start(&path, &data, port);

    let (status, body) = push(port);
    assert_eq!(status, 204, "{body}");
    wait_for(|| !backend.received().is_empty(), "the backend is tried");

    // Scale-in: SIGTERM. Not ready, and every push refused for another replica.
    let pid = agent.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for(|| ready(port) == Some(503), "not ready while draining");
    let (status, body) = push(port);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("stopping"), "{body}");
    // It stops once the drain times out, the sample still undelivered.
    let until = Instant::now() + DEADLINE + DEADLINE;
    while agent.try_wait().is_none() {
        assert!(
            Instant::now() < until,
            "the agent did not stop after draining"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(backend.accepted_samples(), 0);
    assert!(
        target.accept().is_err(),
        "a gateway never scrapes: the target was connected to"
    );

    // Scale-out: the same volume, a backend that takes it.
    let backend = RemoteWriteReceiver::start().await;
    std::fs::write(&path, config(&target_address, &backend.url())).unwrap();
    let _agent = start(&path, &data, free_port());
    wait_for(
        || backend.accepted_samples() == 1,
        "the sample kept on the volume is shipped",
    );
}
