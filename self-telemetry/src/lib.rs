//! Self-telemetry for the observer and the cluster-agent: their logging set-up, and,
//! with `--otlp-endpoint`, their own metrics, spans and logs pushed over OTLP. `/metrics` is
//! served either way; OTLP is an addition, never a replacement.
//!
//! # Design
//!
//! - **Metrics**: every push interval the process's prometheus-client registry (the
//!   one `/metrics` serves) is converted ([`metrics`]) and sent as one
//!   `ExportMetricsServiceRequest`: cumulative, so a failed push loses nothing the next
//!   one does not carry.
//! - **Spans**: [`spans::SpanLayer`] turns spans marked with `otel.kind` into OTLP spans
//!   and queues them (bounded, `try_send`); a task sends them in batches of at most
//!   [`MAX_SPANS_PER_EXPORT`], at least once per push interval. Marked spans sit
//!   around external calls only (Kubernetes API, database, remote-write and OTLP sends,
//!   probes, join), one per request, never per sample.
//! - **Logs**: [`logs::LogLayer`] turns the log events the process writes to stderr
//!   (same `RUST_LOG` filter) into OTLP log records, queued and sent like spans, in
//!   batches of at most [`MAX_LOGS_PER_EXPORT`].
//! - **Failure**: an unreachable receiver costs a counted failure
//!   (`kaas_self_telemetry_export_failures_total{signal}`), one warning per push
//!   interval and signal, and dropped spans and log records
//!   (`kaas_self_telemetry_spans_dropped_total`, `kaas_self_telemetry_logs_dropped_total`).
//!   Nothing waits on the receiver: the traced code only ever does a `try_send`.
//! - **Resource**: `service.name`, `service.version`, `service.instance.id` (the host
//!   name, which is the pod name in Kubernetes) and attributes the process adds later
//!   ([`Resource::set`], e.g. `k8s.cluster.name` once the agent knows its cluster).
//! - Messages are the hand-written prost structs of `kaas_proto::otlp`, not the
//!   OpenTelemetry SDK, to keep the build small.

