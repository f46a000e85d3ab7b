//! One pipeline at run time: its disk buffer, the sender that drains it to the
//! pipeline's exporter, and the counters that become health reports and metrics.
//! Pipelines share nothing on the delivery path, so one dead backend never slows
//! another pipeline.

pub mod inlet;
pub mod kubelet;
pub mod runtime;
pub mod sender;
pub mod stats;
pub mod targets;
