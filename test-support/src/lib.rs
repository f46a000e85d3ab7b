//! Fake peers and process harnesses shared by the tests of every crate. Never a
//! dependency of shipped code.
//!
//! - [`process`]: run a binary with a deadline and capture its output; keep a server
//!   process alive for a test and kill it on drop; find free loopback ports.
//! - [`http`]: a minimal loopback HTTP client for reading real peers' APIs, and the
//!   loopback server the fake HTTP peers run on.
//! - [`remote_write_receiver`]: a recording remote-write receiver with scripted answers.
//! - [`recording_receiver`]: a recording HTTP receiver for any push protocol, keeping
//!   raw bodies for the test to decode independently, with scripted answers.
//! - [`loki`]: Loki pushes decoded with Loki's published `push.proto`, independent of
//!   the product's structs.
//! - [`peers`]: real nginx and Prometheus processes on loopback.
//! - [`tls`]: certificates made per run and nginx terminating mutual TLS with them.
//! - [`journal`]: journal files written by the real `systemd-journal-remote` (and a
//!   minimal writer for what it does not write), read back by `journalctl`.
//! - [`kube_api`]: list and watch-event bodies for tests driving kube's mock client.
//! - [`fake_observer`]: an `AgentControl` server that speaks the real control contract
//!   (hash-based config push, join tokens) and records everything an agent sends.

pub mod fake_inventory;
pub mod fake_observer;
pub mod http;
pub mod journal;
pub mod kube_api;
pub mod loki;
pub mod peers;
pub mod process;
pub mod recording_receiver;
pub mod remote_write_receiver;
pub mod tls;
