//! How an OTLP/HTTP push body is encoded (`Content-Type`, `Content-Encoding`), how it
//! is decoded (gzip first, then protobuf or OTLP/JSON), and how a success is answered in
//! the request's own encoding. Shared by every signal's OTLP/HTTP route and Zipkin's.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaas_series::{DecodeError, PushLimits, compression};

use super::{Protocol, PushReceiver, Refusal, excerpt};

/// An OTLP/HTTP logs or traces request taken apart for its receiver.
pub(super) struct OtlpHttpRequest {
    pub(super) headers: HeaderMap,
    pub(super) body: Body,
    /// The address it came from, when known ([`peer_of`]).
    pub(super) peer: Option<IpAddr>,
    /// How its body is encoded.
    pub(super) encoding: OtlpHttpEncoding,
    /// Whether its body is gzip-compressed.
    pub(super) gzip: bool,
}

impl OtlpHttpRequest {
    /// Takes `request` of `protocol` (`signal` names it in a refusal: "logs",
    /// "traces") apart; an encoding that is not OTLP's is counted here and returned
    /// for the answer.
    pub(super) fn of(
        receiver: &PushReceiver,
        request: Request,
        protocol: Protocol,
        signal: &str,
    ) -> Result<Self, Refusal> {
        let (parts, body) = request.into_parts();
        match OtlpHttpEncoding::of(&parts.headers, signal) {
            Ok((encoding, gzip)) => Ok(Self {
                peer: peer_of(&parts.extensions),
                headers: parts.headers,
                body,
                encoding,
                gzip,
            }),
            Err(refusal) => {
                refusal.count(protocol, &receiver.stats);
                Err(refusal)
            }
        }
    }
}

/// The address a request came from: axum's `ConnectInfo`, present when the server was
/// started `with_connect_info` (the agent's are), absent for a request handed to the
/// router directly.
pub(super) fn peer_of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
}

/// How an OTLP body is compressed, from `Content-Encoding`.
pub(super) fn otlp_encoding(headers: &HeaderMap) -> Result<bool, Refusal> {
    match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => Ok(false),
        Some("gzip") => Ok(true),
        Some(other) => Err(Refusal::UnsupportedMediaType(format!(
            "Content-Encoding {:?} is not supported; send gzip or no encoding",
            excerpt(other)
        ))),
    }
}

/// Whether an OTLP/HTTP body is gzip-compressed; refuses anything but protobuf.
pub(super) fn otlp_protobuf_encoding(headers: &HeaderMap) -> Result<bool, Refusal> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/x-protobuf") {
        otlp_encoding(headers)
    } else {
        Err(Refusal::UnsupportedMediaType(
            "send OTLP as application/x-protobuf".into(),
        ))
    }
}

/// An OTLP/HTTP body's decoder: `decode` after gzip when `gzip` is set.
pub(super) fn otlp_decoder<T: 'static>(
    gzip: bool,
    decode: fn(&[u8], &PushLimits) -> Result<T, DecodeError>,
) -> impl FnOnce(&[u8], &PushLimits) -> Result<T, DecodeError> + Send + 'static {
    move |body: &[u8], limits: &PushLimits| {
        if gzip {
            let raw = compression::gzip(body, limits.max_decompressed_bytes)?;
            decode(&raw, limits)
        } else {
            decode(body, limits)
        }
    }
}

/// A request's media type from `Content-Type`, lowercase, without parameters (such as
/// `charset`); empty without one.
pub(super) fn media_type(headers: &HeaderMap) -> String {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or_default();
    media_type.trim().to_ascii_lowercase()
}

/// How an OTLP/HTTP logs or traces body is encoded, from `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OtlpHttpEncoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`: OTLP/JSON.
    Json,
}

impl OtlpHttpEncoding {
    /// The encoding a request of `signal` ("logs", "traces") declares, and whether it
    /// is gzip-compressed; refuses anything else.
    pub(super) fn of(headers: &HeaderMap, signal: &str) -> Result<(Self, bool), Refusal> {
        let encoding = match media_type(headers).as_str() {
            "application/x-protobuf" => Self::Protobuf,
            "application/json" => Self::Json,
            _ => {
                return Err(Refusal::UnsupportedMediaType(format!(
                    "send OTLP {signal} as application/x-protobuf or application/json"
                )));
            }
        };
        Ok((encoding, otlp_encoding(headers)?))
    }

    /// A body's decoder in this encoding: `protobuf` or `json` after gzip when `gzip`
    /// is set.
    pub(super) fn decoder<T: 'static>(
        self,
        gzip: bool,
        protobuf: fn(&[u8], &PushLimits) -> Result<T, DecodeError>,
        json: fn(&[u8], &PushLimits) -> Result<T, DecodeError>,
    ) -> impl FnOnce(&[u8], &PushLimits) -> Result<T, DecodeError> + Send + 'static {
        let decode = match self {
            Self::Protobuf => protobuf,
            Self::Json => json,
        };
        otlp_decoder(gzip, decode)
    }

    /// The success answer in the request's encoding, as OTLP/HTTP asks: `protobuf`
    /// encoded, or `json` (OTLP/JSON of the same message).
    pub(super) fn accepted(self, protobuf: Vec<u8>, json: String) -> Response {
        match self {
            Self::Protobuf => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                protobuf,
            )
                .into_response(),
            Self::Json => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                json,
            )
                .into_response(),
        }
    }
}
