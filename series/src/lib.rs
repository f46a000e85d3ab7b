//! Series as the agent handles them before they reach a pipeline: label sets
//! ([`labels`]) and the decoders of series pushed to the agent ([`remote_write`],
//! [`otlp`]), of OTLP logs ([`otlp_logs`] for protobuf, [`otlp_logs_json`] for
//! OTLP/JSON), of OTLP traces ([`otlp_traces`] for protobuf, [`otlp_traces_json`] for
//! OTLP/JSON; both JSON decoders share one core), of Zipkin v2 JSON spans converted to
//! OTLP ([`zipkin`]) and of Loki pushes to the receive gateway ([`loki`]), kept in a small
//! crate so that they can be fuzzed and tested without the agent around them.
//!
//! A push decoder treats its input as hostile. Each one checks a size before it
//! allocates for it ([`PushLimits`]): the compressed body (by the caller, while reading
//! it), the declared or streamed decompressed size ([`compression`]), the number of
//! protobuf messages a request would decode into, the labels of each series (count,
//! name and value length) and the samples and labels a request produces in all. Every
//! refusal is a [`DecodeError`] that says which limit was hit and by how much, and
//! whether the request was too large (HTTP 413) or invalid (HTTP 400).
//!
//! The wall clock samples are stamped with is [`clock`].

pub mod clock;
pub mod compression;
pub mod labels;
pub mod limits;
pub mod loki;
pub mod otlp;
mod otlp_json;
pub mod otlp_logs;
pub mod otlp_logs_json;
pub mod otlp_traces;
pub mod otlp_traces_json;
pub mod remote_write;
mod wire;
pub mod zipkin;

pub use limits::PushLimits;

/// The NaN Prometheus uses as a staleness marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// One pushed series: its labels and its samples as `(timestamp ms, value)`.
#[derive(Clone, Debug, PartialEq)]
pub struct PushedSeries {
    /// The labels.
    pub labels: labels::Labels,
    /// The samples, in the order they came.
    pub samples: Vec<(i64, f64)>,
}

/// What a push request holds once decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pushed {
    /// The series.
    pub series: Vec<PushedSeries>,
    /// Type, help and unit per metric family.
    pub metadata: Vec<kaas_proto::remote_write::v1::MetricMetadata>,
}

impl Pushed {
    /// How many samples the request holds.
    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

/// Why a pushed request is refused. Messages quote at most
/// [`limits::MAX_QUOTED_BYTES`] of anything the pusher sent, escaped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body on the wire is over the limit.
    #[error("the body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body decompresses (or declares that it decompresses) to more than allowed.
    #[error("the body decompresses to {} bytes, more than the limit of {limit}", shown_size(*.size))]
    DecompressedTooLarge {
        /// The limit in bytes.
        limit: usize,
        /// The size the body declares, when it does (snappy); `None` when it was found
        /// by decompressing up to the limit (gzip).
        size: Option<u64>,
    },
    /// The request would decode into more protobuf messages than allowed.
    #[error("the request holds more than {limit} protobuf messages")]
    TooManyMessages {
        /// The limit.
        limit: usize,
    },
    /// The request holds more samples than allowed.
    #[error("the request holds more than {limit} samples")]
    TooManySamples {
        /// The limit.
        limit: usize,
    },
    /// The request's series hold more labels in all than allowed.
    #[error("the request's series hold more than {limit} labels in all")]
    TooManyLabelsInRequest {
        /// The limit.
        limit: usize,
    },
    /// One series has more labels than allowed.
    #[error("series {metric:?} has more than {limit} labels")]
    TooManyLabels {
        /// The series' metric name (its start), when it was seen before the limit hit.
        metric: String,
        /// The limit.
        limit: usize,
    },
    /// A label name is longer than allowed.
    #[error("label name {name:?}… is {length} bytes long, more than the limit of {limit}")]
    LabelNameTooLong {
        /// The name's start.
        name: String,
        /// Its length.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// A label value is longer than allowed.
    #[error("the value of label {name:?} is {length} bytes long, more than the limit of {limit}")]
    LabelValueTooLong {
        /// The label's name (its start).
        name: String,
        /// The value's length.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// A span holds more of something (tags, annotations) than allowed.
    #[error("the span at index {span} has more than {limit} {what}")]
    TooManyInSpan {
        /// The span's index in the request (from 0).
        span: usize,
        /// What it has too many of.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A string the pusher sent is longer than allowed.
    #[error("{what} is {length} bytes long, more than the limit of {limit}")]
    StringTooLong {
        /// Which string, and where (quoting at most [`limits::MAX_QUOTED_BYTES`] of a key).
        what: String,
        /// Its length.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// Not what the protocol says the body is.
    #[error("{0}")]
    Malformed(String),
}

fn shown_size(size: Option<u64>) -> String {
    size.map_or_else(|| "more".to_owned(), |s| s.to_string())
}

impl DecodeError {
    /// Whether the request is refused for its size (HTTP 413, gRPC
    /// `RESOURCE_EXHAUSTED`) rather than its content (HTTP 400, gRPC
    /// `INVALID_ARGUMENT`).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            Self::BodyTooLarge { .. }
                | Self::DecompressedTooLarge { .. }
                | Self::TooManyMessages { .. }
                | Self::TooManySamples { .. }
                | Self::TooManyLabelsInRequest { .. }
        )
    }

    /// A short, fixed name of the refusal for a metric label (a bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::DecompressedTooLarge { .. } => "decompressed_too_large",
            Self::TooManyMessages { .. } => "too_many_messages",
            Self::TooManySamples { .. } => "too_many_samples",
            Self::TooManyLabelsInRequest { .. } => "too_many_labels_in_request",
            Self::TooManyLabels { .. } => "too_many_labels",
            Self::LabelNameTooLong { .. } => "label_name_too_long",
            Self::LabelValueTooLong { .. } => "label_value_too_long",
            Self::TooManyInSpan { .. } => "too_many_in_span",
            Self::StringTooLong { .. } => "string_too_long",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// The start of `text` for a message: at most [`limits::MAX_QUOTED_BYTES`] bytes, cut
/// at a character boundary (the caller escapes it with `{:?}`).
pub(crate) fn quoted(text: &str) -> String {
    let mut end = text.len().min(limits::MAX_QUOTED_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
