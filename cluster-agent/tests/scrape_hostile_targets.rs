//! Scraping real sockets that misbehave: gzip-compressed answers are decoded; a target
//! that never answers, one that streams forever, and one that sends garbage each fail
//! their scrape with a clear reason (up=0) within the timeout, and the loop goes on.
//! The limits the agent applies when a pipeline sets none refuse each hostile
//! exposition.

use std::io::Write as _;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_buffer::{DiskBuffer, Limits};
use kaas_cluster_agent::internal_events::PipelineStats;
use kaas_cluster_agent::labels::{ADDRESS, Labels};
use kaas_cluster_agent::record::metrics::Batch;
use kaas_cluster_agent::scrape::config::ScrapeConfig;
use kaas_cluster_agent::scrape::limits::DEFAULT_BODY_SIZE_LIMIT;
use kaas_cluster_agent::scrape::scraper::Scraper;
use kaas_cluster_agent::scrape::target::Target;
use kaas_cluster_agent::scrape::target::{METRICS_PATH, SCHEME};
use kaas_cluster_agent::topology::inlet::Inlet;
use kaas_pipeline::buffer::WhenFull;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Fixture {
    scraper: Scraper,
    inlet: Inlet,
    _dir: tempfile::TempDir,
}

fn fixture(port: u16, timeout: Duration, body_size_limit: u64) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = Limits {
        max_bytes: 16 << 20,
        max_age: Duration::from_secs(3600),
        when_full: WhenFull::DropOldest,
    };
    let (buffer, _) = DiskBuffer::open(dir.path(), limits).expect("buffer");
    let inlet = Inlet {
        buffer: Arc::new(Mutex::new(buffer)),
        stats: Arc::new(PipelineStats::default()),
        wake: Arc::new(tokio::sync::Notify::new()),
    };
    let target = Target::new(Labels::from_pairs([
        (ADDRESS, format!("127.0.0.1:{port}")),
        (SCHEME, "http".into()),
        (METRICS_PATH, "/metrics".into()),
        ("job", "hostile".into()),
    ]))
    .expect("target");
    let config = ScrapeConfig {
        body_size_limit: NonZeroU64::new(body_size_limit).expect("a limit"),
        ..ScrapeConfig::new(Duration::from_secs(10), timeout)
    };
    let client =
        kaas_cluster_agent::scrape::client::ScrapeClient::new(&Default::default()).expect("client");
    let scraper = Scraper::new(
        target,
        config,
        client,
        Arc::new(Default::default()),
        Arc::new(Labels::default()),
        inlet.clone(),
    );
    Fixture {
        scraper,
        inlet,
        _dir: dir,
    }
}

impl Fixture {
    /// Names and values of what one scrape buffered.
    async fn scrape(&mut self) -> Vec<(String, f64)> {
        self.scraper.scrape_once().await;
        let mut buffer = self.inlet.buffer.lock().expect("buffer lock");
        let mut out = Vec::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        while let Some((_, record)) = buffer.read_next(now).expect("read") {
            for series in Batch::decode(&record.payload).expect("batch").series {
                let name = series
                    .labels
                    .iter()
                    .find(|l| l.name == "__name__")
                    .expect("name")
                    .value
                    .clone();
                out.extend(series.samples.iter().map(|s| (name.clone(), s.value)));
            }
        }
        let position = buffer.read_position();
        buffer.ack(position).expect("ack");
        out
    }

    fn error(&self) -> String {
        self.scraper
            .health
            .lock()
            .expect("health")
            .last_error
            .clone()
            .unwrap_or_default()
    }
}

fn value(samples: &[(String, f64)], name: &str) -> Option<f64> {
    samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

/// Serves one canned answer per connection, after reading the request head.
async fn serve(answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let n = socket.read(&mut head).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&head[..n]).to_string();
                let _ = socket.write_all(&answer(&request)).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn gzip_answers_are_decoded() {
    let port = serve(|request| {
        assert!(request.to_ascii_lowercase().contains("accept-encoding: gzip"), "{request}");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"compressed_metric 42\n").expect("gzip");
        let body = encoder.finish().expect("gzip");
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend(body);
        answer
    })
    .await;
    let mut f = fixture(port, Duration::from_secs(5), DEFAULT_BODY_SIZE_LIMIT.get());
    let samples = f.scrape().await;
    assert_eq!(
        value(&samples, "compressed_metric"),
        Some(42.0),
        "{}",
        f.error()
    );
    assert_eq!(value(&samples, "up"), Some(1.0));
}

#[tokio::test]
async fn a_target_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // accept, then say nothing
        }
    });
    let mut f = fixture(
        port,
        Duration::from_millis(500),
        DEFAULT_BODY_SIZE_LIMIT.get(),
    );
    let started = std::time::Instant::now();
    let samples = f.scrape().await;
    assert_eq!(value(&samples, "up"), Some(0.0));
    assert!(f.error().starts_with("request failed"), "{}", f.error());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout bounds the scrape"
    );
}

