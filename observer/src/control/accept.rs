//! The control port's TLS front: accepts every connection at once, runs at most
//! [`MAX_HANDSHAKES_IN_FLIGHT`] TLS handshakes at a time, and hands the finished
//! connections to the gRPC server.
//!
//! # Why not tonic's own TLS
//!
//! tonic starts the handshake of every accepted connection at once. When 10,000 agents
//! come back together (an observer restart, a network partition healing), 10,000
//! handshakes then share two cores: each progresses slowly, many reach the handshake
//! timeout together, and their agents are refused although the observer is only busy.
//! Here an accepted connection waits, holding nothing but its socket, for one of a few
//! handshake slots, in arrival order; the timeout counts from the start of its own
//! handshake. A slot is freed when the handshake ends, so the queue drains at the speed
//! the CPU allows and every agent that keeps waiting gets in.
//!
//! # Invariants
//!
//! - Accepting never waits for a slot, so the kernel's accept queue does not overflow
//!   into dropped SYNs and connect timeouts on the agents' side.
//! - A client that stalls mid-handshake holds its slot for at most the handshake
//!   timeout; one that disconnects while waiting fails at once when its turn comes.
//! - A connection waits for a slot at most [`DEFAULT_HANDSHAKE_WAIT`] (configurable):
//!   idle sockets cannot pile up in the queue for ever.
//! - One source has at most [`DEFAULT_MAX_PENDING_PER_SOURCE`] connections pending
//!   (waiting or handshaking, configurable); a further connection from it is closed
//!   as soon as it is accepted. A source is an IPv4 address, or an IPv6 /64 (the
//!   smallest block one host is usually given, so an attacker cannot multiply
//!   itself through the addresses of its own prefix). So a single address holding
//!   idle sockets can never take every handshake slot: with the defaults it holds
//!   at most half of them, and agents from other addresses keep getting in. The
//!   table of sources holds only sources with pending connections.
//! - Nothing is logged above `debug` per connection: a storm must not become a storm of
//!   log lines. Outcomes are counted (`kaas_observer_tls_handshakes_total`, including
//!   `refused` and `wait_timeout`) and the queue is a gauge
//!   (`kaas_observer_tls_handshakes_waiting`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use crate::internal_events::{HandshakeEnded, HandshakeMetrics, HandshakeOutcome};

/// Handshakes run at once. Several per core, so that the handshakes' round trips to
/// slow clients overlap with other handshakes' CPU work; few enough that when 10,000
/// connections arrive together each running handshake still gets a real share of two
/// cores (64 handshakes at about 0.5 ms of CPU each take about 16 ms), far inside
/// [`TLS_HANDSHAKE_TIMEOUT`](super::TLS_HANDSHAKE_TIMEOUT).
pub const MAX_HANDSHAKES_IN_FLIGHT: usize = 64;
/// How long an accepted connection may wait for a handshake slot. Longer than any
/// queue a real reconnect storm builds (10,000 agents on two loaded cores settled in
/// under 15 s, `docs/benchmarks.md`) and than the agents' own 10 s connect timeout, so
/// it only ever drops connections whose client gave up already or never meant to
/// handshake; short enough that idle sockets cannot accumulate in the queue.
pub const DEFAULT_HANDSHAKE_WAIT: Duration = Duration::from_secs(30);
/// Connections one source may have pending (waiting for a slot or handshaking) at
/// once: half of [`MAX_HANDSHAKES_IN_FLIGHT`], so one address never holds more than
/// half of the slots and the other half keeps serving everyone else. Agents behind one
/// NAT address share it; their handshakes take milliseconds each, so 32 at a time
/// still let a few hundred agents in per second, and a refused agent retries after
/// its jittered backoff. Raise it (`--control-max-pending-per-address`) for a large
/// NAT, or for a benchmark that runs thousands of agents from one loopback address.
pub const DEFAULT_MAX_PENDING_PER_SOURCE: usize = 32;
/// Finished connections waiting for the gRPC server to take them: it takes them as
/// fast as they come, so a few suffice.
const READY_QUEUE: usize = 64;
/// How long accepting pauses after the process ran out of file descriptors, so the
/// loop does not spin while connections close (hyper's accept loops do the same).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// The prefix length of an IPv6 source: a /64 is one host's (or one LAN's) block.
const IPV6_SOURCE_PREFIX_BITS: u32 = 64;

/// How the TLS front limits handshakes.
#[derive(Clone, Copy, Debug)]
pub struct HandshakeLimits {
    /// See [`MAX_HANDSHAKES_IN_FLIGHT`].
    pub in_flight: usize,
    /// How long one handshake may take once it started.
    pub timeout: Duration,
    /// See [`DEFAULT_HANDSHAKE_WAIT`].
    pub wait: Duration,
    /// See [`DEFAULT_MAX_PENDING_PER_SOURCE`].
    pub pending_per_source: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            in_flight: MAX_HANDSHAKES_IN_FLIGHT,
            timeout: super::TLS_HANDSHAKE_TIMEOUT,
            wait: DEFAULT_HANDSHAKE_WAIT,
            pending_per_source: DEFAULT_MAX_PENDING_PER_SOURCE,
        }
    }
}

/// Where a connection comes from, for [`HandshakeLimits::pending_per_source`]: the
/// IPv4 address, or the /64 of an IPv6 address (IPv4-mapped addresses count as IPv4).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Source(IpAddr);

impl Source {
    fn of(address: &SocketAddr) -> Self {
        match address.ip().to_canonical() {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let mask = u128::MAX << (128 - IPV6_SOURCE_PREFIX_BITS);
                Self(IpAddr::V6((u128::from(v6) & mask).into()))
            }
        }
    }
}