pub mod logs;
pub mod metrics;
pub mod settings;
pub mod spans;
pub mod transport;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kaas_proto::otlp::{
    AnyValue, ExportLogsServiceRequest, ExportMetricsServiceRequest, ExportTraceServiceRequest,
    InstrumentationScope, KeyValue, LogRecord, Resource as OtlpResource, ResourceLogs,
    ResourceMetrics, ResourceSpans, ScopeLogs, ScopeMetrics, ScopeSpans, Span as OtlpSpan,
    any_value,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use logs::LogLayer;
pub use settings::{OtlpFlags, OtlpProtocol, OtlpSettings, SettingsError};
pub use spans::SpanLayer;
pub use transport::{BuildError, OtlpClient, Signal};

/// `error` and its sources on one line, joined with ": ", for log lines and status
/// messages: reqwest's and tonic's errors say only "error sending request" or
/// "transport error" themselves and keep the cause (connection refused, certificate
/// unknown) in their sources. A cause whose text the line already ends with is not
/// repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Sent as `User-Agent` with every export.
pub const USER_AGENT: &str = concat!("kaas-self-telemetry/", env!("CARGO_PKG_VERSION"));
/// Finished spans waiting for export, at most: OpenTelemetry's default batch span
/// processor queue (`OTEL_BSP_MAX_QUEUE_SIZE`); about 1 MB of spans.
pub const SPAN_QUEUE_CAPACITY: usize = 2048;
/// Spans in one export request: OpenTelemetry's default batch
/// (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`), well under receivers' 4 MB request limits.
pub const MAX_SPANS_PER_EXPORT: usize = 512;
/// Log records waiting for export, at most: OpenTelemetry's default batch log record
/// processor queue (`OTEL_BLRP_MAX_QUEUE_SIZE`).
pub const LOG_QUEUE_CAPACITY: usize = 2048;
/// Log records in one export request: OpenTelemetry's default
/// (`OTEL_BLRP_MAX_EXPORT_BATCH_SIZE`).
pub const MAX_LOGS_PER_EXPORT: usize = 512;

/// The program, for resource attributes.
#[derive(Clone, Copy, Debug)]
pub struct Service {
    /// `service.name`, e.g. `kaas-observer`.
    pub name: &'static str,
    /// `service.version`.
    pub version: &'static str,
}

/// The resource attributes sent with every export; more can be added while running.
#[derive(Clone, Debug)]
pub struct Resource {
    attributes: Arc<RwLock<Vec<(String, String)>>>,
}

impl Resource {
    fn new(service: Service) -> Self {
        let instance = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..)));
        Self {
            attributes: Arc::new(RwLock::new(vec![
                ("service.name".into(), service.name.into()),
                ("service.version".into(), service.version.into()),
                ("service.instance.id".into(), instance),
            ])),
        }
    }

    /// Sets (or replaces) an attribute, e.g. `k8s.cluster.name`.
    pub fn set(&self, key: &str, value: &str) {
        let mut attributes = self.attributes.write().unwrap_or_else(|e| e.into_inner());
        match attributes.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => value.clone_into(v),
            None => attributes.push((key.to_owned(), value.to_owned())),
        }
    }

    fn to_otlp(&self) -> OtlpResource {
        let attributes = self.attributes.read().unwrap_or_else(|e| e.into_inner());
        OtlpResource {
            attributes: attributes
                .iter()
                .map(|(k, v)| string_attribute(k, v))
                .collect(),
            ..OtlpResource::default()
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabel {
    signal: &'static str,
}

/// The exporter's own metrics.
#[derive(Clone, Debug, Default)]
struct ExportStats {
    failures: Family<SignalLabel, Counter>,
    spans_dropped: Counter,
    logs_dropped: Counter,
}

impl ExportStats {
    fn failure(&self, signal: Signal) -> Counter {
        self.failures
            .get_or_create(&SignalLabel {
                signal: signal.as_str(),
            })
            .clone()
    }
}

/// The process's self-telemetry: made from the flags in `main`, which installs
/// logging with it; the library then registers its metrics and starts the exporter.
#[derive(Debug)]
pub struct SelfTelemetry {
    settings: Option<OtlpSettings>,
    service: Service,
    resource: Resource,
    stats: ExportStats,
    layer: Option<SpanLayer>,
    queue: Option<mpsc::Receiver<OtlpSpan>>,
    log_layer: Option<LogLayer>,
    log_queue: Option<mpsc::Receiver<LogRecord>>,
    start_unix_nano: u64,
}

impl SelfTelemetry {
    /// Validates the flags; no file or network access yet.
    pub fn new(flags: &OtlpFlags, service: Service) -> Result<Self, SettingsError> {
        let settings = flags.validate()?;
        let stats = ExportStats::default();
        let (layer, queue) = match &settings {
            Some(_) => {
                let (sender, receiver) = mpsc::channel(SPAN_QUEUE_CAPACITY);
                (
                    Some(SpanLayer::new(sender, stats.spans_dropped.clone())),
                    Some(receiver),
                )
            }
            None => (None, None),
        };
        let (log_layer, log_queue) = match &settings {
            Some(_) => {
                let (sender, receiver) = mpsc::channel(LOG_QUEUE_CAPACITY);
                (
                    Some(LogLayer::new(sender, stats.logs_dropped.clone())),
                    Some(receiver),
                )
            }
            None => (None, None),
        };
        Ok(Self {
            settings,
            service,
            resource: Resource::new(service),
            stats,
            layer,
            queue,
            log_layer,
            log_queue,
            start_unix_nano: unix_nano(SystemTime::now()),
        })
    }

    /// Self-telemetry off: `/metrics` only.
    pub fn disabled(service: Service) -> Self {
        Self {
            settings: None,
            service,
            resource: Resource::new(service),
            stats: ExportStats::default(),
            layer: None,
            queue: None,
            log_layer: None,
            log_queue: None,
            start_unix_nano: unix_nano(SystemTime::now()),
        }
    }

    /// Whether metrics, spans and logs are pushed.
    pub fn enabled(&self) -> bool {
        self.settings.is_some()
    }

    /// The resource attributes, to add to while running.
    pub fn resource(&self) -> Resource {
        self.resource.clone()
    }

    /// Installs the process's tracing subscriber: human-readable logs on stderr,
    /// filtered by `RUST_LOG` (default `info`), plus the span and log layers when OTLP
    /// is on. Colours only on a terminal: under systemd, in a container or in a file,
    /// escape codes would end up in every log line.
    /// The span layer has its own filter, so the log level never hides spans; the log
    /// layer has the stderr filter, so it exports what stderr shows.
    pub fn init_logging(&mut self) {
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(log_filter());
        tracing_subscriber::registry()
            .with(logs)
            .with(self.layer.take().map(SpanLayer::filtered))
            .with(
                self.log_layer
                    .take()
                    .map(|layer| layer.with_filter(log_filter())),
            )
            .init();
    }

    /// Registers the exporter's own metrics (only when OTLP is on).
    pub fn register(&self, registry: &mut Registry) {
        if !self.enabled() {
            return;
        }
        registry.register(
            "kaas_self_telemetry_export_failures",
            "OTLP exports of the process's own metrics or spans that failed, by signal.",
            self.stats.failures.clone(),
        );
        registry.register(
            "kaas_self_telemetry_spans_dropped",
            "Finished spans dropped because the export queue was full.",
            self.stats.spans_dropped.clone(),
        );
        registry.register(
            "kaas_self_telemetry_logs_dropped",
            "Log records dropped because the export queue was full.",
            self.stats.logs_dropped.clone(),
        );
    }

    /// Starts pushing `registry` and the queued spans; nothing when OTLP is off.
    /// Fails only on unreadable TLS files; an unreachable receiver is not an error.
    pub fn start(&mut self, registry: Arc<Registry>) -> Result<(), BuildError> {
        let Some(settings) = &self.settings else {
            return Ok(());
        };
        let client = OtlpClient::new(settings)?;
        let scope = InstrumentationScope {
            name: self.service.name.to_owned(),
            version: self.service.version.to_owned(),
            ..InstrumentationScope::default()
        };
        tracing::info!(
            endpoint = %settings.endpoint,
            protocol = ?settings.protocol,
            interval = ?settings.push_interval,
            "pushing own metrics, spans and logs over OTLP"
        );
        tokio::spawn(push_metrics(
            client.clone(),
            registry,
            self.resource.clone(),
            scope.clone(),
            settings.push_interval,
            self.stats.failure(Signal::Metrics),
            self.start_unix_nano,
        ));
        if let Some(queue) = self.queue.take() {
            tokio::spawn(push_spans(
                client.clone(),
                queue,
                self.resource.clone(),
                scope.clone(),
                settings.push_interval,
                self.stats.failure(Signal::Traces),
            ));
        }
        if let Some(queue) = self.log_queue.take() {
            tokio::spawn(push_logs(
                client,
                queue,
                self.resource.clone(),
                scope,
                settings.push_interval,
                self.stats.failure(Signal::Logs),
            ));
        }
        Ok(())
    }
}

/// Logs export failures at most once per interval and signal, and the recovery.
struct FailureLog {
    signal: Signal,
    interval: Duration,
    last_warning: Option<Instant>,
    failing: bool,
}

impl FailureLog {
    fn new(signal: Signal, interval: Duration) -> Self {
        Self {
            signal,
            interval,
            last_warning: None,
            failing: false,
        }
    }

    /// Counts nothing (the caller does); warns unless it warned within the interval.
    /// Returns whether it warned.
    fn failed(&mut self, error: &transport::ExportError) -> bool {
        self.failing = true;
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= self.interval);
        if due {
            self.last_warning = Some(Instant::now());
            tracing::warn!(signal = self.signal.as_str(), %error, "cannot export own telemetry over OTLP");
        }
        due
    }

    /// Logs the recovery once; the next failure warns at once.
    fn succeeded(&mut self) {
        if std::mem::take(&mut self.failing) {
            self.last_warning = None;
            tracing::info!(
                signal = self.signal.as_str(),
                "exporting own telemetry over OTLP again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_warn_once_per_interval_and_again_after_a_recovery() {
        let mut log = FailureLog::new(Signal::Traces, Duration::from_secs(3600));
        let error = transport::ExportError("connection refused".into());
        assert!(log.failed(&error));
        assert!(
            !log.failed(&error),
            "within the interval: no second warning"
        );
        assert!(!log.failed(&error));
        log.succeeded();
        assert!(log.failed(&error), "a new outage warns at once");
        let mut quick = FailureLog::new(Signal::Metrics, Duration::ZERO);
        assert!(quick.failed(&error) && quick.failed(&error));
    }

    #[test]
    fn the_resource_names_the_service_and_takes_later_attributes() {
        let telemetry = SelfTelemetry::disabled(Service {
            name: "kaas-test",
            version: "1.0",
        });
        let resource = telemetry.resource();
        resource.set("k8s.cluster.name", "c1");
        resource.set("k8s.cluster.name", "c2");
        let attributes: Vec<_> = telemetry
            .resource
            .to_otlp()
            .attributes
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(
            attributes,
            [
                "service.name",
                "service.version",
                "service.instance.id",
                "k8s.cluster.name"
            ]
        );
        let value = telemetry.resource.to_otlp().attributes[3].value.clone();
        assert_eq!(
            value.and_then(|v| v.value),
            Some(any_value::Value::StringValue("c2".into()))
        );
        let mut registry = Registry::default();
        telemetry.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            !text.contains("kaas_self_telemetry"),
            "no exporter metrics without an endpoint"
        );
    }
}

async fn push_metrics(
    client: OtlpClient,
    registry: Arc<Registry>,
    resource: Resource,
    scope: InstrumentationScope,
    interval: Duration,
    failures: Counter,
    start_unix_nano: u64,
) {
    let mut log = FailureLog::new(Signal::Metrics, interval);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now = unix_nano(SystemTime::now());
        let metrics = match metrics::registry_to_metrics(&registry, start_unix_nano, now) {
            Ok(metrics) => metrics,
            Err(error) => {
                tracing::error!(%error, "cannot convert own metrics to OTLP");
                continue;
            }
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource.to_otlp()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope.clone()),
                    metrics,
                }],
            }],
        };
        match client.export_metrics(request).await {
            Ok(()) => log.succeeded(),
            Err(error) => {
                failures.inc();
                log.failed(&error);
            }
        }
    }
}

