//! The `runtime` input: every node's kubelet scraped directly on the kubelet port
//! (`/metrics`, `/metrics/cadvisor`, `/metrics/resource`), with the agent's
//! service-account token, which the kubelet authorizes as `nodes/metrics`.
//!
//! # The token goes only to the kubelet
//!
//! These are the only scrapes that carry the agent's own credentials, so their targets
//! are sealed ([`kaas_pipeline::sealed`]): validation refuses relabel rules that could
//! change their address, scheme or path; here a target whose address, scheme or path
//! still differs after the pipeline's relabeling is not scraped and the pipeline
//! reports [`ErrorReason::TargetSealed`]; and each target's token is bound to the URL
//! discovery produced ([`ScrapeCredentials`]), so nothing that skipped validation can
//! send it elsewhere either.
//!
//! # The kubelet's certificate
//!
//! The kubelet's serving certificate is verified against the cluster CA (the `ca.crt`
//! of the service-account mount) by default, so the token is not handed to whoever
//! answers on the node's address. Kubelets serve a self-signed certificate unless
//! kubelet serving certificates are on (`serverTLSBootstrap: true`, certificates signed
//! through the cluster's CSR API); when verification fails the pipeline reports
//! [`ErrorReason::KubeletCertificateUntrusted`] with both fixes ([`KUBELET_CERTIFICATE_FIXES`]). The
//! provider may turn verification off for one cluster with that cluster's agent flag
//! `--kubelet-insecure-skip-tls-verify`; a pipeline cannot.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kaas_pipeline::ValidatedPipeline;
use kaas_pipeline::secret::SecretString;
use url::Url;

use super::runtime::{defaults, scrape_config};
use super::targets::DesiredTarget;
use crate::discovery::kubernetes::nodes;
use crate::internal_events::{ErrorReason, PipelineFailed, PipelineStats};
use crate::labels::{ADDRESS, Labels};
use crate::outbound::tls::{TlsError, TlsMaterial};
use crate::scrape::client::ScrapeClient;
use crate::scrape::credentials::ScrapeCredentials;
use crate::scrape::target::Target;
use crate::scrape::target::{METRICS_PATH, SCHEME, populate};

/// The job of runtime targets, as the kubernetes-mixin dashboards and alerts expect.
pub const KUBELET_JOB: &str = "kubelet";
/// Where a pod's service-account token and CA are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// What fixes an untrusted kubelet certificate, said in the pipeline's condition.
pub const KUBELET_CERTIFICATE_FIXES: &str = "the kubelet's serving certificate must be signed \
    by the cluster CA: turn on kubelet serving certificates (KubeletConfiguration \
    serverTLSBootstrap: true, and approve the kubelets' certificate signing requests), or \
    ask the provider to skip kubelet certificate verification for this cluster (the agent \
    flag --kubelet-insecure-skip-tls-verify)";

/// Why kubelets cannot be scraped.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The cluster CA cannot be read from the service-account mount.
    #[error(
        "cannot read the cluster CA {path} to verify kubelets: {reason}; kubelets are not \
         scraped (the provider can skip the verification with --kubelet-insecure-skip-tls-verify)"
    )]
    Ca {
        /// The CA file.
        path: PathBuf,
        /// Why.
        reason: std::io::ErrorKind,
    },
    /// The client cannot be built.
    #[error("cannot build the kubelet client: {0}")]
    Tls(#[from] TlsError),
}

/// How to reach kubelets: over HTTPS, verifying their certificates against the cluster
/// CA unless the provider switched that off, with the agent's service-account token.
#[derive(Clone, Debug)]
pub struct KubeletAccess {
    /// A client trusting the cluster CA (or, skipped by the provider, any certificate).
    pub client: ScrapeClient,
    /// The token file, read for every scrape.
    pub token_file: PathBuf,
}

impl KubeletAccess {
    /// Access with the service account mounted at `dir`; certificates are verified
    /// against its `ca.crt` unless `insecure_skip_verify`.
    pub fn new(dir: &Path, insecure_skip_verify: bool) -> Result<Self, KubeletError> {
        let ca_pem = if insecure_skip_verify {
            None
        } else {
            let path = dir.join("ca.crt");
            let pem = std::fs::read_to_string(&path).map_err(|e| KubeletError::Ca {
                path: path.clone(),
                reason: e.kind(),
            })?;
            Some(SecretString::new(pem))
        };
        let material = TlsMaterial {
            ca_pem,
            insecure_skip_verify,
            ..TlsMaterial::default()
        };
        Ok(Self {
            client: ScrapeClient::new(&material)?,
            token_file: dir.join("token"),
        })
    }
}

