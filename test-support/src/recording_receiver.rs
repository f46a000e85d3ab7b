//! A recording HTTP receiver for any push protocol (Loki's push API, the bulk API,
//! JSON lines, OTLP/HTTP): it keeps every request as it arrived (method, path, headers,
//! raw body) and answers as the test scripts it, so a test decodes the bodies with
//! code of its own, independent of the encoder under test.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One answer.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A status with an empty body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            content_type: "text/plain",
            body: Vec::new(),
        }
    }

    /// A status with a JSON body.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        }
    }
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body, as sent (still compressed if it was).
    pub body: Vec<u8>,
    /// The status answered.
    pub status: u16,
}

struct State {
    script: VecDeque<Reply>,
    otherwise: Reply,
    received: Vec<Recorded>,
}

/// A running receiver on loopback; stops when dropped.
pub struct RecordingReceiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl RecordingReceiver {
    /// Starts on `127.0.0.1:0`, answering `otherwise` unless scripted.
    pub async fn start(otherwise: Reply) -> Self {
        let state = Arc::new(Mutex::new(State {
            script: VecDeque::new(),
            otherwise,
            received: Vec::new(),
        }));
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = handler_state.clone();
                async move { handle(&state, &method, &uri, &headers, &body) }
            },
        );
        let (addr, shutdown) = crate::http::serve_loopback(0, app).await;
        Self {
            addr,
            state,
            _shutdown: shutdown,
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues answers for the next requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Recorded> {
        self.lock().received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn handle(
    state: &Mutex<State>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let reply = state
        .script
        .pop_front()
        .unwrap_or_else(|| state.otherwise.clone());
    state.received.push(Recorded {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.to_string()),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        status: reply.status,
    });
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response()
}
