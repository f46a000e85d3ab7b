//! The `node` input's plain files: lines of files matched by glob below the roots the
//! provider allows, as OTLP records. Which files may be read at all is
//! `kaas_logfiles::discover`'s decision (denied paths such as the agent's data
//! directory, the service-account token and the identity key are refused by path and
//! by inode, and symlinks out of a root are not followed); this module only shapes
//! what it read: the node and cluster as the resource, `log.file.path` on the
//! record, the observed time (plain lines carry no timestamp the agent could trust).

use kaas_proto::otlp::{KeyValue, LogRecord, Resource};

use super::resource::{NodeIdentity, body};

/// The resource of the node's plain files.
pub(super) fn file_resource(node: &NodeIdentity) -> Resource {
    Resource {
        attributes: node.attributes(),
        ..Resource::default()
    }
}

/// One line of a plain file as a record; `path` is its `log.file.path` attribute, made
/// once per file.
pub(super) fn file_record(
    record: kaas_logfiles::LogRecord,
    observed: u64,
    path: &KeyValue,
) -> LogRecord {
    LogRecord {
        observed_time_unix_nano: observed,
        body: body(record.body),
        attributes: vec![path.clone()],
        ..LogRecord::default()
    }
}
