//! Validation of a raw job's service discovery: the mechanisms the agent has
//! (`static_configs`, `file_sd_configs`, `kubernetes_sd_configs` for pods and
//! EndpointSlices through the agent's own API access) and the refusal, by name, of
//! every other mechanism of Prometheus 2.42.

use std::num::NonZeroU32;

use crate::errors::{FieldErrors, field, index, key};
use crate::input::{NamespaceSelector, check_names, positive_duration};
use crate::names::check_prometheus_label_name;
use crate::policy::ValidationContext;

use super::checks::check_file;
use super::config::{RawKubernetesSdConfig, RawScrapeConfig, RawStaticConfig};
use super::{DEFAULT_FILE_SD_REFRESH, KubernetesRole, ValidatedFileSd, ValidatedKubernetesSd};

/// The discovery mechanisms the agent runs, as refusals name them.
pub const SUPPORTED_DISCOVERY: &str =
    "static_configs, file_sd_configs and kubernetes_sd_configs (roles pod and endpointslice)";

/// What a job discovers with.
#[derive(Default)]
pub(crate) struct Discovery {
    pub static_configs: Vec<RawStaticConfig>,
    pub file_sd_configs: Vec<ValidatedFileSd>,
    pub kubernetes_sd_configs: Vec<ValidatedKubernetesSd>,
}

/// Checks the job's discovery at `path`; `target_limit` bounds its static targets.
pub(crate) fn validate(
    raw: &RawScrapeConfig,
    path: &str,
    target_limit: NonZeroU32,
    context: &ValidationContext,
    errors: &mut FieldErrors,
) -> Discovery {
    for name in raw.other_discovery() {
        errors.add(
            field(path, name),
            format!(
                "the agent does not discover targets with {name}; it has {SUPPORTED_DISCOVERY}"
            ),
        );
    }
    let static_configs = raw.static_configs.clone().unwrap_or_default();
    let file_sd = raw.file_sd_configs.as_deref().unwrap_or_default();
    let kubernetes = raw.kubernetes_sd_configs.as_deref().unwrap_or_default();
    if static_configs.is_empty()
        && file_sd.is_empty()
        && kubernetes.is_empty()
        && raw.other_discovery().is_empty()
    {
        errors.add(
            path,
            format!("the job discovers no targets: list them with one of {SUPPORTED_DISCOVERY}"),
        );
    }
    check_static(&static_configs, path, target_limit, context, errors);
    let file_sd_configs = file_sd
        .iter()
        .enumerate()
        .map(|(i, config)| {
            let config_path = index(&field(path, "file_sd_configs"), i);
            if config.files.is_empty() {
                errors.add(field(&config_path, "files"), "list at least one file");
            }
            for (j, file) in config.files.iter().enumerate() {
                let file_path = index(&field(&config_path, "files"), j);
                if file.contains(['*', '?', '[']) {
                    errors.add(
                        &file_path,
                        "the agent reads the files named, not patterns: list each file",
                    );
                } else {
                    check_file(file, &file_path, context, errors);
                }
            }
            ValidatedFileSd {
                files: config.files.clone(),
                refresh_interval: positive_duration(
                    config.refresh_interval.as_deref(),
                    DEFAULT_FILE_SD_REFRESH,
                    &field(&config_path, "refresh_interval"),
                    errors,
                ),
            }
        })
        .collect();
    let kubernetes_sd_configs = kubernetes
        .iter()
        .enumerate()
        .filter_map(|(i, config)| {
            check_kubernetes(
                config,
                &index(&field(path, "kubernetes_sd_configs"), i),
                errors,
            )
        })
        .collect();
    Discovery {
        static_configs,
        file_sd_configs,
        kubernetes_sd_configs,
    }
}

