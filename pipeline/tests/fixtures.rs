//! Every rejected input has a fixture in `testdata/bad/` paired here with the exact
//! messages it must produce; every fixture in `testdata/good/` (and every example in
//! the repository's `examples/`) must be accepted, and together they must cover every
//! input and output kind.
//!
//! Fixtures are validated as tenant pipelines the observer distributes, under the
//! observer's default policy ([`ValidationContext::tenant_default`]), except
//! `standalone-*` (a standalone agent's own file) and `provider-*` (a provider that also
//! reserves its tenant header `X-Provider-Tenant` and names its central receiver, see
//! [`context_for`]).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use kaas_pipeline::document::{Document, ValidatedResource, parse_documents, parse_pipelines};
use kaas_pipeline::input::PushAuthenticationMode;
use kaas_pipeline::output::{OtlpProtocol, RemoteWriteVersion, ValidatedOutput};
use kaas_pipeline::{ProviderPolicy, ValidationContext};

mod support;

/// The context a fixture is validated in, from its name.
fn context_for(name: &str) -> ValidationContext {
    if name.starts_with("standalone-") {
        return ValidationContext::standalone();
    }
    let mut policy = ProviderPolicy::tenant_default();
    if name.starts_with("provider-") {
        policy.reserve_header("X-Provider-Tenant");
        policy.reserve_header("X-Scope-OrgID");
        policy.central_endpoints = vec![
            url::Url::parse("https://receive.provider.example:19291/api/v1/receive")
                .expect("a URL"),
        ];
    }
    ValidationContext::observer(policy)
}

