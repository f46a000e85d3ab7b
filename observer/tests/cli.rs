//! The `observer` binary as a user runs it: help, and `pipeline validate` on the
//! repository's examples and on broken files, checking exit codes and output.

use std::path::{Path, PathBuf};

use kaas_test_support::process::run;

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[test]
fn help_lists_the_pipeline_commands() {
    let out = run(OBSERVER, &["--help"], "");
    assert_eq!(out.code(), 0);
    assert!(out.stdout.contains("pipeline"), "{}", out.stdout);
    let out = run(OBSERVER, &["pipeline", "validate", "--help"], "");
    assert_eq!(out.code(), 0);
    assert!(out.stdout.contains("--filename <FILE>"), "{}", out.stdout);
}

#[test]
fn the_examples_are_valid() {
    let examples: Vec<PathBuf> = std::fs::read_dir(repo("examples/pipelines"))
        .expect("examples/pipelines exists")
        .map(|e| e.expect("directory entry").path())
        .collect();
    assert!(examples.len() >= 3);
    let mut args = vec!["pipeline", "validate"];
    for example in &examples {
        args.extend(["-f", arg(example)]);
    }
    let out = run(OBSERVER, &args, "");
    assert_eq!(out.code(), 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("{} valid, 0 invalid", examples.len()))
    );
}

#[test]
fn an_invalid_file_is_refused_naming_each_bad_field() {
    let bad = repo("pipeline/testdata/bad/many-errors-at-once.yaml");
    let out = run(OBSERVER, &["pipeline", "validate", "-f", arg(&bad)], "");
    assert_eq!(out.code(), 1, "{}", out.stdout);
    for field in [
        "metadata.name:",
        "spec.input.scrapeInterval:",
        "spec.processors.relabelConfigs[0].modulus:",
        "spec.output.prometheusRemoteWrite.url: not an absolute http(s) URL: \"not a url\"",
        "spec.buffer.maxAge:",
    ] {
        assert!(
            out.stdout.contains(field),
            "{field} missing from\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("5 errors"), "{}", out.stdout);
}

#[test]
fn json_from_standard_input_and_mixed_results() {
    let text = std::fs::read_to_string(repo("pipeline/testdata/good/pipeline.json")).unwrap();
    let bad = text.replace("https://receiver.example/api/v1/write", "ftp://x");
    let out = run(
        OBSERVER,
        &["pipeline", "validate", "-f", "-", "-o", "json"],
        &format!("[{text}, {bad}]"),
    );
    assert_eq!(out.code(), 1, "{}", out.stdout);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON output");
    assert_eq!(json["pipelines"][0]["valid"], true);
    assert_eq!(json["pipelines"][1]["valid"], false);
    assert_eq!(
        json["pipelines"][1]["errors"][0]["path"],
        "spec.output.prometheusRemoteWrite.url"
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = run(
        OBSERVER,
        &["pipeline", "validate", "-f", "/nonexistent/pipeline.yaml"],
        "",
    );
    assert_eq!(out.code(), 2);
    assert!(
        out.stdout
            .contains("/nonexistent/pipeline.yaml: cannot read: No such file or directory"),
        "{}",
        out.stdout
    );
}
