//! One sea-orm entity per table. The tables themselves are created by
//! [`super::migrations`]; these types only read and write rows. JSON columns hold
//! `serde_json::Value` and are decoded into domain types in [`super`].

pub mod agent_certificates;
pub mod api_tokens;
pub mod audit_log;
pub mod cluster_api_namespaces;
pub mod cluster_buffer_budgets;
pub mod cluster_control_planes;
pub mod cluster_reports;
pub mod cluster_tombstones;
pub mod clusters;
pub mod instance_health;
pub mod join_tokens;
pub mod pending_deletions;
pub mod pipeline_instances;
pub mod pipeline_templates;
pub mod pipelines;
pub mod probe_endpoints;
pub mod replicas;
pub mod tenant_quotas;
pub mod tenants;
