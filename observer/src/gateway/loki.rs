//! The gateway's Loki route ([`LOGS_PATH`], Loki's own push path): the central log
//! pipeline (`kaas-central-logs`, [`crate::rendering::central`]) of every cluster's node
//! agents pushes the control plane's container logs and the kubelet's and containerd's
//! journal here, and the gateway files them in the provider's Loki under the tenant the
//! agent's certificate names, as it files metrics in Thanos.
//!
//! Each request goes identity ([`super::peer`], the same certificate checks and
//! revocation as metrics) → tenant header check → bounded read and decode
//! ([`kaas_series::loki`]: the body limit while reading, the declared snappy size, the
//! message count, the label limits of each stream) → [`stamp_streams`] → the tenant's
//! rate ([`super::limits::LogRateLimiter`], log bytes per second: 429 with
//! `Retry-After` when over it) → the Loki upstream ([`super::forward`], `X-Scope-OrgID`
//! set by the gateway).
//!
//! # What a sender cannot choose
//!
//! - **The tenant.** `X-Scope-OrgID` is the certificate's tenant, always. A push that
//!   names another tenant in that header is refused whole (403), so a misconfigured or
//!   forging sender learns it at once; a push naming its own tenant, or none, passes.
//! - **The `cluster` and `tenant` stream labels.** Set from the certificate on every
//!   stream; a sent label of either name with another value is kept as
//!   `exported_cluster`/`exported_tenant`, as on the metrics path
//!   ([`super::rewrite::stamp`]). Structured metadata of either name is renamed the
//!   same way, so a LogQL label filter on `cluster` or `tenant` matches only what the
//!   gateway set.
//!
//! What it can still do: forge lines of its own cluster (a tenant is cluster-admin and
//! can run pods in `kube-system`), up to its rate on this replica
//! (`--max-log-bytes-per-second-per-tenant`); Loki's own per-tenant limits hold behind
//! it because the tenant is the certificate's.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use kaas_pipeline::logs::output::LOKI_TENANT_HEADER;
use kaas_proto::loki::{self, PushRequest};
use kaas_series::labels::Labels;
use kaas_series::{DecodeError, PushLimits};

use super::peer::identify;
use super::rewrite::{CLUSTER_LABEL, ClusterIdentity, EXPORTED_PREFIX, TENANT_LABEL, stamp};
use super::server::{AgentPeer, GatewayState, answer_on, over_limit, read_body, standing_refusal};
use crate::internal_events::GatewayLogsForwarded;

/// Where the central log pipeline pushes: Loki's push path, so the gateway's base URL
/// is a Loki URL to the agent.
pub use crate::rendering::central_logs::GATEWAY_LOGS_PATH as LOGS_PATH;
/// The `path` label of the Loki route's requests on `kaas_gateway_requests_total`.
pub const PATH_LABEL: &str = "logs";

/// What a push holds: its entries, and their bytes as Loki's ingestion rate counts
/// them (lines and structured metadata).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushSize {
    /// Log entries.
    pub entries: usize,
    /// Bytes of their lines and structured metadata.
    pub bytes: u64,
}

