//! The `MetricPipeline`, `LogPipeline`, `TracePipeline`, `PipelineTemplate` and
//! `PipelineInstance` CustomResourceDefinitions,
//! generated from the Rust types so the CRDs, the API and the agent can never disagree.
//! `deploy/crds/` holds the committed copies; `tests/crd_is_current.rs` fails when one
//! drifts. Regenerate all of them with
//! `KAAS_UPDATE_GENERATED=1 cargo test -p kaas-pipeline --test crd_is_current`, or one
//! with `cargo run -p kaas-pipeline --bin crdgen [-- <Kind>] >
//! deploy/crds/<plural>.telemetry.kaas-observer.io.yaml`.

use kube::CustomResourceExt;

use crate::logs::LogPipeline;
use crate::pipeline::MetricPipeline;
use crate::templates::{PipelineInstance, PipelineTemplate};
use crate::traces::TracePipeline;

/// File name of the committed `MetricPipeline` CRD under `deploy/crds/`.
pub const CRD_FILE_NAME: &str = "metricpipelines.telemetry.kaas-observer.io.yaml";
/// File name of the committed `LogPipeline` CRD under `deploy/crds/`.
pub const LOG_CRD_FILE_NAME: &str = "logpipelines.telemetry.kaas-observer.io.yaml";
/// File name of the committed `TracePipeline` CRD under `deploy/crds/`.
pub const TRACE_CRD_FILE_NAME: &str = "tracepipelines.telemetry.kaas-observer.io.yaml";

/// The `MetricPipeline` CRD as YAML, with a header saying where it comes from.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    with_header(serde_yaml::to_string(&MetricPipeline::crd())?, "")
}

/// The `LogPipeline` CRD as YAML, with a header saying where it comes from.
pub fn log_crd_yaml() -> Result<String, serde_yaml::Error> {
    with_header(
        serde_yaml::to_string(&LogPipeline::crd())?,
        " -- LogPipeline",
    )
}

/// The `TracePipeline` CRD as YAML, with a header saying where it comes from.
pub fn trace_crd_yaml() -> Result<String, serde_yaml::Error> {
    with_header(
        serde_yaml::to_string(&TracePipeline::crd())?,
        " -- TracePipeline",
    )
}

/// File name of the committed `PipelineTemplate` CRD under `deploy/crds/`.
pub const TEMPLATE_CRD_FILE_NAME: &str = "pipelinetemplates.telemetry.kaas-observer.io.yaml";
/// File name of the committed `PipelineInstance` CRD under `deploy/crds/`.
pub const INSTANCE_CRD_FILE_NAME: &str = "pipelineinstances.telemetry.kaas-observer.io.yaml";

/// The `PipelineTemplate` CRD as YAML, with a header saying where it comes from.
pub fn template_crd_yaml() -> Result<String, serde_yaml::Error> {
    with_header(
        serde_yaml::to_string(&PipelineTemplate::crd())?,
        " -- PipelineTemplate",
    )
}

/// The `PipelineInstance` CRD as YAML, with a header saying where it comes from.
pub fn instance_crd_yaml() -> Result<String, serde_yaml::Error> {
    with_header(
        serde_yaml::to_string(&PipelineInstance::crd())?,
        " -- PipelineInstance",
    )
}

fn with_header(body: String, arguments: &str) -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "# Generated from the Rust types in pipeline/src by `cargo run -p kaas-pipeline --bin crdgen{arguments}`.\n\
         # Do not edit: change the types and regenerate.\n{body}"
    ))
}
