//! Wire formats: the control contract between the observer and each cluster-agent
//! ([`control`]), and the Prometheus remote-write ([`remote_write`]), OTLP ([`otlp`])
//! and Loki push ([`loki`]) messages the agent sends and the receivers decode.
//!
//! The messages and the `AgentControl` service are defined in
//! `proto/kaas/control/v1/control.proto`, which documents every field. The Rust code in
//! `src/gen/` is generated from it and committed, so building the workspace needs no
//! `protoc` and no code generator; `tests/generated_code_is_current.rs` regenerates it
//! with `protox` (a pure-Rust protobuf compiler) and fails when the committed copy has
//! drifted. To regenerate after editing the `.proto` file:
//!
//! ```text
//! KAAS_UPDATE_GENERATED=1 cargo test -p kaas-proto --test generated_code_is_current
//! ```

/// `kaas.control.v1`: Join, the Connect stream, and their messages.
pub mod control {
    /// Certificate requests (`CertificateRequest`) the observer answers on one Connect
    /// stream; past it, each is refused and the agent must open a fresh stream. Bounds
    /// how fast one stream can make the observer sign and record certificates.
    pub const MAX_CERTIFICATE_REQUESTS_PER_STREAM: u32 = 64;
    /// Requests a cluster-level instance's stream keeps for itself: its own renewal
    /// and a few retries of it, whatever node certificates it has asked for.
    pub const CERTIFICATE_REQUESTS_KEPT_FOR_RENEWAL: u32 = 16;
    /// Node certificates a cluster-level instance asks for on one stream before it
    /// opens a fresh one: the observer's bound less what it keeps for its renewal, so
    /// an issuance never meets the observer's refusal.
    pub const NODE_CERTIFICATES_PER_STREAM: u32 =
        MAX_CERTIFICATE_REQUESTS_PER_STREAM - CERTIFICATE_REQUESTS_KEPT_FOR_RENEWAL;
    const _: () = assert!(
        NODE_CERTIFICATES_PER_STREAM > 0
            && NODE_CERTIFICATES_PER_STREAM < MAX_CERTIFICATE_REQUESTS_PER_STREAM,
        "a stream must leave room for node certificates and for the instance's renewal"
    );

    /// Version 1 of the control contract.
    #[allow(clippy::all, missing_docs, unreachable_pub)]
    pub mod v1 {
        include!("gen/kaas.control.v1.rs");
    }
}

pub mod loki;
pub mod otlp;
pub mod remote_write;

/// Path of the `.proto` file, relative to this crate's root, for tools that compile it.
pub const PROTO_FILE: &str = "proto/kaas/control/v1/control.proto";
/// The include directory `PROTO_FILE` is relative to.
pub const PROTO_INCLUDE_DIR: &str = "proto";
