//! `AgentHealth` reports built from the running pipelines' counters, buffers and
//! targets: the same numbers `/metrics` shows (see [`crate::telemetry`]), so the
//! observer's conditions and the agent's own dashboards never disagree. Metric, log and
//! trace pipelines are reported alike, each with its kind (names are unique per kind
//! only); a log pipeline's "samples" are its log records, a trace pipeline's its spans,
//! and neither has targets.

use std::collections::BTreeMap;
use std::time::SystemTime;

use kaas_series::clock::unix_ms;

use kaas_proto::control::v1::{
    AgentHealth, DropReason as WireDropReason, DroppedSamples, JobTargetsDown, PipelineError,
    PipelineHealth,
};
use std::sync::atomic::Ordering;

use crate::internal_events::{DropReason, ERROR_LOG_INTERVAL, ErrorReason};
use crate::pipeline::PipelineKind;
use crate::pipeline::data_path::DataPath;
use crate::pipeline::instances::InstanceProblem;
use crate::pipeline::logs::LogPipelines;
use crate::pipeline::runtime::Pipelines;
use crate::pipeline::traces::TracePipelines;

/// At most this many jobs' failing targets are reported per pipeline (the first by
/// name): enough for the control plane's five components and the cluster health
/// producers, while a pipeline with thousands of jobs cannot swell the report.
pub const MAX_JOBS_DOWN_REPORTED: usize = 32;
/// The longest failure reason reported per job: a scrape error is one line; the
/// contract promises at most this many characters.
pub const MAX_JOB_DOWN_REASON_CHARS: usize = 300;

/// A snapshot of every running pipeline of every kind, taken at `now`.
pub fn snapshot(
    pipelines: &Pipelines,
    log_pipelines: &LogPipelines,
    trace_pipelines: &TracePipelines,
    now: SystemTime,
) -> AgentHealth {
    let now_ms = unix_ms(now);
    let metrics = pipelines.iter().map(|(name, pipeline)| {
        let mut health = pipeline_health(name, PipelineKind::Metric, &pipeline.data_path, now_ms);
        let mut by_job: BTreeMap<String, (u32, Option<SystemTime>, String)> = BTreeMap::new();
        for target in pipeline.target_states() {
            let state = target.health.lock().unwrap_or_else(|e| e.into_inner());
            if state.up {
                health.targets_up += 1;
            } else if let Some(at) = state.last_scrape {
                health.targets_down += 1;
                let job = by_job
                    .entry(target.labels.get("job").to_owned())
                    .or_default();
                job.0 += 1;
                // The most recent failure's reason speaks for the job.
                if job.1.is_none_or(|seen| at > seen) {
                    job.1 = Some(at);
                    job.2 = state.last_error.clone().unwrap_or_default();
                }
            }
        }
        health.targets_down_by_job = jobs_down(by_job);
        health
    });
    let logs = log_pipelines.iter().map(|(name, pipeline)| {
        pipeline_health(name, PipelineKind::Log, &pipeline.data_path, now_ms)
    });
    let traces = trace_pipelines.iter().map(|(name, pipeline)| {
        pipeline_health(name, PipelineKind::Trace, &pipeline.data_path, now_ms)
    });
    AgentHealth {
        timestamp_unix_ms: now_ms,
        pipelines: metrics.chain(logs).chain(traces).collect(),
    }
}

/// `report` with the template instances that do not run as bound
/// ([`crate::pipeline::instances`]): each carries its problem (`SecretMissing`, the
/// binding named) as its error, taken at the report's time, over whatever its last
/// good rendering reports; one that does not run at all is added with no counts.
pub fn with_instance_problems(
    mut report: AgentHealth,
    problems: &[InstanceProblem],
) -> AgentHealth {
    for problem in problems {
        let error = PipelineError {
            timestamp_unix_ms: report.timestamp_unix_ms,
            reason: problem.reason.as_str().to_owned(),
            message: problem.message.clone(),
        };
        let kind = problem.pipeline.kind.as_str();
        let running = (report.pipelines.iter_mut())
            .find(|p| p.pipeline == problem.pipeline.name && p.kind == kind);
        match running {
            Some(entry) => entry.last_error = Some(error),
            None => report.pipelines.push(PipelineHealth {
                pipeline: problem.pipeline.name.clone(),
                kind: kind.to_owned(),
                last_error: Some(error),
                ..PipelineHealth::default()
            }),
        }
    }
    report
}

