//! Grafana Loki's push API (`/loki/api/v1/push`): protobuf `logproto.PushRequest`,
//! snappy block compressed ([`encode`] has the mapping from OTLP records), with the
//! pipeline's headers, credentials and TLS through [`crate::outbound::http::Endpoint`]
//! (secrets resolved per request, so rotation needs no restart) and the tenant in
//! `X-Scope-OrgID`.
//!
//! Loki answers a push as a whole: 2xx stored, 429 and 5xx retried (with
//! `Retry-After`), any other 4xx (out-of-order or too old entries, limits) dropped
//! and counted, as [`crate::outbound::retry::classify`] decides.

pub mod encode;

use std::time::Duration;

use kaas_pipeline::logs::output::{LOKI_TENANT_HEADER, LokiOutput};
use kaas_pipeline::output_url::Destination;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};

use crate::outbound::USER_AGENT as AGENT;
use crate::outbound::auth::{AuthError, ValueSources};
use crate::outbound::destination::TargetUrl;
use crate::outbound::http::Endpoint;
use crate::outbound::retry::SendError;
use crate::outbound::tls::TlsError;
use crate::record::logs::LogRequest;

/// The checked settings of a Loki output, as validation produced them.
#[derive(Clone, Debug)]
pub struct LokiSettings {
    /// The push URL, or where it is read.
    pub url: Destination,
    /// The tenant, sent as `X-Scope-OrgID`.
    pub tenant_id: Option<String>,
    /// The attributes that become stream labels.
    pub labels: Vec<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Sends log requests to one Loki.
#[derive(Debug)]
pub struct LokiExporter {
    settings: LokiSettings,
    target: TargetUrl,
    endpoint: Endpoint,
}

impl LokiExporter {
    /// An exporter for a validated Loki output.
    pub fn new(
        output: &LokiOutput,
        settings: LokiSettings,
        sources: ValueSources,
    ) -> Result<Self, TlsError> {
        Ok(Self {
            target: TargetUrl::new(settings.url.clone(), sources.clone()),
            settings,
            endpoint: Endpoint::for_output(output, sources)?,
        })
    }

    /// Pushes one request's records.
    pub async fn send(&self, request: &LogRequest) -> Result<(), SendError> {
        let body = encode::encode(&super::damaged(request.decode())?, &self.settings);
        let mut headers = vec![
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            ),
            (CONTENT_ENCODING, HeaderValue::from_static("snappy")),
            (USER_AGENT, HeaderValue::from_static(AGENT)),
        ];
        if let Some(tenant) = &self.settings.tenant_id {
            // Validation allows only header-safe characters; stay safe regardless.
            let value = HeaderValue::from_str(tenant)
                .map_err(|_| AuthError::InvalidHeaderValue(LOKI_TENANT_HEADER.to_owned()))?;
            headers.push((HeaderName::from_static("x-scope-orgid"), value));
        }
        self.endpoint
            .post(&self.target, self.settings.timeout, &headers, body)
            .await
            .map(|_| ())
    }
}
