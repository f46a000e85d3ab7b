//! Scraping targets: each target's labels from what discovery found ([`target`]), and
//! reading what the target exposes ([`exposition`]), and the loop that scrapes each
//! target ([`scraper`]) under its limits ([`limits`]).

pub mod client;
pub mod exposition;
pub mod limits;
pub mod scraper;
pub mod target;
