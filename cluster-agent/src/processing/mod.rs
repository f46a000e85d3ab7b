//! What happens to data between collection and the buffer, per pipeline: for
//! samples, Prometheus metric relabeling ([`relabel`]), then the keep/drop filter by
//! metric name ([`process_sample`]); for log records, [`logs`] (JSON bodies, severity,
//! trace context, filters, attribute actions, de-dotting, size cap, rate limits); for
//! spans, [`traces`] (consistent probability sampling, dropSpans, the span rate limit,
//! attribute set/delete/hash).

pub mod logs;
pub mod relabel;
pub mod traces;

use kaas_pipeline::processors::ValidatedProcessors;

use crate::labels::{Labels, METRIC_NAME};

/// Runs a sample's labels through the pipeline's metric relabeling and name filter;
/// `None` when the sample is dropped.
pub fn process_sample(labels: &Labels, processors: &ValidatedProcessors) -> Option<Labels> {
    let labels = relabel::process(labels, &processors.metric_relabel)?;
    let name = labels.get(METRIC_NAME);
    if !processors.keep_metrics.is_empty()
        && !processors.keep_metrics.iter().any(|r| r.is_match(name))
    {
        return None;
    }
    if processors.drop_metrics.iter().any(|r| r.is_match(name)) {
        return None;
    }
    Some(labels)
}
