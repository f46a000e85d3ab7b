//! c -> d through its own `pub use`, which d then imports back through c.
pub use crate::d::Inner;
