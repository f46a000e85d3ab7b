//! `observer serve` checks every flag before it touches anything: wrong flags are all
//! named at once, the exit status is 2, and a fresh data directory stays empty.

use std::process::Command;

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

#[test]
fn three_bad_flags_are_all_named_and_nothing_is_created() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(OBSERVER)
        .args([
            "serve",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--listen-address",
            "127.0.0.1:0",
            "--metrics-listen-address",
            "127.0.0.1:0",
            "--grpc-listen-address",
            "127.0.0.1:0",
            "--join-token-ttl",
            "soon",
            "--probe-interval",
            "often",
            "--replica-id",
            "",
        ])
        .env_remove("KAAS_DATABASE_URL")
        .env_remove("POD_NAME")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for flag in ["--join-token-ttl", "--probe-interval", "--replica-id"] {
        assert!(stderr.contains(flag), "{flag} not named: {stderr}");
    }
    let created: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(created.is_empty(), "the data directory got {created:?}");
}
