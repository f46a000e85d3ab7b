//! Validation of raw scrape configurations: each job's own settings (name, durations,
//! path, scheme, parameters, limits, relabeling) and the trust checks of its HTTP
//! client settings (files, inline credentials, TLS, proxy). Discovery is checked in
//! [`super::discovery`]. Every rule reports the field path in Prometheus' spelling.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroU64};

use crate::errors::{FieldErrors, field, index, key};
use crate::input::{Scheme, ValidatedScrape, is_providers_own, positive_duration};
use crate::output::Tls;
use crate::policy::ValidationContext;
use crate::processors::ValidatedLimits;
use crate::processors::{RelabelConfig, RelabelRule};
use crate::secret::{ValueFrom, ValueSource};
use crate::units::format_duration;

use super::config::{RawRelabelConfig, RawScrapeConfig, RawTlsConfig};
use super::{
    MAX_BODY_SIZE_LIMIT, MAX_SCRAPE_CONFIGS, MAX_TARGETS_PER_JOB, UnsupportedInput,
    ValidatedScrapeJob, discovery,
};

/// What a job inherits from its pipeline.
pub(crate) struct PipelineDefaults<'a> {
    /// The pipeline's name, which decides whether it is the provider's own.
    pub name: &'a str,
    /// The pipeline's scrape interval and timeout.
    pub scrape: &'a ValidatedScrape,
    /// The pipeline's limits.
    pub limits: ValidatedLimits,
}

/// Checks every scrape configuration at `path` (`spec.input.unsupported`) and returns
/// the jobs that passed.
pub(crate) fn validate(
    input: &UnsupportedInput,
    path: &str,
    pipeline: &PipelineDefaults<'_>,
    context: &ValidationContext,
    errors: &mut FieldErrors,
) -> Vec<ValidatedScrapeJob> {
    let list_path = field(path, "scrapeConfigs");
    if input.scrape_configs.is_empty() {
        errors.add(
            &list_path,
            "list at least one scrape config, or leave out the unsupported input",
        );
    }
    if input.scrape_configs.len() > MAX_SCRAPE_CONFIGS {
        errors.add(
            &list_path,
            format!(
                "{} scrape configs are more than the {MAX_SCRAPE_CONFIGS} one pipeline may hold; \
                 split them over several pipelines",
                input.scrape_configs.len()
            ),
        );
        return Vec::new();
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut jobs = Vec::new();
    for (i, raw) in input.scrape_configs.iter().enumerate() {
        let job_path = index(&list_path, i);
        if let Some(first) = names.insert(raw.job_name.as_str(), i)
            && !raw.job_name.is_empty()
        {
            errors.add(
                field(&job_path, "job_name"),
                format!(
                    "job name {:?} is taken by scrapeConfigs[{first}] already; job names are \
                     unique, as in Prometheus",
                    raw.job_name
                ),
            );
        }
        let before = errors.len();
        let job = validate_job(raw, &job_path, pipeline, context, errors);
        if errors.len() == before {
            jobs.extend(job);
        }
    }
    jobs
}

/// Checks one job completely.
fn validate_job(
    raw: &RawScrapeConfig,
    path: &str,
    pipeline: &PipelineDefaults<'_>,
    context: &ValidationContext,
    errors: &mut FieldErrors,
) -> Option<ValidatedScrapeJob> {
    if raw.job_name.is_empty() {
        errors.add(
            field(path, "job_name"),
            "required: the job's name is the default job label of its series",
        );
    }
    let interval = positive_duration(
        raw.scrape_interval.as_deref(),
        pipeline.scrape.interval,
        &field(path, "scrape_interval"),
        errors,
    );
    let timeout = positive_duration(
        raw.scrape_timeout.as_deref(),
        pipeline.scrape.timeout.min(interval),
        &field(path, "scrape_timeout"),
        errors,
    );
    if timeout > interval {
        errors.add(
            field(path, "scrape_timeout"),
            format!(
                "{} is longer than the job's scrape_interval {}; a scrape must end before the \
                 next one starts",
                format_duration(timeout),
                format_duration(interval)
            ),
        );
    }
    let metrics_path = raw.metrics_path.as_deref().unwrap_or("/metrics");
    if !metrics_path.starts_with('/') {
        errors.add(
            field(path, "metrics_path"),
            format!("{metrics_path:?} must be an absolute URL path, starting with '/'"),
        );
    }
    let scheme = match raw.scheme.as_deref() {
        None | Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        Some(other) => {
            errors.add(
                field(path, "scheme"),
                format!("{other:?} is not a scrape scheme: use http or https"),
            );
            Scheme::Http
        }
    };
    let params = check_params(raw, path, errors);
    let (limits, body_size_limit, target_limit) = check_limits(raw, path, pipeline, errors);
    let client = check_client(raw, path, pipeline.name, context, errors);
    let relabel = relabel_rules(
        raw.relabel_configs.as_deref(),
        path,
        "relabel_configs",
        errors,
    );
    let metric_relabel = relabel_rules(
        raw.metric_relabel_configs.as_deref(),
        path,
        "metric_relabel_configs",
        errors,
    );
    let found = discovery::validate(raw, path, target_limit, context, errors);
    Some(ValidatedScrapeJob {
        job_name: raw.job_name.clone(),
        interval,
        timeout,
        metrics_path: metrics_path.to_owned(),
        scheme,
        honor_labels: raw.honor_labels.unwrap_or(false),
        honor_timestamps: raw.honor_timestamps.unwrap_or(true),
        params,
        limits,
        body_size_limit,
        target_limit,
        bearer_token_file: client.bearer_token_file,
        tls: client.tls,
        static_configs: found.static_configs,
        file_sd_configs: found.file_sd_configs,
        kubernetes_sd_configs: found.kubernetes_sd_configs,
        relabel,
        metric_relabel,
    })
}

/// `params`: one value per parameter (the agent sends each parameter once).
fn check_params(
    raw: &RawScrapeConfig,
    path: &str,
    errors: &mut FieldErrors,
) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    for (name, values) in raw.params.iter().flatten() {
        match values.as_slice() {
            [value] => {
                params.insert(name.clone(), value.clone());
            }
            _ => errors.add(
                key(&field(path, "params"), name),
                format!(
                    "{} values; the agent sends each parameter exactly once, so give exactly \
                     one",
                    values.len()
                ),
            ),
        }
    }
    params
}

