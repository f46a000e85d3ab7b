//! Scraping targets: each target's labels from what discovery found ([`target`]), and
//! reading what the target exposes ([`exposition`]).

pub mod exposition;
pub mod target;
