//! Where targets come from: the pipelines' static targets, and Kubernetes
//! ([`kubernetes`]): pods found through the API server, labelled exactly as Prometheus'
//! Kubernetes service discovery labels them, so existing relabel configs carry over.
//!
//! Discovery only produces label sets (`__address__` plus `__meta_*` labels); turning
//! them into scrape targets (defaults, relabeling) is [`crate::scrape::target`]'s job,
//! and starting and stopping scrape loops the pipeline runtime's.

pub mod kubernetes;
