//! What happens to samples between collection and the buffer: Prometheus relabeling
//! ([`relabel`]), applied per pipeline.

pub mod relabel;
