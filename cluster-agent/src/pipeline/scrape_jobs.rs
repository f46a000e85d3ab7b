//! Unsupported mode at run time: the targets of a pipeline's raw Prometheus scrape
//! configs (`spec.input.unsupported.scrapeConfigs`, validated into
//! [`ValidatedScrapeJob`]s), built for the agent's own scrape loops
//! ([`super::targets`]): no second scraper.
//!
//! Each job is one Prometheus `scrape_config`: discovery (`static_configs`,
//! `file_sd_configs` read through [`FileAccess`], `kubernetes_sd_configs` from the
//! agent's pod and EndpointSlice snapshots) gives label sets; each is populated as
//! Prometheus does ([`populate`], with the job's name, interval, timeout, path, scheme
//! and `params`), relabeled with the job's `relabel_configs` and then the pipeline's
//! own, and scraped with the job's settings. Its samples go through the job's
//! `metric_relabel_configs`, then the pipeline's processors, into the pipeline's own
//! inlet and buffer, like every other target of the pipeline.
//!
//! A job with more targets after relabeling than its `target_limit` scrapes none, and
//! says why, as Prometheus fails each of its scrapes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kaas_pipeline::ValidatedPipeline;
use kaas_pipeline::input::Scheme;
use kaas_pipeline::input::unsupported::{KubernetesRole, ValidatedScrapeJob};
use kaas_pipeline::processors::{RelabelRule, ValidatedProcessors};

use super::targets::DesiredTarget;
use crate::discovery::kubernetes::{endpointslices, pods};
use crate::files::FileAccess;
use crate::internal_events::ErrorReason;
use crate::labels::{ADDRESS, Labels};
use crate::outbound::auth::{ValueSources, tls_material};
use crate::scrape::client::ScrapeClient;
use crate::scrape::config::ScrapeConfig;
use crate::scrape::credentials::ScrapeCredentials;
use crate::scrape::limits::DEFAULT_BODY_SIZE_LIMIT;
use crate::scrape::target::{ScrapeDefaults, Target, populate};

/// The label file discovery gives each target: the file it was listed in, as
/// Prometheus' `__meta_filepath`.
pub const META_FILEPATH: &str = "__meta_filepath";
/// What a job's token-bearing target says when its certificate is not trusted.
const UNTRUSTED_CERTIFICATE_ADVICE: &str = "the job's bearer token goes only to targets \
    whose certificate the job's tls_config trusts: fix the target's certificate or the \
    job's ca_file";

/// The cluster as the jobs' Kubernetes discovery sees it now.
#[derive(Clone, Copy, Default)]
pub struct ClusterObjects<'a> {
    /// Pods, when watched.
    pub pods: Option<&'a [Arc<Pod>]>,
    /// Services, when watched.
    pub services: Option<&'a [Arc<Service>]>,
    /// EndpointSlices, when watched.
    pub endpoint_slices: Option<&'a [Arc<EndpointSlice>]>,
}

/// One job ready to produce targets.
struct PreparedJob {
    job: ValidatedScrapeJob,
    client: Option<ScrapeClient>,
    processors: Arc<ValidatedProcessors>,
    config: ScrapeConfig,
    rules: Vec<RelabelRule>,
    defaults: ScrapeDefaults,
}

/// The raw scrape jobs of one pipeline.
pub struct ScrapeJobs {
    jobs: Vec<PreparedJob>,
    files: Arc<FileAccess>,
    /// Jobs that cannot run (their TLS material cannot be read), with the reason.
    pub errors: Vec<String>,
}

