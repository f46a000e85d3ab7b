//! The dashboards the observer puts into Grafana: the project's (`dashboards/`) with
//! their `datasource` variable preset to [`DATASOURCE_UID`], for the provider's org,
//! and a tenant's set for its own org (the fleet overview with the `tenant` variable a
//! hidden constant, cluster detail, pipelines and probes; not the observer's
//! self-health, which is about the provider's service).
//!
//! Each org has its own uid space in Grafana, so a dashboard keeps its project uid in
//! every org and links between dashboards work everywhere.

use serde_json::Value;

use super::DATASOURCE_NAME;
use super::DATASOURCE_UID;

/// The project's dashboards, as shipped in `dashboards/`: (file name, JSON).
const PROJECT_DASHBOARDS: [(&str, &str); 5] = [
    (
        FLEET_OVERVIEW,
        include_str!("../../../../dashboards/fleet-overview.json"),
    ),
    (
        "cluster-detail.json",
        include_str!("../../../../dashboards/cluster-detail.json"),
    ),
    (
        "pipelines.json",
        include_str!("../../../../dashboards/pipelines.json"),
    ),
    (
        "probes.json",
        include_str!("../../../../dashboards/probes.json"),
    ),
    (
        "self-health.json",
        include_str!("../../../../dashboards/self-health.json"),
    ),
];
/// The fleet overview, which a tenant gets fixed to itself.
const FLEET_OVERVIEW: &str = "fleet-overview.json";
/// The project dashboards a tenant does not get: the observer's own health.
const PROVIDER_ONLY: [&str; 1] = ["self-health.json"];

/// A shipped dashboard is not JSON (a build defect the unit tests catch).
#[derive(Debug, thiserror::Error)]
#[error("dashboards/{name} is not valid JSON: {reason}")]
pub struct DashboardError {
    /// The file.
    pub name: &'static str,
    /// What went wrong.
    pub reason: String,
}

fn parse(name: &'static str, text: &str) -> Result<Value, DashboardError> {
    serde_json::from_str(text).map_err(|e| DashboardError {
        name,
        reason: e.to_string(),
    })
}

/// Presets a dashboard's `datasource` variable to [`DATASOURCE_UID`].
fn preset_datasource(dashboard: &mut Value) {
    let Some(variables) = dashboard
        .pointer_mut("/templating/list")
        .and_then(|list| list.as_array_mut())
    else {
        return;
    };
    for variable in variables {
        if variable.get("type").and_then(|t| t.as_str()) == Some("datasource") {
            variable["current"] = serde_json::json!({
                "selected": true,
                "text": DATASOURCE_NAME,
                "value": DATASOURCE_UID,
            });
        }
    }
}

/// The provider's dashboards: every project dashboard, the data source preset.
pub fn provider_dashboards() -> Result<Vec<Value>, DashboardError> {
    PROJECT_DASHBOARDS
        .iter()
        .map(|(name, text)| {
            let mut dashboard = parse(name, text)?;
            preset_datasource(&mut dashboard);
            Ok(dashboard)
        })
        .collect()
}

/// A tenant's dashboards: the project's minus [`PROVIDER_ONLY`], the fleet overview
/// fixed to `tenant`. The fixing is for the view only: the data source reads through
/// Thanos query's tenancy enforcement, which is what keeps other tenants' series out.
pub fn tenant_dashboards(tenant: &str) -> Result<Vec<Value>, DashboardError> {
    let mut dashboards = Vec::new();
    for (name, text) in PROJECT_DASHBOARDS {
        if PROVIDER_ONLY.contains(&name) {
            continue;
        }
        let mut dashboard = parse(name, text)?;
        preset_datasource(&mut dashboard);
        if name == FLEET_OVERVIEW {
            fix_tenant(&mut dashboard, tenant);
        }
        dashboards.push(dashboard);
    }
    Ok(dashboards)
}

/// Makes the `tenant` variable a hidden constant `tenant`.
fn fix_tenant(dashboard: &mut Value, tenant: &str) {
    dashboard["title"] = format!("Fleet overview: {tenant}").into();
    let Some(variables) = dashboard
        .pointer_mut("/templating/list")
        .and_then(|list| list.as_array_mut())
    else {
        return;
    };
    for variable in variables {
        if variable.get("name").and_then(|n| n.as_str()) == Some("tenant") {
            *variable = serde_json::json!({
                "name": "tenant",
                "label": "Tenant",
                "type": "constant",
                "query": tenant,
                "hide": 2,
                "current": {"text": tenant, "value": tenant},
                "options": [{"selected": true, "text": tenant, "value": tenant}],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uids(dashboards: &[Value]) -> Vec<&str> {
        dashboards
            .iter()
            .map(|d| d["uid"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn the_provider_gets_every_dashboard_preset_to_the_data_source() {
        let dashboards = provider_dashboards().unwrap();
        assert_eq!(
            uids(&dashboards),
            [
                "kaas-fleet-overview",
                "kaas-cluster-detail",
                "kaas-pipelines",
                "kaas-probes",
                "kaas-self-health"
            ]
        );
        for dashboard in &dashboards {
            let variables = dashboard["templating"]["list"].as_array().unwrap();
            let datasource = variables
                .iter()
                .find(|v| v["type"] == "datasource")
                .unwrap();
            assert_eq!(datasource["current"]["value"], DATASOURCE_UID);
        }
    }

    #[test]
    fn a_tenant_gets_its_fixed_fleet_overview_and_no_self_health() {
        let dashboards = tenant_dashboards("shop").unwrap();
        assert_eq!(
            uids(&dashboards),
            [
                "kaas-fleet-overview",
                "kaas-cluster-detail",
                "kaas-pipelines",
                "kaas-probes"
            ]
        );
        let overview = &dashboards[0];
        assert_eq!(overview["title"], "Fleet overview: shop");
        let variables = overview["templating"]["list"].as_array().unwrap();
        let tenant = variables.iter().find(|v| v["name"] == "tenant").unwrap();
        assert_eq!(tenant["type"], "constant");
        assert_eq!(tenant["query"], "shop");
        assert_eq!(tenant["hide"], 2);
    }
}
