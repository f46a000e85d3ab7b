//! Which traces a trace pipeline keeps: a ratio in (0, 1], decided per trace by
//! OpenTelemetry's consistent probability sampling, so every pipeline, replica and
//! cluster sampling at the same ratio keeps the same traces, and a trace sampled
//! upstream is never kept at a higher rate than its threshold says.
//!
//! A ratio `p` is the rejection threshold `(1 - p) × 2^56`, compared with the trace id's
//! low 56 bits (or the `rv` value of its `tracestate`); the agent writes the threshold
//! it applied to `tracestate` as `ot=th:…`. The smallest probability the 56 bits
//! express is 2^-56; a smaller ratio would keep nothing and is refused.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::{FieldErrors, field};

/// The ratio when `sampling` is not set: every trace is kept. Sampling loses data, so
/// it is the tenant's choice to make; a gateway that keeps everything changes nothing.
pub const DEFAULT_SAMPLING_RATIO: f64 = 1.0;
/// The smallest ratio consistent probability sampling expresses: 2^-56, one trace in
/// the whole 56-bit randomness space.
pub const MIN_SAMPLING_RATIO: f64 = 1.0 / (1u64 << 56) as f64;

/// Probabilistic sampling.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sampling {
    /// The share of traces kept, above 0 and at most 1, e.g. `0.1` for one in ten.
    /// Required when `sampling` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<serde_json::Number>,
}

/// Checked sampling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValidatedSampling {
    /// The share of traces kept, in [2^-56, 1].
    pub ratio: f64,
}

impl Default for ValidatedSampling {
    fn default() -> Self {
        Self {
            ratio: DEFAULT_SAMPLING_RATIO,
        }
    }
}

impl Sampling {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) -> ValidatedSampling {
        let ratio_path = field(path, "ratio");
        let Some(number) = &self.ratio else {
            errors.add(
                ratio_path,
                "required: the share of traces to keep, above 0 and at most 1 (e.g. 0.1); \
                 remove sampling to keep every trace",
            );
            return ValidatedSampling::default();
        };
        // A JSON number is always finite; an integer beyond f64's precision is out of
        // range whatever its rounding.
        let ratio = number.as_f64().unwrap_or(f64::INFINITY);
        if !(ratio > 0.0 && ratio <= 1.0) {
            errors.add(
                ratio_path,
                format!(
                    "{number} is not a sampling ratio: it must be above 0 and at most 1 (1 \
                     keeps every trace)"
                ),
            );
            return ValidatedSampling::default();
        }
        if ratio < MIN_SAMPLING_RATIO {
            errors.add(
                ratio_path,
                format!(
                    "{number} is below 2^-56, the smallest ratio consistent sampling can \
                     express; it would keep no trace"
                ),
            );
            return ValidatedSampling::default();
        }
        ValidatedSampling { ratio }
    }
}
