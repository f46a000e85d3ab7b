//! `observer pipeline validate`: the offline validator. It runs exactly the validation
//! the API and the agents run ([`kaas_pipeline::validate`] for `MetricPipeline`s,
//! [`kaas_pipeline::validate_log_pipeline`] for `LogPipeline`s,
//! [`kaas_pipeline::validate_trace_pipeline`] for `TracePipeline`s, each document by its
//! `kind`; `PipelineTemplate`s with [`kaas_pipeline::templates::validate_template`] and
//! `PipelineInstance`s on their own, since their template is the observer's), so a file
//! it accepts is a
//! file the observer accepts, except for what only a running observer knows (its
//! Secret namespace allow-list and its central receiver).
//!
//! By default a file is checked as a pipeline the observer distributes (no
//! `valueFrom.file`, no tenancy headers); `--standalone` checks it as a standalone
//! agent's own configuration, which may read files outside the agent's data directory
//! and credential mounts.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use clap::Args;
use kaas_pipeline::document::Document;
use kaas_pipeline::templates::{ValidatedDocument, parse_all_documents};
use kaas_pipeline::{ProviderPolicy, ValidationContext};
use serde::Serialize;

use super::OutputFormat;

/// Exit status when every pipeline is valid.
pub const EXIT_VALID: u8 = 0;
/// Exit status when at least one pipeline is invalid.
pub const EXIT_INVALID: u8 = 1;
/// Exit status when a file cannot be read or holds no pipeline.
pub const EXIT_UNREADABLE: u8 = 2;

/// Arguments of `observer pipeline validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A file to check; `-` reads standard input. Repeat for several files.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Check the pipelines as a standalone agent's own configuration (which may read
    /// files with valueFrom.file) instead of as pipelines the observer distributes.
    #[arg(long)]
    pub standalone: bool,
}

impl ValidateArgs {
    /// The context the files are checked in.
    fn context(&self) -> ValidationContext {
        if self.standalone {
            ValidationContext::standalone()
        } else {
            ValidationContext::observer(ProviderPolicy::offline())
        }
    }
}

/// The outcome for one pipeline, as printed in JSON.
#[derive(Debug, Serialize)]
struct Report {
    file: String,
    location: String,
    name: Option<String>,
    /// The kind of a valid document (`MetricPipeline`, `LogPipeline`, `TracePipeline`,
    /// `PipelineTemplate`, `PipelineInstance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    valid: bool,
    errors: Vec<ErrorReport>,
}

#[derive(Debug, Serialize)]
struct ErrorReport {
    path: String,
    reason: String,
}

/// Checks every file and prints the outcome; returns the exit status.
pub fn run(args: &ValidateArgs, stdin: &mut dyn Read, out: &mut dyn Write) -> io::Result<u8> {
    let context = args.context();
    let mut reports = Vec::new();
    let mut unreadable = Vec::new();
    for path in &args.files {
        let shown = path.display().to_string();
        let text = if shown == "-" {
            let mut text = String::new();
            stdin.read_to_string(&mut text).map(|_| text)
        } else {
            std::fs::read_to_string(path)
        };
        match text {
            Ok(text) => {
                let documents = parse_all_documents(&text, &context);
                if documents.is_empty() {
                    unreadable.push(format!("{shown}: no pipeline found"));
                }
                reports.extend(documents.into_iter().map(|d| report(&shown, d)));
            }
            Err(error) => unreadable.push(format!("{shown}: cannot read: {error}")),
        }
    }
    match args.output {
        OutputFormat::Text => print_text(&reports, &unreadable, out)?,
        OutputFormat::Json => {
            let json = serde_json::json!({ "pipelines": reports, "unreadable": unreadable });
            serde_json::to_writer_pretty(&mut *out, &json)?;
            writeln!(out)?;
        }
    }
    Ok(if !unreadable.is_empty() {
        EXIT_UNREADABLE
    } else if reports.iter().any(|r| !r.valid) {
        EXIT_INVALID
    } else {
        EXIT_VALID
    })
}

