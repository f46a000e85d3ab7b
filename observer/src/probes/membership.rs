//! Which replicas share the probes: every replica heartbeats its row in the store's
//! `replicas` table and hands the live ones to its [`Prober`], which then probes only
//! the targets it owns among them (rendezvous hashing, [`super::schedule`]).
//!
//! # Design
//! * Every [`DEFAULT_HEARTBEAT_INTERVAL`] the replica writes its row with the database's
//!   time, reads the ids heard from within the last [`LIVE_HEARTBEATS`] heartbeats, and
//!   calls [`Prober::set_replicas`] when that list changed. The first heartbeat happens
//!   in [`ReplicaMembership::start`], before it returns, so a replica that joins does
//!   not probe everything while it waits for its first tick.
//! * A replica that stops gracefully deletes its row ([`ReplicaMembership::leave`]):
//!   the others take over its targets at their next heartbeat. One that dies drops out
//!   once its row is older than [`LIVE_HEARTBEATS`] heartbeats, so its targets move
//!   within that time plus one heartbeat, plus up to one probe interval until each
//!   moved target's next slot.
//! * Each heartbeat also deletes rows older than [`PRUNE_AFTER`] (replicas long gone,
//!   e.g. pods of an old ReplicaSet). Every replica prunes; the delete is idempotent.
//! * A failed heartbeat (database unreachable) is logged and the last list kept: the
//!   replica goes on probing its share. The others drop it after three heartbeats and
//!   take its targets too, so during a partition some targets are probed twice, never
//!   none.
//! * On SQLite the only row is this replica's: the same path, one member.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Prober;
use crate::store::{Store, StoreError};

/// Time between heartbeats: a dead replica's targets move within about
/// `LIVE_HEARTBEATS + 1` of these (20 s), well inside the 5 minute `for:` of the probe
/// alerts, while ten replicas write only two rows a second.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// A replica is live while its last heartbeat is at most this many intervals old:
/// one late or failed heartbeat (a slow database moment) does not move its targets.
pub const LIVE_HEARTBEATS: u32 = 3;
/// Rows not refreshed for this long are deleted: long past any liveness window, and
/// short enough that the table stays as small as the number of recent pods.
pub const PRUNE_AFTER: Duration = Duration::from_secs(3600);

/// Tunables of the membership.
#[derive(Clone, Debug)]
pub struct MembershipSettings {
    /// This replica's id (`--replica-id`); unique among the replicas.
    pub replica_id: String,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
}

impl MembershipSettings {
    /// Settings with the default heartbeat.
    pub fn new(replica_id: impl Into<String>) -> Self {
        Self {
            replica_id: replica_id.into(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
        }
    }

    /// How old a heartbeat may be for its replica to count as live.
    pub fn live_window(&self) -> Duration {
        self.heartbeat_interval * LIVE_HEARTBEATS
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// One heartbeat: writes this replica's row, prunes old rows, returns the live ids.
async fn beat(store: &Store, settings: &MembershipSettings) -> Result<Vec<String>, StoreError> {
    let now = store.database_time_ms().await?;
    store.heartbeat_replica(&settings.replica_id, now).await?;
    store
        .prune_replicas(now.saturating_sub(millis(PRUNE_AFTER)))
        .await?;
    store
        .live_replicas(now.saturating_sub(millis(settings.live_window())))
        .await
}

/// The running heartbeat of this replica.
pub struct ReplicaMembership {
    store: Store,
    replica_id: String,
    live: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl ReplicaMembership {
    /// Heartbeats once (a failure is logged; the prober then counts only itself until
    /// a heartbeat succeeds), gives the prober the live replicas, and keeps doing so
    /// every interval. Must be called inside a Tokio runtime.
    pub async fn start(store: Store, prober: Prober, settings: MembershipSettings) -> Self {
        let live = Arc::new(Mutex::new(Vec::new()));
        let mut known: Option<Vec<String>> = None;
        update(&store, &prober, &settings, &mut known, &live).await;
        let task = tokio::spawn({
            let store = store.clone();
            let settings = settings.clone();
            let live = live.clone();
            async move {
                let mut ticks = tokio::time::interval(settings.heartbeat_interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await; // the first tick is immediate; start() beat already
                loop {
                    ticks.tick().await;
                    update(&store, &prober, &settings, &mut known, &live).await;
                }
            }
        });
        Self {
            store,
            replica_id: settings.replica_id,
            live,
            task,
        }
    }

    /// This replica's id.
    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// The live replicas as of the last successful heartbeat, sorted.
    pub fn replicas(&self) -> Vec<String> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops heartbeating and deletes this replica's row, so the others take over its
    /// targets at their next heartbeat instead of after the liveness window.
    pub async fn leave(self) {
        self.task.abort();
        if let Err(error) = self.store.remove_replica(&self.replica_id).await {
            tracing::warn!(%error, replica = %self.replica_id, "cannot remove this replica's heartbeat row; the others notice it is gone when it ages");
        }
    }
}

impl Drop for ReplicaMembership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn update(
    store: &Store,
    prober: &Prober,
    settings: &MembershipSettings,
    known: &mut Option<Vec<String>>,
    live: &Mutex<Vec<String>>,
) {
    match beat(store, settings).await {
        Ok(replicas) => {
            if known.as_ref() != Some(&replicas) {
                tracing::info!(
                    replica = %settings.replica_id,
                    replicas = ?replicas,
                    "the live observer replicas changed; re-splitting the probe targets"
                );
                prober.set_replicas(replicas.clone());
                *live.lock().unwrap_or_else(|e| e.into_inner()) = replicas.clone();
                *known = Some(replicas);
            }
        }
        Err(error) => tracing::warn!(
            %error,
            replica = %settings.replica_id,
            "replica heartbeat failed; keeping the last known replicas"
        ),
    }
}
