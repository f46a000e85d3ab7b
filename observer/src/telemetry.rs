//! The observer's own metrics: every family its `/metrics` listener serves, and the
//! module that registers it. Names are a contract (dashboards, alerts and
//! `docs/metrics.yaml` use them). The table is what `observer serve` registers with
//! every optional source on; `tests/metric_table.rs` starts one and compares its
//! `/metrics` with this table, family by family.
//!
//! | metric | labels | registered by |
//! |---|---|---|
//! | `kaas_observer_build_info` | version | `api::metrics` |
//! | `kaas_observer_api_requests_total` | method, route, code | `api::metrics` |
//! | `kaas_observer_api_request_duration_seconds` (histogram) | method, route | `api::metrics` |
//! | `kaas_observer_api_refusals_total` | reason, tenant | `api::metrics` |
//! | `kaas_observer_api_tls_handshakes_total` (with `--api-tls-cert-file`) | result | `serve`, `control::accept` |
//! | `kaas_observer_api_tls_handshakes_waiting` (with `--api-tls-cert-file`) | | `serve`, `control::accept` |
//! | `kaas_observer_agent_streams` | | `control::service` |
//! | `kaas_observer_agent_streams_on_previous_ca` | | `control::service` |
//! | `kaas_observer_agent_streams_refused_total` | reason | `control::service` |
//! | `kaas_observer_config_pushes_total` | result | `control::service` |
//! | `kaas_observer_tls_handshakes_total` | result | `control::accept` |
//! | `kaas_observer_tls_handshakes_waiting` | | `control::accept` |
//! | `kaas_observer_join_failures_total` | reason | `control::join` |
//! | `kaas_cluster_info` | cluster, tenant, state | `fleet` |
//! | `kaas_cluster_tombstone_info` | cluster, tenant, incarnation | `fleet` |
//! | `kaas_cluster_agent_connected` | cluster, tenant | `fleet` |
//! | `kaas_cluster_last_seen_timestamp_seconds` | cluster, tenant | `fleet` |
//! | `kaas_cluster_created_timestamp_seconds` | cluster, tenant | `fleet` |
//! | `kaas_cluster_deleted_timestamp_seconds` | cluster, tenant | `fleet` |
//! | `kaas_cluster_agent_certificate_expiry_timestamp_seconds` | cluster, tenant | `fleet` |
//! | `kaas_pipeline_info` | tenant, pipeline, generation | `fleet` |
//! | `kaas_pipeline_condition` | tenant, pipeline, type, status, reason | `fleet` |
//! | `kaas_pipeline_cluster_config_state` | tenant, pipeline, cluster, state | `integrations::config_state` |
//! | `kaas_observer_remote_write_samples_total` (with `--central-remote-write-url`) | result | `integrations::remote_write` |
//! | `kaas_observer_remote_write_last_success_timestamp_seconds` (with `--central-remote-write-url`) | | `integrations::remote_write` |
//! | `kaas_observer_grafana_syncs_total` (with `--grafana-url`) | result | `integrations::grafana` |
//! | `kaas_observer_grafana_last_success_timestamp_seconds` (with `--grafana-url`) | | `integrations::grafana` |
//! | `probe_success` | cluster, tenant, target, module | `probes::metrics` |
//! | `probe_duration_seconds` | cluster, tenant, target, module | `probes::metrics` |
//! | `probe_http_status_code` | cluster, tenant, target, module | `probes::metrics` |
//! | `probe_ssl_earliest_cert_expiry` | cluster, tenant, target, module | `probes::metrics` |
//! | `probe_dns_lookup_time_seconds` | cluster, tenant, target, module | `probes::metrics` |
//! | `kaas_observer_egress_refusals_total` | context, range | `internal_events` (for `egress`) |
//! | `kaas_observer_onboarding_syncs_total` | source, result | `onboarding::events` |
//! | `kaas_observer_onboarding_cluster_changes_total` | source, action | `onboarding::events` |
//! | `kaas_observer_onboarding_last_success_timestamp_seconds` | source | `onboarding::events` |
//! | `kaas_observer_deletions_pending` | source | `onboarding::events` |
//! | `kaas_self_telemetry_export_failures_total` (with `--otlp-endpoint`) | signal | `kaas_self_telemetry` |
//! | `kaas_self_telemetry_spans_dropped_total` (with `--otlp-endpoint`) | | `kaas_self_telemetry` |
//! | `kaas_self_telemetry_logs_dropped_total` (with `--otlp-endpoint`) | | `kaas_self_telemetry` |