fn report(file: &str, document: Document<ValidatedDocument>) -> Report {
    let errors = match &document.outcome {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .errors()
            .iter()
            .map(|e| ErrorReport {
                path: e.path.clone(),
                reason: e.reason.clone(),
            })
            .collect(),
    };
    Report {
        file: file.to_owned(),
        location: document.location,
        name: document.name,
        kind: document.outcome.as_ref().ok().map(ValidatedDocument::kind),
        valid: document.outcome.is_ok(),
        errors,
    }
}

fn print_text(reports: &[Report], unreadable: &[String], out: &mut dyn Write) -> io::Result<()> {
    for report in reports {
        let kind = report.kind.unwrap_or("pipeline");
        let name = report
            .name
            .as_deref()
            .map(|n| format!(" {kind} {n:?}"))
            .unwrap_or_default();
        if report.valid {
            writeln!(out, "{}: {}{name}: valid", report.file, report.location)?;
        } else {
            let count = report.errors.len();
            let noun = if count == 1 { "error" } else { "errors" };
            writeln!(
                out,
                "{}: {}{name}: {count} {noun}",
                report.file, report.location
            )?;
            for error in &report.errors {
                if error.path.is_empty() {
                    writeln!(out, "  {}", error.reason)?;
                } else {
                    writeln!(out, "  {}: {}", error.path, error.reason)?;
                }
            }
        }
    }
    for line in unreadable {
        writeln!(out, "{line}")?;
    }
    let invalid = reports.iter().filter(|r| !r.valid).count();
    writeln!(
        out,
        "{} valid, {invalid} invalid{}",
        reports.len() - invalid,
        if unreadable.is_empty() {
            String::new()
        } else {
            format!(", {} unreadable", unreadable.len())
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: MetricPipeline\n\
        metadata: {name: ok}\nspec:\n  input: {prometheus: {enabled: true}}\n  \
        output: {prometheusRemoteWrite: {url: \"https://r.example/write\"}}\n";

    fn run_on_stdin(input: &str, output: OutputFormat) -> (u8, String) {
        let args = ValidateArgs {
            files: vec!["-".into()],
            output,
            standalone: false,
        };
        let mut out = Vec::new();
        let status = run(&args, &mut input.as_bytes(), &mut out).unwrap();
        (status, String::from_utf8(out).unwrap())
    }

    #[test]
    fn valid_input_exits_zero() {
        let (status, out) = run_on_stdin(GOOD, OutputFormat::Text);
        assert_eq!(status, EXIT_VALID);
        assert_eq!(
            out,
            "-: document 1 MetricPipeline \"ok\": valid\n1 valid, 0 invalid\n"
        );
    }

    #[test]
    fn every_error_is_listed_and_exit_is_one() {
        let bad = GOOD
            .replace("https://r.example/write", "not a url")
            .replace("{enabled: true}", "{enabled: false}");
        let (status, out) = run_on_stdin(&format!("{GOOD}---\n{bad}"), OutputFormat::Text);
        assert_eq!(status, EXIT_INVALID);
        assert!(
            out.contains("-: document 2 pipeline \"ok\": 2 errors\n"),
            "{out}"
        );
        assert!(out.contains("  spec.input: no input is enabled"), "{out}");
        assert!(
            out.contains("  spec.output.prometheusRemoteWrite.url: not an absolute http(s) URL: \"not a url\""),
            "{out}"
        );
        assert!(out.ends_with("1 valid, 1 invalid\n"), "{out}");
    }

    #[test]
    fn json_output_carries_paths_and_reasons() {
        let bad = GOOD.replace("https://r.example/write", "not a url");
        let (status, out) = run_on_stdin(&bad, OutputFormat::Json);
        assert_eq!(status, EXIT_INVALID);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let errors = &json["pipelines"][0]["errors"];
        assert_eq!(errors[0]["path"], "spec.output.prometheusRemoteWrite.url");
        assert_eq!(
            errors[0]["reason"],
            "not an absolute http(s) URL: \"not a url\""
        );
    }

    /// Issue 13, finding 2: by default a file is checked as the observer distributes it,
    /// so `valueFrom.file` is refused with its path; `--standalone` accepts it (outside
    /// the agent's data directory and credential mounts).
    #[test]
    fn file_references_pass_only_with_standalone() {
        let with_file = |path: &str| {
            GOOD.replace(
                "url: \"https://r.example/write\"}",
                &format!(
                    "url: \"https://r.example/write\", authentication: {{bearerToken: {{valueFrom: {{file: {path}}}}}}}}}"
                ),
            )
        };
        let text = with_file("/etc/edge/token");
        let (status, out) = run_on_stdin(&text, OutputFormat::Text);
        assert_eq!(status, EXIT_INVALID, "{out}");
        assert!(
            out.contains("  spec.output.prometheusRemoteWrite.authentication.bearerToken.valueFrom.file: reading files on the agent is only allowed in a standalone agent's own configuration"),
            "{out}"
        );
        let standalone = |text: &str| {
            let args = ValidateArgs {
                files: vec!["-".into()],
                output: OutputFormat::Text,
                standalone: true,
            };
            let mut out = Vec::new();
            let status = run(&args, &mut text.as_bytes(), &mut out).unwrap();
            (status, String::from_utf8(out).unwrap())
        };
        assert_eq!(standalone(&text).0, EXIT_VALID);
        let (status, out) = standalone(&with_file(
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
        ));
        assert_eq!(status, EXIT_INVALID, "{out}");
        assert!(out.contains("which no pipeline may read"), "{out}");
    }

    /// Issue 16: a file may mix kinds; each document is checked by its own kind.
    #[test]
    fn log_pipelines_are_checked_by_their_kind() {
        let log = "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: LogPipeline\n\
            metadata: {name: logs}\nspec:\n  input: {runtime: {enabled: true}}\n  \
            output: {loki: {url: \"https://loki.example\"}}\n";
        let (status, out) = run_on_stdin(&format!("{GOOD}---\n{log}"), OutputFormat::Text);
        assert_eq!(status, EXIT_VALID, "{out}");
        assert!(out.ends_with("2 valid, 0 invalid\n"), "{out}");
        assert!(
            out.contains("document 2 LogPipeline \"logs\": valid"),
            "{out}"
        );
        let bad = log.replace(
            "{enabled: true}",
            "{enabled: true, containers: {include: [A]}}",
        );
        let (status, out) = run_on_stdin(&bad, OutputFormat::Text);
        assert_eq!(status, EXIT_INVALID, "{out}");
        assert!(
            out.contains("  spec.input.runtime.containers.include[0]: not a container name"),
            "{out}"
        );
    }

    /// Issue 18: templates and instances are checked by their kind too.
    #[test]
    fn templates_and_instances_are_checked_by_their_kind() {
        let example = |path: &str| {
            std::fs::read_to_string(format!(
                "{}/../examples/templates/{path}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        let template = example("otlp-oauth2.yaml");
        let instance = example("instances/shop-traces.yaml");
        let (status, out) = run_on_stdin(&format!("{template}---\n{instance}"), OutputFormat::Text);
        assert_eq!(status, EXIT_VALID, "{out}");
        assert!(
            out.contains("document 1 PipelineTemplate \"otlp-oauth2\": valid"),
            "{out}"
        );
        assert!(
            out.contains("document 2 PipelineInstance \"shop-traces\": valid"),
            "{out}"
        );
        let undeclared = template.replace("\"%{timeout}\"", "\"%{timeouts}\"");
        let (status, out) = run_on_stdin(&undeclared, OutputFormat::Text);
        assert_eq!(status, EXIT_INVALID, "{out}");
        assert!(
            out.contains("spec.template.spec.output.otlp.timeout"),
            "{out}"
        );
    }

    #[test]
    fn empty_input_is_unreadable() {
        let (status, out) = run_on_stdin("# nothing here\n", OutputFormat::Text);
        assert_eq!(status, EXIT_UNREADABLE);
        assert!(out.contains("-: no pipeline found"), "{out}");
    }
}
