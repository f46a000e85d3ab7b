//! Log records to an HTTP endpoint: JSON lines (`application/x-ndjson`, one document
//! per record) or the Elasticsearch/OpenSearch bulk API (an action and a document line
//! per record, the index by pattern), with the pipeline's headers, credentials and TLS
//! through [`crate::outbound::http::Endpoint`] ([`encode`] has the documents).
//!
//! **Failures.** The HTTP status decides for the whole request as for every exporter
//! ([`crate::outbound::retry::classify`]). A bulk answer of 200 can still refuse
//! single documents (`"errors": true`, a status per item); each is decided where it is
//! read: 2xx stored; 429 and 5xx asked for again: the request is retried, and
//! only its unsettled documents are sent ([`crate::record::logs::SettledRecords`]); any
//! other 4xx (a mapping conflict, a bad document) refused for good: dropped and counted
//! ([`super::count_rejected`]), never sent again.
//!
//! The sender counts a request's records once, when the request ends, each by its
//! own outcome ([`crate::record::logs::SettledRecords`]): stored items in
//! `samples_sent`, items refused for good only in the drops, items asked for again in
//! `samples_failed` for each attempt that failed them, and, when a request outlives the
//! buffer's maximum age after a partial success, only its unsettled items as expired.

pub mod encode;
mod json_string;

use std::time::Duration;

use kaas_pipeline::logs::output::{HttpLogFormat, HttpLogOutput};
use reqwest::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use serde::Deserialize;

use crate::internal_events::{ErrorReason, PipelineStats};
use crate::outbound::USER_AGENT as AGENT;
use crate::outbound::auth::ValueSources;
use crate::outbound::http::Endpoint;
use crate::outbound::retry::SendError;
use crate::outbound::tls::TlsError;
use crate::record::logs::LogRequest;

/// The content type of JSON lines and of bulk bodies.
const NDJSON: &str = "application/x-ndjson";
/// How much of a refused document's error is kept for the error message.
const ITEM_ERROR_EXCERPT: usize = 256;

