//! The `cluster-agent` binary as an operator runs it: help, and `check-config` on the
//! example configuration and on broken ones.

use std::path::{Path, PathBuf};

use kaas_test_support::process::run;

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kaas-agent-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

#[test]
fn help_lists_check_config() {
    let out = run(AGENT, &["--help"], "");
    assert_eq!(out.code(), 0);
    assert!(out.stdout.contains("check-config"), "{}", out.stdout);
}

#[test]
fn the_example_configuration_is_valid() {
    let example = repo("examples/agent/standalone.yaml");
    let out = run(
        AGENT,
        &["check-config", "--config", example.to_str().unwrap()],
        "",
    );
    assert_eq!(out.code(), 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("valid, 1 pipeline(s): local-nginx"),
        "{}",
        out.stdout
    );
}

#[test]
fn an_invalid_configuration_lists_every_error_with_its_pipeline() {
    let text = std::fs::read_to_string(repo("examples/agent/standalone.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:9090/api/v1/write", "localhost:9090")
        .replace("\"127.0.0.1:8080\"", "\"127.0.0.1\"");
    let path = write_temp("invalid.yaml", &text);
    let out = run(
        AGENT,
        &["check-config", "--config", path.to_str().unwrap()],
        "",
    );
    assert_eq!(out.code(), 1, "{}", out.stdout);
    assert!(out.stdout.contains("invalid, 2 error(s)"), "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "pipelines[0].spec.input.static.targets[0].addresses[0]: \"127.0.0.1\" is not a host:port address: the port is missing"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "pipelines[0].spec.output.prometheusRemoteWrite.url: not an absolute http(s) URL"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn unknown_fields_and_missing_files_are_clear_errors() {
    let path = write_temp(
        "typo.yaml",
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelnes: []\n",
    );
    let out = run(
        AGENT,
        &["check-config", "--config", path.to_str().unwrap()],
        "",
    );
    assert_eq!(out.code(), 1);
    assert!(
        out.stdout.contains("pipelnes: unknown field `pipelnes`"),
        "{}",
        out.stdout
    );

    let out = run(
        AGENT,
        &["check-config", "--config", "/nonexistent.yaml"],
        "",
    );
    assert_eq!(out.code(), 2);
    assert!(out.stdout.contains("cannot read"), "{}", out.stdout);
}

/// Issue 14: `run` parses and checks every flag before any I/O. Three bad flags are
/// all named, the exit code is 2, and the fresh data directory stays empty.
#[test]
fn run_names_every_bad_flag_before_touching_the_data_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let config = repo("examples/agent/standalone.yaml");
    let out = run(
        AGENT,
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--listen-address",
            "127.0.0.1",
            "--buffer-budget",
            "1Ki",
            "--kubernetes",
            "sometimes",
        ],
        "",
    );
    assert_eq!(out.code(), 2, "{}", out.stderr);
    for flag in ["--listen-address", "--buffer-budget", "--kubernetes"] {
        assert!(
            out.stderr.contains(flag),
            "{flag} not named: {}",
            out.stderr
        );
    }
    let left: Vec<_> = std::fs::read_dir(&data).expect("read data dir").collect();
    assert!(left.is_empty(), "the data directory was written: {left:?}");
}
