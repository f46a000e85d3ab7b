//! Tests of the steps together, through [`TraceProcessing`] built from validated
//! pipelines: the OpenTelemetry Collector's probabilistic-sampler cases (equalizing
//! mode, which is what this sampler is), 100,000 trace ids through two independently
//! built pipelines, upstream thresholds never exceeded, every processor with exact
//! counts under a fake clock, and a property test that arbitrary spans and
//! tracestates never make processing panic, break its counts or write an invalid
//! `tracestate`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kaas_pipeline::ValidationContext;
use kaas_pipeline::traces::{TracePipeline, validate_trace_pipeline};
use kaas_proto::otlp::{KeyValue, Resource, ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;

use super::attributes::AttributeHasher;
use super::sampling::trace_id_randomness;
use super::tracestate::{MAX_LIST_MEMBERS, MAX_OT_VALUE_CHARS, TraceState, parse_threshold};
use super::*;
use crate::processing::logs::attributes::string_attribute;

const HASH_KEY: &[u8] = b"a hash key of thirty-two bytes!!";

/// A pipeline validated from its spec's YAML (the output is filled in).
fn pipeline(spec: &str) -> ValidatedTracePipeline {
    let text = format!(
        "metadata: {{name: shop}}\nspec:\n{spec}\n  output: {{otlp: {{endpoint: \
         \"https://tempo.example:4317\"}}}}\n"
    );
    let pipeline: TracePipeline = serde_yaml::from_str(&text).expect("parses");
    validate_trace_pipeline(&pipeline, &ValidationContext::tenant_default()).expect("valid")
}

fn sampled_at(ratio: f64) -> TraceProcessing {
    TraceProcessing::new(&pipeline(&format!("  sampling: {{ratio: {ratio}}}")), None)
}

fn span(trace_id: &[u8], trace_state: &str) -> Span {
    Span {
        trace_id: trace_id.to_vec(),
        span_id: vec![0xfe; 8],
        trace_state: trace_state.to_owned(),
        name: "GET /".to_owned(),
        ..Span::default()
    }
}

// `..ResourceSpans::default()` fills the fields the full OTLP messages add (issue 17).
#[allow(clippy::needless_update)]
fn batch(spans: Vec<Span>) -> Vec<ResourceSpans> {
    vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![string_attribute("service.name", "shop")],
            ..Resource::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    }]
}

fn spans(batch: &[ResourceSpans]) -> Vec<&Span> {
    let scopes = batch.iter().flat_map(|resource| &resource.scope_spans);
    scopes.flat_map(|scope| &scope.spans).collect()
}

fn trace_id(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text).expect("hex")
}

