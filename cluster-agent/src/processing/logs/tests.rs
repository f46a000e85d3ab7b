//! Tests of the steps together: a structured line through every step, hostile bodies
//! (JSON bombs) staying bounded, exact rate-limit counts under a fake clock, de-dot
//! determinism over whole batches, the parser against an independent JSON
//! implementation, and a property test that processing never panics and keeps its
//! bounds and its counts on arbitrary input.

use std::time::{Duration, Instant};

use kaas_proto::otlp::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, LogRecord, Resource, ResourceLogs, ScopeLogs,
    SeverityNumber, any_value::Value,
};
use proptest::prelude::*;
use prost::Message;
use regex::Regex;

use super::attributes::{string_attribute, string_value};
use super::json::{self, MAX_JSON_DEPTH, MAX_JSON_KEYS};
use super::*;
use crate::internal_events::LogProcessingOutcome as Outcome;

/// One resource's records, as a batch (also for the pipeline's intake tests).
pub(crate) fn batch(resource: Vec<KeyValue>, records: Vec<LogRecord>) -> Vec<ResourceLogs> {
    vec![ResourceLogs {
        resource: Some(Resource {
            attributes: resource,
            ..Resource::default()
        }),
        scope_logs: vec![ScopeLogs {
            log_records: records,
            ..ScopeLogs::default()
        }],
        ..ResourceLogs::default()
    }]
}

fn text_record(body: &str) -> LogRecord {
    LogRecord {
        body: Some(string_value(body.into())),
        ..LogRecord::default()
    }
}

fn records(batch: &[ResourceLogs]) -> Vec<&LogRecord> {
    batch
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .collect()
}

fn body_text(record: &LogRecord) -> &str {
    match record.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::StringValue(text)) => text,
        _ => "",
    }
}

