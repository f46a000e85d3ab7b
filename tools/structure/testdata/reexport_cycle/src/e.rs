//! e -> f through a glob import; f -> e through a name that glob brings in.
pub use crate::f::*;
