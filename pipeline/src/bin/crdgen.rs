//! Prints a pipeline CRD as YAML on standard output: the `MetricPipeline` CRD, or the
//! `LogPipeline`, `TracePipeline`, `PipelineTemplate` or `PipelineInstance` CRD with
//! that kind as the argument.

fn main() -> std::process::ExitCode {
    let kind = std::env::args().nth(1);
    let yaml = match kind.as_deref() {
        None | Some("MetricPipeline") => kaas_pipeline::crd::crd_yaml(),
        Some("LogPipeline") => kaas_pipeline::crd::log_crd_yaml(),
        Some("TracePipeline") => kaas_pipeline::crd::trace_crd_yaml(),
        Some("PipelineTemplate") => kaas_pipeline::crd::template_crd_yaml(),
        Some("PipelineInstance") => kaas_pipeline::crd::instance_crd_yaml(),
        Some(other) => {
            eprintln!(
                "crdgen: unknown kind {other:?}; use MetricPipeline, LogPipeline, TracePipeline, \
                 PipelineTemplate or PipelineInstance"
            );
            return std::process::ExitCode::FAILURE;
        }
    };
    match yaml {
        Ok(yaml) => {
            print!("{yaml}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("crdgen: cannot render the CRD: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
