//! Label sets ([`kaas_series::labels`]), where the agent's modules have always found
//! them.

pub use kaas_series::labels::*;
