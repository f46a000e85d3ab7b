//! The `tcp` module: a TCP connection to `host:port` that must be accepted; closed
//! again at once without sending anything (the blackbox exporter's `tcp_connect`).

use super::config::{TcpProbe, parse_host_port};
use crate::egress::EgressPolicy;

use super::{ProbeFailure, ProbeOutcome, connect, resolve};

/// A `tcp` probe ready to run.
#[derive(Debug)]
pub(crate) struct PreparedTcp {
    host: String,
    port: u16,
}

impl PreparedTcp {
    /// From a validated `module.tcp`.
    pub(crate) fn new(tcp: &TcpProbe) -> Result<Self, String> {
        let (host, port) = parse_host_port(&tcp.address, None)?;
        Ok(Self { host, port })
    }

    /// Resolves and connects.
    pub(crate) async fn run(
        &self,
        egress: &EgressPolicy,
        outcome: &mut ProbeOutcome,
    ) -> Result<(), ProbeFailure> {
        let addresses = resolve(egress, &self.host, self.port, &mut outcome.dns_lookup).await?;
        let _stream = connect(&addresses).await?;
        Ok(())
    }
}
