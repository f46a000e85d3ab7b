//! The observer's notable events, in vector's `internal_events` style: each event is
//! one type whose `emit` counts it with bounded labels and logs it, and which owns the
//! counter it adds to, so a call site is one line and the count cannot drift from the
//! log. The families the observer registers are listed in [`crate::telemetry`].
//!
//! | event | counts |
//! |---|---|
//! | [`EgressRefused`] | `kaas_observer_egress_refusals_total{context, range}` |
//!
//! The observer's other counters (API requests and refusals, control pushes, joins and
//! handshakes, onboarding syncs, the fleet writer) are still counted by the metric
//! types of their own modules.

mod egress;

pub use egress::{EgressRefusals, EgressRefused};
