//! Scraping targets: each target's labels from what discovery found ([`target`]), and
//! reading what the target exposes ([`exposition`]), and the loop that scrapes each
//! target ([`scraper`]) under its limits ([`limits`]); the agent's own credentials go
//! only to the target they are bound to ([`credentials`]).

pub mod client;
pub mod credentials;
pub mod exposition;
pub mod limits;
pub mod scraper;
pub mod target;
