//! The `MetricPipeline` CustomResourceDefinition, generated from the Rust types so the
//! CRD, the API and the agent can never disagree. `deploy/crds/` holds the committed
//! copy; `tests/crd_is_current.rs` fails when it drifts. Regenerate with
//! `cargo run -p kaas-pipeline --bin crdgen > deploy/crds/metricpipelines.telemetry.kaas-observer.io.yaml`.

use kube::CustomResourceExt;

use crate::pipeline::MetricPipeline;

/// File name of the committed CRD under `deploy/crds/`.
pub const CRD_FILE_NAME: &str = "metricpipelines.telemetry.kaas-observer.io.yaml";

/// The CRD as YAML, with a header saying where it comes from.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&MetricPipeline::crd())?;
    Ok(format!(
        "# Generated from the Rust types in pipeline/src by `cargo run -p kaas-pipeline --bin crdgen`.\n\
         # Do not edit: change the types and regenerate.\n{body}"
    ))
}
