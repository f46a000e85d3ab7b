//! Where a scrape loop hands what it read: the narrow side of a pipeline's entry that
//! scraping sees. The pipeline implements it (its inlet buffers the request and counts
//! what it drops); the scraper knows nothing of buffers or senders.

use crate::internal_events::ErrorReason;

/// The receiver of one scrape loop's encoded samples.
pub trait ScrapeSink: Send + Sync {
    /// Takes an encoded, uncompressed remote-write `WriteRequest` holding `samples`
    /// samples, the oldest at `oldest_ms`, all of one target: `stream` names it (a
    /// hash of the target's labels, stable across restarts of its loop). A request
    /// that cannot be kept is counted and reported by the sink; the next scrape is the
    /// retry.
    fn push_encoded(&self, request: &[u8], samples: usize, oldest_ms: i64, stream: u64);

    /// Reports a problem of the pipeline that is not one target's (a kubelet
    /// certificate the agent does not trust): `reason` says why.
    fn report_error(&self, reason: ErrorReason, message: String);
}
