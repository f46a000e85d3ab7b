//! The conversion of read spans to OTLP, rule by rule as the Collector's translator
//! applies them (the module's documentation has the table).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use kaas_proto::otlp::{
    AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans,
    ScopeSpans, Span, SpanKind, Status, StatusCode, any_value::Value,
};

use super::{
    LIBRARY_NAME, LIBRARY_VERSION, NO_SERVICE_NAME, SERVICE_NAME_SOURCE, START_TIME_ABSENT,
    ZipkinSpan,
};

/// Tags that describe the resource, not the span (the Collector's `nonSpanAttributes`:
/// semantic conventions 1.6.1's resource attributes plus the OpenCensus and scope
/// keys), sorted for binary search.
pub(super) const RESOURCE_TAGS: &[&str] = &[
    "aws.ecs.cluster.arn",
    "aws.ecs.container.arn",
    "aws.ecs.launchtype",
    "aws.ecs.task.arn",
    "aws.ecs.task.family",
    "aws.ecs.task.revision",
    "aws.eks.cluster.arn",
    "aws.log.group.arns",
    "aws.log.group.names",
    "aws.log.stream.arns",
    "aws.log.stream.names",
    "cloud.account.id",
    "cloud.availability_zone",
    "cloud.platform",
    "cloud.provider",
    "cloud.region",
    "container.id",
    "container.image.name",
    "container.image.tag",
    "container.name",
    "container.runtime",
    "deployment.environment",
    "device.id",
    "device.model.identifier",
    "device.model.name",
    "faas.id",
    "faas.instance",
    "faas.max_memory",
    "faas.name",
    "faas.version",
    "host.arch",
    "host.id",
    "host.image.id",
    "host.image.name",
    "host.image.version",
    "host.name",
    "host.type",
    "k8s.cluster.name",
    "k8s.container.name",
    "k8s.cronjob.name",
    "k8s.cronjob.uid",
    "k8s.daemonset.name",
    "k8s.daemonset.uid",
    "k8s.deployment.name",
    "k8s.deployment.uid",
    "k8s.job.name",
    "k8s.job.uid",
    "k8s.namespace.name",
    "k8s.node.name",
    "k8s.node.uid",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.replicaset.name",
    "k8s.replicaset.uid",
    "k8s.statefulset.name",
    "k8s.statefulset.uid",
    "opencensus.exporterversion",
    "opencensus.resourcetype",
    "opencensus.starttime",
    "os.description",
    "os.name",
    "os.type",
    "os.version",
    "otel.library.name",
    "otel.library.version",
    "otlp.service.name.source",
    "process.command",
    "process.command_args",
    "process.command_line",
    "process.executable.name",
    "process.executable.path",
    "process.owner",
    "process.pid",
    "process.runtime.description",
    "process.runtime.name",
    "process.runtime.version",
    "service.instance.id",
    "service.name",
    "service.namespace",
    "service.version",
    "telemetry.auto.version",
    "telemetry.sdk.language",
    "telemetry.sdk.name",
    "telemetry.sdk.version",
    "webengine.description",
    "webengine.name",
    "webengine.version",
];

pub(super) fn is_resource_tag(key: &str) -> bool {
    RESOURCE_TAGS.binary_search(&key).is_ok()
}

/// The OTLP request of the spans: one `ResourceSpans` per local service and one
/// `ScopeSpans` per instrumentation library, both sorted by name as the Collector sorts
/// them; spans in the order they came.
pub(super) fn to_otlp(spans: Vec<ZipkinSpan>) -> ExportTraceServiceRequest {
    let mut services: BTreeMap<String, (Resource, BTreeMap<String, ScopeSpans>)> = BTreeMap::new();
    for mut span in spans {
        let mut tags = std::mem::take(&mut span.tags);
        let service = span
            .local
            .as_ref()
            .map(|local| local.service_name.as_str())
            .filter(|name| !name.is_empty())
            .unwrap_or(NO_SERVICE_NAME)
            .to_owned();
        let library = tags.get(LIBRARY_NAME).cloned().unwrap_or_default();
        let (_, scopes) = match services.entry(service) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let resource = resource_of(entry.key(), &mut tags);
                entry.insert((resource, BTreeMap::new()))
            }
        };
        let scope = scopes
            .entry(library)
            .or_insert_with_key(|library| ScopeSpans {
                scope: scope_of(library, &mut tags),
                ..ScopeSpans::default()
            });
        scope.spans.push(span_of(span, tags));
    }
    ExportTraceServiceRequest {
        resource_spans: services
            .into_values()
            .map(|(resource, scopes)| ResourceSpans {
                resource: Some(resource),
                scope_spans: scopes.into_values().collect(),
                ..ResourceSpans::default()
            })
            .collect(),
    }
}

