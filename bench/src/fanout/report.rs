//! The fan-out benchmark's figures, their quantiles, and the printed report with each
//! target and the ratio measured / target.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::agent::{FailureKind, Phase};
use super::observer::Memory;

/// Target: p99 from a pipeline change to every agent's APPLIED being acknowledged.
pub const TARGET_CONVERGENCE_P99: Duration = Duration::from_secs(2);
/// Target: observer resident memory per connected agent.
pub const TARGET_BYTES_PER_AGENT: f64 = 50.0 * 1024.0;
/// Target: time for every agent to be back after an observer restart.
pub const TARGET_STORM_SETTLED: Duration = Duration::from_secs(30);

/// The pipeline change.
#[derive(Clone, Debug, Default)]
pub struct Convergence {
    /// How long the `PUT` took.
    pub apply_call: Duration,
    /// Per agent that got it: from the `PUT` returning to its `ConfigUpdate` arriving
    /// (zero when it arrived before the answer did).
    pub pushed: Vec<Duration>,
    /// Samples of (since the `PUT` returned, APPLIED answers the observer counted).
    pub answered: Vec<(Duration, u64)>,
    /// Per cluster stored with its new hash: from the `PUT` returning to the end of the
    /// database read that showed it.
    pub acknowledged: Vec<Duration>,
    /// When the pipeline's `ConfigurationApplied` condition was True.
    pub status_true: Option<Duration>,
    /// How long one `GET /api/v1/clusters` took once everything settled.
    pub list_request: Option<Duration>,
    /// Clusters that list showed with their new hash.
    pub listed_with_new_hash: usize,
    /// Why that request failed, if it did.
    pub list_error: Option<String>,
    /// Observer CPU seconds spent while waiting.
    pub cpu_seconds: f64,
}

impl Convergence {
    /// When the observer's count of APPLIED answers first reached `rank`.
    pub fn answered_at(&self, rank: u64) -> Option<Duration> {
        self.answered
            .iter()
            .find(|(_, count)| *count >= rank)
            .map(|(at, _)| *at)
    }
}

/// The reconnect storm.
#[derive(Clone, Debug, Default)]
pub struct Storm {
    /// From the kill to the restarted observer's control port accepting connections.
    pub listening_after: Duration,
    /// From the kill to the restarted observer answering `/readyz`.
    pub ready_after: Duration,
    /// From the kill to every agent holding a stream again.
    pub settled_after: Option<Duration>,
    /// Per agent that came back: from the kill to its stream being established.
    pub reconnected: Vec<Duration>,
    /// The most streams the observer reported while waiting.
    pub most_streams: u64,
    /// CPU seconds of the restarted observer until settled.
    pub cpu_seconds: f64,
    /// The restarted observer's memory once settled.
    pub memory: Memory,
    /// APPLIED answers the restarted observer counted (0: nobody needed a push).
    pub pushes_answered: u64,
    /// The restarted observer's TLS handshake counters once settled, with the most
    /// connections seen waiting for a handshake slot while polling.
    pub handshakes: super::ObserverMetrics,
}

/// Everything one run measured.
#[derive(Clone, Debug, Default)]
pub struct FanoutReport {
    /// Simulated agents.
    pub agents: usize,
    /// CPUs of this machine.
    pub cpus: usize,
    /// Time to create every cluster through the API.
    pub clusters_created: Duration,
    /// Time from starting the fleet to every agent connected and configured.
    pub connected_after: Duration,
    /// Observer CPU seconds spent on joins and first connections.
    pub setup_cpu_seconds: f64,
    /// The observer with its clusters and no agent.
    pub idle: Memory,
    /// The observer with every agent connected.
    pub connected: Memory,
    /// The bench process (all simulated agents) with every agent connected.
    pub bench: Memory,
    /// The pipeline change.
    pub convergence: Convergence,
    /// The reconnect storm.
    pub storm: Storm,
    /// Failed attempts by phase and kind.
    pub failures: BTreeMap<(Phase, FailureKind), u64>,
    /// How often the observer's `/metrics` was read while waiting.
    pub metrics_poll: Duration,
}

/// The nearest-rank quantile `q` (0 < q ≤ 1) of `values`.
pub fn quantile(values: &[Duration], q: f64) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = rank(sorted.len(), q)?;
    sorted.get(rank as usize - 1).copied()
}