async fn push_spans(
    client: OtlpClient,
    mut queue: mpsc::Receiver<OtlpSpan>,
    resource: Resource,
    scope: InstrumentationScope,
    interval: Duration,
    failures: Counter,
) {
    let mut log = FailureLog::new(Signal::Traces, interval);
    while let Some(batch) = next_batch(&mut queue, MAX_SPANS_PER_EXPORT, interval).await {
        if batch.is_empty() {
            continue;
        }
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.to_otlp()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans: batch,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        match client.export_traces(request).await {
            Ok(()) => log.succeeded(),
            Err(error) => {
                failures.inc();
                log.failed(&error);
            }
        }
    }
}

async fn push_logs(
    client: OtlpClient,
    mut queue: mpsc::Receiver<LogRecord>,
    resource: Resource,
    scope: InstrumentationScope,
    interval: Duration,
    failures: Counter,
) {
    let mut log = FailureLog::new(Signal::Logs, interval);
    while let Some(batch) = next_batch(&mut queue, MAX_LOGS_PER_EXPORT, interval).await {
        if batch.is_empty() {
            continue;
        }
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource.to_otlp()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope.clone()),
                    log_records: batch,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        match client.export_logs(request).await {
            Ok(()) => log.succeeded(),
            Err(error) => {
                failures.inc();
                log.failed(&error);
            }
        }
    }
}

