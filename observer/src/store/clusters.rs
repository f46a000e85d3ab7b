//! Clusters: registration, labels, lifecycle state and tombstones (table `clusters`),
//! and reading them back with their agents' latest reports (table `cluster_reports`,
//! written by [`reports`](super::reports)). What each state allows is decided by
//! [`ClusterState`]'s predicates ([`crate::lifecycle::state`]).

use std::collections::BTreeMap;
use std::time::Duration;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};

use super::entities::{cluster_reports, clusters};
use super::tokens::insert_join_token;
use super::{
    Actor, Change, ClusterState, ConfigReport, Store, StoreError, already_exists, budgets,
    deletions, insert_error, kinds, not_found, now_ms, quotas, random_hex,
};
use crate::cluster_id::global_cluster_id;
use crate::lifecycle::HeardFrom;

/// Random bytes of an incarnation id (16 hex digits): unique among the few
/// incarnations one global id ever has, short enough to read in a status.
const INCARNATION_BYTES: usize = 8;

/// Names bound in one `IN (…)` list: far below SQLite's limit of 32,766 variables and
/// PostgreSQL's 65,535, and small enough to keep one statement quick.
pub(super) const NAMES_PER_QUERY: usize = 500;

/// A registered cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// The cluster's global id, its identity across the provider: the SAN of its
    /// agents' certificates, the `cluster` label on its data and on the observer's
    /// series about it, the probe hashring key. `<tenant>.<name>` for clusters
    /// registered since names are per tenant ([`global_cluster_id`]); a cluster
    /// registered before keeps its old, globally unique name as its id.
    pub id: String,
    /// The DNS-1123 label the tenant named it with; unique within the tenant only.
    pub name: String,
    /// The owning tenant.
    pub tenant: String,
    /// Labels matched by pipelines' cluster selectors.
    pub labels: BTreeMap<String, String>,
    /// The Kubernetes API endpoint, informational.
    pub api_endpoint: Option<String>,
    /// Lifecycle state.
    pub state: ClusterState,
    /// Version the agent last reported.
    pub agent_version: Option<String>,
    /// Instance id of the agent process last seen.
    pub agent_instance_id: Option<String>,
    /// When the agent was last heard from.
    pub last_seen_ms: Option<i64>,
    /// Hex serial of the last issued client certificate.
    pub certificate_serial: Option<String>,
    /// Its expiry.
    pub certificate_not_after_ms: Option<i64>,
    /// Hash (hex) of the configuration the agent last reported as applied.
    pub applied_config_hash: Option<String>,
    /// Whether an agent stream of the cluster is open on some replica.
    pub connected: bool,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// When the cluster was deleted (tombstoned).
    pub deleted_at_ms: Option<i64>,
    /// Which registration of the global id this is: new each time the name of a
    /// tombstone is registered again ([`Store::create_cluster`]); the earlier
    /// incarnations are kept in the history ([`Store::cluster_tombstones`]).
    #[serde(default)]
    pub incarnation: String,
}

impl Cluster {
    /// Whether it waits for its first agent: registered, and no agent ever joined.
    pub fn awaits_agent(&self) -> bool {
        self.state == ClusterState::Provisioning && self.agent_instance_id.is_none()
    }
}

impl HeardFrom for Cluster {
    fn state(&self) -> ClusterState {
        self.state
    }

    fn last_seen_ms(&self) -> Option<i64> {
        self.last_seen_ms
    }

    fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }
}

/// What registering a cluster needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewCluster {
    /// DNS-1123 label, unique within the tenant; the global id is derived from it and
    /// the tenant ([`global_cluster_id`]).
    pub name: String,
    /// The owning tenant; must exist.
    pub tenant: String,
    /// Initial labels.
    pub labels: BTreeMap<String, String>,
    /// The Kubernetes API endpoint, informational.
    pub api_endpoint: Option<String>,
}

/// What is known about a cluster's agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    /// The cluster.
    pub cluster: String,
    /// The last configuration report.
    pub config: Option<ConfigReport>,
    /// The last health report, as the agent sent it.
    pub health: Option<serde_json::Value>,
    /// Whether an agent stream is open to some replica.
    pub connected: bool,
}

