//! What the push decoder targets share: tight limits that short inputs cross, and the
//! check that what a decoder accepted respects its limits.

use kaas_series::{PushLimits, Pushed};

/// Limits small enough for short inputs to cross them.
pub fn tight() -> PushLimits {
    PushLimits {
        max_body_bytes: 4096,
        max_decompressed_bytes: 8192,
        max_labels_per_series: 4,
        max_label_name_bytes: 16,
        max_label_value_bytes: 32,
        max_samples_per_request: 8,
        max_labels_per_request: 12,
        max_otlp_messages: 64,
    }
}

/// Checks what a decoder accepted against `limits`.
pub fn check(pushed: &Pushed, limits: &PushLimits) {
    assert!(pushed.samples() <= limits.max_samples_per_request);
    let mut labels = 0;
    for series in &pushed.series {
        assert!(series.labels.len() <= limits.max_labels_per_series);
        labels += series.labels.len();
        let mut previous: Option<&str> = None;
        for label in series.labels.iter() {
            assert!(label.name.len() <= limits.max_label_name_bytes);
            assert!(label.value.len() <= limits.max_label_value_bytes);
            assert!(!label.value.is_empty());
            assert!(
                previous < Some(label.name.as_str()),
                "labels not sorted and unique"
            );
            previous = Some(&label.name);
        }
    }
    assert!(labels <= limits.max_labels_per_request);
}