/// `streams` with `cluster` and `tenant` set from `identity` on each (conflicting sent
/// values kept under `exported_…`) and structured metadata of those names renamed;
/// refused when a stream's labels are malformed or over `limits`. Also says what the
/// request holds.
pub fn stamp_streams(
    mut request: PushRequest,
    identity: &ClusterIdentity,
    limits: &PushLimits,
) -> Result<(PushRequest, PushSize), DecodeError> {
    let mut size = PushSize::default();
    for stream in &mut request.streams {
        let sent = kaas_series::loki::parse_stream_labels(&stream.labels, limits)?;
        let labels = Labels::from_pairs(sent.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let stamped: Vec<(String, String)> = stamp(&labels, identity)
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        stream.labels = kaas_series::loki::format_stream_labels(&stamped);
        // Loki computes the hash itself; a sent one would describe the old labels.
        stream.hash = 0;
        size.entries += stream.entries.len();
        for entry in &stream.entries {
            let metadata = (entry.structured_metadata.iter())
                .map(|pair| pair.name.len() + pair.value.len())
                .sum::<usize>();
            size.bytes = size
                .bytes
                .saturating_add((entry.line.len() + metadata) as u64);
        }
        for pair in stream
            .entries
            .iter_mut()
            .flat_map(|e| e.structured_metadata.iter_mut())
        {
            if pair.name == CLUSTER_LABEL || pair.name == TENANT_LABEL {
                pair.name = format!("{EXPORTED_PREFIX}{}", pair.name);
            }
        }
    }
    Ok((request, size))
}

/// Why the request's headers are refused, with the status, if they are: another
/// tenant in `X-Scope-OrgID`, or a body that is not snappy protobuf.
fn header_refusal(headers: &HeaderMap, tenant: &str) -> Option<(StatusCode, String)> {
    if let Some(claimed) = headers.get(LOKI_TENANT_HEADER) {
        let claimed = String::from_utf8_lossy(claimed.as_bytes());
        if claimed != tenant {
            let reason = format!(
                "{LOKI_TENANT_HEADER} {:?} is not this certificate's tenant {tenant:?}; the \
                 gateway files logs under the certificate's tenant only",
                claimed.chars().take(64).collect::<String>()
            );
            return Some((StatusCode::FORBIDDEN, reason));
        }
    }
    let value = |name: header::HeaderName, default: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(default)
            .to_owned()
    };
    let encoding = value(header::CONTENT_ENCODING, loki::CONTENT_ENCODING);
    let content_type = value(header::CONTENT_TYPE, loki::CONTENT_TYPE);
    if !encoding.eq_ignore_ascii_case(loki::CONTENT_ENCODING) || content_type != loki::CONTENT_TYPE
    {
        let reason = format!(
            "Content-Type {content_type:?} with Content-Encoding {encoding:?}: only snappy \
             protobuf pushes ({}) are accepted",
            loki::CONTENT_TYPE
        );
        return Some((StatusCode::UNSUPPORTED_MEDIA_TYPE, reason));
    }
    None
}

/// The handler of [`LOGS_PATH`].
pub(super) async fn receive(
    State(state): State<Arc<GatewayState>>,
    ConnectInfo(peer): ConnectInfo<AgentPeer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let metrics = &state.metrics;
    let answer =
        |status: StatusCode, reason: String| answer_on(metrics, PATH_LABEL, status, reason);
    let Some(upstream) = &state.loki else {
        let reason = "this gateway forwards no logs (it has no --loki-upstream-url)".to_owned();
        return answer(StatusCode::NOT_FOUND, reason);
    };
    let (identity, serial) = match identify(peer.leaf.as_deref()) {
        Ok(identified) => identified,
        Err(refusal) => return answer(StatusCode::FORBIDDEN, refusal.to_string()),
    };
    if let Some((status, reason)) = standing_refusal(&state, &identity.cluster, &serial).await {
        return answer(status, reason);
    }
    if let Some((status, reason)) = header_refusal(&headers, &identity.tenant) {
        return answer(status, reason);
    }
    let body = match read_body(body, state.push_limits.max_body_bytes).await {
        Ok(body) => body,
        Err((status, reason)) => return answer(status, reason),
    };
    let stamped = kaas_series::loki::decode(&body, &state.push_limits)
        .and_then(|request| stamp_streams(request, &identity, &state.push_limits));
    let (request, size) = match stamped {
        Ok(stamped) => stamped,
        Err(error) => {
            let status = if error.is_too_large() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return answer(status, error.to_string());
        }
    };
    drop(body);
    if size.entries == 0 {
        return answer(StatusCode::NO_CONTENT, String::new());
    }
    let admitted = (state.log_limiter).admit(&identity.tenant, size.bytes, Instant::now());
    if let Err(refused) = admitted {
        return over_limit(metrics, PATH_LABEL, &identity.tenant, refused);
    }
    let upstream = upstream.send_loki(&identity.tenant, &request).await;
    if upstream.status.is_success() {
        GatewayLogsForwarded {
            tenant: &identity.tenant,
            entries: size.entries,
        }
        .emit(metrics);
    }
    answer(upstream.status, upstream.reason)
}