/// Pending connections per source. Holds only sources with at least one.
#[derive(Debug, Default)]
struct PendingBySource {
    counts: Mutex<HashMap<Source, usize>>,
}

impl PendingBySource {
    /// Counts one more connection of `source`, unless it has `limit` already.
    fn enter(self: &Arc<Self>, source: Source, limit: usize) -> Option<Pending> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(source).or_insert(0);
        if *count >= limit.max(1) {
            return None;
        }
        *count += 1;
        Some(Pending {
            table: self.clone(),
            source,
        })
    }
}

/// One pending connection; uncounted when dropped (the handshake ended, either way).
struct Pending {
    table: Arc<PendingBySource>,
    source: Source,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

/// The TLS connections of `listener`, handshaken with `config` under `limits`, for
/// `Server::serve_with_incoming` (or the REST API's listener). Accepting runs in its
/// own task; it stops when the returned stream is dropped (the server stopped).
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    limits: HandshakeLimits,
    metrics: HandshakeMetrics,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, io::Error>> + Send + 'static {
    let (ready, connections) = mpsc::channel(READY_QUEUE);
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(config),
        limits,
        metrics,
        ready,
    ));
    tokio_stream::StreamExt::map(ReceiverStream::new(connections), Ok)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: HandshakeLimits,
    metrics: HandshakeMetrics,
    ready: mpsc::Sender<TlsStream<TcpStream>>,
) {
    let slots = Arc::new(Semaphore::new(limits.in_flight.max(1)));
    let pending = Arc::new(PendingBySource::default());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = ready.closed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Per-connection errors (the client reset before we accepted) are
                // nothing; running out of descriptors passes when connections close.
                tracing::debug!(%error, "accepting a control connection failed");
                if !is_connection_error(&error) {
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                continue;
            }
        };
        let Some(pending) = pending.enter(Source::of(&peer), limits.pending_per_source) else {
            // Closed at once: the source has its share of the queue already.
            HandshakeEnded {
                outcome: HandshakeOutcome::Refused,
            }
            .emit(&metrics);
            tracing::debug!(%peer, "too many pending connections from this source; closed");
            continue;
        };
        // gRPC messages are small and answered: Nagle's algorithm would hold them back.
        let _ = tcp.set_nodelay(true);
        metrics.waiting.inc();
        tokio::spawn(handshake(
            Accepted { tcp, pending },
            acceptor.clone(),
            slots.clone(),
            limits,
            metrics.clone(),
            ready.clone(),
        ));
    }
}

/// An accepted connection, counted against its source until its handshake ends.
struct Accepted {
    tcp: TcpStream,
    pending: Pending,
}

/// Waits for a slot, then runs one handshake and passes the connection on.
async fn handshake(
    accepted: Accepted,
    acceptor: TlsAcceptor,
    slots: Arc<Semaphore>,
    limits: HandshakeLimits,
    metrics: HandshakeMetrics,
    ready: mpsc::Sender<TlsStream<TcpStream>>,
) {
    let Accepted { tcp, pending } = accepted;
    let slot = tokio::time::timeout(limits.wait, slots.acquire_owned()).await;
    metrics.waiting.dec();
    let slot = match slot {
        Ok(Ok(slot)) => slot,
        // The semaphore is never closed; without a slot there is nothing to do.
        Ok(Err(_)) => return,
        Err(_) => {
            HandshakeEnded {
                outcome: HandshakeOutcome::WaitTimeout,
            }
            .emit(&metrics);
            return;
        }
    };
    let outcome = tokio::time::timeout(limits.timeout, acceptor.accept(tcp)).await;
    drop(slot);
    drop(pending);
    match outcome {
        Ok(Ok(stream)) => {
            HandshakeEnded {
                outcome: HandshakeOutcome::Success,
            }
            .emit(&metrics);
            // Err: the server stopped; the connection closes with the stream.
            let _ = ready.send(stream).await;
        }
        Ok(Err(error)) => {
            HandshakeEnded {
                outcome: HandshakeOutcome::Failure,
            }
            .emit(&metrics);
            tracing::debug!(%error, "TLS handshake failed");
        }
        Err(_) => {
            HandshakeEnded {
                outcome: HandshakeOutcome::Timeout,
            }
            .emit(&metrics);
        }
    }
}

/// Errors of one connection, after which the next accept may succeed at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source::of(&SocketAddr::new(text.parse().unwrap(), 443))
    }

    #[test]
    fn an_ipv6_source_is_its_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            source("2001:db8:1:2:aaaa::1"),
            source("2001:db8:1:2:bbbb::9")
        );
        assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
        assert_eq!(source("::ffff:192.0.2.7"), source("192.0.2.7"));
        assert_ne!(source("192.0.2.7"), source("192.0.2.8"));
    }

    #[test]
    fn a_source_gets_its_limit_and_its_slot_back_when_a_connection_ends() {
        let table = Arc::new(PendingBySource::default());
        let a = source("192.0.2.1");
        let b = source("192.0.2.2");
        let first = table.enter(a, 2).expect("first");
        let second = table.enter(a, 2).expect("second");
        assert!(table.enter(a, 2).is_none(), "a third is over the limit");
        assert!(
            table.enter(b, 2).is_some(),
            "another source is not affected"
        );
        drop(first);
        let third = table.enter(a, 2).expect("a freed place is reused");
        drop((second, third));
        assert!(
            table.counts.lock().unwrap().is_empty(),
            "sources without pending connections are forgotten"
        );
        // A limit of 0 would refuse everything: it means 1.
        assert!(table.enter(a, 0).is_some());
    }
}