/// The job's limits: each unset or 0 is the pipeline's; `body_size_limit` and
/// `target_limit` are bounded by the agent's.
fn check_limits(
    raw: &RawScrapeConfig,
    path: &str,
    pipeline: &PipelineDefaults<'_>,
    errors: &mut FieldErrors,
) -> (ValidatedLimits, Option<NonZeroU64>, NonZeroU32) {
    let own = |value: Option<u32>, inherited: Option<NonZeroU32>| {
        value.and_then(NonZeroU32::new).or(inherited)
    };
    let limits = ValidatedLimits {
        sample_limit: own(raw.sample_limit, pipeline.limits.sample_limit),
        label_limit: own(raw.label_limit, pipeline.limits.label_limit),
        label_name_length_limit: own(
            raw.label_name_length_limit,
            pipeline.limits.label_name_length_limit,
        ),
        label_value_length_limit: own(
            raw.label_value_length_limit,
            pipeline.limits.label_value_length_limit,
        ),
    };
    let body_size_limit = raw.body_size_limit.as_deref().and_then(|text| {
        let limit_path = field(path, "body_size_limit");
        match parse_base2_bytes(text) {
            Ok(bytes) if bytes > MAX_BODY_SIZE_LIMIT => {
                errors.add(
                    limit_path,
                    format!(
                        "{bytes} bytes is more than the agent reads of any scrape \
                         ({MAX_BODY_SIZE_LIMIT} bytes); leave it out or set less"
                    ),
                );
                None
            }
            Ok(bytes) => NonZeroU64::new(bytes),
            Err(reason) => {
                errors.add(limit_path, reason);
                None
            }
        }
    });
    let most = NonZeroU32::new(MAX_TARGETS_PER_JOB).unwrap_or(NonZeroU32::MIN);
    let target_limit = match raw.target_limit.and_then(NonZeroU32::new) {
        Some(limit) if limit > most => {
            errors.add(
                field(path, "target_limit"),
                format!(
                    "{limit} is more than the {MAX_TARGETS_PER_JOB} targets one job may have; \
                     split the job"
                ),
            );
            most
        }
        Some(limit) => limit,
        None => most,
    };
    (limits, body_size_limit, target_limit)
}

/// A byte size as Prometheus writes `body_size_limit` (alecthomas/units'
/// `ParseBase2Bytes`): a number and a unit from `B` to `EB` or `KiB` to `EiB`, every
/// unit a power of 1024.
pub fn parse_base2_bytes(text: &str) -> Result<u64, String> {
    const UNITS: [(&str, u32); 7] = [
        ("B", 0),
        ("K", 1),
        ("M", 2),
        ("G", 3),
        ("T", 4),
        ("P", 5),
        ("E", 6),
    ];
    let invalid = || format!("{text:?} is not a byte size: use a number and a unit, e.g. \"10MB\"");
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let number: u64 = text[..digits].parse().map_err(|_| invalid())?;
    let unit = &text[digits..];
    let unit = unit
        .strip_suffix("iB")
        .or_else(|| unit.strip_suffix('B').filter(|u| !u.is_empty()))
        .unwrap_or(unit);
    let (_, power) = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or_else(invalid)?;
    number
        .checked_mul(1024u64.pow(*power))
        .ok_or_else(|| format!("{text:?} is too large a byte size"))
}

