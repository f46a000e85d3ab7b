//! The context every validation runs in: where the pipeline comes from ([`Origin`]) and
//! what the provider allows ([`ProviderPolicy`]).
//!
//! The same document means different things from different writers. A standalone
//! agent's configuration file is written by whoever runs that agent, who may already
//! read its files; a pipeline distributed by the observer is written by a tenant through
//! the API, who must never reach the agent's files, credentials or the provider's own
//! backend. So [`crate::validate`] takes a [`ValidationContext`] and stays pure: the
//! context is plain data, built once by the caller (the API from its flags, the agent
//! from its own, `observer pipeline validate` from `--standalone`).
//!
//! Rules that depend on the origin:
//! - `valueFrom.file` is only for [`Origin::Standalone`]; elsewhere it is refused with
//!   its field path.
//! - every file path (today `valueFrom.file`; later log file inputs and raw scrape
//!   configurations) passes the [`PathPolicy`].
//!
//! Rules that depend on the provider's policy, whatever the origin:
//! - `secretKeyRef.namespace` must be one of [`ProviderPolicy::secret_namespaces`]: the
//!   one allow-list the observer renders into the agent's install manifest (Roles and
//!   the agent's `--secret-namespaces` flag) and the agent checks again;
//! - headers in [`ProviderPolicy::reserved_headers`] (the tenancy headers) may not be
//!   set;
//! - an output may not point at one of [`ProviderPolicy::central_endpoints`].

use std::collections::BTreeSet;

use url::Url;

use std::path::PathBuf;

use crate::paths::PathPolicy;

/// The namespace the agent runs in by default (`deploy/agent/base`), and so the one
/// namespace whose Secrets pipelines may reference unless the provider allows more: it
/// holds the agent's own credentials for the provider's receiver, and nothing a tenant's
/// workloads put there by accident.
pub const DEFAULT_AGENT_NAMESPACE: &str = "kaas-observer";

/// Headers that decide which tenant data belongs to, refused in tenant pipelines
/// whatever the provider configures: `THANOS-TENANT` is Thanos receive's default tenant
/// header. The observer adds the header its central pipeline actually uses.
pub const TENANCY_HEADERS: &[&str] = &["thanos-tenant"];

/// Who wrote a pipeline, which decides what it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A standalone agent's own configuration file, written by whoever runs that agent.
    Standalone,
    /// A pipeline the observer distributes to agents, written by a tenant through the
    /// API (or the observer's own central pipeline).
    Observer,
    /// A `MetricPipeline` resource in the workload cluster, written by anyone allowed
    /// to create that resource there.
    InCluster,
}

impl Origin {
    /// How the origin is named in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Standalone => "a standalone agent's configuration file",
            Self::Observer => "a pipeline the observer distributes",
            Self::InCluster => "a MetricPipeline resource in the cluster",
        }
    }

    /// Whether pipelines of this origin may read files on the agent
    /// (`valueFrom.file`): only the agent's own operator may.
    pub fn may_read_agent_files(self) -> bool {
        self == Self::Standalone
    }
}

/// The namespaces whose Secrets pipelines may reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretNamespaces {
    /// Any namespace: a standalone operator's own file, the observer's own pipeline, or
    /// an offline check that cannot know the provider's list.
    Any,
    /// Only these (DNS-1123 labels).
    Only(BTreeSet<String>),
}

impl SecretNamespaces {
    /// Only `namespaces`.
    pub fn only<S: Into<String>>(namespaces: impl IntoIterator<Item = S>) -> Self {
        Self::Only(namespaces.into_iter().map(Into::into).collect())
    }

    /// Whether Secrets of `namespace` may be referenced.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Only(list) => list.contains(namespace),
        }
    }

    /// The allowed namespaces, `None` for any.
    pub fn listed(&self) -> Option<&BTreeSet<String>> {
        match self {
            Self::Any => None,
            Self::Only(list) => Some(list),
        }
    }

    /// The allowed namespaces as an install manifest grants them (Roles in each, the
    /// agent's `--secret-namespaces`): empty for any, since no Role can grant every
    /// namespace.
    pub fn granted(&self) -> Vec<String> {
        self.listed().into_iter().flatten().cloned().collect()
    }
}

/// What the provider allows pipelines to do, whoever wrote them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderPolicy {
    /// Whose Secrets `secretKeyRef` may name.
    pub secret_namespaces: SecretNamespaces,
    /// Lower-case header names refused besides the protocol's own
    /// ([`crate::output::RESERVED_HEADERS`]): the tenancy headers.
    pub reserved_headers: BTreeSet<String>,
    /// The provider's central receiver(s): an output whose host and port are one of
    /// these is refused, so a tenant cannot write into the provider's backend under a
    /// tenant header of its choosing.
    pub central_endpoints: Vec<Url>,
    /// Which files may be read at all.
    pub paths: PathPolicy,
    /// Whether pipelines may present the agent's cluster certificate
    /// (`tls.agentIdentity`): the provider's own pipelines only.
    pub agent_identity: bool,
    /// Which node logs (journal units, log files) log pipelines may read.
    pub node_logs: NodeLogPolicy,
}

/// Journal units log pipelines may read by default: the kubelet's and the container
/// runtimes' (issue 16: the provider collects them centrally), which say what happened
/// to workloads; other units (sshd, sudo, cloud-init) can hold node secrets.
pub const DEFAULT_JOURNAL_UNITS: &[&str] =
    &["kubelet.service", "containerd.service", "crio.service"];
/// Where log pipelines may read plain log files by default: the node's log directory.
pub const DEFAULT_LOG_FILE_ROOTS: &[&str] = &["/var/log"];

