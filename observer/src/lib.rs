//! The observer: the central control plane of kaas-observer.
//!
//! It will onboard clusters, store tenants and pipelines, push each cluster's rendered
//! pipelines to its agent over the control stream, and track health and lifecycle (see
//! `docs/architecture.md`). What exists so far is the command line and the offline
//! pipeline validator in [`cli`].

pub mod cli;
