//! What a signal (metrics, logs, traces) tells the data path about its
//! records, so that one inlet, one buffer and one sender serve every signal:
//!
//! - [`Payload`]: how a record a receiver built becomes the bytes the buffer stores;
//! - [`FrameEncoding`]: how a stored payload splits into [`Frame`]s and how frames
//!   join into the requests an exporter sends;
//! - [`ShardingKey`]: which frames must stay together and in order (they go to the
//!   same shard of the sender).
//!
//! A [`Signal`] is all three. The sender knows nothing else about what it carries.

/// A record as a receiver hands it to the inlet.
pub trait Payload {
    /// The payload the buffer stores, uncompressed (the inlet compresses it).
    fn payload(&self) -> Vec<u8>;
    /// How many items (samples, log lines, spans) it holds.
    fn items(&self) -> usize;
    /// Its oldest item, Unix milliseconds, if it knows.
    fn oldest_ms(&self) -> Option<i64>;
}

/// One frame of an uncompressed payload, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Items that travel in the shard of `key` ([`ShardingKey::shard_key`]).
    Items {
        /// The frame's bytes, as [`FrameEncoding::request`] joins them.
        body: &'a [u8],
        /// What identifies the frame's stream of items (a series' labels, a log
        /// file's path).
        key: &'a [u8],
        /// How many items it holds.
        items: usize,
    },
    /// Context every request of a round carries once (a metric family's metadata).
    Shared(&'a [u8]),
}

/// Why a payload does not split into frames.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FrameError(pub String);

/// How a signal's payloads split into frames and frames join into requests.
pub trait FrameEncoding {
    /// What the exporter of the signal sends: one request.
    type Request: Send + Sync + 'static;

    /// Splits an uncompressed payload into its frames.
    fn frames(payload: &[u8]) -> Result<Vec<Frame<'_>>, FrameError>;

    /// Joins item frames (with the round's shared frames) into one request of `items`
    /// items, the oldest of them from `oldest_ms`.
    fn request(frames: &[&[u8]], shared: &[&[u8]], items: u64, oldest_ms: i64) -> Self::Request;

    /// A buffered record sent as it is stored: its payload still compressed.
    fn whole_record(compressed: Vec<u8>, items: u64, oldest_ms: i64) -> Self::Request;

    /// Items in a request.
    fn items(request: &Self::Request) -> u64;

    /// The oldest item of a request, Unix milliseconds.
    fn oldest_ms(request: &Self::Request) -> i64;

    /// What earlier answers already decided of a request's items, for backends that
    /// answer per item; none for those that answer for a whole request.
    fn settled(_request: &Self::Request) -> Settled {
        Settled::default()
    }
}

/// The items of a request a backend answered for one by one so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Stored.
    pub stored: u64,
    /// Refused for good, and already counted as dropped where the answer was read.
    pub refused: u64,
}

impl Settled {
    /// Items of a request of `items` not settled yet: what a retry still sends.
    pub fn pending(self, items: u64) -> u64 {
        items.saturating_sub(self.stored + self.refused)
    }
}

/// Which frames stay together: frames with equal keys go to the same shard and keep
/// their order; a request is cut only between keys.
pub trait ShardingKey {
    /// The key of a frame's `key` bytes. Stable across runs and processes.
    fn shard_key(key: &[u8]) -> u64;
}

/// Everything the data path needs to know of a signal.
pub trait Signal: FrameEncoding + ShardingKey + Send + Sync + 'static {}

impl<S: FrameEncoding + ShardingKey + Send + Sync + 'static> Signal for S {}