/// What a job's HTTP client settings give the agent.
struct ClientSettings {
    bearer_token_file: Option<String>,
    tls: Option<Tls>,
}

/// The HTTP client settings: inline credentials refused, files only where the origin
/// and the path policy allow, the scraper's own defaults kept.
fn check_client(
    raw: &RawScrapeConfig,
    path: &str,
    pipeline_name: &str,
    context: &ValidationContext,
    errors: &mut FieldErrors,
) -> ClientSettings {
    let inline = [
        (raw.bearer_token.is_some(), field(path, "bearer_token")),
        (
            raw.authorization
                .as_ref()
                .is_some_and(|a| a.credentials.is_some()),
            field(&field(path, "authorization"), "credentials"),
        ),
        (
            raw.basic_auth
                .as_ref()
                .is_some_and(|a| a.password.is_some()),
            field(&field(path, "basic_auth"), "password"),
        ),
        (
            raw.oauth2
                .as_ref()
                .is_some_and(|a| a.client_secret.is_some()),
            field(&field(path, "oauth2"), "client_secret"),
        ),
    ];
    for (_, inline_path) in inline.iter().filter(|(set, _)| *set) {
        refuse_inline_credential(inline_path, errors);
    }
    let files = [
        (
            raw.bearer_token_file.as_ref(),
            field(path, "bearer_token_file"),
        ),
        (
            raw.authorization
                .as_ref()
                .and_then(|a| a.credentials_file.as_ref()),
            field(&field(path, "authorization"), "credentials_file"),
        ),
        (
            raw.basic_auth
                .as_ref()
                .and_then(|a| a.password_file.as_ref()),
            field(&field(path, "basic_auth"), "password_file"),
        ),
        (
            raw.oauth2
                .as_ref()
                .and_then(|a| a.client_secret_file.as_ref()),
            field(&field(path, "oauth2"), "client_secret_file"),
        ),
    ];
    for (file, file_path) in &files {
        if let Some(file) = file {
            check_file(file, file_path, context, errors);
        }
    }
    check_unsupported_client(raw, path, errors);
    let authorization_file = raw.authorization.as_ref().and_then(|authorization| {
        let scheme = authorization.type_.as_deref().unwrap_or("Bearer");
        if scheme != "Bearer" {
            errors.add(
                field(&field(path, "authorization"), "type"),
                format!(
                    "{scheme:?}: the agent sends only Bearer credentials; Prometheus' \
                     other schemes are not supported"
                ),
            );
        }
        authorization.credentials_file.clone()
    });
    if raw.bearer_token_file.is_some() && raw.authorization.is_some() {
        errors.add(
            field(path, "bearer_token_file"),
            "set either bearer_token_file or authorization, not both",
        );
    }
    let tls = raw.tls_config.as_ref().and_then(|tls| {
        check_tls(
            tls,
            &field(path, "tls_config"),
            pipeline_name,
            context,
            errors,
        )
    });
    ClientSettings {
        bearer_token_file: raw.bearer_token_file.clone().or(authorization_file),
        tls,
    }
}

/// The client settings the agent's scraper does not have: refused by name.
fn check_unsupported_client(raw: &RawScrapeConfig, path: &str, errors: &mut FieldErrors) {
    if raw.basic_auth.is_some() {
        errors.add(
            field(path, "basic_auth"),
            "the agent's scraper does not send basic authentication; use authorization with \
             a credentials_file",
        );
    }
    if raw.oauth2.is_some() {
        errors.add(
            field(path, "oauth2"),
            "the agent's scraper does not fetch OAuth 2.0 tokens for targets",
        );
    }
    if raw.proxy_url.is_some() {
        errors.add(
            field(path, "proxy_url"),
            "pipelines do not choose the agent's way out of the cluster: scrapes go directly \
             to their targets, as every input's do",
        );
    }
    for (name, value) in [
        ("follow_redirects", raw.follow_redirects),
        ("enable_http2", raw.enable_http2),
    ] {
        if value == Some(false) {
            errors.add(
                field(path, name),
                "the agent's scraper keeps Prometheus' default, true; false is not supported",
            );
        }
    }
}