/// Metric relabel rules that apply a namespace filter to series carrying a `namespace`
/// label (container metrics); series without one (node metrics) pass.
fn namespace_rules(
    selector: &kaas_pipeline::input::NamespaceSelector,
) -> Vec<kaas_pipeline::processors::RelabelRule> {
    use kaas_pipeline::processors::{RelabelConfig, compile_rule};
    let mut configs = Vec::new();
    if selector.include.is_empty() {
        let mut excluded: Vec<&str> = selector.exclude.iter().map(String::as_str).collect();
        if !selector.system {
            excluded.extend(kaas_pipeline::input::SYSTEM_NAMESPACES);
        }
        if !excluded.is_empty() {
            configs.push(RelabelConfig {
                action: Some("drop".into()),
                source_labels: Some(vec!["namespace".into()]),
                regex: Some(excluded.join("|")),
                ..Default::default()
            });
        }
    } else {
        configs.push(RelabelConfig {
            source_labels: Some(vec!["namespace".into()]),
            regex: Some(selector.include.join("|")),
            target_label: Some("__tmp_namespace_included".into()),
            replacement: Some("yes".into()),
            ..Default::default()
        });
        configs.push(RelabelConfig {
            action: Some("drop".into()),
            source_labels: Some(vec!["namespace".into(), "__tmp_namespace_included".into()]),
            regex: Some(".+;".into()),
            ..Default::default()
        });
        configs.push(RelabelConfig {
            action: Some("labeldrop".into()),
            regex: Some("__tmp_namespace_included".into()),
            ..Default::default()
        });
    }
    // Namespace names are DNS labels, so these patterns always compile.
    configs
        .iter()
        .filter_map(|c| compile_rule(c).ok())
        .collect()
}

/// Runtime targets of the current nodes: the kubelet's own metrics, cAdvisor's
/// container metrics and the node's resource metrics, as the input's `resources` ask.
/// Each carries the agent's token, bound to the URL discovery produced; a target the
/// pipeline's relabeling moved is left out and reported on `stats`.
pub fn runtime_targets(
    pipeline: &ValidatedPipeline,
    nodes: &[Arc<Node>],
    access: &KubeletAccess,
    stats: &PipelineStats,
) -> Vec<DesiredTarget> {
    let Some(input) = &pipeline.inputs.runtime else {
        return Vec::new();
    };
    let paths: Vec<&str> = [
        (input.kubelet, "/metrics"),
        (input.cadvisor, "/metrics/cadvisor"),
        (input.node, "/metrics/resource"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, path)| path)
    .collect();
    let mut processors = pipeline.processors.clone();
    let mut metric_relabel = namespace_rules(&input.namespaces);
    metric_relabel.extend(processors.metric_relabel);
    processors.metric_relabel = metric_relabel;
    let processors = Arc::new(processors);
    let config = scrape_config(pipeline, false, true);
    let mut desired = Vec::new();
    for node in nodes {
        let Some(discovered) = nodes::node_target(node) else {
            continue;
        };
        for path in &paths {
            let mut defaults = defaults(pipeline, path, "https");
            defaults.job = KUBELET_JOB.to_owned();
            let mut builder = crate::labels::LabelsBuilder::new(&discovered);
            builder.set(METRICS_PATH, path);
            builder.set(SCHEME, "https");
            builder.set("metrics_path", path);
            builder.set("node", discovered.get("__meta_kubernetes_node_name"));
            let with_path = builder.labels();
            let Ok(Some(labels)) = populate(&with_path, &defaults, &pipeline.processors.relabel)
            else {
                continue;
            };
            if let Some(moved) = moved_label(&with_path, &labels) {
                PipelineFailed::new(
                    ErrorReason::TargetSealed,
                    format!(
                        "the kubelet target {} {path} is not scraped: relabeling changed its \
                         {moved}, and it carries the agent's credentials",
                        with_path.get(ADDRESS)
                    ),
                )
                .emit(stats);
                continue;
            }
            let Ok(target) = Target::new(labels) else {
                continue;
            };
            let Ok(bound_to) = Url::parse(&format!("https://{}{path}", with_path.get(ADDRESS)))
            else {
                continue;
            };
            let mut config = config.clone();
            config.credentials = Some(ScrapeCredentials {
                token_file: access.token_file.clone(),
                bound_to,
                untrusted_certificate_reason: ErrorReason::KubeletCertificateUntrusted,
                untrusted_certificate_advice: KUBELET_CERTIFICATE_FIXES,
            });
            desired.push(DesiredTarget {
                target,
                config,
                client: Some(access.client.clone()),
                processors: Some(processors.clone()),
            });
        }
    }
    desired
}

/// The sealed label relabeling changed between `discovered` and `relabeled`, if any.
fn moved_label(discovered: &Labels, relabeled: &Labels) -> Option<&'static str> {
    [ADDRESS, SCHEME, METRICS_PATH]
        .into_iter()
        .find(|name| discovered.get(name) != relabeled.get(name))
}

#[cfg(test)]
mod tests {
    use kaas_pipeline::input::NamespaceSelector;

    use super::*;
    use crate::processing::relabel::process;

    fn kept(selector: &NamespaceSelector, namespace: &str) -> bool {
        let labels = Labels::from_pairs([("__name__", "x"), ("namespace", namespace)]);
        let result = process(&labels, &namespace_rules(selector));
        if let Some(labels) = &result {
            assert_eq!(
                labels.get("__tmp_namespace_included"),
                "",
                "helper label removed"
            );
        }
        result.is_some()
    }

    #[test]
    fn namespace_rules_filter_only_series_with_a_namespace() {
        let default = NamespaceSelector::default();
        assert!(kept(&default, "shop"));
        assert!(!kept(&default, "kube-system"));
        assert!(kept(&default, ""), "node-level series have no namespace");
        let include = NamespaceSelector {
            include: vec!["shop".into(), "kube-system".into()],
            ..Default::default()
        };
        assert!(kept(&include, "shop") && kept(&include, "kube-system") && kept(&include, ""));
        assert!(!kept(&include, "billing"));
        let exclude = NamespaceSelector {
            exclude: vec!["billing".into()],
            system: true,
            ..Default::default()
        };
        assert!(kept(&exclude, "kube-system") && !kept(&exclude, "billing"));
    }
}
