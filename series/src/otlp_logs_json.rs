//! OTLP logs as OTLP/JSON (`ExportLogsServiceRequest`, the OTLP/HTTP `application/json`
//! encoding), decoded under the same [`PushLimits`] as the protobuf decoder
//! ([`crate::otlp_logs`]) by the decoder every signal shares (`otlp_json`,
//! where the limits and the encoding rules are described): this module adds the logs'
//! own messages, with `severityNumber` read as an integer or by its protobuf name.

use kaas_proto::otlp::{ExportLogsServiceRequest, LogRecord, ResourceLogs, ScopeLogs};

use crate::otlp_json::{self, json_messages};
use crate::{DecodeError, PushLimits};

/// Protobuf's names of `SeverityNumber`, by value.
const SEVERITY_NAMES: &[&str] = &[
    "SEVERITY_NUMBER_UNSPECIFIED",
    "SEVERITY_NUMBER_TRACE",
    "SEVERITY_NUMBER_TRACE2",
    "SEVERITY_NUMBER_TRACE3",
    "SEVERITY_NUMBER_TRACE4",
    "SEVERITY_NUMBER_DEBUG",
    "SEVERITY_NUMBER_DEBUG2",
    "SEVERITY_NUMBER_DEBUG3",
    "SEVERITY_NUMBER_DEBUG4",
    "SEVERITY_NUMBER_INFO",
    "SEVERITY_NUMBER_INFO2",
    "SEVERITY_NUMBER_INFO3",
    "SEVERITY_NUMBER_INFO4",
    "SEVERITY_NUMBER_WARN",
    "SEVERITY_NUMBER_WARN2",
    "SEVERITY_NUMBER_WARN3",
    "SEVERITY_NUMBER_WARN4",
    "SEVERITY_NUMBER_ERROR",
    "SEVERITY_NUMBER_ERROR2",
    "SEVERITY_NUMBER_ERROR3",
    "SEVERITY_NUMBER_ERROR4",
    "SEVERITY_NUMBER_FATAL",
    "SEVERITY_NUMBER_FATAL2",
    "SEVERITY_NUMBER_FATAL3",
    "SEVERITY_NUMBER_FATAL4",
];

/// Decodes an OTLP/JSON logs body (already decompressed) under `limits`.
pub fn decode(raw: &[u8], limits: &PushLimits) -> Result<ExportLogsServiceRequest, DecodeError> {
    otlp_json::decode(raw, limits, "logs")
}

json_messages! {
    ExportLogsServiceRequest {
        "resourceLogs" => resource_logs: repeated,
    }
    ResourceLogs {
        "resource" => resource: optional,
        "scopeLogs" => scope_logs: repeated,
        "schemaUrl" => schema_url: string,
    }
    ScopeLogs {
        "scope" => scope: optional,
        "logRecords" => log_records: repeated,
        "schemaUrl" => schema_url: string,
    }
    LogRecord {
        "timeUnixNano" => time_unix_nano: integer,
        "observedTimeUnixNano" => observed_time_unix_nano: integer,
        "severityNumber" => severity_number: integer(SEVERITY_NAMES),
        "severityText" => severity_text: string,
        "body" => body: optional,
        "attributes" => attributes: repeated,
        "droppedAttributesCount" => dropped_attributes_count: integer,
        "flags" => flags: integer,
        "traceId" => trace_id: id(16),
        "spanId" => span_id: id(8),
        "eventName" => event_name: string,
    }
}

#[cfg(test)]
mod tests;
