//! The Elasticsearch bulk endpoint every agent in log-bench sends to: `POST` on any
//! path ending in `_bulk`, NDJSON action and document lines, answered as Elasticsearch
//! answers (`errors: false` and one item per action). It finds each document's line id
//! ([`super::workload::find_id`]) and counts distinct lines, duplicates and documents
//! without an id; it stores nothing else, so it costs the agents little CPU.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;

use super::workload::find_id;
use crate::serve::Served;

/// What arrived so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Distinct lines.
    pub distinct: u64,
    /// Their bytes, as the generator wrote them.
    pub distinct_bytes: u64,
    /// Documents whose line had arrived before.
    pub duplicates: u64,
    /// Documents without a line id the workload wrote.
    pub unknown: u64,
    /// Bulk requests.
    pub requests: u64,
}

struct Seen {
    received: Received,
    /// One bit per line: file `f`'s line `n` is bit `offsets[f] + n`.
    bits: Vec<u64>,
}

struct SinkState {
    offsets: Vec<u64>,
    line_bytes: Vec<Vec<u32>>,
    seen: Mutex<Seen>,
}

/// The running sink.
pub struct Sink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<SinkState>,
    _served: Served,
}

impl Sink {
    /// Starts a sink that expects the lines of `line_bytes` (per file, each line's
    /// length).
    pub fn start(line_bytes: Vec<Vec<u32>>) -> std::io::Result<Self> {
        let mut offsets = Vec::with_capacity(line_bytes.len());
        let mut total = 0u64;
        for lines in &line_bytes {
            offsets.push(total);
            total += lines.len() as u64;
        }
        let state = Arc::new(SinkState {
            offsets,
            line_bytes,
            seen: Mutex::new(Seen {
                received: Received::default(),
                bits: vec![0; total.div_ceil(64) as usize],
            }),
        });
        let app = Router::new().fallback(bulk).with_state(state.clone());
        let served = Served::start("log-bench-sink", app)?;
        Ok(Self {
            port: served.port,
            state,
            _served: served,
        })
    }

    /// What arrived so far.
    pub fn received(&self) -> Received {
        self.state
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .received
            .clone()
    }
}

async fn bulk(State(state): State<Arc<SinkState>>, uri: Uri, body: Bytes) -> impl IntoResponse {
    if !uri.path().ends_with("_bulk") {
        return (StatusCode::NOT_FOUND, String::new()).into_response();
    }
    let mut actions = 0usize;
    let mut ids = Vec::new();
    let mut expect_document = false;
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if expect_document {
            ids.push(find_id(line));
            expect_document = false;
        } else {
            // An `index` or `create` action: a document line follows.
            actions += 1;
            expect_document = true;
        }
    }
    {
        let mut seen = state.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.received.requests += 1;
        for id in ids {
            let Some((file, line)) = id else {
                seen.received.unknown += 1;
                continue;
            };
            let Some(bytes) = state.line_bytes.get(file).and_then(|f| f.get(line)) else {
                seen.received.unknown += 1;
                continue;
            };
            let bit = state.offsets[file] + line as u64;
            let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
            if seen.bits[word] & mask != 0 {
                seen.received.duplicates += 1;
            } else {
                seen.bits[word] |= mask;
                seen.received.distinct += 1;
                seen.received.distinct_bytes += u64::from(*bytes);
            }
        }
    }
    let mut answer = String::with_capacity(32 + actions * 40);
    answer.push_str("{\"took\":0,\"errors\":false,\"items\":[");
    for i in 0..actions {
        if i > 0 {
            answer.push(',');
        }
        answer.push_str("{\"index\":{\"_index\":\"bench\",\"status\":201}}");
    }
    answer.push_str("]}");
    ([(header::CONTENT_TYPE, "application/json")], answer).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_lines_duplicates_and_unknown_documents() {
        let sink = Sink::start(vec![vec![10, 20], vec![30]]).unwrap();
        let url = format!("http://127.0.0.1:{}/_bulk", sink.port);
        let body = concat!(
            "{\"index\":{}}\n{\"message\":\"id=0-1 a\"}\n",
            "{\"index\":{}}\n{\"message\":\"id=1-0 b\"}\n",
            "{\"index\":{}}\n{\"message\":\"id=0-1 again\"}\n",
            "{\"index\":{}}\n{\"message\":\"id=7-0 not written\"}\n",
        );
        let (status, answer) = kaas_test_support::http::post(&url, &[], body.as_bytes()).unwrap();
        assert_eq!(status, 200);
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["errors"], false);
        assert_eq!(answer["items"].as_array().unwrap().len(), 4);
        assert_eq!(
            sink.received(),
            Received {
                distinct: 2,
                distinct_bytes: 50,
                duplicates: 1,
                unknown: 1,
                requests: 1,
            }
        );
        let (status, _) = kaas_test_support::http::post(
            &format!("http://127.0.0.1:{}/other", sink.port),
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(status, 404);
    }
}
