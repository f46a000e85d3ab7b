//! Two builds of cluster-agent on one workload: the build before (the baseline) and
//! the new one run alternately, round after round, in one invocation, so that a change
//! in the machine's load reaches both alike. Each round measures both builds, the
//! baseline first in odd rounds and the new build first in even ones (ABBA), which
//! also cancels an advantage of going first or second.
//!
//! The report gives, for CPU per sample, peak RSS per series and the delivered share,
//! each build's median over its rounds with the rounds' spread (lowest to highest)
//! and the new/old ratio of the medians. A difference counts as a change only when it
//! is over [`NOISE`] and outside the spread: the new build's rounds all above (or all
//! below) the baseline's.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::{Agent, Measurement, Workload, measure, serve_workload};

/// The fewest rounds a comparison runs: with fewer, a median is one round's luck.
pub const MIN_ROUNDS: usize = 3;

/// A ratio of medians closer to 1 than this is within noise on this machine kind
/// (the design's bound for a regression on the anchor workload is 5 %).
pub const NOISE: f64 = 0.05;

/// The measurements of both builds, one of each per round.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// The baseline's measurement of each round.
    pub old: Vec<Measurement>,
    /// The new build's measurement of each round.
    pub new: Vec<Measurement>,
}

/// Runs `rounds` rounds (at least [`MIN_ROUNDS`]) of the baseline binary `old` and
/// the new binary `new` on one nginx serving the workload.
pub fn compare(workload: &Workload, old: PathBuf, new: PathBuf, rounds: usize) -> Comparison {
    let dir = tempfile::tempdir().expect("temp dir");
    let nginx = serve_workload(workload, dir.path());
    let (old, new) = (Agent::ClusterAgent(old), Agent::ClusterAgent(new));
    let mut comparison = Comparison::default();
    for round in 1..=rounds.max(MIN_ROUNDS) {
        if round % 2 == 1 {
            comparison.old.push(measure(&old, workload, &nginx));
            comparison.new.push(measure(&new, workload, &nginx));
        } else {
            comparison.new.push(measure(&new, workload, &nginx));
            comparison.old.push(measure(&old, workload, &nginx));
        }
    }
    comparison
}

/// The median and the lowest and highest of some rounds' values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The lowest value.
    pub min: f64,
    /// The highest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; all zero when there are none.
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return Self {
                median: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Self {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        }
    }
}

/// What the new build did to one metric compared with the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Higher by more than [`NOISE`], and every new round above every old one.
    Higher,
    /// Lower by more than [`NOISE`], and every new round below every old one.
    Lower,
    /// Within noise or within the rounds' spread.
    Same,
}

/// Compares the new build's rounds with the baseline's.
pub fn verdict(old: Spread, new: Spread) -> Verdict {
    let ratio = ratio(new.median, old.median);
    if ratio > 1.0 + NOISE && new.min > old.max {
        Verdict::Higher
    } else if ratio < 1.0 - NOISE && new.max < old.min {
        Verdict::Lower
    } else {
        Verdict::Same
    }
}

fn ratio(new: f64, old: f64) -> f64 {
    new / old.max(f64::MIN_POSITIVE)
}

/// One reported metric: its name, unit, whether higher is worse, and how to read it
/// from a measurement.
struct Metric {
    name: &'static str,
    unit: &'static str,
    higher_is_worse: bool,
    read: fn(&Measurement) -> f64,
}

const METRICS: [Metric; 3] = [
    Metric {
        name: "CPU/sample",
        unit: "µs",
        higher_is_worse: true,
        read: Measurement::cpu_per_sample_us,
    },
    Metric {
        name: "RSS/series",
        unit: "B",
        higher_is_worse: true,
        read: Measurement::rss_per_series,
    },
    Metric {
        name: "delivered",
        unit: "%",
        higher_is_worse: false,
        read: delivered_percent,
    },
];

fn delivered_percent(m: &Measurement) -> f64 {
    m.delivered_ratio() * 100.0
}

