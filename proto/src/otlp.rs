//! OpenTelemetry OTLP metrics, logs and trace messages, written by hand as prost structs with
//! the field numbers of `opentelemetry/proto` (common, resource, metrics, logs, trace and
//! their collector services, v1). The common, resource, logs and trace messages carry
//! every field of the official protocol (1.9), so a record or span received and
//! forwarded loses nothing; of metrics only what the project sends is modelled, and
//! receivers skip unknown fields.
//! Hand-written rather than taken from `opentelemetry-proto`, which would bring the
//! whole OpenTelemetry SDK into the build.

/// The gRPC method that receives metrics.
pub const EXPORT_METRICS_PATH: &str =
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// `ExportMetricsServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportMetricsServiceRequest {
    /// Metrics per resource.
    #[prost(message, repeated, tag = "1")]
    pub resource_metrics: Vec<ResourceMetrics>,
}

/// `ExportMetricsServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportMetricsServiceResponse {
    /// Set when some data points were refused.
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportMetricsPartialSuccess>,
}

/// `ExportMetricsPartialSuccess`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportMetricsPartialSuccess {
    /// Data points refused.
    #[prost(int64, tag = "1")]
    pub rejected_data_points: i64,
    /// Why.
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// `ResourceMetrics`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceMetrics {
    /// The resource.
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// Metrics per instrumentation scope.
    #[prost(message, repeated, tag = "2")]
    pub scope_metrics: Vec<ScopeMetrics>,
}

/// `Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    /// Attributes.
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    /// Attributes the sender dropped.
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
    /// Entities the resource describes.
    #[prost(message, repeated, tag = "3")]
    pub entity_refs: Vec<EntityRef>,
}

/// `EntityRef`: an entity a resource describes, by the attribute keys that identify it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntityRef {
    /// The schema of the entity's type.
    #[prost(string, tag = "1")]
    pub schema_url: String,
    /// The entity's type, e.g. `service`.
    #[prost(string, tag = "2")]
    pub r#type: String,
    /// Resource attribute keys that identify the entity.
    #[prost(string, repeated, tag = "3")]
    pub id_keys: Vec<String>,
    /// Resource attribute keys that describe it.
    #[prost(string, repeated, tag = "4")]
    pub description_keys: Vec<String>,
}

/// `ScopeMetrics`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeMetrics {
    /// The scope.
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    /// Metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
}

/// `InstrumentationScope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Version.
    #[prost(string, tag = "2")]
    pub version: String,
    /// Attributes.
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
    /// Attributes the sender dropped.
    #[prost(uint32, tag = "4")]
    pub dropped_attributes_count: u32,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `AnyValue`: a scalar, an array, a key-value list or bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    /// The value.
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub value: Option<any_value::Value>,
}

/// `ArrayValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayValue {
    /// The elements.
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

/// `KeyValueList`: a map, as a list because keys may repeat on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValueList {
    /// The entries.
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<KeyValue>,
}

/// Members of `AnyValue`.
pub mod any_value {
    /// The value.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A string.
        #[prost(string, tag = "1")]
        StringValue(String),
        /// A boolean.
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        /// An integer.
        #[prost(int64, tag = "3")]
        IntValue(i64),
        /// A double.
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        /// An array.
        #[prost(message, tag = "5")]
        ArrayValue(super::ArrayValue),
        /// A key-value list.
        #[prost(message, tag = "6")]
        KvlistValue(super::KeyValueList),
        /// Bytes.
        #[prost(bytes = "vec", tag = "7")]
        BytesValue(Vec<u8>),
    }
}

/// `Metric`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Description.
    #[prost(string, tag = "2")]
    pub description: String,
    /// Unit.
    #[prost(string, tag = "3")]
    pub unit: String,
    /// The data.
    #[prost(oneof = "metric::Data", tags = "5, 7, 9, 11")]
    pub data: Option<metric::Data>,
}

/// Members of `Metric`.
pub mod metric {
    /// The data.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        /// A gauge.
        #[prost(message, tag = "5")]
        Gauge(super::Gauge),
        /// A sum (counter).
        #[prost(message, tag = "7")]
        Sum(super::Sum),
        /// A histogram.
        #[prost(message, tag = "9")]
        Histogram(super::Histogram),
        /// A summary.
        #[prost(message, tag = "11")]
        Summary(super::Summary),
    }
}

/// `AggregationTemporality`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum AggregationTemporality {
    /// Not given.
    Unspecified = 0,
    /// Deltas.
    Delta = 1,
    /// Running totals, as Prometheus counters are.
    Cumulative = 2,
}

/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`: the series ended (a Prometheus staleness
/// marker).
pub const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// `Gauge`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Gauge {
    /// Points.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<NumberDataPoint>,
}

/// `Sum`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sum {
    /// Points.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<NumberDataPoint>,
    /// Temporality.
    #[prost(enumeration = "AggregationTemporality", tag = "2")]
    pub aggregation_temporality: i32,
    /// Whether it only grows.
    #[prost(bool, tag = "3")]
    pub is_monotonic: bool,
}

/// `Histogram`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    /// Points.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<HistogramDataPoint>,
    /// Temporality.
    #[prost(enumeration = "AggregationTemporality", tag = "2")]
    pub aggregation_temporality: i32,
}

/// `Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// Points.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<SummaryDataPoint>,
}

