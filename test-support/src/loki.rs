//! Loki pushes read as Loki reads them: the snappy block decompressed and decoded with
//! Loki's published `push.proto` (`fixtures/loki`), compiled here by protox, never with
//! the product's own structs, so a test checks what Loki would see.

use std::collections::BTreeMap;

use prost_reflect::{DescriptorPool, DynamicMessage};

/// One Loki entry as the schema reads it.
#[derive(Debug, PartialEq)]
pub struct LokiEntry {
    /// The timestamp's seconds.
    pub seconds: i64,
    /// The timestamp's nanoseconds.
    pub nanos: i32,
    /// The log line.
    pub line: String,
    /// Structured metadata, by name.
    pub metadata: BTreeMap<String, String>,
}

/// Loki's push schema, compiled from the published `.proto`.
fn loki_schema() -> DescriptorPool {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/loki");
    protox::Compiler::new([dir])
        .expect("a compiler")
        .include_imports(true)
        .open_file("push.proto")
        .expect("push.proto compiles")
        .descriptor_pool()
}

/// The streams of a snappy-compressed `PushRequest` body: each stream's label string
/// and its entries, in order.
pub fn loki_streams(body: &[u8]) -> Vec<(String, Vec<LokiEntry>)> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .expect("a snappy block");
    let pool = loki_schema();
    let descriptor = pool
        .get_message_by_name("logproto.PushRequest")
        .expect("PushRequest");
    let push = DynamicMessage::decode(descriptor, raw.as_slice()).expect("a PushRequest");
    let field = |message: &DynamicMessage, name: &str| {
        message
            .get_field_by_name(name)
            .unwrap_or_else(|| panic!("no field {name}"))
            .into_owned()
    };
    let text = |message: &DynamicMessage, name: &str| {
        field(message, name).as_str().expect("a string").to_owned()
    };
    let list = |message: &DynamicMessage, name: &str| -> Vec<DynamicMessage> {
        field(message, name)
            .as_list()
            .expect("a list")
            .iter()
            .map(|m| m.as_message().expect("a message").clone())
            .collect()
    };
    list(&push, "streams")
        .iter()
        .map(|stream| {
            let entries = list(stream, "entries")
                .iter()
                .map(|entry| {
                    let timestamp = field(entry, "timestamp");
                    let timestamp = timestamp.as_message().expect("a timestamp");
                    LokiEntry {
                        seconds: field(timestamp, "seconds").as_i64().expect("seconds"),
                        nanos: field(timestamp, "nanos").as_i32().expect("nanos"),
                        line: text(entry, "line"),
                        metadata: list(entry, "structuredMetadata")
                            .iter()
                            .map(|pair| (text(pair, "name"), text(pair, "value")))
                            .collect(),
                    }
                })
                .collect();
            (text(stream, "labels"), entries)
        })
        .collect()
}