/// The comparison as a table: medians, spreads and new/old per metric.
pub fn report(workload: &Workload, comparison: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "workload: {} targets x {} series every {:?}, {:?} measured after {:?} warm-up",
        workload.targets,
        workload.series_per_target,
        workload.interval,
        workload.duration,
        workload.warmup
    );
    let _ = writeln!(
        out,
        "rounds: {} old, {} new, alternating (old first in odd rounds)",
        comparison.old.len(),
        comparison.new.len()
    );
    let _ = writeln!(
        out,
        "{:<12} {:>26} {:>26} {:>8}  verdict",
        "metric", "old median [min..max]", "new median [min..max]", "new/old"
    );
    for metric in &METRICS {
        let values =
            |rounds: &[Measurement]| -> Vec<f64> { rounds.iter().map(metric.read).collect() };
        let old = Spread::of(&values(&comparison.old));
        let new = Spread::of(&values(&comparison.new));
        let verdict = match (verdict(old, new), metric.higher_is_worse) {
            (Verdict::Same, _) => "same (within noise or spread)",
            (Verdict::Higher, true) | (Verdict::Lower, false) => "WORSE",
            (Verdict::Higher, false) | (Verdict::Lower, true) => "better",
        };
        let _ = writeln!(
            out,
            "{:<12} {:>26} {:>26} {:>7.3}x  {verdict}",
            format!("{} ({})", metric.name, metric.unit),
            format_spread(old),
            format_spread(new),
            ratio(new.median, old.median),
        );
    }
    out
}

fn format_spread(spread: Spread) -> String {
    format!(
        "{:.3} [{:.3}..{:.3}]",
        spread.median, spread.min, spread.max
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(cpu_seconds: f64, peak_rss_bytes: u64) -> Measurement {
        Measurement {
            agent: "cluster-agent",
            cpu_seconds,
            window_samples: 1e6,
            peak_rss_bytes,
            active_series: 1000,
            delivered_samples: 99.0,
            expected_samples: 100.0,
        }
    }

    #[test]
    fn the_spread_holds_the_median_and_the_extremes() {
        assert_eq!(
            Spread::of(&[3.0, 1.0, 2.0]),
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(Spread::of(&[]).median, 0.0);
    }

    #[test]
    fn a_change_counts_only_over_the_noise_and_outside_the_spread() {
        let old = Spread::of(&[1.0, 1.01, 0.99]);
        assert_eq!(
            verdict(old, Spread::of(&[1.2, 1.21, 1.19])),
            Verdict::Higher
        );
        assert_eq!(verdict(old, Spread::of(&[0.8, 0.81, 0.79])), Verdict::Lower);
        // 3 % higher: noise.
        assert_eq!(verdict(old, Spread::of(&[1.03, 1.03, 1.03])), Verdict::Same);
        // 20 % higher in the median, but one new round inside the old spread.
        assert_eq!(verdict(old, Spread::of(&[1.2, 1.2, 1.0])), Verdict::Same);
    }

    #[test]
    fn the_report_prints_medians_and_new_over_old() {
        let workload = Workload {
            targets: 1,
            series_per_target: 10,
            interval: std::time::Duration::from_secs(1),
            warmup: std::time::Duration::from_secs(1),
            duration: std::time::Duration::from_secs(1),
        };
        let comparison = Comparison {
            old: vec![round(1.0, 1000), round(1.1, 1000), round(0.9, 1000)],
            new: vec![round(2.0, 1000), round(2.2, 1000), round(1.8, 1000)],
        };
        let text = report(&workload, &comparison);
        assert!(text.contains("rounds: 3 old, 3 new"), "{text}");
        let cpu = text
            .lines()
            .find(|l| l.starts_with("CPU/sample"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(cpu.contains("1.000 [0.900..1.100]"), "{cpu}");
        assert!(cpu.contains("2.000x") && cpu.ends_with("WORSE"), "{cpu}");
        let rss = text.lines().find(|l| l.starts_with("RSS/series")).unwrap();
        assert!(
            rss.contains("1.000x") && rss.ends_with("(within noise or spread)"),
            "{rss}"
        );
    }
}