fn pipeline_health(
    name: &str,
    kind: PipelineKind,
    pipeline: &DataPath,
    now_ms: i64,
) -> PipelineHealth {
    let stats = &pipeline.stats;
    let samples_dropped = [
        (DropReason::BufferFull, WireDropReason::BufferFull),
        (DropReason::MaxAgeExceeded, WireDropReason::MaxAgeExceeded),
        (
            DropReason::RejectedByBackend,
            WireDropReason::RejectedByBackend,
        ),
        // The contract has no reason for undecodable buffer records; they are still
        // lost data, so they are reported rather than hidden.
        (DropReason::Corrupt, WireDropReason::Unspecified),
        (DropReason::BufferWriteFailed, WireDropReason::Unspecified),
    ]
    .into_iter()
    .map(|(reason, wire)| DroppedSamples {
        reason: wire as i32,
        count: stats.dropped_total(reason),
    })
    .filter(|dropped| dropped.count > 0)
    .collect();
    // A buffer busy with a write is reported as empty for one round rather than
    // stalling the report.
    let (buffer_bytes, buffer_oldest_age_seconds) =
        pipeline.buffer_state(now_ms).unwrap_or((0, 0.0));
    PipelineHealth {
        pipeline: name.to_owned(),
        samples_sent: stats.samples_sent.load(Ordering::Relaxed),
        samples_failed: stats.samples_failed.load(Ordering::Relaxed),
        samples_dropped,
        buffer_bytes,
        buffer_oldest_age_seconds,
        last_error: last_error(pipeline, now_ms),
        targets_up: 0,
        targets_down: 0,
        kind: kind.as_str().to_owned(),
        targets_down_by_job: Vec::new(),
    }
}

/// The report's failing jobs from `(count, last failure, reason)` by job: bounded to
/// [`MAX_JOBS_DOWN_REPORTED`] jobs and [`MAX_JOB_DOWN_REASON_CHARS`] per reason.
fn jobs_down(by_job: BTreeMap<String, (u32, Option<SystemTime>, String)>) -> Vec<JobTargetsDown> {
    by_job
        .into_iter()
        .take(MAX_JOBS_DOWN_REPORTED)
        .map(|(job, (count, _, reason))| JobTargetsDown {
            job,
            targets_down: count,
            reason: reason.chars().take(MAX_JOB_DOWN_REASON_CHARS).collect(),
        })
        .collect()
}

/// The error a report carries: the most recent one, unless none happened within
/// [`ERROR_LOG_INTERVAL`] and the pipeline runs with a buffer reduced by the budget;
/// that standing condition is then reported as of now, so the observer keeps showing
/// it for as long as it holds rather than only just after the pipeline started.
fn last_error(pipeline: &DataPath, now_ms: i64) -> Option<PipelineError> {
    let recent = pipeline.stats.last_error().map(|error| PipelineError {
        timestamp_unix_ms: unix_ms(error.at),
        reason: error.reason.as_str().to_owned(),
        message: error.message,
    });
    reported_error(recent, pipeline.buffer_grant.reduced.as_deref(), now_ms)
}

