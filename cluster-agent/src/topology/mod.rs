//! The topology of a pipeline, the same for every signal: the [`inlet`] where records
//! enter the pipeline's disk buffer, the [`sender`] that drains the buffer to the
//! pipeline's exporter with retries; both count what happens to the pipeline's data
//! through the pipeline events of [`crate::internal_events`], its health. Pipelines
//! share nothing on this path, so one dead backend never slows another pipeline. What differs between
//! signals is said by [`crate::record::signal`].

pub mod inlet;
pub mod sender;