/// A cluster's latest reports with what the status task needs to place them
/// ([`Store::reports_of`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ReportedCluster {
    /// The cluster's tenant.
    pub tenant: String,
    /// The cluster's lifecycle state.
    pub state: ClusterState,
    /// The reports, and whether an agent stream is open.
    pub report: ClusterReport,
}

impl Store {
    /// Registers a cluster in state `provisioning` and mints its first join token.
    /// Returns the cluster and the token's plaintext. A tenant at its cluster quota gets
    /// [`StoreError::QuotaExceeded`]. A name held by a tombstone is registered again as
    /// a new incarnation of the same global id (see [`super::deletions`]); a name held
    /// by a live cluster is [`StoreError::AlreadyExists`].
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn create_cluster(
        &self,
        new: NewCluster,
        join_token_ttl: Duration,
        actor: &Actor,
    ) -> Result<(Cluster, String), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        quotas::lock_tenant(transaction, &new.tenant).await?;
        // Names are unique per tenant: the question is only ever asked within the
        // caller's tenant, so its answer says nothing about other tenants.
        let tombstone = match find_cluster_named(transaction, &new.tenant, &new.name).await? {
            Some(row) if parse_state(&row.state)?.is_tombstone() => Some(row),
            Some(_) => return Err(already_exists(kinds::CLUSTER, &new.name)),
            None => None,
        };
        quotas::enforce(transaction, &new.tenant, quotas::Quota::Clusters).await?;
        let now = now_ms();
        let incarnation = random_hex(INCARNATION_BYTES)?;
        let id = match &tombstone {
            // The global id stays: it is the cluster's name across the provider.
            Some(row) => row.name.clone(),
            None => global_cluster_id(&new.tenant, &new.name),
        };
        budgets::forget_cluster_budget(transaction, &new.tenant, &id).await?;
        super::control_planes::forget_cluster_control_plane(transaction, &new.tenant, &id).await?;
        let row = clusters::ActiveModel {
            name: Set(id.clone()),
            local_name: Set(new.name.clone()),
            tenant: Set(new.tenant.clone()),
            labels: Set(labels_to_json(&new.labels)),
            state: Set(ClusterState::Provisioning.as_str().to_owned()),
            api_endpoint: Set(new.api_endpoint.clone()),
            agent_version: Set(None),
            agent_instance_id: Set(None),
            last_seen_ms: Set(None),
            connected: Set(false),
            certificate_serial: Set(None),
            certificate_not_after_ms: Set(None),
            applied_config_hash: Set(None),
            created_at_ms: Set(now),
            deleted_at_ms: Set(None),
            state_changed_at_ms: Set(now),
            connection_id: Set(None),
            incarnation: Set(incarnation.clone()),
        };
        match tombstone {
            Some(tombstone) => {
                deletions::supersede_tombstone(transaction, tombstone, now).await?;
                row.update(transaction).await?;
                mutation
                    .audit(actor, "re-register", kinds::CLUSTER, Some(&new.tenant), &id)
                    .await?;
            }
            None => {
                clusters::Entity::insert(row)
                    .exec_without_returning(transaction)
                    .await
                    .map_err(|e| insert_error(e, kinds::CLUSTER, &new.name))?;
                mutation
                    .audit(actor, "create", kinds::CLUSTER, Some(&new.tenant), &id)
                    .await?;
            }
        }
        let token = insert_join_token(transaction, &id, join_token_ttl, now).await?;
        mutation
            .audit(actor, "mint", kinds::JOIN_TOKEN, Some(&new.tenant), &id)
            .await?;
        let cluster = Cluster {
            id: id.clone(),
            name: new.name.clone(),
            tenant: new.tenant.clone(),
            labels: new.labels,
            api_endpoint: new.api_endpoint,
            state: ClusterState::Provisioning,
            agent_version: None,
            agent_instance_id: None,
            last_seen_ms: None,
            certificate_serial: None,
            certificate_not_after_ms: None,
            applied_config_hash: None,
            connected: false,
            created_at_ms: now,
            deleted_at_ms: None,
            incarnation,
        };
        mutation
            .commit(vec![Change::Cluster {
                tenant: new.tenant,
                id,
            }])
            .await?;
        Ok((cluster, token))
    }

    /// One cluster by its global id, including tombstones.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn get_cluster(&self, id: &str) -> Result<Option<Cluster>, StoreError> {
        clusters::Entity::find_by_id(id)
            .one(self.reader())
            .await?
            .map(cluster_from_row)
            .transpose()
    }

    /// The cluster `tenant` named `name`, including tombstones.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn get_cluster_named(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Cluster>, StoreError> {
        find_cluster_named(self.reader(), tenant, name)
            .await?
            .map(cluster_from_row)
            .transpose()
    }

    /// Clusters of one tenant, or all for `None`, by name; tombstones included (state
    /// `deleted`).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn list_clusters(&self, tenant: Option<&str>) -> Result<Vec<Cluster>, StoreError> {
        let mut query = clusters::Entity::find().order_by_asc(clusters::Column::Name);
        if let Some(tenant) = tenant {
            query = query.filter(clusters::Column::Tenant.eq(tenant));
        }
        query
            .all(self.reader())
            .await?
            .into_iter()
            .map(cluster_from_row)
            .collect()
    }

    /// Replaces a cluster's labels.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn update_cluster_labels(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        actor: &Actor,
    ) -> Result<Cluster, StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let row = find_cluster(transaction, name).await?;
        let mut cluster = cluster_from_row(row.clone())?;
        if cluster.state.is_tombstone() {
            return Err(StoreError::Conflict(format!("cluster {name:?} is deleted")));
        }
        if cluster.labels == labels {
            return Ok(cluster);
        }
        let mut row = row.into_active_model();
        row.labels = Set(labels_to_json(&labels));
        row.update(transaction).await?;
        mutation
            .audit(
                actor,
                "update-labels",
                kinds::CLUSTER,
                Some(&cluster.tenant),
                name,
            )
            .await?;
        cluster.labels = labels;
        mutation.commit(vec![cluster_change(&cluster)]).await?;
        Ok(cluster)
    }

    /// Moves a cluster to `state` (no-op if it is there already). `Deleted` also sets
    /// the tombstone time.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn set_cluster_state(
        &self,
        name: &str,
        state: ClusterState,
        at_ms: i64,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let row = find_cluster(transaction, name).await?;
        if row.state == state.as_str() {
            return Ok(());
        }
        let tenant = row.tenant.clone();
        let mut row = row.into_active_model();
        row.state = Set(state.as_str().to_owned());
        row.state_changed_at_ms = Set(at_ms);
        if state.is_tombstone() {
            row.deleted_at_ms = Set(Some(at_ms));
            row.connected = Set(false);
            row.connection_id = Set(None);
        }
        row.update(transaction).await?;
        mutation
            .audit(
                actor,
                &format!("set-state:{state}"),
                kinds::CLUSTER,
                Some(&tenant),
                name,
            )
            .await?;
        mutation
            .commit(vec![Change::Cluster {
                tenant,
                id: name.to_owned(),
            }])
            .await
    }

    /// Deletes a cluster, leaving a tombstone: state `deleted`, `deleted_at_ms` set,
    /// join tokens and certificates refused from now on. Deleting a tombstone is a
    /// no-op.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn delete_cluster(&self, name: &str, actor: &Actor) -> Result<(), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let row = find_cluster(transaction, name).await?;
        if parse_state(&row.state)?.is_tombstone() {
            return Ok(());
        }
        let tenant = row.tenant.clone();
        let now = now_ms();
        let mut row = row.into_active_model();
        row.state = Set(ClusterState::Deleted.as_str().to_owned());
        row.state_changed_at_ms = Set(now);
        row.deleted_at_ms = Set(Some(now));
        row.connected = Set(false);
        row.connection_id = Set(None);
        row.update(transaction).await?;
        mutation
            .audit(actor, "delete", kinds::CLUSTER, Some(&tenant), name)
            .await?;
        mutation
            .commit(vec![Change::Cluster {
                tenant,
                id: name.to_owned(),
            }])
            .await
    }

    /// The latest reports of a cluster; `None` if the cluster does not exist.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn cluster_report(&self, cluster: &str) -> Result<Option<ClusterReport>, StoreError> {
        let row = with_reports(clusters::Entity::find_by_id(cluster))
            .one(self.reader())
            .await?;
        row.map(|(row, report)| Ok(cluster_with_report(row, report)?.1))
            .transpose()
    }

    /// Clusters of one tenant, or all for `None`, each with its latest reports, in one
    /// query: by name, only names after `after` when given, at most `limit`. Tombstones
    /// included.
    pub async fn list_clusters_with_reports(
        &self,
        tenant: Option<&str>,
        after: Option<&str>,
        limit: Option<u64>,
    ) -> Result<Vec<(Cluster, ClusterReport)>, StoreError> {
        let mut query = clusters::Entity::find().order_by_asc(clusters::Column::Name);
        if let Some(tenant) = tenant {
            query = query.filter(clusters::Column::Tenant.eq(tenant));
        }
        if let Some(after) = after {
            query = query.filter(clusters::Column::Name.gt(after));
        }
        with_reports(query)
            .limit(limit)
            .all(self.reader())
            .await?
            .into_iter()
            .map(|(row, report)| cluster_with_report(row, report))
            .collect()
    }

    /// The named clusters that exist, each with its latest reports, by name: a few
    /// queries however many names (the status task's incremental update).
    pub async fn clusters_with_reports(
        &self,
        names: &[String],
    ) -> Result<Vec<(Cluster, ClusterReport)>, StoreError> {
        let mut found = Vec::with_capacity(names.len());
        for chunk in names.chunks(NAMES_PER_QUERY) {
            let rows = with_reports(
                clusters::Entity::find()
                    .filter(clusters::Column::Name.is_in(chunk.iter().map(String::as_str))),
            )
            .all(self.reader())
            .await?;
            for (row, report) in rows {
                found.push(cluster_with_report(row, report)?);
            }
        }
        found.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(found)
    }

    /// The latest reports of the named clusters that exist, with each one's tenant and
    /// state, by name: only the columns a pipeline status depends on that a report can
    /// change (not the registration, labels or certificate), a few queries however many
    /// names. The status task reads this after `Change::ClusterReport`; a report
    /// changes neither labels nor the desired configuration.
    pub async fn reports_of(&self, names: &[String]) -> Result<Vec<ReportedCluster>, StoreError> {
        type Row = (
            String,
            String,
            String,
            bool,
            Option<serde_json::Value>,
            Option<serde_json::Value>,
        );
        let mut found = Vec::with_capacity(names.len());
        for chunk in names.chunks(NAMES_PER_QUERY) {
            let rows: Vec<Row> = clusters::Entity::find()
                .select_only()
                .column(clusters::Column::Name)
                .column(clusters::Column::Tenant)
                .column(clusters::Column::State)
                .column(clusters::Column::Connected)
                .column(cluster_reports::Column::ConfigReport)
                .column(cluster_reports::Column::Health)
                .join(sea_orm::JoinType::LeftJoin, reports_relation())
                .filter(clusters::Column::Name.is_in(chunk.iter().map(String::as_str)))
                .into_tuple()
                .all(self.reader())
                .await?;
            for (name, tenant, state, connected, config, health) in rows {
                let config = config
                    .map(|json| {
                        serde_json::from_value::<ConfigReport>(json).map_err(|e| {
                            StoreError::Corrupt(format!("config report of cluster {name:?}: {e}"))
                        })
                    })
                    .transpose()?;
                found.push(ReportedCluster {
                    tenant,
                    state: parse_state(&state)?,
                    report: ClusterReport {
                        cluster: name,
                        config,
                        health,
                        connected,
                    },
                });
            }
        }
        found.sort_by(|a, b| a.report.cluster.cmp(&b.report.cluster));
        Ok(found)
    }
}

