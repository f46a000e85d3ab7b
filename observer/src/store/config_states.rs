//! Bulk read of the agents' configuration reports, for the per-cluster configuration
//! state series (`integrations::config_state`): one query for every cluster instead
//! of one per cluster.

use std::collections::BTreeMap;

use sea_orm::{EntityTrait, QuerySelect};

use super::entities::cluster_reports::{Column, Entity};
use super::{ConfigReport, Store, StoreError};

impl Store {
    /// The last configuration report of every cluster that sent one, by cluster.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn config_reports(&self) -> Result<BTreeMap<String, ConfigReport>, StoreError> {
        let rows: Vec<(String, Option<serde_json::Value>)> = Entity::find()
            .select_only()
            .column(Column::Cluster)
            .column(Column::ConfigReport)
            .into_tuple()
            .all(self.reader())
            .await?;
        let mut reports = BTreeMap::new();
        for (cluster, json) in rows {
            let Some(json) = json else { continue };
            let report = serde_json::from_value::<ConfigReport>(json).map_err(|e| {
                StoreError::Corrupt(format!("config report of cluster {cluster:?}: {e}"))
            })?;
            reports.insert(cluster, report);
        }
        Ok(reports)
    }
}