impl ScrapeJobs {
    /// Prepares the pipeline's jobs: clients with their TLS material (read from
    /// `sources`), processors, scrape settings and relabel rules.
    pub fn prepare(pipeline: &ValidatedPipeline, sources: &ValueSources) -> Self {
        let mut jobs = Vec::new();
        let mut errors = Vec::new();
        for job in &pipeline.unsupported {
            let client = match &job.tls {
                None => None,
                Some(tls) => match tls_material(Some(tls), sources)
                    .map_err(|e| e.to_string())
                    .and_then(|material| ScrapeClient::new(&material).map_err(|e| e.to_string()))
                {
                    Ok(client) => Some(client),
                    Err(reason) => {
                        errors.push(format!("job {}: tls_config: {reason}", job.job_name));
                        continue;
                    }
                },
            };
            jobs.push(PreparedJob {
                client,
                processors: Arc::new(job_processors(pipeline, job)),
                config: scrape_config(job),
                rules: job
                    .relabel
                    .iter()
                    .chain(&pipeline.processors.relabel)
                    .cloned()
                    .collect(),
                defaults: ScrapeDefaults {
                    job: job.job_name.clone(),
                    interval: job.interval,
                    timeout: job.timeout,
                    metrics_path: job.metrics_path.clone(),
                    scheme: scheme(job.scheme).to_owned(),
                },
                job: job.clone(),
            });
        }
        Self {
            jobs,
            files: sources.files.clone(),
            errors,
        }
    }

    /// Whether a job discovers pods.
    pub fn wants_pods(&self) -> bool {
        self.wants(KubernetesRole::Pod)
    }

    /// Whether a job discovers EndpointSlices (with their Services).
    pub fn wants_services(&self) -> bool {
        self.wants(KubernetesRole::EndpointSlice)
    }

    fn wants(&self, role: KubernetesRole) -> bool {
        self.jobs
            .iter()
            .flat_map(|j| &j.job.kubernetes_sd_configs)
            .any(|sd| sd.role == role)
    }

    /// How often file discovery reads its files again: the shortest
    /// `refresh_interval`; `None` without file discovery.
    pub fn refresh_interval(&self) -> Option<Duration> {
        self.jobs
            .iter()
            .flat_map(|j| &j.job.file_sd_configs)
            .map(|sd| sd.refresh_interval)
            .min()
    }

    /// Every job's targets now, and why some are not scraped: static targets, the
    /// files' targets (read again) and what `cluster` holds.
    pub fn targets(&self, cluster: ClusterObjects<'_>) -> (Vec<DesiredTarget>, Vec<String>) {
        let mut desired = Vec::new();
        let mut errors = Vec::new();
        for prepared in &self.jobs {
            let mut discovered = static_labels(&prepared.job);
            discovered.extend(file_labels(&prepared.job, &self.files, &mut errors));
            discovered.extend(kubernetes_labels(&prepared.job, cluster));
            let targets = prepared.targets(discovered, &mut errors);
            let limit = prepared.job.target_limit.get() as usize;
            if targets.len() > limit {
                errors.push(format!(
                    "job {}: {} targets after relabeling exceed its target_limit of {limit}; \
                     none is scraped",
                    prepared.job.job_name,
                    targets.len()
                ));
                continue;
            }
            desired.extend(targets);
        }
        (desired, errors)
    }
}

impl PreparedJob {
    /// Populates, relabels and builds the targets of `discovered`.
    fn targets(&self, discovered: Vec<Labels>, errors: &mut Vec<String>) -> Vec<DesiredTarget> {
        let name = &self.job.job_name;
        let mut desired = Vec::new();
        for labels in discovered {
            // Prometheus sets `__param_<name>` from `params` unless discovery did.
            let mut pairs: Vec<(String, String)> = labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            for (param, value) in &self.job.params {
                let label = format!("__param_{param}");
                if labels.get(&label).is_empty() {
                    pairs.push((label, value.clone()));
                }
            }
            let address = labels.get(ADDRESS).to_owned();
            let target = match populate(&Labels::from_pairs(pairs), &self.defaults, &self.rules) {
                Ok(None) => continue,
                Ok(Some(labels)) => Target::new(labels),
                Err(error) => Err(error.to_string()),
            };
            let target = match target {
                Ok(target) => target,
                Err(reason) => {
                    errors.push(format!("job {name}, target {address}: {reason}"));
                    continue;
                }
            };
            let mut config = self.config.clone();
            config.credentials =
                self.job
                    .bearer_token_file
                    .as_ref()
                    .map(|file| ScrapeCredentials {
                        token_file: file.into(),
                        bound_to: target.url.clone(),
                        untrusted_certificate_reason: ErrorReason::TargetCertificateUntrusted,
                        untrusted_certificate_advice: UNTRUSTED_CERTIFICATE_ADVICE,
                    });
            desired.push(DesiredTarget {
                target,
                config,
                client: self.client.clone(),
                processors: Some(self.processors.clone()),
            });
        }
        desired
    }
}

