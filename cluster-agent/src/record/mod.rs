//! The record format: what the data path carries from a receiver through the buffer to
//! an exporter. A leaf: everyone may use it, it uses nothing of the agent but
//! [`crate::labels`].
//!
//! - [`signal`]: what a signal must say about its records so that one inlet, buffer
//!   and sender serve every signal: how a record's payload splits into frames and
//!   joins into requests (frame encoding), and which frames must stay in order
//!   together (sharding key).
//! - [`logs`]: the log record ([`logs::LogBatch`], OTLP `ResourceLogs`) and the log
//!   signal.
//! - [`traces`]: the trace record ([`traces::TraceBatch`], OTLP `ResourceSpans`) and
//!   the trace signal.
//! - [`otlp`]: what the log and trace signals share: their framing and request type.
//! - [`metrics`]: the metric record ([`metrics::Batch`], a remote-write 1.0
//!   `WriteRequest`) and the metric signal.
//! - [`wire`]: remote-write 1.0 encoded by hand for the hot path, and split into frames
//!   without decoding.
//! - [`shared_labels`]: the per-target dictionary of encoded labels the scrapers'
//!   series caches refer to.

pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod shared_labels;
pub mod signal;
pub mod traces;
pub mod wire;