/// The Collector's `Test_tracesamplerprocessor_TraceState` cases for its equalizing
/// mode, with their precision: the keep decision and the tracestate written.
#[test]
fn decisions_and_thresholds_match_the_collectors_equalizing_sampler() {
    // Samples at 50% and not at 49%: its randomness is 0x80000000000000.
    let default_id = "fefefefefefefefefe80000000000000";
    // Sampled at every probability: randomness all ones.
    let improbable_id = "111111111111111111ffffffffffffff";
    type Case<'a> = (&'a str, f64, u32, &'a str, &'a str, Option<&'a str>);
    let cases: [Case; 20] = [
        ("50 percent", 0.5, 4, default_id, "", Some("ot=th:8")),
        (
            "25 percent sampled",
            0.25,
            4,
            "ddddddddddddddddddc0000000000000",
            "",
            Some("ot=th:c"),
        ),
        (
            "25 percent unsampled",
            0.25,
            4,
            "ddddddddddddddddddb0000000000000",
            "",
            None,
        ),
        (
            "1 percent with rv, precision 4",
            0.01,
            4,
            default_id,
            "ot=rv:FD70A3D70A3D71",
            Some("ot=rv:FD70A3D70A3D71;th:fd70a"),
        ),
        (
            "1 percent with rv, precision 3",
            0.01,
            3,
            default_id,
            "ot=rv:FD70A3D70A3D71",
            None,
        ),
        ("49 percent", 0.49, 4, default_id, "", None),
        (
            "1 percent with tid",
            0.01,
            4,
            "a0a0a0a0a0a0a0a0a0fe000000000000",
            "",
            Some("ot=th:fd70a"),
        ),
        (
            "incoming 50 percent with rv",
            0.5,
            4,
            default_id,
            "ot=rv:90000000000000;th:80000000000000",
            Some("ot=rv:90000000000000;th:8"),
        ),
        (
            "incoming 50 percent at 25 percent not sampled",
            0.25,
            4,
            default_id,
            "ot=th:8",
            None,
        ),
        (
            "incoming 50 percent at 25 percent sampled",
            0.25,
            4,
            "ffffffffffffffffffffffffffffffff",
            "ot=th:8",
            Some("ot=th:c"),
        ),
        (
            "equalizing keeps a higher incoming threshold",
            0.5,
            4,
            default_id,
            "ot=rv:c0000000000000;th:8",
            Some("ot=rv:c0000000000000;th:8"),
        ),
        (
            "inconsistent arriving threshold is not sampled",
            0.01,
            4,
            default_id,
            "ot=rv:40000000000000;th:8",
            None,
        ),
        (
            "inconsistent trace id",
            0.5,
            4,
            "ffffffffffffffffff70000000000000",
            "ot=th:8",
            None,
        ),
        (
            "40 percent precision 3 with rv",
            0.4,
            3,
            default_id,
            "ot=rv:a0000000000000",
            Some("ot=rv:a0000000000000;th:99a"),
        ),
        (
            "arriving 50 percent at 40 percent precision 6",
            0.4,
            6,
            "a0a0a0a0a0a0a0a0a0d0000000000000",
            "ot=th:8",
            Some("ot=th:99999a"),
        ),
        (
            "arriving 50 percent at 40 percent partly sampled",
            0.4,
            3,
            "a0a0a0a0a0a0a0a0a0b0000000000000",
            "ot=th:8",
            Some("ot=th:99a"),
        ),
        (
            "arriving 50 percent at 40 percent not sampled",
            0.4,
            3,
            "a0a0a0a0a0a0a0a0a080000000000000",
            "ot=th:8",
            None,
        ),
        (
            "tiny probability rounding",
            1.0 / 16384.0,
            4,
            improbable_id,
            "ot=th:fffc",
            Some("ot=th:fffc"),
        ),
        (
            "probability underflow keeps the higher upstream threshold",
            0.000625,
            4,
            improbable_id,
            "ot=th:fffffffffffff8",
            Some("ot=th:fffffffffffff8"),
        ),
        (
            "other vendors are kept behind the ot entry",
            0.5,
            4,
            default_id,
            "congo=t61rcWkgMzE,ot=p:8",
            Some("ot=th:8;p:8,congo=t61rcWkgMzE"),
        ),
    ];
    for (name, ratio, precision, id, state, expected) in cases {
        let sampler = Sampler::with_precision(ratio, precision).expect("below 1");
        let mut span = span(&trace_id(id), state);
        let kept = sampler.keeps(&mut span);
        assert_eq!(kept, expected.is_some(), "{name}");
        if let Some(expected) = expected {
            assert_eq!(span.trace_state, expected, "{name}");
        }
    }
}

/// The Collector's `TestUpdateTValueWithSampling` cases that keep the span: the
/// threshold written is the larger of the arriving one and the sampler's.
#[test]
fn the_written_threshold_is_never_lower_than_the_arriving_one() {
    let cases = [
        ("ot=th:8", 2.0 / 16.0, "ot=th:e"),
        ("ot=th:8", 14.0 / 16.0, "ot=th:8"),
        ("ot=th:f", 0.5, "ot=th:f"),
        ("ot=th:0", 1.0 / 16.0, "ot=th:f"),
        ("", 1.0 / 16.0, "ot=th:f"),
        ("ot=th:555", 0x555 as f64 / 4096.0, "ot=th:aab"),
    ];
    let all_ones = [0xff; 16];
    for (state, ratio, expected) in cases {
        let sampler = Sampler::new(ratio).expect("below 1");
        let mut span = span(&all_ones, state);
        assert!(sampler.keeps(&mut span), "{state} at {ratio}");
        assert_eq!(span.trace_state, expected, "{state} at {ratio}");
    }
}

