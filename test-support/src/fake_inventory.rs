//! A fake KaaS inventory: an HTTP server on `127.0.0.1:0` that answers `GET` on any
//! path with the cluster list the test set, or, when told to, with an error status or
//! a body that is not JSON. It records each request's `Authorization` header.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// How the inventory answers.
#[derive(Clone, Debug)]
pub enum InventoryAnswer {
    /// 200 with this JSON document.
    Json(Value),
    /// This status, with a short text body.
    Status(u16),
    /// 200 with this body, declared as JSON but not JSON.
    Garbage(String),
}

#[derive(Debug)]
struct State {
    answer: InventoryAnswer,
    authorizations: Vec<Option<String>>,
}

/// A running fake inventory; stops when dropped.
pub struct FakeInventory {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl FakeInventory {
    /// Starts on `127.0.0.1:0`, answering an empty list.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State {
            answer: InventoryAnswer::Json(json!([])),
            authorizations: Vec::new(),
        }));
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let state = handler_state.clone();
            async move { answer(&state, &headers) }
        });
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            state,
            _shutdown: shutdown,
        }
    }

    /// The inventory URL.
    pub fn url(&self) -> String {
        format!("http://{}/v1/clusters", self.addr)
    }

    /// Answer with this list of clusters (see [`cluster`]).
    pub fn set_clusters(&self, clusters: Vec<Value>) {
        self.answer(InventoryAnswer::Json(Value::Array(clusters)));
    }

    /// Answer like this from now on.
    pub fn answer(&self, answer: InventoryAnswer) {
        self.lock().answer = answer;
    }

    /// Answer with `status` from now on.
    pub fn fail_with(&self, status: u16) {
        self.answer(InventoryAnswer::Status(status));
    }

    /// Answer 200 with a body that is not JSON from now on.
    pub fn serve_garbage(&self) {
        self.answer(InventoryAnswer::Garbage(
            "<html><body>502 Bad Gateway</body></html>".to_owned(),
        ));
    }

    /// How many requests arrived.
    pub fn requests(&self) -> usize {
        self.lock().authorizations.len()
    }

    /// The `Authorization` header of each request, in order.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.lock().authorizations.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One inventory entry.
pub fn cluster(name: &str, tenant: &str, labels: &[(&str, &str)], api_endpoint: &str) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect();
    json!({"name": name, "tenant": tenant, "labels": labels, "apiEndpoint": api_endpoint})
}

fn answer(state: &Mutex<State>, headers: &HeaderMap) -> Response {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    state.authorizations.push(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    );
    let json_body = |body: String| {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    };
    match &state.answer {
        InventoryAnswer::Json(document) => json_body(document.to_string()),
        InventoryAnswer::Garbage(text) => json_body(text.clone()),
        InventoryAnswer::Status(status) => (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "scripted failure",
        )
            .into_response(),
    }
}
