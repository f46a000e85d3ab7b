//! Consistent probability sampling (OpenTelemetry, "TraceState: Probability Sampling",
//! OTEP 235): each span is kept or dropped by comparing a 56-bit randomness value with
//! a 56-bit rejection threshold, so every pipeline, replica and cluster sampling at the
//! same ratio keeps the same traces, with no state shared between them.
//!
//! - **Threshold.** A ratio `p` is the rejection threshold `T = (1 - p) × 2^56`,
//!   rounded to [`DEFAULT_THRESHOLD_PRECISION`] significant hex digits by the
//!   specification's algorithm ([`threshold`]), so `0.1` is `th:e666`, as an
//!   OpenTelemetry SDK or Collector at 10% writes it. Computed once per pipeline.
//! - **Randomness.** `rv` from the span's `tracestate` when it has a valid one, else
//!   the trace id's low 56 bits (its last 7 bytes, W3C Trace Context level 2). A span
//!   with neither (no 16-byte trace id) has no randomness and is dropped, unless the
//!   threshold is zero.
//! - **Upstream threshold.** A sampler earlier on the way may have written `th`
//!   already. The threshold applied is the larger of the two (an "equalizing"
//!   downstream sampler): a span is never kept at a higher rate than upstream decided,
//!   and a span whose randomness is below its own upstream threshold (inconsistent) is
//!   dropped, as the Collector does by default (`fail_closed`).
//! - **Kept spans** carry the applied threshold in `tracestate` as `ot=th:…`
//!   ([`super::tracestate`] for the rest of the entry and the other vendors').
//!
//! A ratio of 1 skips this step: no span is dropped and no `tracestate` is touched
//! (`th:0` would claim that the spans were probability-sampled, which a gateway that
//! keeps everything cannot know). Deciding costs a parse of the span's `tracestate`,
//! linear in its length and skipped when it is empty; nothing is kept between spans.

use kaas_proto::otlp::Span;

use super::tracestate::{MAX_THRESHOLD, TraceState, threshold_text};

/// Significant hex digits of the threshold written: what the specification recommends
/// to SDKs and what the Collector's probabilistic sampler uses by default, so the
/// same ratio writes the same `th` in all of them. With the digits added for small
/// ratios, the share kept is within 0.013% of the ratio (relative) for any ratio down
/// to 2^-32, finer than a ratio is ever meant.
pub const DEFAULT_THRESHOLD_PRECISION: u32 = 4;
/// Bits of randomness in a trace id and in `rv`.
const RANDOMNESS_BITS: u32 = 56;

/// The rejection threshold of `probability` with `precision` significant hex digits,
/// by the specification's algorithm ("Converting floating-point probability to
/// threshold value"): digits are added for each leading `f` a small probability
/// gives (its base-2 exponent over four), precision stays within 1 to 12, and the
/// digits come from `2 - probability` plus half the last digit, in IEEE double
/// arithmetic exactly as specified. `probability` is in `[2^-56, 1]`; 1 is zero.
pub fn threshold(probability: f64, precision: u32) -> u64 {
    if probability >= 1.0 || probability.is_nan() {
        return 0;
    }
    let exponent = frexp_exponent(probability);
    // Python's `exponent // -4` for a non-positive exponent.
    let extra = (-exponent).max(0) / 4;
    let precision = (i64::from(precision) + extra).clamp(1, 12) as u32;
    let mut rejection = 2.0 - probability;
    rejection += 0.5 * 2f64.powi(-4 * precision as i32);
    let kept_bits = 4 * precision;
    let digits = if rejection >= 2.0 {
        (1u64 << kept_bits) - 1
    } else {
        // In [1, 2): the 52 fraction bits are 13 hex digits.
        let fraction = rejection.to_bits() & ((1 << 52) - 1);
        fraction >> (52 - kept_bits)
    };
    digits << (RANDOMNESS_BITS - kept_bits)
}

/// `e` with `value = m × 2^e`, `m` in `[0.5, 1)`, for a positive normal `value`
/// (`frexp`); subnormals, which validation excludes, read as the smallest exponent.
fn frexp_exponent(value: f64) -> i64 {
    let biased = ((value.to_bits() >> 52) & 0x7ff) as i64;
    biased.max(1) - 1022
}

/// The randomness of a trace id: its low 56 bits; `None` unless it has 16 bytes.
pub fn trace_id_randomness(trace_id: &[u8]) -> Option<u64> {
    let low: [u8; 8] = trace_id.get(8..16)?.try_into().ok()?;
    (trace_id.len() == 16).then(|| u64::from_be_bytes(low) & (MAX_THRESHOLD - 1))
}

/// A pipeline's sampler: its threshold, computed once.
#[derive(Clone, Debug)]
pub struct Sampler {
    threshold: u64,
    /// The tracestate of a kept span that had none: `ot=th:…`.
    plain: String,
}

impl Sampler {
    /// The sampler of `ratio` (validated: in `[2^-56, 1]`); `None` for 1, which keeps
    /// every span unchanged.
    pub fn new(ratio: f64) -> Option<Self> {
        Self::with_precision(ratio, DEFAULT_THRESHOLD_PRECISION)
    }

