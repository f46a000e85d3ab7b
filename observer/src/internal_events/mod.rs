//! The observer's notable events, in vector's `internal_events` style: each event is
//! one type whose `emit` counts it with bounded labels and logs it, and which owns the
//! counter it adds to, so a call site is one line and the count cannot drift from the
//! log. The families the observer registers are listed in [`crate::telemetry`].
//!
//! | event | counts |
//! |---|---|
//! | [`EgressRefused`] | `kaas_observer_egress_refusals_total{context, range}` |
//! | [`HandshakeEnded`] | `kaas_observer_tls_handshakes_total{result}` (and the API port's `kaas_observer_api_tls_handshakes_total`) |
//! | [`JoinRefused`] | `kaas_observer_join_failures_total{reason}` |
//! | [`StreamRefused`] | `kaas_observer_agent_streams_refused_total{reason}` |
//! | [`ConfigPushed`] | `kaas_observer_config_pushes_total{result}` |
//! | [`GatewayAnswered`], [`GatewayRefused`], [`GatewaySeriesDropped`], [`GatewayForwarded`], [`GatewayLogsForwarded`] | the receive gateway's `kaas_gateway_*` families (`observer gateway`) |
//! | [`SeriesWritten`] | `kaas_observer_remote_write_samples_total{result}`, `kaas_observer_remote_write_last_success_timestamp_seconds` |
//!
//! Two families of events keep their one place beside the code that knows their
//! labels: the REST API's requests and refusals are counted by its middleware
//! (`api::metrics`, which alone sees the route template and the authenticated tenant),
//! and onboarding's syncs and cluster changes by `onboarding::events`, whose labels are
//! the onboarding sources. Condition reasons are the agents' to name (the observer
//! derives its pipelines' conditions from their reports, `control::status`), so the
//! observer's events name none.
//!
//! This module is a leaf of the observer's map: it uses nothing of the observer.

mod control;
mod egress;
mod gateway;
mod remote_write;

pub use control::{
    ConfigPushOutcome, ConfigPushed, ConfigPushes, HandshakeEnded, HandshakeMetrics,
    HandshakeOutcome, JoinMetrics, JoinRefusal, JoinRefused, StreamRefusal, StreamRefusals,
    StreamRefused,
};
pub use egress::{EgressRefusals, EgressRefused};
pub use gateway::{
    GatewayAnswered, GatewayForwarded, GatewayLogsForwarded, GatewayMetrics, GatewayRefused,
    GatewaySeriesDropped,
};
pub use remote_write::{RemoteWriteMetrics, SeriesWritten, WriteOutcome};