/// Static targets: `host[:port]` as Prometheus takes them, never with credentials and
/// never the provider's central receiver; at most `target_limit` of them.
fn check_static(
    groups: &[RawStaticConfig],
    path: &str,
    target_limit: NonZeroU32,
    context: &ValidationContext,
    errors: &mut FieldErrors,
) {
    let list_path = field(path, "static_configs");
    let count: usize = groups.iter().map(|g| g.targets.len()).sum();
    if count > target_limit.get() as usize {
        errors.add(
            &list_path,
            format!(
                "{count} targets are more than the job's target_limit of {target_limit}; with \
                 more, Prometheus scrapes none of them"
            ),
        );
    }
    for (i, group) in groups.iter().enumerate() {
        let group_path = index(&list_path, i);
        for (j, target) in group.targets.iter().enumerate() {
            let target_path = index(&field(&group_path, "targets"), j);
            if target.contains('@') {
                // Never quoted: the part before '@' is a credential.
                errors.add(
                    target_path,
                    "a target with user information (user:password@host) would store and show \
                     its credentials with the pipeline; give host:port only",
                );
            } else if let Err(reason) = check_target(target) {
                errors.add(target_path, reason);
            } else if url::Url::parse(&format!("http://{target}"))
                .is_ok_and(|url| context.policy.is_central_endpoint(&url))
            {
                errors.add(
                    target_path,
                    "this is the provider's central receiver, which no tenant pipeline scrapes",
                );
            }
        }
        for name in group.labels.keys() {
            if let Err(reason) = check_prometheus_label_name(name) {
                errors.add(key(&field(&group_path, "labels"), name), reason);
            }
        }
    }
}

/// A static target as Prometheus takes it: a host with an optional port, nothing else.
fn check_target(target: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{target:?} is not a host[:port] target: {why}"));
    if target.contains("://") {
        return bad("leave out the scheme; set the job's scheme instead");
    }
    if target.contains('/') {
        return bad("leave out the path; set the job's metrics_path instead");
    }
    if target.is_empty() || target.starts_with(':') || target.chars().any(char::is_whitespace) {
        return bad("the host is missing or holds whitespace");
    }
    Ok(())
}

/// A `kubernetes_sd_config`: a role the agent discovers, in the agent's own cluster
/// with its own credentials, in namespaces it may list.
fn check_kubernetes(
    config: &RawKubernetesSdConfig,
    path: &str,
    errors: &mut FieldErrors,
) -> Option<ValidatedKubernetesSd> {
    let role = match config.role.as_str() {
        "pod" => Some(KubernetesRole::Pod),
        "endpointslice" => Some(KubernetesRole::EndpointSlice),
        other => {
            errors.add(
                field(path, "role"),
                format!(
                    "{other:?}: the agent discovers the roles pod and endpointslice; Prometheus' \
                     node, service, endpoints and ingress roles are not supported"
                ),
            );
            None
        }
    };
    if config.api_server.is_some() {
        errors.add(
            field(path, "api_server"),
            "the agent discovers in its own cluster only, through its own API server access",
        );
    }
    if config.kubeconfig_file.is_some() {
        errors.add(
            field(path, "kubeconfig_file"),
            "the agent never reads a kubeconfig for a pipeline: it discovers with its own \
             credentials in its own cluster",
        );
    }
    let client_fields = [
        ("authorization", config.authorization.is_some()),
        ("basic_auth", config.basic_auth.is_some()),
        ("oauth2", config.oauth2.is_some()),
        ("bearer_token", config.bearer_token.is_some()),
        ("bearer_token_file", config.bearer_token_file.is_some()),
        ("tls_config", config.tls_config.is_some()),
        ("proxy_url", config.proxy_url.is_some()),
        ("follow_redirects", config.follow_redirects.is_some()),
        ("enable_http2", config.enable_http2.is_some()),
    ];
    for (name, _) in client_fields.iter().filter(|(_, set)| *set) {
        errors.add(
            field(path, name),
            "the agent reaches its API server with its own client settings; a pipeline sets \
             none",
        );
    }
    if config.selectors.is_some() {
        errors.add(
            field(path, "selectors"),
            "not supported: keep or drop targets with relabel_configs on their __meta_kubernetes_* \
             labels",
        );
    }
    if config.attach_metadata.is_some() {
        errors.add(
            field(path, "attach_metadata"),
            "not supported: the agent does not attach node metadata to pod targets",
        );
    }
    let namespaces = config.namespaces.clone().unwrap_or_default();
    let namespaces_path = field(path, "namespaces");
    if namespaces.own_namespace.is_some() {
        errors.add(
            field(&namespaces_path, "own_namespace"),
            "the agent's own namespace holds its credentials and is not a pipeline's to \
             discover in",
        );
    }
    check_names(
        &field(&namespaces_path, "names"),
        &namespaces.names,
        "namespace",
        errors,
    );
    Some(ValidatedKubernetesSd {
        role: role?,
        namespaces: NamespaceSelector {
            include: namespaces.names,
            ..NamespaceSelector::default()
        },
    })
}
