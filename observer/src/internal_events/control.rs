//! The control port's events and the counters they own: [`HandshakeEnded`] (a TLS
//! handshake on the agent control port or the API port, however it ended),
//! [`JoinRefused`] (a `Join` call refused, and why), [`StreamRefused`] (an agent
//! stream refused at its admission, and why) and [`ConfigPushed`] (a configuration
//! sent down an agent stream, and what became of it). Every label value
//! comes from a fixed set, whatever peers send.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a TLS handshake ended: the `result` of `kaas_observer_tls_handshakes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeOutcome {
    /// The handshake completed; the connection is served.
    Success,
    /// The client closed or sent something that is not an acceptable TLS handshake.
    Failure,
    /// The handshake took too long.
    Timeout,
    /// No handshake slot came free within the wait deadline.
    WaitTimeout,
    /// Its source had too many connections pending; closed at once.
    Refused,
}

impl HandshakeOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Timeout => "timeout",
            Self::WaitTimeout => "wait_timeout",
            Self::Refused => "refused",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// A TLS front's metrics. Cheap to clone (the metrics are shared).
#[derive(Clone, Debug, Default)]
pub struct HandshakeMetrics {
    handshakes: Family<ResultLabels, Counter>,
    /// Accepted connections waiting for a handshake slot.
    pub waiting: Gauge,
}

impl HandshakeMetrics {
    /// Registers the metrics of the agent control port in `registry`
    /// (`kaas_observer_tls_handshakes_total`, `kaas_observer_tls_handshakes_waiting`).
    pub fn register(&self, registry: &mut Registry) {
        self.register_named(registry, "kaas_observer", "the agent control port");
    }

    /// Registers the metrics in `registry` as `<prefix>_tls_handshakes_total` and
    /// `<prefix>_tls_handshakes_waiting`, described as being on `port`.
    pub fn register_named(&self, registry: &mut Registry, prefix: &str, port: &str) {
        registry.register(
            format!("{prefix}_tls_handshakes"),
            format!(
                "TLS handshakes on {port}; result is success, failure, timeout, wait_timeout or refused."
            ),
            self.handshakes.clone(),
        );
        registry.register(
            format!("{prefix}_tls_handshakes_waiting"),
            format!("Accepted connections on {port} waiting for a TLS handshake slot."),
            self.waiting.clone(),
        );
    }

    /// Handshakes that ended with `outcome` so far.
    pub fn ended(&self, outcome: HandshakeOutcome) -> u64 {
        self.handshakes
            .get_or_create(&ResultLabels {
                result: outcome.as_str(),
            })
            .get()
    }
}

/// A TLS handshake ended: counted by outcome, and logged at debug level (a peer that
/// cannot handshake must not be able to fill the log).
#[derive(Clone, Copy, Debug)]
pub struct HandshakeEnded {
    /// How.
    pub outcome: HandshakeOutcome,
}

impl HandshakeEnded {
    /// Counts the handshake in `metrics` and logs it.
    pub fn emit(self, metrics: &HandshakeMetrics) {
        metrics
            .handshakes
            .get_or_create(&ResultLabels {
                result: self.outcome.as_str(),
            })
            .inc();
        if self.outcome != HandshakeOutcome::Success {
            tracing::debug!(
                result = self.outcome.as_str(),
                "TLS handshake did not complete"
            );
        }
    }
}

/// Why a `Join` was refused: the `reason` of `kaas_observer_join_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRefusal {
    /// The caller's address has used up its join budget.
    RateLimited,
    /// The request is not a join request the observer can read.
    Malformed,
    /// No such join token.
    UnknownToken,
    /// The token has expired.
    ExpiredToken,
    /// The token was redeemed already.
    UsedToken,
    /// The token's cluster is being deleted or is deleted.
    ClusterGone,
    /// The store could not be reached.
    Unavailable,
}

impl JoinRefusal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::Malformed => "malformed",
            Self::UnknownToken => "unknown_token",
            Self::ExpiredToken => "expired_token",
            Self::UsedToken => "used_token",
            Self::ClusterGone => "cluster_gone",
            Self::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `Join`'s metrics.
#[derive(Debug, Default)]
pub struct JoinMetrics {
    failures: Family<ReasonLabels, Counter>,
}

impl JoinMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kaas_observer_join_failures",
            "Join calls refused, by reason: rate_limited, malformed, unknown_token, expired_token, used_token, cluster_gone, unavailable.",
            self.failures.clone(),
        );
    }
}

/// A `Join` call was refused: counted by reason and logged at debug level (the caller
/// is told why; who called goes to the caller's own log line, with its fields made
/// loggable).
#[derive(Clone, Copy, Debug)]
pub struct JoinRefused {
    /// Why.
    pub reason: JoinRefusal,
}

impl JoinRefused {
    /// Counts the refusal in `metrics` and logs it.
    pub fn emit(self, metrics: &JoinMetrics) {
        metrics
            .failures
            .get_or_create(&ReasonLabels {
                reason: self.reason.as_str(),
            })
            .inc();
        tracing::debug!(reason = self.reason.as_str(), "join refused");
    }
}

