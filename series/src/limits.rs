//! The limits a push request is decoded under, and the label limits the scraper
//! applies by default; every one a named constant with its reason.

/// Most bytes of a request body on the wire (compressed). Prometheus sends 2,000
/// samples per remote-write request by default, about 100 KiB compressed; an OTel
/// Collector batch of 8,192 points is a few MiB unless compressed. 8 MiB leaves room
/// for both while bounding what one connection makes the agent hold.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;

/// Most bytes a body may decompress to. A Prometheus remote-write request is 1 to 2 MB
/// decompressed, the OTel Collector refuses bodies over 20 MiB by default, vmagent
/// over 32 MB; the agent holds the decompressed body while it decodes it, so 16 MiB
/// keeps a bomb's cost well inside its memory. A snappy body declares its size in its
/// header and is refused from that before anything is allocated; a gzip body is
/// refused from its size trailer when that is over the limit, and otherwise
/// decompressed through the limit (a trailer can lie).
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 16 << 20;

/// Most labels on one series, `__name__` included, pushed or scraped. Mimir and
/// VictoriaMetrics refuse more than 30 by default; real series (cAdvisor, kube-state-
/// metrics) carry 10 to 20. 64 leaves room for generous exporters while a 40,000-label
/// series is refused before its labels are built.
pub const DEFAULT_MAX_LABELS_PER_SERIES: usize = 64;

/// Longest label name in bytes: VictoriaMetrics' default (`-maxLabelNameLen`). Real
/// names are far shorter.
pub const DEFAULT_MAX_LABEL_NAME_BYTES: usize = 256;

/// Longest label value in bytes (a metric name is the value of `__name__`):
/// VictoriaMetrics' default (`-maxLabelValueLen`, 4 KiB); Mimir refuses over 2,048, so
/// longer values would not be stored anyway.
pub const DEFAULT_MAX_LABEL_VALUE_BYTES: usize = 4096;

/// Most samples one push request may produce. An OTel Collector batch of 8,192
/// histogram points with 20 buckets each is about 180,000 samples; every sample costs
/// memory until it is buffered, so a request is bounded well above that.
pub const DEFAULT_MAX_SAMPLES_PER_REQUEST: usize = 250_000;

/// Most labels all series of one push request may carry together (each is two strings
/// in memory, about 100 bytes): bounds what a request of many small series costs,
/// which the per-series limit does not.
pub const DEFAULT_MAX_LABELS_PER_REQUEST: usize = 500_000;

/// Most protobuf messages an OTLP request may decode into. An empty message is two
/// bytes on the wire but a struct of 50 to 150 bytes in memory, so the count, not the
/// byte size, bounds what decoding allocates. 250,000 holds an 8,192-point batch with
/// 10 attributes per point with room to spare.
pub const DEFAULT_MAX_OTLP_MESSAGES: usize = 250_000;

/// Most bytes of anything a pusher sent that an error message quotes.
pub const MAX_QUOTED_BYTES: usize = 64;

/// The limits one push request is decoded under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushLimits {
    /// Most bytes of the body on the wire.
    pub max_body_bytes: usize,
    /// Most bytes the body may decompress to.
    pub max_decompressed_bytes: usize,
    /// Most labels per series.
    pub max_labels_per_series: usize,
    /// Longest label name.
    pub max_label_name_bytes: usize,
    /// Longest label value.
    pub max_label_value_bytes: usize,
    /// Most samples per request.
    pub max_samples_per_request: usize,
    /// Most labels per request, all series together.
    pub max_labels_per_request: usize,
    /// Most protobuf messages an OTLP request decodes into.
    pub max_otlp_messages: usize,
}

impl Default for PushLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
            max_labels_per_series: DEFAULT_MAX_LABELS_PER_SERIES,
            max_label_name_bytes: DEFAULT_MAX_LABEL_NAME_BYTES,
            max_label_value_bytes: DEFAULT_MAX_LABEL_VALUE_BYTES,
            max_samples_per_request: DEFAULT_MAX_SAMPLES_PER_REQUEST,
            max_labels_per_request: DEFAULT_MAX_LABELS_PER_REQUEST,
            max_otlp_messages: DEFAULT_MAX_OTLP_MESSAGES,
        }
    }
}

impl PushLimits {
    /// Checks one label against the name and value limits.
    pub(crate) fn check_label(&self, name: &str, value: &str) -> Result<(), crate::DecodeError> {
        if name.len() > self.max_label_name_bytes {
            return Err(crate::DecodeError::LabelNameTooLong {
                name: crate::quoted(name),
                length: name.len(),
                limit: self.max_label_name_bytes,
            });
        }
        if value.len() > self.max_label_value_bytes {
            return Err(crate::DecodeError::LabelValueTooLong {
                name: crate::quoted(name),
                length: value.len(),
                limit: self.max_label_value_bytes,
            });
        }
        Ok(())
    }
}