/// `tls_config`: the provider's own pipelines only, as for `static` targets; its
/// files as every file.
fn check_tls(
    tls: &RawTlsConfig,
    path: &str,
    pipeline_name: &str,
    context: &ValidationContext,
    errors: &mut FieldErrors,
) -> Option<Tls> {
    if !is_providers_own(pipeline_name, context) {
        errors.add(
            path,
            format!(
                "only the provider's own pipelines may scrape with TLS settings of their own; \
                 not {}",
                context.origin.describe()
            ),
        );
        return None;
    }
    let file = |name: &str, value: &Option<String>, errors: &mut FieldErrors| {
        let file = value.as_ref()?;
        check_file(file, &field(path, name), context, errors);
        Some(ValueSource {
            value: None,
            value_from: Some(ValueFrom {
                secret_key_ref: None,
                file: Some(file.clone()),
            }),
        })
    };
    let ca = file("ca_file", &tls.ca_file, errors);
    let cert = file("cert_file", &tls.cert_file, errors);
    let key = file("key_file", &tls.key_file, errors);
    if cert.is_some() != key.is_some() {
        errors.add(
            path,
            "a client certificate needs its key: set cert_file and key_file together",
        );
    }
    if let Some(version) = tls.min_version.as_deref()
        && version != "TLS12"
    {
        errors.add(
            field(path, "min_version"),
            format!("{version:?}: the agent's scraper speaks TLS 1.2 and 1.3; only TLS12 is taken"),
        );
    }
    Some(Tls {
        insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
        ca,
        cert,
        key,
        server_name: tls.server_name.clone(),
        agent_identity: false,
    })
}

/// Refuses an inline credential without quoting it.
fn refuse_inline_credential(path: &str, errors: &mut FieldErrors) {
    errors.add(
        path,
        "an inline credential would be stored and shown with the pipeline; unsupported mode \
         takes credentials from files of a standalone agent only",
    );
}

/// A file the agent would read: only a standalone agent's own configuration may name
/// one, under the path policy (as `valueFrom.file`).
pub(crate) fn check_file(
    file: &str,
    path: &str,
    context: &ValidationContext,
    errors: &mut FieldErrors,
) {
    if !context.origin.may_read_agent_files() {
        errors.add(
            path,
            format!(
                "the agent reads files for a pipeline only in a standalone agent's own \
                 configuration, not in {}",
                context.origin.describe()
            ),
        );
    } else if let Err(reason) = context.policy.paths.check(file) {
        errors.add(path, reason);
    }
}

/// Compiles `relabel_configs` or `metric_relabel_configs` with the model's relabel
/// validation; paths in Prometheus' spelling.
fn relabel_rules(
    list: Option<&[RawRelabelConfig]>,
    path: &str,
    name: &str,
    errors: &mut FieldErrors,
) -> Vec<RelabelRule> {
    let list_path = field(path, name);
    let mut rules = Vec::new();
    for (i, raw) in list.into_iter().flatten().enumerate() {
        let rule_path = index(&list_path, i);
        let mut found = FieldErrors::default();
        let rule = RelabelConfig::from(raw).validate("", &mut found);
        match found.into_result() {
            Ok(()) => rules.extend(rule),
            Err(problems) => {
                for mut problem in problems.0 {
                    problem.path = prometheus_spelling(&rule_path, &problem.path);
                    errors.push(problem);
                }
            }
        }
    }
    rules
}

/// `base` and the model's relabel field path `relative`, in Prometheus' spelling.
fn prometheus_spelling(base: &str, relative: &str) -> String {
    let spelled = [
        ("sourceLabels", "source_labels"),
        ("targetLabel", "target_label"),
    ]
    .into_iter()
    .fold(relative.to_owned(), |path, (model, prometheus)| {
        path.replacen(model, prometheus, 1)
    });
    if spelled.is_empty() {
        base.to_owned()
    } else if spelled.starts_with('[') {
        format!("{base}{spelled}")
    } else {
        field(base, &spelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_as_prometheus_reads_them() {
        assert_eq!(parse_base2_bytes("10MB"), Ok(10 << 20));
        assert_eq!(parse_base2_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_base2_bytes("1GB"), Ok(1 << 30));
        assert_eq!(parse_base2_bytes("100B"), Ok(100));
        for bad in ["", "10", "MB", "10mb", "1.5MB", "99999999999EB"] {
            assert!(parse_base2_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn relabel_paths_take_prometheus_spelling() {
        assert_eq!(
            prometheus_spelling("r[1]", "sourceLabels[0]"),
            "r[1].source_labels[0]"
        );
        assert_eq!(
            prometheus_spelling("r[1]", "targetLabel"),
            "r[1].target_label"
        );
        assert_eq!(prometheus_spelling("r[1]", ""), "r[1]");
    }
}
