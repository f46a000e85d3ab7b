//! Prometheus remote-write wire messages, written by hand as prost structs with the
//! field numbers of Prometheus' `prompb/types.proto` (1.0) and `prompb/io/prometheus/
//! write/v2/types.proto` (2.0). Only what the agent sends is modelled; a receiver
//! skips fields it does not know, so exemplars and native histograms can be added later
//! without breaking anything.

/// The header naming the protocol version of a request (lower case, as HTTP/2 sends
/// header names); its value is each version's `VERSION_HEADER_VALUE`.
pub const VERSION_HEADER: &str = "x-prometheus-remote-write-version";
/// `Content-Encoding` of every request, both versions: the body is block-format snappy.
pub const CONTENT_ENCODING: &str = "snappy";

/// Remote-write 1.0 (`prometheus.WriteRequest`), snappy-compressed on the wire.
pub mod v1 {
    /// `Content-Type` of a 1.0 request.
    pub const CONTENT_TYPE: &str = "application/x-protobuf";
    /// `X-Prometheus-Remote-Write-Version` of a 1.0 request.
    pub const VERSION_HEADER_VALUE: &str = "0.1.0";

    /// One request: series with their samples, and metric metadata.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        /// The series.
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        /// Type, help and unit per metric family.
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    /// One series.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Labels sorted by name, `__name__` included.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// Samples in timestamp order.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// One label.
    #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
    pub struct Label {
        /// Name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// One sample.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Sample {
        /// Value; staleness markers are a special NaN.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Unix milliseconds.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    /// Metadata of one metric family.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricMetadata {
        /// The family's type.
        #[prost(enumeration = "MetricType", tag = "1")]
        pub r#type: i32,
        /// The family name.
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        /// Help text.
        #[prost(string, tag = "4")]
        pub help: String,
        /// Unit.
        #[prost(string, tag = "5")]
        pub unit: String,
    }

    /// Metric types as remote-write 1.0 numbers them.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        /// Unknown or untyped.
        Unknown = 0,
        /// Counter.
        Counter = 1,
        /// Gauge.
        Gauge = 2,
        /// Histogram.
        Histogram = 3,
        /// Gauge histogram.
        Gaugehistogram = 4,
        /// Summary.
        Summary = 5,
        /// Info.
        Info = 6,
        /// State set.
        Stateset = 7,
    }
}

/// Remote-write 2.0 (`io.prometheus.write.v2.Request`): strings interned in a symbol
/// table, metadata per series.
pub mod v2 {
    /// `Content-Type` of a 2.0 request.
    pub const CONTENT_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
    /// `X-Prometheus-Remote-Write-Version` of a 2.0 request.
    pub const VERSION_HEADER_VALUE: &str = "2.0.0";

    /// One request. `symbols[0]` is always the empty string.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        /// Interned strings referenced by index.
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        /// The series.
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// One series.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Pairs of symbol references: name, value, name, value, …
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        /// Samples in timestamp order.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        /// The series' metadata.
        #[prost(message, optional, tag = "5")]
        pub metadata: Option<Metadata>,
    }

    /// One sample.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Sample {
        /// Value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Unix milliseconds.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    /// Type, help and unit of a series.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Metadata {
        /// The type.
        #[prost(enumeration = "MetricType", tag = "1")]
        pub r#type: i32,
        /// Symbol reference of the help text.
        #[prost(uint32, tag = "3")]
        pub help_ref: u32,
        /// Symbol reference of the unit.
        #[prost(uint32, tag = "4")]
        pub unit_ref: u32,
    }

    /// Metric types as remote-write 2.0 numbers them.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        /// Not given.
        Unspecified = 0,
        /// Counter.
        Counter = 1,
        /// Gauge.
        Gauge = 2,
        /// Histogram.
        Histogram = 3,
        /// Gauge histogram.
        Gaugehistogram = 4,
        /// Summary.
        Summary = 5,
        /// Info.
        Info = 6,
        /// State set.
        Stateset = 7,
    }
}