/// Fixture file name → every message it must produce, in order.
const BAD: &[(&str, &[&str])] = &[
    // Unsupported mode (issue 18): raw Prometheus scrape configs.
    (
        "provider-unsupported-static-central-receiver.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].static_configs[0].targets[0]: this is the provider's central receiver, which no tenant pipeline scrapes",
        ],
    ),
    (
        "standalone-unsupported-basic-auth.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].basic_auth: the agent's scraper does not send basic authentication; use authorization with a credentials_file",
        ],
    ),
    (
        "standalone-unsupported-bearer-token-file-and-authorization.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].bearer_token_file: set either bearer_token_file or authorization, not both",
        ],
    ),
    (
        "standalone-unsupported-bearer-token-file-service-account.yaml",
        &[
            r#"spec.input.unsupported.scrapeConfigs[0].bearer_token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token" is under /var/run/secrets, which no pipeline may read: the pod's mounted credentials, such as its service-account token"#,
        ],
    ),
    (
        "standalone-unsupported-file-sd-no-files.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].file_sd_configs[0].files: list at least one file",
        ],
    ),
    (
        "standalone-unsupported-file-sd-pattern.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].file_sd_configs[0].files[0]: the agent reads the files named, not patterns: list each file",
        ],
    ),
    (
        "standalone-unsupported-file-sd-proc.yaml",
        &[
            r#"spec.input.unsupported.scrapeConfigs[0].file_sd_configs[0].files[0]: "/proc/self/environ" is under /proc, which no pipeline may read: process state: environments hold tokens, and /proc/*/root leads around every other rule"#,
        ],
    ),
    (
        "standalone-unsupported-tls-cert-without-key.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].tls_config: a client certificate needs its key: set cert_file and key_file together",
        ],
    ),
    (
        "standalone-unsupported-tls-key-file-agent-identity.yaml",
        &[
            r#"spec.input.unsupported.scrapeConfigs[0].tls_config.key_file: "/var/lib/kaas-agent/identity/tls.key" is under /var/lib/kaas-agent, which no pipeline may read: the agent's data directory: its identity key, last-known-good configuration and buffers"#,
        ],
    ),
    (
        "standalone-unsupported-tls-min-version.yaml",
        &[
            r#"spec.input.unsupported.scrapeConfigs[0].tls_config.min_version: "TLS10": the agent's scraper speaks TLS 1.2 and 1.3; only TLS12 is taken"#,
        ],
    ),
    (
        "unsupported-authorization-type-basic.yaml",
        &[
            r#"spec.input.unsupported.scrapeConfigs[0].authorization.type: "Basic": the agent sends only Bearer credentials; Prometheus' other schemes are not supported"#,
        ],
    ),
    (
        "unsupported-body-size-limit-too-large.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].body_size_limit: 1073741824 bytes is more than the agent reads of any scrape (16777216 bytes); leave it out or set less",
        ],
    ),
    (
        "unsupported-consul-sd.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].consul_sd_configs: the agent does not discover targets with consul_sd_configs; it has static_configs, file_sd_configs and kubernetes_sd_configs (roles pod and endpointslice)",
        ],
    ),
    (
        "unsupported-files-tenant.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].bearer_token_file: the agent reads files for a pipeline only in a standalone agent's own configuration, not in a pipeline the observer distributes",
            "spec.input.unsupported.scrapeConfigs[1].file_sd_configs[0].files[0]: the agent reads files for a pipeline only in a standalone agent's own configuration, not in a pipeline the observer distributes",
        ],
    ),
    (
        "unsupported-follow-redirects-false.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].follow_redirects: the agent's scraper keeps Prometheus' default, true; false is not supported",
        ],
    ),
    (
        "unsupported-inline-credentials.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].bearer_token: an inline credential would be stored and shown with the pipeline; unsupported mode takes credentials from files of a standalone agent only",
            "spec.input.unsupported.scrapeConfigs[1].authorization.credentials: an inline credential would be stored and shown with the pipeline; unsupported mode takes credentials from files of a standalone agent only",
        ],
    ),
    (
        "unsupported-job-name-duplicate.yaml",
        &[
            r#"spec.input.unsupported.scrapeConfigs[1].job_name: job name "node" is taken by scrapeConfigs[0] already; job names are unique, as in Prometheus"#,
        ],
    ),
    (
        "unsupported-job-name-missing.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].job_name: required: the job's name is the default job label of its series",
        ],
    ),
    (
        "unsupported-kubernetes-api-server.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].kubernetes_sd_configs[0].api_server: the agent discovers in its own cluster only, through its own API server access",
        ],
    ),
    (
        "unsupported-kubernetes-attach-metadata.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].kubernetes_sd_configs[0].attach_metadata: not supported: the agent does not attach node metadata to pod targets",
        ],
    ),
    (
        "unsupported-kubernetes-bearer-token-file.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].kubernetes_sd_configs[0].bearer_token_file: the agent reaches its API server with its own client settings; a pipeline sets none",
        ],
    ),
    (
        "unsupported-kubernetes-kubeconfig-file.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].kubernetes_sd_configs[0].kubeconfig_file: the agent never reads a kubeconfig for a pipeline: it discovers with its own credentials in its own cluster",
        ],
    ),
    (
        "unsupported-kubernetes-own-namespace.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].kubernetes_sd_configs[0].namespaces.own_namespace: the agent's own namespace holds its credentials and is not a pipeline's to discover in",
        ],
    ),
    (
        "unsupported-kubernetes-role-node.yaml",
        &[
            r#"spec.input.unsupported.scrapeConfigs[0].kubernetes_sd_configs[0].role: "node": the agent discovers the roles pod and endpointslice; Prometheus' node, service, endpoints and ingress roles are not supported"#,
        ],
    ),
    (
        "unsupported-kubernetes-selectors.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].kubernetes_sd_configs[0].selectors: not supported: keep or drop targets with relabel_configs on their __meta_kubernetes_* labels",
        ],
    ),
    (
        "unsupported-metrics-path-relative.yaml",
        &[
            r#"spec.input.unsupported.scrapeConfigs[0].metrics_path: "metrics" must be an absolute URL path, starting with '/'"#,
        ],
    ),
    (
        "unsupported-no-discovery.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0]: the job discovers no targets: list them with one of static_configs, file_sd_configs and kubernetes_sd_configs (roles pod and endpointslice)",
        ],
    ),
    (
        "unsupported-oauth2.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].oauth2: the agent's scraper does not fetch OAuth 2.0 tokens for targets",
        ],
    ),
    (
        "unsupported-params-two-values.yaml",
        &[
            r#"spec.input.unsupported.scrapeConfigs[0].params["module"]: 2 values; the agent sends each parameter exactly once, so give exactly one"#,
        ],
    ),
    (
        "unsupported-proxy-url.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].proxy_url: pipelines do not choose the agent's way out of the cluster: scrapes go directly to their targets, as every input's do",
        ],
    ),
    (
        "unsupported-relabel-invalid.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].relabel_configs[1].regex: does not compile: unclosed character class",
            "spec.input.unsupported.scrapeConfigs[0].metric_relabel_configs[0].modulus: relabel configuration for hashmod requires non-zero modulus",
            r#"spec.input.unsupported.scrapeConfigs[0].metric_relabel_configs[1].target_label: "0shard" is invalid 'target_label' for replace action"#,
        ],
    ),
    (
        "unsupported-scheme-unknown.yaml",
        &[
            r#"spec.input.unsupported.scrapeConfigs[0].scheme: "ftp" is not a scrape scheme: use http or https"#,
        ],
    ),
    (
        "unsupported-scrape-configs-empty.yaml",
        &[
            "spec.input: no input is enabled: enable at least one of prometheus, runtime, istio, otlp, remoteWrite, or list static targets",
            "spec.input.unsupported.scrapeConfigs: list at least one scrape config, or leave out the unsupported input",
        ],
    ),
    (
        "unsupported-scrape-timeout-longer.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].scrape_timeout: 20s is longer than the job's scrape_interval 10s; a scrape must end before the next one starts",
        ],
    ),
    (
        "unsupported-static-label-invalid.yaml",
        &[
            r#"spec.input.unsupported.scrapeConfigs[0].static_configs[0].labels["app.kubernetes.io/name"]: "app.kubernetes.io/name" is not a valid Prometheus label name: use letters, digits and '_', not starting with a digit"#,
        ],
    ),
    (
        "unsupported-static-over-target-limit.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].static_configs: 2 targets are more than the job's target_limit of 1; with more, Prometheus scrapes none of them",
        ],
    ),
    (
        "unsupported-static-target-credentials.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].static_configs[0].targets[0]: a target with user information (user:password@host) would store and show its credentials with the pipeline; give host:port only",
        ],
    ),
    (
        "unsupported-static-target-with-scheme.yaml",
        &[
            r#"spec.input.unsupported.scrapeConfigs[0].static_configs[0].targets[0]: "http://127.0.0.1:9100" is not a host[:port] target: leave out the scheme; set the job's scheme instead"#,
        ],
    ),
    (
        "unsupported-target-limit-too-large.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].target_limit: 100000 is more than the 1000 targets one job may have; split the job",
        ],
    ),
    (
        "unsupported-tls-config-tenant.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].tls_config: only the provider's own pipelines may scrape with TLS settings of their own; not a pipeline the observer distributes",
        ],
    ),
    (
        "unsupported-too-many-scrape-configs.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs: 65 scrape configs are more than the 64 one pipeline may hold; split them over several pipelines",
        ],
    ),
    (
        "unsupported-unknown-field.yaml",
        &[
            "spec.input.unsupported.scrapeConfigs[0].scrape_protocols: unknown field `scrape_protocols`, expected one of `job_name`, `honor_labels`, `honor_timestamps`, `params`, `scrape_interval`, `scrape_timeout`, `metrics_path`, `scheme`, `body_size_limit`, `sample_limit`, `target_limit`, `label_limit`, `label_name_length_limit`, `label_value_length_limit`, `authorization`, `basic_auth`, `oauth2`, `bearer_token`, `bearer_token_file`, `tls_config`, `proxy_url`, `follow_redirects`, `enable_http2`, `static_configs`, `file_sd_configs`, `kubernetes_sd_configs`, `azure_sd_configs`, `consul_sd_configs`, `digitalocean_sd_configs`, `docker_sd_configs`, `dockerswarm_sd_configs`, `dns_sd_configs`, `ec2_sd_configs`, `eureka_sd_configs`, `gce_sd_configs`, `hetzner_sd_configs`, `http_sd_configs`, `ionos_sd_configs`, `kuma_sd_configs`, `lightsail_sd_configs`, `linode_sd_configs`, `marathon_sd_configs`, `nerve_sd_configs`, `nomad_sd_configs`, `openstack_sd_configs`, `ovhcloud_sd_configs`, `puppetdb_sd_configs`, `scaleway_sd_configs`, `serverset_sd_configs`, `triton_sd_configs`, `uyuni_sd_configs`, `vultr_sd_configs`, `relabel_configs`, `metric_relabel_configs`",
        ],
    ),
    (
        "push-auth-bearer-token-missing.yaml",
        &[
            "spec.input.remoteWrite.authentication.bearerToken: required in bearerToken mode: reference the Secret holding the token pushers send",
        ],
    ),
    (
        "push-auth-bearer-token-inline.yaml",
        &[
            "spec.input.otlp.authentication.bearerToken.value: an inline push token would be stored and shown with the pipeline; put it in a Secret that the pushing workloads mount too and reference it with valueFrom.secretKeyRef",
        ],
    ),
    (
        "push-auth-bearer-token-without-its-mode.yaml",
        &[
            "spec.input.remoteWrite.authentication.bearerToken: only used in bearerToken mode, and mode is unauthenticated",
        ],
    ),
    (
        "push-auth-mode-unknown.yaml",
        &[
            "spec.input.otlp.authentication.mode: unknown variant `anonymous`, expected one of `serviceAccount`, `bearerToken`, `unauthenticated`",
        ],
    ),
    (
        "push-auth-secret-ref-invalid.yaml",
        &[
            r#"spec.input.remoteWrite.authentication.bearerToken.valueFrom.secretKeyRef.name: "Push_Token" is not a valid DNS-1123 subdomain: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"#,
        ],
    ),
    (
        "standalone-auth-value-from-file-relative.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.authentication.bearerToken.valueFrom.file: "secrets/token" is not an absolute path"#,
        ],
    ),
    (
        "auth-value-from-file-and-secret.yaml",
        &[
            "spec.output.prometheusRemoteWrite.authentication.bearerToken.valueFrom: set either secretKeyRef or file, not both",
        ],
    ),
    (
        "auth-value-from-file-observer.yaml",
        &[
            "spec.output.prometheusRemoteWrite.authentication.basic.password.valueFrom.file: reading files on the agent is only allowed in a standalone agent's own configuration, not in a pipeline the observer distributes; put the value in a Secret and use secretKeyRef",
        ],
    ),
    (
        "standalone-file-service-account-token.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.authentication.bearerToken.valueFrom.file: "/var/run/secrets/kubernetes.io/serviceaccount/token" is under /var/run/secrets, which no pipeline may read: the pod's mounted credentials, such as its service-account token"#,
        ],
    ),
    (
        "standalone-file-agent-identity-key.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.tls.key.valueFrom.file: "/var/lib/kaas-agent/identity/tls.key" is under /var/lib/kaas-agent, which no pipeline may read: the agent's data directory: its identity key, last-known-good configuration and buffers"#,
        ],
    ),
    (
        "standalone-file-dot-dot.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.headers[0].valueFrom.file: "/etc/edge/../kubernetes/admin.conf" has '.' or '..' components; write the plain path"#,
        ],
    ),
    (
        "secret-namespace-not-allowed.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.authentication.bearerToken.valueFrom.secretKeyRef.namespace: the agent may not read Secrets in namespace "kube-system": the provider allows only the namespaces listed for the agent's Secret access; use one of: kaas-observer"#,
        ],
    ),
    (
        "rw-header-thanos-tenant.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.headers[0].name: "thanos-tenant" is reserved by the provider: it decides which tenant data belongs to, and only the provider's own pipeline sets it"#,
        ],
    ),
    (
        "provider-header-tenant-header.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.headers[0].name: "X-Provider-Tenant" is reserved by the provider: it decides which tenant data belongs to, and only the provider's own pipeline sets it"#,
        ],
    ),
    (
        "provider-output-central-receiver.yaml",
        &[
            "spec.output.prometheusRemoteWrite.url: this is the provider's central receiver, which only the provider's own pipeline writes to; send to your own backend",
        ],
    ),
    (
        "relabel-runtime-address-rewrite.yaml",
        &[
            "spec.processors.relabelConfigs[0].targetLabel: could set __address__: the runtime input's targets carry the agent's credentials, which go only to the address, scheme and path discovery found; relabel in a pipeline without the runtime input",
            "spec.processors.relabelConfigs[1].targetLabel: could set __scheme__: the runtime input's targets carry the agent's credentials, which go only to the address, scheme and path discovery found; relabel in a pipeline without the runtime input",
        ],
    ),
    (
        "relabel-runtime-templated-target.yaml",
        &[
            "spec.processors.relabelConfigs[0].targetLabel: could set __address__ or __scheme__ or __metrics_path__: the runtime input's targets carry the agent's credentials, which go only to the address, scheme and path discovery found; relabel in a pipeline without the runtime input (a captured part that cannot start with '_', such as ([a-zA-Z0-9].*), cannot form it)",
            "spec.processors.relabelConfigs[1].replacement: could set __address__ or __scheme__ or __metrics_path__: the runtime input's targets carry the agent's credentials, which go only to the address, scheme and path discovery found; relabel in a pipeline without the runtime input (a captured part that cannot start with '_', such as ([a-zA-Z0-9].*), cannot form it)",
        ],
    ),
    (
        "relabel-runtime-labeldrop-sealed.yaml",
        &[
            "spec.processors.relabelConfigs[0].regex: could remove __metrics_path__: the runtime input's targets carry the agent's credentials, which go only to the address, scheme and path discovery found; relabel in a pipeline without the runtime input",
            "spec.processors.relabelConfigs[1].regex: could remove __scheme__: the runtime input's targets carry the agent's credentials, which go only to the address, scheme and path discovery found; relabel in a pipeline without the runtime input",
        ],
    ),
    (
        "api-version-missing.yaml",
        &["apiVersion: required; set it to telemetry.kaas-observer.io/v1alpha1"],
    ),
    (
        "api-version-wrong.yaml",
        &[r#"apiVersion: "v1" is not telemetry.kaas-observer.io/v1alpha1"#],
    ),
    (
        "auth-basic-password-missing.yaml",
        &[
            "spec.output.prometheusRemoteWrite.authentication.basic.password: set value or valueFrom",
        ],
    ),
    (
        "auth-empty.yaml",
        &[
            "spec.output.prometheusRemoteWrite.authentication: set one of basic, bearerToken or oauth2",
        ],
    ),
    (
        "auth-oauth2-token-url-invalid.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.authentication.oauth2.tokenUrl: not an absolute http(s) URL: "/oauth/token""#,
            r#"spec.output.prometheusRemoteWrite.authentication.oauth2.scopes[0]: "metrics write" is not a scope: scopes are non-empty and have no spaces"#,
        ],
    ),
    (
        "auth-secret-ref-invalid.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.authentication.bearerToken.valueFrom.secretKeyRef.name: "Backend_Creds" is not a valid DNS-1123 subdomain: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"#,
            "spec.output.prometheusRemoteWrite.authentication.bearerToken.valueFrom.secretKeyRef.namespace: must not be empty",
            r#"spec.output.prometheusRemoteWrite.authentication.bearerToken.valueFrom.secretKeyRef.key: "token/v1" is not a valid Secret key: use letters, digits, '-', '_' and '.'"#,
        ],
    ),
    (
        "auth-two-methods.yaml",
        &[
            "spec.output.prometheusRemoteWrite.authentication: set only one of basic, bearerToken or oauth2; found basic and bearerToken",
        ],
    ),
    (
        "auth-value-from-empty.yaml",
        &[
            "spec.output.prometheusRemoteWrite.authentication.bearerToken.valueFrom: set secretKeyRef or file",
        ],
    ),
    (
        "buffer-max-age-too-short.yaml",
        &[
            "spec.buffer.maxAge: 30s is below the minimum of 1m; shorter would drop data during an ordinary backend restart",
        ],
    ),
    (
        "buffer-max-bytes-invalid.yaml",
        &[
            r#"spec.buffer.maxBytes: "1GB" is not a byte size: use an integer, optionally with a suffix Ki, Mi, Gi, Ti (or k, M, G, T), e.g. "512Mi""#,
        ],
    ),
    (
        "buffer-max-bytes-too-small.yaml",
        &["spec.buffer.maxBytes: 65536 bytes is below the minimum of 1Mi (1048576 bytes)"],
    ),
    (
        "buffer-when-full-unknown.yaml",
        &["spec.buffer.whenFull: unknown variant `block`, expected `dropOldest` or `dropNewest`"],
    ),
    (
        "input-namespace-duplicate.yaml",
        &[r#"spec.input.remoteWrite.namespaces.include[1]: namespace "shop" is listed twice"#],
    ),
    (
        "input-namespace-invalid.yaml",
        &[
            r#"spec.input.otlp.namespaces.exclude[0]: not a namespace name: "Shop_1" is not a valid DNS-1123 label: use lower-case letters, digits and '-', starting and ending with a letter or digit"#,
        ],
    ),
    (
        "input-namespaces-include-and-exclude.yaml",
        &[
            "spec.input.prometheus.namespaces: set include or exclude, not both: include already leaves out every namespace it does not list",
        ],
    ),
    (
        "input-namespaces-system-with-include.yaml",
        &[
            "spec.input.istio.namespaces.system: has no effect together with include; list the system namespaces you want in include",
        ],
    ),
    (
        "input-none-enabled.yaml",
        &[
            "spec.input: no input is enabled: enable at least one of prometheus, runtime, istio, otlp, remoteWrite, or list static targets",
        ],
    ),
    (
        "input-runtime-all-resources-off.yaml",
        &[
            "spec.input.runtime.resources: every runtime resource is switched off; enable one or disable the runtime input",
        ],
    ),
    (
        "input-scrape-interval-invalid.yaml",
        &[
            r#"spec.input.scrapeInterval: "30" is not a duration: use a number and a unit (ms, s, m, h, d, w, y), e.g. "30s" or "1h30m""#,
        ],
    ),
    (
        "input-scrape-interval-zero.yaml",
        &["spec.input.scrapeInterval: must be longer than 0s"],
    ),
    (
        "input-scrape-timeout-longer-than-interval.yaml",
        &[
            "spec.input.scrapeTimeout: 20s is longer than the scrape interval 15s; a scrape must end before the next one starts",
        ],
    ),
    (
        "input-static-address-duplicate.yaml",
        &[
            r#"spec.input.static.targets[1].addresses[0]: target "nginx:8080" is listed twice; it would be scraped twice"#,
        ],
    ),
    (
        "input-static-address-with-scheme.yaml",
        &[
            r#"spec.input.static.targets[0].addresses[0]: "http://nginx:8080" is not a host:port address: leave out the scheme; set scheme on the target group instead"#,
        ],
    ),
    (
        "input-static-address-without-port.yaml",
        &[
            r#"spec.input.static.targets[0].addresses[0]: "nginx" is not a host:port address: the port is missing"#,
        ],
    ),
    (
        "input-static-label-invalid.yaml",
        &[
            r#"spec.input.static.targets[0].labels["app.kubernetes.io/name"]: "app.kubernetes.io/name" is not a valid Prometheus label name: use letters, digits and '_', not starting with a digit"#,
        ],
    ),
    (
        "input-static-metrics-path-relative.yaml",
        &[r#"spec.input.static.targets[0].metricsPath: "metrics" must start with '/'"#],
    ),
    (
        "input-static-credentials-tenant.yaml",
        &[
            "spec.input.static.targets[0].serviceAccountCredentials: only the provider's own pipelines may scrape with the agent's token; not a pipeline the observer distributes",
        ],
    ),
    (
        "input-static-tls-tenant.yaml",
        &[
            "spec.input.static.targets[0].tls: only the provider's own pipelines may scrape with TLS settings of their own; not a pipeline the observer distributes",
        ],
    ),
    (
        "standalone-input-static-tls-misused.yaml",
        &[
            "spec.input.static.targets[0].tls: needs scheme: https",
            "spec.input.static.targets[0].tls.agentIdentity: a scrape never presents the agent's cluster certificate",
            "spec.input.static.targets[1].tls.key: a client certificate needs its private key: set key too",
        ],
    ),
    (
        "standalone-input-static-credentials-without-https.yaml",
        &[
            "spec.input.static.targets[0].serviceAccountCredentials: needs scheme: https; the agent's token is never sent in clear text",
        ],
    ),
    (
        "input-static-no-addresses.yaml",
        &["spec.input.static.targets[0].addresses: list at least one host:port"],
    ),
    (
        "input-static-scheme-unknown.yaml",
        &["spec.input.static.targets[0].scheme: unknown variant `ftp`, expected `http` or `https`"],
    ),
    (
        "kind-wrong.yaml",
        &[r#"kind: "ProfilePipeline" is not MetricPipeline or LogPipeline or TracePipeline"#],
    ),
    (
        "many-errors-at-once.yaml",
        &[
            r#"metadata.name: "Many-Errors" is not a valid DNS-1123 label: use lower-case letters, digits and '-', starting and ending with a letter or digit"#,
            r#"spec.input.scrapeInterval: "1x" is not a duration: use a number and a unit (ms, s, m, h, d, w, y), e.g. "30s" or "1h30m""#,
            "spec.processors.relabelConfigs[0].modulus: relabel configuration for hashmod requires non-zero modulus",
            r#"spec.output.prometheusRemoteWrite.url: not an absolute http(s) URL: "not a url""#,
            "spec.buffer.maxAge: 10s is below the minimum of 1m; shorter would drop data during an ordinary backend restart",
        ],
    ),
    (
        "metadata-label-invalid.yaml",
        &[
            r#"metadata.labels["team/"]: "team/" is not a valid label key: the name part must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"#,
        ],
    ),
    (
        "metadata-name-invalid.yaml",
        &[
            r#"metadata.name: "Team_A" is not a valid DNS-1123 label: use lower-case letters, digits and '-', starting and ending with a letter or digit"#,
        ],
    ),
    ("metadata-name-missing.yaml", &["metadata.name: required"]),
    (
        "metadata-name-too-long.yaml",
        &[
            r#"metadata.name: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" is longer than 63 characters"#,
        ],
    ),
    (
        "metric-filter-empty-pattern.yaml",
        &["spec.processors.metrics.keep[0]: must not be empty; it would match no metric"],
    ),
    (
        "metric-filter-regex-invalid.yaml",
        &["spec.processors.metrics.drop[0]: does not compile: unclosed group"],
    ),
    (
        "not-an-object.yaml",
        &["expected a MetricPipeline or LogPipeline or TracePipeline object"],
    ),
    (
        "otlp-endpoint-missing.yaml",
        &["spec.output.otlp.endpoint: required: an absolute http(s) URL"],
    ),
    (
        "otlp-grpc-endpoint-with-path.yaml",
        &[
            r#"spec.output.otlp.endpoint: an OTLP/gRPC endpoint has no path, found "/v1/metrics"; use scheme://host:port, or set protocol: http"#,
        ],
    ),
    (
        "otlp-protocol-unknown.yaml",
        &["spec.output.otlp.protocol: unknown variant `thrift`, expected `grpc` or `http`"],
    ),
    (
        "output-both.yaml",
        &[
            "spec.output: set exactly one of prometheusRemoteWrite or otlp; a pipeline has one output, create a second pipeline for a second backend",
        ],
    ),
    (
        "output-missing.yaml",
        &["spec.output: set exactly one of prometheusRemoteWrite or otlp"],
    ),
    (
        "relabel-action-empty.yaml",
        &["spec.processors.relabelConfigs[0].action: relabel action cannot be empty"],
    ),
    (
        "relabel-action-unknown.yaml",
        &[
            r#"spec.processors.relabelConfigs[0].action: unknown relabel action "delete"; use one of replace, keep, drop, keepequal, dropequal, hashmod, labelmap, labeldrop, labelkeep, lowercase, uppercase"#,
        ],
    ),
    (
        "relabel-hashmod-templated-target.yaml",
        &[
            r#"spec.processors.relabelConfigs[0].targetLabel: "${1}" is invalid 'target_label' for hashmod action"#,
        ],
    ),
    (
        "relabel-hashmod-without-modulus.yaml",
        &[
            "spec.processors.relabelConfigs[0].modulus: relabel configuration for hashmod requires non-zero modulus",
        ],
    ),
    (
        "relabel-keepequal-with-regex.yaml",
        &[
            "spec.processors.relabelConfigs[0]: keepequal action requires only 'source_labels' and `target_label`, and no other fields",
        ],
    ),
    (
        "relabel-labeldrop-with-source-labels.yaml",
        &[
            "spec.processors.metricRelabelConfigs[0]: labeldrop action requires only 'regex', and no other fields",
        ],
    ),
    (
        "relabel-labelmap-replacement-invalid.yaml",
        &[
            r#"spec.processors.relabelConfigs[0].replacement: "label-$1" is invalid 'replacement' for labelmap action"#,
        ],
    ),
    (
        "relabel-lowercase-with-replacement.yaml",
        &[
            "spec.processors.relabelConfigs[0].replacement: 'replacement' can not be set for lowercase action",
        ],
    ),
    (
        "relabel-regex-invalid.yaml",
        &["spec.processors.metricRelabelConfigs[0].regex: does not compile: unclosed group"],
    ),
    (
        "relabel-replace-target-invalid.yaml",
        &[
            r#"spec.processors.relabelConfigs[0].targetLabel: "pod-name" is invalid 'target_label' for replace action"#,
        ],
    ),
    (
        "relabel-replace-without-target.yaml",
        &[
            "spec.processors.relabelConfigs[0].targetLabel: relabel configuration for replace action requires 'target_label' value",
        ],
    ),
    (
        "relabel-source-label-invalid.yaml",
        &[
            r#"spec.processors.relabelConfigs[0].sourceLabels[0]: "app.kubernetes.io/name" is not a valid Prometheus label name: use letters, digits and '_', not starting with a digit"#,
        ],
    ),
    (
        "relabel-unknown-field.yaml",
        &[
            "spec.processors.relabelConfigs[0].sourceLabel: unknown field `sourceLabel`, expected one of `sourceLabels`, `source_labels`, `separator`, `regex`, `modulus`, `targetLabel`, `target_label`, `replacement`, `action`",
        ],
    ),
    (
        "rw-authorization-header-with-authentication.yaml",
        &[
            "spec.output.prometheusRemoteWrite.headers[0].name: an Authorization header conflicts with authentication; use one of them",
        ],
    ),
    (
        "rw-header-duplicate.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.headers[1].name: header "x-scope-orgid" is already set by headers[0]"#,
        ],
    ),
    (
        "rw-header-name-invalid.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.headers[0].name: "X Tenant" is not a valid HTTP header name: use letters, digits and !#$%&'*+-.^_`|~"#,
        ],
    ),
    (
        "rw-header-reserved.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.headers[0].name: "Content-Encoding" is a reserved header set by the agent; it must not be changed"#,
        ],
    ),
    (
        "rw-header-value-and-value-from.yaml",
        &["spec.output.prometheusRemoteWrite.headers[0]: set either value or valueFrom, not both"],
    ),
    (
        "rw-header-value-with-newline.yaml",
        &[
            "spec.output.prometheusRemoteWrite.headers[0].value: contains a control character (such as a line break), which HTTP headers cannot carry",
        ],
    ),
    (
        "rw-header-without-value.yaml",
        &["spec.output.prometheusRemoteWrite.headers[0]: set value or valueFrom"],
    ),
    (
        "rw-protocol-version-unknown.yaml",
        &[
            "spec.output.prometheusRemoteWrite.protocolVersion: unknown variant `3.0`, expected `1.0` or `2.0`",
        ],
    ),
    (
        "rw-timeout-invalid.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.timeout: "30 seconds" is not a duration: use a number and a unit (ms, s, m, h, d, w, y), e.g. "30s" or "1h30m""#,
        ],
    ),
    (
        "rw-url-missing.yaml",
        &["spec.output.prometheusRemoteWrite.url: required: an absolute http(s) URL"],
    ),
    (
        "rw-url-not-absolute.yaml",
        &[r#"spec.output.prometheusRemoteWrite.url: not an absolute http(s) URL: "not a url""#],
    ),
    (
        "rw-url-unsupported-scheme.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.url: not an absolute http(s) URL: "ftp://receiver.example/write""#,
        ],
    ),
    (
        "rw-url-with-credentials.yaml",
        &[
            "spec.output.prometheusRemoteWrite.url: credentials in the URL would be stored and shown in clear; use authentication.basic with a Secret instead",
        ],
    ),
    (
        "selector-exists-with-values.yaml",
        &["spec.clusterSelector.matchExpressions[0].values: operator Exists takes no values"],
    ),
    (
        "selector-in-without-values.yaml",
        &["spec.clusterSelector.matchExpressions[0].values: operator In needs at least one value"],
    ),
    (
        "selector-label-invalid.yaml",
        &[
            r#"spec.clusterSelector.matchLabels["example.com/env/x"]: "example.com/env/x" is not a valid label key: the name part must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"#,
            r#"spec.clusterSelector.matchLabels["tier"]: "-gold" is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"#,
        ],
    ),
    (
        "selector-operator-unknown.yaml",
        &[
            r#"spec.clusterSelector.matchExpressions[0].operator: unknown operator "Equals"; use In, NotIn, Exists or DoesNotExist"#,
        ],
    ),
    (
        "tls-ca-not-pem.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.tls.ca.value: not a PEM certificate: expected one or more "-----BEGIN CERTIFICATE-----" blocks"#,
        ],
    ),
    (
        "tls-agent-identity-in-tenant-pipeline.yaml",
        &[
            "spec.output.prometheusRemoteWrite.tls.agentIdentity: only the provider's own pipelines may present the agent's cluster certificate",
        ],
    ),
    (
        "tls-cert-without-key.yaml",
        &[
            "spec.output.prometheusRemoteWrite.tls.key: a client certificate needs its private key: set key too",
        ],
    ),
    (
        "tls-key-not-pem.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.tls.key.value: not a PEM private key: expected a "-----BEGIN PRIVATE KEY-----" (PKCS#8), RSA or EC private key block"#,
        ],
    ),
    (
        "tls-on-plain-http.yaml",
        &[
            "spec.output.prometheusRemoteWrite.tls: TLS settings need an https URL; the URL uses plain http",
        ],
    ),
    (
        "tls-server-name-invalid.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.tls.serverName: "receiver example" is not a DNS name or IP address"#,
        ],
    ),
    (
        "unknown-spec-field.yaml",
        &[
            "spec.outputs: unknown field `outputs`, expected one of `input`, `processors`, `output`, `buffer`, `clusterSelector`",
        ],
    ),
    (
        "unknown-top-level-field.yaml",
        &["specs: unknown field; a MetricPipeline has apiVersion, kind, metadata, spec, status"],
    ),
    (
        "wrong-type.yaml",
        &["spec.input.scrapeInterval: invalid type: sequence, expected a string"],
    ),
    (
        "yaml-syntax-error.yaml",
        &[
            "not valid YAML or JSON: did not find expected ',' or '}' at line 7 column 1, while parsing a flow mapping at line 6 column 10",
        ],
    ),
    (
        "log-attribute-action-missing.yaml",
        &["spec.processors.attributes[0].action: required: set, rename or delete"],
    ),
    (
        "log-attribute-delete-with-value.yaml",
        &["spec.processors.attributes[0].value: only used by set"],
    ),
    (
        "log-attribute-key-missing.yaml",
        &[
            "spec.processors.attributes[0].key: required: an attribute key such as k8s.namespace.name",
        ],
    ),
    (
        "log-attribute-rename-to-itself.yaml",
        &[r#"spec.processors.attributes[0].to: renames "msg" to itself; remove the rule"#],
    ),
    (
        "log-attribute-rename-without-to.yaml",
        &["spec.processors.attributes[0].to: required by rename: the new key"],
    ),
    (
        "log-attribute-set-with-to.yaml",
        &["spec.processors.attributes[0].to: only used by rename"],
    ),
    (
        "log-attribute-set-without-value.yaml",
        &["spec.processors.attributes[0].value: required by set: the value to write"],
    ),
    (
        "log-filter-action-missing.yaml",
        &["spec.processors.filters[0].action: required: keep or drop"],
    ),
    (
        "log-filter-attribute-invalid.yaml",
        &[
            r#"spec.processors.filters[0].attribute: "k8s namespace" is not an attribute key: at most 256 bytes without spaces or control characters"#,
        ],
    ),
    (
        "log-filter-regex-invalid.yaml",
        &["spec.processors.filters[0].regex: does not compile: unclosed group"],
    ),
    (
        "log-filter-regex-missing.yaml",
        &[
            "spec.processors.filters[0].regex: required: a regular expression the attribute or body is matched with",
        ],
    ),
    (
        "log-http-format-unknown.yaml",
        &[
            "spec.output.http.format: unknown variant `gelf`, expected `jsonLines` or `elasticsearchBulk`",
        ],
    ),
    (
        "log-http-index-invalid.yaml",
        &[
            r#"spec.output.http.index: "Logs-%Y" is not an index name: lower case, at most 255 bytes (with %N as a namespace of 63), none of \ / * ? " < > | , # : or spaces, not starting with -, _ or +"#,
        ],
    ),
    (
        "log-http-index-unknown-specifier.yaml",
        &[
            r#"spec.output.http.index: "logs-%Y.%j" has the unknown specifier %j; use %Y, %m, %d or %H for the date, %N for the namespace"#,
        ],
    ),
    (
        "log-http-index-with-json-lines.yaml",
        &["spec.output.http.index: only used with format elasticsearchBulk"],
    ),
    (
        "log-input-none-enabled.yaml",
        &["spec.input: no input is enabled: enable at least one of runtime, node or otlp"],
    ),
    (
        "log-loki-label-high-cardinality.yaml",
        &[
            r#"spec.output.loki.labels[1]: "k8s.pod.uid" has a new value for almost every record, and every value would make a new Loki stream; it is sent as structured metadata instead"#,
            r#"spec.output.loki.labels[2]: "trace_id" has a new value for almost every record, and every value would make a new Loki stream; it is sent as structured metadata instead"#,
        ],
    ),
    (
        "log-loki-label-not-allowed.yaml",
        &[
            r#"spec.output.loki.labels[1]: "user.id" is not an attribute allowed as a stream label; use one of k8s.cluster.name, k8s.namespace.name, k8s.node.name, k8s.pod.name, k8s.container.name, k8s.deployment.name, k8s.statefulset.name, k8s.daemonset.name, k8s.cronjob.name, service.name, service.namespace, log.iostream, severity_text"#,
        ],
    ),
    (
        "log-loki-tenant-header.yaml",
        &["spec.output.loki.headers[0].name: set the tenant with tenantId, not as a header"],
    ),
    (
        "log-loki-tenant-id-invalid.yaml",
        &[
            r#"spec.output.loki.tenantId: "team/shop" is not a Loki tenant ID: 1 to 150 letters, digits and !-_.*'(), not "." or "..""#,
        ],
    ),
    (
        "log-loki-too-many-labels.yaml",
        &[
            "spec.output.loki.labels: 16 labels, but Loki accepts at most 15 per stream; send the others as structured metadata (leave them out here)",
            r#"spec.output.loki.labels[13]: label "k8s.namespace.name" is listed twice"#,
            r#"spec.output.loki.labels[14]: label "k8s.pod.name" is listed twice"#,
            r#"spec.output.loki.labels[15]: label "k8s.node.name" is listed twice"#,
        ],
    ),
    (
        "log-max-record-size-above-buffer.yaml",
        &[
            "spec.processors.maxRecordSize: 2097152 bytes is more than the whole buffer holds (1048576 bytes); raise spec.buffer.maxBytes or lower the record size",
        ],
    ),
    (
        "log-max-record-size-too-large.yaml",
        &[
            "spec.processors.maxRecordSize: 16777216 bytes is above the maximum of 4Mi (4194304 bytes), the largest record one OTLP/gRPC export carries",
        ],
    ),
    (
        "log-max-record-size-too-small.yaml",
        &[
            "spec.processors.maxRecordSize: 512 bytes is below the minimum of 1Ki (1024 bytes): ordinary lines would be cut",
        ],
    ),
    (
        "log-node-file-dot-dot.yaml",
        &[
            r#"spec.input.node.files.paths[0]: "/var/log/../lib/kaas-agent/*.json" has '.' or '..' components; write the plain path"#,
        ],
    ),
    (
        "log-node-file-glob-unclosed.yaml",
        &[
            r#"spec.input.node.files.paths[0]: "/var/log/app-[12.log": a '[' opens a character class that is empty or never closed with ']'"#,
        ],
    ),
    (
        "log-node-file-outside-roots.yaml",
        &[
            r#"spec.input.node.files.paths[0]: "/etc/nginx/*.log" is outside the directories files may be read from (/var/log)"#,
        ],
    ),
    (
        "log-node-file-relative.yaml",
        &[r#"spec.input.node.files.paths[0]: "nginx/*.log" is not an absolute path"#],
    ),
    (
        "log-node-journal-tenant.yaml",
        &[
            "spec.input.node.journal: only the provider's own pipelines may read the node's journal, which can hold node secrets; not a pipeline the observer distributes (the provider has not allowed tenants to)",
        ],
    ),
    (
        "log-node-reads-nothing.yaml",
        &["spec.input.node: enabled but reads nothing: list journal units or file paths"],
    ),
    (
        "log-otlp-secret-namespace-not-allowed.yaml",
        &[
            r#"spec.output.otlp.authentication.bearerToken.valueFrom.secretKeyRef.namespace: the agent may not read Secrets in namespace "shop": the provider allows only the namespaces listed for the agent's Secret access; use one of: kaas-observer"#,
        ],
    ),
    (
        "log-output-missing.yaml",
        &["spec.output: set exactly one of otlp, loki or http"],
    ),
    (
        "log-output-two.yaml",
        &[
            "spec.output: set exactly one of otlp, loki or http; a pipeline has one output, create a second pipeline for a second backend",
        ],
    ),
    (
        "log-rate-limit-burst-below-rate.yaml",
        &[
            "spec.processors.rateLimit.perNamespace.burst: 10 is below recordsPerSecond (100): a second's worth of records could never pass at once",
        ],
    ),
    (
        "log-rate-limit-namespace-above-pipeline.yaml",
        &[
            "spec.processors.rateLimit.perNamespace.recordsPerSecond: 5000 is above the pipeline's limit of 1000, so it would never apply",
        ],
    ),
    (
        "log-rate-limit-zero.yaml",
        &[
            "spec.processors.rateLimit.perPipeline.recordsPerSecond: must be at least 1; remove the limit to have none",
        ],
    ),
    (
        "log-runtime-container-duplicate.yaml",
        &[r#"spec.input.runtime.containers.include[1]: container "app" is listed twice"#],
    ),
    (
        "log-runtime-container-name-invalid.yaml",
        &[
            r#"spec.input.runtime.containers.exclude[0]: not a container name: "Istio_Proxy" is not a valid DNS-1123 label: use lower-case letters, digits and '-', starting and ending with a letter or digit"#,
        ],
    ),
    (
        "log-runtime-containers-include-and-exclude.yaml",
        &[
            "spec.input.runtime.containers: set include or exclude, not both: include already leaves out every container it does not list",
        ],
    ),
    (
        "log-runtime-multiline-flush-timeout-too-long.yaml",
        &[
            "spec.input.runtime.multiline.flushTimeout: 5m is longer than the maximum of 1m: every lone line would wait that long before it is sent",
        ],
    ),
    (
        "log-runtime-multiline-flush-timeout-zero.yaml",
        &["spec.input.runtime.multiline.flushTimeout: must be longer than 0s"],
    ),
    (
        "log-runtime-multiline-pattern-invalid.yaml",
        &["spec.input.runtime.multiline.firstLinePattern: does not compile: unclosed group"],
    ),
    (
        "log-runtime-multiline-pattern-missing.yaml",
        &[
            "spec.input.runtime.multiline.firstLinePattern: required: a regular expression matching the first line of a record",
        ],
    ),
    (
        "log-runtime-namespaces-include-and-exclude.yaml",
        &[
            "spec.input.runtime.namespaces: set include or exclude, not both: include already leaves out every namespace it does not list",
        ],
    ),
    (
        "log-runtime-pod-selector-invalid.yaml",
        &[
            "spec.input.runtime.podSelector.matchExpressions[0].values: operator Exists takes no values",
        ],
    ),
    (
        "log-runtime-start-at-unknown.yaml",
        &["spec.input.runtime.startAt: unknown variant `middle`, expected `end` or `beginning`"],
    ),
    (
        "log-unknown-spec-field.yaml",
        &[
            "spec.outputs: unknown field `outputs`, expected one of `input`, `processors`, `output`, `buffer`, `clusterSelector`",
        ],
    ),
    (
        "provider-log-loki-central-receiver.yaml",
        &[
            "spec.output.loki.url: this is the provider's central receiver, which only the provider's own pipeline writes to; send to your own backend",
        ],
    ),
    (
        "provider-log-loki-tenant-id-reserved.yaml",
        &[
            "spec.output.loki.tenantId: the provider reserves X-Scope-OrgID: it decides which tenant logs belong to, and only the provider's own pipeline sets it",
        ],
    ),
    (
        "standalone-log-node-file-agent-data-dir.yaml",
        &[
            r#"spec.input.node.files.paths[0]: "/var/lib/kaas-agent/*.json" is under /var/lib/kaas-agent, which no pipeline may read: the agent's data directory: its identity key, last-known-good configuration and buffers"#,
        ],
    ),
    (
        "standalone-log-node-file-reaches-credentials.yaml",
        &[
            r#"spec.input.node.files.paths[0]: "/var/*/secrets/**/token" could match files under /var/run/secrets, which no pipeline may read (the pod's mounted credentials, such as its service-account token); start the pattern below it"#,
        ],
    ),
    (
        "standalone-log-node-journal-no-units.yaml",
        &["spec.input.node.journal.units: list at least one unit, such as kubelet.service"],
    ),
    (
        "standalone-log-node-journal-unit-duplicate.yaml",
        &[r#"spec.input.node.journal.units[1]: unit "kubelet.service" is listed twice"#],
    ),
    (
        "standalone-log-node-journal-unit-invalid.yaml",
        &[
            r#"spec.input.node.journal.units[0]: "kubelet" is not a systemd unit name such as kubelet.service (letters, digits and :-_.\@, ending in .service, .scope, .socket, .mount, .slice)"#,
        ],
    ),
    (
        "standalone-log-node-journal-unit-not-allowed.yaml",
        &[
            r#"spec.input.node.journal.units[0]: the provider does not allow pipelines to read unit "sshd.service"; allowed: containerd.service, crio.service, kubelet.service"#,
        ],
    ),
    (
        "provider-trace-output-central-receiver.yaml",
        &[
            r#"spec.output.otlp.endpoint: this is the provider's central receiver, which only the provider's own pipeline writes to; send to your own backend"#,
        ],
    ),
    (
        "provider-trace-output-tenant-header.yaml",
        &[
            r#"spec.output.otlp.headers[0].name: "X-Scope-OrgID" is reserved by the provider: it decides which tenant data belongs to, and only the provider's own pipeline sets it"#,
        ],
    ),
    (
        "trace-attribute-action-missing.yaml",
        &[r#"spec.processors.attributes[0].action: required: set, delete or hash"#],
    ),
    (
        "trace-attribute-action-unknown.yaml",
        &[
            r#"spec.processors.attributes[0].action: unknown variant `rename`, expected one of `set`, `delete`, `hash`"#,
        ],
    ),
    (
        "trace-attribute-hash-with-value.yaml",
        &[
            r#"spec.processors.attributes[0].value: only used by set; delete and hash take no value"#,
        ],
    ),
    (
        "trace-attribute-key-missing.yaml",
        &[
            r#"spec.processors.attributes[0].key: required: an attribute key such as k8s.namespace.name"#,
        ],
    ),
    (
        "trace-attribute-key-twice.yaml",
        &[
            r#"spec.processors.attributes[1].key: "enduser.id" is already changed by attributes[0]; one rule per key, since a later rule would undo or see through the earlier one"#,
        ],
    ),
    (
        "trace-attribute-set-without-value.yaml",
        &[r#"spec.processors.attributes[0].value: required by set: the value to write"#],
    ),
    (
        "trace-attributes-too-many.yaml",
        &[
            r#"spec.processors.attributes: 65 rules, more than the 64 allowed: every span is checked against each of them"#,
        ],
    ),
    (
        "trace-buffer-max-bytes-too-small.yaml",
        &[r#"spec.buffer.maxBytes: 65536 bytes is below the minimum of 1Mi (1048576 bytes)"#],
    ),
    (
        "trace-buffer-when-full-unknown.yaml",
        &[
            r#"spec.buffer.whenFull: unknown variant `block`, expected `dropOldest` or `dropNewest`"#,
        ],
    ),
    (
        "trace-drop-spans-attribute-invalid.yaml",
        &[
            r#"spec.processors.dropSpans[0].attribute: "http route" is not an attribute key: at most 256 bytes without spaces or control characters"#,
        ],
    ),
    (
        "trace-drop-spans-exact-and-regex.yaml",
        &[r#"spec.processors.dropSpans[0]: set either exact or regex, not both"#],
    ),
    (
        "trace-drop-spans-neither-exact-nor-regex.yaml",
        &[
            r#"spec.processors.dropSpans[0]: set exact or regex: the span name (or the attribute's value) to drop"#,
        ],
    ),
    (
        "trace-drop-spans-regex-empty.yaml",
        &[
            r#"spec.processors.dropSpans[0].regex: must not be empty: it would match every span; use exact for a value"#,
        ],
    ),
    (
        "trace-drop-spans-regex-invalid.yaml",
        &[r#"spec.processors.dropSpans[0].regex: does not compile: unclosed group"#],
    ),
    (
        "trace-drop-spans-too-many.yaml",
        &[
            r#"spec.processors.dropSpans: 65 rules, more than the 64 allowed: every span is checked against each of them"#,
        ],
    ),
    (
        "trace-hash-key-file-observer.yaml",
        &[
            r#"spec.processors.hashKey.valueFrom.file: reading files on the agent is only allowed in a standalone agent's own configuration, not in a pipeline the observer distributes; put the value in a Secret and use secretKeyRef"#,
        ],
    ),
    (
        "trace-hash-key-inline.yaml",
        &[
            r#"spec.processors.hashKey.value: an inline hash key would be stored and shown with the pipeline, and anyone reading it could undo the hashes; put it in a Secret and reference it with valueFrom.secretKeyRef"#,
        ],
    ),
    (
        "trace-hash-key-missing.yaml",
        &[
            r#"spec.processors.hashKey: required by hash rules: reference the Secret holding the key (at least 32 bytes) with valueFrom.secretKeyRef"#,
        ],
    ),
    (
        "trace-hash-key-secret-namespace-not-allowed.yaml",
        &[
            r#"spec.processors.hashKey.valueFrom.secretKeyRef.namespace: the agent may not read Secrets in namespace "shop": the provider allows only the namespaces listed for the agent's Secret access; use one of: kaas-observer"#,
        ],
    ),
    (
        "trace-hash-key-without-hash-rule.yaml",
        &[
            r#"spec.processors.hashKey: only used by hash rules, and no rule hashes; remove it or add a hash rule"#,
        ],
    ),
    (
        "trace-input-bearer-token-inline.yaml",
        &[
            r#"spec.input.authentication.bearerToken.value: an inline push token would be stored and shown with the pipeline; put it in a Secret that the pushing workloads mount too and reference it with valueFrom.secretKeyRef"#,
        ],
    ),
    (
        "trace-input-bearer-token-missing.yaml",
        &[
            r#"spec.input.authentication.bearerToken: required in bearerToken mode: reference the Secret holding the token pushers send"#,
        ],
    ),
    (
        "trace-input-namespace-invalid.yaml",
        &[
            r#"spec.input.namespaces.exclude[0]: not a namespace name: "Shop_1" is not a valid DNS-1123 label: use lower-case letters, digits and '-', starting and ending with a letter or digit"#,
        ],
    ),
    (
        "trace-input-namespaces-include-and-exclude.yaml",
        &[
            r#"spec.input.namespaces: set include or exclude, not both: include already leaves out every namespace it does not list"#,
        ],
    ),
    (
        "trace-input-namespaces-system-with-include.yaml",
        &[
            r#"spec.input.namespaces.system: has no effect together with include; list the system namespaces you want in include"#,
        ],
    ),
    (
        "trace-input-none-enabled.yaml",
        &[
            r#"spec.input: no input is enabled: OTLP is switched off and Zipkin was not switched on; enable at least one"#,
        ],
    ),
    (
        "trace-input-unknown-protocol.yaml",
        &[
            r#"spec.input.opencensus: unknown field `opencensus`, expected one of `otlp`, `zipkin`, `namespaces`, `authentication`"#,
        ],
    ),
    (
        "trace-input-zipkin-without-enabled.yaml",
        &[
            r#"spec.input.zipkin: zipkin is off unless enabled: true; say enabled: true (or remove zipkin)"#,
        ],
    ),
    (
        "trace-output-file-observer.yaml",
        &[
            r#"spec.output.otlp.tls.ca.valueFrom.file: reading files on the agent is only allowed in a standalone agent's own configuration, not in a pipeline the observer distributes; put the value in a Secret and use secretKeyRef"#,
        ],
    ),
    (
        "trace-output-grpc-with-path.yaml",
        &[
            r#"spec.output.otlp.endpoint: an OTLP/gRPC endpoint has no path, found "/v1/traces"; use scheme://host:port, or set protocol: http"#,
        ],
    ),
    (
        "trace-output-missing.yaml",
        &[
            r#"spec.output: set otlp: the one backend spans are sent to (a second backend takes a second pipeline)"#,
        ],
    ),
    (
        "trace-output-not-otlp.yaml",
        &[r#"spec.output.zipkin: unknown field `zipkin`, expected `otlp`"#],
    ),
    (
        "trace-output-reserved-header.yaml",
        &[
            r#"spec.output.otlp.headers[0].name: "Content-Type" is a reserved header set by the agent; it must not be changed"#,
        ],
    ),
    (
        "trace-output-secret-namespace-not-allowed.yaml",
        &[
            r#"spec.output.otlp.authentication.bearerToken.valueFrom.secretKeyRef.namespace: the agent may not read Secrets in namespace "shop": the provider allows only the namespaces listed for the agent's Secret access; use one of: kaas-observer"#,
        ],
    ),
    (
        "trace-output-tenancy-header.yaml",
        &[
            r#"spec.output.otlp.headers[0].name: "THANOS-TENANT" is reserved by the provider: it decides which tenant data belongs to, and only the provider's own pipeline sets it"#,
        ],
    ),
    (
        "trace-rate-limit-burst-below-rate.yaml",
        &[
            r#"spec.processors.rateLimit.burst: 100 is below spansPerSecond (5000): a second's worth of spans could never pass at once"#,
        ],
    ),
    (
        "trace-rate-limit-zero.yaml",
        &[
            r#"spec.processors.rateLimit.spansPerSecond: must be at least 1; remove the limit to have none"#,
        ],
    ),
    (
        "trace-sampling-ratio-above-one.yaml",
        &[
            r#"spec.sampling.ratio: 1.5 is not a sampling ratio: it must be above 0 and at most 1 (1 keeps every trace)"#,
        ],
    ),
    (
        "trace-sampling-ratio-below-smallest.yaml",
        &[
            r#"spec.sampling.ratio: 1e-20 is below 2^-56, the smallest ratio consistent sampling can express; it would keep no trace"#,
        ],
    ),
    (
        "trace-sampling-ratio-missing.yaml",
        &[
            r#"spec.sampling.ratio: required: the share of traces to keep, above 0 and at most 1 (e.g. 0.1); remove sampling to keep every trace"#,
        ],
    ),
    (
        "trace-sampling-ratio-not-a-number.yaml",
        &[r#"spec.sampling.ratio: invalid type: string "10%", expected a JSON number"#],
    ),
    (
        "trace-sampling-ratio-zero.yaml",
        &[
            r#"spec.sampling.ratio: 0 is not a sampling ratio: it must be above 0 and at most 1 (1 keeps every trace)"#,
        ],
    ),
    (
        "trace-unknown-spec-field.yaml",
        &[
            r#"spec.exporters: unknown field `exporters`, expected one of `input`, `sampling`, `processors`, `output`, `buffer`, `clusterSelector`"#,
        ],
    ),
    (
        "binding-url-secret-namespace-not-allowed.yaml",
        &[
            r#"spec.output.prometheusRemoteWrite.url.valueFrom.secretKeyRef.namespace: the agent may not read Secrets in namespace "kube-system": the provider allows only the namespaces listed for the agent's Secret access; use one of: kaas-observer"#,
        ],
    ),
    (
        "binding-url-value-from-file-observer.yaml",
        &[
            "spec.output.otlp.endpoint.valueFrom.file: reading files on the agent is only allowed in a standalone agent's own configuration, not in a pipeline the observer distributes; put the value in a Secret and use secretKeyRef",
        ],
    ),
    (
        "binding-url-inline-object.yaml",
        &[
            "spec.output.prometheusRemoteWrite.url.value: unknown field `value`, expected `valueFrom`",
        ],
    ),
    (
        "binding-token-url-secret-ref-invalid.yaml",
        &[
            r#"spec.output.otlp.authentication.oauth2.tokenUrl.valueFrom.secretKeyRef.name: "Vendor_Binding" is not a valid DNS-1123 subdomain: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"#,
        ],
    ),
    (
        "log-binding-loki-url-value-from-empty.yaml",
        &["spec.output.loki.url.valueFrom: set secretKeyRef or file"],
    ),
    (
        "trace-binding-endpoint-secret-namespace-not-allowed.yaml",
        &[
            r#"spec.output.otlp.endpoint.valueFrom.secretKeyRef.namespace: the agent may not read Secrets in namespace "shop": the provider allows only the namespaces listed for the agent's Secret access; use one of: kaas-observer"#,
        ],
    ),
];

fn testdata(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(dir)
}

#[test]
fn there_are_at_least_forty_rejected_fixtures() {
    assert!(BAD.len() >= 40, "only {} bad fixtures", BAD.len());
}

#[test]
fn every_bad_fixture_is_paired_with_its_messages() {
    support::assert_paired(&testdata("bad"), BAD);
}

#[test]
fn bad_fixtures_are_refused_with_their_messages() {
    support::assert_refused(&testdata("bad"), BAD, |name, text| {
        parse_documents(text, &context_for(name))
    });
}

#[test]
fn every_message_names_a_field_and_a_reason() {
    for (name, expected) in BAD {
        for message in *expected {
            // Whole-document problems (syntax, not an object) have no field to name.
            if matches!(*name, "yaml-syntax-error.yaml" | "not-an-object.yaml") {
                continue;
            }
            let (path, reason) = message
                .split_once(": ")
                .unwrap_or_else(|| panic!("{name}: {message:?} has no path"));
            assert!(
                !path.is_empty() && !path.contains(' '),
                "{name}: path {path:?}"
            );
            assert!(reason.len() > 5, "{name}: reason {reason:?}");
        }
    }
}

fn good_documents() -> Vec<(String, Document<ValidatedResource>)> {
    let mut all = Vec::new();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines");
    for dir in [testdata("good"), examples] {
        for name in support::files_in(&dir) {
            let text = fs::read_to_string(dir.join(&name)).expect("readable fixture");
            let documents = parse_documents(&text, &context_for(&name));
            assert!(!documents.is_empty(), "{name}: no document found");
            all.extend(documents.into_iter().map(|d| (name.clone(), d)));
        }
    }
    all
}

#[test]
fn good_fixtures_and_examples_are_accepted() {
    let refused: Vec<String> = good_documents()
        .into_iter()
        .filter_map(|(name, d)| {
            d.outcome
                .err()
                .map(|e| format!("{name} ({}): {e}", d.location))
        })
        .collect();
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

#[test]
fn good_fixtures_cover_every_input_and_output_kind() {
    let mut seen = BTreeSet::new();
    for (_, document) in good_documents() {
        let Ok(ValidatedResource::Metric(pipeline)) = document.outcome else {
            continue;
        };
        let spec = pipeline.spec();
        let input = &spec.input;
        let on = |enabled: bool, kind: &'static str, seen: &mut BTreeSet<&str>| {
            if enabled {
                seen.insert(kind);
            }
        };
        on(
            input.prometheus.as_ref().is_some_and(|i| i.enabled),
            "input.prometheus",
            &mut seen,
        );
        on(
            input.runtime.as_ref().is_some_and(|i| i.enabled),
            "input.runtime",
            &mut seen,
        );
        on(
            input.istio.as_ref().is_some_and(|i| i.enabled),
            "input.istio",
            &mut seen,
        );
        on(
            input.otlp.as_ref().is_some_and(|i| i.enabled),
            "input.otlp",
            &mut seen,
        );
        on(
            input.remote_write.as_ref().is_some_and(|i| i.enabled),
            "input.remoteWrite",
            &mut seen,
        );
        on(input.static_targets.is_some(), "input.static", &mut seen);
        on(input.unsupported.is_some(), "input.unsupported", &mut seen);
        for push in [&input.otlp, &input.remote_write].into_iter().flatten() {
            seen.insert(match push.mode() {
                PushAuthenticationMode::ServiceAccount => "push.serviceAccount",
                PushAuthenticationMode::BearerToken => "push.bearerToken",
                PushAuthenticationMode::Unauthenticated => "push.unauthenticated",
            });
        }
        seen.insert(match &pipeline.output {
            ValidatedOutput::RemoteWrite {
                version: RemoteWriteVersion::V1,
                ..
            } => "output.remoteWrite.v1",
            ValidatedOutput::RemoteWrite {
                version: RemoteWriteVersion::V2,
                ..
            } => "output.remoteWrite.v2",
            ValidatedOutput::Otlp {
                protocol: OtlpProtocol::Grpc,
                ..
            } => "output.otlp.grpc",
            ValidatedOutput::Otlp {
                protocol: OtlpProtocol::Http,
                ..
            } => "output.otlp.http",
        });
        let output = &spec.output;
        let endpoint = output
            .prometheus_remote_write
            .as_ref()
            .map(|o| (&o.authentication, &o.tls, &o.headers))
            .or(output
                .otlp
                .as_ref()
                .map(|o| (&o.authentication, &o.tls, &o.headers)));
        if let Some((auth, tls, headers)) = endpoint {
            if let Some(auth) = auth {
                on(auth.basic.is_some(), "auth.basic", &mut seen);
                on(auth.bearer_token.is_some(), "auth.bearer", &mut seen);
                on(auth.oauth2.is_some(), "auth.oauth2", &mut seen);
            }
            if let Some(tls) = tls {
                on(tls.ca.is_some(), "tls.ca", &mut seen);
                on(
                    tls.cert.is_some() && tls.key.is_some(),
                    "tls.mutual",
                    &mut seen,
                );
            }
            on(!headers.is_empty(), "headers", &mut seen);
        }
    }
    let required = [
        "input.prometheus",
        "input.runtime",
        "input.istio",
        "input.otlp",
        "input.remoteWrite",
        "input.static",
        "input.unsupported",
        "output.remoteWrite.v1",
        "output.remoteWrite.v2",
        "output.otlp.grpc",
        "output.otlp.http",
        "auth.basic",
        "auth.bearer",
        "auth.oauth2",
        "tls.ca",
        "tls.mutual",
        "headers",
        "push.serviceAccount",
        "push.bearerToken",
        "push.unauthenticated",
    ];
    let missing: Vec<_> = required.iter().filter(|k| !seen.contains(*k)).collect();
    assert!(missing.is_empty(), "no good fixture covers {missing:?}");
}

#[test]
fn every_relabel_action_appears_in_a_good_fixture() {
    use kaas_pipeline::processors::RelabelAction as A;
    let mut seen = BTreeSet::new();
    for (_, document) in good_documents() {
        let Ok(ValidatedResource::Metric(pipeline)) = document.outcome else {
            continue;
        };
        let processors = &pipeline.processors;
        for rule in processors.relabel.iter().chain(&processors.metric_relabel) {
            seen.insert(rule.action.name());
        }
    }
    let all = [
        A::Replace,
        A::Keep,
        A::Drop,
        A::KeepEqual,
        A::DropEqual,
        A::HashMod,
        A::LabelMap,
        A::LabelDrop,
        A::LabelKeep,
        A::Lowercase,
        A::Uppercase,
    ];
    let missing: Vec<_> = all
        .iter()
        .map(|a| a.name())
        .filter(|n| !seen.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "actions without a good fixture: {missing:?}"
    );
}

#[test]
fn inline_secrets_never_reach_errors_or_debug_output() {
    const SECRET: &str = "hunter2-s3cret";
    let text = format!(
        r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {{name: leaky}}
spec:
  input: {{prometheus: {{enabled: true}}}}
  output:
    prometheusRemoteWrite:
      url: https://user:{SECRET}@receiver.example/write
      headers:
        - name: X-Token
          value: "{SECRET}\r\n"
      authentication:
        basic:
          user: {{value: "{SECRET}"}}
          password: {{value: "{SECRET}"}}
        bearerToken: {{value: "{SECRET}"}}
      tls:
        ca: {{value: "{SECRET}"}}
        key: {{value: "{SECRET}"}}
"#
    );
    let documents = parse_pipelines(&text, &ValidationContext::tenant_default());
    let errors = support::messages(&documents);
    assert!(
        errors.len() >= 4,
        "expected several errors, got {errors:#?}"
    );
    for line in &errors {
        assert!(!line.contains(SECRET), "secret in error: {line}");
    }

    let good = format!(
        r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {{name: tidy}}
spec:
  input: {{prometheus: {{enabled: true}}}}
  output:
    prometheusRemoteWrite:
      url: https://receiver.example/write
      headers: [{{name: X-Token, value: "{SECRET}"}}]
      authentication:
        basic:
          user: {{value: agent}}
          password: {{value: "{SECRET}"}}
"#
    );
    let documents = parse_pipelines(&good, &ValidationContext::tenant_default());
    let pipeline = documents[0].outcome.as_ref().expect("valid");
    let debug = format!("{pipeline:?}");
    assert!(!debug.contains(SECRET), "secret in Debug output");
    assert!(debug.contains("***"));
}

#[test]
fn there_are_at_least_thirty_rejected_log_fixtures() {
    let logs = BAD.iter().filter(|(name, _)| name.contains("log-")).count();
    assert!(logs >= 30, "only {logs} bad LogPipeline fixtures");
}

#[test]
fn good_fixtures_cover_every_log_input_and_output_kind() {
    use kaas_pipeline::logs::output::{HttpLogFormat, ValidatedLogOutput};
    let mut seen = BTreeSet::new();
    for (_, document) in good_documents() {
        let Ok(ValidatedResource::Log(pipeline)) = document.outcome else {
            continue;
        };
        let inputs = &pipeline.inputs;
        if let Some(runtime) = &inputs.runtime {
            seen.insert("input.runtime");
            if runtime.multiline.is_some() {
                seen.insert("input.runtime.multiline");
            }
        }
        if let Some(node) = &inputs.node {
            if !node.journal_units.is_empty() {
                seen.insert("input.node.journal");
            }
            if !node.files.is_empty() {
                seen.insert("input.node.files");
            }
        }
        if inputs.otlp.is_some() {
            seen.insert("input.otlp");
        }
        let processors = &pipeline.processors;
        if !processors.filters.is_empty() {
            seen.insert("processors.filters");
        }
        if !processors.attributes.is_empty() {
            seen.insert("processors.attributes");
        }
        if processors.per_pipeline.is_some() || processors.per_namespace.is_some() {
            seen.insert("processors.rateLimit");
        }
        seen.insert(match &pipeline.output {
            ValidatedLogOutput::Otlp {
                protocol: OtlpProtocol::Grpc,
                ..
            } => "output.otlp.grpc",
            ValidatedLogOutput::Otlp {
                protocol: OtlpProtocol::Http,
                ..
            } => "output.otlp.http",
            ValidatedLogOutput::Loki { .. } => "output.loki",
            ValidatedLogOutput::Http {
                format: HttpLogFormat::JsonLines,
                ..
            } => "output.http.jsonLines",
            ValidatedLogOutput::Http {
                format: HttpLogFormat::ElasticsearchBulk,
                ..
            } => "output.http.elasticsearchBulk",
        });
    }
    let required = [
        "input.runtime",
        "input.runtime.multiline",
        "input.node.journal",
        "input.node.files",
        "input.otlp",
        "processors.filters",
        "processors.attributes",
        "processors.rateLimit",
        "output.otlp.grpc",
        "output.otlp.http",
        "output.loki",
        "output.http.jsonLines",
        "output.http.elasticsearchBulk",
    ];
    let missing: Vec<_> = required.iter().filter(|k| !seen.contains(*k)).collect();
    assert!(missing.is_empty(), "no good log fixture covers {missing:?}");
}

/// The repository's examples hold a LogPipeline for each output, each naming its
/// backend in a field called `url` or `endpoint`.
#[test]
fn examples_hold_a_log_pipeline_for_each_output() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines");
    let mut outputs = BTreeSet::new();
    for name in support::files_in(&dir) {
        let text = fs::read_to_string(dir.join(&name)).expect("readable example");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document).expect("YAML");
            if value["kind"] != "LogPipeline" {
                continue;
            }
            let output = value["spec"]["output"]
                .as_mapping()
                .unwrap_or_else(|| panic!("{name}: no output"));
            for (kind, settings) in output {
                let kind = kind.as_str().expect("a string key").to_owned();
                let endpoint = ["url", "endpoint"]
                    .iter()
                    .find_map(|field| settings[*field].as_str());
                assert!(
                    endpoint.is_some_and(|e| e.starts_with("https://")),
                    "{name}: the {kind} output names no https url or endpoint"
                );
                outputs.insert(kind);
            }
        }
    }
    assert_eq!(
        outputs,
        BTreeSet::from(["http".to_owned(), "loki".to_owned(), "otlp".to_owned()])
    );
}

/// Every rule the LogPipeline validation states in `pipeline/src/logs/` (each
/// `errors.add` with a message written there) has a fixture whose expected message
/// carries that message's fixed text: adding a rule without a fixture fails here.
#[test]
fn every_log_rule_has_a_fixture() {
    assert_every_rule_has_a_fixture("src/logs", 30);
}

/// As for logs: every rule stated in `pipeline/src/input/unsupported/` (unsupported
/// mode's raw scrape configs) has a fixture.
#[test]
fn every_unsupported_mode_rule_has_a_fixture() {
    assert_every_rule_has_a_fixture("src/input/unsupported", 30);
}

/// Each rejected unsupported-mode fixture crosses a rule of its own: no two have the
/// same first message once field paths are left out.
#[test]
fn unsupported_mode_fixtures_each_hit_a_distinct_rule() {
    let mut seen = std::collections::BTreeMap::new();
    let unsupported_mode = |name: &str| {
        let name = name.trim_start_matches("standalone-");
        name.trim_start_matches("provider-")
            .starts_with("unsupported-")
    };
    for (name, lines) in BAD.iter().filter(|(name, _)| unsupported_mode(name)) {
        assert!(
            lines.iter().all(|line| !line.contains("hunter2")),
            "{name}: a credential in a message"
        );
        let first = lines
            .first()
            .unwrap_or_else(|| panic!("{name}: no message"));
        let reason = first.split_once(": ").map_or(*first, |(_, reason)| reason);
        if let Some(other) = seen.insert(reason, name) {
            panic!("{name} and {other} hit the same rule: {reason}");
        }
    }
    assert!(
        seen.len() >= 30,
        "only {} unsupported-mode fixtures",
        seen.len()
    );
}

/// As for logs: every rule stated in `pipeline/src/traces/` has a fixture.
#[test]
fn every_trace_rule_has_a_fixture() {
    assert_every_rule_has_a_fixture("src/traces", 15);
}

/// Fails unless each rule of the sources in `dir` (at least `at_least` of them) is
/// matched by an expected message of [`BAD`].
fn assert_every_rule_has_a_fixture(dir: &str, at_least: usize) {
    let expected: Vec<&str> = BAD
        .iter()
        .flat_map(|(_, lines)| lines.iter().copied())
        .collect();
    support::assert_every_rule_has_a_fixture(&support::sources_in(dir), &expected, at_least);
}

#[test]
fn there_are_at_least_twenty_rejected_trace_fixtures() {
    let traces = BAD
        .iter()
        .filter(|(name, _)| name.contains("trace-"))
        .count();
    assert!(traces >= 20, "only {traces} bad TracePipeline fixtures");
}

#[test]
fn good_fixtures_cover_every_trace_input_and_section() {
    use kaas_pipeline::traces::processors::{SpanAttributeAction, SpanPattern};
    let mut seen = BTreeSet::new();
    for (_, document) in good_documents() {
        let Ok(ValidatedResource::Trace(pipeline)) = document.outcome else {
            continue;
        };
        let inputs = &pipeline.inputs;
        for (push, kind) in [
            (&inputs.otlp, "input.otlp"),
            (&inputs.zipkin, "input.zipkin"),
        ] {
            let Some(push) = push else { continue };
            seen.insert(kind);
            seen.insert(match push.mode() {
                PushAuthenticationMode::ServiceAccount => "push.serviceAccount",
                PushAuthenticationMode::BearerToken => "push.bearerToken",
                PushAuthenticationMode::Unauthenticated => "push.unauthenticated",
            });
        }
        if pipeline.sampling.ratio < 1.0 {
            seen.insert("sampling");
        }
        let processors = &pipeline.processors;
        for rule in &processors.drop_spans {
            seen.insert(match (&rule.attribute, &rule.pattern) {
                (None, SpanPattern::Exact(_)) => "dropSpans.name.exact",
                (None, SpanPattern::Regex(_)) => "dropSpans.name.regex",
                (Some(_), SpanPattern::Exact(_)) => "dropSpans.attribute.exact",
                (Some(_), SpanPattern::Regex(_)) => "dropSpans.attribute.regex",
            });
        }
        for rule in &processors.attributes {
            seen.insert(match rule.action {
                Some(SpanAttributeAction::Set) => "attributes.set",
                Some(SpanAttributeAction::Delete) => "attributes.delete",
                Some(SpanAttributeAction::Hash) => "attributes.hash",
                None => "attributes.none",
            });
        }
        if processors.rate_limit.is_some() {
            seen.insert("processors.rateLimit");
        }
        seen.insert(match pipeline.output.protocol {
            OtlpProtocol::Grpc => "output.otlp.grpc",
            OtlpProtocol::Http => "output.otlp.http",
        });
    }
    let required = [
        "input.otlp",
        "input.zipkin",
        "push.serviceAccount",
        "push.bearerToken",
        "push.unauthenticated",
        "sampling",
        "dropSpans.name.exact",
        "dropSpans.name.regex",
        "dropSpans.attribute.exact",
        "dropSpans.attribute.regex",
        "attributes.set",
        "attributes.delete",
        "attributes.hash",
        "processors.rateLimit",
        "output.otlp.grpc",
        "output.otlp.http",
    ];
    let missing: Vec<_> = required.iter().filter(|k| !seen.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "no good trace fixture covers {missing:?}"
    );
}

/// The repository's examples hold TracePipelines over both OTLP transports, each
/// naming its backend in a field called `url` or `endpoint`.
#[test]
fn examples_hold_trace_pipelines_for_both_otlp_transports() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines");
    let mut protocols = BTreeSet::new();
    for name in support::files_in(&dir) {
        let text = fs::read_to_string(dir.join(&name)).expect("readable example");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document).expect("YAML");
            if value["kind"] != "TracePipeline" {
                continue;
            }
            assert!(name.starts_with("trace-"), "{name}: name it trace-*.yaml");
            let output = value["spec"]["output"]
                .as_mapping()
                .unwrap_or_else(|| panic!("{name}: no output"));
            for (kind, settings) in output {
                assert_eq!(kind.as_str(), Some("otlp"), "{name}");
                let endpoint = ["url", "endpoint"]
                    .iter()
                    .find_map(|field| settings[*field].as_str());
                assert!(
                    endpoint.is_some_and(|e| e.starts_with("https://")),
                    "{name}: the output names no https url or endpoint"
                );
                protocols.insert(settings["protocol"].as_str().unwrap_or("grpc").to_owned());
            }
        }
    }
    assert_eq!(
        protocols,
        BTreeSet::from(["grpc".to_owned(), "http".to_owned()])
    );
}