/// `NumberDataPoint`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NumberDataPoint {
    /// Attributes.
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
    /// Start of the cumulative period; 0 when unknown.
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    /// When.
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    /// The value.
    #[prost(oneof = "number_data_point::Value", tags = "4, 6")]
    pub value: Option<number_data_point::Value>,
    /// Flags.
    #[prost(uint32, tag = "8")]
    pub flags: u32,
}

/// Members of `NumberDataPoint`.
pub mod number_data_point {
    /// The value.
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A double.
        #[prost(double, tag = "4")]
        AsDouble(f64),
        /// An integer.
        #[prost(sfixed64, tag = "6")]
        AsInt(i64),
    }
}

/// `HistogramDataPoint`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistogramDataPoint {
    /// Attributes.
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    /// Start of the cumulative period; 0 when unknown.
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    /// When.
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    /// Observations.
    #[prost(fixed64, tag = "4")]
    pub count: u64,
    /// Sum of observations.
    #[prost(double, optional, tag = "5")]
    pub sum: Option<f64>,
    /// Per-bucket counts (not cumulative), one more than the bounds.
    #[prost(fixed64, repeated, tag = "6")]
    pub bucket_counts: Vec<u64>,
    /// Upper bounds, ascending, without +Inf.
    #[prost(double, repeated, tag = "7")]
    pub explicit_bounds: Vec<f64>,
    /// Flags.
    #[prost(uint32, tag = "10")]
    pub flags: u32,
}

/// `SummaryDataPoint`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryDataPoint {
    /// Attributes.
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
    /// Start of the cumulative period; 0 when unknown.
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    /// When.
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    /// Observations.
    #[prost(fixed64, tag = "4")]
    pub count: u64,
    /// Sum of observations.
    #[prost(double, tag = "5")]
    pub sum: f64,
    /// Quantiles.
    #[prost(message, repeated, tag = "6")]
    pub quantile_values: Vec<ValueAtQuantile>,
    /// Flags.
    #[prost(uint32, tag = "8")]
    pub flags: u32,
}

/// `SummaryDataPoint.ValueAtQuantile`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct ValueAtQuantile {
    /// The quantile.
    #[prost(double, tag = "1")]
    pub quantile: f64,
    /// Its value.
    #[prost(double, tag = "2")]
    pub value: f64,
}

// ---- traces (opentelemetry/proto/trace/v1 and collector/trace/v1) ----

/// The gRPC method that receives spans.
pub const EXPORT_TRACES_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// `ExportTraceServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    /// Spans per resource.
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ExportTraceServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceResponse {
    /// Set when some spans were refused.
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportTracePartialSuccess>,
}

/// `ExportTracePartialSuccess`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTracePartialSuccess {
    /// Spans refused.
    #[prost(int64, tag = "1")]
    pub rejected_spans: i64,
    /// Why.
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// `ResourceSpans`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    /// The resource.
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// Spans per instrumentation scope.
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
    /// The schema of the resource's attributes.
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `ScopeSpans`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    /// The scope.
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    /// Spans.
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
    /// The schema of the spans' attributes.
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `Span`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    /// W3C trace state.
    #[prost(string, tag = "3")]
    pub trace_state: String,
    /// 8 bytes; empty for a root span.
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    /// W3C trace flags and the parent-is-remote bits.
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
    /// Name.
    #[prost(string, tag = "5")]
    pub name: String,
    /// Kind.
    #[prost(enumeration = "SpanKind", tag = "6")]
    pub kind: i32,
    /// Start.
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    /// End.
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    /// Attributes.
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    /// Attributes left out.
    #[prost(uint32, tag = "10")]
    pub dropped_attributes_count: u32,
    /// Events during the span.
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<span::Event>,
    /// Events the sender left out.
    #[prost(uint32, tag = "12")]
    pub dropped_events_count: u32,
    /// Links to other spans.
    #[prost(message, repeated, tag = "13")]
    pub links: Vec<span::Link>,
    /// Links the sender left out.
    #[prost(uint32, tag = "14")]
    pub dropped_links_count: u32,
    /// Outcome.
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
}

/// The messages nested in `Span`.
pub mod span {
    use super::KeyValue;

    /// `Span.Event`: something that happened at one time during the span.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        /// When.
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        /// Name.
        #[prost(string, tag = "2")]
        pub name: String,
        /// Attributes.
        #[prost(message, repeated, tag = "3")]
        pub attributes: Vec<KeyValue>,
        /// Attributes the sender left out.
        #[prost(uint32, tag = "4")]
        pub dropped_attributes_count: u32,
    }

    /// `Span.Link`: a span in the same or another trace this one relates to.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Link {
        /// 16 bytes.
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        /// 8 bytes.
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        /// The linked span's W3C trace state.
        #[prost(string, tag = "3")]
        pub trace_state: String,
        /// Attributes.
        #[prost(message, repeated, tag = "4")]
        pub attributes: Vec<KeyValue>,
        /// Attributes the sender left out.
        #[prost(uint32, tag = "5")]
        pub dropped_attributes_count: u32,
        /// The linked span's W3C trace flags and the is-remote bits.
        #[prost(fixed32, tag = "6")]
        pub flags: u32,
    }
}

