//! Grafana Loki's push API messages (`logproto.PushRequest`), written by hand as prost
//! structs with the field numbers of Loki's published `pkg/push/push.proto`, as
//! [`crate::remote_write`] is for Prometheus. The agent's Loki output encodes them and
//! the receive gateway's Loki route decodes and re-encodes them; both send them snappy
//! block compressed. The gogoproto options of Loki's file only shape its Go code.

/// `Content-Type` of a protobuf push.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// `Content-Encoding` of a protobuf push: the body is block-format snappy.
pub const CONTENT_ENCODING: &str = "snappy";

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// The streams.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: one stream and its entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// The stream's labels in Prometheus notation, `{a="x", b="y"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    /// Its entries.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// Unused by pushers.
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`: one line.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    /// When.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// The line.
    #[prost(string, tag = "2")]
    pub line: String,
    /// Indexed-free metadata of the entry.
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPairAdapter {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}
