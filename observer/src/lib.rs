//! The observer: the central control plane of kaas-observer.
//!
//! It onboards clusters, stores tenants and pipelines ([`store`]), serves the REST API
//! ([`api`], on the [`listeners`] that also serve `/metrics` apart from it) and the
//! agents' control stream ([`control`]) with per-cluster mTLS identities
//! ([`identity`]), and pushes each cluster's rendered pipelines to its agent (see
//! `docs/architecture.md`).

pub mod api;
pub mod cli;
pub mod cluster_id;
pub mod control;
pub mod egress;
pub mod fleet;
pub mod identity;
pub mod integrations;
pub mod internal_events;
pub mod labels;
pub mod lifecycle;
pub mod listeners;
pub mod onboarding;
pub mod probe_target;
pub mod probes;
pub mod rendering;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod telemetry;
