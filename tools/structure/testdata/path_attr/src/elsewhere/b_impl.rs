//! Module b: a file named by `#[path]` declares its children beside itself.
pub mod inner;