/// What became of a configuration sent down an agent stream: the `result` of
/// `kaas_observer_config_pushes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigPushOutcome {
    /// The agent answered (APPLIED or FAILED: its report says which).
    Success,
    /// The stream ended, or could not take the message, before an answer.
    Failure,
    /// Not sent: the configuration is over the size limit.
    TooLarge,
}

impl ConfigPushOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::TooLarge => "too_large",
        }
    }
}

/// Configuration pushes by outcome.
#[derive(Debug, Default)]
pub struct ConfigPushes(Family<ResultLabels, Counter>);

impl ConfigPushes {
    /// Registers the counter in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kaas_observer_config_pushes",
            "Configurations sent down agent streams; result is success (the agent answered), failure (the stream ended first) or too_large (not sent: over the size limit).",
            self.0.clone(),
        );
    }
}

/// A configuration push ended: counted by outcome. Its log line, naming the cluster
/// and the configuration, is the caller's.
#[derive(Clone, Copy, Debug)]
pub struct ConfigPushed {
    /// How it ended.
    pub outcome: ConfigPushOutcome,
}

impl ConfigPushed {
    /// Counts the push in `pushes`.
    pub fn emit(self, pushes: &ConfigPushes) {
        pushes
            .0
            .get_or_create(&ResultLabels {
                result: self.outcome.as_str(),
            })
            .inc();
    }
}

/// Why an agent's control stream was refused at its admission: the `reason` of
/// `kaas_observer_agent_streams_refused_total`. Each is `PERMISSION_DENIED` to the
/// agent; a store that cannot answer is `UNAVAILABLE` and not counted here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamRefusal {
    /// The hello names another cluster than the certificate's.
    WrongCluster,
    /// The hello claims a role (cluster, node, gateway) the certificate does not allow:
    /// a node's or gateway's certificate used to reach for another role's credentials.
    WrongRole,
    /// The certificate's cluster is not registered.
    UnknownCluster,
    /// The certificate's cluster was deleted.
    DeletedCluster,
    /// The certificate is revoked, unknown, or recorded for another instance.
    Certificate,
}

impl StreamRefusal {
    /// Every reason, in label order.
    pub const ALL: [Self; 5] = [
        Self::WrongCluster,
        Self::WrongRole,
        Self::UnknownCluster,
        Self::DeletedCluster,
        Self::Certificate,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WrongCluster => "wrong_cluster",
            Self::WrongRole => "wrong_role",
            Self::UnknownCluster => "unknown_cluster",
            Self::DeletedCluster => "deleted_cluster",
            Self::Certificate => "certificate",
        }
    }
}

/// Agent streams refused at their admission, by reason.
#[derive(Debug, Default)]
pub struct StreamRefusals(Family<ReasonLabels, Counter>);

impl StreamRefusals {
    /// Registers the counter in `registry`, every reason at zero.
    pub fn register(&self, registry: &mut Registry) {
        for reason in StreamRefusal::ALL {
            drop(self.0.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            }));
        }
        registry.register(
            "kaas_observer_agent_streams_refused",
            "Agent control streams refused at their admission (PERMISSION_DENIED); reason is wrong_cluster, wrong_role (a certificate used for a role it does not allow), unknown_cluster, deleted_cluster or certificate (revoked, unknown or another instance's).",
            self.0.clone(),
        );
    }

    /// Streams refused for `reason` so far.
    pub fn count(&self, reason: StreamRefusal) -> u64 {
        self.0
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .get()
    }
}

/// An agent stream was refused at its admission: counted by reason. Its log line,
/// naming the cluster and instance, is the caller's (it knows them).
#[derive(Clone, Copy, Debug)]
pub struct StreamRefused {
    /// Why.
    pub reason: StreamRefusal,
}

impl StreamRefused {
    /// Counts the refusal in `refusals`.
    pub fn emit(self, refusals: &StreamRefusals) {
        refusals
            .0
            .get_or_create(&ReasonLabels {
                reason: self.reason.as_str(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_counted_by_outcome() {
        let metrics = HandshakeMetrics::default();
        HandshakeEnded {
            outcome: HandshakeOutcome::Timeout,
        }
        .emit(&metrics);
        HandshakeEnded {
            outcome: HandshakeOutcome::Timeout,
        }
        .emit(&metrics.clone());
        assert_eq!(metrics.ended(HandshakeOutcome::Timeout), 2, "clones share");
        assert_eq!(metrics.ended(HandshakeOutcome::Success), 0);
    }

    #[test]
    fn the_registered_families_carry_the_documented_label_values() {
        let mut registry = Registry::default();
        let joins = JoinMetrics::default();
        let pushes = ConfigPushes::default();
        joins.register(&mut registry);
        pushes.register(&mut registry);
        JoinRefused {
            reason: JoinRefusal::ExpiredToken,
        }
        .emit(&joins);
        ConfigPushed {
            outcome: ConfigPushOutcome::TooLarge,
        }
        .emit(&pushes);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"kaas_observer_join_failures_total{reason="expired_token"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kaas_observer_config_pushes_total{result="too_large"} 1"#),
            "{text}"
        );
    }
}