/// `Span.SpanKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SpanKind {
    /// Not given.
    Unspecified = 0,
    /// Work inside the process.
    Internal = 1,
    /// Handling a request from outside.
    Server = 2,
    /// A request to something outside.
    Client = 3,
    /// Sending a message.
    Producer = 4,
    /// Receiving a message.
    Consumer = 5,
}

/// `Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// Why, for an error.
    #[prost(string, tag = "2")]
    pub message: String,
    /// The code.
    #[prost(enumeration = "StatusCode", tag = "3")]
    pub code: i32,
}

/// `Status.StatusCode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum StatusCode {
    /// Not set: the default outcome.
    Unset = 0,
    /// Explicitly successful.
    Ok = 1,
    /// Failed.
    Error = 2,
}

/// The gRPC method that receives logs.
pub const EXPORT_LOGS_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// `ExportLogsServiceRequest` (wire-identical to `LogsData`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportLogsServiceRequest {
    /// Logs per resource.
    #[prost(message, repeated, tag = "1")]
    pub resource_logs: Vec<ResourceLogs>,
}

/// `ExportLogsServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportLogsServiceResponse {
    /// Set when some log records were refused.
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportLogsPartialSuccess>,
}

/// `ExportLogsPartialSuccess`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportLogsPartialSuccess {
    /// Log records refused.
    #[prost(int64, tag = "1")]
    pub rejected_log_records: i64,
    /// Why.
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// `ResourceLogs`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceLogs {
    /// The resource.
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// Logs per instrumentation scope.
    #[prost(message, repeated, tag = "2")]
    pub scope_logs: Vec<ScopeLogs>,
    /// The schema of the resource's attributes.
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `ScopeLogs`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeLogs {
    /// The scope.
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    /// The records.
    #[prost(message, repeated, tag = "2")]
    pub log_records: Vec<LogRecord>,
    /// The schema of the records' attributes.
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `LogRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogRecord {
    /// When the event happened, Unix nanoseconds (0: unknown).
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    /// When the collector saw it, Unix nanoseconds.
    #[prost(fixed64, tag = "11")]
    pub observed_time_unix_nano: u64,
    /// Severity, normalised.
    #[prost(enumeration = "SeverityNumber", tag = "2")]
    pub severity_number: i32,
    /// Severity as the source wrote it.
    #[prost(string, tag = "3")]
    pub severity_text: String,
    /// The body.
    #[prost(message, optional, tag = "5")]
    pub body: Option<AnyValue>,
    /// Attributes.
    #[prost(message, repeated, tag = "6")]
    pub attributes: Vec<KeyValue>,
    /// Attributes the sender dropped.
    #[prost(uint32, tag = "7")]
    pub dropped_attributes_count: u32,
    /// W3C trace flags in the low byte (`LogRecordFlags`).
    #[prost(fixed32, tag = "8")]
    pub flags: u32,
    /// The trace the record belongs to: 16 bytes or empty.
    #[prost(bytes = "vec", tag = "9")]
    pub trace_id: Vec<u8>,
    /// The span the record belongs to: 8 bytes or empty.
    #[prost(bytes = "vec", tag = "10")]
    pub span_id: Vec<u8>,
    /// The name of the event the record is, if it is one.
    #[prost(string, tag = "12")]
    pub event_name: String,
}

/// `LogRecordFlags`: the mask of the W3C trace flags in [`LogRecord::flags`].
pub const LOG_RECORD_FLAGS_TRACE_FLAGS_MASK: u32 = 0x0000_00FF;

/// `SeverityNumber`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SeverityNumber {
    /// Unknown.
    Unspecified = 0,
    /// TRACE.
    Trace = 1,
    /// TRACE2.
    Trace2 = 2,
    /// TRACE3.
    Trace3 = 3,
    /// TRACE4.
    Trace4 = 4,
    /// DEBUG.
    Debug = 5,
    /// DEBUG2.
    Debug2 = 6,
    /// DEBUG3.
    Debug3 = 7,
    /// DEBUG4.
    Debug4 = 8,
    /// INFO.
    Info = 9,
    /// INFO2.
    Info2 = 10,
    /// INFO3.
    Info3 = 11,
    /// INFO4.
    Info4 = 12,
    /// WARN.
    Warn = 13,
    /// WARN2.
    Warn2 = 14,
    /// WARN3.
    Warn3 = 15,
    /// WARN4.
    Warn4 = 16,
    /// ERROR.
    Error = 17,
    /// ERROR2.
    Error2 = 18,
    /// ERROR3.
    Error3 = 19,
    /// ERROR4.
    Error4 = 20,
    /// FATAL.
    Fatal = 21,
    /// FATAL2.
    Fatal2 = 22,
    /// FATAL3.
    Fatal3 = 23,
    /// FATAL4.
    Fatal4 = 24,
}
