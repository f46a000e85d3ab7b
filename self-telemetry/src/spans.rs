//! A `tracing_subscriber` layer that turns selected spans into OTLP spans.
//!
//! **Which spans**: only those with an `otel.kind` field (`client`, `server`,
//! `internal`, `producer`, `consumer`), the convention kube-client's per-request spans
//! already follow; every other span stays a logging-only span and costs nothing here
//! (the layer's filter decides once per call site). `otel.name` overrides the span's
//! name; other fields become attributes.
//!
//! **Ids and parents**: an exported span takes the trace id of its nearest exported
//! ancestor (internal, unexported spans in between are skipped) and links to it as
//! parent; a span without one starts a new trace with a random id.
//!
//! **Status**: error when the span records `otel.status_code = "ERROR"` or an `error`
//! field, or when an event with an `error` field happens inside it (what
//! `#[instrument(err)]` emits); the message is that error. Otherwise unset.
//!
//! **Untraced work** ([`untraced`]): spans opened while a future runs inside
//! `untraced` are not exported, nor parents of anything. A trace pipeline's export path
//! runs so: the process's own spans may be pushed to its own trace pipeline, and were
//! that pipeline's exports traced, each export would make a span the next export
//! carries, for ever (a feedback loop that one span starts).
//!
//! **Delivery**: a closed span goes into a bounded queue with `try_send`; when the
//! queue is full the span is dropped and counted, so a slow or dead receiver never
//! blocks the code being traced. The exporter task drains the queue in batches.

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use kaas_proto::otlp::{Span as OtlpSpan, SpanKind, Status, StatusCode};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, Filtered};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::any_attribute;

/// The field that marks a span for export.
pub const KIND_FIELD: &str = "otel.kind";
/// The field that overrides an exported span's name.
pub const NAME_FIELD: &str = "otel.name";
/// The field that marks a span failed when it is `ERROR`.
pub const STATUS_FIELD: &str = "otel.status_code";
/// The field whose presence marks a span, or an event inside one, as an error.
pub const ERROR_FIELD: &str = "error";
/// How many attributes one span keeps; more are counted as dropped (OTel's default
/// attribute count limit).
pub const MAX_ATTRIBUTES: usize = 128;

/// Whether a call site is one this layer needs: a marked span, or an event that can
/// carry an error. Decided once per call site.
fn wanted(metadata: &Metadata<'_>) -> bool {
    let fields = metadata.fields();
    if metadata.is_span() {
        fields.field(KIND_FIELD).is_some()
    } else {
        fields.field(ERROR_FIELD).is_some()
    }
}

tokio::task_local! {
    /// Set while a future runs inside [`untraced`].
    static UNTRACED: ();
}

/// Runs `future` with its spans left out of the export (see the module
/// documentation): spans it opens in its own task, however deep, are neither exported
/// nor anyone's parent. Tasks it spawns are traced as usual.
pub async fn untraced<F: Future>(future: F) -> F::Output {
    UNTRACED.scope((), future).await
}

/// Whether the current task runs inside [`untraced`].
fn is_untraced() -> bool {
    UNTRACED.try_with(|()| ()).is_ok()
}

