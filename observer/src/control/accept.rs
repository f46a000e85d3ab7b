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
//! - Nothing is logged above `debug` per connection: a storm must not become a storm of
//!   log lines. Outcomes are counted (`kaas_observer_tls_handshakes_total`) and the
//!   queue is a gauge (`kaas_observer_tls_handshakes_waiting`).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

/// Handshakes run at once. Several per core, so that the handshakes' round trips to
/// slow clients overlap with other handshakes' CPU work; few enough that when 10,000
/// connections arrive together each running handshake still gets a real share of two
/// cores (64 handshakes at about 0.5 ms of CPU each take about 16 ms), far inside
/// [`TLS_HANDSHAKE_TIMEOUT`](super::TLS_HANDSHAKE_TIMEOUT).
pub const MAX_HANDSHAKES_IN_FLIGHT: usize = 64;
/// Finished connections waiting for the gRPC server to take them: it takes them as
/// fast as they come, so a few suffice.
const READY_QUEUE: usize = 64;
/// How long accepting pauses after the process ran out of file descriptors, so the
/// loop does not spin while connections close (hyper's accept loops do the same).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How the TLS front limits handshakes.
#[derive(Clone, Copy, Debug)]
pub struct HandshakeLimits {
    /// See [`MAX_HANDSHAKES_IN_FLIGHT`].
    pub in_flight: usize,
    /// How long one handshake may take once it started.
    pub timeout: Duration,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            in_flight: MAX_HANDSHAKES_IN_FLIGHT,
            timeout: super::TLS_HANDSHAKE_TIMEOUT,
        }
    }
}

/// `result` label of `kaas_observer_tls_handshakes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeResult {
    /// `success`, `failure` (the client closed or sent something that is not an
    /// acceptable TLS handshake) or `timeout`.
    pub result: &'static str,
}

/// The TLS front's metrics. Cheap to clone (the metrics are shared).
#[derive(Clone, Debug, Default)]
pub struct HandshakeMetrics {
    /// Handshakes on the control port, by result.
    pub handshakes: Family<HandshakeResult, Counter>,
    /// Accepted connections waiting for a handshake slot.
    pub waiting: Gauge,
}

impl HandshakeMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kaas_observer_tls_handshakes",
            "TLS handshakes on the agent control port; result is success, failure or timeout.",
            self.handshakes.clone(),
        );
        registry.register(
            "kaas_observer_tls_handshakes_waiting",
            "Accepted agent connections waiting for a TLS handshake slot.",
            self.waiting.clone(),
        );
    }

    fn count(&self, result: &'static str) {
        self.handshakes
            .get_or_create(&HandshakeResult { result })
            .inc();
    }
}

/// The TLS connections of `listener`, handshaken with `config` under `limits`, for
/// `Server::serve_with_incoming`. Accepting runs in its own task; it stops when the
/// returned stream is dropped (the server stopped).
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
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = ready.closed() => return,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
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
        // gRPC messages are small and answered: Nagle's algorithm would hold them back.
        let _ = tcp.set_nodelay(true);
        metrics.waiting.inc();
        tokio::spawn(handshake(
            tcp,
            acceptor.clone(),
            slots.clone(),
            limits.timeout,
            metrics.clone(),
            ready.clone(),
        ));
    }
}

/// Waits for a slot, then runs one handshake and passes the connection on.
async fn handshake(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    slots: Arc<Semaphore>,
    timeout: Duration,
    metrics: HandshakeMetrics,
    ready: mpsc::Sender<TlsStream<TcpStream>>,
) {
    let slot = slots.acquire_owned().await;
    metrics.waiting.dec();
    // The semaphore is never closed; without a slot there is nothing to do.
    let Ok(slot) = slot else { return };
    let outcome = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
    drop(slot);
    match outcome {
        Ok(Ok(stream)) => {
            metrics.count("success");
            // Err: the server stopped; the connection closes with the stream.
            let _ = ready.send(stream).await;
        }
        Ok(Err(error)) => {
            metrics.count("failure");
            tracing::debug!(%error, "TLS handshake on the control port failed");
        }
        Err(_) => {
            metrics.count("timeout");
            tracing::debug!("TLS handshake on the control port timed out");
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