/// The 1-based nearest rank of quantile `q` among `n` values.
fn rank(n: usize, q: f64) -> Option<u64> {
    if n == 0 {
        return None;
    }
    Some(((q * n as f64).ceil() as u64).clamp(1, n as u64))
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(|| "—".to_owned(), |d| format!("{:.3} s", d.as_secs_f64()))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl FanoutReport {
    /// An empty report for `agents` agents on this machine.
    pub fn new(agents: usize) -> Self {
        Self {
            agents,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            ..Self::default()
        }
    }

    /// Observer resident bytes per connected agent: (connected − idle) / agents.
    pub fn rss_per_agent(&self) -> f64 {
        self.connected.rss_bytes.saturating_sub(self.idle.rss_bytes) as f64
            / self.agents.max(1) as f64
    }

    /// The same from the high-water mark.
    pub fn peak_per_agent(&self) -> f64 {
        self.connected
            .peak_bytes
            .saturating_sub(self.idle.rss_bytes) as f64
            / self.agents.max(1) as f64
    }

    /// Agents whose new configuration the API showed.
    pub fn converged(&self) -> usize {
        self.convergence.acknowledged.len()
    }

    /// Agents that came back after the restart.
    pub fn reconnected(&self) -> usize {
        self.storm.reconnected.len()
    }

    /// Failed attempts in `phase` that were refusals ([`FailureKind::is_refusal`]).
    pub fn refusals(&self, phase: Phase) -> u64 {
        self.failures
            .iter()
            .filter(|((p, kind), _)| *p == phase && kind.is_refusal(*p))
            .map(|(_, count)| count)
            .sum()
    }

    /// The report as printed.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_setup(&mut out);
        self.render_convergence(&mut out);
        self.render_storm(&mut out);
        self.render_failures(&mut out);
        self.render_targets(&mut out);
        out
    }

    /// The machine, the setup and the observer's memory.
    fn render_setup(&self, out: &mut String) {
        let n = self.agents;
        let _ = writeln!(
            out,
            "fan-out: {n} simulated agents (mTLS, one connection each) against one observer (SQLite), {} CPUs; /metrics read every {} ms",
            self.cpus,
            self.metrics_poll.as_millis()
        );
        let _ = writeln!(
            out,
            "setup: {n} clusters created through the API in {:.1} s; joined and connected in {:.1} s (observer CPU {:.1} s)",
            self.clusters_created.as_secs_f64(),
            self.connected_after.as_secs_f64(),
            self.setup_cpu_seconds
        );
        let _ = writeln!(
            out,
            "observer memory: idle {} → {} with {n} agents (VmHWM {}): {:.1} KiB RSS per agent ({:.1} KiB by VmHWM); the bench's agents hold {}",
            mib(self.idle.rss_bytes),
            mib(self.connected.rss_bytes),
            mib(self.connected.peak_bytes),
            self.rss_per_agent() / 1024.0,
            self.peak_per_agent() / 1024.0,
            mib(self.bench.rss_bytes)
        );
    }

    /// The pipeline change: how fast the fleet followed.
    fn render_convergence(&self, out: &mut String) {
        let n = self.agents;
        let c = &self.convergence;
        let _ = writeln!(
            out,
            "pipeline change: PUT answered in {:.3} s; {}/{n} pushed, {}/{n} acknowledged; observer CPU {:.1} s",
            c.apply_call.as_secs_f64(),
            c.pushed.len(),
            self.converged(),
            c.cpu_seconds
        );
        let _ = writeln!(
            out,
            "  {:<48} {:>9} {:>9} {:>9}",
            "from the PUT returning to …", "p50", "p99", "max"
        );
        row(
            out,
            "ConfigUpdate at the agent (pushed)",
            fleet_quantiles(&c.pushed, n),
        );
        row(
            out,
            "APPLIED counted by the observer (metric)",
            [0.5, 0.99, 1.0].map(|q| rank(n, q).and_then(|r| c.answered_at(r))),
        );
        row(
            out,
            "new hash stored by the observer (acknowledged)",
            fleet_quantiles(&c.acknowledged, n),
        );
        let listing = match &c.list_error {
            Some(error) => format!("failed: {error}"),
            None => format!(
                "showed {}/{n} new hashes and took {}",
                c.listed_with_new_hash,
                seconds(c.list_request)
            ),
        };
        let _ = writeln!(
            out,
            "  ConfigurationApplied True after {}; afterwards GET /api/v1/clusters {listing}",
            seconds(c.status_true),
        );
    }

    /// The reconnect storm after the observer's restart.
    fn render_storm(&self, out: &mut String) {
        let n = self.agents;
        let s = &self.storm;
        let _ = writeln!(
            out,
            "reconnect storm (SIGKILL, restart on the same ports and data): observer listening {:.1} s and ready (/readyz) {:.1} s after the kill; {}/{n} back, settled {} after the kill; observer CPU {:.1} s; RSS after {} (VmHWM {}); pushes after restart {}",
            s.listening_after.as_secs_f64(),
            s.ready_after.as_secs_f64(),
            self.reconnected(),
            seconds(s.settled_after),
            s.cpu_seconds,
            mib(s.memory.rss_bytes),
            mib(s.memory.peak_bytes),
            s.pushes_answered
        );
        let h = &s.handshakes;
        let _ = writeln!(
            out,
            "  TLS handshakes after restart: {} succeeded, {} failed, {} timed out, {} closed before their handshake (per-address cap, wait deadline); at most {} waiting for a slot when polled",
            h.handshakes_succeeded,
            h.handshakes_failed,
            h.handshakes_timed_out,
            h.handshakes_refused,
            h.handshakes_waiting
        );
        row(
            out,
            "per agent, from the kill to its stream",
            fleet_quantiles(&s.reconnected, n),
        );
    }

    /// Failed attempts by phase and kind.
    fn render_failures(&self, out: &mut String) {
        let _ = writeln!(out, "failed attempts by phase:");
        if self.failures.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for ((phase, kind), count) in &self.failures {
            let _ = writeln!(
                out,
                "  {:<7} {:<60} {count:>7}{}",
                phase.name(),
                kind.describe(),
                if kind.is_refusal(*phase) {
                    "  (refusal)"
                } else {
                    ""
                }
            );
        }
    }

    /// The measurements against the design's targets.
    fn render_targets(&self, out: &mut String) {
        let n = self.agents;
        let s = &self.storm;
        let acknowledged_p99 = fleet_quantiles(&self.convergence.acknowledged, n)[1];
        let _ = writeln!(out, "targets:");
        let _ = writeln!(
            out,
            "  {:<46} {:>12} {:>12} {:>8}",
            "", "measured", "target", "ratio"
        );
        let ratio = |measured: Option<f64>, target: f64| {
            measured.map_or_else(|| "—".to_owned(), |m| format!("{:.2}", m / target))
        };
        let _ = writeln!(
            out,
            "  {:<46} {:>12} {:>12} {:>8}",
            format!("p99 change → acknowledged ({n} agents)"),
            seconds(acknowledged_p99),
            seconds(Some(TARGET_CONVERGENCE_P99)),
            ratio(
                acknowledged_p99.map(|d| d.as_secs_f64()),
                TARGET_CONVERGENCE_P99.as_secs_f64()
            )
        );
        let _ = writeln!(
            out,
            "  {:<46} {:>12} {:>12} {:>8}",
            "observer RSS per connected agent",
            format!("{:.1} KiB", self.rss_per_agent() / 1024.0),
            format!("{:.0} KiB", TARGET_BYTES_PER_AGENT / 1024.0),
            ratio(Some(self.rss_per_agent()), TARGET_BYTES_PER_AGENT)
        );
        let _ = writeln!(
            out,
            "  {:<46} {:>12} {:>12} {:>8}",
            "reconnect storm settled (from the kill)",
            seconds(s.settled_after),
            seconds(Some(TARGET_STORM_SETTLED)),
            ratio(
                s.settled_after.map(|d| d.as_secs_f64()),
                TARGET_STORM_SETTLED.as_secs_f64()
            )
        );
        let _ = writeln!(
            out,
            "  {:<46} {:>12} {:>12} {:>8}",
            "agents refused during the storm",
            self.refusals(Phase::Restart) + self.refusals(Phase::Storm),
            0,
            "—"
        );
    }
}