/// The cluster `tenant` named `name`, tombstones included.
pub(super) async fn find_cluster_named(
    connection: &impl ConnectionTrait,
    tenant: &str,
    name: &str,
) -> Result<Option<clusters::Model>, StoreError> {
    Ok(clusters::Entity::find()
        .filter(clusters::Column::Tenant.eq(tenant))
        .filter(clusters::Column::LocalName.eq(name))
        .one(connection)
        .await?)
}

pub(super) async fn find_cluster(
    transaction: &DatabaseTransaction,
    name: &str,
) -> Result<clusters::Model, StoreError> {
    clusters::Entity::find_by_id(name)
        .one(transaction)
        .await?
        .ok_or_else(|| not_found(kinds::CLUSTER, name))
}

pub(super) fn parse_state(text: &str) -> Result<ClusterState, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

/// Rows of clusters that are not tombstones ([`ClusterState::is_tombstone`]): what
/// counts against a tenant's quota and keeps it from being deleted.
pub(super) fn not_tombstone() -> sea_orm::sea_query::SimpleExpr {
    clusters::Column::State.is_in(
        ClusterState::ALL
            .into_iter()
            .filter(|state| !state.is_tombstone())
            .map(ClusterState::as_str),
    )
}

pub(super) fn cluster_from_row(row: clusters::Model) -> Result<Cluster, StoreError> {
    let labels = serde_json::from_value(row.labels)
        .map_err(|e| StoreError::Corrupt(format!("labels of cluster {:?}: {e}", row.name)))?;
    Ok(Cluster {
        state: parse_state(&row.state)?,
        id: row.name,
        name: row.local_name,
        tenant: row.tenant,
        labels,
        api_endpoint: row.api_endpoint,
        agent_version: row.agent_version,
        agent_instance_id: row.agent_instance_id,
        last_seen_ms: row.last_seen_ms,
        certificate_serial: row.certificate_serial,
        certificate_not_after_ms: row.certificate_not_after_ms,
        applied_config_hash: row.applied_config_hash,
        connected: row.connected,
        created_at_ms: row.created_at_ms,
        deleted_at_ms: row.deleted_at_ms,
        incarnation: row.incarnation,
    })
}

