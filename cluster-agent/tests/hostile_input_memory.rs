//! The real agent binary on loopback under hostile input: a 64 KiB remote-write body
//! whose snappy header declares 1 GiB, a gzip bomb over OTLP/HTTP (with a lying size
//! trailer), a 200,000-label
//! series, and a target that turns into a 2,000,000-series exposition. Throughout,
//! `/healthz` answers; afterwards the agent's peak RSS (`VmHWM`) is less than 64 MiB
//! above what it was idle, and the next normal push and scrape reach a real
//! remote-write receiver.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kaas_proto::remote_write::v1::{Label, Sample, TimeSeries, WriteRequest};
use kaas_test_support::http;
use kaas_test_support::process::{ChildGuard, free_port, proc_status_bytes};
use kaas_test_support::remote_write_receiver::RemoteWriteReceiver;
use prost::Message;

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
const DEADLINE: Duration = Duration::from_secs(30);
/// How much the peak RSS may grow over idle.
const PEAK_GROWTH_BYTES: u64 = 64 << 20;
/// Series the hostile exposition has.
const HOSTILE_SERIES: usize = 2_000_000;

/// The agent's peak resident set (`VmHWM`) in bytes.
fn peak_rss(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM:")
}

/// A size from `/proc/PID/status` in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    proc_status_bytes(&pid.to_string(), field)
}

/// Series `i` of the hostile exposition: a five-letter name, so that the 2,000,000
/// lines (`abcde 1`) take 16,000,000 bytes, under the body limit: the sample limit is
/// what stops them.
fn hostile_line(mut i: usize, out: &mut Vec<u8>) {
    let mut name = [b'a'; 5];
    for letter in name.iter_mut().rev() {
        *letter = b'a' + (i % 26) as u8;
        i /= 26;
    }
    out.extend_from_slice(&name);
    out.extend_from_slice(b" 1\n");
}

