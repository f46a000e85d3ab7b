//! The limits a scrape runs under when its pipeline sets none (or 0, which Prometheus
//! reads as "no limit"): every one a named constant with its reason, so that no target
//! gets the agent's memory without a bound.

use std::num::{NonZeroU32, NonZeroU64};

/// Largest body read from a target (after gzip decoding): vmagent's default
/// (`-promscrape.maxScrapeSize`, 16 MB; Prometheus has none). A body is held whole while
/// it is parsed, and next to it the request its samples become, so this bounds what
/// one target can make the agent hold: about 100,000 series of realistic length.
pub const DEFAULT_BODY_SIZE_LIMIT: NonZeroU64 = match NonZeroU64::new(16 << 20) {
    Some(limit) => limit,
    None => panic!("a limit must not be 0"),
};
/// Most samples one scrape may write (after metric relabeling) unless the pipeline sets
/// `sampleLimit`. Prometheus has no limit by default; here every new series costs a
/// cache entry and every sample about 80 bytes of request until the scrape ends, so a
/// target exposing millions fails at the first sample over the limit instead. 100,000
/// is what a body at the size limit holds at realistic line lengths; larger targets
/// (kube-state-metrics of a big cluster) get a `sampleLimit` of their own.
pub const DEFAULT_SAMPLE_LIMIT: NonZeroU32 = non_zero(100_000);
/// Most labels per series unless the pipeline sets `labelLimit`: the push receivers'
/// limit ([`kaas_series::limits::DEFAULT_MAX_LABELS_PER_SERIES`]).
pub const DEFAULT_LABEL_LIMIT: NonZeroU32 =
    non_zero(kaas_series::limits::DEFAULT_MAX_LABELS_PER_SERIES);
/// Longest label name unless the pipeline sets `labelNameLengthLimit`: the push
/// receivers' limit ([`kaas_series::limits::DEFAULT_MAX_LABEL_NAME_BYTES`]).
pub const DEFAULT_LABEL_NAME_LENGTH_LIMIT: NonZeroU32 =
    non_zero(kaas_series::limits::DEFAULT_MAX_LABEL_NAME_BYTES);
/// Longest label value unless the pipeline sets `labelValueLengthLimit`: the push
/// receivers' limit ([`kaas_series::limits::DEFAULT_MAX_LABEL_VALUE_BYTES`]).
pub const DEFAULT_LABEL_VALUE_LENGTH_LIMIT: NonZeroU32 =
    non_zero(kaas_series::limits::DEFAULT_MAX_LABEL_VALUE_BYTES);

/// A non-zero `u32` from a limit constant (a compile error when it is 0 or too large).
const fn non_zero(limit: usize) -> NonZeroU32 {
    assert!(limit <= u32::MAX as usize, "a limit must fit in a u32");
    match NonZeroU32::new(limit as u32) {
        Some(limit) => limit,
        None => panic!("a limit must not be 0"),
    }
}
