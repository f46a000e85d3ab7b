//! Trace pipeline fault tests (issue 17) against the `cluster-agent` binary, with real
//! rotel as the backends:
//!
//! - `kill -9` under load: a sender pushes spans with unique span ids without pause;
//!   the agent is killed (SIGKILL, no orderly shutdown) and restarted on the same data
//!   directory, and every span the sender got OK for reaches both backends: the one
//!   that was receiving all along and the one that was down until after the restart
//!   (so every accepted span of its pipeline was only on disk at the kill). Duplicates
//!   are allowed (at least once) and counted;
//! - a backend that accepts connections and never answers, behind a 60 s timeout,
//!   holds up no other trace pipeline: rounds of spans reach the other backend while
//!   the hung request is still open.
//!
//! Spans enter through the agent's OTLP/HTTP receiver, encoded here, so every span id
//! is known. rotel forwards what it gets over OTLP/HTTP to a recording receiver on
//! loopback, where the span ids are decoded. Needs `rotel` (`scripts/test.sh` installs
//! it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kaas_proto::otlp::{
    AnyValue, ExportTraceServiceRequest, ExportTraceServiceResponse, KeyValue, Resource,
    ResourceSpans, ScopeSpans, Span, any_value::Value,
};
use kaas_test_support::http;
use kaas_test_support::peers::Rotel;
use kaas_test_support::process::{ChildGuard, free_port};
use kaas_test_support::recording_receiver::{RecordingReceiver, Reply};
use prost::Message;

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
const DEADLINE: Duration = Duration::from_secs(60);
/// Spans per pushed request.
const SPANS_PER_REQUEST: u64 = 50;

/// The agent as a process on loopback: its metrics port and its OTLP/HTTP port.
struct Agent {
    port: u16,
    otlp_http_port: u16,
    log: PathBuf,
    _guard: ChildGuard,
}