/// Which node logs log pipelines may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLogPolicy {
    /// Whether tenant pipelines may read the node's journal at all. The journal holds
    /// every unit's output, node secrets included, so only the provider's own pipelines
    /// and standalone agents may unless the provider allows tenants.
    pub tenant_journal: bool,
    /// The units whose journal entries may be read.
    pub journal_units: BTreeSet<String>,
    /// Where log files may be read (`node.files.paths`), and what never.
    pub files: PathPolicy,
}

impl NodeLogPolicy {
    /// The defaults: no journal for tenants, [`DEFAULT_JOURNAL_UNITS`], files under
    /// [`DEFAULT_LOG_FILE_ROOTS`] except the agent's data directory and credentials.
    pub fn tenant_default() -> Self {
        Self {
            tenant_journal: false,
            journal_units: DEFAULT_JOURNAL_UNITS
                .iter()
                .map(|unit| (*unit).to_owned())
                .collect(),
            files: PathPolicy::for_log_files(DEFAULT_LOG_FILE_ROOTS.iter().map(PathBuf::from)),
        }
    }

    /// A standalone operator's own file, and what an agent enforces on what the
    /// observer sent (the observer checked the tenant rules): the journal allowed, still
    /// only the listed units; files anywhere but the agent's data directory and the
    /// credential mounts.
    pub fn unrestricted() -> Self {
        Self {
            tenant_journal: true,
            files: PathPolicy::agent_default(),
            ..Self::tenant_default()
        }
    }
}

impl ProviderPolicy {
    /// What the observer enforces on tenant pipelines unless its flags say otherwise:
    /// Secrets of the agent's own namespace only, the tenancy headers reserved.
    pub fn tenant_default() -> Self {
        Self {
            secret_namespaces: SecretNamespaces::only([DEFAULT_AGENT_NAMESPACE]),
            reserved_headers: TENANCY_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
            central_endpoints: Vec::new(),
            paths: PathPolicy::agent_default(),
            agent_identity: false,
            node_logs: NodeLogPolicy::tenant_default(),
        }
    }

    /// What can be checked without the observer's settings (`observer pipeline
    /// validate`, the CLI before it sends): the tenancy headers every provider reserves;
    /// Secret namespaces and central endpoints are the observer's to check.
    pub fn offline() -> Self {
        Self {
            secret_namespaces: SecretNamespaces::Any,
            ..Self::tenant_default()
        }
    }

    /// What an agent enforces when its flags say nothing else: Secrets of its own
    /// namespace only, no files from its default data directory or the credential
    /// mounts. No reserved headers: an agent also runs the provider's own pipeline,
    /// which sets them (the observer refuses them in tenant pipelines).
    pub fn agent_default() -> Self {
        Self {
            secret_namespaces: SecretNamespaces::only([DEFAULT_AGENT_NAMESPACE]),
            ..Self::unrestricted()
        }
    }

    /// No provider restrictions beyond the path policy: the provider's own central
    /// pipeline, a standalone operator's file, an offline check.
    pub fn unrestricted() -> Self {
        Self {
            secret_namespaces: SecretNamespaces::Any,
            reserved_headers: BTreeSet::new(),
            central_endpoints: Vec::new(),
            paths: PathPolicy::agent_default(),
            agent_identity: true,
            node_logs: NodeLogPolicy::unrestricted(),
        }
    }

    /// Also reserves `header` (any case).
    pub fn reserve_header(&mut self, header: &str) {
        self.reserved_headers.insert(header.to_ascii_lowercase());
    }

    /// Whether `url` is one of the central endpoints: the same host (any case, no
    /// trailing dot) and port, whatever the scheme and path.
    pub fn is_central_endpoint(&self, url: &Url) -> bool {
        let key = |url: &Url| {
            url.host_str().map(|host| {
                (
                    host.trim_end_matches('.').to_ascii_lowercase(),
                    url.port_or_known_default(),
                )
            })
        };
        let Some(wanted) = key(url) else {
            return false;
        };
        self.central_endpoints
            .iter()
            .any(|central| key(central).as_ref() == Some(&wanted))
    }
}

/// Everything [`crate::validate`] needs besides the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationContext {
    /// Who wrote the pipeline.
    pub origin: Origin,
    /// What the provider allows.
    pub policy: ProviderPolicy,
}

impl ValidationContext {
    /// A standalone agent's file with no provider restrictions.
    pub fn standalone() -> Self {
        Self {
            origin: Origin::Standalone,
            policy: ProviderPolicy::unrestricted(),
        }
    }

    /// A pipeline distributed by the observer under `policy`.
    pub fn observer(policy: ProviderPolicy) -> Self {
        Self {
            origin: Origin::Observer,
            policy,
        }
    }

    /// A tenant pipeline under the observer's default policy.
    pub fn tenant_default() -> Self {
        Self::observer(ProviderPolicy::tenant_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn central_endpoints_match_by_host_and_port_only() {
        let mut policy = ProviderPolicy::unrestricted();
        policy.central_endpoints =
            vec![Url::parse("https://Receive.Provider.example:19291/api/v1/receive").unwrap()];
        for same in [
            "https://receive.provider.example:19291/other",
            "http://RECEIVE.provider.example.:19291/",
        ] {
            assert!(
                policy.is_central_endpoint(&Url::parse(same).unwrap()),
                "{same}"
            );
        }
        for other in [
            "https://receive.provider.example/api/v1/receive",
            "https://tenant.example:19291/api/v1/receive",
        ] {
            assert!(
                !policy.is_central_endpoint(&Url::parse(other).unwrap()),
                "{other}"
            );
        }
    }

    #[test]
    fn only_the_standalone_origin_reads_files() {
        assert!(Origin::Standalone.may_read_agent_files());
        assert!(!Origin::Observer.may_read_agent_files());
        assert!(!Origin::InCluster.may_read_agent_files());
    }
}