/// The resource of a service, from the tags of its first span (which loses them).
fn resource_of(service: &str, tags: &mut BTreeMap<String, String>) -> Resource {
    let mut attributes = Vec::new();
    if service != NO_SERVICE_NAME {
        let key = tags
            .remove(SERVICE_NAME_SOURCE)
            .filter(|source| !source.is_empty())
            .unwrap_or_else(|| "service.name".to_owned());
        put(
            &mut attributes,
            &key,
            Value::StringValue(service.to_owned()),
        );
        for key in RESOURCE_TAGS {
            if *key == LIBRARY_NAME || *key == LIBRARY_VERSION {
                continue;
            }
            if let Some(value) = tags.remove(*key) {
                put(&mut attributes, key, Value::StringValue(value));
            }
        }
    }
    Resource {
        attributes,
        ..Resource::default()
    }
}

/// The scope of a library, from the tags of its first span (which loses them).
fn scope_of(library: &str, tags: &mut BTreeMap<String, String>) -> Option<InstrumentationScope> {
    if library.is_empty() {
        return None;
    }
    Some(InstrumentationScope {
        name: tags.remove(LIBRARY_NAME).unwrap_or_default(),
        version: tags.remove(LIBRARY_VERSION).unwrap_or_default(),
        ..InstrumentationScope::default()
    })
}

fn span_of(span: ZipkinSpan, mut tags: BTreeMap<String, String>) -> Span {
    let trace_state = tags.remove("w3c.tracestate").unwrap_or_default();
    let kind = match span.kind {
        Some(kind) => kind,
        None => match tags.remove("span.kind").as_deref() {
            Some("internal") => SpanKind::Internal,
            _ => SpanKind::Unspecified,
        },
    };
    let status = status_of(&mut tags);
    let mut attributes: Vec<KeyValue> = tags
        .into_iter()
        .filter(|(key, _)| !is_resource_tag(key))
        .map(|(key, value)| key_value(key, Value::StringValue(value)))
        .collect();
    if let Some(local) = &span.local {
        for address in [local.ipv4, local.ipv6].into_iter().flatten() {
            put(
                &mut attributes,
                "net.host.ip",
                Value::StringValue(address.to_string()),
            );
        }
        if local.port > 0 {
            put(
                &mut attributes,
                "net.host.port",
                Value::IntValue(local.port.into()),
            );
        }
    }
    if let Some(remote) = &span.remote {
        if !remote.service_name.is_empty() {
            put(
                &mut attributes,
                "peer.service",
                Value::StringValue(remote.service_name.clone()),
            );
        }
        for address in [remote.ipv4, remote.ipv6].into_iter().flatten() {
            put(
                &mut attributes,
                "net.peer.ip",
                Value::StringValue(address.to_string()),
            );
        }
        if remote.port > 0 {
            put(
                &mut attributes,
                "net.peer.port",
                Value::IntValue(remote.port.into()),
            );
        }
    }
    if span.start_absent {
        put(&mut attributes, START_TIME_ABSENT, Value::BoolValue(true));
    }
    Span {
        trace_id: span.trace_id.to_vec(),
        span_id: span.id.to_vec(),
        trace_state,
        parent_span_id: span.parent_id.map(|id| id.to_vec()).unwrap_or_default(),
        flags: span.flags,
        name: span.name,
        kind: kind as i32,
        start_time_unix_nano: span.start,
        end_time_unix_nano: span.end,
        attributes,
        events: span.events,
        links: span.links,
        status,
        ..Span::default()
    }
}

/// The status from the tags `otel.status_code`, `otel.status_description` and
/// `error`, which it removes (`error` only when it is `"true"`); `None` when unset.
fn status_of(tags: &mut BTreeMap<String, String>) -> Option<Status> {
    let mut status = Status {
        message: String::new(),
        code: StatusCode::Unset as i32,
    };
    if let Some(code) = tags.remove("otel.status_code") {
        status.code = match code.as_str() {
            "STATUS_CODE_OK" | "Ok" | "OK" => StatusCode::Ok,
            "STATUS_CODE_ERROR" | "Error" | "ERROR" => StatusCode::Error,
            _ => StatusCode::Unset,
        } as i32;
        if let Some(message) = tags.remove("otel.status_description") {
            status.message = message;
        }
    }
    if let Some(error) = tags.get("error") {
        status.code = StatusCode::Error as i32;
        if error == "true" {
            tags.remove("error");
        }
    }
    (status.code != StatusCode::Unset as i32 || !status.message.is_empty()).then_some(status)
}

pub(super) fn key_value(key: String, value: Value) -> KeyValue {
    KeyValue {
        key,
        value: Some(AnyValue { value: Some(value) }),
    }
}

/// Sets `key` to `value`, replacing a value it has (a scan: called a fixed number of
/// times per span, over at most [`MAX_TAGS_PER_SPAN`] attributes).
fn put(attributes: &mut Vec<KeyValue>, key: &str, value: Value) {
    match attributes.iter_mut().find(|attribute| attribute.key == key) {
        Some(attribute) => attribute.value = Some(AnyValue { value: Some(value) }),
        None => attributes.push(key_value(key.to_owned(), value)),
    }
}