/// `query` with each cluster's `cluster_reports` row (if any) beside it: one left join.
pub(super) fn with_reports(
    query: sea_orm::Select<clusters::Entity>,
) -> sea_orm::SelectTwo<clusters::Entity, cluster_reports::Entity> {
    query
        .join(sea_orm::JoinType::LeftJoin, reports_relation())
        .select_also(cluster_reports::Entity)
}

/// `clusters` to their `cluster_reports` row, if any.
pub(super) fn reports_relation() -> sea_orm::RelationDef {
    clusters::Entity::belongs_to(cluster_reports::Entity)
        .from(clusters::Column::Name)
        .to(cluster_reports::Column::Cluster)
        .into()
}

pub(super) fn cluster_with_report(
    row: clusters::Model,
    report: Option<cluster_reports::Model>,
) -> Result<(Cluster, ClusterReport), StoreError> {
    let cluster = cluster_from_row(row)?;
    let (config, health) = match report {
        None => (None, None),
        Some(report) => {
            let config = report
                .config_report
                .map(|json| {
                    serde_json::from_value::<ConfigReport>(json).map_err(|e| {
                        StoreError::Corrupt(format!(
                            "config report of cluster {:?}: {e}",
                            cluster.id
                        ))
                    })
                })
                .transpose()?;
            (config, report.health)
        }
    };
    let report = ClusterReport {
        cluster: cluster.id.clone(),
        config,
        health,
        connected: cluster.connected,
    };
    Ok((cluster, report))
}

pub(super) fn cluster_change(cluster: &Cluster) -> Change {
    Change::Cluster {
        tenant: cluster.tenant.clone(),
        id: cluster.id.clone(),
    }
}

pub(super) fn labels_to_json(labels: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}
