//! What an input hands its records to: a [`LogConsumer`] per pipeline that takes the
//! input (the runtime wiring implements it with the pipeline's log processor and the
//! inlet of its disk buffer), the shared [`LogBatch`] it is offered, and the
//! [`BatchAck`] through which it reports what became of the batch.

use std::sync::Arc;
use std::sync::mpsc::Sender;

use kaas_proto::otlp::ResourceLogs;

/// The records of one read, as OTLP logs grouped by resource (one container, one
/// file, one host). Shared by every consumer of the read: a consumer that changes
/// records (processing works in place) clones what it keeps.
#[derive(Debug, Default)]
pub struct LogBatch {
    /// The records, grouped by resource.
    pub resource_logs: Vec<ResourceLogs>,
    /// How many log records `resource_logs` holds.
    pub records: usize,
}

/// What a consumer made of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything it keeps of the batch is durable in its buffer (what processing
    /// filtered out included: nothing of it needs keeping).
    Durable,
    /// Its policy dropped `records` records (a full buffer with `dropNewest`); it
    /// counted them. The input still commits: they are not read again.
    Dropped {
        /// Records dropped.
        records: u64,
    },
    /// The batch is none of its business (e.g. no namespace it reads).
    NotTaken,
}

/// Where a consumer sends the outcome of one batch; the input commits the batch's read
/// position once every consumer offered it has sent one.
///
/// Dropping it without [`BatchAck::complete`] means "not durable": the position is
/// never committed for this consumer, which, if it goes on, is detached onto its own
/// reader and offered the records again from there (see `fanout`).
#[derive(Debug)]
#[must_use = "a batch is committed only when every consumer completes its acknowledgement"]
pub struct BatchAck {
    pub(super) message: AckMessage,
    pub(super) sender: Sender<AckMessage>,
}

impl BatchAck {
    /// Reports the outcome. May be called from any thread, e.g. from the buffer's
    /// durability hook (`topology::inlet::Ack`).
    pub fn complete(self, outcome: Outcome) {
        let BatchAck {
            mut message,
            sender,
        } = self;
        message.outcome = outcome;
        // The input may be gone (stopped or restarted): then nothing waits for this.
        let _ = sender.send(message);
    }
}

/// One acknowledgement on its way back to the fan-out.
#[derive(Debug, Clone, Copy)]
pub(super) struct AckMessage {
    /// The reader lane the batch was read by.
    pub lane: u64,
    /// The batch within its lane.
    pub batch: u64,
    /// The consumer (its index in the fan-out).
    pub consumer: usize,
    /// What became of it.
    pub outcome: Outcome,
}

/// A pipeline that takes an input's records.
pub trait LogConsumer: Send + Sync {
    /// The pipeline's name (a DNS label): it names the consumer's position file while
    /// it is detached, and its counters.
    fn name(&self) -> &str;

    /// Takes a batch. Must not block (the reader serves every other consumer on the
    /// same thread): hold the batch, and complete `ack` once it is durable, dropped
    /// by policy, or not taken.
    fn offer(&self, batch: Arc<LogBatch>, ack: BatchAck);
}

/// The far end of an acknowledgement made by [`BatchAck::for_test`].
#[cfg(test)]
pub(crate) struct TestAckReceiver(std::sync::mpsc::Receiver<AckMessage>);

#[cfg(test)]
impl TestAckReceiver {
    /// The outcome reported so far; `None` while uncompleted or once dropped without
    /// one.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        self.0.try_recv().ok().map(|message| message.outcome)
    }
}

#[cfg(test)]
impl BatchAck {
    /// An acknowledgement outside any fan-out, for consumers' unit tests.
    pub(crate) fn for_test() -> (Self, TestAckReceiver) {
        let (sender, receiver) = std::sync::mpsc::channel();
        let ack = Self {
            message: AckMessage {
                lane: 0,
                batch: 0,
                consumer: 0,
                outcome: Outcome::NotTaken,
            },
            sender,
        };
        (ack, TestAckReceiver(receiver))
    }
}