#[test]
fn a_structured_line_goes_through_every_step() {
    let line = r#"{"level":"warn","msg":"disk almost full","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","trace_flags":"01","user":{"id":7},"secret":"s","k8s.pod.label.tier.x":"t"}"#;
    let settings = LogProcessing {
        filter: LogFilter {
            keep: vec![],
            drop: vec![MatchRule {
                target: MatchTarget::Body,
                regex: Regex::new("healthz").unwrap(),
            }],
        },
        attribute_actions: vec![
            AttributeAction::Delete {
                key: "secret".into(),
            },
            AttributeAction::Set {
                key: "team".into(),
                value: "storage".into(),
            },
        ],
        dedot: true,
        ..LogProcessing::default()
    };
    let start = Instant::now();
    let mut processor = LogProcessor::new(settings, start);
    let mut logs = batch(
        vec![
            string_attribute("k8s.namespace.name", "shop"),
            string_attribute("k8s.pod.label.app.kubernetes.io/name", "cart"),
            string_attribute("k8s.pod.name", "cart-0"),
        ],
        vec![text_record(line), text_record("GET /healthz")],
    );
    let counts = processor.process(&mut logs, start);
    assert_eq!(
        counts.iter().collect::<Vec<_>>(),
        vec![(Outcome::Filtered, 1)]
    );
    let resource = &logs[0].resource.as_ref().unwrap().attributes;
    let keys: Vec<&str> = resource.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "k8s.namespace.name",
            "k8s.pod.label.app_kubernetes_io_name",
            "k8s.pod.name"
        ]
    );
    let kept = records(&logs);
    assert_eq!(kept.len(), 1);
    let record = kept[0];
    assert_eq!(body_text(record), "disk almost full");
    assert_eq!(record.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(record.severity_text, "warn");
    assert_eq!(
        hex::encode(&record.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(hex::encode(&record.span_id), "00f067aa0ba902b7");
    assert_eq!(record.flags, 1);
    let keys: Vec<&str> = record.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        ["user", "k8s.pod.label.tier_x", "log.original", "team"]
    );
    assert_eq!(
        attributes::find(&record.attributes, "log.original"),
        Some(&string_value(line.into()))
    );
}

/// A bomb's processing time limit: generous for a debug build on a busy machine, and
/// far below what a quadratic path over these sizes would take (hours).
const BOMB_TIME_LIMIT: Duration = Duration::from_secs(20);

/// Ten MiB.
const BOMB_BYTES: usize = 10 << 20;

fn process_one(settings: LogProcessing, body: String) -> (Vec<ResourceLogs>, LogProcessingCounts) {
    let start = Instant::now();
    let mut processor = LogProcessor::new(settings, start);
    let mut logs = batch(vec![], vec![text_record(&body)]);
    let counts = processor.process(&mut logs, start);
    assert!(
        start.elapsed() < BOMB_TIME_LIMIT,
        "took {:?}",
        start.elapsed()
    );
    (logs, counts)
}

fn uncapped() -> LogProcessing {
    LogProcessing {
        max_record_bytes: usize::MAX,
        ..LogProcessing::default()
    }
}

#[test]
fn a_deeply_nested_ten_mib_bomb_is_refused_at_the_depth_limit() {
    let half = BOMB_BYTES / 2;
    let bomb = format!("{{\"a\":{}{}}}", "[".repeat(half), "]".repeat(half));
    let error = json::parse_object(&bomb).unwrap_err();
    assert_eq!(error.outcome(), Outcome::JsonTooDeep);
    assert!(error.offset() < 100, "stopped at byte {}", error.offset());
    let (logs, counts) = process_one(uncapped(), bomb.clone());
    assert_eq!(counts.get(Outcome::JsonTooDeep), 1);
    let record = records(&logs)[0];
    assert_eq!(body_text(record).len(), bomb.len(), "the body stays raw");
    assert_eq!(record.attributes.len(), 1, "only the parse error");
}

#[test]
fn a_hundred_thousand_key_ten_mib_bomb_is_refused_at_the_key_limit() {
    let mut bomb = String::with_capacity(BOMB_BYTES + 64);
    bomb.push('{');
    let mut i = 0;
    while bomb.len() < BOMB_BYTES {
        // ~100 bytes a key: 100,000 keys in 10 MiB.
        bomb.push_str(&format!("\"key{i:07}\":\"{:>80}\",", i));
        i += 1;
    }
    bomb.push_str("\"end\":0}");
    assert!(i >= 100_000, "{i} keys");
    let error = json::parse_object(&bomb).unwrap_err();
    assert_eq!(error.outcome(), Outcome::JsonTooLarge);
    assert!(
        error.offset() < (MAX_JSON_KEYS + 1) * 110,
        "stopped right after key {MAX_JSON_KEYS}: byte {}",
        error.offset()
    );
    let (logs, counts) = process_one(uncapped(), bomb);
    assert_eq!(counts.get(Outcome::JsonTooLarge), 1);
    assert_eq!(records(&logs)[0].attributes.len(), 1);
}

#[test]
fn a_wide_and_deep_bomb_within_the_key_limit_parses_in_bounded_time() {
    // 10 MiB in few keys: long strings, the maximum depth, duplicate keys.
    let deep = format!(
        "{}1{}",
        "[".repeat(MAX_JSON_DEPTH - 2),
        "]".repeat(MAX_JSON_DEPTH - 2)
    );
    let long = "x".repeat(BOMB_BYTES);
    let dups: String = (0..5_000).map(|_| "\"d\":1,").collect();
    let body = format!("{{{dups}\"deep\":{deep},\"long\":\"{long}\"}}");
    let (logs, counts) = process_one(uncapped(), body);
    assert!(counts.is_empty(), "{counts:?}");
    let keys: Vec<&str> = records(&logs)[0]
        .attributes
        .iter()
        .map(|kv| kv.key.as_str())
        .collect();
    assert_eq!(keys, ["d", "deep", "long", "log.original"]);
}

#[test]
fn a_ten_mib_body_is_cut_to_the_default_cap_before_it_is_parsed() {
    let bomb = format!("{{\"a\":\"{}\"}}", "y".repeat(BOMB_BYTES));
    let (logs, counts) = process_one(LogProcessing::default(), bomb);
    assert_eq!(counts.get(Outcome::BodyTruncated), 1);
    assert_eq!(
        counts.get(Outcome::JsonInvalid),
        1,
        "the cut JSON does not parse"
    );
    assert_eq!(body_text(records(&logs)[0]).len(), DEFAULT_MAX_RECORD_BYTES);
}

#[test]
fn a_pushed_message_over_the_cap_is_cut_when_it_moves_into_the_body() {
    let settings = LogProcessing {
        max_record_bytes: 4,
        ..LogProcessing::default()
    };
    let mut record = LogRecord::default();
    record
        .attributes
        .push(string_attribute("message", "0123456789"));
    let mut logs = batch(vec![], vec![record]);
    let counts = LogProcessor::new(settings, Instant::now()).process(&mut logs, Instant::now());
    assert_eq!(counts.get(Outcome::BodyTruncated), 1);
    assert_eq!(body_text(records(&logs)[0]), "0123");
}

#[test]
fn rate_limits_count_exactly_under_a_fake_clock() {
    let limit = |rate, burst| {
        Some(RateLimit {
            records_per_second: std::num::NonZeroU32::new(rate).unwrap(),
            burst: std::num::NonZeroU32::new(burst).unwrap(),
        })
    };
    let settings = LogProcessing {
        pipeline_rate_limit: limit(100, 50),
        namespace_rate_limit: limit(10, 20),
        ..LogProcessing::default()
    };
    let start = Instant::now();
    let mut processor = LogProcessor::new(settings, start);
    let namespaced = |ns: &str, n: usize| {
        batch(
            vec![string_attribute(NAMESPACE_KEY, ns)],
            (0..n).map(|i| text_record(&format!("line {i}"))).collect(),
        )
    };
    let mut offered = namespaced("noisy", 100);
    offered.extend(namespaced("calm", 15));
    offered.extend(batch(
        vec![],
        (0..30).map(|_| text_record("no ns")).collect(),
    ));
    let counts = processor.process(&mut offered, start);
    // noisy: 20 (its burst); calm: 15; no namespace: the pipeline's remaining 15.
    assert_eq!(counts.get(Outcome::NamespaceRateLimited), 80);
    assert_eq!(counts.get(Outcome::PipelineRateLimited), 15);
    assert_eq!(records(&offered).len(), 50);
    // 1.5 s later: noisy gained 15, the pipeline 150 (capped at 50).
    let later = start + Duration::from_millis(1500);
    let mut offered = namespaced("noisy", 100);
    let counts = processor.process(&mut offered, later);
    assert_eq!(counts.get(Outcome::NamespaceRateLimited), 85);
    assert_eq!(counts.get(Outcome::PipelineRateLimited), 0);
    assert_eq!(records(&offered).len(), 15);
}

#[test]
fn dedot_collisions_resolve_the_same_for_every_order_and_are_counted() {
    let labels = [
        ("k8s.pod.label.app.kubernetes.io/name", "a"),
        ("k8s.pod.label.app_kubernetes_io/name", "b"),
        ("k8s.pod.label.app_kubernetes_io_name", "c"),
        ("k8s.pod.annotation.x.y", "d"),
        ("k8s.pod.name", "e"),
    ];
    let settings = LogProcessing {
        dedot: true,
        ..LogProcessing::default()
    };
    let mut results = std::collections::BTreeSet::new();
    for rotation in 0..labels.len() {
        for reverse in [false, true] {
            let mut order: Vec<_> = labels.to_vec();
            order.rotate_left(rotation);
            if reverse {
                order.reverse();
            }
            let attrs: Vec<KeyValue> = order.iter().map(|(k, v)| string_attribute(k, v)).collect();
            let mut record = text_record("x");
            record.attributes = attrs.clone();
            let mut logs = batch(attrs, vec![record]);
            let counts = LogProcessor::new(settings.clone(), Instant::now())
                .process(&mut logs, Instant::now());
            assert_eq!(counts.get(Outcome::DedotCollision), 4, "2 per list");
            let mut resource = logs[0].resource.as_ref().unwrap().attributes.clone();
            resource.sort_by(|a, b| a.key.cmp(&b.key));
            let mut record = records(&logs)[0].attributes.clone();
            record.sort_by(|a, b| a.key.cmp(&b.key));
            assert_eq!(resource, record);
            results.insert(format!("{resource:?}"));
        }
    }
    assert_eq!(results.len(), 1, "one result for every order: {results:?}");
    assert!(
        results
            .iter()
            .next()
            .unwrap()
            .contains("StringValue(\"a\")")
    );
}

/// A JSON value with nesting, unicode and every type, for the differential test.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<u64>().prop_map(|n| serde_json::json!(n)),
        (-1e300f64..1e300).prop_map(|f| serde_json::json!(f)),
        "\\PC{0,12}|[\"\\\\\\n\\t\\u{0}-\\u{1f}é😀]{0,6}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z.]{0,4}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What our parser must produce for a value serde_json wrote.
fn expected_any(value: &serde_json::Value) -> AnyValue {
    let value = match value {
        serde_json::Value::Null => None,
        serde_json::Value::Bool(b) => Some(Value::BoolValue(*b)),
        serde_json::Value::Number(n) => Some(match n.as_i64() {
            Some(i) => Value::IntValue(i),
            None => Value::DoubleValue(n.as_f64().unwrap_or_default()),
        }),
        serde_json::Value::String(s) => Some(Value::StringValue(s.clone())),
        serde_json::Value::Array(items) => Some(Value::ArrayValue(ArrayValue {
            values: items.iter().map(expected_any).collect(),
        })),
        serde_json::Value::Object(map) => Some(Value::KvlistValue(KeyValueList {
            values: expected_members(map),
        })),
    };
    AnyValue { value }
}

fn expected_members(map: &serde_json::Map<String, serde_json::Value>) -> Vec<KeyValue> {
    map.iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(expected_any(v)),
        })
        .collect()
}