fn scheme(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    }
}

/// The job's metric relabeling, then the pipeline's processors.
fn job_processors(pipeline: &ValidatedPipeline, job: &ValidatedScrapeJob) -> ValidatedProcessors {
    let own = &pipeline.processors;
    ValidatedProcessors {
        relabel: Vec::new(),
        metric_relabel: job
            .metric_relabel
            .iter()
            .chain(&own.metric_relabel)
            .cloned()
            .collect(),
        keep_metrics: own.keep_metrics.clone(),
        drop_metrics: own.drop_metrics.clone(),
    }
}

/// How the job's targets are scraped; unset limits are the agent's defaults.
fn scrape_config(job: &ValidatedScrapeJob) -> ScrapeConfig {
    ScrapeConfig {
        honor_labels: job.honor_labels,
        honor_timestamps: job.honor_timestamps,
        body_size_limit: job.body_size_limit.unwrap_or(DEFAULT_BODY_SIZE_LIMIT),
        ..ScrapeConfig::new(job.interval, job.timeout)
    }
    .limited_by(job.limits)
}

/// The label sets of the job's `static_configs`.
fn static_labels(job: &ValidatedScrapeJob) -> Vec<Labels> {
    job.static_configs
        .iter()
        .flat_map(|group| {
            group
                .targets
                .iter()
                .map(|target| group_labels(&group.labels, target, None))
        })
        .collect()
}

fn group_labels(
    labels: &std::collections::BTreeMap<String, String>,
    target: &str,
    file: Option<&str>,
) -> Labels {
    Labels::from_pairs(
        labels
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .chain([(ADDRESS.to_owned(), target.to_owned())])
            .chain(file.map(|f| (META_FILEPATH.to_owned(), f.to_owned()))),
    )
}

/// One target group of a discovery file, as Prometheus' file discovery reads it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTargetGroup {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

/// The label sets of the job's `file_sd_configs`, each file read through `files`
/// (the path policy, checked again as resolved); a file that cannot be read or parsed
/// adds no targets and an error, as Prometheus keeps going without it.
fn file_labels(
    job: &ValidatedScrapeJob,
    files: &FileAccess,
    errors: &mut Vec<String>,
) -> Vec<Labels> {
    let mut found = Vec::new();
    for file in job.file_sd_configs.iter().flat_map(|sd| &sd.files) {
        let groups = files
            .read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_target_groups(file, &text));
        match groups {
            Ok(groups) => found.extend(groups.iter().flat_map(|group| {
                group
                    .targets
                    .iter()
                    .map(|target| group_labels(&group.labels, target, Some(file)))
            })),
            Err(reason) => errors.push(format!(
                "job {}: file_sd_configs file {file}: {reason}",
                job.job_name
            )),
        }
    }
    found
}

/// A file's target groups: JSON for `.json`, YAML for `.yml` and `.yaml`, as
/// Prometheus decides by the extension.
fn parse_target_groups(file: &str, text: &str) -> Result<Vec<FileTargetGroup>, String> {
    if file.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| format!("not a JSON list of target groups: {e}"))
    } else if file.ends_with(".yml") || file.ends_with(".yaml") {
        // A file is at most `MAX_FILE_BYTES`; its aliases may not expand it further
        // than any document the agent reads.
        let budget = kaas_pipeline::yaml::MAX_EXPANDED_DOCUMENT_BYTES;
        kaas_pipeline::yaml::bounded_value(serde_yaml::Deserializer::from_str(text), budget)
            .and_then(serde_yaml::from_value)
            .map_err(|e| format!("not a YAML list of target groups: {e}"))
    } else {
        Err("neither .json, .yml nor .yaml, which Prometheus reads".to_owned())
    }
}