impl Agent {
    /// Starts the agent with `trace_pipelines` (the YAML list under `tracePipelines:`)
    /// and its data in `dir/data`, and waits until it is ready.
    fn start(dir: &Path, trace_pipelines: &str) -> Self {
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\ntracePipelines:\n{trace_pipelines}"
            ),
        )
        .expect("agent config");
        let (port, otlp_http_port) = (free_port(), free_port());
        let log = dir.join(format!("agent-{port}.log"));
        let guard = ChildGuard::spawn(
            "cluster-agent",
            Command::new(AGENT)
                .arg("run")
                .arg("--config")
                .arg(&config)
                .arg("--kubernetes")
                .arg("off")
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--listen-address")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--otlp-grpc-listen-address")
                .arg("127.0.0.1:0")
                .arg("--otlp-http-listen-address")
                .arg(format!("127.0.0.1:{otlp_http_port}"))
                .arg("--zipkin-listen-address")
                .arg("127.0.0.1:0")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("agent log")),
        );
        let agent = Self {
            port,
            otlp_http_port,
            log,
            _guard: guard,
        };
        let until = Instant::now() + DEADLINE;
        while http::get(&agent.url("/readyz")).map(|(s, _)| s) != Ok(200) {
            assert!(Instant::now() < until, "agent not ready:\n{}", agent.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn traces_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.otlp_http_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The sum of every series of `metric` for `pipeline` on /metrics (0 if none).
    fn metric(&self, metric: &str, pipeline: &str) -> f64 {
        let (_, body) = http::get(&self.url("/metrics")).expect("agent /metrics");
        let prefix = format!("{metric}{{pipeline=\"{pipeline}\"");
        body.lines()
            .filter(|line| line.starts_with(&prefix))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Pushes `body` until a trace pipeline takes it (the configuration is applied
    /// just after the listeners start); panics on any other answer than 200.
    fn push_until_taken(&self, body: &[u8]) {
        let until = Instant::now() + DEADLINE;
        loop {
            let (status, answer) = push(&self.traces_url(), body).expect("the agent answers");
            match status {
                200 => return,
                404 if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
                _ => panic!("push answered {status}: {answer}\n{}", self.log()),
            }
        }
    }
}

/// Posts an encoded `ExportTraceServiceRequest` to an OTLP/HTTP traces URL.
fn push(url: &str, body: &[u8]) -> Result<(u16, String), String> {
    http::post(url, &[("Content-Type", "application/x-protobuf")], body)
}

/// A trace pipeline `name` taking unauthenticated OTLP and sending it to `output`
/// (YAML flow style).
fn pipeline(name: &str, output: &str) -> String {
    format!(
        "  - metadata: {{name: {name}}}\n    spec:\n      input: {{authentication: {{mode: unauthenticated}}}}\n      output: {output}\n"
    )
}

/// `otlp` output to rotel's OTLP/gRPC port.
fn to_rotel(grpc_port: u16) -> String {
    format!("{{otlp: {{endpoint: \"http://127.0.0.1:{grpc_port}\"}}}}")
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A request of `count` spans named `name` with the span ids `first..first + count`
/// (big-endian), each in a trace of its own.
fn request(name: &str, first: u64, count: u64) -> ExportTraceServiceRequest {
    let start = now_ns();
    let spans = (first..first + count)
        .map(|id| Span {
            trace_id: [id.to_be_bytes(), 0x5eed_5eed_5eed_5eed_u64.to_be_bytes()].concat(),
            span_id: id.to_be_bytes().to_vec(),
            name: name.to_owned(),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000_000,
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("fault-sender".into())),
                    }),
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// A recording receiver answering OTLP/HTTP exports as a backend does (200, an empty
/// `ExportTraceServiceResponse`).
async fn recording_backend() -> RecordingReceiver {
    RecordingReceiver::start(Reply {
        status: 200,
        content_type: "application/x-protobuf",
        body: ExportTraceServiceResponse::default().encode_to_vec(),
    })
    .await
}

/// How often each span id arrived at `receiver`, from the requests rotel forwarded
/// (gzip-compressed or not).
fn received_span_ids(receiver: &RecordingReceiver) -> BTreeMap<u64, u32> {
    let mut ids = BTreeMap::new();
    for recorded in receiver.received() {
        assert_eq!(recorded.path, "/v1/traces");
        let body = match recorded.headers.get("content-encoding").map(String::as_str) {
            Some("gzip") => kaas_series::compression::gzip(&recorded.body, 64 << 20)
                .expect("a gzip body from rotel"),
            _ => recorded.body,
        };
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP");
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            let id = u64::from_be_bytes(span.span_id.as_slice().try_into().expect("8 bytes"));
            *ids.entry(id).or_insert(0) += 1;
        }
    }
    ids
}

/// Waits until `receiver` has every one of `accepted`; returns what it has then.
fn wait_for_every_span(
    receiver: &RecordingReceiver,
    accepted: &BTreeSet<u64>,
    what: &str,
    agent: &Agent,
) -> BTreeMap<u64, u32> {
    let until = Instant::now() + DEADLINE;
    loop {
        let received = received_span_ids(receiver);
        let missing = accepted
            .iter()
            .filter(|id| !received.contains_key(*id))
            .count();
        if missing == 0 {
            return received;
        }
        assert!(
            Instant::now() < until,
            "{what}: {missing} of {} accepted spans never arrived:\n{}",
            accepted.len(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Pushes requests of [`SPANS_PER_REQUEST`] spans with fresh span ids to `url` without
/// pause until `stop` is set or the agent stops answering; every span of a request
/// answered 200 goes into `accepted`, and `sent` counts the spans of every request
/// attempted. Anything but 200 (or no answer) ends the sender: it is the kill.
fn sender(
    url: String,
    first_id: u64,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<BTreeSet<u64>>>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = first_id;
        while !stop.load(Ordering::Relaxed) {
            let body = request("under-load", next, SPANS_PER_REQUEST).encode_to_vec();
            sent.fetch_add(SPANS_PER_REQUEST, Ordering::Relaxed);
            match push(&url, &body) {
                Ok((200, _)) => accepted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(next..next + SPANS_PER_REQUEST),
                _ => return,
            }
            next += SPANS_PER_REQUEST;
        }
    })
}

/// `kill -9` under load loses no accepted span: every span the sender got OK for
/// reaches the backend that was receiving during the kill and the one that was down
/// until after the restart; what arrives twice is counted, and nothing arrives that
/// was not sent.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load_loses_no_accepted_span() {
    let dir = tempfile::tempdir().unwrap();
    let (live_sink, late_sink) = (recording_backend().await, recording_backend().await);
    let live_dir = dir.path().join("rotel-live");
    let late_dir = dir.path().join("rotel-late");
    for sub in [&live_dir, &late_dir] {
        std::fs::create_dir_all(sub).unwrap();
    }
    let live = Rotel::forwarding(&live_dir, free_port(), free_port(), &live_sink.base_url());
    // The late backend's ports are fixed now; it starts only after the restart.
    let (late_grpc, late_http) = (free_port(), free_port());
    let pipelines = [
        pipeline("live", &to_rotel(live.grpc_port)),
        pipeline("late", &to_rotel(late_grpc)),
    ]
    .concat();
    let agent = Agent::start(dir.path(), &pipelines);
    // Ids from 1: the first request waits for the configuration to be applied.
    agent.push_until_taken(&request("under-load", 1, SPANS_PER_REQUEST).encode_to_vec());
    let accepted = Arc::new(Mutex::new((1..=SPANS_PER_REQUEST).collect::<BTreeSet<_>>()));
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(SPANS_PER_REQUEST)),
    );
    // Two senders with disjoint ids, so a request is in flight at the kill.
    let senders: Vec<_> = (1..=2u64)
        .map(|n| {
            sender(
                agent.traces_url(),
                n << 40,
                stop.clone(),
                accepted.clone(),
                sent.clone(),
            )
        })
        .collect();
    // Under load: the live backend receiving while the senders push.
    let until = Instant::now() + DEADLINE;
    while received_span_ids(&live_sink).len() < 2_000
        || accepted.lock().unwrap_or_else(|e| e.into_inner()).len() < 5_000
    {
        assert!(Instant::now() < until, "no load built up:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let agent_dir = dir.path().to_owned();
    drop(agent); // SIGKILL: no orderly shutdown, no flush.
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().expect("the sender ends");
    }
    let accepted = accepted.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let delivered_before_restart = received_span_ids(&live_sink).len();
    assert!(
        received_span_ids(&late_sink).is_empty(),
        "the late backend was down"
    );
    let _late = Rotel::forwarding(&late_dir, late_grpc, late_http, &late_sink.base_url());
    let agent = Agent::start(&agent_dir, &pipelines);
    let sent = sent.load(Ordering::Relaxed);
    for (what, sink) in [("live", &live_sink), ("late", &late_sink)] {
        let received = wait_for_every_span(sink, &accepted, what, &agent);
        let unknown: Vec<_> = received
            .keys()
            .filter(|id| {
                !accepted.contains(*id)
                    && !(1..=2u64).any(|n| (n << 40..(n << 40) + sent).contains(*id))
            })
            .take(5)
            .collect();
        assert!(unknown.is_empty(), "{what}: spans never sent: {unknown:?}");
        let duplicates: u32 = received.values().map(|n| n - 1).sum();
        let unacknowledged = received.len() - accepted.len();
        eprintln!(
            "{what}: {} spans accepted before the kill, all delivered; {duplicates} duplicates; \
             {unacknowledged} delivered without an OK (in flight at the kill); {delivered_before_restart} \
             had reached the live backend at the kill",
            accepted.len()
        );
    }
    assert!(
        agent.metric("kaas_agent_trace_pipeline_spans_sent_total", "late") > 0.0,
        "the late pipeline sent after the restart"
    );
}

/// A backend that accepts connections and never answers, with the output's timeout at
/// 60 s, holds up no other trace pipeline: each round of spans reaches the other
/// backend while the hung request is still open (no error counted yet), within 10 s.
/// The agent hands a pushed batch to its sender at once (no flush interval to wait
/// for) and rotel forwards within 200 ms; a sender, runtime or buffer shared with the
/// hung pipeline would hold the round for the 60 s timeout, so 10 s tells the two
/// apart however loaded the machine is.
#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_never_answers_holds_up_no_other_trace_pipeline() {
    const LAG_BOUND: Duration = Duration::from_secs(10);
    const ROUNDS: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let hung_address = hung.local_addr().expect("address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in hung.incoming().flatten() {
            held.push(connection);
        }
    });
    let sink = recording_backend().await;
    let rotel_dir = dir.path().join("rotel");
    std::fs::create_dir_all(&rotel_dir).unwrap();
    let rotel = Rotel::forwarding(&rotel_dir, free_port(), free_port(), &sink.base_url());
    let agent = Agent::start(
        dir.path(),
        &[
            pipeline(
                "hung-grpc",
                &format!("{{otlp: {{endpoint: \"http://{hung_address}\", timeout: 60s}}}}"),
            ),
            pipeline(
                "hung-http",
                &format!(
                    "{{otlp: {{endpoint: \"http://{hung_address}\", protocol: http, timeout: 60s}}}}"
                ),
            ),
            pipeline("flowing", &to_rotel(rotel.grpc_port)),
        ]
        .concat(),
    );
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        let first = round * SPANS_PER_REQUEST + 1;
        let round_ids: BTreeSet<u64> = (first..first + SPANS_PER_REQUEST).collect();
        let pushed = Instant::now();
        agent.push_until_taken(&request("round", first, SPANS_PER_REQUEST).encode_to_vec());
        loop {
            let received = received_span_ids(&sink);
            if round_ids.iter().all(|id| received.contains_key(id)) {
                break;
            }
            assert!(
                pushed.elapsed() < LAG_BOUND,
                "round {round} did not reach the flowing backend within {LAG_BOUND:?}:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        slowest = slowest.max(pushed.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("slowest round at the flowing backend: {slowest:?}");
    // No hung request has timed out (the rounds take at most ROUNDS * 10.5 s, under its
    // 60 s): the hang lasted through every round.
    for hung in ["hung-grpc", "hung-http"] {
        assert_eq!(
            agent.metric("kaas_agent_trace_pipeline_errors_total", hung),
            0.0,
            "{hung}: its request is still open"
        );
        assert_eq!(
            agent.metric("kaas_agent_trace_pipeline_spans_sent_total", hung),
            0.0
        );
        assert!(
            agent.metric("kaas_agent_trace_pipeline_buffer_bytes", hung) > 0.0,
            "{hung}: its spans stay buffered"
        );
    }
    assert_eq!(
        agent.metric("kaas_agent_trace_pipeline_spans_sent_total", "flowing"),
        (ROUNDS * SPANS_PER_REQUEST) as f64
    );
    assert_eq!(http::get(&agent.url("/healthz")).map(|(s, _)| s), Ok(200));
}