/// The next batch from `queue`: up to `max` items, or what arrived within `interval`
/// (possibly none); `None` once the queue is closed and drained.
async fn next_batch<T>(
    queue: &mut mpsc::Receiver<T>,
    max: usize,
    interval: Duration,
) -> Option<Vec<T>> {
    let mut batch = Vec::with_capacity(max);
    let deadline = tokio::time::sleep(interval);
    tokio::pin!(deadline);
    while batch.len() < max {
        let room = max - batch.len();
        tokio::select! {
            received = queue.recv_many(&mut batch, room) => {
                if received == 0 {
                    return (!batch.is_empty()).then_some(batch);
                }
            }
            () = &mut deadline => break,
        }
    }
    Some(batch)
}

/// The filter of logged events: `RUST_LOG`, `info` by default.
fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

fn unix_nano(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A string attribute.
pub(crate) fn string_attribute(key: &str, value: &str) -> KeyValue {
    any_attribute::key_value(key, any_attribute::Scalar::Str(value))
}

/// Attributes of any scalar type.
pub(crate) mod any_attribute {
    use super::{AnyValue, KeyValue, any_value};

    /// A scalar attribute value.
    pub(crate) enum Scalar<'a> {
        Str(&'a str),
        Int(i64),
        Double(f64),
        Bool(bool),
    }

    /// The OTLP key-value.
    pub(crate) fn key_value(key: &str, value: Scalar<'_>) -> KeyValue {
        let value = match value {
            Scalar::Str(s) => any_value::Value::StringValue(s.to_owned()),
            Scalar::Int(i) => any_value::Value::IntValue(i),
            Scalar::Double(d) => any_value::Value::DoubleValue(d),
            Scalar::Bool(b) => any_value::Value::BoolValue(b),
        };
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }
}