/// The label sets of the job's `kubernetes_sd_configs` in the namespaces each admits.
fn kubernetes_labels(job: &ValidatedScrapeJob, cluster: ClusterObjects<'_>) -> Vec<Labels> {
    let mut found = Vec::new();
    for sd in &job.kubernetes_sd_configs {
        match (
            sd.role,
            cluster.pods,
            cluster.services.zip(cluster.endpoint_slices),
        ) {
            (KubernetesRole::Pod, Some(all), _) => found.extend(
                all.iter()
                    .filter(|pod| {
                        sd.namespaces
                            .admits(pod.metadata.namespace.as_deref().unwrap_or_default())
                    })
                    .flat_map(|pod| pods::pod_targets(pod)),
            ),
            (KubernetesRole::EndpointSlice, _, Some((services, slices))) => {
                for slice in slices {
                    let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
                    if !sd.namespaces.admits(namespace) {
                        continue;
                    }
                    let service = endpointslices::service_of(slice, services);
                    found.extend(endpointslices::endpointslice_targets(slice, service));
                }
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kaas_pipeline::input::unsupported::MAX_BODY_SIZE_LIMIT;
    use kaas_pipeline::{MetricPipeline, ValidationContext};

    use super::*;
    use crate::outbound::auth::SecretStore;
    use crate::scrape::limits::DEFAULT_SAMPLE_LIMIT;

    fn pipeline(processors: &str, jobs: &str) -> ValidatedPipeline {
        let yaml = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: MetricPipeline\nmetadata: {{name: raw}}\nspec:\n  input:\n    unsupported:\n      scrapeConfigs: {jobs}\n  processors: {processors}\n  output: {{prometheusRemoteWrite: {{url: 'http://127.0.0.1:9090/api/v1/write'}}}}\n"
        );
        let resource: MetricPipeline = serde_yaml::from_str(&yaml).unwrap();
        kaas_pipeline::validate(&resource, &ValidationContext::standalone()).unwrap()
    }

    #[derive(Debug)]
    struct NoSecrets;

    impl SecretStore for NoSecrets {
        fn get(&self, _: &str, _: &str, _: &str) -> Option<kaas_pipeline::secret::SecretString> {
            None
        }
    }

    fn jobs(pipeline: &ValidatedPipeline) -> ScrapeJobs {
        let sources = ValueSources::new(Arc::new(NoSecrets), Arc::new(FileAccess::default()));
        ScrapeJobs::prepare(pipeline, &sources)
    }

    #[test]
    fn the_agent_limit_is_the_largest_body_size_limit_a_job_may_set() {
        assert_eq!(MAX_BODY_SIZE_LIMIT, DEFAULT_BODY_SIZE_LIMIT.get());
    }

    #[test]
    fn limits_come_from_the_job_then_the_pipeline_then_the_agent() {
        let p = pipeline(
            "{limits: {labelLimit: 30}}",
            "[{job_name: a, sample_limit: 50, body_size_limit: 1MB, static_configs: [{targets: ['127.0.0.1:9100']}]}, {job_name: b, static_configs: [{targets: ['127.0.0.1:9100']}]}]",
        );
        let (targets, errors) = jobs(&p).targets(ClusterObjects::default());
        assert_eq!(errors, Vec::<String>::new());
        let by_job: BTreeMap<String, &ScrapeConfig> = targets
            .iter()
            .map(|t| (t.target.labels.get("job").to_owned(), &t.config))
            .collect();
        assert_eq!(by_job["a"].sample_limit.get(), 50);
        assert_eq!(by_job["a"].label_limit.get(), 30);
        assert_eq!(by_job["a"].body_size_limit.get(), 1 << 20);
        assert_eq!(by_job["b"].sample_limit, DEFAULT_SAMPLE_LIMIT);
        assert_eq!(by_job["b"].body_size_limit, DEFAULT_BODY_SIZE_LIMIT);
    }

    #[test]
    fn params_path_and_scheme_make_the_url_and_the_token_is_bound_to_it() {
        let p = pipeline(
            "{}",
            "[{job_name: probe, scheme: https, metrics_path: /probe, params: {module: [icmp]}, bearer_token_file: /etc/edge/token, static_configs: [{targets: ['127.0.0.1:9115']}]}]",
        );
        let (targets, _) = jobs(&p).targets(ClusterObjects::default());
        let [target] = targets.as_slice() else {
            panic!("one target: {targets:?}")
        };
        assert_eq!(
            target.target.url.as_str(),
            "https://127.0.0.1:9115/probe?module=icmp"
        );
        let credentials = target.config.credentials.as_ref().expect("the job's token");
        assert_eq!(credentials.bound_to, target.target.url);
        assert_eq!(
            credentials.token_file,
            std::path::PathBuf::from("/etc/edge/token")
        );
    }

    /// Validation bounds the listed targets by `target_limit`; discovery can find more,
    /// and then the job scrapes none, saying why.
    #[test]
    fn more_targets_than_the_target_limit_after_relabeling_scrape_none() {
        let p = pipeline(
            "{}",
            "[{job_name: few, target_limit: 1, kubernetes_sd_configs: [{role: pod}]}]",
        );
        let pods = [pod("a", "shop", "10.0.0.1"), pod("b", "shop", "10.0.0.2")];
        let (targets, errors) = jobs(&p).targets(ClusterObjects {
            pods: Some(&pods),
            ..ClusterObjects::default()
        });
        assert!(targets.is_empty(), "{targets:?}");
        assert_eq!(
            errors,
            ["job few: 2 targets after relabeling exceed its target_limit of 1; none is scraped"]
        );
    }

    /// A running pod with one container port.
    fn pod(name: &str, namespace: &str, ip: &str) -> Arc<Pod> {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]},
            "status": {"podIP": ip, "phase": "Running"}
        }))
        .unwrap();
        Arc::new(pod)
    }

    #[test]
    fn pod_discovery_leaves_out_system_namespaces_unless_named() {
        let pods = [
            pod("web", "shop", "10.0.0.1"),
            pod("dns", "kube-system", "10.0.0.2"),
            pod("agent", "kaas-observer", "10.0.0.3"),
        ];
        let addresses = |jobs_yaml: &str| -> Vec<String> {
            let (targets, _) = jobs(&pipeline("{}", jobs_yaml)).targets(ClusterObjects {
                pods: Some(&pods),
                ..ClusterObjects::default()
            });
            targets
                .iter()
                .map(|t| t.target.labels.get(ADDRESS).to_owned())
                .collect()
        };
        assert_eq!(
            addresses("[{job_name: all, kubernetes_sd_configs: [{role: pod}]}]"),
            ["10.0.0.1:8080"]
        );
        assert_eq!(
            addresses(
                "[{job_name: named, kubernetes_sd_configs: [{role: pod, namespaces: {names: [kube-system]}}]}]"
            ),
            ["10.0.0.2:8080"]
        );
    }

    #[test]
    fn discovery_files_are_json_or_yaml_lists_of_target_groups() {
        let json = parse_target_groups(
            "/t.json",
            r#"[{"targets": ["127.0.0.1:1"], "labels": {"a": "b"}}]"#,
        )
        .unwrap();
        assert_eq!(json[0].targets, ["127.0.0.1:1"]);
        let yaml = parse_target_groups("/t.yml", "- targets: ['127.0.0.1:2']\n").unwrap();
        assert_eq!(yaml[0].targets, ["127.0.0.1:2"]);
        assert!(parse_target_groups("/t.txt", "[]").is_err());
        assert!(parse_target_groups("/t.json", r#"[{"targets": [], "extra": 1}]"#).is_err());
    }
}
