//! A `tracing_subscriber` layer that turns the process's log events into OTLP log
//! records, so an operator who sets `--otlp-endpoint` gets the observer's and the
//! agent's logs where their metrics and spans go.
//!
//! **Which events**: exactly those the process writes to stderr: the layer sits behind
//! a filter built from the same `RUST_LOG` (default `info`). Events of the crates the
//! OTLP client itself is made of ([`TRANSPORT_TARGETS`]) are never exported, or every
//! export's own connection logging at `debug` would fill the next export.
//!
//! **Mapping**: the event's time is both `time_unix_nano` and
//! `observed_time_unix_nano`; the level gives `severity_number` (TRACE 1, DEBUG 5,
//! INFO 9, WARN 13, ERROR 17, OpenTelemetry's first number of each range) and
//! `severity_text`; the `message` field is the body; every other field is an
//! attribute (at most [`MAX_ATTRIBUTES`], the rest counted as dropped), and the event's
//! target, file and line become `code.namespace`, `code.file.path` and
//! `code.line.number`. Inside an exported span ([`crate::spans`]) the record carries
//! that span's trace and span ids, so a backend links logs and traces.
//!
//! **Secrets**: the layer exports what the process logs and nothing more; the
//! product's rule that secret values are never logged covers this export too.
//!
//! **Delivery**: as for spans, a bounded queue filled with `try_send`: when it is full
//! the record is dropped and counted (`kaas_self_telemetry_logs_dropped_total`), so a
//! slow or dead receiver never blocks the code that logs.

use kaas_proto::otlp::{AnyValue, KeyValue, LogRecord, SeverityNumber, any_value};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::any_attribute::{self, Scalar};
use crate::spans::exported_ids;

/// How many attributes one record keeps; more are counted as dropped (OTel's default
/// attribute count limit, as for spans).
pub const MAX_ATTRIBUTES: usize = 128;

/// Targets (crate prefixes) whose events are not exported: the OTLP client is built
/// from them, so exporting their events would make each export produce the next.
pub const TRANSPORT_TARGETS: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
    "tonic",
    "tower",
];

/// Whether events of `target` may be exported.
fn exportable(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    let krate = target.split("::").next().unwrap_or(target);
    !TRANSPORT_TARGETS.contains(&krate)
}

/// Turns log events into OTLP log records and queues them for the exporter.
#[derive(Debug)]
pub struct LogLayer {
    queue: mpsc::Sender<LogRecord>,
    dropped: Counter,
}

impl LogLayer {
    /// A layer queuing into `queue`, counting records dropped because it was full.
    pub fn new(queue: mpsc::Sender<LogRecord>, dropped: Counter) -> Self {
        Self { queue, dropped }
    }
}

/// The severity of a level: the first number of OpenTelemetry's range for it.
fn severity(level: Level) -> (SeverityNumber, &'static str) {
    match level {
        Level::TRACE => (SeverityNumber::Trace, "TRACE"),
        Level::DEBUG => (SeverityNumber::Debug, "DEBUG"),
        Level::INFO => (SeverityNumber::Info, "INFO"),
        Level::WARN => (SeverityNumber::Warn, "WARN"),
        Level::ERROR => (SeverityNumber::Error, "ERROR"),
    }
}

/// An event's fields: the message, and the rest as bounded attributes.
#[derive(Default)]
struct EventFields {
    message: Option<String>,
    attributes: Vec<KeyValue>,
    dropped: u32,
}

