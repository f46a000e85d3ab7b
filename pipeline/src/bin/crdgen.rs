//! Prints the `MetricPipeline` CRD as YAML on standard output.

fn main() -> std::process::ExitCode {
    match kaas_pipeline::crd::crd_yaml() {
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