/// 100,000 random trace ids (a fixed seed) through two pipelines built independently
/// at 0.1: the same traces kept by both, about a tenth of them.
#[test]
fn two_pipelines_at_the_same_ratio_keep_the_same_traces() {
    let mut random = fastrand::Rng::with_seed(0x5eed_0017);
    let ids: Vec<[u8; 16]> = (0..100_000)
        .map(|_| {
            let mut id = [0u8; 16];
            random.fill(&mut id);
            id
        })
        .collect();
    let kept_by = |processing: &TraceProcessing, written: &str| -> BTreeSet<Vec<u8>> {
        // Batches of 1,000 spans, as pushes arrive.
        let mut kept = BTreeSet::new();
        for chunk in ids.chunks(1000) {
            let mut batch = batch(chunk.iter().map(|id| span(id, "")).collect());
            let outcome = processing.process(&mut batch);
            assert_eq!(outcome.kept + outcome.sampled_out, chunk.len() as u64);
            for span in spans(&batch) {
                assert_eq!(span.trace_state, written);
                kept.insert(span.trace_id.clone());
            }
        }
        kept
    };
    let first = kept_by(&sampled_at(0.1), "ot=th:e666");
    let second = kept_by(&sampled_at(0.1), "ot=th:e666");
    assert_eq!(first, second);
    assert!(
        (9_715..=10_285).contains(&first.len()),
        "{} kept of 100,000",
        first.len()
    );
    // A smaller ratio keeps a subset (consistency across ratios).
    let fewer = kept_by(&sampled_at(0.01), "ot=th:fd70a");
    assert!(fewer.is_subset(&first));
}

/// Traces sampled upstream at 1/16 (`th:f`) and at 1/2 (`th:8`), then at 0.1: a trace
/// is never kept at a higher rate than its upstream threshold says, and the
/// threshold written is the higher one.
#[test]
fn an_upstream_threshold_is_never_kept_at_a_higher_rate() {
    let processing = sampled_at(0.1);
    let mut random = fastrand::Rng::with_seed(17);
    for (upstream, expected_written, expected_share) in [
        ("ot=th:f", "ot=th:f", 1.0 / 16.0),
        ("ot=th:8", "ot=th:e666", 0.1),
        ("ot=th:fffffffffffff8", "ot=th:fffffffffffff8", 0.0),
    ] {
        let upstream_threshold = TraceState::parse(upstream).threshold().expect("th");
        let ids: Vec<[u8; 16]> = (0..100_000)
            .map(|_| {
                let mut id = [0u8; 16];
                random.fill(&mut id);
                id
            })
            .collect();
        let mut batch = batch(ids.iter().map(|id| span(id, upstream)).collect());
        let outcome = processing.process(&mut batch);
        for span in spans(&batch) {
            let randomness = trace_id_randomness(&span.trace_id).expect("16 bytes");
            assert!(randomness >= upstream_threshold, "{upstream}");
            assert_eq!(span.trace_state, expected_written);
        }
        let share = outcome.kept as f64 / ids.len() as f64;
        assert!(
            (share - expected_share).abs() < 0.003,
            "{upstream}: kept {share}"
        );
    }
    // With `rv`, the same holds against `rv`, whatever the trace id says.
    let mut span_rv = span(&[0xff; 16], "ot=rv:70000000000000;th:8");
    assert!(!Sampler::new(0.9).unwrap().keeps(&mut span_rv));
}

