//! Store methods the onboarding sources (`crate::onboarding`) need beyond the API's:
//! an onboarding source owns a cluster's whole registration (labels and API endpoint),
//! so it replaces both in one transaction, one audit entry and one change.

use std::collections::BTreeMap;

use sea_orm::{ActiveModelTrait, IntoActiveModel, Set};

use super::{
    Actor, Cluster, Store, StoreError, cluster_change, cluster_from_row, find_cluster, kinds,
    labels_to_json,
};

impl Store {
    /// Replaces a cluster's labels and API endpoint together, as an onboarding source
    /// sees them. Writes (and publishes) nothing if both are unchanged; refused with
    /// [`StoreError::Conflict`] for a tombstone.
    pub async fn update_cluster_registration(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        api_endpoint: Option<String>,
        actor: &Actor,
    ) -> Result<Cluster, StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let row = find_cluster(transaction, name).await?;
        let mut cluster = cluster_from_row(row.clone())?;
        if cluster.state.is_tombstone() {
            return Err(StoreError::Conflict(format!("cluster {name:?} is deleted")));
        }
        if cluster.labels == labels && cluster.api_endpoint == api_endpoint {
            return Ok(cluster);
        }
        let mut row = row.into_active_model();
        row.labels = Set(labels_to_json(&labels));
        row.api_endpoint = Set(api_endpoint.clone());
        row.update(transaction).await?;
        mutation
            .audit(
                actor,
                "update-registration",
                kinds::CLUSTER,
                Some(&cluster.tenant),
                name,
            )
            .await?;
        cluster.labels = labels;
        cluster.api_endpoint = api_endpoint;
        mutation.commit(vec![cluster_change(&cluster)]).await?;
        Ok(cluster)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::secrets::SecretBox;
    use crate::store::{Change, NewCluster};

    #[tokio::test]
    async fn labels_and_endpoint_are_replaced_together_and_only_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(
            &dir.path().join("observer.db"),
            SecretBox::generate().unwrap(),
        )
        .await
        .unwrap();
        let actor = Actor("onboarding:inventory".into());
        store.create_tenant("shop", &Actor::admin()).await.unwrap();
        store
            .create_cluster(
                NewCluster {
                    name: "c1".into(),
                    tenant: "shop".into(),
                    labels: BTreeMap::from([("env".into(), "dev".into())]),
                    api_endpoint: None,
                },
                Duration::from_secs(60),
                &actor,
            )
            .await
            .unwrap();
        let mut changes = store.subscribe();
        let labels = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
        let endpoint = Some("https://c1:6443".to_owned());
        let updated = store
            .update_cluster_registration("shop.c1", labels.clone(), endpoint.clone(), &actor)
            .await
            .unwrap();
        assert_eq!(
            (&updated.labels, &updated.api_endpoint),
            (&labels, &endpoint)
        );
        let stored = store.get_cluster("shop.c1").await.unwrap().unwrap();
        assert_eq!(stored, updated);
        assert_eq!(
            changes.try_recv().unwrap(),
            Change::Cluster {
                tenant: "shop".into(),
                id: "shop.c1".into()
            }
        );
        let audit = store.audit_entries(1).await.unwrap();
        assert_eq!(
            (audit[0].action.as_str(), audit[0].actor.as_str()),
            ("update-registration", "onboarding:inventory")
        );

        store
            .update_cluster_registration("shop.c1", labels.clone(), endpoint.clone(), &actor)
            .await
            .unwrap();
        assert!(changes.try_recv().is_err(), "no change, nothing published");

        store
            .delete_cluster("shop.c1", &Actor::admin())
            .await
            .unwrap();
        assert!(matches!(
            store
                .update_cluster_registration("shop.c1", BTreeMap::new(), None, &actor)
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store
                .update_cluster_registration("nope", BTreeMap::new(), None, &actor)
                .await,
            Err(StoreError::NotFound { .. })
        ));
    }
}
