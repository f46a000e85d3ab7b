//! A recording remote-write receiver: decodes every request (1.0 or 2.0), answers as
//! the test scripts it (e.g. 503, 429 with `Retry-After`, 400), and keeps everything
//! for the test to inspect. For real receivers, tests start Prometheus or
//! VictoriaMetrics instead.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kaas_proto::remote_write::{v1, v2};
use prost::Message;
use tokio::sync::Notify;

/// A series' labels, sorted by name.
pub type SeriesLabels = Vec<(String, String)>;
/// Samples as (timestamp ms, value).
pub type Samples = Vec<(i64, f64)>;

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After` value, if any.
    pub retry_after: Option<String>,
}

impl Answer {
    /// Just a status.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
        }
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The status answered.
    pub status: u16,
    /// Series as (sorted labels, samples), decoded from 1.0 or 2.0.
    pub series: Vec<(SeriesLabels, Samples)>,
    /// Metadata family names and types from 1.0, or per series from 2.0.
    pub metadata: Vec<(String, i32)>,
    /// Whether the body was remote-write 2.0.
    pub v2: bool,
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    received: Vec<Received>,
}

/// A running receiver; stops when dropped.
pub struct RemoteWriteReceiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl RemoteWriteReceiver {
    /// Starts on `127.0.0.1:0`; answers 204 unless scripted otherwise.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts on `127.0.0.1:port`, for a sender that was told the port in advance.
    pub async fn start_on(port: u16) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let arrived = Arc::new(Notify::new());
        let handler_state = state.clone();
        let handler_arrived = arrived.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let state = handler_state.clone();
            let arrived = handler_arrived.clone();
            async move { handle(&state, &arrived, &headers, &body) }
        });
        let (addr, shutdown) = crate::http::serve_loopback(port, app).await;
        Self {
            addr,
            state,
            arrived,
            _shutdown: shutdown,
        }
    }

    /// The write URL.
    pub fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// Queues answers for the next requests, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.lock().script.extend(answers);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Samples of accepted requests, per series, in arrival order.
    pub fn accepted(&self) -> BTreeMap<SeriesLabels, Samples> {
        let mut out: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for request in self.lock().received.iter().filter(|r| r.status < 300) {
            for (labels, samples) in &request.series {
                out.entry(labels.clone()).or_default().extend(samples);
            }
        }
        out
    }

    /// Number of accepted samples.
    pub fn accepted_samples(&self) -> usize {
        self.accepted().values().map(Vec::len).sum()
    }

    /// Waits until at least `samples` samples were accepted, or panics after `deadline`.
    pub async fn wait_for_samples(&self, samples: usize, deadline: Duration) {
        let wait = async {
            loop {
                let notified = self.arrived.notified();
                if self.accepted_samples() >= samples {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(deadline, wait).await.is_err() {
            panic!(
                "only {} of {samples} samples accepted within {deadline:?} ({} requests)",
                self.accepted_samples(),
                self.received().len()
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn handle(state: &Mutex<State>, arrived: &Notify, headers: &HeaderMap, body: &[u8]) -> Response {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let v2 = headers
        .get("content-type")
        .is_some_and(|ct| ct.contains("io.prometheus.write.v2.Request"));
    let decoded = snap::raw::Decoder::new().decompress_vec(body).ok();
    let (series, metadata) = match (&decoded, v2) {
        (Some(raw), false) => v1::WriteRequest::decode(raw.as_slice())
            .map(|r| decode_v1(&r))
            .unwrap_or_default(),
        (Some(raw), true) => v2::Request::decode(raw.as_slice())
            .map(|r| decode_v2(&r))
            .unwrap_or_default(),
        (None, _) => Default::default(),
    };
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let answer = state.script.pop_front().unwrap_or(Answer::status(204));
    state.received.push(Received {
        at: Instant::now(),
        headers,
        status: answer.status,
        series,
        metadata,
        v2,
    });
    drop(state);
    arrived.notify_waiters();
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, "scripted answer").into_response();
    if let Some(retry_after) = answer.retry_after
        && let Ok(value) = retry_after.parse()
    {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

type Series = Vec<(SeriesLabels, Samples)>;

fn decode_v1(request: &v1::WriteRequest) -> (Series, Vec<(String, i32)>) {
    let series = request
        .timeseries
        .iter()
        .map(|ts| {
            (
                ts.labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect(),
                ts.samples.iter().map(|s| (s.timestamp, s.value)).collect(),
            )
        })
        .collect();
    let metadata = request
        .metadata
        .iter()
        .map(|m| (m.metric_family_name.clone(), m.r#type))
        .collect();
    (series, metadata)
}

fn decode_v2(request: &v2::Request) -> (Series, Vec<(String, i32)>) {
    let symbol = |i: u32| request.symbols.get(i as usize).cloned().unwrap_or_default();
    let mut metadata = Vec::new();
    let series = request
        .timeseries
        .iter()
        .map(|ts| {
            let labels: Vec<(String, String)> = ts
                .labels_refs
                .chunks(2)
                .map(|pair| (symbol(pair[0]), symbol(pair.get(1).copied().unwrap_or(0))))
                .collect();
            if let Some(m) = ts.metadata {
                let name = labels
                    .iter()
                    .find(|(n, _)| n == "__name__")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                metadata.push((name, m.r#type));
            }
            (
                labels,
                ts.samples.iter().map(|s| (s.timestamp, s.value)).collect(),
            )
        })
        .collect();
    (series, metadata)
}
