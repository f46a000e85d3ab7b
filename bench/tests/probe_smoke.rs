//! Runs `probe-bench` on a few endpoints so it cannot rot: both the blackbox exporter
//! and the observer's prober must probe every endpoint successfully. Timings are
//! printed, never asserted.

use std::process::Command;

#[test]
fn probe_bench_runs_both_probers_on_a_few_endpoints() {
    let output = Command::new(env!("CARGO_BIN_EXE_probe-bench"))
        .args([
            "--endpoints",
            "20",
            "--interval-seconds",
            "1",
            "--warmup-seconds",
            "2",
            "--duration-seconds",
            "3",
        ])
        .output()
        .expect("run probe-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for prober in ["blackbox exporter", "observer prober"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {prober} |")))
            .unwrap_or_else(|| panic!("no row for {prober}: {stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let probes: u64 = cells[2].parse().expect("probes in window");
        assert!(probes > 0, "{row}");
        assert_eq!(cells[3], "100.0%", "every probe succeeds: {row}");
    }
    assert!(stdout.contains("observer prober / blackbox exporter: CPU per probe"));
}
