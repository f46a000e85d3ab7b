//! The exposition parser on arbitrary bytes, in both formats: it never panics, every
//! sample it hands out has a label set that either parses or is refused with a reason,
//! and the count it returns is the number of samples it handed out. Shared by the fuzz
//! target and the corpus replay test (`exposition/tests/fuzz_corpus.rs`).

use kaas_exposition::{Format, MAX_LINE_BYTES, parse};

/// One input.
pub fn run(data: &[u8]) {
    for format in [Format::PrometheusText, Format::OpenMetrics] {
        let mut seen = 0;
        let result = parse(data, format, |sample| {
            seen += 1;
            assert!(sample.series.len() <= MAX_LINE_BYTES);
            assert!(sample.series.starts_with(sample.name));
            if let Ok(labels) = sample.labels() {
                let mut names: Vec<&str> = labels.iter().map(|(name, _)| *name).collect();
                names.sort_unstable();
                names.dedup();
                assert_eq!(
                    names.len(),
                    labels.len(),
                    "duplicate label names got through"
                );
            }
            Ok(())
        });
        if let Ok(count) = result {
            assert_eq!(count, seen);
        }
    }
}
