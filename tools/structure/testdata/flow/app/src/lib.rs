//! A crate whose map names its data path.
//!
//! <!-- flow -->
//! `discovery` finds targets, `scrape` reads them (`scrape::client`), `buffer` holds
//! what was read and `exporters::remote_write` sends it.
//! <!-- /flow -->

pub mod buffer;
pub mod discovery;
pub mod exporters;
pub mod scrape;