/// One row of quantiles: p50, p99 and max.
fn row(out: &mut String, name: &str, values: [Option<Duration>; 3]) {
    let _ = writeln!(
        out,
        "  {name:<48} {:>9} {:>9} {:>9}",
        seconds(values[0]),
        seconds(values[1]),
        seconds(values[2])
    );
}

/// p50, p99 and max over a fleet of `n` ([`quantile_of_fleet`]).
fn fleet_quantiles(values: &[Duration], n: usize) -> [Option<Duration>; 3] {
    [0.5, 0.99, 1.0].map(|q| quantile_of_fleet(values, n, q))
}

/// Quantile `q` over a fleet of `n` where only `values` (fewer than `n`) finished: the
/// missing ones count as slower than all, so the quantile exists only while it falls
/// among the finished.
fn quantile_of_fleet(values: &[Duration], n: usize, q: f64) -> Option<Duration> {
    let rank = rank(n, q)? as usize;
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(rank.checked_sub(1)?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values = ms(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(quantile(&values, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&values, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&values, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&ms(&[7]), 0.5), Some(Duration::from_millis(7)));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn missing_agents_count_as_slowest() {
        // 3 of 4 finished: p50 is the 2nd fastest, the max is unknown.
        let values = ms(&[30, 10, 20]);
        assert_eq!(
            quantile_of_fleet(&values, 4, 0.5),
            Some(Duration::from_millis(20))
        );
        assert_eq!(quantile_of_fleet(&values, 4, 1.0), None);
    }

    #[test]
    fn the_answered_count_is_read_at_its_rank() {
        let convergence = Convergence {
            answered: vec![
                (Duration::from_millis(50), 0),
                (Duration::from_millis(100), 60),
                (Duration::from_millis(150), 100),
            ],
            ..Convergence::default()
        };
        assert_eq!(
            convergence.answered_at(50),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            convergence.answered_at(100),
            Some(Duration::from_millis(150))
        );
        assert_eq!(convergence.answered_at(101), None);
    }

    #[test]
    fn the_report_names_every_target() {
        let report = FanoutReport::new(10);
        let text = report.render();
        for needle in [
            "p99 change → acknowledged",
            "RSS per connected agent",
            "storm settled",
            "refused",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
