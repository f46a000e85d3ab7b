//! The topology of a pipeline, the same for every signal: the [`inlet`] where records
//! enter the pipeline's disk buffer, the [`sender`] that drains the buffer to the
//! pipeline's exporter with retries, and the counters of the pipeline's health
//! ([`stats`]). Pipelines share nothing on this path, so one dead backend never slows
//! another pipeline. What differs between signals is said by
//! [`crate::record::signal`].

pub mod inlet;
pub mod sender;
pub mod stats;
