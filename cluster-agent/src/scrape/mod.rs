//! Scraping targets: building each target's labels from what discovery found
//! ([`target`]).

pub mod target;