/// Attribute keys the steps react to, and others.
const KEYS: &[&str] = &[
    "level",
    "log.level",
    "severity",
    "message",
    "msg",
    "trace_id",
    "span_id",
    "trace_flags",
    "traceparent",
    "k8s.pod.label.a.b",
    "k8s.pod.label.a_b",
    "k8s.pod.annotation.x/y",
    "k8s.namespace.name",
    "k8s.pod.name",
    "other",
];

fn any_value() -> impl Strategy<Value = AnyValue> {
    let scalar = prop_oneof![
        "\\PC{0,40}".prop_map(|s| Some(Value::StringValue(s))),
        "[{}\\[\\]\":,a-z0-9 \\\\.-]{0,80}".prop_map(|s| Some(Value::StringValue(s))),
        "[0-9a-fA-F-]{0,56}".prop_map(|s| Some(Value::StringValue(s))),
        any::<i64>().prop_map(|n| Some(Value::IntValue(n))),
        (0i64..70).prop_map(|n| Some(Value::IntValue(n))),
        any::<f64>().prop_map(|d| Some(Value::DoubleValue(d))),
        any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| Some(Value::BytesValue(b))),
        Just(None),
    ]
    .prop_map(|value| AnyValue { value });
    scalar.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values })),
            }),
            prop::collection::vec(key_value(inner), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::KvlistValue(KeyValueList { values })),
            }),
        ]
    })
}