impl EventFields {
    fn attribute(&mut self, key: &str, value: Scalar<'_>) {
        if self.attributes.len() < MAX_ATTRIBUTES {
            self.attributes.push(any_attribute::key_value(key, value));
        } else {
            self.dropped += 1;
        }
    }
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.attribute(field.name(), Scalar::Str(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attribute(field.name(), Scalar::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.attribute(
            field.name(),
            Scalar::Int(i64::try_from(value).unwrap_or(i64::MAX)),
        );
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.attribute(field.name(), Scalar::Double(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attribute(field.name(), Scalar::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &crate::error_chain(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

impl<S> Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        if !exportable(metadata) {
            return;
        }
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let mut attributes = fields.attributes;
        attributes.push(any_attribute::key_value(
            "code.namespace",
            Scalar::Str(metadata.target()),
        ));
        if let Some(file) = metadata.file() {
            attributes.push(any_attribute::key_value(
                "code.file.path",
                Scalar::Str(file),
            ));
        }
        if let Some(line) = metadata.line() {
            attributes.push(any_attribute::key_value(
                "code.line.number",
                Scalar::Int(i64::from(line)),
            ));
        }
        let (trace_id, span_id) = ctx
            .event_scope(event)
            .and_then(|scope| scope.into_iter().find_map(|span| exported_ids(&span)))
            .map_or((Vec::new(), Vec::new()), |(trace, span)| {
                (trace.to_vec(), span.to_vec())
            });
        let (number, text) = severity(*metadata.level());
        let now = crate::unix_nano(std::time::SystemTime::now());
        let record = LogRecord {
            time_unix_nano: now,
            observed_time_unix_nano: now,
            severity_number: number as i32,
            severity_text: text.to_owned(),
            body: fields.message.map(|message| AnyValue {
                value: Some(any_value::Value::StringValue(message)),
            }),
            attributes,
            dropped_attributes_count: fields.dropped,
            flags: 0,
            trace_id,
            span_id,
            event_name: String::new(),
        };
        if self.queue.try_send(record).is_err() {
            // Full (or the exporter is gone): never wait in the code that logs.
            self.dropped.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use kaas_proto::otlp::any_value::Value;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::spans::SpanLayer;

    fn collect(capacity: usize, body: impl FnOnce()) -> (Vec<LogRecord>, u64) {
        let (sender, mut receiver) = mpsc::channel(capacity);
        let (span_sender, _span_receiver) = mpsc::channel(16);
        let dropped = Counter::default();
        let subscriber = tracing_subscriber::registry()
            .with(SpanLayer::new(span_sender, Counter::default()).filtered())
            .with(LogLayer::new(sender, dropped.clone()));
        tracing::subscriber::with_default(subscriber, body);
        let mut records = Vec::new();
        while let Ok(record) = receiver.try_recv() {
            records.push(record);
        }
        (records, dropped.get())
    }

    fn attribute<'a>(record: &'a LogRecord, key: &str) -> Option<&'a Value> {
        record
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    #[test]
    fn an_event_becomes_a_record_with_severity_body_and_attributes() {
        let (records, dropped) = collect(16, || {
            tracing::warn!(
                cluster = "edge-1",
                attempts = 3_u64,
                "cannot reach the observer"
            );
            tracing::error!(ok = false, "plain");
        });
        assert_eq!(dropped, 0);
        assert_eq!(records.len(), 2);
        let warn = &records[0];
        assert_eq!(warn.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(warn.severity_text, "WARN");
        assert_eq!(
            warn.body.as_ref().and_then(|b| b.value.clone()),
            Some(Value::StringValue("cannot reach the observer".into()))
        );
        assert_eq!(
            attribute(warn, "cluster"),
            Some(&Value::StringValue("edge-1".into()))
        );
        assert_eq!(attribute(warn, "attempts"), Some(&Value::IntValue(3)));
        assert!(
            attribute(warn, "message").is_none(),
            "the message is the body"
        );
        assert_eq!(
            attribute(warn, "code.namespace"),
            Some(&Value::StringValue(module_path!().into()))
        );
        assert!(matches!(
            attribute(warn, "code.line.number"),
            Some(Value::IntValue(line)) if *line > 0
        ));
        assert!(warn.time_unix_nano > 0);
        assert_eq!(warn.time_unix_nano, warn.observed_time_unix_nano);
        assert!(warn.trace_id.is_empty() && warn.span_id.is_empty());
        assert_eq!(records[1].severity_number, SeverityNumber::Error as i32);
        assert_eq!(attribute(&records[1], "ok"), Some(&Value::BoolValue(false)));
    }

    #[test]
    fn inside_an_exported_span_the_record_carries_its_ids() {
        let (records, _) = collect(16, || {
            let span = tracing::info_span!("join", otel.kind = "server");
            let _entered = span.enter();
            let inner = tracing::info_span!("bookkeeping");
            let _inner = inner.enter();
            tracing::info!("joined");
        });
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].trace_id.len(), 16);
        assert_eq!(records[0].span_id.len(), 8);
    }

    #[test]
    fn the_transport_s_own_events_are_not_exported() {
        let (records, _) = collect(16, || {
            tracing::info!(target: "hyper_util::client::legacy", "connecting");
            tracing::info!(target: "h2::codec", "frame");
            tracing::info!(target: "kaas_observer::api", "kept");
        });
        let targets: Vec<_> = records
            .iter()
            .filter_map(|r| attribute(r, "code.namespace"))
            .collect();
        assert_eq!(targets, [&Value::StringValue("kaas_observer::api".into())]);
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_attributes_are_bounded() {
        let (records, dropped) = collect(2, || {
            for _ in 0..5 {
                tracing::info!("again");
            }
        });
        assert_eq!((records.len(), dropped), (2, 3));
        let mut fields = EventFields::default();
        for i in 0..MAX_ATTRIBUTES + 4 {
            fields.attribute(&format!("k{i}"), Scalar::Int(1));
        }
        assert_eq!(
            (fields.attributes.len(), fields.dropped),
            (MAX_ATTRIBUTES, 4)
        );
    }
}
