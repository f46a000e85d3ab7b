//! Scraping targets: each target's labels from what discovery found ([`target`]), how
//! it is scraped ([`config`]) under its limits ([`limits`]), reading what it exposes
//! ([`exposition`]) over the scrape client ([`client`]), and the loop that scrapes each
//! target ([`scraper`]) through its series cache ([`cache`], labelled by
//! [`series_labels`]) into the pipeline's [`sink`]. Every failure is a [`error`]; the
//! agent's own credentials go only to the target they are bound to ([`credentials`]).

mod cache;
pub mod client;
pub mod config;
pub mod credentials;
pub mod error;
pub mod exposition;
pub mod limits;
pub mod scraper;
mod series_labels;
pub mod sink;
pub mod target;
