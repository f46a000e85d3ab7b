//! The inventory's answer, parsed and checked: each entry like `POST /api/v1/clusters`
//! (see the design note in [the inventory module](super)), invalid ones kept apart with
//! their reasons, names listed twice noticed.

use std::collections::{BTreeMap, BTreeSet};

use kaas_pipeline::secret::SecretString;
use serde::Deserialize;
use serde_json::Value;

use super::check_kubeconfig;
use crate::control_plane::ValidatedControlPlane;
use crate::egress::EgressPolicy;
use crate::onboarding::{Source, registration_problems, with_source_label};

/// One cluster as the inventory lists it, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryCluster {
    /// Global DNS-1123 label.
    pub name: String,
    /// The owning tenant.
    pub tenant: String,
    /// Labels, without the source label.
    pub labels: BTreeMap<String, String>,
    /// The Kubernetes API endpoint.
    pub api_endpoint: Option<String>,
    /// The inventory marks it deleted.
    pub deleted: bool,
    /// Its kubeconfig, checked ([`check_kubeconfig`]): the observer installs the agent
    /// through it.
    pub kubeconfig: Option<SecretString>,
    /// Its control-plane setting (`controlPlane`, checked as the API checks it); `None`
    /// leaves the stored setting as it is.
    pub control_plane: Option<Box<ValidatedControlPlane>>,
}

impl InventoryCluster {
    /// The labels the store keeps for it: the listed ones, the source label, and with
    /// a kubeconfig the label saying the observer installs its agent.
    pub fn stored_labels(&self) -> BTreeMap<String, String> {
        let mut labels = with_source_label(self.labels.clone(), Source::Inventory);
        if self.kubeconfig.is_some() {
            labels.insert(
                crate::onboarding::AGENT_INSTALLER_LABEL.to_owned(),
                crate::onboarding::AGENT_INSTALLED_BY_OBSERVER.to_owned(),
            );
        }
        labels
    }
}

/// An entry that cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidEntry {
    /// Its name, if it has a readable one: that name counts as listed.
    pub name: Option<String>,
    /// What is wrong, with the entry's position and field paths.
    pub problem: String,
}

/// A parsed inventory answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Valid entries by name.
    pub clusters: BTreeMap<String, InventoryCluster>,
    /// Entries that cannot be applied.
    pub invalid: Vec<InvalidEntry>,
}

impl Inventory {
    /// Every name the inventory lists, valid or not.
    pub fn listed_names(&self) -> BTreeSet<&str> {
        self.clusters
            .keys()
            .map(String::as_str)
            .chain(self.invalid.iter().filter_map(|e| e.name.as_deref()))
            .collect()
    }

    /// Whether the answer listed nothing at all.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty() && self.invalid.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InventoryEntry {
    name: String,
    tenant: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default, alias = "api_endpoint")]
    api_endpoint: Option<String>,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    kubeconfig: Option<String>,
    #[serde(default, alias = "control_plane")]
    control_plane: Option<Value>,
}

/// Parses and checks an inventory answer (API endpoints against `egress`). `Err` only
/// if the body as a whole is not a cluster list; bad entries are returned in
/// [`Inventory::invalid`].
pub fn parse_inventory(body: &[u8], egress: &EgressPolicy) -> Result<Inventory, String> {
    let document: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let items = match document {
        Value::Array(items) => items,
        Value::Object(mut object) => match object.remove("clusters") {
            Some(Value::Array(items)) => items,
            _ => return Err(shape_error()),
        },
        _ => return Err(shape_error()),
    };
    let mut inventory = Inventory::default();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (index, item) in items.into_iter().enumerate() {
        let raw_name = item.get("name").and_then(Value::as_str).map(str::to_owned);
        let position = match &raw_name {
            Some(name) => format!("clusters[{index}] ({name:?})"),
            None => format!("clusters[{index}]"),
        };
        if let Some(name) = &raw_name {
            *seen.entry(name.clone()).or_default() += 1;
        }
        let entry = match serde_json::from_value::<InventoryEntry>(item) {
            Ok(entry) => entry,
            Err(error) => {
                inventory.invalid.push(InvalidEntry {
                    name: raw_name,
                    problem: format!("{position}: {error}"),
                });
                continue;
            }
        };
        let mut problems = registration_problems(
            &entry.name,
            &entry.tenant,
            &entry.labels,
            entry.api_endpoint.as_deref(),
            egress,
        );
        let kubeconfig = match entry.kubeconfig.as_deref().map(check_kubeconfig) {
            Some(Err(reason)) => {
                problems.push(format!("kubeconfig: {reason}"));
                None
            }
            Some(Ok(checked)) => Some(checked),
            None => None,
        };
        let control_plane = match entry
            .control_plane
            .map(crate::onboarding::control_plane_setting)
        {
            Some(Err(reason)) => {
                problems.push(reason);
                None
            }
            Some(Ok(checked)) => Some(Box::new(checked)),
            None => None,
        };
        if !problems.is_empty() {
            inventory.invalid.push(InvalidEntry {
                name: Some(entry.name),
                problem: format!("{position}: {}", problems.join("; ")),
            });
            continue;
        }
        inventory.clusters.insert(
            entry.name.clone(),
            InventoryCluster {
                name: entry.name,
                tenant: entry.tenant,
                labels: entry.labels,
                api_endpoint: entry.api_endpoint,
                deleted: entry.deleted,
                kubeconfig,
                control_plane,
            },
        );
    }
    for (name, count) in seen.into_iter().filter(|(_, count)| *count > 1) {
        inventory.clusters.remove(&name);
        inventory.invalid.push(InvalidEntry {
            problem: format!("{name:?} is listed {count} times; none of its entries is applied"),
            name: Some(name),
        });
    }
    Ok(inventory)
}

fn shape_error() -> String {
    "expected a JSON array of clusters, or an object with a \"clusters\" array".to_owned()
}
