//! `observer serve` checks every flag before it touches anything: wrong flags are all
//! named at once, the exit status is 2, and a fresh data directory stays empty.

use std::process::Command;

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

/// Runs `observer serve` with a fresh data directory, loopback listeners and `flags`;
/// asserts it exits with status 2 naming each of `named`, and that the data directory
/// is still empty.
fn refused_before_anything_starts(flags: &[&str], named: &[&str]) {
    let data = tempfile::tempdir().expect("data directory");
    let flags: Vec<String> = flags
        .iter()
        .map(|flag| flag.replace("{data}", &data.path().display().to_string()))
        .collect();
    let output = Command::new(OBSERVER)
        .args([
            "serve",
            "--data-dir",
            data.path().to_str().expect("UTF-8 path"),
            "--listen-address",
            "127.0.0.1:0",
            "--metrics-listen-address",
            "127.0.0.1:0",
            "--grpc-listen-address",
            "127.0.0.1:0",
        ])
        .args(&flags)
        .env_remove("KAAS_DATABASE_URL")
        .env_remove("POD_NAME")
        .output()
        .expect("observer runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for named in named {
        assert!(stderr.contains(named), "{named} not named: {stderr}");
    }
    let created: Vec<_> = std::fs::read_dir(data.path())
        .expect("data directory readable")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert!(created.is_empty(), "the data directory got {created:?}");
}

#[test]
fn three_bad_flags_are_all_named_and_nothing_is_created() {
    refused_before_anything_starts(
        &[
            "--join-token-ttl",
            "soon",
            "--probe-interval",
            "often",
            "--replica-id",
            "",
        ],
        &["--join-token-ttl", "--probe-interval", "--replica-id"],
    );
}

/// The onboarding sources' flags are checked with the others: an inventory URL that is
/// not http(s) and a Cluster API kubeconfig that cannot be read are named beside a bad
/// duration, before the data directory is touched.
#[test]
fn onboarding_flags_are_checked_before_anything_starts() {
    refused_before_anything_starts(
        &[
            "--inventory-url",
            "ftp://inventory.example/clusters",
            "--cluster-api={data}/no-such-kubeconfig",
            "--silent-after",
            "never",
        ],
        &[
            "--inventory-url",
            "ftp://",
            "--cluster-api",
            "no-such-kubeconfig",
            "--silent-after",
        ],
    );
}

/// Values of every type are checked together: counts, a range, a method,
/// a URL and a byte quantity that do not parse are all named in one run, where clap
/// alone would stop at the first.
#[test]
fn values_clap_would_parse_are_named_together_too() {
    refused_before_anything_starts(
        &[
            "--control-max-pending-per-address",
            "none",
            "--probe-max-concurrency",
            "many",
            "--egress-allow-cidr",
            "10.0.0.0/33",
            "--probe-allow-method",
            "TELEPORT",
            "--inventory-url",
            "not a url",
            "--cluster-buffer-budget",
            "lots",
            "--node-buffer-budget",
            "1Ki",
            "--join-burst=-1",
        ],
        &[
            "--control-max-pending-per-address",
            "--probe-max-concurrency",
            "--egress-allow-cidr",
            "--probe-allow-method",
            "--inventory-url",
            "--cluster-buffer-budget",
            "--node-buffer-budget",
            "--join-burst",
        ],
    );
}