/// [`last_error`] for the most `recent` error and the reason the buffer is `reduced`.
fn reported_error(
    recent: Option<PipelineError>,
    reduced: Option<&str>,
    now_ms: i64,
) -> Option<PipelineError> {
    let Some(reduced) = reduced else {
        return recent;
    };
    let window_ms = i64::try_from(ERROR_LOG_INTERVAL.as_millis()).unwrap_or(i64::MAX);
    match recent {
        Some(error) if now_ms.saturating_sub(error.timestamp_unix_ms) < window_ms => Some(error),
        _ => Some(PipelineError {
            timestamp_unix_ms: now_ms,
            reason: ErrorReason::BufferBudgetExceeded.as_str().to_owned(),
            message: reduced.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    /// Issue 15: failing targets are reported by job with the latest reason, bounded in
    /// jobs and reason length.
    #[test]
    fn failing_targets_are_reported_by_job_within_bounds() {
        let at = |s: u64| Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s));
        let mut by_job = BTreeMap::new();
        by_job.insert("etcd".to_owned(), (2, at(20), "x".repeat(1000)));
        for i in 0..MAX_JOBS_DOWN_REPORTED {
            by_job.insert(format!("job-{i:02}"), (1, at(1), "refused".to_owned()));
        }
        let reported = jobs_down(by_job);
        assert_eq!(reported.len(), MAX_JOBS_DOWN_REPORTED);
        assert_eq!(reported[0].job, "etcd");
        assert_eq!(reported[0].targets_down, 2);
        assert_eq!(
            reported[0].reason.chars().count(),
            MAX_JOB_DOWN_REASON_CHARS
        );
        assert_eq!(reported[1].reason, "refused");
    }

    /// An instance whose key is missing is reported with `SecretMissing` and its
    /// binding, whether its last good rendering runs or nothing does.
    #[test]
    fn instance_problems_are_reported_as_the_pipelines_error() {
        use crate::pipeline::PipelineId;
        let running = PipelineHealth {
            pipeline: "shop".into(),
            kind: "MetricPipeline".into(),
            samples_sent: 7,
            ..PipelineHealth::default()
        };
        let report = AgentHealth {
            timestamp_unix_ms: NOW,
            pipelines: vec![running],
        };
        let problem = |name: &str| InstanceProblem {
            pipeline: PipelineId::metric(name),
            reason: ErrorReason::SecretMissing,
            message: format!("{name}: spec.bindings[\"url\"].configMapKeyRef: missing"),
            last_good_runs: name == "shop",
        };
        let report = with_instance_problems(report, &[problem("shop"), problem("new")]);
        assert_eq!(report.pipelines.len(), 2);
        let shop = &report.pipelines[0];
        assert_eq!(
            shop.samples_sent, 7,
            "the last good rendering's counts stay"
        );
        let error = shop.last_error.as_ref().unwrap();
        assert_eq!(
            (error.reason.as_str(), error.timestamp_unix_ms),
            ("SecretMissing", NOW)
        );
        let added = &report.pipelines[1];
        assert_eq!(
            (added.pipeline.as_str(), added.kind.as_str()),
            ("new", "MetricPipeline")
        );
        assert!(
            added
                .last_error
                .as_ref()
                .unwrap()
                .message
                .contains("spec.bindings[\"url\"]")
        );
    }

    fn error(reason: &str, at: i64) -> PipelineError {
        PipelineError {
            timestamp_unix_ms: at,
            reason: reason.to_owned(),
            message: String::new(),
        }
    }

    /// Issue 13, Disk budget: a buffer reduced by the budget is a standing condition.
    /// Reports carry it whenever no other error is recent, so the observer's condition
    /// does not clear itself a while after the pipeline started.
    #[test]
    fn a_reduced_buffer_is_reported_while_no_other_error_is_recent() {
        let reduced = Some("limited by the budget");
        let window = i64::try_from(ERROR_LOG_INTERVAL.as_millis()).unwrap();
        let standing = reported_error(None, reduced, NOW).unwrap();
        assert_eq!(
            (standing.reason.as_str(), standing.timestamp_unix_ms),
            (ErrorReason::BufferBudgetExceeded.as_str(), NOW)
        );
        assert_eq!(standing.message, "limited by the budget");
        let fresh = error("BackendUnreachable", NOW - 1000);
        assert_eq!(
            reported_error(Some(fresh.clone()), reduced, NOW),
            Some(fresh.clone())
        );
        let old = error("BackendUnreachable", NOW - window);
        let again = reported_error(Some(old.clone()), reduced, NOW).unwrap();
        assert_eq!(
            (again.reason.as_str(), again.timestamp_unix_ms),
            (ErrorReason::BufferBudgetExceeded.as_str(), NOW)
        );
        assert_eq!(reported_error(Some(old.clone()), None, NOW), Some(old));
        assert_eq!(reported_error(None, None, NOW), None);
    }
}
