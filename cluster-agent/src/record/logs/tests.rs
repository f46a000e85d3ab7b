//! The log signal against a model: whatever the sender does with frames (shards by
//! key, requests cut between frames), the requests decode to exactly the records
//! that went in, and each resource's records arrive in the order they were written.

use std::collections::BTreeMap;

use kaas_proto::otlp::{
    AnyValue, ExportLogsServiceRequest, InstrumentationScope, KeyValue, LogRecord, Resource,
    ResourceLogs, ScopeLogs, any_value,
};
use proptest::prelude::*;
use prost::Message;

use super::*;

fn text(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.into())),
    })
}

fn resource(file: usize) -> Resource {
    Resource {
        attributes: vec![KeyValue {
            key: "log.file.path".into(),
            value: text(&format!("/var/log/pods/ns_pod_uid/c/{file}.log")),
        }],
        ..Default::default()
    }
}

/// A batch whose record `seq` bodies are `"<file>:<seq>"`; `shape` lists for each
/// `ResourceLogs` its file and how many records each of its scopes holds.
fn batch(shape: &[(usize, Vec<usize>)], next: &mut BTreeMap<usize, u64>) -> LogBatch {
    let resource_logs = shape
        .iter()
        .map(|(file, scopes)| ResourceLogs {
            resource: Some(resource(*file)),
            scope_logs: scopes
                .iter()
                .map(|records| ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "tail".into(),
                        ..Default::default()
                    }),
                    log_records: (0..*records)
                        .map(|_| {
                            let seq = next.entry(*file).or_default();
                            *seq += 1;
                            LogRecord {
                                time_unix_nano: 1_700_000_000_000_000_000 + *seq,
                                body: text(&format!("{file}:{seq}")),
                                ..Default::default()
                            }
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: String::new(),
        })
        .collect();
    LogBatch { resource_logs }
}

/// Bodies per file, in order.
fn streams(requests: &[ExportLogsServiceRequest]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for request in requests {
        for resource_logs in &request.resource_logs {
            let key = format!("{:?}", resource_logs.resource);
            for scope in &resource_logs.scope_logs {
                for record in &scope.log_records {
                    let body = record.body.as_ref().map(|b| any_value_text(b).into_owned());
                    out.entry(key.clone())
                        .or_default()
                        .push(body.unwrap_or_default());
                }
            }
        }
    }
    out
}

/// What the sender does with the frames of a round: each frame to the shard of its
/// key, each shard's frames in order, cut into requests of about `per_request` items.
fn send_round(payloads: &[Vec<u8>], shards: usize, per_request: u64) -> Vec<LogRequest> {
    let mut by_shard: Vec<Vec<(&[u8], usize)>> = vec![Vec::new(); shards];
    for payload in payloads {
        for frame in Logs::frames(payload).expect("frames") {
            let Frame::Items { body, key, items } = frame else {
                panic!("logs have no shared frames");
            };
            let shard = usize::try_from(Logs::shard_key(key) % shards as u64).unwrap();
            by_shard[shard].push((body, items));
        }
    }
    let mut requests = Vec::new();
    for frames in by_shard {
        let (mut bodies, mut items) = (Vec::new(), 0u64);
        for (body, n) in frames {
            bodies.push(body);
            items += n as u64;
            if items >= per_request {
                requests.push(Logs::request(&bodies, &[], items, 0));
                (bodies, items) = (Vec::new(), 0);
            }
        }
        if !bodies.is_empty() {
            requests.push(Logs::request(&bodies, &[], items, 0));
        }
    }
    requests
}

fn shape() -> impl Strategy<Value = Vec<Vec<(usize, Vec<usize>)>>> {
    let resource_logs = (0usize..4, prop::collection::vec(0usize..5, 0..3));
    prop::collection::vec(prop::collection::vec(resource_logs, 0..6), 1..4)
}

proptest! {
    /// A batch's payload is byte for byte what `prost` writes for its request.
    #[test]
    fn payloads_are_what_prost_encodes(request in super::strategies::request_strategy()) {
        let payload = LogBatch { resource_logs: request.resource_logs.clone() }.payload();
        prop_assert_eq!(payload, request.encode_to_vec());
    }

    #[test]
    fn frames_join_into_requests_that_lose_nothing_and_keep_each_stream_in_order(
        shape in shape(),
        shards in 1usize..5,
        per_request in 1u64..8,
    ) {
        let mut next = BTreeMap::new();
        let batches: Vec<LogBatch> = shape.iter().map(|s| batch(s, &mut next)).collect();
        let payloads: Vec<Vec<u8>> = batches.iter().map(Payload::payload).collect();
        let requests = send_round(&payloads, shards, per_request);
        let decoded: Vec<ExportLogsServiceRequest> =
            requests.iter().map(|r| r.decode().expect("decodes")).collect();
        // Every request says how many records it holds.
        for (request, decoded) in requests.iter().zip(&decoded) {
            let records = LogBatch { resource_logs: decoded.resource_logs.clone() }.records();
            prop_assert_eq!(request.records, records as u64);
        }
        // The model: every file's records, in the order they were written.
        let written = streams(&batches
            .iter()
            .map(|b| ExportLogsServiceRequest { resource_logs: b.resource_logs.clone() })
            .collect::<Vec<_>>());
        prop_assert_eq!(streams(&decoded), written);
    }

    #[test]
    fn one_request_of_every_frame_is_the_batch_itself(shape in shape()) {
        let mut next = BTreeMap::new();
        for shape in &shape {
            let batch = batch(shape, &mut next);
            let payload = batch.payload();
            let frames = Logs::frames(&payload).expect("frames");
            let bodies: Vec<&[u8]> = frames
                .iter()
                .map(|f| match f {
                    Frame::Items { body, .. } => *body,
                    Frame::Shared(_) => panic!("no shared frames"),
                })
                .collect();
            let request = Logs::request(&bodies, &[], batch.records() as u64, 0);
            prop_assert_eq!(&request.body, &payload);
            // Encoded in place, the payload is the request's own encoding.
            let whole = ExportLogsServiceRequest {
                resource_logs: batch.resource_logs.clone(),
            };
            prop_assert_eq!(payload, whole.encode_to_vec());
        }
    }
}

#[test]
fn a_whole_record_is_decompressed_and_unknown_fields_are_kept() {
    let batch = batch(&[(1, vec![2])], &mut BTreeMap::new());
    let mut payload = batch.payload();
    // A field this version does not know travels along untouched.
    payload.extend([0x10, 0x07]);
    assert_eq!(Logs::frames(&payload).unwrap().len(), 1);
    let compressed = snap::raw::Encoder::new().compress_vec(&payload).unwrap();
    let request = Logs::whole_record(compressed, 2, 5);
    assert_eq!(request.decode().unwrap().resource_logs, batch.resource_logs);
    assert_eq!((Logs::items(&request), Logs::oldest_ms(&request)), (2, 5));
    assert_eq!(batch.oldest_ms(), Some(1_700_000_000_000));
}

/// The buffer's age bound counts from when the agent observed a record, not from the
/// record's own time: an old line read now is not dropped as too old.
#[test]
fn a_batch_is_as_old_as_its_earliest_observation_not_its_oldest_event() {
    let mut batch = batch(&[(1, vec![2])], &mut BTreeMap::new());
    let records = &mut batch.resource_logs[0].scope_logs[0].log_records;
    records[0].time_unix_nano = 1_000_000_000_000_000; // written long before it was read
    records[0].observed_time_unix_nano = 1_800_000_000_000_000_000;
    records[1].time_unix_nano = 1_800_000_500_000_000_000;
    records[1].observed_time_unix_nano = 0; // pushed without an observation time
    assert_eq!(batch.oldest_ms(), Some(1_800_000_000_000));
}

#[test]
fn damaged_payloads_are_refused_not_misread() {
    let payload = batch(&[(1, vec![3])], &mut BTreeMap::new()).payload();
    assert!(
        Logs::frames(&payload[..payload.len() - 1]).is_err(),
        "truncated"
    );
    assert!(Logs::frames(&[0x0b]).is_err(), "a group");
    assert!(
        Logs::frames(&[0x0a, 0x05, 0x01]).is_err(),
        "length past the end"
    );
}

#[test]
fn settled_records_are_remembered_across_attempts() {
    let request = LogRequest::new(Vec::new(), 3, 0);
    assert!(!request.settled.is_settled(2));
    request.settled.settle(2);
    assert!(request.settled.is_settled(2));
    assert!(!request.settled.is_settled(0));
    assert!(!request.settled.is_settled(9));
}

#[test]
fn values_as_json_and_text() {
    let value = AnyValue {
        value: Some(any_value::Value::KvlistValue(
            kaas_proto::otlp::KeyValueList {
                values: vec![
                    KeyValue {
                        key: "n".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::DoubleValue(f64::NAN)),
                        }),
                    },
                    KeyValue {
                        key: "b".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::BytesValue(vec![0xab, 1])),
                        }),
                    },
                    KeyValue {
                        key: "e".into(),
                        value: None,
                    },
                ],
            },
        )),
    };
    assert_eq!(any_value_text(&value), r#"{"b":"ab01","e":null,"n":"NaN"}"#);
    assert_eq!(any_value_text(&text("plain").unwrap()), "plain");
}