#[test]
fn spans_without_randomness_are_dropped_and_odd_ids_do_not_panic() {
    let processing = sampled_at(0.5);
    let mut batch = batch(vec![
        span(&[], ""),
        span(&[0xff; 8], ""),
        span(&[0xff; 17], ""),
        span(&[], "ot=rv:ffffffffffffff"),
        span(&[0xff; 16], "not a tracestate"),
    ]);
    let outcome = processing.process(&mut batch);
    assert_eq!(outcome.sampled_out, 3);
    let kept = spans(&batch);
    assert_eq!(kept[0].trace_state, "ot=rv:ffffffffffffff;th:8");
    assert_eq!(
        kept[1].trace_state, "ot=th:8",
        "a garbled tracestate is replaced"
    );
}

#[test]
fn without_sampling_nothing_is_sampled_and_tracestate_is_untouched() {
    let processing = TraceProcessing::new(&pipeline("  sampling: {ratio: 1}"), None);
    let mut batch = batch(vec![
        span(&[0; 16], ""),
        span(&[], "garbage =="),
        span(&[1; 16], "ot=rv:00000000000000;th:8"),
    ]);
    let before = batch.clone();
    let outcome = processing.process(&mut batch);
    assert_eq!(outcome.kept, 3);
    assert_eq!(batch, before);
}

/// One pipeline's processing is shared by the tasks receiving its pushes.
#[test]
fn processing_is_shared_between_tasks() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<TraceProcessing>();
}

/// Every processor on one batch under a fake clock, with exact counts.
#[test]
fn every_processor_counts_what_it_drops() {
    let processing = TraceProcessing::new(
        &pipeline(
            r#"
  sampling: {ratio: 0.5}
  processors:
    dropSpans:
      - {exact: "GET /healthz"}
      - {attribute: url.path, regex: "^/metrics"}
    attributes:
      - {action: hash, key: enduser.id}
      - {action: delete, key: http.request.header.cookie}
      - {action: set, key: deployment.environment, value: prod}
    hashKey: {valueFrom: {secretKeyRef: {name: salt, namespace: kaas-observer, key: key}}}
    rateLimit: {spansPerSecond: 2, burst: 4}"#,
        ),
        Some(HASH_KEY),
    );
    assert_eq!(processing.hash_key_error(), None);
    let keep_id = [0xff; 16];
    let drop_id = [0x00; 16];
    let with = |name: &str, attributes: Vec<KeyValue>| Span {
        name: name.to_owned(),
        attributes,
        ..span(&keep_id, "")
    };
    let user = || {
        vec![
            string_attribute("enduser.id", "alice"),
            string_attribute("http.request.header.cookie", "session=1"),
        ]
    };
    let start = Instant::now();
    let mut first = batch(vec![
        span(&drop_id, ""),
        span(&drop_id, ""),
        with("GET /healthz", vec![]),
        with("GET", vec![string_attribute("url.path", "/metrics")]),
        with("GET /cart", user()),
        with("GET /cart", user()),
        with("GET /cart", user()),
        with("GET /cart", user()),
        with("GET /cart", user()),
        with("GET /cart", user()),
    ]);
    let outcome = processing.process_at(&mut first, start);
    assert_eq!(
        outcome,
        TraceOutcome {
            kept: 4,
            sampled_out: 2,
            filtered: 2,
            rate_limited: 2,
        }
    );
    let alice = AttributeHasher::new(HASH_KEY).hex(b"alice");
    for span in spans(&first) {
        assert_eq!(span.trace_state, "ot=th:8");
        assert_eq!(
            span.attributes,
            vec![
                string_attribute("enduser.id", &alice),
                string_attribute("deployment.environment", "prod"),
            ]
        );
    }
    // A second later at 2/s: two more.
    let mut second = batch((0..5).map(|_| with("GET /cart", user())).collect());
    let outcome = processing.process_at(&mut second, start + Duration::from_secs(1));
    assert_eq!((outcome.kept, outcome.rate_limited), (2, 3));
    // A batch whose spans are all dropped leaves nothing empty behind.
    let mut empty = batch(vec![span(&drop_id, ""), with("GET /healthz", vec![])]);
    empty[0].scope_spans.push(ScopeSpans::default());
    let outcome = processing.process_at(&mut empty, start + Duration::from_secs(10));
    assert_eq!(
        (outcome.kept, outcome.sampled_out, outcome.filtered),
        (0, 1, 1)
    );
    assert!(empty.is_empty());
}

