//! What a scraped series is labelled with: the exposed labels merged with the
//! target's (Prometheus' `mutateSampleLabels`), checked against the label limits, and
//! completed with the external labels; and the labels of the report series.

use super::config::ScrapeConfig;
use super::target::Target;
use crate::labels::{Labels, LabelsBuilder, METRIC_NAME};

/// Adds external labels a series lacks.
pub(super) fn with_external(labels: Labels, external: &Labels) -> Labels {
    if external.is_empty() {
        return labels;
    }
    let mut builder = LabelsBuilder::new(&labels);
    for label in external.iter() {
        if labels.get(&label.name).is_empty() {
            builder.set(&label.name, &label.value);
        }
    }
    builder.labels()
}

/// `{__name__=name}` plus the target labels, as Prometheus labels report series.
pub(super) fn report_labels(target: &Target, name: &str) -> Labels {
    let base = Labels::from_pairs([(METRIC_NAME, name)]);
    let mut builder = LabelsBuilder::new(&base);
    for label in target.public.iter() {
        builder.set(&format!("exported_{}", label.name), base.get(&label.name));
        builder.set(&label.name, &label.value);
    }
    builder.labels()
}

/// Prometheus' `mutateSampleLabels` without the relabeling step.
pub(super) fn merge_target_labels(exposed: &Labels, target: &Target, honor_labels: bool) -> Labels {
    {
        let mut builder = LabelsBuilder::new(exposed);
        if honor_labels {
            for label in target.public.iter() {
                if exposed.get(&label.name).is_empty() {
                    builder.set(&label.name, &label.value);
                }
            }
            return builder.labels();
        }
        let mut conflicts = Vec::new();
        for label in target.public.iter() {
            let existing = exposed.get(&label.name);
            if !existing.is_empty() {
                conflicts.push((label.name.clone(), existing.to_owned()));
            }
            builder.set(&label.name, &label.value);
        }
        conflicts.sort_by_key(|(name, _)| name.len());
        for (name, value) in conflicts {
            let mut new_name = name;
            loop {
                new_name = format!("exported_{new_name}");
                if builder.get(&new_name).is_empty() {
                    builder.set(&new_name, &value);
                    break;
                }
            }
        }
        builder.labels()
    }
}

pub(super) fn check_label_limits(labels: &Labels, config: &ScrapeConfig) -> Result<(), String> {
    {
        let name = labels.get(METRIC_NAME);
        if labels.len() > config.label_limit.get() as usize {
            return Err(format!(
                "label_limit exceeded (metric: {name:.50}, number of labels: {}, limit: {})",
                labels.len(),
                config.label_limit
            ));
        }
        for label in labels.iter() {
            if label.name.len() > config.label_name_length_limit.get() as usize {
                return Err(format!(
                    "label_name_length_limit exceeded (metric: {name:.50}, label name: {:.50}, length: {}, limit: {})",
                    label.name,
                    label.name.len(),
                    config.label_name_length_limit
                ));
            }
            if label.value.len() > config.label_value_length_limit.get() as usize {
                return Err(format!(
                    "label_value_length_limit exceeded (metric: {name:.50}, label name: {:.50}, value: {:.50}, length: {}, limit: {})",
                    label.name,
                    label.value,
                    label.value.len(),
                    config.label_value_length_limit
                ));
            }
        }
        Ok(())
    }
}
