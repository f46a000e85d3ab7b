//! Scraping.
pub mod client;