#[test]
fn a_refused_hash_key_deletes_what_it_would_hash_and_says_why() {
    let spec = r#"
  processors:
    attributes: [{action: hash, key: enduser.id}]
    hashKey: {valueFrom: {secretKeyRef: {name: salt, namespace: kaas-observer, key: key}}}"#;
    let processing = TraceProcessing::new(&pipeline(spec), Some(b"short"));
    assert_eq!(
        processing.hash_key_error(),
        Some(&HashKeyError::TooShort { bytes: 5 })
    );
    let mut batch = batch(vec![Span {
        attributes: vec![string_attribute("enduser.id", "alice")],
        ..span(&[1; 16], "")
    }]);
    processing.process(&mut batch);
    assert!(spans(&batch)[0].attributes.is_empty());
    let missing = TraceProcessing::new(&pipeline(spec), None);
    assert_eq!(missing.hash_key_error(), Some(&HashKeyError::Missing));
}

/// Text that looks like a tracestate more often than random text does.
fn tracestate_text() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        "ot=(rv:[0-9a-fA-F]{13,15}|th:[0-9a-f]{0,15}|[a-z]{1,3}:[a-zA-Z0-9._-]{0,5})(;(rv:[0-9a-f]{14}|th:[0-9a-fA-F]{1,14}|[a-z]{1,2}:[a-z]{0,3})){0,3}",
        "[a-z0-9][a-z0-9_*/@-]{0,6}=[ -~]{0,8}",
        "[ \\t,=;:]{0,3}",
        any::<String>(),
    ];
    prop::collection::vec(member, 0..40).prop_map(|members| members.join(","))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the trace ids and tracestates, processing does not panic, its counts
    /// add up, a kept span's randomness reaches the threshold it carries, that
    /// threshold is never below the pipeline's or the arriving one, and what is
    /// written is a valid tracestate with the `ot` entry first.
    #[test]
    fn sampling_arbitrary_spans_keeps_its_invariants(
        states in prop::collection::vec(tracestate_text(), 1..20),
        ids in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 20),
        ratio in 1e-6f64..1.0,
    ) {
        let sampler = Sampler::new(ratio).expect("below 1");
        let processing = sampled_at(ratio);
        let input: Vec<Span> = states
            .iter()
            .zip(&ids)
            .enumerate()
            .map(|(i, (state, id))| Span {
                name: i.to_string(),
                ..span(id, state)
            })
            .collect();
        let mut batch = batch(input.clone());
        let outcome = processing.process(&mut batch);
        prop_assert_eq!(outcome.kept + outcome.sampled_out, input.len() as u64);
        for span in spans(&batch) {
            let original = &input[span.name.parse::<usize>().expect("an index")];
            let arriving = TraceState::parse(&original.trace_state);
            let written = TraceState::parse(&span.trace_state);
            prop_assert!(span.trace_state.starts_with("ot="));
            prop_assert!(written.others.len() < MAX_LIST_MEMBERS);
            let ot_value = span.trace_state[3..].split(',').next().unwrap_or_default();
            prop_assert!(ot_value.len() <= MAX_OT_VALUE_CHARS);
            let threshold = written.threshold().expect("th written");
            prop_assert!(threshold >= sampler.threshold());
            prop_assert!(threshold >= arriving.threshold().unwrap_or(0));
            let randomness = written
                .randomness()
                .or_else(|| trace_id_randomness(&span.trace_id));
            prop_assert!(threshold == 0 || randomness.is_some_and(|r| r >= threshold));
            prop_assert_eq!(written.randomness(), arriving.randomness());
            prop_assert_eq!(&written.others, &arriving.others[..arriving.others.len().min(31)]);
            prop_assert_eq!(
                parse_threshold(ot_value.split(';').find_map(|p| p.strip_prefix("th:")).unwrap_or_default()),
                Some(threshold)
            );
        }
    }
}
