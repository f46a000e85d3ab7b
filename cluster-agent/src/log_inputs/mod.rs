//! Where a log line goes after it is read: the agent's log inputs, which read
//! container logs, the node's journal and plain files, turn what they read into OTLP
//! log records (`kaas_proto::otlp::ResourceLogs`), and hand each batch to every
//! pipeline that takes the input, committing a read position only once every one of
//! them has it durable.
//!
//! ```text
//!  kaas_logfiles::Tailer ──► tailed ──┬─ runtime  (container resource, pod_metadata)
//!                                     └─ files    (node resource, log.file.path)
//!  kaas_journal::JournalDirectory ──► journal     (MESSAGE, PRIORITY, unit, host)
//!                │
//!                ▼  LogReader: read → ResourceLogs + ticket
//!             fanout  one reader, N LogConsumers (a pipeline's processing + inlet
//!                │    each); commit behind every BatchAck, detach a consumer that
//!                ▼    stops acknowledging onto a reader of its own
//!     processing::logs → topology::inlet → disk buffer → sender → exporter
//! ```
//!
//! - [`consumer`]: [`LogConsumer`], the [`LogBatch`] offered, the [`BatchAck`] returned;
//! - [`reader`]: [`LogReader`], what the fan-out needs of an input;
//! - [`fanout`]: [`FanOut`], the ack-gated commit and the isolation of a hung consumer
//!   (design note in the module);
//! - [`tailed`]: [`TailedLogs`], the file tailer as a reader, shaping records with
//!   [`runtime`] (container logs below `/var/log/pods`, with [`pod_metadata`] from the
//!   node's pod watch; [`RuntimeSelection`] says which of them a pipeline takes) and
//!   [`files`] (plain files by glob below allowed roots);
//! - [`journal`]: [`JournalReader`], the journal units on an allow-list, resuming from
//!   a persisted cursor;
//! - [`resource`]: the node and cluster every resource names.
//!
//! The runtime wiring builds one [`FanOut`] per reader (one per tailer setting, since
//! multiline and `startAt` are per pipeline, and one for the journal) with a consumer
//! per pipeline that takes what it reads, and calls [`FanOut::round`] every poll
//! interval on a blocking thread. A changed set of consumers is a new [`FanOut`] over
//! the same position files.

pub mod consumer;
pub mod fanout;
pub mod files;
pub mod journal;
pub mod pod_metadata;
pub mod reader;
pub mod resource;
pub mod runtime;
pub mod tailed;

pub use consumer::{BatchAck, LogBatch, LogConsumer, Outcome};
pub use fanout::{ConsumerStatus, FanOut, FanOutConfig, Round};
pub use journal::{JournalReader, JournalSettings, JournalStart};
pub use pod_metadata::PodMetadataCache;
pub use reader::{InputError, LogReader, ReadBatch};
pub use resource::NodeIdentity;
pub use runtime::{PodEnrichment, RuntimeSelection};
pub use tailed::TailedLogs;

#[cfg(test)]
mod tests {
    /// The runtime wiring runs each fan-out on a blocking thread and completes
    /// acknowledgements from the buffer's tasks.
    #[test]
    fn fan_outs_and_acknowledgements_move_between_threads() {
        fn send<T: Send>() {}
        send::<super::FanOut<super::TailedLogs>>();
        send::<super::FanOut<super::JournalReader>>();
        send::<super::BatchAck>();
    }
}