fn key_value(value: impl Strategy<Value = AnyValue>) -> impl Strategy<Value = KeyValue> {
    (prop::sample::select(KEYS), value).prop_map(|(key, value)| KeyValue {
        key: key.into(),
        value: Some(value),
    })
}

fn body() -> impl Strategy<Value = Option<AnyValue>> {
    prop_oneof![
        json_value().prop_map(|v| Some(string_value(v.to_string()))),
        any_value().prop_map(Some),
        Just(None),
    ]
}

fn log_record() -> impl Strategy<Value = LogRecord> {
    (
        body(),
        prop::collection::vec(key_value(any_value()), 0..8),
        0i32..30,
    )
        .prop_map(|(body, attributes, severity_number)| LogRecord {
            body,
            attributes,
            severity_number: if severity_number > 24 {
                0
            } else {
                severity_number
            },
            ..LogRecord::default()
        })
}

fn resource_logs() -> impl Strategy<Value = ResourceLogs> {
    (
        prop::option::of(prop::collection::vec(key_value(any_value()), 0..6)),
        prop::collection::vec(prop::collection::vec(log_record(), 0..5), 0..3),
    )
        .prop_map(|(resource, scopes)| ResourceLogs {
            resource: resource.map(|attributes| Resource {
                attributes,
                ..Resource::default()
            }),
            scope_logs: scopes
                .into_iter()
                .map(|log_records| ScopeLogs {
                    log_records,
                    ..ScopeLogs::default()
                })
                .collect(),
            ..ResourceLogs::default()
        })
}

