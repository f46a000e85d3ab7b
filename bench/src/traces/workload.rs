//! The spans trace-bench sends: OTLP `ExportTraceServiceRequest`s encoded once before
//! any gateway starts, so every gateway is sent the same bytes and the generator costs
//! nothing but the sends.
//!
//! Span `n` (from 0) has the span id `n` (8 bytes, big-endian), which the sink reads
//! back, and a trace of its own whose id's low 56 bits are pseudo-random: the
//! randomness OpenTelemetry's consistent sampling compares its threshold with. One span
//! in [`HEALTH_CHECK_EVERY`] is a health check (`GET /healthz`), the kind of span the
//! processors row drops.

use std::fmt::Write as _;
use std::sync::Arc;

use kaas_proto::otlp::{
    AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans,
    ScopeSpans, Span, Status, any_value::Value,
};
use prost::Message;

/// One span in this many is a health check.
pub const HEALTH_CHECK_EVERY: u64 = 10;
/// The health-check span's name.
pub const HEALTH_CHECK_NAME: &str = "GET /healthz";
/// Attributes per span in the Kyma mix, and each value's length: the shape of Kyma's
/// published OpenTelemetry Collector gateway benchmark.
pub const KYMA_ATTRIBUTES: usize = 40;
/// See [`KYMA_ATTRIBUTES`].
pub const KYMA_VALUE_CHARS: usize = 64;

/// What each span looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanMix {
    /// A server span with a name, a status and three HTTP attributes (~150 bytes).
    Small,
    /// The small span plus 40 attributes of 64 characters each (~3.3 KiB).
    Kyma,
}

impl SpanMix {
    /// The name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Small => "small",
            Self::Kyma => "40x64",
        }
    }

    /// The mix called `name` on the command line.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "small" => Some(Self::Small),
            "40x64" | "kyma" => Some(Self::Kyma),
            _ => None,
        }
    }
}

/// The requests of one run.
#[derive(Clone, Debug)]
pub struct EncodedRequests {
    /// The mix.
    pub mix: SpanMix,
    /// Each request, protobuf-encoded (shared with the generator's connections).
    pub bodies: Arc<Vec<Vec<u8>>>,
    /// Span ids `0..spans` were sent.
    pub spans: u64,
    /// Each span's trace id's low 56 bits, by span id.
    pub randomness: Vec<u64>,
}

impl EncodedRequests {
    /// Bytes over all requests.
    pub fn bytes(&self) -> u64 {
        self.bodies.iter().map(|b| b.len() as u64).sum()
    }

    /// Spans a gateway should deliver when it drops health checks (when
    /// `drop_health_checks`) and keeps the traces whose randomness is at least
    /// `threshold` (OpenTelemetry's rejection threshold over 2^56; 0 keeps all).
    pub fn expected(&self, drop_health_checks: bool, threshold: u64) -> u64 {
        (0..self.spans)
            .filter(|&n| !(drop_health_checks && is_health_check(n)))
            .filter(|&n| self.randomness[n as usize] >= threshold)
            .count() as u64
    }
}

/// Whether span `n` is a health check.
pub fn is_health_check(n: u64) -> bool {
    n % HEALTH_CHECK_EVERY == HEALTH_CHECK_EVERY - 1
}

/// xorshift64: the workload is the same in every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn text(value: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(value.into())),
    })
}

fn attribute(key: impl Into<String>, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value,
    }
}

/// Span `n` of the mix; its trace id's randomness goes to `randomness`.
fn span(mix: SpanMix, n: u64, state: &mut u64, randomness: &mut Vec<u64>) -> Span {
    let random = next(state) & ((1 << 56) - 1);
    randomness.push(random);
    let mut trace_id = next(state).to_be_bytes().to_vec();
    trace_id.extend_from_slice(&random.to_be_bytes());
    trace_id[8] = 0x5a; // The high byte, outside the 56 random bits.
    let (name, route) = if is_health_check(n) {
        (HEALTH_CHECK_NAME.to_owned(), "/healthz".to_owned())
    } else {
        let route = format!("/api/v1/items/{}", n % 50);
        (format!("GET {route}"), route)
    };
    let mut attributes = vec![
        attribute("http.request.method", text("GET")),
        attribute("http.route", text(route)),
        attribute(
            "http.response.status_code",
            Some(AnyValue {
                value: Some(Value::IntValue(200)),
            }),
        ),
    ];
    if mix == SpanMix::Kyma {
        for a in 0..KYMA_ATTRIBUTES {
            let mut value = String::with_capacity(KYMA_VALUE_CHARS);
            while value.len() < KYMA_VALUE_CHARS {
                let _ = write!(value, "{:016x}", next(state));
            }
            value.truncate(KYMA_VALUE_CHARS);
            attributes.push(attribute(format!("bench.attribute.{a:02}"), text(value)));
        }
    }
    let start = 1_765_000_000_000_000_000 + n * 1_000;
    Span {
        trace_id,
        span_id: n.to_be_bytes().to_vec(),
        name,
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_500_000,
        attributes,
        status: Some(Status {
            message: String::new(),
            code: 1,
        }),
        ..Span::default()
    }
}

/// `spans` spans of `mix` in requests of `spans_per_request`, encoded.
pub fn encode(mix: SpanMix, spans: u64, spans_per_request: u64) -> EncodedRequests {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut randomness = Vec::with_capacity(spans as usize);
    let mut bodies = Vec::new();
    let mut first = 0;
    while first < spans {
        let last = (first + spans_per_request.max(1)).min(spans);
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        attribute("service.name", text("checkout")),
                        attribute("k8s.namespace.name", text("shop")),
                    ],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "trace-bench".into(),
                        version: "1".into(),
                        ..InstrumentationScope::default()
                    }),
                    spans: (first..last)
                        .map(|n| span(mix, n, &mut state, &mut randomness))
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        bodies.push(request.encode_to_vec());
        first = last;
    }
    EncodedRequests {
        mix,
        bodies: Arc::new(bodies),
        spans,
        randomness,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_span_has_its_index_as_id_and_the_mixes_their_shape() {
        for mix in [SpanMix::Small, SpanMix::Kyma] {
            let requests = encode(mix, 25, 10);
            assert_eq!(requests.bodies.len(), 3);
            let mut ids = Vec::new();
            for body in requests.bodies.iter() {
                let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
                for span in &request.resource_spans[0].scope_spans[0].spans {
                    ids.push(u64::from_be_bytes(
                        span.span_id.as_slice().try_into().unwrap(),
                    ));
                    let extra = if mix == SpanMix::Kyma {
                        KYMA_ATTRIBUTES
                    } else {
                        0
                    };
                    assert_eq!(span.attributes.len(), 3 + extra);
                }
            }
            assert_eq!(ids, (0..25).collect::<Vec<_>>());
        }
        let requests = encode(SpanMix::Small, 1000, 100);
        assert_eq!(requests.expected(false, 0), 1000);
        assert_eq!(requests.expected(true, 0), 900);
        let half = requests.expected(false, 1 << 55);
        assert!((400..600).contains(&half), "{half}");
    }
}
