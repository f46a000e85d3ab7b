//! Outbound plumbing every part of the agent that talks to a server shares: TLS
//! ([`tls`]), credentials and secret resolution ([`auth`]), where an exporter sends
//! ([`destination`], URLs bound from Secrets), the HTTP endpoint of an exporter
//! ([`http`]), how a failed send is classified ([`retry`]), the one
//! exponential [`backoff`], and the agent's `User-Agent`.
//!
//! A leaf: it uses no other module of the agent except the file policy
//! ([`crate::files`]) and the pipeline events it reports ([`crate::internal_events`]). Where secret values come from is the [`auth::SecretStore`] trait
//! it defines; Kubernetes discovery implements it.

pub mod auth;
pub mod backoff;
pub mod destination;
pub mod http;
pub mod retry;
pub mod tls;

/// `User-Agent` of every request the agent sends.
pub const USER_AGENT: &str = concat!("kaas-observer-agent/", env!("CARGO_PKG_VERSION"));