#[tokio::test]
async fn an_endless_body_is_cut_at_the_size_limit() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = socket.read(&mut head).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await;
                let line =
                    b"endless_metric{i=\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"} 1\n";
                let chunk = [format!("{:x}\r\n", line.len()).as_bytes(), line, b"\r\n"].concat();
                // Bounded, but far beyond the limit: 64k lines of ~60 bytes.
                for _ in 0..65_536 {
                    if socket.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut f = fixture(port, Duration::from_secs(10), 64 * 1024);
    let samples = f.scrape().await;
    assert_eq!(value(&samples, "up"), Some(0.0));
    assert_eq!(f.error(), "body size limit of 65536 bytes exceeded");
    assert_eq!(
        value(&samples, "endless_metric"),
        None,
        "nothing of a failed scrape is kept"
    );
}

#[tokio::test]
async fn garbage_and_errors_fail_the_scrape_and_the_next_one_recovers() {
    let calls = Arc::new(Mutex::new(0));
    let counter = calls.clone();
    let port = serve(move |_| {
        let mut calls = counter.lock().expect("lock");
        *calls += 1;
        let (status, body): (&str, &[u8]) = match *calls {
            1 => ("500 Internal Server Error", b"boom"),
            2 => ("200 OK", b"\xff\xfe not utf-8\n"),
            _ => ("200 OK", b"healthy 1\n"),
        };
        [
            format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
            body,
        ]
        .concat()
    })
    .await;
    let mut f = fixture(port, Duration::from_secs(5), DEFAULT_BODY_SIZE_LIMIT.get());
    assert_eq!(value(&f.scrape().await, "up"), Some(0.0));
    assert_eq!(f.error(), "server returned HTTP status 500");
    assert_eq!(value(&f.scrape().await, "up"), Some(0.0));
    assert!(f.error().contains("not valid UTF-8"), "{}", f.error());
    let samples = f.scrape().await;
    assert_eq!(value(&samples, "up"), Some(1.0));
    assert_eq!(value(&samples, "healthy"), Some(1.0));
}

#[tokio::test]
async fn redirects_are_followed_up_to_a_limit() {
    let port = serve(|request| {
        let answer = if request.starts_with("GET /metrics ") {
            "HTTP/1.1 302 Found\r\nLocation: /moved\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
        } else if request.starts_with("GET /moved ") {
            let body = "moved_metric 7\n";
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
        };
        answer.into_bytes()
    })
    .await;
    let mut f = fixture(port, Duration::from_secs(5), DEFAULT_BODY_SIZE_LIMIT.get());
    let samples = f.scrape().await;
    assert_eq!(value(&samples, "moved_metric"), Some(7.0), "{}", f.error());

    // A target that redirects to itself forever fails its scrape, it does not hang.
    let port = serve(|_| {
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: /metrics\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
    })
    .await;
    let mut f = fixture(port, Duration::from_secs(5), DEFAULT_BODY_SIZE_LIMIT.get());
    let samples = f.scrape().await;
    assert_eq!(value(&samples, "up"), Some(0.0));
    assert_eq!(f.error(), "request failed: stopped after 10 redirects");
}

/// Serves `body` (chunked, as a streaming exporter would) to every scrape.
async fn serve_streamed(body: Arc<Vec<u8>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = socket.read(&mut head).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await;
                for part in body.chunks(64 * 1024) {
                    let chunk =
                        [format!("{:x}\r\n", part.len()).as_bytes(), part, b"\r\n"].concat();
                    if socket.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    port
}

/// Issue 13, finding 10 (scrape): the limits a pipeline gets when it sets none refuse
/// each hostile exposition: a body over 16 MiB, more than 100,000 samples, a series
/// with 65 labels, a 257-byte label name and a 4,097-byte label value. 552c13e read up
/// to 64 MiB and had no sample or label limit, so every one of these was taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limits_refuse_each_hostile_exposition() {
    let many_labels: Vec<String> = (0..64).map(|i| format!("l{i}=\"v\"")).collect();
    let cases: Vec<(Vec<u8>, String)> = vec![
        (
            "padding_metric{p=\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"} 1\n"
                .repeat(300_000)
                .into_bytes(),
            "body size limit of 16777216 bytes exceeded".into(),
        ),
        (
            (0..200_001)
                .map(|i| format!("s{i} 1\n"))
                .collect::<String>()
                .into_bytes(),
            "sample_limit exceeded: more than 100000 samples after metric relabeling".into(),
        ),
        (
            format!("wide{{{}}} 1\n", many_labels.join(",")).into_bytes(),
            "label_limit exceeded (metric: wide, number of labels: 66, limit: 64)".into(),
        ),
        (
            format!("long_name{{{}=\"v\"}} 1\n", "n".repeat(257)).into_bytes(),
            "label_name_length_limit exceeded".into(),
        ),
        (
            format!("long_value{{v=\"{}\"}} 1\n", "x".repeat(4097)).into_bytes(),
            "label_value_length_limit exceeded".into(),
        ),
    ];
    for (body, expected) in cases {
        let port = serve_streamed(Arc::new(body)).await;
        let mut f = fixture(port, Duration::from_secs(10), DEFAULT_BODY_SIZE_LIMIT.get());
        let samples = f.scrape().await;
        assert_eq!(value(&samples, "up"), Some(0.0), "{expected}");
        assert!(
            f.error().starts_with(&expected),
            "{} does not start with {expected}",
            f.error()
        );
    }
}
