//! The agent's notable events, in vector's `internal_events` style: each event is one
//! type whose `emit` counts it with bounded labels, names its condition reason
//! (`kaas_pipeline::status::reasons`) and logs it, so a call site is one line and what
//! `/metrics` shows ([`crate::telemetry`]) cannot drift from what is logged. The events
//! own the counters they add to; the telemetry collector only reads them.
//!
//! | event | counts | reason |
//! |---|---|---|
//! | [`ConfigLoaded`] | `kaas_agent_config_last_reload_successful` = 1 (a first load is no reload) | `Applied` |
//! | [`ConfigReloaded`] | `kaas_agent_config_reloads_total{result="success"}`, the gauge = 1 | `Applied` |
//! | [`ConfigRefused`] | `kaas_agent_config_reloads_total{result="failure"}`, the gauge = 0 | `ConfigRejected` |
//!
//! An event's own log line is a debug line naming the event, its labels and its reason;
//! the operator-facing line with the detail (the refused fields, the file's error)
//! stays where that detail is. Each pipeline's errors and drops have their one place
//! in the pipeline's health (`pipeline::stats`), which the data path owns.

mod reload;

pub use reload::{ConfigLoaded, ConfigRefused, ConfigReloaded, ConfigSource, ReloadState};