/// The checked settings of an HTTP log output, as validation produced them.
#[derive(Clone, Debug)]
pub struct HttpLogSettings {
    /// The endpoint (for the bulk API, ending in `/_bulk`), or where it is read.
    pub url: kaas_pipeline::output_url::Destination,
    /// The body format.
    pub format: HttpLogFormat,
    /// The bulk index pattern.
    pub index: Option<String>,
    /// Whether pod label and annotation keys are de-dotted.
    pub dedot: bool,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Sends log requests to one HTTP endpoint.
#[derive(Debug)]
pub struct HttpLogExporter {
    settings: HttpLogSettings,
    target: crate::outbound::destination::TargetUrl,
    endpoint: Endpoint,
}

/// Whether a bulk answer reports any failed item, read without the items: the common
/// answer (`"errors": false`) lists an item per document, and building each item's
/// map costs more than the request's encoding.
#[derive(Debug, Deserialize)]
struct BulkErrors {
    /// Whether any item failed.
    #[serde(default)]
    errors: bool,
}

/// The part of a bulk answer that says what became of each document.
#[derive(Debug, Deserialize)]
struct BulkResponse {
    /// One object per document, in request order, keyed by the action.
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Debug, Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// What a bulk answer says of one document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ItemOutcome {
    Stored,
    Retry,
    Refused,
}

fn item_outcome(status: u16) -> ItemOutcome {
    match status {
        200..=299 => ItemOutcome::Stored,
        429 | 500..=599 => ItemOutcome::Retry,
        _ => ItemOutcome::Refused,
    }
}

/// A refused item's status and error, bounded.
fn item_error(item: &BulkItem) -> String {
    let error = item
        .error
        .as_ref()
        .map(|e| match (e.get("type"), e.get("reason")) {
            (Some(kind), Some(reason)) => format!(
                "{}: {}",
                kind.as_str().unwrap_or_default(),
                reason.as_str().unwrap_or_default()
            ),
            _ => e.to_string(),
        })
        .unwrap_or_default();
    let mut text = format!("HTTP {} {error}", item.status);
    if text.len() > ITEM_ERROR_EXCERPT {
        let mut end = ITEM_ERROR_EXCERPT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

impl HttpLogExporter {
    /// An exporter for a validated HTTP output.
    pub fn new(
        output: &HttpLogOutput,
        settings: HttpLogSettings,
        sources: ValueSources,
    ) -> Result<Self, TlsError> {
        Ok(Self {
            target: crate::outbound::destination::TargetUrl::new(
                settings.url.clone(),
                sources.clone(),
            ),
            settings,
            endpoint: Endpoint::for_output(output, sources)?,
        })
    }

    /// Sends one request's records; documents the bulk API refuses for good are
    /// counted in `stats`.
    pub async fn send(&self, request: &LogRequest, stats: &PipelineStats) -> Result<(), SendError> {
        let raw = super::damaged(request.raw())?;
        let documents = super::damaged(encode::Documents::encode(&raw, self.settings.dedot))?;
        drop(raw);
        match (self.settings.format, &self.settings.index) {
            (HttpLogFormat::ElasticsearchBulk, Some(index)) => {
                self.send_bulk(request, &documents, index, stats).await
            }
            _ => self.post(documents.json_lines()).await.map(|_| ()),
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<bytes::Bytes, SendError> {
        let headers = [
            (CONTENT_TYPE, HeaderValue::from_static(NDJSON)),
            (USER_AGENT, HeaderValue::from_static(AGENT)),
        ];
        self.endpoint
            .post(&self.target, self.settings.timeout, &headers, body)
            .await
    }

    /// Sends the documents not settled yet and settles what the answer decides.
    async fn send_bulk(
        &self,
        request: &LogRequest,
        documents: &encode::Documents,
        index: &str,
        stats: &PipelineStats,
    ) -> Result<(), SendError> {
        let pending: Vec<usize> = (0..documents.len())
            .filter(|i| !request.settled.is_settled(*i))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let body = documents.bulk(pending.iter().copied(), index);
        let answer = self.post(body).await?;
        let not_bulk = |e: serde_json::Error| SendError::Permanent {
            reason: format!("the bulk API answered something that is not a bulk response: {e}"),
        };
        let errors: BulkErrors = serde_json::from_slice(&answer).map_err(not_bulk)?;
        if !errors.errors {
            pending.iter().for_each(|i| request.settled.settle(*i));
            return Ok(());
        }
        let response: BulkResponse = serde_json::from_slice(&answer).map_err(not_bulk)?;
        if response.items.len() != pending.len() {
            return Err(SendError::Permanent {
                reason: format!(
                    "the bulk response lists {} items for {} documents; which were stored is unknown",
                    response.items.len(),
                    pending.len()
                ),
            });
        }
        let (mut refused, mut retry) = (Vec::new(), Vec::new());
        for (document, item) in pending.iter().zip(&response.items) {
            let Some(item) = item.values().next() else {
                continue;
            };
            match item_outcome(item.status) {
                ItemOutcome::Stored => request.settled.settle(*document),
                ItemOutcome::Refused => {
                    request.settled.settle_refused(*document);
                    refused.push(item_error(item));
                }
                ItemOutcome::Retry => retry.push(item_error(item)),
            }
        }
        if let Some(first) = refused.first() {
            super::count_rejected(
                stats,
                refused.len() as u64,
                format!(
                    "the bulk API refused {} of {} documents for good, the first with {first}",
                    refused.len(),
                    pending.len()
                ),
            );
        }
        match retry.first() {
            Some(first) => Err(SendError::Retryable {
                reason: format!(
                    "the bulk API asked for {} of {} documents again, the first with {first}",
                    retry.len(),
                    pending.len()
                ),
                retry_after: None,
                condition: ErrorReason::BackendUnreachable,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_statuses_are_classified_like_responses() {
        assert_eq!(item_outcome(201), ItemOutcome::Stored);
        for status in [429, 500, 503] {
            assert_eq!(item_outcome(status), ItemOutcome::Retry);
        }
        for status in [400, 404, 409, 413] {
            assert_eq!(item_outcome(status), ItemOutcome::Refused);
        }
        let long = BulkItem {
            status: 400,
            error: Some(
                serde_json::json!({"type": "mapper_parsing_exception", "reason": "x".repeat(1000)}),
            ),
        };
        assert!(item_error(&long).starts_with("HTTP 400 mapper_parsing_exception: xxx"));
        assert!(item_error(&long).len() <= ITEM_ERROR_EXCERPT);
    }
}
