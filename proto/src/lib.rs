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