#[cfg(test)]
mod tests {
    use kaas_proto::loki::{EntryAdapter, LabelPairAdapter, StreamAdapter};

    use super::*;

    fn identity() -> ClusterIdentity {
        ClusterIdentity {
            cluster: "shop.edge".into(),
            tenant: "shop".into(),
        }
    }

    fn stream(labels: &str, metadata: &[(&str, &str)]) -> StreamAdapter {
        StreamAdapter {
            labels: labels.into(),
            entries: vec![EntryAdapter {
                line: "x".into(),
                structured_metadata: metadata
                    .iter()
                    .map(|(n, v)| LabelPairAdapter {
                        name: (*n).into(),
                        value: (*v).into(),
                    })
                    .collect(),
                ..EntryAdapter::default()
            }],
            hash: 7,
        }
    }

    #[test]
    fn the_certificate_decides_cluster_and_tenant_on_every_stream() {
        let request = PushRequest {
            streams: vec![
                stream(r#"{k8s_pod_name="etcd-0"}"#, &[("tenant", "bank")]),
                stream(
                    r#"{cluster="bank.core", tenant="bank", unit="kubelet.service"}"#,
                    &[("cluster", "bank.core"), ("node", "n1")],
                ),
                stream(r#"{cluster="shop.edge", tenant="shop"}"#, &[]),
            ],
        };
        let (stamped, size) = stamp_streams(request, &identity(), &PushLimits::default()).unwrap();
        // Three one-byte lines and 10 + 16 + 6 bytes of structured metadata.
        assert_eq!(
            size,
            PushSize {
                entries: 3,
                bytes: 35
            }
        );
        let labels: Vec<&str> = stamped.streams.iter().map(|s| s.labels.as_str()).collect();
        assert_eq!(
            labels,
            [
                r#"{cluster="shop.edge", k8s_pod_name="etcd-0", tenant="shop"}"#,
                r#"{cluster="shop.edge", exported_cluster="bank.core", exported_tenant="bank", tenant="shop", unit="kubelet.service"}"#,
                r#"{cluster="shop.edge", tenant="shop"}"#,
            ]
        );
        assert!(stamped.streams.iter().all(|s| s.hash == 0));
        let names: Vec<&str> = stamped.streams[1].entries[0]
            .structured_metadata
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["exported_cluster", "node"]);
        assert_eq!(
            stamped.streams[0].entries[0].structured_metadata[0].name,
            "exported_tenant"
        );
    }

    #[test]
    fn malformed_stream_labels_refuse_the_request() {
        let request = PushRequest {
            streams: vec![stream("{tenant=shop}", &[])],
        };
        let error = stamp_streams(request, &identity(), &PushLimits::default()).unwrap_err();
        assert_eq!(error.reason(), "malformed");
    }

    #[test]
    fn another_tenant_in_the_header_or_another_encoding_is_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(header_refusal(&headers, "shop"), None);
        headers.insert(LOKI_TENANT_HEADER, "shop".parse().unwrap());
        assert_eq!(header_refusal(&headers, "shop"), None);
        headers.insert(LOKI_TENANT_HEADER, "bank".parse().unwrap());
        let (status, reason) = header_refusal(&headers, "shop").unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(reason.contains("\"bank\""), "{reason}");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let (status, _) = header_refusal(&headers, "shop").unwrap();
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert!(header_refusal(&headers, "shop").is_some());
    }
}