/// The span layer with its own filter, ready to stack on a registry.
pub type FilteredSpanLayer<S> = Filtered<SpanLayer, FilterFn<fn(&Metadata<'_>) -> bool>, S>;

/// Turns marked spans into OTLP spans and queues them for the exporter.
#[derive(Debug)]
pub struct SpanLayer {
    queue: mpsc::Sender<OtlpSpan>,
    dropped: Counter,
}

impl SpanLayer {
    /// A layer queuing into `queue`, counting spans dropped because it was full.
    pub fn new(queue: mpsc::Sender<OtlpSpan>, dropped: Counter) -> Self {
        Self { queue, dropped }
    }

    /// This layer behind a filter that lets only marked spans and error-carrying
    /// events reach it, independent of the log level.
    pub fn filtered<S>(self) -> FilteredSpanLayer<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        self.with_filter(FilterFn::new(wanted as fn(&Metadata<'_>) -> bool))
    }
}

/// What is kept about an open exported span (in the registry's span extensions).
#[derive(Debug)]
struct OpenSpan {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<[u8; 8]>,
    start_unix_nano: u64,
    fields: SpanFields,
}

#[derive(Debug)]
struct SpanFields {
    name: String,
    kind: SpanKind,
    attributes: Vec<kaas_proto::otlp::KeyValue>,
    dropped_attributes: u32,
    error: Option<String>,
}

impl Visit for SpanFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            KIND_FIELD => self.kind = span_kind(value),
            NAME_FIELD => value.clone_into(&mut self.name),
            STATUS_FIELD => {
                if value.eq_ignore_ascii_case("error") {
                    self.error.get_or_insert_with(String::new);
                }
            }
            ERROR_FIELD => self.error = Some(value.to_owned()),
            name => self.attribute(name, any_attribute::Scalar::Str(value)),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attribute(field.name(), any_attribute::Scalar::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.attribute(
            field.name(),
            any_attribute::Scalar::Int(i64::try_from(value).unwrap_or(i64::MAX)),
        );
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.attribute(field.name(), any_attribute::Scalar::Double(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attribute(field.name(), any_attribute::Scalar::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

impl SpanFields {
    fn attribute(&mut self, key: &str, value: any_attribute::Scalar<'_>) {
        if let Some(existing) = self.attributes.iter_mut().find(|kv| kv.key == key) {
            *existing = any_attribute::key_value(key, value);
        } else if self.attributes.len() < MAX_ATTRIBUTES {
            self.attributes.push(any_attribute::key_value(key, value));
        } else {
            self.dropped_attributes += 1;
        }
    }
}

fn span_kind(text: &str) -> SpanKind {
    match text.to_ascii_lowercase().as_str() {
        "client" => SpanKind::Client,
        "server" => SpanKind::Server,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        _ => SpanKind::Internal,
    }
}

/// The trace and span ids of `span` if it is an open exported span, for log records
/// written inside it ([`crate::logs`]).
pub(crate) fn exported_ids<'a, R: LookupSpan<'a>>(
    span: &SpanRef<'a, R>,
) -> Option<([u8; 16], [u8; 8])> {
    span.extensions()
        .get::<OpenSpan>()
        .map(|open| (open.trace_id, open.span_id))
}

/// Finds the error an event carries (its `error` field, else its message).
#[derive(Default)]
struct EventError {
    error: Option<String>,
    message: Option<String>,
}

impl Visit for EventError {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            ERROR_FIELD => self.error = Some(value.to_owned()),
            "message" => self.message = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if matches!(field.name(), ERROR_FIELD | "message") {
            self.record_str(field, &format!("{value:?}"));
        }
    }
}

fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A random non-zero id (all-zero ids are invalid in OTLP).
fn random_id<const N: usize>() -> [u8; N] {
    let mut id = [0u8; N];
    while id.iter().all(|b| *b == 0) {
        id.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    id
}

impl<S> Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if is_untraced() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let parent = span.scope().skip(1).find_map(|ancestor| {
            ancestor
                .extensions()
                .get::<OpenSpan>()
                .map(|p| (p.trace_id, p.span_id))
        });
        let mut fields = SpanFields {
            name: attrs.metadata().name().to_owned(),
            kind: SpanKind::Internal,
            attributes: Vec::new(),
            dropped_attributes: 0,
            error: None,
        };
        attrs.record(&mut fields);
        let open = OpenSpan {
            trace_id: parent.map_or_else(random_id, |(trace, _)| trace),
            span_id: random_id(),
            parent_span_id: parent.map(|(_, span)| span),
            start_unix_nano: now_unix_nano(),
            fields,
        };
        span.extensions_mut().insert(open);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(open) = span.extensions_mut().get_mut::<OpenSpan>()
        {
            values.record(&mut open.fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            let mut extensions = span.extensions_mut();
            if let Some(open) = extensions.get_mut::<OpenSpan>() {
                let mut found = EventError::default();
                event.record(&mut found);
                if let Some(error) = found.error.or(found.message) {
                    open.fields.error = Some(error);
                }
                return;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<OpenSpan>() else {
            return;
        };
        let status = open.fields.error.map(|message| Status {
            message,
            code: StatusCode::Error as i32,
        });
        let otlp = OtlpSpan {
            trace_id: open.trace_id.to_vec(),
            span_id: open.span_id.to_vec(),
            trace_state: String::new(),
            parent_span_id: open.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 0,
            name: open.fields.name,
            kind: open.fields.kind as i32,
            start_time_unix_nano: open.start_unix_nano,
            end_time_unix_nano: now_unix_nano(),
            attributes: open.fields.attributes,
            dropped_attributes_count: open.fields.dropped_attributes,
            status,
            ..OtlpSpan::default()
        };
        if self.queue.try_send(otlp).is_err() {
            // Full (or the exporter is gone): never wait in the traced code.
            self.dropped.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use kaas_proto::otlp::any_value::Value;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    fn collect(capacity: usize, body: impl FnOnce()) -> (Vec<OtlpSpan>, u64) {
        let (sender, mut receiver) = mpsc::channel(capacity);
        let dropped = Counter::default();
        let subscriber =
            tracing_subscriber::registry().with(SpanLayer::new(sender, dropped.clone()).filtered());
        tracing::subscriber::with_default(subscriber, body);
        let mut spans = Vec::new();
        while let Ok(span) = receiver.try_recv() {
            spans.push(span);
        }
        (spans, dropped.get())
    }

    fn attribute<'a>(span: &'a OtlpSpan, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn named<'a>(spans: &'a [OtlpSpan], name: &str) -> &'a OtlpSpan {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}"))
    }

    /// Spans opened inside `untraced`, however deep, are not exported; the same
    /// spans outside it are, also after it (the marker ends with the future).
    #[test]
    fn spans_opened_inside_untraced_are_not_exported() {
        let (spans, dropped) = collect(16, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                let outer = tracing::info_span!("outer", otel.kind = "server");
                let _outer = outer.enter();
                untraced(async {
                    let export = tracing::debug_span!("export", otel.kind = "client");
                    let _export = export.enter();
                    tokio::task::yield_now().await;
                    drop(tracing::debug_span!("token", otel.kind = "client"));
                })
                .await;
                drop(tracing::debug_span!("after", otel.kind = "client"));
            });
        });
        assert_eq!(dropped, 0);
        let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["after", "outer"]);
    }

    #[test]
    fn only_marked_spans_are_exported_and_children_link_through_unmarked_ones() {
        let (spans, dropped) = collect(16, || {
            let root = tracing::info_span!("join", otel.kind = "server", cluster = "c1");
            let _root = root.enter();
            let internal = tracing::info_span!("bookkeeping");
            let _internal = internal.enter();
            let child = tracing::debug_span!(
                "HTTP",
                otel.kind = "client",
                otel.name = "list",
                http.status_code = 200_u64
            );
            drop(child.enter());
            drop(child);
            let other = tracing::info_span!("unrelated", otel.kind = "client");
            drop(other);
        });
        assert_eq!(dropped, 0);
        let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["list", "unrelated", "join"], "closing order");
        let (root, child, other) = (
            named(&spans, "join"),
            named(&spans, "list"),
            named(&spans, "unrelated"),
        );
        assert_eq!(root.kind, SpanKind::Server as i32);
        assert_eq!(child.kind, SpanKind::Client as i32);
        assert!(root.parent_span_id.is_empty());
        assert_eq!(root.trace_id.len(), 16);
        assert_eq!(root.span_id.len(), 8);
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(
            child.parent_span_id, root.span_id,
            "skips the unmarked span"
        );
        assert_eq!(other.trace_id, root.trace_id, "opened inside the root");
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(
            attribute(root, "cluster"),
            Some(&Value::StringValue("c1".into()))
        );
        assert_eq!(
            attribute(child, "http.status_code"),
            Some(&Value::IntValue(200))
        );
        assert!(attribute(child, "otel.kind").is_none());
        assert!(root.end_time_unix_nano >= root.start_time_unix_nano);
        assert!(root.status.is_none());
    }

    #[test]
    fn separate_roots_get_separate_traces() {
        let (spans, _) = collect(16, || {
            drop(tracing::info_span!("a", otel.kind = "client"));
            drop(tracing::info_span!("b", otel.kind = "client"));
        });
        assert_eq!(spans.len(), 2);
        assert_ne!(spans[0].trace_id, spans[1].trace_id);
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    fn failing_query(fail: bool) -> Result<(), std::io::Error> {
        if fail {
            Err(std::io::Error::other("connection refused"))
        } else {
            Ok(())
        }
    }

    #[test]
    fn errors_set_the_status() {
        let (spans, _) = collect(16, || {
            let _ = failing_query(true);
            let _ = failing_query(false);
            let span = tracing::info_span!(
                "recorded",
                otel.kind = "client",
                otel.status_code = tracing::field::Empty
            );
            span.record("otel.status_code", "ERROR");
            drop(span);
            let span =
                tracing::info_span!("late", otel.kind = "client", rows = tracing::field::Empty);
            span.record("rows", 3_i64);
            drop(span);
        });
        let status = |i: usize| spans[i].status.clone();
        assert_eq!(
            status(0),
            Some(Status {
                message: "connection refused".into(),
                code: StatusCode::Error as i32
            })
        );
        assert_eq!(spans[0].name, "failing_query");
        assert_eq!(status(1), None);
        assert_eq!(status(2).map(|s| s.code), Some(StatusCode::Error as i32));
        assert_eq!(attribute(&spans[3], "rows"), Some(&Value::IntValue(3)));
        assert_eq!(status(3), None);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (spans, dropped) = collect(2, || {
            for _ in 0..5 {
                drop(tracing::info_span!("s", otel.kind = "internal"));
            }
        });
        assert_eq!(spans.len(), 2);
        assert_eq!(dropped, 3);
    }

    #[test]
    fn attributes_are_bounded() {
        let (spans, _) = collect(2, || {
            let span = tracing::info_span!("s", otel.kind = "internal", a = tracing::field::Empty);
            for _ in 0..3 {
                span.record("a", 1_i64);
            }
            drop(span);
        });
        assert_eq!(spans[0].attributes.len(), 1, "re-recording replaces");
    }
}
