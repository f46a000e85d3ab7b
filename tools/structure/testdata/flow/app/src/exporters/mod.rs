//! Exporters.
pub mod remote_write;