/// A scrape target on loopback that serves a small exposition until `hostile` is
/// set, then 2,000,000 series.
fn serve_target(hostile: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let mut bomb = Vec::with_capacity(HOSTILE_SERIES * 8);
    for i in 0..HOSTILE_SERIES {
        hostile_line(i, &mut bomb);
    }
    assert!(bomb.len() < 16 << 20, "{} bytes", bomb.len());
    let bomb = Arc::new(bomb);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (hostile, bomb) = (hostile.clone(), bomb.clone());
            std::thread::spawn(move || {
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head);
                let normal = b"normal_metric 1\n".to_vec();
                let body: &[u8] = if hostile.load(Ordering::Relaxed) {
                    &bomb
                } else {
                    &normal
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            });
        }
    });
    port
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn remote_write(series: Vec<TimeSeries>) -> Vec<u8> {
    let request = WriteRequest {
        timeseries: series,
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy")
}

fn series(labels: Vec<(String, String)>) -> TimeSeries {
    TimeSeries {
        labels: labels
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect(),
        samples: vec![Sample {
            value: 1.0,
            timestamp: now_ms(),
        }],
    }
}

/// Whether the receiver has a sample of `name` (with `instance` when given) at or
/// after `since`, and with `value` when given.
fn arrived(
    receiver: &RemoteWriteReceiver,
    name: &str,
    instance: Option<&str>,
    value: Option<f64>,
    since: i64,
) -> bool {
    receiver.accepted().iter().any(|(labels, samples)| {
        let has = |n: &str, v: &str| labels.iter().any(|(ln, lv)| ln == n && lv == v);
        has("__name__", name)
            && instance.is_none_or(|i| has("instance", i))
            && samples
                .iter()
                .any(|(ts, v)| *ts >= since && value.is_none_or(|value| *v == value))
    })
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < until, "{what} within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 13, finding 4 and the limits: under the push bomb, a gzip bomb, a
/// 200,000-label series and a 2,000,000-series scrape the agent's peak RSS grows by
/// less than 64 MiB, `/healthz` answers throughout, and normal pushes and scrapes go on.
/// 552c13e grew to 618 MB on the push bomb alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_costs_the_agent_little_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = RemoteWriteReceiver::start().await;
    let hostile = Arc::new(AtomicBool::new(false));
    let target_port = serve_target(hostile.clone());
    let agent_port = free_port();
    let config = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n  - metadata: {{name: hostile}}\n    spec:\n      input:\n        scrapeInterval: 2s\n        remoteWrite: {{enabled: true, authentication: {{mode: unauthenticated}}}}\n        otlp: {{enabled: true, authentication: {{mode: unauthenticated}}}}\n        static: {{targets: [{{addresses: ['127.0.0.1:{target_port}']}}]}}\n      output: {{prometheusRemoteWrite: {{url: '{}'}}}}\n",
        sink.url()
    );
    let config_path = dir.path().join("agent.yaml");
    std::fs::write(&config_path, config).expect("config");
    let agent = ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .args(["run", "--kubernetes", "off", "--config"])
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{agent_port}"))
            .arg("--otlp-grpc-listen-address")
            .arg("127.0.0.1:0")
            .arg("--otlp-http-listen-address")
            .arg("127.0.0.1:0")
            .arg("--zipkin-listen-address")
            .arg("127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let url = |path: &str| format!("http://127.0.0.1:{agent_port}{path}");
    let started = now_ms();
    // Idle: ready, a normal scrape delivered, a normal push delivered.
    let push_normal = |name: &str| {
        http::post(
            &url("/api/v1/write"),
            &[("Content-Type", "application/x-protobuf")],
            &remote_write(vec![series(vec![("__name__".into(), name.into())])]),
        )
    };
    wait_until("the agent is ready", || {
        http::get(&url("/readyz")).is_ok_and(|(s, _)| s == 200)
    })
    .await;
    assert_eq!(push_normal("before_attack").map(|(s, _)| s), Ok(204));
    wait_until("the first normal scrape and push arrive", || {
        arrived(&sink, "normal_metric", None, None, started)
            && arrived(&sink, "before_attack", None, None, started)
    })
    .await;
    let idle = peak_rss(agent.id());

    // /healthz is asked every 100 ms while the attacks run.
    let attacking = Arc::new(AtomicBool::new(true));
    let health = {
        let (attacking, url) = (attacking.clone(), url("/healthz"));
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut asked = 0;
            while attacking.load(Ordering::Relaxed) {
                asked += 1;
                match http::get(&url) {
                    Ok((200, _)) => {}
                    other => failures.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (asked, failures)
        })
    };

    // The push bomb: 64 KiB whose snappy header declares 1 GiB.
    let mut bomb = vec![0x80, 0x80, 0x80, 0x80, 0x04];
    bomb.resize(64 * 1024, 0);
    let (status, reason) = http::post(
        &url("/api/v1/write"),
        &[("Content-Type", "application/x-protobuf")],
        &bomb,
    )
    .expect("the bomb is answered");
    assert_eq!(status, 413, "{reason}");
    eprintln!(
        "after the push bomb: +{} KiB",
        (peak_rss(agent.id()) - idle) >> 10
    );

    // A gzip bomb over OTLP/HTTP: 256 MiB of zeros in about 256 KiB, its size trailer
    // lying (100 bytes) so that only decompressing through the limit stops it.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        encoder.write_all(&zeros).expect("gzip");
    }
    let mut gzip_bomb = encoder.finish().expect("gzip");
    let end = gzip_bomb.len();
    gzip_bomb[end - 4..].copy_from_slice(&100u32.to_le_bytes());
    let (status, reason) = http::post(
        &url("/v1/metrics"),
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip_bomb,
    )
    .expect("the gzip bomb is answered");
    assert_eq!(status, 413, "{reason}");
    eprintln!(
        "after the gzip bomb: +{} KiB, now {} KiB",
        (peak_rss(agent.id()) - idle) >> 10,
        status_bytes(agent.id(), "VmRSS:") >> 10
    );

    // A series of 200,000 labels.
    let wide = series(
        std::iter::once(("__name__".to_owned(), "wide".to_owned()))
            .chain((0..200_000).map(|i| (format!("l{i}"), "v".to_owned())))
            .collect(),
    );
    let (status, reason) = http::post(
        &url("/api/v1/write"),
        &[("Content-Type", "application/x-protobuf")],
        &remote_write(vec![wide]),
    )
    .expect("the wide series is answered");
    assert_eq!(status, 400, "{reason}");
    eprintln!(
        "after the wide series: +{} KiB",
        (peak_rss(agent.id()) - idle) >> 10
    );

    // The target turns into 2,000,000 series; its scrape fails on the sample limit.
    let turned = now_ms();
    hostile.store(true, Ordering::Relaxed);
    wait_until("the hostile scrape fails (up 0)", || {
        arrived(&sink, "up", None, Some(0.0), turned)
    })
    .await;
    hostile.store(false, Ordering::Relaxed);
    eprintln!(
        "after the scrape: +{} KiB, now {} KiB",
        (peak_rss(agent.id()) - idle) >> 10,
        status_bytes(agent.id(), "VmRSS:") >> 10
    );
    let after = now_ms();
    wait_until("the next normal scrape succeeds (up 1)", || {
        arrived(&sink, "up", None, Some(1.0), after)
            && arrived(&sink, "normal_metric", None, None, after)
    })
    .await;
    assert_eq!(push_normal("after_attack").map(|(s, _)| s), Ok(204));
    wait_until("the next normal push arrives", || {
        arrived(&sink, "after_attack", None, None, after)
    })
    .await;

    attacking.store(false, Ordering::Relaxed);
    let (asked, failures) = health.join().expect("the health thread");
    assert!(asked > 0);
    assert!(failures.is_empty(), "/healthz failed: {failures:?}");
    let peak = peak_rss(agent.id());
    let growth = peak.saturating_sub(idle);
    eprintln!("idle peak RSS {idle} B, peak after the attacks {peak} B, growth {growth} B");
    assert!(
        growth < PEAK_GROWTH_BYTES,
        "peak RSS grew by {} MiB (idle {} MiB, peak {} MiB)",
        growth >> 20,
        idle >> 20,
        peak >> 20
    );
}