    /// As [`Sampler::new`] with another precision (the specification's and the
    /// Collector's examples use several).
    pub fn with_precision(ratio: f64, precision: u32) -> Option<Self> {
        if ratio >= 1.0 {
            return None;
        }
        let threshold = threshold(ratio, precision);
        Some(Self {
            threshold,
            plain: format!("ot=th:{}", threshold_text(threshold)),
        })
    }

    /// The rejection threshold.
    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    /// Whether `span` is kept; a kept span's `tracestate` gets the threshold applied.
    pub fn keeps(&self, span: &mut Span) -> bool {
        if span.trace_state.is_empty() {
            let keep = self.admits(self.threshold, trace_id_randomness(&span.trace_id));
            if keep {
                span.trace_state.clone_from(&self.plain);
            }
            return keep;
        }
        let state = TraceState::parse(&span.trace_state);
        let threshold = state
            .threshold()
            .map_or(self.threshold, |upstream| upstream.max(self.threshold));
        let randomness = state
            .randomness()
            .or_else(|| trace_id_randomness(&span.trace_id));
        if !self.admits(threshold, randomness) {
            return false;
        }
        let written = state.with_threshold(threshold);
        span.trace_state = written;
        true
    }

    fn admits(&self, threshold: u64, randomness: Option<u64>) -> bool {
        threshold == 0 || randomness.is_some_and(|randomness| randomness >= threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's table of thresholds for 1-in-N sampling at precision 3, 4
    /// and 5 ("Converting floating-point probability to threshold value").
    #[test]
    fn thresholds_match_the_specification_table() {
        let table: [(f64, [&str; 3]); 13] = [
            (1.0, ["0", "0", "0"]),
            (0.5, ["8", "8", "8"]),
            (1.0 / 3.0, ["aab", "aaab", "aaaab"]),
            (0.25, ["c", "c", "c"]),
            (0.2, ["ccd", "cccd", "ccccd"]),
            (0.125, ["e", "e", "e"]),
            (0.1, ["e66", "e666", "e6666"]),
            (0.0625, ["f", "f", "f"]),
            (0.01, ["fd71", "fd70a", "fd70a4"]),
            (0.001, ["ffbe7", "ffbe77", "ffbe76d"]),
            (0.0001, ["fff972", "fff9724", "fff97247"]),
            (0.00001, ["ffff584", "ffff583a", "ffff583a5"]),
            (0.000001, ["ffffef4", "ffffef39", "ffffef391"]),
        ];
        for (probability, expected) in table {
            for (precision, th) in (3..=5).zip(expected) {
                assert_eq!(
                    threshold_text(threshold(probability, precision)),
                    th,
                    "p={probability} precision {precision}"
                );
            }
        }
    }

    #[test]
    fn thresholds_at_the_edges() {
        // The Collector's examples: 2/3 at precision 3, 0.4 at precision 3 and 6.
        assert_eq!(threshold_text(threshold(2.0 / 3.0, 3)), "555");
        assert_eq!(threshold_text(threshold(0.4, 3)), "99a");
        assert_eq!(threshold_text(threshold(0.4, 6)), "99999a");
        assert_eq!(threshold_text(threshold(1.0 / 16384.0, 4)), "fffc");
        // The smallest ratio keeps the top 12 digits, all `f`: it never rounds over
        // 2^56 into "keep nothing" or "keep everything".
        let smallest = threshold(kaas_pipeline::traces::sampling::MIN_SAMPLING_RATIO, 4);
        assert_eq!(threshold_text(smallest), "ffffffffffff");
        assert!(smallest < MAX_THRESHOLD);
        // Close to 1 the threshold may round to zero: everything kept.
        assert_eq!(threshold(0.999999, 4), 0);
        assert_eq!(threshold(f64::NAN, 4), 0);
        // Monotonic: a smaller ratio never has a smaller threshold.
        let mut last = 0;
        for i in (1..=1000).rev() {
            let t = threshold(f64::from(i) / 1000.0, 4);
            assert!(t >= last, "{i}");
            last = t;
        }
    }

    #[test]
    fn randomness_is_the_trace_ids_low_56_bits() {
        let id = hex::decode("fefefefefefefefefe80000000000000").unwrap();
        assert_eq!(trace_id_randomness(&id), Some(0x80000000000000));
        let id = hex::decode("111111111111111111ffffffffffffff").unwrap();
        assert_eq!(trace_id_randomness(&id), Some(0xffffffffffffff));
        assert_eq!(trace_id_randomness(&[]), None);
        assert_eq!(trace_id_randomness(&[0xff; 8]), None);
        assert_eq!(trace_id_randomness(&[0xff; 17]), None);
    }

    #[test]
    fn a_ratio_of_one_samples_nothing() {
        assert!(Sampler::new(1.0).is_none());
        let almost = Sampler::new(0.999999).unwrap();
        let mut span = Span::default();
        assert!(
            almost.keeps(&mut span),
            "threshold 0 keeps even without an id"
        );
        assert_eq!(span.trace_state, "ot=th:0");
    }
}
