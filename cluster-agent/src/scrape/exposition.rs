//! The exposition parser ([`kaas_exposition`]), where the scraper has always found it.

pub use kaas_exposition::*;