fn settings() -> impl Strategy<Value = LogProcessing> {
    let limit = prop::option::of((1u32..20, 1u32..10)).prop_map(|limit| {
        limit.map(|(rate, burst)| RateLimit {
            records_per_second: std::num::NonZeroU32::new(rate)
                .unwrap_or(std::num::NonZeroU32::MIN),
            burst: std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN),
        })
    });
    (any::<[bool; 4]>(), 0usize..300, limit.clone(), limit).prop_map(
        |(
            [parse_json, keep_original_body, dedot, filtered],
            max_record_bytes,
            pipeline,
            namespace,
        )| {
            LogProcessing {
                parse_json,
                keep_original_body,
                dedot,
                max_record_bytes,
                filter: LogFilter {
                    keep: vec![],
                    drop: if filtered {
                        vec![MatchRule {
                            target: MatchTarget::Attribute("other".into()),
                            regex: Regex::new("a").unwrap(),
                        }]
                    } else {
                        vec![]
                    },
                },
                attribute_actions: vec![AttributeAction::Rename {
                    from: "other".into(),
                    to: "k8s.pod.label.renamed.x".into(),
                }],
                pipeline_rate_limit: pipeline,
                namespace_rate_limit: namespace,
            }
        },
    )
}

/// Whether `attributes` are de-dotted: no prefixed key has a `.` or `/` after its
/// prefix, and no prefixed key repeats.
fn is_dedotted(attributes: &[KeyValue]) -> bool {
    let mut seen = std::collections::HashSet::new();
    attributes.iter().all(|kv| {
        match dedot::DEDOT_PREFIXES
            .iter()
            .find(|p| kv.key.starts_with(*p))
        {
            None => true,
            Some(prefix) => !kv.key[prefix.len()..].contains(['.', '/']) && seen.insert(&kv.key),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_parser_agrees_with_serde_json_on_every_object_it_writes(
        map in prop::collection::btree_map("\\PC{0,6}", json_value(), 0..8)
    ) {
        let object: serde_json::Map<_, _> = map.into_iter().collect();
        let text = serde_json::Value::Object(object.clone()).to_string();
        prop_assert_eq!(json::parse_object(&text).unwrap(), expected_members(&object));
    }

    #[test]
    fn processing_never_panics_keeps_its_bounds_and_accounts_for_every_record(
        settings in settings(),
        mut logs in prop::collection::vec(resource_logs(), 0..4),
        seconds in 0u64..3,
    ) {
        let cap = settings.max_record_bytes;
        let dedot = settings.dedot;
        let offered = records(&logs).len() as u64;
        let start = Instant::now();
        let mut processor = LogProcessor::new(settings, start);
        let counts = processor.process(&mut logs, start + Duration::from_secs(seconds));
        let kept = records(&logs);
        prop_assert_eq!(kept.len() as u64 + counts.records_dropped(), offered);
        for resource_logs in &logs {
            prop_assert!(!resource_logs.scope_logs.is_empty());
            prop_assert!(resource_logs.scope_logs.iter().all(|s| !s.log_records.is_empty()));
            if dedot && let Some(resource) = &resource_logs.resource {
                prop_assert!(is_dedotted(&resource.attributes));
            }
        }
        for record in kept {
            match record.body.as_ref().and_then(|b| b.value.as_ref()) {
                Some(Value::StringValue(text)) => prop_assert!(text.len() <= cap),
                Some(Value::BytesValue(bytes)) => prop_assert!(bytes.len() <= cap),
                Some(Value::ArrayValue(a)) => prop_assert!(a.encoded_len() <= cap),
                Some(Value::KvlistValue(m)) => prop_assert!(m.encoded_len() <= cap),
                _ => {}
            }
            prop_assert!(record.trace_id.is_empty() || record.trace_id.len() == 16);
            prop_assert!(record.span_id.is_empty() || record.span_id.len() == 8);
            prop_assert!((0..=24).contains(&record.severity_number));
            if dedot {
                prop_assert!(is_dedotted(&record.attributes));
            }
        }
    }
}
